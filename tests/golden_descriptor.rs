//! Golden test: the candle port of face-api's FaceRecognitionNet against descriptors computed by
//! the upstream JavaScript (@vladmandic/face-api 1.7.15 on tfjs 4.22, CPU backend), stored in
//! tests/data/faceapi_descriptor_reference.json by tools/faceapi_reference.mjs.

mod common;

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use common::{fixture, model_file};
use facegate::nn::face_descriptor::{distance, FaceDescriptor, DESCRIPTOR_LEN, INPUT_SIZE};
use serde_json::Value;

const TOLERANCE: f32 = 1e-3;

fn load_net() -> FaceDescriptor {
    let manifest = model_file("face-api/face_recognition_model-weights_manifest.json");
    FaceDescriptor::load(&manifest, &Device::Cpu).expect("load face descriptor model")
}

fn reference() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/faceapi_descriptor_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read reference")).expect("json")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// Planar (3, 150, 150) chip from a per-pixel RGB function, as the JS script builds it.
fn pattern(f: impl Fn(usize, usize) -> [usize; 3]) -> Vec<f32> {
    let n = INPUT_SIZE * INPUT_SIZE;
    let mut out = vec![0f32; 3 * n];
    for y in 0..INPUT_SIZE {
        for x in 0..INPUT_SIZE {
            let rgb = f(x, y);
            for c in 0..3 {
                out[c * n + y * INPUT_SIZE + x] = (rgb[c] % 256) as f32;
            }
        }
    }
    out
}

fn synthetic() -> Vec<f32> {
    pattern(|x, y| [3 * x + 5 * y, 7 * x + 2 * y + 40, x * y])
}

fn synthetic2() -> Vec<f32> {
    pattern(|x, y| [x + 2 * y, 5 * x * y + 7, 255 - x + y])
}

fn run(net: &FaceDescriptor, chips: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let data: Vec<f32> = chips.concat();
    let t = Tensor::from_vec(data, (chips.len(), 3, INPUT_SIZE, INPUT_SIZE), &Device::Cpu)
        .expect("tensor");
    let out = net.forward(&t).expect("forward");
    assert_eq!(out.dims(), &[chips.len(), DESCRIPTOR_LEN]);
    out.to_vec2().expect("to_vec2")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn synthetic_input_matches_faceapi() {
    let net = load_net();
    let reference = reference();
    let want = floats(&reference["synthetic"]);
    let want2 = floats(&reference["synthetic2"]);
    let got = run(&net, &[synthetic()]);
    let diff = max_abs_diff(&got[0], &want);
    println!("synthetic: max |candle - face-api| = {diff:e}");
    assert!(diff < TOLERANCE, "synthetic max diff {diff}");

    let got2 = run(&net, &[synthetic2()]);
    let diff2 = max_abs_diff(&got2[0], &want2);
    println!("synthetic2: max |candle - face-api| = {diff2:e}");
    assert!(diff2 < TOLERANCE, "synthetic2 max diff {diff2}");
    println!(
        "descriptor distance synthetic vs synthetic2: candle {}, face-api {}",
        distance(&got[0], &got2[0]),
        distance(&want, &want2)
    );
}

#[test]
fn batch_of_two_equals_two_singles() {
    let net = load_net();
    let (a, b) = (synthetic(), synthetic2());
    let batch = run(&net, &[a.clone(), b.clone()]);
    let single_a = run(&net, &[a]);
    let single_b = run(&net, &[b]);
    let d = max_abs_diff(&batch[0], &single_a[0]).max(max_abs_diff(&batch[1], &single_b[0]));
    println!("batch of 2 vs singles: max diff {d:e}");
    assert!(d < 1e-5, "batch vs single max diff {d}");
}

/// End to end on a real photo: face-api's landmarks (recorded in the reference JSON), our
/// alignment, our network, against face-api's descriptor of the JS-warped chip, on the shared
/// fixture photo person-linda.jpg.
///
/// The JS side decodes the JPEG with jpeg-js, we decode with the `image` crate; the two differ by
/// up to 34 levels on some pixels (chroma upsampling), which moves the descriptor by about 0.013
/// in distance. Fed jpeg-js's own pixels, alignment plus network agree to within 1e-6.
#[test]
fn real_chip_matches_faceapi() {
    let img = image::open(fixture("person-linda.jpg"))
        .expect("decode fixture")
        .to_rgb8();
    let reference = reference();
    let real = &reference["real"];
    let lm: Vec<[f32; 2]> = real["landmarks5"]
        .as_array()
        .expect("landmarks")
        .iter()
        .map(|p| {
            let v = floats(p);
            [v[0], v[1]]
        })
        .collect();
    let lm5 = [lm[0], lm[1], lm[2], lm[3], lm[4]];
    let chip = facegate::preprocess::align::align_face(
        img.as_raw(),
        img.width() as usize,
        img.height() as usize,
        &lm5,
    )
    .expect("align");
    let net = load_net();
    let got = run(&net, &[chip]);
    let want = floats(&real["descriptor"]);
    let diff = max_abs_diff(&got[0], &want);
    let dist = distance(&got[0], &want);
    println!("real chip: max diff {diff:e}, distance {dist}");
    assert!(dist < 0.05, "real chip distance {dist} (max diff {diff})");
}
