//! The retry budget (SPEC section 6, issue 17): the sans-io `RetryBudget` against a
//! reference model that keeps every timestamp, the window's exact reach in time, the
//! outage bound, the shared handle against the sans-io budget on one thread, and the
//! shared handle's bound under threads.
//!
//! The budget buckets time: buckets of `w = ttl / 16`, and at time `now` the window
//! holds the calls of the buckets `bucket(now) - 15 ..= bucket(now)`. The model keeps
//! every call's time in a `Vec` and applies that membership rule to each; a separate
//! property pins what it means in time: every call of the last `15 w` is in the
//! window, none of `16 w` ago or older is.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use proptest::prelude::*;
use sluice::breaker::{Clock, ManualClock};
use sluice::retry::{
    MAX_PERCENT, MAX_TTL, MIN_TTL, RetryBudget, RetryBudgetConfig, RetryBudgetConfigError,
    SharedRetryBudget, WINDOW_BUCKETS,
};

/// The reference: every deposit's and withdrawal's time, counted exactly.
#[derive(Debug, Default)]
struct Model {
    ttl_nanos: u64,
    min_per_second: u64,
    percent: u64,
    deposits: Vec<u64>,
    withdrawals: Vec<u64>,
}

impl Model {
    fn new(config: (Duration, u32, u32)) -> Self {
        let (ttl, min_per_second, percent) = config;
        Self {
            ttl_nanos: u64::try_from(ttl.as_nanos()).expect("ttl fits"),
            min_per_second: u64::from(min_per_second),
            percent: u64::from(percent),
            ..Self::default()
        }
    }

    fn width(&self) -> u64 {
        self.ttl_nanos / WINDOW_BUCKETS as u64
    }

    fn reserve(&self) -> u64 {
        // floor(min_per_second * ttl), ttl in seconds.
        self.min_per_second * self.ttl_nanos / 1_000_000_000
    }

    /// Whether a call at `t` is in the window at `now`.
    fn in_window(&self, t: u64, now: u64) -> bool {
        now / self.width() - t / self.width() < WINDOW_BUCKETS as u64
    }

    fn counts(&self, now: u64) -> (u64, u64) {
        let count = |times: &[u64]| times.iter().filter(|&&t| self.in_window(t, now)).count();
        (
            count(&self.deposits) as u64,
            count(&self.withdrawals) as u64,
        )
    }

    fn deposit(&mut self, now: u64) {
        self.deposits.push(now);
    }

    fn try_withdraw(&mut self, now: u64) -> bool {
        let (d, w) = self.counts(now);
        let granted = 100 * (w + 1) <= self.percent * d + 100 * self.reserve();
        if granted {
            self.withdrawals.push(now);
        }
        granted
    }

    fn balance(&self, now: u64) -> u64 {
        let (d, w) = self.counts(now);
        (self.percent * d / 100 + self.reserve()).saturating_sub(w)
    }
}

fn config_of((ttl, min_per_second, percent): (Duration, u32, u32)) -> RetryBudgetConfig {
    RetryBudgetConfig::default()
        .ttl(ttl)
        .min_per_second(min_per_second)
        .percent(percent)
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Deposit,
    Withdraw,
    Balance,
}

fn arb_config() -> impl Strategy<Value = (Duration, u32, u32)> {
    let ttl = prop_oneof![
        Just(Duration::from_secs(1)),
        Just(Duration::from_secs(10)),
        // Not a multiple of 16 ns: the bucket width is rounded down.
        (1_000_000_000u64..=60_000_000_000).prop_map(Duration::from_nanos),
    ];
    (
        ttl,
        0u32..4,
        prop_oneof![Just(0u32), 1u32..=100, 100u32..=MAX_PERCENT],
    )
}

/// Steps in nanoseconds: mostly within a bucket, sometimes across a few, sometimes
/// past the whole window.
fn arb_step() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => Just(0u64),
        6 => 0u64..100_000_000,
        2 => 0u64..3_000_000_000,
        1 => 0u64..120_000_000_000,
    ]
}

