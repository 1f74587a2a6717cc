//! The operators' commands on the ledger, safe beside a running daemon: `reconcile`, `report`,
//! `failures`, `retry` and `resync`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use jiff::Timestamp;
use jiff::civil::Date;

use crate::app::{App, vietnam_today};
use crate::config::Settings;
use crate::reconcile::render::{self, Format, Lang, Sheet};
use crate::reconcile::{Counts, UnitLine, attach_indicators, lines, sum_by_unit};
use crate::source::feed::FeedRecord;
use crate::store::DossierFilter;
use crate::sync::ingest::IngestSink;

/// What every ledger command takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    #[arg(long, short, env = "TTHC_SYNC_CONFIG")]
    pub config: PathBuf,
}

/// A period of reception days (Vietnam time).
#[derive(Args, Debug, Clone)]
pub struct Period {
    /// First reception day, `YYYY-MM-DD` (default: 30 days before --to).
    #[arg(long)]
    pub from: Option<Date>,
    /// Last reception day, `YYYY-MM-DD` (default: today).
    #[arg(long)]
    pub to: Option<Date>,
}

impl Period {
    fn resolve(&self) -> anyhow::Result<(Date, Date)> {
        let to = self.to.unwrap_or_else(vietnam_today);
        let from = match self.from {
            Some(from) => from,
            None => to.checked_sub(jiff::Span::new().days(29))?,
        };
        anyhow::ensure!(from <= to, "--from ({from}) is after --to ({to})");
        Ok((from, to))
    }
}

#[derive(Args, Debug)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub period: Period,
    /// Only this unit (portal code, or `agency:<id>` for an unmapped source agency).
    #[arg(long)]
    pub unit: Option<String>,
    #[arg(long, value_enum, default_value = "vi")]
    pub lang: Lang,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub period: Period,
    #[arg(long)]
    pub unit: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    #[arg(long, value_enum, default_value = "vi")]
    pub lang: Lang,
    /// Write to this file instead of standard output (xlsx needs one).
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Use the ledger alone: do not ask the source and the portal for their counts.
    #[arg(long)]
    pub offline: bool,
    /// Exit with status 3 when any unit has dossiers not on the portal whose current version arrived
    /// more than --gap-hours ago (for cron jobs and monitoring checks).
    #[arg(long)]
    pub fail_on_gaps: bool,
    #[arg(long, default_value_t = 24)]
    pub gap_hours: u64,
}

#[derive(Args, Debug)]
pub struct FailuresArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long)]
    pub unit: Option<String>,
    /// Only this reason (`unmapped_unit`, `portal_2`, ...).
    #[arg(long)]
    pub reason: Option<String>,
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    #[arg(long, value_enum, default_value = "vi")]
    pub lang: Lang,
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// At most this many dossiers.
    #[arg(long, default_value_t = 10_000)]
    pub limit: usize,
}

#[derive(Args, Debug)]
pub struct RetryArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long)]
    pub unit: Option<String>,
    #[arg(long)]
    pub reason: Option<String>,
    /// One dossier, by its code (MaHoSo).
    #[arg(long)]
    pub dossier: Option<String>,
}

#[derive(Args, Debug)]
pub struct ResyncArgs {
    #[command(flatten)]
    pub common: Common,
    /// First reception day, `YYYY-MM-DD`.
    #[arg(long)]
    pub from: Date,
    /// Last reception day, `YYYY-MM-DD`.
    #[arg(long)]
    pub to: Date,
    #[arg(long)]
    pub unit: Option<String>,
}

/// The daemon's parts, built for a command: nothing is started and no claim is touched.
async fn app(common: &Common) -> anyhow::Result<App> {
    let settings = Settings::load(Some(&common.config))?;
    App::build(settings).await
}

