//! Fuzz target bodies, shared by `fuzz/` (libFuzzer, nightly) and
//! `tests/fuzz_corpus.rs` (replays the committed corpus on stable), so a
//! crash found once stays a test.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::wire::{Frame, FrameCodec, FrameError};

/// `max_payload` the decoder target runs with.
pub const FUZZ_MAX_PAYLOAD: usize = 4096;

/// Decodes `chunks` fed one after another, then end of stream, with a codec
/// of the given `max_payload`. Returns the frames and, if decoding stopped on
/// a fault, whether it was `too_large` (true) or `bad_frame` (false).
pub fn decode_chunks<'a>(max_payload: usize, chunks: impl IntoIterator<Item = &'a [u8]>) -> (Vec<Frame>, Option<bool>) {
    let mut codec = FrameCodec::new(max_payload);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let kind = |e: FrameError| Some(matches!(e, FrameError::TooLarge { .. }));
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, kind(e)),
            }
        }
    }
    loop {
        match codec.decode_eof(&mut buf) {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return (frames, None),
            Err(e) => return (frames, kind(e)),
        }
    }
}

/// The frame decoder target. The first byte picks a chunk size, the rest is
/// the stream. Panics when decoding in chunks differs from decoding in one
/// piece (frames, or error kind), or a frame exceeds `max_payload`.
pub fn frame_decoder(data: &[u8]) {
    let Some((&pattern, stream)) = data.split_first() else { return };
    let whole = decode_chunks(FUZZ_MAX_PAYLOAD, [stream]);
    let size = usize::from(pattern % 17) + 1;
    let chunked = decode_chunks(FUZZ_MAX_PAYLOAD, stream.chunks(size));
    assert_eq!(whole, chunked, "decoding in chunks of {size} differs from one piece");
    assert!(whole.0.iter().all(|f| f.payload.len() <= FUZZ_MAX_PAYLOAD));
}
