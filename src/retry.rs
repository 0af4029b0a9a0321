//! A retry budget: retries (and hedges) may add at most a share of the recent
//! requests, plus a small floor, so that a pool in outage gets no retry storm.
//!
//! Finagle's `RetryBudget` is the model: every request *deposits*, every retry (and
//! every hedge: they draw on the same budget) *withdraws*, both expire after a time
//! to live, and a fixed reserve lets a client that makes few requests retry at all.
//!
//! * [`RetryBudget`] is the sans-io budget: `no_std`, no allocation (a fixed ring of
//!   [`WINDOW_BUCKETS`] buckets), no clock. Every call takes `now`, a [`Duration`]
//!   since an origin the caller picks, as the [`CircuitBreaker`](crate::breaker::CircuitBreaker)
//!   does.
//! * [`SharedRetryBudget`] (feature `std`) is the same rule behind a `Clone + Send +
//!   Sync` handle that reads a [`Clock`](crate::breaker::Clock), or takes the
//!   caller's reading of it (`deposit_at`, `try_withdraw_at`), with atomics only (no
//!   lock). What it gives up under races is said on the type.
//!
//! # The rule
//!
//! Given a [`RetryBudgetConfig`] of `ttl`, `min_per_second` and `percent`:
//!
//! * **Buckets.** Time is cut into buckets of `w = ttl / 16` (rounded down to a whole
//!   nanosecond; exact for a `ttl` in whole milliseconds). A call at `now` belongs to
//!   bucket `floor(now / w)`.
//! * **Window.** At `now`, in bucket `E`, the window holds the deposits `D` and
//!   withdrawals `W` made in buckets `E - 15 ..= E`: every call of the last `15 w`
//!   (15/16 of `ttl`) is in it, none older than `16 w` (`ttl`) is. A withdrawal
//!   expires like a deposit, so spent retries come back when they age out.
//! * **Reserve.** `R = floor(min_per_second * ttl)`, with `ttl` in seconds (10 per
//!   second over 10 s: 100). It is a standing allowance of the window, not a rate: a
//!   burst may spend it at once, and it comes back as those withdrawals expire, so
//!   over time it allows about `min_per_second` retries per second.
//! * **Grant.** A withdrawal is granted, and counted, when
//!   `100 * (W + 1) <= percent * D + 100 * R`, that is when `W` is below the
//!   *limit* `floor(percent * D / 100) + R`. The balance is `limit - W` (0 when
//!   withdrawals made under a larger window outlive the deposits that allowed them).
//!
//! So within any one window (any `15 w` of time), a client in full outage that makes
//! `n` requests gets at most `floor(percent * n / 100) + R` retries and hedges,
//! however many each request would like.
//!
//! # Driving it
//!
//! Deposit once per client request (its first attempt), not per attempt; ask
//! [`try_withdraw`](RetryBudget::try_withdraw) before every retry and every hedge,
//! and make it only if granted (a refused retry is not made: the last attempt's
//! answer stands).
//!
//! ```
//! use core::time::Duration;
//! use sluice::retry::{RetryBudget, RetryBudgetConfig};
//!
//! // 20 % of the requests of the last 10 s, plus 1 retry per second (a reserve of 10).
//! let config = RetryBudgetConfig::default()
//!     .ttl(Duration::from_secs(10))
//!     .min_per_second(1)
//!     .percent(20);
//! let mut budget = RetryBudget::new(config);
//! let now = Duration::from_secs(100);
//!
//! // A full outage: 50 requests, each failing and asking for up to 3 retries.
//! let mut retries = 0;
//! for _ in 0..50 {
//!     budget.deposit(now);
//!     for _ in 0..3 {
//!         if !budget.try_withdraw(now) {
//!             break; // refused: the failed answer stands
//!         }
//!         retries += 1;
//!     }
//! }
//! assert_eq!(retries, 50 * 20 / 100 + 10);
//! assert_eq!(budget.balance(now), 0);
//!
//! // Ten seconds later the window has moved past all of it: the reserve is back.
//! assert_eq!(budget.balance(now + Duration::from_secs(10)), 10);
//! ```

use core::time::Duration;

#[cfg(feature = "std")]
pub use self::shared::SharedRetryBudget;

/// What a budget's window holds now: the requests deposited (`D`) and the retries
/// withdrawn (`W`). It compares equal to the pair `(requests, retries)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RetryWindow {
    /// Requests deposited in the window.
    pub requests: u64,
    /// Retries (and hedges) withdrawn in the window.
    pub retries: u64,
}

impl From<(u64, u64)> for RetryWindow {
    fn from((requests, retries): (u64, u64)) -> Self {
        Self { requests, retries }
    }
}

impl PartialEq<(u64, u64)> for RetryWindow {
    fn eq(&self, &(requests, retries): &(u64, u64)) -> bool {
        (self.requests, self.retries) == (requests, retries)
    }
}

/// How many buckets the window is cut into: it slides in steps of `ttl / 16`.
pub const WINDOW_BUCKETS: usize = 16;

/// The shortest `ttl` a [`RetryBudgetConfig`] may have (1 s, as Finagle's).
pub const MIN_TTL: Duration = Duration::from_secs(1);

/// The longest `ttl` a [`RetryBudgetConfig`] may have (60 s, as Finagle's).
pub const MAX_TTL: Duration = Duration::from_secs(60);

/// The largest `percent` (1000: ten retries per request).
pub const MAX_PERCENT: u32 = 1000;

/// What a [`RetryBudget`] allows: the window's time to live, the reserve per second and
/// the share of the requests that may be retried.
///
/// Build it from [`RetryBudgetConfig::default()`] (Finagle's default: 10 s, 10 per
/// second, 20 %) with the consuming builder methods; they store what they are given,
/// and [`validate`](Self::validate) (or [`RetryBudget::try_new`]) says what is wrong
/// with it.
///
/// ```
/// use core::time::Duration;
/// use sluice::retry::{RetryBudgetConfig, RetryBudgetConfigError};
///
/// let config = RetryBudgetConfig::default()
///     .ttl(Duration::from_secs(10))
///     .min_per_second(5)
///     .percent(10);
/// assert_eq!(config.validate(), Ok(()));
/// assert_eq!(
///     RetryBudgetConfig::default().ttl(Duration::ZERO).validate(),
///     Err(RetryBudgetConfigError::TtlOutOfRange { ttl: Duration::ZERO }),
/// );
/// assert_eq!(
///     RetryBudgetConfig::default().percent(1001).validate(),
///     Err(RetryBudgetConfigError::PercentTooHigh { percent: 1001, max: 1000 }),
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetryBudgetConfig {
    ttl: Duration,
    min_per_second: u32,
    percent: u32,
}

