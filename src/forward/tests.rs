//! The loop under a scripted upstream, client and clock, driven by hand: every
//! poll is explicit, so each ordering is exact and nothing depends on time.
extern crate std;

use super::*;
use crate::Verdict;
use crate::sse::SseRules;
use core::cell::{Cell, RefCell};
use core::task::{Context, Waker};
use core::time::Duration;
use std::collections::VecDeque;
use std::rc::Rc;
use std::vec::Vec;

type Item = Result<&'static [u8], ()>;

/// One step of the scripted upstream; an empty script is pending.
enum Step {
    Item(Item),
    Pending,
    End,
}

#[derive(Default)]
struct Script {
    steps: VecDeque<Step>,
    polls: usize,
    dropped: bool,
    ticking: Option<Ticking>,
}

/// Once the steps run out: `item` is always ready, each poll moving `now` by `gap`.
struct Ticking {
    item: &'static [u8],
    now: Rc<Cell<Duration>>,
    gap: Duration,
}

struct Upstream(Rc<RefCell<Script>>);

impl Stream for Upstream {
    type Item = Item;
    fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Item>> {
        let mut script = self.0.borrow_mut();
        script.polls += 1;
        match script.steps.pop_front() {
            Some(Step::Item(item)) => Poll::Ready(Some(item)),
            Some(Step::End) => Poll::Ready(None),
            Some(Step::Pending) => Poll::Pending,
            None => match &script.ticking {
                Some(t) => {
                    t.now.set(t.now.get() + t.gap);
                    Poll::Ready(Some(Ok(t.item)))
                }
                None => Poll::Pending,
            },
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.0.borrow_mut().dropped = true;
    }
}

/// A client with room for `room` items.
#[derive(Default)]
struct Client {
    closed: Cell<bool>,
    room: Cell<usize>,
    got: RefCell<Vec<Item>>,
}

impl Downstream<Item> for Client {
    fn send(&self, item: Item) -> impl Future<Output = Result<(), ClientGone>> {
        let mut item = Some(item);
        poll_fn(move |_| {
            if self.closed.get() {
                return Poll::Ready(Err(ClientGone));
            }
            if self.room.get() == 0 {
                return Poll::Pending;
            }
            self.room.set(self.room.get() - 1);
            self.got.borrow_mut().extend(item.take());
            Poll::Ready(Ok(()))
        })
    }

    fn closed(&self) -> impl Future<Output = ()> {
        poll_fn(|_| match self.closed.get() {
            true => Poll::Ready(()),
            false => Poll::Pending,
        })
    }
}

/// A clock moved by hand; its sleeps share its time.
#[derive(Default)]
struct Clock(Rc<Cell<Duration>>);

impl Clock {
    fn advance(&self, by: Duration) {
        self.0.set(self.0.get() + by);
    }
}

struct Sleep {
    now: Rc<Cell<Duration>>,
    end: Duration,
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        match self.now.get() >= self.end {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }
}

impl Timer for Clock {
    type Sleep = Sleep;
    fn sleep(&self, duration: Duration) -> Sleep {
        Sleep {
            now: self.0.clone(),
            end: self.0.get() + duration,
        }
    }
}

/// One scripted run: the upstream, what it recorded, the client and the clock.
struct Rig {
    script: Rc<RefCell<Script>>,
    records: Rc<RefCell<Vec<Outcome>>>,
    client: Client,
    clock: Clock,
}

const SEC: Duration = Duration::from_secs(1);

impl Rig {
    fn new(steps: impl IntoIterator<Item = Step>) -> Self {
        let script = Script {
            steps: steps.into_iter().collect(),
            ..Script::default()
        };
        let client = Client::default();
        client.room.set(usize::MAX);
        Self {
            script: Rc::new(RefCell::new(script)),
            records: Rc::default(),
            client,
            clock: Clock::default(),
        }
    }

