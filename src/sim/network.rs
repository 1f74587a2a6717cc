//! A network like the real one, for both simulators: a latency on every API call (a base delay with
//! seeded jitter), and the portal's rate limit (a token bucket shared by every session, answered HTTP 429
//! with `Retry-After` beyond it, portal-api.md 2.1 "Transport").

use std::time::{Duration, Instant};

use rand::RngExt;

/// The delay added to every API call (`/_sim/*` excepted): `base`, give or take up to `jitter`, drawn
/// uniformly from `base - jitter ..= base + jitter` (never below zero) with the simulator's seeded
/// latency generator, so that a run can be replayed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Latency {
    /// The delay around which calls are spread; zero for none.
    pub base: Duration,
    /// How far a call's delay may be from `base`, either way.
    pub jitter: Duration,
}

impl Latency {
    /// No delay at all.
    pub const NONE: Latency = Latency {
        base: Duration::ZERO,
        jitter: Duration::ZERO,
    };

    /// `base` and `jitter` in milliseconds, as the command line gives them.
    pub fn from_millis(base: u64, jitter: u64) -> Latency {
        Latency {
            base: Duration::from_millis(base),
            jitter: Duration::from_millis(jitter),
        }
    }

    pub fn is_none(&self) -> bool {
        self.base.is_zero() && self.jitter.is_zero()
    }

    /// The delay of one call. Draws nothing when there is no jitter.
    pub fn draw(&self, rng: &mut impl rand::Rng) -> Duration {
        if self.jitter.is_zero() {
            return self.base;
        }
        let jitter = self.jitter.as_micros() as i128;
        let offset = rng.random_range(-jitter..=jitter);
        let micros = (self.base.as_micros() as i128 + offset).max(0);
        Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX))
    }
}

/// A token bucket: `per_second` calls a second on average, bursts of up to one second's worth. Shared by
/// every session of the portal: the limit is the portal's, not a client's.
#[derive(Debug, Clone)]
pub struct RateLimit {
    per_second: f64,
    tokens: f64,
    refilled: Instant,
}

impl RateLimit {
    /// A full bucket of `per_second` calls (at least one).
    pub fn new(per_second: u32) -> RateLimit {
        let per_second = f64::from(per_second.max(1));
        RateLimit {
            per_second,
            tokens: per_second,
            refilled: Instant::now(),
        }
    }

    /// Takes one call's token at `now`: `Ok` when there was one, else the whole seconds to wait until
    /// there will be (at least 1), for `Retry-After`.
    pub fn take(&mut self, now: Instant) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.per_second);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - self.tokens) / self.per_second;
        Err((wait.ceil() as u64).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn latency_stays_within_its_jitter_and_is_seeded() {
        let latency = Latency::from_millis(100, 30);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let mut again = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let draws: Vec<Duration> = (0..1000).map(|_| latency.draw(&mut rng)).collect();
        assert!(
            draws
                .iter()
                .all(|d| (Duration::from_millis(70)..=Duration::from_millis(130)).contains(d))
        );
        assert!(draws.iter().any(|d| *d < Duration::from_millis(90)));
        assert!(draws.iter().any(|d| *d > Duration::from_millis(110)));
        let replayed: Vec<Duration> = (0..1000).map(|_| latency.draw(&mut again)).collect();
        assert_eq!(draws, replayed);
        // No jitter: exactly the base, nothing drawn; never below zero.
        let fixed = Latency::from_millis(40, 0);
        let before = rng.clone();
        assert_eq!(fixed.draw(&mut rng), Duration::from_millis(40));
        assert_eq!(rng, before);
        let wide = Latency::from_millis(10, 50);
        assert!((0..1000).all(|_| wide.draw(&mut rng) <= Duration::from_millis(60)));
        assert!(Latency::NONE.is_none() && !fixed.is_none());
    }

    #[test]
    fn bucket_allows_a_second_worth_then_asks_to_wait() {
        let start = Instant::now();
        let mut limit = RateLimit::new(3);
        for _ in 0..3 {
            assert_eq!(limit.take(start), Ok(()));
        }
        assert_eq!(limit.take(start), Err(1));
        // A third of a second later one token is back, and only one.
        let later = start + Duration::from_millis(340);
        assert_eq!(limit.take(later), Ok(()));
        assert_eq!(limit.take(later), Err(1));
        // A slow limit asks for a longer wait, in whole seconds.
        let mut slow = RateLimit::new(1);
        assert_eq!(slow.take(start), Ok(()));
        assert_eq!(slow.take(start), Err(1));
        // Never more than a second's worth saved up.
        let mut idle = RateLimit::new(2);
        let much_later = start + Duration::from_secs(60);
        assert_eq!(idle.take(much_later), Ok(()));
        assert_eq!(idle.take(much_later), Ok(()));
        assert!(idle.take(much_later).is_err());
    }
}
