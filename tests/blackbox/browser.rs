//! The admin console in a real headless Chromium (Debian `chromium` + `chromium-driver`, which
//! `./tests/run` installs), driven over the W3C WebDriver protocol: an admin signs in, enrols
//! MFA with a code from `oathtool`, visits every page, filters the audit log, unlocks a locked
//! user, rescans and releases a quarantined file and acknowledges an alert. Hostile names must
//! render as text: no dialog may open. Screenshots of each page are saved under
//! `<target>/test-artifacts/admin-console/` (or `$SECCOLLAB_TEST_ARTIFACTS`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::auth::{admin_token, login, register, totp, PASSWORD};
use crate::harness::{Backend, Server, TestDb, BIN};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process on a free port; killed on drop.
struct Driver {
    child: Child,
    base: String,
    _profile: tempfile::TempDir,
}

impl Driver {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver must be installed (./tests/run installs Debian's chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while ureq::get(&format!("{base}/status")).call().is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, base, _profile: tempfile::tempdir().unwrap() }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Browser<'a> {
    driver: &'a Driver,
    session: String,
    artifacts: PathBuf,
    shots: usize,
}

impl<'a> Browser<'a> {
    fn open(driver: &'a Driver, artifacts: PathBuf) -> Self {
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium_binary(),
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                         "--window-size=1280,1000",
                         format!("--user-data-dir={}", driver._profile.path().display())],
            }
        }}});
        let r = post(&format!("{}/session", driver.base), caps).expect("new WebDriver session");
        let session = r["sessionId"].as_str().expect("session id").to_string();
        std::fs::create_dir_all(&artifacts).unwrap();
        Self { driver, session, artifacts, shots: 0 }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{}", self.driver.base, self.session, path)
    }

    fn goto(&self, url: &str) {
        post(&self.url("/url"), json!({"url": url})).expect("navigate");
    }

    fn current_url(&self) -> String {
        get(&self.url("/url")).unwrap().as_str().unwrap().to_string()
    }

    fn find(&self, css: &str) -> String {
        let v = post(&self.url("/element"), json!({"using": "css selector", "value": css}))
            .unwrap_or_else(|e| panic!("no element {css}: {e}"));
        v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        post(&self.url(&format!("/element/{e}/clear")), json!({})).unwrap();
        post(&self.url(&format!("/element/{e}/value")), json!({"text": text})).unwrap();
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        post(&self.url(&format!("/element/{e}/click")), json!({})).unwrap();
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        get(&self.url(&format!("/element/{e}/text"))).unwrap().as_str().unwrap().to_string()
    }

    fn source(&self) -> String {
        get(&self.url("/source")).unwrap().as_str().unwrap().to_string()
    }

    /// Waits until the page (after a click's navigation) contains `text`.
    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.source().contains(text) {
            assert!(Instant::now() < deadline, "page never showed {text:?}: {}", self.source());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Fails the test if a JavaScript dialog is open (an injected `alert(1)` ran).
    fn assert_no_dialog(&self, page: &str) {
        if let Ok(text) = get(&self.url("/alert/text")) {
            panic!("a dialog opened on {page}: {text}");
        }
    }

    fn screenshot(&mut self, name: &str) {
        let b64 = get(&self.url("/screenshot")).unwrap();
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        self.shots += 1;
        std::fs::write(self.artifacts.join(format!("{:02}-{name}.png", self.shots)), png).unwrap();
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = ureq::delete(&format!("{}/session/{}", self.driver.base, self.session)).call();
    }
}

fn chromium_binary() -> String {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("/usr/bin/chromium")
        .to_string()
}

