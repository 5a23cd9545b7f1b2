//! The assembly: the one configuration struct, the dialects the binary serves and the
//! registry built from them. This is the only module that names every dialect; adding one is
//! a section here, a line in [`dialects`] and its module under `src/api/`
//! (`docs/adding-a-dialect.md`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use clap::Args;
use serde::{Deserialize, Serialize};

use crate::api::auth::ApiKeys;
use crate::api::bioid::{BioId, BioidConfig};
use crate::api::docs::{self, SpecCell};
use crate::api::iad::capture::CaptureVerifier;
use crate::api::iad::{Iad, IadArgs, IadConfig};
use crate::api::idlive::{IdLive, IdliveConfig};
use crate::api::knomi::{Knomi, KnomiArgs, KnomiConfig};
use crate::api::native::Native;
use crate::api::openapi;
use crate::api::oz::{Oz, OzConfig};
use crate::api::{Dialect, Edge};
use crate::batcher::{Batcher, Loader};
use crate::bi::{BiArgs, BiConfig, BiStore, BiWriter, SqliteStore};
use crate::config::{ConfigFile, EngineArgs, ServerArgs, ServerConfig};
use crate::engine::{Engine, EngineConfig};
use crate::nn::device::DeviceChoice;
use crate::replay::postgres::PgLedger;
use crate::replay::{MemoryLedger, ReplayLedger};
use crate::server::{self, Authenticator, Registry, ServerHandle};
use crate::{Error, Result};

/// The sections of the configuration file besides the engine's top-level keys.
pub const SECTIONS: [&str; 8] = [
    "server", "auth", "bi", "idlive", "iad", "bioid", "knomi", "oz",
];

/// The whole configuration: the TOML file parsed once into this struct (unknown keys are
/// errors naming the key; every section takes any subset of its keys), then flags and
/// environment over it.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Engine settings: the file's top-level keys (`models_dir`, `[detection]`, ...).
    pub engine: EngineConfig,
    /// `[server]`: transport, limits, batching, bare-path owners.
    pub server: ServerConfig,
    /// `[auth]`: credentials the dialect routes require.
    pub auth: AuthConfig,
    /// `[bi]`: the ID R&D dialects' decision records.
    pub bi: BiConfig,
    /// `[idlive]`: the IDLive Face dialect.
    pub idlive: IdliveConfig,
    /// `[iad]` (and `[iad.capture]`): the IAD dialect.
    pub iad: IadConfig,
    /// `[bioid]`: the BioID BWS dialect (its clients and their keys).
    pub bioid: BioidConfig,
    /// `[knomi]`: the Aware Knomi dialect (clock bounds, package key, bounds).
    pub knomi: KnomiConfig,
    /// `[oz]`: the Oz API Lite dialect (match thresholds, spoof threshold, media bounds).
    pub oz: OzConfig,
}

impl Config {
    /// Parses configuration text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        Self::from_file(ConfigFile::parse(text, origin)?)
    }

    /// Reads the file at `path`, or the embedded defaults without one.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        match path {
            Some(p) => Self::from_file(ConfigFile::read(p)?),
            None => Ok(Config::default()),
        }
    }

    fn from_file(mut f: ConfigFile) -> Result<Config> {
        Ok(Config {
            server: f.section("server")?,
            auth: f.section("auth")?,
            bi: f.section("bi")?,
            idlive: f.section("idlive")?,
            iad: f.section("iad")?,
            bioid: f.section("bioid")?,
            knomi: f.section("knomi")?,
            oz: f.section("oz")?,
            engine: f.rest(&SECTIONS)?,
        })
    }
}

