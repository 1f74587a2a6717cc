//! Ingest: source records into the ledger, page by page with the cursor that covers them, each decided on
//! the row as it stands in the writing transaction ([`crate::decide::on_new_version`]).

use std::collections::HashMap;

use async_trait::async_trait;

use super::deliveries::release_next_progress;
use super::sql::{
    Backend, Cells, Conn, IDS_PER_STATEMENT, ROWS_PER_STATEMENT, Sql, Tuple, last_wins,
};
use super::{Millis, StoreError, state_of};
use crate::decide::{DossierState, IngestAction, LedgerView, NewVersion};

/// One source record ready to be written, with the decision already taken.
#[derive(Debug, Clone)]
pub struct IngestRow {
    pub source_id: String,
    pub dossier_code: Option<String>,
    pub raw: String,
    pub raw_hash: String,
    pub source_updated_at: Option<Millis>,
    pub source_agency_id: Option<String>,
    pub unit: Option<String>,
    pub procedure_code: Option<String>,
    pub reception_day: Option<String>,
    pub payload: Option<String>,
    pub payload_hash: Option<String>,
    pub reason_code: Option<String>,
    pub reason_detail: Option<String>,
    /// JSON array of findings (values masked).
    pub findings: String,
    /// What normalizing this version gave; the store decides what it does to the row
    /// ([`crate::decide::on_new_version`]) on the row as it stands when it is written.
    pub kind: VersionKind,
    /// The stored record normalized again (changed tables or catalogs), not a new source version: it lands
    /// only while the row still holds that record.
    pub renormalized: bool,
    /// The version's `updatedDate` was ahead of the clock plus the allowance when it was read
    /// (source-api.md quirk 10): counted per unit in the reports.
    pub stamped_ahead: bool,
    /// Progress entries of a sendable dossier.
    pub progress: Vec<ProgressEntryRow>,
}

/// What a version is, once normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionKind {
    Sendable,
    Held,
    Skipped,
}

impl IngestRow {
    /// The new version as the decisions see it.
    pub fn new_version(&self) -> NewVersion<'_> {
        match (self.kind, self.payload_hash.as_deref()) {
            (VersionKind::Sendable, Some(payload_hash)) => NewVersion::Sendable { payload_hash },
            (VersionKind::Skipped, _) => NewVersion::Skipped,
            _ => NewVersion::Held,
        }
    }

    /// What writing this row does to the row the ledger holds (`existing`, read in the writing
    /// transaction).
    pub fn action(&self, existing: Option<&LedgerView>) -> IngestAction {
        if self.renormalized {
            match existing {
                // The record changed since it was read again: the newer one stays.
                Some(view) if view.raw_hash == self.raw_hash => {
                    crate::decide::on_new_outcome(view, self.new_version())
                }
                _ => IngestAction::Stale,
            }
        } else {
            crate::decide::on_new_version(
                existing,
                &self.raw_hash,
                self.source_updated_at,
                self.new_version(),
            )
        }
    }
}

/// One progress entry of a sendable dossier, as ingest writes it.
#[derive(Debug, Clone)]
pub struct ProgressEntryRow {
    pub key: String,
    /// `ThoiDiemXuLy` (`yyyyMMddHHmmss`): a dossier's entries go to the portal in this order.
    pub step_at: String,
    pub payload: String,
    pub hash: String,
}

/// A held-back dossier's source record, as stored, with what the ledger knows of it.
#[derive(Debug, Clone)]
pub struct HeldRecord {
    pub source_id: String,
    pub raw: String,
    /// The first reason it is held back for (`unmapped_unit`, `unit_unknown_to_portal`, ...).
    pub reason_code: Option<String>,
    pub view: LedgerView,
}

/// The ledger's side of ingest.
#[async_trait]
pub trait Ingest: Send + Sync {
    /// What the ledger knows of these source ids (one round trip).
    async fn ledger_views(
        &self,
        source_ids: &[String],
    ) -> Result<HashMap<String, LedgerView>, StoreError>;

