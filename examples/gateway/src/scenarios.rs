//! The scripted run: a mock pool, the gateway and scripted clients in one process,
//! every scenario played in order, everything that happened kept in a [`RunLog`].
//!
//! Determinism: the requests are sequential, so round-robin routing is a fixed
//! sequence; the breakers read a [`ManualClock`] that only the script moves, so the
//! open, half-open and recovery steps do not wait for real time; every wait for an
//! effect (a verdict, a worker seeing its connection close) waits on a notification
//! with a deadline, never on a sleep. Only the mock tokens are paced in real time.

use std::fmt;
use std::time::Duration;

use sluice::breaker::{Config, ManualClock, Reason, State};
use sluice::{Cause, Outcome, Verdict};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::gateway::{Gateway, GatewayError, GatewayEvent, Options, REQUEST_ID, WorkerSpec};
use crate::metrics::{reason_name, state_name};
use crate::mock::Pool;

/// The time between two mock tokens.
pub const PACE: Duration = Duration::from_millis(10);
/// The (slower) pace of the stream a client leaves: a token in flight when it leaves
/// is not mistaken for one produced after.
pub const LEAVE_PACE: Duration = Duration::from_millis(50);
/// How long any one wait may take before the run fails.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Failures in a row that open a breaker.
pub const FAILURE_THRESHOLD: u32 = 3;
/// Good probes in a row that close it again.
pub const SUCCESS_THRESHOLD: u32 = 2;
/// How long a breaker stays open (on the manual clock).
pub const OPEN_FOR: Duration = Duration::from_secs(30);

/// The scenarios, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// Clients read whole answers from every worker.
    FullRead,
    /// A client leaves after three tokens of a long answer.
    LeaveMidStream,
    /// A client leaves after the headers, while the worker is still in prefill.
    LeaveInPrefill,
    /// The flaky worker breaks its streams until its breaker opens.
    FlakyWorker,
    /// Requests go around the open breaker.
    RoutedAround,
    /// The open duration passes; a probe goes to the (still broken) worker.
    HalfOpenProbe,
    /// The worker heals; two good probes close its breaker.
    Recovery,
}

impl Scenario {
    /// Every scenario, in order.
    pub const ALL: [Self; 7] = [
        Self::FullRead,
        Self::LeaveMidStream,
        Self::LeaveInPrefill,
        Self::FlakyWorker,
        Self::RoutedAround,
        Self::HalfOpenProbe,
        Self::Recovery,
    ];

    /// A line of title.
    pub fn title(self) -> &'static str {
        match self {
            Self::FullRead => "full read: one whole answer from each worker",
            Self::LeaveMidStream => "the client disconnects mid-stream",
            Self::LeaveInPrefill => "the client disconnects during prefill",
            Self::FlakyWorker => "bravo breaks its streams until its breaker opens",
            Self::RoutedAround => "requests are routed around the open breaker",
            Self::HalfOpenProbe => "the open time passes: a half-open probe (bravo still broken)",
            Self::Recovery => "bravo heals: two good probes close the breaker",
        }
    }
}

/// How the client read the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    /// To the end: `[DONE]`.
    Done,
    /// To the end, but the stream broke.
    Broken,
    /// The client left after this many tokens.
    Left(u64),
    /// The answer was not a 200 stream.
    Refused,
}

/// One request, as the client and the gateway saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The scenario it belongs to.
    pub scenario: Scenario,
    /// Its id (`x-request-id`).
    pub id: String,
    /// The worker that served it, if any.
    pub worker: Option<String>,
    /// Whether it was a half-open probe.
    pub probe: bool,
    /// Workers skipped on the way (breaker open), with their retry-after.
    pub skipped: Vec<(String, Option<Duration>)>,
    /// The status the client got.
    pub status: u16,
    /// Tokens the client read.
    pub tokens_read: u64,
    /// How the client's read ended.
    pub read: Read,
    /// The verdict the worker's breaker was told.
    pub verdict: Option<Verdict>,
    /// Why: the verdict's cause.
    pub cause: Option<Cause>,
    /// For a client that left: tokens the worker produced after it left.
    pub tokens_after_leave: Option<u64>,
}

/// One breaker transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitionRecord {
    /// The worker's index.
    pub worker: usize,
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
    /// Why.
    pub reason: Reason,
    /// When, on the breakers' manual clock.
    pub at: Duration,
}

