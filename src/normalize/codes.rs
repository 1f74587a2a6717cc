//! The rejection, warning and skip codes normalization emits, with the Vietnamese and English messages
//! operators read (`vocabulary.md`). Codes travel as `&'static str` in [`Finding`](super::Finding) so that
//! stores and reports need no enum of their own; [`Code`] is the closed list they come from.

/// Every code normalization (and the catalog pre-flight after it) can attach to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    // Rejections: the dossier is held back.
    InvalidDossierCode,
    MissingField,
    InvalidDate,
    InconsistentDates,
    InvalidChannel,
    UnmappedStatus,
    UnmappedProcedure,
    UnmappedUnit,
    AmbiguousSuccession,
    InvalidFee,
    InvalidText,
    MalformedRecord,
    /// Larger than `source.max_record_bytes` (source-api.md quirk 14): held whole, not parsed.
    OversizeRecord,
    // Held back by the catalog pre-flight, not by normalization itself.
    UnitUnknownToPortal,
    ProcedureUnknownToPortal,
    // Warnings: the dossier still goes.
    Tcvn3Converted,
    TextTruncated,
    PhoneDropped,
    EmailDropped,
    IdentityDropped,
    TaxCodeDropped,
    DateFallback,
    ProgressDropped,
    AttachmentDropped,
    // Skips: never sent.
    CancelledAtSource,
    DeletedAtSource,
}

/// Rejection codes, as they appear in [`Finding::code`](super::Finding::code).
pub const INVALID_DOSSIER_CODE: &str = "invalid_dossier_code";
pub const MISSING_FIELD: &str = "missing_field";
pub const INVALID_DATE: &str = "invalid_date";
pub const INCONSISTENT_DATES: &str = "inconsistent_dates";
pub const INVALID_CHANNEL: &str = "invalid_channel";
pub const UNMAPPED_STATUS: &str = "unmapped_status";
pub const UNMAPPED_PROCEDURE: &str = "unmapped_procedure";
pub const UNMAPPED_UNIT: &str = "unmapped_unit";
pub const AMBIGUOUS_SUCCESSION: &str = "ambiguous_succession";
pub const INVALID_FEE: &str = "invalid_fee";
pub const INVALID_TEXT: &str = "invalid_text";
pub const MALFORMED_RECORD: &str = "malformed_record";
pub const OVERSIZE_RECORD: &str = "oversize_record";
pub const UNIT_UNKNOWN_TO_PORTAL: &str = "unit_unknown_to_portal";
pub const PROCEDURE_UNKNOWN_TO_PORTAL: &str = "procedure_unknown_to_portal";
/// Warning codes.
pub const TCVN3_CONVERTED: &str = "tcvn3_converted";
pub const TEXT_TRUNCATED: &str = "text_truncated";
pub const PHONE_DROPPED: &str = "phone_dropped";
pub const EMAIL_DROPPED: &str = "email_dropped";
pub const IDENTITY_DROPPED: &str = "identity_dropped";
pub const TAX_CODE_DROPPED: &str = "tax_code_dropped";
pub const DATE_FALLBACK: &str = "date_fallback";
/// A history entry without a time or without content: not sent as progress, the dossier still goes.
pub const PROGRESS_DROPPED: &str = "progress_dropped";
/// An attachment whose `kind` is neither `input` nor `result`.
pub const ATTACHMENT_DROPPED: &str = "attachment_dropped";
/// Skip codes.
pub const CANCELLED_AT_SOURCE: &str = "cancelled_at_source";
pub const DELETED_AT_SOURCE: &str = "deleted_at_source";

impl Code {
    /// All codes, in the order of the vocabulary.
    pub const ALL: [Code; 26] = [
        Code::InvalidDossierCode,
        Code::MissingField,
        Code::InvalidDate,
        Code::InconsistentDates,
        Code::InvalidChannel,
        Code::UnmappedStatus,
        Code::UnmappedProcedure,
        Code::UnmappedUnit,
        Code::AmbiguousSuccession,
        Code::InvalidFee,
        Code::InvalidText,
        Code::MalformedRecord,
        Code::OversizeRecord,
        Code::UnitUnknownToPortal,
        Code::ProcedureUnknownToPortal,
        Code::Tcvn3Converted,
        Code::TextTruncated,
        Code::PhoneDropped,
        Code::EmailDropped,
        Code::IdentityDropped,
        Code::TaxCodeDropped,
        Code::DateFallback,
        Code::ProgressDropped,
        Code::AttachmentDropped,
        Code::CancelledAtSource,
        Code::DeletedAtSource,
    ];

