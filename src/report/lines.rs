//! A period's per-unit lines as every report shows them: the `report` command, the dashboard and
//! `/api/v1/report`. One assembly: the ledger's buckets, the other sides' counts (asked live, or those a
//! reconciliation of the same period stored), the content check of each unit's latest reconciliation,
//! the indicator preview, worst first. [`crate::reconcile::lines`] holds the rules of one line.

use crate::decide::DossierState;
use crate::indicators::{UnitTallies, preview};
use crate::reconcile::{Counts, UnitLine, lines, sort_worst_first};
use crate::store::{PAYLOADS_PER_PAGE, PayloadRow, ReconciliationRecord, Store, StoreError};
use crate::unit_key::UnitKey;

/// Where the source's and the portal's counts of a report come from.
pub enum OtherSides {
    /// Asked now (the `report` command, unless `--offline`).
    Live(Counts),
    /// Those the latest reconciliation of the same period stored (the dashboard, `/api/v1`, `--offline`
    /// reports read no peer).
    Stored,
}

/// The lines of reception days `from` to `to` (`YYYY-MM-DD`), for one unit or all, worst first.
pub async fn unit_lines(
    store: &dyn Store,
    from: &str,
    to: &str,
    unit: Option<&UnitKey>,
    sides: OtherSides,
) -> Result<Vec<UnitLine>, StoreError> {
    // Every unit's buckets: which key a source agency's dossiers go to depends on all of them.
    let buckets = store.ledger_buckets(from, to, None).await?;
    let (counts, stored) = match sides {
        OtherSides::Live(counts) => (counts, false),
        OtherSides::Stored => (Counts::default(), true),
    };
    let mut lines = lines(&buckets, &counts);
    drop(buckets);
    if let Some(unit) = unit {
        let key = unit.to_string();
        lines.retain(|line| line.unit == key);
    }
    let records = store.latest_reconciliation().await?;
    if stored {
        for line in &mut lines {
            if let Some(record) = records.iter().find(|record| {
                record.unit == line.unit && record.from_day == from && record.to_day == to
            }) {
                apply_reconciliation(line, record);
            }
        }
    }
    apply_content_check(&mut lines, &records);
    sort_worst_first(&mut lines);
    let payload_unit = match unit {
        Some(UnitKey::Unit(code)) => Some(code.as_str()),
        _ => None,
    };
    attach_indicators(store, &mut lines, from, to, payload_unit).await?;
    Ok(lines)
}

/// The other sides' counts a reconciliation of the same period found, applied to a ledger-only line with
/// the rules of [`crate::reconcile::lines`].
fn apply_reconciliation(line: &mut UnitLine, record: &ReconciliationRecord) {
    line.source_count = record.source_count;
    line.portal_count = record.portal_count;
    line.missing = record.missing;
    line.settle();
}

/// Adds the indicator preview to each line, from the payloads of the period: what the portal accepted,
/// and beside it every sendable payload (what the unit would have if nothing had failed to sync). The
/// payloads are read a page at a time and folded into per-unit tallies, so that memory holds one page
/// and the counters, however many dossiers the period has.
async fn attach_indicators(
    store: &dyn Store,
    lines: &mut [UnitLine],
    from: &str,
    to: &str,
    unit: Option<&str>,
) -> Result<(), StoreError> {
    let mut tallies = UnitTallies::default();
    let mut after = None;
    loop {
        let page = store
            .payloads_page(from, to, unit, after.as_ref(), PAYLOADS_PER_PAGE)
            .await?;
        for row in &page {
            tallies.add_payload(
                row.unit.as_deref(),
                row.state == DossierState::Accepted,
                &row.payload,
            );
        }
        if page.len() < PAYLOADS_PER_PAGE {
            break;
        }
        after = page.last().map(PayloadRow::key);
    }
    for line in lines {
        let (accepted, all) = tallies.take(&line.unit);
        let at_source = line
            .source_count
            .or(Some(line.ledger.received))
            .map(|count| count.max(0) as u64);
        line.indicators = Some(preview(&accepted, &all, at_source));
    }
    Ok(())
}

/// The content check's counts of each unit's latest reconciliation, put on the lines of a report or the
/// dashboard. The check is about recent acceptances rather than the period's reception days, so the
/// latest run counts whatever period it covered.
fn apply_content_check(lines: &mut [UnitLine], records: &[ReconciliationRecord]) {
    for line in lines {
        let Some(record) = records.iter().find(|record| record.unit == line.unit) else {
            continue;
        };
        let Ok(summary) = serde_json::from_str::<serde_json::Value>(&record.summary) else {
            continue;
        };
        line.content_checked = summary["content_checked"].as_i64().unwrap_or(0);
        line.content_differs = summary["content_differs"].as_i64().unwrap_or(0);
        line.content_differs_days = summary["content_differs_days"]
            .as_object()
            .map(|days| {
                days.iter()
                    .filter_map(|(day, count)| Some((day.clone(), count.as_i64()?)))
                    .collect()
            })
            .unwrap_or_default();
    }
}
