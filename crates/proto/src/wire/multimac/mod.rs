//! HMAC-SHA3-512 of one message under many keys at once.
//!
//! A relay signs the same frame once per recipient, each under the recipient's own key. The message blocks
//! are therefore identical for every key and only the keyed starting states differ, so the tags of several
//! recipients are computed together with a multi-lane Keccak-f\[1600\]: lane `j` of state vector `k` holds word
//! `k` of recipient `j`'s state, and each message block is broadcast into every lane. Eight lanes with
//! AVX-512F, four with AVX2 (both detected at run time), one key at a time with the `keccak` crate otherwise.
//!
//! HMAC-SHA3-512 (RFC 2104 over SHA3-512): `H((K ^ opad) || H((K ^ ipad) || m))` with a 72-byte block. The
//! states after absorbing `K ^ ipad` and `K ^ opad` are computed once per key ([`KeyedStates`]), so a tag
//! costs `ceil((len + 1) / 72)` inner permutations plus one outer permutation.

use std::fmt;

pub use super::codec::TAG_LEN;

/// SHA3-512 rate (the HMAC block size) in bytes.
const RATE: usize = 72;
/// The rate in 64-bit lanes.
const RATE_WORDS: usize = RATE / 8;
/// Words of a SHA3-512 digest.
const DIGEST_WORDS: usize = TAG_LEN / 8;
/// Word 8 of the outer block: the 64-byte inner digest fills words 0..8, so the SHA-3 domain/padding byte
/// 0x06 starts word 8 and the final padding bit 0x80 ends the block in the same word.
const OUTER_PAD: u64 = 0x06 | (0x80 << 56);

/// Keccak-f\[1600\] round constants (iota), for the SIMD permutations.
#[cfg(target_arch = "x86_64")]
const RC: [u64; 24] = [
    0x0000_0000_0000_0001,
    0x0000_0000_0000_8082,
    0x8000_0000_0000_808a,
    0x8000_0000_8000_8000,
    0x0000_0000_0000_808b,
    0x0000_0000_8000_0001,
    0x8000_0000_8000_8081,
    0x8000_0000_0000_8009,
    0x0000_0000_0000_008a,
    0x0000_0000_0000_0088,
    0x0000_0000_8000_8009,
    0x0000_0000_8000_000a,
    0x0000_0000_8000_808b,
    0x8000_0000_0000_008b,
    0x8000_0000_0000_8089,
    0x8000_0000_0000_8003,
    0x8000_0000_0000_8002,
    0x8000_0000_0000_0080,
    0x0000_0000_0000_800a,
    0x8000_0000_8000_000a,
    0x8000_0000_8000_8081,
    0x8000_0000_0000_8080,
    0x0000_0000_8000_0001,
    0x8000_0000_8000_8008,
];

/// HMAC-SHA3-512 keyed states of one key: Keccak states after absorbing key^ipad and key^opad.
#[derive(Clone)]
pub struct KeyedStates {
    inner: [u64; 25],
    outer: [u64; 25],
}

impl KeyedStates {
    /// Pre-keys HMAC-SHA3-512 with `key` (any length; keys longer than the 72-byte block are hashed first, as
    /// RFC 2104 says).
    pub fn new(key: &[u8]) -> Self {
        let mut block = [0u8; RATE];
        if key.len() > RATE {
            let digest = words_to_tag(&sponge(&[0; 25], &[key]));
            block[..TAG_LEN].copy_from_slice(&digest);
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        Self { inner: keyed_state(&block, 0x36), outer: keyed_state(&block, 0x5c) }
    }

    /// One tag, scalar (for single frames): HMAC-SHA3-512 of the concatenation of `parts`.
    pub fn sign(&self, parts: &[&[u8]]) -> [u8; TAG_LEN] {
        let digest = sponge(&self.inner, parts);
        let mut state = self.outer;
        for (s, d) in state.iter_mut().zip(&digest) {
            *s ^= d;
        }
        state[DIGEST_WORDS] ^= OUTER_PAD;
        keccak::f1600(&mut state);
        let mut out = [0u64; DIGEST_WORDS];
        out.copy_from_slice(&state[..DIGEST_WORDS]);
        words_to_tag(&out)
    }
}

impl fmt::Debug for KeyedStates {
    // The states are as good as the key: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyedStates(..)")
    }
}

