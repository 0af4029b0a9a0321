//! Disaggregated prefill/decode (PD) mode: every request is served by a pair, a
//! prefill worker P and a decode worker D, picked from two pools (`serve --prefill
//! URL [BOOTSTRAP_PORT] --decode URL`), each with its own [`SharedBreakerSet`] and
//! its own ejection cap (SPEC section 7).
//!
//! # The SGLang protocol (the one built)
//!
//! The gateway picks P (from the prefill pool, with `--pick`) and D (from the decode
//! pool), adds to the request's JSON object `bootstrap_host` (P's host),
//! `bootstrap_port` (P's bootstrap port, [`DEFAULT_BOOTSTRAP_PORT`] unless given,
//! `null` for `none`) and `bootstrap_room` (random, below 2^63, unique per request:
//! [`RoomMinter`]), and sends the same request to both at once. With
//! `--engine sglang` the same minted `rid` goes to both.
//!
//! * **The client's answer is D's**, streamed or not, exactly as on the single-worker
//!   path: tracked with the route's rules, the worker's timers, the route's failure
//!   event, held back to its commit (its first progress event, or its end for a
//!   non-streaming body) so that a P failing before it still turns into a clean error.
//! * **P's response is read for its status and its end, never forwarded**: in a task
//!   of its own, tracked (an event stream with the route's rules minus the done
//!   requirement: an in-band error is a failure, a clean end a success), with the
//!   worker's timers.
//! * **Each worker hears exactly one verdict**, through a ticket of its own (its
//!   pool's permit, its role in the metrics and logs), wrapped by the core's
//!   [`sluice::pair`] recorders, which tie the two together: a P that fails before
//!   D commits or ends makes [`PairLink::peer_failed`] true, the handler drops D at
//!   once (its connection closed, the engine told with `--engine sglang`), and D
//!   records Abandoned `peer_failed`; the client gets a 502. A D that fails is D's
//!   Failure; P's own verdict stands (P is read to its own end). 4xx is neutral for
//!   both (the [`StatusPolicy`](sluice::breaker::StatusPolicy)).
//! * **A client that leaves drops both**: hyper drops D's body (or the handler, before
//!   D's head), D records Abandoned `client_left`, its ticket tells P's task, which
//!   drops P at once: Abandoned `client_left` too (a P that had already ended keeps
//!   its verdict). With `--engine sglang` each gets one `/abort_request` with the
//!   request's `rid`.
//!
//! Not in PD mode yet: retries and hedging (a failed pair is the client's error, not
//! another pair), and the active health checks (`serve` refuses them with PD).
//!
//! # The sequential protocol (vLLM), as a later profile
//!
//! vLLM's disaggregated prefill is sequential: P first, with the request changed to
//! `max_tokens: 1` (and `stream: false`) and `kv_transfer_params: {"do_remote_decode":
//! true}`; P's JSON answer carries `kv_transfer_params` (where its KV blocks are);
//! then D gets the original request with those `kv_transfer_params`, and its answer is
//! the client's. The pieces here already fit it, and adding it is a profile, not a
//! path:
//!
//! * the **request rewrite** is per profile: SGLang adds the bootstrap fields to one
//!   body sent to both ([`bootstrapped`]); vLLM makes P's body and, from P's answer,
//!   D's;
//! * the **schedule** is per profile: SGLang starts P's task and D's request at once;
//!   vLLM awaits P's task to its end (it must read P's JSON, which the task already
//!   reads to the end; it would hand the body back instead of dropping it) and only
//!   then sends D;
//! * the **verdicts are the same rules**: P's from its status and its end, D's from
//!   its stream, the same [`PairLink`]; in the sequential protocol P has always ended
//!   before D starts, so a P failure always drops D before its head (D is never
//!   sent: its permit is dropped unrecorded, or, if sent, Abandoned `peer_failed`),
//!   and a client that leaves during P's turn drops P alone.
//!
//! So a `PdProfile { Sglang, VllmSequential }` chosen by flag would select
//! [`bootstrapped`] or a two-step rewrite, and `join` or `then`; everything after the
//! heads is this file's code unchanged.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use sluice::attempt::Attempt;
use sluice::breaker::{
    Classified, Clock, Recorded, SetPermit, SharedBreakerSet, State, Transition,
};
use sluice::pair::PairLink;
use sluice::{Cause, Outcome, RecordGuard, Recorder, TrackedStream, Verdict};
use sluice_tokio::TokioTimer;
use tokio::sync::watch;
use tracing::Instrument;

