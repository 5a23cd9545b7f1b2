//! Image preprocessing: bounded decoding, resizing, the MiniFASNet crop rule and packing into
//! batch tensors. Everything here is pure CPU code with no model logic.

pub mod crop;
pub mod decode;
pub mod resize;
