//! Runs every normalization fixture of the spec (copied into `tests/fixtures/normalize/`, 01-19) and the
//! project's own (20 on: fees, phones, the text steps, noncharacters, missing dates) with the
//! comparison rules of its README: listed fields equal, objects in arrays compared by their listed keys,
//! array lengths, `absent`, `dossier_len`, `progress`, rejections and warnings as sets.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde_json::Value;
use tthc_sync::normalize::{Finding, MappingTables, Normalized, Outcome, normalize_bytes};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/normalize");

/// A fixed time of normalization, after every fixture's dates.
fn now() -> Timestamp {
    "2026-11-28T00:00:00+07:00"
        .parse()
        .expect("a valid timestamp")
}

fn tables() -> MappingTables {
    MappingTables::load(Path::new(FIXTURES).join("tables.toml")).expect("fixture tables are valid")
}

fn fixture_paths() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(FIXTURES)
        .expect("fixture directory exists")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or_default();
            name.ends_with(".json") && name.as_bytes().first().is_some_and(u8::is_ascii_digit)
        })
        .collect();
    paths.sort();
    paths
}

/// Compares `actual` against the listed parts of `expected`, pushing one line per difference.
fn compare(path: &str, expected: &Value, actual: Option<&Value>, problems: &mut Vec<String>) {
    match (expected, actual) {
        (_, None) => problems.push(format!("{path}: missing, expected {expected}")),
        (Value::Object(fields), Some(Value::Object(actual_fields))) => {
            for (key, value) in fields {
                compare(
                    &format!("{path}.{key}"),
                    value,
                    actual_fields.get(key),
                    problems,
                );
            }
        }
        (Value::Array(items), Some(Value::Array(actual_items))) => {
            if items.len() != actual_items.len() {
                problems.push(format!(
                    "{path}: {} items, expected {}",
                    actual_items.len(),
                    items.len()
                ));
            }
            for (index, (item, actual_item)) in items.iter().zip(actual_items).enumerate() {
                compare(
                    &format!("{path}[{index}]"),
                    item,
                    Some(actual_item),
                    problems,
                );
            }
        }
        (_, Some(actual)) => {
            if expected != actual {
                problems.push(format!("{path}: {actual}, expected {expected}"));
            }
        }
    }
}

fn codes(findings: &[Finding]) -> BTreeSet<String> {
    findings
        .iter()
        .map(|finding| finding.code.to_owned())
        .collect()
}

fn expected_codes(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Checks one fixture; returns its differences.
fn check_fixture(fixture: &Value, normalized: &Normalized) -> Vec<String> {
    let mut problems = Vec::new();
    let expect = &fixture["expect"];
    let outcome = expect["outcome"].as_str().unwrap_or_default();
    match (&normalized.outcome, outcome) {
        (Outcome::Dossier(portal), "dossier") => {
            let payload: Value =
                serde_json::from_slice(&portal.payload).expect("the payload is JSON");
            if let Some(fields) = expect.get("dossier") {
                compare("dossier", fields, Some(&payload), &mut problems);
            }
            for field in expect
                .get("absent")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let name = field.as_str().unwrap_or_default();
                if payload.get(name).is_some() {
                    problems.push(format!("dossier.{name}: present, expected absent"));
                }
            }
            if let Some(lengths) = expect.get("dossier_len").and_then(Value::as_object) {
                for (name, length) in lengths {
                    let actual = payload
                        .get(name)
                        .and_then(Value::as_str)
                        .map(|text| text.chars().count());
                    if actual.map(|count| count as u64) != length.as_u64() {
                        problems.push(format!("dossier_len.{name}: {actual:?}, expected {length}"));
                    }
                }
            }
            if let Some(progress) = expect.get("progress") {
                let actual: Vec<Value> = portal
                    .progress
                    .iter()
                    .map(|entry| {
                        serde_json::from_slice(&entry.payload).expect("progress payload is JSON")
                    })
                    .collect();
                compare(
                    "progress",
                    progress,
                    Some(&Value::Array(actual)),
                    &mut problems,
                );
            }
            if blake3::hash(&portal.payload).to_hex().as_str() != portal.hash {
                problems.push("hash: not the blake3 of the payload".to_owned());
            }
        }
        (Outcome::Rejected(rejections), "rejected") => {
            let expected = expected_codes(&expect["rejections"]);
            let actual = codes(rejections);
            if expected != actual {
                problems.push(format!("rejections: {actual:?}, expected {expected:?}"));
            }
        }
        (Outcome::Skipped(reason), "skipped") => {
            if Some(reason.code()) != expect["reason"].as_str() {
                problems.push(format!(
                    "reason: {}, expected {}",
                    reason.code(),
                    expect["reason"]
                ));
            }
        }
        (actual, expected) => {
            let shown = match actual {
                Outcome::Dossier(_) => "dossier".to_owned(),
                Outcome::Rejected(findings) => format!("rejected {:?}", codes(findings)),
                Outcome::Skipped(reason) => format!("skipped {}", reason.code()),
            };
            problems.push(format!("outcome: {shown}, expected {expected}"));
        }
    }
    if let Some(warnings) = expect.get("warnings") {
        let expected = expected_codes(warnings);
        let actual = codes(&normalized.warnings);
        if expected != actual {
            problems.push(format!("warnings: {actual:?}, expected {expected:?}"));
        }
    }
    problems
}

