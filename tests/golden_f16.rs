//! Half precision (`engine.precision = "f16"`, used on a GPU) against the upstream references:
//! every network run with f16 activations and weights (candle's f16 ops; on CPU here, where
//! the layers are the same tensor ops as on a GPU except the depthwise kernel, which
//! `facegate gpucheck` holds to its twin in f16 on the device), its outputs cast back to f32.
//!
//! The tolerances are f16's: 11 significant bits, so about 1e-3 relative per operation,
//! accumulated over each network's depth. Every test prints the difference it measured.

mod common;

use candle_core::{DType, Device, Tensor};
use common::*;
use facegate::nn::face_descriptor::{FaceDescriptor, INPUT_SIZE};
use facegate::nn::minifasnet::{MiniFasNet, Variant};
use serde_json::Value;

/// MiniFASNet logits (magnitudes up to about 10).
const LOGIT_TOL: f32 = 0.05;
/// Descriptor values (magnitudes below 0.5; matching works on distances near 0.5).
const DESCRIPTOR_TOL: f32 = 5e-3;

fn f16_forward(x: &Tensor, f: impl Fn(&Tensor) -> candle_core::Result<Tensor>) -> Vec<f32> {
    let y = f(&x.to_dtype(DType::F16).unwrap()).unwrap();
    assert_eq!(y.dtype(), DType::F16, "the network ran in {:?}", y.dtype());
    y.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// An RGB PNG crop of the reference as a (1, 3, 80, 80) BGR tensor.
fn crop_png(name: &str) -> Tensor {
    let img = image::open(shared_dir().join("models/reference").join(name))
        .unwrap()
        .to_rgb8();
    let mut data = vec![0f32; 3 * 6400];
    for (x, y, px) in img.enumerate_pixels() {
        let i = (y * 80 + x) as usize;
        data[i] = f32::from(px[2]);
        data[6400 + i] = f32::from(px[1]);
        data[12800 + i] = f32::from(px[0]);
    }
    Tensor::from_vec(data, (1, 3, 80, 80), &Device::Cpu).unwrap()
}

#[test]
fn minifasnets_in_f16_match_upstream_on_the_reference_crops() {
    let r = read_json(&shared_dir().join("models/reference/minifasnet_reference.json"));
    for (name, v) in [
        ("minifasnet_minifasnetv2_scale2p7", Variant::V2),
        ("minifasnet_minifasnetv1se_scale4p0", Variant::V1SE),
    ] {
        let net =
            MiniFasNet::load(&model_file(&format!("{name}.safetensors")), v, &Device::Cpu).unwrap();
        let mut worst = 0f32;
        for (image, entry) in r["images"].as_object().unwrap() {
            let m = &entry["models"][name];
            let got = f16_forward(&crop_png(m["crop_png"].as_str().unwrap()), |x| {
                net.forward(x)
            });
            let want = floats(&m["logits"]);
            let d = max_abs_diff(&got, &want);
            println!("{name} {image} f16: max |logit diff| = {d:e}");
            worst = worst.max(d);
        }
        assert!(worst <= LOGIT_TOL, "{name}: f16 logits off by {worst}");
    }
}

#[test]
fn descriptor_in_f16_matches_faceapi_on_the_synthetic_chip() {
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data/faceapi_descriptor_reference.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let net = FaceDescriptor::load(
        &model_file("face-api/face_recognition_model-weights_manifest.json"),
        &Device::Cpu,
    )
    .unwrap();
    let n = INPUT_SIZE * INPUT_SIZE;
    let mut chip = vec![0f32; 3 * n];
    for y in 0..INPUT_SIZE {
        for x in 0..INPUT_SIZE {
            let rgb = [3 * x + 5 * y, 7 * x + 2 * y + 40, x * y];
            for c in 0..3 {
                chip[c * n + y * INPUT_SIZE + x] = (rgb[c] % 256) as f32;
            }
        }
    }
    let x = Tensor::from_vec(chip, (1, 3, INPUT_SIZE, INPUT_SIZE), &Device::Cpu).unwrap();
    let got = f16_forward(&x, |x| net.forward(x));
    let d = max_abs_diff(&got, &floats(&reference["synthetic"]));
    println!("descriptor synthetic f16: max |diff| = {d:e}");
    assert!(d <= DESCRIPTOR_TOL, "f16 descriptor off by {d}");
}

/// Detector box corners and landmarks (in face heights) and scores in f16 against f32, on
/// every fixture the reference covers (the f32 path is held to the reference by
/// tests/golden_retinaface.rs).
const DETECTOR_PX_TOL: f32 = 0.05;
const DETECTOR_SCORE_TOL: f32 = 1e-2;

#[test]
fn detector_in_f16_finds_the_same_faces_as_in_f32() {
    use facegate::nn::retinaface::{DecodeParams, RetinaFace};
    use facegate::preprocess::decode::{decode_rgb, DecodeLimits};

    let net = RetinaFace::load(&model_file("retinaface_mnet025.onnx"), &Device::Cpu).unwrap();
    let r = read_json(&shared_dir().join("models/reference/retinaface_reference.json"));
    let params = DecodeParams::default();
    let (mut px, mut score) = (0f32, 0f32);
    for name in r["images"].as_object().unwrap().keys() {
        let rgb = decode_rgb(
            &std::fs::read(fixture(name)).unwrap(),
            &DecodeLimits::default(),
        )
        .unwrap();
        let f32s = net.detect_images_in(&[&rgb], &params, DType::F32).unwrap();
        let f16s = net.detect_images_in(&[&rgb], &params, DType::F16).unwrap();
        assert_eq!(f32s[0].len(), f16s[0].len(), "{name}: face count");
        assert!(!f32s[0].is_empty(), "{name}: no face");
        let points = |d: &facegate::nn::retinaface::Detection| -> Vec<f32> {
            d.bbox
                .iter()
                .chain(d.landmarks.iter().flatten())
                .copied()
                .collect()
        };
        // Faces of nearly equal score may swap places: pair each with its nearest.
        for a in &f32s[0] {
            let near =
                |x: &facegate::nn::retinaface::Detection| max_abs_diff(&points(a), &points(x));
            let b = f16s[0]
                .iter()
                .min_by(|x, y| near(x).total_cmp(&near(y)))
                .unwrap();
            // In face heights: f16's error on the regressed offsets scales with the box.
            px = px.max(near(b) / (a.bbox[3] - a.bbox[1]).max(1.0));
            score = score.max((a.score - b.score).abs());
        }
        println!("{name}: {} faces", f32s[0].len());
    }
    println!("detector f16 vs f32: max |point| = {px:e} face heights, max |score| = {score:e}");
    assert!(
        px <= DETECTOR_PX_TOL && score <= DETECTOR_SCORE_TOL,
        "px {px}, score {score}"
    );
}
