//! Replays every committed fuzz corpus and crash file through the fuzz
//! targets' code on stable, so CI catches regressions without nightly.

use std::path::Path;

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

#[test]
fn frame_decoder_corpus_replays_clean() {
    let n = replay("frame_decoder", sigil::fuzzing::frame_decoder);
    assert!(n >= 5, "the committed corpus is missing ({n} files)");
}
