//! Serde shapes of the National Public Service Portal's JSON (`../shared/spec/portal-api.md`).
//!
//! The `Dossier` field order is the payload's byte order. Normalization writes this struct with
//! [`super::payload`], which writes the bytes serde_json would (its tests compare the two), and the
//! content hash is taken over those bytes: reordering fields (here, then in `payload`) changes every hash
//! and re-sends every dossier once. A field added here does not compile until `payload` writes it too.
//! Optional fields are omitted when unknown, as the portal asks.

use serde::{Deserialize, Deserializer, Serialize};

/// A dossier as `DongBoHoSoMC` takes it (portal-api.md section 3).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Dossier {
    #[serde(rename = "MaHoSo")]
    pub ma_ho_so: String,
    #[serde(rename = "MaTTHC")]
    pub ma_tthc: String,
    #[serde(rename = "TenTTHC")]
    pub ten_tthc: String,
    #[serde(rename = "MaLinhVuc")]
    pub ma_linh_vuc: String,
    #[serde(rename = "TenLinhVuc")]
    pub ten_linh_vuc: String,
    #[serde(rename = "KenhThucHien")]
    pub kenh_thuc_hien: String,
    #[serde(rename = "ChuHoSo")]
    pub chu_ho_so: String,
    #[serde(
        rename = "SoGiayToChuHoSo",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub so_giay_to_chu_ho_so: Option<String>,
    #[serde(
        rename = "DinhDanhCHS",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub dinh_danh_chs: Option<Vec<Identifier>>,
    #[serde(rename = "LoaiDoiTuong")]
    pub loai_doi_tuong: String,
    #[serde(
        rename = "MaDoiTuong",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ma_doi_tuong: Option<String>,
    #[serde(rename = "Email", default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(
        rename = "SoDienThoai",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub so_dien_thoai: Option<String>,
    #[serde(rename = "Fax", default, skip_serializing_if = "Option::is_none")]
    pub fax: Option<String>,
    #[serde(
        rename = "TrichYeuHoSo",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub trich_yeu_ho_so: Option<String>,
    #[serde(
        rename = "NgayNopHoSo",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ngay_nop_ho_so: Option<String>,
    #[serde(rename = "NgayTiepNhan")]
    pub ngay_tiep_nhan: String,
    #[serde(
        rename = "NgayHenTra",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ngay_hen_tra: Option<String>,
    #[serde(rename = "TrangThaiHoSo")]
    pub trang_thai_ho_so: String,
    #[serde(
        rename = "NgayKetThucXuLy",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ngay_ket_thuc_xu_ly: Option<String>,
    #[serde(rename = "NgayTra", default, skip_serializing_if = "Option::is_none")]
    pub ngay_tra: Option<String>,
    #[serde(
        rename = "NgayTuChoi",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ngay_tu_choi: Option<String>,
    #[serde(rename = "HinhThuc", default, skip_serializing_if = "Option::is_none")]
    pub hinh_thuc: Option<String>,
    #[serde(rename = "DonViXuLy")]
    pub don_vi_xu_ly: String,
    #[serde(
        rename = "TaiLieuNop",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub tai_lieu_nop: Option<Vec<SubmittedFile>>,
    #[serde(
        rename = "DanhSachGiayToKetQua",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub danh_sach_giay_to_ket_qua: Option<Vec<ResultDocument>>,
    #[serde(
        rename = "DanhSachLePhi",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub danh_sach_le_phi: Option<Vec<FeeLine>>,
    #[serde(
        rename = "DanhSachHoSoBoSung",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub danh_sach_ho_so_bo_sung: Option<Vec<SupplementRequest>>,
    #[serde(
        rename = "DuocThanhToanTrucTuyen",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub duoc_thanh_toan_truc_tuyen: Option<String>,
    #[serde(
        rename = "HoSoCoThanhPhanSoHoa",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ho_so_co_thanh_phan_so_hoa: Option<String>,
    #[serde(
        rename = "TaiKhoanDuocXacThucVoiVNeID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub tai_khoan_duoc_xac_thuc_voi_vneid: Option<String>,
    #[serde(rename = "GhiChu", default, skip_serializing_if = "Option::is_none")]
    pub ghi_chu: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Identifier {
    #[serde(rename = "LoaiDinhDanh")]
    pub loai_dinh_danh: String,
    #[serde(rename = "SoDinhDanh")]
    pub so_dinh_danh: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SubmittedFile {
    #[serde(
        rename = "TepDinhKemId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub tep_dinh_kem_id: Option<String>,
    #[serde(
        rename = "TenTepDinhKem",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ten_tep_dinh_kem: Option<String>,
    #[serde(
        rename = "MaThanhPhanHoSo",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ma_thanh_phan_ho_so: Option<String>,
    #[serde(
        rename = "DuongDanTaiTepTin",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub duong_dan_tai_tep_tin: Option<String>,
    #[serde(rename = "DuocSoHoa")]
    pub duoc_so_hoa: String,
    #[serde(rename = "DuocTaiSuDung")]
    pub duoc_tai_su_dung: String,
    #[serde(rename = "DuocLayTuKhoDMQG")]
    pub duoc_lay_tu_kho_dmqg: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ResultDocument {
    #[serde(rename = "TenGiayTo", default, skip_serializing_if = "Option::is_none")]
    pub ten_giay_to: Option<String>,
    #[serde(
        rename = "MaThanhPhanHoSo",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ma_thanh_phan_ho_so: Option<String>,
    #[serde(rename = "GiayToId", default, skip_serializing_if = "Option::is_none")]
    pub giay_to_id: Option<String>,
    #[serde(
        rename = "DuongDanTepTinKetQua",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub duong_dan_tep_tin_ket_qua: Option<String>,
    #[serde(
        rename = "MaGiayToKetQua",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ma_giay_to_ket_qua: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct FeeLine {
    #[serde(
        rename = "TenPhiLePhi",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ten_phi_le_phi: Option<String>,
    #[serde(
        rename = "MaPhiLePhi",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ma_phi_le_phi: Option<String>,
    #[serde(
        rename = "HinhThucThu",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub hinh_thuc_thu: Option<String>,
    /// A whole number of đồng.
    #[serde(rename = "Gia")]
    pub gia: i64,
    #[serde(
        rename = "LoaiPhiLePhi",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub loai_phi_le_phi: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SupplementRequest {
    #[serde(
        rename = "HoSoBoSungId",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ho_so_bo_sung_id: Option<String>,
    #[serde(
        rename = "NguoiYeuCauBoSung",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub nguoi_yeu_cau_bo_sung: Option<String>,
    #[serde(
        rename = "NoiDungBoSung",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub noi_dung_bo_sung: Option<String>,
    #[serde(
        rename = "NgayBoSung",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ngay_bo_sung: Option<String>,
    #[serde(
        rename = "NgayHenTraTruoc",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ngay_hen_tra_truoc: Option<String>,
    #[serde(
        rename = "NgayHenTraMoi",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ngay_hen_tra_moi: Option<String>,
}

/// A processing-progress entry (`CapNhatTienDoHoSoMC` `data[]`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProgressEntry {
    #[serde(rename = "MaHoSo")]
    pub ma_ho_so: String,
    #[serde(rename = "NguoiXuLy", default, skip_serializing_if = "Option::is_none")]
    pub nguoi_xu_ly: Option<String>,
    #[serde(rename = "ChucDanh", default, skip_serializing_if = "Option::is_none")]
    pub chuc_danh: Option<String>,
    #[serde(rename = "ThoiDiemXuLy")]
    pub thoi_diem_xu_ly: String,
    #[serde(
        rename = "PhongBanXuLy",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub phong_ban_xu_ly: Option<String>,
    #[serde(rename = "NoiDungXuLy")]
    pub noi_dung_xu_ly: String,
    #[serde(rename = "TrangThai", default, skip_serializing_if = "Option::is_none")]
    pub trang_thai: Option<String>,
    #[serde(
        rename = "NgayBatDau",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ngay_bat_dau: Option<String>,
    #[serde(
        rename = "NgayKetThucTheoQuyDinh",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ngay_ket_thuc_theo_quy_dinh: Option<String>,
}

/// `POST /auth` body.
#[derive(Debug, Serialize, Deserialize)]
pub struct AuthRequest {
    pub username: String,
    pub password: String,
}

/// Any portal answer: `error_code` in one of its spellings, a message, and whatever else the service adds.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Envelope {
    #[serde(deserialize_with = "deserialize_code")]
    pub error_code: ErrorCode,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub session: Option<String>,
    #[serde(default)]
    pub result: Option<serde_json::Value>,
}

/// Reads a portal answer's body. A body that is not such JSON is an error, never a success (portal-api.md
/// 2.1); the client retries it.
pub fn read_envelope(body: &[u8]) -> Result<Envelope, serde_json::Error> {
    serde_json::from_slice(body)
}

/// One entry of a `DongBoHoSoMC` or `CapNhatTienDoHoSoMC` result.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ItemResult {
    #[serde(rename = "MaHoSo", default)]
    pub ma_ho_so: Option<String>,
    #[serde(deserialize_with = "deserialize_code")]
    pub error_code: ErrorCode,
    #[serde(default)]
    pub message: Option<String>,
}

/// `ThongKeHoSoDongBo` result rows.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct UnitDayCount {
    #[serde(rename = "DonViXuLy")]
    pub don_vi_xu_ly: String,
    #[serde(rename = "Ngay")]
    pub ngay: String,
    #[serde(rename = "SoHoSo")]
    pub so_ho_so: i64,
}

/// `LayDanhMucCoQuan` result rows.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct UnitCatalogItem {
    #[serde(rename = "MADONVI")]
    pub ma_don_vi: String,
    #[serde(rename = "TENDONVI", default)]
    pub ten_don_vi: Option<String>,
}

/// A portal error code, read leniently: `0`, `"0"` and `"00"` all mean success (portal-api.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ErrorCode(pub i64);

impl ErrorCode {
    pub const OK: ErrorCode = ErrorCode(0);
    pub fn is_ok(self) -> bool {
        self.0 == 0
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

fn deserialize_code<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ErrorCode, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    parse_code(&value)
        .map(ErrorCode)
        .ok_or_else(|| serde::de::Error::custom(format!("error_code is not a number: {value}")))
}

/// Reads a code that travels as a string or a number (`"2"`, `2`, `"00"`).
pub fn parse_code(value: &serde_json::Value) -> Option<i64> {
    match value {
        serde_json::Value::Number(number) => number.as_i64(),
        serde_json::Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}
