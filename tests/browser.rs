//! In a real browser (Debian's Chromium, headless; `scripts/setup-system.sh` installs it): a
//! page on another loopback origin draws a photo into a canvas and posts the canvas as a
//! multipart JPEG to IDLive's `/check_liveness`, as ID R&D's web capture sample does. With its
//! origin allowed (`server.cors.allowed_origins`) the page reads the verdict; without CORS the
//! browser refuses to hand the answer to the page.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::http::*;
use common::{chromium, CHROMIUM_FLAGS};
use facegate::app::Services;

/// The capture page: once the photo has loaded, it is drawn into a canvas, the canvas taken
/// as a JPEG into a multipart form and posted across origins; the outcome is written into
/// `#out`. The request is synchronous, inside the load handler, so that the DOM Chromium dumps
/// after loading holds the outcome.
fn page(server: SocketAddr) -> String {
    format!(
        r#"<!doctype html>
<html><body><img id="photo" src="/photo.jpg"><canvas id="c"></canvas><pre id="out">pending</pre><pre id="native">pending</pre>
<script>
window.addEventListener('load', () => {{
  const out = document.getElementById('out');
  try {{
    const photo = document.getElementById('photo');
    const canvas = document.getElementById('c');
    canvas.width = photo.naturalWidth;
    canvas.height = photo.naturalHeight;
    canvas.getContext('2d').drawImage(photo, 0, 0);
    const url = canvas.toDataURL('image/jpeg', 0.95);
    const bytes = Uint8Array.from(atob(url.split(',')[1]), c => c.charCodeAt(0));
    const form = new FormData();
    form.append('image', new Blob([bytes], {{ type: 'image/jpeg' }}), 'frame.jpg');
    const xhr = new XMLHttpRequest();
    xhr.open('POST', 'http://{server}/check_liveness', false);
    xhr.send(form);
    out.textContent = 'ANSWER ' + xhr.status + ' ' + xhr.responseText;
  }} catch (e) {{
    out.textContent = 'REFUSED ' + e.name;
  }}
  // The native API takes the JPEG itself: Content-Type image/jpeg is not a "simple" type,
  // so the browser sends a preflight first.
  const native = document.getElementById('native');
  try {{
    const canvas = document.getElementById('c');
    const url = canvas.toDataURL('image/jpeg', 0.95);
    const bytes = Uint8Array.from(atob(url.split(',')[1]), c => c.charCodeAt(0));
    const xhr = new XMLHttpRequest();
    xhr.open('POST', 'http://{server}/facegate/v1/analyze', false);
    xhr.setRequestHeader('Content-Type', 'image/jpeg');
    xhr.send(bytes);
    native.textContent = 'ANSWER ' + xhr.status + ' ' + xhr.responseText;
  }} catch (e) {{
    native.textContent = 'REFUSED ' + e.name;
  }}
}});
</script></body></html>"#
    )
}

/// Serves the page at `/` and the photo at `/photo.jpg` on `listener` (another loopback origin
/// than the server's), one connection at a time, until the process ends.
fn serve_page(listener: TcpListener, html: String, photo: Vec<u8>) {
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).is_ok_and(|n| n == 1) {
                head.push(byte[0]);
            }
            let line = String::from_utf8_lossy(&head);
            let (ctype, body): (&str, &[u8]) = if line.starts_with("GET /photo.jpg") {
                ("image/jpeg", &photo)
            } else if line.starts_with("GET / ") {
                ("text/html; charset=utf-8", html.as_bytes())
            } else {
                ("text/plain", b"not here")
            };
            let status = if ctype == "text/plain" {
                "404 Not Found"
            } else {
                "200 OK"
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(body);
        }
    });
}

/// Loads `url` in headless Chromium and returns the DOM after the load event, within a
/// minute.
fn dump_dom(url: &str) -> String {
    let profile = std::env::temp_dir().join(format!("facegate-chromium-{}", std::process::id()));
    let mut child = Command::new(chromium())
        .args(CHROMIUM_FLAGS)
        .args(["--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chromium did not finish {url} within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut dom = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut dom)
        .unwrap();
    let _ = std::fs::remove_dir_all(&profile);
    dom
}

/// What the page wrote into element `id`.
fn outcome(dom: &str, id: &str) -> String {
    let tag = format!("<pre id=\"{id}\">");
    let start = dom.find(&tag).expect("the page's output element") + tag.len();
    let end = dom[start..].find("</pre>").unwrap() + start;
    dom[start..end].replace("&quot;", "\"")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_another_origin_reads_the_verdict_only_with_cors() {
    let photo = fixture_bytes("image_T1.jpg");
    for allowed in [true, false] {
        // The page's origin is known once its port is bound; then the server, then the page
        // with the server's address in it.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let origin = format!("http://{}", listener.local_addr().unwrap());
        let cfg = config(|c| {
            if allowed {
                c.server.cors.allowed_origins = vec![origin.clone()];
            }
        });
        let h = start(cfg, Services::default()).await;
        serve_page(listener, page(h.local_addr()), photo.clone());
        let url = format!("{origin}/");
        let dom = tokio::task::spawn_blocking(move || dump_dom(&url))
            .await
            .unwrap();
        let (out, native) = (outcome(&dom, "out"), outcome(&dom, "native"));
        let mode = if allowed { "on" } else { "off" };
        println!("CORS {mode}: IDLive {out}");
        println!("CORS {mode}: native {native}");
        h.shutdown();
        h.stopped().await;
        if allowed {
            assert!(out.starts_with("ANSWER 200 "), "{out}");
            let v: serde_json::Value = serde_json::from_str(&out["ANSWER 200 ".len()..]).unwrap();
            assert!(v["probability"].is_number(), "{v}");
            assert!(native.starts_with("ANSWER 200 "), "{native}");
            let v: serde_json::Value =
                serde_json::from_str(&native["ANSWER 200 ".len()..]).unwrap();
            assert_eq!(v["faces"].as_array().map(Vec::len), Some(1), "{v}");
        } else {
            assert!(out.starts_with("REFUSED NetworkError"), "{out}");
            assert!(native.starts_with("REFUSED NetworkError"), "{native}");
        }
    }
}
