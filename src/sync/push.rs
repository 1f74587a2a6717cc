//! The pusher: claims due dossiers, sends them to the portal in batches (create or update from what the
//! portal already has, with the fallbacks for codes 3 and 4), sends progress entries of accepted dossiers,
//! and records every answer. One step ([`Pusher::push_due_batch`]) is what the loop and the tests call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use super::decide::{PortalVerdict, retry_delay, verdict};
use crate::metrics::{Side, SyncMetrics};
use crate::portal::client::{ItemAnswer, PortalClient, PortalError};
use crate::store::{
    AttemptRecord, ClaimedDossier, ClaimedProgress, DeliveryOutcome, DeliveryResult, Millis,
    ProgressResult, Store, StoreError,
};

/// Running totals, shared by the workers and read by progress lines (the metrics are [`SyncMetrics`]).
#[derive(Debug, Default)]
pub struct PushCounters {
    pub calls: AtomicU64,
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub refused: AtomicU64,
    pub retried: AtomicU64,
    pub progress_sent: AtomicU64,
    pub failed_calls: AtomicU64,
}

/// What one step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushStats {
    pub claimed: usize,
    pub accepted: usize,
    pub refused: usize,
    pub retried: usize,
}

pub struct Pusher {
    pub store: Arc<dyn Store>,
    pub portal: Arc<PortalClient>,
    pub owner: String,
    pub batch_size: usize,
    pub lease: Duration,
    pub redeliver_base: Duration,
    pub redeliver_cap: Duration,
    pub counters: Arc<PushCounters>,
    pub metrics: Arc<SyncMetrics>,
}

fn now_millis() -> Millis {
    Timestamp::now().as_millisecond()
}

impl Pusher {
    /// Claims up to one batch of due dossiers, sends them and records the answers.
    pub async fn push_due_batch(&self) -> Result<PushStats, StoreError> {
        let now = now_millis();
        let claimed = self
            .store
            .claim_dossiers(
                &self.owner,
                self.batch_size,
                now,
                now + self.lease.as_millis() as Millis,
            )
            .await?;
        let mut stats = PushStats {
            claimed: claimed.len(),
            ..PushStats::default()
        };
        if claimed.is_empty() {
            return Ok(stats);
        }
        let (updates, creates): (Vec<&ClaimedDossier>, Vec<&ClaimedDossier>) =
            claimed.iter().partition(|dossier| dossier.portal_has);
        let mut results = Vec::with_capacity(claimed.len());
        let mut as_update = Vec::new();
        let mut as_create = Vec::new();
        for (updating, group) in [(false, creates), (true, updates)] {
            if group.is_empty() {
                continue;
            }
            match self.send(updating, &group).await {
                Ok(answers) => {
                    for (dossier, answer) in group.into_iter().zip(answers) {
                        match verdict(answer.code, answer.message.as_deref()) {
                            PortalVerdict::AlreadyExists if !updating => as_update.push(dossier),
                            PortalVerdict::DoesNotExist if updating => as_create.push(dossier),
                            other => results.push(self.result(dossier, other)),
                        }
                    }
                }
                Err(error) => results.extend(
                    group
                        .into_iter()
                        .map(|dossier| self.retry(dossier, &error.to_string())),
                ),
            }
        }
        // The fallbacks, once: code 3 on a create means the portal has it; code 4 on an update means it
        // does not. A second mismatch is retried later rather than bounced back and forth now.
        for (updating, group) in [(true, as_update), (false, as_create)] {
            if group.is_empty() {
                continue;
            }
            match self.send(updating, &group).await {
                Ok(answers) => {
                    for (dossier, answer) in group.into_iter().zip(answers) {
                        let verdict = match verdict(answer.code, answer.message.as_deref()) {
                            PortalVerdict::AlreadyExists | PortalVerdict::DoesNotExist => {
                                PortalVerdict::Transient {
                                    message: format!(
                                        "portal code {} after the create/update fallback",
                                        answer.code
                                    ),
                                }
                            }
                            other => other,
                        };
                        results.push(self.result(dossier, verdict));
                    }
                }
                Err(error) => results.extend(
                    group
                        .into_iter()
                        .map(|dossier| self.retry(dossier, &error.to_string())),
                ),
            }
        }
        for result in &results {
            match result.outcome {
                DeliveryOutcome::Accepted => stats.accepted += 1,
                DeliveryOutcome::Refused { .. } => stats.refused += 1,
                DeliveryOutcome::Retry { .. } => stats.retried += 1,
            }
        }
        let now = now_millis();
        let progress = self
            .store
            .record_deliveries(
                &self.owner,
                &results,
                now,
                now + self.lease.as_millis() as Millis,
            )
            .await?;
        // The progress entries of the dossiers just accepted were claimed with their answers.
        self.send_progress(progress).await?;
        let refused_codes: Vec<i64> = results
            .iter()
            .filter_map(|result| match &result.outcome {
                DeliveryOutcome::Refused { code, .. } => Some(*code),
                _ => None,
            })
            .collect();
        self.metrics
            .record_verdicts(stats.accepted, &refused_codes, stats.retried);
        self.counters
            .accepted
            .fetch_add(stats.accepted as u64, Ordering::Relaxed);
        self.counters
            .refused
            .fetch_add(stats.refused as u64, Ordering::Relaxed);
        self.counters
            .retried
            .fetch_add(stats.retried as u64, Ordering::Relaxed);
        // The per-batch summary an operator reads (one line per batch, never one per dossier).
        tracing::info!(
            claimed = stats.claimed,
            accepted = stats.accepted,
            refused = stats.refused,
            retried = stats.retried,
            "batch pushed"
        );
        Ok(stats)
    }

