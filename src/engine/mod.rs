//! The vendor-neutral engine: decode -> detect (5 landmarks) -> quality -> passive liveness
//! (two MiniFASNets) -> optional face templates. Dialects call it and render its [`Analysis`];
//! they never hold model logic.
//!
//! The work is split into stages ([`Engine::prepare`], [`Engine::detect`],
//! [`Engine::liveness`], [`Engine::describe`]) so that a batcher can queue each network
//! separately; [`Engine::analyze_batch`] chains them for a batch of images.

pub mod active;
pub mod autocapture;
pub mod calibration;
pub mod decision;
pub mod frr;
pub mod fusion;
mod linalg;
pub mod pipeline;
pub mod pose;
pub mod quality;
pub mod session;
pub mod template;
pub mod workflow;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device};
use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::models::Manifest;
use crate::nn::face_descriptor::FaceDescriptor;
use crate::nn::face_landmarks::{self, FaceLandmarks};
use crate::nn::minifasnet::MiniFasNet;
use crate::nn::retinaface::{input_from_images, DecodeParams, Detection, RetinaFace, MEAN_BGR};
use crate::preprocess::batch::{crop_job, CropJob};
use crate::preprocess::crop::{celeba_crop, crop_rgb, mirror_rgb, pack_bgr, pack_rgb_unit};
use crate::preprocess::decode::{decode_region, decode_scaled, DecodeLimits, REDUCTIONS};
use crate::preprocess::resize::downscale_area;
use crate::preprocess::square::square_crop;
use crate::{Error, Result};

pub use calibration::{Calibration, Calibrations};
pub use decision::{Decider, FrameOutcome, FrameVerdict, Fused};
pub use pipeline::{PadNetwork, Pipeline};
pub use pose::FaceShape;
pub use quality::{QualityReport, QualityThresholds, Rejection};
pub use session::{FrameState, Session, SessionOutcome, SessionPolicy};
pub use template::{FaceTemplate, Gallery, Match, MatchDecision, MatchPolicy};

/// Detection settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
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
#[serde(default, deny_unknown_fields)]
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
#[serde(default, deny_unknown_fields)]
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
    /// Load the 68-point landmark network (needed for head pose and active liveness).
    pub load_landmarks: bool,
    /// Also run the CelebA-Spoof MiniFASNetV2-SE, a third PAD network, on every face (the
    /// `minifasnet-triple` pipeline needs it; the default pipeline does not use it).
    pub load_celeba: bool,
    /// Active-liveness thresholds (motion, parallax, challenge angle, same person).
    pub active: active::ActiveConfig,
    /// Autocapture feedback thresholds (face size and position, light, blur, eyes, pose).
    pub autocapture: autocapture::AutocaptureConfig,
    /// Capture-workflow thresholds (resolution per camera, dynamic range, sequence length).
    pub workflows: workflow::WorkflowConfig,
    /// Threads that run the networks on CPU (0: one per core). The images of a batch, and the
    /// two liveness networks of each face, run side by side on this many threads, each image
    /// on one thread (the kernels are single-threaded).
    pub threads: usize,
    /// Device the networks run on (`auto`, `cpu`, `cuda`, `cuda:N`); one that does not open,
    /// or on which the networks fail to load, falls back to CPU ([`Engine::load_configured`]).
    pub device: crate::nn::device::DeviceChoice,
    /// Precision of the networks on a GPU (`f32`, `f16`); always f32 on the CPU.
    pub precision: crate::nn::device::Precision,
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
            load_landmarks: true,
            load_celeba: false,
            active: active::ActiveConfig::default(),
            autocapture: autocapture::AutocaptureConfig::default(),
            workflows: workflow::WorkflowConfig::default(),
            threads: 0,
            device: crate::nn::device::DeviceChoice::Auto,
            precision: crate::nn::device::Precision::F32,
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
    /// Measure the selected face's 68 landmarks (eyes, mouth, head pose).
    #[serde(default)]
    pub landmarks: bool,
    /// Skip the quality gate (report the measurements but run liveness regardless).
    pub ignore_quality: bool,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        Self {
            calibration: Calibration::Regular,
            liveness: true,
            template: false,
            landmarks: false,
            ignore_quality: false,
        }
    }
}

/// A decoded image and its downscaled copies for the detector.
///
/// A large JPEG is decoded reduced (`scale` > 1, see [`DecodeLimits::reduce`]); faces are
/// always in full-resolution pixels, and [`Prepared::view`] says where a face's pixels are
/// read.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Upright RGB image: the full-resolution image reduced `scale` times on each side.
    pub image: RgbImage,
    /// Full-resolution pixels per pixel of `image` (1 unless decoded reduced).
    pub scale: f32,
    /// Upright size at full resolution: what face coordinates, and the quality checks on
    /// framing and size, refer to.
    pub full_size: (u32, u32),
    /// A finer decode around the largest face, made by [`Engine::assess`] when that face has
    /// too few pixels in `image`.
    pub detail: Option<Detail>,
    /// Copy whose longer side is at most `detection.max_side`.
    pub det_image: RgbImage,
    /// Multiply detector coordinates by this to get full-resolution coordinates.
    pub det_scale: f32,
    /// Smaller copy for the cascade's first pass (`detection.fast_max_side`), when enabled and
    /// smaller than `det_image`.
    pub fast_image: Option<RgbImage>,
    /// Multiply fast-pass coordinates by this to get full-resolution coordinates.
    pub fast_scale: f32,
    /// Time spent decoding and downscaling, ms (a finer decode around a face included).
    pub prepare_ms: f64,
    /// The encoded image, kept while a finer decode may still be needed (`scale` > 1).
    source: Option<bytes::Bytes>,
}

