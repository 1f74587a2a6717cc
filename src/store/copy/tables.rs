//! The tables `store copy` knows, column by column as the migrations leave them, and the two things the
//! copy does with their rows apart from moving them: the key a page ends on (the resume point) and the
//! content hash of a table (the verification).

/// How a column's values are carried between the two dialects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Text,
    /// INTEGER in SQLite; INTEGER or BIGINT in PostgreSQL. Carried as `i64`.
    Integer,
    /// INTEGER 0/1 in SQLite, BOOLEAN in PostgreSQL. Carried as `i64` 0/1.
    Boolean,
}

/// One table of the ledger: its columns in a fixed order and the columns of its primary key.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    /// The primary key's columns, in the order rows are paged by.
    pub key: &'static [&'static str],
    pub columns: &'static [(&'static str, ColumnKind)],
}

use ColumnKind::{Boolean, Integer, Text};

/// Every table of the ledger (migrations 0001 to 0008; 0008 adds indexes only), in the order they are copied. A table or a column
/// that a later migration adds must be added here: the copy refuses a ledger whose schema differs from
/// this list ([`super::schema_differences`]), and a test compares it with freshly migrated ledgers.
pub const TABLES: &[Table] = &[
    Table {
        name: "dossiers",
        key: &["source_id"],
        columns: &[
            ("source_id", Text),
            ("dossier_code", Text),
            ("raw_hash", Text),
            ("source_updated_at", Integer),
            ("source_agency_id", Text),
            ("unit", Text),
            ("procedure_code", Text),
            ("reception_day", Text),
            ("payload_hash", Text),
            ("state", Text),
            ("reason_code", Text),
            ("reason_detail", Text),
            ("portal_has", Boolean),
            ("accepted_hash", Text),
            ("accepted_at", Integer),
            ("attempts", Integer),
            ("next_attempt_at", Integer),
            ("last_error", Text),
            ("lease_owner", Text),
            ("lease_expires_at", Integer),
            ("first_seen_at", Integer),
            ("changed_at", Integer),
            ("flight_claim", Text),
            ("flight_hash", Text),
            ("recheck", Boolean),
            ("content_checked_at", Integer),
            ("stamped_ahead", Boolean),
        ],
    },
    Table {
        name: "dossier_bodies",
        key: &["source_id"],
        columns: &[
            ("source_id", Text),
            ("raw", Text),
            ("payload", Text),
            ("findings", Text),
            ("redacted_at", Integer),
        ],
    },
    Table {
        name: "progress",
        key: &["source_id", "entry_key"],
        columns: &[
            ("source_id", Text),
            ("entry_key", Text),
            ("payload", Text),
            ("payload_hash", Text),
            ("sent_hash", Text),
            ("state", Text),
            ("attempts", Integer),
            ("next_attempt_at", Integer),
            ("last_error", Text),
            ("lease_owner", Text),
            ("lease_expires_at", Integer),
            ("flight_claim", Text),
            ("flight_hash", Text),
            ("step_at", Text),
        ],
    },
    Table {
        name: "cursors",
        key: &["name"],
        columns: &[("name", Text), ("value", Text), ("updated_at", Integer)],
    },
    Table {
        name: "attempts",
        key: &["id"],
        columns: &[
            ("id", Integer),
            ("at", Integer),
            ("owner", Text),
            ("service", Text),
            ("items", Integer),
            ("outcome", Text),
            ("detail", Text),
            ("duration_ms", Integer),
        ],
    },
    Table {
        name: "reconciliations",
        key: &["run_id", "unit"],
        columns: &[
            ("run_id", Text),
            ("unit", Text),
            ("started_at", Integer),
            ("from_day", Text),
            ("to_day", Text),
            ("source_count", Integer),
            ("ledger_count", Integer),
            ("accepted", Integer),
            ("portal_count", Integer),
            ("missing", Integer),
            ("complete", Boolean),
            ("summary", Text),
        ],
    },
    Table {
        name: "leaders",
        key: &["role"],
        columns: &[("role", Text), ("owner", Text), ("expires_at", Integer)],
    },
];

/// The copy's own marker table in the target: one row per table of [`TABLES`] with the key of the last
/// committed batch. It exists only while a copy is unfinished.
pub const PROGRESS_TABLE: &str = "store_copy_progress";

/// Tables of a ledger's database that are not ledger data: the migrator's own bookkeeping (each side
/// runs its own migrations, whose checksums differ by dialect), the copy's marker, SQLite's counter of
/// AUTOINCREMENT keys (kept by SQLite itself as the `attempts` rows arrive).
pub const NOT_COPIED: &[&str] = &["_sqlx_migrations", PROGRESS_TABLE, "sqlite_sequence"];

/// One page of a table's rows, column by column (the order of [`Table::columns`]).
#[derive(Debug, Default)]
pub struct Page {
    pub columns: Vec<ColumnValues>,
    pub rows: usize,
}

/// The values of one column of a page.
#[derive(Debug)]
pub enum ColumnValues {
    Text(Vec<Option<String>>),
    /// Integers and booleans (0/1).
    Integer(Vec<Option<i64>>),
}

