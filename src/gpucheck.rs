//! `facegate gpucheck`: the GPU path against the CPU path on a machine with a GPU, and the
//! per-network and per-kernel timings, as one JSON report (what `scripts/bench-gpu.sh` runs on
//! a lent GPU machine).
//!
//! 1. Kernels: every preprocessing kernel of `kernels/preprocess.cu` against its CPU twin
//!    (`src/preprocess/batch.rs`) on the fixture photos, and the depthwise kernel against its
//!    twin in f32 and f16; with the time per launch and the bytes it moves.
//! 2. Networks: the engine on the GPU against the engine on the CPU, fixture by fixture:
//!    detector boxes and scores, every PAD network's softmax, the face descriptor, the 68
//!    landmarks. The CPU engine is the one the golden tests hold to the upstream outputs.
//! 3. Timings: every stage of the engine at each batch size asked for, on the GPU.
//!
//! Each comparison has a stated tolerance; the command fails (exit 1) when one is exceeded,
//! and refuses to run (exit 2) when the device does not open.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use clap::Args;
use image::RgbImage;
use serde_json::{json, Value};

use crate::config::EngineArgs;
use crate::engine::{Engine, EngineConfig, Face, Prepared};
use crate::nn::cuda::depthwise::Depthwise;
use crate::nn::device::{self, DeviceChoice, Precision};
use crate::preprocess::decode::{decode_rgb, DecodeLimits};
use crate::{Error, Result};

/// `facegate gpucheck`
#[derive(Debug, Args)]
pub struct GpuCheckArgs {
    /// Engine settings; `--device` picks the GPU (default cuda:0).
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Folder of JPEG/PNG photos with one face each.
    #[arg(long, default_value = "../shared/fixtures/faces")]
    pub fixtures: PathBuf,
    /// Batch sizes to time each stage at (comma-separated).
    #[arg(
        long,
        default_value = "1,2,4,8,16,32,64,128,256",
        value_delimiter = ','
    )]
    pub batches: Vec<usize>,
    /// Timed runs per batch size (the median is reported), after one untimed run.
    #[arg(long, default_value_t = 5)]
    pub repeat: usize,
    /// Memory bandwidth of the device in GB/s, for the kernels' bytes-moved floor (H200: 4800).
    #[arg(long, default_value_t = 4800.0)]
    pub peak_gbs: f64,
    /// Host-to-device bandwidth in GB/s, for the upload part of that floor (PCIe 5 x16: 64).
    #[arg(long, default_value_t = 64.0)]
    pub pcie_gbs: f64,
    /// Write the report here (also printed).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Largest absolute difference between two equally long slices (infinite when the lengths
/// differ or a value is NaN on one side only).
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return f32::INFINITY;
    }
    a.iter().zip(b).fold(0f32, |m, (x, y)| {
        let d = (x - y).abs();
        if d.is_nan() {
            if x.is_nan() && y.is_nan() {
                m
            } else {
                f32::INFINITY
            }
        } else {
            m.max(d)
        }
    })
}

/// One comparison: its name, the difference found, the tolerance and the verdict.
fn verdict(name: &str, diff: f32, tol: f32) -> Value {
    json!({"check": name, "max_abs_diff": diff, "tolerance": tol, "pass": diff <= tol})
}