impl Default for RetryBudgetConfig {
    /// Finagle's default: a 10 s window, 10 retries per second in reserve (100 in the
    /// window), and 20 % of the requests.
    fn default() -> Self {
        Self::new()
    }
}

/// Why a [`RetryBudgetConfig`] is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum RetryBudgetConfigError {
    /// The `ttl` is zero, below [`MIN_TTL`] or above [`MAX_TTL`].
    #[error("the retry budget's ttl must be between 1 s and 60 s, not {ttl:?}")]
    TtlOutOfRange {
        /// The requested `ttl`.
        ttl: Duration,
    },
    /// `percent` is above [`MAX_PERCENT`].
    #[error("the retry budget's percent must be at most {max}, not {percent}")]
    PercentTooHigh {
        /// The requested percent.
        percent: u32,
        /// [`MAX_PERCENT`].
        max: u32,
    },
}

impl RetryBudgetConfig {
    /// The default configuration (see [`Default`]), usable in `const` context.
    pub const fn new() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            min_per_second: 10,
            percent: 20,
        }
    }

    /// How long a deposit or a withdrawal counts (default 10 s; from [`MIN_TTL`] to
    /// [`MAX_TTL`]). The window slides in steps of a sixteenth of it.
    #[must_use]
    pub const fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The reserve, as retries per second (default 10): the window always allows
    /// `floor(min_per_second * ttl)` retries (`ttl` in seconds) on top of its share of
    /// the requests. 0 gives no reserve.
    #[must_use]
    pub const fn min_per_second(mut self, retries: u32) -> Self {
        self.min_per_second = retries;
        self
    }

    /// The share of the window's requests that may be retried, in percent (default
    /// 20; at most [`MAX_PERCENT`]): 20 allows one retry per 5 requests, 200 two per
    /// request. With 0 only the reserve is left; with 0 and no reserve the budget
    /// refuses every retry.
    #[must_use]
    pub const fn percent(mut self, percent: u32) -> Self {
        self.percent = percent;
        self
    }

    /// Says whether this configuration is usable, and if not, the first thing wrong.
    pub fn validate(&self) -> Result<(), RetryBudgetConfigError> {
        if self.ttl < MIN_TTL || self.ttl > MAX_TTL {
            return Err(RetryBudgetConfigError::TtlOutOfRange { ttl: self.ttl });
        }
        if self.percent > MAX_PERCENT {
            return Err(RetryBudgetConfigError::PercentTooHigh {
                percent: self.percent,
                max: MAX_PERCENT,
            });
        }
        Ok(())
    }

    /// The window's reserve `R = floor(min_per_second * ttl)` (`ttl` in seconds) for
    /// this configuration as given; [`RetryBudget::reserve`] gives it after
    /// [`RetryBudget::new`]'s corrections.
    pub const fn reserve(&self) -> u64 {
        let retries = self.min_per_second as u128 * self.ttl.as_nanos() / 1_000_000_000;
        if retries > u64::MAX as u128 {
            u64::MAX
        } else {
            retries as u64
        }
    }

    /// The nearest usable configuration: a `ttl` out of range is clamped into
    /// [`MIN_TTL`]`..=`[`MAX_TTL`], a `percent` above [`MAX_PERCENT`] is lowered to it.
    const fn sanitized(mut self) -> Self {
        if self.ttl.as_nanos() < MIN_TTL.as_nanos() {
            self.ttl = MIN_TTL;
        } else if self.ttl.as_nanos() > MAX_TTL.as_nanos() {
            self.ttl = MAX_TTL;
        }
        if self.percent > MAX_PERCENT {
            self.percent = MAX_PERCENT;
        }
        self
    }
}

/// The whole nanoseconds of `now`, saturating (584 years), without the `u128` of
/// [`Duration::as_nanos`].
#[inline]
const fn nanos_of(now: Duration) -> u64 {
    now.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(now.subsec_nanos() as u64)
}

/// The rule of a valid configuration, in the integers the budgets compute with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Rule {
    /// A bucket's width in nanoseconds: `ttl / 16`, at least 62.5 ms.
    width_nanos: u64,
    /// `floor(2^64 / width_nanos)`: a bucket number is a multiplication by it and at
    /// most one correction, not a 64-bit division (tens of cycles) per call.
    reciprocal: u64,
    /// `percent`, at most [`MAX_PERCENT`].
    percent: u64,
    /// `R`.
    reserve: u64,
    /// `100 * R`.
    hundred_reserve: u64,
}

impl Rule {
    /// The rule of `config`, corrected first.
    const fn new(config: RetryBudgetConfig) -> Self {
        let config = config.sanitized();
        // A valid ttl is at most 60 s: its nanoseconds fit in a u64.
        let width_nanos = config.ttl.as_nanos() as u64 / WINDOW_BUCKETS as u64;
        Self {
            width_nanos,
            // width_nanos >= 62_500_000 > 1: the quotient fits in a u64.
            reciprocal: ((1u128 << 64) / width_nanos as u128) as u64,
            percent: config.percent as u64,
            reserve: config.reserve(),
            // R <= (2^32 - 1) * 60 < 2^38: no overflow.
            hundred_reserve: 100 * config.reserve(),
        }
    }

    /// The bucket of time `now`: `floor(now / w)`, exactly (the shared handle's).
    #[cfg(any(feature = "std", test))]
    #[inline]
    fn bucket(&self, now: Duration) -> u64 {
        self.bucket_of_nanos(nanos_of(now))
    }

    /// The first nanosecond of the bucket after `bucket` (`(bucket + 1) * w`),
    /// saturating: `u64::MAX` for the last bucket a `u64` of nanoseconds reaches.
    #[inline]
    fn end_of(&self, bucket: u64) -> u64 {
        // bucket <= u64::MAX / w, and w > 1: bucket + 1 does not overflow.
        (bucket + 1).saturating_mul(self.width_nanos)
    }

