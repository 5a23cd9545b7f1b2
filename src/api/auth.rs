//! Route authentication hooks: named API keys and JWT bearer tokens.
//!
//! Both mechanisms implement [`Authenticator`] and run on the request head before the body is
//! read. Refusal messages are meant for clients: they explain what was wrong without ever
//! repeating the credential that was presented.

use std::collections::HashSet;
use std::fmt;

use hyper::http::header::{HeaderName, AUTHORIZATION};
use hyper::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::server::hooks::{AuthFailure, Authenticator, Principal};

/// Prefix of a key given by its SHA-256 (`NAME:sha256:HEX`).
pub const HASHED: &str = "sha256:";

/// The config entry `NAME:sha256:HEX` for `key`: what to store instead of the key itself
/// (`facegate api-key-hash`).
pub fn hashed_entry(name: &str, key: &str) -> String {
    format!(
        "{name}:{HASHED}{}",
        hex::encode(Sha256::digest(key.as_bytes()))
    )
}

/// Header that carries an API key (`X-API-Key`); `Authorization: Bearer <key>` is also accepted.
pub const API_KEY_HEADER: &str = "x-api-key";

/// Shortest API key accepted, in bytes.
pub const MIN_API_KEY_BYTES: usize = 16;

/// Largest `leeway_s` accepted by [`JwtVerifier::new`] (one day).
pub const MAX_LEEWAY_S: u64 = 86_400;

const API_KEY_MISSING: &str =
    "an API key is required: send it in the X-API-Key header or as Authorization: Bearer <key>";
const API_KEY_INVALID: &str = "the API key is not valid";
const JWT_MISSING: &str = "a bearer token is required: send it as Authorization: Bearer <token>";

// ---------------------------------------------------------------------------------------------
// Header helpers
// ---------------------------------------------------------------------------------------------

fn is_blank(b: &u8) -> bool {
    *b == b' ' || *b == b'\t'
}

fn trim_blanks(mut bytes: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = bytes {
        if !is_blank(first) {
            break;
        }
        bytes = rest;
    }
    while let [rest @ .., last] = bytes {
        if !is_blank(last) {
            break;
        }
        bytes = rest;
    }
    bytes
}

/// The single value of header `name` with surrounding blanks trimmed, `None` when the header is
/// absent or blank; refuses a request that repeats the header.
fn single_header<'a>(
    head: &'a Parts,
    name: &HeaderName,
    label: &str,
) -> Result<Option<&'a [u8]>, AuthFailure> {
    let mut values = head.headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthFailure::Invalid(format!(
            "send a single {label} header"
        )));
    }
    let value = trim_blanks(first.as_bytes());
    Ok((!value.is_empty()).then_some(value))
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive); `None` when there is
/// no Authorization header or the token is empty.
fn bearer_token(head: &Parts) -> Result<Option<&[u8]>, AuthFailure> {
    let Some(value) = single_header(head, &AUTHORIZATION, "Authorization")? else {
        return Ok(None);
    };
    let split = value.iter().position(is_blank).unwrap_or(value.len());
    let (scheme, rest) = value.split_at(split);
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return Err(AuthFailure::Invalid(
            "the Authorization header must use the Bearer scheme".to_owned(),
        ));
    }
    let token = trim_blanks(rest);
    Ok((!token.is_empty()).then_some(token))
}

/// Position of `digest` among `digests`, compared against every one of them in constant time
/// (no early exit, no data-dependent branch inside the loop).
pub fn ct_position(digests: &[[u8; 32]], digest: &[u8; 32]) -> Option<usize> {
    let mut found = Choice::from(0);
    let mut index = 0u64;
    for (i, stored) in digests.iter().enumerate() {
        let equal = stored.ct_eq(digest);
        index.conditional_assign(&(i as u64), equal);
        found |= equal;
    }
    bool::from(found)
        .then(|| usize::try_from(index).ok())
        .flatten()
}

// ---------------------------------------------------------------------------------------------
// API keys
// ---------------------------------------------------------------------------------------------

/// A set of named API keys, checked in constant time.
///
/// Only the SHA-256 digests of the keys are kept; `Debug` shows the key names only.
#[derive(Clone)]
pub struct ApiKeys {
    names: Vec<String>,
    digests: Vec<[u8; 32]>,
}

impl ApiKeys {
    /// Builds the set from `(name, key)` pairs.
    ///
    /// Refuses an empty set, empty or control-character names, duplicate names, keys shorter
    /// than [`MIN_API_KEY_BYTES`] and two names sharing one key. Error messages name the key,
    /// never its value.
    pub fn new(keys: impl IntoIterator<Item = (String, String)>) -> Result<ApiKeys, String> {
        let mut names: Vec<String> = Vec::new();
        let mut digests: Vec<[u8; 32]> = Vec::new();
        for (name, key) in keys {
            if name.trim().is_empty() {
                return Err("an API key has an empty name".to_owned());
            }
            if name.chars().any(char::is_control) {
                return Err(format!("API key name {name:?} contains control characters"));
            }
            if names.contains(&name) {
                return Err(format!("API key name `{name}` is used more than once"));
            }
            if key.is_empty() {
                return Err(format!("API key `{name}` is empty"));
            }
            if key.len() < MIN_API_KEY_BYTES {
                return Err(format!(
                    "API key `{name}` is too short: at least {MIN_API_KEY_BYTES} bytes are required"
                ));
            }
            let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
            if let Some(pos) = digests.iter().position(|d| *d == digest) {
                return Err(format!(
                    "API keys `{}` and `{name}` have the same key",
                    names[pos]
                ));
            }
            names.push(name);
            digests.push(digest);
        }
        if names.is_empty() {
            return Err("no API keys are configured".to_owned());
        }
        Ok(ApiKeys { names, digests })
    }