    /// Writes a page of records and moves the cursor, in one transaction: the cursor never passes an
    /// uncommitted dossier.
    async fn ingest(
        &self,
        rows: &[IngestRow],
        cursor: Option<(&str, &str)>,
        now: Millis,
    ) -> Result<(), StoreError>;

    async fn cursor(&self, name: &str) -> Result<Option<String>, StoreError>;

    /// Sets a named value of the `cursors` table outside any page (the mapping tables' fingerprint, the
    /// time of the last daily re-normalization).
    async fn set_cursor(&self, name: &str, value: &str, now: Millis) -> Result<(), StoreError> {
        self.ingest(&[], Some((name, value)), now).await
    }

    /// Up to `limit` held-back dossiers with a source id after `after`, in source id order (keyset
    /// paging), with their stored source records: what is normalized again when the tables change.
    async fn held_records(&self, after: &str, limit: usize) -> Result<Vec<HeldRecord>, StoreError>;
}

#[async_trait]
impl<B: Backend> Ingest for B {
    async fn ledger_views(
        &self,
        source_ids: &[String],
    ) -> Result<HashMap<String, LedgerView>, StoreError> {
        let ids: Vec<&str> = source_ids.iter().map(String::as_str).collect();
        load_views::<B>(&mut *self.reader().await?, &ids, false).await
    }

