//! Trusted devices: a browser that passed a code is remembered, and asks again when it changes.
//!
//! ```text
//!  verify ok + "remember" ──▶ [trusted] ── begin with its cookie, same browser, same network ──▶ allow,
//!                               │  ▲        token rotated (the old one stays valid 60 s for parallel tabs)
//!                               │  └────────────┘
//!                               ├─ another browser family or OS ──────────▶ challenge ("new-browser")
//!                               ├─ another network (IPv4 /16, IPv6 /48) ──▶ challenge ("new-network")
//!                               ├─ expires_at passes (absolute, UTC) ─────▶ challenge ("device:expired")
//!                               ├─ the org now forbids remembering ───────▶ [revoked] + challenge ("device:not-allowed")
//!                               ├─ verified longer ago than the org's ────▶ [revoked] + challenge ("device:trust-shortened")
//!                               │  trust days now allow
//!                               ├─ a rotated-away token is presented ─────▶ [revoked] + device_token_reuse
//!                               └─ revoke / revoke-all / credential change / reset / 11th device ──▶ [revoked]
//! ```
//!
//! **The cookie** (`__Host-mfa-device`) holds `<device id>.<token>`: the token is 256 random bits; the
//! store keeps only `HMAC(key, token)`. `__Host-` makes the browser refuse it unless `Secure`,
//! `Path=/` and host-only. `HttpOnly` keeps scripts away from it. `SameSite=Lax` rather than `Strict`:
//! a login usually arrives as a top-level navigation from the identity provider's site, which `Strict`
//! would strip of the cookie, asking every clinician for a code every time; `Lax` still withholds it
//! from cross-site subresource and POST requests. `Max-Age` is the trust that remains.
//!
//! **The fingerprint** detects change; it is not an identity. It hashes the browser family, the
//! operating system and the screen class. The browser's version is left out on purpose (a monthly
//! update must not log every clinician out), and so are the language and time zone (travel). Two
//! devices with the same fingerprint stay distinct: the token decides which device it is.
//!
//! **Expiry** is absolute: trust ends `trust_days × 86 400 s` after the verification that granted it,
//! in UTC seconds, so no time zone or daylight-saving change can stretch it; a login never extends it.
//!
//! **Today's policy** judges every use ([`StoredDevice::judge`]), not the policy the device was
//! trusted under. An organization that switches remembering off (or sets `trust_days: 0`) ends
//! every trusted browser at its next `begin`; one that lowers `trust_days` ends those verified
//! longer ago than the new number of days and shortens the rest to their verification plus the
//! new days. A device the policy ends is **revoked** (deleted, recorded as `device_revoked` with
//! reason `policy:remember-device-off` or `policy:trust-days`), not merely ignored: an admin who
//! tightens trust means the trust granted so far to end, and raising the limit again later must
//! not bring those browsers back. Listing applies the same judgement, so a device today's policy
//! no longer honours is never shown as trusted.
//!
//! **Revocation is final** ([`StoredDevice::epoch`]): a device's record counts only while its
//! `epoch` equals the store's revocation counter for that device (`keys::device_epoch`), and every
//! revocation moves that counter before deleting the record. See `trust.rs` for why no
//! interleaving of a revoke with a concurrent write-back (a rotation, a renewal, an undo) can bring
//! a revoked device back.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

pub(crate) mod trust;

use crate::email::i18n::Explain;
use crate::kernel::input;
use crate::kernel::model::BrowserTraits;
use crate::kernel::secret::{self, HmacKey};
use crate::kernel::settings::Settings;
use crate::kernel::time::Timestamp;

/// The cookie's name.
pub const COOKIE_NAME: &str = "__Host-mfa-device";
/// Trusted devices a user may have; trusting one more drops the oldest.
pub const MAX_DEVICES: usize = 10;
/// The longest a browser is trusted without a new code: the bound of the `trust_days` setting.
pub const MAX_TRUST_SECONDS: i64 = 30 * 86_400;
/// How long a rotated-away token still works (parallel tabs that raced the rotation).
pub const ROTATION_GRACE_SECONDS: i64 = 60;
/// Retired token hashes kept per device to recognise a replayed one.
pub const RETIRED_KEPT: usize = 8;
/// Seconds in a day of trust.
const DAY: i64 = 86_400;

