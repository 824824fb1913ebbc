//! AVX2+FMA and AVX-512F kernels.
//!
//! Four independent accumulators per kernel: an FMA has a latency of about four cycles and each
//! step needs two loads, so four chains keep the load ports busy without spilling registers.
//! Callers must have checked the CPU features (see `super::detect`); the `unsafe` contract of every
//! function here is exactly that.

use std::arch::x86_64::*;

#[inline(always)]
unsafe fn hsum256(v: __m256) -> f32 {
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let sh = _mm_movehdup_ps(s);
        let s2 = _mm_add_ps(s, sh);
        let hi = _mm_movehl_ps(sh, s2);
        _mm_cvtss_f32(_mm_add_ss(s2, hi))
    }
}

/// Generates one reduction kernel: `$step(acc, a, b)` folds a register of lanes into `acc`,
/// `$tail(x, y)` handles the leftover scalars.
macro_rules! reduce_kernel {
    ($name:ident, $feat:literal, $vec:ty, $lanes:expr, $zero:ident, $load:ident, $add:ident,
     $hsum:expr, $step:expr, $tail:expr) => {
        /// See the module docs.
        ///
        /// # Safety
        /// The CPU must support the target features named on this function.
        #[target_feature(enable = $feat)]
        pub unsafe fn $name(a: &[f32], b: &[f32]) -> f32 {
            unsafe {
                let n = a.len().min(b.len());
                let (pa, pb) = (a.as_ptr(), b.as_ptr());
                let step = $step;
                let (mut c0, mut c1, mut c2, mut c3): ($vec, $vec, $vec, $vec) = ($zero(), $zero(), $zero(), $zero());
                let mut i = 0;
                while i + 4 * $lanes <= n {
                    c0 = step(c0, $load(pa.add(i)), $load(pb.add(i)));
                    c1 = step(c1, $load(pa.add(i + $lanes)), $load(pb.add(i + $lanes)));
                    c2 = step(c2, $load(pa.add(i + 2 * $lanes)), $load(pb.add(i + 2 * $lanes)));
                    c3 = step(c3, $load(pa.add(i + 3 * $lanes)), $load(pb.add(i + 3 * $lanes)));
                    i += 4 * $lanes;
                }
                while i + $lanes <= n {
                    c0 = step(c0, $load(pa.add(i)), $load(pb.add(i)));
                    i += $lanes;
                }
                let mut sum = $hsum($add($add(c0, c1), $add(c2, c3)));
                let tail = $tail;
                while i < n {
                    sum += tail(*pa.add(i), *pb.add(i));
                    i += 1;
                }
                sum
            }
        }
    };
}

reduce_kernel!(
    dot_avx2,
    "avx2,fma",
    __m256,
    8,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_add_ps,
    |v| hsum256(v),
    |acc, x, y| _mm256_fmadd_ps(x, y, acc),
    |x: f32, y: f32| x * y
);
reduce_kernel!(
    l2sq_avx2,
    "avx2,fma",
    __m256,
    8,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_add_ps,
    |v| hsum256(v),
    |acc, x, y| {
        let d = _mm256_sub_ps(x, y);
        _mm256_fmadd_ps(d, d, acc)
    },
    |x: f32, y: f32| (x - y) * (x - y)
);
reduce_kernel!(
    l1_avx2,
    "avx2,fma",
    __m256,
    8,
    _mm256_setzero_ps,
    _mm256_loadu_ps,
    _mm256_add_ps,
    |v| hsum256(v),
    |acc, x, y| {
        // Clearing the sign bit is |x - y| without a branch.
        let d = _mm256_andnot_ps(_mm256_set1_ps(-0.0), _mm256_sub_ps(x, y));
        _mm256_add_ps(acc, d)
    },
    |x: f32, y: f32| (x - y).abs()
);

reduce_kernel!(
    dot_avx512,
    "avx512f",
    __m512,
    16,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_add_ps,
    |v| _mm512_reduce_add_ps(v),
    |acc, x, y| _mm512_fmadd_ps(x, y, acc),
    |x: f32, y: f32| x * y
);
reduce_kernel!(
    l2sq_avx512,
    "avx512f",
    __m512,
    16,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_add_ps,
    |v| _mm512_reduce_add_ps(v),
    |acc, x, y| {
        let d = _mm512_sub_ps(x, y);
        _mm512_fmadd_ps(d, d, acc)
    },
    |x: f32, y: f32| (x - y) * (x - y)
);
reduce_kernel!(
    l1_avx512,
    "avx512f",
    __m512,
    16,
    _mm512_setzero_ps,
    _mm512_loadu_ps,
    _mm512_add_ps,
    |v| _mm512_reduce_add_ps(v),
    |acc, x, y| _mm512_add_ps(acc, _mm512_abs_ps(_mm512_sub_ps(x, y))),
    |x: f32, y: f32| (x - y).abs()
);
