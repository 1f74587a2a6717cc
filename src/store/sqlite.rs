//! The SQLite ledger: one file, WAL mode so that `report` and `retry` can read and write while the daemon
//! runs, a busy timeout for the moments they meet, and a file readable by its owner only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};

use super::{
    AttemptRecord, ClaimedDossier, ClaimedProgress, DeliveryOutcome, DeliveryResult, DossierFilter,
    FailureRow, HeldRecord, IngestRow, LedgerBucket, LedgerCounts, Millis, ProgressResult,
    RENORMALIZE_REQUESTED, ReconciliationRecord, Redaction, Requeued, RetentionCandidate, Store,
    StoreError, UnitCounts, add_to_counts, add_to_units, outcome_columns, state_of,
};
use crate::sync::decide::{DossierState, IngestAction, LedgerView};

/// SQLite allows 32,766 bound parameters per statement; chunks stay well below.
const ROWS_PER_STATEMENT: usize = 200;

pub struct SqliteStore {
    /// The one connection this process writes through. Writers queue here, in order, instead of meeting
    /// at SQLite's lock, whose busy handler sleeps in steps of up to 100 ms.
    writer: SqlitePool,
    /// Connections for reads, which WAL lets run beside the writer.
    reader: SqlitePool,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies the embedded migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        prepare_file(path)?;
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode: a committed transaction survives any crash of the process; a power cut
            // may roll back the last few commits, never corrupt the file. That is safe here because every
            // commit is self-consistent: a page's rows roll back with the cursor that covers them (they
            // are read again), and a rolled-back acceptance only means a harmless second send. FULL would
            // pay an fsync per batch and cap throughput at the disk's sync rate.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            // A fixed page cache (16 MiB per connection) and fewer, larger checkpoints: memory that does not
            // grow with the ledger, and fewer syncs of the database file.
            .pragma("cache_size", "-16384")
            .pragma("wal_autocheckpoint", "4000")
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(3)
            .connect_with(options.pragma("cache_size", "-4096"))
            .await?;
        Ok(SqliteStore {
            writer,
            reader,
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing ledger for reading only (the operator's commands beside a running daemon):
    /// no file is created, no migration runs, and no write lock is ever taken, so the daemon's writes
    /// are not delayed. Every write through this store fails.
    pub async fn open_read_only(path: &Path) -> Result<SqliteStore, StoreError> {
        if !path.exists() {
            return Err(StoreError::File {
                path: path.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no ledger here yet: has the daemon run with this configuration?",
                ),
            });
        }
        let options = SqliteConnectOptions::from_str("sqlite://")?
            .filename(path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(30));
        let reader = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(options)
            .await?;
        Ok(SqliteStore {
            writer: reader.clone(),
            reader,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A pool for reading (tests and reports look at the ledger through it).
    pub fn pool(&self) -> &SqlitePool {
        &self.reader
    }
}

/// Creates the directory (0700) and the file (0600) before SQLite does, so that the file holding personal
/// data is never readable by anyone but its owner, not even for a moment. SQLite gives the -wal and -shm
/// files the database file's permissions.
fn prepare_file(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let file_error = |source| StoreError::File {
        path: path.display().to_string(),
        source,
    };
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        && !parent.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(file_error)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(file_error)?;
    let permissions = std::fs::metadata(path).map_err(file_error)?.permissions();
    if permissions.mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(file_error)?;
    }
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ledger_views(
        &self,
        source_ids: &[String],
    ) -> Result<HashMap<String, LedgerView>, StoreError> {
        let mut views = HashMap::with_capacity(source_ids.len());
        for chunk in source_ids.chunks(ROWS_PER_STATEMENT * 4) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "SELECT source_id, raw_hash, state, payload_hash, accepted_hash FROM dossiers WHERE source_id IN (",
            );
            let mut separated = query.separated(", ");
            for id in chunk {
                separated.push_bind(id);
            }
            query.push(")");
            for row in query
                .build()
                .persistent(false)
                .fetch_all(&self.reader)
                .await?
            {
                views.insert(
                    row.get::<String, _>(0),
                    LedgerView {
                        raw_hash: row.get(1),
                        state: state_of(row.get::<&str, _>(2)),
                        payload_hash: row.get(3),
                        accepted_hash: row.get(4),
                    },
                );
            }
        }
        Ok(views)
    }

    async fn ingest(
        &self,
        rows: &[IngestRow],
        cursor: Option<(&str, &str)>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        let (keep, set): (Vec<&IngestRow>, Vec<&IngestRow>) = rows
            .iter()
            .filter(|row| row.action != IngestAction::Unchanged)
            .partition(|row| row.action == IngestAction::KeepState);

        for chunk in set.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO dossiers (source_id, dossier_code, raw_hash, source_updated_at, source_agency_id, \
                 unit, procedure_code, reception_day, payload_hash, state, reason_code, reason_detail, \
                 attempts, next_attempt_at, first_seen_at, changed_at) ",
            );
            query.push_values(chunk, |mut values, row| {
                let state = match row.action {
                    IngestAction::Set(state) => state,
                    _ => DossierState::Pending,
                };
                values
                    .push_bind(&row.source_id)
                    .push_bind(&row.dossier_code)
                    .push_bind(&row.raw_hash)
                    .push_bind(row.source_updated_at)
                    .push_bind(&row.source_agency_id)
                    .push_bind(&row.unit)
                    .push_bind(&row.procedure_code)
                    .push_bind(&row.reception_day)
                    .push_bind(&row.payload_hash)
                    .push_bind(state.as_str())
                    .push_bind(&row.reason_code)
                    .push_bind(&row.reason_detail)
                    .push_bind(0_i64)
                    .push_bind(now)
                    .push_bind(now)
                    .push_bind(now);
            });
            query.push(
                " ON CONFLICT (source_id) DO UPDATE SET dossier_code = excluded.dossier_code, \
                 raw_hash = excluded.raw_hash, source_updated_at = excluded.source_updated_at, \
                 source_agency_id = excluded.source_agency_id, unit = excluded.unit, \
                 procedure_code = excluded.procedure_code, reception_day = excluded.reception_day, \
                 payload_hash = excluded.payload_hash, state = excluded.state, \
                 reason_code = excluded.reason_code, reason_detail = excluded.reason_detail, \
                 attempts = 0, next_attempt_at = excluded.next_attempt_at, \
                 last_error = NULL, lease_owner = NULL, lease_expires_at = NULL, changed_at = excluded.changed_at",
            );
            query.build().persistent(false).execute(&mut *tx).await?;
        }

        for chunk in keep.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "WITH incoming (source_id, dossier_code, raw_hash, source_updated_at, source_agency_id, unit, \
                 procedure_code, reception_day) AS (",
            );
            query.push_values(chunk, |mut values, row| {
                values
                    .push_bind(&row.source_id)
                    .push_bind(&row.dossier_code)
                    .push_bind(&row.raw_hash)
                    .push_bind(row.source_updated_at)
                    .push_bind(&row.source_agency_id)
                    .push_bind(&row.unit)
                    .push_bind(&row.procedure_code)
                    .push_bind(&row.reception_day);
            });
            query.push(
                ") UPDATE dossiers SET dossier_code = incoming.dossier_code, \
                 raw_hash = incoming.raw_hash, source_updated_at = incoming.source_updated_at, \
                 source_agency_id = incoming.source_agency_id, unit = incoming.unit, \
                 procedure_code = incoming.procedure_code, reception_day = incoming.reception_day, \
                 changed_at = ",
            );
            query.push_bind(now);
            query.push(" FROM incoming WHERE dossiers.source_id = incoming.source_id");
            query.build().persistent(false).execute(&mut *tx).await?;
        }

        let written: Vec<&IngestRow> = rows
            .iter()
            .filter(|row| row.action != IngestAction::Unchanged)
            .collect();
        for chunk in written.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO dossier_bodies (source_id, raw, payload, findings) ",
            );
            query.push_values(chunk, |mut values, row| {
                values
                    .push_bind(&row.source_id)
                    .push_bind(&row.raw)
                    .push_bind(&row.payload)
                    .push_bind(&row.findings);
            });
            query.push(
                " ON CONFLICT (source_id) DO UPDATE SET raw = excluded.raw, payload = excluded.payload, \
                 findings = excluded.findings, redacted_at = NULL",
            );
            query.build().persistent(false).execute(&mut *tx).await?;
        }

        let progress: Vec<(&str, &(String, String, String))> = rows
            .iter()
            .filter(|row| {
                matches!(
                    row.action,
                    IngestAction::Set(DossierState::Pending | DossierState::Accepted)
                        | IngestAction::KeepState
                )
            })
            .flat_map(|row| {
                row.progress
                    .iter()
                    .map(move |entry| (row.source_id.as_str(), entry))
            })
            .collect();
        for chunk in progress.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO progress (source_id, entry_key, payload, payload_hash, state, next_attempt_at) ",
            );
            query.push_values(chunk, |mut values, (source_id, (key, payload, hash))| {
                values
                    .push_bind(*source_id)
                    .push_bind(key)
                    .push_bind(payload)
                    .push_bind(hash)
                    .push_bind("waiting")
                    .push_bind(now);
            });
            query.push(
                " ON CONFLICT (source_id, entry_key) DO UPDATE SET payload = excluded.payload, \
                 payload_hash = excluded.payload_hash, \
                 state = CASE WHEN progress.sent_hash = excluded.payload_hash THEN 'sent' \
                              WHEN progress.payload_hash = excluded.payload_hash THEN progress.state \
                              ELSE 'waiting' END, \
                 attempts = CASE WHEN progress.payload_hash = excluded.payload_hash THEN progress.attempts ELSE 0 END \
                 WHERE progress.payload_hash <> excluded.payload_hash",
            );
            query.build().persistent(false).execute(&mut *tx).await?;
        }

        // Entries of dossiers the portal already has can go at once; the others wait for their dossier.
        let with_progress: Vec<&str> = rows
            .iter()
            .filter(|row| !row.progress.is_empty())
            .map(|row| row.source_id.as_str())
            .collect();
        release_waiting_progress(&mut tx, &with_progress).await?;

        if let Some((name, value)) = cursor {
            sqlx::query(
                "INSERT INTO cursors (name, value, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(name)
            .bind(value)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn cursor(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM cursors WHERE name = ?1")
                .bind(name)
                .fetch_optional(&self.reader)
                .await?,
        )
    }

    async fn held_records(&self, after: &str, limit: usize) -> Result<Vec<HeldRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.source_id, b.raw, d.raw_hash, d.payload_hash, d.accepted_hash, d.reason_code \
             FROM dossiers d JOIN dossier_bodies b ON b.source_id = d.source_id \
             WHERE d.state = 'held' AND d.source_id > ?1 ORDER BY d.source_id LIMIT ?2",
        )
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| HeldRecord {
                source_id: row.get(0),
                raw: row.get(1),
                reason_code: row.get(5),
                view: LedgerView {
                    raw_hash: row.get(2),
                    state: DossierState::Held,
                    payload_hash: row.get(3),
                    accepted_hash: row.get(4),
                },
            })
            .collect())
    }

    async fn claim_dossiers(
        &self,
        owner: &str,
        limit: usize,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<ClaimedDossier>, StoreError> {
        // Two index walks (due pending rows in order, expired leases), never a sort of the whole backlog:
        // a claim costs the same with ten pending dossiers or a million. The payloads are read in the same
        // transaction, so they are the ones whose hashes were claimed.
        let mut tx = self.writer.begin().await?;
        let rows = sqlx::query(
            "UPDATE dossiers SET state = 'in_flight', lease_owner = ?1, lease_expires_at = ?2 \
             WHERE source_id IN ( \
                 SELECT source_id FROM (SELECT source_id FROM dossiers \
                     WHERE state = 'pending' AND next_attempt_at <= ?3 ORDER BY next_attempt_at LIMIT ?4) \
                 UNION ALL \
                 SELECT source_id FROM (SELECT source_id FROM dossiers \
                     WHERE state = 'in_flight' AND lease_expires_at < ?3 LIMIT ?4) \
                 LIMIT ?4) \
             RETURNING source_id, dossier_code, unit, payload_hash, portal_has, attempts",
        )
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        let mut claimed: Vec<ClaimedDossier> = rows
            .into_iter()
            .map(|row| ClaimedDossier {
                source_id: row.get(0),
                dossier_code: row.get::<Option<String>, _>(1).unwrap_or_default(),
                unit: row.get(2),
                payload: String::new(),
                payload_hash: row.get::<Option<String>, _>(3).unwrap_or_default(),
                portal_has: row.get::<i64, _>(4) != 0,
                attempts: row.get::<i64, _>(5).max(0) as u32,
            })
            .collect();
        if !claimed.is_empty() {
            let mut query = QueryBuilder::<Sqlite>::new(
                "SELECT source_id, payload FROM dossier_bodies WHERE source_id IN (",
            );
            let mut separated = query.separated(", ");
            for dossier in &claimed {
                separated.push_bind(&dossier.source_id);
            }
            query.push(")");
            let mut payloads: HashMap<String, Option<String>> = query
                .build()
                .persistent(false)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|row| (row.get(0), row.get(1)))
                .collect();
            for dossier in &mut claimed {
                dossier.payload = payloads
                    .remove(&dossier.source_id)
                    .flatten()
                    .unwrap_or_default();
            }
        }
        tx.commit().await?;
        Ok(claimed)
    }

    async fn record_deliveries(
        &self,
        owner: &str,
        results: &[DeliveryResult],
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<ClaimedProgress>, StoreError> {
        let mut tx = self.writer.begin().await?;
        for chunk in results.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "WITH result (source_id, sent_hash, outcome, code, message, next_at) AS (",
            );
            query.push_values(chunk, |mut values, result| {
                let (outcome, code, message, next_at) = outcome_columns(&result.outcome);
                values
                    .push_bind(&result.source_id)
                    .push_bind(&result.payload_hash)
                    .push_bind(outcome)
                    .push_bind(code)
                    .push_bind(message)
                    .push_bind(next_at);
            });
            // An acceptance always records that the portal holds the sent version; the row only becomes
            // `accepted` while that is still its payload (a newer version may have arrived meanwhile).
            // Refusals and retries only land on a row still in flight for this owner with that payload.
            query.push(
                ") UPDATE dossiers SET \
                 portal_has = CASE WHEN result.outcome = 'accepted' THEN 1 ELSE portal_has END, \
                 accepted_hash = CASE WHEN result.outcome = 'accepted' THEN result.sent_hash ELSE accepted_hash END, \
                 accepted_at = CASE WHEN result.outcome = 'accepted' THEN ",
            );
            query.push_bind(now);
            query.push(
                " ELSE accepted_at END, \
                 state = CASE WHEN dossiers.payload_hash <> result.sent_hash OR dossiers.state <> 'in_flight' \
                                   OR dossiers.lease_owner IS NOT ",
            );
            query.push_bind(owner);
            query.push(
                " THEN dossiers.state \
                              WHEN result.outcome = 'accepted' THEN 'accepted' \
                              WHEN result.outcome = 'refused' THEN 'refused' \
                              ELSE 'pending' END, \
                 reason_code = CASE WHEN result.outcome = 'refused' AND dossiers.payload_hash = result.sent_hash \
                                    THEN 'portal_' || result.code \
                                    WHEN result.outcome = 'accepted' AND dossiers.payload_hash = result.sent_hash \
                                    THEN NULL ELSE reason_code END, \
                 reason_detail = CASE WHEN result.outcome = 'refused' AND dossiers.payload_hash = result.sent_hash \
                                      THEN result.message \
                                      WHEN result.outcome = 'accepted' AND dossiers.payload_hash = result.sent_hash \
                                      THEN NULL ELSE reason_detail END, \
                 attempts = CASE WHEN dossiers.payload_hash = result.sent_hash THEN attempts + 1 ELSE attempts END, \
                 last_error = CASE WHEN result.outcome = 'retry' THEN result.message \
                                   WHEN dossiers.payload_hash = result.sent_hash THEN NULL ELSE last_error END, \
                 next_attempt_at = CASE WHEN result.outcome = 'retry' AND dossiers.payload_hash = result.sent_hash \
                                        THEN result.next_at ELSE next_attempt_at END, \
                 lease_owner = CASE WHEN dossiers.state = 'in_flight' AND dossiers.payload_hash = result.sent_hash \
                                    THEN NULL ELSE lease_owner END, \
                 lease_expires_at = CASE WHEN dossiers.state = 'in_flight' AND dossiers.payload_hash = result.sent_hash \
                                         THEN NULL ELSE lease_expires_at END \
                 FROM result WHERE dossiers.source_id = result.source_id",
            );
            query.build().persistent(false).execute(&mut *tx).await?;
        }
        let accepted: Vec<&str> = results
            .iter()
            .filter(|result| matches!(result.outcome, DeliveryOutcome::Accepted))
            .map(|result| result.source_id.as_str())
            .collect();
        let mut progress = Vec::new();
        for chunk in accepted.chunks(ROWS_PER_STATEMENT * 4) {
            // `+state` keeps the planner on the primary key (a few ids), not the state index.
            let mut query = QueryBuilder::<Sqlite>::new(
                "UPDATE progress SET state = 'in_flight', lease_owner = ",
            );
            query.push_bind(owner);
            query.push(", lease_expires_at = ");
            query.push_bind(lease_until);
            query.push(" WHERE +state = 'waiting' AND source_id IN (");
            let mut separated = query.separated(", ");
            for id in chunk {
                separated.push_bind(*id);
            }
            query.push(") RETURNING source_id, entry_key, payload, payload_hash, attempts");
            let rows = query.build().persistent(false).fetch_all(&mut *tx).await?;
            progress.extend(rows.into_iter().map(|row| ClaimedProgress {
                source_id: row.get(0),
                entry_key: row.get(1),
                payload: row.get(2),
                payload_hash: row.get(3),
                attempts: row.get::<i64, _>(4).max(0) as u32,
            }));
        }
        tx.commit().await?;
        Ok(progress)
    }

    async fn claim_progress(
        &self,
        owner: &str,
        limit: usize,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<ClaimedProgress>, StoreError> {
        // Entries of dossiers the portal does not have yet are `waiting`, not `pending`, so this walks only
        // what can be sent.
        let rows = sqlx::query(
            "UPDATE progress SET state = 'in_flight', lease_owner = ?1, lease_expires_at = ?2 \
             WHERE rowid IN ( \
                 SELECT rowid FROM (SELECT rowid FROM progress \
                     WHERE state = 'pending' AND next_attempt_at <= ?3 ORDER BY next_attempt_at LIMIT ?4) \
                 UNION ALL \
                 SELECT rowid FROM (SELECT rowid FROM progress \
                     WHERE state = 'in_flight' AND lease_expires_at < ?3 LIMIT ?4) \
                 LIMIT ?4) \
             RETURNING source_id, entry_key, payload, payload_hash, attempts",
        )
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&self.writer)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| ClaimedProgress {
                source_id: row.get(0),
                entry_key: row.get(1),
                payload: row.get(2),
                payload_hash: row.get(3),
                attempts: row.get::<i64, _>(4).max(0) as u32,
            })
            .collect())
    }

    async fn record_progress(
        &self,
        owner: &str,
        results: &[ProgressResult],
        _now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for chunk in results.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "WITH result (source_id, entry_key, hash_sent, outcome, code, message, next_at) AS (",
            );
            query.push_values(chunk, |mut values, result| {
                let (outcome, code, message, next_at) = outcome_columns(&result.outcome);
                values
                    .push_bind(&result.source_id)
                    .push_bind(&result.entry_key)
                    .push_bind(&result.payload_hash)
                    .push_bind(outcome)
                    .push_bind(code)
                    .push_bind(message)
                    .push_bind(next_at);
            });
            query.push(
                ") UPDATE progress SET \
                 sent_hash = CASE WHEN result.outcome = 'accepted' THEN result.hash_sent ELSE progress.sent_hash END, \
                 state = CASE WHEN progress.payload_hash <> result.hash_sent OR progress.state <> 'in_flight' \
                                   OR progress.lease_owner IS NOT ",
            );
            query.push_bind(owner);
            query.push(
                " THEN progress.state \
                              WHEN result.outcome = 'accepted' THEN 'sent' \
                              WHEN result.outcome = 'refused' THEN 'refused' \
                              ELSE 'pending' END, \
                 attempts = attempts + 1, \
                 last_error = CASE WHEN result.outcome = 'accepted' THEN NULL ELSE result.message END, \
                 next_attempt_at = CASE WHEN result.outcome = 'retry' THEN result.next_at ELSE next_attempt_at END, \
                 lease_owner = NULL, lease_expires_at = NULL \
                 FROM result WHERE progress.source_id = result.source_id AND progress.entry_key = result.entry_key",
            );
            query.build().persistent(false).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn release_claims(&self, owner: &str) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        let dossiers = sqlx::query(
            "UPDATE dossiers SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL \
             WHERE state = 'in_flight' AND lease_owner = ?1",
        )
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let progress = sqlx::query(
            "UPDATE progress SET state = 'pending', lease_owner = NULL, lease_expires_at = NULL \
             WHERE state = 'in_flight' AND lease_owner = ?1",
        )
        .bind(owner)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(dossiers + progress)
    }

    async fn log_attempt(&self, attempt: &AttemptRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO attempts (at, owner, service, items, outcome, detail, duration_ms) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(attempt.at)
        .bind(&attempt.owner)
        .bind(&attempt.service)
        .bind(attempt.items)
        .bind(attempt.outcome)
        .bind(&attempt.detail)
        .bind(attempt.duration_ms)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn counts(&self) -> Result<LedgerCounts, StoreError> {
        let mut counts = LedgerCounts::default();
        let rows = sqlx::query(
            "SELECT state, reason_code, COUNT(*) FROM dossiers GROUP BY state, reason_code",
        )
        .fetch_all(&self.reader)
        .await?;
        for row in rows {
            add_to_counts(
                &mut counts,
                state_of(row.get::<&str, _>(0)),
                row.get(1),
                row.get(2),
            );
        }
        counts.progress_unsent = sqlx::query_scalar(
            "SELECT COUNT(*) FROM progress JOIN dossiers USING (source_id) \
             WHERE progress.state IN ('waiting', 'pending', 'in_flight') \
               AND dossiers.state NOT IN ('held', 'skipped', 'refused')",
        )
        .fetch_one(&self.reader)
        .await?;
        Ok(counts)
    }

    async fn unit_counts(&self) -> Result<Vec<UnitCounts>, StoreError> {
        let rows = sqlx::query(
            "SELECT unit, source_agency_id, state, reason_code, COUNT(*) FROM dossiers \
             GROUP BY unit, source_agency_id, state, reason_code ORDER BY unit, source_agency_id",
        )
        .fetch_all(&self.reader)
        .await?;
        let mut units = Vec::new();
        for row in rows {
            add_to_units(
                &mut units,
                row.get(0),
                row.get(1),
                state_of(row.get::<&str, _>(2)),
                row.get(3),
                row.get(4),
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
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT unit, source_agency_id, reception_day, state, reason_code, COUNT(*), \
             MIN(CASE WHEN state IN ('accepted', 'skipped') THEN NULL ELSE changed_at END) \
             FROM dossiers WHERE (reception_day BETWEEN ",
        );
        query.push_bind(from).push(" AND ").push_bind(to);
        query.push(" OR reception_day IS NULL)");
        if let Some(unit) = unit {
            query.push(" AND unit = ").push_bind(unit);
        }
        query.push(" GROUP BY unit, source_agency_id, reception_day, state, reason_code");
        let rows = query
            .build()
            .persistent(false)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| LedgerBucket {
                unit: row.get(0),
                source_agency_id: row.get(1),
                day: row.get(2),
                state: state_of(row.get::<&str, _>(3)),
                reason_code: row.get(4),
                count: row.get(5),
                oldest_unsent_at: row.get(6),
            })
            .collect())
    }

    async fn ledger_ids(
        &self,
        source_agency_id: &str,
        day: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT source_id FROM dossiers WHERE source_agency_id = ?1 AND reception_day = ?2",
        )
        .bind(source_agency_id)
        .bind(day)
        .fetch_all(&self.reader)
        .await?)
    }

    async fn failures(
        &self,
        filter: &DossierFilter,
        limit: usize,
    ) -> Result<Vec<FailureRow>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT d.source_id, d.dossier_code, d.unit, d.source_agency_id, d.reception_day, d.state, \
             d.reason_code, d.reason_detail, b.findings, d.attempts, d.changed_at \
             FROM dossiers d JOIN dossier_bodies b ON b.source_id = d.source_id \
             WHERE d.state IN ('held', 'refused')",
        );
        push_filter(&mut query, filter, "d.");
        query
            .push(" ORDER BY d.changed_at, d.source_id LIMIT ")
            .push_bind(limit as i64);
        let rows = query
            .build()
            .persistent(false)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| FailureRow {
                source_id: row.get(0),
                dossier_code: row.get(1),
                unit: row.get(2),
                source_agency_id: row.get(3),
                reception_day: row.get(4),
                state: state_of(row.get::<&str, _>(5)),
                reason_code: row.get(6),
                reason_detail: row.get(7),
                findings: row.get(8),
                attempts: row.get(9),
                changed_at: row.get(10),
            })
            .collect())
    }

    async fn requeue(&self, filter: &DossierFilter, now: Millis) -> Result<Requeued, StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut refused = QueryBuilder::<Sqlite>::new(
            "UPDATE dossiers SET state = 'pending', attempts = 0, last_error = NULL, next_attempt_at = ",
        );
        refused.push_bind(now).push(" WHERE state = 'refused'");
        push_filter(&mut refused, filter, "");
        let refused = refused.build().persistent(false).execute(&mut *tx).await?;

        let mut pending = QueryBuilder::<Sqlite>::new("UPDATE dossiers SET next_attempt_at = ");
        pending
            .push_bind(now)
            .push(" WHERE state = 'pending' AND next_attempt_at > ")
            .push_bind(now);
        push_filter(&mut pending, filter, "");
        let pending = pending.build().persistent(false).execute(&mut *tx).await?;

        let mut held =
            QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM dossiers WHERE state = 'held'");
        push_filter(&mut held, filter, "");
        let held: i64 = held
            .build_query_scalar()
            .persistent(false)
            .fetch_one(&mut *tx)
            .await?;
        if held > 0 {
            sqlx::query(
                "INSERT INTO cursors (name, value, updated_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            )
            .bind(RENORMALIZE_REQUESTED)
            .bind(now.to_string())
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Requeued {
            refused: refused.rows_affected(),
            pending: pending.rows_affected(),
            held: held as u64,
        })
    }

    async fn payloads(
        &self,
        from: &str,
        to: &str,
        unit: Option<&str>,
    ) -> Result<Vec<(Option<String>, DossierState, String)>, StoreError> {
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT d.unit, d.state, b.payload FROM dossiers d \
             JOIN dossier_bodies b ON b.source_id = d.source_id \
             WHERE b.payload IS NOT NULL AND d.reception_day BETWEEN ",
        );
        query.push_bind(from).push(" AND ").push_bind(to);
        if let Some(unit) = unit {
            query.push(" AND d.unit = ").push_bind(unit);
        }
        let rows = query
            .build()
            .persistent(false)
            .fetch_all(&self.reader)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.get(0), state_of(row.get::<&str, _>(1)), row.get(2)))
            .collect())
    }

    async fn accepted_sample(
        &self,
        unit: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT source_id, dossier_code FROM dossiers WHERE unit = ?1 AND state = 'accepted' \
             AND dossier_code IS NOT NULL AND reception_day BETWEEN ?2 AND ?3 ORDER BY random() LIMIT ?4",
        )
        .bind(unit)
        .bind(from)
        .bind(to)
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect())
    }

    async fn mark_missing_on_portal(
        &self,
        source_ids: &[String],
        now: Millis,
    ) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut marked = 0;
        for chunk in source_ids.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "UPDATE dossiers SET state = 'pending', portal_has = 0, accepted_hash = NULL, attempts = 0, \
                 last_error = NULL, next_attempt_at = ",
            );
            query.push_bind(now);
            // A redacted dossier has no payload left to send: only a new record from the source does.
            query.push(
                " WHERE state = 'accepted' AND source_id NOT IN (SELECT source_id FROM dossier_bodies WHERE redacted_at IS NOT NULL) AND source_id IN (",
            );
            let mut ids = query.separated(", ");
            for id in chunk {
                ids.push_bind(id);
            }
            query.push(")");
            marked += query
                .build()
                .persistent(false)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let mut progress = QueryBuilder::<Sqlite>::new(
                "UPDATE progress SET state = 'waiting', sent_hash = NULL, attempts = 0 \
                 WHERE source_id NOT IN (SELECT source_id FROM dossier_bodies WHERE redacted_at IS NOT NULL) AND source_id IN (",
            );
            let mut ids = progress.separated(", ");
            for id in chunk {
                ids.push_bind(id);
            }
            progress.push(")");
            progress.build().persistent(false).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(marked)
    }

    async fn record_reconciliation(
        &self,
        records: &[ReconciliationRecord],
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for chunk in records.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT OR REPLACE INTO reconciliations (run_id, unit, started_at, from_day, to_day, \
                 source_count, ledger_count, accepted, portal_count, missing, complete, summary) ",
            );
            query.push_values(chunk, |mut values, record| {
                values
                    .push_bind(&record.run_id)
                    .push_bind(&record.unit)
                    .push_bind(record.started_at)
                    .push_bind(&record.from_day)
                    .push_bind(&record.to_day)
                    .push_bind(record.source_count)
                    .push_bind(record.ledger_count)
                    .push_bind(record.accepted)
                    .push_bind(record.portal_count)
                    .push_bind(record.missing)
                    .push_bind(record.complete)
                    .push_bind(&record.summary);
            });
            query.build().persistent(false).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn latest_reconciliation(&self) -> Result<Vec<ReconciliationRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.run_id, r.unit, r.started_at, r.from_day, r.to_day, r.source_count, r.ledger_count, \
             r.accepted, r.portal_count, r.missing, r.complete, r.summary FROM reconciliations r \
             WHERE r.started_at = (SELECT MAX(started_at) FROM reconciliations WHERE unit = r.unit) \
             ORDER BY r.unit",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| ReconciliationRecord {
                run_id: row.get(0),
                unit: row.get(1),
                started_at: row.get(2),
                from_day: row.get(3),
                to_day: row.get(4),
                source_count: row.get(5),
                ledger_count: row.get(6),
                accepted: row.get(7),
                portal_count: row.get(8),
                missing: row.get(9),
                complete: row.get(10),
                summary: row.get(11),
            })
            .collect())
    }

    async fn dossier_state(&self, dossier_code: &str) -> Result<Option<DossierState>, StoreError> {
        let state: Option<String> =
            sqlx::query_scalar("SELECT state FROM dossiers WHERE dossier_code = ?1 LIMIT 1")
                .bind(dossier_code)
                .fetch_optional(&self.reader)
                .await?;
        Ok(state.as_deref().map(state_of))
    }

    async fn next_due(&self) -> Result<Option<Millis>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(at) FROM (SELECT MIN(next_attempt_at) AS at FROM dossiers WHERE state = 'pending' \
             UNION ALL SELECT MIN(lease_expires_at) FROM dossiers WHERE state = 'in_flight' \
             UNION ALL SELECT MIN(next_attempt_at) FROM progress WHERE state = 'pending')",
        )
        .fetch_one(&self.reader)
        .await?)
    }

    async fn try_lead(
        &self,
        role: &str,
        owner: &str,
        now: Millis,
        until: Millis,
    ) -> Result<bool, StoreError> {
        let held: Option<String> = sqlx::query_scalar(
            "INSERT INTO leaders (role, owner, expires_at) VALUES (?1, ?2, ?4) \
             ON CONFLICT (role) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
             WHERE leaders.owner = excluded.owner OR leaders.expires_at <= ?3 \
             RETURNING owner",
        )
        .bind(role)
        .bind(owner)
        .bind(now)
        .bind(until)
        .fetch_optional(&self.writer)
        .await?;
        Ok(held.is_some())
    }

    async fn close(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }

    async fn retention_candidates(
        &self,
        accepted_before: Millis,
        after: &str,
        limit: usize,
    ) -> Result<Vec<RetentionCandidate>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.source_id, d.raw_hash, b.payload FROM dossiers d \
             JOIN dossier_bodies b ON b.source_id = d.source_id \
             WHERE d.state = 'accepted' AND d.accepted_at < ? AND d.source_id > ? \
             AND b.redacted_at IS NULL AND b.payload IS NOT NULL \
             AND json_extract(b.payload, '$.TrangThaiHoSo') IN ('9', '10') \
             ORDER BY d.source_id LIMIT ?",
        )
        .bind(accepted_before)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| RetentionCandidate {
                source_id: row.get(0),
                raw_hash: row.get(1),
                payload: row.get(2),
            })
            .collect())
    }

    async fn redact(&self, redactions: &[Redaction], now: Millis) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut redacted = 0;
        for redaction in redactions {
            let done = sqlx::query(
                "UPDATE dossier_bodies SET raw = '', payload = ?, redacted_at = ? \
                 WHERE source_id = ? AND redacted_at IS NULL AND EXISTS (SELECT 1 FROM dossiers d \
                 WHERE d.source_id = dossier_bodies.source_id AND d.raw_hash = ? AND d.state = 'accepted')",
            )
            .bind(&redaction.payload)
            .bind(now)
            .bind(&redaction.source_id)
            .bind(&redaction.raw_hash)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if done == 1 {
                sqlx::query(
                    "UPDATE progress SET payload = '' WHERE source_id = ? AND state = 'sent'",
                )
                .bind(&redaction.source_id)
                .execute(&mut *tx)
                .await?;
                redacted += 1;
            }
        }
        tx.commit().await?;
        Ok(redacted)
    }
}

