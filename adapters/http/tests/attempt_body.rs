//! The commit point for bodies (`AttemptBody`): an attempt commits on its first
//! progress, its successful end or its byte bound; one that fails first is recorded at
//! once and none of its frames reach the client; a lost hedge is Abandoned
//! (`hedge_lost`); `whole` holds a gRPC answer to its trailers.
//!
//! The properties drive a retry loop over scripted worker bodies, as a gateway does,
//! and check that the client reads frames of at most one attempt and that every
//! attempt's worker hears exactly one verdict. The loopback test runs that loop in a
//! hyper gateway in front of two hyper workers.

mod common;

use std::cell::RefCell;
use std::convert::Infallible;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use common::{PROTOS, Proto, Server, client, within};
use futures_util::stream;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Either, Empty, Full, StreamBody};
use hyper::body::Incoming;
use hyper::service::service_fn;
use proptest::prelude::*;
use sluice::attempt::Commit;
use sluice::sse::SseRules;
use sluice::{Cause, Outcome, Recorder, Verdict};
use sluice_http::{AttemptBody, GrpcPolicy, TrackedBody};
use sluice_test_support::commit::{Expect, Mode, Piece, expect};
use tokio::sync::mpsc;

/// A piece as the worker's body frame.
fn frame(piece: Piece) -> Result<Frame<Bytes>, &'static str> {
    match piece {
        Piece::ErrorItem => Err("reset"),
        Piece::Trailers(code) => {
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from(u16::from(code)));
            Ok(Frame::trailers(trailers))
        }
        piece => Ok(Frame::data(Bytes::from_static(piece.bytes()))),
    }
}

/// What a body's frames become on the client's side: data bytes, trailers' status,
/// errors.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Data(Vec<u8>),
    Trailers(String),
    Error,
}

impl Seen {
    fn of(frame: Result<Frame<Bytes>, &'static str>) -> Self {
        match frame.map(Frame::into_data) {
            Ok(Ok(data)) => Self::Data(data.to_vec()),
            Ok(Err(frame)) => {
                let trailers = frame.into_trailers().expect("data or trailers");
                Self::Trailers(trailers["grpc-status"].to_str().expect("ascii").to_owned())
            }
            Err(_) => Self::Error,
        }
    }

    /// What the worker's `piece` looks like to the client.
    fn piece(piece: Piece) -> Self {
        match piece {
            Piece::ErrorItem => Self::Error,
            Piece::Trailers(code) => Self::Trailers(code.to_string()),
            piece => Self::Data(piece.bytes().to_vec()),
        }
    }
}

/// What the client would read of `script` from its first frame: every frame up to
/// the end, which a trailers frame is.
fn frames_to_end(script: &[Piece]) -> Vec<Seen> {
    let end = script
        .iter()
        .position(|p| matches!(p, Piece::Trailers(_)))
        .map_or(script.len(), |i| i + 1);
    script[..end].iter().map(|&p| Seen::piece(p)).collect()
}

type Heard = Rc<RefCell<Vec<(usize, Outcome)>>>;

type Scripted = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, &'static str>>>>;

/// Attempt `n` over `script`, its outcomes going to `heard`.
fn attempt(
    mode: Mode,
    n: usize,
    script: &[Piece],
    heard: &Heard,
    limit: usize,
) -> AttemptBody<Scripted, impl Recorder + use<>> {
    let heard = heard.clone();
    let frames: Vec<_> = script.iter().map(|&p| frame(p)).collect();
    let body = TrackedBody::new(StreamBody::new(stream::iter(frames)), move |o: Outcome| {
        heard.borrow_mut().push((n, o))
    });
    match mode {
        Mode::Sse => AttemptBody::new(body.with_sse(SseRules::openai_chat()), limit),
        Mode::GrpcWhole => AttemptBody::whole(body.with_grpc(GrpcPolicy::default()), limit),
    }
}

/// Polls `poll` with a no-op waker until it is ready: the scripted bodies are always
/// ready (a `Pending` is a turn that woke the task at once).
fn now<T>(mut poll: impl FnMut(&mut Context<'_>) -> Poll<T>) -> T {
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..16 {
        if let Poll::Ready(out) = poll(&mut cx) {
            return out;
        }
    }
    panic!("an always-ready body stayed pending");
}

/// Reads up to `max` frames of `body`; `true` if it ended within them.
fn read<B>(mut body: Pin<&mut B>, max: usize, into: &mut Vec<Seen>) -> bool
where
    B: Body<Data = Bytes, Error = &'static str>,
{
    for _ in 0..max {
        match now(|cx| body.as_mut().poll_frame(cx)) {
            Some(frame) => into.push(Seen::of(frame)),
            None => return true,
        }
    }
    false
}

fn sse_piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        3 => Just(Piece::Role),
        2 => Just(Piece::Ping),
        3 => Just(Piece::Token),
        1 => Just(Piece::ErrorObject),
        1 => Just(Piece::ErrorItem),
        1 => Just(Piece::Done),
        1 => Just(Piece::Trailers(0)),
    ]
}