    async fn send(
        &self,
        updating: bool,
        group: &[&ClaimedDossier],
    ) -> Result<Vec<ItemAnswer>, PortalError> {
        let payloads: Vec<&str> = group
            .iter()
            .map(|dossier| dossier.payload.as_str())
            .collect();
        let started = Instant::now();
        self.counters.calls.fetch_add(1, Ordering::Relaxed);
        self.counters
            .sent
            .fetch_add(payloads.len() as u64, Ordering::Relaxed);
        let answer = self.portal.sync_dossiers(updating, &payloads).await;
        self.metrics
            .record_push_call(payloads.len(), started.elapsed());
        self.log_call("DongBoHoSoMC", payloads.len(), started, &answer)
            .await;
        answer
    }

    async fn log_call(
        &self,
        service: &str,
        items: usize,
        started: Instant,
        answer: &Result<Vec<ItemAnswer>, PortalError>,
    ) {
        let (outcome, detail) = match answer {
            Ok(answers) if answers.iter().all(|answer| answer.code == 0) => ("ok", None),
            Ok(answers) => {
                let failed = answers.iter().filter(|answer| answer.code != 0).count();
                ("partial", Some(format!("{failed} of {items} not stored")))
            }
            Err(error @ PortalError::Credentials(_)) => {
                // Retrying cannot help until an operator fixes the account: say so loudly, once a call.
                self.counters.failed_calls.fetch_add(1, Ordering::Relaxed);
                self.metrics.record_error(Side::Portal, error.kind());
                tracing::error!(service, items, error = %error, "the portal refuses the account; check portal.username and the password");
                ("failed", Some(error.to_string()))
            }
            Err(error) => {
                self.counters.failed_calls.fetch_add(1, Ordering::Relaxed);
                self.metrics.record_error(Side::Portal, error.kind());
                tracing::warn!(service, items, error = %error, "portal call failed after retries; its items go back to the queue");
                ("failed", Some(error.to_string()))
            }
        };
        let record = AttemptRecord {
            at: now_millis(),
            owner: self.owner.clone(),
            service: service.to_string(),
            items: items as i64,
            outcome,
            detail,
            duration_ms: started.elapsed().as_millis() as i64,
        };
        if let Err(error) = self.store.log_attempt(&record).await {
            tracing::warn!(error = %error, "cannot write the attempt log");
        }
    }

