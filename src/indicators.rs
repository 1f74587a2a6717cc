//! Preview of the Decision 766 indicators that depend on synced data (`../shared/spec/indicators.md`).
//!
//! Pure and total: no I/O, and no input makes it panic. The caller picks the payloads of one unit and one
//! period (dossiers whose NgayTiepNhan falls in the month, see [`month_of`]), adds each to an
//! [`IndicatorTally`], and computes an [`IndicatorPreview`] from it:
//!
//! - [`IndicatorPreview::compute`] over the payloads the portal accepted, with the number of dossiers the unit
//!   received at the source, gives the preview of what the portal sees;
//! - [`IndicatorPreview::if_all_accepted`] over every sendable payload of the unit (accepted or not), with the
//!   sync completeness taken as 100%, gives what the unit would have if every dossier that failed to sync had
//!   been accepted;
//! - [`preview`] does both and [`UnitPreview::gains`] gives the difference per indicator.
//!
//! The preview reports rates, not points: [`Indicator::points_share`] gives the share of an indicator's
//! maximum points a rate earns under the portal's linear scale, without claiming to reproduce the official
//! score.
//!
//! Decisions beyond the spec's wording (each also documented where it applies):
//! - A finished dossier without a usable NgayKetThucXuLy, or without any deadline, is counted as finished and
//!   not on time (2.1): the portal cannot show it as on time either.
//! - Dates are compared as their fixed-width `yyyyMMddHHmmss` text (all in UTC+07:00); a value that is not 14
//!   ASCII digits counts as absent.
//! - A dossier with no submitted files is not digitized (4.2): nothing in it shows digitization.
//! - Numerators count only dossiers in their denominator, so no rate exceeds 1 except sync completeness
//!   (a source count lower than the accepted count is shown as is, and capped at 1 inside 3.3).

use std::borrow::Cow;
use std::collections::HashMap;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::portal::wire::Dossier;

/// One indicator of the preview, with the rate at which it earns its full points.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Indicator {
    /// The indicator's number in Decision 766 (`"2.1"`).
    pub id: &'static str,
    pub name_vi: &'static str,
    pub name_en: &'static str,
    /// The rate that earns the indicator's full points; below it the portal scales linearly.
    pub full_points_at: f64,
}

impl Indicator {
    /// The share of the indicator's maximum points that `rate` earns: `min(rate / full_points_at, 1)`, never
    /// below 0 (and 0 for a NaN rate).
    pub fn points_share(&self, rate: f64) -> f64 {
        let share = rate / self.full_points_at;
        if share.is_nan() {
            0.0
        } else {
            share.clamp(0.0, 1.0)
        }
    }
}

pub const SYNC_COMPLETENESS: Indicator = Indicator {
    id: "1.4",
    name_vi: "Tỷ lệ đồng bộ",
    name_en: "sync completeness",
    full_points_at: 1.0,
};
pub const ON_TIME: Indicator = Indicator {
    id: "2.1",
    name_vi: "Tỷ lệ giải quyết đúng hạn",
    name_en: "on-time rate",
    full_points_at: 1.0,
};
pub const ONLINE_SHARE: Indicator = Indicator {
    id: "3.3",
    name_vi: "Tỷ lệ hồ sơ trực tuyến",
    name_en: "online share",
    full_points_at: 0.5,
};
pub const ONLINE_PAYMENT: Indicator = Indicator {
    id: "3.6",
    name_vi: "Tỷ lệ thanh toán trực tuyến",
    name_en: "online payment rate",
    full_points_at: 1.0,
};
pub const ELECTRONIC_RESULT: Indicator = Indicator {
    id: "4.1",
    name_vi: "Tỷ lệ cấp kết quả điện tử",
    name_en: "electronic result rate",
    full_points_at: 1.0,
};
pub const DIGITIZED: Indicator = Indicator {
    id: "4.2",
    name_vi: "Tỷ lệ số hóa hồ sơ",
    name_en: "digitization rate",
    full_points_at: 0.8,
};
pub const REUSE_OF_DIGITIZED_DATA: Indicator = Indicator {
    id: "4.3",
    name_vi: "Tỷ lệ tái sử dụng dữ liệu số hóa",
    name_en: "reuse of digitized data",
    full_points_at: 0.8,
};
pub const VNEID_VERIFIED: Indicator = Indicator {
    id: "4.5",
    name_vi: "Tỷ lệ hồ sơ có tài khoản xác thực VNeID",
    name_en: "VNeID-verified applicants",
    full_points_at: 1.0,
};

/// Every indicator of the preview, in the order of [`IndicatorPreview::rates`].
pub const INDICATORS: [Indicator; 8] = [
    SYNC_COMPLETENESS,
    ON_TIME,
    ONLINE_SHARE,
    ONLINE_PAYMENT,
    ELECTRONIC_RESULT,
    DIGITIZED,
    REUSE_OF_DIGITIZED_DATA,
    VNEID_VERIFIED,
];

/// Counts over the payloads of one unit and one period: the numerators and denominators of the indicators.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IndicatorTally {
    /// Every dossier added: the denominator of 3.3, 4.2 and 4.3.
    pub dossiers: u64,
    /// Finished dossiers (TrangThaiHoSo 9 or 10): the denominator of 2.1 and 4.1.
    pub finished: u64,
    /// 2.1: finished dossiers on time (see [`is_on_time`]).
    pub finished_on_time: u64,
    /// 4.1: finished dossiers with at least one result document with a file link.
    pub finished_with_electronic_result: u64,
    /// KenhThucHien = 2: the numerator of 3.3 and the denominator of 4.5.
    pub online: u64,
    /// 4.5: online dossiers with TaiKhoanDuocXacThucVoiVNeID = 1.
    pub online_vneid_verified: u64,
    /// Dossiers with at least one fee with Gia > 0: the denominator of 3.6.
    pub with_fee: u64,
    /// 3.6: of those, dossiers with DuocThanhToanTrucTuyen 1 or 2.
    pub with_fee_paid_online: u64,
    /// 4.2: dossiers whose submitted files are all digitized and that, when finished, have an electronic result.
    pub digitized: u64,
    /// 4.3: dossiers with HoSoCoThanhPhanSoHoa = 1 or a submitted file with DuocTaiSuDung = 1.
    pub reusing_digitized_data: u64,
}

