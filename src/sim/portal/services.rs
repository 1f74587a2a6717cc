//! What the portal does with a processed request: sessions, and each `/integration` service of
//! portal-api.md section 2. Items are validated outside the lock; the lock is held only to apply them.

use std::fmt::Write as _;

use rand::RngExt;
use rand::seq::SliceRandom;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::sim::wire::{UnitCatalogItem, UnitDayCount};

use super::faults::AnswerFault;
use super::store::DossierRecord;
use super::validate::{self, Rejection, text_of};
use super::{CallRecord, PortalSim, SimState};

const SESSION_INVALID: &str = "Phiên làm việc không hợp lệ hoặc đã hết hạn";
const NOT_FOUND: &str = "Hồ sơ không tồn tại";

fn answer(code: i64, message: &str) -> Value {
    json!({"error_code": code.to_string(), "message": message})
}

fn item(ma_ho_so: Option<&str>, code: i64, message: &str) -> Value {
    json!({"MaHoSo": ma_ho_so, "error_code": code.to_string(), "message": message})
}

/// Now in Vietnam time (UTC+07:00, no daylight saving), as the number `yyyyMMddHHmmss`.
fn vietnam_now() -> u64 {
    let zone = jiff::tz::TimeZone::fixed(jiff::tz::Offset::constant(7));
    let now = jiff::Timestamp::now().to_zoned_datetime(zone);
    [
        (i64::from(now.year()), 10_000_000_000i64),
        (i64::from(now.month()), 100_000_000),
        (i64::from(now.day()), 1_000_000),
        (i64::from(now.hour()), 10_000),
        (i64::from(now.minute()), 100),
        (i64::from(now.second()), 1),
    ]
    .iter()
    .map(|(part, scale)| part * scale)
    .sum::<i64>()
    .max(0) as u64
}

impl PortalSim {
    /// `POST /auth`.
    pub(super) fn authenticate(&self, dstcode: Option<&str>, body: &[u8]) -> Value {
        let config = self.config();
        let dstcode_ok = match (dstcode, &config.dstcode) {
            (None, _) => false,
            (Some(given), None) => !given.is_empty(),
            (Some(given), Some(expected)) => given == expected,
        };
        if !dstcode_ok {
            return answer(-1, "Thiếu hoặc sai mã định tuyến dstcode");
        }
        let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(body) else {
            return answer(2, "Yêu cầu không hợp lệ");
        };
        if text_of(&request, "username") != Some(config.username.as_str())
            || text_of(&request, "password") != Some(config.password.as_str())
        {
            return answer(-1, "Sai tên đăng nhập hoặc mật khẩu");
        }
        let mut state = self.lock();
        let now = Instant::now();
        if state.sessions.len() >= 1024 {
            state.sessions.retain(|_, expires| *expires > now);
        }
        let mut token = String::with_capacity(32);
        for _ in 0..4 {
            let _ = write!(token, "{:08x}", state.rng.random::<u32>());
        }
        state
            .sessions
            .insert(token.clone(), now + config.session_ttl);
        json!({"error_code": "0", "message": "Thành công", "session": token})
    }

    /// `POST /integration`, after the fault draw let it through.
    pub(super) fn integrate(&self, request: Option<Value>, record: &mut CallRecord) -> Value {
        let Some(Value::Object(mut request)) = request else {
            return answer(2, "Yêu cầu không phải đối tượng JSON hợp lệ");
        };
        let session = text_of(&request, "session").unwrap_or_default();
        if !self.session_valid(session) {
            return answer(-1, SESSION_INVALID);
        }
        match record.service.as_str() {
            "DongBoHoSoMC" => self.sync_dossiers(&mut request, record),
            "CapNhatTienDoHoSoMC" => self.sync_progress(&mut request, record),
            "TraCuuHoSo" => self.look_up(&request),
            "ThongKeHoSoDongBo" => self.count_by_unit_and_day(&request),
            "LayThuTuc" => self.procedure_catalog(&request),
            "LayDanhMucCoQuan" => self.unit_catalog(),
            "" => answer(2, "Trường service không hợp lệ: thiếu hoặc rỗng"),
            other => answer(2, &format!("Dịch vụ {other} không được hỗ trợ")),
        }
    }

