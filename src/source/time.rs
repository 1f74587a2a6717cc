//! The source's timestamps: the feed's `updated-from` format, and reading `updatedDate` in every shape a
//! migrated row may carry (source-api.md quirk 5), for the feed reader's ordering.

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};

use super::wire::RawDate;

/// Vietnam time: UTC+07:00, no daylight saving.
pub fn vietnam() -> TimeZone {
    TimeZone::fixed(Offset::constant(7))
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

/// Reads a source date in any of its shapes; a value without an offset is Vietnam time.
pub fn parse_source_date(raw: &RawDate) -> Option<Timestamp> {
    match raw {
        RawDate::Millis(millis) => Timestamp::from_millisecond(*millis).ok(),
        RawDate::Float(value) if value.is_finite() => {
            Timestamp::from_millisecond(value.trunc() as i64).ok()
        }
        RawDate::Float(_) => None,
        RawDate::Text(text) => parse_source_text(text.trim()),
    }
}

fn parse_source_text(text: &str) -> Option<Timestamp> {
    if text.is_empty() {
        return None;
    }
    if let Ok(timestamp) = text.parse::<Timestamp>() {
        return Some(timestamp);
    }
    // `+0700` without a colon.
    for format in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%z"] {
        if let Ok(zoned) =
            jiff::fmt::strtime::parse(format, text).and_then(|parsed| parsed.to_timestamp())
        {
            return Some(zoned);
        }
    }
    for format in [
        "%d/%m/%Y %H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S",
    ] {
        if let Ok(datetime) = DateTime::strptime(format, text) {
            return vietnam().to_timestamp(datetime).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> RawDate {
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
    }

    #[test]
    fn formats_as_the_feed_expects() {
        let instant: Timestamp = "2024-01-15T01:30:00.25Z".parse().unwrap();
        assert_eq!(format_source_time(instant), "2024-01-15T08:30:00.250+0700");
    }
}
