//! Delivery truth (issue 9): what the ledger calls accepted is what the portal holds, through races,
//! late answers and answers that lie. Each scenario runs the real binary (`tthc-sync run`, and `resync`)
//! against both simulators on loopback, once on SQLite and once on PostgreSQL, and ends with the same
//! verdict ([`Scenario::settle`]):
//!
//! - the portal holds the latest normalized version of every valid dossier (`check_portal`, the demo's
//!   own check), with its progress entries;
//! - every dossier the ledger calls accepted is held by the portal exactly as the ledger's payload, and
//!   every dossier it calls refused is not held in its current version;
//! - nothing is left waiting or in flight.
//!
//! The scenarios:
//! - `race`: the demo's race. A batch hangs past the client's timeout and is retried inside the call
//!   while its dossiers change again; the newer version is sent and stored; the old retry lands last.
//! - `lying_answers`: `result` entries shuffled, invented for a `MaHoSo` not sent, dropped and repeated,
//!   beside real refusals (a unit the portal does not know, with the pre-flight off).
//! - `late_answer_after_handover`: a batch is held by the portal past the claim's lease; the claim is taken
//!   over (on PostgreSQL by a second instance), the dossiers change, and the first owner's answer arrives
//!   last, as the old batch lands.
//! - `resync_racing_live_changes`: `resync` reads a period again while the source keeps changing the same
//!   dossiers and the daemon polls without a lookback; a control runs the same changes without `resync`.
//!
//! PostgreSQL runs when `TTHC_SYNC_TEST_POSTGRES_URL` is set (skipped otherwise, failing under CI=true).

use crate::common;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use tthc_sync::commands::demo::{Demo, check_portal, demo_settings};
use tthc_sync::normalize::MappingTables;
use tthc_sync::sim::FaultLevel;
use tthc_sync::sim::portal::{InjectedFault, PortalFaults, PortalSim, PortalSimConfig};
use tthc_sync::sim::source::{SourceSim, SourceSimConfig};

use common::{Daemon, PgSchema, eventually};

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// One dossier as the ledger holds it.
#[derive(Debug)]
struct LedgerRow {
    source_id: String,
    code: Option<String>,
    state: String,
    payload: Option<String>,
}

/// Both simulators in the test's runtime, daemons of the real binary against them, and their ledger.
struct Scenario {
    dir: tempfile::TempDir,
    source: SourceSim,
    portal: PortalSim,
    shutdown: CancellationToken,
    config: PathBuf,
    database: PathBuf,
    schema: Option<PgSchema>,
    /// `TTHC_SYNC__*` settings given to every daemon and command, beyond `config/demo.toml`.
    settings: Vec<(String, String)>,
    daemons: Vec<Daemon>,
    tables: MappingTables,
}

