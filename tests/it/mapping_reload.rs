//! Mapping gaps held back, then fixed without a restart: dossiers whose agency has no unit code, whose
//! procedure has no national code, or whose unit the portal's catalog does not list are held back (none
//! is sent to be refused); `mappings suggest` names them; an invalid reload is refused and changes
//! nothing; the fixed tables, reloaded with SIGHUP, send every one of them while the process keeps running.

use crate::common;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::Duration;

use jiff::Timestamp;
use tokio_util::sync::CancellationToken;
use tthc_sync::commands::demo::{Demo, check_portal, demo_settings};
use tthc_sync::normalize::{MappingTables, Outcome, normalize_bytes};
use tthc_sync::sim::FaultLevel;

use common::{Daemon, eventually, ledger_file, run_binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unmapped_and_unknown_codes_are_held_then_sent_after_a_sighup_reload() {
    let shutdown = CancellationToken::new();
    let mut source_config = common::source_config(600, 8, 11, FaultLevel::None);
    source_config.generator.bad_share = 0.1;
    source_config.generator.hidden_share = 0.0;
    source_config.generator.tie_block = 0;
    source_config.live_mutation = false;
    let (source, source_address) = Demo::serve_source(source_config, &shutdown).await.unwrap();

    // The units the valid dossiers go to; the portal does not know the busiest one yet.
    let rows = source.snapshot();
    let now = Timestamp::now();
    let mut units: BTreeMap<String, usize> = BTreeMap::new();
    for row in &rows {
        if let Outcome::Dossier(dossier) = normalize_bytes(
            row.record.to_string().as_bytes(),
            &MappingTables::default(),
            now,
        )
        .outcome
        {
            *units
                .entry(dossier.dossier.don_vi_xu_ly.clone())
                .or_default() += 1;
        }
    }
    let (unknown_unit, unknown_count) = units
        .iter()
        .max_by_key(|(_, count)| **count)
        .map(|(unit, count)| (unit.clone(), *count))
        .unwrap();
    let known: HashSet<String> = units
        .keys()
        .filter(|unit| **unit != unknown_unit)
        .cloned()
        .collect();
    let sendable_at_first: usize = units.values().sum::<usize>() - unknown_count;

    let unmapped_agencies: BTreeSet<String> = rows
        .iter()
        .filter(|row| row.bad == Some("unmapped_unit"))
        .map(|row| row.record["agency"]["id"].as_str().unwrap().to_owned())
        .collect();
    let unmapped_procedures: BTreeSet<String> = rows
        .iter()
        .filter(|row| row.bad == Some("unmapped_procedure"))
        .map(|row| row.record["procedure"]["code"].as_str().unwrap().to_owned())
        .collect();
    let held_for_mapping = rows
        .iter()
        .filter(|row| matches!(row.bad, Some("unmapped_unit" | "unmapped_procedure")))
        .count();
    assert!(!unmapped_agencies.is_empty() && !unmapped_procedures.is_empty());

    let mut portal_config = common::portal_config(5, FaultLevel::None);
    portal_config.known_units = Some(known.clone());
    let (portal, portal_address) = Demo::serve_portal(portal_config, &shutdown).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("tthc-sync.db");
    let tables_path = dir.path().join("mapping.toml");
    std::fs::write(&tables_path, "# nothing mapped yet\n").unwrap();
    let config = format!(
        "{}\n[mapping]\ntables_file = {:?}\n",
        demo_settings(
            &format!("http://{source_address}"),
            &format!("http://{portal_address}"),
            &database,
        ),
        tables_path.display().to_string()
    );
    let config_path = dir.path().join("tthc-sync.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut daemon = Daemon::spawn(&config_path, &dir.path().join("daemon.log"));

    // 1. Everything sendable is sent; the gaps are held back with their reasons.
    let mut ledger = Default::default();
    let settled = {
        let mut ok = false;
        for _ in 0..300 {
            ledger = ledger_file(&database).await;
            let unknown_held = ledger
                .values()
                .filter(|(state, reason)| {
                    state == "held" && reason.as_deref() == Some("unit_unknown_to_portal")
                })
                .count();
            if unknown_held == unknown_count && portal.stored_count() == sendable_at_first {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        ok
    };
    assert!(
        settled,
        "expected {unknown_count} dossiers held as unit_unknown_to_portal and {sendable_at_first} on the portal; portal has {}\nlog: {}",
        portal.stored_count(),
        daemon.log_text()
    );
    let reasons_of = |reason: &str| {
        ledger
            .values()
            .filter(|(state, held_for)| state == "held" && held_for.as_deref() == Some(reason))
            .count()
    };
    assert_eq!(
        reasons_of("unmapped_unit") + reasons_of("unmapped_procedure"),
        held_for_mapping
    );
    assert!(
        portal
            .calls()
            .iter()
            .all(|call| !call.item_codes.contains(&5)),
        "the pre-flight should have kept every unknown unit from being sent to be refused"
    );
    assert!(
        portal
            .stored()
            .values()
            .all(|stored| stored.dossier["DonViXuLy"] != unknown_unit.as_str())
    );

    // 2. `mappings suggest` names every gap, as a TOML fragment.
    let (ok, suggested, stderr) = run_binary(&[
        "mappings",
        "suggest",
        "--config",
        config_path.to_str().unwrap(),
    ])
    .await;
    assert!(ok, "mappings suggest failed: {stderr}");
    println!("mappings suggest:\n{suggested}");
    let fragment: toml::Table = toml::from_str(&suggested).expect("the suggestion is TOML");
    let suggested_units = fragment["units"].as_table().unwrap();
    for agency in &unmapped_agencies {
        assert!(
            suggested_units.contains_key(agency),
            "{agency} missing from:\n{suggested}"
        );
    }
    let suggested_procedures = fragment["procedures"].as_table().unwrap();
    for local in &unmapped_procedures {
        assert!(
            suggested_procedures.contains_key(local),
            "{local} missing from:\n{suggested}"
        );
    }
    assert!(
        suggested.contains(&unknown_unit),
        "{unknown_unit} missing from:\n{suggested}"
    );

    // 3. Invalid tables are refused on reload; the daemon keeps its tables and keeps running.
    std::fs::write(&tables_path, "[units]\n\"ag-x\" = \"not-a-unit-code\"\n").unwrap();
    daemon.signal("HUP");
    assert!(
        eventually(Duration::from_secs(20), || daemon
            .log_text()
            .contains("the mapping tables were not reloaded"))
        .await,
        "an invalid reload should be logged; log: {}",
        daemon.log_text()
    );
    assert!(daemon.is_running());

    // 4. The fixed tables, and the portal now knowing the unit: a SIGHUP sends every held dossier.
    let target_unit = known.iter().next().unwrap().clone();
    let national_of: BTreeMap<String, String> = source
        .procedures()
        .into_iter()
        .filter_map(|procedure| Some((procedure.code, procedure.national_code?)))
        .collect();
    let mut fixed = String::from("[units]\n");
    for agency in &unmapped_agencies {
        fixed.push_str(&format!("{agency:?} = {target_unit:?}\n"));
    }
    fixed.push_str("\n[procedures]\n");
    for local in &unmapped_procedures {
        let national = national_of.get(local).map_or("1.004227", String::as_str);
        fixed.push_str(&format!("{local:?} = {national:?}\n"));
    }
    std::fs::write(&tables_path, &fixed).unwrap();
    let fixed_tables = MappingTables::from_toml_str(&fixed).unwrap();
    let mut all_units = known.clone();
    all_units.insert(unknown_unit.clone());
    portal.set_known_units(Some(all_units));
    let pid = daemon.child.id();
    daemon.signal("HUP");

    let synced = eventually(Duration::from_secs(60), || {
        check_portal(&source, &portal, &fixed_tables).is_empty()
    })
    .await;
    let problems = check_portal(&source, &portal, &fixed_tables);
    assert!(
        synced,
        "{} differences after the reload, first: {:?}\nlog: {}",
        problems.len(),
        &problems[..problems.len().min(5)],
        daemon.log_text()
    );
    assert_eq!(
        portal.stored_count(),
        sendable_at_first + unknown_count + held_for_mapping
    );
    assert!(daemon.is_running());
    assert_eq!(daemon.child.id(), pid);
    let log = daemon.log_text();
    assert!(log.contains("mapping tables reloaded"), "log: {log}");
    let status = daemon.stop();
    assert!(
        status.success(),
        "SIGTERM should stop the daemon cleanly: {status:?}"
    );
    shutdown.cancel();
}
