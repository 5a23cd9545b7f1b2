//! Capture liveness (ID R&D IAD Server's `/check_capture_liveness`, `/extract_image`,
//! `/extract_data`) on FGCB bundles: an encrypted, authenticated envelope holding the JPEG and
//! what the capture SDK reports about the device and the capture (`docs/capture-bundle.md`).
//!
//! [`CaptureVerifier`] opens a bundle with the server's RSA private key and runs the checks of
//! [`checks`]; each rejection reason of the IAD reference comes from its own check.
//! [`check_capture`] is the whole of `/check_capture_liveness`: the engine-free checks on the
//! blocking pool, then (face liveness on) the payload's image through the micro-batcher like
//! every other route, then [`CaptureVerifier::finish`].

pub mod bundle;
pub mod checks;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::rand_core::{OsRng, RngCore};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};

use bytes::Bytes;

use crate::batcher::Batcher;
use crate::bi::{normalize_os, now_ms};
use crate::engine::decision::fuse;
use crate::engine::{Analysis, AnalyzeOptions, Calibration, Pipeline, Rejection};
use crate::replay::{Inserted, Kind, MemoryLedger, ReplayLedger};
use crate::Error;

/// What can go wrong with a capture: a bundle that cannot be opened (IAD's three bundle
/// errors), or an engine error.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A capture bundle could not be opened (IAD's "Failed to parse file", "Failed to read a
    /// meta data", "Failed to decrypt message"; HTTP 400 with error_code UNKNOWN).
    #[error("{}: {detail}", failure.message())]
    Bundle {
        /// Which of the IAD reference's three bundle errors this is.
        failure: BundleFailure,
        /// What exactly was wrong (for logs; clients get `failure.message()`).
        detail: String,
    },
    /// Anything else (bad parameters, overload, the engine).
    #[error(transparent)]
    Engine(#[from] Error),
}

/// Result over [`CaptureError`].
pub type Result<T> = std::result::Result<T, CaptureError>;

pub use bundle::{seal, BundleFailure, BundlePayload, CaptureMeta, Environment};
pub use checks::{ExifTags, Finding, JpegFacts};

use bundle::bundle_err;

/// The IAD reference's capture rejection reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CaptureRejection {
    /// The environment the application runs in is not trusted to be safe.
    UntrustedEnvironment,
    /// Activity associated with an attack (replayed or unknown nonce, implausible time).
    SuspiciousActivity,
    /// The device is not the one it reports.
    UntrustedDevice,
    /// The capture library has been modified.
    SdkIntegrityViolation,
    /// The payload is corrupted or has been modified.
    UntrustedCorruptedPayload,
    /// Injection was detected in the image.
    UntrustedContent,
    /// Injection was detected with low confidence.
    UntrustedContentLowConfidence,
}

impl CaptureRejection {
    /// The reason as the IAD reference spells it.
    pub fn code(self) -> &'static str {
        match self {
            CaptureRejection::UntrustedEnvironment => "UNTRUSTED_ENVIRONMENT",
            CaptureRejection::SuspiciousActivity => "SUSPICIOUS_ACTIVITY",
            CaptureRejection::UntrustedDevice => "UNTRUSTED_DEVICE",
            CaptureRejection::SdkIntegrityViolation => "SDK_INTEGRITY_VIOLATION",
            CaptureRejection::UntrustedCorruptedPayload => "UNTRUSTED_CORRUPTED_PAYLOAD",
            CaptureRejection::UntrustedContent => "UNTRUSTED_CONTENT",
            CaptureRejection::UntrustedContentLowConfidence => "UNTRUSTED_CONTENT_LOW_CONFIDENCE",
        }
    }

    /// Highest capture probability a bundle with this reason can get (all below 0.5, so every
    /// rejected bundle reads as not live). The capture probability is the smallest cap among
    /// the reasons found, 1.0 when none.
    pub fn probability_cap(self) -> f32 {
        match self {
            CaptureRejection::UntrustedCorruptedPayload => 0.0,
            CaptureRejection::SdkIntegrityViolation => 0.05,
            CaptureRejection::UntrustedEnvironment => 0.1,
            CaptureRejection::SuspiciousActivity => 0.1,
            CaptureRejection::UntrustedContent => 0.1,
            CaptureRejection::UntrustedDevice => 0.2,
            CaptureRejection::UntrustedContentLowConfidence => 0.4,
        }
    }
}

