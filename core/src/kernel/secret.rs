//! Secrets as types. A key or a code is wrapped so that it is wiped from memory when dropped, never
//! printed by `Debug`, and only ever compared in constant time.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::kernel::error::{Error, Result};

/// The host's HMAC key: keys every stored hash and derives every code. At least 32 bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HmacKey(Vec<u8>);

impl HmacKey {
    /// Minimum key length in bytes.
    pub const MIN_LEN: usize = 32;

    /// Decodes a hex key.
    ///
    /// # Errors
    /// [`Error::Misconfigured`] when it is not hex or shorter than [`Self::MIN_LEN`] bytes. The
    /// message never repeats the key.
    pub fn from_hex(hex_key: &str) -> Result<Self> {
        let bytes = Zeroizing::new(
            hex::decode(hex_key.trim())
                .map_err(|_| Error::Misconfigured("hmac_key must be hexadecimal".to_owned()))?,
        );
        Self::from_bytes(&bytes)
    }

    /// Wraps raw key bytes.
    ///
    /// # Errors
    /// [`Error::Misconfigured`] when shorter than [`Self::MIN_LEN`] bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < Self::MIN_LEN {
            return Err(Error::Misconfigured(format!(
                "hmac_key must be at least {} bytes ({} hex digits)",
                Self::MIN_LEN,
                Self::MIN_LEN * 2
            )));
        }
        Ok(Self(bytes.to_vec()))
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HmacKey(<redacted>)")
    }
}

/// A one-time code in the clear: only ever held in memory on its way into an email or while being
/// compared. Wiped on drop, redacted in `Debug`, compared in constant time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct OtpCode(String);

impl OtpCode {
    pub(crate) fn new(digits: String) -> Self {
        Self(digits)
    }

    /// The digits, for rendering into the email. Do not log them.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time equality (lengths are public: every code of a deployment has the same length).
    #[must_use]
    pub fn ct_eq(&self, other: &Self) -> bool {
        self.0.len() == other.0.len() && bool::from(self.0.as_bytes().ct_eq(other.0.as_bytes()))
    }
}

impl fmt::Debug for OtpCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OtpCode(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let key = HmacKey::from_hex(&"ab".repeat(32)).ok();
        assert!(key.is_some());
        assert_eq!(format!("{key:?}"), "Some(HmacKey(<redacted>))");
        let code = OtpCode::new("123456".into());
        assert!(!format!("{code:?}").contains("123456"));
    }

    #[test]
    fn short_or_non_hex_keys_are_refused_without_echo() {
        let short = HmacKey::from_hex("abcd")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(short.contains("at least 32 bytes"), "{short}");
        assert!(!short.contains("abcd"));
        let bad = HmacKey::from_hex("zz")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(bad.contains("hexadecimal"), "{bad}");
    }

    #[test]
    fn codes_compare_by_value() {
        let a = OtpCode::new("123456".into());
        assert!(a.ct_eq(&OtpCode::new("123456".into())));
        assert!(!a.ct_eq(&OtpCode::new("123457".into())));
        assert!(!a.ct_eq(&OtpCode::new("1234567".into())));
    }
}

/// HMAC-SHA256 of the concatenated `parts` under `key`: every keyed hash in the core goes through
/// here (device tokens, audit seals, preview links, prompt JWTs, derived keys).
#[must_use]
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    // HMAC takes keys of any length, so this cannot fail; the fallback keeps the function total.
    let Ok(mut mac) = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key) else {
        return Vec::new();
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// Whether a presented REST API key equals the configured one, in constant time. An empty configured
/// key matches nothing (a host that forgot to set it must not open the API). The two are compared
/// as SHA-256 digests, so that not even the key's length shows in the time an answer takes (a
/// comparison that stops at a length mismatch would tell it).
#[must_use]
pub fn api_key_matches(presented: &str, configured: &str) -> bool {
    use sha2::{Digest as _, Sha256};
    let same = Sha256::digest(presented.as_bytes()).ct_eq(&Sha256::digest(configured.as_bytes()));
    !configured.is_empty() && bool::from(same)
}

#[cfg(test)]
mod api_key_tests {
    use super::api_key_matches;

    #[test]
    fn api_keys() {
        assert!(api_key_matches("s3cret-key", "s3cret-key"));
        assert!(!api_key_matches("s3cret-kez", "s3cret-key"));
        assert!(!api_key_matches("s3cret", "s3cret-key"));
        assert!(!api_key_matches("", ""));
    }
}
