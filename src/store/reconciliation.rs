//! Reconciliation: what the ledger holds against what the portal holds, the runs' per-unit lines, and the
//! content check's candidates and verdicts.

use async_trait::async_trait;

use super::sql::{Backend, Cells, Conn, IDS_PER_STATEMENT, ROWS_PER_STATEMENT, Sql, last_wins};
use super::{Millis, StoreError};

/// One unit's line of one reconciliation run.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconciliationRecord {
    pub run_id: String,
    pub unit: String,
    pub started_at: Millis,
    pub from_day: String,
    pub to_day: String,
    pub source_count: Option<i64>,
    pub ledger_count: i64,
    pub accepted: i64,
    pub portal_count: Option<i64>,
    pub missing: i64,
    pub complete: bool,
    /// The unit's line as JSON (the same object the reconciliation log holds).
    pub summary: String,
}

/// An accepted dossier whose copy on the portal the content check compares with its payload.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentCandidate {
    pub source_id: String,
    pub dossier_code: String,
    pub unit: Option<String>,
    pub reception_day: Option<String>,
    /// The payload the ledger says the portal accepted (the exact bytes sent).
    pub payload: String,
    pub payload_hash: String,
}

/// The message a dossier queued again by the content check carries in `last_error`.
pub const CONTENT_DIFFERS: &str = "content differs on the portal";

