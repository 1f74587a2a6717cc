//! Masking of personal data for every output that is not the portal payload (mapping.md, Personal data):
//! names as initials, numbers with their last three digits, e-mails with their first letter and domain,
//! free texts not at all. Logs, reports, exports, metrics, the dashboard and rejection findings all mask
//! through this module, so that there is one place to get it right.

/// What a free text becomes: it is never shown, because it often holds names and numbers.
pub const FREE_TEXT_MASK: &str = "[…]";

/// `Nguyễn Thị Hoa` → `N. T. H.`: the first letter of each word.
pub fn mask_name(name: &str) -> String {
    let mut out = String::new();
    for word in name.split_whitespace() {
        if let Some(initial) = word.chars().next() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.extend(initial.to_uppercase());
            out.push('.');
        }
    }
    out
}

/// `008185001234` → `*********234`: every character but the last three digits becomes `*`; a value of
/// three characters or fewer is masked entirely, since it would otherwise be shown whole.
pub fn mask_number(number: &str) -> String {
    let trimmed = number.trim();
    let count = trimmed.chars().count();
    if count <= 3 {
        return "*".repeat(count.max(3));
    }
    let keep_from = count - 3;
    trimmed
        .chars()
        .enumerate()
        .map(|(index, character)| if index < keep_from { '*' } else { character })
        .collect()
}

/// `hoa@example.vn` → `h***@example.vn`. Without an `@` it is not an address and is masked as a number.
pub fn mask_email(email: &str) -> String {
    let trimmed = email.trim();
    match trimmed.rsplit_once('@') {
        Some((local, domain)) => {
            let first = local.chars().next().map(String::from).unwrap_or_default();
            format!("{first}***@{domain}")
        }
        None => mask_number(trimmed),
    }
}

/// A message from the other side (an HTTP error body) made fit for logs: it may echo what we sent, so
/// every run of five or more digits keeps only its last three, every word with an `@` is masked as an
/// e-mail, and the text is cut to `limit` characters. Names cannot be told from other words; a body
/// that echoed a whole payload would still show them, which is why only error bodies come here.
pub fn mask_message(text: &str, limit: usize) -> String {
    let mut out = String::with_capacity(text.len().min(limit * 4));
    for (index, word) in text.split_inclusive(char::is_whitespace).enumerate() {
        if index > 0 && out.chars().count() >= limit {
            break;
        }
        let (core, space) = word.split_at(word.trim_end().len());
        if core.contains('@') {
            out.push_str(&mask_email(core));
        } else {
            let mut digits = String::new();
            for character in core.chars() {
                if character.is_ascii_digit() {
                    digits.push(character);
                    continue;
                }
                flush_digits(&mut out, &mut digits);
                out.push(character);
            }
            flush_digits(&mut out, &mut digits);
        }
        out.push_str(space);
    }
    match out.char_indices().nth(limit) {
        Some((cut, _)) => format!("{}…", &out[..cut]),
        None => out,
    }
}

fn flush_digits(out: &mut String, digits: &mut String) {
    if digits.len() >= 5 {
        out.push_str(&mask_number(digits));
    } else {
        out.push_str(digits);
    }
    digits.clear();
}

/// A free text (summary, note, address, file name): not shown at all.
pub fn mask_free_text(_text: &str) -> String {
    FREE_TEXT_MASK.to_owned()
}

/// How a field's value is shown outside the portal payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A person's name: initials.
    Name,
    /// An identity number, tax code, phone or fax: last three digits.
    Number,
    /// An e-mail address.
    Email,
    /// A free text that may hold personal data: not shown.
    FreeText,
    /// Codes, dates, statuses: not personal, shown as they are.
    Public,
}

