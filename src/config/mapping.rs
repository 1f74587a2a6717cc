//! The `[mapping]` section: the mapping tables file and how often held-back dossiers are normalized again.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingSettings {
    /// The mapping tables (units, successions, procedures, statuses); none means only the source's own
    /// well-formed agency codes and procedure codes are used. Re-read on SIGHUP.
    #[serde(default)]
    pub tables_file: Option<PathBuf>,
    /// Hours between two re-normalizations of every held-back dossier (mapping.md, Rejections: once a
    /// day, so that a date that was in the future clears by itself).
    #[serde(default = "default_renormalize_hours")]
    pub renormalize_every_hours: u64,
}

impl Default for MappingSettings {
    fn default() -> Self {
        MappingSettings {
            tables_file: None,
            renormalize_every_hours: default_renormalize_hours(),
        }
    }
}

fn default_renormalize_hours() -> u64 {
    24
}
