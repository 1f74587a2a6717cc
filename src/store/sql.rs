//! The one description of every statement the ledger runs, and the little each database adds to run it.
//!
//! The ledger's statements are written once ([`super::ingest`], [`super::deliveries`], [`super::reads`],
//! [`super::reconciliation`], [`super::maintenance`]), as [`Sql`]: text in the SQL both SQLite and
//! PostgreSQL speak, with `$n` placeholders (which sqlx's SQLite driver reads too) and the values bound
//! to them. A backend ([`Backend`]: [`super::sqlite`], [`super::postgres`]) only opens connections and
//! transactions, binds [`Param`]s to its driver's query and reads its rows through [`Cells`]. What the
//! dialects force to differ is named in [`Dialect`], and nowhere else.
//!
//! So a guard (the `WHERE` of a guarded write, the decisions in [`crate::decide`] it applies) cannot be
//! fixed on one database and not the other: there is one copy of it.

use std::borrow::Cow;
use std::fmt::Write as _;

use async_trait::async_trait;
use sqlx::database::HasStatementCache;
use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::{AssertSqlSafe, Database, Encode, Transaction, Type};

use super::StoreError;

/// Rows per multi-row statement: SQLite allows 32,766 bound parameters per statement, PostgreSQL 65,535;
/// the widest row binds 17.
pub(super) const ROWS_PER_STATEMENT: usize = 200;

/// Ids per `IN (...)` list.
pub(super) const IDS_PER_STATEMENT: usize = ROWS_PER_STATEMENT * 4;

/// What the two databases' SQL forces to differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    /// One writer at a time (`BEGIN IMMEDIATE` on one connection): rows need no locks.
    Sqlite,
    /// Several instances write at once: rows read to be changed are locked, in a fixed order.
    Postgres,
}

impl Dialect {
    /// ` INDEXED BY index` after a table name (SQLite), for a query that must walk that index: without
    /// statistics SQLite's planner prefers an index with an equality on its first column (such as
    /// `dossiers_state_reason` for `state = 'pending'`) to a partial index walked in order, and then
    /// reads and sorts every pending row to return a hundred. PostgreSQL plans from its statistics.
    pub fn indexed_by(self, index: &str) -> String {
        match self {
            Dialect::Sqlite => format!(" INDEXED BY {index}"),
            Dialect::Postgres => String::new(),
        }
    }

    /// ` FOR UPDATE` after a query whose rows this transaction changes (PostgreSQL); nothing for SQLite,
    /// whose writer holds the whole database.
    pub fn lock_rows(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// ` FOR UPDATE OF table` after a query joining `table` to others, whose rows of `table` this
    /// transaction changes (PostgreSQL); nothing for SQLite.
    pub fn lock_rows_of(self, table: &str) -> String {
        match self {
            Dialect::Sqlite => String::new(),
            Dialect::Postgres => format!(" FOR UPDATE OF {table}"),
        }
    }

    /// ` FOR UPDATE SKIP LOCKED` after a claim's pick (PostgreSQL): two instances claiming at once take
    /// disjoint rows without waiting for each other.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// A statement that makes the writers of source records take turns for the rest of the transaction
    /// (PostgreSQL: a dossier new to the ledger cannot be inserted by two of them at once). SQLite's
    /// writer already holds the whole database.
    pub fn ingest_lock(self) -> Option<&'static str> {
        match self {
            Dialect::Sqlite => None,
            Dialect::Postgres => Some("SELECT pg_advisory_xact_lock(hashtext('tthc-sync ingest'))"),
        }
    }

    /// The text of the top-level member `key` of the JSON text in `column`.
    pub fn json_text(self, column: &str, key: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_extract({column}, '$.{key}')"),
            Dialect::Postgres => format!("({column}::jsonb ->> '{key}')"),
        }
    }

    /// `column`, kept out of the query planner's choice of index (SQLite's unary `+`): for a filter the
    /// primary key serves better than the column's own index.
    pub fn unindexed(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => format!("+{column}"),
            Dialect::Postgres => column.to_string(),
        }
    }
}