fn arb_ops() -> impl Strategy<Value = Vec<(u64, Op)>> {
    let op = prop_oneof![
        4 => Just(Op::Deposit),
        4 => Just(Op::Withdraw),
        1 => Just(Op::Balance),
    ];
    proptest::collection::vec((arb_step(), op), 1..400)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// For any sequence of deposits and withdrawals at nondecreasing times, the
    /// sans-io budget grants exactly when the model grants, and has its balance; the
    /// shared handle on a manual clock, used from one thread, does the same, and so
    /// does one given every reading (`deposit_at`, `try_withdraw_at`...) whose own
    /// clock never moves.
    #[test]
    fn budget_and_shared_handle_agree_with_the_model(
        config in arb_config(),
        start in 0u64..1_000_000_000_000,
        ops in arb_ops(),
    ) {
        let mut model = Model::new(config);
        let mut budget = RetryBudget::try_new(config_of(config)).expect("valid");
        let clock = ManualClock::new();
        let shared = SharedRetryBudget::try_with_clock(config_of(config), clock.clone())
            .expect("valid");
        let given = SharedRetryBudget::try_with_clock(config_of(config), ManualClock::new())
            .expect("valid");
        prop_assert_eq!(budget.reserve(), model.reserve());
        let mut now = start;
        for (i, (step, op)) in ops.into_iter().enumerate() {
            now += step;
            let at = Duration::from_nanos(now);
            clock.set(at);
            match op {
                Op::Deposit => {
                    model.deposit(now);
                    budget.deposit(at);
                    shared.deposit();
                    given.deposit_at(at);
                }
                Op::Withdraw => {
                    let expected = model.try_withdraw(now);
                    prop_assert_eq!(budget.try_withdraw(at), expected, "step {}", i);
                    prop_assert_eq!(shared.try_withdraw(), expected, "step {} (shared)", i);
                    prop_assert_eq!(given.try_withdraw_at(at), expected, "step {} (given)", i);
                }
                Op::Balance => {}
            }
            prop_assert_eq!(budget.window_counts(at), model.counts(now), "step {}", i);
            prop_assert_eq!(shared.window_counts(), model.counts(now), "step {}", i);
            prop_assert_eq!(budget.balance(at), model.balance(now), "step {}", i);
            prop_assert_eq!(shared.balance(), model.balance(now), "step {}", i);
            prop_assert_eq!(given.window_counts_at(at), model.counts(now), "step {}", i);
            prop_assert_eq!(given.balance_at(at), model.balance(now), "step {}", i);
        }
    }

    /// What the window means in time, exactly: a call made `age` ago is in it if
    /// `age < 15 w`, and out of it if `age >= 16 w` (`w = ttl / 16`, rounded down);
    /// in between it depends on where the bucket edges fall, by the bucket rule.
    #[test]
    fn the_window_holds_the_last_15_sixteenths_of_ttl_and_nothing_older_than_ttl(
        ttl in 1_000_000_000u64..=60_000_000_000,
        t in 0u64..1_000_000_000_000,
        age in 0u64..70_000_000_000,
    ) {
        let config = RetryBudgetConfig::default()
            .ttl(Duration::from_nanos(ttl))
            .min_per_second(0)
            .percent(100);
        let mut budget = RetryBudget::new(config);
        budget.deposit(Duration::from_nanos(t));
        let deposits = budget.window_counts(Duration::from_nanos(t + age)).requests;
        let w = ttl / 16;
        if age < 15 * w {
            prop_assert_eq!(deposits, 1);
        }
        if age >= 16 * w {
            prop_assert_eq!(deposits, 0);
        }
        let same_rule = (t + age) / w - t / w < 16;
        prop_assert_eq!(deposits, u64::from(same_rule));
        prop_assert_eq!(budget.balance(Duration::from_nanos(t + age)), u64::from(same_rule));
    }
}