/// Everything the run did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunLog {
    /// The workers' names.
    pub workers: Vec<String>,
    /// Every request, in order.
    pub requests: Vec<RequestRecord>,
    /// Every breaker transition, in order.
    pub transitions: Vec<TransitionRecord>,
    /// Each worker's breaker state at the end.
    pub final_states: Vec<State>,
    /// How many workers the set may eject at once.
    pub max_ejected: usize,
}

impl RunLog {
    /// The verdicts of one scenario's requests, in order.
    pub fn verdicts(&self, scenario: Scenario) -> Vec<Option<Verdict>> {
        self.requests
            .iter()
            .filter(|r| r.scenario == scenario)
            .map(|r| r.verdict)
            .collect()
    }

    /// The requests of one scenario.
    pub fn of(&self, scenario: Scenario) -> impl Iterator<Item = &RequestRecord> {
        self.requests.iter().filter(move |r| r.scenario == scenario)
    }

    /// How many of `worker`'s requests got `verdict`.
    pub fn count(&self, worker: &str, verdict: Verdict) -> usize {
        self.requests
            .iter()
            .filter(|r| r.worker.as_deref() == Some(worker) && r.verdict == Some(verdict))
            .count()
    }
}

/// One line of the timeline, handed out as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A scenario starts (its 1-based number).
    Scenario(usize, Scenario),
    /// A request finished.
    Request(RequestRecord),
    /// A breaker changed state.
    Transition(String, TransitionRecord),
    /// Something the script did.
    Note(String),
}

/// `12s`, or `1.5s`.
fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0}s")
    } else {
        format!("{s:.1}s")
    }
}

/// A state, with Open's end.
fn show_state(state: State) -> String {
    match state {
        State::Open { until } => format!("open until t={}", secs(until)),
        other => state_name(other).replace('_', "-"),
    }
}

impl fmt::Display for Line {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Scenario(n, s) => write!(f, "\n== {n}/{} {} ==", Scenario::ALL.len(), s.title()),
            Self::Note(text) => write!(f, "   · {text}"),
            Self::Transition(worker, t) => write!(
                f,
                "   ! t={:<4} breaker {worker}: {} -> {} ({})",
                secs(t.at),
                show_state(t.from),
                show_state(t.to),
                reason_name(t.reason).replace('_', " "),
            ),
            Self::Request(r) => {
                let to = match (&r.worker, r.probe) {
                    (Some(w), true) => format!("{w} (probe)"),
                    (Some(w), false) => w.clone(),
                    (None, _) => "nobody".to_owned(),
                };
                let read = match r.read {
                    Read::Done => format!("read {} tokens and [DONE]", r.tokens_read),
                    Read::Broken => format!("read {} tokens, then the stream broke", r.tokens_read),
                    Read::Left(0) => "left before the first token".to_owned(),
                    Read::Left(n) => format!("left after {n} tokens"),
                    Read::Refused => "no stream".to_owned(),
                };
                let verdict = match (r.verdict, r.cause) {
                    (Some(v), Some(c)) => format!("{v:?} ({c})"),
                    _ => "-".to_owned(),
                };
                write!(
                    f,
                    "   {} -> {to:<15} {} {read:<38} verdict {verdict}",
                    r.id, r.status
                )?;
                if let Some(after) = r.tokens_after_leave {
                    write!(f, "; worker made {after} token(s) after the client left")?;
                }
                for (w, after) in &r.skipped {
                    let after = after.map_or_else(|| "?".to_owned(), secs);
                    write!(f, "\n        (skipped {w}: breaker open, retry in {after})")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for RunLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\n== ledger ==")?;
        writeln!(
            f,
            "   {:<8} {:>6} {:>8} {:>8} {:>10}  breaker",
            "worker", "served", "success", "failure", "abandoned"
        )?;
        for (i, w) in self.workers.iter().enumerate() {
            let served = self
                .requests
                .iter()
                .filter(|r| r.worker.as_deref() == Some(w))
                .count();
            let state = self
                .final_states
                .get(i)
                .copied()
                .map_or("?".into(), show_state);
            writeln!(
                f,
                "   {w:<8} {served:>6} {:>8} {:>8} {:>10}  {state}",
                self.count(w, Verdict::Success),
                self.count(w, Verdict::Failure),
                self.count(w, Verdict::Abandoned),
            )?;
        }
        let path: Vec<String> = self
            .transitions
            .iter()
            .map(|t| {
                let name = self.workers.get(t.worker).map_or("?", String::as_str);
                format!(
                    "{name} {}->{}",
                    state_name(t.from).replace('_', "-"),
                    state_name(t.to).replace('_', "-")
                )
            })
            .collect();
        writeln!(f, "   transitions: {}", path.join(", "))?;
        // Verdicts by cause, in order of first appearance.
        let mut causes: Vec<(Verdict, Cause, usize)> = Vec::new();
        for r in &self.requests {
            let (Some(verdict), Some(cause)) = (r.verdict, r.cause) else {
                continue;
            };
            match causes
                .iter_mut()
                .find(|(v, c, _)| (*v, *c) == (verdict, cause))
            {
                Some((_, _, n)) => *n += 1,
                None => causes.push((verdict, cause, 1)),
            }
        }
        let causes: Vec<String> = causes
            .iter()
            .map(|(v, c, n)| format!("{v} ({c}) {n}"))
            .collect();
        writeln!(f, "   verdicts by cause: {}", causes.join(", "))?;
        let left: Vec<u64> = self
            .requests
            .iter()
            .filter_map(|r| r.tokens_after_leave)
            .collect();
        write!(
            f,
            "   clients that left: {}; tokens the workers produced after their client left: {}",
            left.len(),
            left.iter().sum::<u64>()
        )
    }
}

/// Why the run failed.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A socket could not be opened.
    #[error("cannot open a loopback socket: {0}")]
    Io(#[from] std::io::Error),
    /// The gateway could not be built.
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    /// A client request failed.
    #[error("client request failed: {0}")]
    Http(#[from] reqwest::Error),
    /// An expected effect did not happen in time.
    #[error("no {0} within {DEADLINE:?}")]
    Timeout(&'static str),
    /// The script did not go as written.
    #[error("the script went off course: {0}")]
    OffScript(String),
}

/// Awaits `fut` for at most [`DEADLINE`].
async fn within<F: Future>(what: &'static str, fut: F) -> Result<F::Output, DemoError> {
    tokio::time::timeout(DEADLINE, fut)
        .await
        .map_err(|_| DemoError::Timeout(what))
}

/// Counts SSE events as a client reads them: tokens and `[DONE]`.
#[derive(Debug, Default)]
struct SseCount {
    buf: Vec<u8>,
    tokens: u64,
    done: bool,
}

impl SseCount {
    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
            let event: Vec<u8> = self.buf.drain(..end + 2).collect();
            if event.starts_with(b"data: [DONE]") {
                self.done = true;
            } else if event.starts_with(b"data:") {
                self.tokens += 1;
            }
        }
    }
}

/// What a scripted client does with the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Read it to the end.
    ToEnd,
    /// Leave after this many tokens (of a long, slowly paced answer).
    LeaveAfter(u64),
    /// Leave once the headers are in (the worker holds its prefill).
    LeaveAfterHeaders,
}

