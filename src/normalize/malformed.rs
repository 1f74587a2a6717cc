//! Naming what spoils a `malformed_record` (a record that does not fit the SourceDossier shape) without
//! building a tree of it. An object is read as its keys and borrowed raw values; each value is checked alone
//! against the wire type of its place (`source::wire`), and only the value that does not fit is opened
//! further. Memory follows the record's bytes and its depth, not the number of values it holds.
//!
//! serde's own message quotes the offending value, which may be personal data (an applicant's name where an
//! object was expected), so a finding names the field and the JSON type found instead.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{Finding, Normalized, Outcome, codes, dates};
use crate::source::wire::{LenientString, MAX_LIST_ENTRIES, RawDate, SourceDossier};

/// The record's lists, each of at most [`MAX_LIST_ENTRIES`] entries.
const BOUNDED_LISTS: [&str; 4] = ["fees", "attachments", "supplements", "history"];

/// Values up to this size are checked whole, in one small parse; larger ones are checked part by part, so
/// that a field of many values is never held as a tree.
const WHOLE_CHECK_BYTES: usize = 64 * 1024;

/// What spoils a record: the field, and a detail that quotes no value.
struct Problem {
    field: String,
    detail: String,
}

/// One step of the path from the record to a value.
enum Step {
    Key(String),
    Item(usize),
}

/// A record that does not fit the SourceDossier shape, as a `malformed_record` rejection filed under the
/// identifiers it still has. `error` is what parsing the record said.
pub(super) fn malformed(raw: &[u8], error: &serde_json::Error) -> Normalized {
    let not_json = || Problem {
        field: String::new(),
        detail: format!(
            "not valid JSON ({:?} at line {}, column {})",
            error.classify(),
            error.line(),
            error.column()
        ),
    };
    let mut entries = Vec::new();
    let problem = match std::str::from_utf8(raw) {
        Err(_) => not_json(),
        Ok(text) if !text.trim_start().starts_with('{') => {
            match serde_json::from_str::<IgnoredAny>(text) {
                Ok(_) => Problem {
                    field: String::new(),
                    detail: format!("the record is {}, not an object", kind_of(text)),
                },
                Err(_) => not_json(),
            }
        }
        Ok(text) => match for_each_entry(text, |key, value| {
            entries.push((key, value));
            None
        }) {
            Ok(_) => locate_in_record(&entries).unwrap_or_else(|| Problem {
                field: String::new(),
                detail: format!(
                    "the record does not fit the dossier shape ({:?} at line {}, column {})",
                    error.classify(),
                    error.line(),
                    error.column()
                ),
            }),
            Err(_) => not_json(),
        },
    };
    // As a map would read them: the last of repeated keys counts.
    let last = |name: &str| {
        entries
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| *value)
    };
    let agency_id = last("agency").and_then(|agency| {
        let mut id = None;
        for_each_entry(agency.get(), |key, value| {
            if key == "id" {
                id = text_of(value);
            }
            None
        })
        .ok()?;
        id
    });
    Normalized {
        source_id: last("id").and_then(text_of),
        dossier_code: last("code").and_then(text_of),
        source_agency_id: agency_id,
        unit: None,
        procedure_code: None,
        reception_day: None,
        updated_at: last("updatedDate")
            .and_then(|date| serde_json::from_str::<RawDate>(date.get()).ok())
            .and_then(|date| dates::SourceTime::parse(&date))
            .map(|time| time.timestamp()),
        outcome: Outcome::Rejected(vec![Finding {
            code: codes::MALFORMED_RECORD,
            field: problem.field,
            detail: problem.detail,
            value: None,
        }]),
        warnings: Vec::new(),
    }
}

/// A string or number as text (strings trimmed), as the identifying fields are read leniently.
fn text_of(raw: &RawValue) -> Option<String> {
    let value: LenientString = serde_json::from_str(raw.get()).ok()?;
    Some(value.as_text().trim().to_owned())
}

