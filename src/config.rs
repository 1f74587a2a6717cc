//! Configuration: defaults, a TOML file, then environment variables (`TTHC_SYNC__SECTION__KEY`), in that
//! order of precedence. Secrets come from the environment, from files (`*_file`), or from systemd
//! credentials (`$CREDENTIALS_DIRECTORY/<name>`), never from the TOML file in production.
//!
//! Every field documented here is operator documentation: `config/tthc-sync.example.toml` mirrors it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration problem, naming the key and what is wrong with it.
///
/// Each message carries its cause in itself and none is chained as a `source`: `main` prints an error with
/// its chain (`{:#}`), and a cause both in the message and in the chain was printed twice
/// (`missing configuration field "source": missing configuration field "source"`).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(config::ConfigError),
    #[error("configuration key `{key}`: {problem}")]
    Invalid { key: String, problem: String },
    #[error("configuration key `{key}`: cannot read secret file {path}: {error}")]
    SecretFile {
        key: String,
        path: String,
        error: std::io::Error,
    },
}

impl From<config::ConfigError> for ConfigError {
    fn from(error: config::ConfigError) -> ConfigError {
        ConfigError::Load(error)
    }
}

fn invalid(key: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub source: SourceSettings,
    pub portal: PortalSettings,
    #[serde(default)]
    pub store: StoreSettings,
    #[serde(default)]
    pub mapping: MappingSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub daemon: DaemonSettings,
    #[serde(default)]
    pub reconcile: ReconcileSettings,
    #[serde(default)]
    pub status: StatusSettings,
}

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

impl Settings {
    /// What is allowed but unsafe, one sentence each naming the key or file (`check-config` and the
    /// start of `run` print them): a file holding a secret that group or others may read, and a base URL
    /// in cleartext `http://` to a host that is not loopback (personal data on the wire) unless that
    /// side's `allow_cleartext` is set.
    pub fn warnings(&self, config_file: Option<&Path>) -> Vec<String> {
        let mut warnings = Vec::new();
        let inline_secret = self.source.client_secret.is_some()
            || self.portal.password.is_some()
            || self.store.password.is_some()
            || self
                .source
                .gateway
                .as_ref()
                .is_some_and(|g| g.client_secret.is_some())
            || self
                .portal
                .gateway
                .as_ref()
                .is_some_and(|g| g.client_secret.is_some());
        let mut secret_files: Vec<(String, &Path)> = Vec::new();
        if inline_secret && let Some(path) = config_file {
            secret_files.push((
                "the configuration file (it holds a secret inline)".into(),
                path,
            ));
        }
        let keyed = [
            (
                "source.client_secret_file",
                self.source.client_secret_file.as_deref(),
            ),
            ("portal.password_file", self.portal.password_file.as_deref()),
            ("store.password_file", self.store.password_file.as_deref()),
            ("status.token_file", self.status.token_file.as_deref()),
            (
                "source.gateway.client_secret_file",
                self.source
                    .gateway
                    .as_ref()
                    .and_then(|g| g.client_secret_file.as_deref()),
            ),
            (
                "portal.gateway.client_secret_file",
                self.portal
                    .gateway
                    .as_ref()
                    .and_then(|g| g.client_secret_file.as_deref()),
            ),
        ];
        secret_files.extend(
            keyed
                .into_iter()
                .filter_map(|(key, path)| Some((format!("`{key}`"), path?))),
        );
        for (what, path) in secret_files {
            if let Some(mode) = readable_by_others(path) {
                warnings.push(format!(
                    "{what} {} is readable by group or others (mode {mode:o}); chmod 600 it",
                    path.display()
                ));
            }
        }
        for (key, url, allowed) in [
            (
                "source.base_url",
                &self.source.base_url,
                self.source.allow_cleartext,
            ),
            (
                "portal.base_url",
                &self.portal.base_url,
                self.portal.allow_cleartext,
            ),
        ] {
            if !allowed && let Some(host) = cleartext_remote_host(url) {
                warnings.push(format!(
                    "`{key}` is cleartext http:// to {host}, which is not loopback: personal data would travel unencrypted (use https://, or set allow_cleartext = true on that side)"
                ));
            }
        }
        warnings
    }

