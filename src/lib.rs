//! facegate: face detection, passive liveness and face templates on candle, served in the
//! REST dialects of five commercial servers.

pub mod api;
pub mod app;
pub mod batcher;
pub mod bench;
pub mod bi;
pub mod cli;
pub mod config;
pub mod engine;
pub mod error;
pub mod eval;
pub mod gpucheck;
pub mod models;
pub mod nn;
pub mod pg;
pub mod preprocess;
pub mod replay;
pub mod server;
pub mod telemetry;

pub use error::{Error, Result};