    /// `floor(nanos / w)` by the reciprocal: with `m = floor(2^64 / w)`,
    /// `q = floor(nanos * m / 2^64)` is `floor(nanos / w)` or one less (the error of
    /// `m` is below 1, so that of `nanos * m / 2^64` is below `nanos / 2^64 <= 1`),
    /// and the remainder says which.
    #[inline]
    fn bucket_of_nanos(&self, nanos: u64) -> u64 {
        let q = ((u128::from(nanos) * u128::from(self.reciprocal)) >> 64) as u64;
        // q * w <= nanos: no overflow.
        if nanos - q * self.width_nanos >= self.width_nanos {
            q + 1
        } else {
            q
        }
    }

    /// The limit of withdrawals in a window holding `deposits`:
    /// `floor(percent * deposits / 100) + R`.
    fn limit(&self, deposits: u64) -> u64 {
        (self.percent.saturating_mul(deposits) / 100).saturating_add(self.reserve)
    }

    /// Whether one more withdrawal is granted in a window holding these counts:
    /// `100 * (W + 1) <= percent * D + 100 * R`, the same as `W < limit(D)` without
    /// the division. The budgets' counts are below 2^37 (16 buckets of at most
    /// 2^32 - 1), `percent <= 1000 < 2^10` and `100 * R < 2^45`: no overflow.
    #[inline]
    fn grants(&self, deposits: u64, withdrawals: u64) -> bool {
        100 * (withdrawals + 1) <= self.percent * deposits + self.hundred_reserve
    }

    /// The retries a window holding these counts would grant now.
    fn balance(&self, deposits: u64, withdrawals: u64) -> u64 {
        self.limit(deposits).saturating_sub(withdrawals)
    }
}

/// The sans-io retry budget: Finagle's `RetryBudget` with time as an input.
///
/// The rule is in the [module docs](self). Every method takes `now` (a [`Duration`]
/// since an origin the caller picks, never decreasing; a `now` before the latest one
/// seen is taken as the latest). It reads no clock, allocates nothing (two rings of
/// [`WINDOW_BUCKETS`] counts and the window's running totals, 224 bytes inline on 64-bit targets) and
/// never panics.
///
/// Cost: a [`deposit`](Self::deposit) or [`try_withdraw`](Self::try_withdraw) whose
/// `now` is in the latest bucket compares `now` with that bucket's end and adds one
/// to a count and to a total (a withdrawal first checks the rule against the totals):
/// no division, no pass over the ring. The first call of a later bucket computes its
/// number (a multiplication) and clears the buckets the window leaves behind (at
/// most [`WINDOW_BUCKETS`]). [`balance`](Self::balance) and
/// [`window_counts`](Self::window_counts) at a `now` past the latest bucket subtract
/// those buckets from the totals without clearing them.
///
/// Methods: [`deposit`](Self::deposit) once per request;
/// [`try_withdraw`](Self::try_withdraw) before each retry or hedge (granted: make it;
/// refused: don't); [`balance`](Self::balance) for metrics.
///
/// ```
/// use core::time::Duration;
/// use sluice::retry::{RetryBudget, RetryBudgetConfig};
///
/// // 50 %, no reserve, window of 1 s (buckets of 62.5 ms).
/// let config = RetryBudgetConfig::default()
///     .ttl(Duration::from_secs(1))
///     .min_per_second(0)
///     .percent(50);
/// let mut budget = RetryBudget::try_new(config).expect("a valid config");
/// let t = Duration::from_millis(10);
/// assert!(!budget.try_withdraw(t)); // nothing deposited, no reserve
/// budget.deposit(t);
/// assert!(!budget.try_withdraw(t)); // 50 % of one request is half a retry: 0
/// budget.deposit(t);
/// assert_eq!(budget.balance(t), 1);
/// assert!(budget.try_withdraw(t));
/// assert!(!budget.try_withdraw(t));
/// // They are in bucket 0, and count up to bucket 15 (to 999 ms)...
/// assert_eq!(budget.window_counts(Duration::from_millis(999)), (2, 1));
/// // ...and are gone at 1 s (bucket 16): the spent retry came back with them.
/// let later = Duration::from_secs(1);
/// assert_eq!(budget.window_counts(later), (0, 0));
/// budget.deposit(later);
/// budget.deposit(later);
/// assert!(budget.try_withdraw(later));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RetryBudget {
    config: RetryBudgetConfig,
    rule: Rule,
    /// The bucket of the latest `now` seen: `floor(latest / w)`.
    current: u64,
    /// The first nanosecond after bucket `current` (saturating): a `now` before it
    /// counts in `current`, with no bucket number computed.
    end: u64,
    /// The window's totals at bucket `current`: the sums of the two rings.
    deposits: u64,
    withdrawals: u64,
    /// The counts of the window's buckets, bucket `b` at index `b % 16`: the 16
    /// slots are exactly the buckets `current - 15 ..= current` (a slot is cleared
    /// when the window leaves its bucket behind).
    deposit_ring: [u32; WINDOW_BUCKETS],
    withdrawal_ring: [u32; WINDOW_BUCKETS],
}

impl RetryBudget {
    /// An empty budget (only the reserve to spend). An invalid `config` does not
    /// panic: a `ttl` out of range is clamped to [`MIN_TTL`] or [`MAX_TTL`], a
    /// `percent` above [`MAX_PERCENT`] lowered to it. Use [`try_new`](Self::try_new)
    /// to be told instead.
    pub const fn new(config: RetryBudgetConfig) -> Self {
        let config = config.sanitized();
        let rule = Rule::new(config);
        Self {
            config,
            rule,
            current: 0,
            end: rule.width_nanos,
            deposits: 0,
            withdrawals: 0,
            deposit_ring: [0; WINDOW_BUCKETS],
            withdrawal_ring: [0; WINDOW_BUCKETS],
        }
    }

    /// An empty budget, or what is wrong with `config` (see
    /// [`RetryBudgetConfig::validate`]).
    pub fn try_new(config: RetryBudgetConfig) -> Result<Self, RetryBudgetConfigError> {
        config.validate()?;
        Ok(Self::new(config))
    }