    /// Where the reconciliation log goes.
    pub fn reconciliation_log_dir(&self) -> PathBuf {
        self.reconcile.log_dir.clone().unwrap_or_else(|| {
            self.store
                .path
                .parent()
                .unwrap_or(Path::new("."))
                .join("reconciliation")
        })
    }
}

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
    /// Rows per feed page (1–500; the source refuses more).
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
    /// Calls to the portal in flight at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
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

/// Transport settings shared by both sides.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Seconds to establish a connection.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_seconds: u64,
    /// Seconds for a whole request and its answer.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_seconds: u64,
    /// A PEM bundle of extra trusted CAs (e.g. the national government CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// An HTTP(S) proxy URL for this side.
    #[serde(default)]
    pub proxy: Option<String>,
    /// The largest answer body read from this side, bytes (default 64 MiB). It is enforced while the body
    /// is read: a larger answer is refused as a transport fault (retried with back-off, and logged), so
    /// that memory does not follow what a broken peer or proxy sends (source-api.md quirk 14).
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            connect_timeout_seconds: default_connect_timeout(),
            request_timeout_seconds: default_request_timeout(),
            ca_file: None,
            proxy: None,
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

/// An OAuth2 client-credentials token demanded by a gateway (LGSP, API gateway) in front of a side.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    pub token_url: String,
    pub client_id: String,
    #[serde(default)]
    pub client_secret: Option<String>,
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub scope: Option<String>,
    /// Header the gateway token travels in, as `Bearer <token>`.
    #[serde(default = "default_auth_header")]
    pub header: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// The SQLite ledger file (unless `url` names a PostgreSQL database).
    #[serde(default = "default_db_path")]
    pub path: PathBuf,
    /// A PostgreSQL database, `postgres://user@host:5432/db`, for several instances sharing the work;
    /// `path` is then ignored. Its password comes from `password_file` or the credential `store_password`
    /// rather than the URL.
    #[serde(default)]
    pub url: Option<String>,
    /// Prefer `password_file` or the credential `store_password`.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Connections to PostgreSQL this instance keeps at most.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// Name of this instance in leases; two instances sharing a store need different names.
    #[serde(default = "default_instance")]
    pub instance: String,
    /// Seconds a claim on work in flight lasts before another worker may take it over. A pusher renews
    /// the claims of its call every third of this while the call runs (in-call retries included), so a
    /// claim lapses only when its owner stopped or cannot reach the ledger.
    #[serde(default = "default_lease")]
    pub lease_seconds: u64,
    /// Days after the portal accepted a finished dossier (portal status 9 or 10) before its personal
    /// fields are cleared from the ledger (the source record dropped, the payload stripped of names,
    /// numbers, contacts and free texts, the sent progress entries emptied); the rest, which
    /// reconciliation and the reports read, stays.
    /// Longer than `reconcile.nightly_window_days`, so that a dossier the portal lost can still be sent
    /// again.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
}

impl StoreSettings {
    /// The PostgreSQL password, when one is given (`store.password`, `store.password_file` or the
    /// credential `store_password`); none leaves it to the URL, `~/.pgpass` or a trusted connection.
    pub fn password(&self) -> Result<Option<String>, ConfigError> {
        const CREDENTIAL: &str = "store_password";
        let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
            .is_some_and(|directory| Path::new(&directory).join(CREDENTIAL).is_file());
        if self.password.as_deref().is_none_or(str::is_empty)
            && self.password_file.is_none()
            && !credential
        {
            return Ok(None);
        }
        resolve_secret(
            "store.password",
            self.password.as_deref(),
            self.password_file.as_deref(),
            CREDENTIAL,
        )
        .map(Some)
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            path: default_db_path(),
            url: None,
            password: None,
            password_file: None,
            pool_size: default_pool_size(),
            instance: default_instance(),
            lease_seconds: default_lease(),
            retention_days: default_retention_days(),
        }
    }
}

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

