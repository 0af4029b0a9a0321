//! A recorder runs in `Drop`, possibly while the thread is already unwinding; a
//! recorder that panics then would abort the process (a panic during a panic). With
//! `std`, sluice catches it there. Each test here would kill the test binary if not.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

use futures_util::stream;
use sluice::{Outcome, RecordGuard, TrackedStream};

/// Keeps the expected panics out of the test output.
fn quiet() {
    static QUIET: Once = Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}

#[test]
fn a_panicking_recorder_in_a_drop_during_unwinding_does_not_abort() {
    quiet();
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let unwound = catch_unwind(AssertUnwindSafe(|| {
        let upstream = stream::iter([Ok::<_, ()>(&b"data: x\n\n"[..])]);
        let _tracked = TrackedStream::new(upstream, |_: Outcome| {
            CALLS.fetch_add(1, Ordering::SeqCst);
            panic!("the recorder panics");
        });
        panic!("the handler panics");
    }));
    assert!(unwound.is_err(), "the first panic goes on unwinding");
    assert_eq!(
        CALLS.load(Ordering::SeqCst),
        1,
        "the recorder was called once"
    );
}

#[test]
fn a_guard_dropped_during_unwinding_records_and_survives_its_recorder() {
    quiet();
    static CALLS: AtomicU32 = AtomicU32::new(0);
    let unwound = catch_unwind(AssertUnwindSafe(|| {
        let _guard = RecordGuard::new(|_: Outcome| {
            CALLS.fetch_add(1, Ordering::SeqCst);
            panic!("the recorder panics");
        });
        panic!("the handler panics");
    }));
    assert!(unwound.is_err());
    assert_eq!(CALLS.load(Ordering::SeqCst), 1);
}

#[test]
fn outside_unwinding_a_recorder_panic_reaches_the_caller() {
    quiet();
    let upstream = stream::iter([Ok::<_, ()>(&b"x"[..])]);
    let tracked = TrackedStream::new(upstream, |_: Outcome| panic!("the recorder panics"));
    assert!(catch_unwind(AssertUnwindSafe(move || drop(tracked))).is_err());
}
