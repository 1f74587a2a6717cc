//! The `[store]` section: the ledger (a SQLite file, or a PostgreSQL URL) and the leases of work in flight.

use super::*;

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

fn default_retention_days() -> u32 {
    180
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