    fn session_valid(&self, session: &str) -> bool {
        let state = self.lock();
        state
            .sessions
            .get(session)
            .is_some_and(|expires| Instant::now() < *expires)
    }

    /// Takes `data` out of the request: 1 to `batch_limit` items, else the overall refusal to answer.
    fn take_data(
        &self,
        request: &mut Map<String, Value>,
        record: &mut CallRecord,
    ) -> Result<Vec<Value>, Value> {
        let Some(Value::Array(items)) = request.remove("data") else {
            return Err(answer(2, "Trường data không hợp lệ: phải là danh sách"));
        };
        record.items = items.len();
        let limit = self.config().batch_limit;
        if items.is_empty() {
            return Err(answer(2, "Trường data không hợp lệ: danh sách rỗng"));
        }
        if items.len() > limit {
            return Err(answer(
                2,
                &format!("Vượt quá số lượng hồ sơ cho phép trong một lần gọi ({limit})"),
            ));
        }
        Ok(items)
    }

    /// `DongBoHoSoMC`: create or update dossiers.
    fn sync_dossiers(&self, request: &mut Map<String, Value>, record: &mut CallRecord) -> Value {
        let updating = match request.get("isUpdating") {
            None | Some(Value::Null) => Some(false),
            Some(Value::Bool(flag)) => Some(*flag),
            Some(Value::String(text)) => match text.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => Some(true),
                "false" | "0" => Some(false),
                _ => None,
            },
            Some(_) => None,
        };
        let Some(updating) = updating else {
            return answer(2, "Trường isUpdating không hợp lệ");
        };
        record.is_updating = Some(updating);
        let items = match self.take_data(request, record) {
            Ok(items) => items,
            Err(refusal) => return refusal,
        };
        let catalogs = self.lock().catalogs.clone();
        let verdicts: Vec<Result<(), Rejection>> = items
            .iter()
            .map(|item| validate::validate_dossier(item, &catalogs))
            .collect();

