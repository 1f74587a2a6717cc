//! Every integration test, in one binary: each file here is a module of it, so that the crate and its
//! dependencies are linked once rather than once per test file (the issue measured most of CI's time in
//! linking). `common` holds the shared helpers: simulators and daemons on loopback, the PostgreSQL test
//! schemas, the skip log, the personal-data leak check.
//!
//! Run one file's tests with `cargo test --test it <file>::` (e.g. `cargo test --test it hostile::`).

mod common;

mod config;
mod config_example;
mod content_check;
mod crash_safety;
mod delivery_truth;
mod hostile;
mod http_gateway;
mod mapping_reload;
mod normalize_cli;
mod normalize_fixtures;
mod normalize_props;
mod normalize_rules;
mod normalize_syllables;
mod operator_commands;
mod operators;
mod privacy_leak;
mod reconciliation;
mod retention;
mod sim_portal;
mod sim_source;
mod status;
mod store;
mod store_copy;
mod store_model;
mod sync_e2e;
mod watchdog;
