//! `tthc-sync demo`: both simulators in-process on loopback, the daemon syncing into a SQLite file under a
//! data directory, progress while it works, a per-unit summary when the backlog is drained.
//!
//! With `--exit-when-synced` it then checks that the portal simulator holds exactly what it should (every
//! valid dossier visible in the feed, in its latest normalized version, with its progress entries) and
//! exits 0 only if so.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Settings;
use crate::decide::DossierState;
use crate::normalize::{self, MappingTables, Outcome};
use crate::sim::FaultLevel;
use crate::sim::portal::{PortalFaults, PortalSim, PortalSimConfig};
use crate::sim::source::{SourceFaults, SourceSim, SourceSimConfig};
use crate::store::UnitCounts;

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Dossiers the simulated source holds.
    #[arg(long, default_value_t = 2000)]
    pub dossiers: usize,
    /// Units (agencies) of the simulated province.
    #[arg(long, default_value_t = 30)]
    pub units: usize,
    /// Seed of the generated dataset and of the faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Where the demo's ledger lives (`tthc-sync.db`); it starts afresh at every demo.
    #[arg(long, default_value = "data/demo")]
    pub data_dir: PathBuf,
    /// How hostile both simulated systems are: none, realistic or harsh.
    #[arg(long, default_value = "realistic")]
    pub faults: FaultLevel,
    /// Exit after the summary: 0 if the portal holds exactly what it should, 1 otherwise.
    #[arg(long)]
    pub exit_when_synced: bool,
    /// Where the status server (dashboard, metrics, health checks) listens.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub status_listen: String,
    /// Give up waiting for the backlog to drain after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_seconds: u64,
    #[command(flatten)]
    pub portal_answers: super::simulate::PortalAnswerFaultArgs,
}

