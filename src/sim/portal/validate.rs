//! The portal's checks of one dossier or progress entry (portal-api.md section 3, "Portal-side
//! validation"), on the raw JSON so that any mistake, however shaped, becomes a per-item code naming the
//! field instead of a refused request.
//!
//! Checks run in a fixed order and the first failure wins: required fields, text (NFC, no control
//! characters), lengths, code lists, date formats, date consistency, nested lists, code shapes, and last
//! the catalogs (code 5). Everything is linear in the size of the item.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value};

/// Why the portal refused one item: its per-item code (2 or 5) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rejection {
    pub code: i64,
    pub message: String,
}

impl Rejection {
    fn invalid(field: &str, reason: &str) -> Self {
        Rejection {
            code: 2,
            message: format!("Trường {field} không hợp lệ: {reason}"),
        }
    }
    fn missing(field: &str) -> Self {
        Self::invalid(field, "thiếu hoặc rỗng")
    }
    fn bad_date(field: &str) -> Self {
        Self::invalid(field, "không đúng định dạng yyyyMMddHHmmss")
    }
    fn not_in_list(field: &str) -> Self {
        Self::invalid(field, "không thuộc danh mục mã")
    }
    fn too_long(field: &str, limit: usize) -> Self {
        Self::invalid(field, &format!("dài quá {limit} ký tự"))
    }
}

/// The catalogs a dossier is checked against; `None` knows every well-formed code.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalogs {
    pub units: Option<Arc<HashSet<String>>>,
    pub procedures: Option<Arc<HashSet<String>>>,
}

const DOSSIER_REQUIRED: [&str; 11] = [
    "MaHoSo",
    "MaTTHC",
    "TenTTHC",
    "MaLinhVuc",
    "TenLinhVuc",
    "KenhThucHien",
    "ChuHoSo",
    "LoaiDoiTuong",
    "NgayTiepNhan",
    "TrangThaiHoSo",
    "DonViXuLy",
];

/// Fields that must be JSON strings when present (codes and dates are checked on their own).
const DOSSIER_TEXT: [&str; 14] = [
    "MaHoSo",
    "MaTTHC",
    "TenTTHC",
    "MaLinhVuc",
    "TenLinhVuc",
    "ChuHoSo",
    "SoGiayToChuHoSo",
    "MaDoiTuong",
    "Email",
    "SoDienThoai",
    "Fax",
    "TrichYeuHoSo",
    "DonViXuLy",
    "GhiChu",
];

const DOSSIER_LENGTHS: [(&str, usize); 4] = [
    ("MaHoSo", 50),
    ("TenTTHC", 500),
    ("ChuHoSo", 200),
    ("TrichYeuHoSo", 1000),
];

/// Top-level code fields and their allowed values (inclusive ranges).
const DOSSIER_CODES: [(&str, i64, i64); 7] = [
    ("KenhThucHien", 1, 3),
    ("LoaiDoiTuong", 1, 4),
    ("TrangThaiHoSo", 1, 10),
    ("HinhThuc", 0, 1),
    ("DuocThanhToanTrucTuyen", 1, 2),
    ("HoSoCoThanhPhanSoHoa", 0, 1),
    ("TaiKhoanDuocXacThucVoiVNeID", 0, 1),
];

const DOSSIER_DATES: [&str; 6] = [
    "NgayNopHoSo",
    "NgayTiepNhan",
    "NgayHenTra",
    "NgayKetThucXuLy",
    "NgayTra",
    "NgayTuChoi",
];

