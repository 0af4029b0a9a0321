//! The atomic word of a shared breaker: its layout, as plain `u64` functions.
//!
//! The word packs `mode` (2 bits), a Closed count (30 bits) and the generation (32
//! bits). In the modes `CLOSED`, `DISABLED` and `FORCED` the word is authoritative
//! for what the hot path needs; in `SLOW` the core behind the lock is (how the word
//! is claimed and published: [`cell`](super::cell)).
//!
//! The Closed count is one of two things:
//!
//! * Without a rate rule: the consecutive failures (the core's copy is stale while
//!   the word is Closed). A success clears it, a failure below the threshold adds
//!   one; the failure that reaches the threshold goes to the core.
//! * With a rate rule: successes counted but not yet pushed into the core's window
//!   (*pending*), and two flags the core computed when it published the word. `NOOP`:
//!   the count window is full of successes and no failure is running, so a success
//!   changes nothing (a load, no write). `SAFE`: no run of successes can fire the
//!   rule (see `RateWindow::successes_cannot_fire`), so a success adds one to pending
//!   with a compare-and-swap, without reading the clock. The next slow operation
//!   folds them into the core at its own reading, all at once, which is the same as
//!   pushing them one by one then (`SAFE` holds at any later time too: failures only
//!   leave a window). Failures, and successes without `SAFE`, go to the core.

// The word: mode in bits 0..2, a Closed count in 2..32, generation in 32..64.
pub(super) const SLOW: u64 = 0;
pub(super) const CLOSED: u64 = 1;
pub(super) const DISABLED: u64 = 2;
pub(super) const FORCED: u64 = 3;
const MODE_MASK: u64 = 0b11;
pub(super) const FAILS_SHIFT: u32 = 2;
/// The largest failure count the word holds; larger thresholds run on the slow path.
pub(super) const FAILS_MAX: u32 = (1 << 30) - 1;
const FAILS_MASK: u64 = (FAILS_MAX as u64) << FAILS_SHIFT;

// With a rate rule, a Closed word's count is: successes counted in the word and not
// yet in the core (bits 2..30), SAFE (bit 30: no run of successes can open the
// breaker, so they may be counted here) and NOOP (bit 31: one more success leaves the
// core as it is, so it need not be counted at all).
pub(super) const PENDING_MAX: u64 = (1 << 28) - 1;
const PENDING_MASK: u64 = PENDING_MAX << FAILS_SHIFT;
pub(super) const SAFE: u64 = 1 << 30;
pub(super) const NOOP: u64 = 1 << 31;

pub(super) const fn word(mode: u64, generation: u32, failures: u32) -> u64 {
    ((generation as u64) << 32) | ((failures as u64) << FAILS_SHIFT) | mode
}
pub(super) const fn mode(w: u64) -> u64 {
    w & MODE_MASK
}
pub(super) const fn generation(w: u64) -> u32 {
    (w >> 32) as u32
}
pub(super) const fn failures(w: u64) -> u32 {
    ((w & FAILS_MASK) >> FAILS_SHIFT) as u32
}
pub(super) const fn pending(w: u64) -> u64 {
    (w & PENDING_MASK) >> FAILS_SHIFT
}
