//! The PostgreSQL ledger, for production when several instances share the work. The same trait, the same
//! states and the same guards as the SQLite ledger (`sqlite.rs`); what differs is how concurrent writers
//! meet. Claims lock the rows they take with `FOR UPDATE SKIP LOCKED`, so that two instances claiming at
//! once take disjoint sets without waiting for each other, and every multi-row write sends its rows as
//! arrays (`UNNEST`), one statement per table whatever the number of rows.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};

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

pub struct PostgresStore {
    pool: PgPool,
}

impl PostgresStore {
    /// Connects to the database of `url` (`postgres://user@host/db`), with `password` when given rather
    /// than in the URL, and applies the embedded migrations.
    pub async fn open(
        url: &str,
        password: Option<&str>,
        max_connections: u32,
    ) -> Result<PostgresStore, StoreError> {
        PostgresStore::connect(connect_options(url, password)?, max_connections).await
    }

    /// Connects for reading only (the operator's commands beside a running daemon): no migration runs,
    /// and every transaction is read-only, so a write through this store fails.
    pub async fn open_read_only(
        url: &str,
        password: Option<&str>,
    ) -> Result<PostgresStore, StoreError> {
        let options =
            connect_options(url, password)?.options([("default_transaction_read_only", "on")]);
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        Ok(PostgresStore { pool })
    }

    /// Connects with these options (tests set a schema through them) and applies the migrations. Several
    /// instances may start at once: the migrator serializes them with an advisory lock.
    pub async fn connect(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<PostgresStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations/postgres").run(&pool).await?;
        Ok(PostgresStore { pool })
    }
}

/// The options of `url`, with `password` when given rather than in the URL.
fn connect_options(url: &str, password: Option<&str>) -> Result<PgConnectOptions, StoreError> {
    let mut options = PgConnectOptions::from_str(url)?.application_name("tthc-sync");
    if let Some(password) = password {
        options = options.password(password);
    }
    Ok(options)
}

/// Keeps the last of several items with the same key, in their first position. PostgreSQL refuses an
/// `INSERT ... ON CONFLICT DO UPDATE` that touches one row twice, where SQLite applies the rows in order;
/// keeping the last one gives the same result (two malformed records with the same content share an id).
fn last_wins<'a, T, K: std::hash::Hash + Eq>(
    items: impl IntoIterator<Item = &'a T>,
    key: impl Fn(&'a T) -> K,
) -> Vec<&'a T> {
    let mut position: HashMap<K, usize> = HashMap::new();
    let mut kept: Vec<&T> = Vec::new();
    for item in items {
        match position.entry(key(item)) {
            std::collections::hash_map::Entry::Occupied(entry) => kept[*entry.get()] = item,
            std::collections::hash_map::Entry::Vacant(entry) => {
                entry.insert(kept.len());
                kept.push(item);
            }
        }
    }
    kept
}

/// Narrows a query (which already has a WHERE clause) by an operator's filter; `prefix` is the
/// `dossiers` table's alias with its dot, or empty. As in the SQLite ledger.
fn push_filter(query: &mut QueryBuilder<Postgres>, filter: &DossierFilter, prefix: &str) {
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
fn push_list(query: &mut QueryBuilder<Postgres>, values: &[String]) {
    let mut list = query.separated(", ");
    for value in values {
        list.push_bind(value.clone());
    }
    list.push_unseparated(")");
}

/// One column of the rows, bound as an array parameter and read back by `UNNEST`.
fn column<'a, R, T>(rows: &[&'a R], get: impl Fn(&'a R) -> T) -> Vec<T> {
    rows.iter().map(|row| get(row)).collect()
}

#[async_trait]
impl Store for PostgresStore {
    async fn ledger_views(
        &self,
        source_ids: &[String],
    ) -> Result<HashMap<String, LedgerView>, StoreError> {
        let ids: Vec<&str> = source_ids.iter().map(String::as_str).collect();
        let mut connection = self.pool.acquire().await?;
        load_views(&mut connection, &ids, false).await
    }

