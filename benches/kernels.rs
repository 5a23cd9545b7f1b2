//! The CPU kernels on the layer shapes the networks use, one image, one thread, for every
//! instruction set this CPU supports. Throughput is in multiply-adds (criterion's "elements").
//!
//! `cargo bench --bench kernels`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use facegate::nn::cpu::conv::{PackedConv, Window};
use facegate::nn::cpu::depthwise::depthwise_with;
use facegate::nn::cpu::{Epilogue, Isa, Slope};

fn values(n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919) % 1009) as f32 / 1009.0 - 0.5)
        .collect()
}

/// (name, in, h, w, out, k, stride, pad): an ordinary convolution.
type DenseShape = (
    &'static str,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
    usize,
);

/// Ordinary convolutions of the three networks.
const DENSE: [DenseShape; 7] = [
    ("minifas_expand_40x40", 32, 40, 40, 103, 1, 1, 0),
    ("minifas_project_10x10", 231, 10, 10, 128, 1, 1, 0),
    ("minifas_sep_5x5", 128, 5, 5, 512, 1, 1, 0),
    ("minifas_stem_s2", 3, 80, 80, 32, 3, 2, 1),
    ("retina_pw_18x24", 64, 18, 24, 64, 1, 1, 0),
    ("retina_merge_3x3_18x24", 64, 18, 24, 64, 3, 1, 1),
    ("descriptor_3x3_s2", 64, 36, 36, 128, 3, 2, 0),
];

/// (name, channels, h, w, k, stride, pad): depthwise convolutions of the networks.
const DEPTHWISE: [(&str, usize, usize, usize, usize, usize, usize); 6] = [
    ("minifas_dw_40x40", 32, 40, 40, 3, 1, 1),
    ("minifas_dw_s2_40x40", 103, 40, 40, 3, 2, 1),
    ("minifas_dw_10x10", 231, 10, 10, 3, 1, 1),
    ("minifas_dw_s2_10x10", 308, 10, 10, 3, 2, 1),
    ("retina_dw_72x96", 8, 72, 96, 3, 1, 1),
    ("retina_dw_s2_72x96", 16, 72, 96, 3, 2, 1),
];

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("kernels");
    g.sample_size(20)
        .measurement_time(Duration::from_millis(600))
        .warm_up_time(Duration::from_millis(200));
    for isa in Isa::available() {
        for &(name, cin, h, w, out, k, stride, pad) in &DENSE {
            let pc =
                PackedConv::pack(&values(out * cin * k * k), (out, cin, k, k), isa).expect("pack");
            let win = Window { stride, pad };
            let (oh, ow) = pc.out_size(h, w, win).expect("fits");
            let x = values(cin * h * w);
            let bias = values(out);
            let epi = Epilogue::new(Some(&bias), Slope::Uniform(0.1));
            let mut y = vec![0f32; out * oh * ow];
            g.throughput(Throughput::Elements((out * oh * ow * cin * k * k) as u64));
            g.bench_function(BenchmarkId::new(name, isa.name()), |b| {
                b.iter(|| pc.run(&x, (h, w), win, &mut y, &epi).expect("conv"))
            });
        }
        for &(name, ch, h, w, k, stride, pad) in &DEPTHWISE {
            let x = values(ch * h * w);
            let kern = values(ch * k * k);
            let bias = values(ch);
            let epi = Epilogue::new(Some(&bias), Slope::Uniform(0.1));
            let (oh, ow) = (
                (h + 2 * pad - k) / stride + 1,
                (w + 2 * pad - k) / stride + 1,
            );
            let mut y = vec![0f32; ch * oh * ow];
            let win = Window { stride, pad };
            g.throughput(Throughput::Elements((ch * oh * ow * k * k) as u64));
            g.bench_function(BenchmarkId::new(name, isa.name()), |b| {
                b.iter(|| {
                    depthwise_with(isa, &x, (ch, h, w), &kern, (k, k), win, &mut y, &epi)
                        .expect("depthwise")
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
