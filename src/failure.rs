//! What a [`TrackedStream`](crate::TrackedStream) yields after it failed: nothing more
//! (the default), or, with
//! [`with_failure_event`](crate::TrackedStream::with_failure_event), its API's failure
//! event, so a client that already has the response head hears the failure in its
//! own dialect ([`SseRules::failure_event`](crate::sse::SseRules::failure_event))
//! instead of a clean end.

use crate::sse::FailureEvent;

/// The items a tracked stream yields after a failure that the worker did not report
/// itself: a timer fired, the upstream was cut short (truncated), or it yielded an
/// error item. [`NoFailureEvent`] yields none; [`WithFailureEvent`] the failure event,
/// then the error item, if there was one.
pub trait FailureTail<B, E> {
    /// Whether this tail can yield anything; `false` lets the stream skip it.
    const ACTIVE: bool;

    /// The stream failed; `event` is to be yielded next.
    fn push_event(&mut self, event: FailureEvent);

    /// Keeps the `error` item that failed the stream, to yield after the event. Gives
    /// it back when there is no event to yield first: yield it now.
    fn hold_error(&mut self, error: E) -> Option<E>;

    /// The next item of the tail, if any: the event, then the held error item.
    fn pop(&mut self) -> Option<Result<B, E>>;

    /// How many items are left.
    fn len(&self) -> usize;

    /// Whether no item is left.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// No failure event: a failed stream ends as its inner stream did (the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct NoFailureEvent;

impl<B, E> FailureTail<B, E> for NoFailureEvent {
    const ACTIVE: bool = false;

    #[inline(always)]
    fn push_event(&mut self, _: FailureEvent) {}

    #[inline(always)]
    fn hold_error(&mut self, error: E) -> Option<E> {
        Some(error)
    }

    #[inline(always)]
    fn pop(&mut self) -> Option<Result<B, E>> {
        None
    }

    #[inline(always)]
    fn len(&self) -> usize {
        0
    }
}

/// The failure event of the stream's SSE dialect, as one last `Ok` item built from
/// its text (`B: From<String>`: `bytes::Bytes`, `Vec<u8>`, `String`), then the error
/// item that failed the stream, if one did. Feature `alloc` (the event's text is
/// written into a `String` once, at the failure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithFailureEvent<E> {
    event: Option<FailureEvent>,
    error: Option<E>,
}

impl<E> WithFailureEvent<E> {
    /// Nothing to yield yet.
    pub const fn new() -> Self {
        Self {
            event: None,
            error: None,
        }
    }
}

impl<E> Default for WithFailureEvent<E> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "alloc")]
impl<B: From<alloc::string::String>, E> FailureTail<B, E> for WithFailureEvent<E> {
    const ACTIVE: bool = true;

    fn push_event(&mut self, event: FailureEvent) {
        self.event = Some(event);
    }

    fn hold_error(&mut self, error: E) -> Option<E> {
        if self.event.is_none() {
            return Some(error);
        }
        self.error = Some(error);
        None
    }

    fn pop(&mut self) -> Option<Result<B, E>> {
        use alloc::string::ToString;
        if let Some(event) = self.event.take() {
            return Some(Ok(B::from(event.to_string())));
        }
        self.error.take().map(Err)
    }

    fn len(&self) -> usize {
        usize::from(self.event.is_some()) + usize::from(self.error.is_some())
    }
}
