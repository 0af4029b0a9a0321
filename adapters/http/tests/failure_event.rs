//! A failure after the response head reaches the client in the route's dialect
//! (`with_failure_event` on `TrackedBody` and on the layers): OpenAI's
//! `data: {"error": ...}` and no `[DONE]`, Anthropic's `event: error`, Responses'
//! `response.failed`; nothing added after the worker's own error event, after
//! `[DONE]`, or to a body without the option.
//!
//! The loopback tests run a worker the test feeds frame by frame, a hyper gateway
//! relaying the layer's `TrackedBody`, and a hyper-util client, over HTTP/1.1 and
//! HTTP/2; the in-process tests poll a `TrackedBody` frame by frame, its timers on a
//! manual clock.

mod common;

use std::convert::Infallible;
use std::pin::pin;
use std::task::{Context, Waker};
use std::time::Duration;

use bytes::Bytes;
use common::{FedWorker, ManualTimer, PROTOS, Proto, Route, Server, gateway, get, within};
use futures_util::stream;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use sluice::breaker::{Config, ManualClock, Pick, SharedBreaker, SharedBreakerSet};
use sluice::sse::SseRules;
use sluice::timers::Timeouts;
use sluice::{Cause, Outcome, Verdict};
use sluice_http::{BodyError, BreakerLayer, PoolLayer, TrackedBody};
use tokio::sync::mpsc;

const SEC: Duration = Duration::from_secs(1);

/// OpenAI's failure event for a stream cut short.
const OPENAI_TRUNCATED: &str = "data: {\"error\":{\"message\":\"upstream failed: truncated\",\
     \"type\":\"upstream_error\",\"code\":\"truncated\"}}\n\n";

// ---------------------------------------------------------------- the manual timer

/// A recorder into a channel.
fn recorder() -> (
    impl Fn(Outcome) + Send + 'static,
    std::sync::mpsc::Receiver<Outcome>,
) {
    let (tx, rx) = std::sync::mpsc::channel();
    (
        move |o: Outcome| {
            let _ = tx.send(o);
        },
        rx,
    )
}

/// The data of a frame the body must send.
fn data<D: AsRef<[u8]>, E: std::fmt::Debug>(frame: Option<Result<Frame<D>, E>>) -> String {
    let frame = frame.expect("a frame").expect("a data frame");
    let data = frame.into_data().ok().expect("data");
    String::from_utf8(data.as_ref().to_vec()).expect("utf-8")
}

