//! MiniFASNet logits against the upstream PyTorch outputs in `../shared/models/reference`.

mod common;

use candle_core::{Device, Tensor};
use common::*;
use facegate::nn::minifasnet::{MiniFasNet, Variant};

const NETS: [(&str, Variant); 2] = [
    ("minifasnet_minifasnetv2_scale2p7", Variant::V2),
    ("minifasnet_minifasnetv1se_scale4p0", Variant::V1SE),
];

/// Tolerance on logits: the brief asks for 1e-3; upstream reports agreement near 1e-4.
const TOL: f32 = 1e-3;

fn load(name: &str, v: Variant) -> MiniFasNet {
    let p = model_file(&format!("{name}.safetensors"));
    MiniFasNet::load(&p, v, &Device::Cpu).expect("load")
}

fn synthetic() -> Tensor {
    let mut data = vec![0f32; 3 * 80 * 80];
    for y in 0..80usize {
        for x in 0..80usize {
            let i = y * 80 + x;
            data[i] = ((3 * x + 5 * y) % 256) as f32;
            data[6400 + i] = ((7 * x + 2 * y + 40) % 256) as f32;
            data[12800 + i] = ((x * y) % 256) as f32;
        }
    }
    Tensor::from_vec(data, (1, 3, 80, 80), &Device::Cpu).unwrap()
}

/// Reads an RGB PNG crop into a (1,3,80,80) BGR tensor.
fn crop_png(name: &str) -> Tensor {
    let p = shared_dir().join("models/reference").join(name);
    let img = image::open(&p).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (80, 80));
    let mut data = vec![0f32; 3 * 6400];
    for (x, y, px) in img.enumerate_pixels() {
        let i = (y * 80 + x) as usize;
        data[i] = px[2] as f32;
        data[6400 + i] = px[1] as f32;
        data[12800 + i] = px[0] as f32;
    }
    Tensor::from_vec(data, (1, 3, 80, 80), &Device::Cpu).unwrap()
}

