//! The proxy handler: admit, send, classify the head, track the body; retry and
//! hedge before the commit.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State as AxumState;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use sluice::attempt::Attempt;
use sluice::breaker::{Classified, SetPermit};
use sluice::eventstream::EventStreamRules;
use sluice::{Cause, Outcome, RecordGuard, TrackedStream, Verdict};
use sluice_tokio::TokioTimer;
use tokio::task::JoinHandle;

use super::body::ClientBody;
use super::shutdown::grace_over;
use super::ticket::{Ticket, Timing};
use super::{Api, GatewayEvent, Inner, REQUEST_ID_HEADER, error_chain, json_error};
use crate::engine;
use crate::metrics::{AttemptKind, AttemptResult, Refusal};

/// At most this much of a worker's non-2xx body is passed on to the client.
pub const ERROR_BODY_CAP: usize = 64 * 1024;

/// A worker's non-2xx body is read for at most this long; what came by then (up to
/// [`ERROR_BODY_CAP`]) is passed on.
pub const ERROR_BODY_TIME_LIMIT: Duration = Duration::from_secs(5);

/// The client's headers the gateway forwards to the worker, besides the request id
/// (the Anthropic API's key and version too); no other header of the client's
/// reaches the worker. As names, so that no lookup parses one.
const FORWARDED_HEADERS: [(&str, HeaderName); 6] = [
    ("content-type", header::CONTENT_TYPE),
    ("authorization", header::AUTHORIZATION),
    ("accept", header::ACCEPT),
    ("x-api-key", HeaderName::from_static("x-api-key")),
    (
        "anthropic-version",
        HeaderName::from_static("anthropic-version"),
    ),
    ("anthropic-beta", HeaderName::from_static("anthropic-beta")),
];

/// A `Content-Type`'s type and subtype, whitespace trimmed, parameters dropped.
fn media_type(content_type: Option<&HeaderValue>) -> Option<(&str, &str)> {
    let value = content_type?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default();
    let (kind, subtype) = essence.split_once('/')?;
    Some((kind.trim(), subtype.trim()))
}

/// Whether `content_type` is `kind/subtype`, compared without regard to case.
fn media_type_is(content_type: Option<&HeaderValue>, kind: &str, subtype: &str) -> bool {
    media_type(content_type).is_some_and(|media| is(media, kind, subtype))
}

/// Whether a media type (as [`media_type`] gives it) is `kind/subtype`, compared
/// without regard to case.
fn is((k, s): (&str, &str), kind: &str, subtype: &str) -> bool {
    k.eq_ignore_ascii_case(kind) && s.eq_ignore_ascii_case(subtype)
}

/// The framing a response's content type names, read once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `text/event-stream` ([`is_event_stream`]).
    EventStream,
    /// `application/x-ndjson` ([`is_ndjson`]).
    Ndjson,
    /// `application/vnd.amazon.eventstream` ([`is_amazon_eventstream`]).
    AmazonEventStream,
    /// Anything else, or none.
    Other,
}

impl Framing {
    fn of(content_type: Option<&HeaderValue>) -> Self {
        match media_type(content_type) {
            Some(m) if is(m, "text", "event-stream") => Self::EventStream,
            Some(m) if is(m, "application", "x-ndjson") => Self::Ndjson,
            Some(m) if is(m, "application", "vnd.amazon.eventstream") => Self::AmazonEventStream,
            _ => Self::Other,
        }
    }
}

/// Whether a `Content-Type` is `text/event-stream`: the media type's type and
/// subtype, compared without regard to case, whitespace trimmed, parameters ignored.
pub fn is_event_stream(content_type: Option<&HeaderValue>) -> bool {
    media_type_is(content_type, "text", "event-stream")
}

/// Whether a response's content type is `application/x-ndjson` (any case, any
/// parameters): newline-delimited JSON, Ollama's native stream.
pub fn is_ndjson(content_type: Option<&HeaderValue>) -> bool {
    media_type_is(content_type, "application", "x-ndjson")
}

