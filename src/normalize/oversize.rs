//! Records over `source.max_record_bytes` (source-api.md quirk 14): held back whole as `oversize_record`
//! without being parsed, filed under their id and `updatedDate`, and stored as a small stub instead of their
//! bytes. The ingest and the `normalize` command both give their verdict here.

use jiff::Timestamp;

use super::{Finding, Normalized, Outcome, codes, dates};
use crate::source::wire::RecordHeader;

/// What the ledger stores in place of a record over `source.max_record_bytes`: its id, `updatedDate`
/// (read without parsing the whole record), size and hash, so the operator can find it at the source.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OversizeStub {
    tthc_sync_oversize_record: bool,
    id: String,
    /// The record's `updatedDate`, Unix ms.
    #[serde(default)]
    updated_ms: Option<i64>,
    /// The size of the record the stub stands for.
    pub bytes: usize,
    /// The hex blake3 of the record the stub stands for.
    pub blake3: String,
}

impl OversizeStub {
    const PREFIX: &'static str = "{\"tthcSyncOversizeRecord\":true";

    /// Reads a stored stub; `None` for anything else (a record as the source sent it).
    pub fn read(raw: &str) -> Option<OversizeStub> {
        if !raw.starts_with(Self::PREFIX) {
            return None;
        }
        serde_json::from_str(raw).ok()
    }
}

/// The verdict on `raw`, a record over the limit whose hex blake3 is `raw_hash`, and the stub stored in
/// its place.
pub fn oversize_record(id: &str, raw: &str, raw_hash: &str) -> (Normalized, String) {
    let stub = oversize_stub(id, raw, raw_hash);
    (oversize(id, raw.len(), raw_hash, &stub), stub)
}

/// The stub stored in place of `raw`, a record over the limit whose hex blake3 is `raw_hash`.
fn oversize_stub(id: &str, raw: &str, raw_hash: &str) -> String {
    let header: Option<RecordHeader> = serde_json::from_str(raw).ok();
    let updated_ms = header
        .and_then(|header| header.updated_date)
        .and_then(|date| dates::SourceTime::parse(&date))
        .map(|time| time.timestamp().as_millisecond());
    serde_json::to_string(&OversizeStub {
        tthc_sync_oversize_record: true,
        id: id.to_owned(),
        updated_ms,
        bytes: raw.len(),
        blake3: raw_hash.to_owned(),
    })
    .unwrap_or_default()
}

/// The verdict on a record over the limit: held back, filed under its id and `updatedDate` only.
pub fn oversize(id: &str, bytes: usize, hash: &str, stub: &str) -> Normalized {
    let updated_at = OversizeStub::read(stub)
        .and_then(|stub| stub.updated_ms)
        .and_then(|millis| Timestamp::from_millisecond(millis).ok());
    Normalized {
        source_id: Some(id.to_owned()),
        dossier_code: None,
        source_agency_id: None,
        unit: None,
        procedure_code: None,
        reception_day: None,
        updated_at,
        outcome: Outcome::Rejected(vec![Finding {
            code: codes::OVERSIZE_RECORD,
            field: String::new(),
            detail: format!(
                "the record is {bytes} bytes, more than source.max_record_bytes; kept as its id, size and blake3 {}",
                &hash[..hash.len().min(16)]
            ),
            value: None,
        }]),
        warnings: Vec::new(),
    }
}