pub async fn reconcile(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let (from, to) = args.period.resolve()?;
    let app = app(&args.common).await?;
    let outcome = app.reconciler().run(from, to, args.unit.as_deref()).await?;
    for note in &outcome.notes {
        eprintln!("tthc-sync: {note}");
    }
    print!(
        "{}",
        render::table(&render::report_sheet(&outcome.lines, args.lang), args.lang)
    );
    let incomplete = outcome.lines.iter().filter(|line| !line.complete).count();
    println!(
        "{}",
        match args.lang {
            Lang::Vi => format!(
                "Đối soát {} ({from} → {to}): {} đơn vị, {incomplete} cần xử lý; {} hồ sơ chưa từng nhận được đã được lấy về và đưa vào hàng đợi.",
                outcome.run_id,
                outcome.lines.len(),
                outcome.fetched
            ),
            Lang::En => format!(
                "Reconciliation {} ({from} → {to}): {} units, {incomplete} need attention; {} dossiers never seen before were fetched and queued.",
                outcome.run_id,
                outcome.lines.len(),
                outcome.fetched
            ),
        }
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let (from, to) = args.period.resolve()?;
    let app = app(&args.common).await?;
    let (from_day, to_day) = (from.to_string(), to.to_string());
    let buckets = app
        .store
        .ledger_buckets(&from_day, &to_day, args.unit.as_deref())
        .await?;
    let mut notes = Vec::new();
    let mut counts = Counts::default();
    if !args.offline {
        let reconciler = app.reconciler();
        counts.source = reconciler
            .source_counts(&from_day, &to_day, &mut notes)
            .await;
        counts.portal = reconciler
            .portal_counts(from, to, &mut notes)
            .await
            .as_ref()
            .map(sum_by_unit);
    }
    let mut lines = lines(&buckets, &counts);
    if let Some(unit) = &args.unit {
        lines.retain(|line| &line.unit == unit);
    }
    attach_indicators(
        app.store.as_ref(),
        &mut lines,
        &from_day,
        &to_day,
        args.unit.as_deref(),
    )
    .await?;
    for note in &notes {
        eprintln!("tthc-sync: {note}");
    }
    let now = Timestamp::now();
    match args.format {
        Format::Json => write_json(
            args.output.as_ref(),
            &render::report_json(&lines, &from_day, &to_day, now, &notes),
        )?,
        format => write_sheet(
            &render::report_sheet(&lines, args.lang),
            format,
            args.lang,
            args.output.as_ref(),
        )?,
    }
    if args.fail_on_gaps {
        let threshold = now.as_millisecond() - (args.gap_hours as i64) * 3_600_000;
        let late: Vec<&UnitLine> = lines
            .iter()
            .filter(|line| {
                line.oldest_unsent_at.is_some_and(|at| at <= threshold) || line.missing > 0
            })
            .collect();
        if !late.is_empty() {
            eprintln!(
                "tthc-sync: {} unit(s) have dossiers not on the portal for more than {} hours: {}",
                late.len(),
                args.gap_hours,
                late.iter()
                    .map(|line| line.unit.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return Ok(ExitCode::from(3));
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn failures(args: FailuresArgs) -> anyhow::Result<ExitCode> {
    let app = app(&args.common).await?;
    let filter = DossierFilter {
        unit: args.unit.clone(),
        reason: args.reason.clone(),
        ..DossierFilter::default()
    };
    let failures = app.store.failures(&filter, args.limit).await?;
    match args.format {
        Format::Json => write_json(
            args.output.as_ref(),
            &render::failures_json(&failures, Timestamp::now()),
        )?,
        format => write_sheet(
            &render::failures_sheet(&failures, args.lang),
            format,
            args.lang,
            args.output.as_ref(),
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn retry(args: RetryArgs) -> anyhow::Result<ExitCode> {
    let app = app(&args.common).await?;
    let filter = DossierFilter {
        unit: args.unit,
        reason: args.reason,
        dossier_code: args.dossier,
        ..DossierFilter::default()
    };
    let queued = app
        .store
        .requeue(&filter, Timestamp::now().as_millisecond())
        .await?;
    println!(
        "queued {} dossier(s): {} refused by the portal to send again, {} waiting out a back-off now due, \
         {} held back to normalize again (the running daemon does it at its next poll)",
        queued.total(),
        queued.refused,
        queued.pending,
        queued.held
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn resync(args: ResyncArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.from <= args.to, "--from is after --to");
    let app = Arc::new(app(&args.common).await?);
    let (from_day, to_day) = (args.from.to_string(), args.to.to_string());
    let buckets = app.store.ledger_buckets(&from_day, &to_day, None).await?;
    let owner = crate::reconcile::agency_units(&buckets);
    let counts = app
        .source
        .count_by_agency(&from_day, &to_day)
        .await
        .context("the source's counts list the agencies and days to read again")?;
    let mut ids = Vec::new();
    for row in counts {
        let unit = owner
            .get(&row.agency_id)
            .cloned()
            .unwrap_or_else(|| crate::reconcile::unit_key(None, Some(&row.agency_id)));
        if args.unit.as_ref().is_some_and(|wanted| *wanted != unit) {
            continue;
        }
        let listed = app
            .source
            .ids(&row.agency_id, &row.date)
            .await
            .with_context(|| format!("listing {} on {}", row.agency_id, row.date))?;
        ids.extend(listed.into_iter().map(|item| item.id));
    }
    // Eight fetches at a time: the source is a production system shared with its own users.
    let fetched: Vec<FeedRecord> = futures::stream::iter(ids.iter().cloned())
        .map(|id| {
            let app = app.clone();
            async move {
                match app.source.dossier(&id).await {
                    Ok(Some(raw)) => Some(FeedRecord {
                        id: Some(id),
                        updated: None,
                        raw,
                    }),
                    Ok(None) => None,
                    Err(error) => {
                        eprintln!("tthc-sync: dossier {id} could not be fetched: {error}");
                        None
                    }
                }
            }
        })
        .buffer_unordered(8)
        .filter_map(|record| async move { record })
        .collect()
        .await;
    let read = fetched.len();
    let mut sink =
        IngestSink::new(app.store.clone(), app.tables(), app.catalog.clone()).without_cursor();
    sink.max_record_bytes = app.settings.source.max_record_bytes;
    let mut fetched = fetched.into_iter().peekable();
    while fetched.peek().is_some() {
        sink.write(fetched.by_ref().take(500).collect(), None)
            .await?;
    }
    sink.flush().await?;
    println!(
        "read {read} of {} dossier(s) again ({from_day} → {to_day}): {} changed, queued {} for the portal, {} held back, {} skipped",
        ids.len(),
        sink.stats.received - sink.stats.unchanged,
        sink.stats.queued,
        sink.stats.held,
        sink.stats.skipped
    );
    Ok(ExitCode::SUCCESS)
}

fn write_sheet(
    sheet: &Sheet,
    format: Format,
    lang: Lang,
    output: Option<&PathBuf>,
) -> anyhow::Result<()> {
    let bytes = match format {
        Format::Table => render::table(sheet, lang).into_bytes(),
        Format::Csv => render::csv(sheet)?,
        Format::Xlsx => {
            anyhow::ensure!(output.is_some(), "--format xlsx needs --output FILE.xlsx");
            render::xlsx(sheet)?
        }
        Format::Json => unreachable!("JSON is written by the caller"),
    };
    write_output(output, &bytes)
}

fn write_json(output: Option<&PathBuf>, document: &serde_json::Value) -> anyhow::Result<()> {
    let mut text = serde_json::to_vec_pretty(document)?;
    text.push(b'\n');
    write_output(output, &text)
}

fn write_output(output: Option<&PathBuf>, bytes: &[u8]) -> anyhow::Result<()> {
    match output {
        Some(path) => {
            std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            std::io::stdout().write_all(bytes)?;
            Ok(())
        }
    }
}
