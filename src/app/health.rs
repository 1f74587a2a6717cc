//! The daemon's signs of life: the times of the last successes, the running totals, the heartbeat the
//! systemd watchdog reads, and the conditions that make `/readyz` fail.

use super::*;

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

    pub(super) fn beat_every(&self) -> Duration {
        match self.beat_every_ms.load(Ordering::Relaxed) {
            millis if millis > 0 => Duration::from_millis(millis as u64),
            _ => HEARTBEAT_EVERY,
        }
    }

    pub(super) fn beat(&self) {
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

    pub(super) fn progressed(&self) {
        self.poll_progress.store(unix_millis(), Ordering::Relaxed);
        self.beat();
    }

    /// Beats while the poll or pass running beside it commits pages; never returns.
    pub(super) async fn beat_while_progressing(&self) {
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