fn logits_of(v: &serde_json::Value) -> Vec<f32> {
    v["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn synthetic_input_matches_upstream() {
    println!(
        "CPU kernels: {} (available: {:?})",
        facegate::nn::cpu::Isa::detect().name(),
        facegate::nn::cpu::Isa::available()
    );
    let r = read_json(&shared_dir().join("models/reference/minifasnet_reference.json"));
    for (name, v) in NETS {
        let net = load(name, v);
        let got: Vec<f32> = net
            .forward(&synthetic())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want = logits_of(&r["synthetic"][name]);
        let d = max_abs_diff(&got, &want);
        println!("{name} synthetic: max |diff| = {d:e}");
        assert!(d < TOL, "{name}: got {got:?}, want {want:?}");
    }
}

#[test]
fn reference_crops_match_upstream_and_batch_equals_singles() {
    let r = read_json(&shared_dir().join("models/reference/minifasnet_reference.json"));
    let images = r["images"].as_object().unwrap();
    assert_eq!(images.len(), 3);
    for (name, v) in NETS {
        let net = load(name, v);
        let mut crops = Vec::new();
        let mut wants = Vec::new();
        for (_, img) in images {
            let m = &img["models"][name];
            crops.push(crop_png(m["crop_png"].as_str().unwrap()));
            wants.push(logits_of(m));
        }
        // One batch of three must equal the references (and hence the singles).
        let batch = Tensor::cat(&crops, 0).unwrap();
        let out: Vec<Vec<f32>> = net.forward(&batch).unwrap().to_vec2().unwrap();
        for (i, (got, want)) in out.iter().zip(&wants).enumerate() {
            let d = max_abs_diff(got, want);
            println!("{name} crop {i}: max |diff| = {d:e}");
            assert!(d < TOL, "{name} crop {i}: got {got:?}, want {want:?}");
            let single: Vec<f32> = net
                .forward(&crops[i])
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert!(max_abs_diff(&single, got) < 1e-4, "batch and single differ");
        }
    }
}

/// Our crop rule + OpenCV-compatible resize reproduce upstream's 80x80 crops from the photo and
/// upstream's detector box. Both decode the JPEG with libjpeg-turbo, so the crops are expected
/// to be identical: at most 1 grey level per channel (rounding), mean under 0.01.
#[test]
fn crop_rule_reproduces_upstream_crops() {
    use facegate::preprocess::{
        crop::crop_rgb,
        decode::{decode_rgb, DecodeLimits},
    };
    let r = read_json(&shared_dir().join("models/reference/minifasnet_reference.json"));
    for (file, img) in r["images"].as_object().unwrap() {
        let bytes = std::fs::read(fixture(file)).unwrap();
        let photo = decode_rgb(&bytes, &DecodeLimits::default()).unwrap();
        let b: Vec<f32> = img["bbox_xywh_from_upstream_detector"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        for (name, scale) in [
            ("minifasnet_minifasnetv2_scale2p7", 2.7f32),
            ("minifasnet_minifasnetv1se_scale4p0", 4.0),
        ] {
            let got = crop_rgb(&photo, [b[0], b[1], b[2], b[3]], scale, 80);
            let png = shared_dir()
                .join("models/reference")
                .join(img["models"][name]["crop_png"].as_str().unwrap());
            let want = image::open(&png).unwrap().to_rgb8().into_raw();
            let diffs: Vec<i32> = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (*a as i32 - *b as i32).abs())
                .collect();
            let max = diffs.iter().copied().max().unwrap();
            let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
            println!("{file} {name}: crop max diff {max}, mean {mean:.4}");
            assert!(
                max <= 1 && mean < 0.01,
                "{file} {name}: max {max}, mean {mean}"
            );
        }
    }
}

/// The CelebA-Spoof MiniFASNetV2-SE (`../shared/models/minifasnet-celeba`): 128 px RGB in 0..1.
mod celeba {
    use super::*;
    use facegate::nn::minifasnet::CELEBA_INPUT_SIZE as S;

    /// Its logits agree with ONNX Runtime's to about 1e-5; the README asks for ~1e-4.
    const TOL: f32 = 1e-4;

    fn reference() -> serde_json::Value {
        read_json(&shared_dir().join("models/minifasnet-celeba/minifasnet_celeba_reference.json"))
    }

    fn net() -> MiniFasNet {
        let p = model_file("minifasnetv2se_celeba_128.onnx");
        MiniFasNet::load(&p, Variant::V2SeCeleba, &Device::Cpu).expect("load")
    }

    fn logits(net: &MiniFasNet, x: &Tensor) -> Vec<f32> {
        net.forward(x)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    /// The reference's synthetic planes: R = (3x+5y) mod 256, G = (7x+2y+40) mod 256,
    /// B = (xy) mod 256, each over 255.
    fn synthetic() -> Tensor {
        let mut data = vec![0f32; 3 * S * S];
        for y in 0..S {
            for x in 0..S {
                let i = y * S + x;
                data[i] = ((3 * x + 5 * y) % 256) as f32 / 255.0;
                data[S * S + i] = ((7 * x + 2 * y + 40) % 256) as f32 / 255.0;
                data[2 * S * S + i] = ((x * y) % 256) as f32 / 255.0;
            }
        }
        Tensor::from_vec(data, (1, 3, S, S), &Device::Cpu).unwrap()
    }

    /// A lossless 128 px crop as the network's input: RGB over 255, CHW.
    fn crop(name: &str) -> Tensor {
        let p = shared_dir().join("models/minifasnet-celeba").join(name);
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (S as u32, S as u32));
        let mut data = vec![0f32; 3 * S * S];
        for (x, y, px) in img.enumerate_pixels() {
            let i = y as usize * S + x as usize;
            for c in 0..3 {
                data[c * S * S + i] = f32::from(px[c]) / 255.0;
            }
        }
        Tensor::from_vec(data, (1, 3, S, S), &Device::Cpu).unwrap()
    }

    #[test]
    fn synthetic_input_and_fixture_crops_match_onnx_runtime() {
        println!("CPU kernels: {}", facegate::nn::cpu::Isa::detect().name());
        let r = reference();
        let net = net();
        let got = logits(&net, &synthetic());
        let d = max_abs_diff(&got, &logits_of(&r["synthetic"]));
        println!("celeba synthetic: max |diff| = {d:e}");
        assert!(d < TOL, "synthetic: got {got:?}, want {}", r["synthetic"]);
        for (fixture, c) in r["crops"].as_object().unwrap() {
            let got = logits(&net, &crop(c["png"].as_str().unwrap()));
            let d = max_abs_diff(&got, &logits_of(c));
            println!("celeba {fixture}: max |diff| = {d:e}");
            assert!(d < TOL, "{fixture}: got {got:?}, want {}", c["logits"]);
        }
    }

    #[test]
    fn a_batch_equals_its_members() {
        let net = net();
        let a = synthetic();
        let b = crop("image_T1_celeba_crop128.png");
        let both = Tensor::cat(&[&a, &b], 0).unwrap();
        let batch = logits(&net, &both);
        let single: Vec<f32> = [logits(&net, &a), logits(&net, &b)].concat();
        assert!(
            max_abs_diff(&batch, &single) < 1e-5,
            "{batch:?} vs {single:?}"
        );
    }
}

/// The CelebA crop rule on the fixtures against the reference's exact network inputs.
mod celeba_crop {
    use super::*;
    use facegate::nn::minifasnet::CELEBA_INPUT_SIZE as S;
    use facegate::preprocess::crop::{celeba_crop, pack_rgb_unit};
    use facegate::preprocess::decode::{decode_rgb, DecodeLimits};

    /// Decoding (zune-jpeg vs libjpeg) and rounding move a few pixels by a level or two; the
    /// logits then agree to a few hundredths.
    #[test]
    fn crops_of_the_reference_boxes_match_the_reference_inputs() {
        let r = read_json(
            &shared_dir().join("models/minifasnet-celeba/minifasnet_celeba_reference.json"),
        );
        let net = MiniFasNet::load(
            &model_file("minifasnetv2se_celeba_128.onnx"),
            Variant::V2SeCeleba,
            &Device::Cpu,
        )
        .unwrap();
        for (fixture, c) in r["crops"].as_object().unwrap() {
            let bytes = std::fs::read(common::fixture(fixture)).unwrap();
            let img = decode_rgb(&bytes, &DecodeLimits::default()).unwrap();
            let b: Vec<f32> = c["face_box_x1y1x2y2"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            let ours = celeba_crop(&img, [b[0], b[1], b[2], b[3]], S);
            let png = image::open(
                shared_dir()
                    .join("models/minifasnet-celeba")
                    .join(c["png"].as_str().unwrap()),
            )
            .unwrap()
            .to_rgb8()
            .into_raw();
            let diffs: Vec<i32> = ours
                .iter()
                .zip(&png)
                .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
                .collect();
            let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
            let max = diffs.iter().copied().max().unwrap();
            let got: Vec<f32> = net
                .forward(&pack_rgb_unit(&[ours], S, &Device::Cpu).unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let d = max_abs_diff(&got, &logits_of(c));
            println!("{fixture}: pixels mean |diff| {mean:.3}, max {max}; logits max |diff| {d:e}");
            // The same JPEG decoder (libjpeg-turbo); the filters' rounding may differ by a
            // level here and there.
            assert!(mean < 0.05 && max <= 1, "{fixture}: mean {mean}, max {max}");
            assert!(d < 0.01, "{fixture}: logits {got:?} vs {}", c["logits"]);
        }
    }
}