/// A region of the image decoded at a finer scale than [`Prepared::image`]: pixel `(x, y)`
/// is full-resolution point `(origin + (x, y) * scale)`.
#[derive(Debug, Clone)]
pub struct Detail {
    /// The region's pixels.
    pub image: RgbImage,
    /// Full-resolution position of the region's top-left corner.
    pub origin: [f32; 2],
    /// Full-resolution pixels per region pixel.
    pub scale: f32,
}

/// Where a face's pixels are read: an image, and how its pixels map to full-resolution
/// ones (image point `p` is full-resolution point `origin + p * scale`).
#[derive(Debug, Clone, Copy)]
pub struct PixelView<'a> {
    /// The pixels.
    pub image: &'a RgbImage,
    /// Full-resolution position of the image's top-left corner.
    pub origin: [f32; 2],
    /// Full-resolution pixels per image pixel.
    pub scale: f32,
}

impl PixelView<'_> {
    /// A full-resolution point in this view's pixels.
    pub fn to_view(&self, p: [f32; 2]) -> [f32; 2] {
        [
            (p[0] - self.origin[0]) / self.scale,
            (p[1] - self.origin[1]) / self.scale,
        ]
    }

    /// A point of this view's pixels at full resolution.
    pub fn to_full(&self, p: [f32; 2]) -> [f32; 2] {
        [
            self.origin[0] + p[0] * self.scale,
            self.origin[1] + p[1] * self.scale,
        ]
    }

    /// A full-resolution face in this view's pixels.
    pub fn face(&self, f: &Face) -> Face {
        let [a, b] = [
            self.to_view([f.bbox[0], f.bbox[1]]),
            self.to_view([f.bbox[2], f.bbox[3]]),
        ];
        Face {
            bbox: [a[0], a[1], b[0], b[1]],
            score: f.score,
            landmarks: f.landmarks.map(|p| self.to_view(p)),
        }
    }

    /// A face shape found in this view, in full-resolution pixels (its grey crop keeps its
    /// pixels and now maps to full-resolution points).
    pub fn shape_to_full(&self, mut s: FaceShape) -> FaceShape {
        if self.scale == 1.0 && self.origin == [0.0, 0.0] {
            return s;
        }
        for p in s.points.iter_mut() {
            *p = self.to_full(*p);
        }
        s.eye_centers = s.eye_centers.map(|p| self.to_full(p));
        if let Some(c) = s.crop.as_mut() {
            [c.x0, c.y0] = self.to_full([c.x0, c.y0]);
            c.scale *= self.scale;
        }
        s
    }
}

impl Prepared {
    /// Where the pixels of `face` (full-resolution) are read: the finer region when it holds
    /// the face, else the whole (possibly reduced) image.
    pub fn view(&self, face: &Face) -> PixelView<'_> {
        if let Some(d) = &self.detail {
            let (w, h) = d.image.dimensions();
            // The part of the face inside the image (a cropped face's box runs past it).
            let (fw, fh) = (self.full_size.0 as f32, self.full_size.1 as f32);
            let b = [
                face.bbox[0].max(0.0),
                face.bbox[1].max(0.0),
                face.bbox[2].min(fw),
                face.bbox[3].min(fh),
            ];
            let inside = b[0] >= d.origin[0]
                && b[1] >= d.origin[1]
                && b[2] <= d.origin[0] + w as f32 * d.scale
                && b[3] <= d.origin[1] + h as f32 * d.scale;
            if inside {
                return PixelView {
                    image: &d.image,
                    origin: d.origin,
                    scale: d.scale,
                };
            }
        }
        PixelView {
            image: &self.image,
            origin: [0.0, 0.0],
            scale: self.scale,
        }
    }
}

/// How far around a small face its finer decode reaches, in face boxes (the larger side) from
/// the face's centre: the widest network crop (MiniFASNetV1SE's, 4 boxes wide) fits whole
/// wherever the crop rule shifts it inside the image, with a tenth to spare.
pub const DETAIL_CONTEXT: f32 = 4.4;

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

/// One network's raw output for the selected face.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkOutput {
    /// Network name ([`PadNetwork::name`]).
    pub name: String,
    /// Crop scale it was fed.
    pub crop_scale: f32,
    /// Raw logits (0: print, 1: live, 2: replay).
    pub logits: [f32; 3],
    /// Softmax of the logits.
    pub softmax: [f32; 3],
}

/// Passive liveness verdict under one (pipeline, calibration), with the raw outputs it came
/// from (see [`decision::Decider::verdict`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
    /// Landmark crops and network (the whole batch's).
    #[serde(default)]
    pub landmarks_ms: f64,
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
    /// 68 landmarks and their measurements for the selected face (when asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<FaceShape>,
    /// Stage timings.
    pub timings: Timings,
}

