//! Reconciliation per unit: the source's counts, the ledger's, and the portal's, by reception day; where
//! they disagree, the dossiers themselves (identifier sets), and those the source has that tthc-sync
//! never saw fetched and queued.
//!
//! [`lines`] is pure: ledger buckets and the other sides' counts in, one [`UnitLine`] per unit out.
//! [`Reconciler::run`] does the I/O around it and keeps the run (store, JSON Lines log).

pub mod content;
pub mod fetch;
pub mod log;

pub mod select;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use jiff::Timestamp;
use jiff::civil::Date;
use serde::Serialize;

use crate::decide::DossierState;
use crate::indicators::UnitPreview;
use crate::portal::client::PortalClient;
use crate::source::client::SourceClient;
use crate::store::{
    ContentCandidate, LedgerBucket, Millis, ReconciliationRecord, Store, StoreError,
};
use crate::sync::catalog::PortalCatalog;
use crate::sync::ingest::IngestSink;
use crate::unit_key::{UnitKey, owner_of};

/// The key a unit is reported under, as text ([`UnitKey::of`]).
pub fn unit_key(unit: Option<&str>, agency: Option<&str>) -> String {
    UnitKey::of(unit, agency).to_string()
}

/// Sync completeness (1.4), the one place it is computed: what is on the portal ÷ the source's count.
/// "On the portal" is what the portal accepted by the ledger, but never more than the portal's own
/// count when it offers one (a unit the portal holds none of is at 0%). Capped at 100%: a source count
/// read before the latest dossiers arrived does not make a unit more than complete. `None` without a
/// source count (or with a count of 0).
pub fn completeness(
    source_count: Option<i64>,
    accepted: i64,
    portal_count: Option<i64>,
) -> Option<f64> {
    let at_source = source_count.filter(|count| *count > 0)?;
    let on_portal = portal_count
        .map_or(accepted, |portal| accepted.min(portal))
        .max(0);
    Some((on_portal as f64 / at_source as f64).min(1.0))
}

/// How many dossiers of a unit are in one state for one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReasonCount {
    /// `held` or `refused`.
    pub state: &'static str,
    pub code: String,
    pub count: i64,
}

/// What the ledger holds for one unit over the period.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LedgerSide {
    /// Every dossier of the period except those skipped (cancelled or deleted at the source).
    pub received: i64,
    pub accepted: i64,
    /// Waiting to be sent, or in flight.
    pub pending: i64,
    pub held: i64,
    pub refused: i64,
    pub skipped: i64,
}

/// One unit's reconciliation over the period.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UnitLine {
    pub unit: String,
    /// The source agencies whose dossiers went to this unit.
    pub source_agencies: Vec<String>,
    /// The source's count (count-by-agency); `None` when it could not be read.
    pub source_count: Option<i64>,
    pub ledger: LedgerSide,
    /// The portal's count (ThongKeHoSoDongBo); `None` when the portal offers none.
    pub portal_count: Option<i64>,
    /// At the source and never seen by tthc-sync (identifier sets compared); fetched and queued.
    pub missing: i64,
    /// Accepted by the portal by our ledger, yet not found there by TraCuuHoSo (a sample is checked
    /// when the portal's count falls short or it offers none); queued to be sent again.
    pub lost_on_portal: i64,
    /// Content check: accepted dossiers of the unit whose copy on the portal (TraCuuHoSo) this run
    /// compared with their payload.
    pub content_checked: i64,
    /// Content check: those whose copy on the portal differed from the payload; queued to be sent again.
    pub content_differs: i64,
    /// `content_differs` by reception day (`YYYY-MM-DD`).
    pub content_differs_days: BTreeMap<String, i64>,
    /// accepted ÷ the source's count (1.4 sync completeness); `None` without a source count.
    pub completeness: Option<f64>,
    /// Held and refused dossiers by reason, most first.
    pub reasons: Vec<ReasonCount>,
    /// When the oldest dossier not on the portal arrived (Unix ms), if any.
    pub oldest_unsent_at: Option<Millis>,
    /// Dossiers whose `updatedDate` was ahead of the clock when they were read (source-api.md quirk 10):
    /// the unit's clock or a typing error, for the unit to correct. They are synced like any other.
    pub stamped_ahead: i64,
    /// Every dossier the source counts is on the portal, and nothing is waiting.
    pub complete: bool,
    /// The Decision 766 indicator preview (indicators.md), when the caller asked for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub indicators: Option<UnitPreview>,
}

impl UnitLine {
    /// Dossiers that should be on the portal and are not (yet): what the operators chase.
    pub fn gap(&self) -> i64 {
        let expected = self.source_count.unwrap_or(self.ledger.received);
        (expected - self.ledger.accepted).max(0)
    }

    /// Sets `completeness` and `complete` from the counts: called whenever a count changes, so that
    /// the two never disagree with the counts beside them.
    pub fn settle(&mut self) {
        self.completeness =
            completeness(self.source_count, self.ledger.accepted, self.portal_count);
        let nothing_waiting =
            self.ledger.pending + self.ledger.held + self.ledger.refused + self.missing == 0;
        self.complete = nothing_waiting && self.completeness.is_none_or(|share| share >= 1.0);
    }

