//! Plugins loaded by the real server from real shared libraries: a scanner written in C
//! (compiled here with `cc`), the shipped `webhook` and `clamav` plugins against a real HTTP
//! receiver and a real `clamd`, and libraries that must be refused or contained.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde_json::Value;

use crate::auth::{admin_token, get, open_server_env, user_token};
use crate::files::{scanned, upload, EICAR};
use crate::harness::{repo_root, run_cli, Backend, Server, BIN};

fn effective_uid() -> u32 {
    // The test's own user id, from /proc (no libc binding needed here).
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}

/// A plugin folder with the right modes (0755 folder, 0644 files).
struct PluginDir {
    dir: tempfile::TempDir,
}

impl PluginDir {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Compiles `tests/plugins/c_scanner.c` with `defines` into `file`.
    fn cc(&self, file: &str, defines: &[&str]) -> PathBuf {
        let out = self.path().join(file);
        let st = Command::new("cc")
            .args(["-D_GNU_SOURCE", "-shared", "-fPIC", "-O2", "-Wall", "-Werror"])
            .arg("-I")
            .arg(repo_root().join("plugins/api/include"))
            .args(defines)
            .arg(repo_root().join("tests/plugins/c_scanner.c"))
            .arg("-o")
            .arg(&out)
            .status()
            .expect("cc must be installed");
        assert!(st.success(), "cc failed");
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
        out
    }

    /// Copies a plugin built by cargo (`./tests/run` builds them before the suites).
    fn cargo_lib(&self, crate_lib: &str, file: &str) -> PathBuf {
        let src = Path::new(BIN).parent().unwrap().join(format!("lib{crate_lib}.so"));
        assert!(
            src.exists(),
            "{} missing: build the plugins first (`cargo build -p seccollab-webhook -p seccollab-clamav -p seccollab-test-panicky`, as ./tests/run does)",
            src.display()
        );
        let out = self.path().join(file);
        std::fs::copy(&src, &out).unwrap();
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o644)).unwrap();
        out
    }

    /// A config file enabling `plugins` (TOML tables after `[plugins]`); the breaker opens
    /// after two consecutive failures.
    fn config(&self, extra: &str) -> PathBuf {
        self.config_with(2, extra)
    }

    fn config_with(&self, breaker_failures: u32, extra: &str) -> PathBuf {
        let p = self.path().join("seccollab.toml");
        let text = format!(
            "[plugins]\ndir = \"{}\"\ncall_timeout_secs = 10\nbreaker_failures = {breaker_failures}\nbreaker_cooldown_secs = 60\n{extra}",
            self.path().display()
        );
        std::fs::write(&p, text).unwrap();
        p
    }
}

fn start(b: Backend, config: &Path) -> Server {
    open_server_env(b, &[("SECCOLLAB_CONFIG", &config.display().to_string())])
}

fn plugins(srv: &Server, admin: &str) -> Vec<Value> {
    let r = get(srv, "/api/admin/plugins", admin);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["plugins"].as_array().unwrap().clone()
}

fn plugin(srv: &Server, admin: &str, name: &str) -> Value {
    plugins(srv, admin).into_iter().find(|p| p["name"] == name).unwrap_or_else(|| panic!("{name} not listed"))
}

