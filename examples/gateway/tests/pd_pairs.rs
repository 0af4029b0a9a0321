//! Prefill/decode pairs on loopback (SPEC section 7): mock prefill and decode
//! workers, where the decode mock streams only once the prefill mock has seen the
//! same `bootstrap_room` (as the KV transfer requires), each worker's verdict read
//! from the gateway's events and metrics, and each upstream connection's close seen
//! by the mock (its response body dropped before its end).

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxumState;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use clap::Parser;
use common::{client, serve_router, within};
use sluice::breaker::{Config, Reason, State, StdClock};
use sluice::{Cause, Outcome, Verdict};
use sluice_gateway::engine::Engine;
use sluice_gateway::gateway::pd::PrefillSpec;
use sluice_gateway::gateway::{Gateway, GatewayEvent, Options, WorkerSpec};
use sluice_gateway::serve::{self, ServeArgs};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::sync::watch;
use tokio::time::Instant;

/// What a mock worker does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Answer: a prefill at once (having seen the room); a decode once the room is
    /// seen, three tokens and its end (an event stream or one JSON answer, as the
    /// request's `stream` asks).
    Serve,
    /// 200 and a first event, then nothing more until dropped (a prefill: having
    /// seen the room; a decode: once the room is seen, two tokens).
    Hold,
    /// Answer with this status at once (a prefill that fails never sees the room:
    /// no KV is transferred).
    Status(u16),
}

/// Who has a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Side {
    /// A prefill mock got a request with it (and, unless it fails, has its KV).
    PrefillSaw,
    /// A decode mock got a request with it.
    DecodeAsked,
}

/// What one mock saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    id: String,
    body: serde_json::Value,
}

/// A mock worker's shared state.
#[derive(Debug)]
struct Mock {
    prefill: bool,
    mode: Mutex<Mode>,
    /// The rooms the prefill mocks have seen and the decode mocks have been asked
    /// for (shared by every mock of a test).
    rooms: watch::Sender<HashSet<(Side, u64)>>,
    seen: Mutex<Vec<Seen>>,
    /// Response bodies dropped before their end: the gateway closed the connection.
    dropped: watch::Sender<u32>,
    /// Response bodies that ended by themselves.
    finished: watch::Sender<u32>,
    aborts: Mutex<Vec<String>>,
}

impl Mock {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn aborts(&self) -> Vec<String> {
        self.aborts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn dropped(&self, n: u32) {
        let mut rx = self.dropped.subscribe();
        within("the upstream connection closed", rx.wait_for(|d| *d >= n))
            .await
            .expect("mock alive");
    }
}

/// Counts the body's end: finished if it ended by itself, dropped otherwise.
struct Guard {
    mock: Arc<Mock>,
    finished: bool,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let counter = if self.finished {
            &self.mock.finished
        } else {
            &self.mock.dropped
        };
        counter.send_modify(|n| *n += 1);
    }
}

/// A body of `chunks`, after the room is seen if `wait` says so, then its end, or
/// nothing more until dropped (`hold`).
fn scripted(guard: Guard, wait: Option<u64>, chunks: Vec<Bytes>, hold: bool) -> Body {
    let state = (guard, wait, chunks.into_iter(), hold);
    let stream =
        futures_util::stream::unfold(state, |(mut guard, wait, mut chunks, hold)| async move {
            if let Some(room) = wait {
                let mut rooms = guard.mock.rooms.subscribe();
                let _ = rooms
                    .wait_for(|seen| seen.contains(&(Side::PrefillSaw, room)))
                    .await;
            }
            if let Some(chunk) = chunks.next() {
                return Some((Ok::<_, std::io::Error>(chunk), (guard, None, chunks, hold)));
            }
            if hold {
                std::future::pending::<()>().await;
            }
            guard.finished = true;
            drop(guard);
            None
        });
    Body::from_stream(stream)
}

