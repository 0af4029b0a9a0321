//! The settings a layer shares with its services, and the builder methods that set
//! them (the same on every layer).

use http::{HeaderMap, Request, header};
use sluice::RecordGuard;
use sluice::breaker::{Rejected, StatusPolicy};
use sluice::failure::NoFailureEvent;
use sluice::sse::SseRules;
use sluice::timers::{NoTimers, Timeouts, Timer};
use tower_service::Service;

use crate::judge::Judge;
use crate::permit_recorder::Observer;
use crate::response_future::{Call, ResponseFuture};
use crate::{
    BodyTimers, FailureEvents, GrpcPolicy, LayerFailureEvent, LayerPermit, LayerTimers,
    PermitRecorder,
};

/// The SSE rules of a layer, and which responses they apply to.
#[derive(Debug, Clone)]
pub(crate) struct Sse {
    pub(crate) rules: SseRules,
    /// Only responses whose `Content-Type` is `text/event-stream`.
    pub(crate) event_streams_only: bool,
}

impl Sse {
    /// The rules for a response with these headers, if they apply to it.
    pub(crate) fn rules_for(&self, headers: &HeaderMap) -> Option<SseRules> {
        match !self.event_streams_only || is_event_stream(headers) {
            true => Some(self.rules.clone()),
            false => None,
        }
    }
}

/// Whether the `Content-Type` is `text/event-stream`: its media type compared without
/// regard to case, its parameters (`; charset=utf-8`) ignored.
pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|value| {
        let media_type = value.as_bytes().split(|&b| b == b';').next();
        media_type.is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"text/event-stream"))
    })
}

/// The settings shared by a layer and its services; `L` is what its observer is told
/// of the worker (see [`LayerPermit::Label`]), `M` the timers of its bodies, `V` what
/// they send after a failure.
#[derive(Clone)]
pub(crate) struct Settings<L, M = NoTimers, V = NoFailureEvent> {
    pub(crate) status: StatusPolicy,
    pub(crate) sse: Option<Sse>,
    pub(crate) grpc: Option<GrpcPolicy>,
    pub(crate) observer: Option<Observer<L>>,
    pub(crate) timers: M,
    pub(crate) failure: V,
}

impl<L, M: core::fmt::Debug, V: core::fmt::Debug> core::fmt::Debug for Settings<L, M, V> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Settings")
            .field("status", &self.status)
            .field("sse", &self.sse)
            .field("grpc", &self.grpc)
            .field("observer", &self.observer.is_some())
            .field("timers", &self.timers)
            .field("failure", &self.failure)
            .finish()
    }
}

impl<L> Settings<L> {
    /// The default [`StatusPolicy`], no SSE rules, no gRPC, no observer, no timers.
    pub(crate) const fn new() -> Self {
        Self {
            status: StatusPolicy::new(),
            sse: None,
            grpc: None,
            observer: None,
            timers: NoTimers,
            failure: NoFailureEvent,
        }
    }
}

impl<L, M, V> Settings<L, M, V> {
    /// The same settings, with `timeouts` on `timer` for every tracked body.
    pub(crate) fn with_timers<T: Timer + Clone>(
        self,
        timer: T,
        timeouts: Timeouts,
    ) -> Settings<L, BodyTimers<T>, V> {
        Settings {
            status: self.status,
            sse: self.sse,
            grpc: self.grpc,
            observer: self.observer,
            timers: BodyTimers::new(timer, timeouts),
            failure: self.failure,
        }
    }

    /// The same settings, every tracked body sending the failure event.
    pub(crate) fn with_failure_event(self) -> Settings<L, M, FailureEvents> {
        Settings {
            status: self.status,
            sse: self.sse,
            grpc: self.grpc,
            observer: self.observer,
            timers: self.timers,
            failure: FailureEvents,
        }
    }

    /// One call of a layer's service: `admitted` is the permit its source gave (or
    /// the rejection). An admitted request carries the permit's tag in its
    /// extensions to the inner service.
    pub(crate) fn call<S, ReqBody, P>(
        &self,
        inner: &mut S,
        admitted: Result<P, Rejected>,
        mut request: Request<ReqBody>,
    ) -> ResponseFuture<S::Future, P, M, V>
    where
        S: Service<Request<ReqBody>>,
        P: LayerPermit<Label = L>,
        M: LayerTimers,
        V: LayerFailureEvent,
    {
        match admitted {
            Err(rejected) => ResponseFuture::rejected(rejected.retry_after),
            Ok(permit) => {
                permit.tag(request.extensions_mut());
                // Guarded before the inner call: from here the call is recorded,
                // whatever happens to its future.
                let call = Call {
                    guard: RecordGuard::new(PermitRecorder::new(permit, self.observer.clone())),
                    judge: Judge {
                        status: self.status,
                        sse: self.sse.clone(),
                        grpc: self.grpc,
                    },
                };
                ResponseFuture::waiting(
                    inner.call(request),
                    call,
                    self.timers.clone(),
                    self.failure.clone(),
                )
            }
        }
    }
}

/// The builder methods every layer has, over its `settings` field. (A macro, so that
/// the layers' methods and their docs are written once.)
macro_rules! layer_builders {
    () => {
        /// Classifies the status line with `policy` (default:
        /// [`StatusPolicy::default`](sluice::breaker::StatusPolicy)).
        #[must_use]
        pub fn with_status_policy(mut self, policy: sluice::breaker::StatusPolicy) -> Self {
            self.settings.status = policy;
            self
        }

        /// Scans every tracked body with `rules` (see
        /// [`TrackedBody::with_sse`](crate::TrackedBody::with_sse)), whatever its
        /// `Content-Type`. Replaces
        /// [`with_sse_for_event_streams`](Self::with_sse_for_event_streams).
        #[must_use]
        pub fn with_sse(mut self, rules: sluice::sse::SseRules) -> Self {
            self.settings.sse = Some(crate::settings::Sse {
                rules,
                event_streams_only: false,
            });
            self
        }

        /// Scans with `rules` only the tracked bodies whose `Content-Type` is
        /// `text/event-stream` (without regard to case, parameters ignored); any other
        /// body is tracked without rules, so its clean end is its success. For workers
        /// that answer both streamed and non-streamed requests (`"stream": false`
        /// gives `application/json`). Replaces [`with_sse`](Self::with_sse).
        #[must_use]
        pub fn with_sse_for_event_streams(mut self, rules: sluice::sse::SseRules) -> Self {
            self.settings.sse = Some(crate::settings::Sse {
                rules,
                event_streams_only: true,
            });
            self
        }

        /// Judges responses as gRPC (see
        /// [`TrackedBody::with_grpc`](crate::TrackedBody::with_grpc)), trailers-only
        /// responses included.
        #[must_use]
        pub fn with_grpc(mut self, policy: crate::GrpcPolicy) -> Self {
            self.settings.grpc = Some(policy);
            self
        }
    };
}
pub(crate) use layer_builders;

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn event_streams_by_their_media_type() {
        let cases = [
            (Some("text/event-stream"), true),
            (Some("Text/Event-Stream; charset=utf-8"), true),
            (Some("  text/event-stream  ;"), true),
            (Some("text/event-streams"), false),
            (Some("application/json"), false),
            (Some("text/event-stream-x; a=b"), false),
            (None, false),
        ];
        for (value, want) in cases {
            let mut headers = HeaderMap::new();
            if let Some(v) = value {
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            }
            assert_eq!(is_event_stream(&headers), want, "{value:?}");
        }
    }
}
