//! The proxy handler: admit, send, classify the head, track the body.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use sluice::breaker::Classified;
use sluice::{Cause, Outcome, RecordGuard, TrackedStream, Verdict};
use sluice_tokio::TokioTimer;

use super::body::ClientBody;
use super::shutdown::grace_over;
use super::ticket::{Ticket, Timing};
use super::{Api, GatewayEvent, Inner, REQUEST_ID, error_chain, json_error};
use crate::engine;

/// At most this much of a worker's non-2xx body is passed on to the client.
pub const ERROR_BODY_CAP: usize = 64 * 1024;

/// A worker's non-2xx body is read for at most this long; what came by then (up to
/// [`ERROR_BODY_CAP`]) is passed on.
pub const ERROR_BODY_TIME_LIMIT: Duration = Duration::from_secs(5);

/// The client's headers the gateway forwards to the worker, besides the request id
/// (the Anthropic API's key and version too); no other header of the client's
/// reaches the worker.
const FORWARDED_HEADERS: [&str; 6] = [
    "content-type",
    "authorization",
    "accept",
    "x-api-key",
    "anthropic-version",
    "anthropic-beta",
];

/// Whether a `Content-Type` is `text/event-stream`: the media type's type and
/// subtype, compared without regard to case, whitespace trimmed, parameters ignored.
pub fn is_event_stream(content_type: Option<&HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.trim().eq_ignore_ascii_case("text") && subtype.trim().eq_ignore_ascii_case("event-stream")
}

/// How the wait for the worker's response head ended.
enum Head {
    /// The head came.
    Came(reqwest::Response),
    /// The request failed (connect, reset, a malformed answer).
    Failed(reqwest::Error),
    /// No head within the header timeout.
    TimedOut,
    /// The shutdown grace ended first.
    Shutdown,
}

pub(super) async fn proxy(
    AxumState(gw): AxumState<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let timing = Timing::start();
    let Some(api) = Api::from_path(uri.path()) else {
        return json_error(StatusCode::NOT_FOUND, "not_found", "no such route");
    };
    if gw.grace_is_over() {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the gateway is shutting down",
        );
    }
    // The request-id layer put one there: the client's, or one it made.
    let id = headers.get(REQUEST_ID).cloned();
    let request = id.as_ref().map_or_else(String::new, |id| {
        String::from_utf8_lossy(id.as_bytes()).into_owned()
    });
    let permit = match gw.admit(&request) {
        Ok(permit) => permit,
        Err(wait) => return unavailable(&gw, request, wait),
    };
    let worker = permit.worker();
    let upstream = &gw.workers[worker];
    let span = tracing::Span::current();
    span.record("worker", upstream.name.as_str());
    // The body goes on as it came; only an engine profile that aborts by id adds it.
    let (body, rid) = if gw.engine.aborts() {
        match engine::with_rid(&body, &gw.rids.mint()) {
            Some((rewritten, rid)) => (Bytes::from(rewritten), Some(rid)),
            None => (body, None),
        }
    } else {
        (body, None)
    };
    let url = format!("{}{}", upstream.base.trim_end_matches('/'), api.path());
    let mut call = gw.client.post(url).body(body);
    if let Some(id) = id {
        call = call.header(REQUEST_ID, id);
    }
    for name in FORWARDED_HEADERS {
        if let Some(value) = headers.get(name) {
            call = call.header(name, value);
        }
    }
    // From here the request is on its way to the engine. If the client leaves while
    // the gateway waits for the headers, hyper drops this future: the request is
    // cancelled and the guard records Abandoned (`client_left_before_head`).
    let guard = RecordGuard::new(Ticket {
        gw: gw.clone(),
        request,
        permit: Some(permit),
        api,
        timing,
        span,
        rid,
    });
    let head = tokio::select! {
        biased;
        () = grace_over(gw.shutdown.subscribe()) => Head::Shutdown,
        sent = tokio::time::timeout(gw.header_timeout, call.send()) => match sent {
            Ok(Ok(response)) => Head::Came(response),
            Ok(Err(err)) => Head::Failed(err),
            Err(_) => Head::TimedOut,
        },
    };
    // Every path below settles the ticket, or hands it to the tracked stream, before
    // its next await.
    let mut ticket = guard.disarm();
    let response = match head {
        Head::Came(response) => response,
        Head::Failed(err) => {
            let failed = Outcome::new(gw.policy.classify_send_failure(), Cause::SendFailed, 0, 0);
            // The error chain names the URL: the log has it, the client does not.
            tracing::warn!(
                request = ticket.request,
                worker = upstream.name,
                error = error_chain(&err),
                "upstream unreachable"
            );
            ticket.settle(failed);
            let message = format!("upstream {} is unreachable", upstream.name);
            return json_error(StatusCode::BAD_GATEWAY, "bad_gateway", &message);
        }
        Head::TimedOut => {
            let failed = Outcome::new(Verdict::Failure, Cause::HeaderTimeout, 0, 0);
            ticket.settle(failed);
            let message = format!(
                "upstream {} sent no response head within {:?}",
                upstream.name, gw.header_timeout
            );
            return json_error(StatusCode::GATEWAY_TIMEOUT, "gateway_timeout", &message);
        }
        Head::Shutdown => {
            let gone = Outcome::new(Verdict::Abandoned, Cause::Shutdown, 0, 0);
            ticket.settle(gone);
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the gateway shut down before the worker answered",
            );
        }
    };
    let status = response.status();
    if let Classified::Settle(verdict) = gw.policy.classify(status.as_u16()) {
        ticket.settle(Outcome::new(verdict, Cause::Status, 0, 0));
        if status.is_redirection() {
            // Not followed: where it points is the worker's business, not the client's.
            let message = format!(
                "upstream {} answered with a redirect ({}), which the gateway does not follow",
                upstream.name,
                status.as_u16()
            );
            return json_error(StatusCode::BAD_GATEWAY, "bad_gateway", &message);
        }
        // Pass the worker's answer on (a 400 explains what was wrong with the
        // request), capped in size and in time.
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let text = capped_body(response, ERROR_BODY_CAP, ERROR_BODY_TIME_LIMIT).await;
        let mut out = (status, text).into_response();
        if let Some(ct) = content_type {
            out.headers_mut().insert(header::CONTENT_TYPE, ct);
        }
        return out;
    }
    tracked_response(&gw, api, worker, response, ticket)
}

