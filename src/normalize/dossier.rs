//! Assembles one portal Dossier from a parsed source record, field by field as in mapping.md, collecting
//! every rejection (not just the first) and every warning.

use jiff::Timestamp;

use crate::portal::payload;
use crate::portal::wire::{Dossier, Identifier};
use crate::source::wire::{Applicant, RawDate, SourceDossier};

use super::codes;
use super::contacts::{Email, IdentityNumber, PhoneNumber, TaxCode};
use super::dates::SourceTime;
use super::findings::{Collector, Field};
use super::status::{PortalStatus, StatusMapping};
use super::tables::MappingTables;
use super::text::{LIMIT_APPLICANT_NAME, LIMIT_PROCEDURE_NAME, LIMIT_SUMMARY};
use super::units::{self, UnitContext, UnitProblem};
use super::{
    Normalized, Outcome, PortalDossier, SkipReason, lenient_int_text, lists, procedures, progress,
};

/// Bytes reserved for a payload before writing it: most are 1 to 2 KB.
const PAYLOAD_CAPACITY: usize = 2048;

/// An event date more than this far after `now` is `inconsistent_dates` (mapping.md, Dates).
const FUTURE_TOLERANCE_SECONDS: i64 = 24 * 60 * 60;

/// The source's dates, parsed (each `None` when absent or unparseable, the latter already rejected).
struct SourceDates {
    submitted: Option<SourceTime>,
    accepted: Option<SourceTime>,
    appointment: Option<SourceTime>,
    completed: Option<SourceTime>,
    returned: Option<SourceTime>,
    rejected: Option<SourceTime>,
    updated: Option<SourceTime>,
    /// An acceptedDate was given but is not a date: `invalid_date` already says so, and it is not
    /// missing as well.
    accepted_unparseable: bool,
}

impl SourceDates {
    fn parse(source: &SourceDossier, collector: &mut Collector) -> SourceDates {
        let accepted_given = match &source.accepted_date {
            None => false,
            Some(RawDate::Text(text)) => !text.trim().is_empty(),
            Some(_) => true,
        };
        let submitted = collector.date(Field::Top("submittedDate"), source.submitted_date.as_ref());
        let accepted = collector.date(Field::Top("acceptedDate"), source.accepted_date.as_ref());
        SourceDates {
            accepted_unparseable: accepted_given && accepted.is_none(),
            submitted,
            accepted,
            appointment: collector.date(
                Field::Top("appointmentDate"),
                source.appointment_date.as_ref(),
            ),
            completed: collector.date(Field::Top("completedDate"), source.completed_date.as_ref()),
            returned: collector.date(Field::Top("returnedDate"), source.returned_date.as_ref()),
            rejected: collector.date(Field::Top("rejectedDate"), source.rejected_date.as_ref()),
            updated: collector.date(Field::Top("updatedDate"), source.updated_date.as_ref()),
        }
    }
}

/// The portal's dates of a dossier after the status-dependent rules.
struct PortalDates {
    reception: Option<SourceTime>,
    refusal: Option<SourceTime>,
}

