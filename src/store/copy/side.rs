//! One end of a copy, SQLite or PostgreSQL: the few statements the copy needs, written once per dialect
//! (placeholders, casts between INTEGER 0/1 and BOOLEAN, arrays for PostgreSQL's bulk insert).

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Postgres, QueryBuilder, Row, Sqlite};

use super::tables::{
    ColumnKind, ColumnValues, KeyValue, NOT_COPIED, PROGRESS_TABLE, Page, TABLES, Table,
};
use super::{CopyError, Endpoint, TableMarker};
use crate::store::Maintenance;
use crate::store::postgres::PostgresStore;
use crate::store::sql::{Param, Placeholders, Sql, query};
use crate::store::sqlite::SqliteStore;

/// SQLite allows 32,766 bound parameters per statement.
const SQLITE_PARAMETERS: usize = 32_000;

/// An open end of a copy.
pub enum Side {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Side {
    /// Opens the source for reading only: no file is created, no migration runs, nothing is written.
    pub async fn open_source(endpoint: &Endpoint) -> Result<Side, CopyError> {
        match endpoint {
            Endpoint::Sqlite(path) => {
                if !path.is_file() {
                    return Err(CopyError::NoSource(endpoint.describe()));
                }
                let options = SqliteConnectOptions::from_str("sqlite://")?
                    .filename(path)
                    .read_only(true)
                    .busy_timeout(Duration::from_secs(30));
                let pool = SqlitePoolOptions::new()
                    .max_connections(2)
                    .connect_with(options)
                    .await?;
                Ok(Side::Sqlite(pool))
            }
            Endpoint::Postgres(url) => {
                let options =
                    postgres_options(url)?.options([("default_transaction_read_only", "on")]);
                Ok(Side::Postgres(connect_postgres(options).await?))
            }
        }
    }

    /// Opens the target, creating it (SQLite: a file readable by its owner only) and bringing its schema
    /// to this binary's version with the ledger's own migrations.
    pub async fn open_target(endpoint: &Endpoint) -> Result<Side, CopyError> {
        match endpoint {
            Endpoint::Sqlite(path) => {
                SqliteStore::open(path).await?.close().await;
                let options = SqliteConnectOptions::from_str("sqlite://")?
                    .filename(path)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(30));
                let pool = SqlitePoolOptions::new()
                    .max_connections(1)
                    .connect_with(options)
                    .await?;
                Ok(Side::Sqlite(pool))
            }
            Endpoint::Postgres(url) => {
                let options = postgres_options(url)?;
                PostgresStore::connect(options.clone(), 2)
                    .await?
                    .close()
                    .await;
                Ok(Side::Postgres(connect_postgres(options).await?))
            }
        }
    }

    /// The newest migration applied (None: not a ledger at all).
    pub async fn migration_version(&self) -> Result<Option<i64>, CopyError> {
        let tables = self.schema().await?;
        if !tables.contains_key("_sqlx_migrations") {
            return Ok(None);
        }
        let sql = "SELECT MAX(version) FROM _sqlx_migrations WHERE success";
        Ok(match self {
            Side::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
            Side::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
        })
    }

