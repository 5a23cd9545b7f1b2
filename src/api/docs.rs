//! What the server serves about itself: the OpenAPI document (`GET /openapi.json`), Swagger UI
//! (`GET /swagger-ui/index.html`, its assets compiled into the binary, no CDN) and the capture
//! console (`GET /console/`, static files compiled in: no external asset). Both can be turned
//! off (`server.docs`, `server.console`).

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use hyper::{Method, Request, Response, StatusCode};

use crate::server::{handler, Ctx, HttpResponse, Mount, RouteSpec};

/// Dialect name of these routes (the server's own).
pub const DIALECT: &str = "server";

/// The console's files: name, media type, contents.
const CONSOLE_FILES: &[(&str, &str, &str)] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_str!("console/index.html"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("console/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("console/console.css"),
    ),
];

/// The serialized OpenAPI document, set once the router is known.
pub type SpecCell = Arc<OnceLock<Bytes>>;

/// A plain answer with `status`, media type and body.
fn plain(status: StatusCode, media: &str, body: impl Into<Bytes>) -> HttpResponse {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(media) {
        r.headers_mut().insert(CONTENT_TYPE, v);
    }
    r
}

/// A 404 naming what is missing.
fn not_found(what: &str) -> HttpResponse {
    plain(
        StatusCode::NOT_FOUND,
        "text/plain; charset=utf-8",
        format!("no such file: {what}\n"),
    )
}

/// A permanent redirect to `to`.
fn redirect(to: &'static str) -> HttpResponse {
    let mut r = plain(
        StatusCode::MOVED_PERMANENTLY,
        "text/plain; charset=utf-8",
        "",
    );
    r.headers_mut()
        .insert(LOCATION, HeaderValue::from_static(to));
    r
}

/// `GET /openapi.json`.
fn openapi(spec: &SpecCell) -> HttpResponse {
    match spec.get() {
        Some(b) => plain(StatusCode::OK, "application/json", b.clone()),
        // Only between building the registry and the server taking requests.
        None => plain(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            "the OpenAPI document is being generated\n",
        ),
    }
}

/// `GET /swagger-ui/{file}`: Swagger UI's files, its initializer pointing at `/openapi.json`.
fn swagger(file: &str, config: &Arc<utoipa_swagger_ui::Config<'static>>) -> HttpResponse {
    match utoipa_swagger_ui::serve(file, config.clone()) {
        Ok(Some(f)) => {
            let mut r = plain(StatusCode::OK, &f.content_type, f.bytes.into_owned());
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            r
        }
        Ok(None) => not_found(file),
        Err(e) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            format!("Swagger UI: {e}\n"),
        ),
    }
}

/// `GET /console/{file}`.
fn console(file: &str) -> HttpResponse {
    match CONSOLE_FILES.iter().find(|(n, _, _)| *n == file) {
        Some((_, media, body)) => {
            let mut r = plain(StatusCode::OK, media, *body);
            let h = r.headers_mut();
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            // The console loads nothing from elsewhere and talks only to this server.
            h.insert(
                "content-security-policy",
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob: mediastream:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
                ),
            );
            r
        }
        None => not_found(file),
    }
}

/// The rows of the documentation routes (`docs`) and of the console (`console`).
pub fn routes(spec: &SpecCell, docs: bool, console_on: bool) -> Vec<RouteSpec> {
    let mut rows = Vec::new();
    let get = |path: &'static str, name: &'static str, h| {
        RouteSpec::new(Method::GET, path, DIALECT, name, Mount::Exact, h)
    };
    if docs {
        let cell = spec.clone();
        rows.push(get(
            "/openapi.json",
            "openapi",
            handler(move |_r: Request<Bytes>, _c: Ctx| {
                let cell = cell.clone();
                async move { openapi(&cell) }
            }),
        ));
        let config = Arc::new(
            utoipa_swagger_ui::Config::from("/openapi.json")
                // No call to the public validator: nothing leaves the machine.
                .validator_url("none")
                .try_it_out_enabled(true)
                .display_request_duration(true),
        );
        rows.push(get(
            "/swagger-ui",
            "swagger_ui.redirect",
            handler(|_r: Request<Bytes>, _c: Ctx| async { redirect("/swagger-ui/index.html") }),
        ));
        rows.push(get(
            "/swagger-ui/",
            "swagger_ui.redirect_slash",
            handler(|_r: Request<Bytes>, _c: Ctx| async { redirect("/swagger-ui/index.html") }),
        ));
        rows.push(get(
            "/swagger-ui/{file}",
            "swagger_ui.file",
            handler(move |_r: Request<Bytes>, c: Ctx| {
                let config = config.clone();
                async move { swagger(c.param("file").unwrap_or(""), &config) }
            }),
        ));
    }
    if console_on {
        rows.push(get(
            "/console",
            "console.redirect",
            handler(|_r: Request<Bytes>, _c: Ctx| async { redirect("/console/") }),
        ));
        rows.push(get(
            "/console/",
            "console.index",
            handler(|_r: Request<Bytes>, _c: Ctx| async { console("index.html") }),
        ));
        rows.push(get(
            "/console/{file}",
            "console.file",
            handler(
                |_r: Request<Bytes>, c: Ctx| async move { console(c.param("file").unwrap_or("")) },
            ),
        ));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_files_are_self_contained() {
        for (name, _, body) in CONSOLE_FILES {
            for external in ["http://", "https://", "//cdn", "@import"] {
                assert!(
                    !body.contains(external),
                    "{name} refers to something outside the server: {external}"
                );
            }
        }
        assert_eq!(console("nope.js").status(), StatusCode::NOT_FOUND);
        assert_eq!(console("index.html").status(), StatusCode::OK);
    }

    #[test]
    fn swagger_ui_is_vendored_and_points_at_the_document() {
        let config = Arc::new(utoipa_swagger_ui::Config::from("/openapi.json"));
        let index = swagger("index.html", &config);
        assert_eq!(index.status(), StatusCode::OK);
        let init = swagger("swagger-initializer.js", &config);
        assert_eq!(init.status(), StatusCode::OK);
        assert_eq!(
            swagger("missing.js", &config).status(),
            StatusCode::NOT_FOUND
        );
    }
}
