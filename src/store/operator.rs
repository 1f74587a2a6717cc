//! What the operator's commands, the reports and the dashboard read from the ledger, and the `retry` they
//! can ask for.

use std::collections::HashMap;

use async_trait::async_trait;

use super::ingest::set_cursor_statement;
use super::sql::{Backend, Cells, Conn, Sql};
use super::{Millis, StoreError, UnitScope, state_of};
use crate::decide::DossierState;

/// The cursor an operator's `retry` sets when it asks for held-back dossiers to be normalized again.
pub const RENORMALIZE_REQUESTED: &str = "renormalize_requested_at";

/// Per-unit summary line.
#[derive(Debug, Clone, Default)]
pub struct UnitCounts {
    pub unit: Option<String>,
    pub source_agency_id: Option<String>,
    pub counts: HashMap<DossierState, i64>,
    pub reasons: Vec<(String, i64)>,
}

/// Ledger rows counted by unit, source agency, reception day, state and reason: the ledger's side of a
/// reconciliation and of the reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerBucket {
    pub unit: Option<String>,
    pub source_agency_id: Option<String>,
    /// Reception day `YYYY-MM-DD`; `None` for a record without a usable date (malformed).
    pub day: Option<String>,
    pub state: DossierState,
    pub reason_code: Option<String>,
    pub count: i64,
    /// When the current version of the oldest dossier here that is not on the portal arrived (Unix ms);
    /// `None` when all are accepted or skipped.
    pub oldest_unsent_at: Option<Millis>,
    /// Dossiers here whose current version was stamped ahead of the clock when it was read
    /// (source-api.md quirk 10).
    pub stamped_ahead: i64,
}

/// Payloads per page when the reports read a period's payloads ([`Operator::payloads_page`]): a few
/// megabytes of JSON at a time, whatever the period.
pub const PAYLOADS_PER_PAGE: usize = 1000;

/// One sendable payload of a period, as [`Operator::payloads_page`] reads it.
#[derive(Debug, Clone)]
pub struct PayloadRow {
    /// Reception day `YYYY-MM-DD`.
    pub reception_day: String,
    pub source_id: String,
    pub unit: Option<String>,
    pub state: DossierState,
    /// The normalized portal dossier, as sent or to be sent.
    pub payload: String,
}

impl PayloadRow {
    /// Where the next page begins.
    pub fn key(&self) -> PayloadKey {
        PayloadKey {
            reception_day: self.reception_day.clone(),
            source_id: self.source_id.clone(),
        }
    }
}

/// The position of a payload in the order [`Operator::payloads_page`] reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadKey {
    pub reception_day: String,
    pub source_id: String,
}

/// Which dossiers an operator's command is about; every field narrows, `None` does not.
#[derive(Debug, Clone, Default)]
pub struct DossierFilter {
    /// The rows of one unit key ([`crate::unit_key::UnitKey::scope`]).
    pub unit: Option<UnitScope>,
    /// Any of these reason codes (an actor's codes, or the one `--reason`).
    pub reasons: Option<Vec<String>>,
    pub dossier_code: Option<String>,
    /// Reception days, inclusive (`YYYY-MM-DD`).
    pub from_day: Option<String>,
    pub to_day: Option<String>,
}

/// A dossier held back or refused, as `failures` lists it (findings carry masked values only).
#[derive(Debug, Clone)]
pub struct FailureRow {
    pub source_id: String,
    pub dossier_code: Option<String>,
    pub unit: Option<String>,
    pub source_agency_id: Option<String>,
    pub reception_day: Option<String>,
    pub state: DossierState,
    pub reason_code: Option<String>,
    pub reason_detail: Option<String>,
    /// JSON array of findings, as ingest stored them.
    pub findings: String,
    pub attempts: i64,
    pub changed_at: Millis,
}

/// What `retry` queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requeued {
    /// Refused by the portal: queued to be sent again now.
    pub refused: u64,
    /// Waiting out a back-off: due now.
    pub pending: u64,
    /// Held back: normalized again by the daemon at its next poll.
    pub held: u64,
}

impl Requeued {
    pub fn total(&self) -> u64 {
        self.refused + self.pending + self.held
    }
}

/// Counts per state (and per reason for held, refused and skipped), for progress lines and summaries.
#[derive(Debug, Clone, Default)]
pub struct LedgerCounts {
    pub by_state: HashMap<DossierState, i64>,
    /// (state, reason code) → count, for held, refused and skipped dossiers.
    pub by_reason: Vec<(DossierState, String, i64)>,
    pub progress_unsent: i64,
}