    async fn ingest(
        &self,
        rows: &[IngestRow],
        cursor: Option<(&str, &str)>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // Writers of source records (the poll leader, an operator's resync or reconcile) take turns, and
        // the rows are locked as read: the decisions stand on the rows as they are, and a dossier new to
        // the ledger cannot be inserted by two of them at once.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('tthc-sync ingest'))")
            .execute(&mut *tx)
            .await?;
        let ids: Vec<&str> = rows.iter().map(|row| row.source_id.as_str()).collect();
        let views = load_views(&mut tx, &ids, true).await?;
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

        if !set.is_empty() {
            // A new version never touches the flight columns: a call in flight stays in flight, and the
            // new version waits behind it.
            sqlx::query(
                "INSERT INTO dossiers (source_id, dossier_code, raw_hash, source_updated_at, source_agency_id, \
                 unit, procedure_code, reception_day, payload_hash, state, reason_code, reason_detail, \
                 stamped_ahead, attempts, next_attempt_at, first_seen_at, changed_at) \
                 SELECT incoming.*, 0, $13, $13, $13 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], \
                     $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
                     $12::text[], $14::bool[]) AS incoming \
                 ON CONFLICT (source_id) DO UPDATE SET dossier_code = excluded.dossier_code, \
                 raw_hash = excluded.raw_hash, source_updated_at = excluded.source_updated_at, \
                 source_agency_id = excluded.source_agency_id, unit = excluded.unit, \
                 procedure_code = excluded.procedure_code, reception_day = excluded.reception_day, \
                 payload_hash = excluded.payload_hash, state = excluded.state, \
                 reason_code = excluded.reason_code, reason_detail = excluded.reason_detail, \
                 stamped_ahead = excluded.stamped_ahead, \
                 attempts = 0, next_attempt_at = excluded.next_attempt_at, \
                 last_error = NULL, changed_at = excluded.changed_at",
            )
            .bind(set.iter().map(|(row, _)| row.source_id.as_str()).collect::<Vec<_>>())
            .bind(set.iter().map(|(row, _)| row.dossier_code.as_deref()).collect::<Vec<_>>())
            .bind(set.iter().map(|(row, _)| row.raw_hash.as_str()).collect::<Vec<_>>())
            .bind(set.iter().map(|(row, _)| row.source_updated_at).collect::<Vec<_>>())
            .bind(set.iter().map(|(row, _)| row.source_agency_id.as_deref()).collect::<Vec<_>>())
            .bind(set.iter().map(|(row, _)| row.unit.as_deref()).collect::<Vec<_>>())
            .bind(set.iter().map(|(row, _)| row.procedure_code.as_deref()).collect::<Vec<_>>())
            .bind(set.iter().map(|(row, _)| row.reception_day.as_deref()).collect::<Vec<_>>())
            .bind(set.iter().map(|(row, _)| row.payload_hash.as_deref()).collect::<Vec<_>>())
            .bind(set.iter().map(|(_, state)| state.as_str()).collect::<Vec<_>>())
            .bind(set.iter().map(|(row, _)| row.reason_code.as_deref()).collect::<Vec<_>>())
            .bind(set.iter().map(|(row, _)| row.reason_detail.as_deref()).collect::<Vec<_>>())
            .bind(now)
            .bind(set.iter().map(|(row, _)| row.stamped_ahead).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        }

        if !keep.is_empty() {
            sqlx::query(
                "UPDATE dossiers SET dossier_code = incoming.dossier_code, \
                 raw_hash = incoming.raw_hash, source_updated_at = incoming.source_updated_at, \
                 source_agency_id = incoming.source_agency_id, unit = incoming.unit, \
                 procedure_code = incoming.procedure_code, reception_day = incoming.reception_day, \
                 stamped_ahead = incoming.stamped_ahead, changed_at = $9 \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::text[], \
                     $7::text[], $8::text[], $10::bool[]) \
                     AS incoming (source_id, dossier_code, raw_hash, source_updated_at, source_agency_id, \
                                  unit, procedure_code, reception_day, stamped_ahead) \
                 WHERE dossiers.source_id = incoming.source_id",
            )
            .bind(column(&keep, |row| row.source_id.as_str()))
            .bind(column(&keep, |row| row.dossier_code.as_deref()))
            .bind(column(&keep, |row| row.raw_hash.as_str()))
            .bind(column(&keep, |row| row.source_updated_at))
            .bind(column(&keep, |row| row.source_agency_id.as_deref()))
            .bind(column(&keep, |row| row.unit.as_deref()))
            .bind(column(&keep, |row| row.procedure_code.as_deref()))
            .bind(column(&keep, |row| row.reception_day.as_deref()))
            .bind(now)
            .bind(column(&keep, |row| row.stamped_ahead))
            .execute(&mut *tx)
            .await?;
        }

        let written: Vec<&IngestRow> = planned.iter().map(|(row, _)| *row).collect();
        if !written.is_empty() {
            sqlx::query(
                "INSERT INTO dossier_bodies (source_id, raw, payload, findings) \
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[]) \
                 ON CONFLICT (source_id) DO UPDATE SET raw = excluded.raw, payload = excluded.payload, \
                 findings = excluded.findings, redacted_at = NULL",
            )
            .bind(column(&written, |row| row.source_id.as_str()))
            .bind(column(&written, |row| row.raw.as_str()))
            .bind(column(&written, |row| row.payload.as_deref()))
            .bind(column(&written, |row| row.findings.as_str()))
            .execute(&mut *tx)
            .await?;
        }

        let entries: Vec<(&str, &ProgressEntryRow)> = planned
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
        let progress = last_wins(&entries, |entry| (entry.0, entry.1.key.as_str()));
        if !progress.is_empty() {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO progress (source_id, entry_key, step_at, payload, payload_hash, state, next_attempt_at) \
                 SELECT entry.*, 'waiting', $6 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
                     $5::text[]) AS entry \
                 ON CONFLICT (source_id, entry_key) DO UPDATE SET payload = excluded.payload, \
                 payload_hash = excluded.payload_hash, step_at = excluded.step_at, \
                 state = {PROGRESS_STATE_ON_CHANGE}, attempts = 0 \
                 WHERE progress.payload_hash <> excluded.payload_hash"
            )))
            .bind(progress.iter().map(|entry| entry.0).collect::<Vec<_>>())
            .bind(progress.iter().map(|entry| entry.1.key.as_str()).collect::<Vec<_>>())
            .bind(progress.iter().map(|entry| entry.1.step_at.as_str()).collect::<Vec<_>>())
            .bind(progress.iter().map(|entry| entry.1.payload.as_str()).collect::<Vec<_>>())
            .bind(progress.iter().map(|entry| entry.1.hash.as_str()).collect::<Vec<_>>())
            .bind(now)
            .execute(&mut *tx)
            .await?;
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
                "INSERT INTO cursors (name, value, updated_at) VALUES ($1, $2, $3) \
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
            sqlx::query_scalar("SELECT value FROM cursors WHERE name = $1")
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    async fn held_records(&self, after: &str, limit: usize) -> Result<Vec<HeldRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT d.source_id, b.raw, d.raw_hash, d.payload_hash, d.accepted_hash, d.reason_code, \
             d.source_updated_at, d.flight_claim IS NOT NULL \
             FROM dossiers d JOIN dossier_bodies b ON b.source_id = d.source_id \
             WHERE d.state = 'held' AND d.source_id > $1 ORDER BY d.source_id LIMIT $2",
        )
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
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
                    in_flight: row.get(7),
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
        // The due rows are locked as they are picked, and rows another instance is claiming right now are
        // skipped rather than waited for (or, worse, claimed twice). Lapsed leases are only looked at when
        // the pending rows do not fill the claim. A pending row whose earlier call is still in flight (a new
        // version waiting behind it) is passed over until that call is settled.
        let mut tx = self.pool.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "WITH pending AS (SELECT source_id FROM dossiers \
                 WHERE state = 'pending' AND next_attempt_at <= $1 \
                 AND (flight_claim IS NULL OR lease_expires_at < $1) ORDER BY next_attempt_at LIMIT $2 \
                 FOR UPDATE SKIP LOCKED), \
             expired AS (SELECT source_id FROM dossiers \
                 WHERE state = 'in_flight' AND lease_expires_at < $1 LIMIT $2 \
                 FOR UPDATE SKIP LOCKED) \
             SELECT source_id FROM pending UNION ALL SELECT source_id FROM expired LIMIT $2",
        )
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?;
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let claim = new_claim_id(owner);
        let claimed: Vec<(String, DeliveryRow)> = load_delivery_rows(&mut tx, &id_refs, false)
            .await?
            .into_iter()
            .filter(|(_, row)| row.claimable(now))
            .map(|(id, row)| (id, decide::on_claim(row, &claim, owner, lease_until)))
            .collect();
        write_delivery_rows(&mut tx, &claimed).await?;
        let claimed_ids: Vec<&str> = claimed.iter().map(|(id, _)| id.as_str()).collect();
        let rows = sqlx::query(
            "SELECT d.source_id, d.dossier_code, d.unit, b.payload, d.payload_hash, d.portal_has, d.attempts \
             FROM dossiers d LEFT JOIN dossier_bodies b ON b.source_id = d.source_id \
             WHERE d.source_id = ANY($1)",
        )
        .bind(&claimed_ids)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(rows
            .into_iter()
            .map(|row| ClaimedDossier {
                claim: claim.clone(),
                source_id: row.get(0),
                dossier_code: row.get::<Option<String>, _>(1).unwrap_or_default(),
                unit: row.get(2),
                payload: row.get::<Option<String>, _>(3).unwrap_or_default(),
                payload_hash: row.get::<Option<String>, _>(4).unwrap_or_default(),
                portal_has: row.get(5),
                attempts: row.get::<i32, _>(6).max(0) as u32,
            })
            .collect())
    }

    async fn record_deliveries(
        &self,
        results: &[DeliveryResult],
        now: Millis,
    ) -> Result<(), StoreError> {
        if results.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        let ids: Vec<&str> = results
            .iter()
            .map(|result| result.source_id.as_str())
            .collect();
        let mut rows: HashMap<String, DeliveryRow> = load_delivery_rows(&mut tx, &ids, true)
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
            renewed += sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET lease_expires_at = $1 WHERE flight_claim = $2 AND source_id = ANY($3)"
            )))
            .bind(lease_until)
            .bind(claim)
            .bind(source_ids)
            .execute(&self.pool)
            .await?
            .rows_affected();
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
        // As `claim_dossiers`: rows locked as picked, rows being claimed elsewhere skipped. Entries are
        // `pending` only when their dossier is on the portal and they are the next of its entries.
        let mut tx = self.pool.begin().await?;
        let keys: Vec<(String, String)> = sqlx::query(
            "WITH pending AS (SELECT source_id, entry_key FROM progress \
                 WHERE state = 'pending' AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2 \
                 FOR UPDATE SKIP LOCKED), \
             expired AS (SELECT source_id, entry_key FROM progress \
                 WHERE state = 'in_flight' AND lease_expires_at < $1 LIMIT $2 \
                 FOR UPDATE SKIP LOCKED) \
             SELECT * FROM pending UNION ALL SELECT * FROM expired LIMIT $2",
        )
        .bind(now)
        .bind(limit as i64)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
        let entries = load_progress_rows(&mut tx, &keys, now, false).await?;
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
        let mut tx = self.pool.begin().await?;
        let keys: Vec<(String, String)> = results
            .iter()
            .map(|result| (result.source_id.clone(), result.entry_key.clone()))
            .collect();
        let entries = load_progress_rows(&mut tx, &keys, now, true).await?;
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
        let mut tx = self.pool.begin().await?;
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT source_id FROM dossiers WHERE flight_claim IS NOT NULL AND lease_owner = $1 \
             ORDER BY source_id FOR UPDATE",
        )
        .bind(owner)
        .fetch_all(&mut *tx)
        .await?;
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let released: Vec<(String, DeliveryRow)> = load_delivery_rows(&mut tx, &id_refs, false)
            .await?
            .into_iter()
            .map(|(id, row)| (id, decide::on_release(row, now)))
            .collect();
        write_delivery_rows(&mut tx, &released).await?;
        let keys: Vec<(String, String)> = sqlx::query(
            "SELECT source_id, entry_key FROM progress WHERE flight_claim IS NOT NULL AND lease_owner = $1 \
             ORDER BY source_id, entry_key FOR UPDATE",
        )
        .bind(owner)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
        let entries: Vec<((String, String), ProgressRow, String)> =
            load_progress_rows(&mut tx, &keys, now, false)
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
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(attempt.at)
        .bind(&attempt.owner)
        .bind(&attempt.service)
        .bind(attempt.items)
        .bind(attempt.outcome)
        .bind(&attempt.detail)
        .bind(attempt.duration_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn counts(&self) -> Result<LedgerCounts, StoreError> {
        let mut counts = LedgerCounts::default();
        let rows = sqlx::query(
            "SELECT state, reason_code, COUNT(*) FROM dossiers GROUP BY state, reason_code",
        )
        .fetch_all(&self.pool)
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
        .fetch_one(&self.pool)
        .await?;
        Ok(counts)
    }

    async fn unit_counts(&self) -> Result<Vec<UnitCounts>, StoreError> {
        let rows = sqlx::query(
            "SELECT unit, source_agency_id, state, reason_code, COUNT(*) FROM dossiers \
             GROUP BY unit, source_agency_id, state, reason_code ORDER BY unit, source_agency_id",
        )
        .fetch_all(&self.pool)
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
        let mut query = QueryBuilder::<Postgres>::new(
            "SELECT unit, source_agency_id, reception_day, state, reason_code, COUNT(*), \
             MIN(CASE WHEN state IN ('accepted', 'skipped') THEN NULL ELSE changed_at END), \
             COUNT(*) FILTER (WHERE stamped_ahead) FROM dossiers WHERE (reception_day BETWEEN ",
        );
        query.push_bind(from).push(" AND ").push_bind(to);
        query.push(" OR reception_day IS NULL)");
        if let Some(unit) = unit {
            query.push(" AND unit = ").push_bind(unit);
        }
        query.push(" GROUP BY unit, source_agency_id, reception_day, state, reason_code");
        let rows = query.build().fetch_all(&self.pool).await?;
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
            "SELECT source_id FROM dossiers WHERE source_agency_id = $1 AND reception_day = $2",
        )
        .bind(source_agency_id)
        .bind(day)
        .fetch_all(&self.pool)
        .await?)
    }

    async fn failures(
        &self,
        filter: &DossierFilter,
        limit: usize,
    ) -> Result<Vec<FailureRow>, StoreError> {
        let mut query = QueryBuilder::<Postgres>::new(
            "SELECT d.source_id, d.dossier_code, d.unit, d.source_agency_id, d.reception_day, d.state, \
             d.reason_code, d.reason_detail, b.findings, d.attempts, d.changed_at \
             FROM dossiers d JOIN dossier_bodies b ON b.source_id = d.source_id \
             WHERE d.state IN ('held', 'refused')",
        );
        push_filter(&mut query, filter, "d.");
        query
            .push(" ORDER BY d.changed_at, d.source_id LIMIT ")
            .push_bind(limit as i64);
        let rows = query.build().fetch_all(&self.pool).await?;
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
                attempts: row.get::<i32, _>(9).into(),
                changed_at: row.get(10),
            })
            .collect())
    }

    async fn requeue(&self, filter: &DossierFilter, now: Millis) -> Result<Requeued, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut refused = QueryBuilder::<Postgres>::new(
            "UPDATE dossiers SET state = 'pending', attempts = 0, last_error = NULL, next_attempt_at = ",
        );
        refused.push_bind(now).push(" WHERE state = 'refused'");
        push_filter(&mut refused, filter, "");
        let refused = refused.build().execute(&mut *tx).await?;

        let mut pending = QueryBuilder::<Postgres>::new("UPDATE dossiers SET next_attempt_at = ");
        pending
            .push_bind(now)
            .push(" WHERE state = 'pending' AND next_attempt_at > ")
            .push_bind(now);
        push_filter(&mut pending, filter, "");
        let pending = pending.build().execute(&mut *tx).await?;

        let mut held =
            QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM dossiers WHERE state = 'held'");
        push_filter(&mut held, filter, "");
        let held: i64 = held.build_query_scalar().fetch_one(&mut *tx).await?;
        if held > 0 {
            sqlx::query(
                "INSERT INTO cursors (name, value, updated_at) VALUES ($1, $2, $3) \
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

    async fn accepted_sample(
        &self,
        unit: &str,
        from: &str,
        to: &str,
        limit: usize,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT source_id, dossier_code FROM dossiers WHERE unit = $1 AND state = 'accepted' \
             AND dossier_code IS NOT NULL AND reception_day BETWEEN $2 AND $3 ORDER BY random() LIMIT $4",
        )
        .bind(unit)
        .bind(from)
        .bind(to)
        .bind(limit as i64)
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let marked = sqlx::query(
            "UPDATE dossiers SET state = 'pending', portal_has = FALSE, accepted_hash = NULL, attempts = 0, \
             last_error = NULL, next_attempt_at = $2 WHERE state = 'accepted' AND source_id = ANY($1) \
             AND source_id NOT IN (SELECT source_id FROM dossier_bodies WHERE redacted_at IS NOT NULL)",
        )
        .bind(source_ids)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "UPDATE progress SET state = 'waiting', sent_hash = NULL, attempts = 0 \
             WHERE source_id = ANY($1) AND source_id NOT IN (SELECT source_id FROM dossier_bodies WHERE redacted_at IS NOT NULL)",
        )
        .bind(source_ids)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(marked)
    }

    async fn payloads(
        &self,
        from: &str,
        to: &str,
        unit: Option<&str>,
    ) -> Result<Vec<(Option<String>, DossierState, String)>, StoreError> {
        let mut query = QueryBuilder::<Postgres>::new(
            "SELECT d.unit, d.state, b.payload FROM dossiers d \
             JOIN dossier_bodies b ON b.source_id = d.source_id \
             WHERE b.payload IS NOT NULL AND d.reception_day BETWEEN ",
        );
        query.push_bind(from).push(" AND ").push_bind(to);
        if let Some(unit) = unit {
            query.push(" AND d.unit = ").push_bind(unit);
        }
        let rows = query.build().fetch_all(&self.pool).await?;
        Ok(rows
            .into_iter()
            .map(|row| (row.get(0), state_of(row.get::<&str, _>(1)), row.get(2)))
            .collect())
    }

    async fn record_reconciliation(
        &self,
        records: &[ReconciliationRecord],
    ) -> Result<(), StoreError> {
        // A line stored again for the same run and unit replaces the earlier one (SQLite's
        // INSERT OR REPLACE), the last of a batch winning.
        let records = last_wins(records, |record| {
            (record.run_id.as_str(), record.unit.as_str())
        });
        if records.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO reconciliations (run_id, unit, started_at, from_day, to_day, source_count, \
             ledger_count, accepted, portal_count, missing, complete, summary) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::int8[], \
                 $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::bool[], $12::text[]) \
             ON CONFLICT (run_id, unit) DO UPDATE SET started_at = excluded.started_at, \
             from_day = excluded.from_day, to_day = excluded.to_day, source_count = excluded.source_count, \
             ledger_count = excluded.ledger_count, accepted = excluded.accepted, \
             portal_count = excluded.portal_count, missing = excluded.missing, \
             complete = excluded.complete, summary = excluded.summary",
        )
        .bind(column(&records, |record| record.run_id.as_str()))
        .bind(column(&records, |record| record.unit.as_str()))
        .bind(column(&records, |record| record.started_at))
        .bind(column(&records, |record| record.from_day.as_str()))
        .bind(column(&records, |record| record.to_day.as_str()))
        .bind(column(&records, |record| record.source_count))
        .bind(column(&records, |record| record.ledger_count))
        .bind(column(&records, |record| record.accepted))
        .bind(column(&records, |record| record.portal_count))
        .bind(column(&records, |record| record.missing))
        .bind(column(&records, |record| record.complete))
        .bind(column(&records, |record| record.summary.as_str()))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn latest_reconciliation(&self) -> Result<Vec<ReconciliationRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.run_id, r.unit, r.started_at, r.from_day, r.to_day, r.source_count, r.ledger_count, \
             r.accepted, r.portal_count, r.missing, r.complete, r.summary FROM reconciliations r \
             WHERE r.started_at = (SELECT MAX(started_at) FROM reconciliations WHERE unit = r.unit) \
             ORDER BY r.unit",
        )
        .fetch_all(&self.pool)
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
            sqlx::query_scalar("SELECT state FROM dossiers WHERE dossier_code = $1 LIMIT 1")
                .bind(dossier_code)
                .fetch_optional(&self.pool)
                .await?;
        Ok(state.as_deref().map(state_of))
    }

    async fn next_due(&self) -> Result<Option<Millis>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(at) FROM (SELECT MIN(next_attempt_at) AS at FROM dossiers WHERE state = 'pending' \
             UNION ALL SELECT MIN(lease_expires_at) FROM dossiers WHERE state = 'in_flight' \
             UNION ALL SELECT MIN(next_attempt_at) FROM progress WHERE state = 'pending') AS due",
        )
        .fetch_one(&self.pool)
        .await?)
    }

    async fn try_lead(
        &self,
        role: &str,
        owner: &str,
        now: Millis,
        until: Millis,
    ) -> Result<bool, StoreError> {
        // The upsert locks the role's row, so two instances asking at once are answered one after the
        // other, the second against the first one's lease.
        let held: Option<String> = sqlx::query_scalar(
            "INSERT INTO leaders (role, owner, expires_at) VALUES ($1, $2, $4) \
             ON CONFLICT (role) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
             WHERE leaders.owner = excluded.owner OR leaders.expires_at <= $3 \
             RETURNING owner",
        )
        .bind(role)
        .bind(owner)
        .bind(now)
        .bind(until)
        .fetch_optional(&self.pool)
        .await?;
        Ok(held.is_some())
    }

    async fn close(&self) {
        self.pool.close().await;
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
             WHERE d.state = 'accepted' AND d.accepted_at < $1 AND d.source_id > $2 \
             AND b.redacted_at IS NULL AND b.payload IS NOT NULL \
             AND (b.payload::jsonb ->> 'TrangThaiHoSo') IN ('9', '10') \
             ORDER BY d.source_id LIMIT $3",
        )
        .bind(accepted_before)
        .bind(after)
        .bind(limit as i64)
        .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let mut redacted = 0;
        for redaction in redactions {
            let done = sqlx::query(
                "UPDATE dossier_bodies b SET raw = '', payload = $1, redacted_at = $2 \
                 FROM dossiers d WHERE b.source_id = $3 AND d.source_id = b.source_id \
                 AND b.redacted_at IS NULL AND d.raw_hash = $4 AND d.state = 'accepted'",
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
                    "UPDATE progress SET payload = '' WHERE source_id = $1 AND state = 'sent'",
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
             WHERE d.state = 'accepted' AND d.accepted_at >= $1 \
             AND (d.content_checked_at IS NULL OR d.content_checked_at < $2) \
             AND ($3::TEXT IS NULL OR d.unit = $3) \
             AND d.dossier_code IS NOT NULL AND d.payload_hash IS NOT NULL \
             AND b.payload IS NOT NULL AND b.redacted_at IS NULL \
             ORDER BY d.content_checked_at IS NOT NULL, d.content_checked_at, d.accepted_at DESC, d.source_id \
             LIMIT $4",
        )
        .bind(accepted_since)
        .bind(checked_before)
        .bind(unit)
        .bind(limit as i64)
        .fetch_all(&self.pool)
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
             WHERE d.unit = $1 AND d.state = 'accepted' AND d.accepted_at < $2 \
             AND d.dossier_code IS NOT NULL AND d.payload_hash IS NOT NULL \
             AND b.payload IS NOT NULL AND b.redacted_at IS NULL \
             ORDER BY random() LIMIT $3",
        )
        .bind(unit)
        .bind(accepted_before)
        .bind(limit as i64)
        .fetch_all(&self.pool)
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
        sqlx::query("UPDATE dossiers SET content_checked_at = $1 WHERE source_id = ANY($2)")
            .bind(now)
            .bind(source_ids)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn requeue_content_differs(
        &self,
        differing: &[(String, String)],
        now: Millis,
    ) -> Result<Vec<String>, StoreError> {
        let (ids, hashes): (Vec<&str>, Vec<&str>) = differing
            .iter()
            .map(|(id, hash)| (id.as_str(), hash.as_str()))
            .unzip();
        let queued = sqlx::query(
            "UPDATE dossiers d SET state = 'pending', accepted_hash = NULL, attempts = 0, \
             next_attempt_at = $1, last_error = $2, content_checked_at = $1 \
             FROM UNNEST($3::TEXT[], $4::TEXT[]) AS compared(source_id, payload_hash) \
             WHERE d.source_id = compared.source_id AND d.state = 'accepted' \
             AND d.payload_hash = compared.payload_hash RETURNING d.source_id",
        )
        .bind(now)
        .bind(super::CONTENT_DIFFERS)
        .bind(&ids)
        .bind(&hashes)
        .fetch_all(&self.pool)
        .await?;
        Ok(queued.into_iter().map(|row| row.get(0)).collect())
    }
}