pub fn normalize(source: &SourceDossier, tables: &MappingTables, now: Timestamp) -> Normalized {
    let mut collector = Collector::default();
    let dossier_code = source.code.as_deref().map(|code| code.trim().to_owned());
    let agency = source.agency.as_ref();
    let source_agency_id = agency.and_then(|agency| agency.id.as_deref().map(str::to_owned));
    let dates = SourceDates::parse(source, &mut collector);
    let reception_day = dates
        .accepted
        .or(dates.submitted)
        .map(|time| time.vietnam_day());

    let procedure = source.procedure.as_ref();
    let local_procedure = procedure
        .and_then(|p| p.code.as_deref())
        .map(str::trim)
        .filter(|code| !code.is_empty());
    let procedure_code = match local_procedure {
        None => {
            collector.reject(
                codes::MISSING_FIELD,
                Field::Top("procedure.code"),
                "no procedure code",
                None,
            );
            None
        }
        Some(local) => {
            let resolved = procedures::resolve(local, tables);
            if resolved.is_none() {
                collector.reject(
                    codes::UNMAPPED_PROCEDURE,
                    Field::Top("procedure.code"),
                    "not in the procedure table and without a leading national code d.dddddd",
                    Some(local),
                );
            }
            resolved.map(|code| code.into_string())
        }
    };
    let sector = procedure.and_then(|p| p.sector.as_ref());
    let sector_code = collector.required_text(
        Field::Top("procedure.sector.code"),
        sector.and_then(|s| s.code.as_deref()),
        None,
    );

    let unit_context = UnitContext {
        agency_id: source_agency_id.as_deref(),
        agency_code: agency
            .and_then(|agency| agency.code.as_deref())
            .map(str::trim),
        procedure: procedure_code.as_deref(),
        sector: sector_code.as_deref(),
        reception_day,
    };
    let unit = match units::resolve(&unit_context, tables) {
        Ok(code) => Some(code.into_string()),
        Err(UnitProblem::Unmapped { detail }) => {
            let shown = agency.and_then(|agency| agency.code.as_deref().or(agency.id.as_deref()));
            collector.reject(codes::UNMAPPED_UNIT, Field::Top("agency"), detail, shown);
            None
        }
        Err(UnitProblem::Ambiguous { retired, claimants }) => {
            let detail = format!(
                "retired unit with several successors: {claimants} claim this dossier, exactly one must"
            );
            collector.reject(
                codes::AMBIGUOUS_SUCCESSION,
                Field::Top("agency"),
                detail,
                Some(retired.as_str()),
            );
            Some(retired.into_string())
        }
    };

    let mut normalized = Normalized {
        source_id: Some(source.id.to_owned_string()),
        dossier_code,
        source_agency_id,
        unit,
        procedure_code,
        reception_day,
        updated_at: dates.updated.map(|time| time.timestamp()),
        outcome: Outcome::Rejected(Vec::new()),
        warnings: Vec::new(),
    };

    // Skips come before any other verdict: a deleted or cancelled dossier is never sent, whatever else is
    // wrong with it.
    let deleted = match &source.deleted_date {
        None => false,
        Some(RawDate::Text(text)) => !text.trim().is_empty(),
        Some(_) => true,
    };
    if deleted {
        normalized.outcome = Outcome::Skipped(SkipReason::DeletedAtSource);
        return normalized;
    }
    let raw_status = source
        .dossier_status
        .as_ref()
        .and_then(|status| status.id.as_ref());
    let status = match raw_status {
        None => {
            collector.reject(
                codes::MISSING_FIELD,
                Field::Top("dossierStatus.id"),
                "no status",
                None,
            );
            None
        }
        Some(raw) => match raw.as_i64().and_then(|id| tables.status_for(id)) {
            Some(StatusMapping::Skip) => {
                normalized.outcome = Outcome::Skipped(SkipReason::CancelledAtSource);
                return normalized;
            }
            Some(StatusMapping::Portal(status)) => Some(status),
            None => {
                let shown = lenient_int_text(raw);
                collector.reject(
                    codes::UNMAPPED_STATUS,
                    Field::Top("dossierStatus.id"),
                    "status not in the status table",
                    Some(&shown),
                );
                None
            }
        },
    };

    let built = build(
        source,
        tables,
        now,
        &dates,
        status,
        sector_code,
        &normalized,
        &mut collector,
    );
    normalized.warnings = collector.warnings;
    normalized.outcome = match built {
        Some(dossier) if collector.rejections.is_empty() => seal(dossier),
        _ => Outcome::Rejected(collector.rejections),
    };
    normalized
}