use super::body::ClientBody;
use super::proxy::{HOLD_BACK_STREAM, HOLD_BACK_WHOLE, is_event_stream, passed_on};
use super::shutdown::grace_over;
use super::ticket::Timing;
use super::{
    Api, Gateway, GatewayError, GatewayEvent, Inner, Options, REQUEST_ID, WorkerSpec, error_chain,
    json_error,
};
use crate::engine;
use crate::metrics::Metrics;

/// SGLang's default bootstrap port of a prefill worker.
pub const DEFAULT_BOOTSTRAP_PORT: u16 = 8998;

/// One prefill worker: where it is, and its bootstrap port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrefillSpec {
    /// The worker.
    pub worker: WorkerSpec,
    /// Its KV bootstrap port (`bootstrap_port` in each request); `None` sends
    /// `null` (SGLang's router writes it `none`).
    pub bootstrap_port: Option<u16>,
}

/// A worker's role in a pair, as the metrics label it (`role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Role {
    /// A prefill worker: its answer is read, never forwarded.
    Prefill,
    /// A decode worker: its answer is the client's.
    Decode,
}

impl Role {
    /// Its label value: `prefill` or `decode`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Prefill => "prefill",
            Self::Decode => "decode",
        }
    }
}

/// Mints `bootstrap_room`s: below 2^63, unique per request (a random start plus a
/// counter times an odd constant, modulo 2^63: a bijection of the counter, so no
/// two requests of one gateway share a room before 2^63 of them), and unlike
/// between gateways (the start is random).
#[derive(Debug)]
pub struct RoomMinter {
    start: u64,
    next: AtomicU64,
}

impl Default for RoomMinter {
    fn default() -> Self {
        Self::new()
    }
}

impl RoomMinter {
    const MASK: u64 = (1 << 63) - 1;

    /// A minter with a random start.
    pub fn new() -> Self {
        Self {
            start: RandomState::new().hash_one(std::process::id()),
            next: AtomicU64::new(0),
        }
    }

    /// The next room.
    pub fn mint(&self) -> u64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.start
            .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            & Self::MASK
    }
}

/// The two pools of a PD gateway. Worker indexes in the gateway's names, metrics and
/// events are global: the prefill workers first, then the decode workers.
pub(super) struct Pools {
    prefill: SharedBreakerSet,
    decode: SharedBreakerSet,
    /// Per prefill worker: its host (`bootstrap_host`) and bootstrap port.
    bootstrap: Vec<(String, Option<u16>)>,
    rooms: RoomMinter,
}

impl Pools {
    /// The global index of `worker` of `role`'s pool.
    fn global(&self, role: Role, worker: usize) -> usize {
        match role {
            Role::Prefill => worker,
            Role::Decode => self.prefill.len() + worker,
        }
    }

    fn set(&self, role: Role) -> &SharedBreakerSet {
        match role {
            Role::Prefill => &self.prefill,
            Role::Decode => &self.decode,
        }
    }

    /// Every worker's breaker state, prefill workers first.
    pub(super) fn states(&self) -> Vec<State> {
        let prefill = (0..self.prefill.len()).map(|w| self.prefill.state(w));
        prefill
            .chain((0..self.decode.len()).map(|w| self.decode.state(w)))
            .collect()
    }

    /// Workers ejected now, and the caps, summed over both pools.
    pub(super) fn ejected(&self) -> (usize, usize) {
        (
            self.prefill.ejected() + self.decode.ejected(),
            self.prefill.max_ejected() + self.decode.max_ejected(),
        )
    }

