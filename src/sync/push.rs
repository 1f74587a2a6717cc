//! The pusher: claims due dossiers, sends them to the portal in batches (create or update from what the
//! portal already has, with the fallbacks for codes 3 and 4), sends progress entries of accepted dossiers,
//! and records every answer. One step ([`Pusher::push_due_batch`]) is what the loop and the tests call.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;

use crate::decide::{PortalVerdict, retry_delay, verdict};
use crate::events;
use crate::metrics::SyncMetrics;
use crate::portal::client::{ItemAnswer, ItemAnswers, PortalClient, PortalError};
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

/// What a step's calls brought back: a result per item sent, and the attempt-log line of each call, which
/// the ledger writes in the transaction that records the results.
struct Answered<R> {
    results: Vec<R>,
    calls: Vec<AttemptRecord>,
}

impl<R> Answered<R> {
    fn with_capacity(items: usize) -> Answered<R> {
        Answered {
            results: Vec::with_capacity(items),
            calls: Vec::new(),
        }
    }
}

fn now_millis() -> Millis {
    Timestamp::now().as_millisecond()
}

/// The `MaHoSo` of a progress entry's payload (the portal answers progress entries by it).
#[derive(serde::Deserialize)]
struct MaHoSoOnly<'a> {
    #[serde(rename = "MaHoSo", borrow, default)]
    ma_ho_so: std::borrow::Cow<'a, str>,
}

fn progress_ma_ho_so(payload: &str) -> String {
    serde_json::from_str::<MaHoSoOnly>(payload)
        .map(|only| only.ma_ho_so.into_owned())
        .unwrap_or_default()
}

/// Splits items into rounds in which no `MaHoSo` appears twice: an answer names only the `MaHoSo`, so two
/// items sharing one in a call could not be told apart.
fn unique_rounds<T>(items: Vec<&T>, code: impl Fn(&T) -> &str) -> Vec<Vec<&T>> {
    let mut rounds: Vec<Vec<&T>> = Vec::new();
    let mut seen: Vec<std::collections::HashSet<String>> = Vec::new();
    for item in items {
        let key = code(item).to_owned();
        match seen.iter().position(|round| !round.contains(&key)) {
            Some(index) => {
                seen[index].insert(key);
                rounds[index].push(item);
            }
            None => {
                seen.push(std::collections::HashSet::from([key]));
                rounds.push(vec![item]);
            }
        }
    }
    rounds
}

/// Whether a failed call may still have stored its items (a timeout, a cut answer, an internal error):
/// the portal may hold them, so the ledger stops claiming to know its last received version.
fn maybe_stored(error: &PortalError) -> bool {
    match error {
        PortalError::Credentials(_) | PortalError::Session(_) => false,
        // 2: the whole request is malformed, nothing stored.
        PortalError::Answer { code, .. } => *code != 2,
        PortalError::Transport(_) => true,
    }
}