impl IndicatorTally {
    /// Counts one payload.
    pub fn add(&mut self, dossier: &Dossier) {
        self.add_facts(&Facts::of(dossier));
    }

    /// Counts one payload's facts: the rules of every indicator, in one place.
    fn add_facts(&mut self, dossier: &Facts<'_>) {
        let finished = dossier.is_finished();
        let online = code(&dossier.channel) == Some(2);
        let electronic_result = dossier.has_electronic_result();
        let files = dossier.files.as_deref().unwrap_or_default();

        self.dossiers += 1;
        if finished {
            self.finished += 1;
            self.finished_on_time += u64::from(dossier.is_on_time());
            self.finished_with_electronic_result += u64::from(electronic_result);
        }
        if online {
            self.online += 1;
            self.online_vneid_verified +=
                u64::from(dossier.vneid_verified.as_deref().is_some_and(flag));
        }
        if dossier.fees.iter().flatten().any(|fee| fee.price > 0) {
            self.with_fee += 1;
            let paid_online = dossier.paid_online.as_deref().and_then(code);
            self.with_fee_paid_online += u64::from(matches!(paid_online, Some(1 | 2)));
        }
        // A dossier without submitted files is not digitized: nothing in it shows digitization.
        let files_digitized = !files.is_empty() && files.iter().all(|file| flag(&file.digitized));
        self.digitized += u64::from(files_digitized && (!finished || electronic_result));
        let reuses = dossier.has_digitized_parts.as_deref().is_some_and(flag)
            || files.iter().any(|file| flag(&file.reused));
        self.reusing_digitized_data += u64::from(reuses);
    }
}

/// Finished: TrangThaiHoSo 9 (processed) or 10 (result returned).
pub fn is_finished(dossier: &Dossier) -> bool {
    Facts::of(dossier).is_finished()
}

/// Whether a dossier finished on time (indicator 2.1): NgayKetThucXuLy ≤ the deadline.
///
/// The deadline is NgayHenTra, extended by a supplement request to its NgayHenTraMoi (the later of the two: a
/// pause never shortens the deadline; a request without NgayHenTraMoi leaves NgayHenTra). More than one
/// supplement request counts as late, whatever the dates. Without a usable NgayKetThucXuLy, or without any
/// deadline, the dossier is not on time. Dates compare as their fixed-width `yyyyMMddHHmmss` text, all in
/// UTC+07:00; a value that is not 14 ASCII digits counts as absent.
pub fn is_on_time(dossier: &Dossier) -> bool {
    Facts::of(dossier).is_on_time()
}

/// The members of a portal dossier the indicators read, borrowed from a payload's JSON text (a value with
/// escapes is copied). The reports parse a period's payloads into this rather than into a whole
/// [`Dossier`]: the other members are skipped unread and nothing is allocated for them. The members the
/// portal requires must still be present (as [`Dossier`] requires them), so that a payload the daemon
/// wrote counts exactly as it would parsed whole; the types of the members skipped are not checked.
#[derive(Debug, Deserialize)]
struct Facts<'a> {
    #[serde(rename = "MaHoSo")]
    _code: IgnoredAny,
    #[serde(rename = "MaTTHC")]
    _procedure: IgnoredAny,
    #[serde(rename = "TenTTHC")]
    _procedure_name: IgnoredAny,
    #[serde(rename = "MaLinhVuc")]
    _field: IgnoredAny,
    #[serde(rename = "TenLinhVuc")]
    _field_name: IgnoredAny,
    #[serde(rename = "ChuHoSo")]
    _owner: IgnoredAny,
    #[serde(rename = "LoaiDoiTuong")]
    _owner_kind: IgnoredAny,
    #[serde(rename = "NgayTiepNhan")]
    _received_at: IgnoredAny,
    #[serde(rename = "KenhThucHien", borrow)]
    channel: Cow<'a, str>,
    #[serde(rename = "TrangThaiHoSo", borrow)]
    status: Cow<'a, str>,
    #[serde(rename = "DonViXuLy", borrow)]
    unit: Cow<'a, str>,
    #[serde(rename = "NgayHenTra", borrow, default)]
    deadline: Option<Cow<'a, str>>,
    #[serde(rename = "NgayKetThucXuLy", borrow, default)]
    finished_at: Option<Cow<'a, str>>,
    #[serde(rename = "TaiLieuNop", borrow, default)]
    files: Option<Vec<FileFacts<'a>>>,
    #[serde(rename = "DanhSachGiayToKetQua", borrow, default)]
    results: Option<Vec<ResultFacts<'a>>>,
    #[serde(rename = "DanhSachLePhi", default)]
    fees: Option<Vec<FeeFacts>>,
    #[serde(rename = "DanhSachHoSoBoSung", borrow, default)]
    supplements: Option<Vec<SupplementFacts<'a>>>,
    #[serde(rename = "DuocThanhToanTrucTuyen", borrow, default)]
    paid_online: Option<Cow<'a, str>>,
    #[serde(rename = "HoSoCoThanhPhanSoHoa", borrow, default)]
    has_digitized_parts: Option<Cow<'a, str>>,
    #[serde(rename = "TaiKhoanDuocXacThucVoiVNeID", borrow, default)]
    vneid_verified: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct FileFacts<'a> {
    #[serde(rename = "DuocSoHoa", borrow)]
    digitized: Cow<'a, str>,
    #[serde(rename = "DuocTaiSuDung", borrow)]
    reused: Cow<'a, str>,
    #[serde(rename = "DuocLayTuKhoDMQG")]
    _from_national_store: IgnoredAny,
}

