//! `tthc-sync simulate source|portal`: one simulator standalone, for benchmarks with the simulators in
//! another process and for trying a client against them.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::sim::FaultLevel;
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
            let sim = SourceSim::new(config);
            let listener = tokio::net::TcpListener::bind(args.listen).await?;
            tracing::info!(address = %listener.local_addr()?, dossiers = args.dossiers, "source simulator listening");
            sim.serve(listener, shutdown).await?;
        }
        Side::Portal(args) => {
            let config = PortalSimConfig {
                seed: args.seed,
                faults: args.answers.apply(PortalFaults::for_level(args.faults))?,
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
