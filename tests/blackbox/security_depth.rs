//! The security invariants of `API.md` ("Security invariants"), attacked as a determined
//! attacker or an unlucky operator would: MFA guessing across fresh challenges, the admin API
//! without a second factor, a rolled-back or cut audit log, secrets checked outside the
//! sign-in, lost failure counts, a start against the wrong database, forwarded addresses,
//! `Range` overflows, cookies behind a proxy and parallel uploads against the quota.

use std::io::{Read, Write};
use std::time::Duration;

use serde_json::{json, Value};

use crate::auth::{
    admin_password_only, admin_token, enrol_mfa, get, login, login_with_code, post, register, totp, user_token,
    PASSWORD,
};
use crate::both_backends;
use crate::harness::{policy_dir_with, run_cli, wait_until, Backend, Server, TestDb};

fn policy_server(b: Backend, policy: &tempfile::TempDir, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("SECCOLLAB_AUTH__REGISTRATION", "open"),
        ("SECCOLLAB_SECURITY__POLICY_DIR", policy.path().to_str().unwrap()),
    ];
    env.extend_from_slice(extra);
    Server::start_with(TestDb::new(b), &env)
}

fn verify_mfa(srv: &Server, token: &str, code: &str) -> crate::harness::Resp {
    post(srv, "/api/auth/verify-mfa", None, json!({"mfa_token": token, "totp_code": code}))
}

fn mfa_token(srv: &Server, email: &str) -> String {
    let r = login(srv, email, PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["mfa_token"].as_str().expect("a challenge").to_string()
}

both_backends!(mfa_codes_cannot_be_guessed_across_fresh_challenges, |b: Backend| {
    // The per-address back-off is set out of the way: the account's own lockout must hold.
    let policy = policy_dir_with("[lockout]\nmax_failures = 5\nfirst_lock_secs = 60\nip_free_failures = 1000\n");
    let srv = policy_server(b, &policy, &[]);
    let t = user_token(&srv, "gina@example.org");
    let (secret, codes) = enrol_mfa(&srv, t["token"].as_str().unwrap());
    // A challenge kept for later, with the right code in hand.
    let kept = mfa_token(&srv, "gina@example.org");
    // The attacker knows the password and guesses codes, signing in again for fresh challenges.
    let mut locked_at = None;
    'outer: for round in 0..4 {
        let r = login(&srv, "gina@example.org", PASSWORD);
        if r.status == 423 {
            locked_at = Some(round);
            break;
        }
        let token = r.json()["mfa_token"].as_str().unwrap().to_string();
        for i in 0..4 {
            let r = verify_mfa(&srv, &token, &format!("{round}0000{i}"));
            if r.status == 423 {
                locked_at = Some(round);
                break 'outer;
            }
            r.assert_error(401, "invalid_mfa_code");
        }
    }
    assert_eq!(locked_at, Some(1), "the fifth wrong code locks the account, whatever the challenge");
    // While locked, the right secrets are refused too: the password and a good code.
    login(&srv, "gina@example.org", PASSWORD).assert_error(423, "account_locked");
    verify_mfa(&srv, &kept, &totp(&secret, "")).assert_error(423, "account_locked");
    verify_mfa(&srv, &kept, &codes[0]).assert_error(423, "account_locked");
    // Every wrong code is in the audit log as a failure of the second factor.
    wait_until("the failures in the audit log", 10, || {
        srv.db.sql("SELECT count(*) FROM audit_log WHERE action = 'auth.mfa' AND outcome = 'failure'") == "5"
    });
});

both_backends!(at_most_three_live_challenges_per_account, |b: Backend| {
    let srv = crate::auth::open_server(b);
    let t = user_token(&srv, "hank@example.org");
    let (_, codes) = enrol_mfa(&srv, t["token"].as_str().unwrap());
    let tokens: Vec<String> = (0..5).map(|_| mfa_token(&srv, "hank@example.org")).collect();
    // The two oldest are dead; the newest three live.
    verify_mfa(&srv, &tokens[0], &codes[0]).assert_error(401, "invalid_mfa_token");
    verify_mfa(&srv, &tokens[1], &codes[0]).assert_error(401, "invalid_mfa_token");
    assert_eq!(verify_mfa(&srv, &tokens[2], &codes[0]).status, 200);
});

