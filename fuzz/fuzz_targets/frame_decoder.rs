//! Fuzzes `FrameCodec` with arbitrary bytes fed in arbitrary chunks; the body
//! lives in `sigil_fuzzing` so the corpus also replays on stable.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| sigil_fuzzing::frame_decoder(data));
