//! Sign-in with OpenID Connect: the shipped `oidc` plugin in the real server against a real
//! provider (`oidc-provider` from npm, `tests/support/oidc_provider.mjs`), driven the way a
//! browser is: redirects followed by hand, cookies kept per site, the provider's login and
//! consent forms submitted.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::auth::{get, login, open_server_env, register, PASSWORD};
use crate::harness::{repo_root, wait_until, Backend, Server, BIN};

const CLIENT_ID: &str = "seccollab-test";
const CLIENT_SECRET: &str = "a-client-secret-for-the-test-provider";
/// The public URL the server builds its redirect URI from. Nothing listens there: like a
/// browser, the test reads `code` and `state` off the provider's final redirect and brings them
/// to the server's callback itself.
const PUBLIC_URL: &str = "http://127.0.0.1:9";

struct Provider {
    child: Child,
    issuer: String,
    _script: tempfile::NamedTempFile,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Provider {
    fn start() -> Self {
        let dir = PathBuf::from(
            std::env::var("SECCOLLAB_TEST_OIDC_DIR").unwrap_or_else(|_| "/var/tmp/seccollab-oidc".into()),
        );
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "oidc-provider is not installed in {} (./tests/run installs it with npm)",
            dir.display()
        );
        // ES modules resolve packages from the script's folder: run a copy placed beside them.
        let mut script = tempfile::Builder::new().suffix(".mjs").tempfile_in(&dir).unwrap();
        std::io::Write::write_all(
            &mut script,
            &std::fs::read(repo_root().join("tests/support/oidc_provider.mjs")).unwrap(),
        )
        .unwrap();
        let port = free_port();
        let mut child = Command::new("node")
            .arg(script.path())
            .args([&port.to_string(), CLIENT_ID, CLIENT_SECRET, &format!("{PUBLIC_URL}/api/auth/callback/test")])
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node must be installed");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(i) = line.strip_prefix("READY ") {
                    let _ = tx.send(i.to_string());
                }
            }
        });
        let issuer = rx.recv_timeout(Duration::from_secs(30)).expect("oidc-provider did not start");
        Provider { child, issuer, _script: script }
    }
}