/// A token that was rotated away, and when.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Retired {
    pub(crate) mac: String,
    pub(crate) at: Timestamp,
}

/// A trusted device as stored. Holds token hashes only; `Debug` redacts even those.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredDevice {
    pub(crate) v: u8,
    pub(crate) id: String,
    pub(crate) token_mac: String,
    pub(crate) generation: u64,
    pub(crate) retired: Vec<Retired>,
    pub(crate) fingerprint: String,
    pub(crate) label: String,
    pub(crate) first_trusted_at: Timestamp,
    pub(crate) last_used_at: Timestamp,
    pub(crate) last_network: String,
    pub(crate) expires_at: Timestamp,
    /// When the browser last passed a code for this device: what today's `trust_days` count from.
    /// A record written before this field reads `None` and counts from `first_trusted_at`, the
    /// earlier and so the stricter time.
    #[serde(default)]
    pub(crate) verified_at: Option<Timestamp>,
    /// The device's revocation counter (`keys::device_epoch`) when this record was written: the
    /// record counts only while the counter still says the same. Records written before this field
    /// read 0, which is what the counter of a never-revoked device says.
    #[serde(default)]
    pub(crate) epoch: u64,
}

impl std::fmt::Debug for StoredDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredDevice")
            .field("id", &self.id)
            .field("token_mac", &"<redacted>")
            .field("generation", &self.generation)
            .field("label", &self.label)
            .field("expires_at", &self.expires_at)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// What a browser presented in its cookie: a device id and a token (wiped on drop).
pub(crate) struct Presented {
    pub(crate) device_id: String,
    pub(crate) token: Zeroizing<String>,
}

/// Reads the cookie value (or a whole `name=value` pair). Anything malformed or oversized is simply
/// no device: a browser with a broken cookie is asked for a code, never refused.
pub(crate) fn parse_cookie(raw: &str) -> Option<Presented> {
    if raw.len() > input::MAX_COOKIE {
        return None;
    }
    let value = match raw.split_once('=') {
        Some((name, value)) if name.trim() == COOKIE_NAME => value.trim(),
        Some(_) => return None,
        None => raw.trim(),
    };
    let (id, token) = value.split_once('.')?;
    let hex_of = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex_of(id, 32) && hex_of(token, 64)).then(|| Presented {
        device_id: id.to_ascii_lowercase(),
        token: Zeroizing::new(token.to_ascii_lowercase()),
    })
}

/// `HMAC(key, "mfa-step/device/v1" 0x00 token)`, hex: what the store keeps instead of the token.
pub(crate) fn token_mac(key: &HmacKey, token: &str) -> String {
    hex::encode(secret::hmac_sha256(
        key.as_bytes(),
        &[b"mfa-step/device/v1\0", token.as_bytes()],
    ))
}

/// Constant-time comparison of two hex MACs.
pub(crate) fn mac_eq(a: &str, b: &str) -> bool {
    !a.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A fresh device token: 256 random bits, hex.
pub(crate) fn new_token<R: rand_core::CryptoRng + ?Sized>(rng: &mut R) -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(bytes.as_mut());
    Zeroizing::new(hex::encode(bytes.as_ref()))
}

/// The `Set-Cookie` header value that stores `device_id.token` for `max_age` seconds.
pub(crate) fn set_cookie(device_id: &str, token: &str, max_age: i64) -> String {
    cookie::Cookie::build((COOKIE_NAME, format!("{device_id}.{token}")))
        .http_only(true)
        .secure(true)
        .same_site(cookie::SameSite::Lax)
        .path("/")
        .max_age(cookie::time::Duration::seconds(max_age.max(0)))
        .build()
        .to_string()
}

/// The canonical browser traits that must stay the same, and a label for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub(crate) hash: String,
    pub(crate) label: String,
    pub(crate) family: String,
    pub(crate) platform: String,
}

fn family_from_agent(ua: &str) -> &'static str {
    // Order matters: Edge and Opera also say Chrome, Chrome also says Safari.
    if ua.contains("Edg/") {
        "Edge"
    } else if ua.contains("OPR/") {
        "Opera"
    } else if ua.contains("Firefox/") {
        "Firefox"
    } else if ua.contains("Chrome/") || ua.contains("CriOS/") {
        "Chrome"
    } else if ua.contains("Safari/") {
        "Safari"
    } else {
        "Unknown browser"
    }
}

