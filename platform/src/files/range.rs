//! The `Range` request header of downloads (RFC 9110, one range).

/// A `Range` that cannot be served (416).
#[derive(Debug)]
pub struct Unsatisfiable;

/// Parses a single `bytes=a-b` / `bytes=a-` / `bytes=-n` range against `size`.
/// `Ok(None)`: serve everything.
pub fn parse_range(h: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(spec) = h.and_then(|h| h.trim().strip_prefix("bytes=")) else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None); // several ranges: answer the whole file, which RFC 9110 allows
    }
    let (a, b) = spec.split_once('-').ok_or(Unsatisfiable)?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| Unsatisfiable)?;
            if n == 0 {
                return Err(Unsatisfiable);
            }
            (size.saturating_sub(n), size)
        }
        (a, "") => (a.parse().map_err(|_| Unsatisfiable)?, size),
        (a, b) => {
            let (a, b): (u64, u64) = (a.parse().map_err(|_| Unsatisfiable)?, b.parse().map_err(|_| Unsatisfiable)?);
            if b < a {
                return Err(Unsatisfiable);
            }
            // `b` may be u64::MAX: an end past the file is clamped, never wrapped around.
            (a, b.saturating_add(1).min(size))
        }
    };
    if start >= size {
        return Err(Unsatisfiable);
    }
    Ok(Some((start, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_clamped_to_the_file_and_never_wrap() {
        assert_eq!(parse_range(None, 10).unwrap(), None);
        assert_eq!(parse_range(Some("bytes=0-4"), 10).unwrap(), Some((0, 5)));
        assert_eq!(parse_range(Some("bytes=5-"), 10).unwrap(), Some((5, 10)));
        assert_eq!(parse_range(Some("bytes=-3"), 10).unwrap(), Some((7, 10)));
        assert_eq!(parse_range(Some("bytes=2-99"), 10).unwrap(), Some((2, 10)));
        assert_eq!(parse_range(Some("bytes=0-18446744073709551615"), 10).unwrap(), Some((0, 10)));
        assert_eq!(parse_range(Some("bytes=9-18446744073709551615"), 10).unwrap(), Some((9, 10)));
        assert!(parse_range(Some("bytes=10-"), 10).is_err());
        assert!(parse_range(Some("bytes=18446744073709551615-"), 10).is_err());
        assert!(parse_range(Some("bytes=0-99999999999999999999"), 10).is_err(), "beyond 64 bits: 416");
        assert!(parse_range(Some("bytes=5-2"), 10).is_err());
        assert!(parse_range(Some("bytes=-0"), 10).is_err());
    }
}
