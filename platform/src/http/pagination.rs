//! `limit` and opaque `cursor` parameters of list calls.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::error::ApiError;

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// Validates `limit` (1..=200, default 50).
pub fn limit(v: Option<i64>) -> Result<i64, ApiError> {
    match v {
        None => Ok(DEFAULT_LIMIT),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::invalid("limit", format!("must be between 1 and {MAX_LIMIT}"))),
    }
}

/// Parses and validates a raw `limit` query value.
pub fn parse_limit(v: Option<&str>) -> Result<i64, ApiError> {
    match v.map(str::trim).filter(|s| !s.is_empty()) {
        None => limit(None),
        Some(s) => limit(Some(s.parse().map_err(|_| ApiError::invalid("limit", "must be a whole number"))?)),
    }
}

/// Encodes a string key (such as an id) as an opaque cursor.
pub fn encode_str_cursor(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("k:{key}"))
}

/// Decodes a cursor made by [`encode_str_cursor`].
pub fn decode_str_cursor(v: Option<&str>) -> Result<Option<String>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    URL_SAFE_NO_PAD
        .decode(v)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("k:").map(str::to_string))
        .map(Some)
        .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor this server issued"))
}

/// Splits rows fetched with `limit + 1` into the page and the cursor of the next page (from the
/// page's last row), `None` at the end.
pub fn split_page<T>(mut rows: Vec<T>, limit: i64, cursor_of: impl Fn(&T) -> String) -> (Vec<T>, Option<String>) {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit.max(0) as usize);
    let next = if more { rows.last().map(cursor_of) } else { None };
    (rows, next)
}

/// Encodes a position as an opaque cursor.
pub fn encode_cursor(pos: i64) -> String {
    URL_SAFE_NO_PAD.encode(format!("p:{pos}"))
}

/// Decodes a cursor made by [`encode_cursor`].
pub fn decode_cursor(v: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    URL_SAFE_NO_PAD
        .decode(v)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("p:").and_then(|n| n.parse().ok()))
        .map(Some)
        .ok_or_else(|| ApiError::invalid("cursor", "is not a cursor this server issued"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn cursor_round_trip_and_rejects_junk() {
        assert_eq!(super::decode_cursor(Some(&super::encode_cursor(42))).unwrap(), Some(42));
        assert!(super::decode_cursor(Some("nope")).is_err());
        assert!(super::limit(Some(0)).is_err());
        assert!(super::limit(Some(201)).is_err());
    }
}