/// Runs the check and prints (and optionally writes) the report.
pub fn gpucheck(a: &GpuCheckArgs) -> Result<ExitCode> {
    let mut cfg = crate::app::engine_config(&a.engine)?;
    if a.engine.device.is_none() {
        cfg.device = DeviceChoice::Cuda(0);
    }
    let (gpu, why) = device::open(cfg.device);
    if gpu.is_cpu() {
        return Err(Error::Unavailable(format!(
            "gpucheck needs a GPU: {}",
            why.unwrap_or_else(|| format!("{} is the CPU", cfg.device))
        )));
    }
    let images = fixtures(&a.fixtures)?;
    let mut checks = Vec::new();
    let mut report = serde_json::Map::new();
    report.insert("device".into(), json!(cfg.device.to_string()));
    report.insert("fixtures".into(), json!(images.len()));

    let (kernel_checks, kernel_times) =
        kernel_checks(&images, &gpu, a.repeat, (a.peak_gbs, a.pcie_gbs))?;
    checks.extend(kernel_checks);
    report.insert("kernels".into(), kernel_times);
    checks.extend(depthwise_checks(&gpu)?);

    let cpu_engine = Engine::load(cfg.clone(), Device::Cpu)?;
    for (precision, tol) in [(Precision::F32, F32_TOL), (Precision::F16, F16_TOL)] {
        let on_gpu = EngineConfig {
            precision,
            ..cfg.clone()
        };
        let gpu_engine = Engine::load(on_gpu, gpu.clone())?;
        checks.extend(network_checks(
            &cpu_engine,
            &gpu_engine,
            &images,
            precision,
            &tol,
        )?);
        let name = format!("stages_{}", precision.name());
        report.insert(
            name,
            stage_times(&gpu_engine, &images, &a.batches, a.repeat)?,
        );
    }

    let failed = checks.iter().filter(|c| c["pass"] != json!(true)).count();
    report.insert("checks".into(), Value::Array(checks));
    report.insert("failed".into(), json!(failed));
    let text = serde_json::to_string_pretty(&Value::Object(report))
        .map_err(|e| Error::Internal(format!("report: {e}")))?;
    println!("{text}");
    if let Some(out) = &a.out {
        std::fs::write(out, &text)?;
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The photos of `dir`, decoded (sorted by name; at least one).
fn fixtures(dir: &Path) -> Result<Vec<RgbImage>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::InvalidArgument(format!("fixtures {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| matches!(x.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    paths.sort();
    let limits = DecodeLimits::default();
    let images = paths
        .iter()
        .map(|p| decode_rgb(&std::fs::read(p)?, &limits))
        .collect::<Result<Vec<_>>>()?;
    if images.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "no JPEG or PNG in {}",
            dir.display()
        )));
    }
    Ok(images)
}

/// Tolerance of the warp kernel against its twin (f64 sampling on both; the last f32 rounding
/// may differ where the device's division or floor differs). The packing and crop kernels are
/// integer arithmetic plus one subtraction and must match exactly.
const WARP_TOL: f32 = 1e-3;