fn sse(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

async fn generate(
    AxumState(mock): AxumState<Arc<Mock>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let room = body["bootstrap_room"].as_u64();
    let stream = body["stream"].as_bool().unwrap_or(false);
    mock.seen
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Seen {
            id,
            body: body.clone(),
        });
    let mode = mock.mode();
    if let (false, Some(room)) = (mock.prefill, room) {
        mock.rooms.send_modify(|rooms| {
            rooms.insert((Side::DecodeAsked, room));
        });
    }
    if let (true, Mode::Status(_), Some(room)) = (mock.prefill, mode, room) {
        // A prefill fails while its decode waits for the KV: once D has the request.
        let mut rooms = mock.rooms.subscribe();
        let _ = rooms
            .wait_for(|rooms| rooms.contains(&(Side::DecodeAsked, room)))
            .await;
    }
    if let Mode::Status(status) = mode {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":{"message":"mock"}}"#,
        )
            .into_response();
    }
    let guard = Guard {
        mock: mock.clone(),
        finished: false,
    };
    let hold = mode == Mode::Hold;
    if mock.prefill {
        if let Some(room) = room {
            mock.rooms.send_modify(|rooms| {
                rooms.insert((Side::PrefillSaw, room));
            });
        }
        let chunks = if stream {
            let mut chunks = vec![sse(r#"{"text":"","meta_info":{"prefill":true}}"#)];
            if !hold {
                chunks.push(sse("[DONE]"));
            }
            chunks
        } else {
            vec![Bytes::from_static(
                br#"{"text":"","meta_info":{"prefill":true}}"#,
            )]
        };
        let ct = if stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        return (
            [(header::CONTENT_TYPE, ct)],
            scripted(guard, None, chunks, hold),
        )
            .into_response();
    }
    // A decode worker: nothing before the prefill has the room (none in a request
    // without one: the single-worker baseline).
    let (chunks, ct) = if stream {
        let tokens = if hold { 2 } else { 3 };
        let mut chunks: Vec<Bytes> = (0..tokens)
            .map(|n| {
                sse(&format!(
                    r#"{{"choices":[{{"index":0,"delta":{{"content":"t{n}"}}}}]}}"#
                ))
            })
            .collect();
        if !hold {
            chunks.push(sse("[DONE]"));
        }
        (chunks, "text/event-stream")
    } else {
        let answer =
            r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"t0 t1 t2"}}]}"#;
        (
            vec![Bytes::from_static(answer.as_bytes())],
            "application/json",
        )
    };
    (
        [(header::CONTENT_TYPE, ct)],
        scripted(guard, room, chunks, hold),
    )
        .into_response()
}

async fn abort(AxumState(mock): AxumState<Arc<Mock>>, body: Bytes) -> Response {
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let rid = body["rid"].as_str().unwrap_or_default().to_owned();
    mock.aborts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(rid);
    StatusCode::OK.into_response()
}

/// Starts a mock worker; returns its state and address.
async fn mock(
    prefill: bool,
    mode: Mode,
    rooms: &watch::Sender<HashSet<(Side, u64)>>,
) -> (Arc<Mock>, SocketAddr) {
    let state = Arc::new(Mock {
        prefill,
        mode: Mutex::new(mode),
        rooms: rooms.clone(),
        seen: Mutex::new(Vec::new()),
        dropped: watch::channel(0).0,
        finished: watch::channel(0).0,
        aborts: Mutex::new(Vec::new()),
    });
    let router = Router::new()
        .route("/v1/chat/completions", post(generate))
        .route("/v1/completions", post(generate))
        .route("/generate", post(generate))
        .route("/abort_request", post(abort))
        .with_state(state.clone());
    (state, serve_router(router).await)
}

/// A PD gateway in front of mocks, and its events.
struct Rig {
    addr: SocketAddr,
    gateway: Gateway,
    events: UnboundedReceiver<GatewayEvent>,
    prefill: Vec<Arc<Mock>>,
    decode: Vec<Arc<Mock>>,
    /// Verdicts seen while waiting for others: (request, worker) -> outcomes.
    verdicts: HashMap<(String, usize), Vec<Outcome>>,
    /// The other events seen while waiting for verdicts, in order.
    backlog: VecDeque<GatewayEvent>,
}

