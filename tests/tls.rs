//! TLS on the listener, with certificates made at test time by the `openssl` command (a CA, a
//! server certificate for 127.0.0.1, a client certificate): HTTP/1.1 and HTTP/2 by ALPN, mutual
//! TLS, a reload (direct and by SIGHUP) that new connections see while an established one
//! keeps working, and a failed reload that keeps the files in force.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::http::{config, start};
use facegate::app::Services;
use facegate::server::ServerHandle;
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// Runs `openssl` with `args` in `dir`, failing the test with its output.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command (scripts/setup-system.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A certificate `name.pem` / `name.key` signed by the CA in `dir`, for `usage`
/// (`serverAuth` or `clientAuth`), with subject `cn`.
fn issue(dir: &Path, name: &str, cn: &str, usage: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!(
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
            "-extfile",
            &format!("{name}.ext"),
        ],
    );
}

/// A fresh folder with `ca.pem`, `server.pem`/`.key` and `client.pem`/`.key`.
fn pki() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "facegate-tls-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=facegate test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    issue(&dir, "server", "facegate server 1", "serverAuth");
    issue(&dir, "client", "facegate client", "clientAuth");
    dir
}

fn certs(path: &Path) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(path)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// A client trusting the test CA, offering `alpn`, with the client certificate when `client`.
fn connector(dir: &Path, alpn: &[&[u8]], client: bool) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(certs(&dir.join("ca.pem"))[0].clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = if client {
        let key = PrivateKeyDer::from_pem_file(dir.join("client.key")).unwrap();
        builder
            .with_client_auth_cert(certs(&dir.join("client.pem")), key)
            .unwrap()
    } else {
        builder.with_no_client_auth()
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(cfg))
}

async fn tls_connect(h: &ServerHandle, c: &TlsConnector) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(h.local_addr()).await?;
    let name = ServerName::IpAddress(h.local_addr().ip().into());
    c.connect(name, tcp).await
}

/// `GET /health` over an HTTP/1.1 connection: its status.
async fn get_h1(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
) -> Result<StatusCode, hyper::Error> {
    let req = Request::get("/health")
        .header("host", "127.0.0.1")
        .body(Empty::new())
        .unwrap();
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    resp.into_body().collect().await?;
    Ok(status)
}

/// An HTTP/1.1 client over TLS; `Err` when the handshake or the first request fails.
async fn h1(
    h: &ServerHandle,
    c: &TlsConnector,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<Bytes>>, String> {
    let tls = tls_connect(h, c).await.map_err(|e| e.to_string())?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    Ok(sender)
}

/// The leaf certificate the server shows a new connection.
async fn served_cert(h: &ServerHandle, c: &TlsConnector) -> Vec<u8> {
    let tls = tls_connect(h, c).await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_h1_and_h2_by_alpn_checks_client_certificates_and_reloads() {
    let dir = pki();
    let cfg = config(|c| {
        c.server.tls.cert = Some(dir.join("server.pem"));
        c.server.tls.key = Some(dir.join("server.key"));
    });
    let h = start(cfg, Services::default()).await;

    // HTTP/1.1, and HTTP/2 chosen by ALPN, over TLS.
    let c = connector(&dir, &[b"http/1.1"], false);
    let mut s = h1(&h, &c).await.unwrap();
    assert_eq!(get_h1(&mut s).await.unwrap(), StatusCode::OK);
    let tls = tls_connect(&h, &connector(&dir, &[b"h2", b"http/1.1"], false))
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut s2, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = s2
        .send_request(
            Request::get("https://127.0.0.1/health")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), hyper::Version::HTTP_2);

    // Cleartext HTTP to the TLS port gets no answer.
    let plain = TcpStream::connect(h.local_addr()).await.unwrap();
    let plain = async {
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(plain)).await?;
        tokio::spawn(conn);
        get_h1(&mut s).await
    };
    assert!(tokio::time::timeout(Duration::from_secs(10), plain)
        .await
        .unwrap()
        .is_err());

    // A reload: new connections see the new certificate, the open one keeps working.
    let first = served_cert(&h, &c).await;
    issue(&dir, "server", "facegate server 2", "serverAuth");
    h.reload_tls().unwrap();
    let second = served_cert(&h, &c).await;
    assert_ne!(first, second);
    assert_eq!(second, certs(&dir.join("server.pem"))[0].to_vec());
    assert_eq!(get_h1(&mut s).await.unwrap(), StatusCode::OK);

    // A failed reload names the file and keeps what is in force.
    std::fs::write(dir.join("server.key"), "not a key").unwrap();
    let e = h.reload_tls().unwrap_err().to_string();
    assert!(e.contains("server.key"), "{e}");
    assert_eq!(served_cert(&h, &c).await, second);

    // SIGHUP reloads too (what `facegate serve` wires up).
    issue(&dir, "server", "facegate server 3", "serverAuth");
    facegate::server::reload_tls_on_sighup(h.tls());
    tokio::time::sleep(Duration::from_millis(100)).await;
    rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::HUP).unwrap();
    let third = certs(&dir.join("server.pem"))[0].to_vec();
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_cert(&h, &c).await != third {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not reload the certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    h.shutdown();
    h.stopped().await;

    // Mutual TLS: a client without a certificate is refused, one with it is served.
    let cfg = config(|c| {
        c.server.tls.cert = Some(dir.join("server.pem"));
        c.server.tls.key = Some(dir.join("server.key"));
        c.server.tls.client_ca = Some(dir.join("ca.pem"));
    });
    let h = start(cfg, Services::default()).await;
    let anonymous = async {
        let mut s = h1(&h, &connector(&dir, &[b"http/1.1"], false)).await?;
        get_h1(&mut s).await.map_err(|e| e.to_string())
    };
    assert!(anonymous.await.is_err());
    let mut s = h1(&h, &connector(&dir, &[b"http/1.1"], true))
        .await
        .unwrap();
    assert_eq!(get_h1(&mut s).await.unwrap(), StatusCode::OK);
    h.shutdown();
    h.stopped().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unusable_tls_settings_are_refused_at_start() {
    let dir = pki();
    let bad = |tls: facegate::config::TlsConfig| {
        facegate::server::tls::Tls::from_config(&tls)
            .unwrap_err()
            .to_string()
    };
    // The key of another certificate.
    let e = bad(facegate::config::TlsConfig {
        cert: Some(dir.join("server.pem")),
        key: Some(dir.join("client.key")),
        client_ca: None,
    });
    assert!(e.contains("server.pem"), "{e}");
    let e = facegate::app::Config::parse("[server.tls]\ncert = \"a.pem\"\n", "t.toml")
        .map(|c| facegate::config::validate_server(&c.server))
        .unwrap()
        .unwrap_err()
        .to_string();
    assert!(e.contains("cert and key go together"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
