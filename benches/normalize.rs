//! Normalization throughput: raw source JSON bytes → portal payload bytes and hash, on one core.
//!
//!     cargo bench --bench normalize            # 100,000 generated dossiers
//!     DOSSIERS=20000 cargo bench --bench normalize
//!
//! Prints dossiers/s for the whole path and for its parts (parse only), so that a slow part shows itself
//! as a ratio within one run on a shared machine: per second of wall time, and per second of this
//! thread's CPU time, which other work on the machine does not move as much.
//!
//! It also prints a digest of everything normalization produced (payload bytes, hashes, progress entries,
//! rejections and warnings). The dataset and `now` are fixed, so the digest only moves when behaviour
//! does: an optimization must leave it as it was.

use std::time::{Duration, Instant};

use tthc_sync::normalize::{MappingTables, Outcome, normalize_bytes, parse_record};
use tthc_sync::sim::FaultLevel;
use tthc_sync::sim::generator::{GeneratorConfig, generate};

/// The daemon's allocator (src/main.rs), so that the benchmark measures what the daemon runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this binary without it, and a
    // measurement has nothing to check there (it stays compiled, which is what the test run needs).
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("normalize benchmark: run it with `cargo bench --bench normalize`");
        return;
    }
    let count: usize = std::env::var("DOSSIERS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(100_000);
    // A fixed instant rather than the clock: the generated dates and the future-date rule depend on it,
    // and the digest below must be the same from run to run.
    let now: jiff::Timestamp = "2026-01-15T03:00:00Z".parse().expect("a valid instant");
    let config = GeneratorConfig {
        dossiers: count,
        units: 200,
        ..GeneratorConfig::for_level(FaultLevel::Realistic)
    };
    let records: Vec<Vec<u8>> = generate(&config, now)
        .dossiers
        .iter()
        .map(|dossier| serde_json::to_vec(&dossier.record).expect("generated records serialize"))
        .collect();
    let bytes: usize = records.iter().map(Vec::len).sum();
    let tables = MappingTables::default();

    let clock = Clock::start();
    let mut parsed = 0usize;
    for raw in &records {
        if parse_record(raw).is_ok() {
            parsed += 1;
        }
    }
    let parse = clock.stop();

    let clock = Clock::start();
    let mut payload_bytes = 0usize;
    let mut sendable = 0usize;
    for raw in &records {
        let normalized = normalize_bytes(raw, &tables, now);
        if let Outcome::Dossier(dossier) = &normalized.outcome {
            payload_bytes += dossier.payload.len() + dossier.hash.len();
            sendable += 1;
        }
    }
    let full = clock.stop();

    // Outside the timed loop: the Debug form of each result covers every field, finding and payload byte.
    let mut digest = blake3::Hasher::new();
    for raw in &records {
        let normalized = normalize_bytes(raw, &tables, now);
        digest.update(format!("{normalized:?}").as_bytes());
        digest.update(b"\n");
    }

    println!(
        "records={count} input_mib={:.1} parsed={parsed} sendable={sendable} payload_mib={:.1}",
        bytes as f64 / 1_048_576.0,
        payload_bytes as f64 / 1_048_576.0
    );
    parse.report("parse_only", count);
    full.report("raw_to_payload_and_hash", count);
    println!("outcome_digest={}", digest.finalize().to_hex());
}

/// Wall time and, where Linux tells it, the CPU time of this thread. On a shared machine the thread may
/// get a fraction of a core, which wall time counts as slowness of the code; CPU time does not.
struct Clock {
    wall: Instant,
    cpu: Option<Duration>,
}

struct Measured {
    wall: Duration,
    cpu: Option<Duration>,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            wall: Instant::now(),
            cpu: thread_cpu_time(),
        }
    }

    fn stop(self) -> Measured {
        let cpu = thread_cpu_time()
            .zip(self.cpu)
            .map(|(now, start)| now.saturating_sub(start));
        Measured {
            wall: self.wall.elapsed(),
            cpu,
        }
    }
}

impl Measured {
    fn report(&self, name: &str, count: usize) {
        let rate = |time: Duration| count as f64 / time.as_secs_f64();
        println!("{name}_dossiers_per_second={:.0}", rate(self.wall));
        if let Some(cpu) = self.cpu {
            println!("{name}_dossiers_per_cpu_second={:.0}", rate(cpu));
        }
    }
}

/// The first field of `/proc/thread-self/schedstat`: nanoseconds this thread has run on a CPU.
fn thread_cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanoseconds = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanoseconds))
}