    /// The code as stored and reported (`unmapped_unit`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::InvalidDossierCode => INVALID_DOSSIER_CODE,
            Code::MissingField => MISSING_FIELD,
            Code::InvalidDate => INVALID_DATE,
            Code::InconsistentDates => INCONSISTENT_DATES,
            Code::InvalidChannel => INVALID_CHANNEL,
            Code::UnmappedStatus => UNMAPPED_STATUS,
            Code::UnmappedProcedure => UNMAPPED_PROCEDURE,
            Code::UnmappedUnit => UNMAPPED_UNIT,
            Code::AmbiguousSuccession => AMBIGUOUS_SUCCESSION,
            Code::InvalidFee => INVALID_FEE,
            Code::InvalidText => INVALID_TEXT,
            Code::MalformedRecord => MALFORMED_RECORD,
            Code::OversizeRecord => OVERSIZE_RECORD,
            Code::UnitUnknownToPortal => UNIT_UNKNOWN_TO_PORTAL,
            Code::ProcedureUnknownToPortal => PROCEDURE_UNKNOWN_TO_PORTAL,
            Code::Tcvn3Converted => TCVN3_CONVERTED,
            Code::TextTruncated => TEXT_TRUNCATED,
            Code::PhoneDropped => PHONE_DROPPED,
            Code::EmailDropped => EMAIL_DROPPED,
            Code::IdentityDropped => IDENTITY_DROPPED,
            Code::TaxCodeDropped => TAX_CODE_DROPPED,
            Code::DateFallback => DATE_FALLBACK,
            Code::ProgressDropped => PROGRESS_DROPPED,
            Code::AttachmentDropped => ATTACHMENT_DROPPED,
            Code::CancelledAtSource => CANCELLED_AT_SOURCE,
            Code::DeletedAtSource => DELETED_AT_SOURCE,
        }
    }

    /// Reads a stored code back; `None` for a code this version does not know.
    pub fn parse(code: &str) -> Option<Code> {
        Code::ALL
            .iter()
            .copied()
            .find(|known| known.as_str() == code)
    }

    /// True for codes that hold a dossier back (as opposed to warnings and skips).
    pub const fn is_rejection(self) -> bool {
        matches!(
            self,
            Code::InvalidDossierCode
                | Code::MissingField
                | Code::InvalidDate
                | Code::InconsistentDates
                | Code::InvalidChannel
                | Code::UnmappedStatus
                | Code::UnmappedProcedure
                | Code::UnmappedUnit
                | Code::AmbiguousSuccession
                | Code::InvalidFee
                | Code::InvalidText
                | Code::MalformedRecord
                | Code::OversizeRecord
                | Code::UnitUnknownToPortal
                | Code::ProcedureUnknownToPortal
        )
    }

    /// The operator's Vietnamese wording (vocabulary.md).
    pub const fn message_vi(self) -> &'static str {
        match self {
            Code::InvalidDossierCode => "Mã hồ sơ không hợp lệ",
            Code::MissingField => "Thiếu thông tin bắt buộc",
            Code::InvalidDate => "Ngày tháng không đúng định dạng",
            Code::InconsistentDates => {
                "Ngày tháng không hợp lý (ví dụ ngày hẹn trả trước ngày tiếp nhận)"
            }
            Code::InvalidChannel => "Kênh thực hiện không hợp lệ",
            Code::UnmappedStatus => "Trạng thái hồ sơ chưa được ánh xạ",
            Code::UnmappedProcedure => "Chưa ánh xạ mã thủ tục hành chính",
            Code::UnmappedUnit => "Chưa ánh xạ mã đơn vị",
            Code::AmbiguousSuccession => "Chưa xác định được đơn vị kế thừa sau sắp xếp",
            Code::InvalidFee => "Phí, lệ phí không hợp lệ",
            Code::InvalidText => "Văn bản lỗi mã hóa ký tự",
            Code::MalformedRecord => "Bản ghi sai cấu trúc dữ liệu",
            Code::OversizeRecord => "Bản ghi vượt quá dung lượng cho phép",
            Code::UnitUnknownToPortal => "Mã đơn vị chưa có trên Cổng DVCQG",
            Code::ProcedureUnknownToPortal => "Mã thủ tục chưa có trên Cổng DVCQG",
            Code::Tcvn3Converted => "Đã chuyển mã TCVN3 sang Unicode",
            Code::TextTruncated => "Đã cắt bớt văn bản quá dài",
            Code::PhoneDropped => "Bỏ qua số điện thoại không hợp lệ",
            Code::EmailDropped => "Bỏ qua thư điện tử không hợp lệ",
            Code::IdentityDropped => "Bỏ qua số giấy tờ không hợp lệ",
            Code::TaxCodeDropped => "Bỏ qua mã số thuế không hợp lệ",
            Code::DateFallback => "Dùng ngày cập nhật thay cho ngày từ chối",
            Code::ProgressDropped => "Bỏ qua bước xử lý thiếu thời điểm hoặc nội dung",
            Code::AttachmentDropped => "Bỏ qua tệp đính kèm không rõ loại",
            Code::CancelledAtSource => "Hồ sơ đã hủy tại nguồn",
            Code::DeletedAtSource => "Hồ sơ đã xóa tại nguồn",
        }
    }

    /// The English wording, for operators who ask for it.
    pub const fn message_en(self) -> &'static str {
        match self {
            Code::InvalidDossierCode => "Invalid dossier code",
            Code::MissingField => "Required information is missing",
            Code::InvalidDate => "Date in an unknown format",
            Code::InconsistentDates => {
                "Dates are not plausible (e.g. return date before acceptance date)"
            }
            Code::InvalidChannel => "Invalid submission channel",
            Code::UnmappedStatus => "Dossier status not mapped",
            Code::UnmappedProcedure => "Procedure code not mapped",
            Code::UnmappedUnit => "Unit code not mapped",
            Code::AmbiguousSuccession => "Successor unit after the reorganisation not determined",
            Code::InvalidFee => "Invalid fee",
            Code::InvalidText => "Text with broken character encoding",
            Code::MalformedRecord => "Record does not have the expected structure",
            Code::OversizeRecord => "Record larger than the configured limit",
            Code::UnitUnknownToPortal => "Unit code not known to the national portal",
            Code::ProcedureUnknownToPortal => "Procedure code not known to the national portal",
            Code::Tcvn3Converted => "Converted from TCVN3 to Unicode",
            Code::TextTruncated => "Text too long, shortened",
            Code::PhoneDropped => "Invalid phone number left out",
            Code::EmailDropped => "Invalid e-mail address left out",
            Code::IdentityDropped => "Invalid identity number left out",
            Code::TaxCodeDropped => "Invalid tax code left out",
            Code::DateFallback => "Update date used instead of the refusal date",
            Code::ProgressDropped => "Processing step without time or content left out",
            Code::AttachmentDropped => "Attachment of unknown kind left out",
            Code::CancelledAtSource => "Cancelled at the source",
            Code::DeletedAtSource => "Deleted at the source",
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The Vietnamese message for a stored code; `None` for a code this version does not know.
pub fn message_vi(code: &str) -> Option<&'static str> {
    Code::parse(code).map(Code::message_vi)
}

/// The English message for a stored code; `None` for a code this version does not know.
pub fn message_en(code: &str) -> Option<&'static str> {
    Code::parse(code).map(Code::message_en)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_and_has_both_messages() {
        for code in Code::ALL {
            assert_eq!(Code::parse(code.as_str()), Some(code));
            assert!(!code.message_vi().is_empty());
            assert!(!code.message_en().is_empty());
        }
        assert_eq!(message_vi("unmapped_unit"), Some("Chưa ánh xạ mã đơn vị"));
        assert_eq!(message_en("no_such_code"), None);
    }
}