/// The status server: health checks, Prometheus metrics, the operators' dashboard and its JSON.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusSettings {
    /// Address the status server listens on. On a loopback address no token is asked; on any other
    /// address every request must carry `Authorization: Bearer <token>` (`token_file` is then required).
    #[serde(default = "default_status_listen")]
    pub listen: String,
    /// File holding the bearer token (or the systemd credential `status_token`).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `/readyz` fails when the last successful poll of the source is older than this.
    #[serde(default = "default_ready_poll_age")]
    pub ready_max_poll_age_seconds: u64,
    /// `/readyz` fails when the last batch the portal answered is older than this while dossiers wait.
    #[serde(default = "default_ready_push_age")]
    pub ready_max_push_age_seconds: u64,
    /// Seconds between two reloads of the dashboard page in the browser.
    #[serde(default = "default_refresh")]
    pub refresh_seconds: u64,
    /// Connections served at once (default 64). Further ones wait in the kernel's queue, not in the
    /// daemon: a flood of idle connections to the status port cannot use the daemon's file descriptors.
    #[serde(default = "default_status_max_connections")]
    pub max_connections: usize,
    /// A connection that has not sent a whole request head this many seconds after it opened, or after
    /// its previous answer, is closed (default 10).
    #[serde(default = "default_status_header_timeout")]
    pub header_read_timeout_seconds: u64,
    /// A connection on which no byte has moved either way for this many seconds is closed, whatever it
    /// was doing (default 60): a client that stops reading its answer does not hold a slot.
    #[serde(default = "default_status_idle_timeout")]
    pub idle_timeout_seconds: u64,
}

impl Default for StatusSettings {
    fn default() -> Self {
        StatusSettings {
            listen: default_status_listen(),
            token_file: None,
            ready_max_poll_age_seconds: default_ready_poll_age(),
            ready_max_push_age_seconds: default_ready_push_age(),
            refresh_seconds: default_refresh(),
            max_connections: default_status_max_connections(),
            header_read_timeout_seconds: default_status_header_timeout(),
            idle_timeout_seconds: default_status_idle_timeout(),
        }
    }
}

impl StatusSettings {
    /// The address to bind, checked.
    pub fn address(&self) -> Result<std::net::SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            invalid(
                "status.listen",
                format!("must be an IP address and port, got {:?}", self.listen),
            )
        })
    }

    /// The bearer token the server asks for: none on a loopback address, required on any other.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        const CREDENTIAL: &str = "status_token";
        let loopback = self.address()?.ip().is_loopback();
        let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
            .is_some_and(|directory| Path::new(&directory).join(CREDENTIAL).is_file());
        if loopback && self.token_file.is_none() && !credential {
            return Ok(None);
        }
        if self.token_file.is_none() && !credential {
            return Err(invalid(
                "status.token_file",
                format!(
                    "required: status.listen ({}) is not a loopback address, so the status server needs a bearer token (a file, or the systemd credential {CREDENTIAL})",
                    self.listen
                ),
            ));
        }
        let token = resolve_secret("status.token", None, self.token_file.as_deref(), CREDENTIAL)?;
        if token.trim().is_empty() {
            return Err(invalid("status.token_file", "the token file is empty"));
        }
        Ok(Some(token.trim().to_string()))
    }
}

fn default_status_listen() -> String {
    "127.0.0.1:9464".into()
}
fn default_ready_poll_age() -> u64 {
    300
}
fn default_ready_push_age() -> u64 {
    600
}
fn default_refresh() -> u64 {
    30
}