/// Capture-check settings. Every threshold is documented in `docs/capture-bundle.md`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// RSA private key (PKCS#8 or PKCS#1 PEM) the bundles are sealed for.
    pub private_key: Option<PathBuf>,
    /// SHA-256 digests (hex) of the SDK builds allowed to capture. Empty trusts none.
    pub sdk_digests: Vec<String>,
    /// Reject bundles without a server-issued nonce.
    pub require_nonce: bool,
    /// Lifetime of an issued nonce, seconds.
    pub nonce_ttl_s: u64,
    /// Most outstanding nonces remembered (the oldest are forgotten beyond it).
    pub max_nonces: usize,
    /// Oldest accepted capture time, seconds before now.
    pub max_capture_age_s: u64,
    /// Tolerated clock difference between client and server, seconds.
    pub clock_skew_s: u64,
    /// Shortest accepted image side, pixels (IMAGE_TOO_SMALL below: 480p).
    pub min_image_side: u32,
    /// Largest accepted bundle, bytes.
    pub max_bundle_bytes: usize,
    /// A claimed phone capture without an EXIF block is UNTRUSTED_CONTENT_LOW_CONFIDENCE.
    pub require_exif_on_mobile: bool,
    /// Passive-liveness spoof probability at or above which the content is UNTRUSTED_CONTENT.
    pub content_reject: f32,
    /// Spoof probability at or above which the content is UNTRUSTED_CONTENT_LOW_CONFIDENCE.
    pub content_low_confidence: f32,
    /// Camera labels of virtual cameras (matched ignoring case and punctuation).
    pub virtual_camera_labels: Vec<String>,
    /// Device names of emulators (matched against "manufacturer model").
    pub emulator_models: Vec<String>,
    /// Editor / re-encoder names in EXIF Software or JPEG comments.
    pub reencoder_signatures: Vec<String>,
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self {
            private_key: None,
            sdk_digests: Vec::new(),
            require_nonce: true,
            nonce_ttl_s: 300,
            max_nonces: 100_000,
            max_capture_age_s: 300,
            clock_skew_s: 30,
            min_image_side: 480,
            max_bundle_bytes: 20 << 20,
            require_exif_on_mobile: true,
            content_reject: 0.8,
            content_low_confidence: 0.5,
            virtual_camera_labels: strings(&[
                "OBS Virtual Camera",
                "OBS-Camera",
                "ManyCam",
                "v4l2loopback",
                "Dummy video device",
                "Snap Camera",
                "XSplit VCam",
                "CamTwist",
                "e2eSoft VCam",
                "SplitCam",
                "NVIDIA Broadcast",
                "Virtual Camera",
                "DroidCam",
                "iVCam",
                "Camo",
            ]),
            emulator_models: strings(&[
                "sdk_gphone",
                "Android SDK built for",
                "generic_x86",
                "generic_arm64",
                "Genymotion",
                "google_sdk",
                "Emulator",
                "BlueStacks",
                "Nox",
                "LDPlayer",
                "MEmu",
                "iPhone Simulator",
                "x86_64 Simulator",
            ]),
            reencoder_signatures: strings(&[
                "Adobe Photoshop",
                "GIMP",
                "Shotwell",
                "ImageMagick",
                "GraphicsMagick",
                "Lavc",
                "Lavf",
                "FFmpeg",
                "OBS",
                "paint.net",
                "gd-jpeg",
                "Created with",
                "Pixelmator",
                "Affinity Photo",
                "Snapseed",
                "Lightroom",
            ]),
        }
    }
}

impl CaptureConfig {
    /// Rejects settings that cannot work.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: &str| Err(Error::InvalidArgument(m.to_string()));
        if self.nonce_ttl_s == 0 || self.max_nonces == 0 || self.max_capture_age_s == 0 {
            return bad(
                "iad.capture.nonce_ttl_s, max_nonces and max_capture_age_s must be positive",
            );
        }
        if !(0.0..=1.0).contains(&self.content_low_confidence)
            || !(self.content_low_confidence..=1.0).contains(&self.content_reject)
        {
            return bad("capture: need 0 <= content_low_confidence <= content_reject <= 1");
        }
        for d in &self.sdk_digests {
            if d.len() != 64 || !d.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(Error::InvalidArgument(format!(
                    "iad.capture.sdk_digests: {d:?} is not a SHA-256 hex digest"
                )));
            }
        }
        Ok(())
    }
}

