//! Runtime-agnostic forwarding from a tracked upstream to a client.
//!
//! Lands with the adapters issue.
