#![no_main]

#[path = "../replay/tracker_events.rs"]
mod replay;

// libfuzzer-sys aborts on any panic, so scripted panics are replayed only under
// `cargo test` (tests/fuzz_replay.rs).
libfuzzer_sys::fuzz_target!(|script: replay::Script| replay::replay(&script, false));
