//! Security monitoring over the real API: each anomaly rule fires on its scenario, once per
//! de-duplication window, and not on normal traffic; alerts reach admins live; audit entries and
//! alerts are forwarded to a SIEM collector (a test TCP/UDP listener) with no gap across a
//! restart.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::auth::{admin_token, admin_with_codes, get, login, login_with_code, post, PASSWORD};
use crate::both_backends;
use crate::harness::{policy_dir_with, Backend, Server, TestDb};
use crate::realtime::{user, Ws};

const POLICY: &str = r#"
[lockout]
max_failures = 50
ip_free_failures = 100

[anomaly]
poll_secs = 1
dedup_secs = 3600

[anomaly.credential_stuffing]
enabled = true
window_secs = 600
threshold = 4

[anomaly.exfiltration]
enabled = true
window_secs = 600
threshold = 5

[anomaly.mass_sharing]
enabled = true
window_secs = 600
threshold = 3

[anomaly.admin_new_location]
enabled = true
lookback_days = 90

[anomaly.refresh_token_reuse]
enabled = true
"#;

/// Open alerts of `kind`.
fn alerts(srv: &Server, admin: &str, kind: &str) -> Vec<Value> {
    let a = get(srv, "/api/admin/alerts?limit=200", admin).json();
    a["alerts"].as_array().unwrap().iter().filter(|x| x["kind"] == kind).cloned().collect()
}

