//! facegate: face detection, passive liveness and face templates on candle, served in the
//! REST dialects of five commercial servers.

pub mod error;
pub mod nn;

pub use error::{Error, Result};
pub mod models;
pub mod preprocess;
