//! What the router knows about one provider's health: a circuit breaker, a cool-down asked for
//! by the provider itself (429 with Retry-After), and moving averages of its latency, time to
//! first token and error rate.
//!
//! Time is passed in (`now`) rather than read, so the state machine is tested without sleeping.

use std::time::{Duration, Instant};

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerPolicy {
    /// Consecutive failures that open it.
    pub failures_to_open: u32,
    /// How long it stays open before one probe request is let through.
    pub open_for: Duration,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failures_to_open: 5,
            open_for: Duration::from_secs(30),
        }
    }
}

/// A circuit breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Requests flow; failures are counted.
    Closed {
        /// Failures since the last success.
        failures: u32,
    },
    /// No requests until `until`.
    Open {
        /// When one probe may go.
        until: Instant,
    },
    /// One probe is out; its outcome closes or reopens the breaker.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed { .. } => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A moving average that starts at its first sample.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Ewma {
    value: Option<f64>,
}

/// Weight of each new sample.
const ALPHA: f64 = 0.2;

impl Ewma {
    /// Adds a sample.
    pub fn add(&mut self, sample: f64) {
        self.value = Some(match self.value {
            None => sample,
            Some(v) => v + ALPHA * (sample - v),
        });
    }

    /// The average, if there was a sample.
    pub fn get(&self) -> Option<f64> {
        self.value
    }
}

/// A failure's weight in the score halves over this many seconds without news.
const ERROR_HALF_LIFE_SECS: f64 = 30.0;
/// Added to the time to first token in the score, so that 2 ms and 5 ms count as about equal.
const LATENCY_FLOOR_SECS: f64 = 0.05;

/// One provider's health.
#[derive(Debug, Clone)]
pub struct Health {
    policy: BreakerPolicy,
    state: BreakerState,
    /// The provider asked not to be called before this (429 Retry-After).
    cool_until: Option<Instant>,
    /// When the last try's outcome was recorded.
    last_outcome: Option<Instant>,
    /// Seconds from sending to the whole answer.
    pub latency: Ewma,
    /// Seconds from sending to the first token.
    pub ttft: Ewma,
    /// Share of tries that failed (1 a failure, 0 a success).
    pub errors: Ewma,
}

/// Why a provider was not tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// Its breaker is open (or its probe is out).
    Breaker,
    /// It asked to be left alone until then.
    CoolingDown(Instant),
}

impl Health {
    /// A healthy provider.
    pub fn new(policy: BreakerPolicy) -> Self {
        Self {
            policy,
            state: BreakerState::Closed { failures: 0 },
            cool_until: None,
            last_outcome: None,
            latency: Ewma::default(),
            ttft: Ewma::default(),
            errors: Ewma::default(),
        }
    }

