//! A deterministic dataset of realistic dossiers for the source simulator: agencies, procedures and
//! dossiers as the provincial system serves them (source-api.md), with a share of bad records (each made to
//! trigger one rejection code of mapping.md), harmless quirks on valid ones, hidden rows and a tie block.
//!
//! The same configuration, seed and `now` always give the same dataset, byte for byte.

use std::collections::{BTreeMap, HashMap};

use jiff::{SignedDuration, Timestamp, civil, tz::Offset};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use unicode_normalization::UnicodeNormalization;

use super::FaultLevel;
use super::wire::{AgencyItem, ProcedureItem, Sector};

/// The random number generator of the simulators: seeded, portable and reproducible.
pub type SimRng = ChaCha8Rng;

pub use super::dates::VIETNAM;

/// The rejection codes the generator makes bad records for, in the order it cycles through them.
pub const BAD_CODES: [&str; 10] = [
    "invalid_dossier_code",
    "missing_field",
    "invalid_date",
    "inconsistent_dates",
    "invalid_channel",
    "unmapped_status",
    "unmapped_procedure",
    "unmapped_unit",
    "invalid_fee",
    "malformed_record",
];

/// What to generate.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    /// Seed of the random generator: the same seed gives the same dataset.
    pub seed: u64,
    /// Number of dossiers.
    pub dossiers: usize,
    /// Number of agencies (units) in the catalog (at most 65,534).
    pub units: usize,
    /// How many of the agencies have no code (`code: null`); only `unmapped_unit` bad records use them.
    pub null_code_agencies: usize,
    /// Share of dossiers made to trigger a rejection (cycling through [`BAD_CODES`]).
    pub bad_share: f64,
    /// Share of dossiers written by a bulk import: absent from the feed until next updated (quirk 8).
    pub hidden_share: f64,
    /// Number of dossiers sharing one `updatedDate` to the second (quirk 2); 0 for none.
    pub tie_block: usize,
    /// Share of valid dossiers carrying harmless quirks: other date shapes, messy text, fee amounts as
    /// strings or floats (quirks 5, 6, 7); 0 for none.
    pub quirk_share: f64,
    /// Share of dossiers cancelled as data-entry errors (status 11): skipped, not bad.
    pub cancelled_share: f64,
    /// Share of dossiers deleted at the source (`deletedDate` set): skipped, not bad.
    pub deleted_share: f64,
    /// Receptions are spread over this many days before `now`.
    pub days: u32,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            seed: 1,
            dossiers: 5000,
            units: 40,
            null_code_agencies: 2,
            bad_share: 0.06,
            hidden_share: 0.02,
            tie_block: 1600,
            quirk_share: 0.15,
            cancelled_share: 0.01,
            deleted_share: 0.01,
            days: 90,
        }
    }
}

impl GeneratorConfig {
    /// The defaults, with the data quirks (hidden rows, ties, date shapes, messy text, numbers as strings)
    /// turned off for [`FaultLevel::None`] and raised for [`FaultLevel::Harsh`]. Bad records stay.
    pub fn for_level(level: FaultLevel) -> Self {
        let base = GeneratorConfig::default();
        match level {
            FaultLevel::None => GeneratorConfig {
                hidden_share: 0.0,
                tie_block: 0,
                quirk_share: 0.0,
                ..base
            },
            FaultLevel::Realistic => base,
            FaultLevel::Harsh => GeneratorConfig {
                hidden_share: 0.05,
                tie_block: 2500,
                quirk_share: 0.35,
                ..base
            },
        }
    }
}

/// Everything the simulated source holds.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub agencies: Vec<AgencyItem>,
    pub procedures: Vec<ProcedureItem>,
    /// Sorted by id.
    pub dossiers: Vec<GeneratedDossier>,
    /// The `updatedDate` the tie block shares, when there is one.
    pub tie_instant: Option<Timestamp>,
}

/// One generated dossier.
#[derive(Debug, Clone)]
pub struct GeneratedDossier {
    pub id: String,
    /// The JSON exactly as served, quirks included.
    pub record: Value,
    /// The rejection code this record was made to trigger, if any.
    pub bad: Option<&'static str>,
    /// Written by a bulk import: not in the feed until next updated.
    pub hidden: bool,
    /// `deletedDate` is set.
    pub deleted: bool,
    /// Status 11 (cancelled as a data-entry error).
    pub cancelled: bool,
    /// The handling agency's id.
    pub agency_id: String,
    /// The reception day (Vietnam time) the counts file it under.
    pub reception_day: civil::Date,
    /// The record's `updatedDate`.
    pub updated: Timestamp,
    /// The harmless quirks applied (`date_shapes`, `nfd`, `spaces`, `tabs`, `zero_width`, `tcvn3`,
    /// `fee_strings`).
    pub quirks: Vec<&'static str>,
}

impl Dataset {
    /// The counts `count-by-agency` must answer: per (agency id, reception day), deleted and cancelled
    /// dossiers left out, hidden ones included.
    pub fn expected_counts(&self) -> BTreeMap<(String, civil::Date), i64> {
        let mut counts = BTreeMap::new();
        for dossier in self.dossiers.iter().filter(|d| !d.deleted && !d.cancelled) {
            *counts
                .entry((dossier.agency_id.clone(), dossier.reception_day))
                .or_insert(0) += 1;
        }
        counts
    }
}

// ---------------------------------------------------------------------------------------------------
// Dates

/// Formats a timestamp as the source writes it: `2024-01-15T08:30:00.000+0700` (the simulators' own
/// formatter, [`super::dates`]).
pub fn format_source_date(timestamp: Timestamp) -> String {
    super::dates::format(timestamp)
}

/// Reads a date in a shape of source-api.md quirk 5 that the generator writes (the simulators' own
/// reader, [`super::dates`], not the daemon's).
pub fn parse_source_date(value: &Value) -> Option<Timestamp> {
    super::dates::parse_value(value)
}

/// Reads a textual date in a shape of source-api.md quirk 5 that the generator writes.
pub fn parse_source_date_text(text: &str) -> Option<Timestamp> {
    super::dates::parse_text(text)
}

