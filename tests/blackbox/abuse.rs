//! Abuse resistance over the real API: automatic responses to an alert (an address blocked
//! after credential stuffing, then expiring or lifted), the break-glass paths.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::auth::{admin_token, get, PASSWORD};
use crate::harness::{policy_dir_with, run_cli, wait_until, Backend, Server, TestDb};

const POLICY: &str = r#"
[lockout]
max_failures = 50
ip_free_failures = 100

[anomaly]
poll_secs = 1
dedup_secs = 1

[anomaly.credential_stuffing]
enabled = true
window_secs = 600
threshold = 3

[responses.credential_stuffing]
action = "block_ip"
duration_secs = 6

# Budgets would cut the polling below short; the floods test covers them.
[rate_limits]
enabled = false
"#;

/// A sign-in attempt as a client behind the trusted proxy at `ip`.
fn login_from(srv: &Server, ip: &str, email: &str, password: &str) -> crate::harness::Resp {
    let body = json!({"email": email, "password": password}).to_string();
    srv.request(
        "POST",
        "/api/auth/login",
        &[("Content-Type", "application/json"), ("X-Forwarded-For", ip)],
        Some(body.as_bytes()),
    )
}

/// A server with [`POLICY`] (credential stuffing → `block_ip`) behind the trusted proxy
/// 127.0.0.1, open registration. The policy folder lives as long as the server is used.
fn stuffing_server() -> (tempfile::TempDir, Server) {
    let policy = policy_dir_with(POLICY);
    let srv = Server::start_with(
        TestDb::new(Backend::Sqlite),
        &[
            ("SECCOLLAB_SECURITY__POLICY_DIR", policy.path().to_str().unwrap()),
            ("SECCOLLAB_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]"),
            ("SECCOLLAB_AUTH__REGISTRATION", "open"),
        ],
    );
    (policy, srv)
}

/// Failed sign-ins for three accounts from `ip` (the last one `real`), then waits until the
/// rule has fired and `ip` is blocked.
fn stuff_until_blocked(srv: &Server, ip: &str, real: &str) {
    for who in ["a@example.org", "b@example.org", real] {
        assert_eq!(login_from(srv, ip, who, "Password123!").status, 401);
    }
    wait_until("the block", 40, || login_from(srv, ip, real, PASSWORD).status == 403);
}

#[test]
fn credential_stuffing_blocks_that_address_only_until_it_expires_or_is_lifted() {
    let (_policy, srv) = stuffing_server();
    let admin = admin_token(&srv);
    crate::auth::register(&srv, "real@example.org");
    let attacker = "203.0.113.66";
    let bystander = "198.51.100.7";

    // Stuffing: failures for three accounts from one address; within a few seconds the rule
    // fires and the response blocks the address.
    stuff_until_blocked(&srv, attacker, "real@example.org");
    let r = login_from(&srv, attacker, "real@example.org", PASSWORD);
    r.assert_error(403, "ip_blocked");
    let retry: u64 = r.header("Retry-After").expect("Retry-After").parse().unwrap();
    assert!((1..=6).contains(&retry), "{retry}");
    // Every route, not only sign-in; even the right password.
    let h = srv.request("GET", "/api/health", &[("X-Forwarded-For", attacker)], None);
    assert_eq!(h.status, 403);
    // Anyone else is unaffected.
    assert_eq!(login_from(&srv, bystander, "real@example.org", PASSWORD).status, 200);

    // The response is audited and listed for admins, with the alert it answers.
    let blocks = get(&srv, "/api/admin/blocks", &admin).json();
    assert_eq!(blocks["blocks"][0]["ip"], attacker, "{blocks}");
    assert_eq!(blocks["blocks"][0]["active"], true);
    assert_eq!(blocks["blocks"][0]["reason"], "credential_stuffing");
    assert!(blocks["blocks"][0]["alert_id"].is_string());
    let n: i64 = srv.db.sql("SELECT count(*) FROM audit_log WHERE action = 'security.response'").parse().unwrap();
    assert_eq!(n, 1);

    // It expires on time.
    wait_until("the expiry", 30, || login_from(&srv, attacker, "real@example.org", PASSWORD).status == 200);

    // Again, from this address and from a second one: both blocked; one lifted by an admin
    // before it expires (the undo), the other from the command line (break-glass).
    let second = "203.0.113.99";
    for who in ["c@example.org", "d@example.org", "e@example.org"] {
        assert_eq!(login_from(&srv, attacker, who, "Password123!").status, 401);
        assert_eq!(login_from(&srv, second, who, "Password123!").status, 401);
    }
    wait_until("the second block", 40, || login_from(&srv, attacker, "real@example.org", PASSWORD).status == 403);
    wait_until("the block of the second address", 40, || {
        login_from(&srv, second, "real@example.org", PASSWORD).status == 403
    });
    let blocks = get(&srv, "/api/admin/blocks", &admin).json();
    let id = blocks["blocks"].as_array().unwrap().iter().find(|b| b["active"] == true && b["ip"] == attacker).unwrap()
        ["id"]
        .as_str()
        .unwrap()
        .to_string();
    let user_tok = crate::auth::login(&srv, "real@example.org", PASSWORD).json()["token"].as_str().unwrap().to_string();
    let r = srv.request(
        "DELETE",
        &format!("/api/admin/blocks/{id}"),
        &[("Authorization", &format!("Bearer {user_tok}"))],
        None,
    );
    r.assert_error(403, "forbidden");
    let r = srv.request(
        "DELETE",
        &format!("/api/admin/blocks/{id}"),
        &[("Authorization", &format!("Bearer {admin}"))],
        None,
    );
    assert_eq!(r.status, 204);
    assert_eq!(login_from(&srv, attacker, "real@example.org", PASSWORD).status, 200);
    assert_eq!(login_from(&srv, second, "real@example.org", PASSWORD).status, 403, "the other block stays");
    let r = srv.request(
        "DELETE",
        &format!("/api/admin/blocks/{id}"),
        &[("Authorization", &format!("Bearer {admin}"))],
        None,
    );
    r.assert_error(404, "block_not_found");
    assert_eq!(srv.db.sql("SELECT count(*) FROM audit_log WHERE action = 'security.ip_unblock'"), "1");

    let (code, out, err) = run_cli(&srv.db.env(), &["security", "unblock", "--ip", second], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("lifted 1 block"), "{out}");
    wait_until("the CLI lift", 30, || login_from(&srv, second, "real@example.org", PASSWORD).status == 200);

    // A lift forgives, it does not forget: more stuffing from the first address (its earlier
    // failures are still in the rule's window) blocks it again.
    let before: i64 = srv.db.sql("SELECT count(*) FROM ip_blocks").parse().unwrap();
    assert_eq!(login_from(&srv, attacker, "f@example.org", "Password123!").status, 401);
    wait_until("the third block", 40, || login_from(&srv, attacker, "real@example.org", PASSWORD).status == 403);
    let after: i64 = srv.db.sql("SELECT count(*) FROM ip_blocks").parse().unwrap();
    assert!(after > before, "{before} -> {after}");
}