impl LedgerCounts {
    pub fn get(&self, state: DossierState) -> i64 {
        self.by_state.get(&state).copied().unwrap_or(0)
    }
    pub fn total(&self) -> i64 {
        self.by_state.values().sum()
    }
    /// Dossiers and progress entries that still have to reach the portal (now or after a back-off).
    pub fn outstanding(&self) -> i64 {
        self.get(DossierState::Pending) + self.get(DossierState::InFlight) + self.progress_unsent
    }
}

/// The ledger's side of the operator's commands, the reports and the dashboard.
#[async_trait]
pub trait Operator: Send + Sync {
    async fn counts(&self) -> Result<LedgerCounts, StoreError>;

    async fn unit_counts(&self) -> Result<Vec<UnitCounts>, StoreError>;

    /// The ledger counted by unit, source agency, reception day, state and reason, for reception days
    /// from `from` to `to` (inclusive, `YYYY-MM-DD`) and records without a reception day.
    async fn ledger_buckets(
        &self,
        from: &str,
        to: &str,
        unit: Option<&str>,
    ) -> Result<Vec<LedgerBucket>, StoreError>;

    /// The source ids the ledger holds for one source agency and reception day.
    async fn ledger_ids(
        &self,
        source_agency_id: &str,
        day: &str,
    ) -> Result<Vec<String>, StoreError>;

    /// Held-back and refused dossiers matching `filter`, oldest first, at most `limit`.
    async fn failures(
        &self,
        filter: &DossierFilter,
        limit: usize,
    ) -> Result<Vec<FailureRow>, StoreError>;

    /// Queues the dossiers matching `filter` again now: refused ones to be sent again, pending ones due
    /// at once, held-back ones marked for the daemon to normalize again (it holds the tables).
    async fn requeue(&self, filter: &DossierFilter, now: Millis) -> Result<Requeued, StoreError>;

    /// One page of the normalized payloads (sent or to be sent) of the reception days from `from` to `to`
    /// (inclusive, `YYYY-MM-DD`), with their unit and state: the indicator preview's input. At most
    /// `limit` rows, ordered by reception day and source id, from just after `after` (the [`PayloadKey`]
    /// of the previous page's last row; `None` for the first page). A page shorter than `limit` is the
    /// last. Each page is its own read: a dossier whose reception day changes between two pages may be
    /// seen twice or not at all, which a preview tolerates.
    async fn payloads_page(
        &self,
        from: &str,
        to: &str,
        unit: Option<&str>,
        after: Option<&PayloadKey>,
        limit: usize,
    ) -> Result<Vec<PayloadRow>, StoreError>;

    /// The state of the dossier with this code (MaHoSo), if the ledger holds one: `retry --dossier`
    /// tells an unknown code from one with nothing to retry.
    async fn dossier_state(&self, dossier_code: &str) -> Result<Option<DossierState>, StoreError>;
}

#[async_trait]
impl<B: Backend> Operator for B {
    async fn counts(&self) -> Result<LedgerCounts, StoreError> {
        let mut connection = self.reader().await?;
        let mut counts = LedgerCounts::default();
        let rows = connection
            .fetch(Sql::new(
                "SELECT state, reason_code, COUNT(*) FROM dossiers GROUP BY state, reason_code",
            ))
            .await?;
        for row in rows {
            add_to_counts(
                &mut counts,
                state_of(&row.text(0)),
                row.opt_text(1),
                row.int(2),
            );
        }
        let unsent = connection
            .fetch(Sql::new(
                "SELECT COUNT(*) FROM progress JOIN dossiers USING (source_id) \
                 WHERE progress.state IN ('waiting', 'pending', 'in_flight') \
                   AND dossiers.state NOT IN ('held', 'skipped', 'refused')",
            ))
            .await?;
        counts.progress_unsent = unsent.first().map_or(0, |row| row.int(0));
        Ok(counts)
    }

    async fn unit_counts(&self) -> Result<Vec<UnitCounts>, StoreError> {
        let rows = self
            .reader()
            .await?
            .fetch(Sql::new(
                "SELECT unit, source_agency_id, state, reason_code, COUNT(*) FROM dossiers \
                 GROUP BY unit, source_agency_id, state, reason_code ORDER BY unit, source_agency_id",
            ))
            .await?;
        let mut units = Vec::new();
        for row in rows {
            add_to_units(
                &mut units,
                row.opt_text(0),
                row.opt_text(1),
                state_of(&row.text(2)),
                row.opt_text(3),
                row.int(4),
            );
        }
        Ok(units)
    }