    /// The share the line is sorted by: its completeness, or without a source count what the ledger
    /// received and the portal accepted (1 for a line with nothing received).
    pub fn sort_share(&self) -> f64 {
        self.completeness.unwrap_or_else(|| {
            if self.ledger.received > 0 {
                self.ledger.accepted as f64 / self.ledger.received as f64
            } else {
                1.0
            }
        })
    }
}

/// The order every view shows units in: units needing attention first, the worst completeness first,
/// then the largest gap, then by key.
pub fn sort_worst_first(lines: &mut [UnitLine]) {
    lines.sort_by(|a, b| {
        a.complete
            .cmp(&b.complete)
            .then_with(|| a.sort_share().total_cmp(&b.sort_share()))
            .then_with(|| b.gap().cmp(&a.gap()))
            .then_with(|| a.unit.cmp(&b.unit))
    });
}

/// The other sides' counts for the period, by (source agency, day) and by (unit, day).
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// (source agency id, `YYYY-MM-DD`) → count; `None` when the source could not be asked.
    pub source: Option<HashMap<(String, String), i64>>,
    /// unit → count over the period; `None` when the portal offers no counts.
    pub portal: Option<HashMap<String, i64>>,
    /// source agency id → dossiers found missing (at the source, not in the ledger).
    pub missing: HashMap<String, i64>,
}

/// Which unit each source agency's dossiers go to, from the ledger: the unit most of its dossiers resolved
/// to (successions can move an agency's dossiers to another unit from a date on; the count follows
/// the majority, and the ledger's own counts stay exact per unit).
pub fn agency_units(buckets: &[LedgerBucket]) -> HashMap<String, String> {
    let mut votes: HashMap<&str, HashMap<String, i64>> = HashMap::new();
    for bucket in buckets {
        if let Some(agency) = bucket.source_agency_id.as_deref() {
            *votes
                .entry(agency)
                .or_default()
                .entry(unit_key(bucket.unit.as_deref(), Some(agency)))
                .or_default() += bucket.count;
        }
    }
    votes
        .into_iter()
        .map(|(agency, units)| {
            let unit = units
                .into_iter()
                .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
                .map(|(unit, _)| unit)
                .unwrap_or_default();
            (agency.to_owned(), unit)
        })
        .collect()
}

/// The per-unit lines: the ledger's buckets and the other sides' counts, problems first.
pub fn lines(buckets: &[LedgerBucket], counts: &Counts) -> Vec<UnitLine> {
    let mut units: BTreeMap<String, UnitLine> = BTreeMap::new();
    let mut agencies: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let owner = agency_units(buckets);
    for bucket in buckets {
        // A record that resolved to no unit (malformed, or rejected before its unit was known) counts
        // against the unit its agency's other dossiers go to; only an agency that never resolves is
        // shown on its own.
        let key = owner_of(
            bucket.unit.as_deref(),
            bucket.source_agency_id.as_deref(),
            &owner,
        )
        .to_string();
        let line = units.entry(key.clone()).or_insert_with(|| UnitLine {
            unit: key.clone(),
            ..UnitLine::default()
        });
        if let Some(agency) = &bucket.source_agency_id {
            agencies.entry(key).or_default().insert(agency.clone());
        }
        let ledger = &mut line.ledger;
        match bucket.state {
            DossierState::Accepted => ledger.accepted += bucket.count,
            DossierState::Pending | DossierState::InFlight => ledger.pending += bucket.count,
            DossierState::Held => ledger.held += bucket.count,
            DossierState::Refused => ledger.refused += bucket.count,
            DossierState::Skipped => ledger.skipped += bucket.count,
        }
        if bucket.state != DossierState::Skipped {
            ledger.received += bucket.count;
        }
        if matches!(bucket.state, DossierState::Held | DossierState::Refused) {
            let state = bucket.state.as_str();
            let code = bucket
                .reason_code
                .clone()
                .unwrap_or_else(|| "unknown".to_owned());
            match line
                .reasons
                .iter_mut()
                .find(|reason| reason.state == state && reason.code == code)
            {
                Some(reason) => reason.count += bucket.count,
                None => line.reasons.push(ReasonCount {
                    state,
                    code,
                    count: bucket.count,
                }),
            }
        }
        if let Some(at) = bucket.oldest_unsent_at {
            line.oldest_unsent_at = Some(line.oldest_unsent_at.map_or(at, |old| old.min(at)));
        }
        line.stamped_ahead += bucket.stamped_ahead;
    }

    if let Some(source) = &counts.source {
        for ((agency, _day), count) in source {
            let key = owner
                .get(agency)
                .cloned()
                .unwrap_or_else(|| unit_key(None, Some(agency)));
            agencies
                .entry(key.clone())
                .or_default()
                .insert(agency.clone());
            let line = units.entry(key.clone()).or_insert_with(|| UnitLine {
                unit: key,
                ..UnitLine::default()
            });
            *line.source_count.get_or_insert(0) += count;
        }
    }
    for (agency, missing) in &counts.missing {
        let key = owner
            .get(agency)
            .cloned()
            .unwrap_or_else(|| unit_key(None, Some(agency)));
        units
            .entry(key.clone())
            .or_insert_with(|| UnitLine {
                unit: key,
                ..UnitLine::default()
            })
            .missing += missing;
    }
    if let Some(portal) = &counts.portal {
        for (unit, count) in portal {
            if let Some(line) = units.get_mut(unit) {
                line.portal_count = Some(*count);
            }
        }
    }

    let mut lines: Vec<UnitLine> = units
        .into_values()
        .map(|mut line| {
            line.source_agencies = agencies
                .remove(&line.unit)
                .map(|set| set.into_iter().collect())
                .unwrap_or_default();
            // Units the source counts but the ledger never saw still get a portal count of 0 when the
            // portal offers counts at all.
            if counts.portal.is_some() && line.portal_count.is_none() {
                line.portal_count = Some(0);
            }
            line.reasons
                .sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.code.cmp(&b.code)));
            line.settle();
            line
        })
        .collect();
    sort_worst_first(&mut lines);
    lines
}