/// Whether a response's content type is `application/vnd.amazon.eventstream` (any
/// case, any parameters): the binary event stream of AWS Bedrock's
/// `ConverseStream`, judged by [`EventStreamRules::bedrock`] whatever the route.
pub fn is_amazon_eventstream(content_type: Option<&HeaderValue>) -> bool {
    media_type_is(content_type, "application", "vnd.amazon.eventstream")
}

/// At most this much of a stream is held back before its commit (its preamble and
/// keep-alives), while a retry or a hedge may still replace it.
pub const HOLD_BACK_STREAM: usize = 64 * 1024;

/// At most this much of a non-streaming answer is held back, so that a failure
/// anywhere before its end can still be retried; a longer answer commits there.
pub const HOLD_BACK_WHOLE: usize = 1024 * 1024;

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

/// What every attempt of one request sends.
struct Call {
    api: Api,
    /// The path and query the worker is sent: the client's (a Gemini route names
    /// the model in its path, and `?alt=sse` asks for a stream).
    target: String,
    /// The request id (empty if none).
    request: String,
    id: Option<HeaderValue>,
    /// The client's headers that are forwarded.
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
    timing: Arc<Timing>,
    span: tracing::Span,
}

/// How one attempt ended.
enum Tried {
    /// The client's answer: a stream that committed, or an answer that is not
    /// retried (another 4xx, the shutdown).
    Answer(Response),
    /// It failed before its commit, and another worker may serve (its worker has
    /// heard its verdict): what the client gets if no other attempt is made.
    Retryable(Fallback),
}

/// The answer of a failed attempt, sent only if no other attempt replaces it.
enum Fallback {
    Ready(Response),
    /// A non-2xx answer, its body read (capped in size and time) by a task of its
    /// own from the start: the worker's connection is freed when that body ends
    /// (back to the pool, or closed), not held open until the next attempt's head.
    Status(JoinHandle<Response>),
}

impl Fallback {
    /// The fallback of a non-2xx `response`, whose body starts being read now.
    fn status(response: reqwest::Response) -> Self {
        Self::Status(tokio::spawn(passed_on(response)))
    }

    async fn into_response(self) -> Response {
        match self {
            Self::Ready(response) => response,
            Self::Status(reading) => reading.await.unwrap_or_else(|_| {
                // The task ended without its answer (it cannot panic but by a bug).
                let message = "the worker's answer could not be read";
                json_error(StatusCode::BAD_GATEWAY, "bad_gateway", message)
            }),
        }
    }
}

/// What a request asks for, read from its route and headers.
enum Asked {
    /// An answer at once: no such route, or the gateway is shutting down.
    Answer(Response),
    /// A prefill/decode pair.
    Pair(super::pd::PairCall),
    /// One worker, with retries and hedges.
    Call(Call),
}

/// The handler: what the request asks for is read at once, and the URI and the
/// headers dropped; the future it returns holds only that while the request waits for
/// its worker (an `async fn` would hold its arguments to its end).
pub(super) fn proxy(
    AxumState(gw): AxumState<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl Future<Output = Response> + Send {
    let asked = asked(&gw, uri, headers, body);
    async move {
        match asked {
            Asked::Call(ref call) => {
                if gw.retries > 0 || gw.hedge_after.is_some() {
                    gw.budget.deposit();
                }
                attempts(&gw, call).await
            }
            Asked::Answer(response) => response,
            Asked::Pair(call) => pair(gw, call).await,
        }
    }
}

/// A prefill/decode pair's request. Boxed: a request waits for its head in its
/// handler's future, as large as its largest path; the rarer paths are not part of it.
fn pair(
    gw: Arc<Inner>,
    call: super::pd::PairCall,
) -> Pin<Box<dyn Future<Output = Response> + Send>> {
    Box::pin(async move {
        match &gw.pd {
            Some(pools) => super::pd::proxy(&gw, pools, call).await,
            None => unreachable_pair(),
        }
    })
}

/// A pair asked of a gateway without pools: [`asked`] never does it.
#[cold]
fn unreachable_pair() -> Response {
    json_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "no prefill/decode pools",
    )
}

