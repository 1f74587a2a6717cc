//! A model-based test of the ledger's delivery rules (portal-api.md 2.1), on both stores: generated
//! interleavings of new source versions (newer, older, the same content again, held), claims by two
//! owners, calls landing on the portal, answers in any order (accepted, refused, retry, no entry of its
//! own), lease expiries and renewals, late answers from owners whose lease lapsed, and restarts. A small
//! reference model keeps what the portal last received and which calls are out; after every step the
//! ledger is checked against it:
//! - an `accepted` row's payload is the portal's last received version, and nothing is in flight for it;
//! - every unfinished row is claimable within a lease (no row stuck in flight without a lease);
//! - no older source version replaced a newer one;
//! - no dossier has two claims whose leases both run.
//!
//! Calls may land on the portal at any time, also after their lease lapsed and the dossier was claimed
//! again (a portal that stores late); their answers may come at any time after. Until such a late call's
//! answer arrives the ledger cannot know what the portal holds, so the first invariant allows it only
//! for dossiers with a late-landed call still unanswered; the answer must then set the ledger right. A
//! request that lands late and whose answer never comes back (its sender died) cannot be seen by the
//! ledger at all: reconciliation's content check is there for it.
//!
//! At the end of each case every call is settled and the store is drained by a healthy pusher: the portal
//! must then hold the latest version of every sendable dossier, and the ledger must call it accepted.
//!
//! Cases: `TTHC_SYNC_MODEL_CASES` (default 2,000 per store; e.g. 100000 for a long run). A failing case
//! prints its seed and its steps; `TTHC_SYNC_MODEL_SEED` replays one case.

use crate::common;

use std::collections::HashMap;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::SqlitePool;
use tthc_sync::store::prelude::*;
use tthc_sync::store::sqlite::SqliteStore;
use tthc_sync::store::{DeliveryOutcome, DeliveryResult, IngestRow, Store, VersionKind};

const LEASE: i64 = 10_000;
const RETRY_DELAY: i64 = 1_000;
const DOSSIERS: usize = 2;
const STEPS: usize = 40;

fn cases() -> u64 {
    std::env::var("TTHC_SYNC_MODEL_CASES")
        .ok()
        .and_then(|cases| cases.parse().ok())
        .unwrap_or(2_000)
}

/// Reads the ledger's rows as the invariants need them, on either backend.
enum Inspector {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

#[derive(Debug, Clone)]
struct LedgerRow {
    id: String,
    state: String,
    raw_hash: String,
    payload_hash: Option<String>,
    flight_claim: Option<String>,
    lease_expires_at: Option<i64>,
    next_attempt_at: Option<i64>,
}

const ROWS: &str = "SELECT source_id, state, raw_hash, payload_hash, flight_claim, lease_expires_at, \
     next_attempt_at FROM dossiers ORDER BY source_id";

impl Inspector {
    async fn rows(&self) -> Vec<LedgerRow> {
        macro_rules! read {
            ($rows:expr) => {
                $rows
                    .into_iter()
                    .map(|row| LedgerRow {
                        id: row.get(0),
                        state: row.get(1),
                        raw_hash: row.get(2),
                        payload_hash: row.get(3),
                        flight_claim: row.get(4),
                        lease_expires_at: row.get(5),
                        next_attempt_at: row.get(6),
                    })
                    .collect()
            };
        }
        match self {
            Inspector::Sqlite(pool) => read!(sqlx::query(ROWS).fetch_all(pool).await.unwrap()),
            Inspector::Postgres(pool) => read!(sqlx::query(ROWS).fetch_all(pool).await.unwrap()),
        }
    }

