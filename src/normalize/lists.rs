//! The dossier's lists: fees (`DanhSachLePhi`, `DuocThanhToanTrucTuyen`), attachments (`TaiLieuNop`,
//! `DanhSachGiayToKetQua`) and supplement requests (`DanhSachHoSoBoSung`).

use crate::portal::wire::{FeeLine, ResultDocument, SubmittedFile, SupplementRequest};
use crate::source::wire::{Attachment, Fee, RawAmount, Supplement};

use super::codes;
use super::findings::{Collector, Field};

/// A fee amount in whole đồng, parsed from any shape the source writes (source-api.md quirk 7,
/// mapping.md `DanhSachLePhi`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dong(i64);

impl Dong {
    /// `75000`, `75000.0`, `"75.000"`, `"75,000"`, `"75 000 đ"`, `"1.250.000"`, `"75.000,00"`; negative,
    /// a nonzero fraction, uneven or mixed groups, words: `None`.
    pub fn parse(raw: &RawAmount) -> Option<Dong> {
        let value = match raw {
            RawAmount::Number(number) => match number.as_i64() {
                Some(whole) => whole,
                None => {
                    let float = number.as_f64()?;
                    if !float.is_finite() || float.fract() != 0.0 || float.abs() >= 9e15 {
                        return None;
                    }
                    float as i64
                }
            },
            RawAmount::Text(text) => parse_amount_text(text)?,
        };
        (value >= 0).then_some(Dong(value))
    }

    pub fn value(self) -> i64 {
        self.0
    }
}

/// Currency marks a writer may leave after the amount; matched without regard to case.
const CURRENCY_SUFFIXES: [&str; 4] = ["vnđ", "vnd", "đ", "₫"];

/// Whether `character` separates the groups or the fraction of an amount: `.`, `,` or a space (the
/// no-break spaces that locale formatting writes included).
fn is_amount_separator(character: char) -> bool {
    matches!(character, '.' | ',' | ' ' | '\u{A0}' | '\u{202F}')
}

/// An amount written as text (mapping.md, `DanhSachLePhi`). Đồng have no fractions in use, so a
/// separator followed by exactly three digits groups thousands whatever the writer's habit (`75.000`,
/// `75,000`, `75 000`), and a last part of another length is a fraction, accepted only when it is all
/// zeros and written with `.` or `,` other than the group separator (`75.000,00`, `75000.0`). Anything
/// else is refused rather than guessed: reading `75,000` as 75 would send a value 1,000 times too small.
fn parse_amount_text(text: &str) -> Option<i64> {
    let mut amount = text.trim();
    for suffix in CURRENCY_SUFFIXES {
        let letters = suffix.chars().count();
        if let Some((cut, _)) = amount.char_indices().rev().nth(letters - 1)
            && amount[cut..].to_lowercase() == suffix
        {
            amount = amount[..cut].trim_end();
            break;
        }
    }
    // Digit runs and the single separators between them.
    let mut runs: Vec<&str> = Vec::new();
    let mut separators: Vec<char> = Vec::new();
    let mut start = 0;
    for (index, character) in amount.char_indices() {
        if character.is_ascii_digit() {
            continue;
        }
        if !is_amount_separator(character) {
            return None;
        }
        runs.push(&amount[start..index]);
        separators.push(character);
        start = index + character.len_utf8();
    }
    runs.push(&amount[start..]);
    if runs.iter().any(|run| run.is_empty()) {
        return None;
    }
    // A last run that is not a group of three is a fraction: zeros only, after `.` or `,`.
    if let (Some(last), Some(&separator)) = (runs.last(), separators.last())
        && last.len() != 3
    {
        let groups_use_it = separators[..separators.len() - 1].contains(&separator);
        if !matches!(separator, '.' | ',')
            || groups_use_it
            || last.bytes().any(|digit| digit != b'0')
        {
            return None;
        }
        runs.pop();
        separators.pop();
    }
    // What is left groups thousands: one separator throughout, a first group of one to three digits,
    // then groups of exactly three.
    if let Some(&first_separator) = separators.first() {
        let one_separator = separators
            .iter()
            .all(|separator| *separator == first_separator);
        let even = runs[0].len() <= 3 && runs[1..].iter().all(|run| run.len() == 3);
        if !one_separator || !even {
            return None;
        }
    }
    runs.concat().parse().ok()
}

