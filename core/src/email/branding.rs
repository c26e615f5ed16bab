//! An organization's look in its emails: name, logo, colors, sender, support contact, footer and
//! default language. Everything here ends up in an email, so everything is checked when it is set:
//! single lines only (CR or LF in a name could inject mail headers), an `https://` logo URL without
//! quotes or spaces, colors as `#rrggbb`, a supported language. Rendering escapes again for where
//! each value lands; the checks here make a hostile value impossible to store in the first place.

use serde::{Deserialize, Serialize};

use crate::email::i18n;
use crate::kernel::error::{Error, Result};

/// Fewest characters of the display and sender names.
pub const NAME_MIN_CHARS: usize = 1;
/// Most characters of the display and sender names.
pub const NAME_MAX_CHARS: usize = 80;
/// Most characters of the support contact.
pub const SUPPORT_CONTACT_MAX_CHARS: usize = 120;
/// Most characters of the footer line.
pub const FOOTER_MAX_CHARS: usize = 300;
/// Most bytes of the logo's URL.
pub const LOGO_URL_MAX: usize = 512;

/// An organization's branding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Branding {
    /// The name people know the organization by.
    pub display_name: String,
    /// An `https://` URL of the logo image, if any.
    #[serde(default)]
    pub logo_url: Option<String>,
    /// Header color, `#rrggbb`.
    pub primary_color: String,
    /// Accent color (the code's box), `#rrggbb`.
    pub accent_color: String,
    /// Display name in the `From` header.
    pub sender_name: String,
    /// How users reach support (an address, a phone number, a desk name).
    #[serde(default)]
    pub support_contact: String,
    /// A line at the bottom of every email.
    #[serde(default)]
    pub footer_text: String,
    /// Language when the user's is unknown or unsupported.
    pub default_language: String,
}

impl Branding {
    /// The look of an organization that set none: neutral colors and its id as its name.
    #[must_use]
    pub fn default_for(org_id: &str) -> Self {
        Self {
            display_name: org_id.to_owned(),
            logo_url: None,
            primary_color: "#1f3a5f".to_owned(),
            accent_color: "#e8eef5".to_owned(),
            sender_name: org_id.to_owned(),
            support_contact: String::new(),
            footer_text: String::new(),
            default_language: "en".to_owned(),
        }
    }

    /// Checks every field.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] naming the first bad field (`branding.<field>`).
    pub fn validate(&self) -> Result<()> {
        line(
            "branding.display_name",
            &self.display_name,
            NAME_MIN_CHARS,
            NAME_MAX_CHARS,
        )?;
        line(
            "branding.sender_name",
            &self.sender_name,
            NAME_MIN_CHARS,
            NAME_MAX_CHARS,
        )?;
        line(
            "branding.support_contact",
            &self.support_contact,
            0,
            SUPPORT_CONTACT_MAX_CHARS,
        )?;
        line(
            "branding.footer_text",
            &self.footer_text,
            0,
            FOOTER_MAX_CHARS,
        )?;
        color("branding.primary_color", &self.primary_color)?;
        color("branding.accent_color", &self.accent_color)?;
        if let Some(url) = &self.logo_url {
            let rest = url
                .strip_prefix("https://")
                .ok_or_else(|| Error::invalid("branding.logo_url", "must start with https://"))?;
            let host = rest.split('/').next().unwrap_or_default();
            if url.len() > LOGO_URL_MAX
                || host.is_empty()
                || !url
                    .chars()
                    .all(|c| c.is_ascii_graphic() && !"\"'<>\\`".contains(c))
            {
                return Err(Error::invalid(
                    "branding.logo_url",
                    "must be an https:// URL of at most 512 characters, without spaces, quotes or angle brackets",
                ));
            }
        }
        if !i18n::is_supported(&self.default_language) {
            return Err(Error::invalid(
                "branding.default_language",
                format!("must be one of: {}", i18n::supported().join(", ")),
            ));
        }
        Ok(())
    }
}

fn line(field: &'static str, value: &str, min: usize, max: usize) -> Result<()> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(Error::invalid(
            field,
            format!("must be {min} to {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            "must be a single line without control characters (no CR or LF)",
        ));
    }
    Ok(())
}

fn color(field: &'static str, value: &str) -> Result<()> {
    let ok = value.len() == 7
        && value.starts_with('#')
        && value[1..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(field, "must be a color like #1f3a5f"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(b: Branding) -> Option<&'static str> {
        match b.validate() {
            Err(Error::InvalidInput { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn hostile_or_malformed_values_are_refused_naming_the_field() {
        let ok = Branding::default_for("acme");
        assert!(ok.validate().is_ok());
        let cases = [
            (
                Branding {
                    display_name: "Acme\r\nBcc: x@evil.example".into(),
                    ..ok.clone()
                },
                "branding.display_name",
            ),
            (
                Branding {
                    sender_name: "Acme\n".into(),
                    ..ok.clone()
                },
                "branding.sender_name",
            ),
            (
                Branding {
                    logo_url: Some("http://acme.example/l.png".into()),
                    ..ok.clone()
                },
                "branding.logo_url",
            ),
            (
                Branding {
                    logo_url: Some("https://a.example/\"onerror=x".into()),
                    ..ok.clone()
                },
                "branding.logo_url",
            ),
            (
                Branding {
                    logo_url: Some("javascript:alert(1)".into()),
                    ..ok.clone()
                },
                "branding.logo_url",
            ),
            (
                Branding {
                    primary_color: "red;background:url(x)".into(),
                    ..ok.clone()
                },
                "branding.primary_color",
            ),
            (
                Branding {
                    accent_color: "#12345".into(),
                    ..ok.clone()
                },
                "branding.accent_color",
            ),
            (
                Branding {
                    default_language: "xx".into(),
                    ..ok.clone()
                },
                "branding.default_language",
            ),
            (
                Branding {
                    display_name: String::new(),
                    ..ok.clone()
                },
                "branding.display_name",
            ),
        ];
        for (b, expected) in cases {
            assert_eq!(field(b), Some(expected));
        }
        // Markup is allowed to be *stored* as a name: it is text, and rendering escapes it.
        assert!(
            Branding {
                display_name: "<script>alert(1)</script>".into(),
                ..ok
            }
            .validate()
            .is_ok()
        );
    }
}