    /// Builds the set from config entries `NAME:KEY`, a bare `KEY`, or `NAME:sha256:HEX`
    /// (only the key's SHA-256, 64 hex digits: the key itself is not stored in the config).
    ///
    /// An entry containing `:` is always `NAME:KEY` (split at the first `:`), so a key that
    /// itself contains `:` must be given with a name. A bare key at (1-based) position `n` of
    /// the list is named `key<n>`. Blanks around names, keys and entries are trimmed.
    pub fn parse_list(entries: &[String]) -> Result<ApiKeys, String> {
        let (plain, hashed): (Vec<&String>, Vec<&String>) = entries.iter().partition(|e| {
            e.split_once(':')
                .is_none_or(|(_, k)| !k.trim().starts_with(HASHED))
        });
        let mut set = if plain.is_empty() {
            ApiKeys {
                names: Vec::new(),
                digests: Vec::new(),
            }
        } else {
            Self::parse_plain(entries, &plain)?
        };
        for entry in hashed {
            let (name, rest) = entry.split_once(':').unwrap_or_default();
            let name = name.trim();
            let hex = rest.trim()[HASHED.len()..].trim();
            let digest: [u8; 32] = hex::decode(hex)
                .ok()
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| {
                    format!("API key `{name}`: sha256: must be followed by 64 hex digits")
                })?;
            set.push(name.to_owned(), digest)?;
        }
        if set.names.is_empty() {
            return Err("no API keys are configured".to_owned());
        }
        Ok(set)
    }

    /// Adds a key by its digest, with [`ApiKeys::new`]'s checks on the name and uniqueness.
    fn push(&mut self, name: String, digest: [u8; 32]) -> Result<(), String> {
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(format!(
                "API key name {name:?} is empty or has control characters"
            ));
        }
        if self.names.contains(&name) {
            return Err(format!("API key name `{name}` is used more than once"));
        }
        if let Some(pos) = self.digests.iter().position(|d| *d == digest) {
            return Err(format!(
                "API keys `{}` and `{name}` have the same key",
                self.names[pos]
            ));
        }
        self.names.push(name);
        self.digests.push(digest);
        Ok(())
    }

    /// The plain entries of `entries` (`NAME:KEY` or `KEY`), named by their position in the
    /// whole list.
    fn parse_plain(all: &[String], entries: &[&String]) -> Result<ApiKeys, String> {
        let mut keys = Vec::with_capacity(entries.len());
        for entry in entries {
            let position = all
                .iter()
                .position(|e| std::ptr::eq(e, *entry))
                .unwrap_or(0)
                + 1;
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(format!("API key entry {position} is empty"));
            }
            let pair = match entry.split_once(':') {
                Some((name, key)) => {
                    let name = name.trim();
                    if name.is_empty() {
                        return Err(format!(
                            "API key entry {position} has an empty name before `:`"
                        ));
                    }
                    (name.to_owned(), key.trim().to_owned())
                }
                None => (format!("key{position}"), entry.to_owned()),
            };
            keys.push(pair);
        }
        ApiKeys::new(keys)
    }

    /// Names of the configured keys, in configuration order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// The presented key: `X-API-Key` when present, else `Authorization: Bearer`.
    fn credential<'a>(&self, head: &'a Parts) -> Result<Option<&'a [u8]>, AuthFailure> {
        let header = HeaderName::from_static(API_KEY_HEADER);
        match single_header(head, &header, "X-API-Key")? {
            Some(key) => Ok(Some(key)),
            None => bearer_token(head),
        }
    }

    /// Index of the key whose digest equals `digest` ([`ct_position`]).
    fn find(&self, digest: &[u8; 32]) -> Option<usize> {
        ct_position(&self.digests, digest)
    }
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKeys")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl Authenticator for ApiKeys {
    fn scheme(&self) -> &'static str {
        "api_key"
    }

    fn authenticate(&self, head: &Parts) -> Result<Principal, AuthFailure> {
        let Some(presented) = self.credential(head)? else {
            return Err(AuthFailure::Missing(API_KEY_MISSING.to_owned()));
        };
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let name = self
            .find(&digest)
            .and_then(|i| self.names.get(i))
            .ok_or_else(|| AuthFailure::Invalid(API_KEY_INVALID.to_owned()))?;
        Ok(Principal {
            scheme: "api_key",
            subject: name.clone(),
            claims: None,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// JWT
// ---------------------------------------------------------------------------------------------

/// JWT signature algorithms accepted in [`JwtConfig::algorithm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 (shared secret of at least 32 bytes).
    #[default]
    #[serde(rename = "HS256")]
    Hs256,
    /// HMAC with SHA-384 (shared secret of at least 48 bytes).
    #[serde(rename = "HS384")]
    Hs384,
    /// HMAC with SHA-512 (shared secret of at least 64 bytes).
    #[serde(rename = "HS512")]
    Hs512,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RSA public key, 2048 to 4096 bits).
    #[serde(rename = "RS256")]
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384 (RSA public key, 2048 to 4096 bits).
    #[serde(rename = "RS384")]
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512 (RSA public key, 2048 to 4096 bits).
    #[serde(rename = "RS512")]
    Rs512,
    /// ECDSA on P-256 with SHA-256.
    #[serde(rename = "ES256")]
    Es256,
    /// ECDSA on P-384 with SHA-384.
    #[serde(rename = "ES384")]
    Es384,
}

impl JwtAlgorithm {
    /// The JOSE name (`HS256`, `RS256`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::Hs256 => "HS256",
            JwtAlgorithm::Hs384 => "HS384",
            JwtAlgorithm::Hs512 => "HS512",
            JwtAlgorithm::Rs256 => "RS256",
            JwtAlgorithm::Rs384 => "RS384",
            JwtAlgorithm::Rs512 => "RS512",
            JwtAlgorithm::Es256 => "ES256",
            JwtAlgorithm::Es384 => "ES384",
        }
    }

    fn to_jwt(self) -> Algorithm {
        match self {
            JwtAlgorithm::Hs256 => Algorithm::HS256,
            JwtAlgorithm::Hs384 => Algorithm::HS384,
            JwtAlgorithm::Hs512 => Algorithm::HS512,
            JwtAlgorithm::Rs256 => Algorithm::RS256,
            JwtAlgorithm::Rs384 => Algorithm::RS384,
            JwtAlgorithm::Rs512 => Algorithm::RS512,
            JwtAlgorithm::Es256 => Algorithm::ES256,
            JwtAlgorithm::Es384 => Algorithm::ES384,
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Configuration of a [`JwtVerifier`]; every field has a default (`Debug` hides the secret).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtConfig {
    /// The only signature algorithm accepted (default `HS256`).
    pub algorithm: JwtAlgorithm,
    /// Shared secret for `HS*`, used as the raw bytes of the string.
    pub secret: Option<String>,
    /// Public key in PEM form for `RS*` (`PUBLIC KEY` or `RSA PUBLIC KEY`) and `ES*` (`PUBLIC KEY`).
    pub public_key_pem: Option<String>,
    /// Required `iss` claim; when set, tokens without it are refused.
    pub issuer: Option<String>,
    /// Accepted `aud` values; when set, tokens must carry one of them. When unset, tokens that
    /// carry an `aud` claim are refused (RFC 7519 §4.1.3).
    pub audience: Option<Vec<String>>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (default 30, at most [`MAX_LEEWAY_S`]).
    pub leeway_s: u64,
    /// Whether tokens must carry an `exp` claim (default true; `exp` is checked whenever present).
    pub require_exp: bool,
    /// Longest token accepted, in bytes (default 8192).
    pub max_token_bytes: usize,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            algorithm: JwtAlgorithm::default(),
            secret: None,
            public_key_pem: None,
            issuer: None,
            audience: None,
            leeway_s: 30,
            require_exp: true,
            max_token_bytes: 8192,
        }
    }
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithm", &self.algorithm.as_str())
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field(
                "public_key_pem",
                &self.public_key_pem.as_ref().map(|_| "<pem>"),
            )
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_s", &self.leeway_s)
            .field("require_exp", &self.require_exp)
            .field("max_token_bytes", &self.max_token_bytes)
            .finish()
    }
}

/// Verifies `Authorization: Bearer <JWT>` against one configured algorithm and key.
pub struct JwtVerifier {
    algorithm: JwtAlgorithm,
    key: DecodingKey,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<Vec<String>>,
    max_token_bytes: usize,
}