fn platform_from_agent(ua: &str) -> &'static str {
    if ua.contains("iPhone") || ua.contains("iPad") {
        "iOS"
    } else if ua.contains("Android") {
        "Android"
    } else if ua.contains("Windows") {
        "Windows"
    } else if ua.contains("Mac OS X") || ua.contains("Macintosh") {
        "macOS"
    } else if ua.contains("CrOS") {
        "ChromeOS"
    } else if ua.contains("Linux") {
        "Linux"
    } else {
        "unknown OS"
    }
}

fn canonical(s: &str) -> String {
    s.trim()
        .to_lowercase()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The fingerprint of a browser: client hints when the host has them, the user agent otherwise.
pub(crate) fn fingerprint(traits: &BrowserTraits) -> Fingerprint {
    let family = traits
        .browser_family
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map_or_else(
            || family_from_agent(&traits.user_agent).to_owned(),
            |s| s.trim().to_owned(),
        );
    let platform = traits
        .platform
        .as_deref()
        .filter(|s| !s.trim().is_empty())
        .map_or_else(
            || platform_from_agent(&traits.user_agent).to_owned(),
            |s| s.trim().to_owned(),
        );
    let screen = traits
        .screen_class
        .as_deref()
        .map(canonical)
        .unwrap_or_default();
    let material = format!(
        "v1\0{}\0{}\0{screen}",
        canonical(&family),
        canonical(&platform)
    );
    let hash = hex::encode(Sha256::digest(material.as_bytes()));
    let label = format!("{family} on {platform}");
    Fingerprint {
        hash,
        label,
        family,
        platform,
    }
}

/// The network an address belongs to for change detection: its IPv4 `/v4` or IPv6 `/v6` prefix.
/// (IPv4-mapped IPv6 was already turned into IPv4 by input validation.)
pub(crate) fn network(ip: IpAddr, v4_prefix: u8, v6_prefix: u8) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let prefix = v4_prefix.min(32);
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            format!("{}/{prefix}", std::net::Ipv4Addr::from(bits & mask))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let prefix = v6_prefix.min(128);
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            format!("{}/{prefix}", std::net::Ipv6Addr::from(bits & mask))
        }
    }
}

/// Why a presented device was not enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Another browser family or operating system.
    NewBrowser,
    /// Another network.
    NewNetwork,
    /// Trust ran out.
    Expired,
    /// The organization no longer lets browsers be remembered (or trusts them for 0 days).
    NotAllowed,
    /// Verified longer ago than the organization's trust days now allow.
    TrustShortened,
}

impl Change {
    pub(crate) fn rule(self) -> &'static str {
        match self {
            Self::NewBrowser => "device:new-browser",
            Self::NewNetwork => "device:new-network",
            Self::Expired => "device:expired",
            Self::NotAllowed => "device:not-allowed",
            Self::TrustShortened => "device:trust-shortened",
        }
    }

    pub(crate) fn message(self, m: &Explain) -> String {
        match self {
            Self::NewBrowser => m.new_browser.clone(),
            Self::NewNetwork => m.new_network.clone(),
            Self::Expired => m.device_expired.clone(),
            Self::NotAllowed => m.device_not_allowed.clone(),
            Self::TrustShortened => m.device_trust_shortened.clone(),
        }
    }

    /// The `device_revoked` reason when this change ends the device for good: today's policy no
    /// longer allows its trust. A changed browser, network or a natural expiry revoke nothing.
    pub(crate) fn revokes(self) -> Option<&'static str> {
        match self {
            Self::NotAllowed => Some("policy:remember-device-off"),
            Self::TrustShortened => Some("policy:trust-days"),
            Self::NewBrowser | Self::NewNetwork | Self::Expired => None,
        }
    }
}

/// How a presented token relates to a stored device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenMatch {
    /// The current token.
    Current,
    /// A token rotated away less than the grace period ago (a parallel tab).
    Grace,
    /// A token rotated away earlier: someone kept an old cookie.
    Reused,
    /// Not this device's token at all.
    Unknown,
}

