//! The REST dialects. Each module parses its requests, calls the batcher and renders the
//! engine's answer in its own wire format; none holds model logic. Each exposes
//! `pub fn routes() -> Vec<RouteSpec>` for the registry (see `server::routes`).

pub mod iad;
pub mod idlive;
pub mod native;

use bytes::Bytes;
use hyper::header::HeaderValue;

use crate::batcher::Processed;
use crate::bi::{check_range, BiRecord, Date};
use crate::server::{AppState, Ctx, HttpResponse};
use crate::Error;

/// Adds `x-queue-time` and `x-inference-time` (ms, three decimals) to a response.
pub fn timing_headers(resp: &mut HttpResponse, queue_ms: f64, inference_ms: f64) {
    for (name, v) in [
        ("x-queue-time", queue_ms),
        ("x-inference-time", inference_ms),
    ] {
        if let Ok(v) = HeaderValue::from_str(&format!("{v:.3}")) {
            resp.headers_mut().insert(name, v);
        }
    }
}

/// The largest queue and inference times of several processed images.
pub fn max_times<'a>(items: impl IntoIterator<Item = &'a Processed>) -> (f64, f64) {
    items.into_iter().fold((0.0, 0.0), |(q, i), p| {
        (f64::max(q, p.queue_ms), f64::max(i, p.inference_ms))
    })
}

/// Decoded `key=value` pairs of a query string, in order (`+` is a space, `%XX` is decoded;
/// a key without `=` has an empty value).
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// The first value of `key` among `pairs`.
pub fn query_get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Decodes `%XX` escapes and `+`; malformed escapes are kept as written.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len()
                && b[i + 1].is_ascii_hexdigit()
                && b[i + 2].is_ascii_hexdigit() =>
            {
                let hex = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(b[i + 1]) * 16 + hex(b[i + 2]));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One part of a `multipart/form-data` body.
#[derive(Debug, Clone)]
pub struct Part {
    /// Field name (`name=` of Content-Disposition).
    pub name: Option<String>,
    /// File name (`filename=`), present for file uploads.
    pub file_name: Option<String>,
    /// The part's bytes.
    pub bytes: Bytes,
}

/// Reads every part of a `multipart/form-data` request (at most `max_parts`). A wrong
/// Content-Type, a missing boundary or a malformed body is [`Error::InvalidArgument`].
pub async fn multipart_parts(
    headers: &hyper::HeaderMap,
    body: Bytes,
    max_parts: usize,
) -> Result<Vec<Part>, Error> {
    let content_type = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return Err(Error::InvalidArgument(format!(
            "expected a multipart/form-data request, got Content-Type {:?}",
            content_type
        )));
    }
    let boundary = multer::parse_boundary(content_type).map_err(|e| {
        Error::InvalidArgument(format!(
            "multipart/form-data without a usable boundary: {e}"
        ))
    })?;
    let stream =
        futures_util::stream::once(async move { Ok::<Bytes, std::convert::Infallible>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut parts = Vec::new();
    loop {
        let field = match mp.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return Err(Error::InvalidArgument(format!(
                    "malformed multipart body: {e}"
                )))
            }
        };
        if parts.len() == max_parts {
            return Err(Error::InvalidArgument(format!(
                "too many parts: at most {max_parts} per request"
            )));
        }
        let name = field.name().map(str::to_string);
        let file_name = field.file_name().map(str::to_string);
        let bytes = field
            .bytes()
            .await
            .map_err(|e| Error::InvalidArgument(format!("malformed multipart part: {e}")))?;
        parts.push(Part {
            name,
            file_name,
            bytes,
        });
    }
    Ok(parts)
}

/// The BI records of `dialect` within the `date_from`/`date_to` query parameters
/// (`yyyy-MM-dd`, UTC, both inclusive, both optional). Records queued before the call are
/// flushed first, so a client reads its own decisions.
pub async fn read_bi(
    app: &AppState,
    dialect: &'static str,
    query: Option<&str>,
) -> Result<Vec<BiRecord>, Error> {
    let pairs = query_pairs(query);
    let date = |k: &str| {
        Date::parse_opt(query_get(&pairs, k)).map_err(|e| match e {
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("{k}: {m}")),
            other => other,
        })
    };
    let (from, to) = (date("date_from")?, date("date_to")?);
    check_range(from, to)?;
    let bi = app.bi.clone();
    let records = tokio::task::spawn_blocking(move || {
        bi.flush()?;
        bi.store().records(from, to)
    })
    .await
    .map_err(|e| Error::Unavailable(format!("BI read task: {e}")))??;
    Ok(records
        .into_iter()
        .filter(|r| r.dialect == dialect)
        .collect())
}

/// The reference's path of a route (`/check_liveness` for `/idlive/check_liveness`).
pub fn reference_path(ctx: &Ctx) -> String {
    let prefix = format!("/{}", ctx.route.dialect);
    match ctx.route.path.strip_prefix(&prefix) {
        Some(rest) if rest.starts_with('/') => rest.to_string(),
        _ => ctx.route.path.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_decode() {
        let p = query_pairs(Some("types=photo%2Cexternal&a+b=c+d&flag&x=%zz%4"));
        assert_eq!(query_get(&p, "types"), Some("photo,external"));
        assert_eq!(query_get(&p, "a b"), Some("c d"));
        assert_eq!(query_get(&p, "flag"), Some(""));
        assert_eq!(query_get(&p, "x"), Some("%zz%4"));
        assert!(query_pairs(None).is_empty());
    }
}
