//! The SQLite ledger: one file, WAL mode so that `report` and `retry` can read and write while the daemon
//! runs, a busy timeout for the moments they meet, and a file readable by its owner only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::SqliteRow;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, SqlitePool};

use super::{
    AttemptRecord, ClaimedDossier, ClaimedProgress, DeliveryResult, DossierFilter, FailureRow,
    HeldRecord, IngestRow, LedgerBucket, LedgerCounts, LoadedEntry, Millis,
    PROGRESS_STATE_ON_CHANGE, ProgressEntryRow, ProgressResult, RENORMALIZE_REQUESTED,
    ReconciliationRecord, Redaction, Requeued, RetentionCandidate, Store, StoreError, UnitCounts,
    add_to_counts, add_to_units, claim_one_entry_per_dossier, decide_answers,
    decide_progress_answers, new_claim_id, plan_ingest, state_of,
};
use crate::decide::{
    self, DeliveryRow, DossierState, IngestAction, LedgerView, ProgressRow, ProgressState,
};

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
        let ids: Vec<&str> = source_ids.iter().map(String::as_str).collect();
        let mut connection = self.reader.acquire().await?;
        load_views(&mut connection, &ids).await
    }

    async fn ingest(
        &self,
        rows: &[IngestRow],
        cursor: Option<(&str, &str)>,
        now: Millis,
    ) -> Result<(), StoreError> {
        // IMMEDIATE: the rows are read and written in one transaction that no other writer (an operator's
        // command in another process) can slip into, so the decisions stand on the rows as they are.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let ids: Vec<&str> = rows.iter().map(|row| row.source_id.as_str()).collect();
        let views = load_views(&mut tx, &ids).await?;
        let planned = plan_ingest(rows, views);
        let set: Vec<(&IngestRow, DossierState)> = planned
            .iter()
            .filter_map(|(row, action)| match action {
                IngestAction::Set(state) => Some((*row, *state)),
                _ => None,
            })
            .collect();
        let keep: Vec<&IngestRow> = planned
            .iter()
            .filter(|(_, action)| *action == IngestAction::KeepState)
            .map(|(row, _)| *row)
            .collect();

        // A new version never touches the flight columns: a call in flight stays in flight, and the new
        // version waits behind it.
        for chunk in set.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO dossiers (source_id, dossier_code, raw_hash, source_updated_at, source_agency_id, \
                 unit, procedure_code, reception_day, payload_hash, state, reason_code, reason_detail, \
                 stamped_ahead, attempts, next_attempt_at, first_seen_at, changed_at) ",
            );
            query.push_values(chunk, |mut values, (row, state)| {
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
                    .push_bind(row.stamped_ahead)
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
                 stamped_ahead = excluded.stamped_ahead, \
                 attempts = 0, next_attempt_at = excluded.next_attempt_at, \
                 last_error = NULL, changed_at = excluded.changed_at",
            );
            query.build().persistent(false).execute(&mut *tx).await?;
        }

        for chunk in keep.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "WITH incoming (source_id, dossier_code, raw_hash, source_updated_at, source_agency_id, unit, \
                 procedure_code, reception_day, stamped_ahead) AS (",
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
                    .push_bind(&row.reception_day)
                    .push_bind(row.stamped_ahead);
            });
            query.push(
                ") UPDATE dossiers SET dossier_code = incoming.dossier_code, \
                 raw_hash = incoming.raw_hash, source_updated_at = incoming.source_updated_at, \
                 source_agency_id = incoming.source_agency_id, unit = incoming.unit, \
                 procedure_code = incoming.procedure_code, reception_day = incoming.reception_day, \
                 stamped_ahead = incoming.stamped_ahead, changed_at = ",
            );
            query.push_bind(now);
            query.push(" FROM incoming WHERE dossiers.source_id = incoming.source_id");
            query.build().persistent(false).execute(&mut *tx).await?;
        }

        let written: Vec<&IngestRow> = planned.iter().map(|(row, _)| *row).collect();
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

        let progress: Vec<(&str, &ProgressEntryRow)> = planned
            .iter()
            .filter(|(_, action)| {
                matches!(
                    action,
                    IngestAction::Set(DossierState::Pending | DossierState::Accepted)
                        | IngestAction::KeepState
                )
            })
            .flat_map(|(row, _)| {
                row.progress
                    .iter()
                    .map(move |entry| (row.source_id.as_str(), entry))
            })
            .collect();
        for chunk in progress.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "INSERT INTO progress (source_id, entry_key, step_at, payload, payload_hash, state, next_attempt_at) ",
            );
            query.push_values(chunk, |mut values, (source_id, entry)| {
                values
                    .push_bind(*source_id)
                    .push_bind(&entry.key)
                    .push_bind(&entry.step_at)
                    .push_bind(&entry.payload)
                    .push_bind(&entry.hash)
                    .push_bind("waiting")
                    .push_bind(now);
            });
            query.push(format_args!(
                " ON CONFLICT (source_id, entry_key) DO UPDATE SET payload = excluded.payload, \
                 payload_hash = excluded.payload_hash, step_at = excluded.step_at, \
                 state = {PROGRESS_STATE_ON_CHANGE}, attempts = 0 \
                 WHERE progress.payload_hash <> excluded.payload_hash"
            ));
            query.build().persistent(false).execute(&mut *tx).await?;
        }

        // Entries of dossiers the portal already has can go (one at a time, in order); the others wait
        // for their dossier.
        let with_progress: Vec<&str> = planned
            .iter()
            .filter(|(row, _)| !row.progress.is_empty())
            .map(|(row, _)| row.source_id.as_str())
            .collect();
        release_next_progress(&mut tx, &with_progress, now).await?;

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
            "SELECT d.source_id, b.raw, d.raw_hash, d.payload_hash, d.accepted_hash, d.reason_code, \
             d.source_updated_at, d.flight_claim IS NOT NULL \
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
                    source_updated_at: row.get(6),
                    state: DossierState::Held,
                    payload_hash: row.get(3),
                    accepted_hash: row.get(4),
                    in_flight: row.get::<bool, _>(7),
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
        // Two index walks (due pending rows in order, lapsed leases), never a sort of the whole backlog: a
        // claim costs the same with ten pending dossiers or a million. A pending row whose earlier call is
        // still in flight (a new version waiting behind it) is passed over until that call is settled.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT source_id FROM (SELECT source_id FROM dossiers \
                 WHERE state = 'pending' AND next_attempt_at <= ?1 \
                 AND (flight_claim IS NULL OR lease_expires_at < ?1) ORDER BY next_attempt_at LIMIT ?2) \
             UNION ALL \
             SELECT source_id FROM (SELECT source_id FROM dossiers \
                 WHERE state = 'in_flight' AND lease_expires_at < ?1 LIMIT ?2) \
             LIMIT ?2",
        )
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let rows = load_delivery_rows(&mut tx, &id_refs).await?;
        let claim = new_claim_id(owner);
        let claimed: Vec<(String, DeliveryRow)> = rows
            .into_iter()
            .filter(|(_, row)| row.claimable(now))
            .map(|(id, row)| (id, decide::on_claim(row, &claim, owner, lease_until)))
            .collect();
        write_delivery_rows(&mut tx, &claimed).await?;
        let mut dossiers = Vec::with_capacity(claimed.len());
        for chunk in claimed.chunks(ROWS_PER_STATEMENT * 4) {
            let mut query = QueryBuilder::<Sqlite>::new(
                "SELECT d.source_id, d.dossier_code, d.unit, b.payload, d.payload_hash, d.portal_has, d.attempts \
                 FROM dossiers d LEFT JOIN dossier_bodies b ON b.source_id = d.source_id WHERE d.source_id IN (",
            );
            let mut separated = query.separated(", ");
            for (id, _) in chunk {
                separated.push_bind(id);
            }
            query.push(")");
            for row in query.build().persistent(false).fetch_all(&mut *tx).await? {
                dossiers.push(ClaimedDossier {
                    claim: claim.clone(),
                    source_id: row.get(0),
                    dossier_code: row.get::<Option<String>, _>(1).unwrap_or_default(),
                    unit: row.get(2),
                    payload: row.get::<Option<String>, _>(3).unwrap_or_default(),
                    payload_hash: row.get::<Option<String>, _>(4).unwrap_or_default(),
                    portal_has: row.get::<i64, _>(5) != 0,
                    attempts: row.get::<i64, _>(6).max(0) as u32,
                });
            }
        }
        tx.commit().await?;
        Ok(dossiers)
    }

    async fn record_deliveries(
        &self,
        results: &[DeliveryResult],
        now: Millis,
    ) -> Result<(), StoreError> {
        if results.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let ids: Vec<&str> = results
            .iter()
            .map(|result| result.source_id.as_str())
            .collect();
        let mut rows: HashMap<String, DeliveryRow> = load_delivery_rows(&mut tx, &ids)
            .await?
            .into_iter()
            .collect();
        let changes = decide_answers(&mut rows, results, now);
        write_delivery_rows(&mut tx, &changes).await?;
        let on_portal: Vec<&str> = changes
            .iter()
            .filter(|(_, row)| row.portal_has)
            .map(|(id, _)| id.as_str())
            .collect();
        release_next_progress(&mut tx, &on_portal, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn renew_claim(
        &self,
        claim: &str,
        source_ids: &[String],
        lease_until: Millis,
    ) -> Result<u64, StoreError> {
        let mut renewed = 0;
        for table in ["dossiers", "progress"] {
            for chunk in source_ids.chunks(ROWS_PER_STATEMENT * 4) {
                let mut query =
                    QueryBuilder::<Sqlite>::new(format!("UPDATE {table} SET lease_expires_at = "));
                query.push_bind(lease_until);
                query.push(" WHERE flight_claim = ").push_bind(claim);
                query.push(" AND source_id IN (");
                let mut separated = query.separated(", ");
                for id in chunk {
                    separated.push_bind(id);
                }
                query.push(")");
                renewed += query
                    .build()
                    .persistent(false)
                    .execute(&self.writer)
                    .await?
                    .rows_affected();
            }
        }
        Ok(renewed)
    }

    async fn claim_progress(
        &self,
        owner: &str,
        limit: usize,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<ClaimedProgress>, StoreError> {
        // Entries are `pending` only when their dossier is on the portal and they are the next of its
        // entries; the rest are `waiting`. So this walks only what can be sent.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let keys: Vec<(String, String)> = sqlx::query(
            "SELECT source_id, entry_key FROM (SELECT source_id, entry_key FROM progress \
                 WHERE state = 'pending' AND next_attempt_at <= ?1 ORDER BY next_attempt_at LIMIT ?2) \
             UNION ALL \
             SELECT source_id, entry_key FROM (SELECT source_id, entry_key FROM progress \
                 WHERE state = 'in_flight' AND lease_expires_at < ?1 LIMIT ?2) \
             LIMIT ?2",
        )
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
        let entries = load_progress_rows(&mut tx, &keys, now).await?;
        let claim = new_claim_id(owner);
        let claimed = claim_one_entry_per_dossier(entries, &claim, owner, now, lease_until);
        write_progress_rows(&mut tx, &claimed).await?;
        tx.commit().await?;
        Ok(claimed
            .into_iter()
            .map(|(key, row, payload)| ClaimedProgress {
                claim: claim.clone(),
                source_id: key.0,
                entry_key: key.1,
                payload,
                payload_hash: row.payload_hash,
                attempts: row.attempts,
            })
            .collect())
    }

    async fn record_progress(
        &self,
        results: &[ProgressResult],
        now: Millis,
    ) -> Result<(), StoreError> {
        if results.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let keys: Vec<(String, String)> = results
            .iter()
            .map(|result| (result.source_id.clone(), result.entry_key.clone()))
            .collect();
        let entries = load_progress_rows(&mut tx, &keys, now).await?;
        let changes = decide_progress_answers(entries, results, now);
        write_progress_rows(&mut tx, &changes).await?;
        let dossiers: Vec<&str> = results
            .iter()
            .map(|result| result.source_id.as_str())
            .collect();
        release_next_progress(&mut tx, &dossiers, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_claims(&self, owner: &str, now: Millis) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT source_id FROM dossiers WHERE flight_claim IS NOT NULL AND lease_owner = ?1",
        )
        .bind(owner)
        .fetch_all(&mut *tx)
        .await?;
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let released: Vec<(String, DeliveryRow)> = load_delivery_rows(&mut tx, &id_refs)
            .await?
            .into_iter()
            .map(|(id, row)| (id, decide::on_release(row, now)))
            .collect();
        write_delivery_rows(&mut tx, &released).await?;
        let keys: Vec<(String, String)> = sqlx::query(
            "SELECT source_id, entry_key FROM progress WHERE flight_claim IS NOT NULL AND lease_owner = ?1",
        )
        .bind(owner)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
        let entries: Vec<((String, String), ProgressRow, String)> =
            load_progress_rows(&mut tx, &keys, now)
                .await?
                .into_iter()
                .map(|entry| {
                    let row = decide::on_progress_release(entry.row, now);
                    (entry.key, row, entry.payload)
                })
                .collect();
        write_progress_rows(&mut tx, &entries).await?;
        tx.commit().await?;
        Ok((released.len() + entries.len()) as u64)
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
             MIN(CASE WHEN state IN ('accepted', 'skipped') THEN NULL ELSE changed_at END), \
             SUM(stamped_ahead) FROM dossiers WHERE (reception_day BETWEEN ",
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
                stamped_ahead: row.get(7),
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

    async fn content_candidates(
        &self,
        accepted_since: Millis,
        checked_before: Millis,
        unit: Option<&str>,
        limit: usize,
    ) -> Result<Vec<super::ContentCandidate>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.source_id, d.dossier_code, d.unit, d.reception_day, b.payload, d.payload_hash \
             FROM dossiers d JOIN dossier_bodies b ON b.source_id = d.source_id \
             WHERE d.state = 'accepted' AND d.accepted_at >= ?1 \
             AND (d.content_checked_at IS NULL OR d.content_checked_at < ?2) \
             AND (?3 IS NULL OR d.unit = ?3) \
             AND d.dossier_code IS NOT NULL AND d.payload_hash IS NOT NULL \
             AND b.payload IS NOT NULL AND b.redacted_at IS NULL \
             ORDER BY d.content_checked_at IS NOT NULL, d.content_checked_at, d.accepted_at DESC, d.source_id \
             LIMIT ?4",
        )
        .bind(accepted_since)
        .bind(checked_before)
        .bind(unit)
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| content_candidate(&row))
            .collect())
    }

    async fn content_sample(
        &self,
        unit: &str,
        accepted_before: Millis,
        limit: usize,
    ) -> Result<Vec<super::ContentCandidate>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.source_id, d.dossier_code, d.unit, d.reception_day, b.payload, d.payload_hash \
             FROM dossiers d JOIN dossier_bodies b ON b.source_id = d.source_id \
             WHERE d.unit = ?1 AND d.state = 'accepted' AND d.accepted_at < ?2 \
             AND d.dossier_code IS NOT NULL AND d.payload_hash IS NOT NULL \
             AND b.payload IS NOT NULL AND b.redacted_at IS NULL \
             ORDER BY random() LIMIT ?3",
        )
        .bind(unit)
        .bind(accepted_before)
        .bind(limit as i64)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| content_candidate(&row))
            .collect())
    }

    async fn mark_content_checked(
        &self,
        source_ids: &[String],
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin().await?;
        for chunk in source_ids.chunks(ROWS_PER_STATEMENT) {
            let mut query =
                QueryBuilder::<Sqlite>::new("UPDATE dossiers SET content_checked_at = ");
            query.push_bind(now).push(" WHERE source_id IN (");
            let mut ids = query.separated(", ");
            for id in chunk {
                ids.push_bind(id);
            }
            query.push(")");
            query.build().persistent(false).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn requeue_content_differs(
        &self,
        differing: &[(String, String)],
        now: Millis,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.writer.begin().await?;
        let mut queued = Vec::new();
        for (source_id, payload_hash) in differing {
            let row = sqlx::query(
                "UPDATE dossiers SET state = 'pending', accepted_hash = NULL, attempts = 0, \
                 next_attempt_at = ?1, last_error = ?2, content_checked_at = ?1 \
                 WHERE source_id = ?3 AND state = 'accepted' AND payload_hash = ?4 RETURNING source_id",
            )
            .bind(now)
            .bind(super::CONTENT_DIFFERS)
            .bind(source_id)
            .bind(payload_hash)
            .fetch_optional(&mut *tx)
            .await?;
            queued.extend(row.map(|row| row.get::<String, _>(0)));
        }
        tx.commit().await?;
        Ok(queued)
    }
}

/// A content-check candidate from its row (source_id, dossier_code, unit, reception_day, payload,
/// payload_hash).
fn content_candidate(row: &sqlx::sqlite::SqliteRow) -> super::ContentCandidate {
    super::ContentCandidate {
        source_id: row.get(0),
        dossier_code: row.get(1),
        unit: row.get(2),
        reception_day: row.get(3),
        payload: row.get(4),
        payload_hash: row.get(5),
    }
}

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

/// The delivery columns of `dossiers`, in the order [`delivery_row`] reads them after `source_id`.
const DELIVERY_COLUMNS: &str = "state, payload_hash, reason_code, reason_detail, portal_has, accepted_hash, \
     accepted_at, attempts, next_attempt_at, last_error, flight_claim, lease_owner, flight_hash, \
     lease_expires_at, recheck";

fn delivery_row(row: &SqliteRow) -> DeliveryRow {
    let flight = row
        .get::<Option<String>, _>(11)
        .map(|claim| decide::Flight {
            claim,
            owner: row.get::<Option<String>, _>(12).unwrap_or_default(),
            hash: row.get::<Option<String>, _>(13).unwrap_or_default(),
            lease_expires_at: row.get::<Option<i64>, _>(14).unwrap_or(0),
        });
    DeliveryRow {
        state: state_of(row.get::<&str, _>(1)),
        payload_hash: row.get(2),
        reason_code: row.get(3),
        reason_detail: row.get(4),
        portal_has: row.get::<i64, _>(5) != 0,
        accepted_hash: row.get(6),
        accepted_at: row.get(7),
        attempts: row.get::<i64, _>(8).max(0) as u32,
        next_attempt_at: row.get(9),
        last_error: row.get(10),
        flight,
        recheck: row.get::<i64, _>(15) != 0,
    }
}

/// What the ledger knows of these dossiers, for the ingest decisions.
async fn load_views(
    connection: &mut SqliteConnection,
    ids: &[&str],
) -> Result<HashMap<String, LedgerView>, StoreError> {
    let mut views = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_STATEMENT * 4) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT source_id, raw_hash, state, payload_hash, accepted_hash, source_updated_at, \
             flight_claim IS NOT NULL FROM dossiers WHERE source_id IN (",
        );
        let mut separated = query.separated(", ");
        for id in chunk {
            separated.push_bind(*id);
        }
        query.push(")");
        for row in query
            .build()
            .persistent(false)
            .fetch_all(&mut *connection)
            .await?
        {
            views.insert(
                row.get::<String, _>(0),
                LedgerView {
                    raw_hash: row.get(1),
                    state: state_of(row.get::<&str, _>(2)),
                    payload_hash: row.get(3),
                    accepted_hash: row.get(4),
                    source_updated_at: row.get(5),
                    in_flight: row.get::<bool, _>(6),
                },
            );
        }
    }
    Ok(views)
}

