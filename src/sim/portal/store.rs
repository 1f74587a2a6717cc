//! What the portal keeps of each stored dossier. Recording payloads (the default of
//! [`super::PortalSimConfig`], which the tests use) keeps every dossier and progress entry as received;
//! without it (`tthc-sync simulate portal`, for benchmarks of a million dossiers) the portal keeps, per
//! dossier, a hash of what it received and only the fields it checks and serves: `DonViXuLy` and
//! `NgayTiepNhan` (the counts of `ThongKeHoSoDongBo`), the procedure's code, name and sector
//! (`LayThuTuc`) and `TrangThaiHoSo`, about 100 bytes instead of several kilobytes. `TraCuuHoSo` then
//! answers those fields only.

use std::collections::HashMap;
use std::hash::Hash;

use serde_json::{Map, Value};

use super::StoredDossier;

/// The fields a compact store keeps, in the order `TraCuuHoSo` answers them.
const PROCEDURE_FIELDS: [&str; 4] = ["MaTTHC", "TenTTHC", "MaLinhVuc", "TenLinhVuc"];

/// Values kept once however many dossiers share them (unit codes, procedures).
#[derive(Debug, Default)]
pub(super) struct Interner<T> {
    values: Vec<T>,
    index: HashMap<T, u32>,
}

impl<T: Clone + Eq + Hash> Interner<T> {
    fn intern(&mut self, value: T) -> u32 {
        if let Some(&at) = self.index.get(&value) {
            return at;
        }
        let at = self.values.len() as u32;
        self.values.push(value.clone());
        self.index.insert(value, at);
        at
    }

    fn get(&self, at: u32) -> Option<&T> {
        self.values.get(at as usize)
    }
}

/// The shared tables of a compact store.
#[derive(Debug, Default)]
pub(super) struct Tables {
    units: Interner<String>,
    procedures: Interner<[Option<String>; 4]>,
}

/// A dossier as the portal holds it.
pub(super) enum Held {
    /// Exactly as received.
    Full(Value),
    /// What the portal checks and serves of it.
    Compact {
        unit: u32,
        /// `NgayTiepNhan` as the number `yyyyMMddHHmmss` (validated before it is stored).
        received: u64,
        procedure: u32,
        /// `TrangThaiHoSo`, 0 when it was not a number.
        status: u8,
    },
}

/// Progress entries of one dossier, unique by (`ThoiDiemXuLy`, `NoiDungXuLy`).
#[derive(Debug, Default)]
pub(super) struct ProgressLog {
    /// The entries as received, in arrival order (empty unless payloads are recorded).
    entries: Vec<Value>,
    /// Hash of each entry's key → its place in `entries` (or its number, when entries are not kept).
    keys: HashMap<u64, usize>,
    /// How many were accepted, repeats included.
    received: usize,
}

/// One stored dossier.
pub(super) struct DossierRecord {
    pub held: Held,
    /// blake3 of the dossier's JSON as received (first 16 bytes).
    pub hash: [u8; 16],
    pub times_stored: u32,
    /// `NgayCapNhat` as the number `yyyyMMddHHmmss`.
    pub updated_at: u64,
    pub progress: Option<Box<ProgressLog>>,
}

fn text<'a>(dossier: &'a Value, field: &str) -> Option<&'a str> {
    dossier.get(field).and_then(Value::as_str)
}

fn digits(text: &str) -> u64 {
    text.parse().unwrap_or(0)
}

/// blake3 of a value's JSON, first 16 bytes.
fn hash_of(value: &Value) -> [u8; 16] {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut hash = [0u8; 16];
    hash.copy_from_slice(&blake3::hash(&bytes).as_bytes()[..16]);
    hash
}

impl Held {
    /// Keeps `dossier` whole (`record`) or only what the portal checks and serves of it.
    pub fn new(dossier: Value, record: bool, tables: &mut Tables) -> Held {
        if record {
            return Held::Full(dossier);
        }
        let unit = tables
            .units
            .intern(text(&dossier, "DonViXuLy").unwrap_or_default().to_owned());
        let procedure = tables
            .procedures
            .intern(PROCEDURE_FIELDS.map(|field| text(&dossier, field).map(str::to_owned)));
        let status = match dossier.get("TrangThaiHoSo") {
            Some(Value::String(code)) => code.trim().parse().unwrap_or(0),
            Some(Value::Number(code)) => code
                .as_u64()
                .and_then(|c| u8::try_from(c).ok())
                .unwrap_or(0),
            _ => 0,
        };
        Held::Compact {
            unit,
            received: digits(text(&dossier, "NgayTiepNhan").unwrap_or_default()),
            procedure,
            status,
        }
    }

