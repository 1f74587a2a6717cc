//! What the daemon tells about itself (polls, portal calls and batches, reconciliation runs), each event
//! logged and counted in one place (the pattern of
//! Vector's `internal_events`): an event is a value saying what happened, and its `emit` writes the log
//! line and updates the metrics together. A new event is one type and one call, never a log line in one
//! file and a counter in another that can drift apart.
//!
//! Events carry codes, counts and ids, never personal data.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::metrics::{Side, SyncMetrics};
use crate::portal::client::PortalError;
use crate::source::feed::{FeedError, PollStats};

/// A poll that reached the end of the feed.
pub struct PollCompleted<'a> {
    pub poll: &'a PollStats,
    /// Records read, and of them unchanged since the ledger's version (not normalized again).
    pub received: u64,
    pub unchanged: u64,
    /// New versions queued for the portal, held back, skipped.
    pub queued: u64,
    pub held: u64,
    pub skipped: u64,
    /// Held back by their first reason code.
    pub held_by_reason: &'a BTreeMap<String, u64>,
    /// New versions stamped ahead of the clock, by unit.
    pub future_by_unit: &'a BTreeMap<String, u64>,
    pub elapsed: Duration,
}

impl PollCompleted<'_> {
    pub fn emit(&self, metrics: &SyncMetrics) {
        let poll = self.poll;
        metrics.record_poll(
            self.received,
            self.received.saturating_sub(self.unchanged),
            self.held_by_reason,
            self.future_by_unit,
            self.elapsed,
        );
        metrics.record_feed_anomalies(poll.future_rows, poll.count_contradictions);
        if poll.future_rows > 0 {
            tracing::warn!(
                rows = poll.future_rows,
                newest = %poll.newest_future.map(|at| at.to_string()).unwrap_or_default(),
                new_versions = self.future_by_unit.values().sum::<u64>(),
                "the source's feed holds rows stamped ahead of the clock (beyond source.max_clock_skew_seconds); they are ingested, the cursor does not follow them"
            );
        }
        if poll.count_contradictions > 0 {
            tracing::warn!(
                answers = poll.count_contradictions,
                "the source's counts (totalElements, last) contradicted the rows it sent; only the rows were trusted"
            );
        }
        tracing::info!(
            requests = poll.requests,
            records = self.received,
            unchanged = self.unchanged,
            queued = self.queued,
            held = self.held,
            skipped = self.skipped,
            tie_blocks = poll.tie_blocks,
            cursor = %poll.cursor.map(|cursor| cursor.to_string()).unwrap_or_default(),
            elapsed_ms = self.elapsed.as_millis() as u64,
            "poll done"
        );
    }
}

/// A poll that stopped on an error; the cursor stays where the last committed page left it.
pub struct PollFailed<'a> {
    pub error: &'a FeedError,
    pub elapsed: Duration,
    /// When the next poll comes, beyond the usual interval (a source that does not page backs off).
    pub retry_in: Duration,
}

impl PollFailed<'_> {
    pub fn emit(&self, metrics: &SyncMetrics) {
        let error = self.error;
        metrics.record_poll_failure(error.kind(), self.elapsed);
        if error.is_not_paging() {
            tracing::error!(
                error = %error,
                retry_in_s = self.retry_in.as_secs(),
                "poll stopped: the source is not paging; the cursor stays"
            );
            return;
        }
        match error.kind().as_str() {
            // The client's login gate logged the refusal (once per attempt) and paces the attempts;
            // /readyz shows it.
            "credentials" => tracing::debug!(
                error = %error,
                "poll skipped: the source's credentials were refused"
            ),
            _ => tracing::warn!(
                error = %error,
                "poll failed; the cursor stays where the last committed page left it"
            ),
        }
    }
}

/// A portal answer that does not match the items sent: entries for dossiers not sent (ignored), items
/// without an answer of their own (sent again later, never taken as stored).
pub struct AnswerMismatch<'a> {
    pub service: &'a str,
    pub call: u64,
    pub items: usize,
    pub ignored_entries: usize,
    pub unanswered: usize,
}

impl AnswerMismatch<'_> {
    pub fn emit(&self, metrics: &SyncMetrics) {
        metrics.record_unmatched_answers(self.ignored_entries, self.unanswered);
        tracing::warn!(
            service = self.service,
            call = self.call,
            items = self.items,
            ignored_entries = self.ignored_entries,
            unanswered = self.unanswered,
            "the portal's answer does not match the items sent; unanswered items go back to the queue"
        );
    }
}

/// A portal call that failed after its retries; its items go back to the queue.
pub struct PortalCallFailed<'a> {
    pub service: &'a str,
    pub call: u64,
    pub items: usize,
    pub error: &'a PortalError,
}

impl PortalCallFailed<'_> {
    pub fn emit(&self, metrics: &SyncMetrics) {
        let (service, call, items, error) = (self.service, self.call, self.items, self.error);
        metrics.record_error(Side::Portal, error.kind());
        match error {
            // Retrying cannot help until an operator fixes the account: said loudly, once a call.
            PortalError::Credentials(_) => tracing::error!(
                service,
                call,
                items,
                error = %error,
                "the portal refuses the account; check portal.username and the password"
            ),
            _ => tracing::warn!(
                service,
                call,
                items,
                error = %error,
                "portal call failed after retries; its items go back to the queue"
            ),
        }
    }
}

/// A batch the portal answered: its verdicts, and one summary line (never one line per dossier).
pub struct BatchPushed<'a> {
    pub claimed: usize,
    pub accepted: usize,
    pub retried: usize,
    /// The portal's code of each refused dossier.
    pub refused_codes: &'a [i64],
}

impl BatchPushed<'_> {
    pub fn emit(&self, metrics: &SyncMetrics) {
        metrics.record_verdicts(self.accepted, self.refused_codes, self.retried);
        tracing::info!(
            claimed = self.claimed,
            accepted = self.accepted,
            refused = self.refused_codes.len(),
            retried = self.retried,
            "batch pushed"
        );
    }
}

/// A reconciliation run the daemon made (`kind`: at start, the schedule, the night's wider window).
pub struct ReconciliationRun<'a> {
    pub kind: &'a str,
    pub run_id: &'a str,
    pub from: jiff::civil::Date,
    pub to: jiff::civil::Date,
    pub units: usize,
    /// Units not complete (a gap, a reason, something waiting).
    pub incomplete: usize,
    /// Dossiers found at the source and not in the ledger, fetched and queued.
    pub fetched: u64,
    /// What the run could not do (a side that did not answer), said to the operator.
    pub notes: &'a [String],
}

impl ReconciliationRun<'_> {
    pub fn emit(&self, metrics: &SyncMetrics) {
        metrics.record_reconciliation(true);
        tracing::info!(
            kind = self.kind,
            run_id = %self.run_id,
            from = %self.from,
            to = %self.to,
            units = self.units,
            incomplete = self.incomplete,
            fetched = self.fetched,
            "reconciliation done"
        );
        for note in self.notes {
            tracing::warn!(run_id = %self.run_id, "reconciliation: {note}");
        }
    }
}

/// A reconciliation run that stopped on an error; the next run tries again.
pub struct ReconciliationFailed<'a> {
    pub kind: &'a str,
    pub error: &'a dyn std::fmt::Display,
}

impl ReconciliationFailed<'_> {
    pub fn emit(&self, metrics: &SyncMetrics) {
        metrics.record_reconciliation(false);
        tracing::warn!(
            kind = self.kind,
            error = %self.error,
            "reconciliation failed; trying at the next run"
        );
    }
}