impl Analysis {
    /// One word for the outcome: the rejection code, else `LIVE` or `SPOOF` from the liveness
    /// verdict, else `NO_VERDICT`.
    pub fn verdict(&self) -> String {
        match (&self.rejection, &self.liveness) {
            (Some(r), _) => r.code.code().to_string(),
            (None, Some(l)) if l.is_live => "LIVE".into(),
            (None, Some(_)) => "SPOOF".into(),
            (None, None) => "NO_VERDICT".into(),
        }
    }

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
///
/// Every stage returns one result per image: one image failing (a broken input, a panic in
/// its task) never fails its batch partners.
pub struct Engine {
    /// Configuration in force.
    cfg: EngineConfig,
    /// Device the networks run on.
    device: Device,
    /// Face detector.
    detector: RetinaFace,
    /// Passive-liveness networks, by name.
    pad: Vec<(PadNetwork, MiniFasNet)>,
    /// Face descriptor (templates), when loaded.
    descriptor: Option<FaceDescriptor>,
    /// 68-point landmarks (pose, active liveness), when loaded.
    landmarks: Option<FaceLandmarks>,
    /// Turns network outputs into verdicts.
    decider: Decider,
    /// Threads that run the images of a batch side by side (CPU with more than one thread).
    pool: Option<rayon::ThreadPool>,
    /// Why the networks run on CPU instead of the configured device, when they do.
    device_note: Option<String>,
}

impl Engine {
    /// Loads on the configured device (`engine.device`), falling back to CPU when it does not
    /// open or the networks fail to load or warm up on it; the reason is kept
    /// ([`Engine::device_note`]) and logged.
    pub fn load_configured(cfg: EngineConfig) -> Result<Self> {
        let asked = cfg.device;
        let (device, mut note) = crate::nn::device::open(asked);
        if !device.is_cpu() {
            match Self::load(cfg.clone(), device).and_then(|e| e.warm_up().map(|()| e)) {
                Ok(e) => return Ok(e),
                Err(e) => {
                    note = Some(format!(
                        "{asked}: the networks did not load or run on it ({}); serving on CPU",
                        crate::nn::device::first_line(&e.public())
                    ))
                }
            }
        }
        if let Some(why) = &note {
            tracing::warn!(device = %asked, reason = %why, "serving on CPU instead");
        }
        let mut engine = Self::load(cfg, Device::Cpu)?;
        engine.device_note = note;
        Ok(engine)
    }

    /// Loads the networks on `cfg.device` and warms them up there, with no fall back: fails
    /// when the device does not open or the networks do not run on it (an extra GPU worker,
    /// which must not become a second CPU engine).
    pub fn load_on_device(cfg: EngineConfig) -> Result<Self> {
        let asked = cfg.device;
        let (device, note) = crate::nn::device::open(asked);
        if let Some(why) = note {
            return Err(Error::Unavailable(why));
        }
        let engine = Self::load(cfg, device)?;
        engine.warm_up()?;
        Ok(engine)
    }

    /// Why the networks run on CPU instead of the configured device (`None` when they run
    /// where configured).
    pub fn device_note(&self) -> Option<&str> {
        self.device_note.as_deref()
    }

    /// Runs one dummy image through every loaded network (the first runs of a network are
    /// its slowest; a device that cannot run them fails here, not on a client's image).
    pub fn warm_up(&self) -> Result<()> {
        fn first<T>(results: Vec<Result<T>>) -> Result<T> {
            results
                .into_iter()
                .next()
                .unwrap_or_else(|| Err(Error::Internal("empty stage result".into())))
        }
        let img = RgbImage::from_pixel(320, 240, image::Rgb([128, 128, 128]));
        let p = self.prepare_image(img);
        first(self.detect(&[&p]))?;
        let face = Face {
            bbox: [110.0, 60.0, 210.0, 180.0],
            score: 1.0,
            landmarks: [
                [140.0, 100.0],
                [180.0, 100.0],
                [160.0, 125.0],
                [145.0, 150.0],
                [175.0, 150.0],
            ],
        };
        first(self.liveness(&[(&p.image, &face)]))?;
        if self.cfg.load_descriptor {
            first(self.describe(&[(&p.image, &face)]))?;
        }
        if self.cfg.load_landmarks {
            first(self.shapes(&[(&p.image, &face)]))?;
        }
        Ok(())
    }

    /// Verifies the model files against the manifest and loads every network on `device`.
    pub fn load(cfg: EngineConfig, device: Device) -> Result<Self> {
        let manifest = Manifest::embedded()?;
        let problems = crate::models::verify(&manifest, &cfg.models_dir);
        let needed: Vec<&String> = problems
            .iter()
            .filter(|p| cfg.load_descriptor || !p.starts_with("face-descriptor"))
            .filter(|p| cfg.load_landmarks || !p.starts_with("landmark68"))
            .filter(|p| cfg.load_celeba || !p.starts_with("minifasnet-celeba"))
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
        let pad = PadNetwork::ALL
            .into_iter()
            .filter(|n| !n.is_optional() || cfg.load_celeba)
            .map(|n| {
                let net = MiniFasNet::load(&path(n.manifest_name())?, n.variant(), &device)?;
                Ok((n, net))
            })
            .collect::<Result<Vec<_>>>()?;
        let descriptor = if cfg.load_descriptor {
            Some(FaceDescriptor::load(
                &path("face-descriptor-manifest")?,
                &device,
            )?)
        } else {
            None
        };
        let landmarks = if cfg.load_landmarks {
            Some(FaceLandmarks::load(&path("landmark68-manifest")?, &device)?)
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
            decider: Decider::new(cfg.calibrations),
            cfg,
            device,
            detector,
            pad,
            descriptor,
            landmarks,
            pool,
            device_note: None,
        })
    }

