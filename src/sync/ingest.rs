//! From feed records to ledger rows: duplicates absorbed by content hash, every new version normalized,
//! the decision of [`super::decide`] applied, and the page written with its cursor in one transaction.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;

use super::decide::{IngestAction, NewVersion, on_new_version};
use crate::normalize::{self, Finding, MappingTables, Normalized, Outcome};
use crate::source::feed::{FeedError, FeedRecord, FeedSink};
use crate::store::{IngestRow, Store};

/// The cursor of the changed-since feed, in the `cursors` table.
pub const FEED_CURSOR: &str = "source_feed";

/// What one commit did, for the poll summary and metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct IngestStats {
    pub received: u64,
    pub unchanged: u64,
    pub queued: u64,
    pub held: u64,
    pub skipped: u64,
}

/// Normalizes records against the current mapping tables and writes them to the ledger.
pub struct IngestSink {
    pub store: Arc<dyn Store>,
    pub tables: Arc<MappingTables>,
    pub cursor_name: Option<&'static str>,
    pub stats: IngestStats,
    /// The previous page's transaction, still running while this page is normalized. Pages are written
    /// in order: a page's write starts only after the previous one committed.
    writing: Option<tokio::task::JoinHandle<Result<(), crate::store::StoreError>>>,
}

impl IngestSink {
    pub fn new(store: Arc<dyn Store>, tables: Arc<MappingTables>) -> IngestSink {
        IngestSink {
            store,
            tables,
            cursor_name: Some(FEED_CURSOR),
            stats: IngestStats::default(),
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
        let mut rows = Vec::with_capacity(by_id.len() + unnamed.len());
        for (id, record) in by_id {
            self.stats.received += 1;
            let raw = record.raw.get();
            let raw_hash = blake3::hash(raw.as_bytes()).to_hex().to_string();
            let view = views.get(&id);
            if view.is_some_and(|view| view.raw_hash == raw_hash) {
                self.stats.unchanged += 1;
                continue;
            }
            let normalized = normalize::normalize_bytes(raw.as_bytes(), &self.tables, now);
            rows.push(self.row(id, raw, raw_hash, &normalized, view));
        }
        for record in unnamed {
            // Without an id the record cannot be tracked as a dossier; it is kept under a synthetic id
            // derived from its content so that the operator sees it as malformed and nothing is lost.
            self.stats.received += 1;
            let raw = record.raw.get();
            let raw_hash = blake3::hash(raw.as_bytes()).to_hex().to_string();
            let id = format!("malformed:{}", &raw_hash[..24]);
            if views.contains_key(&id) {
                continue;
            }
            let normalized = normalize::normalize_bytes(raw.as_bytes(), &self.tables, now);
            rows.push(self.row(id, raw, raw_hash, &normalized, None));
        }

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

    fn row(
        &mut self,
        id: String,
        raw: &str,
        raw_hash: String,
        normalized: &Normalized,
        view: Option<&crate::sync::decide::LedgerView>,
    ) -> IngestRow {
        let (new_version, payload, payload_hash, reason_code, reason_detail, progress) =
            match &normalized.outcome {
                Outcome::Dossier(dossier) => (
                    NewVersion::Sendable {
                        payload_hash: &dossier.hash,
                    },
                    Some(String::from_utf8_lossy(&dossier.payload).into_owned()),
                    Some(dossier.hash.clone()),
                    None,
                    None,
                    dossier
                        .progress
                        .iter()
                        .map(|entry| {
                            (
                                entry.key.clone(),
                                String::from_utf8_lossy(&entry.payload).into_owned(),
                                entry.hash.clone(),
                            )
                        })
                        .collect(),
                ),
                Outcome::Rejected(findings) => (
                    NewVersion::Held,
                    None,
                    None,
                    Some(
                        findings
                            .first()
                            .map_or("malformed_record", |finding| finding.code)
                            .to_string(),
                    ),
                    Some(summarize(findings)),
                    Vec::new(),
                ),
                Outcome::Skipped(reason) => (
                    NewVersion::Skipped,
                    None,
                    None,
                    Some(reason.code().to_string()),
                    None,
                    Vec::new(),
                ),
            };
        let action = on_new_version(view, &raw_hash, new_version);
        match action {
            IngestAction::Set(crate::sync::decide::DossierState::Pending) => self.stats.queued += 1,
            IngestAction::Set(crate::sync::decide::DossierState::Held) => self.stats.held += 1,
            IngestAction::Set(crate::sync::decide::DossierState::Skipped) => {
                self.stats.skipped += 1
            }
            _ => {}
        }
        IngestRow {
            source_id: id,
            dossier_code: normalized.dossier_code.clone(),
            raw: raw.to_string(),
            raw_hash,
            source_updated_at: normalized.updated_at.map(|at| at.as_millisecond()),
            source_agency_id: normalized.source_agency_id.clone(),
            unit: normalized.unit.clone(),
            procedure_code: normalized.procedure_code.clone(),
            reception_day: normalized.reception_day.map(|day| day.to_string()),
            payload,
            payload_hash,
            reason_code,
            reason_detail,
            findings: findings_json(normalized),
            action,
            progress,
        }
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

/// Rejections and warnings as stored JSON. Values are masked by the normalizer already.
fn findings_json(normalized: &Normalized) -> String {
    let mut items = Vec::new();
    let mut push = |kind: &str, finding: &Finding| {
        items.push(serde_json::json!({
            "kind": kind,
            "code": finding.code,
            "field": finding.field,
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
