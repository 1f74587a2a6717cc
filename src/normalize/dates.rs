//! The date rule of mapping.md: every shape of source-api.md quirk 5 in, `yyyyMMddHHmmss` in Vietnam time
//! (UTC+07:00, no daylight saving) out, fractions of a second truncated.

use jiff::Timestamp;
use jiff::civil::{Date, DateTime};
use jiff::tz::Offset;

use crate::source::wire::RawDate;

/// Vietnam time: a constant offset, so no time zone database is needed.
pub const VIETNAM: Offset = Offset::constant(7);

/// A source date, parsed: an instant, to the second (fractions truncated), shown in Vietnam time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct SourceTime {
    /// Seconds since the Unix epoch, floored: a fraction of a second never moves a date forward.
    seconds: i64,
    /// The same instant in Vietnam time, without the fraction.
    local: DateTime,
    /// The instant as received (with its fraction), for callers that compare feed positions.
    precise: Timestamp,
}

impl SourceTime {
    /// Parses any shape the source writes ([`crate::source::time::read_source_date`], the one reader of
    /// them); `None` when it is none of them or out of range.
    pub fn parse(raw: &RawDate) -> Option<SourceTime> {
        // Most source dates are text in Vietnam time: their civil time is already the local time, so the
        // instant need not be converted back to it (the conversion was most of the date rule's cost).
        if let RawDate::Text(text) = raw
            && let Some((civil, offset)) = crate::source::time::read_source_civil(text.trim())
            && offset == VIETNAM
        {
            let precise = offset.to_timestamp(civil).ok()?;
            let local = civil.with().subsec_nanosecond(0).build().ok()?;
            if !(1000..=9999).contains(&local.year()) {
                return None;
            }
            return Some(SourceTime {
                seconds: floor_second(precise),
                local,
                precise,
            });
        }
        SourceTime::from_timestamp(crate::source::time::read_source_date(raw)?)
    }

    /// The instant as a `SourceTime`; `None` outside the years the portal's format can show.
    pub fn from_timestamp(precise: Timestamp) -> Option<SourceTime> {
        let seconds = floor_second(precise);
        let whole = Timestamp::from_second(seconds).ok()?;
        let local = VIETNAM.to_datetime(whole);
        if !(1000..=9999).contains(&local.year()) {
            return None;
        }
        Some(SourceTime {
            seconds,
            local,
            precise,
        })
    }

    /// The instant with its fraction of a second, as received.
    pub fn timestamp(&self) -> Timestamp {
        self.precise
    }

    /// Whole seconds since the Unix epoch (floored).
    pub fn second(&self) -> i64 {
        self.seconds
    }

    /// The day in Vietnam time.
    pub fn vietnam_day(&self) -> Date {
        self.local.date()
    }

    /// `yyyyMMddHHmmss` in Vietnam time, as the portal takes it.
    pub fn portal_string(&self) -> String {
        let local = &self.local;
        let mut out = [0u8; 14];
        write_digits(&mut out[0..4], i64::from(local.year()));
        write_digits(&mut out[4..6], i64::from(local.month()));
        write_digits(&mut out[6..8], i64::from(local.day()));
        write_digits(&mut out[8..10], i64::from(local.hour()));
        write_digits(&mut out[10..12], i64::from(local.minute()));
        write_digits(&mut out[12..14], i64::from(local.second()));
        // Collecting the digits as chars grew the string one character at a time; they are ASCII, so the
        // bytes are the string.
        String::from_utf8(out.to_vec()).unwrap_or_default()
    }
}

/// Seconds since the Unix epoch, floored: a fraction of a second never moves a date forward.
fn floor_second(precise: Timestamp) -> i64 {
    let seconds = precise.as_second();
    if precise.subsec_nanosecond() < 0 {
        seconds - 1
    } else {
        seconds
    }
}

fn write_digits(out: &mut [u8], mut value: i64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn portal(raw: RawDate) -> Option<String> {
        SourceTime::parse(&raw).map(|time| time.portal_string())
    }

    fn text(value: &str) -> Option<String> {
        portal(RawDate::Text(value.into()))
    }

    #[test]
    fn reads_every_source_shape() {
        let expected = Some("20240115083000".to_owned());
        assert_eq!(text("2024-01-15T08:30:00.000+0700"), expected);
        assert_eq!(text("2024-01-15T08:30:00+07:00"), expected);
        assert_eq!(text("2024-01-15T01:30:00Z"), expected);
        assert_eq!(text("2024-01-15T01:30:00.999Z"), expected);
        assert_eq!(text("15/01/2024 08:30:00"), expected);
        assert_eq!(text("2024-01-15 08:30:00"), expected);
        assert_eq!(text(" 2024-01-15T08:30:00 "), expected);
        assert_eq!(text("2024-01-15T03:30:00.5+02:00"), expected);
        assert_eq!(portal(RawDate::Millis(1705282200000)), expected);
        assert_eq!(portal(RawDate::Millis(1705282200999)), expected);
        assert_eq!(portal(RawDate::Float(1705282200999.9)), expected);
        assert_eq!(text("2024-01-15"), Some("20240115000000".to_owned()));
        // Minutes without seconds are a shape some exports use.
        assert_eq!(text("2024-01-15T08:30"), expected);
    }

    #[test]
    fn the_vietnam_time_shortcut_agrees_with_the_instant() {
        for text in [
            "2024-01-15T08:30:00.000+0700",
            "2024-01-15T08:30:00.999+07:00",
            "15/01/2024 23:59:59",
            "2024-12-31 23:59:59,5",
            "1000-01-01T00:00:00",
            "0999-12-31T23:59:59+0700",
            "9999-12-31T23:59:59.999+0700",
            "1969-12-31T23:59:59.5+0700",
            "1970-01-01T06:59:59.5+0700",
            "2024-02-29",
        ] {
            let shortcut = SourceTime::parse(&RawDate::Text(text.into()));
            let full = crate::source::time::read_source_date(&RawDate::Text(text.into()))
                .and_then(SourceTime::from_timestamp);
            assert_eq!(shortcut, full, "{text}");
        }
    }

    #[test]
    fn crosses_the_day_boundary_in_vietnam_time() {
        let time = SourceTime::parse(&RawDate::Text("2024-01-14T18:00:00Z".into()));
        assert_eq!(
            time.map(|time| time.vietnam_day()),
            Date::new(2024, 1, 15).ok()
        );
    }

    #[test]
    fn truncates_fractions_before_the_epoch_too() {
        assert_eq!(
            portal(RawDate::Millis(-1)),
            Some("19700101065959".to_owned())
        );
    }

    #[test]
    fn rejects_what_is_not_a_date() {
        for bad in [
            "",
            "hôm qua",
            "2024-13-01T00:00:00Z",
            "2024-02-30 00:00:00",
            "32/01/2024 08:00:00",
            "2024-01-15T08:30:00+",
            "2024-01-15T08:30:00.+0700",
            "2024-01-15T08:30:00+0700x",
            "24-01-15",
        ] {
            assert_eq!(text(bad), None, "{bad}");
        }
        assert_eq!(portal(RawDate::Float(f64::NAN)), None);
        assert_eq!(portal(RawDate::Millis(i64::MAX)), None);
    }
}