/// How many dossiers a stored reconciliation line found with other content on the portal.
pub fn content_differs_of(record: &ReconciliationRecord) -> i64 {
    serde_json::from_str::<serde_json::Value>(&record.summary)
        .ok()
        .and_then(|summary| summary["content_differs"].as_i64())
        .unwrap_or(0)
}

/// Counts by (unit, day) summed per unit over the period.
pub fn sum_by_unit(days: &HashMap<(String, String), i64>) -> HashMap<String, i64> {
    let mut by_unit: HashMap<String, i64> = HashMap::new();
    for ((unit, _), count) in days {
        *by_unit.entry(unit.clone()).or_default() += count;
    }
    by_unit
}

/// `YYYY-MM-DD` → the portal's `yyyyMMdd`.
fn compact(day: Date) -> String {
    day.strftime("%Y%m%d").to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the reconciliation log: {0}")]
    Log(#[from] std::io::Error),
    #[error("cannot queue the dossiers found missing: {0}")]
    Queue(String),
}

/// Dossiers compared with the portal's copy per page of a content check.
const CONTENT_PAGE: usize = 100;

/// What a run's content check found, before it is queued and counted.
#[derive(Debug, Default)]
struct ContentFindings {
    /// Unit → dossiers whose copy on the portal holds the payload.
    same: BTreeMap<String, i64>,
    /// Copies that differ from the payload.
    differing: Vec<ContentCandidate>,
    /// Accepted dossiers the portal does not have (TraCuuHoSo code 4).
    lost: Vec<ContentCandidate>,
    /// The first differing field's path → how many dossiers (paths only: values are personal data).
    fields: BTreeMap<String, usize>,
}

/// What one run found, for its caller (the CLI prints it, the daemon logs a summary).
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run_id: String,
    pub lines: Vec<UnitLine>,
    /// Dossiers the source has that the ledger did not: fetched and queued.
    pub fetched: u64,
    /// Problems with the other sides (the source's counts unreadable, ...), for the operator.
    pub notes: Vec<String>,
}

/// Runs reconciliations: the clients and the store, and where the log goes.
pub struct Reconciler {
    pub store: Arc<dyn Store>,
    pub source: Arc<SourceClient>,
    pub portal: Option<Arc<PortalClient>>,
    pub catalog: Option<Arc<PortalCatalog>>,
    pub tables: Arc<crate::normalize::MappingTables>,
    pub log: Option<log::ReconciliationLog>,
    /// Accepted dossiers per unit confirmed one by one on the portal (TraCuuHoSo) when it offers no
    /// counts: a random sample of the period; 0 confirms none.
    pub portal_sample: usize,
    /// The most lookups per unit and run on the days where the portal's count falls short of the
    /// ledger's (every accepted dossier of those days, up to this bound).
    pub portal_lookups: usize,
    /// The content check's reach ([`content`]).
    pub content: content::ContentLimits,
    /// Records fetched over this size are held back whole as `oversize_record`, as the feed does
    /// (`source.max_record_bytes`).
    pub max_record_bytes: usize,
}