/// `[auth]`: authentication of the dialect routes (`/health` and `/metrics` stay open).
/// Its `Debug` shows how many keys there are, never the keys.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// API keys, each `NAME:KEY`, a bare `KEY` (at least 16 bytes) or `NAME:sha256:HEX`
    /// (the key's SHA-256 only, so the file holds no key; `facegate api-key-hash`). When any
    /// is set, every dialect route requires one (`X-API-Key` or `Authorization: Bearer`);
    /// keys are never logged.
    pub api_keys: Vec<String>,
    /// Keys of one dialect (`[auth.dialect_keys] idlive = ["..."]`), same forms: that
    /// dialect's routes require one of these or of `api_keys`; a dialect without its own
    /// keys follows `api_keys`.
    pub dialect_keys: BTreeMap<String, Vec<String>>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field(
                "api_keys",
                &format_args!("<{} redacted>", self.api_keys.len()),
            )
            .field(
                "dialect_keys",
                &self
                    .dialect_keys
                    .iter()
                    .map(|(d, k)| (d.as_str(), format!("<{} redacted>", k.len())))
                    .collect::<BTreeMap<_, _>>(),
            )
            .finish()
    }
}

impl AuthConfig {
    /// The authenticator these settings ask for (None: routes are open).
    pub fn authenticator(&self) -> Result<Option<Arc<dyn Authenticator>>> {
        if self.api_keys.is_empty() {
            return Ok(None);
        }
        let keys = ApiKeys::parse_list(&self.api_keys)
            .map_err(|e| Error::InvalidArgument(format!("auth.api_keys: {e}")))?;
        Ok(Some(Arc::new(keys)))
    }

    /// The authenticator of `dialect`'s routes: its own keys and the global ones, or the
    /// global ones alone (None: open).
    pub fn authenticator_for(&self, dialect: &str) -> Result<Option<Arc<dyn Authenticator>>> {
        let Some(own) = self.dialect_keys.get(dialect) else {
            return self.authenticator();
        };
        let all: Vec<String> = self.api_keys.iter().chain(own).cloned().collect();
        let keys = ApiKeys::parse_list(&all).map_err(|e| {
            Error::InvalidArgument(format!(
                "auth.dialect_keys.{dialect} with auth.api_keys: {e}"
            ))
        })?;
        Ok(Some(Arc::new(keys)))
    }
}

/// Flags and environment of `facegate serve`, each over its section of the file (no `Debug`:
/// it holds API keys).
#[derive(Clone, Args)]
pub struct ServeArgs {
    /// Server options.
    #[command(flatten)]
    pub server: ServerArgs,
    /// Engine options (and `--config`).
    #[command(flatten)]
    pub engine: EngineArgs,
    /// API keys the dialect routes require, `NAME:KEY` or `KEY` (comma-separated in the
    /// environment) [default: none, routes open].
    #[arg(
        long = "api-key",
        env = "FACEGATE_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,
    /// BI record options.
    #[command(flatten)]
    pub bi: BiArgs,
    /// Licence expiry IDLive reports, ISO 8601 [default: 2999-12-31T23:59:59Z].
    #[arg(
        long = "idlive-license-expiration",
        env = "FACEGATE_IDLIVE_LICENSE_EXPIRATION"
    )]
    pub idlive_license_expiration: Option<String>,
    /// IAD options.
    #[command(flatten)]
    pub iad: IadArgs,
    /// BWS clients of the BioID dialect, `CLIENT_ID=KEY` with the client's base64 key
    /// (comma-separated in the environment) [default: none, every BioID request refused].
    #[arg(
        long = "bioid-clients",
        env = "FACEGATE_BIOID_CLIENTS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub bioid_clients: Vec<String>,
    /// Knomi options.
    #[command(flatten)]
    pub knomi: KnomiArgs,
}

impl ServeArgs {
    /// The configuration in force: defaults < `--config` file < environment < flags.
    pub fn resolve(&self) -> Result<Config> {
        let mut cfg = Config::load(self.engine.config.as_deref())?;
        cfg.engine = self.engine.apply(cfg.engine)?;
        cfg.server = self.server.apply(cfg.server)?;
        if !self.api_keys.is_empty() {
            cfg.auth.api_keys = self.api_keys.clone();
        }
        cfg.auth.authenticator()?;
        cfg.bi = self.bi.apply(cfg.bi)?;
        if let Some(v) = &self.idlive_license_expiration {
            cfg.idlive.licensed.license_expiration = v.clone();
        }
        cfg.idlive.validate()?;
        cfg.iad = self.iad.apply(cfg.iad)?;
        if !self.bioid_clients.is_empty() {
            cfg.bioid.clients = self.bioid_clients.clone();
        }
        cfg.bioid.validate()?;
        cfg.knomi = self.knomi.apply(cfg.knomi)?;
        Ok(cfg)
    }
}

