//! The `[portal]` section: the national portal's address, account, batches, rates and retries.

use super::*;

/// The National Public Service Portal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalSettings {
    /// Base URL; `/auth` and `/integration` are appended.
    pub base_url: String,
    /// The routing code (`dstcode` header) given to the province with its account.
    pub dstcode: String,
    pub username: String,
    /// Prefer `password_file` or the credential `portal_password`.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The caller's own unit code (`madonvi`), e.g. `000.00.00.H60`.
    pub madonvi: String,
    /// Dossiers per `DongBoHoSoMC` call (1–100, the portal's limit).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Calls to the portal in flight at once: the most, when `adaptive_concurrency` is on (the push
    /// workers are this many).
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Learn the calls in flight from the portal's answers (from 1 up to `concurrency`: one more per
    /// round trip while calls fill the limit, 10% fewer on a 5xx, a timeout or round trips growing) and
    /// pace calls to the rate learnt from its 429s, instead of always `concurrency` unpaced.
    #[serde(default = "default_true")]
    pub adaptive_concurrency: bool,
    /// Calls per second toward the portal, all workers together.
    #[serde(default = "default_rate")]
    pub requests_per_second: u32,
    /// Retries of one call on a transport fault (timeouts, 429, 5xx, cut bodies) before its dossiers are
    /// put back with a delay.
    #[serde(default = "default_call_retries")]
    pub call_retries: usize,
    /// First delay of the in-call retries, milliseconds.
    #[serde(default = "default_retry_min_ms")]
    pub retry_min_delay_ms: u64,
    /// Longest delay of the in-call retries, seconds (a `Retry-After` is honoured up to this).
    #[serde(default = "default_retry_max")]
    pub retry_max_delay_seconds: u64,
    /// First delay before a dossier whose delivery failed is tried again, seconds; doubles per failure.
    #[serde(default = "default_redeliver_base")]
    pub redeliver_base_seconds: u64,
    /// Longest delay between two deliveries of one failing dossier, seconds.
    #[serde(default = "default_redeliver_cap")]
    pub redeliver_cap_seconds: u64,
    /// Hold back dossiers whose unit or procedure the portal's catalogs do not list, instead of sending
    /// them to be refused (the catalog pre-flight).
    #[serde(default = "default_true")]
    pub preflight: bool,
    /// Minutes a loaded unit catalog and a procedure lookup stay valid.
    #[serde(default = "default_catalog_refresh")]
    pub catalog_refresh_minutes: u64,
    /// Seconds one catalog call may take (retries included) before the pre-flight lets dossiers through
    /// unchecked for now.
    #[serde(default = "default_catalog_timeout")]
    pub catalog_timeout_seconds: u64,
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

fn default_batch_size() -> usize {
    100
}

fn default_concurrency() -> usize {
    16
}

fn default_rate() -> u32 {
    50
}

fn default_call_retries() -> usize {
    5
}

fn default_retry_min_ms() -> u64 {
    200
}

fn default_retry_max() -> u64 {
    30
}

fn default_redeliver_base() -> u64 {
    5
}

fn default_redeliver_cap() -> u64 {
    1800
}

fn default_true() -> bool {
    true
}

fn default_catalog_refresh() -> u64 {
    60
}

fn default_catalog_timeout() -> u64 {
    30
}
