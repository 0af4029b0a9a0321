//! Replays the committed fuzz seeds (`fuzz/seeds/<target>/`) on stable, so `cargo test`
//! exercises what the fuzz targets check.

use arbitrary::{Arbitrary, Unstructured};

// The replays' items are `pub` for the fuzz crate, which uses them from its root.
#[allow(unreachable_pub)]
#[path = "../fuzz/replay/sse_splits.rs"]
mod sse_splits;
#[allow(unreachable_pub)]
#[path = "../fuzz/replay/tracker_events.rs"]
mod tracker_events;

/// Decodes every seed of `target` as `T` and hands it to `check`; returns how many.
fn seeds<T: for<'a> Arbitrary<'a>>(target: &str, check: impl Fn(&T)) -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("readable seed directory").path();
        let bytes = std::fs::read(&path).expect("readable seed");
        let input = T::arbitrary_take_rest(Unstructured::new(&bytes)).expect("seed decodes");
        check(&input);
        count += 1;
    }
    count
}

#[test]
fn tracker_events_seeds_agree_with_the_model() {
    // Under `cargo test` scripted panics are replayed too (libfuzzer aborts on them).
    let n = seeds("tracker_events", |s: &tracker_events::Script| {
        tracker_events::replay(s, true)
    });
    assert!(n >= 10, "only {n} seeds");
}

#[test]
fn sse_splits_seeds_give_the_whole_input_answer() {
    let n = seeds("sse_splits", sse_splits::replay);
    assert!(n >= 10, "only {n} seeds");
}
