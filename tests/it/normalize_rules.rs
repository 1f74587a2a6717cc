//! Rules of mapping.md that the spec fixtures do not show one by one: every rejection collected, the
//! status-dependent dates, the future-date check, skips, progress entries, successions with selectors,
//! malformed records, and masking in findings.

use std::collections::BTreeSet;

use jiff::Timestamp;
use serde_json::{Value, json};
use tthc_sync::normalize::{
    Finding, MappingTables, Normalized, Outcome, PortalDossier, SkipReason, normalize_bytes,
};

const BASE_FIXTURE: &str = include_str!("../fixtures/normalize/01-online-processing.json");
const TABLES: &str = include_str!("../fixtures/normalize/tables.toml");

fn now() -> Timestamp {
    "2026-11-28T00:00:00+07:00"
        .parse()
        .expect("a valid timestamp")
}

/// The clean dossier of fixture 01 with `changes` applied (top-level keys, or `applicant.x`).
fn source_with(changes: Value) -> Value {
    let fixture: Value = serde_json::from_str(BASE_FIXTURE).expect("fixture is JSON");
    let mut source = fixture["source"].clone();
    for (key, value) in changes.as_object().expect("changes are an object") {
        match key.split_once('.') {
            Some((outer, inner)) => source[outer][inner] = value.clone(),
            None => source[key] = value.clone(),
        }
    }
    source
}

fn run_with(tables: &MappingTables, changes: Value) -> Normalized {
    let raw = serde_json::to_vec(&source_with(changes)).expect("serializes");
    normalize_bytes(&raw, tables, now())
}

fn run(changes: Value) -> Normalized {
    run_with(
        &MappingTables::from_toml_str(TABLES).expect("valid tables"),
        changes,
    )
}

