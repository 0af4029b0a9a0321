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

use std::hint::black_box;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use failsafe::failure_policy::consecutive_failures;
use sluice::Verdict;
use sluice::breaker::{CircuitBreaker, Config, SharedBreaker};

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

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = closed_acquire_record
}
criterion_main!(benches);
