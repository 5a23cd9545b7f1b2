//! The engine end to end on real photos and on nuaa-dev: verdicts, rejections, bad input,
//! batching, and accuracy guards (PAD and matching) that fail if the pipeline regresses.

mod common;

use std::sync::OnceLock;

use candle_core::Device;
use common::*;
use facegate::engine::{AnalyzeOptions, Engine, EngineConfig, Rejection};
use facegate::eval::{eer, pad_rates, tar_at_far};
use facegate::Error;

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| {
        let cfg = EngineConfig {
            models_dir: models_dir(),
            ..EngineConfig::default()
        };
        Engine::load(cfg, Device::Cpu).expect("engine loads (run `facegate models fetch`)")
    })
}

fn analyze(name: &str) -> facegate::engine::Analysis {
    let bytes = std::fs::read(fixture(name)).unwrap();
    engine()
        .analyze(&bytes, &AnalyzeOptions::default())
        .unwrap()
}

#[test]
fn live_photo_is_live() {
    let a = analyze("image_T1.jpg");
    assert_eq!(
        (a.width, a.height),
        (480, 640),
        "EXIF orientation must be applied"
    );
    assert!(a.rejection.is_none(), "{:?}", a.rejection);
    let l = a.liveness.expect("liveness");
    assert!(l.is_live && l.probability > 0.9, "{l:?}");
    assert_eq!(l.networks.len(), 2);
    let q = a.quality.unwrap();
    assert!(q.score > 0.3 && q.iod_px > 50.0, "{q:?}");
}

#[test]
fn print_and_replay_attacks_are_spoof() {
    for name in ["image_F1.jpg", "image_F2.jpg"] {
        let a = analyze(name);
        assert!(a.rejection.is_none(), "{name}: {:?}", a.rejection);
        let l = a.liveness.expect("liveness");
        assert!(!l.is_live && l.probability < 0.5, "{name}: {l:?}");
    }
}

#[test]
fn group_photo_is_rejected_with_too_many_faces() {
    let a = analyze("group-1.jpg");
    assert!(a.faces.len() > 2, "{}", a.faces.len());
    assert_eq!(a.rejection.map(|r| r.code), Some(Rejection::TooManyFaces));
    assert!(a.liveness.is_none());
}

#[test]
fn bad_input_gives_clear_errors() {
    let e = engine();
    let o = AnalyzeOptions::default();
    assert!(matches!(e.analyze(&[], &o), Err(Error::EmptyImage)));
    assert!(matches!(
        e.analyze(b"hello world", &o),
        Err(Error::UnsupportedFormat)
    ));
    let mut truncated = std::fs::read(fixture("image_T1.jpg")).unwrap();
    truncated.truncate(2000);
    match e.analyze(&truncated, &o) {
        Err(Error::CorruptImage(_)) => {}
        other => panic!("truncated JPEG: {other:?}"),
    }
}

#[test]
fn batch_results_equal_single_results() {
    // Images of different sizes in one batch: on CPU each image runs on its own (nothing is
    // padded to a partner's size), so a batch gives exactly the single-image results.
    let e = engine();
    let o = AnalyzeOptions {
        template: true,
        ..AnalyzeOptions::default()
    };
    let files = ["image_T1.jpg", "person-linda.jpg", "image_F2.jpg"];
    let bytes: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(fixture(f)).unwrap())
        .collect();
    let sizes: Vec<_> = bytes
        .iter()
        .map(|b| {
            let a = e.analyze(b, &o).unwrap();
            (a.width, a.height)
        })
        .collect();
    assert_ne!(sizes[0], sizes[1], "the batch must mix image sizes");
    let mut refs: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
    refs.push(b"junk");
    let batch = e.analyze_batch(&refs, &o);
    assert!(batch[3].is_err(), "a bad image fails alone");
    for (i, b) in bytes.iter().enumerate() {
        let single = e.analyze(b, &o).unwrap();
        let got = batch[i].as_ref().unwrap();
        let boxes = |a: &facegate::engine::Analysis| -> Vec<[f32; 4]> {
            a.faces.iter().map(|f| f.bbox).collect()
        };
        assert_eq!(boxes(got), boxes(&single), "{}", files[i]);
        let (l1, l2) = (single.liveness.unwrap(), got.liveness.clone().unwrap());
        assert_eq!(l1.score, l2.score, "{}", files[i]);
        assert_eq!(
            single.template.unwrap().descriptor,
            got.template.clone().unwrap().descriptor,
            "{}",
            files[i]
        );
    }
}