/// The first problem of the record's top level, in document order (the order serde meets them in).
fn locate_in_record(entries: &[(Cow<'_, str>, &RawValue)]) -> Option<Problem> {
    let mut seen = HashSet::new();
    for (key, value) in entries {
        if !seen.insert(key.as_ref()) && !fits_twice_in_record(key) {
            return Some(duplicate(key));
        }
        if key == "id" {
            if !value.get().starts_with('"') {
                return Some(Problem {
                    field: "id".to_owned(),
                    detail: format!("`id` is {}, not a string", kind_of(value.get())),
                });
            }
            continue;
        }
        let mut path = vec![Step::Key(key.clone().into_owned())];
        if let Some(problem) = locate(&mut path, value.get()) {
            return Some(problem);
        }
    }
    (!seen.contains("id")).then(|| Problem {
        field: "id".to_owned(),
        detail: "the record has no `id`".to_owned(),
    })
}

/// The first problem of the value `text` at `path`; `None` when it fits.
fn locate(path: &mut Vec<Step>, text: &str) -> Option<Problem> {
    let small = text.len() <= WHOLE_CHECK_BYTES;
    if small && fits(path, text) {
        return None;
    }
    // A small value that does not fit is the problem itself unless a part of it is; a large one is
    // opened straight away and fits when none of its parts is a problem.
    let inner = match text.as_bytes().first() {
        Some(b'{') if fits(path, "{}") => locate_in_object(path, text),
        Some(b'[') if fits(path, "[]") => locate_in_array(path, text),
        Some(b'{' | b'[') => return Some(shape(path, text)),
        _ if small || !fits(path, text) => return Some(shape(path, text)),
        _ => return None,
    };
    match inner {
        Some(problem) => Some(problem),
        None if small => Some(shape(path, text)),
        None => None,
    }
}

fn locate_in_object(path: &mut Vec<Step>, text: &str) -> Option<Problem> {
    let mut seen = HashSet::new();
    for_each_entry(text, |key, value| {
        path.push(Step::Key(key.clone().into_owned()));
        let problem = if seen.contains(&key) && !fits_twice(path) {
            Some(duplicate(&field_name(path)))
        } else {
            locate(path, value.get())
        };
        path.pop();
        seen.insert(key);
        problem
    })
    .ok()
    .flatten()
}

fn locate_in_array(path: &mut Vec<Step>, text: &str) -> Option<Problem> {
    // The record's lists are bounded (`source::wire::MAX_LIST_ENTRIES`): past the bound, the list itself
    // is the problem, whatever its entries hold.
    let bounded =
        matches!(path.as_slice(), [Step::Key(key)] if BOUNDED_LISTS.contains(&key.as_str()));
    for_each_item(text, |index, item| {
        if bounded && index == MAX_LIST_ENTRIES {
            let field = field_name(path);
            return Some(Problem {
                detail: format!("`{field}` has more than {MAX_LIST_ENTRIES} entries"),
                field,
            });
        }
        path.push(Step::Item(index));
        let problem = locate(path, item.get());
        path.pop();
        problem
    })
    .ok()
    .flatten()
}

fn duplicate(field: &str) -> Problem {
    Problem {
        field: field.to_owned(),
        detail: format!("`{field}` appears twice"),
    }
}

fn shape(path: &[Step], text: &str) -> Problem {
    let field = field_name(path);
    Problem {
        detail: format!(
            "`{field}` does not have the expected shape (found {})",
            kind_of(text)
        ),
        field,
    }
}

/// `fees[1].amount`.
fn field_name(path: &[Step]) -> String {
    let mut name = String::new();
    for step in path {
        match step {
            Step::Key(key) if name.is_empty() => name.push_str(key),
            Step::Key(key) => {
                name.push('.');
                name.push_str(key);
            }
            Step::Item(index) => name.push_str(&format!("[{index}]")),
        }
    }
    name
}

/// The JSON type of a value's text, from its first byte.
fn kind_of(text: &str) -> &'static str {
    match text.trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// Whether `value` fits at `path` in an otherwise empty record with a valid id. The path leads through
/// arrays as their only item: an item's type does not depend on its index.
fn fits(path: &[Step], value: &str) -> bool {
    let mut text = String::with_capacity(value.len() + 64);
    text.push_str("{\"id\":\"\",");
    let mut closing = Vec::with_capacity(path.len());
    for (depth, step) in path.iter().enumerate() {
        match step {
            Step::Key(key) => {
                if depth > 0 {
                    text.push('{');
                    closing.push('}');
                }
                text.push_str(&serde_json::to_string(key).unwrap_or_default());
                text.push(':');
            }
            Step::Item(_) => {
                text.push('[');
                closing.push(']');
            }
        }
    }
    text.push_str(value);
    text.extend(closing.iter().rev());
    text.push('}');
    serde_json::from_str::<SourceDossier>(&text).is_ok()
}

/// Whether the object holding the last key of `path` may hold that key twice (an unknown key may).
fn fits_twice(path: &[Step]) -> bool {
    let Some((Step::Key(key), parent)) = path.split_last() else {
        return true;
    };
    let key = serde_json::to_string(key).unwrap_or_default();
    fits(parent, &format!("{{{key}:null,{key}:null}}"))
}

/// Whether the record may hold `key` twice at its top level (an unknown key may).
fn fits_twice_in_record(key: &str) -> bool {
    let key = serde_json::to_string(key).unwrap_or_default();
    serde_json::from_str::<SourceDossier>(&format!("{{\"id\":\"\",{key}:null,{key}:null}}")).is_ok()
}

/// Calls `each` on every key and raw value of the object `text`, in order, until it names a problem; the
/// rest of the object is still read through, so that the whole of `text` is checked as JSON.
fn for_each_entry<'a>(
    text: &'a str,
    each: impl FnMut(Cow<'a, str>, &'a RawValue) -> Option<Problem>,
) -> Result<Option<Problem>, serde_json::Error> {
    struct Entries<F>(F);
    impl<'de, F: FnMut(Cow<'de, str>, &'de RawValue) -> Option<Problem>> Visitor<'de> for Entries<F> {
        type Value = Option<Problem>;
        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(Key(key)) = map.next_key()? {
                let value: &RawValue = map.next_value()?;
                if found.is_none() {
                    found = (self.0)(key, value);
                }
            }
            Ok(found)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let found = deserializer.deserialize_map(Entries(each))?;
    deserializer.end()?;
    Ok(found)
}

/// Calls `each` on every item of the array `text`, as [`for_each_entry`] does on an object's entries.
fn for_each_item<'a>(
    text: &'a str,
    each: impl FnMut(usize, &'a RawValue) -> Option<Problem>,
) -> Result<Option<Problem>, serde_json::Error> {
    struct Items<F>(F);
    impl<'de, F: FnMut(usize, &'de RawValue) -> Option<Problem>> Visitor<'de> for Items<F> {
        type Value = Option<Problem>;
        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("an array")
        }
        fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            let mut index = 0;
            while let Some(item) = seq.next_element::<&RawValue>()? {
                if found.is_none() {
                    found = (self.0)(index, item);
                }
                index += 1;
            }
            Ok(found)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let found = deserializer.deserialize_seq(Items(each))?;
    deserializer.end()?;
    Ok(found)
}

/// An object's key, borrowed from the text unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a key")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, key: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}