/// An idle timeout after a token: the body sends the token, then (the clock moved
/// past the idle time) the OpenAI error event, then `BodyError::TimedOut`, and says
/// it is not over until the error is out. The verdict is the timer's.
#[tokio::test]
async fn an_idle_timeout_sends_the_event_then_the_timeout_error() {
    let timer = ManualTimer::default();
    let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
    let frames = stream::unfold(rx, |mut rx| async move {
        let bytes = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    let (record, outcomes) = recorder();
    let body = TrackedBody::new(StreamBody::new(frames), record)
        .with_sse(SseRules::openai_chat())
        .with_timers(timer.clone(), Timeouts::new().idle(5 * SEC))
        .with_failure_event();
    // Boxed, not `pin!`ned: dropped below, so that it records.
    let mut body = Box::pin(body);
    tx.send(Bytes::from_static(b"data: {\"t\":1}\n\n"))
        .expect("send");
    assert_eq!(data(body.frame().await), "data: {\"t\":1}\n\n");
    let mut cx = Context::from_waker(Waker::noop());
    assert!(body.as_mut().poll_frame(&mut cx).is_pending());
    timer.advance(5 * SEC);

    assert_eq!(
        data(body.frame().await),
        "data: {\"error\":{\"message\":\"upstream failed: idle_timeout\",\
         \"type\":\"upstream_error\",\"code\":\"idle_timeout\"}}\n\n"
    );
    assert!(!body.is_end_stream(), "the error is left to send");
    let err = body
        .frame()
        .await
        .expect("a frame")
        .expect_err("the timeout after the event");
    assert!(matches!(
        err,
        BodyError::TimedOut {
            cause: Cause::IdleTimeout
        }
    ));
    assert!(body.is_end_stream());
    assert!(body.frame().await.is_none());
    drop(body);
    let outcome = outcomes.recv().expect("recorded");
    assert_eq!(
        (outcome.verdict, outcome.cause),
        (Verdict::Failure, Cause::IdleTimeout)
    );
}

/// An error frame from the inner body after a cut event: the cut event is closed,
/// the failure event (naming the upstream) follows, then the inner error.
#[tokio::test]
async fn an_inner_error_sends_the_named_event_then_the_error() {
    let frames = stream::iter([
        Ok(Frame::data(Bytes::from_static(
            b"data: {\"t\":1}\n\ndata: {\"t",
        ))),
        Err(std::io::Error::other("reset")),
    ]);
    let (record, outcomes) = recorder();
    let body = TrackedBody::new(StreamBody::new(frames), record)
        .with_sse(SseRules::openai_chat())
        .with_failure_event_named("gpu-7");
    let mut body = Box::pin(body);
    data(body.frame().await);
    assert_eq!(
        data(body.frame().await),
        "\n\ndata: {\"error\":{\"message\":\"upstream gpu-7 failed: error_item\",\
         \"type\":\"upstream_error\",\"code\":\"error_item\"}}\n\n"
    );
    assert!(!body.is_end_stream());
    let err = body.frame().await.expect("a frame").expect_err("the error");
    assert_eq!(err.to_string(), "reset");
    drop(body);
    let outcome = outcomes.recv().expect("recorded");
    assert_eq!(
        (outcome.verdict, outcome.cause),
        (Verdict::Failure, Cause::ErrorItem)
    );
}

/// An inner body that says it is over with its last data frame (a `Full`), or
/// before any (an `Empty`), before the done event: the body says it is not over
/// while the event is left, so a server polls it out.
#[tokio::test]
async fn an_inner_body_over_before_done_still_gets_the_event() {
    let body = TrackedBody::new(
        Full::new(Bytes::from_static(b"data: {}\n\n")),
        |_: Outcome| {},
    )
    .with_sse(SseRules::openai_chat())
    .with_failure_event();
    let mut body = pin!(body);
    assert!(!body.is_end_stream());
    assert_eq!(data(body.frame().await), "data: {}\n\n");
    assert!(!body.is_end_stream(), "the event is left to send");
    assert_eq!(body.size_hint().exact(), None);
    assert_eq!(data(body.frame().await), OPENAI_TRUNCATED);
    assert!(body.is_end_stream());
    assert_eq!(body.size_hint().exact(), Some(0));
    assert!(body.frame().await.is_none());

    let body = TrackedBody::new(Empty::<Bytes>::new(), |_: Outcome| {})
        .with_sse(SseRules::openai_chat())
        .with_failure_event();
    assert!(
        !body.is_end_stream(),
        "an empty body is a truncation to report"
    );
    let bytes = body.collect().await.expect("no error").to_bytes();
    assert_eq!(bytes, OPENAI_TRUNCATED);

    // Without the option, the same empty body is over at once.
    let body =
        TrackedBody::new(Empty::<Bytes>::new(), |_: Outcome| {}).with_sse(SseRules::openai_chat());
    assert!(body.is_end_stream());
}

/// Nothing added after `[DONE]`, even when an error frame follows it (the client has
/// its whole answer): the error passes through (the machine makes it the verdict,
/// `error_item`), but no error event contradicts the answer.
#[tokio::test]
async fn nothing_after_done_even_before_an_error_frame() {
    let frames = stream::iter([
        Ok(Frame::data(Bytes::from_static(
            b"data: {}\n\ndata: [DONE]\n\n",
        ))),
        Err(std::io::Error::other("reset")),
    ]);
    let body = TrackedBody::new(StreamBody::new(frames), |_: Outcome| {})
        .with_sse(SseRules::openai_chat())
        .with_failure_event();
    let mut body = pin!(body);
    assert_eq!(data(body.frame().await), "data: {}\n\ndata: [DONE]\n\n");
    let err = body.frame().await.expect("a frame").expect_err("the error");
    assert_eq!(err.to_string(), "reset");
    assert_eq!(body.outcome().cause, Cause::ErrorItem);
}

/// Without SSE rules (or rules without a dialect), nothing is added.
#[tokio::test]
async fn nothing_without_a_dialect() {
    let cut = || Full::new(Bytes::from_static(b"data: {\"t\":1}\n\n"));
    let body = TrackedBody::new(cut(), |_: Outcome| {}).with_failure_event();
    assert_eq!(
        body.collect().await.expect("ok").to_bytes(),
        cut().collect().await.expect("ok").to_bytes()
    );
    let rules = SseRules::openai_chat().with_dialect(None);
    let (record, outcomes) = recorder();
    let body = TrackedBody::new(cut(), record)
        .with_sse(rules)
        .with_failure_event();
    assert_eq!(
        body.collect().await.expect("ok").to_bytes(),
        "data: {\"t\":1}\n\n"
    );
    let outcome = outcomes.recv().expect("recorded");
    assert_eq!(outcome.cause, Cause::Truncated);
}

// ---------------------------------------------------------------- the loopback rig

/// A gateway over two workers behind a `PoolLayer` scanning with `rules` (only event
/// streams), with the failure event or without.
struct Pool {
    workers: [FedWorker; 2],
    gateway: Server,
    proto: Proto,
    outcomes: mpsc::UnboundedReceiver<(usize, Verdict, Cause)>,
}

impl Pool {
    async fn start(proto: Proto, rules: SseRules, failure_event: bool) -> Self {
        let workers = [FedWorker::start().await, FedWorker::start().await];
        let set = SharedBreakerSet::with_clock(2, Config::default(), ManualClock::new());
        let (tx, outcomes) = mpsc::unbounded_channel();
        let layer = PoolLayer::new(set, Pick::RoundRobin)
            .with_sse_for_event_streams(rules)
            .with_observer(move |worker, o, _| {
                let _ = tx.send((worker.index, o.verdict, o.cause));
            });
        let route = Route::new(proto, workers.iter().map(|w| w.server.addr));
        let gateway = match failure_event {
            true => gateway(tower::Layer::layer(&layer.with_failure_event(), route)).await,
            false => gateway(tower::Layer::layer(&layer, route)).await,
        };
        Self {
            workers,
            gateway,
            proto,
            outcomes,
        }
    }

    /// One call on `path` (worker `index`, round robin) whose worker sends `frames`
    /// and ends its body: what the client read, whether it ended cleanly, and the
    /// verdict.
    async fn call(
        &mut self,
        index: usize,
        path: &str,
        frames: &[&'static [u8]],
    ) -> (String, bool, (usize, Verdict, Cause)) {
        let mut reader = get(self.proto, &self.gateway, path).await;
        let tx = self.workers[index].request().await;
        for &bytes in frames {
            tx.send(Bytes::from_static(bytes))
                .expect("the worker's body is read");
        }
        drop(tx);
        let clean = reader.read_to_end().await;
        let outcome = within("outcome", self.outcomes.recv())
            .await
            .expect("outcomes");
        let read = String::from_utf8(reader.data).expect("utf-8");
        (read, clean, outcome)
    }
}

// ---------------------------------------------------------------- loopback tests

/// A stream cut before `[DONE]` through `PoolLayer::with_failure_event`: the client's
/// bytes are the worker's, then OpenAI's error event, and no `[DONE]`; the body ends
/// cleanly after it; the verdict is that worker's truncation. A worker cut off
/// inside an event has it closed first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_stream_ends_in_the_openai_error_event() {
    const TOKEN: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
    for proto in PROTOS {
        let mut pool = Pool::start(proto, SseRules::openai_chat(), true).await;
        let (read, clean, outcome) = pool
            .call(0, "/v1/chat/completions", &[TOKEN.as_bytes()])
            .await;
        assert_eq!(read, format!("{TOKEN}{OPENAI_TRUNCATED}"), "{proto:?}");
        assert!(!read.contains("[DONE]"), "{proto:?}");
        assert!(clean, "{proto:?}: the event is the body's last frame");
        assert_eq!(
            outcome,
            (0, Verdict::Failure, Cause::Truncated),
            "{proto:?}"
        );

        // Cut inside an event (worker 1, round robin).
        let (read, _, outcome) = pool
            .call(
                1,
                "/v1/chat/completions",
                &[TOKEN.as_bytes(), b"data: {\"cho"],
            )
            .await;
        assert_eq!(
            read,
            format!("{TOKEN}data: {{\"cho\n\n{OPENAI_TRUNCATED}"),
            "{proto:?}"
        );
        assert_eq!(
            outcome,
            (1, Verdict::Failure, Cause::Truncated),
            "{proto:?}"
        );
    }
}

/// The Anthropic and Responses dialects: `event: error` and `response.failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_and_responses_streams_end_in_their_own_events() {
    let anthropic = (
        SseRules::anthropic(),
        "event: message_start\ndata: {\"type\":\"message_start\"}\n\n",
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\
         \"message\":\"upstream failed: truncated\"}}\n\n",
    );
    let responses = (
        SseRules::openai_responses(),
        "event: response.created\ndata: {\"type\":\"response.created\"}\n\n",
        "event: response.failed\ndata: {\"type\":\"response.failed\",\"response\":\
         {\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\
         \"message\":\"upstream failed: truncated\"}}}\n\n",
    );
    for proto in PROTOS {
        for (rules, sent, event) in [anthropic.clone(), responses.clone()] {
            let mut pool = Pool::start(proto, rules, true).await;
            let (read, clean, outcome) = pool.call(0, "/v1/messages", &[sent.as_bytes()]).await;
            assert_eq!(read, format!("{sent}{event}"), "{proto:?}");
            assert!(clean, "{proto:?}");
            assert_eq!(
                outcome,
                (0, Verdict::Failure, Cause::Truncated),
                "{proto:?}"
            );
        }
    }
}

/// Nothing is added after the worker's own error object (its verdict is the error
/// event's), after `[DONE]`, to a JSON body (`with_sse_for_event_streams`: no
/// rules, its clean end a success), or by a layer without the option.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_added_to_an_own_error_a_done_stream_json_or_without_the_option() {
    const OWN_ERROR: &str = "data: {\"choices\":[]}\n\ndata: {\"error\":{\"message\":\"oom\"}}\n\n";
    const DONE: &str = "data: {\"choices\":[]}\n\ndata: [DONE]\n\n";
    const CUT: &str = "data: {\"choices\":[]}\n\n";
    for proto in PROTOS {
        let mut pool = Pool::start(proto, SseRules::openai_chat(), true).await;
        let calls = [
            (
                "/v1/chat/completions",
                OWN_ERROR,
                (Verdict::Failure, Cause::ErrorEvent),
            ),
            (
                "/v1/chat/completions",
                DONE,
                (Verdict::Success, Cause::Done),
            ),
            ("/json", CUT, (Verdict::Success, Cause::End)),
        ];
        for (i, (path, sent, (verdict, cause))) in calls.into_iter().enumerate() {
            let (read, clean, outcome) = pool.call(i % 2, path, &[sent.as_bytes()]).await;
            assert_eq!(read, sent, "{proto:?} {path}");
            assert!(clean, "{proto:?} {path}");
            assert_eq!(outcome, (i % 2, verdict, cause), "{proto:?} {path}");
        }

        let mut pool = Pool::start(proto, SseRules::openai_chat(), false).await;
        let (read, clean, outcome) = pool
            .call(0, "/v1/chat/completions", &[CUT.as_bytes()])
            .await;
        assert_eq!(read, CUT, "{proto:?}: unchanged without the option");
        assert!(clean, "{proto:?}");
        assert_eq!(
            outcome,
            (0, Verdict::Failure, Cause::Truncated),
            "{proto:?}"
        );
    }
}

