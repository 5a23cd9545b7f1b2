//! Large photos: per-stage time of JPEGs made from the 640x480 fixture at phone sizes (1080p,
//! 8 MP, 12 MP; stored sideways with the fixture's EXIF orientation, as phones store them),
//! each at full resolution and reduced in the DCT domain.
//!
//! Stages, each at full resolution (`_full`) and at the reduction the engine picks
//! (`_reduced`): `decode` (libjpeg-turbo, EXIF rotation included), `rotate` (the quarter turn
//! alone), `detector_copy` (the area-filtered 320 px copy), `crops` (both MiniFASNet crops of the
//! face); then `prepare` (the engine's decode and detector copies) and `analyze` (everything:
//! decode, detection cascade, quality, both MiniFASNets), with reducing on and off.
//!
//! `cargo bench --bench large_photos`.

mod common;

use std::time::Duration;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion};
use facegate::bench::rescaled_jpeg;
use facegate::engine::{AnalyzeOptions, Engine, EngineConfig};
use facegate::preprocess::crop::crop_rgb;
use facegate::preprocess::decode::{decode_scaled, orient, DecodeLimits};
use facegate::preprocess::resize::downscale_area;
use image::metadata::Orientation;

fn bench(c: &mut Criterion) {
    let models = common::models_dir();
    let cfg = EngineConfig {
        models_dir: models,
        load_descriptor: false,
        load_landmarks: false,
        threads: 1,
        ..EngineConfig::default()
    };
    let engine =
        Engine::load(cfg.clone(), Device::Cpu).expect("engine (run `facegate models fetch`)");
    let mut full_cfg = cfg;
    full_cfg.decode.reduce = false;
    let unreduced = Engine::load(full_cfg, Device::Cpu).expect("engine");
    let fixture = common::fixture("image_T1.jpg");
    let limits = DecodeLimits::default();
    let opts = AnalyzeOptions::default();
    let mut g = c.benchmark_group("large_photos");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    for (name, side) in [
        ("vga", 0u32),
        ("1080p", 1920),
        ("8mp", 3264),
        ("12mp", 4032),
    ] {
        let jpeg = if side == 0 {
            fixture.clone()
        } else {
            rescaled_jpeg(&fixture, side).expect("rescaled fixture")
        };
        let jpeg = jpeg.as_slice();
        let face = engine.analyze(jpeg, &opts).expect("analysis").faces[0].clone();
        for (mode, reduce) in [("full", false), ("reduced", true)] {
            let pick = |size| {
                if reduce {
                    limits.reduction_for(size)
                } else {
                    1
                }
            };
            let decoded = decode_scaled(jpeg, &limits, pick).expect("decode");
            let s = decoded.scale as f32;
            let img = decoded.image;
            let [x1, y1, x2, y2] = face.bbox.map(|v| v / s);
            let bbox = [x1, y1, x2 - x1, y2 - y1];
            g.bench_with_input(
                BenchmarkId::new(format!("decode_{mode}"), name),
                &jpeg,
                |b, j| b.iter(|| decode_scaled(j, &limits, pick).expect("decode")),
            );
            g.bench_with_input(
                BenchmarkId::new(format!("rotate_{mode}"), name),
                &img,
                |b, i| {
                    b.iter_batched(
                        || i.clone(),
                        |x| orient(x, Orientation::Rotate90),
                        BatchSize::LargeInput,
                    )
                },
            );
            g.bench_with_input(
                BenchmarkId::new(format!("detector_copy_{mode}"), name),
                &img,
                |b, i| b.iter(|| downscale_area(i, 320)),
            );
            g.bench_with_input(
                BenchmarkId::new(format!("crops_{mode}"), name),
                &img,
                |b, i| b.iter(|| (crop_rgb(i, bbox, 2.7, 80), crop_rgb(i, bbox, 4.0, 80))),
            );
        }
        g.bench_with_input(BenchmarkId::new("prepare", name), &jpeg, |b, j| {
            b.iter(|| engine.prepare(j).expect("prepare"))
        });
        g.bench_with_input(BenchmarkId::new("analyze", name), &jpeg, |b, j| {
            b.iter(|| engine.analyze(j, &opts).expect("analysis"))
        });
        g.bench_with_input(
            BenchmarkId::new("analyze_unreduced", name),
            &jpeg,
            |b, j| b.iter(|| unreduced.analyze(j, &opts).expect("analysis")),
        );
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
