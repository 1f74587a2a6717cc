//! What the status server reads from the daemon and its ledger: readiness, the metrics' gauges, and the
//! per-unit lines of the dashboard and of `/api/v1/report` (the report command's own functions).

use std::sync::atomic::Ordering;

use jiff::Timestamp;
use jiff::civil::Date;
use tokio_util::sync::CancellationToken;

use super::STORE_TIMEOUT;
use crate::app::{App, vietnam_today};
use crate::metrics::{Snapshot, UnitSnapshot};
use crate::reconcile::select::ALL_DAYS;
use crate::reconcile::{UnitLine, completeness};
use crate::report::{self, lines::OtherSides};
use crate::store::ReconciliationRecord;
use crate::sync::ingest::FEED_CURSOR;
use crate::unit_key::UnitKey;

/// 200 from `/readyz`, or the reasons for a 503.
pub async fn readiness(app: &App, shutdown: &CancellationToken) -> Result<(), Vec<String>> {
    let mut reasons = Vec::new();
    if shutdown.is_cancelled() {
        reasons.push("the daemon is stopping".to_owned());
    }
    // The cheapest question the ledger answers: one row by primary key.
    match tokio::time::timeout(STORE_TIMEOUT, app.store.cursor(FEED_CURSOR)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => reasons.push(format!("the ledger does not answer: {error}")),
        Err(_) => reasons.push(format!(
            "the ledger did not answer within {} s",
            STORE_TIMEOUT.as_secs()
        )),
    }
    let now = Timestamp::now().as_millisecond();
    let settings = &app.settings.status;
    let last_poll = app.health.last_poll_ok.load(Ordering::Relaxed);
    let max_poll = settings.ready_max_poll_age_seconds as i64 * 1000;
    if app.health.polled_elsewhere.load(Ordering::Relaxed) {
        // Another instance sharing the ledger polls the source; its own /readyz answers for that.
    } else if last_poll == 0 {
        reasons.push("no successful poll of the source yet".to_owned());
    } else if now - last_poll > max_poll {
        reasons.push(format!(
            "the last successful poll of the source was {} s ago (more than {} s)",
            (now - last_poll) / 1000,
            settings.ready_max_poll_age_seconds
        ));
    }
    reasons.extend(app.health.conditions());
    for gate in login_gates(app) {
        if let Some((refusals, left)) = gate.refusal() {
            reasons.push(format!(
                "{} từ chối thông tin đăng nhập ({refusals} lần liên tiếp); lần thử tiếp theo sau {} giây. Kiểm tra tài khoản hoặc mật khẩu ({} refused the credentials)",
                match gate.what {
                    "portal" => "Cổng DVCQG",
                    "portal.gateway" => "Cổng kết nối (gateway) phía Cổng DVCQG",
                    "source.gateway" => "Cổng kết nối (gateway) phía hệ thống nguồn",
                    _ => "Hệ thống nguồn",
                },
                left.as_secs(),
                gate.what,
            ));
        }
    }
    let last_push = app.health.last_push_ok.load(Ordering::Relaxed);
    let max_push = settings.ready_max_push_age_seconds as i64 * 1000;
    if last_push == 0 || now - last_push > max_push {
        // Nothing to send is as good as a fresh push.
        let waiting = match tokio::time::timeout(STORE_TIMEOUT, app.store.counts()).await {
            Ok(Ok(counts)) => counts.outstanding(),
            _ => 1,
        };
        if waiting > 0 {
            reasons.push(if last_push == 0 {
                format!("{waiting} dossier(s) or progress entries wait and the portal has answered no batch yet")
            } else {
                format!(
                    "{waiting} dossier(s) or progress entries wait and the portal last answered a batch {} s ago (more than {} s)",
                    (now - last_push) / 1000,
                    settings.ready_max_push_age_seconds
                )
            });
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

/// The gauges of `/metrics`, read now. A ledger that cannot be read leaves its gauges at 0 (and the
/// readiness gauge at 0 with it).
pub async fn snapshot(app: &App, shutdown: &CancellationToken) -> Snapshot {
    let now = Timestamp::now().as_millisecond();
    let ready = readiness(app, shutdown).await.is_ok();
    let counts = app.store.counts().await.unwrap_or_default();
    let oldest = oldest_unsent(app).await;
    let units = app
        .store
        .latest_reconciliation()
        .await
        .unwrap_or_default()
        .iter()
        .map(|record| UnitSnapshot {
            unit: record.unit.clone(),
            complete: record.complete,
            missing: record_gap(record),
            content_differs: crate::reconcile::content_differs_of(record),
            completeness: completeness(record.source_count, record.accepted, record.portal_count),
            reconciled_at: record.started_at as f64 / 1000.0,
        })
        .collect();
    let seconds = |millis: i64| millis as f64 / 1000.0;
    Snapshot {
        queue_depth: counts.outstanding(),
        oldest_unsent_seconds: oldest.map_or(0.0, |at| seconds((now - at).max(0))),
        last_poll_success: seconds(app.health.last_poll_ok.load(Ordering::Relaxed)),
        last_push_success: seconds(app.health.last_push_ok.load(Ordering::Relaxed)),
        ready,
        portal_concurrency: i64::try_from(app.portal.concurrency_limit()).unwrap_or(i64::MAX),
        portal_rate_learnt: app.portal.learnt_rate().unwrap_or(0.0),
        units,
        login_refusals: login_gates(app)
            .iter()
            .map(|gate| (gate.what, gate.refused_total()))
            .collect(),
    }
}

/// The login gates of both clients and their gateways.
pub fn login_gates(app: &App) -> Vec<&crate::http::LoginGate> {
    let mut gates = vec![&app.source.login, &app.portal.login];
    gates.extend(app.source.gateway_login());
    gates.extend(app.portal.gateway_login());
    gates
}

/// When the oldest dossier not yet on the portal arrived (Unix ms), over the whole ledger.
async fn oldest_unsent(app: &App) -> Option<i64> {
    app.store
        .ledger_buckets(ALL_DAYS.0, ALL_DAYS.1, None)
        .await
        .ok()?
        .iter()
        .filter_map(|bucket| bucket.oldest_unsent_at)
        .min()
}

/// Dossiers of a reconciled unit that should be on the portal and are not (as [`UnitLine::gap`]).
fn record_gap(record: &ReconciliationRecord) -> i64 {
    let expected = record.source_count.unwrap_or(record.ledger_count);
    (expected - record.accepted).max(0)
}

/// The longest period `/api/v1/report` answers, in reception days (both ends included): a year, leap
/// years too. A report reads every payload of its period, so an unbounded period would let one request
/// hold the ledger's reader for as long as the whole ledger takes to read.
pub const REPORT_MAX_DAYS: i64 = 366;

/// The period of a report: `from`/`to` as given (`YYYY-MM-DD`), by default the last 30 days, as the
/// `report` command does; at most [`REPORT_MAX_DAYS`] days.
pub fn period(from: Option<&str>, to: Option<&str>) -> Result<(String, String), String> {
    let parse = |text: &str, name: &str| {
        text.parse::<Date>()
            .map_err(|_| format!("{name} must be a date YYYY-MM-DD, got {text:?}"))
    };
    let to = match to {
        Some(text) => parse(text, "to")?,
        None => vietnam_today(),
    };
    let from = match from {
        Some(text) => parse(text, "from")?,
        None => to
            .checked_sub(jiff::Span::new().days(29))
            .map_err(|error| error.to_string())?,
    };
    if from > to {
        return Err(format!("from ({from}) is after to ({to})"));
    }
    let days = (to - from).get_days() as i64 + 1;
    if days > REPORT_MAX_DAYS {
        return Err(format!(
            "the period from {from} to {to} is {days} days; a report covers at most {REPORT_MAX_DAYS} days, ask for it in parts"
        ));
    }
    Ok((from.to_string(), to.to_string()))
}

/// The per-unit lines of a period, problems first, with the indicator preview: the ledger's counts, and
/// the source's and portal's from the latest reconciliation when it covered the same period.
pub async fn unit_lines(
    app: &App,
    from: &str,
    to: &str,
    unit: Option<&UnitKey>,
) -> anyhow::Result<Vec<UnitLine>> {
    Ok(report::lines::unit_lines(app.store.as_ref(), from, to, unit, OtherSides::Stored).await?)
}

/// The periods the dashboard offers, in days.
pub const DASHBOARD_PERIODS: [u32; 3] = [7, 30, 90];

/// The ledger's side of a period, summed over its units: the dashboard's tiles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeriodTotals {
    pub accepted: i64,
    pub pending: i64,
    pub held: i64,
    pub refused: i64,
}

/// Everything the dashboard shows.
pub struct DashboardView {
    /// The period of the tiles and the table: `days` reception days ending `to`.
    pub days: u32,
    pub from: String,
    pub to: String,
    pub lines: Vec<UnitLine>,
    pub totals: PeriodTotals,
    /// Unix ms of the last successful poll and push (0: none yet).
    pub last_poll_ok: i64,
    pub last_push_ok: i64,
    /// The oldest dossier of the period not on the portal (Unix ms).
    pub oldest_unsent_at: Option<i64>,
    /// When the latest reconciliation of this period ran (Unix ms), if any.
    pub reconciled_at: Option<i64>,
    pub ready: Result<(), Vec<String>>,
    pub now: i64,
}

/// The dashboard over the last `days` reception days (today included): one period for the tiles and the
/// table. The source's and portal's counts are those of the latest reconciliation of the same period.
pub async fn dashboard(
    app: &App,
    shutdown: &CancellationToken,
    days: u32,
) -> anyhow::Result<DashboardView> {
    let today = vietnam_today();
    let from = today.checked_sub(jiff::Span::new().days(i64::from(days.max(1)) - 1))?;
    let (from, to) = (from.to_string(), today.to_string());
    let records = app.store.latest_reconciliation().await?;
    let reconciled_at = records
        .iter()
        .filter(|record| record.from_day == from && record.to_day == to)
        .map(|record| record.started_at)
        .max();
    // The readiness line counts the whole ledger; it runs beside the period's lines, on another of the
    // ledger's read connections, rather than after them.
    let (lines, ready) = tokio::join!(unit_lines(app, &from, &to, None), readiness(app, shutdown));
    let lines = lines?;
    let mut totals = PeriodTotals::default();
    for line in &lines {
        totals.accepted += line.ledger.accepted;
        totals.pending += line.ledger.pending;
        totals.held += line.ledger.held;
        totals.refused += line.ledger.refused;
    }
    let oldest_unsent_at = lines.iter().filter_map(|line| line.oldest_unsent_at).min();
    Ok(DashboardView {
        days,
        reconciled_at,
        from,
        to,
        lines,
        totals,
        last_poll_ok: app.health.last_poll_ok.load(Ordering::Relaxed),
        last_push_ok: app.health.last_push_ok.load(Ordering::Relaxed),
        oldest_unsent_at,
        ready,
        now: Timestamp::now().as_millisecond(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_period_is_at_most_366_days_both_ends_included() {
        // A leap year is 366 days, and so is a common year with the next day.
        assert!(period(Some("2024-01-01"), Some("2024-12-31")).is_ok());
        assert!(period(Some("2023-01-01"), Some("2024-01-01")).is_ok());
        let refused = period(Some("2023-01-01"), Some("2024-01-02")).unwrap_err();
        assert!(refused.contains("367 days"), "{refused}");
        assert!(refused.contains("at most 366 days"), "{refused}");
        assert!(period(Some("2024-01-02"), Some("2024-01-01")).is_err());
    }
}
