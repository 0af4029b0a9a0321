//! What one admitted call costs the breaker in Closed: `try_acquire` plus recording a
//! success, with the baselines measured in the same run.
//!
//! `cargo bench --bench breaker`. Contenders:
//!
//! * `sans_io`: `CircuitBreaker` on `&mut`, `now` passed in (no clock read);
//! * `shared_1t`: `SharedBreaker` on one thread (`try_acquire`, `report(Success)`);
//! * `shared_owned_1t`: the same with `try_acquire_owned` (the permit holds an `Arc`);
//! * `mutex_1t`: a `Mutex<CircuitBreaker>` locked for each call, reading `Instant`
//!   the way a shared handle must when it cannot tell that time does not matter;
//! * `failsafe_1t`: the `failsafe` crate (1.3), consecutive-failures policy,
//!   `is_call_permitted` + `on_success`;
//! * `shared_2t`, `mutex_2t`, `failsafe_2t`: the same on two threads at once over one
//!   breaker; the figure is wall time divided by the calls of both threads (so per
//!   call of the pair's aggregate throughput).
//!
//! Group `breaker_rate_rule`: the same call on a `SharedBreaker` with a failure-rate
//! rule, against `plain` (no rule) in the same run:
//!
//! * `calls_idle`: count window of 100 calls, all successes (a success changes
//!   nothing: a load, no write);
//! * `calls_busy`: the same window holding one failure (each success is counted in the
//!   word with a compare-and-swap; a failure every 50 calls keeps it so, recorded
//!   outside the timed part);
//! * `time`: a 60 s time window holding one failure (a compare-and-swap per success,
//!   no clock read); `std_clock_read` is the clock read it no longer makes;
//! * `plain_plus_rmw`: `plain` followed by one uncontended atomic `fetch_add` on a
//!   word of its own: the least a success can cost when it must change shared state
//!   (the busy and time rows make exactly one such read-modify-write);
//! * `plain_busy_2t`, `calls_busy_2t`: two threads over one breaker, one call in 50
//!   a failure (timed; under the rate rule it takes the lock), counted per thread.
//!
//! Group `breaker_set`: `SharedBreakerSet::pick` + record success on 4 Closed workers
//! (`round_robin`, `least_in_flight`, and `try_acquire` of a given worker), against a
//! single `SharedBreaker` (`single_owned`: `try_acquire_owned`, the permit that is
//! `'static` like the set's; `single`: the borrowed permit), in the same run.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use failsafe::failure_policy::consecutive_failures;
use sluice::Verdict;
use sluice::breaker::{
    CircuitBreaker, Clock, Config, Pick, SharedBreaker, SharedBreakerSet, StdClock, Window,
};

fn mutex_call(breaker: &Mutex<CircuitBreaker>, origin: Instant) {
    let mut b = breaker.lock().expect("not poisoned");
    let now = origin.elapsed();
    let permit = b.try_acquire(now).expect("closed");
    drop(b);
    let mut b = breaker.lock().expect("not poisoned");
    let recorded = b.record(permit, Verdict::Success, origin.elapsed());
    black_box(&recorded);
}

fn failsafe_call(breaker: &failsafe::StateMachine<impl failsafe::FailurePolicy, ()>) {
    assert!(breaker.is_call_permitted());
    breaker.on_success();
}

/// Runs `call` `iters` times on each of two threads; returns wall time per call.
fn two_threads(iters: u64, call: impl Fn() + Sync) -> Duration {
    let barrier = Barrier::new(3);
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                barrier.wait();
                for _ in 0..iters {
                    call();
                }
                barrier.wait();
            });
        }
        barrier.wait();
        let start = Instant::now();
        barrier.wait();
        start.elapsed() / 2
    })
}

fn closed_acquire_record(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_closed_acquire_record_success");
    let config = Config::default();

    let mut sans_io = CircuitBreaker::new(config);
    let mut now = Duration::ZERO;
    g.bench_function("sans_io", |b| {
        b.iter(|| {
            now += Duration::from_nanos(1);
            let permit = sans_io.try_acquire(black_box(now)).expect("closed");
            let recorded = sans_io.record(permit, Verdict::Success, now);
            black_box(&recorded);
        })
    });

    let shared = SharedBreaker::new(config);
    g.bench_function("shared_1t", |b| {
        b.iter(|| {
            let permit = black_box(&shared).try_acquire().expect("closed");
            let recorded = permit.report(Verdict::Success);
            black_box(&recorded);
        })
    });
    g.bench_function("shared_owned_1t", |b| {
        b.iter(|| {
            let permit = black_box(&shared).try_acquire_owned().expect("closed");
            let recorded = permit.report(Verdict::Success);
            black_box(&recorded);
        })
    });

    let mutex = Mutex::new(CircuitBreaker::new(config));
    let origin = Instant::now();
    g.bench_function("mutex_1t", |b| {
        b.iter(|| mutex_call(black_box(&mutex), origin))
    });

    let failsafe = failsafe::Config::new()
        .failure_policy(consecutive_failures(
            5,
            failsafe::backoff::constant(Duration::from_secs(30)),
        ))
        .build();
    g.bench_function("failsafe_1t", |b| {
        b.iter(|| failsafe_call(black_box(&failsafe)))
    });

    g.bench_function("shared_2t", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                let permit = shared.try_acquire().expect("closed");
                let recorded = permit.report(Verdict::Success);
                black_box(&recorded);
            })
        })
    });
    g.bench_function("mutex_2t", |b| {
        b.iter_custom(|iters| two_threads(iters, || mutex_call(&mutex, origin)))
    });
    g.bench_function("failsafe_2t", |b| {
        b.iter_custom(|iters| two_threads(iters, || failsafe_call(&failsafe)))
    });
    g.finish();
}

