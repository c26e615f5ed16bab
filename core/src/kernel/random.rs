//! Fresh random identifiers, drawn from the caller's CSPRNG: the core has no entropy source of its
//! own, so every id is reproducible in a test that passes a seeded generator. 128 bits make ids
//! unguessable, which matters where an id is also a bearer secret (a session id, a CSRF token).

use rand_core::CryptoRng;

/// A fresh opaque identifier: 128 random bits, hex.
pub fn new_id<R: CryptoRng + ?Sized>(rng: &mut R) -> String {
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    hex::encode(id)
}

/// A fresh 256-bit secret, hex: a challenge's code seed (see `login::otp`). The buffer it is drawn
/// into is wiped.
pub fn new_seed<R: CryptoRng + ?Sized>(rng: &mut R) -> String {
    let mut seed = zeroize::Zeroizing::new([0u8; 32]);
    rng.fill_bytes(seed.as_mut());
    hex::encode(seed.as_ref())
}
