//! The daemon, built then run: [`App::build`] turns settings into clients, a store and tables;
//! [`App::run`] polls and pushes until the shutdown token fires, then stops at a safe point.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use jiff::tz::{Offset, TimeZone};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Settings, initial_from};
use crate::events;
use crate::http::RetryPolicy;
use crate::metrics::SyncMetrics;
use crate::normalize::MappingTables;
use crate::notify::{HEARTBEAT_EVERY, unix_millis};
use crate::portal::client::PortalClient;
use crate::reconcile::Reconciler;
use crate::reconcile::log::ReconciliationLog;
use crate::source::client::SourceClient;
use crate::source::feed::{self, FeedError, FeedOptions, FeedRecord, FeedSink, PollStats};
use crate::store::{RENORMALIZE_REQUESTED, Redaction, Store};
use crate::sync::catalog::{CatalogOptions, PortalCatalog};
use crate::sync::ingest::{FEED_CURSOR, IngestSink, IngestStats, RenormalizeStats};
use crate::sync::push::{PushCounters, Pusher};

/// The lease (in the ledger's `leaders` table) held by the one instance that polls the source.
const POLL_ROLE: &str = "source_poller";

/// What the status server and progress lines read: times of the last successes, running totals.
#[derive(Debug, Default)]
pub struct Health {
    /// Unix ms of the last poll that reached the end of the feed.
    pub last_poll_ok: AtomicI64,
    /// Unix ms of the last batch the portal answered.
    pub last_push_ok: AtomicI64,
    pub polls: AtomicI64,
    pub poll_failures: AtomicI64,
    /// Another instance sharing the ledger holds the polling lease: this one only pushes.
    pub polled_elsewhere: AtomicBool,
    /// Unix ms of the poll loop's last sign of life, read by the systemd watchdog task: written at every
    /// turn of the loop, while it waits between polls, and during a poll or a re-normalization pass as
    /// long as that commits a page at least every [`POLL_STALL`].
    pub heartbeat: Arc<AtomicI64>,
    /// Unix ms of the last page a poll or re-normalization pass committed (or of its start).
    poll_progress: AtomicI64,
    /// How often, in ms, a waiting loop beats at the least (0: [`HEARTBEAT_EVERY`]).
    beat_every_ms: AtomicI64,
    /// Conditions that make the daemon unready whatever the ages of the last poll and push say (the source
    /// not paging, credentials refused), by name, each with the reason `/readyz` shows.
    conditions: std::sync::Mutex<std::collections::BTreeMap<&'static str, String>>,
}

impl Health {
    /// Beats often enough for a watchdog of `interval`: at least three times per interval, and at least
    /// every [`HEARTBEAT_EVERY`].
    pub fn pace_for_watchdog(&self, interval: Duration) {
        let every = (interval / 3).clamp(Duration::from_millis(10), HEARTBEAT_EVERY);
        self.beat_every_ms
            .store(every.as_millis() as i64, Ordering::Relaxed);
    }

    fn beat_every(&self) -> Duration {
        match self.beat_every_ms.load(Ordering::Relaxed) {
            millis if millis > 0 => Duration::from_millis(millis as u64),
            _ => HEARTBEAT_EVERY,
        }
    }

    fn beat(&self) {
        self.heartbeat.store(unix_millis(), Ordering::Relaxed);
    }

    /// Sets (`Some(reason)`) or clears (`None`) a named condition that makes the daemon unready.
    pub fn set_condition(&self, name: &'static str, reason: Option<String>) {
        let mut conditions = self
            .conditions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match reason {
            Some(reason) => conditions.insert(name, reason),
            None => conditions.remove(name),
        };
    }

