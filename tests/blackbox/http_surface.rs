//! Health, JSON errors, security headers, metrics, request audit and graceful shutdown.

use crate::both_backends;
use crate::harness::{Backend, Server};
use seccollab::audit::query::{list, LogFilter};
use seccollab::db::Db;

fn audit_entries(cfg: &seccollab::config::Config, action: &str) -> Vec<seccollab::audit::AuditRow> {
    let db = Db::open(cfg).expect("open db");
    let mut conn = db.get().expect("conn");
    let f = LogFilter { action: Some(action.into()), ..Default::default() };
    list(&mut conn, &f, None, 10_000).expect("list")
}

both_backends!(health_answers_with_version_and_headers, |b: Backend| {
    let srv = Server::start(b);
    let r = srv.get("/api/health");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"], "ok");
    assert_eq!(r.json()["version"], env!("CARGO_PKG_VERSION"));
    let csp = r.header("content-security-policy").expect("CSP");
    assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(r.header("referrer-policy"), Some("no-referrer"));
    assert!(r.header("x-request-id").is_some_and(|v| v.len() >= 16));
    assert!(r.header("strict-transport-security").is_none(), "no HSTS without TLS");
});

both_backends!(every_api_error_is_json, |b: Backend| {
    let srv = Server::start(b);
    srv.get("/api/no/such/route").assert_error(404, "not_found");
    srv.request("DELETE", "/api/health", &[], None).assert_error(404, "not_found");
    srv.get("/api/admin/logs").assert_error(401, "unauthenticated");
    srv.get("/api/audit/verify").assert_error(401, "unauthenticated");
    // A forged token changes nothing: still refused, still JSON.
    srv.request("GET", "/api/admin/logs", &[("Authorization", "Bearer abc.def.ghi")], None)
        .assert_error(401, "invalid_token");
    // Outside /api the web pages keep HTML errors, but never leak a stack.
    assert_eq!(srv.get("/nope").status, 404);
});

both_backends!(request_id_from_proxy_is_kept_only_when_plain, |b: Backend| {
    let srv = Server::start(b);
    let r = srv.request("GET", "/api/health", &[("X-Request-Id", "abc-123")], None);
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    let r = srv.request("GET", "/api/health", &[("X-Request-Id", "<script>")], None);
    assert_ne!(r.header("x-request-id"), Some("<script>"));
});

both_backends!(metrics_count_requests_for_loopback, |b: Backend| {
    let srv = Server::start(b);
    srv.get("/api/health");
    srv.get("/api/nope");
    let m = srv.get("/metrics");
    assert_eq!(m.status, 200);
    let text = m.text();
    assert!(text.contains(r#"seccollab_http_requests_total{method="GET",route="/api/health",status="200"}"#), "{text}");
    assert!(text.contains(r#"route="unmatched",status="404""#), "{text}");
    assert!(text.contains("seccollab_http_request_duration_seconds_bucket"), "{text}");
    assert!(text.contains("seccollab_audit_queue_depth"), "{text}");
    assert!(text.contains("seccollab_db_pool_connections"), "{text}");
});

both_backends!(sigterm_flushes_every_request_audit_entry, |b: Backend| {
    let mut srv = Server::start(b);
    for i in 0..200 {
        srv.get(&format!("/api/missing/{i}"));
    }
    assert_eq!(srv.stop(), 0, "clean exit on SIGTERM");
    let cfg = srv.db.config();
    let entries = audit_entries(&cfg, "http.request");
    assert_eq!(entries.len(), 200, "every answered request is in the audit log");
    assert!(entries.iter().all(|e| e.outcome == "failure" && e.ip.as_deref() == Some("127.0.0.1")));
    assert_eq!(audit_entries(&cfg, "system.stop").len(), 1);
    // The query string never reaches the audit log.
    srv_query_not_logged(&cfg);
});

fn srv_query_not_logged(cfg: &seccollab::config::Config) {
    let entries = audit_entries(cfg, "http.request");
    assert!(entries.iter().all(|e| !e.details.contains('?')));
}

both_backends!(forwarded_for_is_ignored_from_untrusted_peers, |b: Backend| {
    let mut srv = Server::start(b);
    srv.request("GET", "/api/spoof", &[("X-Forwarded-For", "203.0.113.66")], None);
    srv.stop();
    let e = audit_entries(&srv.db.config(), "http.request");
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].ip.as_deref(), Some("127.0.0.1"), "a spoofed header must not change the client IP");

    let db = crate::harness::TestDb::new(b);
    let mut srv = Server::start_with(db, &[("SECCOLLAB_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]")]);
    srv.request("GET", "/api/via-proxy", &[("X-Forwarded-For", "6.6.6.6, 198.51.100.7")], None);
    srv.stop();
    let e = audit_entries(&srv.db.config(), "http.request");
    assert_eq!(e[0].ip.as_deref(), Some("198.51.100.7"), "the hop the trusted proxy saw");
});
