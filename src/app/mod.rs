//! The daemon, built then run: [`App::build`] turns settings into clients, a store and tables;
//! [`App::run`] polls and pushes until the shutdown token fires, then stops at a safe point.
//!
//! - `loops`: the poll loop, the push workers and the reconciliation schedule, and [`App::run`].
//! - `leadership`: which instance polls the source when several share a ledger.
//! - `maintenance`: held-back dossiers normalized again, the retention pass, recent reconciliations.
//! - `health`: the signs of life the watchdog, `/readyz` and the dashboard read.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use jiff::Timestamp;
use jiff::tz::{Offset, TimeZone};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Settings, initial_from};
use crate::events;
use crate::http::RetryPolicy;
use crate::metrics::SyncMetrics;
use crate::normalize::MappingTables;
use crate::notify::{HEARTBEAT_EVERY, unix_millis};
use crate::portal::client::PortalClient;
use crate::reconcile::Reconciler;
use crate::reconcile::log::ReconciliationLog;
use crate::source::client::SourceClient;
use crate::source::feed::{self, FeedError, FeedOptions, FeedRecord, FeedSink, PollStats};
use crate::store::{RENORMALIZE_REQUESTED, Redaction, Store};
use crate::sync::catalog::{CatalogOptions, PortalCatalog};
use crate::sync::ingest::{FEED_CURSOR, IngestSink, IngestStats, RenormalizeStats};
use crate::sync::push::{PushCounters, Pusher};

mod health;
mod leadership;
mod loops;
mod maintenance;

pub use health::{Health, POLL_STALL};
use leadership::POLL_ROLE;
pub use loops::poll_backoff;

/// The sides a command talks to: it is given their secrets, and only theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sides {
    pub source: bool,
    pub portal: bool,
}

impl Sides {
    /// The daemon, `reconcile`, `report` without `--offline`.
    pub const BOTH: Sides = Sides {
        source: true,
        portal: true,
    };
    /// The ledger-only commands: `report --offline`, `failures`, `retry`.
    pub const NONE: Sides = Sides {
        source: false,
        portal: false,
    };
}

pub struct App {
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub source: Arc<SourceClient>,
    pub portal: Arc<PortalClient>,
    /// The mapping tables in force; replaced whole by a reload (SIGHUP).
    tables: RwLock<Arc<MappingTables>>,
    /// The catalog pre-flight (`portal.preflight`).
    pub catalog: Option<Arc<PortalCatalog>>,
    pub counters: Arc<PushCounters>,
    pub metrics: Arc<SyncMetrics>,
    pub health: Arc<Health>,
    work_available: Arc<Notify>,
    /// Set by a reload that changed the tables: the poll loop normalizes held-back dossiers again.
    renormalize_requested: AtomicBool,
    /// Wakes the poll loop early (a reload).
    poll_now: Notify,
}

/// Where the fingerprint of the tables the held-back dossiers were last normalized with is kept.
const TABLES_FINGERPRINT: &str = "mapping_tables_fingerprint";
/// When every held-back dossier was last normalized again (Unix ms).
const RENORMALIZED_AT: &str = "held_renormalized_at";
/// Held-back dossiers normalized again per transaction.
const RENORMALIZE_PAGE: usize = 500;
/// When the retention pass last ran (Unix ms).
const RETENTION_RAN_AT: &str = "retention_ran_at";
/// How often the retention pass runs.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// Dossiers redacted per transaction.
const RETENTION_PAGE: usize = 500;

impl App {
    pub async fn build(settings: Settings) -> anyhow::Result<App> {
        App::build_for(settings, Sides::BOTH).await
    }

