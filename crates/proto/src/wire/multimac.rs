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
mod x86 {
    //! Multi-lane Keccak-f\[1600\] and HMAC for AVX2 and AVX-512F.
    //!
    //! The permutation and the group driver are written once (`lane_functions!`) against a few per-width
    //! helpers that each width's module defines with its own `#[target_feature]`: `xor`, `xor5`, `theta_d`,
    //! `theta_apply`, `rol`, `chi`, `splat`, `zero`, `loadu`, `storeu` and `transpose` (of a LANES x LANES
    //! block of words).

    use super::{sign_scalar, Blocks, KeyedStates, DIGEST_WORDS, OUTER_PAD, RC, TAG_LEN};

    /// `b[dst] = rol(a[src] ^ D[src % 5], rot)`: theta's column effect, then rho's rotation (pi is the
    /// position in the caller's array).
    macro_rules! rho {
        ($a:ident, $d:ident, $src:literal, $rot:literal) => {
            rol::<$rot, { 64 - $rot }>(theta_apply($a[$src], $d[$src % 5]))
        };
    }

    /// Generates `permute` (Keccak-f\[1600\] on every lane), the state transposes and `sign_all` for one
    /// vector width, given `$vec`, `LANES` and `MIN_GROUP` and the helpers above in scope.
    macro_rules! lane_functions {
        ($feature:literal, $vec:ty) => {
            /// Keccak-f\[1600\] on each lane; the state is 25 vectors, vector `k` holding word `k` of each lane.
            #[target_feature(enable = $feature)]
            fn permute(a: &mut [$vec; 25]) {
                for &rc in RC.iter() {
                    // theta: column parities, then D[x] = C[x-1] ^ rol(C[x+1], 1), applied inside rho! below.
                    let c = [
                        xor5(a[0], a[5], a[10], a[15], a[20]),
                        xor5(a[1], a[6], a[11], a[16], a[21]),
                        xor5(a[2], a[7], a[12], a[17], a[22]),
                        xor5(a[3], a[8], a[13], a[18], a[23]),
                        xor5(a[4], a[9], a[14], a[19], a[24]),
                    ];
                    let d = [
                        theta_d(c[4], c[1]),
                        theta_d(c[0], c[2]),
                        theta_d(c[1], c[3]),
                        theta_d(c[2], c[4]),
                        theta_d(c[3], c[0]),
                    ];
                    // rho and pi: b[y + 5 * ((2x + 3y) % 5)] = rol(a[x + 5y] ^ D[x], r[x][y]).
                    let b = [
                        theta_apply(a[0], d[0]),
                        rho!(a, d, 6, 44),
                        rho!(a, d, 12, 43),
                        rho!(a, d, 18, 21),
                        rho!(a, d, 24, 14),
                        rho!(a, d, 3, 28),
                        rho!(a, d, 9, 20),
                        rho!(a, d, 10, 3),
                        rho!(a, d, 16, 45),
                        rho!(a, d, 22, 61),
                        rho!(a, d, 1, 1),
                        rho!(a, d, 7, 6),
                        rho!(a, d, 13, 25),
                        rho!(a, d, 19, 8),
                        rho!(a, d, 20, 18),
                        rho!(a, d, 4, 27),
                        rho!(a, d, 5, 36),
                        rho!(a, d, 11, 10),
                        rho!(a, d, 17, 15),
                        rho!(a, d, 23, 56),
                        rho!(a, d, 2, 62),
                        rho!(a, d, 8, 55),
                        rho!(a, d, 14, 39),
                        rho!(a, d, 15, 41),
                        rho!(a, d, 21, 2),
                    ];
                    // chi: a[x, y] = b[x, y] ^ (!b[x + 1, y] & b[x + 2, y]).
                    *a = [
                        chi(b[0], b[1], b[2]),
                        chi(b[1], b[2], b[3]),
                        chi(b[2], b[3], b[4]),
                        chi(b[3], b[4], b[0]),
                        chi(b[4], b[0], b[1]),
                        chi(b[5], b[6], b[7]),
                        chi(b[6], b[7], b[8]),
                        chi(b[7], b[8], b[9]),
                        chi(b[8], b[9], b[5]),
                        chi(b[9], b[5], b[6]),
                        chi(b[10], b[11], b[12]),
                        chi(b[11], b[12], b[13]),
                        chi(b[12], b[13], b[14]),
                        chi(b[13], b[14], b[10]),
                        chi(b[14], b[10], b[11]),
                        chi(b[15], b[16], b[17]),
                        chi(b[16], b[17], b[18]),
                        chi(b[17], b[18], b[19]),
                        chi(b[18], b[19], b[15]),
                        chi(b[19], b[15], b[16]),
                        chi(b[20], b[21], b[22]),
                        chi(b[21], b[22], b[23]),
                        chi(b[22], b[23], b[24]),
                        chi(b[23], b[24], b[20]),
                        chi(b[24], b[20], b[21]),
                    ];
                    // iota
                    a[0] = xor(a[0], splat(rc));
                }
            }

            /// Words `first..first + LANES` of each state, one vector per state.
            #[target_feature(enable = $feature)]
            #[inline]
            fn load_block(states: &[&[u64; 25]; LANES], first: usize) -> [$vec; LANES] {
                let mut rows = [zero(); LANES];
                for (row, state) in rows.iter_mut().zip(states) {
                    if let Some(words) = state[first..].first_chunk::<LANES>() {
                        *row = loadu(words);
                    }
                }
                rows
            }

            /// Key-major states to word-major vectors (vector `k`, lane `j` = word `k` of `states[j]`) by
            /// in-register transposes of LANES x LANES blocks; word 24 is the last row of the transpose of
            /// words `25 - LANES..25`.
            #[target_feature(enable = $feature)]
            #[inline]
            fn load_states(states: &[&[u64; 25]; LANES]) -> [$vec; 25] {
                let mut v = [zero(); 25];
                for (i, rows) in v.chunks_exact_mut(LANES).enumerate() {
                    rows.copy_from_slice(&transpose(load_block(states, i * LANES)));
                }
                v[24] = transpose(load_block(states, 25 - LANES))[LANES - 1];
                v
            }

            /// Each lane's digest (vectors 0..8) as a tag, transposed back in registers, for the first
            /// `out.len()` lanes.
            #[target_feature(enable = $feature)]
            #[inline]
            fn store_tags(v: &[$vec; 25], out: &mut [[u8; TAG_LEN]]) {
                for (i, rows) in v[..DIGEST_WORDS].chunks_exact(LANES).enumerate() {
                    let mut block = [zero(); LANES];
                    block.copy_from_slice(rows);
                    for (tag, words) in out.iter_mut().zip(transpose(block)) {
                        if let Some(bytes) = tag[i * LANES * 8..].first_chunk_mut::<{ LANES * 8 }>() {
                            storeu(bytes, words);
                        }
                    }
                }
            }

            /// Tags of up to LANES keys (`out` has one slot per key): the inner sponge in all lanes with
            /// every message block broadcast, then the outer block from each lane's own digest, which is
            /// already in the right lane.
            #[target_feature(enable = $feature)]
            fn sign_group(keys: &[&KeyedStates], parts: &[&[u8]], out: &mut [[u8; TAG_LEN]]) {
                let Some(first) = keys.first() else { return };
                // Lanes past the last key repeat the first key; their tags are dropped.
                let mut inner_states = [&first.inner; LANES];
                let mut outer_states = [&first.outer; LANES];
                for ((inner, outer), key) in inner_states.iter_mut().zip(&mut outer_states).zip(keys) {
                    *inner = &key.inner;
                    *outer = &key.outer;
                }
                let mut inner = load_states(&inner_states);
                for block in Blocks::new(parts) {
                    for (v, &w) in inner.iter_mut().zip(&block) {
                        *v = xor(*v, splat(w));
                    }
                    permute(&mut inner);
                }
                let mut outer = load_states(&outer_states);
                for (v, &d) in outer.iter_mut().zip(&inner[..DIGEST_WORDS]) {
                    *v = xor(*v, d);
                }
                outer[DIGEST_WORDS] = xor(outer[DIGEST_WORDS], splat(OUTER_PAD));
                permute(&mut outer);
                store_tags(&outer, out);
            }

            /// Test hook: runs LANES scalar states through the transposes and the vector permutation.
            #[cfg(test)]
            #[target_feature(enable = $feature)]
            pub(in super::super) fn permute_states(states: &mut [[u64; 25]; LANES]) {
                let mut v = load_states(&states.each_ref());
                permute(&mut v);
                for (k, v) in v.iter().enumerate() {
                    let mut bytes = [0u8; LANES * 8];
                    storeu(&mut bytes, *v);
                    for (state, word) in states.iter_mut().zip(bytes.as_chunks::<8>().0) {
                        state[k] = u64::from_le_bytes(*word);
                    }
                }
            }

            /// All tags; `out` has one slot per key. Full groups run in all lanes; a short last group runs in
            /// SIMD (idle lanes wasted) when that beats the scalar permutation, else scalar.
            #[target_feature(enable = $feature)]
            pub(in super::super) fn sign_all(keys: &[&KeyedStates], parts: &[&[u8]], out: &mut [[u8; TAG_LEN]]) {
                for (keys, out) in keys.chunks(LANES).zip(out.chunks_mut(LANES)) {
                    if keys.len() >= MIN_GROUP {
                        sign_group(keys, parts, out);
                    } else {
                        sign_scalar(keys, parts, out);
                    }
                }
            }
        };
    }

