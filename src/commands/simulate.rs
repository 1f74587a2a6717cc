//! `tthc-sync simulate source|portal`: one simulator standalone, for benchmarks with the simulators in
//! another process and for trying a client against them.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::sim::FaultLevel;
use crate::sim::network::Latency;
use crate::sim::portal::{PortalFaults, PortalSim, PortalSimConfig};
use crate::sim::source::{SourceFaults, SourceSim, SourceSimConfig};

#[derive(Subcommand)]
pub enum Side {
    /// The provincial one-stop system (source-api.md).
    Source(SourceArgs),
    /// The national portal (portal-api.md).
    Portal(PortalArgs),
}

#[derive(Args)]
pub struct SourceArgs {
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub listen: SocketAddr,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 5000)]
    pub dossiers: usize,
    #[arg(long, default_value_t = 30)]
    pub units: usize,
    #[arg(long, default_value = "realistic")]
    pub faults: FaultLevel,
    /// Keep changing some dossiers while clients read.
    #[arg(long)]
    pub live: bool,
    #[command(flatten)]
    pub network: NetworkArgs,
}

/// A network like the real one (`src/sim/network.rs`), on both simulators.
#[derive(Args, Debug, Clone, Default)]
pub struct NetworkArgs {
    /// Delay added to every API call, in milliseconds (`/_sim/*` excepted).
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Each call's delay is drawn uniformly within this many milliseconds either side of
    /// `--latency-ms` (never below zero), from the seed.
    #[arg(long, default_value_t = 0)]
    pub latency_jitter_ms: u64,
}

impl NetworkArgs {
    pub fn latency(&self) -> Latency {
        Latency::from_millis(self.latency_ms, self.latency_jitter_ms)
    }
}

#[derive(Args)]
pub struct PortalArgs {
    #[arg(long, default_value = "127.0.0.1:8082")]
    pub listen: SocketAddr,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value = "realistic")]
    pub faults: FaultLevel,
    #[command(flatten)]
    pub answers: PortalAnswerFaultArgs,
    #[command(flatten)]
    pub network: NetworkArgs,
    /// The most calls per second the portal takes (all sessions together); beyond it, HTTP 429 with
    /// `Retry-After`. No limit when absent.
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Keep every payload, progress entry and call as received (for `GET /_sim/dossiers/{MaHoSo}` and
    /// `TraCuuHoSo` in full). Off by default here, so that a million dossiers fit in memory: the portal
    /// then keeps a hash of each dossier and only the fields it checks and serves.
    #[arg(long)]
    pub record_payloads: bool,
}

/// Overrides of the portal simulator's answer and late faults (`src/sim/portal/faults.rs`), on top of
/// the `--faults` level; rates are shares of delivery calls, 0 to 1.
#[derive(Args, Debug, Clone, Default)]
pub struct PortalAnswerFaultArgs {
    /// Share of answers whose `result` entries come in shuffled order.
    #[arg(long)]
    pub portal_shuffled_rate: Option<f64>,
    /// Share of answers with an extra entry (code 0) for a `MaHoSo` that was not sent.
    #[arg(long)]
    pub portal_unknown_entry_rate: Option<f64>,
    /// Share of answers missing one item's entry (the item is processed all the same).
    #[arg(long)]
    pub portal_dropped_entry_rate: Option<f64>,
    /// Share of answers with one item's entry twice.
    #[arg(long)]
    pub portal_duplicated_entry_rate: Option<f64>,
    /// Share of calls held `--portal-late-delay-ms` and processed only then (the old batch lands last).
    #[arg(long)]
    pub portal_late_store_rate: Option<f64>,
    /// Share of calls processed at once and answered `--portal-late-delay-ms` late.
    #[arg(long)]
    pub portal_late_answer_rate: Option<f64>,
    /// The delay of late stores and late answers, in milliseconds.
    #[arg(long)]
    pub portal_late_delay_ms: Option<u64>,
}

impl PortalAnswerFaultArgs {
    /// `faults` with the overrides given applied.
    pub fn apply(&self, mut faults: PortalFaults) -> anyhow::Result<PortalFaults> {
        for (flag, given, rate) in [
            (
                "--portal-shuffled-rate",
                self.portal_shuffled_rate,
                &mut faults.shuffled_rate,
            ),
            (
                "--portal-unknown-entry-rate",
                self.portal_unknown_entry_rate,
                &mut faults.unknown_entry_rate,
            ),
            (
                "--portal-dropped-entry-rate",
                self.portal_dropped_entry_rate,
                &mut faults.dropped_entry_rate,
            ),
            (
                "--portal-duplicated-entry-rate",
                self.portal_duplicated_entry_rate,
                &mut faults.duplicated_entry_rate,
            ),
            (
                "--portal-late-store-rate",
                self.portal_late_store_rate,
                &mut faults.late_store_rate,
            ),
            (
                "--portal-late-answer-rate",
                self.portal_late_answer_rate,
                &mut faults.late_answer_rate,
            ),
        ] {
            if let Some(given) = given {
                anyhow::ensure!(
                    (0.0..=1.0).contains(&given),
                    "{flag} must be between 0 and 1, got {given}"
                );
                *rate = given;
            }
        }
        if let Some(delay) = self.portal_late_delay_ms {
            faults.late_delay = std::time::Duration::from_millis(delay);
        }
        Ok(faults)
    }
}

pub async fn run(side: Side) -> anyhow::Result<ExitCode> {
    crate::telemetry::init("human", "info");
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let signal = super::run::shutdown_signal().await;
        tracing::info!(signal, "stopping the simulator");
        stop.cancel();
    });
    match side {
        Side::Source(args) => {
            let mut config = SourceSimConfig::for_level(args.faults);
            config.generator.seed = args.seed;
            config.generator.dossiers = args.dossiers;
            config.generator.units = args.units;
            config.faults = SourceFaults::for_level(args.faults);
            config.live_mutation = args.live;
            config.latency = args.network.latency();
            let started = std::time::Instant::now();
            let sim = SourceSim::new(config);
            tracing::info!(
                dossiers = args.dossiers,
                seconds = started.elapsed().as_secs_f64(),
                "source dataset planned"
            );
            let listener = tokio::net::TcpListener::bind(args.listen).await?;
            tracing::info!(address = %listener.local_addr()?, dossiers = args.dossiers, "source simulator listening");
            sim.serve(listener, shutdown).await?;
        }
        Side::Portal(args) => {
            let config = PortalSimConfig {
                seed: args.seed,
                faults: args.answers.apply(PortalFaults::for_level(args.faults))?,
                record_payloads: args.record_payloads,
                latency: args.network.latency(),
                rate_limit: args.rate_limit,
                ..PortalSimConfig::default()
            };
            let sim = PortalSim::new(config);
            let listener = tokio::net::TcpListener::bind(args.listen).await?;
            tracing::info!(address = %listener.local_addr()?, "portal simulator listening");
            sim.serve(listener, shutdown).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