impl Rig {
    async fn start(prefill: &[Mode], decode: &[Option<Mode>], options: Options) -> Self {
        let rooms = watch::channel(HashSet::new()).0;
        let mut specs = Vec::new();
        let mut prefill_mocks = Vec::new();
        for (i, mode) in prefill.iter().enumerate() {
            let (mock, addr) = mock(true, *mode, &rooms).await;
            prefill_mocks.push(mock);
            specs.push(PrefillSpec {
                worker: WorkerSpec {
                    name: format!("p{i}"),
                    base: format!("http://{addr}"),
                },
                bootstrap_port: Some(9000 + i as u16),
            });
        }
        let mut decode_specs = Vec::new();
        let mut decode_mocks = Vec::new();
        for (i, mode) in decode.iter().enumerate() {
            let base = match mode {
                Some(mode) => {
                    let (mock, addr) = mock(false, *mode, &rooms).await;
                    decode_mocks.push(mock);
                    format!("http://{addr}")
                }
                // Nobody listens there: connect refused.
                None => format!("http://{}", refused_addr().await),
            };
            decode_specs.push(WorkerSpec {
                name: format!("d{i}"),
                base,
            });
        }
        let (tx, events) = unbounded_channel();
        let gateway = Gateway::new_pd(specs, decode_specs, options, StdClock::new(), Some(tx))
            .expect("gateway");
        let addr = serve_router(gateway.router()).await;
        Self {
            addr,
            gateway,
            events,
            prefill: prefill_mocks,
            decode: decode_mocks,
            verdicts: HashMap::new(),
            backlog: VecDeque::new(),
        }
    }

    async fn post(&self, path: &str, id: &str, body: serde_json::Value) -> reqwest::Response {
        let send = client()
            .post(format!("http://{}{path}", self.addr))
            .header("x-request-id", id)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send();
        within("response", send).await.expect("gateway answers")
    }

    /// The one verdict of `worker` (global index) for `request`.
    async fn verdict(&mut self, request: &str, worker: usize) -> Outcome {
        let key = (request.to_owned(), worker);
        loop {
            if let Some(outcomes) = self.verdicts.get(&key) {
                assert_eq!(
                    outcomes.len(),
                    1,
                    "{request}: worker {worker}: {outcomes:?}"
                );
                return outcomes[0];
            }
            let event = within("a verdict", self.events.recv())
                .await
                .expect("gateway alive");
            match event {
                GatewayEvent::Verdict {
                    request,
                    worker,
                    outcome,
                } => self
                    .verdicts
                    .entry((request, worker))
                    .or_default()
                    .push(outcome),
                other => self.backlog.push_back(other),
            }
        }
    }

    /// The next event that is not a verdict: from the backlog, then as it comes.
    async fn next_event(&mut self) -> GatewayEvent {
        match self.backlog.pop_front() {
            Some(event) => event,
            None => within("an event", self.events.recv())
                .await
                .expect("gateway alive"),
        }
    }

    /// Every event that came by now (verdicts waited for are kept aside), without
    /// waiting.
    fn events_now(&mut self) -> Vec<GatewayEvent> {
        let mut out: Vec<GatewayEvent> = self.backlog.drain(..).collect();
        while let Ok(event) = self.events.try_recv() {
            out.push(event);
        }
        out
    }

    /// P's and D's verdicts (verdict, cause) for `request`.
    async fn pair(&mut self, request: &str, p: usize, d: usize) -> [(Verdict, Cause); 2] {
        let po = self.verdict(request, p).await;
        let dout = self.verdict(request, d).await;
        [(po.verdict, po.cause), (dout.verdict, dout.cause)]
    }
}

/// An address nobody listens on.
async fn refused_addr() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    addr
}

fn options() -> Options {
    Options::new(
        Config::default()
            .failure_threshold(1)
            .open_duration(Duration::from_secs(3600)),
    )
}

