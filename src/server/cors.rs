//! Cross-origin requests from browsers (CORS), for every mounted route of every dialect.
//!
//! Off by default: with no allowed origin configured the server sends no CORS header and an
//! `OPTIONS` preflight is answered like any unknown method (405). With origins configured
//! (`[server.cors]`, `--cors-origin`):
//! - a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) for a mounted
//!   path from an allowed origin is answered 204 with the allowed origin, the methods of that
//!   path (within `allowed_methods`), `allowed_headers` and `Access-Control-Max-Age`, before any
//!   authentication (browsers send no credentials on a preflight);
//! - every answer to an allowed origin carries `Access-Control-Allow-Origin`, `Vary: Origin`
//!   and `Access-Control-Expose-Headers`, errors included, so that the page can read them;
//! - an origin not allowed gets no CORS header at all (its preflight: 403 saying why).
//!
//! `*` allows any origin, only when configured as such, and never together with credentials.

use hyper::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS,
    ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use hyper::{Method, StatusCode};

use super::routes::{Resolved, Router};
use super::{server_error, HttpResponse};
use crate::config::{parse_origin, CorsConfig};
use crate::{Error, Result};

/// Who may call: any origin, or these (lower-case, as browsers serialise them).
#[derive(Debug, Clone, PartialEq)]
enum Origins {
    Any,
    List(Vec<String>),
}

/// The checked CORS policy the server applies.
#[derive(Debug, Clone)]
pub struct Cors {
    origins: Origins,
    methods: Vec<Method>,
    allow_headers: HeaderValue,
    expose_headers: Option<HeaderValue>,
    max_age: HeaderValue,
    credentials: bool,
}