async fn load_delivery_rows(
    connection: &mut SqliteConnection,
    ids: &[&str],
) -> Result<Vec<(String, DeliveryRow)>, StoreError> {
    let mut rows = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_STATEMENT * 4) {
        let mut query = QueryBuilder::<Sqlite>::new(format!(
            "SELECT source_id, {DELIVERY_COLUMNS} FROM dossiers WHERE source_id IN ("
        ));
        let mut separated = query.separated(", ");
        for id in chunk {
            separated.push_bind(*id);
        }
        query.push(")");
        for row in query
            .build()
            .persistent(false)
            .fetch_all(&mut *connection)
            .await?
        {
            rows.push((row.get(0), delivery_row(&row)));
        }
    }
    Ok(rows)
}

/// Writes the delivery columns the decisions returned (never the version columns, which ingest owns).
async fn write_delivery_rows(
    connection: &mut SqliteConnection,
    rows: &[(String, DeliveryRow)],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "WITH v (source_id, state, reason_code, reason_detail, portal_has, accepted_hash, accepted_at, \
             attempts, next_attempt_at, last_error, flight_claim, lease_owner, flight_hash, \
             lease_expires_at, recheck) AS (",
        );
        query.push_values(chunk, |mut values, (id, row)| {
            let flight = row.flight.as_ref();
            values
                .push_bind(id)
                .push_bind(row.state.as_str())
                .push_bind(&row.reason_code)
                .push_bind(&row.reason_detail)
                .push_bind(i64::from(row.portal_has))
                .push_bind(&row.accepted_hash)
                .push_bind(row.accepted_at)
                .push_bind(i64::from(row.attempts))
                .push_bind(row.next_attempt_at)
                .push_bind(&row.last_error)
                .push_bind(flight.map(|flight| flight.claim.clone()))
                .push_bind(flight.map(|flight| flight.owner.clone()))
                .push_bind(flight.map(|flight| flight.hash.clone()))
                .push_bind(flight.map(|flight| flight.lease_expires_at))
                .push_bind(i64::from(row.recheck));
        });
        query.push(
            ") UPDATE dossiers SET state = v.state, reason_code = v.reason_code, \
             reason_detail = v.reason_detail, portal_has = v.portal_has, accepted_hash = v.accepted_hash, \
             accepted_at = v.accepted_at, attempts = v.attempts, next_attempt_at = v.next_attempt_at, \
             last_error = v.last_error, flight_claim = v.flight_claim, lease_owner = v.lease_owner, \
             flight_hash = v.flight_hash, lease_expires_at = v.lease_expires_at, recheck = v.recheck \
             FROM v WHERE dossiers.source_id = v.source_id",
        );
        query
            .build()
            .persistent(false)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// Progress entries by (source id, entry key), each with its payload and whether another entry of its
