//! The status server (axum): `/healthz`, `/readyz`, `/metrics`, the operators' dashboard (`/`, and
//! `/units/{unit}/failures`), and the same data as JSON under `/api/v1/`. Bound to loopback it asks for
//! nothing; bound elsewhere every request needs the bearer token of `status.token_file`.
//!
//! Nothing here prints a raw record or payload: unit lines hold codes and counts, and failure rows hold
//! findings whose values were masked when the dossier was normalized.

mod dashboard;
mod data;
mod serve;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use jiff::Timestamp;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::actors::Actor;
use crate::app::App;
use crate::reconcile::select::{LedgerIndex, SelectError};
use crate::report::render::{self, Lang};
use crate::unit_key::UnitKey;

/// Failing dossiers listed on a unit's page and in its JSON, at most.
const FAILURES_LIMIT: usize = 1000;

/// A running status server.
pub struct StatusServer {
    /// The address it listens on (the configured one, with the port the system chose for port 0).
    pub address: SocketAddr,
    stop: CancellationToken,
    serving: tokio::task::JoinHandle<()>,
}

impl StatusServer {
    /// Stops accepting requests and waits for those in progress.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.serving.await;
    }
}

struct StatusState {
    app: Arc<App>,
    /// Fires when the daemon begins to stop: `/readyz` answers 503 from then on.
    shutdown: CancellationToken,
    token: Option<String>,
    throughput: Mutex<dashboard::Throughput>,
}

/// How often the server samples the accepted counter for the throughput tile.
const THROUGHPUT_SAMPLE: Duration = Duration::from_secs(10);

/// Binds `status.listen` and serves until [`StatusServer::stop`]. A non-loopback address without a token
/// is a startup error naming `status.token_file`.
pub async fn start(app: Arc<App>, shutdown: CancellationToken) -> anyhow::Result<StatusServer> {
    let settings = &app.settings.status;
    let address = settings.address()?;
    let token = settings.token()?;
    let limits = serve::Limits {
        max_connections: settings.max_connections,
        header_read_timeout: Duration::from_secs(settings.header_read_timeout_seconds),
        idle_timeout: Duration::from_secs(settings.idle_timeout_seconds),
    };
    let listener = serve::listen(address).with_context(|| {
        format!("configuration key `status.listen`: cannot listen on {address}")
    })?;
    let address = listener.local_addr()?;
    if token.is_some() {
        tracing::info!(%address, "status server listening; every request needs the bearer token of status.token_file");
    } else {
        tracing::info!(%address, "status server listening on loopback; no token asked");
    }
    let state = Arc::new(StatusState {
        app,
        shutdown,
        token,
        throughput: Mutex::new(dashboard::Throughput::default()),
    });
    let router = Router::new()
        .route("/", get(dashboard_page))
        .route("/units/{unit}/failures", get(failures_page))
        .route("/units/{unit}/corrections.xlsx", get(corrections_workbook))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/report", get(report_json))
        .route("/api/v1/units/{unit}/failures", get(failures_json))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state.clone());
    let stop = CancellationToken::new();
    // Throughput is measured by the server, on its own clock, not between two views of the page.
    let sampling = stop.clone();
    let sampled = state.clone();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(THROUGHPUT_SAMPLE);
        loop {
            tokio::select! {
                _ = sampling.cancelled() => break,
                _ = ticks.tick() => {
                    let accepted = sampled.app.metrics.accepted_total();
                    sampled
                        .throughput
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .sample(std::time::Instant::now(), accepted);
                }
            }
        }
    });
    let serving = tokio::spawn(serve::serve(listener, router, limits, stop.clone()));
    Ok(StatusServer {
        address,
        stop,
        serving,
    })
}

/// Asks for `Authorization: Bearer <token>` when a token is configured. The token is never logged.
async fn authorize(
    State(state): State<Arc<StatusState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(expected) = &state.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !same_secret(given.trim().as_bytes(), expected.as_bytes()) {
            let mut response =
                (StatusCode::UNAUTHORIZED, "a bearer token is required\n").into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tthc-sync\""),
            );
            return response;
        }
    }
    next.run(request).await
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    let mut difference = given.len() ^ expected.len();
    for (index, byte) in expected.iter().enumerate() {
        difference |= usize::from(byte ^ given.get(index).copied().unwrap_or(0));
    }
    difference == 0
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<Arc<StatusState>>) -> Response {
    match data::readiness(&state.app, &state.shutdown).await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reasons) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", reasons.join("; ")),
        )
            .into_response(),
    }
}

async fn metrics(State(state): State<Arc<StatusState>>) -> Response {
    let snapshot = data::snapshot(&state.app, &state.shutdown).await;
    match state.app.metrics.encode(&snapshot) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            )],
            text,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct LangQuery {
    lang: Option<String>,
}

impl LangQuery {
    fn lang(&self) -> Lang {
        lang_of(self.lang.as_deref())
    }
}

fn lang_of(text: Option<&str>) -> Lang {
    match text {
        Some("en") => Lang::En,
        _ => Lang::Vi,
    }
}

#[derive(Debug, Deserialize)]
struct DashboardQuery {
    lang: Option<String>,
    /// 7, 30 or 90 reception days; by default `reconcile.window_days` when it is one of them, else 7.
    days: Option<u32>,
    /// Only units with reasons for this actor (`unit`, `administrator`, `portal`, `nobody`).
    actor: Option<String>,
}

