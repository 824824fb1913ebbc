//! Distance kernel throughput: our dispatched kernels vs every other available implementation
//! (AVX-512/AVX2/NEON/scalar) vs simsimd, at dims 128, 768 and 1536.
//!
//! `cargo bench -p quiver-benches --bench kernels`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quiver_engine::kernels;
use simsimd::SpatialSimilarity;

fn data(dim: usize, seed: u32) -> Vec<f32> {
    (0..dim)
        .map(|i| ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

fn bench(c: &mut Criterion) {
    for dim in [128usize, 768, 1536] {
        let (a, b) = (data(dim, 1), data(dim, 7));
        let mut g = c.benchmark_group(format!("kernels/{dim}"));
        g.throughput(Throughput::Elements(dim as u64));
        for k in kernels::all_available() {
            g.bench_function(format!("dot/{}", k.name), |bn| {
                bn.iter(|| (k.dot)(black_box(&a), black_box(&b)))
            });
            g.bench_function(format!("l2sq/{}", k.name), |bn| {
                bn.iter(|| (k.l2sq)(black_box(&a), black_box(&b)))
            });
            g.bench_function(format!("l1/{}", k.name), |bn| {
                bn.iter(|| (k.l1)(black_box(&a), black_box(&b)))
            });
        }
        g.bench_function("dot/simsimd", |bn| bn.iter(|| f32::dot(black_box(&a), black_box(&b))));
        g.bench_function("l2sq/simsimd", |bn| bn.iter(|| f32::l2sq(black_box(&a), black_box(&b))));
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
