//! Cross-cutting HTTP behaviour: security headers, request ids, access logs, metrics and the
//! per-request audit entry.

use std::time::Instant;

use rocket::fairing::{Fairing, Info, Kind};
use rocket::http::Header;
use rocket::{Data, Request, Response};
use serde_json::json;

use super::client::ClientInfo;
use crate::audit::{NewAuditEntry, Outcome};
use crate::auth::CurrentActor;
use crate::AppState;

#[derive(Clone, Copy)]
struct Started(Instant);

/// Paths that are neither audited per request nor worth a log line each (probes, scrapes).
fn is_probe(path: &str) -> bool {
    path == "/api/health" || path == "/metrics"
}

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
    media-src 'self' blob:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// The fairing that wraps every request.
#[derive(Debug, Default)]
pub struct HttpLayer;

#[rocket::async_trait]
impl Fairing for HttpLayer {
    fn info(&self) -> Info {
        Info { name: "SecCollab HTTP layer", kind: Kind::Request | Kind::Response }
    }

    async fn on_request(&self, req: &mut Request<'_>, _: &mut Data<'_>) {
        req.local_cache(|| Started(Instant::now()));
        // A blocked source address reaches no handler: the request is routed to the refusal.
        let Some(state) = req.rocket().state::<AppState>() else { return };
        let Some(ip) = ClientInfo::of(req).ip else { return };
        if let Some(secs) = state.blocks.check(ip, crate::time::now_micros()) {
            req.local_cache(|| crate::security::responses::BlockedFor(Some(secs)));
            req.set_method(rocket::http::Method::Get);
            req.set_uri(rocket::http::uri::Origin::parse(crate::security::responses::BLOCKED_PATH).expect("path"));
            return;
        }
        // Rate limits by route class, per credential and per address.
        use crate::security::ratelimit;
        let Some(class) = ratelimit::classify(req.method().as_str(), req.uri().path().as_str()) else { return };
        let credential = req
            .headers()
            .get_one("Authorization")
            .map(str::to_string)
            .or_else(|| req.query_value::<String>("token").and_then(Result::ok))
            .or_else(|| req.cookies().get(crate::web::COOKIE).map(|c| c.value().to_string()))
            .or_else(|| req.cookies().get(crate::admin::COOKIE).map(|c| c.value().to_string()));
        let exempt = state.policy.responses.never_block.iter().any(|n| n.contains(&ip));
        let verdict = if !state.policy.rate_limits.enabled {
            Ok(())
        } else if state.db.backend() == crate::db::Backend::Postgres {
            // Shared by every node: one atomic count per budget key and minute.
            let keys =
                ratelimit::shared_keys(&state.policy.rate_limits, class, credential.as_deref(), Some(ip), exempt);
            let now = crate::time::now_micros() / 1_000_000;
            match state.db.q(move |c| ratelimit::check_shared(c, &keys, now)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err((secs, scope))) => Err(state.limiter.note_limited(class, scope, secs)),
                Err(e) => {
                    tracing::warn!(error = %e, "rate limit counters unavailable; letting the request through");
                    Ok(())
                }
            }
        } else {
            state.limiter.check(&state.policy.rate_limits, class, credential.as_deref(), Some(ip), exempt)
        };
        if let Err((secs, scope)) = verdict {
            req.local_cache(|| ratelimit::LimitedFor(Some((secs, class.as_str(), scope))));
            req.set_method(rocket::http::Method::Get);
            req.set_uri(rocket::http::uri::Origin::parse(ratelimit::LIMITED_PATH).expect("path"));
        }
    }

    async fn on_response<'r>(&self, req: &'r Request<'_>, res: &mut Response<'r>) {
        let Some(state) = req.rocket().state::<AppState>() else {
            return;
        };
        let client = ClientInfo::of(req);
        let path = req.uri().path().as_str().to_string();
        let status = res.status().code;

        res.set_header(Header::new("X-Request-Id", client.request_id.clone()));
        res.set_header(Header::new("Content-Security-Policy", CSP));
        res.set_header(Header::new("X-Content-Type-Options", "nosniff"));
        res.set_header(Header::new("X-Frame-Options", "DENY"));
        res.set_header(Header::new("Referrer-Policy", "no-referrer"));
        res.set_header(Header::new("Cross-Origin-Opener-Policy", "same-origin"));
        res.set_header(Header::new("Cross-Origin-Resource-Policy", "same-origin"));
        res.set_header(Header::new("Permissions-Policy", "geolocation=(), payment=(), usb=()"));
        if super::transport::is_https(req, &state.config) {
            res.set_header(Header::new("Strict-Transport-Security", "max-age=63072000; includeSubDomains"));
        }
        // Every cookie of every answer is `Secure` unless the request was addressed to this
        // machine itself (`http::transport`).
        let cookies: Vec<String> = res.headers().get("Set-Cookie").map(str::to_string).collect();
        if !cookies.is_empty() {
            let fixed: Vec<String> = cookies
                .iter()
                .map(|c| {
                    let name = c.split('=').next().unwrap_or("").trim();
                    match super::transport::cookie_must_be_secure(req, &state.config, name) {
                        true => super::transport::with_secure(c).unwrap_or_else(|| c.clone()),
                        false => c.clone(),
                    }
                })
                .collect();
            if fixed != cookies {
                res.remove_header("Set-Cookie");
                for c in fixed {
                    res.adjoin_header(Header::new("Set-Cookie", c));
                }
            }
        }
        if path.starts_with("/api") {
            res.set_header(Header::new("Cache-Control", "no-store"));
        }

        let elapsed = req.local_cache(|| Started(Instant::now())).0.elapsed();
        let route = req.route().map(|r| r.uri.path().to_string()).unwrap_or_else(|| "unmatched".into());
        let method = req.method().as_str();
        state.metrics.observe(method, &route, status, elapsed.as_secs_f64());
        if is_probe(&path) {
            return;
        }
        // The query string is never logged: it can carry tokens (`/ws?token=`).
        tracing::info!(
            request_id = %client.request_id,
            method,
            path = %path,
            status,
            ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
        // The admin console's page views and forms are audited like API calls.
        if state.config.audit.log_requests && (path.starts_with("/api") || path.starts_with("/admin")) {
            let outcome = Outcome::of_status(status);
            let actor = req.local_cache(CurrentActor::default).0.clone();
            let entry = NewAuditEntry::new(crate::audit::AuditAction::HttpRequest, outcome)
                .actor(actor)
                .client(client.ip_string(), client.user_agent)
                .details(json!({
                    "method": method,
                    "path": path,
                    "route": route,
                    "status": status,
                    "request_id": client.request_id,
                    "duration_ms": (elapsed.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
                }));
            state.audit.record(entry).await;
        }
    }
}
