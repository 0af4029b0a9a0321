//! Model-checked concurrency of `SharedRetryBudget` (loom): no lost deposit, racing
//! withdrawals in one bucket never exceed the limit, and across a bucket boundary they
//! overshoot it by at most one per other racing thread; readings passed in
//! (`deposit_at`, `try_withdraw_at`) across a bucket boundary.
//!
//! `RUSTFLAGS="--cfg sluice_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom cargo test --release --test loom_retry_budget`
#![cfg(sluice_loom)]

use std::time::Duration;

use loom::thread;
use sluice::breaker::ManualClock;
use sluice::retry::{RetryBudgetConfig, SharedRetryBudget};

/// A 1 s window (buckets of 62.5 ms) with a reserve of `reserve` and no share.
fn budget(reserve: u32, percent: u32) -> (SharedRetryBudget, ManualClock) {
    let clock = ManualClock::new();
    let config = RetryBudgetConfig::default()
        .ttl(Duration::from_secs(1))
        .min_per_second(reserve)
        .percent(percent);
    (SharedRetryBudget::with_clock(config, clock.clone()), clock)
}

#[test]
fn racing_deposits_are_all_counted() {
    loom::model(|| {
        let (b, _clock) = budget(0, 100);
        let other = b.clone();
        let t = thread::spawn(move || other.deposit());
        b.deposit();
        t.join().expect("no panic");
        assert_eq!(b.window_counts(), (2, 0));
        assert!(b.try_withdraw());
        assert!(b.try_withdraw());
        assert!(!b.try_withdraw());
    });
}

#[test]
fn racing_withdrawals_in_one_bucket_never_exceed_the_limit() {
    loom::model(|| {
        // A reserve of 1: one retry for the two threads.
        let (b, _clock) = budget(1, 0);
        let other = b.clone();
        let t = thread::spawn(move || other.try_withdraw());
        let here = b.try_withdraw();
        let there = t.join().expect("no panic");
        assert!(here ^ there, "exactly one granted: {here} {there}");
        assert_eq!(b.window_counts(), (0, 1));
    });
}

#[test]
fn a_deposit_racing_a_withdrawal_is_seen_or_refused() {
    loom::model(|| {
        // 100 %, no reserve: the withdrawal is granted only if it sees the deposit.
        let (b, _clock) = budget(0, 100);
        let other = b.clone();
        let t = thread::spawn(move || other.deposit());
        let granted = b.try_withdraw();
        t.join().expect("no panic");
        assert_eq!(b.window_counts(), (1, u64::from(granted)));
        assert_eq!(b.balance(), u64::from(!granted));
    });
}

#[test]
fn across_a_bucket_boundary_racing_withdrawals_overshoot_by_at_most_one() {
    loom::model(|| {
        let (b, clock) = budget(1, 0);
        let other = b.clone();
        let mover = clock.clone();
        // One thread moves the clock into the next bucket, then withdraws; the other
        // withdraws in either bucket. Limit 1, two racing threads: 1 or 2 granted.
        let t = thread::spawn(move || {
            mover.advance(Duration::from_millis(63));
            other.try_withdraw()
        });
        let here = b.try_withdraw();
        let there = t.join().expect("no panic");
        let granted = u64::from(here) + u64::from(there);
        assert!((1..=2).contains(&granted), "{granted}");
        assert_eq!(b.window_counts(), (0, granted));
    });
}

#[test]
fn a_withdrawal_paid_for_by_its_own_deposit_is_never_refused() {
    loom::model(|| {
        // 100 %, no reserve: each thread's deposit pays for its withdrawal, whatever
        // the other does between the loads of a check.
        let (b, _clock) = budget(0, 100);
        let other = b.clone();
        let t = thread::spawn(move || {
            other.deposit();
            other.try_withdraw()
        });
        b.deposit();
        let here = b.try_withdraw();
        let there = t.join().expect("no panic");
        assert!(here && there, "{here} {there}");
        assert_eq!(b.window_counts(), (2, 2));
    });
}

#[test]
fn readings_passed_across_a_boundary_each_pay_for_their_own_withdrawal() {
    loom::model(|| {
        // 100 %, no reserve; readings passed in (the handle's clock never moves):
        // one thread's in bucket 0, the other's in bucket 1. Whatever the order, a
        // deposit counted in the closed bucket 0 after bucket 1 began is still seen
        // by the withdrawal after it (the closed-buckets cache is invalidated).
        let (b, _clock) = budget(0, 100);
        let other = b.clone();
        let t = thread::spawn(move || {
            let later = Duration::from_millis(70); // bucket 1 (62.5 ms buckets)
            other.deposit_at(later);
            other.try_withdraw_at(later)
        });
        let early = Duration::from_millis(10); // bucket 0
        b.deposit_at(early);
        let here = b.try_withdraw_at(early);
        let there = t.join().expect("no panic");
        assert!(here && there, "{here} {there}");
        assert_eq!(b.window_counts_at(Duration::from_millis(70)), (2, 2));
    });
}
