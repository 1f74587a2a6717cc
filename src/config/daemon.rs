//! The `[daemon]` section: how the daemon stops.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonSettings {
    /// Seconds the daemon waits for work in flight to finish after SIGTERM before it exits anyway.
    #[serde(default = "default_shutdown_deadline")]
    pub shutdown_deadline_seconds: u64,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings {
            shutdown_deadline_seconds: default_shutdown_deadline(),
        }
    }
}

fn default_shutdown_deadline() -> u64 {
    20
}
