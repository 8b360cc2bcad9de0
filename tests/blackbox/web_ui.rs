//! The end-user web UI: its browser session over plain HTTP (cookie attributes, CSRF on the
//! API, the WebSocket's origin check, sign-out), the API calls added for it, and two users
//! working together in real headless Chromiums (Debian `chromium` + `chromium-driver`,
//! installed by `./tests/run`). Screenshots of every screen go to
//! `<target>/test-artifacts/web-ui/` (or `$SECCOLLAB_TEST_ARTIFACTS/web-ui`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::auth::{get, login, open_server, post, register, totp, PASSWORD};
use crate::both_backends;
use crate::harness::{Backend, Server};
use crate::webdriver::{artifacts_dir, Browser, Driver};

/// A cookie-keeping HTTP client that does not follow redirects: a browser without JavaScript.
struct Client {
    agent: ureq::Agent,
    cookies: HashMap<String, String>,
    /// Every `Set-Cookie` header seen, as sent.
    set_cookies: Vec<String>,
}

struct Page {
    status: u16,
    location: Option<String>,
    body: String,
}

impl Client {
    fn new() -> Self {
        Self { agent: ureq::AgentBuilder::new().redirects(0).build(), cookies: HashMap::new(), set_cookies: Vec::new() }
    }

    fn send(&mut self, srv: &Server, method: &str, path: &str, headers: &[(&str, &str)], body: Option<Body>) -> Page {
        let mut req = self.agent.request(method, &srv.url(path)).timeout(Duration::from_secs(60));
        if !self.cookies.is_empty() {
            let c = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ");
            req = req.set("Cookie", &c);
        }
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let res = match body {
            Some(Body::Form(f)) => req.send_form(&f),
            Some(Body::Json(j)) => req.send_json(j),
            None => req.call(),
        };
        let r = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        for c in r.all("set-cookie") {
            self.set_cookies.push(c.to_string());
            let pair = c.split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty()
                    || c.contains("Max-Age=0")
                    || c.to_ascii_lowercase().contains("expires=thu, 01 jan 1970")
                {
                    self.cookies.remove(k.trim());
                } else {
                    self.cookies.insert(k.trim().to_string(), v.to_string());
                }
            }
        }
        Page {
            status: r.status(),
            location: r.header("location").map(str::to_string),
            body: r.into_string().unwrap_or_default(),
        }
    }

    fn get(&mut self, srv: &Server, path: &str) -> Page {
        self.send(srv, "GET", path, &[], None)
    }
}

enum Body<'a> {
    Form(Vec<(&'a str, &'a str)>),
    Json(Value),
}

/// The value of `<input name=NAME value=...>` or `<meta name=NAME content=...>` in a page.
fn field(html: &str, name: &str) -> String {
    for (marker, attr) in [(format!("name=\"{name}\" value=\""), ""), (format!("name=\"{name}\" content=\""), "")] {
        let _ = attr;
        if let Some(rest) = html.split(&marker).nth(1) {
            return rest.split('"').next().unwrap().to_string();
        }
    }
    panic!("no field {name} in {html}");
}

/// Signs in through the web form; answers the client with its session cookie.
fn web_sign_in(srv: &Server, email: &str) -> Client {
    let mut c = Client::new();
    let page = c.get(srv, "/login");
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = field(&page.body, "csrf");
    let r = c.send(
        srv,
        "POST",
        "/login",
        &[],
        Some(Body::Form(vec![("csrf", &csrf), ("email", email), ("password", PASSWORD)])),
    );
    assert_eq!((r.status, r.location.as_deref()), (303, Some("/files")), "{}", r.body);
    assert!(c.cookies.contains_key("seccollab_session"), "{:?}", c.set_cookies);
    c
}

