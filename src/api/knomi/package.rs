//! Knomi encrypted packages: the `{"key", "iv", "p"}` body of `/analyzeEncrypted`,
//! `/checkLivenessEncrypted`, `/checkActiveLivenessEncrypted` and `/decrypt`.
//!
//! Aware does not publish its scheme, so facegate defines one that standard libraries produce
//! (`docs/knomi-packages.md` gives it byte by byte, with a worked `openssl` example):
//!
//! ```text
//! key  base64( RSA-OAEP(server public key, 32-byte AES-256 key) )   empty label; OAEP hash
//!      SHA-256 + MGF1-SHA-256, SHA-256 + MGF1-SHA-1 or SHA-1 + MGF1-SHA-1
//! iv   base64( 16 bytes: AES-256-CBC | 12 bytes: AES-256-GCM )      its length picks the mode
//! p    base64( CBC: ciphertext of the PKCS#7-padded UTF-8 JSON request
//!             GCM: ciphertext, then the 16-byte tag; no AAD )
//! ```
//!
//! [`PackageOpener::open`] checks the envelope's shape (distinct errors, no secret involved),
//! refuses a `key` it has seen before ([`PackageError::Replayed`]), bounds the decryption rate
//! ([`PackageError::Busy`]) and then gives one [`PackageError::Undecryptable`] for every
//! cryptographic or plaintext failure, after the same work, so no failure is an oracle.

use std::path::Path;
use std::sync::{Arc, Mutex};

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::aes::Aes256;
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::{STANDARD, STANDARD_PAD_INDIFFERENT};
use base64::Engine as _;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use rsa::rand_core::{OsRng, RngCore};
use rsa::traits::PublicKeyParts;
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable};
use zeroize::Zeroizing;

use crate::api::iad::capture::parse_private_key;
use crate::bi::now_ms;
use crate::replay::{Inserted, Kind, MemoryLedger, ReplayLedger};
use crate::Error;

/// Longest accepted `key` field, decoded: one RSA-OAEP block of an 8192-bit key.
pub const MAX_KEY_BYTES: usize = 1024;
/// AES-256 key length.
const AES_KEY_LEN: usize = 32;
/// IV length that selects AES-256-CBC.
const CBC_IV_LEN: usize = 16;
/// IV (nonce) length that selects AES-256-GCM.
const GCM_IV_LEN: usize = 12;

/// Bounds of a [`PackageOpener`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PackageSettings {
    /// Most packages that may start decryption per second (a token bucket holding one second's
    /// worth); 0 means no rate bound.
    pub max_decryptions_per_s: u32,
    /// How long a used package is remembered (and refused as a replay), seconds; 0 forgets at
    /// once, which turns replay protection off.
    pub remember_s: u64,
    /// Most packages remembered at once; when that many unexpired ones are held, new packages
    /// are refused as busy until the oldest expire.
    pub max_remembered: usize,
    /// Largest decoded `p` field, bytes.
    pub max_p_bytes: usize,
}

impl Default for PackageSettings {
    /// 100 decryptions per second, packages remembered 600 s, at most 100 000 of them, `p` up
    /// to 64 MiB.
    fn default() -> Self {
        PackageSettings {
            max_decryptions_per_s: 100,
            remember_s: 600,
            max_remembered: 100_000,
            max_p_bytes: 64 << 20,
        }
    }
}

/// Why a package was refused. Every failure after the shape checks that involves the private
/// key or the plaintext is the one [`PackageError::Undecryptable`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    /// The body is not JSON, or not a JSON object.
    #[error("invalid package: {0}")]
    InvalidJson(String),
    /// A field (`key`, `iv` or `p`) is missing.
    #[error("the package has no `{0}` field")]
    MissingField(&'static str),
    /// A field is not a JSON string.
    #[error("the package field `{0}` is not a string")]
    WrongType(&'static str),
    /// A field is not standard base64.
    #[error("the package field `{0}` is not standard base64")]
    InvalidBase64(&'static str),
    /// A field decodes to a length the format does not allow (the message says which).
    #[error("invalid package: {0}")]
    InvalidValue(String),
    /// The `p` field is over [`PackageSettings::max_p_bytes`] (the message says the bound).
    #[error("package too large: {0}")]
    TooLarge(String),
    /// This package (its `key` field) was already used; clients make a fresh AES key per request.
    #[error("The package was already used.")]
    Replayed,
    /// The package does not decrypt to UTF-8 JSON with this server's key (one message for
    /// every cause).
    #[error("The package could not be decrypted.")]
    Undecryptable,
    /// The server refuses packages for now (rate or registry bound, said in the message);
    /// retry later.
    #[error("busy: {0}")]
    Busy(String),
}

/// OAEP parameter set of the `key` field (the label is always empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum OaepHash {
    /// OAEP SHA-256 with MGF1 SHA-256 (OpenSSL `rsa_oaep_md:sha256`, `rsa_mgf1_md:sha256`).
    Sha256,
    /// OAEP SHA-256 with MGF1 SHA-1 (Java's `RSA/ECB/OAEPWithSHA-256AndMGF1Padding`).
    Sha256Mgf1Sha1,
    /// OAEP SHA-1 with MGF1 SHA-1 (Java's `RSA/ECB/OAEPWithSHA-1AndMGF1Padding`).
    Sha1,
}

impl OaepHash {
    /// Every accepted parameter set, in the order `open` tries them.
    pub const ALL: [OaepHash; 3] = [OaepHash::Sha256, OaepHash::Sha256Mgf1Sha1, OaepHash::Sha1];

    /// The `rsa` crate's padding for this parameter set.
    fn padding(self) -> Oaep {
        match self {
            OaepHash::Sha256 => Oaep::new::<Sha256>(),
            OaepHash::Sha256Mgf1Sha1 => Oaep::new_with_mgf_hash::<Sha256, Sha1>(),
            OaepHash::Sha1 => Oaep::new::<Sha1>(),
        }
    }
}

/// AES-256 mode of the `p` field (chosen by the length of `iv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Mode {
    /// AES-256-CBC with PKCS#7 padding, 16-byte IV.
    Cbc,
    /// AES-256-GCM, 12-byte IV, 16-byte tag after the ciphertext, no AAD.
    Gcm,
}

