//! What both HTTP clients share: building a `reqwest` client from configuration (timeouts, extra CA
//! bundle, proxy), the optional gateway token in front of either side, and the retry policy.

use std::time::{Duration, Instant};

use backon::ExponentialBuilder;
use reqwest::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use tokio::sync::Mutex;

use crate::config::{ConfigError, GatewaySettings, HttpSettings, resolve_secret};

/// Builds a client for one side. Certificates from `ca_file` are trusted in addition to the system's.
pub fn build_client(key: &str, settings: &HttpSettings) -> Result<reqwest::Client, ConfigError> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(settings.connect_timeout_seconds))
        .timeout(Duration::from_secs(settings.request_timeout_seconds))
        .user_agent(concat!("tthc-sync/", env!("CARGO_PKG_VERSION")))
        .pool_max_idle_per_host(16);
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path).map_err(|error| ConfigError::SecretFile {
            key: format!("{key}.ca_file"),
            path: path.display().to_string(),
            error,
        })?;
        let certificates =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| ConfigError::Invalid {
                key: format!("{key}.ca_file"),
                problem: format!("not a PEM certificate bundle: {error}"),
            })?;
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
    }
    if let Some(proxy) = &settings.proxy {
        let proxy = reqwest::Proxy::all(proxy).map_err(|error| ConfigError::Invalid {
            key: format!("{key}.proxy"),
            problem: error.to_string(),
        })?;
        builder = builder.proxy(proxy);
    } else {
        builder = builder.no_proxy();
    }
    builder.build().map_err(|error| ConfigError::Invalid {
        key: key.to_string(),
        problem: format!("cannot build the HTTP client: {error}"),
    })
}

/// The in-call retry policy: exponential with jitter and a cap.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    pub max_times: usize,
}

impl RetryPolicy {
    /// No retries: for clients built only to check their configuration, and one-shot commands.
    pub fn none() -> RetryPolicy {
        RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            max_times: 0,
        }
    }

    pub fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_times)
    }
}

/// A transport-level failure, classified by what the caller does next.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// Connection refused or reset, a timeout, a body cut short: try again.
    #[error("network: {0}")]
    Network(String),
    /// 429 or 5xx: try again, after `retry_after` when the server said so.
    #[error("HTTP {status}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    /// A 200 whose body is not what the contract says: try again, never take it as success.
    #[error("unreadable answer: {0}")]
    Body(String),
    /// 401: take a new token and repeat once.
    #[error("HTTP 401 (token refused)")]
    Unauthorized,
    /// Any other 4xx: a bug or a contract mismatch; retrying will not help.
    #[error("HTTP {status}: {detail}")]
    Refused { status: u16, detail: String },
}

impl TransportError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TransportError::Network(_) | TransportError::Status { .. } | TransportError::Body(_)
        )
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            TransportError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short label for metrics and logs: `timeout`, `connect`, `http_503`, `body`, ...
    pub fn kind(&self) -> String {
        match self {
            TransportError::Network(detail) if detail.contains("timed out") => "timeout".into(),
            TransportError::Network(_) => "network".into(),
            TransportError::Status { status, .. } => format!("http_{status}"),
            TransportError::Body(_) => "body".into(),
            TransportError::Unauthorized => "unauthorized".into(),
            TransportError::Refused { status, .. } => format!("http_{status}"),
        }
    }

    pub fn from_reqwest(error: &reqwest::Error) -> TransportError {
        // reqwest's Display names the URL, never credentials (they travel in headers and bodies).
        let mut detail = error.to_string();
        if error.is_timeout() {
            detail = format!("timed out: {detail}");
        }
        TransportError::Network(detail)
    }
}

/// Sends a request and reads the whole body, classifying failures.
pub async fn send(request: reqwest::RequestBuilder) -> Result<bytes::Bytes, TransportError> {
    let response = request
        .send()
        .await
        .map_err(|error| TransportError::from_reqwest(&error))?;
    let status = response.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(TransportError::Unauthorized);
    }
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        return Err(TransportError::Status {
            status: status.as_u16(),
            retry_after,
        });
    }
    let body = response
        .bytes()
        .await
        .map_err(|error| TransportError::from_reqwest(&error))?;
    if status.is_client_error() {
        // The body may echo what was sent (personal data): only a masked excerpt goes into the error,
        // which reaches logs and the attempt log.
        let detail = crate::privacy::mask_message(&String::from_utf8_lossy(&body), 200);
        return Err(TransportError::Refused {
            status: status.as_u16(),
            detail,
        });
    }
    Ok(body)
}

/// An OAuth2 client-credentials token for a gateway in front of a side, cached until shortly before it
/// expires.
pub struct GatewayToken {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    client_secret: String,
    scope: Option<String>,
    header: HeaderName,
    cached: Mutex<Option<(String, Instant)>>,
}

#[derive(Deserialize)]
struct OAuthToken {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl GatewayToken {
    pub fn new(
        key: &str,
        http: reqwest::Client,
        settings: &GatewaySettings,
    ) -> Result<GatewayToken, ConfigError> {
        let client_secret = resolve_secret(
            &format!("{key}.client_secret"),
            settings.client_secret.as_deref(),
            settings.client_secret_file.as_deref(),
            &format!("{}_gateway_secret", key.split('.').next().unwrap_or(key)),
        )?;
        let header = HeaderName::from_bytes(settings.header.as_bytes()).map_err(|_| {
            ConfigError::Invalid {
                key: format!("{key}.header"),
                problem: format!("{:?} is not a valid header name", settings.header),
            }
        })?;
        Ok(GatewayToken {
            http,
            token_url: settings.token_url.clone(),
            client_id: settings.client_id.clone(),
            client_secret,
            scope: settings.scope.clone(),
            header,
            cached: Mutex::new(None),
        })
    }

    /// The header to add to every call on this side.
    pub async fn header(&self) -> Result<(HeaderName, HeaderValue), TransportError> {
        let mut cached = self.cached.lock().await;
        if let Some((token, valid_until)) = cached.as_ref()
            && Instant::now() < *valid_until
        {
            return Ok((self.header.clone(), bearer(token)?));
        }
        let mut form = vec![
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
        ];
        if let Some(scope) = &self.scope {
            form.push(("scope", scope));
        }
        let body = send(self.http.post(&self.token_url).form(&form)).await?;
        let token: OAuthToken = serde_json::from_slice(&body)
            .map_err(|error| TransportError::Body(format!("gateway token: {error}")))?;
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(300));
        let valid_until = Instant::now() + lifetime.mul_f64(0.8);
        let value = bearer(&token.access_token)?;
        *cached = Some((token.access_token, valid_until));
        Ok((self.header.clone(), value))
    }

    pub async fn invalidate(&self) {
        *self.cached.lock().await = None;
    }
}

/// `Bearer <token>` as a header value marked sensitive (never printed by reqwest's Debug).
pub fn bearer(token: &str) -> Result<HeaderValue, TransportError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
        TransportError::Body("token contains characters not allowed in a header".into())
    })?;
    value.set_sensitive(true);
    Ok(value)
}
