//! `facegate encrypt` and `facegate decrypt`: the client side of Knomi encrypted packages and
//! a server-side check of them, for tests, demos and integrators (see docs/knomi-packages.md).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use super::package::{self, Mode, OaepHash, PackageOpener, PackageSettings};
use crate::api::iad::capture::parse_public_key;
use crate::{Error, Result};

/// Arguments of `facegate encrypt`.
#[derive(Debug, Args)]
pub struct EncryptArgs {
    /// Server public key (SPKI PEM, as `facegate keys generate` writes public.pem).
    #[arg(long)]
    pub public_key: PathBuf,
    /// The JSON request to seal.
    #[arg(long = "in")]
    pub input: PathBuf,
    /// OAEP parameter set of the wrapped AES key.
    #[arg(long, value_enum, default_value_t = OaepHash::Sha256)]
    pub oaep: OaepHash,
    /// AES-256 mode of the request.
    #[arg(long, value_enum, default_value_t = Mode::Cbc)]
    pub mode: Mode,
    /// Where to write the package JSON [default: standard output].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// Arguments of `facegate decrypt`.
#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// Server private key (PKCS#1 or PKCS#8 PEM).
    #[arg(long)]
    pub private_key: PathBuf,
    /// The package JSON (`{"key", "iv", "p"}`).
    #[arg(long = "in")]
    pub input: PathBuf,
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))
}

/// Runs `facegate encrypt`: prints (or writes) the `{key, iv, p}` package of a JSON request.
pub fn encrypt(a: &EncryptArgs) -> Result<ExitCode> {
    let public =
        parse_public_key(&String::from_utf8_lossy(&read(&a.public_key)?)).map_err(|e| {
            let what = match e {
                Error::InvalidArgument(m) => m,
                other => other.to_string(),
            };
            Error::InvalidArgument(format!("{}: {what}", a.public_key.display()))
        })?;
    let plain = read(&a.input)?;
    serde_json::from_slice::<serde::de::IgnoredAny>(&plain).map_err(|e| {
        Error::InvalidArgument(format!("{}: not a JSON request: {e}", a.input.display()))
    })?;
    let envelope = package::seal(&public, &plain, a.oaep, a.mode)?;
    let text = serde_json::to_string(&envelope)
        .map_err(|e| Error::Internal(format!("package JSON: {e}")))?;
    match &a.out {
        Some(out) => std::fs::write(out, format!("{text}\n"))
            .map_err(|e| Error::InvalidArgument(format!("{}: {e}", out.display())))?,
        None => println!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `facegate decrypt`: opens a package with the default settings and prints the request.
pub fn decrypt(a: &DecryptArgs) -> Result<ExitCode> {
    let opener = PackageOpener::from_pem_file(&a.private_key, PackageSettings::default())?;
    let body = read(&a.input)?;
    let plain = opener
        .open_blocking(&body)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", a.input.display())))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&plain)?;
    if !plain.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    Ok(ExitCode::SUCCESS)
}
