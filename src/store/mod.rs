//! The ledger behind one interface: every dossier seen, its payload and where it stands with the portal,
//! progress entries, cursors and the attempt log. SQLite by default ([`sqlite`]); PostgreSQL
//! ([`postgres`]) serves the same trait when several instances share the work.
//!
//! Work in flight is claimed with a lease (owner, expiry): a crashed owner's claims fall back to the pool
//! when the lease runs out, or at once when the same owner starts again. Roles only one instance may hold
//! (polling the source) are leased the same way ([`Store::try_lead`]).

pub mod copy;
pub mod postgres;
pub mod sqlite;

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;

use crate::config::{StoreSettings, masked_url};
use crate::decide::{
    self, DeliveryRow, DossierState, IngestAction, LedgerView, NewVersion, ProgressRow,
    ProgressState,
};
pub use crate::decide::{Answer as DeliveryOutcome, Millis};
pub use crate::unit_key::UnitScope;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("cannot prepare the database file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
}

/// One source record ready to be written, with the decision already taken.
#[derive(Debug, Clone)]
pub struct IngestRow {
    pub source_id: String,
    pub dossier_code: Option<String>,
    pub raw: String,
    pub raw_hash: String,
    pub source_updated_at: Option<Millis>,
    pub source_agency_id: Option<String>,
    pub unit: Option<String>,
    pub procedure_code: Option<String>,
    pub reception_day: Option<String>,
    pub payload: Option<String>,
    pub payload_hash: Option<String>,
    pub reason_code: Option<String>,
    pub reason_detail: Option<String>,
    /// JSON array of findings (values masked).
    pub findings: String,
    /// What normalizing this version gave; the store decides what it does to the row
    /// ([`crate::decide::on_new_version`]) on the row as it stands when it is written.
    pub kind: VersionKind,
    /// The stored record normalized again (changed tables or catalogs), not a new source version: it lands
    /// only while the row still holds that record.
    pub renormalized: bool,
    /// The version's `updatedDate` was ahead of the clock plus the allowance when it was read
    /// (source-api.md quirk 10): counted per unit in the reports.
    pub stamped_ahead: bool,
    /// Progress entries of a sendable dossier.
    pub progress: Vec<ProgressEntryRow>,
}

/// What a version is, once normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionKind {
    Sendable,
    Held,
    Skipped,
}

impl IngestRow {
    /// The new version as the decisions see it.
    pub fn new_version(&self) -> NewVersion<'_> {
        match (self.kind, self.payload_hash.as_deref()) {
            (VersionKind::Sendable, Some(payload_hash)) => NewVersion::Sendable { payload_hash },
            (VersionKind::Skipped, _) => NewVersion::Skipped,
            _ => NewVersion::Held,
        }
    }

    /// What writing this row does to the row the ledger holds (`existing`, read in the writing
    /// transaction).
    pub fn action(&self, existing: Option<&LedgerView>) -> IngestAction {
        if self.renormalized {
            match existing {
                // The record changed since it was read again: the newer one stays.
                Some(view) if view.raw_hash == self.raw_hash => {
                    crate::decide::on_new_outcome(view, self.new_version())
                }
                _ => IngestAction::Stale,
            }
        } else {
            crate::decide::on_new_version(
                existing,
                &self.raw_hash,
                self.source_updated_at,
                self.new_version(),
            )
        }
    }
}

/// One progress entry of a sendable dossier, as ingest writes it.
#[derive(Debug, Clone)]
pub struct ProgressEntryRow {
    pub key: String,
    /// `ThoiDiemXuLy` (`yyyyMMddHHmmss`): a dossier's entries go to the portal in this order.
    pub step_at: String,
    pub payload: String,
    pub hash: String,
}

/// A dossier claimed for delivery.
#[derive(Debug, Clone)]
pub struct ClaimedDossier {
    /// The claim (one per claim call): its answers land only on rows still in flight for it.
    pub claim: String,
    pub source_id: String,
    pub dossier_code: String,
    pub unit: Option<String>,
    pub payload: String,
    pub payload_hash: String,
    pub portal_has: bool,
    pub attempts: u32,
}

