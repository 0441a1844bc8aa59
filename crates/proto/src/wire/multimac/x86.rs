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
