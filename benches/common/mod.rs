//! What the benchmarks share: where the models and the fixtures are.
#![allow(dead_code)]

use std::path::PathBuf;

/// The models folder: `FACEGATE_MODELS_DIR`, else `models/` in the crate root (`facegate models
/// fetch` sets it up).
pub fn models_dir() -> PathBuf {
    std::env::var_os("FACEGATE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"))
}

/// A fixture photo from `../shared/fixtures/faces`, read whole.
pub fn fixture(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/faces")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {} in ../shared: {e}", p.display()))
}
