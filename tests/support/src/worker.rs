//! The mock inference worker's protocol, shared by the tokio (axum) and smol
//! (async-net) workers.
//!
//! The worker streams SSE tokens as its query string says (`id`, `tokens`,
//! `pace_ms`, `fail_after`, `stall_after`, `status`, `hold_headers`, `hold_prefill`,
//! `linger`) and records, per request id, what it produced and when its response
//! was dropped: that is the upstream connection closing as the worker sees it.

use core::marker::PhantomData;
use std::collections::HashMap;
use std::future::pending;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::Event;

use crate::{Clock, within};

/// The worker's answer once a stream is complete.
pub const DONE: &[u8] = b"data: [DONE]\n\n";

/// The SSE event for token `n`.
pub fn token(n: u64) -> Bytes {
    Bytes::from(format!("data: {{\"token\":{n}}}\n\n"))
}

/// A parsed query string, `a=1&b&c=2`.
#[derive(Debug, Clone, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    /// Parses `a=1&b=2`; a key without `=` has an empty value.
    pub fn parse(query: &str) -> Self {
        let pairs =
            query
                .split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| match kv.split_once('=') {
                    Some((k, v)) => (k.to_owned(), v.to_owned()),
                    None => (kv.to_owned(), String::new()),
                });
        Self(pairs.collect())
    }

    /// The number under `key`, if there is one.
    pub fn num<T: core::str::FromStr>(&self, key: &str) -> Option<T> {
        self.0.get(key).and_then(|v| v.parse().ok())
    }

    /// Whether `key` is present.
    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// The request id (`id`, 0 when absent).
    pub fn id(&self) -> u64 {
        self.num("id").unwrap_or(0)
    }
}

/// What a test asks the worker to do for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The request id (`id`).
    pub id: u64,
    /// Refuse with this status and no body (`status`).
    pub status: Option<u16>,
    /// Never send the response head (`hold_headers`).
    pub hold_headers: bool,
    /// After the head, never send a token (`hold_prefill`).
    pub hold_prefill: bool,
    /// Tokens before `[DONE]` (`tokens`, default 5).
    pub tokens: u64,
    /// The pause before every event but the first (`pace_ms`).
    pub pace: Duration,
    /// Hang instead of event number `n` (`stall_after`).
    pub stall_after: Option<u64>,
    /// Break the body instead of event number `n` (`fail_after`).
    pub fail_after: Option<u64>,
    /// After `[DONE]`, keep the stream open (`linger`).
    pub linger: bool,
}

impl Plan {
    /// The plan in a query string.
    pub fn parse(query: &str) -> Self {
        let q = Query::parse(query);
        Self {
            id: q.id(),
            status: q.num("status"),
            hold_headers: q.has("hold_headers"),
            hold_prefill: q.has("hold_prefill"),
            tokens: q.num("tokens").unwrap_or(5),
            pace: Duration::from_millis(q.num("pace_ms").unwrap_or(0)),
            stall_after: q.num("stall_after"),
            fail_after: q.num("fail_after"),
            linger: q.has("linger"),
        }
    }

    /// The body this plan streams, sleeping on `C`'s clock.
    pub fn script<C: Clock>(self) -> Script<C> {
        Script {
            plan: self,
            next: 0,
            stage: Stage::Events,
            clock: PhantomData,
        }
    }
}

/// What the worker's body does next (see [`Script::next`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send this token event; it counts in [`RequestRecord::tokens`].
    Token(Bytes),
    /// Send [`DONE`].
    Done,
    /// Break the body: the response ends without its last chunk.
    Fail,
    /// End the body cleanly, after `[DONE]`.
    End,
}

#[derive(Debug, Clone, Copy)]
enum Stage {
    Events,
    Linger,
    End,
}

/// A plan's body, event by event; the waits (pace, stalls, prefill, linger) happen
/// inside [`Script::next`].
#[derive(Debug)]
pub struct Script<C> {
    plan: Plan,
    next: u64,
    stage: Stage,
    clock: PhantomData<fn() -> C>,
}