/// Waits until exactly one alert of `kind` exists (the rules run every second).
fn one_alert(srv: &Server, admin: &str, kind: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let a = alerts(srv, admin, kind);
        assert!(a.len() <= 1, "{kind} raised more than once: {a:?}");
        if let Some(x) = a.first() {
            return x.clone();
        }
        assert!(Instant::now() < deadline, "no {kind} alert within 15 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Lets the rules run over everything so far (two polls).
fn settle() {
    std::thread::sleep(Duration::from_millis(2500));
}

fn anomaly_kinds(srv: &Server, admin: &str) -> Vec<String> {
    let a = get(srv, "/api/admin/alerts?limit=200", admin).json();
    a["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["kind"].as_str().unwrap().to_string())
        .filter(|k| k != "malware_detected" && k != "integrity_compromised")
        .collect()
}

both_backends!(anomaly_rules_fire_once_per_window_and_not_on_normal_traffic, |b: Backend| {
    let policy = policy_dir_with(POLICY);
    // SMTP points at a closed port: alert e-mails are queued in the outbox (delivery retried).
    let srv = Server::start_with(
        TestDb::new(b),
        &[
            ("SECCOLLAB_AUTH__REGISTRATION", "open"),
            ("SECCOLLAB_SECURITY__POLICY_DIR", policy.path().to_str().unwrap()),
            ("SECCOLLAB_SMTP__HOST", "127.0.0.1"),
            ("SECCOLLAB_SMTP__PORT", "9"),
        ],
    );
    let (admin, mut codes) = admin_with_codes(&srv, "root@example.org");
    let root = srv.db.sql("SELECT id FROM users WHERE email = 'root@example.org'");
    let mut live = Ws::connect(&srv, &admin);
    let (ann, bob, cat, dan) = (
        user(&srv, "ann@example.org"),
        user(&srv, "bob@example.org"),
        user(&srv, "cat@example.org"),
        user(&srv, "dan@example.org"),
    );

    // Normal traffic: a mistyped password, a few downloads, a share, sign-ins as usual.
    login(&srv, "ann@example.org", "a wrong password here");
    let file = crate::files::upload(&srv, &ann.token, "report.txt", b"quarterly numbers")["file_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(crate::files::scanned(&srv, &ann.token, &file), "clean");
    for _ in 0..3 {
        assert_eq!(crate::files::download(&srv, &ann.token, &file, None).status, 200);
    }
    let share = |to: &str| {
        let r = post(
            &srv,
            "/api/files/share",
            Some(&ann.token),
            json!({"file_id": file, "user_ids": [to], "permissions": "view"}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    };
    share(&bob.id);
    assert_eq!(login_with_code(&srv, "root@example.org", &codes.remove(0)).status, 200);
    settle();
    assert!(anomaly_kinds(&srv, &admin).is_empty(), "normal traffic raised {:?}", anomaly_kinds(&srv, &admin));

    // Credential stuffing: failures for several accounts from one IP.
    for who in ["x1@example.org", "x2@example.org", "bob@example.org"] {
        login(&srv, who, "Password123!");
    }
    let a = one_alert(&srv, &admin, "credential_stuffing");
    assert_eq!(a["subject_type"], "ip");
    assert_eq!(a["subject_id"], "127.0.0.1");
    assert_eq!(a["severity"], "high");
    let evidence = a["details"]["evidence"].as_array().unwrap().clone();
    assert!(evidence.len() >= 4, "{a}");
    for id in &evidence {
        let action = srv.db.sql(&format!("SELECT action FROM audit_log WHERE id = '{}'", id.as_str().unwrap()));
        assert_eq!(action, "auth.login", "evidence names the failed sign-ins");
    }
    let f = live.expect("security_alert", Duration::from_secs(10));
    assert_eq!(f["data"]["kind"], "credential_stuffing", "admins get the alert live: {f}");
    let outbox = get(&srv, "/api/admin/email/outbox?limit=100", &admin).json();
    let mails: Vec<&Value> =
        outbox["messages"].as_array().unwrap().iter().filter(|m| m["kind"] == "security_alert").collect();
    assert_eq!(mails.len(), 1, "one e-mail to the one admin: {outbox}");
    assert_eq!(mails[0]["to"], "root@example.org");
    assert!(mails[0]["subject"].as_str().unwrap().contains("credential_stuffing"), "{outbox}");
    for who in ["x3@example.org", "x4@example.org", "x5@example.org"] {
        login(&srv, who, "Password123!");
    }
    settle();
    assert_eq!(alerts(&srv, &admin, "credential_stuffing").len(), 1, "once per window");

    // Exfiltration: a burst of downloads by one user.
    crate::files::download(&srv, &ann.token, &file, None);
    crate::files::download(&srv, &ann.token, &file, None);
    let a = one_alert(&srv, &admin, "exfiltration");
    assert_eq!((a["subject_type"].as_str(), a["subject_id"].as_str()), (Some("user"), Some(ann.id.as_str())));
    for _ in 0..6 {
        crate::files::download(&srv, &ann.token, &file, None);
    }
    settle();
    assert_eq!(alerts(&srv, &admin, "exfiltration").len(), 1);

    // Mass sharing.
    share(&cat.id);
    share(&dan.id);
    let a = one_alert(&srv, &admin, "mass_sharing");
    assert_eq!(a["subject_id"], ann.id.as_str());

    // An admin signing in from a new user agent (the same one as before raises nothing).
    assert_eq!(login_with_code(&srv, "root@example.org", &codes.remove(0)).status, 200);
    settle();
    assert!(alerts(&srv, &admin, "admin_new_location").is_empty(), "a known place is not an anomaly");
    let evil = [("Content-Type", "application/json"), ("User-Agent", "EvilBrowser/9.0")];
    let step1 = srv.request(
        "POST",
        "/api/auth/login",
        &evil,
        Some(json!({"email": "root@example.org", "password": PASSWORD}).to_string().as_bytes()),
    );
    assert_eq!(step1.status, 200);
    let r = srv.request(
        "POST",
        "/api/auth/verify-mfa",
        &evil,
        Some(json!({"mfa_token": step1.json()["mfa_token"], "totp_code": codes.remove(0)}).to_string().as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let a = one_alert(&srv, &admin, "admin_new_location");
    assert_eq!(a["subject_id"], root.as_str());
    assert!(a["details"]["summary"].as_str().unwrap().contains("EvilBrowser/9.0"), "{a}");

    // Refresh-token reuse.
    let t = login(&srv, "dan@example.org", PASSWORD).json();
    let first = t["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(post(&srv, "/api/auth/refresh", None, json!({"refresh_token": first})).status, 200);
    assert_eq!(post(&srv, "/api/auth/refresh", None, json!({"refresh_token": first})).status, 401);
    let a = one_alert(&srv, &admin, "refresh_token_reuse");
    assert_eq!(a["subject_id"], dan.id.as_str());
});

/// A syslog collector over TCP: octet-counted frames (RFC 6587), every connection accepted.
struct Collector {
    port: u16,
    messages: Arc<Mutex<Vec<String>>>,
}

impl Collector {
    fn tcp() -> Self {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let m = messages.clone();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let m = m.clone();
                std::thread::spawn(move || {
                    let mut r = std::io::BufReader::new(s);
                    loop {
                        let mut len = Vec::new();
                        let mut byte = [0u8; 1];
                        loop {
                            if r.read(&mut byte).unwrap_or(0) == 0 {
                                return;
                            }
                            if byte[0] == b' ' {
                                break;
                            }
                            len.push(byte[0]);
                        }
                        let n: usize = String::from_utf8_lossy(&len).parse().expect("octet count");
                        let mut msg = vec![0u8; n];
                        if r.read_exact(&mut msg).is_err() {
                            return;
                        }
                        m.lock().unwrap().push(String::from_utf8(msg).unwrap());
                    }
                });
            }
        });
        Self { port, messages }
    }

    fn seqs(&self) -> Vec<i64> {
        self.messages
            .lock()
            .unwrap()
            .iter()
            .filter_map(|m| m.split(" seq=\"").nth(1).and_then(|r| r.split('"').next()).and_then(|s| s.parse().ok()))
            .collect()
    }

    /// Waits until the collector has every entry up to the database's newest one.
    fn caught_up(&self, srv: &Server) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let max: i64 = srv.db.sql("SELECT max(seq) FROM audit_log").parse().unwrap();
            if self.seqs().iter().any(|s| *s >= max) {
                return;
            }
            assert!(Instant::now() < deadline, "the collector never got entry {max}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn siem_forwarding_survives_a_restart_without_gaps() {
    let c = Collector::tcp();
    let target = format!("tcp://127.0.0.1:{}", c.port);
    let env = [("SECCOLLAB_AUTH__REGISTRATION", "open"), ("SECCOLLAB_SIEM__TARGET", target.as_str())];
    let mut srv = Server::start_with(TestDb::new(Backend::Sqlite), &env);
    let admin = admin_token(&srv);
    for i in 0..5 {
        user(&srv, &format!("s{i}@example.org"));
    }
    c.caught_up(&srv);
    assert_eq!(srv.stop(), 0);
    // While the server is down, nothing is written; after the restart it continues.
    let db = srv.take_db();
    let srv = Server::start_with(db, &env);
    let ann = user(&srv, "ann@example.org");
    let id = crate::files::upload(&srv, &ann.token, "eicar.txt", crate::files::EICAR.as_bytes())["file_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(crate::files::scanned(&srv, &ann.token, &id), "quarantined");
    login(&srv, "root@example.org", PASSWORD);
    let _ = admin;
    c.caught_up(&srv);
    let max: i64 = srv.db.sql("SELECT max(seq) FROM audit_log").parse().unwrap();
    let mut seqs = c.seqs();
    let total = seqs.len();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs, (1..=max).collect::<Vec<_>>(), "every audit entry, none skipped");
    eprintln!("{max} entries forwarded, {} resent after the restart", total - seqs.len());
    // The syslog shape, and the alert.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let msgs = c.messages.lock().unwrap().clone();
        if let Some(alert) = msgs.iter().find(|m| m.contains("type=\"alert\"")) {
            assert!(alert.contains("kind=\"malware_detected\""), "{alert}");
            assert!(alert.starts_with("<"), "{alert}");
            break;
        }
        assert!(Instant::now() < deadline, "the malware alert was not forwarded");
        std::thread::sleep(Duration::from_millis(200));
    }
    let msgs = c.messages.lock().unwrap().clone();
    let login_line = msgs.iter().find(|m| m.contains(" auth.login [")).expect("a sign-in was forwarded");
    assert!(login_line.starts_with("<110>1 ") || login_line.starts_with("<108>1 "), "{login_line}");
    assert!(login_line.contains("[seccollab@32473 type=\"audit\" seq=\""), "{login_line}");
    // The head anchored at the first stop went to the collector too (a copy of the chain's
    // head outside the server): its seq and hash are the log's.
    let anchor = msgs.iter().find(|m| m.contains(" audit_anchor [")).expect("the anchored head was forwarded");
    let field =
        |k: &str| anchor.split(&format!(" {k}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap().to_string();
    let hash = srv.db.sql(&format!("SELECT hash FROM audit_log WHERE seq = {}", field("seq")));
    assert_eq!(field("hash"), hash, "{anchor}");
    assert_eq!(field("mac").len(), 64, "{anchor}");
}

#[test]
fn siem_json_lines_over_udp() {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let target = format!("udp://{}", sock.local_addr().unwrap());
    let srv = Server::start_with(
        TestDb::new(Backend::Sqlite),
        &[
            ("SECCOLLAB_AUTH__REGISTRATION", "open"),
            ("SECCOLLAB_SIEM__TARGET", &target),
            ("SECCOLLAB_SIEM__FORMAT", "jsonl"),
        ],
    );
    user(&srv, "udp@example.org");
    let mut buf = vec![0u8; 65_536];
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = sock.recv(&mut buf).expect("a datagram");
        let v: Value = serde_json::from_slice(&buf[..n]).expect("one JSON object per datagram");
        assert!(Instant::now() < deadline, "no auth.login forwarded");
        // The anchored audit head travels on the same stream whenever an anchor is written.
        if v["type"] == "anchor" {
            assert!(v["seq"].as_i64().is_some() && v["hash"].is_string() && v["mac"].is_string(), "{v}");
            continue;
        }
        assert_eq!(v["type"], "audit", "{v}");
        assert!(v["seq"].as_i64().is_some() && v["id"].is_string(), "{v}");
        if v["action"] == "auth.login" {
            assert_eq!(v["outcome"], "success");
            break;
        }
    }
}