    /// Requests in flight to any worker.
    pub(super) fn in_flight(&self) -> usize {
        let prefill: usize = (0..self.prefill.len())
            .map(|w| self.prefill.in_flight(w))
            .sum();
        prefill
            + (0..self.decode.len())
                .map(|w| self.decode.in_flight(w))
                .sum::<usize>()
    }

    /// What time alone changes, per worker (global index).
    pub(super) fn handle_timeouts(&self) -> Vec<(usize, Transition)> {
        let mut out = Vec::new();
        for role in [Role::Prefill, Role::Decode] {
            let set = self.set(role);
            for w in 0..set.len() {
                if let Some(t) = set.handle_timeout(w) {
                    out.push((self.global(role, w), t));
                }
            }
        }
        out
    }
}

impl Gateway {
    /// A PD gateway: `prefill` and `decode` workers in two pools, a
    /// [`SharedBreakerSet`] each with `options` (its breaker settings, its own cap
    /// of `max_ejected_percent`), picked with `options.pick`. The names, metrics
    /// (labelled `role="prefill"|"decode"`) and events number the prefill workers
    /// first, then the decode workers; [`Gateway::set`] is the decode pool.
    /// Retries and hedging are not used in PD mode.
    pub fn new_pd(
        prefill: Vec<PrefillSpec>,
        decode: Vec<WorkerSpec>,
        options: Options,
        clock: impl Clock + Clone,
        events: Option<tokio::sync::mpsc::UnboundedSender<GatewayEvent>>,
    ) -> Result<Self, GatewayError> {
        if prefill.is_empty() || decode.is_empty() {
            return Err(GatewayError::NoWorkers);
        }
        let pool = |n: usize| {
            SharedBreakerSet::try_with_clock(n, options.config, clock.clone())
                .map(|set| set.with_max_ejected_percent(options.max_ejected_percent))
        };
        let pools = Pools {
            prefill: pool(prefill.len())?,
            decode: pool(decode.len())?,
            bootstrap: prefill
                .iter()
                .map(|p| (host_of(&p.worker.base), p.bootstrap_port))
                .collect(),
            rooms: RoomMinter::new(),
        };
        let mut workers: Vec<WorkerSpec> = prefill.into_iter().map(|p| p.worker).collect();
        let roles: Vec<&'static str> = workers
            .iter()
            .map(|_| Role::Prefill.as_str())
            .chain(decode.iter().map(|_| Role::Decode.as_str()))
            .collect();
        workers.extend(decode);
        let options = Options {
            retries: 0,
            hedge_after: None,
            ..options
        };
        let mut gateway = Self::new(workers, options, clock, events)?;
        let names = gateway.names();
        let Some(inner) = Arc::get_mut(&mut gateway.inner) else {
            unreachable!("a gateway just built has one handle");
        };
        inner.set = pools.decode.clone();
        inner.metrics = Metrics::with_roles(&names, &roles);
        inner.pd = Some(pools);
        Ok(gateway)
    }

    /// The prefill and decode pools' breaker sets, in PD mode.
    pub fn pd_sets(&self) -> Option<(&SharedBreakerSet, &SharedBreakerSet)> {
        self.inner.pd.as_ref().map(|p| (&p.prefill, &p.decode))
    }
}

/// The host of a base URL (`bootstrap_host`).
fn host_of(base: &str) -> String {
    reqwest::Url::parse(base)
        .ok()
        .and_then(|url| {
            url.host_str()
                .map(|h| h.trim_matches(['[', ']']).to_owned())
        })
        .unwrap_or_default()
}

/// The request's JSON object with the SGLang bootstrap fields added; `None` if the
/// body is not a JSON object.
pub fn bootstrapped(body: &[u8], host: &str, port: Option<u16>, room: u64) -> Option<Vec<u8>> {
    let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(body) else {
        return None;
    };
    object.insert("bootstrap_host".to_owned(), host.into());
    object.insert(
        "bootstrap_port".to_owned(),
        port.map_or(serde_json::Value::Null, Into::into),
    );
    object.insert("bootstrap_room".to_owned(), room.into());
    serde_json::to_vec(&object).ok()
}

