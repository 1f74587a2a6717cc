//! The daemon, built then run: [`App::build`] turns settings into clients, a store and tables;
//! [`App::run`] polls and pushes until the shutdown token fires, then stops at a safe point.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Settings, initial_from};
use crate::http::RetryPolicy;
use crate::normalize::MappingTables;
use crate::portal::client::PortalClient;
use crate::source::client::SourceClient;
use crate::source::feed::{self, FeedError, FeedOptions, PollStats};
use crate::store::Store;
use crate::sync::ingest::{FEED_CURSOR, IngestSink, IngestStats};
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
}

pub struct App {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub source: Arc<SourceClient>,
    pub portal: Arc<PortalClient>,
    pub tables: Arc<MappingTables>,
    pub counters: Arc<PushCounters>,
    pub health: Arc<Health>,
    work_available: Arc<Notify>,
}

impl App {
    pub async fn build(settings: Settings) -> anyhow::Result<App> {
        let retry = RetryPolicy {
            min_delay: Duration::from_millis(settings.portal.retry_min_delay_ms),
            max_delay: Duration::from_secs(settings.portal.retry_max_delay_seconds),
            max_times: settings.portal.call_retries,
        };
        let source = SourceClient::new(&settings.source, retry)
            .context("failed to set up the source client")?;
        let portal = PortalClient::new(&settings.portal, retry)
            .context("failed to set up the portal client")?;
        let tables = match &settings.mapping.tables_file {
            Some(path) => MappingTables::load(path).map_err(|error| {
                anyhow::anyhow!("configuration key `mapping.tables_file`: {error}")
            })?,
            None => MappingTables::default(),
        };
        let store = crate::store::open(&settings.store).await?;
        let released = store
            .release_claims(&settings.store.instance)
            .await
            .context("failed to release this instance's earlier claims")?;
        if released > 0 {
            tracing::info!(
                released,
                "took back work this instance had in flight when it last stopped"
            );
        }
        Ok(App {
            store,
            source: Arc::new(source),
            portal: Arc::new(portal),
            tables: Arc::new(tables),
            counters: Arc::new(PushCounters::default()),
            health: Arc::new(Health::default()),
            work_available: Arc::new(Notify::new()),
            settings,
        })
    }

    fn feed_options(&self) -> FeedOptions {
        FeedOptions {
            page_size: self.settings.source.page_size,
            lookback: Duration::from_secs(self.settings.source.lookback_seconds),
            max_tie_block_passes: self.settings.source.max_tie_block_passes,
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
        let mut sink = IngestSink::new(self.store.clone(), self.tables.clone());
        let result = feed::poll(
            &self.source,
            self.feed_options(),
            cursor,
            initial_from(&self.settings.source),
            &mut sink,
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
        }
    }

    /// Polls and pushes until `shutdown` fires; returns once every task stopped at a safe point.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) -> anyhow::Result<()> {
        let tracker = TaskTracker::new();
        tracker.spawn(self.clone().poll_loop(shutdown.clone()));
        for worker in 0..self.settings.portal.concurrency {
            tracker.spawn(self.clone().push_loop(worker, shutdown.clone()));
        }
        tracker.close();
        tracker.wait().await;
        Ok(())
    }

    async fn poll_loop(self: Arc<Self>, shutdown: CancellationToken) {
        let mut leading = false;
        loop {
            // Of several instances sharing a ledger, one polls the source (the lease holder); all push.
            let now_leading = self.lead_polling().await;
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
                tokio::select! {
                    () = tokio::time::sleep(self.settings.poll_interval()) => continue,
                    () = shutdown.cancelled() => return,
                }
            }
            let started = std::time::Instant::now();
            // Stopping mid-poll loses nothing: each page commits atomically with its cursor, and a page
            // whose transaction was not committed is simply read again by the next poll.
            let outcome = tokio::select! {
                outcome = self.poll_once() => Some(outcome),
                () = self.keep_polling_lease() => {
                    tracing::warn!("lost the polling lease to another instance; this poll stops");
                    continue;
                }
                () = shutdown.cancelled() => None,
            };
            self.health.polls.fetch_add(1, Ordering::Relaxed);
            match outcome {
                None => return,
                Some(Ok((poll, ingest))) => {
                    self.health
                        .last_poll_ok
                        .store(Timestamp::now().as_millisecond(), Ordering::Relaxed);
                    tracing::info!(
                        requests = poll.requests,
                        records = ingest.received,
                        unchanged = ingest.unchanged,
                        queued = ingest.queued,
                        held = ingest.held,
                        skipped = ingest.skipped,
                        tie_blocks = poll.tie_blocks,
                        cursor = %poll.cursor.map(|cursor| cursor.to_string()).unwrap_or_default(),
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "poll done"
                    );
                }
                Some(Err(error)) => {
                    self.health.poll_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %error, "poll failed; the cursor stays where the last committed page left it");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(self.settings.poll_interval()) => {}
                () = shutdown.cancelled() => return,
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
    /// lease); returns only when the lease is lost.
    async fn keep_polling_lease(&self) {
        let every = Duration::from_secs(self.settings.store.lease_seconds) / 3;
        loop {
            tokio::time::sleep(every).await;
            if !self.lead_polling().await {
                return;
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
                    self.health
                        .last_push_ok
                        .store(Timestamp::now().as_millisecond(), Ordering::Relaxed);
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
