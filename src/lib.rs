//! tenantd: one binary serving many tenants, each in its own SQLite file.

pub mod api;
pub mod assets;
pub mod auth;
pub mod catalog;
pub mod cli;
pub(crate) mod config;
pub(crate) mod data_dir;
pub mod db;
pub mod demo;
pub(crate) mod error;
pub mod http;
pub mod metrics;
pub mod realtime;
pub(crate) mod serve;
pub mod sqld;
pub mod store;
pub mod tenancy;
#[cfg(test)]
pub(crate) mod test_kit;
pub mod workspace;
