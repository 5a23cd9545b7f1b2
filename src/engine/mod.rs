//! The vendor-neutral engine: decode -> detect (5 landmarks) -> quality -> passive liveness
//! (two MiniFASNets) -> optional face templates. Dialects call it and render its [`Analysis`];
//! they never hold model logic.
//!
//! The work is split into stages ([`Engine::prepare`], [`Engine::detect`],
//! [`Engine::liveness`], [`Engine::describe`]) so that a batcher can queue each network
//! separately; [`Engine::analyze_batch`] chains them for a batch of images.

pub mod calibration;
pub mod pipeline;
pub mod quality;
pub mod template;

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::models::Manifest;
use crate::nn::face_descriptor::FaceDescriptor;
use crate::nn::minifasnet::{MiniFasNet, Variant, LIVE_CLASS};
use crate::nn::retinaface::{DecodeParams, Detection, RetinaFace};
use crate::preprocess::crop::{crop_rgb, mirror_rgb, pack_bgr};
use crate::preprocess::decode::{decode_rgb, DecodeLimits};
use crate::preprocess::resize::downscale_area;
use crate::{Error, Result};

pub use calibration::{Calibration, Calibrations};
pub use quality::{QualityReport, QualityThresholds, Rejection};
pub use template::{FaceTemplate, Match};

/// Mean subtracted from BGR input by the detector.
const DETECTOR_MEAN_BGR: [f32; 3] = [104.0, 117.0, 127.0];

/// Detection settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DetectionConfig {
    /// Longer side of the downscaled copy the detector sees, pixels.
    pub max_side: u32,
    /// Minimum face score.
    pub score_threshold: f32,
    /// NMS overlap threshold.
    pub nms_iou: f32,
    /// Most candidates kept before NMS.
    pub top_k: usize,
    /// Cascade: detect first on a copy this large (longer side); 0 disables the cascade.
    /// Images where that finds no face, or only a face shorter than `fast_min_face_px`, are
    /// detected again at `max_side` (a face half as tall could be missed at the small size).
    pub fast_max_side: u32,
    /// Smallest face height, in pixels of the fast copy, that the fast pass may settle on.
    pub fast_min_face_px: f32,
}

impl Default for DetectionConfig {
    fn default() -> Self {
        Self {
            max_side: 320,
            score_threshold: 0.8,
            nms_iou: 0.4,
            top_k: 750,
            fast_max_side: 192,
            fast_min_face_px: 48.0,
        }
    }
}

/// Maps this detector's face box onto the box convention MiniFASNet was trained with
/// (upstream's Caffe RetinaFace boxes are squarer and sit lower on the face).
///
/// Defaults are the mean ratios between our boxes and upstream's on the three photos of
/// `../shared/models/reference` (widths x1.18, heights x0.86, centre 0.077 of the height lower);
/// they are not tuned on any evaluation set.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct BoxAdapter {
    /// Width multiplier.
    pub scale_w: f32,
    /// Height multiplier.
    pub scale_h: f32,
    /// Centre shift right, fraction of the box width.
    pub shift_x: f32,
    /// Centre shift down, fraction of the box height.
    pub shift_y: f32,
}

impl Default for BoxAdapter {
    fn default() -> Self {
        Self {
            scale_w: 1.18,
            scale_h: 0.86,
            shift_x: 0.01,
            shift_y: 0.077,
        }
    }
}

impl BoxAdapter {
    /// The upstream-style `[x, y, w, h]` box (integer corners, as upstream reported them).
    pub fn apply(&self, bbox: [f32; 4]) -> [f32; 4] {
        let (w, h) = (bbox[2] - bbox[0], bbox[3] - bbox[1]);
        let cx = (bbox[0] + bbox[2]) / 2.0 + self.shift_x * w;
        let cy = (bbox[1] + bbox[3]) / 2.0 + self.shift_y * h;
        let (nw, nh) = ((w * self.scale_w).round(), (h * self.scale_h).round());
        [(cx - nw / 2.0).round(), (cy - nh / 2.0).round(), nw, nh]
    }
}