/// The server with the `oidc` plugin enabled as provider `test`.
fn server(p: &Provider, plugin_dir: &tempfile::TempDir) -> Server {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(plugin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = std::path::Path::new(BIN).parent().unwrap().join("libseccollab_oidc.so");
    assert!(src.exists(), "{} missing: build the plugins first (./tests/run does)", src.display());
    let lib = plugin_dir.path().join("libseccollab_oidc.so");
    std::fs::copy(&src, &lib).unwrap();
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = plugin_dir.path().join("seccollab.toml");
    std::fs::write(
        &cfg,
        format!(
            "[plugins]\ndir = \"{}\"\n[plugins.enabled.test]\nplugin = \"oidc\"\n\
             settings = {{ issuer = \"{}\", client_id = \"{CLIENT_ID}\", client_secret = \"{CLIENT_SECRET}\" }}\n",
            plugin_dir.path().display(),
            p.issuer
        ),
    )
    .unwrap();
    open_server_env(
        Backend::Sqlite,
        &[("SECCOLLAB_CONFIG", &cfg.display().to_string()), ("SECCOLLAB_SMTP__PUBLIC_URL", PUBLIC_URL)],
    )
}

/// A browser: no automatic redirects, cookies per host:port.
struct Browser {
    agent: ureq::Agent,
    jars: HashMap<String, HashMap<String, String>>,
    /// A bearer token sent to the server (never to the provider): a signed-in API client.
    bearer: Option<(String, String)>,
}

struct Page {
    status: u16,
    location: Option<String>,
    body: String,
}

fn site(url: &str) -> String {
    let rest = url.split_once("://").map(|x| x.1).unwrap_or(url);
    rest.split('/').next().unwrap_or("").to_string()
}

impl Browser {
    fn new() -> Self {
        Self { agent: ureq::AgentBuilder::new().redirects(0).build(), jars: HashMap::new(), bearer: None }
    }

    fn cookie_header(&self, url: &str) -> Option<String> {
        let jar = self.jars.get(&site(url))?;
        (!jar.is_empty()).then(|| jar.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; "))
    }

    fn keep(&mut self, url: &str, r: &ureq::Response) {
        let jar = self.jars.entry(site(url)).or_default();
        for c in r.all("set-cookie") {
            let pair = c.split(';').next().unwrap_or("");
            if let Some((k, v)) = pair.split_once('=') {
                if v.is_empty() {
                    jar.remove(k.trim());
                } else {
                    jar.insert(k.trim().to_string(), v.to_string());
                }
            }
        }
    }

    fn send(&mut self, method: &str, url: &str, form: Option<&[(&str, &str)]>) -> Page {
        let mut req = self.agent.request(method, url);
        if let Some(c) = self.cookie_header(url) {
            req = req.set("Cookie", &c);
        }
        if let Some((host, token)) = &self.bearer {
            if site(url) == *host {
                req = req.set("Authorization", &format!("Bearer {token}"));
            }
        }
        let res = match form {
            Some(f) => req.send_form(f),
            None => req.call(),
        };
        let r = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {url}: {e}"),
        };
        self.keep(url, &r);
        let status = r.status();
        let location = r.header("location").map(|l| {
            if l.starts_with("http") {
                l.to_string()
            } else {
                format!("{}{}", url.split('/').take(3).collect::<Vec<_>>().join("/"), l)
            }
        });
        Page { status, location, body: r.into_string().unwrap_or_default() }
    }
}

/// Starts a sign-in at the server and signs in at the provider as `login`; returns the callback
/// query (`code`, `state`) the provider sent the browser back with.
fn sign_in_at_provider(b: &mut Browser, srv: &Server, login: &str) -> HashMap<String, String> {
    round_trip(b, srv, "/api/auth/login/test", login)
}

/// The browser's round trip from `start` (a sign-in or a link) through the provider.
fn round_trip(b: &mut Browser, srv: &Server, start: &str, login: &str) -> HashMap<String, String> {
    let start = b.send("GET", &srv.url(start), None);
    assert_eq!(start.status, 303, "{}", start.body);
    let mut url = start.location.expect("redirect to the provider");
    assert!(url.contains("code_challenge_method=S256") && url.contains("nonce="), "{url}");
    for _ in 0..20 {
        if url.starts_with(PUBLIC_URL) {
            let q = url.split_once('?').map(|x| x.1).unwrap_or("");
            return q
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), urlencoding_decode(v)))
                .collect();
        }
        let page = b.send("GET", &url, None);
        if let Some(next) = page.location {
            url = next;
            continue;
        }
        assert_eq!(page.status, 200, "{url}: {}", page.body);
        // The provider's development login or consent form.
        let action = page.body.split("action=\"").nth(1).and_then(|s| s.split('"').next()).expect("a form");
        let action = if action.starts_with("http") {
            action.to_string()
        } else {
            format!("{}{}", url.split('/').take(3).collect::<Vec<_>>().join("/"), action)
        };
        let posted = if page.body.contains("name=\"login\"") {
            b.send("POST", &action, Some(&[("prompt", "login"), ("login", login), ("password", "anything")]))
        } else {
            b.send("POST", &action, Some(&[("prompt", "consent")]))
        };
        url = posted.location.unwrap_or_else(|| panic!("form answered {}: {}", posted.status, posted.body));
    }
    panic!("the provider never sent the browser back");
}

fn urlencoding_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap(), 16).unwrap());
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

fn callback(b: &mut Browser, srv: &Server, code: &str, state: &str) -> (u16, Value) {
    let url = srv.url(&format!("/api/auth/callback/test?code={code}&state={state}"));
    let p = b.send("GET", &url, None);
    (p.status, serde_json::from_str(&p.body).unwrap_or(Value::Null))
}

