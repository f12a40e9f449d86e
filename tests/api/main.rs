//! The one integration test binary: every test starts the real server on port 0 with a fresh
//! data directory and talks to it over loopback.

mod beside;
mod bodies;
mod cli;
mod fairness;
mod http;
mod identity;
mod invitations;
mod realtime;
mod support;
mod tenancy;
mod throttle;
mod workspace;