/// A content-check candidate from its row (source_id, dossier_code, unit, reception_day, payload,
/// payload_hash).
fn content_candidate(row: &PgRow) -> super::ContentCandidate {
    super::ContentCandidate {
        source_id: row.get(0),
        dossier_code: row.get(1),
        unit: row.get(2),
        reception_day: row.get(3),
        payload: row.get(4),
        payload_hash: row.get(5),
    }
}

/// The delivery columns of `dossiers`, in the order [`delivery_row`] reads them after `source_id`.
const DELIVERY_COLUMNS: &str = "state, payload_hash, reason_code, reason_detail, portal_has, accepted_hash, \
     accepted_at, attempts, next_attempt_at, last_error, flight_claim, lease_owner, flight_hash, \
     lease_expires_at, recheck";

fn delivery_row(row: &PgRow) -> DeliveryRow {
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
        portal_has: row.get(5),
        accepted_hash: row.get(6),
        accepted_at: row.get(7),
        attempts: row.get::<i32, _>(8).max(0) as u32,
        next_attempt_at: row.get(9),
        last_error: row.get(10),
        flight,
        recheck: row.get(15),
    }
}

/// ` FOR UPDATE` when the rows are to be changed in this transaction, in a fixed order so that two
/// writers locking overlapping rows cannot deadlock.
fn locking(lock: bool) -> &'static str {
    if lock { " ORDER BY 1 FOR UPDATE" } else { "" }
}

