//! Subcommands that run the engine in-process: `check`, `eval` and `compare`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::config::EngineArgs;
use crate::engine::{Analysis, AnalyzeOptions, Calibration, Engine};
use crate::eval::{
    apcer_max, det_points, det_svg, eer, pad_rates, rates_at_apcer, species_rates, tar_at_far,
    DetCurve, SpeciesRates,
};
use crate::{Error, Result};

/// `facegate check IMAGE...`
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// JPEG or PNG files.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// Calibration profile: SOFT, REGULAR or HARDENED.
    #[arg(long, default_value = "REGULAR")]
    pub calibration: String,
    /// Also extract the face template.
    #[arg(long)]
    pub template: bool,
    /// Engine options.
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `facegate eval DIR`
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Folder with `live/` and `spoof/` subfolders of images; `spoof/` may also hold one
    /// folder per presentation attack instrument species (`spoof/print/`, `spoof/replay/`...).
    pub dir: PathBuf,
    /// Where to write the DET curve (SVG).
    #[arg(long, default_value = "eval-det.svg")]
    pub det: PathBuf,
    /// Calibration whose threshold is the operating point.
    #[arg(long, default_value = "REGULAR")]
    pub calibration: String,
    /// Apply the quality gate (rejected images count as attacks). Off by default: PAD sets of
    /// tight crops fail the framing checks by construction.
    #[arg(long)]
    pub gate: bool,
    /// Also evaluate face matching on `live/` (subject id = first 4 characters of the name).
    #[arg(long = "match")]
    pub matching: bool,
    /// Also run the CelebA-Spoof network and report every network alone and the fusions
    /// measured by leave-one-subject-out cross-validation (subject id = first 4 characters of
    /// the name): `fusion` in the JSON.
    #[arg(long)]
    pub celeba: bool,
    /// Also measure the replay signal (`preprocess::spectrum`: the periodic-peak prominence of
    /// every judged face, at full resolution) and report it per class and species, flagging
    /// above the largest bona fide prominence, in-sample and leave-one-subject-out: `replay` in
    /// the JSON.
    #[arg(long)]
    pub replay: bool,
    /// Images per engine batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Write one JSON line per image (file, label, score, per-network outputs) to this file.
    #[arg(long)]
    pub dump: Option<PathBuf>,
    /// Write the percentiles of the live scores (the false-rejection-rate table of
    /// `engine::frr`, JSON) to this file.
    #[arg(long = "frr-table")]
    pub frr_table: Option<PathBuf>,
    /// Engine options.
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// `facegate compare A B`
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// First image.
    pub a: PathBuf,
    /// Second image.
    pub b: PathBuf,
    /// Distance at or below which the faces match.
    #[arg(long, default_value_t = crate::engine::template::DEFAULT_MATCH_THRESHOLD)]
    pub threshold: f32,
    /// Engine options.
    #[command(flatten)]
    pub engine: EngineArgs,
}

/// A dataset file's subject id: the first 4 characters of its name (nuaa-dev's convention).
fn subject_of(p: &Path) -> String {
    p.file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .chars()
        .take(4)
        .collect()
}

fn load_engine(args: &EngineArgs, descriptor: bool) -> Result<Engine> {
    load_engine_with(args, descriptor, false)
}

fn load_engine_with(args: &EngineArgs, descriptor: bool, celeba: bool) -> Result<Engine> {
    let mut cfg = crate::app::engine_config(args)?;
    cfg.load_descriptor &= descriptor;
    cfg.load_celeba |= celeba;
    Engine::load_configured(cfg)
}

fn parse_calibration(s: &str) -> Result<Calibration> {
    Calibration::parse(s).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "unknown calibration {s}: use SOFT, REGULAR or HARDENED"
        ))
    })
}

/// Reads a file, refusing one over the byte bound before reading it.
fn read_image_file(p: &Path, max_bytes: usize) -> Result<Vec<u8>> {
    let len = std::fs::metadata(p)?.len();
    if len > max_bytes as u64 {
        return Err(Error::ImageTooLarge {
            size: len as usize,
            limit: max_bytes,
        });
    }
    Ok(std::fs::read(p)?)
}