/// The engine configuration for the one-shot commands (`check`, `eval`, `compare`): the file's
/// engine keys (the whole file is still checked) under the flags.
pub fn engine_config(args: &EngineArgs) -> Result<EngineConfig> {
    args.apply(Config::load(args.config.as_deref())?.engine)
}

/// Services the dialects are built over.
#[derive(Default)]
pub struct Services {
    /// BI writer; `None` starts one over an in-memory store.
    pub bi: Option<Arc<BiWriter>>,
    /// Capture verifier for the IAD dialect; `None` leaves its bundle endpoints at 503.
    pub capture: Option<Arc<CaptureVerifier>>,
    /// The replay ledger of Knomi's package keys; `None`: this process's memory. (The capture
    /// verifier carries its own, [`CaptureVerifier::with_ledger`].)
    pub ledger: Option<Arc<dyn ReplayLedger>>,
}

/// The stores `cfg` names: with a `postgres://` `bi.path`, BI records and the replay ledger
/// both in that database (one pool); otherwise SQLite and this process's memory.
pub fn open_stores(cfg: &BiConfig) -> Result<(Arc<dyn BiStore>, Arc<dyn ReplayLedger>)> {
    match cfg.postgres_url() {
        Some(url) => {
            let timeout = std::time::Duration::from_millis(cfg.db_timeout_ms);
            let pg = Arc::new(crate::pg::Pg::connect(url, cfg.pool, timeout)?);
            tracing::info!("BI records and replay ledger in {}", pg.name());
            let store = crate::bi::open_store(cfg, Some(Arc::clone(&pg)))?;
            Ok((store, Arc::new(PgLedger::new(pg))))
        }
        None => Ok((
            crate::bi::open_store(cfg, None)?,
            Arc::new(MemoryLedger::new()),
        )),
    }
}

/// Every dialect the binary serves, built from its section and the services. The metrics
/// recorder is installed first, so what the dialects export at start (their licence gauges)
/// is recorded.
pub fn dialects(cfg: &Config, services: Services) -> Result<Vec<Arc<dyn Dialect>>> {
    crate::telemetry::install();
    let bi = match services.bi {
        Some(b) => b,
        None => {
            let store: Arc<dyn BiStore> = Arc::new(SqliteStore::in_memory()?);
            Arc::new(BiWriter::start(store, &BiConfig::default())?)
        }
    };
    Ok(vec![
        Native::new(),
        IdLive::new(cfg.idlive.clone(), bi.clone())?,
        Iad::new(cfg.iad.clone(), services.capture, bi)?,
        BioId::new(cfg.bioid.clone())?,
        Knomi::new(cfg.knomi.clone(), services.ledger)?,
        Oz::new(cfg.oz.clone())?,
    ])
}

/// The registry of every route (server routes, the documentation and console routes, then each
/// dialect's) and the bare-path owners in force: each dialect's defaults, then the
/// configuration's `server.bare_owners`. With `server.docs`, the OpenAPI document of the
/// routes this registry serves is generated here (failing when a route is undescribed).
pub fn registry(
    cfg: &Config,
    dialects: &[Arc<dyn Dialect>],
) -> Result<(Registry, BTreeMap<String, String>)> {
    let known: Vec<&str> = dialects.iter().map(|d| d.dialect()).collect();
    if let Some(d) = cfg
        .auth
        .dialect_keys
        .keys()
        .find(|d| !known.contains(&d.as_str()))
    {
        return Err(Error::InvalidArgument(format!(
            "auth.dialect_keys: no dialect {d:?} (mounted: {})",
            known.join(", ")
        )));
    }
    let mut reg = Registry::new();
    reg.guard(Arc::new(server::MemoryBudget::new(
        cfg.server.max_body_bytes_held,
    )));
    reg.extend(server::server_routes());
    let spec = SpecCell::default();
    reg.extend(docs::routes(&spec, cfg.server.docs, cfg.server.console));
    let mut owners = BTreeMap::new();
    for d in dialects {
        for p in d.default_bare_paths() {
            owners
                .entry(p.to_string())
                .or_insert_with(|| d.dialect().to_string());
        }
        let edge = Edge {
            auth: cfg.auth.authenticator_for(d.dialect())?,
        };
        reg.extend(d.clone().routes(&edge));
    }
    owners.extend(cfg.server.bare_owners.clone());
    if cfg.server.docs {
        let served = reg.build(&owners).map_err(Error::InvalidArgument)?.served();
        let json = openapi::document(&served, &openapi::describe())
            .and_then(|api| openapi::to_json(&api))
            .map_err(|e| Error::Internal(format!("the OpenAPI document: {e}")))?;
        // A registry is built once; the cell was created above, so it is empty.
        let _ = spec.set(json.into());
    }
    Ok((reg, owners))
}

