//! The failure-rate windows, inline (no allocator): a ring of bits for the last N
//! calls, or a ring of time buckets.

use core::time::Duration;

use super::config::{MAX_WINDOW_CALLS, RateRule, TIME_WINDOW_BUCKETS, Window};

const WORDS: usize = (MAX_WINDOW_CALLS as usize).div_ceil(64);

/// One time bucket: the calls counted while `now / width == epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Bucket {
    epoch: u64,
    calls: u32,
    failures: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ring {
    Calls {
        /// Bit `i` is set when call slot `i` failed.
        bits: [u64; WORDS],
        len: u32,
        filled: u32,
        head: u32,
        failures: u32,
    },
    Time {
        buckets: [Bucket; TIME_WINDOW_BUCKETS],
        width_nanos: u64,
    },
}

/// A failure-rate rule and its window's counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RateWindow {
    ring: Ring,
    minimum_calls: u64,
    rate_ppm: u64,
}

impl RateWindow {
    /// The window for a validated rule.
    pub(crate) fn new(rule: &RateRule) -> Self {
        let ring = match rule.window {
            Window::Calls(len) => Ring::Calls {
                bits: [0; WORDS],
                len: len.clamp(1, MAX_WINDOW_CALLS),
                filled: 0,
                head: 0,
                failures: 0,
            },
            Window::Time(span) => {
                let width = span.as_nanos() / TIME_WINDOW_BUCKETS as u128;
                Ring::Time {
                    buckets: [Bucket::default(); TIME_WINDOW_BUCKETS],
                    width_nanos: u64::try_from(width).unwrap_or(u64::MAX).max(1),
                }
            }
        };
        Self {
            ring,
            minimum_calls: u64::from(rule.minimum_calls),
            rate_ppm: rule.rate_ppm(),
        }
    }

    /// Forgets every call.
    pub(crate) fn clear(&mut self) {
        match &mut self.ring {
            Ring::Calls {
                bits,
                filled,
                head,
                failures,
                ..
            } => {
                *bits = [0; WORDS];
                *filled = 0;
                *head = 0;
                *failures = 0;
            }
            Ring::Time { buckets, .. } => *buckets = [Bucket::default(); TIME_WINDOW_BUCKETS],
        }
    }

    /// Counts one call at `now` (never earlier than the last) and says whether the
    /// rule now fires.
    pub(crate) fn push(&mut self, failed: bool, now: Duration) -> bool {
        let (calls, failures) = match &mut self.ring {
            Ring::Calls {
                bits,
                len,
                filled,
                head,
                failures,
            } => {
                let (word, bit) = ((*head / 64) as usize, *head % 64);
                let old = bits[word] >> bit & 1 == 1;
                if *filled == *len {
                    *failures -= u32::from(old);
                } else {
                    *filled += 1;
                }
                bits[word] = bits[word] & !(1 << bit) | u64::from(failed) << bit;
                *failures += u32::from(failed);
                *head = (*head + 1) % *len;
                (u64::from(*filled), u64::from(*failures))
            }
            Ring::Time {
                buckets,
                width_nanos,
            } => {
                let epoch = epoch_of(now, *width_nanos);
                let slot = &mut buckets[slot_of(epoch)];
                if slot.epoch != epoch {
                    *slot = Bucket {
                        epoch,
                        calls: 0,
                        failures: 0,
                    };
                }
                slot.calls = slot.calls.saturating_add(1);
                slot.failures = slot.failures.saturating_add(u32::from(failed));
                sum(buckets, epoch)
            }
        };
        self.fires(calls, failures)
    }

    /// Whether `calls` counted calls of which `failures` failed make the rule fire.
    fn fires(&self, calls: u64, failures: u64) -> bool {
        calls >= self.minimum_calls && failures * 1_000_000 >= self.rate_ppm * calls
    }

    /// Counts `count` successes at `now` (never earlier than the last): the same as
    /// `count` calls of [`push`](Self::push)`(false, now)`, in `O(min(count, len))`.
    /// Says whether the rule fires after the last one.
    #[cfg(feature = "std")]
    pub(crate) fn push_successes(&mut self, count: u64, now: Duration) -> bool {
        if count == 0 {
            let (calls, failures) = self.counts(now);
            return self.fires(calls, failures);
        }
        match &mut self.ring {
            Ring::Calls {
                bits,
                len,
                filled,
                head,
                failures,
            } if count >= u64::from(*len) => {
                // Every slot is overwritten by a success; the head moves `count` places.
                *bits = [0; WORDS];
                *filled = *len;
                *failures = 0;
                let moved = u32::try_from(count % u64::from(*len)).unwrap_or(0);
                *head = (*head + moved) % *len;
                false
            }
            Ring::Calls { .. } => {
                let mut fired = false;
                for _ in 0..count {
                    fired = self.push(false, now);
                }
                fired
            }
            Ring::Time { .. } => {
                // One push makes sure the bucket of `now` is current; the rest add to it.
                let _ = self.push(false, now);
                if let Ring::Time {
                    buckets,
                    width_nanos,
                } = &mut self.ring
                {
                    let slot = &mut buckets[slot_of(epoch_of(now, *width_nanos))];
                    let more = u32::try_from(count - 1).unwrap_or(u32::MAX);
                    slot.calls = slot.calls.saturating_add(more);
                }
                let (calls, failures) = self.counts(now);
                self.fires(calls, failures)
            }
        }
    }

