//! The operators' commands on the ledger, safe beside a running daemon: `reconcile`, `report`,
//! `failures`, `retry` and `resync`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use jiff::Timestamp;
use jiff::civil::Date;

use crate::actors::Actor;
use crate::app::{App, Sides, vietnam_today};
use crate::config::Settings;
use crate::reconcile::fetch::{self, Backfill};
use crate::reconcile::select::LedgerIndex;
use crate::reconcile::{Counts, UnitLine, sum_by_unit};
use crate::report::lines::{OtherSides, unit_lines};
use crate::report::render::{self, Format, Lang, Sheet};
use crate::store::FailureRow;
use crate::sync::ingest::IngestSink;
use crate::unit_key::{UnitKey, owner_of};

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
    /// Only this unit: a key as the report shows it (portal code, `agency:<id>` for an unmapped
    /// source agency, `unknown` for records without an agency).
    #[arg(long)]
    pub unit: Option<UnitKey>,
    #[arg(long, value_enum, default_value = "vi")]
    pub lang: Lang,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub period: Period,
    /// Only this unit (a key as the report shows it).
    #[arg(long)]
    pub unit: Option<UnitKey>,
    /// Only the reasons of this actor in the reasons column (unit, administrator, portal, nobody).
    #[arg(long, value_enum)]
    pub actor: Option<Actor>,
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
    /// Only this unit: a key as the report shows it (portal code, `agency:<id>`, `unknown`).
    #[arg(long)]
    pub unit: Option<String>,
    /// Only this reason (`unmapped_unit`, `portal_2`, ...).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only the reasons this actor must act on (unit, administrator, portal, nobody).
    #[arg(long, value_enum)]
    pub actor: Option<Actor>,
    /// One correction workbook per unit (`--format xlsx --output DIR`): what each unit must fix.
    #[arg(long)]
    pub by_unit: bool,
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
    /// Only the reasons this actor must act on (unit, administrator, portal, nobody).
    #[arg(long, value_enum)]
    pub actor: Option<Actor>,
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
    /// Only this unit (a key as the report shows it).
    #[arg(long)]
    pub unit: Option<UnitKey>,
}

/// The daemon's parts, built for a command: nothing is started and no claim is touched. Only the sides
/// the command talks to get their secrets, so that the ledger-only commands run where none are given.
async fn app(common: &Common, sides: impl FnOnce(&Settings) -> Sides) -> anyhow::Result<App> {
    let settings = Settings::load(Some(&common.config))?;
    let sides = sides(&settings);
    App::build_for(settings, sides).await
}