    fn tracked(&self) -> TrackedStream<Upstream, impl Recorder + use<>> {
        let records = self.records.clone();
        TrackedStream::new(Upstream(self.script.clone()), move |o: Outcome| {
            records.borrow_mut().push(o)
        })
    }

    /// `forward` over this rig's upstream, client and clock.
    fn forward(&self, options: ForwardOptions) -> impl Future<Output = Forwarded> + '_ {
        forward(self.tracked(), &self.client, &self.clock, options)
    }

    /// The same with the upstream scanned as SSE under `rules`.
    fn forward_sse(
        &self,
        rules: SseRules,
        options: ForwardOptions,
    ) -> impl Future<Output = Forwarded> + '_ {
        forward(
            self.tracked().with_sse(rules),
            &self.client,
            &self.clock,
            options,
        )
    }

    /// After its steps, the upstream is always ready with `item`, and each poll
    /// moves the clock by `gap`.
    fn ticking(&self, item: &'static [u8], gap: Duration) {
        let now = self.clock.0.clone();
        self.script.borrow_mut().ticking = Some(Ticking { item, now, gap });
    }

    fn push(&self, step: Step) {
        self.script.borrow_mut().steps.push_back(step);
    }

    /// The upstream sends `item` every `gap`, `times` times; the loop is still
    /// waiting after each.
    fn trickle<F: Future>(
        &self,
        mut fut: Pin<&mut F>,
        item: &'static [u8],
        gap: Duration,
        times: usize,
    ) {
        for _ in 0..times {
            self.clock.advance(gap);
            self.push(Step::Item(Ok(item)));
            assert!(poll(fut.as_mut()).is_pending());
        }
    }

    /// Polls `fut` once (it must wait), moves the clock by `by`, and polls it again:
    /// it must be done.
    fn after<F: Future>(&self, fut: F, by: Duration) -> F::Output {
        let mut fut = pin!(fut);
        assert!(poll(fut.as_mut()).is_pending());
        self.clock.advance(by);
        done(fut.as_mut())
    }

    fn polls(&self) -> usize {
        self.script.borrow().polls
    }

    fn dropped(&self) -> bool {
        self.script.borrow().dropped
    }

    fn recorded(&self) -> Vec<Verdict> {
        self.records.borrow().iter().map(|o| o.verdict).collect()
    }
}

/// How forwarding ended, with the verdict.
fn ending(out: &Forwarded) -> (Ending, Verdict) {
    (out.ending, out.outcome.verdict)
}

/// How forwarding ended, with the verdict and its cause.
fn summary(out: &Forwarded) -> (Ending, Verdict, Cause) {
    (out.ending, out.outcome.verdict, out.outcome.cause)
}

/// The tiny executor: one poll with a no-op waker.
fn poll<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    fut.poll(&mut Context::from_waker(Waker::noop()))
}

fn done<F: Future>(fut: Pin<&mut F>) -> F::Output {
    match poll(fut) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("still pending"),
    }
}

const A: &[u8] = b"data: a\n\n";
const B: &[u8] = b"data: b\n\n";

#[test]
fn forwards_in_order_and_records_before_returning() {
    let rig = Rig::new([Step::Item(Ok(A)), Step::Pending, Step::Item(Ok(B))]);
    let mut fut = pin!(rig.forward(ForwardOptions::default()));
    assert!(poll(fut.as_mut()).is_pending());
    assert_eq!(*rig.client.got.borrow(), [Ok(A)]);
    assert!(poll(fut.as_mut()).is_pending());
    rig.push(Step::End);
    let out = done(fut.as_mut());
    assert_eq!(out.ending, Ending::Completed);
    assert_eq!(
        out.outcome,
        Outcome::new(Verdict::Success, Cause::End, 2, 18)
    );
    assert_eq!(*rig.client.got.borrow(), [Ok(A), Ok(B)]);
    assert!(rig.dropped());
    assert_eq!(rig.recorded(), [Verdict::Success]);
}

