//! From feed records to ledger rows: duplicates absorbed by content hash, every new version normalized,
//! the decision of [`crate::decide`] applied, and the page written with its cursor in one transaction.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::value::RawValue;

use super::catalog::PortalCatalog;
use crate::decide::{DossierState, IngestAction, NewVersion, on_new_outcome, on_new_version};
use crate::normalize::oversize::{OversizeStub, oversize, oversize_record};
use crate::normalize::{self, Finding, MappingTables, Normalized, Outcome, codes};
use crate::source::feed::{FeedError, FeedRecord, FeedSink};
use crate::store::{HeldRecord, IngestRow, ProgressEntryRow, Store, VersionKind};

/// The cursor of the changed-since feed, in the `cursors` table.
pub const FEED_CURSOR: &str = "source_feed";

/// What one commit did, for the poll summary and metrics.
#[derive(Debug, Default, Clone)]
pub struct IngestStats {
    pub received: u64,
    pub unchanged: u64,
    pub queued: u64,
    pub held: u64,
    pub skipped: u64,
    /// Older versions than the ledger holds (a lookback or resync re-read): not written.
    pub stale: u64,
    /// Held-back dossiers by their first reason code (the `tthc_sync_dossiers_held_total` metric).
    pub held_by_reason: BTreeMap<String, u64>,
    /// New versions stamped ahead of the clock ([`IngestSink::future_after`]), by unit (`unknown` when the record names
    /// none it resolves): the `tthc_sync_future_stamped_versions_total` metric.
    pub future_by_unit: BTreeMap<String, u64>,
}

/// Normalizes records against the current mapping tables and writes them to the ledger.
pub struct IngestSink {
    pub store: Arc<dyn Store>,
    pub tables: Arc<MappingTables>,
    /// The catalog pre-flight; `None` sends every normalized dossier and lets the portal decide.
    pub catalog: Option<Arc<PortalCatalog>>,
    pub cursor_name: Option<&'static str>,
    pub stats: IngestStats,
    /// Versions stamped after this (the poll's start plus `source.max_clock_skew_seconds`) are counted
    /// per unit and marked in the ledger (source-api.md quirk 10). They are ingested like any other.
    /// `None`: each page's own time plus [`DEFAULT_CLOCK_SKEW`] (a resync, a re-normalization).
    pub future_after: Option<Timestamp>,
    /// A record larger than this is held back whole as `oversize_record`: its id, size and hash are
    /// stored, its bytes are not (source-api.md quirk 14; `source.max_record_bytes`).
    pub max_record_bytes: usize,
    /// The previous page's transaction, still running while this page is normalized. Pages are written
    /// in order: a page's write starts only after the previous one committed.
    writing: Option<tokio::task::JoinHandle<Result<(), crate::store::StoreError>>>,
}

/// A record normalized and waiting for the pre-flight and its ledger row.
struct Fresh<'a> {
    id: String,
    raw: Cow<'a, str>,
    raw_hash: String,
    normalized: Normalized,
}

/// The clock-skew allowance of writers that are not the feed's poll (the default of
/// `source.max_clock_skew_seconds`).
pub const DEFAULT_CLOCK_SKEW: jiff::SignedDuration = jiff::SignedDuration::from_secs(300);

/// The instant after which a version read at `now` is stamped ahead of the clock.
fn ahead_after(future_after: Option<Timestamp>, now: Timestamp) -> Timestamp {
    future_after.unwrap_or_else(|| {
        now.saturating_add(DEFAULT_CLOCK_SKEW)
            .unwrap_or(Timestamp::MAX)
    })
}

/// What re-normalizing held-back dossiers did.
#[derive(Debug, Default, Clone, Copy)]
pub struct RenormalizeStats {
    pub examined: u64,
    /// Now sendable: queued for the portal.
    pub released: u64,
    pub still_held: u64,
    pub skipped: u64,
}

impl IngestSink {
    pub fn new(
        store: Arc<dyn Store>,
        tables: Arc<MappingTables>,
        catalog: Option<Arc<PortalCatalog>>,
    ) -> IngestSink {
        IngestSink {
            store,
            tables,
            catalog,
            cursor_name: Some(FEED_CURSOR),
            stats: IngestStats::default(),
            future_after: None,
            max_record_bytes: usize::MAX,
            writing: None,
        }
    }