#[test]
fn openid_connect_sign_in_creates_links_and_refuses_forgeries() {
    let provider = Provider::start();
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&provider, &dir);

    // The sign-in page can list the provider.
    let list = srv.get("/api/auth/providers").json();
    assert_eq!(list["providers"][0]["name"], "test", "{list}");
    assert_eq!(list["providers"][0]["login_url"], "/api/auth/login/test");
    srv.get("/api/auth/login/nope").assert_error(404, "unknown_provider");

    // First sign-in: a new account from the verified e-mail.
    let mut alice = Browser::new();
    let q = sign_in_at_provider(&mut alice, &srv, "alice");
    let (st, tokens) = callback(&mut alice, &srv, &q["code"], &q["state"]);
    assert_eq!(st, 200, "{tokens}");
    let me = get(&srv, "/api/auth/me", tokens["token"].as_str().unwrap()).json();
    assert_eq!(me["user"]["email"], "alice@example.org", "{me}");
    let alice_id = me["user"]["id"].as_str().unwrap().to_string();

    // The same code and state again: the sign-in was used up.
    let (st, body) = callback(&mut alice, &srv, &q["code"], &q["state"]);
    assert_eq!(st, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_state");

    // Second sign-in: the same account, found by (issuer, subject).
    let q = sign_in_at_provider(&mut alice, &srv, "alice");
    let (st, tokens) = callback(&mut alice, &srv, &q["code"], &q["state"]);
    assert_eq!(st, 200, "{tokens}");
    assert_eq!(tokens["user"]["id"].as_str().unwrap(), alice_id);

    // A forged state, and a real state brought by another browser: refused, and neither uses up
    // the real sign-in.
    let mut victim = Browser::new();
    let q = sign_in_at_provider(&mut victim, &srv, "alice");
    let (st, body) = callback(&mut victim, &srv, &q["code"], "forged-state-value");
    assert_eq!((st, body["error"]["code"].as_str()), (400, Some("invalid_state")), "{body}");
    let mut attacker = Browser::new();
    let _ = attacker.send("GET", &srv.url("/api/auth/login/test"), None); // has a cookie of its own
    let (st, body) = callback(&mut attacker, &srv, &q["code"], &q["state"]);
    assert_eq!((st, body["error"]["code"].as_str()), (400, Some("invalid_state")), "{body}");
    let (st, body) = callback(&mut victim, &srv, &q["code"], &q["state"]);
    assert_eq!(st, 200, "{body}");

    // A replayed code under a fresh, valid state: the provider refuses it (used up, and the
    // PKCE verifier does not match).
    let used_code = q["code"].clone();
    let q2 = sign_in_at_provider(&mut victim, &srv, "alice");
    let (st, body) = callback(&mut victim, &srv, &used_code, &q2["state"]);
    assert_eq!((st, body["error"]["code"].as_str()), (401, Some("oidc_failed")), "{body}");

    // A wrong nonce: the ID token names the nonce of the request, the server expects another.
    let q = sign_in_at_provider(&mut victim, &srv, "alice");
    srv.db.sql(&format!("UPDATE oauth_logins SET nonce = 'not-the-nonce-sent' WHERE state = '{}'", q["state"]));
    let (st, body) = callback(&mut victim, &srv, &q["code"], &q["state"]);
    assert_eq!((st, body["error"]["code"].as_str()), (401, Some("oidc_failed")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().to_lowercase().contains("nonce"), "{body}");

    // An existing password account is never linked by its e-mail alone (the provider's
    // account could belong to someone else): 409, nothing linked.
    let bob = register(&srv, "bob@example.org");
    let mut b = Browser::new();
    let q = sign_in_at_provider(&mut b, &srv, "bob");
    let (st, body) = callback(&mut b, &srv, &q["code"], &q["state"]);
    assert_eq!((st, body["error"]["code"].as_str()), (409, Some("link_required")), "{body}");
    assert_eq!(srv.db.sql("SELECT count(*) FROM oauth_identities"), "1", "only alice's identity");
    // Linked from bob's own signed-in session instead; he is told, in-app.
    let bob_tok = login(&srv, "bob@example.org", PASSWORD).json()["token"].as_str().unwrap().to_string();
    b.bearer = Some((site(&srv.base), bob_tok.clone()));
    let q = round_trip(&mut b, &srv, "/api/auth/link/test", "bob");
    let (st, body) = callback(&mut b, &srv, &q["code"], &q["state"]);
    assert_eq!(st, 200, "{body}");
    assert_eq!((body["linked"].as_bool(), &body["user"]["id"]), (Some(true), &bob["id"]), "{body}");
    let notes = get(&srv, "/api/notifications", &bob_tok).json();
    assert!(notes.to_string().contains("test"), "bob is told a provider was linked: {notes}");
    // From now on the provider signs bob in.
    b.bearer = None;
    let q = sign_in_at_provider(&mut b, &srv, "bob");
    let (st, tokens) = callback(&mut b, &srv, &q["code"], &q["state"]);
    assert_eq!(st, 200, "{tokens}");
    assert_eq!(tokens["user"]["id"], bob["id"]);
    // The identity is bob's now: another account cannot link it.
    let carl = crate::auth::user_token(&srv, "carl@example.org")["token"].as_str().unwrap().to_string();
    b.bearer = Some((site(&srv.base), carl));
    let q = round_trip(&mut b, &srv, "/api/auth/link/test", "bob");
    let (st, body) = callback(&mut b, &srv, &q["code"], &q["state"]);
    assert_eq!((st, body["error"]["code"].as_str()), (409, Some("identity_in_use")), "{body}");
    b.bearer = None;

    // An admin signing in through the provider still has to pass the local second factor
    // before the admin API answers.
    srv.db.sql(&format!("UPDATE users SET role = 'admin' WHERE id = '{alice_id}'"));
    let mut a = Browser::new();
    let q = sign_in_at_provider(&mut a, &srv, "alice");
    let (st, tokens) = callback(&mut a, &srv, &q["code"], &q["state"]);
    assert_eq!(st, 200, "{tokens}");
    get(&srv, "/api/admin/users", tokens["token"].as_str().unwrap()).assert_error(403, "mfa_required");

    // An e-mail the provider does not vouch for never makes or links an account.
    let mut c = Browser::new();
    let q = sign_in_at_provider(&mut c, &srv, "unverified-carol");
    let (st, body) = callback(&mut c, &srv, &q["code"], &q["state"]);
    assert_eq!((st, body["error"]["code"].as_str()), (403, Some("email_not_verified")), "{body}");

    // Every attempt is in the audit log. Entries are committed by the audit writer shortly
    // after the answer (group commit), so the last one may need a moment to appear.
    let count = || -> i64 {
        srv.db
            .sql("SELECT count(*) FROM audit_log WHERE action = 'auth.login' AND details LIKE '%\"oidc\"%'")
            .parse()
            .unwrap()
    };
    wait_until("an audit entry for each of the 13 OIDC sign-ins", 10, || count() >= 13);
}

/// The web UI's "Sign in with …" button: the same flow, finished as a browser session (cookie,
/// then a same-site step to the files page), errors shown on the sign-in page.
#[test]
fn openid_connect_from_the_web_sign_in_page_opens_a_browser_session() {
    let provider = Provider::start();
    let dir = tempfile::tempdir().unwrap();
    let srv = server(&provider, &dir);

    let mut anon = Browser::new();
    let login = anon.send("GET", &srv.url("/login"), None);
    assert!(login.body.contains("href=\"/login/oidc/test\""), "the page offers the provider: {}", login.body);
    let none = anon.send("GET", &srv.url("/login/oidc/nope"), None);
    assert_eq!(none.status, 404);
    assert!(none.body.contains("There is no sign-in provider named"), "{}", none.body);

    let mut b = Browser::new();
    let start = b.send("GET", &srv.url("/login/oidc/test"), None);
    assert_eq!(start.status, 303);
    assert_eq!(start.location.as_deref(), Some(srv.url("/api/auth/login/test").as_str()));
    let q = sign_in_at_provider(&mut b, &srv, "alice");
    let url = srv.url(&format!("/api/auth/callback/test?code={}&state={}", q["code"], q["state"]));
    let done = b.send("GET", &url, None);
    assert_eq!(done.status, 200, "{}", done.body);
    assert!(done.body.contains("http-equiv=\"refresh\" content=\"0;url=/files\""), "{}", done.body);
    assert!(!done.body.contains("refresh_token"), "no tokens for the browser: {}", done.body);
    let files = b.send("GET", &srv.url("/files"), None);
    assert_eq!(files.status, 200, "signed in by the cookie: {:?}", files.location);
    assert!(files.body.contains("name=\"csrf-token\""));
    let me = b.send("GET", &srv.url("/api/auth/me"), None);
    assert!(me.body.contains("alice@example.org"), "{}", me.body);

    // A refusal at the provider comes back as the sign-in page with the reason, no session.
    let mut c = Browser::new();
    c.send("GET", &srv.url("/login/oidc/test"), None);
    c.send("GET", &srv.url("/api/auth/login/test"), None);
    let denied = c.send("GET", &srv.url("/api/auth/callback/test?error=access_denied"), None);
    assert_eq!(denied.status, 401, "{}", denied.body);
    assert!(
        denied.body.contains("Sign-in with test failed") && denied.body.contains("access_denied"),
        "{}",
        denied.body
    );
    let files = c.send("GET", &srv.url("/files"), None);
    assert_eq!(files.location.as_deref(), Some(srv.url("/login?next=%2Ffiles").as_str()));
}
