//! Fuzzes every command's and event's payload decoder; the body lives in
//! `sigil_fuzzing` so the corpus also replays on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sigil_fuzzing::payloads(data));
