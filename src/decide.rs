//! The sync state machine's decisions, as pure functions: what a new source version does to a ledger row,
//! what a claim, a lapsed lease and a portal answer do to a dossier or a progress entry, and when a failed
//! delivery is tried again. The stores load the rows, call these, and write back what they return: no guard
//! of the delivery rules is written in SQL, so the two backends cannot drift apart.
//!
//! The rules (portal-api.md 2.1 and 2.2):
//! - **One call per dossier in flight.** A claim opens a *flight* (claim id, owner, lease, the payload hash
//!   sent). While a flight's lease runs, the row is not claimed again; a new source version waits behind it.
//! - **Answers land only on their own flight.** Another claim's (a lapsed owner's) late answer never
//!   clears or changes the current flight; it is recorded for what it says about the portal.
//! - **Accepted means the portal's last received version is the current payload**, and nothing is in
//!   flight. `accepted_hash` is the portal's last received version when the ledger knows it, and `None` when
//!   a call whose fate is unknown may have landed after it.

use std::time::Duration;

/// Unix milliseconds, the ledger's one representation of time.
pub type Millis = i64;

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
    /// The stored version's `updatedDate`, when it parsed.
    pub source_updated_at: Option<Millis>,
    pub state: DossierState,
    pub payload_hash: Option<String>,
    /// The portal's last received version, when the ledger knows it.
    pub accepted_hash: Option<String>,
    /// A call for this dossier is in flight (or lapsed and not yet settled).
    pub in_flight: bool,
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
    /// An older version than the one stored (or another one with the same `updatedDate`): write nothing,
    /// versions never go backwards.
    Stale,
    /// Store the new record but keep the delivery state: the payload the portal has or is about to get
    /// (or has refused) did not change.
    KeepState,
    /// Store the new record with this state, resetting attempts (a new payload is a new chance). Never
    /// [`DossierState::InFlight`]: a flight is opened by a claim only, and a new version never touches it.
    Set(DossierState),
}

impl IngestAction {
    /// Whether the new record is written at all.
    pub fn writes(self) -> bool {
        !matches!(self, IngestAction::Unchanged | IngestAction::Stale)
    }
}

/// Decides what a new source version does to a ledger row.
pub fn on_new_version(
    existing: Option<&LedgerView>,
    raw_hash: &str,
    updated_at: Option<Millis>,
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
    // Versions never go backwards: a resync, a reconciliation fetch or a lookback re-read may bring an
    // older version after a newer one was written. On a tie the stored version stays.
    if let (Some(stored), Some(incoming)) = (existing.source_updated_at, updated_at)
        && incoming <= stored
    {
        return IngestAction::Stale;
    }
    on_new_outcome(existing, new)
}

