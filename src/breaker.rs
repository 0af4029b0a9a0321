//! Circuit breaking: a sans-io breaker, a shared handle and a per-worker set.
//!
//! Lands with the breaker issue.