impl JwtVerifier {
    /// Builds a verifier, checking that the key material fits the algorithm: an `HS*` secret
    /// at least as long as the hash (32/48/64 bytes, RFC 7518 §3.2), an RSA public key of 2048
    /// to 4096 bits, or an EC public key on the algorithm's curve.
    pub fn new(cfg: JwtConfig) -> Result<Self, String> {
        let alg = cfg.algorithm;
        if cfg.max_token_bytes == 0 {
            return Err("max_token_bytes must be at least 1".to_owned());
        }
        if cfg.leeway_s > MAX_LEEWAY_S {
            return Err(format!("leeway_s must be at most {MAX_LEEWAY_S} seconds"));
        }
        if cfg.issuer.as_deref().is_some_and(str::is_empty) {
            return Err("issuer must not be empty".to_owned());
        }
        if let Some(audience) = &cfg.audience {
            if audience.is_empty() {
                return Err("audience must list at least one value".to_owned());
            }
            if audience.iter().any(String::is_empty) {
                return Err("audience values must not be empty".to_owned());
            }
        }

        let key = decoding_key(alg, cfg.secret.as_deref(), cfg.public_key_pem.as_deref())?;

        let mut validation = Validation::new(alg.to_jwt());
        validation.leeway = cfg.leeway_s;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.validate_aud = true;
        let mut required = HashSet::new();
        if cfg.require_exp {
            required.insert("exp".to_owned());
        }
        if let Some(issuer) = &cfg.issuer {
            validation.set_issuer(&[issuer]);
            required.insert("iss".to_owned());
        }
        if let Some(audience) = &cfg.audience {
            validation.set_audience(audience);
            required.insert("aud".to_owned());
        }
        validation.required_spec_claims = required;

        Ok(JwtVerifier {
            algorithm: alg,
            key,
            validation,
            issuer: cfg.issuer,
            audience: cfg.audience,
            max_token_bytes: cfg.max_token_bytes,
        })
    }

    /// The only algorithm this verifier accepts.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    fn failure_message(&self, kind: &ErrorKind) -> String {
        match kind {
            ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
            ErrorKind::ImmatureSignature => {
                "the token is not valid yet: its nbf time is in the future".to_owned()
            }
            ErrorKind::InvalidAudience => {
                "the token's audience (aud) is not accepted here".to_owned()
            }
            ErrorKind::InvalidIssuer => "the token's issuer (iss) is not accepted here".to_owned(),
            ErrorKind::InvalidSubject => "the token's subject (sub) is not accepted".to_owned(),
            ErrorKind::InvalidSignature => "the token's signature is not valid".to_owned(),
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                format!("the token must be signed with {}", self.algorithm)
            }
            ErrorKind::MissingRequiredClaim(claim) => {
                format!("the token has no valid `{claim}` claim, which is required")
            }
            ErrorKind::InvalidClaimFormat(claim) => {
                format!("the token's `{claim}` claim is malformed")
            }
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_) => "the token is malformed".to_owned(),
            _ => "the token could not be verified".to_owned(),
        }
    }
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithm", &self.algorithm.as_str())
            .field("key", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_s", &self.validation.leeway)
            .field(
                "require_exp",
                &self.validation.required_spec_claims.contains("exp"),
            )
            .field("max_token_bytes", &self.max_token_bytes)
            .finish()
    }
}

impl Authenticator for JwtVerifier {
    fn scheme(&self) -> &'static str {
        "jwt"
    }

    fn authenticate(&self, head: &Parts) -> Result<Principal, AuthFailure> {
        let Some(token) = bearer_token(head)? else {
            return Err(AuthFailure::Missing(JWT_MISSING.to_owned()));
        };
        if token.len() > self.max_token_bytes {
            return Err(AuthFailure::Invalid(format!(
                "the token is longer than the {} bytes allowed",
                self.max_token_bytes
            )));
        }
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation)
            .map_err(|e| AuthFailure::Invalid(self.failure_message(e.kind())))?;
        let claims = data.claims;
        if !claims.is_object() {
            return Err(AuthFailure::Invalid(
                "the token's claims must be a JSON object".to_owned(),
            ));
        }
        let subject = match claims.get("sub") {
            None => String::new(),
            Some(serde_json::Value::String(sub)) => sub.clone(),
            Some(_) => {
                return Err(AuthFailure::Invalid(
                    "the token's `sub` claim must be a string".to_owned(),
                ))
            }
        };
        Ok(Principal {
            scheme: "jwt",
            subject,
            claims: Some(claims),
        })
    }
}

/// The decoding key for `alg`, refusing key material that does not fit it.
fn decoding_key(
    alg: JwtAlgorithm,
    secret: Option<&str>,
    pem: Option<&str>,
) -> Result<DecodingKey, String> {
    match alg {
        JwtAlgorithm::Hs256 | JwtAlgorithm::Hs384 | JwtAlgorithm::Hs512 => {
            if pem.is_some() {
                return Err(format!(
                    "public_key_pem is for RS*/ES* algorithms; {alg} uses `secret`"
                ));
            }
            let secret = secret.ok_or_else(|| format!("{alg} needs a `secret`"))?;
            let min = match alg {
                JwtAlgorithm::Hs384 => 48,
                JwtAlgorithm::Hs512 => 64,
                _ => 32,
            };
            if secret.len() < min {
                return Err(format!(
                    "the {alg} secret is too short: at least {min} bytes are required"
                ));
            }
            Ok(DecodingKey::from_secret(secret.as_bytes()))
        }
        JwtAlgorithm::Rs256 | JwtAlgorithm::Rs384 | JwtAlgorithm::Rs512 => {
            let pem = public_pem(alg, secret, pem, &["PUBLIC KEY", "RSA PUBLIC KEY"])?;
            let key = DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| {
                format!("public_key_pem is not an RSA public key ({alg} needs one)")
            })?;
            let der = key
                .try_get_as_bytes()
                .map_err(|_| "public_key_pem is not an RSA public key".to_owned())?;
            check_rsa_public_key(der)?;
            Ok(key)
        }
        JwtAlgorithm::Es256 | JwtAlgorithm::Es384 => {
            let pem = public_pem(alg, secret, pem, &["PUBLIC KEY"])?;
            let curve = if alg == JwtAlgorithm::Es256 {
                "P-256"
            } else {
                "P-384"
            };
            let wrong = || format!("public_key_pem is not a {curve} public key ({alg} needs one)");
            let key = DecodingKey::from_ec_pem(pem.as_bytes()).map_err(|_| wrong())?;
            // The EC point is only parsed when a verifier is built; verify an empty signature
            // once so that a key on the wrong curve fails here rather than on every request.
            jsonwebtoken::crypto::verify("", b"", &key, alg.to_jwt()).map_err(|_| wrong())?;
            Ok(key)
        }
    }
}

