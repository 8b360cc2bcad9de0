//! Accounts and authentication over HTTP against the real binary, on SQLite and PostgreSQL.

use serde_json::{json, Value};

use crate::both_backends;
use crate::harness::{run_cli, Backend, Server, TestDb};

pub const PASSWORD: &str = "violet tractor sings at noon";

/// Registration open; a temp policy dir can be given.
pub fn open_server(b: Backend) -> Server {
    open_server_env(b, &[])
}

/// [`open_server`] with more environment.
pub fn open_server_env(b: Backend, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![("SECCOLLAB_AUTH__REGISTRATION", "open")];
    env.extend_from_slice(extra);
    Server::start_with(TestDb::new(b), &env)
}

pub fn post(srv: &Server, path: &str, token: Option<&str>, body: Value) -> crate::harness::Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        h.push(("Authorization", a.as_str()));
    }
    srv.request("POST", path, &h, Some(body.to_string().as_bytes()))
}

pub fn get(srv: &Server, path: &str, token: &str) -> crate::harness::Resp {
    srv.request("GET", path, &[("Authorization", &format!("Bearer {token}"))], None)
}

pub fn register(srv: &Server, email: &str) -> Value {
    let r = post(
        srv,
        "/api/auth/register",
        None,
        json!({"email": email, "password": PASSWORD, "display_name": email.split('@').next().unwrap()}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["user"].clone()
}

pub fn login(srv: &Server, email: &str, password: &str) -> crate::harness::Resp {
    post(srv, "/api/auth/login", None, json!({"email": email, "password": password}))
}

/// Tokens of a fresh signed-in user.
pub fn user_token(srv: &Server, email: &str) -> Value {
    register(srv, email);
    let r = login(srv, email, PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// An admin created with the CLI (as an operator would), signed in with its password only: the
/// session has not passed a second factor, so the admin API answers 403 `mfa_required`.
pub fn admin_password_only(srv: &Server, email: &str) -> String {
    let (code, _, err) = run_cli(
        &srv.db.env(),
        &["user", "add", "--email", email, "--display-name", "Root", "--admin", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert_eq!(code, 0, "{err}");
    let r = login(srv, email, PASSWORD);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["token"].as_str().unwrap().to_string()
}

/// Enrols TOTP for the signed-in `token`'s account; returns the secret and the recovery codes.
pub fn enrol_mfa(srv: &Server, token: &str) -> (String, Vec<String>) {
    let setup = post(srv, "/api/auth/mfa/setup", Some(token), json!({}));
    assert_eq!(setup.status, 200, "{}", setup.text());
    let secret = setup.json()["secret"].as_str().unwrap().to_string();
    let r = post(srv, "/api/auth/mfa/enable", Some(token), json!({"totp_code": totp(&secret, "")}));
    assert_eq!(r.status, 200, "{}", r.text());
    let codes =
        r.json()["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    (secret, codes)
}

/// Both sign-in steps with a recovery code (never replayed: each is used once).
pub fn login_with_code(srv: &Server, email: &str, code: &str) -> crate::harness::Resp {
    let step1 = login(srv, email, PASSWORD);
    assert_eq!(step1.status, 200, "{}", step1.text());
    let mfa_token = step1.json()["mfa_token"].as_str().expect("an MFA challenge").to_string();
    post(srv, "/api/auth/verify-mfa", None, json!({"mfa_token": mfa_token, "totp_code": code}))
}

/// An admin created with the CLI (as an operator would), enrolled in MFA and signed in through
/// both steps: the session the admin API accepts.
pub fn admin_token(srv: &Server) -> String {
    admin_token_for(srv, "root@example.org")
}

/// [`admin_token`] for another address.
pub fn admin_token_for(srv: &Server, email: &str) -> String {
    admin_with_codes(srv, email).0
}

/// [`admin_token_for`], with the recovery codes left (the first is used up) for more sign-ins.
pub fn admin_with_codes(srv: &Server, email: &str) -> (String, Vec<String>) {
    let first = admin_password_only(srv, email);
    let (_, mut codes) = enrol_mfa(srv, &first);
    let r = login_with_code(srv, email, &codes.remove(0));
    assert_eq!(r.status, 200, "{}", r.text());
    (r.json()["token"].as_str().unwrap().to_string(), codes)
}

/// A TOTP code from `oathtool` (the independent implementation) for `now OFFSET`.
pub fn totp(secret: &str, offset: &str) -> String {
    let out = std::process::Command::new("oathtool")
        .args(["--totp", "-b", secret, "-N", &format!("now {offset}")])
        .output()
        .expect("oathtool must be installed (./tests/run installs it)");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

both_backends!(register_login_me_refresh_logout, |b: Backend| {
    let srv = open_server(b);
    let user = register(&srv, "alice@example.org");
    assert_eq!(user["email"], "alice@example.org");
    assert_eq!(user["role"], "user");
    assert_eq!(user["mfa_enabled"], false);
    assert!(user["password_hash"].is_null());
    let t = login(&srv, "ALICE@example.org", PASSWORD).json();
    assert_eq!(t["user"]["id"], user["id"]);
    assert!(t["expires_in"].as_u64().unwrap() <= 900);
    let me = get(&srv, "/api/auth/me", t["token"].as_str().unwrap());
    assert_eq!(me.status, 200);
    assert_eq!(me.json()["user"]["email"], "alice@example.org");

    let r = post(&srv, "/api/auth/refresh", None, json!({"refresh_token": t["refresh_token"]}));
    assert_eq!(r.status, 200, "{}", r.text());
    let t2 = r.json();
    assert_ne!(t2["refresh_token"], t["refresh_token"]);
    let token2 = t2["token"].as_str().unwrap();
    assert_eq!(get(&srv, "/api/auth/me", token2).status, 200);

    assert_eq!(post(&srv, "/api/auth/logout", Some(token2), json!({})).status, 204);
    // Both access tokens of the session stop working at once, and so does its refresh token.
    get(&srv, "/api/auth/me", token2).assert_error(401, "invalid_token");
    get(&srv, "/api/auth/me", t["token"].as_str().unwrap()).assert_error(401, "invalid_token");
    post(&srv, "/api/auth/refresh", None, json!({"refresh_token": t2["refresh_token"]}))
        .assert_error(401, "invalid_refresh_token");
});

both_backends!(refresh_token_reuse_revokes_the_session, |b: Backend| {
    let srv = open_server(b);
    let t = user_token(&srv, "bob@example.org");
    let r1 = t["refresh_token"].clone();
    let t2 = post(&srv, "/api/auth/refresh", None, json!({"refresh_token": r1})).json();
    // The spent token comes back (stolen copy): the whole session dies.
    post(&srv, "/api/auth/refresh", None, json!({"refresh_token": r1})).assert_error(401, "refresh_token_reused");
    post(&srv, "/api/auth/refresh", None, json!({"refresh_token": t2["refresh_token"]}))
        .assert_error(401, "invalid_refresh_token");
    get(&srv, "/api/auth/me", t2["token"].as_str().unwrap()).assert_error(401, "invalid_token");
    // Other sessions of the same user are untouched.
    assert_eq!(login(&srv, "bob@example.org", PASSWORD).status, 200);
});

both_backends!(unknown_email_and_wrong_password_answer_alike, |b: Backend| {
    let srv = open_server(b);
    register(&srv, "carol@example.org");
    let a = login(&srv, "carol@example.org", "wrong password entirely");
    let n = login(&srv, "nobody@example.org", "wrong password entirely");
    a.assert_error(401, "invalid_credentials");
    assert_eq!(a.text(), n.text());
    post(&srv, "/api/auth/login", None, json!({"email": "", "password": "x"})).assert_error(400, "invalid_input");
});

both_backends!(mfa_enrol_login_replay_and_recovery, |b: Backend| {
    let srv = open_server(b);
    let t = user_token(&srv, "dave@example.org");
    let tok = t["token"].as_str().unwrap();
    let setup = post(&srv, "/api/auth/mfa/setup", Some(tok), json!({})).json();
    let secret = setup["secret"].as_str().unwrap().to_string();
    assert!(setup["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/SecCollab:dave%40example.org?secret="));
    assert!(setup["qr_svg"].as_str().unwrap().contains("<svg"));
    post(&srv, "/api/auth/mfa/enable", Some(tok), json!({"totp_code": "000000"})).assert_error(400, "invalid_mfa_code");
    let r = post(&srv, "/api/auth/mfa/enable", Some(tok), json!({"totp_code": totp(&secret, "")}));
    assert_eq!(r.status, 200, "{}", r.text());
    let codes: Vec<String> =
        r.json()["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    assert_eq!(codes.len(), 10);

    // Password step answers a challenge, not tokens.
    let step1 = login(&srv, "dave@example.org", PASSWORD).json();
    assert_eq!(step1["mfa_required"], true);
    assert!(step1["token"].is_null());
    let mfa_token = step1["mfa_token"].as_str().unwrap();
    // The next time step's code (accepted with ±1 step skew), from an independent implementation.
    let code = totp(&secret, "+ 30 seconds");
    let r = post(&srv, "/api/auth/verify-mfa", None, json!({"mfa_token": mfa_token, "totp_code": code}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["user"]["mfa_enabled"], true);
    // Replay of the same code in a new sign-in is refused.
    let step1 = login(&srv, "dave@example.org", PASSWORD).json();
    let mfa_token = step1["mfa_token"].as_str().unwrap();
    post(&srv, "/api/auth/verify-mfa", None, json!({"mfa_token": mfa_token, "totp_code": code}))
        .assert_error(401, "invalid_mfa_code");
    // A recovery code works, once.
    let r =
        post(&srv, "/api/auth/verify-mfa", None, json!({"mfa_token": mfa_token, "totp_code": codes[0].to_uppercase()}));
    assert_eq!(r.status, 200, "{}", r.text());
    let step1 = login(&srv, "dave@example.org", PASSWORD).json();
    post(&srv, "/api/auth/verify-mfa", None, json!({"mfa_token": step1["mfa_token"], "totp_code": codes[0]}))
        .assert_error(401, "invalid_mfa_code");
    // The seed's {email, totp_code} shape is refused: the mfa_token binds the two steps.
    post(&srv, "/api/auth/verify-mfa", None, json!({"email": "dave@example.org", "totp_code": codes[1]}))
        .assert_error(400, "invalid_json");
    // A used-up challenge is dead even for a good code.
    post(&srv, "/api/auth/verify-mfa", None, json!({"mfa_token": "made-up", "totp_code": codes[1]}))
        .assert_error(401, "invalid_mfa_token");
    // Disabling needs the password.
    post(
        &srv,
        "/api/auth/mfa/disable",
        Some(tok),
        json!({"password": "not my password at all", "totp_code": "123456"}),
    )
    .assert_error(403, "wrong_password");
    // The TOTP secret is not stored in clear.
    let stored = srv.db.sql("SELECT totp_secret_enc FROM users WHERE email = 'dave@example.org'");
    assert!(!stored.contains(&secret) && stored.len() > 40, "{stored}");
});

both_backends!(mfa_challenge_dies_after_five_wrong_codes, |b: Backend| {
    let srv = open_server(b);
    let t = user_token(&srv, "erin@example.org");
    let tok = t["token"].as_str().unwrap();
    let secret = post(&srv, "/api/auth/mfa/setup", Some(tok), json!({})).json()["secret"].as_str().unwrap().to_string();
    assert_eq!(post(&srv, "/api/auth/mfa/enable", Some(tok), json!({"totp_code": totp(&secret, "")})).status, 200);
    let mfa_token = login(&srv, "erin@example.org", PASSWORD).json()["mfa_token"].as_str().unwrap().to_string();
    for i in 0..5 {
        let r =
            post(&srv, "/api/auth/verify-mfa", None, json!({"mfa_token": mfa_token, "totp_code": format!("00000{i}")}));
        assert!(r.status == 401 || r.status == 423, "{}", r.text());
    }
    post(
        &srv,
        "/api/auth/verify-mfa",
        None,
        json!({"mfa_token": mfa_token, "totp_code": totp(&secret, "+ 30 seconds")}),
    )
    .assert_error(401, "invalid_mfa_token");
    // MFA failures count toward the account lock.
    login(&srv, "erin@example.org", PASSWORD).assert_error(423, "account_locked");
});

/// A policy folder with short locks so the tests need not wait minutes.
fn quick_policy() -> tempfile::TempDir {
    crate::harness::policy_dir_with(
        "[lockout]\nmax_failures = 3\nfirst_lock_secs = 2\nmax_lock_secs = 4\nip_free_failures = 8\nip_max_backoff_secs = 30\n",
    )
}

both_backends!(lockout_locks_then_unlocks_by_time_or_admin, |b: Backend| {
    let policy = quick_policy();
    let srv = Server::start_with(
        TestDb::new(b),
        &[
            ("SECCOLLAB_AUTH__REGISTRATION", "open"),
            ("SECCOLLAB_SECURITY__POLICY_DIR", policy.path().to_str().unwrap()),
        ],
    );
    let admin = admin_token(&srv);
    let user = register(&srv, "frank@example.org");
    login(&srv, "frank@example.org", "wrong guess number one").assert_error(401, "invalid_credentials");
    login(&srv, "frank@example.org", "wrong guess number two").assert_error(401, "invalid_credentials");
    let r = login(&srv, "frank@example.org", "wrong guess number three");
    r.assert_error(423, "account_locked");
    assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() >= 1);
    // The right password is refused while locked.
    login(&srv, "frank@example.org", PASSWORD).assert_error(423, "account_locked");
    // Admins see the lock and the audit log has it as a security event.
    let users = get(&srv, "/api/admin/users?q=frank", &admin).json();
    assert!(users["users"][0]["locked_until"].is_string(), "{users}");
    let logs = get(&srv, "/api/admin/logs?action=security.account_locked", &admin).json();
    assert_eq!(logs["entries"].as_array().unwrap().len(), 1, "{logs}");
    assert_eq!(logs["entries"][0]["details"]["email"], "frank@example.org");
    // An admin unlocks.
    let id = user["id"].as_str().unwrap();
    assert_eq!(post(&srv, &format!("/api/admin/users/{id}/unlock"), Some(&admin), json!({})).status, 204);
    assert_eq!(login(&srv, "frank@example.org", PASSWORD).status, 200);
    // Locked again; this time the (growing) window passes by itself.
    for _ in 0..3 {
        login(&srv, "frank@example.org", "still the wrong one");
    }
    let r = login(&srv, "frank@example.org", PASSWORD);
    r.assert_error(423, "account_locked");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(wait <= 4, "capped at max_lock_secs: {wait}");
    std::thread::sleep(std::time::Duration::from_secs(wait + 1));
    assert_eq!(login(&srv, "frank@example.org", PASSWORD).status, 200);
});

both_backends!(ip_backoff_is_not_evaded_by_forwarded_for, |b: Backend| {
    let policy = quick_policy();
    let srv = Server::start_with(
        TestDb::new(b),
        &[
            ("SECCOLLAB_AUTH__REGISTRATION", "open"),
            ("SECCOLLAB_SECURITY__POLICY_DIR", policy.path().to_str().unwrap()),
        ],
    );
    // Eight failures against eight different (unknown) accounts from one address.
    for i in 0..8 {
        login(&srv, &format!("ghost{i}@example.org"), "nope nope nope").assert_error(401, "invalid_credentials");
    }
    let r = login(&srv, "ghost99@example.org", "nope nope nope");
    r.assert_error(429, "rate_limited");
    assert!(r.header("retry-after").is_some());
    // A spoofed X-Forwarded-For from an untrusted peer changes nothing.
    let r = srv.request(
        "POST",
        "/api/auth/login",
        &[("Content-Type", "application/json"), ("X-Forwarded-For", "198.51.100.23")],
        Some(json!({"email": "ghost100@example.org", "password": "x"}).to_string().as_bytes()),
    );
    r.assert_error(429, "rate_limited");
});

both_backends!(password_change_ends_other_sessions, |b: Backend| {
    let srv = open_server(b);
    let a = user_token(&srv, "gina@example.org");
    let other = login(&srv, "gina@example.org", PASSWORD).json();
    let tok = a["token"].as_str().unwrap();
    post(
        &srv,
        "/api/auth/password",
        Some(tok),
        json!({"current_password": "not it at all", "new_password": "a brand new passphrase 42"}),
    )
    .assert_error(403, "wrong_password");
    post(&srv, "/api/auth/password", Some(tok), json!({"current_password": PASSWORD, "new_password": "password1234"}))
        .assert_error(400, "weak_password");
    let r = post(
        &srv,
        "/api/auth/password",
        Some(tok),
        json!({"current_password": PASSWORD, "new_password": "a brand new passphrase 42"}),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(get(&srv, "/api/auth/me", tok).status, 200, "the current session continues");
    get(&srv, "/api/auth/me", other["token"].as_str().unwrap()).assert_error(401, "invalid_token");
    login(&srv, "gina@example.org", PASSWORD).assert_error(401, "invalid_credentials");
    assert_eq!(login(&srv, "gina@example.org", "a brand new passphrase 42").status, 200);
});

both_backends!(registration_policy_and_invites, |b: Backend| {
    let srv = Server::start(b); // default policy: invite
    let admin = admin_token(&srv);
    let body = |code: Option<&str>| json!({"email": "hank@example.org", "password": PASSWORD, "display_name": "Hank", "invite_code": code});
    post(&srv, "/api/auth/register", None, body(None)).assert_error(403, "invite_required");
    post(&srv, "/api/auth/register", None, body(Some("guessed"))).assert_error(403, "invalid_invite");
    let inv =
        post(&srv, "/api/admin/invites", Some(&admin), json!({"email": "hank@example.org", "expires_in_hours": 1}));
    assert_eq!(inv.status, 201, "{}", inv.text());
    let code = inv.json()["code"].as_str().unwrap().to_string();
    // Bound to its email.
    let other = json!({"email": "ivy@example.org", "password": PASSWORD, "display_name": "Ivy", "invite_code": code});
    post(&srv, "/api/auth/register", None, other).assert_error(403, "invalid_invite");
    // Weak password: refused, invite not spent.
    let weak =
        json!({"email": "hank@example.org", "password": "password1234", "display_name": "Hank", "invite_code": code});
    post(&srv, "/api/auth/register", None, weak).assert_error(400, "weak_password");
    assert_eq!(post(&srv, "/api/auth/register", None, body(Some(&code))).status, 201);
    // Single use.
    let again =
        json!({"email": "hank2@example.org", "password": PASSWORD, "display_name": "Hank", "invite_code": code});
    post(&srv, "/api/auth/register", None, again).assert_error(403, "invalid_invite");
    post(&srv, "/api/admin/invites", Some(&admin), json!({"expires_in_hours": 0})).assert_error(400, "invalid_input");

    let closed = Server::start_with(TestDb::new(b), &[("SECCOLLAB_AUTH__REGISTRATION", "closed")]);
    post(&closed, "/api/auth/register", None, body(None)).assert_error(403, "registration_closed");
});

both_backends!(admin_disable_and_reset_mfa_take_effect_at_once, |b: Backend| {
    let srv = open_server(b);
    let admin = admin_token(&srv);
    let created = post(
        &srv,
        "/api/admin/users",
        Some(&admin),
        json!({"email": "jay@example.org", "display_name": "Jay", "password": PASSWORD}),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["user"]["id"].as_str().unwrap().to_string();
    post(
        &srv,
        "/api/admin/users",
        Some(&admin),
        json!({"email": "jay@example.org", "display_name": "Jay", "password": PASSWORD}),
    )
    .assert_error(409, "email_taken");
    let t = login(&srv, "jay@example.org", PASSWORD).json();
    let tok = t["token"].as_str().unwrap();
    // Non-admins are refused on admin calls.
    get(&srv, "/api/admin/users", tok).assert_error(403, "forbidden");
    assert_eq!(post(&srv, &format!("/api/admin/users/{id}/reset-mfa"), Some(&admin), json!({})).status, 204);
    get(&srv, "/api/auth/me", tok).assert_error(401, "invalid_token");
    let t = login(&srv, "jay@example.org", PASSWORD).json();
    assert_eq!(post(&srv, &format!("/api/admin/users/{id}/disable"), Some(&admin), json!({})).status, 204);
    get(&srv, "/api/auth/me", t["token"].as_str().unwrap()).assert_error(401, "invalid_token");
    login(&srv, "jay@example.org", PASSWORD).assert_error(403, "account_disabled");
    post(&srv, "/api/auth/refresh", None, json!({"refresh_token": t["refresh_token"]}))
        .assert_error(401, "invalid_refresh_token");
    post(&srv, "/api/admin/users/nope/disable", Some(&admin), json!({})).assert_error(404, "not_found");
    // The picker hides disabled users; the admin list shows them.
    let picker = get(&srv, "/api/auth/users?q=jay", &admin).json();
    assert_eq!(picker["users"].as_array().unwrap().len(), 0);
    let all = get(&srv, "/api/admin/users?q=jay", &admin).json();
    assert_eq!(all["users"][0]["disabled"], true);
});

both_backends!(user_picker_searches_and_paginates, |b: Backend| {
    let srv = open_server(b);
    let t = user_token(&srv, "kim@example.org");
    for n in ["zed", "zelda", "zeno", "max"] {
        register(&srv, &format!("{n}@example.org"));
    }
    let tok = t["token"].as_str().unwrap();
    let p1 = get(&srv, "/api/auth/users?q=ZE&limit=2", tok).json();
    assert_eq!(p1["users"].as_array().unwrap().len(), 2);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let p2 = get(&srv, &format!("/api/auth/users?q=ze&limit=2&cursor={cursor}"), tok).json();
    assert_eq!(p2["users"].as_array().unwrap().len(), 1);
    assert!(p2["next_cursor"].is_null());
    let all: Vec<&str> = p1["users"]
        .as_array()
        .unwrap()
        .iter()
        .chain(p2["users"].as_array().unwrap())
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|e| e.starts_with("ze")), "{all:?}");
    assert!(p1["users"][0].get("role").is_none(), "pickers see id, email and name only");
    get(&srv, "/api/auth/users?limit=0", tok).assert_error(400, "invalid_input");
    get(&srv, "/api/auth/users?cursor=zzz", tok).assert_error(400, "invalid_input");
});
