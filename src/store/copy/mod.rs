//! `tthc-sync store copy`: moves a whole ledger from SQLite to PostgreSQL or back, with the daemon
//! stopped, resumable after an interruption and verified at the end.
//!
//! The decisions, as deploy/INSTALL.md tells the operator:
//! - **Same schema on both sides.** The source is opened read-only and must be at this binary's
//!   migration version (an older one: run this version's daemon on it once; a newer one: use the newer
//!   binary). The target is created if need be and migrated by the ledger's own migrations. Both schemas
//!   must be exactly the tables and columns of [`tables::TABLES`], or the copy refuses, naming what
//!   differs: a table a later migration adds cannot be left behind silently.
//! - **Table by table, keyset-paged.** The tables go in the fixed order of [`tables::TABLES`], each in
//!   pages of `batch_rows` rows in primary-key order. Each page is written in one transaction together
//!   with its marker in the target (table `store_copy_progress`: the key of the last row copied, the
//!   rows so far, whether the table is done), so a copy stopped anywhere (Ctrl-C, a crash, a lost
//!   connection) resumes with `--resume` after its last committed page. The marker table is created by
//!   the copy, not by a migration, and dropped once the copy is verified: a finished target is an
//!   ordinary ledger.
//! - **Never over a ledger by accident.** A target holding any ledger row is refused unless `--force`,
//!   which empties the target's ledger tables first; a target holding an unfinished copy is refused
//!   unless `--resume` (continues it, when it came from the same source) or `--force` (starts again).
//!   The source is only read.
//! - **Daemon stopped.** A source whose polling role is leased to an instance beyond now is refused: a
//!   daemon still runs on it (a daemon that stops gives its lease back).
//! - **Claims copied as they are.** A row in flight keeps its claim, owner and lease: the copy is the
//!   ledger as the stopped daemon left it, byte for byte, and the rules that already handle a stopped
//!   owner apply on the target: the claim goes back to the pool when its lease lapses
//!   ([`crate::decide`]), or at once when an instance of the same `store.instance` starts on the
//!   target (`release_claims`). The summary lists such rows per owner.
//! - **Verified.** After the last page, every table is read again on both sides and its row count and
//!   content hash compared ([`tables::TableDigest`]: blake3 per canonically rendered row, summed, so
//!   the two dialects' text orders do not matter); a difference is an error naming the table, and the
//!   marker table stays so that the target is not taken for a finished copy.
//! - **No secret printed.** A PostgreSQL URL is shown with its password masked, everywhere. Without a
//!   password in the URL, the one of the systemd credential `store_password` is used when the command
//!   runs with it (as the daemon does), else `PGPASSWORD`.

mod side;
pub mod tables;

use std::path::PathBuf;

use side::Side;
use tables::{Page, TABLES, Table, TableDigest, key_from_text, key_to_text};

use crate::config::masked_url;
use crate::store::StoreError;

/// Rows per page (and per transaction) unless told otherwise.
pub const DEFAULT_BATCH_ROWS: usize = 5_000;

/// One end of a copy, as the command line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A SQLite ledger file.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl Endpoint {
    /// A `postgres://` or `postgresql://` URL names a PostgreSQL ledger; anything else a SQLite file.
    pub fn parse(text: &str) -> Endpoint {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Endpoint::Postgres(text.to_string())
        } else {
            Endpoint::Sqlite(PathBuf::from(text))
        }
    }

    /// How messages name it: the file's path, or the URL with its password masked.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Sqlite(path) => std::path::absolute(path)
                .unwrap_or_else(|_| path.clone())
                .display()
                .to_string(),
            Endpoint::Postgres(url) => masked_url(url),
        }
    }

    /// The newest migration this binary carries for the endpoint's dialect.
    fn binary_version(&self) -> i64 {
        let migrator = match self {
            Endpoint::Sqlite(_) => sqlx::migrate!("./migrations/sqlite"),
            Endpoint::Postgres(_) => sqlx::migrate!("./migrations/postgres"),
        };
        migrator
            .iter()
            .map(|migration| migration.version)
            .max()
            .unwrap_or(0)
    }
}

