//! Where the networks run: the `--device` choice, and the fall back to CPU with its reason.

use std::fmt;
use std::str::FromStr;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use crate::Error;

/// The device asked for (`engine.device`, `--device`): `auto` (CUDA device 0 when this build
/// has CUDA and the device opens, else CPU), `cpu`, or `cuda` / `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum DeviceChoice {
    /// CUDA device 0 if there is one, else CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad =
            || Error::InvalidArgument(format!("device {s:?}: expected auto, cpu, cuda or cuda:N"));
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda(0)),
            other => other
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Self::Cuda)
                .ok_or_else(bad),
        }
    }
}

impl TryFrom<String> for DeviceChoice {
    type Error = Error;

    fn try_from(s: String) -> Result<Self, Error> {
        s.parse()
    }
}

impl From<DeviceChoice> for String {
    fn from(d: DeviceChoice) -> String {
        d.to_string()
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The device for `choice`, with the reason when the server falls back to CPU instead of the
/// device asked for (`None` when it got what it asked for: CPU, or `auto` in a build without
/// CUDA, where CPU is the only device there is).
pub fn open(choice: DeviceChoice) -> (Device, Option<String>) {
    let cuda = |n: usize| -> Result<Device, String> {
        if !candle_core::utils::cuda_is_available() {
            return Err("this build has no CUDA support (built without the `cuda` feature)".into());
        }
        missing_cuda_libraries()?;
        // cudarc panics when a library it loads lazily is missing: keep that a fallback too.
        std::panic::catch_unwind(|| Device::new_cuda_with_stream(n))
            .map_err(|_| format!("CUDA device {n} did not open (the CUDA libraries panicked)"))?
            .map_err(|e| format!("CUDA device {n} did not open ({})", first_line(&e)))
    };
    let fall_back = |why: String| {
        (
            Device::Cpu,
            Some(format!("{choice}: {why}; serving on CPU")),
        )
    };
    match choice {
        DeviceChoice::Cpu => (Device::Cpu, None),
        DeviceChoice::Auto if !candle_core::utils::cuda_is_available() => (Device::Cpu, None),
        DeviceChoice::Auto => cuda(0).map_or_else(fall_back, |d| (d, None)),
        DeviceChoice::Cuda(n) => cuda(n).map_or_else(fall_back, |d| (d, None)),
    }
}

/// The first line of an error's message (candle appends a backtrace when `RUST_BACKTRACE` is
/// set; `/health` and the log line want the reason only).
pub fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

/// The numeric precision of the networks on a GPU (`engine.precision`, `--precision`): f32,
/// or f16 activations and weights (the CPU kernels are f32 only: on the CPU it is always f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit floats everywhere.
    #[default]
    F32,
    /// 16-bit floats on a GPU (outputs converted back to f32).
    F16,
}

impl FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            _ => Err(Error::InvalidArgument(format!(
                "precision {s:?}: expected f32 or f16"
            ))),
        }
    }
}

impl Precision {
    /// `f32` or `f16`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
        }
    }

    /// The dtype the networks compute in on `device`: f16 only when asked for and on a GPU.
    pub fn dtype_on(self, device: &Device) -> candle_core::DType {
        match self {
            Self::F16 if !device.is_cpu() => candle_core::DType::F16,
            _ => candle_core::DType::F32,
        }
    }
}

/// GPUs the driver sees (0 without the `cuda` feature, a driver or the CUDA libraries).
pub fn cuda_device_count() -> usize {
    #[cfg(feature = "cuda")]
    {
        use candle_core::cuda_backend::cudarc::driver::CudaContext;
        if missing_cuda_libraries().is_err() {
            return 0;
        }
        std::panic::catch_unwind(CudaContext::device_count)
            .ok()
            .and_then(|r| r.ok())
            .map_or(0, |n| usize::try_from(n).unwrap_or(0))
    }
    #[cfg(not(feature = "cuda"))]
    0
}

/// A short label for `device`: `cpu`, `cuda:N` or `metal`.
pub fn label(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// The shared libraries a CUDA build opens at run time (scripts/build-cuda.sh builds it so that
/// none is needed to start): the driver, then the CUDA 13 libraries candle uses.
pub const CUDA_LIBRARIES: [&str; 5] = [
    "libcuda.so.1",
    "libcublas.so.13",
    "libcublasLt.so.13",
    "libcurand.so.10",
    "libnvrtc.so.13",
];

/// Fails, naming them, when a library of [`CUDA_LIBRARIES`] does not load (no NVIDIA driver,
/// or the CUDA libraries are not on `LD_LIBRARY_PATH`). Without the `cuda` feature there is
/// nothing to load.
pub fn missing_cuda_libraries() -> Result<(), String> {
    #[cfg(feature = "cuda")]
    {
        let missing: Vec<String> = CUDA_LIBRARIES
            .iter()
            // SAFETY: loading runs the libraries' initialisers; these are NVIDIA's own CUDA
            // libraries, the ones cudarc would load in the same way when the device opens.
            .filter(|name| unsafe { libloading::Library::new(**name) }.is_err())
            .map(|name| name.to_string())
            .collect();
        if let Some(first) = missing.first() {
            let driver = if first.starts_with("libcuda.so") {
                "no NVIDIA driver: "
            } else {
                "the CUDA 13 libraries are not on LD_LIBRARY_PATH: "
            };
            return Err(format!("{driver}{} did not load", missing.join(", ")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_keep_their_first_line_and_precisions_parse() {
        assert_eq!(
            first_line(&"no device (x)\n   0: backtrace"),
            "no device (x)"
        );
        assert_eq!(first_line(&""), "");
        assert_eq!("F16".parse::<Precision>().unwrap(), Precision::F16);
        assert!("f8"
            .parse::<Precision>()
            .unwrap_err()
            .to_string()
            .contains("f32 or f16"));
        // f16 only on a GPU: the CPU kernels are f32.
        assert_eq!(
            Precision::F16.dtype_on(&Device::Cpu),
            candle_core::DType::F32
        );
    }

    #[test]
    fn choices_parse_print_and_refuse() {
        for (s, d) in [
            ("auto", DeviceChoice::Auto),
            ("CPU", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
        ] {
            assert_eq!(s.parse::<DeviceChoice>().unwrap(), d);
            assert_eq!(d.to_string().parse::<DeviceChoice>().unwrap(), d);
        }
        for bad in ["gpu", "cuda:", "cuda:x", "cuda:-1", ""] {
            let e = bad.parse::<DeviceChoice>().unwrap_err().to_string();
            assert!(e.contains("expected auto, cpu, cuda or cuda:N"), "{e}");
        }
    }

    #[test]
    fn without_cuda_every_choice_serves_on_cpu_and_an_explicit_cuda_says_why() {
        assert!(open(DeviceChoice::Cpu).0.is_cpu());
        assert_eq!(open(DeviceChoice::Cpu).1, None);
        if candle_core::utils::cuda_is_available() {
            return; // a CUDA build: what opens depends on the machine
        }
        let (d, why) = open(DeviceChoice::Auto);
        assert!(d.is_cpu() && why.is_none());
        let (d, why) = open(DeviceChoice::Cuda(1));
        assert!(d.is_cpu());
        let why = why.unwrap();
        assert!(
            why.starts_with("cuda:1: this build has no CUDA support"),
            "{why}"
        );
        assert!(why.ends_with("serving on CPU"), "{why}");
    }
}
