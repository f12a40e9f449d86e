//! Time-based one-time passwords (RFC 6238 over RFC 4226 HOTP) in the only
//! profile authenticator apps agree on: HMAC-SHA1, 6 digits, 30-second steps.
//! Secrets travel as unpadded RFC 4648 base32, as in `otpauth://` URIs.
//!
//! Refusing a code that was already used (replay within its 90 s of validity)
//! needs storage, so it is the caller's job: [`verify_step`] returns the
//! matched step for the caller to remember and refuse at or below.

use hmac::{Hmac, Mac};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use rand::rngs::OsRng;
use rand::RngCore;
use sha1::Sha1;

use super::token::constant_time_eq;

pub const DIGITS: u32 = 6;
pub const PERIOD: u64 = 30;
/// Steps accepted on either side of the current one, for clock drift and
/// for the seconds a person takes to type.
pub const SKEW: u64 = 1;
/// 160 bits: the HMAC-SHA1 block-output size RFC 4226 recommends.
pub const SECRET_BYTES: usize = 20;
/// Shorter secrets are refused as bad. 80 bits is what some services still
/// issue; anything shorter is a bug or an attack on the key space.
const MIN_SECRET_BYTES: usize = 10;

/// A new random secret, base32 without padding (32 characters).
pub fn new_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    OsRng.fill_bytes(&mut bytes);
    data_encoding::BASE32_NOPAD.encode(&bytes)
}

/// RFC 3986 unreserved characters stay as they are; everything else,
/// including `:`, `@`, spaces (as `%20`, which authenticator apps expect
/// rather than `+`) and non-ASCII, is percent-encoded as UTF-8.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The provisioning URI to show as a QR code, in the Google Authenticator
/// key-URI format. The issuer appears both as the label prefix and as the
/// `issuer` parameter, which is what current apps read.
pub fn otpauth_uri(secret: &str, account: &str, issuer: &str) -> String {
    let issuer = utf8_percent_encode(issuer, COMPONENT).to_string();
    let account = utf8_percent_encode(account, COMPONENT);
    let secret = utf8_percent_encode(secret, COMPONENT);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}\
         &algorithm=SHA1&digits={DIGITS}&period={PERIOD}"
    )
}

/// The code for the step containing `unix_seconds`, or `None` for a secret
/// that is not valid base32 or is too short.
pub fn code_at(secret: &str, unix_seconds: u64) -> Option<String> {
    let key = decode_secret(secret)?;
    hotp(&key, unix_seconds / PERIOD, DIGITS)
}

/// Whether `code` is valid at `unix_seconds`, allowing [`SKEW`] steps either
/// side. Anything but exactly six ASCII digits is false, as is a bad secret.
pub fn verify(secret: &str, code: &str, unix_seconds: u64) -> bool {
    verify_step(secret, code, unix_seconds).is_some()
}