#[test]
fn close_wins_over_a_ready_item_and_drops_the_upstream_unpolled() {
    let rig = Rig::new([Step::Item(Ok(A))]);
    let mut fut = pin!(rig.forward(ForwardOptions::default()));
    assert!(poll(fut.as_mut()).is_pending()); // A sent, upstream pending
    let polls = rig.polls();
    rig.push(Step::Item(Ok(B)));
    rig.client.closed.set(true);
    let out = done(fut.as_mut());
    assert_eq!(out.ending, Ending::ClientGone);
    assert_eq!(out.outcome.verdict, Verdict::Abandoned);
    assert_eq!(
        rig.polls(),
        polls,
        "the upstream was polled after the close"
    );
    assert!(rig.dropped());
    assert_eq!(rig.recorded(), [Verdict::Abandoned]);
    assert_eq!(*rig.client.got.borrow(), [Ok(A)]);
}

#[test]
fn client_gone_before_start_never_polls_the_upstream() {
    let rig = Rig::new([Step::Item(Ok(A))]);
    rig.client.closed.set(true);
    let fut = pin!(rig.forward(ForwardOptions::default()));
    assert_eq!(done(fut).ending, Ending::ClientGone);
    assert_eq!(
        (rig.polls(), rig.recorded()),
        (0, [Verdict::Abandoned].into())
    );
}

#[test]
fn close_while_a_send_waits_for_room() {
    let rig = Rig::new([Step::Item(Ok(A))]);
    rig.client.room.set(0);
    let mut fut = pin!(rig.forward(ForwardOptions::default()));
    assert!(poll(fut.as_mut()).is_pending());
    rig.client.closed.set(true);
    let out = done(fut.as_mut());
    assert_eq!(ending(&out), (Ending::ClientGone, Verdict::Abandoned));
    assert!(rig.dropped());
}

#[test]
fn an_error_item_is_passed_on_then_forwarding_stops() {
    let rig = Rig::new([Step::Item(Ok(A)), Step::Item(Err(())), Step::Item(Ok(B))]);
    let fut = pin!(rig.forward(ForwardOptions::default()));
    let out = done(fut);
    assert_eq!(ending(&out), (Ending::UpstreamError, Verdict::Failure));
    assert_eq!(*rig.client.got.borrow(), [Ok(A), Err(())]);
    assert_eq!(rig.polls(), 2);
    assert_eq!(rig.recorded(), [Verdict::Failure]);
}

#[test]
fn done_then_close_is_a_success() {
    let rig = Rig::new([Step::Item(Ok(b"data: [DONE]\n\n"))]);
    let tracked = rig.tracked().with_sse(crate::sse::SseRules::openai_chat());
    let mut fut = pin!(forward(
        tracked,
        &rig.client,
        &rig.clock,
        ForwardOptions::default()
    ));
    assert!(poll(fut.as_mut()).is_pending());
    rig.client.closed.set(true);
    let out = done(fut.as_mut());
    assert_eq!(ending(&out), (Ending::ClientGone, Verdict::Success));
}

#[test]
fn first_token_timeout_marks_a_failure() {
    let rig = Rig::new([]);
    let options = ForwardOptions::default()
        .first_token_timeout(SEC)
        .idle_timeout(SEC * 10);
    let mut fut = pin!(rig.forward(options));
    assert!(poll(fut.as_mut()).is_pending());
    rig.clock.advance(SEC - Duration::from_nanos(1));
    assert!(poll(fut.as_mut()).is_pending());
    rig.clock.advance(Duration::from_nanos(1));
    let out = done(fut.as_mut());
    assert_eq!(ending(&out), (Ending::TimedOut, Verdict::Failure));
    assert!(rig.dropped());
}

