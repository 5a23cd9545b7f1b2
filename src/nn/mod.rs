//! Networks, natively in candle, one file each. Every `forward` takes a batch (N >= 1).

pub mod cpu;
pub mod cuda;
pub mod device;
pub mod face_descriptor;
pub mod face_landmarks;
pub mod layers;
pub mod minifasnet;
pub mod onnx;
pub mod retinaface;
pub mod tfjs;