/// What the request asks for, or the answer it gets at once.
fn asked(gw: &Inner, uri: Uri, headers: HeaderMap, body: Bytes) -> Asked {
    let timing = Timing::start();
    let Some(api) = Api::from_path(uri.path()) else {
        return Asked::Answer(json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route",
        ));
    };
    if gw.grace_is_over() {
        return Asked::Answer(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the gateway is shutting down",
        ));
    }
    // The request-id layer put one there: the client's, or one it made.
    let id = headers.get(REQUEST_ID_HEADER).cloned();
    let request = id.as_ref().map_or_else(String::new, |id| {
        String::from_utf8_lossy(id.as_bytes()).into_owned()
    });
    if gw.pd.is_some() {
        if matches!(api, Api::GeminiStream | Api::GeminiGenerate) {
            // Prefill/decode pairs are SGLang's protocol, on its routes.
            return Asked::Answer(json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "the Gemini routes are not served in prefill/decode mode",
            ));
        }
        let forwarded = FORWARDED_HEADERS
            .into_iter()
            .filter_map(|(name, key)| headers.get(key).map(|value| (name, value.clone())))
            .collect();
        return Asked::Pair(super::pd::PairCall {
            api,
            request,
            id,
            headers: forwarded,
            body,
            timing,
        });
    }
    let forwarded = FORWARDED_HEADERS
        .into_iter()
        .filter_map(|(_, key)| headers.get(&key).map(|value| (key, value.clone())))
        .collect();
    let target = uri
        .path_and_query()
        .map_or_else(|| api.path().to_owned(), |pq| pq.as_str().to_owned());
    Asked::Call(Call {
        api,
        target,
        request,
        id,
        headers: forwarded,
        body,
        timing,
        span: tracing::Span::current(),
    })
}

/// The attempts of one request until one answers: the first, a hedge beside it if
/// it is slow, and retries after failures before the commit, each on a worker not
/// yet tried, as far as `--retries` and the retry budget allow. A client that
/// leaves drops this future, and with it every attempt in flight (Abandoned).
async fn attempts(gw: &Arc<Inner>, call: &Call) -> Response {
    let mut tried: Vec<usize> = Vec::new();
    let mut kind = AttemptKind::First;
    let mut last: Option<Fallback> = None;
    loop {
        let permit = match gw.admit(&call.request, &tried) {
            Ok(permit) => permit,
            Err(wait) => {
                return match last {
                    // No worker left to retry on: the last failure stands.
                    Some(fallback) => {
                        gw.metrics.refused(kind, Refusal::NoWorker);
                        Box::pin(fallback.into_response()).await
                    }
                    None => unavailable(gw, call.request.clone(), wait),
                };
            }
        };
        tried.push(permit.worker());
        let fallback = match race(gw, call, &mut tried, permit, kind).await {
            Tried::Answer(response) => return response,
            Tried::Retryable(fallback) => fallback,
        };
        let refusal = if tried.len() > gw.retries as usize {
            Refusal::Limit
        } else if gw.budget.try_withdraw() {
            last = Some(fallback);
            kind = AttemptKind::Retry;
            continue;
        } else {
            Refusal::Budget
        };
        // No retry: the last attempt's answer stands.
        if gw.retries > 0 {
            gw.metrics.refused(AttemptKind::Retry, refusal);
        }
        return Box::pin(fallback.into_response()).await;
    }
}

