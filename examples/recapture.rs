//! Simulated screen replays for evaluating replay signals: every input photo shown on the
//! modelled LCD and photographed (`facegate::preprocess::recapture`), with parameters drawn from
//! the documented sweep, seeded by the file name so that a run repeats exactly.
//!
//! ```sh
//! cargo run --release --example recapture -- OUT_DIR IMAGE_OR_FOLDER...
//! ```
//!
//! Writes `OUT_DIR/<name>.jpg` (quality 90, the input's name kept so its subject prefix stays)
//! and `OUT_DIR/params.jsonl` (one line per image: file and parameters).

use std::path::{Path, PathBuf};

use facegate::preprocess::decode::{decode_rgb, encode_jpeg, DecodeLimits};
use facegate::preprocess::recapture::{recapture, Recapture};

fn images(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut v: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// FNV-1a of the file name: the seed of its recapture.
fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(
        args.next()
            .ok_or("usage: recapture OUT_DIR IMAGE_OR_FOLDER...")?,
    );
    let inputs: Vec<PathBuf> = args.map(PathBuf::from).collect();
    if inputs.is_empty() {
        return Err("usage: recapture OUT_DIR IMAGE_OR_FOLDER...".into());
    }
    std::fs::create_dir_all(&out)?;
    let limits = DecodeLimits::default();
    let mut params = String::new();
    for input in &inputs {
        for file in images(input)? {
            let name = file
                .file_stem()
                .and_then(|s| s.to_str())
                .ok_or("file name is not UTF-8")?
                .to_string();
            let photo = decode_rgb(&std::fs::read(&file)?, &limits)?;
            let p = Recapture::drawn(seed_of(&name));
            let shot = recapture(&photo, &p);
            std::fs::write(out.join(format!("{name}.jpg")), encode_jpeg(&shot, 90)?)?;
            params.push_str(
                &serde_json::json!({"file": file.display().to_string(), "params": p}).to_string(),
            );
            params.push('\n');
        }
    }
    std::fs::write(out.join("params.jsonl"), params)?;
    Ok(())
}
