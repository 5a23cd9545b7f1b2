//! The OpenAPI document (`GET /openapi.json`) against the route registry: every served route
//! is described (under its prefix and at its bare path), every example validates against its
//! schema, authentication shows as security requirements, and Swagger UI is served from the
//! binary. (Every answer the other integration tests receive is checked against the document
//! too: `common::http::request`.)

mod common;

use common::http::*;
use common::openapi::{template, validate};
use facegate::app::{self, Config, Services};
use hyper::StatusCode;
use serde_json::Value;

const KEY: &str = "openapi-test-key-0123456789";

/// The routes the registry of `cfg` serves: (method, path, dialect).
fn served(cfg: &Config) -> Vec<(String, String, String)> {
    let dialects = app::dialects(cfg, Services::default()).unwrap();
    let (reg, owners) = app::registry(cfg, &dialects).unwrap();
    reg.build(&owners)
        .unwrap()
        .served()
        .into_iter()
        .map(|s| {
            (
                s.info.method.as_str().to_ascii_lowercase(),
                s.info.path.clone(),
                s.info.dialect.to_string(),
            )
        })
        .collect()
}

/// Every (schema, example) pair of the document: request bodies and responses.
fn examples(spec: &Value) -> Vec<(String, Value, Value)> {
    let mut out = Vec::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let id = op["operationId"].as_str().unwrap_or("?").to_string();
            let mut contents = Vec::new();
            if let Some(c) = op["requestBody"]["content"].as_object() {
                contents.extend(c.iter().map(|(m, v)| (format!("{id} request {m}"), v)));
            }
            for (status, r) in op["responses"].as_object().unwrap() {
                if let Some(c) = r["content"].as_object() {
                    contents.extend(c.iter().map(|(m, v)| (format!("{id} {status} {m}"), v)));
                }
            }
            for (what, c) in contents {
                if let Some(x) = c.get("example") {
                    out.push((
                        format!("{method} {path}: {what}"),
                        c["schema"].clone(),
                        x.clone(),
                    ));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_served_route_is_described_and_every_example_validates() {
    let cfg = config(|_| {});
    let h = start(cfg.clone(), Services::default()).await;
    let a = get(&h, "/openapi.json").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["content-type"], "application/json");
    let spec = a.json();
    assert_eq!(spec["openapi"], "3.1.0");
    let tags: Vec<&str> = spec["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let routes = served(&cfg);
    let mut ids = std::collections::HashSet::new();
    for (method, path, dialect) in &routes {
        let op = &spec["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not described");
        assert_eq!(op["tags"][0], dialect.as_str(), "{method} {path}");
        assert!(tags.contains(&dialect.as_str()), "no tag {dialect}");
        let id = op["operationId"].as_str().unwrap();
        assert!(ids.insert(id.to_string()), "operationId {id} twice");
        assert!(
            !op["responses"].as_object().unwrap().is_empty(),
            "{method} {path}: no responses"
        );
        // Every `{name}` segment is a path parameter.
        for seg in path.split('/').filter(|s| s.starts_with('{')) {
            let name = seg.trim_matches(|c| c == '{' || c == '}');
            assert!(
                op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path")),
                "{method} {path}: no path parameter {name}"
            );
        }
    }
    // Nothing described that is not served.
    let described: usize = spec["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|i| i.as_object().unwrap().len())
        .sum();
    assert_eq!(described, routes.len());
    // Each dialect under its prefix and at the bare paths it owns.
    for (prefixed, bare) in [
        ("/idlive/check_liveness", "/check_liveness"),
        ("/iad/check_capture_liveness", "/check_capture_liveness"),
        (
            "/bioid/api/v1/livenessdetection",
            "/api/v1/livenessdetection",
        ),
        ("/knomi/checkLiveness", "/checkLiveness"),
    ] {
        assert!(spec["paths"][prefixed]["post"].is_object(), "{prefixed}");
        assert!(spec["paths"][bare]["post"].is_object(), "{bare}");
    }
    for t in [
        "idlive", "iad", "bioid", "knomi", "oz", "facegate", "server",
    ] {
        assert!(tags.contains(&t), "tag {t} missing: {tags:?}");
    }
    // BWS's bearer JWT is always required; nothing else without keys configured.
    assert_eq!(
        spec["paths"]["/bioid/api/v1/livenessdetection"]["post"]["security"],
        serde_json::json!([{"bws_jwt": []}])
    );
    assert!(spec["paths"]["/idlive/check_liveness"]["post"]["security"].is_null());
    assert!(spec["components"]["securitySchemes"]["bws_jwt"].is_object());
    // The examples validate against their schemas, and there is one for each dialect.
    let ex = examples(&spec);
    for (what, schema, example) in &ex {
        if let Err(e) = validate(schema, example) {
            panic!("{what}: example does not validate: {e}\n  example {example}");
        }
    }
    for t in ["idlive", "iad", "bioid", "knomi", "oz", "facegate"] {
        assert!(
            ex.iter()
                .any(|(w, _, _)| w.contains(&format!(" {t}.")) || w.contains(&format!("{t}."))),
            "no example in dialect {t}"
        );
    }
    // The templates match what the router matches.
    assert_eq!(
        template(&spec, "/swagger-ui/index.html"),
        Some("/swagger-ui/{file}")
    );
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_keys_show_as_security_requirements() {
    let cfg = config(|c| c.auth.api_keys = vec![format!("ops:{KEY}")]);
    let h = start(cfg, Services::default()).await;
    let spec = get(&h, "/openapi.json").await.json();
    let sec = &spec["paths"]["/idlive/check_liveness"]["post"]["security"];
    assert_eq!(
        sec,
        &serde_json::json!([{"api_key": []}, {"api_key_bearer": []}])
    );
    assert_eq!(
        spec["components"]["securitySchemes"]["api_key"]["name"],
        "X-API-Key"
    );
    // The document, Swagger UI and the probes stay open.
    assert!(spec["paths"]["/openapi.json"]["get"]["security"].is_null());
    assert!(spec["paths"]["/health"]["get"]["security"].is_null());
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_is_served_from_the_binary_and_reads_the_document() {
    let h = start(config(|_| {}), Services::default()).await;
    let index = get(&h, "/swagger-ui/index.html").await;
    assert_eq!(index.status, StatusCode::OK);
    assert!(index.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = String::from_utf8_lossy(&index.body).to_string();
    assert!(html.contains("swagger-ui-bundle.js"), "{html}");
    // Everything the page loads is a relative path served here.
    for src in html
        .split(['"', '\''])
        .filter(|s| s.ends_with(".js") || s.ends_with(".css") || s.ends_with(".png"))
    {
        assert!(!src.contains("//"), "index.html loads {src}");
        let a = get(&h, &format!("/swagger-ui/{}", src.trim_start_matches("./"))).await;
        assert_eq!(a.status, StatusCode::OK, "{src}");
    }
    let init = get(&h, "/swagger-ui/swagger-initializer.js").await;
    let init = String::from_utf8_lossy(&init.body).to_string();
    assert!(init.contains("/openapi.json"), "{init}");
    assert!(init.contains("\"validatorUrl\": \"none\"") || init.contains("validatorUrl"));
    let r = get(&h, "/swagger-ui").await;
    assert_eq!(r.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(r.headers["location"], "/swagger-ui/index.html");
    assert_eq!(
        get(&h, "/swagger-ui/nope.js").await.status,
        StatusCode::NOT_FOUND
    );
    h.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docs_and_console_can_be_turned_off() {
    let h = start(
        config(|c| {
            c.server.docs = false;
            c.server.console = false;
        }),
        Services::default(),
    )
    .await;
    for p in [
        "/openapi.json",
        "/swagger-ui/index.html",
        "/console/",
        "/console/console.js",
    ] {
        assert_eq!(get(&h, p).await.status, StatusCode::NOT_FOUND, "{p}");
    }
    assert_eq!(get(&h, "/health").await.status, StatusCode::OK);
    h.shutdown();
    let h = start(config(|c| c.server.docs = false), Services::default()).await;
    assert_eq!(get(&h, "/console/").await.status, StatusCode::OK);
    assert_eq!(get(&h, "/openapi.json").await.status, StatusCode::NOT_FOUND);
    h.shutdown();
}
