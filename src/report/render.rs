//! Reports and failure lists as operators read them: a text table, CSV and xlsx (the same rows), and a
//! versioned JSON document. Vietnamese by default (vocabulary.md), English on request; numbers and dates
//! in each language's own format.
//!
//! No personal data reaches these: unit lines hold codes and counts, and failure rows hold findings
//! whose values were masked when the dossier was normalized.

use std::fmt::Write as _;

use jiff::Timestamp;
use jiff::tz::{Offset, TimeZone};
use serde_json::{Value, json};

use std::collections::HashMap;

use crate::actors::{Actor, triage_of};
use crate::indicators::INDICATORS;
use crate::normalize::codes;
use crate::reconcile::UnitLine;
use crate::store::{FailureRow, Millis};
use crate::unit_key::owner_of;

/// The JSON report's schema version: bump it on any change a consumer could notice.
pub const REPORT_SCHEMA: &str = "tthc-sync.report/1";
/// The JSON failure list's schema version.
pub const FAILURES_SCHEMA: &str = "tthc-sync.failures/1";

/// The content check's finding in the operators' words (in the style of vocabulary.md): accepted
/// dossiers whose copy on the portal is not the payload tthc-sync sent, queued to be sent again.
pub const CONTENT_DIFFERS_VI: &str = "Nội dung trên Cổng DVCQG bị sai khác";
/// Dossiers stamped ahead of the clock (source-api.md quirk 10), as the report and dashboard name them.
pub const STAMPED_AHEAD_VI: &str = "Hồ sơ có thời điểm cập nhật vượt đồng hồ";
pub const STAMPED_AHEAD_EN: &str = "Dossiers stamped ahead of the clock";
pub const CONTENT_DIFFERS_EN: &str = "Content differs on the portal";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Vi,
    En,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Csv,
    Xlsx,
}

/// One cell of a sheet: kept typed so that xlsx gets numbers as numbers.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(String),
    Int(i64),
    /// A share in 0..=1, shown as a percentage.
    Percent(f64),
    Empty,
}

impl Cell {
    fn show(&self, lang: Lang) -> String {
        match self {
            Cell::Text(text) => text.clone(),
            Cell::Int(number) => group_thousands(*number, lang),
            Cell::Percent(share) => percent(*share, lang),
            Cell::Empty => String::new(),
        }
    }
}

/// A titled grid: what the table, CSV and xlsx outputs are all made from.
#[derive(Debug, Clone)]
pub struct Sheet {
    pub title: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// `1.234.567` in Vietnamese, `1,234,567` in English.
pub fn group_thousands(number: i64, lang: Lang) -> String {
    let separator = if lang == Lang::Vi { '.' } else { ',' };
    let digits = number.unsigned_abs().to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(separator);
        }
        out.push(digit);
    }
    if number < 0 { format!("-{out}") } else { out }
}

/// `97,5%` in Vietnamese, `97.5%` in English (one decimal).
pub fn percent(share: f64, lang: Lang) -> String {
    let text = format!("{:.1}%", share * 100.0);
    if lang == Lang::Vi {
        text.replace('.', ",")
    } else {
        text
    }
}

/// `dd/MM/yyyy HH:mm`, Vietnam time.
pub fn vietnam_time(millis: Millis) -> String {
    Timestamp::from_millisecond(millis)
        .map(|at| {
            TimeZone::fixed(Offset::constant(7))
                .to_datetime(at)
                .strftime("%d/%m/%Y %H:%M")
                .to_string()
        })
        .unwrap_or_default()
}

/// The operator's words for a held-back, refused or skipped reason.
pub fn reason_label(code: &str, lang: Lang) -> String {
    let portal = match code {
        "portal_2" => Some((
            "Cổng DVCQG báo dữ liệu không hợp lệ",
            "the portal found the data invalid",
        )),
        "portal_5" => Some((
            "Cổng DVCQG chưa có mã đơn vị hoặc mã thủ tục",
            "the portal does not know the unit or procedure code",
        )),
        _ => None,
    };
    let label = match (portal, lang) {
        (Some((vi, _)), Lang::Vi) => Some(vi),
        (Some((_, en)), Lang::En) => Some(en),
        (None, Lang::Vi) => codes::message_vi(code),
        (None, Lang::En) => codes::message_en(code),
    };
    label.map_or_else(|| code.to_owned(), str::to_owned)
}

