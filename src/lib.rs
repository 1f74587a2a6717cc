//! tthc-sync: synchronizes administrative dossiers (hồ sơ TTHC) from a provincial one-stop system to the
//! National Public Service Portal, durably, and shows operators which units' data failed to sync and why.
//!
//! - [`source`]: the provincial system's adapter (wire types, client, the feed reader that never skips).
//! - [`portal`]: the national portal's adapter (wire types, client with sessions and retries).
//! - [`normalize`]: pure translation of a source record into the portal's schema, or rejections.
//! - [`notify`]: the systemd notification protocol: READY, RELOADING, STOPPING, watchdog pings.
//! - [`privacy`]: the one masking function every output uses for personal data.
//! - [`sim`]: simulators of both systems, faults included.
//! - [`metrics`]: the Prometheus metrics, counted where events happen and read from the ledger at scrape.
//! - [`status`]: the status server: health checks, `/metrics`, the operators' dashboard and its JSON.
//! - [`unit_key`]: the one key a unit is reported and filtered under (`agency:<id>`, `unknown`).
//! - [`actors`]: who must act on each reason code, and the next step in both languages.

pub mod actors;
pub mod app;
pub mod commands;
pub mod config;
pub mod decide;
pub mod http;
pub mod metrics;
pub mod normalize;
pub mod notify;
pub mod portal;
pub mod privacy;
pub mod reconcile;
pub mod report;
pub mod sim;
pub mod source;
pub mod status;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod unit_key;