/// Builds the dossier (the sector code, needed earlier by the succession selectors, arrives cleaned);
/// `None` when a required part is missing (always with a rejection recorded).
#[allow(clippy::too_many_arguments)] // The parts resolved before the skip checks, passed on rather than redone.
fn build(
    source: &SourceDossier,
    tables: &MappingTables,
    now: Timestamp,
    dates: &SourceDates,
    status: Option<PortalStatus>,
    sector_code: Option<String>,
    known: &Normalized,
    collector: &mut Collector,
) -> Option<(Dossier, Vec<crate::portal::wire::ProgressEntry>)> {
    let code = dossier_code(known.dossier_code.as_deref(), collector);
    let procedure = source.procedure.as_ref();
    let sector = procedure.and_then(|p| p.sector.as_ref());
    let procedure_name = collector.required_text(
        Field::Top("procedure.name"),
        procedure.and_then(|p| p.name.as_deref()),
        Some(LIMIT_PROCEDURE_NAME),
    );
    let sector_name = collector.required_text(
        Field::Top("procedure.sector.name"),
        sector.and_then(|s| s.name.as_deref()),
        None,
    );
    let channel = channel(source, collector);

    let applicant = source.applicant.as_ref();
    let applicant_name = collector.required_text(
        Field::Top("applicant.fullname"),
        applicant.and_then(|a| a.fullname.as_deref()),
        Some(LIMIT_APPLICANT_NAME),
    );
    let applicant_type = applicant_type(applicant, collector);
    let contacts = applicant
        .map(|applicant| contacts(applicant, applicant_type, collector))
        .unwrap_or_default();

    let summary = collector.text(
        Field::Top("summary"),
        source.summary.as_deref(),
        Some(LIMIT_SUMMARY),
    );
    let note = collector.text(Field::Top("note"), source.note.as_deref(), None);
    let source_status = source
        .dossier_status
        .as_ref()
        .and_then(|status| status.id.as_ref())
        .and_then(|id| id.as_i64());
    let portal_dates = status_dates(dates, status, source_status, collector);
    check_date_order(dates, &portal_dates, now, collector);

    let return_method = source
        .return_method
        .as_ref()
        .and_then(|method| method.id.as_ref())
        .and_then(|id| match id.as_i64() {
            Some(0) => Some("0".to_owned()),
            Some(1) => Some("1".to_owned()),
            _ => None,
        });
    let fees = source.fees.as_deref().unwrap_or_default();
    let fee_lines = lists::fee_lines(fees, collector);
    let (submitted_files, result_documents) =
        lists::attachments(source.attachments.as_deref().unwrap_or_default(), collector);
    let supplements =
        lists::supplements(source.supplements.as_deref().unwrap_or_default(), collector);
    let progress = progress::entries(
        code.as_deref().unwrap_or_default(),
        source.history.as_deref().unwrap_or_default(),
        tables,
        collector,
    );
    let flag = |value: Option<bool>| value.map(|value| if value { "1" } else { "0" }.to_owned());

    let dossier = Dossier {
        ma_ho_so: code?,
        ma_tthc: known.procedure_code.clone()?,
        ten_tthc: procedure_name?,
        ma_linh_vuc: sector_code?,
        ten_linh_vuc: sector_name?,
        kenh_thuc_hien: channel?.to_owned(),
        chu_ho_so: applicant_name?,
        so_giay_to_chu_ho_so: contacts.identity.as_ref().map(|id| id.digits().to_owned()),
        dinh_danh_chs: contacts.identity.as_ref().map(|id| {
            vec![Identifier {
                loai_dinh_danh: id.kind().portal_code().to_owned(),
                so_dinh_danh: id.digits().to_owned(),
            }]
        }),
        loai_doi_tuong: applicant_type?.to_owned(),
        ma_doi_tuong: contacts.tax_code,
        email: contacts.email,
        so_dien_thoai: contacts.phone,
        fax: None,
        trich_yeu_ho_so: summary,
        ngay_nop_ho_so: dates.submitted.map(|time| time.portal_string()),
        ngay_tiep_nhan: portal_dates.reception?.portal_string(),
        ngay_hen_tra: dates.appointment.map(|time| time.portal_string()),
        trang_thai_ho_so: status?.as_str().to_owned(),
        ngay_ket_thuc_xu_ly: dates.completed.map(|time| time.portal_string()),
        ngay_tra: dates.returned.map(|time| time.portal_string()),
        ngay_tu_choi: portal_dates.refusal.map(|time| time.portal_string()),
        hinh_thuc: return_method,
        don_vi_xu_ly: known.unit.clone()?,
        tai_lieu_nop: submitted_files,
        danh_sach_giay_to_ket_qua: result_documents,
        danh_sach_le_phi: fee_lines,
        danh_sach_ho_so_bo_sung: supplements,
        duoc_thanh_toan_truc_tuyen: lists::paid_online(fees),
        ho_so_co_thanh_phan_so_hoa: flag(source.reuses_digitized_components),
        tai_khoan_duoc_xac_thuc_voi_vneid: flag(source.vneid_verified),
        ghi_chu: note,
    };
    Some((dossier, progress))
}

/// `MaHoSo`: trimmed, 1 to 50 of `[0-9A-Za-z.\-_/]`.
fn dossier_code(code: Option<&str>, collector: &mut Collector) -> Option<String> {
    let valid = code.filter(|code| {
        (1..=50).contains(&code.len())
            && code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'/'))
    });
    if valid.is_none() {
        collector.reject(
            codes::INVALID_DOSSIER_CODE,
            Field::Top("code"),
            "absent, longer than 50 characters, or with characters outside 0-9 A-Z a-z . - _ /",
            code,
        );
    }
    valid.map(str::to_owned)
}

