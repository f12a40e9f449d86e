//! The one integration test binary: every test starts the real server on port 0 with a fresh
//! data directory and talks to it over loopback.

mod account;
mod admin;
mod audit;
mod bad_input;
mod beside;
mod bodies;
mod chat_notifications;
mod cli;
mod fairness;
mod http;
mod identity_cli;
mod invitations;
mod isolation;
mod jobs;
mod jobs_admin_channel;
mod jobs_cli;
mod jobs_crash;
mod jobs_timeout;
mod layers;
mod portal_api;
mod profile;
mod realtime;
mod realtime_rejoin;
mod roles;
mod sessions;
mod support;
mod tenancy;
mod tenant_name;
mod throttle;
mod ui;
mod webhooks_in;
mod webhooks_in_jobs;
mod webhooks_out;
mod webhooks_out_delivery;
mod workspace;
