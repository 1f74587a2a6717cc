//! The `[status]` section: the status server's address, token, readiness ages and connection limits.

use super::*;

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

fn default_status_max_connections() -> usize {
    64
}

fn default_status_header_timeout() -> u64 {
    10
}

fn default_status_idle_timeout() -> u64 {
    60
}