    /// The configuration in force (after [`new`](Self::new)'s corrections).
    pub const fn config(&self) -> &RetryBudgetConfig {
        &self.config
    }

    /// The window's reserve `R = floor(min_per_second * ttl)` (`ttl` in seconds).
    pub const fn reserve(&self) -> u64 {
        self.rule.reserve
    }

    /// A request was made at `now`: one deposit. Call it once per client request
    /// (its first attempt), not for its retries or hedges.
    #[inline]
    pub fn deposit(&mut self, now: Duration) {
        let i = self.slot(now);
        // A bucket's count saturates (2^32 - 1 calls in one bucket); the total
        // follows it, so it stays the sum of the ring.
        if self.deposit_ring[i] != u32::MAX {
            self.deposit_ring[i] += 1;
            self.deposits += 1;
        }
    }

    /// May a retry (or a hedge) be made at `now`? If granted, the withdrawal is
    /// counted and the caller must make it; if refused, nothing changes (beyond the
    /// latest `now`) and the retry must not be made.
    #[must_use = "a granted withdrawal is counted: make the retry, or it is spent for nothing"]
    #[inline]
    pub fn try_withdraw(&mut self, now: Duration) -> bool {
        let i = self.slot(now);
        if !self.rule.grants(self.deposits, self.withdrawals) {
            return false;
        }
        if self.withdrawal_ring[i] != u32::MAX {
            self.withdrawal_ring[i] += 1;
            self.withdrawals += 1;
        }
        true
    }

    /// The withdrawals [`try_withdraw`](Self::try_withdraw) would grant at `now` if no
    /// request came: the limit `floor(percent * D / 100) + R` less the window's
    /// withdrawals `W` (0 if they exceed it). Changes nothing.
    pub fn balance(&self, now: Duration) -> u64 {
        let (deposits, withdrawals) = self.window(now);
        self.rule.balance(deposits, withdrawals)
    }

    /// The deposits `D` and withdrawals `W` in the window at `now` (the counts the
    /// rule compares: for metrics and tests). Changes nothing.
    pub fn window_counts(&self, now: Duration) -> RetryWindow {
        self.window(now).into()
    }

    /// The ring index of the bucket a call at `now` counts in: the latest bucket, or
    /// a later one `now` is in, which the window moves to first.
    #[inline]
    fn slot(&mut self, now: Duration) -> usize {
        let nanos = nanos_of(now);
        if nanos >= self.end {
            self.advance(nanos);
        }
        (self.current % WINDOW_BUCKETS as u64) as usize
    }

    /// Moves the window to the bucket of `nanos` (not before `current`): the buckets
    /// it leaves behind are taken out of the totals and cleared.
    #[cold]
    fn advance(&mut self, nanos: u64) {
        let bucket = self.rule.bucket_of_nanos(nanos).max(self.current);
        if bucket - self.current >= WINDOW_BUCKETS as u64 {
            self.deposit_ring = [0; WINDOW_BUCKETS];
            self.withdrawal_ring = [0; WINDOW_BUCKETS];
            self.deposits = 0;
            self.withdrawals = 0;
        } else {
            // Slot `b % 16` holds bucket `b - 16`, in the window at `current` and
            // out of it from `b` on.
            for b in self.current + 1..=bucket {
                let i = (b % WINDOW_BUCKETS as u64) as usize;
                self.deposits -= u64::from(core::mem::take(&mut self.deposit_ring[i]));
                self.withdrawals -= u64::from(core::mem::take(&mut self.withdrawal_ring[i]));
            }
        }
        self.current = bucket;
        self.end = self.rule.end_of(bucket);
    }

    /// `(D, W)` in the window at `now` (at the latest bucket if `now` is before it).
    fn window(&self, now: Duration) -> (u64, u64) {
        let nanos = nanos_of(now);
        if nanos < self.end {
            return (self.deposits, self.withdrawals);
        }
        let bucket = self.rule.bucket_of_nanos(nanos).max(self.current);
        if bucket - self.current >= WINDOW_BUCKETS as u64 {
            return (0, 0);
        }
        let (mut deposits, mut withdrawals) = (self.deposits, self.withdrawals);
        for b in self.current + 1..=bucket {
            let i = (b % WINDOW_BUCKETS as u64) as usize;
            deposits -= u64::from(self.deposit_ring[i]);
            withdrawals -= u64::from(self.withdrawal_ring[i]);
        }
        (deposits, withdrawals)
    }
}

#[cfg(feature = "std")]
mod shared {
    use alloc::boxed::Box;
    use core::fmt;
    use core::time::Duration;

    use super::{RetryBudgetConfig, RetryBudgetConfigError, RetryWindow, Rule, WINDOW_BUCKETS};
    use crate::breaker::sync::{Arc, AtomicU64, Ordering};
    use crate::breaker::{Clock, StdClock};

    /// Under loom, a sequentially consistent fence. Loom models `SeqCst` accesses
    /// as acquire/release only, not their single total order, which `written` and
    /// `recompute` rely on; the fence gives loom that order. In a real build the
    /// `SeqCst` accesses alone give it (C++20's single total order `S`), and a fence
    /// would cost an `mfence` per call on x86.
    #[inline(always)]
    fn total_order() {
        #[cfg(sluice_loom)]
        loom::sync::atomic::fence(Ordering::SeqCst);
    }

    /// How far ahead of a caller's own bucket another bucket may be and still be
    /// taken as newer (a thread whose clock reading is late): 65 536 buckets, over an
    /// hour at the shortest `ttl`. A bucket farther "ahead" than that is an old one
    /// whose 32-bit number has wrapped.
    const AHEAD_HORIZON: u32 = 1 << 16;

    /// A word of the ring: the bucket's number (modulo 2^32) in the high half, its
    /// count in the low half. A zero count means an empty bucket, whatever its number.
    const fn pack(bucket: u32, count: u32) -> u64 {
        ((bucket as u64) << 32) | count as u64
    }

    const fn bucket_of(word: u64) -> u32 {
        (word >> 32) as u32
    }

    const fn count_of(word: u64) -> u32 {
        word as u32
    }

    /// Whether bucket `b` is newer than bucket `than` (modulo 2^32, within the
    /// horizon).
    const fn ahead(b: u32, than: u32) -> bool {
        let d = b.wrapping_sub(than);
        d != 0 && d < AHEAD_HORIZON
    }

