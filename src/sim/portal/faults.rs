//! Transport faults the simulated portal injects (portal-api.md section 2.1, "Transport"), and when each
//! one happens relative to processing.
//!
//! A fault *before processing* means the request had no effect: nothing was stored, and the client may
//! simply send it again. A fault *after processing* means the request was processed and its data stored,
//! but the client cannot know: it must send again, and re-sending must not count a dossier twice.
//!
//! | fault | when | what the client sees |
//! | --- | --- | --- |
//! | outage | before | HTTP 503 on every call while the switch is on |
//! | too many requests | before | HTTP 429 with `Retry-After: {seconds}` |
//! | server error | before | HTTP 500, 502, 503 or 504 (one of the four, evenly) |
//! | not JSON | before | HTTP 200 with an HTML gateway page instead of JSON |
//! | timeout before processing | before | nothing for `timeout_delay`, then the connection drops |
//! | timeout after processing | after | nothing for `timeout_delay`, then the connection drops |
//! | cut body | after | HTTP 200 whose JSON body stops half-way |
//! | slow | after | the full, correct answer, `slow_delay` late |
//! | late store | at the end | nothing for `late_delay`, then the request is processed and answered: a batch whose client gave up lands after later calls |
//! | late answer | before the wait | processed at once, answered `late_delay` late (past the client's timeout or lease when set so) |
//!
//! Answer faults (portal-api.md 2.1, 2.2) spoil the `result` of a processed `DongBoHoSoMC` or
//! `CapNhatTienDoHoSoMC` call without touching what was stored. Each is drawn on its own, so one answer
//! may carry several:
//!
//! | answer fault | what the client sees |
//! | --- | --- |
//! | shuffled | the `result` entries in another order than the items sent |
//! | unknown entry | one more entry, code 0, for a `MaHoSo` that was not sent (nothing stored for it) |
//! | dropped entry | one item's entry is missing (what that item did, storing included, stands) |
//! | duplicated entry | one item's entry appears twice |

use std::time::Duration;

use rand::RngExt;

use crate::sim::FaultLevel;

/// How often each transport fault happens, per call (`/auth` and `/integration`; never `/_sim/stats`).
///
/// Rates are probabilities in `0.0..=1.0`, drawn once per call in the order of the fields below; if they
/// add up to more than 1, the later ones are starved.
#[derive(Debug, Clone, PartialEq)]
pub struct PortalFaults {
    /// Every call answers HTTP 503 ("portal down"), before processing.
    pub outage: bool,
    /// Share of calls answered HTTP 429 with `Retry-After`, before processing.
    pub too_many_requests_rate: f64,
    /// The `Retry-After` value of a 429, in seconds.
    pub retry_after_seconds: u64,
    /// Share of calls answered HTTP 500/502/503/504, before processing.
    pub server_error_rate: f64,
    /// Share of calls answered HTTP 200 with a body that is not JSON, before processing.
    pub not_json_rate: f64,
    /// Share of calls that never answer and are not processed.
    pub timeout_before_processing_rate: f64,
    /// Share of calls that are processed (data stored) but never answer.
    pub timeout_after_processing_rate: f64,
    /// How long a timed-out call keeps the connection open before dropping it; longer than any client
    /// timeout.
    pub timeout_delay: Duration,
    /// Share of calls that are processed (data stored) and answer HTTP 200 with the JSON cut half-way.
    pub cut_body_rate: f64,
    /// Share of calls that are processed and answer correctly, but `slow_delay` late.
    pub slow_rate: f64,
    /// The delay of a slow answer.
    pub slow_delay: Duration,
    /// Share of `DongBoHoSoMC` / `CapNhatTienDoHoSoMC` calls held for `late_delay` and processed only then
    /// ("late store"): when the client has given up meanwhile, its batch lands after later calls.
    pub late_store_rate: f64,
    /// Share of `DongBoHoSoMC` / `CapNhatTienDoHoSoMC` calls processed at once and answered `late_delay`
    /// late.
    pub late_answer_rate: f64,
    /// The delay of the two late faults; set it past the client's timeout or lease to exercise them.
    pub late_delay: Duration,
    /// Share of answers whose `result` entries come in shuffled order.
    pub shuffled_rate: f64,
    /// Share of answers with an extra entry (code 0) for a `MaHoSo` that was not sent.
    pub unknown_entry_rate: f64,
    /// Share of answers missing one item's entry (the item was processed all the same).
    pub dropped_entry_rate: f64,
    /// Share of answers with one item's entry twice.
    pub duplicated_entry_rate: f64,
}

