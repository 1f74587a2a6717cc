//! Retention on a synced ledger: a pass as of 200 days from now clears the personal fields of every
//! finished dossier the portal accepted (no source record, a payload with no personal value, no sent
//! progress payload), leaves the others as they were, keeps every ledger row, and a second pass finds
//! nothing left to do.

use crate::common;

use std::time::Duration;

use sqlx::Row;
use tthc_sync::sim::FaultLevel;

use common::leak::PersonalData;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retention_pass_clears_finished_accepted_dossiers_and_nothing_else() {
    let mut source = common::source_config(400, 6, 41, FaultLevel::None);
    source.live_mutation = false;
    let (dir, demo) =
        common::start(source, common::portal_config(41, FaultLevel::None), |_| {}).await;
    common::synced(&demo, Duration::from_secs(120)).await;

    let records: Vec<serde_json::Value> = demo
        .source
        .snapshot()
        .into_iter()
        .map(|row| row.record)
        .collect();
    let mut personal = PersonalData::from_source(&records);
    let stored: Vec<serde_json::Value> = demo
        .portal
        .stored()
        .into_values()
        .map(|stored| stored.dossier)
        .collect();
    personal.add_portal(&stored);

    let database = dir.path().join("tthc-sync.db");
    let pool = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new()
            .filename(&database)
            .read_only(true),
    )
    .await
    .unwrap();
    let rows_before: i64 = sqlx::query_scalar("SELECT count(*) FROM dossiers")
        .fetch_one(&pool)
        .await
        .unwrap();
    let due: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dossiers d JOIN dossier_bodies b ON b.source_id = d.source_id \
         WHERE d.state = 'accepted' AND json_extract(b.payload, '$.TrangThaiHoSo') IN ('9', '10')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(due > 20, "only {due} finished accepted dossiers");

    // Nothing is old enough today; 200 days from now, every finished accepted dossier is.
    let now = jiff::Timestamp::now().as_millisecond();
    assert_eq!(demo.app.apply_retention(now).await.unwrap(), 0);
    let later = now + 200 * 86_400_000;
    let redacted = demo.app.apply_retention(later).await.unwrap();
    assert_eq!(redacted as i64, due);
    assert_eq!(demo.app.apply_retention(later).await.unwrap(), 0);

    let bodies = sqlx::query(
        "SELECT b.raw, b.payload FROM dossier_bodies b WHERE b.redacted_at IS NOT NULL",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(bodies.len() as i64, due);
    let mut text = String::new();
    for body in &bodies {
        assert_eq!(body.get::<String, _>(0), "", "the source record is dropped");
        text.push_str(&body.get::<String, _>(1));
        text.push('\n');
    }
    assert!(text.contains("\"TrangThaiHoSo\""));
    personal.assert_absent("redacted payloads", &text);
    let sent_progress: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM progress p JOIN dossier_bodies b ON b.source_id = p.source_id \
         WHERE b.redacted_at IS NOT NULL AND p.payload <> ''",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(sent_progress, 0, "progress payloads of redacted dossiers");
    let still_personal: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM dossier_bodies WHERE redacted_at IS NULL AND raw <> ''",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        still_personal,
        rows_before - due,
        "the others keep their records"
    );
    let rows_after: i64 = sqlx::query_scalar("SELECT count(*) FROM dossiers")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows_after, rows_before, "every ledger row stays");
    pool.close().await;
    demo.shutdown.cancel();
}
