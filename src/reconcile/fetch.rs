//! Fetching dossiers by id from the source and writing them to the ledger as they come, for `resync` and
//! for the dossiers reconciliation finds missing: ids are taken a chunk at a time, the chunk's records
//! fetched a few at once (the source is a production system with its own users) and written through the
//! ingest path without moving the feed cursor, before the next chunk is fetched.
//!
//! So memory stays flat whatever the period: one chunk of records in hand and the previous chunk's rows
//! being written, never the period. Writing promptly also keeps a fetched record from waiting minutes
//! beside a live poller that may write a newer version meanwhile (the store keeps the newer one).

use std::sync::Arc;

use futures::StreamExt;

use crate::source::client::SourceClient;
use crate::source::feed::{FeedError, FeedRecord};
use crate::sync::ingest::{IngestSink, IngestStats};

/// Dossiers fetched, then written, at a time.
pub const CHUNK: usize = 100;
/// Fetches in flight at once.
pub const CONCURRENCY: usize = 8;

/// What a backfill did.
#[derive(Debug, Default, Clone)]
pub struct BackfillStats {
    /// Ids handed to it.
    pub listed: u64,
    /// Records the source served and that were written.
    pub fetched: u64,
    /// The most source records held in memory at once (a chunk being fetched plus the previous chunk
    /// being written): bounded by twice the chunk, whatever the number of ids.
    pub peak_held: usize,
    /// Chunks written.
    pub chunks: u64,
}

/// Ids in, ledger rows out, a chunk at a time.
pub struct Backfill {
    source: Arc<SourceClient>,
    sink: IngestSink,
    chunk: usize,
    pending: Vec<String>,
    /// Records of the chunk handed to the sink last, still being written in the background.
    writing: usize,
    pub stats: BackfillStats,
}

impl Backfill {
    /// `sink` should write without a cursor ([`IngestSink::without_cursor`]).
    pub fn new(source: Arc<SourceClient>, sink: IngestSink, chunk: usize) -> Backfill {
        let chunk = chunk.max(1);
        Backfill {
            source,
            sink,
            chunk,
            pending: Vec::with_capacity(chunk),
            writing: 0,
            stats: BackfillStats::default(),
        }
    }

    /// Takes ids; each time a chunk is full it is fetched and handed to the ledger before this returns.
    /// Problems with single dossiers (not served, not fetched) become notes.
    pub async fn push(
        &mut self,
        ids: impl IntoIterator<Item = String>,
        notes: &mut Vec<String>,
    ) -> Result<(), FeedError> {
        for id in ids {
            self.stats.listed += 1;
            self.pending.push(id);
            if self.pending.len() >= self.chunk {
                self.drain(notes).await?;
            }
        }
        Ok(())
    }

    /// Fetches and writes what is left, waits for the last write, and says what was done.
    pub async fn finish(
        mut self,
        notes: &mut Vec<String>,
    ) -> Result<(BackfillStats, IngestStats), FeedError> {
        self.drain(notes).await?;
        self.sink.flush().await?;
        Ok((self.stats, self.sink.stats))
    }

    async fn drain(&mut self, notes: &mut Vec<String>) -> Result<(), FeedError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let ids = std::mem::take(&mut self.pending);
        let source = &self.source;
        let answers: Vec<_> = futures::stream::iter(ids)
            .map(|id| async move {
                let answer = source.dossier(&id).await;
                (id, answer)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut records = Vec::with_capacity(answers.len());
        for (id, answer) in answers {
            match answer {
                Ok(Some(raw)) => records.push(FeedRecord {
                    id: Some(id),
                    updated: None,
                    raw,
                }),
                Ok(None) => notes.push(format!(
                    "dossier {id} is listed by the source but not served"
                )),
                Err(error) => notes.push(format!("dossier {id} could not be fetched: {error}")),
            }
        }
        self.stats.peak_held = self.stats.peak_held.max(records.len() + self.writing);
        self.stats.fetched += records.len() as u64;
        self.stats.chunks += 1;
        self.writing = records.len();
        // The sink waits for the previous chunk's write before it starts this one's, in the background.
        self.sink.write(records, None).await
    }
}
