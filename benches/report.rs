//! Reports and the dashboard over a large ledger: a SQLite ledger of `TTHC_SYNC_BENCH_DOSSIERS`
//! dossiers (100,000 by default) with real portal payloads, then the `report` command (with the
//! indicator preview) for a month and for the whole ledger, and the dashboard's page and
//! `/api/v1/report`, each timed.
//!
//!     cargo bench --bench report
//!     TTHC_SYNC_BENCH_DOSSIERS=1000000 cargo bench --bench report
//!
//! The ledger is built fast: a base of up to 20,000 generated dossiers goes through the daemon's own
//! ingest (normalization included, so every payload is one the daemon would send), nineteen in twenty
//! of the sendable ones are marked accepted, and the base is then copied in SQL under new source ids
//! until the ledger holds the number asked for. Each copy is moved back by 30 days, twelve windows in
//! turn, so that the ledger covers a year and a month holds about a twelfth of it.
//!
//! The command path is the one that counts: the release binary's `report --offline` runs against the
//! ledger file under `/usr/bin/time -v`, which gives its wall time and peak resident memory. The
//! dashboard and the API are served by the status server of an app on the ledger, in a process of its own
//! (this bench again), and asked over loopback; that process resets its peak resident memory
//! (`/proc/self/clear_refs`) before each request and prints the peak reached while answering it.
//!
//! `KEEP_LEDGER=/path/to/file.db` keeps the ledger, to run the binary on it again; when that file
//! exists, it is used as it is (built by a run with the same number of dossiers, the same day).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tthc_sync::app::{App, Sides, vietnam_today};
use tthc_sync::commands::demo::demo_settings;
use tthc_sync::config::Settings;
use tthc_sync::normalize::MappingTables;
use tthc_sync::sim::generator::{GeneratorConfig, generate};
use tthc_sync::source::feed::FeedRecord;
use tthc_sync::store::prelude::*;
use tthc_sync::store::sqlite::SqliteStore;
use tthc_sync::sync::ingest::IngestSink;

/// The daemon's allocator, so that the serving process's memory is the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Dossiers generated and ingested; the rest of the ledger copies them.
const BASE_DOSSIERS: usize = 20_000;

/// Each copy of the base moves back by this many days, over this many windows: a year of reception days.
const WINDOW_DAYS: usize = 30;
const WINDOWS: usize = 12;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("report benchmark: run it with `cargo bench --bench report`");
        return;
    }
    if let Some(config) = std::env::var_os(SERVE_CONFIG) {
        serve_and_ask(Path::new(&config)).await;
        return;
    }
    let dossiers = env_number("TTHC_SYNC_BENCH_DOSSIERS", 100_000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = std::env::var_os("KEEP_LEDGER")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("ledger.db"));

    let started = Instant::now();
    let reused = std::env::var_os("KEEP_LEDGER").is_some() && path.exists();
    if !reused {
        build_ledger(&path, dossiers).await;
    }
    let size = std::fs::metadata(&path).map_or(0, |meta| meta.len());
    println!(
        "ledger: {dossiers} dossiers ({:.0} MB) {} in {:.1} s",
        size as f64 / 1e6,
        if reused {
            "kept from a previous run"
        } else {
            "built"
        },
        started.elapsed().as_secs_f64()
    );

    let config = dir.path().join("tthc-sync.toml");
    std::fs::write(
        &config,
        demo_settings("http://127.0.0.1:9", "http://127.0.0.1:9", &path),
    )
    .expect("the configuration is written");
    let today = vietnam_today();
    let month_from = today
        .checked_sub(jiff::Span::new().days(WINDOW_DAYS as i64 - 1))
        .expect("a date");
    let month = (month_from.to_string(), today.to_string());
    let whole = ("2000-01-01".to_owned(), today.to_string());

    for (what, (from, to)) in [("a month", &month), ("the whole ledger", &whole)] {
        let (seconds, peak, units) = report_command(&config, from, to);
        println!(
            "report --offline --format json, {what} ({from} → {to}): {seconds:.2} s, peak RSS {:.0} MiB, {units} units",
            peak as f64 / 1024.0
        );
    }

    // The status server runs in a process of its own, so that its peak memory is not this one's,
    // which built the ledger.
    let served = Command::new(std::env::current_exe().expect("this bench's path"))
        .arg("--bench")
        .env(SERVE_CONFIG, &config)
        .status()
        .expect("the serving process runs");
    assert!(served.success(), "the serving process failed");
}

/// Set in the process that serves the dashboard and the API: the configuration to load.
const SERVE_CONFIG: &str = "TTHC_SYNC_BENCH_SERVE_CONFIG";

/// The dashboard and `/api/v1/report`, served by the status server of an app on the ledger and asked
/// over loopback, each request timed with the peak memory reached while answering it.
async fn serve_and_ask(config: &Path) {
    let settings = Settings::load(Some(config)).expect("the configuration loads");
    let app = Arc::new(
        App::build_for(settings, Sides::NONE)
            .await
            .expect("the app builds"),
    );
    let shutdown = CancellationToken::new();
    let status = tthc_sync::status::start(app.clone(), shutdown.clone())
        .await
        .expect("the status server starts");
    let client = reqwest::Client::new();
    let base = format!("http://{}", status.address);
    let today = vietnam_today();
    let days_back = |days: i64| {
        today
            .checked_sub(jiff::Span::new().days(days))
            .expect("a date")
    };
    for (what, path) in [
        ("dashboard page, 30 days", "/?days=30".to_owned()),
        ("dashboard page, 90 days", "/?days=90".to_owned()),
        (
            "/api/v1/report, 30 days",
            format!("/api/v1/report?from={}&to={today}", days_back(29)),
        ),
        (
            "/api/v1/report, 366 days",
            format!("/api/v1/report?from={}&to={today}", days_back(365)),
        ),
    ] {
        reset_peak();
        let before = status_kib("VmRSS:");
        let started = Instant::now();
        let response = client
            .get(format!("{base}{path}"))
            .send()
            .await
            .expect("the status server answers");
        let status_code = response.status();
        let body = response.bytes().await.expect("a body");
        let seconds = started.elapsed().as_secs_f64();
        println!(
            "{what}: {status_code}, {} kB in {seconds:.2} s, peak RSS {:.0} MiB (the serving process; {:.0} MiB before the request)",
            body.len() / 1000,
            status_kib("VmHWM:") as f64 / 1024.0,
            before as f64 / 1024.0
        );
    }
    status.stop().await;
    shutdown.cancel();
}