    /// The word `word` becomes when one more call of bucket `bucket` is counted in it:
    /// added to its count if it holds that bucket, or a newer one (a caller whose
    /// clock reading is late by a whole window counts at the newer time, as the
    /// sans-io budget takes a late `now` as its latest); else a fresh bucket.
    #[inline]
    const fn counted(word: u64, bucket: u32) -> u64 {
        // The usual case first: the word holds this bucket, its count neither 0 nor
        // saturated; one more is `word + 1`.
        if bucket_of(word) == bucket && count_of(word).wrapping_sub(1) < u32::MAX - 1 {
            return word + 1;
        }
        counted_otherwise(word, bucket)
    }

    /// [`counted`] but for its usual case.
    const fn counted_otherwise(word: u64, bucket: u32) -> u64 {
        let held = bucket_of(word);
        if count_of(word) != 0 && (held == bucket || ahead(held, bucket)) {
            pack(held, count_of(word).saturating_add(1))
        } else {
            pack(bucket, 1)
        }
    }

    /// What the handles share.
    struct Inner {
        deposits: [AtomicU64; WINDOW_BUCKETS],
        withdrawals: [AtomicU64; WINDOW_BUCKETS],
        /// The newest bucket any call has read from the clock (modulo 2^32, in the
        /// low half; the high half is 1 once set): every call counts at it or later, never at an older reading of
        /// its own, as the sans-io budget counts a late `now` at its latest.
        newest: AtomicU64,
        /// The sums of the closed buckets of the window (see [`Inner::closed`]).
        closed_deposits: AtomicU64,
        closed_withdrawals: AtomicU64,
        config: RetryBudgetConfig,
        clock: Box<dyn Clock>,
    }

    /// The largest sum a closed-buckets cache holds (2^31 - 1 calls in the 15
    /// closed buckets of one window): a sum above it is taken as it.
    const CLOSED_MAX: u64 = (1 << 31) - 1;

    /// A closed-buckets cache word: the bucket it was computed for in the high half,
    /// a set bit (bit 31) and the sum below it. 0 is unset.
    const fn closed_word(current: u32, sum: u64) -> u64 {
        let sum = if sum > CLOSED_MAX { CLOSED_MAX } else { sum };
        ((current as u64) << 32) | (1 << 31) | sum
    }

    /// The count of `word` if it holds bucket `current`, else 0.
    const fn in_bucket(word: u64, current: u32) -> u64 {
        if bucket_of(word) == current {
            count_of(word) as u64
        } else {
            0
        }
    }

    impl Inner {
        /// The bucket to count a call at, given a reading of the clock: the
        /// reading's, or the newest any call has read if that is later (this
        /// caller's reading is late); a later reading becomes the newest. One load,
        /// and a compare-and-swap once per bucket.
        #[inline]
        fn bucket_at(&self, rule: &Rule, now: Duration) -> u32 {
            // Truncation intended: buckets are compared modulo 2^32.
            let own = rule.bucket(now) as u32;
            let word = self.newest.load(Ordering::SeqCst);
            // The usual case: the reading is in the newest bucket.
            if word == pack(1, own) {
                return own;
            }
            self.bucket_otherwise(own, word)
        }

        /// [`bucket_at`](Self::bucket_at) of a reading `own` when the newest bucket
        /// was read as `word`, not `own`'s.
        #[cold]
        fn bucket_otherwise(&self, own: u32, mut word: u64) -> u32 {
            loop {
                // Set (its high half 1) and ahead of the caller's: the caller is late.
                if word >> 32 != 0 && ahead(word as u32, own) {
                    return word as u32;
                }
                // The caller's reading is the newest (or as new): record it.
                let newer = pack(1, own);
                if word == newer {
                    return own;
                }
                match self.newest.compare_exchange_weak(
                    word,
                    newer,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) => return own,
                    Err(actual) => word = actual,
                }
            }
        }

        /// The sum of `ring`'s closed buckets in the window of bucket `current`
        /// (`current - 15 ..= current - 1`): from `cache` if it was computed for
        /// `current`, else from the 16 words, then cached (unless the cache already
        /// holds a newer bucket's). So a check reads the ring once per bucket, not
        /// once per call.
        #[inline]
        fn closed(
            &self,
            cache: &AtomicU64,
            ring: &[AtomicU64; WINDOW_BUCKETS],
            current: u32,
        ) -> u64 {
            let cached = cache.load(Ordering::SeqCst);
            // Its bucket (the high half) is `current` and its set bit (bit 31) is 1.
            if cached >> 31 == (current as u64) << 1 | 1 {
                return cached & CLOSED_MAX;
            }
            self.recompute(cache, cached, ring, current)
        }

        /// After a count was written as `word`: if the newest bucket has moved past
        /// it meanwhile (the caller read an older bucket, and a boundary passed
        /// before its write), a closed-buckets cache computed since may lack it, so
        /// `cache` is invalidated (its set bit cleared, its low bits changed, so that
        /// a recomputation racing this one fails to store its sum). Sequentially
        /// consistent with the newest bucket's update and the recomputation's loads:
        /// either the recomputation sees the write, or the writer sees the newer
        /// bucket and invalidates.
        #[inline]
        fn written(&self, cache: &AtomicU64, word: u64) {
            // All SeqCst: in their single total order, either the recomputation's
            // loads come after the write just made (and see it), or this load comes
            // after the store of the newer bucket (and sees it).
            total_order();
            let newest = self.newest.load(Ordering::SeqCst);
            if newest as u32 != bucket_of(word) {
                Self::invalidate(cache);
            }
        }

        /// Invalidates a closed-buckets cache (see [`written`](Self::written)).
        #[cold]
        fn invalidate(cache: &AtomicU64) {
            let mut cached = cache.load(Ordering::SeqCst);
            loop {
                let invalid =
                    (cached & !(CLOSED_MAX | 1 << 31)) | (cached.wrapping_add(1) & CLOSED_MAX);
                match cache.compare_exchange_weak(
                    cached,
                    invalid,
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                ) {
                    Ok(_) => return,
                    Err(actual) => cached = actual,
                }
            }
        }

