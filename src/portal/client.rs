//! HTTP client of the national portal: sessions (a new one on `-1`, then the call once more), a shared
//! request rate, and retries of transport faults with backoff that honours `Retry-After`.

use std::num::NonZeroU32;

use backon::Retryable;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Mutex;

use super::wire::{Envelope, ItemResult, UnitCatalogItem, UnitDayCount, parse_code, read_envelope};
use crate::config::{ConfigError, PortalSettings, resolve_secret};
use crate::http::{GatewayToken, LoginGate, RetryPolicy, TransportError, build_client, send};
use crate::portal::concurrency::{AdaptiveConcurrency, Signal};

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("portal: {0}")]
    Transport(#[from] TransportError),
    /// The portal refused the account: fatal until an operator fixes the credentials.
    #[error("portal refused the credentials: {0}")]
    Credentials(String),
    /// The session was refused twice in a row.
    #[error("portal refused a fresh session: {0}")]
    Session(String),
    /// The portal processed the call and answered an overall error code.
    #[error("portal answered code {code}: {message}")]
    Answer { code: i64, message: String },
}

impl PortalError {
    pub fn kind(&self) -> String {
        match self {
            PortalError::Transport(error) => error.kind(),
            PortalError::Credentials(_) => "credentials".into(),
            PortalError::Session(_) => "session".into(),
            PortalError::Answer { code, .. } => format!("code_{code}"),
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            PortalError::Transport(error) => error.is_retryable(),
            // 99: internal error, retry later.
            PortalError::Answer { code, .. } => *code == 99,
            _ => false,
        }
    }
}

/// One item's answer from `DongBoHoSoMC` or `CapNhatTienDoHoSoMC`.
#[derive(Debug, Clone)]
pub struct ItemAnswer {
    pub code: i64,
    pub message: Option<String>,
}

/// The per-item answers of one call, matched to the items sent by `MaHoSo` (portal-api.md 2.1): one per
/// item, in the order sent; `None` for an item without exactly one entry of its own (it has no answer and
/// is never taken as stored).
#[derive(Debug, Clone)]
pub struct ItemAnswers {
    pub items: Vec<Option<ItemAnswer>>,
    /// Entries for a `MaHoSo` that was not sent (or naming none): ignored.
    pub ignored_entries: usize,
}

pub struct PortalClient {
    http: reqwest::Client,
    base: String,
    dstcode: String,
    username: String,
    /// `None` for a client built by [`PortalClient::offline`]: every call fails without asking.
    password: Option<String>,
    madonvi: String,
    gateway: Option<GatewayToken>,
    session: Mutex<Option<String>>,
    limiter: DefaultDirectRateLimiter,
    /// How many calls may be in flight at once (`portal.concurrency`, adapted to the portal's answers
    /// unless `portal.adaptive_concurrency` is off).
    concurrency: AdaptiveConcurrency,
    retry: RetryPolicy,
    max_body: usize,
    /// Paces logins (`/auth`) after the portal refused the account.
    pub login: LoginGate,
}

impl PortalClient {
    /// The login gate of the gateway in front of this side, if there is one.
    pub fn gateway_login(&self) -> Option<&LoginGate> {
        self.gateway.as_ref().map(|gateway| &gateway.login)
    }

    pub fn new(settings: &PortalSettings, retry: RetryPolicy) -> Result<PortalClient, ConfigError> {
        let password = resolve_secret(
            "portal.password",
            settings.password.as_deref(),
            settings.password_file.as_deref(),
            "portal_password",
        )?;
        PortalClient::build(settings, retry, Some(password))
    }

    /// A client for a command that does not talk to the portal (`report --offline`, `failures`,
    /// `retry`): its settings are checked, but no secret is asked for, and every call fails at once.
    pub fn offline(settings: &PortalSettings) -> Result<PortalClient, ConfigError> {
        PortalClient::build(settings, RetryPolicy::none(), None)
    }

    fn build(
        settings: &PortalSettings,
        retry: RetryPolicy,
        password: Option<String>,
    ) -> Result<PortalClient, ConfigError> {
        let http = build_client("portal.http", &settings.http)?;
        let gateway = match (&settings.gateway, &password) {
            (Some(gateway), Some(_)) => Some(GatewayToken::new(
                "portal.gateway",
                http.clone(),
                gateway,
                std::time::Duration::from_secs(settings.max_login_backoff_seconds),
            )?),
            _ => None,
        };
        let rate = NonZeroU32::new(settings.requests_per_second).unwrap_or(NonZeroU32::MIN);
        Ok(PortalClient {
            http,
            base: settings.base_url.trim_end_matches('/').to_string(),
            dstcode: settings.dstcode.clone(),
            username: settings.username.clone(),
            password,
            madonvi: settings.madonvi.clone(),
            gateway,
            session: Mutex::new(None),
            limiter: RateLimiter::direct(Quota::per_second(rate)),
            concurrency: AdaptiveConcurrency::new(
                settings.concurrency,
                settings.adaptive_concurrency,
            ),
            retry,
            max_body: settings.http.max_body_bytes,
            login: LoginGate::new(
                "portal",
                std::time::Duration::from_secs(settings.max_login_backoff_seconds),
            ),
        })
    }