/// The simulators and the daemon of one demo (also used by tests).
pub struct Demo {
    pub source: SourceSim,
    pub portal: PortalSim,
    pub app: Arc<App>,
    pub shutdown: CancellationToken,
    /// The status server (on the port `status.listen` names; the demo configuration asks for any port).
    pub status: crate::status::StatusServer,
    running: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Demo {
    /// Starts both simulators on loopback and builds the daemon against them, as the command line says.
    pub async fn start(args: &DemoArgs) -> anyhow::Result<Demo> {
        let mut source = SourceSimConfig::for_level(args.faults);
        source.generator.seed = args.seed;
        source.generator.dossiers = args.dossiers;
        source.generator.units = args.units;
        source.faults = SourceFaults::for_level(args.faults);
        source.live_mutation = true;
        let portal = PortalSimConfig {
            seed: args.seed,
            faults: args
                .portal_answers
                .apply(PortalFaults::for_level(args.faults))?,
            ..PortalSimConfig::default()
        };
        let database = args.data_dir.join("tthc-sync.db");
        for suffix in ["", "-wal", "-shm"] {
            let path = PathBuf::from(format!("{}{suffix}", database.display()));
            if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("cannot start afresh: {}", path.display()))?;
            }
        }
        let status_listen = args.status_listen.clone();
        Demo::start_with(source, portal, &database, |settings| {
            settings.status.listen = status_listen;
        })
        .await
    }

    /// Starts the simulators with these configurations and the daemon on `database`; `adjust` may change
    /// the daemon's settings before it is built (tests use it).
    pub async fn start_with(
        source_config: SourceSimConfig,
        portal_config: PortalSimConfig,
        database: &std::path::Path,
        adjust: impl FnOnce(&mut Settings),
    ) -> anyhow::Result<Demo> {
        Demo::start_prepared(source_config, portal_config, database, |_, _| {}, adjust).await
    }

    /// Like [`Demo::start_with`], with `prepare` shaping the simulators' data (a scenario) before the
    /// daemon starts reading them.
    pub async fn start_prepared(
        source_config: SourceSimConfig,
        portal_config: PortalSimConfig,
        database: &std::path::Path,
        prepare: impl FnOnce(&SourceSim, &PortalSim),
        adjust: impl FnOnce(&mut Settings),
    ) -> anyhow::Result<Demo> {
        let shutdown = CancellationToken::new();
        let (source, source_address) = Demo::serve_source(source_config, &shutdown).await?;
        let (portal, portal_address) = Demo::serve_portal(portal_config, &shutdown).await?;
        prepare(&source, &portal);
        let mut settings = Settings::from_toml(&demo_settings(
            &format!("http://{source_address}"),
            &format!("http://{portal_address}"),
            database,
        ))?;
        adjust(&mut settings);
        settings.validate()?;
        let app = Arc::new(App::build(settings).await?);
        let status = crate::status::start(app.clone(), shutdown.clone()).await?;
        let running = tokio::spawn(app.clone().run(shutdown.clone()));
        Ok(Demo {
            source,
            portal,
            app,
            shutdown,
            status,
            running,
        })
    }

    /// Starts a source simulator on a loopback port.
    pub async fn serve_source(
        config: SourceSimConfig,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<(SourceSim, std::net::SocketAddr)> {
        let source = SourceSim::new(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (server, shutdown) = (source.clone(), shutdown.clone());
        tokio::spawn(async move { server.serve(listener, shutdown).await });
        Ok((source, address))
    }

    /// Starts a portal simulator on a loopback port.
    pub async fn serve_portal(
        config: PortalSimConfig,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<(PortalSim, std::net::SocketAddr)> {
        let portal = PortalSim::new(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let (server, shutdown) = (portal.clone(), shutdown.clone());
        tokio::spawn(async move { server.serve(listener, shutdown).await });
        Ok((portal, address))
    }

    /// Waits until the source stopped changing and every dossier that can reach the portal has.
    pub async fn wait_until_synced(
        &self,
        timeout: Duration,
        mut report: impl FnMut(&str),
    ) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let mut mutation_stopped_at_poll: Option<i64> = None;
        loop {
            if started.elapsed() > timeout {
                anyhow::bail!("the backlog did not drain within {} s", timeout.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let counts = self.app.store.counts().await?;
            let polls_ok = self.app.health.polls.load(Ordering::Relaxed)
                - self.app.health.poll_failures.load(Ordering::Relaxed);
            report(&format!(
                "đã nhận {} hồ sơ · Cổng DVCQG đã nhận {} · chờ đồng bộ {} · bị giữ lại {} · bị từ chối {} · bỏ qua {} · lượt gọi {}",
                counts.total(),
                counts.get(DossierState::Accepted),
                counts.get(DossierState::Pending) + counts.get(DossierState::InFlight),
                counts.get(DossierState::Held),
                counts.get(DossierState::Refused),
                counts.get(DossierState::Skipped),
                self.app.counters.calls.load(Ordering::Relaxed),
            ));
            let drained = counts.total() > 0 && counts.outstanding() == 0;
            match mutation_stopped_at_poll {
                None if drained => {
                    // The first backlog is through: stop changing the source, then let two more polls
                    // (whose lookback covers any late row) and the pushes after them finish.
                    self.source.set_live_mutation(false);
                    mutation_stopped_at_poll = Some(polls_ok);
                }
                Some(at) if drained && polls_ok >= at + 2 => return Ok(()),
                _ => {}
            }
        }
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let stopped = self.running.await;
        self.status.stop().await;
        stopped??;
        self.app.store.close().await;
        Ok(())
    }
}

/// The demo's configuration (`config/demo.toml`): fast polls, a lookback that covers the simulator's late
/// visibility.
pub fn demo_settings(source: &str, portal: &str, database: &std::path::Path) -> String {
    include_str!("../../config/demo.toml")
        .replace("{source_url}", source)
        .replace("{portal_url}", portal)
        .replace("{database}", &database.display().to_string())
}

/// Compares the portal simulator's store with what it should hold; returns the differences found.
pub fn check_portal(source: &SourceSim, portal: &PortalSim, tables: &MappingTables) -> Vec<String> {
    let now = jiff::Timestamp::now();
    let mut expected: HashMap<String, (serde_json::Value, Vec<serde_json::Value>)> = HashMap::new();
    for row in source.snapshot() {
        if !row.visible_in_feed {
            continue;
        }
        let raw = row.record.to_string();
        if let Outcome::Dossier(dossier) =
            normalize::normalize_bytes(raw.as_bytes(), tables, now).outcome
        {
            let payload: serde_json::Value =
                serde_json::from_slice(&dossier.payload).unwrap_or_default();
            let progress = dossier
                .progress
                .iter()
                .map(|entry| serde_json::from_slice(&entry.payload).unwrap_or_default())
                .collect();
            expected.insert(dossier.dossier.ma_ho_so.clone(), (payload, progress));
        }
    }
    let stored = portal.stored();
    let mut problems = Vec::new();
    for (code, (payload, progress)) in &expected {
        match stored.get(code) {
            None => problems.push(format!("missing on the portal: {code}")),
            Some(found) if &found.dossier != payload => {
                problems.push(format!("outdated on the portal: {code}"))
            }
            Some(found) => {
                for entry in progress {
                    if !found.progress.contains(entry) {
                        problems.push(format!("progress entry missing on the portal: {code}"));
                        break;
                    }
                }
            }
        }
    }
    for code in stored.keys() {
        if !expected.contains_key(code) {
            problems.push(format!("on the portal but should not be: {code}"));
        }
    }
    problems.sort();
    problems
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    // Faults are the demo's point: retries are counted in the progress lines, not logged one by one.
    crate::telemetry::init("human", "error");
    // Ctrl-C (or SIGTERM) stops the demo cleanly at any moment, from the first line on: the signal
    // handlers are installed before anything starts, and every wait below also waits for them.
    let stop = super::run::shutdown_signal();
    tokio::pin!(stop);
    // One poll installs the handlers now (the future registers them when first polled).
    if let std::task::Poll::Ready(signal) = futures::poll!(&mut stop) {
        println!("{signal}: stopped before the demo started");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "tthc-sync demo: {} dossiers, {} units, seed {}, faults {:?}; ledger in {}",
        args.dossiers,
        args.units,
        args.seed,
        args.faults,
        args.data_dir.display()
    );
    let demo = tokio::select! {
        demo = Demo::start(&args) => demo?,
        signal = &mut stop => {
            // Whatever had started stops with the runtime; nothing was written yet but an empty ledger.
            println!("{signal}: stopped before the demo started");
            return Ok(ExitCode::SUCCESS);
        }
    };
    println!(
        "Tình trạng đồng bộ: http://{}/ (metrics: /metrics)",
        demo.status.address
    );
    let mut last_line = String::new();
    let synced = tokio::select! {
        synced = demo.wait_until_synced(Duration::from_secs(args.timeout_seconds), |line| {
            if line != last_line {
                println!("{line}");
                last_line = line.to_string();
            }
        }) => synced,
        signal = &mut stop => {
            println!("{signal}: dừng đồng bộ, hoàn tất các lô đang gửi (stopping; finishing batches in flight)");
            demo.stop().await?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    if let Err(error) = &synced {
        println!("{error}");
    }
    print_summary(&demo.app.store.unit_counts().await?);
    let problems = check_portal(&demo.source, &demo.portal, &demo.app.tables());
    if args.exit_when_synced {
        demo.stop().await?;
        if synced.is_ok() && problems.is_empty() {
            println!("Cổng DVCQG (mô phỏng) giữ đúng phiên bản mới nhất của mọi hồ sơ hợp lệ.");
            return Ok(ExitCode::SUCCESS);
        }
        for problem in problems.iter().take(20) {
            println!("{problem}");
        }
        println!(
            "{} differences between the portal simulator and the source",
            problems.len()
        );
        return Ok(ExitCode::FAILURE);
    }
    println!("Đồng bộ xong; tthc-sync tiếp tục chạy. Nhấn Ctrl-C để dừng.");
    let signal = stop.await;
    println!("{signal}: dừng (stopping)");
    demo.stop().await?;
    Ok(ExitCode::SUCCESS)
}

fn print_summary(units: &[UnitCounts]) {
    println!();
    println!(
        "{:<16} {:<14} {:>8} {:>8} {:>8} {:>8} {:>8}  Lý do",
        "Mã đơn vị", "Cơ quan nguồn", "Đã nhận", "Chờ", "Giữ lại", "Từ chối", "Bỏ qua"
    );
    for unit in units {
        let count = |state| unit.counts.get(&state).copied().unwrap_or(0);
        let reasons: Vec<String> = unit
            .reasons
            .iter()
            .map(|(code, count)| format!("{code}: {count}"))
            .collect();
        println!(
            "{:<16} {:<14} {:>8} {:>8} {:>8} {:>8} {:>8}  {}",
            unit.unit.as_deref().unwrap_or("(chưa xác định)"),
            unit.source_agency_id.as_deref().unwrap_or(""),
            count(DossierState::Accepted),
            count(DossierState::Pending) + count(DossierState::InFlight),
            count(DossierState::Held),
            count(DossierState::Refused),
            count(DossierState::Skipped),
            reasons.join(", ")
        );
    }
}