#[test]
fn the_console_mfa_step_shares_the_lockout() {
    let policy = policy_dir_with("[lockout]\nmax_failures = 3\nfirst_lock_secs = 60\nip_free_failures = 1000\n");
    let srv = policy_server(Backend::Sqlite, &policy, &[]);
    admin_password_only(&srv, "root@example.org");
    let (mut b, secret) = crate::admin_console::first_sign_in(&srv);
    let csrf = crate::admin_console::field(&b.get("/admin").body, "csrf");
    assert_eq!(b.post("/admin/logout", &[("csrf", csrf.as_str())]).status, 303);
    // Three wrong codes through the API (fresh challenges each time) lock the account …
    for i in 0..3 {
        let token = mfa_token(&srv, "root@example.org");
        let r = verify_mfa(&srv, &token, &format!("99999{i}"));
        assert!(r.status == 401 || r.status == 423, "{}", r.text());
    }
    // … and the console refuses the right password and code alike.
    let csrf = crate::admin_console::field(&b.get("/admin/login").body, "csrf");
    let p = b.post("/admin/login", &[("csrf", csrf.as_str()), ("email", "root@example.org"), ("password", PASSWORD)]);
    assert_eq!(p.status, 423, "{}", p.body);
    let _ = secret;
}

both_backends!(the_admin_api_requires_a_second_factor, |b: Backend| {
    let srv = crate::auth::open_server(b);
    let bob = register(&srv, "bob@example.org");
    // An admin made by the CLI, signed in with the password alone.
    let weak = admin_password_only(&srv, "root@example.org");
    for path in ["/api/admin/users", "/api/admin/alerts", "/api/admin/logs", "/api/audit/verify"] {
        get(&srv, path, &weak).assert_error(403, "mfa_required");
    }
    let bob_id = bob["id"].as_str().unwrap();
    post(&srv, &format!("/api/admin/users/{bob_id}/disable"), Some(&weak), json!({})).assert_error(403, "mfa_required");
    let disabled = srv.db.sql(&format!("SELECT disabled FROM users WHERE id = '{bob_id}'"));
    assert!(disabled == "0" || disabled == "f", "bob is not disabled: {disabled}");
    // Enrolment stays open to it.
    assert_eq!(get(&srv, "/api/auth/me", &weak).status, 200);
    let (_, codes) = enrol_mfa(&srv, &weak);
    // Enrolling does not lift the old session: only a sign-in through verify-mfa does.
    get(&srv, "/api/admin/users", &weak).assert_error(403, "mfa_required");
    let r = login_with_code(&srv, "root@example.org", &codes[0]);
    assert_eq!(r.status, 200, "{}", r.text());
    let strong = r.json()["token"].as_str().unwrap().to_string();
    assert_eq!(get(&srv, "/api/admin/users", &strong).status, 200);

    // A password-only admin session cannot reset another admin's MFA either.
    let root_id = srv.db.sql("SELECT id FROM users WHERE email = 'root@example.org'");
    let other = admin_password_only(&srv, "second@example.org");
    post(&srv, &format!("/api/admin/users/{root_id}/reset-mfa"), Some(&other), json!({}))
        .assert_error(403, "mfa_required");
    assert_eq!(login(&srv, "root@example.org", PASSWORD).json()["mfa_required"], true, "root's MFA is intact");
});