#[test]
fn templates_match_the_same_face_and_not_others() {
    let e = engine();
    let o = AnalyzeOptions {
        template: true,
        ignore_quality: true,
        liveness: false,
        ..AnalyzeOptions::default()
    };
    let dir = shared_dir().join("datasets/nuaa-dev/live");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    let t = |n: &std::ffi::OsString| {
        let bytes = std::fs::read(dir.join(n)).unwrap();
        e.analyze(&bytes, &o).unwrap().template.expect("template")
    };
    let a0 = &names[0];
    let same = names
        .iter()
        .find(|n| *n != a0 && n.to_str().unwrap()[..4] == a0.to_str().unwrap()[..4])
        .unwrap();
    let other = names
        .iter()
        .find(|n| n.to_str().unwrap()[..4] != a0.to_str().unwrap()[..4])
        .unwrap();
    let (ta, ts, to) = (t(a0), t(same), t(other));
    assert_eq!(ta.descriptor.len(), 128);
    let thr = facegate::engine::template::DEFAULT_MATCH_THRESHOLD;
    let m_same = ta.compare(&ts, thr).unwrap();
    let m_other = ta.compare(&to, thr).unwrap();
    assert!(m_same.distance < m_other.distance, "{m_same:?} {m_other:?}");
    assert!(!m_other.is_match, "{m_other:?}");
}

