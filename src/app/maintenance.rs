//! The schedules beside the sync: held-back dossiers normalized again when the tables change (and once a
//! day), the retention pass, and the reconciliation of recent days.

use super::*;

impl App {
    /// Normalizes every held-back dossier again when something they depend on changed: the tables (on
    /// start, against the fingerprint stored with the last pass, and on reload), the portal's unit
    /// catalog, or the day (`mapping.renormalize_every_hours`). Runs between polls.
    pub async fn renormalize_if_due(&self) -> anyhow::Result<Option<RenormalizeStats>> {
        let now = Timestamp::now().as_millisecond();
        let tables = self.tables();
        let fingerprint = tables.fingerprint();
        let requested = self.renormalize_requested.swap(false, Ordering::Relaxed);
        if requested && let Some(catalog) = &self.catalog {
            catalog.forget().await;
        }
        let catalog_changed = match &self.catalog {
            Some(catalog) => catalog.refresh_units().await,
            None => false,
        };
        let stored = self.store.cursor(TABLES_FINGERPRINT).await?;
        let last_pass = self
            .store
            .cursor(RENORMALIZED_AT)
            .await?
            .and_then(|text| text.parse::<i64>().ok());
        let every = i64::try_from(self.settings.mapping.renormalize_every_hours)
            .unwrap_or(i64::MAX / 3_600_000)
            .saturating_mul(3_600_000);
        let asked_at = self
            .store
            .cursor(RENORMALIZE_REQUESTED)
            .await?
            .and_then(|text| text.parse::<i64>().ok());
        let reason = if stored.as_deref() != Some(fingerprint.as_str()) {
            "the mapping tables changed"
        } else if requested {
            "the tables were reloaded"
        } else if asked_at.is_some_and(|asked| last_pass.is_none_or(|pass| asked >= pass)) {
            "an operator asked (tthc-sync retry)"
        } else if catalog_changed {
            "the portal's unit catalog changed"
        } else if last_pass.is_none_or(|at| now.saturating_sub(at) >= every) {
            "the daily pass"
        } else {
            return Ok(None);
        };
        if reason.starts_with("an operator asked")
            && let Some(catalog) = &self.catalog
        {
            // Whatever the operator fixed may be on the portal's side: ask it again.
            catalog.forget().await;
        }
        let mut sink = IngestSink::new(self.store.clone(), tables, self.catalog.clone());
        sink.max_record_bytes = self.settings.source.max_record_bytes;
        let mut total = RenormalizeStats::default();
        let mut after = String::new();
        loop {
            let held = self.store.held_records(&after, RENORMALIZE_PAGE).await?;
            let Some(last) = held.last() else { break };
            after = last.source_id.clone();
            let stats = sink.renormalize(&held).await?;
            self.health.progressed();
            total.examined += stats.examined;
            total.released += stats.released;
            total.still_held += stats.still_held;
            total.skipped += stats.skipped;
            if stats.released > 0 {
                self.work_available.notify_waiters();
            }
        }
        self.store
            .set_cursor(TABLES_FINGERPRINT, &fingerprint, now)
            .await?;
        self.store
            .set_cursor(RENORMALIZED_AT, &now.to_string(), now)
            .await?;
        tracing::info!(
            reason,
            examined = total.examined,
            released = total.released,
            still_held = total.still_held,
            skipped = total.skipped,
            "held-back dossiers normalized again"
        );
        Ok(Some(total))
    }

    /// Retention (`store.retention_days`): clears the personal fields of the finished dossiers the portal
    /// accepted longer ago than that; the ledger rows reconciliation reads stay. Runs at most every
    /// hour, between polls, by the instance that polls. Returns how many dossiers it redacted, or None
    /// when it was not due.
    pub async fn retention_if_due(&self) -> anyhow::Result<Option<u64>> {
        let now = Timestamp::now().as_millisecond();
        let last = self
            .store
            .cursor(RETENTION_RAN_AT)
            .await?
            .and_then(|text| text.parse::<i64>().ok());
        if last.is_some_and(|at| now.saturating_sub(at) < RETENTION_EVERY.as_millis() as i64) {
            return Ok(None);
        }
        let redacted = self.apply_retention(now).await?;
        self.store
            .set_cursor(RETENTION_RAN_AT, &now.to_string(), now)
            .await?;
        Ok(Some(redacted))
    }

    /// One retention pass over the whole ledger, as of `now`.
    pub async fn apply_retention(&self, now: i64) -> anyhow::Result<u64> {
        let days = i64::from(self.settings.store.retention_days);
        let accepted_before = now.saturating_sub(days.saturating_mul(86_400_000));
        let mut redacted = 0;
        let mut after = String::new();
        loop {
            let candidates = self
                .store
                .retention_candidates(accepted_before, &after, RETENTION_PAGE)
                .await?;
            let Some(last) = candidates.last() else { break };
            after = last.source_id.clone();
            let redactions: Vec<Redaction> = candidates
                .into_iter()
                .map(|candidate| Redaction {
                    payload: crate::privacy::redact_payload(&candidate.payload),
                    source_id: candidate.source_id,
                    raw_hash: candidate.raw_hash,
                })
                .collect();
            redacted += self.store.redact(&redactions, now).await?;
            self.health.progressed();
        }
        tracing::info!(
            redacted,
            retention_days = days,
            "retention: personal fields of finished dossiers cleared"
        );
        Ok(redacted)
    }

    /// Runs a reconciliation of the last `days` reception days (Vietnam time) and logs its summary.
    pub async fn reconcile_recent(&self, days: u32, kind: &str) {
        let today = vietnam_today();
        let from = today
            .checked_sub(jiff::Span::new().days(i64::from(days.saturating_sub(1))))
            .unwrap_or(today);
        match self.reconciler().run(from, today, None).await {
            Ok(outcome) => {
                events::ReconciliationRun {
                    kind,
                    run_id: &outcome.run_id,
                    from,
                    to: today,
                    units: outcome.lines.len(),
                    incomplete: outcome.lines.iter().filter(|line| !line.complete).count(),
                    fetched: outcome.fetched,
                    notes: &outcome.notes,
                }
                .emit(&self.metrics);
                if outcome.fetched > 0 {
                    self.work_available.notify_waiters();
                }
            }
            Err(error) => events::ReconciliationFailed {
                kind,
                error: &error,
            }
            .emit(&self.metrics),
        }
    }
}