both_backends!(password_and_mfa_changes_share_the_lockout, |b: Backend| {
    let policy = policy_dir_with("[lockout]\nmax_failures = 5\nfirst_lock_secs = 60\nip_free_failures = 1000\n");
    let srv = policy_server(b, &policy, &[]);
    let t = user_token(&srv, "ivan@example.org");
    let tok = t["token"].as_str().unwrap().to_string();
    for i in 0..8 {
        let r = post(
            &srv,
            "/api/auth/password",
            Some(&tok),
            json!({"current_password": format!("guess number {i} here"), "new_password": "a brand new passphrase 1"}),
        );
        assert!(r.status == 403 || r.status == 423, "{}", r.text());
    }
    // The right password is refused while locked, and nothing changed.
    post(
        &srv,
        "/api/auth/password",
        Some(&tok),
        json!({"current_password": PASSWORD, "new_password": "a brand new passphrase 1"}),
    )
    .assert_error(423, "account_locked");
    login(&srv, "ivan@example.org", PASSWORD).assert_error(423, "account_locked");

    // Turning MFA off: the same lockout.
    let t = user_token(&srv, "judy@example.org");
    let tok = t["token"].as_str().unwrap().to_string();
    let (secret, _) = enrol_mfa(&srv, &tok);
    for i in 0..5 {
        let r = post(
            &srv,
            "/api/auth/mfa/disable",
            Some(&tok),
            json!({"password": format!("guess number {i} here"), "totp_code": "123456"}),
        );
        assert!(r.status == 403 || r.status == 423, "{}", r.text());
    }
    post(&srv, "/api/auth/mfa/disable", Some(&tok), json!({"password": PASSWORD, "totp_code": totp(&secret, "")}))
        .assert_error(423, "account_locked");
    assert_eq!(
        srv.db.sql("SELECT mfa_enabled FROM users WHERE email = 'judy@example.org'").to_lowercase().chars().next(),
        Some(if b == Backend::Sqlite { '1' } else { 't' })
    );
});

both_backends!(parallel_wrong_passwords_are_all_counted, |b: Backend| {
    let policy = policy_dir_with("[lockout]\nmax_failures = 1000\nip_free_failures = 1000\n");
    let srv = policy_server(b, &policy, &[]);
    register(&srv, "kate@example.org");
    std::thread::scope(|s| {
        for i in 0..50 {
            let srv = &srv;
            s.spawn(move || {
                login(srv, "kate@example.org", &format!("wrong password number {i}"))
                    .assert_error(401, "invalid_credentials");
            });
        }
    });
    assert_eq!(srv.db.sql("SELECT failures FROM login_throttle WHERE key = 'acct:kate@example.org'"), "50");
});

// Uploads a file, stops, starts once on an empty database (a typo in `database.url`), stops,
// starts on the right database: the file is still there.
both_backends!(a_start_on_the_wrong_database_destroys_no_file, |b: Backend| {
    let mut srv = crate::auth::open_server(b);
    let t = user_token(&srv, "lena@example.org");
    let tok = t["token"].as_str().unwrap().to_string();
    let body = b"the only copy of the quarterly report".repeat(100);
    let id = crate::files::upload(&srv, &tok, "report.txt", &body)["file_id"].as_str().unwrap().to_string();
    assert_eq!(crate::files::scanned(&srv, &tok, &id), "clean");
    assert_eq!(srv.stop(), 0);
    let db = srv.take_db();

    // The wrong database: a fresh, empty one of the same backend, same data folder.
    let wrong = TestDb::new(b);
    let mut env: Vec<(String, String)> = db.env();
    for (k, v) in env.iter_mut() {
        if k == "SECCOLLAB_DATABASE__URL" {
            *v = wrong.url.clone();
        }
    }
    // A server on the wrong database starts and stops (the start-up sweep runs) …
    let mut env_ref: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env_ref.push(("SECCOLLAB_AUTH__REGISTRATION", "open"));
    let mut mistaken = Server::start_with(TestDb::new(Backend::Sqlite), &env_ref);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(mistaken.stop(), 0);
    // … and the right one still serves the file, byte for byte.
    let srv = Server::start_with(db, &[("SECCOLLAB_AUTH__REGISTRATION", "open")]);
    let tok = login(&srv, "lena@example.org", PASSWORD).json()["token"].as_str().unwrap().to_string();
    let r = crate::files::download(&srv, &tok, &id, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, body);
    // Seen through the wrong database, the store's objects are listed, not moved.
    let (code, out, err) = run_cli(&env, &["storage", "orphans"], None);
    assert_eq!(code, 0, "{err}");
    let listed: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(listed["files_known"], 0, "{listed}");
    assert_eq!(listed["in_store"].as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed["aside"].as_array().map(Vec::len), Some(0), "{listed}");
});

