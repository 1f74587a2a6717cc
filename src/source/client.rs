//! HTTP client of the provincial one-stop system: token handling (a new token on 401, then the call once
//! more), retries of transport faults with backoff, and the calls the daemon makes.

use std::time::{Duration, Instant};

use backon::Retryable;
use jiff::Timestamp;
use reqwest::header::HeaderName;
use serde_json::value::RawValue;
use tokio::sync::Mutex;

use super::escapes::escape_invalid_utf8;
use super::time::format_source_time;
use super::wire::{
    AgencyDayCount, AgencyItem, DossierIdItem, Page, ProcedureItem, RawPage, TokenResponse,
};
use crate::config::{ConfigError, SourceSettings, resolve_secret};
use crate::http::{
    GatewayToken, LoginGate, RetryPolicy, TOKEN_BODY_LIMIT, TransportError, bearer, build_client,
    send,
};

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source: {0}")]
    Transport(#[from] TransportError),
    #[error("source refused the client credentials: {0}")]
    Credentials(String),
}

impl SourceError {
    pub fn kind(&self) -> String {
        match self {
            SourceError::Transport(error) => error.kind(),
            SourceError::Credentials(_) => "credentials".into(),
        }
    }
}

pub struct SourceClient {
    http: reqwest::Client,
    base: String,
    client_id: String,
    /// `None` for a client built by [`SourceClient::offline`]: every call fails without asking.
    client_secret: Option<String>,
    auth_header: HeaderName,
    gateway: Option<GatewayToken>,
    token: Mutex<Option<(String, Instant)>>,
    retry: RetryPolicy,
    max_body: usize,
    /// Paces logins after the source refused the client credentials.
    pub login: LoginGate,
}

impl SourceClient {
    /// The login gate of the gateway in front of this side, if there is one.
    pub fn gateway_login(&self) -> Option<&LoginGate> {
        self.gateway.as_ref().map(|gateway| &gateway.login)
    }

    pub fn new(settings: &SourceSettings, retry: RetryPolicy) -> Result<SourceClient, ConfigError> {
        let client_secret = resolve_secret(
            "source.client_secret",
            settings.client_secret.as_deref(),
            settings.client_secret_file.as_deref(),
            "source_client_secret",
        )?;
        SourceClient::build(settings, retry, Some(client_secret))
    }

    /// A client for a command that does not talk to the source (`report --offline`, `failures`,
    /// `retry`): its settings are checked, but no secret is asked for, and every call fails at once.
    pub fn offline(settings: &SourceSettings) -> Result<SourceClient, ConfigError> {
        SourceClient::build(settings, RetryPolicy::none(), None)
    }

    fn build(
        settings: &SourceSettings,
        retry: RetryPolicy,
        client_secret: Option<String>,
    ) -> Result<SourceClient, ConfigError> {
        let http = build_client("source.http", &settings.http)?;
        let gateway = match (&settings.gateway, &client_secret) {
            (Some(gateway), Some(_)) => Some(GatewayToken::new(
                "source.gateway",
                http.clone(),
                gateway,
                Duration::from_secs(settings.max_login_backoff_seconds),
            )?),
            _ => None,
        };
        let auth_header =
            HeaderName::from_bytes(settings.auth_header.as_bytes()).map_err(|_| {
                ConfigError::Invalid {
                    key: "source.auth_header".into(),
                    problem: format!("{:?} is not a valid header name", settings.auth_header),
                }
            })?;
        Ok(SourceClient {
            http,
            base: settings.base_url.trim_end_matches('/').to_string(),
            client_id: settings.client_id.clone(),
            client_secret,
            auth_header,
            gateway,
            token: Mutex::new(None),
            retry,
            max_body: settings.http.max_body_bytes,
            login: LoginGate::new(
                "source",
                Duration::from_secs(settings.max_login_backoff_seconds),
            ),
        })
    }