/// Why a copy stopped.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot open the target ledger: {0}")]
    Open(#[from] StoreError),
    #[error("cannot read column {table}.{column}: {source}")]
    Column {
        table: &'static str,
        column: &'static str,
        source: sqlx::Error,
    },
    #[error("cannot read the credential store_password: {source}")]
    Credential { source: std::io::Error },
    #[error("the source and the target are the same ledger ({0})")]
    SameLedger(String),
    #[error("no ledger at {0}")]
    NoSource(String),
    #[error(
        "the source ledger is at migration {source_version} and this tthc-sync at {binary_version}: {advice}"
    )]
    Version {
        source_version: i64,
        binary_version: i64,
        advice: &'static str,
    },
    #[error("the {side} ledger's schema is not the one this copy knows: {}", differences.join("; "))]
    Schema {
        side: &'static str,
        differences: Vec<String>,
    },
    #[error(
        "instance {owner} holds the role {role} of the source ledger until {until} (Unix ms): a daemon still runs on it; stop it first"
    )]
    DaemonRunning {
        role: String,
        owner: String,
        until: i64,
    },
    #[error(
        "the target already holds a ledger (table {table} has rows): copy into an empty one, or add --force to empty it first"
    )]
    TargetNotEmpty { table: &'static str },
    #[error(
        "the target holds an unfinished copy from {source_ledger}: add --resume to continue it, or --force to start again"
    )]
    CopyInProgress { source_ledger: String },
    #[error(
        "the target holds an unfinished copy from {recorded}, not from {source_ledger}: add --force to start again from this source"
    )]
    OtherSource {
        recorded: String,
        source_ledger: String,
    },
    #[error("the copy's marker for table {0} cannot be read; add --force to start again")]
    Marker(String),
    #[error("stopped after {0} pages, as asked; run again with --resume")]
    Stopped(u64),
    #[error("verification failed: {}; the target is left as it is (copy again with --force)", .0.join("; "))]
    Mismatch(Vec<String>),
}

/// How to copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Empty a target that holds a ledger (or an unfinished copy) and copy anew.
    pub force: bool,
    /// Continue an unfinished copy from the same source.
    pub resume: bool,
    /// Rows per page and transaction.
    pub batch_rows: usize,
    /// Stop (as an interruption would) after this many pages: how tests interrupt a copy at a known
    /// point. The command leaves it unset.
    pub stop_after_pages: Option<u64>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            force: false,
            resume: false,
            batch_rows: DEFAULT_BATCH_ROWS,
            stop_after_pages: None,
        }
    }
}

/// Where the copy of one table stands, as its marker row in the target holds it.
#[derive(Debug, Clone)]
pub struct TableMarker {
    pub table: String,
    /// The source, as [`Endpoint::describe`] names it.
    pub source: String,
    /// The key of the last row copied ([`tables::key_to_text`]); None before the first page.
    pub last_key: Option<String>,
    pub rows_copied: u64,
    pub finished: bool,
}

/// One table of a verified copy.
#[derive(Debug, Clone)]
pub struct TableSummary {
    pub table: &'static str,
    /// Rows on both sides.
    pub rows: u64,
    /// Rows written by this run (less than `rows` when it resumed a copy).
    pub copied_now: u64,
    /// The content hash, equal on both sides.
    pub hash: String,
}

/// Rows that came across with a call in flight, for one table and lease owner.
#[derive(Debug, Clone)]
pub struct Flights {
    pub table: &'static str,
    pub owner: Option<String>,
    pub rows: u64,
    /// The latest lease end among them (Unix ms).
    pub lease_until: Option<i64>,
}

/// What a finished, verified copy reports.
#[derive(Debug, Clone)]
pub struct CopyReport {
    pub source: String,
    pub target: String,
    /// True when it continued an unfinished copy.
    pub resumed: bool,
    pub tables: Vec<TableSummary>,
    pub flights: Vec<Flights>,
}

/// Copies the ledger at `from` into `to`, resuming or refusing as `options` say, and verifies it;
/// `on_page` hears of each page committed (table, rows copied so far).
pub async fn copy_ledger(
    from: &Endpoint,
    to: &Endpoint,
    options: &CopyOptions,
    on_page: &mut (dyn FnMut(&str, u64) + Send),
) -> Result<CopyReport, CopyError> {
    let (source_name, target_name) = (from.describe(), to.describe());
    if source_name == target_name {
        return Err(CopyError::SameLedger(source_name));
    }
    let source = Side::open_source(from).await?;
    let outcome = match Side::open_target(to).await {
        Ok(target) => {
            let outcome = copy_between(&source, &target, from, options, on_page).await;
            target.close().await;
            outcome
        }
        Err(error) => Err(error),
    };
    source.close().await;
    let (resumed, tables, flights) = outcome?;
    Ok(CopyReport {
        source: source_name,
        target: target_name,
        resumed,
        tables,
        flights,
    })
}

/// What differs between the schema of the ledger at `endpoint` (opened read-only, as it stands) and
/// the tables the copy knows; empty when the copy knows every table and column.
pub async fn schema_differences(endpoint: &Endpoint) -> Result<Vec<String>, CopyError> {
    let side = Side::open_source(endpoint).await?;
    let schema = side.schema().await;
    side.close().await;
    Ok(side::differences(&schema?))
}

type Copied = (bool, Vec<TableSummary>, Vec<Flights>);