/// The run in progress.
struct Run<F> {
    pool: Pool,
    gateway: Gateway,
    clock: ManualClock,
    client: reqwest::Client,
    url: String,
    events: mpsc::UnboundedReceiver<GatewayEvent>,
    server: JoinHandle<()>,
    ledger: RunLog,
    out: F,
    scenario: Scenario,
    next: u32,
}

/// Plays every scenario, handing each timeline line to `out` as it happens, and
/// returns the ledger.
pub async fn run(out: impl FnMut(&Line)) -> Result<RunLog, DemoError> {
    let pool = Pool::start(PACE).await?;
    let specs = pool
        .workers
        .iter()
        .map(|w| WorkerSpec {
            name: w.name.clone(),
            base: w.url(),
        })
        .collect();
    let config = Config::default()
        .failure_threshold(FAILURE_THRESHOLD)
        .success_threshold(SUCCESS_THRESHOLD)
        .open_duration(OPEN_FOR)
        .half_open_max_probes(1);
    let clock = ManualClock::new();
    let (tx, events) = mpsc::unbounded_channel();
    // One breaker per worker in a set, with the set's default ejection cap (10 %:
    // with three workers, at most one ejected at once), picking round-robin.
    let gateway = Gateway::new(specs, Options::new(config), clock.clone(), Some(tx))?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = gateway.router();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    let client = reqwest::Client::builder().no_proxy().build()?;
    let mut run = Run {
        ledger: RunLog {
            workers: gateway.names(),
            max_ejected: gateway.set().max_ejected(),
            ..RunLog::default()
        },
        pool,
        gateway,
        clock,
        client,
        url: format!("http://{addr}/v1/chat/completions"),
        events,
        server,
        out,
        scenario: Scenario::FullRead,
        next: 1,
    };
    let result = run.script().await;
    run.server.abort();
    result?;
    run.ledger.final_states = run.gateway.states();
    Ok(run.ledger)
}

