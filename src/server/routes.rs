//! The route registry: one table of (method, path, dialect, name, handler, hooks) rows that
//! every dialect contributes to, and the router built from it.
//!
//! A dialect hands its rows to [`Registry::extend`] (the binary assembles the registry in one
//! place, `app::registry`). Rows mounted with [`Mount::Dialect`] are served under
//! `/{dialect}{path}` and, unless another dialect claims the same bare path, also at `{path}`
//! itself; a bare path claimed by several dialects is served only by the one named in the
//! `bare_owners` map given to [`Registry::build`] (building fails, naming the path and the
//! claimants, when none is). Rows mounted with [`Mount::Exact`] (`/health`, `/metrics`,
//! `/facegate/v1/...`) are served once, exactly as written.
//!
//! A path segment written `{name}` matches any one non-empty segment; the handler finds its
//! value in [`Ctx::params`]. Exact paths win over patterns; patterns are tried in table order.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response};

pub use super::hooks::RouteInfo;
use super::hooks::{Authenticator, BodyLimits, EdgeError, Principal, RequestGuard};
use super::AppState;

/// Every handler answers with a fully buffered body.
pub type HttpResponse = Response<Full<Bytes>>;
/// The future a handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = HttpResponse> + Send>>;
/// A route handler: the request with its body read (within the route's limits) and its context.
pub type Handler = Arc<dyn Fn(Request<Bytes>, Ctx) -> HandlerFuture + Send + Sync>;

/// Wraps an `async fn(Request<Bytes>, Ctx) -> HttpResponse` as a [`Handler`].
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Request<Bytes>, Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HttpResponse> + Send + 'static,
{
    Arc::new(move |req, ctx| Box::pin(f(req, ctx)))
}

/// Renders an error met before the handler runs (a hook's refusal, a body over the limit or
/// late) in the route's dialect.
pub type ErrorRenderer = Arc<dyn Fn(&EdgeError, &RouteInfo) -> HttpResponse + Send + Sync>;

/// What a handler gets besides the request.
#[derive(Clone)]
pub struct Ctx {
    /// Server-wide state (batcher, metrics handle, configuration).
    pub app: Arc<AppState>,
    /// The route that matched.
    pub route: Arc<RouteInfo>,
    /// This request's id (from `x-request-id` or generated).
    pub request_id: Arc<str>,
    /// Who the route's authenticator admitted (None on open routes).
    pub principal: Option<Arc<Principal>>,
    /// Values of the path's `{name}` segments, in order.
    pub params: Arc<[(String, String)]>,
}

impl Ctx {
    /// The value of path segment `{name}`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
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
    /// Path as the dialect's reference document writes it (`{name}` segments match any one).
    pub path: &'static str,
    /// Dialect that serves it (also its path prefix for [`Mount::Dialect`]).
    pub dialect: &'static str,
    /// Stable route name: metrics label, log field and batch origin.
    pub name: &'static str,
    /// Where it is served.
    pub mount: Mount,
    /// The handler.
    pub handler: Handler,
    /// How errors before the handler are rendered (the dialect's own error table).
    pub on_error: ErrorRenderer,
    /// Authentication the route requires (None: open).
    pub auth: Option<Arc<dyn Authenticator>>,
    /// The route's own body bounds (None: the server's).
    pub limits: Option<BodyLimits>,
}

impl RouteSpec {
    /// An open row whose early errors are rendered in the server's own format (see
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
            on_error: Arc::new(super::error_page),
            auth: None,
            limits: None,
        }
    }

    /// The same row with early errors rendered by `render` (the dialect's error table).
    pub fn errors(self, render: ErrorRenderer) -> Self {
        Self {
            on_error: render,
            ..self
        }
    }

    /// The same row behind `auth` (None leaves it open).
    pub fn auth(self, auth: Option<Arc<dyn Authenticator>>) -> Self {
        Self { auth, ..self }
    }

    /// The same row with its own body bounds.
    pub fn limits(self, limits: BodyLimits) -> Self {
        Self {
            limits: Some(limits),
            ..self
        }
    }
}

/// A matched route.
pub struct Entry {
    /// Route description.
    pub info: Arc<RouteInfo>,
    /// Its handler.
    pub handler: Handler,
    /// Its dialect's rendering of errors met before the handler.
    pub on_error: ErrorRenderer,
    /// Authentication it requires.
    pub auth: Option<Arc<dyn Authenticator>>,
    /// Its own body bounds.
    pub limits: Option<BodyLimits>,
    /// Whether the row is mounted exactly as written ([`Mount::Exact`]).
    pub exact: bool,
}

