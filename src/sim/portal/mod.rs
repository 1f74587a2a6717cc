//! The National Public Service Portal simulator: `POST /auth` and `POST /integration` exactly as
//! `../shared/spec/portal-api.md` says (its **[sim]** behaviours included), transport faults on demand
//! ([`faults`]), answers that lie about their entries or come late, and a record of everything it stored
//! and every call it received, for tests to inspect in-process or through `GET /_sim/stats` and
//! `GET /_sim/dossiers/{MaHoSo}` (what the portal holds for one dossier).
//!
//! Each call's storing is atomic: its items are applied under one lock, so two calls' effects never
//! interleave, and a late-stored call lands whole, at the end of its delay.
//!
//! Requests are read as raw JSON and checked field by field ([`validate`]), as a lenient real server
//! would: a malformed dossier is a per-item code 2 naming the field, never a refused request.

mod faults;
mod services;
mod store;
mod validate;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use faults::{AnswerFault, InjectedFault, PortalFaults};

use super::network::{Latency, RateLimit};
use store::{DossierRecord, Tables};

/// How the simulated portal is set up.
#[derive(Debug, Clone)]
pub struct PortalSimConfig {
    /// The account's user name on `/auth`.
    pub username: String,
    /// The account's password on `/auth`.
    pub password: String,
    /// The routing code `/auth` expects in its `dstcode` header: `None` accepts any non-empty value; a
    /// missing or empty header is always refused.
    pub dstcode: Option<String>,
    /// How long a session stays valid after `/auth` (portal-api.md: 30 minutes).
    pub session_ttl: Duration,
    /// The most items one `DongBoHoSoMC` or `CapNhatTienDoHoSoMC` call may carry (portal-api.md: 100).
    pub batch_limit: usize,
    /// The unit catalog (`DonViXuLy`); `None` knows every well-formed `ddd.dd.dd.Ldd` code.
    pub known_units: Option<HashSet<String>>,
    /// The procedure catalog (`MaTTHC`); `None` knows every well-formed `d.dddddd` code.
    pub known_procedures: Option<HashSet<String>>,
    /// The transport faults to inject; see [`PortalFaults::for_level`].
    pub faults: PortalFaults,
    /// Seed of the fault draws and session tokens, so that a run can be replayed.
    pub seed: u64,
    /// Keep every dossier and progress entry as received, and every call (`stored()`, `calls()`,
    /// `TraCuuHoSo` and `GET /_sim/dossiers/{MaHoSo}` show them whole). On by default, for the tests
    /// that read what the portal holds; `tthc-sync simulate portal` turns it off unless asked
    /// (`--record-payloads`), so that a million stored dossiers fit in memory: the portal then keeps a
    /// hash of each dossier and the fields it checks and serves (see `store.rs`).
    pub record_payloads: bool,
    /// The network's delay on every call (`/_sim/*` excepted); none by default.
    pub latency: Latency,
    /// The most calls per second (`/auth` and `/integration`, all sessions together) before the portal
    /// answers HTTP 429 with `Retry-After`; `None` for no limit.
    pub rate_limit: Option<u32>,
}

impl Default for PortalSimConfig {
    /// The spec's values and no faults.
    fn default() -> Self {
        PortalSimConfig {
            username: "demo".to_owned(),
            password: "demo-secret".to_owned(),
            dstcode: None,
            session_ttl: Duration::from_secs(30 * 60),
            batch_limit: 100,
            known_units: None,
            known_procedures: None,
            faults: PortalFaults::none(),
            seed: 0,
            record_payloads: true,
            latency: Latency::NONE,
            rate_limit: None,
        }
    }
}

/// What the portal holds for one `MaHoSo`.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredDossier {
    /// The last stored dossier, exactly as received.
    pub dossier: Value,
    /// How many times a version was stored (the create plus every accepted update).
    pub times_stored: usize,
    /// `NgayCapNhat`: when it was last stored, `yyyyMMddHHmmss` in Vietnam time.
    pub updated_at: String,
    /// Progress entries, unique by (`MaHoSo`, `ThoiDiemXuLy`, `NoiDungXuLy`), in arrival order; a repeat
    /// replaces the entry in place.
    pub progress: Vec<Value>,
    /// How many progress entries for it were accepted (code 0), repeats included.
    pub progress_received: usize,
    /// blake3 of the last stored dossier's JSON as received (first 16 bytes, hex).
    pub payload_hash: String,
}