/// dossier has a call in flight now; in each dossier's order.
async fn load_progress_rows(
    connection: &mut SqliteConnection,
    keys: &[(String, String)],
    now: Millis,
) -> Result<Vec<LoadedEntry>, StoreError> {
    let mut entries = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new("WITH k (source_id, entry_key) AS (");
        query.push_values(chunk, |mut values, (id, key)| {
            values.push_bind(id).push_bind(key);
        });
        query.push(
            ") SELECT p.source_id, p.entry_key, p.state, p.payload_hash, p.sent_hash, p.attempts, \
             p.next_attempt_at, p.last_error, p.flight_claim, p.lease_owner, p.flight_hash, \
             p.lease_expires_at, p.payload, EXISTS (SELECT 1 FROM progress q \
                 WHERE q.source_id = p.source_id AND q.entry_key <> p.entry_key \
                 AND q.flight_claim IS NOT NULL AND q.lease_expires_at >= ",
        );
        query.push_bind(now);
        query.push(
            ") FROM progress p JOIN k ON k.source_id = p.source_id AND k.entry_key = p.entry_key \
             ORDER BY p.source_id, p.step_at, p.entry_key",
        );
        for row in query
            .build()
            .persistent(false)
            .fetch_all(&mut *connection)
            .await?
        {
            let flight = row.get::<Option<String>, _>(8).map(|claim| decide::Flight {
                claim,
                owner: row.get::<Option<String>, _>(9).unwrap_or_default(),
                hash: row.get::<Option<String>, _>(10).unwrap_or_default(),
                lease_expires_at: row.get::<Option<i64>, _>(11).unwrap_or(0),
            });
            entries.push(LoadedEntry {
                key: (row.get(0), row.get(1)),
                row: ProgressRow {
                    state: ProgressState::parse(row.get::<&str, _>(2)),
                    payload_hash: row.get(3),
                    sent_hash: row.get(4),
                    attempts: row.get::<i64, _>(5).max(0) as u32,
                    next_attempt_at: row.get(6),
                    last_error: row.get(7),
                    flight,
                },
                payload: row.get(12),
                sibling_in_flight: row.get::<bool, _>(13),
            });
        }
    }
    Ok(entries)
}