/// Starts the server for `cfg` in front of `batcher`, with the dialects over `services`.
pub async fn start(cfg: &Config, batcher: Batcher, services: Services) -> Result<ServerHandle> {
    let dialects = dialects(cfg, services)?;
    let (reg, owners) = registry(cfg, &dialects)?;
    let server_cfg = ServerConfig {
        bare_owners: owners,
        ..cfg.server.clone()
    };
    server::start(server_cfg, &reg, batcher).await
}

/// `facegate serve`: opens the BI store, sets the capture verifier up (the configured key, or
/// an ephemeral one), binds, loads the models in the background and serves until
/// One engine loader per device worker. With `device = "auto"` on a machine with several
/// GPUs, one per GPU: the first falls back to the CPU as usual, the others load on their GPU or
/// not at all (so that at most one worker serves on the CPU). Otherwise one loader.
pub fn engine_loaders(cfg: &EngineConfig) -> Vec<Loader> {
    let gpus = match cfg.device {
        DeviceChoice::Auto => crate::nn::device::cuda_device_count(),
        _ => 0,
    };
    let first = cfg.clone();
    let mut loaders: Vec<Loader> = vec![Box::new(move || {
        Engine::load_configured(first).map(Arc::new)
    })];
    for n in 1..gpus {
        let on = EngineConfig {
            device: DeviceChoice::Cuda(n),
            ..cfg.clone()
        };
        loaders.push(Box::new(move || Engine::load_on_device(on).map(Arc::new)));
    }
    loaders
}

