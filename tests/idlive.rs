//! The IDLive Face Server dialect over a real socket: exact shapes of every endpoint, every
//! rejection and error code the fixtures reach, malformed requests, pipelines and
//! calibrations, series accumulation, batches keyed by file name, BI records and report.

mod common;

use std::sync::mpsc;

use bytes::Bytes;
use common::http::*;
use facegate::api::idlive::UNSUPPORTED_PIPELINE;
use facegate::app::{self, Services};
use facegate::batcher::{Batcher, Loader};
use facegate::bi::{now_ms, Date};
use facegate::server;
use hyper::{Method, StatusCode};
use serde_json::{json, Value};

const VERDICT_KEYS: &[&str] = &["probability", "quality", "score"];
const ERROR_KEYS: &[&str] = &["error", "error_code"];

fn f(v: &Value, k: &str) -> f64 {
    v[k].as_f64()
        .unwrap_or_else(|| panic!("{k} is not a number in {v}"))
}

async fn liveness(h: &server::ServerHandle, path: &str, images: &[(&str, &[u8])]) -> Value {
    let parts: Vec<Part> = images.iter().map(|(n, d)| file("image", n, d)).collect();
    let a = post_multipart(h, path, &parts, &[]).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    a.json()
}

fn today() -> Date {
    Date::from_unix_ms(now_ms())
}