/// Decides what a new normalization outcome does to an existing row: a new source version, or the same
/// record normalized again under changed tables or catalogs.
pub fn on_new_outcome(existing: &LedgerView, new: NewVersion<'_>) -> IngestAction {
    match new {
        NewVersion::Sendable { payload_hash } => {
            if !existing.in_flight && existing.accepted_hash.as_deref() == Some(payload_hash) {
                // The portal's last received version is exactly this content and no call is in flight
                // that could land after it: nothing to send.
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

/// A call in flight for one dossier or progress entry: which claim, whose, until when, and which payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flight {
    /// Unique per claim: answers are matched to it, never to the owner alone.
    pub claim: String,
    pub owner: String,
    pub hash: String,
    pub lease_expires_at: Millis,
}

/// A dossier's delivery columns, as the decisions read and write them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub state: DossierState,
    /// The current payload's hash (`None` for a held or skipped version).
    pub payload_hash: Option<String>,
    pub reason_code: Option<String>,
    pub reason_detail: Option<String>,
    /// The portal holds some version of this dossier (updates, not creates).
    pub portal_has: bool,
    /// The portal's last received version, when known.
    pub accepted_hash: Option<String>,
    pub accepted_at: Option<Millis>,
    pub attempts: u32,
    pub next_attempt_at: Option<Millis>,
    pub last_error: Option<String>,
    pub flight: Option<Flight>,
    /// A late answer of another call arrived during the current flight: the two may have landed in either
    /// order, so the current payload is sent once more when the flight settles.
    pub recheck: bool,
}

/// What the portal said of one dossier (or progress entry) of a call, as the ledger records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Stored: the portal now holds the version sent (per-item code 0).
    Accepted,
    /// Codes 2 and 5: permanent until the payload (or the mapping) changes; nothing stored.
    Refused { code: i64, message: String },
    /// Try again at `next_attempt_at`. `maybe_stored`: the portal may hold the version sent (a call that
    /// timed out, an entry missing from the answer); false when it surely does not (codes 3 and 4).
    Retry {
        error: String,
        next_attempt_at: Millis,
        maybe_stored: bool,
    },
}

impl DeliveryRow {
    /// Whether a pusher may claim this row now: a pending row whose earlier flight (if any) has lapsed, or a
    /// row whose own flight lapsed.
    pub fn claimable(&self, now: Millis) -> bool {
        let flight_lapsed = self
            .flight
            .as_ref()
            .is_none_or(|flight| flight.lease_expires_at < now);
        match self.state {
            DossierState::Pending => {
                flight_lapsed && self.next_attempt_at.is_none_or(|due| due <= now)
            }
            DossierState::InFlight => flight_lapsed,
            _ => false,
        }
    }

    /// Forgets a flight whose owner is gone (its lease lapsed, or the owner restarted): its call may still
    /// land on the portal, so the portal's last received version is no longer known unless it was that
    /// payload.
    fn forget_flight(&mut self) {
        forget_flight(&mut self.flight, &mut self.accepted_hash);
    }
}

/// Drops a flight whose owner is gone (lapsed lease, restart). Its call may still land on the portal, so
/// what the portal last received (`last_received`) is no longer known, unless it was that payload.
fn forget_flight(flight: &mut Option<Flight>, last_received: &mut Option<String>) {
    if let Some(flight) = flight.take()
        && last_received.as_deref() != Some(flight.hash.as_str())
    {
        *last_received = None;
    }
}

/// A claim of a claimable row: a new flight carrying the current payload.
pub fn on_claim(
    mut row: DeliveryRow,
    claim: &str,
    owner: &str,
    lease_until: Millis,
) -> DeliveryRow {
    row.forget_flight();
    row.flight = Some(Flight {
        claim: claim.to_owned(),
        owner: owner.to_owned(),
        hash: row.payload_hash.clone().unwrap_or_default(),
        lease_expires_at: lease_until,
    });
    row.state = DossierState::InFlight;
    row
}

/// The owner of a flight is gone for good (it restarted): the row goes back to the pool now.
pub fn on_release(mut row: DeliveryRow, now: Millis) -> DeliveryRow {
    row.forget_flight();
    if row.state == DossierState::InFlight {
        row.state = DossierState::Pending;
        row.next_attempt_at = Some(now);
    }
    row
}

/// What an answer for the call `claim`, which carried `sent_hash`, does to the row. `None`: nothing to
/// write.
pub fn on_answer(
    row: &DeliveryRow,
    claim: &str,
    sent_hash: &str,
    answer: &Answer,
    now: Millis,
) -> Option<DeliveryRow> {
    let ours = row
        .flight
        .as_ref()
        .is_some_and(|flight| flight.claim == claim);
    let mut next = row.clone();
    if !ours {
        return on_late_answer(next, sent_hash, answer, now);
    }
    next.flight = None;
    next.attempts = next.attempts.saturating_add(1);
    // The row still waits for this payload only while it is in flight with it; a newer version (pending),
    // a held or skipped one took its place otherwise.
    let current =
        next.state == DossierState::InFlight && next.payload_hash.as_deref() == Some(sent_hash);
    let waiting = matches!(next.state, DossierState::InFlight | DossierState::Pending);
    match answer {
        Answer::Accepted => {
            next.portal_has = true;
            // After a late answer of another call during this flight, which of the two the portal
            // received last is unknown.
            next.accepted_hash = (!next.recheck).then(|| sent_hash.to_owned());
            next.accepted_at = Some(now);
            next.last_error = None;
            if current && !next.recheck {
                next.state = DossierState::Accepted;
                next.reason_code = None;
                next.reason_detail = None;
            } else if waiting {
                // A newer payload waits, or another call may have landed after this one: send the current
                // payload (again) now.
                next.state = DossierState::Pending;
                next.next_attempt_at = Some(now);
                next.attempts = 0;
            }
            next.recheck = false;
        }
        Answer::Refused { code, message } => {
            if current {
                next.state = DossierState::Refused;
                next.reason_code = Some(format!("portal_{code}"));
                next.reason_detail = Some(message.clone());
                next.last_error = None;
            } else if waiting {
                next.state = DossierState::Pending;
                next.next_attempt_at = Some(now);
                next.attempts = 0;
            }
            next.recheck = false;
        }
        Answer::Retry {
            error,
            next_attempt_at,
            maybe_stored,
        } => {
            if *maybe_stored && next.accepted_hash.as_deref() != Some(sent_hash) {
                next.accepted_hash = None;
            }
            if waiting {
                next.state = DossierState::Pending;
                next.next_attempt_at = Some(*next_attempt_at);
                next.last_error = Some(error.clone());
            }
        }
    }
    Some(next)
}

/// An answer for a call that is not the row's current flight: a lapsed owner's late answer, or one for a
/// row that was reset meanwhile. It changes no flight; it says the portal may hold `sent_hash`.
fn on_late_answer(
    mut row: DeliveryRow,
    sent_hash: &str,
    answer: &Answer,
    now: Millis,
) -> Option<DeliveryRow> {
    let maybe_stored = match answer {
        Answer::Accepted => {
            row.portal_has = true;
            true
        }
        Answer::Refused { .. } => false,
        Answer::Retry { maybe_stored, .. } => *maybe_stored,
    };
    if !maybe_stored {
        return None;
    }
    let before = row.clone();
    if let Some(flight) = &row.flight {
        // Another call is in flight: which of the two lands last is unknown.
        if flight.hash != sent_hash {
            row.recheck = true;
            row.accepted_hash = None;
        }
    } else if row.accepted_hash.as_deref() != Some(sent_hash) {
        row.accepted_hash = None;
        if row.state == DossierState::Accepted {
            // The portal may now hold the older version: send the current one again.
            row.state = DossierState::Pending;
            row.next_attempt_at = Some(now);
            row.attempts = 0;
        }
    }
    (row != before).then_some(row)
}

/// A progress entry's delivery columns. States: `waiting` (for its dossier to reach the portal),
/// `pending`, `in_flight`, `sent`, `refused`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressRow {
    pub state: ProgressState,
    pub payload_hash: String,
    /// The portal's last received version of the entry, when known.
    pub sent_hash: Option<String>,
    pub attempts: u32,
    pub next_attempt_at: Millis,
    pub last_error: Option<String>,
    pub flight: Option<Flight>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProgressState {
    Waiting,
    Pending,
    InFlight,
    Sent,
    Refused,
}

impl ProgressState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProgressState::Waiting => "waiting",
            ProgressState::Pending => "pending",
            ProgressState::InFlight => "in_flight",
            ProgressState::Sent => "sent",
            ProgressState::Refused => "refused",
        }
    }

    pub fn parse(text: &str) -> ProgressState {
        match text {
            "waiting" => ProgressState::Waiting,
            "in_flight" => ProgressState::InFlight,
            "sent" => ProgressState::Sent,
            "refused" => ProgressState::Refused,
            // An unknown value is looked at again rather than forgotten.
            _ => ProgressState::Pending,
        }
    }

    /// Still to reach the portal.
    pub fn unsettled(self) -> bool {
        matches!(
            self,
            ProgressState::Waiting | ProgressState::Pending | ProgressState::InFlight
        )
    }
}