    /// Every table of the database (the schema in use, for PostgreSQL) with its columns, SQLite's own
    /// tables left out.
    pub async fn schema(&self) -> Result<BTreeMap<String, BTreeSet<String>>, CopyError> {
        let pairs: Vec<(String, String)> = match self {
            Side::Sqlite(pool) => sqlx::query_as(
                "SELECT m.name, p.name FROM sqlite_master AS m JOIN pragma_table_info(m.name) AS p \
                     WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite\\_%' ESCAPE '\\'",
            )
            .fetch_all(pool)
            .await?,
            Side::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT table_name::TEXT, column_name::TEXT FROM information_schema.columns \
                     WHERE table_schema = current_schema()",
                )
                .fetch_all(pool)
                .await?
            }
        };
        let mut tables: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (table, column) in pairs {
            tables.entry(table).or_default().insert(column);
        }
        Ok(tables)
    }

    /// The first table of the ledger that holds a row, if any.
    pub async fn first_table_with_rows(&self) -> Result<Option<&'static str>, CopyError> {
        for table in TABLES {
            let sql = AssertSqlSafe(format!("SELECT EXISTS (SELECT 1 FROM {})", table.name));
            let any: bool = match self {
                Side::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
                Side::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await?,
            };
            if any {
                return Ok(Some(table.name));
            }
        }
        Ok(None)
    }

    /// Up to `limit` rows of `table` after the key `after`, in key order.
    pub async fn read_page(
        &self,
        table: &Table,
        after: Option<&[KeyValue]>,
        limit: usize,
    ) -> Result<Page, CopyError> {
        let keys = table.key.join(", ");
        let columns = match self {
            Side::Sqlite(_) => table.column_list(),
            // Integers are read as BIGINT whatever their width, booleans as 0/1.
            Side::Postgres(_) => table
                .columns
                .iter()
                .map(|(name, kind)| match kind {
                    ColumnKind::Text => name.to_string(),
                    ColumnKind::Integer => format!("{name}::BIGINT"),
                    ColumnKind::Boolean => format!("{name}::INT::BIGINT"),
                })
                .collect::<Vec<_>>()
                .join(", "),
        };
        let mut sql = Sql::new(format!("SELECT {columns} FROM {}", table.name));
        if let Some(after) = after {
            sql.push(&format!(" WHERE ({keys}) > "))
                .list(after.iter().map(|value| match value {
                    KeyValue::Text(text) => Param::from(text.as_str()),
                    KeyValue::Integer(number) => Param::from(*number),
                }));
        }
        sql.push(&format!(" ORDER BY {keys} LIMIT ")).bind(limit);
        match self {
            Side::Sqlite(pool) => page_of(
                table,
                &query::<Sqlite>(sql, Placeholders::Anonymous)
                    .fetch_all(pool)
                    .await?,
            ),
            Side::Postgres(pool) => page_of(
                table,
                &query::<Postgres>(sql, Placeholders::Numbered)
                    .fetch_all(pool)
                    .await?,
            ),
        }
    }

    /// The copy's markers, or None when the target holds no copy in progress.
    pub async fn markers(&self) -> Result<Option<Vec<TableMarker>>, CopyError> {
        if !self.schema().await?.contains_key(PROGRESS_TABLE) {
            return Ok(None);
        }
        let sql = AssertSqlSafe(format!(
            "SELECT table_name, source, last_key, rows_copied, finished FROM {PROGRESS_TABLE}"
        ));
        let rows: Vec<(String, String, Option<String>, i64, i64)> = match self {
            Side::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await?,
            Side::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await?,
        };
        Ok(Some(
            rows.into_iter()
                .map(
                    |(table, source, last_key, rows_copied, finished)| TableMarker {
                        table,
                        source,
                        last_key,
                        rows_copied: rows_copied as u64,
                        finished: finished != 0,
                    },
                )
                .collect(),
        ))
    }

    /// Starts a copy from `source` in one transaction: empties the ledger's tables when `empty_first`
    /// (`--force`), then writes a fresh marker per table.
    pub async fn start_copy(&self, source: &str, empty_first: bool) -> Result<(), CopyError> {
        let mut statements = Vec::new();
        if empty_first {
            statements.extend(
                TABLES
                    .iter()
                    .map(|table| format!("DELETE FROM {}", table.name)),
            );
        }
        statements.push(format!("DROP TABLE IF EXISTS {PROGRESS_TABLE}"));
        statements.push(format!(
            "CREATE TABLE {PROGRESS_TABLE} (table_name TEXT PRIMARY KEY NOT NULL, source TEXT NOT NULL, \
             last_key TEXT, rows_copied BIGINT NOT NULL, finished BIGINT NOT NULL)"
        ));
        let insert = format!(
            "INSERT INTO {PROGRESS_TABLE} (table_name, source, last_key, rows_copied, finished) \
             VALUES ($1, $2, NULL, 0, 0)"
        );
        match self {
            Side::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                for statement in statements {
                    sqlx::query(AssertSqlSafe(statement))
                        .execute(&mut *tx)
                        .await?;
                }
                for table in TABLES {
                    sqlx::query(AssertSqlSafe(insert.clone()))
                        .bind(table.name)
                        .bind(source)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            Side::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                for statement in statements {
                    sqlx::query(AssertSqlSafe(statement))
                        .execute(&mut *tx)
                        .await?;
                }
                for table in TABLES {
                    sqlx::query(AssertSqlSafe(insert.clone()))
                        .bind(table.name)
                        .bind(source)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Writes a page of `table` and its marker (the key it ends on, the rows copied so far, whether it
    /// was the table's last) in one transaction.
    pub async fn write_page(
        &self,
        table: &Table,
        page: Page,
        marker: &TableMarker,
    ) -> Result<(), CopyError> {
        let update = AssertSqlSafe(format!(
            "UPDATE {PROGRESS_TABLE} SET last_key = $1, rows_copied = $2, finished = $3 \
             WHERE table_name = $4"
        ));
        match self {
            Side::Sqlite(pool) => {
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let per_statement = (SQLITE_PARAMETERS / table.columns.len()).max(1);
                let mut start = 0;
                while start < page.rows {
                    let end = (start + per_statement).min(page.rows);
                    let mut query: QueryBuilder<Sqlite> = QueryBuilder::new(format!(
                        "INSERT INTO {} ({}) ",
                        table.name,
                        table.column_list()
                    ));
                    query.push_values(start..end, |mut values, row| {
                        for column in &page.columns {
                            match column {
                                ColumnValues::Text(texts) => values.push_bind(texts[row].clone()),
                                ColumnValues::Integer(numbers) => values.push_bind(numbers[row]),
                            };
                        }
                    });
                    query.build().execute(&mut *tx).await?;
                    start = end;
                }
                sqlx::query(update)
                    .bind(&marker.last_key)
                    .bind(marker.rows_copied as i64)
                    .bind(i64::from(marker.finished))
                    .bind(table.name)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Side::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                if page.rows > 0 {
                    let mut arrays = Vec::new();
                    let mut values = Vec::new();
                    for (position, (name, kind)) in table.columns.iter().enumerate() {
                        let parameter = position + 1;
                        match kind {
                            ColumnKind::Text => {
                                arrays.push(format!("${parameter}::TEXT[]"));
                                values.push(format!("batch.{name}"));
                            }
                            ColumnKind::Integer => {
                                arrays.push(format!("${parameter}::BIGINT[]"));
                                values.push(format!("batch.{name}"));
                            }
                            ColumnKind::Boolean => {
                                arrays.push(format!("${parameter}::BIGINT[]"));
                                values.push(format!("(batch.{name} <> 0)"));
                            }
                        }
                    }
                    // OVERRIDING SYSTEM VALUE: the `attempts` ids are copied, not drawn again.
                    let sql = AssertSqlSafe(format!(
                        "INSERT INTO {table_name} ({columns}) OVERRIDING SYSTEM VALUE \
                         SELECT {values} FROM UNNEST({arrays}) AS batch({columns})",
                        table_name = table.name,
                        columns = table.column_list(),
                        values = values.join(", "),
                        arrays = arrays.join(", "),
                    ));
                    let mut query = sqlx::query(sql);
                    for column in page.columns {
                        query = match column {
                            ColumnValues::Text(texts) => query.bind(texts),
                            ColumnValues::Integer(numbers) => query.bind(numbers),
                        };
                    }
                    query.execute(&mut *tx).await?;
                }
                sqlx::query(update)
                    .bind(&marker.last_key)
                    .bind(marker.rows_copied as i64)
                    .bind(i64::from(marker.finished))
                    .bind(table.name)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// After the last page: PostgreSQL's `attempts` ids go on after the highest copied one (SQLite
    /// keeps its AUTOINCREMENT counter itself).
    pub async fn continue_identities(&self) -> Result<(), CopyError> {
        if let Side::Postgres(pool) = self {
            sqlx::query(
                "SELECT setval(pg_get_serial_sequence('attempts', 'id'), \
                 COALESCE((SELECT MAX(id) FROM attempts), 1), \
                 (SELECT MAX(id) FROM attempts) IS NOT NULL)",
            )
            .execute(pool)
            .await?;
        }
        Ok(())
    }

    /// Ends a verified copy: the marker table goes, and the target is an ordinary ledger.
    pub async fn finish_copy(&self) -> Result<(), CopyError> {
        let sql = AssertSqlSafe(format!("DROP TABLE IF EXISTS {PROGRESS_TABLE}"));
        match self {
            Side::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop)?,
            Side::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop)?,
        };
        Ok(())
    }

    /// Rows with a call in flight, per table and lease owner: (table, owner, rows, latest lease end).
    pub async fn flights(&self) -> Result<Vec<super::Flights>, CopyError> {
        let mut flights = Vec::new();
        for table in ["dossiers", "progress"] {
            let sql = AssertSqlSafe(format!(
                "SELECT lease_owner, COUNT(*), MAX(lease_expires_at) FROM {table} \
                 WHERE flight_claim IS NOT NULL GROUP BY lease_owner ORDER BY lease_owner"
            ));
            let rows: Vec<(Option<String>, i64, Option<i64>)> = match self {
                Side::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await?,
                Side::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await?,
            };
            flights.extend(
                rows.into_iter()
                    .map(|(owner, rows, lease_until)| super::Flights {
                        table,
                        owner,
                        rows: rows as u64,
                        lease_until,
                    }),
            );
        }
        Ok(flights)
    }

    /// A live lease on a role (a daemon polling this ledger now): (role, owner, until).
    pub async fn live_leader(&self, now: i64) -> Result<Option<(String, String, i64)>, CopyError> {
        let sql = "SELECT role, owner, expires_at FROM leaders WHERE expires_at > $1 ORDER BY role";
        Ok(match self {
            Side::Sqlite(pool) => sqlx::query_as(sql).bind(now).fetch_optional(pool).await?,
            Side::Postgres(pool) => sqlx::query_as(sql).bind(now).fetch_optional(pool).await?,
        })
    }

    pub async fn close(&self) {
        match self {
            Side::Sqlite(pool) => pool.close().await,
            Side::Postgres(pool) => pool.close().await,
        }
    }
}

/// Tables of the ledger the copy does not know, tables it knows that are missing, and columns that
/// differ, one line each; empty when the schema is the one of [`TABLES`].
pub fn differences(schema: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut found = Vec::new();
    for (table, columns) in schema {
        if NOT_COPIED.contains(&table.as_str()) {
            continue;
        }
        let Some(known) = Table::named(table) else {
            found.push(format!("table {table} is not known to the copy"));
            continue;
        };
        let known_columns: BTreeSet<String> = known
            .columns
            .iter()
            .map(|(name, _)| name.to_string())
            .collect();
        for column in columns.difference(&known_columns) {
            found.push(format!("column {table}.{column} is not known to the copy"));
        }
        for column in known_columns.difference(columns) {
            found.push(format!("column {table}.{column} is missing"));
        }
    }
    for table in TABLES {
        if !schema.contains_key(table.name) {
            found.push(format!("table {} is missing", table.name));
        }
    }
    found
}

/// The options of `url`; without a password in it, the password of the credential `store_password`
/// when the command runs with one (as the service does), else `PGPASSWORD`'s.
fn postgres_options(url: &str) -> Result<PgConnectOptions, CopyError> {
    let options = PgConnectOptions::from_str(url)?.application_name("tthc-sync store copy");
    let in_url = reqwest::Url::parse(url).is_ok_and(|parsed| parsed.password().is_some());
    let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(|directory| std::path::Path::new(&directory).join(STORE_PASSWORD_CREDENTIAL))
        .filter(|path| path.is_file());
    match credential {
        Some(path) if !in_url => {
            let password = std::fs::read_to_string(&path)
                .map_err(|source| CopyError::Credential { source })?;
            Ok(options.password(password.trim_end_matches(['\n', '\r'])))
        }
        _ => Ok(options),
    }
}

/// The systemd credential holding the PostgreSQL password, as for the daemon (`store.password`).
const STORE_PASSWORD_CREDENTIAL: &str = "store_password";

async fn connect_postgres(options: PgConnectOptions) -> Result<PgPool, CopyError> {
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(options)
        .await?)
}

/// Reads a page out of the rows of a query that selected `table`'s columns in order (integers and
/// booleans as 64-bit integers).
fn page_of<R: Row>(table: &Table, rows: &[R]) -> Result<Page, CopyError>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut columns: Vec<ColumnValues> = table
        .columns
        .iter()
        .map(|(_, kind)| match kind {
            ColumnKind::Text => ColumnValues::Text(Vec::with_capacity(rows.len())),
            ColumnKind::Integer | ColumnKind::Boolean => {
                ColumnValues::Integer(Vec::with_capacity(rows.len()))
            }
        })
        .collect();
    for row in rows {
        for (position, ((name, _), values)) in
            table.columns.iter().zip(columns.iter_mut()).enumerate()
        {
            let decoded = match values {
                ColumnValues::Text(texts) => row.try_get(position).map(|value| texts.push(value)),
                ColumnValues::Integer(numbers) => {
                    row.try_get(position).map(|value| numbers.push(value))
                }
            };
            decoded.map_err(|source| CopyError::Column {
                table: table.name,
                column: name,
                source,
            })?;
        }
    }
    Ok(Page {
        columns,
        rows: rows.len(),
    })
}
