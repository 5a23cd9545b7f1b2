//! The OpenAPI 3.1 description served at `GET /openapi.json`, generated from the route
//! registry: every served (method, path) of the router, under its dialect prefix and at its
//! bare path, with the operation its dialect documents for the route's name ([`DialectDoc`]),
//! the route's authentication scheme and the `{name}` segments of its path.
//!
//! Each dialect's routes are described in one file here (gathered by [`describe`]) with [`Op`]:
//! summary, parameters, request bodies per media type (multipart parts, JSON schemas, octet
//! streams), and every documented response with its status, schema and example. Schemas are
//! JSON Schema 2020-12 (what OpenAPI 3.1 uses), written as JSON and carried into utoipa's model
//! unchanged ([`document`] fails if a schema does not round-trip).

pub mod bioid;
pub mod idrnd;
pub mod knomi;
pub mod native;
pub mod oz;
pub mod server;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use utoipa::openapi::path::{HttpMethod, Operation, PathItem};
use utoipa::openapi::security::SecurityScheme;
use utoipa::openapi::{OpenApi, Paths};

use crate::server::Served;

/// The description of every dialect and of the server's own routes. A dialect that is not
/// mounted adds nothing ([`document`] only describes what the router serves).
pub fn describe() -> Vec<DialectDoc> {
    vec![
        native::doc(),
        idrnd::idlive(),
        idrnd::iad(),
        bioid::doc(),
        knomi::doc(),
        oz::doc(),
        server::doc(),
    ]
}

/// One dialect's part of the description: its tag and the operation of each route name.
pub struct DialectDoc {
    /// Tag (the dialect's name, also its path prefix).
    pub tag: &'static str,
    /// What the dialect is, for the tag's description.
    pub description: &'static str,
    /// Operation of each route name.
    pub ops: BTreeMap<&'static str, Op>,
}

impl DialectDoc {
    /// An empty description of dialect `tag`.
    pub fn new(tag: &'static str, description: &'static str) -> Self {
        Self {
            tag,
            description,
            ops: BTreeMap::new(),
        }
    }

    /// Adds the operation of route `name`.
    pub fn op(mut self, name: &'static str, op: Op) -> Self {
        self.ops.insert(name, op);
        self
    }
}

/// Where a parameter is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamIn {
    /// The query string.
    Query,
    /// A request header.
    Header,
}

/// A query or header parameter.
#[derive(Debug, Clone)]
pub struct Param {
    /// Name.
    pub name: &'static str,
    /// Where it is read from.
    pub location: ParamIn,
    /// JSON Schema of its value.
    pub schema: Value,
    /// What it does.
    pub description: &'static str,
    /// Whether the request must carry it.
    pub required: bool,
}

/// One media type of a body: its schema and an optional example (validated by the tests).
#[derive(Debug, Clone)]
pub struct Content {
    /// Media type (`application/json`, `multipart/form-data`, `image/jpeg`, ...).
    pub media: &'static str,
    /// JSON Schema of the body.
    pub schema: Value,
    /// An example body.
    pub example: Option<Value>,
}

/// One documented response.
#[derive(Debug, Clone)]
pub struct Resp {
    /// HTTP status.
    pub status: u16,
    /// When it is sent.
    pub description: String,
    /// Its body, when it has one.
    pub content: Vec<Content>,
    /// Headers it carries: name and description.
    pub headers: Vec<(&'static str, &'static str)>,
}

/// The description of one operation.
#[derive(Debug, Clone)]
pub struct Op {
    /// One line.
    pub summary: &'static str,
    /// Longer text (Markdown).
    pub description: &'static str,
    /// Query and header parameters.
    pub params: Vec<Param>,
    /// Request body by media type (empty: none).
    pub body: Vec<Content>,
    /// Whether the body is required.
    pub body_required: bool,
    /// Responses, by status.
    pub responses: Vec<Resp>,
}