/// Writes the ledger: the base through the daemon's ingest, then copies of it in SQL.
async fn build_ledger(path: &Path, dossiers: usize) {
    let base = dossiers.min(BASE_DOSSIERS);
    let config = GeneratorConfig {
        dossiers: base,
        units: 200,
        hidden_share: 0.0,
        tie_block: 0,
        days: WINDOW_DAYS as u32,
        ..GeneratorConfig::default()
    };
    let dataset = generate(&config, jiff::Timestamp::now());
    let store = Arc::new(SqliteStore::open(path).await.expect("the ledger opens"));
    let mut sink =
        IngestSink::new(store.clone(), Arc::new(MappingTables::default()), None).without_cursor();
    for page in dataset.dossiers.chunks(500) {
        let records = page
            .iter()
            .map(|row| FeedRecord {
                id: Some(row.id.clone()),
                updated: None,
                raw: serde_json::value::to_raw_value(&row.record).expect("a record"),
            })
            .collect();
        sink.write(records, None)
            .await
            .expect("the page is ingested");
    }
    sink.flush().await.expect("the ingest is flushed");
    drop(dataset);
    let pool = store.pool();
    // Nineteen in twenty accepted, the rest left pending: both tallies of the preview have work.
    sqlx::query(
        "UPDATE dossiers SET state = 'accepted', accepted_hash = payload_hash, portal_has = 1 \
         WHERE state = 'pending' AND abs(random()) % 20 <> 0",
    )
    .execute(pool)
    .await
    .expect("the base is accepted");

    let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('dossiers')")
        .fetch_all(pool)
        .await
        .expect("the columns");
    let ingested: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM dossiers")
        .fetch_one(pool)
        .await
        .expect("a count");
    let copies = dossiers.div_ceil(ingested.max(1) as usize);
    // The base's ids, in order, apart from the copies: each copy takes its first `left`.
    sqlx::query("CREATE TABLE bench_base AS SELECT source_id FROM dossiers ORDER BY source_id")
        .execute(pool)
        .await
        .expect("the base's ids");
    for copy in 1..copies {
        let left = dossiers - copy * ingested as usize;
        let shift = (copy % WINDOWS) * WINDOW_DAYS + (copy / WINDOWS);
        let selected = columns
            .iter()
            .map(|column| match column.as_str() {
                "source_id" => format!("source_id || '~{copy}'"),
                "reception_day" => format!("date(reception_day, '-{shift} days')"),
                other => other.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        let mut tx = pool.begin().await.expect("a transaction");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO dossiers ({}) SELECT {selected} FROM dossiers \
             WHERE source_id IN (SELECT source_id FROM bench_base ORDER BY source_id LIMIT {left})",
            columns.join(", ")
        )))
        .execute(&mut *tx)
        .await
        .expect("a copy of the dossiers");
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO dossier_bodies (source_id, raw, payload, findings) \
             SELECT b.source_id || '~{copy}', b.raw, b.payload, b.findings FROM dossier_bodies b \
             WHERE b.source_id IN (SELECT source_id FROM bench_base ORDER BY source_id LIMIT {left})"
        )))
        .execute(&mut *tx)
        .await
        .expect("a copy of the bodies");
        tx.commit().await.expect("the copy is committed");
    }
    sqlx::query("DROP TABLE bench_base")
        .execute(pool)
        .await
        .expect("the base's ids dropped");
    store.close().await;
}

/// Runs the release binary's `report --offline --format json` under `/usr/bin/time -v`: wall seconds,
/// peak resident KiB, and the units reported.
fn report_command(config: &Path, from: &str, to: &str) -> (f64, u64, usize) {
    let output = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(env!("CARGO_BIN_EXE_tthc-sync"))
        .args([
            "report",
            "--offline",
            "--format",
            "json",
            "--from",
            from,
            "--to",
            to,
        ])
        .arg("--config")
        .arg(config)
        .output()
        .expect("/usr/bin/time runs the binary");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "report failed: {stderr}");
    let field = |name: &str| {
        stderr
            .lines()
            .find_map(|line| line.trim().strip_prefix(name))
            .map(str::trim)
            .unwrap_or_default()
            .to_owned()
    };
    let peak = field("Maximum resident set size (kbytes):")
        .parse()
        .unwrap_or(0);
    let wall = field("Elapsed (wall clock) time (h:mm:ss or m:ss):");
    let seconds = wall.split(':').fold(0.0, |total, part| {
        total * 60.0 + part.parse::<f64>().unwrap_or(0.0)
    });
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("the report is JSON");
    let units = report["units"].as_array().map_or(0, Vec::len);
    (seconds, peak, units)
}

/// Resets this process's peak resident memory to its current one.
fn reset_peak() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A memory line of this process's status (`VmHWM:`, the peak since the last reset; `VmRSS:`), in KiB.
fn status_kib(line: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|text| text.strip_prefix(line))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
