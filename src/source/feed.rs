//! The feed reader: walks the changed-since feed without ever skipping a dossier, whatever the source's
//! quirks (source-api.md section 6).
//!
//! Offsets are never trusted across a changing set. Each request asks from page 0, anchored on the last
//! `updatedDate` seen (inclusive), so a row that moves to the end while we read is met again later instead
//! of shifting another row past us. A block of equal timestamps larger than a page cannot be passed by
//! re-anchoring; it is paged inside, its size measured before and after (`totalElements` from the block's
//! timestamp minus `totalElements` from one millisecond later), and read again until one pass saw as many
//! distinct rows as the block holds. Each poll starts `lookback` before the cursor, so rows that become
//! visible late with a past `updatedDate` are still met; re-reading is cheap because unchanged rows are
//! recognised by their content hash downstream.
//!
//! Invariant: the cursor handed to the sink never passes a row that has not been handed to the sink in
//! the same or an earlier call.

use std::collections::HashSet;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde_json::value::RawValue;

use super::client::{FeedPage, SourceClient, SourceError};
use super::time::parse_source_date;
use super::wire::RecordHeader;

/// A record as the feed served it, with what the reader needs to order it.
#[derive(Debug)]
pub struct FeedRecord {
    pub id: Option<String>,
    pub updated: Option<Timestamp>,
    pub raw: Box<RawValue>,
}

/// Where read records go. `commit` must make the records durable and move the cursor (when one is given)
/// in one transaction.
#[async_trait::async_trait]
pub trait FeedSink: Send {
    async fn commit(
        &mut self,
        records: Vec<FeedRecord>,
        cursor: Option<Timestamp>,
    ) -> Result<(), FeedError>;

    /// Makes everything committed so far durable (a sink may write in the background).
    async fn flush(&mut self) -> Result<(), FeedError> {
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(
        "a block of {size} rows stamped {timestamp} kept changing over {passes} passes; trying again next poll"
    )]
    UnstableTieBlock {
        timestamp: Timestamp,
        size: i64,
        passes: u32,
    },
    #[error("cannot record the page: {0}")]
    Sink(String),
}

impl FeedError {
    /// A short label for metrics: the source's error kind, `unstable_tie_block`, or `ledger`.
    pub fn kind(&self) -> String {
        match self {
            FeedError::Source(error) => error.kind(),
            FeedError::UnstableTieBlock { .. } => "unstable_tie_block".into(),
            FeedError::Sink(_) => "ledger".into(),
        }
    }
}

/// The knobs of the reader.
#[derive(Debug, Clone, Copy)]
pub struct FeedOptions {
    pub page_size: u32,
    pub lookback: Duration,
    pub max_tie_block_passes: u32,
}

/// What one poll did.
#[derive(Debug, Default, Clone, Copy)]
pub struct PollStats {
    pub requests: u64,
    pub records: u64,
    pub tie_blocks: u64,
    pub cursor: Option<Timestamp>,
}

/// One poll: from `cursor - lookback` (or `initial` on the first poll) to the end of the feed.
pub async fn poll(
    client: &SourceClient,
    options: FeedOptions,
    cursor: Option<Timestamp>,
    initial: Timestamp,
    sink: &mut dyn FeedSink,
) -> Result<PollStats, FeedError> {
    let lookback = SignedDuration::try_from(options.lookback).unwrap_or(SignedDuration::ZERO);
    let mut anchor = match cursor {
        Some(cursor) => cursor.checked_sub(lookback).unwrap_or(cursor),
        None => initial,
    };
    let size = options.page_size as usize;
    let mut stats = PollStats {
        cursor,
        ..PollStats::default()
    };
    let mut next_page = Some(client.search(anchor, 0, options.page_size).await?);
    stats.requests += 1;
    while let Some(page) = next_page.take() {
        let records = read_records(page.content);
        let reached_end = records.len() < size
            || page
                .total_elements
                .is_some_and(|total| total <= size as i64);
        let newest = records
            .iter()
            .filter_map(|record| record.updated)
            .filter(|ts| *ts >= anchor)
            .max();
        stats.records += records.len() as u64;

        if reached_end {
            let cursor = advance(stats.cursor, newest.unwrap_or(anchor));
            sink.commit(records, Some(cursor)).await?;
            sink.flush().await?;
            stats.cursor = Some(cursor);
            return Ok(stats);
        }
        match newest {
            Some(newest) if newest > anchor => {
                // Everything in [anchor, newest) is complete; rows stamped `newest` may go on past this
                // page, so the next request starts at `newest` again (inclusive). It does not depend on
                // this page being recorded, so it is fetched while the page is written.
                let cursor = advance(stats.cursor, newest);
                let (committed, fetched) = tokio::join!(
                    sink.commit(records, Some(cursor)),
                    client.search(newest, 0, options.page_size)
                );
                committed?;
                stats.cursor = Some(cursor);
                stats.requests += 1;
                next_page = Some(fetched?);
                anchor = newest;
            }
            _ => {
                // A full page of rows all stamped `anchor`: a tie block larger than a page.
                read_tie_block(client, options, anchor, &mut stats, sink).await?;
                stats.tie_blocks += 1;
                let after = anchor
                    .checked_add(SignedDuration::from_millis(1))
                    .unwrap_or(anchor);
                let cursor = advance(stats.cursor, after);
                sink.commit(Vec::new(), Some(cursor)).await?;
                stats.cursor = Some(cursor);
                anchor = after;
                next_page = Some(client.search(anchor, 0, options.page_size).await?);
                stats.requests += 1;
            }
        }
    }
    sink.flush().await?;
    Ok(stats)
}