impl<F: FnMut(&Line)> Run<F> {
    async fn script(&mut self) -> Result<(), DemoError> {
        let flaky = Pool::FLAKY;
        let flaky_name = self.pool.workers[flaky].name.clone();

        self.begin(Scenario::FullRead);
        for _ in 0..3 {
            self.request(Plan::ToEnd).await?;
        }

        self.begin(Scenario::LeaveMidStream);
        self.request(Plan::LeaveAfter(3)).await?;

        self.begin(Scenario::LeaveInPrefill);
        self.request(Plan::LeaveAfterHeaders).await?;

        self.begin(Scenario::FlakyWorker);
        self.pool.workers[flaky].set_failing(true);
        self.note(format!(
            "{flaky_name} now answers 200 and breaks every stream after {} tokens",
            crate::mock::TOKENS_BEFORE_FAILING
        ));
        self.until(|run| matches!(run.flaky_state(), State::Open { .. }), 12)
            .await?;

        self.begin(Scenario::RoutedAround);
        for _ in 0..3 {
            self.request(Plan::ToEnd).await?;
        }

        self.begin(Scenario::HalfOpenProbe);
        self.advance();
        self.until(|run| run.probe_ran(Scenario::HalfOpenProbe), 3)
            .await?;

        self.begin(Scenario::Recovery);
        self.pool.workers[flaky].set_failing(false);
        self.note(format!("{flaky_name} serves well again"));
        self.advance();
        self.until(|run| run.flaky_state() == State::Closed, 8)
            .await?;
        for _ in 0..3 {
            self.request(Plan::ToEnd).await?;
        }
        Ok(())
    }

    fn flaky_state(&self) -> State {
        self.gateway
            .states()
            .get(Pool::FLAKY)
            .copied()
            .unwrap_or(State::Closed)
    }

    fn probe_ran(&self, scenario: Scenario) -> bool {
        self.ledger.of(scenario).any(|r| r.probe)
    }

    fn begin(&mut self, scenario: Scenario) {
        self.scenario = scenario;
        let n = Scenario::ALL
            .iter()
            .position(|s| *s == scenario)
            .unwrap_or(0)
            + 1;
        (self.out)(&Line::Scenario(n, scenario));
    }

    fn note(&mut self, text: String) {
        (self.out)(&Line::Note(text));
    }

    /// Moves the breakers' clock past the open time and lets them see it.
    fn advance(&mut self) {
        self.clock.advance(OPEN_FOR);
        self.note(format!("the breakers' clock moves on {}", secs(OPEN_FOR)));
        self.gateway.tick();
        let mut pending = Vec::new();
        while let Ok(event) = self.events.try_recv() {
            pending.push(event);
        }
        let mut scratch = Scratch::default();
        for event in pending {
            self.take(event, &mut scratch);
        }
        self.flush(&mut scratch);
    }

    /// Sends `ToEnd` requests until `done` holds, at most `max` of them.
    async fn until(&mut self, done: impl Fn(&Self) -> bool, max: usize) -> Result<(), DemoError> {
        for _ in 0..max {
            self.request(Plan::ToEnd).await?;
            if done(self) {
                return Ok(());
            }
        }
        Err(DemoError::OffScript(format!(
            "{:?} did not reach its goal in {max} requests",
            self.scenario
        )))
    }

    /// Books one gateway event into the request under way (`scratch`).
    fn take(&mut self, event: GatewayEvent, scratch: &mut Scratch) {
        let name = |w: usize| self.ledger.workers.get(w).cloned().unwrap_or_default();
        match event {
            GatewayEvent::Skipped {
                worker,
                retry_after,
                ..
            } => scratch.skipped.push((name(worker), retry_after)),
            GatewayEvent::Routed { worker, probe, .. } => {
                scratch.worker = Some(worker);
                scratch.probe = probe;
            }
            GatewayEvent::Transition { worker, transition } => {
                let t = TransitionRecord {
                    worker,
                    from: transition.from,
                    to: transition.to,
                    reason: transition.reason,
                    at: transition.at,
                };
                self.ledger.transitions.push(t);
                scratch.transitions.push((name(worker), t));
            }
            GatewayEvent::Verdict {
                request, outcome, ..
            } => {
                scratch.verdicts.push((request, outcome));
            }
            GatewayEvent::Unavailable { .. }
            | GatewayEvent::Stale { .. }
            | GatewayEvent::Abort { .. }
            | GatewayEvent::HealthCheck { .. } => {}
        }
    }

