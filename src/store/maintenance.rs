//! Maintenance and leadership: the attempt log, the leased roles only one instance may hold, retention's
//! redaction of finished dossiers, and closing the connections.

use async_trait::async_trait;

use super::sql::{Backend, Cells, Conn, Connection, Sql};
use super::{Millis, StoreError};

/// One line of the attempt log.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub at: Millis,
    pub owner: String,
    pub service: String,
    pub items: i64,
    pub outcome: &'static str,
    pub detail: Option<String>,
    pub duration_ms: i64,
}

/// A finished dossier the portal accepted long enough ago that its personal fields are due to be cleared
/// (`store.retention_days`).
#[derive(Debug, Clone)]
pub struct RetentionCandidate {
    pub source_id: String,
    /// The record's hash when it was read: the redaction lands only if no newer record arrived since.
    pub raw_hash: String,
    /// The payload as sent, to be stripped of its personal fields.
    pub payload: String,
}

/// What the retention pass writes for one dossier.
#[derive(Debug, Clone)]
pub struct Redaction {
    pub source_id: String,
    pub raw_hash: String,
    /// The payload without its personal fields ([`crate::privacy::redact_payload`]).
    pub payload: String,
}

/// The ledger's side of maintenance and leadership.
#[async_trait]
pub trait Maintenance: Send + Sync {
    /// Takes or renews `role` for `owner` until `until`, unless another owner holds it beyond `now`.
    /// True when `owner` holds the role now.
    async fn try_lead(
        &self,
        role: &str,
        owner: &str,
        now: Millis,
        until: Millis,
    ) -> Result<bool, StoreError>;

    /// Closes the connections once the work in flight is recorded.
    async fn close(&self);

    /// Retention: dossiers in state `accepted`, accepted before `accepted_before`, finished (the payload's
    /// TrangThaiHoSo is 9 or 10) and not yet redacted, in source id order after `after`.
    async fn retention_candidates(
        &self,
        accepted_before: Millis,
        after: &str,
        limit: usize,
    ) -> Result<Vec<RetentionCandidate>, StoreError>;

    /// Retention: drops each dossier's source record, replaces its payload with the redacted one, empties
    /// the payloads of its sent progress entries and stamps `redacted_at`, in one transaction; a dossier
    /// whose record changed since it was read (another `raw_hash`) or that is no longer accepted is left
    /// alone. The `dossiers` row (ids, unit, day, state, hashes) stays for reconciliation. Returns how
    /// many were redacted.
    async fn redact(&self, redactions: &[Redaction], now: Millis) -> Result<u64, StoreError>;
}

#[async_trait]
impl<B: Backend> Maintenance for B {
    async fn try_lead(
        &self,
        role: &str,
        owner: &str,
        now: Millis,
        until: Millis,
    ) -> Result<bool, StoreError> {
        // The upsert locks the role's row, so two instances asking at once are answered one after the
        // other, the second against the first one's lease.
        let mut sql = Sql::new("INSERT INTO leaders (role, owner, expires_at) VALUES (");
        sql.bind(role)
            .push(", ")
            .bind(owner)
            .push(", ")
            .bind(until)
            .push(
                ") ON CONFLICT (role) DO UPDATE SET owner = excluded.owner, \
                 expires_at = excluded.expires_at \
                 WHERE leaders.owner = excluded.owner OR leaders.expires_at <= ",
            )
            .bind(now)
            .push(" RETURNING owner");
        Ok(!self.writer().await?.fetch(sql).await?.is_empty())
    }

    async fn close(&self) {
        self.shut().await;
    }

    async fn retention_candidates(
        &self,
        accepted_before: Millis,
        after: &str,
        limit: usize,
    ) -> Result<Vec<RetentionCandidate>, StoreError> {
        let status = B::DIALECT.json_text("b.payload", "TrangThaiHoSo");
        let mut sql = Sql::new(format!(
            "SELECT d.source_id, d.raw_hash, b.payload FROM dossiers d \
             JOIN dossier_bodies b ON b.source_id = d.source_id \
             WHERE d.state = 'accepted' AND b.redacted_at IS NULL AND b.payload IS NOT NULL \
             AND {status} IN ('9', '10') AND d.accepted_at < "
        ));
        sql.bind(accepted_before)
            .push(" AND d.source_id > ")
            .bind(after)
            .push(" ORDER BY d.source_id LIMIT ")
            .bind(limit);
        let rows = self.reader().await?.fetch(sql).await?;
        Ok(rows
            .iter()
            .map(|row| RetentionCandidate {
                source_id: row.text(0),
                raw_hash: row.text(1),
                payload: row.text(2),
            })
            .collect())
    }

    async fn redact(&self, redactions: &[Redaction], now: Millis) -> Result<u64, StoreError> {
        let mut tx = self.write().await?;
        let mut redacted = 0;
        for redaction in redactions {
            let mut body = Sql::new("UPDATE dossier_bodies SET raw = '', payload = ");
            body.bind(&redaction.payload)
                .push(", redacted_at = ")
                .bind(now)
                .push(" WHERE source_id = ")
                .bind(&redaction.source_id)
                .push(
                    " AND redacted_at IS NULL AND EXISTS (SELECT 1 FROM dossiers d \
                     WHERE d.source_id = dossier_bodies.source_id AND d.state = 'accepted' \
                     AND d.raw_hash = ",
                )
                .bind(&redaction.raw_hash)
                .push(")");
            if tx.run(body).await? == 1 {
                let mut progress = Sql::new("UPDATE progress SET payload = '' WHERE source_id = ");
                progress
                    .bind(&redaction.source_id)
                    .push(" AND state = 'sent'");
                tx.run(progress).await?;
                redacted += 1;
            }
        }
        tx.commit().await?;
        Ok(redacted)
    }
}

/// Appends lines to the attempt log, one statement each (in the transaction that records the calls'
/// answers: [`super::Deliveries::record_deliveries`], [`super::Deliveries::record_progress`]).
pub(super) async fn log_attempts<B: Backend>(
    connection: &mut Connection<B>,
    attempts: &[AttemptRecord],
) -> Result<(), StoreError> {
    for attempt in attempts {
        // One fixed text, so that the driver keeps it prepared.
        let sql = Sql::numbered(
            "INSERT INTO attempts (at, owner, service, items, outcome, detail, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)"
                .to_owned(),
            [
                attempt.at.into(),
                attempt.owner.as_str().into(),
                attempt.service.as_str().into(),
                attempt.items.into(),
                attempt.outcome.into(),
                (&attempt.detail).into(),
                attempt.duration_ms.into(),
            ],
        );
        connection.run(sql).await?;
    }
    Ok(())
}
