//! `tthc-sync store copy`: moves the ledger between SQLite and PostgreSQL ([`crate::store::copy`]) and
//! prints a per-table summary of the verified copy.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::report::render::Lang;
use crate::store::copy::{self, CopyOptions, CopyReport, DEFAULT_BATCH_ROWS, Endpoint};

#[derive(Subcommand, Debug)]
pub enum StoreCommand {
    /// Copy the whole ledger from one store to another (SQLite file or postgres:// URL, either way),
    /// with the daemon stopped; resumable, verified table by table at the end.
    Copy(CopyArgs),
}

#[derive(Args, Debug)]
pub struct CopyArgs {
    /// The ledger to copy: a SQLite file, or a postgres:// URL. Only read.
    #[arg(long)]
    pub from: String,
    /// Where to copy it: a SQLite file (created if missing), or a postgres:// URL (migrated first).
    #[arg(long)]
    pub to: String,
    /// Empty a target that already holds a ledger or an unfinished copy, then copy anew.
    #[arg(long)]
    pub force: bool,
    /// Continue an unfinished copy from the same source after its last committed page.
    #[arg(long)]
    pub resume: bool,
    /// Rows per page; each page is one transaction in the target.
    #[arg(long, default_value_t = DEFAULT_BATCH_ROWS)]
    pub batch_rows: usize,
    #[arg(long, value_enum, default_value = "vi")]
    pub lang: Lang,
}

pub async fn run(command: StoreCommand) -> anyhow::Result<ExitCode> {
    match command {
        StoreCommand::Copy(args) => copy_command(args).await,
    }
}

async fn copy_command(args: CopyArgs) -> anyhow::Result<ExitCode> {
    let (from, to) = (Endpoint::parse(&args.from), Endpoint::parse(&args.to));
    let options = CopyOptions {
        force: args.force,
        resume: args.resume,
        batch_rows: args.batch_rows,
        stop_after_pages: None,
    };
    let started = std::time::Instant::now();
    let mut on_page = |table: &str, rows: u64| eprintln!("{table}: {rows}");
    let report = copy::copy_ledger(&from, &to, &options, &mut on_page)
        .await
        .with_context(|| {
            format!(
                "failed to copy the ledger {} to {}",
                from.describe(),
                to.describe()
            )
        })?;
    let mut out = std::io::stdout().lock();
    out.write_all(summary(&report, started.elapsed(), args.lang).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// The per-table summary of a verified copy, and the rows that came across in flight.
fn summary(report: &CopyReport, elapsed: std::time::Duration, lang: Lang) -> String {
    let vi = lang == Lang::Vi;
    let mut text = String::new();
    let heading = if vi {
        format!(
            "Đã chép sổ cái {} → {}{}\n",
            report.source,
            report.target,
            if report.resumed {
                " (tiếp tục)"
            } else {
                ""
            }
        )
    } else {
        format!(
            "Copied the ledger {} → {}{}\n",
            report.source,
            report.target,
            if report.resumed { " (resumed)" } else { "" }
        )
    };
    text.push_str(&heading);
    let (table, rows, now, hash) = if vi {
        ("Bảng", "Số dòng", "Chép lần này", "Mã băm nội dung")
    } else {
        ("Table", "Rows", "Copied now", "Content hash")
    };
    text.push_str(&format!("{table:<16} {rows:>10} {now:>13}  {hash}\n"));
    for line in &report.tables {
        text.push_str(&format!(
            "{:<16} {:>10} {:>13}  {}\n",
            line.table, line.rows, line.copied_now, line.hash
        ));
    }
    text.push_str(&if vi {
        format!(
            "Đã kiểm tra: số dòng và mã băm khớp ở cả hai bên, mọi bảng ({:.1} s).\n",
            elapsed.as_secs_f64()
        )
    } else {
        format!(
            "Verified: row counts and hashes match on both sides, every table ({:.1} s).\n",
            elapsed.as_secs_f64()
        )
    });
    for flights in &report.flights {
        let owner = flights.owner.as_deref().unwrap_or("-");
        let until = flights.lease_until.unwrap_or_default();
        text.push_str(&if vi {
            format!(
                "{}: {} dòng đang gửi dở của phiên bản {owner}; trả lại hàng đợi khi hợp đồng thuê hết hạn ({until} ms Unix) hoặc ngay khi phiên bản {owner} khởi động trên sổ cái mới.\n",
                flights.table, flights.rows
            )
        } else {
            format!(
                "{}: {} rows in flight for instance {owner}; they return to the queue when the lease lapses ({until} Unix ms) or at once when instance {owner} starts on the new ledger.\n",
                flights.table, flights.rows
            )
        });
    }
    text
}