/// A value bound to a statement.
#[derive(Debug, Clone)]
pub(super) enum Param<'a> {
    Text(Option<&'a str>),
    OwnedText(Option<String>),
    Int(Option<i64>),
    Flag(bool),
}

impl<'a> From<&'a str> for Param<'a> {
    fn from(value: &'a str) -> Self {
        Param::Text(Some(value))
    }
}

impl<'a> From<&'a String> for Param<'a> {
    fn from(value: &'a String) -> Self {
        Param::Text(Some(value))
    }
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(value: Option<&'a str>) -> Self {
        Param::Text(value)
    }
}

impl<'a> From<&'a Option<String>> for Param<'a> {
    fn from(value: &'a Option<String>) -> Self {
        Param::Text(value.as_deref())
    }
}

impl From<String> for Param<'_> {
    fn from(value: String) -> Self {
        Param::OwnedText(Some(value))
    }
}

impl From<Option<String>> for Param<'_> {
    fn from(value: Option<String>) -> Self {
        Param::OwnedText(value)
    }
}

impl From<i64> for Param<'_> {
    fn from(value: i64) -> Self {
        Param::Int(Some(value))
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(value: Option<i64>) -> Self {
        Param::Int(value)
    }
}

impl From<u32> for Param<'_> {
    fn from(value: u32) -> Self {
        Param::Int(Some(i64::from(value)))
    }
}

impl From<usize> for Param<'_> {
    fn from(value: usize) -> Self {
        Param::Int(Some(i64::try_from(value).unwrap_or(i64::MAX)))
    }
}

impl From<bool> for Param<'_> {
    fn from(value: bool) -> Self {
        Param::Flag(value)
    }
}

/// A statement: its text, with `$n` placeholders, and the values bound to them.
#[derive(Debug, Clone)]
pub(super) struct Sql<'a> {
    text: Cow<'static, str>,
    params: Vec<Param<'a>>,
    /// Whether the driver keeps it prepared: yes for a statement whose text never changes, no for one
    /// whose lists of values make every text new.
    persistent: bool,
}

impl<'a> Sql<'a> {
    /// A statement beginning with `text`.
    pub fn new(text: impl Into<Cow<'static, str>>) -> Self {
        Sql {
            text: text.into(),
            params: Vec::new(),
            persistent: true,
        }
    }

    /// A statement whose text numbers its own placeholders (`$1` may stand more than once), and the values
    /// for them in order.
    pub fn numbered(text: String, params: impl IntoIterator<Item = Param<'a>>) -> Self {
        Sql {
            text: text.into(),
            params: params.into_iter().collect(),
            persistent: true,
        }
    }

    /// Appends text.
    pub fn push(&mut self, text: &str) -> &mut Self {
        self.text.to_mut().push_str(text);
        self
    }

    /// Appends a placeholder for `value`.
    pub fn bind(&mut self, value: impl Into<Param<'a>>) -> &mut Self {
        self.params.push(value.into());
        let number = self.params.len();
        let _ = write!(self.text.to_mut(), "${number}");
        self
    }

    /// Appends `(` and a placeholder for each value, separated by commas, and `)`: an `IN` list. An empty
    /// list reads `(NULL)`, which matches nothing.
    pub fn list<T: Into<Param<'a>>>(&mut self, values: impl IntoIterator<Item = T>) -> &mut Self {
        self.persistent = false;
        self.push("(");
        let mut empty = true;
        for value in values {
            if !empty {
                self.push(", ");
            }
            self.bind(value);
            empty = false;
        }
        self.push(if empty { "NULL)" } else { ")" })
    }

    /// Appends `VALUES (...), (...)`, one tuple per row, `columns` binding each row's values in order.
    pub fn values<R>(
        &mut self,
        rows: impl IntoIterator<Item = R>,
        mut columns: impl FnMut(R, &mut Tuple<'_, 'a>),
    ) -> &mut Self {
        self.persistent = false;
        self.push("VALUES ");
        for (index, row) in rows.into_iter().enumerate() {
            self.push(if index == 0 { "(" } else { ", (" });
            columns(
                row,
                &mut Tuple {
                    sql: self,
                    first: true,
                },
            );
            self.push(")");
        }
        self
    }

    /// The text, the values in placeholder order, and whether the driver keeps it prepared.
    pub fn into_parts(self) -> (Cow<'static, str>, Vec<Param<'a>>, bool) {
        (self.text, self.params, self.persistent)
    }
}

