//! `tthc-sync store copy`: a ledger moved from SQLite to PostgreSQL (and back) is the same ledger, table
//! by table; a copy stopped halfway resumes; a target holding data is refused; claims in flight come
//! across as they are and lapse on the target; and a daemon started on the copy goes on where the
//! SQLite one stopped.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::ledger_fill::{self, LEASE_UNTIL, OLD_OWNER};
use tokio_util::sync::CancellationToken;
use tthc_sync::app::App;
use tthc_sync::commands::demo::demo_settings;
use tthc_sync::config::Settings;
use tthc_sync::decide::DossierState;
use tthc_sync::sim::FaultLevel;
use tthc_sync::store::Store;
use tthc_sync::store::copy::{self, CopyError, CopyOptions, CopyReport, Endpoint};
use tthc_sync::store::prelude::*;
use tthc_sync::store::sqlite::SqliteStore;

/// A SQLite ledger filled with `dossiers` synthetic dossiers.
async fn filled_sqlite(dir: &std::path::Path, dossiers: usize, in_flight: usize) -> Endpoint {
    let path = dir.join("source.db");
    let store = SqliteStore::open(&path).await.expect("the ledger opens");
    ledger_fill::fill(&store, dossiers, in_flight).await;
    store.close().await;
    Endpoint::Sqlite(path)
}

async fn copy(
    from: &Endpoint,
    to: &Endpoint,
    options: &CopyOptions,
) -> Result<CopyReport, CopyError> {
    copy::copy_ledger(from, to, options, &mut |_, _| {}).await
}

fn hashes(report: &CopyReport) -> HashMap<&'static str, (u64, String)> {
    report
        .tables
        .iter()
        .map(|table| (table.table, (table.rows, table.hash.clone())))
        .collect()
}

#[tokio::test]
async fn the_copy_knows_every_table_and_column_of_both_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    SqliteStore::open(&path).await.unwrap().close().await;
    let sqlite = Endpoint::Sqlite(path.clone());
    assert_eq!(
        copy::schema_differences(&sqlite).await.unwrap(),
        Vec::<String>::new()
    );

    // A table the copy does not know is named, and the copy refuses the ledger.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    sqlx::query("CREATE TABLE newer_table (id INTEGER PRIMARY KEY)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE cursors ADD COLUMN newer_column TEXT")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let differences = copy::schema_differences(&sqlite).await.unwrap();
    assert!(
        differences.iter().any(|line| line.contains("newer_table"))
            && differences
                .iter()
                .any(|line| line.contains("cursors.newer_column")),
        "{differences:?}"
    );
    let refused = copy(
        &sqlite,
        &Endpoint::Sqlite(dir.path().join("to.db")),
        &CopyOptions::default(),
    )
    .await
    .expect_err("a schema the copy does not know is refused");
    assert!(refused.to_string().contains("newer_table"), "{refused}");

    let Some(schema) = common::postgres_schema().await else {
        return;
    };
    schema.store().await.close().await;
    assert_eq!(
        copy::schema_differences(&Endpoint::Postgres(schema.url()))
            .await
            .unwrap(),
        Vec::<String>::new()
    );
    schema.drop().await;
}

/// A copy stopped after three pages is refused as unfinished, resumes with `resume`, and ends verified
/// with every row; SQLite to SQLite, so that it runs without a PostgreSQL server too.
#[tokio::test]
async fn an_interrupted_copy_resumes_after_its_last_page_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let source = filled_sqlite(dir.path(), 1_200, 5).await;
    let target = Endpoint::Sqlite(dir.path().join("target.db"));
    let mut options = CopyOptions {
        batch_rows: 100,
        stop_after_pages: Some(3),
        ..CopyOptions::default()
    };
    let stopped = copy(&source, &target, &options).await;
    assert!(matches!(stopped, Err(CopyError::Stopped(3))), "{stopped:?}");

    options.stop_after_pages = None;
    let refused = copy(&source, &target, &options).await;
    assert!(
        matches!(refused, Err(CopyError::CopyInProgress { .. })),
        "{refused:?}"
    );
    options.resume = true;
    let report = copy(&source, &target, &options)
        .await
        .expect("the copy resumes");
    assert!(report.resumed);
    let dossiers = &report.tables[0];
    assert_eq!((dossiers.table, dossiers.rows), ("dossiers", 1_200));
    assert_eq!(
        dossiers.copied_now, 900,
        "the three pages committed are not copied again"
    );
    for table in &report.tables {
        assert!(
            table.rows > 0,
            "table {} is empty: the test covers nothing",
            table.table
        );
    }
    // A finished copy is an ordinary ledger: nothing left to resume, and a second copy is refused.
    let again = copy(&source, &target, &options).await;
    assert!(
        matches!(again, Err(CopyError::TargetNotEmpty { table: "dossiers" })),
        "{again:?}"
    );
}