#[test]
fn loopback_is_never_blocked_and_bad_response_policies_are_refused() {
    // Stuffing from the server itself (no proxy): alerted, never blocked (break-glass).
    let policy = policy_dir_with(POLICY);
    let srv = Server::start_with(
        TestDb::new(Backend::Sqlite),
        &[("SECCOLLAB_SECURITY__POLICY_DIR", policy.path().to_str().unwrap())],
    );
    let admin = admin_token(&srv);
    for who in ["a@example.org", "b@example.org", "c@example.org"] {
        assert_eq!(crate::auth::login(&srv, who, "Password123!").status, 401);
    }
    wait_until("the alert", 40, || {
        get(&srv, "/api/admin/alerts", &admin).json()["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "credential_stuffing")
    });
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(crate::auth::login(&srv, "root@example.org", PASSWORD).status, 200);
    assert_eq!(get(&srv, "/api/admin/blocks", &admin).json()["blocks"].as_array().unwrap().len(), 0);

    // A response that does not fit its rule: the server refuses to start, naming the key.
    let bad = policy_dir_with("[responses.exfiltration]\naction = \"block_ip\"\nduration_secs = 5\n");
    let db = TestDb::new(Backend::Sqlite);
    let mut env = db.env();
    env.push(("SECCOLLAB_SECURITY__POLICY_DIR".into(), bad.path().to_str().unwrap().into()));
    let (code, _, err) = run_cli(&env, &["serve"], None);
    assert_ne!(code, 0);
    assert!(err.contains("responses.exfiltration"), "{err}");
}

#[test]
fn quota_overruns_and_too_many_parallel_uploads_are_refused_with_nothing_stored() {
    let policy = policy_dir_with("[upload]\nquota_bytes_per_user = 100000\nmax_concurrent_per_user = 1\n");
    let srv = Server::start_with(
        TestDb::new(Backend::Sqlite),
        &[
            ("SECCOLLAB_SECURITY__POLICY_DIR", policy.path().to_str().unwrap()),
            ("SECCOLLAB_AUTH__REGISTRATION", "open"),
        ],
    );
    let u = crate::auth::user_token(&srv, "q@example.org");
    let tok = u["token"].as_str().unwrap().to_string();
    let first = crate::files::upload(&srv, &tok, "a.bin", &vec![7u8; 60_000]);
    let first_id = first["file_id"].as_str().unwrap().to_string();
    let objects = srv.db.objects().keys().len();

    // 60 kB more would make 120 kB of a 100 kB quota: refused, nothing stored.
    let body = crate::files::multipart("b.bin", "application/octet-stream", &vec![8u8; 60_000], None);
    let r = crate::files::upload_raw(&srv, &tok, &body);
    r.assert_error(507, "quota_exceeded");
    assert_eq!(srv.db.sql("SELECT count(*) FROM files"), "1");
    assert_eq!(srv.db.objects().keys().len(), objects, "no object left behind");
    // What fits still goes in; deleting frees the space.
    assert_eq!(
        crate::files::upload_raw(
            &srv,
            &tok,
            &crate::files::multipart("c.bin", "application/octet-stream", &vec![9u8; 30_000], None)
        )
        .status,
        201
    );
    let r =
        srv.request("DELETE", &format!("/api/files/{first_id}"), &[("Authorization", &format!("Bearer {tok}"))], None);
    assert_eq!(r.status, 204);
    assert_eq!(crate::files::upload_raw(&srv, &tok, &body).status, 201);

    // One upload in flight (a client sending slowly): a second one is refused with 429.
    let slow = slow_upload(&srv, &tok);
    let small = crate::files::multipart("d.bin", "application/octet-stream", b"tiny", None);
    let r = crate::files::upload_raw(&srv, &tok, &small);
    r.assert_error(429, "too_many_uploads");
    assert!(r.header("Retry-After").is_some());
    // Another user is not affected.
    let other = crate::auth::user_token(&srv, "other@example.org");
    assert_eq!(crate::files::upload_raw(&srv, other["token"].as_str().unwrap(), &small).status, 201);
    // The slow client goes away: the slot is free again.
    drop(slow);
    wait_until("the slot freed", 10, || crate::files::upload_raw(&srv, &tok, &small).status == 201);
}

const LIMITS: &str = r#"
[rate_limits.auth]
per_user_per_minute = 0
per_ip_per_minute = 30
burst = 3

[rate_limits.upload]
per_user_per_minute = 30
per_ip_per_minute = 6000
burst = 3

[rate_limits.admin]
per_user_per_minute = 60
per_ip_per_minute = 6000
burst = 10

[rate_limits.ws]
per_user_per_minute = 30
per_ip_per_minute = 6000
burst = 3

[rate_limits.api]
per_user_per_minute = 6000
per_ip_per_minute = 60000
burst = 20
"#;

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

#[test]
fn floods_of_each_route_class_get_429_while_others_are_unaffected() {
    let policy = policy_dir_with(LIMITS);
    let srv = Server::start_with(
        TestDb::new(Backend::Sqlite),
        &[
            ("SECCOLLAB_SECURITY__POLICY_DIR", policy.path().to_str().unwrap()),
            ("SECCOLLAB_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]"),
            ("SECCOLLAB_AUTH__REGISTRATION", "open"),
        ],
    );
    let admin = admin_token(&srv);
    let a = crate::auth::user_token(&srv, "flood@example.org")["token"].as_str().unwrap().to_string();
    let b = crate::auth::user_token(&srv, "calm@example.org")["token"].as_str().unwrap().to_string();
    let me = |t: &str| srv.request("GET", "/api/auth/me", &[("Authorization", &format!("Bearer {t}"))], None);

    // B's latency alone, then while A floods from several threads.
    let timed = |n: usize| -> Vec<Duration> {
        (0..n)
            .map(|_| {
                let t = Instant::now();
                assert_eq!(me(&b).status, 200);
                std::thread::sleep(Duration::from_millis(20)); // within B's own budget
                t.elapsed() - Duration::from_millis(20)
            })
            .collect()
    };
    let unloaded = p99(timed(40));
    let (refused, loaded) = std::thread::scope(|s| {
        let floods: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut refused = 0;
                    for _ in 0..150 {
                        let r = me(&a);
                        if r.status == 429 {
                            r.assert_error(429, "rate_limited");
                            assert!(r.header("Retry-After").is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)));
                            refused += 1;
                        } else {
                            assert_eq!(r.status, 200);
                        }
                    }
                    refused
                })
            })
            .collect();
        let loaded = p99(timed(40));
        (floods.into_iter().map(|h| h.join().unwrap()).sum::<usize>(), loaded)
    });
    assert!(refused >= 100, "the flood was cut: {refused} of 450 refused");
    eprintln!(
        "calm user's p99: {unloaded:?} unloaded, {loaded:?} during the flood ({refused} of 450 flood requests refused)"
    );

    // Sign-in floods are limited per address: the flooding address waits, another does not.
    let login_from = |ip: &str| login_from(&srv, ip, "nobody@example.org", "wrong password!!");
    let statuses: Vec<u16> = (0..8).map(|_| login_from("203.0.113.5").status).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    let r = login_from("203.0.113.5");
    r.assert_error(429, "rate_limited");
    let other = crate::abuse::login_from(&srv, "203.0.113.6", "someone-else@example.org", "wrong password!!");
    assert_eq!(other.status, 401, "another address has its own budget");

    // Uploads: a burst of 3, then 429 for this user only.
    let small = crate::files::multipart("x.bin", "application/octet-stream", b"data", None);
    let codes: Vec<u16> = (0..5).map(|_| crate::files::upload_raw(&srv, &a, &small).status).collect();
    assert_eq!(&codes[..3], &[201, 201, 201], "{codes:?}");
    assert_eq!(codes[4], 429, "{codes:?}");
    assert_eq!(crate::files::upload_raw(&srv, &b, &small).status, 201);

    // WebSocket connects.
    let ws = |t: &str| {
        let url = format!("{}/ws?token={t}", srv.base.replacen("http", "ws", 1));
        match tungstenite::connect(url.as_str()) {
            Ok((mut s, _)) => {
                let _ = s.close(None);
                101
            }
            Err(tungstenite::Error::Http(r)) => r.status().as_u16(),
            Err(e) => panic!("{e}"),
        }
    };
    let codes: Vec<u16> = (0..5).map(|_| ws(&a)).collect();
    assert_eq!(codes[4], 429, "{codes:?}");
    assert_eq!(ws(&b), 101);

    // Admin routes.
    let codes: Vec<u16> = (0..15).map(|_| get(&srv, "/api/admin/users", &admin).status).collect();
    assert!(codes.contains(&429), "{codes:?}");

    // Counted in /metrics by class and budget.
    let m = srv.get("/metrics").text();
    for line in [
        "seccollab_rate_limited_total{class=\"api\",scope=\"user\"}",
        "seccollab_rate_limited_total{class=\"auth\",scope=\"ip\"}",
        "seccollab_rate_limited_total{class=\"upload\",scope=\"user\"}",
        "seccollab_rate_limited_total{class=\"ws\",scope=\"user\"}",
        "seccollab_rate_limited_total{class=\"admin\",scope=\"user\"}",
    ] {
        assert!(m.contains(line), "{line} missing from /metrics");
    }
    let _ = PASSWORD;
}

