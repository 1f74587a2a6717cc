//! The status rule of mapping.md: the source's `dossierStatus.id` to the portal's `TrangThaiHoSo`, or a
//! skip. The default table is the one in mapping.md; the mapping tables may replace it for another vendor.

/// A portal status, `TrangThaiHoSo` "1" to "10" (portal-api.md section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortalStatus(u8);

impl PortalStatus {
    pub const NEWLY_REGISTERED: PortalStatus = PortalStatus(1);
    pub const ACCEPTED: PortalStatus = PortalStatus(2);
    pub const NOT_ACCEPTED: PortalStatus = PortalStatus(3);
    pub const PROCESSING: PortalStatus = PortalStatus(4);
    pub const WAITING_FOR_SUPPLEMENTS: PortalStatus = PortalStatus(5);
    pub const WAITING_FOR_PAYMENT: PortalStatus = PortalStatus(6);
    pub const WITHDRAWN: PortalStatus = PortalStatus(7);
    pub const STOPPED: PortalStatus = PortalStatus(8);
    pub const PROCESSED: PortalStatus = PortalStatus(9);
    pub const RETURNED: PortalStatus = PortalStatus(10);

    /// Reads `"1"` .. `"10"`.
    pub fn parse(text: &str) -> Option<PortalStatus> {
        match text.trim().parse::<u8>() {
            Ok(value @ 1..=10) => Some(PortalStatus(value)),
            _ => None,
        }
    }

    pub fn value(self) -> u8 {
        self.0
    }

    /// The portal's spelling: a string of the number.
    pub fn as_str(self) -> &'static str {
        const NAMES: [&str; 11] = ["", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10"];
        NAMES.get(usize::from(self.0)).copied().unwrap_or("")
    }

    /// Statuses for which the portal does not require `NgayHenTra` (portal-api.md section 3).
    pub fn appointment_optional(self) -> bool {
        matches!(self.0, 1 | 3 | 7)
    }

    /// Statuses of a dossier the unit has not (or not yet) accepted: `NgayTiepNhan` falls back to
    /// `submittedDate` (source statuses 0 and 8 in the default table).
    pub fn reception_may_be_missing(self) -> bool {
        matches!(self.0, 1 | 3)
    }
}

/// What a source status becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusMapping {
    /// Sent with this `TrangThaiHoSo`.
    Portal(PortalStatus),
    /// Never synced (the default table's status 11, cancelled as a data-entry error).
    Skip,
}

impl StatusMapping {
    /// Reads a table value: `"1"` .. `"10"` or `"skip"`.
    pub fn parse(text: &str) -> Option<StatusMapping> {
        if text.trim().eq_ignore_ascii_case("skip") {
            Some(StatusMapping::Skip)
        } else {
            PortalStatus::parse(text).map(StatusMapping::Portal)
        }
    }

    /// The table spelling, the inverse of [`StatusMapping::parse`].
    pub fn as_str(self) -> &'static str {
        match self {
            StatusMapping::Portal(status) => status.as_str(),
            StatusMapping::Skip => "skip",
        }
    }
}

/// The default table of mapping.md (Status); `None` for a status it does not know (`unmapped_status`).
pub fn default_mapping(source_status: i64) -> Option<StatusMapping> {
    let portal = match source_status {
        0 => 1,
        1 => 2,
        2 | 5 => 4,
        3 => 5,
        4 => 6,
        6 => 9,
        7 => 10,
        8 => 3,
        9 => 7,
        10 => 8,
        11 => return Some(StatusMapping::Skip),
        _ => return None,
    };
    Some(StatusMapping::Portal(PortalStatus(portal)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table_matches_the_mapping() {
        let expected = [
            (0, "1"),
            (1, "2"),
            (2, "4"),
            (5, "4"),
            (3, "5"),
            (4, "6"),
            (6, "9"),
            (7, "10"),
            (8, "3"),
            (9, "7"),
            (10, "8"),
            (11, "skip"),
        ];
        for (source, portal) in expected {
            assert_eq!(
                default_mapping(source).map(StatusMapping::as_str),
                Some(portal),
                "{source}"
            );
        }
        assert_eq!(default_mapping(42), None);
        assert_eq!(default_mapping(-1), None);
    }

    #[test]
    fn parses_table_values() {
        assert_eq!(StatusMapping::parse("skip"), Some(StatusMapping::Skip));
        assert_eq!(
            StatusMapping::parse("10"),
            Some(StatusMapping::Portal(PortalStatus::RETURNED))
        );
        assert_eq!(StatusMapping::parse("11"), None);
        assert_eq!(StatusMapping::parse("0"), None);
    }
}
