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
    let mut bytes = std::fs::read(fixture("image_T1.jpg")).unwrap();
    bytes.truncate(1500);
    std::fs::write(&corrupt, bytes).unwrap();
    let out = facegate()
        .args(["check", "--no-descriptor"])
        .arg(&empty)
        .arg(&corrupt)
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
    assert_eq!(kinds, ["empty_image", "corrupt_image"]);
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
