//! Golden test: the candle port of face-api's FaceLandmark68Net against the raw outputs of the
//! upstream JavaScript (@vladmandic/face-api 1.7.15 on tfjs 4.22, CPU backend), stored in
//! tests/data/faceapi_landmarks_reference.json by tools/faceapi_landmarks_reference.mjs.

mod common;

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use common::{fixture, model_file};
use facegate::nn::face_landmarks::{FaceLandmarks, INPUT_SIZE, LANDMARKS};
use facegate::preprocess::decode::{decode_rgb, DecodeLimits};
use facegate::preprocess::square::square_crop;
use serde_json::Value;

/// Largest difference of any output on identical input (0..1 units of the crop).
const TOLERANCE: f32 = 1e-4;

fn load_net() -> FaceLandmarks {
    let manifest = model_file("face-api/face_landmark_68_model-weights_manifest.json");
    FaceLandmarks::load(&manifest, &Device::Cpu).expect("load landmark model")
}

fn reference() -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/faceapi_landmarks_reference.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read reference")).expect("json")
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

/// Planar (3, 112, 112) crop from a per-pixel RGB function, as the JS script builds it.
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

fn run(net: &FaceLandmarks, crops: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let t = Tensor::from_vec(
        crops.concat(),
        (crops.len(), 3, INPUT_SIZE, INPUT_SIZE),
        &Device::Cpu,
    )
    .unwrap();
    net.forward(&t).unwrap().to_vec2().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn synthetic_inputs_match_upstream_alone_and_in_a_batch() {
    let net = load_net();
    let r = reference();
    let s1 = pattern(|x, y| [3 * x + 5 * y, 7 * x + 2 * y + 40, x * y]);
    let s2 = pattern(|x, y| [x + 2 * y, 5 * x * y + 7, 255 - x + y]);
    let single = run(&net, std::slice::from_ref(&s1));
    let pair = run(&net, &[s1, s2]);
    assert_eq!(single[0].len(), 2 * LANDMARKS);
    let d1 = max_diff(&single[0], &floats(&r["synthetic"]));
    let d2 = max_diff(&pair[1], &floats(&r["synthetic2"]));
    let batch = max_diff(&single[0], &pair[0]);
    println!("synthetic max diff {d1:.2e}, synthetic2 {d2:.2e}, batch vs single {batch:.2e}");
    assert!(d1 <= TOLERANCE && d2 <= TOLERANCE, "{d1} {d2}");
    assert!(batch <= 1e-6, "{batch}");
}

#[test]
fn a_real_face_lands_where_upstream_puts_it() {
    let net = load_net();
    let r = reference();
    let real = &r["real"];
    let b: Vec<i64> = real["box"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    let name = real["image"].as_str().unwrap();
    let img = decode_rgb(
        &std::fs::read(fixture(name)).unwrap(),
        &DecodeLimits::default(),
    )
    .unwrap();
    let crop = square_crop(&img, b[0], b[1], b[2] as u32, INPUT_SIZE);
    let got = run(&net, &[crop]).pop().unwrap();
    let want = floats(&real["output"]);
    // The reference decoded the JPEG with jpeg-js, facegate with zune-jpeg: pixels differ by
    // a few levels, so points are compared in pixels of the 112x112 crop.
    let px: Vec<f32> = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs() * INPUT_SIZE as f32)
        .collect();
    let worst = px.iter().copied().fold(0.0, f32::max);
    let mean = px.iter().sum::<f32>() / px.len() as f32;
    println!("{name}: landmark offsets vs upstream, max {worst:.3} px, mean {mean:.3} px (of 112)");
    assert!(worst < 1.0 && mean < 0.25, "max {worst} px, mean {mean} px");
    // And the points are a face: the jaw's ends lie left and right of the nose tip.
    let (jaw0, jaw16, nose) = (got[0], got[32], got[60]);
    assert!(jaw0 < nose && nose < jaw16, "{jaw0} {nose} {jaw16}");
}