    async fn ingest(
        &self,
        rows: &[IngestRow],
        cursor: Option<(&str, &str)>,
        now: Millis,
    ) -> Result<(), StoreError> {
        let mut tx = self.write().await?;
        if let Some(lock) = B::DIALECT.ingest_lock() {
            tx.run(Sql::new(lock)).await?;
        }
        let ids: Vec<&str> = rows.iter().map(|row| row.source_id.as_str()).collect();
        let views = load_views::<B>(&mut tx, &ids, true).await?;
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
            let mut sql = Sql::new(format!(
                "INSERT INTO dossiers ({VERSION_COLUMNS}, payload_hash, state, reason_code, reason_detail, \
                 stamped_ahead, attempts, next_attempt_at, first_seen_at, changed_at) "
            ));
            sql.values(chunk, |(row, state), values| {
                bind_version(values, row)
                    .bind(&row.payload_hash)
                    .bind(state.as_str())
                    .bind(&row.reason_code)
                    .bind(&row.reason_detail)
                    .bind(row.stamped_ahead)
                    .bind(0_i64)
                    .bind(now)
                    .bind(now)
                    .bind(now);
            });
            sql.push(
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
            tx.run(sql).await?;
        }

        for chunk in keep.chunks(ROWS_PER_STATEMENT) {
            let mut sql = Sql::new(format!(
                "WITH incoming ({VERSION_COLUMNS}, stamped_ahead) AS ("
            ));
            sql.values(chunk, |row, values| {
                bind_version(values, row).bind(row.stamped_ahead);
            });
            sql.push(
                ") UPDATE dossiers SET dossier_code = incoming.dossier_code, \
                 raw_hash = incoming.raw_hash, source_updated_at = incoming.source_updated_at, \
                 source_agency_id = incoming.source_agency_id, unit = incoming.unit, \
                 procedure_code = incoming.procedure_code, reception_day = incoming.reception_day, \
                 stamped_ahead = incoming.stamped_ahead, changed_at = ",
            );
            sql.bind(now)
                .push(" FROM incoming WHERE dossiers.source_id = incoming.source_id");
            tx.run(sql).await?;
        }

        let written: Vec<&IngestRow> = planned.iter().map(|(row, _)| *row).collect();
        for chunk in written.chunks(ROWS_PER_STATEMENT) {
            let mut sql =
                Sql::new("INSERT INTO dossier_bodies (source_id, raw, payload, findings) ");
            sql.values(chunk, |row, values| {
                values
                    .bind(&row.source_id)
                    .bind(&row.raw)
                    .bind(&row.payload)
                    .bind(&row.findings);
            });
            sql.push(
                " ON CONFLICT (source_id) DO UPDATE SET raw = excluded.raw, payload = excluded.payload, \
                 findings = excluded.findings, redacted_at = NULL",
            );
            tx.run(sql).await?;
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
        for chunk in progress.chunks(ROWS_PER_STATEMENT) {
            let mut sql = Sql::new(
                "INSERT INTO progress (source_id, entry_key, step_at, payload, payload_hash, state, \
                 next_attempt_at) ",
            );
            sql.values(chunk, |(source_id, entry), values| {
                values
                    .bind(*source_id)
                    .bind(&entry.key)
                    .bind(&entry.step_at)
                    .bind(&entry.payload)
                    .bind(&entry.hash)
                    .bind("waiting")
                    .bind(now);
            });
            sql.push(&format!(
                " ON CONFLICT (source_id, entry_key) DO UPDATE SET payload = excluded.payload, \
                 payload_hash = excluded.payload_hash, step_at = excluded.step_at, \
                 state = {PROGRESS_STATE_ON_CHANGE}, attempts = 0 \
                 WHERE progress.payload_hash <> excluded.payload_hash"
            ));
            tx.run(sql).await?;
        }

        // Entries of dossiers the portal already has can go (one at a time, in order); the others wait
        // for their dossier.
        let with_progress: Vec<&str> = planned
            .iter()
            .filter(|(row, _)| !row.progress.is_empty())
            .map(|(row, _)| row.source_id.as_str())
            .collect();
        release_next_progress::<B>(&mut tx, &with_progress, now).await?;

        if let Some((name, value)) = cursor {
            tx.run(set_cursor_statement(name, value.to_string(), now))
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn cursor(&self, name: &str) -> Result<Option<String>, StoreError> {
        let mut sql = Sql::new("SELECT value FROM cursors WHERE name = ");
        sql.bind(name);
        let rows = self.reader().await?.fetch(sql).await?;
        Ok(rows.first().map(|row| row.text(0)))
    }

    async fn held_records(&self, after: &str, limit: usize) -> Result<Vec<HeldRecord>, StoreError> {
        let mut sql = Sql::new(
            "SELECT d.source_id, b.raw, d.raw_hash, d.payload_hash, d.accepted_hash, d.reason_code, \
             d.source_updated_at, d.flight_claim IS NOT NULL \
             FROM dossiers d JOIN dossier_bodies b ON b.source_id = d.source_id \
             WHERE d.state = 'held' AND d.source_id > ",
        );
        sql.bind(after)
            .push(" ORDER BY d.source_id LIMIT ")
            .bind(limit);
        let rows = self.reader().await?.fetch(sql).await?;
        Ok(rows
            .iter()
            .map(|row| HeldRecord {
                source_id: row.text(0),
                raw: row.text(1),
                reason_code: row.opt_text(5),
                view: LedgerView {
                    raw_hash: row.text(2),
                    source_updated_at: row.opt_int(6),
                    state: DossierState::Held,
                    payload_hash: row.opt_text(3),
                    accepted_hash: row.opt_text(4),
                    in_flight: row.flag(7),
                },
            })
            .collect())
    }
}

/// Sets a named value of the `cursors` table.
pub(super) fn set_cursor_statement<'a>(name: &'a str, value: String, now: Millis) -> Sql<'a> {
    let mut sql = Sql::new("INSERT INTO cursors (name, value, updated_at) VALUES (");
    sql.bind(name).push(", ").bind(value).push(", ").bind(now).push(
        ") ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    );
    sql
}

/// How ingest updates a progress entry whose payload changed: an entry with a call in flight keeps its
/// state until the answer lands (the answer's decision sees the new payload); otherwise it is `sent`
/// when it went back to what the portal last received, and waits for its turn again if not.
const PROGRESS_STATE_ON_CHANGE: &str = "CASE WHEN progress.flight_claim IS NOT NULL THEN progress.state \
     WHEN progress.sent_hash = excluded.payload_hash THEN 'sent' ELSE 'waiting' END";

/// What the ledger knows of these dossiers, for the ingest decisions; with `lock`, the rows are locked
/// for this transaction (in source id order, so that two writers cannot deadlock).
async fn load_views<B: Backend>(
    connection: &mut <B::Db as sqlx::Database>::Connection,
    ids: &[&str],
    lock: bool,
) -> Result<HashMap<String, LedgerView>, StoreError> {
    let mut ids = ids.to_vec();
    let lock = if lock { B::DIALECT.lock_rows() } else { "" };
    if !lock.is_empty() {
        ids.sort_unstable();
        ids.dedup();
    }
    let mut views = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let mut sql = Sql::new(
            "SELECT source_id, raw_hash, state, payload_hash, accepted_hash, source_updated_at, \
             flight_claim IS NOT NULL FROM dossiers WHERE source_id IN ",
        );
        sql.list(chunk.iter().copied());
        if !lock.is_empty() {
            sql.push(" ORDER BY source_id").push(lock);
        }
        for row in connection.fetch(sql).await? {
            views.insert(
                row.text(0),
                LedgerView {
                    raw_hash: row.text(1),
                    state: state_of(&row.text(2)),
                    payload_hash: row.opt_text(3),
                    accepted_hash: row.opt_text(4),
                    source_updated_at: row.opt_int(5),
                    in_flight: row.flag(6),
                },
            );
        }
    }
    Ok(views)
}

/// The columns a new version of a dossier writes whatever its state, in the order [`bind_version`] binds
/// them.
const VERSION_COLUMNS: &str = "source_id, dossier_code, raw_hash, source_updated_at, source_agency_id, unit, \
     procedure_code, reception_day";

/// Binds `row`'s [`VERSION_COLUMNS`].
fn bind_version<'t, 's, 'a>(
    values: &'t mut Tuple<'s, 'a>,
    row: &'a IngestRow,
) -> &'t mut Tuple<'s, 'a> {
    values
        .bind(&row.source_id)
        .bind(&row.dossier_code)
        .bind(&row.raw_hash)
        .bind(row.source_updated_at)
        .bind(&row.source_agency_id)
        .bind(&row.unit)
        .bind(&row.procedure_code)
        .bind(&row.reception_day)
}

