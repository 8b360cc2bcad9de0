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
        Some(_) => Err(ApiError::invalid(
            "limit",
            format!("must be between 1 and {MAX_LIMIT}"),
        )),
    }
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
        assert_eq!(
            super::decode_cursor(Some(&super::encode_cursor(42))).unwrap(),
            Some(42)
        );
        assert!(super::decode_cursor(Some("nope")).is_err());
        assert!(super::limit(Some(0)).is_err());
        assert!(super::limit(Some(201)).is_err());
    }
}
