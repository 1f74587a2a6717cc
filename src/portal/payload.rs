//! The payloads' JSON, written straight from the wire types into one buffer: byte for byte what
//! `serde_json::to_vec` writes for a [`Dossier`] or a [`ProgressEntry`] (same field order, same omitted
//! `None`s, same escapes), without going through serde.
//!
//! Normalization writes every payload and hashes the bytes, so this is on its hot path. serde_json looks
//! at every byte of every string to decide whether it needs escaping; almost none does, so here a string
//! is checked eight bytes at a time and copied whole when it is clean. Each writer takes its struct apart
//! field by field, so a field added to a wire type does not compile until it is written here too, and the
//! tests compare the output with serde_json's for generated structs and every character up to U+FFFF.

use super::wire::{
    Dossier, FeeLine, Identifier, ProgressEntry, ResultDocument, SubmittedFile, SupplementRequest,
};

/// Appends the JSON of a dossier (`DongBoHoSoMC`) to `out`.
pub fn write_dossier(out: &mut Vec<u8>, dossier: &Dossier) {
    let Dossier {
        ma_ho_so,
        ma_tthc,
        ten_tthc,
        ma_linh_vuc,
        ten_linh_vuc,
        kenh_thuc_hien,
        chu_ho_so,
        so_giay_to_chu_ho_so,
        dinh_danh_chs,
        loai_doi_tuong,
        ma_doi_tuong,
        email,
        so_dien_thoai,
        fax,
        trich_yeu_ho_so,
        ngay_nop_ho_so,
        ngay_tiep_nhan,
        ngay_hen_tra,
        trang_thai_ho_so,
        ngay_ket_thuc_xu_ly,
        ngay_tra,
        ngay_tu_choi,
        hinh_thuc,
        don_vi_xu_ly,
        tai_lieu_nop,
        danh_sach_giay_to_ket_qua,
        danh_sach_le_phi,
        danh_sach_ho_so_bo_sung,
        duoc_thanh_toan_truc_tuyen,
        ho_so_co_thanh_phan_so_hoa,
        tai_khoan_duoc_xac_thuc_voi_vneid,
        ghi_chu,
    } = dossier;
    let mut object = Object::open(out);
    object.string("MaHoSo", ma_ho_so);
    object.string("MaTTHC", ma_tthc);
    object.string("TenTTHC", ten_tthc);
    object.string("MaLinhVuc", ma_linh_vuc);
    object.string("TenLinhVuc", ten_linh_vuc);
    object.string("KenhThucHien", kenh_thuc_hien);
    object.string("ChuHoSo", chu_ho_so);
    object.optional_string("SoGiayToChuHoSo", so_giay_to_chu_ho_so);
    object.optional_list("DinhDanhCHS", dinh_danh_chs, write_identifier);
    object.string("LoaiDoiTuong", loai_doi_tuong);
    object.optional_string("MaDoiTuong", ma_doi_tuong);
    object.optional_string("Email", email);
    object.optional_string("SoDienThoai", so_dien_thoai);
    object.optional_string("Fax", fax);
    object.optional_string("TrichYeuHoSo", trich_yeu_ho_so);
    object.optional_string("NgayNopHoSo", ngay_nop_ho_so);
    object.string("NgayTiepNhan", ngay_tiep_nhan);
    object.optional_string("NgayHenTra", ngay_hen_tra);
    object.string("TrangThaiHoSo", trang_thai_ho_so);
    object.optional_string("NgayKetThucXuLy", ngay_ket_thuc_xu_ly);
    object.optional_string("NgayTra", ngay_tra);
    object.optional_string("NgayTuChoi", ngay_tu_choi);
    object.optional_string("HinhThuc", hinh_thuc);
    object.string("DonViXuLy", don_vi_xu_ly);
    object.optional_list("TaiLieuNop", tai_lieu_nop, write_submitted_file);
    object.optional_list(
        "DanhSachGiayToKetQua",
        danh_sach_giay_to_ket_qua,
        write_result_document,
    );
    object.optional_list("DanhSachLePhi", danh_sach_le_phi, write_fee_line);
    object.optional_list(
        "DanhSachHoSoBoSung",
        danh_sach_ho_so_bo_sung,
        write_supplement_request,
    );
    object.optional_string("DuocThanhToanTrucTuyen", duoc_thanh_toan_truc_tuyen);
    object.optional_string("HoSoCoThanhPhanSoHoa", ho_so_co_thanh_phan_so_hoa);
    object.optional_string(
        "TaiKhoanDuocXacThucVoiVNeID",
        tai_khoan_duoc_xac_thuc_voi_vneid,
    );
    object.optional_string("GhiChu", ghi_chu);
    object.close();
}

