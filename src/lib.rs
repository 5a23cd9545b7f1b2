//! facegate: face detection, passive liveness and face templates on candle, served in the
//! REST dialects of five commercial servers.

pub mod error;
pub mod nn;
pub mod preprocess;

pub use error::{Error, Result};
