//! The command line: config errors, config check, users, usage errors.

use std::os::unix::fs::PermissionsExt;

use crate::both_backends;
use crate::harness::{command, run_cli, Backend, TestDb};

#[test]
fn unknown_config_key_names_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("seccollab.toml");
    std::fs::write(&f, "[server]\nport = 8001\nlisten_adress = \"0.0.0.0\"\n").unwrap();
    let (code, _, err) = run_cli(&[], &["--config", f.to_str().unwrap(), "config", "check"], None);
    assert_ne!(code, 0);
    assert!(err.contains("listen_adress"), "{err}");
    assert!(err.contains("seccollab.toml"), "{err}");
}

#[test]
fn bad_type_and_bad_env_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.toml");
    std::fs::write(&f, "[server]\nport = \"eighty\"\n").unwrap();
    let (code, _, err) = run_cli(&[], &["--config", f.to_str().unwrap(), "config", "check"], None);
    assert_ne!(code, 0);
    assert!(err.contains("port"), "{err}");
    let env = vec![("SECCOLLAB_AUTH__REGISTRATION".to_string(), "sometimes".to_string())];
    let (code, _, err) = run_cli(&env, &["config", "check"], None);
    assert_ne!(code, 0);
    assert!(err.contains("registration") || err.contains("sometimes"), "{err}");
    let (code, _, err) = run_cli(&[], &["--config", "/nonexistent/seccollab.toml", "config", "check"], None);
    assert_ne!(code, 0);
    assert!(err.contains("/nonexistent/seccollab.toml"), "{err}");
    // A value out of its range names the key and the range.
    let env = vec![("SECCOLLAB_REALTIME__PRESENCE_HEARTBEAT_SECS".to_string(), "0".to_string())];
    let (code, _, err) = run_cli(&env, &["config", "check"], None);
    assert_ne!(code, 0);
    assert!(err.contains("realtime.presence_heartbeat_secs") && err.contains("between 1 and 3600"), "{err}");
}

#[test]
fn config_check_redacts_secrets_and_shows_env_overrides() {
    let env = vec![
        ("SECCOLLAB_SMTP__PASSWORD".to_string(), "hunter2-smtp".to_string()),
        ("SECCOLLAB_DATABASE__URL".to_string(), "postgres://app:s3cret@db.example/sc".to_string()),
        ("SECCOLLAB_SERVER__PORT".to_string(), "8081".to_string()),
    ];
    let (code, out, err) = run_cli(&env, &["config", "check"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("port = 8081"), "{out}");
    assert!(!out.contains("hunter2-smtp") && !out.contains("s3cret"), "{out}");
    assert!(out.contains("<redacted>"), "{out}");
    assert!(out.contains("registration = \"invite\""), "{out}");
}

#[test]
fn world_readable_key_file_stops_the_server() {
    let db = TestDb::new(Backend::Sqlite);
    // First start generates the keys.
    let (code, _, err) = run_cli(&db.env(), &["user", "list"], None);
    assert_eq!(code, 0, "{err}");
    let key = db.dir.path().join("data/keys/master.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = command(&db.env()).arg("serve").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("master.key") && err.contains("chmod 600"), "{err}");
}

#[test]
fn bad_arguments_print_usage() {
    let (code, _, err) = run_cli(&[], &["frobnicate"], None);
    assert_eq!(code, 2);
    assert!(err.contains("Usage"), "{err}");
    let (code, out, _) = run_cli(&[], &["--version"], None);
    assert_eq!(code, 0);
    assert!(out.contains(env!("CARGO_PKG_VERSION")));
}

both_backends!(user_add_list_disable, |b: Backend| {
    let db = TestDb::new(b);
    let env = db.env();
    let add = ["user", "add", "--email", "Alice@Example.org", "--display-name", "Alice", "--admin", "--password-stdin"];
    let (code, out, err) = run_cli(&env, &add, Some("a long enough passphrase\n"));
    assert_eq!(code, 0, "{err}");
    let u: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(u["email"], "alice@example.org");
    assert_eq!(u["role"], "admin");
    // Same email again: refused, clearly.
    let (code, _, err) = run_cli(&env, &add, Some("a long enough passphrase\n"));
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");
    // Weak password: refused with the reason.
    let (code, _, err) = run_cli(
        &env,
        &["user", "add", "--email", "bob@example.org", "--display-name", "Bob", "--password-stdin"],
        Some("short\n"),
    );
    assert_ne!(code, 0);
    assert!(err.contains("at least 12"), "{err}");
    let (code, out, _) = run_cli(&env, &["user", "list"], None);
    assert_eq!(code, 0);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(!out.contains("argon2"), "never print hashes");
    let (code, _, err) = run_cli(&env, &["user", "disable", "alice@example.org"], None);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run_cli(&env, &["user", "list"], None);
    assert!(out.contains("\"disabled\":true"), "{out}");
    let (code, _, err) = run_cli(&env, &["user", "disable", "nobody@example.org"], None);
    assert_ne!(code, 0);
    assert!(err.contains("no such user"), "{err}");
    // The break-glass undo of a suspension: enable from the command line.
    db.sql("UPDATE users SET suspended_at = 1, suspended_reason = 'mass_sharing'");
    let (_, out, _) = run_cli(&env, &["user", "list"], None);
    assert!(out.contains("\"suspended_by_rule\":\"mass_sharing\""), "{out}");
    let (code, out, err) = run_cli(&env, &["user", "enable", "alice@example.org"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("enabled alice@example.org"), "{out}");
    let (_, out, _) = run_cli(&env, &["user", "list"], None);
    assert!(out.contains("\"disabled\":false") && !out.contains("suspended_by_rule"), "{out}");
    let (code, _, _) = run_cli(&env, &["user", "disable", "alice@example.org"], None);
    assert_eq!(code, 0);
    // The password hash is argon2id in the database.
    let hash = db.sql("SELECT password_hash FROM users");
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    // Creation and disabling were audited and the chain is intact.
    let (code, out, _) = run_cli(&env, &["audit", "verify"], None);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        db.sql(
            "SELECT count(*) FROM audit_log WHERE action IN ('user.create', 'admin.user_disable', 'admin.user_enable')"
        ),
        "4"
    );
});
