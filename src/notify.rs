//! The systemd notification protocol (`Type=notify`): READY, RELOADING, STOPPING, and WATCHDOG pings sent
//! only while the poll loop's heartbeat is fresh, so that systemd restarts a daemon whose loop hangs.
//! Without `NOTIFY_SOCKET` (a terminal, the tests, another supervisor) every call is a no-op.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// Where notifications go, and how often systemd expects a watchdog ping.
#[derive(Debug, Clone, Default)]
pub struct Notifier {
    /// The service manager's socket (`NOTIFY_SOCKET`); a leading `@` names an abstract socket.
    socket: Option<PathBuf>,
    /// `WATCHDOG_USEC`, when the watchdog is on and meant for this process.
    watchdog: Option<Duration>,
    /// The datagram socket, opened at the first notification and kept: a ping must not need a new file
    /// descriptor, which a process out of them (issue 10: idle connections to the status server) would
    /// not get. Dropped after a failed send, so that the next one connects afresh.
    connection: std::sync::Arc<std::sync::Mutex<Option<UnixDatagram>>>,
}

impl Notifier {
    /// The service manager's settings from the environment systemd gives the main process.
    pub fn from_env() -> Notifier {
        Notifier::new(
            std::env::var_os("NOTIFY_SOCKET").map(PathBuf::from),
            sd_notify::watchdog_enabled(),
        )
    }

    /// Explicit settings (tests, or a supervisor other than systemd).
    pub fn new(socket: Option<PathBuf>, watchdog: Option<Duration>) -> Notifier {
        Notifier {
            socket,
            watchdog,
            connection: std::sync::Arc::default(),
        }
    }

    /// The watchdog interval (`WatchdogSec=`), when systemd watches this process.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `states` in one datagram. A failure is logged at debug level only: notification is
    /// advisory, and a missing socket must never stop the daemon.
    pub fn notify(&self, states: &[NotifyState<'_>]) {
        let Some(socket) = &self.socket else { return };
        let message: String = states.iter().map(|state| format!("{state}\n")).collect();
        let mut connection = self
            .connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let sent = match connection.as_ref() {
            Some(datagram) => send_on(datagram, message.as_bytes()),
            None => connect(socket).and_then(|datagram| {
                send_on(&datagram, message.as_bytes())?;
                *connection = Some(datagram);
                Ok(())
            }),
        };
        if let Err(error) = sent {
            *connection = None;
            tracing::debug!(error = %error, "cannot notify the service manager");
        }
    }

    /// The daemon is built and running.
    pub fn ready(&self) {
        self.notify(&[NotifyState::Ready, NotifyState::Status("running")]);
    }

    /// A reload (SIGHUP) starts. systemd 253 and newer expect the monotonic time with it.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.notify(&[NotifyState::Reloading, now]),
            Err(_) => self.notify(&[NotifyState::Reloading]),
        }
    }

    /// The daemon is stopping: finishing work in flight.
    pub fn stopping(&self) {
        self.notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }

    /// Pings the watchdog every half interval while `heartbeat` (Unix ms, written by the poll loop) is
    /// younger than the interval; a stalled loop gets no pings, and systemd restarts the service. Returns
    /// at once when the watchdog is off, and when `shutdown` fires.
    pub async fn watchdog_loop(self, heartbeat: Arc<AtomicI64>, shutdown: CancellationToken) {
        let Some(interval) = self.watchdog else {
            return;
        };
        let every = interval / 2;
        let mut stalled = false;
        // A loop that has not beaten yet gets one interval from now to do so.
        let started = unix_millis();
        loop {
            let last_beat = match heartbeat.load(Ordering::Relaxed) {
                0 => started,
                beat => beat,
            };
            let age = unix_millis().saturating_sub(last_beat);
            if age < interval.as_millis() as i64 {
                if stalled {
                    tracing::info!("the poll loop beats again; watchdog pings resume");
                    stalled = false;
                }
                self.notify(&[NotifyState::Watchdog]);
            } else if !stalled {
                tracing::error!(
                    heartbeat_age_ms = age,
                    watchdog_ms = interval.as_millis() as u64,
                    "the poll loop has not beaten within the watchdog interval; no more watchdog pings, systemd will restart the service"
                );
                stalled = true;
            }
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }
}

/// How often a waiting loop beats at the least; a watchdog shorter than 15 s makes it beat at a third of
/// its interval instead (`Health::pace_for_watchdog`). The unit uses `WatchdogSec=60s`.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);