impl PortalFaults {
    /// No fault at all.
    pub fn none() -> Self {
        PortalFaults {
            outage: false,
            too_many_requests_rate: 0.0,
            retry_after_seconds: 1,
            server_error_rate: 0.0,
            not_json_rate: 0.0,
            timeout_before_processing_rate: 0.0,
            timeout_after_processing_rate: 0.0,
            timeout_delay: Duration::from_secs(30),
            cut_body_rate: 0.0,
            slow_rate: 0.0,
            slow_delay: Duration::from_millis(500),
            late_store_rate: 0.0,
            late_answer_rate: 0.0,
            late_delay: Duration::from_secs(8),
            shuffled_rate: 0.0,
            unknown_entry_rate: 0.0,
            dropped_entry_rate: 0.0,
            duplicated_entry_rate: 0.0,
        }
    }

    /// The rates of a fault level: `None` none; `Realistic` about 2.5 % of calls fail (plus 2 % slow,
    /// 0.2 % answered past the demo's 5 s timeout, and 2 % of answers in shuffled order: faults a client
    /// that matches entries by `MaHoSo` rides out without a content check); `Harsh` about 20 % fail (plus
    /// 5 % slow, 1 % answered late, 1 % stored late: the old batch lands last), and answers are shuffled
    /// (10 %), invent an entry, drop one or repeat one (2 % each).
    pub fn for_level(level: FaultLevel) -> Self {
        match level {
            FaultLevel::None => Self::none(),
            FaultLevel::Realistic => PortalFaults {
                too_many_requests_rate: 0.005,
                server_error_rate: 0.01,
                not_json_rate: 0.002,
                timeout_before_processing_rate: 0.002,
                timeout_after_processing_rate: 0.002,
                cut_body_rate: 0.004,
                slow_rate: 0.02,
                late_answer_rate: 0.002,
                shuffled_rate: 0.02,
                ..Self::none()
            },
            FaultLevel::Harsh => PortalFaults {
                too_many_requests_rate: 0.04,
                server_error_rate: 0.06,
                not_json_rate: 0.02,
                timeout_before_processing_rate: 0.02,
                timeout_after_processing_rate: 0.02,
                cut_body_rate: 0.04,
                slow_rate: 0.05,
                late_store_rate: 0.01,
                late_answer_rate: 0.01,
                shuffled_rate: 0.1,
                unknown_entry_rate: 0.02,
                dropped_entry_rate: 0.02,
                duplicated_entry_rate: 0.02,
                ..Self::none()
            },
        }
    }

    /// Draws the late fault of one delivery call (`DongBoHoSoMC`, `CapNhatTienDoHoSoMC`) that no transport
    /// fault struck, if any. Nothing is drawn while both rates are 0, so that other draws stay as seeded.
    pub(crate) fn draw_late(&self, rng: &mut impl rand::Rng) -> Option<InjectedFault> {
        if self.late_store_rate <= 0.0 && self.late_answer_rate <= 0.0 {
            return None;
        }
        let draw: f64 = rng.random();
        let store = self.late_store_rate.clamp(0.0, 1.0);
        if draw < store {
            return Some(InjectedFault::LateStore);
        }
        if draw < store + self.late_answer_rate.clamp(0.0, 1.0) {
            return Some(InjectedFault::LateAnswer);
        }
        None
    }

    /// Draws the answer faults of one processed delivery call, each on its own, in the order of
    /// [`AnswerFault`]. A rate of 0 draws nothing.
    pub(crate) fn draw_answer(&self, rng: &mut impl rand::Rng) -> Vec<AnswerFault> {
        [
            (AnswerFault::Shuffled, self.shuffled_rate),
            (AnswerFault::DroppedEntry, self.dropped_entry_rate),
            (AnswerFault::DuplicatedEntry, self.duplicated_entry_rate),
            (AnswerFault::UnknownEntry, self.unknown_entry_rate),
        ]
        .into_iter()
        .filter(|(_, rate)| *rate > 0.0 && rng.random_bool(rate.clamp(0.0, 1.0)))
        .map(|(fault, _)| fault)
        .collect()
    }

