//! Both ledgers against a real database: ingest, claims and leases, guarded results, the polling lease.
//! Every shared test runs on a SQLite file and on PostgreSQL (in a schema of its own, when
//! `TTHC_SYNC_TEST_POSTGRES_URL` names a server); then what only one of them has: SQLite's file
//! permissions, PostgreSQL's instances claiming at once.

use crate::common;

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use tthc_sync::decide::{DossierState, IngestAction};
use tthc_sync::store::postgres::PostgresStore;
use tthc_sync::store::prelude::*;
use tthc_sync::store::sqlite::SqliteStore;
use tthc_sync::store::{
    DeliveryOutcome, DeliveryResult, IngestRow, PAYLOADS_PER_PAGE, PayloadRow, ProgressEntryRow,
    Store, VersionKind,
};

/// Each shared test, once on each store.
macro_rules! on_both_stores {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $test() {
                    let (_dir, store) = super::open().await;
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

on_both_stores!(
    ingest_moves_the_cursor_with_the_page,
    claims_are_exclusive_until_released_or_expired,
    a_result_for_an_outdated_payload_does_not_mark_the_new_one_accepted,
    refusals_and_retries_are_recorded_with_their_reason,
    progress_waits_for_its_dossier_to_reach_the_portal,
    progress_claims_keep_to_the_limit_the_due_time_and_the_leases,
    sent_progress_is_not_sent_again_until_it_changes,
    the_polling_lease_has_one_holder_until_it_lapses,
    held_records_come_in_pages_of_source_ids_with_their_records,
    operators_count_list_requeue_and_reconcile,
    dossiers_the_portal_lost_are_sent_again_with_their_progress,
    retention_clears_the_personal_fields_of_finished_accepted_dossiers,
    payload_pages_give_each_payload_of_the_period_once_in_order,
);

/// The reports read a period's payloads in pages (keyset on reception day and source id): every payload
/// of the period exactly once, in order, whatever the page size; none outside the period or the unit,
/// none of a dossier without a payload.
async fn payload_pages_give_each_payload_of_the_period_once_in_order(store: &dyn Store) {
    let pending = IngestAction::Set(DossierState::Pending);
    let mut rows = Vec::new();
    for (id, day, unit) in [
        ("e", "2024-01-14", "000.00.31.H60"),
        ("a", "2024-01-15", "000.00.31.H60"),
        ("c", "2024-01-15", "000.00.32.H60"),
        ("b", "2024-01-15", "000.00.31.H60"),
        ("f", "2024-01-16", "000.00.32.H60"),
        ("g", "2024-02-01", "000.00.31.H60"),
    ] {
        let mut row = row(id, "r1", "p1", pending);
        row.reception_day = Some(day.into());
        row.unit = Some(unit.into());
        rows.push(row);
    }
    let mut held = row("d", "r1", "p1", IngestAction::Set(DossierState::Held));
    held.payload = None;
    held.payload_hash = None;
    held.reason_code = Some("unmapped_unit".into());
    rows.push(held);
    store.ingest(&rows, None, 10).await.unwrap();

    let read = |unit: Option<&'static str>, limit: usize| async move {
        let mut ids = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .payloads_page("2024-01-01", "2024-01-31", unit, after.as_ref(), limit)
                .await
                .unwrap();
            assert!(page.len() <= limit);
            ids.extend(page.iter().map(|row| row.source_id.clone()));
            if page.len() < limit {
                return ids;
            }
            after = page.last().map(tthc_sync::store::PayloadRow::key);
        }
    };
    for limit in [1, 2, 3, 100] {
        assert_eq!(
            read(None, limit).await,
            ["e", "a", "b", "c", "f"],
            "{limit}"
        );
        assert_eq!(
            read(Some("000.00.31.H60"), limit).await,
            ["e", "a", "b"],
            "{limit}"
        );
    }
    let all = all_payloads(store, "2024-01-01", "2024-01-31").await;
    assert_eq!(all.len(), 5);
}

