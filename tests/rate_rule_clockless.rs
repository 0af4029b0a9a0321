//! The shared breaker's failure-rate rule on its hot path: no clock read and no lock
//! per success, and what that costs in precision against the sans-io core, which is
//! given every success's own time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use sluice::Verdict;
use sluice::breaker::{
    CircuitBreaker, Clock, Config, ManualClock, SharedBreaker, State, Window, WindowCounts,
};

/// A manual clock that counts its readings.
#[derive(Clone, Default)]
struct CountingClock {
    time: ManualClock,
    reads: Arc<AtomicUsize>,
}

impl Clock for CountingClock {
    fn now(&self) -> Duration {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.time.now()
    }
}

fn call(breaker: &SharedBreaker, verdict: Verdict) {
    let permit = breaker.try_acquire().expect("closed");
    let _ = permit.report(verdict);
}

#[test]
fn successes_read_no_clock_while_the_window_holds_a_failure() {
    for window in [Window::Calls(100), Window::Time(Duration::from_secs(60))] {
        let clock = CountingClock::default();
        let config = Config::default().failure_rate(0.5, window, 20);
        let breaker = SharedBreaker::with_clock(config, clock.clone());
        call(&breaker, Verdict::Failure);
        assert!(clock.reads.load(Ordering::SeqCst) > 0, "a failure reads it");
        clock.reads.store(0, Ordering::SeqCst);
        for _ in 0..50 {
            clock.time.advance(Duration::from_secs(1));
            call(&breaker, Verdict::Success);
        }
        assert_eq!(clock.reads.load(Ordering::SeqCst), 0, "{window:?}");
        // None was lost: the failure and 50 successes (the time window holds the
        // last 60 s, the count window the last 100 calls).
        assert_eq!(
            breaker.snapshot().window_counts(),
            Some(WindowCounts {
                calls: 51,
                failures: 1
            }),
            "{window:?}"
        );
    }
}

#[derive(Debug, Clone, Copy)]
struct Step {
    advance_ms: u64,
    failed: bool,
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    // Gaps from nothing to well past the 8 s window; about one call in four fails.
    let step =
        (prop_oneof![0u64..200, 0u64..3_000, 0u64..20_000], 0u8..4).prop_map(|(advance_ms, f)| {
            Step {
                advance_ms,
                failed: f == 0,
            }
        });
    prop::collection::vec(step, 1..120)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// A success counted without the clock is counted at the handle's next reading,
    /// never before it happened: against the exact core the window holds the same
    /// failures and at least the same calls, so the shared breaker never sees a higher
    /// failure rate. (Reaching `minimum_calls` with successes that the exact window
    /// has already forgotten can open it while the exact core waits for more calls,
    /// so the two are compared while both are Closed.)
    #[test]
    fn the_shared_window_never_sees_a_higher_failure_rate(steps in steps(), minimum in 1u32..8) {
        let clock = ManualClock::new();
        let config = Config::default()
            .failure_threshold(1_000)
            .failure_rate(0.5, Window::Time(Duration::from_secs(8)), minimum);
        let shared = SharedBreaker::with_clock(config, clock.clone());
        let mut exact = CircuitBreaker::new(config);
        let mut now = Duration::ZERO;
        for (i, step) in steps.iter().enumerate() {
            now += Duration::from_millis(step.advance_ms);
            clock.set(now);
            let verdict = if step.failed { Verdict::Failure } else { Verdict::Success };
            let permit = exact.try_acquire(now).expect("closed");
            let _ = exact.record(permit, verdict, now);
            call(&shared, verdict);
            if shared.state() != State::Closed || exact.state(now) != State::Closed {
                break;
            }
            let got = shared.snapshot().window_counts().expect("a rule");
            let want = exact.window_counts().expect("a rule");
            let (calls, failures) = (got.calls, got.failures);
            let (exact_calls, exact_failures) = (want.calls, want.failures);
            prop_assert_eq!(failures, exact_failures, "step {}", i);
            prop_assert!(calls >= exact_calls, "step {}: {} < {}", i, calls, exact_calls);
        }
    }
}