pub async fn reconcile(args: ReconcileArgs) -> anyhow::Result<ExitCode> {
    let (from, to) = args.period.resolve()?;
    let app = app(&args.common, |_| Sides::BOTH).await?;
    let outcome = app.reconciler().run(from, to, args.unit.as_ref()).await?;
    for note in &outcome.notes {
        eprintln!("tthc-sync: {note}");
    }
    if let Some(unit) = &args.unit {
        anyhow::ensure!(
            !outcome.lines.is_empty(),
            "unit {unit} is neither in the ledger nor counted by the source for {from} → {to}"
        );
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
    let offline = args.offline;
    let app = app(&args.common, |_| {
        if offline { Sides::NONE } else { Sides::BOTH }
    })
    .await?;
    let (from_day, to_day) = (from.to_string(), to.to_string());
    let mut notes = Vec::new();
    let sides = if args.offline {
        OtherSides::Stored
    } else {
        let reconciler = app.reconciler();
        let source = reconciler
            .source_counts(&from_day, &to_day, &mut notes)
            .await;
        let portal = reconciler
            .portal_counts(from, to, &mut notes)
            .await
            .as_ref()
            .map(sum_by_unit);
        OtherSides::Live(Counts {
            source,
            portal,
            ..Counts::default()
        })
    };
    let mut lines = unit_lines(
        app.store.as_ref(),
        &from_day,
        &to_day,
        args.unit.as_ref(),
        sides,
    )
    .await?;
    if let Some(unit) = &args.unit
        && lines.is_empty()
    {
        let key = unit.to_string();
        let index = LedgerIndex::read(app.store.as_ref()).await?;
        anyhow::ensure!(
            index.keys().any(|known| known == key),
            "unit {key} is not in the ledger; its units are: {}",
            index.keys().take(20).collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(actor) = args.actor {
        for line in &mut lines {
            line.reasons
                .retain(|reason| crate::actors::triage_of(&reason.code).actor == actor);
        }
    }
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
    let app = app(&args.common, |_| Sides::NONE).await?;
    let index = LedgerIndex::read(app.store.as_ref()).await?;
    let filter = index.filter(
        args.unit.as_deref(),
        args.reason.as_deref(),
        args.actor,
        None,
    )?;
    let failures = app.store.failures(&filter, args.limit).await?;
    let owners = index.owners();
    if args.by_unit {
        anyhow::ensure!(
            args.format == Format::Xlsx,
            "--by-unit writes correction workbooks: give --format xlsx --output DIR"
        );
        let dir = args
            .output
            .as_ref()
            .context("--by-unit needs --output DIR (a directory for the workbooks)")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut by_unit: std::collections::BTreeMap<String, Vec<FailureRow>> =
            std::collections::BTreeMap::new();
        for failure in failures {
            let key = owner_of(
                failure.unit.as_deref(),
                failure.source_agency_id.as_deref(),
                owners,
            );
            by_unit.entry(key.to_string()).or_default().push(failure);
        }
        for (key, rows) in &by_unit {
            let path = dir.join(render::workbook_file_name(key));
            let bytes = render::corrections_workbook(key, rows, owners)?;
            std::fs::write(&path, bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
            println!("{}\t{}\t{}", key, rows.len(), path.display());
        }
        eprintln!(
            "tthc-sync: {} correction workbook(s) written to {}",
            by_unit.len(),
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    match args.format {
        Format::Json => write_json(
            args.output.as_ref(),
            &render::failures_json(&failures, owners, Timestamp::now()),
        )?,
        format => write_sheet(
            &render::failures_sheet(&failures, owners, args.lang),
            format,
            args.lang,
            args.output.as_ref(),
        )?,
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn retry(args: RetryArgs) -> anyhow::Result<ExitCode> {
    let app = app(&args.common, |_| Sides::NONE).await?;
    let index = LedgerIndex::read(app.store.as_ref()).await?;
    let filter = index.filter(
        args.unit.as_deref(),
        args.reason.as_deref(),
        args.actor,
        args.dossier.as_deref(),
    )?;
    if let Some(code) = &args.dossier {
        anyhow::ensure!(
            app.store.dossier_state(code).await?.is_some(),
            "dossier {code} is not in the ledger"
        );
    }
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
    // The source is read; the portal is asked only by the catalog pre-flight, when it is on.
    let app = app(&args.common, |settings| Sides {
        source: true,
        portal: settings.portal.preflight,
    })
    .await?;
    let (from_day, to_day) = (args.from.to_string(), args.to.to_string());
    let buckets = app.store.ledger_buckets(&from_day, &to_day, None).await?;
    let owner = crate::reconcile::agency_units(&buckets);
    drop(buckets);
    let mut sink =
        IngestSink::new(app.store.clone(), app.tables(), app.catalog.clone()).without_cursor();
    sink.max_record_bytes = app.settings.source.max_record_bytes;
    let mut backfill = Backfill::new(app.source.clone(), sink, fetch::CHUNK);
    let mut notes = Vec::new();
    let mut matched_unit = args.unit.is_none();
    // The period goes a month of counts at a time, each (agency, day) a page of ids at a time, and each
    // chunk of ids is fetched and written before the next: memory stays flat whatever the period.
    let mut window_from = args.from;
    while window_from <= args.to {
        let window_to = window_from
            .checked_add(jiff::Span::new().days(30))
            .map_or(args.to, |end| end.min(args.to));
        let counts = app
            .source
            .count_by_agency(&window_from.to_string(), &window_to.to_string())
            .await
            .context("the source's counts list the agencies and days to read again")?;
        for row in counts {
            let unit = owner_of(None, Some(&row.agency_id), &owner);
            if args.unit.as_ref().is_some_and(|wanted| *wanted != unit) {
                continue;
            }
            matched_unit = true;
            for page in 0.. {
                let (items, last) = app
                    .source
                    .ids_page(&row.agency_id, &row.date, page, IDS_PAGE)
                    .await
                    .with_context(|| format!("listing {} on {}", row.agency_id, row.date))?;
                backfill
                    .push(items.into_iter().map(|item| item.id), &mut notes)
                    .await?;
                if last {
                    break;
                }
            }
        }
        match window_to.tomorrow() {
            Ok(next) if window_to < args.to => window_from = next,
            _ => break,
        }
    }
    if let Some(unit) = &args.unit
        && !matched_unit
    {
        // Not counted by the source in this period: fine for a unit the ledger knows, an error for a
        // key nobody knows (a typo must not read as "nothing to do").
        let index = LedgerIndex::read(app.store.as_ref()).await?;
        let key = unit.to_string();
        anyhow::ensure!(
            index.keys().any(|known| known == key),
            "unit {key} is neither in the ledger nor counted by the source from {from_day} to {to_day}"
        );
    }
    let (fetched, stats) = backfill.finish(&mut notes).await?;
    for note in &notes {
        eprintln!("tthc-sync: {note}");
    }
    println!(
        "read {} of {} dossier(s) again ({from_day} → {to_day}): {} changed, queued {} for the portal, {} held back, {} skipped",
        fetched.fetched,
        fetched.listed,
        stats.received - stats.unchanged,
        stats.queued,
        stats.held,
        stats.skipped
    );
    tracing::debug!(
        chunks = fetched.chunks,
        peak_held = fetched.peak_held,
        "resync written chunk by chunk"
    );
    Ok(ExitCode::SUCCESS)
}

/// Identifiers asked of the source per page while reading a period again.
const IDS_PAGE: u32 = 500;

fn write_sheet(
    sheet: &Sheet,
    format: Format,
    lang: Lang,
    output: Option<&PathBuf>,
) -> anyhow::Result<()> {
    let bytes = match format {
        Format::Table => render::table(sheet, lang).into_bytes(),
        Format::Csv => render::csv(sheet, lang)?,
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
