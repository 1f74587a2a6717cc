//! The simulators' own reading and writing of the source's dates (source-api.md section 5 and quirk 5).
//!
//! Written apart from the daemon's parser (`normalize::dates`) on purpose: the simulators are the oracle
//! the tests compare the daemon with, so a bug in the daemon's date rules must not be copied into what the
//! simulators count. Only the shapes the generator itself writes are read here.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::Offset;
use serde_json::Value;

/// Vietnam time: UTC+7 all year.
pub const VIETNAM: Offset = Offset::constant(7);

/// Formats an instant as the source writes it: `2024-01-15T08:30:00.000+0700`.
pub fn format(timestamp: Timestamp) -> String {
    let local = VIETNAM.to_datetime(timestamp);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}+0700",
        local.year(),
        local.month(),
        local.day(),
        local.hour(),
        local.minute(),
        local.second(),
        local.subsec_nanosecond() / 1_000_000
    )
}

/// The Vietnam day of an instant.
pub fn vietnam_day(timestamp: Timestamp) -> Date {
    VIETNAM.to_datetime(timestamp).date()
}

/// Reads a date value in a shape the generator writes: a number of Unix milliseconds, or text in one of
/// the shapes of [`parse_text`].
pub fn parse_value(value: &Value) -> Option<Timestamp> {
    match value {
        Value::Number(number) => Timestamp::from_millisecond(number.as_i64()?).ok(),
        Value::String(text) => parse_text(text),
        _ => None,
    }
}

/// Reads `2024-01-15T08:30:00.000+0700`, `...+07:00`, `...Z`, `2024-01-15 08:30:00` and
/// `15/01/2024 08:30:00` (the last two in Vietnam time).
pub fn parse_text(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    if let Some((day, time)) = text.split_once(' ') {
        let date = if day.contains('/') {
            let mut parts = day.split('/');
            let (d, m, y) = (parts.next()?, parts.next()?, parts.next()?);
            (parts.next().is_none()).then_some(())?;
            civil_date(y, m, d)?
        } else {
            let mut parts = day.split('-');
            let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
            (parts.next().is_none()).then_some(())?;
            civil_date(y, m, d)?
        };
        return VIETNAM.to_timestamp(local_time(date, time)?).ok();
    }
    let (day, rest) = text.split_once('T')?;
    let mut parts = day.split('-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    (parts.next().is_none()).then_some(())?;
    let date = civil_date(y, m, d)?;
    let (time, offset_seconds) = if let Some(time) = rest.strip_suffix('Z') {
        (time, 0)
    } else {
        let split = rest.rfind(['+', '-'])?;
        let (time, offset) = rest.split_at(split);
        let sign = if offset.starts_with('-') { -1 } else { 1 };
        let digits: String = offset[1..].chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let hours: i32 = digits[..2].parse().ok()?;
        let minutes: i32 = digits[2..].parse().ok()?;
        (time, sign * (hours * 3600 + minutes * 60))
    };
    Offset::from_seconds(offset_seconds)
        .ok()?
        .to_timestamp(local_time(date, time)?)
        .ok()
}

/// A day and a clock text (`HH:MM:SS` with optional `.mmm`) as a civil date and time.
fn local_time(date: Date, time: &str) -> Option<DateTime> {
    let (hour, minute, second, milli) = clock(time)?;
    DateTime::new(
        date.year(),
        date.month(),
        date.day(),
        hour,
        minute,
        second,
        milli * 1_000_000,
    )
    .ok()
}

fn civil_date(year: &str, month: &str, day: &str) -> Option<Date> {
    if year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return None;
    }
    Date::new(year.parse().ok()?, month.parse().ok()?, day.parse().ok()?).ok()
}

/// `HH:MM:SS` with optional `.mmm`.
fn clock(text: &str) -> Option<(i8, i8, i8, i32)> {
    let (hms, milli) = match text.split_once('.') {
        Some((hms, fraction)) if fraction.len() == 3 => (hms, fraction.parse().ok()?),
        Some(_) => return None,
        None => (text, 0),
    };
    let mut parts = hms.split(':');
    let (h, m, s) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || h.len() != 2 || m.len() != 2 || s.len() != 2 {
        return None;
    }
    Some((h.parse().ok()?, m.parse().ok()?, s.parse().ok()?, milli))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_the_generator_writes_reads_back_to_the_same_instant() {
        let instant: Timestamp = "2024-01-15T01:30:05.250Z".parse().unwrap();
        let whole: Timestamp = "2024-01-15T01:30:05Z".parse().unwrap();
        assert_eq!(format(instant), "2024-01-15T08:30:05.250+0700");
        assert_eq!(parse_text(&format(instant)), Some(instant));
        assert_eq!(parse_text("2024-01-15T08:30:05.250+07:00"), Some(instant));
        assert_eq!(parse_text("2024-01-15T01:30:05.250Z"), Some(instant));
        assert_eq!(parse_text("2024-01-15 08:30:05"), Some(whole));
        assert_eq!(parse_text("15/01/2024 08:30:05"), Some(whole));
        assert_eq!(
            parse_value(&Value::from(instant.as_millisecond())),
            Some(instant)
        );
        assert_eq!(vietnam_day(instant).to_string(), "2024-01-15");
    }

    #[test]
    fn shapes_it_never_writes_are_not_read() {
        for text in [
            "2024-13-45T08:00:00.000+0700",
            "00/00/0000 00:00:00",
            "N/A",
            "2024-01-15",
            "2024-01-15T08:30:00.0+0700",
        ] {
            assert_eq!(parse_text(text), None, "{text}");
        }
    }
}