    async fn clear(&self) {
        for table in ["progress", "dossier_bodies", "dossiers"] {
            let statement = sqlx::AssertSqlSafe(format!("DELETE FROM {table}"));
            match self {
                Inspector::Sqlite(pool) => {
                    sqlx::query(statement).execute(pool).await.unwrap();
                }
                Inspector::Postgres(pool) => {
                    sqlx::query(statement).execute(pool).await.unwrap();
                }
            }
        }
    }
}

/// One version of a dossier as the source serves it.
#[derive(Debug, Clone)]
struct Version {
    raw_hash: String,
    updated_at: i64,
    /// `None`: the version is held back (not sendable).
    payload: Option<u8>,
}

/// A call the pushers made and whose answer has not been recorded yet.
#[derive(Debug, Clone)]
struct Call {
    claim: String,
    owner: &'static str,
    id: String,
    hash: String,
    lease_until: i64,
    landed: bool,
    /// Landed after its lease lapsed: until its answer arrives, the ledger cannot know.
    landed_late: bool,
}

#[derive(Default)]
struct Model {
    /// Every version each dossier was given, in order.
    versions: HashMap<String, Vec<Version>>,
    /// The version the ledger must hold: the newest `updatedDate`, the first to arrive on a tie.
    winner: HashMap<String, Version>,
    /// What the portal last received, per dossier.
    portal: HashMap<String, String>,
    /// Payloads the portal refuses (code 2): its validation is the same every time it sees them, so
    /// they never land.
    refused: std::collections::HashSet<(String, String)>,
    /// Payloads the portal has stored once: it does not refuse them later.
    stored: std::collections::HashSet<(String, String)>,
    calls: Vec<Call>,
    now: i64,
    log: Vec<String>,
}

fn payload_hash(content: u8) -> String {
    format!("payload-{content}")
}

fn ingest_row(id: &str, version: &Version) -> IngestRow {
    IngestRow {
        source_id: id.into(),
        dossier_code: Some(format!("000.00.31.H60-240115-{id}")),
        raw: format!("{{\"id\":\"{id}\",\"v\":\"{}\"}}", version.raw_hash),
        raw_hash: version.raw_hash.clone(),
        source_updated_at: Some(version.updated_at),
        source_agency_id: Some("ag-1".into()),
        unit: Some("000.00.31.H60".into()),
        procedure_code: Some("1.004227".into()),
        reception_day: Some("2024-01-15".into()),
        payload: version
            .payload
            .map(|content| format!("{{\"MaHoSo\":\"{id}\",\"c\":{content}}}")),
        payload_hash: version.payload.map(payload_hash),
        reason_code: version.payload.is_none().then(|| "missing_field".into()),
        reason_detail: None,
        findings: "[]".into(),
        kind: if version.payload.is_some() {
            VersionKind::Sendable
        } else {
            VersionKind::Held
        },
        renormalized: false,
        stamped_ahead: false,
        progress: Vec::new(),
    }
}

impl Model {
    fn note(&mut self, step: String) {
        self.log.push(format!("t={} {step}", self.now));
    }