/// The Keccak state after absorbing one block `block ^ pad` (pad repeated in every byte) from zero.
fn keyed_state(block: &[u8; RATE], pad: u8) -> [u64; 25] {
    let mut state = [0u64; 25];
    let pad = u64::from_ne_bytes([pad; 8]);
    for (s, w) in state.iter_mut().zip(block_words(block)) {
        *s = w ^ pad;
    }
    keccak::f1600(&mut state);
    state
}

/// SHA3-512 sponge from `start` over the concatenation of `parts`; returns the 8 digest words.
fn sponge(start: &[u64; 25], parts: &[&[u8]]) -> [u64; DIGEST_WORDS] {
    let mut state = *start;
    for block in Blocks::new(parts) {
        for (s, w) in state.iter_mut().zip(&block) {
            *s ^= w;
        }
        keccak::f1600(&mut state);
    }
    let mut digest = [0u64; DIGEST_WORDS];
    digest.copy_from_slice(&state[..DIGEST_WORDS]);
    digest
}

/// Little-endian lanes of a block.
fn block_words(block: &[u8; RATE]) -> [u64; RATE_WORDS] {
    let mut words = [0u64; RATE_WORDS];
    for (w, bytes) in words.iter_mut().zip(block.as_chunks::<8>().0) {
        *w = u64::from_le_bytes(*bytes);
    }
    words
}

/// Digest words to tag bytes (little-endian lanes).
fn words_to_tag(words: &[u64; DIGEST_WORDS]) -> [u8; TAG_LEN] {
    let mut tag = [0u8; TAG_LEN];
    for (bytes, w) in tag.as_chunks_mut::<8>().0.iter_mut().zip(words) {
        *bytes = w.to_le_bytes();
    }
    tag
}

/// The SHA3-512-padded blocks of the concatenation of some parts, as lanes, built on the fly.
///
/// A block lying wholly inside one part is read in place; blocks that straddle parts, and the final padded
/// block, are assembled in a stack buffer. The message is never copied as a whole.
struct Blocks<'a> {
    /// Parts not yet started.
    rest: &'a [&'a [u8]],
    /// Unread bytes of the current part.
    cur: &'a [u8],
    /// The final (padded) block has been produced.
    done: bool,
}

impl<'a> Blocks<'a> {
    fn new(parts: &'a [&'a [u8]]) -> Self {
        Self { rest: parts, cur: &[], done: false }
    }

    /// Moves to the next part; false at the end of the message.
    fn advance(&mut self) -> bool {
        match self.rest.split_first() {
            Some((first, rest)) => {
                self.cur = first;
                self.rest = rest;
                true
            }
            None => false,
        }
    }
}

impl Iterator for Blocks<'_> {
    type Item = [u64; RATE_WORDS];

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        while self.cur.is_empty() && self.advance() {}
        if let Some((block, rest)) = self.cur.split_first_chunk::<RATE>() {
            self.cur = rest;
            return Some(block_words(block));
        }
        let mut buf = [0u8; RATE];
        let mut fill = 0;
        loop {
            let take = self.cur.len().min(RATE - fill);
            let (head, tail) = self.cur.split_at(take);
            buf[fill..fill + take].copy_from_slice(head);
            self.cur = tail;
            fill += take;
            if fill == RATE {
                return Some(block_words(&buf));
            }
            if !self.advance() {
                break;
            }
        }
        // The message ends inside this block (fill < RATE): SHA-3 padding 0x06 .. 0x80 (one byte 0x86 when
        // fill == RATE - 1).
        buf[fill] ^= 0x06;
        buf[RATE - 1] |= 0x80;
        self.done = true;
        Some(block_words(&buf))
    }
}