/// A `now` earlier than the latest one seen is taken as the latest (as the breaker
/// does), so a budget fed a clock that steps back never un-expires anything.
#[test]
fn a_late_now_counts_at_the_latest_time() {
    let config = RetryBudgetConfig::default()
        .ttl(Duration::from_secs(1))
        .min_per_second(0)
        .percent(100);
    let mut budget = RetryBudget::new(config);
    budget.deposit(Duration::ZERO);
    budget.deposit(Duration::from_secs(5));
    // Back at 0: counted at 5 s, where the first deposit is long gone.
    assert_eq!(budget.window_counts(Duration::ZERO), (1, 0));
    assert!(budget.try_withdraw(Duration::ZERO));
    assert!(!budget.try_withdraw(Duration::from_millis(1)));
}

/// The outage of issue 17: every request fails and wants 3 retries, 200 requests
/// within one window at 20 %: at most `0.2 * 200 + R` retries, and (there being always
/// demand) exactly that, for the sans-io budget and the shared handle alike.
#[test]
fn an_outage_gets_at_most_its_share_plus_the_reserve() {
    for min_per_second in [0, 1, 10] {
        let config = RetryBudgetConfig::default()
            .ttl(Duration::from_secs(10))
            .min_per_second(min_per_second)
            .percent(20);
        let reserve = u64::from(min_per_second) * 10;
        let bound = 200 * 20 / 100 + reserve;

        let mut budget = RetryBudget::new(config);
        let clock = ManualClock::new();
        let shared = SharedRetryBudget::with_clock(config, clock.clone());
        let (mut granted, mut granted_shared) = (0u64, 0u64);
        // 200 requests over 5 s (25 ms apart), all within one window of 10 s.
        for i in 0..200u64 {
            let now = Duration::from_millis(1_000 + 25 * i);
            clock.set(now);
            budget.deposit(now);
            shared.deposit();
            for _ in 0..3 {
                if budget.try_withdraw(now) {
                    granted += 1;
                }
                if shared.try_withdraw() {
                    granted_shared += 1;
                }
            }
        }
        assert_eq!(granted, bound, "min_per_second {min_per_second}");
        assert_eq!(granted_shared, bound, "min_per_second {min_per_second}");
    }
}

/// A long outage: the retries in every window of time stay within the share of that
/// window's requests plus the reserve, checked over 60 s of requests at 100 per second
/// against a 10 s window, by counting, for each retry granted, the retries and the
/// requests of the window it was granted in.
#[test]
fn a_long_outage_stays_within_the_rule_at_every_grant() {
    let config = RetryBudgetConfig::default()
        .ttl(Duration::from_secs(10))
        .min_per_second(2)
        .percent(10);
    let mut model = Model::new((Duration::from_secs(10), 2, 10));
    let mut budget = RetryBudget::new(config);
    let mut granted = 0u64;
    for i in 0..6_000u64 {
        let now = 10_000_000 * i;
        let at = Duration::from_nanos(now);
        budget.deposit(at);
        model.deposit(now);
        for _ in 0..3 {
            let ok = budget.try_withdraw(at);
            assert_eq!(ok, model.try_withdraw(now));
            if ok {
                granted += 1;
                let (d, w) = model.counts(now);
                assert!(w <= d / 10 + 20, "at {now}: {w} retries for {d} requests");
            }
        }
    }
    // Any 15 buckets of time (9.375 s) hold at most the limit of the window of their
    // last grant, which covers them: 10 % of its 1,000 requests plus 20. Seven such
    // spans cover the 60 s. And at least 10 % of all requests were granted.
    assert!(granted <= 7 * (1_000 / 10 + 20), "{granted}");
    assert!(granted >= 6_000 / 10, "{granted}");
}

