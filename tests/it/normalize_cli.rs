//! `tthc-sync normalize` from outside: every fixture's source record through the binary, compared with
//! its expected outcome, rejections and warnings; personal data masked unless asked for, and then the
//! payload byte for byte what the daemon sends.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

fn normalize_cli(input: &Value, extra: &[&str]) -> Vec<Value> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tthc-sync"))
        .args([
            "normalize",
            "--tables",
            "tests/fixtures/normalize/tables.toml",
            "-",
        ])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "normalize failed: {output:?}");
    serde_json::from_slice(&output.stdout).expect("the output is a JSON array")
}

fn fixtures() -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir("tests/fixtures/normalize")
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension().is_some_and(|ext| ext == "json")
                && path.file_name().unwrap() != "tables.json"
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            (
                path.display().to_string(),
                serde_json::from_str(&text).unwrap(),
            )
        })
        .collect()
}

fn codes(items: &Value) -> BTreeSet<String> {
    items
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.get("code").and_then(Value::as_str).map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_fixture_gives_its_expected_outcome_through_the_binary() {
    let fixtures = fixtures();
    let sources: Vec<Value> = fixtures
        .iter()
        .map(|(_, fixture)| fixture["source"].clone())
        .collect();
    let results = normalize_cli(&Value::Array(sources), &[]);
    assert_eq!(results.len(), fixtures.len());
    for ((name, fixture), result) in fixtures.iter().zip(&results) {
        let expect = &fixture["expect"];
        assert_eq!(result["outcome"], expect["outcome"], "{name}");
        if let Some(expected) = expect.get("rejections") {
            let expected: BTreeSet<String> = expected
                .as_array()
                .unwrap()
                .iter()
                .map(|code| code.as_str().unwrap().to_string())
                .collect();
            assert_eq!(codes(&result["rejections"]), expected, "{name}: rejections");
            for rejection in result["rejections"].as_array().unwrap() {
                assert!(
                    rejection["message_vi"].is_string(),
                    "{name}: a Vietnamese message for {rejection}"
                );
            }
        }
        if let Some(expected) = expect.get("warnings") {
            let expected: BTreeSet<String> = expected
                .as_array()
                .unwrap()
                .iter()
                .map(|code| code.as_str().unwrap().to_string())
                .collect();
            assert_eq!(codes(&result["warnings"]), expected, "{name}: warnings");
        }
        if let Some(reason) = expect.get("reason") {
            assert_eq!(&result["reason"], reason, "{name}: reason");
        }
        if let (Some(expected), Some(found)) = (expect.get("dossier"), result.get("dossier")) {
            // Public fields are printed as they are sent; personal ones are masked.
            for key in [
                "MaHoSo",
                "MaTTHC",
                "DonViXuLy",
                "TrangThaiHoSo",
                "NgayTiepNhan",
            ] {
                if let Some(value) = expected.get(key) {
                    assert_eq!(&found[key], value, "{name}: {key}");
                }
            }
            if let Some(name_in_clear) = expected.get("ChuHoSo") {
                assert_ne!(
                    &found["ChuHoSo"], name_in_clear,
                    "{name}: ChuHoSo must be masked"
                );
            }
        }
    }
}

#[test]
fn with_show_personal_data_the_payload_is_byte_for_byte_what_is_sent() {
    let (_, fixture) = fixtures().into_iter().next().unwrap();
    let source = fixture["source"].clone();
    let results = normalize_cli(&source, &["--show-personal-data"]);
    let printed = &results[0]["dossier"];
    assert_eq!(printed["ChuHoSo"], fixture["expect"]["dossier"]["ChuHoSo"]);
    let tables =
        tthc_sync::normalize::MappingTables::load("tests/fixtures/normalize/tables.toml").unwrap();
    let raw = serde_json::to_vec(&source).unwrap();
    let normalized = tthc_sync::normalize::normalize_bytes(&raw, &tables, jiff::Timestamp::now());
    let tthc_sync::normalize::Outcome::Dossier(dossier) = normalized.outcome else {
        panic!("the first fixture is a valid dossier");
    };
    // serde_json keeps the field order (preserve_order), so the compact form of the printed object is
    // the payload's bytes.
    assert_eq!(serde_json::to_vec(printed).unwrap(), dossier.payload);
}