impl StoredDevice {
    pub(crate) fn match_token(&self, mac: &str, now: Timestamp) -> TokenMatch {
        if mac_eq(&self.token_mac, mac) {
            return TokenMatch::Current;
        }
        match self.retired.iter().find(|r| mac_eq(&r.mac, mac)) {
            Some(r)
                if now < r.at.plus(ROTATION_GRACE_SECONDS)
                    && self.retired.first().is_some_and(|f| mac_eq(&f.mac, mac)) =>
            {
                TokenMatch::Grace
            }
            Some(_) => TokenMatch::Reused,
            None => TokenMatch::Unknown,
        }
    }

    /// When the browser last passed a code for this device.
    pub(crate) fn verified_at(&self) -> Timestamp {
        self.verified_at.unwrap_or(self.first_trusted_at)
    }

    /// Until when today's `limits` (the organization's policy over the platform's) let this device
    /// be trusted: the earlier of its own end and its last verification plus today's trust days;
    /// `None` when today's limits remember no browser at all.
    pub(crate) fn trusted_until(&self, limits: &Settings) -> Option<Timestamp> {
        if !limits.allow_remember_device || limits.trust_days == 0 {
            return None;
        }
        let by_policy = self.verified_at().plus(i64::from(limits.trust_days) * DAY);
        Some(self.expires_at.min(by_policy))
    }

    /// Whether this device vouches for a browser with `fp` on `net` at `now` under today's
    /// `limits`: until when, or what changed. Today's policy comes first (it ends the device for
    /// good, see [`Change::revokes`]), then the device's own expiry, then the browser and network.
    pub(crate) fn judge(
        &self,
        limits: &Settings,
        fp: &Fingerprint,
        net: &str,
        now: Timestamp,
    ) -> Result<Timestamp, Change> {
        let Some(until) = self.trusted_until(limits) else {
            return Err(Change::NotAllowed);
        };
        if now > self.expires_at {
            Err(Change::Expired)
        } else if now > until {
            Err(Change::TrustShortened)
        } else if fp.hash != self.fingerprint {
            Err(Change::NewBrowser)
        } else if net != self.last_network {
            Err(Change::NewNetwork)
        } else {
            Ok(until)
        }
    }

