//! Configuration: defaults, a TOML file, then environment variables (`TTHC_SYNC__SECTION__KEY`), in that
//! order of precedence. Secrets come from the environment, from files (`*_file`), or from systemd
//! credentials (`$CREDENTIALS_DIRECTORY/<name>`), never from the TOML file in production.
//!
//! Every field documented here is operator documentation: `config/tthc-sync.example.toml` mirrors it.
//! One file per section, each with its defaults beside its fields; this one holds the whole and its
//! checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

mod daemon;
mod http;
mod log;
mod mapping;
mod portal;
mod reconcile;
mod source;
mod status;
mod store;

pub use daemon::*;
pub use http::*;
pub use log::*;
pub use mapping::*;
pub use portal::*;
pub use reconcile::*;
pub use source::*;
pub use status::*;
pub use store::*;

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

fn default_max_login_backoff() -> u64 {
    900
}

fn default_auth_header() -> String {
    "Authorization".into()
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