/// What the ledger knows of these dossiers, for the ingest decisions.
async fn load_views(
    connection: &mut PgConnection,
    ids: &[&str],
    lock: bool,
) -> Result<HashMap<String, LedgerView>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT source_id, raw_hash, state, payload_hash, accepted_hash, source_updated_at, \
         flight_claim IS NOT NULL FROM dossiers WHERE source_id = ANY($1){}",
        locking(lock)
    )))
    .bind(ids)
    .fetch_all(&mut *connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            (
                row.get::<String, _>(0),
                LedgerView {
                    raw_hash: row.get(1),
                    state: state_of(row.get::<&str, _>(2)),
                    payload_hash: row.get(3),
                    accepted_hash: row.get(4),
                    source_updated_at: row.get(5),
                    in_flight: row.get(6),
                },
            )
        })
        .collect())
}

async fn load_delivery_rows(
    connection: &mut PgConnection,
    ids: &[&str],
    lock: bool,
) -> Result<Vec<(String, DeliveryRow)>, StoreError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT source_id, {DELIVERY_COLUMNS} FROM dossiers WHERE source_id = ANY($1){}",
        locking(lock)
    )))
    .bind(ids)
    .fetch_all(&mut *connection)
    .await?;
    Ok(rows
        .iter()
        .map(|row| (row.get(0), delivery_row(row)))
        .collect())
}