/// The PEM text for a public-key algorithm, refusing a secret, private keys and unexpected labels.
fn public_pem<'a>(
    alg: JwtAlgorithm,
    secret: Option<&str>,
    pem: Option<&'a str>,
    labels: &[&str],
) -> Result<&'a str, String> {
    if secret.is_some() {
        return Err(format!(
            "`secret` is for HS* algorithms; {alg} uses public_key_pem"
        ));
    }
    let pem = pem.ok_or_else(|| format!("{alg} needs public_key_pem"))?;
    let label = pem_label(pem).ok_or_else(|| "public_key_pem is not PEM text".to_owned())?;
    if label.contains("PRIVATE") {
        return Err("public_key_pem holds a private key: configure the public key".to_owned());
    }
    if !labels.contains(&label) {
        let expected: Vec<String> = labels.iter().map(|l| format!("BEGIN {l}")).collect();
        return Err(format!(
            "public_key_pem for {alg} must be {}",
            expected.join(" or ")
        ));
    }
    Ok(pem)
}

/// The label of the first PEM block (`PUBLIC KEY` in `-----BEGIN PUBLIC KEY-----`).
fn pem_label(pem: &str) -> Option<&str> {
    const BEGIN: &str = "-----BEGIN ";
    let start = pem.find(BEGIN)? + BEGIN.len();
    let rest = pem.get(start..)?;
    let end = rest.find("-----")?;
    rest.get(..end)
}

/// Reads one DER element: `(tag, contents, rest)`.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (len_bytes, after) = rest.split_at_checked(count)?;
        rest = after;
        len_bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    let (contents, rest) = rest.split_at_checked(len)?;
    Some((tag, contents, rest))
}

