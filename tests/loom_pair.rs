//! Model-checked concurrency of `sluice::pair` (loom): a prefill worker's failure on
//! one thread racing its decode worker's commit and end on another is decided one
//! way, and both sides see the same way: D is Abandoned `peer_failed` exactly when
//! its commit was refused or P's failure came before D's commit.
//!
//! `RUSTFLAGS="--cfg sluice_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom cargo test --release --test loom_pair`
#![cfg(sluice_loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use sluice::pair::PairLink;
use sluice::{Cause, Outcome, Recorder, Verdict};

#[test]
fn a_prefill_failure_racing_the_decode_commit_is_decided_once() {
    loom::model(|| {
        let link = PairLink::new();
        let d_cause = Arc::new(loom::sync::Mutex::new(None));
        let seen = d_cause.clone();
        let decode = link.decode(move |o: Outcome| {
            *seen.lock().expect("lock") = Some((o.verdict, o.cause));
        });
        let p_link = link.clone();
        let p_told_drop = Arc::new(AtomicBool::new(false));
        let told = p_told_drop.clone();
        let prefill = thread::spawn(move || {
            p_link.prefill(|_: Outcome| {}).record(Outcome::new(
                Verdict::Failure,
                Cause::Status,
                0,
                0,
            ));
            told.store(p_link.peer_failed(), Ordering::SeqCst);
        });
        let committed = link.commit_decode();
        if committed {
            decode.record(Outcome::new(Verdict::Success, Cause::Done, 3, 30));
        } else {
            // Refused: the driver drops D.
            decode.record(Outcome::new(Verdict::Abandoned, Cause::ClientLeft, 0, 0));
        }
        prefill.join().expect("no panic");
        let d = d_cause.lock().expect("lock").expect("D recorded");
        // P's side asked for D to be dropped iff D's commit was refused.
        assert_eq!(p_told_drop.load(Ordering::SeqCst), !committed);
        if committed {
            assert_eq!(d, (Verdict::Success, Cause::Done));
        } else {
            assert_eq!(d, (Verdict::Abandoned, Cause::PeerFailed));
        }
        assert!(!link.client_left());
    });
}