    async fn token(&self) -> Result<String, SourceError> {
        let mut cached = self.token.lock().await;
        if let Some((token, valid_until)) = cached.as_ref()
            && Instant::now() < *valid_until
        {
            return Ok(token.clone());
        }
        let Some(client_secret) = &self.client_secret else {
            return Err(SourceError::Credentials(
                "this command was started without the source's secrets".into(),
            ));
        };
        let mut request = self.http.post(format!("{}/oauth/token", self.base)).form(&[
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", client_secret.as_str()),
        ]);
        if let Some(gateway) = &self.gateway {
            let (name, value) = gateway.header().await?;
            request = request.header(name, value);
        }
        if let Err(paused) = self.login.check() {
            return Err(SourceError::Credentials(paused.to_string()));
        }
        let body = match send(request, TOKEN_BODY_LIMIT).await {
            Ok(body) => body,
            Err(TransportError::Unauthorized) => {
                self.login.refused("invalid_client");
                return Err(SourceError::Credentials("invalid_client".into()));
            }
            Err(error) => return Err(error.into()),
        };
        self.login.accepted();
        let token: TokenResponse = serde_json::from_slice(&body)
            .map_err(|error| TransportError::Body(format!("token answer: {error}")))?;
        // Renew a little before the source says it expires, so that a long page does not race it.
        let lifetime = Duration::from_secs(token.expires_in.unwrap_or(300));
        let valid_until = Instant::now() + lifetime.mul_f64(0.9);
        *cached = Some((token.access_token.clone(), valid_until));
        Ok(token.access_token)
    }

    /// One GET with the token; on 401 a new token and the call once more.
    async fn get_once(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<bytes::Bytes, SourceError> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let mut request = self
                .http
                .get(format!("{}{}", self.base, path))
                .query(query)
                .header(self.auth_header.clone(), bearer(&token)?);
            if let Some(gateway) = &self.gateway {
                let (name, value) = gateway.header().await?;
                request = request.header(name, value);
            }
            match send(request, self.max_body).await {
                Err(TransportError::Unauthorized) if attempt == 0 => {
                    *self.token.lock().await = None;
                    if let Some(gateway) = &self.gateway {
                        gateway.invalidate().await;
                    }
                }
                other => return Ok(other?),
            }
        }
        Err(TransportError::Unauthorized.into())
    }

    /// A GET with retries of transport faults (exponential backoff with jitter, honouring Retry-After).
    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<bytes::Bytes, SourceError> {
        let max_delay = self.retry.max_delay;
        (|| self.get_once(path, query))
            .retry(self.retry.backoff())
            .when(|error: &SourceError| matches!(error, SourceError::Transport(error) if error.is_retryable()))
            .adjust(move |error: &SourceError, delay| {
                delay.map(|delay| match error {
                    SourceError::Transport(error) => error.retry_after().map_or(delay, |after| after.min(max_delay)),
                    SourceError::Credentials(_) => delay,
                })
            })
            .notify(|error: &SourceError, delay| {
                tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "source call failed, retrying");
            })
            .await
    }

    /// Parses a JSON answer; a body that does not parse (cut short, HTML) is a retryable fault.
    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, SourceError> {
        let max_delay = self.retry.max_delay;
        (|| async {
            let body = self.get(path, query).await?;
            serde_json::from_slice::<T>(&body).map_err(|error| {
                SourceError::Transport(TransportError::Body(format!("{path}: {error}")))
            })
        })
        .retry(self.retry.backoff())
        .when(|error: &SourceError| {
            matches!(error, SourceError::Transport(TransportError::Body(_)))
        })
        .adjust(move |_, delay| delay.map(|delay| delay.min(max_delay)))
        .await
    }

    /// One page of the changed-since feed. A page without `content` is a fault, retried like one.
    pub async fn search(
        &self,
        updated_from: Timestamp,
        page: u32,
        size: u32,
    ) -> Result<FeedPage, SourceError> {
        let query = [
            ("updated-from", format_source_time(updated_from)),
            ("sort", "updatedDate,asc".to_string()),
            ("page", page.to_string()),
            ("size", size.to_string()),
        ];
        let max_delay = self.retry.max_delay;
        (|| async {
            let body = self.get("/pa/dossier/search", &query).await?;
            parse_search_page(&body)
        })
        .retry(self.retry.backoff())
        .when(|error: &SourceError| {
            matches!(error, SourceError::Transport(TransportError::Body(_)))
        })
        .adjust(move |_, delay| delay.map(|delay| delay.min(max_delay)))
        .await
    }

    /// How many rows the feed holds from `updated_from` on (`totalElements` of a one-row page).
    pub async fn count_from(&self, updated_from: Timestamp) -> Result<i64, SourceError> {
        let page = self.search(updated_from, 0, 1).await?;
        page.total_elements.ok_or_else(|| {
            SourceError::Transport(TransportError::Body(
                "feed page without totalElements".into(),
            ))
        })
    }

    /// One dossier by id, raw; `None` when the source does not know it.
    pub async fn dossier(&self, id: &str) -> Result<Option<Box<RawValue>>, SourceError> {
        let path = format!("/pa/dossier/{}", urlencode(id));
        match self.get(&path, &[]).await.and_then(|body| {
            parse_lenient::<Box<RawValue>>(&body).map_err(|error| {
                SourceError::Transport(TransportError::Body(format!("{path}: {error}")))
            })
        }) {
            Ok(record) => Ok(Some(record)),
            Err(SourceError::Transport(TransportError::Refused { status: 404, .. })) => Ok(None),
            Err(error) => Err(error),
        }
    }

    pub async fn agencies(&self) -> Result<Vec<AgencyItem>, SourceError> {
        self.all_pages("/ba/agency", &[]).await
    }

    pub async fn procedures(&self) -> Result<Vec<ProcedureItem>, SourceError> {
        self.all_pages("/ba/procedure", &[]).await
    }

    /// Every page of a paged listing, 500 rows at a time.
    async fn all_pages<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<Vec<T>, SourceError> {
        let mut items = Vec::new();
        for page in 0.. {
            let mut paged = query.to_vec();
            paged.push(("page", page.to_string()));
            paged.push(("size", "500".to_string()));
            let answer: Page<T> = self.get_json(path, &paged).await?;
            let done = answer.last || answer.content.is_empty();
            items.extend(answer.content);
            if done {
                break;
            }
        }
        Ok(items)
    }

    /// Counts by agency and reception day (source-api.md section 4).
    pub async fn count_by_agency(
        &self,
        from: &str,
        to: &str,
    ) -> Result<Vec<AgencyDayCount>, SourceError> {
        self.get_json(
            "/pa/dossier-statistic/count-by-agency",
            &[
                ("received-from", from.to_string()),
                ("received-to", to.to_string()),
            ],
        )
        .await
    }

    /// Identifiers of one agency's dossiers received on one day.
    pub async fn ids(
        &self,
        agency_id: &str,
        date: &str,
    ) -> Result<Vec<DossierIdItem>, SourceError> {
        self.all_pages(
            "/pa/dossier-statistic/ids",
            &[
                ("agency-id", agency_id.to_string()),
                ("date", date.to_string()),
            ],
        )
        .await
    }

    /// One page (`size` rows) of the identifiers of one agency's dossiers received on one day, and
    /// whether it is the last: for readers that go on page by page instead of holding the listing.
    pub async fn ids_page(
        &self,
        agency_id: &str,
        date: &str,
        page: u32,
        size: u32,
    ) -> Result<(Vec<DossierIdItem>, bool), SourceError> {
        let query = [
            ("agency-id", agency_id.to_string()),
            ("date", date.to_string()),
            ("page", page.to_string()),
            ("size", size.to_string()),
        ];
        let answer: Page<DossierIdItem> =
            self.get_json("/pa/dossier-statistic/ids", &query).await?;
        let last = answer.last || answer.content.is_empty();
        Ok((answer.content, last))
    }
}