#[test]
fn an_invalid_config_is_refused_with_its_error_and_corrected_by_new() {
    let base = RetryBudgetConfig::default();
    assert_eq!(base.validate(), Ok(()));
    for ttl in [
        Duration::ZERO,
        Duration::from_millis(999),
        Duration::from_secs(60) + Duration::from_nanos(1),
    ] {
        let refused = RetryBudgetConfigError::TtlOutOfRange { ttl };
        assert_eq!(base.ttl(ttl).validate(), Err(refused));
        assert_eq!(RetryBudget::try_new(base.ttl(ttl)), Err(refused));
        assert!(SharedRetryBudget::try_new(base.ttl(ttl)).is_err());
    }
    for ttl in [MIN_TTL, MAX_TTL] {
        assert_eq!(base.ttl(ttl).validate(), Ok(()));
    }
    let too_high = RetryBudgetConfigError::PercentTooHigh {
        percent: MAX_PERCENT + 1,
        max: MAX_PERCENT,
    };
    assert_eq!(base.percent(MAX_PERCENT + 1).validate(), Err(too_high));
    assert_eq!(base.percent(MAX_PERCENT).validate(), Ok(()));
    assert!(too_high.to_string().contains("1001"));

    // `new` corrects instead: clamped into range, never a panic.
    let zero = RetryBudget::new(base.ttl(Duration::ZERO).percent(u32::MAX));
    assert_eq!(
        *zero.config(),
        base.ttl(MIN_TTL).percent(MAX_PERCENT),
        "clamped"
    );
    let long = SharedRetryBudget::new(base.ttl(Duration::MAX).min_per_second(u32::MAX));
    assert_eq!(
        long.config(),
        base.ttl(MAX_TTL).min_per_second(u32::MAX),
        "clamped"
    );
    // The largest reserve does not overflow: u32::MAX per second over 60 s.
    assert_eq!(
        RetryBudget::new(long.config()).reserve(),
        u64::from(u32::MAX) * 60
    );
    assert!(long.balance() >= u64::from(u32::MAX) * 60);
}

#[test]
fn zero_percent_and_no_reserve_refuses_everything_and_the_reserve_alone_comes_back() {
    let mut never = RetryBudget::new(RetryBudgetConfig::default().min_per_second(0).percent(0));
    for i in 0..100 {
        never.deposit(Duration::from_millis(i));
        assert!(!never.try_withdraw(Duration::from_millis(i)));
    }
    // Only a reserve: 3 per second over 1 s, spent at once, back a window later.
    let config = RetryBudgetConfig::default()
        .ttl(Duration::from_secs(1))
        .min_per_second(3)
        .percent(0);
    let mut reserve = RetryBudget::new(config);
    let t = Duration::from_secs(7);
    assert_eq!(reserve.balance(t), 3);
    assert!((0..3).all(|_| reserve.try_withdraw(t)));
    assert!(!reserve.try_withdraw(t + Duration::from_millis(900)));
    assert_eq!(reserve.balance(t + Duration::from_secs(1)), 3);
}

#[test]
fn the_budgets_allocate_nothing() {
    let config = RetryBudgetConfig::default();
    let mut budget = RetryBudget::new(config);
    let clock = ManualClock::new();
    let shared = SharedRetryBudget::with_clock(config, clock.clone());
    let allocations = allocation_counter::measure(|| {
        for i in 0..1_000u64 {
            let now = Duration::from_millis(37 * i);
            budget.deposit(now);
            std::hint::black_box(budget.try_withdraw(now));
            std::hint::black_box(budget.balance(now));
            clock.set(now);
            shared.deposit();
            std::hint::black_box(shared.try_withdraw());
            std::hint::black_box(shared.balance());
        }
    });
    assert_eq!(allocations.count_total, 0);
}

/// Runs `f(thread index)` on `threads` threads released together.
fn on_threads<T: Send>(threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let (barrier, f) = (&barrier, &f);
                s.spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("no panic"))
            .collect()
    })
}

/// Within one bucket the shared handle is exact under threads: no deposit is lost,
/// and racing withdrawals grant exactly the limit, never one more.
#[test]
fn under_threads_in_one_bucket_the_shared_budget_is_exact() {
    for round in 0..20u64 {
        let clock = ManualClock::new();
        clock.set(Duration::from_secs(round * 1_000));
        let config = RetryBudgetConfig::default().min_per_second(1).percent(20);
        let budget = SharedRetryBudget::with_clock(config, clock);
        on_threads(4, |_| {
            for _ in 0..250 {
                budget.deposit();
            }
        });
        assert_eq!(budget.window_counts(), (1_000, 0));
        let limit = 1_000 * 20 / 100 + 10;
        let granted: u64 = on_threads(4, |_| {
            (0..200).filter(|_| budget.try_withdraw()).count() as u64
        })
        .into_iter()
        .sum();
        assert_eq!(granted, limit, "round {round}");
        assert_eq!(budget.window_counts(), (1_000, limit));
        assert_eq!(budget.balance(), 0);
    }
}