    /// Writes records without moving any cursor (a resync or a single fetched dossier).
    pub fn without_cursor(mut self) -> IngestSink {
        self.cursor_name = None;
        self
    }

    /// Turns records into ledger rows (pure but for reading the ledger's view of them) and writes them.
    pub async fn write(
        &mut self,
        records: Vec<FeedRecord>,
        cursor: Option<Timestamp>,
    ) -> Result<(), FeedError> {
        let now = Timestamp::now();
        let started = std::time::Instant::now();
        // The last occurrence of an id in a page wins (duplicates on consecutive pages carry the same row).
        let mut by_id: HashMap<String, FeedRecord> = HashMap::with_capacity(records.len());
        let mut unnamed = Vec::new();
        for record in records {
            match record.id.clone() {
                Some(id) => {
                    by_id.insert(id, record);
                }
                None => unnamed.push(record),
            }
        }
        let ids: Vec<String> = by_id.keys().cloned().collect();
        let views = self
            .store
            .ledger_views(&ids)
            .await
            .map_err(|error| FeedError::Sink(error.to_string()))?;

        let looked_up = started.elapsed();
        let mut fresh = Vec::with_capacity(by_id.len() + unnamed.len());
        for (id, record) in by_id {
            self.stats.received += 1;
            let raw_hash = blake3::hash(record.raw.get().as_bytes())
                .to_hex()
                .to_string();
            if views.get(&id).is_some_and(|view| view.raw_hash == raw_hash) {
                self.stats.unchanged += 1;
                continue;
            }
            fresh.push(self.normalize(id, owned_text(record.raw), raw_hash, now));
        }
        for record in unnamed {
            // Without an id the record cannot be tracked as a dossier; it is kept under a synthetic id
            // derived from its content so that the operator sees it as malformed and nothing is lost.
            self.stats.received += 1;
            let raw_hash = blake3::hash(record.raw.get().as_bytes())
                .to_hex()
                .to_string();
            let id = format!("malformed:{}", &raw_hash[..24]);
            if views.contains_key(&id) {
                continue;
            }
            fresh.push(self.normalize(id, owned_text(record.raw), raw_hash, now));
        }
        self.preflight(&mut fresh).await;
        let future_after = ahead_after(self.future_after, now);
        for fresh in &fresh {
            if stamped_ahead(&fresh.normalized, future_after) {
                let unit = fresh.normalized.unit.as_deref().unwrap_or("unknown");
                *self
                    .stats
                    .future_by_unit
                    .entry(unit.to_owned())
                    .or_default() += 1;
            }
        }
        let rows: Vec<IngestRow> = fresh
            .into_iter()
            .map(|fresh| {
                // The store decides again on the row as it stands when the page is written; this decision
                // on the view read above feeds the poll's counts.
                let action = on_new_version(
                    views.get(&fresh.id),
                    &fresh.raw_hash,
                    fresh.normalized.updated_at.map(|at| at.as_millisecond()),
                    new_version(&fresh.normalized),
                );
                let row = row(fresh, false, future_after);
                self.count(action, row.reason_code.as_deref());
                row
            })
            .collect();

        let normalized = started.elapsed();
        // The page is written in the background, so that the next page is read and normalized while
        // this one's transaction runs. Its rows and its cursor still commit together; a ledger view read
        // before the previous page landed is at worst stale for a row in both pages, and the decisions
        // are idempotent for the same record (a stale view can only cause one harmless resend).
        self.flush().await?;
        let cursor = cursor.map(|cursor| cursor.as_millisecond().to_string());
        let cursor_name = self.cursor_name;
        let store = self.store.clone();
        let millis = now.as_millisecond();
        self.writing = Some(tokio::spawn(async move {
            let written = started.elapsed();
            let pair = cursor_name.zip(cursor.as_deref());
            store.ingest(&rows, pair, millis).await?;
            tracing::debug!(
                rows = rows.len(),
                lookup_ms = looked_up.as_millis() as u64,
                normalize_ms = (normalized - looked_up).as_millis() as u64,
                write_ms = (started.elapsed() - written).as_millis() as u64,
                "page recorded"
            );
            Ok(())
        }));
        Ok(())
    }

