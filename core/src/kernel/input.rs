//! Input validation at the edge of the core. Everything the IdP or a REST caller sends passes through
//! here before anything is read or written, so that bad input gets a clear error naming the field and
//! leaves the store as it was. Limits are deliberately tight: they bound storage per user and keep
//! every value safe to put in a store key, an email header or an audit record.

use std::borrow::Cow;
use std::net::IpAddr;

use crate::kernel::error::{Error, Result};
use crate::kernel::model::{Actor, LoginContext};

/// Longest accepted identifier.
pub const MAX_ID: usize = 128;
/// Longest accepted email address (RFC 5321 path limit).
pub const MAX_EMAIL: usize = 254;
/// Most roles accepted.
pub const MAX_ROLES: usize = 32;
/// Longest accepted role.
pub const MAX_ROLE: usize = 64;
/// Longest accepted free-text field (user agent, traits).
pub const MAX_TEXT: usize = 512;
/// Longest accepted cookie value; longer is "no device", not an error.
pub const MAX_COOKIE: usize = 4096;
/// Longest accepted code input (before spaces are trimmed).
pub const MAX_CODE_INPUT: usize = 32;

/// Checks an identifier: 1 to 128 of `A-Z a-z 0-9 . _ @ + | -`. These never need escaping in a
/// store key (whose separator is `:`), an audit line or a header.
///
/// # Errors
/// [`Error::InvalidInput`] naming `field`.
pub fn id(field: &'static str, value: &str) -> Result<()> {
    if value.is_empty() || value.len() > MAX_ID {
        return Err(Error::invalid(
            field,
            format!("must be 1 to {MAX_ID} characters"),
        ));
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._@+|-".contains(&b))
    {
        return Err(Error::invalid(
            field,
            "may contain only letters, digits and . _ @ + | -",
        ));
    }
    Ok(())
}

/// An id or role as the core uses it: with `fold` (`id_case = fold`), ASCII upper case folded to
/// lower case (ids are ASCII, see [`id`]); otherwise as given. Ids are the IdP's immutable,
/// canonical ids: by default `ACME` and `acme` are two organizations.
#[must_use]
pub fn canonical(fold: bool, id: &str) -> Cow<'_, str> {
    if fold && id.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(id.to_ascii_lowercase())
    } else {
        Cow::Borrowed(id)
    }
}

fn canonical_roles(fold: bool, roles: &[String]) -> Option<Vec<String>> {
    roles
        .iter()
        .any(|r| matches!(canonical(fold, r), Cow::Owned(_)))
        .then(|| {
            roles
                .iter()
                .map(|r| canonical(fold, r).into_owned())
                .collect()
        })
}

/// A login context as the core uses it: its org and user ids and roles [`canonical`].
#[must_use]
pub fn canonical_context(fold: bool, ctx: &LoginContext) -> Cow<'_, LoginContext> {
    let org = canonical(fold, &ctx.org_id);
    let user = canonical(fold, &ctx.user_id);
    let roles = canonical_roles(fold, &ctx.roles);
    if matches!((&org, &user), (Cow::Borrowed(_), Cow::Borrowed(_))) && roles.is_none() {
        return Cow::Borrowed(ctx);
    }
    let mut folded = ctx.clone();
    folded.org_id = org.into_owned();
    folded.user_id = user.into_owned();
    if let Some(roles) = roles {
        folded.roles = roles;
    }
    Cow::Owned(folded)
}

/// An actor as the core uses it: its org and user ids and roles [`canonical`].
#[must_use]
pub fn canonical_actor(fold: bool, actor: &Actor) -> Cow<'_, Actor> {
    let org = canonical(fold, &actor.org_id);
    let user = canonical(fold, &actor.user_id);
    let roles = canonical_roles(fold, &actor.roles);
    if matches!((&org, &user), (Cow::Borrowed(_), Cow::Borrowed(_))) && roles.is_none() {
        return Cow::Borrowed(actor);
    }
    let mut folded = actor.clone();
    folded.org_id = org.into_owned();
    folded.user_id = user.into_owned();
    if let Some(roles) = roles {
        folded.roles = roles;
    }
    Cow::Owned(folded)
}

/// Checks a token the core handed out (a step-up token): 32 lower-case hex digits, as
/// [`crate::kernel::random::new_id`] makes them. Its value is never echoed.
///
/// # Errors
/// [`Error::InvalidInput`] naming `field`.
pub fn token(field: &'static str, value: &str) -> Result<()> {
    if value.len() == 32
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be the 32 hex digits the API handed out",
        ))
    }
}