async fn copy_between(
    source: &Side,
    target: &Side,
    from: &Endpoint,
    options: &CopyOptions,
    on_page: &mut (dyn FnMut(&str, u64) + Send),
) -> Result<Copied, CopyError> {
    check_source(source, from).await?;
    let differences = side::differences(&target.schema().await?);
    if !differences.is_empty() {
        return Err(CopyError::Schema {
            side: "target",
            differences,
        });
    }
    let source_name = from.describe();
    let (markers, resumed) = markers_to_start_from(target, &source_name, options).await?;

    let batch_rows = options.batch_rows.max(1);
    let mut pages = 0u64;
    let mut copied_now = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let mut marker = markers
            .iter()
            .find(|marker| marker.table == table.name)
            .cloned()
            .ok_or_else(|| CopyError::Marker(table.name.into()))?;
        let mut copied = 0u64;
        while !marker.finished {
            let after = match &marker.last_key {
                None => None,
                Some(text) => {
                    Some(key_from_text(text).ok_or_else(|| CopyError::Marker(table.name.into()))?)
                }
            };
            let page = source
                .read_page(table, after.as_deref(), batch_rows)
                .await?;
            if let Some(key) = table.last_key(&page) {
                marker.last_key = Some(key_to_text(&key));
            }
            marker.finished = page.rows < batch_rows;
            marker.rows_copied += page.rows as u64;
            copied += page.rows as u64;
            target.write_page(table, page, &marker).await?;
            on_page(table.name, marker.rows_copied);
            pages += 1;
            if options.stop_after_pages.is_some_and(|stop| pages >= stop) && !marker.finished {
                return Err(CopyError::Stopped(pages));
            }
        }
        copied_now.push(copied);
    }
    target.continue_identities().await?;

    let mut summaries = Vec::with_capacity(TABLES.len());
    let mut mismatches = Vec::new();
    for (table, copied) in TABLES.iter().zip(copied_now) {
        let (at_source, at_target) = tokio::try_join!(
            digest(source, table, batch_rows),
            digest(target, table, batch_rows)
        )?;
        if at_source != at_target {
            mismatches.push(format!(
                "table {}: {} rows with hash {} at the source, {} rows with hash {} at the target",
                table.name,
                at_source.rows,
                at_source.hash_hex(),
                at_target.rows,
                at_target.hash_hex()
            ));
        }
        summaries.push(TableSummary {
            table: table.name,
            rows: at_target.rows,
            copied_now: copied,
            hash: at_target.hash_hex(),
        });
    }
    if !mismatches.is_empty() {
        return Err(CopyError::Mismatch(mismatches));
    }
    target.finish_copy().await?;
    Ok((resumed, summaries, target.flights().await?))
}

/// The source must be a ledger at this binary's migration version, of the schema the copy knows, that
/// no daemon is polling.
async fn check_source(source: &Side, from: &Endpoint) -> Result<(), CopyError> {
    let binary_version = from.binary_version();
    let Some(source_version) = source.migration_version().await? else {
        return Err(CopyError::NoSource(from.describe()));
    };
    if source_version != binary_version {
        return Err(CopyError::Version {
            source_version,
            binary_version,
            advice: if source_version < binary_version {
                "start this version's daemon on it once (`tthc-sync run`, which migrates the ledger), stop it, then copy"
            } else {
                "the source was written by a newer tthc-sync: copy with that version's binary"
            },
        });
    }
    let differences = side::differences(&source.schema().await?);
    if !differences.is_empty() {
        return Err(CopyError::Schema {
            side: "source",
            differences,
        });
    }
    let now = jiff::Timestamp::now().as_millisecond();
    if let Some((role, owner, until)) = source.live_leader(now).await? {
        return Err(CopyError::DaemonRunning { role, owner, until });
    }
    Ok(())
}

/// The markers the copy goes on from, and whether they continue an unfinished copy; starts a copy in
/// the target when there is none to continue, refusing a target that holds data unless forced.
async fn markers_to_start_from(
    target: &Side,
    source_name: &str,
    options: &CopyOptions,
) -> Result<(Vec<TableMarker>, bool), CopyError> {
    match target.markers().await? {
        Some(markers) if !options.force => {
            let recorded = markers
                .first()
                .map(|marker| marker.source.clone())
                .unwrap_or_default();
            if !options.resume {
                return Err(CopyError::CopyInProgress {
                    source_ledger: recorded,
                });
            }
            if recorded != source_name {
                return Err(CopyError::OtherSource {
                    recorded,
                    source_ledger: source_name.into(),
                });
            }
            Ok((markers, true))
        }
        Some(_) => {
            target.start_copy(source_name, true).await?;
            Ok((fresh_markers(target).await?, false))
        }
        None => {
            if let Some(table) = target.first_table_with_rows().await?
                && !options.force
            {
                return Err(CopyError::TargetNotEmpty { table });
            }
            target.start_copy(source_name, options.force).await?;
            Ok((fresh_markers(target).await?, false))
        }
    }
}

async fn fresh_markers(target: &Side) -> Result<Vec<TableMarker>, CopyError> {
    target
        .markers()
        .await?
        .ok_or_else(|| CopyError::Marker("(all)".into()))
}

/// A table's row count and content hash, read page by page.
async fn digest(side: &Side, table: &Table, batch_rows: usize) -> Result<TableDigest, CopyError> {
    let mut digest = TableDigest::default();
    let mut after = None;
    loop {
        let page: Page = side.read_page(table, after.as_deref(), batch_rows).await?;
        digest.add_page(&page);
        if page.rows < batch_rows {
            return Ok(digest);
        }
        after = table.last_key(&page);
    }
}
