//! The dashboard's HTML, rendered on the server: Vietnamese by default, English with `?lang=en`, no
//! script and nothing fetched from elsewhere; it reloads itself (`<meta http-equiv="refresh">`). Every
//! value is HTML-escaped.

use std::fmt::Write as _;
use std::time::Instant;

use super::data::DashboardView;
use crate::reconcile::UnitLine;
use crate::reconcile::render::{
    CONTENT_DIFFERS_EN, CONTENT_DIFFERS_VI, Lang, failures_sheet, group_thousands, percent,
    raw_text, reason_label, vietnam_time,
};
use crate::report::indicators::INDICATORS;
use crate::store::FailureRow;
use crate::sync::decide::DossierState;

/// Dossiers the portal accepted per minute, measured between two views of the dashboard.
#[derive(Debug, Default)]
pub struct Throughput {
    previous: Option<(Instant, u64)>,
    per_minute: Option<f64>,
}

impl Throughput {
    /// Takes a sample of the accepted counter; returns the rate over the last interval (none before
    /// a second sample at least a second after the first).
    pub fn sample(&mut self, accepted: u64) -> Option<f64> {
        let now = Instant::now();
        match self.previous {
            Some((at, before)) if now.duration_since(at).as_secs_f64() >= 1.0 => {
                let minutes = now.duration_since(at).as_secs_f64() / 60.0;
                self.per_minute = Some(accepted.saturating_sub(before) as f64 / minutes);
                self.previous = Some((now, accepted));
            }
            Some(_) => {}
            None => self.previous = Some((now, accepted)),
        }
        self.per_minute
    }
}

/// Escapes text for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// Escapes a path segment (a unit code in a link).
fn path_segment(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~:".contains(&byte) {
            out.push(byte as char);
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

fn pick(lang: Lang, vi: &'static str, en: &'static str) -> &'static str {
    match lang {
        Lang::Vi => vi,
        Lang::En => en,
    }
}

/// "3 phút trước" / "3 min ago"; "chưa có" / "none yet" for 0.
fn ago(now: i64, at: i64, lang: Lang) -> String {
    if at <= 0 {
        return pick(lang, "chưa có", "none yet").to_owned();
    }
    let seconds = ((now - at) / 1000).max(0);
    let (value, vi, en) = match seconds {
        0..=119 => (seconds, "giây", "s"),
        120..=7199 => (seconds / 60, "phút", "min"),
        _ => (seconds / 3600, "giờ", "h"),
    };
    match lang {
        Lang::Vi => format!("{} {vi} trước", group_thousands(value, lang)),
        Lang::En => format!("{} {en} ago", group_thousands(value, lang)),
    }
}

