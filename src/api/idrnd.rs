//! What the two ID R&D dialects (IDLive Face and IAD) share: their decision records (one BI
//! store, filtered by dialect) and the licence expiry both references report and export.

use std::sync::Arc;

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::{Request, StatusCode};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::query::Query;
use crate::bi::{check_range, parse_iso_ms, BiRecord, BiWriter, Cursor, Date, Page, Tally};
use crate::server::{json_response, HttpResponse};
use crate::telemetry as tm;
use crate::{Error, Result};

/// Default licence expiry: facegate has no licence, so a far-future instant.
pub const DEFAULT_LICENSE_EXPIRATION: &str = "2999-12-31T23:59:59Z";

/// Checks a configured licence expiry (`key` names it in errors): an ISO 8601 instant
/// starting with a `yyyy-MM-dd` date.
pub fn validate_license(key: &str, value: &str) -> Result<()> {
    let day = value.get(..10).unwrap_or("");
    if Date::parse(day).is_err() {
        return Err(Error::InvalidArgument(format!(
            "{key} {value:?} must start with a yyyy-MM-dd date, e.g. {DEFAULT_LICENSE_EXPIRATION}"
        )));
    }
    Ok(())
}

/// Unix seconds of a licence expiry: the full instant when it has seconds (`...THH:mm:ssZ`
/// or with milliseconds), else the end of its day.
pub fn license_unix_s(value: &str) -> i64 {
    let full = match value.len() {
        20 if value.ends_with('Z') => parse_iso_ms(&format!("{}.000Z", &value[..19])).ok(),
        24 => parse_iso_ms(value).ok(),
        _ => None,
    };
    full.map(|ms| ms / 1000).unwrap_or_else(|| {
        value
            .get(..10)
            .and_then(|d| Date::parse(d).ok())
            .map_or(0, |d| d.end_ms() / 1000 - 1)
    })
}

/// Exports a dialect's licence expiry as `facegate_license_expiration_seconds{dialect}`, so
/// operators can "monitor a license expiration date" from `/metrics` as both references say.
pub fn export_license(dialect: &'static str, value: &str) {
    metrics::gauge!(tm::LICENSE_EXPIRATION, "dialect" => dialect).set(license_unix_s(value) as f64);
}

/// The licence section both ID R&D dialects accept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Licensed {
    /// Licence expiry reported (`expirationDate`; `licenseExpirationDate` is its date part).
    pub license_expiration: String,
}

impl Default for Licensed {
    fn default() -> Self {
        Self {
            license_expiration: DEFAULT_LICENSE_EXPIRATION.into(),
        }
    }
}

/// The `date_from`/`date_to` query parameters (`yyyy-MM-dd`, both optional), in order.
fn dates(query: &Query) -> std::result::Result<(Option<Date>, Option<Date>), ApiError> {
    let date = |k: &str| {
        Date::parse_opt(query.get(k)).map_err(|e| match e {
            Error::InvalidArgument(m) => ApiError::invalid(format!("{k}: {m}")),
            other => ApiError::Engine(other),
        })
    };
    let (from, to) = (date("date_from")?, date("date_to")?);
    check_range(from, to)?;
    Ok((from, to))
}

/// `/bi_report`'s counts of `dialect`'s records within the `date_from`/`date_to` query
/// parameters (`yyyy-MM-dd`, UTC, both inclusive, both optional), counted by the store (the
/// records themselves are never loaded). Records queued before the call are flushed first, so
/// a client reads its own decisions.
pub async fn read_tally(
    bi: &Arc<BiWriter>,
    dialect: &'static str,
    query: &Query,
) -> std::result::Result<Vec<Tally>, ApiError> {
    let (from, to) = dates(query)?;
    let bi = bi.clone();
    let tally = tokio::task::spawn_blocking(move || {
        bi.flush()?;
        bi.store().tally(dialect, from, to)
    })
    .await
    .map_err(|e| Error::Unavailable(format!("BI read task: {e}")))??;
    Ok(tally)
}

/// Records of one `/bi_records` page by default (and `limit`'s default).
pub const BI_PAGE_DEFAULT: usize = 10_000;
/// Most records of one `/bi_records` page (`limit`'s bound).
pub const BI_PAGE_MAX: usize = 100_000;

/// `GET /bi_records` of `dialect`: its records within the query's dates, oldest first, one page
/// of at most `limit` (default [`BI_PAGE_DEFAULT`], at most [`BI_PAGE_MAX`]) after the `after`
/// cursor. A full page carries `x-next-cursor`, the `after` of the next one; the body stays
/// the reference's JSON array.
pub async fn bi_records(
    bi: &Arc<BiWriter>,
    dialect: &'static str,
    req: &Request<Bytes>,
) -> std::result::Result<HttpResponse, ApiError> {
    let query = Query::parse(req.uri().query())?;
    query.only(&["date_from", "date_to", "limit", "after"])?;
    let (from, to) = dates(&query)?;
    let limit = match query.get("limit") {
        None => BI_PAGE_DEFAULT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=BI_PAGE_MAX).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(format!("limit: {v:?} is not a number in 1..={BI_PAGE_MAX}"))
            })?,
    };
    let after = query
        .get("after")
        .map(Cursor::parse)
        .transpose()
        .map_err(ApiError::Engine)?;
    let page = Page {
        dialect: dialect.to_string(),
        from,
        to,
        after,
        limit,
    };
    let bi = bi.clone();
    let rows = tokio::task::spawn_blocking(move || {
        bi.flush()?;
        bi.store().page(&page)
    })
    .await
    .map_err(|e| Error::Unavailable(format!("BI read task: {e}")))??;
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|(c, _)| c.encode()))
        .flatten();
    let records: Vec<&BiRecord> = rows.iter().map(|(_, r)| r).collect();
    let mut resp = json_response(StatusCode::OK, &serde_json::json!(records));
    if let Some(v) = next.and_then(|n| HeaderValue::from_str(&n).ok()) {
        resp.headers_mut().insert("x-next-cursor", v);
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn license_dates_become_unix_seconds() {
        assert_eq!(license_unix_s("1970-01-02T00:00:00Z"), 86_400);
        assert_eq!(license_unix_s("1970-01-02T00:00:01.500Z"), 86_401);
        assert_eq!(license_unix_s("1970-01-01"), 86_399);
        assert!(validate_license("idlive.license_expiration", "never").is_err());
        assert!(validate_license("x", DEFAULT_LICENSE_EXPIRATION).is_ok());
    }
}