/// Short verdict for people: LIVE, SPOOF or the rejection code ([`Analysis::verdict`]).
pub fn verdict(a: &Analysis) -> String {
    a.verdict()
}

/// Prints one JSON object per image; exit 1 if any image could not be processed.
pub fn check(args: &CheckArgs) -> Result<ExitCode> {
    let calibration = parse_calibration(&args.calibration)?;
    let engine = load_engine(&args.engine, args.template)?;
    let opts = AnalyzeOptions {
        calibration,
        template: args.template,
        ..AnalyzeOptions::default()
    };
    let mut failed = false;
    let stdout = std::io::stdout();
    for p in &args.images {
        let file = p.display().to_string();
        let result = read_image_file(p, engine.config().decode.max_bytes)
            .and_then(|bytes| engine.analyze(&bytes, &opts));
        let line = match result {
            Ok(a) => {
                let mut v =
                    serde_json::to_value(&a).map_err(|e| Error::InvalidArgument(e.to_string()))?;
                v["file"] = json!(file);
                v["verdict"] = json!(verdict(&a));
                v
            }
            Err(e) => {
                failed = true;
                eprintln!("facegate: {file}: {e}");
                json!({"file": file, "error": {"kind": e.kind(), "message": e.to_string()}})
            }
        };
        let mut out = stdout.lock();
        writeln!(out, "{line}")?;
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn list_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_ascii_lowercase)
                    .as_deref(),
                Some("jpg" | "jpeg" | "png")
            )
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Species name of the images directly inside `spoof/`.
const UNNAMED_SPECIES: &str = "spoof";

/// The attack images of `spoof_dir` by presentation attack instrument species, sorted by name:
/// the images directly inside form the species `spoof`, each subfolder one species of its own
/// name. Refuses a folder inside a species folder, an empty species folder, and a `spoof/spoof/`
/// folder beside images directly in `spoof/`.
fn list_species(spoof_dir: &Path) -> Result<Vec<(String, Vec<PathBuf>)>> {
    let direct = list_images(spoof_dir)?;
    let mut folders: Vec<PathBuf> = std::fs::read_dir(spoof_dir)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", spoof_dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    let mut species = Vec::with_capacity(folders.len() + 1);
    if !direct.is_empty() {
        species.push((UNNAMED_SPECIES.to_string(), direct));
    }
    for folder in folders {
        let name = folder
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(nested) = first_subfolder(&folder)? {
            return Err(Error::InvalidArgument(format!(
                "nested folder {}: a species folder spoof/{name}/ holds images only \
                 (one level: spoof/<species>/*.jpg)",
                nested.display()
            )));
        }
        let images = list_images(&folder)?;
        if images.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "species folder {} holds no JPEG or PNG images",
                folder.display()
            )));
        }
        if name == UNNAMED_SPECIES && species.iter().any(|(n, _)| n == UNNAMED_SPECIES) {
            return Err(Error::InvalidArgument(format!(
                "{} and the images directly in {} would both be species {UNNAMED_SPECIES}: \
                 move those images into a named species folder",
                folder.display(),
                spoof_dir.display()
            )));
        }
        species.push((name, images));
    }
    species.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(species)
}

