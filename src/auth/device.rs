//! Device cookies (OWASP, "Slow Down Online Guessing Attacks with Device Cookies"): a client
//! that logs in to an account is given a cookie that names it as a known device of that
//! account, so that the login throttle can tell its later attempts from a guesser's.
//!
//! A cookie is `<nonce>.<signature>`: 128 random bits, and the HMAC-SHA256 under the server's
//! key of the realm, the nonce and the account. The account is not in the cookie but taken
//! from the attempt it comes with: a cookie holds nothing of whose it is, and one made for
//! another account or realm, or altered, is simply not valid for this attempt.

use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const NONCE_BYTES: usize = 16;
const KEY_BYTES: usize = 32;
const SIGNATURE_BYTES: usize = 32;

/// The server's key for device cookies: whoever holds it can make any device known.
pub struct DeviceKey([u8; KEY_BYTES]);

impl DeviceKey {
    pub fn generate() -> DeviceKey {
        let mut key = [0u8; KEY_BYTES];
        OsRng.fill_bytes(&mut key);
        DeviceKey(key)
    }

    /// A key as `to_hex` wrote it; anything else is `None`.
    pub fn from_hex(text: &str) -> Option<DeviceKey> {
        let mut key = [0u8; KEY_BYTES];
        hex::decode_to_slice(text.trim(), &mut key).ok()?;
        Some(DeviceKey(key))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// A new cookie value naming a device of `account` in `realm`.
    pub fn issue(&self, realm: &str, account: &str) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        OsRng.fill_bytes(&mut nonce);
        let nonce = hex::encode(nonce);
        let signature = self.mac(realm, &nonce, account).finalize().into_bytes();
        format!("{nonce}.{}", hex::encode(signature))
    }

    /// The cookie's nonce (the device's name for the throttle) when `cookie` was issued by
    /// this key for `account` in `realm`.
    pub fn verify<'a>(&self, realm: &str, account: &str, cookie: &'a str) -> Option<&'a str> {
        let (nonce, signature) = cookie.trim().split_once('.')?;
        if nonce.len() != 2 * NONCE_BYTES || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut given = [0u8; SIGNATURE_BYTES];
        hex::decode_to_slice(signature, &mut given).ok()?;
        // The nonce is signed as sent: another spelling of the same bytes is another cookie.
        self.mac(realm, nonce, account)
            .verify_slice(&given)
            .ok()
            .map(|()| nonce)
    }

    fn mac(&self, realm: &str, nonce: &str, account: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        // The realm has no newline and the nonce a fixed length: the parts cannot run together.
        for part in ["tenantd device\n", realm, "\n", nonce, account] {
            mac.update(part.as_bytes());
        }
        mac
    }
}

impl std::fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceKey(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_valid_for_its_realm_and_account_only() {
        let key = DeviceKey::generate();
        let cookie = key.issue("account", "owner@example.test");
        let nonce = key.verify("account", "owner@example.test", &cookie);
        assert_eq!(nonce, cookie.split('.').next());
        assert_eq!(nonce.map(str::len), Some(32));
        assert_eq!(key.verify("account", "eve@example.test", &cookie), None);
        assert_eq!(key.verify("admin", "owner@example.test", &cookie), None);
        assert_eq!(
            DeviceKey::generate().verify("account", "owner@example.test", &cookie),
            None,
            "another server's key"
        );
        // Each login gets a cookie of its own.
        assert_ne!(key.issue("account", "owner@example.test"), cookie);
    }

    #[test]
    fn altered_or_malformed_cookies_are_not_valid() {
        let key = DeviceKey::generate();
        let cookie = key.issue("account", "owner@example.test");
        let valid = |c: &str| key.verify("account", "owner@example.test", c).is_some();
        assert!(valid(&cookie));
        for i in 0..cookie.len() {
            if cookie.as_bytes()[i] == b'.' {
                continue;
            }
            let mut altered = cookie.clone().into_bytes();
            altered[i] = if altered[i] == b'0' { b'1' } else { b'0' };
            let altered = String::from_utf8(altered).unwrap();
            assert!(!valid(&altered), "character {i} altered: {altered}");
        }
        let (nonce, signature) = cookie.split_once('.').unwrap();
        for bad in [
            "",
            ".",
            nonce,
            &format!("{nonce}."),
            &format!(".{signature}"),
            &format!("{nonce}.{}", &signature[..62]),
            &format!("{nonce}.{signature}00"),
            &format!("{nonce}x.{signature}"),
        ] {
            assert!(!valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_key_survives_its_hex_form() {
        let key = DeviceKey::generate();
        let cookie = key.issue("admin", "root@example.test");
        let again = DeviceKey::from_hex(&key.to_hex()).unwrap();
        assert!(again
            .verify("admin", "root@example.test", &cookie)
            .is_some());
        assert!(DeviceKey::from_hex("not hex").is_none());
        assert!(DeviceKey::from_hex(&key.to_hex()[2..]).is_none());
        assert_eq!(format!("{key:?}"), "DeviceKey(..)");
    }
}
