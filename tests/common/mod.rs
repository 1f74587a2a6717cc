//! Shared set-up of the end-to-end tests: simulators on loopback ports, the daemon on a temporary SQLite
//! file, and what the ledger says of each dossier.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use sqlx::Row;
use tthc_sync::commands::demo::Demo;
use tthc_sync::config::Settings;
use tthc_sync::sim::FaultLevel;
use tthc_sync::sim::portal::{PortalFaults, PortalSimConfig};
use tthc_sync::sim::source::{SourceFaults, SourceSimConfig};

pub fn source_config(
    dossiers: usize,
    units: usize,
    seed: u64,
    level: FaultLevel,
) -> SourceSimConfig {
    let mut config = SourceSimConfig::for_level(level);
    config.generator.seed = seed;
    config.generator.dossiers = dossiers;
    config.generator.units = units;
    config.faults = SourceFaults::for_level(level);
    config
}

pub fn portal_config(seed: u64, level: FaultLevel) -> PortalSimConfig {
    PortalSimConfig {
        seed,
        faults: PortalFaults::for_level(level),
        ..PortalSimConfig::default()
    }
}

/// Starts simulators and daemon in a fresh temporary directory.
pub async fn start(
    source: SourceSimConfig,
    portal: PortalSimConfig,
    adjust: impl FnOnce(&mut Settings),
) -> (tempfile::TempDir, Demo) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let demo = Demo::start_with(source, portal, &dir.path().join("tthc-sync.db"), adjust)
        .await
        .expect("simulators and daemon start");
    (dir, demo)
}

/// Waits for the backlog to drain (the source stops changing first), failing the test after `timeout`.
pub async fn synced(demo: &Demo, timeout: Duration) {
    demo.wait_until_synced(timeout, |_| {})
        .await
        .expect("the backlog drains");
}

/// One ledger row, as the tests look at it.
#[derive(Debug, Clone)]
pub struct LedgerRow {
    pub state: String,
    pub reason_code: Option<String>,
    pub findings: String,
}

/// The whole ledger, by source id.
pub async fn ledger(demo: &Demo) -> HashMap<String, LedgerRow> {
    sqlx::query(
        "SELECT source_id, state, reason_code, findings FROM dossiers JOIN dossier_bodies USING (source_id)",
    )
        .fetch_all(demo.app.sqlite.pool())
        .await
        .expect("ledger readable")
        .into_iter()
        .map(|row| {
            (
                row.get::<String, _>(0),
                LedgerRow {
                    state: row.get(1),
                    reason_code: row.get(2),
                    findings: row.get::<Option<String>, _>(3).unwrap_or_default(),
                },
            )
        })
        .collect()
}
