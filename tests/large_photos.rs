//! Large photos decoded reduced (DCT-domain 1/2, 1/4, 1/8) give the decisions of the
//! full-resolution path: upscaled copies of every fixture, analysed both ways, agree on the
//! verdict, the rejection and the face, with scores within the tolerances `docs/operations.md`
//! states; a small face in a large image is decoded again around itself, finer.

mod common;

use std::sync::OnceLock;

use candle_core::Device;
use common::*;
use facegate::bench::rescaled_jpeg;
use facegate::engine::{Analysis, AnalyzeOptions, Engine, EngineConfig};
use facegate::preprocess::decode::{
    decode_region, decode_rgb, decode_scaled, encode_jpeg, DecodeLimits,
};
use image::RgbImage;

/// Engines with reducing on (the default) and off.
fn engines() -> &'static (Engine, Engine) {
    static E: OnceLock<(Engine, Engine)> = OnceLock::new();
    E.get_or_init(|| {
        let cfg = EngineConfig {
            models_dir: models_dir(),
            ..EngineConfig::default()
        };
        let mut full = cfg.clone();
        full.decode.reduce = false;
        (
            Engine::load(cfg, Device::Cpu).expect("engine loads (run `facegate models fetch`)"),
            Engine::load(full, Device::Cpu).expect("engine loads"),
        )
    })
}

fn opts() -> AnalyzeOptions {
    AnalyzeOptions {
        template: true,
        landmarks: true,
        ..AnalyzeOptions::default()
    }
}

/// Largest score differences allowed between the reduced and the full-resolution path.
const MAX_LIVE_DIFF: f32 = 0.15;
const MAX_QUALITY_DIFF: f32 = 0.02;
const MAX_TEMPLATE_DISTANCE: f32 = 0.10;
/// Largest face box difference, as a fraction of the box height.
const MAX_BOX_DIFF: f32 = 0.02;
const MAX_YAW_DIFF_DEG: f32 = 2.0;

/// Checks that `reduced` decided what `full` decided, within the tolerances; returns the
/// differences (live score, quality score, template distance, box, yaw).
fn same_decisions(what: &str, reduced: &Analysis, full: &Analysis) -> [f32; 5] {
    assert_eq!(
        (reduced.width, reduced.height),
        (full.width, full.height),
        "{what}: full-resolution size"
    );
    let code = |a: &Analysis| a.rejection.as_ref().map(|r| r.code);
    assert_eq!(code(reduced), code(full), "{what}: rejection");
    // The same faces are found on both paths; in a crowd (group-1's ten faces of about the
    // same size) one near the detector's threshold may come or go.
    let (nr, nf) = (reduced.faces.len(), full.faces.len());
    let slack = if nf >= 5 { 1 } else { 0 };
    assert!(nr.abs_diff(nf) <= slack, "{what}: {nr} faces found vs {nf}");
    if reduced.faces.len() != full.faces.len() {
        println!(
            "{what}: {} faces reduced, {} at full resolution",
            reduced.faces.len(),
            full.faces.len()
        );
    }
    assert_eq!(
        reduced.selected_face, full.selected_face,
        "{what}: selected face"
    );
    let mut d = [0f32; 5];
    if let (Some(r), Some(f)) = (reduced.selected_face, full.selected_face) {
        let (rb, fb) = (reduced.faces[r].bbox, full.faces[f].bbox);
        let h = fb[3] - fb[1];
        d[3] = (0..4)
            .map(|k| (rb[k] - fb[k]).abs() / h)
            .fold(0.0, f32::max);
        assert!(d[3] <= MAX_BOX_DIFF, "{what}: face box {rb:?} vs {fb:?}");
    }
    match (&reduced.liveness, &full.liveness) {
        (Some(r), Some(f)) => {
            assert_eq!(r.is_live, f.is_live, "{what}: verdict");
            d[0] = (r.fused_live - f.fused_live).abs();
            assert!(
                d[0] <= MAX_LIVE_DIFF,
                "{what}: live score {} vs {}",
                r.fused_live,
                f.fused_live
            );
        }
        (None, None) => {}
        _ => panic!("{what}: liveness on one path only"),
    }
    if let (Some(r), Some(f)) = (&reduced.quality, &full.quality) {
        d[1] = (r.score - f.score).abs();
        assert!(
            d[1] <= MAX_QUALITY_DIFF,
            "{what}: quality {} vs {}",
            r.score,
            f.score
        );
    }
    if let (Some(r), Some(f)) = (&reduced.template, &full.template) {
        d[2] = facegate::nn::face_descriptor::distance(&r.descriptor, &f.descriptor);
        assert!(
            d[2] <= MAX_TEMPLATE_DISTANCE,
            "{what}: template distance {}",
            d[2]
        );
    }
    if let (Some(r), Some(f)) = (&reduced.shape, &full.shape) {
        d[4] = (r.yaw_deg - f.yaw_deg).abs();
        assert!(
            d[4] <= MAX_YAW_DIFF_DEG,
            "{what}: yaw {} vs {}",
            r.yaw_deg,
            f.yaw_deg
        );
    }
    d
}