    /// The calls to the portal allowed in flight now.
    pub fn concurrency_limit(&self) -> usize {
        self.concurrency.limit()
    }

    /// The portal's rate learnt from its 429s (calls per second), that calls are paced to; `None` while
    /// it has answered none.
    pub fn learnt_rate(&self) -> Option<f64> {
        self.concurrency.learnt_rate()
    }

    async fn post(&self, path: &str, body: String) -> Result<Envelope, PortalError> {
        // The configured rate first, then the learnt pace and a place among the calls in flight: a
        // place is not held while the call waits for its turn.
        self.limiter.until_ready().await;
        let permit = self.concurrency.acquire().await;
        let mut request = self
            .http
            .post(format!("{}{}", self.base, path))
            .header("dstcode", &self.dstcode)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(gateway) = &self.gateway {
            let (name, value) = gateway.header().await?;
            request = request.header(name, value);
        }
        let answer = send(request, self.max_body).await;
        permit.finish(match &answer {
            Ok(_) => Signal::Answered,
            Err(TransportError::Status { status: 429, .. }) => Signal::RateLimited,
            Err(TransportError::Status { .. }) => Signal::Backpressure,
            Err(TransportError::Network(detail)) if detail.contains("timed out") => {
                Signal::Backpressure
            }
            Err(_) => Signal::Neutral,
        });
        let answer = match answer {
            Err(TransportError::Unauthorized) if self.gateway.is_some() => {
                if let Some(gateway) = &self.gateway {
                    gateway.invalidate().await;
                }
                return Err(TransportError::Status {
                    status: 401,
                    retry_after: None,
                }
                .into());
            }
            other => other?,
        };
        // A 200 whose body is not JSON is an error to retry, never a success (portal-api.md 2.1).
        read_envelope(&answer).map_err(|error| {
            PortalError::Transport(TransportError::Body(format!("{path}: {error}")))
        })
    }

    async fn new_session(&self) -> Result<String, PortalError> {
        let Some(password) = &self.password else {
            return Err(PortalError::Credentials(
                "this command was started without the portal's secrets".into(),
            ));
        };
        // After a refusal, logins wait (portal-api.md 2.1, "Credentials"): a call meanwhile fails at once.
        self.login.check()?;
        let body = serde_json::json!({"username": self.username, "password": password}).to_string();
        let answer = self.post("/auth", body).await?;
        match (answer.error_code.is_ok(), answer.session) {
            (true, Some(session)) if !session.is_empty() => {
                self.login.accepted();
                Ok(session)
            }
            (true, _) => Err(PortalError::Transport(TransportError::Body(
                "auth answer without a session".into(),
            ))),
            (false, _) => {
                let message = answer.message.unwrap_or_default();
                self.login.refused(&message);
                Err(PortalError::Credentials(message))
            }
        }
    }

    async fn session(&self, renew: bool) -> Result<String, PortalError> {
        let mut session = self.session.lock().await;
        if !renew && let Some(current) = session.as_ref() {
            return Ok(current.clone());
        }
        let fresh = self.new_session().await?;
        *session = Some(fresh.clone());
        Ok(fresh)
    }

    /// One integration call; on a session answer (`-1`) a new session and the call once more.
    async fn integration_once(&self, service: &str, fields: &str) -> Result<Envelope, PortalError> {
        let mut renew = false;
        for _ in 0..2 {
            let session = self.session(renew).await?;
            let head = serde_json::json!({"session": session, "madonvi": self.madonvi, "service": service});
            // `fields` is already JSON (`"key": value, ...`), so large payloads are spliced in, not
            // parsed and serialized again.
            let mut body = head.to_string();
            if !fields.is_empty() {
                body.pop();
                body.push(',');
                body.push_str(fields);
                body.push('}');
            }
            let answer = self.post("/integration", body).await?;
            if answer.error_code.0 == -1 {
                renew = true;
                continue;
            }
            return Ok(answer);
        }
        Err(PortalError::Session(
            "session refused twice in a row".into(),
        ))
    }

