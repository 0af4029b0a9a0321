//! What the retry budget costs per request that retries once: `deposit` +
//! `try_withdraw` (granted), against a `SharedBreaker` `try_acquire` + record of a
//! success, in the same run (issue 17's target: within 2x the breaker's).
//!
//! `cargo bench --bench retry_budget`. Contenders (group `retry_budget`):
//!
//! * `breaker`: `SharedBreaker::try_acquire` + `report(Success)`, system clock
//!   (its Closed path reads no clock);
//! * `shared_std_clock`: `SharedRetryBudget` on the system clock (`new`): two clock
//!   readings, one compare-and-swap each, a few loads;
//! * `shared_at`: `SharedRetryBudget::deposit_at` + `try_withdraw_at` with a reading
//!   the caller already holds (moved 1 ns per call): no clock read at all;
//! * `shared_read_once`: one `StdClock` reading per call (`SharedRetryBudget::now`),
//!   passed to both;
//! * `shared_manual_clock`: `deposit` + `try_withdraw` on a `ManualClock` (a reading is one atomic
//!   load; the bench moves it 1 ns per call with a store): the budget's own cost
//!   without the system clock;
//! * `sans_io`: `RetryBudget` on `&mut`, `now` passed in;
//! * `two_rmw`: two uncontended `fetch_add`s on words of their own, the floor of any
//!   lock-free count of a deposit and a withdrawal;
//! * `std_clock_read`: one `StdClock::now` alone;
//! * `breaker_2t`, `shared_2t`, `shared_at_2t`: the breaker's and the budget's
//!   (system clock; readings passed) call on two threads at once over one handle;
//!   wall time divided by the calls of both.
//!
//! Every config has `percent(100)`: each deposit pays for the withdrawal after it, so
//! every `try_withdraw` is granted (the path that writes).

use std::hint::black_box;
use std::sync::Barrier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use sluice::Verdict;
use sluice::breaker::{Clock, Config, ManualClock, SharedBreaker, StdClock};
use sluice::retry::{RetryBudget, RetryBudgetConfig, SharedRetryBudget};

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

// Each contender's call is a function of its own, never inlined, so that callgrind
// counts its calls and its instructions (`--tree=caller`): the same call and return
// for every contender.

#[inline(never)]
fn breaker_call(breaker: &SharedBreaker) {
    let permit = breaker.try_acquire().expect("closed");
    let recorded = permit.report(Verdict::Success);
    black_box(&recorded);
}

#[inline(never)]
fn budget_call(budget: &SharedRetryBudget) {
    budget.deposit();
    let granted = budget.try_withdraw();
    assert!(black_box(granted));
}

#[inline(never)]
fn budget_at_call(budget: &SharedRetryBudget, now: Duration) {
    budget.deposit_at(now);
    let granted = budget.try_withdraw_at(now);
    assert!(black_box(granted));
}

#[inline(never)]
fn budget_read_once_call(budget: &SharedRetryBudget) {
    let now = budget.now();
    budget.deposit_at(now);
    let granted = budget.try_withdraw_at(now);
    assert!(black_box(granted));
}

#[inline(never)]
fn manual_call(clock: &ManualClock, budget: &SharedRetryBudget, at: u64) {
    // A store, not `advance` (a compare-and-swap loop the budget never pays).
    clock.set(Duration::from_nanos(at));
    budget_call(budget);
}

#[inline(never)]
fn sans_io_call(budget: &mut RetryBudget, now: Duration) {
    budget.deposit(now);
    assert!(black_box(budget.try_withdraw(now)));
}

#[inline(never)]
fn two_rmw_call(words: &[AtomicU64; 2]) {
    words[0].fetch_add(1, Ordering::AcqRel);
    words[1].fetch_add(1, Ordering::AcqRel);
}

#[inline(never)]
fn std_clock_call(clock: &StdClock) -> Duration {
    black_box(clock.now())
}

fn retry_budget(c: &mut Criterion) {
    let mut g = c.benchmark_group("retry_budget");
    let config = RetryBudgetConfig::default().percent(100);

    let breaker = SharedBreaker::new(Config::default());
    g.bench_function("breaker", |b| b.iter(|| breaker_call(black_box(&breaker))));

    let shared = SharedRetryBudget::new(config);
    g.bench_function("shared_std_clock", |b| {
        b.iter(|| budget_call(black_box(&shared)))
    });

    let at_budget = SharedRetryBudget::new(config);
    let mut reading = Duration::ZERO;
    g.bench_function("shared_at", |b| {
        b.iter(|| {
            reading += Duration::from_nanos(1);
            budget_at_call(black_box(&at_budget), black_box(reading))
        })
    });

    let read_once = SharedRetryBudget::new(config);
    g.bench_function("shared_read_once", |b| {
        b.iter(|| budget_read_once_call(black_box(&read_once)))
    });

    let clock = ManualClock::new();
    let manual = SharedRetryBudget::with_clock(config, clock.clone());
    let mut at = 0u64;
    g.bench_function("shared_manual_clock", |b| {
        b.iter(|| {
            at += 1;
            manual_call(&clock, black_box(&manual), at)
        })
    });

    let mut sans_io = RetryBudget::new(config);
    let mut now = Duration::ZERO;
    g.bench_function("sans_io", |b| {
        b.iter(|| {
            now += Duration::from_nanos(1);
            sans_io_call(&mut sans_io, black_box(now))
        })
    });

    let words = [AtomicU64::new(0), AtomicU64::new(0)];
    g.bench_function("two_rmw", |b| b.iter(|| two_rmw_call(black_box(&words))));

    let std_clock = StdClock::new();
    g.bench_function("std_clock_read", |b| {
        b.iter(|| std_clock_call(black_box(&std_clock)))
    });

    g.bench_function("breaker_2t", |b| {
        b.iter_custom(|iters| two_threads(iters, || breaker_call(&breaker)))
    });
    g.bench_function("shared_2t", |b| {
        b.iter_custom(|iters| two_threads(iters, || budget_call(&shared)))
    });
    // Both threads pass one reading (one bucket), as `shared_at` in one thread.
    let fixed = Duration::from_secs(1);
    g.bench_function("shared_at_2t", |b| {
        b.iter_custom(|iters| two_threads(iters, || budget_at_call(&at_budget, fixed)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = retry_budget
}
criterion_main!(benches);