/// Everything the engine needs, with embedded defaults that work out of the box.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// Folder holding the files of `models/manifest.toml`.
    pub models_dir: PathBuf,
    /// Byte and pixel bounds for decoding.
    pub decode: DecodeLimits,
    /// Detector settings.
    pub detection: DetectionConfig,
    /// Quality thresholds.
    pub quality: QualityThresholds,
    /// Liveness calibration profiles.
    pub calibrations: Calibrations,
    /// Face box mapping applied before the MiniFASNet crops.
    pub pad_box: BoxAdapter,
    /// Also run every liveness network on the mirrored crop and average the two softmax
    /// outputs (doubles the liveness work; see docs/calibration.md for its effect).
    pub mirror_average: bool,
    /// Load the face descriptor network (needed for templates and matching).
    pub load_descriptor: bool,
    /// Threads that run the networks on CPU (0: one per core). The images of a batch, and the
    /// two liveness networks of each face, run side by side on this many threads, each image
    /// on one thread (the kernels are single-threaded).
    pub threads: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            models_dir: crate::models::default_models_dir(),
            decode: DecodeLimits::default(),
            detection: DetectionConfig::default(),
            quality: QualityThresholds::default(),
            calibrations: Calibrations::default(),
            pad_box: BoxAdapter::default(),
            mirror_average: false,
            load_descriptor: true,
            threads: 0,
        }
    }
}

/// What a caller wants computed for an image.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct AnalyzeOptions {
    /// Calibration used for `liveness.probability`.
    pub calibration: Calibration,
    /// Run passive liveness.
    pub liveness: bool,
    /// Extract a face template for the selected face.
    pub template: bool,
    /// Skip the quality gate (report the measurements but run liveness regardless).
    pub ignore_quality: bool,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        Self {
            calibration: Calibration::Regular,
            liveness: true,
            template: false,
            ignore_quality: false,
        }
    }
}

/// A decoded image and its downscaled copy for the detector.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Upright RGB image at full resolution.
    pub image: RgbImage,
    /// Copy whose longer side is at most `detection.max_side`.
    pub det_image: RgbImage,
    /// Multiply detector coordinates by this to get full-resolution coordinates.
    pub det_scale: f32,
    /// Smaller copy for the cascade's first pass (`detection.fast_max_side`), when enabled and
    /// smaller than `det_image`.
    pub fast_image: Option<RgbImage>,
    /// Multiply fast-pass coordinates by this to get full-resolution coordinates.
    pub fast_scale: f32,
    /// Time spent decoding and downscaling, ms.
    pub prepare_ms: f64,
}

/// A face in original-image pixels.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Face {
    /// Box `[x1, y1, x2, y2]`.
    pub bbox: [f32; 4],
    /// Detector confidence.
    pub score: f32,
    /// Left eye, right eye, nose, left and right mouth corners.
    pub landmarks: [[f32; 2]; 5],
}

/// One network's output for the selected face.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkOutput {
    /// Network name.
    pub name: String,
    /// Crop scale it was fed.
    pub crop_scale: f32,
    /// Raw logits (0: print, 1: live, 2: replay).
    pub logits: [f32; 3],
    /// Softmax of the logits.
    pub softmax: [f32; 3],
}

/// Passive liveness verdict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Liveness {
    /// Calibrated probability of a live face, 0..1; live when >= 0.5.
    pub probability: f32,
    /// Raw unbounded score (log-odds of the fused live probability).
    pub score: f32,
    /// `probability >= 0.5`.
    pub is_live: bool,
    /// Calibration used for `probability`.
    pub calibration: Calibration,
    /// Mean of the networks' live softmax (upstream's fused probability).
    pub fused_live: f32,
    /// Per-network outputs.
    pub networks: Vec<NetworkOutput>,
}

