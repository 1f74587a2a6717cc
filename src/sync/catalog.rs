//! The catalog pre-flight: a dossier whose unit or procedure the portal does not know is held back here
//! (`unit_unknown_to_portal`, `procedure_unknown_to_portal`) instead of being sent only to be refused.
//!
//! The portal's unit catalog (`LayDanhMucCoQuan`) is loaded whole and refreshed at an interval; each
//! distinct procedure code is looked up once (`LayThuTuc`) and the answer cached for the same interval.
//! The pre-flight never stops the sync: a catalog that cannot be read (an outage, a timeout) checks
//! nothing until it can, and the portal's own answer decides meanwhile. An empty unit catalog is taken as
//! no catalog: holding back every dossier of the province on that evidence would be an outage of our own.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Mutex;

use crate::normalize::{Finding, Normalized, Outcome, codes};
use crate::portal::client::PortalClient;

/// What the pre-flight knows of one code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    Yes,
    No,
    /// Not checked (no catalog, or the portal could not be asked): the dossier goes on.
    Unchecked,
}

/// Holds a sendable dossier back when the portal is known not to have its unit or its procedure.
/// Pure: the caller looked the codes up.
pub fn preflight(normalized: &mut Normalized, unit: Known, procedure: Known) {
    let Outcome::Dossier(dossier) = &normalized.outcome else {
        return;
    };
    let mut findings = Vec::new();
    if unit == Known::No {
        let code = &dossier.dossier.don_vi_xu_ly;
        findings.push(Finding {
            code: codes::UNIT_UNKNOWN_TO_PORTAL,
            field: "agency".to_owned(),
            detail: format!("the portal's unit catalog (LayDanhMucCoQuan) has no unit {code}"),
            value: Some(code.clone()),
        });
    }
    if procedure == Known::No {
        let code = &dossier.dossier.ma_tthc;
        findings.push(Finding {
            code: codes::PROCEDURE_UNKNOWN_TO_PORTAL,
            field: "procedure.code".to_owned(),
            detail: format!("the portal's procedure catalog (LayThuTuc) has no procedure {code}"),
            value: Some(code.clone()),
        });
    }
    if !findings.is_empty() {
        normalized.outcome = Outcome::Rejected(findings);
    }
}

#[derive(Debug, Clone, Copy)]
pub struct CatalogOptions {
    /// How long a loaded unit catalog and a procedure answer stay valid.
    pub refresh: Duration,
    /// The longest one catalog call may take, retries included, before the pre-flight gives up on it
    /// for now (the dossier goes on unchecked).
    pub call_timeout: Duration,
    /// How long after a failed call the pre-flight asks the portal again. One failure pauses every
    /// lookup, so that an outage costs one timeout, not one per procedure code.
    pub retry_after_failure: Duration,
}

struct Fetched<T> {
    value: T,
    at: Instant,
}

#[derive(Default)]
struct CatalogState {
    /// The portal's unit codes; `None` until loaded (or when the portal lists none).
    units: Option<Fetched<HashSet<String>>>,
    /// Procedure code → known, as `LayThuTuc` last answered.
    procedures: HashMap<String, Fetched<bool>>,
    /// When the last catalog call failed: no call is made for `retry_after_failure` after it.
    failed_at: Option<Instant>,
}

impl CatalogState {
    fn paused(&self, now: Instant, options: &CatalogOptions) -> bool {
        self.failed_at
            .is_some_and(|at| now.duration_since(at) < options.retry_after_failure)
    }
}

/// The portal's catalogs as the pre-flight sees them, shared by the ingest path and the maintenance loop.
pub struct PortalCatalog {
    portal: Arc<PortalClient>,
    options: CatalogOptions,
    state: Mutex<CatalogState>,
}

impl PortalCatalog {
    pub fn new(portal: Arc<PortalClient>, options: CatalogOptions) -> PortalCatalog {
        PortalCatalog {
            portal,
            options,
            state: Mutex::new(CatalogState::default()),
        }
    }

