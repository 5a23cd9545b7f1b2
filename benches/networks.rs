//! Forward time of each network at batch 1, 8 and 32 (CPU).
//!
//! `cargo bench --bench networks` (models from `facegate models fetch`, or FACEGATE_MODELS_DIR).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use facegate::nn::face_descriptor::FaceDescriptor;
use facegate::nn::face_landmarks::FaceLandmarks;
use facegate::nn::minifasnet::{MiniFasNet, Variant};
use facegate::nn::retinaface::RetinaFace;

fn models() -> PathBuf {
    common::models_dir()
}

fn input(n: usize, c: usize, h: usize, w: usize, hi: f32) -> Tensor {
    Tensor::rand(0f32, hi, (n, c, h, w), &Device::Cpu).expect("random input")
}

fn bench(c: &mut Criterion) {
    let dev = Device::Cpu;
    let m = models();
    let v2 = MiniFasNet::load(
        &m.join("minifasnet_minifasnetv2_scale2p7.safetensors"),
        Variant::V2,
        &dev,
    )
    .expect("MiniFASNetV2 (run `facegate models fetch`)");
    let v1se = MiniFasNet::load(
        &m.join("minifasnet_minifasnetv1se_scale4p0.safetensors"),
        Variant::V1SE,
        &dev,
    )
    .expect("MiniFASNetV1SE");
    let celeba = MiniFasNet::load(
        &m.join("minifasnetv2se_celeba_128.onnx"),
        Variant::V2SeCeleba,
        &dev,
    )
    .expect("CelebA-Spoof MiniFASNetV2-SE");
    let det = RetinaFace::load(&m.join("retinaface_mnet025.onnx"), &dev).expect("RetinaFace");
    let desc = FaceDescriptor::load(
        &m.join("face-api/face_recognition_model-weights_manifest.json"),
        &dev,
    )
    .expect("face descriptor");
    let landmarks = FaceLandmarks::load(
        &m.join("face-api/face_landmark_68_model-weights_manifest.json"),
        &dev,
    )
    .expect("landmark network");

    let mut g = c.benchmark_group("networks");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
    for n in [1usize, 8, 32] {
        g.throughput(Throughput::Elements(n as u64));
        let x = input(n, 3, 80, 80, 255.0);
        g.bench_with_input(BenchmarkId::new("minifasnet_v2_80", n), &x, |b, x| {
            b.iter(|| v2.forward(x).expect("forward"))
        });
        g.bench_with_input(BenchmarkId::new("minifasnet_v1se_80", n), &x, |b, x| {
            b.iter(|| v1se.forward(x).expect("forward"))
        });
        let x = input(n, 3, 128, 128, 1.0);
        g.bench_with_input(BenchmarkId::new("minifasnet_celeba_128", n), &x, |b, x| {
            b.iter(|| celeba.forward(x).expect("forward"))
        });
        let x = input(n, 3, 240, 320, 100.0);
        g.bench_with_input(BenchmarkId::new("retinaface_320x240", n), &x, |b, x| {
            b.iter(|| det.forward(x).expect("forward"))
        });
        let x = input(n, 3, 150, 150, 255.0);
        g.bench_with_input(BenchmarkId::new("descriptor_150", n), &x, |b, x| {
            b.iter(|| desc.forward(x).expect("forward"))
        });
        let x = input(n, 3, 112, 112, 255.0);
        g.bench_with_input(BenchmarkId::new("landmarks68_112", n), &x, |b, x| {
            b.iter(|| landmarks.forward(x).expect("forward"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
