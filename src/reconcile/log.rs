//! The reconciliation log: JSON Lines, one line per unit per run, in a directory of its own. A file per
//! day (Vietnam time), and a new numbered file for the day when one grows past its size limit, so that
//! old days can be archived or deleted by date and no file grows without bound.
//!
//! Files older than `reconcile.log_retention_days` (by the day in their name) are deleted each time a
//! run writes the log.
//!
//! A line holds codes and counts only: no personal data ever reaches it.

use std::io::Write;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use jiff::civil::Date;
use jiff::tz::{Offset, TimeZone};
use serde::Serialize;

use super::UnitLine;

#[derive(Debug, Clone)]
pub struct ReconciliationLog {
    dir: PathBuf,
    max_bytes: u64,
    /// Days a file is kept after the day in its name; 0 keeps every file.
    retention_days: u32,
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
            retention_days: 0,
        }
    }

    /// Keeps files for `days` days after the day in their name (`reconcile.log_retention_days`); 0 keeps
    /// them all.
    pub fn with_retention_days(mut self, days: u32) -> ReconciliationLog {
        self.retention_days = days;
        self
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
        // The line is written; a file that cannot be deleted must not fail the run. It is tried again
        // at the next one.
        if let Err(error) = self.prune(day) {
            tracing::warn!(error = %error, dir = %self.dir.display(), "old reconciliation log files could not be deleted");
        }
        Ok(path)
    }

    /// Deletes the log files whose day (in their name) is more than the retention before `today`;
    /// returns how many. Other files in the directory are left alone.
    pub fn prune(&self, today: Date) -> std::io::Result<usize> {
        if self.retention_days == 0 {
            return Ok(0);
        }
        let Ok(oldest_kept) =
            today.checked_sub(jiff::Span::new().days(i64::from(self.retention_days)))
        else {
            return Ok(0);
        };
        let mut deleted = 0;
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(day) = name.to_str().and_then(file_day) else {
                continue;
            };
            if day < oldest_kept {
                std::fs::remove_file(entry.path())?;
                deleted += 1;
            }
        }
        Ok(deleted)
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

/// The day of a log file's name: `reconciliation-2026-11-28.jsonl` or `reconciliation-2026-11-28.3.jsonl`.
fn file_day(name: &str) -> Option<Date> {
    let rest = name
        .strip_prefix("reconciliation-")?
        .strip_suffix(".jsonl")?;
    let (day, index) = match rest.split_once('.') {
        Some((day, index)) => (day, Some(index)),
        None => (rest, None),
    };
    if index.is_some_and(|index| index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    day.parse().ok()
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

    #[test]
    fn files_older_than_the_retention_are_deleted_when_a_run_writes() {
        let dir = tempfile::tempdir().unwrap();
        let recon = dir.path().join("recon");
        std::fs::create_dir_all(&recon).unwrap();
        for name in [
            "reconciliation-2026-10-28.jsonl",
            "reconciliation-2026-10-28.1.jsonl",
            "reconciliation-2026-10-29.jsonl",
            "reconciliation-2026-11-27.jsonl",
            "reconciliation-notes.jsonl",
            "reconciliation-2026-01-01.x.jsonl",
            "README.txt",
        ] {
            std::fs::write(recon.join(name), "{}\n").unwrap();
        }
        let log = ReconciliationLog::new(&recon, u64::MAX).with_retention_days(30);
        let line = UnitLine {
            unit: "000.00.01.H60".into(),
            ..UnitLine::default()
        };
        // The 28th of November in Vietnam: the 29th of October is 30 days back and kept; the 28th goes.
        let at: Timestamp = "2026-11-28T03:00:00Z".parse().unwrap();
        log.append("r1", at, "2026-11-01", "2026-11-28", &[line])
            .unwrap();
        let mut left: Vec<String> = std::fs::read_dir(&recon)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "README.txt",
                "reconciliation-2026-01-01.x.jsonl",
                "reconciliation-2026-10-29.jsonl",
                "reconciliation-2026-11-27.jsonl",
                "reconciliation-2026-11-28.jsonl",
                "reconciliation-notes.jsonl",
            ]
        );
        // 0 keeps everything.
        let keep_all = ReconciliationLog::new(&recon, u64::MAX);
        assert_eq!(keep_all.prune("2030-01-01".parse().unwrap()).unwrap(), 0);
    }
}