/// Retention: a finished dossier accepted before the cutoff loses its personal fields (and cannot be
/// re-sent from what is left); an unfinished or held one keeps them; a new record from the source brings
/// the dossier back to normal ingest, and the next pass clears it again.
async fn retention_clears_the_personal_fields_of_finished_accepted_dossiers(store: &dyn Store) {
    use tthc_sync::store::Redaction;
    let with_status = |id: &str, raw_hash: &str, status: &str, action: IngestAction| {
        let mut row = row(id, raw_hash, "p1", action);
        row.payload = Some(format!(
            "{{\"MaHoSo\":\"{id}\",\"ChuHoSo\":\"Nguyễn Văn An\",\"SoDienThoai\":\"0912345678\",\
             \"TrangThaiHoSo\":\"{status}\",\"DonViXuLy\":\"000.00.31.H60\"}}"
        ));
        row
    };
    let pending = IngestAction::Set(DossierState::Pending);
    store
        .ingest(
            &[
                with_status("a", "r1", "10", pending),
                with_status("b", "r1", "4", pending),
                with_status("c", "r1", "9", IngestAction::Set(DossierState::Held)),
            ],
            None,
            10,
        )
        .await
        .unwrap();
    let claims = Claims::from(store.claim_dossiers("me", 10, 20, 1_000).await.unwrap());
    let accepted = |id: &str| DeliveryResult {
        claim: claims.of(id),
        source_id: id.into(),
        payload_hash: "p1".into(),
        outcome: DeliveryOutcome::Accepted,
    };
    let progress = deliver(store, &[accepted("a"), accepted("b")], 30).await;
    let sent: Vec<tthc_sync::store::ProgressResult> = progress
        .iter()
        .map(|entry| tthc_sync::store::ProgressResult {
            claim: entry.claim.clone(),
            source_id: entry.source_id.clone(),
            entry_key: entry.entry_key.clone(),
            payload_hash: entry.payload_hash.clone(),
            outcome: DeliveryOutcome::Accepted,
        })
        .collect();
    store.record_progress(&sent, &[], 40).await.unwrap();

    // Accepted at 30: not before 30, before 31; only the finished, accepted one.
    assert!(
        store
            .retention_candidates(30, "", 10)
            .await
            .unwrap()
            .is_empty()
    );
    let candidates = store.retention_candidates(31, "", 10).await.unwrap();
    let ids: Vec<&str> = candidates.iter().map(|c| c.source_id.as_str()).collect();
    assert_eq!(ids, ["a"]);
    assert!(candidates[0].payload.contains("Nguyễn"));
    assert!(
        store
            .retention_candidates(31, "a", 10)
            .await
            .unwrap()
            .is_empty()
    );

    let redaction = |raw_hash: &str| Redaction {
        source_id: "a".into(),
        raw_hash: raw_hash.into(),
        payload: tthc_sync::privacy::redact_payload(&candidates[0].payload),
    };
    // A record that changed since it was read is left alone.
    assert_eq!(store.redact(&[redaction("r0")], 50).await.unwrap(), 0);
    assert_eq!(store.redact(&[redaction("r1")], 50).await.unwrap(), 1);
    assert_eq!(store.redact(&[redaction("r1")], 60).await.unwrap(), 0);
    assert!(
        store
            .retention_candidates(31, "", 10)
            .await
            .unwrap()
            .is_empty()
    );

    let payloads = all_payloads(store, "2024-01-15", "2024-01-15").await;
    let payload_of = |payloads: &[(Option<String>, DossierState, String)], id: &str| {
        payloads
            .iter()
            .find(|(_, _, payload)| payload.contains(&format!("\"MaHoSo\":\"{id}\"")))
            .map(|(_, _, payload)| payload.clone())
            .unwrap()
    };
    let a = payload_of(&payloads, "a");
    assert!(!a.contains("Nguyễn") && !a.contains("0912345678"), "{a}");
    assert!(a.contains("\"TrangThaiHoSo\":\"10\""), "{a}");
    assert!(payload_of(&payloads, "b").contains("Nguyễn"));
    assert!(payload_of(&payloads, "c").contains("Nguyễn"));
    // The ledger row stays for reconciliation.
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.by_state.get(&DossierState::Accepted), Some(&2));

    // Nothing is left to send again: a redacted dossier the portal lost waits for a new record.
    assert_eq!(
        store
            .mark_missing_on_portal(&["a".into()], 70)
            .await
            .unwrap(),
        0
    );

    // A new record from the source is ingested as usual: its personal fields are back, and the next
    // pass clears them again.
    store
        .ingest(
            &[with_status("a", "r2", "10", IngestAction::KeepState)],
            None,
            80,
        )
        .await
        .unwrap();
    let payloads = all_payloads(store, "2024-01-15", "2024-01-15").await;
    assert!(payload_of(&payloads, "a").contains("Nguyễn"));
    let again = store.retention_candidates(31, "", 10).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].raw_hash, "r2");
}

