//! `seccollab backup` while the server runs, then `seccollab restore` into an empty installation
//! and a server on it: same users, same files byte for byte, intact audit chain — on SQLite and
//! PostgreSQL (pg_dump/pg_restore of one snapshot).

use std::os::unix::fs::PermissionsExt;

use serde_json::json;

use crate::auth::{get, login, post, user_token, PASSWORD};
use crate::both_backends;
use crate::files::{download, scanned, upload};
use crate::harness::{run_cli, Backend, Server, TestDb};

both_backends!(online_backup_restores_into_an_empty_installation, |b| {
    let srv = Server::start_with(TestDb::new(b), &[("SECCOLLAB_AUTH__REGISTRATION", "open")]);
    let t = user_token(&srv, "keeper@example.org");
    let tok = t["token"].as_str().unwrap().to_string();
    let mut files = Vec::new();
    for (i, len) in [0usize, 1, 70_000, 300_000].iter().enumerate() {
        let data: Vec<u8> = (0..*len).map(|j| (j * 31 + i) as u8).collect();
        let id = upload(&srv, &tok, &format!("f{i}.bin"), &data)["file_id"].as_str().unwrap().to_string();
        scanned(&srv, &tok, &id);
        files.push((id, data));
    }
    let r = post(
        &srv,
        "/api/schedules",
        Some(&tok),
        json!({
            "title": "Kept", "start_time": "2026-12-01T09:00:00Z", "end_time": "2026-12-01T10:00:00Z",
            "participants": [user_token(&srv, "guest@example.org")["user"]["id"]],
        }),
    );
    assert_eq!(r.status, 201, "{}", r.text());

    // Online, under write load: uploads keep coming while the backup is taken.
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("backup-1");
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (backup, during) = std::thread::scope(|sc| {
        let writer = sc.spawn(|| {
            let mut made = Vec::new();
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || made.len() < 3 {
                let data: Vec<u8> = (0..50_000 + i * 997).map(|j| (j * 7 + i) as u8).collect();
                let id = upload(&srv, &tok, &format!("load{i}.bin"), &data)["file_id"].as_str().unwrap().to_string();
                made.push((id, data));
                i += 1;
            }
            made
        });
        std::thread::sleep(std::time::Duration::from_millis(300));
        let r = run_cli(&srv.db.env(), &["backup", dir.to_str().unwrap()], None);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        (r, writer.join().unwrap())
    });
    let (code, out, err) = backup;
    assert_eq!(code, 0, "{err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let n = summary["objects"].as_u64().unwrap() as usize;
    assert!(n >= 4, "{summary}");
    assert!(err.contains(&format!("copied {n}/{n} objects")), "progress is shown: {err}");
    assert_eq!(summary["missing"], 0);
    assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
    let mode = std::fs::metadata(dir.join("keys/master.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(!work.path().join("backup-1.partial").exists());
    assert_eq!(get(&srv, "/api/files", &tok).status, 200, "the server kept serving");
    // A second backup into the same folder is refused, and changes nothing.
    let (code, _, err) = run_cli(&srv.db.env(), &["backup", dir.to_str().unwrap()], None);
    assert_ne!(code, 0);
    assert!(err.contains("exists"), "{err}");

    // Restore into a fresh, empty installation.
    let fresh = TestDb::new(b);
    let (code, out, err) = run_cli(&fresh.env(), &["restore", dir.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("\"objects\":{n}")), "{out}");
    // Restoring again on top is refused: the installation is not empty any more.
    let (code, _, err) = run_cli(&fresh.env(), &["restore", dir.to_str().unwrap()], None);
    assert_ne!(code, 0);
    assert!(err.contains("empty"), "{err}");

    let restored = Server::start_with(fresh, &[("SECCOLLAB_AUTH__REGISTRATION", "open")]);
    let r = login(&restored, "keeper@example.org", PASSWORD);
    assert_eq!(r.status, 200, "the account came back: {}", r.text());
    let tok2 = r.json()["token"].as_str().unwrap().to_string();
    for (id, data) in &files {
        let d = download(&restored, &tok2, id, None);
        assert_eq!(d.status, 200);
        assert!(d.body == *data, "file {id} differs after restore");
    }
    // Of the files uploaded during the backup, exactly those in the snapshot came back, each
    // byte for byte; none is listed without its content.
    let mut ids: Vec<String> = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = get(&restored, &format!("/api/files?limit=200{cursor}"), &tok2).json();
        ids.extend(page["files"].as_array().unwrap().iter().map(|f| f["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(ids.len(), n, "the restored installation lists what the backup holds");
    let mut from_load = 0;
    for (id, data) in &during {
        if ids.contains(id) {
            from_load += 1;
            scanned(&restored, &tok2, id); // uploads caught unscanned are rescanned at start
            let d = download(&restored, &tok2, id, None);
            assert!(d.status == 200 && d.body == *data, "file {id} uploaded during the backup differs");
        }
    }
    assert_eq!(from_load + files.len(), n);
    let s = get(&restored, "/api/schedules", &tok2).json();
    assert_eq!(s["schedules"][0]["title"], "Kept");
    let (code, out, err) = run_cli(&restored.db.env(), &["audit", "verify"], None);
    assert_eq!(code, 0, "{out} {err}");
    assert!(out.contains("\"ok\":true"), "{out}");
});

#[test]
fn restore_refuses_a_damaged_backup_and_the_wrong_backend() {
    let srv = Server::start_with(TestDb::new(Backend::Sqlite), &[("SECCOLLAB_AUTH__REGISTRATION", "open")]);
    let t = user_token(&srv, "k@example.org");
    upload(&srv, t["token"].as_str().unwrap(), "a.bin", &vec![7u8; 200_000]);
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("b");
    let (code, _, err) = run_cli(&srv.db.env(), &["backup", dir.to_str().unwrap()], None);
    assert_eq!(code, 0, "{err}");
    // A SQLite backup does not restore onto PostgreSQL.
    let pg = TestDb::new(Backend::Postgres);
    let (code, _, err) = run_cli(&pg.env(), &["restore", dir.to_str().unwrap()], None);
    assert_ne!(code, 0);
    assert!(err.contains("same backend"), "{err}");
    // A flipped byte in an object is caught by the manifest's checksum.
    let obj = std::fs::read_dir(dir.join("objects")).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&obj).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&obj, bytes).unwrap();
    let fresh = TestDb::new(Backend::Sqlite);
    let (code, _, err) = run_cli(&fresh.env(), &["restore", dir.to_str().unwrap()], None);
    assert_ne!(code, 0);
    assert!(err.contains("checksum"), "{err}");
    // Not a backup at all.
    let (code, _, err) = run_cli(&fresh.env(), &["restore", work.path().to_str().unwrap()], None);
    assert_ne!(code, 0);
    assert!(err.contains("manifest.json"), "{err}");
}

both_backends!(a_failed_migration_leaves_the_previous_schema_in_place, |b| {
    // An installation one version back: everything up to the messaging migration, data in it.
    let db = TestDb::new(b);
    let (code, _, err) = run_cli(&db.env(), &["migrate"], None);
    assert_eq!(code, 0, "{err}");
    db.sql(
        "DROP TABLE email_outbox; DROP TABLE notification_preferences; DROP TABLE notifications; \
         DROP TABLE schedule_participants; DROP TABLE schedules; \
         DELETE FROM __diesel_schema_migrations WHERE version LIKE '20261125000006%';",
    );
    let before = db.sql("SELECT count(*) FROM __diesel_schema_migrations");
    // Something the new migration does not expect is in the way (an operator's table, say), so
    // the upgrade's migration fails half-way: `schedules` would be created, `notifications` not.
    db.sql("CREATE TABLE notifications (something_else TEXT)");
    let (code, _, err) = run_cli(&db.env(), &["migrate"], None);
    assert_ne!(code, 0, "the migration should have failed");
    assert!(err.to_lowercase().contains("notifications"), "the error names what is in the way: {err}");
    // Nothing of the failed migration is left: the previous version's schema is intact.
    assert_eq!(db.sql("SELECT count(*) FROM __diesel_schema_migrations"), before);
    let schedules_exists = match b {
        Backend::Sqlite => db.sql("SELECT count(*) FROM sqlite_master WHERE name = 'schedules'"),
        Backend::Postgres => db.sql("SELECT count(*) FROM information_schema.tables WHERE table_name = 'schedules'"),
    };
    assert_eq!(schedules_exists, "0", "a half-applied migration was left behind");
    // The server refuses to start on it, saying why, instead of running on a half schema.
    let (code, _, err) = run_cli(&db.env(), &["serve"], None);
    assert_ne!(code, 0);
    assert!(err.contains("migration"), "{err}");
    // Once the obstacle is gone, the upgrade completes.
    db.sql("DROP TABLE notifications");
    let (code, out, err) = run_cli(&db.env(), &["migrate"], None);
    assert_eq!(code, 0, "{out} {err}");
});