    /// The reasons of the conditions in force, for `/readyz`.
    pub fn conditions(&self) -> Vec<String> {
        self.conditions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    fn progressed(&self) {
        self.poll_progress.store(unix_millis(), Ordering::Relaxed);
        self.beat();
    }

    /// Beats while the poll or pass running beside it commits pages; never returns.
    async fn beat_while_progressing(&self) {
        loop {
            tokio::time::sleep(self.beat_every()).await;
            let since = unix_millis().saturating_sub(self.poll_progress.load(Ordering::Relaxed));
            if since < POLL_STALL.as_millis() as i64 {
                self.beat();
            }
        }
    }
}

/// A poll that commits no page for this long is stalled: the heartbeat stops, and systemd's watchdog
/// restarts the service. It is longer than the worst a page fetch may take with its retries (5 tries of
/// 30 s plus back-off).
pub const POLL_STALL: Duration = Duration::from_secs(600);

/// The sides a command talks to: it is given their secrets, and only theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sides {
    pub source: bool,
    pub portal: bool,
}

impl Sides {
    /// The daemon, `reconcile`, `report` without `--offline`.
    pub const BOTH: Sides = Sides {
        source: true,
        portal: true,
    };
    /// The ledger-only commands: `report --offline`, `failures`, `retry`.
    pub const NONE: Sides = Sides {
        source: false,
        portal: false,
    };
}

pub struct App {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub source: Arc<SourceClient>,
    pub portal: Arc<PortalClient>,
    /// The mapping tables in force; replaced whole by a reload (SIGHUP).
    tables: RwLock<Arc<MappingTables>>,
    /// The catalog pre-flight (`portal.preflight`).
    pub catalog: Option<Arc<PortalCatalog>>,
    pub counters: Arc<PushCounters>,
    pub metrics: Arc<SyncMetrics>,
    pub health: Arc<Health>,
    work_available: Arc<Notify>,
    /// Set by a reload that changed the tables: the poll loop normalizes held-back dossiers again.
    renormalize_requested: AtomicBool,
    /// Wakes the poll loop early (a reload).
    poll_now: Notify,
}

/// Where the fingerprint of the tables the held-back dossiers were last normalized with is kept.
const TABLES_FINGERPRINT: &str = "mapping_tables_fingerprint";
/// When every held-back dossier was last normalized again (Unix ms).
const RENORMALIZED_AT: &str = "held_renormalized_at";
/// Held-back dossiers normalized again per transaction.
const RENORMALIZE_PAGE: usize = 500;
/// When the retention pass last ran (Unix ms).
const RETENTION_RAN_AT: &str = "retention_ran_at";
/// How often the retention pass runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// Dossiers redacted per transaction.
const RETENTION_PAGE: usize = 500;

impl App {
    pub async fn build(settings: Settings) -> anyhow::Result<App> {
        App::build_for(settings, Sides::BOTH).await
    }

    /// Builds the parts a command needs: only the sides in `sides` get their secrets (the others'
    /// clients fail every call without asking), and the catalog pre-flight only with the portal's.
    pub async fn build_for(settings: Settings, sides: Sides) -> anyhow::Result<App> {
        let retry = RetryPolicy {
            min_delay: Duration::from_millis(settings.portal.retry_min_delay_ms),
            max_delay: Duration::from_secs(settings.portal.retry_max_delay_seconds),
            max_times: settings.portal.call_retries,
        };
        let source = if sides.source {
            SourceClient::new(&settings.source, retry)
        } else {
            SourceClient::offline(&settings.source)
        }
        .context("failed to set up the source client")?;
        let portal = if sides.portal {
            PortalClient::new(&settings.portal, retry)
        } else {
            PortalClient::offline(&settings.portal)
        }
        .context("failed to set up the portal client")?;
        let tables = load_tables(&settings)?;
        let portal = Arc::new(portal);
        let catalog = (settings.portal.preflight && sides.portal).then(|| {
            Arc::new(PortalCatalog::new(
                portal.clone(),
                CatalogOptions {
                    refresh: Duration::from_secs(settings.portal.catalog_refresh_minutes * 60),
                    call_timeout: Duration::from_secs(settings.portal.catalog_timeout_seconds),
                    retry_after_failure: Duration::from_secs(60),
                },
            ))
        });
        let store = crate::store::open(&settings.store).await?;
        Ok(App {
            store,
            source: Arc::new(source),
            portal,
            tables: RwLock::new(Arc::new(tables)),
            catalog,
            counters: Arc::new(PushCounters::default()),
            metrics: Arc::new(SyncMetrics::default()),
            health: Arc::new(Health::default()),
            work_available: Arc::new(Notify::new()),
            renormalize_requested: AtomicBool::new(false),
            poll_now: Notify::new(),
            settings,
        })
    }