    async fn ledger_buckets(
        &self,
        from: &str,
        to: &str,
        unit: Option<&str>,
    ) -> Result<Vec<LedgerBucket>, StoreError> {
        let mut sql = Sql::new(
            "SELECT unit, source_agency_id, reception_day, state, reason_code, COUNT(*), \
             MIN(CASE WHEN state IN ('accepted', 'skipped') THEN NULL ELSE changed_at END), \
             COUNT(CASE WHEN stamped_ahead THEN 1 END) FROM dossiers WHERE (reception_day BETWEEN ",
        );
        sql.bind(from).push(" AND ").bind(to);
        sql.push(" OR reception_day IS NULL)");
        if let Some(unit) = unit {
            sql.push(" AND unit = ").bind(unit);
        }
        sql.push(" GROUP BY unit, source_agency_id, reception_day, state, reason_code");
        let rows = self.reader().await?.fetch(sql).await?;
        Ok(rows
            .iter()
            .map(|row| LedgerBucket {
                unit: row.opt_text(0),
                source_agency_id: row.opt_text(1),
                day: row.opt_text(2),
                state: state_of(&row.text(3)),
                reason_code: row.opt_text(4),
                count: row.int(5),
                oldest_unsent_at: row.opt_int(6),
                stamped_ahead: row.int(7),
            })
            .collect())
    }

    async fn ledger_ids(
        &self,
        source_agency_id: &str,
        day: &str,
    ) -> Result<Vec<String>, StoreError> {
        let mut sql = Sql::new("SELECT source_id FROM dossiers WHERE source_agency_id = ");
        sql.bind(source_agency_id)
            .push(" AND reception_day = ")
            .bind(day);
        let rows = self.reader().await?.fetch(sql).await?;
        Ok(rows.iter().map(|row| row.text(0)).collect())
    }

    async fn failures(
        &self,
        filter: &DossierFilter,
        limit: usize,
    ) -> Result<Vec<FailureRow>, StoreError> {
        let mut sql = Sql::new(
            "SELECT d.source_id, d.dossier_code, d.unit, d.source_agency_id, d.reception_day, d.state, \
             d.reason_code, d.reason_detail, b.findings, d.attempts, d.changed_at \
             FROM dossiers d JOIN dossier_bodies b ON b.source_id = d.source_id \
             WHERE d.state IN ('held', 'refused')",
        );
        push_filter(&mut sql, filter, "d.");
        sql.push(" ORDER BY d.changed_at, d.source_id LIMIT ")
            .bind(limit);
        let rows = self.reader().await?.fetch(sql).await?;
        Ok(rows
            .iter()
            .map(|row| FailureRow {
                source_id: row.text(0),
                dossier_code: row.opt_text(1),
                unit: row.opt_text(2),
                source_agency_id: row.opt_text(3),
                reception_day: row.opt_text(4),
                state: state_of(&row.text(5)),
                reason_code: row.opt_text(6),
                reason_detail: row.opt_text(7),
                findings: row.text(8),
                attempts: row.int(9),
                changed_at: row.int(10),
            })
            .collect())
    }

    async fn requeue(&self, filter: &DossierFilter, now: Millis) -> Result<Requeued, StoreError> {
        let mut tx = self.write().await?;
        let mut refused = Sql::new(
            "UPDATE dossiers SET state = 'pending', attempts = 0, last_error = NULL, next_attempt_at = ",
        );
        refused.bind(now).push(" WHERE state = 'refused'");
        push_filter(&mut refused, filter, "");
        let refused = tx.run(refused).await?;

        let mut pending = Sql::new("UPDATE dossiers SET next_attempt_at = ");
        pending
            .bind(now)
            .push(" WHERE state = 'pending' AND next_attempt_at > ")
            .bind(now);
        push_filter(&mut pending, filter, "");
        let pending = tx.run(pending).await?;

        let mut held = Sql::new("SELECT COUNT(*) FROM dossiers WHERE state = 'held'");
        push_filter(&mut held, filter, "");
        let held = tx.fetch(held).await?.first().map_or(0, |row| row.int(0));
        if held > 0 {
            tx.run(set_cursor_statement(
                RENORMALIZE_REQUESTED,
                now.to_string(),
                now,
            ))
            .await?;
        }
        tx.commit().await?;
        Ok(Requeued {
            refused,
            pending,
            held: held as u64,
        })
    }

