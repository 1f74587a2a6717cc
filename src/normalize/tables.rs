//! The mapping tables (units, successions, procedures, statuses) that normalization applies.

use std::collections::HashMap;

/// The operator's mapping tables, validated.
#[derive(Debug, Clone, Default)]
pub struct MappingTables {
    /// Source agency id → portal unit code.
    pub units: HashMap<String, String>,
    /// Local procedure code → national procedure code.
    pub procedures: HashMap<String, String>,
}

impl MappingTables {
    /// Reads the tables from a TOML file.
    pub fn load(path: &std::path::Path) -> Result<MappingTables, String> {
        Err(format!("mapping tables are not supported yet ({})", path.display()))
    }
}
