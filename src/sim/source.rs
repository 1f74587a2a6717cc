//! The simulated provincial one-stop system: the HTTP API of source-api.md over a generated dataset, with
//! every quirk of its section 6 switchable, and control methods for tests and the demo (snapshot, live
//! mutation, fault settings, counters).
//!
//! It holds no generated record: per row it keeps the plan's few bytes (id parts, `updatedDate`, agency,
//! reception day, flags; [`Plan`]) and the feed's order as a sorted list of (`updatedDate`, row), and writes
//! each record from the seed when it is served. Only records that changed since (live changes, moving
//! pages, tests' edits) are kept whole. So a million dossiers fit in about 100 MB.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use jiff::{SignedDuration, Timestamp, civil};
use rand::seq::index::sample;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::FaultLevel;
use super::generator::{
    GeneratorConfig, Plan, PlannedDossier, SimRng, evolve, format_source_date,
    parse_source_date_text,
};
use super::network::Latency;
use super::wire::{AgencyItem, DossierIdItem, Page, ProcedureItem};

/// The largest page the source serves; a larger `size` is answered 400.
pub const MAX_PAGE_SIZE: usize = 500;

/// The quirks of source-api.md section 6 that the server produces (the data quirks 5, 6 and 7 and the tie
/// block are the generator's: see [`GeneratorConfig`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFaults {
    /// Quirk 1, moving pages: on every request for a page after the first, this share of the page size is
    /// touched among the rows already served to that query (same `updated-from`), which moves them to the
    /// end; at most this share of the query's rows is moved per `updated-from` value. 0 turns it off.
    pub moving_pages: f64,
    /// Quirk 2: probability that a request orders rows of equal `updatedDate` differently from the usual
    /// (by id) order.
    pub tie_reorder: f64,
    /// Quirk 3: share of rows changed by the live mutator that get an `updatedDate` in the past.
    pub late_visibility: f64,
    /// Quirk 3: how far in the past such a row is stamped, at most (at least 5 s).
    pub late_max: Duration,
    /// Quirk 4: probability that a page after the first starts with the previous page's last row again.
    pub duplicates: f64,
    /// Quirk 8: rows generated as hidden stay out of the feed until next updated. Off: they are served.
    pub hidden_rows: bool,
    /// Quirk 9: probability of an HTTP 500 or 503 on an API call.
    pub error_rate: f64,
    /// Quirk 9: probability that an API call is answered only after `timeout_delay`.
    pub timeout_rate: f64,
    /// Quirk 9: the delay of such an answer; longer than any sane client timeout.
    pub timeout_delay: Duration,
    /// Quirk 9: probability of a 200 whose JSON body is cut short.
    pub truncated_rate: f64,
    /// Quirk 9: probability of a 200 page whose `content` is missing.
    pub missing_content_rate: f64,
    /// Quirk 9: a token lifetime that overrides [`SourceSimConfig::token_ttl`] (short in harsh mode).
    pub token_ttl: Option<Duration>,
    /// Quirk 12: what feed pages say as `totalElements` instead of the truth.
    pub count_lie: CountLie,
    /// Quirk 12: feed pages say the opposite of the truth in `last`.
    pub last_lies: bool,
    /// Quirk 13: every search is answered as if `page` and `updated-from` were absent: the same first page
    /// of the feed, whatever was asked.
    pub ignore_paging: bool,
    /// Quirk 13: rows per feed page whatever `size` asked (more than asked, past the 500 limit).
    pub size_override: Option<usize>,
    /// Quirk 14: bytes of padding (a broken proxy) in every feed answer, streamed without a length.
    pub padding_bytes: usize,
}

/// What a lying gateway says as a feed page's `totalElements` (source-api.md quirk 12).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountLie {
    /// The truth.
    Truth,
    /// The truth, but never more than this.
    Capped(i64),
    /// Always this value (0, negative, `i64::MAX`, ...).
    Constant(i64),
    /// No `totalElements` at all.
    Missing,
}

/// Planted by [`SourceSim::plant_invalid_byte`] in a record's text and written as the single byte `0xFF`
/// (not UTF-8) when the record is served (source-api.md quirk 11). A private-use character the generator
/// never produces.
const INVALID_BYTE_MARKER: char = '\u{10FFFD}';

impl SourceFaults {
    /// No quirk at all.
    pub fn none() -> Self {
        SourceFaults {
            moving_pages: 0.0,
            tie_reorder: 0.0,
            late_visibility: 0.0,
            late_max: Duration::from_secs(120),
            duplicates: 0.0,
            hidden_rows: false,
            error_rate: 0.0,
            timeout_rate: 0.0,
            timeout_delay: Duration::from_secs(30),
            truncated_rate: 0.0,
            missing_content_rate: 0.0,
            token_ttl: None,
            count_lie: CountLie::Truth,
            last_lies: false,
            ignore_paging: false,
            size_override: None,
            padding_bytes: 0,
        }
    }

    /// The settings of each level.
    pub fn for_level(level: FaultLevel) -> Self {
        match level {
            FaultLevel::None => SourceFaults::none(),
            FaultLevel::Realistic => SourceFaults {
                moving_pages: 0.02,
                tie_reorder: 0.1,
                late_visibility: 0.3,
                late_max: Duration::from_secs(120),
                duplicates: 0.05,
                hidden_rows: true,
                error_rate: 0.02,
                timeout_rate: 0.005,
                timeout_delay: Duration::from_secs(30),
                truncated_rate: 0.01,
                missing_content_rate: 0.01,
                token_ttl: None,
                ..SourceFaults::none()
            },
            FaultLevel::Harsh => SourceFaults {
                moving_pages: 0.05,
                tie_reorder: 0.3,
                late_visibility: 0.6,
                late_max: Duration::from_secs(180),
                duplicates: 0.15,
                hidden_rows: true,
                error_rate: 0.10,
                timeout_rate: 0.03,
                timeout_delay: Duration::from_secs(30),
                truncated_rate: 0.05,
                missing_content_rate: 0.05,
                token_ttl: Some(Duration::from_secs(20)),
                ..SourceFaults::none()
            },
        }
    }
}