    pub(super) mod avx512 {
        use super::{sign_scalar, Blocks, KeyedStates, DIGEST_WORDS, OUTER_PAD, RC, TAG_LEN};
        use core::arch::x86_64::*;

        const LANES: usize = 8;
        /// One 8-lane permutation costs about 0.9 scalar ones (measured on an AVX-512 EPYC), so even two
        /// keys are worth a group.
        const MIN_GROUP: usize = 2;

        #[target_feature(enable = "avx512f")]
        #[inline]
        fn xor(a: __m512i, b: __m512i) -> __m512i {
            _mm512_xor_si512(a, b)
        }

        /// 0x96 is the truth table of a ^ b ^ c.
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn xor5(a: __m512i, b: __m512i, c: __m512i, d: __m512i, e: __m512i) -> __m512i {
            _mm512_ternarylogic_epi64::<0x96>(_mm512_ternarylogic_epi64::<0x96>(a, b, c), d, e)
        }

        /// D[x] kept as its two terms, so that applying it is one three-way XOR per lane.
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn theta_d(c_prev: __m512i, c_next: __m512i) -> (__m512i, __m512i) {
            (c_prev, _mm512_rol_epi64::<1>(c_next))
        }

        #[target_feature(enable = "avx512f")]
        #[inline]
        fn theta_apply(a: __m512i, d: (__m512i, __m512i)) -> __m512i {
            _mm512_ternarylogic_epi64::<0x96>(a, d.0, d.1)
        }

