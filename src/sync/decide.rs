//! The sync state machine's decisions, as pure functions: what a new source version does to a ledger row,
//! what a portal answer does to a sent dossier, and when a failed dossier is tried again.

use std::time::Duration;

/// Where a dossier stands with the portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DossierState {
    /// Waiting to be sent (again).
    Pending,
    /// Claimed by a pusher (with a lease).
    InFlight,
    /// The portal holds the current payload.
    Accepted,
    /// Held back by tthc-sync: normalization or the catalog pre-flight rejected it.
    Held,
    /// Refused by the portal for this payload (codes 2, 5): not retried until the payload changes.
    Refused,
    /// Cancelled or deleted at the source: never sent.
    Skipped,
}

impl DossierState {
    pub const ALL: [DossierState; 6] = [
        DossierState::Pending,
        DossierState::InFlight,
        DossierState::Accepted,
        DossierState::Held,
        DossierState::Refused,
        DossierState::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DossierState::Pending => "pending",
            DossierState::InFlight => "in_flight",
            DossierState::Accepted => "accepted",
            DossierState::Held => "held",
            DossierState::Refused => "refused",
            DossierState::Skipped => "skipped",
        }
    }

    pub fn parse(text: &str) -> Option<DossierState> {
        DossierState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
    }
}

/// What the ledger already knows of a dossier when a new source version arrives.
#[derive(Debug, Clone)]
pub struct LedgerView {
    pub raw_hash: String,
    pub state: DossierState,
    pub payload_hash: Option<String>,
    pub accepted_hash: Option<String>,
}

/// What normalizing the new version gave, reduced to what the decision needs.
#[derive(Debug, Clone, Copy)]
pub enum NewVersion<'a> {
    Sendable { payload_hash: &'a str },
    Held,
    Skipped,
}

/// What to do with the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestAction {
    /// The same record again (a duplicate row, a lookback re-read): write nothing.
    Unchanged,
    /// Store the new record but keep the delivery state: the payload the portal has or is about to get
    /// (or has refused) did not change.
    KeepState,
    /// Store the new record with this state, resetting attempts (a new payload is a new chance).
    Set(DossierState),
}

/// Decides what a new source version does to a ledger row.
pub fn on_new_version(
    existing: Option<&LedgerView>,
    raw_hash: &str,
    new: NewVersion<'_>,
) -> IngestAction {
    let Some(existing) = existing else {
        return IngestAction::Set(match new {
            NewVersion::Sendable { .. } => DossierState::Pending,
            NewVersion::Held => DossierState::Held,
            NewVersion::Skipped => DossierState::Skipped,
        });
    };
    if existing.raw_hash == raw_hash {
        return IngestAction::Unchanged;
    }
    on_new_outcome(existing, new)
}

/// Decides what a new normalization outcome does to an existing row: a new source version, or the same
/// record normalized again under changed tables or catalogs.
pub fn on_new_outcome(existing: &LedgerView, new: NewVersion<'_>) -> IngestAction {
    match new {
        NewVersion::Sendable { payload_hash } => {
            if existing.accepted_hash.as_deref() == Some(payload_hash) {
                // The portal already holds exactly this content: nothing to send.
                IngestAction::Set(DossierState::Accepted)
            } else if existing.payload_hash.as_deref() == Some(payload_hash)
                && matches!(
                    existing.state,
                    DossierState::Pending | DossierState::InFlight | DossierState::Refused
                )
            {
                IngestAction::KeepState
            } else {
                IngestAction::Set(DossierState::Pending)
            }
        }
        NewVersion::Held => IngestAction::Set(DossierState::Held),
        NewVersion::Skipped => IngestAction::Set(DossierState::Skipped),
    }
}

/// The portal's verdict on one dossier of a `DongBoHoSoMC` call, as the pusher acts on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortalVerdict {
    Stored,
    /// Code 3: it exists, send it as an update.
    AlreadyExists,
    /// Code 4: it does not exist, send it as a create.
    DoesNotExist,
    /// Codes 2 and 5: permanent until the payload (or the mapping) changes.
    Refused {
        code: i64,
        message: String,
    },
    /// Anything else: try again later.
    Transient {
        message: String,
    },
}

/// Reads a per-dossier portal code.
pub fn verdict(code: i64, message: Option<&str>) -> PortalVerdict {
    let message = message.unwrap_or_default().to_string();
    match code {
        0 => PortalVerdict::Stored,
        3 => PortalVerdict::AlreadyExists,
        4 => PortalVerdict::DoesNotExist,
        2 | 5 => PortalVerdict::Refused { code, message },
        _ => PortalVerdict::Transient {
            message: format!("portal code {code}: {message}"),
        },
    }
}

