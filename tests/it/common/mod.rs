//! Shared set-up of the tests: simulators on loopback ports, the daemon on a temporary SQLite file, what
//! the ledger says of each dossier, and a schema of its own on the tests' PostgreSQL server.

#![allow(dead_code)]

pub mod leak;
pub mod ledger_fill;
pub mod skip;

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
use sqlx::{AssertSqlSafe, Row};
use tthc_sync::commands::demo::Demo;
use tthc_sync::config::{Settings, masked_url};
use tthc_sync::sim::FaultLevel;
use tthc_sync::sim::portal::{PortalFaults, PortalSimConfig};
use tthc_sync::sim::source::{SourceFaults, SourceSimConfig};
use tthc_sync::store::postgres::PostgresStore;

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

/// The whole ledger, by source id, read through a connection of its own to the SQLite file.
pub async fn ledger(demo: &Demo) -> HashMap<String, LedgerRow> {
    ledger_query(
        demo,
        "SELECT source_id, state, reason_code, findings FROM dossiers JOIN dossier_bodies USING (source_id)",
    )
    .await
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

/// The attempt log of the ledger (one line per portal call that carried dossiers or progress entries), as
/// (service, items, outcome) in the order written.
pub async fn attempt_log(demo: &Demo) -> Vec<(String, i64, String)> {
    ledger_query(
        demo,
        "SELECT service, items, outcome FROM attempts ORDER BY id",
    )
    .await
    .into_iter()
    .map(|row| (row.get(0), row.get(1), row.get(2)))
    .collect()
}

/// The rows of one query on the demo's SQLite ledger, through a read-only connection of its own.
async fn ledger_query(demo: &Demo, query: &'static str) -> Vec<sqlx::sqlite::SqliteRow> {
    let options = SqliteConnectOptions::new()
        .filename(&demo.app.settings.store.path)
        .read_only(true);
    let pool = SqlitePool::connect_with(options)
        .await
        .expect("ledger opens");
    let rows = sqlx::query(query)
        .fetch_all(&pool)
        .await
        .expect("ledger readable");
    pool.close().await;
    rows
}

/// The variable naming the PostgreSQL server of the tests, e.g. `postgres://postgres@127.0.0.1:5432/test`.
pub const POSTGRES_URL_VAR: &str = "TTHC_SYNC_TEST_POSTGRES_URL";

/// A schema of its own for one test on the tests' PostgreSQL server: tests run in parallel on one
/// database without seeing each other's ledgers.
pub struct PgSchema {
    pub name: String,
    url: String,
    admin: PgPool,
}

/// A fresh schema for a PostgreSQL test, or None after saying that the test is skipped when
/// `TTHC_SYNC_TEST_POSTGRES_URL` is not set. Under `CI=true` a missing variable fails the test, and so
/// does a server that cannot be reached whenever the variable is set.
pub async fn postgres_schema() -> Option<PgSchema> {
    static SCHEMAS: AtomicUsize = AtomicUsize::new(0);
    let Ok(url) = std::env::var(POSTGRES_URL_VAR) else {
        skip::skip(&format!("PostgreSQL test: {POSTGRES_URL_VAR} is not set"));
        return None;
    };
    let admin = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect(&url)
        .await
        .unwrap_or_else(|error| {
            panic!(
                "cannot reach PostgreSQL at {} ({POSTGRES_URL_VAR}): {error}",
                masked_url(&url)
            )
        });
    // Unique across parallel tests and across runs (a failed test leaves its schema behind).
    let name = format!(
        "tthc_test_{}_{}_{}",
        std::process::id(),
        SCHEMAS.fetch_add(1, Ordering::Relaxed),
        jiff::Timestamp::now().as_millisecond()
    );
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {name}")))
        .execute(&admin)
        .await
        .expect("the test schema is created");
    Some(PgSchema { name, url, admin })
}

impl PgSchema {
    /// Connection options whose connections work in this schema only.
    pub fn options(&self) -> PgConnectOptions {
        PgConnectOptions::from_str(&self.url)
            .expect("a valid PostgreSQL URL")
            .options([("search_path", &self.name)])
    }

    /// The URL of this schema, as `store.url` takes it.
    pub fn url(&self) -> String {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{separator}options[search_path]={}", self.url, self.name)
    }

    /// A store in this schema (each call is one more instance sharing it).
    pub async fn store(&self) -> PostgresStore {
        PostgresStore::connect(self.options(), 4)
            .await
            .expect("the PostgreSQL ledger opens")
    }

    pub async fn drop(self) {
        sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {} CASCADE", self.name)))
            .execute(&self.admin)
            .await
            .expect("the test schema is dropped");
        self.admin.close().await;
    }
}

/// The daemon binary running `run --config`, its standard error appended to a log file.
pub struct Daemon {
    pub child: std::process::Child,
    pub log: std::path::PathBuf,
}

impl Daemon {
    pub fn spawn(config: &std::path::Path, log: &std::path::Path) -> Daemon {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_tthc-sync"))
            .args(["run", "--config"])
            .arg(config)
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .expect("the daemon starts");
        Daemon {
            child,
            log: log.to_path_buf(),
        }
    }

    /// Sends a signal by name (`HUP`, `TERM`).
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{name} failed");
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .try_wait()
            .expect("the daemon's status")
            .is_none()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        self.child.wait().expect("the daemon exits")
    }
}

/// Runs the binary with arguments to completion; returns (success, stdout, stderr). Asynchronous, so
/// that the simulators served by the test's runtime keep answering the command meanwhile.
pub async fn run_binary(args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tthc-sync"))
        .args(args)
        .output()
        .await
        .expect("the binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Waits until `condition` holds, checking every 200 ms; false when `timeout` passed first.
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let started = std::time::Instant::now();
    loop {
        if condition() {
            return true;
        }
        if started.elapsed() > timeout {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The ledger's (state, reason) per source id, read from the SQLite file of a daemon running elsewhere.
pub async fn ledger_file(path: &std::path::Path) -> HashMap<String, (String, Option<String>)> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true);
    let Ok(pool) = sqlx::SqlitePool::connect_with(options).await else {
        return HashMap::new();
    };
    let rows = sqlx::query("SELECT source_id, state, reason_code FROM dossiers")
        .fetch_all(&pool)
        .await
        .unwrap_or_default();
    pool.close().await;
    rows.into_iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect()
}
