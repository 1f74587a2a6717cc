//! Who must act on a held-back or refused dossier, and how: every reason code belongs to exactly one
//! [`Actor`] and has one next step, in the operators' Vietnamese (`vocabulary.md`) and in English. The
//! report, the failure lists, the correction workbooks and the dashboard all read it from here.

use crate::normalize::codes;

/// Who must act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Actor {
    /// The unit: fix the record in the one-stop system (dates, missing fields, fees, texts).
    Unit,
    /// The Department's administrator: mapping tables, successions, the portal's catalogs, the vendor.
    Administrator,
    /// The portal or the network: refusals by portal code, outages; send again once resolved.
    Portal,
    /// Nobody: cancelled or deleted at the source, or informational.
    Nobody,
}

impl Actor {
    pub const ALL: [Actor; 4] = [
        Actor::Unit,
        Actor::Administrator,
        Actor::Portal,
        Actor::Nobody,
    ];

    /// As written in JSON and on the command line (`--actor unit`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Actor::Unit => "unit",
            Actor::Administrator => "administrator",
            Actor::Portal => "portal",
            Actor::Nobody => "nobody",
        }
    }

    /// (Vietnamese, English) label.
    pub const fn label(self) -> (&'static str, &'static str) {
        match self {
            Actor::Unit => ("Đơn vị", "The unit"),
            Actor::Administrator => ("Quản trị hệ thống của Sở", "The Department's administrator"),
            Actor::Portal => ("Cổng DVCQG hoặc đường truyền", "The portal or the network"),
            Actor::Nobody => ("Không cần xử lý", "Nobody"),
        }
    }
}

/// A reason's owner and next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Triage {
    pub actor: Actor,
    pub next_vi: &'static str,
    pub next_en: &'static str,
}

const fn triage(actor: Actor, next_vi: &'static str, next_en: &'static str) -> Triage {
    Triage {
        actor,
        next_vi,
        next_en,
    }
}

