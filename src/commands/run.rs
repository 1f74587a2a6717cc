//! `tthc-sync run` and `tthc-sync check-config`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::config::Settings;
use crate::http::RetryPolicy;
use crate::normalize::{MappingTables, TablesError};
use crate::notify::Notifier;

pub async fn run(config: &Path) -> anyhow::Result<ExitCode> {
    let settings = Settings::load(Some(config))?;
    crate::telemetry::init(&settings.log.format, &settings.log.level);
    for warning in settings.warnings(Some(config)) {
        tracing::warn!(warning = %warning, "unsafe configuration");
    }
    let deadline = Duration::from_secs(settings.daemon.shutdown_deadline_seconds);
    let app = Arc::new(App::build(settings).await?);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "tthc-sync started");
    let shutdown = CancellationToken::new();
    let status = crate::status::start(app.clone(), shutdown.clone()).await?;
    let notifier = Notifier::from_env();
    if let Some(interval) = notifier.watchdog() {
        app.health.pace_for_watchdog(interval);
    }
    let reloader = tokio::spawn(reload_on_sighup(app.clone(), notifier.clone()));
    let mut running = tokio::spawn(app.clone().run(shutdown.clone()));
    // READY first: a watchdog ping before it would be taken as coming from a service still starting.
    notifier.ready();
    let watchdog = tokio::spawn(
        notifier
            .clone()
            .watchdog_loop(app.health.heartbeat.clone(), shutdown.clone()),
    );
    tokio::select! {
        result = &mut running => {
            notifier.stopping();
            status.stop().await;
            result.context("the daemon stopped unexpectedly")??;
            return Ok(ExitCode::SUCCESS);
        }
        signal = shutdown_signal() => {
            tracing::info!(signal, "stopping: finishing work in flight");
        }
    }
    notifier.stopping();
    shutdown.cancel();
    reloader.abort();
    watchdog.abort();
    match tokio::time::timeout(deadline, running).await {
        Ok(result) => result.context("the daemon stopped unexpectedly")??,
        Err(_) => tracing::warn!(
            deadline_seconds = deadline.as_secs(),
            "work in flight did not finish before the deadline; its claims are taken back at the next start"
        ),
    }
    // The status server answered 503 on /readyz while work in flight finished; it stops last.
    status.stop().await;
    app.store.close().await;
    tracing::info!("tthc-sync stopped");
    Ok(ExitCode::SUCCESS)
}

/// Re-reads the mapping tables on every SIGHUP, for as long as the daemon runs.
async fn reload_on_sighup(app: Arc<App>, notifier: Notifier) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(stream) => stream,
        Err(error) => {
            tracing::warn!(error = %error, "cannot listen for SIGHUP; the mapping tables are read at start only");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the mapping tables");
        notifier.reloading();
        app.reload_tables();
        notifier.ready();
    }
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

/// Checks the configuration as `run` would use it; `offline` leaves out the source's and the portal's
/// secrets and the status token, which the ledger-only commands do without.
pub fn check_config(config: &Path, offline: bool) -> anyhow::Result<ExitCode> {
    use crate::portal::client::PortalClient;
    use crate::source::client::SourceClient;
    let settings = Settings::load(Some(config))?;
    if offline {
        PortalClient::offline(&settings.portal)?;
        SourceClient::offline(&settings.source)?;
    } else {
        PortalClient::new(&settings.portal, RetryPolicy::none())?;
        SourceClient::new(&settings.source, RetryPolicy::none())?;
        settings.status.token()?;
    }
    settings.store.password()?;
    if let Some(path) = &settings.mapping.tables_file {
        match MappingTables::load(path) {
            Ok(tables) => println!("{}", describe_tables(path, &tables)),
            Err(TablesError::Problems(problems)) => {
                eprintln!(
                    "configuration key `mapping.tables_file`: {} has {} problem(s):",
                    path.display(),
                    problems.len()
                );
                for problem in &problems {
                    eprintln!("  - {problem}");
                }
                return Ok(ExitCode::FAILURE);
            }
            Err(error) => {
                return Err(anyhow::Error::new(error).context(format!(
                    "configuration key `mapping.tables_file` ({})",
                    path.display()
                )));
            }
        }
    }
    for warning in settings.warnings(Some(config)) {
        eprintln!("warning: {warning}");
    }
    if offline {
        println!(
            "configuration {} is valid for the ledger-only commands (the source's and the portal's secrets were not checked)",
            config.display()
        );
    } else {
        println!("configuration {} is valid", config.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// One line saying what a valid tables file holds.
fn describe_tables(path: &Path, tables: &MappingTables) -> String {
    let statuses = match &tables.statuses {
        Some(statuses) => format!("its own status table ({} statuses)", statuses.len()),
        None => "the default status table".to_owned(),
    };
    format!(
        "mapping tables {}: {} unit(s), {} procedure(s), {} succession(s), {statuses}; fingerprint {}",
        path.display(),
        tables.units.len(),
        tables.procedures.len(),
        tables.successions.len(),
        &tables.fingerprint()[..16]
    )
}
