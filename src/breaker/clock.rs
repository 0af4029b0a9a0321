//! Time for the shared handle: the [`Clock`] it reads, the system's and a manual one,
//! and when a slow operation may read it.

use core::fmt;
use core::time::Duration;

use super::sync::{Arc, AtomicU64, Ordering};

/// A source of monotonic time for a [`SharedBreaker`](super::SharedBreaker): a
/// [`Duration`] since an origin of its choosing, never decreasing.
pub trait Clock: Send + Sync + 'static {
    /// The time now.
    fn now(&self) -> Duration;
}

/// The system's monotonic clock: time since the clock was made, from
/// [`std::time::Instant`]. The default clock of a
/// [`SharedBreaker`](super::SharedBreaker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StdClock {
    origin: std::time::Instant,
}

impl StdClock {
    /// A clock at zero now.
    pub fn new() -> Self {
        Self {
            origin: std::time::Instant::now(),
        }
    }
}

impl Default for StdClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for StdClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told: for tests. Clones share one time.
///
/// ```
/// use core::time::Duration;
/// use sluice::breaker::{Clock, ManualClock};
///
/// let clock = ManualClock::new();
/// let same = clock.clone();
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(same.now(), Duration::from_secs(2));
/// same.set(Duration::from_millis(500));
/// assert_eq!(clock.now(), Duration::from_millis(500));
/// ```
#[derive(Clone)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> Self {
        Self {
            nanos: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Moves the time forward by `by` (saturating at about 584 years).
    pub fn advance(&self, by: Duration) {
        let by = nanos(by);
        let mut current = self.nanos.load(Ordering::Acquire);
        while let Err(actual) = self.nanos.compare_exchange_weak(
            current,
            current.saturating_add(by),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            current = actual;
        }
    }

    /// Sets the time (a time before the breaker's latest is taken as the latest).
    pub fn set(&self, to: Duration) {
        self.nanos.store(nanos(to), Ordering::Release);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ManualClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ManualClock")
            .field("now", &self.now())
            .finish()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Acquire))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The time to run a slow operation at: the clock's, or `None` (the core's latest)
/// while the thread is unwinding, so that no user code runs then (a clock that
/// panics while a panic unwinds would abort the process).
pub(super) fn read_clock(clock: &dyn Clock) -> Option<Duration> {
    if std::thread::panicking() {
        None
    } else {
        Some(clock.now())
    }
}