    /// Replaces the token, keeping the old hash as retired (newest first).
    pub(crate) fn rotate(&mut self, new_mac: String, now: Timestamp) {
        let old = std::mem::replace(&mut self.token_mac, new_mac);
        self.retired.insert(0, Retired { mac: old, at: now });
        self.retired.truncate(RETIRED_KEPT);
        self.generation += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn traits(ua: &str) -> BrowserTraits {
        BrowserTraits {
            user_agent: ua.into(),
            ..Default::default()
        }
    }

    const CHROME_130: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36";
    const CHROME_131: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    const FIREFOX: &str =
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
    const EDGE: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0";
    const MAC_CHROME: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

    #[test]
    fn a_version_bump_keeps_the_fingerprint_another_browser_or_os_changes_it() {
        let base = fingerprint(&traits(CHROME_130));
        assert_eq!(base, fingerprint(&traits(CHROME_131)));
        assert_eq!(base.label, "Chrome on Windows");
        assert_ne!(base.hash, fingerprint(&traits(FIREFOX)).hash);
        assert_ne!(base.hash, fingerprint(&traits(EDGE)).hash);
        assert_ne!(base.hash, fingerprint(&traits(MAC_CHROME)).hash);
        // Client hints win over the user agent, and case does not matter.
        let hinted = BrowserTraits {
            browser_family: Some("chrome".into()),
            platform: Some("WINDOWS".into()),
            ..traits("x")
        };
        assert_eq!(fingerprint(&hinted).hash, base.hash);
    }

    #[test]
    fn networks_by_prefix() {
        let ip = |s: &str| {
            s.parse::<IpAddr>()
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
        };
        assert_eq!(network(ip("203.0.113.7"), 16, 48), "203.0.0.0/16");
        assert_eq!(
            network(ip("203.0.200.1"), 16, 48),
            network(ip("203.0.113.7"), 16, 48)
        );
        assert_ne!(
            network(ip("203.1.113.7"), 16, 48),
            network(ip("203.0.113.7"), 16, 48)
        );
        assert_eq!(network(ip("2001:db8:aa:1::7"), 16, 48), "2001:db8:aa::/48");
        assert_eq!(network(ip("10.1.2.3"), 0, 48), "0.0.0.0/0");
    }

    #[test]
    fn cookies_parse_strictly() {
        let id = "0123456789abcdef0123456789abcdef";
        let token = "ab".repeat(32);
        let ok = parse_cookie(&format!("{id}.{token}"));
        assert!(
            ok.as_ref()
                .is_some_and(|p| p.device_id == id && p.token.as_str() == token)
        );
        assert!(parse_cookie(&format!("{COOKIE_NAME}={id}.{token}")).is_some());
        for bad in [
            "",
            ".",
            "x.y",
            &format!("{id}.{}", "zz".repeat(32)),
            &format!("other={id}.{token}"),
            &"a".repeat(10_000),
        ] {
            assert!(parse_cookie(bad).is_none(), "{bad:?}");
        }
    }

    fn device(verified: i64, expires: i64) -> StoredDevice {
        let fp = fingerprint(&traits(CHROME_131));
        StoredDevice {
            v: 1,
            id: "d".into(),
            token_mac: "m".into(),
            generation: 0,
            retired: Vec::new(),
            fingerprint: fp.hash,
            label: fp.label,
            first_trusted_at: Timestamp(0),
            last_used_at: Timestamp(verified),
            last_network: "203.0.0.0/16".into(),
            expires_at: Timestamp(expires),
            verified_at: Some(Timestamp(verified)),
            epoch: 0,
        }
    }

    fn limits(allow: bool, days: u8) -> Settings {
        Settings {
            allow_remember_device: allow,
            trust_days: days,
            ..Settings::default()
        }
    }

    #[test]
    fn todays_policy_judges_every_use() {
        let fp = fingerprint(&traits(CHROME_131));
        let net = "203.0.0.0/16";
        // Verified on day 10, trusted for 30 days under the policy of the day.
        let d = device(10 * DAY, 40 * DAY);
        let at = |day: i64| Timestamp(day * DAY);
        assert_eq!(d.judge(&limits(true, 30), &fp, net, at(20)), Ok(at(40)));
        // Remembering switched off, or zero days: no device counts, whatever its own end.
        for off in [limits(false, 30), limits(true, 0), limits(false, 0)] {
            assert_eq!(d.judge(&off, &fp, net, at(11)), Err(Change::NotAllowed));
            assert_eq!(d.trusted_until(&off), None);
        }
        // Seven days now: trusted through day 17 (inclusive), then ended by the policy.
        assert_eq!(d.judge(&limits(true, 7), &fp, net, at(17)), Ok(at(17)));
        assert_eq!(
            d.judge(&limits(true, 7), &fp, net, Timestamp(17 * DAY + 1)),
            Err(Change::TrustShortened)
        );
        // More days than it was trusted with never stretch a device past its own end.
        assert_eq!(
            d.judge(&limits(true, 90), &fp, net, Timestamp(40 * DAY + 1)),
            Err(Change::Expired)
        );
        assert_eq!(d.trusted_until(&limits(true, 90)), Some(at(40)));
        // Only the policy's changes revoke.
        assert_eq!(
            Change::NotAllowed.revokes(),
            Some("policy:remember-device-off")
        );
        assert_eq!(Change::TrustShortened.revokes(), Some("policy:trust-days"));
        for c in [Change::Expired, Change::NewBrowser, Change::NewNetwork] {
            assert_eq!(c.revokes(), None);
        }
        // A record from before `verified_at` counts from its first trust: the stricter time.
        let old = StoredDevice {
            verified_at: None,
            ..device(10 * DAY, 40 * DAY)
        };
        assert_eq!(old.trusted_until(&limits(true, 7)), Some(at(7)));
    }

    #[test]
    fn the_cookie_is_host_only_secure_httponly_lax() {
        let c = set_cookie("id", "tok", 3600);
        for part in [
            "__Host-mfa-device=id.tok",
            "HttpOnly",
            "Secure",
            "SameSite=Lax",
            "Path=/",
            "Max-Age=3600",
        ] {
            assert!(c.contains(part), "{c} lacks {part}");
        }
        assert!(!c.contains("Domain"), "{c}");
    }
}