    /// The dtype the networks compute in: f16 with `precision = "f16"` on a GPU, else f32.
    pub fn dtype(&self) -> DType {
        self.cfg.precision.dtype_on(&self.device)
    }

    /// Threads the networks run on (1 when images run one after another).
    pub fn threads(&self) -> usize {
        self.pool.as_ref().map_or(1, |p| p.current_num_threads())
    }

    /// `f(0..n)` in order, each task on its own: on the pool when there is one and more than
    /// one task, else here. A task that panics fails alone ([`Error::Internal`]).
    fn map_tasks<T: Send>(
        &self,
        n: usize,
        f: impl Fn(usize) -> Result<T> + Sync,
    ) -> Vec<Result<T>> {
        let task = |i: usize| {
            catch_unwind(AssertUnwindSafe(|| f(i)))
                .unwrap_or_else(|_| Err(Error::Internal(format!("task {i} of {n} panicked"))))
        };
        match &self.pool {
            Some(pool) if n > 1 => {
                use rayon::prelude::*;
                pool.install(|| (0..n).into_par_iter().map(task).collect())
            }
            _ => (0..n).map(task).collect(),
        }
    }

    /// One batched call for devices where a large batch beats many small ones: `batch` on all
    /// `n` items at once; if it fails, `one` on each item alone, so only the items that fail
    /// on their own get an error.
    fn batched<T>(
        &self,
        n: usize,
        batch: impl FnOnce() -> Result<Vec<T>>,
        one: impl Fn(usize) -> Result<T> + Sync,
    ) -> Vec<Result<T>>
    where
        T: Send,
    {
        match catch_unwind(AssertUnwindSafe(batch)) {
            Ok(Ok(v)) if v.len() == n => v.into_iter().map(Ok).collect(),
            Ok(Err(e)) if n == 1 => vec![Err(e)],
            _ => self.map_tasks(n, one),
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

    /// Turns network outputs into verdicts with the configured calibrations.
    pub fn decider(&self) -> &Decider {
        &self.decider
    }

    /// Decodes (bounded, EXIF-upright; a large JPEG reduced, see [`DecodeLimits::reduce`])
    /// and makes the detector's downscaled copies.
    pub fn prepare(&self, bytes: &[u8]) -> Result<Prepared> {
        self.prepare_source(bytes, None)
    }

    /// Same as [`Engine::prepare`], keeping `bytes` itself (no copy) for a finer decode.
    pub fn prepare_shared(&self, bytes: bytes::Bytes) -> Result<Prepared> {
        self.prepare_source(&bytes.clone(), Some(bytes))
    }

    fn prepare_source(&self, bytes: &[u8], shared: Option<bytes::Bytes>) -> Result<Prepared> {
        let t = Instant::now();
        let limits = &self.cfg.decode;
        let d = decode_scaled(bytes, limits, |size| limits.reduction_for(size))?;
        let source =
            (d.scale > 1).then(|| shared.unwrap_or_else(|| bytes::Bytes::copy_from_slice(bytes)));
        let mut p = self.prepare_decoded(d.image, d.scale as f32, t);
        p.full_size = d.full_size;
        p.source = source;
        Ok(p)
    }

    /// Same as [`Engine::prepare`] for an already decoded, upright image (a video frame, a
    /// decrypted frame), within the same pixel bounds.
    pub fn prepare_frame(&self, image: RgbImage) -> Result<Prepared> {
        let t = Instant::now();
        let (width, height) = image.dimensions();
        let limits = &self.cfg.decode;
        if u64::from(width) * u64::from(height) > limits.max_pixels {
            return Err(Error::TooManyPixels {
                width,
                height,
                limit: limits.max_pixels,
            });
        }
        if width.min(height) < limits.min_side {
            return Err(Error::ImageTooSmall {
                width,
                height,
                min: limits.min_side,
            });
        }
        Ok(self.prepare_decoded(image, 1.0, t))
    }

    /// Same as [`Engine::prepare`] for an already decoded image, without bounds (warm-up and
    /// tests).
    pub fn prepare_image(&self, image: RgbImage) -> Prepared {
        self.prepare_decoded(image, 1.0, Instant::now())
    }

    fn prepare_decoded(&self, image: RgbImage, scale: f32, t: Instant) -> Prepared {
        let (det_image, s) = downscale_area(&image, self.cfg.detection.max_side);
        let det_scale = scale * s;
        let fast = self.cfg.detection.fast_max_side;
        let (fast_image, fast_scale) =
            if fast > 0 && fast < det_image.width().max(det_image.height()) {
                let (f, s) = downscale_area(&det_image, fast);
                (Some(f), det_scale * s)
            } else {
                (None, det_scale)
            };
        let (w, h) = image.dimensions();
        Prepared {
            image,
            scale,
            full_size: (w, h),
            detail: None,
            det_image,
            det_scale,
            fast_image,
            fast_scale,
            prepare_ms: ms(t),
            source: None,
        }
    }

    /// Decodes the surroundings of `face` (the one the quality checks and the networks judge)
    /// again at a finer scale when it has fewer than `decode.reduced_min_face_px` rows in the
    /// reduced image (a group photo, a face far away): only the region every network's crop can
    /// reach ([`DETAIL_CONTEXT`] face boxes around the face, within the image), at the largest
    /// reduction that gives the face enough rows. Returns whether it decoded one.
    ///
    /// A failed finer decode keeps the reduced image (the face is then judged on fewer pixels)
    /// and says so in the log.
    pub fn refine(&self, p: &mut Prepared, face: &Face) -> bool {
        let need = self.cfg.decode.reduced_min_face_px.max(1) as f32;
        let fh = face.bbox[3] - face.bbox[1];
        if fh / p.scale >= need || fh <= 0.0 {
            return false;
        }
        let Some(bytes) = p.source.take() else {
            return false;
        };
        let t = Instant::now();
        let finer = REDUCTIONS
            .into_iter()
            .filter(|&s| (s as f32) < p.scale)
            .find(|&s| fh / s as f32 >= need)
            .unwrap_or(1);
        let [x1, y1, x2, y2] = face.bbox;
        let reach = DETAIL_CONTEXT * (x2 - x1).max(y2 - y1);
        let (cx, cy) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
        let (w, h) = (p.full_size.0 as f32, p.full_size.1 as f32);
        let region = [
            (cx - reach).clamp(0.0, w) as u32,
            (cy - reach).clamp(0.0, h) as u32,
            (cx + reach).clamp(0.0, w).ceil() as u32,
            (cy + reach).clamp(0.0, h).ceil() as u32,
        ];
        match decode_region(&bytes, &self.cfg.decode, finer, region) {
            Ok((image, origin)) => {
                p.detail = Some(Detail {
                    image,
                    origin: origin.map(|v| v as f32),
                    scale: finer as f32,
                });
                p.prepare_ms += ms(t);
                true
            }
            Err(e) => {
                tracing::warn!(
                    "finer decode around a small face failed, judged at 1/{}: {e}",
                    p.scale
                );
                false
            }
        }
    }

    /// Runs the detector on a batch; faces come back in original pixels, largest first, one
    /// result per image.
    ///
    /// With the cascade on, every image is first detected on its fast copy; those where that
    /// finds nothing, or only a small face, are detected again at full detection size.
    pub fn detect(&self, items: &[&Prepared]) -> Vec<Result<Vec<Face>>> {
        if self.device.is_cpu() {
            // One image per task (each runs its whole cascade on one thread): no image is
            // padded to a partner's size, so results never depend on the batch.
            return self.map_tasks(items.len(), |i| self.detect_one(items[i]));
        }
        self.batched(
            items.len(),
            || self.detect_together(items),
            |i| self.detect_one(items[i]),
        )
    }

    /// The detection cascade of one image.
    fn detect_one(&self, item: &Prepared) -> Result<Vec<Face>> {
        self.detect_together(&[item])?
            .pop()
            .ok_or_else(|| Error::Internal("detector result count".into()))
    }

    /// [`Engine::detect`] with the batch's images in one tensor per pass (padded to the
    /// largest, see [`crate::nn::retinaface::input_from_images`]).
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

    /// One detector batch over `(image, scale to original)` pairs, faces largest first.
    fn run_detector(&self, items: &[(&RgbImage, f32)]) -> Result<Vec<Vec<Face>>> {
        if items.is_empty() {
            return Ok(Vec::new());
        }
        let images: Vec<&RgbImage> = items.iter().map(|(img, _)| *img).collect();
        let params = DecodeParams {
            score_threshold: self.cfg.detection.score_threshold,
            nms_iou: self.cfg.detection.nms_iou,
            top_k: self.cfg.detection.top_k,
        };
        let input = if self.device.is_cuda() {
            // On a GPU the packing runs as one kernel launch (same values as on the CPU).
            crate::preprocess::launch::detector_input(&images, MEAN_BGR, &self.device)?
        } else {
            input_from_images(&images, &self.device)?
        };
        let dets = self
            .detector
            .detect_batch(&input.to_dtype(self.dtype())?, &params)?;
        if dets.len() != items.len() {
            return Err(Error::Internal("detector result count".into()));
        }
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

    /// Runs every passive-liveness network on the selected faces; one result per face holding
    /// each network's raw output, in [`PadNetwork::ALL`] order. [`Engine::decider`] turns them
    /// into a verdict.
    pub fn liveness(&self, faces: &[(&RgbImage, &Face)]) -> Vec<Result<Vec<NetworkOutput>>> {
        let n = faces.len();
        if n == 0 {
            return Vec::new();
        }
        let k = self.pad.len();
        // Per network, one result per face.
        let per_net: Vec<Vec<Result<NetworkOutput>>> = if self.device.is_cpu() {
            // One task per (network, face): two tasks even for a single face.
            let mut outs = self
                .map_tasks(k * n, |t| {
                    self.pad_outputs(t / n, &faces[t % n..=t % n])?
                        .pop()
                        .ok_or_else(|| Error::Internal("liveness result count".into()))
                })
                .into_iter();
            (0..k).map(|_| outs.by_ref().take(n).collect()).collect()
        } else {
            (0..k)
                .map(|net| {
                    self.batched(
                        n,
                        || self.pad_outputs(net, faces),
                        |i| {
                            self.pad_outputs(net, &faces[i..=i])?
                                .pop()
                                .ok_or_else(|| Error::Internal("liveness result count".into()))
                        },
                    )
                })
                .collect()
        };
        let mut per_net: Vec<std::vec::IntoIter<Result<NetworkOutput>>> =
            per_net.into_iter().map(Vec::into_iter).collect();
        (0..n)
            .map(|_| {
                per_net
                    .iter_mut()
                    .map(|it| {
                        it.next()
                            .unwrap_or_else(|| Err(Error::Internal("liveness result count".into())))
                    })
                    .collect::<Result<Vec<NetworkOutput>>>()
            })
            .collect()
    }

    /// The pipelines whose networks are all loaded.
    pub fn pipelines(&self) -> Vec<Pipeline> {
        Pipeline::ALL
            .into_iter()
            .filter(|p| {
                p.networks()
                    .iter()
                    .all(|n| self.pad.iter().any(|(have, _)| have == n))
            })
            .collect()
    }

    /// The verdict of raw liveness outputs under the dual pipeline and `calibration`.
    pub fn judge(&self, outputs: &[NetworkOutput], calibration: Calibration) -> Result<Liveness> {
        self.decider.verdict(outputs, Pipeline::Dual, calibration)
    }

    /// Raw outputs of liveness network `index` for each face (one batch), on the network's
    /// own crop (mirrored crops averaged in with `mirror_average`). Every network's output is
    /// in the three slots `[print, live, replay]`; the two-class CelebA network puts its attack
    /// class in the first and 0 in the last.
    fn pad_outputs(
        &self,
        index: usize,
        faces: &[(&RgbImage, &Face)],
    ) -> Result<Vec<NetworkOutput>> {
        let (which, net) = &self.pad[index];
        let variant = which.variant();
        let size = variant.input_size();
        let celeba = *which == PadNetwork::Celeba;
        let n = faces.len();
        let rows = if self.cfg.mirror_average { 2 * n } else { n };
        let input = if self.device.is_cuda() && !celeba {
            // On a GPU the crops, the mirror and the packing run as one kernel launch.
            let images: Vec<&RgbImage> = faces.iter().map(|(img, _)| *img).collect();
            let mirrors: &[bool] = if self.cfg.mirror_average {
                &[false, true]
            } else {
                &[false]
            };
            let jobs: Vec<CropJob> = mirrors
                .iter()
                .flat_map(|&mirror| {
                    faces.iter().enumerate().map(move |(i, (img, f))| {
                        crop_job(
                            img.width(),
                            img.height(),
                            i,
                            self.cfg.pad_box.apply(f.bbox),
                            which.crop_scale(),
                            mirror,
                        )
                    })
                })
                .collect();
            crate::preprocess::launch::crop_input(&images, &jobs, size, &self.device)?
        } else {
            let mut crops: Vec<Vec<u8>> = faces
                .iter()
                .map(|(img, f)| {
                    if celeba {
                        celeba_crop(img, f.bbox, size)
                    } else {
                        crop_rgb(
                            img,
                            self.cfg.pad_box.apply(f.bbox),
                            which.crop_scale(),
                            size,
                        )
                    }
                })
                .collect();
            if self.cfg.mirror_average {
                let mirrored: Vec<Vec<u8>> = crops.iter().map(|c| mirror_rgb(c, size)).collect();
                crops.extend(mirrored);
            }
            if celeba {
                pack_rgb_unit(&crops, size, &self.device)?
            } else {
                pack_bgr(&crops, size, &self.device)?
            }
        };
        let logits: Vec<Vec<f32>> = net
            .forward(&input.to_dtype(self.dtype())?)?
            .to_dtype(DType::F32)?
            .to_vec2()?;
        if logits.len() != rows || logits.iter().any(|l| l.len() != variant.num_classes()) {
            return Err(Error::Internal(format!("{} output shape", which.name())));
        }
        // Logits and probabilities in the three slots.
        let slots = |l: &[f32]| -> ([f32; 3], [f32; 3]) {
            if celeba {
                let live = variant.live_class();
                let l3 = [l[1 - live], l[live], 0.0];
                let p_live = 1.0 / (1.0 + (l3[0] - l3[1]).exp());
                (l3, [1.0 - p_live, p_live, 0.0])
            } else {
                let l3 = [l[0], l[1], l[2]];
                (l3, softmax3(l3))
            }
        };
        Ok((0..n)
            .map(|i| {
                let (mut l3, mut p) = slots(&logits[i]);
                if let Some(m) = logits.get(n + i).filter(|_| self.cfg.mirror_average) {
                    let (lm, pm) = slots(m);
                    l3 = [0, 1, 2].map(|k| (l3[k] + lm[k]) / 2.0);
                    p = [0, 1, 2].map(|k| (p[k] + pm[k]) / 2.0);
                }
                NetworkOutput {
                    name: which.name().to_string(),
                    crop_scale: which.crop_scale(),
                    logits: l3,
                    softmax: p,
                }
            })
            .collect())
    }

    /// Aligns each face to a 150x150 chip and computes its 128-D template; one result per face.
    pub fn describe(&self, faces: &[(&RgbImage, &Face)]) -> Vec<Result<FaceTemplate>> {
        let Some(net) = self.descriptor.as_ref() else {
            return faces
                .iter()
                .map(|_| {
                    Err(Error::Unavailable(
                        "the face descriptor is not loaded (load_descriptor = false)".into(),
                    ))
                })
                .collect();
        };
        let one = |i: usize| {
            template::describe(net, &faces[i..=i], &self.device, self.dtype())?
                .pop()
                .ok_or_else(|| Error::Internal("descriptor result count".into()))
        };
        if self.device.is_cpu() {
            return self.map_tasks(faces.len(), one);
        }
        self.batched(
            faces.len(),
            || template::describe(net, faces, &self.device, self.dtype()),
            one,
        )
    }

    /// The 68 landmarks of each face and what they measure (eye centres and openness, mouth,
    /// head pose); one result per face. The landmark network sees the face box padded to a
    /// square about its centre and resized to 112x112, as face-api feeds it.
    pub fn shapes(&self, faces: &[(&RgbImage, &Face)]) -> Vec<Result<FaceShape>> {
        let Some(net) = self.landmarks.as_ref() else {
            return faces
                .iter()
                .map(|_| {
                    Err(Error::Unavailable(
                        "the landmark network is not loaded (load_landmarks = false)".into(),
                    ))
                })
                .collect();
        };
        let one = |i: usize| {
            self.shapes_of(net, &faces[i..=i])?
                .pop()
                .ok_or_else(|| Error::Internal("landmark result count".into()))
        };
        if self.device.is_cpu() {
            return self.map_tasks(faces.len(), one);
        }
        self.batched(faces.len(), || self.shapes_of(net, faces), one)
    }

    /// One landmark batch over `faces`.
    fn shapes_of(
        &self,
        net: &FaceLandmarks,
        faces: &[(&RgbImage, &Face)],
    ) -> Result<Vec<FaceShape>> {
        let size = face_landmarks::INPUT_SIZE;
        let squares: Vec<(f32, f32, f32)> = faces
            .iter()
            .map(|(_, f)| {
                let [x1, y1, x2, y2] = f.bbox;
                let side = (x2 - x1).max(y2 - y1).round().max(1.0);
                let x0 = ((x1 + x2) / 2.0 - side / 2.0).round();
                let y0 = ((y1 + y2) / 2.0 - side / 2.0).round();
                (x0, y0, side)
            })
            .collect();
        let plane = size * size;
        let mut data = Vec::with_capacity(faces.len() * 3 * plane);
        let mut grays = Vec::with_capacity(faces.len());
        for ((img, _), &(x0, y0, side)) in faces.iter().zip(&squares) {
            let crop = square_crop(img, x0 as i64, y0 as i64, side as u32, size);
            grays.push(
                (0..plane)
                    .map(|i| {
                        0.299 * crop[i] + 0.587 * crop[plane + i] + 0.114 * crop[2 * plane + i]
                    })
                    .collect::<Vec<f32>>(),
            );
            data.extend(crop);
        }
        let input =
            candle_core::Tensor::from_vec(data, (faces.len(), 3, size, size), &self.device)?;
        let out: Vec<Vec<f32>> = net
            .forward(&input.to_dtype(self.dtype())?)?
            .to_dtype(DType::F32)?
            .to_vec2()?;
        out.iter()
            .zip(&squares)
            .zip(grays)
            .map(|((o, &(x0, y0, side)), gray)| {
                let points: Vec<[f32; 2]> = o
                    .chunks_exact(2)
                    .map(|p| [x0 + p[0] * side, y0 + p[1] * side])
                    .collect();
                let mut shape = FaceShape::from_points(&points)
                    .ok_or_else(|| Error::Internal("degenerate landmark fit".into()))?;
                shape.crop = Some(pose::FaceCrop {
                    x0,
                    y0,
                    scale: side / size as f32,
                    size,
                    gray,
                });
                Ok(shape)
            })
            .collect()
    }

    /// Quality gate for one image after detection: the analysis without liveness or template
    /// (timings carry only `decode_ms`). [`Analysis::network_face`] then says whether the image
    /// goes on to the networks. A batcher calls this between the detector and the networks.
    ///
    /// A reduced image whose largest face has too few rows is first decoded again around that
    /// face ([`Engine::refine`]); the quality checks and the networks then read those pixels
    /// ([`Prepared::view`]). Not when the face's geometry already rejects the image and
    /// `opts.ignore_quality` is off: no pixel could change that verdict.
    pub fn assess(&self, p: &mut Prepared, faces: Vec<Face>, opts: &AnalyzeOptions) -> Analysis {
        let dets: Vec<Detection> = faces
            .iter()
            .map(|f| Detection {
                score: f.score,
                bbox: f.bbox,
                landmarks: f.landmarks,
            })
            .collect();
        let largest = quality::largest(&dets);
        let judge = |p: &Prepared| {
            let pixels = largest.map(|i| p.view(&faces[i]));
            quality::assess(p.full_size, &dets, pixels, &self.cfg.quality)
        };
        let mut judged = judge(p);
        // A finer decode only when its pixels can matter: not for an image its geometry
        // already rejects (too many faces, too small, cropped, turned away), unless the
        // networks run anyway.
        let settled = matches!(judged.2, Some(r) if !r.reads_pixels()) && !opts.ignore_quality;
        if let (false, Some(i)) = (settled, largest) {
            if self.refine(p, &faces[i]) {
                judged = judge(p);
            }
        }
        let (selected, quality, rejection) = judged;
        Analysis {
            width: p.full_size.0,
            height: p.full_size.1,
            faces,
            selected_face: selected,
            quality,
            rejection: rejection.map(|r| RejectionInfo {
                code: r,
                message: r.message().to_string(),
            }),
            liveness: None,
            template: None,
            shape: None,
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

    /// Full analysis of already prepared images. Each image gets its own result: an error
    /// passed in, or met by that image in any stage, fails that image alone.
    pub fn analyze_prepared(
        &self,
        prepared: Vec<Result<Prepared>>,
        opts: &AnalyzeOptions,
    ) -> Vec<Result<Analysis>> {
        let t0 = Instant::now();
        let mut results: Vec<Result<Analysis>> = Vec::with_capacity(prepared.len());
        let mut images: Vec<Option<Prepared>> = Vec::with_capacity(prepared.len());
        for p in prepared {
            match p {
                Ok(p) => {
                    images.push(Some(p));
                    results.push(Err(Error::Internal("image not analysed".into())));
                }
                Err(e) => {
                    images.push(None);
                    results.push(Err(e));
                }
            }
        }
        let live: Vec<usize> = (0..images.len()).filter(|&i| images[i].is_some()).collect();
        let refs: Vec<&Prepared> = live.iter().filter_map(|&i| images[i].as_ref()).collect();
        let td = Instant::now();
        let detections = self.detect(&refs);
        let detect_ms = ms(td);
        let tq = Instant::now();
        for (&i, faces) in live.iter().zip(detections) {
            let Some(p) = images[i].as_mut() else {
                continue;
            };
            results[i] = faces.map(|faces| {
                let mut a = self.assess(p, faces, opts);
                a.timings.detect_ms = detect_ms;
                a
            });
        }
        let quality_ms = ms(tq) / live.len().max(1) as f64;
        // Which images go on to the networks, each face in the pixels its networks read.
        let (eligible, views): (Vec<usize>, Vec<(PixelView, Face)>) = live
            .iter()
            .filter_map(|&i| {
                let face = results[i].as_ref().ok()?.network_face(opts)?;
                let view = images[i].as_ref()?.view(face);
                Some((i, (view, view.face(face))))
            })
            .unzip();
        let selected: Vec<(&RgbImage, &Face)> = views.iter().map(|(v, f)| (v.image, f)).collect();
        let tl = Instant::now();
        if opts.liveness {
            for (&i, outputs) in eligible.iter().zip(self.liveness(&selected)) {
                let verdict = outputs.and_then(|o| self.judge(&o, opts.calibration));
                set_or_fail(&mut results[i], verdict, |a, l| a.liveness = Some(l));
            }
        }
        let liveness_ms = ms(tl);
        let tt = Instant::now();
        if opts.template {
            for (&i, t) in eligible.iter().zip(self.describe(&selected)) {
                set_or_fail(&mut results[i], t, |a, t| a.template = Some(t));
            }
        }
        let template_ms = ms(tt);
        let tk = Instant::now();
        if opts.landmarks {
            for ((&i, shape), (view, _)) in eligible.iter().zip(self.shapes(&selected)).zip(&views)
            {
                let shape = shape.map(|s| view.shape_to_full(s));
                set_or_fail(&mut results[i], shape, |a, s| a.shape = Some(s));
            }
        }
        let landmarks_ms = ms(tk);
        let total = ms(t0);
        for a in results.iter_mut().flatten() {
            a.timings.quality_ms = quality_ms;
            a.timings.liveness_ms = liveness_ms;
            a.timings.template_ms = template_ms;
            a.timings.landmarks_ms = landmarks_ms;
            a.timings.total_ms = a.timings.decode_ms + total;
        }
        results
    }

    /// Full analysis of one encoded image.
    pub fn analyze(&self, bytes: &[u8], opts: &AnalyzeOptions) -> Result<Analysis> {
        self.analyze_batch(&[bytes], opts)
            .pop()
            .unwrap_or_else(|| Err(Error::Internal("empty batch".into())))
    }
}

/// Stores a stage's result into an image's analysis, or turns the analysis into the stage's
/// error (that image alone fails).
fn set_or_fail<T>(slot: &mut Result<Analysis>, r: Result<T>, set: impl FnOnce(&mut Analysis, T)) {
    match (slot.as_mut(), r) {
        (Ok(a), Ok(v)) => set(a, v),
        (Ok(_), Err(e)) => *slot = Err(e),
        (Err(_), _) => {}
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
