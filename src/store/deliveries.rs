//! Claims and answers: due dossiers and progress entries claimed under a lease, and the portal's answers
//! recorded on the rows as they stand, as [`crate::decide`] decides. The claims' picks are the only
//! statements whose text differs between the databases ([`super::sql::Dialect::skip_locked`] and
//! [`super::sql::Dialect::indexed_by`]).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;

use super::maintenance::log_attempts;
use super::sql::{Backend, Cells, Conn, Connection, IDS_PER_STATEMENT, ROWS_PER_STATEMENT, Sql};
use super::{AttemptRecord, DeliveryOutcome, Millis, StoreError, state_of};
use crate::decide::{self, DeliveryRow, ProgressRow, ProgressState};

/// A dossier claimed for delivery.
#[derive(Debug, Clone)]
pub struct ClaimedDossier {
    /// The claim (one per claim call): its answers land only on rows still in flight for it.
    pub claim: String,
    pub source_id: String,
    pub dossier_code: String,
    pub unit: Option<String>,
    pub payload: String,
    pub payload_hash: String,
    pub portal_has: bool,
    pub attempts: u32,
}

#[derive(Debug, Clone)]
pub struct DeliveryResult {
    /// The claim the call was made under.
    pub claim: String,
    pub source_id: String,
    /// The payload hash that was sent: a result only lands on the row while it still has that payload.
    pub payload_hash: String,
    pub outcome: DeliveryOutcome,
}

/// A progress entry claimed for delivery.
#[derive(Debug, Clone)]
pub struct ClaimedProgress {
    pub claim: String,
    pub source_id: String,
    pub entry_key: String,
    pub payload: String,
    pub payload_hash: String,
    pub attempts: u32,
}

#[derive(Debug, Clone)]
pub struct ProgressResult {
    pub claim: String,
    pub source_id: String,
    pub entry_key: String,
    pub payload_hash: String,
    pub outcome: DeliveryOutcome,
}

/// A progress entry as loaded for a decision.
#[derive(Debug, Clone)]
pub struct LoadedEntry {
    /// (source id, entry key).
    pub key: (String, String),
    pub row: ProgressRow,
    pub payload: String,
    /// Another entry of the same dossier has a call in flight now.
    pub sibling_in_flight: bool,
}

