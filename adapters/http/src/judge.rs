//! How a layer judges a call's response head: the status line, a trailers-only gRPC
//! answer, and which SSE rules (if any) the body is scanned with.

use http_body::Body;
use sluice::breaker::{Classified, StatusPolicy};
use sluice::{Cause, Outcome, Recorder, Verdict};

use crate::settings::Sse;
use crate::{GrpcPolicy, TrackedBody};

/// How a call's response head is judged: the layer's settings, for one call.
pub(crate) struct Judge {
    pub(crate) status: StatusPolicy,
    pub(crate) sse: Option<Sse>,
    pub(crate) grpc: Option<GrpcPolicy>,
}

impl Judge {
    /// The response's body, tracked or settled.
    pub(crate) fn body<B: Body, R: Recorder>(
        self,
        response: &http::response::Parts,
        body: B,
        recorder: R,
    ) -> TrackedBody<B, R> {
        fn settled<B: Body, R: Recorder>(
            body: B,
            recorder: R,
            verdict: Verdict,
            cause: Cause,
        ) -> TrackedBody<B, R> {
            let outcome = Outcome::new(verdict, cause, 0, 0);
            recorder.record(outcome);
            TrackedBody::settled(body, outcome)
        }
        match self.status.classify(response.status.as_u16()) {
            Classified::Settle(verdict) => {
                return settled(body, recorder, verdict, Cause::Status);
            }
            Classified::Track => {}
            // `Classified` may grow: anything else is tracked.
            _ => {}
        }
        if let Some(grpc) = self.grpc {
            if let Some(verdict) = grpc.classify_headers(&response.headers) {
                return settled(body, recorder, verdict, Cause::GrpcStatus);
            }
        }
        let mut tracked = TrackedBody::new(body, recorder);
        if let Some(rules) = self.sse.and_then(|sse| sse.rules_for(&response.headers)) {
            tracked = tracked.with_sse(rules);
        }
        if let Some(policy) = self.grpc {
            tracked = tracked.with_grpc(policy);
        }
        tracked
    }
}
