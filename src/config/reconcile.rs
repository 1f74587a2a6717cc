//! The `[reconcile]` section: reconciliation runs inside the daemon, and the log they keep.

use super::*;

/// Reconciliation runs inside the daemon, and the log they keep.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileSettings {
    /// Minutes between two regular runs; 0 turns scheduled runs off (`tthc-sync reconcile` still works).
    #[serde(default = "default_reconcile_interval")]
    pub interval_minutes: u64,
    /// Reception days a regular run covers, ending today.
    #[serde(default = "default_reconcile_window")]
    pub window_days: u32,
    /// The hour (Vietnam time, 0-23) of the nightly full run.
    #[serde(default = "default_nightly_hour")]
    pub nightly_hour: u8,
    /// Reception days the nightly run covers.
    #[serde(default = "default_nightly_window")]
    pub nightly_window_days: u32,
    /// Directory of the JSON Lines reconciliation log; default: `reconciliation/` beside the ledger.
    #[serde(default)]
    pub log_dir: Option<PathBuf>,
    /// A log file larger than this starts a new one (bytes).
    #[serde(default = "default_log_max_bytes")]
    pub log_max_bytes: u64,
    /// Days a reconciliation log file (`reconciliation-YYYY-MM-DD*.jsonl`) is kept; older files are
    /// deleted when a run writes the log. 0 keeps them all.
    #[serde(default = "default_log_retention_days")]
    pub log_retention_days: u32,
    /// Accepted dossiers per unit looked up on the portal (TraCuuHoSo), at random, when it offers no
    /// counts (ThongKeHoSoDongBo).
    #[serde(default = "default_portal_sample")]
    pub portal_sample: usize,
    /// The most lookups per unit and run on the days where the portal's count falls short of the
    /// ledger's.
    #[serde(default = "default_portal_lookups")]
    pub portal_lookups: usize,
    /// The content check: every dossier the portal accepted within this many hours (where delivery
    /// races live) has its copy on the portal (TraCuuHoSo) compared with its payload at each run; a
    /// difference sends the payload again. 0 checks none of them.
    #[serde(default = "default_content_check_hours")]
    pub content_check_hours: u64,
    /// The content check: dossiers per unit accepted earlier than that, chosen at random, compared at
    /// each run as well; 0 compares none.
    #[serde(default = "default_content_sample")]
    pub content_sample: usize,
    /// The content check: the most TraCuuHoSo lookups of one run (recent dossiers first, those checked
    /// longest ago before the others, then the samples), at the portal client's rate. When more are due,
    /// the next runs go on with them; 0 turns the content check off.
    #[serde(default = "default_content_budget")]
    pub content_budget: usize,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        ReconcileSettings {
            interval_minutes: default_reconcile_interval(),
            window_days: default_reconcile_window(),
            nightly_hour: default_nightly_hour(),
            nightly_window_days: default_nightly_window(),
            log_dir: None,
            log_max_bytes: default_log_max_bytes(),
            log_retention_days: default_log_retention_days(),
            portal_sample: default_portal_sample(),
            portal_lookups: default_portal_lookups(),
            content_check_hours: default_content_check_hours(),
            content_sample: default_content_sample(),
            content_budget: default_content_budget(),
        }
    }
}

fn default_reconcile_interval() -> u64 {
    60
}

fn default_reconcile_window() -> u32 {
    7
}

fn default_nightly_hour() -> u8 {
    2
}

fn default_nightly_window() -> u32 {
    90
}

fn default_log_max_bytes() -> u64 {
    10 * 1024 * 1024
}

fn default_log_retention_days() -> u32 {
    365
}

fn default_portal_sample() -> usize {
    20
}

fn default_portal_lookups() -> usize {
    500
}

fn default_content_check_hours() -> u64 {
    48
}

fn default_content_sample() -> usize {
    5
}

fn default_content_budget() -> usize {
    2000
}