#[test]
fn idle_timeout_restarts_after_each_item_and_marks_a_failure() {
    let rig = Rig::new([]);
    let options = ForwardOptions::default()
        .first_token_timeout(SEC * 10)
        .idle_timeout(SEC);
    let mut fut = pin!(rig.forward(options));
    assert!(poll(fut.as_mut()).is_pending());
    rig.clock.advance(SEC * 9); // prefill: within the first-chunk timeout
    rig.push(Step::Item(Ok(A)));
    assert!(poll(fut.as_mut()).is_pending());
    rig.clock.advance(SEC / 2);
    rig.push(Step::Item(Ok(B)));
    assert!(poll(fut.as_mut()).is_pending());
    rig.clock.advance(SEC / 2); // one second since A, half since B
    assert!(poll(fut.as_mut()).is_pending());
    rig.clock.advance(SEC / 2);
    let out = done(fut.as_mut());
    assert_eq!(ending(&out), (Ending::TimedOut, Verdict::Failure));
    assert_eq!(out.outcome.chunks, 2);
}

#[test]
fn a_due_timer_wins_over_a_ready_item() {
    let rig = Rig::new([]);
    let options = ForwardOptions::default().first_token_timeout(SEC);
    let mut fut = pin!(rig.forward(options));
    assert!(poll(fut.as_mut()).is_pending());
    let polls = rig.polls();
    rig.clock.advance(SEC);
    rig.push(Step::Item(Ok(A)));
    rig.push(Step::End);
    let out = done(fut.as_mut());
    assert_eq!(
        summary(&out),
        (Ending::TimedOut, Verdict::Failure, Cause::FirstTokenTimeout)
    );
    assert_eq!(rig.polls(), polls, "the upstream was polled past its timer");
    assert!(rig.client.got.borrow().is_empty());
}

/// An upstream that is always ready and moves the clock on each poll: the
/// deadline fires after as many items as fit in it, not never.
#[test]
fn the_deadline_fires_over_an_always_ready_upstream() {
    for item in [PING, TOKEN] {
        let rig = Rig::new([]);
        rig.ticking(item, SEC / 10);
        let options = ForwardOptions::default().deadline(SEC);
        let mut fut = pin!(rig.forward_sse(SseRules::openai_chat(), options));
        let mut polls = 0;
        let out = loop {
            polls += 1;
            assert!(polls < 100, "the deadline never fired");
            if let Poll::Ready(out) = poll(fut.as_mut()) {
                break out;
            }
        };
        assert_eq!(
            summary(&out),
            (Ending::TimedOut, Verdict::Failure, Cause::Deadline)
        );
        assert_eq!(
            out.outcome.chunks, 10,
            "one item per tick, up to the deadline"
        );
    }
}

#[test]
fn the_idle_timer_fires_over_always_ready_keep_alives() {
    let rig = Rig::new([Step::Item(Ok(TOKEN))]);
    rig.ticking(PING, SEC / 10);
    let options = ForwardOptions::default().idle_timeout(SEC);
    let mut fut = pin!(rig.forward_sse(SseRules::openai_chat(), options));
    let out = loop {
        if let Poll::Ready(out) = poll(fut.as_mut()) {
            break out;
        }
        assert!(rig.polls() < 100, "the idle timer never fired");
    };
    assert_eq!(
        summary(&out),
        (Ending::TimedOut, Verdict::Failure, Cause::IdleTimeout)
    );
    assert_eq!(out.outcome.chunks, 11, "a token, then pings for a second");
}

/// Two tokens to a client with room for one, under `options`: the second waits for
/// room while the clock moves a second.
fn to_a_slow_client(options: ForwardOptions) -> (Rig, Forwarded) {
    let rig = Rig::new([Step::Item(Ok(TOKEN)), Step::Item(Ok(TOKEN))]);
    rig.client.room.set(1);
    let out = rig.after(rig.forward_sse(SseRules::openai_chat(), options), SEC);
    (rig, out)
}

#[test]
fn a_deadline_that_passes_while_the_client_is_slow_blames_the_client() {
    let (rig, out) = to_a_slow_client(ForwardOptions::default().deadline(SEC));
    assert_eq!(
        summary(&out),
        (Ending::TimedOut, Verdict::Abandoned, Cause::ClientStalled)
    );
    assert_eq!(rig.recorded(), [Verdict::Abandoned]);
}

