//! The worker's progress timers on `TrackedBody` and on the layers
//! (`with_timers`): first token, idle (keep-alives are not progress), deadline.
//!
//! Time is a manual clock the test moves (`ManualTimer`), and the test knows when a
//! body armed a sleep (the timer counts the sleeps it made), so nothing depends on
//! how fast the machine is. The loopback tests run a worker the test feeds frame by
//! frame, a hyper gateway relaying the layer's `TrackedBody`, and a hyper-util client,
//! over HTTP/1.1 and HTTP/2.

mod common;

use std::convert::Infallible;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Waker};
use std::time::Duration;

use bytes::Bytes;
use common::{FedWorker, ManualTimer, PROTOS, Proto, Reader, Route, Server, gateway, get, within};
use futures_util::{StreamExt, stream};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, StreamBody};
use sluice::breaker::{Config, ManualClock, Pick, SharedBreaker, SharedBreakerSet, State};
use sluice::sse::SseRules;
use sluice::timers::Timeouts;
use sluice::{Cause, Outcome, Verdict};
use sluice_http::{BodyError, BreakerLayer, PoolLayer, TrackedBody};
use tokio::sync::mpsc;

const SEC: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------- in process

/// A deadline fires on time over an inner body that is always ready: the timer is
/// polled before the body. Each inner frame moves the clock one second; tokens keep
/// the idle timer (5 s) at bay, and the deadline (10 s) still ends the body.
#[tokio::test]
async fn a_deadline_wins_over_an_always_ready_body() {
    let timer = ManualTimer::new();
    let polls = Arc::new(AtomicU64::new(0));
    let (clock, count) = (timer.clone(), polls.clone());
    let tokens = stream::repeat_with(move || {
        count.fetch_add(1, Ordering::SeqCst);
        clock.advance(SEC);
        Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"data: {\"t\":1}\n\n")))
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let body = TrackedBody::new(StreamBody::new(tokens), move |o: Outcome| {
        let _ = tx.send(o);
    })
    .with_sse(SseRules::openai_chat())
    .with_timers(
        timer.clone(),
        Timeouts::new().idle(5 * SEC).deadline(10 * SEC),
    );
    let mut body = Box::pin(body);

    let mut frames = 0;
    let err = loop {
        match body.frame().await {
            Some(Ok(frame)) => {
                assert!(frame.is_data());
                frames += 1;
                assert!(frames <= 10, "the deadline did not fire");
            }
            Some(Err(err)) => break err,
            None => panic!("a timed-out body ended cleanly"),
        }
    };
    assert!(matches!(
        err,
        BodyError::TimedOut {
            cause: Cause::Deadline
        }
    ));
    assert_eq!(err.timeout(), Some(Cause::Deadline));
    assert_eq!(err.to_string(), "the worker timed out (deadline)");
    // Ten seconds, ten frames; the inner body was not polled once the deadline was due.
    assert_eq!((frames, polls.load(Ordering::SeqCst)), (10, 10));
    assert!(body.frame().await.is_none(), "fused after the error");
    assert!(body.is_end_stream());
    assert_eq!(polls.load(Ordering::SeqCst), 10);
    let outcome = body.outcome();
    assert_eq!(
        (outcome.verdict, outcome.cause, outcome.chunks),
        (Verdict::Failure, Cause::Deadline, 10)
    );
    drop(body);
    assert_eq!(rx.try_recv().map(|o| o.cause), Ok(Cause::Deadline));
    assert!(rx.try_recv().is_err(), "recorded once");
}