/// A private `moto_server` (from the venv `./tests/run` prepares) that the test can pause.
struct Moto {
    child: std::process::Child,
    endpoint: String,
}

impl Moto {
    fn start() -> Self {
        let python = std::env::var("SECCOLLAB_TEST_PYTHON").expect(
            "SECCOLLAB_TEST_PYTHON must name the test venv's python (./tests/run sets it; it has moto[server])",
        );
        let bin = std::path::Path::new(&python).parent().unwrap().join("moto_server");
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
        let endpoint = format!("http://127.0.0.1:{port}");
        wait_until("moto", 30, || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
        let (st, body) = crate::harness::s3_request("PUT", &format!("{endpoint}/resilience"), None);
        assert!(st == 200 || st == 409, "{st} {}", String::from_utf8_lossy(&body));
        Self { child, endpoint }
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.signal("-CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn an_unreachable_object_store_opens_the_breaker_and_recovers_without_partial_files() {
    use std::os::unix::fs::PermissionsExt;
    let moto = Moto::start();
    let db = TestDb::new(Backend::Sqlite);
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = std::path::Path::new(crate::harness::BIN).parent().unwrap().join("libseccollab_s3.so");
    assert!(src.exists(), "{} missing: `cargo build -p seccollab-s3` first (./tests/run does)", src.display());
    let lib = plugins.join("libseccollab_s3.so");
    std::fs::copy(&src, &lib).unwrap();
    std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = dir.path().join("seccollab.toml");
    std::fs::write(
        &cfg,
        format!(
            "[storage]\nbackend = \"s3\"\n\n[plugins]\ndir = \"{}\"\nbreaker_failures = 2\nbreaker_cooldown_secs = 3\n\n\
             [plugins.enabled.s3.settings]\nurl = \"s3://resilience/t\"\nfrom_env = false\nmax_retries = 1\n\
             options = {{ endpoint = \"{}\", region = \"us-east-1\", access_key_id = \"test\", \
             secret_access_key = \"test\", allow_http = \"true\", timeout = \"1s\", connect_timeout = \"1s\" }}\n",
            plugins.display(),
            moto.endpoint
        ),
    )
    .unwrap();
    let srv = Server::start_with(
        db,
        &[("SECCOLLAB_CONFIG", cfg.to_str().unwrap()), ("SECCOLLAB_AUTH__REGISTRATION", "open")],
    );
    let tok = crate::auth::user_token(&srv, "s@example.org")["token"].as_str().unwrap().to_string();
    crate::auth::admin_password_only(&srv, "root@example.org");
    let (mut console, _) = crate::admin_console::first_sign_in(&srv);
    let breaker_row = |c: &mut crate::admin_console::Browser<'_>| {
        let p = c.get("/admin/system");
        assert_eq!(p.status, 200);
        let t = p.body.split("id=\"storage-breaker\"").nth(1).expect("the storage table").to_string();
        t.split("</table>").next().unwrap().to_string()
    };
    let row = breaker_row(&mut console);
    assert!(row.contains("<code>s3</code>") && row.contains(">closed<"), "{row}");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let first = crate::files::upload(&srv, &tok, "kept.bin", &data)["file_id"].as_str().unwrap().to_string();
    assert_eq!(crate::files::scanned(&srv, &tok, &first), "clean");

    // The store stops answering (the process is paused: connections hang, as in an outage).
    moto.signal("-STOP");
    let body = crate::files::multipart("lost.bin", "application/octet-stream", &data, None);
    let mut fast = None;
    for attempt in 0..6 {
        let t = Instant::now();
        let r = crate::files::upload_raw(&srv, &tok, &body);
        r.assert_error(503, "unavailable");
        assert!(r.header("Retry-After").is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1)), "{:?}", r.headers);
        if t.elapsed() < Duration::from_millis(300) {
            fast = Some(attempt);
            break;
        }
    }
    let fast = fast.expect("after repeated failures the breaker answers at once");
    assert!(fast >= 1, "the first failures waited for the store (retries), then the breaker opened");
    assert!(srv.get("/metrics").text().contains("seccollab_storage_breaker_open 1"));
    // The console shows it too.
    let row = breaker_row(&mut console);
    assert!(row.contains("open: failing fast for"), "{row}");
    // Downloads fail fast too, with 503, instead of a cut-off body.
    let r = crate::files::download(&srv, &tok, &first, None);
    r.assert_error(503, "unavailable");
    assert_eq!(srv.db.sql("SELECT count(*) FROM files"), "1", "no record of a failed upload");

