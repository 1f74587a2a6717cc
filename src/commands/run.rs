//! `tthc-sync run` and `tthc-sync check-config`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Settings;

pub async fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(Some(config))?;
    crate::telemetry::init(&settings.log.format, &settings.log.level);
    let deadline = Duration::from_secs(settings.daemon.shutdown_deadline_seconds);
    let app = Arc::new(App::build(settings).await?);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "tthc-sync started");
    let shutdown = CancellationToken::new();
    let mut running = tokio::spawn(app.clone().run(shutdown.clone()));
    tokio::select! {
        result = &mut running => {
            result.context("the daemon stopped unexpectedly")??;
            return Ok(ExitCode::SUCCESS);
        }
        signal = shutdown_signal() => {
            tracing::info!(signal, "stopping: finishing work in flight");
        }
    }
    shutdown.cancel();
    match tokio::time::timeout(deadline, running).await {
        Ok(result) => result.context("the daemon stopped unexpectedly")??,
        Err(_) => tracing::warn!(
            deadline_seconds = deadline.as_secs(),
            "work in flight did not finish before the deadline; its claims are taken back at the next start"
        ),
    }
    app.store.close().await;
    tracing::info!("tthc-sync stopped");
    Ok(ExitCode::SUCCESS)
}

/// Waits for SIGTERM or SIGINT and names it.
pub async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(error = %error, "cannot listen for SIGTERM; only Ctrl-C stops the daemon");
            let _ = tokio::signal::ctrl_c().await;
            return "SIGINT";
        }
    };
    tokio::select! {
        _ = terminate.recv() => "SIGTERM",
        _ = tokio::signal::ctrl_c() => "SIGINT",
    }
}

pub fn check_config(config: &Path) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(Some(config))?;
    crate::portal::client::PortalClient::new(
        &settings.portal,
        crate::http::RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            max_times: 0,
        },
    )?;
    crate::source::client::SourceClient::new(
        &settings.source,
        crate::http::RetryPolicy {
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(1),
            max_times: 0,
        },
    )?;
    settings.store.password()?;
    if let Some(path) = &settings.mapping.tables_file {
        crate::normalize::MappingTables::load(path)
            .map_err(|error| anyhow::anyhow!("configuration key `mapping.tables_file`: {error}"))?;
    }
    println!("configuration {} is valid", config.display());
    Ok(ExitCode::SUCCESS)
}