/// Checks an email address: at most 254 bytes, exactly one `@` with a non-empty local part and a
/// dotted domain, no spaces, no control characters, no characters that would need quoting in a header.
///
/// # Errors
/// [`Error::InvalidInput`] naming `email`.
pub fn email(value: &str) -> Result<()> {
    let bad = |reason: &str| Err(Error::invalid("email", reason.to_owned()));
    if value.is_empty() || value.len() > MAX_EMAIL {
        return bad("must be 1 to 254 characters");
    }
    if value
        .chars()
        .any(|c| c.is_control() || c.is_whitespace() || "<>()[],;:\\\"".contains(c))
    {
        return bad("must be a plain address like name@clinic.example, without spaces or brackets");
    }
    let mut parts = value.split('@');
    let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
        return bad("must contain exactly one @");
    };
    if local.is_empty() || local.len() > 64 {
        return bad("the part before @ must be 1 to 64 characters");
    }
    // A dot-atom (RFC 5322 §3.2.3): what every mail server, and the hosts' mailers, accept. An
    // address accepted here and refused by the mailer could never receive a code.
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return bad("the part before @ may not start or end with a dot, or hold two in a row");
    }
    // A domain in ASCII (an internationalized one in its `xn--` form): labels of 1 to 63 letters,
    // digits, `-` or `_`, starting and ending with a letter or digit (RFC 1035, as mailers check
    // it). Exactly what the OpenAPI document's pattern states.
    let label_ok = |label: &str| {
        let edge = |b: Option<&u8>| b.is_some_and(u8::is_ascii_alphanumeric);
        (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && edge(label.as_bytes().first())
            && edge(label.as_bytes().last())
    };
    if !domain.contains('.') || !domain.split('.').all(label_ok) {
        return bad(
            "the part after @ must be a domain like clinic.example (an internationalized one in its xn-- form)",
        );
    }
    Ok(())
}

/// Checks free text (user agent, traits): at most 512 bytes, no control characters.
///
/// # Errors
/// [`Error::InvalidInput`] naming `field`.
pub fn text(field: &'static str, value: &str) -> Result<()> {
    if value.len() > MAX_TEXT {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_TEXT} bytes"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(field, "must not contain control characters"));
    }
    Ok(())
}

/// Parses an IP address; IPv4-mapped IPv6 (`::ffff:a.b.c.d`) becomes the IPv4 address.
///
/// # Errors
/// [`Error::InvalidInput`] naming `field`.
pub fn ip(field: &'static str, value: &str) -> Result<IpAddr> {
    let addr: IpAddr = value
        .trim()
        .parse()
        .map_err(|_| Error::invalid(field, "must be an IPv4 or IPv6 address"))?;
    Ok(match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    })
}

/// Checks a list of roles: at most 32, each 1 to 64 of letters, digits and `. _ : -`.
///
/// # Errors
/// [`Error::InvalidInput`] naming `roles`.
pub fn roles(roles: &[String]) -> Result<()> {
    if roles.len() > MAX_ROLES {
        return Err(Error::invalid(
            "roles",
            format!("at most {MAX_ROLES} roles"),
        ));
    }
    for role in roles {
        if role.is_empty()
            || role.len() > MAX_ROLE
            || !role
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        {
            return Err(Error::invalid(
                "roles",
                format!("each role must be 1 to {MAX_ROLE} of letters, digits and . _ : -"),
            ));
        }
    }
    Ok(())
}

fn locale(value: Option<&str>) -> Result<()> {
    match value {
        Some(tag)
            if tag.is_empty()
                || tag.len() > 35
                || !tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Err(Error::invalid(
                "locale",
                "must be a language tag like en or es-MX",
            ))
        }
        _ => Ok(()),
    }
}

/// Validates a whole login context; returns the normalized client IP.
///
/// # Errors
/// [`Error::InvalidInput`] naming the first bad field.
pub fn login_context(ctx: &LoginContext) -> Result<IpAddr> {
    id("user_id", &ctx.user_id)?;
    id("org_id", &ctx.org_id)?;
    email(&ctx.email)?;
    roles(&ctx.roles)?;
    locale(ctx.locale.as_deref())?;
    let traits = &ctx.device.traits;
    text("device.traits.user_agent", &traits.user_agent)?;
    for (field, value) in [
        ("device.traits.browser_family", &traits.browser_family),
        ("device.traits.platform", &traits.platform),
        ("device.traits.language", &traits.language),
        ("device.traits.time_zone", &traits.time_zone),
        ("device.traits.screen_class", &traits.screen_class),
    ] {
        if let Some(v) = value {
            text(field, v)?;
        }
    }
    ip("device.ip", &ctx.device.ip)
}