async fn dashboard_page(
    State(state): State<Arc<StatusState>>,
    Query(query): Query<DashboardQuery>,
) -> Response {
    let lang = lang_of(query.lang.as_deref());
    let window = state.app.settings.reconcile.window_days;
    let default_days = if data::DASHBOARD_PERIODS.contains(&window) {
        window
    } else {
        data::DASHBOARD_PERIODS[0]
    };
    let days = match query.days {
        None => default_days,
        Some(days) if data::DASHBOARD_PERIODS.contains(&days) => days,
        Some(_) => {
            return (StatusCode::BAD_REQUEST, "days must be 7, 30 or 90\n").into_response();
        }
    };
    let actor = match query.actor.as_deref() {
        None | Some("") => None,
        Some(text) => match Actor::ALL.iter().find(|actor| actor.as_str() == text) {
            Some(actor) => Some(*actor),
            None => {
                return (
                    StatusCode::BAD_REQUEST,
                    "actor must be unit, administrator, portal or nobody\n",
                )
                    .into_response();
            }
        },
    };
    let view = match data::dashboard(&state.app, &state.shutdown, days).await {
        Ok(view) => view,
        Err(error) => return internal(error),
    };
    let throughput = state
        .throughput
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .per_minute();
    Html(dashboard::page(
        &view,
        throughput,
        state.app.settings.status.refresh_seconds,
        actor,
        lang,
    ))
    .into_response()
}

/// The filter for a unit's failures, or the answer for a key that is malformed (400) or unknown (404).
async fn unit_failures(
    state: &StatusState,
    unit: &str,
) -> Result<(LedgerIndex, Vec<crate::store::FailureRow>), Response> {
    let index = LedgerIndex::read(state.app.store.as_ref())
        .await
        .map_err(|error| internal(error.into()))?;
    let filter = match index.filter(Some(unit), None, None, None) {
        Ok(filter) => filter,
        Err(error @ SelectError::BadUnit(_)) => {
            return Err((StatusCode::BAD_REQUEST, format!("{error}\n")).into_response());
        }
        Err(SelectError::UnknownUnit { key, .. }) => {
            return Err((
                StatusCode::NOT_FOUND,
                format!("unit {key} is not in the ledger\n"),
            )
                .into_response());
        }
        Err(error) => return Err(internal(error.into())),
    };
    match state.app.store.failures(&filter, FAILURES_LIMIT).await {
        Ok(failures) => Ok((index, failures)),
        Err(error) => Err(internal(error.into())),
    }
}

async fn failures_page(
    State(state): State<Arc<StatusState>>,
    Path(unit): Path<String>,
    Query(query): Query<LangQuery>,
) -> Response {
    match unit_failures(&state, &unit).await {
        Ok((index, failures)) => Html(dashboard::failures_page(
            &unit,
            &failures,
            index.owners(),
            FAILURES_LIMIT,
            query.lang(),
        ))
        .into_response(),
        Err(response) => response,
    }
}

/// A unit's correction workbook (`failures --by-unit --format xlsx`), for the dashboard's download link.
async fn corrections_workbook(
    State(state): State<Arc<StatusState>>,
    Path(unit): Path<String>,
) -> Response {
    let (index, failures) = match unit_failures(&state, &unit).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    match render::corrections_workbook(&unit, &failures, index.owners()) {
        Ok(bytes) => {
            let disposition = format!(
                "attachment; filename=\"{}\"",
                render::workbook_file_name(&unit)
            );
            let mut response = bytes.into_response();
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                ),
            );
            if let Ok(value) = HeaderValue::from_str(&disposition) {
                headers.insert(header::CONTENT_DISPOSITION, value);
            }
            response
        }
        Err(error) => internal(error.into()),
    }
}

#[derive(Debug, Deserialize)]
struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
    unit: Option<String>,
}

async fn report_json(
    State(state): State<Arc<StatusState>>,
    Query(query): Query<ReportQuery>,
) -> Response {
    let (from, to) = match data::period(query.from.as_deref(), query.to.as_deref()) {
        Ok(period) => period,
        Err(problem) => return (StatusCode::BAD_REQUEST, format!("{problem}\n")).into_response(),
    };
    let unit = match query.unit.as_deref().map(UnitKey::parse).transpose() {
        Ok(unit) => unit,
        Err(error) => {
            return (StatusCode::BAD_REQUEST, format!("unit: {error}\n")).into_response();
        }
    };
    match data::unit_lines(&state.app, &from, &to, unit.as_ref()).await {
        Ok(lines) => axum::Json(render::report_json(
            &lines,
            &from,
            &to,
            Timestamp::now(),
            &[],
        ))
        .into_response(),
        Err(error) => internal(error),
    }
}

async fn failures_json(
    State(state): State<Arc<StatusState>>,
    Path(unit): Path<String>,
) -> Response {
    match unit_failures(&state, &unit).await {
        Ok((index, failures)) => axum::Json(render::failures_json(
            &failures,
            index.owners(),
            Timestamp::now(),
        ))
        .into_response(),
        Err(response) => response,
    }
}

/// A 500 that names the problem without detail in the body; the detail goes to the log once.
fn internal(error: anyhow::Error) -> Response {
    tracing::warn!(error = %format!("{error:#}"), "the status server cannot read the ledger");
    let mut headers = HeaderMap::new();
    headers.insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECONDS),
    );
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        headers,
        "the ledger cannot be read now\n",
    )
        .into_response()
}

const RETRY_AFTER_SECONDS: &str = "5";

/// How long the readiness check waits for the ledger before calling it unresponsive.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);