        #[cold]
        fn recompute(
            &self,
            cache: &AtomicU64,
            cached: u64,
            ring: &[AtomicU64; WINDOW_BUCKETS],
            current: u32,
        ) -> u64 {
            // See `written`.
            total_order();
            let mut sum = 0u64;
            for word in ring {
                let w = word.load(Ordering::SeqCst);
                let age = current.wrapping_sub(bucket_of(w));
                if (1..WINDOW_BUCKETS as u32).contains(&age) {
                    sum += u64::from(count_of(w));
                }
            }
            if cached & (1 << 31) == 0 || ahead(current, bucket_of(cached)) {
                // A failure means another caller cached it first (for this bucket or a
                // newer one): keep its value.
                let _ = cache.compare_exchange(
                    cached,
                    closed_word(current, sum),
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
            }
            sum.min(CLOSED_MAX)
        }

        /// The window's counts at bucket `current` (or at a newer bucket some call
        /// has written, which `current` becomes), with the withdrawal word of the
        /// current bucket as read: `(D, W, current, word)`.
        ///
        /// The withdrawals are read first: a check then sees at least the deposits
        /// that paid for the withdrawals it counts (each caller deposits before it
        /// withdraws), so a thread descheduled in the middle refuses nothing the
        /// window allows; the deposits it reads later only add.
        #[inline]
        fn window(&self, current: u32) -> (u64, u64, u32, u64) {
            let i = current as usize % WINDOW_BUCKETS;
            let closed_w = self.closed(&self.closed_withdrawals, &self.withdrawals, current);
            let seen = self.withdrawals[i].load(Ordering::SeqCst);
            let held = bucket_of(seen);
            if held != current && count_of(seen) != 0 && ahead(held, current) {
                // A newer bucket (a later reading than this caller's): check there.
                return self.window_ahead(held);
            }
            let closed_d = self.closed(&self.closed_deposits, &self.deposits, current);
            let deposits = closed_d + in_bucket(self.deposits[i].load(Ordering::SeqCst), current);
            (deposits, closed_w + in_bucket(seen, current), current, seen)
        }

        /// [`window`](Self::window) at a newer bucket than the caller's.
        #[cold]
        fn window_ahead(&self, current: u32) -> (u64, u64, u32, u64) {
            self.window(current)
        }

        /// A deposit at bucket `bucket` whose first compare-and-swap failed, having
        /// found `word`: again until one succeeds.
        #[cold]
        fn deposit_contended(&self, bucket: u32, mut word: u64) {
            let slot = &self.deposits[bucket as usize % WINDOW_BUCKETS];
            loop {
                let new = counted(word, bucket);
                match slot.compare_exchange_weak(word, new, Ordering::SeqCst, Ordering::SeqCst) {
                    Ok(_) => return self.written(&self.closed_deposits, new),
                    Err(actual) => word = actual,
                }
            }
        }

        /// A withdrawal at bucket `current` (or at a newer one some call has
        /// written): the check, then the commit, a compare-and-swap of the bucket's
        /// word against the value the check read.
        #[inline(always)]
        fn withdraw(&self, rule: &Rule, current: u32) -> bool {
            let (deposits, withdrawals, bucket, seen) = self.window(current);
            if !rule.grants(deposits, withdrawals) {
                return false;
            }
            let new = counted(seen, bucket);
            if self.withdrawals[bucket as usize % WINDOW_BUCKETS]
                .compare_exchange(seen, new, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                self.written(&self.closed_withdrawals, new);
                return true;
            }
            // Another withdrawal (or a newer bucket) got there first: check again.
            self.withdraw_contended(rule, bucket)
        }

        /// [`withdraw`](Self::withdraw) after a failed commit.
        #[cold]
        fn withdraw_contended(&self, rule: &Rule, current: u32) -> bool {
            self.withdraw(rule, current)
        }
    }

