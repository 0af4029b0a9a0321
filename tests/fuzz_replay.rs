//! Replays the committed fuzz seeds (`fuzz/seeds/<target>/`) of the tracker, SSE,
//! NDJSON and AWS event-stream targets on stable, so `cargo test` exercises what the
//! fuzz targets check.

use arbitrary::{Arbitrary, Unstructured};

// The replays' items are `pub` for the fuzz crate, which uses them from its root.
#[allow(unreachable_pub, dead_code)]
#[path = "../fuzz/replay/eventstream_splits.rs"]
mod eventstream_splits;
#[allow(unreachable_pub, dead_code)]
#[path = "../fuzz/replay/ndjson_splits.rs"]
mod ndjson_splits;
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

#[test]
fn ndjson_splits_seeds_give_the_whole_input_answer() {
    let n = seeds("ndjson_splits", ndjson_splits::replay);
    assert!(n >= 8, "only {n} seeds");
}

#[test]
fn eventstream_splits_seeds_give_the_whole_input_answer() {
    let n = seeds("eventstream_splits", eventstream_splits::replay);
    assert!(n >= 8, "only {n} seeds");
}

/// A hand-made input per case the target must hold: clean frames, a corrupt one,
/// raw garbage, a frame cut short.
#[test]
fn eventstream_replay_holds_on_hand_made_inputs() {
    use eventstream_splits::{FrameSpec, Input, replay};
    let spec = |message_type, event_type, payload: &[u8]| FrameSpec {
        message_type,
        event_type,
        extra: vec![(0, 7, b"application/json".to_vec()), (4, 9, vec![])],
        payload: payload.to_vec(),
    };
    let frames = || {
        vec![
            spec(0, 0, b"{\"role\":\"assistant\"}"),
            spec(0, 1, b"{\"delta\":{\"text\":\"hi\"}}"),
            spec(0, 2, b"{\"stopReason\":\"end_turn\"}"),
            // Bedrock's usage (a payload starting with `U` is made into one, its
            // bytes picking numbers and layouts), and one written out.
            spec(0, 3, b"U\x05\x06\x00\x00"),
            spec(0, 3, b"U\x01\x03\x02\x01"),
            spec(0, 3, b"U\x04\x04\x00\x02"),
            spec(0, 3, b"{\"usage\":{\"inputTokens\":14,\"outputTokens\":6}}"),
            spec(1, 6, b"{\"message\":\"slow down\"}"),
        ]
    };
    for corrupt in [None, Some((5, 1)), Some((40, 0x80)), Some((1000, 4))] {
        for raw in [vec![], vec![0, 0, 0, 20], vec![0xFF; 30]] {
            replay(&Input {
                frames: frames(),
                corrupt,
                raw,
                cuts: vec![3, 17, 90],
                require_done: true,
            });
        }
    }
}

/// A hand-made NDJSON input whose lines report usage (tokens by index in the
/// replay's table): the replay checks each line's usage against serde_json's.
#[test]
fn ndjson_replay_holds_on_hand_made_usage_lines() {
    use ndjson_splits::{Input, replay};
    // {"done":true,"eval_count":7,"prompt_eval_count":3}
    let done = vec![0, 17, 7, 26, 7, 27, 1];
    // {"eval_count":18446744073709551616}: no count.
    let huge = vec![0, 28, 6, 29, 1];
    // {"message":{"content":"hi"},"eval_count":12}
    let later = vec![0, 20, 7, 28, 6, 22, 1];
    for rules in 0..3 {
        replay(&Input {
            rules,
            lines: vec![done.clone(), huge.clone(), later.clone()],
            raw: b"{\"eval_count\":9".to_vec(),
            cuts: vec![5, 40, 41, 77],
        });
    }
}