impl Scenario {
    /// Starts the simulators; None when the PostgreSQL run is skipped.
    async fn start(
        backend: Backend,
        source: SourceSimConfig,
        portal: PortalSimConfig,
        settings: &[(&str, &str)],
    ) -> Option<Scenario> {
        let schema = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(common::postgres_schema().await?),
        };
        let shutdown = CancellationToken::new();
        let (source, source_address) = Demo::serve_source(source, &shutdown).await.unwrap();
        let (portal, portal_address) = Demo::serve_portal(portal, &shutdown).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let database = dir.path().join("tthc-sync.db");
        let config = dir.path().join("tthc-sync.toml");
        std::fs::write(
            &config,
            demo_settings(
                &format!("http://{source_address}"),
                &format!("http://{portal_address}"),
                &database,
            ),
        )
        .unwrap();
        let mut settings: Vec<(String, String)> = settings
            .iter()
            .map(|(key, value)| (format!("TTHC_SYNC__{key}"), (*value).to_owned()))
            .collect();
        if let Some(schema) = &schema {
            settings.push(("TTHC_SYNC__STORE__URL".into(), schema.url()));
        }
        Some(Scenario {
            dir,
            source,
            portal,
            shutdown,
            config,
            database,
            schema,
            settings,
            daemons: Vec::new(),
            tables: MappingTables::default(),
        })
    }

    /// Starts `tthc-sync run` as instance `instance`, with these settings on top of the scenario's.
    fn spawn(&mut self, instance: &str, extra: &[(&str, &str)]) {
        let log = self.dir.path().join(format!("daemon-{instance}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_tthc-sync"))
            .args(["run", "--config"])
            .arg(&self.config)
            .envs(self.settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("TTHC_SYNC__STORE__INSTANCE", instance)
            .envs(
                extra
                    .iter()
                    .map(|(key, value)| (format!("TTHC_SYNC__{key}"), *value)),
            )
            .stdout(std::process::Stdio::null())
            .stderr(file)
            .spawn()
            .expect("the daemon starts");
        self.daemons.push(Daemon { child, log });
    }

    /// Runs a command of the binary on the scenario's configuration to completion.
    async fn command(&self, args: &[&str]) -> (bool, String, String) {
        let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_tthc-sync"))
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .envs(self.settings.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .await
            .expect("the binary runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    async fn ledger(&self) -> Vec<LedgerRow> {
        const QUERY: &str = "SELECT d.source_id, d.dossier_code, d.state, b.payload \
                             FROM dossiers d JOIN dossier_bodies b ON b.source_id = d.source_id";
        match &self.schema {
            Some(schema) => {
                let Ok(pool) = sqlx::PgPool::connect_with(schema.options()).await else {
                    return Vec::new();
                };
                let rows = sqlx::query(QUERY)
                    .fetch_all(&pool)
                    .await
                    .unwrap_or_default();
                pool.close().await;
                rows.into_iter()
                    .map(|row| LedgerRow {
                        source_id: row.get(0),
                        code: row.get(1),
                        state: row.get(2),
                        payload: row.get(3),
                    })
                    .collect()
            }
            None => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&self.database)
                    .read_only(true);
                let Ok(pool) = sqlx::SqlitePool::connect_with(options).await else {
                    return Vec::new();
                };
                let rows = sqlx::query(QUERY)
                    .fetch_all(&pool)
                    .await
                    .unwrap_or_default();
                pool.close().await;
                rows.into_iter()
                    .map(|row| LedgerRow {
                        source_id: row.get(0),
                        code: row.get(1),
                        state: row.get(2),
                        payload: row.get(3),
                    })
                    .collect()
            }
        }
    }

    /// The ledger's progress entries by state (`waiting`, `pending`, `in_flight`, `sent`, `refused`).
    async fn progress_states(&self) -> Vec<(String, i64)> {
        const QUERY: &str = "SELECT state, COUNT(*) FROM progress GROUP BY state ORDER BY state";
        match &self.schema {
            Some(schema) => match sqlx::PgPool::connect_with(schema.options()).await {
                Ok(pool) => {
                    let rows = sqlx::query(QUERY)
                        .fetch_all(&pool)
                        .await
                        .unwrap_or_default();
                    pool.close().await;
                    rows.iter().map(|row| (row.get(0), row.get(1))).collect()
                }
                Err(_) => Vec::new(),
            },
            None => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(&self.database)
                    .read_only(true);
                match sqlx::SqlitePool::connect_with(options).await {
                    Ok(pool) => {
                        let rows = sqlx::query(QUERY)
                            .fetch_all(&pool)
                            .await
                            .unwrap_or_default();
                        pool.close().await;
                        rows.iter().map(|row| (row.get(0), row.get(1))).collect()
                    }
                    Err(_) => Vec::new(),
                }
            }
        }
    }

    /// Where the ledger and the portal disagree, and what is left undone: an accepted dossier the portal
    /// does not hold as the ledger's payload, a refused one it holds in its current version, a dossier
    /// still waiting or in flight.
    async fn disagreements(&self) -> Vec<String> {
        let rows = self.ledger().await;
        if rows.is_empty() {
            return vec!["the ledger is empty or cannot be read".into()];
        }
        let held = self.portal.stored();
        let mut problems = Vec::new();
        for row in &rows {
            let code = row.code.as_deref().unwrap_or("?");
            let payload: Option<Value> = row
                .payload
                .as_deref()
                .and_then(|text| serde_json::from_str(text).ok());
            let on_portal = held.get(code).map(|stored| &stored.dossier);
            match row.state.as_str() {
                "accepted" => match (on_portal, &payload) {
                    (None, _) => problems.push(format!(
                        "accepted in the ledger, not on the portal: {code}"
                    )),
                    (Some(found), Some(payload)) if found != payload => problems.push(format!(
                        "accepted in the ledger, the portal holds another version: {code} (portal {}, ledger {})",
                        content_hash(found),
                        content_hash(payload)
                    )),
                    (Some(_), None) => {
                        problems.push(format!("accepted without a payload: {code}"))
                    }
                    _ => {}
                },
                "refused" if on_portal.is_some() && on_portal == payload.as_ref() => {
                    problems.push(format!("refused in the ledger, held by the portal: {code}"));
                }
                "pending" | "in_flight" => problems.push(format!(
                    "{} in the ledger: {code} ({})",
                    row.state, row.source_id
                )),
                _ => {}
            }
        }
        problems.sort();
        problems
    }

    /// The verdict: the portal holds the latest version of every valid dossier (less `excused`, the
    /// "missing" lines of dossiers the portal may refuse) and the ledger agrees with it. Waits up to
    /// `timeout` for it; returns the problems still standing then.
    async fn settle(&self, timeout: Duration, excused: &dyn Fn(&str) -> bool) -> Vec<String> {
        let started = std::time::Instant::now();
        loop {
            let mut problems: Vec<String> = check_portal(&self.source, &self.portal, &self.tables)
                .into_iter()
                .filter(|problem| {
                    !(problem.starts_with("missing on the portal: ")
                        && excused(problem.rsplit(": ").next().unwrap_or_default()))
                })
                .collect();
            problems.extend(self.disagreements().await);
            if problems.is_empty() {
                return problems;
            }
            if started.elapsed() > timeout {
                return problems;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Ids and codes of `n` valid dossiers the ledger calls accepted.
    async fn accepted(&self, n: usize) -> Vec<(String, String)> {
        let mut rows: Vec<(String, String)> = self
            .ledger()
            .await
            .into_iter()
            .filter(|row| row.state == "accepted")
            .filter_map(|row| Some((row.source_id, row.code?)))
            .collect();
        rows.sort();
        rows.truncate(n);
        rows
    }

    fn logs(&self) -> String {
        self.daemons
            .iter()
            .map(|daemon| {
                let text = daemon.log_text();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- {}:\n{}",
                    daemon.log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Fails with the problems found, the daemons' last log lines and the portal's faults.
    async fn verdict(&self, what: &str, problems: &[String]) {
        let progress = if problems.is_empty() {
            Vec::new()
        } else {
            self.progress_states().await
        };
        let mut kinds: std::collections::BTreeMap<&str, usize> = Default::default();
        for problem in problems {
            *kinds
                .entry(problem.split(": ").next().unwrap_or_default())
                .or_default() += 1;
        }
        assert!(
            problems.is_empty(),
            "{what}: {} problems {kinds:#?}, first: {:#?}\nledger's progress entries: {progress:?}\nportal: {}\n{}",
            problems.len(),
            &problems[..problems.len().min(12)],
            self.portal.stats(),
            self.logs()
        );
    }

    async fn finish(mut self) {
        for daemon in self.daemons.drain(..) {
            let _ = daemon.stop();
        }
        self.shutdown.cancel();
        if let Some(schema) = self.schema.take() {
            schema.drop().await;
        }
    }
}

/// A failed verdict panics before `finish`: the daemons are killed all the same, so that none outlives its
/// test (holding PostgreSQL connections, polling a simulator that is gone).
impl Drop for Scenario {
    fn drop(&mut self) {
        for daemon in &mut self.daemons {
            let _ = daemon.child.kill();
            let _ = daemon.child.wait();
        }
    }
}

fn content_hash(value: &Value) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    blake3::hash(&bytes).to_hex()[..12].to_owned()
}

/// A quiet source: no transport faults, every row visible, no tie block; changes only when the test
/// makes them.
fn quiet_source(dossiers: usize, units: usize, seed: u64) -> SourceSimConfig {
    let mut config = common::source_config(dossiers, units, seed, FaultLevel::None);
    config.live_mutation = false;
    config
}

/// Waits for the first full sync, failing with the problems if it does not come.
async fn first_sync(scenario: &Scenario) {
    let problems = scenario
        .settle(Duration::from_secs(40), &|_: &str| false)
        .await;
    scenario
        .verdict("the first sync did not complete", &problems)
        .await;
}

/// Waits until a `DongBoHoSoMC` call got `fault`; returns it.
async fn wait_for_fault(
    portal: &PortalSim,
    fault: InjectedFault,
    timeout: Duration,
) -> Option<tthc_sync::sim::portal::CallRecord> {
    let started = std::time::Instant::now();
    loop {
        if let Some(call) = portal
            .calls()
            .into_iter()
            .find(|call| call.service == "DongBoHoSoMC" && call.fault == Some(fault))
        {
            return Some(call);
        }
        if started.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------------
// The demo's race

async fn race(backend: Backend) {
    let Some(mut scenario) = Scenario::start(
        backend,
        quiet_source(300, 6, 41),
        common::portal_config(41, FaultLevel::None),
        // No catalog look-ups: the hang is for the delivery calls alone.
        &[("PORTAL__PREFLIGHT", "false")],
    )
    .await
    else {
        return;
    };
    scenario.spawn("race", &[]);
    first_sync(&scenario).await;
    let chosen = scenario.accepted(12).await;
    let ids: Vec<String> = chosen.iter().map(|(id, _)| id.clone()).collect();
    let codes: HashSet<String> = chosen.into_iter().map(|(_, code)| code).collect();

    // Their next version's batch hangs at the portal, unprocessed, past the client's 5 s timeout...
    scenario.portal.set_faults(PortalFaults {
        timeout_before_processing_rate: 1.0,
        timeout_delay: Duration::from_secs(30),
        ..PortalFaults::none()
    });
    scenario.source.mutate_ids(&ids);
    let first_change = tokio::time::Instant::now();
    let hung = wait_for_fault(
        &scenario.portal,
        InjectedFault::TimeoutBeforeProcessing,
        Duration::from_secs(15),
    )
    .await
    .expect("the changed dossiers were sent");
    assert!(hung.ma_ho_so.iter().any(|code| codes.contains(code)));
    // ...while they change again; the portal answers every call from now on. (A second apart at least:
    // progress steps of two versions stamped the same second would be one step to the portal.)
    scenario.portal.set_faults(PortalFaults::none());
    tokio::time::sleep_until(first_change + Duration::from_millis(1100)).await;
    scenario.source.mutate_ids(&ids);

    // The hung batch's retry inside the call is processed (the old version lands); then the verdict.
    let retried =
        eventually(Duration::from_secs(20), || {
            scenario.portal.calls().iter().any(|call| {
                call.fault.is_none() && call.at > hung.at && call.ma_ho_so == hung.ma_ho_so
            })
        })
        .await;
    let problems = scenario
        .settle(Duration::from_secs(25), &|_: &str| false)
        .await;
    scenario
        .verdict(
            &format!("after the race (the old batch retried: {retried})"),
            &problems,
        )
        .await;
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_race_ends_with_the_latest_version_on_the_portal_sqlite() {
    race(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_demo_race_ends_with_the_latest_version_on_the_portal_postgres() {
    race(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------------
// Answers that lie

async fn lying_answers(backend: Backend) {
    let source = quiet_source(600, 8, 43);
    // One unit the portal does not know: its dossiers are sent (the pre-flight is off) and refused
    // with code 5, so that a mismatched entry has a refusal to move onto a stored dossier.
    let probe = SourceSim::new(source.clone());
    let refused_unit = probe
        .agencies()
        .into_iter()
        .filter_map(|agency| agency.code)
        .find(|code| code.ends_with(".H60"))
        .expect("a unit code");
    let known: HashSet<String> = probe
        .agencies()
        .into_iter()
        .filter_map(|agency| agency.code)
        .filter(|code| *code != refused_unit)
        .collect();
    drop(probe);
    let portal = PortalSimConfig {
        known_units: Some(known),
        faults: PortalFaults {
            shuffled_rate: 0.5,
            unknown_entry_rate: 0.3,
            dropped_entry_rate: 0.2,
            duplicated_entry_rate: 0.2,
            ..PortalFaults::none()
        },
        ..common::portal_config(43, FaultLevel::None)
    };
    let Some(mut scenario) = Scenario::start(
        backend,
        source,
        portal,
        &[("PORTAL__PREFLIGHT", "false"), ("PORTAL__BATCH_SIZE", "25")],
    )
    .await
    else {
        return;
    };
    scenario.spawn("lies", &[]);
    let prefix = format!("{refused_unit}-");
    // A one-item call near the end is answered wrongly about one time in three, and each miss waits out
    // a back-off; the last dossier and its entries in turn can take a while on a loaded machine. The
    // promise here is that nothing is lost or invented, not how fast: `settle` returns as soon as it holds.
    let problems = scenario
        .settle(Duration::from_secs(120), &|code: &str| {
            code.starts_with(&prefix)
        })
        .await;
    let stats = scenario.portal.stats();
    for fault in [
        "answer_shuffled",
        "answer_unknown_entry",
        "answer_dropped_entry",
        "answer_duplicated_entry",
    ] {
        assert!(
            stats["faults_injected"][fault].as_u64().unwrap_or(0) > 0,
            "the portal should have injected {fault}: {stats}"
        );
    }
    scenario.verdict("after answers that lie", &problems).await;
    // The refused unit's dossiers are refused in the ledger, none accepted.
    let ledger = scenario.ledger().await;
    let of_unit: Vec<&LedgerRow> = ledger
        .iter()
        .filter(|row| row.code.as_deref().is_some_and(|c| c.starts_with(&prefix)))
        .collect();
    assert!(
        of_unit.iter().any(|row| row.state == "refused"),
        "no dossier of {refused_unit} was refused"
    );
    assert!(
        of_unit.iter().all(|row| row.state != "accepted"),
        "a dossier of {refused_unit}, which the portal never stored, is accepted in the ledger"
    );
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shuffled_invented_dropped_and_repeated_entries_lose_and_invent_nothing_sqlite() {
    lying_answers(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shuffled_invented_dropped_and_repeated_entries_lose_and_invent_nothing_postgres() {
    lying_answers(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------------
// A late answer after a lease handover

async fn late_answer_after_handover(backend: Backend) {
    // The lease is the shortest allowed (10 s); the client waits 20 s for an answer; the portal holds
    // the batch 13 s and processes it only then. On PostgreSQL the first instance has one pusher, busy
    // with that call, so the claim passes to the second instance when the lease runs out.
    let settings = [
        ("STORE__LEASE_SECONDS", "10"),
        ("PORTAL__HTTP__REQUEST_TIMEOUT_SECONDS", "20"),
    ];
    let Some(mut scenario) = Scenario::start(
        backend,
        quiet_source(300, 6, 47),
        common::portal_config(47, FaultLevel::None),
        &settings,
    )
    .await
    else {
        return;
    };
    match backend {
        Backend::Sqlite => scenario.spawn("first", &[]),
        Backend::Postgres => scenario.spawn("first", &[("PORTAL__CONCURRENCY", "1")]),
    }
    first_sync(&scenario).await;
    if matches!(backend, Backend::Postgres) {
        scenario.spawn("second", &[]);
    }
    let chosen = scenario.accepted(8).await;
    let ids: Vec<String> = chosen.iter().map(|(id, _)| id.clone()).collect();
    let codes: HashSet<String> = chosen.into_iter().map(|(_, code)| code).collect();

    scenario.portal.set_faults(PortalFaults {
        late_store_rate: 1.0,
        late_delay: Duration::from_secs(13),
        ..PortalFaults::none()
    });
    let calls_before = scenario.portal.calls().len();
    scenario.source.mutate_ids(&ids);
    let held = eventually(Duration::from_secs(15), || {
        scenario.portal.late_calls_waiting() > 0
    })
    .await;
    assert!(held, "the changed dossiers were not sent");
    let held_at = std::time::Instant::now();
    scenario.portal.set_faults(PortalFaults::none());

    // The claim is taken over once its lease runs out and the dossiers go again; then they change
    // again, before the held batch lands.
    let taken_over = eventually(Duration::from_secs(14), || {
        scenario.portal.calls()[calls_before..].iter().any(|call| {
            call.service == "DongBoHoSoMC"
                && call.fault.is_none()
                && call.ma_ho_so.iter().any(|code| codes.contains(code))
        })
    })
    .await;
    scenario.source.mutate_ids(&ids);
    let landed = eventually(Duration::from_secs(20), || {
        scenario.portal.late_calls_waiting() == 0
    })
    .await;
    assert!(landed, "the held batch never landed");
    let problems = scenario
        .settle(Duration::from_secs(25), &|_: &str| false)
        .await;
    scenario.verdict(
        &format!(
            "after a late answer (claim taken over: {taken_over}, held batch landed after {} s)",
            held_at.elapsed().as_secs()
        ),
        &problems,
    )
    .await;
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_answer_after_a_lease_handover_changes_nothing_it_should_not_sqlite() {
    late_answer_after_handover(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_late_answer_after_a_lease_handover_changes_nothing_it_should_not_postgres() {
    late_answer_after_handover(Backend::Postgres).await;
}

// ---------------------------------------------------------------------------------------------------
// resync racing live changes

/// No lookback: the source here makes every change visible at once (no late rows), so the poller reads
/// each version once, and once `resync` has written an older version over a newer one, only the ledger's
/// rule that versions never go backwards keeps the portal right.
const LOOKBACK: &str = "0";

async fn resync_racing_live_changes(backend: Backend, resync: bool) {
    let source = quiet_source(1500, 10, 53);
    let Some(mut scenario) = Scenario::start(
        backend,
        source,
        common::portal_config(53, FaultLevel::None),
        &[("SOURCE__LOOKBACK_SECONDS", LOOKBACK)],
    )
    .await
    else {
        return;
    };
    scenario.spawn("resync", &[]);
    first_sync(&scenario).await;
    let days: Vec<jiff::civil::Date> = scenario
        .source
        .snapshot()
        .iter()
        .map(|row| row.reception_day)
        .collect();
    let (from, to) = (
        days.iter().min().unwrap().to_string(),
        days.iter().max().unwrap().to_string(),
    );

    // The changes: twenty dossiers every 100 ms, each a new payload, in turn, so that no dossier changes
    // twice within a second (two versions' progress steps stamped the same second would be one step to
    // the portal, which keeps one entry per MaHoSo, ThoiDiemXuLy and NoiDungXuLy). With `resync` they
    // start with its first dossier read, and reads are slowed to 20 ms each (eight at a time), so that
    // the changes trail its reads by seconds.
    let mutations_before = scenario.source.stats().mutations;
    let reads_before = scenario.source.stats().dossier_requests;
    if resync {
        scenario
            .source
            .set_dossier_read_delay(Duration::from_millis(20));
    }
    let stop_changes = CancellationToken::new();
    let changer = {
        let (source, stop) = (scenario.source.clone(), stop_changes.clone());
        // In the order `resync` reads them (by agency, then reception day), so that the changes trail
        // its reads: each changes a dossier `resync` has just read, and will write later.
        let mut rows: Vec<(String, jiff::civil::Date, String)> = source
            .snapshot()
            .into_iter()
            .map(|row| {
                let agency = row.record["agency"]["id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                (agency, row.reception_day, row.id)
            })
            .collect();
        rows.sort();
        let ids: Vec<String> = rows.into_iter().map(|(_, _, id)| id).collect();
        tokio::spawn(async move {
            while resync && source.stats().dossier_requests == reads_before && !stop.is_cancelled()
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let mut turn = 0;
            while !stop.is_cancelled() {
                let chunk: Vec<String> = (0..20)
                    .map(|i| ids[(turn * 20 + i) % ids.len()].clone())
                    .collect();
                source.mutate_ids(&chunk);
                turn += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let (ok, stdout, stderr) = if resync {
        scenario
            .command(&["resync", "--from", &from, "--to", &to])
            .await
    } else {
        // The control: the same changes for as long, without resync.
        tokio::time::sleep(Duration::from_secs(3)).await;
        (true, "no resync".to_owned(), String::new())
    };
    stop_changes.cancel();
    changer.await.unwrap();
    scenario.source.set_dossier_read_delay(Duration::ZERO);
    assert!(ok, "resync failed: {stdout}\n{stderr}");
    let changed = scenario.source.stats().mutations - mutations_before;
    assert!(changed > 50, "only {changed} changes while resync ran");

    let problems = scenario
        .settle(Duration::from_secs(30), &|_: &str| false)
        .await;
    scenario
        .verdict(
            &format!("after resync raced {changed} changes ({})", stdout.trim()),
            &problems,
        )
        .await;
    scenario.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resync_racing_live_changes_never_sends_an_older_version_last_sqlite() {
    resync_racing_live_changes(Backend::Sqlite, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resync_racing_live_changes_never_sends_an_older_version_last_postgres() {
    resync_racing_live_changes(Backend::Postgres, true).await;
}

/// The control of the two above: the same live changes without `resync` end exact, so what they find is
/// `resync`'s doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_changes_without_resync_end_exact() {
    resync_racing_live_changes(Backend::Sqlite, false).await;
}

/// The verdict can fail: a portal that lost one accepted dossier's version is found out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_verdict_sees_a_portal_holding_another_version() {
    let Some(mut scenario) = Scenario::start(
        Backend::Sqlite,
        quiet_source(120, 3, 59),
        common::portal_config(59, FaultLevel::None),
        &[],
    )
    .await
    else {
        return;
    };
    scenario.spawn("verdict", &[]);
    first_sync(&scenario).await;
    let (_, code) = scenario.accepted(1).await.remove(0);
    // The portal forgets it: the ledger still calls it accepted.
    assert_eq!(scenario.portal.forget(std::slice::from_ref(&code)), 1);
    let problems: HashMap<bool, usize> = scenario
        .disagreements()
        .await
        .iter()
        .map(|problem| problem.ends_with(&code))
        .fold(HashMap::new(), |mut counts, mine| {
            *counts.entry(mine).or_default() += 1;
            counts
        });
    assert_eq!(problems.get(&true), Some(&1), "{problems:?}");
    scenario.finish().await;
}