/// The first folder (by name) inside `dir`, if any.
fn first_subfolder(dir: &Path) -> Result<Option<PathBuf>> {
    let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::InvalidArgument(format!("{}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    subs.sort();
    Ok(subs.into_iter().next())
}

/// Per-image outcome of an evaluation run.
struct Scored {
    analysis: Option<Analysis>,
    /// The CelebA-Spoof network's live log-odds on the selected face, when it ran.
    celeba: Option<f32>,
    /// The periodic peak of the selected face at full resolution, when asked for.
    peak: Option<crate::preprocess::spectrum::PeakReport>,
}

fn run_all(
    engine: &Engine,
    files: &[PathBuf],
    opts: &AnalyzeOptions,
    batch: usize,
    bar: &ProgressBar,
) -> Vec<Scored> {
    run_measured(engine, files, opts, batch, bar, false)
}

/// [`run_all`], also measuring each selected face's periodic peak when `peaks`.
fn run_measured(
    engine: &Engine,
    files: &[PathBuf],
    opts: &AnalyzeOptions,
    batch: usize,
    bar: &ProgressBar,
    peaks: bool,
) -> Vec<Scored> {
    let mut out = Vec::with_capacity(files.len());
    for chunk in files.chunks(batch.max(1)) {
        let bytes: Vec<Result<Vec<u8>>> = chunk
            .iter()
            .map(|p| read_image_file(p, engine.config().decode.max_bytes))
            .collect();
        let prepared = bytes
            .iter()
            // A read error only has to make the image's analysis fail (it counts as no result).
            .map(|b| match b {
                Ok(b) => engine.prepare(b),
                Err(e) => Err(Error::InvalidArgument(e.to_string())),
            })
            .collect();
        for (r, b) in engine
            .analyze_prepared(prepared, opts)
            .into_iter()
            .zip(&bytes)
        {
            let analysis = r.ok();
            let celeba = analysis
                .as_ref()
                .and_then(|a| a.liveness.as_ref())
                .and_then(|l| {
                    l.networks
                        .iter()
                        .find(|o| o.name == crate::engine::pipeline::PadNetwork::Celeba.name())
                })
                .map(|o| o.logits[1] - o.logits[0]);
            let peak = match (&analysis, b) {
                (Some(a), Ok(b)) if peaks => face_peak(engine, a, b),
                _ => None,
            };
            out.push(Scored {
                analysis,
                celeba,
                peak,
            });
            bar.inc(1);
        }
    }
    out
}

/// The periodic peak of `a`'s selected face in the full-resolution decode of `bytes`.
fn face_peak(
    engine: &Engine,
    a: &Analysis,
    bytes: &[u8],
) -> Option<crate::preprocess::spectrum::PeakReport> {
    let face = a.faces.get(a.selected_face?)?;
    let image = crate::preprocess::decode::decode_rgb(bytes, &engine.config().decode).ok()?;
    crate::preprocess::spectrum::periodic_peak(&image, face.bbox)
}

/// Evaluates PAD (and optionally matching) on a labelled folder.
pub fn eval(args: &EvalArgs) -> Result<ExitCode> {
    let calibration = parse_calibration(&args.calibration)?;
    let live_files = list_images(&args.dir.join("live"))?;
    let species = list_species(&args.dir.join("spoof"))?;
    // Attack files in species order, with the species of each.
    let (spoof_files, spoof_species): (Vec<PathBuf>, Vec<&str>) = species
        .iter()
        .flat_map(|(name, files)| files.iter().map(move |f| (f.clone(), name.as_str())))
        .unzip();
    if live_files.is_empty() || spoof_files.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{} needs non-empty live/ and spoof/ folders",
            args.dir.display()
        )));
    }
    let engine = load_engine_with(&args.engine, args.matching, args.celeba)?;
    let opts = AnalyzeOptions {
        calibration,
        template: false,
        landmarks: false,
        ignore_quality: !args.gate,
        liveness: true,
    };
    let bar = ProgressBar::new((live_files.len() + spoof_files.len()) as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} images, {per_sec}, eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let t0 = std::time::Instant::now();
    let live = run_measured(&engine, &live_files, &opts, args.batch, &bar, args.replay);
    let spoof = run_measured(&engine, &spoof_files, &opts, args.batch, &bar, args.replay);
    bar.finish_and_clear();
    let secs = t0.elapsed().as_secs_f64();
    // An image without a liveness result (no face, decode error, gate) is an attack decision.
    let score = |s: &Scored| {
        s.analysis
            .as_ref()
            .and_then(|a| a.liveness.as_ref().map(|l| l.score))
            .unwrap_or(f32::NEG_INFINITY)
    };
    let no_result = |v: &[Scored]| v.iter().filter(|s| score(s) == f32::NEG_INFINITY).count();
    let ls: Vec<f32> = live.iter().map(score).collect();
    let ss: Vec<f32> = spoof.iter().map(score).collect();
    let profile = engine.config().calibrations.profile(calibration);
    let op = pad_rates(&ls, &ss, profile.offset);
    let upstream = pad_rates(&ls, &ss, 0.0);
    let (eer_v, eer_t) = eer(&ls, &ss);
    // Scores of each species: contiguous runs of `ss`, in species order.
    let mut species_scores: Vec<(&str, &[f32])> = Vec::with_capacity(species.len());
    let mut start = 0;
    for (name, files) in &species {
        species_scores.push((name.as_str(), &ss[start..start + files.len()]));
        start += files.len();
    }
    let per_species: BTreeMap<&str, SpeciesRates> = species_scores
        .iter()
        .map(|&(name, scores)| (name, species_rates(&ls, scores, op.threshold)))
        .collect();
    let (worst_name, worst_apcer) = apcer_max(per_species.iter().map(|(&n, r)| (n, r.apcer)))
        .ok_or_else(|| Error::InvalidArgument("no attack species".into()))?;
    let mut curves: Vec<DetCurve> = species_scores
        .iter()
        .map(|&(name, scores)| DetCurve {
            label: format!("{name} ({} attacks)", scores.len()),
            points: det_points(&ls, scores),
            operating: Some(pad_rates(&ls, scores, op.threshold)),
            pooled: false,
        })
        .collect();
    if species.len() > 1 {
        curves.push(DetCurve {
            label: format!("all attacks ({})", ss.len()),
            points: det_points(&ls, &ss),
            operating: None,
            pooled: true,
        });
    }
    let svg = det_svg(
        &curves,
        &op,
        eer_v,
        &format!(
            "facegate DET on {} ({} live, {} attacks{})",
            args.dir.display(),
            ls.len(),
            ss.len(),
            if species.len() > 1 {
                format!(", {} species", species.len())
            } else {
                String::new()
            }
        ),
    );
    std::fs::write(&args.det, svg)?;
    if let Some(path) = &args.dump {
        let mut lines = String::new();
        let line = |f: &Path, label: &str, s: &Scored| {
            json!({"file": f.display().to_string(), "label": label, "score": score(s),
                "liveness": s.analysis.as_ref().and_then(|a| a.liveness.clone()),
                "faces": s.analysis.as_ref().map(|a| a.faces.len()), "celeba": s.celeba,
                "replay_peak": s.peak})
        };
        for (f, s) in live_files.iter().zip(&live) {
            lines.push_str(&line(f, "live", s).to_string());
            lines.push('\n');
        }
        for ((f, s), name) in spoof_files.iter().zip(&spoof).zip(&spoof_species) {
            let mut v = line(f, "spoof", s);
            v["species"] = json!(name);
            lines.push_str(&v.to_string());
            lines.push('\n');
        }
        std::fs::write(path, lines)?;
    }
    if let Some(path) = &args.frr_table {
        let source = format!(
            "facegate eval {} --frr-table (live/, {} images)",
            args.dir.display(),
            ls.len()
        );
        let table = crate::engine::frr::FrrTable::from_scores(&source, &ls)?;
        let text = serde_json::to_string_pretty(&table)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        std::fs::write(path, text + "\n")?;
    }
    let mut summary = json!({
        "dir": args.dir.display().to_string(),
        "live": ls.len(),
        "attacks": ss.len(),
        "no_result": {"live": no_result(&live), "attacks": no_result(&spoof)},
        "operating_point": {"calibration": calibration.name(), "score_threshold": op.threshold,
            "apcer": op.apcer, "bpcer": op.bpcer, "acer": op.acer},
        "upstream_threshold_0_5": {"apcer": upstream.apcer, "bpcer": upstream.bpcer, "acer": upstream.acer},
        "eer": eer_v,
        "eer_score_threshold": eer_t,
        "det_plot": args.det.display().to_string(),
        "images_per_second": (ls.len() + ss.len()) as f64 / secs,
        "species": per_species,
        "apcer_max": worst_apcer,
        "apcer_max_species": worst_name,
        "bpcer_at_apcer_1": rates_at_apcer(&ls, &ss, 0.01).bpcer,
        "bpcer_at_apcer_5": rates_at_apcer(&ls, &ss, 0.05).bpcer,
    });
    if args.celeba {
        let sample = |f: &PathBuf, s: &Scored, live: bool| {
            crate::eval::FusionSample::of(
                &subject_of(f),
                live,
                s.analysis.as_ref().and_then(|a| a.liveness.as_ref()),
                s.celeba,
            )
        };
        let samples: Vec<crate::eval::FusionSample> = live_files
            .iter()
            .zip(&live)
            .filter_map(|(f, s)| sample(f, s, true))
            .chain(
                spoof_files
                    .iter()
                    .zip(&spoof)
                    .filter_map(|(f, s)| sample(f, s, false)),
            )
            .collect();
        let study = crate::eval::fusion_study(&samples);
        for (name, r) in study.iter() {
            eprintln!(
                "{name:>24}: EER {:.1} %  cross-validated APCER {:.1} %  BPCER {:.1} %",
                r.eer * 100.0,
                r.cv_apcer * 100.0,
                r.cv_bpcer * 100.0
            );
        }
        summary["fusion"] = json!({
            "samples": samples.len(),
            "subjects": crate::eval::subjects(&samples),
            "pipelines": study.iter().map(|(name, r)| json!({
                "name": name, "eer": r.eer, "cv_apcer": r.cv_apcer, "cv_bpcer": r.cv_bpcer,
                "cv_acer": (r.cv_apcer + r.cv_bpcer) / 2.0, "weights": r.weights,
            })).collect::<Vec<_>>(),
        });
    }
    if args.replay {
        let sample = |f: &PathBuf, s: &Scored, species: Option<&str>| crate::eval::ReplaySample {
            subject: subject_of(f),
            species: species.map(str::to_string),
            prominence: s.peak.map(|p| p.prominence_db),
            pad_live: score(s) >= op.threshold,
        };
        let samples: Vec<crate::eval::ReplaySample> = live_files
            .iter()
            .zip(&live)
            .map(|(f, s)| sample(f, s, None))
            .chain(
                spoof_files
                    .iter()
                    .zip(&spoof)
                    .zip(&spoof_species)
                    .map(|((f, s), &name)| sample(f, s, Some(name))),
            )
            .collect();
        let study = crate::eval::replay_study(&samples);
        eprintln!(
            "replay signal: threshold {} dB; bona fide flagged {:.1} % (cross-validated {:.1} %)",
            study
                .threshold_db
                .map_or_else(|| "none".to_string(), |t| format!("{t:.2}")),
            study.bona_fide.flagged * 100.0,
            study.bona_fide.cv_flagged * 100.0
        );
        for (name, c) in &study.species {
            eprintln!(
                "{name:>16}: flagged {:.1} % (cross-validated {:.1} %); APCER PAD {:.1} % -> \
                 PAD + replay signal {:.1} % (cross-validated)",
                c.flagged * 100.0,
                c.cv_flagged * 100.0,
                c.pad_accepted * 100.0,
                c.cv_combined_accepted * 100.0
            );
        }
        summary["replay"] =
            serde_json::to_value(&study).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    }
    if args.matching {
        summary["matching"] = match_eval(&engine, &live_files, args.batch)?;
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&summary)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?
    );
    let by_species: Vec<String> = per_species
        .iter()
        .map(|(name, r)| format!("{name} {:.1} %", r.apcer * 100.0))
        .collect();
    eprintln!(
        "APCER {:.1} %  BPCER {:.1} %  ACER {:.1} % at {} (score >= {:.2});  EER {:.1} %;  \
         APCER by species: {};  APCER_max {:.1} % ({worst_name});  DET -> {}",
        op.apcer * 100.0,
        op.bpcer * 100.0,
        op.acer * 100.0,
        calibration.name(),
        op.threshold,
        eer_v * 100.0,
        by_species.join(", "),
        worst_apcer * 100.0,
        args.det.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Every pair `(i, j)`, `i < j`, of images with comparable templates, compared by
/// [`FaceTemplate::compare`](crate::engine::FaceTemplate::compare).
pub fn compared_pairs(
    templates: &[Option<crate::engine::FaceTemplate>],
) -> Vec<(usize, usize, crate::engine::template::Match)> {
    let mut out = Vec::new();
    for (i, a) in templates.iter().enumerate() {
        for (j, b) in templates.iter().enumerate().skip(i + 1) {
            if let (Some(a), Some(b)) = (a, b) {
                if let Some(m) = a.compare(b, 0.0) {
                    out.push((i, j, m));
                }
            }
        }
    }
    out
}

/// Genuine/impostor distances over every pair of images with a template.
pub fn pair_distances(
    ids: &[String],
    templates: &[Option<crate::engine::FaceTemplate>],
) -> (Vec<f32>, Vec<f32>) {
    let pairs: Vec<(usize, usize, f32)> = compared_pairs(templates)
        .into_iter()
        .map(|(i, j, m)| (i, j, m.distance))
        .collect();
    crate::eval::split_pairs(ids, &pairs, |_, _| true)
}

/// The Oz API Lite view of the pairs `(i, j, similarity)`: `score` = `Match::similarity`, its
/// genuine and impostor distributions, the
/// `approve_score` / `review_score` thresholds at FAR 0.1 % / 1 % on every pair (and rounded
/// to 2 decimals), and their subject-disjoint 2-fold check.
fn oz_scores(ids: &[String], pairs: &[(usize, usize, f32)]) -> serde_json::Value {
    use crate::eval::{distribution, match_rates, oz_thresholds, round2, round2_up, split_pairs};
    let (genuine, impostor) = split_pairs(ids, pairs, |_, _| true);
    let all = oz_thresholds(&genuine, &impostor);
    let (approve, review) = (round2(all.approve.threshold), round2(all.review.threshold));
    let (approve_up, review_up) = (
        round2_up(all.approve.threshold),
        round2_up(all.review.threshold),
    );
    // A 2-decimal f32 shown as its 2-decimal f64 (0.6, not 0.6000000238418579).
    let show = |x: f32| (f64::from(x) * 100.0).round() / 100.0;
    let folds = crate::eval::two_fold_check(ids, pairs);
    let fold_of = crate::eval::two_fold_split(ids);
    let cross = pairs
        .iter()
        .filter(|&&(i, j, _)| fold_of[i] != fold_of[j])
        .count();
    let mean = |f: fn(&crate::eval::FoldResult) -> f64| folds.iter().map(f).sum::<f64>() / 2.0;
    json!({
        "score": "similarity = clamp(1 - distance, 0, 1); approved when score >= approve_score, \
            operator_required when score >= review_score, else declined",
        "genuine": distribution(&genuine),
        "impostor": distribution(&impostor),
        "all_pairs": {
            "approve_far_target": crate::eval::OZ_APPROVE_FAR,
            "review_far_target": crate::eval::OZ_REVIEW_FAR,
            "approve": all.approve,
            "review": all.review,
        },
        "defaults": {
            "rounding": "all-pairs thresholds rounded to the nearest 2 decimals",
            "approve_score": show(approve),
            "review_score": show(review),
            "approve": match_rates(&genuine, &impostor, approve),
            "review": match_rates(&genuine, &impostor, review),
        },
        "rounded_up": {
            "rounding": "all-pairs thresholds rounded up to 2 decimals (FAR never above the \
                unrounded threshold's)",
            "approve_score": show(approve_up),
            "review_score": show(review_up),
            "approve": match_rates(&genuine, &impostor, approve_up),
            "review": match_rates(&genuine, &impostor, review_up),
        },
        "two_fold": {
            "split": "subject ids sorted, alternately A and B; thresholds fitted on the pairs \
                within one fold, measured on the pairs within the other",
            "cross_fold_impostor_pairs_uncounted": cross,
            "folds": folds,
            "mean": {
                "approve": {"far": mean(|f| f.approve.test.far), "frr": mean(|f| f.approve.test.frr),
                    "far_rounded": mean(|f| f.approve.test_rounded.far),
                    "frr_rounded": mean(|f| f.approve.test_rounded.frr)},
                "review": {"far": mean(|f| f.review.test.far), "frr": mean(|f| f.review.test.frr),
                    "far_rounded": mean(|f| f.review.test_rounded.far),
                    "frr_rounded": mean(|f| f.review.test_rounded.frr)},
            },
        },
    })
}

fn match_eval(engine: &Engine, files: &[PathBuf], batch: usize) -> Result<serde_json::Value> {
    let opts = AnalyzeOptions {
        liveness: false,
        template: true,
        ignore_quality: true,
        ..AnalyzeOptions::default()
    };
    let bar = ProgressBar::new(files.len() as u64);
    let scored = run_all(engine, files, &opts, batch, &bar);
    bar.finish_and_clear();
    let ids: Vec<String> = files.iter().map(|p| subject_of(p)).collect();
    let templates: Vec<_> = scored
        .iter()
        .map(|s| s.analysis.as_ref().and_then(|a| a.template.clone()))
        .collect();
    let pairs = compared_pairs(&templates);
    let distances: Vec<(usize, usize, f32)> =
        pairs.iter().map(|&(i, j, m)| (i, j, m.distance)).collect();
    let similarities: Vec<(usize, usize, f32)> = pairs
        .iter()
        .map(|&(i, j, m)| (i, j, m.similarity))
        .collect();
    let (genuine, impostor) = crate::eval::split_pairs(&ids, &distances, |_, _| true);
    // Subjects with at least one template.
    let subjects = {
        let mut s: Vec<&String> = ids
            .iter()
            .zip(&templates)
            .filter(|(_, t)| t.is_some())
            .map(|(id, _)| id)
            .collect();
        s.sort_unstable();
        s.dedup();
        s.len()
    };
    let at = |far: f64| {
        let (tar, thr, got) = tar_at_far(&genuine, &impostor, far);
        json!({"far_target": far, "tar": tar, "distance_threshold": thr, "far": got})
    };
    Ok(json!({
        "images": files.len(),
        "without_template": templates.iter().filter(|t| t.is_none()).count(),
        "genuine_pairs": genuine.len(),
        "impostor_pairs": impostor.len(),
        "at_far_1pct": at(0.01),
        "at_far_0_1pct": at(0.001),
        "subjects": subjects,
        "oz_scores": oz_scores(&ids, &similarities),
    }))
}

/// Compares the selected faces of two images.
pub fn compare(args: &CompareArgs) -> Result<ExitCode> {
    let engine = load_engine(&args.engine, true)?;
    let opts = AnalyzeOptions {
        liveness: false,
        template: true,
        ignore_quality: true,
        ..AnalyzeOptions::default()
    };
    let max = engine.config().decode.max_bytes;
    let a = engine.analyze(&read_image_file(&args.a, max)?, &opts)?;
    let b = engine.analyze(&read_image_file(&args.b, max)?, &opts)?;
    let (ta, tb) = match (&a.template, &b.template) {
        (Some(x), Some(y)) => (x, y),
        _ => {
            return Err(Error::InvalidArgument(format!(
                "no face found in {}",
                if a.template.is_none() {
                    args.a.display()
                } else {
                    args.b.display()
                }
            )))
        }
    };
    let m = ta
        .compare(tb, args.threshold)
        .ok_or_else(|| Error::InvalidArgument("templates of different versions".into()))?;
    println!(
        "{}",
        json!({"a": args.a.display().to_string(), "b": args.b.display().to_string(), "match": m})
    );
    Ok(ExitCode::SUCCESS)
}
