//! The status server (axum): `/healthz`, `/readyz`, `/metrics`, the operators' dashboard (`/`, and
//! `/units/{unit}/failures`), and the same data as JSON under `/api/v1/`. Bound to loopback it asks for
//! nothing; bound elsewhere every request needs the bearer token of `status.token_file`.
//!
//! Nothing here prints a raw record or payload: unit lines hold codes and counts, and failure rows hold
//! findings whose values were masked when the dossier was normalized.

mod dashboard;
mod data;

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

use crate::app::App;
use crate::reconcile::render::{self, Lang};
use crate::store::DossierFilter;

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

/// Binds `status.listen` and serves until [`StatusServer::stop`]. A non-loopback address without a token
/// is a startup error naming `status.token_file`.
pub async fn start(app: Arc<App>, shutdown: CancellationToken) -> anyhow::Result<StatusServer> {
    let settings = &app.settings.status;
    let address = settings.address()?;
    let token = settings.token()?;
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| {
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
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/report", get(report_json))
        .route("/api/v1/units/{unit}/failures", get(failures_json))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state);
    let stop = CancellationToken::new();
    let stopping = stop.clone();
    let serving = tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stopping.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(error = %error, "the status server stopped");
        }
    });
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
        match self.lang.as_deref() {
            Some("en") => Lang::En,
            _ => Lang::Vi,
        }
    }
}

async fn dashboard_page(
    State(state): State<Arc<StatusState>>,
    Query(query): Query<LangQuery>,
) -> Response {
    let lang = query.lang();
    let view = match data::dashboard(&state.app, &state.shutdown).await {
        Ok(view) => view,
        Err(error) => return internal(error),
    };
    let throughput = state
        .throughput
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .sample(state.app.metrics.accepted_total());
    Html(dashboard::page(
        &view,
        throughput,
        state.app.settings.status.refresh_seconds,
        lang,
    ))
    .into_response()
}

async fn failures_page(
    State(state): State<Arc<StatusState>>,
    Path(unit): Path<String>,
    Query(query): Query<LangQuery>,
) -> Response {
    let filter = DossierFilter {
        unit: Some(unit.clone()),
        ..DossierFilter::default()
    };
    match state.app.store.failures(&filter, FAILURES_LIMIT).await {
        Ok(failures) => Html(dashboard::failures_page(
            &unit,
            &failures,
            FAILURES_LIMIT,
            query.lang(),
        ))
        .into_response(),
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
    match data::unit_lines(&state.app, &from, &to, query.unit.as_deref()).await {
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
    let filter = DossierFilter {
        unit: Some(unit),
        ..DossierFilter::default()
    };
    match state.app.store.failures(&filter, FAILURES_LIMIT).await {
        Ok(failures) => {
            axum::Json(render::failures_json(&failures, Timestamp::now())).into_response()
        }
        Err(error) => internal(error.into()),
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
