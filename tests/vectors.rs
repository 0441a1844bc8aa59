//! Frame tags against spec/vectors/hmac-sha3-512.json: expected values made by
//! Python's hmac + hashlib (an independent implementation), plus NIST's
//! published HMAC-SHA3-512 example; and the keys and frames of sessions bound
//! by server frame binding (PROTOCOL.md §7.10).

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha3::Sha3_512;
use sigil_proto::event::{Outbound, Ucnn, UserPresence};
use sigil_proto::wire::SecretKey;

/// The account id of the vectors (and of PROTOCOL.md §11).
const ID: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

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
struct ServerKey {
    name: String,
    key: String,
    cnn_nonce: String,
    cnn_timestamp: String,
    server_key: String,
}

#[derive(Deserialize)]
struct BoundFrame {
    name: String,
    key: String,
    cnn_nonce: String,
    cnn_timestamp: String,
    command: String,
    payload: String,
    tag: String,
    account_key_tag: String,
}

#[derive(Deserialize)]
struct Vectors {
    frame_vectors: Vec<FrameVector>,
    server_keys: Vec<ServerKey>,
    bound_frames: Vec<BoundFrame>,
    published: Vec<Published>,
}

/// A CNN envelope as the vectors write it (decimal strings).
fn envelope(nonce: &str, timestamp: &str) -> (u64, u64) {
    (nonce.parse().expect("a u64 nonce"), timestamp.parse().expect("a u64 timestamp"))
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

#[test]
fn server_keys_match_the_independent_derivation() {
    let v = load();
    assert!(v.server_keys.len() >= 3);
    for case in v.server_keys {
        let (nonce, timestamp) = envelope(&case.cnn_nonce, &case.cnn_timestamp);
        let key = SecretKey::from_hex(&case.key).expect("key");
        assert_eq!(key.server_key(nonce, timestamp).to_hex(), case.server_key, "{}", case.name);
    }
}

#[test]
fn bound_server_frames_verify_under_their_session_key_only() {
    let v = load();
    assert!(v.bound_frames.len() >= 3);
    for case in &v.bound_frames {
        let (nonce, timestamp) = envelope(&case.cnn_nonce, &case.cnn_timestamp);
        let account = SecretKey::from_hex(&case.key).expect("key");
        let session = account.server_key(nonce, timestamp).mac();
        let payload = hex::decode(&case.payload).unwrap();
        let tag = session.sign(case.command.as_bytes(), &payload);
        assert_eq!(hex::encode(tag), case.tag, "{}", case.name);
        assert_eq!(hex::encode(account.mac().sign(case.command.as_bytes(), &payload)), case.account_key_tag);
        // A reflected client frame carries the account key's tag: it fails here.
        let reflected = hex::decode(&case.account_key_tag).unwrap();
        assert!(!session.verify(case.command.as_bytes(), &payload, &reflected), "{}", case.name);
        // Every other bound session's frame fails too (replayed from another CNN).
        for other in v.bound_frames.iter().filter(|o| o.cnn_nonce != case.cnn_nonce && o.command == case.command) {
            let theirs = hex::decode(&other.tag).unwrap();
            assert!(!session.verify(case.command.as_bytes(), &payload, &theirs), "{} vs {}", case.name, other.name);
        }
    }
    // The own UCNN of the vector is what the server encodes for a bound session.
    let ucnn = &v.bound_frames[0];
    let own = Outbound::event(&Ucnn(UserPresence { id: ID.parse().unwrap(), name: "alice".into(), bind: true }));
    assert_eq!((own.command, hex::encode(&own.payload)), (ucnn.command.as_str(), ucnn.payload.clone()));
}
