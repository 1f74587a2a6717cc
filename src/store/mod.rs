//! The ledger: every dossier seen, its payload and where it stands with the portal, progress entries,
//! cursors and the attempt log. SQLite by default ([`sqlite`]); PostgreSQL ([`postgres`]) when several
//! instances share the work.
//!
//! One trait per concern, each in its own file with the one implementation both databases run:
//! [`Ingest`] (source records and cursors), [`Deliveries`] (claims and the portal's answers),
//! [`Operator`] (the commands', reports' and dashboard's reads, and `retry`), [`Reconciliation`] (with
//! the content check) and [`Maintenance`] (attempt log, leadership, retention). [`Store`] is all of
//! them. Every statement is written once, in the SQL both databases speak ([`sql`]); a backend only
//! opens connections and binds values, and the few places the dialects differ are named in
//! `sql::Dialect`. The decisions on each row are [`crate::decide`]'s.
//!
//! Work in flight is claimed with a lease (owner, expiry): a crashed owner's claims fall back to the pool
//! when the lease runs out, or at once when the same owner starts again. Roles only one instance may hold
//! (polling the source) are leased the same way ([`Maintenance::try_lead`]).

pub mod copy;
mod deliveries;
mod ingest;
mod maintenance;
mod operator;
pub mod postgres;
mod reconciliation;
mod sql;
pub mod sqlite;

pub use deliveries::{
    ClaimedDossier, ClaimedProgress, Deliveries, DeliveryResult, LoadedEntry, ProgressResult,
    claim_one_entry_per_dossier, decide_answers, decide_progress_answers, new_claim_id,
};
pub use ingest::{HeldRecord, Ingest, IngestRow, ProgressEntryRow, VersionKind, plan_ingest};
pub use maintenance::{AttemptRecord, Maintenance, Redaction, RetentionCandidate};
pub use operator::{
    DossierFilter, FailureRow, LedgerBucket, LedgerCounts, Operator, PAYLOADS_PER_PAGE, PayloadKey,
    PayloadRow, RENORMALIZE_REQUESTED, Requeued, UnitCounts,
};
pub use reconciliation::{CONTENT_DIFFERS, ContentCandidate, Reconciliation, ReconciliationRecord};

/// Every concern's trait, for code that calls the ledger's methods on a concrete store.
pub mod prelude {
    pub use super::{Deliveries, Ingest, Maintenance, Operator, Reconciliation, Store};
}

use std::sync::Arc;

use anyhow::Context;

use crate::config::{StoreSettings, masked_url};
use crate::decide::DossierState;
pub use crate::decide::{Answer as DeliveryOutcome, Millis};
pub use crate::unit_key::UnitScope;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("cannot prepare the database file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
}

/// The whole ledger: every concern's trait, which both backends implement through `sql::Backend`.
/// Code that needs only one concern can take that trait alone.
pub trait Store: Ingest + Deliveries + Operator + Reconciliation + Maintenance {}

impl<T: Ingest + Deliveries + Operator + Reconciliation + Maintenance> Store for T {}

/// Opens the ledger the settings name: PostgreSQL when `store.url` is set, else the SQLite file
/// `store.path`. A password in the URL is masked in the error.
pub async fn open(settings: &StoreSettings) -> anyhow::Result<Arc<dyn Store>> {
    match &settings.url {
        Some(url) => {
            let password = settings.password()?;
            let store = postgres::PostgresStore::open(url, password.as_deref(), settings.pool_size)
                .await
                .with_context(|| format!("failed to open the ledger {}", masked_url(url)))?;
            Ok(Arc::new(store))
        }
        None => {
            let store = sqlite::SqliteStore::open(&settings.path)
                .await
                .with_context(|| {
                    format!("failed to open the ledger {}", settings.path.display())
                })?;
            Ok(Arc::new(store))
        }
    }
}

/// Opens the ledger the settings name for an operator's command beside a running daemon: reads only, no
/// migration, and (SQLite) no write lock that would delay the daemon.
pub async fn open_read_only(settings: &StoreSettings) -> anyhow::Result<Arc<dyn Store>> {
    match &settings.url {
        Some(url) => {
            let password = settings.password()?;
            let store = postgres::PostgresStore::open_read_only(url, password.as_deref())
                .await
                .with_context(|| format!("failed to open the ledger {}", masked_url(url)))?;
            Ok(Arc::new(store))
        }
        None => {
            let store = sqlite::SqliteStore::open_read_only(&settings.path)
                .await
                .with_context(|| {
                    format!("failed to open the ledger {}", settings.path.display())
                })?;
            Ok(Arc::new(store))
        }
    }
}

fn state_of(text: &str) -> DossierState {
    // The column only ever holds values written by this module; an unknown one is treated as pending so
    // that it is looked at again rather than forgotten.
    DossierState::parse(text).unwrap_or(DossierState::Pending)
}