/// Fee lines; a fee without a valid amount is `invalid_fee`.
pub fn fee_lines(fees: &[Fee], collector: &mut Collector) -> Option<Vec<FeeLine>> {
    let mut lines = Vec::with_capacity(fees.len());
    for (index, fee) in fees.iter().enumerate() {
        let amount = fee.amount.as_ref().and_then(Dong::parse);
        let Some(amount) = amount else {
            let shown = fee.amount.as_ref().map(|raw| match raw {
                RawAmount::Number(number) => number.to_string(),
                RawAmount::Text(text) => text.to_owned_string(),
            });
            let detail = if shown.is_some() {
                "negative, fractional or unparseable amount"
            } else {
                "fee without an amount"
            };
            collector.reject(
                codes::INVALID_FEE,
                Field::Item("fees", index, "amount"),
                detail,
                shown.as_deref(),
            );
            continue;
        };
        lines.push(FeeLine {
            ten_phi_le_phi: collector.text(
                Field::Item("fees", index, "name"),
                fee.name.as_deref(),
                None,
            ),
            ma_phi_le_phi: collector.text(
                Field::Item("fees", index, "code"),
                fee.code.as_deref(),
                None,
            ),
            hinh_thuc_thu: None,
            gia: amount.value(),
            loai_phi_le_phi: None,
        });
    }
    (!lines.is_empty()).then_some(lines)
}

/// "1" when a paid fee went through the national portal, else "2" when one went through the provincial
/// payment platform, else absent.
pub fn paid_online(fees: &[Fee]) -> Option<String> {
    let paid_by = |channel: &str| {
        fees.iter().any(|fee| {
            fee.paid == Some(true)
                && fee
                    .payment_channel
                    .as_deref()
                    .is_some_and(|paid| paid.trim().eq_ignore_ascii_case(channel))
        })
    };
    if paid_by("DVCQG") {
        Some("1".to_owned())
    } else if paid_by("PAYMENT_PLATFORM") {
        Some("2".to_owned())
    } else {
        None
    }
}

fn flag(value: Option<bool>) -> String {
    if value == Some(true) { "1" } else { "0" }.to_owned()
}

/// Submitted files and result documents, by `kind`.
pub fn attachments(
    attachments: &[Attachment],
    collector: &mut Collector,
) -> (Option<Vec<SubmittedFile>>, Option<Vec<ResultDocument>>) {
    let mut submitted = Vec::new();
    let mut results = Vec::new();
    for (index, attachment) in attachments.iter().enumerate() {
        let field = |name| Field::Item("attachments", index, name);
        match attachment.kind.as_deref().map(str::trim) {
            Some(kind) if kind.eq_ignore_ascii_case("input") => submitted.push(SubmittedFile {
                tep_dinh_kem_id: collector.text(field("id"), attachment.id.as_deref(), None),
                ten_tep_dinh_kem: collector.text(field("name"), attachment.name.as_deref(), None),
                ma_thanh_phan_ho_so: collector.text(
                    field("componentCode"),
                    attachment.component_code.as_deref(),
                    None,
                ),
                duong_dan_tai_tep_tin: collector.text(
                    field("url"),
                    attachment.url.as_deref(),
                    None,
                ),
                duoc_so_hoa: flag(attachment.digitized),
                duoc_tai_su_dung: flag(attachment.reused),
                duoc_lay_tu_kho_dmqg: flag(attachment.from_national_repository),
            }),
            Some(kind) if kind.eq_ignore_ascii_case("result") => results.push(ResultDocument {
                ten_giay_to: collector.text(field("name"), attachment.name.as_deref(), None),
                ma_thanh_phan_ho_so: collector.text(
                    field("componentCode"),
                    attachment.component_code.as_deref(),
                    None,
                ),
                giay_to_id: collector.text(field("id"), attachment.id.as_deref(), None),
                duong_dan_tep_tin_ket_qua: collector.text(
                    field("url"),
                    attachment.url.as_deref(),
                    None,
                ),
                ma_giay_to_ket_qua: collector.text(
                    field("resultCode"),
                    attachment.result_code.as_deref(),
                    None,
                ),
            }),
            other => {
                let kind = other.unwrap_or("").to_owned();
                collector.warn(
                    codes::ATTACHMENT_DROPPED,
                    field("kind"),
                    "kind is neither input nor result",
                    Some(&kind),
                );
            }
        }
    }
    (
        (!submitted.is_empty()).then_some(submitted),
        (!results.is_empty()).then_some(results),
    )
}

