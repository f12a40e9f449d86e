//! Opaque bearer tokens (sessions, API keys, reset links): generating them,
//! digesting them for storage, and comparing secrets without timing leaks.
//!
//! Only `digest(token)` is ever stored: a leaked table then holds nothing a
//! client can present. A plain SHA-256 is enough (no salt, no Argon2) because a
//! token has 256 bits of entropy and cannot be guessed, unlike a password.

use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Random bytes in a token: 256 bits, far beyond any online or offline guess.
pub const TOKEN_BYTES: usize = 32;

/// A new token: 32 bytes from the operating system's CSPRNG as 64 lower-case
/// hex characters. Hex rather than base64url because it survives every place
/// a token travels (headers, cookies, URLs, case-insensitive copy and paste)
/// without escaping or padding questions, and is trivial to validate; the 21
/// extra characters cost nothing that matters.
pub fn generate() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Whether `text` has the form `generate` gives: anything else cannot match a stored digest
/// and is refused without a lookup.
pub fn well_formed(text: &str) -> bool {
    text.len() == 2 * TOKEN_BYTES && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The form a token is stored and looked up in: SHA-256 of its text, as 64
/// lower-case hex characters.
pub fn digest(token: &str) -> TokenDigest {
    // Into a buffer: `hex::encode` builds a string a char at a time, and this runs on every
    // authenticated request.
    let mut hex = [0u8; 64];
    let encoded = hex::encode_to_slice(Sha256::digest(token.as_bytes()), &mut hex);
    debug_assert!(encoded.is_ok());
    TokenDigest(hex)
}

/// A [`digest`], kept on the stack: a lookup needs no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 64]);

impl TokenDigest {
    pub fn as_str(&self) -> &str {
        // Hex digits only, always ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Equality whose time depends only on the lengths, not on where the inputs
/// first differ. Lengths are not treated as secret.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimiser from turning the fold into an early exit.
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_64_lower_hex_and_distinct() {
        let a = generate();
        let b = generate();
        for t in [&a, &b] {
            assert_eq!(t.len(), 64, "{t}");
            assert!(
                t.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
                "{t}"
            );
        }
        assert_ne!(a, b);
    }

    #[test]
    fn digest_is_sha256_hex() {
        // FIPS 180-2 test vector for "abc".
        assert_eq!(
            digest("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let t = generate();
        assert_eq!(digest(&t), digest(&t));
        assert_ne!(digest(&t).as_str(), t);
    }

    #[test]
    fn constant_time_eq_compares_contents_and_lengths() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"Secret"));
        assert!(!constant_time_eq(b"secret", b"secret!"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