/// Makes the waiting progress entries of these dossiers due when the portal already has their dossier
/// (a new entry of a dossier sent earlier).
/// Narrows a query (which already has a WHERE clause) by an operator's filter; `prefix` is the
/// `dossiers` table's alias with its dot, or empty.
fn push_filter(query: &mut QueryBuilder<Sqlite>, filter: &DossierFilter, prefix: &str) {
    if let Some(scope) = &filter.unit {
        // The rows of one unit key: its unit code, or no unit and an agency it owns, or neither.
        query.push(" AND (0 = 1");
        if !scope.units.is_empty() {
            query.push(format_args!(" OR {prefix}unit IN ("));
            push_list(query, &scope.units);
        }
        if !scope.agencies_without_unit.is_empty() {
            query.push(format_args!(
                " OR ({prefix}unit IS NULL AND {prefix}source_agency_id IN ("
            ));
            push_list(query, &scope.agencies_without_unit);
            query.push(")");
        }
        if scope.without_agency {
            query.push(format_args!(
                " OR ({prefix}unit IS NULL AND {prefix}source_agency_id IS NULL)"
            ));
        }
        query.push(")");
    }
    if let Some(reasons) = &filter.reasons {
        if reasons.is_empty() {
            query.push(" AND 0 = 1");
        } else {
            query.push(format_args!(" AND {prefix}reason_code IN ("));
            push_list(query, reasons);
        }
    }
    if let Some(code) = &filter.dossier_code {
        query
            .push(format_args!(" AND {prefix}dossier_code = "))
            .push_bind(code.clone());
    }
    if let Some(from) = &filter.from_day {
        query
            .push(format_args!(" AND {prefix}reception_day >= "))
            .push_bind(from.clone());
    }
    if let Some(to) = &filter.to_day {
        query
            .push(format_args!(" AND {prefix}reception_day <= "))
            .push_bind(to.clone());
    }
}

/// `a, b, c)`: a bound list closing an `IN (` the caller opened.
fn push_list(query: &mut QueryBuilder<Sqlite>, values: &[String]) {
    let mut list = query.separated(", ");
    for value in values {
        list.push_bind(value.clone());
    }
    list.push_unseparated(")");
}

async fn release_waiting_progress(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    source_ids: &[&str],
) -> Result<(), StoreError> {
    for chunk in source_ids.chunks(ROWS_PER_STATEMENT * 4) {
        // `+state` keeps the planner on the primary key (a few ids) rather than the state index (every
        // waiting entry of the ledger).
        let mut query = QueryBuilder::<Sqlite>::new(
            "UPDATE progress SET state = 'pending' WHERE +state = 'waiting' AND source_id IN (",
        );
        let mut separated = query.separated(", ");
        for id in chunk {
            separated.push_bind(*id);
        }
        query.push(
            ") AND EXISTS (SELECT 1 FROM dossiers \
             WHERE dossiers.source_id = progress.source_id AND dossiers.portal_has = 1)",
        );
        query.build().persistent(false).execute(&mut **tx).await?;
    }
    Ok(())
}