    // The store comes back: after the pause the breaker lets a trial through and closes.
    moto.signal("-CONT");
    wait_until("recovery", 30, || crate::files::upload_raw(&srv, &tok, &body).status == 201);
    assert!(srv.get("/metrics").text().contains("seccollab_storage_breaker_open 0"));
    assert!(breaker_row(&mut console).contains(">closed<"));
    let r = crate::files::download(&srv, &tok, &first, None);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data, "the earlier file is intact");
    assert_eq!(srv.db.sql("SELECT count(*) FROM files"), "2");
    // The store ends up with exactly the committed objects: writes it finished after the client
    // gave up are deleted again (within seconds), nothing partial stays.
    let keys = || {
        let (st, list) =
            crate::harness::s3_request("GET", &format!("{}/resilience?list-type=2&prefix=t/", moto.endpoint), None);
        assert_eq!(st, 200);
        String::from_utf8_lossy(&list).matches("<Key>").count()
    };
    wait_until("late writes cleaned up", 30, || keys() == 2);
    let (st, uploads) = crate::harness::s3_request("GET", &format!("{}/resilience?uploads", moto.endpoint), None);
    assert_eq!(st, 200);
    assert!(!String::from_utf8_lossy(&uploads).contains("<UploadId>"), "no multipart upload left open");
}