/// The owner and next step of a reason code (a normalization code, `portal_<code>` for a refusal, or
/// anything else, which goes to the administrator to look at).
pub fn triage_of(code: &str) -> Triage {
    use Actor::*;
    match code {
        codes::MISSING_FIELD => triage(
            Unit,
            "Đề nghị đơn vị bổ sung thông tin bắt buộc của hồ sơ trên hệ thống một cửa",
            "Ask the unit to complete the dossier in the one-stop system",
        ),
        codes::INVALID_DATE => triage(
            Unit,
            "Đề nghị đơn vị sửa ngày tháng của hồ sơ trên hệ thống một cửa",
            "Ask the unit to correct the date in the one-stop system",
        ),
        codes::INCONSISTENT_DATES => triage(
            Unit,
            "Đề nghị đơn vị sửa ngày tháng cho hợp lý (ngày hẹn trả không trước ngày tiếp nhận)",
            "Ask the unit to correct the dates (the due date not before the reception date)",
        ),
        codes::INVALID_FEE => triage(
            Unit,
            "Đề nghị đơn vị sửa phí, lệ phí của hồ sơ trên hệ thống một cửa",
            "Ask the unit to correct the fee in the one-stop system",
        ),
        codes::INVALID_TEXT => triage(
            Unit,
            "Đề nghị đơn vị gõ lại nội dung bằng phông chữ Unicode",
            "Ask the unit to retype the text in Unicode",
        ),
        codes::UNMAPPED_UNIT => triage(
            Administrator,
            "Bổ sung đơn vị vào bảng ánh xạ mã đơn vị (xem tthc-sync mappings suggest)",
            "Add the unit to the unit table (see tthc-sync mappings suggest)",
        ),
        codes::UNMAPPED_PROCEDURE => triage(
            Administrator,
            "Bổ sung thủ tục vào bảng ánh xạ mã thủ tục hành chính (xem tthc-sync mappings suggest)",
            "Add the procedure to the procedure table (see tthc-sync mappings suggest)",
        ),
        codes::UNMAPPED_STATUS => triage(
            Administrator,
            "Bổ sung trạng thái vào bảng ánh xạ trạng thái hồ sơ",
            "Extend the status table",
        ),
        codes::AMBIGUOUS_SUCCESSION => triage(
            Administrator,
            "Chỉ định đơn vị của hồ sơ, hoặc bổ sung tiêu chí vào bảng đơn vị kế thừa",
            "Assign the dossier's unit, or add a selector to the succession table",
        ),
        codes::UNIT_UNKNOWN_TO_PORTAL => triage(
            Administrator,
            "Đề nghị quản trị Cổng DVCQG bổ sung mã đơn vị, hoặc sửa bảng ánh xạ mã đơn vị",
            "Ask the portal administrators to add the unit, or fix the unit table",
        ),
        codes::PROCEDURE_UNKNOWN_TO_PORTAL => triage(
            Administrator,
            "Đề nghị quản trị Cổng DVCQG bổ sung mã thủ tục, hoặc sửa bảng ánh xạ mã thủ tục",
            "Ask the portal administrators to add the procedure, or fix the procedure table",
        ),
        "portal_5" => triage(
            Administrator,
            "Đề nghị quản trị Cổng DVCQG bổ sung mã đơn vị hoặc mã thủ tục, hoặc sửa bảng ánh xạ; sau đó gửi lại",
            "Ask the portal administrators to add the unit or procedure, or fix the mapping; then retry",
        ),
        codes::INVALID_DOSSIER_CODE | codes::INVALID_CHANNEL | codes::MALFORMED_RECORD => triage(
            Administrator,
            "Liên hệ đơn vị cung cấp hệ thống một cửa để sửa dữ liệu xuất ra",
            "Ask the vendor of the one-stop system to fix what it exports",
        ),
        codes::CANCELLED_AT_SOURCE | codes::DELETED_AT_SOURCE => {
            triage(Nobody, "Không cần xử lý", "Nothing to do")
        }
        code if code.starts_with("portal_") => triage(
            Portal,
            "Xem thông báo của Cổng DVCQG; khi Cổng DVCQG đã sẵn sàng, gửi lại (tthc-sync retry)",
            "Read the portal's message; once the portal is ready, retry (tthc-sync retry)",
        ),
        code if codes::Code::ALL.iter().any(|known| known.as_str() == code) => {
            // Warnings: the dossier went; nothing blocks it.
            triage(Nobody, "Không cần xử lý", "Nothing to do")
        }
        _ => triage(
            Administrator,
            "Xem chi tiết lỗi và báo cho quản trị hệ thống",
            "Look at the details and tell the administrator",
        ),
    }
}

/// Whether a `--reason` given by an operator is a code tthc-sync can store: a normalization code, or
/// `portal_<number>`.
pub fn is_known_reason(code: &str) -> bool {
    codes::Code::ALL.iter().any(|known| known.as_str() == code)
        || code
            .strip_prefix("portal_")
            .is_some_and(|number| !number.is_empty() && number.parse::<i64>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_has_one_actor_and_a_next_step_in_both_languages() {
        for code in codes::Code::ALL {
            let found = triage_of(code.as_str());
            assert!(!found.next_vi.is_empty() && !found.next_en.is_empty());
            assert!(is_known_reason(code.as_str()));
        }
        assert_eq!(triage_of("missing_field").actor, Actor::Unit);
        assert_eq!(triage_of("invalid_fee").actor, Actor::Unit);
        assert_eq!(triage_of("unmapped_unit").actor, Actor::Administrator);
        assert_eq!(
            triage_of("unit_unknown_to_portal").actor,
            Actor::Administrator
        );
        assert_eq!(triage_of("malformed_record").actor, Actor::Administrator);
        assert_eq!(triage_of("portal_2").actor, Actor::Portal);
        assert_eq!(triage_of("portal_5").actor, Actor::Administrator);
        assert_eq!(triage_of("cancelled_at_source").actor, Actor::Nobody);
        assert_eq!(triage_of("no_such_code").actor, Actor::Administrator);
    }

    #[test]
    fn known_reasons() {
        assert!(is_known_reason("portal_2"));
        assert!(!is_known_reason("portal_"));
        assert!(!is_known_reason("portal_x"));
        assert!(!is_known_reason("unmaped_unit"));
    }
}
