//! Adaptive concurrency toward the portal: how many calls may be in flight at once, learnt from the
//! portal's answers rather than guessed by the operator. After Vector's adaptive request concurrency:
//! additive increase, multiplicative decrease.
//!
//! Time is cut into windows of about one round trip. At the end of a window:
//! - **back-pressure** (a 5xx, a timeout) or **round trips grown** well past their usual spread (the
//!   portal slows down): the limit is cut to 90% (at least by one); a **429** (the calls came faster
//!   than the portal's rate, by however much the limit grew meanwhile) cuts it by half. The level that
//!   drew back-pressure is remembered;
//! - otherwise, if the limit was reached during the window and round trips are no longer than usual, it
//!   grows by one, but not back to a level that drew back-pressure within the last `probe_after` (30 s):
//!   a portal that rate-limits is probed again rarely, so that few calls are answered 429 while the limit
//!   stays just under its rate.
//!
//! [`Controller`] decides (pure, fed times and outcomes); [`AdaptiveConcurrency`] is the gate the portal
//! client takes a [`Permit`] from before each call.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// The cut on a 429: the calls were over the portal's rate, by however much the limit grew since.
    pub rate_limited_ratio: f64,
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
            rate_limited_ratio: 0.5,
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

/// The decisions, on round trips and outcomes: no clock of its own, no I/O.
#[derive(Debug)]
pub struct Controller {
    tuning: Tuning,
    limit: usize,
    window_started: Instant,
    window_rtt_sum: f64,
    window_calls: u32,
    window_reached_limit: bool,
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
            window_backpressure: false,
            window_rate_limited: false,
            usual_rtt: None,
            ceiling: None,
        }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Notes that every permit was in use: the limit, not the work, bounded the calls.
    pub fn reached_limit(&mut self) {
        self.window_reached_limit = true;
    }

    /// Records one call that took `rtt` and ended as `signal`, at `now`; returns the limit after it.
    pub fn record(&mut self, now: Instant, rtt: Duration, signal: Signal) -> usize {
        match signal {
            Signal::Answered => {
                self.window_rtt_sum += rtt.as_secs_f64();
                self.window_calls += 1;
            }
            Signal::Backpressure => self.window_backpressure = true,
            Signal::RateLimited => {
                self.window_backpressure = true;
                self.window_rate_limited = true;
            }
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
            let ratio = if self.window_rate_limited {
                self.tuning.rate_limited_ratio
            } else {
                self.tuning.decrease_ratio
            };
            let cut = (self.limit as f64 * ratio).floor() as usize;
            self.limit = cut.min(self.limit.saturating_sub(1)).max(1);
        } else if self.window_reached_limit && above <= 1.0 && self.limit < self.tuning.max {
            // Growth only while round trips are no longer than usual.
            let held_back = self.ceiling.is_some_and(|(level, at)| {
                self.limit + 1 >= level && now.duration_since(at) < self.tuning.probe_after
            });
            if !held_back {
                self.limit += 1;
            }
        }
        // The usual round trip learns from calls the portal answered without pushing back: a window of
        // 429s answered at once would teach it that the portal is fast.
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
        self.window_backpressure = false;
        self.window_rate_limited = false;
    }
}

/// The gate: at most the controller's limit of calls in flight.
pub struct AdaptiveConcurrency {
    semaphore: Semaphore,
    state: Mutex<Gate>,
    adaptive: bool,
    /// The current limit, for metrics.
    limit: AtomicUsize,
}

struct Gate {
    controller: Controller,
    /// Permits that exist (in the semaphore or held); above the limit after a cut, until enough
    /// permits come back to be forgotten.
    issued: usize,
}

impl AdaptiveConcurrency {
    /// A gate that adapts between 1 and `max` (starting at 1) when `adaptive`, or holds `max` fixed.
    pub fn new(max: usize, adaptive: bool) -> AdaptiveConcurrency {
        let mut tuning = Tuning::new(max);
        if !adaptive {
            tuning.initial = tuning.max;
        }
        let controller = Controller::new(tuning, Instant::now());
        let limit = controller.limit();
        AdaptiveConcurrency {
            semaphore: Semaphore::new(limit),
            state: Mutex::new(Gate {
                controller,
                issued: limit,
            }),
            adaptive,
            limit: AtomicUsize::new(limit),
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Waits for a free place among the calls in flight.
    pub async fn acquire(&self) -> Permit<'_> {
        let permit = self
            .semaphore
            .acquire()
            .await
            .expect("the gate's semaphore is never closed");
        if self.semaphore.available_permits() == 0 {
            self.lock().controller.reached_limit();
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

    fn release(&self, permit: SemaphorePermit<'_>, rtt: Duration, signal: Signal) {
        if !self.adaptive {
            return;
        }
        let mut gate = self.lock();
        let limit = gate.controller.record(Instant::now(), rtt, signal);
        self.limit.store(limit, Ordering::Relaxed);
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
    /// Starts the round trip's clock now (after any wait for the request rate).
    pub fn start(&mut self) {
        self.started = Instant::now();
    }

    /// How the call ended.
    pub fn finish(mut self, signal: Signal) {
        self.signal = signal;
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.gate
                .release(permit, self.started.elapsed(), self.signal);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            controller.reached_limit();
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
        // A portal that answers 429 once five calls are in flight.
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
    fn a_429_halves_the_limit() {
        let mut clock = Instant::now();
        let mut controller = Controller::new(Tuning::new(16), clock);
        run(&mut controller, &mut clock, 11, RTT, |_| Signal::Answered);
        assert_eq!(controller.limit(), 12);
        run(&mut controller, &mut clock, 1, RTT, |_| Signal::RateLimited);
        assert_eq!(controller.limit(), 6);
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

    #[tokio::test(start_paused = true)]
    async fn the_gate_lets_through_no_more_calls_than_its_limit() {
        let gate = AdaptiveConcurrency::new(8, false);
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
        let gate = AdaptiveConcurrency::new(8, true);
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