fn vietnam_day_at(date: civil::Date, hour: i8, minute: i8, second: i8) -> Timestamp {
    let time = civil::Time::new(hour, minute, second, 0).unwrap_or(civil::Time::midnight());
    VIETNAM
        .to_timestamp(civil::DateTime::from_parts(date, time))
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

fn seconds(count: i64) -> SignedDuration {
    SignedDuration::from_secs(count)
}

// ---------------------------------------------------------------------------------------------------
// Text

/// The TCVN3 (ABC) code of each Vietnamese letter outside ASCII; the byte read as Latin-1 is the mangled
/// character. Only the upper case letters the standard has (Ă Â Ê Ô Ơ Ư Đ) are included.
#[rustfmt::skip]
const TCVN3: &[(char, u8)] = &[
    ('Ă', 0xA1), ('Â', 0xA2), ('Ê', 0xA3), ('Ô', 0xA4), ('Ơ', 0xA5), ('Ư', 0xA6), ('Đ', 0xA7), ('ă', 0xA8),
    ('â', 0xA9), ('ê', 0xAA), ('ô', 0xAB), ('ơ', 0xAC), ('ư', 0xAD), ('đ', 0xAE), ('à', 0xB5), ('ả', 0xB6),
    ('ã', 0xB7), ('á', 0xB8), ('ạ', 0xB9), ('ằ', 0xBB), ('ẳ', 0xBC), ('ẵ', 0xBD), ('ắ', 0xBE), ('ặ', 0xC6),
    ('ầ', 0xC7), ('ẩ', 0xC8), ('ẫ', 0xC9), ('ấ', 0xCA), ('ậ', 0xCB), ('è', 0xCC), ('ẻ', 0xCE), ('ẽ', 0xCF),
    ('é', 0xD0), ('ẹ', 0xD1), ('ề', 0xD2), ('ể', 0xD3), ('ễ', 0xD4), ('ế', 0xD5), ('ệ', 0xD6), ('ì', 0xD7),
    ('ỉ', 0xD8), ('ĩ', 0xDC), ('í', 0xDD), ('ị', 0xDE), ('ò', 0xDF), ('ỏ', 0xE1), ('õ', 0xE2), ('ó', 0xE3),
    ('ọ', 0xE4), ('ồ', 0xE5), ('ổ', 0xE6), ('ỗ', 0xE7), ('ố', 0xE8), ('ộ', 0xE9), ('ờ', 0xEA), ('ở', 0xEB),
    ('ỡ', 0xEC), ('ớ', 0xED), ('ợ', 0xEE), ('ù', 0xEF), ('ủ', 0xF1), ('ũ', 0xF2), ('ú', 0xF3), ('ụ', 0xF4),
    ('ừ', 0xF5), ('ử', 0xF6), ('ữ', 0xF7), ('ứ', 0xF8), ('ự', 0xF9), ('ỳ', 0xFA), ('ỷ', 0xFB), ('ỹ', 0xFC),
    ('ý', 0xFD), ('ỵ', 0xFE),
];

/// Encodes NFC text in TCVN3 (ABC) and reads the bytes back as Latin-1, as a migrated record shows it
/// (`Nguyễn Văn An` → `NguyÔn V¨n An`). `None` when a character is outside TCVN3's repertoire.
pub fn tcvn3_as_latin1(text: &str) -> Option<String> {
    text.nfc()
        .map(|c| {
            if c.is_ascii() {
                Some(c)
            } else {
                TCVN3
                    .iter()
                    .find(|(letter, _)| *letter == c)
                    .map(|(_, byte)| char::from(*byte))
            }
        })
        .collect()
}

/// The messy-text quirks of source-api.md quirk 6 (TCVN3 aside).
fn messy_text(text: &str, kind: &'static str) -> String {
    match kind {
        "nfd" => text.nfd().collect(),
        "spaces" => text.replace(' ', "  "),
        "tabs" => format!("\t{}", text.replacen(' ', " \t", 1)),
        "zero_width" => format!("\u{FEFF}{}", text.replacen(' ', "\u{200B} ", 1)),
        _ => text.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------------
// Catalogs

const FAMILY_NAMES: &[&str] = &[
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ",
    "Hồ", "Ngô", "Dương", "Lý",
];
const MALE_MIDDLE: &[&str] = &[
    "Văn", "Đức", "Minh", "Quang", "Hữu", "Công", "Xuân", "Thanh", "Ngọc", "Văn",
];
const FEMALE_MIDDLE: &[&str] = &[
    "Thị", "Ngọc", "Thu", "Thanh", "Kim", "Phương", "Hồng", "Mỹ", "Thị",
];
const MALE_GIVEN: &[&str] = &[
    "An", "Bình", "Cường", "Dũng", "Hùng", "Hải", "Huy", "Khánh", "Long", "Nam", "Phong", "Quân",
    "Sơn", "Thắng", "Tuấn", "Trung", "Việt", "Đạt", "Hiếu", "Tùng",
];
const FEMALE_GIVEN: &[&str] = &[
    "Hoa", "Lan", "Hương", "Mai", "Linh", "Trang", "Thảo", "Yến", "Hà", "Ngọc", "Nhung", "Phương",
    "Quyên", "Vân", "Hằng", "Oanh", "Ánh", "Uyên",
];
const COMMUNES: &[&str] = &[
    "Minh Xuân",
    "Yên Sơn",
    "Tân Phú",
    "Hòa Bình",
    "Phúc Thịnh",
    "Thái Long",
    "Kim Phú",
    "Mỹ Bằng",
    "Đội Cấn",
    "Lưỡng Vượng",
    "An Tường",
    "Nông Tiến",
    "Tràng Đà",
    "Hưng Thành",
    "Thắng Quân",
    "Chiêm Hóa",
    "Hàm Yên",
    "Na Hang",
    "Lâm Bình",
    "Sơn Dương",
    "Tân Trào",
    "Hồng Thái",
    "Bình Xa",
    "Thái Bình",
    "Trung Sơn",
    "Kiến Thiết",
    "Đạo Viện",
    "Lang Quán",
    "Phú Lâm",
    "Xuân Vân",
];
const DEPARTMENTS: &[&str] = &[
    "Sở Tư pháp",
    "Sở Xây dựng",
    "Sở Nông nghiệp và Môi trường",
    "Sở Tài chính",
    "Sở Công Thương",
    "Sở Y tế",
    "Sở Nội vụ",
    "Sở Khoa học và Công nghệ",
    "Sở Giáo dục và Đào tạo",
    "Sở Văn hóa, Thể thao và Du lịch",
];

struct ProcedureSpec {
    national: &'static str,
    name: &'static str,
    sector_code: &'static str,
    sector_name: &'static str,
    fee: i64,
    fee_name: &'static str,
    days: i64,
    provincial: bool,
}

const fn procedure(
    national: &'static str,
    name: &'static str,
    sector: (&'static str, &'static str),
    fee: (i64, &'static str),
    days: i64,
    provincial: bool,
) -> ProcedureSpec {
    ProcedureSpec {
        national,
        name,
        sector_code: sector.0,
        sector_name: sector.1,
        fee: fee.0,
        fee_name: fee.1,
        days,
        provincial,
    }
}

const HO_TICH: (&str, &str) = ("G09-TP02", "Hộ tịch");
const XAY_DUNG: (&str, &str) = ("G09-XD01", "Xây dựng");
const HO_KINH_DOANH: (&str, &str) = ("G09-KH02", "Thành lập và hoạt động của hộ kinh doanh");
const NO_FEE: (i64, &str) = (0, "");

const PROCEDURES: &[ProcedureSpec] = &[
    procedure("1.001193", "Đăng ký khai sinh", HO_TICH, NO_FEE, 1, false),
    procedure("1.000894", "Đăng ký kết hôn", HO_TICH, NO_FEE, 3, false),
    procedure("1.001022", "Đăng ký khai tử", HO_TICH, NO_FEE, 1, false),
    procedure(
        "2.000908",
        "Cấp bản sao trích lục hộ tịch",
        HO_TICH,
        (8000, "Phí cấp bản sao trích lục"),
        1,
        false,
    ),
    procedure(
        "1.001009",
        "Xác nhận tình trạng hôn nhân",
        HO_TICH,
        NO_FEE,
        3,
        false,
    ),
    procedure(
        "2.000815",
        "Chứng thực bản sao từ bản chính giấy tờ, văn bản",
        ("G09-TP03", "Chứng thực"),
        (2000, "Phí chứng thực"),
        1,
        false,
    ),
    procedure(
        "1.004227",
        "Cấp giấy phép xây dựng nhà ở riêng lẻ",
        XAY_DUNG,
        (75000, "Lệ phí cấp giấy phép xây dựng"),
        15,
        false,
    ),
    procedure(
        "1.009994",
        "Cấp giấy phép sửa chữa, cải tạo công trình",
        XAY_DUNG,
        (75000, "Lệ phí cấp giấy phép xây dựng"),
        15,
        true,
    ),
    procedure(
        "2.000720",
        "Đăng ký thành lập hộ kinh doanh",
        HO_KINH_DOANH,
        (100000, "Lệ phí đăng ký hộ kinh doanh"),
        3,
        false,
    ),
    procedure(
        "1.001612",
        "Đăng ký thay đổi nội dung đăng ký hộ kinh doanh",
        HO_KINH_DOANH,
        (50000, "Lệ phí đăng ký hộ kinh doanh"),
        3,
        false,
    ),
    procedure(
        "1.001776",
        "Trợ cấp xã hội hằng tháng đối với đối tượng bảo trợ xã hội",
        ("G09-LD03", "Bảo trợ xã hội"),
        NO_FEE,
        20,
        false,
    ),
    procedure(
        "1.004203",
        "Đăng ký biến động quyền sử dụng đất, quyền sở hữu tài sản gắn liền với đất",
        ("G09-TN01", "Đất đai"),
        (500000, "Phí thẩm định hồ sơ"),
        10,
        true,
    ),
    procedure(
        "2.000635",
        "Cấp Phiếu lý lịch tư pháp cho công dân Việt Nam",
        ("G09-TP01", "Lý lịch tư pháp"),
        (200000, "Phí cấp Phiếu lý lịch tư pháp"),
        10,
        true,
    ),
    procedure(
        "1.002425",
        "Cấp giấy chứng nhận cơ sở đủ điều kiện an toàn thực phẩm",
        ("G09-YT05", "An toàn thực phẩm"),
        (500000, "Phí thẩm định cơ sở"),
        15,
        true,
    ),
    procedure(
        "2.001711",
        "Cấp giấy phép bán lẻ sản phẩm rượu",
        ("G09-CT02", "Lưu thông hàng hóa trong nước"),
        (1200000, "Phí thẩm định cấp giấy phép"),
        10,
        true,
    ),
];

/// Procedures the province defined itself: no national code, so a dossier under them is `unmapped_procedure`.
const LOCAL_PROCEDURES: &[(&str, &str, (&str, &str))] = &[
    (
        "H60-NB.XD01",
        "Xác nhận hiện trạng nhà ở phục vụ hỗ trợ sau thiên tai",
        XAY_DUNG,
    ),
    (
        "H60-NB.TP07",
        "Xác nhận đơn đề nghị cung cấp thông tin nội bộ",
        HO_TICH,
    ),
];

#[derive(Debug, Clone)]
struct Agency {
    item: AgencyItem,
    provincial: bool,
    place: String,
}

fn build_agencies(config: &GeneratorConfig) -> Vec<Agency> {
    // A plan keeps each dossier's agency in 16 bits.
    let units = config.units.clamp(1, 65_534);
    let null_codes = config.null_code_agencies.min(units.saturating_sub(1));
    let departments = (units / 5).min(DEPARTMENTS.len());
    (0..units)
        .map(|index| {
            let number = index + 1;
            let code = if number < 100 {
                format!("000.00.{number:02}.H60")
            } else {
                format!("000.{:02}.{:02}.H60", number / 100, number % 100)
            };
            let commune = |offset: usize| {
                let round = (index + offset) / COMMUNES.len();
                let base = COMMUNES[(index + offset) % COMMUNES.len()];
                if round == 0 {
                    base.to_owned()
                } else {
                    format!("{base} {}", round + 1)
                }
            };
            let (name, code, provincial, place) = if index >= units - null_codes {
                let place = commune(7);
                (
                    format!("Trung tâm Phục vụ hành chính công xã {place}"),
                    None,
                    false,
                    place,
                )
            } else if index < departments {
                (
                    DEPARTMENTS[index].to_owned(),
                    Some(code),
                    true,
                    "tỉnh Tuyên Quang".to_owned(),
                )
            } else {
                let place = commune(0);
                let kind = if index % 4 == 0 { "phường" } else { "xã" };
                (
                    format!("UBND {kind} {place}"),
                    Some(code),
                    false,
                    format!("{kind} {place}"),
                )
            };
            Agency {
                item: AgencyItem {
                    id: format!("ag-{number:03}"),
                    code,
                    name,
                    parent_id: None,
                    deleted: false,
                },
                provincial,
                place,
            }
        })
        .collect()
}

fn build_procedures() -> Vec<ProcedureItem> {
    let mut items: Vec<ProcedureItem> = PROCEDURES
        .iter()
        .enumerate()
        .map(|(index, spec)| ProcedureItem {
            id: format!("p-{:03}", index + 101),
            code: format!("{}.000.00.00.H60", spec.national),
            national_code: Some(spec.national.to_owned()),
            name: spec.name.to_owned(),
            sector: Sector {
                code: Some(spec.sector_code.to_owned()),
                name: Some(spec.sector_name.to_owned()),
            },
            has_fee: spec.fee > 0,
        })
        .collect();
    for (index, (code, name, sector)) in LOCAL_PROCEDURES.iter().enumerate() {
        items.push(ProcedureItem {
            id: format!("p-{:03}", index + 901),
            code: (*code).to_owned(),
            national_code: None,
            name: (*name).to_owned(),
            sector: Sector {
                code: Some(sector.0.to_owned()),
                name: Some(sector.1.to_owned()),
            },
            has_fee: false,
        });
    }
    items
}

// ---------------------------------------------------------------------------------------------------
// Statuses

/// The source's status names (source-api.md section 5).
pub fn status_name(id: i64) -> &'static str {
    match id {
        0 => "Chờ tiếp nhận",
        1 => "Đã tiếp nhận",
        2 => "Đang xử lý",
        3 => "Chờ bổ sung",
        4 => "Chờ thực hiện nghĩa vụ tài chính",
        5 => "Chờ phê duyệt",
        6 => "Có kết quả",
        7 => "Đã trả kết quả",
        8 => "Từ chối tiếp nhận",
        9 => "Công dân rút hồ sơ",
        10 => "Dừng xử lý",
        11 => "Đã hủy",
        _ => "Không xác định",
    }
}

/// What a history entry for a step into this status says, and who does it.
fn step_text(status: i64) -> (&'static str, &'static str, &'static str) {
    match status {
        1 => ("Tiếp nhận hồ sơ", "Cán bộ một cửa", "Bộ phận Một cửa"),
        2 => ("Thẩm định hồ sơ", "Chuyên viên", "Phòng Kinh tế"),
        3 => ("Yêu cầu bổ sung hồ sơ", "Chuyên viên", "Phòng Kinh tế"),
        4 => (
            "Thông báo thực hiện nghĩa vụ tài chính",
            "Chuyên viên",
            "Phòng Tài chính - Kế hoạch",
        ),
        5 => ("Trình lãnh đạo phê duyệt", "Trưởng phòng", "Phòng Kinh tế"),
        6 => ("Phê duyệt, ký số kết quả", "Phó Chủ tịch", "Lãnh đạo UBND"),
        7 => (
            "Trả kết quả cho công dân",
            "Cán bộ một cửa",
            "Bộ phận Một cửa",
        ),
        8 => (
            "Từ chối tiếp nhận: hồ sơ không đủ thành phần",
            "Cán bộ một cửa",
            "Bộ phận Một cửa",
        ),
        9 => (
            "Công dân rút hồ sơ theo đề nghị",
            "Cán bộ một cửa",
            "Bộ phận Một cửa",
        ),
        10 => (
            "Dừng xử lý hồ sơ do không đủ điều kiện",
            "Chuyên viên",
            "Phòng Kinh tế",
        ),
        11 => (
            "Hủy hồ sơ do nhập sai thông tin",
            "Cán bộ một cửa",
            "Bộ phận Một cửa",
        ),
        _ => ("Cập nhật thông tin hồ sơ", "Chuyên viên", "Phòng Kinh tế"),
    }
}

/// The steps a dossier in this status went through after reception.
fn status_path(status: i64) -> &'static [i64] {
    match status {
        1 | 11 => &[1],
        2 => &[1, 2],
        3 => &[1, 2, 3],
        4 => &[1, 2, 4],
        5 => &[1, 2, 5],
        6 => &[1, 2, 5, 6],
        7 => &[1, 2, 5, 6, 7],
        8 => &[8],
        9 => &[1, 2, 9],
        10 => &[1, 2, 10],
        _ => &[],
    }
}

fn pick_status(rng: &mut SimRng) -> i64 {
    const WEIGHTS: [(i64, u32); 11] = [
        (0, 3),
        (1, 7),
        (2, 18),
        (3, 5),
        (4, 3),
        (5, 6),
        (6, 9),
        (7, 40),
        (8, 3),
        (9, 3),
        (10, 3),
    ];
    let total: u32 = WEIGHTS.iter().map(|(_, w)| w).sum();
    let mut roll = rng.random_range(0..total);
    for (status, weight) in WEIGHTS {
        if roll < weight {
            return status;
        }
        roll -= weight;
    }
    7
}

// ---------------------------------------------------------------------------------------------------
// Dossiers

struct Person {
    fullname: String,
    female: bool,
}

fn person(rng: &mut SimRng) -> Person {
    let female = rng.random_bool(0.5);
    let family = FAMILY_NAMES.choose(rng).copied().unwrap_or("Nguyễn");
    let (middle, given) = if female {
        (FEMALE_MIDDLE, FEMALE_GIVEN)
    } else {
        (MALE_MIDDLE, MALE_GIVEN)
    };
    let middle = middle.choose(rng).copied().unwrap_or("Văn");
    let given = given.choose(rng).copied().unwrap_or("An");
    Person {
        fullname: format!("{family} {middle} {given}"),
        female,
    }
}

/// ASCII of a Vietnamese name for e-mail addresses: `Nguyễn Thị Hoa` → `hoant`.
fn ascii_handle(fullname: &str) -> String {
    let plain: String = fullname
        .replace(['đ', 'Đ'], "d")
        .nfd()
        .filter(char::is_ascii)
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let words: Vec<&str> = plain.split_whitespace().collect();
    let Some((given, rest)) = words.split_last() else {
        return "congdan".to_owned();
    };
    let initials: String = rest.iter().filter_map(|w| w.chars().next()).collect();
    format!("{given}{initials}")
}

fn phone(rng: &mut SimRng) -> String {
    let roll = rng.random_range(0..100);
    if roll < 12 {
        // A mobile number with a prefix retired in 2018 (0162–0169, 0120–0129, 0186, 0188, 0199).
        let prefix = [
            "0162", "0163", "0164", "0165", "0166", "0167", "0168", "0169", "0120", "0121", "0122",
            "0123", "0124", "0125", "0126", "0127", "0128", "0129", "0186", "0188", "0199",
        ]
        .choose(rng)
        .copied()
        .unwrap_or("0168");
        format!("{prefix}{:07}", rng.random_range(0..10_000_000))
    } else if roll < 22 {
        format!(
            "+84 {}{:08}",
            ["9", "8", "3", "7"].choose(rng).copied().unwrap_or("9"),
            rng.random_range(0..100_000_000)
        )
    } else if roll < 25 {
        format!(
            "0{}{:07}",
            rng.random_range(203..=299),
            rng.random_range(0..10_000_000)
        )
    } else {
        let prefix = [
            "090", "091", "093", "094", "096", "097", "098", "086", "032", "033", "035", "038",
            "070", "077", "081", "083", "085", "056", "058", "088", "039",
        ]
        .choose(rng)
        .copied()
        .unwrap_or("091");
        format!("{prefix}{:07}", rng.random_range(0..10_000_000))
    }
}

fn identity_number(rng: &mut SimRng, female: bool) -> String {
    // Province of birth (3 digits), century and sex (0/1 for 1900s, 2/3 for 2000s), year (2), serial (6).
    let province = [
        1, 2, 8, 10, 15, 19, 22, 25, 26, 30, 31, 33, 34, 36, 38, 40, 79,
    ][rng.random_range(0..17)];
    let year = rng.random_range(1950..2006);
    let century = if year >= 2000 { 2 } else { 0 } + u32::from(female);
    format!(
        "{province:03}{century}{:02}{:06}",
        year % 100,
        rng.random_range(0..1_000_000)
    )
}

struct Times {
    submitted: Timestamp,
    accepted: Option<Timestamp>,
    appointment: Option<Timestamp>,
    completed: Option<Timestamp>,
    returned: Option<Timestamp>,
    rejected: Option<Timestamp>,
    /// (status, started, finished) of each step.
    steps: Vec<(i64, Timestamp, Timestamp)>,
    last_event: Timestamp,
}

/// Picks consistent dates for a dossier in `status`: submitted ≤ accepted ≤ every later step ≤ `cap`.
fn plan_times(
    rng: &mut SimRng,
    status: i64,
    online: bool,
    days: i64,
    config_days: u32,
    cap: Timestamp,
) -> Times {
    let today = VIETNAM.to_datetime(cap).date();
    // Dossiers still in progress are recent; finished ones spread over the whole window.
    let window = if (0..=5).contains(&status) {
        i64::from(config_days).min(30)
    } else {
        i64::from(config_days)
    };
    let window = window.max(1);
    let day = today
        .checked_sub(jiff::Span::new().days(rng.random_range(0..window)))
        .unwrap_or(today);
    let clamp = |t: Timestamp, floor: Timestamp| t.min(cap).max(floor);
    let submitted = vietnam_day_at(
        day,
        rng.random_range(6..22),
        rng.random_range(0..60),
        rng.random_range(0..60),
    );
    let submitted = clamp(submitted, Timestamp::UNIX_EPOCH);
    let mut times = Times {
        submitted,
        accepted: None,
        appointment: None,
        completed: None,
        returned: None,
        rejected: None,
        steps: Vec::new(),
        last_event: submitted,
    };
    if status == 0 {
        return times;
    }
    let reception = if online {
        submitted + seconds(rng.random_range(600..2 * 86_400))
    } else {
        submitted + seconds(rng.random_range(60..1200))
    };
    let reception = clamp(reception, submitted);
    if status == 8 {
        times.rejected = Some(reception);
        times.steps.push((8, submitted, reception));
        times.last_event = reception;
        return times;
    }
    times.accepted = Some(reception);
    let due_day = VIETNAM
        .to_datetime(reception + seconds(days.max(1) * 86_400))
        .date();
    times.appointment = Some(vietnam_day_at(due_day, 17, 0, 0));
    let path = status_path(status);
    let mut previous = submitted;
    let gap_limit = (days.max(1) * 86_400 * 13 / 10 / path.len().max(1) as i64).max(7200);
    for (position, &step) in path.iter().enumerate() {
        let finished = if position == 0 {
            reception
        } else {
            clamp(
                previous + seconds(rng.random_range(1800..gap_limit)),
                previous,
            )
        };
        times.steps.push((step, previous, finished));
        match step {
            6 => times.completed = Some(finished),
            7 => times.returned = Some(finished),
            _ => {}
        }
        previous = finished;
    }
    times.last_event = previous;
    times
}

fn date_value(timestamp: Option<Timestamp>) -> Value {
    timestamp.map_or(Value::Null, |t| Value::String(format_source_date(t)))
}

fn history_entry(rng: &mut SimRng, status: i64, started: Timestamp, finished: Timestamp) -> Value {
    let (content, title, department) = step_text(status);
    let actor = person(rng).fullname;
    let due = started + seconds(rng.random_range(1..=3) * 86_400);
    json!({
        "actor": actor,
        "title": title,
        "department": department,
        "content": content,
        "statusId": status,
        "startedAt": format_source_date(started),
        "finishedAt": format_source_date(finished),
        "dueAt": format_source_date(due),
    })
}

/// What is decided about one dossier before its record is written: everything its dates, its place in
/// the feed and the counts follow from. Drawn from the dossier's own stream of the seed ([`stream`]), so
/// that it can be decided again, identically, whenever the record is written.
struct Skeleton {
    agency: usize,
    spec_index: usize,
    /// The status as generated (before a cancellation).
    status: i64,
    apply_method: i64,
    times: Times,
    /// The appointment after supplements.
    appointment: Option<Timestamp>,
    /// A supplement request: when it was made, the appointment before it and after it.
    supplement: Option<(Timestamp, Timestamp, Timestamp)>,
    /// The cancellation as a data-entry error (status 11): the last event before it, and when.
    cancellation: Option<(Timestamp, Timestamp)>,
    deleted_at: Option<Timestamp>,
    updated: Timestamp,
    id_random: u64,
    /// Which of its three shapes a bad record takes.
    bad_variant: usize,
    hidden: bool,
    /// The day the dossier code is numbered under (of `acceptedDate`, or `submittedDate` without one).
    code_day: civil::Date,
    /// The day the counts file it under: `code_day`, unless the record lost its `acceptedDate`.
    reception_day: civil::Date,
}

/// What the dataset-wide draws assigned to one dossier before its own stream is read.
#[derive(Clone, Copy)]
struct Assigned {
    bad: Option<&'static str>,
    cancelled: bool,
    deleted: bool,
}

/// The random stream of dossier `index`: `part` 0 decides its skeleton, 1 writes its record. Stream 0 of
/// the seed is the dataset-wide one (bad records, the tie block).
fn stream(seed: u64, index: usize, part: u64) -> SimRng {
    let mut rng = SimRng::seed_from_u64(seed);
    rng.set_stream(2 * index as u64 + 1 + part);
    rng
}

fn plan_dossier(rng: &mut SimRng, plan: &Plan, assigned: Assigned, cap: Timestamp) -> Skeleton {
    let code = assigned.bad;
    let agencies = if code == Some("unmapped_unit") {
        &plan.uncoded
    } else {
        &plan.coded
    };
    let agency = agencies.choose(rng).copied().unwrap_or(0);
    let provincial = plan.agencies[agency].provincial;
    let candidates: Vec<usize> = PROCEDURES
        .iter()
        .enumerate()
        .filter(|(_, spec)| spec.provincial == provincial || spec.national == "1.004227")
        .map(|(position, _)| position)
        .collect();
    let spec_index = candidates.choose(rng).copied().unwrap_or(0);
    let status = if code.is_some() {
        [1, 2, 2, 5, 6, 7, 7][rng.random_range(0..7)]
    } else {
        pick_status(rng)
    };
    let apply_method = match rng.random_range(0..100) {
        0..55 => 1,
        55..95 => 0,
        _ => 2,
    };
    // A dossier not yet accepted (status 0) can only have come in online.
    let apply_method = if status == 0 { 1 } else { apply_method };
    let online = apply_method == 1;
    let days = PROCEDURES[spec_index].days;
    let underlying = if assigned.cancelled { 1 } else { status };
    let times = plan_times(rng, underlying, online, days, plan.config.days, cap);
    let reception = times.accepted.unwrap_or(times.submitted);
    let code_day = VIETNAM.to_datetime(reception).date();

    let mut last_event = times.last_event;
    let mut appointment = times.appointment;
    let mut supplement = None;
    if status == 3 || (matches!(status, 6 | 7) && rng.random_bool(0.08)) {
        if let (Some(previous), Some(&(_, started, _))) = (appointment, times.steps.get(1)) {
            let requested = (started + seconds(3600)).min(cap);
            let new_appointment = previous + seconds(5 * 86_400);
            supplement = Some((requested, previous, new_appointment));
            appointment = Some(new_appointment);
            last_event = last_event.max(requested);
        }
    }
    let mut cancellation = None;
    if assigned.cancelled {
        let cancelled_at = (last_event + seconds(rng.random_range(600..86_400)))
            .min(cap)
            .max(last_event);
        cancellation = Some((last_event, cancelled_at));
        last_event = cancelled_at;
    }
    let mut deleted_at = None;
    if assigned.deleted {
        let at = (last_event + seconds(rng.random_range(3600..5 * 86_400)))
            .min(cap)
            .max(last_event);
        deleted_at = Some(at);
        last_event = at;
    }
    let updated = if assigned.deleted {
        last_event + SignedDuration::from_millis(rng.random_range(0..1000))
    } else {
        last_event + SignedDuration::from_millis(rng.random_range(1000..7_200_000))
    };
    let updated = updated.min(cap + seconds(30)).max(last_event);
    let id_random = rng.random_range(0..(1u64 << 40));
    let bad_variant = rng.random_range(0..3);
    let hidden = rng.random_bool(plan.config.hidden_share.clamp(0.0, 1.0));
    // A bad record may lose its acceptedDate: the counts then file it under its submittedDate. Both are
    // known here, as they were made: nothing is read back from the record's text.
    let reception_day = if code == Some("missing_field") && bad_variant == 2 {
        super::dates::vietnam_day(times.submitted)
    } else {
        code_day
    };
    Skeleton {
        agency,
        spec_index,
        status,
        apply_method,
        times,
        appointment,
        supplement,
        cancellation,
        deleted_at,
        updated,
        id_random,
        bad_variant,
        hidden,
        code_day,
        reception_day,
    }
}

/// Writes the record of `dossier` from its skeleton, with its own stream of the seed; returns it with the
/// harmless quirks applied.
fn build_record(
    rng: &mut SimRng,
    plan: &Plan,
    skeleton: &Skeleton,
    dossier: &PlannedDossier,
) -> (Value, Vec<&'static str>) {
    let index = dossier.index as usize;
    let agency = &plan.agencies[skeleton.agency];
    let procedure = &plan.procedures[skeleton.spec_index];
    let spec = &PROCEDURES[skeleton.spec_index];
    let times = &skeleton.times;
    let apply_method = skeleton.apply_method;
    let online = apply_method == 1;

    let kind = match rng.random_range(0..100) {
        0..85 => "citizen",
        85..95 => "enterprise",
        95..98 => "organization",
        _ => "agency",
    };
    let applicant_person = person(rng);
    let (fullname, tax_code) = match kind {
        "enterprise" => {
            let owner = applicant_person
                .fullname
                .split_whitespace()
                .last()
                .unwrap_or("An")
                .to_owned();
            let tax = if rng.random_bool(0.8) {
                format!("{:010}", rng.random_range(100_000_000u64..6_000_000_000))
            } else {
                format!(
                    "{:010}-{:03}",
                    rng.random_range(100_000_000u64..6_000_000_000),
                    rng.random_range(1..20)
                )
            };
            (
                format!(
                    "Công ty TNHH {owner} {}",
                    agency.place.split_whitespace().last().unwrap_or("Xuân")
                ),
                Some(tax),
            )
        }
        "organization" => (format!("Hợp tác xã nông nghiệp {}", agency.place), None),
        "agency" => (format!("Trường Tiểu học {}", agency.place), None),
        _ => (applicant_person.fullname.clone(), None),
    };
    let identity = if rng.random_bool(0.93) {
        identity_number(rng, applicant_person.female)
    } else {
        format!("{:09}", rng.random_range(10_000_000..400_000_000))
    };
    let email = if rng.random_bool(0.55) {
        let domain = ["gmail.com", "yahoo.com", "example.vn", "outlook.com"]
            .choose(rng)
            .copied()
            .unwrap_or("gmail.com");
        Value::String(format!(
            "{}{}@{domain}",
            ascii_handle(&applicant_person.fullname),
            rng.random_range(1..99)
        ))
    } else {
        Value::Null
    };
    let hamlet = rng.random_range(1..15);
    let address = format!("Thôn {hamlet}, {}", agency.place);

    let reception_day = skeleton.code_day;
    let code_prefix = agency
        .item
        .code
        .clone()
        .unwrap_or_else(|| format!("H60.TTPV{:02}", index % 100));
    let code = format!(
        "{code_prefix}-{:02}{:02}{:02}-{:04}",
        reception_day.year() % 100,
        reception_day.month(),
        reception_day.day(),
        dossier.sequence
    );

    let mut history: Vec<Value> = times
        .steps
        .iter()
        .map(|&(status, started, finished)| history_entry(rng, status, started, finished))
        .collect();

    let mut supplements = Vec::new();
    if let Some((requested, previous, new_appointment)) = skeleton.supplement {
        let content = [
            "Bổ sung bản vẽ thiết kế",
            "Bổ sung bản sao giấy tờ tùy thân",
            "Bổ sung giấy xác nhận của UBND xã",
        ]
        .choose(rng)
        .copied()
        .unwrap_or("Bổ sung hồ sơ");
        supplements.push(json!({
            "id": format!("s-{index}-1"),
            "requestedBy": person(rng).fullname,
            "content": content,
            "requestedAt": format_source_date(requested),
            "previousAppointment": format_source_date(previous),
            "newAppointment": format_source_date(new_appointment),
        }));
    }

    let mut status = skeleton.status;
    if let Some((last_event, cancelled_at)) = skeleton.cancellation {
        status = 11;
        history.push(history_entry(rng, 11, last_event, cancelled_at));
    }

    let fees: Vec<Value> = if spec.fee > 0 {
        let paid = !matches!(status, 0 | 4 | 8) && rng.random_bool(0.85);
        let channel = if !paid {
            Value::Null
        } else if online {
            Value::String(
                ["DVCQG", "DVCQG", "PAYMENT_PLATFORM", "BANK_TRANSFER"]
                    .choose(rng)
                    .copied()
                    .unwrap_or("DVCQG")
                    .to_owned(),
            )
        } else {
            Value::String(
                ["CASH", "CASH", "CASH", "PAYMENT_PLATFORM", "DVCQG"]
                    .choose(rng)
                    .copied()
                    .unwrap_or("CASH")
                    .to_owned(),
            )
        };
        let mut fees = vec![
            json!({"code": "LP01", "name": spec.fee_name, "amount": spec.fee, "paid": paid, "paymentChannel": channel}),
        ];
        if spec.fee >= 100_000 && rng.random_bool(0.3) {
            fees.push(json!({"code": "PHI02", "name": "Phí thẩm định hồ sơ", "amount": spec.fee / 2, "paid": paid, "paymentChannel": channel}));
        }
        fees
    } else {
        Vec::new()
    };

    let input_names = [
        "Đơn đề nghị.pdf",
        "Bản sao căn cước công dân.pdf",
        "Tờ khai.pdf",
        "Bản vẽ thiết kế.pdf",
        "Giấy chứng nhận quyền sử dụng đất.pdf",
        "Giấy ủy quyền.pdf",
    ];
    let mut attachments = Vec::new();
    let mut reuses = false;
    for position in 0..rng.random_range(1..=3usize) {
        let reused = rng.random_bool(0.12);
        reuses |= reused;
        attachments.push(json!({
            "id": format!("f-{index}-{}", position + 1),
            "name": input_names[(index + position) % input_names.len()],
            "url": format!("https://motcua.example.gov.vn/files/f-{index}-{}", position + 1),
            "componentCode": format!("TP{:02}", position + 1),
            "kind": "input",
            "digitized": online || rng.random_bool(0.6),
            "reused": reused,
            "fromNationalRepository": reused && rng.random_bool(0.5),
        }));
    }
    if matches!(status, 6 | 7) {
        attachments.push(json!({
            "id": format!("f-{index}-kq"),
            "name": format!("Kết quả - {}.pdf", procedure.name),
            "url": format!("https://motcua.example.gov.vn/files/f-{index}-kq"),
            "componentCode": "KQ01",
            "kind": "result",
            "digitized": true,
            "reused": false,
            "fromNationalRepository": false,
            "resultCode": format!("KQ-{}-{:05}", reception_day.year(), index),
        }));
    }

    let summary = if rng.random_bool(0.4) {
        format!(
            "Đề nghị {} tại thôn {hamlet}",
            lowercase_first(&procedure.name)
        )
    } else {
        format!("Đề nghị {}", lowercase_first(&procedure.name))
    };
    let note = match rng.random_range(0..20) {
        0 => json!("Hồ sơ ưu tiên"),
        1 => json!("Đã liên hệ công dân qua điện thoại"),
        _ => Value::Null,
    };
    let return_method = if rng.random_bool(0.8) {
        json!({"id": 0, "name": "Nhận trực tiếp"})
    } else {
        json!({"id": 1, "name": "Qua bưu chính"})
    };
    let phone = phone(rng);
    let vneid_verified = if online {
        rng.random_bool(0.7)
    } else {
        rng.random_bool(0.2)
    };

    let apply_method_name =
        ["Trực tiếp", "Trực tuyến", "Qua bưu chính công ích"][apply_method as usize];
    let mut record = json!({
        "id": dossier.id(),
        "code": code,
        "procedure": {
            "id": procedure.id,
            "code": procedure.code,
            "name": procedure.name,
            "sector": {"code": procedure.sector.code, "name": procedure.sector.name},
        },
        "agency": {"id": agency.item.id, "code": agency.item.code, "name": agency.item.name},
        "applyMethod": {"id": apply_method, "name": apply_method_name},
        "applicant": {
            "type": kind,
            "fullname": fullname,
            "identityNumber": identity,
            "taxCode": tax_code,
            "phone": phone,
            "email": email,
            "address": address,
        },
        "summary": summary,
        "submittedDate": format_source_date(times.submitted),
        "acceptedDate": date_value(times.accepted),
        "appointmentDate": date_value(skeleton.appointment),
        "completedDate": date_value(times.completed),
        "returnedDate": date_value(times.returned),
        "rejectedDate": date_value(times.rejected),
        "dossierStatus": {"id": status, "name": status_name(status)},
        "returnMethod": return_method,
        "fees": fees,
        "attachments": attachments,
        "supplements": supplements,
        "history": history,
        "vneidVerified": vneid_verified,
        "reusesDigitizedComponents": reuses,
        "note": note,
        "updatedDate": format_source_date(dossier.updated()),
        "deletedDate": date_value(skeleton.deleted_at),
    });
    let mut quirks = Vec::new();
    if let Some(code) = dossier.bad() {
        let local =
            &plan.procedures[PROCEDURES.len() + rng.random_range(0..LOCAL_PROCEDURES.len())];
        make_bad(&mut record, code, skeleton.bad_variant, local);
    } else if rng.random_bool(plan.config.quirk_share.clamp(0.0, 1.0)) {
        quirks = apply_quirks(rng, &mut record);
    }
    (record, quirks)
}

fn lowercase_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

// ---------------------------------------------------------------------------------------------------
// Quirks and bad records

const DATE_FIELDS: [&str; 6] = [
    "submittedDate",
    "acceptedDate",
    "appointmentDate",
    "completedDate",
    "returnedDate",
    "rejectedDate",
];

/// Rewrites a canonical date in another shape of quirk 5.
fn reshape_date(value: &Value, shape: u32) -> Value {
    let Some(timestamp) = parse_source_date(value) else {
        return value.clone();
    };
    let local = VIETNAM.to_datetime(timestamp);
    let utc = Offset::UTC.to_datetime(timestamp);
    let (y, mo, d, h, mi, s) = (
        local.year(),
        local.month(),
        local.day(),
        local.hour(),
        local.minute(),
        local.second(),
    );
    match shape {
        0 => json!(format!("{d:02}/{mo:02}/{y:04} {h:02}:{mi:02}:{s:02}")),
        1 => json!(format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")),
        2 => json!(timestamp.as_millisecond()),
        3 => json!(format!(
            "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.000+07:00"
        )),
        _ => json!(format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.000Z",
            utc.year(),
            utc.month(),
            utc.day(),
            utc.hour(),
            utc.minute(),
            utc.second()
        )),
    }
}

/// Puts one or two harmless quirks (5, 6, 7) on a valid record.
fn apply_quirks(rng: &mut SimRng, record: &mut Value) -> Vec<&'static str> {
    let mut applied = Vec::new();
    let has_fees = record["fees"]
        .as_array()
        .is_some_and(|fees| !fees.is_empty());
    let count = if rng.random_bool(0.25) { 2 } else { 1 };
    let mut kinds = vec!["date_shapes", "text", "text"];
    if has_fees {
        kinds.push("fee_strings");
    }
    kinds.shuffle(rng);
    for kind in kinds.into_iter().take(count) {
        match kind {
            "date_shapes" => {
                for field in DATE_FIELDS {
                    if !record[field].is_null() {
                        let reshaped = reshape_date(&record[field], rng.random_range(0..5));
                        record[field] = reshaped;
                    }
                }
                applied.push("date_shapes");
            }
            "fee_strings" => {
                if let Some(fees) = record["fees"].as_array_mut() {
                    for fee in fees {
                        if let Some(amount) = fee["amount"].as_i64() {
                            fee["amount"] = if rng.random_bool(0.5) {
                                json!(thousands_with_dots(amount))
                            } else {
                                json!(amount as f64)
                            };
                        }
                    }
                }
                applied.push("fee_strings");
            }
            _ => {
                let fullname = record["applicant"]["fullname"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let summary = record["summary"].as_str().unwrap_or_default().to_owned();
                let tcvn3 = (tcvn3_as_latin1(&fullname), tcvn3_as_latin1(&summary));
                let choice = ["nfd", "spaces", "tabs", "zero_width", "tcvn3", "tcvn3"]
                    .choose(rng)
                    .copied()
                    .unwrap_or("nfd");
                match (choice, tcvn3) {
                    ("tcvn3", (Some(name), Some(text))) => {
                        record["applicant"]["fullname"] = json!(name);
                        record["summary"] = json!(text);
                        applied.push("tcvn3");
                    }
                    ("tcvn3", (Some(name), None)) => {
                        record["applicant"]["fullname"] = json!(name);
                        applied.push("tcvn3");
                    }
                    ("tcvn3", _) => {
                        record["summary"] = json!(messy_text(&summary, "nfd"));
                        applied.push("nfd");
                    }
                    (other, _) => {
                        record["applicant"]["fullname"] = json!(messy_text(&fullname, other));
                        record["summary"] = json!(messy_text(&summary, other));
                        applied.push(other);
                    }
                }
            }
        }
    }
    applied
}

fn thousands_with_dots(amount: i64) -> String {
    let digits = amount.abs().to_string();
    let mut out = String::new();
    for (position, digit) in digits.chars().enumerate() {
        if position > 0 && (digits.len() - position) % 3 == 0 {
            out.push('.');
        }
        out.push(digit);
    }
    if amount < 0 { format!("-{out}") } else { out }
}

/// Breaks a valid record so that normalization rejects it with `code`.
fn make_bad(
    record: &mut Value,
    code: &'static str,
    variant: usize,
    local_procedure: &ProcedureItem,
) {
    match code {
        "invalid_dossier_code" => {
            let original = record["code"].as_str().unwrap_or_default().to_owned();
            record["code"] = json!(match variant {
                0 => original.replace('-', " "),
                1 => format!("HS#{original}"),
                _ => format!("{original}-{}", "0".repeat(45)),
            });
        }
        "missing_field" => match variant {
            0 => record["applicant"]["fullname"] = json!("   "),
            1 => {
                if let Some(applicant) = record["applicant"].as_object_mut() {
                    applicant.remove("type");
                }
            }
            _ => record["acceptedDate"] = Value::Null,
        },
        "invalid_date" => {
            record["appointmentDate"] =
                json!(["2024-13-45T08:00:00.000+0700", "00/00/0000 00:00:00", "N/A"][variant]);
        }
        "inconsistent_dates" => {
            let accepted = record
                .get("acceptedDate")
                .and_then(parse_source_date)
                .unwrap_or(Timestamp::UNIX_EPOCH);
            record["appointmentDate"] = json!(format_source_date(accepted - seconds(30 * 86_400)));
        }
        "invalid_channel" => {
            let id = [5, 9, 7][variant];
            record["applyMethod"] = json!({"id": id, "name": "Khác"});
        }
        "unmapped_status" => {
            let id = [12, 15, 99][variant];
            record["dossierStatus"] = json!({"id": id, "name": "Chờ xác minh thực địa"});
        }
        "unmapped_procedure" => {
            record["procedure"] = json!({
                "id": local_procedure.id,
                "code": local_procedure.code,
                "name": local_procedure.name,
                "sector": {"code": local_procedure.sector.code, "name": local_procedure.sector.name},
            });
        }
        // The agency was already chosen among those without a code.
        "unmapped_unit" => {}
        "invalid_fee" => {
            let amount = json!(["-75000", "bảy mươi lăm nghìn", "75k"][variant]);
            let amount = if variant == 0 { json!(-75000) } else { amount };
            record["fees"] = json!([{"code": "LP01", "name": "Lệ phí", "amount": amount, "paid": true, "paymentChannel": "CASH"}]);
        }
        _ => {
            // malformed_record
            match variant {
                0 => {
                    let name = record["applicant"]["fullname"].clone();
                    record["applicant"] = name;
                }
                1 => record["fees"] = json!({"code": "LP01", "amount": 75000}),
                _ => record["history"] = json!("Tiếp nhận hồ sơ; Thẩm định hồ sơ"),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Generation

/// A dataset decided but not written: the catalogs, and per dossier only what the feed, the counts and
/// the identifiers need ([`PlannedDossier`], 40 bytes). Each record is written on demand
/// ([`Plan::render`]) from the seed and the dossier's index, the same bytes every time: so a simulator
/// serves a million dossiers without holding a million records.
#[derive(Debug, Clone)]
pub struct Plan {
    config: GeneratorConfig,
    /// Events stop a little before `now`, so that `updatedDate` can follow them.
    cap: Timestamp,
    agencies: Vec<Agency>,
    procedures: Vec<ProcedureItem>,
    /// Indexes of the agencies with a code, and of those without.
    coded: Vec<usize>,
    uncoded: Vec<usize>,
    /// By index (the order they were generated in).
    pub dossiers: Vec<PlannedDossier>,
    /// The `updatedDate` the tie block shares, when there is one.
    pub tie_instant: Option<Timestamp>,
}

/// What a [`Plan`] keeps of one dossier. Its fields bound the dataset: up to 65,534 agencies (an index of
/// 16 bits) and, for ids of 24 characters that sort as [`PlannedDossier::id_order`] does, up to 16,777,216
/// dossiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedDossier {
    /// The dossier's number in the generation order: its record is written from it.
    pub index: u32,
    id_seconds: u32,
    id_random: u64,
    /// `updatedDate` in milliseconds (the tie block's included).
    pub updated_ms: i64,
    /// The reception day (Vietnam time) the counts file it under.
    pub reception_day: civil::Date,
    /// Its number among the dossiers of its agency and day, in its code.
    sequence: u32,
    /// The handling agency, as an index into the catalog.
    pub agency: u16,
    /// 1 + the index in [`BAD_CODES`] of the rejection it was made for; 0 for none.
    bad: u8,
    flags: u8,
}

const HIDDEN: u8 = 1;
const DELETED: u8 = 2;
const CANCELLED: u8 = 4;

impl PlannedDossier {
    /// The id: the submission second, 40 random bits and the index, in hex (24 characters up to 16
    /// million dossiers), so that ids sort as ([`PlannedDossier::id_order`]) does.
    pub fn id(&self) -> String {
        format!(
            "{:08x}{:010x}{:06x}",
            self.id_seconds, self.id_random, self.index
        )
    }

    /// A key that sorts dossiers as their ids do.
    pub fn id_order(&self) -> (u32, u64, u32) {
        (self.id_seconds, self.id_random, self.index)
    }

    /// The index an id was made from (the hex after its first 18 characters), if it has that shape; the
    /// caller compares the whole id.
    pub fn index_in_id(id: &str) -> Option<u32> {
        let tail = id.get(18..)?;
        if tail.is_empty() || !tail.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(tail, 16).ok()
    }

    pub fn updated(&self) -> Timestamp {
        Timestamp::from_millisecond(self.updated_ms).unwrap_or(Timestamp::UNIX_EPOCH)
    }
    /// The rejection code this record was made to trigger, if any.
    pub fn bad(&self) -> Option<&'static str> {
        self.bad
            .checked_sub(1)
            .and_then(|at| BAD_CODES.get(usize::from(at)))
            .copied()
    }
    /// Written by a bulk import: not in the feed until next updated.
    pub fn hidden(&self) -> bool {
        self.flags & HIDDEN != 0
    }
    /// `deletedDate` is set.
    pub fn deleted(&self) -> bool {
        self.flags & DELETED != 0
    }
    /// Status 11 (cancelled as a data-entry error).
    pub fn cancelled(&self) -> bool {
        self.flags & CANCELLED != 0
    }
}

impl Plan {
    /// Decides the dataset for `config`, with receptions in the `config.days` days before `now`.
    pub fn new(config: &GeneratorConfig, now: Timestamp) -> Plan {
        let mut rng = SimRng::seed_from_u64(config.seed);
        let agencies = build_agencies(config);
        let coded: Vec<usize> = (0..agencies.len())
            .filter(|&at| agencies[at].item.code.is_some())
            .collect();
        let uncoded: Vec<usize> = (0..agencies.len())
            .filter(|&at| agencies[at].item.code.is_none())
            .collect();
        let mut plan = Plan {
            config: config.clone(),
            cap: now - seconds(120),
            agencies,
            procedures: build_procedures(),
            coded,
            uncoded,
            dossiers: Vec::new(),
            tie_instant: None,
        };
        let codes: Vec<&'static str> = BAD_CODES
            .iter()
            .copied()
            .filter(|code| *code != "unmapped_unit" || !plan.uncoded.is_empty())
            .collect();

        let count = config.dossiers;
        let bad_count = ((count as f64) * config.bad_share).ceil() as usize;
        let cancelled_count = ((count as f64) * config.cancelled_share).round() as usize;
        let deleted_count = ((count as f64) * config.deleted_share).round() as usize;
        let mut order: Vec<u32> = (0..count as u32).collect();
        order.shuffle(&mut rng);
        let mut assigned = vec![
            Assigned {
                bad: None,
                cancelled: false,
                deleted: false,
            };
            count
        ];
        for (position, &index) in order.iter().enumerate() {
            let slot = &mut assigned[index as usize];
            if position < bad_count {
                slot.bad = Some(codes[position % codes.len()]);
            } else if position < bad_count + cancelled_count {
                slot.cancelled = true;
            } else if position < bad_count + cancelled_count + deleted_count {
                slot.deleted = true;
            } else {
                break;
            }
        }
        drop(order);

        let dossiers = plan.plan_all(&assigned);
        plan.dossiers = dossiers;

        // The night-time batch job: `tie_block` rows updated before 02:00 last night get 02:00:00.000 exactly.
        if config.tie_block > 0 {
            let today = VIETNAM.to_datetime(now).date();
            let mut instant = vietnam_day_at(today, 2, 0, 0);
            if instant > now - seconds(3600) {
                instant = vietnam_day_at(today.yesterday().unwrap_or(today), 2, 0, 0);
            }
            let instant_ms = instant.as_millisecond();
            let mut candidates: Vec<u32> = (0..count as u32)
                .filter(|&i| plan.dossiers[i as usize].updated_ms < instant_ms)
                .collect();
            candidates.shuffle(&mut rng);
            for &index in candidates.iter().take(config.tie_block) {
                plan.dossiers[index as usize].updated_ms = instant_ms;
            }
            plan.tie_instant = Some(instant);
        }
        plan
    }

    /// Every dossier's skeleton, reduced to what the plan keeps; both cores share the work (each
    /// dossier has its own stream, so the split changes nothing), then the codes are numbered in
    /// index order.
    fn plan_all(&self, assigned: &[Assigned]) -> Vec<PlannedDossier> {
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, 8);
        let chunk = assigned.len().div_ceil(threads).max(1);
        let mut planned: Vec<(PlannedDossier, civil::Date)> = Vec::with_capacity(assigned.len());
        std::thread::scope(|scope| {
            let workers: Vec<_> = assigned
                .chunks(chunk)
                .enumerate()
                .map(|(part, slice)| {
                    scope.spawn(move || {
                        slice
                            .iter()
                            .enumerate()
                            .map(|(offset, &assignment)| {
                                self.plan_one(part * chunk + offset, assignment)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            for worker in workers {
                // A panic in a worker is a bug of the generator: passed on as it is.
                planned.extend(
                    worker
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                );
            }
        });
        let mut sequences: HashMap<(u16, civil::Date), u32> = HashMap::new();
        planned
            .into_iter()
            .map(|(mut dossier, code_day)| {
                let sequence = sequences.entry((dossier.agency, code_day)).or_insert(0);
                *sequence += 1;
                dossier.sequence = *sequence;
                dossier
            })
            .collect()
    }

    /// One dossier's skeleton, reduced to what the plan keeps, and the day its code is numbered under.
    fn plan_one(&self, index: usize, assigned: Assigned) -> (PlannedDossier, civil::Date) {
        let skeleton = plan_dossier(
            &mut stream(self.config.seed, index, 0),
            self,
            assigned,
            self.cap,
        );
        let mut flags = 0;
        if skeleton.hidden {
            flags |= HIDDEN;
        }
        if assigned.deleted {
            flags |= DELETED;
        }
        if assigned.cancelled {
            flags |= CANCELLED;
        }
        let dossier = PlannedDossier {
            index: index as u32,
            id_seconds: u32::try_from(skeleton.times.submitted.as_second()).unwrap_or(0),
            id_random: skeleton.id_random,
            updated_ms: skeleton.updated.as_millisecond(),
            reception_day: skeleton.reception_day,
            sequence: 0,
            agency: skeleton.agency as u16,
            bad: assigned
                .bad
                .and_then(|code| BAD_CODES.iter().position(|known| *known == code))
                .map_or(0, |at| at as u8 + 1),
            flags,
        };
        (dossier, skeleton.code_day)
    }

    fn assigned(dossier: &PlannedDossier) -> Assigned {
        Assigned {
            bad: dossier.bad(),
            cancelled: dossier.cancelled(),
            deleted: dossier.deleted(),
        }
    }

    /// The record of `dossier` exactly as served, and the harmless quirks applied to it.
    pub fn render(&self, dossier: &PlannedDossier) -> (Value, Vec<&'static str>) {
        let index = dossier.index as usize;
        let skeleton = plan_dossier(
            &mut stream(self.config.seed, index, 0),
            self,
            Plan::assigned(dossier),
            self.cap,
        );
        build_record(
            &mut stream(self.config.seed, index, 1),
            self,
            &skeleton,
            dossier,
        )
    }

    /// The agency catalog.
    pub fn agencies(&self) -> Vec<AgencyItem> {
        self.agencies.iter().map(|a| a.item.clone()).collect()
    }

    /// The id of the agency at `at` in the catalog.
    pub fn agency_id(&self, at: u16) -> Option<&str> {
        self.agencies
            .get(usize::from(at))
            .map(|agency| agency.item.id.as_str())
    }

    /// The procedure catalog (the local procedures without a national code included).
    pub fn procedures(&self) -> &[ProcedureItem] {
        &self.procedures
    }
}

/// Generates the dataset for `config`, with receptions in the `config.days` days before `now`: every
/// record written ([`Plan`] keeps none), for tests and tools that want them all at once.
pub fn generate(config: &GeneratorConfig, now: Timestamp) -> Dataset {
    let plan = Plan::new(config, now);
    let mut order: Vec<&PlannedDossier> = plan.dossiers.iter().collect();
    order.sort_by_key(|dossier| dossier.id_order());
    let dossiers = order
        .into_iter()
        .map(|dossier| {
            let (record, quirks) = plan.render(dossier);
            GeneratedDossier {
                id: dossier.id(),
                record,
                bad: dossier.bad(),
                hidden: dossier.hidden(),
                deleted: dossier.deleted(),
                cancelled: dossier.cancelled(),
                agency_id: plan.agencies[usize::from(dossier.agency)].item.id.clone(),
                reception_day: dossier.reception_day,
                updated: dossier.updated(),
                quirks,
            }
        })
        .collect();
    Dataset {
        agencies: plan.agencies(),
        procedures: plan.procedures.clone(),
        dossiers,
        tie_instant: plan.tie_instant,
    }
}

// ---------------------------------------------------------------------------------------------------
// Evolution

/// The next plausible change of a dossier, made at `now`: its status moves forward (0→1 or 8, 1→2,
/// 2→5/3/4/9/10, 3→2, 4→5, 5→6, 6→7) with the matching dates and a new history entry; a dossier in a final
/// status, deleted or with an unknown status only gets a new history entry. `updatedDate` becomes `now`.
/// A record of the wrong shape is changed only where its shape allows, never with a panic.
///
/// Returns `now` when the change accepted the dossier (0→1): its reception day is then `now`'s, as the
/// simulator records it without reading the record back.
pub fn evolve(record: &mut Value, rng: &mut SimRng, now: Timestamp) -> Option<Timestamp> {
    let object = record.as_object_mut()?;
    let status = object
        .get("dossierStatus")
        .and_then(|s| s.get("id"))
        .and_then(Value::as_i64);
    let deleted = object.get("deletedDate").is_some_and(|d| !d.is_null());
    let next = if deleted {
        None
    } else {
        match status {
            Some(0) => Some(if rng.random_bool(0.9) { 1 } else { 8 }),
            Some(1) => Some(2),
            Some(2) => Some(match rng.random_range(0..100) {
                0..60 => 5,
                60..75 => 3,
                75..90 => 4,
                90..95 => 9,
                _ => 10,
            }),
            Some(3) => Some(2),
            Some(4) => Some(5),
            Some(5) => Some(6),
            Some(6) => Some(7),
            _ => None,
        }
    };
    let stamp = json!(format_source_date(now));
    let previous_event = object
        .get("history")
        .and_then(Value::as_array)
        .and_then(|history| history.last())
        .and_then(|entry| entry.get("finishedAt"))
        .and_then(parse_source_date)
        .unwrap_or(now - seconds(3600))
        .min(now);
    let entry_status = next.or(status).unwrap_or(2);
    if let Some(next) = next {
        object.insert(
            "dossierStatus".into(),
            json!({"id": next, "name": status_name(next)}),
        );
        match next {
            1 => {
                object.insert("acceptedDate".into(), stamp.clone());
                let due_day = VIETNAM.to_datetime(now + seconds(10 * 86_400)).date();
                object.insert(
                    "appointmentDate".into(),
                    json!(format_source_date(vietnam_day_at(due_day, 17, 0, 0))),
                );
            }
            3 => {
                let previous = object
                    .get("appointmentDate")
                    .cloned()
                    .unwrap_or(Value::Null);
                let count = object
                    .get("supplements")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                let id = object
                    .get("id")
                    .and_then(Value::as_str)
                    .unwrap_or("x")
                    .to_owned();
                if let Some(supplements) =
                    object.get_mut("supplements").and_then(Value::as_array_mut)
                {
                    supplements.push(json!({
                        "id": format!("s-{id}-{}", count + 1),
                        "requestedBy": person(rng).fullname,
                        "content": "Bổ sung bản sao giấy tờ còn thiếu",
                        "requestedAt": stamp,
                        "previousAppointment": previous,
                        "newAppointment": previous,
                    }));
                }
            }
            6 => {
                object.insert("completedDate".into(), stamp.clone());
            }
            7 => {
                if object.get("completedDate").is_none_or(Value::is_null) {
                    object.insert("completedDate".into(), stamp.clone());
                }
                object.insert("returnedDate".into(), stamp.clone());
            }
            8 => {
                object.insert("rejectedDate".into(), stamp.clone());
            }
            _ => {}
        }
    }
    let entry = history_entry(
        rng,
        if next.is_some() { entry_status } else { -1 },
        previous_event,
        now,
    );
    let mut entry = entry;
    if next.is_none() {
        entry["statusId"] = status.map_or(Value::Null, Value::from);
    }
    if let Some(history) = object.get_mut("history").and_then(Value::as_array_mut) {
        history.push(entry);
    }
    object.insert("updatedDate".into(), stamp);
    (next == Some(1)).then_some(now)
}