impl Reconciler {
    /// Reconciles reception days `from` to `to` (inclusive), for one unit or all.
    pub async fn run(
        &self,
        from: Date,
        to: Date,
        unit: Option<&UnitKey>,
    ) -> Result<RunOutcome, ReconcileError> {
        let started = Timestamp::now();
        let run_id = started.strftime("%Y%m%dT%H%M%S%.3fZ").to_string();
        let (from_day, to_day) = (from.to_string(), to.to_string());
        let mut notes = Vec::new();
        // Every unit's buckets: which key a source agency's dossiers go to depends on all of them.
        let mut buckets = self.store.ledger_buckets(&from_day, &to_day, None).await?;
        let owner = agency_units(&buckets);
        let wanted =
            |agency: &str| unit.is_none_or(|unit| owner_of(None, Some(agency), &owner) == *unit);

        // The source's counts, by agency and day.
        let source = self
            .source_counts(&from_day, &to_day, &mut notes)
            .await
            .map(|mut counts| {
                counts.retain(|(agency, _), _| wanted(agency));
                counts
            });

        // Where the source and the ledger disagree, compare identifier sets and fetch what is missing.
        let mut missing: HashMap<String, i64> = HashMap::new();
        let mut fetched = 0;
        if let Some(source) = &source {
            // What the source has and the ledger never saw is fetched and written bucket by bucket.
            let mut backfill = self.fetch_and_queue();
            let mut ledger_days: HashMap<(&str, &str), i64> = HashMap::new();
            for bucket in &buckets {
                if let (Some(agency), Some(day)) = (&bucket.source_agency_id, &bucket.day)
                    && bucket.state != DossierState::Skipped
                {
                    *ledger_days.entry((agency, day)).or_default() += bucket.count;
                }
            }
            let mut differing: Vec<(&String, &String)> = source
                .iter()
                .filter(|((agency, day), count)| {
                    ledger_days
                        .get(&(agency.as_str(), day.as_str()))
                        .copied()
                        .unwrap_or(0)
                        != **count
                })
                .map(|((agency, day), _)| (agency, day))
                .collect();
            differing.sort();
            for (agency, day) in differing {
                let at_source = match self.source.ids(agency, day).await {
                    Ok(items) => items,
                    Err(error) => {
                        notes.push(format!(
                            "the source's identifiers of {agency} on {day} could not be read: {error}"
                        ));
                        continue;
                    }
                };
                let known: BTreeSet<String> = self
                    .store
                    .ledger_ids(agency, day)
                    .await?
                    .into_iter()
                    .collect();
                let other_bucket: Vec<String> = at_source
                    .into_iter()
                    .map(|item| item.id)
                    .filter(|id| !known.contains(id))
                    .collect();
                if other_bucket.is_empty() {
                    continue;
                }
                // A dossier the ledger files under another agency or day (a bad date, an agency
                // changed) is not missing: only those the ledger has never seen are.
                let seen = self.store.ledger_views(&other_bucket).await?;
                let never_seen: Vec<String> = other_bucket
                    .into_iter()
                    .filter(|id| !seen.contains_key(id))
                    .collect();
                if !never_seen.is_empty() {
                    *missing.entry(agency.clone()).or_default() += never_seen.len() as i64;
                    backfill
                        .push(never_seen, &mut notes)
                        .await
                        .map_err(|error| ReconcileError::Queue(error.to_string()))?;
                }
            }
            let (stats, _) = backfill
                .finish(&mut notes)
                .await
                .map_err(|error| ReconcileError::Queue(error.to_string()))?;
            fetched = stats.fetched;
            if fetched > 0 {
                // The fetched dossiers are in the ledger now: count them where they belong.
                buckets = self.store.ledger_buckets(&from_day, &to_day, None).await?;
            }
        }

        // The portal's counts, when it offers them: by unit over the period, and by unit and day (where
        // it falls short of the ledger, the day's dossiers are confirmed one by one).
        let portal_days = self.portal_counts(from, to, &mut notes).await;
        let portal = portal_days.as_ref().map(sum_by_unit);
        let counts = Counts {
            source,
            portal,
            missing,
        };
        let mut lines = lines(&buckets, &counts);
        if let Some(unit) = unit {
            let unit = unit.to_string();
            lines.retain(|line| line.unit == unit);
        }
        let mut accepted_days: HashMap<(String, String), i64> = HashMap::new();
        for bucket in &buckets {
            if let (Some(unit), Some(day), DossierState::Accepted) =
                (&bucket.unit, &bucket.day, bucket.state)
            {
                *accepted_days
                    .entry((unit.clone(), day.clone()))
                    .or_default() += bucket.count;
            }
        }
        // Days where the portal has fewer of a unit's dossiers than the ledger says it accepted; with no
        // portal counts at all, the whole period (a sample).
        let mut short_days: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        for ((unit, day), accepted) in &accepted_days {
            let on_portal = portal_days
                .as_ref()
                .map(|days| days.get(&(unit.clone(), day.clone())).copied().unwrap_or(0));
            match on_portal {
                Some(count) if count >= *accepted => {}
                Some(_) => short_days
                    .entry(unit.clone())
                    .or_default()
                    .push((day.clone(), day.clone())),
                None => {
                    short_days
                        .entry(unit.clone())
                        .or_insert_with(|| vec![(from_day.clone(), to_day.clone())]);
                }
            }
        }
        for line in &mut lines {
            if let Some(days) = short_days.get(&line.unit) {
                let limit = if portal_days.is_some() {
                    self.portal_lookups
                } else {
                    self.portal_sample
                };
                self.confirm_on_portal(line, days, limit, &mut notes)
                    .await?;
            }
        }
        let period = (from_day.as_str(), to_day.as_str());
        // Only dossiers with a unit code reach the portal: an `agency:` or `unknown` key has none to check.
        match unit {
            None => {
                self.check_content(&mut lines, None, period, started, &mut notes)
                    .await?
            }
            Some(UnitKey::Unit(code)) => {
                self.check_content(&mut lines, Some(code.as_str()), period, started, &mut notes)
                    .await?
            }
            Some(_) => {}
        }
        sort_worst_first(&mut lines);
        let records: Vec<ReconciliationRecord> = lines
            .iter()
            .map(|line| ReconciliationRecord {
                run_id: run_id.clone(),
                unit: line.unit.clone(),
                started_at: started.as_millisecond(),
                from_day: from_day.clone(),
                to_day: to_day.clone(),
                source_count: line.source_count,
                ledger_count: line.ledger.received,
                accepted: line.ledger.accepted,
                portal_count: line.portal_count,
                missing: line.missing,
                complete: line.complete,
                summary: serde_json::to_string(line).unwrap_or_default(),
            })
            .collect();
        self.store.record_reconciliation(&records).await?;
        if let Some(log) = &self.log {
            log.append(&run_id, started, &from_day, &to_day, &lines)?;
        }
        Ok(RunOutcome {
            run_id,
            lines,
            fetched,
            notes,
        })
    }