/// Every preprocessing kernel against its CPU twin on the fixtures (one batch of all of them,
/// with a crop and a chip per image and the mirrored crops), and each kernel's time per call
/// (upload included) against the floor its bytes set: the pixels over the host link at
/// `pcie_gbs`, then read once and the output written once at `hbm_gbs`.
fn kernel_checks(
    images: &[RgbImage],
    gpu: &Device,
    repeat: usize,
    (hbm_gbs, pcie_gbs): (f64, f64),
) -> Result<(Vec<Value>, Value)> {
    use crate::preprocess::batch::{align_job, crop_job};
    use crate::preprocess::launch::{chip_input, crop_input, detector_input};

    let refs: Vec<&RgbImage> = images.iter().collect();
    // A face-sized box in the middle of each image, and the chip template scaled onto it.
    let crops: Vec<_> = [false, true]
        .iter()
        .flat_map(|&mirror| {
            refs.iter().enumerate().map(move |(i, img)| {
                let (w, h) = (img.width() as f32, img.height() as f32);
                let bbox = [w * 0.3, h * 0.25, w * 0.4, h * 0.5];
                crop_job(img.width(), img.height(), i, bbox, 2.7, mirror)
            })
        })
        .collect();
    let chips = refs
        .iter()
        .enumerate()
        .map(|(i, img)| {
            let (w, h) = (img.width() as f32, img.height() as f32);
            let lm = [
                [w * 0.42, h * 0.42],
                [w * 0.58, h * 0.42],
                [w * 0.5, h * 0.52],
                [w * 0.44, h * 0.62],
                [w * 0.56, h * 0.62],
            ];
            align_job(i, &lm)
        })
        .collect::<Result<Vec<_>>>()?;
    let pixels: usize = refs.iter().map(|i| i.as_raw().len()).sum();
    let mut checks = Vec::new();
    let mut times = Vec::new();
    let mut one = |name: &str,
                   tol: f32,
                   out_values: usize,
                   run: &dyn Fn(&Device) -> Result<Tensor>|
     -> Result<()> {
        let cpu = run(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
        let dev = run(gpu)?.flatten_all()?.to_vec1::<f32>()?;
        checks.push(verdict(
            &format!("kernel {name} against its CPU twin"),
            max_abs_diff(&cpu, &dev),
            tol,
        ));
        let ms = median_ms(repeat, &|| {
            run(gpu)?;
            gpu.synchronize()?;
            Ok(())
        })?;
        let upload = pixels as f64;
        let on_device = pixels as f64 + 4.0 * out_values as f64;
        let floor_ms = (upload / (pcie_gbs * 1e9) + on_device / (hbm_gbs * 1e9)) * 1e3;
        times.push(json!({
            "kernel": name,
            "ms_per_call_with_upload": ms,
            "upload_bytes": upload,
            "device_bytes": on_device,
            "floor_ms": floor_ms,
            "floor_fraction": floor_ms / ms.max(1e-9),
        }));
        Ok(())
    };
    let (h, w) = (
        refs.iter().map(|i| i.height()).max().unwrap_or(0) as usize,
        refs.iter().map(|i| i.width()).max().unwrap_or(0) as usize,
    );
    let mean = crate::nn::retinaface::MEAN_BGR;
    one("detector_pack", 0.0, refs.len() * 3 * h * w, &|d| {
        detector_input(&refs, mean, d)
    })?;
    one("crop_pack", 0.0, crops.len() * 3 * 80 * 80, &|d| {
        crop_input(&refs, &crops, 80, d)
    })?;
    let side = crate::preprocess::align::CHIP_SIZE;
    one("chip_warp", WARP_TOL, chips.len() * 3 * side * side, &|d| {
        chip_input(&refs, &chips, side, d)
    })?;
    Ok((checks, Value::Array(times)))
}

/// The depthwise kernel against its CPU twin: f32 (tolerance 1e-4) and f16 (5e-2, inputs
/// in -0.5..0.5 with 3x3 and 5x5 kernels).
fn depthwise_checks(gpu: &Device) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for (stride, pad, k) in [(1usize, 1usize, 3usize), (2, 1, 3), (1, 0, 5)] {
        let (n, c, h, w) = (4, 64, 28, 28);
        let x = Tensor::rand(-0.5f32, 0.5, (n, c, h, w), &Device::Cpu)?;
        let wt = Tensor::rand(-0.5f32, 0.5, (c, 1, k, k), &Device::Cpu)?;
        let b = Tensor::rand(-0.5f32, 0.5, c, &Device::Cpu)?;
        let op = Depthwise { stride, pad };
        let cpu = op.forward(&x, &wt, &b)?.flatten_all()?.to_vec1::<f32>()?;
        for dtype in [DType::F32, DType::F16] {
            let on = |t: &Tensor| -> Result<Tensor> { Ok(t.to_device(gpu)?.to_dtype(dtype)?) };
            let y = op
                .forward(&on(&x)?, &on(&wt)?, &on(&b)?)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let tol = if dtype == DType::F32 { 1e-4 } else { 5e-2 };
            out.push(verdict(
                &format!("depthwise {k}x{k} stride {stride} {dtype:?}"),
                max_abs_diff(&cpu, &y),
                tol,
            ));
        }
    }
    Ok(out)
}

/// Tolerances of the network comparison: box corners and landmarks in face heights (the
/// regression error scales with the face), scores and softmax outputs in probability,
/// descriptor values.
struct Tolerances {
    boxes: f32,
    prob: f32,
    descriptor: f32,
    landmarks: f32,
}

