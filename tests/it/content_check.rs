//! The content check of reconciliation, and the streaming fetches of `resync` and of reconciliation:
//! - the store's content-check methods, on SQLite and on PostgreSQL: candidates, samples, and a requeue
//!   that lands only on the accepted payload that was compared;
//! - a backfill of many dossiers holds one chunk of records at a time and writes each before it fetches
//!   the next;
//! - with the real binary: the portal's copies of three dossiers are corrupted after a sync, `reconcile`
//!   finds exactly those, counts them per unit in the report's JSON and the reconciliation log, queues
//!   them again, and once the daemon has pushed them the portal holds our payloads again.

use crate::common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tthc_sync::commands::demo::{Demo, demo_settings};
use tthc_sync::normalize::MappingTables;
use tthc_sync::reconcile::fetch::Backfill;
use tthc_sync::sim::FaultLevel;
use tthc_sync::store::prelude::*;
use tthc_sync::store::sqlite::SqliteStore;
use tthc_sync::store::{DeliveryOutcome, DeliveryResult, IngestRow, Redaction, Store};
use tthc_sync::sync::ingest::IngestSink;

use common::run_binary;

/// Each store test, once on each store.
macro_rules! on_both_stores {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::SqliteStore::open(&dir.path().join("tthc.db")).await.unwrap();
                    super::$test(&store).await;
                    super::Maintenance::close(&store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $test() {
                    let Some(schema) = super::common::postgres_schema().await else {
                        return;
                    };
                    let store = schema.store().await;
                    super::$test(&store).await;
                    super::Maintenance::close(&store).await;
                    schema.drop().await;
                }
            )*
        }
    };
}

on_both_stores!(the_content_check_queues_again_only_the_payload_it_compared);

fn row(id: &str, payload_hash: &str) -> IngestRow {
    IngestRow {
        source_id: id.into(),
        dossier_code: Some(format!("000.00.31.H60-240115-{id}")),
        raw: format!("{{\"id\":\"{id}\"}}"),
        raw_hash: format!("raw-{id}"),
        source_updated_at: Some(1),
        source_agency_id: Some("ag-1".into()),
        unit: Some("000.00.31.H60".into()),
        procedure_code: Some("1.004227".into()),
        reception_day: Some("2024-01-15".into()),
        payload: Some(format!("{{\"MaHoSo\":\"{id}\"}}")),
        payload_hash: Some(payload_hash.into()),
        reason_code: None,
        reason_detail: None,
        findings: "[]".into(),
        kind: tthc_sync::store::VersionKind::Sendable,
        renormalized: false,
        stamped_ahead: false,
        progress: Vec::new(),
    }
}

fn ids(candidates: &[tthc_sync::store::ContentCandidate]) -> Vec<&str> {
    let mut ids: Vec<&str> = candidates
        .iter()
        .map(|candidate| candidate.source_id.as_str())
        .collect();
    ids.sort();
    ids
}

