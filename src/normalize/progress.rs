//! Progress entries (`CapNhatTienDoHoSoMC`) from the source's `history[]`: one per processing step, keyed
//! as the portal identifies them, (`MaHoSo`, `ThoiDiemXuLy`, `NoiDungXuLy`).

use crate::portal::payload;
use crate::portal::wire::ProgressEntry;
use crate::source::wire::HistoryEntry;

use super::PortalProgress;
use super::codes;
use super::findings::{Collector, Field};
use super::status::StatusMapping;
use super::tables::MappingTables;
use super::text::{LIMIT_ACTOR, LIMIT_PROGRESS_CONTENT};

/// Bytes reserved for an entry's payload before writing it: most are 300 to 500 bytes.
const PAYLOAD_CAPACITY: usize = 512;

/// Separates the parts of the identifying triple before hashing; it cannot occur in cleaned text.
const KEY_SEPARATOR: &str = "\u{1f}";

/// Builds the progress entries; a step without a time or without content is left out with the warning
/// `progress_dropped`.
pub fn entries(
    dossier_code: &str,
    history: &[HistoryEntry],
    tables: &MappingTables,
    collector: &mut Collector,
) -> Vec<ProgressEntry> {
    let mut entries = Vec::with_capacity(history.len());
    for (index, step) in history.iter().enumerate() {
        let field = |name| Field::Item("history", index, name);
        let started = collector.date(field("startedAt"), step.started_at.as_ref());
        let finished = collector.date(field("finishedAt"), step.finished_at.as_ref());
        let due = collector.date(field("dueAt"), step.due_at.as_ref());
        let content = collector.text(
            field("content"),
            step.content.as_deref(),
            Some(LIMIT_PROGRESS_CONTENT),
        );
        let status = step.status_id.as_ref().and_then(|raw| {
            let mapped = raw.as_i64().and_then(|id| tables.status_for(id));
            match mapped {
                Some(StatusMapping::Portal(status)) => Some(status.as_str().to_owned()),
                // A step recorded under a status that is never synced carries no portal status.
                Some(StatusMapping::Skip) => None,
                None => {
                    let shown = super::lenient_int_text(raw);
                    collector.reject(
                        codes::UNMAPPED_STATUS,
                        field("statusId"),
                        "status not in the status table",
                        Some(&shown),
                    );
                    None
                }
            }
        });
        let Some(time) = finished.or(started) else {
            collector.warn(
                codes::PROGRESS_DROPPED,
                field("finishedAt"),
                "step without finishedAt or startedAt",
                None,
            );
            continue;
        };
        let Some(content) = content else {
            collector.warn(
                codes::PROGRESS_DROPPED,
                field("content"),
                "step without content",
                None,
            );
            continue;
        };
        entries.push(ProgressEntry {
            ma_ho_so: dossier_code.to_owned(),
            nguoi_xu_ly: collector.text(field("actor"), step.actor.as_deref(), Some(LIMIT_ACTOR)),
            chuc_danh: collector.text(field("title"), step.title.as_deref(), None),
            thoi_diem_xu_ly: time.portal_string(),
            phong_ban_xu_ly: collector.text(field("department"), step.department.as_deref(), None),
            noi_dung_xu_ly: content,
            trang_thai: status,
            ngay_bat_dau: started.map(|time| time.portal_string()),
            ngay_ket_thuc_theo_quy_dinh: due.map(|time| time.portal_string()),
        });
    }
    entries
}

/// Writes an entry's payload and derives its key and hash.
pub fn seal(entry: ProgressEntry) -> PortalProgress {
    // Room for a typical entry up front, rather than growing from a small start by copying.
    let mut payload = Vec::with_capacity(PAYLOAD_CAPACITY);
    payload::write_progress_entry(&mut payload, &entry);
    let mut key = blake3::Hasher::new();
    key.update(entry.ma_ho_so.as_bytes());
    key.update(KEY_SEPARATOR.as_bytes());
    key.update(entry.thoi_diem_xu_ly.as_bytes());
    key.update(KEY_SEPARATOR.as_bytes());
    key.update(entry.noi_dung_xu_ly.as_bytes());
    let hash = blake3::hash(&payload).to_hex().as_str().to_owned();
    PortalProgress {
        key: key.finalize().to_hex().as_str().to_owned(),
        hash,
        payload,
        entry,
    }
}