/// The ledger's side of reconciliation.
#[async_trait]
pub trait Reconciliation: Send + Sync {
    /// Up to `limit` dossiers of a unit accepted by the portal, chosen at random, with reception days
    /// from `from` to `to`: (source id, dossier code), to confirm on the portal one by one.
    async fn accepted_sample(
        &self,
        unit: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError>;

    /// Dossiers the ledger holds as accepted that the portal does not have after all: queued to be
    /// sent again (as creates), their progress entries with them.
    async fn mark_missing_on_portal(
        &self,
        source_ids: &[String],
        now: Millis,
    ) -> Result<u64, StoreError>;

    /// Stores one reconciliation run (one line per unit); a line stored again for the same run and unit
    /// replaces the earlier one.
    async fn record_reconciliation(
        &self,
        records: &[ReconciliationRecord],
    ) -> Result<(), StoreError>;

    /// The latest reconciliation line of every unit.
    async fn latest_reconciliation(&self) -> Result<Vec<ReconciliationRecord>, StoreError>;

    /// Content check: up to `limit` accepted dossiers (not redacted, with a code and a payload) accepted
    /// at or after `accepted_since`, of `unit` when given, that no check has looked at since
    /// `checked_before` (the run's start), those never checked first and then those checked longest
    /// ago, newest acceptance first. A caller pages by calling again once it has marked what it read
    /// ([`Reconciliation::mark_content_checked`]) or queued it again: those drop out.
    async fn content_candidates(
        &self,
        accepted_since: Millis,
        checked_before: Millis,
        unit: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ContentCandidate>, StoreError>;

    /// Content check: up to `limit` of a unit's accepted dossiers (not redacted) accepted before
    /// `accepted_before`, chosen at random.
    async fn content_sample(
        &self,
        unit: &str,
        accepted_before: Millis,
        limit: usize,
    ) -> Result<Vec<ContentCandidate>, StoreError>;

    /// Content check: stamps `content_checked_at` on these dossiers.
    async fn mark_content_checked(
        &self,
        source_ids: &[String],
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Content check: the portal holds something else than these accepted payloads, given as
    /// (source id, payload hash compared). Each is queued to be sent again now (pending, no accepted
    /// hash, attempts 0, `last_error` "content differs on the portal"), but only while it is still
    /// accepted with that very payload hash: a row in flight, or changed since it was read, is left
    /// alone. Returns the source ids queued.
    async fn requeue_content_differs(
        &self,
        differing: &[(String, String)],
        now: Millis,
    ) -> Result<Vec<String>, StoreError>;
}

/// The columns [`content_candidate`] reads, from `dossiers d` joined with `dossier_bodies b`.
const CANDIDATE_COLUMNS: &str =
    "d.source_id, d.dossier_code, d.unit, d.reception_day, b.payload, d.payload_hash";

/// The conditions every content-check candidate meets: accepted, with a code and a payload, not redacted.
const CANDIDATE_CONDITIONS: &str = "d.state = 'accepted' AND d.dossier_code IS NOT NULL \
     AND d.payload_hash IS NOT NULL AND b.payload IS NOT NULL AND b.redacted_at IS NULL";

#[async_trait]
impl<B: Backend> Reconciliation for B {
    async fn accepted_sample(
        &self,
        unit: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let mut sql = Sql::new("SELECT source_id, dossier_code FROM dossiers WHERE unit = ");
        sql.bind(unit)
            .push(" AND state = 'accepted' AND dossier_code IS NOT NULL AND reception_day BETWEEN ")
            .bind(from)
            .push(" AND ")
            .bind(to)
            .push(" ORDER BY random() LIMIT ")
            .bind(limit);
        let rows = self.reader().await?.fetch(sql).await?;
        Ok(rows.iter().map(|row| (row.text(0), row.text(1))).collect())
    }

    async fn mark_missing_on_portal(
        &self,
        source_ids: &[String],
        now: Millis,
    ) -> Result<u64, StoreError> {
        // A redacted dossier has no payload left to send: only a new record from the source does.
        const NOT_REDACTED: &str =
            "source_id NOT IN (SELECT source_id FROM dossier_bodies WHERE redacted_at IS NOT NULL)";
        let mut tx = self.write().await?;
        let mut marked = 0;
        for chunk in source_ids.chunks(IDS_PER_STATEMENT) {
            let mut dossiers = Sql::new(
                "UPDATE dossiers SET state = 'pending', portal_has = FALSE, accepted_hash = NULL, \
                 attempts = 0, last_error = NULL, next_attempt_at = ",
            );
            dossiers
                .bind(now)
                .push(" WHERE state = 'accepted' AND ")
                .push(NOT_REDACTED)
                .push(" AND source_id IN ")
                .list(chunk);
            marked += tx.run(dossiers).await?;
            let mut progress = Sql::new(
                "UPDATE progress SET state = 'waiting', sent_hash = NULL, attempts = 0 WHERE ",
            );
            progress
                .push(NOT_REDACTED)
                .push(" AND source_id IN ")
                .list(chunk);
            tx.run(progress).await?;
        }
        tx.commit().await?;
        Ok(marked)
    }

    async fn record_reconciliation(
        &self,
        records: &[ReconciliationRecord],
    ) -> Result<(), StoreError> {
        let records = last_wins(records, |record| {
            (record.run_id.as_str(), record.unit.as_str())
        });
        let mut tx = self.write().await?;
        for chunk in records.chunks(ROWS_PER_STATEMENT) {
            let mut sql = Sql::new(
                "INSERT INTO reconciliations (run_id, unit, started_at, from_day, to_day, \
                 source_count, ledger_count, accepted, portal_count, missing, complete, summary) ",
            );
            sql.values(chunk, |record, values| {
                values
                    .bind(&record.run_id)
                    .bind(&record.unit)
                    .bind(record.started_at)
                    .bind(&record.from_day)
                    .bind(&record.to_day)
                    .bind(record.source_count)
                    .bind(record.ledger_count)
                    .bind(record.accepted)
                    .bind(record.portal_count)
                    .bind(record.missing)
                    .bind(record.complete)
                    .bind(&record.summary);
            });
            sql.push(
                " ON CONFLICT (run_id, unit) DO UPDATE SET started_at = excluded.started_at, \
                 from_day = excluded.from_day, to_day = excluded.to_day, \
                 source_count = excluded.source_count, ledger_count = excluded.ledger_count, \
                 accepted = excluded.accepted, portal_count = excluded.portal_count, \
                 missing = excluded.missing, complete = excluded.complete, summary = excluded.summary",
            );
            tx.run(sql).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn latest_reconciliation(&self) -> Result<Vec<ReconciliationRecord>, StoreError> {
        let rows = self
            .reader()
            .await?
            .fetch(Sql::new(
                "SELECT r.run_id, r.unit, r.started_at, r.from_day, r.to_day, r.source_count, \
                 r.ledger_count, r.accepted, r.portal_count, r.missing, r.complete, r.summary \
                 FROM reconciliations r \
                 WHERE r.started_at = (SELECT MAX(started_at) FROM reconciliations WHERE unit = r.unit) \
                 ORDER BY r.unit",
            ))
            .await?;
        Ok(rows
            .iter()
            .map(|row| ReconciliationRecord {
                run_id: row.text(0),
                unit: row.text(1),
                started_at: row.int(2),
                from_day: row.text(3),
                to_day: row.text(4),
                source_count: row.opt_int(5),
                ledger_count: row.int(6),
                accepted: row.int(7),
                portal_count: row.opt_int(8),
                missing: row.int(9),
                complete: row.flag(10),
                summary: row.text(11),
            })
            .collect())
    }

    async fn content_candidates(
        &self,
        accepted_since: Millis,
        checked_before: Millis,
        unit: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ContentCandidate>, StoreError> {
        let mut sql = Sql::new(format!(
            "SELECT {CANDIDATE_COLUMNS} FROM dossiers d JOIN dossier_bodies b ON b.source_id = d.source_id \
             WHERE {CANDIDATE_CONDITIONS} AND d.accepted_at >= "
        ));
        sql.bind(accepted_since)
            .push(" AND (d.content_checked_at IS NULL OR d.content_checked_at < ")
            .bind(checked_before)
            .push(")");
        if let Some(unit) = unit {
            sql.push(" AND d.unit = ").bind(unit);
        }
        sql.push(
            " ORDER BY d.content_checked_at IS NOT NULL, d.content_checked_at, d.accepted_at DESC, \
             d.source_id LIMIT ",
        )
        .bind(limit);
        let rows = self.reader().await?.fetch(sql).await?;
        Ok(rows.iter().map(content_candidate).collect())
    }

    async fn content_sample(
        &self,
        unit: &str,
        accepted_before: Millis,
        limit: usize,
    ) -> Result<Vec<ContentCandidate>, StoreError> {
        let mut sql = Sql::new(format!(
            "SELECT {CANDIDATE_COLUMNS} FROM dossiers d JOIN dossier_bodies b ON b.source_id = d.source_id \
             WHERE {CANDIDATE_CONDITIONS} AND d.unit = "
        ));
        sql.bind(unit)
            .push(" AND d.accepted_at < ")
            .bind(accepted_before)
            .push(" ORDER BY random() LIMIT ")
            .bind(limit);
        let rows = self.reader().await?.fetch(sql).await?;
        Ok(rows.iter().map(content_candidate).collect())
    }

    async fn mark_content_checked(
        &self,
        source_ids: &[String],
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        for chunk in source_ids.chunks(IDS_PER_STATEMENT) {
            let mut sql = Sql::new("UPDATE dossiers SET content_checked_at = ");
            sql.bind(now).push(" WHERE source_id IN ").list(chunk);
            tx.run(sql).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn requeue_content_differs(
        &self,
        differing: &[(String, String)],
        now: Millis,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.write().await?;
        let mut queued = Vec::new();
        for chunk in differing.chunks(ROWS_PER_STATEMENT) {
            let mut sql = Sql::new("WITH compared (source_id, payload_hash) AS (");
            sql.values(chunk, |(source_id, payload_hash), values| {
                values.bind(source_id).bind(payload_hash);
            });
            sql.push(
                ") UPDATE dossiers SET state = 'pending', accepted_hash = NULL, attempts = 0, \
                 next_attempt_at = ",
            )
            .bind(now)
            .push(", last_error = ")
            .bind(CONTENT_DIFFERS)
            .push(", content_checked_at = ")
            .bind(now)
            .push(
                " FROM compared WHERE dossiers.source_id = compared.source_id \
                 AND dossiers.state = 'accepted' AND dossiers.payload_hash = compared.payload_hash \
                 RETURNING dossiers.source_id",
            );
            queued.extend(tx.fetch(sql).await?.iter().map(|row| row.text(0)));
        }
        tx.commit().await?;
        Ok(queued)
    }
}

/// A content-check candidate from its row ([`CANDIDATE_COLUMNS`]).
fn content_candidate(row: &impl Cells) -> ContentCandidate {
    ContentCandidate {
        source_id: row.text(0),
        dossier_code: row.text(1),
        unit: row.opt_text(2),
        reception_day: row.opt_text(3),
        payload: row.text(4),
        payload_hash: row.text(5),
    }
}