/// One value of a primary key (never NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyValue {
    Text(String),
    Integer(i64),
}

impl Table {
    /// The table named `name`, if the copy knows it.
    pub fn named(name: &str) -> Option<&'static Table> {
        TABLES.iter().find(|table| table.name == name)
    }

    /// The column list, comma-separated.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|(name, _)| *name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The key of the page's last row: where the next page starts.
    pub fn last_key(&self, page: &Page) -> Option<Vec<KeyValue>> {
        let last = page.rows.checked_sub(1)?;
        self.key
            .iter()
            .map(|key| {
                let position = self.columns.iter().position(|(name, _)| name == key)?;
                match &page.columns[position] {
                    ColumnValues::Text(values) => values[last].clone().map(KeyValue::Text),
                    ColumnValues::Integer(values) => values[last].map(KeyValue::Integer),
                }
            })
            .collect()
    }
}

/// A key as the progress table stores it: a JSON array of its values.
pub fn key_to_text(key: &[KeyValue]) -> String {
    let values: Vec<serde_json::Value> = key
        .iter()
        .map(|value| match value {
            KeyValue::Text(text) => serde_json::Value::from(text.as_str()),
            KeyValue::Integer(number) => serde_json::Value::from(*number),
        })
        .collect();
    serde_json::Value::Array(values).to_string()
}

/// Reads back a key written by [`key_to_text`]; None when the text is not one.
pub fn key_from_text(text: &str) -> Option<Vec<KeyValue>> {
    let serde_json::Value::Array(values) = serde_json::from_str(text).ok()? else {
        return None;
    };
    values
        .into_iter()
        .map(|value| match value {
            serde_json::Value::String(text) => Some(KeyValue::Text(text)),
            serde_json::Value::Number(number) => number.as_i64().map(KeyValue::Integer),
            _ => None,
        })
        .collect()
}

/// The row count and content hash of a table, the same on both dialects.
///
/// Each row is rendered canonically (per column: NULL as the byte 0; an integer or boolean as 1 then
/// its eight bytes; a text as 2, its length in eight bytes, then its UTF-8 bytes) and hashed with blake3;
/// the table's hash is the sum, modulo 2^128, of the first 16 bytes of its rows' hashes. A sum does not
/// depend on the order rows are read in: PostgreSQL orders text by the database's collation and SQLite
/// by bytes, so the two sides list the same rows in different orders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TableDigest {
    pub rows: u64,
    sum: u128,
}

impl TableDigest {
    /// Adds every row of a page.
    pub fn add_page(&mut self, page: &Page) {
        for row in 0..page.rows {
            let mut hasher = blake3::Hasher::new();
            for column in &page.columns {
                match column {
                    ColumnValues::Text(values) => match &values[row] {
                        None => hasher.update(&[0]),
                        Some(text) => hasher
                            .update(&[2])
                            .update(&(text.len() as u64).to_le_bytes())
                            .update(text.as_bytes()),
                    },
                    ColumnValues::Integer(values) => match values[row] {
                        None => hasher.update(&[0]),
                        Some(number) => hasher.update(&[1]).update(&number.to_le_bytes()),
                    },
                };
            }
            let hash = hasher.finalize();
            let mut first = [0u8; 16];
            first.copy_from_slice(&hash.as_bytes()[..16]);
            self.sum = self.sum.wrapping_add(u128::from_le_bytes(first));
            self.rows += 1;
        }
    }

    /// The hash in hexadecimal.
    pub fn hash_hex(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(texts: Vec<Option<&str>>, numbers: Vec<Option<i64>>) -> Page {
        Page {
            rows: texts.len(),
            columns: vec![
                ColumnValues::Text(texts.into_iter().map(|t| t.map(String::from)).collect()),
                ColumnValues::Integer(numbers),
            ],
        }
    }

    #[test]
    fn the_digest_ignores_row_order_and_tells_null_from_empty_and_zero() {
        let mut forward = TableDigest::default();
        forward.add_page(&page(vec![Some("a"), Some("b")], vec![Some(1), None]));
        let mut backward = TableDigest::default();
        backward.add_page(&page(vec![Some("b"), Some("a")], vec![None, Some(1)]));
        assert_eq!(forward, backward);

        let digest = |text: Option<&str>, number: Option<i64>| {
            let mut digest = TableDigest::default();
            digest.add_page(&page(vec![text], vec![number]));
            digest.hash_hex()
        };
        assert_ne!(digest(None, Some(1)), digest(Some(""), Some(1)));
        assert_ne!(digest(Some("a"), None), digest(Some("a"), Some(0)));
        // Moving a value from one row to another changes the table's hash.
        let mut swapped = TableDigest::default();
        swapped.add_page(&page(vec![Some("a"), Some("b")], vec![None, Some(1)]));
        assert_ne!(forward, swapped);
    }

    #[test]
    fn keys_round_trip_through_their_text() {
        let key = vec![KeyValue::Text("hồ sơ \"1\"".into()), KeyValue::Integer(-7)];
        assert_eq!(key_from_text(&key_to_text(&key)), Some(key));
        assert_eq!(key_from_text("{}"), None);
    }
}
