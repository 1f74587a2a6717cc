//! The source's timestamps: the feed's `updated-from` format, and reading `updatedDate` in every shape a
//! migrated row may carry (source-api.md quirk 5), for the feed reader's ordering.

use jiff::Timestamp;
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

/// Reads a source date in any of its shapes (the normalizer's date rule, so that the feed reader and the
/// payload never disagree on an instant).
pub fn parse_source_date(raw: &RawDate) -> Option<Timestamp> {
    crate::normalize::dates::SourceTime::parse(raw).map(|time| time.timestamp())
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