        /// Rotate left by L (R = 64 - L is for the shift-based widths).
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn rol<const L: i32, const R: i32>(x: __m512i) -> __m512i {
            _mm512_rol_epi64::<L>(x)
        }

        /// a ^ (!b & c). Truth table indexed by (a << 2 | b << 1 | c): bits 1, 4, 6, 7 set, so 0xD2.
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn chi(a: __m512i, b: __m512i, c: __m512i) -> __m512i {
            _mm512_ternarylogic_epi64::<0xD2>(a, b, c)
        }

        #[target_feature(enable = "avx512f")]
        #[inline]
        fn splat(w: u64) -> __m512i {
            _mm512_set1_epi64(w as i64)
        }

        #[target_feature(enable = "avx512f")]
        #[inline]
        fn zero() -> __m512i {
            _mm512_setzero_si512()
        }

        #[target_feature(enable = "avx512f")]
        #[inline]
        fn loadu(words: &[u64; LANES]) -> __m512i {
            // SAFETY: `words` is 64 readable bytes, and `loadu` has no alignment requirement.
            unsafe { _mm512_loadu_si512(words.as_ptr().cast()) }
        }

        /// Stores the lanes little-endian (x86 byte order), as the tag wants them.
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn storeu(bytes: &mut [u8; LANES * 8], v: __m512i) {
            // SAFETY: `bytes` is 64 writable bytes, and `storeu` has no alignment requirement.
            unsafe { _mm512_storeu_si512(bytes.as_mut_ptr().cast(), v) }
        }