fn rejections(normalized: &Normalized) -> BTreeSet<&'static str> {
    match &normalized.outcome {
        Outcome::Rejected(findings) => findings.iter().map(|finding| finding.code).collect(),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn rejection_findings(normalized: &Normalized) -> &[Finding] {
    match &normalized.outcome {
        Outcome::Rejected(findings) => findings,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

fn dossier(normalized: &Normalized) -> (&PortalDossier, Value) {
    match &normalized.outcome {
        Outcome::Dossier(portal) => (
            portal,
            serde_json::from_slice(&portal.payload).expect("payload is JSON"),
        ),
        other => panic!("expected a dossier, got {other:?}"),
    }
}

fn warnings(normalized: &Normalized) -> BTreeSet<&'static str> {
    normalized
        .warnings
        .iter()
        .map(|finding| finding.code)
        .collect()
}

#[test]
fn collects_every_rejection_of_a_record() {
    let normalized = run(json!({
        "code": "000.00.31.H60 240115 0012",
        "applyMethod": {"id": 9},
        "dossierStatus": {"id": 42},
        "fees": [{"code": "LP01", "name": "Lệ phí", "amount": -5, "paid": false}],
        "acceptedDate": "hôm qua",
    }));
    let expected: BTreeSet<&str> = [
        "invalid_dossier_code",
        "invalid_channel",
        "unmapped_status",
        "invalid_fee",
        "invalid_date",
    ]
    .into();
    assert_eq!(rejections(&normalized), expected);
    // The identifying fields are still filled for reports.
    assert_eq!(normalized.unit.as_deref(), Some("000.00.31.H60"));
    assert_eq!(normalized.procedure_code.as_deref(), Some("1.004227"));
}

#[test]
fn a_missing_accepted_date_is_reported_beside_an_unmapped_status() {
    // Absent: both reasons, so that fixing the status table does not reveal a second problem later.
    let absent = run(json!({"dossierStatus": {"id": 42}, "acceptedDate": null}));
    assert_eq!(
        rejections(&absent),
        ["unmapped_status", "missing_field"].into()
    );
    let finding = rejection_findings(&absent)
        .iter()
        .find(|finding| finding.code == "missing_field")
        .expect("a missing_field finding");
    assert_eq!(finding.field, "acceptedDate");
    // No status at all excuses nothing either.
    let no_status = run(json!({"dossierStatus": null, "acceptedDate": null}));
    let fields: BTreeSet<&str> = rejection_findings(&no_status)
        .iter()
        .map(|finding| finding.field.as_str())
        .collect();
    assert_eq!(fields, ["dossierStatus.id", "acceptedDate"].into());
    // Unparseable is invalid_date, not missing as well, whatever the status.
    for status in [42, 2] {
        let unparseable = run(json!({"dossierStatus": {"id": status}, "acceptedDate": "hôm qua"}));
        let codes = rejections(&unparseable);
        assert!(codes.contains("invalid_date"), "{status}: {codes:?}");
        assert!(!codes.contains("missing_field"), "{status}: {codes:?}");
    }
    // Present: only the status.
    let present = run(json!({"dossierStatus": {"id": 42}}));
    assert_eq!(rejections(&present), ["unmapped_status"].into());
}

#[test]
fn processed_and_returned_dossiers_need_their_dates() {
    let processed = run(json!({"dossierStatus": {"id": 6}}));
    assert_eq!(rejections(&processed), ["missing_field"].into());
    let returned =
        run(json!({"dossierStatus": {"id": 7}, "completedDate": "2024-01-20T10:00:00.000+0700"}));
    assert_eq!(rejections(&returned), ["missing_field"].into());
    let backwards = run(json!({
        "dossierStatus": {"id": 7},
        "completedDate": "2024-01-20T10:00:00.000+0700",
        "returnedDate": "2024-01-19T10:00:00.000+0700",
    }));
    assert_eq!(rejections(&backwards), ["inconsistent_dates"].into());
}

#[test]
fn refused_at_reception_falls_back_to_submission_and_update_dates() {
    let normalized = run(json!({
        "dossierStatus": {"id": 8},
        "acceptedDate": null,
        "appointmentDate": null,
        "rejectedDate": null,
    }));
    let (_, payload) = dossier(&normalized);
    assert_eq!(payload["TrangThaiHoSo"], "3");
    assert_eq!(payload["NgayTiepNhan"], "20240114210511");
    assert_eq!(payload["NgayTuChoi"], "20240116090000");
    assert!(payload.get("NgayHenTra").is_none());
    assert_eq!(warnings(&normalized), ["date_fallback"].into());
    assert_eq!(
        normalized
            .reception_day
            .map(|day| day.to_string())
            .as_deref(),
        Some("2024-01-14")
    );
}

#[test]
fn not_yet_accepted_dossiers_use_the_submission_date() {
    let waiting =
        run(json!({"dossierStatus": {"id": 0}, "acceptedDate": null, "appointmentDate": null}));
    let (_, payload) = dossier(&waiting);
    assert_eq!(payload["TrangThaiHoSo"], "1");
    assert_eq!(payload["NgayTiepNhan"], "20240114210511");
    let processing = run(json!({"acceptedDate": null}));
    assert_eq!(rejections(&processing), ["missing_field"].into());
}

#[test]
fn event_dates_more_than_a_day_ahead_are_inconsistent() {
    let future = run(json!({
        "acceptedDate": "2026-11-29T08:00:00.000+0700",
        "appointmentDate": "2027-01-29T17:00:00.000+0700",
    }));
    assert_eq!(rejections(&future), ["inconsistent_dates"].into());
    // Within a day of `now` is tolerated (clocks differ); a far appointment date is normal.
    let tomorrow = run(json!({
        "submittedDate": "2026-11-28T07:00:00.000+0700",
        "acceptedDate": "2026-11-28T23:00:00.000+0700",
        "appointmentDate": "2027-01-29T17:00:00.000+0700",
    }));
    dossier(&tomorrow);
}

#[test]
fn deleted_and_cancelled_dossiers_are_skipped() {
    let deleted =
        run(json!({"deletedDate": "2024-02-01T08:00:00.000+0700", "dossierStatus": {"id": 42}}));
    assert!(matches!(
        deleted.outcome,
        Outcome::Skipped(SkipReason::DeletedAtSource)
    ));
    assert_eq!(deleted.unit.as_deref(), Some("000.00.31.H60"));
    let cancelled = run(json!({"dossierStatus": {"id": "11"}}));
    assert!(matches!(
        cancelled.outcome,
        Outcome::Skipped(SkipReason::CancelledAtSource)
    ));
}

#[test]
fn a_configured_status_table_replaces_the_default() {
    let tables = MappingTables::from_toml_str(&format!(
        "{TABLES}\n[statuses]\n\"2\" = \"skip\"\n\"20\" = \"4\"\n"
    ))
    .expect("valid tables");
    assert!(matches!(
        run_with(&tables, json!({})).outcome,
        Outcome::Skipped(SkipReason::CancelledAtSource)
    ));
    let history = json!([{"content": "Thẩm định", "statusId": 20, "startedAt": "2024-01-16T08:00:00.000+0700"}]);
    let normalized = run_with(
        &tables,
        json!({"dossierStatus": {"id": 20}, "history": history}),
    );
    let (portal, payload) = dossier(&normalized);
    assert_eq!(payload["TrangThaiHoSo"], "4");
    assert_eq!(portal.progress[0].entry.trang_thai.as_deref(), Some("4"));
}

#[test]
fn broken_text_is_rejected_without_showing_it() {
    let normalized = run(json!({"summary": "Xin cấp phép cho Nguy\u{FFFD}n Thị Hoa"}));
    let findings = rejection_findings(&normalized);
    assert_eq!(findings.len(), 1);
    assert_eq!(findings[0].code, "invalid_text");
    assert_eq!(findings[0].field, "summary");
    assert_eq!(findings[0].value.as_deref(), Some("[…]"));
    let name = run(json!({"applicant.fullname": "Nguy\u{FFFD}n Thị Hoa"}));
    assert_eq!(
        rejection_findings(&name)[0].value.as_deref(),
        Some("N. T. H.")
    );
}

#[test]
fn dropped_contacts_are_masked_in_warnings() {
    let normalized = run(
        json!({"applicant.phone": "0912 345", "applicant.email": "hoa@", "applicant.identityNumber": "12345"}),
    );
    for warning in &normalized.warnings {
        let value = warning.value.as_deref().unwrap_or_default();
        assert!(
            !value.contains("0912") && !value.contains("hoa@") && !value.contains("12345"),
            "{warning:?}"
        );
    }
    assert_eq!(
        warnings(&normalized),
        ["phone_dropped", "email_dropped", "identity_dropped"].into()
    );
}

#[test]
fn tax_codes_only_for_non_citizens() {
    let citizen = run(json!({"applicant.taxCode": "0101234567"}));
    assert!(dossier(&citizen).1.get("MaDoiTuong").is_none());
    let bad = run(json!({"applicant.type": "organization", "applicant.taxCode": "12-34"}));
    assert_eq!(warnings(&bad), ["tax_code_dropped"].into());
    assert_eq!(dossier(&bad).1["LoaiDoiTuong"], "4");
}

#[test]
fn numeric_phones_and_identity_numbers_get_their_zero_back() {
    let normalized =
        run(json!({"applicant.phone": 912345678, "applicant.identityNumber": 8185001234u64}));
    let (_, payload) = dossier(&normalized);
    assert_eq!(payload["SoDienThoai"], "0912345678");
    assert_eq!(payload["SoGiayToChuHoSo"], "008185001234");
}

#[test]
fn progress_steps_without_time_or_content_are_dropped_with_a_warning() {
    let history = json!([
        {"actor": "Trần Văn Bình", "content": "Thẩm định hồ sơ", "statusId": 2},
        {"actor": "Trần Văn Bình", "content": "  ", "statusId": 2, "finishedAt": "2024-01-16T09:00:00.000+0700"},
        {"actor": "Một người có tên rất dài vượt quá năm mươi ký tự cho phép của cổng", "content": "Trình ký",
         "startedAt": "2024-01-17T08:00:00.000+0700"},
    ]);
    let normalized = run(json!({"history": history}));
    let (portal, _) = dossier(&normalized);
    assert_eq!(portal.progress.len(), 1);
    let entry = &portal.progress[0];
    assert_eq!(entry.entry.thoi_diem_xu_ly, "20240117080000");
    assert_eq!(
        entry
            .entry
            .nguoi_xu_ly
            .as_deref()
            .map(|name| name.chars().count()),
        Some(50)
    );
    let key =
        blake3::hash("000.00.31.H60-240115-0012\u{1f}20240117080000\u{1f}Trình ký".as_bytes());
    assert_eq!(entry.key, key.to_hex().as_str());
    assert_eq!(entry.hash, blake3::hash(&entry.payload).to_hex().as_str());
    assert_eq!(
        warnings(&normalized),
        ["progress_dropped", "text_truncated"].into()
    );
}

#[test]
fn split_units_are_resolved_by_selector_or_held_back() {
    let tables = MappingTables::from_toml_str(
        r#"
[[successions]]
from = "000.00.31.H60"
effective = "2024-01-01"
old_code_still_known_to_portal = false
[[successions.to]]
code = "000.00.41.H60"
sectors = ["G09-XD01"]
[[successions.to]]
code = "000.00.42.H60"
agencies = ["ag-other"]
"#,
    )
    .expect("valid tables");
    let (_, payload) = dossier(&run_with(&tables, json!({})));
    assert_eq!(payload["DonViXuLy"], "000.00.41.H60");
    let unclaimed = run_with(
        &tables,
        json!({"procedure": {"code": "1.004227", "name": "X", "sector": {"code": "G01", "name": "Y"}}}),
    );
    assert_eq!(rejections(&unclaimed), ["ambiguous_succession"].into());
    assert_eq!(unclaimed.unit.as_deref(), Some("000.00.31.H60"));
}

#[test]
fn malformed_records_name_the_field_without_quoting_it() {
    let normalized = run(json!({"applicant": "Nguyễn Thị Hoa"}));
    let findings = rejection_findings(&normalized);
    assert_eq!(findings[0].code, "malformed_record");
    assert_eq!(findings[0].field, "applicant");
    assert!(
        !findings[0].detail.contains("Hoa"),
        "{}",
        findings[0].detail
    );
    assert_eq!(
        normalized.source_id.as_deref(),
        Some("65a4f1c2e4b0a1b2c3d4e5f6")
    );
    assert_eq!(
        normalized.dossier_code.as_deref(),
        Some("000.00.31.H60-240115-0012")
    );

    let nested =
        run(json!({"fees": [{"code": "LP01", "amount": 1}, {"code": "P2", "amount": [1]}]}));
    assert_eq!(rejection_findings(&nested)[0].field, "fees[1].amount");
    let not_json = normalize_bytes(b"{\"id\": ", &MappingTables::default(), now());
    assert_eq!(rejections(&not_json), ["malformed_record"].into());
}

#[test]
fn optional_flags_and_lists() {
    let normalized = run(json!({
        "vneidVerified": null,
        "fees": [],
        "attachments": [{"id": "x", "kind": "other"}],
        "returnMethod": {"id": 5},
    }));
    let (_, payload) = dossier(&normalized);
    for absent in [
        "TaiKhoanDuocXacThucVoiVNeID",
        "DanhSachLePhi",
        "TaiLieuNop",
        "HinhThuc",
        "DuocThanhToanTrucTuyen",
    ] {
        assert!(payload.get(absent).is_none(), "{absent}");
    }
    assert_eq!(warnings(&normalized), ["attachment_dropped"].into());
}
