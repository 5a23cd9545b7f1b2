//! Image preprocessing: bounded decoding (photos; videos behind the `video` feature), resizing,
//! the MiniFASNet crop rule, the aligned descriptor chip, the landmark network's square crop and
//! packing into batch tensors. Pure CPU code with no model logic.

pub mod align;
pub mod batch;
pub mod crop;
pub mod decode;
pub mod launch;
pub mod recapture;
pub mod resize;
pub mod spectrum;
pub mod square;
pub mod video;
