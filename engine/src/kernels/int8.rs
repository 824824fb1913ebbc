//! Integer kernels over `i8` codes (the HNSW graph's quantized copy of the vectors): dot
//! product, squared L2 and L1, exact in `i32` for up to 65,536 dimensions. AVX2 widens 16 codes
//! to `i16` and multiplies-and-adds pairs into `i32` lanes (`vpmaddwd`); other CPUs use the
//! scalar loops, which the compiler vectorises.

use std::sync::OnceLock;

/// An integer kernel.
pub type Int8Fn = fn(&[i8], &[i8]) -> i32;

/// The three integer kernels.
#[derive(Clone, Copy)]
pub struct Int8Kernels {
    /// Instruction set.
    pub name: &'static str,
    /// Σ a·b.
    pub dot: Int8Fn,
    /// Σ (a−b)².
    pub l2sq: Int8Fn,
    /// Σ |a−b|.
    pub l1: Int8Fn,
}

fn dot_scalar(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

fn l2sq_scalar(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = x as i32 - y as i32;
            d * d
        })
        .sum()
}

fn l1_scalar(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| (x as i32 - y as i32).abs()).sum()
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn hsum(v: __m256i) -> i32 {
        unsafe {
            let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
            _mm_cvtsi128_si32(s)
        }
    }

    macro_rules! int8_kernel {
        ($name:ident, $combine:expr, $tail:expr) => {
            /// # Safety
            /// The CPU must support AVX2.
            #[target_feature(enable = "avx2")]
            pub unsafe fn $name(a: &[i8], b: &[i8]) -> i32 {
                unsafe {
                    let n = a.len().min(b.len());
                    let (pa, pb) = (a.as_ptr(), b.as_ptr());
                    let combine = $combine;
                    let (mut c0, mut c1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
                    let mut i = 0;
                    while i + 32 <= n {
                        let a0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pa.add(i) as *const __m128i));
                        let b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pb.add(i) as *const __m128i));
                        let a1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pa.add(i + 16) as *const __m128i));
                        let b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pb.add(i + 16) as *const __m128i));
                        c0 = _mm256_add_epi32(c0, combine(a0, b0));
                        c1 = _mm256_add_epi32(c1, combine(a1, b1));
                        i += 32;
                    }
                    while i + 16 <= n {
                        let a0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pa.add(i) as *const __m128i));
                        let b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(pb.add(i) as *const __m128i));
                        c0 = _mm256_add_epi32(c0, combine(a0, b0));
                        i += 16;
                    }
                    let mut sum = hsum(_mm256_add_epi32(c0, c1));
                    let tail = $tail;
                    while i < n {
                        sum += tail(*pa.add(i) as i32, *pb.add(i) as i32);
                        i += 1;
                    }
                    sum
                }
            }
        };
    }

    int8_kernel!(
        dot,
        |a: __m256i, b: __m256i| _mm256_madd_epi16(a, b),
        |x: i32, y: i32| x * y
    );
    int8_kernel!(
        l2sq,
        |a: __m256i, b: __m256i| {
            let d = _mm256_sub_epi16(a, b);
            _mm256_madd_epi16(d, d)
        },
        |x: i32, y: i32| (x - y) * (x - y)
    );
    int8_kernel!(
        l1,
        |a: __m256i, b: __m256i| _mm256_madd_epi16(_mm256_abs_epi16(_mm256_sub_epi16(a, b)), _mm256_set1_epi16(1)),
        |x: i32, y: i32| (x - y).abs()
    );

    pub fn dot_safe(a: &[i8], b: &[i8]) -> i32 {
        // SAFETY: only installed after AVX2 was detected.
        unsafe { dot(a, b) }
    }
    pub fn l2sq_safe(a: &[i8], b: &[i8]) -> i32 {
        // SAFETY: as above.
        unsafe { l2sq(a, b) }
    }
    pub fn l1_safe(a: &[i8], b: &[i8]) -> i32 {
        // SAFETY: as above.
        unsafe { l1(a, b) }
    }
}

/// The kernels for this CPU (AVX2 when available, else scalar).
pub fn active() -> &'static Int8Kernels {
    static ACTIVE: OnceLock<Int8Kernels> = OnceLock::new();
    ACTIVE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::env::var("QUIVER_KERNELS").map_or(true, |k| k != "scalar") {
            return Int8Kernels {
                name: "avx2",
                dot: avx2::dot_safe,
                l2sq: avx2::l2sq_safe,
                l1: avx2::l1_safe,
            };
        }
        Int8Kernels {
            name: "scalar",
            dot: dot_scalar,
            l2sq: l2sq_scalar,
            l1: l1_scalar,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn simd_matches_scalar_at_every_length_and_extreme() {
        let k = active();
        let mut x = 12345u64;
        for len in [0usize, 1, 3, 15, 16, 17, 31, 32, 33, 128, 768, 1000] {
            for extreme in [false, true] {
                let mut draw = || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    if extreme {
                        if x.is_multiple_of(2) { -128 } else { 127 }
                    } else {
                        (x % 256) as u8 as i8
                    }
                };
                let a: Vec<i8> = (0..len).map(|_| draw()).collect();
                let b: Vec<i8> = (0..len).map(|_| draw()).collect();
                assert_eq!((k.dot)(&a, &b), dot_scalar(&a, &b), "dot {len}");
                assert_eq!((k.l2sq)(&a, &b), l2sq_scalar(&a, &b), "l2 {len}");
                assert_eq!((k.l1)(&a, &b), l1_scalar(&a, &b), "l1 {len}");
            }
        }
    }
}