/// Across bucket boundaries (the clock moving while threads withdraw), the shared
/// handle may overshoot the limit by at most one per other racing thread, and no
/// more: `limit <= granted <= limit + threads - 1`. The deposits are all in bucket 0
/// and the clock stays within the window's 16 buckets, so the limit is fixed.
#[test]
fn under_threads_across_buckets_the_overshoot_is_below_the_thread_count() {
    const THREADS: usize = 3;
    let ttl = Duration::from_secs(1);
    let width = ttl / 16;
    let mut worst = 0;
    for round in 0..50u64 {
        let clock = ManualClock::new();
        let start = Duration::from_secs(round * 100);
        clock.set(start);
        let config = RetryBudgetConfig::default()
            .ttl(ttl)
            .min_per_second(0)
            .percent(50);
        let budget = SharedRetryBudget::with_clock(config, clock.clone());
        for _ in 0..1_000 {
            budget.deposit();
        }
        let limit = 500;
        let done = AtomicBool::new(false);
        // Thread 0 moves the clock a third of a bucket at a time, up to bucket 15;
        // the others withdraw until the limit is surely reached.
        let granted: u64 = on_threads(THREADS + 1, |i| {
            if i == 0 {
                let mut at = start;
                while !done.load(Ordering::Acquire) && at + width / 3 < start + width * 15 {
                    at += width / 3;
                    clock.set(at);
                    std::thread::yield_now();
                }
                0
            } else {
                let n = (0..400).filter(|_| budget.try_withdraw()).count() as u64;
                done.store(true, Ordering::Release);
                n
            }
        })
        .into_iter()
        .sum();
        assert!(
            (limit..=limit + THREADS as u64 - 1).contains(&granted),
            "round {round}: {granted} granted, limit {limit}"
        );
        worst = worst.max(granted - limit);
    }
    assert!(worst < THREADS as u64);
}

/// A clock a test drives step by step: its time is a [`ManualClock`]'s, and once
/// `hold` is set the next reader is held right after its reading (two waits on
/// `gate`: "read", then "released"), as a thread descheduled between reading the
/// clock and counting. No sleep: the test decides every step.
#[derive(Clone)]
struct GatedClock {
    time: ManualClock,
    hold: Arc<AtomicBool>,
    gate: Arc<Barrier>,
}

impl Clock for GatedClock {
    fn now(&self) -> Duration {
        let now = self.time.now();
        if self.hold.swap(false, Ordering::SeqCst) {
            self.gate.wait();
            self.gate.wait();
        }
        now
    }
}

/// Issue 17's wrong refusal on two threads, step by step: thread B reads the clock
/// for its deposit (bucket 0, where an earlier call left its counts in the ring) and
/// is held there while the clock moves a whole window on and thread A deposits and
/// withdraws. B's deposit used to land in its own, expired, bucket 0 (its ring slot
/// still held bucket 0), so the withdrawal it paid for was refused at 100 %; the
/// sans-io budget fed the same readings counts a late `now` at its latest and grants
/// it. It is counted at the newest bucket now, and granted.
#[test]
fn a_deposit_read_late_by_a_window_still_pays_for_its_own_withdrawal() {
    let config = RetryBudgetConfig::default()
        .ttl(Duration::from_secs(1))
        .min_per_second(0)
        .percent(100);
    let clock = GatedClock {
        time: ManualClock::new(),
        hold: Arc::new(AtomicBool::new(false)),
        gate: Arc::new(Barrier::new(2)),
    };
    let budget = SharedRetryBudget::with_clock(config, clock.clone());
    let later = Duration::from_millis(1_100); // bucket 17: the window is 2..=17
    budget.deposit();
    assert!(budget.try_withdraw());
    clock.hold.store(true, Ordering::SeqCst);
    std::thread::scope(|s| {
        let b = s.spawn(|| {
            budget.deposit(); // reads 0 s, held
            budget.try_withdraw()
        });
        clock.gate.wait(); // B has read 0 s
        clock.time.set(later);
        budget.deposit(); // A
        assert!(budget.try_withdraw());
        clock.gate.wait(); // B counts its deposit, then withdraws at 1.1 s
        assert!(
            b.join().expect("no panic"),
            "B's own deposit pays for its retry"
        );
    });
    assert_eq!(budget.window_counts(), (2, 2));

    // The sans-io budget, fed the same readings in the same order, grants it too.
    let mut sans_io = RetryBudget::new(config);
    sans_io.deposit(Duration::ZERO);
    assert!(sans_io.try_withdraw(Duration::ZERO));
    sans_io.deposit(later);
    assert!(sans_io.try_withdraw(later));
    sans_io.deposit(Duration::ZERO); // B's late reading
    assert!(sans_io.try_withdraw(later));
    assert_eq!(sans_io.window_counts(later), (2, 2));
}