fn grpc_piece() -> impl Strategy<Value = Piece> {
    prop_oneof![
        4 => Just(Piece::Message),
        1 => Just(Piece::ErrorItem),
        1 => Just(Piece::Trailers(0)),
        1 => Just(Piece::Trailers(3)),
        1 => Just(Piece::Trailers(14)),
    ]
}

/// The retry loop: each attempt that fails before its commit is replaced by the
/// next; the client reads `read_max` frames of the committed one (or of the last
/// one, failed, when no attempt is left), then leaves.
fn retry_loop(
    mode: Mode,
    scripts: &[Vec<Piece>],
    limit: usize,
    read_max: usize,
) -> Result<(), TestCaseError> {
    let heard: Heard = Rc::default();
    let mut client = Vec::new();
    let mut answered = None;
    for (n, script) in scripts.iter().enumerate() {
        let mut attempt = pin!(attempt(mode, n, script, &heard, limit));
        let last = n + 1 == scripts.len();
        let commit = now(|cx| attempt.as_mut().poll_commit(cx));
        match (commit, expect(mode, script, limit)) {
            (Ok(commit), Expect::Commit(want)) => {
                prop_assert_eq!(commit, want);
                prop_assert!(attempt.is_committed());
                let ended = read(attempt.as_mut(), read_max, &mut client);
                let all = frames_to_end(script);
                if ended {
                    prop_assert_eq!(&client, &all, "all of attempt {}, in order", n);
                } else {
                    prop_assert!(
                        all.starts_with(&client),
                        "attempt {n}'s frames, from its first"
                    );
                }
                answered = Some(n);
                break;
            }
            (Err(failed), Expect::Fail(cause)) => {
                prop_assert_eq!(
                    (failed.outcome.verdict, failed.outcome.cause),
                    (Verdict::Failure, cause)
                );
                // Recorded at once, before the next attempt starts.
                prop_assert_eq!(heard.borrow().last().copied(), Some((n, failed.outcome)));
                prop_assert_eq!(attempt.held_bytes(), 0);
                if !last {
                    continue;
                }
                // No attempt left: its answer stands, and the client reads what
                // failed it and the rest, none of what it held before.
                let ended = read(attempt.as_mut(), read_max, &mut client);
                let from = script.iter().position(|p| {
                    matches!(
                        p,
                        Piece::ErrorObject | Piece::ErrorItem | Piece::Trailers(_)
                    )
                });
                let rest = frames_to_end(from.map_or(&[][..], |i| &script[i..]));
                if ended {
                    prop_assert_eq!(&client, &rest);
                } else {
                    prop_assert!(rest.starts_with(&client), "only what failed attempt {n} on");
                }
                answered = Some(n);
            }
            (got, want) => prop_assert!(false, "attempt {n}: got {got:?}, the rules say {want:?}"),
        }
    }
    // All dropped: every attempt made has recorded, once.
    let heard = heard.borrow();
    let made = answered.map_or(scripts.len(), |n| n + 1);
    let mut who: Vec<usize> = heard.iter().map(|(n, _)| *n).collect();
    who.sort_unstable();
    prop_assert_eq!(
        who,
        (0..made).collect::<Vec<_>>(),
        "one verdict per attempt"
    );
    for (n, outcome) in heard.iter() {
        if Some(*n) != answered {
            prop_assert_eq!(
                outcome.verdict,
                Verdict::Failure,
                "attempt {} was replaced",
                n
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn streamed_the_client_reads_at_most_one_attempt_and_every_worker_hears_once(
        scripts in prop::collection::vec(prop::collection::vec(sse_piece(), 0..8), 1..5),
        limit in prop_oneof![Just(0usize), 1usize..200, Just(usize::MAX)],
        read_max in 0usize..12,
    ) {
        retry_loop(Mode::Sse, &scripts, limit, read_max)?;
    }

    #[test]
    fn whole_grpc_the_client_reads_at_most_one_attempt_and_every_worker_hears_once(
        scripts in prop::collection::vec(prop::collection::vec(grpc_piece(), 0..6), 1..5),
        limit in prop_oneof![Just(0usize), 1usize..40, Just(usize::MAX)],
        read_max in 0usize..10,
    ) {
        retry_loop(Mode::GrpcWhole, &scripts, limit, read_max)?;
    }
}

/// A body that yields its frames, then `None`, and fails the test if it is polled
/// after that.
struct Once {
    frames: std::vec::IntoIter<Result<Frame<Bytes>, std::io::Error>>,
    ended: bool,
}

impl Body for Once {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let next = self.frames.next();
        if next.is_none() {
            assert!(!self.ended, "polled after its end");
            self.ended = true;
        }
        Poll::Ready(next)
    }
}

#[test]
fn a_cut_sent_on_yields_only_its_failure_event_and_never_polls_the_ended_worker_again() {
    let heard: Heard = Rc::default();
    let rec = heard.clone();
    let role = Bytes::from_static(Piece::Role.bytes());
    let inner = Once {
        frames: vec![Ok(Frame::data(role))].into_iter(),
        ended: false,
    };
    let body = TrackedBody::new(inner, move |o: Outcome| rec.borrow_mut().push((0, o)))
        .with_sse(SseRules::openai_chat())
        .with_failure_event();
    let mut attempt = Box::pin(AttemptBody::new(body, usize::MAX));
    let failed = now(|cx| attempt.as_mut().poll_commit(cx)).expect_err("cut before a token");
    assert_eq!(failed.outcome.cause, Cause::Truncated);
    assert_eq!(heard.borrow().as_slice(), [(0, failed.outcome)]);
    // Sent on (no retry left): the failure event, not the held preamble, then the end.
    let mut sent = Vec::new();
    while let Some(frame) = now(|cx| attempt.as_mut().poll_frame(cx)) {
        sent.push(frame.expect("no error frame").into_data().expect("data"));
    }
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].ends_with(b"\"code\":\"truncated\"}}\n\n"),
        "{:?}",
        sent[0]
    );
    assert!(attempt.is_end_stream());
    // Polled once more: still over, the worker's body untouched.
    assert!(now(|cx| attempt.as_mut().poll_frame(cx)).is_none());
    drop(attempt);
    assert_eq!(heard.borrow().len(), 1, "the drop records nothing more");
}