/// Classifies a field by its source path (`applicant.fullname`, `history[2].actor`, `note`, ...) or its
/// portal name (`ChuHoSo`, `SoDienThoai`, ...). Unknown fields are treated as free text: when in doubt,
/// do not show.
pub fn field_kind(field: &str) -> FieldKind {
    // The last path segment, without an index: `history[2].actor` → `actor`.
    let leaf = field.rsplit('.').next().unwrap_or(field);
    let leaf = leaf.split('[').next().unwrap_or(leaf);
    match leaf {
        "fullname" | "actor" | "requestedBy" | "ChuHoSo" | "NguoiXuLy" | "NguoiYeuCauBoSung" => {
            FieldKind::Name
        }
        "identityNumber" | "taxCode" | "phone" | "fax" | "SoGiayToChuHoSo" | "DinhDanhCHS"
        | "SoDinhDanh" | "MaDoiTuong" | "SoDienThoai" | "Fax" => FieldKind::Number,
        "email" | "Email" => FieldKind::Email,
        "id"
        | "code"
        | "agency"
        | "procedure"
        | "sector"
        | "applyMethod"
        | "dossierStatus"
        | "returnMethod"
        | "statusId"
        | "type"
        | "amount"
        | "paymentChannel"
        | "kind"
        | "componentCode"
        | "submittedDate"
        | "acceptedDate"
        | "appointmentDate"
        | "completedDate"
        | "returnedDate"
        | "rejectedDate"
        | "updatedDate"
        | "deletedDate"
        | "startedAt"
        | "finishedAt"
        | "dueAt"
        | "requestedAt"
        | "previousAppointment"
        | "newAppointment"
        | "MaHoSo"
        | "MaTTHC"
        | "DonViXuLy"
        | "TrangThaiHoSo"
        | "KenhThucHien"
        | "LoaiDoiTuong"
        | "fees"
        | "title"
        | "department"
        | "" => FieldKind::Public,
        // Procedure and sector names are catalogue text, not personal; `name` elsewhere is a file name.
        "name" if field.starts_with("procedure") || field.starts_with("agency") => {
            FieldKind::Public
        }
        _ => FieldKind::FreeText,
    }
}

/// Masks a value according to the field it came from (see [`field_kind`]).
pub fn mask_field(field: &str, value: &str) -> String {
    match field_kind(field) {
        FieldKind::Name => mask_name(value),
        FieldKind::Number => mask_number(value),
        FieldKind::Email => mask_email(value),
        FieldKind::FreeText => mask_free_text(value),
        FieldKind::Public => value.to_owned(),
    }
}

/// Portal payload fields that retention drops: personal numbers and contacts, free texts, file names, the
/// people behind supplement requests (mapping.md, Personal data).
const REDACTED_FIELDS: &[&str] = &[
    "SoGiayToChuHoSo",
    "DinhDanhCHS",
    "MaDoiTuong",
    "Email",
    "SoDienThoai",
    "Fax",
    "TrichYeuHoSo",
    "GhiChu",
    "TenTepDinhKem",
    "TenGiayTo",
    "NguoiYeuCauBoSung",
    "NoiDungBoSung",
    "NoiDungXuLy",
];

/// Retention: a portal payload without its personal data, for a finished dossier kept past
/// `store.retention_days`. The applicant's name (a required field) becomes empty, the fields above and
/// any address (`DiaChi…`) go, and file links keep only the fact that there was one (`[…]`), which the
/// indicator preview counts. Codes, dates, statuses, flags and fees stay. A payload that is not a JSON
/// object becomes `{}`.
pub fn redact_payload(payload: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(payload) {
        Ok(mut value @ serde_json::Value::Object(_)) => {
            redact_value(&mut value);
            value.to_string()
        }
        _ => "{}".to_owned(),
    }
}