    /// Normalizes held-back dossiers again from their stored source records (the tables or the
    /// portal's catalogs changed, or the daily pass), and writes what changed: a dossier that is now
    /// valid is queued for the portal, one still held gets its new reasons. Must not run beside a poll
    /// of the same store: the poll loop runs both in turn.
    pub async fn renormalize(
        &mut self,
        held: &[HeldRecord],
    ) -> Result<RenormalizeStats, crate::store::StoreError> {
        let now = Timestamp::now();
        let mut fresh: Vec<Fresh> = held
            .iter()
            .map(|record| {
                let raw_hash = record.view.raw_hash.clone();
                self.normalize(
                    record.source_id.clone(),
                    Cow::Borrowed(&record.raw),
                    raw_hash,
                    now,
                )
            })
            .collect();
        self.preflight(&mut fresh).await;
        let mut stats = RenormalizeStats::default();
        let future_after = ahead_after(self.future_after, now);
        let rows: Vec<IngestRow> = fresh
            .into_iter()
            .zip(held)
            .map(|(fresh, record)| {
                let action = on_new_outcome(&record.view, new_version(&fresh.normalized));
                stats.examined += 1;
                match action {
                    IngestAction::Set(DossierState::Held) => stats.still_held += 1,
                    IngestAction::Set(DossierState::Skipped) => stats.skipped += 1,
                    _ => stats.released += 1,
                }
                row(fresh, true, future_after)
            })
            .collect();
        self.store.ingest(&rows, None, now.as_millisecond()).await?;
        Ok(stats)
    }

    /// Waits for the page being written, if any, and reports its failure.
    pub async fn flush(&mut self) -> Result<(), FeedError> {
        match self.writing.take() {
            None => Ok(()),
            Some(handle) => match handle.await {
                Ok(result) => result.map_err(|error| FeedError::Sink(error.to_string())),
                Err(error) => Err(FeedError::Sink(format!("the page writer stopped: {error}"))),
            },
        }
    }

    fn normalize<'a>(
        &self,
        id: String,
        raw: Cow<'a, str>,
        raw_hash: String,
        now: Timestamp,
    ) -> Fresh<'a> {
        if raw.len() > self.max_record_bytes {
            let (normalized, stub) = oversize_record(&id, &raw, &raw_hash);
            return Fresh {
                normalized,
                id,
                raw: Cow::Owned(stub),
                raw_hash,
            };
        }
        if let Some(stored) = OversizeStub::read(&raw) {
            // Normalized again from the stub stored in its place: still what it was.
            return Fresh {
                normalized: oversize(&id, stored.bytes, &stored.blake3, &raw),
                id,
                raw,
                raw_hash,
            };
        }
        Fresh {
            normalized: normalize::normalize_bytes(raw.as_bytes(), &self.tables, now),
            id,
            raw,
            raw_hash,
        }
    }

    async fn preflight(&self, fresh: &mut [Fresh<'_>]) {
        if let Some(catalog) = &self.catalog {
            let mut records: Vec<&mut Normalized> = fresh
                .iter_mut()
                .map(|fresh| &mut fresh.normalized)
                .collect();
            catalog.screen(&mut records).await;
        }
    }

    fn count(&mut self, action: IngestAction, reason: Option<&str>) {
        match action {
            IngestAction::Set(DossierState::Pending) => self.stats.queued += 1,
            IngestAction::Set(DossierState::Held) => {
                self.stats.held += 1;
                *self
                    .stats
                    .held_by_reason
                    .entry(reason.unwrap_or("unknown").to_owned())
                    .or_default() += 1;
            }
            IngestAction::Set(DossierState::Skipped) => self.stats.skipped += 1,
            IngestAction::Stale => self.stats.stale += 1,
            _ => {}
        }
    }
}

/// What the decision needs to know of a normalization outcome.
fn new_version(normalized: &Normalized) -> NewVersion<'_> {
    match &normalized.outcome {
        Outcome::Dossier(dossier) => NewVersion::Sendable {
            payload_hash: &dossier.hash,
        },
        Outcome::Rejected(_) => NewVersion::Held,
        Outcome::Skipped(_) => NewVersion::Skipped,
    }
}

