//! Replays the committed `breaker_ops` fuzz seeds (`fuzz/seeds/breaker_ops/`) on stable,
//! so `cargo test` checks what the fuzz target checks.

use arbitrary::{Arbitrary, Unstructured};

#[path = "../fuzz/replay/breaker_ops.rs"]
mod breaker_ops;

#[test]
fn breaker_ops_seeds_keep_the_invariants() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/breaker_ops");
    let mut count = 0;
    let mut ops_seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("readable seed directory").path();
        let bytes = std::fs::read(&path).expect("readable seed");
        let ops = Vec::<breaker_ops::Op>::arbitrary_take_rest(Unstructured::new(&bytes))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        ops_seen += ops.len();
        breaker_ops::replay(&ops);
        count += 1;
    }
    assert!(count >= 10, "only {count} seeds");
    assert!(ops_seen >= 100, "the seeds hold only {ops_seen} operations");
}