        /// 8x8 transpose of 64-bit words (`out[i]` lane `j` = `x[j]` lane `i`): pairs, then 128-bit blocks
        /// 0 and 2 (0x88) or 1 and 3 (0xDD) of two sources, twice.
        #[target_feature(enable = "avx512f")]
        #[inline]
        fn transpose(x: [__m512i; 8]) -> [__m512i; 8] {
            // t0 = [x0.0 x1.0 | x0.2 x1.2 | x0.4 x1.4 | x0.6 x1.6], t1 the odd words, and so on.
            let t0 = _mm512_unpacklo_epi64(x[0], x[1]);
            let t1 = _mm512_unpackhi_epi64(x[0], x[1]);
            let t2 = _mm512_unpacklo_epi64(x[2], x[3]);
            let t3 = _mm512_unpackhi_epi64(x[2], x[3]);
            let t4 = _mm512_unpacklo_epi64(x[4], x[5]);
            let t5 = _mm512_unpackhi_epi64(x[4], x[5]);
            let t6 = _mm512_unpacklo_epi64(x[6], x[7]);
            let t7 = _mm512_unpackhi_epi64(x[6], x[7]);
            // u0 = [x0.0 x1.0 | x0.4 x1.4 | x2.0 x3.0 | x2.4 x3.4], and so on.
            let u0 = _mm512_shuffle_i64x2::<0x88>(t0, t2);
            let u1 = _mm512_shuffle_i64x2::<0xDD>(t0, t2);
            let u2 = _mm512_shuffle_i64x2::<0x88>(t1, t3);
            let u3 = _mm512_shuffle_i64x2::<0xDD>(t1, t3);
            let u4 = _mm512_shuffle_i64x2::<0x88>(t4, t6);
            let u5 = _mm512_shuffle_i64x2::<0xDD>(t4, t6);
            let u6 = _mm512_shuffle_i64x2::<0x88>(t5, t7);
            let u7 = _mm512_shuffle_i64x2::<0xDD>(t5, t7);
            [
                _mm512_shuffle_i64x2::<0x88>(u0, u4),
                _mm512_shuffle_i64x2::<0x88>(u2, u6),
                _mm512_shuffle_i64x2::<0x88>(u1, u5),
                _mm512_shuffle_i64x2::<0x88>(u3, u7),
                _mm512_shuffle_i64x2::<0xDD>(u0, u4),
                _mm512_shuffle_i64x2::<0xDD>(u2, u6),
                _mm512_shuffle_i64x2::<0xDD>(u1, u5),
                _mm512_shuffle_i64x2::<0xDD>(u3, u7),
            ]
        }

        lane_functions!("avx512f", __m512i);
    }

    pub(super) mod avx2 {
        use super::{sign_scalar, Blocks, KeyedStates, DIGEST_WORDS, OUTER_PAD, RC, TAG_LEN};
        use core::arch::x86_64::*;

        const LANES: usize = 4;
        /// One 4-lane permutation costs about 1.5 scalar ones (measured on an AVX-512 EPYC), so even two
        /// keys are worth a group.
        const MIN_GROUP: usize = 2;

        #[target_feature(enable = "avx2")]
        #[inline]
        fn xor(a: __m256i, b: __m256i) -> __m256i {
            _mm256_xor_si256(a, b)
        }

        #[target_feature(enable = "avx2")]
        #[inline]
        fn xor5(a: __m256i, b: __m256i, c: __m256i, d: __m256i, e: __m256i) -> __m256i {
            xor(xor(xor(a, b), xor(c, d)), e)
        }

        /// D[x] as one vector: applying it is then one XOR per lane.
        #[target_feature(enable = "avx2")]
        #[inline]
        fn theta_d(c_prev: __m256i, c_next: __m256i) -> __m256i {
            xor(c_prev, rol::<1, 63>(c_next))
        }