    /// The source's counts by (agency id, `YYYY-MM-DD`); `None`, with a note, when they cannot be read.
    pub async fn source_counts(
        &self,
        from: &str,
        to: &str,
        notes: &mut Vec<String>,
    ) -> Option<HashMap<(String, String), i64>> {
        match self.source.count_by_agency(from, to).await {
            Ok(rows) => Some(
                rows.into_iter()
                    .map(|row| ((row.agency_id, row.date), row.count))
                    .collect(),
            ),
            Err(error) => {
                notes.push(format!("the source's counts could not be read: {error}"));
                None
            }
        }
    }

    /// The portal's counts by (unit, `YYYY-MM-DD`); `None`, with a note, when it offers none.
    pub async fn portal_counts(
        &self,
        from: Date,
        to: Date,
        notes: &mut Vec<String>,
    ) -> Option<HashMap<(String, String), i64>> {
        let portal = self.portal.as_ref()?;
        match portal.counts(&compact(from), &compact(to)).await {
            Ok(rows) => {
                let mut by_day: HashMap<(String, String), i64> = HashMap::new();
                for row in rows {
                    if let Ok(day) = Date::strptime("%Y%m%d", &row.ngay) {
                        *by_day
                            .entry((row.don_vi_xu_ly, day.to_string()))
                            .or_default() += row.so_ho_so;
                    }
                }
                Some(by_day)
            }
            Err(error) => {
                notes.push(format!("the portal's counts are not available: {error}"));
                None
            }
        }
    }