#[derive(Debug, Deserialize)]
struct ResultFacts<'a> {
    #[serde(rename = "DuongDanTepTinKetQua", borrow, default)]
    link: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct FeeFacts {
    #[serde(rename = "Gia")]
    price: i64,
}

#[derive(Debug, Deserialize)]
struct SupplementFacts<'a> {
    #[serde(rename = "NgayHenTraMoi", borrow, default)]
    new_deadline: Option<Cow<'a, str>>,
}

impl<'a> Facts<'a> {
    /// A parsed dossier's facts, borrowed from it.
    fn of(dossier: &'a Dossier) -> Self {
        let text = |value: &'a Option<String>| value.as_deref().map(Cow::Borrowed);
        Facts {
            _code: IgnoredAny,
            _procedure: IgnoredAny,
            _procedure_name: IgnoredAny,
            _field: IgnoredAny,
            _field_name: IgnoredAny,
            _owner: IgnoredAny,
            _owner_kind: IgnoredAny,
            _received_at: IgnoredAny,
            channel: Cow::Borrowed(&dossier.kenh_thuc_hien),
            status: Cow::Borrowed(&dossier.trang_thai_ho_so),
            unit: Cow::Borrowed(&dossier.don_vi_xu_ly),
            deadline: text(&dossier.ngay_hen_tra),
            finished_at: text(&dossier.ngay_ket_thuc_xu_ly),
            files: dossier.tai_lieu_nop.as_ref().map(|files| {
                files
                    .iter()
                    .map(|file| FileFacts {
                        digitized: Cow::Borrowed(&file.duoc_so_hoa),
                        reused: Cow::Borrowed(&file.duoc_tai_su_dung),
                        _from_national_store: IgnoredAny,
                    })
                    .collect()
            }),
            results: dossier.danh_sach_giay_to_ket_qua.as_ref().map(|results| {
                results
                    .iter()
                    .map(|result| ResultFacts {
                        link: text(&result.duong_dan_tep_tin_ket_qua),
                    })
                    .collect()
            }),
            fees: dossier
                .danh_sach_le_phi
                .as_ref()
                .map(|fees| fees.iter().map(|fee| FeeFacts { price: fee.gia }).collect()),
            supplements: dossier.danh_sach_ho_so_bo_sung.as_ref().map(|supplements| {
                supplements
                    .iter()
                    .map(|supplement| SupplementFacts {
                        new_deadline: text(&supplement.ngay_hen_tra_moi),
                    })
                    .collect()
            }),
            paid_online: text(&dossier.duoc_thanh_toan_truc_tuyen),
            has_digitized_parts: text(&dossier.ho_so_co_thanh_phan_so_hoa),
            vneid_verified: text(&dossier.tai_khoan_duoc_xac_thuc_voi_vneid),
        }
    }

    /// See [`is_finished`].
    fn is_finished(&self) -> bool {
        matches!(code(&self.status), Some(9 | 10))
    }

    /// See [`is_on_time`].
    fn is_on_time(&self) -> bool {
        let supplements = self.supplements.as_deref().unwrap_or_default();
        if supplements.len() > 1 {
            return false;
        }
        let Some(finished_at) = self.finished_at.as_deref().and_then(date) else {
            return false;
        };
        let deadline = self.deadline.as_deref().and_then(date);
        let extended = supplements
            .first()
            .and_then(|supplement| supplement.new_deadline.as_deref())
            .and_then(date);
        // `Option`'s order puts None first, so this is the later date, or whichever one exists.
        match deadline.max(extended) {
            Some(deadline) => finished_at <= deadline,
            None => false,
        }
    }

    fn has_electronic_result(&self) -> bool {
        self.results.iter().flatten().any(|result| {
            result
                .link
                .as_deref()
                .is_some_and(|link| !link.trim().is_empty())
        })
    }
}

/// The period a dossier belongs to: the `yyyyMM` of its NgayTiepNhan (already Vietnam time), or None when
/// NgayTiepNhan is not a `yyyyMMddHHmmss` date.
pub fn month_of(dossier: &Dossier) -> Option<&str> {
    date(&dossier.ngay_tiep_nhan).map(|date| &date[..6])
}

/// A payload date (`yyyyMMddHHmmss`), or None.
fn date(value: &str) -> Option<&str> {
    let value = value.trim();
    (value.len() == 14 && value.bytes().all(|byte| byte.is_ascii_digit())).then_some(value)
}

/// A code that travels as text (`"2"`, `"10"`).
fn code(value: &str) -> Option<u32> {
    value.trim().parse().ok()
}

/// A `"0"`/`"1"` flag is set.
fn flag(value: &str) -> bool {
    code(value) == Some(1)
}

/// A ratio: `rate` is numerator ÷ denominator, None when the denominator is 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rate {
    pub numerator: u64,
    pub denominator: u64,
    pub rate: Option<f64>,
}

impl Rate {
    pub fn new(numerator: u64, denominator: u64) -> Self {
        let rate = (denominator > 0).then(|| numerator as f64 / denominator as f64);
        Rate {
            numerator,
            denominator,
            rate,
        }
    }
}

/// The indicators of one unit and period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IndicatorPreview {
    /// 1.4: dossiers accepted ÷ dossiers received at the source. Without a source count the denominator is 0
    /// and the rate None. May exceed 1 when the source count is behind.
    pub sync_completeness: Rate,
    /// 2.1: finished on time ÷ finished.
    pub on_time: Rate,
    /// Online (KenhThucHien = 2) ÷ all dossiers: 3.3 before the completeness factor.
    pub online_share_before_completeness: Rate,
    /// 3.3: the online share × the sync completeness (capped at 1); None when either is unknown.
    pub online_share: Option<f64>,
    /// 3.6: paid online ÷ dossiers with a fee > 0.
    pub online_payment: Rate,
    /// 4.1: finished with an electronic result ÷ finished.
    pub electronic_result: Rate,
    /// 4.2: digitized ÷ all dossiers.
    pub digitized: Rate,
    /// 4.3: reusing digitized data ÷ all dossiers.
    pub reuse_of_digitized_data: Rate,
    /// 4.5: VNeID-verified ÷ online dossiers.
    pub vneid_verified: Rate,
}