/// Now, in Unix milliseconds (the heartbeat's unit).
pub fn unix_millis() -> i64 {
    jiff::Timestamp::now().as_millisecond()
}

fn connect(socket: &Path) -> io::Result<UnixDatagram> {
    let datagram = UnixDatagram::unbound()?;
    let bytes = socket.as_os_str().as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let address = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        datagram.connect_addr(&address)?;
    } else {
        datagram.connect(socket)?;
    }
    Ok(datagram)
}

fn send_on(datagram: &UnixDatagram, message: &[u8]) -> io::Result<()> {
    let sent = datagram.send(message)?;
    if sent != message.len() {
        return Err(io::Error::new(io::ErrorKind::WriteZero, "incomplete write"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket() -> (tempfile::TempDir, PathBuf, UnixDatagram) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        receiver.set_nonblocking(true).unwrap();
        (dir, path, receiver)
    }

    fn drain(receiver: &UnixDatagram) -> Vec<String> {
        let mut messages = Vec::new();
        let mut buffer = [0u8; 512];
        while let Ok(length) = receiver.recv(&mut buffer) {
            messages.push(String::from_utf8_lossy(&buffer[..length]).into_owned());
        }
        messages
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_nothing_fails() {
        let notifier = Notifier::new(None, None);
        notifier.ready();
        notifier.stopping();
        assert_eq!(notifier.watchdog(), None);
    }

    #[test]
    fn states_arrive_as_systemd_expects_them() {
        let (_dir, path, receiver) = socket();
        let notifier = Notifier::new(Some(path), None);
        notifier.ready();
        notifier.reloading();
        notifier.stopping();
        let messages = drain(&receiver);
        assert_eq!(messages.len(), 3);
        assert!(messages[0].starts_with("READY=1\n"), "{messages:?}");
        assert!(messages[1].starts_with("RELOADING=1\nMONOTONIC_USEC="));
        assert!(messages[2].starts_with("STOPPING=1\n"));
    }

    /// A loop that has not beaten yet is not taken for stalled at once: it gets one interval from the start.
    #[tokio::test(start_paused = true)]
    async fn a_loop_that_never_beats_gets_one_interval() {
        let (_dir, path, receiver) = socket();
        let interval = Duration::from_secs(10);
        let heartbeat = Arc::new(AtomicI64::new(0));
        let shutdown = CancellationToken::new();
        let watchdog = tokio::spawn(
            Notifier::new(Some(path), Some(interval)).watchdog_loop(heartbeat, shutdown.clone()),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(drain(&receiver), ["WATCHDOG=1\n"]);
        shutdown.cancel();
        watchdog.await.unwrap();
    }

    /// Pings arrive while the heartbeat advances, and stop once it stalls.
    #[tokio::test(start_paused = true)]
    async fn a_stalled_heartbeat_stops_the_pings() {
        let (_dir, path, receiver) = socket();
        let interval = Duration::from_secs(10);
        let notifier = Notifier::new(Some(path), Some(interval));
        let heartbeat = Arc::new(AtomicI64::new(unix_millis()));
        let shutdown = CancellationToken::new();
        let watchdog = tokio::spawn(notifier.watchdog_loop(heartbeat.clone(), shutdown.clone()));

        // The loop beats: with the clock paused the wall clock barely moves, so the heartbeat stays fresh
        // while tokio's time advances through several half intervals.
        for _ in 0..4 {
            heartbeat.store(unix_millis(), Ordering::Relaxed);
            tokio::time::sleep(interval / 2).await;
        }
        let while_beating = drain(&receiver);
        assert!(
            while_beating.len() >= 4,
            "pings while beating: {while_beating:?}"
        );
        assert!(
            while_beating
                .iter()
                .all(|message| message == "WATCHDOG=1\n")
        );

        // The loop stalls: its last beat is older than the interval.
        heartbeat.store(
            unix_millis() - 2 * interval.as_millis() as i64,
            Ordering::Relaxed,
        );
        tokio::time::sleep(interval / 2).await;
        drain(&receiver);
        tokio::time::sleep(interval * 3).await;
        assert_eq!(
            drain(&receiver),
            Vec::<String>::new(),
            "pings after the stall"
        );

        // It beats again: pings resume.
        heartbeat.store(unix_millis(), Ordering::Relaxed);
        tokio::time::sleep(interval).await;
        assert!(
            !drain(&receiver).is_empty(),
            "no pings after the loop resumed"
        );

        shutdown.cancel();
        watchdog.await.unwrap();
    }
}