/// One row of a `VALUES` list being written.
pub(super) struct Tuple<'s, 'a> {
    sql: &'s mut Sql<'a>,
    first: bool,
}

impl<'a> Tuple<'_, 'a> {
    pub fn bind(&mut self, value: impl Into<Param<'a>>) -> &mut Self {
        if !self.first {
            self.sql.push(", ");
        }
        self.first = false;
        self.sql.bind(value);
        self
    }
}

/// How a driver wants its placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placeholders {
    /// `$1`, `$2`, ... as written (PostgreSQL).
    Numbered,
    /// `?` each (SQLite): see [`anonymous`].
    Anonymous,
}

/// The driver's query for a statement, its values bound (each backend runs its statements through it).
pub(super) fn query<DB>(
    sql: Sql<'_>,
    placeholders: Placeholders,
) -> Query<'static, DB, DB::Arguments>
where
    DB: Database + HasStatementCache,
    for<'t> Option<&'t str>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<String>: Encode<'t, DB> + Type<DB>,
    for<'t> Option<i64>: Encode<'t, DB> + Type<DB>,
    for<'t> bool: Encode<'t, DB> + Type<DB>,
{
    let (text, params, persistent) = sql.into_parts();
    let (text, params) = match placeholders {
        Placeholders::Numbered => (text, params),
        Placeholders::Anonymous => {
            let (text, params) = anonymous(&text, params);
            (Cow::Owned(text), params)
        }
    };
    let mut query = sqlx::query(AssertSqlSafe(text)).persistent(persistent);
    for param in params {
        query = match param {
            Param::Text(value) => query.bind(value),
            Param::OwnedText(value) => query.bind(value),
            Param::Int(value) => query.bind(value),
            Param::Flag(value) => query.bind(value),
        };
    }
    query
}

