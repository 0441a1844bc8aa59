//! Replays every committed fuzz corpus and crash file through the fuzz
//! targets' code on stable, so CI catches regressions without nightly; and
//! runs each target on a few thousand seeded random inputs.

use std::path::Path;

use rand::{Rng, SeedableRng};

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for dir in [root.join("corpus").join(target), root.join("crashes").join(target)] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let result = std::panic::catch_unwind(|| run(&data));
            assert!(result.is_ok(), "{} fails", path.display());
            count += 1;
        }
    }
    count
}

fn random(run: fn(&[u8]), n: usize, max_len: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..n {
        let len = rng.gen_range(0..max_len);
        let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        if std::panic::catch_unwind(|| run(&data)).is_err() {
            panic!("input {} fails", hex::encode(&data));
        }
    }
}

#[test]
fn frame_decoder_corpus_replays_clean() {
    let n = replay("frame_decoder", sigil_fuzzing::frame_decoder);
    assert!(n >= 5, "the committed corpus is missing ({n} files)");
    random(sigil_fuzzing::frame_decoder, 2_000, 600);
}

#[test]
fn payloads_corpus_replays_clean() {
    let n = replay("payloads", sigil_fuzzing::payloads);
    assert!(n >= 5, "the committed corpus is missing ({n} files)");
    random(sigil_fuzzing::payloads, 5_000, 300);
}

#[test]
fn session_corpus_replays_clean() {
    let n = replay("session", sigil_fuzzing::session);
    assert!(n >= 3, "the committed corpus is missing ({n} files)");
    random(sigil_fuzzing::session, 2_000, 2_000);
}

#[test]
fn the_reference_parser_agrees_on_the_examples() {
    use sigil_fuzzing::reference_parse;
    assert_eq!(reference_parse(b"INFO\n0\n\n", 10).0.len(), 1);
    assert!(reference_parse(b"INFO\n11\n\n", 10).1);
    assert!(reference_parse(b"info\n0\n\n", 10).1);
    assert!(!reference_parse(b"\r\n\nINFO\r\n0\r\n\r\n", 10).1);
}
