//! The FGCB capture bundle: an open replacement for ID R&D's proprietary client bundle.
//! The byte layout is specified in `docs/capture-bundle.md`; this file is its reference
//! implementation (sealing on the client, opening on the server).
//!
//! ```text
//! offset   size  field
//! 0        4     magic "FGCB"
//! 4        1     version (1)
//! 5        1     flags (reserved, 0; authenticated)
//! 6        8     key id: first 8 bytes of SHA-256 over the server public key's SPKI DER
//! 14       2     L: length of the wrapped key, big-endian
//! 16       L     RSA-OAEP (SHA-256, MGF1-SHA-256, no label) of the 32-byte AES-256 key
//! 16+L     12    AES-GCM nonce
//! 28+L     ..    AES-256-GCM ciphertext of the JSON payload, then its 16-byte tag
//! ```
//! The AAD of AES-GCM is the whole header, bytes `0..28+L`, so changing any header byte after
//! the key id fails authentication.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use rsa::pkcs8::EncodePublicKey;
use rsa::rand_core::{OsRng, RngCore};
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{CaptureError, Result};
use crate::Error;

/// The four magic bytes that open every bundle.
pub const MAGIC: &[u8; 4] = b"FGCB";
/// The format version this code writes and reads.
pub const VERSION: u8 = 1;
/// Bytes of the fixed header before the wrapped key.
const FIXED: usize = 16;
/// AES-GCM nonce length.
const NONCE_LEN: usize = 12;
/// AES-GCM tag length.
const TAG_LEN: usize = 16;

/// The IAD reference's three bundle errors (all HTTP 400, error_code UNKNOWN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleFailure {
    /// Not an FGCB envelope, or structurally broken (bad magic, version, lengths, truncated).
    Parse,
    /// Authenticated plaintext that is not the documented JSON payload (client bug).
    Metadata,
    /// The bundle was sealed for another key pair (key id differs), or for
    /// `/extract_image` and `/extract_data`, it does not authenticate.
    Decrypt,
}

impl BundleFailure {
    /// The message exactly as the IAD reference writes it.
    pub fn message(self) -> &'static str {
        match self {
            BundleFailure::Parse => "Failed to parse file",
            BundleFailure::Metadata => "Failed to read a meta data",
            BundleFailure::Decrypt => "Failed to decrypt message",
        }
    }
}

/// Shorthand for a [`CaptureError::Bundle`].
pub(crate) fn bundle_err(failure: BundleFailure, detail: impl Into<String>) -> CaptureError {
    CaptureError::Bundle {
        failure,
        detail: detail.into(),
    }
}

/// Environment markers the capture SDK reports (all default to `false`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Environment {
    /// The SDK detected an emulator or simulator.
    pub is_emulator: bool,
    /// The device is rooted or jailbroken.
    pub is_rooted: bool,
    /// A debugger is attached to the app.
    pub debugger_attached: bool,
    /// A hooking framework (Frida, Xposed, Substrate...) is present.
    pub hooking_framework: bool,
    /// The SDK itself detected a virtual camera source.
    pub virtual_camera: bool,
    /// The app runs in a cloner / parallel-space container.
    pub app_cloned: bool,
}

impl Environment {
    /// Names of the markers that are set.
    pub fn flagged(&self) -> Vec<&'static str> {
        [
            (self.is_emulator, "is_emulator"),
            (self.is_rooted, "is_rooted"),
            (self.debugger_attached, "debugger_attached"),
            (self.hooking_framework, "hooking_framework"),
            (self.virtual_camera, "virtual_camera"),
            (self.app_cloned, "app_cloned"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect()
    }
}

/// What the capture SDK says about the device, the app and the capture.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CaptureMeta {
    /// Device model, e.g. `Pixel 8` or `iPhone15,2`.
    pub device_model: String,
    /// Device manufacturer, e.g. `Google` or `Apple`.
    pub manufacturer: String,
    /// Operating system name, e.g. `Android`, `iOS`, `Windows`.
    pub os: String,
    /// Operating system version.
    pub os_version: String,
    /// Label of the camera the frame came from (as the OS names it).
    pub camera_label: String,
    /// Environment markers.
    pub environment: Environment,
    /// Application identifier (bundle id / package name).
    pub app_id: String,
    /// Capture SDK version.
    pub sdk_version: String,
    /// SHA-256 (lower-case hex) of the SDK binary, checked against the configured list.
    pub sdk_digest: String,
    /// Capture time, Unix milliseconds.
    pub capture_time_ms: i64,
    /// The nonce the server issued for this capture.
    pub nonce: String,
    /// Declared width of the upright image, pixels.
    pub image_width: u32,
    /// Declared height of the upright image, pixels.
    pub image_height: u32,
}

