//! The SQLite ledger against a real file: ingest, claims and leases, guarded results, permissions.

use std::os::unix::fs::PermissionsExt;

use tthc_sync::store::sqlite::SqliteStore;
use tthc_sync::store::{DeliveryOutcome, DeliveryResult, IngestRow, Store};
use tthc_sync::sync::decide::{DossierState, IngestAction};

fn row(id: &str, raw_hash: &str, payload_hash: &str, action: IngestAction) -> IngestRow {
    IngestRow {
        source_id: id.into(),
        dossier_code: Some(format!("000.00.31.H60-240115-{id}")),
        raw: format!("{{\"id\":\"{id}\"}}"),
        raw_hash: raw_hash.into(),
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
        action,
        progress: vec![("k1".into(), "{}".into(), "ph1".into())],
    }
}

async fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("ledger/tthc.db"))
        .await
        .unwrap();
    (dir, store)
}

#[tokio::test]
async fn the_database_file_is_readable_by_its_owner_only() {
    let (dir, _store) = open().await;
    let mode = std::fs::metadata(dir.path().join("ledger/tthc.db"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata(dir.path().join("ledger"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o077, 0);
}

#[tokio::test]
async fn ingest_moves_the_cursor_with_the_page() {
    let (_dir, store) = open().await;
    let rows = vec![
        row("a", "r1", "p1", IngestAction::Set(DossierState::Pending)),
        row("b", "r1", "p1", IngestAction::Set(DossierState::Pending)),
    ];
    store
        .ingest(&rows, Some(("feed", "123")), 10)
        .await
        .unwrap();
    assert_eq!(store.cursor("feed").await.unwrap().as_deref(), Some("123"));
    let views = store.ledger_views(&["a".into(), "c".into()]).await.unwrap();
    assert_eq!(views.len(), 1);
    assert_eq!(views["a"].state, DossierState::Pending);
    assert_eq!(store.counts().await.unwrap().get(DossierState::Pending), 2);
}

#[tokio::test]
async fn claims_are_exclusive_until_released_or_expired() {
    let (_dir, store) = open().await;
    let rows: Vec<IngestRow> = (0..5)
        .map(|index| {
            row(
                &format!("d{index}"),
                "r1",
                "p1",
                IngestAction::Set(DossierState::Pending),
            )
        })
        .collect();
    store.ingest(&rows, None, 10).await.unwrap();
    let first = store.claim_dossiers("one", 3, 20, 1_000).await.unwrap();
    let second = store.claim_dossiers("two", 10, 20, 1_000).await.unwrap();
    assert_eq!(first.len(), 3);
    assert_eq!(second.len(), 2);
    assert!(
        store
            .claim_dossiers("three", 10, 20, 1_000)
            .await
            .unwrap()
            .is_empty()
    );
    // Expired leases come back to the pool.
    assert_eq!(
        store
            .claim_dossiers("three", 10, 2_000, 3_000)
            .await
            .unwrap()
            .len(),
        5
    );
    // A restarted owner takes back its claims at once.
    assert_eq!(store.release_claims("three").await.unwrap(), 5);
    assert_eq!(
        store
            .claim_dossiers("four", 10, 2_001, 3_000)
            .await
            .unwrap()
            .len(),
        5
    );
}

#[tokio::test]
async fn a_result_for_an_outdated_payload_does_not_mark_the_new_one_accepted() {
    let (_dir, store) = open().await;
    store
        .ingest(
            &[row(
                "a",
                "r1",
                "p1",
                IngestAction::Set(DossierState::Pending),
            )],
            None,
            10,
        )
        .await
        .unwrap();
    let claimed = store.claim_dossiers("me", 10, 20, 1_000).await.unwrap();
    assert_eq!(claimed.len(), 1);
    // A new version arrives while the old one is in flight.
    store
        .ingest(
            &[row(
                "a",
                "r2",
                "p2",
                IngestAction::Set(DossierState::Pending),
            )],
            None,
            30,
        )
        .await
        .unwrap();
    let result = DeliveryResult {
        source_id: "a".into(),
        payload_hash: "p1".into(),
        outcome: DeliveryOutcome::Accepted,
    };
    store
        .record_deliveries("me", &[result], 40, 1_000)
        .await
        .unwrap();
    let view = &store.ledger_views(&["a".into()]).await.unwrap()["a"];
    assert_eq!(
        view.state,
        DossierState::Pending,
        "the new payload still has to be sent"
    );
    assert_eq!(view.accepted_hash.as_deref(), Some("p1"));
    // It is sent as an update, since the portal has a version.
    let again = store.claim_dossiers("me", 10, 50, 1_000).await.unwrap();
    assert!(again[0].portal_has);
    assert_eq!(again[0].payload_hash, "p2");
}

#[tokio::test]
async fn refusals_and_retries_are_recorded_with_their_reason() {
    let (_dir, store) = open().await;
    let rows = vec![
        row("a", "r1", "p1", IngestAction::Set(DossierState::Pending)),
        row("b", "r1", "p1", IngestAction::Set(DossierState::Pending)),
    ];
    store.ingest(&rows, None, 10).await.unwrap();
    store.claim_dossiers("me", 10, 20, 1_000).await.unwrap();
    let results = vec![
        DeliveryResult {
            source_id: "a".into(),
            payload_hash: "p1".into(),
            outcome: DeliveryOutcome::Refused {
                code: 5,
                message: "Mã đơn vị không tồn tại".into(),
            },
        },
        DeliveryResult {
            source_id: "b".into(),
            payload_hash: "p1".into(),
            outcome: DeliveryOutcome::Retry {
                error: "HTTP 503".into(),
                next_attempt_at: 5_000,
            },
        },
    ];
    store
        .record_deliveries("me", &results, 30, 1_000)
        .await
        .unwrap();
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.get(DossierState::Refused), 1);
    assert_eq!(counts.get(DossierState::Pending), 1);
    assert!(
        counts
            .by_reason
            .iter()
            .any(|(state, reason, count)| *state == DossierState::Refused
                && reason == "portal_5"
                && *count == 1)
    );
    // Not due before its next attempt time.
    assert!(
        store
            .claim_dossiers("me", 10, 4_000, 9_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .claim_dossiers("me", 10, 5_000, 9_000)
            .await
            .unwrap()
            .len(),
        1
    );
    // Refused dossiers and the progress entries of dossiers the portal lacks are never due; the claim is.
    assert_eq!(store.next_due().await.unwrap(), Some(9_000));
}

#[tokio::test]
async fn progress_waits_for_its_dossier_to_reach_the_portal() {
    let (_dir, store) = open().await;
    store
        .ingest(
            &[row(
                "a",
                "r1",
                "p1",
                IngestAction::Set(DossierState::Pending),
            )],
            None,
            10,
        )
        .await
        .unwrap();
    assert!(
        store
            .claim_progress("me", 10, 20, 1_000)
            .await
            .unwrap()
            .is_empty()
    );
    store.claim_dossiers("me", 10, 20, 1_000).await.unwrap();
    let accepted = DeliveryResult {
        source_id: "a".into(),
        payload_hash: "p1".into(),
        outcome: DeliveryOutcome::Accepted,
    };
    // The entries that waited for the dossier come back claimed with its acceptance.
    let released = store
        .record_deliveries("me", &[accepted], 30, 1_000)
        .await
        .unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].source_id, "a");
    // They are leased: no other worker claims them meanwhile; a lapsed lease frees them.
    assert!(
        store
            .claim_progress("other", 10, 40, 1_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .claim_progress("other", 10, 2_000, 3_000)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn sent_progress_is_not_sent_again_until_it_changes() {
    use tthc_sync::store::ProgressResult;
    let (_dir, store) = open().await;
    store
        .ingest(
            &[row(
                "a",
                "r1",
                "p1",
                IngestAction::Set(DossierState::Pending),
            )],
            None,
            10,
        )
        .await
        .unwrap();
    store.claim_dossiers("me", 10, 20, 1_000).await.unwrap();
    let accepted = DeliveryResult {
        source_id: "a".into(),
        payload_hash: "p1".into(),
        outcome: DeliveryOutcome::Accepted,
    };
    let claimed = store
        .record_deliveries("me", &[accepted], 30, 1_000)
        .await
        .unwrap();
    let result = ProgressResult {
        source_id: "a".into(),
        entry_key: claimed[0].entry_key.clone(),
        payload_hash: claimed[0].payload_hash.clone(),
        outcome: DeliveryOutcome::Accepted,
    };
    store.record_progress("me", &[result], 50).await.unwrap();
    assert!(
        store
            .claim_progress("me", 10, 60, 1_000)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.counts().await.unwrap().progress_unsent, 0);
    // The same entry again (a re-read) stays sent; a changed one is sent again.
    store
        .ingest(&[row("a", "r2", "p1", IngestAction::KeepState)], None, 70)
        .await
        .unwrap();
    assert!(
        store
            .claim_progress("me", 10, 80, 1_000)
            .await
            .unwrap()
            .is_empty()
    );
    let mut changed = row("a", "r3", "p1", IngestAction::KeepState);
    changed.progress = vec![("k1".into(), "{\"x\":1}".into(), "ph2".into())];
    store.ingest(&[changed], None, 90).await.unwrap();
    assert_eq!(
        store
            .claim_progress("me", 10, 100, 1_000)
            .await
            .unwrap()
            .len(),
        1
    );
}
