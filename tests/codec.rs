//! FrameCodec properties (PROTOCOL.md §1): roundtrip, any split decodes the
//! same as one piece, arbitrary bytes never panic, and the grammar's edges.

use bytes::BytesMut;
use proptest::prelude::*;
use sigil_proto::wire::{encode_frame, Frame, FrameCodec, OutFrame};
use tokio_util::codec::Decoder;

const MAX: usize = 1024;

#[derive(Debug, Clone)]
struct Spec {
    command: String,
    signature: Option<[u8; 64]>,
    payload: Vec<u8>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        "[A-Z_]{1,16}",
        proptest::option::of(proptest::array::uniform32(any::<u8>())),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(command, sig, payload)| Spec {
            command,
            signature: sig.map(|h| {
                let mut t = [0u8; 64];
                t[..32].copy_from_slice(&h);
                t[32..].copy_from_slice(&h);
                t
            }),
            payload,
        })
}

fn encode(specs: &[Spec], crlf_blank: bool) -> Vec<u8> {
    let mut buf = BytesMut::new();
    for s in specs {
        if crlf_blank {
            buf.extend_from_slice(b"\r\n\n");
        }
        encode_frame(&OutFrame { command: &s.command, signature: s.signature.as_ref(), payload: &s.payload }, &mut buf);
    }
    buf.to_vec()
}

/// Decodes `chunks` fed one after another, then EOF; a fault as its wire code.
fn decode_chunks(chunks: &[&[u8]]) -> (Vec<Frame>, Option<String>) {
    let (frames, fault) = sigil_fuzzing::decode_chunks(MAX, chunks.iter().copied());
    (frames, fault.map(|too_large| if too_large { "too_large" } else { "bad_frame" }.to_owned()))
}

fn split_at<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut last = 0;
    for p in points {
        out.push(&bytes[last..p]);
        last = p;
    }
    out.push(&bytes[last..]);
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_roundtrips(specs in proptest::collection::vec(spec(), 1..5), blank in any::<bool>()) {
        let bytes = encode(&specs, blank);
        let (frames, err) = decode_chunks(&[&bytes]);
        prop_assert_eq!(err, None);
        prop_assert_eq!(frames.len(), specs.len());
        for (f, s) in frames.iter().zip(&specs) {
            prop_assert_eq!(f.command.as_str(), s.command.as_str());
            prop_assert_eq!(f.signature, s.signature);
            prop_assert_eq!(&f.payload[..], &s.payload[..]);
        }
    }

    #[test]
    fn any_split_decodes_like_one_piece(specs in proptest::collection::vec(spec(), 1..4), cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
        let bytes = encode(&specs, true);
        let whole = decode_chunks(&[&bytes]);
        let pieces = decode_chunks(&split_at(&bytes, &cuts));
        prop_assert_eq!(whole, pieces);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_split_the_same(bytes in proptest::collection::vec(any::<u8>(), 0..600), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let whole = decode_chunks(&[&bytes]);
        let pieces = decode_chunks(&split_at(&bytes, &cuts));
        prop_assert_eq!(whole, pieces);
    }

    #[test]
    fn near_valid_bytes_split_the_same(specs in proptest::collection::vec(spec(), 1..3), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let mut bytes = encode(&specs, false);
        for (at, b) in flips {
            let i = at % bytes.len();
            bytes[i] = b;
        }
        prop_assert_eq!(decode_chunks(&[&bytes]), decode_chunks(&split_at(&bytes, &cuts)));
    }
}

fn one(bytes: &[u8]) -> Result<Vec<Frame>, String> {
    match decode_chunks(&[bytes]) {
        (frames, None) => Ok(frames),
        (_, Some(e)) => Err(e),
    }
}

