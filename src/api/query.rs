//! Query strings, decoded once by `form_urlencoded` (`+` is a space, `%XX` escapes, UTF-8;
//! malformed escapes are kept as written), with the lookups every dialect needs.

use super::error::ApiError;

/// The decoded `key=value` pairs of a query string, in order (a key without `=` has an empty
/// value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// The pairs, in order.
    pairs: Vec<(String, String)>,
}

/// Most pairs a query string may hold.
pub const MAX_PAIRS: usize = 64;

impl Query {
    /// Parses `query` (the part after `?`, absent for none). More than [`MAX_PAIRS`] pairs is an
    /// invalid argument naming the bound.
    pub fn parse(query: Option<&str>) -> Result<Query, ApiError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or("").as_bytes())
            .take(MAX_PAIRS + 1)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if pairs.len() > MAX_PAIRS {
            return Err(ApiError::invalid(format!(
                "too many query parameters: at most {MAX_PAIRS}"
            )));
        }
        Ok(Query { pairs })
    }

    /// The pairs, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `key`, trimmed; `None` when absent or empty.
    pub fn get_nonempty(&self, key: &str) -> Option<&str> {
        self.get(key).map(str::trim).filter(|v| !v.is_empty())
    }

    /// Every value of `key`, in order.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `key` as a boolean: `true`/`1`/empty (a bare flag) or `false`/`0`; absent is `None`.
    pub fn flag(&self, key: &str) -> Result<Option<bool>, ApiError> {
        match self.get(key).map(str::trim) {
            None => Ok(None),
            Some("true" | "1" | "") => Ok(Some(true)),
            Some("false" | "0") => Ok(Some(false)),
            Some(v) => Err(ApiError::invalid(format!(
                "{key} must be true or false, not {v}"
            ))),
        }
    }

    /// Refuses a key outside `known`, naming it.
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self
            .pairs
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            Some((k, _)) => Err(ApiError::invalid(format!(
                "unknown query parameter {k}: this route takes {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_a_form() {
        let q = Query::parse(Some(
            "types=photo%2Cexternal&a+b=c+d&flag&x=%zz%4&u=%C3%BC%26",
        ))
        .unwrap();
        assert_eq!(q.get("types"), Some("photo,external"));
        assert_eq!(q.get("a b"), Some("c d"));
        assert_eq!(q.get("flag"), Some(""));
        assert_eq!(q.get("x"), Some("%zz%4"));
        assert_eq!(q.get("u"), Some("ü&"));
        assert!(Query::parse(None).unwrap().pairs().is_empty());
    }

    #[test]
    fn lookups_flags_and_unknown_keys() {
        let q = Query::parse(Some("t=a&t=b&on&off=0&bad=maybe")).unwrap();
        assert_eq!(q.all("t").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(q.flag("on").unwrap(), Some(true));
        assert_eq!(q.flag("off").unwrap(), Some(false));
        assert_eq!(q.flag("absent").unwrap(), None);
        assert!(q.flag("bad").unwrap_err().to_string().contains("bad"));
        let e = q.only(&["t", "on", "off"]).unwrap_err().to_string();
        assert!(e.contains("unknown query parameter bad"), "{e}");
        let many = (0..=MAX_PAIRS)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join("&");
        assert!(Query::parse(Some(&many)).is_err());
    }
}