    /// The mapping tables in force.
    pub fn tables(&self) -> Arc<MappingTables> {
        self.tables
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Reads the mapping tables file again (SIGHUP). Invalid tables are refused with the reason logged
    /// and the tables in force stay; changed tables take effect at once, and the held-back dossiers are
    /// normalized again under them. Returns whether the tables changed.
    pub fn reload_tables(&self) -> bool {
        let tables = match load_tables(&self.settings) {
            Ok(tables) => tables,
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "the mapping tables were not reloaded; the tables in force stay");
                return false;
            }
        };
        let fingerprint = tables.fingerprint();
        let changed = self.tables().fingerprint() != fingerprint;
        if changed {
            *self
                .tables
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(tables);
            tracing::info!(fingerprint = %&fingerprint[..16], "mapping tables reloaded; held-back dossiers will be normalized again");
        } else {
            tracing::info!("mapping tables reloaded: no change");
        }
        // A reload is also the operator's way to say "the portal's catalogs changed": ask again.
        self.renormalize_requested.store(true, Ordering::Relaxed);
        self.poll_now.notify_one();
        changed
    }

    /// Normalizes every held-back dossier again when something they depend on changed: the tables (on
    /// start, against the fingerprint stored with the last pass, and on reload), the portal's unit
    /// catalog, or the day (`mapping.renormalize_every_hours`). Runs between polls.
    pub async fn renormalize_if_due(&self) -> anyhow::Result<Option<RenormalizeStats>> {
        let now = Timestamp::now().as_millisecond();
        let tables = self.tables();
        let fingerprint = tables.fingerprint();
        let requested = self.renormalize_requested.swap(false, Ordering::Relaxed);
        if requested && let Some(catalog) = &self.catalog {
            catalog.forget().await;
        }
        let catalog_changed = match &self.catalog {
            Some(catalog) => catalog.refresh_units().await,
            None => false,
        };
        let stored = self.store.cursor(TABLES_FINGERPRINT).await?;
        let last_pass = self
            .store
            .cursor(RENORMALIZED_AT)
            .await?
            .and_then(|text| text.parse::<i64>().ok());
        let every = i64::try_from(self.settings.mapping.renormalize_every_hours)
            .unwrap_or(i64::MAX / 3_600_000)
            .saturating_mul(3_600_000);
        let asked_at = self
            .store
            .cursor(RENORMALIZE_REQUESTED)
            .await?
            .and_then(|text| text.parse::<i64>().ok());
        let reason = if stored.as_deref() != Some(fingerprint.as_str()) {
            "the mapping tables changed"
        } else if requested {
            "the tables were reloaded"
        } else if asked_at.is_some_and(|asked| last_pass.is_none_or(|pass| asked >= pass)) {
            "an operator asked (tthc-sync retry)"
        } else if catalog_changed {
            "the portal's unit catalog changed"
        } else if last_pass.is_none_or(|at| now.saturating_sub(at) >= every) {
            "the daily pass"
        } else {
            return Ok(None);
        };
        if reason.starts_with("an operator asked")
            && let Some(catalog) = &self.catalog
        {
            // Whatever the operator fixed may be on the portal's side: ask it again.
            catalog.forget().await;
        }
        let mut sink = IngestSink::new(self.store.clone(), tables, self.catalog.clone());
        sink.max_record_bytes = self.settings.source.max_record_bytes;
        let mut total = RenormalizeStats::default();
        let mut after = String::new();
        loop {
            let held = self.store.held_records(&after, RENORMALIZE_PAGE).await?;
            let Some(last) = held.last() else { break };
            after = last.source_id.clone();
            let stats = sink.renormalize(&held).await?;
            self.health.progressed();
            total.examined += stats.examined;
            total.released += stats.released;
            total.still_held += stats.still_held;
            total.skipped += stats.skipped;
            if stats.released > 0 {
                self.work_available.notify_waiters();
            }
        }
        self.store
            .set_cursor(TABLES_FINGERPRINT, &fingerprint, now)
            .await?;
        self.store
            .set_cursor(RENORMALIZED_AT, &now.to_string(), now)
            .await?;
        tracing::info!(
            reason,
            examined = total.examined,
            released = total.released,
            still_held = total.still_held,
            skipped = total.skipped,
            "held-back dossiers normalized again"
        );
        Ok(Some(total))
    }

    /// Retention (`store.retention_days`): clears the personal fields of the finished dossiers the portal
    /// accepted longer ago than that; the ledger rows reconciliation reads stay. Runs at most every
    /// hour, between polls, by the instance that polls. Returns how many dossiers it redacted, or None
    /// when it was not due.
    pub async fn retention_if_due(&self) -> anyhow::Result<Option<u64>> {
        let now = Timestamp::now().as_millisecond();
        let last = self
            .store
            .cursor(RETENTION_RAN_AT)
            .await?
            .and_then(|text| text.parse::<i64>().ok());
        if last.is_some_and(|at| now.saturating_sub(at) < RETENTION_EVERY.as_millis() as i64) {
            return Ok(None);
        }
        let redacted = self.apply_retention(now).await?;
        self.store
            .set_cursor(RETENTION_RAN_AT, &now.to_string(), now)
            .await?;
        Ok(Some(redacted))
    }

    /// One retention pass over the whole ledger, as of `now`.
    pub async fn apply_retention(&self, now: i64) -> anyhow::Result<u64> {
        let days = i64::from(self.settings.store.retention_days);
        let accepted_before = now.saturating_sub(days.saturating_mul(86_400_000));
        let mut redacted = 0;
        let mut after = String::new();
        loop {
            let candidates = self
                .store
                .retention_candidates(accepted_before, &after, RETENTION_PAGE)
                .await?;
            let Some(last) = candidates.last() else { break };
            after = last.source_id.clone();
            let redactions: Vec<Redaction> = candidates
                .into_iter()
                .map(|candidate| Redaction {
                    payload: crate::privacy::redact_payload(&candidate.payload),
                    source_id: candidate.source_id,
                    raw_hash: candidate.raw_hash,
                })
                .collect();
            redacted += self.store.redact(&redactions, now).await?;
            self.health.progressed();
        }
        tracing::info!(
            redacted,
            retention_days = days,
            "retention: personal fields of finished dossiers cleared"
        );
        Ok(redacted)
    }

    /// A reconciler over this daemon's clients, store and tables.
    pub fn reconciler(&self) -> Reconciler {
        Reconciler {
            store: self.store.clone(),
            source: self.source.clone(),
            portal: Some(self.portal.clone()),
            catalog: self.catalog.clone(),
            tables: self.tables(),
            log: Some(
                ReconciliationLog::new(
                    self.settings.reconciliation_log_dir(),
                    self.settings.reconcile.log_max_bytes,
                )
                .with_retention_days(self.settings.reconcile.log_retention_days),
            ),
            portal_sample: self.settings.reconcile.portal_sample,
            portal_lookups: self.settings.reconcile.portal_lookups,
            max_record_bytes: self.settings.source.max_record_bytes,
            content: crate::reconcile::content::ContentLimits {
                recent_hours: self.settings.reconcile.content_check_hours,
                sample_per_unit: self.settings.reconcile.content_sample,
                budget: self.settings.reconcile.content_budget,
            },
        }
    }

    /// Runs a reconciliation of the last `days` reception days (Vietnam time) and logs its summary.
    pub async fn reconcile_recent(&self, days: u32, kind: &str) {
        let today = vietnam_today();
        let from = today
            .checked_sub(jiff::Span::new().days(i64::from(days.saturating_sub(1))))
            .unwrap_or(today);
        match self.reconciler().run(from, today, None).await {
            Ok(outcome) => {
                let incomplete = outcome.lines.iter().filter(|line| !line.complete).count();
                tracing::info!(
                    kind,
                    run_id = %outcome.run_id,
                    from = %from,
                    to = %today,
                    units = outcome.lines.len(),
                    incomplete,
                    fetched = outcome.fetched,
                    "reconciliation done"
                );
                for note in &outcome.notes {
                    tracing::warn!(run_id = %outcome.run_id, "reconciliation: {note}");
                }
                if outcome.fetched > 0 {
                    self.work_available.notify_waiters();
                }
            }
            Err(error) => {
                tracing::warn!(kind, error = %error, "reconciliation failed; trying at the next run")
            }
        }
    }

    /// Regular reconciliations every `reconcile.interval_minutes`, and the nightly one at
    /// `reconcile.nightly_hour` (Vietnam time) over the longer window.
    async fn reconcile_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let settings = &self.settings.reconcile;
        if settings.interval_minutes == 0 {
            return;
        }
        let interval = Duration::from_secs(settings.interval_minutes * 60);
        let mut last_nightly: Option<jiff::civil::Date> = None;
        loop {
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                () = shutdown.cancelled() => return,
            }
            // Of several instances sharing a ledger, the one that polls the source reconciles with it.
            if !self.lead_polling().await {
                continue;
            }
            let now = TimeZone::fixed(Offset::constant(7)).to_datetime(Timestamp::now());
            let nightly = now.hour() >= i8::try_from(settings.nightly_hour).unwrap_or(2)
                && last_nightly != Some(now.date());
            let (days, kind) = if nightly {
                last_nightly = Some(now.date());
                (settings.nightly_window_days, "nightly")
            } else {
                (settings.window_days, "regular")
            };
            tokio::select! {
                () = self.reconcile_recent(days, kind) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    fn feed_options(&self) -> FeedOptions {
        FeedOptions {
            page_size: self.settings.source.page_size,
            lookback: Duration::from_secs(self.settings.source.lookback_seconds),
            max_tie_block_passes: self.settings.source.max_tie_block_passes,
            max_clock_skew: Duration::from_secs(self.settings.source.max_clock_skew_seconds),
        }
    }

    /// One poll of the feed into the ledger.
    pub async fn poll_once(&self) -> Result<(PollStats, IngestStats), FeedError> {
        let cursor = self
            .store
            .cursor(FEED_CURSOR)
            .await
            .map_err(|error| FeedError::Sink(error.to_string()))?
            .and_then(|text| text.parse::<i64>().ok())
            .and_then(|millis| Timestamp::from_millisecond(millis).ok());
        let mut sink = IngestSink::new(self.store.clone(), self.tables(), self.catalog.clone());
        sink.max_record_bytes = self.settings.source.max_record_bytes;
        sink.future_after = Some(
            Timestamp::now()
                .checked_add(jiff::SignedDuration::from_secs(
                    self.settings.source.max_clock_skew_seconds as i64,
                ))
                .unwrap_or(Timestamp::MAX),
        );
        let result = feed::poll(
            &self.source,
            self.feed_options(),
            cursor,
            initial_from(&self.settings.source),
            &mut ProgressSink {
                inner: &mut sink,
                health: &self.health,
            },
        )
        .await;
        if sink.stats.queued > 0 {
            self.work_available.notify_waiters();
        }
        result.map(|stats| (stats, sink.stats))
    }

    /// A pusher. Workers of one instance share its owner name, so that a restart takes back all of
    /// their claims at once.
    pub fn pusher(&self) -> Pusher {
        Pusher {
            store: self.store.clone(),
            portal: self.portal.clone(),
            owner: self.settings.store.instance.clone(),
            batch_size: self.settings.portal.batch_size,
            lease: Duration::from_secs(self.settings.store.lease_seconds),
            redeliver_base: Duration::from_secs(self.settings.portal.redeliver_base_seconds),
            redeliver_cap: Duration::from_secs(self.settings.portal.redeliver_cap_seconds),
            counters: self.counters.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Polls and pushes until `shutdown` fires; returns once every task stopped at a safe point.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        // This instance's claims from before a crash go back to the pool (a command built from the
        // same settings never does this: it would take back the running daemon's work).
        let released = self
            .store
            .release_claims(
                &self.settings.store.instance,
                Timestamp::now().as_millisecond(),
            )
            .await
            .context("failed to release this instance's earlier claims")?;
        if released > 0 {
            tracing::info!(
                released,
                "took back work this instance had in flight when it last stopped"
            );
        }
        let tracker = TaskTracker::new();
        tracker.spawn(self.clone().poll_loop(shutdown.clone()));
        tracker.spawn(self.clone().reconcile_loop(shutdown.clone()));
        for worker in 0..self.settings.portal.concurrency {
            tracker.spawn(self.clone().push_loop(worker, shutdown.clone()));
        }
        tracker.close();
        tracker.wait().await;
        // Hand the polling lease over now rather than have the other instances wait for it to run out: a
        // lease that ends now is free to the next one who asks (a no-op when another instance holds it).
        let now = Timestamp::now().as_millisecond();
        if let Err(error) = self
            .store
            .try_lead(POLL_ROLE, &self.settings.store.instance, now, now)
            .await
        {
            tracing::warn!(error = %error, "cannot give the polling lease back; another instance takes it over when it runs out");
        }
        Ok(())
    }

    async fn poll_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut leading = false;
        // Polls failed in a row, for the back-off of the failures that must not be repeated at the poll
        // interval (a source that does not page, credentials refused).
        let mut failures: u32 = 0;
        loop {
            self.health.beat();
            // Of several instances sharing a ledger, one polls the source (the lease holder); all push.
            let now_leading = self.lead_polling().await;
            self.health
                .polled_elsewhere
                .store(!now_leading, Ordering::Relaxed);
            if now_leading != leading {
                leading = now_leading;
                if leading {
                    tracing::info!("this instance polls the source");
                } else {
                    tracing::info!(
                        "another instance sharing the ledger polls the source; this one pushes"
                    );
                }
            }
            if !leading {
                if self.wait_beating(&shutdown, Duration::ZERO).await {
                    continue;
                }
                return;
            }
            // Normalizing held-back dossiers again writes the ledger as a poll does: the leader's work too.
            self.health.progressed();
            let renormalized = tokio::select! {
                outcome = self.renormalize_if_due() => outcome,
                () = self.health.beat_while_progressing() => unreachable!("beats forever"),
                () = self.keep_polling_lease() => {
                    tracing::warn!("lost the polling lease to another instance; re-normalization stops");
                    continue;
                }
                () = shutdown.cancelled() => return,
            };
            if let Err(error) = renormalized {
                tracing::warn!(error = %format!("{error:#}"), "cannot normalize held-back dossiers again; trying at the next poll");
            }
            self.health.progressed();
            let retention = tokio::select! {
                outcome = self.retention_if_due() => outcome,
                () = self.health.beat_while_progressing() => unreachable!("beats forever"),
                () = self.keep_polling_lease() => {
                    tracing::warn!("lost the polling lease to another instance; the retention pass stops");
                    continue;
                }
                () = shutdown.cancelled() => return,
            };
            if let Err(error) = retention {
                tracing::warn!(error = %format!("{error:#}"), "the retention pass failed; trying at the next poll");
            }
            let started = std::time::Instant::now();
            self.health.progressed();
            // Stopping mid-poll loses nothing: each page commits atomically with its cursor, and a page
            // whose transaction was not committed is simply read again by the next poll.
            let outcome = tokio::select! {
                outcome = self.poll_once() => Some(outcome),
                () = self.health.beat_while_progressing() => unreachable!("beats forever"),
                () = self.keep_polling_lease() => {
                    tracing::warn!("lost the polling lease to another instance; this poll stops");
                    continue;
                }
                () = shutdown.cancelled() => None,
            };
            self.health.polls.fetch_add(1, Ordering::Relaxed);
            let mut pause = Duration::ZERO;
            match outcome {
                None => return,
                Some(Ok((poll, ingest))) => {
                    failures = 0;
                    self.health.set_condition(NOT_PAGING, None);
                    events::PollCompleted {
                        poll: &poll,
                        received: ingest.received,
                        unchanged: ingest.unchanged,
                        queued: ingest.queued,
                        held: ingest.held,
                        skipped: ingest.skipped,
                        held_by_reason: &ingest.held_by_reason,
                        future_by_unit: &ingest.future_by_unit,
                        elapsed: started.elapsed(),
                    }
                    .emit(&self.metrics);
                    self.health
                        .last_poll_ok
                        .store(Timestamp::now().as_millisecond(), Ordering::Relaxed);
                }
                Some(Err(error)) => {
                    failures += 1;
                    self.health.poll_failures.fetch_add(1, Ordering::Relaxed);
                    if error.kind() == "source_not_paging" {
                        pause = poll_backoff(
                            failures,
                            self.settings.poll_interval(),
                            MAX_NOT_PAGING_BACKOFF,
                        );
                        self.health.set_condition(
                            NOT_PAGING,
                            Some(format!("Nguồn không phân trang: cùng một trang được trả về cho mọi yêu cầu; thử lại sau {} giây (the source is not paging)", pause.as_secs())),
                        );
                    }
                    events::PollFailed {
                        error: &error,
                        elapsed: started.elapsed(),
                        retry_in: pause,
                    }
                    .emit(&self.metrics);
                }
            }
            if !self.wait_beating(&shutdown, pause).await {
                return;
            }
        }
    }

    /// Waits out the poll interval (or until a reload wakes the loop), beating the heartbeat at least
    /// every [`HEARTBEAT_EVERY`] (or a third of the watchdog's interval), so that a long interval is not
    /// taken for a stall. Returns false when
    /// `shutdown` fired.
    async fn wait_beating(&self, shutdown: &CancellationToken, pause: Duration) -> bool {
        let until = tokio::time::Instant::now() + self.settings.poll_interval().max(pause);
        let woken = self.poll_now.notified();
        tokio::pin!(woken);
        loop {
            self.health.beat();
            let now = tokio::time::Instant::now();
            if now >= until {
                return true;
            }
            tokio::select! {
                () = tokio::time::sleep((until - now).min(self.health.beat_every())) => {}
                () = &mut woken => return true,
                () = shutdown.cancelled() => return false,
            }
        }
    }

    /// Takes or renews the lease on polling the source. An error counts as not leading: the next round
    /// asks again.
    async fn lead_polling(&self) -> bool {
        let now = Timestamp::now().as_millisecond();
        let lease = Duration::from_secs(self.settings.store.lease_seconds).as_millis() as i64;
        let owner = &self.settings.store.instance;
        match self
            .store
            .try_lead(POLL_ROLE, owner, now, now + lease)
            .await
        {
            Ok(leading) => leading,
            Err(error) => {
                tracing::warn!(error = %error, "cannot renew the polling lease; not polling this round");
                false
            }
        }
    }

    /// Renews the polling lease while a poll runs (a first poll of a large backlog can outlast the
    /// lease); returns when another instance holds it, or when renewals have failed for as long as the
    /// lease lasts (it may have lapsed). A renewal that fails once (a busy store) does not stop the
    /// poll: cancelling it would leave its last page's write running beside the next poll, and a lease
    /// renewed at a third of its term outlives a failed renewal or two.
    async fn keep_polling_lease(&self) {
        let every = Duration::from_secs(self.settings.store.lease_seconds) / 3;
        let lease = Duration::from_secs(self.settings.store.lease_seconds).as_millis() as i64;
        let mut renewed_at = Timestamp::now().as_millisecond();
        loop {
            tokio::time::sleep(every).await;
            let now = Timestamp::now().as_millisecond();
            match self
                .store
                .try_lead(POLL_ROLE, &self.settings.store.instance, now, now + lease)
                .await
            {
                Ok(true) => renewed_at = now,
                Ok(false) => return,
                Err(error) if now - renewed_at < lease => {
                    tracing::warn!(error = %error, "cannot renew the polling lease; the poll goes on and tries again")
                }
                Err(error) => {
                    tracing::warn!(error = %error, "the polling lease could not be renewed within its term; this poll stops");
                    return;
                }
            }
        }
    }

    async fn push_loop(self: Arc<Self>, worker: usize, shutdown: CancellationToken) {
        let pusher = self.pusher();
        tracing::debug!(worker, "pusher started");
        let idle = Duration::from_millis(500);
        while !shutdown.is_cancelled() {
            // A batch in flight is finished and recorded even when shutdown arrives meanwhile: the
            // deadline in `main` bounds how long that may take.
            let pushed = pusher.push_due_batch().await;
            let progressed = match &pushed {
                Ok(stats) if stats.claimed > 0 => {
                    // A batch whose every item goes back to the queue was not answered by the portal.
                    if stats.accepted + stats.refused > 0 {
                        self.health
                            .last_push_ok
                            .store(Timestamp::now().as_millisecond(), Ordering::Relaxed);
                    }
                    true
                }
                Ok(_) => false,
                Err(error) => {
                    tracing::error!(error = %error, "cannot record a batch in the ledger");
                    false
                }
            };
            let progress_sent = match pusher.push_due_progress().await {
                Ok(count) => count > 0,
                Err(error) => {
                    tracing::error!(error = %error, "cannot record progress entries in the ledger");
                    false
                }
            };
            if !progressed && !progress_sent {
                tokio::select! {
                    () = self.work_available.notified() => {}
                    () = tokio::time::sleep(idle) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// The readiness condition of a source that does not page (source-api.md quirk 13).
const NOT_PAGING: &str = "source_not_paging";
/// The longest pause after polls that found the source not paging.
const MAX_NOT_PAGING_BACKOFF: Duration = Duration::from_secs(600);

/// The pause after `failures` failed polls in a row: the poll interval doubled per failure, up to `cap`
/// (and never below the interval).
pub fn poll_backoff(failures: u32, interval: Duration, cap: Duration) -> Duration {
    let doubled = interval.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    doubled.min(cap).max(interval)
}

/// The ingest sink, noting each committed page for the heartbeat.
struct ProgressSink<'a> {
    inner: &'a mut IngestSink,
    health: &'a Health,
}

#[async_trait::async_trait]
impl FeedSink for ProgressSink<'_> {
    async fn commit(
        &mut self,
        records: Vec<FeedRecord>,
        cursor: Option<Timestamp>,
    ) -> Result<(), FeedError> {
        let committed = self.inner.commit(records, cursor).await;
        self.health.progressed();
        committed
    }

    async fn flush(&mut self) -> Result<(), FeedError> {
        self.inner.flush().await
    }
}

/// The mapping tables the settings name (none: the built-in rules alone).
pub fn load_tables(settings: &Settings) -> anyhow::Result<MappingTables> {
    match &settings.mapping.tables_file {
        Some(path) => MappingTables::load(path).with_context(|| {
            format!(
                "configuration key `mapping.tables_file` ({})",
                path.display()
            )
        }),
        None => Ok(MappingTables::default()),
    }
}

/// Today in Vietnam (UTC+07:00, no daylight saving): the day reception days are counted in.
pub fn vietnam_today() -> jiff::civil::Date {
    TimeZone::fixed(Offset::constant(7))
        .to_datetime(Timestamp::now())
        .date()
}
