//! No personal data in clear outside the portal payload: a dataset with known names, identity numbers,
//! phones, e-mails and free texts is synced by the real binary with debug logging, and the logs and the
//! output of every command an operator runs on it are searched for each value.

use crate::common;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tthc_sync::commands::demo::{Demo, check_portal, demo_settings};
use tthc_sync::normalize::MappingTables;
use tthc_sync::sim::FaultLevel;
use tthc_sync::sim::source::SourceFaults;

use common::leak::PersonalData;
use common::{Daemon, eventually, run_binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn personal_data_appears_in_clear_in_no_log_and_no_output() {
    let shutdown = CancellationToken::new();
    // Realistic data (bad records, TCVN3 names, messy phones) and a realistic portal (refusals, retries,
    // errors): rejections and error paths are where values tend to slip out. The source's transport
    // quirks add nothing here but waiting.
    let mut source_config = common::source_config(800, 10, 21, FaultLevel::Realistic);
    source_config.faults = SourceFaults::none();
    source_config.generator.tie_block = 0;
    source_config.live_mutation = false;
    let (source, source_address) = Demo::serve_source(source_config, &shutdown).await.unwrap();
    let (portal, portal_address) =
        Demo::serve_portal(common::portal_config(21, FaultLevel::Realistic), &shutdown)
            .await
            .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("tthc-sync.db");
    let config = format!(
        "{}\n[log]\nlevel = \"debug\"\nformat = \"json\"\n",
        demo_settings(
            &format!("http://{source_address}"),
            &format!("http://{portal_address}"),
            &database,
        )
    );
    let config_path = dir.path().join("tthc-sync.toml");
    std::fs::write(&config_path, config).unwrap();
    let daemon = Daemon::spawn(&config_path, &dir.path().join("daemon.log"));
    let tables = MappingTables::default();
    let synced = eventually(Duration::from_secs(120), || {
        check_portal(&source, &portal, &tables).is_empty()
    })
    .await;
    assert!(
        synced,
        "the sync did not finish; log: {}",
        daemon.log_text()
    );

    let records: Vec<serde_json::Value> = source
        .snapshot()
        .into_iter()
        .map(|row| row.record)
        .collect();
    let mut personal = PersonalData::from_source(&records);
    let stored: Vec<serde_json::Value> = portal
        .stored()
        .into_values()
        .map(|stored| stored.dossier)
        .collect();
    personal.add_portal(&stored);
    assert!(
        personal.len() > 2000,
        "only {} personal values",
        personal.len()
    );
    // The check itself can fail: the portal's copy holds every value in clear.
    let portal_copy = serde_json::to_string(&stored).unwrap();
    assert!(!personal.found_in(&portal_copy, 1).is_empty());

    // The operator's commands on the same data.
    let input = dir.path().join("records.json");
    std::fs::write(&input, serde_json::to_string(&records).unwrap()).unwrap();
    let config_arg = config_path.to_str().unwrap();
    let commands: [&[&str]; 4] = [
        &["mappings", "suggest", "--offline", "--config", config_arg],
        &["normalize", input.to_str().unwrap(), "--config", config_arg],
        &["mappings", "suggest", "--config", config_arg],
        &["check-config", "--config", config_arg],
    ];
    for args in commands {
        let (ok, stdout, stderr) = run_binary(args).await;
        assert!(ok, "{args:?} failed: {stderr}");
        assert!(!stdout.is_empty(), "{args:?} printed nothing");
        personal.assert_absent(&format!("the output of {args:?}"), &stdout);
        personal.assert_absent(&format!("the errors of {args:?}"), &stderr);
    }

    let status = daemon.stop();
    assert!(status.success());
    let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap();
    assert!(log.lines().count() > 20, "the debug log is nearly empty");
    personal.assert_absent("the daemon's debug log", &log);
    shutdown.cancel();
}
