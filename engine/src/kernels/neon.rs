//! NEON kernels for aarch64 (NEON is part of the aarch64 baseline, so no runtime check is needed).

use std::arch::aarch64::*;

macro_rules! neon_kernel {
    ($name:ident, $step:expr, $tail:expr) => {
        /// See the module docs.
        pub fn $name(a: &[f32], b: &[f32]) -> f32 {
            let n = a.len().min(b.len());
            // SAFETY: NEON is mandatory on aarch64 and every load stays within `n`.
            unsafe {
                let (pa, pb) = (a.as_ptr(), b.as_ptr());
                let step = $step;
                let (mut c0, mut c1, mut c2, mut c3) = (
                    vdupq_n_f32(0.0),
                    vdupq_n_f32(0.0),
                    vdupq_n_f32(0.0),
                    vdupq_n_f32(0.0),
                );
                let mut i = 0;
                while i + 16 <= n {
                    c0 = step(c0, vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
                    c1 = step(c1, vld1q_f32(pa.add(i + 4)), vld1q_f32(pb.add(i + 4)));
                    c2 = step(c2, vld1q_f32(pa.add(i + 8)), vld1q_f32(pb.add(i + 8)));
                    c3 = step(c3, vld1q_f32(pa.add(i + 12)), vld1q_f32(pb.add(i + 12)));
                    i += 16;
                }
                while i + 4 <= n {
                    c0 = step(c0, vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
                    i += 4;
                }
                let mut sum = vaddvq_f32(vaddq_f32(vaddq_f32(c0, c1), vaddq_f32(c2, c3)));
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

neon_kernel!(dot_neon, |acc, x, y| vfmaq_f32(acc, x, y), |x: f32, y: f32| x * y);
neon_kernel!(
    l2sq_neon,
    |acc, x, y| {
        let d = vsubq_f32(x, y);
        vfmaq_f32(acc, d, d)
    },
    |x: f32, y: f32| (x - y) * (x - y)
);
neon_kernel!(
    l1_neon,
    |acc, x, y| vaddq_f32(acc, vabdq_f32(x, y)),
    |x: f32, y: f32| (x - y).abs()
);