/// The inner body's own error frame comes through as `BodyError::Inner`, and a
/// timer that fires after an in-band error event still ends the body in an error
/// (the first failure's cause is the verdict's).
#[tokio::test]
async fn inner_errors_pass_through_and_a_failed_stream_still_ends_in_an_error() {
    let timer = ManualTimer::new();
    let frames = stream::iter([
        Ok(Frame::data(Bytes::from_static(b"data: {\"t\":1}\n\n"))),
        Err(std::io::Error::other("reset")),
    ]);
    let body = TrackedBody::new(StreamBody::new(frames), |_: Outcome| {})
        .with_sse(SseRules::openai_chat())
        .with_timers(timer.clone(), Timeouts::new().idle(SEC));
    let mut body = pin!(body);
    assert!(body.frame().await.expect("a frame").is_ok());
    let err = body
        .frame()
        .await
        .expect("a frame")
        .expect_err("the inner error");
    assert!(!err.is_timeout());
    assert_eq!(err.to_string(), "reset");
    assert_eq!(
        err.into_inner().map(|e| e.kind()),
        Some(std::io::ErrorKind::Other)
    );
    assert_eq!(body.outcome().cause, Cause::ErrorItem);

    // An error event, then the worker hangs: the idle timer ends the wait in an error.
    let timer = ManualTimer::new();
    let frames = stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from_static(
        b"data: {\"error\":{\"message\":\"oom\"}}\n\n",
    )))])
    .chain(stream::pending());
    let body = TrackedBody::new(StreamBody::new(frames), |_: Outcome| {})
        .with_sse(SseRules::openai_chat())
        .with_timers(timer.clone(), Timeouts::new().idle(SEC));
    let mut body = pin!(body);
    assert!(body.frame().await.expect("a frame").is_ok());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(body.as_mut().poll_frame(&mut cx).is_pending());
    timer.advance(SEC);
    let err = body.frame().await.expect("a frame").expect_err("timed out");
    assert_eq!(err.timeout(), Some(Cause::IdleTimeout));
    let outcome = body.outcome();
    assert_eq!(
        (outcome.verdict, outcome.cause),
        (Verdict::Failure, Cause::ErrorEvent)
    );
}

// ---------------------------------------------------------------- the loopback rig

/// Sends `bytes` down a worker's body.
fn send(frames: &mpsc::UnboundedSender<Bytes>, bytes: &'static [u8]) {
    frames
        .send(Bytes::from_static(bytes))
        .expect("the worker's body is read");
}

/// How often `needle` occurs in what the client read.
fn count(reader: &Reader, needle: &str) -> usize {
    String::from_utf8_lossy(&reader.data)
        .matches(needle)
        .count()
}

/// A gateway over one worker behind a `BreakerLayer::with_timers`.
struct Single {
    worker: FedWorker,
    gateway: Server,
    breaker: SharedBreaker,
    timer: ManualTimer,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
}

impl Single {
    async fn start(proto: Proto, timeouts: Timeouts) -> Self {
        let worker = FedWorker::start().await;
        let breaker =
            SharedBreaker::with_clock(Config::default().failure_threshold(1), ManualClock::new());
        let timer = ManualTimer::new();
        let (tx, outcomes) = mpsc::unbounded_channel();
        let layer = BreakerLayer::new(breaker.clone())
            .with_sse(SseRules::openai_chat())
            .with_observer(move |o, _| {
                let _ = tx.send(o);
            })
            .with_timers(timer.clone(), timeouts);
        let route = Route::new(proto, [worker.server.addr]);
        let gateway = gateway(tower::Layer::layer(&layer, route)).await;
        Self {
            worker,
            gateway,
            breaker,
            timer,
            outcomes,
        }
    }

    async fn outcome(&mut self) -> (Verdict, Cause) {
        let o = within("outcome", self.outcomes.recv())
            .await
            .expect("outcomes");
        (o.verdict, o.cause)
    }
}

// ---------------------------------------------------------------- loopback tests

