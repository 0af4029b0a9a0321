//! `TrackedBody` and `BreakerLayer` in process, with no network: SSE across the slices
//! of a frame, empty and settled bodies, gRPC edge cases, and every branch of the
//! layer (rejection, send error, settled status, trailers-only, dropped future,
//! readiness).

use std::convert::Infallible;
use std::future::{Future, pending};
use std::pin::pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use sluice::breaker::{Config, ManualClock, SharedBreaker, State};
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, Terminal, Verdict};
use sluice_http::{BreakerError, BreakerLayer, GrpcPolicy, TrackedBody};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

fn channel() -> (impl Fn(Outcome) + Send + 'static, mpsc::Receiver<Outcome>) {
    let (tx, rx) = mpsc::channel();
    (
        move |o: Outcome| {
            let _ = tx.send(o);
        },
        rx,
    )
}

type Frames<D> = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<D>, &'static str>>>>;

fn frames<D: Buf>(frames: Vec<Result<Frame<D>, &'static str>>) -> Frames<D> {
    StreamBody::new(stream::iter(frames))
}

fn grpc_trailers(code: &'static str) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from_static(code));
    t
}

#[tokio::test]
async fn sse_done_split_across_the_slices_of_one_frame() {
    for (second, want) in [
        (&b"NE]\n\n"[..], (Verdict::Success, Cause::Done)),
        (b"NX]\n\n", (Verdict::Failure, Cause::Truncated)),
    ] {
        let (rec, rx) = channel();
        let data = Bytes::from_static(b"data: {}\n\ndata: [DO").chain(Bytes::from_static(second));
        let body = TrackedBody::new(frames(vec![Ok(Frame::data(data))]), rec)
            .with_sse(SseRules::openai_chat());
        let bytes = body.collect().await.expect("body").to_bytes();
        assert_eq!(bytes.len(), 19 + second.len());
        let o = rx.recv().expect("outcome");
        assert_eq!(
            (o.verdict, o.cause, o.chunks, o.bytes),
            (want.0, want.1, 1, bytes.len() as u64)
        );
    }
}

#[test]
fn an_empty_body_dropped_unpolled_ended() {
    let (rec, rx) = channel();
    let body = TrackedBody::new(Empty::<Bytes>::new(), rec);
    assert!(body.is_end_stream());
    drop(body);
    let o = rx.recv().expect("outcome");
    assert_eq!((o.verdict, o.cause), (Verdict::Success, Cause::End));

    // The same for gRPC: no trailers, so cut short.
    let (rec, rx) = channel();
    let body = TrackedBody::new(Empty::<Bytes>::new(), rec).with_grpc(GrpcPolicy::default());
    assert_eq!(body.finish().cause, Cause::Truncated);
    assert_eq!(rx.recv().expect("outcome").verdict, Verdict::Failure);
}

#[test]
fn a_body_dropped_before_its_end_is_abandoned() {
    let (rec, rx) = channel();
    let body = TrackedBody::new(Full::new(Bytes::from_static(b"x")), rec);
    assert_eq!(body.terminal(), Terminal::Active);
    drop(body);
    let o = rx.recv().expect("outcome");
    assert_eq!(
        (o.verdict, o.cause),
        (Verdict::Abandoned, Cause::ClientLeft)
    );
    assert!(rx.try_recv().is_err(), "one record");
}

#[tokio::test]
async fn a_settled_body_passes_through_and_records_nothing() {
    let outcome = Outcome::new(Verdict::Failure, Cause::Status, 0, 0);
    let body: TrackedBody<_, fn(Outcome)> =
        TrackedBody::settled(Full::new(Bytes::from_static(b"no")), outcome);
    assert!(!body.is_tracked());
    assert_eq!(body.terminal(), Terminal::Errored);
    let bytes = body.collect().await.expect("body").to_bytes();
    assert_eq!(&bytes[..], b"no");
}

#[tokio::test]
async fn grpc_trailers_without_a_status_are_unknown() {
    let (rec, rx) = channel();
    let body = TrackedBody::new(
        frames::<Bytes>(vec![Ok(Frame::trailers(HeaderMap::new()))]),
        rec,
    )
    .with_grpc(GrpcPolicy::default());
    body.collect().await.expect("body");
    let o = rx.recv().expect("outcome");
    assert_eq!((o.verdict, o.cause), (Verdict::Failure, Cause::GrpcStatus));
}

// ---------------------------------------------------------------- the layer

type Observed = mpsc::Receiver<Outcome>;

fn layer(breaker: &SharedBreaker) -> (BreakerLayer, Observed) {
    let (tx, rx) = mpsc::channel();
    let layer = BreakerLayer::new(breaker.clone()).with_observer(move |o, _| {
        let _ = tx.send(o);
    });
    (layer, rx)
}

fn status(code: u16) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(b"body")));
    *r.status_mut() = StatusCode::from_u16(code).expect("status");
    r
}

