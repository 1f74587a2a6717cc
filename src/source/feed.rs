//! The feed reader: walks the changed-since feed without ever skipping a dossier, whatever the source's
//! quirks (source-api.md section 6).
//!
//! Offsets are never trusted across a changing set. Each request asks from page 0, anchored on the last
//! `updatedDate` seen (inclusive), so a row that moves to the end while we read is met again later instead
//! of shifting another row past us. A block of equal timestamps larger than a page cannot be passed by
//! re-anchoring; it is paged inside until the rows themselves end it (a short page, or a row past the
//! block), which measures the block's size in rows, and read again until two passes in a row found the
//! same size and, between them, as many distinct rows as that. Each poll starts `lookback` before the
//! cursor, so rows that become visible late with a past `updatedDate` are still met; re-reading is cheap
//! because unchanged rows are recognised by their content hash downstream.
//!
//! Counts (`totalElements`, `last`) are hints only (source-api.md quirk 12): one that contradicts the rows
//! is counted and warned about, never trusted to end a block or the feed. A request that brings no row
//! that the previous one did not already bring, where a full page said more should follow, ends the poll
//! with [`FeedError::NotPaging`] (quirk 13). Rows stamped after the poll's start plus the clock-skew
//! allowance are read and recorded, but the cursor follows only the rows within that bound (quirk 10).
//!
//! Invariant: the cursor handed to the sink never passes a row that has not been handed to the sink in
//! the same or an earlier call, nor the poll's start plus the clock-skew allowance.

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
    #[error(
        "the source answered page {page} from {timestamp} with no row that the previous answer did not already hold: it is not paging (a gateway ignoring `page` or `updated-from`?); the cursor stays, trying again later"
    )]
    NotPaging { timestamp: Timestamp, page: u32 },
    #[error("cannot record the page: {0}")]
    Sink(String),
}

impl FeedError {
    /// The source answers every request with the same page (source-api.md quirk 13): the poll backs off
    /// and readiness says so.
    pub fn is_not_paging(&self) -> bool {
        matches!(self, FeedError::NotPaging { .. })
    }

