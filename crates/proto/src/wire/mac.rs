//! HMAC-SHA3-512 signing and verification of frames (PROTOCOL.md §2).
//!
//! `tag = HMAC-SHA3-512(key, COMMAND || LF || PAYLOAD)`. The command name is inside
//! the MAC so that a signed payload cannot be replayed under another command.
//! Owns keys and tags, and the derivation of a bound session's server key
//! (PROTOCOL.md §7.10); knows nothing of sessions or sockets.

use subtle::ConstantTimeEq;

use super::codec::TAG_LEN;
use super::multimac::{self, KeyedStates};

/// Length of an account secret in bytes.
pub const KEY_LEN: usize = 32;

/// The label that starts the input of a server key derivation (PROTOCOL.md
/// §7.10). No frame's MAC input can start with it followed by a zero byte: a
/// command name has no space and no zero byte.
pub const SERVER_KEY_LABEL: &[u8] = b"sigil server v0";

/// An account's 32-byte secret. Users see it as 64 hex digits.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate() -> Self {
        use rand::RngCore;
        let mut bytes = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// Parses 64 hex digits (either case).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.len() != KEY_LEN * 2 {
            return Err(KeyError::Length(text.len()));
        }
        let mut bytes = [0u8; KEY_LEN];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| KeyError::NotHex)?;
        Ok(Self(bytes))
    }

    /// The key as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw bytes (the MAC key).
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// A pre-keyed MAC state for this key.
    pub fn mac(&self) -> FrameMac {
        FrameMac::new(self)
    }

    /// The key a server signs a bound session's frames with (server frame
    /// binding, PROTOCOL.md §7.10): the first 32 bytes of
    /// `HMAC-SHA3-512(key, "sigil server v0" || 0x00 || nonce || timestamp)`,
    /// `nonce` and `timestamp` being the session's `CNN` envelope as 8-byte
    /// big-endian integers. No client signs with it, and no other session has it.
    pub fn server_key(&self, cnn_nonce: u64, cnn_timestamp: u64) -> SecretKey {
        let tag =
            self.mac().keyed.sign(&[SERVER_KEY_LABEL, &[0], &cnn_nonce.to_be_bytes(), &cnn_timestamp.to_be_bytes()]);
        let mut bytes = [0u8; KEY_LEN];
        bytes.copy_from_slice(&tag[..KEY_LEN]);
        SecretKey(bytes)
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// A key that is not 64 hex digits.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Wrong number of characters.
    #[error("a key is 64 hex digits, got {0} characters")]
    Length(usize),
    /// A character that is not a hex digit.
    #[error("a key is 64 hex digits")]
    NotHex,
}

/// A pre-keyed HMAC-SHA3-512: the Keccak states after the key schedule, so a
/// tag costs only the message's permutations. [`sign_many`] signs one frame for
/// many recipients at once (multi-lane Keccak, see `multimac`).
#[derive(Clone)]
pub struct FrameMac {
    keyed: KeyedStates,
}

impl FrameMac {
    /// Keys a new MAC state.
    pub fn new(key: &SecretKey) -> Self {
        Self { keyed: KeyedStates::new(key.as_bytes()) }
    }

    /// The tag of a frame: HMAC over `COMMAND || LF || PAYLOAD` (PROTOCOL.md §2).
    pub fn sign(&self, command: &[u8], payload: &[u8]) -> [u8; TAG_LEN] {
        self.keyed.sign(&[command, b"\n", payload])
    }

    /// Checks a frame's tag in constant time.
    pub fn verify(&self, command: &[u8], payload: &[u8], tag: &[u8]) -> bool {
        bool::from(self.sign(command, payload).ct_eq(tag))
    }
}

/// Signs one frame for many recipients: `out` gets one tag per MAC, in order.
/// Uses 8 (AVX-512) or 4 (AVX2) Keccak lanes when the CPU has them.
pub fn sign_many(macs: &[&FrameMac], command: &[u8], payload: &[u8], out: &mut Vec<[u8; TAG_LEN]>) {
    let keys: Vec<&KeyedStates> = macs.iter().map(|m| &m.keyed).collect();
    multimac::sign_many(&keys, &[command, b"\n", payload], out);
}

impl std::fmt::Debug for FrameMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrameMac(..)")
    }
}