/// A feed page: the raw records and what the source says of the whole result.
pub struct FeedPage {
    pub content: Vec<Box<RawValue>>,
    pub total_elements: Option<i64>,
    pub last: Option<bool>,
}

/// Reads the body of a feed page (`/pa/dossier/search`): its records raw, one by one, and its counts. It
/// fails only when the page's own JSON does, or when it has no `content` (quirk 9); what one record holds
/// never fails it (quirk 11). The fuzz tests (`tests/fuzz.rs`) drive the reader through this function.
pub fn parse_search_page(body: &[u8]) -> Result<FeedPage, SourceError> {
    let page: RawPage = parse_lenient(body).map_err(|error| {
        SourceError::Transport(TransportError::Body(format!("/pa/dossier/search: {error}")))
    })?;
    match page.content {
        Some(content) => Ok(FeedPage {
            content,
            total_elements: page.total_elements,
            last: page.last,
        }),
        None => Err(SourceError::Transport(TransportError::Body(
            "feed page without content".into(),
        ))),
    }
}

/// Parses an answer that carries records. Bytes that are not UTF-8 spoil only the record that holds them:
/// they are written as `\udcXX` escapes first (source-api.md quirk 11), which the normalizer holds back as
/// `invalid_text`, instead of failing the whole answer.
fn parse_lenient<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, serde_json::Error> {
    match simdutf8::basic::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => {
            let escaped = escape_invalid_utf8(body).unwrap_or_default();
            tracing::warn!(
                bytes = body.len(),
                "the source's answer holds bytes that are not UTF-8; the records holding them are held back as invalid_text"
            );
            serde_json::from_slice(&escaped)
        }
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}