    /// An integration call with retries of transport faults.
    pub async fn integration(&self, service: &str, fields: &str) -> Result<Envelope, PortalError> {
        let max_delay = self.retry.max_delay;
        (|| self.integration_once(service, fields))
            .retry(self.retry.backoff())
            .when(PortalError::is_retryable)
            .adjust(move |error: &PortalError, delay| {
                delay.map(|delay| match error {
                    PortalError::Transport(error) => error.retry_after().map_or(delay, |after| after.min(max_delay)),
                    _ => delay,
                })
            })
            .notify(|error: &PortalError, delay| {
                tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "portal call failed, retrying");
            })
            .await
    }

    /// `DongBoHoSoMC` with payloads already serialized, each with its `MaHoSo`; the answers matched to
    /// them by `MaHoSo`.
    pub async fn sync_dossiers(
        &self,
        updating: bool,
        items: &[(&str, &str)],
    ) -> Result<ItemAnswers, PortalError> {
        let mut fields = String::with_capacity(
            32 + items
                .iter()
                .map(|(_, payload)| payload.len() + 1)
                .sum::<usize>(),
        );
        fields.push_str(if updating {
            "\"isUpdating\":\"True\",\"data\":["
        } else {
            "\"isUpdating\":\"False\",\"data\":["
        });
        join_payloads(&mut fields, items);
        let answer = self.integration("DongBoHoSoMC", &fields).await?;
        item_answers(answer, items)
    }

    /// `CapNhatTienDoHoSoMC` with entries already serialized, each with its `MaHoSo` (at most one entry
    /// per `MaHoSo`: its answer names only that).
    pub async fn sync_progress(&self, items: &[(&str, &str)]) -> Result<ItemAnswers, PortalError> {
        let mut fields = String::from("\"data\":[");
        join_payloads(&mut fields, items);
        let answer = self.integration("CapNhatTienDoHoSoMC", &fields).await?;
        item_answers(answer, items)
    }

    /// `TraCuuHoSo`: the dossier as the portal stores it, or `None`.
    pub async fn lookup(&self, ma_ho_so: &str) -> Result<Option<serde_json::Value>, PortalError> {
        let fields = format!("\"mahoso\":{}", serde_json::Value::from(ma_ho_so));
        let answer = self.integration("TraCuuHoSo", &fields).await?;
        match answer.error_code.0 {
            0 => Ok(answer
                .result
                .and_then(|result| result.as_array().and_then(|items| items.first().cloned()))),
            4 => Ok(None),
            code => Err(PortalError::Answer {
                code,
                message: answer.message.unwrap_or_default(),
            }),
        }
    }

    /// `ThongKeHoSoDongBo`: counts per unit and reception day (`yyyyMMdd` bounds, inclusive).
    pub async fn counts(&self, from: &str, to: &str) -> Result<Vec<UnitDayCount>, PortalError> {
        let fields = format!("\"tungay\":\"{from}\",\"denngay\":\"{to}\"");
        let answer = self.integration("ThongKeHoSoDongBo", &fields).await?;
        decode_result(answer)
    }

    /// `LayDanhMucCoQuan`: the units the portal knows.
    pub async fn unit_catalog(&self) -> Result<Vec<UnitCatalogItem>, PortalError> {
        let answer = self.integration("LayDanhMucCoQuan", "").await?;
        decode_result(answer)
    }

    /// `LayThuTuc`: whether the portal knows a national procedure code.
    pub async fn procedure_known(&self, code: &str) -> Result<bool, PortalError> {
        let fields = format!("\"maTTHC\":{}", serde_json::Value::from(code));
        let answer = self.integration("LayThuTuc", &fields).await?;
        match answer.error_code.0 {
            0 => Ok(true),
            4 => Ok(false),
            code => Err(PortalError::Answer {
                code,
                message: answer.message.unwrap_or_default(),
            }),
        }
    }
}

fn decode_result<T: serde::de::DeserializeOwned>(answer: Envelope) -> Result<Vec<T>, PortalError> {
    if !answer.error_code.is_ok() {
        return Err(PortalError::Answer {
            code: answer.error_code.0,
            message: answer.message.unwrap_or_default(),
        });
    }
    serde_json::from_value(
        answer
            .result
            .unwrap_or(serde_json::Value::Array(Vec::new())),
    )
    .map_err(|error| PortalError::Transport(TransportError::Body(format!("result: {error}"))))
}

/// Appends the payloads, comma-separated, and the closing bracket.
fn join_payloads(fields: &mut String, items: &[(&str, &str)]) {
    for (index, (_, payload)) in items.iter().enumerate() {
        if index > 0 {
            fields.push(',');
        }
        fields.push_str(payload);
    }
    fields.push(']');
}