fn default_page_size() -> u32 {
    500
}
fn default_lookback() -> u64 {
    600
}
fn default_retention_days() -> u32 {
    180
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
fn default_status_max_connections() -> usize {
    64
}
fn default_status_header_timeout() -> u64 {
    10
}
fn default_status_idle_timeout() -> u64 {
    60
}
/// `source.max_record_bytes` when the configuration does not set it: 8 MiB.
pub fn default_max_record_bytes() -> usize {
    8 * 1024 * 1024
}
fn default_max_login_backoff() -> u64 {
    900
}
fn default_max_body_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_auth_header() -> String {
    "Authorization".into()
}
fn default_batch_size() -> usize {
    100
}
fn default_concurrency() -> usize {
    4
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
fn default_true() -> bool {
    true
}
fn default_catalog_refresh() -> u64 {
    60
}
fn default_catalog_timeout() -> u64 {
    30
}
fn default_renormalize_hours() -> u64 {
    24
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_request_timeout() -> u64 {
    60
}
fn default_db_path() -> PathBuf {
    PathBuf::from("data/tthc-sync.db")
}
fn default_instance() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "tthc-sync".into())
}
fn default_pool_size() -> u32 {
    8
}
fn default_lease() -> u64 {
    120
}
fn default_log_format() -> String {
    "human".into()
}
fn default_log_level() -> String {
    "info".into()
}
fn default_shutdown_deadline() -> u64 {
    20
}

impl Settings {
    /// Loads the file (if any) and the environment, then checks every value.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Settings::load_with_environment(file, None)
    }

    /// As [`Settings::load`], with `environment` read in place of the process's variables when given
    /// (`TTHC_SYNC__SECTION__KEY` names): how a test checks the precedence without changing the process's
    /// environment under other threads.
    pub fn load_with_environment(
        file: Option<&Path>,
        environment: Option<std::collections::HashMap<String, String>>,
    ) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(file) = file {
            builder = builder.add_source(
                config::File::from(file)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix("TTHC_SYNC")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(environment),
        );
        let settings: Settings = builder.build()?.try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Parses settings from TOML text (the demo and tests build their configuration this way).
    pub fn from_toml(text: &str) -> Result<Settings, ConfigError> {
        let settings: Settings = config::Config::builder()
            .add_source(config::File::from_str(text, config::FileFormat::Toml))
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Checks every value that serde cannot, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_url("source.base_url", &self.source.base_url)?;
        check_url("portal.base_url", &self.portal.base_url)?;
        self.status.address()?;
        if !(1..=4096).contains(&self.status.max_connections) {
            return Err(invalid(
                "status.max_connections",
                "must be between 1 and 4096",
            ));
        }
        if self.status.header_read_timeout_seconds == 0 {
            return Err(invalid(
                "status.header_read_timeout_seconds",
                "must be at least 1",
            ));
        }
        if self.status.idle_timeout_seconds < self.status.header_read_timeout_seconds {
            return Err(invalid(
                "status.idle_timeout_seconds",
                "must be at least status.header_read_timeout_seconds",
            ));
        }
        if !(1..=500).contains(&self.source.page_size) {
            return Err(invalid(
                "source.page_size",
                format!("must be 1 to 500, got {}", self.source.page_size),
            ));
        }
        if self.source.poll_interval_seconds == 0 {
            return Err(invalid(
                "source.poll_interval_seconds",
                "must be at least 1",
            ));
        }
        if self.source.max_record_bytes < 1024 {
            return Err(invalid("source.max_record_bytes", "must be at least 1024"));
        }
        for (key, http) in [
            ("source.http.max_body_bytes", &self.source.http),
            ("portal.http.max_body_bytes", &self.portal.http),
        ] {
            if http.max_body_bytes < 64 * 1024 {
                return Err(invalid(key, "must be at least 65536"));
            }
        }
        if self.source.max_tie_block_passes == 0 {
            return Err(invalid("source.max_tie_block_passes", "must be at least 1"));
        }
        if jiff::Timestamp::from_str_lenient(&self.source.initial_from).is_none() {
            return Err(invalid(
                "source.initial_from",
                format!(
                    "must be an RFC 3339 time such as 2024-01-01T00:00:00+07:00, got {:?}",
                    self.source.initial_from
                ),
            ));
        }
        if !(1..=100).contains(&self.portal.batch_size) {
            return Err(invalid(
                "portal.batch_size",
                format!(
                    "must be 1 to 100 (the portal's limit), got {}",
                    self.portal.batch_size
                ),
            ));
        }
        if !(1..=64).contains(&self.portal.concurrency) {
            return Err(invalid(
                "portal.concurrency",
                format!("must be 1 to 64, got {}", self.portal.concurrency),
            ));
        }
        if self.portal.requests_per_second == 0 {
            return Err(invalid("portal.requests_per_second", "must be at least 1"));
        }
        if self.portal.redeliver_base_seconds == 0
            || self.portal.redeliver_cap_seconds < self.portal.redeliver_base_seconds
        {
            return Err(invalid(
                "portal.redeliver_cap_seconds",
                "must be at least portal.redeliver_base_seconds, which must be at least 1",
            ));
        }
        if self.portal.catalog_refresh_minutes == 0 {
            return Err(invalid(
                "portal.catalog_refresh_minutes",
                "must be at least 1",
            ));
        }
        if self.portal.catalog_timeout_seconds == 0 {
            return Err(invalid(
                "portal.catalog_timeout_seconds",
                "must be at least 1",
            ));
        }
        if self.reconcile.nightly_hour > 23 {
            return Err(invalid(
                "reconcile.nightly_hour",
                format!(
                    "must be 0 to 23 (Vietnam time), got {}",
                    self.reconcile.nightly_hour
                ),
            ));
        }
        if self.reconcile.window_days == 0 || self.reconcile.nightly_window_days == 0 {
            return Err(invalid(
                "reconcile.window_days",
                "reconcile.window_days and reconcile.nightly_window_days must be at least 1",
            ));
        }
        if self.mapping.renormalize_every_hours == 0 {
            return Err(invalid(
                "mapping.renormalize_every_hours",
                "must be at least 1",
            ));
        }
        if self.portal.madonvi.trim().is_empty() {
            return Err(invalid("portal.madonvi", "must not be empty"));
        }
        for (key, http) in [
            ("source.http", &self.source.http),
            ("portal.http", &self.portal.http),
        ] {
            if http.request_timeout_seconds == 0 || http.connect_timeout_seconds == 0 {
                return Err(invalid(key, "timeouts must be at least 1 second"));
            }
            if let Some(ca) = &http.ca_file
                && !ca.is_file()
            {
                return Err(invalid(
                    &format!("{key}.ca_file"),
                    format!("{} is not a readable file", ca.display()),
                ));
            }
            if let Some(proxy) = &http.proxy {
                check_url(&format!("{key}.proxy"), proxy)?;
            }
        }
        for (key, gateway, own_header) in [
            (
                "source.gateway",
                &self.source.gateway,
                Some(&self.source.auth_header),
            ),
            ("portal.gateway", &self.portal.gateway, None),
        ] {
            if let Some(gateway) = gateway {
                check_url(&format!("{key}.token_url"), &gateway.token_url)?;
                if own_header.is_some_and(|header| header.eq_ignore_ascii_case(&gateway.header)) {
                    return Err(invalid(
                        &format!("{key}.header"),
                        "the gateway token and the source's own token cannot share a header: set source.auth_header",
                    ));
                }
            }
        }
        if self.store.retention_days <= self.reconcile.nightly_window_days {
            return Err(invalid(
                "store.retention_days",
                format!(
                    "must be longer than reconcile.nightly_window_days ({}), got {}",
                    self.reconcile.nightly_window_days, self.store.retention_days
                ),
            ));
        }
        if self.store.lease_seconds < 10 {
            return Err(invalid("store.lease_seconds", "must be at least 10"));
        }
        if let Some(url) = &self.store.url {
            check_database_url("store.url", url)?;
        }
        if !(1..=100).contains(&self.store.pool_size) {
            return Err(invalid(
                "store.pool_size",
                format!("must be 1 to 100, got {}", self.store.pool_size),
            ));
        }
        if self.store.instance.trim().is_empty() {
            return Err(invalid("store.instance", "must not be empty"));
        }
        if !matches!(self.log.format.as_str(), "human" | "json") {
            return Err(invalid(
                "log.format",
                format!("must be `human` or `json`, got {:?}", self.log.format),
            ));
        }
        Ok(())
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_secs(self.source.poll_interval_seconds)
    }
}

fn check_url(key: &str, value: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(()),
        Ok(url) => Err(invalid(
            key,
            format!(
                "must be an http or https URL, got scheme {:?}",
                url.scheme()
            ),
        )),
        Err(error) => Err(invalid(key, format!("not a URL ({error}): {value:?}"))),
    }
}