/// Checks one `DongBoHoSoMC` item.
pub(crate) fn validate_dossier(item: &Value, catalogs: &Catalogs) -> Result<(), Rejection> {
    let Some(dossier) = item.as_object() else {
        return Err(Rejection::invalid(
            "data",
            "phần tử không phải đối tượng JSON",
        ));
    };
    for field in DOSSIER_REQUIRED {
        require(dossier, field)?;
    }
    for field in DOSSIER_TEXT {
        check_string(dossier, field)?;
    }
    check_text(dossier)?;
    for (field, limit) in DOSSIER_LENGTHS {
        check_length(dossier, field, limit)?;
    }
    for (field, low, high) in DOSSIER_CODES {
        check_code(dossier, field, low, high)?;
    }
    for field in DOSSIER_DATES {
        check_date(dossier, field)?;
    }
    let status = code_of(dossier, "TrangThaiHoSo").unwrap_or_default();
    if !matches!(status, 1 | 3 | 7) {
        require(dossier, "NgayHenTra")?;
    }
    if matches!(status, 9 | 10) {
        require(dossier, "NgayKetThucXuLy")?;
    }
    if status == 10 {
        require(dossier, "NgayTra")?;
    }
    if let (Some(received), Some(due)) = (
        text_of(dossier, "NgayTiepNhan"),
        text_of(dossier, "NgayHenTra"),
    ) {
        // Both are 14 ASCII digits by now, so text order is time order.
        if due < received {
            return Err(Rejection::invalid("NgayHenTra", "nhỏ hơn NgayTiepNhan"));
        }
    }
    check_nested(dossier)?;

    let unit = text_of(dossier, "DonViXuLy").unwrap_or_default();
    if !is_unit_code(unit) {
        return Err(Rejection::invalid(
            "DonViXuLy",
            "không đúng dạng ddd.dd.dd.Ldd",
        ));
    }
    let procedure = text_of(dossier, "MaTTHC").unwrap_or_default();
    if !is_procedure_code(procedure) {
        return Err(Rejection::invalid("MaTTHC", "không đúng dạng d.dddddd"));
    }
    if catalogs
        .units
        .as_ref()
        .is_some_and(|units| !units.contains(unit))
    {
        return Err(Rejection {
            code: 5,
            message: format!("Mã đơn vị DonViXuLy {unit} không có trong danh mục của Cổng"),
        });
    }
    if catalogs
        .procedures
        .as_ref()
        .is_some_and(|procedures| !procedures.contains(procedure))
    {
        return Err(Rejection {
            code: 5,
            message: format!("Mã thủ tục MaTTHC {procedure} không có trong danh mục của Cổng"),
        });
    }
    Ok(())
}

/// Checks one `CapNhatTienDoHoSoMC` item (whether the dossier exists is the caller's business).
pub(crate) fn validate_progress(item: &Value) -> Result<(), Rejection> {
    let Some(entry) = item.as_object() else {
        return Err(Rejection::invalid(
            "data",
            "phần tử không phải đối tượng JSON",
        ));
    };
    for field in ["MaHoSo", "ThoiDiemXuLy", "NoiDungXuLy"] {
        require(entry, field)?;
    }
    for field in [
        "MaHoSo",
        "NguoiXuLy",
        "ChucDanh",
        "PhongBanXuLy",
        "NoiDungXuLy",
    ] {
        check_string(entry, field)?;
    }
    check_text(entry)?;
    for (field, limit) in [("MaHoSo", 50), ("NguoiXuLy", 50), ("NoiDungXuLy", 1000)] {
        check_length(entry, field, limit)?;
    }
    check_code(entry, "TrangThai", 1, 10)?;
    for field in ["ThoiDiemXuLy", "NgayBatDau", "NgayKetThucTheoQuyDinh"] {
        check_date(entry, field)?;
    }
    Ok(())
}

/// Whether `text` is a date `yyyyMMddHHmmss` that exists on the calendar.
pub(crate) fn is_date_time(text: &str) -> bool {
    let bytes = text.as_bytes();
    if bytes.len() != 14 || !bytes.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let number = |range: std::ops::Range<usize>| {
        bytes[range]
            .iter()
            .fold(0i32, |total, digit| total * 10 + i32::from(digit - b'0'))
    };
    let (Ok(month), Ok(day), Ok(hour), Ok(minute), Ok(second)) = (
        i8::try_from(number(4..6)),
        i8::try_from(number(6..8)),
        i8::try_from(number(8..10)),
        i8::try_from(number(10..12)),
        i8::try_from(number(12..14)),
    ) else {
        return false;
    };
    let Ok(year) = i16::try_from(number(0..4)) else {
        return false;
    };
    jiff::civil::DateTime::new(year, month, day, hour, minute, second, 0).is_ok()
}