        let updated_at = vietnam_now();
        let mut results = Vec::with_capacity(items.len());
        let mut state = self.lock();
        for (dossier, verdict) in items.into_iter().zip(verdicts) {
            let code = dossier
                .get("MaHoSo")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let (status, message) = match (verdict, &code) {
                (Err(rejection), _) => (rejection.code, rejection.message),
                (Ok(()), None) => (2, "Trường MaHoSo không hợp lệ".to_owned()),
                (Ok(()), Some(code)) => {
                    let record = self.config().record_payloads;
                    store_dossier(&mut state, code, dossier, updating, updated_at, record)
                }
            };
            record.item_codes.push(status);
            results.push(item(code.as_deref(), status, &message));
        }
        json!({"error_code": "0", "message": "Đồng bộ thành công", "result": results})
    }

    /// `CapNhatTienDoHoSoMC`: progress entries of dossiers the portal has.
    fn sync_progress(&self, request: &mut Map<String, Value>, record: &mut CallRecord) -> Value {
        let items = match self.take_data(request, record) {
            Ok(items) => items,
            Err(refusal) => return refusal,
        };
        let verdicts: Vec<Result<(), Rejection>> =
            items.iter().map(validate::validate_progress).collect();
        let mut results = Vec::with_capacity(items.len());
        let mut state = self.lock();
        for (entry, verdict) in items.into_iter().zip(verdicts) {
            let code = entry
                .get("MaHoSo")
                .and_then(Value::as_str)
                .map(str::to_owned);
            let (status, message) = match (verdict, &code) {
                (Err(rejection), _) => (rejection.code, rejection.message),
                (Ok(()), None) => (2, "Trường MaHoSo không hợp lệ".to_owned()),
                (Ok(()), Some(code)) => match state.dossiers.get_mut(code) {
                    None => (4, NOT_FOUND.to_owned()),
                    Some(dossier) => {
                        dossier.add_progress(entry, self.config().record_payloads);
                        (0, "Thành công".to_owned())
                    }
                },
            };
            record.item_codes.push(status);
            results.push(item(code.as_deref(), status, &message));
        }
        json!({"error_code": "0", "message": "Cập nhật tiến độ thành công", "result": results})
    }

    /// Spoils the `result` of a processed delivery call with the answer faults drawn for it (what was
    /// stored stays as it is): entries shuffled, one dropped, one repeated, one invented for a `MaHoSo`
    /// that was not sent, in that order.
    pub(super) fn spoil_answer(&self, answer: &mut Value, record: &mut CallRecord) {
        let Some(Value::Array(entries)) = answer.get_mut("result") else {
            return;
        };
        if entries.is_empty() {
            return;
        }
        let mut state = self.lock();
        let state = &mut *state;
        let faults = state.faults.draw_answer(&mut state.rng);
        for &fault in &faults {
            match fault {
                AnswerFault::Shuffled if entries.len() > 1 => {
                    let before = entries.clone();
                    entries.shuffle(&mut state.rng);
                    if *entries == before {
                        entries.rotate_left(1);
                    }
                }
                AnswerFault::DroppedEntry if !entries.is_empty() => {
                    let at = state.rng.random_range(0..entries.len());
                    entries.remove(at);
                }
                AnswerFault::DuplicatedEntry if !entries.is_empty() => {
                    let copy = entries[state.rng.random_range(0..entries.len())].clone();
                    let at = state.rng.random_range(0..=entries.len());
                    entries.insert(at, copy);
                }
                AnswerFault::UnknownEntry => {
                    let code = unsent_code(state, &record.ma_ho_so);
                    let at = state.rng.random_range(0..=entries.len());
                    entries.insert(at, item(Some(&code), 0, "Thành công"));
                }
                _ => continue,
            }
            *state.faults_injected.entry(fault.name()).or_default() += 1;
            record.answer_faults.push(fault);
        }
    }

    /// `TraCuuHoSo`: the stored dossier with its `NgayCapNhat`.
    fn look_up(&self, request: &Map<String, Value>) -> Value {
        let Some(code) = text_of(request, "mahoso").or_else(|| text_of(request, "MaHoSo")) else {
            return answer(2, "Trường mahoso không hợp lệ: thiếu hoặc rỗng");
        };
        let state = self.lock();
        let Some(record) = state.dossiers.get(code) else {
            return answer(4, NOT_FOUND);
        };
        let mut dossier = record.held.dossier(code, &state.tables);
        if let Value::Object(fields) = &mut dossier {
            fields.insert(
                "NgayCapNhat".to_owned(),
                Value::String(record.updated_at_text()),
            );
        }
        json!({"error_code": "0", "message": "Thành công", "result": [dossier]})
    }

    /// `ThongKeHoSoDongBo`: stored dossiers per `DonViXuLy` and day of `NgayTiepNhan`, both bounds inclusive
    /// and optional.
    fn count_by_unit_and_day(&self, request: &Map<String, Value>) -> Value {
        let mut bounds = [None, None];
        for (bound, field) in bounds.iter_mut().zip(["tungay", "denngay"]) {
            match request.get(field) {
                None | Some(Value::Null) => {}
                Some(Value::String(day)) if validate::is_day(day) => *bound = Some(day.clone()),
                Some(_) => {
                    return answer(2, &format!("Trường {field} không hợp lệ: phải là yyyyMMdd"));
                }
            }
        }
        let [from, to] = bounds;
        let state = self.lock();
        let rows: Vec<UnitDayCount> = state
            .day_counts
            .iter()
            .filter(|((_, day), count)| {
                **count > 0
                    && from.as_ref().is_none_or(|from| day >= from)
                    && to.as_ref().is_none_or(|to| day <= to)
            })
            .map(|((unit, day), count)| UnitDayCount {
                unit: unit.clone(),
                day: day.clone(),
                count: *count,
            })
            .collect();
        json!({"error_code": "0", "message": "Thành công", "result": rows})
    }

    /// `LayThuTuc`: one procedure of the catalog, named after a stored dossier when one uses it.
    fn procedure_catalog(&self, request: &Map<String, Value>) -> Value {
        let Some(code) = ["maTTHC", "MaTTHC", "matthc"]
            .iter()
            .find_map(|field| text_of(request, field))
        else {
            return answer(2, "Trường maTTHC không hợp lệ: thiếu hoặc rỗng");
        };
        let state = self.lock();
        let known = validate::is_procedure_code(code)
            && state
                .catalogs
                .procedures
                .as_ref()
                .is_none_or(|procedures| procedures.contains(code));
        if !known {
            return answer(4, "Thủ tục không tồn tại");
        }
        let example = state
            .dossiers
            .values()
            .map(|record| record.held.procedure(&state.tables))
            .find(|fields| fields[0] == Some(code));
        let field = |at: usize| example.and_then(|fields| fields[at]);
        let sectors = match (field(2), field(3)) {
            (Some(sector), name) => {
                json!([{"MALINHVUC": sector, "TENLINHVUC": name.unwrap_or_default()}])
            }
            (None, _) => json!([]),
        };
        let name = field(1).map_or_else(|| format!("Thủ tục {code}"), str::to_owned);
        json!({"error_code": "0", "message": "Thành công", "result": [{
            "MATTHC": code, "TENTTHC": name, "LINHVUCTHUCHIEN": sectors, "COPHILEPHI": "0"
        }]})
    }

    /// `LayDanhMucCoQuan`: the unit catalog. A simulator without one knows every well-formed code and
    /// lists none (an empty catalog, which a client must not read as "no unit is known").
    fn unit_catalog(&self) -> Value {
        let state = self.lock();
        let mut units: Vec<String> = state
            .catalogs
            .units
            .iter()
            .flat_map(|units| units.iter().cloned())
            .collect();
        units.sort();
        units.dedup();
        let rows: Vec<UnitCatalogItem> = units
            .into_iter()
            .map(|unit| UnitCatalogItem {
                name: Some(format!("Đơn vị {unit}")),
                code: unit,
            })
            .collect();
        json!({"error_code": "0", "message": "Thành công", "result": rows})
    }
}

