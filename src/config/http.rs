//! What both sides' `[*.http]` and `[*.gateway]` sections hold: timeouts, CA bundle, proxy, body limit, the token gateway.

use super::*;

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

fn default_max_body_bytes() -> usize {
    64 * 1024 * 1024
}

fn default_connect_timeout() -> u64 {
    10
}

fn default_request_timeout() -> u64 {
    60
}
