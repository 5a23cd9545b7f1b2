//! `facegate keys` and `facegate bundle`: the client side of the FGCB capture bundle, for
//! tests, demos and integrators (see docs/capture-bundle.md).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use sha2::{Digest, Sha256};

use super::capture::{self, checks, BundlePayload, CaptureMeta, ExifTags};
use crate::bi::now_ms;
use crate::{Error, Result};

/// `facegate keys ...`
#[derive(Debug, Subcommand)]
pub enum KeysAction {
    /// Generate an RSA key pair: private.pem (PKCS#8) for the server, public.pem (SPKI) for clients.
    Generate(KeysGenerateArgs),
}

/// Arguments of `facegate keys generate`.
#[derive(Debug, Args)]
pub struct KeysGenerateArgs {
    /// Folder to write private.pem and public.pem into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// RSA modulus size, bits.
    #[arg(long, default_value_t = 3072)]
    pub bits: usize,
    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
}

/// `facegate bundle ...`
#[derive(Debug, Subcommand)]
pub enum BundleAction {
    /// Seal a JPEG and its capture metadata into an FGCB bundle.
    Create(BundleCreateArgs),
}

/// Arguments of `facegate bundle create`. Metadata comes from `--meta` (a JSON
/// `CaptureMeta`), then the individual flags override it.
#[derive(Debug, Args)]
pub struct BundleCreateArgs {
    /// Server public key (SPKI PEM).
    #[arg(long)]
    pub public_key: PathBuf,
    /// The captured JPEG.
    #[arg(long)]
    pub image: PathBuf,
    /// JSON file with capture metadata (fields of docs/capture-bundle.md).
    #[arg(long)]
    pub meta: Option<PathBuf>,
    /// JSON file with external data to carry.
    #[arg(long)]
    pub external: Option<PathBuf>,
    /// Server-issued nonce.
    #[arg(long)]
    pub nonce: Option<String>,
    /// Operating system (Android, iOS, Windows...).
    #[arg(long)]
    pub os: Option<String>,
    /// Device manufacturer.
    #[arg(long)]
    pub manufacturer: Option<String>,
    /// Device model.
    #[arg(long)]
    pub model: Option<String>,
    /// Camera label.
    #[arg(long)]
    pub camera_label: Option<String>,
    /// Application id.
    #[arg(long)]
    pub app_id: Option<String>,
    /// SDK version string.
    #[arg(long)]
    pub sdk_version: Option<String>,
    /// SDK digest (SHA-256 hex) [default: the digest of this facegate executable].
    #[arg(long)]
    pub sdk_digest: Option<String>,
    /// Capture time, Unix ms [default: now].
    #[arg(long)]
    pub capture_time_ms: Option<i64>,
    /// Write EXIF Make/Model (from the metadata) into the JPEG, as a phone camera would.
    #[arg(long)]
    pub stamp_exif: bool,
    /// Where to write the bundle.
    #[arg(long)]
    pub out: PathBuf,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    serde_json::from_slice(&read(path)?)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))
}

/// Runs `facegate keys ...`.
pub fn keys(action: &KeysAction) -> Result<ExitCode> {
    let KeysAction::Generate(a) = action;
    let (priv_path, pub_path) = (a.out.join("private.pem"), a.out.join("public.pem"));
    if !a.force && (priv_path.exists() || pub_path.exists()) {
        return Err(Error::InvalidArgument(format!(
            "{} already holds keys; pass --force to replace them",
            a.out.display()
        )));
    }
    let key = capture::generate_key(a.bits)?;
    std::fs::create_dir_all(&a.out)?;
    write_private(&priv_path, capture::private_key_pem(&key)?.as_bytes())?;
    std::fs::write(&pub_path, capture::public_key_pem(&key.to_public_key())?)?;
    println!("wrote {} and {}", priv_path.display(), pub_path.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes a private key readable by its owner only (on Unix).
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        f.write_all(bytes)?;
        Ok(())
    }
    #[cfg(not(unix))]
    {
        std::fs::write(path, bytes)?;
        Ok(())
    }
}

/// SHA-256 hex of this executable (the default SDK digest of `bundle create`).
pub fn self_digest() -> Result<String> {
    let exe = std::env::current_exe()?;
    Ok(hex::encode(Sha256::digest(read(&exe)?)))
}

/// Runs `facegate bundle ...`.
pub fn bundle(action: &BundleAction) -> Result<ExitCode> {
    let BundleAction::Create(a) = action;
    let key = capture::parse_public_key(&String::from_utf8_lossy(&read(&a.public_key)?))?;
    let mut meta: CaptureMeta = match &a.meta {
        Some(p) => read_json(p)?,
        None => CaptureMeta::default(),
    };
    let set = |dst: &mut String, v: &Option<String>| {
        if let Some(v) = v {
            *dst = v.clone();
        }
    };
    set(&mut meta.os, &a.os);
    set(&mut meta.manufacturer, &a.manufacturer);
    set(&mut meta.device_model, &a.model);
    set(&mut meta.camera_label, &a.camera_label);
    set(&mut meta.app_id, &a.app_id);
    set(&mut meta.sdk_version, &a.sdk_version);
    set(&mut meta.sdk_digest, &a.sdk_digest);
    set(&mut meta.nonce, &a.nonce);
    if meta.sdk_digest.is_empty() {
        meta.sdk_digest = self_digest()?;
    }
    if let Some(t) = a.capture_time_ms {
        meta.capture_time_ms = t;
    } else if meta.capture_time_ms == 0 {
        meta.capture_time_ms = now_ms();
    }
    let mut image = read(&a.image)?;
    if a.stamp_exif {
        let tags = ExifTags {
            make: Some(meta.manufacturer.clone()).filter(|s| !s.is_empty()),
            model: Some(meta.device_model.clone()).filter(|s| !s.is_empty()),
            software: None,
        };
        image = checks::insert_exif(&image, &tags)?;
    }
    if meta.image_width == 0 || meta.image_height == 0 {
        let (w, h) = checks::inspect_jpeg(&image)?.upright_size();
        (meta.image_width, meta.image_height) = (w, h);
    }
    let external = a
        .external
        .as_deref()
        .map(read_json::<serde_json::Value>)
        .transpose()?;
    let bytes = capture::seal(
        &key,
        &BundlePayload {
            image,
            meta,
            external,
        },
    )?;
    std::fs::write(&a.out, &bytes)?;
    println!("wrote {} ({} bytes)", a.out.display(), bytes.len());
    Ok(ExitCode::SUCCESS)
}