/// `KenhThucHien` from `applyMethod.id`: 0 in person → "1", 1 online → "2", 2 public post → "3".
fn channel(source: &SourceDossier, collector: &mut Collector) -> Option<&'static str> {
    let raw = source
        .apply_method
        .as_ref()
        .and_then(|method| method.id.as_ref());
    let channel = match raw.and_then(|id| id.as_i64()) {
        Some(0) => Some("1"),
        Some(1) => Some("2"),
        Some(2) => Some("3"),
        _ => None,
    };
    if channel.is_none() {
        let shown = raw.map(lenient_int_text);
        collector.reject(
            codes::INVALID_CHANNEL,
            Field::Top("applyMethod.id"),
            "not 0, 1 or 2",
            shown.as_deref(),
        );
    }
    channel
}

/// `LoaiDoiTuong` from `applicant.type`.
fn applicant_type(
    applicant: Option<&Applicant>,
    collector: &mut Collector,
) -> Option<&'static str> {
    let raw = applicant.and_then(|a| a.kind.as_deref()).map(str::trim);
    let kind = match raw {
        Some("citizen") => Some("1"),
        Some("enterprise") => Some("2"),
        Some("agency") => Some("3"),
        Some("organization") => Some("4"),
        _ => None,
    };
    if kind.is_none() {
        collector.reject(
            codes::MISSING_FIELD,
            Field::Top("applicant.type"),
            "absent or not citizen, enterprise, agency or organization",
            raw,
        );
    }
    kind
}

#[derive(Debug, Default)]
struct Contacts {
    identity: Option<IdentityNumber>,
    tax_code: Option<String>,
    phone: Option<String>,
    email: Option<String>,
}

/// Identity number, tax code, phone and e-mail: each kept when valid, else dropped with a warning.
fn contacts(
    applicant: &Applicant,
    applicant_type: Option<&str>,
    collector: &mut Collector,
) -> Contacts {
    let mut contacts = Contacts::default();
    if let Some(raw) = &applicant.identity_number {
        contacts.identity = IdentityNumber::parse_lenient(raw);
        if contacts.identity.is_none() && !raw.as_text().trim().is_empty() {
            collector.warn(
                codes::IDENTITY_DROPPED,
                Field::Top("applicant.identityNumber"),
                "not 12 (CCCD) or 9 (CMND) digits",
                Some(&raw.as_text()),
            );
        }
    }
    // The tax code goes to MaDoiTuong only for applicants that are not citizens (mapping.md).
    if let (Some(raw), Some(kind)) = (&applicant.tax_code, applicant_type)
        && kind != "1"
    {
        contacts.tax_code = TaxCode::parse(&raw.as_text()).map(TaxCode::into_string);
        if contacts.tax_code.is_none() && !raw.as_text().trim().is_empty() {
            collector.warn(
                codes::TAX_CODE_DROPPED,
                Field::Top("applicant.taxCode"),
                "not 10 digits, 10-3 digits or 12 digits",
                Some(&raw.as_text()),
            );
        }
    }
    if let Some(raw) = &applicant.phone {
        contacts.phone = PhoneNumber::parse_lenient(raw).map(PhoneNumber::into_string);
        if contacts.phone.is_none() && !raw.as_text().trim().is_empty() {
            collector.warn(
                codes::PHONE_DROPPED,
                Field::Top("applicant.phone"),
                "not a 10-digit mobile or 11-digit landline number, even after the 2018 prefix conversion",
                Some(&raw.as_text()),
            );
        }
    }
    if let Some(raw) = &applicant.email {
        contacts.email = Email::parse(raw).map(Email::into_string);
        if contacts.email.is_none() && !raw.trim().is_empty() {
            collector.warn(
                codes::EMAIL_DROPPED,
                Field::Top("applicant.email"),
                "not of the shape local@domain.tld",
                Some(raw),
            );
        }
    }
    contacts
}