/// Whether `text` is a day `yyyyMMdd` that exists on the calendar.
pub(crate) fn is_day(text: &str) -> bool {
    text.len() == 8 && is_date_time(&format!("{text}000000"))
}

/// `^[0-9]{3}\.[0-9]{2}\.[0-9]{2}\.[A-Z][0-9]{2}$`
pub(crate) fn is_unit_code(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 13
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            3 | 6 | 9 => *byte == b'.',
            10 => byte.is_ascii_uppercase(),
            _ => byte.is_ascii_digit(),
        })
}

/// `^[0-9]\.[0-9]{6}$`
pub(crate) fn is_procedure_code(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 8
        && bytes.iter().enumerate().all(|(index, byte)| {
            if index == 1 {
                *byte == b'.'
            } else {
                byte.is_ascii_digit()
            }
        })
}

/// A string field's text; `None` when absent, null or not a string.
pub(crate) fn text_of<'a>(object: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    object.get(field).and_then(Value::as_str)
}

/// A code field's value, whether sent as `"2"` or `2`.
fn code_of(object: &Map<String, Value>, field: &str) -> Option<i64> {
    object.get(field).and_then(parse_code)
}

fn require(object: &Map<String, Value>, field: &str) -> Result<(), Rejection> {
    match object.get(field) {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(()),
        Some(Value::Number(_)) => Ok(()),
        _ => Err(Rejection::missing(field)),
    }
}

fn check_string(object: &Map<String, Value>, field: &str) -> Result<(), Rejection> {
    match object.get(field) {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(_) => Err(Rejection::invalid(field, "không phải chuỗi")),
    }
}

fn check_length(object: &Map<String, Value>, field: &str, limit: usize) -> Result<(), Rejection> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(()),
        // Bytes bound characters from above, so most values skip the count.
        Some(Value::String(text)) if text.len() <= limit || text.chars().count() <= limit => Ok(()),
        Some(Value::String(_)) => Err(Rejection::too_long(field, limit)),
        Some(_) => Err(Rejection::invalid(field, "không phải chuỗi")),
    }
}

fn check_code(
    object: &Map<String, Value>,
    field: &str,
    low: i64,
    high: i64,
) -> Result<(), Rejection> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(value) => match parse_code(value) {
            Some(code) if (low..=high).contains(&code) => Ok(()),
            _ => Err(Rejection::not_in_list(field)),
        },
    }
}

fn check_date(object: &Map<String, Value>, field: &str) -> Result<(), Rejection> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(text)) if is_date_time(text) => Ok(()),
        Some(_) => Err(Rejection::bad_date(field)),
    }
}

/// Every string in the item, at any depth, must be NFC without control characters.
fn check_text(object: &Map<String, Value>) -> Result<(), Rejection> {
    for (key, value) in object {
        if let Some(path) = bad_text_path(value) {
            let field = if path.is_empty() {
                key.clone()
            } else {
                format!("{key}{path}")
            };
            return Err(Rejection::invalid(
                &field,
                "không phải Unicode NFC hoặc chứa ký tự điều khiển",
            ));
        }
    }
    Ok(())
}

/// The path (relative to `value`, like `[0].TenTepDinhKem`) of the first bad string inside it.
fn bad_text_path(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => (!is_clean_text(text)).then(String::new),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(index, item)| bad_text_path(item).map(|path| format!("[{index}]{path}"))),
        Value::Object(fields) => fields
            .iter()
            .find_map(|(key, item)| bad_text_path(item).map(|path| format!(".{key}{path}"))),
        _ => None,
    }
}

fn is_clean_text(text: &str) -> bool {
    if text.is_ascii() {
        return !text.bytes().any(|byte| byte.is_ascii_control());
    }
    !text.chars().any(char::is_control) && unicode_normalization::is_nfc(text)
}