/// The cursor only moves forward: a poll that re-reads the lookback window does not pull it back.
fn advance(current: Option<Timestamp>, candidate: Timestamp) -> Timestamp {
    current.map_or(candidate, |current| current.max(candidate))
}

/// Reads every row stamped exactly `timestamp`, paging inside the block. Each page is recorded as it comes
/// (without moving the cursor, which stays at the block until all of it was seen), so memory holds one page
/// and the block's ids, however large the block.
async fn read_tie_block(
    client: &SourceClient,
    options: FeedOptions,
    timestamp: Timestamp,
    stats: &mut PollStats,
    sink: &mut dyn FeedSink,
) -> Result<(), FeedError> {
    let next = timestamp
        .checked_add(SignedDuration::from_millis(1))
        .unwrap_or(timestamp);
    let block_size = async |stats: &mut PollStats| -> Result<i64, FeedError> {
        let from_block = client.count_from(timestamp).await?;
        let after_block = client.count_from(next).await?;
        stats.requests += 2;
        Ok(from_block - after_block)
    };
    // Ids seen in the block, kept across passes while its size holds still: when ties come back in a
    // different order on every request, the union of several passes covers the block.
    let mut seen: HashSet<String> = HashSet::new();
    let mut expected = block_size(stats).await?;
    for _pass in 0..options.max_tie_block_passes {
        let page_count = (expected.max(1) as u64).div_ceil(options.page_size as u64) + 1;
        for page_number in 0..page_count {
            let page: FeedPage = client
                .search(timestamp, page_number as u32, options.page_size)
                .await?;
            stats.requests += 1;
            let count = page.content.len();
            let mut left_block = false;
            let mut in_block = Vec::with_capacity(count);
            for record in read_records(page.content) {
                match record.updated {
                    Some(updated) if updated == timestamp => {
                        if let Some(id) = &record.id {
                            seen.insert(id.clone());
                        }
                        in_block.push(record);
                    }
                    Some(updated) if updated > timestamp => left_block = true,
                    _ => {}
                }
            }
            stats.records += in_block.len() as u64;
            sink.commit(in_block, None).await?;
            if left_block || count < options.page_size as usize {
                break;
            }
        }
        let size_now = block_size(stats).await?;
        if size_now == expected && seen.len() as i64 >= expected {
            return Ok(());
        }
        if size_now != expected {
            // Rows left or joined the block while we paged: what we saw may no longer be the block. What
            // was recorded stays recorded (a re-read of it costs a hash comparison).
            seen.clear();
            expected = size_now;
        }
    }
    Err(FeedError::UnstableTieBlock {
        timestamp,
        size: expected,
        passes: options.max_tie_block_passes,
    })
}

/// Reads the id and `updatedDate` of each record; a record without them is still passed on (it becomes a
/// `malformed_record` downstream), it just cannot steer the reader.
fn read_records(content: Vec<Box<RawValue>>) -> Vec<FeedRecord> {
    content
        .into_iter()
        .map(|raw| {
            let header: Option<RecordHeader> = serde_json::from_str(raw.get()).ok();
            let id = header
                .as_ref()
                .and_then(|header| header.id.as_ref())
                .map(|id| id.as_text().into_owned());
            let updated = header
                .as_ref()
                .and_then(|header| header.updated_date.as_ref())
                .and_then(parse_source_date);
            FeedRecord { id, updated, raw }
        })
        .collect()
}