/// The status-dependent date rules: which dates a status requires and where `NgayTiepNhan` and
/// `NgayTuChoi` come from.
fn status_dates(
    dates: &SourceDates,
    status: Option<PortalStatus>,
    source_status: Option<i64>,
    collector: &mut Collector,
) -> PortalDates {
    let mut portal = PortalDates {
        reception: dates.accepted,
        refusal: dates.rejected,
    };
    let Some(status) = status else {
        // An unknown (or unmapped) status excuses nothing: only source statuses 0 and 8 may lack an
        // acceptedDate (mapping.md), and the operator who fixes the status table must see this reason too.
        if portal.reception.is_none()
            && !dates.accepted_unparseable
            && !matches!(source_status, Some(0 | 8))
        {
            collector.reject(
                codes::MISSING_FIELD,
                Field::Top("acceptedDate"),
                "required for this status",
                None,
            );
        }
        return portal;
    };
    if portal.reception.is_none() {
        if status.reception_may_be_missing() {
            portal.reception = dates.submitted;
            if portal.reception.is_none() {
                collector.reject(
                    codes::MISSING_FIELD,
                    Field::Top("submittedDate"),
                    "neither acceptedDate nor submittedDate",
                    None,
                );
            }
        } else if !dates.accepted_unparseable {
            collector.reject(
                codes::MISSING_FIELD,
                Field::Top("acceptedDate"),
                "required for this status",
                None,
            );
        }
    }
    if dates.appointment.is_none() && !status.appointment_optional() {
        collector.reject(
            codes::MISSING_FIELD,
            Field::Top("appointmentDate"),
            "required for this status",
            None,
        );
    }
    if (status == PortalStatus::PROCESSED || status == PortalStatus::RETURNED)
        && dates.completed.is_none()
    {
        collector.reject(
            codes::MISSING_FIELD,
            Field::Top("completedDate"),
            "required for a processed or returned dossier",
            None,
        );
    }
    if status == PortalStatus::RETURNED && dates.returned.is_none() {
        collector.reject(
            codes::MISSING_FIELD,
            Field::Top("returnedDate"),
            "required for a returned dossier",
            None,
        );
    }
    if status == PortalStatus::NOT_ACCEPTED && portal.refusal.is_none() {
        match dates.updated {
            Some(updated) => {
                portal.refusal = Some(updated);
                collector.warn(
                    codes::DATE_FALLBACK,
                    Field::Top("rejectedDate"),
                    "absent; updatedDate used",
                    None,
                );
            }
            None => collector.reject(
                codes::MISSING_FIELD,
                Field::Top("rejectedDate"),
                "required for a refused dossier",
                None,
            ),
        }
    }
    portal
}

/// Order checks and the future-date check (mapping.md, Dates).
fn check_date_order(
    dates: &SourceDates,
    portal: &PortalDates,
    now: Timestamp,
    collector: &mut Collector,
) {
    let mut out_of_order = |later: Option<SourceTime>,
                            earlier: Option<SourceTime>,
                            field: &'static str,
                            detail: &str| {
        if let (Some(later), Some(earlier)) = (later, earlier)
            && later.second() < earlier.second()
        {
            collector.reject(
                codes::INCONSISTENT_DATES,
                Field::Top(field),
                detail,
                Some(&later.portal_string()),
            );
        }
    };
    out_of_order(
        dates.appointment,
        portal.reception,
        "appointmentDate",
        "before the acceptance date",
    );
    out_of_order(
        dates.completed,
        portal.reception,
        "completedDate",
        "before the acceptance date",
    );
    out_of_order(
        dates.returned,
        dates.completed,
        "returnedDate",
        "before the completion date",
    );

    let limit = now.as_second().saturating_add(FUTURE_TOLERANCE_SECONDS);
    let events = [
        ("submittedDate", dates.submitted),
        ("acceptedDate", portal.reception),
        ("completedDate", dates.completed),
        ("returnedDate", dates.returned),
        ("rejectedDate", portal.refusal),
    ];
    for (field, time) in events {
        if let Some(time) = time
            && time.second() > limit
        {
            collector.reject(
                codes::INCONSISTENT_DATES,
                Field::Top(field),
                "more than one day after the time of normalization",
                Some(&time.portal_string()),
            );
        }
    }
}

/// Writes the dossier's and its progress entries' payloads and hashes them.
fn seal((dossier, progress): (Dossier, Vec<crate::portal::wire::ProgressEntry>)) -> Outcome {
    // Room for a typical payload up front, rather than growing from a small start by copying.
    let mut payload = Vec::with_capacity(PAYLOAD_CAPACITY);
    payload::write_dossier(&mut payload, &dossier);
    Outcome::Dossier(Box::new(PortalDossier {
        hash: blake3::hash(&payload).to_hex().as_str().to_owned(),
        payload,
        dossier,
        progress: progress.into_iter().map(progress::seal).collect(),
    }))
}