    /// Builds the parts a command needs: only the sides in `sides` get their secrets (the others'
    /// clients fail every call without asking), and the catalog pre-flight only with the portal's.
    pub async fn build_for(settings: Settings, sides: Sides) -> anyhow::Result<App> {
        let retry = RetryPolicy {
            min_delay: Duration::from_millis(settings.portal.retry_min_delay_ms),
            max_delay: Duration::from_secs(settings.portal.retry_max_delay_seconds),
            max_times: settings.portal.call_retries,
        };
        let source = if sides.source {
            SourceClient::new(&settings.source, retry)
        } else {
            SourceClient::offline(&settings.source)
        }
        .context("failed to set up the source client")?;
        let portal = if sides.portal {
            PortalClient::new(&settings.portal, retry)
        } else {
            PortalClient::offline(&settings.portal)
        }
        .context("failed to set up the portal client")?;
        let tables = load_tables(&settings)?;
        let portal = Arc::new(portal);
        let catalog = (settings.portal.preflight && sides.portal).then(|| {
            Arc::new(PortalCatalog::new(
                portal.clone(),
                CatalogOptions {
                    refresh: Duration::from_secs(settings.portal.catalog_refresh_minutes * 60),
                    call_timeout: Duration::from_secs(settings.portal.catalog_timeout_seconds),
                    retry_after_failure: Duration::from_secs(60),
                },
            ))
        });
        let store = crate::store::open(&settings.store).await?;
        Ok(App {
            store,
            source: Arc::new(source),
            portal,
            tables: RwLock::new(Arc::new(tables)),
            catalog,
            counters: Arc::new(PushCounters::default()),
            metrics: Arc::new(SyncMetrics::default()),
            health: Arc::new(Health::default()),
            work_available: Arc::new(Notify::new()),
            renormalize_requested: AtomicBool::new(false),
            poll_now: Notify::new(),
            settings,
        })
    }

    /// The mapping tables in force.
    pub fn tables(&self) -> Arc<MappingTables> {
        self.tables
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Reads the mapping tables file again (SIGHUP). Invalid tables are refused with the reason logged
    /// and the tables in force stay; changed tables take effect at once, and the held-back dossiers are
    /// normalized again under them. Returns whether the tables changed.
    pub fn reload_tables(&self) -> bool {
        let tables = match load_tables(&self.settings) {
            Ok(tables) => tables,
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "the mapping tables were not reloaded; the tables in force stay");
                return false;
            }
        };
        let fingerprint = tables.fingerprint();
        let changed = self.tables().fingerprint() != fingerprint;
        if changed {
            *self
                .tables
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(tables);
            tracing::info!(fingerprint = %&fingerprint[..16], "mapping tables reloaded; held-back dossiers will be normalized again");
        } else {
            tracing::info!("mapping tables reloaded: no change");
        }
        // A reload is also the operator's way to say "the portal's catalogs changed": ask again.
        self.renormalize_requested.store(true, Ordering::Relaxed);
        self.poll_now.notify_one();
        changed
    }

    /// A reconciler over this daemon's clients, store and tables.
    pub fn reconciler(&self) -> Reconciler {
        Reconciler {
            store: self.store.clone(),
            source: self.source.clone(),
            portal: Some(self.portal.clone()),
            catalog: self.catalog.clone(),
            tables: self.tables(),
            log: Some(
                ReconciliationLog::new(
                    self.settings.reconciliation_log_dir(),
                    self.settings.reconcile.log_max_bytes,
                )
                .with_retention_days(self.settings.reconcile.log_retention_days),
            ),
            portal_sample: self.settings.reconcile.portal_sample,
            portal_lookups: self.settings.reconcile.portal_lookups,
            max_record_bytes: self.settings.source.max_record_bytes,
            content: crate::reconcile::content::ContentLimits {
                recent_hours: self.settings.reconcile.content_check_hours,
                sample_per_unit: self.settings.reconcile.content_sample,
                budget: self.settings.reconcile.content_budget,
            },
        }
    }

    /// A pusher. Workers of one instance share its owner name, so that a restart takes back all of
    /// their claims at once.
    pub fn pusher(&self) -> Pusher {
        Pusher {
            store: self.store.clone(),
            portal: self.portal.clone(),
            owner: self.settings.store.instance.clone(),
            batch_size: self.settings.portal.batch_size,
            lease: Duration::from_secs(self.settings.store.lease_seconds),
            redeliver_base: Duration::from_secs(self.settings.portal.redeliver_base_seconds),
            redeliver_cap: Duration::from_secs(self.settings.portal.redeliver_cap_seconds),
            counters: self.counters.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The mapping tables the settings name (none: the built-in rules alone).
pub fn load_tables(settings: &Settings) -> anyhow::Result<MappingTables> {
    match &settings.mapping.tables_file {
        Some(path) => MappingTables::load(path).with_context(|| {
            format!(
                "configuration key `mapping.tables_file` ({})",
                path.display()
            )
        }),
        None => Ok(MappingTables::default()),
    }
}

/// Today in Vietnam (UTC+07:00, no daylight saving): the day reception days are counted in.
pub fn vietnam_today() -> jiff::civil::Date {
    TimeZone::fixed(Offset::constant(7))
        .to_datetime(Timestamp::now())
        .date()
}