/// What both halves of a pair send.
pub(super) struct PairCall {
    pub(super) api: Api,
    /// The request id (empty if none).
    pub(super) request: String,
    pub(super) id: Option<HeaderValue>,
    pub(super) headers: Vec<(&'static str, HeaderValue)>,
    pub(super) body: Bytes,
    pub(super) timing: Arc<Timing>,
}

/// The recorder of one side of a pair: its pool's permit, its global index; reports
/// the verdict (once), counts and logs it, asks the engine to stop an abandoned
/// request, and tells the other side (`signal`) what it must know: P's Failure
/// (drop D), D abandoned by its client (drop P).
struct PairTicket {
    gw: Arc<Inner>,
    request: String,
    permit: Option<SetPermit>,
    global: usize,
    role: Role,
    api: Api,
    timing: Arc<Timing>,
    span: tracing::Span,
    rid: Option<String>,
    signal: watch::Sender<bool>,
}

impl Recorder for PairTicket {
    fn record(mut self, mut outcome: Outcome) {
        let Some(permit) = self.permit.take() else {
            return;
        };
        let _inside = self.span.enter();
        let gw = &self.gw;
        let by_client = outcome.verdict == Verdict::Abandoned
            && matches!(
                outcome.cause,
                Cause::ClientLeft | Cause::ClientLeftBeforeHead
            );
        if by_client && gw.grace_is_over() {
            outcome.cause = Cause::Shutdown;
        }
        match permit.report(outcome.verdict) {
            Recorded::Counted(Some(t)) => gw.transition(self.global, t),
            Recorded::Stale => gw.emit(GatewayEvent::Stale {
                request: self.request.clone(),
                worker: self.global,
            }),
            _ => {}
        }
        let cancelled = outcome.verdict == Verdict::Abandoned
            && matches!(
                outcome.cause,
                Cause::ClientLeft
                    | Cause::ClientLeftBeforeHead
                    | Cause::Shutdown
                    | Cause::PeerFailed
            );
        gw.metrics.verdict(self.global, outcome, cancelled);
        gw.metrics
            .latency(self.global, outcome, &self.timing.latency(self.api));
        gw.metrics.token_usage(self.global, outcome);
        tracing::info!(
            request = self.request,
            worker = gw.name(self.global),
            role = self.role.as_str(),
            verdict = outcome.verdict.as_str(),
            cause = outcome.cause.as_str(),
            chunks = outcome.chunks,
            bytes = outcome.bytes,
            progress = outcome.progress,
            input_tokens = outcome.usage.input_tokens,
            output_tokens = outcome.usage.output_tokens,
            "verdict"
        );
        gw.emit(GatewayEvent::Verdict {
            request: self.request.clone(),
            worker: self.global,
            outcome,
        });
        let tell = match self.role {
            Role::Prefill => outcome.verdict == Verdict::Failure,
            Role::Decode => by_client,
        };
        if tell {
            self.signal.send_replace(true);
        }
        if cancelled || outcome.cause == Cause::HeaderTimeout {
            if let Some(rid) = self.rid.take() {
                gw.abort(self.request.clone(), self.global, rid);
            }
        }
    }
}

/// How the wait for a response head ended.
enum Head {
    Came(reqwest::Response),
    Failed(reqwest::Error),
    TimedOut,
    /// The shutdown grace ended, or the other side said to stop.
    Stopped,
}

/// The PD path of one request: admit a pair, send the request to both, answer with
/// D's response.
pub(super) async fn proxy(gw: &Arc<Inner>, pools: &Pools, call: PairCall) -> Response {
    let span = tracing::Span::current();
    let (p_permit, d_permit) = match admit(gw, pools, &call.request) {
        Ok(permits) => permits,
        Err(wait) => return unavailable(gw, call.request.clone(), wait),
    };
    let (p, d) = (
        pools.global(Role::Prefill, p_permit.worker()),
        pools.global(Role::Decode, d_permit.worker()),
    );
    let (host, port) = pools.bootstrap[p_permit.worker()].clone();
    let room = pools.rooms.mint();
    let Some(body) = bootstrapped(&call.body, &host, port, room) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "in prefill/decode mode a request's body is a JSON object",
        );
    };
    // One rid for both, when the profile aborts by id.
    let (body, rid) = if gw.engine.aborts() {
        match engine::with_rid(&body, &gw.rids.mint()) {
            Some((rewritten, rid)) => (rewritten, Some(rid)),
            None => (body, None),
        }
    } else {
        (body, None)
    };
    let body = Bytes::from(body);
    span.record("worker", gw.name(d));
    let link = PairLink::new();
    let (prefill_failed, mut on_prefill_failed) = watch::channel(false);
    let (client_left, on_client_left) = watch::channel(false);
    let ticket = |permit, global, role, signal, timing| PairTicket {
        gw: gw.clone(),
        request: call.request.clone(),
        permit: Some(permit),
        global,
        role,
        api: call.api,
        timing,
        span: span.clone(),
        rid: rid.clone(),
        signal,
    };
    // Both recorders are guarded before anything is sent: a handler dropped from
    // here on records both (and D's tells P's task to stop).
    // P's progress is not the client's: its own timing (its request's duration only).
    let p_ticket = ticket(p_permit, p, Role::Prefill, prefill_failed, Timing::start());
    let d_ticket = ticket(d_permit, d, Role::Decode, client_left, call.timing.clone());
    let p_guard = RecordGuard::new(link.prefill(p_ticket));
    let d_guard = RecordGuard::new(link.decode(d_ticket));
    let p_send = request(gw, &call, p, body.clone());
    let d_send = request(gw, &call, d, body);
    let reader = read_prefill(gw.clone(), call.api, p_send, p_guard, on_client_left);
    tokio::spawn(reader.instrument(span.clone()));
    let peer_failed = told(&mut on_prefill_failed);
    let head = tokio::select! {
        biased;
        () = grace_over(gw.shutdown.subscribe()) => Head::Stopped,
        () = peer_failed => Head::Stopped,
        sent = tokio::time::timeout(gw.header_timeout, gw.send(d_send)) => match sent {
            Ok(Ok(response)) => Head::Came(response),
            Ok(Err(err)) => Head::Failed(err),
            Err(_) => Head::TimedOut,
        },
    };
    let ticket = d_guard.disarm();
    let response = match head {
        Head::Came(response) => response,
        Head::Stopped => {
            // Dropped before its head: Abandoned, `peer_failed` if P failed, else the
            // shutdown's.
            ticket.record(Outcome::new(
                Verdict::Abandoned,
                Cause::ClientLeftBeforeHead,
                0,
                0,
            ));
            return stopped(gw, &link, p);
        }
        Head::Failed(err) => {
            tracing::warn!(
                request = call.request,
                worker = gw.name(d),
                role = Role::Decode.as_str(),
                error = error_chain(&err),
                "upstream unreachable"
            );
            ticket.record(Outcome::new(
                gw.policy.classify_send_failure(),
                Cause::SendFailed,
                0,
                0,
            ));
            let message = format!("upstream {} is unreachable", gw.name(d));
            return json_error(StatusCode::BAD_GATEWAY, "bad_gateway", &message);
        }
        Head::TimedOut => {
            ticket.record(Outcome::new(Verdict::Failure, Cause::HeaderTimeout, 0, 0));
            let message = format!(
                "upstream {} sent no response head within {:?}",
                gw.name(d),
                gw.header_timeout
            );
            return json_error(StatusCode::GATEWAY_TIMEOUT, "gateway_timeout", &message);
        }
    };
    let status = response.status();
    if let Classified::Settle(verdict) = gw.policy.classify(status.as_u16()) {
        ticket.record(Outcome::new(verdict, Cause::Status, 0, 0));
        if link.peer_failed() {
            return stopped(gw, &link, p);
        }
        if status.is_redirection() {
            let message = format!(
                "upstream {} answered with a redirect ({}), which the gateway does not follow",
                gw.name(d),
                status.as_u16()
            );
            return json_error(StatusCode::BAD_GATEWAY, "bad_gateway", &message);
        }
        return passed_on(response).await;
    }
    // A 2xx: D's body, held back to its commit, so that a P failing before it is
    // still a clean error for the client.
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let event_stream = is_event_stream(content_type.as_ref());
    let tracked = TrackedStream::new(response.bytes_stream(), ticket);
    let tracked = if event_stream {
        tracked.with_sse(call.api.rules())
    } else {
        tracked
    };
    let name: Arc<str> = Arc::from(gw.name(d));
    let tracked = tracked
        .with_timers(TokioTimer, gw.timeouts)
        .with_failure_event_named(name);
    let mut attempt = Box::pin(if event_stream {
        Attempt::new(tracked, HOLD_BACK_STREAM)
    } else {
        Attempt::whole(tracked, HOLD_BACK_WHOLE)
    });
    let peer_failed = told(&mut on_prefill_failed);
    let committed = tokio::select! {
        biased;
        () = grace_over(gw.shutdown.subscribe()) => None,
        () = peer_failed => None,
        commit = attempt.as_mut().commit() => Some(commit.is_ok()),
    };
    match committed {
        // Before its first byte goes out: unless P failed first.
        Some(true) if link.commit_decode() => {}
        // D failed before its commit: its failure is the answer (P's verdict is
        // its own).
        Some(false) => {}
        _ => {
            let cause = if link.peer_failed() {
                Cause::PeerFailed
            } else {
                Cause::Shutdown
            };
            attempt.as_mut().abandon(cause);
            drop(attempt);
            return stopped(gw, &link, p);
        }
    }
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
}

