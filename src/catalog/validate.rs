//! Rules for the names people choose: slugs, display names, domains and email addresses.
//! Everything that reaches a file name, a URL or a Host lookup passes here.

use std::fmt;

/// Slugs that would collide with the server's own paths or hostnames.
pub const RESERVED_SLUGS: &[&str] = &[
    "account",
    "accounts",
    "admin",
    "api",
    "app",
    "apps",
    "assets",
    "auth",
    "billing",
    "broadcasting",
    "cdn",
    "central",
    "dashboard",
    "default",
    "dev",
    "dns",
    "docs",
    "files",
    "ftp",
    "healthz",
    "help",
    "imap",
    "internal",
    "localhost",
    "login",
    "logout",
    "mail",
    "media",
    "metrics",
    "new",
    "null",
    "public",
    "register",
    "root",
    "signup",
    "smtp",
    "static",
    "status",
    "support",
    "system",
    "t",
    "tenant",
    "tenants",
    "undefined",
    "uploads",
    "webhooks",
    "ws",
    "www",
];

pub const MAX_SLUG_LEN: usize = 63;
pub const MAX_NAME_CHARS: usize = 100;
pub const MAX_DOMAIN_LEN: usize = 253;

/// Which input was refused and why. Messages never echo the input, which may
/// hold anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        ValidationError {
            field,
            message: message.into(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.field, self.message)
    }
}

impl std::error::Error for ValidationError {}