/// A row changed in the target between two runs of a copy is found by the verification, which names
/// its table, and the target stays marked as unfinished.
#[tokio::test]
async fn the_verification_names_a_table_whose_rows_differ() {
    let dir = tempfile::tempdir().unwrap();
    let source = filled_sqlite(dir.path(), 300, 0).await;
    let target_path = dir.path().join("target.db");
    let target = Endpoint::Sqlite(target_path.clone());
    let mut options = CopyOptions {
        batch_rows: 100,
        stop_after_pages: Some(1),
        ..CopyOptions::default()
    };
    let stopped = copy(&source, &target, &options).await;
    assert!(matches!(stopped, Err(CopyError::Stopped(1))), "{stopped:?}");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", target_path.display()))
        .await
        .unwrap();
    let changed =
        sqlx::query("UPDATE dossiers SET attempts = attempts + 1 WHERE source_id = 'sim-0000001'")
            .execute(&pool)
            .await
            .unwrap();
    assert_eq!(changed.rows_affected(), 1, "the first page was committed");
    pool.close().await;

    options.stop_after_pages = None;
    options.resume = true;
    let failed = copy(&source, &target, &options).await;
    match failed {
        Err(CopyError::Mismatch(tables)) => {
            assert_eq!(tables.len(), 1, "{tables:?}");
            assert!(tables[0].starts_with("table dossiers:"), "{tables:?}");
        }
        other => panic!("the changed row is not found: {other:?}"),
    }
    let again = copy(&source, &target, &CopyOptions::default()).await;
    assert!(
        matches!(again, Err(CopyError::CopyInProgress { .. })),
        "{again:?}"
    );
}

/// SQLite → PostgreSQL → SQLite: the same rows and hashes everywhere; a non-empty target is refused
/// unless forced (through the binary, whose messages mask the URL's password); claims in flight come
/// across with their leases, which lapse on the target as they would have on the source.
#[tokio::test]
async fn sqlite_to_postgres_and_back_gives_identical_hashes() {
    let Some(schema) = common::postgres_schema().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let source = filled_sqlite(dir.path(), 2_500, 7).await;
    let postgres = Endpoint::Postgres(schema.url());
    let options = CopyOptions {
        batch_rows: 700,
        ..CopyOptions::default()
    };
    let there = copy(&source, &postgres, &options)
        .await
        .expect("SQLite → PostgreSQL");
    let back_path = dir.path().join("back.db");
    let back = copy(&postgres, &Endpoint::Sqlite(back_path.clone()), &options)
        .await
        .expect("PostgreSQL → SQLite");
    assert_eq!(hashes(&there), hashes(&back));
    assert_eq!(there.tables[0].rows, 2_500);
    let flights: Vec<_> = there
        .flights
        .iter()
        .map(|flight| {
            (
                flight.table,
                flight.owner.as_deref(),
                flight.rows,
                flight.lease_until,
            )
        })
        .collect();
    assert_eq!(
        flights,
        [("dossiers", Some(OLD_OWNER), 7, Some(LEASE_UNTIL))]
    );

    // The binary refuses the non-empty target and names it without its password (trust authentication
    // ignores the one given here).
    let with_password = schema
        .url()
        .replacen("://postgres@", "://postgres:hunter2@", 1);
    assert_ne!(
        with_password,
        schema.url(),
        "the URL has a user to add a password to"
    );
    let source_path = match &source {
        Endpoint::Sqlite(path) => path.display().to_string(),
        Endpoint::Postgres(_) => unreachable!("the source is a file"),
    };
    let (ok, stdout, stderr) = common::run_binary(&[
        "store",
        "copy",
        "--from",
        &source_path,
        "--to",
        &with_password,
    ])
    .await;
    assert!(!ok, "a non-empty target is refused: {stdout}");
    assert!(stderr.contains("already holds a ledger"), "{stderr}");
    assert!(
        stderr.contains("***") && !stderr.contains("hunter2"),
        "{stderr}"
    );
    let (ok, stdout, stderr) = common::run_binary(&[
        "store",
        "copy",
        "--from",
        &source_path,
        "--to",
        &with_password,
        "--force",
        "--lang",
        "en",
    ])
    .await;
    assert!(ok, "--force copies over it: {stderr}");
    assert!(
        stdout.contains("Verified") && !stdout.contains("hunter2"),
        "{stdout}"
    );
    for (table, (rows, hash)) in hashes(&there) {
        assert!(
            stdout.lines().any(|line| line.starts_with(table)
                && line.contains(&rows.to_string())
                && line.contains(&hash)),
            "{table} in the summary: {stdout}"
        );
    }

    // The claims in flight: still held until their lease ends, then claimable by another instance.
    let store = schema.store().await;
    let before_lapse = store
        .claim_dossiers(
            "new-instance",
            10_000,
            LEASE_UNTIL - 1,
            LEASE_UNTIL + 60_000,
        )
        .await
        .unwrap();
    assert!(
        before_lapse.is_empty(),
        "only the claims in flight were left to claim, and their lease runs: {}",
        before_lapse.len()
    );
    let after_lapse = store
        .claim_dossiers(
            "new-instance",
            10_000,
            LEASE_UNTIL + 1,
            LEASE_UNTIL + 60_000,
        )
        .await
        .unwrap();
    assert_eq!(
        after_lapse.len(),
        7,
        "the lapsed claims go to the new instance"
    );
    store.close().await;
    schema.drop().await;
}

