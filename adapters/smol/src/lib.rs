//! The smol adapter for [sluice](https://docs.rs/sluice).
//!
//! Forwarding lands with the adapters issue; this crate is a placeholder so the
//! workspace has its final shape.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
