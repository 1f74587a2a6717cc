//! Serde shapes of the provincial one-stop system's JSON (`../shared/spec/source-api.md`).
//!
//! These are wire types, deliberately lenient where the source is known to be loose (dates in several
//! shapes, numbers as strings): the normalizer, not serde, decides what a value means. A record that does
//! not fit even these shapes is a `malformed_record` rejection, never an error that stops a page.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// A Spring page as the source answers it. `content` is kept raw so that one malformed record does not
/// spoil the page: each record is parsed on its own.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawPage {
    /// Absent on a faulty answer (source-api.md quirk 9): the reader treats that as a transport error.
    pub content: Option<Vec<Box<RawValue>>>,
    #[serde(default)]
    pub number: Option<i64>,
    #[serde(default)]
    pub size: Option<i64>,
    #[serde(default)]
    pub total_elements: Option<i64>,
    #[serde(default)]
    pub total_pages: Option<i64>,
    #[serde(default)]
    pub last: Option<bool>,
}

/// A typed Spring page, for the catalogs and identifier listings.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub content: Vec<T>,
    pub number: i64,
    pub size: i64,
    pub total_elements: i64,
    pub total_pages: i64,
    pub last: bool,
}

/// The fields the feed reader needs from every record, even a malformed one.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordHeader {
    pub id: Option<LenientString>,
    pub updated_date: Option<RawDate>,
}

/// One dossier as the source serves it (source-api.md section 5).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourceDossier {
    pub id: String,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub procedure: Option<ProcedureRef>,
    #[serde(default)]
    pub agency: Option<AgencyRef>,
    #[serde(default)]
    pub apply_method: Option<CodeName>,
    #[serde(default)]
    pub applicant: Option<Applicant>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub submitted_date: Option<RawDate>,
    #[serde(default)]
    pub accepted_date: Option<RawDate>,
    #[serde(default)]
    pub appointment_date: Option<RawDate>,
    #[serde(default)]
    pub completed_date: Option<RawDate>,
    #[serde(default)]
    pub returned_date: Option<RawDate>,
    #[serde(default)]
    pub rejected_date: Option<RawDate>,
    #[serde(default)]
    pub dossier_status: Option<CodeName>,
    #[serde(default)]
    pub return_method: Option<CodeName>,
    #[serde(default)]
    pub fees: Option<Vec<Fee>>,
    #[serde(default)]
    pub attachments: Option<Vec<Attachment>>,
    #[serde(default)]
    pub supplements: Option<Vec<Supplement>>,
    #[serde(default)]
    pub history: Option<Vec<HistoryEntry>>,
    #[serde(default)]
    pub vneid_verified: Option<bool>,
    #[serde(default)]
    pub reuses_digitized_components: Option<bool>,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub updated_date: Option<RawDate>,
    #[serde(default)]
    pub deleted_date: Option<RawDate>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ProcedureRef {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub sector: Option<Sector>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Sector {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgencyRef {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

/// `{"id": 1, "name": "Trực tuyến"}`: the id may arrive as a number or a numeric string.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct CodeName {
    #[serde(default)]
    pub id: Option<LenientInt>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Applicant {
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub fullname: Option<String>,
    #[serde(default)]
    pub identity_number: Option<LenientString>,
    #[serde(default)]
    pub tax_code: Option<LenientString>,
    #[serde(default)]
    pub phone: Option<LenientString>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Fee {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub amount: Option<RawAmount>,
    #[serde(default)]
    pub paid: Option<bool>,
    #[serde(default)]
    pub payment_channel: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub component_code: Option<String>,
    /// `input` (submitted by the applicant) or `result` (a result document).
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub digitized: Option<bool>,
    #[serde(default)]
    pub reused: Option<bool>,
    #[serde(default)]
    pub from_national_repository: Option<bool>,
    /// Result documents may carry the code of the result paper.
    #[serde(default)]
    pub result_code: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Supplement {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub requested_by: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub requested_at: Option<RawDate>,
    #[serde(default)]
    pub previous_appointment: Option<RawDate>,
    #[serde(default)]
    pub new_appointment: Option<RawDate>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    #[serde(default)]
    pub actor: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub department: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub status_id: Option<LenientInt>,
    #[serde(default)]
    pub started_at: Option<RawDate>,
    #[serde(default)]
    pub finished_at: Option<RawDate>,
    #[serde(default)]
    pub due_at: Option<RawDate>,
}

/// A date as the source may write it (source-api.md quirk 5): a string in one of several shapes, or epoch
/// milliseconds as a number.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RawDate {
    Millis(i64),
    Text(String),
    /// A fractional or otherwise odd number; the date rule rejects or truncates it.
    Float(f64),
}

/// A fee amount: `75000`, `75000.0` or `"75.000"` (quirk 7).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum RawAmount {
    Number(serde_json::Number),
    Text(String),
}

/// An integer that may arrive as a number or a string of digits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum LenientInt {
    Int(i64),
    Text(String),
    Float(f64),
}

impl LenientInt {
    /// The integer value, when there is exactly one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            LenientInt::Int(value) => Some(*value),
            LenientInt::Text(text) => text.trim().parse().ok(),
            LenientInt::Float(value) if value.fract() == 0.0 && value.abs() < 1e15 => {
                Some(*value as i64)
            }
            LenientInt::Float(_) => None,
        }
    }
}

/// A string that a migrated row may carry as a number (phones and ID numbers typed into numeric columns).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum LenientString {
    Text(String),
    Number(serde_json::Number),
}

impl LenientString {
    pub fn as_text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            LenientString::Text(text) => std::borrow::Cow::Borrowed(text),
            LenientString::Number(number) => std::borrow::Cow::Owned(number.to_string()),
        }
    }
}

/// `GET /ba/agency` items.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgencyItem {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub parent_id: Option<String>,
    #[serde(default)]
    pub deleted: bool,
}

/// `GET /ba/procedure` items.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcedureItem {
    pub id: String,
    pub code: String,
    pub national_code: Option<String>,
    pub name: String,
    pub sector: Sector,
    #[serde(default)]
    pub has_fee: bool,
}

/// `GET /pa/dossier-statistic/count-by-agency` items.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgencyDayCount {
    pub agency_id: String,
    pub date: String,
    pub count: i64,
}

/// `GET /pa/dossier-statistic/ids` items.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DossierIdItem {
    pub id: String,
    pub code: Option<String>,
    pub updated_date: Option<String>,
}

/// `POST /oauth/token` answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    pub access_token: String,
    #[serde(default)]
    pub token_type: Option<String>,
    #[serde(default)]
    pub expires_in: Option<u64>,
}
