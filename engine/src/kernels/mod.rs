//! Distance kernels with runtime CPU dispatch.
//!
//! Implementations: AVX-512F and AVX2+FMA on x86_64, NEON on aarch64, scalar everywhere.
//! [`active()`] picks the fastest per kernel once per process. `simsimd` is the reference we
//! benchmark against in `benches/kernels.rs`: on this project's machines the hand-written
//! `std::arch` loops measured faster for f32 at 768 and 1536 dimensions (41 ns vs 51 ns and
//! 81 ns vs 115 ns per dot product) and level at 128, so simsimd is not linked into the engine.
//! [`all_available()`] lists every implementation the CPU can run, so that property tests and
//! benchmarks exercise each of them, not just the chosen one.

pub mod int8;
#[cfg(target_arch = "aarch64")]
pub mod neon;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod x86;

use std::sync::OnceLock;

/// A kernel: two equally long slices to one number.
pub type KernelFn = fn(&[f32], &[f32]) -> f32;

/// One implementation of every distance primitive.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    /// Human-readable name of the instruction set (`avx2`, `scalar`, ...).
    pub name: &'static str,
    /// Dot product.
    pub dot: KernelFn,
    /// Squared euclidean distance.
    pub l2sq: KernelFn,
    /// Manhattan distance.
    pub l1: KernelFn,
}

const SCALAR: Kernels = Kernels {
    name: "scalar",
    dot: scalar::dot,
    l2sq: scalar::l2sq,
    l1: scalar::l1,
};

#[cfg(target_arch = "x86_64")]
mod x86_safe {
    //! Safe wrappers; they are only placed in a [`super::Kernels`] table after the CPU features
    //! they need were detected, which is the whole safety argument.
    use super::x86;
    pub fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: installed only when avx2+fma are detected.
        unsafe { x86::dot_avx2(a, b) }
    }
    pub fn l2sq_avx2(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: as above.
        unsafe { x86::l2sq_avx2(a, b) }
    }
    pub fn l1_avx2(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: as above.
        unsafe { x86::l1_avx2(a, b) }
    }
    pub fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: installed only when avx512f is detected.
        unsafe { x86::dot_avx512(a, b) }
    }
    pub fn l2sq_avx512(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: as above.
        unsafe { x86::l2sq_avx512(a, b) }
    }
    pub fn l1_avx512(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: as above.
        unsafe { x86::l1_avx512(a, b) }
    }
}

/// Every implementation this CPU can run, best first; the last one is always scalar.
pub fn all_available() -> Vec<Kernels> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            out.push(Kernels {
                name: "avx512",
                dot: x86_safe::dot_avx512,
                l2sq: x86_safe::l2sq_avx512,
                l1: x86_safe::l1_avx512,
            });
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            out.push(Kernels {
                name: "avx2",
                dot: x86_safe::dot_avx2,
                l2sq: x86_safe::l2sq_avx2,
                l1: x86_safe::l1_avx2,
            });
        }
    }
    #[cfg(target_arch = "aarch64")]
    out.push(Kernels {
        name: "neon",
        dot: neon::dot_neon,
        l2sq: neon::l2sq_neon,
        l1: neon::l1_neon,
    });
    out.push(SCALAR);
    out
}

/// The implementation chosen for this process, per kernel.
///
/// Wider is not always faster: on AMD Zen 4, AVX-512 runs as two 256-bit halves and measured no
/// faster than AVX2 (see `benches/kernels.rs`), while other CPUs gain from it. So each kernel is
/// timed once at start-up (about a millisecond in all) on every implementation the CPU supports,
/// and the fastest wins. `QUIVER_KERNELS=<name>` (`avx512`, `avx2`, `neon`, `scalar`) pins a
/// set instead, for reproducible measurements.
pub fn active() -> &'static Kernels {
    static ACTIVE: OnceLock<Kernels> = OnceLock::new();
    ACTIVE.get_or_init(|| {
        let all = all_available();
        let pinned = std::env::var("QUIVER_KERNELS")
            .ok()
            .and_then(|want| all.iter().find(|k| k.name == want).copied());
        let k = pinned.unwrap_or_else(|| calibrate(&all));
        tracing::info!(dot = k.name, pinned = pinned.is_some(), "distance kernels selected");
        k
    })
}

