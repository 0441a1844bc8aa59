//! Fuzzes the session and relay state machines with arbitrary scripts of
//! well-signed commands; the body lives in `sigil_fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sigil_fuzzing::session(data));
