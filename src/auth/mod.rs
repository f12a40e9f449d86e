//! Authentication mechanisms, free of HTTP and of storage: password hashing
//! ([`password`]) and the bounded pool that runs it ([`hasher`]), opaque
//! session/API tokens ([`token`]), TOTP second factors ([`totp`]), login
//! throttling ([`throttle`]) and the device cookies it trusts ([`device`]).
//! Callers own the policy of when to use which, and where the resulting hashes,
//! digests and secrets are stored.

pub mod clock;
pub(crate) mod device;
pub mod hasher;
pub mod password;
pub mod principal;
pub mod throttle;
pub mod token;
pub mod totp;
