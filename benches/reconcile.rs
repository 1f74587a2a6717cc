//! Reconciliation of a large ledger: 100,000 dossiers over 200 units in a SQLite ledger, against the
//! source simulator serving the same dataset (2% of it hidden from the feed, so that some buckets
//! disagree and their identifier sets are compared and the missing dossiers fetched).
//!
//!     cargo bench --bench reconcile
//!     DOSSIERS=20000 UNITS=50 cargo bench --bench reconcile
//!
//! Prints the time of each part: the ledger's buckets, a whole reconciliation run (the source's counts,
//! identifier comparisons, fetches, the stored run and the log line), and a report with the indicator
//! preview (which reads every payload of the period).

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tthc_sync::commands::demo::Demo;
use tthc_sync::config::SourceSettings;
use tthc_sync::http::RetryPolicy;
use tthc_sync::normalize::MappingTables;
use tthc_sync::reconcile::log::ReconciliationLog;
use tthc_sync::reconcile::{Counts, Reconciler, lines};
use tthc_sync::report::lines::{OtherSides, unit_lines};
use tthc_sync::sim::FaultLevel;
use tthc_sync::sim::source::{SourceFaults, SourceSimConfig};
use tthc_sync::source::client::SourceClient;
use tthc_sync::source::feed::FeedRecord;
use tthc_sync::store::prelude::*;
use tthc_sync::store::sqlite::SqliteStore;
use tthc_sync::sync::ingest::IngestSink;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("reconcile benchmark: run it with `cargo bench --bench reconcile`");
        return;
    }
    let dossiers = env_number("DOSSIERS", 100_000);
    let units = env_number("UNITS", 200);
    let shutdown = CancellationToken::new();
    let mut config = SourceSimConfig::for_level(FaultLevel::Realistic);
    config.generator.dossiers = dossiers;
    config.generator.units = units;
    config.generator.hidden_share = 0.02;
    config.generator.tie_block = 0;
    config.faults = SourceFaults {
        hidden_rows: true,
        ..SourceFaults::none()
    };
    let started = Instant::now();
    let (source, address) = Demo::serve_source(config, &shutdown).await.unwrap();
    println!(
        "dataset: {dossiers} dossiers, {units} units, generated in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The ledger: every visible dossier normalized and written, most of them accepted.
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("ledger.db"))
            .await
            .unwrap(),
    );
    let tables = Arc::new(MappingTables::default());
    let started = Instant::now();
    let mut sink = IngestSink::new(store.clone(), tables.clone(), None).without_cursor();
    let rows = source.snapshot();
    for page in rows.chunks(500) {
        let records = page
            .iter()
            .filter(|row| row.visible_in_feed)
            .map(|row| FeedRecord {
                id: Some(row.id.clone()),
                updated: None,
                raw: serde_json::value::to_raw_value(&row.record).unwrap(),
            })
            .collect();
        sink.write(records, None).await.unwrap();
    }
    sink.flush().await.unwrap();
    sqlx::query("UPDATE dossiers SET state = 'accepted', accepted_hash = payload_hash WHERE state = 'pending'")
        .execute(store.pool())
        .await
        .unwrap();
    println!(
        "ledger: {} rows written in {:.1} s",
        rows.len(),
        started.elapsed().as_secs_f64()
    );

    let (from, to) = ("2000-01-01", "2100-01-01");
    let started = Instant::now();
    let buckets = store.ledger_buckets(from, to, None).await.unwrap();
    let lines_now = lines(&buckets, &Counts::default());
    println!(
        "ledger buckets and unit lines: {} buckets, {} units in {:.3} s",
        buckets.len(),
        lines_now.len(),
        started.elapsed().as_secs_f64()
    );

    let settings: SourceSettings = toml::from_str(&format!(
        "base_url = \"http://{address}\"\nclient_id = \"demo\"\nclient_secret = \"demo-secret\"\n"
    ))
    .unwrap();
    let client = SourceClient::new(&settings, RetryPolicy::none()).unwrap();
    let reconciler = Reconciler {
        store: store.clone(),
        source: Arc::new(client),
        portal: None,
        catalog: None,
        tables,
        log: Some(ReconciliationLog::new(dir.path().join("log"), 10 << 20)),
        portal_sample: 0,
        portal_lookups: 0,
        content: tthc_sync::reconcile::content::ContentLimits::OFF,
        max_record_bytes: 8 << 20,
    };
    let today = tthc_sync::app::vietnam_today();
    let first = jiff::civil::date(2000, 1, 1);
    let started = Instant::now();
    let outcome = reconciler.run(first, today, None).await.unwrap();
    println!(
        "reconciliation run: {} units, {} hidden dossiers found and fetched, in {:.2} s",
        outcome.lines.len(),
        outcome.fetched,
        started.elapsed().as_secs_f64()
    );
    let started = Instant::now();
    let again = reconciler.run(first, today, None).await.unwrap();
    println!(
        "second run (nothing left to fetch: {}): {:.2} s",
        again.fetched,
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let report = unit_lines(store.as_ref(), from, to, None, OtherSides::Stored)
        .await
        .unwrap();
    println!(
        "report with the indicator preview ({} units): {:.2} s",
        report.len(),
        started.elapsed().as_secs_f64()
    );
    shutdown.cancel();
}
