//! The response future of the layers' services: waits for the response head, then
//! settles the call or hands its recorder to the body.

use core::future::Future;
use core::pin::Pin;
use core::task::{Context, Poll};
use core::time::Duration;

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;
use sluice::breaker::OwnedSharedPermit;
use sluice::failure::NoFailureEvent;
use sluice::timers::NoTimers;
use sluice::{Cause, Outcome, RecordGuard, Recorder, Verdict};

use crate::judge::Judge;
use crate::{
    BreakerError, LayerFailureEvent, LayerPermit, LayerTimers, PermitRecorder, TrackedBody,
};

/// One admitted call, waiting for its response head.
pub(crate) struct Call<P: LayerPermit> {
    /// Dropped before the head (the client left), it records Abandoned,
    /// `client_left_before_head`.
    pub(crate) guard: RecordGuard<PermitRecorder<P>>,
    pub(crate) judge: Judge,
}

/// What a call ends in: its response, with the body tracked (or settled), timed by
/// `W` and failing with `T`, or the error.
type Finished<B, P, W, T, E> =
    Result<Response<TrackedBody<B, PermitRecorder<P>, W, T>>, BreakerError<E>>;

impl<P: LayerPermit> Call<P> {
    /// The call's response (or the inner service's error), its verdict recorded or
    /// handed to the body, which `watch` times and `tail` ends after a failure.
    fn finish<B: Body, E, W, T>(
        self,
        result: Result<Response<B>, E>,
        watch: W,
        tail: T,
    ) -> Finished<B, P, W, T, E> {
        // Nothing below awaits: the recorder records, or goes into the body, now.
        let recorder = self.guard.disarm();
        match result {
            Err(e) => {
                let verdict = self.judge.status.classify_send_failure();
                recorder.record(Outcome::new(verdict, Cause::SendFailed, 0, 0));
                Err(BreakerError::Inner(e))
            }
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                recorder.permit().tag(&mut parts.extensions);
                let body = self
                    .judge
                    .body(&parts, body, recorder)
                    .with_watch(watch)
                    .with_tail(tail);
                Ok(Response::from_parts(parts, body))
            }
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, P: LayerPermit, M, V> {
        Waiting { #[pin] future: F, call: Option<Call<P>>, timers: M, failure: V },
        Rejected { retry_after: Option<Duration> },
    }
}

pin_project! {
    /// The response future of a [`BreakerService`](crate::BreakerService) (`P` is
    /// [`OwnedSharedPermit`]) and of a [`PoolService`](crate::PoolService) (`P` is
    /// [`SetPermit`](sluice::breaker::SetPermit)); `M` is the layer's
    /// [`LayerTimers`], which time the body, and `V` its [`LayerFailureEvent`], which
    /// the body sends after a failure. Dropped before the response head, the call is
    /// [`Abandoned`](Verdict::Abandoned) (cause
    /// [`ClientLeftBeforeHead`](Cause::ClientLeftBeforeHead)).
    pub struct ResponseFuture<
        F,
        P: LayerPermit = OwnedSharedPermit,
        M = NoTimers,
        V = NoFailureEvent,
    > {
        #[pin]
        kind: Kind<F, P, M, V>,
    }
}

impl<F, P: LayerPermit, M, V> ResponseFuture<F, P, M, V> {
    pub(crate) const fn rejected(retry_after: Option<Duration>) -> Self {
        Self {
            kind: Kind::Rejected { retry_after },
        }
    }

    pub(crate) const fn waiting(future: F, call: Call<P>, timers: M, failure: V) -> Self {
        Self {
            kind: Kind::Waiting {
                future,
                call: Some(call),
                timers,
                failure,
            },
        }
    }
}

impl<F, P: LayerPermit, M, V> core::fmt::Debug for ResponseFuture<F, P, M, V> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// The tail of a layer's body: `V`'s, over the body's error (`M`'s, over `B`'s).
pub(crate) type LayerTail<V, M, B> =
    <V as LayerFailureEvent>::Tail<<M as LayerTimers>::Error<<B as Body>::Error>>;

impl<F, B, E, P, M, V> Future for ResponseFuture<F, P, M, V>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
    P: LayerPermit,
    M: LayerTimers,
    V: LayerFailureEvent,
{
    type Output = Finished<B, P, M::Watch, LayerTail<V, M, B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Rejected { retry_after } => Poll::Ready(Err(BreakerError::Rejected {
                retry_after: *retry_after,
            })),
            KindProj::Waiting {
                future,
                call,
                timers,
                failure,
            } => {
                let result = match future.poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(result) => result,
                };
                Poll::Ready(match call.take() {
                    Some(call) => call.finish(result, timers.watch(), failure.tail()),
                    // Polled again after it completed: the inner future's contract says
                    // what that does; there is nothing left to record.
                    None => result.map_err(BreakerError::Inner).map(|r| {
                        r.map(|b| {
                            TrackedBody::settled(b, Outcome::from(Verdict::Abandoned))
                                .with_watch(timers.watch())
                                .with_tail(failure.tail())
                        })
                    }),
                })
            }
        }
    }
}