/// The text with `?` for each `$n`, and the values in the order the placeholders stand (a `$n` that
/// stands twice is bound twice). SQLite finds a named or numbered parameter by walking the list of the
/// statement's names, and sqlx asks each parameter's name as it binds: a statement of thousands of `$n`
/// (a page of rows) cost the square of their number, most of the daemon's time. Anonymous `?` have no
/// names. A `$` not followed by a digit (a JSON path such as `'$.TrangThaiHoSo'`) is left as it is.
fn anonymous<'a>(text: &str, params: Vec<Param<'a>>) -> (String, Vec<Param<'a>>) {
    let mut out = String::with_capacity(text.len());
    let mut ordered = Vec::with_capacity(params.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        match after[..digits].parse::<usize>() {
            Ok(number) if number >= 1 && number <= params.len() => {
                out.push('?');
                ordered.push(params[number - 1].clone());
            }
            _ => out.push_str(&rest[at..at + 1 + digits]),
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    (out, ordered)
}

/// The columns of a row as the ledger reads them. Both databases give text as text and times as 64-bit
/// integers; flags are `BOOLEAN` in PostgreSQL and 0/1 in SQLite, and [`Cells::flag`] reads either.
pub(super) trait Cells {
    fn text(&self, index: usize) -> String;
    fn opt_text(&self, index: usize) -> Option<String>;
    /// An integer of any width (PostgreSQL's `INTEGER` columns are 32-bit).
    fn int(&self, index: usize) -> i64;
    fn opt_int(&self, index: usize) -> Option<i64>;
    fn flag(&self, index: usize) -> bool;
}

/// A backend's connection, which a transaction dereferences to.
pub(super) type Connection<B> = <<B as Backend>::Db as sqlx::Database>::Connection;

/// A connection the shared statements run on.
#[async_trait]
pub(super) trait Conn: Send {
    type Row: Cells + Send + Sync;

    /// Runs a statement; how many rows it changed.
    async fn run(&mut self, sql: Sql<'_>) -> Result<u64, StoreError>;

    /// Runs a query; its rows.
    async fn fetch(&mut self, sql: Sql<'_>) -> Result<Vec<Self::Row>, StoreError>;
}

/// A database the ledger runs on: how it opens transactions and connections, and its [`Dialect`].
/// Every [`super::Store`] method is written once over it.
#[async_trait]
pub(super) trait Backend: Send + Sync + 'static {
    type Db: Database<Connection: Conn>;

    const DIALECT: Dialect;

    /// A transaction that reads rows, decides, and writes them, with no other writer slipping in
    /// between (SQLite: `BEGIN IMMEDIATE` on the one writing connection; PostgreSQL: the rows read to
    /// be changed are locked, [`Dialect::lock_rows`]).
    async fn write(&self) -> Result<Transaction<'static, Self::Db>, StoreError>;

    /// A connection for a single statement that writes (it commits by itself).
    async fn writer(&self) -> Result<PoolConnection<Self::Db>, StoreError>;

    /// A connection for reads, which do not wait for the writer.
    async fn reader(&self) -> Result<PoolConnection<Self::Db>, StoreError>;

    /// Closes the connections.
    async fn shut(&self);
}

/// Keeps the last of several items with the same key, in their first position. PostgreSQL refuses an
/// `INSERT ... ON CONFLICT DO UPDATE` that touches one row twice, where SQLite applies the rows in order;
/// keeping the last one gives the same result on both (two malformed records with the same content
/// share an id).
pub(super) fn last_wins<'a, T, K: std::hash::Hash + Eq>(
    items: impl IntoIterator<Item = &'a T>,
    key: impl Fn(&'a T) -> K,
) -> Vec<&'a T> {
    let mut position: std::collections::HashMap<K, usize> = std::collections::HashMap::new();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_in_the_order_values_are_bound() {
        let mut sql = Sql::new("SELECT 1 FROM t WHERE a = ");
        sql.bind("x").push(" AND b IN ").list([1_i64, 2, 3]);
        sql.push(" AND c = ").bind(true);
        let (text, params, persistent) = sql.into_parts();
        assert_eq!(
            text,
            "SELECT 1 FROM t WHERE a = $1 AND b IN ($2, $3, $4) AND c = $5"
        );
        assert_eq!(params.len(), 5);
        assert!(!persistent, "a list makes the text vary");
    }

    #[test]
    fn an_empty_list_matches_nothing() {
        let mut sql = Sql::new("SELECT 1 FROM t WHERE a IN ");
        sql.list(Vec::<i64>::new());
        assert_eq!(sql.into_parts().0, "SELECT 1 FROM t WHERE a IN (NULL)");
    }

    #[test]
    fn values_write_one_tuple_per_row() {
        let rows = [("a", 1_i64), ("b", 2)];
        let mut sql = Sql::new("INSERT INTO t (k, v) ");
        sql.values(rows.iter(), |(key, value), tuple| {
            tuple.bind(*key).bind(*value);
        });
        assert_eq!(
            sql.into_parts().0,
            "INSERT INTO t (k, v) VALUES ($1, $2), ($3, $4)"
        );
    }

    #[test]
    fn a_fixed_statement_stays_prepared() {
        let mut sql = Sql::new("SELECT value FROM cursors WHERE name = ");
        sql.bind("x");
        assert!(sql.into_parts().2);
    }

    #[test]
    fn anonymous_placeholders_follow_the_order_they_stand_in() {
        let params = vec![Param::Int(Some(7)), Param::Text(Some("x"))];
        let (text, ordered) = anonymous(
            "SELECT $1 WHERE json_extract(p, '$.TrangThaiHoSo') = $2 OR a < $1 OR b = $12",
            params,
        );
        assert_eq!(
            text,
            "SELECT ? WHERE json_extract(p, '$.TrangThaiHoSo') = ? OR a < ? OR b = $12"
        );
        let ordered: Vec<String> = ordered.iter().map(|param| format!("{param:?}")).collect();
        assert_eq!(
            ordered,
            ["Int(Some(7))", "Text(Some(\"x\"))", "Int(Some(7))"]
        );
    }

    #[test]
    fn the_last_of_a_key_wins_in_the_first_position() {
        let items = [("a", 1), ("b", 2), ("a", 3)];
        let kept = last_wins(&items, |item| item.0);
        assert_eq!(kept, vec![&("a", 3), &("b", 2)]);
    }
}