/// A PostgreSQL URL. The value is never quoted in the error: it may hold a password.
fn check_database_url(key: &str, value: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "postgres" | "postgresql") => Ok(()),
        Ok(url) => Err(invalid(
            key,
            format!("must be a postgres:// URL, got scheme {:?}", url.scheme()),
        )),
        Err(error) => Err(invalid(
            key,
            format!("not a URL ({error}); expected postgres://user@host:5432/database"),
        )),
    }
}

/// The URL with its password, if any, replaced by `***`: the form of a URL that may be shown. PostgreSQL
/// URLs may carry the password in the user part or as a `password` query parameter.
pub fn masked_url(value: &str) -> String {
    let Ok(mut url) = reqwest::Url::parse(value) else {
        return "(an unparsable URL)".to_string();
    };
    if url.password().is_some() {
        // Only fails for URLs that cannot have a password, which this one has.
        let _ = url.set_password(Some("***"));
    }
    if url.query_pairs().any(|(key, _)| key == "password") {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(key, value)| {
                let value = if key == "password" {
                    "***".into()
                } else {
                    value.into_owned()
                };
                (key.into_owned(), value)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

/// Reads a secret from (in order) the inline value, the file named by `file`, or the systemd credential
/// `credential`. The secret itself never appears in an error.
/// The permission bits of a file that group or others may read, if so.
fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then_some(mode)
}

/// The host of an `http://` URL that is not loopback (`localhost`, 127.0.0.0/8, `::1`).
fn cleartext_remote_host(url: &str) -> Option<String> {
    let rest = url.trim().strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback());
    (!loopback).then(|| host.to_owned())
}

pub fn resolve_secret(
    key: &str,
    inline: Option<&str>,
    file: Option<&Path>,
    credential: &str,
) -> Result<String, ConfigError> {
    if let Some(value) = inline.filter(|value| !value.is_empty()) {
        return Ok(value.to_string());
    }
    let read = |path: &Path, key: String| {
        std::fs::read_to_string(path)
            .map(|text| text.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|error| ConfigError::SecretFile {
                key,
                path: path.display().to_string(),
                error,
            })
    };
    if let Some(path) = file {
        return read(path, format!("{key}_file"));
    }
    if let Some(directory) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let path = Path::new(&directory).join(credential);
        if path.is_file() {
            return read(&path, key.to_string());
        }
    }
    Err(invalid(
        key,
        format!(
            "no secret given: set {key}, {key}_file, TTHC_SYNC__{} or the systemd credential {credential}",
            key.replace('.', "__").to_uppercase()
        ),
    ))
}