    /// A short label for metrics: the source's error kind, `unstable_tie_block`, or `ledger`.
    pub fn kind(&self) -> String {
        match self {
            FeedError::Source(error) => error.kind(),
            FeedError::UnstableTieBlock { .. } => "unstable_tie_block".into(),
            FeedError::NotPaging { .. } => "source_not_paging".into(),
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
    /// How far past the poll's start the cursor may go (`source.max_clock_skew_seconds`).
    pub max_clock_skew: Duration,
}

/// What one poll did.
#[derive(Debug, Default, Clone)]
pub struct PollStats {
    pub requests: u64,
    pub records: u64,
    pub tie_blocks: u64,
    pub cursor: Option<Timestamp>,
    /// Distinct rows stamped after the poll's start plus the clock-skew allowance (read and recorded, but
    /// not moving the cursor).
    pub future_rows: u64,
    /// The latest such stamp.
    pub newest_future: Option<Timestamp>,
    /// Answers whose `totalElements` or `last` contradicted their own rows.
    pub count_contradictions: u64,
    future_keys: HashSet<RowKey>,
}

/// A row's identity within a poll: its id and `updatedDate`, or its bytes when it has no id.
type RowKey = [u8; 16];

/// One poll: from `cursor - lookback` (or `initial` on the first poll) to the end of the feed.
pub async fn poll(
    client: &SourceClient,
    options: FeedOptions,
    cursor: Option<Timestamp>,
    initial: Timestamp,
    sink: &mut dyn FeedSink,
) -> Result<PollStats, FeedError> {
    let skew = SignedDuration::try_from(options.max_clock_skew).unwrap_or(SignedDuration::ZERO);
    let now = Timestamp::now();
    let limit = now.checked_add(skew).unwrap_or(now);
    let cursor = match cursor {
        Some(stored) if stored > limit => {
            // Written by a version that let a row from the future move it: what lies between the real
            // progress and `limit` may never have been read, so say so (a `resync` reads it again).
            tracing::warn!(
                cursor = %stored,
                limit = %limit,
                "the stored feed cursor is ahead of the clock; it is brought back to the clock plus source.max_clock_skew_seconds (run `resync` over the days since the last good poll to read what it skipped)"
            );
            Some(limit)
        }
        other => other,
    };
    let lookback = SignedDuration::try_from(options.lookback).unwrap_or(SignedDuration::ZERO);
    let mut anchor = match cursor {
        Some(cursor) => cursor.checked_sub(lookback).unwrap_or(cursor),
        None => initial,
    };
    // The newest row of a page that the cursor may follow: not from the future.
    let newest_present = |records: &[FeedRecord], anchor: Timestamp| {
        records
            .iter()
            .filter_map(|record| record.updated)
            .filter(|ts| *ts >= anchor && *ts <= limit)
            .max()
    };
    let size = options.page_size as usize;
    let mut stats = PollStats {
        cursor,
        ..PollStats::default()
    };
    let mut next_page = Some(client.search(anchor, 0, options.page_size).await?);
    stats.requests += 1;
    let mut previous: HashSet<RowKey> = HashSet::new();
    while let Some(page) = next_page.take() {
        let records = read_page(page, 0, options.page_size, limit, &mut stats);
        let full = records.len() >= size;
        if full {
            check_moving(&records, &previous, anchor, 0)?;
        }
        previous = records.iter().map(row_key).collect();
        let newest = records
            .iter()
            .filter_map(|record| record.updated)
            .filter(|ts| *ts >= anchor)
            .max();
        stats.records += records.len() as u64;

        // Only the rows end the feed: a page shorter than asked. Counts and `last` are hints.
        if !full {
            let present = newest_present(&records, anchor).or((anchor <= limit).then_some(anchor));
            let cursor = advance(stats.cursor, present);
            sink.commit(records, cursor).await?;
            sink.flush().await?;
            stats.cursor = cursor;
            return Ok(finish(stats));
        }
        match newest {
            Some(newest) if newest > anchor => {
                // Everything in [anchor, newest) is complete; rows stamped `newest` may go on past this
                // page, so the next request starts at `newest` again (inclusive). It does not depend on
                // this page being recorded, so it is fetched while the page is written.
                // Rows from the future are walked past, but the cursor does not follow them.
                let cursor = advance(stats.cursor, newest_present(&records, anchor));
                let (committed, fetched) = tokio::join!(
                    sink.commit(records, cursor),
                    client.search(newest, 0, options.page_size)
                );
                committed?;
                stats.cursor = cursor;
                stats.requests += 1;
                next_page = Some(fetched?);
                anchor = newest;
            }
            _ => {
                // A full page of rows all stamped `anchor`: a tie block larger than a page. Its rows are
                // read again from the block's first page.
                drop(records);
                read_tie_block(client, options, anchor, limit, &mut stats, sink).await?;
                stats.tie_blocks += 1;
                let after = anchor
                    .checked_add(SignedDuration::from_millis(1))
                    .unwrap_or(anchor);
                let cursor = advance(stats.cursor, (after <= limit).then_some(after));
                sink.commit(Vec::new(), cursor).await?;
                stats.cursor = cursor;
                anchor = after;
                previous.clear();
                next_page = Some(client.search(anchor, 0, options.page_size).await?);
                stats.requests += 1;
            }
        }
    }
    sink.flush().await?;
    Ok(finish(stats))
}

fn finish(mut stats: PollStats) -> PollStats {
    stats.future_rows = stats.future_keys.len() as u64;
    stats.future_keys = HashSet::new();
    stats
}

/// The cursor only moves forward: a poll that re-reads the lookback window does not pull it back.
/// Without a candidate (only rows from the future) it stays.
fn advance(current: Option<Timestamp>, candidate: Option<Timestamp>) -> Option<Timestamp> {
    match (current, candidate) {
        (Some(current), Some(candidate)) => Some(current.max(candidate)),
        (current, candidate) => current.or(candidate),
    }
}

/// A full answer that brings no row the previous answer did not already hold: the source is not paging
/// (it ignores `page` or `updated-from`). Going on would loop without end, or move the cursor past rows
/// nobody saw.
fn check_moving(
    records: &[FeedRecord],
    previous: &HashSet<RowKey>,
    timestamp: Timestamp,
    page: u32,
) -> Result<(), FeedError> {
    if !previous.is_empty()
        && records
            .iter()
            .all(|record| previous.contains(&row_key(record)))
    {
        return Err(FeedError::NotPaging { timestamp, page });
    }
    Ok(())
}

fn row_key(record: &FeedRecord) -> RowKey {
    let mut hasher = blake3::Hasher::new();
    match &record.id {
        Some(id) => {
            hasher.update(b"id\0");
            hasher.update(id.as_bytes());
            hasher.update(b"\0");
            hasher.update(
                &record
                    .updated
                    .map_or(i64::MIN, |updated| updated.as_millisecond())
                    .to_le_bytes(),
            );
        }
        None => {
            hasher.update(b"raw\0");
            hasher.update(record.raw.get().as_bytes());
        }
    }
    let mut key = [0; 16];
    key.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    key
}

/// Reads every row stamped exactly `timestamp`, paging inside the block. Each page is recorded as it comes
/// (without moving the cursor, which stays at the block until all of it was seen), so memory holds one page
/// and the block's ids, however large the block.
///
/// The block's size comes from the rows: the number of block rows one pass meets at its positions (it
/// stops at a short page or at a row past the block). Two passes in a row that meet the same size, and
/// between them saw that many distinct rows, have read the whole block, even when the source orders its
/// ties differently on every request.
async fn read_tie_block(
    client: &SourceClient,
    options: FeedOptions,
    timestamp: Timestamp,
    limit: Timestamp,
    stats: &mut PollStats,
    sink: &mut dyn FeedSink,
) -> Result<(), FeedError> {
    let size = options.page_size as usize;
    let mut union: HashSet<RowKey> = HashSet::new();
    let mut previous_size: Option<u64> = None;
    // Two passes at the least: one pass's size cannot be compared with anything.
    for _pass in 0..options.max_tie_block_passes.max(2) {
        let mut pass_rows: HashSet<RowKey> = HashSet::new();
        let mut block_size = 0u64;
        let mut previous: HashSet<RowKey> = HashSet::new();
        let mut previous_last: Option<RowKey> = None;
        for page_number in 0u32.. {
            let page: FeedPage = client
                .search(timestamp, page_number, options.page_size)
                .await?;
            stats.requests += 1;
            let records = read_page(page, page_number, options.page_size, limit, stats);
            let count = records.len();
            if count >= size {
                check_moving(&records, &previous, timestamp, page_number)?;
            }
            // A page that starts with the previous page's last row again (source-api.md quirk 4) holds
            // one position fewer than rows: that row is not counted twice in the block's size.
            let repeated_first = records.first().is_some_and(|first| {
                first.updated == Some(timestamp) && previous_last == Some(row_key(first))
            });
            previous = records.iter().map(row_key).collect();
            previous_last = records.last().map(row_key);
            let mut left_block = false;
            let mut in_block = Vec::with_capacity(count);
            for record in records {
                match record.updated {
                    Some(updated) if updated == timestamp => {
                        pass_rows.insert(row_key(&record));
                        in_block.push(record);
                    }
                    Some(updated) if updated > timestamp => left_block = true,
                    _ => {}
                }
            }
            // Positions, not rows: a repeated first row is one position already counted. A page may
            // hold more rows than asked (source-api.md quirk 13); each is a position of its own, since
            // counting fewer would let the passes agree on a block smaller than it is and stop early.
            let positions = in_block.len() - usize::from(repeated_first && !in_block.is_empty());
            block_size += positions as u64;
            stats.records += in_block.len() as u64;
            sink.commit(in_block, None).await?;
            if left_block || count < size {
                break;
            }
        }
        if previous_size == Some(block_size) {
            union.extend(pass_rows);
            if union.len() as u64 >= block_size {
                return Ok(());
            }
        } else {
            // Rows left or joined the block while we paged: what we saw may no longer be the block. What
            // was recorded stays recorded (a re-read of it costs a hash comparison).
            union = pass_rows;
            previous_size = Some(block_size);
        }
    }
    Err(FeedError::UnstableTieBlock {
        timestamp,
        size: previous_size.unwrap_or(0) as i64,
        passes: options.max_tie_block_passes,
    })
}

/// Reads a page's records, and what its counts say against its rows: a `totalElements` below the rows
/// this answer proves to exist, negative, or not matching a short (last) page; a `last` that a short page
/// contradicts. Rows stamped past `limit` are counted once per poll.
fn read_page(
    page: FeedPage,
    page_number: u32,
    page_size: u32,
    limit: Timestamp,
    stats: &mut PollStats,
) -> Vec<FeedRecord> {
    let rows = page.content.len() as i64;
    let before = i64::from(page_number) * i64::from(page_size);
    let short = rows < i64::from(page_size);
    let count_lies = page.total_elements.is_some_and(|total| {
        total < 0 || total < before + rows || (short && total != before + rows)
    });
    let last_lies = short && page.last == Some(false);
    if count_lies || last_lies {
        stats.count_contradictions += 1;
    }
    let records = read_records(page.content);
    for record in &records {
        if let Some(updated) = record.updated
            && updated > limit
        {
            stats.future_keys.insert(row_key(record));
            stats.newest_future = stats.newest_future.max(Some(updated));
        }
    }
    records
}

/// Reads the id and `updatedDate` of each record; a record without them is still passed on (it becomes a
/// `malformed_record` downstream), it just cannot steer the reader. Every record in is one record out.
pub fn read_records(content: Vec<Box<RawValue>>) -> Vec<FeedRecord> {
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