    /// The counted calls and the failed ones in the window, as seen at `now`.
    pub(crate) fn counts(&self, now: Duration) -> (u64, u64) {
        match &self.ring {
            Ring::Calls {
                filled, failures, ..
            } => (u64::from(*filled), u64::from(*failures)),
            Ring::Time {
                buckets,
                width_nanos,
            } => sum(buckets, epoch_of(now, *width_nanos)),
        }
    }

    /// Whether no run of successes, counted at `now` or later, can make the rule fire
    /// (so the shared handle may count them without the core).
    ///
    /// Count window: a success never raises the failed share, so only reaching
    /// `minimum_calls` can fire it, and that needs the failures already there to make
    /// the rate at `minimum_calls` calls. Time window: the failures in the window only
    /// leave it as time goes on, so if they are below the rate of `minimum_calls`
    /// calls now, they stay below it.
    #[cfg(feature = "std")]
    pub(crate) fn successes_cannot_fire(&self, now: Duration) -> bool {
        let (calls, failures) = self.counts(now);
        let below_minimum_rate = failures * 1_000_000 < self.rate_ppm * self.minimum_calls;
        match self.ring {
            Ring::Calls { .. } => {
                below_minimum_rate
                    || (calls >= self.minimum_calls && failures * 1_000_000 < self.rate_ppm * calls)
            }
            Ring::Time { .. } => below_minimum_rate,
        }
    }

    /// Whether one more success would leave the window exactly as it is: a full count
    /// window with no failure in it.
    #[cfg(feature = "std")]
    pub(crate) fn successes_change_nothing(&self) -> bool {
        matches!(self.ring, Ring::Calls { len, filled, failures, .. } if filled == len && failures == 0)
    }
}

fn epoch_of(now: Duration, width_nanos: u64) -> u64 {
    u64::try_from(now.as_nanos() / u128::from(width_nanos)).unwrap_or(u64::MAX)
}

fn slot_of(epoch: u64) -> usize {
    (epoch % TIME_WINDOW_BUCKETS as u64) as usize
}

/// The calls and failures of the buckets in the window that ends at `epoch`.
fn sum(buckets: &[Bucket; TIME_WINDOW_BUCKETS], epoch: u64) -> (u64, u64) {
    buckets
        .iter()
        .filter(|b| epoch - b.epoch.min(epoch) < TIME_WINDOW_BUCKETS as u64)
        .fold((0, 0), |(c, f), b| {
            (c + u64::from(b.calls), f + u64::from(b.failures))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::Config;

    fn window(config: Config) -> RateWindow {
        RateWindow::new(&config.rate.expect("a rate rule"))
    }

    #[test]
    fn count_window_forgets_the_oldest_call() {
        let mut w = window(Config::default().failure_rate(0.5, Window::Calls(4), 4));
        let ms = Duration::from_millis;
        // F S S S: 1 of 4 failed, below half.
        assert!(!w.push(true, ms(0)));
        assert!(!w.push(false, ms(0)));
        assert!(!w.push(false, ms(0)));
        assert!(!w.push(false, ms(0)));
        // S S S F: still 1 of 4 (the first failure slid out).
        assert!(!w.push(true, ms(0)));
        // S S F F: 2 of 4, the rate is reached.
        assert!(w.push(true, ms(0)));
        w.clear();
        assert!(!w.push(true, ms(0)), "minimum_calls after clear");
    }

    #[test]
    fn time_window_forgets_old_buckets() {
        let secs = Duration::from_secs;
        let mut w = window(Config::default().failure_rate(1.0, Window::Time(secs(16)), 2));
        assert!(!w.push(true, secs(0)));
        // 20 s later the first failure has left the window.
        assert!(!w.push(true, secs(20)));
        assert!(w.push(true, secs(21)));
        assert!(!w.push(false, secs(22)), "3 of 4 is below a rate of 1");
    }

    #[test]
    #[cfg(feature = "std")]
    fn pushing_successes_at_once_is_pushing_them_one_by_one() {
        let secs = Duration::from_secs;
        for config in [
            Config::default().failure_rate(0.5, Window::Calls(7), 3),
            Config::default().failure_rate(0.25, Window::Time(secs(16)), 3),
        ] {
            for history in 0u32..64 {
                for count in [0u64, 1, 2, 6, 7, 8, 15, 100] {
                    let mut one = window(config);
                    for i in 0u32..6 {
                        let _ = one.push(history >> i & 1 == 1, secs(i.into()));
                    }
                    let mut all = one.clone();
                    let now = secs(6);
                    let mut fired = one.fires(one.counts(now).0, one.counts(now).1);
                    for _ in 0..count {
                        fired = one.push(false, now);
                    }
                    assert_eq!(all.push_successes(count, now), fired, "{history:b} {count}");
                    assert_eq!(all, one, "{history:b} {count}");
                }
            }
        }
    }
}