#[test]
fn upscaled_fixtures_get_the_same_decisions_reduced() {
    let (reduced, full) = engines();
    let mut worst = [0f32; 5];
    let mut reductions = Vec::new();
    for name in [
        "image_T1.jpg",
        "image_F1.jpg",
        "image_F2.jpg",
        "person-linda.jpg",
        "cgi-model-1.jpg",
        "ai-face.jpg",
        "group-1.jpg",
    ] {
        let src = std::fs::read(fixture(name)).unwrap();
        for side in [1920u32, 3264, 4032] {
            let jpeg = rescaled_jpeg(&src, side).unwrap();
            let r = reduced.analyze(&jpeg, &opts()).unwrap();
            let f = full.analyze(&jpeg, &opts()).unwrap();
            let d = same_decisions(&format!("{name} at {side}"), &r, &f);
            println!("{name} at {side}: {d:?}");
            for k in 0..5 {
                worst[k] = worst[k].max(d[k]);
            }
            let p = reduced.prepare(&jpeg).unwrap();
            reductions.push(p.scale);
        }
    }
    println!(
        "worst: live {:.4}, quality {:.4}, template {:.4}, box {:.4}, yaw {:.2}",
        worst[0], worst[1], worst[2], worst[3], worst[4]
    );
    // The copies were really decoded reduced, at 1/4 and 1/8 among others.
    assert!(
        reductions.contains(&4.0) && reductions.contains(&8.0),
        "{reductions:?}"
    );
}

#[test]
fn the_fixtures_themselves_are_analysed_as_before_at_their_own_size() {
    // The fixtures at their own size: up to 2.1 MP they are not reduced at all, and group-1
    // (1920x1440, decoded at 1/4) decides as at full resolution.
    let (reduced, full) = engines();
    for name in [
        "image_T1.jpg",
        "image_F2.jpg",
        "person-linda.jpg",
        "cgi-model-1.jpg",
        "group-1.jpg",
    ] {
        let jpeg = std::fs::read(fixture(name)).unwrap();
        let r = reduced.analyze(&jpeg, &opts()).unwrap();
        let f = full.analyze(&jpeg, &opts()).unwrap();
        same_decisions(name, &r, &f);
    }
    for (name, scale) in [
        ("image_T1.jpg", 1.0),
        ("cgi-model-1.jpg", 1.0),
        ("person-linda.jpg", 1.0),
        ("group-1.jpg", 4.0),
    ] {
        let jpeg = std::fs::read(fixture(name)).unwrap();
        assert_eq!(reduced.prepare(&jpeg).unwrap().scale, scale, "{name}");
    }
}

/// A textured grey canvas of `w x h` with `face` pasted at `(x, y)`.
fn canvas_with(face: &RgbImage, (w, h): (u32, u32), (x, y): (u32, u32)) -> RgbImage {
    let mut c = RgbImage::from_fn(w, h, |i, j| {
        let v = 110 + ((i * 7 + j * 13) % 23) as u8 + ((i / 40 + j / 40) % 2) as u8 * 20;
        image::Rgb([v, v, v.saturating_add(6)])
    });
    image::imageops::overlay(&mut c, face, i64::from(x), i64::from(y));
    c
}

/// Analyses `face` pasted at `at` on a canvas of `size`, checking that it is decoded at
/// `reduced` and its face again at `finer` around itself; returns the differences from the
/// full-resolution path.
fn small_face(
    what: &str,
    face: &RgbImage,
    size: (u32, u32),
    at: (u32, u32),
    (reduced_at, finer): (f32, u32),
) -> [f32; 5] {
    let (reduced, full) = engines();
    let photo = canvas_with(face, size, at);
    let jpeg = encode_jpeg(&photo, 92).unwrap();
    let mut p = reduced.prepare(&jpeg).unwrap();
    assert_eq!(p.scale, reduced_at, "{what}");
    let faces = reduced.detect(&[&p]).pop().unwrap().unwrap();
    let a = reduced.assess(&mut p, faces, &opts());
    let face = &a.faces[a.selected_face.expect("the face is found")];
    let detail = p.detail.as_ref().expect("a finer decode around the face");
    assert_eq!(detail.scale, finer as f32, "{what}");
    // Only the region the crops can reach is kept, not the whole image.
    let reach = 2.0 * 4.4 * (face.bbox[3] - face.bbox[1]) / finer as f32 + 2.0;
    let (dw, dh) = detail.image.dimensions();
    assert!(
        dw as f32 <= reach && dh as f32 <= reach,
        "{what}: {dw}x{dh}"
    );
    // The view of the face is the region, and the region's pixels are those of the whole
    // image decoded at that scale.
    assert_eq!(p.view(face).scale, finer as f32);
    let whole = decode_scaled(&jpeg, &DecodeLimits::default(), |_| finer)
        .unwrap()
        .image;
    let (ox, oy) = (
        detail.origin[0] as u32 / finer,
        detail.origin[1] as u32 / finer,
    );
    for (x, y) in [(0, 0), (dw / 2, dh / 3), (dw - 1, dh - 1)] {
        assert_eq!(
            detail.image.get_pixel(x, y),
            whole.get_pixel(ox + x, oy + y)
        );
    }
    // And the decisions are the full-resolution path's.
    let r = reduced.analyze(&jpeg, &opts()).unwrap();
    let f = full.analyze(&jpeg, &opts()).unwrap();
    let d = same_decisions(what, &r, &f);
    println!("{what}: {d:?}");
    d
}