/// One served (method, path) of a router, as `/openapi.json` describes it.
#[derive(Debug, Clone)]
pub struct Served {
    /// The route.
    pub info: Arc<RouteInfo>,
    /// Its authentication scheme (`Authenticator::scheme`), None when open.
    pub auth: Option<&'static str>,
    /// Whether its row is mounted exactly as written (else under its dialect's prefix or at
    /// the bare path).
    pub exact: bool,
}

/// The table of routes, in the order the dialects added them, plus server-wide guards.
#[derive(Clone, Default)]
pub struct Registry {
    /// The rows.
    rows: Vec<RouteSpec>,
    /// Admission hooks run on every routed request, in order.
    guards: Vec<Arc<dyn RequestGuard>>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds rows (a dialect's routes).
    pub fn extend(&mut self, rows: impl IntoIterator<Item = RouteSpec>) -> &mut Self {
        self.rows.extend(rows);
        self
    }

    /// Adds a server-wide admission hook.
    pub fn guard(&mut self, g: Arc<dyn RequestGuard>) -> &mut Self {
        self.guards.push(g);
        self
    }

    /// The rows, in order.
    pub fn rows(&self) -> &[RouteSpec] {
        &self.rows
    }

    /// Builds the router. `bare_owners` maps a contested bare path to the dialect serving it.
    pub fn build(&self, bare_owners: &BTreeMap<String, String>) -> Result<Router, String> {
        let mut router = Router {
            guards: self.guards.clone(),
            ..Router::default()
        };
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
    /// A route serves this method and path, with the values of its `{name}` segments.
    Found(&'a Entry, Vec<(String, String)>),
    /// The path exists with other methods.
    MethodNotAllowed(Vec<Method>),
    /// No route has this path.
    NotFound,
}

/// The values of a path's `{name}` segments, in order.
type Params = Vec<(String, String)>;

/// Path + method matching: exact paths, then `{name}` patterns in table order.
#[derive(Default)]
pub struct Router {
    /// Routes by exact path.
    paths: HashMap<String, Vec<Entry>>,
    /// Routes whose path has `{name}` segments: the split pattern and its entries.
    patterns: Vec<(Vec<String>, Vec<Entry>)>,
    /// Admission hooks run on every routed request.
    guards: Vec<Arc<dyn RequestGuard>>,
}

/// Whether a path segment is a `{name}` parameter.
fn param_name(seg: &str) -> Option<&str> {
    seg.strip_prefix('{')?.strip_suffix('}')
}

impl Router {
    fn insert(&mut self, path: String, r: &RouteSpec) -> Result<(), String> {
        let entry = Entry {
            info: Arc::new(RouteInfo {
                method: r.method.clone(),
                path: path.clone(),
                dialect: r.dialect,
                name: r.name,
            }),
            handler: r.handler.clone(),
            on_error: r.on_error.clone(),
            auth: r.auth.clone(),
            limits: r.limits,
            exact: r.mount == Mount::Exact,
        };
        let twice = || format!("route {} {} is registered twice", r.method, path);
        let segments: Vec<String> = path.split('/').map(str::to_string).collect();
        let entries = if segments.iter().any(|s| param_name(s).is_some()) {
            match self.patterns.iter().position(|(p, _)| *p == segments) {
                Some(i) => &mut self.patterns[i].1,
                None => {
                    self.patterns.push((segments, Vec::new()));
                    let last = self.patterns.len() - 1;
                    &mut self.patterns[last].1
                }
            }
        } else {
            self.paths.entry(path.clone()).or_default()
        };
        if entries.iter().any(|e| e.info.method == r.method) {
            return Err(twice());
        }
        entries.push(entry);
        Ok(())
    }

    /// The admission hooks every routed request passes.
    /// Adds a server-wide guard after the registry's (the server's own, which need what only
    /// it holds, such as the batcher).
    pub fn guard(&mut self, g: Arc<dyn RequestGuard>) {
        self.guards.push(g);
    }

    /// The server-wide guards, in the order they run.
    pub fn guards(&self) -> &[Arc<dyn RequestGuard>] {
        &self.guards
    }

    /// Matches a request. `HEAD` is not implied by `GET`.
    pub fn resolve<'a>(&'a self, method: &Method, path: &str) -> Resolved<'a> {
        match self.entries(path) {
            None => Resolved::NotFound,
            Some((entries, params)) => match entries.iter().find(|e| e.info.method == *method) {
                Some(e) => Resolved::Found(e, params),
                None => Resolved::MethodNotAllowed(
                    entries.iter().map(|e| e.info.method.clone()).collect(),
                ),
            },
        }
    }

    /// The route of `path` for `method`, else any route of `path` (whose dialect renders an
    /// error about a request that never reached a handler).
    pub fn owner(&self, method: Option<&Method>, path: &str) -> Option<&Entry> {
        let (entries, _) = self.entries(path)?;
        method
            .and_then(|m| entries.iter().find(|e| e.info.method == *m))
            .or_else(|| entries.first())
    }

    /// The routes of `path` (every method), with the values of its `{name}` segments.
    fn entries<'a>(&'a self, path: &str) -> Option<(&'a [Entry], Params)> {
        if let Some(entries) = self.paths.get(path) {
            return Some((entries, Vec::new()));
        }
        let segs: Vec<&str> = path.split('/').collect();
        for (pattern, entries) in &self.patterns {
            if pattern.len() != segs.len() {
                continue;
            }
            let mut params = Vec::new();
            let matched = pattern.iter().zip(&segs).all(|(p, s)| match param_name(p) {
                Some(name) if !s.is_empty() => {
                    params.push((name.to_string(), (*s).to_string()));
                    true
                }
                Some(_) => false,
                None => p == s,
            });
            if matched {
                return Some((entries, params));
            }
        }
        None
    }