/// A claim of a progress entry: a new flight with its current payload.
pub fn on_progress_claim(
    mut row: ProgressRow,
    claim: &str,
    owner: &str,
    lease_until: Millis,
) -> ProgressRow {
    forget_flight(&mut row.flight, &mut row.sent_hash);
    row.flight = Some(Flight {
        claim: claim.to_owned(),
        owner: owner.to_owned(),
        hash: row.payload_hash.clone(),
        lease_expires_at: lease_until,
    });
    row.state = ProgressState::InFlight;
    row
}

/// The owner of a progress entry's flight restarted: the entry goes back to the pool now.
pub fn on_progress_release(mut row: ProgressRow, now: Millis) -> ProgressRow {
    forget_flight(&mut row.flight, &mut row.sent_hash);
    if row.state == ProgressState::InFlight {
        row.state = ProgressState::Pending;
        row.next_attempt_at = now;
    }
    row
}

/// What an answer for the progress call `claim` does to the entry; `None`: nothing to write.
pub fn on_progress_answer(
    row: &ProgressRow,
    claim: &str,
    sent_hash: &str,
    answer: &Answer,
    now: Millis,
) -> Option<ProgressRow> {
    let ours = row
        .flight
        .as_ref()
        .is_some_and(|flight| flight.claim == claim);
    let mut next = row.clone();
    if !ours {
        // A late answer: an entry the ledger holds as sent with another payload may have been overwritten
        // by the older one; send the current one again.
        let maybe_stored = match answer {
            Answer::Accepted => true,
            Answer::Refused { .. } => false,
            Answer::Retry { maybe_stored, .. } => *maybe_stored,
        };
        if maybe_stored && next.sent_hash.as_deref() != Some(sent_hash) {
            next.sent_hash = None;
            if next.state == ProgressState::Sent {
                next.state = ProgressState::Pending;
                next.next_attempt_at = now;
            }
        }
        return (next != *row).then_some(next);
    }
    next.flight = None;
    next.attempts = next.attempts.saturating_add(1);
    let current = next.state == ProgressState::InFlight && next.payload_hash == sent_hash;
    let in_flight = next.state == ProgressState::InFlight;
    match answer {
        Answer::Accepted => {
            next.sent_hash = Some(sent_hash.to_owned());
            next.last_error = None;
            if current {
                next.state = ProgressState::Sent;
            } else if in_flight {
                next.state = ProgressState::Pending;
                next.next_attempt_at = now;
            }
        }
        Answer::Refused { message, .. } => {
            next.last_error = Some(message.clone());
            if current {
                next.state = ProgressState::Refused;
            } else if in_flight {
                next.state = ProgressState::Pending;
                next.next_attempt_at = now;
            }
        }
        Answer::Retry {
            error,
            next_attempt_at,
            maybe_stored,
        } => {
            if *maybe_stored && next.sent_hash.as_deref() != Some(sent_hash) {
                next.sent_hash = None;
            }
            next.last_error = Some(error.clone());
            if in_flight {
                next.state = ProgressState::Pending;
                next.next_attempt_at = *next_attempt_at;
            }
        }
    }
    // An entry the ledger calls sent is one whose current payload the portal received last.
    if next.state == ProgressState::Sent && next.sent_hash.as_deref() != Some(&next.payload_hash) {
        next.state = ProgressState::Pending;
        next.next_attempt_at = now;
    }
    Some(next)
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
            source_updated_at: Some(1_000),
            state,
            payload_hash: payload.map(Into::into),
            accepted_hash: accepted.map(Into::into),
            in_flight: false,
        }
    }

    #[test]
    fn a_new_dossier_is_pending_held_or_skipped() {
        let sendable = NewVersion::Sendable { payload_hash: "p1" };
        assert_eq!(
            on_new_version(None, "r1", Some(2_000), sendable),
            IngestAction::Set(DossierState::Pending)
        );
        assert_eq!(
            on_new_version(None, "r1", Some(2_000), NewVersion::Held),
            IngestAction::Set(DossierState::Held)
        );
        assert_eq!(
            on_new_version(None, "r1", Some(2_000), NewVersion::Skipped),
            IngestAction::Set(DossierState::Skipped)
        );
    }

    #[test]
    fn the_same_record_again_writes_nothing() {
        let row = view(DossierState::Accepted, Some("p1"), Some("p1"));
        let sendable = NewVersion::Sendable { payload_hash: "p2" };
        assert_eq!(
            on_new_version(Some(&row), "r1", Some(2_000), sendable),
            IngestAction::Unchanged
        );
    }

    #[test]
    fn a_changed_record_with_the_accepted_payload_is_not_sent_again() {
        let row = view(DossierState::Accepted, Some("p1"), Some("p1"));
        let sendable = NewVersion::Sendable { payload_hash: "p1" };
        assert_eq!(
            on_new_version(Some(&row), "r2", Some(2_000), sendable),
            IngestAction::Set(DossierState::Accepted)
        );
    }

    #[test]
    fn a_changed_payload_is_sent_again() {
        let row = view(DossierState::Accepted, Some("p1"), Some("p1"));
        let sendable = NewVersion::Sendable { payload_hash: "p2" };
        assert_eq!(
            on_new_version(Some(&row), "r2", Some(2_000), sendable),
            IngestAction::Set(DossierState::Pending)
        );
    }

    #[test]
    fn a_refused_payload_stays_refused_until_it_changes() {
        let row = view(DossierState::Refused, Some("p1"), None);
        let same = NewVersion::Sendable { payload_hash: "p1" };
        assert_eq!(
            on_new_version(Some(&row), "r2", Some(2_000), same),
            IngestAction::KeepState
        );
        let changed = NewVersion::Sendable { payload_hash: "p2" };
        assert_eq!(
            on_new_version(Some(&row), "r2", Some(2_000), changed),
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

    #[test]
    fn an_older_or_tied_version_never_replaces_the_stored_one() {
        let row = view(DossierState::Accepted, Some("p1"), Some("p1"));
        let sendable = NewVersion::Sendable { payload_hash: "p0" };
        assert_eq!(
            on_new_version(Some(&row), "r0", Some(500), sendable),
            IngestAction::Stale
        );
        assert_eq!(
            on_new_version(Some(&row), "r0", Some(1_000), sendable),
            IngestAction::Stale
        );
        assert_eq!(
            on_new_version(Some(&row), "r0", Some(1_001), sendable),
            IngestAction::Set(DossierState::Pending)
        );
    }

    #[test]
    fn no_short_circuit_to_accepted_while_a_call_is_in_flight() {
        let mut row = view(DossierState::Pending, Some("p2"), Some("p1"));
        row.in_flight = true;
        let back_to_p1 = NewVersion::Sendable { payload_hash: "p1" };
        assert_eq!(
            on_new_version(Some(&row), "r3", Some(2_000), back_to_p1),
            IngestAction::Set(DossierState::Pending)
        );
    }

    fn pending(payload: &str) -> DeliveryRow {
        DeliveryRow {
            state: DossierState::Pending,
            payload_hash: Some(payload.into()),
            reason_code: None,
            reason_detail: None,
            portal_has: false,
            accepted_hash: None,
            accepted_at: None,
            attempts: 0,
            next_attempt_at: Some(0),
            last_error: None,
            flight: None,
            recheck: false,
        }
    }

    fn retry(maybe_stored: bool) -> Answer {
        Answer::Retry {
            error: "timeout".into(),
            next_attempt_at: 50,
            maybe_stored,
        }
    }

    #[test]
    fn a_claimed_row_is_not_claimable_until_its_lease_lapses() {
        let row = on_claim(pending("p1"), "c1", "a", 100);
        assert_eq!(row.state, DossierState::InFlight);
        assert!(!row.claimable(100));
        assert!(row.claimable(101));
    }

    #[test]
    fn the_owners_acceptance_of_the_current_payload_accepts() {
        let row = on_claim(pending("p1"), "c1", "a", 100);
        let done = on_answer(&row, "c1", "p1", &Answer::Accepted, 10).unwrap();
        assert_eq!(done.state, DossierState::Accepted);
        assert_eq!(done.accepted_hash.as_deref(), Some("p1"));
        assert!(done.flight.is_none() && done.portal_has);
    }

    #[test]
    fn a_new_version_waits_behind_the_flight_and_goes_out_after_it() {
        let mut row = on_claim(pending("p1"), "c1", "a", 100);
        // A new version arrives while the call is in flight: pending, but not claimable.
        row.state = DossierState::Pending;
        row.payload_hash = Some("p2".into());
        assert!(!row.claimable(10));
        let done = on_answer(&row, "c1", "p1", &Answer::Accepted, 10).unwrap();
        assert_eq!(done.state, DossierState::Pending);
        assert_eq!(done.accepted_hash.as_deref(), Some("p1"));
        assert!(done.claimable(10));
    }

    #[test]
    fn a_lapsed_owners_late_answer_never_touches_the_new_flight() {
        let first = on_claim(pending("p1"), "c1", "a", 100);
        let mut row = first.clone();
        row.payload_hash = Some("p2".into());
        row.state = DossierState::Pending;
        let second = on_claim(row, "c2", "b", 300);
        let late = on_answer(&second, "c1", "p1", &Answer::Accepted, 200).unwrap();
        assert_eq!(late.flight, second.flight);
        assert!(late.recheck, "the two calls may land in either order");
        // The new owner's acceptance then sends the current payload once more before calling it accepted.
        let answered = on_answer(&late, "c2", "p2", &Answer::Accepted, 210).unwrap();
        assert_eq!(answered.state, DossierState::Pending);
        let again = on_claim(answered, "c3", "b", 400);
        let done = on_answer(&again, "c3", "p2", &Answer::Accepted, 220).unwrap();
        assert_eq!(done.state, DossierState::Accepted);
    }

    #[test]
    fn a_late_acceptance_of_an_older_payload_reopens_an_accepted_row() {
        let row = on_claim(pending("p2"), "c2", "b", 300);
        let accepted = on_answer(&row, "c2", "p2", &Answer::Accepted, 10).unwrap();
        let late = on_answer(&accepted, "c1", "p1", &Answer::Accepted, 20).unwrap();
        assert_eq!(late.state, DossierState::Pending);
        assert_eq!(late.accepted_hash, None);
        // A late refusal says nothing about what the portal holds.
        let refused = Answer::Refused {
            code: 2,
            message: "x".into(),
        };
        assert_eq!(on_answer(&accepted, "c1", "p1", &refused, 20), None);
        assert_eq!(on_answer(&accepted, "c1", "p1", &retry(false), 20), None);
    }

    #[test]
    fn an_unknown_fate_forgets_what_the_portal_holds() {
        let mut row = pending("p2");
        row.accepted_hash = Some("p1".into());
        row.portal_has = true;
        let row = on_claim(row, "c1", "a", 100);
        let failed = on_answer(&row, "c1", "p2", &retry(true), 10).unwrap();
        assert_eq!(failed.state, DossierState::Pending);
        assert_eq!(failed.accepted_hash, None);
        assert_eq!(failed.next_attempt_at, Some(50));
        let view = LedgerView {
            raw_hash: "r".into(),
            source_updated_at: None,
            state: failed.state,
            payload_hash: failed.payload_hash.clone(),
            accepted_hash: failed.accepted_hash.clone(),
            in_flight: false,
        };
        // Going back to p1 is not "already on the portal": p2 may have landed.
        assert_eq!(
            on_new_outcome(&view, NewVersion::Sendable { payload_hash: "p1" }),
            IngestAction::Set(DossierState::Pending)
        );
    }

    #[test]
    fn a_release_after_a_restart_returns_the_row_and_forgets_the_flight() {
        let row = on_claim(pending("p1"), "c1", "a", 100);
        let released = on_release(row, 5);
        assert_eq!(released.state, DossierState::Pending);
        assert!(released.flight.is_none() && released.claimable(5));
    }

    #[test]
    fn progress_follows_the_same_rules() {
        let entry = ProgressRow {
            state: ProgressState::Pending,
            payload_hash: "e1".into(),
            sent_hash: None,
            attempts: 0,
            next_attempt_at: 0,
            last_error: None,
            flight: None,
        };
        let claimed = on_progress_claim(entry, "c1", "a", 100);
        let sent = on_progress_answer(&claimed, "c1", "e1", &Answer::Accepted, 5).unwrap();
        assert_eq!(sent.state, ProgressState::Sent);
        // A lapsed owner's late answer for an older payload reopens it.
        let late = on_progress_answer(&sent, "c0", "e0", &Answer::Accepted, 6).unwrap();
        assert_eq!(late.state, ProgressState::Pending);
        // Its late answer for the same payload changes nothing.
        assert_eq!(
            on_progress_answer(&sent, "c0", "e1", &Answer::Accepted, 6),
            None
        );
    }
}
