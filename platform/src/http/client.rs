//! Who is calling: client IP (honouring `X-Forwarded-For` only from trusted proxies), user agent
//! and the request id.

use std::convert::Infallible;
use std::net::IpAddr;

use ipnet::IpNet;
use rocket::request::{FromRequest, Outcome};
use rocket::Request;

use crate::AppState;

/// The id of this request, echoed in `X-Request-Id` and written to logs and audit entries.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    pub fn of(req: &Request<'_>) -> String {
        req.local_cache(|| {
            // A proxy's id is kept when it is short and plain; anything else is replaced.
            let incoming = req.headers().get_one("X-Request-Id").filter(|v| {
                !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            });
            RequestId(incoming.map(str::to_string).unwrap_or_else(|| uuid::Uuid::now_v7().to_string()))
        })
        .0
        .clone()
    }
}

/// The client's address. `X-Forwarded-For` is read right to left and believed only while the
/// hop that added it is a trusted proxy; from anyone else it is ignored.
pub fn client_ip(peer: Option<IpAddr>, xff: Option<&str>, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = peer?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let Some(xff) = xff else { return Some(peer) };
    let mut client = peer;
    for hop in xff.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !is_trusted(&ip) {
                    break;
                }
            }
            // A malformed hop: stop at the last address we could trust.
            Err(_) => break,
        }
    }
    Some(client)
}

static UNTRUSTED_FORWARDER: std::sync::OnceLock<IpAddr> = std::sync::OnceLock::new();

/// Remembers (and logs, once) the first peer that sent `X-Forwarded-For` without being a
/// trusted proxy: a reverse proxy missing from `server.trusted_proxies` makes every client
/// look like the proxy (one lockout and rate limit for everyone).
fn note_untrusted_forwarder(peer: IpAddr) {
    if UNTRUSTED_FORWARDER.set(peer).is_ok() {
        tracing::warn!(
            peer = %peer,
            "a request carried X-Forwarded-For from a peer that is not a trusted proxy; the header is ignored. If this is your reverse proxy, add it to server.trusted_proxies"
        );
    }
}

/// The first untrusted peer seen sending `X-Forwarded-For`, if any (the console's system page).
pub fn untrusted_forwarder() -> Option<IpAddr> {
    UNTRUSTED_FORWARDER.get().copied()
}

/// IP, user agent and request id of the caller, for audit entries and rate limits.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub request_id: String,
}

impl ClientInfo {
    pub fn of(req: &Request<'_>) -> Self {
        let trusted =
            req.rocket().state::<AppState>().map(|s| s.config.server.trusted_proxies.as_slice()).unwrap_or(&[]);
        // Every `X-Forwarded-For` line, in order, as one list (RFC 9110 §5.3): a proxy may add
        // its hop as a line of its own, after the client's.
        let lines: Vec<&str> = req.headers().get("X-Forwarded-For").collect();
        let xff = (!lines.is_empty()).then(|| lines.join(","));
        let peer = req.remote().map(|r| r.ip());
        if let (Some(p), Some(_)) = (peer, &xff) {
            if !trusted.iter().any(|n| n.contains(&p)) {
                note_untrusted_forwarder(p);
            }
        }
        Self {
            ip: client_ip(peer, xff.as_deref(), trusted),
            user_agent: req.headers().get_one("User-Agent").map(str::to_string),
            request_id: RequestId::of(req),
        }
    }

    pub fn ip_string(&self) -> Option<String> {
        self.ip.map(|i| i.to_string())
    }
}

#[rocket::async_trait]
impl<'r> FromRequest<'r> for ClientInfo {
    type Error = Infallible;

    async fn from_request(req: &'r Request<'_>) -> Outcome<Self, Infallible> {
        Outcome::Success(ClientInfo::of(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_only_from_trusted_peers() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        // Untrusted peer: header ignored.
        assert_eq!(client_ip(Some(ip("203.0.113.9")), Some("1.2.3.4"), &trusted), Some(ip("203.0.113.9")));
        // Trusted proxy: rightmost untrusted hop wins, a spoofed left part is not believed.
        assert_eq!(
            client_ip(Some(ip("10.0.0.2")), Some("6.6.6.6, 198.51.100.7, 10.0.0.3"), &trusted),
            Some(ip("198.51.100.7"))
        );
        assert_eq!(client_ip(Some(ip("10.0.0.2")), None, &trusted), Some(ip("10.0.0.2")));
        assert_eq!(client_ip(Some(ip("10.0.0.2")), Some("junk"), &trusted), Some(ip("10.0.0.2")));
    }
}
