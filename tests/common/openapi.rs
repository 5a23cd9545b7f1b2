//! Conformance of answers to the server's own OpenAPI document: every answer the tests' client
//! receives from a documented route must have a documented status, a documented media type and
//! (for JSON) a body valid against the response's schema.

use hyper::{HeaderMap, Method};
use serde_json::Value;

/// The path template of `spec` that `path` (no query) matches: exact, else with `{name}`
/// segments matching any one non-empty segment.
pub fn template<'a>(spec: &'a Value, path: &str) -> Option<&'a str> {
    let paths = spec["paths"].as_object()?;
    if paths.contains_key(path) {
        return paths.get_key_value(path).map(|(k, _)| k.as_str());
    }
    let segs: Vec<&str> = path.split('/').collect();
    paths.keys().map(String::as_str).find(|t| {
        let ts: Vec<&str> = t.split('/').collect();
        ts.len() == segs.len()
            && ts.iter().zip(&segs).all(|(a, b)| {
                if a.starts_with('{') && a.ends_with('}') {
                    !b.is_empty()
                } else {
                    a == b
                }
            })
    })
}

/// Validates `instance` against JSON Schema `schema` (2020-12), naming every violation.
pub fn validate(schema: &Value, instance: &Value) -> Result<(), String> {
    let v = jsonschema::draft202012::new(schema).map_err(|e| format!("invalid schema: {e}"))?;
    let errors: Vec<String> = v
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Checks one answer against the document. `Ok` when the path is not documented (the router's
/// own 404/405 answers) or the answer conforms; `Err` says what differs.
pub fn check(
    spec: &Value,
    method: &Method,
    uri: &str,
    status: u16,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(), String> {
    let path = uri.split('?').next().unwrap_or(uri);
    let Some(t) = template(spec, path) else {
        return Ok(());
    };
    let m = method.as_str().to_ascii_lowercase();
    let Some(op) = spec["paths"][t].get(&m) else {
        // The router answers other methods itself (405 with Allow).
        return Ok(());
    };
    let id = op["operationId"].as_str().unwrap_or("?");
    let Some(resp) = op["responses"]
        .get(status.to_string())
        .or_else(|| op["responses"].get("default"))
    else {
        return Err(format!(
            "{method} {uri} ({id}): status {status} is not documented (body {})",
            String::from_utf8_lossy(&body[..body.len().min(400)])
        ));
    };
    let Some(content) = resp.get("content").and_then(Value::as_object) else {
        return Ok(());
    };
    let media = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if body.is_empty() && media.is_empty() {
        return Ok(());
    }
    let Some(c) = content.get(&media) else {
        return Err(format!(
            "{method} {uri} ({id}): status {status} answered {media:?}, documented {:?}",
            content.keys().collect::<Vec<_>>()
        ));
    };
    // JSON bodies, and JSON sent under another media type (Knomi's text/plain answers):
    // validated whenever the schema describes more than a plain string.
    let json_schema = c["schema"]["type"] != "string";
    if media == "application/json" || (json_schema && media.starts_with("text/")) {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| format!("{method} {uri} ({id}): {status} body is not JSON: {e}"))?;
        validate(&c["schema"], &v).map_err(|e| {
            format!(
                "{method} {uri} ({id}): {status} body does not match its schema: {e}\n  body: {v}"
            )
        })?;
    }
    Ok(())
}