/// A WebDriver call: the `value` of the answer, or the error's message.
fn call(req: ureq::Request, body: Option<Value>) -> Result<Value, String> {
    let req = req.timeout(Duration::from_secs(60));
    let res = match body {
        Some(b) => req.send_json(b),
        None => req.call(),
    };
    match res {
        Ok(r) => Ok(r.into_json::<Value>().map_err(|e| e.to_string())?["value"].take()),
        Err(ureq::Error::Status(_, r)) => {
            let v: Value = r.into_json().unwrap_or(Value::Null);
            Err(format!("{}: {}", v["value"]["error"], v["value"]["message"]))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn post(url: &str, body: Value) -> Result<Value, String> {
    call(ureq::post(url), Some(body))
}

fn get(url: &str) -> Result<Value, String> {
    call(ureq::get(url), None)
}

fn artifacts_dir() -> PathBuf {
    std::env::var_os("SECCOLLAB_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(BIN).parent().unwrap().parent().unwrap().join("test-artifacts"))
        .join("admin-console")
}

#[test]
fn an_admin_works_through_the_console_in_chromium() {
    let srv = Server::start_with(TestDb::new(Backend::Sqlite), &[("SECCOLLAB_AUTH__REGISTRATION", "open")]);
    let api_admin = admin_token(&srv);
    let hostile = "<script>alert(1)</script>";
    let r = crate::auth::post(
        &srv,
        "/api/auth/register",
        None,
        json!({"email": "eve@example.org", "password": PASSWORD, "display_name": hostile}),
    );
    assert_eq!(r.status, 201);
    register(&srv, "mallory@example.org");
    for _ in 0..5 {
        login(&srv, "mallory@example.org", "definitely not it");
    }
    login(&srv, "mallory@example.org", PASSWORD).assert_error(423, "account_locked");
    let eve = login(&srv, "eve@example.org", PASSWORD).json()["token"].as_str().unwrap().to_string();
    let bad_name = "<img src=x onerror=alert(1)>.txt";
    let fid = crate::files::upload(&srv, &eve, bad_name, crate::files::EICAR.as_bytes())["file_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(crate::files::scanned(&srv, &eve, &fid), "quarantined");

    let driver = Driver::start();
    let mut b = Browser::open(&driver, artifacts_dir());
    let base = srv.base.clone();

    // Sign-in: redirected to the form, then MFA enrolment.
    b.goto(&format!("{base}/admin"));
    assert!(b.current_url().ends_with("/admin/login"), "{}", b.current_url());
    b.screenshot("login");
    b.type_into("#email", "root@example.org");
    b.type_into("#password", PASSWORD);
    b.click("form button[type=submit]");
    b.wait_for("Set up a second factor");
    b.screenshot("enrol-mfa");
    let secret = b.text("#secret");
    b.type_into("#code", &totp(&secret, ""));
    b.click("form button[type=submit]");
    b.wait_for("recovery codes");
    b.screenshot("recovery-codes");
    b.click("main a[href='/admin']");

    // Dashboard.
    b.wait_for("Sign-ins per hour");
    b.assert_no_dialog("dashboard");
    b.screenshot("dashboard");

    // Users: the hostile name is text; mallory is unlocked with the button.
    b.goto(&format!("{base}/admin/users"));
    b.assert_no_dialog("users");
    assert!(b.text("main table").contains(hostile), "the name shows literally");
    b.screenshot("users");
    b.click("form[action$='/unlock'] button");
    b.wait_for("The account is unlocked.");
    assert_eq!(login(&srv, "mallory@example.org", PASSWORD).status, 200);

    // A user's page: sessions and activity.
    let mallory = srv.db.sql("SELECT id FROM users WHERE email = 'mallory@example.org'");
    b.goto(&format!("{base}/admin/users/{mallory}"));
    assert!(b.text("main").contains("Active sessions"));
    b.screenshot("user-activity");

    // Audit log, filtered through the form.
    b.goto(&format!("{base}/admin/audit"));
    b.type_into("#action", "admin.user_unlock");
    b.click("form.filters button");
    b.wait_for("value=\"admin.user_unlock\"");
    assert!(b.current_url().contains("action=admin.user_unlock"), "{}", b.current_url());
    assert_eq!(b.source().matches("<td>admin.user_unlock</td>").count(), 1);
    b.assert_no_dialog("audit");
    b.screenshot("audit-filtered");

    // Files: the quarantined file, its name as text; rescan, then release.
    b.goto(&format!("{base}/admin/files"));
    b.assert_no_dialog("files");
    assert!(b.text("main table").contains(bad_name), "{}", b.source());
    b.screenshot("files-quarantined");
    b.click(&format!("form[action='/admin/files/{fid}/rescan'] button"));
    b.wait_for("Rescanned");
    assert_eq!(srv.db.sql(&format!("SELECT scan_status FROM files WHERE id = '{fid}'")), "quarantined");
    b.click(&format!("form[action='/admin/files/{fid}/release'] button"));
    b.wait_for("Released");
    assert_eq!(srv.db.sql(&format!("SELECT scan_status FROM files WHERE id = '{fid}'")), "clean");

    // Alerts: the malware alert, and the anomaly rule noticing that this admin signed in from
    // a browser none of their earlier sign-ins used; both acknowledged with the buttons.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let open = crate::auth::get(&srv, "/api/admin/alerts?open=true", &api_admin).json();
        if open["alerts"].as_array().unwrap().iter().any(|a| a["kind"] == "admin_new_location") {
            break;
        }
        assert!(Instant::now() < deadline, "no admin_new_location alert: {open}");
        std::thread::sleep(Duration::from_millis(200));
    }
    b.goto(&format!("{base}/admin/alerts"));
    b.assert_no_dialog("alerts");
    assert!(b.text("main table").contains("malware_detected") && b.text("main table").contains("admin_new_location"));
    b.screenshot("alerts");
    let forms = |b: &Browser<'_>| b.source().matches("/ack\"").count();
    assert_eq!(forms(&b), 2, "{}", b.text("main table"));
    for left in [1, 0] {
        b.click("form[action$='/ack'] button");
        let deadline = Instant::now() + Duration::from_secs(15);
        while forms(&b) != left {
            assert!(Instant::now() < deadline, "acknowledging did not take: {}", b.source());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    b.wait_for("No alerts.");
    let open = crate::auth::get(&srv, "/api/admin/alerts?open=true", &api_admin).json();
    assert_eq!(open["alerts"].as_array().unwrap().len(), 0, "{open}");

    // System: rule files, outbox, configuration; reload the rules with the button.
    b.goto(&format!("{base}/admin/system"));
    assert!(b.text("main").contains("seccollab_default.yar"));
    b.screenshot("system");
    b.click("form[action='/admin/system/reload-rules'] button");
    b.wait_for("The rules were recompiled and are in force.");

    // Plugins.
    b.goto(&format!("{base}/admin/plugins"));
    assert!(b.text("main table").contains("yara-x"));
    b.screenshot("plugins");

    b.assert_no_dialog("plugins");

    // Live: with a console page open, a new alert appears without reloading (the page's
    // script over the console WebSocket), as text.
    b.wait_for("data-live=\"connected\"");
    let id2 = crate::files::upload(&srv, &eve, "again <em>bold.txt", crate::files::EICAR.as_bytes())["file_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(crate::files::scanned(&srv, &eve, &id2), "quarantined");
    b.wait_for("New high security alert: malware_detected");
    assert_eq!(b.text("#alert-count"), "1");
    b.assert_no_dialog("live alert");
    b.screenshot("live-alert");

    // Users: create one and invite another from the forms.
    b.goto(&format!("{base}/admin/users"));
    b.type_into("#new-email", "newbie@example.org");
    b.type_into("#new-name", "Newbie");
    b.type_into("#new-password", "a long and unguessable passphrase");
    b.click("form[action='/admin/users/create'] button");
    b.wait_for("The user is created.");
    assert_eq!(login(&srv, "newbie@example.org", "a long and unguessable passphrase").status, 200);
    b.type_into("#inv-email", "guest@example.org");
    b.click("form[action='/admin/users/invite'] button");
    b.wait_for("invite-code");
    let code = b.text("#invite-code");
    assert!(code.len() >= 20, "{code}");
    // Stored as a keyed hash only, bound to the address.
    assert_eq!(srv.db.sql("SELECT count(*) FROM invites WHERE email = 'guest@example.org'"), "1");
    assert_eq!(srv.db.sql(&format!("SELECT count(*) FROM invites WHERE code_hash = '{code}'")), "0");
    b.screenshot("users-invite");
    assert!(b.shots >= 13);
    eprintln!("screenshots in {}", b.artifacts.display());
}