/// Personal data of the fixture's applicant must not appear in clear in any finding.
fn check_privacy(fixture: &Value, normalized: &Normalized) -> Vec<String> {
    let applicant = &fixture["source"]["applicant"];
    let secrets: Vec<&str> = [
        "fullname",
        "identityNumber",
        "phone",
        "email",
        "address",
        "taxCode",
    ]
    .iter()
    .filter_map(|key| applicant.get(key).and_then(Value::as_str))
    .chain(fixture["source"]["summary"].as_str())
    .filter(|secret| secret.trim().len() >= 4)
    .collect();
    let rejections = match &normalized.outcome {
        Outcome::Rejected(findings) => findings.as_slice(),
        _ => &[],
    };
    let mut problems = Vec::new();
    for finding in rejections.iter().chain(&normalized.warnings) {
        for secret in &secrets {
            let shown = [
                finding.detail.as_str(),
                finding.value.as_deref().unwrap_or_default(),
            ];
            if shown.iter().any(|text| text.contains(secret.trim())) {
                problems.push(format!(
                    "finding {} on {}: shows personal data in clear",
                    finding.code, finding.field
                ));
            }
        }
    }
    problems
}

#[test]
fn every_fixture_normalizes_as_expected() {
    let tables = tables();
    let paths = fixture_paths();
    // The 19 fixtures of the spec (01-19), then the project's own (20 on), one or more per rule of
    // mapping.md that the spec's do not show.
    let numbered = |number: usize| {
        paths.iter().any(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(&format!("{number:02}-")))
        })
    };
    let missing: Vec<usize> = (1..=33).filter(|number| !numbered(*number)).collect();
    assert!(
        missing.is_empty(),
        "fixtures {missing:?} missing from {FIXTURES}"
    );
    let mut failures = Vec::new();
    for path in &paths {
        let name = path
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default()
            .to_owned();
        let text = std::fs::read_to_string(path).expect("fixture readable");
        let fixture: Value = serde_json::from_str(&text).expect("fixture is JSON");
        let raw = serde_json::to_vec(&fixture["source"]).expect("source serializes");
        let normalized = normalize_bytes(&raw, &tables, now());
        let problems: Vec<String> = check_fixture(&fixture, &normalized)
            .into_iter()
            .chain(check_privacy(&fixture, &normalized))
            .collect();
        failures.extend(
            problems
                .into_iter()
                .map(|problem| format!("{name}: {problem}")),
        );
    }
    assert!(
        failures.is_empty(),
        "fixture differences:\n{}",
        failures.join("\n")
    );
}

#[test]
fn normalizing_a_fixture_twice_gives_the_same_bytes() {
    let tables = tables();
    for path in fixture_paths() {
        let text = std::fs::read_to_string(&path).expect("fixture readable");
        let fixture: Value = serde_json::from_str(&text).expect("fixture is JSON");
        let raw = serde_json::to_vec(&fixture["source"]).expect("source serializes");
        let first = normalize_bytes(&raw, &tables, now());
        let second = normalize_bytes(&raw, &tables, now());
        if let (Outcome::Dossier(first), Outcome::Dossier(second)) =
            (&first.outcome, &second.outcome)
        {
            assert_eq!(first.payload, second.payload, "{}", path.display());
            assert_eq!(first.hash, second.hash);
            let keys: Vec<_> = first
                .progress
                .iter()
                .map(|entry| (&entry.key, &entry.hash))
                .collect();
            let again: Vec<_> = second
                .progress
                .iter()
                .map(|entry| (&entry.key, &entry.hash))
                .collect();
            assert_eq!(keys, again);
        }
    }
}

#[test]
fn identifying_fields_are_filled_for_rejected_records() {
    let tables = tables();
    let text = std::fs::read_to_string(Path::new(FIXTURES).join("18-unknown-procedure-code.json"))
        .expect("readable");
    let fixture: Value = serde_json::from_str(&text).expect("JSON");
    let raw = serde_json::to_vec(&fixture["source"]).expect("serializes");
    let normalized = normalize_bytes(&raw, &tables, now());
    assert!(matches!(normalized.outcome, Outcome::Rejected(_)));
    assert_eq!(normalized.unit.as_deref(), Some("000.00.31.H60"));
    assert_eq!(
        normalized.dossier_code.as_deref(),
        Some("000.00.31.H60-240115-0012")
    );
    assert_eq!(normalized.source_agency_id.as_deref(), Some("ag-031"));
    assert_eq!(
        normalized.reception_day.map(|day| day.to_string()),
        Some("2024-01-15".to_owned())
    );
    assert!(normalized.updated_at.is_some());
    assert_eq!(normalized.procedure_code, None);
}