/// What a page of records does to the ledger, decided on the rows as they stand in the writing
/// transaction (`views`): one (row, action) per dossier written, in page order. A page holding two versions
/// of one dossier is decided in order, and the dossier is written once, with the last version and the
/// state the sequence ends in. Unchanged and stale records are left out.
pub fn plan_ingest(
    rows: &[IngestRow],
    mut views: HashMap<String, LedgerView>,
) -> Vec<(&IngestRow, IngestAction)> {
    let mut planned: Vec<(&IngestRow, IngestAction)> = Vec::with_capacity(rows.len());
    let mut position: HashMap<&str, usize> = HashMap::new();
    for row in rows {
        let existing = views.get(&row.source_id);
        let action = row.action(existing);
        if !action.writes() {
            continue;
        }
        let after = LedgerView {
            raw_hash: row.raw_hash.clone(),
            source_updated_at: row.source_updated_at,
            state: match action {
                IngestAction::Set(state) => state,
                _ => existing.map_or(DossierState::Pending, |view| view.state),
            },
            payload_hash: row.payload_hash.clone(),
            accepted_hash: existing.and_then(|view| view.accepted_hash.clone()),
            in_flight: existing.is_some_and(|view| view.in_flight),
        };
        views.insert(row.source_id.clone(), after);
        match position.get(row.source_id.as_str()) {
            Some(&index) => {
                // A state set earlier in the page stands unless this version sets another.
                let action = match (planned[index].1, action) {
                    (IngestAction::Set(state), IngestAction::KeepState) => IngestAction::Set(state),
                    (_, action) => action,
                };
                planned[index] = (row, action);
            }
            None => {
                position.insert(row.source_id.as_str(), planned.len());
                planned.push((row, action));
            }
        }
    }
    planned
}
