//! The daemon's loops: [`App::run`] starts the poll loop (source feed → ledger, one instance at a
//! time), the push workers (ledger → portal) and the reconciliation schedule, and stops them at a safe
//! point.

use super::*;

impl App {
    pub(super) fn feed_options(&self) -> FeedOptions {
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

    pub(super) async fn poll_loop(self: Arc<Self>, shutdown: CancellationToken) {
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
                    if error.is_not_paging() {
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
    pub(super) async fn wait_beating(&self, shutdown: &CancellationToken, pause: Duration) -> bool {
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

    pub(super) async fn push_loop(self: Arc<Self>, worker: usize, shutdown: CancellationToken) {
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

    /// Regular reconciliations every `reconcile.interval_minutes`, and the nightly one at
    /// `reconcile.nightly_hour` (Vietnam time) over the longer window.
    pub(super) async fn reconcile_loop(self: Arc<Self>, shutdown: CancellationToken) {
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
}

/// The readiness condition of a source that does not page (source-api.md quirk 13).
pub(super) const NOT_PAGING: &str = "source_not_paging";
/// The longest pause after polls that found the source not paging.
pub(super) const MAX_NOT_PAGING_BACKOFF: Duration = Duration::from_secs(600);

/// The pause after `failures` failed polls in a row: the poll interval doubled per failure, up to `cap`
/// (and never below the interval).
pub fn poll_backoff(failures: u32, interval: Duration, cap: Duration) -> Duration {
    let doubled = interval.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    doubled.min(cap).max(interval)
}

/// The ingest sink, noting each committed page for the heartbeat.
pub(super) struct ProgressSink<'a> {
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
