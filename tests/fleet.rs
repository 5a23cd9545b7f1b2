//! A fleet on one PostgreSQL server: the store and ledger contracts against a real database,
//! two `facegate serve` processes sharing BI records and refusing each other's replayed
//! nonces and packages, and what a `kill -9` loses with and without `--bi-durable`.
//!
//! PostgreSQL is Debian's (`scripts/setup-system.sh` installs it); each test starts its own
//! throwaway server with `scripts/pg-test.sh` and stops it. Without the package the tests fail
//! and say how to install it: they are never skipped.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use facegate::bi::{bi_report, tally_records, BiRecord, BiStore, Date, Page, PgStore, SqliteStore};
use facegate::pg::Pg;
use facegate::replay::postgres::PgLedger;
use facegate::replay::{check_contract, Kind, ReplayLedger, Status};

const BIN: &str = env!("CARGO_BIN_EXE_facegate");
const SDK: &str = "3f2a9c1b7d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4f5061728394a5b6c7d8e";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A scratch folder, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("facegate-fleet-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A throwaway PostgreSQL server (`scripts/pg-test.sh`), stopped when dropped.
struct PgServer {
    dir: PathBuf,
    url: String,
}

impl PgServer {
    fn start(tag: &str) -> PgServer {
        let dir = std::env::temp_dir().join(format!("facegate-pg-{tag}-{}", std::process::id()));
        let out = Command::new(repo().join("scripts/pg-test.sh"))
            .args(["start", dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "PostgreSQL did not start (install it with scripts/setup-system.sh): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(url.starts_with("postgres://"), "{url}");
        PgServer { dir, url }
    }

    fn connect(&self) -> Arc<Pg> {
        Arc::new(Pg::connect(&self.url, 4, Duration::from_secs(10)).unwrap())
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/pg-test.sh"))
            .args(["stop", self.dir.to_str().unwrap()])
            .status();
    }
}

fn rec(time_ms: i64, dialect: &str, os: &str, p: Option<f32>, code: Option<&str>) -> BiRecord {
    BiRecord {
        time_ms,
        route: "/check_liveness".into(),
        dialect: dialect.into(),
        pipeline: "dual".into(),
        calibration: Some("REGULAR".into()),
        domain: None,
        os: os.into(),
        probability: p,
        quality: p.map(|v| 1.0 - v),
        error_code: code.map(str::to_string),
        latency_ms: 12.5,
    }
}

#[test]
fn postgres_store_and_ledger_keep_the_contracts_of_the_embedded_ones() {
    let server = PgServer::start("contract");
    let pg = server.connect();
    // Migrations run once: a second connection (another replica) finds them applied.
    let again = server.connect();

    check_contract(&PgLedger::new(Arc::clone(&pg)), "pg").unwrap();

    // Two replicas racing to use one nonce: exactly one sees it fresh.
    let ledgers = [PgLedger::new(Arc::clone(&pg)), PgLedger::new(again)];
    let now = facegate::bi::now_ms();
    for i in 0..20 {
        let key = format!("race-{i}");
        ledgers[0]
            .insert(
                Kind::IadNonce,
                key.as_bytes(),
                now,
                now + 60_000,
                false,
                1000,
            )
            .unwrap();
        let wins = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|t| {
                    let l = &ledgers[t % 2];
                    let key = key.clone();
                    s.spawn(move || l.consume(Kind::IadNonce, key.as_bytes(), now + 1).unwrap())
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap())
                .filter(|st| matches!(st, Status::Fresh { .. }))
                .count()
        });
        assert_eq!(wins, 1, "nonce {i}");
    }

    // The BI store answers as the SQLite store does for the same records.
    let pgs = PgStore::new(Arc::clone(&pg));
    let lite = SqliteStore::in_memory().unwrap();
    let day = Date::parse("2024-03-30").unwrap().start_ms();
    let mut records = Vec::new();
    for i in 0..60i64 {
        let p = (i % 11) as f32 / 10.0;
        let code = (i % 7 == 0).then_some("FACE_NOT_FOUND");
        let dialect = if i % 3 == 0 { "iad" } else { "idlive" };
        let os = ["IOS", "ANDROID", "DESKTOP"][(i % 3) as usize];
        let prob = code.is_none().then_some(p);
        records.push(rec(day + i * 3_600_000, dialect, os, prob, code));
    }
    for s in [&pgs as &dyn BiStore, &lite] {
        s.record_batch(&records[..30]).unwrap();
        for r in &records[30..] {
            s.record(r).unwrap();
        }
    }
    assert_eq!(pgs.records(None, None).unwrap(), records);
    let d = |s: &str| Date::parse(s).ok();
    for (from, to) in [
        (None, None),
        (d("2024-03-31"), d("2024-03-31")),
        (d("2024-04-01"), None),
    ] {
        assert_eq!(
            pgs.records(from, to).unwrap(),
            lite.records(from, to).unwrap()
        );
        for dialect in ["iad", "idlive"] {
            let mut a = pgs.tally(dialect, from, to).unwrap();
            let mut b = lite.tally(dialect, from, to).unwrap();
            a.sort();
            b.sort();
            assert_eq!(a, b, "{dialect} {from:?}..{to:?}");
        }
    }
    let idlive: Vec<BiRecord> = records
        .iter()
        .filter(|r| r.dialect == "idlive")
        .cloned()
        .collect();
    let mut t = pgs.tally("idlive", None, None).unwrap();
    t.sort();
    assert_eq!(t, tally_records(&idlive));
    assert!(bi_report(&idlive, "dual")["total"] == idlive.len());

    // Pages resume after their cursor and cover the dialect's records once.
    let mut page = Page {
        dialect: "idlive".into(),
        from: None,
        to: None,
        after: None,
        limit: 7,
    };
    let mut seen = Vec::new();
    loop {
        let rows = pgs.page(&page).unwrap();
        let Some((last, _)) = rows.last() else { break };
        page.after = Some(*last);
        seen.extend(rows.into_iter().map(|(_, r)| r));
    }
    assert_eq!(seen, idlive);

    // Purges take their counts away, once even when two replicas purge together.
    let cut = day + 40 * 3_600_000;
    let other = PgStore::new(server.connect());
    let (a, b) = std::thread::scope(|s| {
        let x = s.spawn(|| pgs.purge_older_than(cut).unwrap());
        let y = s.spawn(|| other.purge_older_than(cut).unwrap());
        (x.join().unwrap(), y.join().unwrap())
    });
    assert_eq!(a + b, 40);
    lite.purge_older_than(cut).unwrap();
    for dialect in ["iad", "idlive"] {
        let mut a = pgs.tally(dialect, None, None).unwrap();
        let mut b = lite.tally(dialect, None, None).unwrap();
        a.sort();
        b.sort();
        assert_eq!(a, b, "{dialect} after the purge");
    }
    assert_eq!(pgs.records(None, None).unwrap(), records[40..]);
}

#[test]
fn an_unreachable_database_is_refused_at_start_without_its_password() {
    let port = free_port();
    let url = format!("postgres://bi:hunter2@127.0.0.1:{port}/facegate");
    let e = Pg::connect(&url, 2, Duration::from_secs(2))
        .unwrap_err()
        .to_string();
    assert!(!e.contains("hunter2") && e.contains("bi:***@"), "{e}");
    let out = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{}", free_port())])
        .env("FACEGATE_BI_DB", &url)
        .env("FACEGATE_MODELS_DIR", common::models_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bi:***@") && !err.contains("hunter2"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Server processes.

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `facegate serve` process, killed (SIGKILL) when dropped.
struct Replica {
    child: Child,
    port: u16,
}

impl Replica {
    fn start(config: &Path, extra: &[&str]) -> Replica {
        let port = free_port();
        let child = Command::new(BIN)
            .args(["serve", "--config", config.to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("FACEGATE_MODELS_DIR", common::models_dir())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut r = Replica { child, port };
        let t0 = Instant::now();
        loop {
            if let Some(status) = r.child.try_wait().unwrap() {
                panic!("facegate serve exited at start: {status}");
            }
            if let Ok((200, _)) = http(r.port, "GET", "/health", "", b"") {
                return r;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "not ready in 120 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn post(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, serde_json::Value) {
        let (status, text) = http(self.port, "POST", path, content_type, body).unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, text) = http(self.port, "GET", path, "", b"").unwrap();
        assert_eq!(status, 200, "{path}: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// `kill -9`.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange over a fresh connection: the status and the body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !content_type.is_empty() {
        head.push_str(&format!("Content-Type: {content_type}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn run(args: &[&str]) -> Vec<u8> {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Keys, a capture image and the configuration of a replica of the fleet (`bi_db`: the BI
/// database, a SQLite file or a PostgreSQL URL). Face liveness is off: the capture checks
/// need no model, so the replicas start fast.
fn fleet_config(dir: &Path, bi_db: &str) -> PathBuf {
    let keys = dir.join("keys");
    if !keys.join("private.pem").exists() {
        run(&[
            "keys",
            "generate",
            "--out",
            keys.to_str().unwrap(),
            "--bits",
            "2048",
        ]);
    }
    let cfg = dir.join("facegate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[bi]\npath = {bi_db:?}\n\n[iad]\nface_liveness = false\n\n[iad.capture]\n\
             private_key = {pk:?}\nsdk_digests = [{SDK:?}]\n\n[knomi]\nprivate_key = {pk:?}\n",
            pk = keys.join("private.pem").to_str().unwrap(),
        ),
    )
    .unwrap();
    cfg
}

/// A capture bundle for `nonce`, sealed with the fleet's public key by `facegate bundle create`.
fn bundle(dir: &Path, nonce: &str) -> Vec<u8> {
    let image = dir.join("capture.jpg");
    if !image.exists() {
        image::RgbImage::from_pixel(640, 480, image::Rgb([90, 90, 90]))
            .save(&image)
            .unwrap();
    }
    let out = dir.join(format!("{nonce}.fgcb"));
    #[rustfmt::skip]
    run(&[
        "bundle", "create",
        "--public-key", dir.join("keys/public.pem").to_str().unwrap(),
        "--image", image.to_str().unwrap(),
        "--os", "Android", "--manufacturer", "samsung", "--model", "SM-S918B",
        "--camera-label", "camera2 1", "--sdk-version", "1.0.0", "--sdk-digest", SDK,
        "--nonce", nonce, "--stamp-exif",
        "--out", out.to_str().unwrap(),
    ]);
    std::fs::read(out).unwrap()
}

fn nonce(r: &Replica) -> String {
    let (status, v) = r.post("/iad/nonce", "", b"");
    assert_eq!(status, 200, "{v}");
    v["nonce"].as_str().unwrap().to_string()
}

/// The capture's rejection reasons as a replica answers them.
fn capture_rejections(r: &Replica, bundle: &[u8]) -> Vec<String> {
    let (status, v) = r.post(
        "/iad/check_capture_liveness",
        "application/octet-stream",
        bundle,
    );
    assert_eq!(status, 200, "{v}");
    v["capture_liveness"]["rejection"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn two_replicas_on_one_postgres_share_records_and_refuse_each_others_replays() {
    let server = PgServer::start("replicas");
    let dir = Scratch::new("replicas");
    let cfg = fleet_config(&dir.0, &server.url);
    let a = Replica::start(&cfg, &[]);
    let b = Replica::start(&cfg, &[]);

    // A nonce issued by A is known to B (with memory ledgers B would call it unknown), and
    // once B has used it, A refuses it as replayed.
    let n = nonce(&a);
    let sealed = bundle(&dir.0, &n);
    assert_eq!(capture_rejections(&b, &sealed), Vec::<String>::new());
    assert_eq!(capture_rejections(&a, &sealed), ["SUSPICIOUS_ACTIVITY"]);
    // And the other way round.
    let m = nonce(&b);
    let sealed = bundle(&dir.0, &m);
    assert_eq!(capture_rejections(&a, &sealed), Vec::<String>::new());
    assert_eq!(capture_rejections(&b, &sealed), ["SUSPICIOUS_ACTIVITY"]);

    // A Knomi package opened by A is refused by B.
    let request = dir.0.join("request.json");
    std::fs::write(&request, br#"{"hello":"fleet"}"#).unwrap();
    let package = run(&[
        "encrypt",
        "--public-key",
        dir.0.join("keys/public.pem").to_str().unwrap(),
        "--in",
        request.to_str().unwrap(),
    ]);
    let (status, v) = a.post("/knomi/decrypt", "application/json", &package);
    assert_eq!(status, 200, "{v}");
    let (status, v) = b.post("/knomi/decrypt", "application/json", &package);
    assert_ne!(status, 200, "{v}");
    assert!(v.to_string().contains("already used"), "{v}");

    // Both replicas read all four capture decisions, whichever made them.
    for r in [&a, &b] {
        let rs = r.get_json("/iad/bi_records");
        assert_eq!(rs.as_array().unwrap().len(), 4, "{rs}");
    }

    // Records survive a replica's restart (B's own records included).
    b.kill();
    let b = Replica::start(&cfg, &[]);
    assert_eq!(b.get_json("/iad/bi_records").as_array().unwrap().len(), 4);
    drop(a);
}

/// Sends `n` capture decisions to `r` (each answered before the next is sent).
fn decisions(r: &Replica, dir: &Path, n: usize) {
    let sealed = bundle(dir, &nonce(r));
    for _ in 0..n {
        capture_rejections(r, &sealed);
    }
}

fn sqlite_count(path: &Path) -> usize {
    SqliteStore::open(path)
        .unwrap()
        .records(None, None)
        .unwrap()
        .len()
}

/// `--bi-durable`: answers leave after their record's commit, so a `kill -9` right after the
/// last answer loses none. Without it, records are committed as they arrive: after the
/// documented interval (one second) every answered record is in the database.
#[test]
fn kill_9_loses_no_durable_record_and_none_older_than_the_flush_interval() {
    let dir = Scratch::new("kill9");
    let db = dir.0.join("bi.sqlite");
    let cfg = fleet_config(&dir.0, db.to_str().unwrap());

    let r = Replica::start(&cfg, &["--bi-durable"]);
    decisions(&r, &dir.0, 25);
    r.kill();
    assert_eq!(sqlite_count(&db), 25, "durable records lost to kill -9");

    let r = Replica::start(&cfg, &[]);
    decisions(&r, &dir.0, 25);
    std::thread::sleep(Duration::from_secs(1));
    r.kill();
    assert_eq!(
        sqlite_count(&db),
        50,
        "records older than the flush interval lost"
    );

    // The same on PostgreSQL.
    let server = PgServer::start("kill9");
    let cfg = fleet_config(&dir.0, &server.url);
    let r = Replica::start(&cfg, &["--bi-durable"]);
    decisions(&r, &dir.0, 25);
    r.kill();
    let store = PgStore::new(server.connect());
    assert_eq!(store.records(None, None).unwrap().len(), 25);
}
