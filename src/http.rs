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
    /// An answer larger than the side's `http.max_body_bytes`, refused while it was read (a broken proxy or
    /// peer): try again later, the operator is told by the retry's warning.
    #[error("answer larger than {limit} bytes (http.max_body_bytes), refused")]
    TooLarge { limit: usize },
    /// A token endpoint refused the client's credentials, or a login is paused after such a refusal: only
    /// an operator can fix it, and retrying at full speed gets accounts locked ([`LoginGate`]).
    #[error("credentials refused: {0}")]
    CredentialsRefused(String),
    /// Any other 4xx: a bug or a contract mismatch; retrying will not help.
    #[error("HTTP {status}: {detail}")]
    Refused { status: u16, detail: String },
}

impl TransportError {
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            TransportError::Network(_)
                | TransportError::Status { .. }
                | TransportError::Body(_)
                | TransportError::TooLarge { .. }
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
            TransportError::TooLarge { .. } => "body_too_large".into(),
            TransportError::CredentialsRefused(_) => "credentials".into(),
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

/// The body limit of the small answers of token endpoints.
pub const TOKEN_BODY_LIMIT: usize = 1024 * 1024;

/// Sends a request and reads the whole body, classifying failures. A body over `max_body` bytes is
/// refused as soon as it is known to be larger (from `Content-Length`, or while it is read), so that no
/// more than `max_body` bytes are ever held.
pub async fn send(
    request: reqwest::RequestBuilder,
    max_body: usize,
) -> Result<bytes::Bytes, TransportError> {
    let mut response = request
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
    if response
        .content_length()
        .is_some_and(|length| length > max_body as u64)
    {
        return Err(TransportError::TooLarge { limit: max_body });
    }
    let mut body = bytes::BytesMut::with_capacity(
        response
            .content_length()
            .map_or(64 * 1024, |length| length as usize),
    );
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|error| TransportError::from_reqwest(&error))?
    {
        if body.len() + chunk.len() > max_body {
            return Err(TransportError::TooLarge { limit: max_body });
        }
        body.extend_from_slice(&chunk);
    }
    let body = body.freeze();
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

/// The first pause after refused credentials; it doubles with each further refusal, up to the side's
/// `max_login_backoff_seconds`.
pub const FIRST_LOGIN_BACKOFF: Duration = Duration::from_secs(30);

/// Paces the logins of one client after its credentials were refused (portal-api.md section 2.1,
/// "Credentials"): an account is locked by a portal after repeated failures, so a refused login is
/// tried again only after a pause that doubles per refusal, and each refused attempt is logged once, at
/// `error`. While a pause runs, a login is not attempted at all.
#[derive(Debug)]
pub struct LoginGate {
    /// What is logging in: `source`, `portal`, `source.gateway`, `portal.gateway`.
    pub what: &'static str,
    cap: Duration,
    state: std::sync::Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    refused_in_a_row: u32,
    refused_total: u64,
    next_attempt: Option<tokio::time::Instant>,
}

impl LoginGate {
    pub fn new(what: &'static str, max_backoff: Duration) -> LoginGate {
        LoginGate {
            what,
            cap: max_backoff.max(Duration::from_secs(1)),
            state: std::sync::Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Err` with the time left while logins are paused after a refusal.
    pub fn check(&self) -> Result<(), TransportError> {
        let state = self.state();
        match state.next_attempt {
            Some(next) if tokio::time::Instant::now() < next => {
                Err(TransportError::CredentialsRefused(format!(
                    "{} login paused for {} s more after {} refusal(s)",
                    self.what,
                    (next - tokio::time::Instant::now()).as_secs(),
                    state.refused_in_a_row
                )))
            }
            _ => Ok(()),
        }
    }

    /// A login was refused: pause the next one, and say so once, at `error`. `detail` must hold no
    /// secret (the peer's message, e.g. `invalid_client`).
    pub fn refused(&self, detail: &str) -> TransportError {
        let mut state = self.state();
        state.refused_in_a_row += 1;
        state.refused_total += 1;
        let pause = FIRST_LOGIN_BACKOFF
            .saturating_mul(1u32 << (state.refused_in_a_row - 1).min(20))
            .min(self.cap);
        state.next_attempt = Some(tokio::time::Instant::now() + pause);
        tracing::error!(
            side = self.what,
            attempt = state.refused_in_a_row,
            next_attempt_in_s = pause.as_secs(),
            detail = %crate::privacy::mask_message(detail, 120),
            "the credentials were refused; the next login waits (fix the account or secret, then reload or restart)"
        );
        TransportError::CredentialsRefused(format!(
            "{} refused the credentials: {detail}",
            self.what
        ))
    }

    /// A login succeeded: no pause any more.
    pub fn accepted(&self) {
        let mut state = self.state();
        state.refused_in_a_row = 0;
        state.next_attempt = None;
    }

    /// Refusals in a row and the pause left, while the last login was refused.
    pub fn refusal(&self) -> Option<(u32, Duration)> {
        let state = self.state();
        (state.refused_in_a_row > 0).then(|| {
            let left = state.next_attempt.map_or(Duration::ZERO, |next| {
                next.saturating_duration_since(tokio::time::Instant::now())
            });
            (state.refused_in_a_row, left)
        })
    }

    /// Refused logins since start (the `tthc_sync_login_refusals_total` metric).
    pub fn refused_total(&self) -> u64 {
        self.state().refused_total
    }
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
    pub login: LoginGate,
}

#[derive(Deserialize)]
struct OAuthToken {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl GatewayToken {
    pub fn new(
        key: &'static str,
        http: reqwest::Client,
        settings: &GatewaySettings,
        max_login_backoff: Duration,
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
            login: LoginGate::new(key, max_login_backoff),
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
        self.login.check()?;
        let body = match send(
            self.http.post(&self.token_url).form(&form),
            TOKEN_BODY_LIMIT,
        )
        .await
        {
            Ok(body) => body,
            Err(TransportError::Unauthorized) => return Err(self.login.refused("HTTP 401")),
            Err(TransportError::Refused { status, detail }) if matches!(status, 400 | 403) => {
                return Err(self.login.refused(&format!("HTTP {status}: {detail}")));
            }
            Err(error) => return Err(error),
        };
        self.login.accepted();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A client that logs in again as soon as the gate lets it, against credentials that stay wrong.
    #[tokio::test(start_paused = true)]
    async fn refused_logins_are_paced_to_at_most_six_in_ten_minutes() {
        let gate = LoginGate::new("portal", Duration::from_secs(900));
        let started = tokio::time::Instant::now();
        let mut attempts = Vec::new();
        while started.elapsed() < Duration::from_secs(3600) {
            if gate.check().is_ok() {
                attempts.push(started.elapsed().as_secs());
                gate.refused("Sai tên đăng nhập hoặc mật khẩu");
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let first_ten_minutes = attempts.iter().filter(|at| **at < 600).count();
        assert!(
            first_ten_minutes <= 6,
            "{first_ten_minutes} attempts in the first 10 minutes: {attempts:?}"
        );
        assert_eq!(&attempts[..5], &[0, 30, 90, 210, 450]);
        // The pause stops growing at the cap.
        let gaps: Vec<u64> = attempts.windows(2).map(|pair| pair[1] - pair[0]).collect();
        assert!(gaps.iter().all(|gap| *gap <= 901), "{gaps:?}");
        assert_eq!(gaps.last(), Some(&900));
        assert_eq!(gate.refused_total(), attempts.len() as u64);
        assert!(gate.refusal().is_some());
        gate.accepted();
        assert!(gate.refusal().is_none() && gate.check().is_ok());
    }
}