fn pick(lang: Lang, vi: &str, en: &str) -> String {
    match lang {
        Lang::Vi => vi.to_owned(),
        Lang::En => en.to_owned(),
    }
}

/// Who must act on a reason, in the operator's language.
pub fn actor_label(actor: Actor, lang: Lang) -> String {
    let (vi, en) = actor.label();
    pick(lang, vi, en)
}

/// The next step for a reason, in the operator's language.
pub fn next_step(code: &str, lang: Lang) -> String {
    let triage = triage_of(code);
    pick(lang, triage.next_vi, triage.next_en)
}

/// The reasons' next steps, one per actor, the actor named: "Đơn vị: …; Quản trị hệ thống của Sở: …".
fn next_steps(codes: &[&str], lang: Lang) -> String {
    let mut steps: Vec<(Actor, String)> = Vec::new();
    for code in codes {
        let actor = triage_of(code).actor;
        let step = next_step(code, lang);
        if !steps.iter().any(|(_, known)| *known == step) {
            steps.push((actor, step));
        }
    }
    steps.sort_by_key(|(actor, _)| *actor);
    steps
        .into_iter()
        .map(|(actor, step)| format!("{}: {step}", actor_label(actor, lang)))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The report's sheet: one row per unit, problems first (the order of `lines`).
pub fn report_sheet(lines: &[UnitLine], lang: Lang) -> Sheet {
    let columns = [
        ("Đơn vị", "Unit"),
        ("Mã tại hệ thống một cửa", "Source agencies"),
        ("Hồ sơ tại hệ thống một cửa", "Dossiers at the source"),
        ("Cổng DVCQG đã nhận", "Accepted by the portal"),
        ("Chờ đồng bộ", "Waiting to be sent"),
        ("Bị giữ lại", "Held back"),
        ("Bị Cổng DVCQG từ chối", "Refused by the portal"),
        (
            "Bỏ qua (đã hủy/xóa tại nguồn)",
            "Skipped (cancelled or deleted at the source)",
        ),
        ("Chưa có trên Cổng DVCQG", "Missing on the portal"),
        (CONTENT_DIFFERS_VI, CONTENT_DIFFERS_EN),
        (STAMPED_AHEAD_VI, STAMPED_AHEAD_EN),
        ("Tỷ lệ đồng bộ", "Sync completeness"),
        ("Hồ sơ chờ lâu nhất", "Oldest unsent dossier"),
        ("Lý do", "Reasons"),
        ("Việc cần làm", "Next steps"),
        ("Tình trạng đồng bộ", "Sync health"),
    ]
    .iter()
    .map(|(vi, en)| pick(lang, vi, en))
    .chain(
        // The indicator preview (QĐ 766), completeness aside (it has its own column above).
        INDICATORS[1..].iter().map(|indicator| {
            format!(
                "{} {}",
                indicator.id,
                pick(lang, indicator.name_vi, indicator.name_en)
            )
        }),
    )
    .collect();
    let rows = lines
        .iter()
        .map(|line| {
            let reasons = line
                .reasons
                .iter()
                .take(3)
                .map(|reason| format!("{} ({})", reason_label(&reason.code, lang), reason.count))
                .collect::<Vec<_>>()
                .join("; ");
            let codes: Vec<&str> = line
                .reasons
                .iter()
                .map(|reason| reason.code.as_str())
                .collect();
            vec![
                Cell::Text(line.unit.clone()),
                Cell::Text(line.source_agencies.join(", ")),
                line.source_count.map_or(Cell::Empty, Cell::Int),
                Cell::Int(line.ledger.accepted),
                Cell::Int(line.ledger.pending),
                Cell::Int(line.ledger.held),
                Cell::Int(line.ledger.refused),
                Cell::Int(line.ledger.skipped),
                Cell::Int(line.gap()),
                Cell::Int(line.content_differs),
                Cell::Int(line.stamped_ahead),
                line.completeness.map_or(Cell::Empty, Cell::Percent),
                line.oldest_unsent_at
                    .map_or(Cell::Empty, |at| Cell::Text(vietnam_time(at))),
                Cell::Text(reasons),
                Cell::Text(next_steps(&codes, lang)),
                Cell::Text(if line.complete {
                    pick(lang, "Đầy đủ", "Complete")
                } else {
                    pick(lang, "Cần xử lý", "Needs attention")
                }),
            ]
            .into_iter()
            .chain(INDICATORS[1..].iter().enumerate().map(|(index, _)| {
                line.indicators
                    .as_ref()
                    .and_then(|preview| preview.current.rates()[index + 1].1)
                    .map_or(Cell::Empty, Cell::Percent)
            }))
            .collect()
        })
        .collect();
    Sheet {
        title: pick(lang, "Đối soát", "Reconciliation"),
        columns,
        rows,
    }
}

/// One rejection of a failing dossier, as the lists show it: (code, field, masked value, detail).
fn rejections(failure: &FailureRow) -> Vec<(String, String, String, String)> {
    let mut findings: Vec<(String, String, String, String)> =
        serde_json::from_str::<Vec<Value>>(&failure.findings)
            .unwrap_or_default()
            .into_iter()
            .filter(|finding| finding["kind"] == "rejection")
            .map(|finding| {
                let text = |key: &str| finding[key].as_str().unwrap_or_default().to_owned();
                (text("code"), text("field"), text("value"), text("detail"))
            })
            .collect();
    if findings.is_empty() {
        // A refusal, or a hold by the catalog pre-flight stored without findings.
        findings.push((
            failure.reason_code.clone().unwrap_or_default(),
            String::new(),
            String::new(),
            failure.reason_detail.clone().unwrap_or_default(),
        ));
    }
    findings
}

/// The failure list's sheet: one row per finding of each held-back or refused dossier, with the unit
/// key the report shows it under, who must act and how. The free-text detail (English, from the
/// normalizer or the portal) is in the English sheet only.
pub fn failures_sheet(
    failures: &[FailureRow],
    owners: &HashMap<String, String>,
    lang: Lang,
) -> Sheet {
    let mut columns = vec![
        ("Mã hồ sơ", "Dossier code"),
        ("Đơn vị", "Unit"),
        ("Mã tại hệ thống một cửa", "Source agency"),
        ("Ngày tiếp nhận", "Reception day"),
        ("Tình trạng", "State"),
        ("Mã lý do", "Reason code"),
        ("Lý do", "Reason"),
        ("Trường", "Field"),
        ("Giá trị (đã che)", "Value (masked)"),
        ("Người xử lý", "Who acts"),
        ("Việc cần làm", "Next step"),
    ];
    if lang == Lang::En {
        columns.push(("Chi tiết", "Detail"));
    }
    columns.push(("Lần gửi", "Attempts"));
    columns.push(("Cập nhật", "Changed"));
    let columns = columns.iter().map(|(vi, en)| pick(lang, vi, en)).collect();
    let mut rows = Vec::new();
    for failure in failures {
        let state = match failure.state.as_str() {
            "held" => pick(lang, "Bị giữ lại", "Held back"),
            _ => pick(lang, "Bị Cổng DVCQG từ chối", "Refused by the portal"),
        };
        let key = owner_of(
            failure.unit.as_deref(),
            failure.source_agency_id.as_deref(),
            owners,
        )
        .to_string();
        for (code, field, value, detail) in rejections(failure) {
            let mut row = vec![
                Cell::Text(failure.dossier_code.clone().unwrap_or_default()),
                Cell::Text(key.clone()),
                Cell::Text(failure.source_agency_id.clone().unwrap_or_default()),
                Cell::Text(failure.reception_day.clone().unwrap_or_default()),
                Cell::Text(state.clone()),
                Cell::Text(code.clone()),
                Cell::Text(reason_label(&code, lang)),
                Cell::Text(field),
                Cell::Text(value),
                Cell::Text(actor_label(triage_of(&code).actor, lang)),
                Cell::Text(next_step(&code, lang)),
            ];
            if lang == Lang::En {
                row.push(Cell::Text(detail));
            }
            row.push(Cell::Int(failure.attempts));
            row.push(Cell::Text(vietnam_time(failure.changed_at)));
            rows.push(row);
        }
    }
    Sheet {
        title: pick(lang, "Hồ sơ chưa đồng bộ", "Dossiers not synced"),
        columns,
        rows,
    }
}

/// The file a unit's correction workbook is written to: its key with what file systems refuse
/// (`:` on Windows) replaced, `.xlsx`.
pub fn workbook_file_name(key: &str) -> String {
    let safe: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("sua-ho-so_{safe}.xlsx")
}

/// A unit's correction list (Vietnamese, ready to send): the first sheet holds what the unit must fix
/// in the one-stop system, one row per problem (dossier code, reception date, field, what is wrong, how
/// to fix, the masked value); the second, for information, its dossiers that others (the Department,
/// the portal) are dealing with.
pub fn corrections_workbook(
    key: &str,
    failures: &[FailureRow],
    owners: &HashMap<String, String>,
) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    let columns: Vec<String> = [
        "Mã hồ sơ",
        "Ngày tiếp nhận",
        "Trường thông tin",
        "Lỗi",
        "Cách sửa",
        "Giá trị hiện tại (đã che)",
        "Người xử lý",
        "Mã lý do",
    ]
    .iter()
    .map(|title| (*title).to_owned())
    .collect();
    let mut to_fix = Vec::new();
    let mut others = Vec::new();
    for failure in failures {
        if owner_of(
            failure.unit.as_deref(),
            failure.source_agency_id.as_deref(),
            owners,
        )
        .to_string()
            != key
        {
            continue;
        }
        let day = failure
            .reception_day
            .as_deref()
            .and_then(|day| day.parse::<jiff::civil::Date>().ok())
            .map(|day| day.strftime("%d/%m/%Y").to_string())
            .unwrap_or_default();
        for (code, field, value, _) in rejections(failure) {
            let actor = triage_of(&code).actor;
            let row = vec![
                Cell::Text(failure.dossier_code.clone().unwrap_or_default()),
                Cell::Text(day.clone()),
                Cell::Text(field),
                Cell::Text(reason_label(&code, Lang::Vi)),
                Cell::Text(next_step(&code, Lang::Vi)),
                Cell::Text(value),
                Cell::Text(actor_label(actor, Lang::Vi)),
                Cell::Text(code),
            ];
            if actor == Actor::Unit {
                to_fix.push(row);
            } else {
                others.push(row);
            }
        }
    }
    xlsx_book(&[
        Sheet {
            title: "Đơn vị cần sửa".to_owned(),
            columns: columns.clone(),
            rows: to_fix,
        },
        Sheet {
            title: "Sở và Cổng DVCQG đang xử lý".to_owned(),
            columns,
            rows: others,
        },
    ])
}