/// One call the portal received.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// `"auth"` for `/auth`, else the request's `service` (empty when it had none).
    pub service: String,
    /// `isUpdating` of a `DongBoHoSoMC` call, when it was read.
    pub is_updating: Option<bool>,
    /// How many items `data` held (0 for services without `data`), read on arrival.
    pub items: usize,
    /// The per-item codes answered, in order (empty when the call was refused as a whole).
    pub item_codes: Vec<i64>,
    /// The overall `error_code` answered; `None` when a fault struck before processing.
    pub overall_code: Option<i64>,
    /// The fault injected into this call, if any.
    pub fault: Option<InjectedFault>,
    /// The lies told in this call's `result` (after processing, which they do not change).
    pub answer_faults: Vec<AnswerFault>,
    /// The `MaHoSo` of each item of `data`, in order, read on arrival (empty when there was no `data`).
    pub ma_ho_so: Vec<String>,
    /// When the call arrived.
    pub at: jiff::Timestamp,
    /// When it was processed (for a late store, `late_delay` after `at`); `None` when it was not.
    pub processed_at: Option<jiff::Timestamp>,
}

/// The simulated portal. Cloning is cheap: clones share one state.
#[derive(Clone)]
pub struct PortalSim {
    shared: Arc<Shared>,
}

struct Shared {
    config: PortalSimConfig,
    state: Mutex<SimState>,
}

struct SimState {
    /// Session token → when it expires.
    sessions: HashMap<String, Instant>,
    dossiers: HashMap<String, DossierRecord>,
    /// The unit codes and procedures compact records point to.
    tables: Tables,
    /// (DonViXuLy, day of NgayTiepNhan `yyyyMMdd`) → stored dossiers, kept up to date on every store so
    /// that `ThongKeHoSoDongBo` costs no scan.
    day_counts: BTreeMap<(String, String), i64>,
    /// Every call, when payloads are recorded.
    calls: Vec<CallRecord>,
    calls_total: usize,
    calls_per_service: BTreeMap<String, usize>,
    /// Calls answered 429 by the rate limit (not the injected fault).
    rejected_429: u64,
    rate_limit: Option<RateLimit>,
    /// Draws the network latency of each call; apart from `rng`, so that a latency changes no other draw.
    latency_rng: ChaCha8Rng,
    faults_injected: BTreeMap<&'static str, usize>,
    faults: PortalFaults,
    catalogs: validate::Catalogs,
    rng: ChaCha8Rng,
    /// Late-store calls held, not processed yet.
    late_waiting: usize,
}