/// The wire form of a package: three base64 strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Base64 of the RSA-OAEP-wrapped AES-256 key.
    pub key: String,
    /// Base64 of the IV (16 bytes: CBC, 12 bytes: GCM).
    pub iv: String,
    /// Base64 of the AES ciphertext (GCM: with its tag appended).
    pub p: String,
}

/// A package's fields after the shape checks, before any decryption.
struct Fields {
    /// The RSA-OAEP block.
    key: Vec<u8>,
    /// The IV; its length picks the mode.
    iv: Vec<u8>,
    /// The ciphertext (GCM: and tag).
    p: Vec<u8>,
}

/// The decryption-rate bucket (this process's; the replay ledger may be shared).
struct Bucket {
    /// Decryptions that may start now (at most one second's worth).
    tokens: f64,
    /// When `tokens` was last refilled, Unix ms.
    refilled_ms: i64,
}

impl Bucket {
    /// Takes one token, or says that the rate bound refuses the package.
    fn take(&mut self, now_ms: i64, s: &PackageSettings) -> Result<(), PackageError> {
        if s.max_decryptions_per_s == 0 {
            return Ok(());
        }
        let rate = f64::from(s.max_decryptions_per_s);
        let elapsed = now_ms.saturating_sub(self.refilled_ms).max(0) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.refilled_ms = self.refilled_ms.max(now_ms);
        if self.tokens < 1.0 {
            return Err(PackageError::Busy(format!(
                "over the bound of {} package decryptions per second; retry later",
                s.max_decryptions_per_s
            )));
        }
        self.tokens -= 1.0;
        Ok(())
    }

    /// Gives back a token taken for a package that was then refused.
    fn refund(&mut self, s: &PackageSettings) {
        if s.max_decryptions_per_s > 0 {
            self.tokens = (self.tokens + 1.0).min(f64::from(s.max_decryptions_per_s));
        }
    }
}

/// What a [`PackageOpener`] shares with its blocking tasks.
struct Inner {
    /// The server's private key.
    key: RsaPrivateKey,
    /// The bounds.
    settings: PackageSettings,
    /// Used package keys (this process's memory, or the fleet's database).
    ledger: Arc<dyn ReplayLedger>,
    /// Decryption rate bucket.
    bucket: Mutex<Bucket>,
}

/// Opens packages sealed for one RSA key pair, single use each, at a bounded rate. Cloning is
/// cheap and clones share the registry.
#[derive(Clone)]
pub struct PackageOpener {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PackageOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackageOpener")
            .field("key_bits", &(self.inner.key.size() * 8))
            .field("settings", &self.inner.settings)
            .finish_non_exhaustive()
    }
}

impl PackageOpener {
    /// An opener for packages sealed with `key`'s public half.
    pub fn new(key: RsaPrivateKey, s: PackageSettings) -> PackageOpener {
        let bucket = Mutex::new(Bucket {
            tokens: f64::from(s.max_decryptions_per_s),
            refilled_ms: now_ms(),
        });
        PackageOpener {
            inner: Arc::new(Inner {
                key,
                settings: s,
                ledger: Arc::new(MemoryLedger::new()),
                bucket,
            }),
        }
    }

    /// The opener with its used keys in `ledger` (the fleet's shared one) instead of memory.
    /// Call it before cloning: clones made before keep the old ledger.
    pub fn with_ledger(self, ledger: Arc<dyn ReplayLedger>) -> PackageOpener {
        let inner = match Arc::try_unwrap(self.inner) {
            Ok(i) => i,
            Err(shared) => Inner {
                key: shared.key.clone(),
                settings: shared.settings.clone(),
                ledger: Arc::clone(&shared.ledger),
                bucket: Mutex::new(Bucket {
                    tokens: f64::from(shared.settings.max_decryptions_per_s),
                    refilled_ms: now_ms(),
                }),
            },
        };
        PackageOpener {
            inner: Arc::new(Inner { ledger, ..inner }),
        }
    }

