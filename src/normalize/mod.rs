//! Normalization: a source dossier and the mapping tables in, a portal payload (or rejections) out
//! (`../shared/spec/mapping.md`). Pure: no I/O, no clock (the caller passes `now`), no panics on any input.

//!
//! Files by concern: [`text`] (TCVN3, NFC, control characters, limits) with [`syllable`] (the Vietnamese
//! syllable validator), [`dates`], [`contacts`] (phones, e-mail, identity number, tax code), [`status`],
//! [`units`] (unit table, successions), [`procedures`], [`lists`] (fees, attachments, supplements),
//! [`progress`] (history entries), [`codes`] (rejection and warning codes with their messages),
//! [`tables`] (the operator's mapping tables); `dossier` assembles them and `findings` collects what
//! went wrong.

pub mod codes;
pub mod contacts;
pub mod dates;
mod dossier;

mod findings;
pub mod lists;
pub mod procedures;
pub mod progress;
pub mod status;
pub mod syllable;
pub mod tables;
pub mod text;
pub mod units;

use jiff::Timestamp;
use jiff::civil::Date;
use serde_json::Value;

use crate::source::wire::{LenientInt, RawDate, SourceDossier};
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
    if let Some((readable, count)) = crate::source::escapes::lone_surrogates(raw) {
        return invalid_escapes(&readable, count, tables, now);
    }
    match parse_record(raw) {
        Ok(dossier) => normalize(&dossier, tables, now),
        Err(error) => malformed(raw, &error),
    }
}

/// Parses one record's raw JSON bytes, as [`normalize_bytes`] does.
pub fn parse_record(raw: &[u8]) -> Result<SourceDossier, serde_json::Error> {
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
        LenientInt::Text(text) => text.clone(),
        LenientInt::Float(value) => value.to_string(),
    }
}

/// A record that does not fit the SourceDossier shape. serde's own message quotes the offending value,
/// which may be personal data (an applicant's name where an object was expected), so the finding names
/// the field and the JSON type found instead, and the identifying fields are read leniently.
fn malformed(raw: &[u8], error: &serde_json::Error) -> Normalized {
    let value: Option<Value> = serde_json::from_slice(raw).ok();
    let object = value.as_ref().and_then(Value::as_object);
    let text_of = |value: Option<&Value>| match value {
        Some(Value::String(text)) => Some(text.trim().to_owned()),
        Some(Value::Number(number)) => Some(number.to_string()),
        _ => None,
    };
    let (field, detail) = match (&value, object) {
        (None, _) => (
            String::new(),
            format!(
                "not valid JSON ({:?} at line {}, column {})",
                error.classify(),
                error.line(),
                error.column()
            ),
        ),
        (Some(other), None) => (
            String::new(),
            format!("the record is {}, not an object", json_kind(other)),
        ),
        (Some(_), Some(object)) => match locate_malformed(object) {
            Some((field, kind)) => {
                let detail = format!("`{field}` does not have the expected shape (found {kind})");
                (field, detail)
            }
            None => ("id".to_owned(), "the record has no string `id`".to_owned()),
        },
    };
    Normalized {
        source_id: text_of(object.and_then(|o| o.get("id"))),
        dossier_code: text_of(object.and_then(|o| o.get("code"))),
        source_agency_id: text_of(
            object
                .and_then(|o| o.get("agency"))
                .and_then(|a| a.get("id")),
        ),
        unit: None,
        procedure_code: None,
        reception_day: None,
        updated_at: object
            .and_then(|o| o.get("updatedDate"))
            .and_then(|date| serde_json::from_value::<RawDate>(date.clone()).ok())
            .and_then(|date| dates::SourceTime::parse(&date))
            .map(|time| time.timestamp()),
        outcome: Outcome::Rejected(vec![Finding {
            code: codes::MALFORMED_RECORD,
            field,
            detail,
            value: None,
        }]),
        warnings: Vec::new(),
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Finds the field that spoils the record by parsing it alone beside a valid `id`, then one level deeper
/// (an object's keys, an array's items) to name e.g. `fees[1].amount`.
fn locate_malformed(object: &serde_json::Map<String, Value>) -> Option<(String, &'static str)> {
    let fits = |key: &str, value: Value| {
        let mut probe = serde_json::Map::new();
        probe.insert("id".to_owned(), Value::String(String::new()));
        probe.insert(key.to_owned(), value);
        serde_json::from_value::<SourceDossier>(Value::Object(probe)).is_ok()
    };
    if !matches!(object.get("id"), Some(Value::String(_))) {
        return None;
    }
    for (key, value) in object {
        if key == "id" || fits(key, value.clone()) {
            continue;
        }
        let inner = match value {
            Value::Object(inner) => inner.iter().find_map(|(name, item)| {
                let mut alone = serde_json::Map::new();
                alone.insert(name.clone(), item.clone());
                (!fits(key, Value::Object(alone)))
                    .then(|| (format!("{key}.{name}"), json_kind(item)))
            }),
            Value::Array(items) => items.iter().enumerate().find_map(|(index, item)| {
                if fits(key, Value::Array(vec![item.clone()])) {
                    return None;
                }
                let deeper = item.as_object().and_then(|fields| {
                    fields.iter().find_map(|(name, field)| {
                        let mut alone = serde_json::Map::new();
                        alone.insert(name.clone(), field.clone());
                        (!fits(key, Value::Array(vec![Value::Object(alone)])))
                            .then(|| (format!("{key}[{index}].{name}"), json_kind(field)))
                    })
                });
                Some(deeper.unwrap_or_else(|| (format!("{key}[{index}]"), json_kind(item))))
            }),
            _ => None,
        };
        return Some(inner.unwrap_or_else(|| (key.clone(), json_kind(value))));
    }
    None
}