/// A daemon syncs into SQLite against the simulators and stops; the ledger is copied into PostgreSQL by
/// the binary; a second instance on PostgreSQL goes on from the same cursor: ten dossiers changed at
/// the source reach the portal, and nothing the portal already accepted is sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_instance_continues_from_the_copied_ledger() {
    let Some(schema) = common::postgres_schema().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("tthc-sync.db");
    let simulators = CancellationToken::new();
    let (source, source_address) = tthc_sync::commands::demo::Demo::serve_source(
        common::source_config(300, 6, 21, FaultLevel::None),
        &simulators,
    )
    .await
    .unwrap();
    let (portal, portal_address) = tthc_sync::commands::demo::Demo::serve_portal(
        common::portal_config(21, FaultLevel::None),
        &simulators,
    )
    .await
    .unwrap();
    let settings = Settings::from_toml(&demo_settings(
        &format!("http://{source_address}"),
        &format!("http://{portal_address}"),
        &database,
    ))
    .unwrap();

    // The first instance, on SQLite, until the backlog is through.
    let first = Arc::new(App::build(settings.clone()).await.unwrap());
    let first_shutdown = CancellationToken::new();
    let first_running = tokio::spawn(first.clone().run(first_shutdown.clone()));
    let accepted = wait_until_drained(first.store.as_ref(), || true).await;
    assert!(accepted > 100, "only {accepted} dossiers accepted");
    first_shutdown.cancel();
    first_running.await.unwrap().unwrap();
    let cursor = first
        .store
        .cursor(tthc_sync::sync::ingest::FEED_CURSOR)
        .await
        .unwrap();
    let accepted_ids: Vec<(String, String)> = sqlx::query_as(
        "SELECT source_id, dossier_code FROM dossiers WHERE state = 'accepted' ORDER BY source_id LIMIT 10",
    )
    .fetch_all(&read_only(&database).await)
    .await
    .unwrap();
    first.store.close().await;
    assert!(cursor.is_some(), "the first instance moved its cursor");

    let (ok, stdout, stderr) = common::run_binary(&[
        "store",
        "copy",
        "--from",
        &database.display().to_string(),
        "--to",
        &schema.url(),
        "--lang",
        "en",
    ])
    .await;
    assert!(ok, "the copy succeeds: {stderr}");
    assert!(stdout.contains("Verified"), "{stdout}");

    let stored_before: HashMap<String, usize> = portal
        .stored()
        .into_iter()
        .map(|(code, stored)| (code, stored.times_stored))
        .collect();
    let ids: Vec<String> = accepted_ids.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(source.mutate_ids(&ids).len(), 10);

    // The second instance, on the PostgreSQL copy, under another name.
    let mut second_settings = settings.clone();
    second_settings.store.url = Some(schema.url());
    second_settings.store.instance = "second".into();
    let second = Arc::new(App::build(second_settings).await.unwrap());
    assert_eq!(
        second
            .store
            .cursor(tthc_sync::sync::ingest::FEED_CURSOR)
            .await
            .unwrap(),
        cursor,
        "the same cursor"
    );
    let second_shutdown = CancellationToken::new();
    let second_running = tokio::spawn(second.clone().run(second_shutdown.clone()));
    let changed: Vec<&String> = accepted_ids.iter().map(|(_, code)| code).collect();
    wait_until_drained(second.store.as_ref(), || {
        let stored = portal.stored();
        changed.iter().all(|code| {
            stored.get(*code).map(|dossier| dossier.times_stored)
                == stored_before.get(*code).map(|times| times + 1)
        })
    })
    .await;
    second_shutdown.cancel();
    second_running.await.unwrap().unwrap();
    second.store.close().await;
    simulators.cancel();

    let sent_again: Vec<String> = portal
        .stored()
        .into_iter()
        .filter(|(code, stored)| {
            !changed.contains(&code)
                && stored_before
                    .get(code)
                    .is_some_and(|before| *before != stored.times_stored)
        })
        .map(|(code, _)| code)
        .collect();
    assert_eq!(
        sent_again,
        Vec::<String>::new(),
        "accepted dossiers sent again"
    );
    schema.drop().await;
}

/// Waits until nothing is outstanding and `also` holds; returns the dossiers accepted.
async fn wait_until_drained(store: &dyn Store, mut also: impl FnMut() -> bool) -> i64 {
    let started = std::time::Instant::now();
    loop {
        let counts = store.counts().await.unwrap();
        if counts.total() > 0 && counts.outstanding() == 0 && also() {
            return counts.get(DossierState::Accepted);
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the backlog did not drain: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn read_only(path: &std::path::Path) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true);
    sqlx::SqlitePool::connect_with(options).await.unwrap()
}