impl Op {
    /// An operation without parameters, body or responses yet.
    pub fn new(summary: &'static str, description: &'static str) -> Self {
        Self {
            summary,
            description,
            params: Vec::new(),
            body: Vec::new(),
            body_required: false,
            responses: Vec::new(),
        }
    }

    /// Adds an optional query parameter.
    pub fn query(mut self, name: &'static str, schema: Value, description: &'static str) -> Self {
        self.params.push(Param {
            name,
            location: ParamIn::Query,
            schema,
            description,
            required: false,
        });
        self
    }

    /// Adds a header parameter.
    pub fn header(mut self, name: &'static str, description: &'static str, required: bool) -> Self {
        self.params.push(Param {
            name,
            location: ParamIn::Header,
            schema: json!({"type": "string"}),
            description,
            required,
        });
        self
    }

    /// Adds a required request body of media type `media`.
    pub fn body(mut self, media: &'static str, schema: Value, example: Option<Value>) -> Self {
        self.body.push(Content {
            media,
            schema,
            example,
        });
        self.body_required = true;
        self
    }

    /// Adds a required raw image body (`image/jpeg`, `image/png`, `application/octet-stream`).
    pub fn image_body(self) -> Self {
        ["image/jpeg", "image/png", "application/octet-stream"]
            .into_iter()
            .fold(self, |op, m| op.body(m, binary(), None))
    }

    /// Adds a required `multipart/form-data` body with the given parts schema.
    pub fn multipart(self, schema: Value) -> Self {
        self.body("multipart/form-data", schema, None)
    }

    /// Adds a response with a JSON body.
    pub fn json(
        mut self,
        status: u16,
        description: impl Into<String>,
        schema: Value,
        example: Option<Value>,
    ) -> Self {
        self.responses.push(Resp {
            status,
            description: description.into(),
            content: vec![Content {
                media: "application/json",
                schema,
                example,
            }],
            headers: Vec::new(),
        });
        self
    }

    /// Adds a response with a body of media type `media`.
    pub fn content(
        mut self,
        status: u16,
        description: impl Into<String>,
        media: &'static str,
        schema: Value,
    ) -> Self {
        self.responses.push(Resp {
            status,
            description: description.into(),
            content: vec![Content {
                media,
                schema,
                example: None,
            }],
            headers: Vec::new(),
        });
        self
    }

    /// Adds a response without a body.
    pub fn empty(mut self, status: u16, description: impl Into<String>) -> Self {
        self.responses.push(Resp {
            status,
            description: description.into(),
            content: Vec::new(),
            headers: Vec::new(),
        });
        self
    }

    /// Adds the same JSON error body `schema` for each `(status, description)`.
    pub fn errors(self, schema: &Value, statuses: &[(u16, &str)]) -> Self {
        statuses.iter().fold(self, |op, (s, d)| {
            op.json(*s, d.to_string(), schema.clone(), None)
        })
    }

    /// Adds a header to the last response added so far.
    pub fn response_header(mut self, name: &'static str, description: &'static str) -> Self {
        if let Some(r) = self.responses.last_mut() {
            r.headers.push((name, description));
        }
        self
    }
}

/// Schema of a binary body.
pub fn binary() -> Value {
    json!({"type": "string", "contentMediaType": "application/octet-stream"})
}

/// Statuses every routed request may meet before its handler runs, with what they mean; each
/// dialect renders them in its own error body (its error table).
pub const EDGE_ERRORS: &[(u16, &str)] = &[
    (
        408,
        "the body did not arrive within the server's body timeout",
    ),
    (
        413,
        "the body is larger than the route's limit (the message names it)",
    ),
    (
        503,
        "overloaded (queue or memory budget full; Retry-After says when to retry) or the models are loading",
    ),
];

/// The security scheme names of an authenticator scheme (`Authenticator::scheme`), as
/// alternatives.
fn security_names(scheme: &str) -> &'static [&'static str] {
    match scheme {
        "api_key" => &["api_key", "api_key_bearer"],
        "jwt" => &["jwt"],
        "bws_jwt" => &["bws_jwt"],
        _ => &[],
    }
}