/// Parses an RFC 3339 time, with a colon-less offset too.
trait LenientTimestamp {
    fn from_str_lenient(text: &str) -> Option<jiff::Timestamp>;
}

impl LenientTimestamp for jiff::Timestamp {
    fn from_str_lenient(text: &str) -> Option<jiff::Timestamp> {
        text.parse().ok()
    }
}

/// The configured start of the first poll.
pub fn initial_from(settings: &SourceSettings) -> jiff::Timestamp {
    jiff::Timestamp::from_str_lenient(&settings.initial_from).unwrap_or(jiff::Timestamp::UNIX_EPOCH)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleartext_to_a_remote_host_is_told_apart_from_loopback() {
        assert_eq!(
            cleartext_remote_host("http://motcua.example.gov.vn/api"),
            Some("motcua.example.gov.vn".to_owned())
        );
        assert_eq!(
            cleartext_remote_host("http://10.0.0.5:8080"),
            Some("10.0.0.5".to_owned())
        );
        assert_eq!(cleartext_remote_host("http://127.0.0.1:8081"), None);
        assert_eq!(cleartext_remote_host("http://localhost/api"), None);
        assert_eq!(cleartext_remote_host("http://[::1]:9000/"), None);
        assert_eq!(cleartext_remote_host("https://motcua.example.gov.vn"), None);
    }

    #[test]
    fn secret_files_readable_by_others_and_cleartext_urls_are_warned() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("portal_password");
        std::fs::write(&secret, "x").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = format!(
            "[source]\nbase_url = \"http://motcua.example.gov.vn/api\"\nclient_id = \"a\"\nclient_secret = \"s\"\n\
             [portal]\nbase_url = \"http://127.0.0.1:8082\"\ndstcode = \"H60\"\nusername = \"u\"\n\
             password_file = \"{}\"\nmadonvi = \"000.00.00.H60\"\n",
            secret.display()
        );
        let config = dir.path().join("tthc-sync.toml");
        std::fs::write(&config, &text).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).unwrap();
        let settings = Settings::from_toml(&text).unwrap();
        let warnings = settings.warnings(Some(&config));
        assert_eq!(warnings.len(), 3, "{warnings:#?}");
        assert!(warnings.iter().any(|w| w.contains("configuration file")));
        assert!(
            warnings
                .iter()
                .any(|w| w.contains("`portal.password_file`"))
        );
        assert!(warnings.iter().any(|w| w.contains("`source.base_url`")));

        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
        let allowed = Settings::from_toml(&text.replace(
            "client_secret = \"s\"\n",
            "client_secret = \"s\"\nallow_cleartext = true\n",
        ))
        .unwrap();
        assert!(allowed.warnings(Some(&config)).is_empty());
    }
}