/// An aligned text table (widths in characters: Vietnamese letters are one column each once NFC).
pub fn table(sheet: &Sheet, lang: Lang) -> String {
    let cells: Vec<Vec<String>> = sheet
        .rows
        .iter()
        .map(|row| row.iter().map(|cell| cell.show(lang)).collect())
        .collect();
    let mut widths: Vec<usize> = sheet
        .columns
        .iter()
        .map(|title| title.chars().count())
        .collect();
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, values: &[String]| {
        let padded: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(value, width)| {
                let pad = width.saturating_sub(value.chars().count());
                format!("{value}{}", " ".repeat(pad))
            })
            .collect();
        let _ = writeln!(out, "{}", padded.join(" │ ").trim_end());
    };
    line(&mut out, &sheet.columns);
    let rule: Vec<String> = widths.iter().map(|width| "─".repeat(*width)).collect();
    let _ = writeln!(out, "{}", rule.join("─┼─"));
    for row in &cells {
        line(&mut out, row);
    }
    out
}

/// CSV with a header row, the same cells as the table: numbers unformatted (so that a spreadsheet reads
/// them as numbers), shares as percentages in the operator's language (`84,2%`, `84.2%`), which a
/// spreadsheet in that locale reads as numbers too. It starts with a UTF-8 byte order mark: without one,
/// Excel on Windows reads the file in the machine's legacy code page and garbles Vietnamese.
pub fn csv(sheet: &Sheet, lang: Lang) -> Result<Vec<u8>, csv::Error> {
    let mut writer = csv::Writer::from_writer(UTF8_BOM.as_bytes().to_vec());
    writer.write_record(&sheet.columns)?;
    for row in &sheet.rows {
        writer.write_record(row.iter().map(|cell| csv_text(cell, lang)))?;
    }
    writer
        .into_inner()
        .map_err(|error| csv::Error::from(error.into_error()))
}