/// The ledger's side of pushing to the portal.
#[async_trait]
pub trait Deliveries: Send + Sync {
    /// Claims up to `limit` due dossiers for `owner` until `lease_until`.
    async fn claim_dossiers(
        &self,
        owner: &str,
        limit: usize,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<ClaimedDossier>, StoreError>;

    /// Records the portal's answers for claimed dossiers, in one transaction, as
    /// [`crate::decide::on_answer`] decides on each row as it stands. The progress entries that were
    /// waiting for the dossiers now on the portal become due. `calls` are the attempt-log lines of the
    /// calls that carried them, written in the same transaction.
    async fn record_deliveries(
        &self,
        results: &[DeliveryResult],
        calls: &[AttemptRecord],
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Extends the lease of the claim `claim` on these dossiers and on its progress entries of them, while
    /// a long call runs; returns how many rows it still held.
    async fn renew_claim(
        &self,
        claim: &str,
        source_ids: &[String],
        lease_until: Millis,
    ) -> Result<u64, StoreError>;

    /// Claims up to `limit` due progress entries of dossiers the portal already has: at most one per
    /// dossier (the portal answers by `MaHoSo` only), a dossier's entries in their order, none while
    /// another entry of the dossier is in flight.
    async fn claim_progress(
        &self,
        owner: &str,
        limit: usize,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<ClaimedProgress>, StoreError>;

    /// As [`Deliveries::record_deliveries`], for progress entries.
    async fn record_progress(
        &self,
        results: &[ProgressResult],
        calls: &[AttemptRecord],
        now: Millis,
    ) -> Result<(), StoreError>;

    /// Gives back every claim `owner` holds (a restart of the same instance after a crash), as
    /// [`crate::decide::on_release`] decides.
    async fn release_claims(&self, owner: &str, now: Millis) -> Result<u64, StoreError>;

    /// The earliest time a pending dossier or progress entry becomes due, if any.
    async fn next_due(&self) -> Result<Option<Millis>, StoreError>;
}

#[async_trait]
impl<B: Backend> Deliveries for B {
    async fn claim_dossiers(
        &self,
        owner: &str,
        limit: usize,
        now: Millis,
        lease_until: Millis,
    ) -> Result<Vec<ClaimedDossier>, StoreError> {
        // PostgreSQL locks the rows as they are picked and skips those another instance is claiming right
        // now, rather than waiting for them (or, worse, claiming them twice).
        let mut tx = self.write().await?;
        let claim = new_claim_id(owner);
        let mut dossiers =
            claim_unflown_dossiers::<B>(&mut tx, &claim, owner, limit, now, lease_until).await?;
        if dossiers.len() < limit {
            // What the statement above leaves: rows whose earlier flight is known (its lease lapsed),
            // decided on in `decide`. A pending row whose earlier call is still in flight (a new version
            // waiting behind it) is passed over until that call is settled.
            let pick = due_pick::<B>(
                "source_id",
                "dossiers",
                "flight_claim IS NOT NULL AND lease_expires_at < $1",
                now,
                limit - dossiers.len(),
            );
            let ids: Vec<String> = tx
                .fetch(pick)
                .await?
                .iter()
                .map(|row| row.text(0))
                .collect();
            let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            let claimed: Vec<(String, DeliveryRow)> =
                load_delivery_rows::<B>(&mut tx, &id_refs, false)
                    .await?
                    .into_iter()
                    .filter(|(_, row)| row.claimable(now))
                    .map(|(id, row)| (id, decide::on_claim(row, &claim, owner, lease_until)))
                    .collect();
            write_delivery_rows::<B>(&mut tx, &claimed).await?;
            for chunk in claimed.chunks(IDS_PER_STATEMENT) {
                let mut sql = Sql::new(
                    "SELECT d.source_id, d.dossier_code, d.unit, d.payload_hash, d.portal_has, \
                     d.attempts FROM dossiers d WHERE d.source_id IN ",
                );
                sql.list(chunk.iter().map(|(id, _)| id));
                for row in tx.fetch(sql).await? {
                    dossiers.push(claimed_dossier(&claim, &row));
                }
            }
        }
        attach_payloads::<B>(&mut tx, &mut dossiers).await?;
        tx.commit().await?;
        Ok(dossiers)
    }

    async fn record_deliveries(
        &self,
        results: &[DeliveryResult],
        calls: &[AttemptRecord],
        now: Millis,
    ) -> Result<(), StoreError> {
        if results.is_empty() && calls.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        log_attempts::<B>(&mut tx, calls).await?;
        let ids: Vec<&str> = results
            .iter()
            .map(|result| result.source_id.as_str())
            .collect();
        let mut rows: HashMap<String, DeliveryRow> = load_delivery_rows::<B>(&mut tx, &ids, true)
            .await?
            .into_iter()
            .collect();
        let changes = decide_answers(&mut rows, results, now);
        write_delivery_rows::<B>(&mut tx, &changes).await?;
        let on_portal: Vec<&str> = changes
            .iter()
            .filter(|(_, row)| row.portal_has)
            .map(|(id, _)| id.as_str())
            .collect();
        release_next_progress::<B>(&mut tx, &on_portal, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn renew_claim(
        &self,
        claim: &str,
        source_ids: &[String],
        lease_until: Millis,
    ) -> Result<u64, StoreError> {
        let mut connection = self.writer().await?;
        let mut renewed = 0;
        for table in ["dossiers", "progress"] {
            for chunk in source_ids.chunks(IDS_PER_STATEMENT) {
                let mut sql = Sql::new(format!("UPDATE {table} SET lease_expires_at = "));
                sql.bind(lease_until)
                    .push(" WHERE flight_claim = ")
                    .bind(claim)
                    .push(" AND source_id IN ")
                    .list(chunk);
                renewed += connection.run(sql).await?;
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
        // As `claim_dossiers`. Entries are `pending` only when their dossier is on the portal and they
        // are the next of its entries; the rest are `waiting`. So this walks only what can be sent.
        let mut tx = self.write().await?;
        let claim = new_claim_id(owner);
        let mut claimed =
            claim_unflown_progress::<B>(&mut tx, &claim, owner, limit, now, lease_until).await?;
        if claimed.len() < limit {
            // What the statement above leaves: entries whose earlier flight is still known (a new
            // version waiting behind it, or a lapsed lease), decided on in `decide`.
            let pick = due_pick::<B>(
                "source_id, entry_key",
                "progress",
                "flight_claim IS NOT NULL",
                now,
                limit - claimed.len(),
            );
            let keys: Vec<(String, String)> = tx
                .fetch(pick)
                .await?
                .iter()
                .map(|row| (row.text(0), row.text(1)))
                .collect();
            let entries = load_progress_rows::<B>(&mut tx, &keys, now).await?;
            let flown = claim_one_entry_per_dossier(entries, &claim, owner, now, lease_until);
            let rows: Vec<_> = flown.iter().map(|(key, row, _)| (key, row)).collect();
            write_progress_rows::<B>(&mut tx, &rows).await?;
            claimed.extend(
                flown
                    .into_iter()
                    .map(|(key, row, payload)| ClaimedProgress {
                        claim: claim.clone(),
                        source_id: key.0,
                        entry_key: key.1,
                        payload,
                        payload_hash: row.payload_hash,
                        attempts: row.attempts,
                    }),
            );
        }
        tx.commit().await?;
        Ok(claimed)
    }

    async fn record_progress(
        &self,
        results: &[ProgressResult],
        calls: &[AttemptRecord],
        now: Millis,
    ) -> Result<(), StoreError> {
        if results.is_empty() && calls.is_empty() {
            return Ok(());
        }
        let mut tx = self.write().await?;
        log_attempts::<B>(&mut tx, calls).await?;
        let keys: Vec<(String, String)> = results
            .iter()
            .map(|result| (result.source_id.clone(), result.entry_key.clone()))
            .collect();
        let entries = load_progress_states::<B>(&mut tx, &keys).await?;
        let changes = decide_progress_answers(entries, results, now);
        let rows: Vec<_> = changes.iter().map(|(key, row)| (key, row)).collect();
        write_progress_rows::<B>(&mut tx, &rows).await?;
        let dossiers: Vec<&str> = results
            .iter()
            .map(|result| result.source_id.as_str())
            .collect();
        release_next_progress::<B>(&mut tx, &dossiers, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_claims(&self, owner: &str, now: Millis) -> Result<u64, StoreError> {
        let mut tx = self.write().await?;
        let lock = B::DIALECT.lock_rows();
        let mut owned = Sql::new(
            "SELECT source_id FROM dossiers WHERE flight_claim IS NOT NULL AND lease_owner = ",
        );
        owned.bind(owner).push(" ORDER BY source_id").push(lock);
        let ids: Vec<String> = tx
            .fetch(owned)
            .await?
            .iter()
            .map(|row| row.text(0))
            .collect();
        let id_refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let released: Vec<(String, DeliveryRow)> =
            load_delivery_rows::<B>(&mut tx, &id_refs, false)
                .await?
                .into_iter()
                .map(|(id, row)| (id, decide::on_release(row, now)))
                .collect();
        write_delivery_rows::<B>(&mut tx, &released).await?;
        let mut owned = Sql::new(
            "SELECT source_id, entry_key FROM progress WHERE flight_claim IS NOT NULL AND lease_owner = ",
        );
        owned
            .bind(owner)
            .push(" ORDER BY source_id, entry_key")
            .push(lock);
        let keys: Vec<(String, String)> = tx
            .fetch(owned)
            .await?
            .iter()
            .map(|row| (row.text(0), row.text(1)))
            .collect();
        let entries: Vec<((String, String), ProgressRow)> =
            load_progress_states::<B>(&mut tx, &keys)
                .await?
                .into_iter()
                .map(|(key, row)| (key, decide::on_progress_release(row, now)))
                .collect();
        let rows: Vec<_> = entries.iter().map(|(key, row)| (key, row)).collect();
        write_progress_rows::<B>(&mut tx, &rows).await?;
        tx.commit().await?;
        Ok((released.len() + entries.len()) as u64)
    }

    async fn next_due(&self) -> Result<Option<Millis>, StoreError> {
        let sql = Sql::new(
            "SELECT MIN(at) FROM (SELECT MIN(next_attempt_at) AS at FROM dossiers WHERE state = 'pending' \
             UNION ALL SELECT MIN(lease_expires_at) FROM dossiers WHERE state = 'in_flight' \
             UNION ALL SELECT MIN(next_attempt_at) FROM progress WHERE state = 'pending') AS due",
        );
        let rows = self.reader().await?.fetch(sql).await?;
        Ok(rows.first().and_then(|row| row.opt_int(0)))
    }
}

/// The decisions on a call's answers, each on its dossier's row as it stands (`rows`, updated as they are
/// decided): the rows to write.
pub fn decide_answers(
    rows: &mut HashMap<String, DeliveryRow>,
    results: &[DeliveryResult],
    now: Millis,
) -> Vec<(String, DeliveryRow)> {
    let mut changed: Vec<String> = Vec::new();
    for result in results {
        let Some(row) = rows.get(&result.source_id) else {
            continue;
        };
        if let Some(next) = decide::on_answer(
            row,
            &result.claim,
            &result.payload_hash,
            &result.outcome,
            now,
        ) {
            rows.insert(result.source_id.clone(), next);
            if !changed.contains(&result.source_id) {
                changed.push(result.source_id.clone());
            }
        }
    }
    changed
        .into_iter()
        .filter_map(|id| rows.get(&id).cloned().map(|row| (id, row)))
        .collect()
}

/// The decisions on a progress call's answers: the entries to write.
pub fn decide_progress_answers(
    entries: Vec<((String, String), ProgressRow)>,
    results: &[ProgressResult],
    now: Millis,
) -> Vec<((String, String), ProgressRow)> {
    let mut entries: HashMap<(String, String), ProgressRow> = entries.into_iter().collect();
    let mut changes = Vec::new();
    for result in results {
        let key = (result.source_id.clone(), result.entry_key.clone());
        let Some(row) = entries.remove(&key) else {
            continue;
        };
        if let Some(next) = decide::on_progress_answer(
            &row,
            &result.claim,
            &result.payload_hash,
            &result.outcome,
            now,
        ) {
            changes.push((key, next));
        }
    }
    changes
}

/// The common claim of dossiers in one statement: due `pending` rows without a flight, each given a flight
/// of its current payload, as [`decide::on_claim`] gives a row without a flight; their payloads come
/// after ([`attach_payloads`]).
async fn claim_unflown_dossiers<B: Backend>(
    connection: &mut Connection<B>,
    claim: &str,
    owner: &str,
    limit: usize,
    now: Millis,
    lease_until: Millis,
) -> Result<Vec<ClaimedDossier>, StoreError> {
    let flight = NewFlight {
        claim,
        owner,
        lease_until,
    };
    let sql = unflown_claim::<B>(
        ("dossiers", "source_id", "p.source_id"),
        "COALESCE(payload_hash, '')",
        flight,
        now,
        limit,
        |_| {},
        "source_id, dossier_code, unit, payload_hash, portal_has, attempts",
    );
    Ok(connection
        .fetch(sql)
        .await?
        .iter()
        .map(|row| claimed_dossier(claim, row))
        .collect())
}

/// A claimed dossier from `source_id, dossier_code, unit, payload_hash, portal_has, attempts`, without its
/// payload yet.
fn claimed_dossier(claim: &str, row: &impl Cells) -> ClaimedDossier {
    ClaimedDossier {
        claim: claim.to_owned(),
        source_id: row.text(0),
        dossier_code: row.opt_text(1).unwrap_or_default(),
        unit: row.opt_text(2),
        payload: String::new(),
        payload_hash: row.opt_text(3).unwrap_or_default(),
        portal_has: row.flag(4),
        attempts: row.int(5).max(0) as u32,
    }
}

/// Reads the payloads of claimed dossiers from `dossier_bodies`.
async fn attach_payloads<B: Backend>(
    connection: &mut Connection<B>,
    dossiers: &mut [ClaimedDossier],
) -> Result<(), StoreError> {
    let mut payloads: HashMap<String, String> = HashMap::with_capacity(dossiers.len());
    for chunk in dossiers.chunks(IDS_PER_STATEMENT) {
        let mut sql = Sql::new(
            "SELECT source_id, payload FROM dossier_bodies WHERE payload IS NOT NULL AND source_id IN ",
        );
        sql.list(chunk.iter().map(|dossier| dossier.source_id.as_str()));
        for row in connection.fetch(sql).await? {
            payloads.insert(row.text(0), row.text(1));
        }
    }
    for dossier in dossiers {
        if let Some(payload) = payloads.remove(&dossier.source_id) {
            dossier.payload = payload;
        }
    }
    Ok(())
}

/// The common claim of progress entries in one statement: due `pending` entries without a flight of their
/// own, the first pending one of each dossier in its order, none of a dossier with an entry in flight; each
/// gets a flight of its current payload, as [`decide::on_progress_claim`] gives a row without a flight.
/// The rows come back with their payloads, so nothing is read twice.
async fn claim_unflown_progress<B: Backend>(
    connection: &mut Connection<B>,
    claim: &str,
    owner: &str,
    limit: usize,
    now: Millis,
    lease_until: Millis,
) -> Result<Vec<ClaimedProgress>, StoreError> {
    let flight = NewFlight {
        claim,
        owner,
        lease_until,
    };
    let sibling_state = B::DIALECT.unindexed("e.state");
    let sql = unflown_claim::<B>(
        (
            "progress",
            "(source_id, entry_key)",
            "p.source_id, p.entry_key",
        ),
        "payload_hash",
        flight,
        now,
        limit,
        |sql| {
            sql.push(
                " AND NOT EXISTS (SELECT 1 FROM progress e WHERE e.source_id = p.source_id \
                 AND e.entry_key <> p.entry_key AND ((e.flight_claim IS NOT NULL \
                 AND e.lease_expires_at >= ",
            )
            .bind(now)
            .push(&format!(
                ") OR ({sibling_state} = 'pending' AND (e.step_at < p.step_at \
                 OR (e.step_at = p.step_at AND e.entry_key < p.entry_key)))))"
            ));
        },
        "source_id, entry_key, payload, payload_hash, attempts",
    );
    Ok(connection
        .fetch(sql)
        .await?
        .iter()
        .map(|row| ClaimedProgress {
            claim: claim.to_owned(),
            source_id: row.text(0),
            entry_key: row.text(1),
            payload: row.text(2),
            payload_hash: row.text(3),
            attempts: row.int(4).max(0) as u32,
        })
        .collect())
}

/// The flight a one-statement claim opens: the claim, its owner, its lease.
#[derive(Clone, Copy)]
struct NewFlight<'a> {
    claim: &'a str,
    owner: &'a str,
    lease_until: Millis,
}

/// A claim in one statement: up to `limit` due `pending` rows of `table` (its partial index
/// `{table}_due`, the rows as `p`) without a flight of their own and meeting `also`, each given `flight`
/// carrying `flight_hash` (the current payload's hash); the claimed rows' `returning` columns come back.
/// `(table, key, pick_key)`: the table, its key as the `UPDATE` names it, and as the pick selects it.
fn unflown_claim<'a, B: Backend>(
    (table, key, pick_key): (&str, &str, &str),
    flight_hash: &str,
    flight: NewFlight<'a>,
    now: Millis,
    limit: usize,
    also: impl FnOnce(&mut Sql<'a>),
    returning: &str,
) -> Sql<'a> {
    let mut sql = Sql::new(format!(
        "UPDATE {table} SET state = 'in_flight', flight_claim = "
    ));
    sql.bind(flight.claim)
        .push(", lease_owner = ")
        .bind(flight.owner)
        .push(&format!(
            ", flight_hash = {flight_hash}, lease_expires_at = "
        ))
        .bind(flight.lease_until)
        .push(&format!(
            " WHERE {key} IN (SELECT {pick_key} FROM {table} p{} \
             WHERE p.state = 'pending' AND p.next_attempt_at <= ",
            B::DIALECT.indexed_by(&format!("{table}_due"))
        ))
        .bind(now)
        .push(" AND p.flight_claim IS NULL");
    also(&mut sql);
    sql.push(" ORDER BY p.next_attempt_at LIMIT ")
        .bind(limit)
        .push(&format!(
            "{}) RETURNING {returning}",
            B::DIALECT.skip_locked()
        ));
    sql
}

/// Claims, of the loaded entries (in each dossier's order), the first claimable entry of each dossier that
/// has no other entry in flight.
pub fn claim_one_entry_per_dossier(
    entries: Vec<LoadedEntry>,
    claim: &str,
    owner: &str,
    now: Millis,
    lease_until: Millis,
) -> Vec<((String, String), ProgressRow, String)> {
    let mut claimed: Vec<((String, String), ProgressRow, String)> = Vec::new();
    let mut dossiers: HashSet<String> = HashSet::new();
    for entry in entries {
        let lapsed = entry
            .row
            .flight
            .as_ref()
            .is_none_or(|flight| flight.lease_expires_at < now);
        let due = match entry.row.state {
            ProgressState::Pending => lapsed && entry.row.next_attempt_at <= now,
            ProgressState::InFlight => lapsed,
            _ => false,
        };
        if !due || entry.sibling_in_flight || !dossiers.insert(entry.key.0.clone()) {
            continue;
        }
        let row = decide::on_progress_claim(entry.row, claim, owner, lease_until);
        claimed.push((entry.key, row, entry.payload));
    }
    claimed
}

/// A fresh claim id: the owner, then random bits, so that answers match their own claim only.
pub fn new_claim_id(owner: &str) -> String {
    format!("{owner}/{:016x}", rand::random::<u64>())
}

/// The pick of a claim: up to `limit` keys (`columns`) of `table`'s rows that are due (pending, due by
/// `now`, and meeting `pending_also`, where `$1` is `now`), then of those whose lease lapsed. Two index
/// walks, never a sort of the whole backlog: a claim costs the same with ten pending rows or a million;
/// lapsed leases are only looked at when the due rows do not fill the claim.
fn due_pick<'a, B: Backend>(
    columns: &str,
    table: &str,
    pending_also: &str,
    now: Millis,
    limit: usize,
) -> Sql<'a> {
    let skip_locked = B::DIALECT.skip_locked();
    // The partial indexes of migration 0009, `{table}_due` and `{table}_leases`.
    let due = B::DIALECT.indexed_by(&format!("{table}_due"));
    let leases = B::DIALECT.indexed_by(&format!("{table}_leases"));
    Sql::numbered(
        format!(
            "SELECT {columns} FROM (SELECT {columns} FROM {table}{due} \
             WHERE state = 'pending' AND next_attempt_at <= $1 AND {pending_also} \
             ORDER BY next_attempt_at LIMIT $2{skip_locked}) AS due \
             UNION ALL SELECT {columns} FROM (SELECT {columns} FROM {table}{leases} \
             WHERE state = 'in_flight' AND lease_expires_at < $1 LIMIT $2{skip_locked}) AS lapsed \
             LIMIT $2"
        ),
        [now.into(), limit.into()],
    )
}

/// The delivery columns of `dossiers`, in the order [`delivery_row`] reads them after `source_id`.
const DELIVERY_COLUMNS: &str = "state, payload_hash, reason_code, reason_detail, portal_has, accepted_hash, \
     accepted_at, attempts, next_attempt_at, last_error, flight_claim, lease_owner, flight_hash, \
     lease_expires_at, recheck";

fn delivery_row(row: &impl Cells) -> DeliveryRow {
    let flight = row.opt_text(11).map(|claim| decide::Flight {
        claim,
        owner: row.opt_text(12).unwrap_or_default(),
        hash: row.opt_text(13).unwrap_or_default(),
        lease_expires_at: row.opt_int(14).unwrap_or(0),
    });
    DeliveryRow {
        state: state_of(&row.text(1)),
        payload_hash: row.opt_text(2),
        reason_code: row.opt_text(3),
        reason_detail: row.opt_text(4),
        portal_has: row.flag(5),
        accepted_hash: row.opt_text(6),
        accepted_at: row.opt_int(7),
        attempts: row.int(8).max(0) as u32,
        next_attempt_at: row.opt_int(9),
        last_error: row.opt_text(10),
        flight,
        recheck: row.flag(15),
    }
}

/// The delivery rows of these dossiers; with `lock`, locked for this transaction in source id order.
async fn load_delivery_rows<B: Backend>(
    connection: &mut Connection<B>,
    ids: &[&str],
    lock: bool,
) -> Result<Vec<(String, DeliveryRow)>, StoreError> {
    let mut ids = ids.to_vec();
    let lock = if lock { B::DIALECT.lock_rows() } else { "" };
    if !lock.is_empty() {
        ids.sort_unstable();
        ids.dedup();
    }
    let mut rows = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let mut sql = Sql::new(format!(
            "SELECT source_id, {DELIVERY_COLUMNS} FROM dossiers WHERE source_id IN "
        ));
        sql.list(chunk.iter().copied());
        if !lock.is_empty() {
            sql.push(" ORDER BY source_id").push(lock);
        }
        for row in connection.fetch(sql).await? {
            rows.push((row.text(0), delivery_row(&row)));
        }
    }
    Ok(rows)
}

/// Writes the delivery columns the decisions returned (never the version columns, which ingest owns).
async fn write_delivery_rows<B: Backend>(
    connection: &mut Connection<B>,
    rows: &[(String, DeliveryRow)],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut sql = Sql::new(
            "WITH v (source_id, state, reason_code, reason_detail, portal_has, accepted_hash, accepted_at, \
             attempts, next_attempt_at, last_error, flight_claim, lease_owner, flight_hash, \
             lease_expires_at, recheck) AS (",
        );
        sql.values(chunk, |(id, row), values| {
            let flight = row.flight.as_ref();
            values
                .bind(id)
                .bind(row.state.as_str())
                .bind(&row.reason_code)
                .bind(&row.reason_detail)
                .bind(row.portal_has)
                .bind(&row.accepted_hash)
                .bind(row.accepted_at)
                .bind(row.attempts)
                .bind(row.next_attempt_at)
                .bind(&row.last_error)
                .bind(flight.map(|flight| flight.claim.as_str()))
                .bind(flight.map(|flight| flight.owner.as_str()))
                .bind(flight.map(|flight| flight.hash.as_str()))
                .bind(flight.map(|flight| flight.lease_expires_at))
                .bind(row.recheck);
        });
        sql.push(
            ") UPDATE dossiers SET state = v.state, reason_code = v.reason_code, \
             reason_detail = v.reason_detail, portal_has = v.portal_has, accepted_hash = v.accepted_hash, \
             accepted_at = v.accepted_at, attempts = v.attempts, next_attempt_at = v.next_attempt_at, \
             last_error = v.last_error, flight_claim = v.flight_claim, lease_owner = v.lease_owner, \
             flight_hash = v.flight_hash, lease_expires_at = v.lease_expires_at, recheck = v.recheck \
             FROM v WHERE dossiers.source_id = v.source_id",
        );
        connection.run(sql).await?;
    }
    Ok(())
}

/// The delivery columns of `progress` ([`progress_row`] reads them in this order).
const PROGRESS_COLUMNS: &str = "p.state, p.payload_hash, p.sent_hash, p.attempts, p.next_attempt_at, \
     p.last_error, p.flight_claim, p.lease_owner, p.flight_hash, p.lease_expires_at";

/// A progress entry's delivery columns, read from `first` on, in the order of [`PROGRESS_COLUMNS`].
fn progress_row(row: &impl Cells, first: usize) -> ProgressRow {
    let flight = row.opt_text(first + 6).map(|claim| decide::Flight {
        claim,
        owner: row.opt_text(first + 7).unwrap_or_default(),
        hash: row.opt_text(first + 8).unwrap_or_default(),
        lease_expires_at: row.opt_int(first + 9).unwrap_or(0),
    });
    ProgressRow {
        state: ProgressState::parse(&row.text(first)),
        payload_hash: row.text(first + 1),
        sent_hash: row.opt_text(first + 2),
        attempts: row.int(first + 3).max(0) as u32,
        next_attempt_at: row.int(first + 4),
        last_error: row.opt_text(first + 5),
        flight,
    }
}

/// The start of a query of the progress entries `keys`: `WITH k AS (VALUES …) SELECT p.source_id,
/// p.entry_key, `; the caller appends its columns, then [`FROM_KEYED_PROGRESS`].
fn keyed_progress<'a>(keys: &[&'a (String, String)]) -> Sql<'a> {
    let mut sql = Sql::new("WITH k (source_id, entry_key) AS (");
    sql.values(keys.iter().copied(), |(id, key), values| {
        values.bind(id).bind(key);
    });
    sql.push(") SELECT p.source_id, p.entry_key, ");
    sql
}

