//! Reconciliation per unit against the simulators, through the operators' commands:
//! - unit A's procedure codes are unmapped (held back: `unmapped_procedure`);
//! - unit B's code is unknown to the portal (held back by the pre-flight: `unit_unknown_to_portal`);
//! - unit C met a portal outage that retries absorbed;
//! - unit D is clean;
//! - the source hides some dossiers from its feed, which only its counts reveal.
//!
//! The report names exactly A and B as failing, with the source's counts and the reasons; C and D are
//! complete; `reconcile` finds the hidden dossiers and they are synced. After A's mapping is fixed and
//! reloaded and B is added to the portal, `retry` queues them and the next report shows every unit
//! complete. Every report format, the failure list and the reconciliation log pass the personal-data
//! leak check; CSV and xlsx carry the same rows.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use calamine::{Reader, Xlsx};
use serde_json::Value;
use tthc_sync::commands::demo::demo_settings;
use tthc_sync::sim::FaultLevel;
use tthc_sync::sim::source::SourceFaults;

use common::leak::PersonalData;
use common::run_binary;

const A: &str = "ag-001";
const B: &str = "ag-002";

fn counted(record: &Value) -> bool {
    record["deletedDate"].is_null() && record["dossierStatus"]["id"] != 11
}

async fn json_report(config: &str) -> Value {
    let (ok, stdout, stderr) = run_binary(&[
        "report",
        "--config",
        config,
        "--format",
        "json",
        "--from",
        "2000-01-01",
    ])
    .await;
    assert!(ok, "report failed: {stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("the report is JSON");
    assert_valid(&report);
    report
}

/// Validates a document against `docs/{name}.schema.json`, its documented schema; returns the validator.
fn assert_matches_schema(name: &str, document: &Value) -> jsonschema::Validator {
    let path = format!("{}/docs/{name}.schema.json", env!("CARGO_MANIFEST_DIR"));
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the schema is valid JSON Schema");
    let errors: Vec<String> = validator
        .iter_errors(document)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the {name} breaks its schema: {errors:#?}"
    );
    validator
}

/// Validates a report against `docs/report.schema.json`, the documented schema.
fn assert_valid(report: &Value) {
    let validator = assert_matches_schema("report", report);
    // The check can fail: a count of the wrong type is refused.
    let mut broken = report.clone();
    if let Some(line) = broken["units"].get_mut(0) {
        line["ledger"]["accepted"] = Value::from("many");
        assert!(!validator.is_valid(&broken));
    }
}

fn unit<'a>(report: &'a Value, code: &str) -> &'a Value {
    report["units"]
        .as_array()
        .unwrap()
        .iter()
        .find(|line| line["unit"] == code)
        .unwrap_or_else(|| panic!("no line for {code} in {report:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_report_names_the_failing_units_and_retry_completes_them() {
    let mut source_config = common::source_config(800, 4, 31, FaultLevel::Realistic);
    source_config.faults = SourceFaults {
        hidden_rows: true,
        ..SourceFaults::none()
    };
    source_config.generator.bad_share = 0.0;
    source_config.generator.tie_block = 0;
    source_config.generator.hidden_share = 0.05;
    source_config.generator.null_code_agencies = 0;
    let dir = tempfile::tempdir().unwrap();
    let tables_path = dir.path().join("mapping.toml");
    std::fs::write(&tables_path, "# nothing mapped yet\n").unwrap();
    let tables_for_app = tables_path.clone();
    // The scenario is shaped before the daemon reads anything: A's dossiers carry local procedure codes
    // without a national prefix; B's unit is not in the portal's catalog; the portal is down at first.
    let demo = tthc_sync::commands::demo::Demo::start_prepared(
        source_config,
        common::portal_config(31, FaultLevel::None),
        &dir.path().join("tthc-sync.db"),
        |source, portal| {
            let rewritten = source.rewrite(|record| {
                if record["agency"]["id"] != A {
                    return false;
                }
                let code = record["procedure"]["code"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                record["procedure"]["code"] = Value::from(format!("A-LOCAL.{}", &code[..8]));
                true
            });
            assert!(rewritten > 0);
            let b_code = source
                .agencies()
                .into_iter()
                .find(|agency| agency.id == B)
                .and_then(|agency| agency.code)
                .unwrap();
            let known: HashSet<String> = source
                .agencies()
                .into_iter()
                .filter_map(|agency| agency.code)
                .filter(|code| *code != b_code)
                .collect();
            portal.set_known_units(Some(known));
            portal.set_outage(true);
        },
        move |settings| settings.mapping.tables_file = Some(tables_for_app),
    )
    .await
    .unwrap();
    let rows = demo.source.snapshot();
    let code_of = |agency: &str| {
        rows.iter()
            .find(|row| row.record["agency"]["id"] == agency)
            .map(|row| row.record["agency"]["code"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let units: BTreeMap<String, String> = ["ag-001", "ag-002", "ag-003", "ag-004"]
        .iter()
        .map(|agency| ((*agency).to_owned(), code_of(agency)))
        .collect();
    let at_source = |agency: &str| {
        rows.iter()
            .filter(|row| row.record["agency"]["id"] == agency && counted(&row.record))
            .count() as i64
    };
    let hidden = rows
        .iter()
        .filter(|row| row.hidden && counted(&row.record))
        .count();
    assert!(hidden > 0, "the scenario needs hidden dossiers");
    let known: HashSet<String> = units
        .iter()
        .filter(|(agency, _)| agency.as_str() != B)
        .map(|(_, code)| code.clone())
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    demo.portal.set_outage(false);
    common::synced(&demo, Duration::from_secs(120)).await;

    let config_path = dir.path().join("tthc-sync.toml");
    std::fs::write(
        &config_path,
        format!(
            "{}\n[mapping]\ntables_file = {:?}\n",
            demo_settings(
                &demo.app.settings.source.base_url,
                &demo.app.settings.portal.base_url,
                &demo.app.settings.store.path,
            ),
            tables_path.display().to_string()
        ),
    )
    .unwrap();
    let config = config_path.to_str().unwrap();

    // Reconciliation finds the hidden dossiers (the source's counts reveal them) and queues them.
    let (ok, stdout, stderr) =
        run_binary(&["reconcile", "--config", config, "--from", "2000-01-01"]).await;
    assert!(ok, "reconcile failed: {stderr}");
    assert!(
        stdout.contains(&format!("{hidden} hồ sơ chưa từng nhận được")),
        "reconcile should fetch the {hidden} hidden dossiers:\n{stdout}"
    );
    common::synced(&demo, Duration::from_secs(60)).await;

    let report = json_report(config).await;
    assert_eq!(report["schema"], "tthc-sync.report/1");
    let failing: Vec<&str> = report["units"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|line| line["complete"] == false)
        .map(|line| line["unit"].as_str().unwrap())
        .collect();
    let (a, b) = (&units[A], &units[B]);
    let mut failing_sorted = failing.clone();
    failing_sorted.sort();
    let mut expected = vec![a.as_str(), b.as_str()];
    expected.sort();
    assert_eq!(
        failing_sorted, expected,
        "exactly A and B fail:\n{report:#}"
    );
    // A: every dossier held back for its procedure codes.
    let line = unit(&report, a);
    assert_eq!(line["source_count"], at_source(A), "{line:#}");
    assert_eq!(line["ledger"]["accepted"], 0, "{line:#}");
    assert_eq!(line["ledger"]["held"], at_source(A), "{line:#}");
    assert_eq!(line["reasons"][0]["code"], "unmapped_procedure", "{line:#}");
    assert_eq!(line["reasons"][0]["count"], at_source(A));
    assert_eq!(
        line["reasons"][0]["message_vi"],
        "Chưa ánh xạ mã thủ tục hành chính"
    );
    assert_eq!(line["completeness"], 0.0);
    // B: none on the portal, for one reason: the unit is unknown to it. The pre-flight holds back what
    // it could check; what it could not (the portal was down when the catalog was due) the portal
    // refused with code 5. Both are counted, with the operator's words.
    let line = unit(&report, b);
    assert_eq!(line["source_count"], at_source(B), "{line:#}");
    assert_eq!(line["ledger"]["accepted"], 0, "{line:#}");
    let reasons: i64 = line["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|reason| {
            assert!(
                ["unit_unknown_to_portal", "portal_5"].contains(&reason["code"].as_str().unwrap()),
                "{line:#}"
            );
            reason["count"].as_i64().unwrap()
        })
        .sum();
    assert_eq!(reasons, at_source(B), "{line:#}");
    assert_eq!(line["completeness"], 0.0);
    for agency in ["ag-003", "ag-004"] {
        let line = unit(&report, &units[agency]);
        assert_eq!(line["complete"], true, "{agency}: {line:#}");
        assert_eq!(line["source_count"], at_source(agency));
        assert_eq!(line["ledger"]["accepted"], at_source(agency));
        assert_eq!(line["completeness"], 1.0);
        assert!(line["indicators"]["current"]["on_time"].is_object());
    }

    // Every output an operator forwards, checked for personal data; CSV and xlsx carry the same rows.
    let records: Vec<Value> = rows.iter().map(|row| row.record.clone()).collect();
    let mut personal = PersonalData::from_source(&records);
    let stored: Vec<Value> = demo
        .portal
        .stored()
        .into_values()
        .map(|s| s.dossier)
        .collect();
    personal.add_portal(&stored);
    let xlsx_path = dir.path().join("report.xlsx");
    let xlsx_arg = xlsx_path.to_str().unwrap();
    for (args, what) in [
        (vec!["report", "--format", "table"], "report table"),
        (
            vec!["report", "--format", "csv", "--lang", "en"],
            "report csv",
        ),
        (vec!["report", "--format", "json"], "report json"),
        (
            vec!["failures", "--unit", a.as_str(), "--format", "table"],
            "failures table",
        ),
        (vec!["failures", "--format", "json"], "failures json"),
        (vec!["failures", "--format", "csv"], "failures csv"),
    ] {
        let mut full = args.clone();
        full.extend(["--config", config]);
        let (ok, stdout, stderr) = run_binary(&full).await;
        assert!(ok, "{what} failed: {stderr}");
        assert!(!stdout.trim().is_empty(), "{what} printed nothing");
        personal.assert_absent(what, &stdout);
        if what == "failures json" {
            let failures: Value = serde_json::from_str(&stdout).unwrap();
            assert!(!failures["dossiers"].as_array().unwrap().is_empty());
            let validator = assert_matches_schema("failures", &failures);
            let mut broken = failures.clone();
            broken["dossiers"][0]["state"] = Value::from("lost");
            assert!(!validator.is_valid(&broken));
        }
    }
    let (ok, csv_text, _) = run_binary(&[
        "report",
        "--config",
        config,
        "--format",
        "csv",
        "--from",
        "2000-01-01",
    ])
    .await;
    assert!(ok);
    let (ok, _, stderr) = run_binary(&[
        "report",
        "--config",
        config,
        "--format",
        "xlsx",
        "--from",
        "2000-01-01",
        "--output",
        xlsx_arg,
    ])
    .await;
    assert!(ok, "xlsx failed: {stderr}");
    let mut workbook: Xlsx<_> = calamine::open_workbook(&xlsx_path).expect("the xlsx opens");
    let sheet_name = workbook.sheet_names()[0].clone();
    let range = workbook.worksheet_range(&sheet_name).unwrap();
    let xlsx_rows: Vec<Vec<String>> = range
        .rows()
        .map(|row| row.iter().map(|cell| cell.to_string()).collect())
        .collect();
    let mut csv_reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = csv_reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(xlsx_rows[0], header, "same columns");
    // A UTF-8 byte order mark first (for Excel on Windows); the csv reader leaves it out of the header.
    assert!(csv_text.starts_with('\u{FEFF}'), "the CSV opens with a BOM");
    let completeness = header
        .iter()
        .position(|title| title == "Tỷ lệ đồng bộ")
        .expect("a completeness column");
    let oldest = header
        .iter()
        .position(|title| title == "Hồ sơ chờ lâu nhất")
        .expect("an oldest-unsent column");
    let csv_rows: Vec<csv::StringRecord> = csv_reader.records().map(Result::unwrap).collect();
    assert_eq!(xlsx_rows.len() - 1, csv_rows.len(), "same number of rows");
    for (xlsx_row, csv_row) in xlsx_rows[1..].iter().zip(&csv_rows) {
        // Units, reasons and counts agree cell for cell (text as text, numbers as numbers).
        assert_eq!(xlsx_row[0], csv_row[0]);
        assert_eq!(xlsx_row[oldest], csv_row[oldest]);
        assert_eq!(
            xlsx_row[3].parse::<f64>().unwrap(),
            csv_row[3].parse::<f64>().unwrap()
        );
        // Completeness: a percent-formatted number in the xlsx, Vietnamese percent text in the CSV.
        if let Ok(share) = xlsx_row[completeness].parse::<f64>() {
            let shown = &csv_row[completeness];
            assert!(shown.ends_with('%'), "{shown}");
            let percent: f64 = shown
                .trim_end_matches('%')
                .replace(',', ".")
                .parse()
                .unwrap();
            assert!(
                (percent / 100.0 - share).abs() < 0.0006,
                "{shown} vs {share}"
            );
        }
        personal.assert_absent("report xlsx", &xlsx_row.join("\t"));
    }
    assert!(xlsx_rows.iter().any(|row| {
        row.iter()
            .any(|cell| cell.contains("Chưa ánh xạ mã thủ tục hành chính"))
    }));
    for entry in std::fs::read_dir(dir.path().join("reconciliation")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(text.lines().count() >= 4, "one line per unit");
        personal.assert_absent("the reconciliation log", &text);
    }

    // A monitoring check sees the gaps.
    let (ok, _, stderr) = run_binary(&[
        "report",
        "--config",
        config,
        "--from",
        "2000-01-01",
        "--fail-on-gaps",
        "--gap-hours",
        "0",
    ])
    .await;
    assert!(!ok, "--fail-on-gaps should fail while A and B have gaps");
    assert!(
        stderr.contains(a.as_str()) && stderr.contains(b.as_str()),
        "{stderr}"
    );

    // The fixes: B added to the portal and `retry` for B; then A's local codes mapped and the tables
    // reloaded, as SIGHUP does. `retry` comes first: a reload makes the running daemon normalize the
    // held-back dossiers again at once, and any of B's it released meanwhile would not be `retry`'s to
    // queue.
    let mut all = known;
    all.insert(b.clone());
    demo.portal.set_known_units(Some(all));
    let (ok, stdout, stderr) = run_binary(&["retry", "--config", config, "--unit", b]).await;
    assert!(ok, "retry failed: {stderr}");
    assert!(
        stdout.contains(&format!("queued {} dossier(s)", at_source(B))),
        "retry should say it queued B's {} dossiers: {stdout}",
        at_source(B)
    );
    let locals: std::collections::BTreeSet<String> = demo
        .source
        .snapshot()
        .iter()
        .filter(|row| row.record["agency"]["id"] == A)
        .map(|row| row.record["procedure"]["code"].as_str().unwrap().to_owned())
        .collect();
    let mut fixed = String::from("[procedures]\n");
    for local in &locals {
        fixed.push_str(&format!("{local:?} = {:?}\n", &local["A-LOCAL.".len()..]));
    }
    std::fs::write(&tables_path, fixed).unwrap();
    assert!(demo.app.reload_tables());
    let mut last = Value::Null;
    for _ in 0..120 {
        last = json_report(config).await;
        if last["complete"] == true {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        last["complete"], true,
        "every unit complete after the fixes:\n{last:#}"
    );

    // The portal loses three of D's dossiers (a restore from an old backup): its count falls short, the
    // next reconciliation confirms the sample on the portal and sends them again.
    let lost: Vec<String> = demo
        .portal
        .stored()
        .into_iter()
        .filter(|(_, stored)| stored.dossier["DonViXuLy"] == units["ag-004"].as_str())
        .map(|(code, _)| code)
        .take(3)
        .collect();
    assert_eq!(demo.portal.forget(&lost), 3);
    let (ok, _, stderr) = run_binary(&[
        "reconcile",
        "--config",
        config,
        "--from",
        "2000-01-01",
        "--unit",
        &units["ag-004"],
    ])
    .await;
    assert!(ok, "reconcile failed: {stderr}");
    let back = common::eventually(Duration::from_secs(30), || {
        let stored = demo.portal.stored();
        lost.iter().all(|code| stored.contains_key(code))
    })
    .await;
    assert!(back, "the dossiers the portal lost should be sent again");

    // A backfill of D's period reads every one of its dossiers again; nothing changed, nothing is queued.
    let today = tthc_sync::app::vietnam_today().to_string();
    let (ok, stdout, stderr) = run_binary(&[
        "resync",
        "--config",
        config,
        "--from",
        "2000-01-01",
        "--to",
        &today,
        "--unit",
        &units["ag-004"],
    ])
    .await;
    assert!(ok, "resync failed: {stderr}");
    let expected = format!("read {0} of {0} dossier(s)", at_source("ag-004"));
    assert!(stdout.contains(&expected), "{stdout}");
    assert!(stdout.contains("0 changed, queued 0"), "{stdout}");

    let (ok, _, _) = run_binary(&[
        "report",
        "--config",
        config,
        "--from",
        "2000-01-01",
        "--fail-on-gaps",
        "--gap-hours",
        "0",
    ])
    .await;
    assert!(ok, "no gaps once everything is on the portal");
    demo.stop().await.unwrap();
}
