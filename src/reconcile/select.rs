//! An operator's selection (`--unit`, `--reason`, `--actor`, `--dossier`) checked against the ledger and
//! turned into the store's [`DossierFilter`]: any key a report line shows selects exactly that line's
//! dossiers, and a unit or reason the ledger has never seen is an error that says so, not an empty list.

use std::collections::{BTreeSet, HashMap};

use super::{Counts, agency_units, lines};
use crate::actors::{Actor, is_known_reason, triage_of};
use crate::store::{DossierFilter, LedgerBucket, Store, StoreError};
use crate::unit_key::{UnitKey, UnitKeyError};

/// Reception days of all time: the bounds the ledger's buckets take for "everything".
pub const ALL_DAYS: (&str, &str) = ("0001-01-01", "9999-12-31");

#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("--unit: {0}")]
    BadUnit(#[from] UnitKeyError),
    #[error("unit {key} is not in the ledger; its units are: {}", known.join(", "))]
    UnknownUnit { key: String, known: Vec<String> },
    #[error(
        "reason {0} is not a reason tthc-sync records (a code of vocabulary.md such as unmapped_unit, or portal_<code>)"
    )]
    UnknownReason(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the ledger holds, as the selection needs it: every bucket of all time.
pub struct LedgerIndex {
    buckets: Vec<LedgerBucket>,
    owners: HashMap<String, String>,
    keys: BTreeSet<String>,
}

impl LedgerIndex {
    /// Reads the ledger's buckets of all time and the units of the latest reconciliations (an agency
    /// the source counts and the ledger never saw has a line there).
    pub async fn read(store: &dyn Store) -> Result<Self, StoreError> {
        let buckets = store.ledger_buckets(ALL_DAYS.0, ALL_DAYS.1, None).await?;
        let owners = agency_units(&buckets);
        let mut keys: BTreeSet<String> = lines(&buckets, &Counts::default())
            .into_iter()
            .map(|line| line.unit)
            .collect();
        keys.extend(
            store
                .latest_reconciliation()
                .await?
                .into_iter()
                .map(|record| record.unit),
        );
        Ok(Self {
            buckets,
            owners,
            keys,
        })
    }

    /// Every unit key the ledger knows.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(String::as_str)
    }

    /// The key a unit-less row of this agency goes to, as in the report.
    pub fn owners(&self) -> &HashMap<String, String> {
        &self.owners
    }

    /// The filter for a selection; errors name what is unknown.
    pub fn filter(
        &self,
        unit: Option<&str>,
        reason: Option<&str>,
        actor: Option<Actor>,
        dossier: Option<&str>,
    ) -> Result<DossierFilter, SelectError> {
        let scope = match unit {
            Some(text) => {
                let key = UnitKey::parse(text)?;
                if !self.keys.contains(&key.to_string()) {
                    return Err(SelectError::UnknownUnit {
                        key: key.to_string(),
                        known: self.keys.iter().take(20).cloned().collect(),
                    });
                }
                Some(key.scope(&self.owners))
            }
            None => None,
        };
        if let Some(reason) = reason
            && !is_known_reason(reason)
        {
            return Err(SelectError::UnknownReason(reason.to_owned()));
        }
        let reasons = match (reason, actor) {
            (None, None) => None,
            (Some(reason), None) => Some(vec![reason.to_owned()]),
            (reason, Some(actor)) => {
                // The codes the ledger holds whose owner is this actor (portal codes are open-ended).
                let present: BTreeSet<&str> = self
                    .buckets
                    .iter()
                    .filter_map(|bucket| bucket.reason_code.as_deref())
                    .filter(|code| triage_of(code).actor == actor)
                    .filter(|code| reason.is_none_or(|reason| reason == *code))
                    .collect();
                Some(present.into_iter().map(str::to_owned).collect())
            }
        };
        Ok(DossierFilter {
            unit: scope,
            reasons,
            dossier_code: dossier.map(str::to_owned),
            ..DossierFilter::default()
        })
    }
}
