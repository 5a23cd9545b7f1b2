//! The whole CPU pipeline (decode, detect, quality, both MiniFASNets) in images/s on the
//! 640x480 JPEG fixture, one image at a time and in batches of 8 and 32, and with the third
//! PAD network loaded (`load_celeba`) at 1 and 8.
//!
//! `cargo bench --bench pipeline`. Upstream's Python pipeline: 21.8 ms/image (45.9 images/s).

mod common;

use std::time::Duration;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use facegate::engine::{AnalyzeOptions, Engine, EngineConfig};

fn bench(c: &mut Criterion) {
    let models = common::models_dir();
    let cfg = EngineConfig {
        models_dir: models,
        load_descriptor: false,
        ..EngineConfig::default()
    };
    let engine =
        Engine::load(cfg.clone(), Device::Cpu).expect("engine (run `facegate models fetch`)");
    // The same with the third PAD network (what the minifasnet-triple pipeline costs).
    let triple = Engine::load(
        EngineConfig {
            load_celeba: true,
            ..cfg
        },
        Device::Cpu,
    )
    .expect("engine with the CelebA-Spoof network");
    let jpeg = common::fixture("image_T1.jpg");
    let opts = AnalyzeOptions::default();
    let mut g = c.benchmark_group("pipeline");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));
    for n in [1usize, 8, 32] {
        let batch: Vec<&[u8]> = (0..n).map(|_| jpeg.as_slice()).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(
            BenchmarkId::new("analyze_640x480_jpeg", n),
            &batch,
            |b, batch| {
                b.iter(|| {
                    for r in engine.analyze_batch(batch, &opts) {
                        r.expect("analysis");
                    }
                })
            },
        );
    }
    for n in [1usize, 8] {
        let batch: Vec<&[u8]> = (0..n).map(|_| jpeg.as_slice()).collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(
            BenchmarkId::new("analyze_640x480_jpeg_with_celeba", n),
            &batch,
            |b, batch| {
                b.iter(|| {
                    for r in triple.analyze_batch(batch, &opts) {
                        r.expect("analysis");
                    }
                })
            },
        );
    }
    g.bench_function("decode_only_640x480_jpeg", |b| {
        b.iter(|| engine.prepare(&jpeg).expect("decode"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