#[derive(Debug, Clone)]
pub struct DeliveryResult {
    /// The claim the call was made under.
    pub claim: String,
    pub source_id: String,
    /// The payload hash that was sent: a result only lands on the row while it still has that payload.
    pub payload_hash: String,
    pub outcome: DeliveryOutcome,
}

/// A progress entry claimed for delivery.
#[derive(Debug, Clone)]
pub struct ClaimedProgress {
    pub claim: String,
    pub source_id: String,
    pub entry_key: String,
    pub payload: String,
    pub payload_hash: String,
    pub attempts: u32,
}

#[derive(Debug, Clone)]
pub struct ProgressResult {
    pub claim: String,
    pub source_id: String,
    pub entry_key: String,
    pub payload_hash: String,
    pub outcome: DeliveryOutcome,
}

/// A held-back dossier's source record, as stored, with what the ledger knows of it.
#[derive(Debug, Clone)]
pub struct HeldRecord {
    pub source_id: String,
    pub raw: String,
    /// The first reason it is held back for (`unmapped_unit`, `unit_unknown_to_portal`, ...).
    pub reason_code: Option<String>,
    pub view: LedgerView,
}

/// A finished dossier the portal accepted long enough ago that its personal fields are due to be cleared
/// (`store.retention_days`).
#[derive(Debug, Clone)]
pub struct RetentionCandidate {
    pub source_id: String,
    /// The record's hash when it was read: the redaction lands only if no newer record arrived since.
    pub raw_hash: String,
    /// The payload as sent, to be stripped of its personal fields.
    pub payload: String,
}

/// What the retention pass writes for one dossier.
#[derive(Debug, Clone)]
pub struct Redaction {
    pub source_id: String,
    pub raw_hash: String,
    /// The payload without its personal fields ([`crate::privacy::redact_payload`]).
    pub payload: String,
}

/// Ledger rows counted by unit, source agency, reception day, state and reason: the ledger's side of a
/// reconciliation and of the reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerBucket {
    pub unit: Option<String>,
    pub source_agency_id: Option<String>,
    /// Reception day `YYYY-MM-DD`; `None` for a record without a usable date (malformed).
    pub day: Option<String>,
    pub state: DossierState,
    pub reason_code: Option<String>,
    pub count: i64,
    /// When the current version of the oldest dossier here that is not on the portal arrived (Unix ms);
    /// `None` when all are accepted or skipped.
    pub oldest_unsent_at: Option<Millis>,
    /// Dossiers here whose current version was stamped ahead of the clock when it was read
    /// (source-api.md quirk 10).
    pub stamped_ahead: i64,
}

/// Which dossiers an operator's command is about; every field narrows, `None` does not.
#[derive(Debug, Clone, Default)]
pub struct DossierFilter {
    /// The rows of one unit key ([`crate::unit_key::UnitKey::scope`]).
    pub unit: Option<UnitScope>,
    /// Any of these reason codes (an actor's codes, or the one `--reason`).
    pub reasons: Option<Vec<String>>,
    pub dossier_code: Option<String>,
    /// Reception days, inclusive (`YYYY-MM-DD`).
    pub from_day: Option<String>,
    pub to_day: Option<String>,
}

/// A dossier held back or refused, as `failures` lists it (findings carry masked values only).
#[derive(Debug, Clone)]
pub struct FailureRow {
    pub source_id: String,
    pub dossier_code: Option<String>,
    pub unit: Option<String>,
    pub source_agency_id: Option<String>,
    pub reception_day: Option<String>,
    pub state: DossierState,
    pub reason_code: Option<String>,
    pub reason_detail: Option<String>,
    /// JSON array of findings, as ingest stored them.
    pub findings: String,
    pub attempts: i64,
    pub changed_at: Millis,
}

/// What `retry` queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requeued {
    /// Refused by the portal: queued to be sent again now.
    pub refused: u64,
    /// Waiting out a back-off: due now.
    pub pending: u64,
    /// Held back: normalized again by the daemon at its next poll.
    pub held: u64,
}

