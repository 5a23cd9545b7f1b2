//! The route registry: one table of (method, path, dialect, name, handler) rows that every
//! dialect module contributes to, and the exact-match router built from it.
//!
//! A dialect module exposes `pub fn routes() -> Vec<RouteSpec>`; `server::registry()` collects
//! them. Rows mounted with [`Mount::Dialect`] are served under `/{dialect}{path}` and, unless
//! another dialect claims the same bare path, also at `{path}` itself; a bare path claimed by
//! several dialects is served only by the one named in the `bare_owners` map given to
//! [`Registry::build`] (building fails, naming the path and the claimants, when none is).
//! Rows mounted with [`Mount::Exact`] (`/health`, `/metrics`, `/facegate/v1/...`) are served
//! once, exactly as written.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response};

use super::AppState;
use crate::Error;

/// Every handler answers with a fully buffered body.
pub type HttpResponse = Response<Full<Bytes>>;
/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = HttpResponse> + Send>>;
/// A route handler: the request with its body read (within `max_body_bytes`) and its context.
pub type Handler = Arc<dyn Fn(Request<Bytes>, Ctx) -> HandlerFuture + Send + Sync>;

/// Wraps an `async fn(Request<Bytes>, Ctx) -> HttpResponse` as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request<Bytes>, Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    Arc::new(move |req, ctx| Box::pin(f(req, ctx)))
}

/// Renders an error that stops a request before its handler runs (its body exceeded
/// `max_body_bytes` or did not arrive within `body_timeout_ms`) in the route's dialect.
pub type ErrorRenderer = fn(&Error, &RouteInfo) -> HttpResponse;

/// What a handler gets besides the request.
#[derive(Clone)]
pub struct Ctx {
    /// Server-wide state (batcher, metrics handle, configuration).
    pub app: Arc<AppState>,
    /// The route that matched.
    pub route: Arc<RouteInfo>,
    /// This request's id (from `x-request-id` or generated).
    pub request_id: Arc<str>,
}

/// Where a row is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mount {
    /// Exactly at `path`, once.
    Exact,
    /// At `/{dialect}{path}`, and at `path` when this dialect owns that bare path.
    Dialect,
}

/// One row of the registry.
#[derive(Clone)]
pub struct RouteSpec {
    /// HTTP method.
    pub method: Method,
    /// Path as the dialect's reference document writes it.
    pub path: &'static str,
    /// Dialect that serves it (also its path prefix for [`Mount::Dialect`]).
    pub dialect: &'static str,
    /// Stable route name: metrics label, log field and batch origin.
    pub name: &'static str,
    /// Where it is served.
    pub mount: Mount,
    /// The handler.
    pub handler: Handler,
    /// How errors before the handler are rendered (the dialect's own error mapping).
    pub on_error: ErrorRenderer,
}

impl RouteSpec {
    /// A row whose early errors are rendered in the server's own format (see
    /// [`RouteSpec::errors`] for dialect rows).
    pub fn new(
        method: Method,
        path: &'static str,
        dialect: &'static str,
        name: &'static str,
        mount: Mount,
        handler: Handler,
    ) -> Self {
        Self {
            method,
            path,
            dialect,
            name,
            mount,
            handler,
            on_error: super::error_page,
        }
    }

    /// The same row with early errors rendered by `render` (the dialect's error mapping).
    pub fn errors(self, render: ErrorRenderer) -> Self {
        Self {
            on_error: render,
            ..self
        }
    }
}

/// A served route, as handlers and metrics see it.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    /// HTTP method.
    pub method: Method,
    /// Path it was matched at.
    pub path: String,
    /// Dialect that serves it.
    pub dialect: &'static str,
    /// Route name.
    pub name: &'static str,
}

/// A matched route.
pub struct Entry {
    /// Route description.
    pub info: Arc<RouteInfo>,
    /// Its handler.
    pub handler: Handler,
    /// Its dialect's rendering of errors met before the handler.
    pub on_error: ErrorRenderer,
}