async fn dossiers_the_portal_lost_are_sent_again_with_their_progress(store: &dyn Store) {
    let pending = IngestAction::Set(DossierState::Pending);
    store
        .ingest(
            &[row("a", "r1", "p1", pending), row("b", "r1", "p1", pending)],
            None,
            10,
        )
        .await
        .unwrap();
    let claims = Claims::from(store.claim_dossiers("me", 10, 20, 1_000).await.unwrap());
    let accepted = |id: &str| DeliveryResult {
        claim: claims.of(id),
        source_id: id.into(),
        payload_hash: "p1".into(),
        outcome: DeliveryOutcome::Accepted,
    };
    let progress = deliver(store, &[accepted("a"), accepted("b")], 30).await;
    assert_eq!(progress.len(), 2);
    let sent: Vec<tthc_sync::store::ProgressResult> = progress
        .iter()
        .map(|entry| tthc_sync::store::ProgressResult {
            claim: entry.claim.clone(),
            source_id: entry.source_id.clone(),
            entry_key: entry.entry_key.clone(),
            payload_hash: entry.payload_hash.clone(),
            outcome: DeliveryOutcome::Accepted,
        })
        .collect();
    store.record_progress(&sent, &[], 40).await.unwrap();

    let sample = store
        .accepted_sample("000.00.31.H60", "2024-01-15", "2024-01-15", 10)
        .await
        .unwrap();
    assert_eq!(sample.len(), 2);
    assert!(
        store
            .accepted_sample("000.00.31.H60", "2024-01-16", "2024-01-31", 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .accepted_sample("000.00.31.H60", "2024-01-15", "2024-01-15", 1)
            .await
            .unwrap()
            .len(),
        1
    );

    assert_eq!(
        store
            .mark_missing_on_portal(&["a".into()], 50)
            .await
            .unwrap(),
        1
    );
    // `a` goes again as a create (the portal no longer has it), then its progress entry after it.
    let claimed = store.claim_dossiers("me", 10, 60, 1_000).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].source_id, "a");
    assert!(!claimed[0].portal_has);
    assert!(
        store
            .claim_progress("me", 10, 60, 1_000)
            .await
            .unwrap()
            .is_empty()
    );
    let resent = DeliveryResult {
        claim: claimed[0].claim.clone(),
        ..accepted("a")
    };
    let again = deliver(store, &[resent], 70).await;
    assert_eq!(
        again.len(),
        1,
        "the progress entry follows its dossier again"
    );
    // An id that is not accepted is left alone.
    assert_eq!(
        store
            .mark_missing_on_portal(&["zzz".into()], 80)
            .await
            .unwrap(),
        0
    );
}

/// Every payload of the period (reception days `from` to `to`), read page by page as the reports read them.
async fn all_payloads(
    store: &dyn Store,
    from: &str,
    to: &str,
) -> Vec<(Option<String>, DossierState, String)> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .payloads_page(from, to, None, after.as_ref(), PAYLOADS_PER_PAGE)
            .await
            .unwrap();
        let last = page.len() < PAYLOADS_PER_PAGE;
        after = page.last().map(PayloadRow::key);
        all.extend(
            page.into_iter()
                .map(|row| (row.unit, row.state, row.payload)),
        );
        if last {
            return all;
        }
    }
}

fn row(id: &str, raw_hash: &str, payload_hash: &str, action: IngestAction) -> IngestRow {
    IngestRow {
        source_id: id.into(),
        dossier_code: Some(format!("000.00.31.H60-240115-{id}")),
        raw: format!("{{\"id\":\"{id}\"}}"),
        raw_hash: raw_hash.into(),
        // r1, r2, r3: successive versions.
        source_updated_at: raw_hash.trim_start_matches('r').parse().ok(),
        source_agency_id: Some("ag-1".into()),
        unit: Some("000.00.31.H60".into()),
        procedure_code: Some("1.004227".into()),
        reception_day: Some("2024-01-15".into()),
        payload: Some(format!("{{\"MaHoSo\":\"{id}\"}}")),
        payload_hash: Some(payload_hash.into()),
        reason_code: None,
        reason_detail: None,
        findings: "[]".into(),
        kind: match action {
            IngestAction::Set(DossierState::Held) => VersionKind::Held,
            IngestAction::Set(DossierState::Skipped) => VersionKind::Skipped,
            _ => VersionKind::Sendable,
        },
        renormalized: false,
        stamped_ahead: false,
        progress: vec![entry("{}", "ph1")],
    }
}

