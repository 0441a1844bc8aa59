//! Every multi-lane path against the hmac and sha3 crates.

use super::*;
use hmac::{Hmac, Mac};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha3::Sha3_512;

/// Key lengths around the 72-byte block (longer keys are hashed first).
const KEY_LENS: [usize; 9] = [0, 1, 31, 32, 33, 71, 72, 73, 200];
/// Key counts around the 4- and 8-lane group sizes.
const KEY_COUNTS: [usize; 10] = [0, 1, 3, 4, 5, 7, 8, 9, 17, 200];

fn reference(key: &[u8], parts: &[&[u8]]) -> [u8; TAG_LEN] {
    let mut mac = Hmac::<Sha3_512>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

fn available() -> Vec<Impl> {
    Impl::ALL.into_iter().filter(|imp| imp.is_available()).collect()
}

/// `msg` cut at random places, with empty parts thrown in (and sometimes no parts at all when empty).
fn random_split<'a>(rng: &mut StdRng, msg: &'a [u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut rest = msg;
    while !rest.is_empty() {
        if rng.gen_ratio(1, 5) {
            parts.push(&rest[..0]);
        }
        // Mostly short parts so that blocks straddle parts, sometimes long ones so that whole blocks are
        // read in place.
        let max = if rng.gen_ratio(1, 3) { rest.len() } else { rest.len().min(20) };
        let (head, tail) = rest.split_at(rng.gen_range(1..=max));
        parts.push(head);
        rest = tail;
    }
    if rng.gen_bool(0.5) {
        parts.push(&msg[..0]);
    }
    parts
}

#[cfg(target_arch = "x86_64")]
#[test]
fn simd_permutations_match_keccak_crate() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut checked = Vec::new();
    for _ in 0..20 {
        let states: Vec<[u64; 25]> = (0..8).map(|_| std::array::from_fn(|_| rng.next_u64())).collect();
        let mut expected = states.clone();
        expected.iter_mut().for_each(keccak::f1600);
        for imp in available() {
            let got: Vec<[u64; 25]> = match imp {
                Impl::Scalar => continue,
                Impl::Avx2 => {
                    let mut got: [[u64; 25]; 4] = std::array::from_fn(|j| states[j]);
                    // SAFETY: `available()` detected AVX2.
                    unsafe { x86::avx2::permute_states(&mut got) };
                    got.to_vec()
                }
                Impl::Avx512 => {
                    let mut got: [[u64; 25]; 8] = std::array::from_fn(|j| states[j]);
                    // SAFETY: `available()` detected AVX-512F.
                    unsafe { x86::avx512::permute_states(&mut got) };
                    got.to_vec()
                }
            };
            let lanes = got.len();
            assert_eq!(got[..], expected[..lanes], "{imp:?}");
            checked.push(imp);
        }
    }
    eprintln!("permutations checked: {checked:?}");
}

#[test]
fn every_impl_matches_hmac_crate() {
    let mut rng = StdRng::seed_from_u64(2);
    let raw_keys: Vec<Vec<u8>> = (0..200)
        .map(|i| {
            let mut key = vec![0u8; KEY_LENS[i % KEY_LENS.len()]];
            rng.fill_bytes(&mut key);
            key
        })
        .collect();
    let keyed: Vec<KeyedStates> = raw_keys.iter().map(|k| KeyedStates::new(k)).collect();
    let imps = available();
    eprintln!("implementations checked: {imps:?}");
    for len in 0..=300 {
        let mut msg = vec![0u8; len];
        rng.fill_bytes(&mut msg);
        let parts = random_split(&mut rng, &msg);
        let expected: Vec<[u8; TAG_LEN]> = raw_keys.iter().map(|k| reference(k, &[&msg])).collect();
        for &count in &KEY_COUNTS {
            // A different window of the key pool each time, so that every key length meets every lane.
            let first = rng.gen_range(0..raw_keys.len());
            let order: Vec<usize> = (0..count).map(|i| (first + i) % raw_keys.len()).collect();
            let keys: Vec<&KeyedStates> = order.iter().map(|&i| &keyed[i]).collect();
            let want: Vec<[u8; TAG_LEN]> = order.iter().map(|&i| expected[i]).collect();
            for &imp in &imps {
                // Tags are appended after what is already in `out`.
                let mut out = vec![[0xAA; TAG_LEN]];
                sign_many_with(imp, &keys, &parts, &mut out).expect("available");
                assert_eq!(out[0], [0xAA; TAG_LEN], "{imp:?} overwrote earlier output");
                assert!(out[1..] == want[..], "{imp:?}: len {len}, {count} keys, parts {:?}", parts_lens(&parts));
            }
            let mut out = Vec::new();
            sign_many(&keys, &parts, &mut out);
            assert!(out == want, "sign_many: len {len}, {count} keys");
        }
        for (key, want) in keyed.iter().zip(&expected).take(KEY_LENS.len()) {
            assert_eq!(key.sign(&parts), *want, "sign: len {len}");
        }
    }
}

fn parts_lens(parts: &[&[u8]]) -> Vec<usize> {
    parts.iter().map(|p| p.len()).collect()
}

#[test]
fn known_frame_vector() {
    let key = [0x03u8; 32];
    let payload = [0x01u8; 64];
    let parts: [&[u8]; 2] = [b"CH_MSG\n", &payload];
    let mut whole = b"CH_MSG\n".to_vec();
    whole.extend_from_slice(&payload);
    let want = reference(&key, &[&whole]);

    let keyed = KeyedStates::new(&key);
    assert_eq!(keyed.sign(&parts), want);
    assert_eq!(keyed.sign(&[&whole]), want);
    // Nine copies: a full 8-lane group plus a short one, two full 4-lane groups plus a short one.
    let keys = vec![&keyed; 9];
    for imp in available() {
        let mut out = Vec::new();
        sign_many_with(imp, &keys, &parts, &mut out).expect("available");
        assert_eq!(out, vec![want; 9], "{imp:?}");
    }
}

#[test]
fn lanes_in_use_names_best_available() {
    let best = Impl::best();
    assert!(best.is_available());
    assert_eq!(lanes_in_use(), best.name());
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx512f") {
        assert_eq!(lanes_in_use(), "avx512");
    }
}

#[test]
fn unavailable_impl_is_rejected_without_output() {
    let keyed = KeyedStates::new(b"k");
    for imp in Impl::ALL.into_iter().filter(|imp| !imp.is_available()) {
        let mut out = Vec::new();
        assert_eq!(sign_many_with(imp, &[&keyed], &[b"m"], &mut out), Err(Unavailable(imp)));
        assert!(out.is_empty());
    }
}

#[test]
fn debug_does_not_print_key_material() {
    assert_eq!(format!("{:?}", KeyedStates::new(b"secret")), "KeyedStates(..)");
}