    /// The breaker's state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether a request may go now; letting the one probe of an expired open breaker through
    /// moves it to half-open, so callers must report that request's outcome.
    pub fn admit(&mut self, now: Instant) -> Result<(), Unavailable> {
        if let Some(until) = self.cool_until {
            if now < until {
                return Err(Unavailable::CoolingDown(until));
            }
            self.cool_until = None;
        }
        match self.state {
            BreakerState::Closed { .. } => Ok(()),
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                Ok(())
            }
            BreakerState::Open { .. } | BreakerState::HalfOpen => Err(Unavailable::Breaker),
        }
    }

    /// Whether `admit` would let a request go now, without changing anything.
    pub fn would_admit(&self, now: Instant) -> bool {
        self.clone().admit(now).is_ok()
    }

    /// How much to prefer this provider now, given its configured `weight`: the expected
    /// successes per second of waiting for a first token, `weight × (1 − errors) / (TTFT +
    /// 50 ms)`. A provider without samples counts as instant, so it is tried; the error rate
    /// fades by half every 30 s without news, so a provider that failed is tried again
    /// eventually instead of being starved by the healthy ones.
    pub fn score(&self, weight: f64, now: Instant) -> f64 {
        let age = self
            .last_outcome
            .map_or(0.0, |at| now.saturating_duration_since(at).as_secs_f64());
        let errors = self.errors.get().unwrap_or(0.0) * 0.5f64.powf(age / ERROR_HALF_LIFE_SECS);
        let ttft = self.ttft.get().unwrap_or(0.0);
        weight * (1.0 - errors) / (ttft + LATENCY_FLOOR_SECS)
    }

    /// A try that got its answer (`ttft` to the first token, `total` to the end).
    pub fn succeeded(&mut self, ttft: Duration, total: Duration) {
        self.last_outcome = Some(Instant::now());
        self.state = BreakerState::Closed { failures: 0 };
        self.ttft.add(ttft.as_secs_f64());
        self.latency.add(total.as_secs_f64());
        self.errors.add(0.0);
    }

    /// A try that failed through the provider's fault.
    pub fn failed(&mut self, now: Instant) {
        self.last_outcome = Some(now);
        self.errors.add(1.0);
        self.state = match self.state {
            BreakerState::Closed { failures } if failures + 1 < self.policy.failures_to_open => {
                BreakerState::Closed {
                    failures: failures + 1,
                }
            }
            _ => BreakerState::Open {
                until: now + self.policy.open_for,
            },
        };
    }

    /// The provider said it is overloaded and to come back after `wait`. Not a fault: the
    /// breaker is left alone, but nothing is sent before then.
    pub fn rate_limited(&mut self, now: Instant, wait: Duration) {
        self.cool_until = Some(now + wait);
        // A half-open probe that was turned away proved nothing: let the next one go.
        if self.state == BreakerState::HalfOpen {
            self.state = BreakerState::Open { until: now };
        }
    }

    /// An active probe's result. A provider that does not answer counts a failure, so a dead
    /// provider's breaker opens before any request has to find out. One that answers ends an
    /// open breaker's wait, so the next request is its trial; answering a probe does not prove
    /// it can generate, so it closes nothing by itself.
    pub fn probed(&mut self, answered: bool, now: Instant) {
        if !answered {
            self.failed(now);
        } else if let BreakerState::Open { until } = self.state {
            self.state = BreakerState::Open {
                until: until.min(now),
            };
        }
    }

    /// Whether a probe may be sent now (not while it asked to be left alone).
    pub fn may_probe(&self, now: Instant) -> bool {
        self.cool_until.is_none_or(|until| now >= until)
    }

    /// A try the caller abandoned (it left before the answer): proves nothing either way.
    pub fn abandoned(&mut self, now: Instant) {
        if self.state == BreakerState::HalfOpen {
            self.state = BreakerState::Open { until: now };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failures_to_open: 3,
            open_for: Duration::from_secs(10),
        }
    }

    #[test]
    fn the_breaker_opens_after_consecutive_failures_and_a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut h = Health::new(policy());
        h.failed(t0);
        h.failed(t0);
        h.succeeded(Duration::from_millis(5), Duration::from_millis(9));
        h.failed(t0);
        h.failed(t0);
        assert_eq!(h.state(), BreakerState::Closed { failures: 2 });
        assert_eq!(h.admit(t0), Ok(()));
        h.failed(t0);
        assert_eq!(h.state().name(), "open");
        assert_eq!(
            h.admit(t0 + Duration::from_secs(9)),
            Err(Unavailable::Breaker)
        );
    }

    #[test]
    fn an_open_breaker_lets_one_probe_through_which_closes_or_reopens_it() {
        let t0 = Instant::now();
        let mut h = Health::new(policy());
        (0..3).for_each(|_| h.failed(t0));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(h.admit(later), Ok(()));
        assert_eq!(h.state(), BreakerState::HalfOpen);
        assert_eq!(
            h.admit(later),
            Err(Unavailable::Breaker),
            "one probe at a time"
        );
        h.failed(later);
        assert_eq!(
            h.state(),
            BreakerState::Open {
                until: later + Duration::from_secs(10)
            }
        );
        let again = later + Duration::from_secs(10);
        assert_eq!(h.admit(again), Ok(()));
        h.succeeded(Duration::from_millis(1), Duration::from_millis(2));
        assert_eq!(h.state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn retry_after_holds_requests_back_without_counting_as_a_failure() {
        let t0 = Instant::now();
        let mut h = Health::new(policy());
        h.rate_limited(t0, Duration::from_secs(2));
        assert_eq!(
            h.admit(t0 + Duration::from_secs(1)),
            Err(Unavailable::CoolingDown(t0 + Duration::from_secs(2)))
        );
        assert!(!h.would_admit(t0 + Duration::from_secs(1)));
        assert_eq!(h.admit(t0 + Duration::from_secs(2)), Ok(()));
        assert_eq!(h.state(), BreakerState::Closed { failures: 0 });
    }

    #[test]
    fn the_score_prefers_fast_and_reliable_and_forgives_old_failures() {
        let t0 = Instant::now();
        let mut quick = Health::new(policy());
        quick.succeeded(Duration::from_millis(2), Duration::from_millis(10));
        let mut slow = Health::new(policy());
        slow.succeeded(Duration::from_millis(200), Duration::from_millis(400));
        assert!(
            quick.score(1.0, t0) > slow.score(2.0, t0),
            "weight does not buy 100x latency"
        );
        let unknown = Health::new(policy());
        assert!(
            unknown.score(1.0, t0) > quick.score(1.0, t0),
            "an untried provider is tried"
        );
        let mut failed = Health::new(policy());
        failed.failed(t0);
        assert_eq!(failed.score(1.0, t0), 0.0);
        let later = failed.score(1.0, t0 + Duration::from_secs(60));
        assert!((later - 0.75 / 0.05).abs() < 1e-9, "{later}");
    }

    #[test]
    fn averages_start_at_the_first_sample_and_move_a_fifth_of_the_way() {
        let mut e = Ewma::default();
        assert_eq!(e.get(), None);
        e.add(10.0);
        assert_eq!(e.get(), Some(10.0));
        e.add(20.0);
        assert_eq!(e.get(), Some(12.0));
    }
}