fn is_lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$` and not reserved.
pub fn validate_slug(slug: &str) -> Result<(), ValidationError> {
    let err = |m: &str| Err(ValidationError::new("slug", m));
    let bytes = slug.as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_SLUG_LEN {
        return err("must be 1 to 63 characters");
    }
    if !bytes.iter().all(|&b| is_lower_alnum(b) || b == b'-') {
        return err("may only contain a-z, 0-9 and '-'");
    }
    if !is_lower_alnum(bytes[0]) || !is_lower_alnum(bytes[bytes.len() - 1]) {
        return err("must start and end with a letter or digit");
    }
    if RESERVED_SLUGS.contains(&slug) {
        return err("is reserved");
    }
    // Tenants are named by slug or by id in the same places (X-Tenant-*, the admin API): a
    // slug that reads as a UUID could pass for another tenant's id.
    if uuid::Uuid::parse_str(slug).is_ok() {
        return err("must not look like a UUID");
    }
    Ok(())
}

/// Returns the trimmed name: 1 to 100 characters, no control characters.
pub fn validate_name(name: &str) -> Result<String, ValidationError> {
    let name = name.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(ValidationError::new("name", "must be 1 to 100 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(name.to_string())
}

/// Returns the domain lower-cased: an ASCII hostname with at least two labels
/// (`acme.test`), no port, path, trailing dot or IP address.
pub fn validate_domain(domain: &str) -> Result<String, ValidationError> {
    let err = |m: &str| Err(ValidationError::new("domain", m));
    if domain.is_empty() || domain.len() > MAX_DOMAIN_LEN {
        return err("must be 1 to 253 characters");
    }
    if !domain
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return err(
            "may only contain a-z, 0-9, '-' and '.' (no port, path or unicode; use punycode)",
        );
    }
    let domain = domain.to_ascii_lowercase();
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 {
        return err("must have at least two labels, like acme.test");
    }
    for label in &labels {
        if label.is_empty() || label.len() > 63 {
            return err("each label must be 1 to 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return err("labels must not start or end with '-'");
        }
    }
    if labels[labels.len() - 1].bytes().all(|b| b.is_ascii_digit()) {
        return err("must be a hostname, not an IP address");
    }
    Ok(domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        let long_ok = "a".repeat(63);
        let too_long = "a".repeat(64);
        for good in [
            "acme",
            "a",
            "7",
            "acme-corp",
            "a-b-c",
            "x1",
            "a--b",
            long_ok.as_str(),
        ] {
            assert_eq!(validate_slug(good), Ok(()), "{good:?} should be accepted");
        }
        for bad in [
            "",
            "../x",
            "..",
            "%2e%2e",
            "a/b",
            "a\\b",
            "acme\0",
            "\0",
            too_long.as_str(),
            "Acme",
            "ACME",
            "acmé",
            "ａｃｍｅ",
            "-acme",
            "acme-",
            "-",
            "acme.test",
            "acme corp",
            " acme",
            "acme\n",
            "a_b",
            "admin",
            "api",
            "www",
            "t",
            "healthz",
            "localhost",
        ] {
            let err = validate_slug(bad).expect_err(&format!("{bad:?} should be refused"));
            assert_eq!(err.field, "slug");
        }
        for reserved in RESERVED_SLUGS {
            assert!(validate_slug(reserved).is_err(), "{reserved}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(validate_name("  Acme Corp  ").unwrap(), "Acme Corp");
        assert_eq!(
            validate_name("Café Ünïcødé 東京").unwrap(),
            "Café Ünïcødé 東京"
        );
        assert!(validate_name(&"é".repeat(100)).is_ok());
        for bad in ["", "   ", "a\0b", "a\nb", "tab\there", "\u{7f}"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name(&"é".repeat(101)).is_err());
    }

    #[test]
    fn domains() {
        assert_eq!(validate_domain("acme.test").unwrap(), "acme.test");
        assert_eq!(
            validate_domain("Shop.ACME.example").unwrap(),
            "shop.acme.example"
        );
        assert_eq!(
            validate_domain("xn--caf-dma.test").unwrap(),
            "xn--caf-dma.test"
        );
        let label = "a".repeat(63);
        assert!(validate_domain(&format!("{label}.test")).is_ok());
        for bad in [
            "",
            "acme",
            "acme.test:8080",
            "acme.test/path",
            "café.test",
            "acme..test",
            ".acme.test",
            "acme.test.",
            "-acme.test",
            "acme-.test",
            "acme_x.test",
            "127.0.0.1",
            "[::1]",
            "acme.test\0",
            "user@acme.test",
            " acme.test",
        ] {
            assert!(validate_domain(bad).is_err(), "{bad:?}");
        }
        assert!(validate_domain(&format!("{}.test", "a".repeat(64))).is_err());
        let long = [label.as_str(); 4].join(".") + ".test";
        assert!(long.len() > 253);
        assert!(validate_domain(&long).is_err());
    }
}

/// Longest email address accepted (RFC 5321's limit on a path).
pub const MAX_EMAIL_LEN: usize = 254;

/// How much of an email address's shape [`check_email`] asks for. Both are about shape, not
/// deliverability: the real check is a mail that arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmailRule {
    /// Sign-in names (users, admins, invitations): one `@` with something on both sides, no
    /// whitespace or control characters, at most 254 bytes. Local hosts pass: the first
    /// system admin is `admin@localhost`.
    Account,
    /// Addresses kept to write to (an order's customer): as for `Account`, at most 254
    /// characters, and also a local part of at most 64 characters and a domain of at least
    /// two dot-separated labels of letters, digits and inner hyphens (1 to 63 bytes each),
    /// so `a@b` or `a@-b.co` is refused as a likely typo.
    Mailbox,
}

/// Whether `email` (trimmed by the caller) has the shape `rule` asks for; the error says what
/// is wrong with it.
pub fn check_email(email: &str, rule: EmailRule) -> Result<(), &'static str> {
    // Each rule keeps the unit its callers have always measured in.
    let len = match rule {
        EmailRule::Account => email.len(),
        EmailRule::Mailbox => email.chars().count(),
    };
    if email.is_empty() || len > MAX_EMAIL_LEN {
        return Err("must be 1 to 254 characters");
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain spaces or control characters");
    }
    let (local, domain) = match email.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => (local, domain),
        _ => return Err("must look like name@example.com"),
    };
    if domain.contains('@') {
        return Err("must contain exactly one @");
    }
    if rule == EmailRule::Account {
        return Ok(());
    }
    if local.chars().count() > 64 {
        return Err("must have a name of at most 64 characters before the @");
    }
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    if !domain_ok {
        return Err("must have a domain like example.com after the @");
    }
    Ok(())
}