/// The table of routes, in the order the dialects added them.
#[derive(Clone, Default)]
pub struct Registry {
    /// The rows.
    rows: Vec<RouteSpec>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds rows (a dialect's `routes()`).
    pub fn extend(&mut self, rows: impl IntoIterator<Item = RouteSpec>) -> &mut Self {
        self.rows.extend(rows);
        self
    }

    /// The rows, in order.
    pub fn rows(&self) -> &[RouteSpec] {
        &self.rows
    }

    /// Builds the router. `bare_owners` maps a contested bare path to the dialect serving it.
    pub fn build(&self, bare_owners: &BTreeMap<String, String>) -> Result<Router, String> {
        let mut router = Router::default();
        // Bare paths of dialect rows, by path: which dialects claim them.
        let mut claims: BTreeMap<&str, Vec<&'static str>> = BTreeMap::new();
        for r in &self.rows {
            match r.mount {
                Mount::Exact => router.insert(r.path.to_string(), r)?,
                Mount::Dialect => {
                    router.insert(format!("/{}{}", r.dialect, r.path), r)?;
                    let c = claims.entry(r.path).or_default();
                    if !c.contains(&r.dialect) {
                        c.push(r.dialect);
                    }
                }
            }
        }
        for r in self.rows.iter().filter(|r| r.mount == Mount::Dialect) {
            let claimants = claims.get(r.path).map(Vec::as_slice).unwrap_or(&[]);
            let serves = match claimants {
                [_] => true,
                _ => match bare_owners.get(r.path) {
                    Some(owner) if !claimants.contains(&owner.as_str()) => {
                        return Err(format!(
                            "bare path {} is owned by dialect {owner} in the configuration, but only {} serve it",
                            r.path,
                            claimants.join(", ")
                        ))
                    }
                    Some(owner) => owner == r.dialect,
                    None => {
                        return Err(format!(
                            "bare path {} is claimed by dialects {}: name its owner in the configuration",
                            r.path,
                            claimants.join(", ")
                        ))
                    }
                },
            };
            if serves {
                router.insert(r.path.to_string(), r)?;
            }
        }
        Ok(router)
    }
}

/// Outcome of matching a request.
pub enum Resolved<'a> {
    /// A route serves this method and path.
    Found(&'a Entry),
    /// The path exists with other methods.
    MethodNotAllowed(Vec<Method>),
    /// No route has this path.
    NotFound,
}

/// Exact path + method matching.
#[derive(Default)]
pub struct Router {
    /// Routes by path.
    paths: HashMap<String, Vec<Entry>>,
}

impl Router {
    fn insert(&mut self, path: String, r: &RouteSpec) -> Result<(), String> {
        let entries = self.paths.entry(path.clone()).or_default();
        if entries.iter().any(|e| e.info.method == r.method) {
            return Err(format!("route {} {} is registered twice", r.method, path));
        }
        entries.push(Entry {
            info: Arc::new(RouteInfo {
                method: r.method.clone(),
                path,
                dialect: r.dialect,
                name: r.name,
            }),
            handler: r.handler.clone(),
            on_error: r.on_error,
        });
        Ok(())
    }

    /// Matches a request. `HEAD` is not implied by `GET`.
    pub fn resolve(&self, method: &Method, path: &str) -> Resolved<'_> {
        match self.paths.get(path) {
            None => Resolved::NotFound,
            Some(entries) => match entries.iter().find(|e| e.info.method == *method) {
                Some(e) => Resolved::Found(e),
                None => Resolved::MethodNotAllowed(
                    entries.iter().map(|e| e.info.method.clone()).collect(),
                ),
            },
        }
    }

    /// Every served (method, path, dialect, name), sorted by path (for logs and docs).
    pub fn table(&self) -> Vec<(Method, String, &'static str, &'static str)> {
        let mut v: Vec<_> = self
            .paths
            .values()
            .flatten()
            .map(|e| {
                (
                    e.info.method.clone(),
                    e.info.path.clone(),
                    e.info.dialect,
                    e.info.name,
                )
            })
            .collect();
        v.sort_by(|a, b| (&a.1, a.0.as_str()).cmp(&(&b.1, b.0.as_str())));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn ok() -> Handler {
        handler(|_req, _ctx| async { Response::new(Full::new(Bytes::new())) })
    }

    fn row(method: Method, path: &'static str, dialect: &'static str, mount: Mount) -> RouteSpec {
        RouteSpec::new(method, path, dialect, "r", mount, ok())
    }

    fn found(r: &Router, m: Method, p: &str) -> Option<&'static str> {
        match r.resolve(&m, p) {
            Resolved::Found(e) => Some(e.info.dialect),
            _ => None,
        }
    }

    #[test]
    fn dialects_get_prefixes_and_contested_bare_paths_need_an_owner() {
        let mut reg = Registry::new();
        reg.extend([
            row(Method::GET, "/health", "server", Mount::Exact),
            row(Method::GET, "/version", "knomi", Mount::Dialect),
            row(Method::POST, "/analyze", "knomi", Mount::Dialect),
            row(Method::GET, "/version", "oz", Mount::Dialect),
        ]);
        let err = reg.build(&BTreeMap::new()).err().unwrap();
        assert!(
            err.contains("/version") && err.contains("knomi") && err.contains("oz"),
            "{err}"
        );

        let owners = BTreeMap::from([("/version".to_string(), "oz".to_string())]);
        let r = reg.build(&owners).unwrap();
        assert_eq!(found(&r, Method::GET, "/version"), Some("oz"));
        assert_eq!(found(&r, Method::GET, "/knomi/version"), Some("knomi"));
        assert_eq!(found(&r, Method::GET, "/oz/version"), Some("oz"));
        assert_eq!(
            found(&r, Method::POST, "/analyze"),
            Some("knomi"),
            "uncontested bare path"
        );
        assert_eq!(found(&r, Method::GET, "/health"), Some("server"));
        assert!(
            found(&r, Method::GET, "/server/health").is_none(),
            "exact rows get no prefix"
        );
        assert!(
            matches!(r.resolve(&Method::GET, "/analyze"), Resolved::MethodNotAllowed(m) if m == [Method::POST])
        );
        assert!(matches!(
            r.resolve(&Method::GET, "/nope"),
            Resolved::NotFound
        ));
    }

    #[test]
    fn duplicate_rows_are_refused() {
        let mut reg = Registry::new();
        reg.extend([
            row(Method::GET, "/health", "server", Mount::Exact),
            row(Method::GET, "/health", "server", Mount::Exact),
        ]);
        assert!(reg.build(&BTreeMap::new()).err().unwrap().contains("twice"));
    }
}