impl IndicatorPreview {
    /// The preview of what the portal sees: `accepted` tallies the payloads the portal accepted, and
    /// `received_at_source` is the number of dossiers the unit received at the source in the period (None when
    /// unknown, which leaves 1.4 and 3.3 unknown). The accepted count is `accepted.dossiers`.
    pub fn compute(accepted: &IndicatorTally, received_at_source: Option<u64>) -> Self {
        let completeness = Rate::new(accepted.dossiers, received_at_source.unwrap_or(0));
        Self::with_completeness(accepted, completeness)
    }

    /// What the unit would have if every dossier that failed to sync had been accepted: `all_sendable` tallies
    /// every sendable payload of the unit, accepted or not, and the sync completeness is taken as 100%.
    pub fn if_all_accepted(all_sendable: &IndicatorTally) -> Self {
        let completeness = Rate::new(all_sendable.dossiers, all_sendable.dossiers);
        Self::with_completeness(all_sendable, completeness)
    }

    fn with_completeness(tally: &IndicatorTally, sync_completeness: Rate) -> Self {
        let online = Rate::new(tally.online, tally.dossiers);
        let online_share = online
            .rate
            .zip(sync_completeness.rate)
            .map(|(share, completeness)| share * completeness.min(1.0));
        IndicatorPreview {
            sync_completeness,
            on_time: Rate::new(tally.finished_on_time, tally.finished),
            online_share_before_completeness: online,
            online_share,
            online_payment: Rate::new(tally.with_fee_paid_online, tally.with_fee),
            electronic_result: Rate::new(tally.finished_with_electronic_result, tally.finished),
            digitized: Rate::new(tally.digitized, tally.dossiers),
            reuse_of_digitized_data: Rate::new(tally.reusing_digitized_data, tally.dossiers),
            vneid_verified: Rate::new(tally.online_vneid_verified, tally.online),
        }
    }

    /// Each indicator with its rate, in the order of [`INDICATORS`].
    pub fn rates(&self) -> [(Indicator, Option<f64>); 8] {
        [
            (SYNC_COMPLETENESS, self.sync_completeness.rate),
            (ON_TIME, self.on_time.rate),
            (ONLINE_SHARE, self.online_share),
            (ONLINE_PAYMENT, self.online_payment.rate),
            (ELECTRONIC_RESULT, self.electronic_result.rate),
            (DIGITIZED, self.digitized.rate),
            (REUSE_OF_DIGITIZED_DATA, self.reuse_of_digitized_data.rate),
            (VNEID_VERIFIED, self.vneid_verified.rate),
        ]
    }
}

/// A unit's preview beside what it would be if every dossier that failed to sync had been accepted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UnitPreview {
    pub current: IndicatorPreview,
    pub if_all_accepted: IndicatorPreview,
}

/// [`IndicatorPreview::compute`] over `accepted` and [`IndicatorPreview::if_all_accepted`] over
/// `all_sendable` (which includes the accepted payloads).
pub fn preview(
    accepted: &IndicatorTally,
    all_sendable: &IndicatorTally,
    received_at_source: Option<u64>,
) -> UnitPreview {
    UnitPreview {
        current: IndicatorPreview::compute(accepted, received_at_source),
        if_all_accepted: IndicatorPreview::if_all_accepted(all_sendable),
    }
}

impl UnitPreview {
    /// Per indicator, in the order of [`INDICATORS`]: the rate if all were accepted minus the current rate (None
    /// when either is unknown). It can be negative: the dossiers that failed may be the late ones.
    pub fn gains(&self) -> [(Indicator, Option<f64>); 8] {
        let current = self.current.rates();
        let mut gains = self.if_all_accepted.rates();
        for ((_, gain), (_, now)) in gains.iter_mut().zip(current) {
            *gain = gain.zip(now).map(|(ceiling, now)| ceiling - now);
        }
        gains
    }
}

/// The tallies of a period, per unit, built one payload at a time: the preview as a fold. Each payload is
/// parsed, counted and dropped, so that memory holds the counters of each unit and nothing of the payloads
/// (the reports read a period's payloads in pages and add them here).
#[derive(Debug, Clone, Default)]
pub struct UnitTallies {
    /// Per unit key: the accepted payloads' tally, and every sendable payload's.
    by_unit: HashMap<String, (IndicatorTally, IndicatorTally)>,
}