#[tokio::test]
async fn settled_statuses_and_send_errors_are_recorded_at_once() {
    let breaker = SharedBreaker::new(Config::default());
    for (code, want) in [
        (503, Verdict::Failure),
        (429, Verdict::Abandoned),
        (404, Verdict::Abandoned),
    ] {
        let (layer, rx) = layer(&breaker);
        let svc = ServiceBuilder::new().layer(layer).service(service_fn(
            move |_: Request<()>| async move { Ok::<_, Infallible>(status(code)) },
        ));
        let response = svc.oneshot(Request::new(())).await.expect("response");
        let o = rx.try_recv().expect("recorded before the body is read");
        assert_eq!((o.verdict, o.cause), (want, Cause::Status), "{code}");
        assert!(!response.body().is_tracked());
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(&bytes[..], b"body");
        assert!(rx.try_recv().is_err(), "one record");
    }

    let (layer, rx) = layer(&breaker);
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: Request<()>| async {
            Err::<Response<Full<Bytes>>, _>(std::io::Error::other("refused"))
        }));
    let err = svc.oneshot(Request::new(())).await.expect_err("send error");
    assert!(matches!(&err, BreakerError::Inner(e) if e.to_string() == "refused"));
    let boxed: tower::BoxError = err.into();
    assert_eq!(boxed.to_string(), "the inner service failed");
    let o = rx.try_recv().expect("recorded");
    assert_eq!((o.verdict, o.cause), (Verdict::Failure, Cause::SendFailed));
}

#[tokio::test]
async fn an_open_breaker_rejects_without_calling_the_inner_service() {
    let clock = ManualClock::new();
    let breaker = SharedBreaker::with_clock(Config::default().failure_threshold(1), clock.clone());
    let calls = Arc::new(AtomicU32::new(0));
    let (layer, rx) = layer(&breaker);
    let counted = calls.clone();
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(move |_: Request<()>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(status(500)) }
        }));
    svc.clone().oneshot(Request::new(())).await.expect("a 500");
    assert_eq!(rx.try_recv().expect("recorded").verdict, Verdict::Failure);
    assert_eq!(
        breaker.state(),
        State::Open {
            until: Duration::from_secs(30)
        }
    );

    clock.advance(Duration::from_secs(10));
    let mut future = pin!(svc.clone().oneshot(Request::new(())));
    let mut cx = Context::from_waker(Waker::noop());
    // Answered on the first poll.
    let Poll::Ready(Err(err)) = future.as_mut().poll(&mut cx) else {
        panic!("not rejected at once");
    };
    assert!(err.is_rejected());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(20)));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the inner service was called"
    );
    assert!(rx.try_recv().is_err(), "a rejection records nothing");
}

#[tokio::test]
async fn a_future_dropped_before_the_headers_is_abandoned() {
    let breaker = SharedBreaker::new(Config::default().half_open_max_probes(1));
    let (layer, rx) = layer(&breaker);
    let mut svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: Request<()>| async {
            pending::<()>().await;
            Ok::<_, Infallible>(status(200))
        }));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut future = Box::pin(svc.call(Request::new(())));
    assert!(future.as_mut().poll(&mut cx).is_pending());
    drop(future);
    let o = rx.try_recv().expect("recorded at the drop");
    assert_eq!(
        (o.verdict, o.cause),
        (Verdict::Abandoned, Cause::ClientLeftBeforeHead)
    );
}

#[tokio::test]
async fn grpc_trailers_only_is_judged_from_the_headers() {
    let breaker = SharedBreaker::new(Config::default());
    for (code, want) in [
        ("0", Verdict::Success),
        ("14", Verdict::Failure),
        ("3", Verdict::Abandoned),
    ] {
        let (layer, rx) = layer(&breaker);
        let layer = layer.with_grpc(GrpcPolicy::default());
        let svc = ServiceBuilder::new().layer(layer).service(service_fn(
            move |_: Request<()>| async move {
                let mut r = Response::new(Empty::<Bytes>::new());
                r.headers_mut()
                    .insert("grpc-status", HeaderValue::from_static(code));
                Ok::<_, Infallible>(r)
            },
        ));
        let response = svc.oneshot(Request::new(())).await.expect("response");
        assert!(!response.body().is_tracked());
        let o = rx.try_recv().expect("recorded");
        assert_eq!((o.verdict, o.cause), (want, Cause::GrpcStatus), "{code}");
    }
}