    /// Checks the ledger against the model; a failure message names the broken invariant.
    fn check(&self, rows: &[LedgerRow]) -> Result<(), String> {
        for row in rows {
            // A call that landed after its lease lapsed and is not answered yet may hold the portal on
            // another version: the ledger learns of it from that call's (late) answer.
            let in_doubt = self
                .calls
                .iter()
                .any(|call| call.id == row.id && call.landed_late);
            if row.state == "accepted" && !in_doubt {
                let portal = self.portal.get(&row.id);
                if portal != row.payload_hash.as_ref() {
                    return Err(format!(
                        "{} is accepted with payload {:?} but the portal last received {:?}",
                        row.id, row.payload_hash, portal
                    ));
                }
                if row.flight_claim.is_some() {
                    return Err(format!("{} is accepted with a call in flight", row.id));
                }
            }
            if row.state == "in_flight"
                && (row.flight_claim.is_none() || row.lease_expires_at.is_none())
            {
                return Err(format!("{} is in flight without a lease: stuck", row.id));
            }
            if matches!(row.state.as_str(), "pending" | "in_flight") {
                if let Some(lease) = row.lease_expires_at.filter(|_| row.flight_claim.is_some())
                    && lease > self.now + LEASE
                {
                    return Err(format!("{} has a lease beyond one lease from now", row.id));
                }
                if row.state == "pending"
                    && row
                        .next_attempt_at
                        .is_none_or(|due| due > self.now + RETRY_DELAY)
                {
                    return Err(format!("{} is pending but not due soon", row.id));
                }
            }
            let winner = &self.winner[&row.id];
            if row.raw_hash != winner.raw_hash {
                return Err(format!(
                    "{} holds version {} but the newest is {}: an older version replaced a newer one",
                    row.id, row.raw_hash, winner.raw_hash
                ));
            }
        }
        for id in self.winner.keys() {
            let running = self
                .calls
                .iter()
                .filter(|call| &call.id == id && call.lease_until >= self.now)
                .count();
            if running > 1 {
                return Err(format!("{id} has {running} claims whose leases run"));
            }
        }
        Ok(())
    }
}

/// Runs one generated case against `store`; `Err` carries the failure and the steps that led to it.
async fn run_case(store: &dyn Store, inspector: &Inspector, seed: u64) -> Result<(), String> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut model = Model {
        now: 1_000_000,
        ..Model::default()
    };
    // One dossier in half the cases, so that its calls, versions and answers meet more often.
    let dossiers = 1 + (seed as usize % DOSSIERS);
    let ids: Vec<String> = (0..dossiers).map(|index| format!("d{index}")).collect();
    let owners = ["pusher-a", "pusher-b"];
    for _ in 0..STEPS {
        let step = rng.random_range(0..100);
        match step {
            // A source version: newer, an older one again, or a new record with a known content.
            0..=19 => {
                let id = ids[rng.random_range(0..ids.len())].clone();
                let known = model.versions.entry(id.clone()).or_default();
                let version = if !known.is_empty() && rng.random_bool(0.3) {
                    known[rng.random_range(0..known.len())].clone()
                } else {
                    let newest = known.iter().map(|v| v.updated_at).max().unwrap_or(0);
                    let updated_at = if rng.random_bool(0.2) {
                        newest - rng.random_range(1..5_000)
                    } else {
                        newest + rng.random_range(1..5_000)
                    };
                    Version {
                        raw_hash: format!("raw-{}", rng.random::<u32>()),
                        updated_at,
                        payload: (!rng.random_bool(0.1)).then(|| rng.random_range(0..3u8)),
                    }
                };
                known.push(version.clone());
                let winner = model.winner.entry(id.clone()).or_insert(version.clone());
                if version.updated_at > winner.updated_at {
                    *winner = version.clone();
                }
                model.note(format!("ingest {id} {version:?}"));
                store
                    .ingest(&[ingest_row(&id, &version)], None, model.now)
                    .await
                    .map_err(|error| error.to_string())?;
            }
            // A claim by one of the two owners.
            20..=37 => {
                let owner = owners[rng.random_range(0..owners.len())];
                let until = model.now + LEASE;
                let claimed = store
                    .claim_dossiers(owner, 10, model.now, until)
                    .await
                    .map_err(|error| error.to_string())?;
                for dossier in claimed {
                    model.note(format!(
                        "claim {} by {owner} ({}) carrying {}",
                        dossier.source_id, dossier.claim, dossier.payload_hash
                    ));
                    model.calls.push(Call {
                        claim: dossier.claim,
                        owner,
                        id: dossier.source_id,
                        hash: dossier.payload_hash,
                        lease_until: until,
                        landed: false,
                        landed_late: false,
                    });
                }
            }
            // A call lands on the portal (its in-call retries land the same payload), possibly after its
            // lease lapsed and the dossier was claimed again (a portal that stores late).
            38..=52 if !model.calls.is_empty() => {
                let index = rng.random_range(0..model.calls.len());
                let call = model.calls[index].clone();
                if model
                    .refused
                    .contains(&(call.id.clone(), call.hash.clone()))
                {
                    continue;
                }
                if call.lease_until < model.now {
                    model.calls[index].landed_late = true;
                }
                model.stored.insert((call.id.clone(), call.hash.clone()));
                model.calls[index].landed = true;
                model.portal.insert(call.id.clone(), call.hash.clone());
                model.note(format!("land {} {} ({})", call.id, call.hash, call.claim));
            }
            // An answer reaches the ledger, in any order.
            53..=74 if !model.calls.is_empty() => {
                let index = rng.random_range(0..model.calls.len());
                let mut call = model.calls.remove(index);
                let key = (call.id.clone(), call.hash.clone());
                let refuses = model.refused.contains(&key)
                    || (!call.landed && !model.stored.contains(&key) && rng.random_bool(0.2));
                let outcome = match rng.random_range(0..4) {
                    _ if refuses => {
                        model.refused.insert(key);
                        DeliveryOutcome::Refused {
                            code: 2,
                            message: "Trường NgayHenTra không hợp lệ".into(),
                        }
                    }
                    0 | 1 => {
                        model.stored.insert(key);
                        // The portal says stored: it did store it (if it had not yet, it does now).
                        if !call.landed {
                            model.portal.insert(call.id.clone(), call.hash.clone());
                            call.landed = true;
                        }
                        DeliveryOutcome::Accepted
                    }
                    // A timeout, a missing entry, an entry for another MaHoSo: no answer of its own.
                    _ => DeliveryOutcome::Retry {
                        error: "no answer".into(),
                        next_attempt_at: model.now + RETRY_DELAY,
                        maybe_stored: true,
                    },
                };
                model.note(format!(
                    "answer {} {:?} for {} ({})",
                    call.id, outcome, call.hash, call.claim
                ));
                store
                    .record_deliveries(
                        &[DeliveryResult {
                            claim: call.claim,
                            source_id: call.id,
                            payload_hash: call.hash,
                            outcome,
                        }],
                        &[],
                        model.now,
                    )
                    .await
                    .map_err(|error| error.to_string())?;
            }
            // The owner of a call renews its lease (a long call).
            75..=79 if !model.calls.is_empty() => {
                let index = rng.random_range(0..model.calls.len());
                let until = model.now + LEASE;
                let call = model.calls[index].clone();
                let renewed = store
                    .renew_claim(&call.claim, std::slice::from_ref(&call.id), until)
                    .await
                    .map_err(|error| error.to_string())?;
                if renewed > 0 {
                    model.calls[index].lease_until = until;
                }
                model.note(format!("renew {} ({}): {renewed}", call.id, call.claim));
            }
            // Time passes: a little, or past every lease.
            80..=94 => {
                model.now += if rng.random_bool(0.5) {
                    LEASE + 1
                } else {
                    rng.random_range(1..2_000)
                };
                model.note("tick".into());
            }
            // An owner restarts: its calls either landed already or never will; its claims go back.
            95..=99 => {
                let owner = owners[rng.random_range(0..owners.len())];
                // Calls that landed late had their answers recorded before the owner stopped (else the
                // ledger could never know); the others are gone with it.
                let late: Vec<DeliveryResult> = model
                    .calls
                    .iter()
                    .filter(|call| call.owner == owner && call.landed_late)
                    .map(|call| DeliveryResult {
                        claim: call.claim.clone(),
                        source_id: call.id.clone(),
                        payload_hash: call.hash.clone(),
                        outcome: DeliveryOutcome::Accepted,
                    })
                    .collect();
                store
                    .record_deliveries(&late, &[], model.now)
                    .await
                    .map_err(|error| error.to_string())?;
                model.calls.retain(|call| call.owner != owner);
                model.note(format!(
                    "restart {owner} ({} late answers first)",
                    late.len()
                ));
                store
                    .release_claims(owner, model.now)
                    .await
                    .map_err(|error| error.to_string())?;
            }
            _ => continue,
        }
        let rows = inspector.rows().await;
        model
            .check(&rows)
            .map_err(|failure| format!("{failure}\nsteps:\n  {}", model.log.join("\n  ")))?;
    }
    drain(store, inspector, &mut model).await
}