        #[target_feature(enable = "avx2")]
        #[inline]
        fn theta_apply(a: __m256i, d: __m256i) -> __m256i {
            xor(a, d)
        }

        /// Rotate left by L, R = 64 - L. Byte-multiple rotations are one byte shuffle instead of three ops.
        #[target_feature(enable = "avx2")]
        #[inline]
        fn rol<const L: i32, const R: i32>(x: __m256i) -> __m256i {
            if L == 8 {
                #[rustfmt::skip]
                let rot8 = _mm256_setr_epi8(
                    7, 0, 1, 2, 3, 4, 5, 6, 15, 8, 9, 10, 11, 12, 13, 14,
                    7, 0, 1, 2, 3, 4, 5, 6, 15, 8, 9, 10, 11, 12, 13, 14,
                );
                _mm256_shuffle_epi8(x, rot8)
            } else if L == 56 {
                #[rustfmt::skip]
                let rot56 = _mm256_setr_epi8(
                    1, 2, 3, 4, 5, 6, 7, 0, 9, 10, 11, 12, 13, 14, 15, 8,
                    1, 2, 3, 4, 5, 6, 7, 0, 9, 10, 11, 12, 13, 14, 15, 8,
                );
                _mm256_shuffle_epi8(x, rot56)
            } else {
                _mm256_or_si256(_mm256_slli_epi64::<L>(x), _mm256_srli_epi64::<R>(x))
            }
        }

        /// a ^ (!b & c); `andnot(b, c)` is `!b & c`.
        #[target_feature(enable = "avx2")]
        #[inline]
        fn chi(a: __m256i, b: __m256i, c: __m256i) -> __m256i {
            xor(a, _mm256_andnot_si256(b, c))
        }

        #[target_feature(enable = "avx2")]
        #[inline]
        fn splat(w: u64) -> __m256i {
            _mm256_set1_epi64x(w as i64)
        }

        #[target_feature(enable = "avx2")]
        #[inline]
        fn zero() -> __m256i {
            _mm256_setzero_si256()
        }

        #[target_feature(enable = "avx2")]
        #[inline]
        fn loadu(words: &[u64; LANES]) -> __m256i {
            // SAFETY: `words` is 32 readable bytes, and `loadu` has no alignment requirement.
            unsafe { _mm256_loadu_si256(words.as_ptr().cast()) }
        }

        /// Stores the lanes little-endian (x86 byte order), as the tag wants them.
        #[target_feature(enable = "avx2")]
        #[inline]
        fn storeu(bytes: &mut [u8; LANES * 8], v: __m256i) {
            // SAFETY: `bytes` is 32 writable bytes, and `storeu` has no alignment requirement.
            unsafe { _mm256_storeu_si256(bytes.as_mut_ptr().cast(), v) }
        }

        /// 4x4 transpose of 64-bit words (`out[i]` lane `j` = `x[j]` lane `i`): pairs, then 128-bit halves.
        #[target_feature(enable = "avx2")]
        #[inline]
        fn transpose(x: [__m256i; 4]) -> [__m256i; 4] {
            // t0 = [x0.0 x1.0 | x0.2 x1.2], t1 = [x0.1 x1.1 | x0.3 x1.3], t2 and t3 likewise from x2, x3.
            let t0 = _mm256_unpacklo_epi64(x[0], x[1]);
            let t1 = _mm256_unpackhi_epi64(x[0], x[1]);
            let t2 = _mm256_unpacklo_epi64(x[2], x[3]);
            let t3 = _mm256_unpackhi_epi64(x[2], x[3]);
            // 0x20: low halves of both sources; 0x31: high halves.
            [
                _mm256_permute2x128_si256::<0x20>(t0, t2),
                _mm256_permute2x128_si256::<0x20>(t1, t3),
                _mm256_permute2x128_si256::<0x31>(t0, t2),
                _mm256_permute2x128_si256::<0x31>(t1, t3),
            ]
        }

        lane_functions!("avx2", __m256i);
    }
}

#[cfg(test)]
mod tests {
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
}