impl<C: Clock> Script<C> {
    /// Waits as the plan says, then says what to send. Never resolves when the plan
    /// hangs here (prefill, stall, linger).
    pub async fn next(&mut self) -> Action {
        match self.stage {
            Stage::End => return Action::End,
            Stage::Linger => pending::<()>().await,
            Stage::Events => {}
        }
        let plan = self.plan;
        if self.next == 0 && plan.hold_prefill {
            pending::<()>().await;
        }
        if self.next > 0 && !plan.pace.is_zero() {
            C::sleep(plan.pace).await;
        }
        if plan.stall_after == Some(self.next) {
            pending::<()>().await;
        }
        if plan.fail_after == Some(self.next) {
            self.stage = Stage::End;
            return Action::Fail;
        }
        if self.next == plan.tokens {
            self.stage = match plan.linger {
                true => Stage::Linger,
                false => Stage::End,
            };
            return Action::Done;
        }
        let event = token(self.next);
        self.next += 1;
        Action::Token(event)
    }
}

/// What the worker did for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestRecord {
    /// The request reached the worker.
    pub arrived: bool,
    /// The worker started a streaming response.
    pub headers: bool,
    /// Tokens produced so far.
    pub tokens: u64,
    /// The body ended by itself (after `[DONE]`).
    pub finished: bool,
    /// The response was dropped: the connection closed, or the worker ended it.
    pub dropped: bool,
    /// When it was dropped.
    pub dropped_at: Option<Instant>,
}

/// The worker's record of every request, by id; tests wait on it.
#[derive(Debug)]
pub struct WorkerLog<C> {
    map: Mutex<HashMap<u64, RequestRecord>>,
    changed: Event,
    clock: PhantomData<fn() -> C>,
}

impl<C> Default for WorkerLog<C> {
    fn default() -> Self {
        Self {
            map: Mutex::default(),
            changed: Event::new(),
            clock: PhantomData,
        }
    }
}

impl<C: Clock> WorkerLog<C> {
    /// Changes request `id`'s record and wakes whoever waits on it.
    pub fn update(&self, id: u64, f: impl FnOnce(&mut RequestRecord)) {
        f(self
            .map
            .lock()
            .expect("worker log lock")
            .entry(id)
            .or_default());
        self.changed.notify(usize::MAX);
    }

    /// What the worker did for request `id` so far (also before it arrives).
    pub fn progress(&self, id: u64) -> RequestRecord {
        let map = self.map.lock().expect("worker log lock");
        map.get(&id).cloned().unwrap_or_default()
    }

    /// Waits until request `id` satisfies `pred`, failing the test after
    /// [`DEADLINE`](crate::DEADLINE).
    pub async fn wait(
        &self,
        id: u64,
        what: &str,
        mut pred: impl FnMut(&RequestRecord) -> bool,
    ) -> RequestRecord {
        within::<C, _>(what, async {
            loop {
                let listener = self.changed.listen();
                let now = self.progress(id);
                if pred(&now) {
                    return now;
                }
                listener.await;
            }
        })
        .await
    }

    /// Records that request `id` arrived; the guard records when its response is
    /// dropped.
    pub fn arrived(self: &Arc<Self>, id: u64) -> DropMarker<C> {
        self.update(id, |p| p.arrived = true);
        DropMarker {
            ledger: self.clone(),
            id,
        }
    }
}

/// Held by a request's handler, then by its response body: marks the request
/// dropped when it goes away.
#[derive(Debug)]
pub struct DropMarker<C: Clock> {
    ledger: Arc<WorkerLog<C>>,
    id: u64,
}

impl<C: Clock> DropMarker<C> {
    /// Changes this request's record.
    pub fn update(&self, f: impl FnOnce(&mut RequestRecord)) {
        self.ledger.update(self.id, f);
    }
}

impl<C: Clock> Drop for DropMarker<C> {
    fn drop(&mut self) {
        let now = Instant::now();
        self.update(|p| {
            p.dropped = true;
            p.dropped_at = Some(now);
        });
    }
}