/// The client's answer when D was dropped before its answer: P failed (502), or the
/// gateway is shutting down (503).
fn stopped(gw: &Inner, link: &PairLink, p: usize) -> Response {
    if link.peer_failed() {
        let message = format!("prefill worker {} failed", gw.name(p));
        json_error(StatusCode::BAD_GATEWAY, "bad_gateway", &message)
    } else {
        json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the gateway shut down before the worker answered",
        )
    }
}

/// The request to the worker of global index `worker`, as it will be sent.
fn request(gw: &Inner, call: &PairCall, worker: usize, body: Bytes) -> reqwest::RequestBuilder {
    let url = format!(
        "{}{}",
        gw.workers[worker].base.trim_end_matches('/'),
        call.api.path()
    );
    let mut request = gw.client.post(url).body(body);
    if let Some(id) = &call.id {
        request = request.header(REQUEST_ID, id.clone());
    }
    for (name, value) in &call.headers {
        request = request.header(*name, value.clone());
    }
    request
}

/// A prefill and a decode permit, each from its pool; or, if either pool admits no
/// worker, how long until one may (the soonest known wait, at least a second). A
/// permit already taken is then dropped unrecorded: freed, nothing counted.
fn admit(gw: &Inner, pools: &Pools, request: &str) -> Result<(SetPermit, SetPermit), Duration> {
    let take = |role: Role| {
        let permit = pools
            .set(role)
            .pick_excluding(gw.pick, &[])
            .map_err(|rejected| {
                rejected
                    .retry_after
                    .unwrap_or_default()
                    .max(Duration::from_secs(1))
            })?;
        let worker = pools.global(role, permit.worker());
        if let Some(t) = permit.transition() {
            gw.transition(worker, t);
        }
        gw.emit(GatewayEvent::Routed {
            request: request.to_owned(),
            worker,
            probe: permit.is_probe(),
        });
        Ok(permit)
    };
    let p = take(Role::Prefill)?;
    let d = take(Role::Decode)?;
    Ok((p, d))
}

