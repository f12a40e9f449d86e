//! tenantd's storage and tenancy core: SQLite plumbing (`db`), the central
//! catalog of tenants (`catalog`) and per-tenant databases (`tenancy`).

pub mod catalog;
pub mod db;
pub mod tenancy;