/// Command-line/environment overrides of [`CaptureConfig`] (flatten into a server's arguments).
#[derive(Debug, Clone, Default, Args)]
pub struct CaptureArgs {
    /// RSA private key (PEM) capture bundles are sealed for.
    #[arg(long = "capture-private-key", env = "FACEGATE_CAPTURE_PRIVATE_KEY")]
    pub capture_private_key: Option<PathBuf>,
    /// Allowed SDK digests (SHA-256 hex), comma-separated.
    #[arg(
        long = "capture-sdk-digests",
        env = "FACEGATE_CAPTURE_SDK_DIGESTS",
        value_delimiter = ','
    )]
    pub capture_sdk_digests: Option<Vec<String>>,
    /// Nonce lifetime, seconds [default: 300].
    #[arg(long = "capture-nonce-ttl-s", env = "FACEGATE_CAPTURE_NONCE_TTL_S")]
    pub capture_nonce_ttl_s: Option<u64>,
    /// Oldest accepted capture, seconds [default: 300].
    #[arg(long = "capture-max-age-s", env = "FACEGATE_CAPTURE_MAX_AGE_S")]
    pub capture_max_age_s: Option<u64>,
    /// Tolerated client clock skew, seconds [default: 30].
    #[arg(long = "capture-clock-skew-s", env = "FACEGATE_CAPTURE_CLOCK_SKEW_S")]
    pub capture_clock_skew_s: Option<u64>,
}

impl CaptureArgs {
    /// Applies the flags/environment on top of `cfg` (from defaults or the TOML `[iad.capture]` table).
    pub fn apply(&self, mut cfg: CaptureConfig) -> crate::Result<CaptureConfig> {
        if let Some(v) = &self.capture_private_key {
            cfg.private_key = Some(v.clone());
        }
        if let Some(v) = &self.capture_sdk_digests {
            cfg.sdk_digests = v
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
        }
        if let Some(v) = self.capture_nonce_ttl_s {
            cfg.nonce_ttl_s = v;
        }
        if let Some(v) = self.capture_max_age_s {
            cfg.max_capture_age_s = v;
        }
        if let Some(v) = self.capture_clock_skew_s {
            cfg.clock_skew_s = v;
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Generates an RSA key pair of `bits` (2048..=8192).
pub fn generate_key(bits: usize) -> crate::Result<RsaPrivateKey> {
    if !(2048..=8192).contains(&bits) {
        return Err(Error::InvalidArgument(format!(
            "RSA key size {bits}: use 2048 to 8192 bits"
        )));
    }
    RsaPrivateKey::new(&mut OsRng, bits)
        .map_err(|e| Error::InvalidArgument(format!("RSA key generation: {e}")))
}

/// PKCS#8 PEM of a private key.
pub fn private_key_pem(key: &RsaPrivateKey) -> crate::Result<String> {
    key.to_pkcs8_pem(LineEnding::LF)
        .map(|s| s.to_string())
        .map_err(|e| Error::InvalidArgument(format!("private key PEM: {e}")))
}

/// SPKI PEM of a public key.
pub fn public_key_pem(key: &RsaPublicKey) -> crate::Result<String> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| Error::InvalidArgument(format!("public key PEM: {e}")))
}

/// Reads a private key from PEM text (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
pub fn parse_private_key(pem: &str) -> crate::Result<RsaPrivateKey> {
    RsaPrivateKey::from_pkcs8_pem(pem)
        .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
        .map_err(|e| Error::InvalidArgument(format!("RSA private key: {e}")))
}

/// Reads a public key from SPKI PEM text (`PUBLIC KEY`).
pub fn parse_public_key(pem: &str) -> crate::Result<RsaPublicKey> {
    RsaPublicKey::from_public_key_pem(pem)
        .map_err(|e| Error::InvalidArgument(format!("RSA public key: {e}")))
}

fn read_text(path: &Path) -> crate::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", path.display())))
}

/// A nonce handed to a capture client.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IssuedNonce {
    /// The nonce (32 hex digits) to put in `meta.nonce`.
    pub nonce: String,
    /// When it expires, Unix milliseconds.
    pub expires_at_ms: i64,
}

/// What the ledger knew about a presented nonce ([`crate::replay::Status`]).
pub use crate::replay::Status as NonceStatus;

/// Issued nonces in a [`ReplayLedger`] (this process's memory, or the fleet's database): with
/// `max` unexpired nonces outstanding a new one is refused (503, retry later) rather than an
/// outstanding one forgotten.
struct NonceRegistry {
    /// Where the nonces live.
    ledger: Arc<dyn ReplayLedger>,
    /// Lifetime, ms.
    ttl_ms: i64,
    /// Most unexpired nonces.
    max: usize,
}