/// Validates an actor.
///
/// # Errors
/// [`Error::InvalidInput`] naming the first bad field.
pub fn actor(actor: &Actor) -> Result<()> {
    id("actor.user_id", &actor.user_id)?;
    id("actor.org_id", &actor.org_id)?;
    roles(&actor.roles)?;
    text("actor.user_agent", &actor.user_agent)?;
    if !actor.ip.is_empty() {
        ip("actor.ip", &actor.ip)?;
    }
    Ok(())
}

/// Normalizes a typed or pasted code: spaces, tabs and dashes are dropped (people paste `123 456`);
/// what is left must be exactly `digits` ASCII digits.
///
/// # Errors
/// [`Error::InvalidInput`] naming `code` when it is too long or not digits. Such input is refused
/// before it counts as a guess: it cannot be a code, and refusing it touches no state.
pub fn code(value: &str, digits: u8) -> Result<String> {
    if value.len() > MAX_CODE_INPUT {
        return Err(Error::invalid(
            "code",
            format!("must be the {digits} digits from the email"),
        ));
    }
    let cleaned: String = value
        .chars()
        .filter(|c| !matches!(c, ' ' | '\t' | '-'))
        .collect();
    if cleaned.len() != usize::from(digits) || !cleaned.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::invalid(
            "code",
            format!("must be the {digits} digits from the email"),
        ));
    }
    Ok(cleaned)
}

/// `d***@clinic.example`: enough for a person to recognize their address, not enough to harvest it.
#[must_use]
pub fn mask_email(email: &str) -> String {
    match email.split_once('@') {
        Some((local, domain)) => {
            let first: String = local.chars().take(1).collect();
            format!("{first}***@{domain}")
        }
        None => "***".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(r: Result<impl Sized>) -> Option<&'static str> {
        match r {
            Err(Error::InvalidInput { field, .. }) => Some(field),
            _ => None,
        }
    }

    #[test]
    fn ids() {
        assert!(id("user_id", "auth0|5f3a-b.c_d@x+y").is_ok());
        assert_eq!(field_of(id("user_id", "")), Some("user_id"));
        assert_eq!(field_of(id("user_id", "a:b")), Some("user_id"));
        assert_eq!(field_of(id("user_id", &"a".repeat(129))), Some("user_id"));
        assert_eq!(field_of(id("org_id", "ac me")), Some("org_id"));
    }

    #[test]
    fn emails() {
        for ok in [
            "dr.who@clinic.example",
            "a+b@x.co",
            "ü@clinic.example",
            "a@xn--bcher-kva.example",
            "a@x_y.example",
        ] {
            assert!(email(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "no-at",
            "a@b",
            "a@@b.c",
            "a@b..c",
            "a b@c.d",
            "a@b.c\r\nBcc: x@y.z",
            "<a@b.c>",
            "@b.c",
            "a@.b.c",
            // What mailers refuse: a local part that is no dot-atom, a label edged with a dash.
            "dr..who@clinic.example",
            ".a@clinic.example",
            "a.@clinic.example",
            "a@x.-y.example",
            "a@x-.example",
            "a@x_.example",
            "a@_x.example",
            // A domain in Unicode: in its xn-- form, please.
            "a@bücher.example",
        ] {
            assert_eq!(field_of(email(bad)), Some("email"), "{bad:?}");
        }
        assert_eq!(
            field_of(email(&format!("{}@x.co", "a".repeat(300)))),
            Some("email")
        );
    }

    #[test]
    fn ips_normalize_mapped_v4() {
        assert_eq!(
            ip("ip", "::ffff:203.0.113.9").ok(),
            "203.0.113.9".parse().ok()
        );
        assert_eq!(ip("ip", "2001:db8::1").ok(), "2001:db8::1".parse().ok());
        assert_eq!(field_of(ip("device.ip", "300.1.1.1")), Some("device.ip"));
    }

    #[test]
    fn codes_accept_pasted_spacing_only() {
        assert_eq!(code(" 123 456 ", 6).ok().as_deref(), Some("123456"));
        assert_eq!(code("123-456", 6).ok().as_deref(), Some("123456"));
        assert_eq!(field_of(code("12345", 6)), Some("code"));
        assert_eq!(field_of(code("12345a", 6)), Some("code"));
        assert_eq!(field_of(code(&"1".repeat(100), 6)), Some("code"));
    }

    #[test]
    fn masks() {
        assert_eq!(mask_email("doctor@clinic.example"), "d***@clinic.example");
    }
}
