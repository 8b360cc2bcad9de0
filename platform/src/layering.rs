//! The house rule that domain code knows no HTTP, checked in the tree: the modules listed in
//! [`HTTP_FREE`] are use cases and models that every front end (JSON API, web UI, console,
//! WebSocket, CLI) calls, so they must not name Rocket, the HTTP error type or a front end.
//! A module joins the list when it is made HTTP-free; the list only grows.

/// Source files (under `platform/src`) that must stay free of HTTP and front ends.
pub const HTTP_FREE: &[&str] = &[
    "audit/action.rs",
    "audit/anchor.rs",
    "auth/admin_acts.rs",
    "auth/sessions.rs",
    "files/moderation.rs",
    "files/orphans.rs",
    "files/range.rs",
    "security/throttle.rs",
];

/// What such a file must not name: Rocket, the HTTP layer and its error, or a front end.
pub const FORBIDDEN: &[&str] =
    &["rocket", "crate::http", "ApiError", "crate::web", "crate::admin", "::routes", "crate::realtime::ws"];

#[cfg(test)]
mod tests {
    use super::{FORBIDDEN, HTTP_FREE};

    #[test]
    fn domain_modules_know_no_http_and_no_front_end() {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut found = Vec::new();
        for file in HTTP_FREE {
            let text = std::fs::read_to_string(src.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for word in FORBIDDEN {
                    if code.contains(word) {
                        found.push(format!("{file}:{}: names `{word}`: {}", n + 1, line.trim()));
                    }
                }
            }
        }
        assert!(found.is_empty(), "domain code must not know HTTP or a front end:\n{}", found.join("\n"));
    }
}
