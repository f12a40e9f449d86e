//! Password hashing: Argon2id with OWASP's parameters, stored as PHC strings,
//! plus the checks that keep old hashes upgradable (`needs_rehash`) and keep an
//! unknown account as slow as a wrong password (`verify_dummy`).
//!
//! These calls cost tens of milliseconds of CPU and ~19 MiB of memory each:
//! servers run them through [`crate::auth::hasher`], not on request threads.

use std::fmt;
use std::sync::OnceLock;

use argon2::password_hash::{self, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version, ARGON2ID_IDENT};
use rand::rngs::OsRng;
use rand::RngCore;

/// Memory cost in KiB (19 MiB), iterations and lanes: OWASP's first Argon2id
/// recommendation, which balances memory-hardness against per-login CPU time.
pub const M_COST: u32 = 19_456;
pub const T_COST: u32 = 2;
pub const P_COST: u32 = 1;
/// Bytes of random salt (RFC 9106 recommends 16) and of hash output.
pub const SALT_LEN: usize = 16;
pub const OUTPUT_LEN: usize = 32;

// Evaluated at compile time, so invalid parameters fail the build rather than
// a login.
const PARAMS: Params = match Params::new(M_COST, T_COST, P_COST, Some(OUTPUT_LEN)) {
    Ok(params) => params,
    Err(_) => panic!("invalid Argon2 parameters"),
};

#[derive(Debug)]
pub enum PasswordError {
    /// The Argon2 implementation refused the input (e.g. a password longer
    /// than 4 GiB) or failed internally.
    Argon2(password_hash::Error),
}

impl fmt::Display for PasswordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordError::Argon2(e) => write!(f, "password hashing failed: {e}"),
        }
    }
}

impl std::error::Error for PasswordError {}

fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, PARAMS)
}

/// Hashes `password` with a fresh random salt and returns the PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), which carries everything
/// `verify` needs.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let mut salt = [0u8; SALT_LEN];
    OsRng.fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(PasswordError::Argon2)?;
    let phc = argon2()
        .hash_password(password.as_bytes(), &salt)
        .map_err(PasswordError::Argon2)?;
    Ok(phc.to_string())
}

/// Whether `password` matches the stored PHC string. The algorithm and
/// parameters come from `phc` itself, so hashes made with older settings still
/// verify. A stored hash that cannot be parsed or used is a data problem, not
/// a wrong password: it is logged and the answer is `false`.
pub fn verify(password: &str, phc: &str) -> bool {
    let parsed = match PasswordHash::new(phc) {
        Ok(parsed) => parsed,
        Err(e) => {
            log::warn!("stored password hash is malformed: {e}");
            return false;
        }
    };
    match argon2().verify_password(password.as_bytes(), &parsed) {
        Ok(()) => true,
        Err(password_hash::Error::Password) => false,
        Err(e) => {
            log::warn!("stored password hash cannot be verified: {e}");
            false
        }
    }
}

/// Whether a stored hash should be replaced (after a successful `verify`) by
/// one from [`hash`]: true unless it is Argon2id v19 with exactly our
/// parameters, salt length and output length. Unparsable input is true too.
pub fn needs_rehash(phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return true;
    };
    if parsed.algorithm != ARGON2ID_IDENT || parsed.version != Some(Version::V0x13.into()) {
        return true;
    }
    let Ok(params) = Params::try_from(&parsed) else {
        return true;
    };
    let salt_len = parsed.salt.and_then(|salt| {
        let mut buf = [0u8; 64];
        salt.decode_b64(&mut buf).ok().map(|bytes| bytes.len())
    });
    !(params.m_cost() == M_COST
        && params.t_cost() == T_COST
        && params.p_cost() == P_COST
        && params.keyid().is_empty()
        && params.data().is_empty()
        && params.output_len() == Some(OUTPUT_LEN)
        && salt_len.is_some_and(|len| len >= SALT_LEN))
}

/// Runs a verification against a fixed hash made with our parameters and
/// throws the answer away, so that a login for an unknown account takes as
/// long as one with a wrong password and does not reveal which emails exist.
pub fn verify_dummy(password: &str) {
    if let Some(phc) = dummy_hash() {
        let _ = verify(password, phc);
    }
}

/// The dummy hash, computed on first use. `None` only if hashing itself is
/// broken, in which case every real verification fails as well.
pub(crate) fn dummy_hash() -> Option<&'static str> {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    DUMMY
        .get_or_init(|| match hash("tenantd dummy password") {
            Ok(phc) => Some(phc),
            Err(e) => {
                log::error!("cannot compute the dummy password hash: {e}");
                None
            }
        })
        .as_deref()
}

/// A password to show once: 20 characters from a 32-letter alphabet (100 bits).
pub fn random() -> String {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789AB";
    let bytes: [u8; 20] = rand::random();
    bytes
        .iter()
        .map(|b| ALPHABET[(*b as usize) % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hash of `password` with deliberately weak settings, as an older
    /// deployment (or another Argon2 variant) might have stored.
    fn weak_hash(password: &str, algorithm: Algorithm, m: u32, t: u32, p: u32) -> String {
        let params = Params::new(m, t, p, None).unwrap();
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        Argon2::new(algorithm, Version::V0x13, params)
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    #[test]
    fn hash_is_argon2id_with_owasp_parameters() {
        let phc = hash("correct horse").unwrap();
        assert!(
            phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "unexpected PHC string {phc}"
        );
        assert!(!needs_rehash(&phc));
        // A fresh salt every time.
        assert_ne!(phc, hash("correct horse").unwrap());
    }

    #[test]
    fn verify_accepts_the_right_password_only() {
        let phc = hash("correct horse").unwrap();
        assert!(verify("correct horse", &phc));
        assert!(!verify("correct horsf", &phc));
        assert!(!verify("", &phc));
    }

    #[test]
    fn weaker_parameters_verify_but_need_rehash() {
        for (m, t, p) in [(8, 1, 1), (M_COST, 1, 1), (M_COST / 2, T_COST, P_COST)] {
            let phc = weak_hash("pw", Algorithm::Argon2id, m, t, p);
            assert!(verify("pw", &phc), "{phc}");
            assert!(!verify("px", &phc), "{phc}");
            assert!(needs_rehash(&phc), "{phc}");
        }
    }

    #[test]
    fn other_argon2_variants_verify_but_need_rehash() {
        for algorithm in [Algorithm::Argon2i, Algorithm::Argon2d] {
            let phc = weak_hash("pw", algorithm, M_COST, T_COST, P_COST);
            assert!(!phc.starts_with("$argon2id$"), "{phc}");
            assert!(verify("pw", &phc), "{phc}");
            assert!(needs_rehash(&phc), "{phc}");
        }
    }

    #[test]
    fn garbage_stored_hash_is_false_and_needs_rehash() {
        for phc in [
            "",
            "password",
            "$argon2id$",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$",
            "$bcrypt$v=19$m=19456,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW",
        ] {
            assert!(!verify("pw", phc), "{phc:?}");
            assert!(needs_rehash(phc), "{phc:?}");
        }
    }

    #[test]
    fn dummy_hash_uses_current_parameters() {
        let phc = dummy_hash().unwrap();
        assert!(!needs_rehash(phc));
        // Same hash on every call: computed once.
        assert!(std::ptr::eq(phc, dummy_hash().unwrap()));
        verify_dummy("anything");
    }
}