const STYLE: &str = "
body{font-family:'Noto Sans','DejaVu Sans',Arial,sans-serif;margin:0;padding:10px 14px;color:#1c2430;background:#f4f6f9;font-size:13px}
h1{font-size:20px;margin:0 0 6px}h2{font-size:15px;margin:8px 0 2px;display:inline-block}
header{display:flex;justify-content:space-between;align-items:baseline;flex-wrap:wrap;gap:8px}
.state{display:inline-block;padding:4px 10px;border-radius:4px;font-weight:bold;color:#fff}
.ok{background:#2e7d32}.bad{background:#c62828}
.cards{display:flex;gap:6px;margin:6px 0}
.card{flex:1 1 0;min-width:0;background:#fff;border:1px solid #d5dbe3;border-radius:6px;padding:4px 8px}
.card b{display:block;font-size:17px}.card span{color:#556;font-size:12px}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border:1px solid #d5dbe3;padding:4px 6px;text-align:left;vertical-align:top}
th{background:#e8edf3;position:sticky;top:0;font-size:12px}
#failures td{overflow-wrap:anywhere}
td.s{white-space:nowrap}td.ind{white-space:nowrap;font-size:12px}.legend{font-size:12px}
td.n{text-align:right;white-space:nowrap}
tr.problem td:first-child{border-left:4px solid #c62828}
tr.fine td:first-child{border-left:4px solid #2e7d32}
ul{margin:0;padding-left:14px}small,.muted{color:#556}.muted{margin:2px 0 6px}
a{color:#0d47a1}
";

fn head(out: &mut String, title: &str, refresh: Option<u64>, lang: Lang) {
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"{}\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">",
        pick(lang, "vi", "en")
    );
    if let Some(seconds) = refresh {
        let _ = write!(out, "<meta http-equiv=\"refresh\" content=\"{seconds}\">");
    }
    let _ = write!(
        out,
        "<title>{}</title><style>{STYLE}</style></head><body>",
        escape(title)
    );
}

/// The dashboard page.
pub fn page(view: &DashboardView, throughput: Option<f64>, refresh: u64, lang: Lang) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let title = pick(
        lang,
        "tthc-sync: Tình trạng đồng bộ",
        "tthc-sync: sync health",
    );
    head(&mut out, title, Some(refresh.max(1)), lang);
    let all_complete = view.lines.iter().all(|line| line.complete) && view.ready.is_ok();
    let (state_class, state_text) = if all_complete {
        (
            "ok",
            pick(
                lang,
                "Tất cả đơn vị đã đồng bộ đầy đủ",
                "All units complete",
            ),
        )
    } else {
        ("bad", pick(lang, "Cần xử lý", "Needs attention"))
    };
    let other_lang = match lang {
        Lang::Vi => "<a href=\"/?lang=en\">English</a>",
        Lang::En => "<a href=\"/\">Tiếng Việt</a>",
    };
    let _ = write!(
        out,
        "<header><h1>{}</h1><div><span id=\"overall\" class=\"state {state_class}\">{}</span> {other_lang}</div></header>",
        pick(lang, "Tình trạng đồng bộ", "Sync health"),
        escape(state_text)
    );
    if let Err(reasons) = &view.ready {
        let _ = write!(
            out,
            "<p id=\"not-ready\"><b>{}</b> {}</p>",
            pick(lang, "Chưa sẵn sàng:", "Not ready:"),
            escape(&reasons.join("; "))
        );
    }
    let outstanding =
        view.counts.get(DossierState::Pending) + view.counts.get(DossierState::InFlight);
    let rate = throughput.map_or_else(
        || pick(lang, "đang đo", "measuring").to_owned(),
        |per_minute| {
            format!(
                "{} {}",
                group_thousands(per_minute.round() as i64, lang),
                pick(lang, "hồ sơ/phút", "dossiers/min")
            )
        },
    );
    let cards = [
        (
            pick(lang, "Độ trễ (lấy dữ liệu)", "Lag (last poll)"),
            ago(view.now, view.last_poll_ok, lang),
        ),
        (
            pick(lang, "Độ trễ (gửi đi)", "Lag (last push)"),
            ago(view.now, view.last_push_ok, lang),
        ),
        (pick(lang, "Tốc độ đồng bộ", "Throughput"), rate),
        (
            pick(lang, "Cổng DVCQG đã nhận", "Accepted by the portal"),
            group_thousands(view.counts.get(DossierState::Accepted), lang),
        ),
        (
            pick(lang, "Chờ đồng bộ", "Waiting to be sent"),
            group_thousands(outstanding, lang),
        ),
        (
            pick(lang, "Bị giữ lại", "Held back"),
            group_thousands(view.counts.get(DossierState::Held), lang),
        ),
        (
            pick(lang, "Bị Cổng DVCQG từ chối", "Refused by the portal"),
            group_thousands(view.counts.get(DossierState::Refused), lang),
        ),
        (
            pick(lang, "Hồ sơ chờ lâu nhất", "Oldest unsent dossier"),
            view.oldest_unsent_at
                .map_or_else(|| "–".to_owned(), |at| ago(view.now, at, lang)),
        ),
    ];
    out.push_str("<div class=\"cards\">");
    for (label, value) in cards {
        let _ = write!(
            out,
            "<div class=\"card\"><span>{}</span><b>{}</b></div>",
            escape(label),
            escape(&value)
        );
    }
    out.push_str("</div>");
    let reconciled = view.reconciled_at.map_or_else(
        || pick(lang, "chưa có", "none yet").to_owned(),
        vietnam_time,
    );
    let _ = write!(
        out,
        "<h2>{}</h2> <span class=\"muted\">· {} {} → {} · {} {}</span>",
        pick(lang, "Đơn vị", "Units"),
        pick(lang, "Ngày tiếp nhận", "Reception days"),
        escape(&view.from),
        escape(&view.to),
        pick(lang, "Lần đối soát gần nhất:", "Last reconciliation:"),
        escape(&reconciled)
    );
    unit_table(&mut out, &view.lines, view.now, lang);
    let _ = write!(
        out,
        "<p class=\"muted\">{} {} · tthc-sync {}</p></body></html>",
        pick(lang, "Cập nhật lúc", "Updated at"),
        escape(&vietnam_time(view.now)),
        env!("CARGO_PKG_VERSION")
    );
    out
}

fn unit_table(out: &mut String, lines: &[UnitLine], now: i64, lang: Lang) {
    let columns = [
        ("Đơn vị", "Unit"),
        ("Tình trạng", "State"),
        ("Tỷ lệ đồng bộ", "Sync completeness"),
        ("Cổng DVCQG đã nhận", "Accepted by the portal"),
        ("Chờ đồng bộ", "Waiting to be sent"),
        ("Bị giữ lại", "Held back"),
        ("Bị Cổng DVCQG từ chối", "Refused by the portal"),
        (CONTENT_DIFFERS_VI, CONTENT_DIFFERS_EN),
        ("Lý do", "Reasons"),
        ("Hồ sơ chờ lâu nhất", "Oldest unsent dossier"),
        ("Dự báo chỉ số (QĐ 766)", "Indicator preview (Decision 766)"),
    ];
    out.push_str("<table id=\"units\"><thead><tr>");
    for (vi, en) in columns {
        let _ = write!(out, "<th>{}</th>", pick(lang, vi, en));
    }
    out.push_str("</tr></thead><tbody>");
    if lines.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"{}\">{}</td></tr>",
            columns.len(),
            pick(
                lang,
                "Chưa có hồ sơ trong khoảng này.",
                "No dossiers in this period yet."
            )
        );
    }
    let lang_query = if lang == Lang::En { "?lang=en" } else { "" };
    for line in lines {
        let class = if line.complete { "fine" } else { "problem" };
        let _ = write!(
            out,
            "<tr class=\"unit {class}\" data-unit=\"{}\"><td>{}<br><small>{}</small>",
            escape(&line.unit),
            escape(&line.unit),
            escape(&line.source_agencies.join(", "))
        );
        if line.ledger.held + line.ledger.refused > 0 {
            let _ = write!(
                out,
                "<br><a href=\"/units/{}/failures{lang_query}\">{}</a>",
                path_segment(&line.unit),
                pick(lang, "Hồ sơ lỗi", "Failures")
            );
        }
        let state = if line.complete {
            pick(lang, "Đầy đủ", "Complete")
        } else {
            pick(lang, "Cần xử lý", "Needs attention")
        };
        let completeness = match line.completeness {
            Some(share) => percent(share, lang),
            // Without the source's count, what the ledger received stands in for it.
            None if line.ledger.received > 0 => format!(
                "{} <small>({})</small>",
                percent(
                    line.ledger.accepted as f64 / line.ledger.received as f64,
                    lang
                ),
                pick(lang, "theo sổ cái", "by the ledger")
            ),
            None => "–".to_owned(),
        };
        let _ = write!(
            out,
            "</td><td class=\"s\">{state}</td><td class=\"n\">{completeness}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n content\">{}<br><small>{} {}</small></td><td>",
            group_thousands(line.ledger.accepted, lang),
            group_thousands(line.ledger.pending, lang),
            group_thousands(line.ledger.held, lang),
            group_thousands(line.ledger.refused, lang),
            group_thousands(line.content_differs, lang),
            pick(lang, "đã đối chiếu", "checked"),
            group_thousands(line.content_checked, lang),
        );
        if !line.reasons.is_empty() {
            out.push_str("<ul>");
            for reason in &line.reasons {
                let _ = write!(
                    out,
                    "<li>{}: {}</li>",
                    escape(&reason_label(&reason.code, lang)),
                    group_thousands(reason.count, lang)
                );
            }
            out.push_str("</ul>");
        }
        let oldest = line
            .oldest_unsent_at
            .map_or_else(|| "–".to_owned(), |at| ago(now, at, lang));
        let _ = write!(
            out,
            "</td><td class=\"n\">{}</td><td class=\"ind\">",
            escape(&oldest)
        );
        if let Some(preview) = &line.indicators {
            // Numbers only, two to a line; the legend under the table names them.
            let rates = preview.current.rates();
            let shown: Vec<String> = rates
                .iter()
                .skip(1)
                .filter_map(|(indicator, rate)| {
                    rate.map(|rate| {
                        format!(
                            "<span title=\"{}\">{}</span>&nbsp;{}",
                            escape(pick(lang, indicator.name_vi, indicator.name_en)),
                            escape(indicator.id),
                            percent(rate, lang)
                        )
                    })
                })
                .take(4)
                .collect();
            for (index, pair) in shown.chunks(2).enumerate() {
                if index > 0 {
                    out.push_str("<br>");
                }
                out.push_str(&pair.join(" · "));
            }
        }
        out.push_str("</td></tr>");
    }
    out.push_str("</tbody></table><p class=\"legend muted\">");
    out.push_str(pick(
        lang,
        "Dự báo chỉ số (QĐ 766):",
        "Indicator preview (Decision 766):",
    ));
    for indicator in &INDICATORS[1..] {
        let _ = write!(
            out,
            " <b>{}</b> {};",
            escape(indicator.id),
            escape(pick(lang, indicator.name_vi, indicator.name_en))
        );
    }
    out.push_str("</p>");
}

/// A unit's held-back and refused dossiers (findings with masked values only).
pub fn failures_page(unit: &str, failures: &[FailureRow], limit: usize, lang: Lang) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let title = format!(
        "{} {}",
        pick(
            lang,
            "Hồ sơ bị giữ lại hoặc bị từ chối:",
            "Held back or refused:"
        ),
        unit
    );
    head(&mut out, &title, None, lang);
    let back = match lang {
        Lang::Vi => "<a href=\"/\">← Tình trạng đồng bộ</a>".to_owned(),
        Lang::En => "<a href=\"/?lang=en\">← Sync health</a>".to_owned(),
    };
    let _ = write!(out, "<p>{back}</p><h1>{}</h1>", escape(&title));
    if failures.len() >= limit {
        let _ = write!(
            out,
            "<p class=\"muted\">{} {}</p>",
            pick(lang, "Chỉ hiển thị", "Showing only the first"),
            group_thousands(limit as i64, lang)
        );
    }
    let sheet = failures_sheet(failures, lang);
    out.push_str("<table id=\"failures\"><thead><tr>");
    for column in &sheet.columns {
        let _ = write!(out, "<th>{}</th>", escape(column));
    }
    out.push_str("</tr></thead><tbody>");
    for row in &sheet.rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(&raw_text(cell)));
        }
        out.push_str("</tr>");
    }
    if sheet.rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"{}\">{}</td></tr>",
            sheet.columns.len().max(1),
            pick(lang, "Không có hồ sơ nào.", "No dossiers.")
        );
    }
    out.push_str("</tbody></table></body></html>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("<a href=\"x\">Tô & 'Lê'</a>"),
            "&lt;a href=&quot;x&quot;&gt;Tô &amp; &#39;Lê&#39;&lt;/a&gt;"
        );
        assert_eq!(path_segment("000.00.31.H60"), "000.00.31.H60");
        assert_eq!(path_segment("agency:a b/c"), "agency:a%20b%2Fc");
    }

    #[test]
    fn lag_in_words() {
        assert_eq!(ago(1_000_000, 0, Lang::Vi), "chưa có");
        assert_eq!(ago(1_000_000, 1_000_000 - 5_000, Lang::Vi), "5 giây trước");
        assert_eq!(ago(1_000_000, 1_000_000 - 600_000, Lang::En), "10 min ago");
    }
}