/// A clock that counts its readings.
#[derive(Clone, Default)]
struct CountingClock {
    time: ManualClock,
    reads: Arc<AtomicU64>,
}

impl Clock for CountingClock {
    fn now(&self) -> Duration {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.time.now()
    }
}

/// The `_at` methods take the caller's reading and read no clock; `now` is one
/// reading of the handle's clock, the others one each.
#[test]
fn the_at_methods_read_no_clock() {
    let clock = CountingClock::default();
    clock.time.set(Duration::from_secs(3));
    let config = RetryBudgetConfig::default().min_per_second(0).percent(50);
    let budget = SharedRetryBudget::with_clock(config, clock.clone());
    let reads = || clock.reads.load(Ordering::SeqCst);
    let now = budget.now();
    assert_eq!((now, reads()), (Duration::from_secs(3), 1));
    for _ in 0..4 {
        budget.deposit_at(now);
    }
    assert!(budget.try_withdraw_at(now));
    assert!(budget.try_withdraw_at(now));
    assert!(!budget.try_withdraw_at(now));
    assert_eq!(budget.window_counts_at(now), (4, 2));
    assert_eq!(budget.balance_at(now), 0);
    assert_eq!(reads(), 1, "no reading but `now`'s");
    budget.deposit();
    assert!(!budget.try_withdraw());
    assert_eq!(budget.window_counts(), (5, 2));
    assert_eq!(budget.balance(), 0);
    assert_eq!(reads(), 5, "one reading per call");
}

/// A reading passed late (taken at a request's start, say) counts at the newest
/// bucket any call has passed, as a late clock reading does, and as the sans-io
/// budget counts a late `now`; the same with the handle reading its clock.
#[test]
fn a_late_reading_passed_counts_at_the_newest_bucket() {
    let config = RetryBudgetConfig::default()
        .ttl(Duration::from_secs(1))
        .min_per_second(0)
        .percent(100);
    let budget = SharedRetryBudget::with_clock(config, ManualClock::new());
    let mut sans_io = RetryBudget::new(config);
    let started = Duration::from_millis(100);
    let later = Duration::from_millis(1_300); // a window on: `started` has expired
    budget.deposit_at(started);
    sans_io.deposit(started);
    budget.deposit_at(later);
    sans_io.deposit(later);
    assert_eq!(budget.window_counts_at(later), (1, 0));
    // The late one: counted at 1.3 s, and it pays for a retry there.
    budget.deposit_at(started);
    sans_io.deposit(started);
    assert_eq!(budget.window_counts_at(later), (2, 0));
    assert_eq!(sans_io.window_counts(later), (2, 0));
    assert!(budget.try_withdraw_at(started));
    assert!(sans_io.try_withdraw(started));
    assert!(budget.try_withdraw_at(later));
    assert!(sans_io.try_withdraw(later));
    assert!(!budget.try_withdraw_at(later));
    assert!(!sans_io.try_withdraw(later));
    assert_eq!(budget.window_counts_at(started), (2, 2));
    assert_eq!(sans_io.window_counts(started), (2, 2));
}