/// The 503 when a pool admits no worker.
fn unavailable(gw: &Inner, request: String, wait: Duration) -> Response {
    gw.metrics.unavailable();
    // Whole seconds, rounded up: a client that waits that long finds a probe slot.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    tracing::warn!(
        request,
        retry_after_s = secs,
        "no prefill/decode pair admitted: 503"
    );
    gw.emit(GatewayEvent::Unavailable {
        request,
        retry_after: wait,
    });
    let mut response = json_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "no prefill/decode pair is admitted: every worker of a pool has its circuit breaker open",
    );
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// P's side, in a task of its own: its head, then its body read to its end and
/// dropped, never forwarded. Stops at once (dropping P: Abandoned) when D's client
/// left or the shutdown grace is over.
async fn read_prefill<R: Recorder + Send + 'static>(
    gw: Arc<Inner>,
    api: Api,
    send: reqwest::RequestBuilder,
    guard: RecordGuard<R>,
    mut client_left: watch::Receiver<bool>,
) {
    let mut left = std::pin::pin!(async move { told(&mut client_left).await });
    let head = tokio::select! {
        biased;
        () = &mut left => Head::Stopped,
        () = grace_over(gw.shutdown.subscribe()) => Head::Stopped,
        sent = tokio::time::timeout(gw.header_timeout, gw.send(send)) => match sent {
            Ok(Ok(response)) => Head::Came(response),
            Ok(Err(err)) => Head::Failed(err),
            Err(_) => Head::TimedOut,
        },
    };
    let recorder = guard.disarm();
    let response = match head {
        Head::Came(response) => response,
        Head::Stopped => {
            return recorder.record(Outcome::new(
                Verdict::Abandoned,
                Cause::ClientLeftBeforeHead,
                0,
                0,
            ));
        }
        Head::Failed(err) => {
            tracing::warn!(
                role = Role::Prefill.as_str(),
                error = error_chain(&err),
                "upstream unreachable"
            );
            let failed = gw.policy.classify_send_failure();
            return recorder.record(Outcome::new(failed, Cause::SendFailed, 0, 0));
        }
        Head::TimedOut => {
            return recorder.record(Outcome::new(Verdict::Failure, Cause::HeaderTimeout, 0, 0));
        }
    };
    if let Classified::Settle(verdict) = gw.policy.classify(response.status().as_u16()) {
        // Its body is never read: dropping the response closes the connection.
        return recorder.record(Outcome::new(verdict, Cause::Status, 0, 0));
    }
    let event_stream = is_event_stream(response.headers().get(header::CONTENT_TYPE));
    let tracked = TrackedStream::new(response.bytes_stream(), recorder);
    // An in-band error fails P; its clean end is its success, done event or not.
    let tracked = if event_stream {
        tracked.with_sse(api.rules().require_done(false))
    } else {
        tracked
    };
    let mut tracked = std::pin::pin!(tracked.with_timers(TokioTimer, gw.timeouts));
    let mut grace = std::pin::pin!(grace_over(gw.shutdown.subscribe()));
    loop {
        tokio::select! {
            biased;
            () = &mut left => return,
            () = &mut grace => return,
            item = tracked.next() => if item.is_none() {
                return;
            },
        }
    }
}