async fn the_content_check_queues_again_only_the_payload_it_compared(store: &dyn Store) {
    let rows: Vec<IngestRow> = ["a", "b", "c", "d", "e"]
        .iter()
        .map(|id| row(id, "p1"))
        .collect();
    store.ingest(&rows, None, 10).await.unwrap();
    let claimed = store.claim_dossiers("me", 10, 20, 1_000).await.unwrap();
    assert_eq!(claimed.len(), 5);
    let claim = claimed[0].claim.clone();
    let accepted = |id: &str| DeliveryResult {
        claim: claim.clone(),
        source_id: id.into(),
        payload_hash: "p1".into(),
        outcome: DeliveryOutcome::Accepted,
    };
    // d stays in flight; the others are accepted at 30.
    store
        .record_deliveries(
            &[accepted("a"), accepted("b"), accepted("c"), accepted("e")],
            &[],
            30,
        )
        .await
        .unwrap();

    let recent = store.content_candidates(0, 100, None, 10).await.unwrap();
    assert_eq!(
        ids(&recent),
        ["a", "b", "c", "e"],
        "accepted only, not in flight"
    );
    let a = recent.iter().find(|c| c.source_id == "a").unwrap();
    assert_eq!(a.dossier_code, "000.00.31.H60-240115-a");
    assert_eq!(a.payload, "{\"MaHoSo\":\"a\"}");
    assert_eq!(a.payload_hash, "p1");
    assert_eq!(a.unit.as_deref(), Some("000.00.31.H60"));
    assert_eq!(a.reception_day.as_deref(), Some("2024-01-15"));
    assert!(
        store
            .content_candidates(31, 100, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .content_candidates(0, 100, Some("000.00.99.H60"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .content_candidates(0, 100, None, 2)
            .await
            .unwrap()
            .len(),
        2
    );
    // The sample is of those accepted before the recent window.
    assert_eq!(
        store
            .content_sample("000.00.31.H60", 31, 10)
            .await
            .unwrap()
            .len(),
        4
    );
    assert!(
        store
            .content_sample("000.00.31.H60", 30, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .content_sample("000.00.31.H60", 31, 3)
            .await
            .unwrap()
            .len(),
        3
    );

    // Checked in this run: out of the run's candidates; in the next run, after those never checked.
    store.mark_content_checked(&["a".into()], 40).await.unwrap();
    assert_eq!(
        ids(&store.content_candidates(0, 40, None, 10).await.unwrap()),
        ["b", "c", "e"]
    );
    let next_run = store.content_candidates(0, 41, None, 10).await.unwrap();
    assert_eq!(next_run.len(), 4);
    assert_eq!(next_run.last().unwrap().source_id, "a");

    // A redacted dossier has nothing left to compare.
    let redacted = store
        .redact(
            &[Redaction {
                source_id: "e".into(),
                raw_hash: "raw-e".into(),
                payload: "{\"MaHoSo\":\"e\"}".into(),
            }],
            45,
        )
        .await
        .unwrap();
    assert_eq!(redacted, 1);
    assert_eq!(
        ids(&store.content_candidates(0, 100, None, 10).await.unwrap()),
        ["a", "b", "c"]
    );
    assert_eq!(
        store
            .content_sample("000.00.31.H60", 31, 10)
            .await
            .unwrap()
            .len(),
        3
    );

    // Queued again only where the row is still accepted with the hash compared: b was compared under
    // another hash, d is in flight.
    let queued = store
        .requeue_content_differs(
            &[
                ("b".into(), "other".into()),
                ("c".into(), "p1".into()),
                ("d".into(), "p1".into()),
                ("zzz".into(), "p1".into()),
            ],
            50,
        )
        .await
        .unwrap();
    assert_eq!(queued, ["c"]);
    let claimed = store.claim_dossiers("me", 10, 60, 1_000).await.unwrap();
    assert_eq!(claimed.len(), 1, "only c is due: {claimed:?}");
    assert_eq!(claimed[0].source_id, "c");
    assert!(
        claimed[0].portal_has,
        "the portal has it: it goes as an update"
    );
    assert_eq!(claimed[0].attempts, 0);
    assert_eq!(claimed[0].payload_hash, "p1");
    // A second requeue of the same comparison finds c in flight: nothing changes.
    assert!(
        store
            .requeue_content_differs(&[("c".into(), "p1".into())], 70)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(&store.content_candidates(0, 100, None, 10).await.unwrap()),
        ["a", "b"]
    );
}

/// A backfill of far more dossiers than a chunk: each chunk is in the ledger before the one after next
/// is fetched, and no more than two chunks of records are ever held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backfill_writes_chunk_by_chunk_with_flat_memory() {
    let shutdown = CancellationToken::new();
    let config = common::source_config(1_200, 4, 5, FaultLevel::None);
    let (source, address) = Demo::serve_source(config, &shutdown).await.unwrap();
    let settings: tthc_sync::config::SourceSettings = toml::from_str(&format!(
        "base_url = \"http://{address}\"\nclient_id = \"demo\"\nclient_secret = \"demo-secret\"\n"
    ))
    .unwrap();
    let client = Arc::new(
        tthc_sync::source::client::SourceClient::new(
            &settings,
            tthc_sync::http::RetryPolicy::none(),
        )
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("tthc.db"))
            .await
            .unwrap(),
    );
    let sink =
        IngestSink::new(store.clone(), Arc::new(MappingTables::default()), None).without_cursor();
    let chunk = 50;
    let mut backfill = Backfill::new(client, sink, chunk);
    let ids: Vec<String> = source.snapshot().into_iter().map(|row| row.id).collect();
    assert!(ids.len() >= 1_000);
    let mut notes = Vec::new();
    for (index, group) in ids.chunks(chunk).enumerate() {
        backfill.push(group.to_vec(), &mut notes).await.unwrap();
        if index >= 1 {
            // The chunk before the one just handed over has been written.
            let written = &ids[(index - 1) * chunk..index * chunk];
            let views = store.ledger_views(written).await.unwrap();
            assert_eq!(
                views.len(),
                chunk,
                "chunk {} written before chunk {} was fetched",
                index - 1,
                index + 1
            );
            let later = &ids[(index + 1) * chunk..((index + 2) * chunk).min(ids.len())];
            if !later.is_empty() {
                assert!(store.ledger_views(later).await.unwrap().is_empty());
            }
        }
    }
    let (stats, ingest) = backfill.finish(&mut notes).await.unwrap();
    assert!(notes.is_empty(), "{notes:?}");
    assert_eq!(stats.listed, ids.len() as u64);
    assert_eq!(stats.fetched, ids.len() as u64);
    assert_eq!(stats.chunks, ids.len().div_ceil(chunk) as u64);
    assert!(
        stats.peak_held <= 2 * chunk,
        "at most two chunks of records held at once, whatever the number of ids: {}",
        stats.peak_held
    );
    assert_eq!(ingest.received, ids.len() as u64);
    assert_eq!(store.ledger_views(&ids).await.unwrap().len(), ids.len());
    shutdown.cancel();
}

/// The reconciliation log's lines of one run, by unit.
fn log_lines(dir: &std::path::Path, run_id: &str) -> HashMap<String, Value> {
    let mut lines = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for line in text.lines() {
            let value: Value = serde_json::from_str(line).unwrap();
            if value["run_id"] == run_id {
                lines.insert(value["unit"].as_str().unwrap().to_owned(), value);
            }
        }
    }
    lines
}

async fn reconcile(config: &str) -> String {
    let (ok, stdout, stderr) = run_binary(&[
        "reconcile",
        "--config",
        config,
        "--from",
        "2000-01-01",
        "--lang",
        "en",
    ])
    .await;
    assert!(ok, "reconcile failed: {stderr}");
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("Reconciliation "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no run id in {stdout}"))
        .to_owned()
}

async fn json_report(config: &str) -> Value {
    let (ok, stdout, stderr) = run_binary(&[
        "report",
        "--config",
        config,
        "--format",
        "json",
        "--from",
        "2000-01-01",
        "--offline",
    ])
    .await;
    assert!(ok, "report failed: {stderr}");
    serde_json::from_str(&stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconcile_finds_corrupted_copies_on_the_portal_and_sends_them_again() {
    let mut source_config = common::source_config(300, 3, 77, FaultLevel::None);
    source_config.generator.bad_share = 0.0;
    source_config.generator.null_code_agencies = 0;
    let (dir, demo) = common::start(
        source_config,
        common::portal_config(77, FaultLevel::None),
        |_| {},
    )
    .await;
    common::synced(&demo, Duration::from_secs(120)).await;
    let config_path = dir.path().join("tthc-sync.toml");
    std::fs::write(
        &config_path,
        demo_settings(
            &demo.app.settings.source.base_url,
            &demo.app.settings.portal.base_url,
            &demo.app.settings.store.path,
        ),
    )
    .unwrap();
    let config = config_path.to_str().unwrap();

    // Nothing differs right after a sync: every recent dossier is compared, none is sent again.
    let stored = demo.portal.stored();
    let run = reconcile(config).await;
    let log_dir = dir.path().join("reconciliation");
    let clean = log_lines(&log_dir, &run);
    let checked: i64 = clean
        .values()
        .map(|line| line["content_checked"].as_i64().unwrap())
        .sum();
    assert_eq!(
        checked as usize,
        stored.len(),
        "every accepted dossier is recent: all compared"
    );
    assert!(
        clean.values().all(|line| line["content_differs"] == 0),
        "{clean:#?}"
    );

    // Three copies go wrong on the portal: two of one unit, one of another.
    let mut by_unit: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (code, dossier) in &stored {
        by_unit
            .entry(dossier.dossier["DonViXuLy"].as_str().unwrap().to_owned())
            .or_default()
            .push(code.clone());
    }
    let sizes: Vec<usize> = by_unit.values().map(Vec::len).collect();
    let mut units = by_unit.into_iter().filter(|(_, codes)| codes.len() >= 2);
    let (first_unit, first_codes) = units.next().unwrap();
    let (second_unit, second_codes) = units
        .next()
        .unwrap_or_else(|| panic!("two units with dossiers on the portal: {sizes:?}"));
    let corrupted = [
        (&first_codes[0], "TenTTHC", Value::from("Thủ tục khác")),
        (&first_codes[1], "TrangThaiHoSo", Value::from("3")),
        (&second_codes[0], "MaTTHC", Value::from("9.999999")),
    ];
    for (code, field, value) in &corrupted {
        assert!(demo.portal.overwrite_field(code, field, value.clone()));
    }
    let versions = |code: &str| demo.portal.dossier_versions_received(code);
    let before: Vec<usize> = corrupted
        .iter()
        .map(|(code, _, _)| versions(code))
        .collect();

    let run = reconcile(config).await;
    let found = log_lines(&log_dir, &run);
    assert_eq!(
        found[&first_unit]["content_differs"], 2,
        "{:#}",
        found[&first_unit]
    );
    assert_eq!(
        found[&second_unit]["content_differs"], 1,
        "{:#}",
        found[&second_unit]
    );
    let differing: i64 = found
        .values()
        .map(|line| line["content_differs"].as_i64().unwrap())
        .sum();
    assert_eq!(differing, 3, "only the corrupted copies differ");
    let day_total: i64 = found[&first_unit]["content_differs_days"]
        .as_object()
        .unwrap()
        .values()
        .map(|count| count.as_i64().unwrap())
        .sum();
    assert_eq!(day_total, 2, "counted by reception day too");

    let report = json_report(config).await;
    for (unit, expected) in [(&first_unit, 2), (&second_unit, 1)] {
        let line = report["units"]
            .as_array()
            .unwrap()
            .iter()
            .find(|line| line["unit"] == unit.as_str())
            .unwrap();
        assert_eq!(line["content_differs"], expected, "{line:#}");
    }
    let (ok, csv, _) = run_binary(&[
        "report",
        "--config",
        config,
        "--format",
        "csv",
        "--from",
        "2000-01-01",
        "--offline",
        "--lang",
        "en",
    ])
    .await;
    assert!(ok);
    assert!(
        csv.lines()
            .next()
            .unwrap()
            .contains("Content differs on the portal"),
        "{csv}"
    );

    // The daemon sends them again: the portal holds our payloads once more.
    let restored = common::eventually(Duration::from_secs(60), || {
        corrupted.iter().all(|(code, _, _)| {
            demo.portal.stored_dossier(code).unwrap().dossier == stored[*code].dossier
        })
    })
    .await;
    assert!(restored, "the portal should hold the payloads again");
    for ((code, _, _), before) in corrupted.iter().zip(before) {
        assert_eq!(
            versions(code),
            before + 1,
            "{code} sent once more, as an update"
        );
    }
    let calls = demo.portal.calls();
    assert!(
        calls
            .iter()
            .any(|call| call.service == "DongBoHoSoMC" && call.is_updating == Some(true)),
        "sent as updates"
    );

    // And the next check finds nothing more to send.
    let run = reconcile(config).await;
    let after = log_lines(&log_dir, &run);
    assert!(
        after.values().all(|line| line["content_differs"] == 0),
        "{after:#?}"
    );
    demo.stop().await.unwrap();
}