const FROM_KEYED_PROGRESS: &str =
    " FROM progress p JOIN k ON k.source_id = p.source_id AND k.entry_key = p.entry_key";

/// Progress entries by (source id, entry key) to claim, each with its payload and whether another entry
/// of its dossier has a call in flight now; in each dossier's order.
async fn load_progress_rows<B: Backend>(
    connection: &mut Connection<B>,
    keys: &[(String, String)],
    now: Millis,
) -> Result<Vec<LoadedEntry>, StoreError> {
    let keys: Vec<&(String, String)> = keys.iter().collect();
    let mut entries = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let mut sql = keyed_progress(chunk);
        sql.push(PROGRESS_COLUMNS)
            .push(
                ", p.payload, EXISTS (SELECT 1 FROM progress q \
                 WHERE q.source_id = p.source_id AND q.entry_key <> p.entry_key \
                 AND q.flight_claim IS NOT NULL AND q.lease_expires_at >= ",
            )
            .bind(now)
            .push(")")
            .push(FROM_KEYED_PROGRESS)
            .push(" ORDER BY p.source_id, p.step_at, p.entry_key");
        for row in connection.fetch(sql).await? {
            entries.push(LoadedEntry {
                key: (row.text(0), row.text(1)),
                row: progress_row(&row, 2),
                payload: row.text(12),
                sibling_in_flight: row.flag(13),
            });
        }
    }
    Ok(entries)
}