    /// A [`RetryBudget`](super::RetryBudget) shared between threads and tasks:
    /// `Clone + Send + Sync`, lock-free, reading time from a [`Clock`] ([`StdClock`]
    /// by default, [`ManualClock`](crate::breaker::ManualClock) in tests).
    ///
    /// The rule is the sans-io budget's (see the [module docs](super)). The window is
    /// two rings of 16 atomic words (deposits, withdrawals), each word a bucket's
    /// number (modulo 2^32) and its count, plus the newest bucket any call has read
    /// and, per ring, a cache of the sum of the window's 15 closed buckets, computed
    /// once per bucket. [`deposit`](Self::deposit) is one clock reading, three loads
    /// (the newest bucket, the bucket's word, the newest again after the write) and
    /// one compare-and-swap; [`try_withdraw`](Self::try_withdraw) is one clock
    /// reading, six loads (the newest bucket, the two caches, the current bucket's
    /// two words, the newest after the write) and, when granted, one
    /// compare-and-swap; the first check of a bucket also sums the 32 words.
    /// [`balance`](Self::balance) loads only. No lock, no allocation after
    /// construction. Bucket numbers are a multiplication by a precomputed
    /// reciprocal, not a division.
    ///
    /// # Passing the time in
    ///
    /// Where the clock is slow (`Instant::now` takes 50-90 ns on a virtual machine,
    /// several times the rest of a call), a caller that has read the clock anyway
    /// passes its reading: [`deposit_at`](Self::deposit_at),
    /// [`try_withdraw_at`](Self::try_withdraw_at), [`balance_at`](Self::balance_at)
    /// and [`window_counts_at`](Self::window_counts_at) take a reading of the
    /// handle's clock ([`now`](Self::now), or the clock the handle was built with)
    /// and read none. The rule and everything below hold as they are: to the
    /// handle, a reading passed is one it could have read itself, and one passed
    /// late is a late reading. A gateway deposits with the reading it takes at each
    /// request's start, and asks for a retry with a reading taken then (retries are
    /// a small share of the requests: reading the clock for them costs little).
    ///
    /// # What it gives up under races
    ///
    /// Used from one thread with a clock that never goes back, it grants exactly
    /// what a [`RetryBudget`](super::RetryBudget) fed the same readings grants
    /// (tested against it). Under concurrency:
    ///
    /// * **Withdrawals in the same bucket are exact.** A withdrawal commits with a
    ///   compare-and-swap of its bucket's word against the value its check read, so
    ///   two that race in one bucket are ordered: the second sees the first, or
    ///   checks again. Threads withdrawing at once never exceed the limit while
    ///   their clock readings fall in one bucket (tested with many threads, and with
    ///   loom).
    /// * **Across a bucket boundary, racing withdrawals may overshoot by at most
    ///   `k - 1`**, where `k` is the number of withdrawals whose check and commit
    ///   overlap and whose readings fall in `k` different buckets (so `k` is at most
    ///   the number of threads withdrawing at that moment): each commits to its own
    ///   bucket's word and may not see the others. With two threads, one extra retry
    ///   at most per such race (tested).
    /// * **A check reads the withdrawals, then the deposits**, so a thread
    ///   descheduled in the middle sees at least the deposits behind the
    ///   withdrawals it counted: it never refuses what the window allowed when it
    ///   read them. A deposit made after its reading is missed (it grants less,
    ///   never more).
    /// * **A late clock reading** (a thread descheduled between reading the clock and
    ///   counting) counts at the newest bucket any call has read, as the sans-io
    ///   budget takes a late `now` as its latest: a deposit read late by a whole
    ///   window still pays for its own withdrawal (it used to land in its own,
    ///   expired, bucket; tested step by step). A call that read the newest bucket
    ///   just before a boundary and writes just after it counts in the bucket it
    ///   read (now closed); it then sees the newer bucket and invalidates the
    ///   closed-buckets cache, which the next check recomputes (sequentially
    ///   consistent: a recomputation either sees the write or is invalidated by
    ///   it). A check racing that write may miss it, as any racing check may.
    /// * Bucket numbers are kept modulo 2^32 (8.5 years of buckets at the shortest
    ///   `ttl`): a bucket left untouched for that long could be misread once.
    ///
    /// ```
    /// use core::time::Duration;
    /// use sluice::breaker::ManualClock;
    /// use sluice::retry::{RetryBudgetConfig, SharedRetryBudget};
    ///
    /// let clock = ManualClock::new();
    /// let config = RetryBudgetConfig::default().min_per_second(0).percent(10);
    /// let budget = SharedRetryBudget::with_clock(config, clock.clone());
    /// let other = budget.clone(); // another task's handle to the same budget
    /// for _ in 0..20 {
    ///     other.deposit();
    /// }
    /// assert!(budget.try_withdraw());
    /// assert!(other.try_withdraw());
    /// assert!(!budget.try_withdraw()); // 10 % of 20 requests: 2 retries
    /// clock.advance(Duration::from_secs(10)); // a whole ttl later: all expired
    /// assert_eq!(budget.balance(), 0);
    /// ```
    #[derive(Clone)]
    pub struct SharedRetryBudget {
        inner: Arc<Inner>,
        /// The rule, a copy in every handle: it never changes, and read from the
        /// handle (not from beside the shared words) it stays in registers across
        /// the compare-and-swaps.
        rule: Rule,
    }

