//! The reconciliation log: JSON Lines, one line per unit per run, in a directory of its own. A file per
//! day (Vietnam time), and a new numbered file for the day when one grows past its size limit, so that
//! old days can be archived or deleted by date and no file grows without bound.
//!
//! A line holds codes and counts only: no personal data ever reaches it.

use std::io::Write;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::tz::{Offset, TimeZone};
use serde::Serialize;

use super::UnitLine;

#[derive(Debug, Clone)]
pub struct ReconciliationLog {
    dir: PathBuf,
    max_bytes: u64,
}

/// One line of the log.
#[derive(Serialize)]
struct Line<'a> {
    /// The log line's schema version.
    v: u32,
    run_id: &'a str,
    at: String,
    from: &'a str,
    to: &'a str,
    #[serde(flatten)]
    unit: &'a UnitLine,
}

impl ReconciliationLog {
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> ReconciliationLog {
        ReconciliationLog {
            dir: dir.into(),
            max_bytes: max_bytes.max(1),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one line per unit for the run, to today's file (or the next one when it is full).
    pub fn append(
        &self,
        run_id: &str,
        at: Timestamp,
        from: &str,
        to: &str,
        lines: &[UnitLine],
    ) -> std::io::Result<PathBuf> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(&self.dir)?;
        let local = TimeZone::fixed(Offset::constant(7)).to_datetime(at);
        let day = local.date();
        let at_text = format!("{}+07:00", local.strftime("%Y-%m-%dT%H:%M:%S"));
        let path = self.file_for(&day.to_string());
        let mut text = Vec::new();
        for unit in lines {
            let line = Line {
                v: 1,
                run_id,
                at: at_text.clone(),
                from,
                to,
                unit,
            };
            serde_json::to_writer(&mut text, &line)?;
            text.push(b'\n');
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&path)?;
        file.write_all(&text)?;
        Ok(path)
    }

    /// The day's file with room left: `reconciliation-2026-11-28.jsonl`, then `….1.jsonl`, `….2.jsonl`.
    fn file_for(&self, day: &str) -> PathBuf {
        for index in 0.. {
            let name = if index == 0 {
                format!("reconciliation-{day}.jsonl")
            } else {
                format!("reconciliation-{day}.{index}.jsonl")
            };
            let path = self.dir.join(name);
            match std::fs::metadata(&path) {
                Ok(metadata) if metadata.len() >= self.max_bytes => continue,
                _ => return path,
            }
        }
        unreachable!("the loop returns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_go_to_the_day_file_and_roll_over_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let log = ReconciliationLog::new(dir.path().join("recon"), u64::MAX);
        let line = UnitLine {
            unit: "000.00.01.H60".into(),
            source_count: Some(3),
            ..UnitLine::default()
        };
        // 2026-11-27T20:00Z is already the 28th in Vietnam.
        let at: Timestamp = "2026-11-27T20:00:00Z".parse().unwrap();
        let first = log
            .append(
                "r1",
                at,
                "2026-11-01",
                "2026-11-27",
                std::slice::from_ref(&line),
            )
            .unwrap();
        assert!(first.ends_with("reconciliation-2026-11-28.jsonl"));
        let text = std::fs::read_to_string(&first).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(parsed["v"], 1);
        assert_eq!(parsed["unit"], "000.00.01.H60");
        assert_eq!(parsed["source_count"], 3);
        // A limit of a line and a half: the second run still goes to the first file, which is then full,
        // and the third run opens a numbered one.
        let log = ReconciliationLog::new(dir.path().join("recon"), text.len() as u64 * 3 / 2);
        let second = log
            .append(
                "r2",
                at,
                "2026-11-01",
                "2026-11-27",
                std::slice::from_ref(&line),
            )
            .unwrap();
        assert_eq!(second, first);
        let third = log
            .append("r3", at, "2026-11-01", "2026-11-27", &[line])
            .unwrap();
        assert!(
            third.ends_with("reconciliation-2026-11-28.1.jsonl"),
            "{third:?}"
        );
    }
}