/// f32 on the GPU: the same arithmetic in another order (cuBLAS, our depthwise kernel).
const F32_TOL: Tolerances = Tolerances {
    boxes: 2e-3,
    prob: 1e-3,
    descriptor: 1e-3,
    landmarks: 2e-3,
};

/// f16 on the GPU: 11 significant bits (tests/golden_f16.rs measures the same networks in f16
/// on the CPU: logits within 1.1e-2, the descriptor within 4e-4, detector points within 2.4 %
/// of the face height).
const F16_TOL: Tolerances = Tolerances {
    boxes: 5e-2,
    prob: 1e-2,
    descriptor: 1e-2,
    landmarks: 5e-2,
};

/// The GPU engine against the CPU engine on every fixture.
fn network_checks(
    cpu: &Engine,
    gpu: &Engine,
    images: &[RgbImage],
    precision: Precision,
    tol: &Tolerances,
) -> Result<Vec<Value>> {
    let mut worst = [0f32; 5];
    for img in images {
        let (pc, pg) = (
            cpu.prepare_image(img.clone()),
            gpu.prepare_image(img.clone()),
        );
        let fc = one(cpu.detect(&[&pc]))?;
        let fg = one(gpu.detect(&[&pg]))?;
        let (Some(c), Some(g)) = (fc.first(), fg.first()) else {
            if fc.len() != fg.len() {
                worst[0] = f32::INFINITY;
            }
            continue;
        };
        let height = (c.bbox[3] - c.bbox[1]).max(1.0);
        worst[0] = worst[0].max(max_abs_diff(&face_values(c), &face_values(g)) / height);
        // The later stages run on the CPU's face on both devices, so that they compare the
        // networks, not the detector's small differences.
        let lc = one(cpu.liveness(&[(&pc.image, c)]))?;
        let lg = one(gpu.liveness(&[(&pg.image, c)]))?;
        let soft = |v: &[crate::engine::NetworkOutput]| -> Vec<f32> {
            v.iter().flat_map(|o| o.softmax).collect()
        };
        worst[1] = worst[1].max(max_abs_diff(&soft(&lc), &soft(&lg)));
        if cpu.config().load_descriptor {
            let dc = one(cpu.describe(&[(&pc.image, c)]))?;
            let dg = one(gpu.describe(&[(&pg.image, c)]))?;
            worst[2] = worst[2].max(max_abs_diff(&dc.descriptor, &dg.descriptor));
        }
        if cpu.config().load_landmarks {
            let sc = one(cpu.shapes(&[(&pc.image, c)]))?;
            let sg = one(gpu.shapes(&[(&pg.image, c)]))?;
            let pts = |s: &crate::engine::pose::FaceShape| -> Vec<f32> {
                s.points.iter().flatten().copied().collect()
            };
            worst[3] = worst[3].max(max_abs_diff(&pts(&sc), &pts(&sg)) / height);
        }
        worst[4] = worst[4].max((c.score - g.score).abs());
    }
    let p = precision.name();
    Ok(vec![
        verdict(
            &format!("{p}: detector boxes and landmarks (face heights)"),
            worst[0],
            tol.boxes,
        ),
        verdict(&format!("{p}: detector score"), worst[4], tol.prob),
        verdict(
            &format!("{p}: PAD softmax, every network"),
            worst[1],
            tol.prob,
        ),
        verdict(&format!("{p}: face descriptor"), worst[2], tol.descriptor),
        verdict(
            &format!("{p}: 68 landmarks (face heights)"),
            worst[3],
            tol.landmarks,
        ),
    ])
}

/// Box corners and the five landmarks of a face, flat.
fn face_values(f: &Face) -> Vec<f32> {
    f.bbox
        .iter()
        .copied()
        .chain(f.landmarks.iter().flatten().copied())
        .collect()
}

/// The only result of a one-item stage call.
fn one<T>(mut v: Vec<Result<T>>) -> Result<T> {
    v.pop()
        .unwrap_or_else(|| Err(Error::Internal("empty stage result".into())))
}

