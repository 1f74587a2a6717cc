//! The commands as an operator runs them on an installed server: the ledger-only commands with a
//! configuration whose secrets are absent (as on a server where they exist only as systemd credentials
//! of the service), the commands that talk to one side asking only for that side's secrets, a
//! configuration error printed once, and the demo stopped by Ctrl-C at any moment.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tthc_sync::commands::demo::demo_settings;
use tthc_sync::sim::FaultLevel;

/// Runs the binary with no secret anywhere in its environment (and `extra` variables); returns (exit
/// code, stdout, stderr).
async fn run_without_secrets(args: &[&str], extra: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_tthc-sync"));
    command.args(args).env_remove("CREDENTIALS_DIRECTORY");
    for (name, _) in std::env::vars() {
        if name.starts_with("TTHC_SYNC__") || name == "TTHC_SYNC_CONFIG" {
            command.env_remove(name);
        }
    }
    command.envs(extra.iter().copied());
    let output = command.output().await.expect("the binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The demo's configuration for a ledger, with every secret line taken out and both sides unreachable.
fn configuration_without_secrets(database: &Path, preflight: bool) -> String {
    let text = demo_settings("http://127.0.0.1:9", "http://127.0.0.1:9", database);
    let mut kept: Vec<&str> = text
        .lines()
        .filter(|line| !line.starts_with("client_secret") && !line.starts_with("password"))
        .collect();
    assert_eq!(
        kept.len() + 2,
        text.lines().count(),
        "the demo configuration has two secrets"
    );
    let preflight_line = format!("[portal]\npreflight = {preflight}");
    let portal = kept
        .iter()
        .position(|line| *line == "[portal]")
        .expect("a [portal] section");
    kept[portal] = &preflight_line;
    kept.join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ledger_only_commands_need_no_secrets_and_the_others_only_their_sides() {
    let (dir, demo) = common::start(
        common::source_config(200, 4, 41, FaultLevel::None),
        common::portal_config(41, FaultLevel::None),
        |_| {},
    )
    .await;
    common::synced(&demo, Duration::from_secs(120)).await;
    let held = demo
        .app
        .store
        .counts()
        .await
        .unwrap()
        .get(tthc_sync::decide::DossierState::Held);
    assert!(
        held > 0,
        "the dataset has held-back dossiers to list and retry"
    );
    let database = demo.app.settings.store.path.clone();
    demo.stop().await.unwrap();
    // The ledger in a 0700 directory, as the service's state directory.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let config_path = dir.path().join("tthc-sync.toml");
    std::fs::write(&config_path, configuration_without_secrets(&database, true)).unwrap();
    let config = config_path.to_str().unwrap();

    for args in [
        vec!["report", "--offline"],
        vec!["report", "--offline", "--format", "csv"],
        vec!["report", "--offline", "--format", "json"],
        vec!["failures"],
        vec!["failures", "--format", "json"],
        vec!["retry"],
        vec!["mappings", "suggest", "--offline"],
        vec!["check-config", "--offline"],
    ] {
        let mut full = args.clone();
        full.extend(["--config", config]);
        let (code, stdout, stderr) = run_without_secrets(&full, &[]).await;
        assert_eq!(code, 0, "{args:?} failed without secrets: {stderr}");
        assert!(!stdout.trim().is_empty(), "{args:?} printed nothing");
        assert!(
            !stderr.contains("secret") && !stderr.contains("password"),
            "{args:?} asked for a secret: {stderr}"
        );
        if args[0] == "retry" {
            assert!(
                stdout.contains(&format!("{held} held back")),
                "retry queued the held-back dossiers: {stdout}"
            );
        }
    }

    // The full check and the commands that talk to both sides name the first secret they lack.
    for args in [vec!["check-config"], vec!["report"], vec!["reconcile"]] {
        let mut full = args.clone();
        full.extend(["--config", config]);
        let (code, _, stderr) = run_without_secrets(&full, &[]).await;
        assert_ne!(code, 0, "{args:?} ran without its secrets");
        assert!(
            stderr.contains("source.client_secret") || stderr.contains("portal.password"),
            "{args:?}: {stderr}"
        );
    }
    // `resync` reads the source: it asks for the source's secret and, with the pre-flight on, the
    // portal's; with the pre-flight off, only the source's.
    let source_secret = [("TTHC_SYNC__SOURCE__CLIENT_SECRET", "s")];
    let resync = [
        "resync",
        "--from",
        "2024-01-01",
        "--to",
        "2024-01-02",
        "--config",
        config,
    ];
    let (code, _, stderr) = run_without_secrets(&resync, &[]).await;
    assert_ne!(code, 0);
    assert!(stderr.contains("source.client_secret"), "{stderr}");
    let (_, _, stderr) = run_without_secrets(&resync, &source_secret).await;
    assert!(stderr.contains("portal.password"), "{stderr}");
    std::fs::write(
        &config_path,
        configuration_without_secrets(&database, false),
    )
    .unwrap();
    let (code, _, stderr) = run_without_secrets(&resync, &source_secret).await;
    assert_ne!(code, 0, "the source is unreachable");
    assert!(
        !stderr.contains("portal.password") && !stderr.contains("no secret given"),
        "resync without the pre-flight needs no portal secret: {stderr}"
    );
    // `mappings suggest` reads the source's catalogs: its secret only (unreachable here, so it lists
    // what holds dossiers back and says why it could not read the catalogs).
    let suggest = ["mappings", "suggest", "--config", config];
    let (code, stdout, stderr) = run_without_secrets(&suggest, &source_secret).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(!stdout.trim().is_empty());
    assert!(!stderr.contains("portal.password"), "{stderr}");
}

#[tokio::test]
async fn a_configuration_error_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("empty.toml");
    std::fs::write(&config_path, "[log]\nlevel = \"info\"\n").unwrap();
    let config = config_path.to_str().unwrap();
    let (code, _, stderr) = run_without_secrets(&["check-config", "--config", config], &[]).await;
    assert_eq!(code, 1);
    assert_eq!(
        stderr.matches("missing configuration field").count(),
        1,
        "printed once: {stderr}"
    );
    assert!(stderr.contains("source"), "{stderr}");
    // A secret file that cannot be read: the key, the path and the reason, each once.
    let with_file = format!(
        "{}\n",
        demo_settings(
            "http://127.0.0.1:9",
            "http://127.0.0.1:9",
            &dir.path().join("l.db")
        )
        .replace(
            "client_secret = \"demo-secret\"",
            "client_secret_file = \"/nonexistent/secret\""
        )
    );
    std::fs::write(&config_path, with_file).unwrap();
    let (code, _, stderr) = run_without_secrets(&["check-config", "--config", config], &[]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("source.client_secret_file"), "{stderr}");
    assert_eq!(
        stderr.matches("No such file or directory").count(),
        1,
        "printed once: {stderr}"
    );
}

/// Starts `tthc-sync demo`, waits for a line of its output that `ready` accepts, sends `signal`, and
/// returns the exit code.
async fn interrupted_demo(ready: impl Fn(&str) -> bool, signal: &str) -> i32 {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tthc-sync"))
        .args([
            "demo",
            "--dossiers",
            "300",
            "--units",
            "4",
            "--faults",
            "none",
            "--status-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the demo starts");
    let pid = child.id().expect("a running child").to_string();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let found = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if ready(&line) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false);
    assert!(found, "the demo printed the awaited line");
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    // Keep reading so that the demo never blocks on a full pipe while it stops.
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the demo stops within a minute")
        .unwrap();
    drain.abort();
    status.code().unwrap_or_else(|| {
        panic!("the demo was killed by a signal instead of stopping: {status:?}")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_stops_cleanly_on_ctrl_c_or_sigterm_at_any_moment() {
    // At once, before the first sync; then while it syncs; then once synced and waiting.
    let started = |line: &str| line.starts_with("tthc-sync demo:");
    let syncing = |line: &str| line.starts_with("đã nhận");
    let waiting = |line: &str| line.contains("Nhấn Ctrl-C để dừng");
    for (moment, ready) in [
        ("before the first sync", &started as &dyn Fn(&str) -> bool),
        ("while syncing", &syncing),
        ("synced", &waiting),
    ] {
        for signal in ["INT", "TERM"] {
            let code = interrupted_demo(ready, signal).await;
            assert_eq!(code, 0, "SIG{signal} {moment}: exit code {code}");
        }
    }
}