#[test]
fn grammar_edges() {
    // LEN 0 with an empty signature; CRLF everywhere; blank lines first.
    assert_eq!(one(b"INFO\n0\n\n").unwrap().len(), 1);
    assert_eq!(one(b"\n\r\n\nINFO\r\n0\r\n\r\n").unwrap().len(), 1);
    // Exactly 16 command bytes is fine, 17 is not.
    assert_eq!(one(b"ABCDEFGHIJKLMNOP\n0\n\n").unwrap().len(), 1);
    assert_eq!(one(b"ABCDEFGHIJKLMNOPQ\n0\n\n").unwrap_err(), "bad_frame");
    // LEN: exactly max is legal, one more is too large, leading zeros and signs are not numbers.
    let mut at_max = b"X\n1024\n\n".to_vec();
    at_max.extend(vec![0u8; 1024]);
    assert_eq!(one(&at_max).unwrap()[0].payload.len(), 1024);
    assert_eq!(one(b"X\n1025\n\n").unwrap_err(), "too_large");
    assert_eq!(one(b"X\n99999\n").unwrap_err(), "too_large");
    assert_eq!(one(b"X\n01\n\n").unwrap_err(), "bad_frame");
    assert_eq!(one(b"X\n00\n\n").unwrap_err(), "bad_frame");
    assert_eq!(one(b"X\n+1\n\n").unwrap_err(), "bad_frame");
    assert_eq!(one(b"X\n\n\n").unwrap_err(), "bad_frame");
    // Signature: empty or exactly 128 hex digits, either case.
    let upper = format!("X\n0\n{}\n", "AB".repeat(64));
    assert!(one(upper.as_bytes()).unwrap()[0].signature.is_some());
    assert_eq!(one(format!("X\n0\n{}\n", "ab".repeat(63)).as_bytes()).unwrap_err(), "bad_frame");
    assert_eq!(one(format!("X\n0\n{}\n", "ab".repeat(65)).as_bytes()).unwrap_err(), "bad_frame");
    // A CR that is not right before LF.
    assert_eq!(one(b"IN\rFO\n0\n\n").unwrap_err(), "bad_frame");
    // Lower case, spaces, NUL.
    assert_eq!(one(b"info\n0\n\n").unwrap_err(), "bad_frame");
    assert_eq!(one(b"IN FO\n0\n\n").unwrap_err(), "bad_frame");
    // EOF mid-frame is an error; EOF after blank lines is not.
    assert_eq!(one(b"INFO\n5\n\nab").unwrap_err(), "bad_frame");
    assert_eq!(one(b"INFO\n0\n\n\r\n\n").unwrap().len(), 1);
}

#[test]
fn a_header_is_rejected_as_soon_as_it_is_too_long_without_waiting_for_lf() {
    let mut codec = FrameCodec::new(MAX);
    let mut buf = BytesMut::from(&[b'A'; 17][..]);
    assert!(codec.decode(&mut buf).is_err());
    // An illegal byte is rejected at once, too.
    let mut codec = FrameCodec::new(MAX);
    let mut buf = BytesMut::from(&b"AB"[..]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    buf.extend_from_slice(b"c");
    assert!(codec.decode(&mut buf).is_err());
}

#[test]
fn memory_is_reserved_only_for_a_validated_len() {
    let mut codec = FrameCodec::new(1 << 20);
    let mut buf = BytesMut::from(&b"X\n1048576\n\n"[..]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert!(buf.capacity() >= 1 << 20, "the validated LEN is reserved once");
    let mut codec = FrameCodec::new(1 << 20);
    let mut buf = BytesMut::from(&b"X\n1048577\n"[..]);
    assert!(codec.decode(&mut buf).is_err());
}

#[test]
fn signatures_are_read_in_either_case_and_written_in_lowercase() {
    let tag: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37)).collect();
    let lower = hex::encode(&tag);
    for sig in [lower.clone(), lower.to_uppercase()] {
        let mut buf = BytesMut::from(format!("KALIVE\n2\n{sig}\n{{}}").as_bytes());
        let frame = FrameCodec::new(1024).decode(&mut buf).unwrap().unwrap();
        assert_eq!(frame.signature.map(|t| t.to_vec()), Some(tag.clone()), "{sig}");
    }
    let mut out = BytesMut::new();
    let tag: [u8; 64] = tag.try_into().unwrap();
    encode_frame(&OutFrame { command: "KALIVE", signature: Some(&tag), payload: b"{}" }, &mut out);
    assert_eq!(&out[..], format!("KALIVE\n2\n{lower}\n{{}}").as_bytes());
}
