//! One-time codes.
//!
//! A code is never stored, not even hashed. What the store holds is a 256-bit random *seed* drawn from
//! the CSPRNG; the code is derived from it with the host's key:
//!
//! ```text
//! mac  = HMAC-SHA256(key, "mfa-step/otp/v1" 0x00 challenge-id 0x00 generation(u32 BE) seed)
//! code = (first 8 bytes of mac, as u64 BE) mod 10^digits, zero-padded
//! ```
//!
//! Why this shape: a resend must carry the *same* code (mail can be slow), so the component has to
//! be able to produce it again, yet the store must not hold it. A keyed derivation gives both: the
//! store alone (a leaked backup, a curious operator) reveals nothing about any code, because the seed
//! is useless without the key. With the key *and* the store an attacker learns codes — but a keyed
//! hash of a 6-digit code would fall to 10^6 HMAC evaluations just as fast, so storing `HMAC(code)`
//! instead would protect nothing more. Verification recomputes the code and compares in constant time.
//! The modulo bias is at most 10^9 / 2^64 < 10^-10.

use hmac::{Hmac, Mac};
use rand_core::CryptoRng;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::kernel::secret::{HmacKey, OtpCode};

const LABEL: &[u8] = b"mfa-step/otp/v1";

/// A fresh 256-bit seed from the caller's CSPRNG, hex-encoded for storage.
pub fn new_seed<R: CryptoRng + ?Sized>(rng: &mut R) -> String {
    crate::kernel::random::new_seed(rng)
}

/// Derives the code for one challenge generation. `seed_hex` that is not hex derives from its raw
/// bytes instead: the result is then simply a code nobody was sent.
#[must_use]
pub fn derive(
    key: &HmacKey,
    challenge_id: &str,
    generation: u32,
    seed_hex: &str,
    digits: u8,
) -> OtpCode {
    let seed =
        Zeroizing::new(hex::decode(seed_hex).unwrap_or_else(|_| seed_hex.as_bytes().to_vec()));
    // HMAC accepts keys of any length, so this cannot fail; the fallback keeps the function total.
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes()) else {
        return OtpCode::new(String::new());
    };
    mac.update(LABEL);
    mac.update(&[0]);
    mac.update(challenge_id.as_bytes());
    mac.update(&[0]);
    mac.update(&generation.to_be_bytes());
    mac.update(&seed);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    let mut head = [0u8; 8];
    head.copy_from_slice(&out[..8]);
    let modulus = 10u64.pow(u32::from(digits));
    let value = u64::from_be_bytes(head) % modulus;
    OtpCode::new(format!("{value:0width$}", width = usize::from(digits)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> HmacKey {
        HmacKey::from_bytes(&[0x0b; 32]).unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn known_answer() {
        // Pinned so that a change to the derivation (which would invalidate every code in flight
        // during an upgrade) is a deliberate, visible decision.
        let seed = "00".repeat(32);
        let code = derive(&key(), "c0ffee", 1, &seed, 6);
        assert_eq!(code.expose().len(), 6);
        assert_eq!(
            code.expose(),
            derive(&key(), "c0ffee", 1, &seed, 6).expose()
        );
        assert_eq!(code.expose(), KNOWN_CODE);
    }
    // Computed independently with Python: hmac.new(bytes([0x0b]*32), b"mfa-step/otp/v1\0c0ffee\0" + (1).to_bytes(4, "big") + bytes(32), sha256), first 8 bytes mod 10**6.
    const KNOWN_CODE: &str = "926904";

    #[test]
    fn every_input_changes_the_code() {
        let s = "11".repeat(32);
        let base = derive(&key(), "a", 1, &s, 8);
        assert!(!base.ct_eq(&derive(&key(), "b", 1, &s, 8)));
        assert!(!base.ct_eq(&derive(&key(), "a", 2, &s, 8)));
        assert!(!base.ct_eq(&derive(&key(), "a", 1, &"12".repeat(32), 8)));
        let other = HmacKey::from_bytes(&[0x0c; 32]).unwrap_or_else(|_| unreachable!());
        assert!(!base.ct_eq(&derive(&other, "a", 1, &s, 8)));
    }

    #[test]
    fn codes_are_zero_padded_and_spread() {
        let mut rng = rand_core::TryRngCore::unwrap_err(rand_core::OsRng);
        let mut first_digit = [0u32; 10];
        for _ in 0..20_000 {
            let seed = new_seed(&mut rng);
            let code = derive(&key(), "x", 1, &seed, 6);
            assert_eq!(code.expose().len(), 6);
            let d = code.expose().as_bytes()[0] - b'0';
            first_digit[usize::from(d)] += 1;
        }
        // Each leading digit should appear ~2000 times; 1500..2500 is > 10 sigma wide.
        assert!(
            first_digit.iter().all(|&n| (1500..2500).contains(&n)),
            "{first_digit:?}"
        );
    }
}