both_backends!(the_web_session_drives_the_api_with_csrf_and_ends_at_sign_out, |b: Backend| {
    let srv = open_server(b);
    let alice = register(&srv, "alice@example.org");
    let bob = register(&srv, "bob@example.org");
    let bob_id = bob["id"].as_str().unwrap();

    // Signed out: pages send to the sign-in form; the API says 401 in its JSON shape.
    let mut anon = Client::new();
    assert_eq!(anon.get(&srv, "/files").location.as_deref(), Some("/login?next=%2Ffiles"));
    assert_eq!(anon.get(&srv, "/").location.as_deref(), Some("/login"));

    // A wrong password: the form again with the API's message, no session.
    let page = anon.get(&srv, "/login");
    let csrf = field(&page.body, "csrf");
    let r = anon.send(
        &srv,
        "POST",
        "/login",
        &[],
        Some(Body::Form(vec![("csrf", &csrf), ("email", "alice@example.org"), ("password", "wrong wrong wrong")])),
    );
    assert_eq!(r.status, 401);
    assert!(r.body.contains("the email or password is wrong"), "{}", r.body);
    assert!(!anon.cookies.contains_key("seccollab_session"));
    // A sign-in form posted without the double-submit token changes nothing.
    let mut other = Client::new();
    let r = other.send(
        &srv,
        "POST",
        "/login",
        &[],
        Some(Body::Form(vec![("csrf", &csrf), ("email", "alice@example.org"), ("password", PASSWORD)])),
    );
    assert_eq!(r.status, 403);
    assert!(!other.cookies.contains_key("seccollab_session"));

    // A deep link while signed out comes back after the sign-in; a foreign target never does.
    let mut deep = Client::new();
    let to = deep.get(&srv, "/meetings/some-id").location.unwrap();
    assert_eq!(to, "/login?next=%2Fmeetings%2Fsome-id");
    let page = deep.get(&srv, &to);
    assert!(page.body.contains("name=\"next\" value=\"/meetings/some-id\""), "{}", page.body);
    let csrf = field(&page.body, "csrf");
    let r = deep.send(
        &srv,
        "POST",
        "/login",
        &[],
        Some(Body::Form(vec![
            ("csrf", &csrf),
            ("next", "/meetings/some-id"),
            ("email", "alice@example.org"),
            ("password", PASSWORD),
        ])),
    );
    assert_eq!((r.status, r.location.as_deref()), (303, Some("/meetings/some-id")));
    for evil in ["//evil.example/x", "https://evil.example/", "/\\evil.example", "/api/auth/logout"] {
        let mut e = Client::new();
        let page = e.get(&srv, "/login");
        let csrf = field(&page.body, "csrf");
        let r = e.send(
            &srv,
            "POST",
            "/login",
            &[],
            Some(Body::Form(vec![
                ("csrf", &csrf),
                ("next", evil),
                ("email", "alice@example.org"),
                ("password", PASSWORD),
            ])),
        );
        assert_eq!((r.status, r.location.as_deref()), (303, Some("/files")), "{evil}");
    }

    let mut c = web_sign_in(&srv, "alice@example.org");
    let cookie = c.set_cookies.iter().find(|s| s.starts_with("seccollab_session=")).unwrap().clone();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attr), "{cookie} lacks {attr}");
    }
    assert!(!cookie.contains("Max-Age"), "a browser-session cookie: {cookie}");

    // The page carries the CSRF token for the scripts and names the user; no token in it.
    let page = c.get(&srv, "/files");
    assert_eq!(page.status, 200);
    let token = field(&page.body, "csrf-token");
    assert_eq!(field(&page.body, "user-id"), alice["id"].as_str().unwrap());
    assert!(!page.body.contains(c.cookies["seccollab_session"].as_str()), "the cookie secret never appears in a page");

    // Reads work with the cookie alone.
    let me = c.get(&srv, "/api/auth/me");
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(serde_json::from_str::<Value>(&me.body).unwrap()["user"]["email"], "alice@example.org");

    // A state-changing call without the CSRF header, or with a wrong one: 403, nothing sent.
    let msg = json!({"receiver_id": bob_id, "content": "hello", "type": "text"});
    for headers in [vec![], vec![("X-CSRF-Token", "0".repeat(token.len()))]] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let r = c.send(&srv, "POST", "/api/messages/send", &h, Some(Body::Json(msg.clone())));
        assert_eq!(r.status, 403, "{}", r.body);
        assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap()["error"]["code"], "csrf_failed");
    }
    assert_eq!(srv.db.sql("SELECT count(*) FROM messages"), "0");
    let r = c.send(&srv, "POST", "/api/messages/send", &[("X-CSRF-Token", &token)], Some(Body::Json(msg.clone())));
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(srv.db.sql("SELECT count(*) FROM messages"), "1");

    // The WebSocket accepts the cookie from this site only.
    let ws_url = srv.base.replacen("http", "ws", 1) + "/ws";
    let cookie_header = format!("seccollab_session={}", c.cookies["seccollab_session"]);
    let host = srv.base.trim_start_matches("http://").to_string();
    let attempt = |origin: &str| {
        let mut req = tungstenite::client::IntoClientRequest::into_client_request(ws_url.as_str()).unwrap();
        req.headers_mut().insert("Cookie", cookie_header.parse().unwrap());
        req.headers_mut().insert("Origin", origin.parse().unwrap());
        match tungstenite::connect(req) {
            Ok((mut s, resp)) => {
                let _ = s.close(None);
                resp.status().as_u16()
            }
            Err(tungstenite::Error::Http(r)) => r.status().as_u16(),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(attempt("https://evil.example"), 403);
    assert_eq!(attempt(&format!("http://{host}")), 101);

    // The session is listed as a web session and marked current.
    let list: Value = serde_json::from_str(&c.get(&srv, "/api/auth/sessions").body).unwrap();
    let mine =
        list["sessions"].as_array().unwrap().iter().find(|s| s["current"] == true).expect("current session").clone();
    assert_eq!(mine["kind"], "web", "{list}");

    // Sign-out (a form with the token) ends the session at once: the old cookie is refused.
    let old = c.cookies["seccollab_session"].clone();
    let r = c.send(&srv, "POST", "/logout", &[], Some(Body::Form(vec![("csrf", &token)])));
    assert_eq!((r.status, r.location.as_deref()), (303, Some("/login")));
    let mut replay = Client::new();
    replay.cookies.insert("seccollab_session".into(), old);
    let r = replay.get(&srv, "/api/auth/me");
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap()["error"]["code"], "session_expired");
    assert_eq!(replay.get(&srv, "/files").location.as_deref(), Some("/login?next=%2Ffiles"));
    assert!(
        srv.db
            .sql("SELECT count(*) FROM audit_log WHERE action = 'auth.login' AND details LIKE '%\"web\"%'")
            .parse::<i64>()
            .unwrap()
            >= 1
    );
});

