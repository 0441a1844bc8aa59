//! Frame tags against spec/vectors/hmac-sha3-512.json: expected values made by
//! Python's hmac + hashlib (an independent implementation), plus NIST's
//! published HMAC-SHA3-512 example.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha3::Sha3_512;
use sigil_proto::wire::SecretKey;

#[derive(Deserialize)]
struct FrameVector {
    name: String,
    key: String,
    command: String,
    payload: String,
    tag: String,
}

#[derive(Deserialize)]
struct Published {
    key: String,
    message: String,
    tag: String,
}

#[derive(Deserialize)]
struct Vectors {
    frame_vectors: Vec<FrameVector>,
    published: Vec<Published>,
}

fn load() -> Vectors {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/spec/vectors/hmac-sha3-512.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("vectors file")).expect("vectors json")
}

#[test]
fn frame_tags_match_the_independent_implementation() {
    let v = load();
    assert!(v.frame_vectors.len() >= 5);
    for case in v.frame_vectors {
        let mac = SecretKey::from_hex(&case.key).expect("key").mac();
        let payload = hex::decode(&case.payload).unwrap();
        let tag = mac.sign(case.command.as_bytes(), &payload);
        assert_eq!(hex::encode(tag), case.tag, "{}", case.name);
        assert!(mac.verify(case.command.as_bytes(), &payload, &tag));
        // The command is inside the MAC: the same payload under another name fails.
        assert!(!mac.verify(b"OTHER", &payload, &tag), "{}", case.name);
    }
}

#[test]
fn the_mac_primitive_matches_nists_published_example() {
    for p in load().published {
        let mut mac = <Hmac<Sha3_512> as Mac>::new_from_slice(&hex::decode(&p.key).unwrap()).unwrap();
        mac.update(&hex::decode(&p.message).unwrap());
        assert_eq!(hex::encode(mac.finalize().into_bytes()), p.tag);
    }
}