/// Appends the JSON of a progress entry (`CapNhatTienDoHoSoMC` `data[]`) to `out`.
pub fn write_progress_entry(out: &mut Vec<u8>, entry: &ProgressEntry) {
    let ProgressEntry {
        ma_ho_so,
        nguoi_xu_ly,
        chuc_danh,
        thoi_diem_xu_ly,
        phong_ban_xu_ly,
        noi_dung_xu_ly,
        trang_thai,
        ngay_bat_dau,
        ngay_ket_thuc_theo_quy_dinh,
    } = entry;
    let mut object = Object::open(out);
    object.string("MaHoSo", ma_ho_so);
    object.optional_string("NguoiXuLy", nguoi_xu_ly);
    object.optional_string("ChucDanh", chuc_danh);
    object.string("ThoiDiemXuLy", thoi_diem_xu_ly);
    object.optional_string("PhongBanXuLy", phong_ban_xu_ly);
    object.string("NoiDungXuLy", noi_dung_xu_ly);
    object.optional_string("TrangThai", trang_thai);
    object.optional_string("NgayBatDau", ngay_bat_dau);
    object.optional_string("NgayKetThucTheoQuyDinh", ngay_ket_thuc_theo_quy_dinh);
    object.close();
}

fn write_identifier(out: &mut Vec<u8>, identifier: &Identifier) {
    let Identifier {
        loai_dinh_danh,
        so_dinh_danh,
    } = identifier;
    let mut object = Object::open(out);
    object.string("LoaiDinhDanh", loai_dinh_danh);
    object.string("SoDinhDanh", so_dinh_danh);
    object.close();
}

fn write_submitted_file(out: &mut Vec<u8>, file: &SubmittedFile) {
    let SubmittedFile {
        tep_dinh_kem_id,
        ten_tep_dinh_kem,
        ma_thanh_phan_ho_so,
        duong_dan_tai_tep_tin,
        duoc_so_hoa,
        duoc_tai_su_dung,
        duoc_lay_tu_kho_dmqg,
    } = file;
    let mut object = Object::open(out);
    object.optional_string("TepDinhKemId", tep_dinh_kem_id);
    object.optional_string("TenTepDinhKem", ten_tep_dinh_kem);
    object.optional_string("MaThanhPhanHoSo", ma_thanh_phan_ho_so);
    object.optional_string("DuongDanTaiTepTin", duong_dan_tai_tep_tin);
    object.string("DuocSoHoa", duoc_so_hoa);
    object.string("DuocTaiSuDung", duoc_tai_su_dung);
    object.string("DuocLayTuKhoDMQG", duoc_lay_tu_kho_dmqg);
    object.close();
}

fn write_result_document(out: &mut Vec<u8>, document: &ResultDocument) {
    let ResultDocument {
        ten_giay_to,
        ma_thanh_phan_ho_so,
        giay_to_id,
        duong_dan_tep_tin_ket_qua,
        ma_giay_to_ket_qua,
    } = document;
    let mut object = Object::open(out);
    object.optional_string("TenGiayTo", ten_giay_to);
    object.optional_string("MaThanhPhanHoSo", ma_thanh_phan_ho_so);
    object.optional_string("GiayToId", giay_to_id);
    object.optional_string("DuongDanTepTinKetQua", duong_dan_tep_tin_ket_qua);
    object.optional_string("MaGiayToKetQua", ma_giay_to_ket_qua);
    object.close();
}

fn write_fee_line(out: &mut Vec<u8>, fee: &FeeLine) {
    let FeeLine {
        ten_phi_le_phi,
        ma_phi_le_phi,
        hinh_thuc_thu,
        gia,
        loai_phi_le_phi,
    } = fee;
    let mut object = Object::open(out);
    object.optional_string("TenPhiLePhi", ten_phi_le_phi);
    object.optional_string("MaPhiLePhi", ma_phi_le_phi);
    object.optional_string("HinhThucThu", hinh_thuc_thu);
    object.integer("Gia", *gia);
    object.optional_string("LoaiPhiLePhi", loai_phi_le_phi);
    object.close();
}