/// The byte order mark that opens every CSV export.
pub const UTF8_BOM: &str = "\u{FEFF}";

/// A cell as CSV text: numbers without grouping, shares as percentages with one decimal.
fn csv_text(cell: &Cell, lang: Lang) -> String {
    match cell {
        Cell::Percent(share) => percent(*share, lang),
        other => raw_text(other),
    }
}

/// A cell as machine-readable text (CSV): numbers without grouping, shares as decimals.
pub fn raw_text(cell: &Cell) -> String {
    match cell {
        Cell::Text(text) => text.clone(),
        Cell::Int(number) => number.to_string(),
        Cell::Percent(share) => format!("{share:.4}"),
        Cell::Empty => String::new(),
    }
}

/// An xlsx workbook with one sheet: header in bold, frozen, columns wide enough to read, percentages
/// formatted as such.
pub fn xlsx(sheet: &Sheet) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    xlsx_book(std::slice::from_ref(sheet))
}

/// An xlsx workbook with one worksheet per sheet, each as [`xlsx`] writes it.
pub fn xlsx_book(sheets: &[Sheet]) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    use rust_xlsxwriter::Workbook;
    let mut workbook = Workbook::new();
    for sheet in sheets {
        add_worksheet(&mut workbook, sheet)?;
    }
    workbook.save_to_buffer()
}

