//! The PostgreSQL ledger, for production when several instances share the work. It runs the same
//! statements as the SQLite ledger (`super::sql`); what differs is how concurrent writers meet: rows read
//! to be changed are locked in a fixed order, and claims lock the rows they take with
//! `FOR UPDATE SKIP LOCKED`, so that two instances claiming at once take disjoint sets without waiting
//! for each other.

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Postgres, Row, Transaction};

use super::StoreError;
use super::sql::{Backend, Cells, Conn, Dialect, Placeholders, Sql, query};

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

#[async_trait]
impl Backend for PostgresStore {
    type Db = Postgres;

    const DIALECT: Dialect = Dialect::Postgres;

    async fn write(&self) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(self.pool.begin().await?)
    }

    async fn writer(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    async fn reader(&self) -> Result<PoolConnection<Postgres>, StoreError> {
        Ok(self.pool.acquire().await?)
    }

    async fn shut(&self) {
        self.pool.close().await;
    }
}

#[async_trait]
impl Conn for PgConnection {
    type Row = PgRow;

    async fn run(&mut self, sql: Sql<'_>) -> Result<u64, StoreError> {
        Ok(query(sql, Placeholders::Numbered)
            .execute(self)
            .await?
            .rows_affected())
    }

    async fn fetch(&mut self, sql: Sql<'_>) -> Result<Vec<PgRow>, StoreError> {
        Ok(query(sql, Placeholders::Numbered).fetch_all(self).await?)
    }
}

impl Cells for PgRow {
    fn text(&self, index: usize) -> String {
        self.get(index)
    }

    fn opt_text(&self, index: usize) -> Option<String> {
        self.get(index)
    }

    fn int(&self, index: usize) -> i64 {
        self.opt_int(index).unwrap_or_default()
    }

    fn opt_int(&self, index: usize) -> Option<i64> {
        // `INTEGER` columns (attempts) are 32-bit here; times and counts are `BIGINT`.
        match self.try_get::<Option<i64>, _>(index) {
            Ok(value) => value,
            Err(_) => self.get::<Option<i32>, _>(index).map(i64::from),
        }
    }

    fn flag(&self, index: usize) -> bool {
        self.get(index)
    }
}
