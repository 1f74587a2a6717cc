//! How a test that cannot run here says so where a reader sees it. cargo hides a passing test's output,
//! so a test that skips itself also appends a line (`test name: why`) to the skip log, and `.ci/test`
//! (the README's test command, which `.ci/run` calls) prints how many were skipped and why under its
//! closing line. The log is `TTHC_SYNC_SKIP_LOG` when set (`.ci/test` sets a fresh file), else
//! `skipped-tests.log` in cargo's temporary directory for integration tests (`target/tmp/`).

use std::io::Write;
use std::path::PathBuf;

/// The file that skips are appended to.
pub fn skip_log() -> PathBuf {
    std::env::var_os("TTHC_SYNC_SKIP_LOG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests.log"))
}

/// Records that the running test was skipped because of `reason`: on stderr (shown with `--nocapture`)
/// and in the skip log, under the test's name (libtest names each test's thread after the test). Under
/// `CI=true` a skip is a failure instead: CI has every service and tool the tests need.
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: {reason}; under CI=true this test runs, it is not skipped"
    );
    eprintln!("{test} skipped: {reason}");
    let line = format!("{test}: {reason}\n");
    // One write of a short line to a file opened for appending: lines from tests running in parallel
    // processes do not interleave.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skip_log())
        .and_then(|mut file| file.write_all(line.as_bytes()));
    if let Err(error) = written {
        eprintln!(
            "could not record the skip in {}: {error}",
            skip_log().display()
        );
    }
}