/// Picks the fastest implementation of each kernel on a 768-dimensional pair.
fn calibrate(all: &[Kernels]) -> Kernels {
    let a: Vec<f32> = (0..768).map(|i| (i % 17) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..768).map(|i| (i % 13) as f32 * -0.1).collect();
    let time = |f: KernelFn| -> std::time::Duration {
        (0..3)
            .map(|_| {
                let t = std::time::Instant::now();
                for _ in 0..200 {
                    std::hint::black_box(f(std::hint::black_box(&a), std::hint::black_box(&b)));
                }
                t.elapsed()
            })
            .min()
            .unwrap_or_default()
    };
    let pick = |get: fn(&Kernels) -> KernelFn| -> KernelFn {
        all.iter()
            .map(|k| (time(get(k)), get(k)))
            .min_by_key(|x| x.0)
            .map(|x| x.1)
            .unwrap_or(get(&SCALAR))
    };
    let dot = pick(|k| k.dot);
    let name = all
        .iter()
        .find(|k| k.dot as usize == dot as usize)
        .map_or("scalar", |k| k.name);
    Kernels {
        name,
        dot,
        l2sq: pick(|k| k.l2sq),
        l1: pick(|k| k.l1),
    }
}

/// Euclidean norm through the active dot kernel.
pub fn norm(v: &[f32]) -> f32 {
    (active().dot)(v, v).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f32, b: f32, scale: f32) -> bool {
        // Different summation orders round differently; allow a relative error on the sum of
        // magnitudes rather than on the (possibly cancelling) result.
        (a - b).abs() <= 1e-4 * scale.max(1.0)
    }

    fn check_all(a: &[f32], b: &[f32]) {
        let mag: f32 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x * y).abs() + (x - y).abs() * (x - y).abs())
            .sum();
        let l1mag: f32 = a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum();
        for k in all_available() {
            assert!(
                close((k.dot)(a, b), scalar::dot(a, b), mag),
                "{} dot len {}",
                k.name,
                a.len()
            );
            assert!(
                close((k.l2sq)(a, b), scalar::l2sq(a, b), mag),
                "{} l2sq len {}",
                k.name,
                a.len()
            );
            assert!(
                close((k.l1)(a, b), scalar::l1(a, b), l1mag),
                "{} l1 len {}",
                k.name,
                a.len()
            );
        }
    }

    fn pair(len: usize) -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
        (
            prop::collection::vec(-10.0f32..10.0, len),
            prop::collection::vec(-10.0f32..10.0, len),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn kernels_match_scalar_odd_sizes(
            (a, b) in prop_oneof![pair(1), pair(3), pair(17), pair(768), pair(1536)]
        ) {
            check_all(&a, &b);
        }

        #[test]
        fn kernels_match_scalar_any_size(len in 0usize..300, seed in any::<u64>()) {
            let mut s = seed | 1;
            let mut next = || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s % 2000) as f32 / 100.0 - 10.0 };
            let a: Vec<f32> = (0..len).map(|_| next()).collect();
            let b: Vec<f32> = (0..len).map(|_| next()).collect();
            check_all(&a, &b);
        }
    }

    #[test]
    fn active_is_one_of_the_available() {
        let all = all_available();
        assert!(all.iter().any(|k| k.name == active().name));
        assert_eq!(all.last().unwrap().name, "scalar");
        // Whatever was picked computes the same thing as the scalar reference.
        let (a, b) = ([1.0f32, 2.0, 3.0], [4.0f32, -5.0, 6.0]);
        assert_eq!((active().dot)(&a, &b), 12.0);
        assert_eq!((active().l2sq)(&a, &b), 9.0 + 49.0 + 9.0);
        assert_eq!((active().l1)(&a, &b), 3.0 + 7.0 + 3.0);
    }
}
