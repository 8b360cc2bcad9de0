//! Timestamps: stored as microseconds since the Unix epoch, shown as RFC 3339 UTC.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub fn now_micros() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}

pub fn micros_to_rfc3339(micros: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(micros as i128 * 1000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default()
}

/// Parses an RFC 3339 time into microseconds since the epoch.
pub fn parse_rfc3339_micros(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &Rfc3339).ok().map(|t| (t.unix_timestamp_nanos() / 1000) as i64)
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trips() {
        let m = super::parse_rfc3339_micros("2026-11-25T12:00:00.5Z").unwrap();
        assert_eq!(super::micros_to_rfc3339(m), "2026-11-25T12:00:00.5Z");
    }
}