/// One attempt in flight, with what its metrics and its ticket need to know.
struct Contender<'a> {
    future: Pin<Box<dyn Future<Output = Tried> + Send + 'a>>,
    /// Shared with the attempt's ticket: set before the attempt is dropped for
    /// losing a race, so its verdict says `hedge_lost`.
    lost: Arc<AtomicBool>,
    worker: usize,
    kind: AttemptKind,
}

impl<'a> Contender<'a> {
    fn new(gw: &'a Arc<Inner>, call: &'a Call, permit: SetPermit, kind: AttemptKind) -> Self {
        let lost = Arc::new(AtomicBool::new(false));
        let worker = permit.worker();
        let future = Box::pin(try_worker(gw, call, permit, lost.clone()));
        Self {
            future,
            lost,
            worker,
            kind,
        }
    }

    /// Counts how it settled.
    fn settled(&self, gw: &Inner, tried: Tried) -> Tried {
        let result = match tried {
            Tried::Answer(_) => AttemptResult::Answered,
            Tried::Retryable(_) => AttemptResult::Failed,
        };
        gw.metrics.attempt(self.worker, self.kind, result);
        tried
    }

    /// Runs it to its end.
    async fn run(mut self, gw: &Inner) -> Tried {
        let tried = (&mut self.future).await;
        self.settled(gw, tried)
    }

    /// Drops it unsettled, because another attempt answered first: Abandoned,
    /// `hedge_lost`; its connection is closed (and, with an engine profile that
    /// aborts, the engine is told).
    fn lose(self, gw: &Inner) {
        self.lost.store(true, Ordering::Release);
        gw.metrics
            .attempt(self.worker, self.kind, AttemptResult::HedgeLost);
        drop(self.future);
    }
}

/// Which of two racing attempts settled first.
enum FirstDone {
    Primary(Tried),
    Hedge(Tried),
}

/// The attempt on `permit`'s worker; if it has not settled after the hedge delay,
/// one more on another worker (the budget allowing), and the first to answer wins:
/// the other is dropped (Abandoned, `hedge_lost`). If one fails, the other goes on
/// alone.
async fn race(
    gw: &Arc<Inner>,
    call: &Call,
    tried: &mut Vec<usize>,
    permit: SetPermit,
    kind: AttemptKind,
) -> Tried {
    let mut primary = Contender::new(gw, call, permit, kind);
    let Some(delay) = gw.hedge_after else {
        return primary.run(gw).await;
    };
    tokio::select! {
        biased;
        tried = &mut primary.future => return primary.settled(gw, tried),
        () = tokio::time::sleep(delay) => {}
    }
    if !gw.budget.try_withdraw() {
        gw.metrics.refused(AttemptKind::Hedge, Refusal::Budget);
        return primary.run(gw).await;
    }
    let Ok(permit) = gw.admit(&call.request, tried) else {
        gw.metrics.refused(AttemptKind::Hedge, Refusal::NoWorker);
        return primary.run(gw).await;
    };
    tried.push(permit.worker());
    let mut hedge = Contender::new(gw, call, permit, AttemptKind::Hedge);
    let first = tokio::select! {
        tried = &mut primary.future => FirstDone::Primary(tried),
        tried = &mut hedge.future => FirstDone::Hedge(tried),
    };
    let (winner, loser) = match first {
        FirstDone::Primary(tried) => match primary.settled(gw, tried) {
            Tried::Retryable(_) => return hedge.run(gw).await,
            answer => (answer, hedge),
        },
        FirstDone::Hedge(tried) => match hedge.settled(gw, tried) {
            Tried::Retryable(_) => return primary.run(gw).await,
            answer => (answer, primary),
        },
    };
    loser.lose(gw);
    winner
}

