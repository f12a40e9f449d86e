//! Standard Webhooks 1.0 signatures (<https://www.standardwebhooks.com/>): `whsec_` secrets,
//! the `webhook-id`, `webhook-timestamp` and `webhook-signature` headers, and the check of an
//! inbound request against one or more secrets at a given time.
//!
//! Our own rather than the `standardwebhooks` crate: its `verify` reads the system clock, which
//! no test can move, takes an `http::HeaderMap` we do not have, and brings `http`, `time` and a
//! second base64 crate for what `hmac`, `sha2` and `data-encoding` (already ours) do in a few
//! lines. The spec's published example is a unit test below, and the end-to-end tests sign with
//! the official npm package.

use data_encoding::BASE64;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;

/// How far a `webhook-timestamp` may be from our clock, either way (the spec's example value).
pub const TOLERANCE_SECS: i64 = 5 * 60;
pub const SECRET_PREFIX: &str = "whsec_";
/// Signatures one `webhook-signature` header may list; more is not a sender rotating secrets.
const MAX_SIGNATURES: usize = 16;
/// Longest `webhook-id` we keep (ours and the common senders' are far shorter).
pub const MAX_ID_LEN: usize = 256;

type HmacSha256 = Hmac<Sha256>;

/// A signing key: random bytes, shown as `whsec_` and their base64.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// 32 random bytes (the spec asks for 24 to 64).
    pub fn generate() -> Secret {
        let mut key = vec![0u8; 32];
        OsRng.fill_bytes(&mut key);
        Secret(key)
    }

    /// `whsec_<base64>`, or the bare base64.
    pub fn parse(text: &str) -> Option<Secret> {
        let b64 = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        BASE64
            .decode(b64.as_bytes())
            .ok()
            .filter(|k| !k.is_empty())
            .map(Secret)
    }

    pub fn to_text(&self) -> String {
        [SECRET_PREFIX, &BASE64.encode(&self.0)].concat()
    }

    fn mac(&self, id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(itoa::Buffer::new().format(timestamp).as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// `v1,<base64 HMAC-SHA256 of id.timestamp.body>`: one entry of a `webhook-signature`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(id, timestamp, body).finalize().into_bytes();
        ["v1,", &BASE64.encode(&tag)].concat()
    }
}

/// Why a request's webhook headers were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A header is missing or not of its form (the header's name).
    BadHeader(&'static str),
    /// The timestamp is older than the tolerance (by how many seconds from now).
    TooOld(i64),
    /// The timestamp is further ahead than the tolerance.
    TooNew(i64),
    /// No `v1` signature matches any of the secrets (or there is no secret).
    NoMatch,
}

/// The three headers of a Standard Webhooks request, checked for form only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed<'a> {
    pub id: &'a str,
    pub timestamp: i64,
    signatures: &'a str,
}

/// Reads the headers through `header` (a lookup by lower-case name).
pub fn signed<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Result<Signed<'a>, Refusal> {
    let id = header("webhook-id")
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= MAX_ID_LEN)
        .filter(|id| id.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or(Refusal::BadHeader("webhook-id"))?;
    let timestamp = header("webhook-timestamp")
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 12 && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<i64>().ok())
        .ok_or(Refusal::BadHeader("webhook-timestamp"))?;
    let signatures = header("webhook-signature")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(Refusal::BadHeader("webhook-signature"))?;
    Ok(Signed {
        id,
        timestamp,
        signatures,
    })
}