#[test]
fn a_deadline_while_the_client_is_slow_after_done_keeps_the_success() {
    let rig = Rig::new([Step::Item(Ok(DONE)), Step::Item(Ok(PING))]);
    rig.client.room.set(1);
    let options = ForwardOptions::default().deadline(SEC);
    let out = rig.after(rig.forward_sse(SseRules::openai_chat(), options), SEC);
    assert_eq!(
        summary(&out),
        (Ending::TimedOut, Verdict::Success, Cause::Done)
    );
}

#[test]
fn a_client_that_stops_reading_times_out_without_blaming_the_worker() {
    let rig = Rig::new([Step::Item(Ok(A)), Step::Item(Ok(B))]);
    rig.client.room.set(1);
    let options = ForwardOptions::default().send_timeout(SEC);
    let out = rig.after(rig.forward(options), SEC);
    assert_eq!(ending(&out), (Ending::TimedOut, Verdict::Abandoned));
    assert_eq!(*rig.client.got.borrow(), [Ok(A)]);
}

#[test]
fn drain_reads_the_rest_and_takes_the_upstream_verdict() {
    for (last, verdict) in [
        (Step::End, Verdict::Success),
        (Step::Item(Err(())), Verdict::Failure),
    ] {
        let rig = Rig::new([Step::Item(Ok(A))]);
        let options = ForwardOptions::default().drain_on_close(SEC);
        let mut fut = pin!(rig.forward(options));
        assert!(poll(fut.as_mut()).is_pending());
        rig.client.closed.set(true);
        assert!(poll(fut.as_mut()).is_pending());
        assert!(!rig.dropped());
        rig.push(Step::Item(Ok(B)));
        rig.push(last);
        let out = done(fut.as_mut());
        assert_eq!(ending(&out), (Ending::ClientGone, verdict));
        assert_eq!(
            *rig.client.got.borrow(),
            [Ok(A)],
            "drained items are discarded"
        );
        assert_eq!(rig.recorded(), [verdict]);
    }
}

#[test]
fn the_drain_limit_gives_up_as_cancel_would() {
    let rig = Rig::new([Step::Item(Ok(A))]);
    let options = ForwardOptions::default().drain_on_close(SEC);
    let mut fut = pin!(rig.forward(options));
    assert!(poll(fut.as_mut()).is_pending());
    rig.client.closed.set(true);
    assert!(poll(fut.as_mut()).is_pending());
    rig.clock.advance(SEC);
    let out = done(fut.as_mut());
    assert_eq!(ending(&out), (Ending::ClientGone, Verdict::Abandoned));
    assert!(rig.dropped());
}

#[test]
fn the_drain_limit_holds_against_an_always_ready_upstream() {
    let rig = Rig::new([Step::Item(Ok(A))]);
    let options = ForwardOptions::default().drain_on_close(SEC);
    let mut fut = pin!(rig.forward(options));
    assert!(poll(fut.as_mut()).is_pending());
    rig.client.closed.set(true);
    assert!(poll(fut.as_mut()).is_pending());
    let polls = rig.polls();
    for _ in 0..1_000 {
        rig.push(Step::Item(Ok(B)));
    }
    rig.clock.advance(SEC);
    let out = done(fut.as_mut());
    assert_eq!(ending(&out), (Ending::ClientGone, Verdict::Abandoned));
    assert_eq!(rig.polls(), polls, "nothing read past the limit");
}

#[test]
fn an_always_ready_upstream_yields_to_the_executor() {
    for options in [
        ForwardOptions::default(),
        ForwardOptions::default().drain_on_close(SEC),
    ] {
        let rig = Rig::new((0..200).map(|_| Step::Item(Ok(A))).chain([Step::End]));
        let mut fut = pin!(rig.forward(options));
        if options.on_close() != OnClose::Cancel {
            rig.client.closed.set(true);
        }
        let mut polls = 0;
        let out = loop {
            polls += 1;
            assert!(polls < 1_000, "never finished");
            if let Poll::Ready(out) = poll(fut.as_mut()) {
                break out;
            }
        };
        assert!(polls > 200 / YIELD_EVERY as usize, "{polls} polls");
        assert_eq!(out.outcome.verdict, Verdict::Success);
    }
}

