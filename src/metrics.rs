//! The daemon's Prometheus metrics: counters and histograms updated where the events happen (a poll, a
//! batch, a failed call), and gauges read from the ledger when `/metrics` is scraped. Names follow one
//! scheme, `tthc_sync_<noun>_<unit>`; labels are low-cardinality (reason and portal codes, error kinds,
//! the unit).

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    side: &'static str,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnitLabel {
    unit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SideLabel {
    side: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

/// Which side an error came from.
#[derive(Debug, Clone, Copy)]
pub enum Side {
    Source,
    Portal,
}

/// The event metrics, shared by the poll loop and the push workers (cheap atomic updates).
#[derive(Debug)]
pub struct SyncMetrics {
    fetched: Counter,
    normalized: Counter,
    held: Family<ReasonLabel, Counter>,
    sent: Counter,
    accepted: Counter,
    refused: Family<CodeLabel, Counter>,
    retried: Counter,
    /// Portal answer entries for a `MaHoSo` that was not sent (ignored).
    ignored_entries: Counter,
    /// Items sent without exactly one answer entry of their own (sent again later).
    unanswered: Counter,
    poll_duration: Histogram,
    push_duration: Histogram,
    errors: Family<ErrorLabels, Counter>,
    future_versions: Family<UnitLabel, Counter>,
    future_rows: Counter,
    count_contradictions: Counter,
    reconciliations: Family<OutcomeLabel, Counter>,
}

impl Default for SyncMetrics {
    fn default() -> Self {
        SyncMetrics {
            fetched: Counter::default(),
            normalized: Counter::default(),
            held: Family::default(),
            sent: Counter::default(),
            accepted: Counter::default(),
            refused: Family::default(),
            retried: Counter::default(),
            ignored_entries: Counter::default(),
            unanswered: Counter::default(),
            // 50 ms to about 7 minutes: a poll of a quiet feed, up to a first poll of a large backlog.
            poll_duration: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            // 10 ms to about 80 s: one portal call, retries included.
            push_duration: Histogram::new(exponential_buckets(0.01, 2.0, 14)),
            errors: Family::default(),
            future_versions: Family::default(),
            future_rows: Counter::default(),
            count_contradictions: Counter::default(),
            reconciliations: Family::default(),
        }
    }
}

/// What the ledger and the daemon's state say at scrape time.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Dossiers pending or in flight, plus progress entries not yet sent.
    pub queue_depth: i64,
    /// Age of the oldest dossier not yet on the portal (0 when none waits).
    pub oldest_unsent_seconds: f64,
    /// Unix seconds of the last successful poll and push (0: none yet).
    pub last_poll_success: f64,
    pub last_push_success: f64,
    pub ready: bool,
    /// Calls to the portal allowed in flight now (adaptive concurrency).
    pub portal_concurrency: i64,
    /// The portal's rate learnt from its 429s, calls per second (0: none learnt yet).
    pub portal_rate_learnt: f64,
    /// Per unit, from the latest reconciliation.
    pub units: Vec<UnitSnapshot>,
    /// Refused logins since start, per client (`source`, `portal`, `source.gateway`, `portal.gateway`).
    pub login_refusals: Vec<(&'static str, u64)>,
}

#[derive(Debug, Clone, Default)]
pub struct UnitSnapshot {
    pub unit: String,
    pub complete: bool,
    /// Dossiers that should be on the portal and are not.
    pub missing: i64,
    /// Accepted dossiers whose copy on the portal differed from the payload (the content check).
    pub content_differs: i64,
    /// Sync completeness ([`crate::reconcile::completeness`]); `None` without a source count.
    pub completeness: Option<f64>,
    /// Unix seconds of the reconciliation.
    pub reconciled_at: f64,
}

impl SyncMetrics {
    /// A poll that reached the end of the feed: records read, records normalized (not unchanged), new
    /// versions held back by reason code, and new versions stamped ahead of the clock by unit.
    pub fn record_poll(
        &self,
        fetched: u64,
        normalized: u64,
        held_by_reason: &BTreeMap<String, u64>,
        future_by_unit: &BTreeMap<String, u64>,
        elapsed: Duration,
    ) {
        self.fetched.inc_by(fetched);
        self.normalized.inc_by(normalized);
        for (reason, count) in held_by_reason {
            self.held
                .get_or_create(&ReasonLabel {
                    reason: reason.clone(),
                })
                .inc_by(*count);
        }
        for (unit, count) in future_by_unit {
            self.future_versions
                .get_or_create(&UnitLabel { unit: unit.clone() })
                .inc_by(*count);
        }
        self.poll_duration.observe(elapsed.as_secs_f64());
    }

    /// What a poll met of the source's hostile behaviours: rows stamped ahead of the clock (source-api.md
    /// quirk 10) and counts that contradicted the rows (quirk 12).
    pub fn record_feed_anomalies(&self, future_rows: u64, count_contradictions: u64) {
        self.future_rows.inc_by(future_rows);
        self.count_contradictions.inc_by(count_contradictions);
    }

    /// A poll that failed.
    pub fn record_poll_failure(&self, kind: String, elapsed: Duration) {
        self.record_error(Side::Source, kind);
        self.poll_duration.observe(elapsed.as_secs_f64());
    }

    /// One call to the portal with `items` dossiers, and how long it took (retries included).
    pub fn record_push_call(&self, items: usize, elapsed: Duration) {
        self.sent.inc_by(items as u64);
        self.push_duration.observe(elapsed.as_secs_f64());
    }

    /// The verdicts of a batch: accepted, refused (by portal code), to be retried.
    pub fn record_verdicts(&self, accepted: usize, refused_codes: &[i64], retried: usize) {
        self.accepted.inc_by(accepted as u64);
        self.retried.inc_by(retried as u64);
        for code in refused_codes {
            self.refused
                .get_or_create(&CodeLabel {
                    code: code.to_string(),
                })
                .inc();
        }
    }

    /// A portal answer that did not match the items sent: entries ignored, items left without an answer.
    pub fn record_unmatched_answers(&self, ignored_entries: usize, unanswered: usize) {
        self.ignored_entries.inc_by(ignored_entries as u64);
        self.unanswered.inc_by(unanswered as u64);
    }

    /// A reconciliation run that ended (`done`) or stopped on an error (`failed`).
    pub fn record_reconciliation(&self, done: bool) {
        let outcome = if done { "done" } else { "failed" };
        self.reconciliations
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    pub fn record_error(&self, side: Side, kind: String) {
        let side = match side {
            Side::Source => "source",
            Side::Portal => "portal",
        };
        self.errors.get_or_create(&ErrorLabels { side, kind }).inc();
    }

    /// Dossiers the portal accepted so far (the dashboard's throughput).
    pub fn accepted_total(&self) -> u64 {
        self.accepted.get()
    }

    /// The Prometheus text exposition (format 0.0.4) of every metric, gauges from `snapshot`.
    pub fn encode(&self, snapshot: &Snapshot) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::default();
        let build = Family::<VersionLabel, Gauge>::default();
        build
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        registry.register(
            "tthc_sync_build_info",
            "The running version (always 1)",
            build,
        );
        let counters = [
            (
                "tthc_sync_dossiers_fetched",
                "Dossier records read from the source's feed",
                &self.fetched,
            ),
            (
                "tthc_sync_dossiers_normalized",
                "New dossier versions normalized",
                &self.normalized,
            ),
            (
                "tthc_sync_dossiers_sent",
                "Dossiers sent to the portal (each attempt counts)",
                &self.sent,
            ),
            (
                "tthc_sync_dossiers_accepted",
                "Dossiers the portal accepted",
                &self.accepted,
            ),
            (
                "tthc_sync_dossiers_retried",
                "Dossiers put back to be sent again later",
                &self.retried,
            ),
            (
                "tthc_sync_portal_answer_entries_ignored",
                "Portal answer entries for a MaHoSo that was not sent in the call (ignored)",
                &self.ignored_entries,
            ),
            (
                "tthc_sync_portal_items_unanswered",
                "Items sent to the portal without exactly one answer entry of their own (sent again)",
                &self.unanswered,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "tthc_sync_future_stamped_rows",
            "Rows met in polls stamped beyond the poll's start plus source.max_clock_skew_seconds (each poll counts the rows it met)",
            self.future_rows.clone(),
        );
        registry.register(
            "tthc_sync_future_stamped_versions",
            "New dossier versions stamped ahead of the clock, by unit",
            self.future_versions.clone(),
        );
        registry.register(
            "tthc_sync_source_count_contradictions",
            "Feed answers whose totalElements or last contradicted their rows (counts are hints only)",
            self.count_contradictions.clone(),
        );
        registry.register(
            "tthc_sync_reconciliations",
            "Reconciliation runs inside the daemon, by outcome (done, failed)",
            self.reconciliations.clone(),
        );
        registry.register(
            "tthc_sync_dossiers_held",
            "Dossiers held back by tthc-sync, by reason",
            self.held.clone(),
        );
        registry.register(
            "tthc_sync_dossiers_refused",
            "Dossiers the portal refused, by portal code",
            self.refused.clone(),
        );
        registry.register(
            "tthc_sync_errors",
            "Failed calls to the source or the portal, by kind",
            self.errors.clone(),
        );
        registry.register(
            "tthc_sync_poll_duration_seconds",
            "Duration of a poll of the source's feed",
            self.poll_duration.clone(),
        );
        registry.register(
            "tthc_sync_push_duration_seconds",
            "Duration of a call sending a batch to the portal",
            self.push_duration.clone(),
        );
        let gauge = |value: i64| {
            let gauge = Gauge::<i64>::default();
            gauge.set(value);
            gauge
        };
        let gauge_f64 = |value: f64| {
            let gauge = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
            gauge.set(value);
            gauge
        };
        registry.register(
            "tthc_sync_queue_depth",
            "Dossiers waiting to be sent or in flight, plus progress entries not yet sent",
            gauge(snapshot.queue_depth),
        );
        registry.register(
            "tthc_sync_oldest_unsent_seconds",
            "Age of the oldest dossier not on the portal (waiting, held back or refused)",
            gauge_f64(snapshot.oldest_unsent_seconds),
        );
        registry.register(
            "tthc_sync_last_poll_success_timestamp_seconds",
            "When the last poll of the source succeeded (Unix seconds)",
            gauge_f64(snapshot.last_poll_success),
        );
        registry.register(
            "tthc_sync_last_push_success_timestamp_seconds",
            "When the portal last answered a batch (Unix seconds)",
            gauge_f64(snapshot.last_push_success),
        );
        registry.register(
            "tthc_sync_portal_concurrency_limit",
            "Calls to the portal allowed in flight now (learnt from its answers, at most portal.concurrency)",
            gauge(snapshot.portal_concurrency),
        );
        registry.register(
            "tthc_sync_portal_rate_limit_learnt",
            "The portal's rate learnt from its 429s, that calls are paced to (calls per second; 0 before any 429)",
            gauge_f64(snapshot.portal_rate_learnt),
        );
        registry.register(
            "tthc_sync_ready",
            "1 when /readyz answers 200",
            gauge(i64::from(snapshot.ready)),
        );
        let refusals = Family::<SideLabel, Counter>::default();
        for (side, count) in &snapshot.login_refusals {
            refusals.get_or_create(&SideLabel { side }).inc_by(*count);
        }
        registry.register(
            "tthc_sync_login_refusals",
            "Logins refused since start (wrong account or secret), per client; logins then back off",
            refusals,
        );
        let complete = Family::<UnitLabel, Gauge>::default();
        let missing = Family::<UnitLabel, Gauge>::default();
        let content_differs = Family::<UnitLabel, Gauge>::default();
        let reconciled = Family::<UnitLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        let completeness = Family::<UnitLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        for unit in &snapshot.units {
            let label = UnitLabel {
                unit: unit.unit.clone(),
            };
            if let Some(share) = unit.completeness {
                completeness.get_or_create(&label).set(share);
            }
            complete.get_or_create(&label).set(i64::from(unit.complete));
            missing.get_or_create(&label).set(unit.missing);
            content_differs
                .get_or_create(&label)
                .set(unit.content_differs);
            reconciled.get_or_create(&label).set(unit.reconciled_at);
        }
        registry.register(
            "tthc_sync_unit_complete",
            "1 when the unit's latest reconciliation found every dossier on the portal",
            complete,
        );
        registry.register(
            "tthc_sync_unit_missing_dossiers",
            "Dossiers of the unit not on the portal at its latest reconciliation",
            missing,
        );
        registry.register(
            "tthc_sync_unit_content_differs",
            "Accepted dossiers of the unit whose copy on the portal differed from the payload at its latest reconciliation (sent again)",
            content_differs,
        );
        registry.register(
            "tthc_sync_unit_completeness_ratio",
            "Sync completeness of the unit at its latest reconciliation (0-1; absent without a source count)",
            completeness,
        );
        registry.register(
            "tthc_sync_unit_reconciled_timestamp_seconds",
            "When the unit was last reconciled (Unix seconds)",
            reconciled,
        );
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciliation_runs_are_counted_by_outcome() {
        let metrics = SyncMetrics::default();
        metrics.record_reconciliation(true);
        metrics.record_reconciliation(true);
        metrics.record_reconciliation(false);
        let text = metrics.encode(&Snapshot::default()).unwrap();
        assert!(
            text.contains("tthc_sync_reconciliations_total{outcome=\"done\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tthc_sync_reconciliations_total{outcome=\"failed\"} 1"),
            "{text}"
        );
    }
}
