//! Fuzzes `FrameCodec` with arbitrary bytes fed in arbitrary chunks; the body
//! lives in `sigil::fuzzing` so the corpus also replays on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sigil::fuzzing::frame_decoder(data));