    /// Prints the transitions booked in `scratch`.
    fn flush(&mut self, scratch: &mut Scratch) {
        for (name, t) in scratch.transitions.drain(..) {
            (self.out)(&Line::Transition(name, t));
        }
    }

    /// Takes the events that are in already.
    fn drain(&mut self, scratch: &mut Scratch) {
        while let Ok(event) = self.events.try_recv() {
            self.take(event, scratch);
        }
    }

    /// Waits (with the deadline) until the verdict of `id` is in.
    async fn verdict_of(&mut self, id: &str, scratch: &mut Scratch) -> Result<Outcome, DemoError> {
        loop {
            if let Some((_, v)) = scratch.verdicts.iter().find(|(r, _)| r == id) {
                return Ok(*v);
            }
            match within("verdict", self.events.recv()).await? {
                Some(event) => self.take(event, scratch),
                None => return Err(DemoError::OffScript("the gateway is gone".into())),
            }
        }
    }

    /// One scripted request, start to verdict.
    async fn request(&mut self, plan: Plan) -> Result<RequestRecord, DemoError> {
        let id = format!("r{:02}", self.next);
        self.next += 1;
        let mut body = serde_json::json!({
            "model": "mock",
            "messages": [{"role": "user", "content": "Say something."}],
            "stream": true,
            "max_tokens": 6,
        });
        match plan {
            Plan::ToEnd => {}
            Plan::LeaveAfter(_) => {
                body["max_tokens"] = 10_000.into();
                body["mock_pace_ms"] = (LEAVE_PACE.as_millis() as u64).into();
            }
            Plan::LeaveAfterHeaders => body["mock_hold_prefill"] = true.into(),
        }
        let send = self
            .client
            .post(&self.url)
            .header(REQUEST_ID, &id)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send();
        let mut response = within("response headers", send).await??;
        let status = response.status().as_u16();
        let mut scratch = Scratch::default();
        let mut count = SseCount::default();
        let mut tokens_after_leave = None;
        let read = if status != 200 {
            Read::Refused
        } else {
            match plan {
                Plan::ToEnd => loop {
                    match within("token", response.chunk()).await? {
                        Ok(Some(bytes)) => count.feed(&bytes),
                        Ok(None) if count.done => break Read::Done,
                        Ok(None) | Err(_) => break Read::Broken,
                    }
                },
                Plan::LeaveAfter(_) | Plan::LeaveAfterHeaders => {
                    let n = match plan {
                        Plan::LeaveAfter(n) => n,
                        _ => 0,
                    };
                    while count.tokens < n {
                        match within("token", response.chunk()).await? {
                            Ok(Some(bytes)) => count.feed(&bytes),
                            _ => return Err(DemoError::OffScript(format!("{id} ended early"))),
                        }
                    }
                    self.drain(&mut scratch);
                    let worker = scratch
                        .worker
                        .ok_or_else(|| DemoError::OffScript(format!("{id} was not routed")))?;
                    let mut progress = self.pool.workers[worker].progress(&id);
                    let at_leave = progress.borrow().tokens;
                    drop(response); // the client leaves: its connection closes
                    let seen = within(
                        "upstream close at the worker",
                        progress.wait_for(|p| p.dropped),
                    )
                    .await?
                    .map_err(|_| DemoError::OffScript("worker log closed".into()))?
                    .tokens;
                    tokens_after_leave = Some(seen.saturating_sub(at_leave));
                    Read::Left(count.tokens)
                }
            }
        };
        let outcome = if status == 200 {
            Some(self.verdict_of(&id, &mut scratch).await?)
        } else {
            self.drain(&mut scratch);
            scratch
                .verdicts
                .iter()
                .find(|(r, _)| *r == id)
                .map(|(_, v)| *v)
        };
        let record = RequestRecord {
            scenario: self.scenario,
            id,
            worker: scratch
                .worker
                .and_then(|w| self.ledger.workers.get(w).cloned()),
            probe: scratch.probe,
            skipped: scratch.skipped.clone(),
            status,
            tokens_read: count.tokens,
            read,
            verdict: outcome.map(|o| o.verdict),
            cause: outcome.map(|o| o.cause),
            tokens_after_leave,
        };
        (self.out)(&Line::Request(record.clone()));
        self.flush(&mut scratch);
        self.ledger.requests.push(record.clone());
        Ok(record)
    }
}

/// The events booked for the request under way.
#[derive(Debug, Default)]
struct Scratch {
    worker: Option<usize>,
    probe: bool,
    skipped: Vec<(String, Option<Duration>)>,
    transitions: Vec<(String, TransitionRecord)>,
    verdicts: Vec<(String, Outcome)>,
}