impl Requeued {
    pub fn total(&self) -> u64 {
        self.refused + self.pending + self.held
    }
}

/// An accepted dossier whose copy on the portal the content check compares with its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentCandidate {
    pub source_id: String,
    pub dossier_code: String,
    pub unit: Option<String>,
    pub reception_day: Option<String>,
    /// The payload the ledger says the portal accepted (the exact bytes sent).
    pub payload: String,
    pub payload_hash: String,
}

/// The message a dossier queued again by the content check carries in `last_error`.
pub const CONTENT_DIFFERS: &str = "content differs on the portal";

/// One unit's line of one reconciliation run.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconciliationRecord {
    pub run_id: String,
    pub unit: String,
    pub started_at: Millis,
    pub from_day: String,
    pub to_day: String,
    pub source_count: Option<i64>,
    pub ledger_count: i64,
    pub accepted: i64,
    pub portal_count: Option<i64>,
    pub missing: i64,
    pub complete: bool,
    /// The unit's line as JSON (the same object the reconciliation log holds).
    pub summary: String,
}

/// The cursor an operator's `retry` sets when it asks for held-back dossiers to be normalized again.
pub const RENORMALIZE_REQUESTED: &str = "renormalize_requested_at";

/// One line of the attempt log.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub at: Millis,
    pub owner: String,
    pub service: String,
    pub items: i64,
    pub outcome: &'static str,
    pub detail: Option<String>,
    pub duration_ms: i64,
}

/// Counts per state (and per reason for held, refused and skipped), for progress lines and summaries.
#[derive(Debug, Clone, Default)]
pub struct LedgerCounts {
    pub by_state: HashMap<DossierState, i64>,
    /// (state, reason code) → count, for held, refused and skipped dossiers.
    pub by_reason: Vec<(DossierState, String, i64)>,
    pub progress_unsent: i64,
}

impl LedgerCounts {
    pub fn get(&self, state: DossierState) -> i64 {
        self.by_state.get(&state).copied().unwrap_or(0)
    }
    pub fn total(&self) -> i64 {
        self.by_state.values().sum()
    }
    /// Dossiers and progress entries that still have to reach the portal (now or after a back-off).
    pub fn outstanding(&self) -> i64 {
        self.get(DossierState::Pending) + self.get(DossierState::InFlight) + self.progress_unsent
    }
}

/// Per-unit summary line.
#[derive(Debug, Clone, Default)]
pub struct UnitCounts {
    pub unit: Option<String>,
    pub source_agency_id: Option<String>,
    pub counts: HashMap<DossierState, i64>,
    pub reasons: Vec<(String, i64)>,
}

#[async_trait]
pub trait Store: Send + Sync {
    /// What the ledger knows of these source ids (one round trip).
    async fn ledger_views(
        &self,
        source_ids: &[String],
    ) -> Result<HashMap<String, LedgerView>, StoreError>;

    /// Writes a page of records and moves the cursor, in one transaction: the cursor never passes an
    /// uncommitted dossier.
    async fn ingest(
        &self,
        rows: &[IngestRow],
        cursor: Option<(&str, &str)>,
        now: Millis,
    ) -> Result<(), StoreError>;