impl NonceRegistry {
    fn issue(&self, now: i64) -> crate::Result<IssuedNonce> {
        let mut raw = [0u8; 16];
        OsRng.fill_bytes(&mut raw);
        let nonce = hex::encode(raw);
        let expires_ms = now.saturating_add(self.ttl_ms);
        match self.ledger.insert(
            Kind::IadNonce,
            nonce.as_bytes(),
            now,
            expires_ms,
            false,
            self.max,
        )? {
            Inserted::New => Ok(IssuedNonce {
                nonce,
                expires_at_ms: expires_ms,
            }),
            Inserted::Full { max } => Err(Error::Unavailable(format!(
                "the capture nonce registry is full: {max} unexpired nonces \
                 (iad.capture.max_nonces); retry when older ones expire"
            ))),
            Inserted::Present => Err(Error::Internal(
                "a fresh 128-bit nonce collided with a held one".into(),
            )),
        }
    }

    fn consume(&self, nonce: &str, now: i64) -> crate::Result<NonceStatus> {
        self.ledger.consume(Kind::IadNonce, nonce.as_bytes(), now)
    }
}

/// `capture_liveness` of the IAD response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureLiveness {
    /// 1.0 when every check passes, else the smallest [`CaptureRejection::probability_cap`].
    pub probability: f32,
    /// `2 * probability - 1` (1.0 when all checks pass, -1.0 for a corrupted payload).
    pub score: f32,
    /// Reasons found, each once, in the reference's table order.
    pub rejection: Vec<CaptureRejection>,
}

/// `face_liveness` of the IAD response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaceLiveness {
    /// Calibrated passive-liveness probability (REGULAR calibration).
    pub probability: f32,
}

/// An image validation error of the IAD reference (HTTP 400 with this code and message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FaceError {
    /// Error code, e.g. `FACE_NOT_FOUND`.
    pub error_code: &'static str,
    /// Message exactly as the IAD reference's table writes it.
    pub message: &'static str,
}

impl FaceError {
    /// IMAGE_TOO_SMALL: the payload image is below 480p.
    pub const IMAGE_TOO_SMALL: FaceError = FaceError {
        error_code: "IMAGE_TOO_SMALL",
        message: "Image too small to be processed",
    };

    /// The IAD error for an engine quality rejection. Codes the IAD table lacks keep the
    /// engine's IDLive code and message ("error codes match ... IDLiveFace").
    pub fn from_rejection(r: Rejection) -> FaceError {
        let message = match r {
            Rejection::FaceNotFound => "Face not found",
            Rejection::FaceCropped => "Face is cropped",
            Rejection::TooManyFaces => "Too many faces detected",
            Rejection::FaceAngleTooLarge => "Facial out-of-plane rotation angle is extremely large",
            Rejection::FaceTooSmall => "Absolute face size is too small",
            Rejection::FaceCloseToBorder => "Face is too close to one or more borders",
            other => other.message(),
        };
        FaceError {
            error_code: r.code(),
            message,
        }
    }
}

/// Everything the verifier found out about one bundle.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureReport {
    /// The capture verdict.
    pub capture_liveness: CaptureLiveness,
    /// Passive liveness of the face, when an engine ran and found a usable face.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub face_liveness: Option<FaceLiveness>,
    /// Image validation error: the IAD answer is then HTTP 400 with it instead of a verdict.
    #[serde(skip)]
    pub face_error: Option<FaceError>,
    /// Every failed check with what was seen (logs/BI only: never send to capture clients).
    #[serde(skip)]
    pub findings: Vec<Finding>,
    /// Capturing OS in BI vocabulary (`IOS`, `ANDROID`, `DESKTOP`, `UNKNOWN`).
    #[serde(skip)]
    pub os: &'static str,
    /// Engine quality score of the face, when an engine ran.
    #[serde(skip)]
    pub quality: Option<f32>,
    /// JPEG measurements, when the payload opened.
    #[serde(skip)]
    pub jpeg: Option<JpegFacts>,
}

impl CaptureReport {
    /// The IAD success body: `{"capture_liveness": {...}}` plus `face_liveness` when present.
    pub fn response(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The code to record in BI: the face error, else the first capture rejection.
    pub fn bi_error_code(&self) -> Option<&'static str> {
        self.face_error
            .map(|f| f.error_code)
            .or_else(|| self.capture_liveness.rejection.first().map(|r| r.code()))
    }