#[test]
fn a_lost_hedge_is_abandoned_with_its_cause_and_records_once() {
    let heard: Heard = Rc::default();
    let rec = heard.clone();
    // A slow worker: its preamble, and nothing more yet.
    let frames = stream::iter([Ok::<_, Infallible>(Frame::data(Bytes::from_static(
        Piece::Role.bytes(),
    )))]);
    let slow = StreamBody::new(futures_util::StreamExt::chain(frames, stream::pending()));
    let body = TrackedBody::new(slow, move |o: Outcome| rec.borrow_mut().push((0, o)))
        .with_sse(SseRules::openai_chat());
    let mut attempt = Box::pin(AttemptBody::new(body, usize::MAX));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(attempt.as_mut().poll_commit(&mut cx).is_pending());
    assert!(!attempt.is_committed());
    assert!(!attempt.is_end_stream());
    assert_eq!(attempt.held_bytes(), Piece::Role.bytes().len());
    let outcome = attempt.as_mut().abandon(Cause::HedgeLost);
    assert_eq!(
        (outcome.verdict, outcome.cause),
        (Verdict::Abandoned, Cause::HedgeLost)
    );
    assert_eq!(attempt.held_bytes(), 0);
    drop(attempt);
    assert_eq!(
        heard.borrow().as_slice(),
        [(0, outcome)],
        "the drop records nothing more"
    );
}

#[test]
fn the_bound_commits_a_worker_that_only_sends_preamble_and_pings() {
    let heard: Heard = Rc::default();
    let script = [Piece::Role, Piece::Ping, Piece::Ping, Piece::Ping];
    let limit = Piece::Role.bytes().len() + Piece::Ping.bytes().len();
    let mut attempt = pin!(attempt(Mode::Sse, 0, &script, &heard, limit));
    assert_eq!(
        now(|cx| attempt.as_mut().poll_commit(cx)),
        Ok(Commit::Bound)
    );
    assert_eq!(attempt.held_bytes(), limit);
    let hint = attempt.size_hint();
    assert!(
        hint.lower() >= limit as u64,
        "the held bytes count: {hint:?}"
    );
    assert!(heard.borrow().is_empty(), "not recorded before its end");
}

// ---------------------------------------------------------------- loopback

const ROLE: &str =
    "data: {\"id\":\"WORKER\",\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n";

/// What worker `name` sends: its preamble, then, for the bad one, an error object and
/// `[DONE]` (as vLLM and SGLang do); for the good one, two tokens and `[DONE]`.
fn events(name: &str) -> Vec<String> {
    let role = ROLE.replace("WORKER", name);
    match name {
        "bad" => vec![
            role,
            "data: {\"error\":{\"message\":\"out of memory\",\"code\":500}}\n\n".into(),
            "data: [DONE]\n\n".into(),
        ],
        _ => vec![
            role,
            format!(
                "data: {{\"id\":\"{name}\",\"choices\":[{{\"delta\":{{\"content\":\"one\"}}}}]}}\n\n"
            ),
            format!(
                "data: {{\"id\":\"{name}\",\"choices\":[{{\"delta\":{{\"content\":\"two\"}}}}]}}\n\n"
            ),
            "data: [DONE]\n\n".into(),
        ],
    }
}