/// The delivery columns of progress entries by (source id, entry key), without their payloads (an answer
/// or a release decides on them), locked for this transaction in key order.
async fn load_progress_states<B: Backend>(
    connection: &mut Connection<B>,
    keys: &[(String, String)],
) -> Result<Vec<((String, String), ProgressRow)>, StoreError> {
    let mut keys: Vec<&(String, String)> = keys.iter().collect();
    keys.sort_unstable();
    keys.dedup();
    let lock = B::DIALECT.lock_rows_of("p");
    let mut entries = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let mut sql = keyed_progress(chunk);
        sql.push(PROGRESS_COLUMNS)
            .push(FROM_KEYED_PROGRESS)
            .push(" ORDER BY p.source_id, p.entry_key")
            .push(&lock);
        for row in connection.fetch(sql).await? {
            entries.push(((row.text(0), row.text(1)), progress_row(&row, 2)));
        }
    }
    Ok(entries)
}

async fn write_progress_rows<B: Backend>(
    connection: &mut Connection<B>,
    rows: &[(&(String, String), &ProgressRow)],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut sql = Sql::new(
            "WITH v (source_id, entry_key, state, sent_hash, attempts, next_attempt_at, last_error, \
             flight_claim, lease_owner, flight_hash, lease_expires_at) AS (",
        );
        sql.values(chunk, |((id, key), row), values| {
            let flight = row.flight.as_ref();
            values
                .bind(id)
                .bind(key)
                .bind(row.state.as_str())
                .bind(&row.sent_hash)
                .bind(row.attempts)
                .bind(row.next_attempt_at)
                .bind(&row.last_error)
                .bind(flight.map(|flight| flight.claim.as_str()))
                .bind(flight.map(|flight| flight.owner.as_str()))
                .bind(flight.map(|flight| flight.hash.as_str()))
                .bind(flight.map(|flight| flight.lease_expires_at));
        });
        sql.push(
            ") UPDATE progress SET state = v.state, sent_hash = v.sent_hash, attempts = v.attempts, \
             next_attempt_at = v.next_attempt_at, last_error = v.last_error, \
             flight_claim = v.flight_claim, lease_owner = v.lease_owner, flight_hash = v.flight_hash, \
             lease_expires_at = v.lease_expires_at \
             FROM v WHERE progress.source_id = v.source_id AND progress.entry_key = v.entry_key",
        );
        connection.run(sql).await?;
    }
    Ok(())
}

