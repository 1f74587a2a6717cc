//! The unit rule of mapping.md: the unit table by source agency id, else the source's own agency code when
//! it has the national shape, then the succession table (mergers, 1:N splits with selectors).

use jiff::civil::Date;

use super::tables::{MappingTables, Successor};

/// A handling unit's portal code, `ddd.dd.dd.Ldd` (`^[0-9]{3}\.[0-9]{2}\.[0-9]{2}\.[A-Z][0-9]{2}$`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitCode(String);

impl UnitCode {
    pub fn parse(text: &str) -> Option<UnitCode> {
        is_unit_shape(text.as_bytes()).then(|| UnitCode(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

fn is_unit_shape(bytes: &[u8]) -> bool {
    let digit = |index: usize| bytes.get(index).is_some_and(u8::is_ascii_digit);
    bytes.len() == 13
        && (0..3).all(digit)
        && bytes[3] == b'.'
        && (4..6).all(digit)
        && bytes[6] == b'.'
        && (7..9).all(digit)
        && bytes[9] == b'.'
        && bytes[10].is_ascii_uppercase()
        && (11..13).all(digit)
}

/// What the succession selectors look at.
#[derive(Debug, Clone, Copy, Default)]
pub struct UnitContext<'a> {
    /// The source's `agency.id`.
    pub agency_id: Option<&'a str>,
    /// The source's `agency.code`, trimmed.
    pub agency_code: Option<&'a str>,
    /// The national procedure code, after the procedure rule.
    pub procedure: Option<&'a str>,
    /// The sector code (`procedure.sector.code`).
    pub sector: Option<&'a str>,
    /// The dossier's reception day (Vietnam time); unknown counts as "received now".
    pub reception_day: Option<Date>,
}

/// Why no unit could be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitProblem {
    /// Neither the unit table nor the source's code gives a unit (`unmapped_unit`).
    Unmapped { detail: &'static str },
    /// A retired unit with several successors, of which none or more than one claims the dossier
    /// (`ambiguous_succession`). `retired` is the last code reached, which reports group under.
    Ambiguous { retired: UnitCode, claimants: usize },
}

/// Successions can chain (a 2025 merger, then a later one); a chain longer than this is a cycle that
/// `MappingTables::check` would have reported, and resolution stops rather than loop.
const MAX_SUCCESSION_CHAIN: usize = 16;

/// Resolves the handling unit of one dossier.
pub fn resolve(context: &UnitContext<'_>, tables: &MappingTables) -> Result<UnitCode, UnitProblem> {
    let mut code = base_unit(context, tables)?;
    for _ in 0..MAX_SUCCESSION_CHAIN {
        let Some(succession) = tables.succession_from(code.as_str()) else {
            break;
        };
        let received_before = context
            .reception_day
            .is_some_and(|day| day < succession.effective);
        if received_before && succession.old_code_still_known_to_portal {
            break;
        }
        let mut claimants = succession
            .successors
            .iter()
            .filter(|successor| claims(successor, context));
        let (Some(successor), None) = (claimants.next(), claimants.next()) else {
            let claimants = succession
                .successors
                .iter()
                .filter(|successor| claims(successor, context))
                .count();
            return Err(UnitProblem::Ambiguous {
                retired: code,
                claimants,
            });
        };
        code = UnitCode::parse(successor.code.trim()).ok_or(UnitProblem::Unmapped {
            detail: "the succession table names a successor code of the wrong shape",
        })?;
    }
    Ok(code)
}

fn base_unit(context: &UnitContext<'_>, tables: &MappingTables) -> Result<UnitCode, UnitProblem> {
    if let Some(mapped) = context.agency_id.and_then(|id| tables.units.get(id)) {
        return UnitCode::parse(mapped.trim()).ok_or(UnitProblem::Unmapped {
            detail: "the unit table maps this agency to a code of the wrong shape",
        });
    }
    context.agency_code.and_then(UnitCode::parse).ok_or(UnitProblem::Unmapped {
        detail: "agency id not in the unit table and agency code absent or not of the shape ddd.dd.dd.Ldd",
    })
}

fn claims(successor: &Successor, context: &UnitContext<'_>) -> bool {
    let Some(selector) = &successor.selector else {
        return true;
    };
    let listed = |list: &[String], value: Option<&str>| {
        value.is_some_and(|value| list.iter().any(|item| item == value))
    };
    listed(&selector.procedures, context.procedure)
        || listed(&selector.sectors, context.sector)
        || listed(&selector.agencies, context.agency_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLES: &str = r#"
[units]
"ag-031" = "000.00.31.H60"
"ag-bad" = "31.H60"

[[successions]]
from = "000.00.12.H22"
to = "000.00.12.H60"
effective = "2025-07-01"
old_code_still_known_to_portal = true

[[successions]]
from = "000.00.13.H22"
to = "000.00.13.H60"
effective = "2025-07-01"
old_code_still_known_to_portal = false

[[successions]]
from = "000.00.20.H22"
effective = "2025-07-01"
old_code_still_known_to_portal = false
[[successions.to]]
code = "000.00.21.H60"
agencies = ["ag-20-north"]
[[successions.to]]
code = "000.00.22.H60"
procedures = ["1.004227"]
"#;

    fn tables() -> MappingTables {
        MappingTables::from_toml_str_unchecked(TABLES).expect("test tables parse")
    }

    fn day(text: &str) -> Option<Date> {
        text.parse().ok()
    }

    fn unit(context: UnitContext<'_>) -> Result<String, UnitProblem> {
        resolve(&context, &tables()).map(UnitCode::into_string)
    }

    #[test]
    fn unit_shape() {
        assert!(UnitCode::parse("000.00.31.H60").is_some());
        assert!(UnitCode::parse("000.18.00.G01").is_some());
        for bad in [
            "000.00.31.h60",
            "000.00.31.H6",
            "000.00.31.H600",
            "00.000.31.H60",
            "",
            "000.00.31-H60",
        ] {
            assert!(UnitCode::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn table_first_then_source_code() {
        let from_table = UnitContext {
            agency_id: Some("ag-031"),
            agency_code: Some("000.00.99.H60"),
            ..Default::default()
        };
        assert_eq!(unit(from_table), Ok("000.00.31.H60".into()));
        let from_code = UnitContext {
            agency_id: Some("ag-x"),
            agency_code: Some("000.00.99.H60"),
            ..Default::default()
        };
        assert_eq!(unit(from_code), Ok("000.00.99.H60".into()));
        let nothing = UnitContext {
            agency_id: Some("ag-x"),
            agency_code: None,
            ..Default::default()
        };
        assert!(matches!(unit(nothing), Err(UnitProblem::Unmapped { .. })));
        let bad_table = UnitContext {
            agency_id: Some("ag-bad"),
            agency_code: Some("000.00.99.H60"),
            ..Default::default()
        };
        assert!(matches!(unit(bad_table), Err(UnitProblem::Unmapped { .. })));
    }

    #[test]
    fn succession_by_reception_day() {
        let before = UnitContext {
            agency_code: Some("000.00.12.H22"),
            reception_day: day("2025-06-30"),
            ..Default::default()
        };
        assert_eq!(unit(before), Ok("000.00.12.H22".into()));
        let on = UnitContext {
            agency_code: Some("000.00.12.H22"),
            reception_day: day("2025-07-01"),
            ..Default::default()
        };
        assert_eq!(unit(on), Ok("000.00.12.H60".into()));
        // The portal no longer knows the old code: even old dossiers move.
        let gone = UnitContext {
            agency_code: Some("000.00.13.H22"),
            reception_day: day("2024-01-01"),
            ..Default::default()
        };
        assert_eq!(unit(gone), Ok("000.00.13.H60".into()));
    }

    #[test]
    fn split_units_need_exactly_one_claimant() {
        let base = UnitContext {
            agency_code: Some("000.00.20.H22"),
            reception_day: day("2025-08-01"),
            ..Default::default()
        };
        let north = UnitContext {
            agency_id: Some("ag-20-north"),
            ..base
        };
        assert_eq!(unit(north), Ok("000.00.21.H60".into()));
        let building = UnitContext {
            procedure: Some("1.004227"),
            ..base
        };
        assert_eq!(unit(building), Ok("000.00.22.H60".into()));
        assert!(matches!(
            unit(base),
            Err(UnitProblem::Ambiguous { claimants: 0, .. })
        ));
        let both = UnitContext {
            agency_id: Some("ag-20-north"),
            procedure: Some("1.004227"),
            ..base
        };
        assert!(matches!(
            unit(both),
            Err(UnitProblem::Ambiguous { claimants: 2, .. })
        ));
    }
}