#[test]
fn a_stalled_drain_hits_the_idle_timeout() {
    let rig = Rig::new([Step::Item(Ok(A))]);
    let options = ForwardOptions::default()
        .drain_on_close(SEC * 10)
        .idle_timeout(SEC);
    let mut fut = pin!(rig.forward(options));
    assert!(poll(fut.as_mut()).is_pending());
    rig.client.closed.set(true);
    assert!(poll(fut.as_mut()).is_pending());
    rig.clock.advance(SEC);
    let out = done(fut.as_mut());
    assert_eq!(ending(&out), (Ending::ClientGone, Verdict::Failure));
}

const PING: &[u8] = b":\n\n";
const TOKEN: &[u8] = b"data: {\"choices\":[]}\n\n";
const DONE: &[u8] = b"data: [DONE]\n\n";

#[test]
fn keep_alives_do_not_satisfy_the_first_token_timeout() {
    let rig = Rig::new([Step::Item(Ok(PING))]);
    let options = ForwardOptions::default().first_token_timeout(SEC);
    let mut fut = pin!(rig.forward_sse(SseRules::openai_chat(), options));
    assert!(poll(fut.as_mut()).is_pending());
    rig.clock.advance(SEC / 2);
    rig.push(Step::Item(Ok(PING)));
    assert!(poll(fut.as_mut()).is_pending());
    rig.clock.advance(SEC / 2);
    let out = done(fut.as_mut());
    assert_eq!(
        summary(&out),
        (Ending::TimedOut, Verdict::Failure, Cause::FirstTokenTimeout)
    );
    assert_eq!(
        *rig.client.got.borrow(),
        [Ok(PING), Ok(PING)],
        "pings still pass"
    );
}

#[test]
fn anthropic_pings_do_not_reset_the_idle_timer() {
    const EVENT: &[u8] = b"event: content_block_delta\ndata: {}\n\n";
    const PING: &[u8] = b"event: ping\ndata: {\"type\": \"ping\"}\n\n";
    let rig = Rig::new([Step::Item(Ok(EVENT))]);
    let options = ForwardOptions::default().idle_timeout(SEC);
    let mut fut = pin!(rig.forward_sse(SseRules::anthropic(), options));
    assert!(poll(fut.as_mut()).is_pending());
    rig.trickle(fut.as_mut(), PING, SEC / 4, 3);
    rig.clock.advance(SEC / 4);
    let out = done(fut.as_mut());
    assert_eq!(
        summary(&out),
        (Ending::TimedOut, Verdict::Failure, Cause::IdleTimeout)
    );
}

#[test]
fn progress_resets_the_idle_timer() {
    let rig = Rig::new([Step::Item(Ok(TOKEN))]);
    let options = ForwardOptions::default().idle_timeout(SEC);
    let mut fut = pin!(rig.forward_sse(SseRules::openai_chat(), options));
    assert!(poll(fut.as_mut()).is_pending());
    rig.trickle(fut.as_mut(), TOKEN, SEC * 3 / 4, 5);
    rig.push(Step::Item(Ok(DONE)));
    rig.push(Step::End);
    let out = done(fut.as_mut());
    assert_eq!(
        summary(&out),
        (Ending::Completed, Verdict::Success, Cause::Done)
    );
}

