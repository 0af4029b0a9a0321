//! A retry budget: retries (and hedges) may add at most a share of the recent
//! requests, plus a small floor, so that a pool in outage gets no retry storm.