impl UnitTallies {
    /// Counts one stored payload (the JSON text of a portal dossier) under `unit`, or under its DonViXuLy
    /// when the ledger has no unit for it; in the accepted tally too when the portal accepted it. A payload
    /// that does not parse counts nowhere.
    pub fn add_payload(&mut self, unit: Option<&str>, accepted: bool, payload: &str) {
        let Ok(dossier) = serde_json::from_str::<Facts<'_>>(payload) else {
            return;
        };
        let key = unit.unwrap_or(&dossier.unit);
        let (accepted_tally, all) = match self.by_unit.get_mut(key) {
            Some(tallies) => tallies,
            None => self.by_unit.entry(key.to_owned()).or_default(),
        };
        if accepted {
            accepted_tally.add_facts(&dossier);
        }
        all.add_facts(&dossier);
    }

    /// The accepted and the all-sendable tallies of one unit key, taken out (empty ones when it had no
    /// payload).
    pub fn take(&mut self, unit: &str) -> (IndicatorTally, IndicatorTally) {
        self.by_unit.remove(unit).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::portal::wire::{FeeLine, ResultDocument, SubmittedFile, SupplementRequest};

    const DEADLINE: &str = "20260120170000";

    fn some(text: &str) -> Option<String> {
        Some(text.to_string())
    }

    fn file(digitized: &str, reused: &str) -> SubmittedFile {
        SubmittedFile {
            duoc_so_hoa: digitized.into(),
            duoc_tai_su_dung: reused.into(),
            duoc_lay_tu_kho_dmqg: "0".into(),
            ..Default::default()
        }
    }

    fn result(link: Option<&str>) -> ResultDocument {
        ResultDocument {
            ten_giay_to: some("Giấy phép"),
            duong_dan_tep_tin_ket_qua: link.map(str::to_string),
            ..Default::default()
        }
    }

    fn fee(gia: i64) -> FeeLine {
        FeeLine {
            gia,
            ..Default::default()
        }
    }

    fn supplement(new_deadline: Option<&str>) -> SupplementRequest {
        SupplementRequest {
            ngay_hen_tra_moi: new_deadline.map(str::to_string),
            ..Default::default()
        }
    }

    const LINK: Option<&str> = Some("https://ketqua.example.vn/kq.pdf");

    /// Ten dossiers of one unit and month. Per dossier: finished (F), on time (T), online (O), fee > 0 (€),
    /// paid online (P), electronic result (E), digitized (D), reuse (R), VNeID among online (V).
    fn hand_built_set() -> Vec<Dossier> {
        vec![
            // 1: F T O € P E D R V
            Dossier {
                kenh_thuc_hien: "2".into(),
                trang_thai_ho_so: "10".into(),
                ngay_hen_tra: some(DEADLINE),
                ngay_ket_thuc_xu_ly: some("20260115100000"),
                danh_sach_le_phi: Some(vec![fee(50_000)]),
                duoc_thanh_toan_truc_tuyen: some("1"),
                danh_sach_giay_to_ket_qua: Some(vec![result(LINK)]),
                tai_lieu_nop: Some(vec![file("1", "0"), file("1", "0")]),
                ho_so_co_thanh_phan_so_hoa: some("1"),
                tai_khoan_duoc_xac_thuc_voi_vneid: some("1"),
                ..Default::default()
            },
            // 2: F, late, O, E, one file not digitized, R through a file, not V
            Dossier {
                kenh_thuc_hien: "2".into(),
                trang_thai_ho_so: "9".into(),
                ngay_hen_tra: some(DEADLINE),
                ngay_ket_thuc_xu_ly: some("20260121080000"),
                danh_sach_giay_to_ket_qua: Some(vec![result(LINK)]),
                tai_lieu_nop: Some(vec![file("1", "0"), file("0", "1")]),
                tai_khoan_duoc_xac_thuc_voi_vneid: some("0"),
                ..Default::default()
            },
            // 3: F, T only thanks to the supplement (late against NgayHenTra), in person, € not paid online,
            // no electronic result, so not D although every file is digitized; VNeID ignored (not online)
            Dossier {
                kenh_thuc_hien: "1".into(),
                trang_thai_ho_so: "10".into(),
                ngay_hen_tra: some(DEADLINE),
                ngay_ket_thuc_xu_ly: some("20260123090000"),
                danh_sach_ho_so_bo_sung: Some(vec![supplement(Some("20260125170000"))]),
                danh_sach_le_phi: Some(vec![fee(30_000)]),
                danh_sach_giay_to_ket_qua: Some(vec![result(None), result(Some(" "))]),
                tai_lieu_nop: Some(vec![file("1", "0")]),
                tai_khoan_duoc_xac_thuc_voi_vneid: some("1"),
                ..Default::default()
            },
            // 4: F, late (two supplements, although it finished before NgayHenTra), fee of 0 paid online:
            // outside 3.6; E D
            Dossier {
                kenh_thuc_hien: "1".into(),
                trang_thai_ho_so: "9".into(),
                ngay_hen_tra: some(DEADLINE),
                ngay_ket_thuc_xu_ly: some("20260110080000"),
                danh_sach_ho_so_bo_sung: Some(vec![
                    supplement(Some("20260125170000")),
                    supplement(Some("20260130170000")),
                ]),
                danh_sach_le_phi: Some(vec![fee(0)]),
                duoc_thanh_toan_truc_tuyen: some("2"),
                danh_sach_giay_to_ket_qua: Some(vec![result(LINK)]),
                tai_lieu_nop: Some(vec![file("1", "0")]),
                ..Default::default()
            },
            // 5: processing (not F), O € P, D (no result needed yet), not R, V
            Dossier {
                kenh_thuc_hien: "2".into(),
                trang_thai_ho_so: "4".into(),
                ngay_hen_tra: some(DEADLINE),
                danh_sach_le_phi: Some(vec![fee(20_000)]),
                duoc_thanh_toan_truc_tuyen: some("2"),
                tai_lieu_nop: Some(vec![file("1", "0")]),
                ho_so_co_thanh_phan_so_hoa: some("0"),
                tai_khoan_duoc_xac_thuc_voi_vneid: some("1"),
                ..Default::default()
            },
            // 6: accepted (not F), by post, no files (not D), R by the dossier flag; VNeID ignored
            Dossier {
                kenh_thuc_hien: "3".into(),
                trang_thai_ho_so: "2".into(),
                ho_so_co_thanh_phan_so_hoa: some("1"),
                tai_khoan_duoc_xac_thuc_voi_vneid: some("1"),
                ..Default::default()
            },
            // 7: F without NgayKetThucXuLy (not T), O, € not paid, E D R, VNeID absent (not V)
            Dossier {
                kenh_thuc_hien: "2".into(),
                trang_thai_ho_so: "10".into(),
                ngay_hen_tra: some(DEADLINE),
                danh_sach_le_phi: Some(vec![fee(10_000)]),
                danh_sach_giay_to_ket_qua: Some(vec![result(LINK)]),
                tai_lieu_nop: Some(vec![file("1", "1")]),
                ..Default::default()
            },
            // 8: F without NgayHenTra (not T), no result documents (not E, so not D)
            Dossier {
                kenh_thuc_hien: "1".into(),
                trang_thai_ho_so: "9".into(),
                ngay_ket_thuc_xu_ly: some("20260110080000"),
                tai_lieu_nop: Some(vec![file("1", "0")]),
                ..Default::default()
            },
            // 9: F, T exactly at the deadline, € (fees 0 and 15 000) P, E (a blank link and a link), not D, R
            Dossier {
                kenh_thuc_hien: "1".into(),
                trang_thai_ho_so: "10".into(),
                ngay_hen_tra: some(DEADLINE),
                ngay_ket_thuc_xu_ly: some(DEADLINE),
                danh_sach_le_phi: Some(vec![fee(0), fee(15_000)]),
                duoc_thanh_toan_truc_tuyen: some("1"),
                danh_sach_giay_to_ket_qua: Some(vec![result(Some(" ")), result(LINK)]),
                tai_lieu_nop: Some(vec![file("0", "1")]),
                ..Default::default()
            },
            // 10: refused (not F), O, not V
            Dossier {
                kenh_thuc_hien: "2".into(),
                trang_thai_ho_so: "3".into(),
                tai_khoan_duoc_xac_thuc_voi_vneid: some("0"),
                ..Default::default()
            },
        ]
    }

    fn tally(dossiers: &[Dossier]) -> IndicatorTally {
        let mut tally = IndicatorTally::default();
        for dossier in dossiers {
            tally.add(dossier);
        }
        tally
    }

    #[test]
    fn a_payload_text_tallies_as_its_parsed_dossier() {
        // The reports read only the members the indicators need; every dossier of the set, written as
        // the daemon writes payloads, must tally as it does parsed whole.
        let set = hand_built_set();
        let mut by_text = UnitTallies::default();
        for (index, dossier) in set.iter().enumerate() {
            let payload = serde_json::to_string(dossier).unwrap();
            by_text.add_payload(Some("u"), index % 2 == 0, &payload);
        }
        let accepted: Vec<Dossier> = set.iter().step_by(2).cloned().collect();
        assert_eq!(by_text.take("u"), (tally(&accepted), tally(&set)));

        // Without a unit, the payload's DonViXuLy; a payload missing a member the portal requires counts
        // nowhere, as it would not parse whole.
        let mut tallies = UnitTallies::default();
        let whole = Dossier {
            don_vi_xu_ly: "000.00.31.H60".into(),
            ..set[0].clone()
        };
        tallies.add_payload(None, true, &serde_json::to_string(&whole).unwrap());
        let mut bare = serde_json::to_value(&whole).unwrap();
        bare.as_object_mut().unwrap().remove("MaHoSo");
        assert!(serde_json::from_value::<Dossier>(bare.clone()).is_err());
        tallies.add_payload(None, true, &bare.to_string());
        tallies.add_payload(None, true, "not json");
        let one = tally(std::slice::from_ref(&whole));
        assert_eq!(tallies.take("000.00.31.H60"), (one.clone(), one));
        assert_eq!(tallies.take("u"), Default::default());
    }

    #[test]
    fn hand_built_set_gives_the_hand_computed_rates() {
        let set = hand_built_set();
        // Twelve received at the source, ten accepted.
        let preview = IndicatorPreview::compute(&tally(&set), Some(12));

        // 1.4: 10 accepted ÷ 12 received.
        assert_eq!(preview.sync_completeness, Rate::new(10, 12));
        assert_eq!(preview.sync_completeness.rate, Some(10.0 / 12.0));
        // 2.1: finished 1 2 3 4 7 8 9; on time 1, 3 (supplement), 9 (equal to the deadline) → 3/7.
        assert_eq!(preview.on_time, Rate::new(3, 7));
        assert_eq!(preview.on_time.rate, Some(3.0 / 7.0));
        // 3.3: online 1 2 5 7 10 → 5/10, times the completeness 10/12 → 5/12.
        assert_eq!(preview.online_share_before_completeness, Rate::new(5, 10));
        assert_eq!(preview.online_share, Some(0.5 * (10.0 / 12.0)));
        assert!((preview.online_share.unwrap() - 5.0 / 12.0).abs() < 1e-12);
        // 3.6: fee > 0 in 1 3 5 7 9 (not 4, whose only fee is 0); paid online 1 5 9 → 3/5.
        assert_eq!(preview.online_payment, Rate::new(3, 5));
        assert_eq!(preview.online_payment.rate, Some(0.6));
        // 4.1: finished with a file link 1 2 4 7 9 (not 3: an absent and a blank link, not 8: no result) → 5/7.
        assert_eq!(preview.electronic_result, Rate::new(5, 7));
        // 4.2: 1 4 5 7 → 4/10 (2 and 9: a file not digitized; 3 and 8: finished without an electronic result;
        // 6 and 10: no files).
        assert_eq!(preview.digitized, Rate::new(4, 10));
        assert_eq!(preview.digitized.rate, Some(0.4));
        // 4.3: 1 (flag) 2 (file) 6 (flag) 7 (file) 9 (file) → 5/10.
        assert_eq!(preview.reuse_of_digitized_data, Rate::new(5, 10));
        // 4.5: over online 1 2 5 7 10 only; verified 1 5 (3 and 6 are verified but not online) → 2/5.
        assert_eq!(preview.vneid_verified, Rate::new(2, 5));
        assert_eq!(preview.vneid_verified.rate, Some(0.4));
    }

    fn late_dossier() -> Dossier {
        Dossier {
            trang_thai_ho_so: "10".into(),
            ngay_hen_tra: some(DEADLINE),
            ngay_ket_thuc_xu_ly: some("20260122090000"),
            ..Default::default()
        }
    }

    #[test]
    fn one_supplement_extends_the_deadline_to_its_new_date() {
        let late = late_dossier();
        assert!(!is_on_time(&late));

        let extended = Dossier {
            danh_sach_ho_so_bo_sung: Some(vec![supplement(Some("20260122090000"))]),
            ..late_dossier()
        };
        assert!(is_on_time(&extended));

        // Extended, but not far enough.
        let not_enough = Dossier {
            danh_sach_ho_so_bo_sung: Some(vec![supplement(Some("20260122085959"))]),
            ..late_dossier()
        };
        assert!(!is_on_time(&not_enough));

        // A request without a new date leaves NgayHenTra.
        let no_new_date = Dossier {
            danh_sach_ho_so_bo_sung: Some(vec![supplement(None)]),
            ..late_dossier()
        };
        assert!(!is_on_time(&no_new_date));

        // A pause never shortens the deadline.
        let earlier = Dossier {
            ngay_ket_thuc_xu_ly: some("20260119090000"),
            danh_sach_ho_so_bo_sung: Some(vec![supplement(Some("20260118090000"))]),
            ..late_dossier()
        };
        assert!(is_on_time(&earlier));

        // The supplement's date is a deadline even when NgayHenTra is missing.
        let only_new_date = Dossier {
            ngay_hen_tra: None,
            ..extended.clone()
        };
        assert!(is_on_time(&only_new_date));

        let counts = tally(&[late, extended]);
        assert_eq!(
            IndicatorPreview::compute(&counts, None).on_time,
            Rate::new(1, 2)
        );
    }

    #[test]
    fn two_supplement_requests_count_as_late() {
        let early = Dossier {
            ngay_ket_thuc_xu_ly: some("20260110090000"),
            ..late_dossier()
        };
        assert!(is_on_time(&early));
        let twice = Dossier {
            danh_sach_ho_so_bo_sung: Some(vec![
                supplement(Some("20260125170000")),
                supplement(Some("20260130170000")),
            ]),
            ..early.clone()
        };
        assert!(!is_on_time(&twice));
        let counts = tally(&[early, twice]);
        assert_eq!((counts.finished, counts.finished_on_time), (2, 1));
    }

    #[test]
    fn finished_without_end_date_or_deadline_is_not_on_time() {
        let no_end = Dossier {
            ngay_ket_thuc_xu_ly: None,
            ..late_dossier()
        };
        let no_deadline = Dossier {
            ngay_hen_tra: None,
            ngay_ket_thuc_xu_ly: some("20260101000000"),
            ..late_dossier()
        };
        let garbled = Dossier {
            ngay_hen_tra: some("2026-01-20"),
            ngay_ket_thuc_xu_ly: some("20260101000000"),
            ..late_dossier()
        };
        let counts = tally(&[no_end, no_deadline, garbled]);
        let preview = IndicatorPreview::compute(&counts, None);
        assert_eq!(preview.on_time, Rate::new(0, 3));
        assert_eq!(preview.on_time.rate, Some(0.0));
    }

    #[test]
    fn online_share_is_multiplied_by_sync_completeness() {
        // 2 online out of 4 accepted.
        let online = Dossier {
            kenh_thuc_hien: "2".into(),
            ..Default::default()
        };
        let in_person = Dossier {
            kenh_thuc_hien: "1".into(),
            ..Default::default()
        };
        let counts = tally(&[online.clone(), online, in_person.clone(), in_person]);

        // 4 accepted of 5 received: 2/4 × 4/5 = 2/5.
        let preview = IndicatorPreview::compute(&counts, Some(5));
        assert_eq!(preview.online_share_before_completeness.rate, Some(0.5));
        assert_eq!(preview.sync_completeness.rate, Some(0.8));
        assert_eq!(preview.online_share, Some(0.5 * 0.8));

        // Everything accepted: the online share itself.
        assert_eq!(
            IndicatorPreview::compute(&counts, Some(4)).online_share,
            Some(0.5)
        );
        // A source count behind the portal: completeness 4/3 shown as is, capped at 1 inside 3.3.
        let ahead = IndicatorPreview::compute(&counts, Some(3));
        assert_eq!(ahead.sync_completeness.rate, Some(4.0 / 3.0));
        assert_eq!(ahead.online_share, Some(0.5));
        // No source count: completeness and 3.3 unknown, the online share still shown.
        let unknown = IndicatorPreview::compute(&counts, None);
        assert_eq!(unknown.sync_completeness, Rate::new(4, 0));
        assert_eq!(unknown.sync_completeness.rate, None);
        assert_eq!(unknown.online_share, None);
        assert_eq!(unknown.online_share_before_completeness.rate, Some(0.5));
    }

    #[test]
    fn zero_denominators_give_no_rate() {
        let empty = IndicatorPreview::compute(&IndicatorTally::default(), Some(0));
        for (indicator, rate) in empty.rates() {
            assert_eq!(rate, None, "{}", indicator.id);
        }

        // One unfinished in-person dossier without fees: no finished, fee or online denominator.
        let counts = tally(&[Dossier {
            kenh_thuc_hien: "1".into(),
            trang_thai_ho_so: "4".into(),
            tai_lieu_nop: Some(vec![file("1", "0")]),
            ..Default::default()
        }]);
        let preview = IndicatorPreview::compute(&counts, Some(1));
        assert_eq!(preview.on_time, Rate::new(0, 0));
        assert_eq!(preview.on_time.rate, None);
        assert_eq!(preview.electronic_result.rate, None);
        assert_eq!(preview.online_payment.rate, None);
        assert_eq!(preview.vneid_verified.rate, None);
        assert_eq!(preview.online_share, Some(0.0));
        assert_eq!(preview.digitized.rate, Some(1.0));
    }

    #[test]
    fn if_all_accepted_counts_every_sendable_payload_at_full_completeness() {
        let set = hand_built_set();
        // Dossiers 3 and 9 (both on time, both in person) failed to sync; 12 received at the source.
        let accepted: Vec<Dossier> = set
            .iter()
            .enumerate()
            .filter(|(index, _)| ![2, 8].contains(index))
            .map(|(_, dossier)| dossier.clone())
            .collect();
        let unit = preview(&tally(&accepted), &tally(&set), Some(12));

        // Now: finished 1 2 4 7 8, on time 1 → 1/5; online 1 2 5 7 10 of 8, × 8/12.
        assert_eq!(unit.current.on_time, Rate::new(1, 5));
        assert_eq!(unit.current.sync_completeness, Rate::new(8, 12));
        assert_eq!(unit.current.online_share, Some((5.0 / 8.0) * (8.0 / 12.0)));
        // All accepted: 3/7 on time; completeness 10/10, so 3.3 is the online share 5/10.
        assert_eq!(unit.if_all_accepted.on_time, Rate::new(3, 7));
        assert_eq!(unit.if_all_accepted.sync_completeness.rate, Some(1.0));
        assert_eq!(unit.if_all_accepted.online_share, Some(0.5));

        let gains = unit.gains();
        assert_eq!(gains[0].0.id, "1.4");
        assert_eq!(gains[0].1, Some(1.0 - 8.0 / 12.0));
        assert_eq!(gains[1].0.id, "2.1");
        assert_eq!(gains[1].1, Some(3.0 / 7.0 - 1.0 / 5.0));
        // 4.5 is unchanged: both failed dossiers were in person.
        assert_eq!(gains[7].0.id, "4.5");
        assert_eq!(gains[7].1, Some(0.0));

        // Without a source count the current 1.4 is unknown, and so is its gain.
        let unknown = preview(&tally(&accepted), &tally(&set), None);
        assert_eq!(unknown.gains()[0].1, None);
    }

    #[test]
    fn thresholds_table_and_points_share() {
        let ids: Vec<&str> = INDICATORS.iter().map(|indicator| indicator.id).collect();
        assert_eq!(
            ids,
            ["1.4", "2.1", "3.3", "3.6", "4.1", "4.2", "4.3", "4.5"]
        );
        let preview = IndicatorPreview::compute(&IndicatorTally::default(), None);
        let rate_ids: Vec<&str> = preview.rates().iter().map(|(i, _)| i.id).collect();
        assert_eq!(rate_ids, ids);

        assert_eq!(ONLINE_SHARE.full_points_at, 0.5);
        assert_eq!(DIGITIZED.full_points_at, 0.8);
        assert_eq!(REUSE_OF_DIGITIZED_DATA.full_points_at, 0.8);
        assert_eq!(ON_TIME.full_points_at, 1.0);

        assert_eq!(ONLINE_SHARE.points_share(0.25), 0.5);
        assert_eq!(ONLINE_SHARE.points_share(0.5), 1.0);
        assert_eq!(ONLINE_SHARE.points_share(0.9), 1.0);
        assert_eq!(DIGITIZED.points_share(0.4), 0.5);
        assert_eq!(ON_TIME.points_share(3.0 / 4.0), 0.75);
        assert_eq!(ON_TIME.points_share(-1.0), 0.0);
        assert_eq!(ON_TIME.points_share(f64::NAN), 0.0);
    }

    #[test]
    fn odd_values_never_panic_and_never_count() {
        let odd = Dossier {
            kenh_thuc_hien: "trực tuyến".into(),
            trang_thai_ho_so: "９".into(),
            ngay_tiep_nhan: "2026０1051200".into(),
            ngay_hen_tra: some(""),
            danh_sach_le_phi: Some(vec![fee(-5), fee(i64::MIN)]),
            duoc_thanh_toan_truc_tuyen: some("yes"),
            danh_sach_ho_so_bo_sung: Some(vec![]),
            tai_lieu_nop: Some(vec![file("", "x")]),
            ho_so_co_thanh_phan_so_hoa: some("11"),
            tai_khoan_duoc_xac_thuc_voi_vneid: some("1"),
            ..Default::default()
        };
        let counts = tally(std::slice::from_ref(&odd));
        assert_eq!(
            counts,
            IndicatorTally {
                dossiers: 1,
                ..Default::default()
            }
        );
        assert!(!is_on_time(&odd));
        assert_eq!(month_of(&odd), None);
    }

    #[test]
    fn month_of_reads_the_reception_date() {
        let dossier = Dossier {
            ngay_tiep_nhan: "20260131235959".into(),
            ..Default::default()
        };
        assert_eq!(month_of(&dossier), Some("202601"));
    }

    #[test]
    fn stored_payload_json_tallies_and_preview_serializes() {
        let payload = r#"{"MaHoSo":"000.00.31.H60-260115-0012","MaTTHC":"1.004227","TenTTHC":"Cấp phép",
            "MaLinhVuc":"XD","TenLinhVuc":"Xây dựng","KenhThucHien":"2","ChuHoSo":"Nguyễn Văn A",
            "LoaiDoiTuong":"1","NgayTiepNhan":"20260115080000","NgayHenTra":"20260120170000",
            "TrangThaiHoSo":"10","NgayKetThucXuLy":"20260119100000","NgayTra":"20260119110000",
            "DonViXuLy":"000.00.31.H60",
            "TaiLieuNop":[{"DuocSoHoa":"1","DuocTaiSuDung":"0","DuocLayTuKhoDMQG":"0"}],
            "DanhSachGiayToKetQua":[{"DuongDanTepTinKetQua":"https://ketqua.example.vn/kq.pdf"}],
            "DanhSachLePhi":[{"Gia":75000}],"DuocThanhToanTrucTuyen":"1",
            "TaiKhoanDuocXacThucVoiVNeID":"1"}"#;
        let dossier: Dossier = serde_json::from_str(payload).unwrap();
        let counts = tally(&[dossier]);
        assert_eq!(
            counts,
            IndicatorTally {
                dossiers: 1,
                finished: 1,
                finished_on_time: 1,
                finished_with_electronic_result: 1,
                online: 1,
                online_vneid_verified: 1,
                with_fee: 1,
                with_fee_paid_online: 1,
                digitized: 1,
                reusing_digitized_data: 0,
            }
        );

        let json = serde_json::to_value(IndicatorPreview::compute(&counts, None)).unwrap();
        assert_eq!(
            json["on_time"],
            serde_json::json!({"numerator": 1, "denominator": 1, "rate": 1.0})
        );
        assert_eq!(json["online_share"], serde_json::Value::Null);
        assert_eq!(json["reuse_of_digitized_data"]["rate"], 0.0);
    }
}
