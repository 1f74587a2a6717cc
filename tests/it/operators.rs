//! The operators' drill-down, through the real binary on a messy dataset (unmapped agencies, malformed
//! records, every rejection code of the generator):
//! - every line of the report (a unit code, `agency:<id>`, `unknown`) is accepted by `failures --unit`,
//!   which lists exactly that line's held-back and refused dossiers, and by `retry --unit`, which queues
//!   them;
//! - malformed records are listed under the key the report counts them under;
//! - `--actor` selects the reasons of one actor, and every reason carries its actor and next step;
//! - `failures --by-unit --format xlsx --output DIR` writes one correction workbook per failing unit
//!   holding that unit's dossiers, with no personal data in clear;
//! - an unknown unit, reason or dossier is an error with a message, not "queued 0".

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use calamine::{Reader, Xlsx};
use serde_json::Value;
use tthc_sync::commands::demo::demo_settings;
use tthc_sync::sim::FaultLevel;

use common::leak::PersonalData;
use common::run_binary;

async fn json(args: &[&str]) -> Value {
    let (ok, stdout, stderr) = run_binary(args).await;
    assert!(ok, "{args:?} failed: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|error| panic!("{args:?}: {error}\n{stdout}"))
}

fn dossier_codes(failures: &Value) -> BTreeSet<String> {
    failures["dossiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|dossier| dossier["dossier_code"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Every cell of every sheet of a workbook, as text, and the dossier codes of its first column.
fn workbook(path: &std::path::Path) -> (String, BTreeSet<String>, Vec<String>) {
    let mut book: Xlsx<_> = calamine::open_workbook(path).expect("the workbook opens");
    let mut text = String::new();
    let mut codes = BTreeSet::new();
    let names = book.sheet_names().to_vec();
    for name in &names {
        let range = book.worksheet_range(name).unwrap();
        for (index, row) in range.rows().enumerate() {
            for cell in row {
                text.push_str(&cell.to_string());
                text.push('\t');
            }
            text.push('\n');
            if index > 0 {
                codes.insert(row[0].to_string());
            }
        }
    }
    (text, codes, names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_report_line_drills_down_to_its_dossiers() {
    let mut source = common::source_config(700, 8, 47, FaultLevel::None);
    source.generator.bad_share = 0.15;
    let (dir, demo) =
        common::start(source, common::portal_config(47, FaultLevel::None), |_| {}).await;
    common::synced(&demo, Duration::from_secs(120)).await;
    let config_path = dir.path().join("tthc-sync.toml");
    std::fs::write(
        &config_path,
        demo_settings(
            &demo.app.settings.source.base_url,
            &demo.app.settings.portal.base_url,
            &demo.app.settings.store.path,
        ),
    )
    .unwrap();
    let config = config_path.to_str().unwrap();

    let report = json(&[
        "report",
        "--config",
        config,
        "--offline",
        "--format",
        "json",
        "--from",
        "2000-01-01",
    ])
    .await;
    let lines = report["units"].as_array().unwrap();
    let failing: Vec<&Value> = lines
        .iter()
        .filter(|line| {
            line["ledger"]["held"].as_i64().unwrap() + line["ledger"]["refused"].as_i64().unwrap()
                > 0
        })
        .collect();
    assert!(
        failing
            .iter()
            .any(|line| line["unit"].as_str().unwrap().starts_with("agency:")),
        "the dataset needs an unmapped agency: {report:#}"
    );

    // Every line: `failures --unit KEY` lists exactly its held-back and refused dossiers, under its key.
    let mut reasons_by_actor: BTreeMap<String, i64> = BTreeMap::new();
    let mut malformed = 0;
    for line in lines {
        let key = line["unit"].as_str().unwrap();
        let failures = json(&[
            "failures", "--config", config, "--unit", key, "--format", "json",
        ])
        .await;
        let dossiers = failures["dossiers"].as_array().unwrap();
        let expected =
            line["ledger"]["held"].as_i64().unwrap() + line["ledger"]["refused"].as_i64().unwrap();
        assert_eq!(
            dossiers.len() as i64,
            expected,
            "failures --unit {key} against the report's line {line:#}"
        );
        for dossier in dossiers {
            assert_eq!(dossier["unit_key"], key, "{dossier:#}");
            assert!(dossier["next_step_vi"].as_str().unwrap().len() > 5);
        }
        for reason in line["reasons"].as_array().unwrap() {
            // Every reason of the report names its actor and next step.
            let actor = reason["actor"].as_str().unwrap().to_owned();
            assert!(!reason["next_step_vi"].as_str().unwrap().is_empty());
            *reasons_by_actor.entry(actor).or_default() += reason["count"].as_i64().unwrap();
            if reason["code"] == "malformed_record" {
                malformed += reason["count"].as_i64().unwrap();
            }
        }
    }

    // Malformed records are listed, as many as the report counts.
    assert!(malformed > 0, "the dataset needs malformed records");
    let listed = json(&[
        "failures",
        "--config",
        config,
        "--reason",
        "malformed_record",
        "--format",
        "json",
    ])
    .await;
    assert_eq!(
        listed["dossiers"].as_array().unwrap().len() as i64,
        malformed
    );

    // --actor: only that actor's reasons, as many as the report counts for it.
    for (actor, count) in &reasons_by_actor {
        let listed = json(&[
            "failures", "--config", config, "--actor", actor, "--format", "json",
        ])
        .await;
        let dossiers = listed["dossiers"].as_array().unwrap();
        assert_eq!(dossiers.len() as i64, *count, "--actor {actor}");
        assert!(dossiers.iter().all(|dossier| dossier["actor"] == *actor));
    }
    assert!(
        reasons_by_actor.contains_key("unit") && reasons_by_actor.contains_key("administrator")
    );

    // Unknown unit, reason or dossier: a message and a non-zero exit.
    for (args, words) in [
        (
            vec!["failures", "--unit", "999.99.99.H99"],
            "not in the ledger",
        ),
        (
            vec!["failures", "--unit", "agency:no-such-agency"],
            "not in the ledger",
        ),
        (vec!["failures", "--reason", "unmaped_unit"], "unmaped_unit"),
        (
            vec!["retry", "--unit", "999.99.99.H99"],
            "not in the ledger",
        ),
        (
            vec!["retry", "--reason", "no_such_reason"],
            "no_such_reason",
        ),
        (
            vec!["retry", "--dossier", "NO-SUCH-DOSSIER"],
            "not in the ledger",
        ),
        (
            vec!["report", "--offline", "--unit", "999.99.99.H99"],
            "not in the ledger",
        ),
    ] {
        let mut full = args.clone();
        full.extend(["--config", config]);
        let (ok, stdout, stderr) = run_binary(&full).await;
        assert!(!ok, "{args:?} should fail:\n{stdout}");
        assert!(stderr.contains(words), "{args:?}: {stderr}");
        assert!(!stdout.contains("queued"), "{args:?}: {stdout}");
    }

    // One correction workbook per failing unit, holding exactly its dossiers; no personal data.
    let out = dir.path().join("corrections");
    let (ok, stdout, stderr) = run_binary(&[
        "failures",
        "--config",
        config,
        "--by-unit",
        "--format",
        "xlsx",
        "--output",
        out.to_str().unwrap(),
    ])
    .await;
    assert!(ok, "{stderr}");
    let records: Vec<Value> = demo
        .source
        .snapshot()
        .into_iter()
        .map(|row| row.record)
        .collect();
    let personal = PersonalData::from_source(&records);
    let written: Vec<&str> = stdout.lines().collect();
    assert_eq!(written.len(), failing.len(), "{stdout}");
    for line in &failing {
        let key = line["unit"].as_str().unwrap();
        let file = out.join(tthc_sync::report::render::workbook_file_name(key));
        let (text, codes, sheets) = workbook(&file);
        assert_eq!(sheets[0], "Đơn vị cần sửa");
        assert!(text.starts_with("Mã hồ sơ\tNgày tiếp nhận\tTrường thông tin\tLỗi\tCách sửa"));
        let expected = dossier_codes(
            &json(&[
                "failures", "--config", config, "--unit", key, "--format", "json",
            ])
            .await,
        );
        assert_eq!(codes, expected, "workbook of {key}");
        personal.assert_absent(&format!("correction workbook of {key}"), &text);
    }

    // The same key in `reconcile`, `resync` and `/api/v1`.
    let unmapped = failing
        .iter()
        .find(|line| line["unit"].as_str().unwrap().starts_with("agency:"))
        .unwrap();
    let key = unmapped["unit"].as_str().unwrap();
    let (ok, stdout, stderr) = run_binary(&[
        "reconcile",
        "--config",
        config,
        "--from",
        "2000-01-01",
        "--unit",
        key,
    ])
    .await;
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains(key) && stdout.contains("1 đơn vị"),
        "{stdout}"
    );
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
        key,
    ])
    .await;
    assert!(ok, "{stderr}");
    let held = unmapped["ledger"]["held"].as_i64().unwrap();
    let read: i64 = stdout
        .strip_prefix("read ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("resync --unit {key}: {stdout}"));
    assert!(
        read >= held,
        "resync --unit {key} reads its dossiers again: {stdout}"
    );
    let (ok, _, stderr) =
        run_binary(&["reconcile", "--config", config, "--unit", "999.99.99.H99"]).await;
    assert!(!ok && stderr.contains("999.99.99.H99"), "{stderr}");
    let api = reqwest::get(format!(
        "http://{}/api/v1/report?from={}&unit={key}",
        demo.status.address,
        tthc_sync::app::vietnam_today()
            .checked_sub(jiff::Span::new().days(365))
            .unwrap()
    ))
    .await
    .unwrap()
    .json::<Value>()
    .await
    .unwrap();
    let api_units = api["units"].as_array().unwrap();
    assert_eq!(api_units.len(), 1, "{api:#}");
    assert_eq!(api_units[0]["ledger"]["held"], held);

    // `retry --unit KEY` queues that line's dossiers, for an agency key too.
    let (ok, stdout, stderr) = run_binary(&["retry", "--config", config, "--unit", key]).await;
    assert!(ok, "{stderr}");
    assert!(held > 0);
    assert!(
        stdout.contains(&format!("{held} held back to normalize again")),
        "retry --unit {key} should queue its {held} held-back dossiers: {stdout}"
    );
    demo.stop().await.unwrap();
}