    async fn cursor(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Sets a named value of the `cursors` table outside any page (the mapping tables' fingerprint, the
    /// time of the last daily re-normalization).
    async fn set_cursor(&self, name: &str, value: &str, now: Millis) -> Result<(), StoreError> {
        self.ingest(&[], Some((name, value)), now).await
    }

    /// Up to `limit` held-back dossiers with a source id after `after`, in source id order (keyset
    /// paging), with their stored source records: what is normalized again when the tables change.
    async fn held_records(&self, after: &str, limit: usize) -> Result<Vec<HeldRecord>, StoreError>;

    /// Claims up to `limit` due dossiers for `owner` until `lease_until`.
    async fn claim_dossiers(
        &self,
        owner: &str,
        limit: usize,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<ClaimedDossier>, StoreError>;

    /// Records the portal's answers for claimed dossiers, in one transaction, as
    /// [`crate::decide::on_answer`] decides on each row as it stands. The progress entries that were
    /// waiting for the dossiers now on the portal become due.
    async fn record_deliveries(
        &self,
        results: &[DeliveryResult],
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Extends the lease of the claim `claim` on these dossiers and on its progress entries of them, while
    /// a long call runs; returns how many rows it still held.
    async fn renew_claim(
        &self,
        claim: &str,
        source_ids: &[String],
        lease_until: Millis,
    ) -> Result<u64, StoreError>;

    /// Claims up to `limit` due progress entries of dossiers the portal already has: at most one per
    /// dossier (the portal answers by `MaHoSo` only), a dossier's entries in their order, none while
    /// another entry of the dossier is in flight.
    async fn claim_progress(
        &self,
        owner: &str,
        limit: usize,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<ClaimedProgress>, StoreError>;

    async fn record_progress(
        &self,
        results: &[ProgressResult],
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Gives back every claim `owner` holds (a restart of the same instance after a crash), as
    /// [`crate::decide::on_release`] decides.
    async fn release_claims(&self, owner: &str, now: Millis) -> Result<u64, StoreError>;

    async fn log_attempt(&self, attempt: &AttemptRecord) -> Result<(), StoreError>;

    async fn counts(&self) -> Result<LedgerCounts, StoreError>;

    async fn unit_counts(&self) -> Result<Vec<UnitCounts>, StoreError>;

    /// The ledger counted by unit, source agency, reception day, state and reason, for reception days
    /// from `from` to `to` (inclusive, `YYYY-MM-DD`) and records without a reception day.
    async fn ledger_buckets(
        &self,
        from: &str,
        to: &str,
        unit: Option<&str>,
    ) -> Result<Vec<LedgerBucket>, StoreError>;

    /// The source ids the ledger holds for one source agency and reception day.
    async fn ledger_ids(
        &self,
        source_agency_id: &str,
        day: &str,
    ) -> Result<Vec<String>, StoreError>;

    /// Held-back and refused dossiers matching `filter`, oldest first, at most `limit`.
    async fn failures(
        &self,
        filter: &DossierFilter,
        limit: usize,
    ) -> Result<Vec<FailureRow>, StoreError>;

    /// Queues the dossiers matching `filter` again now: refused ones to be sent again, pending ones due
    /// at once, held-back ones marked for the daemon to normalize again (it holds the tables).
    async fn requeue(&self, filter: &DossierFilter, now: Millis) -> Result<Requeued, StoreError>;

    /// The normalized payloads (sent or to be sent) of the reception days from `from` to `to`, with their
    /// unit and state: the indicator preview's input.
    async fn payloads(
        &self,
        from: &str,
        to: &str,
        unit: Option<&str>,
    ) -> Result<Vec<(Option<String>, DossierState, String)>, StoreError>;

    /// Up to `limit` dossiers of a unit accepted by the portal, chosen at random, with reception days
    /// from `from` to `to`: (source id, dossier code), to confirm on the portal one by one.
    async fn accepted_sample(
        &self,
        unit: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError>;

    /// Dossiers the ledger holds as accepted that the portal does not have after all: queued to be
    /// sent again (as creates), their progress entries with them.
    async fn mark_missing_on_portal(
        &self,
        source_ids: &[String],
        now: Millis,
    ) -> Result<u64, StoreError>;

    /// Stores one reconciliation run (one line per unit).
    async fn record_reconciliation(
        &self,
        records: &[ReconciliationRecord],
    ) -> Result<(), StoreError>;

    /// The latest reconciliation line of every unit.
    async fn latest_reconciliation(&self) -> Result<Vec<ReconciliationRecord>, StoreError>;

    /// The state of the dossier with this code (MaHoSo), if the ledger holds one: `retry --dossier`
    /// tells an unknown code from one with nothing to retry.
    async fn dossier_state(&self, dossier_code: &str) -> Result<Option<DossierState>, StoreError>;

    /// The earliest time a pending dossier or progress entry becomes due, if any.
    async fn next_due(&self) -> Result<Option<Millis>, StoreError>;

    /// Takes or renews `role` for `owner` until `until`, unless another owner holds it beyond `now`.
    /// True when `owner` holds the role now.
    async fn try_lead(
        &self,
        role: &str,
        owner: &str,
        now: Millis,
        until: Millis,
    ) -> Result<bool, StoreError>;

    /// Closes the connections once the work in flight is recorded.
    async fn close(&self);

    /// Retention: dossiers in state `accepted`, accepted before `accepted_before`, finished (the payload's
    /// TrangThaiHoSo is 9 or 10) and not yet redacted, in source id order after `after`.
    async fn retention_candidates(
        &self,
        accepted_before: Millis,
        after: &str,
        limit: usize,
    ) -> Result<Vec<RetentionCandidate>, StoreError>;

    /// Retention: drops each dossier's source record, replaces its payload with the redacted one, empties
    /// the payloads of its sent progress entries and stamps `redacted_at`, in one transaction; a dossier
    /// whose record changed since it was read (another `raw_hash`) or that is no longer accepted is left
    /// alone. The `dossiers` row (ids, unit, day, state, hashes) stays for reconciliation. Returns how
    /// many were redacted.
    async fn redact(&self, redactions: &[Redaction], now: Millis) -> Result<u64, StoreError>;

    /// Content check: up to `limit` accepted dossiers (not redacted, with a code and a payload) accepted
    /// at or after `accepted_since`, of `unit` when given, that no check has looked at since
    /// `checked_before` (the run's start), those never checked first and then those checked longest
    /// ago, newest acceptance first. A caller pages by calling again once it has marked what it read
    /// ([`Store::mark_content_checked`]) or queued it again: those drop out.
    async fn content_candidates(
        &self,
        accepted_since: Millis,
        checked_before: Millis,
        unit: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ContentCandidate>, StoreError>;

    /// Content check: up to `limit` of a unit's accepted dossiers (not redacted) accepted before
    /// `accepted_before`, chosen at random.
    async fn content_sample(
        &self,
        unit: &str,
        accepted_before: Millis,
        limit: usize,
    ) -> Result<Vec<ContentCandidate>, StoreError>;

    /// Content check: stamps `content_checked_at` on these dossiers.
    async fn mark_content_checked(
        &self,
        source_ids: &[String],
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Content check: the portal holds something else than these accepted payloads, given as
    /// (source id, payload hash compared). Each is queued to be sent again now (pending, no accepted
    /// hash, attempts 0, `last_error` "content differs on the portal"), but only while it is still
    /// accepted with that very payload hash: a row in flight, or changed since it was read, is left
    /// alone. Returns the source ids queued.
    async fn requeue_content_differs(
        &self,
        differing: &[(String, String)],
        now: Millis,
    ) -> Result<Vec<String>, StoreError>;
}

/// What a page of records does to the ledger, decided on the rows as they stand in the writing
/// transaction (`views`): one (row, action) per dossier written, in page order. A page holding two versions
/// of one dossier is decided in order, and the dossier is written once, with the last version and the
/// state the sequence ends in. Unchanged and stale records are left out.
pub fn plan_ingest(
    rows: &[IngestRow],
    mut views: HashMap<String, LedgerView>,
) -> Vec<(&IngestRow, IngestAction)> {
    let mut planned: Vec<(&IngestRow, IngestAction)> = Vec::with_capacity(rows.len());
    let mut position: HashMap<&str, usize> = HashMap::new();
    for row in rows {
        let existing = views.get(&row.source_id);
        let action = row.action(existing);
        if !action.writes() {
            continue;
        }
        let after = LedgerView {
            raw_hash: row.raw_hash.clone(),
            source_updated_at: row.source_updated_at,
            state: match action {
                IngestAction::Set(state) => state,
                _ => existing.map_or(DossierState::Pending, |view| view.state),
            },
            payload_hash: row.payload_hash.clone(),
            accepted_hash: existing.and_then(|view| view.accepted_hash.clone()),
            in_flight: existing.is_some_and(|view| view.in_flight),
        };
        views.insert(row.source_id.clone(), after);
        match position.get(row.source_id.as_str()) {
            Some(&index) => {
                // A state set earlier in the page stands unless this version sets another.
                let action = match (planned[index].1, action) {
                    (IngestAction::Set(state), IngestAction::KeepState) => IngestAction::Set(state),
                    (_, action) => action,
                };
                planned[index] = (row, action);
            }
            None => {
                position.insert(row.source_id.as_str(), planned.len());
                planned.push((row, action));
            }
        }
    }
    planned
}

/// The decisions on a call's answers, each on its dossier's row as it stands (`rows`, updated as they are
/// decided): the rows to write.
pub fn decide_answers(
    rows: &mut HashMap<String, DeliveryRow>,
    results: &[DeliveryResult],
    now: Millis,
) -> Vec<(String, DeliveryRow)> {
    let mut changed: Vec<String> = Vec::new();
    for result in results {
        let Some(row) = rows.get(&result.source_id) else {
            continue;
        };
        if let Some(next) = decide::on_answer(
            row,
            &result.claim,
            &result.payload_hash,
            &result.outcome,
            now,
        ) {
            rows.insert(result.source_id.clone(), next);
            if !changed.contains(&result.source_id) {
                changed.push(result.source_id.clone());
            }
        }
    }
    changed
        .into_iter()
        .filter_map(|id| rows.get(&id).cloned().map(|row| (id, row)))
        .collect()
}

/// A progress entry as loaded for a decision.
#[derive(Debug, Clone)]
pub struct LoadedEntry {
    /// (source id, entry key).
    pub key: (String, String),
    pub row: ProgressRow,
    pub payload: String,
    /// Another entry of the same dossier has a call in flight now.
    pub sibling_in_flight: bool,
}

/// The decisions on a progress call's answers: the entries to write.
pub fn decide_progress_answers(
    entries: Vec<LoadedEntry>,
    results: &[ProgressResult],
    now: Millis,
) -> Vec<((String, String), ProgressRow, String)> {
    let mut entries: HashMap<(String, String), LoadedEntry> = entries
        .into_iter()
        .map(|entry| (entry.key.clone(), entry))
        .collect();
    let mut changes = Vec::new();
    for result in results {
        let key = (result.source_id.clone(), result.entry_key.clone());
        let Some(entry) = entries.remove(&key) else {
            continue;
        };
        if let Some(next) = decide::on_progress_answer(
            &entry.row,
            &result.claim,
            &result.payload_hash,
            &result.outcome,
            now,
        ) {
            changes.push((key, next, entry.payload));
        }
    }
    changes
}

/// Claims, of the loaded entries (in each dossier's order), the first claimable entry of each dossier that
/// has no other entry in flight.
pub fn claim_one_entry_per_dossier(
    entries: Vec<LoadedEntry>,
    claim: &str,
    owner: &str,
    now: Millis,
    lease_until: Millis,
) -> Vec<((String, String), ProgressRow, String)> {
    let mut claimed: Vec<((String, String), ProgressRow, String)> = Vec::new();
    let mut dossiers: std::collections::HashSet<String> = std::collections::HashSet::new();
    for entry in entries {
        let lapsed = entry
            .row
            .flight
            .as_ref()
            .is_none_or(|flight| flight.lease_expires_at < now);
        let due = match entry.row.state {
            ProgressState::Pending => lapsed && entry.row.next_attempt_at <= now,
            ProgressState::InFlight => lapsed,
            _ => false,
        };
        if !due || entry.sibling_in_flight || !dossiers.insert(entry.key.0.clone()) {
            continue;
        }
        let row = decide::on_progress_claim(entry.row, claim, owner, lease_until);
        claimed.push((entry.key, row, entry.payload));
    }
    claimed
}

/// A fresh claim id: the owner, then random bits, so that answers match their own claim only.
pub fn new_claim_id(owner: &str) -> String {
    format!("{owner}/{:016x}", rand::random::<u64>())
}

/// How ingest updates a progress entry whose payload changed (both stores): an entry with a call in flight
/// keeps its state until the answer lands (the answer's decision sees the new payload); otherwise it is
/// `sent` when it went back to what the portal last received, and waits for its turn again if not.
pub(crate) const PROGRESS_STATE_ON_CHANGE: &str = "CASE WHEN progress.flight_claim IS NOT NULL THEN progress.state \
     WHEN progress.sent_hash = excluded.payload_hash THEN 'sent' ELSE 'waiting' END";

/// Opens the ledger the settings name: PostgreSQL when `store.url` is set, else the SQLite file
/// `store.path`. A password in the URL is masked in the error.
pub async fn open(settings: &StoreSettings) -> anyhow::Result<Arc<dyn Store>> {
    match &settings.url {
        Some(url) => {
            let password = settings.password()?;
            let store = postgres::PostgresStore::open(url, password.as_deref(), settings.pool_size)
                .await
                .with_context(|| format!("failed to open the ledger {}", masked_url(url)))?;
            Ok(Arc::new(store))
        }
        None => {
            let store = sqlite::SqliteStore::open(&settings.path)
                .await
                .with_context(|| {
                    format!("failed to open the ledger {}", settings.path.display())
                })?;
            Ok(Arc::new(store))
        }
    }
}

/// Opens the ledger the settings name for an operator's command beside a running daemon: reads only, no
/// migration, and (SQLite) no write lock that would delay the daemon.
pub async fn open_read_only(settings: &StoreSettings) -> anyhow::Result<Arc<dyn Store>> {
    match &settings.url {
        Some(url) => {
            let password = settings.password()?;
            let store = postgres::PostgresStore::open_read_only(url, password.as_deref())
                .await
                .with_context(|| format!("failed to open the ledger {}", masked_url(url)))?;
            Ok(Arc::new(store))
        }
        None => {
            let store = sqlite::SqliteStore::open_read_only(&settings.path)
                .await
                .with_context(|| {
                    format!("failed to open the ledger {}", settings.path.display())
                })?;
            Ok(Arc::new(store))
        }
    }
}

fn state_of(text: &str) -> DossierState {
    // The column only ever holds values written by this module; an unknown one is treated as pending so
    // that it is looked at again rather than forgotten.
    DossierState::parse(text).unwrap_or(DossierState::Pending)
}

/// Adds one (state, reason code) group of the ledger to the counts.
fn add_to_counts(
    counts: &mut LedgerCounts,
    state: DossierState,
    reason: Option<String>,
    count: i64,
) {
    *counts.by_state.entry(state).or_default() += count;
    if let Some(reason) = reason
        && matches!(
            state,
            DossierState::Held | DossierState::Refused | DossierState::Skipped
        )
    {
        counts.by_reason.push((state, reason, count));
    }
}

/// Adds one (unit, source agency, state, reason code) group of the ledger to the per-unit summary. The
/// groups come ordered by unit and agency.
fn add_to_units(
    units: &mut Vec<UnitCounts>,
    unit: Option<String>,
    agency: Option<String>,
    state: DossierState,
    reason: Option<String>,
    count: i64,
) {
    // A resolved unit groups all its agencies; an unresolved one is shown per source agency.
    let key_agency = if unit.is_some() { None } else { agency };
    let position = units
        .iter()
        .position(|entry| entry.unit == unit && entry.source_agency_id == key_agency);
    let entry = match position {
        Some(index) => &mut units[index],
        None => {
            units.push(UnitCounts {
                unit,
                source_agency_id: key_agency,
                ..UnitCounts::default()
            });
            units.last_mut().expect("just pushed")
        }
    };
    *entry.counts.entry(state).or_default() += count;
    if let Some(reason) = reason
        && matches!(state, DossierState::Held | DossierState::Refused)
    {
        match entry.reasons.iter_mut().find(|(code, _)| *code == reason) {
            Some((_, total)) => *total += count,
            None => entry.reasons.push((reason, count)),
        }
    }
}