/// Applies one valid dossier: a create of a new code or an update of a known one; answers the item code.
/// `record`: keep the dossier whole, else only what the portal checks and serves of it.
fn store_dossier(
    state: &mut SimState,
    code: &str,
    dossier: Value,
    updating: bool,
    updated_at: u64,
    record: bool,
) -> (i64, String) {
    let bucket = day_bucket(&dossier);
    let SimState {
        dossiers,
        tables,
        day_counts,
        ..
    } = state;
    match (dossiers.get_mut(code), updating) {
        (Some(_), false) => return (3, "Hồ sơ đã tồn tại".to_owned()),
        (None, true) => return (4, NOT_FOUND.to_owned()),
        (Some(stored), true) => {
            let previous = stored.held.day_bucket(tables);
            stored.replace(dossier, record, updated_at, tables);
            if previous != bucket {
                if let Some(count) = day_counts.get_mut(&previous) {
                    *count -= 1;
                }
                *day_counts.entry(bucket).or_default() += 1;
            }
        }
        (None, false) => {
            let stored = DossierRecord::new(dossier, record, updated_at, tables);
            dossiers.insert(code.to_owned(), stored);
            *day_counts.entry(bucket).or_default() += 1;
        }
    }
    (0, "Thành công".to_owned())
}

/// A well-formed `MaHoSo` that was not among `sent` and that the portal does not hold: a sent code whose
/// last part is replaced by a number the generator never uses (six digits starting with 99; its per-day
/// sequence has four).
fn unsent_code(state: &mut SimState, sent: &[String]) -> String {
    let base = sent
        .iter()
        .find(|code| !code.is_empty())
        .map_or("000.00.00.H60-000101", |code| {
            code.rsplit_once('-')
                .map_or(code.as_str(), |(head, _)| head)
        })
        .to_owned();
    loop {
        let code = format!("{base}-99{:04}", state.rng.random_range(0..10_000u32));
        if !sent.contains(&code) && !state.dossiers.contains_key(&code) {
            return code;
        }
    }
}

/// (DonViXuLy, day of NgayTiepNhan) of a valid dossier.
pub(super) fn day_bucket(dossier: &Value) -> (String, String) {
    let text = |field: &str| {
        dossier
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
    };
    let received = text("NgayTiepNhan");
    (
        text("DonViXuLy").to_owned(),
        received.get(..8).unwrap_or(received).to_owned(),
    )
}