#[test]
fn registration_page_follows_the_policy() {
    let srv = open_server(Backend::Sqlite);
    let mut c = Client::new();
    let page = c.get(&srv, "/register");
    assert_eq!(page.status, 200);
    let csrf = field(&page.body, "csrf");
    let form = |pw2: &'static str| {
        vec![
            ("csrf", csrf.as_str()),
            ("email", "new@example.org"),
            ("display_name", "New <b>One</b>"),
            ("password", PASSWORD),
            ("password_again", pw2),
        ]
    };
    let r = c.send(&srv, "POST", "/register", &[], Some(Body::Form(form("something else entirely"))));
    assert_eq!(r.status, 400);
    assert!(r.body.contains("The two passwords differ."));
    assert!(!r.body.contains("<b>One</b>"), "the name is escaped: {}", r.body);
    assert!(
        r.body.contains("New &#60;b&#62;One&#60;/b&#62;") || r.body.contains("New &lt;b&gt;One&lt;/b&gt;"),
        "the name is kept: {}",
        r.body
    );
    assert_eq!(srv.db.sql("SELECT count(*) FROM users WHERE email = 'new@example.org'"), "0");
    let r = c.send(&srv, "POST", "/register", &[], Some(Body::Form(form(PASSWORD))));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Your account is ready"));
    assert_eq!(login(&srv, "new@example.org", PASSWORD).status, 200);

    // Invite-only: the page asks for the code, and a wrong one is refused.
    let srv =
        Server::start_with(crate::harness::TestDb::new(Backend::Sqlite), &[("SECCOLLAB_AUTH__REGISTRATION", "invite")]);
    let mut c = Client::new();
    let page = c.get(&srv, "/register?invite=abc");
    assert!(page.body.contains("name=\"invite_code\" required value=\"abc\""), "{}", page.body);
    let csrf = field(&page.body, "csrf");
    let r = c.send(
        &srv,
        "POST",
        "/register",
        &[],
        Some(Body::Form(vec![
            ("csrf", &csrf),
            ("email", "x@example.org"),
            ("display_name", "X"),
            ("password", PASSWORD),
            ("password_again", PASSWORD),
            ("invite_code", "abc"),
        ])),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(srv.db.sql("SELECT count(*) FROM users"), "0");
}

both_backends!(conversations_list_unread_counts_and_read_marks, |b: Backend| {
    let srv = open_server(b);
    let a = crate::auth::user_token(&srv, "ann@example.org");
    let bt = crate::auth::user_token(&srv, "ben@example.org");
    let ct = crate::auth::user_token(&srv, "cat@example.org");
    let (a_tok, b_tok, c_tok) =
        (a["token"].as_str().unwrap(), bt["token"].as_str().unwrap(), ct["token"].as_str().unwrap());
    let (a_id, b_id, c_id) =
        (a["user"]["id"].as_str().unwrap(), bt["user"]["id"].as_str().unwrap(), ct["user"]["id"].as_str().unwrap());
    for i in 0..3 {
        assert_eq!(
            post(&srv, "/api/messages/send", Some(b_tok), json!({"receiver_id": a_id, "content": format!("b{i}")}))
                .status,
            201
        );
    }
    assert_eq!(
        post(&srv, "/api/messages/send", Some(a_tok), json!({"receiver_id": c_id, "content": "to cat"})).status,
        201
    );
    assert_eq!(
        post(&srv, "/api/messages/send", Some(c_tok), json!({"receiver_id": a_id, "content": "from cat"})).status,
        201
    );

    let list = get(&srv, "/api/messages/conversations", a_tok).json();
    let convs = list["conversations"].as_array().unwrap();
    assert_eq!(convs.len(), 2, "{list}");
    // Newest first: cat wrote last.
    assert_eq!(convs[0]["user"]["id"], c_id);
    assert_eq!(convs[0]["last_message"]["content"], "from cat");
    assert_eq!(convs[0]["unread"], 1);
    assert_eq!(convs[1]["user"]["id"], b_id);
    assert_eq!(convs[1]["unread"], 3);
    assert_eq!(convs[1]["last_message"]["content"], "b2");
    assert_eq!(convs[1]["presence"], "offline");

    // Reading Ben's conversation clears its count only.
    let r = post(&srv, &format!("/api/messages/{b_id}/read"), Some(a_tok), json!({}));
    assert_eq!(r.status, 204, "{}", r.text());
    let list = get(&srv, "/api/messages/conversations", a_tok).json();
    let unread: Vec<i64> =
        list["conversations"].as_array().unwrap().iter().map(|c| c["unread"].as_i64().unwrap()).collect();
    assert_eq!(unread, vec![1, 0]);
    // A new message after the mark counts again.
    assert_eq!(
        post(&srv, "/api/messages/send", Some(b_tok), json!({"receiver_id": a_id, "content": "b3"})).status,
        201
    );
    let list = get(&srv, "/api/messages/conversations", a_tok).json();
    assert_eq!(list["conversations"][0]["user"]["id"], b_id);
    assert_eq!(list["conversations"][0]["unread"], 1);
    // Ben's own view: his messages are not unread for him.
    let list = get(&srv, "/api/messages/conversations", b_tok).json();
    assert_eq!(list["conversations"][0]["unread"], 0, "{list}");

    post(&srv, "/api/messages/nobody/read", Some(a_tok), json!({})).assert_error(404, "user_not_found");
    // A user's card by id, for naming senders; unknown ids are 404.
    let card = get(&srv, &format!("/api/auth/users/{b_id}"), c_tok).json();
    assert_eq!(card["user"]["email"], "ben@example.org");
    assert!(card["user"]["role"].is_null() && card["user"]["mfa_enabled"].is_null(), "only the public card: {card}");
    get(&srv, "/api/auth/users/nobody", c_tok).assert_error(404, "user_not_found");
});