    /// (DonViXuLy, day of NgayTiepNhan `yyyyMMdd`): the bucket `ThongKeHoSoDongBo` counts it in.
    pub fn day_bucket(&self, tables: &Tables) -> (String, String) {
        match self {
            Held::Full(dossier) => super::services::day_bucket(dossier),
            Held::Compact { unit, received, .. } => (
                tables.units.get(*unit).cloned().unwrap_or_default(),
                format!("{:08}", received / 1_000_000),
            ),
        }
    }

    /// The dossier as `TraCuuHoSo` answers it (before `NgayCapNhat`): as received, or the fields kept.
    pub fn dossier(&self, ma_ho_so: &str, tables: &Tables) -> Value {
        let (unit, received, procedure, status) = match self {
            Held::Full(dossier) => return dossier.clone(),
            Held::Compact {
                unit,
                received,
                procedure,
                status,
            } => (unit, received, procedure, status),
        };
        let mut fields = Map::new();
        fields.insert("MaHoSo".into(), Value::from(ma_ho_so));
        if let Some(values) = tables.procedures.get(*procedure) {
            for (field, value) in PROCEDURE_FIELDS.iter().zip(values) {
                if let Some(value) = value {
                    fields.insert((*field).into(), Value::from(value.as_str()));
                }
            }
        }
        if *status > 0 {
            fields.insert("TrangThaiHoSo".into(), Value::from(status.to_string()));
        }
        fields.insert(
            "NgayTiepNhan".into(),
            Value::from(format!("{received:014}")),
        );
        if let Some(unit) = tables.units.get(*unit) {
            fields.insert("DonViXuLy".into(), Value::from(unit.as_str()));
        }
        Value::Object(fields)
    }

    /// The procedure fields (`MaTTHC`, `TenTTHC`, `MaLinhVuc`, `TenLinhVuc`) of the dossier.
    pub fn procedure<'a>(&'a self, tables: &'a Tables) -> [Option<&'a str>; 4] {
        match self {
            Held::Full(dossier) => PROCEDURE_FIELDS.map(|field| text(dossier, field)),
            Held::Compact { procedure, .. } => match tables.procedures.get(*procedure) {
                Some(values) => [0, 1, 2, 3].map(|at| values[at].as_deref()),
                None => [None; 4],
            },
        }
    }
}

impl DossierRecord {
    /// A dossier stored for the first time.
    pub fn new(dossier: Value, record: bool, updated_at: u64, tables: &mut Tables) -> Self {
        DossierRecord {
            hash: hash_of(&dossier),
            held: Held::new(dossier, record, tables),
            times_stored: 1,
            updated_at,
            progress: None,
        }
    }

    /// A new version of a stored dossier.
    pub fn replace(&mut self, dossier: Value, record: bool, updated_at: u64, tables: &mut Tables) {
        self.hash = hash_of(&dossier);
        self.held = Held::new(dossier, record, tables);
        self.times_stored += 1;
        self.updated_at = updated_at;
    }

    /// Stores a progress entry once per (`ThoiDiemXuLy`, `NoiDungXuLy`); a repeat replaces it in place.
    pub fn add_progress(&mut self, entry: Value, record: bool) {
        let field = |name: &str| text(&entry, name).unwrap_or_default();
        let key = blake3::hash(
            format!("{}\u{1f}{}", field("ThoiDiemXuLy"), field("NoiDungXuLy")).as_bytes(),
        );
        let key = u64::from_le_bytes(key.as_bytes()[..8].try_into().unwrap_or_default());
        let log = self.progress.get_or_insert_with(Box::default);
        log.received += 1;
        let next = log.keys.len();
        match log.keys.get(&key) {
            Some(&at) if record => log.entries[at] = entry,
            Some(_) => {}
            None => {
                log.keys.insert(key, next);
                if record {
                    log.entries.push(entry);
                }
            }
        }
    }

    /// Distinct progress entries held.
    pub fn progress_count(&self) -> usize {
        self.progress.as_ref().map_or(0, |log| log.keys.len())
    }

    /// `NgayCapNhat` as text.
    pub fn updated_at_text(&self) -> String {
        format!("{:014}", self.updated_at)
    }

    /// The hash of the dossier as received, in hex.
    pub fn hash_text(&self) -> String {
        self.hash.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// The public view of the record.
    pub fn stored(&self, ma_ho_so: &str, tables: &Tables) -> StoredDossier {
        let progress = self.progress.as_deref();
        StoredDossier {
            dossier: self.held.dossier(ma_ho_so, tables),
            times_stored: self.times_stored as usize,
            updated_at: self.updated_at_text(),
            progress: progress.map_or_else(Vec::new, |log| log.entries.clone()),
            progress_received: progress.map_or(0, |log| log.received),
            payload_hash: self.hash_text(),
        }
    }
}