/// Reads the per-item answers and matches them to the items sent (`(MaHoSo, payload)`) by `MaHoSo`, never
/// by position. Without `result`, the overall code applies to every item. The fuzz tests (`tests/fuzz.rs`)
/// drive it with answers read by [`read_envelope`], as [`PortalClient`] does.
pub fn item_answers(answer: Envelope, sent: &[(&str, &str)]) -> Result<ItemAnswers, PortalError> {
    let overall = answer.error_code.0;
    if overall != 0 {
        return Err(PortalError::Answer {
            code: overall,
            message: answer.message.unwrap_or_default(),
        });
    }
    let Some(result) = answer.result else {
        let item = ItemAnswer {
            code: overall,
            message: answer.message,
        };
        return Ok(ItemAnswers {
            items: vec![Some(item); sent.len()],
            ignored_entries: 0,
        });
    };
    let serde_json::Value::Array(entries) = result else {
        return Err(PortalError::Transport(TransportError::Body(
            "result is not a list".into(),
        )));
    };
    let position: std::collections::HashMap<&str, usize> = sent
        .iter()
        .enumerate()
        .map(|(index, (ma_ho_so, _))| (*ma_ho_so, index))
        .collect();
    // Per item: its entry, and how many entries named it.
    let mut found: Vec<(Option<ItemAnswer>, usize)> = vec![(None, 0); sent.len()];
    let mut ignored_entries = 0;
    for entry in entries {
        let index = entry
            .get("MaHoSo")
            .and_then(|ma_ho_so| ma_ho_so.as_str())
            .and_then(|ma_ho_so| position.get(ma_ho_so));
        let Some(&index) = index else {
            ignored_entries += 1;
            continue;
        };
        let item: ItemResult = ItemResult {
            ma_ho_so: None,
            // An entry without a readable code is not an answer to act on: retried as "internal error".
            error_code: super::wire::ErrorCode(
                entry.get("error_code").and_then(parse_code).unwrap_or(99),
            ),
            message: entry
                .get("message")
                .and_then(|message| message.as_str())
                .map(String::from),
        };
        let slot = &mut found[index];
        slot.1 += 1;
        slot.0 = Some(ItemAnswer {
            code: item.error_code.0,
            message: item.message,
        });
    }
    Ok(ItemAnswers {
        items: found
            .into_iter()
            .map(|(answer, count)| if count == 1 { answer } else { None })
            .collect(),
        ignored_entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(json: &str) -> Envelope {
        serde_json::from_str(json).expect("a valid envelope")
    }

    fn codes(answers: &ItemAnswers) -> Vec<Option<i64>> {
        answers
            .items
            .iter()
            .map(|item| item.as_ref().map(|item| item.code))
            .collect()
    }

    const SENT: [(&str, &str); 3] = [("A", "{}"), ("B", "{}"), ("C", "{}")];

    #[test]
    fn entries_are_matched_by_ma_ho_so_not_by_position() {
        let shuffled = answer(
            r#"{"error_code":"0","result":[
                {"MaHoSo":"C","error_code":"2","message":"x"},
                {"MaHoSo":"A","error_code":"0"},
                {"MaHoSo":"B","error_code":3}]}"#,
        );
        let answers = item_answers(shuffled, &SENT).unwrap();
        assert_eq!(codes(&answers), [Some(0), Some(3), Some(2)]);
        assert_eq!(answers.ignored_entries, 0);
    }

    #[test]
    fn unknown_missing_and_doubled_entries_leave_items_unanswered() {
        let lying = answer(
            r#"{"error_code":"0","result":[
                {"MaHoSo":"Z","error_code":"0"},
                {"error_code":"0"},
                {"MaHoSo":"B","error_code":"0"},
                {"MaHoSo":"B","error_code":"0"},
                {"MaHoSo":"C","error_code":"00"}]}"#,
        );
        let answers = item_answers(lying, &SENT).unwrap();
        // A: no entry; B: two entries; C: its own.
        assert_eq!(codes(&answers), [None, None, Some(0)]);
        assert_eq!(answers.ignored_entries, 2);
    }

    #[test]
    fn without_result_the_overall_code_applies_to_every_item() {
        let answers = item_answers(answer(r#"{"error_code":"0"}"#), &SENT).unwrap();
        assert_eq!(codes(&answers), [Some(0), Some(0), Some(0)]);
        assert!(matches!(
            item_answers(answer(r#"{"error_code":"99","message":"x"}"#), &SENT),
            Err(PortalError::Answer { code: 99, .. })
        ));
    }
}