fn add_worksheet(
    workbook: &mut rust_xlsxwriter::Workbook,
    sheet: &Sheet,
) -> Result<(), rust_xlsxwriter::XlsxError> {
    use rust_xlsxwriter::Format;
    let worksheet = workbook.add_worksheet();
    // Sheet names are limited to 31 characters.
    let name: String = sheet.title.chars().take(31).collect();
    worksheet.set_name(name)?;
    let bold = Format::new().set_bold().set_text_wrap();
    let share = Format::new().set_num_format("0.0%");
    let mut widths: Vec<usize> = sheet
        .columns
        .iter()
        .map(|title| title.chars().count().min(24))
        .collect();
    for (column, title) in sheet.columns.iter().enumerate() {
        worksheet.write_string_with_format(0, column as u16, title, &bold)?;
    }
    for (index, row) in sheet.rows.iter().enumerate() {
        let at = index as u32 + 1;
        for (column, cell) in row.iter().enumerate() {
            let column_number = column as u16;
            match cell {
                Cell::Text(text) => {
                    worksheet.write_string(at, column_number, text)?;
                    widths[column] = widths[column].max(text.chars().count());
                }
                Cell::Int(number) => {
                    worksheet.write_number(at, column_number, *number as f64)?;
                }
                Cell::Percent(value) => {
                    worksheet.write_number_with_format(at, column_number, *value, &share)?;
                }
                Cell::Empty => {}
            }
        }
    }
    for (column, width) in widths.iter().enumerate() {
        worksheet.set_column_width(column as u16, (*width).clamp(8, 60) as f64 + 2.0)?;
    }
    worksheet.set_freeze_panes(1, 0)?;
    Ok(())
}

