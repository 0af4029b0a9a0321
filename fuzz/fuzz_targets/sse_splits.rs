#![no_main]

#[path = "../replay/sse_splits.rs"]
mod replay;

libfuzzer_sys::fuzz_target!(|input: replay::Input| replay::replay(&input));