/// Everything the simulated source is built from.
#[derive(Debug, Clone)]
pub struct SourceSimConfig {
    /// The dataset.
    pub generator: GeneratorConfig,
    /// The quirks served.
    pub faults: SourceFaults,
    /// The one client that `POST /oauth/token` accepts.
    pub client_id: String,
    pub client_secret: String,
    /// Lifetime of an access token.
    pub token_ttl: Duration,
    /// Whether the background mutator runs from the start (see [`SourceSim::set_live_mutation`]).
    pub live_mutation: bool,
    /// How often the background mutator changes rows.
    pub mutation_interval: Duration,
    /// How many rows it changes each time.
    pub mutation_batch: usize,
    /// The moment the dataset is generated for; the wall clock when `None`.
    pub now: Option<Timestamp>,
    /// The network's delay on every API call (`/_sim/*` excepted); none by default.
    pub latency: Latency,
}

impl Default for SourceSimConfig {
    fn default() -> Self {
        SourceSimConfig::for_level(FaultLevel::Realistic)
    }
}

impl SourceSimConfig {
    /// Generator and faults both at `level`.
    pub fn for_level(level: FaultLevel) -> Self {
        SourceSimConfig {
            generator: GeneratorConfig::for_level(level),
            faults: SourceFaults::for_level(level),
            client_id: "demo".to_owned(),
            client_secret: "demo-secret".to_owned(),
            token_ttl: Duration::from_secs(300),
            live_mutation: false,
            mutation_interval: Duration::from_secs(2),
            mutation_batch: 3,
            now: None,
            latency: Latency::NONE,
        }
    }
}

/// One row as the simulator holds it now.
#[derive(Debug, Clone)]
pub struct SimRow {
    pub id: String,
    /// The current record, exactly as served.
    pub record: Value,
    /// The row's `updatedDate`.
    pub updated: Timestamp,
    /// Written by a bulk import and not updated since.
    pub hidden: bool,
    /// Served by the feed with the current faults (hidden rows are not, while `hidden_rows` is on).
    pub visible_in_feed: bool,
    /// The rejection code the generator made this record for.
    pub bad: Option<&'static str>,
    pub deleted: bool,
    pub cancelled: bool,
    /// The reception day (Vietnam time) the counts file it under, as made (not read from the record).
    pub reception_day: civil::Date,
}

/// Counters of the simulator, also served as `GET /_sim/stats`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourceStats {
    /// Every request except `/_sim/*`.
    pub requests_total: u64,
    pub token_requests: u64,
    pub search_requests: u64,
    pub dossier_requests: u64,
    pub agency_requests: u64,
    pub procedure_requests: u64,
    pub count_requests: u64,
    pub ids_requests: u64,
    /// 401 answers (bad client, missing, unknown or expired token).
    pub unauthorized: u64,
    /// 400 answers.
    pub bad_requests: u64,
    pub injected_errors: u64,
    pub injected_timeouts: u64,
    pub truncated_bodies: u64,
    pub missing_contents: u64,
    pub duplicated_rows: u64,
    pub moved_rows: u64,
    pub reordered_ties: u64,
    pub late_visible_rows: u64,
    /// Rows changed by `mutate_now`, the live mutator and moving pages.
    pub mutations: u64,
    pub rows_total: usize,
    pub rows_in_feed: usize,
    pub rows_hidden: usize,
    pub rows_deleted: usize,
    pub rows_cancelled: usize,
    pub rows_bad: usize,
    pub live_mutation: bool,
}

/// What the simulator holds of one row: the plan's few bytes and what changed since (the record itself is
/// written on demand, or kept in [`SimState::changed`] once it changed).
struct Row {
    planned: PlannedDossier,
    updated_ms: i64,
    hidden: bool,
    deleted: bool,
    cancelled: bool,
    /// The reception day (Vietnam time) the counts file the row under, as the generator made it and the
    /// live changes moved it: never read back from the record's (quirk-shaped) dates.
    reception_day: civil::Date,
    /// The agency the counts file the row under, as an index into the catalog ([`NO_AGENCY`] when the
    /// record names none, [`OTHER_AGENCY`] when it names one outside the catalog: see
    /// [`SimState::other_agencies`]). Kept with the row, so that the count and identifier endpoints do not
    /// look into every record on every request.
    agency: u16,
}

const NO_AGENCY: u16 = u16::MAX;
const OTHER_AGENCY: u16 = u16::MAX - 1;

/// A row's record, or what it is written from (outside the lock).
enum Pending {
    Changed(Box<str>),
    Planned(PlannedDossier),
}

impl Pending {
    fn record(self, plan: &Plan) -> Value {
        match self {
            // The text was written from a `Value` by `SimState::keep`: it reads back.
            Pending::Changed(text) => serde_json::from_str(&text).unwrap_or(Value::Null),
            Pending::Planned(planned) => plan.render(&planned).0,
        }
    }
}

struct SimState {
    /// Sorted by id, so that a row's position orders ties by id.
    rows: Vec<Row>,
    /// Row position of each generation index (ids carry the index).
    position_of_index: Vec<u32>,
    /// (updatedDate in ms, row position) of every row not hidden, sorted.
    visible: Vec<(i64, u32)>,
    /// The same of the hidden rows.
    hidden: Vec<(i64, u32)>,
    /// The records that changed since they were generated (live changes, moving pages, tests' edits), by
    /// row position, as JSON text (a fifth of a `Value`'s memory, which matters to a long `--live` run);
    /// every other record is written again from the plan when served.
    changed: HashMap<u32, Box<str>>,
    /// Agency id → index in the catalog.
    agency_index: HashMap<String, u16>,
    /// The agency id of rows whose record names one outside the catalog, by row position.
    other_agencies: HashMap<u32, String>,
    agencies: Vec<AgencyItem>,
    procedures: Vec<ProcedureItem>,
    faults: SourceFaults,
    tokens: HashMap<String, Instant>,
    tokens_issued: u64,
    /// Rows moved so far per `updated-from` value, and the most that value may see moved.
    moving_budgets: HashMap<String, (usize, usize)>,
    live_mutation: bool,
    /// How long `GET /pa/dossier/{id}` waits before it reads the row (see
    /// [`SourceSim::set_dossier_read_delay`]).
    dossier_read_delay: Duration,
    rng: SimRng,
    /// Draws the network latency of each call; apart from `rng`, so that a latency changes no other draw.
    latency_rng: SimRng,
    stats: SourceStats,
}