/// Writes the delivery columns the decisions returned (never the version columns, which ingest owns).
async fn write_delivery_rows(
    connection: &mut PgConnection,
    rows: &[(String, DeliveryRow)],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let flight = |row: &DeliveryRow| row.flight.clone();
    sqlx::query(
        "UPDATE dossiers SET state = v.state, reason_code = v.reason_code, reason_detail = v.reason_detail, \
         portal_has = v.portal_has, accepted_hash = v.accepted_hash, accepted_at = v.accepted_at, \
         attempts = v.attempts, next_attempt_at = v.next_attempt_at, last_error = v.last_error, \
         flight_claim = v.flight_claim, lease_owner = v.lease_owner, flight_hash = v.flight_hash, \
         lease_expires_at = v.lease_expires_at, recheck = v.recheck \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::text[], $7::int8[], \
             $8::int4[], $9::int8[], $10::text[], $11::text[], $12::text[], $13::text[], $14::int8[], \
             $15::bool[]) \
             AS v (source_id, state, reason_code, reason_detail, portal_has, accepted_hash, accepted_at, \
                   attempts, next_attempt_at, last_error, flight_claim, lease_owner, flight_hash, \
                   lease_expires_at, recheck) \
         WHERE dossiers.source_id = v.source_id",
    )
    .bind(rows.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row)| row.state.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row)| row.reason_code.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row)| row.reason_detail.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row)| row.portal_has).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row)| row.accepted_hash.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row)| row.accepted_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row)| row.attempts.min(i32::MAX as u32) as i32).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row)| row.next_attempt_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row)| row.last_error.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row)| flight(row).map(|f| f.claim)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row)| flight(row).map(|f| f.owner)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row)| flight(row).map(|f| f.hash)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row)| flight(row).map(|f| f.lease_expires_at)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row)| row.recheck).collect::<Vec<_>>())
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Progress entries by (source id, entry key), each with its payload and whether another entry of its
/// dossier has a call in flight now; in each dossier's order.
async fn load_progress_rows(
    connection: &mut PgConnection,
    keys: &[(String, String)],
    now: Millis,
    lock: bool,
) -> Result<Vec<LoadedEntry>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let lock = if lock { " FOR UPDATE OF p" } else { "" };
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT p.source_id, p.entry_key, p.state, p.payload_hash, p.sent_hash, p.attempts, \
         p.next_attempt_at, p.last_error, p.flight_claim, p.lease_owner, p.flight_hash, \
         p.lease_expires_at, p.payload, EXISTS (SELECT 1 FROM progress q \
             WHERE q.source_id = p.source_id AND q.entry_key <> p.entry_key \
             AND q.flight_claim IS NOT NULL AND q.lease_expires_at >= $3) \
         FROM progress p JOIN UNNEST($1::text[], $2::text[]) AS k (source_id, entry_key) \
             ON k.source_id = p.source_id AND k.entry_key = p.entry_key \
         ORDER BY p.source_id, p.step_at, p.entry_key{lock}"
    )))
    .bind(keys.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>())
    .bind(keys.iter().map(|(_, key)| key.as_str()).collect::<Vec<_>>())
    .bind(now)
    .fetch_all(&mut *connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let flight = row.get::<Option<String>, _>(8).map(|claim| decide::Flight {
                claim,
                owner: row.get::<Option<String>, _>(9).unwrap_or_default(),
                hash: row.get::<Option<String>, _>(10).unwrap_or_default(),
                lease_expires_at: row.get::<Option<i64>, _>(11).unwrap_or(0),
            });
            LoadedEntry {
                key: (row.get(0), row.get(1)),
                row: ProgressRow {
                    state: ProgressState::parse(row.get::<&str, _>(2)),
                    payload_hash: row.get(3),
                    sent_hash: row.get(4),
                    attempts: row.get::<i32, _>(5).max(0) as u32,
                    next_attempt_at: row.get(6),
                    last_error: row.get(7),
                    flight,
                },
                payload: row.get(12),
                sibling_in_flight: row.get(13),
            }
        })
        .collect())
}

