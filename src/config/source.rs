//! The `[source]` section: the provincial system's address, credentials, paging and limits.

use super::*;

/// The provincial one-stop system.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    /// Base URL, e.g. `https://motcua.example.gov.vn/api` (paths `/oauth/token`, `/pa/...` are appended).
    pub base_url: String,
    /// OAuth2 client id for `/oauth/token`.
    pub client_id: String,
    /// The client secret. Prefer `client_secret_file` or the credential `source_client_secret`.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// A file holding the client secret (e.g. a systemd credential).
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    /// Rows per feed page (1–500; the source refuses more). The default, 250, keeps the page being written
    /// and the page being fetched beside it small: with 500 the daemon's peak memory over a
    /// 1,000,000-dossier backfill went past 64 MiB (README, "End to end").
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// How far back each poll re-reads, to catch rows that become visible late (source-api.md quirk 3).
    /// The default, 600 s, is five times the two minutes the simulator (and the spec) allows.
    #[serde(default = "default_lookback")]
    pub lookback_seconds: u64,
    /// Seconds between polls.
    #[serde(default = "default_poll_interval")]
    pub poll_interval_seconds: u64,
    /// Where the very first poll starts (`updated-from`), RFC 3339.
    #[serde(default = "default_initial_from")]
    pub initial_from: String,
    /// Times a tie block (more rows with one `updatedDate` than a page holds) is re-read before the poll
    /// gives up and tries again at the next interval.
    #[serde(default = "default_tie_passes")]
    pub max_tie_block_passes: u32,
    /// How far ahead of this machine's clock the source's clock may run, seconds. The feed's cursor never
    /// passes the time a poll started plus this allowance: rows stamped further ahead (source-api.md quirk
    /// 10) are ingested like any other, counted and warned about, but the cursor follows only the rows
    /// stamped within it.
    #[serde(default = "default_max_clock_skew")]
    pub max_clock_skew_seconds: u64,
    /// A record larger than this many bytes is held back whole as `oversize_record` (its id, size and hash
    /// kept, its bytes not stored; source-api.md quirk 14). Default 8 MiB.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// Header the source's own bearer token travels in (`Authorization` unless a gateway takes it).
    #[serde(default = "default_auth_header")]
    pub auth_header: String,
    #[serde(default)]
    pub http: HttpSettings,
    /// Longest pause between two logins after the credentials were refused, seconds (default 900). After
    /// a refusal (of this side's own login or of its gateway's token) the next attempt waits 30 s, then
    /// twice as long after each further refusal, up to this: accounts get locked after repeated failures.
    #[serde(default = "default_max_login_backoff")]
    pub max_login_backoff_seconds: u64,
    /// Allow `base_url` to be cleartext `http://` to a host that is not loopback. Without it such a URL
    /// draws a warning at start and from `check-config`: personal data would travel unencrypted.
    #[serde(default)]
    pub allow_cleartext: bool,
    #[serde(default)]
    pub gateway: Option<GatewaySettings>,
}

fn default_page_size() -> u32 {
    250
}

fn default_lookback() -> u64 {
    600
}

fn default_poll_interval() -> u64 {
    30
}

fn default_initial_from() -> String {
    "2000-01-01T00:00:00+07:00".into()
}

fn default_tie_passes() -> u32 {
    30
}

fn default_max_clock_skew() -> u64 {
    300
}

/// `source.max_record_bytes` when the configuration does not set it: 8 MiB.
pub fn default_max_record_bytes() -> usize {
    8 * 1024 * 1024
}
