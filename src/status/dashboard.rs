//! The dashboard's HTML, rendered on the server: Vietnamese by default, English with `?lang=en`, no
//! script and nothing fetched from elsewhere; it reloads itself (`<meta http-equiv="refresh">`). Every
//! value is HTML-escaped.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use super::data::{DASHBOARD_PERIODS, DashboardView};
use crate::actors::{Actor, triage_of};
use crate::reconcile::UnitLine;
use crate::report::render::{
    CONTENT_DIFFERS_EN, CONTENT_DIFFERS_VI, Lang, STAMPED_AHEAD_EN, STAMPED_AHEAD_VI, actor_label,
    failures_sheet, group_thousands, next_step, percent, raw_text, reason_label, vietnam_time,
    workbook_file_name,
};
use crate::store::FailureRow;

/// The window the throughput tile averages over.
pub const THROUGHPUT_WINDOW: Duration = Duration::from_secs(300);

/// Dossiers the portal accepted per minute, measured by the server: samples of the accepted counter
/// taken on the server's own clock (every few seconds), averaged over the last [`THROUGHPUT_WINDOW`].
#[derive(Debug, Default)]
pub struct Throughput {
    samples: VecDeque<(Instant, u64)>,
}

impl Throughput {
    /// Records the accepted counter at `at`, and forgets samples older than the window.
    pub fn sample(&mut self, at: Instant, accepted: u64) {
        self.samples.push_back((at, accepted));
        while self.samples.len() > 2
            && self
                .samples
                .get(1)
                .is_some_and(|(second, _)| at.duration_since(*second) >= THROUGHPUT_WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// The rate over the samples held; none before two samples a second apart.
    pub fn per_minute(&self) -> Option<f64> {
        let (first_at, first) = self.samples.front()?;
        let (last_at, last) = self.samples.back()?;
        let seconds = last_at.duration_since(*first_at).as_secs_f64();
        (seconds >= 1.0).then(|| last.saturating_sub(*first) as f64 * 60.0 / seconds)
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
th,td{border:1px solid #d5dbe3;padding:2px 5px;text-align:left;vertical-align:top}
th{background:#e8edf3;position:sticky;top:0;font-size:12px}
#failures td{overflow-wrap:break-word}#failures td.code,td.key b{white-space:nowrap}
.bar{margin:2px 0}.bar a,.bar b{margin:0 2px}td.why{font-size:12px;line-height:1.25}td.why small{color:#445}td.why li{margin:0}td{line-height:1.25}
details{margin:6px 0}.compact span{display:inline-block;margin:1px 6px 1px 0;font-size:12px}
td.ind{white-space:nowrap;font-size:11px}
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

/// The operator's words for a readiness problem (`/readyz` keeps the English).
fn readiness_words(reason: &str, lang: Lang) -> String {
    if lang == Lang::En {
        return reason.to_owned();
    }
    let words = if reason.contains("stopping") {
        "tthc-sync đang dừng"
    } else if reason.contains("ledger") {
        "Sổ cái (cơ sở dữ liệu) không phản hồi"
    } else if reason.contains("no successful poll") {
        "Chưa lấy được dữ liệu từ hệ thống một cửa lần nào"
    } else if reason.contains("poll") {
        "Đã lâu chưa lấy được dữ liệu từ hệ thống một cửa"
    } else if reason.contains("answered no batch") {
        "Có hồ sơ chờ gửi nhưng Cổng DVCQG chưa nhận lô nào"
    } else if reason.contains("batch") {
        "Có hồ sơ chờ gửi nhưng Cổng DVCQG đã lâu không nhận lô nào"
    } else {
        "Chưa sẵn sàng (chi tiết tại /readyz)"
    };
    words.to_owned()
}

/// `?days=…&actor=…&lang=en`, as the dashboard's own links carry them.
fn dashboard_query(days: u32, actor: Option<Actor>, lang: Lang) -> String {
    let mut query = format!("?days={days}");
    if let Some(actor) = actor {
        let _ = write!(query, "&amp;actor={}", actor.as_str());
    }
    if lang == Lang::En {
        query.push_str("&amp;lang=en");
    }
    query
}

/// A line's problems for one actor (all actors when `None`).
fn concerns(line: &UnitLine, actor: Option<Actor>) -> bool {
    actor.is_none_or(|actor| {
        line.reasons
            .iter()
            .any(|reason| triage_of(&reason.code).actor == actor)
    })
}

/// The dashboard page: the period first (one for the tiles and the table, 7, 30 or 90 days), then the
/// tiles, then every unit needing attention, worst completeness first; the complete units after them,
/// compactly.
pub fn page(
    view: &DashboardView,
    throughput: Option<f64>,
    refresh: u64,
    actor: Option<Actor>,
    lang: Lang,
) -> String {
    let mut out = String::with_capacity(32 * 1024);
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
        Lang::Vi => format!(
            "<a href=\"/{}&amp;lang=en\" lang=\"en\">EN</a>",
            dashboard_query(view.days, actor, Lang::Vi)
        ),
        Lang::En => format!(
            "<a href=\"/{}\" lang=\"vi\">Tiếng Việt</a>",
            dashboard_query(view.days, actor, Lang::Vi)
        ),
    };
    let _ = write!(
        out,
        "<header><h1>{}</h1><div><span id=\"overall\" class=\"state {state_class}\">{}</span> {other_lang}</div></header>",
        pick(lang, "Tình trạng đồng bộ", "Sync health"),
        escape(state_text)
    );
    // The period, stated once at the top, and the choices.
    let day = |text: &str| {
        text.parse::<jiff::civil::Date>()
            .map(|day| day.strftime("%d/%m/%Y").to_string())
            .unwrap_or_else(|_| text.to_owned())
    };
    let _ = write!(
        out,
        "<p id=\"period\" class=\"bar\"><b>{} {} {}</b> ({} {} – {}) · {}",
        pick(lang, "Khoảng thời gian:", "Period:"),
        view.days,
        pick(lang, "ngày", "days"),
        pick(lang, "ngày tiếp nhận", "reception days"),
        escape(&day(&view.from)),
        escape(&day(&view.to)),
        pick(lang, "Xem:", "Show:")
    );
    for days in DASHBOARD_PERIODS {
        if days == view.days {
            let _ = write!(out, " <b>{days} {}</b>", pick(lang, "ngày", "days"));
        } else {
            let _ = write!(
                out,
                " <a href=\"/{}\">{days} {}</a>",
                dashboard_query(days, actor, lang),
                pick(lang, "ngày", "days")
            );
        }
    }
    let reconciled = view.reconciled_at.map_or_else(
        || {
            pick(
                lang,
                "chưa có cho khoảng này (tỷ lệ theo sổ cái)",
                "none for this period (rates by the ledger)",
            )
            .to_owned()
        },
        vietnam_time,
    );
    let _ = write!(
        out,
        " · {} {}</p>",
        pick(lang, "Lần đối soát gần nhất:", "Last reconciliation:"),
        escape(&reconciled)
    );
    // Who must act: a filter.
    let _ = write!(
        out,
        "<p id=\"actors\" class=\"bar\">{}",
        pick(lang, "Người xử lý:", "Who acts:")
    );
    let all_link = dashboard_query(view.days, None, lang);
    if actor.is_none() {
        let _ = write!(out, " <b>{}</b>", pick(lang, "Tất cả", "All"));
    } else {
        let _ = write!(
            out,
            " <a href=\"/{all_link}\">{}</a>",
            pick(lang, "Tất cả", "All")
        );
    }
    for candidate in [Actor::Unit, Actor::Administrator, Actor::Portal] {
        let label = escape(&actor_label(candidate, lang));
        if actor == Some(candidate) {
            let _ = write!(out, " · <b>{label}</b>");
        } else {
            let _ = write!(
                out,
                " · <a href=\"/{}\">{label}</a>",
                dashboard_query(view.days, Some(candidate), lang)
            );
        }
    }
    out.push_str("</p>");
    if let Err(reasons) = &view.ready {
        let words: Vec<String> = reasons
            .iter()
            .map(|reason| readiness_words(reason, lang))
            .collect();
        let _ = write!(
            out,
            "<p id=\"not-ready\"><b>{}</b> {}</p>",
            pick(lang, "Chưa sẵn sàng:", "Not ready:"),
            escape(&words.join("; "))
        );
    }
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
    let period = match lang {
        Lang::Vi => format!("({} ngày)", view.days),
        Lang::En => format!("({} days)", view.days),
    };
    let cards = [
        (
            pick(lang, "Độ trễ (lấy dữ liệu)", "Lag (last poll)").to_owned(),
            ago(view.now, view.last_poll_ok, lang),
        ),
        (
            pick(lang, "Độ trễ (gửi đi)", "Lag (last push)").to_owned(),
            ago(view.now, view.last_push_ok, lang),
        ),
        (
            pick(
                lang,
                "Tốc độ đồng bộ (5 phút gần nhất)",
                "Throughput (last 5 min)",
            )
            .to_owned(),
            rate,
        ),
        (
            format!(
                "{} {period}",
                pick(lang, "Cổng DVCQG đã nhận", "Accepted by the portal")
            ),
            group_thousands(view.totals.accepted, lang),
        ),
        (
            format!(
                "{} {period}",
                pick(lang, "Chờ đồng bộ", "Waiting to be sent")
            ),
            group_thousands(view.totals.pending, lang),
        ),
        (
            format!("{} {period}", pick(lang, "Bị giữ lại", "Held back")),
            group_thousands(view.totals.held, lang),
        ),
        (
            format!(
                "{} {period}",
                pick(lang, "Bị Cổng DVCQG từ chối", "Refused by the portal")
            ),
            group_thousands(view.totals.refused, lang),
        ),
        (
            format!(
                "{} {period}",
                pick(lang, "Hồ sơ chờ lâu nhất", "Oldest unsent dossier")
            ),
            view.oldest_unsent_at
                .map_or_else(|| "–".to_owned(), |at| ago(view.now, at, lang)),
        ),
    ];
    out.push_str("<div class=\"cards\">");
    for (label, value) in cards {
        let _ = write!(
            out,
            "<div class=\"card\"><span>{}</span><b>{}</b></div>",
            escape(&label),
            escape(&value)
        );
    }
    out.push_str("</div>");
    let (problems, complete): (Vec<&UnitLine>, Vec<&UnitLine>) =
        view.lines.iter().partition(|line| !line.complete);
    let problems: Vec<&UnitLine> = problems
        .into_iter()
        .filter(|line| concerns(line, actor))
        .collect();
    let _ = write!(
        out,
        "<h2>{}</h2> <span class=\"muted\">· {} {} · {} {}</span>",
        pick(lang, "Đơn vị cần xử lý", "Units needing attention"),
        group_thousands(problems.len() as i64, lang),
        pick(
            lang,
            "đơn vị, tỷ lệ đồng bộ thấp nhất trước",
            "units, worst completeness first"
        ),
        group_thousands(complete.len() as i64, lang),
        pick(lang, "đơn vị đã đầy đủ", "units complete")
    );
    unit_table(&mut out, &problems, view, actor, lang);
    if !complete.is_empty() && actor.is_none() {
        let _ = write!(
            out,
            "<details id=\"complete-units\"><summary>{} ({})</summary><p class=\"compact\">",
            pick(lang, "Đơn vị đã đồng bộ đầy đủ", "Units complete"),
            group_thousands(complete.len() as i64, lang)
        );
        for line in &complete {
            let share = line
                .completeness
                .map_or_else(String::new, |share| format!(" {}", percent(share, lang)));
            let _ = write!(
                out,
                "<span class=\"unit fine\" data-unit=\"{}\">{}{}</span> ",
                escape(&line.unit),
                escape(&line.unit),
                escape(&share)
            );
        }
        out.push_str("</p></details>");
    }
    // Source-api.md quirk 10: synced like any other, but the unit's clock or typing needs a look.
    let ahead: Vec<String> = view
        .lines
        .iter()
        .filter(|line| line.stamped_ahead > 0)
        .map(|line| {
            format!(
                "{} ({})",
                escape(&line.unit),
                group_thousands(line.stamped_ahead, lang)
            )
        })
        .collect();
    if !ahead.is_empty() {
        let _ = write!(
            out,
            "<p id=\"stamped-ahead\" class=\"compact\">{}: {}</p>",
            pick(lang, STAMPED_AHEAD_VI, STAMPED_AHEAD_EN),
            ahead.join(", ")
        );
    }
    let _ = write!(
        out,
        "<p class=\"muted\">{} {} · tthc-sync {}</p></body></html>",
        pick(lang, "Cập nhật lúc", "Updated at"),
        escape(&vietnam_time(view.now)),
        env!("CARGO_PKG_VERSION")
    );
    out
}

fn unit_table(
    out: &mut String,
    lines: &[&UnitLine],
    view: &DashboardView,
    actor: Option<Actor>,
    lang: Lang,
) {
    let columns = [
        ("Đơn vị", "Unit"),
        ("Tỷ lệ đồng bộ", "Sync completeness"),
        ("Cổng DVCQG đã nhận", "Accepted by the portal"),
        ("Chờ đồng bộ", "Waiting to be sent"),
        ("Bị giữ lại", "Held back"),
        ("Bị Cổng DVCQG từ chối", "Refused by the portal"),
        (CONTENT_DIFFERS_VI, CONTENT_DIFFERS_EN),
        (
            "Lý do · người xử lý · việc cần làm",
            "Reasons · who acts · next step",
        ),
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
                "Không có đơn vị nào cần xử lý trong khoảng này.",
                "No unit needs attention in this period."
            )
        );
    }
    let lang_query = if lang == Lang::En { "?lang=en" } else { "" };
    for line in lines {
        let _ = write!(
            out,
            "<tr class=\"unit problem\" data-unit=\"{}\"><td class=\"key\"><b>{}</b>",
            escape(&line.unit),
            escape(&line.unit),
        );
        if line.source_agencies.len() > 1 || !line.unit.starts_with("agency:") {
            let _ = write!(
                out,
                "<br><small>{}</small>",
                escape(&line.source_agencies.join(", "))
            );
        }
        if line.ledger.held + line.ledger.refused > 0 {
            let _ = write!(
                out,
                "<br><a href=\"/units/{unit}/failures{lang_query}\">{}</a> · <a href=\"/units/{unit}/corrections.xlsx\" download=\"{}\" title=\"{}\">xlsx</a>",
                pick(lang, "Hồ sơ lỗi", "Failures"),
                escape(&workbook_file_name(&line.unit)),
                pick(
                    lang,
                    "Danh sách cần sửa của đơn vị",
                    "The unit's correction list"
                ),
                unit = path_segment(&line.unit),
            );
        }
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
        let accepted = match line.source_count {
            Some(count) => format!(
                "{}<small>/{}</small>",
                group_thousands(line.ledger.accepted, lang),
                group_thousands(count, lang)
            ),
            None => group_thousands(line.ledger.accepted, lang),
        };
        let _ = write!(
            out,
            "</td><td class=\"n\"><b>{completeness}</b></td><td class=\"n\">{accepted}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n content\">{}<br><small>{} {}</small></td><td class=\"why\">",
            group_thousands(line.ledger.pending, lang),
            group_thousands(line.ledger.held, lang),
            group_thousands(line.ledger.refused, lang),
            group_thousands(line.content_differs, lang),
            pick(lang, "đã đối chiếu", "checked"),
            group_thousands(line.content_checked, lang),
        );
        let reasons: Vec<_> = line
            .reasons
            .iter()
            .filter(|reason| actor.is_none_or(|actor| triage_of(&reason.code).actor == actor))
            .collect();
        if !reasons.is_empty() {
            out.push_str("<ul>");
            for reason in reasons.iter().take(REASONS_SHOWN) {
                let triage = triage_of(&reason.code);
                let _ = write!(
                    out,
                    "<li>{}: <b>{}</b> <small>→ {}: {}</small></li>",
                    escape(&reason_label(&reason.code, lang)),
                    group_thousands(reason.count, lang),
                    escape(&actor_label(triage.actor, lang)),
                    escape(&next_step(&reason.code, lang))
                );
            }
            if reasons.len() > REASONS_SHOWN {
                let rest: i64 = reasons
                    .iter()
                    .skip(REASONS_SHOWN)
                    .map(|reason| reason.count)
                    .sum();
                let _ = write!(
                    out,
                    "<li><small>{} {} {}</small></li>",
                    pick(lang, "và", "and"),
                    group_thousands(rest, lang),
                    pick(lang, "hồ sơ khác", "more")
                );
            }
            out.push_str("</ul>");
        }
        if line.missing > 0 {
            let _ = write!(
                out,
                "<small>{}: {}</small>",
                pick(lang, "Chưa có trên Cổng DVCQG", "Missing on the portal"),
                group_thousands(line.missing, lang)
            );
        }
        let oldest = line
            .oldest_unsent_at
            .map_or_else(|| "–".to_owned(), |at| ago(view.now, at, lang));
        let _ = write!(
            out,
            "</td><td class=\"n\">{}</td><td class=\"ind\">",
            escape(&oldest)
        );
        if let Some(preview) = &line.indicators {
            // Each rate with its name: the preview is read without a legend.
            let rates = preview.current.rates();
            let shown: Vec<String> = rates
                .iter()
                .skip(1)
                .filter_map(|(indicator, rate)| {
                    rate.map(|rate| {
                        format!(
                            "{} <b>{}</b>",
                            escape(short_indicator_name(
                                indicator.id,
                                pick(lang, indicator.name_vi, indicator.name_en)
                            )),
                            percent(rate, lang)
                        )
                    })
                })
                .take(4)
                .collect();
            out.push_str(&shown.join("<br>"));
        }
        out.push_str("</td></tr>");
    }
    out.push_str("</tbody></table>");
}

/// Reasons shown in a unit's row (the rest are counted; the failures page lists them all): rows stay
/// short enough for every failing unit to be seen on a screen or two.
const REASONS_SHOWN: usize = 2;

/// An indicator's name without the "Tỷ lệ"/"rate" every one of them carries, for a narrow cell.
fn short_indicator_name<'a>(_id: &str, name: &'a str) -> &'a str {
    let name = name.strip_prefix("Tỷ lệ ").unwrap_or(name);
    name.strip_suffix(" rate").unwrap_or(name)
}

/// A unit's held-back and refused dossiers (findings with masked values only), with who must act and
/// the next step; the Vietnamese page holds no English detail.
pub fn failures_page(
    unit: &str,
    failures: &[FailureRow],
    owners: &HashMap<String, String>,
    limit: usize,
    lang: Lang,
) -> String {
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
    let _ = write!(
        out,
        "<p>{back} · <a href=\"/units/{}/corrections.xlsx\">{}</a></p><h1>{}</h1>",
        path_segment(unit),
        pick(
            lang,
            "Tải danh sách cần sửa của đơn vị (xlsx)",
            "Download the unit's correction list (xlsx)"
        ),
        escape(&title)
    );
    if failures.len() >= limit {
        let _ = write!(
            out,
            "<p class=\"muted\">{} {}</p>",
            pick(lang, "Chỉ hiển thị", "Showing only the first"),
            group_thousands(limit as i64, lang)
        );
    }
    let sheet = failures_sheet(failures, owners, lang);
    out.push_str("<table id=\"failures\"><thead><tr>");
    for column in &sheet.columns {
        let _ = write!(out, "<th>{}</th>", escape(column));
    }
    out.push_str("</tr></thead><tbody>");
    for row in &sheet.rows {
        out.push_str("<tr>");
        for (index, cell) in row.iter().enumerate() {
            // Codes (dossier, unit, agency, day, reason) never break inside a word.
            let class = if matches!(index, 0..=3 | 5) {
                " class=\"code\""
            } else {
                ""
            };
            let _ = write!(out, "<td{class}>{}</td>", escape(&raw_text(cell)));
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

    use crate::reconcile::{LedgerSide, ReasonCount, sort_worst_first};
    use crate::status::data::PeriodTotals;

    fn line(unit: &str, source: i64, accepted: i64, held: i64, reason: &str) -> UnitLine {
        let mut line = UnitLine {
            unit: unit.into(),
            source_agencies: vec!["ag-1".into()],
            source_count: Some(source),
            ledger: LedgerSide {
                received: accepted + held,
                accepted,
                held,
                ..LedgerSide::default()
            },
            reasons: (held > 0)
                .then(|| ReasonCount {
                    state: "held",
                    code: reason.into(),
                    count: held,
                })
                .into_iter()
                .collect(),
            oldest_unsent_at: (held > 0).then_some(1_000),
            ..UnitLine::default()
        };
        line.settle();
        line
    }

    fn view() -> DashboardView {
        let mut lines = vec![
            line("000.00.01.H60", 1000, 900, 100, "missing_field"),
            line("000.00.02.H60", 10, 10, 0, ""),
            line("agency:ag-029", 14, 0, 14, "unmapped_unit"),
            line("000.00.03.H60", 100, 95, 5, "invalid_fee"),
        ];
        sort_worst_first(&mut lines);
        DashboardView {
            days: 7,
            from: "2026-11-23".into(),
            to: "2026-11-29".into(),
            lines,
            totals: PeriodTotals::default(),
            last_poll_ok: 1_000,
            last_push_ok: 1_000,
            oldest_unsent_at: Some(1_000),
            reconciled_at: None,
            ready: Err(vec!["no successful poll of the source yet".into()]),
            now: 60_000,
        }
    }

    #[test]
    fn the_page_puts_the_worst_unit_first_and_shows_every_failing_one() {
        let html = page(&view(), None, 30, None, Lang::Vi);
        let order: Vec<&str> = html
            .split("<tr class=\"unit problem\" data-unit=\"")
            .skip(1)
            .map(|rest| &rest[..rest.find('"').unwrap()])
            .collect();
        assert_eq!(order, ["agency:ag-029", "000.00.01.H60", "000.00.03.H60"]);
        assert!(
            html.contains("data-unit=\"000.00.02.H60\""),
            "complete units are listed too"
        );
        assert!(html.contains("Khoảng thời gian: 7 ngày"));
        assert!(html.contains("/units/agency:ag-029/corrections.xlsx"));
        // Who acts and what to do, in Vietnamese.
        assert!(html.contains("Quản trị hệ thống của Sở: Bổ sung đơn vị vào bảng ánh xạ"));
        // Only the unit's problems with --actor unit.
        let html = page(&view(), None, 30, Some(Actor::Unit), Lang::Vi);
        assert!(!html.contains("<tr class=\"unit problem\" data-unit=\"agency:ag-029\""));
        assert!(html.contains("<tr class=\"unit problem\" data-unit=\"000.00.01.H60\""));
    }

    #[test]
    fn nothing_english_on_the_vietnamese_page() {
        let html = page(&view(), Some(12.0), 30, None, Lang::Vi);
        let text = visible_text(&html);
        for word in [
            "Held",
            "Refused",
            "Unit",
            "Sync",
            "dossiers",
            "Failures",
            "measuring",
            "ago",
            "Needs",
            "English",
            "Reasons",
            "poll",
            "ledger",
            "Period",
            "days",
            "min",
        ] {
            assert!(
                !text.contains(word),
                "{word:?} on the Vietnamese page: {text}"
            );
        }
        let sheet_page = failures_page("agency:ag-029", &[], &HashMap::new(), 10, Lang::Vi);
        assert!(!visible_text(&sheet_page).contains("Detail"));
        let english = page(&view(), Some(12.0), 30, None, Lang::En);
        assert!(english.contains("12 dossiers/min"));
    }

    /// The page's text without tags, the unit keys (codes, not words) and the product's name.
    fn visible_text(html: &str) -> String {
        let body = &html[html.find("<body>").unwrap()..];
        let mut text = String::new();
        let mut in_tag = false;
        for c in body.chars() {
            match c {
                '<' => in_tag = true,
                '>' => {
                    in_tag = false;
                    text.push(' ');
                }
                _ if !in_tag => text.push(c),
                _ => {}
            }
        }
        text.replace("tthc-sync", "")
            .split_whitespace()
            .filter(|word| !word.contains("agency:") && !word.contains(".H60"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn throughput_is_measured_on_the_server_s_clock() {
        let start = Instant::now();
        let mut throughput = Throughput::default();
        assert_eq!(throughput.per_minute(), None);
        throughput.sample(start, 100);
        assert_eq!(throughput.per_minute(), None);
        throughput.sample(start + Duration::from_secs(30), 130);
        assert_eq!(throughput.per_minute(), Some(60.0));
        // Old samples leave the window: the rate is that of the last five minutes.
        for minute in 1..=10u64 {
            throughput.sample(
                start + Duration::from_secs(30 + minute * 60),
                130 + minute * 10,
            );
        }
        assert_eq!(throughput.per_minute(), Some(10.0));
    }

    #[test]
    fn lag_in_words() {
        assert_eq!(ago(1_000_000, 0, Lang::Vi), "chưa có");
        assert_eq!(ago(1_000_000, 1_000_000 - 5_000, Lang::Vi), "5 giây trước");
        assert_eq!(ago(1_000_000, 1_000_000 - 600_000, Lang::En), "10 min ago");
    }
}