/// One attempt on the worker of `permit`: send the request, wait for the head,
/// classify it, and for a 2xx hold the body back to its commit when another attempt
/// may still replace it. The attempt's ticket reports its verdict.
async fn try_worker(
    gw: &Arc<Inner>,
    call: &Call,
    permit: SetPermit,
    lost: Arc<AtomicBool>,
) -> Tried {
    let worker = permit.worker();
    let upstream = &gw.workers[worker];
    call.span.record("worker", upstream.name.as_str());
    // The body goes on as it came; only an engine profile that aborts by id adds it.
    let (body, rid) = if gw.engine.aborts() {
        match engine::with_rid(&call.body, &gw.rids.mint()) {
            Some((rewritten, rid)) => (Bytes::from(rewritten), Some(rid)),
            None => (call.body.clone(), None),
        }
    } else {
        (call.body.clone(), None)
    };
    let request = |body: Bytes| {
        let url = format!("{}{}", upstream.base.trim_end_matches('/'), call.target);
        let mut request = gw.client.post(url).body(body);
        if let Some(id) = &call.id {
            request = request.header(REQUEST_ID_HEADER, id.clone());
        }
        for (name, value) in &call.headers {
            request = request.header(name.clone(), value.clone());
        }
        request
    };
    // Sent again (on another connection) only if the first went out on a kept-alive
    // connection the worker had just closed.
    let send = gw.resend(request(body.clone()), || Some(request(body)));
    // From here the request is on its way to the engine. If the client leaves (or a
    // hedge wins) while the gateway waits for the headers, this future is dropped:
    // the request is cancelled and the guard records Abandoned.
    let guard = RecordGuard::new(Ticket {
        gw: gw.clone(),
        request: call.request.clone(),
        permit: Some(permit),
        api: call.api,
        timing: call.timing.clone(),
        span: call.span.clone(),
        rid,
        hedge_lost: lost,
    });
    let head = tokio::select! {
        biased;
        () = grace_over(gw.shutdown.subscribe()) => Head::Shutdown,
        sent = tokio::time::timeout(gw.header_timeout, send) => match sent {
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
            let response = json_error(StatusCode::BAD_GATEWAY, "bad_gateway", &message);
            return Tried::Retryable(Fallback::Ready(response));
        }
        Head::TimedOut => {
            let failed = Outcome::new(Verdict::Failure, Cause::HeaderTimeout, 0, 0);
            ticket.settle(failed);
            let message = format!(
                "upstream {} sent no response head within {:?}",
                upstream.name, gw.header_timeout
            );
            let response = json_error(StatusCode::GATEWAY_TIMEOUT, "gateway_timeout", &message);
            return Tried::Retryable(Fallback::Ready(response));
        }
        Head::Shutdown => {
            let gone = Outcome::new(Verdict::Abandoned, Cause::Shutdown, 0, 0);
            ticket.settle(gone);
            return Tried::Answer(shutting_down());
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
            let response = json_error(StatusCode::BAD_GATEWAY, "bad_gateway", &message);
            return Tried::Retryable(Fallback::Ready(response));
        }
        // A 429 or 503 is neutral for the breaker, but another worker may serve.
        if verdict == Verdict::Failure || matches!(status.as_u16(), 429 | 503) {
            return Tried::Retryable(Fallback::status(response));
        }
        // Boxed: a 2xx, the common case, has no room for it in its state.
        return Tried::Answer(Box::pin(passed_on(response)).await);
    }
    streamed(gw, call, worker, response, ticket).await
}

/// The 503 of a request the shutdown ended before its answer.
fn shutting_down() -> Response {
    json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the gateway shut down before the worker answered",
    )
}