#[test]
fn a_small_face_in_a_large_photo_is_decoded_again_around_itself() {
    let t1 = decode_rgb(
        &std::fs::read(fixture("image_T1.jpg")).unwrap(),
        &DecodeLimits::default(),
    )
    .unwrap();
    // T1 (480x640, its face about 250 px high) on a 1920x1440 canvas: 62 face rows at 1/4,
    // so the face is decoded again at full resolution around itself, and judged on exactly
    // the full-resolution path's pixels.
    let d = small_face("T1 on 1920x1440", &t1, (1920, 1440), (1300, 700), (4.0, 1));
    assert!(d[0] < 1e-3, "same pixels, same crops: live {}", d[0]);
    // T1 at 1.5 times on a 12 MP canvas: 47 rows at 1/8, decoded again at 1/2.
    let big = image::imageops::resize(&t1, 720, 960, image::imageops::FilterType::Triangle);
    small_face(
        "T1 x1.5 on 4032x3024",
        &big,
        (4032, 3024),
        (2900, 1700),
        (8.0, 2),
    );
}

#[test]
fn reduced_decodes_have_the_expected_size_orientation_and_bounds() {
    let img = RgbImage::from_fn(1000, 750, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) / 8) as u8])
    });
    let jpeg = encode_jpeg(&img, 90).unwrap();
    let l = DecodeLimits::default();
    for (s, size) in [
        (1, (1000, 750)),
        (2, (500, 375)),
        (4, (250, 188)),
        (8, (125, 94)),
    ] {
        let d = decode_scaled(&jpeg, &l, |_| s).unwrap();
        assert_eq!(
            (d.scale, d.image.dimensions(), d.full_size),
            (s, size, (1000, 750))
        );
    }
    // Not a reduction libjpeg-turbo has: full size.
    assert_eq!(decode_scaled(&jpeg, &l, |_| 3).unwrap().scale, 1);
    // The reduction is chosen from the upright size: the longer side keeps 480 pixels, and
    // images of up to 2.1 MP are decoded whole.
    assert_eq!(l.reduction_for((1000, 750)), 1);
    assert_eq!(l.reduction_for((1920, 1080)), 1);
    assert_eq!(l.reduction_for((1920, 1440)), 4);
    assert_eq!(l.reduction_for((4032, 3024)), 8);
    assert_eq!(l.reduction_for((3264, 2448)), 4);
    assert_eq!(l.reduction_for((640, 480)), 1);
    let off = DecodeLimits { reduce: false, ..l };
    assert_eq!(off.reduction_for((4032, 3024)), 1);
    // A reduced decode is the full decode averaged: within a few levels on smooth content.
    let full = decode_scaled(&jpeg, &l, |_| 1).unwrap().image;
    let half = decode_scaled(&jpeg, &l, |_| 2).unwrap().image;
    let mut worst = 0i32;
    for y in 10..360 {
        for x in 10..490 {
            let mean: i32 = (0..4)
                .map(|k| i32::from(full.get_pixel(2 * x + k % 2, 2 * y + k / 2)[1]))
                .sum::<i32>()
                / 4;
            worst = worst.max((mean - i32::from(half.get_pixel(x, y)[1])).abs());
        }
    }
    assert!(
        worst <= 12,
        "half-size decode differs from the 2x2 mean by {worst}"
    );
    // The EXIF orientation applies to the reduced image: the T1 fixture is stored sideways.
    let t1 = std::fs::read(fixture("image_T1.jpg")).unwrap();
    let d = decode_scaled(&t1, &l, |_| 2).unwrap();
    assert_eq!(
        (d.image.dimensions(), d.full_size),
        ((240, 320), (480, 640))
    );
    // The pixel bound is on the full-resolution size, whatever the reduction.
    let few = DecodeLimits {
        max_pixels: 700_000,
        ..l
    };
    let e = decode_scaled(&jpeg, &few, |_| 8).unwrap_err();
    assert!(e.to_string().contains("700000"), "{e}");
    // A CMYK (YCCK) JPEG, which libjpeg-turbo cannot turn into RGB, is decoded at full size by
    // the image crate.
    let cmyk = turbojpeg::Image {
        pixels: (0..200 * 120 * 4)
            .map(|i| (i % 97) as u8)
            .collect::<Vec<u8>>(),
        width: 200,
        pitch: 800,
        height: 120,
        format: turbojpeg::PixelFormat::CMYK,
    };
    let ycck = turbojpeg::compress(cmyk.as_deref(), 90, turbojpeg::Subsamp::None).unwrap();
    let d = decode_scaled(&ycck, &l, |_| 2).unwrap();
    assert_eq!((d.scale, d.image.dimensions()), (1, (200, 120)));
    // A PNG is decoded at full size whatever the reduction asked.
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png).unwrap();
    let d = decode_scaled(png.get_ref(), &l, |_| 4).unwrap();
    assert_eq!((d.scale, d.image.dimensions()), (1, (1000, 750)));
}