    async fn payloads_page(
        &self,
        from: &str,
        to: &str,
        unit: Option<&str>,
        after: Option<&PayloadKey>,
        limit: usize,
    ) -> Result<Vec<PayloadRow>, StoreError> {
        // Keyset paging on (reception_day, source_id), which the indexes of migration 0008 serve in
        // order: each page starts where the last one ended, without re-reading or sorting the period.
        // The range's lower bound is the last page's day, not `from`: SQLite seeks the index on the
        // range and only filters on the row value, so with `from` every page would walk the period
        // from its start again (quadratic over a long period).
        let first_day = after.map_or(from, |after| after.reception_day.as_str().max(from));
        let mut sql = Sql::new(
            "SELECT d.reception_day, d.source_id, d.unit, d.state, b.payload FROM dossiers d \
             JOIN dossier_bodies b ON b.source_id = d.source_id \
             WHERE b.payload IS NOT NULL AND d.reception_day BETWEEN ",
        );
        sql.bind(first_day).push(" AND ").bind(to);
        if let Some(unit) = unit {
            sql.push(" AND d.unit = ").bind(unit);
        }
        if let Some(after) = after {
            sql.push(" AND (d.reception_day, d.source_id) > (")
                .bind(after.reception_day.as_str())
                .push(", ")
                .bind(after.source_id.as_str())
                .push(")");
        }
        sql.push(" ORDER BY d.reception_day, d.source_id LIMIT ")
            .bind(limit);
        let rows = self.reader().await?.fetch(sql).await?;
        Ok(rows
            .iter()
            .map(|row| PayloadRow {
                reception_day: row.text(0),
                source_id: row.text(1),
                unit: row.opt_text(2),
                state: state_of(&row.text(3)),
                payload: row.text(4),
            })
            .collect())
    }

    async fn dossier_state(&self, dossier_code: &str) -> Result<Option<DossierState>, StoreError> {
        let mut sql = Sql::new("SELECT state FROM dossiers WHERE dossier_code = ");
        sql.bind(dossier_code).push(" LIMIT 1");
        let rows = self.reader().await?.fetch(sql).await?;
        Ok(rows.first().map(|row| state_of(&row.text(0))))
    }
}

/// Narrows a query (which already has a WHERE clause) by an operator's filter; `prefix` is the
/// `dossiers` table's alias with its dot, or empty.
fn push_filter<'a>(sql: &mut Sql<'a>, filter: &'a DossierFilter, prefix: &str) {
    if let Some(scope) = &filter.unit {
        // The rows of one unit key: its unit code, or no unit and an agency it owns, or neither.
        sql.push(" AND (0 = 1");
        if !scope.units.is_empty() {
            sql.push(&format!(" OR {prefix}unit IN "))
                .list(&scope.units);
        }
        if !scope.agencies_without_unit.is_empty() {
            sql.push(&format!(
                " OR ({prefix}unit IS NULL AND {prefix}source_agency_id IN "
            ))
            .list(&scope.agencies_without_unit)
            .push(")");
        }
        if scope.without_agency {
            sql.push(&format!(
                " OR ({prefix}unit IS NULL AND {prefix}source_agency_id IS NULL)"
            ));
        }
        sql.push(")");
    }
    if let Some(reasons) = &filter.reasons {
        sql.push(&format!(" AND {prefix}reason_code IN "))
            .list(reasons);
    }
    if let Some(code) = &filter.dossier_code {
        sql.push(&format!(" AND {prefix}dossier_code = "))
            .bind(code);
    }
    if let Some(from) = &filter.from_day {
        sql.push(&format!(" AND {prefix}reception_day >= "))
            .bind(from);
    }
    if let Some(to) = &filter.to_day {
        sql.push(&format!(" AND {prefix}reception_day <= "))
            .bind(to);
    }
}

/// Adds one (state, reason code) group of the ledger to the counts.
fn add_to_counts(
    counts: &mut LedgerCounts,
    state: DossierState,
    reason: Option<String>,
    count: i64,
) {
    *counts.by_state.entry(state).or_default() += count;
    if let Some(reason) = reason
        && matches!(
            state,
            DossierState::Held | DossierState::Refused | DossierState::Skipped
        )
    {
        counts.by_reason.push((state, reason, count));
    }
}

/// Adds one (unit, source agency, state, reason code) group of the ledger to the per-unit summary. The
/// groups come ordered by unit and agency.
fn add_to_units(
    units: &mut Vec<UnitCounts>,
    unit: Option<String>,
    agency: Option<String>,
    state: DossierState,
    reason: Option<String>,
    count: i64,
) {
    // A resolved unit groups all its agencies; an unresolved one is shown per source agency.
    let key_agency = if unit.is_some() { None } else { agency };
    let position = units
        .iter()
        .position(|entry| entry.unit == unit && entry.source_agency_id == key_agency);
    let entry = match position {
        Some(index) => &mut units[index],
        None => {
            units.push(UnitCounts {
                unit,
                source_agency_id: key_agency,
                ..UnitCounts::default()
            });
            units.last_mut().expect("just pushed")
        }
    };
    *entry.counts.entry(state).or_default() += count;
    if let Some(reason) = reason
        && matches!(state, DossierState::Held | DossierState::Refused)
    {
        match entry.reasons.iter_mut().find(|(code, _)| *code == reason) {
            Some((_, total)) => *total += count,
            None => entry.reasons.push((reason, count)),
        }
    }
}