/// Like [`verify`], but returns the time step (`unix_seconds / 30`) the code
/// belongs to, so the caller can store it and refuse the same or an earlier
/// step next time.
pub fn verify_step(secret: &str, code: &str, unix_seconds: u64) -> Option<u64> {
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let key = decode_secret(secret)?;
    let now = unix_seconds / PERIOD;
    let first = now.saturating_sub(SKEW);
    let last = now.saturating_add(SKEW);
    // Every candidate is computed and compared, so the time taken does not
    // say which step (if any) matched.
    let mut matched = None;
    for step in first..=last {
        let expected = hotp(&key, step, DIGITS)?;
        if constant_time_eq(expected.as_bytes(), code.as_bytes()) && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// Accepts what people paste as well as what we issue: lower case, spaces
/// between groups, and `=` padding are tolerated.
fn decode_secret(secret: &str) -> Option<Vec<u8>> {
    let cleaned: String = secret
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let key = data_encoding::BASE32_NOPAD
        .decode(cleaned.trim_end_matches('=').as_bytes())
        .ok()?;
    (key.len() >= MIN_SECRET_BYTES).then_some(key)
}

/// RFC 4226 section 5.3: HMAC-SHA1 of the big-endian counter, dynamic
/// truncation to 31 bits, then the low `digits` decimal digits, zero-padded.
fn hotp(key: &[u8], counter: u64, digits: u32) -> Option<String> {
    let mut mac = Hmac::<Sha1>::new_from_slice(key).ok()?;
    mac.update(&counter.to_be_bytes());
    let hmac = mac.finalize().into_bytes();
    let offset = usize::from(hmac[hmac.len() - 1] & 0x0f);
    let bytes: [u8; 4] = hmac.get(offset..offset + 4)?.try_into().ok()?;
    let binary = u32::from_be_bytes(bytes) & 0x7fff_ffff;
    let modulus = 10u32.checked_pow(digits)?;
    Some(format!(
        "{:0width$}",
        binary % modulus,
        width = digits as usize
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B uses the ASCII key "12345678901234567890".
    const RFC_KEY: &[u8] = b"12345678901234567890";

    fn rfc_secret() -> String {
        data_encoding::BASE32_NOPAD.encode(RFC_KEY)
    }

    /// RFC 6238 appendix B, SHA1 column: (T, 8-digit TOTP).
    const RFC_VECTORS: [(u64, &str); 6] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];

    #[test]
    fn rfc6238_sha1_vectors_with_eight_digits() {
        for (t, expected) in RFC_VECTORS {
            assert_eq!(
                hotp(RFC_KEY, t / PERIOD, 8).as_deref(),
                Some(expected),
                "T={t}"
            );
        }
    }

    #[test]
    fn rfc6238_sha1_vectors_six_digit_codes_and_verify() {
        let secret = rfc_secret();
        assert_eq!(secret, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        for (t, expected) in RFC_VECTORS {
            let six = &expected[2..];
            assert_eq!(code_at(&secret, t).as_deref(), Some(six), "T={t}");
            assert!(verify(&secret, six, t), "T={t}");
        }
    }

    #[test]
    fn rfc4226_hotp_vectors() {
        // RFC 4226 appendix D, counters 0..=9.
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(hotp(RFC_KEY, counter as u64, 6).as_deref(), Some(*code));
        }
    }

    #[test]
    fn one_step_either_side_is_accepted_two_are_not() {
        // A fixed secret and time, so the five codes are known to differ.
        let secret = rfc_secret();
        let now = 1_700_000_000;
        let step = now / PERIOD;
        for (offset, accepted) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let at = now.checked_add_signed(offset * PERIOD as i64).unwrap();
            let code = code_at(&secret, at).unwrap();
            assert_eq!(verify(&secret, &code, now), accepted, "offset {offset}");
            if accepted {
                let matched = verify_step(&secret, &code, now).unwrap();
                assert_eq!(matched, step.checked_add_signed(offset).unwrap());
            }
        }
    }

    #[test]
    fn window_does_not_underflow_at_the_epoch() {
        let secret = rfc_secret();
        let code = code_at(&secret, 0).unwrap();
        assert_eq!(verify_step(&secret, &code, 0), Some(0));
        assert_eq!(verify_step(&secret, &code, 59), Some(0));
        assert!(verify(&secret, &code_at(&secret, 30).unwrap(), 0));
    }

    #[test]
    fn malformed_codes_and_secrets_are_refused() {
        let secret = rfc_secret();
        let t = 1_234_567_890;
        let good = code_at(&secret, t).unwrap();
        assert!(verify(&secret, &good, t));
        for code in [
            "",
            "00592",
            "0005924",
            "89005924",
            "00592a",
            " 05924",
            "+05924",
            "-05924",
            "٠٠٥٩٢٤",
        ] {
            assert!(!verify(&secret, code, t), "{code:?}");
        }
        for bad in [
            "",
            "not base32!",
            "GEZDGNBV",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ1",
        ] {
            assert_eq!(code_at(bad, t), None, "{bad:?}");
            assert!(!verify(bad, &good, t), "{bad:?}");
        }
    }

    #[test]
    fn pasted_secrets_are_tolerated() {
        let t = 1_111_111_111;
        let expected = code_at("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", t);
        assert!(expected.is_some());
        for pasted in [
            "gezdgnbvgy3tqojqgezdgnbvgy3tqojq",
            "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ====",
        ] {
            assert_eq!(code_at(pasted, t), expected, "{pasted:?}");
        }
    }

    #[test]
    fn new_secret_is_20_bytes_of_unpadded_base32() {
        let a = new_secret();
        assert_eq!(a.len(), 32);
        assert!(!a.contains('='));
        assert_eq!(
            data_encoding::BASE32_NOPAD
                .decode(a.as_bytes())
                .unwrap()
                .len(),
            SECRET_BYTES
        );
        assert_ne!(a, new_secret());
    }

    #[test]
    fn otpauth_uri_encodes_label_and_issuer() {
        let uri = otpauth_uri(
            "JBSWY3DPEHPK3PXP",
            "alice+1@example.com",
            "ACME Co: Ünïcode&=?",
        );
        assert_eq!(
            uri,
            "otpauth://totp/ACME%20Co%3A%20%C3%9Cn%C3%AFcode%26%3D%3F:alice%2B1%40example.com\
             ?secret=JBSWY3DPEHPK3PXP&issuer=ACME%20Co%3A%20%C3%9Cn%C3%AFcode%26%3D%3F\
             &algorithm=SHA1&digits=6&period=30"
        );
        assert_eq!(
            otpauth_uri("JBSWY3DPEHPK3PXP", "bob", "tenantd"),
            "otpauth://totp/tenantd:bob?secret=JBSWY3DPEHPK3PXP&issuer=tenantd\
             &algorithm=SHA1&digits=6&period=30"
        );
    }
}