/// An idle timeout through `BreakerLayer::with_timers(..).with_failure_event()` on
/// loopback: the client reads the token, then the idle-timeout error event, then the
/// body fails (the gateway aborts the response: no clean end). HTTP/1.1 only: hyper's
/// HTTP/1.1 server flushes at the body's one `Pending` turn between the event and the
/// error; over HTTP/2 the reset that the error sends may still discard the queued
/// event (about one run in a hundred here), which the body cannot prevent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_timeout_through_the_breaker_layer_reaches_the_client_as_its_event() {
    for proto in [Proto::H1] {
        let mut worker = FedWorker::start().await;
        let breaker = SharedBreaker::with_clock(Config::default(), ManualClock::new());
        let timer = ManualTimer::default();
        let (tx, mut outcomes) = mpsc::unbounded_channel();
        let layer = BreakerLayer::new(breaker)
            .with_sse(SseRules::openai_chat())
            .with_observer(move |o, _| {
                let _ = tx.send((o.verdict, o.cause));
            })
            .with_timers(timer.clone(), Timeouts::new().idle(5 * SEC))
            .with_failure_event();
        let route = Route::new(proto, [worker.server.addr]);
        let gateway = gateway(tower::Layer::layer(&layer, route)).await;
        let mut reader = get(proto, &gateway, "/v1/chat/completions").await;
        let frames = worker.request().await;
        frames
            .send(Bytes::from_static(b"data: {\"choices\":[]}\n\n"))
            .expect("sent");
        reader.until(|r| r.tokens() == 1).await.expect("the token");
        // The idle sleep after the token.
        timer.armed(1).await;
        timer.advance(5 * SEC);
        let event = "data: {\"error\":{\"message\":\"upstream failed: idle_timeout\",\
                     \"type\":\"upstream_error\",\"code\":\"idle_timeout\"}}\n\n";
        reader
            .until(|r| r.data.ends_with(event.as_bytes()))
            .await
            .unwrap_or_else(|clean| {
                panic!(
                    "{proto:?}: no error event (clean end: {clean}): {:?}",
                    String::from_utf8_lossy(&reader.data)
                )
            });
        assert!(!reader.read_to_end().await, "{proto:?}: a clean end");
        assert_eq!(
            within("outcome", outcomes.recv()).await,
            Some((Verdict::Failure, Cause::IdleTimeout)),
            "{proto:?}"
        );
    }
}

/// An Ollama (NDJSON) body that is cut short sends Ollama's error line, after ending
/// the line it was cut off inside; then the body is over.
#[tokio::test]
async fn an_ollama_body_cut_short_sends_its_error_line() {
    let cut = Full::new(Bytes::from_static(
        b"{\"response\":\"hi\",\"done\":false}\n{\"resp",
    ));
    let body = TrackedBody::new(cut, |_: Outcome| {})
        .with_ndjson(sluice::ndjson::NdjsonRules::ollama())
        .with_failure_event();
    let mut body = pin!(body);
    assert_eq!(
        data(body.frame().await),
        "{\"response\":\"hi\",\"done\":false}\n{\"resp"
    );
    assert!(!body.is_end_stream(), "the error line is left to send");
    assert_eq!(
        data(body.frame().await),
        "\n{\"error\":\"upstream failed: truncated\"}\n"
    );
    assert!(body.is_end_stream());
    assert!(body.frame().await.is_none());
    assert_eq!(body.outcome().cause, Cause::Truncated);
}