/// The 503 when no worker admits the call.
fn unavailable(gw: &Inner, request: String, wait: Duration) -> Response {
    gw.metrics.unavailable();
    // Whole seconds, rounded up: a client that waits that long finds a probe slot.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    tracing::warn!(request, retry_after_s = secs, "no worker admitted: 503");
    gw.emit(GatewayEvent::Unavailable {
        request,
        retry_after: wait,
    });
    let mut response = json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "no worker is admitted: every worker's circuit breaker is open",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// Up to `cap` bytes of a body, read for at most `limit`; the rest is never read
/// (the response is dropped, which closes the worker's connection).
async fn capped_body(mut response: reqwest::Response, cap: usize, limit: Duration) -> Bytes {
    let mut body = Vec::new();
    let read = async {
        while body.len() < cap {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = cap - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                Ok(None) | Err(_) => break,
            }
        }
    };
    // A worker that trickles its error body forever holds nobody past the limit.
    let _ = tokio::time::timeout(limit, read).await;
    Bytes::from(body)
}

/// The client's response for a worker's 2xx answer: the one place where a stream is
/// tracked. The rules come from the response: a `text/event-stream` body gets the
/// route's SSE preset (it ends at its API's done event); any other body is tracked
/// without rules (its clean end is its success). Either runs the worker's progress
/// timers ([`Options::timeouts`](super::Options::timeouts)), from the body's first
/// poll; an expiry fails the stream with its cause. A failure after the head reaches
/// an event stream's client as the route's error event
/// ([`with_failure_event_named`](TrackedStream::with_failure_event_named); see
/// [`ClientBody`]).
fn tracked_response(
    gw: &Inner,
    api: Api,
    worker: usize,
    response: reqwest::Response,
    ticket: Ticket,
) -> Response {
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let event_stream = is_event_stream(content_type.as_ref());
    let timing = ticket.timing.clone();
    let tracked = TrackedStream::new(response.bytes_stream(), ticket);
    let tracked = if event_stream {
        tracked.with_sse(api.rules())
    } else {
        tracked
    };
    // The route's failure event, naming the worker (never its URL); only an event
    // stream has one.
    let name: Arc<str> = Arc::from(gw.name(worker));
    let tracked = tracked
        .with_timers(TokioTimer, gw.timeouts)
        .with_failure_event_named(name);
    let body = ClientBody::new(tracked, gw.shutdown.subscribe(), timing);
    let mut out = Response::new(Body::from_stream(body));
    *out.status_mut() = status;
    if let Some(ct) = content_type {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    if event_stream {
        out.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_stream_media_type_is_parsed_not_prefixed() {
        let yes = [
            "text/event-stream",
            "Text/Event-Stream",
            "TEXT/EVENT-STREAM; charset=utf-8",
            " text/event-stream ;charset=utf-8",
            "text / event-stream",
        ];
        for ct in yes {
            assert!(is_event_stream(Some(&HeaderValue::from_static(ct))), "{ct}");
        }
        let no = [
            "application/json",
            "text/event-streamx",
            "text/plain; x=text/event-stream",
            "event-stream",
            "",
        ];
        for ct in no {
            assert!(
                !is_event_stream(Some(&HeaderValue::from_static(ct))),
                "{ct}"
            );
        }
        assert!(!is_event_stream(None));
    }
}
