//! The `[log]` section: format and level.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `human` (for a terminal) or `json` (one object per line, for journald and log shippers).
    #[serde(default = "default_log_format")]
    pub format: String,
    /// A `tracing` filter, e.g. `info` or `info,tthc_sync::sync=debug`; `RUST_LOG` overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

fn default_log_format() -> String {
    "human".into()
}

fn default_log_level() -> String {
    "info".into()
}
