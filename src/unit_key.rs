//! The key a unit is reported under, one type for every view: the report's lines, `failures`, `retry`,
//! `reconcile`, `resync`, the dashboard's links, `/api/v1` and the metrics' `unit` label.
//!
//! A dossier's key is its portal unit code when it resolved to one; otherwise the key of the unit its
//! source agency's other dossiers go to (see [`owner_of`]), or `agency:<id>` for an agency none of whose
//! dossiers resolve (unmapped); and [`NO_AGENCY`] (`unknown`) for a record without even an agency (a
//! malformed record). [`UnitKey::scope`] turns a key into the rows it stands for, which is what the ledger
//! filters on, so that a command given any key of the report finds exactly that line's dossiers.

use std::collections::HashMap;
use std::fmt;

/// The key of the records that carry no source agency at all.
pub const NO_AGENCY: &str = "unknown";
const AGENCY_PREFIX: &str = "agency:";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum UnitKey {
    /// A portal unit code (`000.00.31.H60`).
    Unit(String),
    /// A source agency whose dossiers resolve to no unit: `agency:<id>`.
    Agency(String),
    /// Records without a source agency: `unknown`.
    NoAgency,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitKeyError {
    #[error("a unit key cannot be empty")]
    Empty,
    #[error("`agency:` must be followed by the source agency's id (as `agency:ag-029`)")]
    EmptyAgency,
    #[error("a unit key cannot contain spaces or control characters: {0:?}")]
    Whitespace(String),
}

impl UnitKey {
    /// Reads a key as the report prints it: `agency:<id>`, `unknown`, or a unit code.
    pub fn parse(text: &str) -> Result<Self, UnitKeyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(UnitKeyError::Empty);
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UnitKeyError::Whitespace(text.to_owned()));
        }
        if text == NO_AGENCY {
            return Ok(UnitKey::NoAgency);
        }
        match text.strip_prefix(AGENCY_PREFIX) {
            Some("") => Err(UnitKeyError::EmptyAgency),
            Some(agency) => Ok(UnitKey::Agency(agency.to_owned())),
            None => Ok(UnitKey::Unit(text.to_owned())),
        }
    }

    /// The key of a ledger row from its own columns alone (no other row consulted).
    pub fn of(unit: Option<&str>, agency: Option<&str>) -> Self {
        match (unit, agency) {
            (Some(unit), _) => UnitKey::Unit(unit.to_owned()),
            (None, Some(agency)) => UnitKey::Agency(agency.to_owned()),
            (None, None) => UnitKey::NoAgency,
        }
    }

    /// The ledger rows this key stands for, given which key each source agency's unit-less rows go
    /// to ([`owner_of`] over the same rows).
    pub fn scope(&self, owners: &HashMap<String, String>) -> UnitScope {
        let key = self.to_string();
        let mut agencies: Vec<String> = owners
            .iter()
            .filter(|(_, owner)| **owner == key)
            .map(|(agency, _)| agency.clone())
            .collect();
        if let UnitKey::Agency(agency) = self
            && !owners.contains_key(agency)
        {
            agencies.push(agency.clone());
        }
        agencies.sort();
        UnitScope {
            units: match self {
                UnitKey::Unit(code) => vec![code.clone()],
                _ => Vec::new(),
            },
            agencies_without_unit: agencies,
            without_agency: *self == UnitKey::NoAgency,
        }
    }
}

impl fmt::Display for UnitKey {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnitKey::Unit(code) => formatter.write_str(code),
            UnitKey::Agency(agency) => write!(formatter, "{AGENCY_PREFIX}{agency}"),
            UnitKey::NoAgency => formatter.write_str(NO_AGENCY),
        }
    }
}

impl std::str::FromStr for UnitKey {
    type Err = UnitKeyError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text)
    }
}

/// The key of a row: its unit; else the key its agency's other rows go to (`owners`); else its own
/// `agency:<id>`; else `unknown`.
pub fn owner_of(
    unit: Option<&str>,
    agency: Option<&str>,
    owners: &HashMap<String, String>,
) -> UnitKey {
    match (unit, agency) {
        (None, Some(agency)) => owners
            .get(agency)
            .map_or_else(|| UnitKey::of(None, Some(agency)), |key| parse_owned(key)),
        (unit, agency) => UnitKey::of(unit, agency),
    }
}

fn parse_owned(key: &str) -> UnitKey {
    UnitKey::parse(key).unwrap_or_else(|_| UnitKey::Unit(key.to_owned()))
}

/// The rows of one unit key, as the ledger filters them: `unit IN units`, or no unit and an agency in
/// `agencies_without_unit`, or (with `without_agency`) neither a unit nor an agency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitScope {
    pub units: Vec<String>,
    pub agencies_without_unit: Vec<String>,
    pub without_agency: bool,
}

impl UnitScope {
    /// Whether a row with these columns is in scope (the ledger's SQL says the same).
    pub fn contains(&self, unit: Option<&str>, agency: Option<&str>) -> bool {
        match (unit, agency) {
            (Some(unit), _) => self.units.iter().any(|code| code == unit),
            (None, Some(agency)) => self.agencies_without_unit.iter().any(|id| id == agency),
            (None, None) => self.without_agency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display_round_trip() {
        for text in ["000.00.31.H60", "agency:ag-029", "unknown"] {
            assert_eq!(UnitKey::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            UnitKey::parse("agency:ag-029").unwrap(),
            UnitKey::Agency("ag-029".into())
        );
        assert_eq!(UnitKey::parse("unknown").unwrap(), UnitKey::NoAgency);
        assert_eq!(UnitKey::parse(""), Err(UnitKeyError::Empty));
        assert_eq!(UnitKey::parse("agency:"), Err(UnitKeyError::EmptyAgency));
        assert!(UnitKey::parse("a b").is_err());
    }

    #[test]
    fn a_key_s_scope_holds_the_rows_the_report_counts_under_it() {
        // ag-1's unit-less rows (malformed) go to unit U; ag-9 never resolves.
        let owners = HashMap::from([
            ("ag-1".to_owned(), "U".to_owned()),
            ("ag-9".to_owned(), "agency:ag-9".to_owned()),
        ]);
        let rows = [
            (Some("U"), Some("ag-1")),
            (None, Some("ag-1")),
            (None, Some("ag-9")),
            (None, None),
            (Some("V"), Some("ag-2")),
        ];
        for (unit, agency) in rows {
            let key = owner_of(unit, agency, &owners);
            for other in ["U", "V", "agency:ag-9", "unknown"] {
                let scope = UnitKey::parse(other).unwrap().scope(&owners);
                assert_eq!(
                    scope.contains(unit, agency),
                    key.to_string() == other,
                    "row {unit:?}/{agency:?} (key {key}) against {other}"
                );
            }
        }
        // An agency that is not in the owners (never seen) still scopes to itself.
        let scope = UnitKey::parse("agency:ag-7").unwrap().scope(&owners);
        assert!(scope.contains(None, Some("ag-7")));
    }
}