fn scan_matches(srv: &Server, admin: &str, id: &str) -> Value {
    let r = crate::auth::post(srv, &format!("/api/audit/security-scan/{id}"), Some(admin), serde_json::json!({}));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn a_scanner_written_in_c_joins_the_chain() {
    let d = PluginDir::new();
    d.cc("libcscan.so", &[]);
    let cfg =
        d.config("[plugins.enabled.cscan]\nfile = \"libcscan.so\"\nsettings = { marker = \"ZEBRA-CROSSING-42\" }\n");
    let srv = start(Backend::Sqlite, &cfg);
    let admin = admin_token(&srv);
    let t = user_token(&srv, "cee@example.org");
    let tok = t["token"].as_str().unwrap();

    let p = plugin(&srv, &admin, "cscan");
    assert_eq!(p["kind"], "scanner", "{p}");
    assert_eq!(p["version"], "1.0.0");
    assert_eq!(p["abi_version"], "1.1");
    assert_eq!(p["builtin"], false);
    assert_eq!(p["health"], "ok", "{p}");
    assert_eq!(p["sha256"].as_str().unwrap().len(), 64);
    let builtins: Vec<String> = plugins(&srv, &admin)
        .iter()
        .filter(|p| p["builtin"] == true)
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(builtins, ["local", "yara-x", "email", "in_app"]);

    let bad = upload(&srv, tok, "notes.txt", b"plain words, then ZEBRA-CROSSING-42, then more")["file_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(scanned(&srv, tok, &bad), "quarantined");
    let r = scan_matches(&srv, &admin, &bad);
    let rules: Vec<&str> = r["matches"].as_array().unwrap().iter().map(|m| m["rule"].as_str().unwrap()).collect();
    assert!(rules.contains(&"c_marker"), "{r}");
    let good = upload(&srv, tok, "fine.txt", b"nothing to see")["file_id"].as_str().unwrap().to_string();
    assert_eq!(scanned(&srv, tok, &good), "clean");
    // YARA-X still runs first: EICAR is caught by the built-in rules with the plugin present.
    let e = upload(&srv, tok, "e.txt", EICAR.as_bytes())["file_id"].as_str().unwrap().to_string();
    assert_eq!(scanned(&srv, tok, &e), "quarantined");
    let p = plugin(&srv, &admin, "cscan");
    assert!(p["calls"].as_u64().unwrap() >= 4, "{p}");
    assert_eq!(p["failures"], 0);

    // A non-admin is refused.
    assert_eq!(get(&srv, "/api/admin/plugins", tok).status, 403);
    // The CLI sees the same library and reports what an operator pins.
    let (code, out, err) =
        run_cli(&srv.db.env(), &["plugins", "check", &d.path().join("libcscan.so").display().to_string()], None);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["name"], "cscan");
    assert_eq!(v["kind"], "scanner");
    assert_eq!(v["sha256"], p["sha256"]);
}

#[test]
fn unusable_libraries_are_refused_with_the_reason_and_the_server_runs_on() {
    let d = PluginDir::new();
    d.cc("libwrongabi.so", &["-DABI_MAJOR_OVERRIDE=2"]);
    d.cc("libnoentry.so", &["-DNO_ENTRY"]);
    let ww = d.cc("libwritable.so", &[]);
    std::fs::set_permissions(&ww, std::fs::Permissions::from_mode(0o666)).unwrap();
    d.cc("libpinned.so", &[]);
    d.cc("libbadinit.so", &["-DPLUGIN_NAME=\"badinit\""]);
    d.cc("libcscan.so", &[]);
    std::fs::write(d.path().join("libtext.so"), "not a library").unwrap();
    std::fs::set_permissions(d.path().join("libtext.so"), std::fs::Permissions::from_mode(0o644)).unwrap();
    d.cargo_lib("seccollab_test_panicky", "libpanicinit.so");
    // A library in a folder others may write to: they could swap it.
    let open_dir = d.path().join("open");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::copy(d.path().join("libcscan.so"), open_dir.join("libopendir.so")).unwrap();
    // A library another user owns (only root can make one here; otherwise the folder rule
    // alone is checked).
    let as_root = effective_uid() == 0;
    if as_root {
        std::fs::copy(d.path().join("libcscan.so"), d.path().join("libforeign.so")).unwrap();
        std::os::unix::fs::chown(d.path().join("libforeign.so"), Some(65534), Some(65534)).unwrap();
    }
    let cfg = d.config(&format!(
        "[plugins.enabled.wrongabi]\nfile = \"libwrongabi.so\"\n\
         [plugins.enabled.noentry]\nfile = \"libnoentry.so\"\n\
         [plugins.enabled.writable]\nfile = \"libwritable.so\"\n\
         [plugins.enabled.pinned]\nfile = \"libpinned.so\"\nsha256 = \"{}\"\n\
         [plugins.enabled.badinit]\nfile = \"libbadinit.so\"\nsettings = {{ marker = \"\" }}\n\
         [plugins.enabled.text]\nfile = \"libtext.so\"\n\
         [plugins.enabled.missing]\nfile = \"libmissing.so\"\n\
         [plugins.enabled.renamed]\nfile = \"libcscan.so\"\n\
         [plugins.enabled.cscan]\nfile = \"libcscan.so\"\n\
         [plugins.enabled.panicky]\nfile = \"libpanicinit.so\"\nsettings = {{ panic_in_init = true }}\n\
         [plugins.enabled.opendir]\nfile = \"open/libopendir.so\"\nplugin = \"cscan\"\n\
         [plugins.enabled.foreign]\nfile = \"libforeign.so\"\nplugin = \"cscan\"\n",
        "0".repeat(64)
    ));
    let srv = start(Backend::Sqlite, &cfg);
    let admin = admin_token(&srv);
    let expect = [
        ("wrongabi", "ABI 2.x"),
        ("noentry", "seccollab_plugin_entry"),
        ("writable", "writable by group or others"),
        ("pinned", "not the pinned"),
        ("badinit", "marker must be a non-empty string"),
        ("text", "cannot load the library"),
        ("missing", "No such file"),
        ("renamed", "declares itself `cscan`, not `renamed`"),
        ("panicky", "init failed: plugin panicked: panicking in init"),
        ("opendir", "open is writable by group or others"),
        ("foreign", if as_root { "belongs to user id 65534" } else { "No such file" }),
    ];
    for (name, why) in expect {
        let p = plugin(&srv, &admin, name);
        assert_eq!(p["health"], "failed", "{p}");
        assert!(p["error"].as_str().unwrap_or_default().contains(why), "{name}: {p}");
    }
    // The same library under the right name and settings loads beside the refused ones.
    let p = plugin(&srv, &admin, "cscan");
    assert_eq!(p["health"], "ok", "{p}");
    // The server works: uploads are scanned (by YARA-X and cscan).
    let t = user_token(&srv, "dee@example.org");
    let tok = t["token"].as_str().unwrap();
    let id = upload(&srv, tok, "ok.txt", b"hello")["file_id"].as_str().unwrap().to_string();
    assert_eq!(scanned(&srv, tok, &id), "clean");
    // `plugins list` loads them as serve does and exits 1 because some failed.
    let mut env = srv.db.env();
    env.push(("SECCOLLAB_CONFIG".into(), cfg.display().to_string()));
    let (code, out, _) = run_cli(&env, &["plugins", "list"], None);
    assert_eq!(code, 1);
    assert!(out.lines().any(|l| l.contains("\"wrongabi\"") && l.contains("ABI 2.x")), "{out}");
    let (code, _, err) = run_cli(&env, &["plugins", "check", &ww.display().to_string()], None);
    assert_ne!(code, 0);
    assert!(err.contains("chmod go-w"), "{err}");
}

#[test]
fn a_panicking_or_garbage_plugin_cannot_take_the_server_down() {
    for (name, lib, why) in [
        ("panicky", None, "plugin panicked: this scanner always panics"),
        ("cscan", Some("-DGARBAGE"), "unknown status code 77"),
    ] {
        let d = PluginDir::new();
        match lib {
            Some(def) => {
                d.cc("libcscan.so", &[def]);
            }
            None => {
                d.cargo_lib("seccollab_test_panicky", "libseccollab_panicky.so");
            }
        }
        let file = if lib.is_some() { "libcscan.so" } else { "libseccollab_panicky.so" };
        let cfg = d.config(&format!("[plugins.enabled.{name}]\nfile = \"{file}\"\n"));
        let srv = start(Backend::Sqlite, &cfg);
        let admin = admin_token(&srv);
        let t = user_token(&srv, "eve@example.org");
        let tok = t["token"].as_str().unwrap();
        for n in 0..3 {
            let id = upload(&srv, tok, &format!("f{n}.txt"), b"data")["file_id"].as_str().unwrap().to_string();
            // Fail closed: a file the chain could not judge is not served.
            assert_eq!(scanned(&srv, tok, &id), "error", "{name}");
            assert_eq!(crate::files::download(&srv, tok, &id, None).status, 423);
        }
        assert_eq!(srv.get("/api/health").status, 200, "{name}: server must survive");
        let p = plugin(&srv, &admin, name);
        // breaker_failures = 2: paused after the second failure, the third call failed fast.
        assert_eq!(p["health"], "paused", "{p}");
        assert_eq!(p["failures"], 2, "{p}");
        assert!(p["error"].as_str().unwrap().contains(why), "{p}");
    }
}

/// One request as received: lower-cased headers and the body.
type Request = (Vec<(String, String)>, Vec<u8>);

/// A webhook receiver: answers 500 to the first `fail_first` requests, then 204.
struct Receiver {
    port: u16,
    got: Arc<Mutex<Vec<Request>>>,
}

impl Receiver {
    fn start(fail_first: usize) -> Self {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        std::thread::spawn(move || {
            for (n, s) in l.incoming().enumerate() {
                let Ok(mut s) = s else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut headers = Vec::new();
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                loop {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                    let l = line.trim_end();
                    if l.is_empty() {
                        break;
                    }
                    let (k, v) = l.split_once(':').unwrap();
                    headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
                let len: usize =
                    headers.iter().find(|(k, _)| k == "content-length").map(|(_, v)| v.parse().unwrap()).unwrap_or(0);
                let mut body = vec![0; len];
                r.read_exact(&mut body).unwrap();
                let status = if n < fail_first { "500 Internal Server Error" } else { "204 No Content" };
                g.lock().unwrap().push((headers, body));
                let _ = write!(s, "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            }
        });
        Self { port, got }
    }
}

#[test]
fn webhook_delivers_signed_alerts_and_retries_after_errors() {
    let rx = Receiver::start(2);
    let d = PluginDir::new();
    d.cargo_lib("seccollab_webhook", "libseccollab_webhook.so");
    let secret = "s3cr3t-shared-with-the-receiver";
    let cfg = d.config_with(5, &format!(
        "[plugins.enabled.webhook]\nsettings = {{ url = \"http://127.0.0.1:{}/hook\", secret = \"{secret}\", kinds = [\"security_alert\"] }}\n",
        rx.port
    ));
    let srv = start(Backend::Sqlite, &cfg);
    let admin = admin_token(&srv);
    let t = user_token(&srv, "fay@example.org");
    let tok = t["token"].as_str().unwrap();
    let id = upload(&srv, tok, "eicar.txt", EICAR.as_bytes())["file_id"].as_str().unwrap().to_string();
    assert_eq!(scanned(&srv, tok, &id), "quarantined");
    // 500, 500, then delivered on the third attempt (back-off 1 s, 2 s).
    let deadline = Instant::now() + Duration::from_secs(30);
    while rx.got.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "webhook not retried to success: {} requests", rx.got.lock().unwrap().len());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let got = rx.got.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "no request after the success");
    let ids: Vec<String> =
        got.iter().map(|(h, _)| h.iter().find(|(k, _)| k == "x-seccollab-delivery").unwrap().1.clone()).collect();
    assert!(ids.iter().all(|i| *i == ids[0]), "one delivery id across retries: {ids:?}");
    for (h, body) in &got {
        let hv = |k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
        assert_eq!(hv("x-seccollab-event"), "security_alert");
        assert_eq!(hv("content-type"), "application/json");
        let ts = hv("x-seccollab-timestamp");
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(body);
        assert_eq!(hv("x-seccollab-signature"), format!("sha256={}", hex::encode(mac.finalize().into_bytes())));
        let v: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["kind"], "security_alert");
        assert!(v["subject"].as_str().unwrap().contains("malware_detected"), "{v}");
        assert!(v["text"].as_str().unwrap().contains(&id), "the alert names the file: {v}");
    }
    let alerts = get(&srv, "/api/admin/alerts", &admin).json();
    assert_eq!(alerts["alerts"][0]["id"].as_str().unwrap(), ids[0], "delivery id is the alert id");
    let p = plugin(&srv, &admin, "webhook");
    assert_eq!(p["kind"], "notifier");
    assert_eq!(p["health"], "ok", "{p}");
    assert_eq!(p["calls"], 3);
    assert_eq!(p["failures"], 2);
}

/// A real clamd on a socket in a temp folder, with a signature database written here (no
/// network, no official signatures).
struct Clamd {
    dir: tempfile::TempDir,
    child: std::process::Child,
}

const CLAM_MARK: &str = "SECCOLLAB-CLAMAV-TEST-SIGNATURE";

impl Clamd {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        std::fs::write(db.join("seccollab-test.ndb"), format!("SecCollab.Test.Sig:0:*:{}\n", hex::encode(CLAM_MARK)))
            .unwrap();
        let conf = dir.path().join("clamd.conf");
        std::fs::write(
            &conf,
            format!(
                "DatabaseDirectory {}\nLocalSocket {}\nForeground yes\nLogFile {}\nStreamMaxLength 10M\n",
                db.display(),
                dir.path().join("clamd.sock").display(),
                dir.path().join("clamd.log").display()
            ),
        )
        .unwrap();
        let clamd = ["/usr/sbin/clamd", "/usr/bin/clamd"].into_iter().find(|p| Path::new(p).exists());
        let clamd = clamd.expect("clamd must be installed (./tests/run installs clamav-daemon)");
        let child = Command::new(clamd)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start clamd");
        let sock = dir.path().join("clamd.sock");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::os::unix::net::UnixStream::connect(&sock).is_err() {
            assert!(Instant::now() < deadline, "clamd did not open its socket");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { dir, child }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("clamd.sock")
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(self.socket());
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn clamav_plugin_scans_with_a_real_clamd_after_yara() {
    let mut clamd = Clamd::start();
    let d = PluginDir::new();
    d.cargo_lib("seccollab_clamav", "libseccollab_clamav.so");
    let cfg =
        d.config(&format!("[plugins.enabled.clamav]\nsettings = {{ socket = \"{}\" }}\n", clamd.socket().display()));
    let srv = start(Backend::Postgres, &cfg);
    let admin = admin_token(&srv);
    let t = user_token(&srv, "gus@example.org");
    let tok = t["token"].as_str().unwrap();
    let bad = upload(&srv, tok, "report.txt", format!("quarterly figures {CLAM_MARK} end").as_bytes())["file_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(scanned(&srv, tok, &bad), "quarantined");
    let r = scan_matches(&srv, &admin, &bad);
    let m = r["matches"].as_array().unwrap();
    assert!(
        m.iter().any(|m| m["namespace"] == "clamav" && m["rule"].as_str().unwrap().starts_with("SecCollab.Test.Sig")),
        "{r}"
    );
    assert!(r["engine"].as_str().unwrap().contains("ClamAV"), "{r}");
    let good =
        upload(&srv, tok, "fine.txt", b"quarterly figures, nothing else")["file_id"].as_str().unwrap().to_string();
    assert_eq!(scanned(&srv, tok, &good), "clean");
    assert_eq!(plugin(&srv, &admin, "clamav")["health"], "ok");
    // clamd down: files are not passed unscanned.
    clamd.stop();
    let id = upload(&srv, tok, "later.txt", b"anything")["file_id"].as_str().unwrap().to_string();
    assert_eq!(scanned(&srv, tok, &id), "error");
    let p = plugin(&srv, &admin, "clamav");
    assert_eq!(p["health"], "degraded", "{p}");
    assert!(p["error"].as_str().unwrap().contains("cannot reach clamd"), "{p}");
}

#[test]
fn webhook_receives_user_notifications_once_stored() {
    let rx = Receiver::start(0);
    let d = PluginDir::new();
    d.cargo_lib("seccollab_webhook", "libseccollab_webhook.so");
    let cfg = d.config(&format!(
        "[plugins.enabled.webhook]\nsettings = {{ url = \"http://127.0.0.1:{}/hook\", secret = \"0123456789abcdef-shared\" }}\n",
        rx.port
    ));
    let srv = start(Backend::Postgres, &cfg);
    let owner = user_token(&srv, "own@example.org");
    let friend = user_token(&srv, "fri@example.org");
    let tok = owner["token"].as_str().unwrap();
    let id = upload(&srv, tok, "minutes.txt", b"the minutes")["file_id"].as_str().unwrap().to_string();
    assert_eq!(scanned(&srv, tok, &id), "clean");
    let fid = friend["user"]["id"].as_str().unwrap();
    let r = crate::auth::post(
        &srv,
        "/api/files/share",
        Some(tok),
        serde_json::json!({"file_id": id, "user_ids": [fid], "permissions": "view"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let got = rx.got.lock().unwrap().clone();
        if let Some((_, b)) =
            got.iter().find(|(h, _)| h.iter().any(|(k, v)| k == "x-seccollab-event" && v == "file_share"))
        {
            break serde_json::from_slice::<Value>(b).unwrap();
        }
        assert!(Instant::now() < deadline, "no file_share notification reached the webhook");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(body["user_id"].as_str(), Some(fid), "{body}");
    assert!(body["subject"].as_str().unwrap().contains("minutes.txt"), "{body}");
    // The same notification is what the friend sees in the app.
    let list = get(&srv, "/api/notifications", friend["token"].as_str().unwrap()).json();
    assert_eq!(list["notifications"][0]["id"], body["id"], "{list}");
}

/// `storage.backend` must name a storage plugin that loads: otherwise the server refuses to start
/// (with the reason) instead of falling back to local disk and splitting the objects between two
/// stores; a name that is not configured at all is a configuration error.
#[test]
fn a_storage_backend_that_cannot_load_stops_the_server() {
    let d = PluginDir::new();
    let db = crate::harness::TestDb::new(Backend::Sqlite);
    let mut env = db.env();
    // Not a configured plugin: `config check` names the key.
    env.push(("SECCOLLAB_STORAGE__BACKEND".into(), "nowhere".into()));
    let (code, _, err) = run_cli(&env, &["config", "check"], None);
    assert_ne!(code, 0);
    assert!(err.contains("storage.backend") && err.contains("nowhere"), "{err}");
    // Configured, but its library is missing: `serve` exits with the plugin's reason.
    let cfg =
        d.config("[plugins.enabled.s3]\nfile = \"libseccollab_s3_missing.so\"\nsettings = { url = \"s3://b/p\" }\n");
    let mut env = db.env();
    env.push(("SECCOLLAB_CONFIG".into(), cfg.display().to_string()));
    env.push(("SECCOLLAB_STORAGE__BACKEND".into(), "s3".into()));
    let (code, out, err) = run_cli(&env, &["serve"], None);
    assert_ne!(code, 0, "the server must not start: {out}");
    assert!(!out.contains("listening"), "{out}");
    assert!(err.contains("storage.backend `s3`: the plugin could not be loaded"), "{err}");
    assert!(err.contains("libseccollab_s3_missing.so"), "{err}");
    // A plugin of another kind is refused too.
    let cfg = d.config(&format!(
        "[plugins.enabled.hook]\nplugin = \"webhook\"\nfile = \"{}\"\nsettings = {{ url = \"http://127.0.0.1:9/x\", secret = \"0123456789abcdef0123\" }}\n",
        d.cargo_lib("seccollab_webhook", "libhook.so").display()
    ));
    let mut env = db.env();
    env.push(("SECCOLLAB_CONFIG".into(), cfg.display().to_string()));
    env.push(("SECCOLLAB_STORAGE__BACKEND".into(), "hook".into()));
    let (code, _, err) = run_cli(&env, &["serve"], None);
    assert_ne!(code, 0);
    assert!(err.contains("names a notifier plugin, not a storage plugin"), "{err}");
    assert!(!db.dir.path().join("data/objects").exists(), "no local store was created as a fallback");
}

/// A policy folder whose whole-file limit is 1 MiB, with `more` appended to `[scan]`.
fn small_scan_policy(more: &str) -> tempfile::TempDir {
    crate::harness::policy_dir_with(&format!("[scan]\nmax_bytes = 1048576\n{more}"))
}

/// 3 MiB of text with `mark` in the middle: over the whole-file limit.
fn big_with(mark: &str) -> Vec<u8> {
    let mut body = b"quarterly figures, line after line. ".repeat(3 * 1024 * 1024 / 36);
    let mid = body.len() / 2;
    body.splice(mid..mid, mark.bytes());
    body
}

#[test]
fn files_over_the_memory_limit_are_streamed_to_clamav() {
    let clamd = Clamd::start();
    let d = PluginDir::new();
    d.cargo_lib("seccollab_clamav", "libseccollab_clamav.so");
    let cfg =
        d.config(&format!("[plugins.enabled.clamav]\nsettings = {{ socket = \"{}\" }}\n", clamd.socket().display()));
    let policy = small_scan_policy("");
    let srv = open_server_env(
        Backend::Sqlite,
        &[
            ("SECCOLLAB_CONFIG", &cfg.display().to_string()),
            ("SECCOLLAB_SECURITY__POLICY_DIR", policy.path().to_str().unwrap()),
        ],
    );
    let admin = admin_token(&srv);
    let tok = user_token(&srv, "hal@example.org")["token"].as_str().unwrap().to_string();
    let bad = upload(&srv, &tok, "big.txt", &big_with(CLAM_MARK))["file_id"].as_str().unwrap().to_string();
    assert_eq!(scanned(&srv, &tok, &bad), "quarantined", "clamd saw the whole file");
    let r = scan_matches(&srv, &admin, &bad);
    assert!(r["matches"].as_array().unwrap().iter().any(|m| m["namespace"] == "clamav"), "{r}");
    let good = upload(&srv, &tok, "big-clean.txt", &big_with("nothing"))["file_id"].as_str().unwrap().to_string();
    assert_eq!(scanned(&srv, &tok, &good), "clean");
}

#[test]
fn a_scanner_that_cannot_see_a_large_file_holds_it_unless_told_otherwise() {
    let d = PluginDir::new();
    // The C scanner has no streamed scan (its 1.1 table fields are NULL).
    d.cc("libcscan.so", &[]);
    let cfg =
        d.config("[plugins.enabled.cscan]\nfile = \"libcscan.so\"\nsettings = { marker = \"ZEBRA-CROSSING-42\" }\n");
    for (more, expected) in [("", "error"), ("oversize = \"yara_only\"\n", "clean")] {
        let policy = small_scan_policy(more);
        let srv = open_server_env(
            Backend::Sqlite,
            &[
                ("SECCOLLAB_CONFIG", &cfg.display().to_string()),
                ("SECCOLLAB_SECURITY__POLICY_DIR", policy.path().to_str().unwrap()),
            ],
        );
        let tok = user_token(&srv, "ian@example.org")["token"].as_str().unwrap().to_string();
        let id = upload(&srv, &tok, "big.txt", &big_with("nothing"))["file_id"].as_str().unwrap().to_string();
        assert_eq!(scanned(&srv, &tok, &id), expected, "oversize policy {more:?}");
        let r = crate::files::download(&srv, &tok, &id, None);
        if expected == "error" {
            assert_eq!(r.status, 423, "a held file is not served");
            // An admin who checked it releases it (the API and the console share the act).
            let admin = admin_token(&srv);
            let path = format!("/api/admin/files/{id}/release");
            let r = crate::auth::post(&srv, &path, Some(&admin), serde_json::json!({}));
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.json()["file"]["scan_status"], "clean");
            assert_eq!(crate::files::download(&srv, &tok, &id, None).status, 200);
            crate::auth::post(&srv, &path, Some(&admin), serde_json::json!({})).assert_error(409, "not_held");
            crate::auth::post(&srv, &path, Some(&tok), serde_json::json!({})).assert_error(403, "forbidden");
            crate::harness::wait_until("the release in the audit log", 10, || {
                srv.db.sql(&format!(
                    "SELECT count(*) FROM audit_log WHERE action = 'admin.file_release' AND target_id = '{id}'"
                )) == "1"
            });
        } else {
            assert_eq!(r.status, 200);
        }
    }
}

#[test]
fn a_yara_scan_that_runs_out_of_time_holds_the_file() {
    // A rule quadratic in the file's size: far beyond a one-second limit on 200 kB.
    let policy = crate::harness::policy_dir_with("[scan]\ntimeout_secs = 1\n");
    std::fs::write(
        policy.path().join("yara/slow.yar"),
        "rule slow { condition: for any i in (0..filesize - 1) : ( for any j in (0..filesize - 1) : ( uint8(i) == 0xff and uint8(j) == 0xfe ) ) }\n",
    )
    .unwrap();
    let srv = open_server_env(Backend::Sqlite, &[("SECCOLLAB_SECURITY__POLICY_DIR", policy.path().to_str().unwrap())]);
    let tok = user_token(&srv, "jo@example.org")["token"].as_str().unwrap().to_string();
    let id = upload(&srv, &tok, "plain.txt", &vec![b'a'; 200_000])["file_id"].as_str().unwrap().to_string();
    assert_eq!(scanned(&srv, &tok, &id), "error");
    assert_eq!(crate::files::download(&srv, &tok, &id, None).status, 423);
    let why = srv.db.sql(&format!("SELECT details FROM audit_log WHERE action = 'file.scan' AND target_id = '{id}'"));
    assert!(why.contains("timed out"), "{why}");
}