    fn from_findings(findings: Vec<Finding>, os: &'static str) -> CaptureReport {
        let mut rejection: Vec<CaptureRejection> = findings.iter().map(|f| f.reason).collect();
        rejection.sort();
        rejection.dedup();
        let probability = rejection
            .iter()
            .map(|r| r.probability_cap())
            .fold(1.0f32, f32::min);
        CaptureReport {
            capture_liveness: CaptureLiveness {
                probability,
                score: 2.0 * probability - 1.0,
                rejection,
            },
            face_liveness: None,
            face_error: None,
            findings,
            os,
            quality: None,
            jpeg: None,
        }
    }
}

/// Analysis options for a capture's face: REGULAR calibration, quality gate on, no template.
pub fn face_options() -> AnalyzeOptions {
    AnalyzeOptions {
        calibration: Calibration::Regular,
        liveness: true,
        template: false,
        landmarks: false,
        ignore_quality: false,
    }
}

/// Outcome of [`CaptureVerifier::check_bundle_at`].
pub enum Checked {
    /// The report is final: the payload failed authentication or its image is too small.
    Final(CaptureReport),
    /// The engine-free checks ran; the face analysis may follow.
    Pending(PendingCapture),
}

/// A capture whose engine-free checks are done, waiting for its face analysis.
pub struct PendingCapture {
    /// Findings of the checks so far.
    findings: Vec<Finding>,
    /// Normalised OS of the capture metadata.
    os: &'static str,
    /// What the JPEG itself says.
    facts: JpegFacts,
    /// The payload's JPEG, for the face analysis.
    pub image: Vec<u8>,
}

/// The server side of capture liveness: the private key, the SDK allow-list and the nonces.
pub struct CaptureVerifier {
    /// Thresholds and lists.
    cfg: CaptureConfig,
    /// The private key bundles are sealed for.
    key: RsaPrivateKey,
    /// Its key id.
    key_id: [u8; 8],
    /// Issued and used nonces.
    nonces: NonceRegistry,
}

impl CaptureVerifier {
    /// A verifier for `key` with the checks of `cfg` (`cfg.private_key` is ignored).
    pub fn new(cfg: CaptureConfig, key: RsaPrivateKey) -> crate::Result<CaptureVerifier> {
        cfg.validate()?;
        if cfg.sdk_digests.is_empty() {
            tracing::warn!(
                "iad.capture.sdk_digests is empty: every bundle will fail SDK integrity"
            );
        }
        let key_id = bundle::key_id(&key.to_public_key())?;
        let nonces = NonceRegistry {
            ledger: Arc::new(MemoryLedger::new()),
            ttl_ms: i64::try_from(cfg.nonce_ttl_s.saturating_mul(1000)).unwrap_or(i64::MAX / 2),
            max: cfg.max_nonces,
        };
        Ok(CaptureVerifier {
            cfg,
            key,
            key_id,
            nonces,
        })
    }

    /// A verifier whose private key is read from `cfg.private_key`.
    pub fn from_config(cfg: CaptureConfig) -> crate::Result<CaptureVerifier> {
        let path = cfg.private_key.clone().ok_or_else(|| {
            Error::InvalidArgument(
                "iad.capture.private_key (--capture-private-key) is not set".into(),
            )
        })?;
        let key = parse_private_key(&read_text(&path)?)?;
        CaptureVerifier::new(cfg, key)
    }

    /// The configuration in force.
    pub fn config(&self) -> &CaptureConfig {
        &self.cfg
    }

    /// The public key clients seal bundles for (SPKI PEM), for distribution.
    pub fn public_key_pem(&self) -> crate::Result<String> {
        public_key_pem(&self.key.to_public_key())
    }

    /// Issues a single-use nonce valid for `nonce_ttl_s`.
    pub fn issue_nonce(&self) -> crate::Result<IssuedNonce> {
        self.issue_nonce_at(now_ms())
    }

    /// [`CaptureVerifier::issue_nonce`] at a given time (Unix ms).
    pub fn issue_nonce_at(&self, now_ms: i64) -> crate::Result<IssuedNonce> {
        self.nonces.issue(now_ms)
    }

    /// The verifier with its nonces in `ledger` (the fleet's shared one) instead of memory.
    pub fn with_ledger(mut self, ledger: Arc<dyn ReplayLedger>) -> CaptureVerifier {
        self.nonces.ledger = ledger;
        self
    }

    /// Where the nonces live.
    pub fn ledger(&self) -> &Arc<dyn ReplayLedger> {
        &self.nonces.ledger
    }

