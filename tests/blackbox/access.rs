//! Token attacks, the route-walking authorization proof, JSON body errors, and the admin audit
//! log API (filters, pagination, export, verify).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::auth::{admin_token, get, login, open_server, user_token, PASSWORD};
use crate::both_backends;
use crate::harness::{Backend, Server};

fn signing_key(srv: &Server) -> Vec<u8> {
    let text = std::fs::read_to_string(srv.db.dir.path().join("data/keys/jwt_signing.key")).unwrap();
    STANDARD.decode(text.trim()).unwrap()
}

#[test]
fn forged_tokens_are_refused() {
    let srv = open_server(Backend::Sqlite);
    let t = user_token(&srv, "mallory@example.org");
    let good = t["token"].as_str().unwrap();
    assert_eq!(get(&srv, "/api/auth/me", good).status, 200);
    let key = signing_key(&srv);
    let parts: Vec<&str> = good.split('.').collect();
    let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    let sign =
        |alg: Algorithm, c: &serde_json::Value| encode(&Header::new(alg), c, &EncodingKey::from_secret(&key)).unwrap();
    let with = |k: &str, v: serde_json::Value| {
        let mut c = claims.clone();
        c[k] = v;
        c
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let cases = vec![
        ("alg none", format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#), parts[1])),
        ("other algorithm, same key", sign(Algorithm::HS512, &claims)),
        ("wrong audience", sign(Algorithm::HS256, &with("aud", json!("someone-else")))),
        ("wrong issuer", sign(Algorithm::HS256, &with("iss", json!("evil")))),
        ("expired", sign(Algorithm::HS256, &with("exp", json!(now - 3600)))),
        ("tampered signature", format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode([0u8; 32]))),
        ("another user's id in a valid session", sign(Algorithm::HS256, &with("sub", json!("01a2-someone-else")))),
        ("unknown session", sign(Algorithm::HS256, &with("sid", json!("no-such-session")))),
        ("garbage", "abc.def.ghi".to_string()),
    ];
    for (name, token) in cases {
        let r = get(&srv, "/api/auth/me", &token);
        assert_eq!(r.status, 401, "{name}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "invalid_token", "{name}");
    }
    // Without the `sid` claim at all.
    let mut c = claims.clone();
    c.as_object_mut().unwrap().remove("sid");
    assert_eq!(get(&srv, "/api/auth/me", &sign(Algorithm::HS256, &c)).status, 401);
}

/// Calls that need no sign-in. Everything else must refuse anonymous callers, and every admin
/// call must refuse signed-in non-admins.
const ANONYMOUS_ALLOWED: &[(&str, &str)] = &[
    ("GET", "/api/health"),
    ("GET", "/api/openapi.json"),
    ("POST", "/api/auth/register"),
    ("POST", "/api/auth/login"),
    ("POST", "/api/auth/verify-mfa"),
    ("POST", "/api/auth/refresh"),
    // Sign-in through a provider starts before there is a session (tests/blackbox/oidc.rs).
    ("GET", "/api/auth/providers"),
    ("GET", "/api/auth/login/x"),
    ("GET", "/api/auth/callback/x"),
];

fn is_admin_route(path: &str) -> bool {
    path.starts_with("/api/admin/") || path.starts_with("/api/audit/")
}

#[test]
fn every_route_refuses_anonymous_and_non_admin_callers() {
    let srv = open_server(Backend::Sqlite);
    let user = user_token(&srv, "walker@example.org");
    let user_tok = user["token"].as_str().unwrap();
    let mut checked = 0;
    for route in seccollab::api_routes() {
        let method = route.method.as_str();
        let path: String = format!("/api{}", route.uri.path())
            .split('/')
            .map(|s| if s.starts_with('<') { "x".to_string() } else { s.to_string() })
            .collect::<Vec<_>>()
            .join("/");
        let body = br#"{}"#;
        let json = [("Content-Type", "application/json")];
        if ANONYMOUS_ALLOWED.contains(&(method, path.as_str())) {
            continue;
        }
        let anon = srv.request(method, &path, &json, Some(body));
        assert_eq!(anon.status, 401, "{method} {path} must refuse anonymous callers: {}", anon.text());
        if is_admin_route(&path) {
            let auth = format!("Bearer {user_tok}");
            let r = srv.request(method, &path, &[json[0], ("Authorization", &auth)], Some(body));
            assert_eq!(r.status, 403, "{method} {path} must refuse non-admins: {}", r.text());
        }
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} routes walked");
}

#[test]
fn malformed_bodies_get_clear_json_errors() {
    let srv = open_server(Backend::Sqlite);
    let send = |ct: &str, body: &[u8]| srv.request("POST", "/api/auth/login", &[("Content-Type", ct)], Some(body));
    let r = send("application/json", b"{\"email\": ");
    r.assert_error(400, "invalid_json");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("line 1"), "{}", r.text());
    let r = send("application/json", br#"{"email": "a@b.c"}"#);
    r.assert_error(400, "invalid_json");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("password"), "names the missing field");
    send("application/json", br#"{"email": 5, "password": "x"}"#).assert_error(400, "invalid_json");
    send("text/plain", br#"{"email": "a@b.c", "password": "x"}"#).assert_error(415, "unsupported_media_type");
    let big = format!(r#"{{"email": "a@b.c", "password": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    send("application/json", big.as_bytes()).assert_error(413, "payload_too_large");
    // None of that created anything or counted as a sign-in attempt.
    assert_eq!(srv.db.sql("SELECT count(*) FROM login_throttle"), "0");
}

both_backends!(admin_log_filters_pagination_export_and_verify, |b: Backend| {
    let srv = open_server(b);
    let admin = admin_token(&srv);
    user_token(&srv, "nina@example.org");
    for _ in 0..3 {
        login(&srv, "nina@example.org", "not the password at all");
    }
    let failures = get(&srv, "/api/admin/logs?action=auth.login&outcome=failure", &admin).json();
    let entries = failures["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 3, "{failures}");
    for e in entries {
        assert_eq!(e["outcome"], "failure");
        assert_eq!(e["ip"], "127.0.0.1");
        assert_eq!(e["details"]["reason"], "wrong_password");
        assert!(e["at"].as_str().unwrap().ends_with('Z'));
    }
    // Cursor pagination covers every entry exactly once, newest first.
    let all =
        get(&srv, "/api/admin/logs?action=auth.login&limit=200", &admin).json()["entries"].as_array().unwrap().len();
    let mut seen = Vec::new();
    let mut url = "/api/admin/logs?action=auth.login&limit=2".to_string();
    loop {
        let page = get(&srv, &url, &admin).json();
        seen.extend(page["entries"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => url = format!("/api/admin/logs?action=auth.login&limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), all);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(seen, sorted, "newest first");
    // Time filters.
    let future = get(&srv, "/api/admin/logs?since=2999-01-01T00:00:00Z", &admin).json();
    assert_eq!(future["entries"].as_array().unwrap().len(), 0);
    let past = get(&srv, "/api/admin/logs?until=2000-01-01T00:00:00Z", &admin).json();
    assert_eq!(past["entries"].as_array().unwrap().len(), 0);
    // Bad filters are 400s naming the field.
    get(&srv, "/api/admin/logs?since=yesterday", &admin).assert_error(400, "invalid_input");
    get(&srv, "/api/admin/logs?limit=500", &admin).assert_error(400, "invalid_input");
    get(&srv, "/api/admin/logs?outcome=maybe", &admin).assert_error(400, "invalid_input");
    get(&srv, "/api/admin/logs?cursor=bogus", &admin).assert_error(400, "invalid_input");
    get(&srv, "/api/admin/logs?format=xml", &admin).assert_error(400, "invalid_input");
    // Exports.
    let csv = get(&srv, "/api/admin/logs?action=auth.login&outcome=failure&format=csv", &admin);
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(csv.header("content-disposition").unwrap().contains("attachment"));
    let text = csv.text();
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("id,at,actor_id,action"));
    assert_eq!(text.lines().count(), 4, "{text}");
    let jsonl = get(&srv, "/api/admin/logs?format=jsonl", &admin).text();
    let parsed: Vec<serde_json::Value> =
        jsonl.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
    assert!(parsed.len() > 10, "{}", parsed.len());
    assert!(parsed.iter().all(|e| e["id"].is_string() && e["action"].is_string()));
    // The chain verifies over HTTP too.
    let v = get(&srv, "/api/audit/verify", &admin).json();
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["checked"].as_u64().unwrap() > 10);
    // And an admin's own password is still what they signed in with.
    assert_eq!(login(&srv, "root@example.org", PASSWORD).status, 200);
});