/// The plaintext of a bundle: the JPEG, the capture metadata and optional external data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundlePayload {
    /// The captured JPEG (base64 in the JSON).
    #[serde(with = "b64")]
    pub image: Vec<u8>,
    /// Capture metadata.
    pub meta: CaptureMeta,
    /// Integrator data passed through untouched (`/extract_data?types=external`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<serde_json::Value>,
}

mod b64 {
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

/// The 8-byte key id of a public key: SHA-256 over its SPKI DER, truncated.
pub fn key_id(key: &RsaPublicKey) -> crate::Result<[u8; 8]> {
    let der = key
        .to_public_key_der()
        .map_err(|e| Error::InvalidArgument(format!("public key: {e}")))?;
    let h = Sha256::digest(der.as_bytes());
    let mut id = [0u8; 8];
    id.copy_from_slice(&h[..8]);
    Ok(id)
}

/// Seals a payload for the holder of `key`'s private half (the client side of the format).
pub fn seal(key: &RsaPublicKey, payload: &BundlePayload) -> crate::Result<Vec<u8>> {
    let plain = serde_json::to_vec(payload)
        .map_err(|e| Error::InvalidArgument(format!("bundle payload: {e}")))?;
    let mut rng = OsRng;
    let mut aes_key = [0u8; 32];
    rng.fill_bytes(&mut aes_key);
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    let wrapped = key
        .encrypt(&mut rng, Oaep::new::<Sha256>(), &aes_key)
        .map_err(|e| Error::InvalidArgument(format!("RSA-OAEP wrap: {e}")))?;
    let wrapped_len = u16::try_from(wrapped.len())
        .map_err(|_| Error::InvalidArgument("RSA key too large for the bundle format".into()))?;
    let mut out = Vec::with_capacity(FIXED + wrapped.len() + NONCE_LEN + plain.len() + TAG_LEN);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(0);
    out.extend_from_slice(&key_id(key)?);
    out.extend_from_slice(&wrapped_len.to_be_bytes());
    out.extend_from_slice(&wrapped);
    out.extend_from_slice(&nonce);
    let cipher = Aes256Gcm::new_from_slice(&aes_key)
        .map_err(|e| Error::InvalidArgument(format!("AES key: {e}")))?;
    let nonce_arr = Nonce::try_from(&nonce[..])
        .map_err(|_| Error::InvalidArgument("AES-GCM nonce length".into()))?;
    let ct = cipher
        .encrypt(
            &nonce_arr,
            Payload {
                msg: &plain,
                aad: &out,
            },
        )
        .map_err(|_| Error::InvalidArgument("AES-GCM encryption failed".into()))?;
    out.extend_from_slice(&ct);
    Ok(out)
}

/// A bundle split into its fields (no cryptography yet).
#[derive(Debug, Clone, Copy)]
pub struct Envelope<'a> {
    /// Reserved flags byte.
    pub flags: u8,
    /// Key id of the public key it was sealed for.
    pub key_id: [u8; 8],
    /// RSA-OAEP-wrapped AES key.
    pub wrapped_key: &'a [u8],
    /// AES-GCM nonce.
    pub nonce: &'a [u8],
    /// Header bytes (the AAD).
    pub header: &'a [u8],
    /// Ciphertext and tag.
    pub ciphertext: &'a [u8],
}

/// Splits a bundle into its fields; structural problems are [`BundleFailure::Parse`] errors.
pub fn parse_envelope(bytes: &[u8]) -> Result<Envelope<'_>> {
    let parse = |d: &str| bundle_err(BundleFailure::Parse, d.to_string());
    if bytes.len() < FIXED {
        return Err(parse("shorter than the FGCB header"));
    }
    if &bytes[..4] != MAGIC {
        return Err(parse("not an FGCB bundle (bad magic)"));
    }
    if bytes[4] != VERSION {
        return Err(bundle_err(
            BundleFailure::Parse,
            format!("unsupported bundle version {}", bytes[4]),
        ));
    }
    let mut key_id = [0u8; 8];
    key_id.copy_from_slice(&bytes[6..14]);
    let l = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    let header_len = FIXED + l + NONCE_LEN;
    if l == 0 || bytes.len() < header_len + TAG_LEN {
        return Err(parse(
            "truncated bundle (wrapped key, nonce or tag missing)",
        ));
    }
    Ok(Envelope {
        flags: bytes[5],
        key_id,
        wrapped_key: &bytes[FIXED..FIXED + l],
        nonce: &bytes[FIXED + l..header_len],
        header: &bytes[..header_len],
        ciphertext: &bytes[header_len..],
    })
}

