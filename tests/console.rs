//! The capture console (`/console/`) in a real browser: Debian's Chromium, headless, with a
//! fake camera fed from a Y4M video made here from a fixture photo (frontal for 3 s, then the
//! head turned to the person's left by a depth-map warp). The console runs by itself
//! (`?auto=1&challenge=left`): camera, a passive check on one frame, the head-turn challenge
//! over two frames. The test drives Chromium over the DevTools protocol and checks that the
//! page logs no error and requests nothing but this server, that both checks show their
//! verdicts and signals, and saves a screenshot per fixture under
//! `target/console-artifacts/`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::http::*;
use common::warp::{geometry, head_move, upright};
use common::{chromium, CHROMIUM_FLAGS};
use facegate::app::Services;
use image::RgbImage;
use serde_json::{json, Value};

/// Frames per second of the fake video.
const FPS: usize = 5;
/// Seconds the face looks straight at the camera before it is turned.
const FRONTAL_S: usize = 3;
/// Seconds of the whole video (Chromium loops it; the console is done long before).
const TOTAL_S: usize = 24;
/// What the console gives the person to turn, ms: longer than the frontal part, so the
/// second frame is always turned and the first (taken at most 3 s in) frontal.
const TURN_MS: u64 = 4000;

/// Where the screenshots go (kept after the test: CI artifacts).
fn artifacts() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-artifacts");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Appends one frame of `img` to `out` as Y4M 4:2:0 (BT.601, limited range).
fn y4m_frame(img: &RgbImage, out: &mut Vec<u8>) {
    let (w, h) = (img.width() as usize, img.height() as usize);
    out.extend_from_slice(b"FRAME\n");
    let px = |x: usize, y: usize| {
        let p = img.get_pixel(x as u32, y as u32).0;
        (
            f32::from(p[0]) / 255.0,
            f32::from(p[1]) / 255.0,
            f32::from(p[2]) / 255.0,
        )
    };
    for y in 0..h {
        for x in 0..w {
            let (r, g, b) = px(x, y);
            out.push((16.0 + 65.481 * r + 128.553 * g + 24.966 * b).round() as u8);
        }
    }
    let mut u = Vec::with_capacity(w * h / 4);
    let mut v = Vec::with_capacity(w * h / 4);
    for y in (0..h).step_by(2) {
        for x in (0..w).step_by(2) {
            let (mut r, mut g, mut b) = (0.0, 0.0, 0.0);
            for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                let p = px((x + dx).min(w - 1), (y + dy).min(h - 1));
                r += p.0 / 4.0;
                g += p.1 / 4.0;
                b += p.2 / 4.0;
            }
            u.push((128.0 - 37.797 * r - 74.203 * g + 112.0 * b).round() as u8);
            v.push((128.0 + 112.0 * r - 93.786 * g - 18.214 * b).round() as u8);
        }
    }
    out.extend_from_slice(&u);
    out.extend_from_slice(&v);
}

/// The fake camera's video for fixture `name`: frontal, then turned to the person's left.
fn fake_video(name: &str, dir: &Path) -> PathBuf {
    let e = engine_full();
    let (img, a) = upright(&e, name);
    let turned = head_move(&img, &geometry(&a), 12.0, 0.0);
    let mut out = format!(
        "YUV4MPEG2 W{} H{} F{FPS}:1 Ip A1:1\n",
        img.width(),
        img.height()
    )
    .into_bytes();
    for i in 0..FPS * TOTAL_S {
        y4m_frame(if i < FPS * FRONTAL_S { &img } else { &turned }, &mut out);
    }
    let p = dir.join(format!("{name}.y4m"));
    std::fs::write(&p, out).unwrap();
    p
}

/// A GET over plain HTTP/1.1 (the DevTools endpoint's JSON), read up to its Content-Length
/// (the endpoint may keep the connection open).
fn http_get(port: u16, path: &str) -> Option<Value> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())
                        .flatten()
                })
                .unwrap_or(usize::MAX);
            if body.len() >= len {
                return serde_json::from_str(body).ok();
            }
        }
    }
    let text = String::from_utf8_lossy(&got);
    serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
}

/// A DevTools protocol connection to one page: commands by id, events kept.
struct Cdp {
    ws: tungstenite::WebSocket<TcpStream>,
    next: u64,
    /// Every event received so far.
    events: Vec<Value>,
}

