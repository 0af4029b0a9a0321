//! Soak: 2,000 streams over loopback through the `/forward` gateway, about 30% of
//! the clients leaving at a random point and 10% of the streams failing (seeded).
//! The ledger of verdicts must equal the ground truth exactly, per stream, with no
//! verdict lost or doubled, and no task may be left alive afterwards.

mod common;

use std::collections::HashMap;

use common::{Rig, reader, within};
use futures_util::StreamExt;
use sluice::Verdict;
use sluice::forward::ForwardOptions;
use sluice_test_support::client::BodyEnd;

const STREAMS: u64 = 2_000;
const CONCURRENCY: usize = 32;
const SEED: u64 = 0x5eed_2024;

/// splitmix64: a tiny seeded generator, enough for test plans.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What one stream is meant to do.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// The worker sends `tokens` and `[DONE]`; the client reads it all.
    Success { tokens: u64 },
    /// The worker breaks the body after `at` of `tokens`; the client reads it all.
    Fail { tokens: u64, at: u64 },
    /// The worker sends `tokens` then stalls (no end); the client leaves after
    /// reading `after` of them.
    Leave { tokens: u64, after: u64 },
}

impl Plan {
    fn verdict(self) -> Verdict {
        match self {
            Plan::Success { .. } => Verdict::Success,
            Plan::Fail { .. } => Verdict::Failure,
            Plan::Leave { .. } => Verdict::Abandoned,
        }
    }

    fn query(self, id: u64) -> String {
        match self {
            Plan::Success { tokens } => format!("id={id}&tokens={tokens}"),
            Plan::Fail { tokens, at } => {
                // Paced, so that most of them fail mid-stream, after the head.
                format!("id={id}&tokens={tokens}&fail_after={at}&pace_ms=1")
            }
            Plan::Leave { tokens, .. } => format!("id={id}&tokens={tokens}&stall_after={tokens}"),
        }
    }
}

fn plans() -> Vec<Plan> {
    let mut rng = Rng(SEED);
    (0..STREAMS)
        .map(|_| {
            let tokens = 1 + rng.below(8);
            match rng.below(100) {
                0..30 => Plan::Leave {
                    tokens,
                    after: rng.below(tokens + 1),
                },
                30..40 => Plan::Fail {
                    tokens,
                    at: rng.below(tokens),
                },
                _ => Plan::Success { tokens },
            }
        })
        .collect()
}

async fn client(rig: &Rig, id: u64, plan: Plan) {
    // A worker that breaks its answer early can fail the whole request: the
    // gateway answers 502, or hyper drops the connection with the gateway's head
    // still unflushed. Either way the stream is a Failure.
    let early_failure = |what: String| {
        assert!(
            matches!(plan, Plan::Fail { .. }),
            "{id}: {plan:?} got {what}"
        );
    };
    let response = match rig.try_get("forward", &plan.query(id)).await {
        Ok(response) if response.status() == 200 => response,
        Ok(response) => return early_failure(response.status().to_string()),
        Err(e) => return early_failure(e.to_string()),
    };
    let mut body = reader(response);
    match plan {
        Plan::Success { tokens } => {
            assert_eq!(body.read_to_end().await, BodyEnd::Clean, "{id}");
            assert_eq!((body.tokens() as u64, body.done()), (tokens, true), "{id}");
        }
        Plan::Fail { at, .. } => {
            assert_eq!(body.read_to_end().await, BodyEnd::Error, "{id}");
            // hyper drops what it had not flushed when a body errs.
            assert!(body.tokens() as u64 <= at, "{id}");
        }
        Plan::Leave { after, .. } => {
            body.until(|b| b.tokens() as u64 >= after)
                .await
                .expect("tokens before leaving");
            drop(body);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_two_thousand_streams() {
    let plans = plans();
    let mut truth = [0u64; 3];
    for plan in &plans {
        truth[plan.verdict() as usize] += 1;
    }
    let rig = Rig::start(ForwardOptions::default()).await;
    futures_util::stream::iter(plans.iter().enumerate())
        .for_each_concurrent(CONCURRENCY, |(id, plan)| client(&rig, id as u64, *plan))
        .await;

    // Every request's verdict and every relay task's report, exactly once.
    let mut ledger: HashMap<u64, Verdict> = HashMap::new();
    let mut counts = [0u64; 3];
    for _ in 0..STREAMS {
        let (id, outcome) = rig.gateway.verdict().await;
        assert!(
            ledger.insert(id, outcome.verdict).is_none(),
            "stream {id} recorded twice"
        );
        counts[outcome.verdict as usize] += 1;
    }
    let mut reported = vec![false; STREAMS as usize];
    for _ in 0..STREAMS {
        let (id, _) = rig.gateway.report().await;
        assert!(
            !std::mem::replace(&mut reported[id as usize], true),
            "stream {id} reported twice"
        );
    }
    // Every relay task has reported, after its upstream recorded: no verdict can
    // still be on its way.
    rig.gateway.no_more_verdicts();
    for (id, plan) in plans.iter().enumerate() {
        assert_eq!(
            ledger[&(id as u64)],
            plan.verdict(),
            "stream {id}: {plan:?}"
        );
    }
    println!(
        "soak: {STREAMS} streams; ledger success/failure/abandoned = {}/{}/{}",
        counts[0], counts[1], counts[2]
    );
    assert_eq!(
        counts, truth,
        "ledger (success, failure, abandoned) vs ground truth"
    );

    // Shut everything down, then no task may be left: not a relay task, not a
    // connection task, not a server.
    rig.shutdown().await;
    let metrics = tokio::runtime::Handle::current().metrics();
    within("the last tasks to be released", async {
        // A finished task is released right after it wakes whoever awaited it.
        while metrics.num_alive_tasks() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(metrics.num_alive_tasks(), 0);
}
