//! The JSON shapes the simulators answer with, written from `../shared/spec/` (source-api.md sections 3
//! and 4, portal-api.md 2.4 and 2.5), apart from the daemon's own wire types: a field the daemon's types
//! name wrongly must not be named the same wrong way by the systems it is tested against.

use serde::Serialize;

/// A Spring page (source-api.md section 3).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    pub content: Vec<T>,
    pub number: i64,
    pub size: i64,
    pub total_elements: i64,
    pub total_pages: i64,
    pub last: bool,
}

/// A procedure's sector.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sector {
    pub code: Option<String>,
    pub name: Option<String>,
}

/// `GET /ba/agency` items.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgencyItem {
    pub id: String,
    pub code: Option<String>,
    pub name: String,
    pub parent_id: Option<String>,
    pub deleted: bool,
}

/// `GET /ba/procedure` items.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcedureItem {
    pub id: String,
    pub code: String,
    pub national_code: Option<String>,
    pub name: String,
    pub sector: Sector,
    pub has_fee: bool,
}

/// `GET /pa/dossier-statistic/ids` items.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DossierIdItem {
    pub id: String,
    pub code: Option<String>,
    pub updated_date: Option<String>,
}

/// `ThongKeHoSoDongBo` result rows (portal-api.md 2.4).
#[derive(Debug, Clone, Serialize)]
pub struct UnitDayCount {
    #[serde(rename = "DonViXuLy")]
    pub unit: String,
    #[serde(rename = "Ngay")]
    pub day: String,
    #[serde(rename = "SoHoSo")]
    pub count: i64,
}

/// `LayDanhMucCoQuan` result rows (portal-api.md 2.5).
#[derive(Debug, Clone, Serialize)]
pub struct UnitCatalogItem {
    #[serde(rename = "MADONVI")]
    pub code: String,
    #[serde(rename = "TENDONVI")]
    pub name: Option<String>,
}