/// Checks a PKCS#1 `RSAPublicKey` (`SEQUENCE { modulus INTEGER, publicExponent INTEGER }`):
/// a 2048 to 4096-bit modulus (RFC 7518 §3.3; the RustCrypto backend refuses larger ones) and
/// an odd exponent the backend accepts.
fn check_rsa_public_key(der: &[u8]) -> Result<(), String> {
    const NOT_RSA: &str = "public_key_pem is not a valid RSA public key";
    let (tag, body, rest) = der_element(der).ok_or(NOT_RSA)?;
    if tag != 0x30 || !rest.is_empty() {
        return Err(NOT_RSA.to_owned());
    }
    let (tag_n, modulus, body) = der_element(body).ok_or(NOT_RSA)?;
    let (tag_e, exponent, body) = der_element(body).ok_or(NOT_RSA)?;
    if tag_n != 0x02 || tag_e != 0x02 || !body.is_empty() {
        return Err(NOT_RSA.to_owned());
    }
    let strip = |v: &'_ [u8]| -> Vec<u8> { v.iter().copied().skip_while(|b| *b == 0).collect() };
    let modulus = strip(modulus);
    let bits = match modulus.first() {
        Some(top) => (modulus.len() - 1) * 8 + (8 - top.leading_zeros() as usize),
        None => 0,
    };
    if !(2048..=4096).contains(&bits) {
        return Err(format!(
            "the RSA public key has {bits} bits; 2048 to 4096 are required"
        ));
    }
    let exponent = strip(exponent);
    if exponent.len() > 8 {
        return Err(NOT_RSA.to_owned());
    }
    let e = exponent
        .iter()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if e < 3 || e % 2 == 0 || e > (1 << 33) - 1 {
        return Err(NOT_RSA.to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::Request;
    use jsonwebtoken::{encode, get_current_timestamp, EncodingKey, Header};
    use serde_json::{json, Value};

    // Throwaway key pairs generated with openssl for these tests only.
    const RSA_PRIVATE_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDWV54e655C2ElW\n\
ViUd84chBleyauVqBaRYi+LZ2JsZr0qEF3Wkhznhl1VVmNJB+imIiUx5nGrKpUgZ\n\
l8RgHcjFi7lbIoSffBBH7vy47mjokuiwUNTo/nmdGZIpGKSVxgDl+WtJDex6Ganb\n\
XYBzjvUwcb7/JdoddcS7ky4JNK38QFIpZGke06qU/7RJ0Ig4nxBlrCdbPgVLeWs1\n\
TlITNQYXMWkfxe7pgnTk1Uh6Y1N875vAIzpnrOk+fYYqn6eqQBSRQ86bMKguLk16\n\
sN4OZpPPjY2PH2Dwlt3giKXhDzDwVHR4P5qpVV8G9HObRZQ+JZjFnZPoWv+mTfX6\n\
k8gpyYQ/AgMBAAECggEAAyAQNgLrext1p23maO6szG95GLsGkQXldyENT0lF8/Si\n\
fxUiMv3K6PmVMV+ZxvFaaNI9Y1yMo8k0TcfMSsjEZDmPLi0kPZ1aekaZpipbvzvP\n\
a1GSZt9LlBSvgr6/GL4/oWPwC4bJu3ssmUeDBT6cOy3h+OhrGL1wtjCXnfXjZB5N\n\
th5Bqvrydo7ORsIyLIvnMnc3vnkOSbMVZU/bb76zp6T37SQRGsQzJamFI/NEslD+\n\
PqNMy7ANmzlNj3Ra1VuW3mfXiEYMadeZuLl3xC34evAOraa9fgRPGv0tsyzVOZQf\n\
jHkxETpyuyue0otfvZC6CXar2p/60lqAfnxGfV2JyQKBgQDvIrq6Z4PRlNA0u0+C\n\
9mkWFDZvzWGxu7H0kiEHM7GLDuBw9Poo3Mp57Rl8vRd4NL2+UEFB3mknf2NvP49N\n\
mzJo+SHpwFOCnALkSYOEIbDUP6h+YjEgibfVAkcIxb8W29EvrykrqJP6C/HWTc09\n\
oIXRKXDLy9b9xZqy19cXUVREGwKBgQDldUbiPjVSQ3jLfWJ/aiVcKCsRsMelrpCh\n\
+E1a5phYr73Qhs2fGGzC3Cb4spXkbOdt29rGQBdb+/CpJKW52oH+fggxI09RnOHH\n\
LVZmdRrDG46+k53Xo/fNUGIc/ij+6Wbp2FAUQ0lsWrXX2kH0T86nho2QAIuUj43L\n\
9fG9/hJarQKBgHHN8FmHq+cQ0ClYPxXPWOGGCwYYEvc3oRAIfyljQ4ovMUbwfyD1\n\
OnLeEHQZtVKinu40WWoUg6ylZlfqQrOnOU1VyvroaZXN0157UdiPBA1uoixLZJ/c\n\
ip0XsWCOY0ton1v3GzvIxWuJRbU8X4GFpEmPVDvYrV8mLGIScC2LqfOjAoGAONMQ\n\
WNsbDWJUOeC1UeSRl/8Cm4DyEF/oxZPeZFKTC/OJyGh555p+5Mrsg86GPGmT7qrx\n\
xQL+RfNgqCLBQAOTCdlgYfrim82ERHU/3mPF2ueqNBwOjOa4aYosog13TZmzuNmv\n\
CzWWq1TTj78ncj+JaAd0a2MXLhVXAlnIIksXdIkCgYEA0V99hCL+rVUTVEcd+mh5\n\
KBKoJ3MBsop0ugGx3hlyTZgDHGYasN75LoIqCAOSMBUBGgZJBJp1Nhsx15mMDWCE\n\
22jiO0aXWLVS+I+dDH7xvCyV70/SYI8qINSG/MzgEFkOnZiT2s/YTqUBKx9W0mfK\n\
m2jCEiGnux15iTgj+86BTF4=\n\
-----END PRIVATE KEY-----\n\
";
    const RSA_PUBLIC_PEM: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA1leeHuueQthJVlYlHfOH\n\
IQZXsmrlagWkWIvi2dibGa9KhBd1pIc54ZdVVZjSQfopiIlMeZxqyqVIGZfEYB3I\n\
xYu5WyKEn3wQR+78uO5o6JLosFDU6P55nRmSKRiklcYA5flrSQ3sehmp212Ac471\n\
MHG+/yXaHXXEu5MuCTSt/EBSKWRpHtOqlP+0SdCIOJ8QZawnWz4FS3lrNU5SEzUG\n\
FzFpH8Xu6YJ05NVIemNTfO+bwCM6Z6zpPn2GKp+nqkAUkUPOmzCoLi5NerDeDmaT\n\
z42Njx9g8Jbd4Iil4Q8w8FR0eD+aqVVfBvRzm0WUPiWYxZ2T6Fr/pk31+pPIKcmE\n\
PwIDAQAB\n\
-----END PUBLIC KEY-----\n\
";
    const RSA_1024_PUBLIC_PEM: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC9+t58Z4A/nuZ0urS7KezzR0gW\n\
Uf/F+J87eWkG6Okbso1SzQAQyAjx14l+FoBATznfR27pQr7KO9O6z4FS1aTu9C6q\n\
1XaEZZ/CPEsPjjfZinYlDFUuKAg1Ka9HItMesJUPD+h/Ldb2bSZmJK+sHAbHqFxw\n\
3huaeFm5ROvENorg+wIDAQAB\n\
-----END PUBLIC KEY-----\n\
";
    const EC_P256_PRIVATE_PEM: &str = "\
-----BEGIN PRIVATE KEY-----\n\
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgfRHwZh5f0h6QwLQt\n\
Wg+qk9vxx+yQ0kz00Aw5xs8wnFqhRANCAARUWMWN0TJDNnINVYTL0OIQh+0/QagT\n\
SdD8At0qAwvkWPZUS1Br97vsIdEHf0QkcXfoGNJQktqLJmIjuN08aWY2\n\
-----END PRIVATE KEY-----\n\
";
    const EC_P256_PUBLIC_PEM: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEVFjFjdEyQzZyDVWEy9DiEIftP0Go\n\
E0nQ/ALdKgML5Fj2VEtQa/e77CHRB39EJHF36BjSUJLaiyZiI7jdPGlmNg==\n\
-----END PUBLIC KEY-----\n\
";
    const EC_P384_PUBLIC_PEM: &str = "\
-----BEGIN PUBLIC KEY-----\n\
MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAEAzGEh8jMNxxJDwZaCuKmJNpz8iqvcyte\n\
niks8Op6f92sZNAKHzK1ezQD2jz9AtvN2uwLmwM3nnjAKNl47idZQXE2+ByeMHmp\n\
zBiYnF8y9LBzI2/2Os6EU5Eb7HU7yv/I\n\
-----END PUBLIC KEY-----\n\
";

    const KEY_A: &str = "alpha-key-0123456789";
    const KEY_B: &str = "bravo-key-0123456789";
    const KEY_C: &str = "charlie-key-0123456789";
    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn head(headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().uri("/v1/embed");
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn three_keys() -> ApiKeys {
        ApiKeys::new([
            ("alpha".to_owned(), KEY_A.to_owned()),
            ("bravo".to_owned(), KEY_B.to_owned()),
            ("charlie".to_owned(), KEY_C.to_owned()),
        ])
        .unwrap()
    }

    fn subject(result: Result<Principal, AuthFailure>) -> String {
        result.unwrap().subject
    }

    fn invalid(result: Result<Principal, AuthFailure>) -> String {
        match result {
            Err(AuthFailure::Invalid(msg)) => msg,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    // ----- API keys --------------------------------------------------------------------------

    #[test]
    fn api_key_missing_is_missing() {
        let keys = three_keys();
        assert_eq!(
            keys.authenticate(&head(&[])),
            Err(AuthFailure::Missing(API_KEY_MISSING.to_owned()))
        );
        // Blank header values count as absent.
        assert!(matches!(
            keys.authenticate(&head(&[("x-api-key", "  "), ("authorization", "Bearer ")])),
            Err(AuthFailure::Missing(_))
        ));
    }

    #[test]
    fn api_key_wrong_is_invalid_via_both_headers() {
        let keys = three_keys();
        let wrong = "wrong-key-0123456789";
        for headers in [
            [("x-api-key", wrong)],
            [("authorization", &*format!("Bearer {wrong}"))],
        ] {
            let msg = invalid(keys.authenticate(&head(&headers)));
            assert_eq!(msg, API_KEY_INVALID);
            assert!(!msg.contains(wrong));
        }
        // A prefix or extension of a real key is not accepted.
        assert!(keys
            .authenticate(&head(&[("x-api-key", &KEY_A[..17])]))
            .is_err());
        let longer = format!("{KEY_A}x");
        assert!(keys.authenticate(&head(&[("x-api-key", &longer)])).is_err());
    }

    #[test]
    fn api_key_right_via_both_headers() {
        let keys = three_keys();
        let principal = keys.authenticate(&head(&[("X-API-Key", KEY_A)])).unwrap();
        assert_eq!(
            principal,
            Principal {
                scheme: "api_key",
                subject: "alpha".to_owned(),
                claims: None
            }
        );
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let value = format!("{scheme}   {KEY_B} ");
            assert_eq!(
                subject(keys.authenticate(&head(&[("authorization", &value)]))),
                "bravo"
            );
        }
        let tab = format!("Bearer\t{KEY_C}");
        assert_eq!(
            subject(keys.authenticate(&head(&[("authorization", &tab)]))),
            "charlie"
        );
        assert_eq!(keys.scheme(), "api_key");
    }

    #[test]
    fn api_key_every_configured_key_is_checked() {
        // The comparison loop runs over every key; each key must admit with its own name,
        // wherever it sits in the list.
        let keys = three_keys();
        for (key, name) in [(KEY_A, "alpha"), (KEY_B, "bravo"), (KEY_C, "charlie")] {
            assert_eq!(
                subject(keys.authenticate(&head(&[("x-api-key", key)]))),
                name
            );
        }
        let digest = |k: &str| -> [u8; 32] { Sha256::digest(k.as_bytes()).into() };
        assert_eq!(keys.find(&digest(KEY_A)), Some(0));
        assert_eq!(keys.find(&digest(KEY_B)), Some(1));
        assert_eq!(keys.find(&digest(KEY_C)), Some(2));
        assert_eq!(keys.find(&digest("nope-nope-nope-nope")), None);
        // The stored form is a digest, never the key itself.
        assert!(keys.digests.iter().all(|d| d.len() == 32));
    }

    #[test]
    fn api_key_header_precedence_and_refusals() {
        let keys = three_keys();
        // X-API-Key wins; an unrelated Authorization header does not interfere.
        let both = head(&[
            ("x-api-key", KEY_A),
            ("authorization", "Basic dXNlcjpwYXNz"),
        ]);
        assert_eq!(subject(keys.authenticate(&both)), "alpha");
        // A wrong X-API-Key is not rescued by a right bearer token.
        let bearer = format!("Bearer {KEY_B}");
        let mixed = head(&[
            ("x-api-key", "wrong-key-0123456789"),
            ("authorization", &bearer),
        ]);
        assert!(matches!(
            keys.authenticate(&mixed),
            Err(AuthFailure::Invalid(_))
        ));
        // Non-Bearer schemes and repeated headers are refused without echoing anything.
        let msg = invalid(keys.authenticate(&head(&[("authorization", "Basic dXNlcjpwYXNz")])));
        assert!(msg.contains("Bearer") && !msg.contains("dXNlcjpwYXNz"));
        let msg = invalid(keys.authenticate(&head(&[("x-api-key", KEY_A), ("x-api-key", KEY_B)])));
        assert!(!msg.contains(KEY_A) && !msg.contains(KEY_B));
    }

    #[test]
    fn api_keys_new_refuses_bad_sets() {
        let pair = |n: &str, k: &str| (n.to_owned(), k.to_owned());
        assert!(ApiKeys::new(Vec::new()).is_err());
        let err = ApiKeys::new([pair("a", "")]).unwrap_err();
        assert!(err.contains("empty"), "{err}");
        let err = ApiKeys::new([pair("a", "short-key-15byt")]).unwrap_err();
        assert!(
            err.contains("16") && !err.contains("short-key-15byt"),
            "{err}"
        );
        assert!(ApiKeys::new([pair("a", "exactly-16-bytes")]).is_ok());
        let err = ApiKeys::new([pair("a", KEY_A), pair("a", KEY_B)]).unwrap_err();
        assert!(err.contains("more than once"), "{err}");
        let err = ApiKeys::new([pair("a", KEY_A), pair("b", KEY_A)]).unwrap_err();
        assert!(err.contains("same key") && !err.contains(KEY_A), "{err}");
        assert!(ApiKeys::new([pair(" ", KEY_A)]).is_err());
        assert!(ApiKeys::new([pair("a\nb", KEY_A)]).is_err());
    }

    #[test]
    fn api_keys_parse_list() {
        let entries: Vec<String> = [
            format!("ci:{KEY_A}"),
            KEY_B.to_owned(),
            format!("  ops : {KEY_C}  "),
            "delta-key-0123456789".to_owned(),
        ]
        .into();
        let keys = ApiKeys::parse_list(&entries).unwrap();
        assert_eq!(
            keys.names().collect::<Vec<_>>(),
            ["ci", "key2", "ops", "key4"]
        );
        assert_eq!(
            subject(keys.authenticate(&head(&[("x-api-key", KEY_C)]))),
            "ops"
        );
        assert_eq!(
            subject(keys.authenticate(&head(&[("x-api-key", KEY_B)]))),
            "key2"
        );

        let bare: Vec<String> = vec![KEY_A.to_owned(), KEY_B.to_owned()];
        let keys = ApiKeys::parse_list(&bare).unwrap();
        assert_eq!(keys.names().collect::<Vec<_>>(), ["key1", "key2"]);

        assert!(ApiKeys::parse_list(&["".to_owned()]).is_err());
        assert!(ApiKeys::parse_list(&[format!(":{KEY_A}")]).is_err());
        let err = ApiKeys::parse_list(&["ci:tooshort".to_owned()]).unwrap_err();
        assert!(!err.contains("tooshort"), "{err}");
        assert!(ApiKeys::parse_list(&[]).is_err());
    }

    #[test]
    fn api_keys_debug_shows_names_only() {
        let keys = three_keys();
        let debug = format!("{keys:?} {keys:#?}");
        for key in [KEY_A, KEY_B, KEY_C] {
            assert!(!debug.contains(key), "{debug}");
        }
        assert!(
            debug.contains("alpha") && debug.contains("charlie"),
            "{debug}"
        );
    }

    // ----- JWT -------------------------------------------------------------------------------

    fn hs_config() -> JwtConfig {
        JwtConfig {
            secret: Some(SECRET.to_owned()),
            ..JwtConfig::default()
        }
    }

    fn verifier(cfg: JwtConfig) -> JwtVerifier {
        JwtVerifier::new(cfg).unwrap()
    }

    fn hs_token(alg: Algorithm, secret: &str, claims: &Value) -> String {
        encode(
            &Header::new(alg),
            claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn hs256(claims: &Value) -> String {
        hs_token(Algorithm::HS256, SECRET, claims)
    }

    fn bearer(token: &str) -> Parts {
        head(&[("authorization", &format!("Bearer {token}"))])
    }

    fn now() -> u64 {
        get_current_timestamp()
    }

    /// Refused as Invalid, with a message that does not echo the token.
    fn refused(v: &JwtVerifier, token: &str) -> String {
        let msg = invalid(v.authenticate(&bearer(token)));
        assert!(!msg.contains(token), "{msg}");
        msg
    }

    #[test]
    fn jwt_config_defaults_and_unknown_fields() {
        let cfg: JwtConfig = serde_json::from_value(json!({ "secret": SECRET })).unwrap();
        assert_eq!(cfg.algorithm, JwtAlgorithm::Hs256);
        assert_eq!(cfg.leeway_s, 30);
        assert!(cfg.require_exp);
        assert_eq!(cfg.max_token_bytes, 8192);
        assert!(cfg.issuer.is_none() && cfg.audience.is_none() && cfg.public_key_pem.is_none());
        let cfg: JwtConfig = serde_json::from_value(json!({
            "algorithm": "ES384", "public_key_pem": "x", "issuer": "i",
            "audience": ["a", "b"], "leeway_s": 5, "require_exp": false, "max_token_bytes": 100
        }))
        .unwrap();
        assert_eq!(cfg.algorithm, JwtAlgorithm::Es384);
        assert_eq!(cfg.audience, Some(vec!["a".to_owned(), "b".to_owned()]));
        assert!(serde_json::from_value::<JwtConfig>(json!({ "secrett": SECRET })).is_err());
        assert!(serde_json::from_value::<JwtConfig>(json!({ "algorithm": "none" })).is_err());
        assert!(serde_json::from_value::<JwtConfig>(json!({ "algorithm": "PS256" })).is_err());
    }

    #[test]
    fn jwt_debug_hides_secret() {
        let cfg = hs_config();
        let v = verifier(cfg.clone());
        let debug = format!("{cfg:?} {cfg:#?} {v:?} {v:#?}");
        assert!(!debug.contains(SECRET), "{debug}");
        assert!(
            debug.contains("HS256") || debug.contains("Hs256"),
            "{debug}"
        );
    }

    #[test]
    fn jwt_valid_hs256_token_is_admitted_with_claims() {
        let v = verifier(hs_config());
        let claims = json!({ "sub": "user-7", "exp": now() + 600, "scope": ["embed"], "n": 3 });
        let principal = v.authenticate(&bearer(&hs256(&claims))).unwrap();
        assert_eq!(principal.scheme, "jwt");
        assert_eq!(principal.subject, "user-7");
        assert_eq!(principal.claims, Some(claims));
        assert_eq!(v.scheme(), "jwt");
        // Lower-case scheme works too; a token without sub has an empty subject.
        let token = hs256(&json!({ "exp": now() + 600 }));
        let lower = head(&[("authorization", &format!("bearer {token}"))]);
        assert_eq!(v.authenticate(&lower).unwrap().subject, "");
    }

    #[test]
    fn jwt_missing_header_is_missing() {
        let v = verifier(hs_config());
        assert_eq!(
            v.authenticate(&head(&[])),
            Err(AuthFailure::Missing(JWT_MISSING.to_owned()))
        );
        assert!(matches!(
            v.authenticate(&head(&[("authorization", "Bearer")])),
            Err(AuthFailure::Missing(_))
        ));
        // An API-key header is not a bearer token.
        assert!(matches!(
            v.authenticate(&head(&[("x-api-key", KEY_A)])),
            Err(AuthFailure::Missing(_))
        ));
        let msg = invalid(v.authenticate(&head(&[("authorization", "Basic dXNlcjpwYXNz")])));
        assert!(msg.contains("Bearer"), "{msg}");
    }

    #[test]
    fn jwt_expired_token_is_refused() {
        let v = verifier(hs_config());
        let msg = refused(&v, &hs256(&json!({ "sub": "u", "exp": now() - 3600 })));
        assert!(msg.contains("expired"), "{msg}");
        // Within the 30 s leeway it still passes.
        assert!(v
            .authenticate(&bearer(&hs256(&json!({ "exp": now() - 10 }))))
            .is_ok());
    }

    #[test]
    fn jwt_future_nbf_is_refused() {
        let v = verifier(hs_config());
        let msg = refused(
            &v,
            &hs256(&json!({ "exp": now() + 7200, "nbf": now() + 3600 })),
        );
        assert!(msg.contains("not valid yet"), "{msg}");
        let ok = hs256(&json!({ "exp": now() + 7200, "nbf": now() + 5 }));
        assert!(v.authenticate(&bearer(&ok)).is_ok());
    }

    #[test]
    fn jwt_exp_requirement() {
        let v = verifier(hs_config());
        let msg = refused(&v, &hs256(&json!({ "sub": "u" })));
        assert!(msg.contains("`exp`") && msg.contains("required"), "{msg}");
        let lax = verifier(JwtConfig {
            require_exp: false,
            ..hs_config()
        });
        assert!(lax
            .authenticate(&bearer(&hs256(&json!({ "sub": "u" }))))
            .is_ok());
        // exp is still checked when present.
        assert!(lax
            .authenticate(&bearer(&hs256(&json!({ "exp": now() - 3600 }))))
            .is_err());
        // A non-numeric exp is malformed.
        let msg = refused(&v, &hs256(&json!({ "exp": "tomorrow" })));
        assert!(msg.contains("exp"), "{msg}");
    }

    #[test]
    fn jwt_audience_is_enforced() {
        let v = verifier(JwtConfig {
            audience: Some(vec!["facegate".to_owned(), "facegate-b".to_owned()]),
            ..hs_config()
        });
        let exp = now() + 600;
        assert!(v
            .authenticate(&bearer(&hs256(&json!({ "exp": exp, "aud": "facegate" }))))
            .is_ok());
        assert!(v
            .authenticate(&bearer(&hs256(
                &json!({ "exp": exp, "aud": ["x", "facegate-b"] })
            )))
            .is_ok());
        let msg = refused(&v, &hs256(&json!({ "exp": exp, "aud": "other" })));
        assert!(msg.contains("audience"), "{msg}");
        let msg = refused(&v, &hs256(&json!({ "exp": exp })));
        assert!(msg.contains("`aud`"), "{msg}");
        // Without a configured audience, a token addressed to someone is refused.
        let open = verifier(hs_config());
        let msg = refused(&open, &hs256(&json!({ "exp": exp, "aud": "other" })));
        assert!(msg.contains("audience"), "{msg}");
    }

    #[test]
    fn jwt_issuer_is_enforced() {
        let v = verifier(JwtConfig {
            issuer: Some("https://idp.example".to_owned()),
            ..hs_config()
        });
        let exp = now() + 600;
        let good = hs256(&json!({ "exp": exp, "iss": "https://idp.example" }));
        assert!(v.authenticate(&bearer(&good)).is_ok());
        let msg = refused(
            &v,
            &hs256(&json!({ "exp": exp, "iss": "https://evil.example" })),
        );
        assert!(msg.contains("issuer"), "{msg}");
        let msg = refused(&v, &hs256(&json!({ "exp": exp })));
        assert!(msg.contains("`iss`"), "{msg}");
    }

    #[test]
    fn jwt_wrong_secret_is_refused() {
        let v = verifier(hs_config());
        let token = hs_token(
            Algorithm::HS256,
            "another-secret-another-secret-xx",
            &json!({ "exp": now() + 600 }),
        );
        let msg = refused(&v, &token);
        assert!(msg.contains("signature"), "{msg}");
        // Tampered payload with the original signature.
        let good = hs256(&json!({ "sub": "a", "exp": now() + 600 }));
        let forged = hs256(&json!({ "sub": "admin", "exp": now() + 600 }));
        let mut parts: Vec<&str> = forged.split('.').collect();
        parts[2] = good.split('.').nth(2).unwrap();
        assert!(refused(&v, &parts.join(".")).contains("signature"));
    }

    #[test]
    fn jwt_algorithm_mismatch_is_refused() {
        let v = verifier(hs_config());
        let token = hs_token(Algorithm::HS384, SECRET, &json!({ "exp": now() + 600 }));
        let msg = refused(&v, &token);
        assert!(msg.contains("HS256"), "{msg}");
        // alg "none" with an empty signature.
        let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0"; // {"alg":"none","typ":"JWT"}
        let good = hs256(&json!({ "sub": "admin", "exp": now() + 600 }));
        let payload = good.split('.').nth(1).unwrap();
        assert!(v
            .authenticate(&bearer(&format!("{header}.{payload}.")))
            .is_err());
    }

    #[test]
    fn jwt_rs256_refuses_hmac_signed_with_public_key() {
        let v = verifier(JwtConfig {
            algorithm: JwtAlgorithm::Rs256,
            public_key_pem: Some(RSA_PUBLIC_PEM.to_owned()),
            ..JwtConfig::default()
        });
        let forged = hs_token(
            Algorithm::HS256,
            RSA_PUBLIC_PEM,
            &json!({ "exp": now() + 600 }),
        );
        let msg = refused(&v, &forged);
        assert!(msg.contains("RS256"), "{msg}");
        let claims = json!({ "sub": "svc", "exp": now() + 600 });
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).unwrap();
        let token = encode(&Header::new(Algorithm::RS256), &claims, &key).unwrap();
        assert_eq!(v.authenticate(&bearer(&token)).unwrap().subject, "svc");
        // Same key, other RSA algorithm: refused.
        let rs512 = encode(&Header::new(Algorithm::RS512), &claims, &key).unwrap();
        assert!(refused(&v, &rs512).contains("RS256"));
    }

    #[test]
    fn jwt_es256_token_is_admitted() {
        let v = verifier(JwtConfig {
            algorithm: JwtAlgorithm::Es256,
            public_key_pem: Some(EC_P256_PUBLIC_PEM.to_owned()),
            ..JwtConfig::default()
        });
        let claims = json!({ "sub": "edge", "exp": now() + 600 });
        let key = EncodingKey::from_ec_pem(EC_P256_PRIVATE_PEM.as_bytes()).unwrap();
        let token = encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap();
        assert_eq!(v.authenticate(&bearer(&token)).unwrap().subject, "edge");
        // The signature does not carry over to other claims.
        let forged = encode(
            &Header::new(Algorithm::ES256),
            &json!({ "sub": "root", "exp": now() + 600 }),
            &key,
        )
        .unwrap();
        let mut parts: Vec<&str> = forged.split('.').collect();
        parts[2] = token.split('.').nth(2).unwrap();
        assert!(refused(&v, &parts.join(".")).contains("signature"));
    }

    #[test]
    fn jwt_oversized_token_is_refused() {
        let v = verifier(hs_config());
        let big = hs256(&json!({ "exp": now() + 600, "pad": "x".repeat(9000) }));
        let msg = refused(&v, &big);
        assert!(msg.contains("8192"), "{msg}");
        let small = verifier(JwtConfig {
            max_token_bytes: 64,
            ..hs_config()
        });
        let msg = refused(&small, &hs256(&json!({ "exp": now() + 600 })));
        assert!(msg.contains("64 bytes"), "{msg}");
    }

    #[test]
    fn jwt_malformed_tokens_are_refused() {
        let v = verifier(hs_config());
        for token in [
            "abc",
            "a.b",
            "a.b.c",
            "a.b.c.d",
            "....",
            "eyJ.eyJ.sig",
            "Zm9v.YmFy.YmF6",
        ] {
            assert_eq!(refused(&v, token), "the token is malformed", "{token}");
        }
        // A token with a non-object claims set, or a non-string sub.
        let array = hs256(&json!([1, 2]));
        assert!(v.authenticate(&bearer(&array)).is_err());
        let msg = refused(&v, &hs256(&json!({ "exp": now() + 600, "sub": 42 })));
        assert!(msg.contains("sub"), "{msg}");
    }

    #[test]
    fn jwt_new_checks_key_material() {
        let hs = |alg, secret: &str| {
            JwtVerifier::new(JwtConfig {
                algorithm: alg,
                secret: Some(secret.to_owned()),
                ..JwtConfig::default()
            })
        };
        let err = hs(JwtAlgorithm::Hs256, &SECRET[..31]).unwrap_err();
        assert!(err.contains("32") && !err.contains(&SECRET[..31]), "{err}");
        assert!(hs(JwtAlgorithm::Hs384, SECRET).is_err());
        assert!(hs(JwtAlgorithm::Hs384, &"s".repeat(48)).is_ok());
        assert!(hs(JwtAlgorithm::Hs512, &"s".repeat(63)).is_err());
        assert!(hs(JwtAlgorithm::Hs512, &"s".repeat(64)).is_ok());
        assert!(JwtVerifier::new(JwtConfig::default()).is_err());
        assert!(hs(JwtAlgorithm::Rs256, SECRET).is_err());

        let pk = |alg, pem: &str| {
            JwtVerifier::new(JwtConfig {
                algorithm: alg,
                public_key_pem: Some(pem.to_owned()),
                ..JwtConfig::default()
            })
        };
        assert!(pk(JwtAlgorithm::Hs256, RSA_PUBLIC_PEM).is_err());
        for alg in [
            JwtAlgorithm::Rs256,
            JwtAlgorithm::Rs384,
            JwtAlgorithm::Rs512,
        ] {
            assert!(pk(alg, RSA_PUBLIC_PEM).is_ok());
        }
        let err = pk(JwtAlgorithm::Rs256, RSA_1024_PUBLIC_PEM).unwrap_err();
        assert!(err.contains("1024"), "{err}");
        let err = pk(JwtAlgorithm::Rs256, RSA_PRIVATE_PEM).unwrap_err();
        assert!(err.contains("private"), "{err}");
        assert!(pk(JwtAlgorithm::Rs256, EC_P256_PUBLIC_PEM).is_err());
        assert!(pk(JwtAlgorithm::Rs256, "not pem").is_err());
        assert!(pk(JwtAlgorithm::Es256, EC_P256_PUBLIC_PEM).is_ok());
        assert!(pk(JwtAlgorithm::Es384, EC_P384_PUBLIC_PEM).is_ok());
        let err = pk(JwtAlgorithm::Es256, EC_P384_PUBLIC_PEM).unwrap_err();
        assert!(err.contains("P-256"), "{err}");
        assert!(pk(JwtAlgorithm::Es384, EC_P256_PUBLIC_PEM).is_err());
        assert!(pk(JwtAlgorithm::Es256, RSA_PUBLIC_PEM).is_err());
        assert!(pk(JwtAlgorithm::Es256, EC_P256_PRIVATE_PEM).is_err());
        let both = JwtVerifier::new(JwtConfig {
            algorithm: JwtAlgorithm::Rs256,
            secret: Some(SECRET.to_owned()),
            public_key_pem: Some(RSA_PUBLIC_PEM.to_owned()),
            ..JwtConfig::default()
        });
        assert!(both.is_err());
    }

    #[test]
    fn jwt_new_checks_limits() {
        assert!(JwtVerifier::new(JwtConfig {
            max_token_bytes: 0,
            ..hs_config()
        })
        .is_err());
        assert!(JwtVerifier::new(JwtConfig {
            leeway_s: u64::MAX,
            ..hs_config()
        })
        .is_err());
        assert!(JwtVerifier::new(JwtConfig {
            audience: Some(vec![]),
            ..hs_config()
        })
        .is_err());
        assert!(JwtVerifier::new(JwtConfig {
            issuer: Some(String::new()),
            ..hs_config()
        })
        .is_err());
    }

    #[test]
    fn authenticators_are_object_safe() {
        let hooks: Vec<Box<dyn Authenticator>> =
            vec![Box::new(three_keys()), Box::new(verifier(hs_config()))];
        let names: Vec<_> = hooks.iter().map(|h| h.scheme()).collect();
        assert_eq!(names, ["api_key", "jwt"]);
    }
}