#[test]
fn a_timer_after_the_done_event_blames_nobody() {
    let rig = Rig::new([Step::Item(Ok(TOKEN)), Step::Item(Ok(DONE))]);
    let options = ForwardOptions::default()
        .idle_timeout(SEC)
        .deadline(SEC * 60);
    let mut fut = pin!(rig.forward_sse(SseRules::openai_chat(), options));
    // The worker said `[DONE]` and keeps the connection open.
    assert!(poll(fut.as_mut()).is_pending());
    rig.clock.advance(SEC);
    let out = done(fut.as_mut());
    assert_eq!(
        summary(&out),
        (Ending::Completed, Verdict::Success, Cause::Done)
    );
    assert!(rig.dropped());
    assert_eq!(rig.recorded(), [Verdict::Success]);
}

#[test]
fn the_deadline_fires_however_busy_the_worker_is() {
    let rig = Rig::new([Step::Item(Ok(TOKEN))]);
    let options = ForwardOptions::default()
        .idle_timeout(SEC)
        .deadline(SEC * 3);
    let mut fut = pin!(rig.forward_sse(SseRules::openai_chat(), options));
    assert!(poll(fut.as_mut()).is_pending());
    rig.trickle(fut.as_mut(), TOKEN, SEC / 2, 5);
    rig.clock.advance(SEC / 2);
    let out = done(fut.as_mut());
    assert_eq!(
        summary(&out),
        (Ending::TimedOut, Verdict::Failure, Cause::Deadline)
    );
    assert_eq!(out.outcome.chunks, 6);
}

#[test]
fn an_error_object_is_a_failure_even_when_done_follows() {
    const ERROR: &[u8] = b"data: {\"error\": {\"message\": \"boom\", \"code\": 500}}\n\n";
    let rig = Rig::new([
        Step::Item(Ok(TOKEN)),
        Step::Item(Ok(ERROR)),
        Step::Item(Ok(DONE)),
        Step::End,
    ]);
    let fut = pin!(rig.forward_sse(SseRules::openai_chat(), ForwardOptions::default()));
    let out = done(fut);
    assert_eq!(
        summary(&out),
        (Ending::Completed, Verdict::Failure, Cause::ErrorEvent)
    );
    assert_eq!(
        rig.client.got.borrow().len(),
        3,
        "every item reached the client"
    );
}

#[test]
fn an_end_before_done_is_truncated() {
    let rig = Rig::new([Step::Item(Ok(TOKEN)), Step::End]);
    let fut = pin!(rig.forward_sse(SseRules::openai_chat(), ForwardOptions::default()));
    let out = done(fut);
    assert_eq!(
        summary(&out),
        (Ending::Completed, Verdict::Failure, Cause::Truncated)
    );
}

#[test]
fn a_stalled_client_is_abandoned_with_its_own_cause() {
    let (_, out) = to_a_slow_client(ForwardOptions::default().send_timeout(SEC));
    assert_eq!(
        summary(&out),
        (Ending::TimedOut, Verdict::Abandoned, Cause::ClientStalled)
    );
}

#[test]
fn dropping_the_forward_future_drops_the_upstream() {
    let rig = Rig::new([Step::Item(Ok(A))]);
    {
        let mut fut = pin!(rig.forward(ForwardOptions::default()));
        assert!(poll(fut.as_mut()).is_pending());
        assert!(!rig.dropped());
    }
    assert!(rig.dropped());
    assert_eq!(rig.recorded(), [Verdict::Abandoned]);
}

#[test]
fn until_closed_runs_the_future_or_drops_it_when_the_client_leaves() {
    let rig = Rig::new([]);
    let ok = pin!(until_closed(&rig.client, async { 7 }));
    assert_eq!(done(ok), Ok(7));

    let dropped = Rc::new(Cell::new(false));
    struct Flag(Rc<Cell<bool>>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.set(true);
        }
    }
    let flag = Flag(dropped.clone());
    let mut fut = pin!(until_closed(&rig.client, async move {
        let _flag = flag;
        core::future::pending::<()>().await
    }));
    assert!(poll(fut.as_mut()).is_pending());
    assert!(!dropped.get());
    rig.client.closed.set(true);
    assert_eq!(done(fut.as_mut()), Err(ClientGone));
    assert!(dropped.get());
}
