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
        Device::new_cuda(n).map_err(|e| format!("CUDA device {n} did not open ({e})"))
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

#[cfg(test)]
mod tests {
    use super::*;

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