/// Both Abandoned by the client: D mid-stream (`client_left`), P mid-body or, if its
/// head had not reached the gateway yet, before it (`client_left_before_head`).
fn assert_left_by_the_client([p, d]: [(Verdict, Cause); 2]) {
    assert_eq!(d, (Verdict::Abandoned, Cause::ClientLeft));
    assert_eq!(p.0, Verdict::Abandoned, "{p:?}");
    assert!(
        matches!(p.1, Cause::ClientLeft | Cause::ClientLeftBeforeHead),
        "{p:?}"
    );
}

/// Reads SSE events until `n` have come.
async fn read_events(response: &mut reqwest::Response, n: usize) {
    let mut seen = Vec::new();
    while seen.windows(2).filter(|w| w == b"\n\n").count() < n {
        let bytes = within("event", response.chunk())
            .await
            .expect("stream")
            .expect("more events");
        seen.extend_from_slice(&bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_pair_streamed_and_not_on_each_route() {
    let mut rig = Rig::start(&[Mode::Serve], &[Some(Mode::Serve)], options()).await;
    let cases = [
        ("/v1/chat/completions", true),
        ("/v1/chat/completions", false),
        ("/v1/completions", true),
        ("/generate", true),
        ("/generate", false),
    ];
    for (n, (path, stream)) in cases.into_iter().enumerate() {
        let id = format!("clean-{n}");
        let response = rig
            .post(path, &id, serde_json::json!({"stream": stream}))
            .await;
        assert_eq!(response.status(), 200, "{path}");
        let text = within("body", response.text()).await.expect("body");
        if stream {
            assert!(
                text.ends_with("data: [DONE]\n\n") && text.contains("t2"),
                "{text}"
            );
        } else {
            assert!(
                text.contains("t0 t1 t2") && !text.contains("prefill"),
                "{text}"
            );
        }
        let end = if stream { Cause::Done } else { Cause::End };
        assert_eq!(
            rig.pair(&id, 0, 1).await,
            [(Verdict::Success, end), (Verdict::Success, end)],
            "{path} stream={stream}"
        );
        // Both got the same request, with the same room.
        let p = rig.prefill[0]
            .seen()
            .into_iter()
            .find(|s| s.id == id)
            .expect("P saw it");
        let d = rig.decode[0]
            .seen()
            .into_iter()
            .find(|s| s.id == id)
            .expect("D saw it");
        assert_eq!(p.body, d.body, "the same request to both");
        let room = p.body["bootstrap_room"].as_u64().expect("a room");
        assert!(room < 1 << 63);
        assert_eq!(p.body["bootstrap_host"], "127.0.0.1");
        assert_eq!(p.body["bootstrap_port"], 9000);
    }
    // Every request had its own room.
    let rooms: HashSet<u64> = rig.prefill[0]
        .seen()
        .iter()
        .filter_map(|s| s.body["bootstrap_room"].as_u64())
        .collect();
    assert_eq!(rooms.len(), 5);
    // The metrics name each worker's role.
    let text = rig.gateway.metrics_text().expect("metrics");
    for (worker, role) in [("p0", "prefill"), ("d0", "decode")] {
        let line = format!(
            "sluice_verdicts_total{{worker=\"{worker}\",role=\"{role}\",verdict=\"success\""
        );
        assert!(text.contains(&line), "{line}\n{text}");
        let state = format!(
            "sluice_breaker_state{{worker=\"{worker}\",role=\"{role}\",state=\"closed\"}} 1"
        );
        assert!(text.contains(&state), "{state}\n{text}");
        // The GenAI measures and the token usage too (the time to first token is
        // the decode worker's: its stream carries the tokens).
        let mut families = vec![
            "gen_ai_server_request_duration_seconds_count",
            "gen_ai_client_token_usage_count",
        ];
        if role == "decode" {
            families.push("gen_ai_server_time_to_first_token_seconds_count");
        }
        for family in families {
            let series = format!("{family}{{worker=\"{worker}\",role=\"{role}\",");
            assert!(text.contains(&series), "{series}\n{text}");
        }
    }
    assert!(
        !text.contains("gen_ai_server_request_duration_seconds_count{worker=\"p0\",gen_ai"),
        "a series without its role\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_leaving_mid_stream_closes_both_upstreams() {
    let mut rig = Rig::start(&[Mode::Hold], &[Some(Mode::Hold)], options()).await;
    let mut response = rig
        .post(
            "/v1/chat/completions",
            "left",
            serde_json::json!({"stream": true}),
        )
        .await;
    read_events(&mut response, 2).await;
    let left = Instant::now();
    drop(response);
    let (p, d) = (rig.prefill[0].clone(), rig.decode[0].clone());
    within("both closed", async {
        tokio::join!(p.dropped(1), d.dropped(1))
    })
    .await;
    let pair_latency = left.elapsed();
    assert_left_by_the_client(rig.pair("left", 0, 1).await);
    // No breaker moved.
    let (prefill, decode) = rig.gateway.pd_sets().expect("PD mode");
    assert_eq!(
        (prefill.state(0), decode.state(0)),
        (State::Closed, State::Closed)
    );
    for event in rig.events_now() {
        assert!(
            !matches!(event, GatewayEvent::Transition { .. }),
            "{event:?}"
        );
    }

    // The same close on a single stream, in the same run: a gateway in front of one
    // worker (the decode mock, which streams at once without a room).
    let rooms = watch::channel(HashSet::new()).0;
    let (single, addr) = mock(false, Mode::Hold, &rooms).await;
    let worker = WorkerSpec {
        name: "single".to_owned(),
        base: format!("http://{addr}"),
    };
    let gateway = Gateway::new(vec![worker], options(), StdClock::new(), None).expect("gateway");
    let gateway_addr = serve_router(gateway.router()).await;
    let send = client()
        .post(format!("http://{gateway_addr}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(serde_json::json!({"stream": true}).to_string())
        .send();
    let mut response = within("response", send).await.expect("answer");
    read_events(&mut response, 2).await;
    let left = Instant::now();
    drop(response);
    single.dropped(1).await;
    let single_latency = left.elapsed();
    println!(
        "disconnect latency (client close to every upstream body dropped): pair {pair_latency:?}, single stream {single_latency:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefill_500_drops_its_decode_as_peer_failed() {
    let mut rig = Rig::start(&[Mode::Status(500)], &[Some(Mode::Serve)], options()).await;
    let response = rig
        .post(
            "/v1/chat/completions",
            "p500",
            serde_json::json!({"stream": true}),
        )
        .await;
    assert_eq!(response.status(), 502);
    let text = within("body", response.text()).await.expect("body");
    assert!(
        text.contains("prefill worker p0 failed") && !text.contains("127.0.0.1"),
        "{text}"
    );
    assert_eq!(
        rig.pair("p500", 0, 1).await,
        [
            (Verdict::Failure, Cause::Status),
            (Verdict::Abandoned, Cause::PeerFailed)
        ]
    );
    // D's connection was closed: its body (waiting for a room that never came)
    // dropped, never finished.
    rig.decode[0].dropped(1).await;
    assert_eq!(*rig.decode[0].finished.borrow(), 0);
    // P is ejected (threshold 1); D is not touched.
    let (prefill, decode) = rig.gateway.pd_sets().expect("PD mode");
    assert!(matches!(prefill.state(0), State::Open { .. }));
    assert_eq!(decode.state(0), State::Closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decode_500_is_its_failure_and_the_prefill_verdict_stands() {
    let mut rig = Rig::start(&[Mode::Serve], &[Some(Mode::Status(500))], options()).await;
    let response = rig
        .post(
            "/v1/chat/completions",
            "d500",
            serde_json::json!({"stream": true}),
        )
        .await;
    assert_eq!(response.status(), 500);
    assert_eq!(
        rig.pair("d500", 0, 1).await,
        [
            (Verdict::Success, Cause::Done),
            (Verdict::Failure, Cause::Status)
        ]
    );
    let (prefill, decode) = rig.gateway.pd_sets().expect("PD mode");
    assert_eq!(prefill.state(0), State::Closed);
    assert!(matches!(decode.state(0), State::Open { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decode_4xx_not_streamed_is_no_penalty() {
    let mut rig = Rig::start(&[Mode::Serve], &[Some(Mode::Status(400))], options()).await;
    let response = rig
        .post(
            "/v1/chat/completions",
            "d400",
            serde_json::json!({"stream": false}),
        )
        .await;
    assert_eq!(response.status(), 400);
    let text = within("body", response.text()).await.expect("body");
    assert!(
        text.contains("mock"),
        "the worker's error is passed on: {text}"
    );
    assert_eq!(
        rig.pair("d400", 0, 1).await,
        [
            (Verdict::Success, Cause::End),
            (Verdict::Abandoned, Cause::Status)
        ]
    );
    let (prefill, decode) = rig.gateway.pd_sets().expect("PD mode");
    assert_eq!(
        (prefill.state(0), decode.state(0)),
        (State::Closed, State::Closed)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decode_that_refuses_the_connection_fails_once() {
    let mut rig = Rig::start(&[Mode::Serve], &[None], options()).await;
    let response = rig
        .post(
            "/v1/chat/completions",
            "refused",
            serde_json::json!({"stream": true}),
        )
        .await;
    assert_eq!(response.status(), 502);
    let text = within("body", response.text()).await.expect("body");
    assert!(text.contains("upstream d0 is unreachable"), "{text}");
    assert_eq!(
        rig.pair("refused", 0, 1).await,
        [
            (Verdict::Success, Cause::Done),
            (Verdict::Failure, Cause::SendFailed)
        ]
    );
    // Recorded once: one verdict in the metrics, of any kind.
    let text = rig.gateway.metrics_text().expect("metrics");
    let d_verdicts: f64 = text
        .lines()
        .filter(|l| l.starts_with("sluice_verdicts_total{worker=\"d0\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(d_verdicts, 1.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_sglang_a_client_that_leaves_gets_one_abort_to_each_with_the_same_rid() {
    let options = Options {
        engine: Engine::Sglang,
        ..options()
    };
    let mut rig = Rig::start(&[Mode::Hold], &[Some(Mode::Hold)], options).await;
    let mut response = rig
        .post("/generate", "gone", serde_json::json!({"stream": true}))
        .await;
    read_events(&mut response, 2).await;
    drop(response);
    assert_left_by_the_client(rig.pair("gone", 0, 1).await);
    // One abort event per worker (each ticket sends at most one).
    let mut aborted = HashMap::new();
    while aborted.len() < 2 {
        let event = rig.next_event().await;
        if let GatewayEvent::Abort {
            request,
            worker,
            rid,
            result,
        } = event
        {
            assert_eq!((request.as_str(), result), ("gone", "ok"));
            assert!(
                aborted.insert(worker, rid).is_none(),
                "a second abort to {worker}"
            );
        }
    }
    let rid = rig.prefill[0].seen()[0].body["rid"]
        .as_str()
        .expect("a rid")
        .to_owned();
    assert_eq!(
        rig.decode[0].seen()[0].body["rid"],
        rid.as_str(),
        "the same rid to both"
    );
    assert_eq!(aborted.get(&0), Some(&rid));
    assert_eq!(aborted.get(&1), Some(&rid));
    // The mocks got them (the gateway counted each after its answer).
    assert_eq!(rig.prefill[0].aborts(), std::slice::from_ref(&rid));
    assert_eq!(rig.decode[0].aborts(), [rid]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_caps_hold_per_pool() {
    // Two prefill workers that fail, two decode workers that are fine; a cap of one
    // ejected worker per pool (50 % of two).
    let options = Options {
        max_ejected_percent: 50,
        ..options()
    };
    let mut rig = Rig::start(
        &[Mode::Status(500), Mode::Status(500)],
        &[Some(Mode::Serve), Some(Mode::Serve)],
        options,
    )
    .await;
    for n in 0..4 {
        let response = rig
            .post(
                "/v1/chat/completions",
                &format!("cap-{n}"),
                serde_json::json!({"stream": true}),
            )
            .await;
        assert_eq!(response.status(), 502);
    }
    let (prefill, decode) = rig.gateway.pd_sets().expect("PD mode");
    assert_eq!((prefill.max_ejected(), decode.max_ejected()), (1, 1));
    assert_eq!(
        prefill.ejected(),
        1,
        "one prefill worker out, the cap holds the other in"
    );
    assert_eq!(decode.ejected(), 0);
    assert_eq!(
        (decode.state(0), decode.state(1)),
        (State::Closed, State::Closed)
    );
    // Both verdicts of a pair are in before its client has the 502.
    let mut capped = false;
    let mut decode_moved = false;
    let mut decode_verdicts = Vec::new();
    for event in rig.events_now() {
        match event {
            GatewayEvent::Transition { worker, transition } => {
                capped |= worker < 2 && transition.reason == Reason::EjectionCapped;
                decode_moved |= worker >= 2;
            }
            GatewayEvent::Verdict {
                worker, outcome, ..
            } if worker >= 2 => decode_verdicts.push((outcome.verdict, outcome.cause)),
            _ => {}
        }
    }
    assert!(capped, "the second prefill worker's ejection was capped");
    assert!(!decode_moved, "no decode breaker moved");
    // Every decode verdict was peer_failed: neutral.
    assert_eq!(
        decode_verdicts,
        [(Verdict::Abandoned, Cause::PeerFailed); 4]
    );
}

/// `serve --prefill URL [BOOTSTRAP_PORT] --decode URL`, as SGLang's router takes
/// them.
#[derive(Debug, clap::Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_takes_the_sglang_router_flags() {
    let rooms = watch::channel(HashSet::new()).0;
    let (p0, p0_addr) = mock(true, Mode::Serve, &rooms).await;
    let (p1, p1_addr) = mock(true, Mode::Serve, &rooms).await;
    let (_d, d_addr) = mock(false, Mode::Serve, &rooms).await;
    let (p0_url, p1_url, d_url) = (
        format!("http://{p0_addr}"),
        format!("http://{p1_addr}"),
        format!("http://{d_addr}"),
    );
    let cli = Cli::try_parse_from([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--prefill",
        &p0_url,
        "9100",
        "--prefill",
        &p1_url,
        "--decode",
        &d_url,
    ])
    .expect("flags");
    assert!(
        Cli::try_parse_from(["serve", "--prefill", &p0_url]).is_err(),
        "a decode is needed"
    );
    assert!(
        Cli::try_parse_from([
            "serve",
            "--prefill",
            &p0_url,
            "--decode",
            &d_url,
            "--upstream",
            &d_url
        ])
        .is_err(),
        "PD mode is instead of --upstream"
    );
    let serving = serve::start(&cli.serve).await.expect("serve");
    for n in 0..2 {
        let send = client()
            .post(format!("http://{}/generate", serving.addr))
            .header("x-request-id", format!("flags-{n}"))
            .header("content-type", "application/json")
            .body(r#"{"text":"hi","stream":true}"#)
            .send();
        let response = within("response", send).await.expect("answer");
        assert_eq!(response.status(), 200);
        let text = within("body", response.text()).await.expect("body");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    }
    // Round-robin over the prefill pool: each got one, with its bootstrap port
    // (the default 8998 where none was given).
    let (s0, s1) = (p0.seen(), p1.seen());
    assert_eq!((s0.len(), s1.len()), (1, 1));
    assert_eq!(s0[0].body["bootstrap_port"], 9100);
    assert_eq!(s1[0].body["bootstrap_port"], 8998);
    let text = common::metrics_until(serving.addr, "both verdicts", |t| {
        t.contains(&format!("sluice_verdicts_total{{worker=\"{d_addr}\",role=\"decode\",verdict=\"success\",cause=\"done\"}} 2"))
    })
    .await;
    assert!(
        text.contains(&format!("worker=\"{p0_addr}\",role=\"prefill\"")),
        "{text}"
    );
}
