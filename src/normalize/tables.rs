//! The mapping tables (units, successions, procedures, statuses) that normalization applies, read from the
//! operator's TOML file (`config/mapping.example.toml` documents the format) and checked before use.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use jiff::civil::Date;
use serde::Deserialize;

use super::procedures::NationalProcedureCode;
use super::status::{StatusMapping, default_mapping};
use super::units::UnitCode;

/// The operator's mapping tables, validated.
#[derive(Debug, Clone, Default)]
pub struct MappingTables {
    /// Source agency id → portal unit code.
    pub units: HashMap<String, String>,
    /// Local procedure code → national procedure code.
    pub procedures: HashMap<String, String>,
    /// Retired unit codes and their successors, in the file's order.
    pub successions: Vec<Succession>,
    /// Source status id → portal status or skip; `None` uses the default table of mapping.md.
    pub statuses: Option<HashMap<i64, StatusMapping>>,
}

/// One retired unit code and what replaced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Succession {
    /// The retired code.
    pub from: String,
    /// One successor (a merger or a renaming) or several with selectors (a 1:N split).
    pub successors: Vec<Successor>,
    /// Dossiers received on or after this day (Vietnam time) take the successor's code.
    pub effective: Date,
    /// Whether the portal still accepts the retired code for dossiers received before `effective`; when it
    /// does not, those dossiers take the successor's code too.
    pub old_code_still_known_to_portal: bool,
}

/// A successor unit; `selector` says which dossiers it takes when a retired unit has several.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Successor {
    pub code: String,
    /// `None` claims every dossier (the single successor of a merger).
    pub selector: Option<Selector>,
}

/// Which dossiers a successor claims: those matching any listed value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selector {
    /// National procedure codes (after the procedure rule), e.g. `1.004227`.
    pub procedures: Vec<String>,
    /// Sector codes (`procedure.sector.code`), e.g. `G09-XD01`.
    pub sectors: Vec<String>,
    /// Source agency ids (`agency.id`).
    pub agencies: Vec<String>,
}

impl Selector {
    fn is_empty(&self) -> bool {
        self.procedures.is_empty() && self.sectors.is_empty() && self.agencies.is_empty()
    }
}

/// Why a tables file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TablesError {
    #[error("failed to read the mapping tables {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax, a duplicate key, a missing or unknown key: the message names the key and the line.
    #[error("the mapping tables are not valid TOML of the expected shape")]
    Syntax(#[from] toml::de::Error),
    #[error("the mapping tables have {} problem(s): {}", .0.len(), join_problems(.0))]
    Problems(Vec<TableProblem>),
}

fn join_problems(problems: &[TableProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One problem `check` finds, naming the key where the operator has to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableProblem {
    /// A unit code not of the shape `ddd.dd.dd.Ldd`.
    BadUnitCode { key: String, value: String },
    /// A national procedure code not of the shape `d.dddddd`.
    BadProcedureCode { key: String, value: String },
    /// A status key that is not an integer, or a value that is not `"1"`..`"10"` or `"skip"`.
    BadStatus { key: String, value: String },
    /// A date that is not `yyyy-mm-dd`.
    BadDate { key: String, value: String },
    /// The same key twice (status ids that read as the same number, or two successions from one code).
    DuplicateKey { key: String },
    /// A succession without any successor.
    NoSuccessor { key: String },
    /// Successions that lead back to where they started.
    SuccessionCycle { codes: Vec<String> },
    /// Two successors of one retired unit that can claim the same dossier.
    OverlappingSelectors {
        key: String,
        first: String,
        second: String,
        shared: String,
    },
}

impl TableProblem {
    /// The key the problem is at (`units."ag-031"`, `successions[2].to[1]`, ...).
    pub fn key(&self) -> String {
        match self {
            TableProblem::BadUnitCode { key, .. }
            | TableProblem::BadProcedureCode { key, .. }
            | TableProblem::BadStatus { key, .. }
            | TableProblem::BadDate { key, .. }
            | TableProblem::DuplicateKey { key }
            | TableProblem::NoSuccessor { key }
            | TableProblem::OverlappingSelectors { key, .. } => key.clone(),
            TableProblem::SuccessionCycle { codes } => {
                format!("successions (cycle {})", codes.join(" → "))
            }
        }
    }
}

impl fmt::Display for TableProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableProblem::BadUnitCode { key, value } => {
                write!(
                    f,
                    "{key}: unit code {value:?} is not of the shape ddd.dd.dd.Ldd"
                )
            }
            TableProblem::BadProcedureCode { key, value } => {
                write!(
                    f,
                    "{key}: procedure code {value:?} is not of the shape d.dddddd"
                )
            }
            TableProblem::BadStatus { key, value } => write!(
                f,
                "{key}: {value:?} is not a status mapping (integer key, value \"1\" to \"10\" or \"skip\")"
            ),
            TableProblem::BadDate { key, value } => {
                write!(f, "{key}: {value:?} is not a date yyyy-mm-dd")
            }
            TableProblem::DuplicateKey { key } => write!(f, "{key}: given more than once"),
            TableProblem::NoSuccessor { key } => {
                write!(f, "{key}: a succession needs at least one successor")
            }
            TableProblem::SuccessionCycle { codes } => {
                write!(f, "successions form a cycle: {}", codes.join(" → "))
            }
            TableProblem::OverlappingSelectors {
                key,
                first,
                second,
                shared,
            } => write!(
                f,
                "{key}: successors {first} and {second} can both claim a dossier ({shared}); every dossier must have exactly one successor"
            ),
        }
    }
}