fn nuaa_files(sub: &str) -> Vec<std::path::PathBuf> {
    let dir = shared_dir().join("datasets/nuaa-dev").join(sub);
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// PAD accuracy on nuaa-dev must stay better than the upstream pipeline (ACER 20.8 % at its
/// threshold, EER 8.7 %): guards at ACER 15 % (REGULAR) and EER 12 %. Measured: 11.5 % / 9.5 %.
#[test]
fn nuaa_dev_pad_accuracy_guard() {
    let e = engine();
    let o = AnalyzeOptions {
        ignore_quality: true,
        ..AnalyzeOptions::default()
    };
    let scores = |files: Vec<std::path::PathBuf>| -> Vec<f32> {
        files
            .chunks(16)
            .flat_map(|c| {
                let bytes: Vec<Vec<u8>> = c.iter().map(|p| std::fs::read(p).unwrap()).collect();
                let refs: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
                e.analyze_batch(&refs, &o)
                    .into_iter()
                    .map(|r| {
                        r.ok()
                            .and_then(|a| a.liveness)
                            .map_or(f32::NEG_INFINITY, |l| l.score)
                    })
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let live = scores(nuaa_files("live"));
    let spoof = scores(nuaa_files("spoof"));
    assert_eq!((live.len(), spoof.len()), (200, 200));
    let offset = e.config().calibrations.regular.offset;
    let r = pad_rates(&live, &spoof, offset);
    let (eer_v, _) = eer(&live, &spoof);
    println!(
        "nuaa-dev: APCER {:.3} BPCER {:.3} ACER {:.3} EER {:.3}",
        r.apcer, r.bpcer, r.acer, eer_v
    );
    assert!(r.acer < 0.15, "ACER {}", r.acer);
    assert!(eer_v < 0.12, "EER {eer_v}");
}

/// Face matching on nuaa-dev live crops. Guard: TAR >= 80 % at FAR 1 % (measured 86.7 %;
/// dlib's own pipeline: 83.6 %).
#[test]
fn nuaa_dev_matching_guard() {
    let e = engine();
    let o = AnalyzeOptions {
        template: true,
        liveness: false,
        ignore_quality: true,
        ..AnalyzeOptions::default()
    };
    let files = nuaa_files("live");
    let ids: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap()[..4].to_string())
        .collect();
    let templates: Vec<_> = files
        .chunks(16)
        .flat_map(|c| {
            let bytes: Vec<Vec<u8>> = c.iter().map(|p| std::fs::read(p).unwrap()).collect();
            let refs: Vec<&[u8]> = bytes.iter().map(|b| b.as_slice()).collect();
            e.analyze_batch(&refs, &o)
                .into_iter()
                .map(|r| r.ok().and_then(|a| a.template))
                .collect::<Vec<_>>()
        })
        .collect();
    let (genuine, impostor) = facegate::cli::pair_distances(&ids, &templates);
    assert_eq!((genuine.len(), impostor.len()), (3705, 16195));
    let (tar1, thr1, _) = tar_at_far(&genuine, &impostor, 0.01);
    let (tar01, thr01, _) = tar_at_far(&genuine, &impostor, 0.001);
    println!(
        "TAR {tar1:.3} at FAR 1 % (d <= {thr1:.3}), TAR {tar01:.3} at FAR 0.1 % (d <= {thr01:.3})"
    );
    assert!(tar1 >= 0.80, "TAR@FAR1% {tar1}");
}

/// The detection cascade (fast pass at `fast_max_side`, full pass when it finds nothing or only
/// a small face) finds the same faces as full-size detection on every fixture photo.
#[test]
fn detection_cascade_finds_the_same_faces() {
    let full = Engine::load(
        EngineConfig {
            models_dir: models_dir(),
            load_descriptor: false,
            detection: facegate::engine::DetectionConfig {
                fast_max_side: 0,
                ..Default::default()
            },
            ..EngineConfig::default()
        },
        Device::Cpu,
    )
    .unwrap();
    let cascade = engine();
    assert!(cascade.config().detection.fast_max_side > 0);
    let dir = shared_dir().join("fixtures/faces");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.retain(|p| p.extension().is_some_and(|e| e == "jpg"));
    assert!(names.len() >= 7);
    for p in names {
        let bytes = std::fs::read(&p).unwrap();
        let (a, b) = (
            cascade.prepare(&bytes).unwrap(),
            full.prepare(&bytes).unwrap(),
        );
        let fa = cascade.detect(&[&a]).pop().unwrap().unwrap();
        let fb = full.detect(&[&b]).pop().unwrap().unwrap();
        assert_eq!(fa.len(), fb.len(), "{}: face count", p.display());
        if let (Some(x), Some(y)) = (fa.first(), fb.first()) {
            let h = y.bbox[3] - y.bbox[1];
            for k in 0..4 {
                assert!(
                    (x.bbox[k] - y.bbox[k]).abs() < 0.1 * h,
                    "{}: box {:?} vs {:?}",
                    p.display(),
                    x.bbox,
                    y.bbox
                );
            }
        }
    }
}

#[test]
fn one_failing_image_never_fails_its_batch_partners() {
    let e = engine();
    let read = |n: &str| std::fs::read(fixture(n)).unwrap();
    let good = e.prepare(&read("image_T1.jpg")).unwrap();
    let other = e.prepare(&read("image_F2.jpg")).unwrap();
    // An image whose detector copy is empty fails in the detection stage, on its own.
    let mut broken = e.prepare(&read("person-linda.jpg")).unwrap();
    broken.det_image = image::RgbImage::new(0, 0);
    broken.fast_image = None;

    let dets = e.detect(&[&good, &broken, &other]);
    assert_eq!(dets.len(), 3);
    assert!(dets[1].is_err(), "{:?}", dets[1]);
    for (i, alone) in [(0, &good), (2, &other)] {
        let single = e.detect(&[alone]).pop().unwrap().unwrap();
        let faces = dets[i].as_ref().unwrap();
        assert_eq!(faces.len(), single.len());
        assert_eq!(faces[0].bbox, single[0].bbox, "image {i}");
    }

    // The whole pipeline: a broken image, an undecodable one, and two good ones in one batch
    // give the good ones exactly their single-image results.
    let opts = AnalyzeOptions {
        template: true,
        ..AnalyzeOptions::default()
    };
    let alone: Vec<_> = [&good, &other]
        .iter()
        .map(|p| {
            e.analyze_prepared(vec![Ok((*p).clone())], &opts)
                .pop()
                .unwrap()
                .unwrap()
        })
        .collect();
    let mixed = e.analyze_prepared(
        vec![
            Ok(good.clone()),
            Ok(broken),
            Err(Error::UnsupportedFormat),
            Ok(other.clone()),
        ],
        &opts,
    );
    assert_eq!(mixed.len(), 4);
    assert!(
        mixed[1].is_err(),
        "{:?}",
        mixed[1].as_ref().map(|a| &a.faces)
    );
    assert!(matches!(mixed[2], Err(Error::UnsupportedFormat)));
    for (m, a) in [(&mixed[0], &alone[0]), (&mixed[3], &alone[1])] {
        let m = m.as_ref().expect("partner succeeded");
        assert_eq!(m.liveness, a.liveness);
        assert_eq!(
            m.template.as_ref().map(|t| &t.descriptor),
            a.template.as_ref().map(|t| &t.descriptor)
        );
        assert!(m.liveness.is_some());
    }
}

#[test]
fn landmarks_measure_real_faces_and_a_mirror_turns_the_head_the_other_way() {
    let e = engine();
    let bytes = std::fs::read(fixture("cgi-model-1.jpg")).unwrap();
    let mut p = e.prepare(&bytes).unwrap();
    let faces = e.detect(&[&p]).pop().unwrap().unwrap();
    let face = &faces[0];
    // The landmarks are found in the pixels the face is read from (cgi-model-1, 0.9 MP, is
    // decoded whole) and mapped to full resolution.
    e.assess(&mut p, faces.clone(), &AnalyzeOptions::default());
    let view = p.view(face);
    assert_eq!(view.scale, 1.0);
    let shape = e
        .shapes(&[(view.image, &view.face(face))])
        .pop()
        .unwrap()
        .unwrap();
    let shape = view.shape_to_full(shape);
    assert_eq!(shape.points.len(), 68);
    // The 68-point eye centres agree with the detector's own eye landmarks.
    let iod = (face.landmarks[1][0] - face.landmarks[0][0]).abs();
    for k in 0..2 {
        let d = ((shape.eye_centers[k][0] - face.landmarks[k][0]).powi(2)
            + (shape.eye_centers[k][1] - face.landmarks[k][1]).powi(2))
        .sqrt();
        assert!(d < 0.2 * iod, "eye {k}: {d} px off, IOD {iod}");
    }
    assert!(shape.eye_openness.iter().all(|&o| o > 0.15), "{shape:?}");
    println!(
        "cgi-model-1: yaw {:.1} pitch {:.1} roll {:.1}, eyes {:?}, mouth {:.2}",
        shape.yaw_deg, shape.pitch_deg, shape.roll_deg, shape.eye_openness, shape.mouth_openness
    );

    // The mirror image: the same face turned the other way, the eye line tilted the other way.
    let mirrored = image::imageops::flip_horizontal(&p.image);
    let m = e.prepare_image(mirrored);
    let mface = e.detect(&[&m]).pop().unwrap().unwrap().remove(0);
    let ms = e.shapes(&[(&m.image, &mface)]).pop().unwrap().unwrap();
    println!(
        "mirrored: yaw {:.1} pitch {:.1} roll {:.1}",
        ms.yaw_deg, ms.pitch_deg, ms.roll_deg
    );
    assert!(
        (ms.yaw_deg + shape.yaw_deg).abs() < 6.0,
        "{} vs {}",
        ms.yaw_deg,
        shape.yaw_deg
    );
    assert!(
        (ms.roll_deg + shape.roll_deg).abs() < 4.0,
        "{} vs {}",
        ms.roll_deg,
        shape.roll_deg
    );
    assert!((ms.pitch_deg - shape.pitch_deg).abs() < 6.0);

    // Without the network loaded, the stage says so per face.
    let none = Engine::load(
        EngineConfig {
            models_dir: models_dir(),
            load_descriptor: false,
            load_landmarks: false,
            ..EngineConfig::default()
        },
        Device::Cpu,
    )
    .unwrap();
    let r = none.shapes(&[(&p.image, face)]).pop().unwrap();
    assert_eq!(r.unwrap_err().kind(), "unavailable");
}