    /// An opener with the private key of a PEM file (PKCS#1 `RSA PRIVATE KEY` or PKCS#8
    /// `PRIVATE KEY`, 2048 to 8192 bits). Errors name the file, never its contents.
    pub fn from_pem_file(path: &Path, s: PackageSettings) -> crate::Result<PackageOpener> {
        let named = |what: String| Error::InvalidArgument(format!("{}: {what}", path.display()));
        let pem = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| named(e.to_string()))?);
        let key = parse_private_key(&pem).map_err(|e| {
            named(match e {
                Error::InvalidArgument(m) => m,
                other => other.to_string(),
            })
        })?;
        let bits = key.size() * 8;
        if !(2048..=MAX_KEY_BYTES * 8).contains(&bits) {
            return Err(named(format!(
                "a {bits}-bit RSA key; use 2048 to {} bits",
                MAX_KEY_BYTES * 8
            )));
        }
        Ok(PackageOpener::new(key, s))
    }

    /// The bounds this opener applies.
    pub fn settings(&self) -> &PackageSettings {
        &self.inner.settings
    }

    /// Opens a package body and returns the plaintext (UTF-8 JSON, any JSON value). The parsing
    /// and the RSA and AES work run on tokio's blocking pool.
    pub async fn open(&self, body: &[u8]) -> Result<Vec<u8>, PackageError> {
        let inner = Arc::clone(&self.inner);
        let body = body.to_vec();
        tokio::task::spawn_blocking(move || inner.open_at(&body, now_ms()))
            .await
            .map_err(|_| PackageError::Busy("the decryption task did not finish".into()))?
    }

    /// [`PackageOpener::open`] on the calling thread (tests, the CLI).
    pub fn open_blocking(&self, body: &[u8]) -> Result<Vec<u8>, PackageError> {
        self.inner.open_at(body, now_ms())
    }

    /// [`PackageOpener::open_blocking`] at a given time, Unix ms (for tests of expiry and rate).
    #[cfg(test)]
    fn open_at(&self, body: &[u8], now: i64) -> Result<Vec<u8>, PackageError> {
        self.inner.open_at(body, now)
    }
}

impl Inner {
    fn open_at(&self, body: &[u8], now: i64) -> Result<Vec<u8>, PackageError> {
        let fields = parse_fields(body, &self.settings)?;
        let digest: [u8; 32] = Sha256::digest(&fields.key).into();
        self.admit(&digest, now)?;
        self.decrypt(&fields).ok_or(PackageError::Undecryptable)
    }

    /// Lets a package with this `key` digest go on to decryption and records it as used, or
    /// says why not. Replays and full-ledger refusals take no token; a rate refusal records
    /// nothing.
    fn admit(&self, digest: &[u8; 32], now: i64) -> Result<(), PackageError> {
        let s = &self.settings;
        let unavailable =
            |e: Error| PackageError::Busy(format!("the package registry is unavailable: {e}"));
        let bucket = || {
            self.bucket
                .lock()
                .map_err(|_| PackageError::Busy("the package rate bucket is unavailable".into()))
        };
        if self
            .ledger
            .contains(Kind::KnomiPackage, digest, now)
            .map_err(unavailable)?
        {
            return Err(PackageError::Replayed);
        }
        bucket()?.take(now, s)?;
        let remember_ms = i64::try_from(s.remember_s.saturating_mul(1000)).unwrap_or(i64::MAX);
        let inserted = self
            .ledger
            .insert(
                Kind::KnomiPackage,
                digest,
                now,
                now.saturating_add(remember_ms),
                true,
                s.max_remembered,
            )
            .map_err(unavailable);
        let refused = match inserted {
            Ok(Inserted::New) => return Ok(()),
            Ok(Inserted::Present) => PackageError::Replayed,
            Ok(Inserted::Full { max }) => PackageError::Busy(format!(
                "{max} packages of the last {} s are remembered, the bound; retry later",
                s.remember_s
            )),
            Err(e) => e,
        };
        bucket()?.refund(s);
        Err(refused)
    }

    /// RSA-OAEP with every parameter set, then AES, then the UTF-8 JSON check; `None` for
    /// any failure, which is never told apart.
    fn decrypt(&self, f: &Fields) -> Option<Vec<u8>> {
        let mut aes_key = Zeroizing::new([0u8; AES_KEY_LEN]);
        OsRng.fill_bytes(&mut aes_key[..]);
        let mut found = Choice::from(0);
        for hash in OaepHash::ALL {
            let mut candidate = Zeroizing::new([0u8; AES_KEY_LEN]);
            let mut ok = 0u8;
            if let Ok(k) = self.key.decrypt_blinded(&mut OsRng, hash.padding(), &f.key) {
                let k = Zeroizing::new(k);
                if k.len() == AES_KEY_LEN {
                    candidate.copy_from_slice(&k);
                    ok = 1;
                }
            }
            let take = Choice::from(ok) & !found;
            for (dst, src) in aes_key.iter_mut().zip(candidate.iter()) {
                dst.conditional_assign(src, take);
            }
            found |= take;
        }
        let plain = match f.iv.len() {
            CBC_IV_LEN => cbc_decrypt(&aes_key, &f.iv, &f.p),
            _ => gcm_decrypt(&aes_key, &f.iv, &f.p),
        }?;
        let text = std::str::from_utf8(&plain).ok()?;
        serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
        Some(plain)
    }
}