impl Cdp {
    fn connect(url: &str) -> Cdp {
        let addr = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let stream = TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let (ws, _) = tungstenite::client(url, stream).expect("DevTools websocket");
        Cdp {
            ws,
            next: 1,
            events: Vec::new(),
        }
    }

    /// Sends `method` and waits for its result (events meanwhile are kept).
    fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(tungstenite::Message::text(msg)).unwrap();
        loop {
            let m = self.ws.read().expect("DevTools message");
            let Ok(text) = m.to_text() else { continue };
            let Ok(v) = serde_json::from_str::<Value>(text) else {
                continue;
            };
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {v}");
                return v["result"].clone();
            }
            if v.get("method").is_some() {
                self.events.push(v);
            }
        }
    }

    /// The value of JavaScript expression `js` in the page.
    fn eval(&mut self, js: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": js, "returnByValue": true, "awaitPromise": true}),
        );
        r["result"]["value"].clone()
    }
}

/// Chromium, headless, with the fake camera playing `video`; killed on drop.
struct Browser {
    child: Child,
    profile: PathBuf,
    port: u16,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn launch(video: &Path, profile: PathBuf) -> Browser {
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap();
    let child = Command::new(chromium())
        .args(CHROMIUM_FLAGS)
        .args([
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            "--window-size=1280,900",
            "--remote-debugging-port=0",
            "--remote-allow-origins=*",
        ])
        .arg(format!(
            "--use-file-for-fake-video-capture={}",
            video.display()
        ))
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let file = profile.join("DevToolsActivePort");
    let t = Instant::now();
    let port = loop {
        if let Some(p) = std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
        {
            break p;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "Chromium wrote no DevToolsActivePort"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    Browser {
        child,
        profile,
        port,
    }
}

/// What the console showed for one fixture.
struct Shown {
    passive: String,
    active: String,
    signals: Vec<Vec<String>>,
    screenshot: PathBuf,
}

/// Runs the console against `server` with the fake camera playing `video`; checks that no
/// error is logged and nothing outside `server` is requested.
fn run_console(server: std::net::SocketAddr, video: &Path, name: &str) -> Shown {
    let b = launch(
        video,
        std::env::temp_dir().join(format!("facegate-console-{}-{name}", std::process::id())),
    );
    let page_ws = {
        let t = Instant::now();
        loop {
            let list = http_get(b.port, "/json/list").unwrap_or(Value::Null);
            if let Some(u) = list.as_array().and_then(|l| {
                l.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_string))
            }) {
                break u;
            }
            assert!(t.elapsed() < Duration::from_secs(30), "no page target");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let mut cdp = Cdp::connect(&page_ws);
    for domain in [
        "Runtime.enable",
        "Log.enable",
        "Network.enable",
        "Page.enable",
    ] {
        cdp.call(domain, json!({}));
    }
    let url = format!("http://{server}/console/?auto=1&challenge=left&delay={TURN_MS}");
    cdp.call("Page.navigate", json!({"url": url}));
    // Passive check, then the challenge: well within 90 s even on a loaded 2-core box.
    let t = Instant::now();
    let mut passive = String::new();
    loop {
        let phase = cdp.eval("document.body ? document.body.dataset.phase || '' : ''");
        let verdict = cdp.eval("document.getElementById('verdict').textContent");
        if phase == "passive-done" || (passive.is_empty() && phase == "challenge") {
            passive = verdict.as_str().unwrap_or("").to_string();
        }
        if phase == "active-done" || phase == "error" {
            assert_eq!(phase, "active-done", "the console stopped on: {verdict}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "the console did not finish: phase {phase}, verdict {verdict}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let active = cdp
        .eval("document.getElementById('verdict').textContent")
        .as_str()
        .unwrap_or("")
        .to_string();
    let signals: Vec<Vec<String>> = serde_json::from_value(cdp.eval(
        "[...document.querySelectorAll('#signals tbody tr')].map(r => [...r.cells].map(c => c.textContent))",
    ))
    .unwrap();
    let shot = cdp.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    let screenshot = artifacts().join(format!("console-{name}.png"));
    std::fs::write(&screenshot, png).unwrap();
    // The second tab: the BI report's histograms and the live metrics.
    cdp.eval("document.getElementById('tab-reports').click()");
    let t = Instant::now();
    let (report, queue) = loop {
        let report = cdp.eval("document.getElementById('report-status').textContent");
        let queue = cdp.eval("document.getElementById('m-p50').textContent");
        let (r, q) = (
            report.as_str().unwrap_or("").to_string(),
            queue.as_str().unwrap_or("").to_string(),
        );
        if r.ends_with("records")
            && q.ends_with("ms")
            && q.starts_with(|c: char| c.is_ascii_digit())
        {
            break (r, q);
        }
        assert!(
            !r.starts_with("error") && t.elapsed() < Duration::from_secs(30),
            "the reports tab shows {r:?}, p50 {q:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let shot = cdp.call("Page.captureScreenshot", json!({"format": "png"}));
    let png = base64::engine::general_purpose::STANDARD
        .decode(shot["data"].as_str().unwrap())
        .unwrap();
    std::fs::write(artifacts().join(format!("console-{name}-reports.png")), png).unwrap();
    println!("{name}: reports tab: {report}, p50 {queue}");
    // No error on the console, no exception, nothing fetched from elsewhere.
    let origin = format!("http://{server}/");
    for e in &cdp.events {
        let m = e["method"].as_str().unwrap_or("");
        let p = &e["params"];
        match m {
            "Runtime.exceptionThrown" => panic!("exception in the console: {p}"),
            "Runtime.consoleAPICalled" if p["type"] == "error" => {
                panic!("console error: {p}")
            }
            "Log.entryAdded" if p["entry"]["level"] == "error" => {
                panic!("browser error: {p}")
            }
            "Network.requestWillBeSent" => {
                let u = p["request"]["url"].as_str().unwrap_or("");
                assert!(
                    u.starts_with(&origin) || u.starts_with("data:") || u.starts_with("blob:"),
                    "the console requested {u}"
                );
            }
            _ => {}
        }
    }
    let requested: Vec<&str> = cdp
        .events
        .iter()
        .filter(|e| e["method"] == "Network.requestWillBeSent")
        .filter_map(|e| e["params"]["request"]["url"].as_str())
        .collect();
    for path in [
        "/facegate/v1/analyze",
        "/facegate/v1/active?challenge=left",
        "/metrics",
    ] {
        assert!(
            requested.iter().any(|u| u.ends_with(path)),
            "no request to {path}: {requested:?}"
        );
    }
    Shown {
        passive,
        active,
        signals,
        screenshot,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_runs_a_passive_check_and_a_head_turn_challenge_in_chromium() {
    let dir = std::env::temp_dir().join(format!("facegate-console-video-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let h = start_with_engine(config(|_| {}), Services::default(), engine_full()).await;
    let addr = h.local_addr();
    for (fixture, live) in [("image_T1.jpg", true), ("image_F1.jpg", false)] {
        let video = fake_video(fixture, &dir);
        let name = fixture.trim_end_matches(".jpg").to_string();
        let shown = tokio::task::spawn_blocking(move || run_console(addr, &video, &name))
            .await
            .unwrap();
        println!(
            "{fixture}: {} | {} | screenshot {}",
            shown.passive,
            shown.active,
            shown.screenshot.display()
        );
        for s in &shown.signals {
            println!("  {}", s.join(" | "));
        }
        let fired = |what: &str| {
            shown
                .signals
                .iter()
                .find(|r| r[0].starts_with(what))
                .unwrap_or_else(|| panic!("no signal {what}: {:?}", shown.signals))
                .get(2)
                .map(String::as_str)
                == Some("fired")
        };
        assert!(
            shown
                .signals
                .iter()
                .any(|r| r[0].contains("PAD MiniFASNet")),
            "no PAD score per network: {:?}",
            shown.signals
        );
        if live {
            assert_eq!(shown.passive, "Passive: LIVE");
            assert_eq!(shown.active, "Challenge (left): LIVE");
            assert!(!fired("3-D motion"));
            assert!(!fired("challenge left"));
        } else {
            assert_eq!(shown.passive, "Passive: SPOOF");
            assert_eq!(shown.active, "Challenge (left): NOT LIVE");
            assert!(fired("frame 0 passive probability"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    h.shutdown();
}
