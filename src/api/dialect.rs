//! Dialects as plug-ins. A dialect is a value owning its configuration section and its state
//! (keys, BI writer, nonce registry, ...); it implements [`Dialect`] to hand the server its
//! routes and [`ErrorTable`] to render errors in its format. The binary builds every dialect
//! and the registry in one place (`app`); the server never names a dialect.
//!
//! Handlers are `async fn(self: Arc<Self>, Request<Bytes>, Ctx) -> Result<HttpResponse,
//! ApiError>`: [`route`] wraps one as a registry row whose errors (and the edge's: body
//! limits, authentication, guards) all go through the dialect's table via
//! [`super::error::respond`].

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use hyper::{Method, Request};

use super::error::{respond, ApiError, ErrorTable};
use crate::server::{handler, Authenticator, Ctx, HttpResponse, Mount, RouteSpec};

/// Settings of the API edge every dialect's routes get.
#[derive(Clone, Default)]
pub struct Edge {
    /// The authenticator dialect routes require (None: open; see `api::auth`).
    pub auth: Option<Arc<dyn Authenticator>>,
}

/// A REST dialect: a named set of routes over the engine with its own error table.
pub trait Dialect: ErrorTable + 'static {
    /// Bare paths this dialect serves when other dialects claim them too and the configuration
    /// names no owner (`/api_version` for IDLive, say).
    fn default_bare_paths(&self) -> &'static [&'static str] {
        &[]
    }

    /// Its registry rows (built with [`route`]).
    fn routes(self: Arc<Self>, edge: &Edge) -> Vec<RouteSpec>;
}

/// A registry row for `handler` on dialect `d`, mounted under the dialect's prefix (and at the
/// bare path, see [`crate::server::routes`]) or exactly as written; behind the edge's
/// authenticator; errors rendered by the dialect's table.
pub fn route<D, F, Fut>(
    d: &Arc<D>,
    edge: &Edge,
    method: Method,
    path: &'static str,
    name: &'static str,
    mount: Mount,
    f: F,
) -> RouteSpec
where
    D: Dialect,
    F: Fn(Arc<D>, Request<Bytes>, Ctx) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<HttpResponse, ApiError>> + Send + 'static,
{
    let f = Arc::new(f);
    let dialect = d.clone();
    let h = handler(move |req, ctx: Ctx| {
        let (d, f) = (dialect.clone(), f.clone());
        async move {
            let route = ctx.route.clone();
            match f(d.clone(), req, ctx).await {
                Ok(r) => r,
                Err(e) => respond(&*d, &e, &route),
            }
        }
    });
    let table = d.clone();
    RouteSpec::new(method, path, d.dialect(), name, mount, h)
        .errors(Arc::new(move |e, route| {
            respond(&*table, &ApiError::Edge(e.clone()), route)
        }))
        .auth(edge.auth.clone())
}