/// The simulated source. Cheap to clone: clones share one state.
#[derive(Clone)]
pub struct SourceSim {
    config: Arc<SourceSimConfig>,
    /// The dataset's catalogs and how to write each record (its dossiers moved into the rows).
    plan: Arc<Plan>,
    generated_at: Timestamp,
    state: Arc<Mutex<SimState>>,
}

impl std::fmt::Debug for SourceSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceSim")
            .field("generated_at", &self.generated_at)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Search,
    Dossier,
    Agency,
    Procedure,
    Count,
    Ids,
}

enum TransportFault {
    Error(StatusCode),
    Timeout,
    Truncate,
    MissingContent,
}

fn ms(timestamp: Timestamp) -> i64 {
    timestamp.as_millisecond()
}

fn timestamp_of(milliseconds: i64) -> Timestamp {
    Timestamp::from_millisecond(milliseconds).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A deterministic scramble of a row index, to order ties differently from the usual order.
fn scramble(value: u64, salt: u64) -> u64 {
    let mut x = value ^ salt;
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl SourceSim {
    /// Plans the dataset and builds the simulator; nothing listens until [`SourceSim::serve`]. No record
    /// is written here: each is written when served (see [`Plan`]).
    pub fn new(config: SourceSimConfig) -> SourceSim {
        let now = config.now.unwrap_or_else(Timestamp::now);
        let mut plan = Plan::new(&config.generator, now);
        let mut planned = std::mem::take(&mut plan.dossiers);
        planned.sort_unstable_by_key(PlannedDossier::id_order);
        let mut position_of_index = vec![0u32; planned.len()];
        let rows: Vec<Row> = planned
            .into_iter()
            .enumerate()
            .map(|(position, planned)| {
                position_of_index[planned.index as usize] = position as u32;
                Row {
                    updated_ms: planned.updated_ms,
                    hidden: planned.hidden(),
                    deleted: planned.deleted(),
                    cancelled: planned.cancelled(),
                    reception_day: planned.reception_day,
                    agency: planned.agency,
                    planned,
                }
            })
            .collect();
        let mut visible = Vec::with_capacity(rows.len());
        let mut hidden = Vec::new();
        for (position, row) in rows.iter().enumerate() {
            let key = (row.updated_ms, position as u32);
            if row.hidden {
                hidden.push(key);
            } else {
                visible.push(key);
            }
        }
        visible.sort_unstable();
        hidden.sort_unstable();
        let agencies = plan.agencies();
        let agency_index = agencies
            .iter()
            .enumerate()
            .map(|(at, agency)| (agency.id.clone(), at as u16))
            .collect();
        let state = SimState {
            rows,
            position_of_index,
            visible,
            hidden,
            changed: HashMap::new(),
            agency_index,
            other_agencies: HashMap::new(),
            procedures: plan.procedures().to_vec(),
            agencies,
            faults: config.faults.clone(),
            tokens: HashMap::new(),
            tokens_issued: 0,
            moving_budgets: HashMap::new(),
            live_mutation: config.live_mutation,
            dossier_read_delay: Duration::ZERO,
            rng: SimRng::seed_from_u64(config.generator.seed ^ 0x5eed_50c3),
            latency_rng: SimRng::seed_from_u64(config.generator.seed ^ 0x1a7e_0c1e),
            stats: SourceStats::default(),
        };
        SourceSim {
            config: Arc::new(config),
            plan: Arc::new(plan),
            generated_at: now,
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// The `now` the dataset was generated for.
    pub fn generated_at(&self) -> Timestamp {
        self.generated_at
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic while holding the lock cannot leave the state half-changed in a way that matters to a
        // simulator, so a poisoned lock is simply taken over.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every row, in id order, every record written: for tests and small datasets.
    pub fn snapshot(&self) -> Vec<SimRow> {
        let state = self.lock();
        (0..state.rows.len())
            .map(|position| {
                let row = &state.rows[position];
                SimRow {
                    id: row.planned.id(),
                    record: state.record(&self.plan, position as u32),
                    updated: timestamp_of(row.updated_ms),
                    hidden: row.hidden,
                    visible_in_feed: state.in_feed(row),
                    bad: row.planned.bad(),
                    deleted: row.deleted,
                    cancelled: row.cancelled,
                    reception_day: row.reception_day,
                }
            })
            .collect()
    }

    /// Evolves `n` random rows now: each gets `updatedDate` = now and moves to the end of the feed (a hidden
    /// row becomes visible). Returns their ids.
    pub fn mutate_now(&self, n: usize) -> Vec<String> {
        self.lock()
            .mutate(&self.plan, n, Some(false), Timestamp::now())
    }

    /// Like [`SourceSim::mutate_now`], but every row is made late-visible (quirk 3): its `updatedDate` is
    /// 5 s to `late_max` in the past, yet it becomes visible only now.
    pub fn mutate_now_late(&self, n: usize) -> Vec<String> {
        self.lock()
            .mutate(&self.plan, n, Some(true), Timestamp::now())
    }

    /// Evolves the rows with these ids now, as [`SourceSim::mutate_now`] does with random ones: a new
    /// version of each, stamped now, whose `note` also changes (so that its portal payload differs from
    /// every earlier version's, whatever its status). Returns the ids changed (unknown ids are left out).
    pub fn mutate_ids(&self, ids: &[String]) -> Vec<String> {
        let mut state = self.lock();
        let now = Timestamp::now();
        let mut changed = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(position) = state.position_of_id(id) {
                let version = state.stats.mutations + 1;
                let mut record = state.record(&self.plan, position);
                if let Some(object) = record.as_object_mut() {
                    object.insert(
                        "note".into(),
                        json!(format!("Cập nhật hồ sơ lần {version}")),
                    );
                }
                state.keep(position, &record);
                state.touch(&self.plan, position, now, now);
                changed.push(id.clone());
            }
        }
        changed
    }

    /// Makes every `GET /pa/dossier/{id}` wait this long before it reads the row (a loaded source): a
    /// client reading many dossiers one by one (`resync`, the reconciler's fetch) then takes long enough
    /// for the rows it read first to change meanwhile. Zero by default.
    pub fn set_dossier_read_delay(&self, delay: Duration) {
        self.lock().dossier_read_delay = delay;
    }

    /// Turns the background mutator (started by [`SourceSim::serve`]) on or off.
    pub fn set_live_mutation(&self, on: bool) {
        self.lock().live_mutation = on;
    }

    /// Replaces the fault settings.
    pub fn set_faults(&self, faults: SourceFaults) {
        self.lock().faults = faults;
    }

    /// The current fault settings.
    pub fn faults(&self) -> SourceFaults {
        self.lock().faults.clone()
    }

    /// Makes hidden rows visible in the feed without changing them (their old `updatedDate` stays, as if a
    /// bulk import finally reached the change log). Returns how many were hidden.
    pub fn unhide(&self, ids: &[String]) -> usize {
        let mut state = self.lock();
        let mut count = 0;
        for id in ids {
            if let Some(position) = state.position_of_id(id)
                && state.rows[position as usize].hidden
            {
                state.unlist(position);
                state.rows[position as usize].hidden = false;
                state.list(position);
                count += 1;
            }
        }
        count
    }

    /// Edits records in place, as if they had always been so (their `updatedDate` stays): how a test
    /// shapes a scenario before a client reads. `edit` returns whether it changed the record; returns
    /// how many it changed.
    pub fn rewrite(&self, mut edit: impl FnMut(&mut Value) -> bool) -> usize {
        let mut state = self.lock();
        let mut count = 0;
        for position in 0..state.rows.len() as u32 {
            let mut record = state.record(&self.plan, position);
            if edit(&mut record) {
                state.recount(position, &record);
                state.keep(position, &record);
                count += 1;
            }
        }
        count
    }

    /// Restamps the rows `ids` at `ahead` of the clock (source-api.md quirk 10), with a new version of each.
    /// Returns how many it found.
    pub fn stamp_ahead(&self, ids: &[String], ahead: SignedDuration) -> usize {
        let mut state = self.lock();
        let now = Timestamp::now();
        let stamp = now.checked_add(ahead).unwrap_or(now);
        let mut count = 0;
        for id in ids {
            if let Some(position) = state.position_of_id(id) {
                state.touch(&self.plan, position, now, stamp);
                count += 1;
            }
        }
        count
    }

    /// Plants a byte that is not UTF-8 (`0xFF`) in the summary of the row `id`, as an old import job
    /// leaves (source-api.md quirk 11); its `updatedDate` stays. Returns whether the row exists.
    pub fn plant_invalid_byte(&self, id: &str) -> bool {
        let mut state = self.lock();
        let Some(position) = state.position_of_id(id) else {
            return false;
        };
        let mut record = state.record(&self.plan, position);
        if let Some(object) = record.as_object_mut() {
            let summary = object
                .get("summary")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            object.insert(
                "summary".into(),
                json!(format!("{summary} {INVALID_BYTE_MARKER}")),
            );
        }
        state.keep(position, &record);
        true
    }

    /// Expires every token issued so far: the next call with one is answered 401.
    pub fn expire_tokens(&self) {
        let now = Instant::now();
        for expiry in self.lock().tokens.values_mut() {
            *expiry = now;
        }
    }

    /// API requests received (every endpoint except `/_sim/*`).
    pub fn request_count(&self) -> u64 {
        self.lock().stats.requests_total
    }

    /// All counters.
    pub fn stats(&self) -> SourceStats {
        self.lock().stats_now()
    }

    pub fn agencies(&self) -> Vec<AgencyItem> {
        self.lock().agencies.clone()
    }

    pub fn procedures(&self) -> Vec<ProcedureItem> {
        self.lock().procedures.clone()
    }

    /// Serves the API on `listener` until `shutdown` is cancelled; runs the live mutator meanwhile.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let local = shutdown.child_token();
        let app = router(AppState {
            sim: self.clone(),
            shutdown: local.clone(),
        });
        let mutator = tokio::spawn(live_mutation_loop(self.clone(), local.clone()));
        let result = axum::serve(listener, app)
            .with_graceful_shutdown(local.clone().cancelled_owned())
            .await;
        local.cancel();
        let _ = mutator.await;
        result
    }

    fn token_ttl(&self, state: &SimState) -> Duration {
        state.faults.token_ttl.unwrap_or(self.config.token_ttl)
    }
}

impl SimState {
    fn in_feed(&self, row: &Row) -> bool {
        !(row.hidden && self.faults.hidden_rows)
    }

    /// The row an id names: its generation index is in the id, and the whole id must match.
    fn position_of_id(&self, id: &str) -> Option<u32> {
        let index = PlannedDossier::index_in_id(id)?;
        let position = *self.position_of_index.get(index as usize)?;
        (self.rows[position as usize].planned.id() == id).then_some(position)
    }

    /// The current record of a row.
    fn record(&self, plan: &Plan, position: u32) -> Value {
        self.pending(position).record(plan)
    }

    /// The current record of a row, or what to write it from.
    fn pending(&self, position: u32) -> Pending {
        match self.changed.get(&position) {
            Some(record) => Pending::Changed(record.clone()),
            None => Pending::Planned(self.rows[position as usize].planned),
        }
    }

    /// Keeps a row's changed record.
    fn keep(&mut self, position: u32, record: &Value) {
        self.changed
            .insert(position, record.to_string().into_boxed_str());
    }

    /// Takes a row out of the feed's order (before its `updatedDate` or hidden flag changes).
    fn unlist(&mut self, position: u32) {
        let row = &self.rows[position as usize];
        let list = if row.hidden {
            &mut self.hidden
        } else {
            &mut self.visible
        };
        if let Ok(at) = list.binary_search(&(row.updated_ms, position)) {
            list.remove(at);
        }
    }

    /// Puts a row back into the feed's order.
    fn list(&mut self, position: u32) {
        let row = &self.rows[position as usize];
        let key = (row.updated_ms, position);
        let list = if row.hidden {
            &mut self.hidden
        } else {
            &mut self.visible
        };
        let at = list.partition_point(|entry| *entry < key);
        list.insert(at, key);
    }

    /// Recomputes what the counts see of a row from its record; call after every change of the record.
    fn recount(&mut self, position: u32, record: &Value) {
        let row = &mut self.rows[position as usize];
        row.deleted = record.get("deletedDate").is_some_and(|d| !d.is_null());
        row.cancelled = record.pointer("/dossierStatus/id").and_then(Value::as_i64) == Some(11);
        self.other_agencies.remove(&position);
        row.agency = match record.pointer("/agency/id").and_then(Value::as_str) {
            None => NO_AGENCY,
            Some(id) => match self.agency_index.get(id) {
                Some(&at) => at,
                None => {
                    self.other_agencies.insert(position, id.to_owned());
                    OTHER_AGENCY
                }
            },
        };
    }

    /// The agency id and reception day the counts file a row under, when they count it.
    fn counted(&self, position: usize) -> Option<(&str, civil::Date)> {
        let row = &self.rows[position];
        if row.deleted || row.cancelled {
            return None;
        }
        let agency = match row.agency {
            NO_AGENCY => return None,
            OTHER_AGENCY => self.other_agencies.get(&(position as u32))?.as_str(),
            at => self.agencies.get(usize::from(at))?.id.as_str(),
        };
        Some((agency, row.reception_day))
    }

    fn stats_now(&self) -> SourceStats {
        let mut stats = self.stats.clone();
        stats.rows_total = self.rows.len();
        stats.rows_in_feed = self.rows.iter().filter(|row| self.in_feed(row)).count();
        stats.rows_hidden = self.hidden.len();
        stats.rows_deleted = self.rows.iter().filter(|row| row.deleted).count();
        stats.rows_cancelled = self.rows.iter().filter(|row| row.cancelled).count();
        stats.rows_bad = self
            .rows
            .iter()
            .filter(|row| row.planned.bad().is_some())
            .count();
        stats.live_mutation = self.live_mutation;
        stats
    }

    /// Evolves one row at `now`, stamping it `stamp`; it becomes visible.
    fn touch(&mut self, plan: &Plan, position: u32, now: Timestamp, stamp: Timestamp) {
        let mut record = self.record(plan, position);
        if let Some(accepted) = evolve(&mut record, &mut self.rng, now) {
            self.rows[position as usize].reception_day = super::dates::vietnam_day(accepted);
        }
        if let Some(object) = record.as_object_mut() {
            object.insert("updatedDate".into(), json!(format_source_date(stamp)));
        }
        self.recount(position, &record);
        self.keep(position, &record);
        self.unlist(position);
        let row = &mut self.rows[position as usize];
        row.updated_ms = ms(stamp);
        row.hidden = false;
        self.list(position);
        self.stats.mutations += 1;
    }

    /// Evolves `n` random rows. `late`: `Some(forced)` or `None` to follow `late_visibility`.
    fn mutate(&mut self, plan: &Plan, n: usize, late: Option<bool>, now: Timestamp) -> Vec<String> {
        let count = n.min(self.rows.len());
        let chosen = sample(&mut self.rng, self.rows.len(), count).into_vec();
        let mut ids = Vec::with_capacity(count);
        for index in chosen {
            let is_late = late.unwrap_or_else(|| {
                self.rng
                    .random_bool(self.faults.late_visibility.clamp(0.0, 1.0))
            });
            let stamp = if is_late {
                let most = self.faults.late_max.as_millis().max(5000) as i64;
                self.stats.late_visible_rows += 1;
                let late = now - SignedDuration::from_millis(self.rng.random_range(5000..=most));
                // A row's own updatedDate never goes backwards: a late commit lands after its last change.
                late.max(timestamp_of(self.rows[index].updated_ms + 1))
            } else {
                now
            };
            self.touch(plan, index as u32, now, stamp);
            ids.push(self.rows[index].planned.id());
        }
        ids
    }

    fn transport_fault(&mut self, endpoint: Endpoint) -> Option<TransportFault> {
        let faults = self.faults.clone();
        let paged = matches!(
            endpoint,
            Endpoint::Search | Endpoint::Agency | Endpoint::Procedure | Endpoint::Ids
        );
        let roll: f64 = self.rng.random();
        let mut threshold = faults.error_rate;
        if roll < threshold {
            self.stats.injected_errors += 1;
            let status = if self.rng.random_bool(0.5) {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            return Some(TransportFault::Error(status));
        }
        threshold += faults.timeout_rate;
        if roll < threshold {
            self.stats.injected_timeouts += 1;
            return Some(TransportFault::Timeout);
        }
        threshold += faults.truncated_rate;
        if roll < threshold {
            self.stats.truncated_bodies += 1;
            return Some(TransportFault::Truncate);
        }
        threshold += faults.missing_content_rate;
        if paged && roll < threshold {
            self.stats.missing_contents += 1;
            return Some(TransportFault::MissingContent);
        }
        None
    }
}

async fn live_mutation_loop(sim: SourceSim, shutdown: CancellationToken) {
    let mut interval =
        tokio::time::interval(sim.config.mutation_interval.max(Duration::from_millis(10)));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {
                let mut state = sim.lock();
                if state.live_mutation {
                    state.mutate(&sim.plan, sim.config.mutation_batch, None, Timestamp::now());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// HTTP

#[derive(Clone)]
struct AppState {
    sim: SourceSim,
    shutdown: CancellationToken,
}

type Params = Query<HashMap<String, String>>;

fn router(state: AppState) -> Router {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/pa/dossier/search", get(search))
        .route("/pa/dossier/{id}", get(dossier_by_id))
        .route("/ba/agency", get(agencies))
        .route("/ba/procedure", get(procedures))
        .route(
            "/pa/dossier-statistic/count-by-agency",
            get(count_by_agency),
        )
        .route("/pa/dossier-statistic/ids", get(dossier_ids))
        .route("/_sim/stats", get(sim_stats))
        .with_state(state)
}

fn json_body(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn error_body(status: StatusCode, error: &str, message: &str) -> Response {
    json_body(
        status,
        json!({"error": error, "message": message}).to_string(),
    )
}

/// A handler's failure, already shaped as the answer.
struct Answer(Box<Response>);

impl From<Response> for Answer {
    fn from(response: Response) -> Self {
        Answer(Box::new(response))
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        *self.0
    }
}

fn bad_request(state: &mut SimState, message: &str) -> Answer {
    state.stats.bad_requests += 1;
    Answer::from(error_body(StatusCode::BAD_REQUEST, "bad_request", message))
}

/// Waits the network's latency for one call (drawn with the latency generator), unless the simulator
/// stops meanwhile.
async fn network_delay(app: &AppState) {
    let latency = app.sim.config.latency;
    if latency.is_none() {
        return;
    }
    let delay = latency.draw(&mut app.sim.lock().latency_rng);
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = app.shutdown.cancelled() => {}
    }
}

async fn token(State(app): State<AppState>, Form(form): Form<HashMap<String, String>>) -> Response {
    network_delay(&app).await;
    let sim = &app.sim;
    let mut state = sim.lock();
    state.stats.requests_total += 1;
    state.stats.token_requests += 1;
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        state.stats.bad_requests += 1;
        return json_body(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type"}).to_string(),
        );
    }
    let id_ok = form.get("client_id") == Some(&sim.config.client_id);
    let secret_ok = form.get("client_secret") == Some(&sim.config.client_secret);
    if !(id_ok && secret_ok) {
        state.stats.unauthorized += 1;
        return json_body(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid_client"}).to_string(),
        );
    }
    let ttl = sim.token_ttl(&state);
    state.tokens_issued += 1;
    let secret: u64 = state.rng.random();
    let access_token = format!("sim.{:016x}.{}", secret, state.tokens_issued);
    let now = Instant::now();
    state.tokens.retain(|_, expiry| *expiry > now);
    state.tokens.insert(access_token.clone(), now + ttl);
    json_body(
        StatusCode::OK,
        json!({"access_token": access_token, "token_type": "Bearer", "expires_in": ttl.as_secs()})
            .to_string(),
    )
}

/// Counts the request, checks the bearer token, then decides a transport fault. An error or 401 answers
/// at once; a timeout is slept here (without the lock) and then answered 504.
async fn admit(
    app: &AppState,
    headers: &HeaderMap,
    endpoint: Endpoint,
) -> Result<Option<TransportFault>, Answer> {
    network_delay(app).await;
    let fault = {
        let mut state = app.sim.lock();
        state.stats.requests_total += 1;
        match endpoint {
            Endpoint::Search => state.stats.search_requests += 1,
            Endpoint::Dossier => state.stats.dossier_requests += 1,
            Endpoint::Agency => state.stats.agency_requests += 1,
            Endpoint::Procedure => state.stats.procedure_requests += 1,
            Endpoint::Count => state.stats.count_requests += 1,
            Endpoint::Ids => state.stats.ids_requests += 1,
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        let verdict = match token.and_then(|token| state.tokens.get(token)) {
            None => Some("unknown or missing token"),
            Some(expiry) if *expiry <= Instant::now() => Some("token expired"),
            Some(_) => None,
        };
        if let Some(message) = verdict {
            state.stats.unauthorized += 1;
            return Err(Answer::from(json_body(
                StatusCode::UNAUTHORIZED,
                json!({"error": "invalid_token", "error_description": message}).to_string(),
            )));
        }
        state.transport_fault(endpoint)
    };
    match fault {
        Some(TransportFault::Error(status)) => Err(Answer::from(error_body(
            status,
            "server_error",
            "simulated failure of the source system",
        ))),
        Some(TransportFault::Timeout) => {
            let delay = app.sim.faults().timeout_delay;
            tokio::select! {
                // The client has given up long ago; like a gateway, answer 504 without doing the work, so
                // that an abandoned request has no side effect (moving pages) after its client moved on.
                _ = tokio::time::sleep(delay) => {
                    Err(Answer::from(error_body(StatusCode::GATEWAY_TIMEOUT, "timeout", "the source did not answer in time")))
                }
                _ = app.shutdown.cancelled() => {
                    Err(Answer::from(error_body(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", "the simulator is stopping")))
                }
            }
        }
        other => Ok(other),
    }
}

/// Serializes an answer, spoiled as the fault says.
fn finish(state: &mut SimState, mut body: Value, fault: Option<TransportFault>) -> Response {
    match fault {
        Some(TransportFault::MissingContent) => {
            if let Some(object) = body.as_object_mut() {
                object.remove("content");
            }
            json_body(StatusCode::OK, body.to_string())
        }
        Some(TransportFault::Truncate) => {
            let text = body.to_string();
            let mut cut = (text.len() as f64 * state.rng.random_range(0.2..0.9)) as usize;
            while cut > 0 && !text.is_char_boundary(cut) {
                cut -= 1;
            }
            json_body(StatusCode::OK, text[..cut].to_owned())
        }
        _ => json_body(StatusCode::OK, body.to_string()),
    }
}

fn page_params(
    state: &mut SimState,
    params: &HashMap<String, String>,
) -> Result<(usize, usize), Answer> {
    let page = match params.get("page") {
        None => 0,
        Some(text) => text
            .trim()
            .parse::<usize>()
            .map_err(|_| bad_request(state, "page must be a number ≥ 0"))?,
    };
    let size = match params.get("size") {
        None => 20,
        Some(text) => text
            .trim()
            .parse::<usize>()
            .map_err(|_| bad_request(state, "size must be a number"))?,
    };
    if size == 0 || size > MAX_PAGE_SIZE {
        return Err(bad_request(state, "size must be between 1 and 500"));
    }
    Ok((page, size))
}

fn spring_page<T: Serialize>(content: Vec<T>, page: usize, size: usize, total: usize) -> Value {
    let total_pages = total.div_ceil(size);
    serde_json::to_value(Page {
        content,
        number: page as i64,
        size: size as i64,
        total_elements: total as i64,
        total_pages: total_pages as i64,
        last: (page + 1) * size >= total,
    })
    .unwrap_or(Value::Null)
}

async fn search(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Response, Answer> {
    let fault = admit(&app, &headers, Endpoint::Search).await?;
    let (pending, page, size, total, hostile) = {
        let mut state = app.sim.lock();
        let (mut page, mut size) = page_params(&mut state, &params)?;
        let hostile = state.faults.clone();
        if let Some(rows) = hostile.size_override {
            size = rows.max(1);
        }
        if hostile.ignore_paging {
            page = 0;
        }
        if let Some(sort) = params.get("sort")
            && sort != "updatedDate,asc"
        {
            return Err(bad_request(
                &mut state,
                "only sort=updatedDate,asc is supported",
            ));
        }
        let anchor = params.get("updated-from").cloned().unwrap_or_default();
        let from_ms = if anchor.is_empty() || hostile.ignore_paging {
            i64::MIN
        } else if anchor.contains(' ') {
            return Err(bad_request(
                &mut state,
                "updated-from contains a space: encode '+' as %2B",
            ));
        } else {
            match parse_source_date_text(&anchor) {
                Some(timestamp) if anchor.contains('T') => ms(timestamp),
                _ => {
                    return Err(bad_request(
                        &mut state,
                        "updated-from must look like 2024-01-15T08:30:00.000+0700",
                    ));
                }
            }
        };
        let state = &mut *state;

        // Quirk 1: rows already served to this query are touched and move to the end.
        if page > 0 && state.faults.moving_pages > 0.0 {
            let share = state.faults.moving_pages;
            let chosen: Vec<u32> = {
                let view = feed_view(&state.visible, &state.hidden, &state.faults);
                let keys = &view[from_position(&view, from_ms)..];
                let total = keys.len();
                let (moved, budget) = *state
                    .moving_budgets
                    .entry(anchor.clone())
                    .or_insert((0, (share * total as f64).ceil() as usize));
                let served = (page * size).min(total);
                let wanted = ((share * size as f64).ceil() as usize)
                    .min(budget.saturating_sub(moved))
                    .min(served);
                if wanted > 0 {
                    sample(&mut state.rng, served, wanted)
                        .into_iter()
                        .map(|position| keys[position].1)
                        .collect()
                } else {
                    Vec::new()
                }
            };
            if !chosen.is_empty() {
                let now = Timestamp::now();
                for &position in &chosen {
                    state.touch(&app.sim.plan, position, now, now);
                }
                state.stats.moved_rows += chosen.len() as u64;
                if let Some(entry) = state.moving_budgets.get_mut(&anchor) {
                    entry.0 += chosen.len();
                }
            }
            if state.moving_budgets.len() > 100_000 {
                state.moving_budgets.clear();
            }
        }

        // Quirk 2: ties in another order, now and then (the salt of the other order, when drawn).
        let reorder = if state.faults.tie_reorder > 0.0
            && state
                .rng
                .random_bool(state.faults.tie_reorder.clamp(0.0, 1.0))
        {
            state.stats.reordered_ties += 1;
            Some(state.rng.random::<u64>())
        } else {
            None
        };

        let view = feed_view(&state.visible, &state.hidden, &state.faults);
        let keys = &view[from_position(&view, from_ms)..];
        let total = keys.len();
        let start = page.saturating_mul(size).min(total);
        let end = (start + size).min(total);
        // Quirk 4: the previous page's last row again, as an extra first element.
        let duplicate = start > 0
            && start < total
            && state.faults.duplicates > 0.0
            && state
                .rng
                .random_bool(state.faults.duplicates.clamp(0.0, 1.0));
        if duplicate {
            state.stats.duplicated_rows += 1;
        }
        let first = if duplicate { start - 1 } else { start };
        let window = page_window(keys, first, end, reorder);
        drop(view);
        let pending: Vec<Pending> = window
            .into_iter()
            .map(|position| state.pending(position))
            .collect();
        (pending, page, size, total, hostile)
    };
    // The records are written outside the lock.
    let content: Vec<Value> = pending
        .into_iter()
        .map(|pending| pending.record(&app.sim.plan))
        .collect();
    let mut body = spring_page(content, page, size, total);
    lie_about_counts(&mut body, &hostile);
    let response = finish(&mut app.sim.lock(), body, fault);
    Ok(spoil_bytes(response, hostile.padding_bytes).await)
}

/// The rows of the feed in order: (updatedDate in ms, row position), hidden rows left out while quirk 8
/// is on (they are kept apart, so that this costs nothing then).
/// Takes the fields it reads, so that the caller may change others meanwhile.
fn feed_view<'a>(
    visible: &'a [(i64, u32)],
    hidden: &'a [(i64, u32)],
    faults: &SourceFaults,
) -> Cow<'a, [(i64, u32)]> {
    if faults.hidden_rows || hidden.is_empty() {
        return Cow::Borrowed(visible);
    }
    // Both lists are sorted: one merge.
    let mut all = Vec::with_capacity(visible.len() + hidden.len());
    let (mut left, mut right) = (visible.iter().peekable(), hidden.iter().peekable());
    while let (Some(&&a), Some(&&b)) = (left.peek(), right.peek()) {
        if a <= b {
            all.push(a);
            left.next();
        } else {
            all.push(b);
            right.next();
        }
    }
    all.extend(left);
    all.extend(right);
    Cow::Owned(all)
}

/// Where the feed from `from_ms` (inclusive) starts.
fn from_position(view: &[(i64, u32)], from_ms: i64) -> usize {
    view.partition_point(|&(updated, _)| updated < from_ms)
}

/// The row positions at `first..end` of `keys`, in the usual order (`updatedDate`, then id) or with
/// ties in the order `salt` scrambles them to. Only the blocks of ties the window touches are
/// reordered: rows of other timestamps keep their places whatever the order of ties.
fn page_window(keys: &[(i64, u32)], first: usize, end: usize, salt: Option<u64>) -> Vec<u32> {
    if first >= end {
        return Vec::new();
    }
    let Some(salt) = salt else {
        return keys[first..end]
            .iter()
            .map(|&(_, position)| position)
            .collect();
    };
    let low = keys.partition_point(|&(updated, _)| updated < keys[first].0);
    let high = keys.partition_point(|&(updated, _)| updated <= keys[end - 1].0);
    let mut block = keys[low..high].to_vec();
    block.sort_by_key(|&(updated, position)| (updated, scramble(u64::from(position), salt)));
    block[first - low..end - low]
        .iter()
        .map(|&(_, position)| position)
        .collect()
}

/// Quirk 12: `totalElements` and `last` as a lying gateway writes them.
fn lie_about_counts(body: &mut Value, faults: &SourceFaults) {
    let Some(object) = body.as_object_mut() else {
        return;
    };
    let truth = object
        .get("totalElements")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    match faults.count_lie {
        CountLie::Truth => {}
        CountLie::Capped(cap) => {
            object.insert("totalElements".into(), json!(truth.min(cap)));
        }
        CountLie::Constant(value) => {
            object.insert("totalElements".into(), json!(value));
        }
        CountLie::Missing => {
            object.remove("totalElements");
            object.remove("totalPages");
        }
    }
    if faults.last_lies
        && let Some(last) = object.get("last").and_then(Value::as_bool)
    {
        object.insert("last".into(), json!(!last));
    }
}

/// Quirks 11 and 14 on an answer's bytes: each planted marker becomes the byte `0xFF`, and `padding`
/// bytes of filler are streamed in front of the answer's fields (without a `Content-Length`, as a broken
/// proxy does), so that the simulator itself never holds them.
async fn spoil_bytes(response: Response, padding: usize) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return Response::from_parts(parts, axum::body::Body::empty());
    };
    let mut marker = [0u8; 4];
    let marker = INVALID_BYTE_MARKER.encode_utf8(&mut marker).as_bytes();
    let bytes = if bytes.windows(marker.len()).any(|window| window == marker) {
        let mut spoiled = Vec::with_capacity(bytes.len());
        let mut rest = &bytes[..];
        while let Some(at) = rest
            .windows(marker.len())
            .position(|window| window == marker)
        {
            spoiled.extend_from_slice(&rest[..at]);
            spoiled.push(0xFF);
            rest = &rest[at + marker.len()..];
        }
        spoiled.extend_from_slice(rest);
        bytes::Bytes::from(spoiled)
    } else {
        bytes
    };
    if padding == 0 || bytes.first() != Some(&b'{') {
        let mut parts = parts;
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    }
    const CHUNK: usize = 1 << 20;
    let filler = bytes::Bytes::from(vec![b'x'; CHUNK]);
    let mut chunks = vec![bytes::Bytes::from_static(b"{\"padding\":\"")];
    let mut left = padding;
    while left > 0 {
        let take = left.min(CHUNK);
        chunks.push(filler.slice(..take));
        left -= take;
    }
    chunks.push(bytes::Bytes::from_static(b"\","));
    chunks.push(bytes.slice(1..));
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, std::convert::Infallible>));
    Response::from_parts(parts, axum::body::Body::from_stream(stream))
}

async fn dossier_by_id(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Answer> {
    let fault = admit(&app, &headers, Endpoint::Dossier).await?;
    let delay = app.sim.lock().dossier_read_delay;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let pending = {
        let state = app.sim.lock();
        let Some(position) = state.position_of_id(&id) else {
            return Ok(error_body(
                StatusCode::NOT_FOUND,
                "not_found",
                "no dossier with this id",
            ));
        };
        state.pending(position)
    };
    let record = pending.record(&app.sim.plan);
    let response = finish(&mut app.sim.lock(), record, fault);
    Ok(spoil_bytes(response, 0).await)
}

async fn agencies(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Response, Answer> {
    let fault = admit(&app, &headers, Endpoint::Agency).await?;
    let mut state = app.sim.lock();
    let (page, size) = page_params(&mut state, &params)?;
    let total = state.agencies.len();
    let content: Vec<AgencyItem> = state
        .agencies
        .iter()
        .skip(page.saturating_mul(size))
        .take(size)
        .cloned()
        .collect();
    let body = spring_page(content, page, size, total);
    Ok(finish(&mut state, body, fault))
}

async fn procedures(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Response, Answer> {
    let fault = admit(&app, &headers, Endpoint::Procedure).await?;
    let mut state = app.sim.lock();
    let (page, size) = page_params(&mut state, &params)?;
    let total = state.procedures.len();
    let content: Vec<ProcedureItem> = state
        .procedures
        .iter()
        .skip(page.saturating_mul(size))
        .take(size)
        .cloned()
        .collect();
    let body = spring_page(content, page, size, total);
    Ok(finish(&mut state, body, fault))
}

fn date_param(
    state: &mut SimState,
    params: &HashMap<String, String>,
    name: &str,
) -> Result<civil::Date, Answer> {
    params
        .get(name)
        .and_then(|text| text.trim().parse::<civil::Date>().ok())
        .ok_or_else(|| bad_request(state, &format!("{name} must be a date like 2024-01-15")))
}

/// Rows the counts see, with their position, agency id and reception day.
fn counted_rows(state: &SimState) -> impl Iterator<Item = (usize, &str, civil::Date)> + '_ {
    (0..state.rows.len()).filter_map(|position| {
        let (agency, day) = state.counted(position)?;
        Some((position, agency, day))
    })
}

async fn count_by_agency(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Response, Answer> {
    let fault = admit(&app, &headers, Endpoint::Count).await?;
    let mut state = app.sim.lock();
    let from = date_param(&mut state, &params, "received-from")?;
    let to = date_param(&mut state, &params, "received-to")?;
    let mut counts: BTreeMap<(civil::Date, &str), i64> = BTreeMap::new();
    for (_, agency, day) in counted_rows(&state) {
        if (from..=to).contains(&day) {
            *counts.entry((day, agency)).or_insert(0) += 1;
        }
    }
    let body: Vec<Value> = counts
        .into_iter()
        .map(|((day, agency), count)| json!({"agencyId": agency, "date": day.to_string(), "count": count}))
        .collect();
    let fault = match fault {
        Some(TransportFault::MissingContent) => None,
        other => other,
    };
    Ok(finish(&mut state, Value::Array(body), fault))
}

async fn dossier_ids(
    State(app): State<AppState>,
    headers: HeaderMap,
    Query(params): Params,
) -> Result<Response, Answer> {
    let fault = admit(&app, &headers, Endpoint::Ids).await?;
    let mut state = app.sim.lock();
    let (page, size) = page_params(&mut state, &params)?;
    let day = date_param(&mut state, &params, "date")?;
    let Some(agency_id) = params.get("agency-id").cloned() else {
        return Err(bad_request(&mut state, "agency-id is required"));
    };
    let matching: Vec<usize> = counted_rows(&state)
        .filter(|(_, agency, row_day)| *agency == agency_id && *row_day == day)
        .map(|(position, _, _)| position)
        .collect();
    let total = matching.len();
    let content: Vec<DossierIdItem> = matching
        .iter()
        .skip(page.saturating_mul(size))
        .take(size)
        .map(|&position| {
            let row = &state.rows[position];
            let record = state.record(&app.sim.plan, position as u32);
            DossierIdItem {
                id: row.planned.id(),
                code: record
                    .get("code")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                updated_date: Some(format_source_date(timestamp_of(row.updated_ms))),
            }
        })
        .collect();
    let body = spring_page(content, page, size, total);
    Ok(finish(&mut state, body, fault))
}

async fn sim_stats(State(app): State<AppState>) -> Response {
    let stats = app.sim.stats();
    json_body(
        StatusCode::OK,
        serde_json::to_string(&stats).unwrap_or_default(),
    )
}