/// The lists inside a dossier: identifiers, files, fees and supplement requests.
fn check_nested(dossier: &Map<String, Value>) -> Result<(), Rejection> {
    for_each_entry(dossier, "DinhDanhCHS", |entry, name| {
        require(entry, "LoaiDinhDanh").map_err(|_| Rejection::missing(&name("LoaiDinhDanh")))?;
        require(entry, "SoDinhDanh").map_err(|_| Rejection::missing(&name("SoDinhDanh")))?;
        check_code(entry, "LoaiDinhDanh", 1, 3)
            .map_err(|_| Rejection::not_in_list(&name("LoaiDinhDanh")))
    })?;
    for_each_entry(dossier, "TaiLieuNop", |entry, name| {
        for flag in ["DuocSoHoa", "DuocTaiSuDung", "DuocLayTuKhoDMQG"] {
            check_code(entry, flag, 0, 1).map_err(|_| Rejection::not_in_list(&name(flag)))?;
        }
        Ok(())
    })?;
    for_each_entry(dossier, "DanhSachLePhi", |entry, name| {
        let whole = match entry.get("Gia") {
            None | Some(Value::Null) => true,
            Some(Value::Number(number)) => number.as_u64().is_some(),
            Some(Value::String(text)) => {
                !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
            }
            Some(_) => false,
        };
        if whole {
            Ok(())
        } else {
            Err(Rejection::invalid(
                &name("Gia"),
                "không phải số nguyên đồng",
            ))
        }
    })?;
    for_each_entry(dossier, "DanhSachHoSoBoSung", |entry, name| {
        for field in ["NgayBoSung", "NgayHenTraTruoc", "NgayHenTraMoi"] {
            check_date(entry, field).map_err(|_| Rejection::bad_date(&name(field)))?;
        }
        Ok(())
    })
}

/// Runs `check` on every object of the list `field` (absent or null: nothing to check), giving it a
/// function that names a sub-field like `TaiLieuNop[2].DuocSoHoa`.
fn for_each_entry(
    dossier: &Map<String, Value>,
    field: &str,
    check: impl Fn(&Map<String, Value>, &dyn Fn(&str) -> String) -> Result<(), Rejection>,
) -> Result<(), Rejection> {
    let entries = match dossier.get(field) {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(Rejection::invalid(field, "không phải danh sách")),
    };
    for (index, entry) in entries.iter().enumerate() {
        let Some(entry) = entry.as_object() else {
            return Err(Rejection::invalid(
                &format!("{field}[{index}]"),
                "không phải đối tượng JSON",
            ));
        };
        check(entry, &|sub_field| format!("{field}[{index}].{sub_field}"))?;
    }
    Ok(())
}

/// Reads a code that travels as a JSON number or as a string of digits (`2`, `"2"`, `"02"`): the
/// simulator's own reading, apart from the daemon's, so that the two can disagree.
pub(super) fn parse_code(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::Number(number) => number.as_i64(),
        serde_json::Value::String(text) => {
            let digits = text.trim();
            let unsigned = digits.strip_prefix('-').unwrap_or(digits);
            if unsigned.is_empty() || !unsigned.bytes().all(|byte| byte.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_must_exist_on_the_calendar() {
        assert!(is_date_time("20240229235959"));
        assert!(!is_date_time("20230229120000"));
        assert!(!is_date_time("20240115246000"));
        assert!(!is_date_time("2024-01-15 09:00"));
        assert!(is_day("20240131"));
        assert!(!is_day("20240132"));
    }

    #[test]
    fn code_shapes() {
        assert!(is_unit_code("000.00.31.H60"));
        assert!(!is_unit_code("000.00.31.h60"));
        assert!(!is_unit_code("000.00.31H60"));
        assert!(is_procedure_code("1.004227"));
        assert!(!is_procedure_code("1.004227.000.00.00.H60"));
    }

    #[test]
    fn text_must_be_nfc_without_controls() {
        assert!(is_clean_text("Nguyễn Văn A"));
        assert!(!is_clean_text("Nguye\u{0302}\u{0303}n"));
        assert!(!is_clean_text("a\tb"));
        assert!(!is_clean_text("Hà\u{0085}Nội"));
    }
}
