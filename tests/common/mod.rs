//! Paths shared by the integration tests: `../shared` beside the checkout and the models folder.
#![allow(dead_code)]

use std::path::PathBuf;

/// `../shared` relative to the crate root (CI keeps it beside the checkout).
pub fn shared_dir() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    assert!(
        p.is_dir(),
        "../shared is missing at {}: tests need the shared fixtures beside the checkout",
        p.display()
    );
    p
}

/// The models folder: `FACEGATE_MODELS_DIR`, else `models/` in the crate root.
pub fn models_dir() -> PathBuf {
    std::env::var_os("FACEGATE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models"))
}

/// A model file, failing loudly (never skipping) when setup has not fetched it.
pub fn model_file(rel: &str) -> PathBuf {
    let p = models_dir().join(rel);
    assert!(
        p.is_file(),
        "model file {} is missing: run `cargo run --release -- models fetch` first",
        p.display()
    );
    p
}

/// A fixture photo from `../shared/fixtures/faces`.
pub fn fixture(name: &str) -> PathBuf {
    shared_dir().join("fixtures/faces").join(name)
}

/// Parses a JSON file.
pub fn read_json(p: &std::path::Path) -> serde_json::Value {
    let s = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub mod http;
pub mod openapi;
pub mod warp;

/// The browser of the browser tests: `$FACEGATE_CHROMIUM`, else Debian's `/usr/bin/chromium`.
/// Missing, the test fails saying how to install it (it is never skipped).
pub fn chromium() -> PathBuf {
    let p = std::env::var_os("FACEGATE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        p.exists(),
        "no browser at {}: run scripts/setup-system.sh (installs Debian's chromium)",
        p.display()
    );
    p
}

/// Flags of every headless Chromium the tests start: no sandbox (CI runs as root), no GPU,
/// and nothing that reaches the network by itself.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];
