//! The replay signal's cost (`preprocess::spectrum::periodic_peak`, measured by `facegate eval
//! --replay`): the periodic peak of the fixture's face at full resolution (640x480: 32-pixel
//! windows) and of the same face in the fixture scaled to 1080p and 12 MP (128-pixel windows),
//! at most 64 windows each, one thread.
//!
//! `cargo bench --bench replay`.

mod common;

use std::time::Duration;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use facegate::bench::rescaled_jpeg;
use facegate::engine::{AnalyzeOptions, Engine, EngineConfig};
use facegate::preprocess::decode::{decode_rgb, DecodeLimits};
use facegate::preprocess::spectrum::periodic_peak;

fn bench(c: &mut Criterion) {
    let cfg = EngineConfig {
        models_dir: common::models_dir(),
        load_descriptor: false,
        load_landmarks: false,
        threads: 1,
        ..EngineConfig::default()
    };
    let engine = Engine::load(cfg, Device::Cpu).expect("engine (run `facegate models fetch`)");
    let fixture = common::fixture("image_T1.jpg");
    let limits = DecodeLimits::default();
    let opts = AnalyzeOptions::default();
    let mut g = c.benchmark_group("replay");
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (name, side) in [("vga", 0u32), ("1080p", 1920), ("12mp", 4032)] {
        let jpeg = if side == 0 {
            fixture.clone()
        } else {
            rescaled_jpeg(&fixture, side).expect("rescaled fixture")
        };
        let face = engine.analyze(&jpeg, &opts).expect("analysis").faces[0].clone();
        let image = decode_rgb(&jpeg, &limits).expect("decode");
        let report = periodic_peak(&image, face.bbox).expect("a measurable face");
        eprintln!(
            "replay/{name}: window {} x {} windows",
            report.window, report.windows
        );
        g.bench_with_input(BenchmarkId::new("periodic_peak", name), &image, |b, i| {
            b.iter(|| periodic_peak(i, face.bbox))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
