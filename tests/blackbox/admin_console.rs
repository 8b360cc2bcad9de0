//! The admin console at `/admin` over HTTP, as a browser without JavaScript uses it: forms,
//! cookies, redirects. Sign-in with MFA enrolment (codes from `oathtool`), every page, CSRF,
//! escaping of hostile names, acts (unlock, alert acknowledgement), export, sign-out, timeouts.

use std::collections::HashMap;
use std::time::Duration;

use crate::auth::{login, register, totp, user_token, PASSWORD};
use crate::both_backends;
use crate::harness::{Backend, Server, TestDb};

/// A minimal browser: keeps cookies, does not follow redirects, sends forms.
pub(crate) struct Browser<'a> {
    srv: &'a Server,
    cookies: HashMap<String, String>,
}

pub(crate) struct Page {
    pub(crate) status: u16,
    pub(crate) location: Option<String>,
    set_cookies: Vec<String>,
    content_type: String,
    pub(crate) body: String,
}

impl<'a> Browser<'a> {
    fn new(srv: &'a Server) -> Self {
        Self { srv, cookies: HashMap::new() }
    }

    fn send(&mut self, method: &str, path: &str, form: Option<&[(&str, &str)]>) -> Page {
        let agent = ureq::AgentBuilder::new().redirects(0).timeout(Duration::from_secs(60)).build();
        let mut req = agent.request(method, &self.srv.url(path));
        if !self.cookies.is_empty() {
            let c: Vec<String> = self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.set("Cookie", &c.join("; "));
        }
        let res = match form {
            Some(f) => req.send_form(f),
            None => req.call(),
        };
        let r = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let set_cookies: Vec<String> = r.all("set-cookie").into_iter().map(str::to_string).collect();
        for sc in &set_cookies {
            let pair = sc.split(';').next().unwrap_or_default();
            if let Some((k, v)) = pair.split_once('=') {
                let expired = sc.to_ascii_lowercase().contains("max-age=0") || v.is_empty();
                if expired {
                    self.cookies.remove(k.trim());
                } else {
                    self.cookies.insert(k.trim().to_string(), v.trim().to_string());
                }
            }
        }
        Page {
            status: r.status(),
            location: r.header("location").map(str::to_string),
            set_cookies,
            content_type: r.header("content-type").unwrap_or_default().to_string(),
            body: r.into_string().unwrap_or_default(),
        }
    }

    /// The `Cookie` header this browser sends.
    pub(crate) fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    pub(crate) fn get(&mut self, path: &str) -> Page {
        self.send("GET", path, None)
    }

    pub(crate) fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        self.send("POST", path, Some(form))
    }
}

/// The value of the first `<input name="NAME" value="...">` (or of `<code id="NAME">`).
pub(crate) fn field(html: &str, name: &str) -> String {
    let key = format!("name=\"{name}\" value=\"");
    if let Some(i) = html.find(&key) {
        let rest = &html[i + key.len()..];
        return rest[..rest.find('"').unwrap()].to_string();
    }
    let key = format!("<code id=\"{name}\">");
    let i = html.find(&key).unwrap_or_else(|| panic!("no field {name} in {html}"));
    let rest = &html[i + key.len()..];
    rest[..rest.find('<').unwrap()].to_string()
}

const HOSTILE_NAME: &str = "<script>alert(1)</script>";

/// Signs the CLI-made admin `root@example.org` in for the first time: enrols MFA on the way.
/// Returns the browser and the TOTP secret.
pub(crate) fn first_sign_in<'a>(srv: &'a Server) -> (Browser<'a>, String) {
    let mut b = Browser::new(srv);
    let p = b.get("/admin");
    assert_eq!((p.status, p.location.as_deref()), (303, Some("/admin/login")), "signed out: to the sign-in page");
    let p = b.get("/admin/login");
    assert_eq!(p.status, 200);
    assert!(p.content_type.starts_with("text/html"), "{}", p.content_type);
    let csrf = field(&p.body, "csrf");
    // Without the double-submit token the form does nothing.
    let p = b.post("/admin/login", &[("csrf", "forged"), ("email", "root@example.org"), ("password", PASSWORD)]);
    assert_eq!(p.status, 403, "{}", p.body);
    assert!(!b.cookies.contains_key("seccollab_admin"));
    // A wrong password: the form again, with the reason.
    let p = b.post("/admin/login", &[("csrf", &csrf), ("email", "root@example.org"), ("password", "wrong password!!")]);
    assert_eq!(p.status, 401, "{}", p.body);
    assert!(p.body.contains("class=\"error\""), "{}", p.body);
    // The right one: an admin without MFA must enrol first.
    let p = b.post("/admin/login", &[("csrf", &csrf), ("email", "root@example.org"), ("password", PASSWORD)]);
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("Set up a second factor") && p.body.contains("<svg"), "{}", p.body);
    let secret = field(&p.body, "secret");
    let token = field(&p.body, "mfa_token");
    let p = b.post("/admin/enrol", &[("csrf", &csrf), ("mfa_token", &token), ("code", "000000")]);
    assert_eq!(p.status, 400, "a wrong code is refused");
    assert!(!b.cookies.contains_key("seccollab_admin"));
    let p = b.post("/admin/enrol", &[("csrf", &csrf), ("mfa_token", &token), ("code", &totp(&secret, ""))]);
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("recovery codes"), "{}", p.body);
    let cookie = p.set_cookies.iter().find(|c| c.starts_with("seccollab_admin=")).expect("session cookie set");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(cookie.contains(attr), "cookie lacks {attr}: {cookie}");
    }
    (b, secret)
}

