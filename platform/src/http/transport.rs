//! How a request reached the server, and what that asks of the response: whether it came over
//! HTTPS (the server's own TLS, or a trusted reverse proxy's `X-Forwarded-Proto: https`), and
//! whether cookies must be `Secure`.
//!
//! Cookies are `Secure` by default; only a request addressed to this machine itself
//! (`localhost`, `127.0.0.0/8`, `::1`: a developer's browser, which treats those as secure
//! contexts anyway) gets them without it. So the packaged set-up behind a reverse proxy (the
//! server listening on loopback, the browser on `https://collab.example.org`) sends session
//! cookies `Secure` without any setting. `web.secure_cookie` / `admin.secure_cookie = false`
//! turn this off for their cookies (not recommended).
//!
//! The rule is applied once, to every `Set-Cookie` of every response (`http::fairings`), so no
//! cookie can miss it.

use std::net::IpAddr;

use rocket::Request;

use crate::config::Config;

/// Whether `host` (a `Host` header: name or address, with an optional port) is this machine.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim();
    let name = if let Some(rest) = h.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        h.rsplit_once(':')
            .filter(|(n, p)| !n.contains(':') && p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(h, |(n, _)| n)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether the request came over HTTPS: the server's own TLS, or a trusted proxy saying so.
pub fn is_https(req: &Request<'_>, cfg: &Config) -> bool {
    if cfg.server.tls_enabled() {
        return true;
    }
    let Some(peer) = req.remote().map(|r| r.ip()) else { return false };
    if !cfg.server.trusted_proxies.iter().any(|n| n.contains(&peer)) {
        return false;
    }
    req.headers()
        .get("X-Forwarded-Proto")
        .flat_map(|v| v.split(','))
        .last()
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"))
}

/// Whether the cookie named `name` must carry `Secure` on the answer to `req`.
pub fn cookie_must_be_secure(req: &Request<'_>, cfg: &Config, name: &str) -> bool {
    // The console's cookies (`seccollab_admin`, `seccollab_admin_pre`) follow `admin.secure_cookie`.
    let setting = if name.starts_with("seccollab_admin") { cfg.admin.secure_cookie } else { cfg.web.secure_cookie };
    if let Some(explicit) = setting {
        return explicit;
    }
    if is_https(req, cfg) {
        return true;
    }
    !req.headers().get_one("Host").is_some_and(is_loopback_host)
}

/// A `Set-Cookie` value with `; Secure` added when it lacks it.
pub fn with_secure(set_cookie: &str) -> Option<String> {
    let has = set_cookie.split(';').skip(1).any(|a| a.trim().eq_ignore_ascii_case("secure"));
    (!has).then(|| format!("{set_cookie}; Secure"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machine_is_loopback() {
        for h in ["localhost", "localhost:8000", "127.0.0.1:8000", "127.1.2.3", "[::1]:8000", "::1", "app.localhost"] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "collab.example.org",
            "collab.example.org:443",
            "10.0.0.5:8000",
            "[2001:db8::1]:8000",
            "localhost.evil.org",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn secure_is_added_once() {
        assert_eq!(with_secure("a=b; Path=/; HttpOnly").as_deref(), Some("a=b; Path=/; HttpOnly; Secure"));
        assert_eq!(with_secure("a=b; Secure; HttpOnly"), None);
        assert_eq!(with_secure("secure=b; Path=/").as_deref(), Some("secure=b; Path=/; Secure"));
    }
}
