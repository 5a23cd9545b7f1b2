//! Video throughput (feature `video`): a 2 s, 30 fps, 720x960 H.264 High clip with B-frames,
//! encoded here from the live fixture (shifted a few pixels per frame), decoded in memory with
//! 8 frames sampled (frames decoded per second = 60 / time), and decoded plus analysed (the 8
//! sampled frames through detection, quality and both MiniFASNets as one batch: frames
//! analysed per second = 8 / time).
//!
//! `cargo bench --features video --bench video`.

mod common;

use std::time::Duration;

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion};
use facegate::engine::{AnalyzeOptions, Engine, EngineConfig};
use facegate::preprocess::video::{decode_sampled, encode_h264_mp4, VideoLimits};
use image::imageops::{overlay, resize, FilterType};
use image::{Rgb, RgbImage};

fn bench(c: &mut Criterion) {
    let models = common::models_dir();
    let engine = Engine::load(
        EngineConfig {
            models_dir: models,
            load_descriptor: false,
            ..EngineConfig::default()
        },
        Device::Cpu,
    )
    .expect("engine (run `facegate models fetch`)");
    let jpeg = common::fixture("image_T1.jpg");
    let base = engine.prepare(&jpeg).expect("fixture").image;
    let base = resize(&base, 720, 960, FilterType::Triangle);
    let frames: Vec<RgbImage> = (0..60)
        .map(|i| {
            let mut f = RgbImage::from_pixel(720, 960, Rgb([0, 0, 0]));
            overlay(&mut f, &base, (i % 6) as i64 * 2, (i % 4) as i64);
            f
        })
        .collect();
    let mp4 = encode_h264_mp4(&frames, 30).expect("encode");
    let limits = VideoLimits::default();
    let opts = AnalyzeOptions::default();
    let mut g = c.benchmark_group("video");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(6))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("decode_60_frames_720x960_sample_8", |b| {
        b.iter(|| decode_sampled(&mp4, &limits).expect("decode"))
    });
    g.bench_function("decode_and_analyse_8_frames_720x960", |b| {
        b.iter(|| {
            let v = decode_sampled(&mp4, &limits).expect("decode");
            let prepared = v
                .frames
                .into_iter()
                .map(|f| engine.prepare_frame(f))
                .collect();
            let out = engine.analyze_prepared(prepared, &opts);
            assert!(out.iter().all(|a| a.is_ok()));
            out
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