/// The security schemes of the components section, by name.
fn security_schemes() -> Result<BTreeMap<String, SecurityScheme>, String> {
    let schemes = json!({
        "api_key": {"type": "apiKey", "in": "header", "name": "X-API-Key",
            "description": "A named API key of auth.api_keys (or of the dialect's auth.dialect_keys)."},
        "api_key_bearer": {"type": "http", "scheme": "bearer",
            "description": "The same API key as `Authorization: Bearer <key>`."},
        "jwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "A JWT verified with auth.jwt (issuer, audience, expiry)."},
        "bws_jwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "BioID BWS: an HS256/384/512 JWT signed with the key of the client in `sub` (else `iss`), audience `BWS`."},
    });
    serde_json::from_value(schemes).map_err(|e| format!("security schemes: {e}"))
}

/// The `{name}` segments of a path.
fn path_params(path: &str) -> Vec<&str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        .collect()
}

/// The OpenAPI method of an HTTP method.
fn http_method(m: &hyper::Method) -> Result<HttpMethod, String> {
    Ok(match m.as_str() {
        "GET" => HttpMethod::Get,
        "POST" => HttpMethod::Post,
        "PUT" => HttpMethod::Put,
        "DELETE" => HttpMethod::Delete,
        "PATCH" => HttpMethod::Patch,
        "HEAD" => HttpMethod::Head,
        "OPTIONS" => HttpMethod::Options,
        "TRACE" => HttpMethod::Trace,
        other => return Err(format!("method {other} has no OpenAPI operation")),
    })
}

/// A media-type map of `contents`.
fn content_map(contents: &[Content]) -> Value {
    let mut m = serde_json::Map::new();
    for c in contents {
        let mut e = json!({"schema": c.schema});
        if let Some(x) = &c.example {
            e["example"] = x.clone();
        }
        m.insert(c.media.to_string(), e);
    }
    Value::Object(m)
}

/// The OpenAPI operation object (as JSON) of `op` served at `path` as `id`.
fn operation_json(
    op: &Op,
    tag: &str,
    id: &str,
    path: &str,
    auth: Option<&str>,
    bare_of: Option<&str>,
) -> Value {
    let mut params: Vec<Value> = path_params(path)
        .into_iter()
        .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    params.extend(op.params.iter().map(|p| {
        json!({
            "name": p.name,
            "in": match p.location { ParamIn::Query => "query", ParamIn::Header => "header" },
            "required": p.required,
            "description": p.description,
            "schema": p.schema,
        })
    }));
    let mut responses = serde_json::Map::new();
    for r in &op.responses {
        let mut v = json!({"description": r.description});
        if !r.content.is_empty() {
            v["content"] = content_map(&r.content);
        }
        if !r.headers.is_empty() {
            let h: serde_json::Map<String, Value> = r
                .headers
                .iter()
                .map(|(n, d)| {
                    (
                        n.to_string(),
                        json!({"description": d, "schema": {"type": "string"}}),
                    )
                })
                .collect();
            v["headers"] = Value::Object(h);
        }
        responses.insert(r.status.to_string(), v);
    }
    let mut description = op.description.to_string();
    if let Some(prefixed) = bare_of {
        description.push_str(&format!(
            "\n\nThe same operation as `{prefixed}`, at the reference's own path."
        ));
    }
    let mut o = json!({
        "tags": [tag],
        "operationId": id,
        "summary": op.summary,
        "description": description,
        "responses": responses,
    });
    if !params.is_empty() {
        o["parameters"] = Value::Array(params);
    }
    if !op.body.is_empty() {
        o["requestBody"] = json!({"required": op.body_required, "content": content_map(&op.body)});
    }
    if let Some(s) = auth {
        let alternatives: Vec<Value> = security_names(s)
            .iter()
            .map(|n| json!({ *n: [] }))
            .collect();
        o["security"] = Value::Array(alternatives);
    }
    o
}

