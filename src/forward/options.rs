//! [`ForwardOptions`]: the worker's timers, the client's send timeout and the
//! policy on client close ([`OnClose`]) that [`forward`](super::forward) runs under.

use core::time::Duration;

use crate::timers::Timeouts;

/// What to do with the upstream when the client leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum OnClose {
    /// Drop the upstream at once, before polling it again (the default). The
    /// worker's connection closes and it stops generating.
    #[default]
    Cancel,
    /// Keep reading the upstream and discard its items, for at most `limit`, so the
    /// answer runs to its end and the verdict is the upstream's. When the limit
    /// passes first, the upstream is dropped as under `Cancel`.
    Drain {
        /// How long to keep reading after the client left.
        limit: Duration,
    },
}

/// How [`forward`](super::forward) behaves: the worker's timers, the client's send timeout, and the
/// policy on client close. All timeouts are off by default.
///
/// ```
/// use core::time::Duration;
/// use sluice::forward::{ForwardOptions, OnClose};
///
/// let options = ForwardOptions::default()
///     .first_token_timeout(Duration::from_secs(30))
///     .idle_timeout(Duration::from_secs(10))
///     .deadline(Duration::from_secs(600))
///     .send_timeout(Duration::from_secs(5))
///     .drain_on_close(Duration::from_secs(60));
/// assert_eq!(options.on_close(), OnClose::Drain { limit: Duration::from_secs(60) });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ForwardOptions {
    timeouts: Timeouts,
    /// The send timeout, read by the loop.
    pub(super) send: Option<Duration>,
    on_close: OnClose,
}

impl ForwardOptions {
    /// The upstream must make its first progress (with SSE rules, an event that is
    /// not a keep-alive: the first token; without, any item) within `timeout` of the
    /// start of forwarding (prefill), or the stream fails with cause
    /// [`FirstTokenTimeout`](crate::Cause::FirstTokenTimeout).
    #[must_use]
    pub const fn first_token_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts = self.timeouts.first_token(timeout);
        self
    }

    /// After progress was handed to the client, the upstream must make progress
    /// again within `timeout`, or the stream fails with cause
    /// [`IdleTimeout`](crate::Cause::IdleTimeout). Keep-alives do not reset it; the time
    /// the client takes to accept an item does not count. After the done event, it
    /// bounds the wait for the upstream's end (which then blames nobody).
    #[must_use]
    pub const fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.timeouts = self.timeouts.idle(timeout);
        self
    }

    /// The whole stream must end within `deadline` of the start of forwarding, or it
    /// fails with cause [`Deadline`](crate::Cause::Deadline). It fires on time however busy
    /// the worker is. If it passes while an item waits for a slow client, the client
    /// is to blame, not the worker: forwarding ends with [`Ending::TimedOut`](super::Ending::TimedOut) and
    /// nothing marked (cause [`ClientStalled`](crate::Cause::ClientStalled) if no end was
    /// seen), as after the [`send_timeout`](Self::send_timeout).
    #[must_use]
    pub const fn deadline(mut self, deadline: Duration) -> Self {
        self.timeouts = self.timeouts.deadline(deadline);
        self
    }

    /// The client must accept each item within `timeout` (a full bounded channel
    /// means it stopped reading), or forwarding ends with [`Ending::TimedOut`](super::Ending::TimedOut). The
    /// worker is not blamed: nothing is marked (cause
    /// [`ClientStalled`](crate::Cause::ClientStalled) if no end was seen).
    #[must_use]
    pub const fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send = Some(timeout);
        self
    }

    /// Sets the policy when the client leaves.
    #[must_use]
    pub const fn with_on_close(mut self, on_close: OnClose) -> Self {
        self.on_close = on_close;
        self
    }

    /// Shorthand for [`OnClose::Drain`] with `limit`.
    #[must_use]
    pub const fn drain_on_close(self, limit: Duration) -> Self {
        self.with_on_close(OnClose::Drain { limit })
    }

    /// The policy when the client leaves.
    pub const fn on_close(&self) -> OnClose {
        self.on_close
    }

    /// The worker's timers (first token, idle, deadline) as [`Timeouts`], for a
    /// [`ProgressWatch`](crate::timers::ProgressWatch) or
    /// [`TrackedStream::with_timers`](crate::TrackedStream::with_timers).
    pub const fn timeouts(&self) -> Timeouts {
        self.timeouts
    }
}