async fn write_progress_rows(
    connection: &mut PgConnection,
    rows: &[((String, String), ProgressRow, String)],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let flight = |row: &ProgressRow| row.flight.clone();
    sqlx::query(
        "UPDATE progress SET state = v.state, sent_hash = v.sent_hash, attempts = v.attempts, \
         next_attempt_at = v.next_attempt_at, last_error = v.last_error, flight_claim = v.flight_claim, \
         lease_owner = v.lease_owner, flight_hash = v.flight_hash, lease_expires_at = v.lease_expires_at \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[], $6::int8[], $7::text[], \
             $8::text[], $9::text[], $10::text[], $11::int8[]) \
             AS v (source_id, entry_key, state, sent_hash, attempts, next_attempt_at, last_error, \
                   flight_claim, lease_owner, flight_hash, lease_expires_at) \
         WHERE progress.source_id = v.source_id AND progress.entry_key = v.entry_key",
    )
    .bind(rows.iter().map(|((id, _), _, _)| id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|((_, key), _, _)| key.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row, _)| row.state.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row, _)| row.sent_hash.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row, _)| row.attempts.min(i32::MAX as u32) as i32).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row, _)| row.next_attempt_at).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row, _)| row.last_error.clone()).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row, _)| flight(row).map(|f| f.claim)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row, _)| flight(row).map(|f| f.owner)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row, _)| flight(row).map(|f| f.hash)).collect::<Vec<_>>())
    .bind(rows.iter().map(|(_, row, _)| flight(row).map(|f| f.lease_expires_at)).collect::<Vec<_>>())
    .execute(&mut *connection)
    .await?;
    Ok(())
}

/// Makes the next entry of each of these dossiers due, when the portal has the dossier and none of its
/// entries is due or in flight: a dossier's entries go one call at a time, in their order (portal-api.md
/// 2.2: an answer names only the `MaHoSo`).
async fn release_next_progress(
    connection: &mut PgConnection,
    source_ids: &[&str],
    now: Millis,
) -> Result<(), StoreError> {
    if source_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE progress SET state = 'pending' FROM ( \
             SELECT DISTINCT ON (p.source_id) p.source_id, p.entry_key FROM progress p \
             JOIN dossiers d ON d.source_id = p.source_id AND d.portal_has \
             WHERE p.state = 'waiting' AND p.source_id = ANY($1) \
               AND NOT EXISTS (SELECT 1 FROM progress q WHERE q.source_id = p.source_id \
                   AND (q.state IN ('pending', 'in_flight') \
                        OR (q.flight_claim IS NOT NULL AND q.lease_expires_at >= $2))) \
             ORDER BY p.source_id, p.step_at, p.entry_key) AS next \
         WHERE progress.source_id = next.source_id AND progress.entry_key = next.entry_key",
    )
    .bind(source_ids)
    .bind(now)
    .execute(&mut *connection)
    .await?;
    Ok(())
}