impl Liveness {
    /// Re-expresses this result under another calibration (same network outputs).
    pub fn recalibrated(&self, c: Calibration, cals: &Calibrations) -> Liveness {
        let p = calibration::probability(self.score, cals.profile(c));
        Liveness {
            probability: p,
            is_live: p >= 0.5,
            calibration: c,
            ..self.clone()
        }
    }
}

/// Stage timings, milliseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Decode and downscale.
    pub decode_ms: f64,
    /// Detector forward and decoding (the whole batch's).
    pub detect_ms: f64,
    /// Quality measurements.
    pub quality_ms: f64,
    /// Crops and both liveness networks (the whole batch's).
    pub liveness_ms: f64,
    /// Alignment and descriptor (the whole batch's).
    pub template_ms: f64,
    /// Wall time for this image's batch.
    pub total_ms: f64,
}

/// Rejection reason rendered for clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RejectionInfo {
    /// Machine-readable reason.
    pub code: Rejection,
    /// Human-readable description.
    pub message: String,
}

/// The engine's full answer for one image: the document `facegate check` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Analysis {
    /// Upright image width.
    pub width: u32,
    /// Upright image height.
    pub height: u32,
    /// Every detected face, in original pixels, largest first.
    pub faces: Vec<Face>,
    /// Index in `faces` of the face that was judged.
    pub selected_face: Option<usize>,
    /// Measurements of the selected face.
    pub quality: Option<QualityReport>,
    /// Why no liveness verdict was given, if so.
    pub rejection: Option<RejectionInfo>,
    /// Passive liveness of the selected face.
    pub liveness: Option<Liveness>,
    /// Face template of the selected face.
    pub template: Option<FaceTemplate>,
    /// Stage timings.
    pub timings: Timings,
}

impl Analysis {
    /// The face the networks judge under `opts`: the selected face, unless the quality gate
    /// rejected the image and `opts.ignore_quality` is off.
    pub fn network_face(&self, opts: &AnalyzeOptions) -> Option<&Face> {
        let f = self.selected_face?;
        if self.rejection.is_some() && !opts.ignore_quality {
            return None;
        }
        self.faces.get(f)
    }
}

