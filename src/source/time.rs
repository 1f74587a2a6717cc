//! The source's timestamps: the feed's `updated-from` format, and reading `updatedDate` in every shape a
//! migrated row may carry (source-api.md quirk 5), for the feed reader's ordering.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};

use super::wire::RawDate;

/// Vietnam time: UTC+07:00, no daylight saving.
pub const VIETNAM: Offset = Offset::constant(7);

/// Vietnam time as a time zone.
pub fn vietnam() -> TimeZone {
    TimeZone::fixed(VIETNAM)
}

/// `2024-01-15T08:30:00.000+0700`, as the source writes and expects it.
pub fn format_source_time(timestamp: Timestamp) -> String {
    let local = vietnam().to_datetime(timestamp);
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

/// Reads a source date in any of its shapes and within the years the portal's format can show (1000 to
/// 9999 in Vietnam time): the feed reader's rule, and through `normalize::dates::SourceTime` the
/// payload's, so that the two never disagree on an instant.
pub fn parse_source_date(raw: &RawDate) -> Option<Timestamp> {
    let instant = read_source_date(raw)?;
    (1000..=9999)
        .contains(&VIETNAM.to_datetime(instant).year())
        .then_some(instant)
}

/// Reads a source date in any of its shapes (source-api.md quirk 5), with its fraction of a second;
/// `None` when it is none of them.
pub fn read_source_date(raw: &RawDate) -> Option<Timestamp> {
    match raw {
        RawDate::Millis(millis) => Timestamp::from_millisecond(*millis).ok(),
        RawDate::Float(millis) => {
            // A migrated number with a fraction of a millisecond: the fraction is dropped, like any other.
            if !millis.is_finite() || millis.abs() > 1e17 {
                return None;
            }
            Timestamp::from_millisecond(millis.floor() as i64).ok()
        }
        RawDate::Text(text) => parse_text(text.trim()),
    }
}

/// A cursor over the ASCII bytes of a date string.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn number(&mut self, digits: usize) -> Option<i64> {
        let end = self.at.checked_add(digits)?;
        let slice = self.bytes.get(self.at..end)?;
        let mut value = 0i64;
        for byte in slice {
            if !byte.is_ascii_digit() {
                return None;
            }
            value = value * 10 + i64::from(byte - b'0');
        }
        self.at = end;
        Some(value)
    }

    fn eat(&mut self, expected: u8) -> bool {
        if self.bytes.get(self.at) == Some(&expected) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn done(&self) -> bool {
        self.at == self.bytes.len()
    }
}

/// `2024-01-15T08:30:00.000+0700`, `+07:00`, `Z`, `2024-01-15 08:30:00`, `15/01/2024 08:30:00`, and the
/// same without seconds or without a time of day. No offset means Vietnam time.
fn parse_text(text: &str) -> Option<Timestamp> {
    let (civil, offset) = read_source_civil(text)?;
    offset.to_timestamp(civil).ok()
}

/// A source date written as text (already trimmed), as it is written: the civil date and time and the
/// offset they are in (Vietnam time when none is written). [`read_source_date`] makes the instant of it;
/// `normalize::dates` uses the civil time as it is when the offset is Vietnam time's, rather than
/// converting the instant back.
pub fn read_source_civil(text: &str) -> Option<(DateTime, Offset)> {
    let mut cursor = Cursor {
        bytes: text.as_bytes(),
        at: 0,
    };
    let (year, month, day) = if text.as_bytes().get(2) == Some(&b'/') {
        let day = cursor.number(2)?;
        cursor.eat(b'/').then_some(())?;
        let month = cursor.number(2)?;
        cursor.eat(b'/').then_some(())?;
        (cursor.number(4)?, month, day)
    } else {
        let year = cursor.number(4)?;
        cursor.eat(b'-').then_some(())?;
        let month = cursor.number(2)?;
        cursor.eat(b'-').then_some(())?;
        (year, month, cursor.number(2)?)
    };
    let (mut hour, mut minute, mut second) = (0, 0, 0);
    let mut nanosecond: i32 = 0;
    if cursor.eat(b'T') || cursor.eat(b' ') {
        hour = cursor.number(2)?;
        cursor.eat(b':').then_some(())?;
        minute = cursor.number(2)?;
        if cursor.eat(b':') {
            second = cursor.number(2)?;
            if cursor.eat(b'.') || cursor.eat(b',') {
                // The fraction is kept in the instant (the feed reader orders rows by it, to the
                // millisecond) and truncated only where the portal's format shows whole seconds.
                let start = cursor.at;
                while let Some(digit) = cursor.peek().filter(|byte| byte.is_ascii_digit()) {
                    if cursor.at - start < 9 {
                        nanosecond = nanosecond * 10 + i32::from(digit - b'0');
                    }
                    cursor.at += 1;
                }
                let digits = cursor.at - start;
                if digits == 0 {
                    return None;
                }
                for _ in digits..9 {
                    nanosecond *= 10;
                }
            }
        }
    }
    let offset = parse_offset(&mut cursor)?;
    if !cursor.done() {
        return None;
    }
    let civil = DateTime::new(
        i16::try_from(year).ok()?,
        i8::try_from(month).ok()?,
        i8::try_from(day).ok()?,
        i8::try_from(hour).ok()?,
        i8::try_from(minute).ok()?,
        i8::try_from(second).ok()?,
        nanosecond,
    )
    .ok()?;
    Some((civil, offset))
}

/// `Z`, `+0700`, `+07:00`, `+07`, or nothing (Vietnam time).
fn parse_offset(cursor: &mut Cursor<'_>) -> Option<Offset> {
    if cursor.done() {
        return Some(VIETNAM);
    }
    if cursor.eat(b'Z') || cursor.eat(b'z') {
        return Some(Offset::UTC);
    }
    let sign = if cursor.eat(b'+') {
        1
    } else if cursor.eat(b'-') {
        -1
    } else {
        return None;
    };
    let hours = cursor.number(2)?;
    let minutes = if cursor.done() {
        0
    } else {
        cursor.eat(b':');
        cursor.number(2)?
    };
    if hours > 18 || minutes > 59 {
        return None;
    }
    Offset::from_seconds(i32::try_from(sign * (hours * 3600 + minutes * 60)).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> RawDate<'static> {
        RawDate::Text(value.into())
    }

    #[test]
    fn every_shape_reads_as_the_same_instant() {
        let expected: Timestamp = "2024-01-15T01:30:00Z".parse().unwrap();
        for shape in [
            "2024-01-15T08:30:00.000+0700",
            "2024-01-15T08:30:00+07:00",
            "2024-01-15T01:30:00Z",
            "15/01/2024 08:30:00",
            "2024-01-15 08:30:00",
        ] {
            assert_eq!(parse_source_date(&text(shape)), Some(expected), "{shape}");
        }
        assert_eq!(
            parse_source_date(&RawDate::Millis(expected.as_millisecond())),
            Some(expected)
        );
        assert_eq!(parse_source_date(&text("hôm qua")), None);
        // The feed orders rows to the millisecond: the fraction must survive parsing.
        let precise: Timestamp = "2024-01-15T01:30:00.001Z".parse().unwrap();
        assert_eq!(
            parse_source_date(&text("2024-01-15T08:30:00.001+0700")),
            Some(precise)
        );
    }

    #[test]
    fn formats_as_the_feed_expects() {
        let instant: Timestamp = "2024-01-15T01:30:00.25Z".parse().unwrap();
        assert_eq!(format_source_time(instant), "2024-01-15T08:30:00.250+0700");
    }
}
