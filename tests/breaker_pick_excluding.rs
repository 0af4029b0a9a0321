//! `SharedBreakerSet::pick_excluding`: a retry or a hedge never goes to a worker the
//! request has tried, and is refused only when every other worker refuses.

use proptest::prelude::*;
use sluice::breaker::{Config, Pick, SharedBreakerSet, State};

proptest! {
    #[test]
    fn never_an_excluded_worker_and_refused_only_when_no_other_admits(
        n in 1usize..10,
        excluded in prop::collection::vec(0usize..12, 0..6),
        forced in prop::collection::vec(any::<bool>(), 10),
        least in any::<bool>(),
        picks in 1usize..6,
    ) {
        let set = SharedBreakerSet::new(n, Config::default());
        for (worker, &open) in forced.iter().take(n).enumerate() {
            if open {
                set.force_open(worker).expect("a known worker");
            }
        }
        let how = if least { Pick::LeastInFlight } else { Pick::RoundRobin };
        let admits = |w: usize| set.state(w) != State::ForcedOpen && !excluded.contains(&w);
        let any_admits = (0..n).any(admits);
        let mut held = Vec::new();
        for _ in 0..picks {
            match set.pick_excluding(how, &excluded) {
                Ok(permit) => {
                    prop_assert!(any_admits);
                    prop_assert!(!excluded.contains(&permit.worker()), "picked excluded {}", permit.worker());
                    prop_assert_ne!(set.state(permit.worker()), State::ForcedOpen);
                    held.push(permit);
                }
                Err(_) => prop_assert!(!any_admits, "refused although a worker admits"),
            }
        }
    }
}