both_backends!(an_admin_signs_in_with_mfa_and_uses_every_page, |bk: Backend| {
    let srv = Server::start_with(TestDb::new(bk), &[("SECCOLLAB_AUTH__REGISTRATION", "open")]);
    // An auditor admin on the API; root is enrolled through the console below.
    let api_admin = crate::auth::admin_token_for(&srv, "auditor@example.org");
    crate::auth::admin_password_only(&srv, "root@example.org");
    // A user with a hostile display name, and one who will be locked out.
    let r = crate::auth::post(
        &srv,
        "/api/auth/register",
        None,
        serde_json::json!({"email": "eve@example.org", "password": PASSWORD, "display_name": HOSTILE_NAME}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    register(&srv, "mallory@example.org");
    for _ in 0..5 {
        login(&srv, "mallory@example.org", "not the password at all");
    }
    login(&srv, "mallory@example.org", PASSWORD).assert_error(423, "account_locked");
    // A file with a hostile name and a malware alert.
    let eve = login(&srv, "eve@example.org", PASSWORD).json()["token"].as_str().unwrap().to_string();
    let id = crate::files::upload(&srv, &eve, "<img src=x onerror=alert(1)>.txt", crate::files::EICAR.as_bytes())
        ["file_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(crate::files::scanned(&srv, &eve, &id), "quarantined");

    let (mut b, _secret) = first_sign_in(&srv);

    // Dashboard: counts and server-drawn charts.
    let p = b.get("/admin");
    assert_eq!(p.status, 200, "{}", p.body);
    assert!(p.body.contains("Dashboard") && p.body.contains("<svg") && p.body.contains("open alerts"), "{}", p.body);
    assert!(p.body.contains("Sign-ins per hour"));
    assert_eq!(b.get("/admin?range=7d").status, 200);
    let csrf = field(&p.body, "csrf");

    // Users: hostile names are text, the locked user can be unlocked, but only with the token.
    let p = b.get("/admin/users");
    assert_eq!(p.status, 200);
    assert!(!p.body.contains(HOSTILE_NAME), "a display name was rendered as markup");
    assert!(p.body.contains("&#60;script&#62;alert(1)&#60;/script&#62;"), "{}", p.body);
    assert!(p.body.contains("locked ("), "mallory shows as locked: {}", p.body);
    let mallory = srv.db.sql("SELECT id FROM users WHERE email = 'mallory@example.org'");
    let p = b.post(&format!("/admin/users/{mallory}/unlock"), &[("csrf", "not-the-token")]);
    assert_eq!(p.status, 403, "a POST without the right CSRF token is refused");
    login(&srv, "mallory@example.org", PASSWORD).assert_error(423, "account_locked");
    let p = b.post(&format!("/admin/users/{mallory}/unlock"), &[("csrf", &csrf)]);
    assert_eq!((p.status, p.location.as_deref()), (303, Some("/admin/users?done=unlock")));
    assert_eq!(login(&srv, "mallory@example.org", PASSWORD).status, 200, "unlocked from the console");
    assert!(b.get("/admin/users?done=unlock").body.contains("The account is unlocked."));
    let p = b.get("/admin/users?q=mallory");
    assert!(p.body.contains("mallory@example.org") && !p.body.contains("eve@example.org"), "search filters");

    // Audit log: filters, the unlock entry, export, chain verification; hostile file name escaped.
    let p = b.get("/admin/audit?action=admin.user_unlock");
    assert_eq!(p.status, 200);
    assert_eq!(p.body.matches("<td>admin.user_unlock</td>").count(), 1, "{}", p.body);
    let p = b.get("/admin/audit");
    assert!(!p.body.contains("<img src=x onerror=alert(1)>"), "a file name was rendered as markup");
    let p = b.get("/admin/audit?outcome=nonsense");
    assert_eq!(p.status, 400, "a bad filter is explained");
    assert!(p.body.contains("outcome"));
    let p = b.get("/admin/audit/export?format=csv&action=admin.user_unlock");
    assert_eq!(p.status, 200);
    assert!(p.content_type.starts_with("text/csv"), "{}", p.content_type);
    assert_eq!(p.body.lines().filter(|l| l.contains("admin.user_unlock")).count(), 1, "{}", p.body);
    let p = b.get("/admin/audit?verify=1");
    assert!(p.body.contains("Hash chain verified"), "{}", p.body);

    // Alerts: the malware alert is listed and acknowledged.
    let p = b.get("/admin/alerts");
    assert!(p.body.contains("malware"), "{}", p.body);
    let aid = srv.db.sql("SELECT id FROM security_alerts WHERE acked_at IS NULL ORDER BY at LIMIT 1");
    let p = b.post(&format!("/admin/alerts/{aid}/ack"), &[("csrf", &csrf)]);
    assert_eq!(p.status, 303);
    assert!(!srv.db.sql(&format!("SELECT acked_by FROM security_alerts WHERE id = '{aid}'")).is_empty());
    assert!(!b.get("/admin/alerts").body.contains(&format!("/admin/alerts/{aid}/ack")));
    assert!(b.get("/admin/alerts?all=1").body.contains("acknowledged"));

    // Creating users and invitations: bad input is explained and changes nothing.
    let users_before = srv.db.sql("SELECT count(*) FROM users");
    let p = b.post(
        "/admin/users/create",
        &[
            ("csrf", &csrf),
            ("email", "weak@example.org"),
            ("display_name", "Weak"),
            ("password", "short"),
            ("role", "user"),
        ],
    );
    assert_eq!(p.status, 400, "{}", p.body);
    assert!(p.body.contains("password"), "{}", p.body);
    let p = b.post(
        "/admin/users/create",
        &[
            ("csrf", &csrf),
            ("email", "eve@example.org"),
            ("display_name", "Dup"),
            ("password", PASSWORD),
            ("role", "user"),
        ],
    );
    assert_eq!(p.status, 409, "an e-mail in use: {}", p.body);
    let p = b.post("/admin/users/invite", &[("csrf", &csrf), ("email", ""), ("hours", "0")]);
    assert_eq!(p.status, 400, "{}", p.body);
    assert_eq!(srv.db.sql("SELECT count(*) FROM users"), users_before);
    assert_eq!(srv.db.sql("SELECT count(*) FROM invites"), "0");
    let p = b.post(
        "/admin/users/create",
        &[
            ("csrf", "wrong"),
            ("email", "x@example.org"),
            ("display_name", "X"),
            ("password", PASSWORD),
            ("role", "admin"),
        ],
    );
    assert_eq!(p.status, 403, "no admin is made without the CSRF token");
    assert_eq!(srv.db.sql("SELECT count(*) FROM users"), users_before);

    // A user's page: sessions with revoke, activity.
    let msid = srv.db.sql(&format!(
        "SELECT id FROM sessions WHERE user_id = '{mallory}' AND revoked_at IS NULL ORDER BY created_at DESC LIMIT 1"
    ));
    let p = b.get(&format!("/admin/users/{mallory}"));
    assert_eq!(p.status, 200);
    assert!(p.body.contains(&format!("/admin/users/{mallory}/sessions/{msid}/revoke")), "{}", p.body);
    assert!(p.body.contains("auth.login"), "activity lists the sign-ins: {}", p.body);
    let p = b.post(&format!("/admin/users/{mallory}/sessions/{msid}/revoke"), &[("csrf", &csrf)]);
    assert_eq!(p.status, 303);
    assert_eq!(srv.db.sql(&format!("SELECT revoked_reason FROM sessions WHERE id = '{msid}'")), "admin");

    // Files needing attention: the quarantined file (name escaped, rule shown), then deleted.
    let p = b.get("/admin/files");
    assert_eq!(p.status, 200);
    assert!(!p.body.contains("<img src=x"), "a file name was rendered as markup");
    assert!(p.body.contains("&#60;img src=x onerror=alert(1)&#62;.txt"), "{}", p.body);
    assert!(p.body.contains(&format!("/admin/files/{id}/release")));
    let key = srv.db.sql(&format!("SELECT storage_key FROM files WHERE id = '{id}'"));
    assert!(srv.db.objects().keys().contains(&key));
    assert_eq!(b.post(&format!("/admin/files/{id}/delete"), &[("csrf", "nope")]).status, 403);
    assert_eq!(srv.db.sql(&format!("SELECT count(*) FROM files WHERE id = '{id}'")), "1");
    let p = b.post(&format!("/admin/files/{id}/delete"), &[("csrf", &csrf)]);
    assert_eq!((p.status, p.location.as_deref()), (303, Some("/admin/files?done=delete")));
    assert_eq!(srv.db.sql(&format!("SELECT count(*) FROM files WHERE id = '{id}'")), "0");
    assert!(!srv.db.objects().keys().contains(&key), "the stored object is removed");

    // System: rule files and reload (a broken rule is refused with its reason), outbox,
    // configuration with secrets redacted.
    let p = b.get("/admin/system");
    assert_eq!(p.status, 200);
    assert!(p.body.contains("seccollab_default.yar"), "{}", p.body);
    assert!(p.body.contains("[storage]") && p.body.contains("E-mail outbox"), "{}", p.body);
    let p = b.post("/admin/system/reload-rules", &[("csrf", &csrf)]);
    assert_eq!((p.status, p.location.as_deref()), (303, Some("/admin/system?done=reloaded")));

    // Plugins.
    let p = b.get("/admin/plugins");
    assert!(p.body.contains("yara-x") && p.body.contains("local"), "{}", p.body);

    // Every act was audited with the admin as actor.
    let root = srv.db.sql("SELECT id FROM users WHERE email = 'root@example.org'");
    let logs =
        crate::auth::get(&srv, &format!("/api/admin/logs?actor_id={root}&action=admin.console_login"), &api_admin)
            .json();
    assert_eq!(logs["entries"].as_array().unwrap().len(), 1, "{logs}");
    let logs =
        crate::auth::get(&srv, &format!("/api/admin/logs?actor_id={root}&action=admin.alert_ack"), &api_admin).json();
    assert_eq!(logs["entries"].as_array().unwrap().len(), 1, "{logs}");
    let logs =
        crate::auth::get(&srv, &format!("/api/admin/logs?actor_id={root}&action=admin.user_unlock"), &api_admin).json();
    assert_eq!(logs["entries"].as_array().unwrap().len(), 1, "{logs}");

    // Sign out: the cookie no longer opens anything.
    let old = b.cookies.clone();
    let p = b.post("/admin/logout", &[("csrf", &csrf)]);
    assert_eq!((p.status, p.location.as_deref()), (303, Some("/admin/login")));
    let mut replay = Browser::new(&srv);
    replay.cookies = old;
    assert_eq!(replay.get("/admin/users").status, 303, "a signed-out session is dead");
});

#[test]
fn mfa_sign_in_non_admins_and_timeouts() {
    let srv = Server::start_with(TestDb::new(Backend::Sqlite), &[("SECCOLLAB_AUTH__REGISTRATION", "open")]);
    crate::auth::admin_password_only(&srv, "root@example.org");
    let (mut b, secret) = first_sign_in(&srv);
    let csrf = field(&b.get("/admin").body, "csrf");
    assert_eq!(b.post("/admin/logout", &[("csrf", &csrf)]).status, 303);

    // Second sign-in: password, then a code (the next time step: the last one is used up).
    let csrf = field(&b.get("/admin/login").body, "csrf");
    let p = b.post("/admin/login", &[("csrf", &csrf), ("email", "root@example.org"), ("password", PASSWORD)]);
    assert!(p.body.contains("Second factor"), "{}", p.body);
    let token = field(&p.body, "mfa_token");
    let p = b.post("/admin/mfa", &[("csrf", &csrf), ("mfa_token", &token), ("code", "123456")]);
    assert_eq!(p.status, 401, "wrong code: {}", p.body);
    let p = b.post("/admin/mfa", &[("csrf", &csrf), ("mfa_token", &token), ("code", &totp(&secret, "+ 30 seconds"))]);
    assert_eq!((p.status, p.location.as_deref()), (303, Some("/admin")), "{}", p.body);
    assert_eq!(b.get("/admin/plugins").status, 200);

    // Idle for longer than the idle timeout: the next request finds the session ended.
    srv.db.sql("UPDATE browser_sessions SET last_seen_at = last_seen_at - 3600000000");
    assert_eq!(b.get("/admin/plugins").status, 303);
    assert_eq!(srv.db.sql("SELECT count(*) FROM sessions WHERE revoked_reason = 'idle_timeout'"), "1");

    // Non-admins: refused at sign-in, and with an API token on every page and form.
    let user = user_token(&srv, "ursula@example.org");
    let mut u = Browser::new(&srv);
    let csrf = field(&u.get("/admin/login").body, "csrf");
    let p = u.post("/admin/login", &[("csrf", &csrf), ("email", "ursula@example.org"), ("password", PASSWORD)]);
    assert_eq!(p.status, 403);
    assert!(!u.cookies.contains_key("seccollab_admin"));
    let bearer = format!("Bearer {}", user["token"].as_str().unwrap());
    for path in
        ["/admin", "/admin/users", "/admin/audit", "/admin/audit/export?format=csv", "/admin/alerts", "/admin/plugins"]
    {
        let r = srv.request("GET", path, &[("Authorization", &bearer)], None);
        assert_eq!(r.status, 403, "GET {path}");
    }
    let uid = user["user"]["id"].as_str().unwrap();
    for path in [format!("/admin/users/{uid}/disable"), "/admin/alerts/x/ack".into(), "/admin/logout".into()] {
        let r = srv.request(
            "POST",
            &path,
            &[("Authorization", &bearer), ("Content-Type", "application/x-www-form-urlencoded")],
            Some(b"csrf=x"),
        );
        assert_eq!(r.status, 403, "POST {path}");
    }
    assert_eq!(srv.db.sql(&format!("SELECT disabled FROM users WHERE id = '{uid}'")), "0");
}

/// Every console route, walked from the route table: a non-admin's API token gets 403 and a
/// caller without credentials is sent to sign in (GET) or refused (POST); nothing changes.
#[test]
fn every_console_route_refuses_non_admins() {
    let srv = Server::start_with(TestDb::new(Backend::Sqlite), &[("SECCOLLAB_AUTH__REGISTRATION", "open")]);
    crate::auth::admin_password_only(&srv, "root@example.org");
    let user = user_token(&srv, "nina@example.org");
    let bearer = format!("Bearer {}", user["token"].as_str().unwrap());
    let before = srv.db.sql("SELECT count(*) FROM users WHERE disabled");
    let public = [
        ("GET", "/login"),
        ("POST", "/login"),
        ("POST", "/mfa"),
        ("POST", "/enrol"),
        ("GET", "/assets/admin.css"),
        ("GET", "/assets/admin.js"),
    ];
    let mut walked = 0;
    for route in seccollab::admin::routes::routes() {
        let method = route.method.as_str();
        let rel = route.uri.path().to_string();
        if public.contains(&(method, rel.as_str())) {
            continue;
        }
        let path = rel.split('/').map(|s| if s.starts_with('<') { "x" } else { s }).collect::<Vec<_>>().join("/");
        let path = if path == "/" { "/admin".to_string() } else { format!("/admin{path}") };
        let agent = ureq::AgentBuilder::new().redirects(0).build();
        let send = |auth: Option<&str>| {
            let mut req = agent.request(method, &srv.url(&path));
            if let Some(a) = auth {
                req = req.set("Authorization", a);
            }
            let res = if method == "POST" {
                req.set("Content-Type", "application/x-www-form-urlencoded").send_bytes(
                    b"csrf=x&email=x%40example.org&display_name=X&password=long+enough+passphrase+1&role=admin&hours=1",
                )
            } else {
                req.call()
            };
            match res {
                Ok(r) => r.status(),
                Err(ureq::Error::Status(s, _)) => s,
                Err(e) => panic!("{method} {path}: {e}"),
            }
        };
        let anon = send(None);
        if rel == "/ws" {
            // Not an upgrade request, and no admin: refused either way (the browser test opens
            // it as an admin).
            assert!(anon >= 400 && send(Some(&bearer)) >= 400, "GET {path}: {anon}");
            walked += 1;
            continue;
        }
        if method == "GET" {
            assert_eq!(anon, 303, "GET {path} without credentials");
        } else {
            assert_eq!(anon, 403, "POST {path} without credentials");
        }
        assert_eq!(send(Some(&bearer)), 403, "{method} {path} with a non-admin token");
        walked += 1;
    }
    assert!(walked >= 15, "only {walked} routes walked");
    assert_eq!(srv.db.sql("SELECT count(*) FROM users WHERE email = 'x@example.org'"), "0", "no user was created");
    assert_eq!(srv.db.sql("SELECT count(*) FROM invites"), "0", "no invitation was created");
    assert_eq!(srv.db.sql("SELECT count(*) FROM users WHERE disabled"), before);
}

#[test]
fn held_accounts_are_listed_with_their_undo_and_a_held_admin_signs_in_again() {
    let srv = crate::auth::open_server(Backend::Sqlite);
    crate::auth::admin_password_only(&srv, "root@example.org");
    let sus = register(&srv, "sus@example.org")["id"].as_str().unwrap().to_string();
    let held = user_token(&srv, "held@example.org");
    let held_id = held["user"]["id"].as_str().unwrap().to_string();
    let held_tok = held["token"].as_str().unwrap().to_string();
    // What the suspend_account and force_mfa responses leave (tests/blackbox/abuse.rs raises
    // them through real alerts).
    srv.db.sql(&format!(
        "UPDATE users SET disabled = TRUE, suspended_at = 1700000000000000, suspended_reason = 'mass_sharing' WHERE id = '{sus}'"
    ));
    srv.db.sql(&format!("UPDATE sessions SET reverify_required = TRUE WHERE user_id = '{held_id}'"));
    let (mut b, secret) = first_sign_in(&srv);
    let p = b.get("/admin/alerts");
    assert_eq!(p.status, 200);
    let table = p.body.split("id=\"held\"").nth(1).expect("the held accounts table");
    assert!(table.contains("sus@example.org") && table.contains("by rule mass_sharing"), "{table}");
    assert!(table.contains("held@example.org") && table.contains("1 session(s) waiting"), "{table}");
    assert!(table.contains(&format!("/admin/users/{sus}/enable")), "{table}");
    assert!(table.contains(&format!("/admin/users/{held_id}/clear-reverify")), "{table}");
    let users = b.get("/admin/users");
    assert!(users.body.contains("suspended (mass_sharing)") && users.body.contains(">Reinstate<"), "{}", users.body);
    let csrf = field(&p.body, "csrf");
    // Without the form token nothing changes.
    let r = b.post(&format!("/admin/users/{sus}/enable"), &[("csrf", "forged")]);
    assert_eq!(r.status, 403);
    login(&srv, "sus@example.org", PASSWORD).assert_error(403, "account_suspended");
    let r = b.post(&format!("/admin/users/{sus}/enable"), &[("csrf", &csrf)]);
    assert_eq!((r.status, r.location.as_deref()), (303, Some("/admin/users?done=enable")));
    assert_eq!(login(&srv, "sus@example.org", PASSWORD).status, 200);
    std::thread::sleep(Duration::from_secs(6)); // past the API's session cache
    let me = |t: &str| srv.request("GET", "/api/auth/me", &[("Authorization", &format!("Bearer {t}"))], None);
    me(&held_tok).assert_error(403, "mfa_reverify_required");
    let r = b.post(&format!("/admin/users/{held_id}/clear-reverify"), &[("csrf", &csrf)]);
    assert_eq!((r.status, r.location.as_deref()), (303, Some("/admin/users?done=clear-reverify")));
    assert_eq!(me(&held_tok).status, 200);
    assert!(!b.get("/admin/alerts").body.split("id=\"held\"").nth(1).unwrap().contains("@example.org"));

    // force_mfa about the admin (admin_new_location): the console asks for a full sign-in.
    srv.db.sql(
        "UPDATE sessions SET reverify_required = TRUE WHERE user_id IN (SELECT id FROM users WHERE role = 'admin')",
    );
    let p = b.get("/admin/users");
    assert_eq!((p.status, p.location.as_deref()), (303, Some("/admin/login")));
    let p = b.get("/admin/login");
    let csrf = field(&p.body, "csrf");
    let p = b.post("/admin/login", &[("csrf", &csrf), ("email", "root@example.org"), ("password", PASSWORD)]);
    assert_eq!(p.status, 200, "{}", p.body);
    let token = field(&p.body, "mfa_token");
    let p = b.post("/admin/mfa", &[("csrf", &csrf), ("mfa_token", &token), ("code", &totp(&secret, "+ 30 seconds"))]);
    assert_eq!(p.status, 303, "{}", p.body);
    assert_eq!(b.get("/admin/users").status, 200);
}