    /// Draws the fault of one call, if any.
    pub(crate) fn draw(&self, rng: &mut impl rand::Rng) -> Option<InjectedFault> {
        if self.outage {
            return Some(InjectedFault::Outage);
        }
        let draw: f64 = rng.random();
        let mut threshold = 0.0;
        let mut hit = |rate: f64| {
            threshold += rate.clamp(0.0, 1.0);
            draw < threshold
        };
        if hit(self.too_many_requests_rate) {
            return Some(InjectedFault::TooManyRequests);
        }
        if hit(self.server_error_rate) {
            let status = [500, 502, 503, 504][rng.random_range(0..4usize)];
            return Some(InjectedFault::ServerError(status));
        }
        if hit(self.not_json_rate) {
            return Some(InjectedFault::NotJson);
        }
        if hit(self.timeout_before_processing_rate) {
            return Some(InjectedFault::TimeoutBeforeProcessing);
        }
        if hit(self.timeout_after_processing_rate) {
            return Some(InjectedFault::TimeoutAfterProcessing);
        }
        if hit(self.cut_body_rate) {
            return Some(InjectedFault::CutBody);
        }
        if hit(self.slow_rate) {
            return Some(InjectedFault::Slow);
        }
        None
    }
}

impl Default for PortalFaults {
    fn default() -> Self {
        Self::none()
    }
}

/// A fault the simulator injected into one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InjectedFault {
    /// HTTP 503 because the outage switch is on. Before processing.
    Outage,
    /// HTTP 429 with `Retry-After`. Before processing.
    TooManyRequests,
    /// HTTP 500, 502, 503 or 504. Before processing.
    ServerError(u16),
    /// HTTP 200 with an HTML body. Before processing.
    NotJson,
    /// No answer, then the connection drops; nothing stored.
    TimeoutBeforeProcessing,
    /// No answer, then the connection drops; the data IS stored.
    TimeoutAfterProcessing,
    /// HTTP 200 with truncated JSON; the data IS stored.
    CutBody,
    /// The right answer, late; the data IS stored.
    Slow,
    /// Nothing for `late_delay`, then the request is processed and answered. Only delivery calls.
    LateStore,
    /// Processed at once, answered `late_delay` late. Only delivery calls.
    LateAnswer,
}

/// A lie in the `result` of a processed delivery call (the stored data are what the items say).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnswerFault {
    /// The entries in another order than the items sent.
    Shuffled,
    /// One item's entry left out.
    DroppedEntry,
    /// One item's entry twice.
    DuplicatedEntry,
    /// One more entry, code 0, for a `MaHoSo` that was not sent.
    UnknownEntry,
}

impl AnswerFault {
    /// A stable snake_case name, used by `/_sim/stats`.
    pub fn name(self) -> &'static str {
        match self {
            AnswerFault::Shuffled => "answer_shuffled",
            AnswerFault::UnknownEntry => "answer_unknown_entry",
            AnswerFault::DroppedEntry => "answer_dropped_entry",
            AnswerFault::DuplicatedEntry => "answer_duplicated_entry",
        }
    }
}

impl InjectedFault {
    /// Whether the request is processed (and its data stored) despite the fault.
    pub fn processed(self) -> bool {
        matches!(
            self,
            InjectedFault::TimeoutAfterProcessing
                | InjectedFault::CutBody
                | InjectedFault::Slow
                | InjectedFault::LateStore
                | InjectedFault::LateAnswer
        )
    }

    /// A stable snake_case name, used by `/_sim/stats`.
    pub fn name(self) -> &'static str {
        match self {
            InjectedFault::Outage => "outage",
            InjectedFault::TooManyRequests => "too_many_requests",
            InjectedFault::ServerError(500) => "http_500",
            InjectedFault::ServerError(502) => "http_502",
            InjectedFault::ServerError(503) => "http_503",
            InjectedFault::ServerError(504) => "http_504",
            InjectedFault::ServerError(_) => "http_5xx",
            InjectedFault::NotJson => "not_json",
            InjectedFault::TimeoutBeforeProcessing => "timeout_before_processing",
            InjectedFault::TimeoutAfterProcessing => "timeout_after_processing",
            InjectedFault::CutBody => "cut_body",
            InjectedFault::Slow => "slow",
            InjectedFault::LateStore => "late_store",
            InjectedFault::LateAnswer => "late_answer",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn share_failing(faults: &PortalFaults) -> f64 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let draws = 100_000;
        let failing = (0..draws)
            .filter(|_| {
                faults
                    .draw(&mut rng)
                    .is_some_and(|fault| fault != InjectedFault::Slow)
            })
            .count();
        failing as f64 / f64::from(draws)
    }

