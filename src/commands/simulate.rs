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
                faults: PortalFaults::for_level(args.faults),
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
