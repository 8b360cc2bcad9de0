//! A small W3C WebDriver client (over ureq) for the browser tests: Debian's `chromium` driven
//! by `chromedriver`, both installed by `./tests/run`. Each [`Browser`] is its own Chromium with
//! its own profile (cookies), so two of them are two users on two machines.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process on a free port; killed on drop.
pub struct Driver {
    child: Child,
    base: String,
}

impl Driver {
    pub fn start() -> Self {
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
        Self { child, base }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Browser<'a> {
    driver: &'a Driver,
    session: String,
    pub artifacts: PathBuf,
    prefix: String,
    pub shots: usize,
    _profile: tempfile::TempDir,
}

impl<'a> Browser<'a> {
    pub fn open(driver: &'a Driver, artifacts: PathBuf) -> Self {
        Self::open_named(driver, artifacts, "")
    }

    /// A browser whose screenshots are named `NN-<prefix>-<name>.png`.
    pub fn open_named(driver: &'a Driver, artifacts: PathBuf, prefix: &str) -> Self {
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium_binary(),
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                         "--window-size=1280,1000",
                         format!("--user-data-dir={}", profile.path().display())],
            }
        }}});
        let r = post(&format!("{}/session", driver.base), caps).expect("new WebDriver session");
        let session = r["sessionId"].as_str().expect("session id").to_string();
        std::fs::create_dir_all(&artifacts).unwrap();
        let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}-") };
        Self { driver, session, artifacts, prefix, shots: 0, _profile: profile }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{}", self.driver.base, self.session, path)
    }

    pub fn goto(&self, url: &str) {
        post(&self.url("/url"), json!({"url": url})).expect("navigate");
    }

    pub fn current_url(&self) -> String {
        get(&self.url("/url")).unwrap().as_str().unwrap().to_string()
    }

    pub fn try_find(&self, css: &str) -> Option<String> {
        let v = post(&self.url("/element"), json!({"using": "css selector", "value": css})).ok()?;
        v[ELEMENT].as_str().map(str::to_string)
    }

    pub fn find(&self, css: &str) -> String {
        self.try_find(css).unwrap_or_else(|| panic!("no element {css}: {}", self.source()))
    }

    pub fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        post(&self.url(&format!("/element/{e}/clear")), json!({})).unwrap();
        post(&self.url(&format!("/element/{e}/value")), json!({"text": text})).unwrap();
    }

    /// Types without clearing first (keys go through the page's input handlers).
    pub fn keys(&self, css: &str, text: &str) {
        let e = self.find(css);
        post(&self.url(&format!("/element/{e}/value")), json!({"text": text})).unwrap();
    }

    pub fn click(&self, css: &str) {
        let e = self.find(css);
        post(&self.url(&format!("/element/{e}/click")), json!({})).unwrap_or_else(|err| panic!("click {css}: {err}"));
    }

    pub fn text(&self, css: &str) -> String {
        let e = self.find(css);
        get(&self.url(&format!("/element/{e}/text"))).unwrap().as_str().unwrap().to_string()
    }

    pub fn source(&self) -> String {
        get(&self.url("/source")).unwrap().as_str().unwrap_or_default().to_string()
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns its value.
    pub fn js(&self, script: &str, args: Value) -> Value {
        post(&self.url("/execute/sync"), json!({"script": script, "args": args}))
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Runs an async script: it calls `arguments[arguments.length - 1](value)` when done.
    pub fn js_async(&self, script: &str, args: Value) -> Value {
        post(&self.url("/execute/async"), json!({"script": script, "args": args}))
            .unwrap_or_else(|e| panic!("async script failed: {e}\n{script}"))
    }

    /// Waits until the page (after a click's navigation) contains `text`.
    pub fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.source().contains(text) {
            assert!(Instant::now() < deadline, "page never showed {text:?}: {}", self.source());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the JavaScript expression `cond` is truthy in the page; `what` names it.
    pub fn wait_until(&self, what: &str, cond: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let script = format!("return !!({cond});");
        loop {
            if post(&self.url("/execute/sync"), json!({"script": script, "args": []})).ok() == Some(Value::Bool(true)) {
                return;
            }
            assert!(Instant::now() < deadline, "never true: {what} ({cond})\n{}", self.source());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until an element matching `css` exists.
    pub fn wait_css(&self, css: &str) {
        let c = serde_json::to_string(css).unwrap();
        self.wait_until(css, &format!("document.querySelector({c})"));
    }

    /// Fails the test if a JavaScript dialog is open (an injected `alert(1)` ran).
    pub fn assert_no_dialog(&self, page: &str) {
        if let Ok(text) = get(&self.url("/alert/text")) {
            panic!("a dialog opened on {page}: {text}");
        }
    }

    /// Accepts a `confirm()` dialog (e.g. "Delete …?").
    pub fn accept_dialog(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while post(&self.url("/alert/accept"), json!({})).is_err() {
            assert!(Instant::now() < deadline, "no dialog to accept");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn screenshot(&mut self, name: &str) {
        let b64 = get(&self.url("/screenshot")).unwrap();
        let png = base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        self.shots += 1;
        std::fs::write(self.artifacts.join(format!("{}{:02}-{name}.png", self.prefix, self.shots)), png).unwrap();
    }

    /// Resizes the window (e.g. to a phone's width).
    pub fn window(&self, width: u32, height: u32) {
        post(&self.url("/window/rect"), json!({"width": width, "height": height})).unwrap();
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

/// Where screenshots go: `$SECCOLLAB_TEST_ARTIFACTS/<name>` or `<target>/test-artifacts/<name>`.
pub fn artifacts_dir(name: &str) -> PathBuf {
    std::env::var_os("SECCOLLAB_TEST_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(crate::harness::BIN).parent().unwrap().parent().unwrap().join("test-artifacts"))
        .join(name)
}
