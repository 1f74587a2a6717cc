//! The `tthc-sync` command: parses the command line, sets up logging, loads configuration and dispatches.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use tthc_sync::commands;

/// mimalloc rather than the system allocator: normalizing a record allocates dozens of small strings (the
/// parsed fields, the cleaned values, the payloads), and with glibc's malloc parsing records ran at about
/// a third of the speed. The normalization benchmark sets the same allocator, so that it measures what
/// runs here.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "tthc-sync",
    version,
    about = "Synchronizes administrative dossiers to the National Public Service Portal"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: poll the source, push to the portal, until SIGTERM or SIGINT.
    Run {
        #[arg(long, short, env = "TTHC_SYNC_CONFIG")]
        config: PathBuf,
    },
    /// Validate a configuration file (and the environment) without starting.
    CheckConfig {
        #[arg(long, short, env = "TTHC_SYNC_CONFIG")]
        config: PathBuf,
        /// Check what the ledger-only commands need, without the source's and the portal's secrets
        /// and the status token.
        #[arg(long)]
        offline: bool,
    },
    /// Print what the daemon would send for source records (or why it would not), as JSON.
    Normalize(commands::normalize::NormalizeArgs),
    /// Run both simulators in-process and sync into a local SQLite file: no credentials needed.
    Demo(commands::demo::DemoArgs),
    /// Reconcile the source, the ledger and the portal per unit and day; fetch and queue what is missing.
    Reconcile(commands::ledger::ReconcileArgs),
    /// Per-unit report: counts, completeness, reasons, the oldest unsent dossier (table, JSON, CSV, xlsx).
    Report(commands::ledger::ReportArgs),
    /// The dossiers held back or refused, with reasons and masked personal data.
    Failures(commands::ledger::FailuresArgs),
    /// Queue matching held-back or refused dossiers again now.
    Retry(commands::ledger::RetryArgs),
    /// Read a period of reception days from the source again (a backfill), without moving the cursor.
    Resync(commands::ledger::ResyncArgs),
    /// Mapping-table helpers: `suggest` lists what the tables lack, as a fragment to fill in.
    Mappings {
        #[command(subcommand)]
        command: commands::mappings::MappingsCommand,
    },
    /// Ledger helpers: `copy` moves the whole ledger between SQLite and PostgreSQL, either way.
    Store {
        #[command(subcommand)]
        command: commands::store::StoreCommand,
    },
    /// Run one simulator standalone.
    Simulate {
        #[command(subcommand)]
        side: commands::simulate::Side,
    },
}

/// Freed memory goes back to the system at once rather than after mimalloc's default second: the daemon's
/// peak resident memory in the end-to-end benchmark went from 114 MB to 88 MB, for no CPU time that one
/// run could tell from noise.
fn return_freed_memory_at_once() {
    // `mi_option_purge_delay` in mimalloc.h (v3, the version libmimalloc-sys 0.1.49 builds), which the
    // Rust bindings do not name.
    const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;
    // SAFETY: `mi_option_set` only stores an option's value; mimalloc reads it at each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
}

/// No transparent huge pages for this process. With them, the allocator's arena was backed by 2 MiB pages
/// that a few live objects kept resident: an idle daemon held 48 MB instead of 28, and a 20,000-dossier
/// sync peaked at 75–82 MB instead of 52–53, for the same CPU time (README, "End to end"). mimalloc is
/// built without its `madvise(MADV_HUGEPAGE)` (the `no_thp` feature), which covers kernels in `madvise`
/// mode; this flag covers those in `always` mode, and the C library's heap under SQLite as well.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: `PR_SET_THP_DISABLE` takes plain integers and only sets a flag on this process's memory.
    // A kernel without it answers EINVAL, and the daemon then runs as before, so the result is ignored.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

fn main() -> ExitCode {
    no_transparent_huge_pages();
    return_freed_memory_at_once();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tthc-sync: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run { config } => commands::run::run(&config).await,
            Command::CheckConfig { config, offline } => {
                commands::run::check_config(&config, offline)
            }
            Command::Normalize(args) => commands::normalize::run(args),
            Command::Demo(args) => commands::demo::run(args).await,
            Command::Reconcile(args) => commands::ledger::reconcile(args).await,
            Command::Report(args) => commands::ledger::report(args).await,
            Command::Failures(args) => commands::ledger::failures(args).await,
            Command::Retry(args) => commands::ledger::retry(args).await,
            Command::Resync(args) => commands::ledger::resync(args).await,
            Command::Mappings { command } => commands::mappings::run(command).await,
            Command::Store { command } => commands::store::run(command).await,
            Command::Simulate { side } => commands::simulate::run(side).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tthc-sync: {error:#}");
            ExitCode::FAILURE
        }
    }
}