thread_local! {
    /// Calls made by this thread, to space its failures.
    static CALLS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

fn shared_call(b: &SharedBreaker) {
    let permit = b.try_acquire().expect("closed");
    let recorded = permit.report(Verdict::Success);
    black_box(&recorded);
}

/// A breaker whose window already holds one failure (then `window_calls` successes).
fn with_one_failure(config: Config) -> SharedBreaker {
    let b = SharedBreaker::new(config);
    let _ = b.try_acquire().expect("closed").report(Verdict::Failure);
    b
}

fn rate_rule(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_rate_rule");
    let plain = SharedBreaker::new(Config::default());
    let calls = Config::default().failure_rate(0.5, Window::Calls(100), 20);
    let idle = SharedBreaker::new(calls);
    for _ in 0..100 {
        shared_call(&idle);
    }
    // Keep a failure in the busy window: one every 50 calls (a locked record, so 1 in
    // 51 records of `calls_busy` takes the lock: the figure includes it).
    let busy = with_one_failure(calls);
    let time = with_one_failure(Config::default().failure_rate(
        0.5,
        Window::Time(Duration::from_secs(60)),
        20,
    ));
    g.bench_function("plain", |b| b.iter(|| shared_call(black_box(&plain))));
    g.bench_function("calls_idle", |b| b.iter(|| shared_call(black_box(&idle))));
    g.bench_function("calls_busy", |b| {
        b.iter_custom(|iters| {
            // Only the successes are timed: a failure (locked) every 50 calls, outside.
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let _ = busy.try_acquire().expect("closed").report(Verdict::Failure);
                let n = left.min(50);
                let start = Instant::now();
                for _ in 0..n {
                    shared_call(black_box(&busy));
                }
                total += start.elapsed();
                left -= n;
            }
            total
        })
    });
    g.bench_function("time", |b| b.iter(|| shared_call(black_box(&time))));
    #[repr(align(64))]
    struct Padded(AtomicU64);
    let word = Padded(AtomicU64::new(0));
    g.bench_function("plain_plus_rmw", |b| {
        b.iter(|| {
            shared_call(black_box(&plain));
            black_box(&word).0.fetch_add(1, Ordering::AcqRel);
        })
    });
    let clock = StdClock::new();
    g.bench_function("std_clock_read", |b| {
        b.iter(|| black_box(black_box(&clock).now()))
    });
    // Two threads, a failure every 50 calls on each (timed, locked for the rate rule).
    let with_failures = |b: &SharedBreaker| {
        let i = CALLS.with(|n| {
            n.set(n.get() + 1);
            n.get()
        });
        if i % 50 == 0 {
            let _ = b.try_acquire().expect("closed").report(Verdict::Failure);
        } else {
            shared_call(b);
        }
    };
    let plain_busy = SharedBreaker::new(Config::default());
    g.bench_function("plain_busy_2t", |b| {
        b.iter_custom(|iters| two_threads(iters, || with_failures(&plain_busy)))
    });
    g.bench_function("calls_busy_2t", |b| {
        b.iter_custom(|iters| two_threads(iters, || with_failures(&busy)))
    });
    g.finish();
}

fn set(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_set");
    let single = SharedBreaker::new(Config::default());
    let set = SharedBreakerSet::new(4, Config::default());
    g.bench_function("single", |b| b.iter(|| shared_call(black_box(&single))));
    g.bench_function("single_owned", |b| {
        b.iter(|| {
            let permit = black_box(&single).try_acquire_owned().expect("closed");
            let _ = black_box(permit.report(Verdict::Success));
        })
    });
    for (name, how) in [
        ("round_robin", Pick::RoundRobin),
        ("least_in_flight", Pick::LeastInFlight),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let permit = black_box(&set).pick(how).expect("closed");
                let _ = black_box(permit.report(Verdict::Success));
            })
        });
    }
    g.bench_function("try_acquire", |b| {
        b.iter(|| {
            let permit = black_box(&set).try_acquire(black_box(2)).expect("closed");
            let _ = black_box(permit.report(Verdict::Success));
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = closed_acquire_record, rate_rule, set
}
criterion_main!(benches);