    /// Looks the unit's accepted dossiers of the given days up on the portal (TraCuuHoSo), at most
    /// `limit` of them, at the portal client's rate; those it does not have are queued to be sent again.
    async fn confirm_on_portal(
        &self,
        line: &mut UnitLine,
        days: &[(String, String)],
        limit: usize,
        notes: &mut Vec<String>,
    ) -> Result<(), ReconcileError> {
        let Some(portal) = &self.portal else {
            return Ok(());
        };
        let mut left = limit;
        let mut lost = Vec::new();
        'days: for (from, to) in days {
            if left == 0 {
                break;
            }
            let sample = self
                .store
                .accepted_sample(&line.unit, from, to, left)
                .await?;
            left = left.saturating_sub(sample.len());
            for (source_id, code) in sample {
                match portal.lookup(&code).await {
                    Ok(Some(_)) => {}
                    Ok(None) => lost.push(source_id),
                    Err(error) => {
                        notes.push(format!(
                            "the portal could not confirm the dossiers of {}: {error}",
                            line.unit
                        ));
                        break 'days;
                    }
                }
            }
        }
        if !lost.is_empty() {
            let marked = self
                .store
                .mark_missing_on_portal(&lost, Timestamp::now().as_millisecond())
                .await?;
            line.lost_on_portal = marked as i64;
            line.ledger.accepted -= line.lost_on_portal;
            line.ledger.pending += line.lost_on_portal;
            line.settle();
        }
        Ok(())
    }

    /// The content check: the portal's copy (TraCuuHoSo) of the dossiers accepted within the recent
    /// hours, those checked longest ago first, then a random sample of each unit's older ones, within the
    /// run's budget and at the portal client's rate. A copy that differs from the payload queues the
    /// payload to be sent again; a dossier the portal does not have is lost on the portal, as in
    /// [`Self::confirm_on_portal`]. Counted on each unit's line (a unit outside the period's lines gets
    /// a line of its own); the ledger's counts move only for dossiers of the period.
    async fn check_content(
        &self,
        lines: &mut Vec<UnitLine>,
        unit: Option<&str>,
        period: (&str, &str),
        started: Timestamp,
        notes: &mut Vec<String>,
    ) -> Result<(), ReconcileError> {
        let Some(portal) = &self.portal else {
            return Ok(());
        };
        let limits = self.content;
        let units: Vec<String> = lines
            .iter()
            .map(|line| line.unit.clone())
            .filter(|key| !key.starts_with("agency:") && key != "unknown")
            .collect();
        let (mut recent_left, mut samples_left) = limits.split(units.len());
        let now = started.as_millisecond();
        let since = now.saturating_sub((limits.recent_hours as i64).saturating_mul(3_600_000));
        let mut found = ContentFindings::default();
        let mut healthy = true;
        while recent_left > 0 && healthy {
            let page = self
                .store
                .content_candidates(since, now, unit, recent_left.min(CONTENT_PAGE))
                .await?;
            if page.is_empty() {
                break;
            }
            recent_left -= page.len();
            healthy = self
                .compare_with_portal(portal, page, &mut found, notes)
                .await?;
        }
        if healthy && recent_left == 0 && limits.recent_hours > 0 {
            let more = self.store.content_candidates(since, now, unit, 1).await?;
            if !more.is_empty() {
                notes.push(format!(
                    "the content check's budget ({}) did not cover every dossier accepted within {} hours: the next runs go on with the others",
                    limits.budget, limits.recent_hours
                ));
            }
        }
        for sampled in &units {
            if !healthy || samples_left == 0 {
                break;
            }
            let page = self
                .store
                .content_sample(sampled, since, limits.sample_per_unit.min(samples_left))
                .await?;
            samples_left = samples_left.saturating_sub(page.len());
            healthy = self
                .compare_with_portal(portal, page, &mut found, notes)
                .await?;
        }
        self.settle_content(lines, found, period).await
    }

    /// Looks a page of candidates up on the portal (a few at a time; the client keeps its rate) and
    /// compares. False when the portal could not be asked: the check stops for this run.
    async fn compare_with_portal(
        &self,
        portal: &PortalClient,
        page: Vec<ContentCandidate>,
        found: &mut ContentFindings,
        notes: &mut Vec<String>,
    ) -> Result<bool, ReconcileError> {
        let answers: Vec<_> = futures::stream::iter(page)
            .map(|candidate| async move {
                let answer = portal.lookup(&candidate.dossier_code).await;
                (candidate, answer)
            })
            .buffer_unordered(4)
            .collect()
            .await;
        // Every dossier the portal answered for is marked checked, whatever the answer: a run never
        // reads it again, and the next runs take those checked longest ago first.
        let mut answered: Vec<String> = Vec::new();
        let mut healthy = true;
        for (candidate, answer) in answers {
            if answer.is_ok() {
                answered.push(candidate.source_id.clone());
            }
            match answer {
                Ok(Some(theirs)) => {
                    let ours = serde_json::from_str::<serde_json::Value>(&candidate.payload)
                        .unwrap_or(serde_json::Value::Null);
                    match content::first_difference(&ours, &theirs) {
                        None => {
                            *found
                                .same
                                .entry(unit_key(candidate.unit.as_deref(), None))
                                .or_default() += 1;
                        }
                        Some(field) => {
                            *found.fields.entry(field).or_default() += 1;
                            found.differing.push(candidate);
                        }
                    }
                }
                Ok(None) => found.lost.push(candidate),
                Err(error) => {
                    if healthy {
                        notes.push(format!(
                            "the content check stopped: the portal could not be asked: {error}"
                        ));
                    }
                    healthy = false;
                }
            }
        }
        self.store
            .mark_content_checked(&answered, Timestamp::now().as_millisecond())
            .await?;
        Ok(healthy)
    }

    /// Queues what the content check found and counts it on the units' lines.
    async fn settle_content(
        &self,
        lines: &mut Vec<UnitLine>,
        found: ContentFindings,
        period: (&str, &str),
    ) -> Result<(), ReconcileError> {
        let now = Timestamp::now().as_millisecond();
        let in_period = |candidate: &ContentCandidate| {
            candidate
                .reception_day
                .as_deref()
                .is_some_and(|day| period.0 <= day && day <= period.1)
        };
        let mut checked = found.same.clone();
        let unit_of = |candidate: &ContentCandidate| unit_key(candidate.unit.as_deref(), None);
        let pairs: Vec<(String, String)> = found
            .differing
            .iter()
            .map(|candidate| (candidate.source_id.clone(), candidate.payload_hash.clone()))
            .collect();
        let queued: HashSet<String> = self
            .store
            .requeue_content_differs(&pairs, now)
            .await?
            .into_iter()
            .collect();
        let mut lost_by_unit: BTreeMap<String, Vec<&ContentCandidate>> = BTreeMap::new();
        for candidate in &found.lost {
            lost_by_unit
                .entry(unit_of(candidate))
                .or_default()
                .push(candidate);
        }
        let line_of = |lines: &mut Vec<UnitLine>, key: &str| -> usize {
            match lines.iter().position(|line| line.unit == key) {
                Some(index) => index,
                None => {
                    lines.push(UnitLine {
                        unit: key.to_owned(),
                        complete: true,
                        ..UnitLine::default()
                    });
                    lines.len() - 1
                }
            }
        };
        for candidate in &found.differing {
            *checked.entry(unit_of(candidate)).or_default() += 1;
            if !queued.contains(&candidate.source_id) {
                // In flight or changed since it was read: the new version goes out anyway.
                continue;
            }
            let index = line_of(lines, &unit_of(candidate));
            let line = &mut lines[index];
            line.content_differs += 1;
            if let Some(day) = &candidate.reception_day {
                *line.content_differs_days.entry(day.clone()).or_default() += 1;
            }
            if in_period(candidate) {
                line.ledger.accepted -= 1;
                line.ledger.pending += 1;
            }
            line.complete = false;
        }
        for (key, lost) in lost_by_unit {
            *checked.entry(key.clone()).or_default() += lost.len() as i64;
            let ids: Vec<String> = lost
                .iter()
                .map(|candidate| candidate.source_id.clone())
                .collect();
            let marked = self.store.mark_missing_on_portal(&ids, now).await?;
            if marked == 0 {
                continue;
            }
            let index = line_of(lines, &key);
            let line = &mut lines[index];
            line.lost_on_portal += marked as i64;
            let of_period = lost.iter().filter(|candidate| in_period(candidate)).count() as i64;
            let moved = of_period.min(marked as i64);
            line.ledger.accepted -= moved;
            line.ledger.pending += moved;
            line.complete = false;
        }
        for (key, count) in checked {
            let index = line_of(lines, &key);
            lines[index].content_checked += count;
        }
        if !queued.is_empty() {
            let fields: Vec<String> = found
                .fields
                .iter()
                .map(|(field, count)| format!("{field} ({count})"))
                .collect();
            tracing::warn!(
                differs = queued.len(),
                fields = %fields.join(", "),
                "content check: the portal holds other content than the accepted payload; sent again"
            );
        }
        lines.sort_by(|a, b| {
            a.complete
                .cmp(&b.complete)
                .then_with(|| b.gap().cmp(&a.gap()))
                .then_with(|| a.unit.cmp(&b.unit))
        });
        Ok(())
    }

    /// A backfill that fetches dossiers by id (eight at a time: the source is a production system with
    /// its own users) and writes them to the ledger a chunk at a time as they come, without moving the
    /// feed cursor.
    fn fetch_and_queue(&self) -> fetch::Backfill {
        let mut sink = IngestSink::new(
            self.store.clone(),
            self.tables.clone(),
            self.catalog.clone(),
        )
        .without_cursor();
        sink.max_record_bytes = self.max_record_bytes;
        fetch::Backfill::new(self.source.clone(), sink, fetch::CHUNK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(
        unit: Option<&str>,
        agency: &str,
        day: &str,
        state: DossierState,
        reason: Option<&str>,
        count: i64,
    ) -> LedgerBucket {
        LedgerBucket {
            unit: unit.map(str::to_owned),
            source_agency_id: Some(agency.to_owned()),
            day: Some(day.to_owned()),
            state,
            reason_code: reason.map(str::to_owned),
            count,
            oldest_unsent_at: (!matches!(state, DossierState::Accepted | DossierState::Skipped))
                .then_some(1_000),
            stamped_ahead: 0,
        }
    }

    #[test]
    fn lines_put_failing_units_first_with_their_reasons() {
        let a = "000.00.01.H60";
        let d = "000.00.04.H60";
        let buckets = vec![
            bucket(
                Some(a),
                "ag-1",
                "2026-11-01",
                DossierState::Accepted,
                None,
                8,
            ),
            bucket(
                Some(a),
                "ag-1",
                "2026-11-01",
                DossierState::Held,
                Some("unmapped_procedure"),
                2,
            ),
            bucket(
                None,
                "ag-2",
                "2026-11-01",
                DossierState::Held,
                Some("unmapped_unit"),
                5,
            ),
            bucket(
                Some(d),
                "ag-4",
                "2026-11-01",
                DossierState::Accepted,
                None,
                10,
            ),
            bucket(
                Some(d),
                "ag-4",
                "2026-11-01",
                DossierState::Skipped,
                Some("cancelled_at_source"),
                1,
            ),
        ];
        let counts = Counts {
            source: Some(HashMap::from([
                (("ag-1".into(), "2026-11-01".into()), 10),
                (("ag-2".into(), "2026-11-01".into()), 5),
                (("ag-4".into(), "2026-11-01".into()), 10),
            ])),
            portal: Some(HashMap::from([(a.to_owned(), 8), (d.to_owned(), 10)])),
            missing: HashMap::new(),
        };
        let lines = lines(&buckets, &counts);
        let units: Vec<&str> = lines.iter().map(|line| line.unit.as_str()).collect();
        assert_eq!(units, ["agency:ag-2", a, d]);
        let unmapped = &lines[0];
        assert_eq!(unmapped.source_count, Some(5));
        assert_eq!(unmapped.ledger.held, 5);
        assert_eq!(unmapped.completeness, Some(0.0));
        assert_eq!(unmapped.portal_count, Some(0));
        assert!(!unmapped.complete);
        let first = &lines[1];
        assert_eq!(first.ledger.received, 10);
        assert_eq!(first.completeness, Some(0.8));
        assert_eq!(first.reasons[0].code, "unmapped_procedure");
        assert_eq!(first.gap(), 2);
        let clean = &lines[2];
        assert!(clean.complete);
        assert_eq!(clean.ledger.skipped, 1);
        assert_eq!(clean.ledger.received, 10);
        assert_eq!(clean.completeness, Some(1.0));
        assert_eq!(clean.oldest_unsent_at, None);
    }

    #[test]
    fn a_record_without_a_unit_counts_against_its_agency_s_unit() {
        let a = "000.00.01.H60";
        let buckets = vec![
            bucket(
                Some(a),
                "ag-1",
                "2026-11-01",
                DossierState::Accepted,
                None,
                9,
            ),
            bucket(
                None,
                "ag-1",
                "2026-11-01",
                DossierState::Held,
                Some("malformed_record"),
                1,
            ),
            bucket(
                None,
                "ag-9",
                "2026-11-01",
                DossierState::Held,
                Some("unmapped_unit"),
                2,
            ),
        ];
        let lines = lines(&buckets, &Counts::default());
        let units: Vec<&str> = lines.iter().map(|line| line.unit.as_str()).collect();
        assert_eq!(units, ["agency:ag-9", a]);
        assert_eq!(lines[1].ledger.received, 10);
        assert_eq!(lines[1].reasons[0].code, "malformed_record");
    }

    #[test]
    fn completeness_never_exceeds_what_the_portal_holds() {
        // The reconciliation line of the issue: the portal holds none of 96 accepted dossiers.
        assert_eq!(completeness(Some(114), 96, Some(0)), Some(0.0));
        assert_eq!(completeness(Some(100), 96, Some(50)), Some(0.5));
        assert_eq!(completeness(Some(100), 96, None), Some(0.96));
        assert_eq!(completeness(Some(100), 96, Some(500)), Some(0.96));
        // A source count behind the ledger is capped at 100%; no source count, no completeness.
        assert_eq!(completeness(Some(3), 4, None), Some(1.0));
        assert_eq!(completeness(None, 4, Some(4)), None);
        assert_eq!(completeness(Some(0), 0, Some(0)), None);

        let a = "000.00.01.H60";
        let buckets = vec![bucket(
            Some(a),
            "ag-1",
            "2026-11-01",
            DossierState::Accepted,
            None,
            10,
        )];
        let counts = Counts {
            source: Some(HashMap::from([(("ag-1".into(), "2026-11-01".into()), 10)])),
            portal: Some(HashMap::from([(a.to_owned(), 0)])),
            missing: HashMap::new(),
        };
        let line = &lines(&buckets, &counts)[0];
        assert_eq!(line.completeness, Some(0.0));
        assert!(
            !line.complete,
            "a unit the portal holds none of is not complete"
        );
    }

    #[test]
    fn the_worst_completeness_comes_first_then_the_largest_gap() {
        let line = |unit: &str, source: i64, accepted: i64, held: i64| {
            let mut line = UnitLine {
                unit: unit.into(),
                source_count: Some(source),
                ledger: LedgerSide {
                    received: accepted + held,
                    accepted,
                    held,
                    ..LedgerSide::default()
                },
                ..UnitLine::default()
            };
            line.settle();
            line
        };
        let mut lines = vec![
            line("big-gap", 1000, 900, 100),
            line("fine", 10, 10, 0),
            line("zero", 5, 0, 5),
            line("small-gap", 100, 90, 10),
        ];
        sort_worst_first(&mut lines);
        let order: Vec<&str> = lines.iter().map(|line| line.unit.as_str()).collect();
        assert_eq!(order, ["zero", "big-gap", "small-gap", "fine"]);
    }

    #[test]
    fn missing_dossiers_make_a_unit_incomplete() {
        let a = "000.00.01.H60";
        let buckets = vec![bucket(
            Some(a),
            "ag-1",
            "2026-11-01",
            DossierState::Accepted,
            None,
            9,
        )];
        let counts = Counts {
            source: Some(HashMap::from([(("ag-1".into(), "2026-11-01".into()), 10)])),
            portal: None,
            missing: HashMap::from([("ag-1".to_owned(), 1)]),
        };
        let lines = lines(&buckets, &counts);
        assert_eq!(lines[0].missing, 1);
        assert!(!lines[0].complete);
        assert_eq!(lines[0].portal_count, None);
        assert_eq!(lines[0].gap(), 1);
    }
}