    fn result(&self, dossier: &ClaimedDossier, verdict: PortalVerdict) -> DeliveryResult {
        let outcome = match verdict {
            PortalVerdict::Stored => DeliveryOutcome::Accepted,
            PortalVerdict::Refused { code, message } => DeliveryOutcome::Refused { code, message },
            PortalVerdict::AlreadyExists | PortalVerdict::DoesNotExist => {
                return self.retry(dossier, "create/update mismatch");
            }
            PortalVerdict::Transient { message } => return self.retry(dossier, &message),
        };
        DeliveryResult {
            source_id: dossier.source_id.clone(),
            payload_hash: dossier.payload_hash.clone(),
            outcome,
        }
    }

    fn retry(&self, dossier: &ClaimedDossier, error: &str) -> DeliveryResult {
        DeliveryResult {
            source_id: dossier.source_id.clone(),
            payload_hash: dossier.payload_hash.clone(),
            outcome: DeliveryOutcome::Retry {
                error: error.to_string(),
                next_attempt_at: self.next_attempt(dossier.attempts + 1, &dossier.source_id),
            },
        }
    }

    fn next_attempt(&self, attempts: u32, seed_text: &str) -> Millis {
        let seed = u64::from_le_bytes(
            blake3::hash(seed_text.as_bytes()).as_bytes()[..8]
                .try_into()
                .unwrap_or([0; 8]),
        );
        now_millis()
            + retry_delay(attempts, self.redeliver_base, self.redeliver_cap, seed).as_millis()
                as Millis
    }

    /// Claims up to one batch of due progress entries (of dossiers the portal has) and sends them.
    pub async fn push_due_progress(&self) -> Result<usize, StoreError> {
        let now = now_millis();
        let claimed: Vec<ClaimedProgress> = self
            .store
            .claim_progress(
                &self.owner,
                self.batch_size,
                now,
                now + self.lease.as_millis() as Millis,
            )
            .await?;
        self.send_progress(claimed).await
    }

    /// Sends claimed progress entries in calls of at most one batch and records every answer in one
    /// transaction.
    async fn send_progress(&self, claimed: Vec<ClaimedProgress>) -> Result<usize, StoreError> {
        if claimed.is_empty() {
            return Ok(0);
        }
        let mut results: Vec<ProgressResult> = Vec::with_capacity(claimed.len());
        for chunk in claimed.chunks(self.batch_size) {
            let payloads: Vec<&str> = chunk.iter().map(|entry| entry.payload.as_str()).collect();
            let started = Instant::now();
            self.counters.calls.fetch_add(1, Ordering::Relaxed);
            let answer = self.portal.sync_progress(&payloads).await;
            self.log_call("CapNhatTienDoHoSoMC", payloads.len(), started, &answer)
                .await;
            match answer {
                Ok(answers) => results.extend(chunk.iter().zip(answers).map(|(entry, answer)| {
                    let outcome = match verdict(answer.code, answer.message.as_deref()) {
                        PortalVerdict::Stored => DeliveryOutcome::Accepted,
                        PortalVerdict::Refused { code, message } => {
                            DeliveryOutcome::Refused { code, message }
                        }
                        other => DeliveryOutcome::Retry {
                            error: format!("{other:?}"),
                            next_attempt_at: self
                                .next_attempt(entry.attempts + 1, &entry.entry_key),
                        },
                    };
                    progress_result(entry, outcome)
                })),
                Err(error) => results.extend(chunk.iter().map(|entry| {
                    progress_result(
                        entry,
                        DeliveryOutcome::Retry {
                            error: error.to_string(),
                            next_attempt_at: self
                                .next_attempt(entry.attempts + 1, &entry.entry_key),
                        },
                    )
                })),
            }
        }
        let sent = results
            .iter()
            .filter(|result| matches!(result.outcome, DeliveryOutcome::Accepted))
            .count();
        self.counters
            .progress_sent
            .fetch_add(sent as u64, Ordering::Relaxed);
        self.store
            .record_progress(&self.owner, &results, now_millis())
            .await?;
        Ok(claimed.len())
    }
}

fn progress_result(entry: &ClaimedProgress, outcome: DeliveryOutcome) -> ProgressResult {
    ProgressResult {
        source_id: entry.source_id.clone(),
        entry_key: entry.entry_key.clone(),
        payload_hash: entry.payload_hash.clone(),
        outcome,
    }
}