/// Makes the next entry of each of these dossiers due, when the portal has the dossier and none of its
/// entries is due or in flight: a dossier's entries go one call at a time, in their order (portal-api.md
/// 2.2: an answer names only the `MaHoSo`).
pub(super) async fn release_next_progress<B: Backend>(
    connection: &mut Connection<B>,
    source_ids: &[&str],
    now: Millis,
) -> Result<(), StoreError> {
    // The dossiers' few entries are found by the primary key, not by the state index (SQLite's planner
    // would otherwise walk every waiting entry of the ledger).
    let state = B::DIALECT.unindexed("p.state");
    let earlier_state = B::DIALECT.unindexed("e.state");
    for chunk in source_ids.chunks(IDS_PER_STATEMENT) {
        let mut sql = Sql::new(format!(
            "UPDATE progress SET state = 'pending' WHERE (source_id, entry_key) IN (\
             SELECT p.source_id, p.entry_key FROM progress p JOIN dossiers d ON d.source_id = p.source_id \
             WHERE {state} = 'waiting' AND d.portal_has = TRUE \
             AND NOT EXISTS (SELECT 1 FROM progress e WHERE e.source_id = p.source_id \
                 AND {earlier_state} = 'waiting' \
                 AND (e.step_at < p.step_at OR (e.step_at = p.step_at AND e.entry_key < p.entry_key))) \
             AND NOT EXISTS (SELECT 1 FROM progress q WHERE q.source_id = p.source_id \
                 AND (q.state IN ('pending', 'in_flight') OR (q.flight_claim IS NOT NULL \
                 AND q.lease_expires_at >= "
        ));
        sql.bind(now)
            .push("))) AND p.source_id IN ")
            .list(chunk.iter().copied())
            .push(")");
        connection.run(sql).await?;
    }
    Ok(())
}
