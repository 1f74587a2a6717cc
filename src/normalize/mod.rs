//! Normalization: a source dossier and the mapping tables in, a portal payload (or rejections) out
//! (`../shared/spec/mapping.md`). Pure: no I/O, no clock (the caller passes `now`), no panics on any input.

//!
//! Files by concern: [`text`] (TCVN3, NFC, control characters, limits) with [`syllable`] (the Vietnamese
//! syllable validator), [`dates`], [`contacts`] (phones, e-mail, identity number, tax code), [`status`],
//! [`units`] (unit table, successions), [`procedures`], [`lists`] (fees, attachments, supplements),
//! [`progress`] (history entries), [`codes`] (rejection and warning codes with their messages),
//! [`tables`] (the operator's mapping tables), [`oversize`] (records over the size limit); `dossier`
//! assembles them, `findings` collects what went wrong and `malformed` names what spoils a record that
//! does not parse.

pub mod codes;
pub mod contacts;
pub mod dates;
mod dossier;

mod findings;
pub mod lists;
mod malformed;
pub mod oversize;
pub mod procedures;
pub mod progress;
pub mod status;
pub mod syllable;
pub mod tables;
pub mod text;
pub mod units;

use crate::source::wire::{LenientInt, SourceDossier};
use jiff::Timestamp;
use jiff::civil::Date;
use malformed::malformed;
pub use tables::{MappingTables, TableProblem, TablesError};

/// Everything normalization learned about one record, whatever its outcome.
#[derive(Debug, Clone)]
pub struct Normalized {
    /// The source's id, when the record has one (a malformed record may not).
    pub source_id: Option<String>,
    /// The dossier code as received, trimmed (also when it is invalid: reports show it).
    pub dossier_code: Option<String>,
    /// The source agency id (`agency.id`), which reports show beside the resolved unit.
    pub source_agency_id: Option<String>,
    /// The handling unit's portal code, when it could be resolved (also for most rejections).
    pub unit: Option<String>,
    /// The national procedure code (`MaTTHC`), when it could be resolved.
    pub procedure_code: Option<String>,
    /// The reception day (Vietnam time) of `acceptedDate`, or `submittedDate` without one.
    pub reception_day: Option<Date>,
    /// The source's `updatedDate`, when it parses.
    pub updated_at: Option<Timestamp>,
    pub outcome: Outcome,
    /// Warnings never stop a dossier; they are kept and reported.
    pub warnings: Vec<Finding>,
}

#[derive(Debug, Clone)]
pub enum Outcome {
    /// Ready for the portal.
    Dossier(Box<PortalDossier>),
    /// Held back: at least one rejection.
    Rejected(Vec<Finding>),
    /// Never sent (cancelled or deleted at the source).
    Skipped(SkipReason),
}

/// A normalized dossier: the exact bytes sent to the portal and their hash.
#[derive(Debug, Clone)]
pub struct PortalDossier {
    pub dossier: crate::portal::wire::Dossier,
    /// The dossier's JSON as [`crate::portal::payload`] writes it: byte for byte `serde_json::to_vec(&dossier)`.
    pub payload: Vec<u8>,
    /// Hex blake3 of `payload`.
    pub hash: String,
    pub progress: Vec<PortalProgress>,
}

/// One progress entry, identified as the portal identifies it: (`MaHoSo`, `ThoiDiemXuLy`, `NoiDungXuLy`).
#[derive(Debug, Clone)]
pub struct PortalProgress {
    pub entry: crate::portal::wire::ProgressEntry,
    /// Hex blake3 of the identifying triple.
    pub key: String,
    pub payload: Vec<u8>,
    /// Hex blake3 of `payload`: a changed entry with the same key is sent again.
    pub hash: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    CancelledAtSource,
    DeletedAtSource,
}

impl SkipReason {
    pub fn code(self) -> &'static str {
        match self {
            SkipReason::CancelledAtSource => "cancelled_at_source",
            SkipReason::DeletedAtSource => "deleted_at_source",
        }
    }
}

/// A rejection or a warning: what, where, and the offending value with personal data masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `unmapped_unit`, `phone_dropped`, ... (mapping.md, Rejections; vocabulary.md).
    pub code: &'static str,
    /// The source field (`agency`, `applicant.phone`, `acceptedDate`, ...).
    pub field: String,
    /// A short English explanation with specifics (never personal data in clear).
    pub detail: String,
    /// The offending value, masked when it is personal data.
    pub value: Option<String>,
}

/// Normalizes one record from its raw JSON bytes; a record that does not parse is `malformed_record`.
pub fn normalize_bytes(raw: &[u8], tables: &MappingTables, now: Timestamp) -> Normalized {
    if let Some((readable, count)) = crate::source::escapes::lone_surrogates(raw) {
        return invalid_escapes(&readable, count, tables, now);
    }
    match parse_record(raw) {
        Ok(dossier) => normalize(&dossier, tables, now),
        Err(error) => malformed(raw, &error),
    }
}

/// Parses one record's raw JSON bytes, as [`normalize_bytes`] does.
pub fn parse_record(raw: &[u8]) -> Result<SourceDossier<'_>, serde_json::Error> {
    // Checking the whole record as UTF-8 once (with SIMD: Vietnamese text defeats std's ASCII fast path)
    // is much cheaper than `from_slice` checking every string on its own. Invalid UTF-8 anywhere makes
    // `from_slice` fail too, so it is left to give the same error.
    match simdutf8::basic::from_utf8(raw) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(raw),
    }
}

/// A record with escapes that are not characters (or bytes that were not UTF-8, escaped by the reader) is
/// held back as `invalid_text`. It is read once more with those escapes replaced, so that it is still
/// filed under its id, unit and day, but it is never sent: the text is not what the unit typed.
fn invalid_escapes(
    readable: &[u8],
    count: usize,
    tables: &MappingTables,
    now: Timestamp,
) -> Normalized {
    let mut normalized = match parse_record(readable) {
        Ok(dossier) => normalize(&dossier, tables, now),
        Err(error) => malformed(readable, &error),
    };
    let finding = Finding {
        code: codes::INVALID_TEXT,
        field: String::new(),
        detail: format!(
            "{count} escape(s) or byte(s) that are not characters (kept in the stored record as \\uXXXX)"
        ),
        value: None,
    };
    normalized.outcome =
        match std::mem::replace(&mut normalized.outcome, Outcome::Rejected(Vec::new())) {
            Outcome::Rejected(mut findings) => {
                findings.insert(0, finding);
                Outcome::Rejected(findings)
            }
            _ => Outcome::Rejected(vec![finding]),
        };
    normalized
}

/// Normalizes one parsed record.
pub fn normalize(dossier: &SourceDossier, tables: &MappingTables, now: Timestamp) -> Normalized {
    dossier::normalize(dossier, tables, now)
}

/// The integer of a lenient id as it is shown in a finding.
fn lenient_int_text(raw: &LenientInt) -> String {
    match raw {
        LenientInt::Int(value) => value.to_string(),
        LenientInt::Text(text) => text.to_owned_string(),
        LenientInt::Float(value) => value.to_string(),
    }
}
