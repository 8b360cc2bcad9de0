//! Display names of uploaded files: kept for people, never used as paths.

/// Checks a client-supplied file name; says why one is refused. Names are display-only (storage
/// keys are random), but a name with path parts, control or bidirectional-override characters
/// misleads the people who read it, so it is refused rather than silently altered.
pub fn check(name: &str) -> Result<String, &'static str> {
    let name = name.trim();
    if name.is_empty() {
        return Err("must not be empty");
    }
    if name.chars().count() > 255 {
        return Err("must be at most 255 characters");
    }
    if name.contains(['/', '\\']) || name == "." || name == ".." {
        return Err("must not contain path separators");
    }
    let bidi = |c: char| matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}');
    if name.chars().any(|c| c.is_control() || bidi(c)) {
        return Err("must not contain control or text-direction characters");
    }
    Ok(name.to_string())
}

/// `Content-Disposition: attachment` with an ASCII fallback and the RFC 5987 UTF-8 name.
pub fn content_disposition(name: &str) -> String {
    let ascii: String =
        name.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let encoded: String = name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_are_refused() {
        assert!(check("../../etc/passwd").is_err());
        assert!(check("a\0b").is_err());
        assert!(check(&"x".repeat(10_000)).is_err());
        assert!(check("invoice\u{202E}fdp.exe").is_err());
        assert_eq!(check("  Report 2026.pdf ").unwrap(), "Report 2026.pdf");
        assert_eq!(
            content_disposition("naïve \"x\".txt"),
            "attachment; filename=\"na_ve _x_.txt\"; filename*=UTF-8''na%C3%AFve%20%22x%22.txt"
        );
    }
}