/// The shape checks, in order: a JSON object; `key`, `iv`, `p` present and strings; each
/// standard base64; then the decoded lengths. No secret is involved.
fn parse_fields(body: &[u8], s: &PackageSettings) -> Result<Fields, PackageError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| PackageError::InvalidJson(format!("the body is not JSON: {e}")))?;
    let serde_json::Value::Object(obj) = value else {
        return Err(PackageError::InvalidJson(
            "the body is not a JSON object".into(),
        ));
    };
    let text = |name: &'static str| match obj.get(name) {
        None => Err(PackageError::MissingField(name)),
        Some(serde_json::Value::String(t)) => Ok(t.as_str()),
        Some(_) => Err(PackageError::WrongType(name)),
    };
    let (key, iv, p) = (text("key")?, text("iv")?, text("p")?);
    let key = decode("key", key)?;
    let iv = decode("iv", iv)?;
    // The length of the text tells the decoded length; over the bound, `p` is not decoded.
    let p_chars = p
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .count();
    let p_len = p_chars / 4 * 3 + (p_chars % 4).saturating_sub(1);
    if p_len > s.max_p_bytes {
        return Err(too_large(p_len, s));
    }
    let p = decode("p", p)?;
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(PackageError::InvalidValue(format!(
            "the `key` field holds {} bytes; an RSA-OAEP block is 1 to {MAX_KEY_BYTES} bytes",
            key.len()
        )));
    }
    if iv.len() != CBC_IV_LEN && iv.len() != GCM_IV_LEN {
        return Err(PackageError::InvalidValue(format!(
            "the `iv` field holds {} bytes; it must be {CBC_IV_LEN} (AES-256-CBC) or \
             {GCM_IV_LEN} (AES-256-GCM)",
            iv.len()
        )));
    }
    if p.is_empty() {
        return Err(PackageError::InvalidValue("the `p` field is empty".into()));
    }
    if p.len() > s.max_p_bytes {
        return Err(too_large(p.len(), s));
    }
    Ok(Fields { key, iv, p })
}

fn too_large(p_len: usize, s: &PackageSettings) -> PackageError {
    PackageError::TooLarge(format!(
        "the `p` field holds {p_len} bytes, the bound is {} bytes",
        s.max_p_bytes
    ))
}

/// Standard base64, padding optional; ASCII whitespace (the line breaks of Android's
/// `Base64.DEFAULT`) is ignored.
fn decode(name: &'static str, text: &str) -> Result<Vec<u8>, PackageError> {
    let result = if text.bytes().any(|b| b.is_ascii_whitespace()) {
        let compact: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        STANDARD_PAD_INDIFFERENT.decode(compact)
    } else {
        STANDARD_PAD_INDIFFERENT.decode(text)
    };
    result.map_err(|_| PackageError::InvalidBase64(name))
}

/// AES-256-CBC decryption and PKCS#7 unpadding; `None` on any failure.
fn cbc_decrypt(key: &[u8; AES_KEY_LEN], iv: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
    let dec = cbc::Decryptor::<Aes256>::new_from_slices(key, iv).ok()?;
    let mut buf = ct.to_vec();
    let n = dec.decrypt_padded::<Pkcs7>(&mut buf).ok()?.len();
    buf.truncate(n);
    Some(buf)
}

/// AES-256-GCM decryption of ciphertext-then-tag, no AAD; `None` on any failure.
fn gcm_decrypt(key: &[u8; AES_KEY_LEN], iv: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
    let cipher = Aes256Gcm::new_from_slice(key).ok()?;
    let nonce = Nonce::try_from(iv).ok()?;
    cipher.decrypt(&nonce, ct).ok()
}

/// AES-256-CBC encryption with PKCS#7 padding.
fn cbc_encrypt(key: &[u8; AES_KEY_LEN], iv: &[u8; CBC_IV_LEN], plain: &[u8]) -> Vec<u8> {
    let enc = cbc::Encryptor::<Aes256>::new(key.into(), iv.into());
    let n = plain.len();
    let mut buf = vec![0u8; (n / CBC_IV_LEN + 1) * CBC_IV_LEN];
    buf[..n].copy_from_slice(plain);
    // The buffer always has room for the padding, so this cannot fail.
    let len = enc
        .encrypt_padded::<Pkcs7>(&mut buf, n)
        .map_or(0, <[u8]>::len);
    buf.truncate(len);
    buf
}

