//! Adaptive concurrency toward the portal: how many calls may be in flight at once, and how many may
//! start per second, learnt from the portal's answers rather than guessed by the operator. After Vector's
//! adaptive request concurrency (additive increase, multiplicative decrease), with a pace learnt from 429s.
//!
//! **Calls in flight** ([`Controller`]). Time is cut into windows of about one round trip. At the end of a
//! window:
//! - **back-pressure** (a 5xx, a timeout) or **round trips grown** well past their usual spread (the
//!   portal slows down): the limit is cut to 90% (at least by one) of what was in flight at most during
//!   the window, so that a limit far above the calls actually made still bites at once. The level that
//!   drew back-pressure is not tried again for `probe_after` (30 s);
//! - a **429** leaves the limit where it is (it does not grow in that window): the rate is the pacer's;
//! - otherwise, if the limit was reached during the window and round trips are no longer than usual, it
//!   grows by one.
//!
//! **Calls per second** ([`Pacer`]). Until the first 429, calls are not paced. A 429 says the portal's
//! bucket is empty: the calls it answered in the stretch since the first 429 of the same episode (its
//! bucket was empty at both ends) is its rate, and the pace is set 5% under it. When the stretch is too
//! short to measure, the last second is counted instead: the first time, that second may hold the
//! portal's burst as well as its rate, so the pace is half of it; later, 5% under the least of the pace,
//! that count and the rate last measured. Only a 429 to a call that started after the last cut counts:
//! the others were paced by the old rate. After a cut the pace holds for `hold` (5 s), then grows by 1%
//! a second while calls wait for it, so that a portal that raises its limit is found again; until a rate
//! was measured (the first cut is a guess), it holds 1 s and grows by 5% a second.
//!
//! [`Controller`] and [`Pacer`] decide (pure, fed times and outcomes); [`AdaptiveConcurrency`] is the gate
//! the portal client takes a [`Permit`] from before each call.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

/// How a call ended, as the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// An answer (whatever it said about the items).
    Answered,
    /// 5xx or a timeout: the portal cannot take more.
    Backpressure,
    /// 429: the calls came faster than the portal's rate.
    RateLimited,
    /// Anything that says nothing about the portal's load (credentials, a refused request, a cut
    /// connection): not counted.
    Neutral,
}

/// The controller's knobs.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// The most calls in flight (`portal.concurrency`).
    pub max: usize,
    /// Where the limit starts.
    pub initial: usize,
    /// The cut on back-pressure.
    pub decrease_ratio: f64,
    /// Round trips count as grown beyond the usual mean plus this many mean deviations.
    pub rtt_deviation_scale: f64,
    /// Weight of a new window in the usual round trip.
    pub ewma_alpha: f64,
    /// How long a level that drew back-pressure is not tried again.
    pub probe_after: Duration,
    /// The shortest window (round trips on loopback are well under a millisecond).
    pub min_window: Duration,
}

impl Tuning {
    pub fn new(max: usize) -> Tuning {
        Tuning {
            max: max.max(1),
            initial: 1,
            decrease_ratio: 0.9,
            rtt_deviation_scale: 2.5,
            ewma_alpha: 0.4,
            probe_after: Duration::from_secs(30),
            min_window: Duration::from_millis(50),
        }
    }
}

/// An exponentially weighted mean and mean deviation.
#[derive(Debug, Clone, Copy)]
struct Ewma {
    mean: f64,
    deviation: f64,
}

/// The decisions on calls in flight, on round trips and outcomes: no clock of its own, no I/O.
#[derive(Debug)]
pub struct Controller {
    tuning: Tuning,
    limit: usize,
    window_started: Instant,
    window_rtt_sum: f64,
    window_calls: u32,
    window_reached_limit: bool,
    /// The most calls in flight at once during the window.
    window_peak: usize,
    window_backpressure: bool,
    window_rate_limited: bool,
    usual_rtt: Option<Ewma>,
    /// The level that last drew back-pressure, and when.
    ceiling: Option<(usize, Instant)>,
}