/// A mock engine on 127.0.0.1 streaming `events(name)`, one frame each; counts its
/// requests.
async fn engine(name: &'static str) -> (Server, Arc<AtomicU64>) {
    let requests = Arc::new(AtomicU64::new(0));
    let count = requests.clone();
    let svc = service_fn(move |_req: Request<Incoming>| {
        count.fetch_add(1, Ordering::SeqCst);
        let frames = events(name)
            .into_iter()
            .map(|e| Ok::<_, Infallible>(Frame::data(Bytes::from(e))));
        let mut response = Response::new(StreamBody::new(stream::iter(frames)));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        async move { Ok::<_, Infallible>(response) }
    });
    (Server::start(svc).await, requests)
}

/// Records a worker's outcome with its index.
struct ToChannel {
    worker: usize,
    tx: mpsc::UnboundedSender<(usize, Outcome)>,
}

impl Recorder for ToChannel {
    fn record(self, outcome: Outcome) {
        let _ = self.tx.send((self.worker, outcome));
    }
}

type Relayed = Either<Pin<Box<AttemptBody<Incoming, ToChannel>>>, Full<Bytes>>;

/// The gateway's handler: tries each worker in turn, awaiting each attempt up to its
/// commit before it answers; the first that commits is the answer.
async fn relay(
    proto: Proto,
    workers: Arc<Vec<std::net::SocketAddr>>,
    tx: mpsc::UnboundedSender<(usize, Outcome)>,
) -> Response<Relayed> {
    let upstream = client(proto);
    for (worker, addr) in workers.iter().enumerate() {
        let request = Request::get(format!("http://{addr}/v1/chat/completions"))
            .body(Empty::new())
            .expect("request");
        let Ok(response) = upstream.request(request).await else {
            continue;
        };
        let (mut parts, body) = response.into_parts();
        for hop in [header::CONNECTION, header::TRANSFER_ENCODING] {
            parts.headers.remove(hop);
        }
        let recorder = ToChannel {
            worker,
            tx: tx.clone(),
        };
        let tracked = TrackedBody::new(body, recorder).with_sse(SseRules::openai_chat());
        let mut attempt = Box::pin(AttemptBody::new(tracked, 64 * 1024));
        if attempt.as_mut().commit().await.is_ok() {
            return Response::from_parts(parts, Either::Left(attempt));
        }
    }
    let mut response = Response::new(Either::Right(Full::default()));
    *response.status_mut() = StatusCode::BAD_GATEWAY;
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_fails_after_its_preamble_is_replaced_and_the_client_reads_only_the_next() {
    for proto in PROTOS {
        let (_bad, bad_requests) = engine("bad").await;
        let (_good, good_requests) = engine("good").await;
        let workers = Arc::new(vec![_bad.addr, _good.addr]);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let gateway = Server::start(service_fn(move |_req: Request<Incoming>| {
            let (workers, tx) = (workers.clone(), tx.clone());
            async move { Ok::<_, Infallible>(relay(proto, workers, tx).await) }
        }))
        .await;
        let request = Request::get(format!("http://{}/v1/chat/completions", gateway.addr))
            .body(Empty::new())
            .expect("request");
        let response = within("gateway response", client(proto).request(request))
            .await
            .expect("gateway");
        assert_eq!(response.status(), StatusCode::OK, "{proto:?}");
        // The bad worker heard its verdict before the head was sent.
        let (worker, first) = rx.try_recv().expect("the failed attempt, recorded at once");
        assert_eq!(
            (worker, first.verdict, first.cause),
            (0, Verdict::Failure, Cause::ErrorEvent),
            "{proto:?}"
        );
        let body = within("body", response.into_body().collect())
            .await
            .expect("a clean end")
            .to_bytes();
        assert_eq!(
            String::from_utf8_lossy(&body),
            events("good").concat(),
            "{proto:?}: all of the good worker's answer, and nothing else"
        );
        assert!(!body.windows(3).any(|w| w == b"bad"), "{proto:?}");
        let (worker, second) = within("the good worker's verdict", rx.recv())
            .await
            .expect("an outcome");
        assert_eq!(
            (worker, second.verdict, second.cause),
            (1, Verdict::Success, Cause::Done),
            "{proto:?}"
        );
        assert_eq!(second.bytes, body.len() as u64, "{proto:?}");
        assert_eq!(
            (
                bad_requests.load(Ordering::SeqCst),
                good_requests.load(Ordering::SeqCst)
            ),
            (1, 1),
            "{proto:?}: one attempt each"
        );
        assert!(rx.try_recv().is_err(), "{proto:?}: one verdict per attempt");
    }
}
