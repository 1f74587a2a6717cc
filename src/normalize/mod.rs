//! Normalization: a source dossier and the mapping tables in, a portal payload (or rejections) out
//! (`../shared/spec/mapping.md`). Pure: no I/O, no clock (the caller passes `now`), no panics on any input.

pub mod tables;

use jiff::Timestamp;
use jiff::civil::Date;

use crate::source::wire::SourceDossier;
pub use tables::MappingTables;

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
    /// `serde_json::to_vec(&dossier)`: deterministic, byte for byte.
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
    match serde_json::from_slice::<SourceDossier>(raw) {
        Ok(dossier) => normalize(&dossier, tables, now),
        Err(error) => Normalized {
            source_id: None,
            dossier_code: None,
            source_agency_id: None,
            unit: None,
            procedure_code: None,
            reception_day: None,
            updated_at: None,
            outcome: Outcome::Rejected(vec![Finding {
                code: "malformed_record",
                field: String::new(),
                detail: error.to_string(),
                value: None,
            }]),
            warnings: Vec::new(),
        },
    }
}

/// Normalizes one parsed record.
pub fn normalize(dossier: &SourceDossier, _tables: &MappingTables, _now: Timestamp) -> Normalized {
    // Stub until the normalizer lands: every record is held back.
    Normalized {
        source_id: Some(dossier.id.clone()),
        dossier_code: dossier.code.clone(),
        source_agency_id: dossier.agency.as_ref().and_then(|agency| agency.id.clone()),
        unit: None,
        procedure_code: None,
        reception_day: None,
        updated_at: None,
        outcome: Outcome::Rejected(Vec::new()),
        warnings: Vec::new(),
    }
}