#[test]
fn unknown_objects_are_moved_aside_listed_and_put_back_never_deleted() {
    let mut srv = crate::auth::open_server(Backend::Sqlite);
    let t = user_token(&srv, "mia@example.org");
    let tok = t["token"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            crate::files::upload(&srv, &tok, &format!("f{i}.txt"), format!("file {i}").as_bytes())["file_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(srv.stop(), 0);
    // One object the database does not know (a crash between store and insert leaves such).
    let objects = srv.db.objects();
    let known = objects.keys()[0].clone();
    let stray = format!("{}{}", &known[..2], "0".repeat(known.len() - 2));
    objects.write(&stray, b"a stray object");
    let stray = stray.as_str();
    let env = srv.db.env();
    // More than the allowed share: refused without --all.
    let (code, out, _) = run_cli(&env, &["storage", "orphans"], None);
    assert_eq!(code, 0);
    let listed: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(listed["in_store"].as_array().unwrap().len(), 1, "{listed}");
    let (code, out, err) = run_cli(&env, &["storage", "orphans", "--move-aside"], None);
    assert_eq!(code, 0, "{out} {err}");
    assert!(!objects.keys().contains(&stray.to_string()), "moved out of the store");
    assert_eq!(objects.keys().len(), 30, "only the stray object moved");
    let (_, out, _) = run_cli(&env, &["storage", "orphans"], None);
    let listed: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(listed["aside"].as_array().unwrap().len(), 1, "{listed}");
    let key = listed["aside"][0]["key"].as_str().unwrap().to_string();
    let (code, _, err) = run_cli(&env, &["storage", "orphans", "--put-back", &key], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(objects.read(stray), b"a stray object");
}

both_backends!(the_audit_anchor_moves_only_forward, |b: Backend| {
    let mut srv = crate::auth::open_server(b);
    let admin = admin_token(&srv);
    user_token(&srv, "nora@example.org");
    assert_eq!(srv.stop(), 0);
    let db = srv.take_db();
    // An older copy of the whole database.
    let old = db.dir.path().join("old.sql");
    match b {
        Backend::Sqlite => {
            // The file and its write-ahead log, as a file-level copy must take them.
            std::fs::copy(db.sqlite_path(), &old).unwrap();
            let wal = format!("{}-wal", db.sqlite_path().display());
            if std::path::Path::new(&wal).exists() {
                std::fs::copy(&wal, format!("{}-wal", old.display())).unwrap();
            }
        }
        Backend::Postgres => {
            let out = std::process::Command::new("pg_dump").args(["-Fc", "-f"]).arg(&old).arg(&db.url).output();
            let ok = out.as_ref().map(|o| o.status.success()).unwrap_or(false);
            assert!(ok, "pg_dump: {out:?}");
        }
    }
    let mut srv = Server::start_with(db, &[("SECCOLLAB_AUTH__REGISTRATION", "open")]);
    let tok = login(&srv, "nora@example.org", PASSWORD).json()["token"].as_str().unwrap().to_string();
    for i in 0..30 {
        crate::files::upload(&srv, &tok, &format!("n{i}.txt"), b"x");
    }
    assert_eq!(srv.stop(), 0);
    let db = srv.take_db();
    // The old copy put back.
    match b {
        Backend::Sqlite => {
            for ext in ["-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{ext}", db.sqlite_path().display()));
            }
            std::fs::copy(&old, db.sqlite_path()).unwrap();
            let wal = format!("{}-wal", old.display());
            if std::path::Path::new(&wal).exists() {
                std::fs::copy(&wal, format!("{}-wal", db.sqlite_path().display())).unwrap();
            }
        }
        Backend::Postgres => {
            let out = std::process::Command::new("pg_restore")
                .args(["--clean", "--if-exists", "--no-owner", "-d", &db.url])
                .arg(&old)
                .output()
                .unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    // The server starts, runs and stops on it: it must not re-anchor over the rollback.
    let srv = Server::start_with(db, &[("SECCOLLAB_AUTH__REGISTRATION", "open")]);
    let v = get(&srv, "/api/audit/verify", &admin);
    assert_eq!(v.status, 200, "{}", v.text());
    assert_eq!(v.json()["ok"], false, "{}", v.text());
    wait_until("the anchor alert", 20, || {
        get(&srv, "/api/admin/alerts", &admin).json()["alerts"]
            .as_array()
            .map(|a| a.iter().any(|a| a["kind"] == "audit_anchor_mismatch"))
            .unwrap_or(false)
    });
    let mut srv = srv;
    assert_eq!(srv.stop(), 0);
    let db = srv.take_db();
    let (code, out, _) = run_cli(&db.env(), &["audit", "verify"], None);
    assert_eq!(code, 1, "{out}");
    // The operator accepts the rolled-back log on purpose: verify is clean again, and the
    // reset itself is in the log.
    let (code, _, err) = run_cli(&db.env(), &["audit", "anchor", "--reset"], None);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = run_cli(&db.env(), &["audit", "verify"], None);
    assert_eq!(code, 0, "{out}");
    // An anchor file removed once one existed is noticed too.
    std::fs::remove_file(db.dir.path().join("data/audit-anchor.json")).unwrap();
    let (code, out, _) = run_cli(&db.env(), &["audit", "verify"], None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("mismatch"), "{out}");
});

/// One raw request (several header lines of one name are sent as they are).
fn raw(srv: &Server, head: &str) -> String {
    let addr = srv.base.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(head.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn forwarded_for_takes_every_line_and_the_rightmost_untrusted_address() {
    let srv = Server::start_with(
        TestDb::new(Backend::Sqlite),
        &[("SECCOLLAB_AUTH__REGISTRATION", "open"), ("SECCOLLAB_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]")],
    );
    register(&srv, "olga@example.org");
    let body = json!({"email": "olga@example.org", "password": "a wrong password"}).to_string();
    // The client forges a first line; the proxy appends the client's real address in a second.
    let head = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-For: 203.0.113.7\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = raw(&srv, &head);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    wait_until("the failed sign-in in the audit log", 10, || {
        srv.db.sql("SELECT ip FROM audit_log WHERE action = 'auth.login' AND outcome = 'failure'") == "203.0.113.7"
    });
}

#[test]
fn the_console_warns_about_an_untrusted_forwarder() {
    let srv = Server::start_with(TestDb::new(Backend::Sqlite), &[("SECCOLLAB_AUTH__REGISTRATION", "open")]);
    admin_password_only(&srv, "root@example.org");
    let (mut b, _) = crate::admin_console::first_sign_in(&srv);
    srv.request("GET", "/api/health", &[("X-Forwarded-For", "198.51.100.4")], None);
    let p = b.get("/admin/system");
    assert_eq!(p.status, 200);
    assert!(p.body.contains("X-Forwarded-For") && p.body.contains("127.0.0.1"), "{}", p.body);
}

both_backends!(range_numbers_too_large_never_give_a_wrong_body, |b: Backend| {
    let srv = crate::auth::open_server(b);
    let tok = user_token(&srv, "pia@example.org")["token"].as_str().unwrap().to_string();
    let body: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let id = crate::files::upload(&srv, &tok, "r.bin", &body)["file_id"].as_str().unwrap().to_string();
    crate::files::scanned(&srv, &tok, &id);
    let r = crate::files::download(&srv, &tok, &id, Some("bytes=0-18446744073709551615"));
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 0-999/1000"));
    assert_eq!(r.body, body);
    let r = crate::files::download(&srv, &tok, &id, Some("bytes=10-99999999999999999999999"));
    assert!(r.status == 206 || r.status == 416, "{}", r.status);
    if r.status == 206 {
        assert_eq!(r.body, body[10..].to_vec());
    }
    let r = crate::files::download(&srv, &tok, &id, Some("bytes=18446744073709551615-"));
    assert_eq!(r.status, 416);
    let r = crate::files::download(&srv, &tok, &id, Some("bytes=-18446744073709551615"));
    assert!(r.status == 206 || r.status == 416, "{}", r.status);
    if r.status == 206 {
        assert_eq!(r.body, body);
    }
});

/// The `Set-Cookie` lines and the `Strict-Transport-Security` of a raw answer.
fn cookies_and_hsts(answer: &str) -> (Vec<String>, bool) {
    let head = answer.split("\r\n\r\n").next().unwrap_or("");
    let mut cookies = Vec::new();
    let mut hsts = false;
    for line in head.lines() {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("set-cookie:") {
            cookies.push(line["set-cookie:".len()..].trim().to_string());
        }
        hsts |= lower.starts_with("strict-transport-security:");
    }
    (cookies, hsts)
}

#[test]
fn cookies_are_secure_unless_on_localhost_and_hsts_follows_https() {
    let srv = Server::start_with(
        TestDb::new(Backend::Sqlite),
        &[("SECCOLLAB_AUTH__REGISTRATION", "open"), ("SECCOLLAB_SERVER__TRUSTED_PROXIES", "[\"127.0.0.1/32\"]")],
    );
    register(&srv, "quinn@example.org");
    // The web sign-in through a reverse proxy that sends `Host` (and maybe `X-Forwarded-Proto`).
    let sign_in = |host: &str, proto: &str| -> (Vec<String>, bool) {
        let page = raw(&srv, &format!("GET /login HTTP/1.1\r\nHost: {host}\r\n{proto}Connection: close\r\n\r\n"));
        let (mut cookies, _) = cookies_and_hsts(&page);
        let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).expect("csrf field");
        let jar: Vec<String> = cookies.iter().map(|c| c.split(';').next().unwrap().to_string()).collect();
        let body = format!("csrf={csrf}&email=quinn%40example.org&password={}", PASSWORD.replace(' ', "+"));
        let answer = raw(
            &srv,
            &format!(
                "POST /login HTTP/1.1\r\nHost: {host}\r\n{proto}Cookie: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                jar.join("; "),
                body.len()
            ),
        );
        assert!(answer.starts_with("HTTP/1.1 303"), "signed in: {answer}");
        let (more, hsts) = cookies_and_hsts(&answer);
        cookies.extend(more);
        (cookies, hsts)
    };
    let (cookies, hsts) = sign_in("files.example.org", "");
    assert!(cookies.iter().any(|c| c.starts_with("seccollab_session=")), "{cookies:?}");
    assert!(cookies.iter().all(|c| c.split(';').any(|a| a.trim() == "Secure")), "{cookies:?}");
    assert!(!hsts, "plain http: no HSTS");
    let (cookies, _) = sign_in("localhost", "");
    assert!(cookies.iter().all(|c| !c.split(';').any(|a| a.trim() == "Secure")), "{cookies:?}");
    let (cookies, hsts) = sign_in("files.example.org", "X-Forwarded-Proto: https\r\n");
    assert!(cookies.iter().all(|c| c.split(';').any(|a| a.trim() == "Secure")), "{cookies:?}");
    assert!(hsts, "https per the trusted proxy: HSTS");
}

both_backends!(parallel_uploads_never_overshoot_the_quota, |b: Backend| {
    let policy = policy_dir_with("[upload]\nquota_bytes_per_user = 100000\nmax_concurrent_per_user = 16\n");
    let srv = policy_server(b, &policy, &[]);
    let tok = user_token(&srv, "ruth@example.org")["token"].as_str().unwrap().to_string();
    let body = vec![7u8; 40_000];
    let ok = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| {
        for i in 0..8 {
            let (srv, tok, body, ok) = (&srv, &tok, &body, &ok);
            s.spawn(move || {
                let r = crate::files::upload_raw(
                    srv,
                    tok,
                    &crate::files::multipart(&format!("q{i}.bin"), "application/octet-stream", body, None),
                );
                match r.status {
                    201 => {
                        ok.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    _ => r.assert_error(507, "quota_exceeded"),
                }
            });
        }
    });
    assert_eq!(ok.load(std::sync::atomic::Ordering::SeqCst), 2, "two 40 kB files fit in 100 kB, not three");
    let used: i64 = srv.db.sql("SELECT coalesce(sum(size), 0) FROM files").parse().unwrap();
    assert!(used <= 100_000, "{used}");
});

both_backends!(a_tampered_log_leaves_no_connection_inside_a_read_transaction, |b: Backend| {
    let srv = crate::auth::open_server(b);
    let admin = admin_token(&srv);
    for i in 0..5 {
        user_token(&srv, &format!("t{i}@example.org"));
    }
    wait_until("entries", 10, || srv.db.sql("SELECT count(*) FROM audit_log").parse::<i64>().unwrap() > 10);
    srv.db.sql("UPDATE audit_log SET details = '{\"forged\":true}' WHERE seq = 3");
    for _ in 0..6 {
        assert_eq!(get(&srv, "/api/audit/verify", &admin).json()["ok"], false);
    }
    if b == Backend::Postgres {
        wait_until("no session idle in a transaction", 5, || {
            srv.db.sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND state = 'idle in transaction'",
            ) == "0"
        });
    }
    // The pool still writes.
    user_token(&srv, "after@example.org");
});

/// Polls `f` for up to half a second (a PostgreSQL notification takes milliseconds; the
/// per-node session cache that used to hide revocations kept entries for seconds).
fn soon(what: &str, f: impl FnMut() -> bool) {
    crate::harness::wait_until(what, 1, f);
}

#[test]
fn revocations_hold_at_once_on_every_node() {
    use crate::realtime::Ws;
    let a = crate::auth::open_server(Backend::Postgres);
    let b = a.start_peer(&[("SECCOLLAB_AUTH__REGISTRATION", "open")]);
    let me = |srv: &Server, t: &str| get(srv, "/api/auth/me", t).status;

    // Signed out on node A: node B refuses the token at once (its cache held it a moment ago).
    let t = user_token(&a, "sam@example.org")["token"].as_str().unwrap().to_string();
    assert_eq!(me(&b, &t), 200);
    let mut ws = Ws::connect(&b, &t);
    assert_eq!(post(&a, "/api/auth/logout", Some(&t), json!({})).status, 204);
    soon("node B refusing a token signed out on node A", || me(&b, &t) == 401);
    let (code, _) = ws.until_closed(Duration::from_secs(2));
    assert!(code.is_none() || code != Some(1000), "closed as revoked: {code:?}");

    // Disabled by an admin on node A: node B's socket and token die at once.
    let admin = admin_token(&a);
    let u = user_token(&a, "tia@example.org");
    let (t, id) = (u["token"].as_str().unwrap().to_string(), u["user"]["id"].as_str().unwrap().to_string());
    assert_eq!(me(&b, &t), 200);
    let mut ws = Ws::connect(&b, &t);
    assert_eq!(post(&a, &format!("/api/admin/users/{id}/disable"), Some(&admin), json!({})).status, 204);
    soon("node B refusing a disabled user", || me(&b, &t) != 200);
    ws.until_closed(Duration::from_secs(2));

    // Turning MFA off on node A changes every session of the account that passed it (none
    // has passed a second factor any more): node B's socket of such a session closes.
    let u = user_token(&a, "uma@example.org");
    let (secret, codes) = enrol_mfa(&a, u["token"].as_str().unwrap());
    let r = login_with_code(&a, "uma@example.org", &codes[0]);
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json()["token"].as_str().unwrap().to_string();
    let mut ws = Ws::connect(&b, &t);
    let r = post(
        &a,
        "/api/auth/mfa/disable",
        Some(&t),
        json!({"password": PASSWORD, "totp_code": totp(&secret, "+ 30 seconds")}),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    ws.until_closed(Duration::from_secs(2));
}

#[test]
fn a_cookie_socket_closes_when_its_web_session_idles_out() {
    use crate::realtime::Ws;
    let srv = crate::auth::open_server_env(Backend::Sqlite, &[("SECCOLLAB_REALTIME__SESSION_CHECK_SECS", "1")]);
    register(&srv, "val@example.org");
    // A web sign-in: the session cookie, then the page's WebSocket with it.
    let page = raw(&srv, "GET /login HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let (cookies, _) = cookies_and_hsts(&page);
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_string();
    let jar: Vec<String> = cookies.iter().map(|c| c.split(';').next().unwrap().to_string()).collect();
    let body = format!("csrf={csrf}&email=val%40example.org&password={}", PASSWORD.replace(' ', "+"));
    let answer = raw(
        &srv,
        &format!(
            "POST /login HTTP/1.1\r\nHost: localhost\r\nCookie: {}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            jar.join("; "),
            body.len()
        ),
    );
    let (cookies, _) = cookies_and_hsts(&answer);
    let session = cookies.iter().find(|c| c.starts_with("seccollab_session=")).expect("session cookie");
    let session = session.split(';').next().unwrap().to_string();
    let origin = srv.base.clone();
    let mut ws = Ws::open_with(&srv, "", &[("Cookie", &session), ("Origin", &origin)]);
    ws.send(json!({"event": "ping"}));
    assert!(ws.next(Duration::from_secs(5)).is_some(), "the socket is open");
    // No page is loaded for longer than the idle timeout (12 h; the session's last use is moved
    // back as the clock would): the socket closes with the session.
    srv.db.sql("UPDATE browser_sessions SET last_seen_at = last_seen_at - 13 * 3600 * 1000000");
    let (code, _) = ws.until_closed(Duration::from_secs(10));
    assert_ne!(code, Some(1000), "{code:?}");
}