    impl fmt::Debug for SharedRetryBudget {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("SharedRetryBudget")
                .field("config", &self.inner.config)
                .field("balance", &self.balance())
                .finish_non_exhaustive()
        }
    }

    impl SharedRetryBudget {
        /// An empty budget on the system clock. An invalid `config` does not panic: it
        /// is corrected as in [`RetryBudget::new`](super::RetryBudget::new);
        /// [`try_new`](Self::try_new) refuses it.
        pub fn new(config: RetryBudgetConfig) -> Self {
            Self::with_clock(config, StdClock::new())
        }

        /// An empty budget reading time from `clock`; an invalid `config` is corrected
        /// as in [`RetryBudget::new`](super::RetryBudget::new)
        /// ([`try_with_clock`](Self::try_with_clock) refuses it).
        pub fn with_clock(config: RetryBudgetConfig, clock: impl Clock) -> Self {
            let config = config.sanitized();
            Self {
                inner: Arc::new(Inner {
                    deposits: core::array::from_fn(|_| AtomicU64::new(0)),
                    withdrawals: core::array::from_fn(|_| AtomicU64::new(0)),
                    newest: AtomicU64::new(0),
                    closed_deposits: AtomicU64::new(0),
                    closed_withdrawals: AtomicU64::new(0),
                    config,
                    clock: Box::new(clock),
                }),
                rule: Rule::new(config),
            }
        }

        /// An empty budget on the system clock, or what is wrong with `config`.
        pub fn try_new(config: RetryBudgetConfig) -> Result<Self, RetryBudgetConfigError> {
            Self::try_with_clock(config, StdClock::new())
        }

        /// An empty budget reading `clock`, or what is wrong with `config`.
        pub fn try_with_clock(
            config: RetryBudgetConfig,
            clock: impl Clock,
        ) -> Result<Self, RetryBudgetConfigError> {
            config.validate()?;
            Ok(Self::with_clock(config, clock))
        }

        /// The configuration in force (after [`new`](Self::new)'s corrections).
        pub fn config(&self) -> RetryBudgetConfig {
            self.inner.config
        }

        /// The time on the handle's clock: a reading to pass to
        /// [`deposit_at`](Self::deposit_at) and [`try_withdraw_at`](Self::try_withdraw_at).
        /// A caller that holds the clock the handle was built with (a clone of it, or
        /// a copy of the [`StdClock`]) may read it itself instead.
        pub fn now(&self) -> Duration {
            self.inner.clock.now()
        }

        /// A request was made now: one deposit (one clock reading, one
        /// compare-and-swap), counted at the newest bucket any call has read if this
        /// reading is older. Call it once per client request, not per attempt.
        ///
        /// The clock reading is most of its cost where the clock is slow (a virtual
        /// machine's can take 50-90 ns): a caller that has read the clock anyway
        /// should pass that reading to [`deposit_at`](Self::deposit_at).
        #[inline]
        pub fn deposit(&self) {
            self.deposit_at(self.inner.clock.now());
        }

        /// A request was made at `now`, a reading of the handle's clock (from
        /// [`now`](Self::now) or from the clock the handle was built with): one
        /// deposit, as [`deposit`](Self::deposit) but reading no clock.
        ///
        /// The reading may be older than others already passed (taken at the
        /// request's start, for its metrics): it then counts at the newest bucket any
        /// call has read, as a late reading does in [`deposit`](Self::deposit), and
        /// the rule and its precision are the same as with the handle reading its
        /// clock. A reading of another clock (another [`StdClock`], with another
        /// origin) misplaces the call in time, and a reading older than the newest
        /// by 65 536 buckets or more (68 minutes at the shortest `ttl`, 68 hours at
        /// the longest) is taken for a newer one whose bucket number wrapped, as for
        /// a thread descheduled that long in [`deposit`](Self::deposit): don't keep
        /// readings that long.
        ///
        /// ```
        /// use core::time::Duration;
        /// use sluice::breaker::{Clock, StdClock};
        /// use sluice::retry::{RetryBudgetConfig, SharedRetryBudget};
        ///
        /// let clock = StdClock::new(); // `Copy`: the caller keeps the same origin
        /// let config = RetryBudgetConfig::default().min_per_second(0).percent(50);
        /// let budget = SharedRetryBudget::with_clock(config, clock);
        ///
        /// // A request starts: the caller reads the clock once (for its own
        /// // metrics too) and deposits with that reading.
        /// let started = clock.now();
        /// budget.deposit_at(started);
        /// budget.deposit_at(started);
        /// // Its first attempt fails: retry if the budget allows it, at a reading
        /// // taken now (or read by the handle: `try_withdraw()`).
        /// assert!(budget.try_withdraw_at(clock.now()));
        /// assert!(!budget.try_withdraw_at(clock.now())); // 50 % of 2 requests
        /// ```
        #[inline]
        pub fn deposit_at(&self, now: Duration) {
            let inner = &*self.inner;
            let bucket = inner.bucket_at(&self.rule, now);
            let word = &inner.deposits[bucket as usize % WINDOW_BUCKETS];
            let current = word.load(Ordering::SeqCst);
            let new = counted(current, bucket);
            match word.compare_exchange(current, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => inner.written(&inner.closed_deposits, new),
                Err(actual) => inner.deposit_contended(bucket, actual),
            }
        }

        /// May a retry (or a hedge) be made now? If granted, the withdrawal is counted
        /// and the caller must make it; if refused, nothing changes. See the type's
        /// docs for the precision under races. One clock reading: see
        /// [`try_withdraw_at`](Self::try_withdraw_at) to pass one instead.
        #[must_use = "a granted withdrawal is counted: make the retry, or it is spent for nothing"]
        #[inline]
        pub fn try_withdraw(&self) -> bool {
            self.try_withdraw_at(self.inner.clock.now())
        }

        /// May a retry (or a hedge) be made at `now`, a reading of the handle's clock
        /// (see [`deposit_at`](Self::deposit_at))? As
        /// [`try_withdraw`](Self::try_withdraw), reading no clock.
        ///
        /// The rule is applied at the newest of `now` and the readings other calls
        /// have passed: a reading taken long before the retry (at the request's
        /// start) judges the retry by the window of that time if no call has passed
        /// a later one, so pass a reading taken when the retry is decided.
        #[must_use = "a granted withdrawal is counted: make the retry, or it is spent for nothing"]
        #[inline]
        pub fn try_withdraw_at(&self, now: Duration) -> bool {
            let inner = &*self.inner;
            inner.withdraw(&self.rule, inner.bucket_at(&self.rule, now))
        }

        /// The withdrawals [`try_withdraw`](Self::try_withdraw) would grant now if no
        /// request came (see [`RetryBudget::balance`](super::RetryBudget::balance)).
        /// Reads the clock; counts nothing.
        pub fn balance(&self) -> u64 {
            self.balance_at(self.inner.clock.now())
        }

        /// [`balance`](Self::balance) at `now`, a reading of the handle's clock (see
        /// [`deposit_at`](Self::deposit_at)); reads no clock.
        pub fn balance_at(&self, now: Duration) -> u64 {
            let window = self.window_counts_at(now);
            self.rule.balance(window.requests, window.retries)
        }

        /// The deposits `D` and withdrawals `W` in the window now. Reads the clock;
        /// counts nothing.
        pub fn window_counts(&self) -> RetryWindow {
            self.window_counts_at(self.inner.clock.now())
        }

        /// [`window_counts`](Self::window_counts) at `now`, a reading of the
        /// handle's clock (see [`deposit_at`](Self::deposit_at)); reads no clock.
        pub fn window_counts_at(&self, now: Duration) -> RetryWindow {
            let bucket = self.inner.bucket_at(&self.rule, now);
            let (deposits, withdrawals, _, _) = self.inner.window(bucket);
            RetryWindow::from((deposits, withdrawals))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{RetryBudgetConfig, Rule};
    use core::time::Duration;

    /// The size the docs of `RetryBudget` give (on 64-bit targets).
    #[cfg(target_pointer_width = "64")]
    #[test]
    fn the_sans_io_budget_is_224_bytes() {
        assert_eq!(core::mem::size_of::<super::RetryBudget>(), 224);
    }

    /// The reciprocal gives `floor(nanos / w)` exactly, at and around every edge.
    #[test]
    fn the_bucket_by_reciprocal_is_the_exact_quotient() {
        for ttl_nanos in [
            1_000_000_000u64,
            1_000_000_001,
            1_048_576_000,
            10_000_000_000,
            33_333_333_333,
            59_999_999_999,
            60_000_000_000,
        ] {
            let rule = Rule::new(RetryBudgetConfig::default().ttl(Duration::from_nanos(ttl_nanos)));
            let w = rule.width_nanos;
            for q in [
                0,
                1,
                2,
                15,
                16,
                1_000,
                1 << 20,
                u64::MAX / w - 1,
                u64::MAX / w,
            ] {
                // The bucket's first nanosecond, the one before, its middle and its
                // last; those past u64::MAX are left out.
                let start = q * w;
                let around = [
                    Some(start),
                    start.checked_sub(1),
                    start.checked_add(w / 2),
                    start.checked_add(w - 1),
                ];
                for nanos in around.into_iter().flatten() {
                    assert_eq!(
                        rule.bucket_of_nanos(nanos),
                        nanos / w,
                        "w {w} nanos {nanos}"
                    );
                }
            }
            assert_eq!(rule.bucket_of_nanos(u64::MAX), u64::MAX / w);
            assert_eq!(rule.bucket(Duration::MAX), u64::MAX / w);
        }
    }
}