impl PortalSim {
    pub fn new(config: PortalSimConfig) -> Self {
        let state = SimState {
            sessions: HashMap::new(),
            dossiers: HashMap::new(),
            tables: Tables::default(),
            day_counts: BTreeMap::new(),
            calls: Vec::new(),
            calls_total: 0,
            calls_per_service: BTreeMap::new(),
            rejected_429: 0,
            rate_limit: config.rate_limit.map(RateLimit::new),
            latency_rng: ChaCha8Rng::seed_from_u64(config.seed ^ 0x1a7e_0c1e),
            faults_injected: BTreeMap::new(),
            faults: config.faults.clone(),
            catalogs: validate::Catalogs {
                units: config.known_units.clone().map(Arc::new),
                procedures: config.known_procedures.clone().map(Arc::new),
            },
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            late_waiting: 0,
        };
        PortalSim {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(state),
            }),
        }
    }

    /// Serves `POST /auth`, `POST /integration` and `GET /_sim/stats` on `listener` until `shutdown`.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let app = Router::new()
            .route("/auth", post(auth_handler))
            .route("/integration", post(integration_handler))
            .route("/_sim/stats", get(stats_handler))
            .route("/_sim/dossiers/{ma_ho_so}", get(dossier_handler))
            .layer(DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(AppState {
                sim: self.clone(),
                shutdown: shutdown.clone(),
            });
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }

    /// Every stored dossier by `MaHoSo`.
    pub fn stored(&self) -> HashMap<String, StoredDossier> {
        let state = self.lock();
        state
            .dossiers
            .iter()
            .map(|(code, record)| (code.clone(), record.stored(code, &state.tables)))
            .collect()
    }

    /// One stored dossier.
    pub fn stored_dossier(&self, ma_ho_so: &str) -> Option<StoredDossier> {
        let state = self.lock();
        state
            .dossiers
            .get(ma_ho_so)
            .map(|record| record.stored(ma_ho_so, &state.tables))
    }

    /// Forgets stored dossiers (and their progress), as a portal restored from an old backup would:
    /// its counts drop with them. Returns how many it held.
    pub fn forget(&self, codes: &[String]) -> usize {
        let mut state = self.lock();
        let mut forgotten = 0;
        for code in codes {
            if let Some(record) = state.dossiers.remove(code) {
                let bucket = record.held.day_bucket(&state.tables);
                if let Some(count) = state.day_counts.get_mut(&bucket) {
                    *count -= 1;
                }
                forgotten += 1;
            }
        }
        forgotten
    }

    /// Late-store calls held and not processed yet.
    pub fn late_calls_waiting(&self) -> usize {
        self.lock().late_waiting
    }

    /// Test hook: overwrites one top-level field of a stored dossier (as a portal-side bug or an old
    /// version landing last would), without counting it as a stored version. False when the portal does
    /// not hold the dossier, or holds it compact (payloads not recorded).
    pub fn overwrite_field(&self, ma_ho_so: &str, field: &str, value: Value) -> bool {
        let mut state = self.lock();
        let held = state
            .dossiers
            .get_mut(ma_ho_so)
            .map(|record| &mut record.held);
        match held {
            Some(store::Held::Full(dossier)) => match dossier.as_object_mut() {
                Some(fields) => {
                    fields.insert(field.to_owned(), value);
                    true
                }
                None => false,
            },
            _ => false,
        }
    }

    /// How many dossiers are stored.
    pub fn stored_count(&self) -> usize {
        self.lock().dossiers.len()
    }

    /// How many times a version of `ma_ho_so` was stored (creates plus accepted updates; 0 if unknown).
    pub fn dossier_versions_received(&self, ma_ho_so: &str) -> usize {
        self.lock()
            .dossiers
            .get(ma_ho_so)
            .map_or(0, |record| record.times_stored as usize)
    }

    /// Every call received, in arrival order (none unless payloads are recorded).
    pub fn calls(&self) -> Vec<CallRecord> {
        self.lock().calls.clone()
    }

    /// How many calls of `service` were received (`"auth"` for `/auth`), faulted ones included.
    pub fn call_count(&self, service: &str) -> usize {
        self.lock()
            .calls_per_service
            .get(service)
            .copied()
            .unwrap_or(0)
    }

    /// Replaces the fault rates (the outage switch included).
    pub fn set_faults(&self, faults: PortalFaults) {
        self.lock().faults = faults;
    }

    /// Turns the "portal down" switch on or off: while on, every call answers HTTP 503.
    pub fn set_outage(&self, outage: bool) {
        self.lock().faults.outage = outage;
    }

    /// Ends every session, as if they had all expired: the next call of each client answers `-1`.
    pub fn expire_all_sessions(&self) {
        self.lock().sessions.clear();
    }

    /// Replaces the unit catalog (`None`: every well-formed code is known).
    pub fn set_known_units(&self, units: Option<HashSet<String>>) {
        self.lock().catalogs.units = units.map(Arc::new);
    }

    /// Replaces the procedure catalog (`None`: every well-formed code is known).
    pub fn set_known_procedures(&self, procedures: Option<HashSet<String>>) {
        self.lock().catalogs.procedures = procedures.map(Arc::new);
    }

    /// What `GET /_sim/stats` answers.
    pub fn stats(&self) -> Value {
        let state = self.lock();
        let progress_entries: usize = state
            .dossiers
            .values()
            .map(DossierRecord::progress_count)
            .sum();
        json!({
            "stored": state.dossiers.len(),
            "progress_entries": progress_entries,
            "sessions": state.sessions.len(),
            "calls_total": state.calls_total,
            "calls": state.calls_per_service,
            "rejected429": state.rejected_429,
            "faults_injected": state.faults_injected,
            "late_calls_waiting": state.late_waiting,
        })
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock leaves plain data behind; the simulator keeps serving.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn config(&self) -> &PortalSimConfig {
        &self.shared.config
    }

    /// Draws this call's fault and counts it.
    fn draw_fault(&self) -> (Option<InjectedFault>, PortalFaults) {
        let mut state = self.lock();
        let state = &mut *state;
        let fault = state.faults.draw(&mut state.rng);
        if let Some(fault) = fault {
            *state.faults_injected.entry(fault.name()).or_default() += 1;
        }
        (fault, state.faults.clone())
    }

    /// Draws the late fault of a delivery call that no transport fault struck, and counts it.
    fn draw_late(&self) -> Option<InjectedFault> {
        let mut state = self.lock();
        let state = &mut *state;
        let fault = state.faults.draw_late(&mut state.rng);
        if let Some(fault) = fault {
            *state.faults_injected.entry(fault.name()).or_default() += 1;
        }
        fault
    }

    /// Processes a request that got through (the service's effect, answer faults included) and records
    /// the call; returns the answer.
    fn process(&self, request: Option<Value>, mut record: CallRecord) -> Value {
        record.processed_at = Some(jiff::Timestamp::now());
        let mut answer = self.integrate(request, &mut record);
        if record.is_delivery() {
            self.spoil_answer(&mut answer, &mut record);
        }
        record.overall_code = answer.get("error_code").and_then(validate::parse_code);
        self.record(record);
        answer
    }

    fn record(&self, record: CallRecord) {
        let mut state = self.lock();
        *state
            .calls_per_service
            .entry(record.service.clone())
            .or_default() += 1;
        state.calls_total += 1;
        if self.config().record_payloads {
            state.calls.push(record);
        }
    }
}