#[test]
fn rate_limits_hold_across_two_nodes_on_postgresql() {
    let policy = policy_dir_with("[rate_limits.auth]\nper_user_per_minute = 0\nper_ip_per_minute = 6\nburst = 3\n");
    let env = [
        ("SECCOLLAB_SECURITY__POLICY_DIR", policy.path().to_str().unwrap()),
        ("SECCOLLAB_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]"),
    ];
    let a = Server::start_with(TestDb::new(Backend::Postgres), &env);
    let b = a.start_peer(&env);
    // Not across a minute boundary: the shared count is per minute.
    while std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() % 60 > 50 {
        std::thread::sleep(Duration::from_millis(500));
    }
    // Ten sign-in attempts from one address, alternating between the nodes: each node alone
    // sees five (within a node's own bucket of six), together they pass the budget of six.
    let statuses: Vec<u16> = (0..10)
        .map(|i| {
            login_from(
                if i % 2 == 0 { &a } else { &b },
                "203.0.113.77",
                &format!("u{i}@example.org"),
                "wrong password!!",
            )
            .status
        })
        .collect();
    assert_eq!(&statuses[..6], &[401; 6], "{statuses:?}");
    assert_eq!(&statuses[6..], &[429; 4], "{statuses:?}");
    let r = login_from(&b, "203.0.113.77", "x@example.org", "wrong password!!");
    r.assert_error(429, "rate_limited");
    let secs: u64 = r.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=60).contains(&secs), "{secs}");
    // Another address is unaffected on either node.
    assert_eq!(login_from(&a, "203.0.113.78", "y@example.org", "wrong password!!").status, 401);
    assert_eq!(login_from(&b, "203.0.113.78", "z@example.org", "wrong password!!").status, 401);
}

const ACCOUNT_RESPONSES: &str = r#"
[anomaly]
poll_secs = 1
dedup_secs = 1

[anomaly.mass_sharing]
enabled = true
window_secs = 600
threshold = 3

[anomaly.exfiltration]
enabled = true
window_secs = 600
threshold = 3

[responses.mass_sharing]
action = "suspend_account"

[responses.exfiltration]
action = "force_mfa"