    /// Every served route with its authentication scheme, sorted by path, then method.
    pub fn served(&self) -> Vec<Served> {
        let mut v: Vec<Served> = self
            .paths
            .values()
            .flatten()
            .chain(self.patterns.iter().flat_map(|(_, e)| e))
            .map(|e| Served {
                info: e.info.clone(),
                auth: e.auth.as_ref().map(|a| a.scheme()),
                exact: e.exact,
            })
            .collect();
        v.sort_by(|a, b| {
            (&a.info.path, a.info.method.as_str()).cmp(&(&b.info.path, b.info.method.as_str()))
        });
        v
    }

    /// Every served (method, path, dialect, name), sorted by path (for logs and docs).
    pub fn table(&self) -> Vec<(Method, String, &'static str, &'static str)> {
        let mut v: Vec<_> = self
            .paths
            .values()
            .flatten()
            .chain(self.patterns.iter().flat_map(|(_, e)| e))
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
            Resolved::Found(e, _) => Some(e.info.dialect),
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

    #[test]
    fn patterns_match_one_segment_and_exact_paths_win() {
        let mut reg = Registry::new();
        reg.extend([
            row(Method::GET, "/v1/face/{id}", "oz", Mount::Dialect),
            row(Method::DELETE, "/v1/face/{id}", "oz", Mount::Dialect),
            row(Method::GET, "/v1/face/list", "oz", Mount::Dialect),
        ]);
        let r = reg.build(&BTreeMap::new()).unwrap();
        match r.resolve(&Method::GET, "/oz/v1/face/abc") {
            Resolved::Found(e, params) => {
                assert_eq!(e.info.path, "/oz/v1/face/{id}");
                assert_eq!(params, vec![("id".to_string(), "abc".to_string())]);
            }
            _ => panic!("pattern not matched"),
        }
        assert!(
            matches!(r.resolve(&Method::GET, "/v1/face/list"), Resolved::Found(_, p) if p.is_empty())
        );
        assert!(matches!(
            r.resolve(&Method::GET, "/v1/face/"),
            Resolved::NotFound
        ));
        assert!(matches!(
            r.resolve(&Method::GET, "/v1/face/a/b"),
            Resolved::NotFound
        ));
        assert!(matches!(
            r.resolve(&Method::POST, "/v1/face/x"),
            Resolved::MethodNotAllowed(m) if m == [Method::GET, Method::DELETE]
        ));
        let mut twice = Registry::new();
        twice.extend([
            row(Method::GET, "/a/{x}", "t", Mount::Exact),
            row(Method::GET, "/a/{x}", "t", Mount::Exact),
        ]);
        assert!(twice.build(&BTreeMap::new()).is_err());
    }
}