both_backends!(conversations_survive_the_upgrade_that_drops_messages_sent, |b: Backend| {
    // Messages written before the `message_peers` migration (2026-11-29): after the upgrade the
    // conversation list, each conversation and new messages work as before.
    let mut srv = open_server(b);
    let a = crate::auth::user_token(&srv, "ann@example.org");
    let bt = crate::auth::user_token(&srv, "ben@example.org");
    let ct = crate::auth::user_token(&srv, "cat@example.org");
    let (a_tok, b_tok) = (a["token"].as_str().unwrap().to_string(), bt["token"].as_str().unwrap().to_string());
    let (a_id, b_id, c_id) =
        (a["user"]["id"].as_str().unwrap(), bt["user"]["id"].as_str().unwrap(), ct["user"]["id"].as_str().unwrap());
    let send = |srv: &Server, tok: &str, to: &str, text: &str| {
        let r = post(srv, "/api/messages/send", Some(tok), json!({"receiver_id": to, "content": text}));
        assert_eq!(r.status, 201, "{}", r.text());
    };
    send(&srv, &b_tok, a_id, "from ben");
    send(&srv, &a_tok, c_id, "to cat");
    srv.stop();
    // Back to the schema before the migration, as an installation of the previous version has it.
    srv.db.sql(
        "DROP INDEX messages_file; DROP INDEX messages_received; \
         CREATE INDEX messages_sent ON messages (sender_id, receiver_id, id); \
         CREATE INDEX messages_received ON messages (receiver_id, sender_id, id); \
         CREATE INDEX messages_file ON messages (file_id, id); DROP TABLE message_peers; \
         DELETE FROM __diesel_schema_migrations WHERE version LIKE '20261129000015%';",
    );
    srv.start_again(); // `serve` applies the migration
    assert_eq!(srv.db.sql("SELECT count(*) FROM message_peers"), "4", "both directions of both pairs");
    // The schema the migration promises: no messages_sent, the two remaining indexes partial.
    let (count_sent, received_def, file_def) = match b {
        Backend::Sqlite => (
            "SELECT count(*) FROM sqlite_master WHERE name = 'messages_sent'",
            "SELECT sql FROM sqlite_master WHERE name = 'messages_received'",
            "SELECT sql FROM sqlite_master WHERE name = 'messages_file'",
        ),
        Backend::Postgres => (
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'messages_sent'",
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'messages_received'",
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'messages_file'",
        ),
    };
    assert_eq!(srv.db.sql(count_sent), "0");
    let received = srv.db.sql(received_def).replace(['(', ')'], "");
    assert!(received.contains("WHERE receiver_id IS NOT NULL"), "{received}");
    let file = srv.db.sql(file_def).replace(['(', ')'], "");
    assert!(file.contains("WHERE file_id IS NOT NULL"), "{file}");
    let list = get(&srv, "/api/messages/conversations", &a_tok).json();
    let peers: Vec<&str> =
        list["conversations"].as_array().unwrap().iter().map(|c| c["user"]["id"].as_str().unwrap()).collect();
    assert_eq!(peers, vec![c_id, b_id], "newest first: {list}");
    assert_eq!(list["conversations"][1]["unread"], 1);
    // Both directions of a conversation are found through the one remaining index.
    send(&srv, &a_tok, b_id, "reply to ben");
    let conv = get(&srv, &format!("/api/messages/{b_id}"), &a_tok).json();
    let texts: Vec<&str> =
        conv["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap()).collect();
    assert_eq!(texts, vec!["from ben", "reply to ben"], "{conv}");
    let list = get(&srv, "/api/messages/conversations", &b_tok).json();
    assert_eq!(list["conversations"][0]["last_message"]["content"], "reply to ben", "{list}");
    assert_eq!(srv.db.sql("SELECT count(*) FROM message_peers"), "4", "a known pair adds no row");
});

both_backends!(own_sessions_and_file_shares_for_the_owner, |b: Backend| {
    let srv = open_server(b);
    register(&srv, "owner@example.org");
    let t1 = login(&srv, "owner@example.org", PASSWORD).json();
    let t2 = login(&srv, "owner@example.org", PASSWORD).json();
    let (tok1, tok2) = (t1["token"].as_str().unwrap(), t2["token"].as_str().unwrap());
    let list = get(&srv, "/api/auth/sessions", tok1).json();
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{list}");
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    assert!(sessions.iter().all(|s| s["kind"] == "api"));
    let other = sessions.iter().find(|s| s["current"] == false).unwrap()["id"].as_str().unwrap().to_string();
    // Someone else cannot end it.
    let mallory = crate::auth::user_token(&srv, "mallory@example.org");
    let r = srv.request(
        "DELETE",
        &format!("/api/auth/sessions/{other}"),
        &[("Authorization", &format!("Bearer {}", mallory["token"].as_str().unwrap()))],
        None,
    );
    r.assert_error(404, "session_not_found");
    assert_eq!(get(&srv, "/api/auth/me", tok2).status, 200);
    let r = srv.request(
        "DELETE",
        &format!("/api/auth/sessions/{other}"),
        &[("Authorization", &format!("Bearer {tok1}"))],
        None,
    );
    assert_eq!(r.status, 204);
    get(&srv, "/api/auth/me", tok2).assert_error(401, "invalid_token");
    assert_eq!(get(&srv, "/api/auth/me", tok1).status, 200);

    // Who a file is shared with: the owner sees names and permissions; others do not.
    let friend = crate::auth::user_token(&srv, "friend@example.org");
    let fid = crate::files::upload(&srv, tok1, "notes.txt", b"shared notes")["file_id"].as_str().unwrap().to_string();
    let fr_id = friend["user"]["id"].as_str().unwrap();
    let r =
        post(&srv, "/api/files/share", Some(tok1), json!({"file_id": fid, "user_ids": [fr_id], "permissions": "view"}));
    assert_eq!(r.status, 200, "{}", r.text());
    let shares = get(&srv, &format!("/api/files/{fid}/shares"), tok1).json();
    assert_eq!(shares["shares"][0]["email"], "friend@example.org", "{shares}");
    assert_eq!(shares["shares"][0]["permissions"], "view");
    get(&srv, &format!("/api/files/{fid}/shares"), friend["token"].as_str().unwrap()).assert_error(403, "forbidden");
    get(&srv, &format!("/api/files/{fid}/shares"), mallory["token"].as_str().unwrap())
        .assert_error(404, "file_not_found");
});

// ---------- in Chromium ----------

fn sign_in(b: &Browser<'_>, base: &str, email: &str) {
    b.goto(&format!("{base}/login"));
    b.type_into("#email", email);
    b.type_into("#password", PASSWORD);
    b.click("#sign-in");
    b.wait_until("signed in", "location.pathname === '/files'");
    b.wait_until("connected", "document.documentElement.dataset.live === 'connected'");
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

/// How many `#messages li[data-id]` the page shows, and their texts in order.
fn shown_messages(b: &Browser<'_>) -> Vec<String> {
    let v = b.js(
        "return [...document.querySelectorAll('#messages li[data-id] .content')].map(e => e.textContent);",
        json!([]),
    );
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
}

#[test]
fn two_users_share_chat_and_meet_in_chromium() {
    let mut srv = open_server(Backend::Sqlite);
    let base = srv.base.clone();
    // Hostile names and texts must render as text: no dialog may ever open.
    let hostile = "<img src=x onerror=alert(1)>";
    let r = post(
        &srv,
        "/api/auth/register",
        None,
        json!({"email": "alice@example.org", "password": PASSWORD, "display_name": "Alice"}),
    );
    assert_eq!(r.status, 201);
    let r = post(
        &srv,
        "/api/auth/register",
        None,
        json!({"email": "bob@example.org", "password": PASSWORD, "display_name": format!("Bob {hostile}")}),
    );
    assert_eq!(r.status, 201);
    let bob_id = r.json()["user"]["id"].as_str().unwrap().to_string();
    let alice_api = login(&srv, "alice@example.org", PASSWORD).json();
    let alice_id = alice_api["user"]["id"].as_str().unwrap().to_string();
    let alice_tok = alice_api["token"].as_str().unwrap().to_string();

    let driver = Driver::start();
    let dir = artifacts_dir("web-ui");
    let mut a = Browser::open_named(&driver, dir.clone(), "alice");
    let mut bb = Browser::open_named(&driver, dir.clone(), "bob");

    a.goto(&format!("{base}/files"));
    a.wait_until("sent to sign-in", "location.pathname === '/login'");
    a.screenshot("sign-in");
    sign_in(&a, &base, "alice@example.org");
    sign_in(&bb, &base, "bob@example.org");

    // Alice uploads a file (hostile name) through the file input; the bar reaches 100 %.
    let content: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let file_name = "<script>alert(2)</script>report.bin";
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("report.bin");
    std::fs::write(&path, &content).unwrap();
    a.keys("#file-input", &path.display().to_string());
    a.wait_until("upload finished", "document.querySelector('#uploads li.done')");
    assert_eq!(a.js("return document.querySelector('#uploads li progress').value;", json!([])), json!(100));
    assert_eq!(a.text("#uploads li .pct"), "100%");
    a.screenshot("upload-done");
    let files = get(&srv, "/api/files", &alice_tok).json();
    let fid = files["files"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(files["files"][0]["name"], "report.bin", "the browser sends the file's own name");
    // The scan verdict arrives live: the badge turns to Clean without a reload.
    a.wait_until(
        "scanned clean",
        &format!("document.querySelector('#my-files tr[data-file-id=\"{fid}\"] .badge.scan')?.textContent === 'Clean'"),
    );

    // Rename the file's display name to the hostile one directly is not possible through the
    // API; the hostile text goes into the discussion and the chat instead (below).
    let _ = file_name;

    // Bob has the files page open; Alice shares with him through the dialog.
    bb.goto(&format!("{base}/files"));
    bb.wait_until("connected", "document.documentElement.dataset.live === 'connected'");
    a.click(&format!("#my-files tr[data-file-id=\"{fid}\"] button.share"));
    a.wait_css("#share-dialog[open]");
    a.keys("#share-dialog input[type=search]", "bob@");
    a.wait_css(&format!("#share-dialog button.pick[data-user-id=\"{bob_id}\"]"));
    a.click(&format!("#share-dialog button.pick[data-user-id=\"{bob_id}\"]"));
    a.click("#share-submit");
    a.wait_css(&format!("#share-current li[data-user-id=\"{bob_id}\"]"));
    assert!(a.text("#share-current").contains(hostile), "the name shows literally");
    a.assert_no_dialog("share dialog");
    a.screenshot("share-dialog");
    a.click("#share-dialog .row button:not(#share-submit)");

    // Bob sees it appear live and downloads identical bytes through the link.
    bb.wait_css(&format!("#shared-files tr[data-file-id=\"{fid}\"] a.download"));
    bb.screenshot("shared-with-me");
    let digest = bb.js_async(
        &format!(
            "const done = arguments[arguments.length - 1];
             const a = document.querySelector('#shared-files tr[data-file-id=\"{fid}\"] a.download');
             fetch(a.href).then(r => r.arrayBuffer()).then(b => crypto.subtle.digest('SHA-256', b))
               .then(d => done([...new Uint8Array(d)].map(x => x.toString(16).padStart(2, '0')).join('')))
               .catch(e => done('failed: ' + e));"
        ),
        json!([]),
    );
    assert_eq!(digest.as_str().unwrap(), sha256_hex(&content));

    // The file's discussion: Bob writes, Alice (panel open) sees it live, as text.
    a.click(&format!("#my-files tr[data-file-id=\"{fid}\"] button.discuss"));
    a.wait_css("#discussion-input");
    bb.click(&format!("#shared-files tr[data-file-id=\"{fid}\"] button.discuss"));
    bb.wait_css("#discussion-input");
    let note = "<script>alert(3)</script> looks good";
    bb.type_into("#discussion-input", note);
    bb.click("#discussion-send");
    a.wait_until(
        "discussion message live",
        &format!(
            "[...document.querySelectorAll('#discussion-messages li p')].some(p => p.textContent === {})",
            json!(note)
        ),
    );
    a.wait_until(
        "sender named",
        "[...document.querySelectorAll('#discussion-messages .sender')].some(s => s.textContent.startsWith('Bob'))",
    );
    a.assert_no_dialog("discussion");
    a.screenshot("discussion");

    // Chat: both open their conversation; Bob sees Alice typing, then her message live.
    a.goto(&format!("{base}/chat?with={bob_id}"));
    bb.goto(&format!("{base}/chat?with={alice_id}"));
    for b in [&a, &bb] {
        b.wait_until("connected", "document.documentElement.dataset.live === 'connected'");
        b.wait_until("conversation open", "!document.querySelector('#message-input').disabled");
    }
    a.keys("#message-input", "Hi Bob, <b>here</b>");
    bb.wait_until("typing shown", "document.querySelector('#typing').textContent.includes('Alice is typing')");
    bb.screenshot("typing");
    a.click("#send");
    bb.wait_until(
        "message live",
        "[...document.querySelectorAll('#messages .content')].some(e => e.textContent === 'Hi Bob, <b>here</b>')",
    );
    bb.wait_until("typing cleared", "document.querySelector('#typing').textContent === ''");
    assert_eq!(shown_messages(&bb), vec!["Hi Bob, <b>here</b>"]);
    bb.assert_no_dialog("chat");
    bb.screenshot("chat");
    // Alice sees Bob online (presence dot), Bob's unread count in her list stays 0 (he read).
    a.wait_css(&format!("#conversations li[data-user-id=\"{bob_id}\"] .presence.online"));

    // The network drops (the server stops), messages are sent meanwhile by the API once it is
    // back, and Bob's page catches up: every message once, in order.
    srv.restart();
    bb.wait_until("reconnected", "document.documentElement.dataset.live === 'connected'");
    let sent: Vec<String> = (0..20).map(|i| format!("after restart {i:02}")).collect();
    // Some while Bob's page may still be reconnecting, some after.
    for m in &sent {
        let r = post(&srv, "/api/messages/send", Some(&alice_tok), json!({"receiver_id": bob_id, "content": m}));
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let mut want = vec!["Hi Bob, <b>here</b>".to_string()];
    want.extend(sent.iter().cloned());
    bb.wait_until(
        "all caught up",
        &format!("document.querySelectorAll('#messages li[data-id]').length >= {}", want.len()),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(shown_messages(&bb), want, "no message lost or doubled");
    bb.screenshot("after-restart");

    // And a drop with the server down while messages are stored: stop, store, start.
    srv.stop();
    bb.wait_until("offline banner", "!document.getElementById('offline').hidden");
    bb.screenshot("offline");
    // (The server is down: nothing can be sent. Start it again and send right away.)
    srv.start_again();
    assert_eq!(srv.base, base, "the same address");
    for i in 0..5 {
        let r = post(
            &srv,
            "/api/messages/send",
            Some(&alice_tok),
            json!({"receiver_id": bob_id, "content": format!("back {i}")}),
        );
        assert_eq!(r.status, 201);
        want.push(format!("back {i}"));
    }
    bb.wait_until("banner gone", "document.getElementById('offline').hidden");
    bb.wait_until(
        "caught up again",
        &format!("document.querySelectorAll('#messages li[data-id]').length >= {}", want.len()),
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(shown_messages(&bb), want, "no message lost or doubled");

    // Meetings: Alice invites Bob; Bob's open page shows it live, he accepts, Alice sees it live.
    a.goto(&format!("{base}/meetings"));
    bb.goto(&format!("{base}/meetings"));
    for b in [&a, &bb] {
        b.wait_until("connected", "document.documentElement.dataset.live === 'connected'");
    }
    a.type_into("#meeting-title", "Plan <i>review</i>");
    a.js(
        "const t = new Date(Date.now() + 86400000); t.setMinutes(0, 0, 0);
         const local = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
         document.querySelector('#meeting-start').value = local(t);
         document.querySelector('#meeting-end').value = local(new Date(t.getTime() + 3600000));",
        json!([]),
    );
    a.keys("#meeting-form input[type=search]", "bob@");
    a.wait_css(&format!("#meeting-form button.pick[data-user-id=\"{bob_id}\"]"));
    a.click(&format!("#meeting-form button.pick[data-user-id=\"{bob_id}\"]"));
    a.click("#meeting-create");
    a.wait_css("#upcoming li.meeting");
    let sid = a
        .js("return document.querySelector('#upcoming li.meeting').dataset.id;", json!([]))
        .as_str()
        .unwrap()
        .to_string();
    a.screenshot("meeting-created");
    bb.wait_css(&format!("#upcoming li[data-id=\"{sid}\"] button.accept"));
    assert!(bb.text(&format!("#upcoming li[data-id=\"{sid}\"] .title")).contains("Plan <i>review</i>"));
    bb.screenshot("invitation");
    bb.click(&format!("#upcoming li[data-id=\"{sid}\"] button.accept"));
    a.wait_css(&format!("#upcoming li[data-id=\"{sid}\"] li[data-user-id=\"{bob_id}\"][data-status=\"accepted\"]"));
    a.wait_until("bell counts the answer", "document.querySelector('#bell-count').textContent === '1'");
    a.screenshot("answer-live");
    let s = get(&srv, &format!("/api/schedules/{sid}"), &alice_tok).json();
    assert_eq!(s["schedule"]["participants"][0]["status"], "accepted", "{s}");
    // The week view shows it (in the next week when tomorrow is a Monday: "Next →" first); the
    // notifications panel lists the answer as text.
    let next_week = a
        .js(
            "const t = new Date(Date.now() + 86400000); t.setMinutes(0, 0, 0);
             const monday = (d) => { const x = new Date(d.getFullYear(), d.getMonth(), d.getDate());
                                     x.setDate(x.getDate() - ((x.getDay() + 6) % 7)); return x.getTime(); };
             return monday(t) !== monday(new Date());",
            json!([]),
        )
        .as_bool()
        .unwrap();
    if next_week {
        assert!(!a.text("#week").contains("Plan <i>review</i>"), "not in this week's view");
        a.js("[...document.querySelectorAll('button')].find((b) => b.textContent === 'Next →').click();", json!([]));
    }
    assert!(a.text("#week").contains("Plan <i>review</i>"));
    a.click("#bell");
    a.wait_css("#notification-list li.unread");
    a.screenshot("notifications");

    // Alice deletes the file (confirming the dialog): it leaves Bob's list live.
    a.goto(&format!("{base}/files"));
    bb.goto(&format!("{base}/files"));
    bb.wait_css(&format!("#shared-files tr[data-file-id=\"{fid}\"]"));
    bb.wait_until("connected", "document.documentElement.dataset.live === 'connected'");
    a.wait_css(&format!("#my-files tr[data-file-id=\"{fid}\"] button.delete"));
    a.click(&format!("#my-files tr[data-file-id=\"{fid}\"] button.delete"));
    a.accept_dialog();
    a.wait_until("gone for Alice", &format!("!document.querySelector('#my-files tr[data-file-id=\"{fid}\"]')"));
    bb.wait_until("gone for Bob", &format!("!document.querySelector('#shared-files tr[data-file-id=\"{fid}\"]')"));
    get(&srv, &format!("/api/files/{fid}"), &alice_tok).assert_error(404, "file_not_found");

    // Account page and a phone-width layout.
    bb.goto(&format!("{base}/account"));
    bb.wait_css("#sessions tr.current");
    bb.screenshot("account");
    bb.window(390, 844);
    bb.goto(&format!("{base}/chat?with={alice_id}"));
    bb.wait_until("conversation open", "!document.querySelector('#message-input').disabled");
    let overflow = bb.js("return document.documentElement.scrollWidth <= window.innerWidth + 1;", json!([]));
    assert_eq!(overflow, json!(true), "no sideways scrolling at phone width");
    bb.screenshot("chat-phone");
    for b in [&a, &bb] {
        b.assert_no_dialog("the end");
    }
}

#[test]
fn a_user_enrols_mfa_in_chromium_and_signs_in_with_oathtool_codes() {
    let srv = open_server(Backend::Sqlite);
    let base = srv.base.clone();
    register(&srv, "mia@example.org");
    let driver = Driver::start();
    let mut b = Browser::open_named(&driver, artifacts_dir("web-ui"), "mfa");
    sign_in(&b, &base, "mia@example.org");
    b.goto(&format!("{base}/account"));
    b.wait_css("#mfa-setup");
    b.click("#mfa-setup");
    b.wait_css("#mfa-secret");
    b.wait_until(
        "QR code drawn",
        "document.querySelector('#mfa-qr').complete && document.querySelector('#mfa-qr').naturalWidth > 0",
    );
    b.screenshot("mfa-qr");
    let secret = b.text("#mfa-secret");
    // A wrong code first: an error, MFA stays off.
    b.type_into("#mfa-code", "000000");
    b.click("#mfa-enable");
    b.wait_css("#mfa .error:not([hidden])");
    assert_eq!(srv.db.sql("SELECT mfa_enabled FROM users WHERE email = 'mia@example.org'"), "0");
    let enrolled_with = totp(&secret, "");
    b.type_into("#mfa-code", &enrolled_with);
    b.click("#mfa-enable");
    b.wait_css("#recovery-codes li");
    let codes = b.js("return document.querySelectorAll('#recovery-codes li').length;", json!([]));
    assert_eq!(codes, json!(10));
    b.screenshot("recovery-codes");

    // Sign out, then in again: password, then a fresh code from oathtool (the next time step:
    // the enrolment's code is spent).
    b.click("#sign-out");
    b.wait_until("signed out", "location.pathname === '/login'");
    b.type_into("#email", "mia@example.org");
    b.type_into("#password", PASSWORD);
    b.click("#sign-in");
    b.wait_css("#code");
    b.screenshot("mfa-step");
    b.type_into("#code", "123456");
    b.click("#verify");
    b.wait_css("#login-error");
    let used = enrolled_with;
    let deadline = Instant::now() + Duration::from_secs(40);
    let code = loop {
        let c = totp(&secret, "");
        if c != used {
            break c;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(500));
    };
    b.type_into("#code", &code);
    b.click("#verify");
    b.wait_until("signed in with MFA", "location.pathname === '/files'");
    b.assert_no_dialog("files");
}

both_backends!(a_session_held_by_force_mfa_is_confirmed_on_the_reverify_page, |b: Backend| {
    let srv = open_server(b);
    register(&srv, "held@example.org");
    let mut c = web_sign_in(&srv, "held@example.org");
    let files = c.get(&srv, "/files");
    assert_eq!(files.status, 200);
    let csrf = field(&files.body, "csrf-token");
    // What the force_mfa response does to the user's sessions (tests/blackbox/abuse.rs triggers
    // it through a real alert).
    srv.db.sql("UPDATE sessions SET reverify_required = TRUE");
    assert_eq!(c.get(&srv, "/files").location.as_deref(), Some("/login/reverify?next=%2Ffiles"));
    let api = c.send(&srv, "GET", "/api/files", &[], None);
    assert_eq!(api.status, 403, "{}", api.body);
    assert!(api.body.contains("mfa_reverify_required"), "{}", api.body);
    let page = c.get(&srv, "/login/reverify?next=%2Ffiles");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("name=\"password\""), "MFA is off: the password is asked for");
    let form_csrf = field(&page.body, "csrf");
    assert_eq!(form_csrf, csrf, "the session's own token");
    // A forged form (no token) changes nothing; a wrong password shows the error.
    let r = c.send(
        &srv,
        "POST",
        "/login/reverify",
        &[],
        Some(Body::Form(vec![("csrf", "x"), ("password", PASSWORD), ("next", "/files")])),
    );
    assert_eq!(r.status, 303);
    assert_eq!(c.get(&srv, "/files").status, 303, "still held");
    let r = c.send(
        &srv,
        "POST",
        "/login/reverify",
        &[],
        Some(Body::Form(vec![("csrf", &form_csrf), ("password", "not the password"), ("next", "/files")])),
    );
    assert_eq!(r.status, 403);
    assert!(r.body.contains("id=\"reverify-error\""), "{}", r.body);
    let r = c.send(
        &srv,
        "POST",
        "/login/reverify",
        &[],
        Some(Body::Form(vec![("csrf", &form_csrf), ("password", PASSWORD), ("next", "/files")])),
    );
    assert_eq!((r.status, r.location.as_deref()), (303, Some("/files")), "{}", r.body);
    assert_eq!(c.get(&srv, "/files").status, 200);
    assert_eq!(c.send(&srv, "GET", "/api/files", &[], None).status, 200);
    // Not held: the page sends on.
    assert_eq!(c.get(&srv, "/login/reverify?next=%2Fchat").location.as_deref(), Some("/chat"));
});