#[derive(Clone)]
struct AppState {
    sim: PortalSim,
    shutdown: CancellationToken,
}

/// The network in front of the portal: the call's latency, then the rate limit. Returns the 429 answer
/// of a call beyond the limit: `Retry-After` in whole seconds (portal-api.md 2.1, "Transport"), nothing
/// processed, nothing recorded but the `rejected429` count.
async fn network(app: &AppState) -> Option<Response> {
    let latency = app.sim.config().latency;
    if !latency.is_none() {
        let delay = latency.draw(&mut app.sim.lock().latency_rng);
        wait_or_shutdown(app, delay).await;
    }
    let retry_after = {
        let mut state = app.sim.lock();
        let verdict = state
            .rate_limit
            .as_mut()
            .map(|limit| limit.take(std::time::Instant::now()));
        match verdict {
            Some(Err(seconds)) => {
                state.rejected_429 += 1;
                seconds
            }
            _ => return None,
        }
    };
    Some(too_many_requests(retry_after))
}

/// HTTP 429 with `Retry-After: {seconds}`.
fn too_many_requests(seconds: u64) -> Response {
    let mut response = (StatusCode::TOO_MANY_REQUESTS, "Too Many Requests").into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

async fn auth_handler(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = network(&app).await {
        return refused;
    }
    let mut record = CallRecord::new("auth".to_owned());
    let (fault, timing) = app.sim.draw_fault();
    record.fault = fault;
    if let Some(fault) = fault.filter(|fault| !fault.processed()) {
        app.sim.record(record);
        return before_processing(&app, fault, &timing).await;
    }
    let dstcode = headers
        .get("dstcode")
        .and_then(|value| value.to_str().ok())
        .map(str::trim);
    record.processed_at = Some(jiff::Timestamp::now());
    let answer = app.sim.authenticate(dstcode, &body);
    record.overall_code = answer.get("error_code").and_then(validate::parse_code);
    app.sim.record(record);
    after_processing(&app, answer, fault, &timing).await
}

async fn integration_handler(State(app): State<AppState>, body: Bytes) -> Response {
    if let Some(refused) = network(&app).await {
        return refused;
    }
    let request: Option<Value> = serde_json::from_slice(&body).ok();
    let service = request
        .as_ref()
        .and_then(|request| request.get("service"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut record = CallRecord::new(service);
    record.read_items(request.as_ref());
    let (mut fault, timing) = app.sim.draw_fault();
    if let Some(fault) = fault.filter(|fault| !fault.processed()) {
        record.fault = Some(fault);
        app.sim.record(record);
        return before_processing(&app, fault, &timing).await;
    }
    if fault.is_none() && record.is_delivery() {
        fault = app.sim.draw_late();
    }
    record.fault = fault;
    if fault == Some(InjectedFault::LateStore) {
        return late_store(&app, request, record, timing.late_delay).await;
    }
    let answer = app.sim.process(request, record);
    after_processing(&app, answer, fault, &timing).await
}

/// Holds a request for `delay`, then processes and answers it. The wait and the processing run in a
/// task of their own, so a client that gives up (drops the connection) does not cancel them: its batch
/// lands all the same, after whatever was stored meanwhile. A simulator stopping meanwhile processes
/// nothing.
async fn late_store(
    app: &AppState,
    request: Option<Value>,
    record: CallRecord,
    delay: Duration,
) -> Response {
    let (sim, shutdown) = (app.sim.clone(), app.shutdown.clone());
    sim.lock().late_waiting += 1;
    let held = tokio::spawn(async move {
        let stopped = tokio::select! {
            _ = tokio::time::sleep(delay) => false,
            _ = shutdown.cancelled() => true,
        };
        sim.lock().late_waiting -= 1;
        if stopped {
            sim.record(record);
            return None;
        }
        Some(sim.process(request, record))
    });
    match held.await {
        Ok(Some(answer)) => json_response(&answer),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response(),
    }
}

async fn stats_handler(State(app): State<AppState>) -> Response {
    json_response(&app.sim.stats())
}

/// `GET /_sim/dossiers/{MaHoSo}`: what the portal holds for one dossier (404 when nothing).
async fn dossier_handler(State(app): State<AppState>, Path(ma_ho_so): Path<String>) -> Response {
    match app.sim.stored_dossier(&ma_ho_so) {
        None => (StatusCode::NOT_FOUND, "Hồ sơ không tồn tại").into_response(),
        Some(stored) => json_response(&json!({
            "MaHoSo": ma_ho_so,
            "dossier": stored.dossier,
            "NgayCapNhat": stored.updated_at,
            "times_stored": stored.times_stored,
            "progress": stored.progress,
            "progress_received": stored.progress_received,
            "payload_hash": stored.payload_hash,
        })),
    }
}

impl CallRecord {
    fn new(service: String) -> Self {
        CallRecord {
            service,
            is_updating: None,
            items: 0,
            item_codes: Vec::new(),
            overall_code: None,
            fault: None,
            answer_faults: Vec::new(),
            ma_ho_so: Vec::new(),
            at: jiff::Timestamp::now(),
            processed_at: None,
        }
    }

    /// Notes how many items the request's `data` holds and their `MaHoSo`, before any fault strikes.
    fn read_items(&mut self, request: Option<&Value>) {
        let Some(Value::Array(items)) = request.and_then(|request| request.get("data")) else {
            return;
        };
        self.items = items.len();
        self.ma_ho_so = items
            .iter()
            .map(|item| {
                item.get("MaHoSo")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
    }

    /// A call that delivers items (`DongBoHoSoMC`, `CapNhatTienDoHoSoMC`): the only ones answer and late
    /// faults strike.
    fn is_delivery(&self) -> bool {
        matches!(
            self.service.as_str(),
            "DongBoHoSoMC" | "CapNhatTienDoHoSoMC"
        )
    }
}

/// The answer of a fault that strikes before the request is processed.
async fn before_processing(
    app: &AppState,
    fault: InjectedFault,
    timing: &PortalFaults,
) -> Response {
    match fault {
        InjectedFault::TooManyRequests => too_many_requests(timing.retry_after_seconds),
        InjectedFault::Outage => {
            (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response()
        }
        InjectedFault::ServerError(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (
                status,
                format!("<html><body><h1>{status}</h1></body></html>"),
            )
                .into_response()
        }
        InjectedFault::NotJson => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            "<html><body>Hệ thống đang bảo trì, vui lòng thử lại sau.</body></html>",
        )
            .into_response(),
        _ => dropped_connection(app, timing.timeout_delay).await,
    }
}

/// The answer of a processed request, spoiled by `fault` if it is one that strikes after processing.
async fn after_processing(
    app: &AppState,
    answer: Value,
    fault: Option<InjectedFault>,
    timing: &PortalFaults,
) -> Response {
    match fault {
        Some(InjectedFault::Slow) => {
            wait_or_shutdown(app, timing.slow_delay).await;
            json_response(&answer)
        }
        Some(InjectedFault::CutBody) => {
            let bytes = serde_json::to_vec(&answer).unwrap_or_default();
            // Half of a JSON object never closes it, so the body cannot parse.
            let cut = bytes[..bytes.len() / 2].to_vec();
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                cut,
            )
                .into_response()
        }
        Some(InjectedFault::LateAnswer) => {
            wait_or_shutdown(app, timing.late_delay).await;
            json_response(&answer)
        }
        Some(InjectedFault::TimeoutAfterProcessing) => {
            dropped_connection(app, timing.timeout_delay).await
        }
        _ => json_response(&answer),
    }
}

/// Holds the connection silent for `delay`, then breaks it mid-answer.
async fn dropped_connection(app: &AppState, delay: Duration) -> Response {
    wait_or_shutdown(app, delay).await;
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("simulated dropped connection"))
    });
    Response::new(Body::from_stream(failing))
}

async fn wait_or_shutdown(app: &AppState, delay: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = app.shutdown.cancelled() => {}
    }
}

fn json_response(answer: &Value) -> Response {
    let bytes = serde_json::to_vec(answer).unwrap_or_default();
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        bytes,
    )
        .into_response()
}
