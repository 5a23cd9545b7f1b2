//! The `facegate` binary: JSON lines, verdicts and exit codes.

mod common;

use std::process::Command;

use common::*;

fn facegate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_facegate"));
    c.env("FACEGATE_MODELS_DIR", models_dir());
    c
}

#[test]
fn check_prints_verdicts_per_image() {
    let out = facegate()
        .args(["check", "--no-descriptor"])
        .arg(fixture("image_T1.jpg"))
        .arg(fixture("image_F1.jpg"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["verdict"], "LIVE");
    assert_eq!(lines[1]["verdict"], "SPOOF");
    assert!(lines[0]["liveness"]["probability"].as_f64().unwrap() > 0.5);
    assert!(lines[0]["faces"][0]["landmarks"].as_array().unwrap().len() == 5);
    assert!(lines[0]["timings"]["total_ms"].as_f64().unwrap() > 0.0);
}

#[test]
fn corrupt_and_empty_files_fail_cleanly() {
    let dir = std::env::temp_dir().join(format!("facegate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    let corrupt = dir.join("corrupt.jpg");
    let whole = std::fs::read(fixture("image_T1.jpg")).unwrap();
    std::fs::write(&corrupt, &whole[..1500]).unwrap();
    // The first third of a photo: whole headers, image data cut short.
    let third = dir.join("third.jpg");
    std::fs::write(&third, &whole[..whole.len() / 3]).unwrap();
    let out = facegate()
        .args(["check", "--no-descriptor"])
        .arg(&empty)
        .arg(&corrupt)
        .arg(&third)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let kinds: Vec<String> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["error"]["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds, ["empty_image", "corrupt_image", "corrupt_image"]);
    assert!(stdout.contains("truncated"), "{stdout}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_models_name_the_fix() {
    let out = Command::new(env!("CARGO_BIN_EXE_facegate"))
        .env("FACEGATE_MODELS_DIR", "/nonexistent/models")
        .arg("check")
        .arg(fixture("image_T1.jpg"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("models fetch"), "{stderr}");
}

#[test]
fn unknown_calibration_is_refused() {
    let out = facegate()
        .args(["check", "--calibration", "EXTREME"])
        .arg(fixture("image_T1.jpg"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("SOFT, REGULAR or HARDENED"));
}

#[test]
fn open_loop_bench_retries_keep_alive_connections_the_server_closed() {
    // Requests every 250 ms and a 150 ms header (idle keep-alive) timeout: every pooled
    // connection is closed by the server before its next use, so each send after the first
    // meets a closed connection and must be retried on a fresh one.
    let out = facegate()
        .args([
            "bench",
            "--spawn-server",
            "--no-descriptor",
            "--warmup",
            "1",
        ])
        .args([
            "--rate",
            "4",
            "--duration",
            "1.6",
            "--header-timeout-ms",
            "150",
        ])
        .arg("--image")
        .arg(fixture("image_T1.jpg"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["mode"], "open", "{report}");
    assert!(report["requests"].as_u64().unwrap() >= 6, "{report}");
    assert_eq!(report["ok"], report["requests"], "{report}");
    assert_eq!(report["errors"], serde_json::json!({}), "{report}");
}

#[test]
fn config_files_take_partial_sections_and_name_unknown_keys() {
    let dir = std::env::temp_dir().join(format!("facegate-cli-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One key of [decode]: the others keep their defaults, and this one is in force.
    let partial = dir.join("partial.toml");
    std::fs::write(
        &partial,
        "[decode]\nmax_bytes = 1000\n[calibrations.regular]\noffset = -0.6\n",
    )
    .unwrap();
    let out = facegate()
        .args(["check", "--no-descriptor", "--config"])
        .arg(&partial)
        .arg(fixture("image_T1.jpg"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["error"]["kind"], "image_too_large", "{line}");
    assert!(line["error"]["message"]
        .as_str()
        .unwrap()
        .contains("1000 bytes"));
    // An unknown key anywhere in the file stops every command, naming the key.
    for (text, key) in [
        ("[server]\nmax_bacth = 2\n", "max_bacth"),
        ("[decode]\nmax_byte = 2\n", "max_byte"),
        ("threadz = 2\n", "threadz"),
    ] {
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, text).unwrap();
        let out = facegate()
            .args(["check", "--no-descriptor", "--config"])
            .arg(&bad)
            .arg(fixture("image_T1.jpg"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{text}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_sends_the_spawned_servers_api_key_and_a_wrong_one_is_refused() {
    let dir = std::env::temp_dir().join(format!("facegate-cli-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("keys.toml");
    std::fs::write(
        &cfg,
        "[auth]\napi_keys = [\"bench:0123456789abcdef-bench\"]\n",
    )
    .unwrap();
    let bench = |extra: &[&str]| {
        let out = facegate()
            .args([
                "bench",
                "--spawn-server",
                "--no-descriptor",
                "--warmup",
                "0",
            ])
            .args(["--requests", "3", "--concurrency", "1", "--config"])
            .arg(&cfg)
            .args(extra)
            .arg("--image")
            .arg(fixture("image_T1.jpg"))
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.success(), report)
    };
    let (ok, report) = bench(&[]);
    assert!(ok, "{report}");
    assert_eq!(report["ok"], 3, "{report}");
    // A wrong key: every answer is a 401 (the server closes a refused request's connection
    // without reading its body, so the client may also see a closed connection).
    let (ok, report) = bench(&["--api-key", "wrong-key-0123456789abcdef"]);
    assert!(!ok, "{report}");
    assert_eq!(report["ok"], 0, "{report}");
    assert!(
        report["errors"]["401"].as_u64().unwrap_or(0) >= 1,
        "{report}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn knomi_packages_round_trip_through_the_commands() {
    let dir = std::env::temp_dir().join(format!("facegate-cli-knomi-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = |args: &[&str]| {
        let out = facegate().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let d = dir.to_str().unwrap();
    run(&["keys", "generate", "--out", d, "--bits", "2048"]);
    let request = r#"{"video":{"workflow_data":{"workflow":"foxtrot4","frames":[]}}}"#;
    std::fs::write(dir.join("request.json"), request).unwrap();
    for (oaep, mode) in [("sha256", "cbc"), ("sha1", "gcm")] {
        let package = dir.join(format!("package-{oaep}-{mode}.json"));
        run(&[
            "encrypt",
            "--public-key",
            &format!("{d}/public.pem"),
            "--in",
            &format!("{d}/request.json"),
            "--oaep",
            oaep,
            "--mode",
            mode,
            "--out",
            package.to_str().unwrap(),
        ]);
        let sealed: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&package).unwrap()).unwrap();
        assert_eq!(
            http::keys(&sealed),
            http::key_set(&["key", "iv", "p"]),
            "{sealed}"
        );
        let plain = run(&[
            "decrypt",
            "--private-key",
            &format!("{d}/private.pem"),
            "--in",
            package.to_str().unwrap(),
        ]);
        assert_eq!(String::from_utf8_lossy(&plain).trim(), request);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh folder under the system temp dir, unique to this process and `tag`.
fn temp_dataset(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("facegate-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Copies the first `n` images (by name) of `from` into `to`.
fn copy_first(from: &std::path::Path, n: usize, to: &std::path::Path) {
    let mut files: Vec<_> = std::fs::read_dir(from)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    files.sort();
    assert!(
        files.len() >= n,
        "{} has fewer than {n} images",
        from.display()
    );
    std::fs::create_dir_all(to).unwrap();
    for f in &files[..n] {
        std::fs::copy(f, to.join(f.file_name().unwrap())).unwrap();
    }
}

/// Runs `facegate eval --no-descriptor --batch 4 DIR` plus `extra`, the DET plot and the dump
/// written into `dir`; returns the summary JSON, stderr and the dump's lines.
fn eval_dir(
    dir: &std::path::Path,
    extra: &[&str],
) -> (serde_json::Value, String, Vec<serde_json::Value>) {
    let dump = dir.join("dump.jsonl");
    let out = facegate()
        .args(["eval", "--no-descriptor", "--batch", "4"])
        .args(extra)
        .arg(dir)
        .arg("--det")
        .arg(dir.join("det.svg"))
        .arg("--dump")
        .arg(&dump)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let lines = std::fs::read_to_string(&dump)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (serde_json::from_slice(&out.stdout).unwrap(), stderr, lines)
}

#[test]
fn eval_reports_each_attack_species() {
    let dir = temp_dataset("species");
    let nuaa = shared_dir().join("datasets/nuaa-dev");
    copy_first(&nuaa.join("live"), 6, &dir.join("live"));
    copy_first(&nuaa.join("spoof"), 4, &dir.join("spoof/print"));
    let replay = dir.join("spoof/replay");
    std::fs::create_dir_all(&replay).unwrap();
    for f in ["image_F2.jpg", "image_F1.jpg"] {
        std::fs::copy(fixture(f), replay.join(f)).unwrap();
    }
    let (r, stderr, lines) = eval_dir(&dir, &[]);
    assert_eq!(
        (r["live"].as_u64(), r["attacks"].as_u64()),
        (Some(6), Some(6)),
        "{r}"
    );
    let species = r["species"].as_object().unwrap();
    assert_eq!(
        species.keys().collect::<Vec<_>>(),
        ["print", "replay"],
        "{r}"
    );
    assert_eq!(species["print"]["attacks"], 4, "{r}");
    assert_eq!(species["replay"]["attacks"], 2, "{r}");
    let apcer = |name: &str| species[name]["apcer"].as_f64().unwrap();
    let (print, replay_apcer) = (apcer("print"), apcer("replay"));
    // APCER_max is the worst species, named; the pooled APCER is the weighted mean.
    let worst = print.max(replay_apcer);
    assert_eq!(r["apcer_max"].as_f64(), Some(worst), "{r}");
    let worst_name = if replay_apcer > print {
        "replay"
    } else {
        "print"
    };
    assert_eq!(r["apcer_max_species"], worst_name, "{r}");
    let pooled = r["operating_point"]["apcer"].as_f64().unwrap();
    assert!(
        (pooled - (4.0 * print + 2.0 * replay_apcer) / 6.0).abs() < 1e-12,
        "{r}"
    );
    for v in [&r, &species["print"], &species["replay"]] {
        for key in ["bpcer_at_apcer_1", "bpcer_at_apcer_5"] {
            let b = v[key].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&b), "{key} {r}");
        }
        // A stricter APCER target never lowers the BPCER.
        assert!(
            v["bpcer_at_apcer_1"].as_f64() >= v["bpcer_at_apcer_5"].as_f64(),
            "{r}"
        );
    }
    // The replay signal is measured only when asked for.
    assert!(r.get("replay").is_none(), "{r}");
    // The scripts' top-level fields are still there.
    for key in [
        "dir",
        "no_result",
        "upstream_threshold_0_5",
        "eer",
        "eer_score_threshold",
        "det_plot",
        "images_per_second",
    ] {
        assert!(r.get(key).is_some(), "{key} missing: {r}");
    }
    assert!(
        stderr.contains("APCER by species: print ") && stderr.contains("APCER_max "),
        "{stderr}"
    );
    // One curve per species plus the pooled one, each in the legend.
    let svg = std::fs::read_to_string(dir.join("det.svg")).unwrap();
    assert_eq!(svg.matches("<polyline").count(), 3);
    for label in [
        ">print (4 attacks)<",
        ">replay (2 attacks)<",
        ">all attacks (6)<",
    ] {
        assert!(svg.contains(label), "{label} not in the SVG");
    }
    // Dump lines: the species of every attack, none on bona fide lines.
    let count = |label: &str, species: Option<&str>| {
        lines
            .iter()
            .filter(|l| l["label"] == label && l["species"].as_str() == species)
            .count()
    };
    assert_eq!(lines.len(), 12);
    assert_eq!(count("live", None), 6);
    assert_eq!(count("spoof", Some("print")), 4);
    assert_eq!(count("spoof", Some("replay")), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn eval_replay_measures_the_periodic_peak_of_every_face() {
    use facegate::preprocess::decode::{decode_rgb, encode_jpeg, DecodeLimits};
    use facegate::preprocess::recapture::{recapture, Recapture};
    let dir = temp_dataset("replay");
    let nuaa = shared_dir().join("datasets/nuaa-dev");
    copy_first(&nuaa.join("live"), 6, &dir.join("live"));
    std::fs::copy(fixture("image_T1.jpg"), dir.join("live/image_T1.jpg")).unwrap();
    copy_first(&nuaa.join("spoof"), 2, &dir.join("spoof/print"));
    // The live photo T1 shown on the modelled LCD and photographed close up, 2.4 camera pixels
    // per display pixel through a sharp lens: the camera resolves the display's lattice.
    let sim = dir.join("spoof/replay-sim");
    std::fs::create_dir_all(&sim).unwrap();
    let photo = decode_rgb(
        &std::fs::read(fixture("image_T1.jpg")).unwrap(),
        &DecodeLimits::default(),
    )
    .unwrap();
    let shot = recapture(
        &photo,
        &Recapture {
            magnification: 2.4,
            rotation_deg: 3.0,
            lens_sigma: 0.4,
            offset: [0.3, 0.6],
            out_scale: 1.0,
            exposure: 0.85,
            glare: 0.02,
            noise: 1.5,
            seed: 7,
        },
    );
    std::fs::write(sim.join("image_T1.jpg"), encode_jpeg(&shot, 90).unwrap()).unwrap();
    let (r, stderr, lines) = eval_dir(&dir, &["--replay"]);
    let replay = &r["replay"];
    assert_eq!(lines.len(), 10);
    // Every judged face was measured at full resolution: window, windows and frequency.
    for l in &lines {
        let p = &l["replay_peak"];
        assert!(p["prominence_db"].is_number(), "{l}");
        assert!(
            [32, 64, 128].contains(&p["window"].as_u64().unwrap()),
            "{l}"
        );
        assert!(p["windows"].as_u64().unwrap() >= 1, "{l}");
        for f in p["frequency"].as_array().unwrap() {
            assert!(f.as_f64().unwrap().abs() <= 0.5, "{l}");
        }
    }
    let prominence = |l: &serde_json::Value| l["replay_peak"]["prominence_db"].as_f64().unwrap();
    // The threshold is the largest bona fide prominence, whatever the attacks score.
    let live_max = lines
        .iter()
        .filter(|l| l["label"] == "live")
        .map(prominence)
        .fold(f64::MIN, f64::max);
    let threshold = replay["threshold_db"].as_f64().unwrap();
    assert!(
        (threshold - live_max).abs() < 1e-4,
        "{threshold} vs {live_max}"
    );
    assert_eq!(replay["bona_fide"]["images"], 7, "{replay}");
    assert_eq!(replay["bona_fide"]["flagged"], 0.0, "{replay}");
    let species = replay["species"].as_object().unwrap();
    assert_eq!(
        species.keys().collect::<Vec<_>>(),
        ["print", "replay-sim"],
        "{replay}"
    );
    let sim_line = lines.iter().find(|l| l["species"] == "replay-sim").unwrap();
    // The recaptured screen's lattice stands far above every live face's spectrum.
    assert!(
        prominence(sim_line) > threshold + 3.0,
        "{sim_line} vs {threshold}"
    );
    assert_eq!(species["replay-sim"]["flagged"], 1.0, "{replay}");
    assert_eq!(species["replay-sim"]["cv_flagged"], 1.0, "{replay}");
    assert!(stderr.contains("replay signal: threshold "), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn eval_refuses_nested_and_empty_species_folders() {
    let dir = temp_dataset("species-bad");
    let nuaa = shared_dir().join("datasets/nuaa-dev");
    copy_first(&nuaa.join("live"), 1, &dir.join("live"));
    copy_first(&nuaa.join("spoof"), 1, &dir.join("spoof/print"));
    copy_first(&nuaa.join("spoof"), 1, &dir.join("spoof/print/deeper"));
    let eval = || {
        let out = facegate()
            .args(["eval", "--no-descriptor"])
            .arg(&dir)
            .arg("--det")
            .arg(dir.join("det.svg"))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = eval();
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("nested folder") && err.contains("print/deeper"),
        "{err}"
    );
    std::fs::remove_dir_all(dir.join("spoof/print/deeper")).unwrap();
    std::fs::create_dir_all(dir.join("spoof/mask")).unwrap();
    let (code, err) = eval();
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("spoof/mask") && err.contains("no JPEG or PNG images"),
        "{err}"
    );
    // Images directly in spoof/ are the species `spoof`: a spoof/spoof/ folder would clash.
    std::fs::remove_dir_all(dir.join("spoof/mask")).unwrap();
    copy_first(&nuaa.join("spoof"), 1, &dir.join("spoof"));
    copy_first(&nuaa.join("spoof"), 1, &dir.join("spoof/spoof"));
    let (code, err) = eval();
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("both be species spoof"), "{err}");
    assert!(
        !dir.join("det.svg").exists(),
        "no plot for a refused folder"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `facegate eval` on nuaa-dev with `flag`, its JSON summary.
fn eval_nuaa_dev(flag: &str) -> serde_json::Value {
    let det = format!("facegate{flag}-det-{}.svg", std::process::id());
    let out = facegate()
        .arg("eval")
        .arg(shared_dir().join("datasets/nuaa-dev"))
        .arg(flag)
        .arg("--det")
        .arg(std::env::temp_dir().join(det))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn eval_with_celeba_measures_every_pipeline_by_subject_cross_validation() {
    let v = eval_nuaa_dev("--celeba");
    let f = &v["fusion"];
    assert_eq!(
        (f["samples"].as_u64(), f["subjects"].as_u64()),
        (Some(400), Some(8))
    );
    let by_name = |n: &str| {
        f["pipelines"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == n)
            .unwrap_or_else(|| panic!("{n} missing: {f}"))
            .clone()
    };
    // Today's pipeline under the same protocol gives the leave-one-subject-out figures of
    // docs/calibration.md (APCER 9.0 %, BPCER 11.5 %).
    let today = by_name("minifasnet-dual (today)");
    assert_eq!(
        (today["cv_apcer"].as_f64(), today["cv_bpcer"].as_f64()),
        (Some(0.09), Some(0.115))
    );
    assert_eq!(today["eer"].as_f64(), v["eer"].as_f64());
    // The fitted fusions carry their weights (3 features and a bias for the triple).
    let triple = by_name("logistic(v2, v1se, celeba)");
    assert_eq!(triple["weights"].as_array().map(Vec::len), Some(4));
    assert!(by_name("celeba")["weights"].as_array().unwrap().is_empty());
    assert_eq!(f["pipelines"].as_array().unwrap().len(), 7);
}

#[test]
fn eval_match_reports_the_oz_scores_and_their_two_fold_check() {
    let v = eval_nuaa_dev("--match");
    let m = &v["matching"];
    let oz = &m["oz_scores"];
    assert_eq!(m["subjects"], 8, "{m}");
    assert_eq!(oz["genuine"]["count"], m["genuine_pairs"], "{oz}");
    assert_eq!(oz["impostor"]["count"], m["impostor_pairs"], "{oz}");
    // The defaults of docs/calibration.md ("Oz decision thresholds"), which are the Oz
    // dialect's configuration defaults.
    let d = &oz["defaults"];
    assert_eq!(
        (d["approve_score"].as_f64(), d["review_score"].as_f64()),
        (Some(0.6), Some(0.57)),
        "{oz}"
    );
    let cfg = facegate::api::oz::OzConfig::default();
    let two = |x: f32| (f64::from(x) * 100.0).round() / 100.0;
    assert_eq!(
        (Some(two(cfg.approve_score)), Some(two(cfg.review_score))),
        (d["approve_score"].as_f64(), d["review_score"].as_f64())
    );
    // The similarity thresholds are the distance operating points seen from the other side.
    for (oz_key, far_key) in [("approve", "at_far_0_1pct"), ("review", "at_far_1pct")] {
        let r = &oz["all_pairs"][oz_key];
        assert_eq!(r["far"], m[far_key]["far"], "{oz_key}");
        let tar = m[far_key]["tar"].as_f64().unwrap();
        assert!(
            (r["frr"].as_f64().unwrap() - (1.0 - tar)).abs() < 1e-12,
            "{oz_key}"
        );
    }
    // Every impostor pair is within A, within B, or across (counted in neither); every
    // genuine pair is within one fold.
    let t = &oz["two_fold"];
    let folds = t["folds"].as_array().unwrap();
    let n = |f: &serde_json::Value, k: &str| f[k].as_u64().unwrap();
    assert_eq!(
        n(&folds[0], "fit_impostor_pairs")
            + n(&folds[1], "fit_impostor_pairs")
            + t["cross_fold_impostor_pairs_uncounted"].as_u64().unwrap(),
        m["impostor_pairs"].as_u64().unwrap()
    );
    assert_eq!(
        n(&folds[0], "fit_genuine_pairs") + n(&folds[0], "test_genuine_pairs"),
        m["genuine_pairs"].as_u64().unwrap()
    );
    assert_eq!(folds[0]["fit_subjects"], folds[1]["test_subjects"]);
    assert_eq!(
        folds[0]["fit_subjects"],
        serde_json::json!(["0001", "0003", "0005", "0007"])
    );
    let mean = (folds[0]["approve"]["test"]["far"].as_f64().unwrap()
        + folds[1]["approve"]["test"]["far"].as_f64().unwrap())
        / 2.0;
    assert_eq!(t["mean"]["approve"]["far"].as_f64(), Some(mean));
}

/// `facegate api-key-hash` reads the key on standard input and prints the hashed entry, which
/// is the key's SHA-256 (what `printf %s KEY | sha256sum` prints); a short key is refused.
#[test]
fn api_key_hash_prints_the_entry_without_the_key() {
    use std::io::Write;
    let run = |key: &str| {
        let mut child = facegate()
            .args(["api-key-hash", "--name", "ops"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{key}").unwrap();
        child.wait_with_output().unwrap()
    };
    let out = run("ops-0123456789abcdef");
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ops:sha256:fcf13faded0e9df625f23e8c9d318fdb1bf7e6456a3c7ef9f0b2cc3187e274ae"
    );
    let out = run("short");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("shorter than 16 bytes"));
}
