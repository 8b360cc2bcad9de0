//! The HTTP boundary shared by every module: error shape, JSON bodies, client identity,
//! pagination, fairings and metrics.

pub mod client;
pub mod error;
pub mod fairings;
pub mod json;
pub mod metrics;
pub mod pagination;
pub mod transport;

pub use client::ClientInfo;
pub use error::{ApiError, ApiResult};
pub use json::JsonBody;

/// Percent-encodes everything but RFC 3986's unreserved characters (for query strings and
/// `otpauth://` URIs).
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
