//! Crash safety: the daemon process is killed with SIGKILL at random moments during a sync and started
//! again; the portal ends up exactly as without kills, and each kill costs at most one batch sent twice.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use tokio_util::sync::CancellationToken;
use tthc_sync::commands::demo::{Demo, check_portal, demo_settings};
use tthc_sync::normalize::MappingTables;
use tthc_sync::sim::FaultLevel;

const KILLS: usize = 6;
const BATCH: usize = 50;

fn spawn_daemon(config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("log file");
    Command::new(env!("CARGO_BIN_EXE_tthc-sync"))
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("the daemon starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_loses_nothing_and_resends_at_most_a_batch_per_kill() {
    let shutdown = CancellationToken::new();
    let mut source_config = common::source_config(3000, 20, 3, FaultLevel::Realistic);
    source_config.live_mutation = false;
    let (source, source_address) = Demo::serve_source(source_config, &shutdown).await.unwrap();
    let (portal, portal_address) =
        Demo::serve_portal(common::portal_config(3, FaultLevel::None), &shutdown)
            .await
            .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("tthc-sync.db");
    let mut config = demo_settings(
        &format!("http://{source_address}"),
        &format!("http://{portal_address}"),
        &database,
    );
    // One batch in flight at a time, so that "one batch per kill" is the bound to check.
    config = config.replace(
        "concurrency = 4",
        &format!("concurrency = 1\nbatch_size = {BATCH}"),
    );
    // Slow enough that the sync (about 240 portal calls) outlasts the kill schedule (at most 9 s).
    config = config.replace("requests_per_second = 200", "requests_per_second = 20");
    let config_path = dir.path().join("tthc-sync.toml");
    std::fs::write(&config_path, config).unwrap();
    let log = dir.path().join("daemon.log");

    let seed: u64 = rand::random();
    println!("kill schedule seed: {seed}");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut kills = 0;
    for _ in 0..KILLS {
        let mut child = spawn_daemon(&config_path, &log);
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        kills += 1;
    }
    let stored_during_kills = portal.stored_count();
    let unfinished_after_kills =
        !check_portal(&source, &portal, &MappingTables::default()).is_empty();

    let mut child = spawn_daemon(&config_path, &log);
    let tables = MappingTables::default();
    let started = Instant::now();
    let mut problems = check_portal(&source, &portal, &tables);
    while !problems.is_empty() && started.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        problems = check_portal(&source, &portal, &tables);
    }
    // A clean stop on SIGTERM, too.
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    shutdown.cancel();

    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        problems.is_empty(),
        "{} differences after {kills} kills, first: {:?}\nlog tail: {}",
        problems.len(),
        &problems[..problems.len().min(10)],
        &log_text[log_text.len().saturating_sub(2000)..]
    );
    assert!(
        status.success(),
        "SIGTERM should stop the daemon cleanly: {status:?}"
    );
    assert!(
        stored_during_kills > 0 && unfinished_after_kills,
        "the kills should have landed mid-sync: {stored_during_kills} stored when the last one fell"
    );
    let sent_twice: usize = portal
        .stored()
        .values()
        .map(|stored| stored.times_stored.saturating_sub(1))
        .sum();
    println!(
        "{kills} kills; dossier versions stored more than once: {sent_twice} (bound {})",
        kills * BATCH
    );
    assert!(
        sent_twice <= kills * BATCH,
        "{sent_twice} dossier versions were sent twice, more than one batch ({BATCH}) per kill ({kills})"
    );
}