/// The file as the operator writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TablesFile {
    /// `[units]`: source agency id → portal unit code.
    #[serde(default)]
    units: BTreeMap<String, String>,
    /// `[procedures]`: local procedure code → national procedure code.
    #[serde(default)]
    procedures: BTreeMap<String, String>,
    /// `[statuses]`, optional: source status id → `"1"`..`"10"` or `"skip"`; replaces the default.
    #[serde(default)]
    statuses: Option<BTreeMap<String, toml::Value>>,
    /// `[[successions]]`: retired unit codes.
    #[serde(default)]
    successions: Vec<SuccessionFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuccessionFile {
    /// The retired unit code.
    from: String,
    /// One successor code, or an array of tables `{code, procedures?, sectors?, agencies?}`.
    to: SuccessorsFile,
    /// A string `"2025-07-01"` or a bare TOML date `2025-07-01`.
    effective: toml::Value,
    /// Whether dossiers received before `effective` may keep the retired code.
    old_code_still_known_to_portal: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SuccessorsFile {
    One(String),
    Several(Vec<SuccessorFile>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SuccessorFile {
    /// The successor's unit code.
    code: String,
    /// National procedure codes this successor takes.
    #[serde(default)]
    procedures: Vec<String>,
    /// Sector codes this successor takes.
    #[serde(default)]
    sectors: Vec<String>,
    /// Source agency ids this successor takes.
    #[serde(default)]
    agencies: Vec<String>,
}

impl MappingTables {
    /// Reads and checks tables from TOML; any problem is an error naming the key.
    pub fn from_toml_str(text: &str) -> Result<MappingTables, TablesError> {
        let (tables, mut problems) = MappingTables::parse_file(text)?;
        problems.extend(tables.check());
        if problems.is_empty() {
            Ok(tables)
        } else {
            Err(TablesError::Problems(problems))
        }
    }

    /// Reads and checks tables from a TOML file.
    pub fn load(path: impl AsRef<Path>) -> Result<MappingTables, TablesError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TablesError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        MappingTables::from_toml_str(&text)
    }

    /// Reads tables without rejecting shape problems (tests that need a deliberately bad entry). Entries
    /// that cannot be represented at all (an unparseable date or status) are left out.
    #[cfg(test)]
    pub(crate) fn from_toml_str_unchecked(text: &str) -> Result<MappingTables, TablesError> {
        MappingTables::parse_file(text).map(|(tables, _)| tables)
    }

    fn parse_file(text: &str) -> Result<(MappingTables, Vec<TableProblem>), TablesError> {
        let file: TablesFile = toml::from_str(text)?;
        let mut problems = Vec::new();
        let statuses = file.statuses.map(|statuses| {
            let mut table = HashMap::new();
            for (key, value) in statuses {
                let shown = format!("statuses.{key:?}");
                let mapping = match &value {
                    toml::Value::String(text) => StatusMapping::parse(text),
                    toml::Value::Integer(number) => StatusMapping::parse(&number.to_string()),
                    _ => None,
                };
                match (key.trim().parse::<i64>(), mapping) {
                    (Ok(id), Some(mapping)) => {
                        if table.insert(id, mapping).is_some() {
                            problems.push(TableProblem::DuplicateKey { key: shown });
                        }
                    }
                    _ => problems.push(TableProblem::BadStatus {
                        key: shown,
                        value: value.to_string(),
                    }),
                }
            }
            table
        });
        let mut successions = Vec::with_capacity(file.successions.len());
        for (index, succession) in file.successions.into_iter().enumerate() {
            let effective_text = match &succession.effective {
                toml::Value::String(text) => text.clone(),
                other => other.to_string(),
            };
            let Ok(effective) = effective_text.trim().parse::<Date>() else {
                problems.push(TableProblem::BadDate {
                    key: format!("successions[{index}].effective"),
                    value: effective_text,
                });
                continue;
            };
            let successors = match succession.to {
                SuccessorsFile::One(code) => vec![Successor {
                    code,
                    selector: None,
                }],
                SuccessorsFile::Several(list) => list
                    .into_iter()
                    .map(|successor| {
                        let selector = Selector {
                            procedures: successor.procedures,
                            sectors: successor.sectors,
                            agencies: successor.agencies,
                        };
                        Successor {
                            code: successor.code,
                            selector: (!selector.is_empty()).then_some(selector),
                        }
                    })
                    .collect(),
            };
            successions.push(Succession {
                from: succession.from,
                successors,
                effective,
                old_code_still_known_to_portal: succession.old_code_still_known_to_portal,
            });
        }
        let tables = MappingTables {
            units: file.units.into_iter().collect(),
            procedures: file.procedures.into_iter().collect(),
            successions,
            statuses,
        };
        Ok((tables, problems))
    }

    /// Every problem of these tables: codes of the wrong shape, duplicate successions, cycles, and
    /// successors whose selectors overlap. Empty when the tables are fit to use.
    pub fn check(&self) -> Vec<TableProblem> {
        let mut problems = Vec::new();
        let mut units: Vec<_> = self.units.iter().collect();
        units.sort();
        for (agency, code) in units {
            if UnitCode::parse(code).is_none() {
                problems.push(TableProblem::BadUnitCode {
                    key: format!("units.{agency:?}"),
                    value: code.clone(),
                });
            }
        }
        let mut procedures: Vec<_> = self.procedures.iter().collect();
        procedures.sort();
        for (local, national) in procedures {
            if NationalProcedureCode::parse(national).is_none() {
                problems.push(TableProblem::BadProcedureCode {
                    key: format!("procedures.{local:?}"),
                    value: national.clone(),
                });
            }
        }
        let mut seen_from = HashMap::new();
        for (index, succession) in self.successions.iter().enumerate() {
            let key = format!("successions[{index}]");
            if UnitCode::parse(&succession.from).is_none() {
                problems.push(TableProblem::BadUnitCode {
                    key: format!("{key}.from"),
                    value: succession.from.clone(),
                });
            }
            if seen_from.insert(succession.from.as_str(), index).is_some() {
                problems.push(TableProblem::DuplicateKey {
                    key: format!("{key}.from = {:?}", succession.from),
                });
            }
            if succession.successors.is_empty() {
                problems.push(TableProblem::NoSuccessor { key: key.clone() });
            }
            for (position, successor) in succession.successors.iter().enumerate() {
                if UnitCode::parse(&successor.code).is_none() {
                    problems.push(TableProblem::BadUnitCode {
                        key: format!("{key}.to[{position}].code"),
                        value: successor.code.clone(),
                    });
                }
                for procedure in successor
                    .selector
                    .iter()
                    .flat_map(|selector| &selector.procedures)
                {
                    if NationalProcedureCode::parse(procedure).is_none() {
                        problems.push(TableProblem::BadProcedureCode {
                            key: format!("{key}.to[{position}].procedures"),
                            value: procedure.clone(),
                        });
                    }
                }
            }
            problems.extend(overlaps(&key, succession));
        }
        problems.extend(self.cycles());
        problems
    }

    /// Successions that lead from a code back to itself (each cycle reported once).
    fn cycles(&self) -> Vec<TableProblem> {
        let mut problems = Vec::new();
        let mut reported: Vec<Vec<String>> = Vec::new();
        for start in &self.successions {
            // Depth-first over successors; a path longer than the table cannot be simple.
            let mut stack: Vec<(Vec<String>, &str)> =
                vec![(vec![start.from.clone()], start.from.as_str())];
            while let Some((path, code)) = stack.pop() {
                let Some(succession) = self.succession_from(code) else {
                    continue;
                };
                for successor in &succession.successors {
                    if successor.code == start.from {
                        let mut cycle = path.clone();
                        cycle.push(start.from.clone());
                        let mut members = cycle[..cycle.len() - 1].to_vec();
                        members.sort();
                        if !reported.contains(&members) {
                            reported.push(members);
                            problems.push(TableProblem::SuccessionCycle { codes: cycle });
                        }
                    } else if !path.contains(&successor.code)
                        && path.len() <= self.successions.len()
                    {
                        let mut next = path.clone();
                        next.push(successor.code.clone());
                        stack.push((next, successor.code.as_str()));
                    }
                }
            }
        }
        problems
    }

    /// The succession of a retired code, if it is one.
    pub fn succession_from(&self, code: &str) -> Option<&Succession> {
        self.successions
            .iter()
            .find(|succession| succession.from == code)
    }

    /// The status rule: the configured table, else the default of mapping.md; `None` is `unmapped_status`.
    pub fn status_for(&self, source_status: i64) -> Option<StatusMapping> {
        match &self.statuses {
            Some(table) => table.get(&source_status).copied(),
            None => default_mapping(source_status),
        }
    }

    /// A stable hash of the tables' content (independent of the order of entries in the file), so that
    /// the daemon notices changed tables and normalizes held-back dossiers again.
    pub fn fingerprint(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        let mut field = |text: &str| {
            hasher.update(text.as_bytes());
            hasher.update(b"\x1f");
        };
        field("tthc-sync mapping tables v1");
        field("units");
        let mut units: Vec<_> = self.units.iter().collect();
        units.sort();
        for (agency, code) in units {
            field(agency);
            field(code);
        }
        field("procedures");
        let mut procedures: Vec<_> = self.procedures.iter().collect();
        procedures.sort();
        for (local, national) in procedures {
            field(local);
            field(national);
        }
        field("statuses");
        match &self.statuses {
            None => field("default"),
            Some(table) => {
                let mut statuses: Vec<_> = table.iter().collect();
                statuses.sort_by_key(|(id, _)| **id);
                for (id, mapping) in statuses {
                    field(&id.to_string());
                    field(mapping.as_str());
                }
            }
        }
        field("successions");
        let mut successions: Vec<_> = self.successions.iter().collect();
        successions.sort_by(|a, b| a.from.cmp(&b.from));
        for succession in successions {
            field(&succession.from);
            field(&succession.effective.to_string());
            field(if succession.old_code_still_known_to_portal {
                "known"
            } else {
                "unknown"
            });
            for successor in &succession.successors {
                field("to");
                field(&successor.code);
                if let Some(selector) = &successor.selector {
                    for (name, list) in [
                        ("procedures", &selector.procedures),
                        ("sectors", &selector.sectors),
                        ("agencies", &selector.agencies),
                    ] {
                        field(name);
                        let mut sorted = list.clone();
                        sorted.sort();
                        for item in &sorted {
                            field(item);
                        }
                    }
                }
            }
        }
        hasher.finalize().to_hex().to_string()
    }
}

/// Successors of one retired unit that could claim the same dossier: a successor without a selector
/// beside another, or a value listed under two successors.
fn overlaps(key: &str, succession: &Succession) -> Vec<TableProblem> {
    let mut problems = Vec::new();
    for (first_index, first) in succession.successors.iter().enumerate() {
        for second in &succession.successors[first_index + 1..] {
            let shared = match (&first.selector, &second.selector) {
                (None, _) | (_, None) => {
                    Some("a successor without a selector claims every dossier".to_owned())
                }
                (Some(a), Some(b)) => [
                    ("procedure", &a.procedures, &b.procedures),
                    ("sector", &a.sectors, &b.sectors),
                    ("agency", &a.agencies, &b.agencies),
                ]
                .into_iter()
                .find_map(|(kind, left, right)| {
                    left.iter()
                        .find(|value| right.contains(value))
                        .map(|value| format!("{kind} {value}"))
                }),
            };
            if let Some(shared) = shared {
                problems.push(TableProblem::OverlappingSelectors {
                    key: format!("{key}.to"),
                    first: first.code.clone(),
                    second: second.code.clone(),
                    shared,
                });
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../config/mapping.example.toml");

    #[test]
    fn the_example_file_is_valid() {
        let tables = MappingTables::from_toml_str(EXAMPLE).expect("example tables are valid");
        assert_eq!(
            tables.units.get("ag-031").map(String::as_str),
            Some("000.00.31.H60")
        );
        assert!(tables.succession_from("000.00.12.H22").is_some());
        assert_eq!(
            tables
                .succession_from("000.00.20.H22")
                .map(|s| s.successors.len()),
            Some(3)
        );
    }

    #[test]
    fn duplicate_keys_fail_at_parse_naming_the_key() {
        let error = MappingTables::from_toml_str(
            "[units]\n\"ag-1\" = \"000.00.31.H60\"\n\"ag-1\" = \"000.00.32.H60\"\n",
        )
        .expect_err("duplicate key");
        assert!(error.to_string().contains("ag-1"), "{error}");
    }

    #[test]
    fn shape_problems_name_the_key() {
        let error = MappingTables::from_toml_str(
            "[units]\n\"ag-1\" = \"31.H60\"\n[procedures]\n\"X\" = \"1.23\"\n",
        )
        .expect_err("bad shapes");
        let text = error.to_string();
        assert!(
            text.contains("units.\"ag-1\"") && text.contains("procedures.\"X\""),
            "{text}"
        );
    }

    #[test]
    fn finds_cycles_and_overlaps() {
        let text = r#"
[[successions]]
from = "000.00.01.H22"
to = "000.00.02.H22"
effective = 2025-07-01
old_code_still_known_to_portal = true

[[successions]]
from = "000.00.02.H22"
to = "000.00.01.H22"
effective = "2025-07-01"
old_code_still_known_to_portal = true

[[successions]]
from = "000.00.05.H22"
effective = "2025-07-01"
old_code_still_known_to_portal = false
[[successions.to]]
code = "000.00.06.H60"
sectors = ["G09-XD01"]
[[successions.to]]
code = "000.00.07.H60"
sectors = ["G09-XD01", "G03-GD10"]
"#;
        let tables = MappingTables::from_toml_str_unchecked(text).expect("parses");
        let problems = tables.check();
        assert_eq!(
            problems
                .iter()
                .filter(|p| matches!(p, TableProblem::SuccessionCycle { .. }))
                .count(),
            1,
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| matches!(p, TableProblem::OverlappingSelectors { .. })),
            "{problems:?}"
        );
        assert!(MappingTables::from_toml_str(text).is_err());
    }

    #[test]
    fn statuses_replace_the_default() {
        let tables = MappingTables::from_toml_str("[statuses]\n\"0\" = \"1\"\n\"99\" = \"skip\"\n")
            .expect("valid");
        assert_eq!(tables.status_for(99), Some(StatusMapping::Skip));
        assert_eq!(tables.status_for(2), None);
        assert!(
            MappingTables::from_toml_str("[statuses]\n\"0\" = \"1\"\n\"00\" = \"2\"\n").is_err()
        );
        assert!(MappingTables::from_toml_str("[statuses]\n\"x\" = \"1\"\n").is_err());
        assert!(MappingTables::from_toml_str("[statuses]\n\"1\" = \"12\"\n").is_err());
    }

    #[test]
    fn fingerprint_follows_content_not_order() {
        let a = MappingTables::from_toml_str(
            "[units]\n\"a\" = \"000.00.31.H60\"\n\"b\" = \"000.00.32.H60\"\n",
        )
        .expect("valid");
        let b = MappingTables::from_toml_str(
            "[units]\n\"b\" = \"000.00.32.H60\"\n\"a\" = \"000.00.31.H60\"\n",
        )
        .expect("valid");
        let c = MappingTables::from_toml_str(
            "[units]\n\"a\" = \"000.00.31.H60\"\n\"b\" = \"000.00.33.H60\"\n",
        )
        .expect("valid");
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert_ne!(a.fingerprint(), MappingTables::default().fingerprint());
    }
}
