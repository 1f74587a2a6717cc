//! `store copy` of a large ledger: 100,000 dossiers (with their bodies, two progress entries per
//! sendable dossier, an attempt log) written into a SQLite file through the store's own ingest, then
//! copied into a fresh PostgreSQL schema and verified, as `tthc-sync store copy` does.
//!
//!     TTHC_SYNC_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test cargo bench --bench store_copy
//!     DOSSIERS=20000 TTHC_SYNC_BENCH_POSTGRES_URL=... cargo bench --bench store_copy
//!
//! Prints the rows per table and the time of each part: filling the SQLite ledger, copying (pages of
//! 5,000 rows, each with its marker), and verifying (both sides read again and hashed). With
//! `KEEP_LEDGER=/path/to/file.db` the SQLite ledger is written there and kept, to time the binary on it
//! (`tthc-sync store copy --from /path/to/file.db --to postgres://...`).

#[path = "../tests/it/common/ledger_fill.rs"]
mod ledger_fill;

use std::time::Instant;

use sqlx::AssertSqlSafe;
use tthc_sync::store::copy::{self, CopyOptions, Endpoint};
use tthc_sync::store::prelude::*;
use tthc_sync::store::sqlite::SqliteStore;

#[tokio::main]
async fn main() {
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("store copy benchmark: run it with `cargo bench --bench store_copy`");
        return;
    }
    let Ok(url) = std::env::var("TTHC_SYNC_BENCH_POSTGRES_URL") else {
        println!("store copy benchmark: set TTHC_SYNC_BENCH_POSTGRES_URL to a PostgreSQL database");
        return;
    };
    let dossiers: usize = std::env::var("DOSSIERS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = std::env::var_os("KEEP_LEDGER")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("source.db"));

    let started = Instant::now();
    let store = SqliteStore::open(&path).await.expect("the ledger opens");
    ledger_fill::fill(&store, dossiers, 10).await;
    store.close().await;
    let size = std::fs::metadata(&path).map(|meta| meta.len()).unwrap_or(0);
    println!(
        "filled a SQLite ledger of {dossiers} dossiers ({:.0} MB) in {:.1} s",
        size as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    let schema = format!("store_copy_bench_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&url)
        .await
        .expect("PostgreSQL answers");
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .expect("the schema is created");
    let separator = if url.contains('?') { '&' } else { '?' };
    let target = Endpoint::Postgres(format!("{url}{separator}options[search_path]={schema}"));

    let started = Instant::now();
    let mut copied_at = started.elapsed();
    let mut on_page = |table: &str, _rows: u64| {
        if table == "leaders" {
            copied_at = started.elapsed();
        }
    };
    let report = copy::copy_ledger(
        &Endpoint::Sqlite(path),
        &target,
        &CopyOptions::default(),
        &mut on_page,
    )
    .await
    .expect("the copy succeeds");
    let total = started.elapsed();
    for table in &report.tables {
        println!("{:<16} {:>9} rows", table.table, table.rows);
    }
    println!(
        "copied in {:.1} s, verified in {:.1} s: {:.1} s in all",
        copied_at.as_secs_f64(),
        (total - copied_at).as_secs_f64(),
        total.as_secs_f64()
    );
    sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await
        .expect("the schema is dropped");
}
