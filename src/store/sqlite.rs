//! The SQLite ledger: one file, WAL mode so that `report` and `retry` can read and write while the daemon
//! runs, a busy timeout for the moments they meet, and a file readable by its owner only.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool, Transaction};

use super::StoreError;
use super::sql::{Backend, Cells, Conn, Dialect, Placeholders, Sql, query};

pub struct SqliteStore {
    /// The one connection this process writes through. Writers queue here, in order, instead of meeting
    /// at SQLite's lock, whose busy handler sleeps in steps of up to 100 ms.
    writer: SqlitePool,
    /// Connections for reads, which WAL lets run beside the writer.
    reader: SqlitePool,
    path: PathBuf,
}

/// The page size of a new ledger file, in bytes.
pub const PAGE_SIZE: u32 = 16384;

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
            // A fixed page cache and fewer, larger checkpoints: memory that does not grow with the ledger,
            // and fewer syncs of the database file. 4 MiB holds what the claims and answers walk (the
            // newest rows and the partial indexes); 16 MiB cost 12 MB more resident memory and no less
            // CPU over a 20,000-dossier sync (README, "The ledger's upkeep").
            .pragma("cache_size", "-4096")
            // 16 KiB pages for a new ledger (an existing one keeps its own until a `VACUUM`): a dossier's
            // body (4–5 KB) fits in one page instead of spilling into an overflow chain, and fewer pages
            // are written per transaction. 12% less CPU over a 20,000-dossier sync than 4 KiB, a few MB more
            // resident (README, "The ledger's upkeep").
            .page_size(PAGE_SIZE)
            // Counted in pages: with 16 KiB pages the WAL grows to about 64 MiB between checkpoints, not
            // 16 MiB as with 4 KiB pages (the 12% above was measured with this setting unchanged).
            .pragma("wal_autocheckpoint", "4000")
            // Statement journals and sorts in memory: a multi-row upsert's statement journal was written
            // to a temporary file (a profile showed it in the kernel's write path).
            .pragma("temp_store", "memory")
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("./migrations/sqlite").run(&writer).await?;
        // The readers look up a page's ids and answer the status server: 1 MiB each holds the upper levels
        // of the indexes they walk. At 4 MiB (the writer's) the three of them held 5–6 MB more at the peak
        // of a 100,000-dossier sync (65 MB against 59–60) for no CPU time that the runs could tell apart.
        let reader = SqlitePoolOptions::new()
            .max_connections(3)
            .connect_with(options.pragma("cache_size", "-1024"))
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
impl Backend for SqliteStore {
    type Db = Sqlite;

    const DIALECT: Dialect = Dialect::Sqlite;

    async fn write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        // IMMEDIATE: the rows are read and written in one transaction that no other writer (an operator's
        // command in another process) can slip into, so the decisions stand on the rows as they are.
        Ok(self.writer.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn writer(&self) -> Result<PoolConnection<Sqlite>, StoreError> {
        Ok(self.writer.acquire().await?)
    }

    async fn reader(&self) -> Result<PoolConnection<Sqlite>, StoreError> {
        Ok(self.reader.acquire().await?)
    }

    async fn shut(&self) {
        self.reader.close().await;
        self.writer.close().await;
    }
}

#[async_trait]
impl Conn for SqliteConnection {
    type Row = SqliteRow;

    async fn run(&mut self, sql: Sql<'_>) -> Result<u64, StoreError> {
        Ok(query(sql, Placeholders::Anonymous)
            .execute(self)
            .await?
            .rows_affected())
    }

    async fn fetch(&mut self, sql: Sql<'_>) -> Result<Vec<SqliteRow>, StoreError> {
        Ok(query(sql, Placeholders::Anonymous).fetch_all(self).await?)
    }
}

impl Cells for SqliteRow {
    fn text(&self, index: usize) -> String {
        self.get(index)
    }

    fn opt_text(&self, index: usize) -> Option<String> {
        self.get(index)
    }

    fn int(&self, index: usize) -> i64 {
        self.get(index)
    }

    fn opt_int(&self, index: usize) -> Option<i64> {
        self.get(index)
    }

    fn flag(&self, index: usize) -> bool {
        self.get(index)
    }
}
