//! tthc-sync: synchronizes administrative dossiers (hồ sơ TTHC) from a provincial one-stop system to the
//! National Public Service Portal, durably, and shows operators which units' data failed to sync and why.
//!
//! Every module, one line each, from the pure core outwards. A module uses only those above it in its
//! group or in an earlier group (`.ci/module-cycles` fails CI on a cycle).
//!
//! The pure core (no I/O):
//! - [`decide`]: the ledger's states and every delivery rule, as pure functions the stores call.
//! - [`normalize`]: a source record into the portal's schema, or per-field rejections.
//! - [`privacy`]: the one masking function every output uses for personal data.
//! - [`unit_key`]: the one key a unit is reported and filtered under (`agency:<id>`, `unknown`).
//! - [`actors`]: who must act on each reason code, and the next step in both languages.
//! - [`indicators`]: the Decision 766 indicators computed from portal payloads, per unit (a preview).
//!
//! The adapters:
//! - [`http`]: what both HTTP clients share: building them, gateway tokens, retries, bounded bodies.
//! - [`source`]: the provincial system's wire types, client, and the feed reader that never skips a row.
//! - [`portal`]: the national portal's wire types, their payload writer and the client (sessions, answers matched by `MaHoSo`).
//! - [`store`]: the ledger, one trait per concern, each statement written once for SQLite and PostgreSQL.
//! - [`notify`]: the systemd notification protocol: READY, RELOADING, STOPPING, watchdog pings.
//! - [`telemetry`]: logging set-up (terminal lines or JSON).
//! - [`metrics`]: the Prometheus metrics, counted where events happen and read from the ledger at scrape.
//! - [`events`]: what the daemon tells about itself (a poll, a failed poll, a portal call that failed or
//!   whose answer did not match), each logged and counted in one place.
//!
//! The daemon and what operators read:
//! - [`config`]: settings from defaults, a TOML file and the environment, checked at start.
//! - [`sync`]: the pipeline: the poller (feed → ledger, with the catalog pre-flight) and the pusher.
//! - [`reconcile`]: source, ledger and portal compared per unit; what is missing fetched and queued.
//! - [`report`]: a period's per-unit lines assembled once for every reader, and rendered (table, CSV,
//!   xlsx, JSON, the correction workbooks).
//! - [`app`]: the daemon built from settings and run: its loops, leadership, schedules and health.
//! - [`status`]: the status server: health checks, `/metrics`, the operators' dashboard and its JSON.
//! - [`commands`]: the subcommands of the binary, wiring the parts above together.
//!
//! Beside the daemon:
//! - [`sim`]: simulators of both systems, faults included, written apart from the daemon's code (they use
//!   none of it), so that the tests compare the daemon with an independent reading of the spec.

pub mod actors;
pub mod app;
pub mod commands;
pub mod config;
pub mod decide;
pub mod events;
pub mod http;
pub mod indicators;
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