/// Loaded networks plus configuration. Cheap to share behind an `Arc`.
pub struct Engine {
    cfg: EngineConfig,
    device: Device,
    detector: RetinaFace,
    pad: [(MiniFasNet, f32, &'static str); 2],
    descriptor: Option<FaceDescriptor>,
    /// Threads that run the images of a batch side by side (CPU with more than one thread).
    pool: Option<rayon::ThreadPool>,
}

impl Engine {
    /// Verifies the model files against the manifest and loads every network on `device`.
    pub fn load(cfg: EngineConfig, device: Device) -> Result<Self> {
        let manifest = Manifest::embedded()?;
        let problems = crate::models::verify(&manifest, &cfg.models_dir);
        let needed: Vec<&String> = problems
            .iter()
            .filter(|p| cfg.load_descriptor || !p.starts_with("face-descriptor"))
            .filter(|p| !p.starts_with("landmark68"))
            .collect();
        if !needed.is_empty() {
            return Err(Error::Model {
                name: "manifest".into(),
                path: cfg.models_dir.clone(),
                reason: format!(
                    "{}; run `facegate models fetch` to set the models folder up",
                    needed
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            });
        }
        let path = |name: &str| -> Result<PathBuf> {
            Ok(cfg.models_dir.join(&manifest.entry(name)?.file))
        };
        let detector = RetinaFace::load(&path("retinaface")?, &device)?;
        let v2 = MiniFasNet::load(&path("minifasnet-v2")?, Variant::V2, &device)?;
        let v1se = MiniFasNet::load(&path("minifasnet-v1se")?, Variant::V1SE, &device)?;
        let descriptor = if cfg.load_descriptor {
            Some(FaceDescriptor::load(
                &path("face-descriptor-manifest")?,
                &device,
            )?)
        } else {
            None
        };
        let threads = match cfg.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let pool = if device.is_cpu() && threads > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(|i| format!("facegate-nn-{i}"))
                    .build()
                    .map_err(|e| Error::Unavailable(format!("inference threads: {e}")))?,
            )
        } else {
            None
        };
        Ok(Self {
            cfg,
            device,
            detector,
            pad: [
                (v2, 2.7, "MiniFASNetV2@2.7"),
                (v1se, 4.0, "MiniFASNetV1SE@4.0"),
            ],
            descriptor,
            pool,
        })
    }

    /// Threads the networks run on (1 when images run one after another).
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, |p| p.current_num_threads())
    }

    /// `f(0..n)` in order: on the pool when there is one and more than one task, else here.
    fn map_tasks<T: Send>(
        &self,
        n: usize,
        f: impl Fn(usize) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        match &self.pool {
            Some(pool) if n > 1 => {
                use rayon::prelude::*;
                pool.install(|| (0..n).into_par_iter().map(&f).collect())
            }
            _ => (0..n).map(f).collect(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The device the networks run on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Decodes (bounded, EXIF-upright) and makes the detector's downscaled copy.
    pub fn prepare(&self, bytes: &[u8]) -> Result<Prepared> {
        let t = Instant::now();
        let image = decode_rgb(bytes, &self.cfg.decode)?;
        Ok(self.prepare_decoded(image, t))
    }

    /// Same as [`Engine::prepare`] for an already decoded image.
    pub fn prepare_image(&self, image: RgbImage) -> Prepared {
        self.prepare_decoded(image, Instant::now())
    }

    fn prepare_decoded(&self, image: RgbImage, t: Instant) -> Prepared {
        let (det_image, det_scale) = downscale_area(&image, self.cfg.detection.max_side);
        let fast = self.cfg.detection.fast_max_side;
        let (fast_image, fast_scale) =
            if fast > 0 && fast < det_image.width().max(det_image.height()) {
                let (f, s) = downscale_area(&det_image, fast);
                (Some(f), det_scale * s)
            } else {
                (None, det_scale)
            };
        Prepared {
            image,
            det_image,
            det_scale,
            fast_image,
            fast_scale,
            prepare_ms: ms(t),
        }
    }

    /// Runs the detector on a batch; faces come back in original pixels, largest first.
    ///
    /// With the cascade on, every image is first detected on its fast copy; those where that
    /// finds nothing, or only a small face, are detected again at full detection size.
    pub fn detect(&self, items: &[&Prepared]) -> Result<Vec<Vec<Face>>> {
        if self.device.is_cpu() {
            // One image per task (each runs its whole cascade on one thread): no image is
            // padded to a partner's size, so results never depend on the batch.
            let per = self.map_tasks(items.len(), |i| self.detect_together(&items[i..=i]))?;
            return Ok(per.into_iter().flatten().collect());
        }
        self.detect_together(items)
    }

    /// [`Engine::detect`] with the batch's images in one tensor per pass (padded to the
    /// largest), for devices where one large batch beats many small ones.
    fn detect_together(&self, items: &[&Prepared]) -> Result<Vec<Vec<Face>>> {
        let min_h = self.cfg.detection.fast_min_face_px;
        let fast: Vec<(usize, &RgbImage, f32)> = items
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.fast_image.as_ref().map(|f| (i, f, p.fast_scale)))
            .collect();
        let mut out: Vec<Option<Vec<Face>>> = vec![None; items.len()];
        if !fast.is_empty() {
            let imgs: Vec<(&RgbImage, f32)> = fast.iter().map(|&(_, f, s)| (f, s)).collect();
            for ((i, _, scale), faces) in fast.iter().zip(self.run_detector(&imgs)?) {
                let settled = faces
                    .first()
                    .is_some_and(|f| (f.bbox[3] - f.bbox[1]) / scale >= min_h);
                if settled {
                    out[*i] = Some(faces);
                }
            }
        }
        let rest: Vec<usize> = (0..items.len()).filter(|&i| out[i].is_none()).collect();
        if !rest.is_empty() {
            let imgs: Vec<(&RgbImage, f32)> = rest
                .iter()
                .map(|&i| (&items[i].det_image, items[i].det_scale))
                .collect();
            for (i, faces) in rest.iter().zip(self.run_detector(&imgs)?) {
                out[*i] = Some(faces);
            }
        }
        Ok(out.into_iter().map(Option::unwrap_or_default).collect())
    }

    /// One detector batch over `(image, scale to original)` pairs. Images of different sizes
    /// are padded (with the mean colour) to the largest.
    fn run_detector(&self, items: &[(&RgbImage, f32)]) -> Result<Vec<Vec<Face>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let h = items.iter().map(|p| p.0.height()).max().unwrap_or(1) as usize;
        let w = items.iter().map(|p| p.0.width()).max().unwrap_or(1) as usize;
        let plane = h * w;
        let mut data = vec![0f32; items.len() * 3 * plane];
        for (n, (img, _)) in items.iter().enumerate() {
            let (iw, ih) = (img.width() as usize, img.height() as usize);
            let base = n * 3 * plane;
            let raw = img.as_raw();
            for y in 0..ih {
                for x in 0..iw {
                    let s = (y * iw + x) * 3;
                    let d = y * w + x;
                    data[base + d] = f32::from(raw[s + 2]) - DETECTOR_MEAN_BGR[0];
                    data[base + plane + d] = f32::from(raw[s + 1]) - DETECTOR_MEAN_BGR[1];
                    data[base + 2 * plane + d] = f32::from(raw[s]) - DETECTOR_MEAN_BGR[2];
                }
            }
        }
        let input = Tensor::from_vec(data, (items.len(), 3, h, w), &self.device)?;
        let params = DecodeParams {
            score_threshold: self.cfg.detection.score_threshold,
            nms_iou: self.cfg.detection.nms_iou,
            top_k: self.cfg.detection.top_k,
        };
        let dets = self.detector.detect_batch(&input, &params)?;
        Ok(dets
            .into_iter()
            .zip(items)
            .map(|(ds, (_, scale))| {
                let mut faces: Vec<Face> = ds.iter().map(|d| to_face(d, *scale)).collect();
                faces.sort_by(|a, b| (b.bbox[3] - b.bbox[1]).total_cmp(&(a.bbox[3] - a.bbox[1])));
                faces
            })
            .collect())
    }

    /// Runs both MiniFASNets on the selected faces (one batch per network) and fuses them.
    pub fn liveness(
        &self,
        faces: &[(&RgbImage, &Face)],
        calibration: Calibration,
    ) -> Result<Vec<Liveness>> {
        if faces.is_empty() {
            return Ok(Vec::new());
        }
        let per_net: Vec<Vec<([f32; 3], [f32; 3])>> = if self.device.is_cpu() {
            // One task per (network, face): two tasks even for a single face.
            let n = faces.len();
            let outs = self.map_tasks(self.pad.len() * n, |t| {
                self.pad_outputs(t / n, &faces[t % n..=t % n])
            })?;
            outs.chunks(n)
                .map(|c| c.iter().flatten().copied().collect())
                .collect()
        } else {
            (0..self.pad.len())
                .map(|i| self.pad_outputs(i, faces))
                .collect::<Result<_>>()?
        };
        let profile = self.cfg.calibrations.profile(calibration);
        Ok((0..faces.len())
            .map(|i| {
                let networks: Vec<NetworkOutput> = self
                    .pad
                    .iter()
                    .zip(&per_net)
                    .map(|((_, scale, name), outs)| NetworkOutput {
                        name: (*name).to_string(),
                        crop_scale: *scale,
                        logits: outs[i].0,
                        softmax: outs[i].1,
                    })
                    .collect();
                let fused = networks.iter().map(|n| n.softmax[LIVE_CLASS]).sum::<f32>()
                    / networks.len() as f32;
                let score = calibration::raw_score(fused);
                let probability = calibration::probability(score, profile);
                Liveness {
                    probability,
                    score,
                    is_live: probability >= 0.5,
                    calibration,
                    fused_live: fused,
                    networks,
                }
            })
            .collect())
    }

    /// Logits and softmax of liveness network `index` for each face (one batch).
    fn pad_outputs(
        &self,
        index: usize,
        faces: &[(&RgbImage, &Face)],
    ) -> Result<Vec<([f32; 3], [f32; 3])>> {
        let (net, scale, _) = &self.pad[index];
        let mut crops: Vec<Vec<u8>> = faces
            .iter()
            .map(|(img, f)| crop_rgb(img, self.cfg.pad_box.apply(f.bbox), *scale, 80))
            .collect();
        let n = crops.len();
        if self.cfg.mirror_average {
            let mirrored: Vec<Vec<u8>> = crops.iter().map(|c| mirror_rgb(c, 80)).collect();
            crops.extend(mirrored);
        }
        let logits: Vec<Vec<f32>> = net
            .forward(&pack_bgr(&crops, 80, &self.device)?)?
            .to_vec2()?;
        Ok((0..n)
            .map(|i| {
                let l = &logits[i];
                let mut l3 = [l[0], l[1], l[2]];
                let mut p = softmax3(l3);
                if let Some(m) = logits.get(n + i).filter(|_| self.cfg.mirror_average) {
                    let lm = [m[0], m[1], m[2]];
                    let pm = softmax3(lm);
                    l3 = [0, 1, 2].map(|k| (l3[k] + lm[k]) / 2.0);
                    p = [0, 1, 2].map(|k| (p[k] + pm[k]) / 2.0);
                }
                (l3, p)
            })
            .collect())
    }

    /// Aligns each face to a 150x150 chip and computes its 128-D template (one batch).
    pub fn describe(&self, faces: &[(&RgbImage, &Face)]) -> Result<Vec<FaceTemplate>> {
        let net = self.descriptor.as_ref().ok_or_else(|| {
            Error::Unavailable("the face descriptor is not loaded (load_descriptor = false)".into())
        })?;
        if self.device.is_cpu() {
            let per = self.map_tasks(faces.len(), |i| {
                template::describe(net, &faces[i..=i], &self.device)
            })?;
            return Ok(per.into_iter().flatten().collect());
        }
        template::describe(net, faces, &self.device)
    }

    /// Quality gate for one image after detection: the analysis without liveness or template
    /// (timings carry only `decode_ms`). [`Analysis::network_face`] then says whether the image
    /// goes on to the networks. A batcher calls this between the detector and the networks.
    pub fn assess(&self, p: &Prepared, faces: Vec<Face>) -> Analysis {
        let dets: Vec<Detection> = faces
            .iter()
            .map(|f| Detection {
                score: f.score,
                bbox: f.bbox,
                landmarks: f.landmarks,
            })
            .collect();
        let (selected, quality, rejection) = quality::assess(&p.image, &dets, &self.cfg.quality);
        Analysis {
            width: p.image.width(),
            height: p.image.height(),
            faces,
            selected_face: selected,
            quality,
            rejection: rejection.map(|r| RejectionInfo {
                code: r,
                message: r.message().to_string(),
            }),
            liveness: None,
            template: None,
            timings: Timings {
                decode_ms: p.prepare_ms,
                ..Timings::default()
            },
        }
    }

    /// Full analysis of a batch of encoded images; each image gets its own result.
    pub fn analyze_batch(&self, images: &[&[u8]], opts: &AnalyzeOptions) -> Vec<Result<Analysis>> {
        let t0 = Instant::now();
        let prepared: Vec<Result<Prepared>> = images.iter().map(|b| self.prepare(b)).collect();
        let mut out = self.analyze_prepared(prepared, opts);
        for a in out.iter_mut().flatten() {
            a.timings.total_ms = ms(t0);
        }
        out
    }

    /// Full analysis of already prepared images (errors are passed through per image).
    pub fn analyze_prepared(
        &self,
        prepared: Vec<Result<Prepared>>,
        opts: &AnalyzeOptions,
    ) -> Vec<Result<Analysis>> {
        let t0 = Instant::now();
        let ok: Vec<&Prepared> = prepared.iter().filter_map(|p| p.as_ref().ok()).collect();
        let td = Instant::now();
        let detections = match self.detect(&ok) {
            Ok(d) => d,
            Err(e) => return prepared.iter().map(|_| Err(clone_err(&e))).collect(),
        };
        let detect_ms = ms(td);
        // Quality per image.
        let tq = Instant::now();
        let mut partial: Vec<Analysis> = ok
            .iter()
            .zip(detections)
            .map(|(p, faces)| {
                let mut a = self.assess(p, faces);
                a.timings.detect_ms = detect_ms;
                a
            })
            .collect();
        let quality_ms = ms(tq) / ok.len().max(1) as f64;
        // Which images go on to the networks.
        let eligible: Vec<usize> = partial
            .iter()
            .enumerate()
            .filter(|(_, a)| a.network_face(opts).is_some())
            .map(|(i, _)| i)
            .collect();
        let selected: Vec<(&RgbImage, &Face)> = eligible
            .iter()
            .filter_map(|&i| Some((&ok[i].image, partial[i].network_face(opts)?)))
            .collect();
        let mut stage_err: Option<Error> = None;
        let tl = Instant::now();
        let live = if opts.liveness {
            self.liveness(&selected, opts.calibration)
                .map_err(|e| stage_err = Some(e))
                .ok()
        } else {
            None
        };
        let liveness_ms = ms(tl);
        let tt = Instant::now();
        let templates = if opts.template && stage_err.is_none() {
            self.describe(&selected)
                .map_err(|e| stage_err = Some(e))
                .ok()
        } else {
            None
        };
        let template_ms = ms(tt);
        if let Some(e) = stage_err {
            return prepared.iter().map(|_| Err(clone_err(&e))).collect();
        }
        for (k, &i) in eligible.iter().enumerate() {
            let a = &mut partial[i];
            a.liveness = live.as_ref().and_then(|l| l.get(k).cloned());
            a.template = templates.as_ref().and_then(|t| t.get(k).cloned());
        }
        let total = ms(t0);
        let mut results = partial.into_iter();
        prepared
            .into_iter()
            .map(|p| match p {
                Err(e) => Err(e),
                Ok(_) => {
                    let mut a = results
                        .next()
                        .ok_or_else(|| Error::Unavailable("internal: result count".into()))?;
                    a.timings.quality_ms = quality_ms;
                    a.timings.liveness_ms = liveness_ms;
                    a.timings.template_ms = template_ms;
                    a.timings.total_ms = a.timings.decode_ms + total;
                    Ok(a)
                }
            })
            .collect()
    }

    /// Full analysis of one encoded image.
    pub fn analyze(&self, bytes: &[u8], opts: &AnalyzeOptions) -> Result<Analysis> {
        self.analyze_batch(&[bytes], opts)
            .pop()
            .unwrap_or_else(|| Err(Error::Unavailable("internal: empty batch".into())))
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

fn to_face(d: &Detection, s: f32) -> Face {
    Face {
        bbox: d.bbox.map(|v| v * s),
        score: d.score,
        landmarks: d.landmarks.map(|[x, y]| [x * s, y * s]),
    }
}

fn softmax3(l: [f32; 3]) -> [f32; 3] {
    let m = l[0].max(l[1]).max(l[2]);
    let e = l.map(|v| (v - m).exp());
    let s = e[0] + e[1] + e[2];
    e.map(|v| v / s)
}

/// Errors of a shared stage are reported on every image of the batch.
fn clone_err(e: &Error) -> Error {
    match e {
        Error::Overloaded { depth } => Error::Overloaded { depth: *depth },
        other => Error::Unavailable(other.to_string()),
    }
}
