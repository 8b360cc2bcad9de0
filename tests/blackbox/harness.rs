//! Starts the real `seccollab` binary on a free port with a temporary data folder, against a
//! real SQLite file or a fresh PostgreSQL database, and talks to it over HTTP.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_seccollab");

/// Runs one test body against each backend.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn sqlite() {
                let f: fn($crate::harness::Backend) = $body;
                f($crate::harness::Backend::Sqlite)
            }
            #[test]
            fn postgres() {
                let f: fn($crate::harness::Backend) = $body;
                f($crate::harness::Backend::Postgres)
            }
        }
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// PostgreSQL server the suites use; `./tests/run` makes sure it is there.
pub fn pg_admin_url() -> String {
    std::env::var("SECCOLLAB_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty database of one backend, removed when dropped.
pub struct TestDb {
    pub backend: Backend,
    pub url: String,
    pub dir: tempfile::TempDir,
    pg_name: Option<String>,
}

impl TestDb {
    pub fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        match backend {
            Backend::Sqlite => {
                let url = format!("sqlite://{}", dir.path().join("seccollab.db").display());
                Self { backend, url, dir, pg_name: None }
            }
            Backend::Postgres => {
                let name = format!(
                    "sctest_{}_{}_{}",
                    std::process::id(),
                    COUNTER.fetch_add(1, Ordering::SeqCst),
                    rand_suffix()
                );
                psql(&pg_admin_url(), &format!("CREATE DATABASE {name}"));
                let admin = pg_admin_url();
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                let url = format!("{base}/{name}");
                Self { backend, url, dir, pg_name: Some(name) }
            }
        }
    }

    /// The SQLite file (SQLite only).
    pub fn sqlite_path(&self) -> PathBuf {
        PathBuf::from(self.url.strip_prefix("sqlite://").expect("sqlite url"))
    }

    /// Runs SQL directly against the database with the backend's own client (sqlite3 / psql),
    /// as an attacker with database access would.
    pub fn sql(&self, sql: &str) -> String {
        match self.backend {
            Backend::Sqlite => {
                // The server's writers (audit, events, checkpoints) hold the write lock for
                // moments at any time; wait for it as any other client would, rather than
                // failing at once with "database is locked".
                let out = Command::new("sqlite3")
                    .args(["-cmd", ".timeout 30000"])
                    .arg(self.sqlite_path())
                    .arg(sql)
                    .output()
                    .expect("sqlite3 must be installed (./tests/run installs it)");
                assert!(out.status.success(), "sqlite3 failed: {}", String::from_utf8_lossy(&out.stderr));
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            }
            Backend::Postgres => psql(&self.url, sql),
        }
    }

    /// Environment that points the binary at this database and data folder (and, when the
    /// suite runs on S3, at a configuration file selecting the `s3` plugin).
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("SECCOLLAB_DATABASE__URL".into(), self.url.clone()),
            ("SECCOLLAB_STORAGE__DATA_DIR".into(), self.dir.path().join("data").display().to_string()),
            ("SECCOLLAB_SECURITY__POLICY_DIR".into(), policy_dir().display().to_string()),
            ("SECCOLLAB_LOG__LEVEL".into(), "warn".into()),
        ];
        if let Some(cfg) = self.objects().s3_config(self.dir.path()) {
            env.push(("SECCOLLAB_CONFIG".into(), cfg.display().to_string()));
        }
        env
    }

    /// The object store this installation's server writes to.
    pub fn objects(&self) -> Objects {
        match storage_mode() {
            StorageMode::Local => Objects::Local(self.dir.path().join("data/objects")),
            StorageMode::S3 => {
                // One prefix per installation, derived from its folder name: unique and stable.
                let name = self.dir.path().file_name().unwrap().to_string_lossy().to_lowercase();
                let prefix: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
                Objects::S3 { endpoint: s3_endpoint(), prefix }
            }
        }
    }

    /// A library-level configuration for this database (to seed data quickly).
    pub fn config(&self) -> seccollab::config::Config {
        let mut c = seccollab::config::Config::default();
        c.database.url = self.url.clone();
        c.storage.data_dir = self.dir.path().join("data");
        c
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some(name) = &self.pg_name {
            let _ = Command::new("psql")
                .args([&pg_admin_url(), "-q", "-c", &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")])
                .output();
        }
    }
}

fn rand_suffix() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{nanos:x}")
}

pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql must be installed (./tests/run installs it)");
    assert!(out.status.success(), "psql failed on {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A policy folder with the shipped YARA rules and the given `security.toml`.
pub fn policy_dir_with(security_toml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = repo_root().join("policies/yara");
    std::fs::create_dir(dir.path().join("yara")).expect("mkdir yara");
    for e in std::fs::read_dir(src).expect("shipped rules").flatten() {
        std::fs::copy(e.path(), dir.path().join("yara").join(e.file_name())).expect("copy rule");
    }
    std::fs::write(dir.path().join("security.toml"), security_toml).expect("write policy");
    dir
}

/// Polls `f` every 200 ms until it holds; fails the test after `secs` seconds naming `what`.
pub fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The shipped policy folder, or `SECCOLLAB_TEST_POLICY_DIR` (the policy of the binary under
/// test, when `SECCOLLAB_TEST_BIN` names another build).
pub fn policy_dir() -> PathBuf {
    std::env::var_os("SECCOLLAB_TEST_POLICY_DIR").map(PathBuf::from).unwrap_or_else(|| repo_root().join("policies"))
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// `seccollab` with a clean environment: no stray `SECCOLLAB_*` from the caller.
pub fn command(env: &[(String, String)]) -> Command {
    // SECCOLLAB_TEST_BIN runs the suite against another build of the binary: an installed
    // package, or an older commit's, to watch an attack test fail there before its fix.
    let mut cmd = Command::new(std::env::var("SECCOLLAB_TEST_BIN").unwrap_or_else(|_| BIN.to_string()));
    for (k, _) in std::env::vars() {
        if k.starts_with("SECCOLLAB_") {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    cmd
}

/// Runs a CLI command to completion: (exit code, stdout, stderr).
pub fn run_cli(env: &[(String, String)], args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    let mut child = command(env)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start seccollab");
    {
        let mut si = child.stdin.take().expect("stdin");
        if let Some(s) = stdin {
            si.write_all(s.as_bytes()).expect("write stdin");
        }
    }
    let out = child.wait_with_output().expect("wait seccollab");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running server; SIGTERM and wait on drop.
pub struct Server {
    pub db: TestDb,
    pub base: String,
    child: Option<Child>,
    env: Vec<(String, String)>,
}

impl Server {
    pub fn start(backend: Backend) -> Self {
        Self::start_with(TestDb::new(backend), &[])
    }

    pub fn start_with(db: TestDb, extra_env: &[(&str, &str)]) -> Self {
        let mut env = db.env();
        env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Self::spawn(db, env)
    }

    /// A second node on this server's database and data folder (keys included), as two
    /// processes behind a load balancer would run.
    pub fn start_peer(&self, extra_env: &[(&str, &str)]) -> Self {
        let mut env = self.db.env();
        env.extend(extra_env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        // The peer owns no database: its TestDb is an unused placeholder.
        Self::spawn(TestDb::new(Backend::Sqlite), env)
    }

    fn spawn(db: TestDb, env: Vec<(String, String)>) -> Self {
        Self::spawn_on(db, env, 0)
    }

    /// Stops the server (SIGTERM) and starts it again on the same port, database and data
    /// folder: what clients see as a server restart.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Starts a stopped server again on its port, database and data folder.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        let port: u16 = self.base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port in base url");
        let db = std::mem::replace(&mut self.db, TestDb::new(Backend::Sqlite));
        let env = std::mem::take(&mut self.env);
        let mut next = Self::spawn_on(db, env, port);
        self.base = next.base.clone();
        self.child = next.child.take();
        self.env = std::mem::take(&mut next.env);
        self.db = std::mem::replace(&mut next.db, TestDb::new(Backend::Sqlite));
    }

    fn spawn_on(db: TestDb, env: Vec<(String, String)>, port: u16) -> Self {
        let saved = env.clone();
        let mut env = env;
        env.push(("SECCOLLAB_SERVER__PORT".into(), port.to_string()));
        let mut child = command(&env)
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start seccollab serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("SecCollab listening on ") {
                    let _ = tx.send(addr.to_string());
                }
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(b) => b,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start within 60 s (status {:?})", child.try_wait());
            }
        };
        let srv = Self { db, base, child: Some(child), env: saved };
        let deadline = Instant::now() + Duration::from_secs(30);
        while srv.get("/api/health").status != 200 {
            assert!(Instant::now() < deadline, "health never turned 200");
            std::thread::sleep(Duration::from_millis(50));
        }
        srv
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, &[], None)
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Resp {
        let mut req = ureq::request(method, &self.url(path)).timeout(Duration::from_secs(300));
        for (k, v) in headers {
            req = req.set(k, v);
        }
        let res = match body {
            Some(b) => req.send_bytes(b),
            None => req.call(),
        };
        let res = match res {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        Resp::from(res)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no chance to clean up, as in a crash or power cut of the process.
    pub fn kill9(&mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("kill -9");
        let _ = child.wait();
    }

    /// The database and data folder, to start another server on them.
    pub fn take_db(mut self) -> TestDb {
        std::mem::replace(&mut self.db, TestDb::new(Backend::Sqlite))
    }

    /// SIGTERM, then wait for a clean exit; returns the exit code.
    pub fn stop(&mut self) -> i32 {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().expect("wait") {
                return st.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("server did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl From<ureq::Response> for Resp {
    fn from(r: ureq::Response) -> Self {
        let status = r.status();
        let headers = r
            .headers_names()
            .into_iter()
            .map(|n| {
                let v = r.header(&n).unwrap_or_default().to_string();
                (n, v)
            })
            .collect();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut r.into_reader(), &mut body).expect("read body");
        Self { status, headers, body }
    }
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts the API error shape with this status and code.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.text());
        assert!(
            self.header("content-type").unwrap_or_default().starts_with("application/json"),
            "error must be JSON, got {:?}: {}",
            self.header("content-type"),
            self.text()
        );
        let j = self.json();
        assert_eq!(j["error"]["code"], code, "{j}");
        assert!(j["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{j}");
    }
}

/// Where file objects go in this run: the built-in local store (default), or the `s3` storage
/// plugin against the S3-compatible server at `SECCOLLAB_TEST_S3_ENDPOINT` when
/// `SECCOLLAB_TEST_STORAGE=s3` (`./tests/run` runs the files suite both ways, with `moto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StorageMode {
    Local,
    S3,
}

pub fn storage_mode() -> StorageMode {
    match std::env::var("SECCOLLAB_TEST_STORAGE").as_deref() {
        Ok("s3") => StorageMode::S3,
        Ok("local") | Err(_) => StorageMode::Local,
        Ok(other) => panic!("SECCOLLAB_TEST_STORAGE={other}: expected `local` or `s3`"),
    }
}

pub const S3_BUCKET: &str = "seccollab-test";

/// The S3-compatible server of an S3 run; the bucket is created on first use.
pub fn s3_endpoint() -> String {
    static READY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    READY
        .get_or_init(|| {
            let ep = std::env::var("SECCOLLAB_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
                panic!("SECCOLLAB_TEST_STORAGE=s3 needs SECCOLLAB_TEST_S3_ENDPOINT (./tests/run starts moto_server)")
            });
            let r = s3_request("PUT", &format!("{ep}/{S3_BUCKET}"), None);
            assert!(
                r.0 == 200 || r.0 == 409,
                "cannot create the test bucket: {} {}",
                r.0,
                String::from_utf8_lossy(&r.1)
            );
            ep
        })
        .clone()
}

/// A raw S3 request, as an operator's tool (or an attacker with bucket access) would make it.
/// moto checks that a request carries credentials, not the signature.
pub fn s3_request(method: &str, url: &str, body: Option<&[u8]>) -> (u16, Vec<u8>) {
    let req = ureq::request(method, url)
        .set(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
        )
        .set("Content-Type", "application/octet-stream")
        .timeout(Duration::from_secs(60));
    let res = match body {
        Some(b) => req.send_bytes(b),
        None => req.call(),
    };
    let r = match res {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let status = r.status();
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut r.into_reader(), &mut out).expect("read S3 body");
    (status, out)
}

/// Every `<tag>...</tag>` value in an S3 XML answer.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open).skip(1).filter_map(|p| p.split_once(&close).map(|(v, _)| v.to_string())).collect()
}

/// The stored objects of one installation, whichever backend holds them: what the tests look
/// at and tamper with.
#[derive(Debug)]
pub enum Objects {
    Local(PathBuf),
    S3 { endpoint: String, prefix: String },
}

impl Objects {
    fn url(&self, key: &str) -> String {
        match self {
            Objects::S3 { endpoint, prefix } => format!("{endpoint}/{S3_BUCKET}/{prefix}/{key}"),
            Objects::Local(_) => unreachable!(),
        }
    }

    /// The configuration file that selects the `s3` plugin (S3 runs only).
    fn s3_config(&self, dir: &Path) -> Option<PathBuf> {
        let Objects::S3 { endpoint, prefix } = self else { return None };
        use std::os::unix::fs::PermissionsExt;
        let plugins = dir.join("plugins");
        let lib = plugins.join("libseccollab_s3.so");
        if !lib.exists() {
            let src = Path::new(BIN).parent().unwrap().join("libseccollab_s3.so");
            assert!(src.exists(), "{} missing: `cargo build -p seccollab-s3` first (./tests/run does)", src.display());
            std::fs::create_dir_all(&plugins).unwrap();
            std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::copy(&src, &lib).unwrap();
            std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        let cfg = dir.join("seccollab-s3.toml");
        std::fs::write(
            &cfg,
            format!(
                "[storage]\nbackend = \"s3\"\n\n[plugins]\ndir = \"{}\"\n\n[plugins.enabled.s3.settings]\n\
                 url = \"s3://{S3_BUCKET}/{prefix}\"\nfrom_env = false\npart_size_mib = 5\n\
                 options = {{ endpoint = \"{endpoint}\", region = \"us-east-1\", access_key_id = \"test\", \
                 secret_access_key = \"test\", allow_http = \"true\" }}\n",
                plugins.display()
            ),
        )
        .unwrap();
        Some(cfg)
    }

    /// Keys of the committed objects.
    pub fn keys(&self) -> Vec<String> {
        match self {
            Objects::Local(root) => {
                let mut keys = Vec::new();
                for d in std::fs::read_dir(root).unwrap().flatten() {
                    if d.path().is_dir() && d.file_name() != "tmp" {
                        keys.extend(
                            std::fs::read_dir(d.path())
                                .unwrap()
                                .flatten()
                                .map(|e| e.file_name().to_string_lossy().into_owned()),
                        );
                    }
                }
                keys
            }
            Objects::S3 { endpoint, prefix } => {
                let (st, body) =
                    s3_request("GET", &format!("{endpoint}/{S3_BUCKET}?list-type=2&prefix={prefix}/"), None);
                assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
                xml_values(&String::from_utf8_lossy(&body), "Key")
                    .into_iter()
                    .map(|k| k.rsplit('/').next().unwrap().to_string())
                    .collect()
            }
        }
    }

    /// Writes that have started and not finished: temporary files of the local store, multipart
    /// uploads in progress on S3.
    pub fn partials(&self) -> usize {
        match self {
            Objects::Local(root) => std::fs::read_dir(root.join("tmp")).map(|d| d.count()).unwrap_or(0),
            Objects::S3 { endpoint, prefix } => {
                let (st, body) = s3_request("GET", &format!("{endpoint}/{S3_BUCKET}?uploads&prefix={prefix}/"), None);
                assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
                xml_values(&String::from_utf8_lossy(&body), "UploadId").len()
            }
        }
    }

    pub fn read(&self, key: &str) -> Vec<u8> {
        match self {
            Objects::Local(root) => std::fs::read(root.join(&key[..2]).join(key)).unwrap(),
            Objects::S3 { .. } => {
                let (st, body) = s3_request("GET", &self.url(key), None);
                assert_eq!(st, 200, "object {key}: {}", String::from_utf8_lossy(&body));
                body
            }
        }
    }

    pub fn write(&self, key: &str, data: &[u8]) {
        match self {
            Objects::Local(root) => std::fs::write(root.join(&key[..2]).join(key), data).unwrap(),
            Objects::S3 { .. } => {
                let (st, body) = s3_request("PUT", &self.url(key), Some(data));
                assert_eq!(st, 200, "object {key}: {}", String::from_utf8_lossy(&body));
            }
        }
    }

    /// The S3 ETag (`<md5>-<parts>` for an object stored by a multipart upload) and size.
    pub fn etag_and_size(&self, key: &str) -> (String, u64) {
        let r = ureq::head(&self.url(key))
            .set(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0",
            )
            .call()
            .expect("HEAD object");
        let etag = r.header("etag").unwrap_or_default().trim_matches('"').to_string();
        (etag, r.header("content-length").and_then(|l| l.parse().ok()).unwrap_or(0))
    }
}
