#![no_main]

#[path = "../replay/breaker_ops.rs"]
mod replay;

libfuzzer_sys::fuzz_target!(|ops: Vec<replay::Op>| replay::replay(&ops));
