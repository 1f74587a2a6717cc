//! The procedure rule of mapping.md: `MaTTHC` is the national base code `d.dddddd`, taken from the
//! procedure table when it has the local code, else from the leading part of the local code.

use super::tables::MappingTables;

/// A national procedure code in its base form `d.dddddd` (e.g. `1.004227`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NationalProcedureCode(String);

impl NationalProcedureCode {
    /// Accepts exactly `d.dddddd`.
    pub fn parse(text: &str) -> Option<NationalProcedureCode> {
        is_base_shape(text.as_bytes()).then(|| NationalProcedureCode(text.to_owned()))
    }

    /// The leading `d.dddddd` of a local code (`1.004227.000.00.00.H60` → `1.004227`), when it has one.
    pub fn from_local_prefix(local: &str) -> Option<NationalProcedureCode> {
        let bytes = local.as_bytes();
        let prefix = bytes.get(..8)?;
        let boundary = matches!(bytes.get(8), None | Some(b'.'));
        (boundary && is_base_shape(prefix)).then(|| NationalProcedureCode(local[..8].to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

fn is_base_shape(bytes: &[u8]) -> bool {
    matches!(bytes, [first, b'.', rest @ ..] if first.is_ascii_digit() && rest.len() == 6 && rest.iter().all(u8::is_ascii_digit))
}

/// Resolves the national code of a (trimmed) local procedure code: the table first, then the prefix.
pub fn resolve(local: &str, tables: &MappingTables) -> Option<NationalProcedureCode> {
    match tables.procedures.get(local) {
        // A table entry of the wrong shape is reported by `MappingTables::check`; here it maps nothing.
        Some(national) => NationalProcedureCode::parse(national.trim()),
        None => NationalProcedureCode::from_local_prefix(local),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_leading_base_code() {
        let code = |local: &str| {
            NationalProcedureCode::from_local_prefix(local).map(NationalProcedureCode::into_string)
        };
        assert_eq!(code("1.004227.000.00.00.H60"), Some("1.004227".into()));
        assert_eq!(code("2.002492"), Some("2.002492".into()));
        assert_eq!(code("1.0042270.000"), None);
        assert_eq!(code("TS_lop1.000.00.00.H22"), None);
        assert_eq!(code("ABC-XYZ"), None);
        assert_eq!(code("1.00422"), None);
    }

    #[test]
    fn the_table_overrides_the_prefix() {
        let mut tables = MappingTables::default();
        tables
            .procedures
            .insert("TS_lop1.000.00.00.H22".into(), "2.002492".into());
        tables
            .procedures
            .insert("1.004227.000.00.00.H60".into(), "1.999999".into());
        assert_eq!(
            resolve("TS_lop1.000.00.00.H22", &tables).map(NationalProcedureCode::into_string),
            Some("2.002492".into())
        );
        assert_eq!(
            resolve("1.004227.000.00.00.H60", &tables).map(NationalProcedureCode::into_string),
            Some("1.999999".into())
        );
        assert_eq!(resolve("ABC-XYZ", &tables), None);
    }
}