    #[test]
    fn levels_fail_the_documented_share_of_calls() {
        assert_eq!(
            share_failing(&PortalFaults::for_level(FaultLevel::None)),
            0.0
        );
        let realistic = share_failing(&PortalFaults::for_level(FaultLevel::Realistic));
        assert!((0.02..0.03).contains(&realistic), "{realistic}");
        let harsh = share_failing(&PortalFaults::for_level(FaultLevel::Harsh));
        assert!((0.18..0.22).contains(&harsh), "{harsh}");
    }

    #[test]
    fn outage_and_certain_rates_always_strike() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let outage = PortalFaults {
            outage: true,
            ..PortalFaults::none()
        };
        assert_eq!(outage.draw(&mut rng), Some(InjectedFault::Outage));
        let errors = PortalFaults {
            server_error_rate: 1.0,
            ..PortalFaults::none()
        };
        for _ in 0..20 {
            let fault = errors.draw(&mut rng);
            assert!(
                matches!(
                    fault,
                    Some(InjectedFault::ServerError(500 | 502 | 503 | 504))
                ),
                "{fault:?}"
            );
            assert!(!fault.unwrap().processed());
        }
        assert!(
            InjectedFault::CutBody.processed() && InjectedFault::TimeoutAfterProcessing.processed()
        );
    }

    #[test]
    fn answer_and_late_faults_are_drawn_at_their_rates() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let faults = PortalFaults {
            late_store_rate: 0.1,
            late_answer_rate: 0.2,
            shuffled_rate: 0.5,
            unknown_entry_rate: 0.05,
            ..PortalFaults::none()
        };
        let draws = 20_000;
        let (mut store, mut answer, mut shuffled, mut unknown, mut others) = (0, 0, 0, 0, 0);
        for _ in 0..draws {
            match faults.draw_late(&mut rng) {
                Some(InjectedFault::LateStore) => store += 1,
                Some(InjectedFault::LateAnswer) => answer += 1,
                _ => {}
            }
            for fault in faults.draw_answer(&mut rng) {
                match fault {
                    AnswerFault::Shuffled => shuffled += 1,
                    AnswerFault::UnknownEntry => unknown += 1,
                    _ => others += 1,
                }
            }
        }
        let share = |count: i32| f64::from(count) / f64::from(draws);
        assert!((0.09..0.11).contains(&share(store)), "{store}");
        assert!((0.18..0.22).contains(&share(answer)), "{answer}");
        assert!((0.48..0.52).contains(&share(shuffled)), "{shuffled}");
        assert!((0.04..0.06).contains(&share(unknown)), "{unknown}");
        assert_eq!(others, 0);
        // Nothing is drawn at all when the rates are 0: other draws stay as seeded.
        let none = PortalFaults::none();
        let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let b = a.clone();
        assert!(none.draw_late(&mut a).is_none() && none.draw_answer(&mut a).is_empty());
        assert_eq!(a, b);
    }

    #[test]
    fn realistic_lies_only_about_order_and_harsh_about_everything() {
        let realistic = PortalFaults::for_level(FaultLevel::Realistic);
        assert!(realistic.shuffled_rate > 0.0 && realistic.late_answer_rate > 0.0);
        // A late store can leave the portal with an older version that only a content check finds.
        assert_eq!(
            realistic.unknown_entry_rate
                + realistic.dropped_entry_rate
                + realistic.duplicated_entry_rate
                + realistic.late_store_rate,
            0.0
        );
        let harsh = PortalFaults::for_level(FaultLevel::Harsh);
        assert!(
            [
                harsh.shuffled_rate,
                harsh.unknown_entry_rate,
                harsh.dropped_entry_rate,
                harsh.duplicated_entry_rate,
                harsh.late_store_rate,
                harsh.late_answer_rate
            ]
            .iter()
            .all(|rate| *rate > 0.0)
        );
        let none = PortalFaults::for_level(FaultLevel::None);
        assert_eq!(none, PortalFaults::none());
    }
}