#[tokio::test]
async fn a_2xx_body_carries_the_permit_and_its_trailers_decide() {
    let breaker = SharedBreaker::new(Config::default());
    let (layer, rx) = layer(&breaker);
    let layer = layer.with_grpc(GrpcPolicy::default());
    let svc = ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_: Request<()>| async {
            let body = frames(vec![
                Ok(Frame::data(Bytes::from_static(b"\0\0\0\0\x01a"))),
                Ok(Frame::trailers(grpc_trailers("0"))),
            ]);
            Ok::<_, Infallible>(Response::new(body))
        }));
    let response = svc.oneshot(Request::new(())).await.expect("response");
    assert!(response.body().is_tracked());
    assert!(
        rx.try_recv().is_err(),
        "nothing recorded before the body ends"
    );
    let collected = response.into_body().collect().await.expect("body");
    assert_eq!(collected.trailers().expect("trailers")["grpc-status"], "0");
    let o = rx.try_recv().expect("recorded at the end");
    assert_eq!(
        (o.verdict, o.cause, o.chunks, o.bytes),
        (Verdict::Success, Cause::GrpcStatus, 1, 6)
    );
}

#[tokio::test]
async fn sse_rules_for_event_streams_scan_event_streams_only() {
    let breaker = SharedBreaker::new(Config::default());
    let rules = SseRules::openai_chat;
    // No `[DONE]` in the body: the rules, if they apply, call that a truncation.
    let truncated = (Verdict::Failure, Cause::Truncated);
    let ended = (Verdict::Success, Cause::End);
    for (content_type, sse_last, want) in [
        (Some("text/event-stream"), false, truncated),
        (Some("Text/Event-Stream ; charset=utf-8"), false, truncated),
        (Some("application/json"), false, ended),
        (None, false, ended),
        // The last of `with_sse` and `with_sse_for_event_streams` wins.
        (Some("application/json"), true, truncated),
    ] {
        let (layer, rx) = layer(&breaker);
        let layer = match sse_last {
            false => layer.with_sse(rules()).with_sse_for_event_streams(rules()),
            true => layer.with_sse_for_event_streams(rules()).with_sse(rules()),
        };
        let svc = ServiceBuilder::new().layer(layer).service(service_fn(
            move |_: Request<()>| async move {
                let mut r = Response::new(Full::new(Bytes::from_static(b"data: {}\n\n")));
                if let Some(value) = content_type {
                    r.headers_mut()
                        .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(value));
                }
                Ok::<_, Infallible>(r)
            },
        ));
        let response = svc.oneshot(Request::new(())).await.expect("response");
        response.into_body().collect().await.expect("body");
        let o = rx.try_recv().expect("recorded");
        assert_eq!((o.verdict, o.cause), want, "{content_type:?} {sse_last}");
    }
}

/// An inner service that is not ready, then fails its readiness.
#[derive(Clone)]
struct Flaky(Arc<AtomicU32>);

impl Service<Request<()>> for Flaky {
    type Response = Response<Empty<Bytes>>;
    type Error = &'static str;
    type Future = std::future::Ready<Result<Self::Response, &'static str>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), &'static str>> {
        match self.0.fetch_add(1, Ordering::SeqCst) {
            0 => Poll::Pending,
            _ => Poll::Ready(Err("broken")),
        }
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        std::future::ready(Err("not ready"))
    }
}

#[test]
fn poll_ready_is_the_inner_readiness() {
    let breaker = SharedBreaker::new(Config::default());
    let mut svc = BreakerLayer::new(breaker).layer_service(Flaky(Arc::new(AtomicU32::new(0))));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_pending());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Err(BreakerError::Inner("broken"))) => {}
        other => panic!("{other:?}"),
    }
}

trait LayerService {
    fn layer_service<S>(&self, inner: S) -> sluice_http::BreakerService<S>;
}

impl LayerService for BreakerLayer {
    fn layer_service<S>(&self, inner: S) -> sluice_http::BreakerService<S> {
        tower::Layer::layer(self, inner)
    }
}

/// The inner body's error right behind a data frame is held for one `Pending` (the
/// task woken, so that a server writes the frame out first); a body dropped in that
/// turn failed all the same: `Failure`, not `Abandoned`.
#[test]
fn an_error_held_behind_data_is_a_failure_if_the_body_is_dropped() {
    let woken = Arc::new(AtomicU32::new(0));
    struct Count(Arc<AtomicU32>);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let waker = Waker::from(Arc::new(Count(woken.clone())));
    let mut cx = Context::from_waker(&waker);
    let (record, outcomes) = channel();
    let inner = frames(vec![
        Ok(Frame::data(Bytes::from_static(b"hi"))),
        Err("broke"),
    ]);
    let mut body = Box::pin(TrackedBody::new(inner, record));
    assert!(matches!(
        body.as_mut().poll_frame(&mut cx),
        Poll::Ready(Some(Ok(_)))
    ));
    assert!(body.as_mut().poll_frame(&mut cx).is_pending());
    assert_eq!(
        woken.load(Ordering::SeqCst),
        1,
        "woken at once for the error"
    );
    assert_eq!(
        body.terminal(),
        Terminal::Active,
        "nothing settled in the turn"
    );
    drop(body);
    let o = outcomes.try_recv().expect("recorded at the drop");
    assert_eq!((o.verdict, o.cause), (Verdict::Failure, Cause::ErrorItem));
}
