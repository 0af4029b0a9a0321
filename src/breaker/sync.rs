//! The synchronisation primitives of the shared handle: std's, or loom's under the
//! `sluice_loom` cfg, under which loom model-checks every interleaving of the shared
//! handle's operations.

#[cfg(sluice_loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(sluice_loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};

#[cfg(not(sluice_loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
#[cfg(not(sluice_loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

/// Locks `mutex`, taking the data from a poisoned lock as it is: the breaker's core
/// is never left half-updated by a panic (no user code runs under the lock), and a
/// permit's `Drop` must never panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}