/// Supplement requests; their dates follow the date rule.
pub fn supplements(
    supplements: &[Supplement],
    collector: &mut Collector,
) -> Option<Vec<SupplementRequest>> {
    let requests: Vec<SupplementRequest> = supplements
        .iter()
        .enumerate()
        .map(|(index, supplement)| {
            let field = |name| Field::Item("supplements", index, name);
            SupplementRequest {
                ho_so_bo_sung_id: collector.text(field("id"), supplement.id.as_deref(), None),
                nguoi_yeu_cau_bo_sung: collector.text(
                    field("requestedBy"),
                    supplement.requested_by.as_deref(),
                    None,
                ),
                noi_dung_bo_sung: collector.text(
                    field("content"),
                    supplement.content.as_deref(),
                    None,
                ),
                ngay_bo_sung: collector
                    .date(field("requestedAt"), supplement.requested_at.as_ref())
                    .map(|time| time.portal_string()),
                ngay_hen_tra_truoc: collector
                    .date(
                        field("previousAppointment"),
                        supplement.previous_appointment.as_ref(),
                    )
                    .map(|time| time.portal_string()),
                ngay_hen_tra_moi: collector
                    .date(field("newAppointment"), supplement.new_appointment.as_ref())
                    .map(|time| time.portal_string()),
            }
        })
        .collect();
    (!requests.is_empty()).then_some(requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(raw: RawAmount) -> Option<i64> {
        Dong::parse(&raw).map(Dong::value)
    }

    fn text(value: &str) -> Option<i64> {
        amount(RawAmount::Text(value.into()))
    }

    #[test]
    fn reads_every_amount_shape() {
        assert_eq!(amount(RawAmount::Number(75000.into())), Some(75000));
        assert_eq!(
            amount(RawAmount::Number(
                serde_json::Number::from_f64(75000.0).expect("finite")
            )),
            Some(75000)
        );
        assert_eq!(text("75.000"), Some(75000));
        assert_eq!(text("1.250.000"), Some(1_250_000));
        assert_eq!(text(" 75000 "), Some(75000));
        assert_eq!(text("75000.0"), Some(75000));
        assert_eq!(text("75000,00"), Some(75000));
        assert_eq!(text("0"), Some(0));
        // mapping.md: a separator followed by exactly three digits groups thousands, whichever it is.
        assert_eq!(text("75,000"), Some(75000));
        assert_eq!(text("75 000"), Some(75000));
        assert_eq!(text("75\u{A0}000"), Some(75000));
        assert_eq!(text("1,250,000"), Some(1_250_000));
        assert_eq!(text("1 250 000"), Some(1_250_000));
        assert_eq!(text("75.000,00"), Some(75000));
        assert_eq!(text("75,000.00"), Some(75000));
        assert_eq!(text("1.250.000,0"), Some(1_250_000));
        // A currency mark after the amount is ignored.
        for marked in [
            "75.000đ",
            "75.000 đ",
            "75,000 VNĐ",
            "75000VND",
            "75 000 ₫",
            "75.000 vnđ",
            "75.000 Đ",
        ] {
            assert_eq!(text(marked), Some(75000), "{marked}");
        }
    }

    #[test]
    fn refuses_bad_amounts() {
        assert_eq!(amount(RawAmount::Number((-5).into())), None);
        assert_eq!(
            amount(RawAmount::Number(
                serde_json::Number::from_f64(75000.5).expect("finite")
            )),
            None
        );
        for bad in [
            "-75.000",
            "abc",
            "",
            "7.5",
            "1.2345",
            "99999999999999999999",
            // A nonzero fraction, uneven or mixed groups, a fraction written with the groups' separator,
            // a space before a fraction, words, two separators in a row: never guessed.
            "75,5",
            "75.000,5",
            "7,50.0",
            "1.250,000",
            "1,250.000.000",
            "1250.000",
            "75.000.00",
            "75.00.000",
            "75 00",
            "75..000",
            ".000",
            "75.",
            "75.000 đồng",
            "bảy mươi lăm nghìn",
            "đ",
            "VND 75.000",
            "+75000",
        ] {
            assert_eq!(text(bad), None, "{bad}");
        }
    }

    #[test]
    fn online_payment_channel() {
        let fee = |paid, channel: &str| Fee {
            paid: Some(paid),
            payment_channel: Some(channel.into()),
            ..Fee::default()
        };
        assert_eq!(
            paid_online(&[fee(true, "PAYMENT_PLATFORM"), fee(true, "DVCQG")]),
            Some("1".into())
        );
        assert_eq!(
            paid_online(&[fee(true, "PAYMENT_PLATFORM")]),
            Some("2".into())
        );
        assert_eq!(paid_online(&[fee(false, "DVCQG"), fee(true, "CASH")]), None);
    }
}