impl Controller {
    pub fn new(tuning: Tuning, now: Instant) -> Controller {
        Controller {
            limit: tuning.initial.clamp(1, tuning.max),
            tuning,
            window_started: now,
            window_rtt_sum: 0.0,
            window_calls: 0,
            window_reached_limit: false,
            window_peak: 0,
            window_backpressure: false,
            window_rate_limited: false,
            usual_rtt: None,
            ceiling: None,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Notes that a call started with `in_flight` calls in flight (itself included); at the limit, the
    /// limit, not the work, bounded the calls.
    pub fn started(&mut self, in_flight: usize) {
        self.window_peak = self.window_peak.max(in_flight);
        if in_flight >= self.limit {
            self.window_reached_limit = true;
        }
    }

    /// Records one call that took `rtt` and ended as `signal`, at `now`; returns the limit after it.
    pub fn record(&mut self, now: Instant, rtt: Duration, signal: Signal) -> usize {
        match signal {
            Signal::Answered => {
                self.window_rtt_sum += rtt.as_secs_f64();
                self.window_calls += 1;
            }
            Signal::Backpressure => self.window_backpressure = true,
            Signal::RateLimited => self.window_rate_limited = true,
            Signal::Neutral => {}
        }
        let window = self
            .usual_rtt
            .map_or(self.tuning.min_window, |usual| {
                Duration::from_secs_f64(usual.mean)
            })
            .max(self.tuning.min_window);
        if now.duration_since(self.window_started) >= window {
            self.close_window(now);
        }
        self.limit
    }

    fn close_window(&mut self, now: Instant) {
        let mean =
            (self.window_calls > 0).then(|| self.window_rtt_sum / f64::from(self.window_calls));
        // How far round trips are above the usual, in usual deviations (a floor of 5% of the mean, so
        // that steady round trips do not make every jitter look like growth).
        let above = match (mean, self.usual_rtt) {
            (Some(mean), Some(usual)) => {
                (mean - usual.mean) / usual.deviation.max(usual.mean * 0.05)
            }
            _ => 0.0,
        };
        if self.window_backpressure || above > self.tuning.rtt_deviation_scale {
            if self.window_backpressure {
                self.ceiling = Some((self.limit, now));
            }
            // From what was in flight: a limit the calls never reached would otherwise take several
            // cuts before it held anything back.
            let base = self.limit.min(self.window_peak.max(1));
            let cut = (base as f64 * self.tuning.decrease_ratio).floor() as usize;
            self.limit = cut.min(base.saturating_sub(1)).max(1);
        } else if self.window_reached_limit
            && !self.window_rate_limited
            && above <= 1.0
            && self.limit < self.tuning.max
        {
            // Growth only while round trips are no longer than usual.
            let held_back = self.ceiling.is_some_and(|(level, at)| {
                self.limit + 1 >= level && now.duration_since(at) < self.tuning.probe_after
            });
            if !held_back {
                self.limit += 1;
            }
        }
        // The usual round trip learns from calls the portal answered without pushing back.
        if let (Some(mean), false) = (mean, self.window_backpressure) {
            self.usual_rtt = Some(match self.usual_rtt {
                None => Ewma {
                    mean,
                    deviation: 0.0,
                },
                Some(usual) => {
                    let alpha = self.tuning.ewma_alpha;
                    Ewma {
                        mean: usual.mean + alpha * (mean - usual.mean),
                        deviation: usual.deviation
                            + alpha * ((mean - usual.mean).abs() - usual.deviation),
                    }
                }
            });
        }
        self.window_started = now;
        self.window_rtt_sum = 0.0;
        self.window_calls = 0;
        self.window_reached_limit = false;
        self.window_peak = 0;
        self.window_backpressure = false;
        self.window_rate_limited = false;
    }
}

/// The pacer's knobs.
#[derive(Debug, Clone, Copy)]
pub struct RateTuning {
    /// How far under a measured rate the pace is set.
    pub margin: f64,
    /// The first cut, of the calls answered in the second before the first 429 (which may hold the
    /// portal's burst as well as its rate).
    pub first_ratio: f64,
    /// The shortest stretch between 429s measured as the portal's rate.
    pub min_measure: Duration,
    /// 429s further apart than this belong to separate episodes (the bucket may have filled between).
    pub episode_gap: Duration,
    /// How long the pace holds after a cut.
    pub hold: Duration,
    /// Then, how often it grows while calls wait for it.
    pub probe_every: Duration,
    /// By how much (a share of the pace).
    pub probe_step: f64,
    /// The hold and the step before any rate was measured (the first cut is a guess, maybe far under).
    pub first_hold: Duration,
    pub first_probe_step: f64,
    /// The slowest pace, calls per second.
    pub min_rate: f64,
}

impl Default for RateTuning {
    fn default() -> Self {
        RateTuning {
            margin: 0.05,
            first_ratio: 0.5,
            min_measure: Duration::from_millis(250),
            episode_gap: Duration::from_secs(2),
            hold: Duration::from_secs(5),
            probe_every: Duration::from_secs(1),
            probe_step: 0.01,
            first_hold: Duration::from_secs(1),
            first_probe_step: 0.05,
            min_rate: 0.5,
        }
    }
}

/// How long answers are remembered for measuring.
const ANSWERS_KEPT: Duration = Duration::from_secs(10);

/// The decisions on calls per second, learnt from 429s: no clock of its own, no I/O.
#[derive(Debug)]
pub struct Pacer {
    tuning: RateTuning,
    /// Calls per second; `None` before the first 429 (not paced).
    rate: Option<f64>,
    /// The portal's rate as last measured over a stretch of 429s, until a cut uses it.
    measured: Option<f64>,
    /// Whether a rate was ever measured (until then the pace grows faster).
    ever_measured: bool,
    /// When calls the portal took were answered, for the last [`ANSWERS_KEPT`].
    answered: VecDeque<Instant>,
    /// When the pacer started (the first second is shorter).
    born: Instant,
    /// The earliest start of the next call.
    next: Instant,
    /// The last cut: a 429 to a call started before it was paced by the old rate.
    cut_at: Option<Instant>,
    /// The first and last 429 of the current episode.
    episode: Option<(Instant, Instant)>,
    /// When the pace may grow next, and whether a call waited for it since the last growth.
    probe_at: Instant,
    waited: bool,
}

impl Pacer {
    pub fn new(tuning: RateTuning, now: Instant) -> Pacer {
        Pacer {
            tuning,
            rate: None,
            measured: None,
            ever_measured: false,
            answered: VecDeque::new(),
            born: now,
            next: now,
            cut_at: None,
            episode: None,
            probe_at: now,
            waited: false,
        }
    }

    /// The pace, calls per second; `None` while no 429 has come.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// Books the next call's start: `now`, or later when the pace requires it.
    pub fn slot(&mut self, now: Instant) -> Instant {
        self.probe(now);
        let Some(rate) = self.rate else {
            return now;
        };
        let at = self.next.max(now);
        self.waited |= at > now;
        self.next = at + Duration::from_secs_f64(1.0 / rate);
        at
    }

    fn probe(&mut self, now: Instant) {
        let Some(rate) = self.rate else {
            return;
        };
        if now < self.probe_at {
            return;
        }
        if self.waited {
            let step = if self.ever_measured {
                self.tuning.probe_step
            } else {
                self.tuning.first_probe_step
            };
            self.rate = Some(rate * (1.0 + step));
        }
        self.probe_at = now + self.tuning.probe_every;
        self.waited = false;
    }

    /// Records how a call that started at `started` ended, at `now`.
    pub fn record(&mut self, now: Instant, started: Instant, signal: Signal) {
        match signal {
            Signal::Answered | Signal::Backpressure => {
                self.answered.push_back(now);
                while self
                    .answered
                    .front()
                    .is_some_and(|at| now.duration_since(*at) > ANSWERS_KEPT)
                {
                    self.answered.pop_front();
                }
            }
            Signal::RateLimited => self.rate_limited(now, started),
            Signal::Neutral => {}
        }
    }

    /// Calls answered in `(from, now]`, per second.
    fn answered_rate(&self, from: Instant, now: Instant) -> f64 {
        let count = self.answered.iter().filter(|at| **at > from).count();
        count as f64 / now.duration_since(from).as_secs_f64().max(0.1)
    }

    fn rate_limited(&mut self, now: Instant, started: Instant) {
        let first = match self.episode {
            Some((first, last)) if now.duration_since(last) <= self.tuning.episode_gap => first,
            _ => now,
        };
        self.episode = Some((first, now));
        if self.cut_at.is_some_and(|cut| started < cut) {
            return;
        }
        let keep = 1.0 - self.tuning.margin;
        let pace = if now.duration_since(first) >= self.tuning.min_measure {
            // The portal's bucket was empty at both ends: what it took between is its rate.
            let measured = self.answered_rate(first, now);
            self.measured = Some(measured);
            self.ever_measured = true;
            measured * keep
        } else {
            let second = now
                .checked_sub(Duration::from_secs(1))
                .unwrap_or(self.born)
                .max(self.born);
            let last_second = self.answered_rate(second, now);
            match self.rate {
                None => last_second * self.tuning.first_ratio,
                Some(rate) => {
                    rate.min(last_second)
                        .min(self.measured.take().unwrap_or(f64::INFINITY))
                        * keep
                }
            }
        };
        let pace = pace.max(self.tuning.min_rate);
        self.rate = Some(self.rate.map_or(pace, |rate| rate.min(pace)));
        self.cut_at = Some(now);
        self.probe_at = now
            + if self.ever_measured {
                self.tuning.hold
            } else {
                self.tuning.first_hold
            };
        self.waited = false;
    }
}

/// The gate: calls paced to the learnt rate, and at most the controller's limit of them in flight.
pub struct AdaptiveConcurrency {
    semaphore: Semaphore,
    state: Mutex<Gate>,
    adaptive: bool,
    /// The current limit, for metrics.
    limit: AtomicUsize,
    /// The learnt rate (calls per second, as `f64` bits; 0 while none is learnt), for metrics.
    rate: AtomicU64,
}

struct Gate {
    controller: Controller,
    pacer: Pacer,
    /// Permits that exist (in the semaphore or held); above the limit after a cut, until enough
    /// permits come back to be forgotten.
    issued: usize,
}

impl AdaptiveConcurrency {
    /// A gate that adapts between 1 and `max` (starting at 1) and paces calls to the rate learnt from
    /// 429s when `adaptive`, or holds `max` fixed and does not pace.
    pub fn new(max: usize, adaptive: bool) -> AdaptiveConcurrency {
        let mut tuning = Tuning::new(max);
        if !adaptive {
            tuning.initial = tuning.max;
        }
        let now = Instant::now();
        let controller = Controller::new(tuning, now);
        let limit = controller.limit();
        AdaptiveConcurrency {
            semaphore: Semaphore::new(limit),
            state: Mutex::new(Gate {
                controller,
                pacer: Pacer::new(RateTuning::default(), now),
                issued: limit,
            }),
            adaptive,
            limit: AtomicUsize::new(limit),
            rate: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// The rate learnt from the portal's 429s, calls per second; `None` while none is learnt.
    pub fn learnt_rate(&self) -> Option<f64> {
        let rate = f64::from_bits(self.rate.load(Ordering::Relaxed));
        (rate > 0.0).then_some(rate)
    }

    /// Waits for the call's turn at the learnt rate, then for a free place among the calls in flight.
    pub async fn acquire(&self) -> Permit<'_> {
        if self.adaptive {
            let at = self.lock().pacer.slot(Instant::now());
            tokio::time::sleep_until(at).await;
        }
        let permit = self
            .semaphore
            .acquire()
            .await
            .expect("the gate's semaphore is never closed");
        {
            let mut gate = self.lock();
            let in_flight = gate
                .issued
                .saturating_sub(self.semaphore.available_permits());
            gate.controller.started(in_flight);
        }
        Permit {
            gate: self,
            permit: Some(permit),
            started: Instant::now(),
            signal: Signal::Neutral,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn release(&self, permit: SemaphorePermit<'_>, started: Instant, signal: Signal) {
        if !self.adaptive {
            return;
        }
        let mut gate = self.lock();
        let now = Instant::now();
        let limit = gate
            .controller
            .record(now, now.duration_since(started), signal);
        gate.pacer.record(now, started, signal);
        self.limit.store(limit, Ordering::Relaxed);
        self.rate.store(
            gate.pacer.rate().unwrap_or(0.0).to_bits(),
            Ordering::Relaxed,
        );
        if limit > gate.issued {
            self.semaphore.add_permits(limit - gate.issued);
            gate.issued = limit;
        }
        if gate.issued > limit {
            // This permit goes out of circulation; the others return as they are released.
            permit.forget();
            gate.issued -= 1;
        }
    }
}

/// A place among the calls in flight; given back, with how the call ended, when dropped.
pub struct Permit<'a> {
    gate: &'a AdaptiveConcurrency,
    permit: Option<SemaphorePermit<'a>>,
    started: Instant,
    signal: Signal,
}

impl Permit<'_> {
    /// How the call ended.
    pub fn finish(mut self, signal: Signal) {
        self.signal = signal;
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.gate.release(permit, self.started, self.signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    const RTT: Duration = Duration::from_millis(80);

    /// Runs `windows` windows of calls taking `rtt` each, all at the limit, ending as `signal_of(limit)`.
    fn run(
        controller: &mut Controller,
        clock: &mut Instant,
        windows: usize,
        rtt: Duration,
        signal_of: impl Fn(usize) -> Signal,
    ) {
        for _ in 0..windows {
            let limit = controller.limit();
            controller.started(limit);
            for _ in 0..limit {
                controller.record(*clock, rtt, signal_of(limit));
            }
            *clock += rtt.max(Duration::from_millis(50));
            controller.record(*clock, rtt, signal_of(limit));
        }
    }

    #[test]
    fn the_limit_grows_by_one_per_window_while_calls_fill_it() {
        let mut clock = Instant::now();
        let mut controller = Controller::new(Tuning::new(16), clock);
        run(&mut controller, &mut clock, 5, RTT, |_| Signal::Answered);
        assert_eq!(controller.limit(), 6);
        run(&mut controller, &mut clock, 50, RTT, |_| Signal::Answered);
        assert_eq!(controller.limit(), 16, "never above the configured maximum");
    }

    #[test]
    fn the_limit_stays_when_the_work_does_not_fill_it() {
        let mut clock = Instant::now();
        let mut controller = Controller::new(Tuning::new(16), clock);
        for _ in 0..20 {
            clock += RTT;
            controller.record(clock, RTT, Signal::Answered);
        }
        assert_eq!(controller.limit(), 1);
    }

    #[test]
    fn back_pressure_cuts_the_limit_and_its_level_is_not_tried_again_soon() {
        let mut clock = Instant::now();
        let mut controller = Controller::new(Tuning::new(16), clock);
        // A portal that answers 5xx once five calls are in flight.
        let portal = |limit: usize| {
            if limit >= 5 {
                Signal::Backpressure
            } else {
                Signal::Answered
            }
        };
        run(&mut controller, &mut clock, 4, RTT, portal);
        assert_eq!(controller.limit(), 5);
        run(&mut controller, &mut clock, 1, RTT, portal);
        assert_eq!(controller.limit(), 4, "cut by at least one");
        // For the next 29 seconds the limit stays just under the level that drew back-pressure.
        let mut pushed_back = 0;
        for _ in 0..(29_000 / 80) {
            run(&mut controller, &mut clock, 1, RTT, portal);
            pushed_back += usize::from(controller.limit() >= 5);
        }
        assert_eq!(pushed_back, 0);
        assert_eq!(controller.limit(), 4);
        // Then it probes again once, is pushed back, and settles again.
        run(&mut controller, &mut clock, 40, RTT, portal);
        assert_eq!(controller.limit(), 4);
    }

    #[test]
    fn round_trips_that_grow_cut_the_limit_within_a_few_windows() {
        let mut clock = Instant::now();
        let mut controller = Controller::new(Tuning::new(16), clock);
        run(&mut controller, &mut clock, 11, RTT, |_| Signal::Answered);
        assert_eq!(controller.limit(), 12);
        // The portal slows down: 80 ms calls now take 400 ms.
        run(&mut controller, &mut clock, 3, RTT * 5, |_| {
            Signal::Answered
        });
        assert!(
            controller.limit() < 12,
            "limit {} after the portal slowed",
            controller.limit()
        );
    }

    #[test]
    fn a_cut_starts_from_the_calls_in_flight_not_from_a_limit_they_never_reached() {
        let mut clock = Instant::now();
        let mut controller = Controller::new(Tuning::new(16), clock);
        run(&mut controller, &mut clock, 11, RTT, |_| Signal::Answered);
        assert_eq!(controller.limit(), 12);
        // Four calls in flight (the pace, not the limit, bounds them), then a 5xx.
        controller.started(4);
        clock += RTT;
        controller.record(clock, RTT, Signal::Backpressure);
        assert_eq!(controller.limit(), 3);
    }

    #[test]
    fn a_429_leaves_the_limit_to_the_pacer() {
        let mut clock = Instant::now();
        let mut controller = Controller::new(Tuning::new(16), clock);
        run(&mut controller, &mut clock, 11, RTT, |_| Signal::Answered);
        assert_eq!(controller.limit(), 12);
        run(&mut controller, &mut clock, 3, RTT, |_| Signal::RateLimited);
        assert_eq!(controller.limit(), 12, "neither cut nor grown");
    }

    #[test]
    fn the_limit_never_falls_below_one() {
        let mut clock = Instant::now();
        let mut controller = Controller::new(Tuning::new(4), clock);
        run(&mut controller, &mut clock, 20, RTT, |_| {
            Signal::Backpressure
        });
        assert_eq!(controller.limit(), 1);
    }

    /// Answers `count` calls to `pacer`, one every `every`, starting at `clock`.
    fn answer(pacer: &mut Pacer, clock: &mut Instant, count: usize, every: Duration) {
        for _ in 0..count {
            *clock += every;
            pacer.record(*clock, *clock - RTT, Signal::Answered);
        }
    }

    #[test]
    fn the_first_429_paces_calls_to_half_the_second_before_it() {
        let mut clock = Instant::now();
        let mut pacer = Pacer::new(RateTuning::default(), clock);
        assert_eq!(pacer.slot(clock), clock, "not paced before any 429");
        // 100 calls answered in the last second (the portal's burst and its rate), then a 429.
        answer(&mut pacer, &mut clock, 100, Duration::from_millis(10));
        pacer.record(clock, clock - RTT, Signal::RateLimited);
        let rate = pacer.rate().expect("a rate learnt");
        assert!((49.0..=51.0).contains(&rate), "rate {rate}");
        // Calls are then spaced 1/rate apart.
        let first = pacer.slot(clock);
        let second = pacer.slot(clock);
        assert_eq!(first, clock);
        assert!((second - first).as_secs_f64() >= 1.0 / 51.0);
    }

    #[test]
    fn a_stretch_of_429s_measures_the_portals_rate_and_earlier_calls_do_not_cut_again() {
        let mut clock = Instant::now();
        let mut pacer = Pacer::new(RateTuning::default(), clock);
        answer(&mut pacer, &mut clock, 150, Duration::from_millis(10));
        pacer.record(clock, clock - RTT, Signal::RateLimited);
        let first = pacer.rate().unwrap();
        // Calls in flight at the cut answered 429 too: paced by the old rate, they cut nothing.
        for _ in 0..5 {
            clock += Duration::from_millis(5);
            pacer.record(clock, clock - RTT, Signal::RateLimited);
        }
        assert_eq!(pacer.rate(), Some(first));
        // The portal takes 40 a second meanwhile; a call paced by the new rate is answered 429 half a
        // second after the first: 40 a second is measured, and the pace set 5% under it.
        answer(&mut pacer, &mut clock, 20, Duration::from_millis(25));
        pacer.record(clock, clock - RTT / 2, Signal::RateLimited);
        let rate = pacer.rate().unwrap();
        assert!((36.0..=38.5).contains(&rate), "rate {rate}");
    }

    /// Calls that wait for their turn all along (each asks as soon as the previous one got its own),
    /// for `seconds`.
    fn ask(pacer: &mut Pacer, clock: &mut Instant, seconds: f64) {
        let until = *clock + Duration::from_secs_f64(seconds);
        while *clock < until {
            *clock = pacer.slot(*clock).max(*clock + Duration::from_millis(1));
        }
    }

    #[test]
    fn before_any_rate_is_measured_the_pace_grows_by_5_percent_a_second_after_1_s() {
        let mut clock = Instant::now();
        let mut pacer = Pacer::new(RateTuning::default(), clock);
        answer(&mut pacer, &mut clock, 40, Duration::from_millis(25));
        pacer.record(clock, clock - RTT, Signal::RateLimited);
        let cut = pacer.rate().unwrap();
        ask(&mut pacer, &mut clock, 0.9);
        assert_eq!(pacer.rate(), Some(cut), "held for a second");
        ask(&mut pacer, &mut clock, 4.0);
        let grown = pacer.rate().unwrap();
        assert!(
            grown > cut * 1.15 && grown < cut * 1.3,
            "{cut} grew to {grown} in four seconds"
        );
    }

    #[test]
    fn once_a_rate_is_measured_the_pace_holds_5_s_then_grows_by_1_percent_a_second() {
        let mut clock = Instant::now();
        let mut pacer = Pacer::new(RateTuning::default(), clock);
        answer(&mut pacer, &mut clock, 100, Duration::from_millis(10));
        pacer.record(clock, clock - RTT, Signal::RateLimited);
        answer(&mut pacer, &mut clock, 20, Duration::from_millis(25));
        pacer.record(clock, clock - RTT / 2, Signal::RateLimited);
        let cut = pacer.rate().unwrap();
        assert!((36.0..=38.5).contains(&cut), "measured and cut to {cut}");
        ask(&mut pacer, &mut clock, 4.0);
        assert_eq!(pacer.rate(), Some(cut), "held for five seconds");
        ask(&mut pacer, &mut clock, 11.0);
        let grown = pacer.rate().unwrap();
        assert!(
            grown > cut * 1.08 && grown < cut * 1.12,
            "{cut} grew to {grown} in ten seconds"
        );
        // Calls that never wait leave the pace where it is (after the growth due at the first of them).
        clock += Duration::from_secs(1);
        pacer.slot(clock);
        let idle = pacer.rate().unwrap();
        for _ in 0..20 {
            clock += Duration::from_secs(1);
            pacer.slot(clock);
        }
        assert_eq!(pacer.rate(), Some(idle));
    }

    /// A simulated portal: calls answered after their round trip, and a one-second bucket of `rate`
    /// calls a second (0: no limit) deciding at the end of it, as `simulate portal` does.
    struct Portal {
        rate: f64,
        rtt: Duration,
        tokens: f64,
        refilled: Instant,
        accepted: u64,
        rejected: u64,
    }

    impl Portal {
        fn call(&mut self, now: Instant) -> Signal {
            if self.rate == 0.0 {
                self.accepted += 1;
                return Signal::Answered;
            }
            let elapsed = now.duration_since(self.refilled).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
            self.refilled = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                self.accepted += 1;
                Signal::Answered
            } else {
                self.rejected += 1;
                Signal::RateLimited
            }
        }
    }

    /// 16 workers calling through `gate` for as long as `running`, each call taking the portal's round
    /// trip (± 10 ms).
    fn workers(
        gate: &Arc<AdaptiveConcurrency>,
        portal: &Arc<Mutex<Portal>>,
        running: &Arc<AtomicBool>,
    ) {
        for worker in 0..16u64 {
            let (gate, portal, running) = (gate.clone(), portal.clone(), running.clone());
            tokio::spawn(async move {
                let mut call = worker;
                while running.load(Ordering::Relaxed) {
                    let permit = gate.acquire().await;
                    call += 16;
                    let rtt = portal.lock().unwrap().rtt;
                    let jitter = Duration::from_millis(call * 7 % 21);
                    tokio::time::sleep(rtt - Duration::from_millis(10) + jitter).await;
                    let signal = portal.lock().unwrap().call(Instant::now());
                    permit.finish(signal);
                }
            });
        }
    }

    fn portal(rate: f64, rtt: Duration) -> Arc<Mutex<Portal>> {
        Arc::new(Mutex::new(Portal {
            rate,
            rtt,
            tokens: rate,
            refilled: Instant::now(),
            accepted: 0,
            rejected: 0,
        }))
    }

    fn counts(portal: &Arc<Mutex<Portal>>) -> (u64, u64) {
        let portal = portal.lock().unwrap();
        (portal.accepted, portal.rejected)
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_limited_portal_gets_nearly_its_rate_with_few_429s() {
        let gate = Arc::new(AdaptiveConcurrency::new(16, true));
        let portal = portal(50.0, RTT);
        let running = Arc::new(AtomicBool::new(true));
        workers(&gate, &portal, &running);
        tokio::time::sleep(Duration::from_secs(120)).await;
        let (accepted, rejected) = counts(&portal);
        running.store(false, Ordering::Relaxed);
        let rate = accepted as f64 / 120.0;
        let share_429 = rejected as f64 / (accepted + rejected) as f64;
        assert!(rate >= 45.0, "{rate:.1} calls/s of 50");
        assert!(share_429 < 0.01, "{:.2}% answered 429", share_429 * 100.0);
        let learnt = gate.learnt_rate().expect("a rate learnt");
        assert!((40.0..=60.0).contains(&learnt), "learnt {learnt:.1}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_portal_that_raises_its_limit_is_found_again() {
        let gate = Arc::new(AdaptiveConcurrency::new(16, true));
        let portal = portal(50.0, RTT);
        let running = Arc::new(AtomicBool::new(true));
        workers(&gate, &portal, &running);
        tokio::time::sleep(Duration::from_secs(30)).await;
        let before = gate.learnt_rate().expect("a rate learnt");
        portal.lock().unwrap().rate = 100.0;
        tokio::time::sleep(Duration::from_secs(90)).await;
        let after = gate.learnt_rate().unwrap();
        running.store(false, Ordering::Relaxed);
        assert!(before <= 55.0, "learnt {before:.1} at 50");
        assert!(after >= 80.0, "learnt {after:.1} after 90 s at 100");
    }

    #[tokio::test(start_paused = true)]
    async fn a_portal_that_slows_down_is_given_fewer_calls_within_seconds() {
        let gate = Arc::new(AdaptiveConcurrency::new(16, true));
        let portal = portal(0.0, RTT);
        let running = Arc::new(AtomicBool::new(true));
        workers(&gate, &portal, &running);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(gate.limit(), 16, "no limit: the calls fill the ceiling");
        let (before, _) = counts(&portal);
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (fast, _) = counts(&portal);
        // The portal slows down five times: the limit is cut within a second (then, as the slower
        // round trips become the usual ones, it grows again).
        portal.lock().unwrap().rtt = RTT * 5;
        let mut lowest = gate.limit();
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            lowest = lowest.min(gate.limit());
        }
        let (slow, _) = counts(&portal);
        running.store(false, Ordering::Relaxed);
        assert!(
            lowest < 16,
            "the limit never went under 16 in the three seconds after the portal slowed"
        );
        assert!(
            (slow - fast) * 4 < fast - before,
            "{} calls in the three seconds after it slowed, {} before",
            slow - fast,
            fast - before
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_gate_lets_through_no_more_calls_than_its_limit() {
        let gate = Arc::new(AdaptiveConcurrency::new(8, false));
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(gate.acquire().await);
        }
        let ninth = tokio::time::timeout(Duration::from_millis(50), gate.acquire()).await;
        assert!(
            ninth.is_err(),
            "a ninth call waits while eight are in flight"
        );
        held.pop();
        let ninth = tokio::time::timeout(Duration::from_secs(5), gate.acquire()).await;
        assert!(ninth.is_ok(), "a place freed is taken");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_takes_permits_out_of_circulation() {
        let gate = Arc::new(AdaptiveConcurrency::new(8, true));
        // Grow the limit: fill it and answer, window after window (windows are at least 50 ms).
        for _ in 0..4 {
            let limit = gate.limit();
            let mut held = Vec::new();
            for _ in 0..limit {
                held.push(gate.acquire().await);
            }
            tokio::time::sleep(Duration::from_millis(60)).await;
            for permit in held {
                permit.finish(Signal::Answered);
            }
        }
        let grown = gate.limit();
        assert!(grown > 1, "limit {grown}");
        let mut held = Vec::new();
        for _ in 0..grown {
            held.push(gate.acquire().await);
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
        for permit in held {
            permit.finish(Signal::Backpressure);
        }
        let cut = gate.limit();
        assert!(cut < grown, "limit {cut} after back-pressure at {grown}");
        assert_eq!(gate.semaphore.available_permits(), cut);
    }
}