/// An implementation of [`sign_many`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Impl {
    /// One key at a time with the `keccak` crate's permutation. Always available.
    Scalar,
    /// Four keys at a time with AVX2 (x86_64 only).
    Avx2,
    /// Eight keys at a time with AVX-512F (x86_64 only).
    Avx512,
}

impl Impl {
    /// Every implementation, fastest last.
    pub const ALL: [Impl; 3] = [Impl::Scalar, Impl::Avx2, Impl::Avx512];

    /// Whether this CPU can run this implementation.
    pub fn is_available(self) -> bool {
        match self {
            Impl::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Impl::Avx2 => is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            Impl::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            Impl::Avx2 | Impl::Avx512 => false,
        }
    }

    /// The fastest implementation available on this CPU.
    pub fn best() -> Impl {
        Impl::ALL.into_iter().rev().find(|imp| imp.is_available()).unwrap_or(Impl::Scalar)
    }

    /// Short name: "scalar", "avx2" or "avx512".
    pub fn name(self) -> &'static str {
        match self {
            Impl::Scalar => "scalar",
            Impl::Avx2 => "avx2",
            Impl::Avx512 => "avx512",
        }
    }
}

/// [`sign_many_with`] was asked for an implementation this CPU cannot run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unavailable(pub Impl);

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the {} implementation is not available on this CPU", self.0.name())
    }
}

impl std::error::Error for Unavailable {}

/// Which implementation [`sign_many`] uses on this CPU ("avx512", "avx2", "scalar").
pub fn lanes_in_use() -> &'static str {
    Impl::best().name()
}

/// Signs the message `parts` concatenated under each key and appends the tags to `out`:
/// `out[start + i] = HMAC-SHA3-512(keys[i], concat(parts))`, where `start` is `out.len()` on entry.
///
/// The message is the same for all keys and is not copied. Uses 8 lanes (AVX-512F) or 4 lanes (AVX2) when
/// the CPU has them. Never panics (beyond allocation failure growing `out`).
pub fn sign_many(keys: &[&KeyedStates], parts: &[&[u8]], out: &mut Vec<[u8; TAG_LEN]>) {
    dispatch(Impl::best(), keys, parts, out);
}

/// [`sign_many`] with a chosen implementation (for tests and benchmarks); `Err` without touching `out` if
/// this CPU cannot run it.
pub fn sign_many_with(
    imp: Impl,
    keys: &[&KeyedStates],
    parts: &[&[u8]],
    out: &mut Vec<[u8; TAG_LEN]>,
) -> Result<(), Unavailable> {
    if !imp.is_available() {
        return Err(Unavailable(imp));
    }
    dispatch(imp, keys, parts, out);
    Ok(())
}

fn dispatch(imp: Impl, keys: &[&KeyedStates], parts: &[&[u8]], out: &mut Vec<[u8; TAG_LEN]>) {
    let start = out.len();
    out.resize(start + keys.len(), [0; TAG_LEN]);
    let out = &mut out[start..];
    match imp {
        #[cfg(target_arch = "x86_64")]
        Impl::Avx512 if is_x86_feature_detected!("avx512f") => {
            // SAFETY: this arm's guard detected AVX-512F on this CPU, the only target feature it needs.
            unsafe { x86::avx512::sign_all(keys, parts, out) }
        }
        #[cfg(target_arch = "x86_64")]
        Impl::Avx2 if is_x86_feature_detected!("avx2") => {
            // SAFETY: this arm's guard detected AVX2 on this CPU, the only target feature it needs.
            unsafe { x86::avx2::sign_all(keys, parts, out) }
        }
        // Scalar, or a SIMD implementation this CPU lacks (public callers are turned away before this): the
        // scalar path gives the same tags.
        _ => sign_scalar(keys, parts, out),
    }
}

/// One key at a time; `out` has one slot per key.
fn sign_scalar(keys: &[&KeyedStates], parts: &[&[u8]], out: &mut [[u8; TAG_LEN]]) {
    for (key, tag) in keys.iter().zip(out) {
        *tag = key.sign(parts);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;
