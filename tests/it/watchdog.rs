//! The daemon under a service manager's eye (`Type=notify`): the real binary, given a notify socket of the
//! test's own, says READY=1 once running, pings the watchdog while its poll loop beats, says RELOADING=1
//! then READY=1 around a SIGHUP, and STOPPING=1 on SIGTERM; and the daemon's own poll loop keeps the
//! watchdog fed while it runs, however long its poll interval, and stops feeding it when it stops. (The
//! watchdog task's own rule is the unit test `notify::tests::a_stalled_heartbeat_stops_the_pings`.)

use crate::common;

use std::time::Duration;

use tokio::net::UnixDatagram;
use tokio_util::sync::CancellationToken;
use tthc_sync::commands::demo::{Demo, demo_settings};
use tthc_sync::notify::Notifier;
use tthc_sync::sim::FaultLevel;

/// The next notification, or None after `timeout`.
async fn next(socket: &UnixDatagram, timeout: Duration) -> Option<String> {
    let mut buffer = [0u8; 1024];
    let length = tokio::time::timeout(timeout, socket.recv(&mut buffer))
        .await
        .ok()?
        .expect("the notify socket reads");
    Some(String::from_utf8_lossy(&buffer[..length]).into_owned())
}

/// Reads notifications until one starts with `prefix`; returns those read before it.
async fn until(socket: &UnixDatagram, prefix: &str) -> Vec<String> {
    let mut before = Vec::new();
    loop {
        match next(socket, Duration::from_secs(30)).await {
            Some(message) if message.starts_with(prefix) => return before,
            Some(message) => before.push(message),
            None => panic!("no {prefix} within 30 s; got {before:?}"),
        }
    }
}

/// A failing test does not leave the daemon running.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_speaks_the_notify_protocol() {
    let shutdown = CancellationToken::new();
    let (_source, source_address) =
        Demo::serve_source(common::source_config(50, 3, 3, FaultLevel::None), &shutdown)
            .await
            .unwrap();
    let (_portal, portal_address) =
        Demo::serve_portal(common::portal_config(3, FaultLevel::None), &shutdown)
            .await
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("tthc-sync.toml");
    std::fs::write(
        &config_path,
        demo_settings(
            &format!("http://{source_address}"),
            &format!("http://{portal_address}"),
            &dir.path().join("tthc-sync.db"),
        ),
    )
    .unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let mut child = KillOnDrop(
        std::process::Command::new(env!("CARGO_BIN_EXE_tthc-sync"))
            .args(["run", "--config"])
            .arg(&config_path)
            .env("NOTIFY_SOCKET", &socket_path)
            // A two-second watchdog: a ping every second.
            .env("WATCHDOG_USEC", "2000000")
            .env_remove("WATCHDOG_PID")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the daemon starts"),
    );
    let signal = |name: &str| {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(child.0.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    };

    let before_ready = until(&socket, "READY=1").await;
    assert!(before_ready.is_empty(), "before READY=1: {before_ready:?}");
    let mut pings = 0;
    while pings < 3 {
        let message = next(&socket, Duration::from_secs(5))
            .await
            .expect("watchdog pings while the loop beats");
        assert_eq!(message, "WATCHDOG=1\n");
        pings += 1;
    }

    signal("HUP");
    let before_reloading = until(&socket, "RELOADING=1\nMONOTONIC_USEC=").await;
    assert!(before_reloading.iter().all(|m| m == "WATCHDOG=1\n"));
    let before_ready_again = until(&socket, "READY=1").await;
    assert!(before_ready_again.iter().all(|m| m == "WATCHDOG=1\n"));

    signal("TERM");
    let before_stopping = until(&socket, "STOPPING=1").await;
    assert!(before_stopping.iter().all(|m| m == "WATCHDOG=1\n"));
    let status = child.0.wait().unwrap();
    assert!(status.success(), "exit status {status}");
    shutdown.cancel();
}

/// Counts the pings that arrive within `window`.
async fn pings_within(socket: &UnixDatagram, window: Duration) -> usize {
    let deadline = tokio::time::Instant::now() + window;
    let mut pings = 0;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return pings;
        }
        match next(socket, left).await {
            Some(message) => {
                assert_eq!(message, "WATCHDOG=1\n");
                pings += 1;
            }
            None => return pings,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_loop_feeds_the_watchdog_while_it_runs_and_not_after() {
    let mut source = common::source_config(30, 2, 5, FaultLevel::None);
    source.live_mutation = false;
    // A poll interval far longer than the watchdog's: waiting between polls must not look like a stall.
    let (dir, demo) = common::start(
        source,
        common::portal_config(5, FaultLevel::None),
        |settings| {
            settings.source.poll_interval_seconds = 600;
        },
    )
    .await;
    let interval = Duration::from_millis(900);
    demo.app.health.pace_for_watchdog(interval);
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let watchdog_stop = CancellationToken::new();
    let watchdog = tokio::spawn(
        Notifier::new(Some(socket_path), Some(interval))
            .watchdog_loop(demo.app.health.heartbeat.clone(), watchdog_stop.clone()),
    );

    // Running (the first poll, then a long wait): a ping every 450 ms, none missed for long.
    let running = pings_within(&socket, Duration::from_secs(4)).await;
    assert!(running >= 6, "{running} pings in 4 s while the loop runs");

    // The loop stops while the process goes on: within an interval the pings stop, and stay stopped.
    let app = demo.app.clone();
    demo.stop().await.unwrap();
    pings_within(&socket, interval * 2).await;
    let stalled = pings_within(&socket, Duration::from_secs(3)).await;
    assert_eq!(stalled, 0, "pings after the loop stopped");
    drop(app);
    watchdog_stop.cancel();
    watchdog.await.unwrap();
}