impl Signed<'_> {
    /// Within [`TOLERANCE_SECS`] of `now`, either way.
    pub fn check_time(&self, now: i64) -> Result<(), Refusal> {
        if now - self.timestamp > TOLERANCE_SECS {
            Err(Refusal::TooOld(now - self.timestamp))
        } else if self.timestamp - now > TOLERANCE_SECS {
            Err(Refusal::TooNew(self.timestamp - now))
        } else {
            Ok(())
        }
    }

    /// Whether some `v1,` signature of the header is `body`'s under one of `secrets`
    /// (several during a rotation). Compared in constant time; other versions are skipped,
    /// as the spec says.
    pub fn verify<'s>(
        &self,
        secrets: impl IntoIterator<Item = &'s Secret>,
        body: &[u8],
    ) -> Result<(), Refusal> {
        let tags: Vec<Vec<u8>> = self
            .signatures
            .split(' ')
            .filter_map(|entry| entry.split_once(','))
            .filter(|(version, _)| *version == "v1")
            .filter_map(|(_, b64)| BASE64.decode(b64.as_bytes()).ok())
            .take(MAX_SIGNATURES)
            .collect();
        for secret in secrets {
            let mac = secret.mac(self.id, self.timestamp, body);
            if tags.iter().any(|tag| mac.clone().verify_slice(tag).is_ok()) {
                return Ok(());
            }
        }
        Err(Refusal::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(id: &'a str, ts: &'a str, sig: &'a str) -> impl Fn(&str) -> Option<&'a str> {
        move |name| match name {
            "webhook-id" => Some(id),
            "webhook-timestamp" => Some(ts),
            "webhook-signature" => Some(sig),
            _ => None,
        }
    }

    /// The example of the Standard Webhooks specification.
    #[test]
    fn the_specifications_example_verifies() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(
            secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            expected
        );
        let header = format!("v1a,abc {expected} v2,xyz");
        let signed = signed(headers(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            "1614265330",
            &header,
        ))
        .unwrap();
        assert_eq!(signed.check_time(1614265330 + 300), Ok(()));
        assert_eq!(signed.verify([&secret], body), Ok(()));
        assert_eq!(
            signed.verify([&secret], br#"{"test": 2432232315}"#),
            Err(Refusal::NoMatch)
        );
        assert_eq!(
            signed.verify([&Secret::generate()], body),
            Err(Refusal::NoMatch)
        );
        // The right one among several, as during a rotation; none at all matches nothing.
        assert_eq!(signed.verify([&Secret::generate(), &secret], body), Ok(()));
        assert_eq!(signed.verify([], body), Err(Refusal::NoMatch));
    }

    #[test]
    fn the_tolerance_holds_both_ways() {
        let s = signed(headers("id", "1000", "v1,x")).unwrap();
        assert_eq!(s.check_time(1000 + TOLERANCE_SECS), Ok(()));
        assert_eq!(s.check_time(1000 - TOLERANCE_SECS), Ok(()));
        assert_eq!(
            s.check_time(1001 + TOLERANCE_SECS),
            Err(Refusal::TooOld(301))
        );
        assert_eq!(
            s.check_time(999 - TOLERANCE_SECS),
            Err(Refusal::TooNew(301))
        );
    }

    #[test]
    fn malformed_headers_are_named() {
        let bad = |id, ts, sig| signed(headers(id, ts, sig)).unwrap_err();
        assert_eq!(bad("", "1", "v1,x"), Refusal::BadHeader("webhook-id"));
        assert_eq!(bad("a b", "1", "v1,x"), Refusal::BadHeader("webhook-id"));
        let long = "x".repeat(MAX_ID_LEN + 1);
        assert_eq!(bad(&long, "1", "v1,x"), Refusal::BadHeader("webhook-id"));
        for ts in ["", "-5", "+5", "1.5", "soon", "9999999999999"] {
            assert_eq!(
                bad("id", ts, "v1,x"),
                Refusal::BadHeader("webhook-timestamp"),
                "{ts}"
            );
        }
        assert_eq!(bad("id", "1", " "), Refusal::BadHeader("webhook-signature"));
        assert_eq!(
            signed(|_| None).unwrap_err(),
            Refusal::BadHeader("webhook-id")
        );
    }

    #[test]
    fn secrets_read_back_and_refuse_nonsense() {
        let secret = Secret::generate();
        let text = secret.to_text();
        assert!(text.starts_with("whsec_"));
        assert_eq!(Secret::parse(&text), Some(secret.clone()));
        assert_eq!(Secret::parse(&text[6..]), Some(secret));
        assert_eq!(Secret::parse("whsec_"), None);
        assert_eq!(Secret::parse("whsec_not base64!"), None);
    }
}