fn day_offset(days: i64) -> String {
    Date::from_unix_ms(now_ms() + days * 86_400_000).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_version_and_bare_path_ownership() {
    let h = start(config(|_| {}), Services::default()).await;
    let v = get(&h, "/api_version").await.json();
    assert_eq!(
        keys(&v),
        key_set(&[
            "product",
            "version",
            "defaultPipeline",
            "availablePipelines",
            "expirationDate"
        ])
    );
    assert_eq!(v["product"], "IDLive Face Server");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["defaultPipeline"], "minifasnet-dual");
    assert_eq!(
        v["availablePipelines"],
        json!(["minifasnet-dual", "minifasnet-v2", "minifasnet-v1se"])
    );
    assert_eq!(v["expirationDate"], "2999-12-31T23:59:59Z");
    assert_eq!(get(&h, "/idlive/api_version").await.json(), v);
    let iad = get(&h, "/iad/api_version").await.json();
    assert_eq!(iad["product"], "IADServer");
    h.shutdown();
    h.stopped().await;

    // The owner of the bare path is configurable; both stay under their prefixes.
    let h = start(
        config(|c| {
            c.server
                .bare_owners
                .insert("/api_version".into(), "iad".into());
            c.iad.licensed.license_expiration = "2030-01-31T23:59:59Z".into();
        }),
        Services::default(),
    )
    .await;
    let v = get(&h, "/api_version").await.json();
    assert_eq!(
        v,
        json!({"product": "IADServer", "version": env!("CARGO_PKG_VERSION"), "expirationDate": "2030-01-31T23:59:59Z"})
    );
    assert_eq!(
        get(&h, "/idlive/api_version").await.json()["product"],
        "IDLive Face Server"
    );
    h.shutdown();
    h.stopped().await;

    // An owner that does not serve the path is refused at start.
    let cfg = config(|c| {
        c.server
            .bare_owners
            .insert("/api_version".into(), "oz".into());
    });
    let e = engine();
    let loader: Loader = Box::new(move || Ok(e));
    let batcher = Batcher::start(cfg.server.batcher(), loader).unwrap();
    let err = app::start(&cfg, batcher, Services::default())
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("/api_version"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_liveness_verdicts_rejections_and_errors() {
    let h = start(config(|_| {}), Services::default()).await;
    let t1 = fixture_bytes("image_T1.jpg");
    let live = liveness(&h, "/check_liveness", &[("t1.jpg", &t1)]).await;
    assert_eq!(keys(&live), key_set(VERDICT_KEYS));
    assert!(f(&live, "probability") > 0.5, "{live}");
    assert!(f(&live, "quality") > 0.0 && f(&live, "quality") <= 1.0);
    // The prefixed path is the same endpoint.
    assert_eq!(
        liveness(&h, "/idlive/check_liveness", &[("t1.jpg", &t1)]).await,
        live
    );
    for spoof in ["image_F1.jpg", "image_F2.jpg"] {
        let v = liveness(&h, "/check_liveness", &[(spoof, &fixture_bytes(spoof))]).await;
        assert_eq!(keys(&v), key_set(VERDICT_KEYS));
        assert!(f(&v, "probability") < 0.5, "{spoof}: {v}");
    }
    // Another pipeline re-expresses the same networks' outputs.
    let v2 = liveness(
        &h,
        "/check_liveness?pipeline=minifasnet-v2",
        &[("t1.jpg", &t1)],
    )
    .await;
    assert_eq!(keys(&v2), key_set(VERDICT_KEYS));
    assert_ne!(f(&v2, "score"), f(&live, "score"));
    assert_eq!(f(&v2, "quality"), f(&live, "quality"));

    let cases: [(&str, Vec<u8>, &str); 4] = [
        (
            "group-1.jpg",
            fixture_bytes("group-1.jpg"),
            "TOO_MANY_FACES",
        ),
        ("blank.jpg", blank_jpeg(640, 480), "FACE_NOT_FOUND"),
        ("tiny.jpg", blank_jpeg(16, 16), "IMAGE_TOO_SMALL"),
        (
            "junk.jpg",
            b"definitely not an image".to_vec(),
            "FAILED_TO_READ_IMAGE",
        ),
    ];
    for (name, bytes, code) in &cases {
        let v = liveness(&h, "/check_liveness", &[(name, bytes)]).await;
        assert_eq!(keys(&v), key_set(ERROR_KEYS), "{name}");
        assert_eq!(v["error_code"], *code, "{name}: {v}");
        assert!(!v["error"].as_str().unwrap().is_empty());
    }
    let g = liveness(&h, "/check_liveness", &[("g.jpg", &cases[0].1)]).await;
    assert_eq!(g["error"], "Too many faces detected");

    // Unknown pipeline: the reference's body, status 200.
    let a = post_multipart(
        &h,
        "/check_liveness?pipeline=astraea",
        &[file("image", "t1.jpg", &t1)],
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.json(),
        json!({"error": UNSUPPORTED_PIPELINE, "error_code": null})
    );

    // Malformed requests are 200 with an error and a null code.
    let bad_requests: [(&str, &[u8]); 3] = [
        (
            "multipart/form-data; boundary=xyz",
            b"--xyz\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\nno end",
        ),
        ("multipart/form-data", b"whatever"),
        ("image/jpeg", &t1),
    ];
    for (ct, body) in bad_requests {
        let a = request(
            &h,
            Method::POST,
            "/check_liveness",
            &[("content-type", ct)],
            Bytes::copy_from_slice(body),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{ct}");
        let v = a.json();
        assert_eq!(keys(&v), key_set(ERROR_KEYS), "{ct}");
        assert_eq!(v["error_code"], Value::Null, "{ct}");
    }
    let empty = post_multipart(&h, "/check_liveness", &[], &[]).await.json();
    assert_eq!(empty["error_code"], Value::Null);
    assert!(empty["error"].as_str().unwrap().contains("no image"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_accumulate_into_one_result() {
    let h = start(config(|_| {}), Services::default()).await;
    let t1 = fixture_bytes("image_T1.jpg");
    let f1 = fixture_bytes("image_F1.jpg");
    let group = fixture_bytes("group-1.jpg");
    let blank = blank_jpeg(640, 480);
    let a = liveness(&h, "/check_liveness", &[("a.jpg", &t1)]).await;
    let b = liveness(&h, "/check_liveness", &[("b.jpg", &f1)]).await;
    let ab = liveness(&h, "/check_liveness", &[("a.jpg", &t1), ("b.jpg", &f1)]).await;
    assert_eq!(keys(&ab), key_set(VERDICT_KEYS));
    let mean = |k| (f(&a, k) + f(&b, k)) / 2.0;
    assert!((f(&ab, "score") - mean("score")).abs() < 1e-4, "{ab}");
    assert!((f(&ab, "quality") - mean("quality")).abs() < 1e-4, "{ab}");
    // The probability comes from the mean score, so it lies between the two.
    let (lo, hi) = (
        f(&a, "probability").min(f(&b, "probability")),
        f(&a, "probability").max(f(&b, "probability")),
    );
    assert!(f(&ab, "probability") > lo && f(&ab, "probability") < hi);
    // Rejected images are left out of the mean.
    let with_group = liveness(&h, "/check_liveness", &[("g.jpg", &group), ("a.jpg", &t1)]).await;
    assert!((f(&with_group, "score") - f(&a, "score")).abs() < 1e-4);
    // None with a verdict: the first image's error.
    let none = liveness(
        &h,
        "/check_liveness",
        &[("g.jpg", &group), ("blank.jpg", &blank)],
    )
    .await;
    assert_eq!(none["error_code"], "TOO_MANY_FACES");
    let none = liveness(
        &h,
        "/check_liveness",
        &[("blank.jpg", &blank), ("g.jpg", &group)],
    )
    .await;
    assert_eq!(none["error_code"], "FACE_NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_image_runs_every_pipeline_and_calibration() {
    let h = start(config(|_| {}), Services::default()).await;
    let t1 = fixture_bytes("image_T1.jpg");
    let data = br#"{"domain":"GENERAL","pipelines":[
        {"pipeline":"minifasnet-dual","calibration":"REGULAR"},
        {"pipeline":"minifasnet-dual","calibration":"HARDENED"},
        {"pipeline":"minifasnet-v2","calibration":"SOFT"},
        {"pipeline":"minifasnet-v1se"}]}"#;
    let a = post_multipart(
        &h,
        "/check_image",
        &[field("data", data), file("image", "t1.jpg", &t1)],
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let v = a.json();
    assert_eq!(
        keys(&v),
        key_set(&["serverVersion", "licenseExpirationDate", "results"])
    );
    assert_eq!(v["serverVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["licenseExpirationDate"], "2999-12-31");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 4);
    for (i, (p, c)) in [
        ("minifasnet-dual", "REGULAR"),
        ("minifasnet-dual", "HARDENED"),
        ("minifasnet-v2", "SOFT"),
        ("minifasnet-v1se", "REGULAR"),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(
            keys(&r[i]),
            key_set(&["pipeline", "calibration", "score", "probability", "quality"])
        );
        assert_eq!(
            (r[i]["pipeline"].as_str(), r[i]["calibration"].as_str()),
            (Some(*p), Some(*c))
        );
    }
    assert_eq!(f(&r[0], "score"), f(&r[1], "score"));
    assert!(f(&r[1], "probability") < f(&r[0], "probability"));
    // Same as check_liveness for the default pipeline and REGULAR.
    let single = liveness(&h, "/check_liveness", &[("t1.jpg", &t1)]).await;
    assert!((f(&r[0], "probability") - f(&single, "probability")).abs() < 1e-6);

    // A rejected image: an error per pipeline.
    let group = fixture_bytes("group-1.jpg");
    let data = br#"{"domain":"DESKTOP","pipelines":[{"pipeline":"minifasnet-dual","calibration":"REGULAR"},{"pipeline":"minifasnet-v2","calibration":"HARDENED"}]}"#;
    let v = post_multipart(
        &h,
        "/check_image",
        &[field("data", data), file("image", "g.jpg", &group)],
        &[],
    )
    .await
    .json();
    for r in v["results"].as_array().unwrap() {
        assert_eq!(
            keys(r),
            key_set(&["pipeline", "calibration", "error", "error_code"])
        );
        assert_eq!(r["error_code"], "TOO_MANY_FACES");
    }
    // No pipelines: the default pipeline under REGULAR.
    let v = post_multipart(
        &h,
        "/check_image",
        &[field("data", b"{}"), file("image", "t1.jpg", &t1)],
        &[],
    )
    .await
    .json();
    assert_eq!(v["results"][0]["pipeline"], "minifasnet-dual");
    assert_eq!(v["results"][0]["calibration"], "REGULAR");

    // Malformed request data: 400 with an error body.
    let many = format!(
        r#"{{"pipelines":[{}]}}"#,
        vec![r#"{"pipeline":"minifasnet-v2"}"#; 300_000].join(",")
    );
    let cases: [(&[u8], bool, bool, &str); 8] = [
        (many.as_bytes(), true, true, "at most 12 per request"),
        (b"{not json", true, true, "malformed JSON"),
        (br#"{"domain":"MOBILE"}"#, true, true, "unknown domain"),
        (
            br#"{"pipelines":[{"pipeline":"minifasnet-v2","calibration":"EXTREME"}]}"#,
            true,
            true,
            "unknown calibration",
        ),
        (
            br#"{"pipelines":[{"pipeline":"perseus"}]}"#,
            true,
            true,
            UNSUPPORTED_PIPELINE,
        ),
        (br#"{"pipelines":"all"}"#, true, true, "malformed JSON"),
        (b"{}", false, true, "\"data\""),
        (b"{}", true, false, "\"image\""),
    ];
    for (data, with_data, with_image, msg) in cases {
        let mut parts = Vec::new();
        if with_data {
            parts.push(field("data", data));
        }
        if with_image {
            parts.push(file("image", "t1.jpg", &t1));
        }
        let a = post_multipart(&h, "/check_image", &parts, &[]).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{msg}");
        let v = a.json();
        assert_eq!(keys(&v), key_set(ERROR_KEYS));
        assert!(v["error"].as_str().unwrap().contains(msg), "{v}");
    }
    let a = request(
        &h,
        Method::POST,
        "/check_image",
        &[("content-type", "multipart/form-data; boundary=q")],
        Bytes::from_static(b"--q\r\ngarbage"),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_entries_are_keyed_by_file_name() {
    let h = start(config(|_| {}), Services::default()).await;
    let t1 = fixture_bytes("image_T1.jpg");
    let f2 = fixture_bytes("image_F2.jpg");
    let group = fixture_bytes("group-1.jpg");
    let a = post_multipart(
        &h,
        "/check_liveness_batch",
        &[
            file("images", "live.jpg", &t1),
            file("images", "replay.jpg", &f2),
            file("images", "group.jpg", &group),
            field("unnamed-part", b"junk"),
        ],
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let v = a.json();
    let entries = v.as_array().expect("an array");
    assert_eq!(entries.len(), 4);
    let by = |n: &str| {
        entries
            .iter()
            .find(|e| e["file_name"] == n)
            .unwrap_or_else(|| panic!("no entry {n}: {v}"))
            .clone()
    };
    let live = by("live.jpg");
    assert_eq!(
        keys(&live),
        key_set(&["file_name", "probability", "quality", "score"])
    );
    assert!(f(&live, "probability") > 0.5);
    assert!(f(&by("replay.jpg"), "probability") < 0.5);
    let g = by("group.jpg");
    assert_eq!(keys(&g), key_set(&["file_name", "error", "error_code"]));
    assert_eq!(g["error_code"], "TOO_MANY_FACES");
    assert_eq!(by("unnamed-part")["error_code"], "FAILED_TO_READ_IMAGE");

    // The pipeline parameter applies to every entry.
    let v1se = post_multipart(
        &h,
        "/check_liveness_batch?pipeline=minifasnet-v1se",
        &[file("images", "live.jpg", &t1)],
        &[],
    )
    .await
    .json();
    assert_eq!(v1se[0]["file_name"], "live.jpg");
    assert_ne!(f(&v1se[0], "score"), f(&live, "score"));

    // Request-level errors are an object, not an array.
    let a = post_multipart(
        &h,
        "/check_liveness_batch?pipeline=dfd-1",
        &[file("images", "live.jpg", &t1)],
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.json(),
        json!({"error": UNSUPPORTED_PIPELINE, "error_code": null})
    );
    let v = post_multipart(&h, "/check_liveness_batch", &[], &[])
        .await
        .json();
    assert_eq!(keys(&v), key_set(ERROR_KEYS));
}

/// Whether a full read of `path` said more pages follow.
async fn records_headers_have_cursor(h: &facegate::server::ServerHandle, path: &str) -> bool {
    get(h, path).await.headers.contains_key("x-next-cursor")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bi_records_and_report_follow_dates_and_meta() {
    let h = start(config(|_| {}), Services::default()).await;
    let t1 = fixture_bytes("image_T1.jpg");
    let group = fixture_bytes("group-1.jpg");
    let send = |img: Vec<u8>, meta: Option<&'static str>| {
        let h = &h;
        async move {
            let mut extra = Vec::new();
            if let Some(m) = meta {
                extra.push(("meta", m));
            }
            let a = post_multipart(
                h,
                "/check_liveness",
                &[file("image", "x.jpg", &img)],
                &extra,
            )
            .await;
            assert_eq!(a.status, StatusCode::OK);
            a.json()
        }
    };
    send(t1.clone(), Some(r#"{"os":"IOS","model":"iPhone15,2"}"#)).await;
    let v = send(t1.clone(), Some("{{{ not json")).await;
    assert_eq!(
        keys(&v),
        key_set(VERDICT_KEYS),
        "a malformed Meta header is ignored"
    );
    send(group.clone(), Some("os=android")).await;
    let data = br#"{"domain":"DESKTOP","pipelines":[{"pipeline":"minifasnet-v2","calibration":"HARDENED"}]}"#;
    post_multipart(
        &h,
        "/idlive/check_image",
        &[field("data", data), file("image", "t1.jpg", &t1)],
        &[],
    )
    .await;

    let records = get(&h, "/bi_records").await;
    assert_eq!(records.status, StatusCode::OK);
    let records = records.json();
    let rs = records.as_array().unwrap();
    assert_eq!(rs.len(), 4, "{records}");
    let r0 = &rs[0];
    assert_eq!(
        keys(r0),
        key_set(&[
            "time",
            "route",
            "dialect",
            "pipeline",
            "calibration",
            "domain",
            "os",
            "probability",
            "quality",
            "error_code",
            "latency_ms"
        ])
    );
    assert_eq!(r0["route"], "/check_liveness");
    assert_eq!(r0["dialect"], "idlive");
    assert_eq!(r0["pipeline"], "minifasnet-dual");
    assert_eq!(r0["calibration"], "REGULAR");
    assert_eq!(r0["os"], "IOS");
    assert!(r0["probability"].as_f64().unwrap() > 0.5);
    assert_eq!(rs[1]["os"], "UNKNOWN");
    assert_eq!(rs[2]["os"], "ANDROID");
    assert_eq!(rs[2]["error_code"], "TOO_MANY_FACES");
    assert!(!records_headers_have_cursor(&h, "/bi_records").await);
    // Paging: pages of 3 then 1, resumed by the cursor; together the same records.
    let first = get(&h, "/bi_records?limit=3").await;
    let cursor = first.headers["x-next-cursor"].to_str().unwrap().to_string();
    let second = get(&h, &format!("/bi_records?limit=3&after={cursor}")).await;
    assert!(!second.headers.contains_key("x-next-cursor"));
    let mut paged = first.json().as_array().unwrap().clone();
    paged.extend(second.json().as_array().unwrap().iter().cloned());
    assert_eq!(&paged, rs);
    for bad in ["limit=0", "limit=100001", "limit=x", "after=nope", "page=2"] {
        let a = get(&h, &format!("/idlive/bi_records?{bad}")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(rs[2]["probability"], Value::Null);
    assert_eq!(rs[3]["route"], "/check_image");
    assert_eq!(rs[3]["domain"], "DESKTOP");
    assert_eq!(rs[3]["pipeline"], "minifasnet-v2");
    assert_eq!(rs[3]["calibration"], "HARDENED");

    // Dates: yyyy-MM-dd, date_to inclusive.
    let today = today().to_string();
    let count = |q: String| {
        let h = &h;
        async move {
            let a = get(h, &format!("/idlive/bi_records?{q}")).await;
            assert_eq!(a.status, StatusCode::OK, "{q}");
            a.json().as_array().unwrap().len()
        }
    };
    assert_eq!(count(format!("date_from={today}&date_to={today}")).await, 4);
    assert_eq!(count(format!("date_to={today}")).await, 4);
    assert_eq!(count(format!("date_to={}", day_offset(-1))).await, 0);
    assert_eq!(count(format!("date_from={}", day_offset(1))).await, 0);
    assert_eq!(count(format!("date_from={}", day_offset(-3))).await, 4);
    for bad in [
        "date_from=2024-13-01",
        "date_to=31.12.2024",
        "date_from=2024-1-1",
        "date_from=2024-03-02&date_to=2024-03-01",
    ] {
        for path in ["/bi_records", "/bi_report"] {
            let a = get(&h, &format!("{path}?{bad}")).await;
            assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path}?{bad}");
            let v = a.json();
            assert_eq!(keys(&v), key_set(ERROR_KEYS));
            assert!(v["error"].as_str().unwrap().contains("date"), "{v}");
        }
    }

    // The report: the reference's key format.
    let report = get(&h, &format!("/bi_report?date_from={today}&date_to={today}"))
        .await
        .json();
    let m = report.as_object().unwrap();
    assert_eq!(m["total"], 4);
    assert_eq!(m["minifasnet-dual_ANDROID_TOO_MANY_FACES"], 1);
    assert_eq!(m["minifasnet-dual_IOS_probability_0.9-1.0"], 1);
    assert!(m.contains_key("minifasnet-dual_UNKNOWN_probability_0.9-1.0"));
    assert!(m
        .keys()
        .any(|k| k.starts_with("minifasnet-v2_UNKNOWN_quality_")));
    for (k, v) in m {
        if k == "total" {
            continue;
        }
        let ok_hist = ["probability", "quality"].iter().any(|kind| {
            k.split_once(&format!("_{kind}_")).is_some_and(|(_, bin)| {
                bin.len() == 7 && bin.as_bytes()[1] == b'.' && bin.as_bytes()[3] == b'-'
            })
        });
        assert!(ok_hist || k.ends_with("_TOO_MANY_FACES"), "{k}");
        assert!(v.as_u64().unwrap() >= 1);
    }
    let empty = get(&h, &format!("/bi_report?date_to={}", day_offset(-1)))
        .await
        .json();
    assert_eq!(empty, json!({"total": 0}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_is_200_with_an_error_and_retry_after() {
    // A loader that waits until the test ends: the server stays "loading".
    let (tx, rx) = mpsc::channel::<()>();
    let cfg = config(|_| {});
    let loader: Loader = Box::new(move || {
        let _ = rx.recv();
        Err(facegate::Error::Unavailable("test over".into()))
    });
    let batcher = Batcher::start(cfg.server.batcher(), loader).unwrap();
    let h = app::start(&cfg, batcher, Services::default())
        .await
        .unwrap();
    let t1 = fixture_bytes("image_T1.jpg");
    for path in ["/check_liveness", "/check_liveness_batch"] {
        let a = post_multipart(&h, path, &[file("image", "t1.jpg", &t1)], &[]).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        assert_eq!(a.headers.get("retry-after").unwrap(), "1", "{path}");
        let v = a.json();
        let e = if path == "/check_liveness" {
            v
        } else {
            v[0].clone()
        };
        assert_eq!(e["error_code"], Value::Null, "{path}: {e}");
        assert!(e["error"].as_str().unwrap().contains("loading"), "{e}");
    }
    let a = post_multipart(
        &h,
        "/check_image",
        &[field("data", b"{}"), file("image", "t1.jpg", &t1)],
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers.get("retry-after").unwrap(), "1");
    assert_eq!(a.json()["results"][0]["error_code"], Value::Null);
    drop(tx);
    h.shutdown();
    h.stopped().await;
}

/// A CORS preflight for a POST to `path` from `origin`.
async fn preflight(h: &server::ServerHandle, path: &str, origin: &str) -> Answer {
    let headers = [
        ("Origin", origin),
        ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "content-type"),
    ];
    request(h, Method::OPTIONS, path, &headers, Bytes::new()).await
}

/// `image_T1.jpg` posted as multipart to `/check_liveness` from `origin`.
async fn post_from(h: &server::ServerHandle, origin: &str) -> Answer {
    let t1 = fixture_bytes("image_T1.jpg");
    post_multipart(
        h,
        "/check_liveness",
        &[file("image", "t1.jpg", &t1)],
        &[("Origin", origin)],
    )
    .await
}

/// The value of header `k`, empty when absent.
fn header(a: &Answer, k: &str) -> String {
    a.headers
        .get(k)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// ID R&D's web capture sample posts a canvas frame as multipart to `/check_liveness` from the
/// integrator's origin. Without CORS configured its preflight is refused (405) and no answer
/// carries `Access-Control-Allow-Origin`; with the origin allowed, the preflight is granted
/// (also for a route behind BioID's JWT: a preflight carries no credentials), the answer and
/// its errors carry the CORS headers, and another origin still gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_on_allowed_origins_get_cors_and_others_do_not() {
    let (page, other) = ("http://127.0.0.1:8111", "http://127.0.0.1:8112");
    const ALLOW: &str = "access-control-allow-origin";

    // Off by default.
    let h = start(config(|_| {}), Services::default()).await;
    let a = preflight(&h, "/check_liveness", page).await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(header(&a, ALLOW), "");
    let a = post_from(&h, page).await;
    assert_eq!(
        (a.status, header(&a, ALLOW)),
        (StatusCode::OK, String::new())
    );
    h.shutdown();
    h.stopped().await;

    let h = start(
        config(|c| c.server.cors.allowed_origins = vec![page.to_string()]),
        Services::default(),
    )
    .await;
    for path in [
        "/check_liveness",
        "/idlive/check_liveness",
        "/api/v1/livenessdetection",
    ] {
        let a = preflight(&h, path, page).await;
        assert_eq!(a.status, StatusCode::NO_CONTENT, "{path}");
        assert_eq!(header(&a, ALLOW), page, "{path}");
        assert!(
            header(&a, "access-control-allow-methods").contains("POST"),
            "{path}"
        );
        assert!(
            header(&a, "access-control-allow-headers").contains("content-type"),
            "{path}"
        );
        assert_eq!(header(&a, "access-control-max-age"), "600", "{path}");
        assert!(header(&a, "vary").contains("Origin"), "{path}");
    }
    // The answer, and an error in IDLive's own format, both readable by the page.
    let a = post_from(&h, page).await;
    assert_eq!(
        (a.status, header(&a, ALLOW)),
        (StatusCode::OK, page.to_string())
    );
    assert_eq!(header(&a, "access-control-expose-headers"), "x-request-id");
    assert!(a.json()["probability"].is_number(), "{}", a.json());
    let headers = [("Origin", page), ("Content-Type", "text/plain")];
    let body = Bytes::from_static(b"not an image");
    let a = request(&h, Method::POST, "/check_liveness", &headers, body).await;
    assert!(a.json()["error"].is_string(), "{}", a.json());
    assert_eq!(header(&a, ALLOW), page);
    // Another origin: its preflight is refused and no answer carries CORS headers.
    let a = preflight(&h, "/check_liveness", other).await;
    assert_eq!(
        (a.status, header(&a, ALLOW)),
        (StatusCode::FORBIDDEN, String::new())
    );
    assert_eq!(a.json()["error"]["kind"], "cors_refused");
    let a = post_from(&h, other).await;
    assert_eq!(
        (a.status, header(&a, ALLOW)),
        (StatusCode::OK, String::new())
    );
    // A path no dialect serves.
    assert_eq!(
        preflight(&h, "/nowhere", page).await.status,
        StatusCode::NOT_FOUND
    );
    h.shutdown();
    h.stopped().await;

    // "*" only alone and never with credentials; origins are checked at start.
    let bad = |toml: &str| match app::Config::parse(toml, "test.toml") {
        Ok(c) => facegate::config::validate_server(&c.server)
            .unwrap_err()
            .to_string(),
        Err(e) => e.to_string(),
    };
    let e = bad("[server.cors]\nallowed_origins = [\"*\"]\nallow_credentials = true\n");
    assert!(e.contains("cannot go with allow_credentials"), "{e}");
    let e = bad("[server.cors]\nallowed_origins = [\"localhost:3000\"]\n");
    assert!(e.contains("is not an origin"), "{e}");
    let e = bad("[server.cors]\nallowed_origin = [\"http://a.example\"]\n");
    assert!(e.contains("allowed_origin"), "{e}");
}
