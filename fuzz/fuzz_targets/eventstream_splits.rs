#![no_main]

#[path = "../replay/eventstream_splits.rs"]
mod replay;

libfuzzer_sys::fuzz_target!(|input: replay::Input| replay::replay(&input));