impl Cors {
    /// The policy of `cfg`, `None` when no origin is allowed (CORS off); fails as
    /// [`CorsConfig::validate`] does.
    pub fn from_config(cfg: &CorsConfig) -> Result<Option<Cors>> {
        cfg.validate()?;
        if cfg.allowed_origins.is_empty() {
            return Ok(None);
        }
        // Checked above: every entry parses.
        let origins = if cfg.allowed_origins.iter().any(|o| o.trim() == "*") {
            Origins::Any
        } else {
            Origins::List(
                cfg.allowed_origins
                    .iter()
                    .filter_map(|o| parse_origin(o))
                    .collect(),
            )
        };
        let methods = cfg
            .allowed_methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.trim().to_ascii_uppercase().as_bytes()).ok())
            .collect();
        let list = |items: &[String]| {
            items
                .iter()
                .map(|i| i.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (allow, expose) = (list(&cfg.allowed_headers), list(&cfg.expose_headers));
        let value = |s: String| {
            HeaderValue::from_str(&s)
                .map_err(|_| Error::InvalidArgument(format!("server.cors: {s:?}")))
        };
        Ok(Some(Cors {
            origins,
            methods,
            allow_headers: value(allow)?,
            expose_headers: (!expose.is_empty()).then(|| value(expose)).transpose()?,
            max_age: HeaderValue::from(cfg.max_age_s),
            credentials: cfg.allow_credentials,
        }))
    }

    /// The `Access-Control-Allow-Origin` value for a request's `Origin`, `None` when that
    /// origin is not allowed (or the header is not an origin).
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        let o = origin.to_str().ok()?;
        match &self.origins {
            // Without credentials "*" is the honest answer and caches across origins.
            Origins::Any => Some(HeaderValue::from_static("*")),
            Origins::List(list) => {
                let o = parse_origin(o)?;
                list.contains(&o).then(|| origin.clone())
            }
        }
    }

    /// Whether `req` is a preflight: `OPTIONS` with `Origin` and
    /// `Access-Control-Request-Method`.
    pub fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
        method == Method::OPTIONS
            && headers.contains_key(ORIGIN)
            && headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// Answers a preflight for `path`: 204 with the grants for an allowed origin and a mounted
    /// path, 403 for an origin not allowed, 404 for a path no dialect serves.
    pub fn preflight(&self, router: &Router, path: &str, headers: &HeaderMap) -> HttpResponse {
        let origin = headers.get(ORIGIN);
        let Some(allowed) = origin.and_then(|o| self.allow_origin(o)) else {
            let o = origin.and_then(|o| o.to_str().ok()).unwrap_or("(not text)");
            return server_error(
                StatusCode::FORBIDDEN,
                "cors_refused",
                format!(
                    "origin {o} is not allowed to call this server (server.cors.allowed_origins)"
                ),
            );
        };
        // The methods this path has, within the configured ones (any method resolves to
        // Found or MethodNotAllowed with the path's list).
        let path_methods = match router.resolve(&Method::OPTIONS, path) {
            Resolved::NotFound => {
                return server_error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no route for {path}"),
                )
            }
            Resolved::MethodNotAllowed(m) => m,
            Resolved::Found(..) => vec![Method::OPTIONS],
        };
        let granted: Vec<&str> = path_methods
            .iter()
            .filter(|m| self.methods.contains(m))
            .map(Method::as_str)
            .collect();
        let mut r = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        if let Ok(v) = HeaderValue::from_str(&granted.join(", ")) {
            h.insert(ACCESS_CONTROL_ALLOW_METHODS, v);
        }
        h.insert(ACCESS_CONTROL_ALLOW_HEADERS, self.allow_headers.clone());
        h.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        if self.credentials {
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        h.append(
            VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        r
    }

    /// Adds the CORS headers of an answer to `origin` (nothing for an origin not allowed).
    pub fn decorate(&self, origin: Option<&HeaderValue>, resp: &mut HttpResponse) {
        let h = resp.headers_mut();
        h.append(VARY, HeaderValue::from_static("Origin"));
        let Some(allowed) = origin.and_then(|o| self.allow_origin(o)) else {
            return;
        };
        h.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        if let Some(e) = &self.expose_headers {
            h.insert(ACCESS_CONTROL_EXPOSE_HEADERS, e.clone());
        }
        if self.credentials {
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Result<Option<Cors>> {
        Cors::from_config(&CorsConfig {
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allow_credentials: credentials,
            ..CorsConfig::default()
        })
    }

    #[test]
    fn off_without_origins_and_origins_are_checked() {
        assert!(cors(&[], false).unwrap().is_none());
        for bad in [
            "localhost:3000",
            "ftp://a.example",
            "http://a.example/path",
            "http://user@a.example",
            "http://",
            "null",
        ] {
            let e = cors(&[bad], false).unwrap_err().to_string();
            assert!(e.contains("is not an origin"), "{bad}: {e}");
        }
        let e = cors(&["*"], true).unwrap_err().to_string();
        assert!(e.contains("cannot go with allow_credentials"), "{e}");
        assert!(cors(&["*", "http://a.example"], false).is_err());
        let e = Cors::from_config(&CorsConfig {
            allowed_origins: vec!["http://a.example".into()],
            max_age_s: crate::config::MAX_AGE_LIMIT_S + 1,
            ..CorsConfig::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("max_age_s"), "{e}");
    }

    #[test]
    fn only_listed_origins_are_echoed_and_any_means_star() {
        let c = cors(&["http://127.0.0.1:8000", "HTTPS://App.Example"], false)
            .unwrap()
            .unwrap();
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(
            c.allow_origin(&v("http://127.0.0.1:8000")),
            Some(v("http://127.0.0.1:8000"))
        );
        assert_eq!(
            c.allow_origin(&v("https://app.example")),
            Some(v("https://app.example"))
        );
        assert_eq!(c.allow_origin(&v("http://127.0.0.1:8001")), None);
        assert_eq!(c.allow_origin(&v("null")), None);
        let any = cors(&["*"], false).unwrap().unwrap();
        assert_eq!(any.allow_origin(&v("http://x.example")), Some(v("*")));
    }

    #[test]
    fn answers_to_refused_origins_carry_no_cors_header() {
        let c = cors(&["http://a.example"], true).unwrap().unwrap();
        let mut resp = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
        c.decorate(
            Some(&HeaderValue::from_static("http://b.example")),
            &mut resp,
        );
        assert!(resp.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert!(resp
            .headers()
            .get(ACCESS_CONTROL_ALLOW_CREDENTIALS)
            .is_none());
        c.decorate(
            Some(&HeaderValue::from_static("http://a.example")),
            &mut resp,
        );
        assert_eq!(
            resp.headers()[ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://a.example"
        );
        assert_eq!(resp.headers()[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(
            resp.headers()[ACCESS_CONTROL_EXPOSE_HEADERS],
            "x-request-id"
        );
    }
}
