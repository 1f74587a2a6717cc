//! The daemon under a service manager's eye (`Type=notify`): the real binary, given a notify socket of the
//! test's own, says READY=1 once running, pings the watchdog while its poll loop beats, says RELOADING=1
//! then READY=1 around a SIGHUP, and STOPPING=1 on SIGTERM. (That a stalled loop stops the pings is the
//! unit test `notify::tests::a_stalled_heartbeat_stops_the_pings`.)

mod common;

use std::time::Duration;

use tokio::net::UnixDatagram;
use tokio_util::sync::CancellationToken;
use tthc_sync::commands::demo::{Demo, demo_settings};
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