/// Seals `plaintext` (the client side): a fresh random AES-256 key wrapped with `hash`'s OAEP
/// for `public`, a random IV, and AES-256 in `mode`.
pub fn seal(
    public: &RsaPublicKey,
    plaintext: &[u8],
    hash: OaepHash,
    mode: Mode,
) -> crate::Result<Envelope> {
    let mut aes_key = Zeroizing::new([0u8; AES_KEY_LEN]);
    OsRng.fill_bytes(&mut aes_key[..]);
    let wrapped = public
        .encrypt(&mut OsRng, hash.padding(), &aes_key[..])
        .map_err(|e| Error::InvalidArgument(format!("RSA-OAEP wrap: {e}")))?;
    let (iv, p) = match mode {
        Mode::Cbc => {
            let mut iv = [0u8; CBC_IV_LEN];
            OsRng.fill_bytes(&mut iv);
            (iv.to_vec(), cbc_encrypt(&aes_key, &iv, plaintext))
        }
        Mode::Gcm => {
            let mut iv = [0u8; GCM_IV_LEN];
            OsRng.fill_bytes(&mut iv);
            let cipher = Aes256Gcm::new_from_slice(&aes_key[..])
                .map_err(|e| Error::InvalidArgument(format!("AES key: {e}")))?;
            let nonce = Nonce::try_from(&iv[..])
                .map_err(|_| Error::InvalidArgument("AES-GCM nonce length".into()))?;
            let ct = cipher
                .encrypt(&nonce, plaintext)
                .map_err(|_| Error::InvalidArgument("AES-GCM encryption failed".into()))?;
            (iv.to_vec(), ct)
        }
    };
    Ok(Envelope {
        key: STANDARD.encode(wrapped),
        iv: STANDARD.encode(iv),
        p: STANDARD.encode(p),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePrivateKey, LineEnding};
    use rsa::traits::PrivateKeyParts;
    use serde_json::json;
    use std::sync::OnceLock;

    /// The test key pair (2048-bit keygen is slow unoptimised: once per test binary).
    fn key() -> &'static RsaPrivateKey {
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| RsaPrivateKey::new(&mut OsRng, 2048).expect("RSA keygen"))
    }

    /// A second, unrelated key pair.
    fn other_key() -> &'static RsaPrivateKey {
        static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
        KEY.get_or_init(|| RsaPrivateKey::new(&mut OsRng, 2048).expect("RSA keygen"))
    }

    const REQUEST: &[u8] =
        br#"{"video":{"workflow_data":{"workflow":"charlie4","frames":[{"data":"AAAA","tags":[],"timestamp":1581714134137}]}}}"#;

    fn opener() -> PackageOpener {
        PackageOpener::new(key().clone(), PackageSettings::default())
    }

    fn opener_with(s: PackageSettings) -> PackageOpener {
        PackageOpener::new(key().clone(), s)
    }

    fn sealed(plain: &[u8], hash: OaepHash, mode: Mode) -> Envelope {
        seal(&key().to_public_key(), plain, hash, mode).expect("seal")
    }

    fn body(e: &Envelope) -> Vec<u8> {
        serde_json::to_vec(e).expect("envelope JSON")
    }

    fn bytes_of(b64: &str) -> Vec<u8> {
        STANDARD.decode(b64).expect("base64")
    }

    /// `e` with its `p` bytes changed by `f`.
    fn with_p(e: &Envelope, f: impl FnOnce(&mut Vec<u8>)) -> Envelope {
        let mut p = bytes_of(&e.p);
        f(&mut p);
        Envelope {
            p: STANDARD.encode(p),
            ..e.clone()
        }
    }

    /// A well-formed envelope with one field replaced by `v`.
    fn set(field: &str, v: serde_json::Value) -> Vec<u8> {
        let e = sealed(REQUEST, OaepHash::Sha256, Mode::Cbc);
        let mut obj = serde_json::to_value(&e).expect("envelope value");
        obj[field] = v;
        serde_json::to_vec(&obj).expect("JSON")
    }

    fn open(body: &[u8]) -> Result<Vec<u8>, PackageError> {
        opener().open_blocking(body)
    }

    #[test]
    fn knomi_round_trip_every_oaep_set_and_mode() {
        let o = opener();
        for hash in OaepHash::ALL {
            for mode in [Mode::Cbc, Mode::Gcm] {
                let e = sealed(REQUEST, hash, mode);
                let iv_len = bytes_of(&e.iv).len();
                assert_eq!(iv_len, if mode == Mode::Cbc { 16 } else { 12 });
                assert_eq!(bytes_of(&e.key).len(), 256, "{hash:?}");
                assert_eq!(
                    o.open_blocking(&body(&e)),
                    Ok(REQUEST.to_vec()),
                    "{hash:?} {mode:?}"
                );
            }
        }
    }

    #[test]
    fn knomi_any_json_value_opens() {
        let array = br#"[{"video":{}},{"video":{}},{"video":{}}]"#;
        let e = sealed(array, OaepHash::Sha1, Mode::Gcm);
        assert_eq!(open(&body(&e)), Ok(array.to_vec()));
    }

    #[tokio::test]
    async fn knomi_async_open_runs_on_the_blocking_pool() {
        let o = opener();
        let e = sealed(REQUEST, OaepHash::Sha256Mgf1Sha1, Mode::Cbc);
        assert_eq!(o.open(&body(&e)).await, Ok(REQUEST.to_vec()));
        assert_eq!(o.open(&body(&e)).await, Err(PackageError::Replayed));
    }

    #[test]
    fn knomi_base64_with_line_breaks_and_without_padding_opens() {
        let e = sealed(REQUEST, OaepHash::Sha256, Mode::Cbc);
        let wrap = |s: &str| {
            let chars: Vec<char> = s.chars().collect();
            chars
                .chunks(76)
                .map(|c| c.iter().collect::<String>())
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
        };
        let e = Envelope {
            key: wrap(&e.key),
            iv: e.iv.trim_end_matches('=').to_string(),
            p: wrap(&e.p),
        };
        assert_eq!(open(&body(&e)), Ok(REQUEST.to_vec()));
    }

    #[test]
    fn knomi_tampered_p_is_undecryptable() {
        // CBC: garble the first block; or flip the top bit of the padding byte through the
        // block before it (always invalid PKCS#7).
        let e = sealed(REQUEST, OaepHash::Sha256, Mode::Cbc);
        let first = with_p(&e, |p| p[0] ^= 1);
        let padding = with_p(&e, |p| {
            let i = p.len() - 17;
            p[i] ^= 0x80;
        });
        // GCM: any flipped bit fails the tag, in the ciphertext or in the tag.
        let g = sealed(REQUEST, OaepHash::Sha256, Mode::Gcm);
        let g_ct = with_p(&g, |p| p[3] ^= 0x10);
        let g_tag = with_p(&g, |p| {
            let i = p.len() - 1;
            p[i] ^= 1;
        });
        // Each on a fresh opener: the variants share their `key`, so one opener refuses
        // all but the first as replays.
        for t in [first, padding, g_ct, g_tag] {
            assert_eq!(open(&body(&t)), Err(PackageError::Undecryptable));
        }
    }

    #[test]
    fn knomi_tampered_key_is_undecryptable() {
        for mode in [Mode::Cbc, Mode::Gcm] {
            let e = sealed(REQUEST, OaepHash::Sha256, mode);
            let mut k = bytes_of(&e.key);
            k[100] ^= 4;
            let t = Envelope {
                key: STANDARD.encode(k),
                ..e
            };
            assert_eq!(
                open(&body(&t)),
                Err(PackageError::Undecryptable),
                "{mode:?}"
            );
        }
    }

    #[test]
    fn knomi_wrong_private_key_is_undecryptable() {
        let theirs = PackageOpener::new(other_key().clone(), PackageSettings::default());
        for mode in [Mode::Cbc, Mode::Gcm] {
            let e = sealed(REQUEST, OaepHash::Sha256, mode);
            assert_eq!(
                theirs.open_blocking(&body(&e)),
                Err(PackageError::Undecryptable)
            );
        }
    }

    #[test]
    fn knomi_truncated_p_is_undecryptable() {
        for mode in [Mode::Cbc, Mode::Gcm] {
            let e = sealed(REQUEST, OaepHash::Sha256, mode);
            let one = with_p(&e, |p| {
                p.pop();
            });
            let block = with_p(&e, |p| p.truncate(p.len() - 16));
            let tiny = with_p(&e, |p| p.truncate(5));
            for t in [one, block, tiny] {
                assert_eq!(
                    open(&body(&t)),
                    Err(PackageError::Undecryptable),
                    "{mode:?}"
                );
            }
        }
    }

    #[test]
    fn knomi_plaintext_not_utf8_json_is_undecryptable() {
        let o = opener();
        for plain in [&b"not json"[..], b"{\"a\":1", b"\"\xff\xfe\"", b"{} {}"] {
            for mode in [Mode::Cbc, Mode::Gcm] {
                let e = sealed(plain, OaepHash::Sha1, mode);
                assert_eq!(o.open_blocking(&body(&e)), Err(PackageError::Undecryptable));
            }
        }
    }

    #[test]
    fn knomi_iv_of_the_other_mode_is_undecryptable() {
        let e = sealed(REQUEST, OaepHash::Sha256, Mode::Gcm);
        let t = Envelope {
            iv: STANDARD.encode([0u8; 16]),
            ..e
        };
        assert_eq!(open(&body(&t)), Err(PackageError::Undecryptable));
    }

    #[test]
    fn knomi_not_json_or_not_an_object_is_invalid_json() {
        for b in [&b""[..], b"not json", b"[1,2,3]", b"\"key\"", b"{\"key\":"] {
            assert!(
                matches!(open(b), Err(PackageError::InvalidJson(_))),
                "{:?}",
                String::from_utf8_lossy(b)
            );
        }
    }

    #[test]
    fn knomi_missing_and_wrong_typed_fields() {
        let e = serde_json::to_value(sealed(REQUEST, OaepHash::Sha256, Mode::Cbc)).expect("v");
        for name in ["key", "iv", "p"] {
            let mut v = e.clone();
            v.as_object_mut().expect("object").remove(name);
            let b = serde_json::to_vec(&v).expect("JSON");
            assert_eq!(open(&b), Err(PackageError::MissingField(name)));
            for wrong in [
                json!(1),
                json!(null),
                json!(["a"]),
                json!({"a": 1}),
                json!(true),
            ] {
                assert_eq!(open(&set(name, wrong)), Err(PackageError::WrongType(name)));
            }
        }
        let mut extra = e.clone();
        extra["workflow"] = json!("charlie4");
        assert_eq!(
            open(&serde_json::to_vec(&extra).expect("JSON")),
            Ok(REQUEST.to_vec())
        );
    }

    #[test]
    fn knomi_bad_base64_in_each_field() {
        for name in ["key", "iv", "p"] {
            for bad in ["!!!!", "AAAA*AAA", "A", "AAAAA=AA", "AA-_"] {
                assert_eq!(
                    open(&set(name, json!(bad))),
                    Err(PackageError::InvalidBase64(name)),
                    "{name} {bad}"
                );
            }
        }
    }

    #[test]
    fn knomi_bad_lengths_are_invalid_values() {
        let b64 = |n: usize| json!(STANDARD.encode(vec![7u8; n]));
        for (field, n) in [
            ("key", 0),
            ("key", 1025),
            ("iv", 0),
            ("iv", 8),
            ("iv", 15),
            ("iv", 32),
            ("p", 0),
        ] {
            assert!(
                matches!(
                    open(&set(field, b64(n))),
                    Err(PackageError::InvalidValue(_))
                ),
                "{field} {n}"
            );
        }
        let Err(PackageError::InvalidValue(m)) = open(&set("iv", b64(8))) else {
            panic!("iv of 8 bytes accepted");
        };
        assert!(
            m.contains("8 bytes") && m.contains("16") && m.contains("12"),
            "{m}"
        );
    }

    #[test]
    fn knomi_p_over_the_bound_is_too_large() {
        let s = PackageSettings {
            max_p_bytes: 64,
            ..PackageSettings::default()
        };
        let o = opener_with(s);
        let e = sealed(&[b' '; 70], OaepHash::Sha256, Mode::Cbc);
        let Err(PackageError::TooLarge(m)) = o.open_blocking(&body(&e)) else {
            panic!("80-byte p accepted under a 64-byte bound");
        };
        assert!(m.contains("80 bytes") && m.contains("64 bytes"), "{m}");
        let fits = sealed(b"[1]", OaepHash::Sha256, Mode::Cbc);
        let huge = Envelope {
            p: "A".repeat(10_000),
            ..fits.clone()
        };
        assert!(matches!(
            o.open_blocking(&body(&huge)),
            Err(PackageError::TooLarge(_))
        ));
        // Right at the bound is fine (64 bytes of CBC: 63 bytes of plaintext at most).
        let at = sealed(&[b' '; 60], OaepHash::Sha256, Mode::Cbc);
        assert_eq!(bytes_of(&at.p).len(), 64);
        assert!(matches!(
            o.open_blocking(&body(&at)),
            Err(PackageError::Undecryptable)
        ));
        assert_eq!(o.open_blocking(&body(&fits)), Ok(b"[1]".to_vec()));
    }

    #[test]
    fn knomi_shape_errors_do_not_burn_the_package() {
        let o = opener();
        let e = sealed(REQUEST, OaepHash::Sha256, Mode::Gcm);
        let bad_iv = Envelope {
            iv: STANDARD.encode([0u8; 8]),
            ..e.clone()
        };
        assert!(matches!(
            o.open_blocking(&body(&bad_iv)),
            Err(PackageError::InvalidValue(_))
        ));
        assert_eq!(o.open_blocking(&body(&e)), Ok(REQUEST.to_vec()));
    }

    #[test]
    fn knomi_replay_is_refused() {
        let o = opener();
        let e = sealed(REQUEST, OaepHash::Sha256, Mode::Cbc);
        assert_eq!(o.open_blocking(&body(&e)), Ok(REQUEST.to_vec()));
        assert_eq!(o.open_blocking(&body(&e)), Err(PackageError::Replayed));
        // The same key with another iv and p is the same package.
        let other = Envelope {
            p: sealed(REQUEST, OaepHash::Sha256, Mode::Cbc).p,
            ..e.clone()
        };
        assert_eq!(o.open_blocking(&body(&other)), Err(PackageError::Replayed));
        // Clones share the registry.
        assert_eq!(
            o.clone().open_blocking(&body(&e)),
            Err(PackageError::Replayed)
        );
    }

    #[test]
    fn knomi_replay_of_a_failed_package_is_refused() {
        let o = opener();
        let e = sealed(REQUEST, OaepHash::Sha256, Mode::Gcm);
        let t = with_p(&e, |p| p[0] ^= 1);
        assert_eq!(o.open_blocking(&body(&t)), Err(PackageError::Undecryptable));
        assert_eq!(o.open_blocking(&body(&t)), Err(PackageError::Replayed));
        // Its key is spent: the untampered package is refused too.
        assert_eq!(o.open_blocking(&body(&e)), Err(PackageError::Replayed));
    }

    #[test]
    fn knomi_package_is_forgotten_after_remember_s() {
        let o = opener_with(PackageSettings {
            remember_s: 30,
            ..PackageSettings::default()
        });
        let e = sealed(REQUEST, OaepHash::Sha256, Mode::Cbc);
        let t0 = now_ms();
        assert_eq!(o.open_at(&body(&e), t0), Ok(REQUEST.to_vec()));
        let later = t0 + 29_000;
        assert_eq!(o.open_at(&body(&e), later), Err(PackageError::Replayed));
        let expired = t0 + 30_000;
        assert_eq!(o.open_at(&body(&e), expired), Ok(REQUEST.to_vec()));
    }

    #[test]
    fn knomi_rate_bound_refuses_without_recording() {
        let o = opener_with(PackageSettings {
            max_decryptions_per_s: 1,
            ..PackageSettings::default()
        });
        let a = body(&sealed(REQUEST, OaepHash::Sha256, Mode::Cbc));
        let b = body(&sealed(REQUEST, OaepHash::Sha1, Mode::Gcm));
        let t0 = now_ms();
        assert_eq!(o.open_at(&a, t0), Ok(REQUEST.to_vec()));
        let Err(PackageError::Busy(m)) = o.open_at(&b, t0) else {
            panic!("second package within the second accepted");
        };
        assert!(m.contains("1 package decryptions per second"), "{m}");
        // A replay is told as such even when the bucket is empty.
        assert_eq!(o.open_at(&a, t0), Err(PackageError::Replayed));
        let half = t0 + 500;
        assert!(matches!(o.open_at(&b, half), Err(PackageError::Busy(_))));
        // The busy refusals did not record b: it opens once the bucket has refilled.
        let refilled = t0 + 1_000;
        assert_eq!(o.open_at(&b, refilled), Ok(REQUEST.to_vec()));
        assert_eq!(o.open_at(&b, refilled), Err(PackageError::Replayed));
    }

    #[test]
    fn knomi_full_registry_is_busy_until_entries_expire() {
        let o = opener_with(PackageSettings {
            max_remembered: 2,
            remember_s: 60,
            ..PackageSettings::default()
        });
        let [a, b, c] = [0, 1, 2].map(|_| body(&sealed(REQUEST, OaepHash::Sha256, Mode::Gcm)));
        let t0 = now_ms();
        assert_eq!(o.open_at(&a, t0), Ok(REQUEST.to_vec()));
        assert_eq!(o.open_at(&b, t0), Ok(REQUEST.to_vec()));
        let Err(PackageError::Busy(m)) = o.open_at(&c, t0 + 59_000) else {
            panic!("third package accepted with a registry of 2");
        };
        assert!(m.contains("2 packages of the last 60 s"), "{m}");
        assert_eq!(o.open_at(&a, t0), Err(PackageError::Replayed));
        let expired = t0 + 60_000;
        assert_eq!(o.open_at(&c, expired), Ok(REQUEST.to_vec()));
    }

    #[test]
    fn knomi_undecryptable_is_one_sentence_for_every_failure() {
        let o = opener();
        let theirs = PackageOpener::new(other_key().clone(), PackageSettings::default());
        let cbc = sealed(REQUEST, OaepHash::Sha256, Mode::Cbc);
        let gcm = sealed(REQUEST, OaepHash::Sha256Mgf1Sha1, Mode::Gcm);
        let mut wrapped = bytes_of(&cbc.key);
        wrapped[7] ^= 1;
        // `cbc` variants share a key: each goes to a fresh opener.
        let failures = [
            o.open_blocking(&body(&with_p(&cbc, |p| p[0] ^= 1))),
            o.open_blocking(&body(&with_p(&gcm, |p| p[0] ^= 1))),
            open(&body(&with_p(&cbc, |p| p.truncate(16)))),
            open(&body(&Envelope {
                key: STANDARD.encode(wrapped),
                ..cbc.clone()
            })),
            theirs.open_blocking(&body(&gcm)),
            o.open_blocking(&body(&sealed(b"\xff", OaepHash::Sha1, Mode::Cbc))),
            o.open_blocking(&body(&sealed(b"nope", OaepHash::Sha1, Mode::Gcm))),
        ];
        for f in failures {
            let e = f.expect_err("a failure");
            assert_eq!(e, PackageError::Undecryptable);
            assert_eq!(e.to_string(), "The package could not be decrypted.");
        }
    }

    #[test]
    fn knomi_debug_of_the_opener_shows_no_key() {
        let text = format!("{:?}", opener());
        assert!(text.contains("key_bits: 2048"), "{text}");
        let k = key();
        let secrets = [
            k.d().to_string(),
            format!("{:x}", k.d()),
            k.primes()[0].to_string(),
            format!("{:x}", k.primes()[0]),
            k.n().to_string(),
        ];
        for s in secrets {
            assert!(!text.contains(&s[..24]), "{text}");
        }
    }

    #[test]
    fn knomi_from_pem_file_reads_pkcs1_and_pkcs8_and_names_the_file() {
        let dir = std::env::temp_dir().join(format!("facegate-knomi-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pkcs1 = dir.join("pkcs1.pem");
        let pkcs8 = dir.join("pkcs8.pem");
        let junk = dir.join("junk.pem");
        let k = key();
        std::fs::write(
            &pkcs1,
            k.to_pkcs1_pem(LineEnding::LF).expect("pem").as_bytes(),
        )
        .expect("write");
        std::fs::write(
            &pkcs8,
            k.to_pkcs8_pem(LineEnding::LF).expect("pem").as_bytes(),
        )
        .expect("write");
        std::fs::write(&junk, "-----BEGIN PRIVATE KEY-----\nSECRETSTUFF\n").expect("write");
        for p in [&pkcs1, &pkcs8] {
            let o = PackageOpener::from_pem_file(p, PackageSettings::default()).expect("key");
            let e = sealed(REQUEST, OaepHash::Sha256, Mode::Gcm);
            assert_eq!(o.open_blocking(&body(&e)), Ok(REQUEST.to_vec()));
        }
        for p in [junk.clone(), dir.join("missing.pem")] {
            let m = PackageOpener::from_pem_file(&p, PackageSettings::default())
                .expect_err("not a key")
                .to_string();
            assert!(m.contains(&p.display().to_string()), "{m}");
            assert!(!m.contains("SECRETSTUFF"), "{m}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn knomi_doc_example_values_match_the_cbc_path() {
        let doc = include_str!("../../../docs/knomi-packages.md");
        let block = doc
            .split("<!-- example-values: begin -->")
            .nth(1)
            .and_then(|rest| rest.split("<!-- example-values: end -->").next())
            .expect("the example-values block of docs/knomi-packages.md");
        let value = |label: &str| {
            block
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == label).then(|| v.trim())
                })
                .unwrap_or_else(|| panic!("`{label}` missing from the example values"))
        };
        let plaintext = value("plaintext");
        let aes_key: [u8; 32] = hex::decode(value("aes_key"))
            .expect("hex")
            .try_into()
            .expect("32 bytes");
        let iv: [u8; 16] = hex::decode(value("iv"))
            .expect("hex")
            .try_into()
            .expect("16 bytes");
        let p = hex::decode(value("p")).expect("hex");
        assert_eq!(STANDARD.encode(aes_key), value("aes_key_b64"));
        assert_eq!(STANDARD.encode(iv), value("iv_b64"));
        assert_eq!(STANDARD.encode(&p), value("p_b64"));
        assert_eq!(cbc_encrypt(&aes_key, &iv, plaintext.as_bytes()), p);
        // The shell commands use the same values, and the lengths they state are right.
        for cmd in [
            format!(
                "printf '%s' '{}' | openssl base64 -d -A > aes.key",
                value("aes_key_b64")
            ),
            format!(
                "printf '%s' '{}' | openssl base64 -d -A > iv.bin",
                value("iv_b64")
            ),
            format!("printf '%s' '{plaintext}' > request.json"),
            format!("# 3. The request ({} bytes", plaintext.len()),
            format!("({} bytes: {} + one byte 0x01)", p.len(), plaintext.len()),
        ] {
            assert!(doc.contains(&cmd), "the worked example lacks {cmd:?}");
        }
        // With the key wrapped as in step 5, the package opens to the request.
        let wrapped = key()
            .to_public_key()
            .encrypt(&mut OsRng, OaepHash::Sha256.padding(), &aes_key)
            .expect("wrap");
        let e = Envelope {
            key: STANDARD.encode(wrapped),
            iv: value("iv_b64").to_string(),
            p: value("p_b64").to_string(),
        };
        assert_eq!(open(&body(&e)), Ok(plaintext.as_bytes().to_vec()));
    }
}
