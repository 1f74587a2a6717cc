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
        }
    }

    /// The rates of a fault level: `None` none; `Realistic` about 2.5 % of calls fail (plus 2 % slow);
    /// `Harsh` about 20 % fail (plus 5 % slow).
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
                ..Self::none()
            },
        }
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
}

impl InjectedFault {
    /// Whether the request is processed (and its data stored) despite the fault.
    pub fn processed(self) -> bool {
        matches!(
            self,
            InjectedFault::TimeoutAfterProcessing | InjectedFault::CutBody | InjectedFault::Slow
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
}