    /// Loads the unit catalog when it is missing or older than the refresh interval. Returns true when
    /// the set of known units changed (held-back dossiers are then worth normalizing again).
    pub async fn refresh_units(&self) -> bool {
        let now = Instant::now();
        {
            let state = self.state.lock().await;
            let fresh = state
                .units
                .as_ref()
                .is_some_and(|units| now.duration_since(units.at) < self.options.refresh);
            if fresh || state.paused(now, &self.options) {
                return false;
            }
        }
        let answer =
            tokio::time::timeout(self.options.call_timeout, self.portal.unit_catalog()).await;
        let mut state = self.state.lock().await;
        match answer {
            Ok(Ok(items)) => {
                let units: HashSet<String> = items
                    .into_iter()
                    .map(|item| item.ma_don_vi.trim().to_owned())
                    .filter(|code| !code.is_empty())
                    .collect();
                state.failed_at = None;
                if units.is_empty() {
                    // Cached like any other answer: asked again once per refresh interval, one warning
                    // each time, never at every poll.
                    tracing::warn!(
                        "the portal's unit catalog (LayDanhMucCoQuan) is empty; units are not pre-checked"
                    );
                    let changed = state
                        .units
                        .as_ref()
                        .is_some_and(|known| !known.value.is_empty());
                    state.units = Some(Fetched {
                        value: units,
                        at: now,
                    });
                    return changed;
                }
                let changed = state
                    .units
                    .as_ref()
                    .is_none_or(|known| known.value != units);
                if changed {
                    tracing::info!(units = units.len(), "loaded the portal's unit catalog");
                }
                state.units = Some(Fetched {
                    value: units,
                    at: now,
                });
                changed
            }
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "cannot load the portal's unit catalog; units are not pre-checked for now");
                state.failed_at = Some(now);
                false
            }
            Err(_) => {
                tracing::warn!(
                    timeout_seconds = self.options.call_timeout.as_secs(),
                    "the portal's unit catalog did not answer in time; units are not pre-checked for now"
                );
                state.failed_at = Some(now);
                false
            }
        }
    }

    /// Forgets every cached answer, so that the next pre-flight asks the portal again (an operator's
    /// reload: the portal may have added what was missing).
    pub async fn forget(&self) {
        *self.state.lock().await = CatalogState::default();
    }

    /// Applies the pre-flight to a page of normalized records: looks up each procedure code not in the
    /// cache (once per code), then holds back what the portal does not know.
    pub async fn screen(&self, records: &mut [&mut Normalized]) {
        self.refresh_units().await;
        let wanted: HashSet<String> = records
            .iter()
            .filter_map(|record| match &record.outcome {
                Outcome::Dossier(dossier) => Some(dossier.dossier.ma_tthc.clone()),
                _ => None,
            })
            .collect();
        for code in wanted {
            self.look_up_procedure(&code).await;
        }
        let state = self.state.lock().await;
        for record in records.iter_mut() {
            let Outcome::Dossier(dossier) = &record.outcome else {
                continue;
            };
            let unit = match &state.units {
                // No catalog, or an empty one: the portal knows every well-formed code, as far as we know.
                None => Known::Unchecked,
                Some(units) if units.value.is_empty() => Known::Unchecked,
                Some(units) if units.value.contains(&dossier.dossier.don_vi_xu_ly) => Known::Yes,
                Some(_) => Known::No,
            };
            let procedure = match state.procedures.get(&dossier.dossier.ma_tthc) {
                None => Known::Unchecked,
                Some(answer) if answer.value => Known::Yes,
                Some(_) => Known::No,
            };
            preflight(record, unit, procedure);
        }
    }

    async fn look_up_procedure(&self, code: &str) {
        let now = Instant::now();
        {
            let state = self.state.lock().await;
            let fresh = state
                .procedures
                .get(code)
                .is_some_and(|answer| now.duration_since(answer.at) < self.options.refresh);
            if fresh || state.paused(now, &self.options) {
                return;
            }
        }
        let answer =
            tokio::time::timeout(self.options.call_timeout, self.portal.procedure_known(code))
                .await;
        let mut state = self.state.lock().await;
        match answer {
            Ok(Ok(known)) => {
                if !known {
                    tracing::info!(
                        procedure = code,
                        "the portal does not know this procedure code"
                    );
                }
                state.failed_at = None;
                state.procedures.insert(
                    code.to_owned(),
                    Fetched {
                        value: known,
                        at: now,
                    },
                );
            }
            Ok(Err(error)) => {
                tracing::warn!(procedure = code, error = %error, "cannot look up a procedure code; it is not pre-checked for now");
                state.failed_at = Some(now);
            }
            Err(_) => {
                tracing::warn!(
                    procedure = code,
                    "a procedure lookup did not answer in time; it is not pre-checked for now"
                );
                state.failed_at = Some(now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalize::{MappingTables, normalize_bytes};
    use crate::sim::generator::{GeneratorConfig, generate};

    fn sendable() -> Normalized {
        let now = jiff::Timestamp::now();
        let config = GeneratorConfig {
            dossiers: 20,
            units: 3,
            bad_share: 0.0,
            cancelled_share: 0.0,
            deleted_share: 0.0,
            ..GeneratorConfig::default()
        };
        generate(&config, now)
            .dossiers
            .iter()
            .map(|dossier| {
                normalize_bytes(
                    dossier.record.to_string().as_bytes(),
                    &MappingTables::default(),
                    now,
                )
            })
            .find(|normalized| matches!(normalized.outcome, Outcome::Dossier(_)))
            .expect("a sendable generated dossier")
    }

    fn codes_of(normalized: &Normalized) -> Vec<&'static str> {
        match &normalized.outcome {
            Outcome::Rejected(findings) => findings.iter().map(|finding| finding.code).collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn known_or_unchecked_codes_pass() {
        for (unit, procedure) in [
            (Known::Yes, Known::Yes),
            (Known::Unchecked, Known::Yes),
            (Known::Yes, Known::Unchecked),
            (Known::Unchecked, Known::Unchecked),
        ] {
            let mut normalized = sendable();
            preflight(&mut normalized, unit, procedure);
            assert!(matches!(normalized.outcome, Outcome::Dossier(_)));
        }
    }

    #[test]
    fn unknown_codes_hold_the_dossier_back_naming_each() {
        let mut normalized = sendable();
        let Outcome::Dossier(dossier) = &normalized.outcome else {
            unreachable!()
        };
        let unit = dossier.dossier.don_vi_xu_ly.clone();
        preflight(&mut normalized, Known::No, Known::Yes);
        assert_eq!(codes_of(&normalized), [codes::UNIT_UNKNOWN_TO_PORTAL]);
        let Outcome::Rejected(findings) = &normalized.outcome else {
            unreachable!()
        };
        assert_eq!(findings[0].value.as_deref(), Some(unit.as_str()));
        assert_eq!(findings[0].field, "agency");

        let mut normalized = sendable();
        preflight(&mut normalized, Known::No, Known::No);
        assert_eq!(
            codes_of(&normalized),
            [
                codes::UNIT_UNKNOWN_TO_PORTAL,
                codes::PROCEDURE_UNKNOWN_TO_PORTAL
            ]
        );
    }

    #[test]
    fn a_record_already_held_keeps_its_own_reasons() {
        let mut normalized = sendable();
        normalized.outcome = Outcome::Rejected(vec![Finding {
            code: codes::INVALID_DATE,
            field: "acceptedDate".into(),
            detail: String::new(),
            value: None,
        }]);
        preflight(&mut normalized, Known::No, Known::No);
        assert_eq!(codes_of(&normalized), [codes::INVALID_DATE]);
    }
}