/// Converts through serde and back, failing when utoipa's model would change `v`.
fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(
    v: Value,
    what: &str,
) -> Result<T, String> {
    let t: T = serde_json::from_value(v.clone()).map_err(|e| format!("{what}: {e}"))?;
    let back = serde_json::to_value(&t).map_err(|e| format!("{what}: {e}"))?;
    if back != v {
        return Err(format!(
            "{what}: the OpenAPI model changes it:\n  written {v}\n  modelled {back}"
        ));
    }
    Ok(t)
}

/// The document describing `served` (the router's routes), with the operations of `docs`.
/// Fails naming the first served route whose dialect documents no operation for its name, or
/// an operation the OpenAPI model cannot carry unchanged.
pub fn document(served: &[Served], docs: &[DialectDoc]) -> Result<OpenApi, String> {
    let by_tag: BTreeMap<&str, &DialectDoc> = docs.iter().map(|d| (d.tag, d)).collect();
    let mut paths: BTreeMap<String, Vec<(HttpMethod, Operation)>> = BTreeMap::new();
    let mut tags = BTreeSet::new();
    let mut schemes = BTreeSet::new();
    for s in served {
        let info = &s.info;
        let doc = by_tag.get(info.dialect).ok_or_else(|| {
            format!(
                "dialect {} (route {} {}) has no OpenAPI description",
                info.dialect, info.method, info.path
            )
        })?;
        let op = doc.ops.get(info.name).ok_or_else(|| {
            format!(
                "route {} {} ({}) has no OpenAPI operation in dialect {}",
                info.method, info.path, info.name, info.dialect
            )
        })?;
        let prefix = format!("/{}/", info.dialect);
        let bare_of = (!s.exact && !info.path.starts_with(&prefix))
            .then(|| format!("/{}{}", info.dialect, info.path));
        // Rows that only refuse a method share one name over several methods.
        let method_suffix = if info.name.ends_with("wrong_method") {
            format!(
                ".{}{}",
                info.method.as_str().to_ascii_lowercase(),
                info.path.replace(['/', '{', '}'], ".")
            )
        } else {
            String::new()
        };
        let id = format!(
            "{}{}{method_suffix}",
            info.name,
            if bare_of.is_some() { ".bare" } else { "" },
        );
        let v = operation_json(op, doc.tag, &id, &info.path, s.auth, bare_of.as_deref());
        let typed_op: Operation = typed(v, &format!("operation {id}"))?;
        paths
            .entry(info.path.clone())
            .or_default()
            .push((http_method(&info.method)?, typed_op));
        tags.insert(doc.tag);
        if let Some(a) = s.auth {
            schemes.extend(security_names(a).iter().copied());
        }
    }
    let mut builder = Paths::builder();
    for (path, ops) in paths {
        for (m, op) in ops {
            builder = builder.path(path.clone(), PathItem::new(m, op));
        }
    }
    let tag_list: Vec<Value> = docs
        .iter()
        .filter(|d| tags.contains(d.tag))
        .map(|d| json!({"name": d.tag, "description": d.description}))
        .collect();
    let mut all = security_schemes()?;
    all.retain(|k, _| schemes.contains(k.as_str()));
    let components =
        json!({ "securitySchemes": serde_json::to_value(&all).map_err(|e| e.to_string())? });
    let mut api = OpenApi::builder()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("facegate")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Face liveness and matching in the REST dialects of five commercial servers. \
                     Every dialect route is served under its dialect's prefix and, unless another \
                     dialect owns it, at the reference's own path.",
                ))
                .build(),
        )
        .paths(builder.build())
        .build();
    api.tags = Some(typed(Value::Array(tag_list), "tags")?);
    if !all.is_empty() {
        api.components = Some(typed(components, "components")?);
    }
    Ok(api)
}

/// The JSON of the document, with OpenAPI version 3.1.0.
pub fn to_json(api: &OpenApi) -> Result<Vec<u8>, String> {
    serde_json::to_vec_pretty(api).map_err(|e| e.to_string())
}