/// Resolves when the other side of the pair says so; never if it ended without
/// saying it (its sender dropped).
async fn told(signal: &mut watch::Receiver<bool>) {
    if signal.wait_for(|told| *told).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_below_2_63_and_distinct() {
        let rooms = RoomMinter::new();
        let minted: std::collections::HashSet<u64> = (0..10_000).map(|_| rooms.mint()).collect();
        assert_eq!(minted.len(), 10_000);
        assert!(minted.iter().all(|r| *r < 1 << 63));
    }

    #[test]
    fn the_bootstrap_fields_are_added_to_the_object() {
        let body = bootstrapped(
            br#"{"stream":true,"bootstrap_room":1}"#,
            "10.0.0.1",
            Some(8998),
            42,
        )
        .expect("an object");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["bootstrap_host"], "10.0.0.1");
        assert_eq!(v["bootstrap_port"], 8998);
        assert_eq!(v["bootstrap_room"], 42);
        assert_eq!(v["stream"], true);
        let none = bootstrapped(b"{}", "h", None, 1).expect("an object");
        let v: serde_json::Value = serde_json::from_slice(&none).expect("json");
        assert!(v["bootstrap_port"].is_null());
        assert!(bootstrapped(b"[1]", "h", None, 1).is_none());
        assert_eq!(host_of("http://[::1]:30000/v1"), "::1");
        assert_eq!(host_of("http://prefill-0:30000"), "prefill-0");
    }
}
