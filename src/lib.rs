//! tenantd: one binary serving many tenants, each in its own SQLite file.

pub mod api;
pub mod auth;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod data_dir;
pub mod db;
pub mod demo;
pub mod error;
pub mod http;
pub mod realtime;
pub mod serve;
pub mod tenancy;
pub mod workspace;