/// `jpeg` with an APP1 EXIF segment holding only the orientation tag `o` (1..=8).
fn with_orientation(jpeg: &[u8], o: u16) -> Vec<u8> {
    // TIFF header (big-endian), one IFD entry: tag 0x0112, SHORT, count 1, value o.
    let mut tiff = b"MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01".to_vec();
    tiff.extend_from_slice(&o.to_be_bytes());
    tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    let mut app1 = vec![0xFF, 0xE1];
    app1.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
    app1.extend_from_slice(b"Exif\0\0");
    app1.extend_from_slice(&tiff);
    [&jpeg[..2], &app1[..], &jpeg[2..]].concat()
}

#[test]
fn a_region_decodes_to_the_pixels_of_the_whole_image_in_every_orientation() {
    let (w, h) = (613u32, 397u32);
    let img = RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 3 % 256) as u8,
            (y * 5 % 256) as u8,
            ((x * y) % 251) as u8,
        ])
    });
    let l = DecodeLimits::default();
    for subsamp in [
        turbojpeg::Subsamp::None,
        turbojpeg::Subsamp::Sub2x2,
        turbojpeg::Subsamp::Sub2x1,
    ] {
        let raw = turbojpeg::Image {
            pixels: img.as_raw().as_slice(),
            width: w as usize,
            pitch: w as usize * 3,
            height: h as usize,
            format: turbojpeg::PixelFormat::RGB,
        };
        let base = turbojpeg::compress(raw, 90, subsamp).unwrap().to_vec();
        for o in 1..=8u16 {
            let jpeg = with_orientation(&base, o);
            for scale in [1u32, 2, 4] {
                let whole = decode_scaled(&jpeg, &l, |_| scale).unwrap();
                let (uw, uh) = whole.full_size;
                assert_eq!((uw, uh), if o >= 5 { (h, w) } else { (w, h) }, "o={o}");
                for region in [
                    [101, 57, 333, 290],
                    [0, 0, 90, 75],
                    [uw - 77, uh - 50, uw, uh],
                ] {
                    let (got, origin) = decode_region(&jpeg, &l, scale, region).unwrap();
                    let want = image::imageops::crop_imm(
                        &whole.image,
                        origin[0] / scale,
                        origin[1] / scale,
                        got.width(),
                        got.height(),
                    )
                    .to_image();
                    assert!(
                        got == want,
                        "subsampling {subsamp:?}, orientation {o}, 1/{scale}, {region:?}"
                    );
                    // The region asked is inside what came back.
                    assert!(origin[0] <= region[0] && origin[1] <= region[1]);
                    assert!(origin[0] + got.width() * scale >= region[2].min(uw));
                    assert!(origin[1] + got.height() * scale >= region[3].min(uh));
                }
            }
        }
    }
}

#[test]
fn a_small_file_declaring_a_huge_image_is_decoded_reduced() {
    // 6000x6000 of flat colour: a few tens of kilobytes that would be 108 MB of pixels.
    let img = RgbImage::from_pixel(6000, 6000, image::Rgb([120, 130, 140]));
    let jpeg = encode_jpeg(&img, 75).unwrap();
    assert!(jpeg.len() < 1 << 20, "{} bytes", jpeg.len());
    let l = DecodeLimits::default();
    let d = decode_scaled(&jpeg, &l, |s| l.reduction_for(s)).unwrap();
    assert_eq!((d.scale, d.image.dimensions()), (8, (750, 750)));
}