    /// Opens a bundle for `/extract_image` and `/extract_data`: a payload that does not
    /// authenticate is a "Failed to decrypt message" error there.
    pub fn open(&self, bytes: &[u8]) -> Result<BundlePayload> {
        match self.open_inner(bytes)? {
            Ok(p) => Ok(p),
            Err(t) => Err(bundle_err(BundleFailure::Decrypt, t.0)),
        }
    }

    fn open_inner(
        &self,
        bytes: &[u8],
    ) -> Result<std::result::Result<BundlePayload, bundle::Tampered>> {
        if bytes.len() > self.cfg.max_bundle_bytes {
            return Err(bundle_err(
                BundleFailure::Parse,
                format!(
                    "bundle of {} bytes exceeds {} bytes",
                    bytes.len(),
                    self.cfg.max_bundle_bytes
                ),
            ));
        }
        let env = bundle::parse_envelope(bytes)?;
        match bundle::decrypt(&env, &self.key, &self.key_id)? {
            Ok(plain) => bundle::parse_payload(&plain).map(Ok),
            Err(t) => Ok(Err(t)),
        }
    }

    /// `/extract_image`: the JPEG in the bundle.
    pub fn extract_image(&self, bytes: &[u8]) -> Result<Vec<u8>> {
        Ok(self.open(bytes)?.image)
    }

