//! What a [`TrackedStream`](crate::TrackedStream) yields after it failed: nothing more
//! (the default), or, with
//! [`with_failure_event`](crate::TrackedStream::with_failure_event), its API's failure
//! event, so a client that already has the response head hears the failure in its
//! own dialect ([`SseRules::failure_event`](crate::sse::SseRules::failure_event))
//! instead of a clean end.

#[cfg(feature = "alloc")]
use core::fmt;

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
/// item that failed the stream, if one did. Its message names the upstream when one
/// is given (`N`, see [`named`](Self::named)). Feature `alloc`: the event's text is
/// written, at the failure, into one `String` of the exact length (measured first), so
/// a `Bytes` or a `Vec<u8>` made from it allocates nothing more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WithFailureEvent<E, N = &'static str> {
    event: Option<FailureEvent>,
    error: Option<E>,
    upstream: Option<N>,
}

impl<E> WithFailureEvent<E> {
    /// Nothing to yield yet; the message names no upstream.
    pub const fn new() -> Self {
        Self {
            event: None,
            error: None,
            upstream: None,
        }
    }
}

impl<E, N> WithFailureEvent<E, N> {
    /// Nothing to yield yet; the message names `upstream`
    /// ([`FailureEvent::named`]).
    pub const fn named(upstream: N) -> Self {
        Self {
            event: None,
            error: None,
            upstream: Some(upstream),
        }
    }
}

impl<E, N> Default for WithFailureEvent<E, N> {
    /// Nothing to yield yet; the message names no upstream.
    fn default() -> Self {
        Self {
            event: None,
            error: None,
            upstream: None,
        }
    }
}

#[cfg(feature = "alloc")]
impl<B, E, N> FailureTail<B, E> for WithFailureEvent<E, N>
where
    B: From<alloc::string::String>,
    N: fmt::Display,
{
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
        if let Some(event) = self.event.take() {
            let text = match &self.upstream {
                Some(upstream) => exact_string(&event.named(upstream)),
                None => exact_string(&event),
            };
            return Some(Ok(B::from(text)));
        }
        self.error.take().map(Err)
    }

    fn len(&self) -> usize {
        usize::from(self.event.is_some()) + usize::from(self.error.is_some())
    }
}

/// `text` in a `String` of exactly its length: one allocation, none to grow it.
#[cfg(feature = "alloc")]
fn exact_string(text: &impl fmt::Display) -> alloc::string::String {
    use fmt::Write;

    /// Counts the bytes written.
    struct Len(usize);

    impl Write for Len {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0 += s.len();
            Ok(())
        }
    }

    let mut len = Len(0);
    // Neither writer fails; only a `Display` that returns an error can, and then the
    // text is what it wrote.
    let _ = write!(len, "{text}");
    let mut out = alloc::string::String::with_capacity(len.0);
    let _ = write!(out, "{text}");
    out
}