/// The report as a versioned JSON document (its schema: `docs/report.schema.json`).
pub fn report_json(
    lines: &[UnitLine],
    from: &str,
    to: &str,
    generated_at: Timestamp,
    notes: &[String],
) -> Value {
    json!({
        "schema": REPORT_SCHEMA,
        "generated_at": generated_at.to_string(),
        "from": from,
        "to": to,
        "complete": lines.iter().all(|line| line.complete),
        "units": lines.iter().map(|line| {
            let mut value = serde_json::to_value(line).unwrap_or(Value::Null);
            value["gap"] = json!(line.gap());
            value["oldest_unsent_at"] = json!(line
                .oldest_unsent_at
                .and_then(|at| Timestamp::from_millisecond(at).ok())
                .map(|at| at.to_string()));
            for reason in value["reasons"].as_array_mut().into_iter().flatten() {
                let code = reason["code"].as_str().unwrap_or_default().to_owned();
                reason["message_vi"] = json!(reason_label(&code, Lang::Vi));
                reason["message_en"] = json!(reason_label(&code, Lang::En));
                let triage = triage_of(&code);
                reason["actor"] = json!(triage.actor.as_str());
                reason["next_step_vi"] = json!(triage.next_vi);
                reason["next_step_en"] = json!(triage.next_en);
            }
            value
        }).collect::<Vec<_>>(),
        "notes": notes,
    })
}

/// The failure list as a versioned JSON document (its schema: `docs/failures.schema.json`).
pub fn failures_json(
    failures: &[FailureRow],
    owners: &HashMap<String, String>,
    generated_at: Timestamp,
) -> Value {
    json!({
        "schema": FAILURES_SCHEMA,
        "generated_at": generated_at.to_string(),
        "dossiers": failures.iter().map(|failure| {
            let triage = triage_of(failure.reason_code.as_deref().unwrap_or_default());
            json!({
            "source_id": failure.source_id,
            "dossier_code": failure.dossier_code,
            "unit": failure.unit,
            "unit_key": owner_of(failure.unit.as_deref(), failure.source_agency_id.as_deref(), owners).to_string(),
            "source_agency_id": failure.source_agency_id,
            "reception_day": failure.reception_day,
            "state": failure.state.as_str(),
            "reason_code": failure.reason_code,
            "reason_detail": failure.reason_detail,
            "actor": triage.actor.as_str(),
            "next_step_vi": triage.next_vi,
            "next_step_en": triage.next_en,
            "findings": serde_json::from_str::<Value>(&failure.findings).unwrap_or(Value::Array(Vec::new())),
            "attempts": failure.attempts,
            "changed_at": Timestamp::from_millisecond(failure.changed_at).map(|at| at.to_string()).unwrap_or_default(),
        })}).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_opens_with_a_byte_order_mark_and_shows_shares_as_percentages() {
        let sheet = Sheet {
            title: "t".into(),
            columns: vec!["Đơn vị".into(), "Số".into(), "Tỷ lệ".into()],
            rows: vec![vec![
                Cell::Text("Xã Minh Xuân, huyện A".into()),
                Cell::Int(1234),
                Cell::Percent(0.842),
            ]],
        };
        let vietnamese = String::from_utf8(csv(&sheet, Lang::Vi).unwrap()).unwrap();
        assert_eq!(
            vietnamese,
            "\u{FEFF}Đơn vị,Số,Tỷ lệ\n\"Xã Minh Xuân, huyện A\",1234,\"84,2%\"\n"
        );
        let english = String::from_utf8(csv(&sheet, Lang::En).unwrap()).unwrap();
        assert!(english.starts_with(UTF8_BOM));
        assert!(english.ends_with(",1234,84.2%\n"), "{english}");
    }

    #[test]
    fn numbers_and_shares_in_each_language() {
        assert_eq!(group_thousands(1_234_567, Lang::Vi), "1.234.567");
        assert_eq!(group_thousands(1_234_567, Lang::En), "1,234,567");
        assert_eq!(group_thousands(999, Lang::Vi), "999");
        assert_eq!(percent(0.975, Lang::Vi), "97,5%");
        assert_eq!(percent(0.975, Lang::En), "97.5%");
        assert_eq!(vietnam_time(0), "01/01/1970 07:00");
    }

    #[test]
    fn reasons_have_operator_words() {
        assert_eq!(
            reason_label("unmapped_unit", Lang::Vi),
            "Chưa ánh xạ mã đơn vị"
        );
        assert_eq!(
            reason_label("portal_5", Lang::Vi),
            "Cổng DVCQG chưa có mã đơn vị hoặc mã thủ tục"
        );
        assert_eq!(reason_label("no_such_code", Lang::En), "no_such_code");
    }
}