/// A worker that says one token, then only `: ping` keep-alives, through a
/// `PoolLayer::with_timers`: the pings do not restart the idle timer; it fires 20 s
/// after the token, the client's body ends in an error, the verdict is that worker's
/// Failure (`idle_timeout`), and its breaker (threshold 1) opens, the other's not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alives_after_a_token_are_an_idle_timeout_of_the_picked_worker() {
    for proto in PROTOS {
        let mut workers = [FedWorker::start().await, FedWorker::start().await];
        let set = SharedBreakerSet::with_clock(
            2,
            Config::default().failure_threshold(1),
            ManualClock::new(),
        );
        let timer = ManualTimer::new();
        let (tx, mut outcomes) = mpsc::unbounded_channel();
        let timeouts = Timeouts::new().first_token(60 * SEC).idle(20 * SEC);
        let layer = PoolLayer::new(set.clone(), Pick::RoundRobin)
            .with_sse_for_event_streams(SseRules::openai_chat())
            .with_timers(timer.clone(), timeouts)
            .with_observer(move |worker, o, _| {
                let _ = tx.send((worker.index, o.verdict, o.cause));
            });
        let route = Route::new(proto, workers.iter().map(|w| w.server.addr));
        let gateway = gateway(tower::Layer::layer(&layer, route)).await;

        let mut reader = get(proto, &gateway, "/v1/chat/completions").await;
        let frames = workers[0].request().await;
        send(
            &frames,
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
        );
        reader.until(|r| r.tokens() == 1).await.expect("the token");
        // The first-token sleep, then the idle sleep after the token.
        timer.armed(2).await;
        timer.advance(10 * SEC);
        for _ in 0..3 {
            send(&frames, b": ping\n\n");
        }
        reader
            .until(|r| count(r, ": ping") == 3)
            .await
            .expect("the pings");
        // Keep-alives are not progress: no new idle sleep; 20 s after the token it fires.
        assert_eq!(
            timer.sleeps(),
            2,
            "{proto:?}: a ping restarted the idle timer"
        );
        timer.advance(10 * SEC);
        assert!(!reader.read_to_end().await, "{proto:?}: a clean end");
        assert_eq!(
            within("outcome", outcomes.recv()).await,
            Some((0, Verdict::Failure, Cause::IdleTimeout)),
            "{proto:?}"
        );
        assert!(matches!(set.state(0), State::Open { .. }), "{proto:?}");
        assert_eq!(set.state(1), State::Closed, "{proto:?}");
        // The worker's response was dropped: its connection or stream is closed.
        within("the upstream dropped", frames.closed()).await;
        assert!(outcomes.try_recv().is_err(), "{proto:?}: one outcome");
    }
}

/// A worker that sends its head and then nothing: the first-token timer fires (a
/// `BreakerLayer::with_timers`), the client's body is an error, the breaker opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_and_then_nothing_is_a_first_token_timeout() {
    for proto in PROTOS {
        let timeouts = Timeouts::new().first_token(30 * SEC).idle(5 * SEC);
        let mut rig = Single::start(proto, timeouts).await;
        let mut reader = get(proto, &rig.gateway, "/v1/chat/completions").await;
        let frames = rig.worker.request().await;
        // The body was polled once: its first-token sleep is armed.
        rig.timer.armed(1).await;
        rig.timer.advance(30 * SEC);
        assert!(!reader.read_to_end().await, "{proto:?}: a clean end");
        assert!(reader.data.is_empty());
        assert_eq!(
            rig.outcome().await,
            (Verdict::Failure, Cause::FirstTokenTimeout),
            "{proto:?}"
        );
        assert!(matches!(rig.breaker.state(), State::Open { .. }));
        within("the upstream dropped", frames.closed()).await;
    }
}

/// `[DONE]`, then the worker holds the connection open: the idle timer only ends the
/// wait; the client's body ends cleanly after `[DONE]`, and the verdict is Success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn done_and_then_a_hang_is_a_success() {
    for proto in PROTOS {
        let timeouts = Timeouts::new().first_token(30 * SEC).idle(20 * SEC);
        let mut rig = Single::start(proto, timeouts).await;
        let mut reader = get(proto, &rig.gateway, "/v1/chat/completions").await;
        let frames = rig.worker.request().await;
        send(
            &frames,
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n",
        );
        reader.until(|r| r.tokens() == 1).await.expect("the token");
        // The first-token sleep, and the idle sleep after the token.
        rig.timer.armed(2).await;
        send(&frames, b"data: [DONE]\n\n");
        reader
            .until(|r| count(r, "[DONE]") == 1)
            .await
            .expect("[DONE]");
        // `[DONE]` is progress too: the idle sleep after it bounds the wait for the end.
        rig.timer.armed(3).await;
        rig.timer.advance(20 * SEC);
        assert!(reader.read_to_end().await, "{proto:?}: not a clean end");
        assert!(reader.data.ends_with(b"data: [DONE]\n\n"));
        assert_eq!(
            rig.outcome().await,
            (Verdict::Success, Cause::Done),
            "{proto:?}"
        );
        assert_eq!(rig.breaker.state(), State::Closed);
        within("the upstream dropped", frames.closed()).await;
    }
}