/// Settles every call (their answers are lost), lets every lease lapse, and pushes with a healthy portal
/// until nothing is due: the portal must then hold the newest version of every sendable dossier, and the
/// ledger must agree.
async fn drain(store: &dyn Store, inspector: &Inspector, model: &mut Model) -> Result<(), String> {
    // The answers still out arrive: stored for the calls that landed, a timeout for the others.
    let answers: Vec<DeliveryResult> = model
        .calls
        .drain(..)
        .map(|call| DeliveryResult {
            outcome: if call.landed {
                DeliveryOutcome::Accepted
            } else {
                DeliveryOutcome::Retry {
                    error: "timeout".into(),
                    next_attempt_at: model.now,
                    maybe_stored: true,
                }
            },
            claim: call.claim,
            source_id: call.id,
            payload_hash: call.hash,
        })
        .collect();
    store
        .record_deliveries(&answers, &[], model.now)
        .await
        .map_err(|error| error.to_string())?;
    for _ in 0..20 {
        model.now += LEASE + RETRY_DELAY + 1;
        let claimed = store
            .claim_dossiers("drain", 100, model.now, model.now + LEASE)
            .await
            .map_err(|error| error.to_string())?;
        if claimed.is_empty() {
            break;
        }
        let results: Vec<DeliveryResult> = claimed
            .into_iter()
            .map(|dossier| {
                let key = (dossier.source_id.clone(), dossier.payload_hash.clone());
                let outcome = if model.refused.contains(&key) {
                    DeliveryOutcome::Refused {
                        code: 2,
                        message: "Trường NgayHenTra không hợp lệ".into(),
                    }
                } else {
                    model
                        .portal
                        .insert(dossier.source_id.clone(), dossier.payload_hash.clone());
                    DeliveryOutcome::Accepted
                };
                DeliveryResult {
                    claim: dossier.claim,
                    source_id: dossier.source_id,
                    payload_hash: dossier.payload_hash,
                    outcome,
                }
            })
            .collect();
        store
            .record_deliveries(&results, &[], model.now)
            .await
            .map_err(|error| error.to_string())?;
    }
    let rows = inspector.rows().await;
    for row in &rows {
        let winner = &model.winner[&row.id];
        match winner.payload {
            Some(content)
                if model
                    .refused
                    .contains(&(row.id.clone(), payload_hash(content))) =>
            {
                if row.state != "refused" {
                    return Err(format!(
                        "after draining, {} is {} but the portal refuses its newest payload",
                        row.id, row.state
                    ));
                }
            }
            Some(content) => {
                let hash = payload_hash(content);
                if row.state != "accepted" || model.portal.get(&row.id) != Some(&hash) {
                    return Err(format!(
                        "after draining, {} is {} and the portal holds {:?}; its newest payload is {hash}\nsteps:\n  {}",
                        row.id,
                        row.state,
                        model.portal.get(&row.id),
                        model.log.join("\n  ")
                    ));
                }
            }
            None => {
                if row.state != "held" {
                    return Err(format!(
                        "after draining, {} is {} but its newest version is held back",
                        row.id, row.state
                    ));
                }
            }
        }
    }
    model.check(&rows)
}