impl Pusher {
    /// Claims up to one batch of due dossiers, sends them and records the answers. The claim's lease is
    /// renewed while the calls run, so that no other pusher takes the dossiers over while their call is
    /// in flight.
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
        let Some(claim) = claimed.first().map(|dossier| dossier.claim.clone()) else {
            return Ok(stats);
        };
        let ids: Vec<String> = claimed
            .iter()
            .map(|dossier| dossier.source_id.clone())
            .collect();
        let Answered { results, calls } = self.renewing(&claim, &ids, self.deliver(&claimed)).await;
        for result in &results {
            match result.outcome {
                DeliveryOutcome::Accepted => stats.accepted += 1,
                DeliveryOutcome::Refused { .. } => stats.refused += 1,
                DeliveryOutcome::Retry { .. } => stats.retried += 1,
            }
        }
        self.store
            .record_deliveries(&results, &calls, now_millis())
            .await?;
        let refused_codes: Vec<i64> = results
            .iter()
            .filter_map(|result| match &result.outcome {
                DeliveryOutcome::Refused { code, .. } => Some(*code),
                _ => None,
            })
            .collect();
        events::BatchPushed {
            claimed: stats.claimed,
            accepted: stats.accepted,
            retried: stats.retried,
            refused_codes: &refused_codes,
        }
        .emit(&self.metrics);
        self.counters
            .accepted
            .fetch_add(stats.accepted as u64, Ordering::Relaxed);
        self.counters
            .refused
            .fetch_add(stats.refused as u64, Ordering::Relaxed);
        self.counters
            .retried
            .fetch_add(stats.retried as u64, Ordering::Relaxed);
        Ok(stats)
    }

    /// Runs `work` while renewing the lease of `claim` on `ids` every third of the lease.
    async fn renewing<T>(
        &self,
        claim: &str,
        ids: &[String],
        work: impl std::future::Future<Output = T>,
    ) -> T {
        tokio::pin!(work);
        let period = (self.lease / 3).max(Duration::from_millis(100));
        loop {
            tokio::select! {
                output = &mut work => return output,
                () = tokio::time::sleep(period) => {
                    let until = now_millis() + self.lease.as_millis() as Millis;
                    if let Err(error) = self.store.renew_claim(claim, ids, until).await {
                        tracing::warn!(error = %error, "cannot renew the lease of a call in flight");
                    }
                }
            }
        }
    }

    /// Sends claimed dossiers (creates and updates from what the portal already has, then the fallbacks
    /// for codes 3 and 4) and returns one result per dossier.
    async fn deliver(&self, claimed: &[ClaimedDossier]) -> Answered<DeliveryResult> {
        let (updates, creates): (Vec<&ClaimedDossier>, Vec<&ClaimedDossier>) =
            claimed.iter().partition(|dossier| dossier.portal_has);
        let mut answered = Answered::with_capacity(claimed.len());
        let as_update = self.send_group(false, creates, true, &mut answered).await;
        let as_create = self.send_group(true, updates, true, &mut answered).await;
        // The fallbacks, once: code 3 on a create means the portal has it; code 4 on an update means it
        // does not. A second mismatch is retried later rather than bounced back and forth now.
        self.send_group(true, as_update, false, &mut answered).await;
        self.send_group(false, as_create, false, &mut answered)
            .await;
        answered
    }

    /// Sends `group` as creates or updates, in calls without a repeated `MaHoSo`, and adds a result per
    /// dossier and a line per call to `answered`; with `bounce`, returns instead the dossiers to send the
    /// other way (code 3 on a create, 4 on an update).
    async fn send_group<'a>(
        &self,
        updating: bool,
        group: Vec<&'a ClaimedDossier>,
        bounce: bool,
        answered: &mut Answered<DeliveryResult>,
    ) -> Vec<&'a ClaimedDossier> {
        let results = &mut answered.results;
        let mut bounced = Vec::new();
        for round in unique_rounds(group, |dossier| dossier.dossier_code.as_str()) {
            match self.send(updating, &round, &mut answered.calls).await {
                Ok(answers) => {
                    for (dossier, answer) in round.into_iter().zip(answers) {
                        let Some(answer) = answer else {
                            results.push(self.no_answer(dossier));
                            continue;
                        };
                        match verdict(answer.code, answer.message.as_deref()) {
                            PortalVerdict::AlreadyExists if bounce && !updating => {
                                bounced.push(dossier)
                            }
                            PortalVerdict::DoesNotExist if bounce && updating => {
                                bounced.push(dossier)
                            }
                            other => results.push(self.result(dossier, other)),
                        }
                    }
                }
                Err(error) => {
                    results.extend(round.into_iter().map(|dossier| {
                        self.retry(dossier, &error.to_string(), maybe_stored(&error))
                    }))
                }
            }
        }
        bounced
    }

    /// One `DongBoHoSoMC` call, its line added to `calls`; the answers matched to the dossiers sent, in
    /// their order.
    async fn send(
        &self,
        updating: bool,
        group: &[&ClaimedDossier],
        calls: &mut Vec<AttemptRecord>,
    ) -> Result<Vec<Option<ItemAnswer>>, PortalError> {
        let items: Vec<(&str, &str)> = group
            .iter()
            .map(|dossier| (dossier.dossier_code.as_str(), dossier.payload.as_str()))
            .collect();
        let started = Instant::now();
        let call = self.counters.calls.fetch_add(1, Ordering::Relaxed) + 1;
        self.counters
            .sent
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        let answer = self.portal.sync_dossiers(updating, &items).await;
        self.metrics
            .record_push_call(items.len(), started.elapsed());
        calls.push(self.call_line("DongBoHoSoMC", call, items.len(), started, &answer));
        answer.map(|answers| answers.items)
    }

    /// The attempt-log line of a call (and the events of a call that failed or was answered oddly).
    fn call_line(
        &self,
        service: &str,
        call: u64,
        items: usize,
        started: Instant,
        answer: &Result<ItemAnswers, PortalError>,
    ) -> AttemptRecord {
        let (outcome, detail) = match answer {
            Ok(answers) => {
                let unanswered = answers.items.iter().filter(|item| item.is_none()).count();
                if answers.ignored_entries > 0 || unanswered > 0 {
                    // The portal answered for dossiers it was not sent, or left some without an answer of
                    // their own: those are sent again later, never taken as stored.
                    events::AnswerMismatch {
                        service,
                        call,
                        items,
                        ignored_entries: answers.ignored_entries,
                        unanswered,
                    }
                    .emit(&self.metrics);
                }
                let failed = answers
                    .items
                    .iter()
                    .filter(|item| item.as_ref().is_none_or(|item| item.code != 0))
                    .count();
                if failed == 0 {
                    ("ok", None)
                } else {
                    ("partial", Some(format!("{failed} of {items} not stored")))
                }
            }
            Err(error) => {
                self.counters.failed_calls.fetch_add(1, Ordering::Relaxed);
                events::PortalCallFailed {
                    service,
                    call,
                    items,
                    error,
                }
                .emit(&self.metrics);
                ("failed", Some(error.to_string()))
            }
        };
        AttemptRecord {
            at: now_millis(),
            owner: self.owner.clone(),
            service: service.to_string(),
            items: items as i64,
            outcome,
            detail,
            duration_ms: started.elapsed().as_millis() as i64,
        }
    }

    fn result(&self, dossier: &ClaimedDossier, verdict: PortalVerdict) -> DeliveryResult {
        let outcome = match verdict {
            PortalVerdict::Stored => DeliveryOutcome::Accepted,
            PortalVerdict::Refused { code, message } => DeliveryOutcome::Refused { code, message },
            PortalVerdict::AlreadyExists | PortalVerdict::DoesNotExist => {
                return self.retry(dossier, "create/update mismatch", false);
            }
            PortalVerdict::Transient { message } => return self.retry(dossier, &message, true),
        };
        DeliveryResult {
            claim: dossier.claim.clone(),
            source_id: dossier.source_id.clone(),
            payload_hash: dossier.payload_hash.clone(),
            outcome,
        }
    }

    /// A dossier the answer has no entry of its own for: it may or may not be stored.
    fn no_answer(&self, dossier: &ClaimedDossier) -> DeliveryResult {
        self.retry(dossier, "no answer of its own in the portal's result", true)
    }

    fn retry(&self, dossier: &ClaimedDossier, error: &str, maybe_stored: bool) -> DeliveryResult {
        DeliveryResult {
            claim: dossier.claim.clone(),
            source_id: dossier.source_id.clone(),
            payload_hash: dossier.payload_hash.clone(),
            outcome: DeliveryOutcome::Retry {
                error: error.to_string(),
                next_attempt_at: self.next_attempt(dossier.attempts + 1, &dossier.source_id),
                maybe_stored,
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

    /// Claims up to one batch of due progress entries (of dossiers the portal has, one per dossier) and
    /// sends them.
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
        let Some(claim) = claimed.first().map(|entry| entry.claim.clone()) else {
            return Ok(0);
        };
        let ids: Vec<String> = claimed
            .iter()
            .map(|entry| entry.source_id.clone())
            .collect();
        let Answered { results, calls } = self
            .renewing(&claim, &ids, self.deliver_progress(&claimed))
            .await;
        let sent = results
            .iter()
            .filter(|result| matches!(result.outcome, DeliveryOutcome::Accepted))
            .count();
        self.counters
            .progress_sent
            .fetch_add(sent as u64, Ordering::Relaxed);
        self.store
            .record_progress(&results, &calls, now_millis())
            .await?;
        Ok(claimed.len())
    }

    /// Sends claimed progress entries (one per dossier) in calls of at most one batch.
    async fn deliver_progress(&self, claimed: &[ClaimedProgress]) -> Answered<ProgressResult> {
        let codes: Vec<String> = claimed
            .iter()
            .map(|entry| progress_ma_ho_so(&entry.payload))
            .collect();
        let mut answered = Answered::with_capacity(claimed.len());
        let results = &mut answered.results;
        for (chunk, chunk_codes) in claimed
            .chunks(self.batch_size)
            .zip(codes.chunks(self.batch_size))
        {
            let items: Vec<(&str, &str)> = chunk_codes
                .iter()
                .zip(chunk)
                .map(|(code, entry)| (code.as_str(), entry.payload.as_str()))
                .collect();
            let started = Instant::now();
            let call = self.counters.calls.fetch_add(1, Ordering::Relaxed) + 1;
            let answer = self.portal.sync_progress(&items).await;
            answered.calls.push(self.call_line(
                "CapNhatTienDoHoSoMC",
                call,
                items.len(),
                started,
                &answer,
            ));
            match answer {
                Ok(answers) => {
                    results.extend(chunk.iter().zip(answers.items).map(|(entry, answer)| {
                        let outcome = match answer
                            .map(|answer| verdict(answer.code, answer.message.as_deref()))
                        {
                            Some(PortalVerdict::Stored) => DeliveryOutcome::Accepted,
                            Some(PortalVerdict::Refused { code, message }) => {
                                DeliveryOutcome::Refused { code, message }
                            }
                            other => DeliveryOutcome::Retry {
                                error: other.map_or_else(
                                    || "no answer of its own in the portal's result".to_owned(),
                                    |verdict| format!("{verdict:?}"),
                                ),
                                next_attempt_at: self
                                    .next_attempt(entry.attempts + 1, &entry.entry_key),
                                maybe_stored: true,
                            },
                        };
                        progress_result(entry, outcome)
                    }))
                }
                Err(error) => results.extend(chunk.iter().map(|entry| {
                    progress_result(
                        entry,
                        DeliveryOutcome::Retry {
                            error: error.to_string(),
                            next_attempt_at: self
                                .next_attempt(entry.attempts + 1, &entry.entry_key),
                            maybe_stored: maybe_stored(&error),
                        },
                    )
                })),
            }
        }
        answered
    }
}

fn progress_result(entry: &ClaimedProgress, outcome: DeliveryOutcome) -> ProgressResult {
    ProgressResult {
        claim: entry.claim.clone(),
        source_id: entry.source_id.clone(),
        entry_key: entry.entry_key.clone(),
        payload_hash: entry.payload_hash.clone(),
        outcome,
    }
}