    /// `/extract_data?types=photo,external`: `photo` as base64 and `external` as sent (null
    /// when absent). `types` is the raw comma-separated list; unknown types are invalid.
    pub fn extract_data(
        &self,
        bytes: &[u8],
        types: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>> {
        let wanted = parse_types(types)?;
        let p = self.open(bytes)?;
        let mut out = serde_json::Map::new();
        for t in wanted {
            let v = match t {
                "photo" => serde_json::Value::String(bundle::to_base64(&p.image)),
                _ => p.external.clone().unwrap_or(serde_json::Value::Null),
            };
            out.insert(t.to_string(), v);
        }
        Ok(out)
    }

    /// The engine-free part of `/check_capture_liveness` at a given time (Unix ms): opens the
    /// bundle and runs every check that needs no network. The face analysis of
    /// [`PendingCapture::image`] (with [`face_options`]) may follow, then
    /// [`CaptureVerifier::finish`]; the HTTP layer runs it through the micro-batcher.
    pub fn check_bundle_at(&self, bytes: &[u8], now_ms: i64) -> Result<Checked> {
        let payload = match self.open_inner(bytes)? {
            Ok(p) => p,
            Err(t) => {
                let f = Finding {
                    reason: CaptureRejection::UntrustedCorruptedPayload,
                    check: "authentication",
                    detail: t.0,
                };
                return Ok(Checked::Final(CaptureReport::from_findings(
                    vec![f],
                    "UNKNOWN",
                )));
            }
        };
        let meta = &payload.meta;
        let os = normalize_os(&meta.os);
        let facts = checks::inspect_jpeg(&payload.image)
            .map_err(|e| bundle_err(BundleFailure::Metadata, format!("payload image: {e}")))?;
        let mut findings = Vec::new();
        findings.extend(checks::check_sdk(meta, &self.cfg));
        findings.extend(checks::check_environment(meta, &self.cfg));
        findings.extend(self.check_activity(meta, now_ms)?);
        findings.extend(checks::check_device(meta, &facts, os));
        findings.extend(checks::check_provenance(&facts, os, &self.cfg));
        let (w, h) = facts.upright_size();
        if w.min(h) < self.cfg.min_image_side {
            let mut report = CaptureReport::from_findings(findings, os);
            report.face_error = Some(FaceError::IMAGE_TOO_SMALL);
            report.jpeg = Some(facts);
            return Ok(Checked::Final(report));
        }
        Ok(Checked::Pending(PendingCapture {
            findings,
            os,
            facts,
            image: payload.image,
        }))
    }

    /// Completes a capture check with the engine's analysis of its image (`None`: face
    /// liveness off): face errors, `face_liveness`, and the content check on the networks'
    /// attack classes.
    pub fn finish(&self, p: PendingCapture, analysis: Option<&Analysis>) -> CaptureReport {
        let PendingCapture {
            mut findings,
            os,
            facts,
            ..
        } = p;
        let mut face_error = None;
        let mut face_liveness = None;
        let mut quality = None;
        if let Some(a) = analysis {
            quality = a.quality.as_ref().map(|q| q.score);
            if let Some(r) = &a.rejection {
                face_error = Some(FaceError::from_rejection(r.code));
            } else if let Some(l) = &a.liveness {
                if let Some(f) = fuse(&l.networks, Pipeline::Dual) {
                    findings.extend(checks::check_engine_content(
                        f.spoof(),
                        f.replay,
                        f.print,
                        &self.cfg,
                    ));
                }
                face_liveness = Some(FaceLiveness {
                    probability: l.probability,
                });
            }
        }
        let mut report = CaptureReport::from_findings(findings, os);
        report.face_liveness = face_liveness;
        report.face_error = face_error;
        report.quality = quality;
        report.jpeg = Some(facts);
        report
    }

    /// SUSPICIOUS_ACTIVITY: the nonce must be issued here, unexpired and unused, and the
    /// capture time must lie within `[now - max_age, now + skew]` and not before the nonce.
    fn check_activity(&self, meta: &CaptureMeta, now: i64) -> Result<Vec<Finding>> {
        let mut out = Vec::new();
        let sus = |check, detail: String| Finding {
            reason: CaptureRejection::SuspiciousActivity,
            check,
            detail,
        };
        let skew =
            i64::try_from(self.cfg.clock_skew_s.saturating_mul(1000)).unwrap_or(i64::MAX / 4);
        let max_age =
            i64::try_from(self.cfg.max_capture_age_s.saturating_mul(1000)).unwrap_or(i64::MAX / 4);
        let t = meta.capture_time_ms;
        if t > now.saturating_add(skew) {
            out.push(sus(
                "capture_time_future",
                format!("captured {} ms in the future", t - now),
            ));
        } else if t < now.saturating_sub(max_age) {
            out.push(sus(
                "capture_time_stale",
                format!("captured {} ms ago", now.saturating_sub(t)),
            ));
        }
        if meta.nonce.is_empty() {
            if self.cfg.require_nonce {
                out.push(sus("nonce_missing", "no server nonce in the bundle".into()));
            }
            return Ok(out);
        }
        match self.nonces.consume(&meta.nonce, now)? {
            NonceStatus::Fresh { issued_ms } => {
                if t < issued_ms.saturating_sub(skew) {
                    out.push(sus(
                        "capture_before_nonce",
                        format!("captured {} ms before its nonce was issued", issued_ms - t),
                    ));
                }
            }
            NonceStatus::Replayed => out.push(sus("nonce_replayed", "nonce already used".into())),
            NonceStatus::Expired => out.push(sus("nonce_expired", "nonce expired".into())),
            NonceStatus::Unknown => {
                out.push(sus("nonce_unknown", "nonce was not issued here".into()))
            }
        }
        Ok(out)
    }
}

/// How a finished `/check_capture_liveness` went: the report, and the queue and inference
/// times of its face analysis when one ran.
pub struct CaptureOutcome {
    /// The capture verdict (or its face error).
    pub report: CaptureReport,
    /// Queue and inference ms of the face analysis.
    pub times: Option<(f64, f64)>,
}

/// The whole of `/check_capture_liveness` at `now_ms` (Unix ms): the engine-free checks on the
/// blocking pool, then, with a batcher (face liveness on), the payload's image through it as
/// route `origin`, then [`CaptureVerifier::finish`]. A payload image the engine cannot use is
/// the bundle error "Failed to read a meta data"; overload and loading pass through.
pub async fn check_capture(
    verifier: &std::sync::Arc<CaptureVerifier>,
    batcher: Option<&Batcher>,
    bundle: Bytes,
    now_ms: i64,
    origin: &'static str,
) -> Result<CaptureOutcome> {
    let v = verifier.clone();
    let checked = tokio::task::spawn_blocking(move || v.check_bundle_at(&bundle, now_ms))
        .await
        .map_err(|e| Error::Unavailable(format!("capture check task: {e}")))??;
    let pending = match checked {
        Checked::Final(report) => {
            return Ok(CaptureOutcome {
                report,
                times: None,
            })
        }
        Checked::Pending(p) => p,
    };
    let Some(batcher) = batcher else {
        return Ok(CaptureOutcome {
            report: verifier.finish(pending, None),
            times: None,
        });
    };
    let image = Bytes::from(pending.image.clone());
    match batcher.submit(image, face_options(), origin).await {
        Ok(p) => Ok(CaptureOutcome {
            report: verifier.finish(pending, Some(&p.analysis)),
            times: Some((p.queue_ms, p.inference_ms)),
        }),
        Err(e) if e.is_client_error() => Err(bundle_err(
            BundleFailure::Metadata,
            format!("payload image: {e}"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Parses `/extract_data`'s `types` list (`photo`, `external`; comma-separated, each once).
pub fn parse_types(types: &str) -> crate::Result<Vec<&'static str>> {
    let mut out = Vec::new();
    for t in types.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let t = match t.to_ascii_lowercase().as_str() {
            "photo" => "photo",
            "external" => "external",
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "unknown extract_data type {t:?}: use photo, external"
                )))
            }
        };
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if out.is_empty() {
        return Err(Error::InvalidArgument(
            "extract_data needs types=photo,external (one or both)".into(),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_single_use_expire_and_stay_bounded() {
        let r = NonceRegistry {
            ledger: Arc::new(MemoryLedger::new()),
            ttl_ms: 1000,
            max: 3,
        };
        let a = r.issue(0).unwrap();
        assert_eq!(a.expires_at_ms, 1000);
        let consume = |n: &str, t| r.consume(n, t).unwrap();
        assert_eq!(consume(&a.nonce, 10), NonceStatus::Fresh { issued_ms: 0 });
        assert_eq!(consume(&a.nonce, 11), NonceStatus::Replayed);
        let b = r.issue(100).unwrap();
        assert_eq!(consume(&b.nonce, 1100), NonceStatus::Expired);
        assert_eq!(consume("nope", 0), NonceStatus::Unknown);
        // Three outstanding, none expired: a fourth is refused, and every outstanding nonce
        // still works (none is forgotten to make room).
        let c = r.issue(200).unwrap();
        let e = r.issue(300).unwrap_err();
        assert_eq!(e.kind(), "unavailable", "{e}");
        assert!(e.to_string().contains("max_nonces"), "{e}");
        assert_eq!(
            consume(&c.nonce, 400),
            NonceStatus::Fresh { issued_ms: 200 }
        );
        // Once they have expired they are swept and new nonces are issued again.
        r.issue(5000).unwrap();
        r.issue(5001).unwrap();
        r.issue(5002).unwrap();
    }

    #[test]
    fn probability_is_the_smallest_cap() {
        let f = |reason| Finding {
            reason,
            check: "t",
            detail: String::new(),
        };
        let ok = CaptureReport::from_findings(vec![], "IOS");
        assert_eq!(
            (ok.capture_liveness.probability, ok.capture_liveness.score),
            (1.0, 1.0)
        );
        let r = CaptureReport::from_findings(
            vec![
                f(CaptureRejection::UntrustedContentLowConfidence),
                f(CaptureRejection::UntrustedDevice),
                f(CaptureRejection::UntrustedDevice),
            ],
            "IOS",
        );
        assert_eq!(r.capture_liveness.probability, 0.2);
        assert_eq!(
            r.capture_liveness.rejection,
            vec![
                CaptureRejection::UntrustedDevice,
                CaptureRejection::UntrustedContentLowConfidence
            ]
        );
        assert_eq!(r.bi_error_code(), Some("UNTRUSTED_DEVICE"));
        let json = r.response().to_string();
        assert!(
            json.contains(r#""rejection":["UNTRUSTED_DEVICE","UNTRUSTED_CONTENT_LOW_CONFIDENCE"]"#),
            "{json}"
        );
        assert!(!json.contains("face_liveness"));
        for c in [
            CaptureRejection::UntrustedEnvironment,
            CaptureRejection::SuspiciousActivity,
            CaptureRejection::UntrustedDevice,
            CaptureRejection::SdkIntegrityViolation,
            CaptureRejection::UntrustedCorruptedPayload,
            CaptureRejection::UntrustedContent,
            CaptureRejection::UntrustedContentLowConfidence,
        ] {
            assert!(c.probability_cap() < 0.5);
            assert_eq!(
                serde_json::to_value(c).unwrap(),
                serde_json::Value::from(c.code())
            );
        }
    }

    #[test]
    fn face_errors_use_the_iad_messages() {
        let e = FaceError::from_rejection(Rejection::FaceNotFound);
        assert_eq!(
            (e.error_code, e.message),
            ("FACE_NOT_FOUND", "Face not found")
        );
        let e = FaceError::from_rejection(Rejection::FaceAngleTooLarge);
        assert_eq!(
            e.message,
            "Facial out-of-plane rotation angle is extremely large"
        );
        assert_eq!(
            FaceError::IMAGE_TOO_SMALL.message,
            "Image too small to be processed"
        );
    }

    #[test]
    fn extract_types_are_validated() {
        assert_eq!(
            parse_types("external, photo,photo").unwrap(),
            vec!["external", "photo"]
        );
        assert!(parse_types("").is_err());
        assert!(parse_types("photo,selfie").is_err());
    }
}