async fn run_cases(store: &dyn Store, inspector: &Inspector, backend: &str) {
    let seeds: Vec<u64> = match std::env::var("TTHC_SYNC_MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("TTHC_SYNC_MODEL_SEED is a number")],
        Err(_) => (0..cases()).collect(),
    };
    for seed in &seeds {
        inspector.clear().await;
        if let Err(failure) = run_case(store, inspector, *seed).await {
            panic!("{backend}: case {seed} failed: {failure}");
        }
    }
    eprintln!("{backend}: {} generated cases passed", seeds.len());
}

#[tokio::test]
async fn the_sqlite_ledger_keeps_the_delivery_rules_under_any_interleaving() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("tthc.db"))
        .await
        .unwrap();
    let inspector = Inspector::Sqlite(store.pool().clone());
    run_cases(&store, &inspector, "sqlite").await;
    store.close().await;
}

#[tokio::test]
async fn the_postgres_ledger_keeps_the_delivery_rules_under_any_interleaving() {
    let Some(schema) = common::postgres_schema().await else {
        return;
    };
    let store = schema.store().await;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(schema.options())
        .await
        .unwrap();
    let inspector = Inspector::Postgres(pool);
    run_cases(&store, &inspector, "postgres").await;
    store.close().await;
    if let Inspector::Postgres(pool) = inspector {
        pool.close().await;
    }
    schema.drop().await;
}