fn write_supplement_request(out: &mut Vec<u8>, request: &SupplementRequest) {
    let SupplementRequest {
        ho_so_bo_sung_id,
        nguoi_yeu_cau_bo_sung,
        noi_dung_bo_sung,
        ngay_bo_sung,
        ngay_hen_tra_truoc,
        ngay_hen_tra_moi,
    } = request;
    let mut object = Object::open(out);
    object.optional_string("HoSoBoSungId", ho_so_bo_sung_id);
    object.optional_string("NguoiYeuCauBoSung", nguoi_yeu_cau_bo_sung);
    object.optional_string("NoiDungBoSung", noi_dung_bo_sung);
    object.optional_string("NgayBoSung", ngay_bo_sung);
    object.optional_string("NgayHenTraTruoc", ngay_hen_tra_truoc);
    object.optional_string("NgayHenTraMoi", ngay_hen_tra_moi);
    object.close();
}

/// A JSON object being written: `{`, then `"name":value` members separated by commas, then `}`.
struct Object<'a> {
    out: &'a mut Vec<u8>,
    empty: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut Vec<u8>) -> Object<'a> {
        out.push(b'{');
        Object { out, empty: true }
    }

    /// Writes `"name":`, after a comma unless it is the first member. Names are the wire types' field
    /// names, plain ASCII letters that need no escaping.
    fn name(&mut self, name: &str) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    fn string(&mut self, name: &str, value: &str) {
        self.name(name);
        write_string(self.out, value);
    }

    /// A `None` is left out, as `skip_serializing_if = "Option::is_none"` does.
    fn optional_string(&mut self, name: &str, value: &Option<String>) {
        if let Some(value) = value {
            self.string(name, value);
        }
    }

    fn integer(&mut self, name: &str, value: i64) {
        self.name(name);
        // serde_json writes integers in decimal with a leading minus, as `Display` does. Writing into a
        // `Vec` cannot fail.
        use std::io::Write as _;
        let _ = write!(self.out, "{value}");
    }

    /// A `None` is left out; a list, even an empty one, is written as a JSON array.
    fn optional_list<T>(
        &mut self,
        name: &str,
        items: &Option<Vec<T>>,
        write_item: fn(&mut Vec<u8>, &T),
    ) {
        let Some(items) = items else { return };
        self.name(name);
        self.out.push(b'[');
        for (index, item) in items.iter().enumerate() {
            if index > 0 {
                self.out.push(b',');
            }
            write_item(self.out, item);
        }
        self.out.push(b']');
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// Writes `value` as a JSON string, escaped as serde_json escapes it: `\"`, `\\`, the short forms `\b`,
/// `\t`, `\n`, `\f`, `\r`, and `\u00xx` (lowercase hex) for the other control characters below U+0020.
/// Everything else, U+007F and all non-ASCII included, is copied as it is.
fn write_string(out: &mut Vec<u8>, value: &str) {
    out.reserve(value.len() + 2);
    out.push(b'"');
    let mut rest = value.as_bytes();
    loop {
        let clean = first_to_escape(rest);
        out.extend_from_slice(&rest[..clean]);
        let Some(&byte) = rest.get(clean) else { break };
        write_escape(out, byte);
        rest = &rest[clean + 1..];
    }
    out.push(b'"');
}

fn needs_escape(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

fn write_escape(out: &mut Vec<u8>, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match byte {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        0x08 => out.extend_from_slice(b"\\b"),
        b'\t' => out.extend_from_slice(b"\\t"),
        b'\n' => out.extend_from_slice(b"\\n"),
        0x0c => out.extend_from_slice(b"\\f"),
        b'\r' => out.extend_from_slice(b"\\r"),
        control => out.extend_from_slice(&[
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[usize::from(control >> 4)],
            HEX[usize::from(control & 0xf)],
        ]),
    }
}

/// The index of the first byte that needs escaping, or `bytes.len()` when none does. Eight bytes at a
/// time, the last word overlapping the one before it (its first bytes are already known to be clean);
/// only a value shorter than eight bytes is looked at byte by byte.
fn first_to_escape(bytes: &[u8]) -> usize {
    if bytes.len() < 8 {
        return bytes
            .iter()
            .position(|&byte| needs_escape(byte))
            .unwrap_or(bytes.len());
    }
    let word_at = |offset: usize| {
        let mut word = [0; 8];
        word.copy_from_slice(&bytes[offset..offset + 8]);
        u64::from_le_bytes(word)
    };
    let mut offset = 0;
    while offset + 8 < bytes.len() {
        if let Some(index) = first_flagged_byte(word_at(offset)) {
            return offset + index;
        }
        offset += 8;
    }
    let last = bytes.len() - 8;
    first_flagged_byte(word_at(last)).map_or(bytes.len(), |index| last + index)
}

/// The index of the first of eight bytes (little-endian in `word`) that is below 0x20, a quote or a
/// backslash. The classic "has a zero byte" test, `(x - 0x01…01) & !x & 0x80…80`, flags every such
/// byte; it may also flag bytes after the first one (a borrow carries into them), never before it.
fn first_flagged_byte(word: u64) -> Option<usize> {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH_BITS: u64 = u64::from_le_bytes([0x80; 8]);
    let below_space = word.wrapping_sub(ONES * 0x20) & !word;
    let quotes = word ^ (ONES * u64::from(b'"'));
    let quote = quotes.wrapping_sub(ONES) & !quotes;
    let backslashes = word ^ (ONES * u64::from(b'\\'));
    let backslash = backslashes.wrapping_sub(ONES) & !backslashes;
    let flagged = (below_space | quote | backslash) & HIGH_BITS;
    (flagged != 0).then(|| flagged.trailing_zeros() as usize / 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(value: &str) -> Vec<u8> {
        let mut out = Vec::new();
        write_string(&mut out, value);
        out
    }

    #[test]
    fn every_character_up_to_u_ffff_is_escaped_as_serde_json_does() {
        // Each character alone and between clean text, so that it falls in a word of eight and in the
        // tail, at every position.
        for code in 0..=0xffff_u32 {
            let Some(character) = char::from_u32(code) else {
                continue;
            };
            for value in [
                character.to_string(),
                format!("abc{character}"),
                format!("Nguyễn {character} Văn An, xã Hòa"),
                format!("{character}{character}{character}{character}{character}{character}"),
            ] {
                assert_eq!(
                    written(&value),
                    serde_json::to_vec(&value).unwrap(),
                    "U+{code:04X} in {value:?}"
                );
            }
        }
    }

    #[test]
    fn finds_the_first_byte_to_escape_at_every_position() {
        for length in 0..40 {
            for position in 0..=length {
                for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                    let mut bytes = vec![b'a'; length];
                    if position < length {
                        bytes[position] = special;
                    }
                    assert_eq!(first_to_escape(&bytes), position, "{bytes:?}");
                }
            }
            // Bytes just outside the escaped set are clean.
            let clean: Vec<u8> = [0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xc3, 0xff]
                .into_iter()
                .cycle()
                .take(length)
                .collect();
            assert_eq!(first_to_escape(&clean), length);
        }
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            ".*",
            "[ -~]{0,40}",
            "[\\x00-\\x7f]{0,40}",
            "[a-zA-Zàáạảãăắằẳẵặâấầẩẫậđèéẹẻẽêếềểễệ\"\\\\\\n\\t ]{0,60}",
        ]
    }

    fn optional_text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(text())
    }

    fn optional_list<T: std::fmt::Debug>(
        item: impl Strategy<Value = T>,
    ) -> impl Strategy<Value = Option<Vec<T>>> {
        proptest::option::of(proptest::collection::vec(item, 0..3))
    }

    fn identifier() -> impl Strategy<Value = Identifier> {
        (text(), text()).prop_map(|(loai_dinh_danh, so_dinh_danh)| Identifier {
            loai_dinh_danh,
            so_dinh_danh,
        })
    }

    fn submitted_file() -> impl Strategy<Value = SubmittedFile> {
        (
            optional_text(),
            optional_text(),
            optional_text(),
            optional_text(),
            text(),
            text(),
            text(),
        )
            .prop_map(|(id, name, component, path, digitized, reused, catalog)| {
                SubmittedFile {
                    tep_dinh_kem_id: id,
                    ten_tep_dinh_kem: name,
                    ma_thanh_phan_ho_so: component,
                    duong_dan_tai_tep_tin: path,
                    duoc_so_hoa: digitized,
                    duoc_tai_su_dung: reused,
                    duoc_lay_tu_kho_dmqg: catalog,
                }
            })
    }

    fn result_document() -> impl Strategy<Value = ResultDocument> {
        (
            optional_text(),
            optional_text(),
            optional_text(),
            optional_text(),
            optional_text(),
        )
            .prop_map(|(name, component, id, path, code)| ResultDocument {
                ten_giay_to: name,
                ma_thanh_phan_ho_so: component,
                giay_to_id: id,
                duong_dan_tep_tin_ket_qua: path,
                ma_giay_to_ket_qua: code,
            })
    }

    fn fee_line() -> impl Strategy<Value = FeeLine> {
        (
            optional_text(),
            optional_text(),
            optional_text(),
            any::<i64>(),
            optional_text(),
        )
            .prop_map(|(name, code, how, gia, kind)| FeeLine {
                ten_phi_le_phi: name,
                ma_phi_le_phi: code,
                hinh_thuc_thu: how,
                gia,
                loai_phi_le_phi: kind,
            })
    }

    fn supplement_request() -> impl Strategy<Value = SupplementRequest> {
        (
            optional_text(),
            optional_text(),
            optional_text(),
            optional_text(),
            optional_text(),
            optional_text(),
        )
            .prop_map(
                |(id, requester, content, day, before, after)| SupplementRequest {
                    ho_so_bo_sung_id: id,
                    nguoi_yeu_cau_bo_sung: requester,
                    noi_dung_bo_sung: content,
                    ngay_bo_sung: day,
                    ngay_hen_tra_truoc: before,
                    ngay_hen_tra_moi: after,
                },
            )
    }

    fn dossier() -> impl Strategy<Value = Dossier> {
        let names = (text(), text(), text(), text(), text(), text(), text());
        let applicant = (
            optional_text(),
            optional_list(identifier()),
            text(),
            optional_text(),
            optional_text(),
            optional_text(),
            optional_text(),
            optional_text(),
        );
        let dates = (
            optional_text(),
            text(),
            optional_text(),
            text(),
            optional_text(),
            optional_text(),
            optional_text(),
            optional_text(),
            text(),
        );
        let lists = (
            optional_list(submitted_file()),
            optional_list(result_document()),
            optional_list(fee_line()),
            optional_list(supplement_request()),
        );
        let flags = (
            optional_text(),
            optional_text(),
            optional_text(),
            optional_text(),
        );
        (names, applicant, dates, lists, flags).prop_map(
            |(
                (code, procedure, procedure_name, sector, sector_name, channel, applicant_name),
                (identity, identifiers, kind, tax_code, email, phone, fax, summary),
                (
                    submitted,
                    accepted,
                    appointment,
                    status,
                    completed,
                    returned,
                    refused,
                    method,
                    unit,
                ),
                (files, documents, fees, supplements),
                (paid, digitized, vneid, note),
            )| Dossier {
                ma_ho_so: code,
                ma_tthc: procedure,
                ten_tthc: procedure_name,
                ma_linh_vuc: sector,
                ten_linh_vuc: sector_name,
                kenh_thuc_hien: channel,
                chu_ho_so: applicant_name,
                so_giay_to_chu_ho_so: identity,
                dinh_danh_chs: identifiers,
                loai_doi_tuong: kind,
                ma_doi_tuong: tax_code,
                email,
                so_dien_thoai: phone,
                fax,
                trich_yeu_ho_so: summary,
                ngay_nop_ho_so: submitted,
                ngay_tiep_nhan: accepted,
                ngay_hen_tra: appointment,
                trang_thai_ho_so: status,
                ngay_ket_thuc_xu_ly: completed,
                ngay_tra: returned,
                ngay_tu_choi: refused,
                hinh_thuc: method,
                don_vi_xu_ly: unit,
                tai_lieu_nop: files,
                danh_sach_giay_to_ket_qua: documents,
                danh_sach_le_phi: fees,
                danh_sach_ho_so_bo_sung: supplements,
                duoc_thanh_toan_truc_tuyen: paid,
                ho_so_co_thanh_phan_so_hoa: digitized,
                tai_khoan_duoc_xac_thuc_voi_vneid: vneid,
                ghi_chu: note,
            },
        )
    }

    fn progress_entry() -> impl Strategy<Value = ProgressEntry> {
        (
            text(),
            optional_text(),
            optional_text(),
            text(),
            optional_text(),
            text(),
            optional_text(),
            optional_text(),
            optional_text(),
        )
            .prop_map(
                |(code, actor, title, time, department, content, status, started, due)| {
                    ProgressEntry {
                        ma_ho_so: code,
                        nguoi_xu_ly: actor,
                        chuc_danh: title,
                        thoi_diem_xu_ly: time,
                        phong_ban_xu_ly: department,
                        noi_dung_xu_ly: content,
                        trang_thai: status,
                        ngay_bat_dau: started,
                        ngay_ket_thuc_theo_quy_dinh: due,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn strings_are_written_as_serde_json_writes_them(value in text()) {
            prop_assert_eq!(written(&value), serde_json::to_vec(&value).unwrap());
        }

        #[test]
        fn dossiers_are_written_as_serde_json_writes_them(dossier in dossier()) {
            let mut out = Vec::new();
            write_dossier(&mut out, &dossier);
            prop_assert_eq!(out, serde_json::to_vec(&dossier).unwrap());
        }

        #[test]
        fn progress_entries_are_written_as_serde_json_writes_them(entry in progress_entry()) {
            let mut out = Vec::new();
            write_progress_entry(&mut out, &entry);
            prop_assert_eq!(out, serde_json::to_vec(&entry).unwrap());
        }
    }
}