[rate_limits]
enabled = false
"#;

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// `n` share grants of one file by `tok`, one request each.
fn share_n(srv: &Server, tok: &str, file: &str, to: &[String]) {
    for u in to {
        let r = crate::auth::post(
            srv,
            "/api/files/share",
            Some(tok),
            json!({"file_id": file, "user_ids": [u], "permissions": "view"}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

#[test]
fn suspend_account_and_force_mfa_responses_hold_accounts_until_undone_never_admins() {
    let policy = policy_dir_with(ACCOUNT_RESPONSES);
    let srv = Server::start_with(
        TestDb::new(Backend::Sqlite),
        &[
            ("SECCOLLAB_SECURITY__POLICY_DIR", policy.path().to_str().unwrap()),
            ("SECCOLLAB_AUTH__REGISTRATION", "open"),
        ],
    );
    let admin = admin_token(&srv);
    let id_of = |t: &serde_json::Value| t["user"]["id"].as_str().unwrap().to_string();
    let tok_of = |t: &serde_json::Value| t["token"].as_str().unwrap().to_string();
    let friends: Vec<String> =
        (0..3).map(|i| id_of(&crate::auth::user_token(&srv, &format!("f{i}@example.org")))).collect();
    let me = |t: &str| srv.request("GET", "/api/auth/me", &[("Authorization", &bearer(t))], None);

    // --- suspend_account: a user who shares with three people in a minute is held for review.
    let sharer = crate::auth::user_token(&srv, "sharer@example.org");
    let (stok, sid) = (tok_of(&sharer), id_of(&sharer));
    let file = crate::files::upload(&srv, &stok, "a.txt", b"hello")["file_id"].as_str().unwrap().to_string();
    assert_eq!(crate::files::scanned(&srv, &stok, &file), "clean");
    share_n(&srv, &stok, &file, &friends);
    wait_until("the suspension", 40, || me(&stok).status == 401);
    crate::auth::login(&srv, "sharer@example.org", PASSWORD).assert_error(403, "account_suspended");
    let held = get(&srv, "/api/admin/responses/held", &admin).json();
    let h = held["accounts"].as_array().unwrap().iter().find(|a| a["user_id"] == sid.as_str()).expect("held");
    assert_eq!(h["state"], "suspended", "{held}");
    assert_eq!(h["rule"], "mass_sharing", "{held}");
    let listed = get(&srv, "/api/admin/users?q=sharer", &admin).json();
    assert_eq!(listed["users"][0]["suspended_by_rule"], "mass_sharing", "{listed}");
    assert_eq!(listed["users"][0]["disabled"], true);
    let resp: String = srv
        .db
        .sql(&format!("SELECT details FROM audit_log WHERE action = 'security.response' AND target_id = '{sid}'"));
    assert!(resp.contains("\"action\":\"suspend_account\"") && resp.contains("\"suspended\":true"), "{resp}");

    // The undo: admins only, audited; the account signs in again.
    let f0 = crate::auth::login(&srv, "f0@example.org", PASSWORD).json()["token"].as_str().unwrap().to_string();
    let undo = |t: &str, what: &str, uid: &str| {
        srv.request("POST", &format!("/api/admin/users/{uid}/{what}"), &[("Authorization", &bearer(t))], None)
    };
    undo(&f0, "enable", &sid).assert_error(403, "forbidden");
    assert_eq!(undo(&admin, "enable", &sid).status, 204);
    assert_eq!(crate::auth::login(&srv, "sharer@example.org", PASSWORD).status, 200);
    wait_until("the admin.user_enable entry", 10, || {
        srv.db.sql("SELECT count(*) FROM audit_log WHERE action = 'admin.user_enable'") == "1"
    });
    let held = get(&srv, "/api/admin/responses/held", &admin).json();
    assert!(held["accounts"].as_array().unwrap().iter().all(|a| a["user_id"] != sid.as_str()), "{held}");

    // An administrator doing the same is alerted on, never suspended.
    let root_id = crate::auth::get(&srv, "/api/auth/me", &admin).json()["user"]["id"].as_str().unwrap().to_string();
    let afile = crate::files::upload(&srv, &admin, "b.txt", b"admin file")["file_id"].as_str().unwrap().to_string();
    assert_eq!(crate::files::scanned(&srv, &admin, &afile), "clean");
    share_n(&srv, &admin, &afile, &friends);
    wait_until("the alert about the admin", 40, || {
        get(&srv, "/api/admin/alerts?open=false", &admin).json()["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["kind"] == "mass_sharing" && a["subject_id"] == root_id.as_str())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(me(&admin).status, 200, "the admin still works");
    assert_eq!(crate::auth::login(&srv, "root@example.org", PASSWORD).status, 200);

    // --- force_mfa without MFA: three downloads hold every session until the password is given.
    let dl = crate::auth::user_token(&srv, "dl@example.org");
    let (dtok, did) = (tok_of(&dl), id_of(&dl));
    let second = crate::auth::login(&srv, "dl@example.org", PASSWORD).json()["token"].as_str().unwrap().to_string();
    let dfile = crate::files::upload(&srv, &dtok, "d.txt", b"data")["file_id"].as_str().unwrap().to_string();
    assert_eq!(crate::files::scanned(&srv, &dtok, &dfile), "clean");
    for _ in 0..3 {
        assert_eq!(crate::files::download(&srv, &dtok, &dfile, None).status, 200);
    }
    wait_until("the re-verification demand", 40, || me(&dtok).status == 403);
    me(&dtok).assert_error(403, "mfa_reverify_required");
    me(&second).assert_error(403, "mfa_reverify_required");
    // Nothing else works meanwhile, the WebSocket included; signing out does.
    let files = srv.request("GET", "/api/files", &[("Authorization", &bearer(&dtok))], None);
    files.assert_error(403, "mfa_reverify_required");
    let ws = srv.request("GET", &format!("/ws?token={dtok}"), &[], None);
    assert_eq!(ws.status, 403, "{}", ws.text());
    let reverify = |t: &str, body: serde_json::Value| crate::auth::post(&srv, "/api/auth/reverify", Some(t), body);
    reverify(&dtok, json!({"totp_code": "123456"})).assert_error(400, "invalid_input");
    reverify(&dtok, json!({"password": "not my password"})).assert_error(403, "wrong_password");
    me(&dtok).assert_error(403, "mfa_reverify_required");
    assert_eq!(reverify(&dtok, json!({"password": PASSWORD})).status, 204);
    assert_eq!(me(&dtok).status, 200, "this session is confirmed");
    me(&second).assert_error(403, "mfa_reverify_required");
    let held = get(&srv, "/api/admin/responses/held", &admin).json();
    let h = held["accounts"].as_array().unwrap().iter().find(|a| a["user_id"] == did.as_str()).expect("held");
    assert_eq!((h["state"].as_str(), h["sessions"].as_i64()), (Some("reverify"), Some(1)), "{held}");
    // The admin's undo releases the other session.
    undo(&f0, "clear-reverify", &did).assert_error(403, "forbidden");
    assert_eq!(undo(&admin, "clear-reverify", &did).status, 204);
    assert_eq!(me(&second).status, 200);
    wait_until("the admin.user_clear_reverify entry", 10, || {
        srv.db.sql("SELECT count(*) FROM audit_log WHERE action = 'admin.user_clear_reverify'") == "1"
    });

    // --- force_mfa with MFA on: the password is not enough, the second factor is.
    let m = crate::auth::user_token(&srv, "mfa@example.org");
    let mtok = tok_of(&m);
    let setup = crate::auth::post(&srv, "/api/auth/mfa/setup", Some(&mtok), json!({})).json();
    let secret = setup["secret"].as_str().unwrap().to_string();
    let r = crate::auth::post(
        &srv,
        "/api/auth/mfa/enable",
        Some(&mtok),
        json!({"totp_code": crate::auth::totp(&secret, "")}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let recovery = r.json()["recovery_codes"][0].as_str().unwrap().to_string();
    let mfile = crate::files::upload(&srv, &mtok, "m.txt", b"mine")["file_id"].as_str().unwrap().to_string();
    assert_eq!(crate::files::scanned(&srv, &mtok, &mfile), "clean");
    for _ in 0..3 {
        assert_eq!(crate::files::download(&srv, &mtok, &mfile, None).status, 200);
    }
    wait_until("the second demand", 40, || me(&mtok).status == 403);
    reverify(&mtok, json!({"password": PASSWORD})).assert_error(400, "invalid_input");
    reverify(&mtok, json!({"totp_code": "000000"})).assert_error(401, "invalid_mfa_code");
    assert_eq!(reverify(&mtok, json!({"totp_code": recovery})).status, 204);
    assert_eq!(me(&mtok).status, 200);
    wait_until("the audit entry", 10, || {
        srv.db.sql(
            "SELECT count(*) FROM audit_log WHERE action = 'auth.reverify' AND outcome = 'success' \
             AND details LIKE '%recovery_code%'",
        ) == "1"
    });
}

#[test]
fn response_policies_that_could_lock_out_admins_are_refused() {
    for (bad, key) in [
        ("[responses.admin_new_location]\naction = \"suspend_account\"\n", "responses.admin_new_location"),
        ("[responses.admin_new_location]\naction = \"revoke_sessions\"\n", "responses.admin_new_location"),
        ("[responses.credential_stuffing]\naction = \"force_mfa\"\n", "responses.credential_stuffing"),
        ("[responses.mass_sharing]\naction = \"block_ip\"\nduration_secs = 5\n", "responses.mass_sharing"),
    ] {
        let p = policy_dir_with(bad);
        let db = TestDb::new(Backend::Sqlite);
        let mut env = db.env();
        env.push(("SECCOLLAB_SECURITY__POLICY_DIR".into(), p.path().to_str().unwrap().into()));
        let (code, _, err) = run_cli(&env, &["serve"], None);
        assert_ne!(code, 0, "{bad}");
        assert!(err.contains(key), "{bad}: {err}");
    }
}

/// Starts an upload on `srv` (20,000 bytes declared) and sends only its first kilobyte: an
/// upload in flight until the stream is dropped.
fn slow_upload(srv: &Server, tok: &str) -> std::net::TcpStream {
    use std::io::Write;
    let addr = srv.base.trim_start_matches("http://").to_string();
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    let boundary = "slowboundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"slow.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    );
    write!(
        slow,
        "POST /api/files/upload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {tok}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: 20000\r\n\r\n{head}"
    )
    .unwrap();
    slow.write_all(&[1u8; 1000]).unwrap();
    slow.flush().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    slow
}

#[test]
fn parallel_uploads_are_counted_across_two_nodes_on_postgresql() {
    let policy = policy_dir_with("[upload]\nmax_concurrent_per_user = 1\n");
    let env =
        [("SECCOLLAB_SECURITY__POLICY_DIR", policy.path().to_str().unwrap()), ("SECCOLLAB_AUTH__REGISTRATION", "open")];
    let a = Server::start_with(TestDb::new(Backend::Postgres), &env);
    let b = a.start_peer(&env);
    let tok = crate::auth::user_token(&a, "two@example.org")["token"].as_str().unwrap().to_string();
    let small = crate::files::multipart("d.bin", "application/octet-stream", b"tiny", None);
    // One upload in flight on node A: node B refuses the second.
    let slow = slow_upload(&a, &tok);
    assert_eq!(a.db.sql("SELECT count(*) FROM upload_slots"), "1");
    crate::files::upload_raw(&b, &tok, &small).assert_error(429, "too_many_uploads");
    crate::files::upload_raw(&a, &tok, &small).assert_error(429, "too_many_uploads");
    // Another user is not affected.
    let other = crate::auth::user_token(&b, "other@example.org")["token"].as_str().unwrap().to_string();
    assert_eq!(crate::files::upload_raw(&b, &other, &small).status, 201);
    // The client goes away: the slot is given back, on both nodes.
    drop(slow);
    wait_until("the slot freed", 10, || crate::files::upload_raw(&b, &tok, &small).status == 201);
    assert_eq!(a.db.sql("SELECT count(*) FROM upload_slots"), "0");
    // A node that died leaves a slot behind: it stops counting when its lease runs out.
    a.db.sql(
        "INSERT INTO upload_slots (id, user_id, expires_at) SELECT 'dead', id, 0 FROM users WHERE email = 'two@example.org'",
    );
    assert_eq!(crate::files::upload_raw(&a, &tok, &small).status, 201);
}

#[test]
fn upload_bandwidth_is_bounded_per_user() {
    // 256 KiB/s per user: 1 MiB takes about three seconds (the first second's worth at once).
    let policy = policy_dir_with("[upload]\nbandwidth_bytes_per_sec_per_user = 262144\n");
    let srv = Server::start_with(
        TestDb::new(Backend::Sqlite),
        &[
            ("SECCOLLAB_SECURITY__POLICY_DIR", policy.path().to_str().unwrap()),
            ("SECCOLLAB_AUTH__REGISTRATION", "open"),
        ],
    );
    let a = crate::auth::user_token(&srv, "big@example.org")["token"].as_str().unwrap().to_string();
    let b = crate::auth::user_token(&srv, "small@example.org")["token"].as_str().unwrap().to_string();
    let data: Vec<u8> = (0..1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let started = Instant::now();
    let done_a = std::sync::Arc::new(std::sync::Mutex::new(None::<Instant>));
    let (srv_ref, d2) = (&srv, done_a.clone());
    std::thread::scope(|s| {
        let t = s.spawn(move || {
            let body = crate::files::multipart("big.bin", "application/octet-stream", &data, None);
            let r = crate::files::upload_raw(srv_ref, &a, &body);
            *d2.lock().unwrap() = Some(Instant::now());
            r
        });
        std::thread::sleep(Duration::from_millis(300));
        // Another user's upload meanwhile is not held behind the first.
        let small = crate::files::multipart("s.bin", "application/octet-stream", &[5u8; 64 * 1024], None);
        assert_eq!(crate::files::upload_raw(srv_ref, &b, &small).status, 201);
        assert!(done_a.lock().unwrap().is_none(), "the other user's upload finished first");
        let r = t.join().unwrap();
        assert_eq!(r.status, 201, "{}", r.text());
    });
    let took = started.elapsed();
    eprintln!("1 MiB at 256 KiB/s took {took:?}");
    assert!(took >= Duration::from_millis(2500), "the upload was not slowed: {took:?}");
    assert_eq!(srv.db.sql("SELECT size FROM files WHERE name = 'big.bin'"), "1048576");
}

/// A socket opened before its address was blocked stops sending with it: `send_message` gets
/// what the address's HTTP requests get (403 `ip_blocked`, with the seconds left).
#[test]
fn a_blocked_address_cannot_send_over_an_open_socket() {
    use crate::realtime::{send_over_socket, user, Expect, Ws};
    let (_policy, srv) = stuffing_server();
    let (alice, bob) = (user(&srv, "alice@example.org"), user(&srv, "bob@example.org"));
    let attacker = "203.0.113.66";
    let mut ws = Ws::open_with(&srv, &format!("?token={}", alice.token), &[("X-Forwarded-For", attacker)]);
    let to_bob =
        |cid: &str| json!({"event": "send_message", "data": {"client_id": cid, "receiver_id": bob.id, "content": cid}});
    assert_eq!(send_over_socket(&mut ws, &[(to_bob("before"), Expect::Sent("before".into()))]).len(), 1);
    stuff_until_blocked(&srv, attacker, "bob@example.org");
    assert!(send_over_socket(&mut ws, &[(to_bob("during"), Expect::Refused("ip_blocked"))]).is_empty());
    assert_eq!(srv.db.sql("SELECT count(*) FROM messages WHERE content = 'during'"), "0");
}
