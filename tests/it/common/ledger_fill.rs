//! A synthetic ledger written through the store's own interface: dossiers (sendable, held, skipped) with
//! bodies and progress entries, some accepted, some in flight, an attempt log, reconciliation lines, a
//! cursor and a polling lease given back. Shared by `tests/it/store_copy.rs` and `benches/store_copy.rs`.

use tthc_sync::store::{
    AttemptRecord, DeliveryOutcome, DeliveryResult, IngestRow, ProgressEntryRow,
    ReconciliationRecord, Store, VersionKind,
};

/// The time the synthetic ledger is written at (Unix ms).
pub const FILLED_AT: i64 = 1_736_000_000_000;

/// The lease end of the claims left in flight.
pub const LEASE_UNTIL: i64 = FILLED_AT + 60_000;

/// The instance the claims left in flight belong to.
pub const OLD_OWNER: &str = "old-instance";

/// Writes `dossiers` dossiers in pages of 1,000; the first `in_flight` sendable ones stay claimed by
/// [`OLD_OWNER`] until [`LEASE_UNTIL`], half of the rest are accepted.
pub async fn fill(store: &dyn Store, dossiers: usize, in_flight: usize) {
    for start in (0..dossiers).step_by(1_000) {
        let rows: Vec<IngestRow> = (start..(start + 1_000).min(dossiers)).map(row).collect();
        let cursor = format!("{}", FILLED_AT + start as i64);
        store
            .ingest(&rows, Some(("feed", cursor.as_str())), FILLED_AT)
            .await
            .expect("a page is written");
    }
    let claimed = store
        .claim_dossiers(OLD_OWNER, in_flight, FILLED_AT, LEASE_UNTIL)
        .await
        .expect("dossiers are claimed");
    assert_eq!(claimed.len(), in_flight.min(sendable(dossiers)));
    // Claim the rest in pages and accept every other one.
    loop {
        let batch = store
            .claim_dossiers("filler", 1_000, FILLED_AT, FILLED_AT + 1)
            .await
            .expect("dossiers are claimed");
        if batch.is_empty() {
            break;
        }
        let results: Vec<DeliveryResult> = batch
            .iter()
            .map(|dossier| DeliveryResult {
                claim: dossier.claim.clone(),
                source_id: dossier.source_id.clone(),
                payload_hash: dossier.payload_hash.clone(),
                outcome: if dossier.source_id.ends_with(['0', '2', '4', '6', '8']) {
                    DeliveryOutcome::Accepted
                } else {
                    DeliveryOutcome::Refused {
                        code: 2,
                        message: "Dữ liệu không hợp lệ".into(),
                    }
                },
            })
            .collect();
        store
            .record_deliveries(&results, &[], FILLED_AT + 1)
            .await
            .expect("answers are recorded");
    }
    // Attempt lines are written with the answers of their calls; these stand on their own.
    let attempts: Vec<AttemptRecord> = (0..(dossiers / 50).max(3))
        .map(|attempt| AttemptRecord {
            at: FILLED_AT + attempt as i64,
            owner: "filler".into(),
            service: "TiepNhanHoSoMC".into(),
            items: 50,
            outcome: "ok",
            detail: (attempt % 2 == 0).then(|| "50 accepted".into()),
            duration_ms: 120,
        })
        .collect();
    store
        .record_deliveries(&[], &attempts, FILLED_AT + 1)
        .await
        .expect("the attempts are logged");
    store
        .record_reconciliation(&[
            reconciliation("000.00.31.H60", true),
            reconciliation("agency:ag-9", false),
        ])
        .await
        .expect("a reconciliation is recorded");
    assert!(
        store
            .try_lead("poll", "filler", FILLED_AT, FILLED_AT)
            .await
            .expect("the lease is taken and given back")
    );
}

/// How many of the first `dossiers` rows are sendable.
pub fn sendable(dossiers: usize) -> usize {
    (0..dossiers).filter(|n| n % 10 < 8).count()
}

fn row(n: usize) -> IngestRow {
    let id = format!("sim-{n:07}");
    let kind = match n % 10 {
        8 => VersionKind::Held,
        9 => VersionKind::Skipped,
        _ => VersionKind::Sendable,
    };
    let sendable = kind == VersionKind::Sendable;
    let raw = format!(
        "{{\"id\":\"{id}\",\"code\":\"000.00.31.H60-250101-{n:07}\",\"applicant\":{{\"fullName\":\"Nguyễn Văn An {n}\",\"identityNumber\":\"0010{n:08}\",\"address\":\"Số {n} đường Trần Hưng Đạo, phường Hàng Bài, quận Hoàn Kiếm, Hà Nội\"}},\"procedure\":\"1.004227\",\"agency\":\"ag-1\",\"note\":\"{}\"}}",
        "Hồ sơ đất đai ".repeat(8)
    );
    let payload = format!(
        "{{\"MaHoSo\":\"000.00.31.H60-250101-{n:07}\",\"ChuHoSo\":\"Nguyễn Văn An {n}\",\"SoGiayToChuHoSo\":\"0010{n:08}\",\"DiaChiChuHoSo\":\"Số {n} đường Trần Hưng Đạo\",\"MaTTHC\":\"1.004227\",\"TrangThaiHoSo\":2}}"
    );
    IngestRow {
        source_id: id.clone(),
        dossier_code: Some(format!("000.00.31.H60-250101-{n:07}")),
        raw_hash: blake3::hash(raw.as_bytes()).to_hex().to_string(),
        raw,
        source_updated_at: Some(FILLED_AT - n as i64),
        source_agency_id: Some(format!("ag-{}", n % 7)),
        unit: (n % 10 != 8).then(|| format!("000.00.{}.H60", 30 + n % 5)),
        procedure_code: Some("1.004227".into()),
        reception_day: Some(format!("2025-01-{:02}", 1 + n % 28)),
        payload_hash: sendable.then(|| blake3::hash(payload.as_bytes()).to_hex().to_string()),
        payload: sendable.then_some(payload),
        reason_code: (kind == VersionKind::Held).then(|| "unmapped_unit".into()),
        reason_detail: None,
        findings: "[]".into(),
        kind,
        renormalized: false,
        stamped_ahead: n % 97 == 0,
        progress: if sendable {
            (0..2)
                .map(|step| ProgressEntryRow {
                    key: format!("step-{step}"),
                    step_at: format!("2025010{}090000", step + 1),
                    payload: format!("{{\"MaHoSo\":\"{id}\",\"NoiDungXuLy\":\"Bước {step}\"}}"),
                    hash: format!("ph-{n}-{step}"),
                })
                .collect()
        } else {
            Vec::new()
        },
    }
}

fn reconciliation(unit: &str, complete: bool) -> ReconciliationRecord {
    ReconciliationRecord {
        run_id: "run-1".into(),
        unit: unit.into(),
        started_at: FILLED_AT,
        from_day: "2025-01-01".into(),
        to_day: "2025-01-28".into(),
        source_count: complete.then_some(10),
        ledger_count: 10,
        accepted: 10,
        portal_count: None,
        missing: 0,
        complete,
        summary: "{}".into(),
    }
}