fn redact_value(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(fields) => {
            fields.retain(|key, _| {
                !REDACTED_FIELDS.contains(&key.as_str()) && !key.starts_with("DiaChi")
            });
            for (key, field) in fields.iter_mut() {
                match key.as_str() {
                    "ChuHoSo" | "NguoiXuLy" => *field = serde_json::Value::String(String::new()),
                    "DuongDanTaiTepTin" | "DuongDanTepTinKetQua" if !field.is_null() => {
                        *field = serde_json::Value::String(FREE_TEXT_MASK.to_owned())
                    }
                    _ => redact_value(field),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_value),
        _ => {}
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn messages_lose_long_numbers_and_addresses() {
        let masked = mask_message(
            "400 Bad Request: SoDienThoai 0912345678 of hoa@example.vn, MaHoSo 12 invalid",
            200,
        );
        assert_eq!(
            masked,
            "400 Bad Request: SoDienThoai *******678 of h***@example.vn, MaHoSo 12 invalid"
        );
        assert_eq!(
            mask_message(&"x".repeat(500), 10),
            format!("{}…", "x".repeat(10))
        );
    }

    use super::*;

    #[test]
    fn retention_keeps_what_the_indicators_read_and_nothing_personal() {
        let payload = r#"{"MaHoSo":"000.00.31.H60-260115-0012","MaTTHC":"1.004227","TenTTHC":"Cấp phép","MaLinhVuc":"XD","TenLinhVuc":"Xây dựng",
            "KenhThucHien":"2","ChuHoSo":"Nguyễn Văn A","SoGiayToChuHoSo":"001085001234",
            "DinhDanhCHS":[{"LoaiDinhDanh":"1","SoDinhDanh":"001085001234"}],"LoaiDoiTuong":"1",
            "Email":"a@example.vn","SoDienThoai":"0912345678","TrichYeuHoSo":"Xin cấp phép cho Nguyễn Văn A",
            "NgayTiepNhan":"20260115080000","TrangThaiHoSo":"10","DonViXuLy":"000.00.31.H60",
            "TaiLieuNop":[{"TenTepDinhKem":"cccd-nguyen-van-a.pdf","DuongDanTaiTepTin":"https://x/a.pdf",
            "DuocSoHoa":"1","DuocTaiSuDung":"0","DuocLayTuKhoDMQG":"0"}],
            "DanhSachGiayToKetQua":[{"TenGiayTo":"Giấy phép Nguyễn Văn A","DuongDanTepTinKetQua":"https://k/kq.pdf"}],
            "DanhSachLePhi":[{"Gia":75000}],"GhiChu":"gọi 0912345678","DiaChiThuongTru":"12 Lê Lợi"}"#;
        let redacted = redact_payload(payload);
        for personal in [
            "Nguyễn",
            "001085001234",
            "0912345678",
            "example.vn",
            "cccd",
            "a.pdf",
            "kq.pdf",
            "Lê Lợi",
        ] {
            assert!(!redacted.contains(personal), "{personal} in {redacted}");
        }
        // Read back by the portal's field names (portal-api.md), not the daemon's wire types.
        let dossier: serde_json::Value = serde_json::from_str(&redacted).unwrap();
        assert_eq!(dossier["TrangThaiHoSo"], "10");
        assert_eq!(dossier["ChuHoSo"], "");
        assert_eq!(dossier["TaiLieuNop"][0]["DuocSoHoa"], "1");
        assert_eq!(
            dossier["DanhSachGiayToKetQua"][0]["DuongDanTepTinKetQua"],
            FREE_TEXT_MASK
        );
        assert_eq!(dossier["DanhSachLePhi"][0]["Gia"], 75000);
        assert_eq!(redact_payload("not json"), "{}");
    }

    #[test]
    fn masks_as_mapping_md_shows() {
        assert_eq!(mask_name("Nguyễn Thị Hoa"), "N. T. H.");
        assert_eq!(mask_name("  đỗ   văn  "), "Đ. V.");
        assert_eq!(mask_number("008185001234"), "*********234");
        assert_eq!(mask_number("0912345678"), "*******678");
        assert_eq!(mask_number("12"), "***");
        assert_eq!(mask_email("hoa@example.vn"), "h***@example.vn");
        assert_eq!(mask_free_text("Xin cấp phép cho Nguyễn Thị Hoa"), "[…]");
    }

    #[test]
    fn masks_by_field() {
        assert_eq!(
            mask_field("applicant.fullname", "Nguyễn Thị Hoa"),
            "N. T. H."
        );
        assert_eq!(mask_field("applicant.phone", "0912345678"), "*******678");
        assert_eq!(
            mask_field("applicant.email", "hoa@example.vn"),
            "h***@example.vn"
        );
        assert_eq!(mask_field("history[0].actor", "Trần Văn Bình"), "T. V. B.");
        assert_eq!(mask_field("summary", "nhà của Hoa"), "[…]");
        assert_eq!(mask_field("attachments[0].name", "CCCD Hoa.pdf"), "[…]");
        assert_eq!(mask_field("applicant.address", "Thôn 3"), "[…]");
        assert_eq!(mask_field("acceptedDate", "2024-01-15"), "2024-01-15");
        assert_eq!(mask_field("procedure.name", "Cấp phép"), "Cấp phép");
        assert_eq!(mask_field("something.new", "secret"), "[…]");
    }
}
