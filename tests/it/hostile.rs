//! Hostile peers (source-api.md quirks 10–14, portal-api.md "Credentials"): the real binary runs against
//! the simulators switched to each hostile behaviour. Nothing valid is lost, the cursor never passes rows
//! it did not see nor the clock plus its allowance, memory stays under its bound (`VmHWM` of the daemon
//! process), and the warnings, metrics and readiness reasons appear.

use crate::common;

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use tokio_util::sync::CancellationToken;
use tthc_sync::commands::demo::{Demo, check_portal, demo_settings};
use tthc_sync::normalize::MappingTables;
use tthc_sync::sim::FaultLevel;
use tthc_sync::sim::portal::PortalSim;
use tthc_sync::sim::source::{CountLie, SourceFaults, SourceSim, SourceSimConfig};

/// Simulators on loopback and a configuration for the daemon binary.
struct Rig {
    shutdown: CancellationToken,
    source: SourceSim,
    portal: PortalSim,
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    status: String,
}

impl Rig {
    /// `edit` shapes the daemon's configuration (the demo's, on the simulators' addresses).
    async fn start(source_config: SourceSimConfig, edit: impl FnOnce(String) -> String) -> Rig {
        let shutdown = CancellationToken::new();
        let (source, source_address) = Demo::serve_source(source_config, &shutdown)
            .await
            .expect("source simulator");
        let (portal, portal_address) =
            Demo::serve_portal(common::portal_config(1, FaultLevel::None), &shutdown)
                .await
                .expect("portal simulator");
        let dir = tempfile::tempdir().expect("temporary directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let config = edit(
            demo_settings(
                &format!("http://{source_address}"),
                &format!("http://{portal_address}"),
                &dir.path().join("tthc-sync.db"),
            )
            .replace(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{port}\""),
            ),
        );
        let path = dir.path().join("tthc-sync.toml");
        std::fs::write(&path, config).expect("configuration written");
        Rig {
            shutdown,
            source,
            portal,
            config: path,
            status: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    fn spawn(&self) -> common::Daemon {
        common::Daemon::spawn(&self.config, &self.dir.path().join("daemon.log"))
    }

    fn problems(&self) -> Vec<String> {
        check_portal(&self.source, &self.portal, &MappingTables::default())
    }

    /// Waits until the portal holds what it should, up to `timeout`; returns the differences left.
    async fn until_synced(&self, timeout: Duration) -> Vec<String> {
        let started = Instant::now();
        loop {
            let problems = self.problems();
            if problems.is_empty() || started.elapsed() > timeout {
                return problems;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    async fn get(&self, path: &str) -> (u16, String) {
        match reqwest::get(format!("{}{path}", self.status)).await {
            Ok(response) => {
                let status = response.status().as_u16();
                (status, response.text().await.unwrap_or_default())
            }
            Err(_) => (0, String::new()),
        }
    }

    /// The value of one metric series (name with labels as exposed), summed over matching lines.
    async fn metric(&self, prefix: &str) -> f64 {
        let (_, text) = self.get("/metrics").await;
        text.lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    async fn cursor(&self) -> Option<Timestamp> {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(self.dir.path().join("tthc-sync.db"))
            .read_only(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.ok()?;
        let value: Option<String> =
            sqlx::query_scalar("SELECT value FROM cursors WHERE name = 'source_feed'")
                .fetch_optional(&pool)
                .await
                .ok()
                .flatten();
        pool.close().await;
        Timestamp::from_millisecond(value?.parse().ok()?).ok()
    }

    fn stop(self, daemon: common::Daemon) -> String {
        let log = daemon.log_text();
        let status = daemon.stop();
        self.shutdown.cancel();
        assert!(status.success(), "the daemon stops cleanly: {status:?}");
        log
    }
}

fn source_config(dossiers: usize, seed: u64) -> SourceSimConfig {
    let mut config = common::source_config(dossiers, 10, seed, FaultLevel::None);
    config.live_mutation = false;
    config
}

/// Peak resident memory of a process, bytes (`VmHWM` in `/proc/PID/status`).
fn peak_memory(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

fn valid_ids(source: &SourceSim, n: usize) -> Vec<(String, String)> {
    source
        .snapshot()
        .into_iter()
        .filter(|row| row.visible_in_feed && row.bad.is_none() && !row.deleted && !row.cancelled)
        .filter_map(|row| Some((row.id, row.record["code"].as_str()?.to_owned())))
        .take(n)
        .collect()
}

const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rows_stamped_in_the_future_do_not_move_the_cursor_past_the_clock() {
    let rig = Rig::start(source_config(300, 21), |text| text).await;
    let daemon = rig.spawn();
    let left = rig.until_synced(Duration::from_secs(120)).await;
    assert!(left.is_empty(), "first sync: {left:?}");

    let future = valid_ids(&rig.source, 2);
    let ids: Vec<String> = future.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        rig.source
            .stamp_ahead(&ids[..1], SignedDuration::from_hours(48)),
        1
    );
    assert_eq!(
        rig.source
            .stamp_ahead(&ids[1..], SignedDuration::from_hours(24 * 365 * 4)),
        1
    );
    // Let a few polls read the future rows, then change ten dossiers now.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let changed = rig.source.mutate_now(10);
    let left = rig.until_synced(Duration::from_secs(60)).await;
    assert!(
        left.is_empty(),
        "the 10 dossiers changed after the future rows were read must reach the portal: {left:?} (changed {changed:?})"
    );
    let cursor = rig.cursor().await.expect("a cursor");
    let bound = Timestamp::now() + SignedDuration::from_secs(300);
    assert!(
        cursor <= bound,
        "the cursor {cursor} must not pass the clock plus the allowance ({bound})"
    );
    let future_rows = rig.metric("tthc_sync_future_stamped_rows_total").await;
    assert!(future_rows >= 2.0, "future rows counted: {future_rows}");
    let versions = rig.metric("tthc_sync_future_stamped_versions_total{").await;
    assert!(
        versions >= 2.0,
        "future versions counted per unit: {versions}"
    );
    // The report, the dashboard and the reconciliation log count them per unit.
    let a_year_ago = tthc_sync::app::vietnam_today()
        .checked_sub(jiff::Span::new().days(365))
        .unwrap();
    let (status, report) = rig.get(&format!("/api/v1/report?from={a_year_ago}")).await;
    assert_eq!(status, 200, "{report}");
    let report: serde_json::Value = serde_json::from_str(&report).expect("report JSON");
    let ahead: i64 = report["units"]
        .as_array()
        .expect("units")
        .iter()
        .map(|unit| unit["stamped_ahead"].as_i64().expect("stamped_ahead"))
        .sum();
    assert_eq!(ahead, 2, "the report counts the two dossiers stamped ahead");
    let (_, dashboard) = rig.get("/?days=90").await;
    assert!(
        dashboard.contains("Hồ sơ có thời điểm cập nhật vượt đồng hồ"),
        "the dashboard names them"
    );
    let reconciled = std::process::Command::new(env!("CARGO_BIN_EXE_tthc-sync"))
        .args([
            "reconcile",
            "--from",
            "2000-01-01",
            "--to",
            "2099-12-31",
            "--config",
        ])
        .arg(&rig.config)
        .output()
        .expect("reconcile runs");
    assert!(
        reconciled.status.success(),
        "reconcile: {}",
        String::from_utf8_lossy(&reconciled.stderr)
    );
    let mut logged = 0;
    for file in std::fs::read_dir(rig.dir.path().join("reconciliation")).expect("the log") {
        let text = std::fs::read_to_string(file.expect("a log file").path()).expect("readable");
        for line in text.lines() {
            let line: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            logged += line["stamped_ahead"].as_i64().expect("stamped_ahead");
        }
    }
    assert_eq!(logged, 2, "the reconciliation log counts them");
    let log = rig.stop(daemon);
    assert!(
        log.contains("stamped ahead of the clock"),
        "a warning names the future rows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_byte_that_is_not_utf8_holds_back_its_record_only() {
    let rig = Rig::start(source_config(300, 22), |text| text).await;
    let (bad_id, bad_code) = valid_ids(&rig.source, 1).remove(0);
    assert!(rig.source.plant_invalid_byte(&bad_id));
    let daemon = rig.spawn();
    let started = Instant::now();
    let expected = vec![format!("missing on the portal: {bad_code}")];
    let mut problems = rig.problems();
    while problems != expected && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        problems = rig.problems();
    }
    assert_eq!(
        problems, expected,
        "every other dossier reaches the portal, the spoiled one does not"
    );
    let ledger = common::ledger_file(&rig.dir.path().join("tthc-sync.db")).await;
    assert_eq!(
        ledger.get(&bad_id),
        Some(&("held".to_owned(), Some("invalid_text".to_owned()))),
        "the spoiled record is held back as invalid_text"
    );
    // Its raw bytes are kept for the operator, the stray byte written as an escape.
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(rig.dir.path().join("tthc-sync.db"))
        .read_only(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let raw: String = sqlx::query_scalar("SELECT raw FROM dossier_bodies WHERE source_id = ?")
        .bind(&bad_id)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert!(raw.contains("\\udcff"), "the byte 0xFF is kept as \\udcff");
    rig.stop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn counts_that_lie_never_end_a_tie_block_early() {
    for (lie, last_lies) in [
        (CountLie::Capped(1000), true),
        (CountLie::Constant(-1), false),
        (CountLie::Constant(i64::MAX), true),
        (CountLie::Missing, false),
    ] {
        let mut config = source_config(1600, 23);
        config.generator.tie_block = 1200;
        config.faults = SourceFaults {
            count_lie: lie,
            last_lies,
            tie_reorder: 0.3,
            duplicates: 0.15,
            ..SourceFaults::none()
        };
        let rig = Rig::start(config, |text| {
            text.replace("[source]\n", "[source]\npage_size = 200\n")
        })
        .await;
        let daemon = rig.spawn();
        let left = rig.until_synced(Duration::from_secs(180)).await;
        assert!(
            left.is_empty(),
            "{lie:?}: {} dossiers not on the portal, e.g. {:?}\n{}",
            left.len(),
            &left[..left.len().min(5)],
            daemon.log_text()
        );
        let contradictions = rig
            .metric("tthc_sync_source_count_contradictions_total")
            .await;
        let log = rig.stop(daemon);
        if lie != CountLie::Missing || last_lies {
            assert!(contradictions > 0.0, "{lie:?}: contradictions counted");
            assert!(
                log.contains("contradicted the rows"),
                "{lie:?}: a warning says the counts lied"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pages_longer_than_asked_lose_nothing_inside_a_tie_block() {
    // Quirk 13: a gateway that answers 250 rows to `size=100`, across a 600-row tie block.
    let mut config = source_config(1200, 29);
    config.generator.tie_block = 600;
    config.faults = SourceFaults {
        size_override: Some(250),
        tie_reorder: 0.3,
        ..SourceFaults::none()
    };
    let rig = Rig::start(config, |text| {
        text.replace("[source]\n", "[source]\npage_size = 100\n")
    })
    .await;
    let daemon = rig.spawn();
    let left = rig.until_synced(Duration::from_secs(180)).await;
    assert!(
        left.is_empty(),
        "{} dossiers not on the portal, e.g. {:?}",
        left.len(),
        &left[..left.len().min(5)]
    );
    let changed = rig.source.mutate_now(20);
    let left = rig.until_synced(Duration::from_secs(60)).await;
    assert!(left.is_empty(), "later changes too: {left:?} ({changed:?})");
    let log = rig.stop(daemon);
    assert!(!log.contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_source_that_does_not_page_stops_the_poll_says_so_and_loses_nothing() {
    let mut config = source_config(1500, 24);
    config.faults = SourceFaults {
        ignore_paging: true,
        ..SourceFaults::none()
    };
    let rig = Rig::start(config, |text| {
        text.replace("[source]\n", "[source]\npage_size = 100\n")
    })
    .await;
    // The rows the stuck source serves: the first 100 of the feed.
    let mut rows: Vec<(i64, String)> = rig
        .source
        .snapshot()
        .into_iter()
        .filter(|row| row.visible_in_feed)
        .map(|row| (row.updated.as_millisecond(), row.id))
        .collect();
    rows.sort();
    let newest_served = Timestamp::from_millisecond(rows[99].0).unwrap();

    let daemon = rig.spawn();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let requests_before = rig.source.stats().search_requests;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let requests = rig.source.stats().search_requests - requests_before;
    assert!(
        requests <= 20,
        "{requests} feed requests in 10 s: a source that does not page is not hammered"
    );
    let cursor = rig.cursor().await;
    assert!(
        cursor.is_none_or(|cursor| cursor <= newest_served),
        "the cursor {cursor:?} must not pass the last row seen ({newest_served})"
    );
    let (status, reasons) = rig.get("/readyz").await;
    assert_eq!(status, 503, "not ready while the source does not page");
    assert!(
        reasons.contains("không phân trang"),
        "readiness says why: {reasons}"
    );
    let errors = rig
        .metric("tthc_sync_errors_total{side=\"source\",kind=\"source_not_paging\"}")
        .await;
    assert!(errors >= 1.0, "the error kind is counted");

    // Once the gateway is fixed, nothing is missing.
    rig.source.set_faults(SourceFaults::none());
    let left = rig.until_synced(Duration::from_secs(120)).await;
    assert!(left.is_empty(), "after the fix: {left:?}");
    let log = rig.stop(daemon);
    assert!(
        log.contains("not paging"),
        "the log says the source is not paging"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_stays_bounded_under_huge_answers_and_records() {
    let limit = 16 * MIB;
    let mut config = source_config(200, 25);
    config.faults = SourceFaults {
        padding_bytes: 200 * MIB as usize,
        ..SourceFaults::none()
    };
    let rig = Rig::start(config, |text| {
        text.replace(
            "[source.http]\n",
            &format!("[source.http]\nmax_body_bytes = {limit}\n"),
        )
    })
    .await;
    // One record of 12 MB (over the default 8 MiB record limit).
    let (big_id, _) = valid_ids(&rig.source, 1).remove(0);
    let filler = "a".repeat(12 * MIB as usize);
    rig.source.rewrite(|record| {
        if record["id"] == big_id.as_str() {
            record["note"] = serde_json::Value::String(filler.clone());
            return true;
        }
        false
    });
    drop(filler);

    let daemon = rig.spawn();
    let pid = daemon.child.id();
    let refused = common::eventually(Duration::from_secs(60), || {
        daemon.log_text().contains("answer larger than")
    })
    .await;
    assert!(refused, "an answer over the limit is refused and said so");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let peak_padded = peak_memory(pid);

    rig.source.set_faults(SourceFaults::none());
    let started = Instant::now();
    let mut problems = rig.problems();
    while problems.len() > 1 && started.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        problems = rig.problems();
    }
    // The oversize record is the only one missing.
    let ledger = common::ledger_file(&rig.dir.path().join("tthc-sync.db")).await;
    assert_eq!(
        ledger.get(&big_id),
        Some(&("held".to_owned(), Some("oversize_record".to_owned()))),
        "the 12 MB record is held back as oversize_record"
    );
    assert_eq!(
        problems.len(),
        1,
        "only the oversize record is missing: {problems:?}"
    );
    let peak = peak_memory(pid);
    let log = rig.stop(daemon);
    println!(
        "daemon peak memory: {} MiB under 200 MB answers, {} MiB overall (body limit {} MiB)",
        peak_padded / MIB,
        peak / MIB,
        limit / MIB
    );
    // The bound is the release binary's (issue 10: the body limit plus 64 MiB). A debug build starts
    // about 50 MiB higher (measured: 70 MiB after a plain sync of 300 dossiers), so it gets that much more.
    let debug_allowance = if cfg!(debug_assertions) { 64 * MIB } else { 0 };
    assert!(
        peak < limit + 64 * MIB + debug_allowance,
        "peak memory {} MiB stays under the body limit plus 64 MiB (plus {} MiB for a debug build)",
        peak / MIB,
        debug_allowance / MIB
    );
    assert!(!log.contains("panicked"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_credentials_back_off_and_make_the_daemon_unready() {
    // The portal refuses the account: dossiers wait, logins are paced.
    let rig = Rig::start(source_config(50, 26), |text| {
        text.replace(
            "password = \"demo-secret\"",
            "password = \"wrong-password\"",
        )
    })
    .await;
    let daemon = rig.spawn();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let logins = rig.portal.call_count("auth");
    assert!(
        (1..=2).contains(&logins),
        "{logins} portal logins in 8 s: the second waits 30 s"
    );
    let (status, reasons) = rig.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(
        reasons.contains("Cổng DVCQG từ chối thông tin đăng nhập"),
        "readiness gives the reason in Vietnamese: {reasons}"
    );
    let refusals = rig
        .metric("tthc_sync_login_refusals_total{side=\"portal\"}")
        .await;
    assert!(refusals >= 1.0, "refusals counted");
    let log = rig.stop(daemon);
    let lines = log
        .lines()
        .filter(|line| line.contains("the credentials were refused"))
        .count();
    assert_eq!(lines, logins, "one error line per refused login");
    assert!(!log.contains("wrong-password"));

    // The source refuses the client: the same pacing.
    let rig = Rig::start(source_config(50, 27), |text| {
        text.replace(
            "client_secret = \"demo-secret\"",
            "client_secret = \"wrong-secret\"",
        )
    })
    .await;
    let daemon = rig.spawn();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let token_requests = rig.source.stats().token_requests;
    assert!(
        (1..=2).contains(&token_requests),
        "{token_requests} token requests in 8 s: the second waits 30 s"
    );
    let (status, reasons) = rig.get("/readyz").await;
    assert_eq!(status, 503);
    assert!(
        reasons.contains("Hệ thống nguồn từ chối thông tin đăng nhập"),
        "{reasons}"
    );
    let log = rig.stop(daemon);
    let lines = log
        .lines()
        .filter(|line| line.contains("the credentials were refused"))
        .count();
    assert_eq!(
        lines as u64, token_requests,
        "one error line per refused login"
    );
    assert!(!log.contains("wrong-secret"));
}

/// Reads notify messages until `READY=1`; then counts `WATCHDOG=1` pings within `window`.
async fn pings_within(socket: &tokio::net::UnixDatagram, window: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + window;
    let mut buffer = [0u8; 512];
    let mut pings = 0;
    while let Ok(Ok(read)) = tokio::time::timeout_at(deadline, socket.recv(&mut buffer)).await {
        if &buffer[..read] == b"WATCHDOG=1\n" {
            pings += 1;
        }
    }
    pings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_open_connections_to_the_status_port_do_not_stall_the_sync() {
    const HALF_OPEN: usize = 2000;
    let token = "a-status-token-for-the-test";
    let rig = Rig::start(source_config(300, 28), |text| text).await;
    let token_file = rig.dir.path().join("status_token");
    std::fs::write(&token_file, token).expect("token written");
    std::fs::set_permissions(
        &token_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("token private");
    // Bound to every address, so the token is asked; a header timeout longer than the test's attack,
    // so that the connection cap, not the timeout, is what keeps the daemon's descriptors free.
    let config = std::fs::read_to_string(&rig.config)
        .expect("configuration")
        .replace("listen = \"127.0.0.1:", "listen = \"0.0.0.0:")
        .replace(
            "[status]\n",
            &format!(
                "[status]\ntoken_file = \"{}\"\nheader_read_timeout_seconds = 60\nidle_timeout_seconds = 60\n",
                token_file.display()
            ),
        );
    std::fs::write(&rig.config, config).expect("configuration written");
    let socket_path = rig.dir.path().join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).expect("notify socket");
    let log_path = rig.dir.path().join("daemon.log");
    // The descriptor limit the issue measured with (no `LimitNOFILE`): 1,024.
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 1024 && exec \"$0\" run --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_tthc-sync"))
        .arg(&rig.config)
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "2000000")
        .env_remove("WATCHDOG_PID")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("the daemon starts");
    let daemon = common::Daemon {
        child,
        log: log_path,
    };
    let left = rig.until_synced(Duration::from_secs(120)).await;
    assert!(left.is_empty(), "first sync: {left:?}");
    let client = reqwest::Client::new();
    let healthz = || {
        client
            .get(format!("{}/healthz", rig.status))
            .bearer_auth(token)
            .timeout(Duration::from_secs(1))
            .send()
    };
    assert_eq!(
        healthz().await.expect("healthz answers").status(),
        200,
        "healthz with the token"
    );

    // 2,000 connections that send half a request head and then nothing.
    let address = rig.status.trim_start_matches("http://").to_owned();
    let mut held = Vec::with_capacity(HALF_OPEN);
    for _ in 0..HALF_OPEN {
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .expect("the kernel queues the connection");
        tokio::io::AsyncWriteExt::write_all(&mut stream, b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            .await
            .expect("half a request head sent");
        held.push(stream);
    }
    // While they are held: the sync goes on and the watchdog keeps pinging.
    let changed = rig.source.mutate_now(10);
    let pings = pings_within(&socket, Duration::from_secs(6)).await;
    assert!(
        pings >= 3,
        "{pings} watchdog pings in 6 s under {HALF_OPEN} half-open connections (one a second expected)"
    );
    let left = rig.until_synced(Duration::from_secs(60)).await;
    assert!(
        left.is_empty(),
        "the 10 dossiers changed during the flood reach the portal: {left:?} (changed {changed:?})"
    );

    // Once they close, the health check answers within a second.
    drop(held);
    let closed = Instant::now();
    let answered = loop {
        match healthz().await {
            Ok(response) => break response.status().as_u16(),
            Err(_) if closed.elapsed() < Duration::from_secs(1) => continue,
            Err(error) => panic!("no answer within a second after the flood closed: {error}"),
        }
    };
    assert_eq!(answered, 200);
    assert!(
        closed.elapsed() <= Duration::from_secs(1),
        "healthz answered {:?} after the flood closed",
        closed.elapsed()
    );
    let unauthorized = client
        .get(format!("{}/metrics", rig.status))
        .send()
        .await
        .expect("an answer without the token");
    assert_eq!(unauthorized.status(), 401, "the token is still asked");
    let log = rig.stop(daemon);
    for symptom in ["Too many open files", "unable to open database file"] {
        assert!(
            !log.contains(symptom),
            "the daemon ran out of descriptors: {symptom}"
        );
    }
}