/// The ledger row of a normalized record; the store decides what it does to the row it holds.
/// Whether a normalized version is stamped after `future_after`.
fn stamped_ahead(normalized: &Normalized, future_after: Timestamp) -> bool {
    normalized
        .updated_at
        .is_some_and(|updated| updated > future_after)
}

/// Payload bytes as text, without a copy (they are written from text, so always UTF-8).
fn utf8_text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned())
}

/// A record's text, taken over from the page it was read in rather than copied: a page's records are
/// then held once while they are written, not twice.
fn owned_text(raw: Box<RawValue>) -> Cow<'static, str> {
    Cow::Owned(Box::<str>::from(raw).into_string())
}

fn row(fresh: Fresh<'_>, renormalized: bool, future_after: Timestamp) -> IngestRow {
    let stamped_ahead = stamped_ahead(&fresh.normalized, future_after);
    let Fresh {
        id,
        raw,
        raw_hash,
        normalized,
    } = fresh;
    let findings = findings_json(&normalized);
    let (kind, payload, payload_hash, reason_code, reason_detail, progress) =
        match normalized.outcome {
            Outcome::Dossier(dossier) => {
                let progress = dossier
                    .progress
                    .into_iter()
                    .map(|entry| ProgressEntryRow {
                        key: entry.key,
                        step_at: entry.entry.thoi_diem_xu_ly,
                        payload: utf8_text(entry.payload),
                        hash: entry.hash,
                    })
                    .collect();
                let payload = utf8_text(dossier.payload);
                (
                    VersionKind::Sendable,
                    Some(payload),
                    Some(dossier.hash),
                    None,
                    None,
                    progress,
                )
            }
            Outcome::Rejected(findings) => (
                VersionKind::Held,
                None,
                None,
                Some(
                    findings
                        .first()
                        .map_or("malformed_record", |finding| finding.code)
                        .to_string(),
                ),
                Some(summarize(&findings)),
                Vec::new(),
            ),
            Outcome::Skipped(reason) => (
                VersionKind::Skipped,
                None,
                None,
                Some(reason.code().to_string()),
                None,
                Vec::new(),
            ),
        };
    IngestRow {
        source_id: id,
        dossier_code: normalized.dossier_code,
        raw: raw.into_owned(),
        raw_hash,
        source_updated_at: normalized.updated_at.map(|at| at.as_millisecond()),
        source_agency_id: normalized.source_agency_id,
        unit: normalized.unit,
        procedure_code: normalized.procedure_code,
        reception_day: normalized.reception_day.map(|day| day.to_string()),
        payload,
        payload_hash,
        reason_code,
        reason_detail,
        findings,
        kind,
        renormalized,
        stamped_ahead,
        progress,
    }
}

#[async_trait::async_trait]
impl FeedSink for IngestSink {
    async fn commit(
        &mut self,
        records: Vec<FeedRecord>,
        cursor: Option<Timestamp>,
    ) -> Result<(), FeedError> {
        self.write(records, cursor).await
    }

    async fn flush(&mut self) -> Result<(), FeedError> {
        IngestSink::flush(self).await
    }
}

/// A one-line summary of rejections: codes and fields, no values (those may be personal data).
fn summarize(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|finding| {
            if finding.field.is_empty() {
                finding.code.to_string()
            } else {
                format!("{} ({})", finding.code, finding.field)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Rejections and warnings as stored JSON, each with the operators' words for its code (vocabulary.md)
/// in Vietnamese and English. Values are masked by the normalizer already.
fn findings_json(normalized: &Normalized) -> String {
    let mut items = Vec::new();
    let mut push = |kind: &str, finding: &Finding| {
        items.push(serde_json::json!({
            "kind": kind,
            "code": finding.code,
            "field": finding.field,
            "message_vi": codes::message_vi(finding.code),
            "message_en": codes::message_en(finding.code),
            "detail": finding.detail,
            "value": finding.value,
        }));
    };
    if let Outcome::Rejected(findings) = &normalized.outcome {
        for finding in findings {
            push("rejection", finding);
        }
    }
    for finding in &normalized.warnings {
        push("warning", finding);
    }
    serde_json::Value::Array(items).to_string()
}