/// When a dossier whose delivery failed `attempts` times is tried again: exponential from `base`, capped,
/// with a deterministic spread of up to a quarter so that a failed batch does not come back as one block.
pub fn retry_delay(attempts: u32, base: Duration, cap: Duration, spread_seed: u64) -> Duration {
    let exponent = attempts.saturating_sub(1).min(20);
    let raw = base.saturating_mul(1u32 << exponent).min(cap);
    let spread = raw.as_millis() as u64 / 4;
    let jitter = if spread == 0 { 0 } else { spread_seed % spread };
    raw + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: DossierState, payload: Option<&str>, accepted: Option<&str>) -> LedgerView {
        LedgerView {
            raw_hash: "r1".into(),
            state,
            payload_hash: payload.map(Into::into),
            accepted_hash: accepted.map(Into::into),
        }
    }

    #[test]
    fn a_new_dossier_is_pending_held_or_skipped() {
        let sendable = NewVersion::Sendable { payload_hash: "p1" };
        assert_eq!(
            on_new_version(None, "r1", sendable),
            IngestAction::Set(DossierState::Pending)
        );
        assert_eq!(
            on_new_version(None, "r1", NewVersion::Held),
            IngestAction::Set(DossierState::Held)
        );
        assert_eq!(
            on_new_version(None, "r1", NewVersion::Skipped),
            IngestAction::Set(DossierState::Skipped)
        );
    }

    #[test]
    fn the_same_record_again_writes_nothing() {
        let row = view(DossierState::Accepted, Some("p1"), Some("p1"));
        let sendable = NewVersion::Sendable { payload_hash: "p2" };
        assert_eq!(
            on_new_version(Some(&row), "r1", sendable),
            IngestAction::Unchanged
        );
    }

    #[test]
    fn a_changed_record_with_the_accepted_payload_is_not_sent_again() {
        let row = view(DossierState::Accepted, Some("p1"), Some("p1"));
        let sendable = NewVersion::Sendable { payload_hash: "p1" };
        assert_eq!(
            on_new_version(Some(&row), "r2", sendable),
            IngestAction::Set(DossierState::Accepted)
        );
    }

    #[test]
    fn a_changed_payload_is_sent_again() {
        let row = view(DossierState::Accepted, Some("p1"), Some("p1"));
        let sendable = NewVersion::Sendable { payload_hash: "p2" };
        assert_eq!(
            on_new_version(Some(&row), "r2", sendable),
            IngestAction::Set(DossierState::Pending)
        );
    }

    #[test]
    fn a_refused_payload_stays_refused_until_it_changes() {
        let row = view(DossierState::Refused, Some("p1"), None);
        let same = NewVersion::Sendable { payload_hash: "p1" };
        assert_eq!(
            on_new_version(Some(&row), "r2", same),
            IngestAction::KeepState
        );
        let changed = NewVersion::Sendable { payload_hash: "p2" };
        assert_eq!(
            on_new_version(Some(&row), "r2", changed),
            IngestAction::Set(DossierState::Pending)
        );
    }

    #[test]
    fn a_held_dossier_normalized_again_becomes_pending_or_stays_held() {
        let held = view(DossierState::Held, None, None);
        assert_eq!(
            on_new_outcome(&held, NewVersion::Sendable { payload_hash: "p1" }),
            IngestAction::Set(DossierState::Pending)
        );
        assert_eq!(
            on_new_outcome(&held, NewVersion::Held),
            IngestAction::Set(DossierState::Held)
        );
        // Held after the portal took an earlier version, and now the same content again: nothing to send.
        let held_after_accept = view(DossierState::Held, None, Some("p1"));
        assert_eq!(
            on_new_outcome(
                &held_after_accept,
                NewVersion::Sendable { payload_hash: "p1" }
            ),
            IngestAction::Set(DossierState::Accepted)
        );
    }

    #[test]
    fn portal_codes_become_verdicts() {
        assert_eq!(verdict(0, None), PortalVerdict::Stored);
        assert_eq!(verdict(3, None), PortalVerdict::AlreadyExists);
        assert_eq!(verdict(4, None), PortalVerdict::DoesNotExist);
        assert!(matches!(
            verdict(5, Some("x")),
            PortalVerdict::Refused { code: 5, .. }
        ));
        assert!(matches!(verdict(99, None), PortalVerdict::Transient { .. }));
    }

    #[test]
    fn retry_delay_grows_and_is_capped() {
        let base = Duration::from_secs(1);
        let cap = Duration::from_secs(60);
        assert_eq!(retry_delay(1, base, cap, 0), Duration::from_secs(1));
        assert_eq!(retry_delay(3, base, cap, 0), Duration::from_secs(4));
        assert_eq!(retry_delay(30, base, cap, 0), Duration::from_secs(60));
        assert!(retry_delay(30, base, cap, 7_000) <= Duration::from_secs(75));
    }
}