/// Median milliseconds of `repeat` runs of `f` after one untimed run.
fn median_ms(repeat: usize, f: &dyn Fn() -> Result<()>) -> Result<f64> {
    f()?;
    let mut t: Vec<f64> = (0..repeat.max(1))
        .map(|_| {
            let s = Instant::now();
            f().map(|()| s.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_>>()?;
    t.sort_by(f64::total_cmp);
    Ok(t[t.len() / 2])
}

/// Every stage's time per batch and per image on the GPU engine, the fixtures repeated to
/// fill each batch.
fn stage_times(
    gpu: &Engine,
    images: &[RgbImage],
    batches: &[usize],
    repeat: usize,
) -> Result<Value> {
    let prepared: Vec<Prepared> = images
        .iter()
        .map(|i| gpu.prepare_image(i.clone()))
        .collect();
    let faces: Vec<(usize, Face)> = prepared
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            one(gpu.detect(&[p]))
                .ok()?
                .into_iter()
                .next()
                .map(|f| (i, f))
        })
        .collect();
    if faces.is_empty() {
        return Err(Error::InvalidArgument(
            "no face found in the fixtures".into(),
        ));
    }
    let mut rows = Vec::new();
    for &b in batches.iter().filter(|&&b| b > 0) {
        let items: Vec<&Prepared> = (0..b).map(|i| &prepared[i % prepared.len()]).collect();
        let pairs: Vec<(&RgbImage, &Face)> = (0..b)
            .map(|i| {
                let (k, f) = &faces[i % faces.len()];
                (&prepared[*k].image, f)
            })
            .collect();
        /// Fails when any item of a stage's results failed.
        fn all_ok<T>(v: Vec<Result<T>>) -> Result<()> {
            v.into_iter().try_for_each(|r| r.map(|_| ()))
        }
        let mut row = serde_json::Map::new();
        row.insert("batch".into(), json!(b));
        let mut time = |name: &str, run: &dyn Fn() -> Result<()>| -> Result<()> {
            row.insert(format!("{name}_ms"), json!(median_ms(repeat, run)?));
            Ok(())
        };
        time("detect", &|| all_ok(gpu.detect(&items)))?;
        time("liveness", &|| all_ok(gpu.liveness(&pairs)))?;
        if gpu.config().load_descriptor {
            time("describe", &|| all_ok(gpu.describe(&pairs)))?;
        }
        if gpu.config().load_landmarks {
            time("landmarks", &|| all_ok(gpu.shapes(&pairs)))?;
        }
        rows.push(Value::Object(row));
    }
    Ok(Value::Array(rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_count_nan_and_length_mismatch_as_infinite() {
        assert_eq!(max_abs_diff(&[1.0, 2.0], &[1.5, 1.0]), 1.0);
        assert_eq!(max_abs_diff(&[1.0], &[1.0, 2.0]), f32::INFINITY);
        assert_eq!(max_abs_diff(&[f32::NAN], &[1.0]), f32::INFINITY);
        assert_eq!(max_abs_diff(&[f32::NAN], &[f32::NAN]), 0.0);
        assert_eq!(verdict("x", 0.5, 0.1)["pass"], json!(false));
    }

    #[test]
    fn refuses_to_run_without_a_gpu() {
        if candle_core::utils::cuda_is_available() {
            return; // a CUDA build: whether a GPU opens depends on the machine
        }
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            a: GpuCheckArgs,
        }
        let cli = <Cli as clap::Parser>::parse_from(["gpucheck", "--fixtures", "."]);
        assert_eq!(cli.a.batches, [1, 2, 4, 8, 16, 32, 64, 128, 256]);
        let e = gpucheck(&cli.a).unwrap_err().to_string();
        assert!(e.contains("gpucheck needs a GPU"), "{e}");
        assert!(e.contains("built without the `cuda` feature"), "{e}");
    }
}