/// SIGTERM/SIGINT.
pub async fn serve(cfg: Config) -> Result<()> {
    let bi_cfg = cfg.bi.clone();
    let (store, ledger) = tokio::task::spawn_blocking(move || open_stores(&bi_cfg))
        .await
        .map_err(|e| Error::Unavailable(format!("opening the stores: {e}")))??;
    let bi = Arc::new(BiWriter::start(store, &cfg.bi)?);
    let capture = Iad::verifier_from_config(&cfg.iad.capture)
        .await?
        .with_ledger(Arc::clone(&ledger));
    let services = Services {
        bi: Some(bi),
        capture: Some(Arc::new(capture)),
        ledger: Some(ledger),
    };
    let batcher = Batcher::start_workers(cfg.server.batcher(), engine_loaders(&cfg.engine))?;
    let handle = start(&cfg, batcher, services).await?;
    server::reload_tls_on_sighup(handle.tls());
    server::shutdown_signal().await;
    tracing::info!("signal received");
    handle.shutdown();
    handle.stopped().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deploy_example_parses_into_every_section() {
        let cfg = Config::parse(
            include_str!("../deploy/facegate.toml"),
            "deploy/facegate.toml",
        )
        .unwrap();
        assert_eq!(cfg.engine.detection.max_side, 320);
        assert_eq!(cfg.engine.calibrations.regular.offset, -0.6);
        assert_eq!(cfg.server.body_timeout_ms, 30_000);
        assert_eq!(cfg.server.queue_bound, 256);
        crate::config::validate(&cfg.engine).unwrap();
    }

    #[test]
    fn partial_sections_and_unknown_keys() {
        let cfg = Config::parse(
            "[decode]\nmax_bytes = 1000\n[iad]\nface_liveness = false\n[iad.capture]\nnonce_ttl_s = 9\n[idlive]\nlicense_expiration = \"2031-01-01T00:00:00Z\"\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(cfg.engine.decode.max_bytes, 1000);
        assert!(!cfg.iad.face_liveness);
        assert_eq!(cfg.iad.capture.nonce_ttl_s, 9);
        assert_eq!(
            cfg.iad.capture.max_nonces,
            IadConfig::default().capture.max_nonces
        );
        assert_eq!(
            cfg.idlive.licensed.license_expiration,
            "2031-01-01T00:00:00Z"
        );
        for (text, key) in [
            (
                "[server]\nlicense_expiration = \"x\"\n",
                "license_expiration",
            ),
            ("[iad.capture]\nprivate_kye = \"k.pem\"\n", "private_kye"),
            ("[bi]\nretention = 3\n", "retention"),
            ("[capture]\nnonce_ttl_s = 3\n", "capture"),
        ] {
            let e = Config::parse(text, "t.toml").unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn the_bioid_section_parses_and_hides_its_keys() {
        let key = "WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlo=";
        let text = format!("[bioid]\nclients = [\"app={key}\"]\nleeway_s = 5\n");
        let cfg = Config::parse(&text, "t.toml").unwrap();
        assert_eq!((cfg.bioid.leeway_s, cfg.bioid.clients.len()), (5, 1));
        cfg.bioid.validate().unwrap();
        assert!(!format!("{cfg:?}").contains(key));
        let e = Config::parse("[bioid]\nclient = []\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("client"), "{e}");
    }

    #[test]
    fn dialect_keys_add_to_the_global_ones_and_hashed_keys_hold_no_key() {
        use crate::api::auth::hashed_entry;
        use hyper::Request;
        let head = |key: &str| {
            Request::get("/x")
                .header("x-api-key", key)
                .body(())
                .unwrap()
                .into_parts()
                .0
        };
        let global = "ops-0123456789abcdef";
        let idlive = "idlive-0123456789abcd";
        let cfg = AuthConfig {
            api_keys: vec![hashed_entry("ops", global)],
            dialect_keys: [("idlive".to_string(), vec![format!("web:{idlive}")])].into(),
        };
        assert!(cfg.api_keys[0].starts_with("ops:sha256:"));
        assert!(!cfg.api_keys[0].contains(global));
        let own = cfg.authenticator_for("idlive").unwrap().unwrap();
        assert_eq!(own.authenticate(&head(idlive)).unwrap().subject, "web");
        assert_eq!(own.authenticate(&head(global)).unwrap().subject, "ops");
        let other = cfg.authenticator_for("iad").unwrap().unwrap();
        assert!(other.authenticate(&head(idlive)).is_err());
        assert_eq!(other.authenticate(&head(global)).unwrap().subject, "ops");
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains(idlive) && !shown.contains(global),
            "{shown}"
        );
        let bad = AuthConfig {
            api_keys: vec!["ops:sha256:abc".into()],
            ..AuthConfig::default()
        };
        let e = bad.authenticator().err().unwrap().to_string();
        assert!(e.contains("64 hex digits"), "{e}");
        // A dialect that is not mounted is an error at start.
        let cfg = Config {
            auth: AuthConfig {
                dialect_keys: [("idlve".to_string(), vec![idlive.to_string()])].into(),
                ..AuthConfig::default()
            },
            ..Config::default()
        };
        let ds = dialects(&cfg, Services::default()).unwrap();
        let e = registry(&cfg, &ds).err().unwrap().to_string();
        assert!(e.contains("no dialect \"idlve\""), "{e}");
    }

    #[test]
    fn api_keys_make_an_authenticator() {
        let cfg = AuthConfig {
            api_keys: vec!["ops:0123456789abcdef0123".into()],
            ..AuthConfig::default()
        };
        assert!(cfg.authenticator().unwrap().is_some());
        assert!(AuthConfig::default().authenticator().unwrap().is_none());
        let short = AuthConfig {
            api_keys: vec!["short".into()],
            ..AuthConfig::default()
        };
        assert!(short.authenticator().is_err());
        let shown = format!(
            "{:?}",
            Config {
                auth: cfg,
                ..Config::default()
            }
        );
        assert!(!shown.contains("0123456789abcdef0123"), "{shown}");
    }
}