async fn write_progress_rows(
    connection: &mut SqliteConnection,
    rows: &[((String, String), ProgressRow, String)],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut query = QueryBuilder::<Sqlite>::new(
            "WITH v (source_id, entry_key, state, sent_hash, attempts, next_attempt_at, last_error, \
             flight_claim, lease_owner, flight_hash, lease_expires_at) AS (",
        );
        query.push_values(chunk, |mut values, ((id, key), row, _)| {
            let flight = row.flight.as_ref();
            values
                .push_bind(id)
                .push_bind(key)
                .push_bind(row.state.as_str())
                .push_bind(&row.sent_hash)
                .push_bind(i64::from(row.attempts))
                .push_bind(row.next_attempt_at)
                .push_bind(&row.last_error)
                .push_bind(flight.map(|flight| flight.claim.clone()))
                .push_bind(flight.map(|flight| flight.owner.clone()))
                .push_bind(flight.map(|flight| flight.hash.clone()))
                .push_bind(flight.map(|flight| flight.lease_expires_at));
        });
        query.push(
            ") UPDATE progress SET state = v.state, sent_hash = v.sent_hash, attempts = v.attempts, \
             next_attempt_at = v.next_attempt_at, last_error = v.last_error, \
             flight_claim = v.flight_claim, lease_owner = v.lease_owner, flight_hash = v.flight_hash, \
             lease_expires_at = v.lease_expires_at \
             FROM v WHERE progress.source_id = v.source_id AND progress.entry_key = v.entry_key",
        );
        query
            .build()
            .persistent(false)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// Makes the next entry of each of these dossiers due, when the portal has the dossier and none of its
/// entries is due or in flight: a dossier's entries go one call at a time, in their order (portal-api.md
/// 2.2: an answer names only the `MaHoSo`).
async fn release_next_progress(
    connection: &mut SqliteConnection,
    source_ids: &[&str],
    now: Millis,
) -> Result<(), StoreError> {
    for chunk in source_ids.chunks(ROWS_PER_STATEMENT * 4) {
        // `+state` keeps the planner on the primary key (a few ids) rather than the state index.
        let mut query = QueryBuilder::<Sqlite>::new(
            "UPDATE progress SET state = 'pending' WHERE rowid IN (SELECT \
             (SELECT p.rowid FROM progress p WHERE p.source_id = d.source_id AND +p.state = 'waiting' \
                  ORDER BY p.step_at, p.entry_key LIMIT 1) \
             FROM dossiers d WHERE d.portal_has = 1 AND d.source_id IN (",
        );
        let mut separated = query.separated(", ");
        for id in chunk {
            separated.push_bind(*id);
        }
        query.push(
            ") AND NOT EXISTS (SELECT 1 FROM progress q WHERE q.source_id = d.source_id \
                 AND (q.state IN ('pending', 'in_flight') OR (q.flight_claim IS NOT NULL AND q.lease_expires_at >= ",
        );
        query.push_bind(now);
        query.push(")))) ");
        query
            .build()
            .persistent(false)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}