/// A worker's non-2xx answer, passed on (a 400 explains what was wrong with the
/// request), its body capped in size and in time.
pub(super) async fn passed_on(response: reqwest::Response) -> Response {
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let text = capped_body(response, ERROR_BODY_CAP, ERROR_BODY_TIME_LIMIT).await;
    let mut out = (status, text).into_response();
    if let Some(ct) = content_type {
        out.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    out
}

/// A worker's 2xx answer: the one place where a stream is tracked. The rules come
/// from the response: a `text/event-stream` body gets the route's SSE preset (it
/// ends at its API's done event); any other body is tracked without rules (its
/// clean end is its success). Either runs the worker's progress timers
/// ([`Options::timeouts`](super::Options::timeouts)) from the body's first poll; an
/// expiry fails the stream with its cause. A failure after the head reaches an
/// event stream's client as the route's error event
/// ([`with_failure_event_named`](TrackedStream::with_failure_event_named); see
/// [`ClientBody`]).
///
/// When a retry or a hedge may replace the attempt, the body is held back
/// ([`Attempt`]) until its first progress event (a stream, up to
/// [`HOLD_BACK_STREAM`]) or its end (any other body, up to [`HOLD_BACK_WHOLE`]),
/// and the head goes to the client with that commit; a failure before it is
/// retryable, and none of its bytes reach the client unless it is the answer that
/// stands (then only what failed it). Otherwise the head goes at once.
///
/// The stream is built at once; the future returned holds only the attempt, boxed,
/// to its commit (an `async fn` would hold the response and the ticket too).
fn streamed<'a>(
    gw: &'a Inner,
    call: &'a Call,
    worker: usize,
    response: reqwest::Response,
    ticket: Ticket,
) -> impl Future<Output = Tried> + Send + 'a {
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let framing = Framing::of(content_type.as_ref());
    let event_stream = framing == Framing::EventStream;
    let tracked = TrackedStream::new(response.bytes_stream(), ticket);
    let tracked = match framing {
        Framing::EventStream => tracked.with_sse(call.api.rules()),
        Framing::Ndjson => tracked.with_ndjson(call.api.ndjson_rules()),
        Framing::AmazonEventStream => tracked.with_eventstream(EventStreamRules::bedrock()),
        Framing::Other => tracked,
    };
    // The route's failure event, naming the worker (never its URL); an event stream
    // and Ollama's NDJSON have one (the binary event stream has none: it is cut).
    let tracked = tracked
        .with_timers(TokioTimer, gw.timeouts)
        .with_failure_event_named(gw.shared_name(worker));
    let replaceable = gw.retries > 0 || gw.hedge_after.is_some();
    let mut attempt = Box::pin(match (replaceable, framing != Framing::Other) {
        (false, _) => Attempt::new(tracked, 0),
        (true, true) => Attempt::new(tracked, HOLD_BACK_STREAM),
        (true, false) => Attempt::whole(tracked, HOLD_BACK_WHOLE),
    });
    let respond = move |attempt| {
        let body = ClientBody::new(attempt, gw.shutdown.subscribe(), call.timing.clone());
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
    };
    async move {
        if !replaceable {
            return Tried::Answer(respond(attempt));
        }
        let committed = tokio::select! {
            biased;
            () = grace_over(gw.shutdown.subscribe()) => None,
            commit = attempt.as_mut().commit() => Some(commit.is_ok()),
        };
        match committed {
            Some(true) => Tried::Answer(respond(attempt)),
            // The failed attempt is the answer if no other replaces it.
            Some(false) => Tried::Retryable(Fallback::Ready(respond(attempt))),
            None => {
                attempt.as_mut().abandon(Cause::Shutdown);
                Tried::Answer(shutting_down())
            }
        }
    }
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

    #[test]
    fn the_other_framings_are_read_from_their_media_types() {
        let ct = |s: &'static str| Some(HeaderValue::from_static(s));
        assert!(is_ndjson(
            ct("Application/X-NDJSON; charset=utf-8").as_ref()
        ));
        assert!(!is_ndjson(ct("application/json").as_ref()));
        assert!(is_amazon_eventstream(
            ct("application/vnd.amazon.eventstream").as_ref()
        ));
        assert!(!is_amazon_eventstream(
            ct("application/vnd.amazon.event").as_ref()
        ));
        assert!(!is_amazon_eventstream(None));
    }
}