fn entry(payload: &str, hash: &str) -> ProgressEntryRow {
    ProgressEntryRow {
        key: "k1".into(),
        step_at: "20240116090000".into(),
        payload: payload.into(),
        hash: hash.into(),
    }
}

/// The claim ids of claimed dossiers, by source id.
struct Claims(std::collections::HashMap<String, String>);

impl Claims {
    fn of(&self, id: &str) -> String {
        self.0
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("no claim of {id}"))
    }
}

impl From<Vec<tthc_sync::store::ClaimedDossier>> for Claims {
    fn from(claimed: Vec<tthc_sync::store::ClaimedDossier>) -> Claims {
        Claims(
            claimed
                .into_iter()
                .map(|dossier| (dossier.source_id, dossier.claim))
                .collect(),
        )
    }
}

/// Records the answers, then claims (for `me`) the progress entries that became due with them: what the
/// pusher does next.
async fn deliver(
    store: &dyn Store,
    results: &[DeliveryResult],
    now: i64,
) -> Vec<tthc_sync::store::ClaimedProgress> {
    store.record_deliveries(results, &[], now).await.unwrap();
    store
        .claim_progress("me", 100, now, now + 1_000)
        .await
        .unwrap()
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
async fn a_new_ledger_file_has_pages_a_dossiers_body_fits_in() {
    let (_dir, store) = open().await;
    let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(page_size, i64::from(tthc_sync::store::sqlite::PAGE_SIZE));
    assert_eq!(page_size, 16384);
}

async fn ingest_moves_the_cursor_with_the_page(store: &dyn Store) {
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

async fn claims_are_exclusive_until_released_or_expired(store: &dyn Store) {
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
    assert_eq!(store.release_claims("three", 2_000).await.unwrap(), 5);
    assert_eq!(
        store
            .claim_dossiers("four", 10, 2_001, 3_000)
            .await
            .unwrap()
            .len(),
        5
    );
}

async fn a_result_for_an_outdated_payload_does_not_mark_the_new_one_accepted(store: &dyn Store) {
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
    let claims = Claims::from(store.claim_dossiers("me", 10, 20, 1_000).await.unwrap());
    assert_eq!(claims.0.len(), 1);
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
        claim: claims.of("a"),
        source_id: "a".into(),
        payload_hash: "p1".into(),
        outcome: DeliveryOutcome::Accepted,
    };
    deliver(store, &[result], 40).await;
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

async fn refusals_and_retries_are_recorded_with_their_reason(store: &dyn Store) {
    let rows = vec![
        row("a", "r1", "p1", IngestAction::Set(DossierState::Pending)),
        row("b", "r1", "p1", IngestAction::Set(DossierState::Pending)),
    ];
    store.ingest(&rows, None, 10).await.unwrap();
    let claims = Claims::from(store.claim_dossiers("me", 10, 20, 1_000).await.unwrap());
    let results = vec![
        DeliveryResult {
            claim: claims.of("a"),
            source_id: "a".into(),
            payload_hash: "p1".into(),
            outcome: DeliveryOutcome::Refused {
                code: 5,
                message: "Mã đơn vị không tồn tại".into(),
            },
        },
        DeliveryResult {
            claim: claims.of("b"),
            source_id: "b".into(),
            payload_hash: "p1".into(),
            outcome: DeliveryOutcome::Retry {
                error: "HTTP 503".into(),
                next_attempt_at: 5_000,
                maybe_stored: true,
            },
        },
    ];
    deliver(store, &results, 30).await;
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

async fn progress_waits_for_its_dossier_to_reach_the_portal(store: &dyn Store) {
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
    let claims = Claims::from(store.claim_dossiers("me", 10, 20, 1_000).await.unwrap());
    let accepted = DeliveryResult {
        claim: claims.of("a"),
        source_id: "a".into(),
        payload_hash: "p1".into(),
        outcome: DeliveryOutcome::Accepted,
    };
    // The entries that waited for the dossier come back claimed with its acceptance.
    let released = deliver(store, &[accepted], 30).await;
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

/// A progress claim (one statement for entries without a flight, `decide` for the rest): at most `limit`
/// entries, each with its payload; none in flight twice; none before its retry time; a lapsed lease's
/// entry claimed again.
async fn progress_claims_keep_to_the_limit_the_due_time_and_the_leases(store: &dyn Store) {
    use tthc_sync::store::ProgressResult;
    let ids = ["a", "b", "c"];
    let rows: Vec<IngestRow> = ids
        .iter()
        .map(|id| row(id, "r1", "p1", IngestAction::Set(DossierState::Pending)))
        .collect();
    store.ingest(&rows, None, 10).await.unwrap();
    let claims = Claims::from(store.claim_dossiers("me", 10, 20, 1_000).await.unwrap());
    let accepted: Vec<DeliveryResult> = ids
        .iter()
        .map(|id| DeliveryResult {
            claim: claims.of(id),
            source_id: (*id).into(),
            payload_hash: "p1".into(),
            outcome: DeliveryOutcome::Accepted,
        })
        .collect();
    store.record_deliveries(&accepted, &[], 30).await.unwrap();
    let first = store.claim_progress("me", 2, 40, 1_000).await.unwrap();
    assert_eq!(first.len(), 2);
    assert!(
        first
            .iter()
            .all(|entry| entry.payload == "{}" && entry.payload_hash == "ph1")
    );
    let second = store.claim_progress("other", 10, 50, 1_000).await.unwrap();
    assert_eq!(second.len(), 1);
    let mut seen: HashSet<&str> = first.iter().map(|entry| entry.source_id.as_str()).collect();
    assert!(seen.insert(second[0].source_id.as_str()), "claimed twice");
    assert!(
        store
            .claim_progress("third", 10, 60, 1_000)
            .await
            .unwrap()
            .is_empty()
    );
    // One answer puts its entry off until 5,000; the other two leases lapse at 1,000.
    let put_off = &second[0];
    store
        .record_progress(
            &[ProgressResult {
                claim: put_off.claim.clone(),
                source_id: put_off.source_id.clone(),
                entry_key: put_off.entry_key.clone(),
                payload_hash: put_off.payload_hash.clone(),
                outcome: DeliveryOutcome::Retry {
                    error: "timeout".into(),
                    next_attempt_at: 5_000,
                    maybe_stored: false,
                },
            }],
            &[],
            70,
        )
        .await
        .unwrap();
    assert!(
        store
            .claim_progress("third", 10, 100, 1_000)
            .await
            .unwrap()
            .is_empty()
    );
    let lapsed = store
        .claim_progress("late", 10, 2_000, 9_000)
        .await
        .unwrap();
    let lapsed_ids: HashSet<&str> = lapsed
        .iter()
        .map(|entry| entry.source_id.as_str())
        .collect();
    let first_ids: HashSet<&str> = first.iter().map(|entry| entry.source_id.as_str()).collect();
    assert_eq!(lapsed_ids, first_ids);
    let due = store
        .claim_progress("late", 10, 5_000, 6_000)
        .await
        .unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].source_id, put_off.source_id);
    assert_eq!(due[0].payload, "{}");
}

async fn sent_progress_is_not_sent_again_until_it_changes(store: &dyn Store) {
    use tthc_sync::store::ProgressResult;
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
    let claims = Claims::from(store.claim_dossiers("me", 10, 20, 1_000).await.unwrap());
    let accepted = DeliveryResult {
        claim: claims.of("a"),
        source_id: "a".into(),
        payload_hash: "p1".into(),
        outcome: DeliveryOutcome::Accepted,
    };
    let claimed = deliver(store, &[accepted], 30).await;
    let result = ProgressResult {
        claim: claimed[0].claim.clone(),
        source_id: "a".into(),
        entry_key: claimed[0].entry_key.clone(),
        payload_hash: claimed[0].payload_hash.clone(),
        outcome: DeliveryOutcome::Accepted,
    };
    store.record_progress(&[result], &[], 50).await.unwrap();
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
    changed.progress = vec![entry("{\"x\":1}", "ph2")];
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

async fn the_polling_lease_has_one_holder_until_it_lapses(store: &dyn Store) {
    assert!(store.try_lead("poll", "one", 10, 1_000).await.unwrap());
    assert!(!store.try_lead("poll", "two", 20, 1_020).await.unwrap());
    // Its holder renews it, and the renewed lease holds the others off as long.
    assert!(store.try_lead("poll", "one", 500, 1_500).await.unwrap());
    assert!(!store.try_lead("poll", "two", 1_200, 2_200).await.unwrap());
    // A lapsed lease goes to the next one who asks, and the former holder is refused in turn.
    assert!(store.try_lead("poll", "two", 1_500, 2_500).await.unwrap());
    assert!(!store.try_lead("poll", "one", 1_600, 2_600).await.unwrap());
    // Roles are leased apart.
    assert!(store.try_lead("other", "one", 1_600, 2_600).await.unwrap());
    // A holder that stops gives its lease back by ending it now: the next one who asks gets it at once.
    assert!(store.try_lead("poll", "two", 1_700, 1_700).await.unwrap());
    assert!(store.try_lead("poll", "one", 1_700, 2_700).await.unwrap());
}

async fn held_records_come_in_pages_of_source_ids_with_their_records(store: &dyn Store) {
    let mut rows: Vec<IngestRow> = ["h3", "h1", "h2"]
        .into_iter()
        .map(|id| {
            let mut held = row(id, "r1", "p1", IngestAction::Set(DossierState::Held));
            held.payload = None;
            held.payload_hash = None;
            held.reason_code = Some("unmapped_unit".into());
            held
        })
        .collect();
    rows.push(row(
        "a",
        "r1",
        "p1",
        IngestAction::Set(DossierState::Pending),
    ));
    store.ingest(&rows, None, 10).await.unwrap();
    let first = store.held_records("", 2).await.unwrap();
    let ids: Vec<&str> = first.iter().map(|held| held.source_id.as_str()).collect();
    assert_eq!(ids, ["h1", "h2"]);
    assert_eq!(first[0].raw, "{\"id\":\"h1\"}");
    assert_eq!(first[0].reason_code.as_deref(), Some("unmapped_unit"));
    assert_eq!(first[0].view.state, DossierState::Held);
    let rest = store.held_records("h2", 2).await.unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].source_id, "h3");
    assert!(store.held_records("h3", 2).await.unwrap().is_empty());
    // Setting a named value outside a page is seen by `cursor`.
    store.set_cursor("fingerprint", "abc", 20).await.unwrap();
    assert_eq!(
        store.cursor("fingerprint").await.unwrap().as_deref(),
        Some("abc")
    );
}

async fn operators_count_list_requeue_and_reconcile(store: &dyn Store) {
    use tthc_sync::store::{DossierFilter, RENORMALIZE_REQUESTED, ReconciliationRecord, UnitScope};
    let pending = IngestAction::Set(DossierState::Pending);
    let mut held = row("b", "r1", "p1", IngestAction::Set(DossierState::Held));
    held.payload = None;
    held.payload_hash = None;
    held.reason_code = Some("unmapped_unit".into());
    let mut undated = row("d", "r1", "p1", pending);
    undated.reception_day = None;
    let rows = vec![
        row("a", "r1", "p1", pending),
        held,
        row("c", "r1", "p1", pending),
        undated,
    ];
    store.ingest(&rows, None, 10).await.unwrap();
    let claims = Claims::from(store.claim_dossiers("me", 10, 20, 1_000).await.unwrap());
    assert_eq!(claims.0.len(), 3);
    let answer = |id: &str, outcome| DeliveryResult {
        claim: claims.of(id),
        source_id: id.into(),
        payload_hash: "p1".into(),
        outcome,
    };
    let results = [
        answer(
            "a",
            DeliveryOutcome::Refused {
                code: 5,
                message: "Mã đơn vị không tồn tại".into(),
            },
        ),
        answer(
            "c",
            DeliveryOutcome::Retry {
                error: "HTTP 503".into(),
                next_attempt_at: 5_000,
                maybe_stored: true,
            },
        ),
        answer("d", DeliveryOutcome::Accepted),
    ];
    deliver(store, &results, 30).await;

    // One bucket per (unit, agency, day, state, reason); the undated record is counted too.
    let mut buckets = store
        .ledger_buckets("2024-01-01", "2024-01-31", None)
        .await
        .unwrap();
    buckets.sort_by_key(|bucket| (bucket.day.clone(), bucket.state.as_str()));
    let summary: Vec<_> = buckets
        .iter()
        .map(|bucket| {
            (
                bucket.day.as_deref(),
                bucket.state,
                bucket.reason_code.as_deref(),
                bucket.count,
                bucket.oldest_unsent_at,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (None, DossierState::Accepted, None, 1, None),
            (
                Some("2024-01-15"),
                DossierState::Held,
                Some("unmapped_unit"),
                1,
                Some(10)
            ),
            (Some("2024-01-15"), DossierState::Pending, None, 1, Some(10)),
            (
                Some("2024-01-15"),
                DossierState::Refused,
                Some("portal_5"),
                1,
                Some(10)
            ),
        ]
    );
    assert!(
        store
            .ledger_buckets("2024-01-01", "2024-01-31", Some("000.00.99.H60"))
            .await
            .unwrap()
            .is_empty()
    );
    let mut ids = store.ledger_ids("ag-1", "2024-01-15").await.unwrap();
    ids.sort();
    assert_eq!(ids, ["a", "b", "c"]);

    let failures = store.failures(&DossierFilter::default(), 10).await.unwrap();
    let listed: Vec<(&str, DossierState, i64)> = failures
        .iter()
        .map(|failure| (failure.source_id.as_str(), failure.state, failure.attempts))
        .collect();
    assert_eq!(
        listed,
        [
            ("a", DossierState::Refused, 1),
            ("b", DossierState::Held, 0)
        ]
    );
    let only_held = DossierFilter {
        reasons: Some(vec!["unmapped_unit".into()]),
        ..DossierFilter::default()
    };
    assert_eq!(store.failures(&only_held, 10).await.unwrap().len(), 1);

    let payloads = all_payloads(store, "2024-01-01", "2024-01-31").await;
    assert_eq!(
        payloads.len(),
        2,
        "a and c have a payload and a reception day"
    );

    // `retry`: the refused one and the one waiting out a back-off are due now; the held one is marked
    // for the daemon to normalize again.
    let requeued = store.requeue(&DossierFilter::default(), 100).await.unwrap();
    assert_eq!(
        (requeued.refused, requeued.pending, requeued.held),
        (1, 1, 1)
    );
    assert_eq!(
        store
            .cursor(RENORMALIZE_REQUESTED)
            .await
            .unwrap()
            .as_deref(),
        Some("100")
    );
    assert_eq!(
        store
            .claim_dossiers("me", 10, 100, 1_000)
            .await
            .unwrap()
            .len(),
        2
    );

    let line = |run: &str, unit: &str, started_at, complete| ReconciliationRecord {
        run_id: run.into(),
        unit: unit.into(),
        started_at,
        from_day: "2024-01-01".into(),
        to_day: "2024-01-31".into(),
        source_count: Some(3),
        ledger_count: 3,
        accepted: 1,
        portal_count: None,
        missing: 0,
        complete,
        summary: "{}".into(),
    };
    store
        .record_reconciliation(&[line("r1", "U1", 1, false), line("r1", "U2", 1, false)])
        .await
        .unwrap();
    store
        .record_reconciliation(&[line("r2", "U1", 2, false)])
        .await
        .unwrap();
    // A line stored again for the same run and unit replaces the earlier one.
    store
        .record_reconciliation(&[line("r2", "U1", 2, true)])
        .await
        .unwrap();
    let latest = store.latest_reconciliation().await.unwrap();
    assert_eq!(
        latest,
        [line("r2", "U1", 2, true), line("r1", "U2", 1, false)]
    );

    // A unit key's scope: its unit code, or no unit and an agency it owns, or neither ("a" was queued
    // again by the retry above, so it is no longer listed).
    let held_without = |id: &str, agency: Option<&str>, reason: &str| {
        let mut held = row(id, "r1", "p1", IngestAction::Set(DossierState::Held));
        held.unit = None;
        held.source_agency_id = agency.map(str::to_owned);
        held.payload = None;
        held.payload_hash = None;
        held.reason_code = Some(reason.into());
        held
    };
    store
        .ingest(
            &[
                held_without("m1", Some("ag-1"), "malformed_record"),
                held_without("m2", Some("ag-9"), "unmapped_unit"),
                held_without("m3", None, "malformed_record"),
            ],
            None,
            40,
        )
        .await
        .unwrap();
    let listed = |scope: UnitScope, reasons: Option<Vec<&str>>| {
        let filter = DossierFilter {
            unit: Some(scope),
            reasons: reasons.map(|codes| codes.into_iter().map(str::to_owned).collect()),
            ..DossierFilter::default()
        };
        async move {
            let mut ids: Vec<String> = store
                .failures(&filter, 10)
                .await
                .unwrap()
                .into_iter()
                .map(|failure| failure.source_id)
                .collect();
            ids.sort();
            ids
        }
    };
    let scope = |units: &[&str], agencies: &[&str], without_agency| UnitScope {
        units: units.iter().map(|unit| (*unit).to_owned()).collect(),
        agencies_without_unit: agencies.iter().map(|agency| (*agency).to_owned()).collect(),
        without_agency,
    };
    assert_eq!(
        listed(scope(&["000.00.31.H60"], &["ag-1"], false), None).await,
        ["b", "m1"]
    );
    assert_eq!(listed(scope(&[], &["ag-9"], false), None).await, ["m2"]);
    assert_eq!(listed(scope(&[], &[], true), None).await, ["m3"]);
    assert!(
        listed(scope(&["000.00.99.H60"], &[], false), None)
            .await
            .is_empty()
    );
    assert_eq!(
        listed(
            scope(&["000.00.31.H60"], &["ag-1", "ag-9"], true),
            Some(vec!["malformed_record"])
        )
        .await,
        ["m1", "m3"]
    );
    assert!(
        listed(scope(&["000.00.31.H60"], &[], true), Some(vec![]))
            .await
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_postgres_instances_claiming_at_once_never_take_the_same_dossier() {
    let Some(schema) = common::postgres_schema().await else {
        return;
    };
    let instances = [
        ("one", Arc::new(schema.store().await)),
        ("two", Arc::new(schema.store().await)),
    ];
    let rows: Vec<IngestRow> = (0..2_000)
        .map(|index| {
            row(
                &format!("d{index:04}"),
                "r1",
                "p1",
                IngestAction::Set(DossierState::Pending),
            )
        })
        .collect();
    instances[0].1.ingest(&rows, None, 10).await.unwrap();

    // Three workers per instance, started together, claim small batches until nothing is left.
    let start = Arc::new(tokio::sync::Barrier::new(6));
    let mut workers = Vec::new();
    for (owner, store) in &instances {
        for _ in 0..3 {
            let (owner, store, start) = (*owner, store.clone(), start.clone());
            workers.push(tokio::spawn(async move {
                start.wait().await;
                let mut claimed = Vec::new();
                loop {
                    let batch = store.claim_dossiers(owner, 20, 20, 100_000).await.unwrap();
                    if batch.is_empty() {
                        return (owner, claimed);
                    }
                    claimed.extend(batch.into_iter().map(|dossier| dossier.source_id));
                }
            }));
        }
    }
    let mut seen = HashSet::new();
    let mut per_owner = std::collections::HashMap::new();
    for worker in workers {
        let (owner, claimed) = worker.await.unwrap();
        *per_owner.entry(owner).or_insert(0) += claimed.len();
        for id in claimed {
            assert!(seen.insert(id.clone()), "{id} was claimed twice");
        }
    }
    assert_eq!(seen.len(), rows.len(), "every dossier is claimed");
    assert!(
        per_owner.values().all(|count| *count > 0),
        "both instances should have claimed some: {per_owner:?}"
    );

    // Asked at the same moment, the polling lease goes to exactly one of them, round after round.
    for round in 0..20 {
        let role = format!("poll-{round}");
        let (one, two) = tokio::join!(
            instances[0].1.try_lead(&role, "one", 10, 1_000),
            instances[1].1.try_lead(&role, "two", 10, 1_000),
        );
        assert!(one.unwrap() ^ two.unwrap(), "round {round}: one holder");
    }
    for (_, store) in &instances {
        Maintenance::close(store.as_ref()).await;
    }
    schema.drop().await;
}

#[tokio::test]
async fn a_read_only_postgres_store_reads_and_refuses_writes() {
    let Some(schema) = common::postgres_schema().await else {
        return;
    };
    let store = schema.store().await;
    let rows = [row(
        "a",
        "r1",
        "p1",
        IngestAction::Set(DossierState::Pending),
    )];
    store.ingest(&rows, None, 10).await.unwrap();
    let reader = PostgresStore::open_read_only(&schema.url(), None)
        .await
        .unwrap();
    assert_eq!(reader.counts().await.unwrap().get(DossierState::Pending), 1);
    assert!(reader.ingest(&rows, None, 20).await.is_err());
    Maintenance::close(&reader).await;
    Maintenance::close(&store).await;
    schema.drop().await;
}