/// Why an envelope that names our key did not open: someone changed bytes in transit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tampered(pub String);

/// Decrypts an envelope with `key` (whose key id must match, else a
/// [`BundleFailure::Decrypt`] error). `Ok(Err(Tampered))` means the key id matches but the
/// wrapped key or the AES-GCM authentication fails: a corrupted or modified payload.
pub fn decrypt(
    env: &Envelope<'_>,
    key: &RsaPrivateKey,
    our_key_id: &[u8; 8],
) -> Result<std::result::Result<Vec<u8>, Tampered>> {
    if &env.key_id != our_key_id {
        return Err(bundle_err(
            BundleFailure::Decrypt,
            format!(
                "bundle sealed for key id {}, this server holds {}",
                hex::encode(env.key_id),
                hex::encode(our_key_id)
            ),
        ));
    }
    let aes_key = match key.decrypt(Oaep::new::<Sha256>(), env.wrapped_key) {
        Ok(k) if k.len() == 32 => k,
        Ok(k) => {
            return Ok(Err(Tampered(format!(
                "wrapped key has {} bytes, not 32",
                k.len()
            ))))
        }
        Err(_) => return Ok(Err(Tampered("RSA-OAEP unwrap failed".into()))),
    };
    let cipher = Aes256Gcm::new_from_slice(&aes_key)
        .map_err(|e| Error::InvalidArgument(format!("AES key: {e}")))?;
    let nonce = Nonce::try_from(env.nonce)
        .map_err(|_| bundle_err(BundleFailure::Parse, "AES-GCM nonce length"))?;
    Ok(cipher
        .decrypt(
            &nonce,
            Payload {
                msg: env.ciphertext,
                aad: env.header,
            },
        )
        .map_err(|_| Tampered("AES-GCM authentication failed".into())))
}

/// Parses authenticated plaintext into a payload ([`BundleFailure::Metadata`] on failure).
pub fn parse_payload(plain: &[u8]) -> Result<BundlePayload> {
    let p: BundlePayload = serde_json::from_slice(plain)
        .map_err(|e| bundle_err(BundleFailure::Metadata, format!("payload JSON: {e}")))?;
    if p.image.is_empty() {
        return Err(bundle_err(
            BundleFailure::Metadata,
            "payload carries no image",
        ));
    }
    Ok(p)
}

/// Base64 (standard alphabet, padded) of `bytes`, as `/extract_data` returns the photo.
pub fn to_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_rejects_structural_damage_as_parse_errors() {
        let is_parse = |b: &[u8]| {
            matches!(
                parse_envelope(b),
                Err(CaptureError::Bundle {
                    failure: BundleFailure::Parse,
                    ..
                })
            )
        };
        assert!(is_parse(b""));
        assert!(is_parse(b"FGCB"));
        assert!(is_parse(b"JPEG\x01\x00........\x00\x10"));
        let mut v = b"FGCB\x02\x00........\x00\x01".to_vec();
        v.extend([0u8; 40]);
        assert!(is_parse(&v));
        v[4] = 1;
        assert!(!is_parse(&v), "1-byte key, nonce and tag fit");
        v[15] = 200;
        assert!(is_parse(&v));
    }

    #[test]
    fn messages_match_the_reference() {
        assert_eq!(BundleFailure::Parse.message(), "Failed to parse file");
        assert_eq!(
            BundleFailure::Metadata.message(),
            "Failed to read a meta data"
        );
        assert_eq!(
            BundleFailure::Decrypt.message(),
            "Failed to decrypt message"
        );
        let e = crate::api::ApiError::from(bundle_err(BundleFailure::Decrypt, "x"));
        assert_eq!(e.kind(), "bundle");
        assert_eq!(e.class(), crate::api::ErrorClass::BadRequest);
        assert_eq!(e.to_string(), "Failed to decrypt message");
    }
}
