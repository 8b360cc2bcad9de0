//! The audit hash chain against direct tampering with the database (sqlite3 / psql), checked
//! with the real `seccollab audit verify`.

use crate::both_backends;
use crate::harness::{run_cli, Backend, TestDb};
use seccollab::audit::{AuditLog, NewAuditEntry, Outcome};
use seccollab::db::Db;

/// Appends `n` entries through the real group-commit writer.
fn seed(db: &TestDb, n: usize) {
    let cfg = db.config();
    let pool = Db::open(&cfg).expect("open");
    pool.migrate().expect("migrate");
    let log = AuditLog::start(pool, 4096, 65536);
    for i in 0..n {
        log.record_blocking(
            NewAuditEntry::new("test.event", if i % 7 == 0 { Outcome::Failure } else { Outcome::Success })
                .actor(Some(format!("user-{}", i % 13)))
                .target("file", format!("f{i}"))
                .client(Some("192.0.2.1".into()), Some("tester/1.0".into()))
                .details(serde_json::json!({"n": i, "note": "seed"})),
        );
    }
    log.shutdown_blocking();
}

fn verify(db: &TestDb) -> (i32, serde_json::Value) {
    let (code, out, err) = run_cli(&db.env(), &["audit", "verify"], None);
    let json =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("verify printed {out:?} ({e}); stderr {err}"));
    (code, json)
}

fn id_at(db: &TestDb, seq: i64) -> String {
    db.sql(&format!("SELECT id FROM audit_log WHERE seq = {seq}"))
}

both_backends!(untouched_log_of_100k_verifies, |b: Backend| {
    let db = TestDb::new(b);
    seed(&db, 100_000);
    let (code, r) = verify(&db);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["ok"], true);
    assert_eq!(r["checked"], 100_000);
    assert!(r["first_bad_id"].is_null());
});

both_backends!(edited_details_are_found, |b: Backend| {
    let db = TestDb::new(b);
    seed(&db, 1000);
    let victim = id_at(&db, 500);
    db.sql("UPDATE audit_log SET details = '{\"n\":499,\"note\":\"nothing to see\"}' WHERE seq = 500");
    let (code, r) = verify(&db);
    assert_eq!(code, 1);
    assert_eq!(r["ok"], false);
    assert_eq!(r["first_bad_id"], victim.as_str());
    assert_eq!(r["checked"], 499);
});

both_backends!(edited_outcome_with_recomputed_row_hash_is_found, |b: Backend| {
    // An attacker who edits a row and also replaces its stored hash still breaks the link to
    // the next entry.
    let db = TestDb::new(b);
    seed(&db, 50);
    db.sql("UPDATE audit_log SET outcome = 'success', hash = (SELECT hash FROM audit_log WHERE seq = 2) WHERE seq = 7");
    let (_, r) = verify(&db);
    assert_eq!(r["ok"], false);
    assert_eq!(r["first_bad_id"], id_at(&db, 7).as_str());
});

both_backends!(deleted_row_is_found, |b: Backend| {
    let db = TestDb::new(b);
    seed(&db, 1000);
    let after = id_at(&db, 301);
    db.sql("DELETE FROM audit_log WHERE seq = 300");
    let (code, r) = verify(&db);
    assert_eq!(code, 1);
    assert_eq!(r["first_bad_id"], after.as_str(), "the entry after the gap is named");
});

both_backends!(swapped_rows_are_found, |b: Backend| {
    let db = TestDb::new(b);
    seed(&db, 1000);
    let second = id_at(&db, 601);
    // Swap the contents of positions 600 and 601 (everything but the position itself).
    let cols = "id, at, actor_id, action, target_type, target_id, ip, user_agent, outcome, details, prev_hash, hash";
    db.sql(&format!(
        "CREATE TABLE tmp_swap AS SELECT seq, {cols} FROM audit_log WHERE seq IN (600, 601);
         UPDATE audit_log SET id = 'swap-' || id WHERE seq IN (600, 601);
         UPDATE audit_log SET ({cols}) = (SELECT {cols} FROM tmp_swap WHERE tmp_swap.seq = 601) WHERE seq = 600;
         UPDATE audit_log SET ({cols}) = (SELECT {cols} FROM tmp_swap WHERE tmp_swap.seq = 600) WHERE seq = 601;
         DROP TABLE tmp_swap;"
    ));
    assert_eq!(id_at(&db, 600), second);
    let (code, r) = verify(&db);
    assert_eq!(code, 1);
    assert_eq!(r["first_bad_id"], second.as_str());
});

both_backends!(inserted_and_truncated_rows_are_found, |b: Backend| {
    let db = TestDb::new(b);
    seed(&db, 100);
    // A forged entry appended past the head, copying a real row's fields.
    let cols = "at, actor_id, action, target_type, target_id, ip, user_agent, outcome, details, prev_hash, hash";
    db.sql(&format!(
        "INSERT INTO audit_log (seq, id, {cols}) SELECT 101, 'forged', {cols} FROM audit_log WHERE seq = 100"
    ));
    let (_, r) = verify(&db);
    assert_eq!(r["ok"], false);
    assert_eq!(r["first_bad_id"], "forged");
    // Removing the forgery and the real tail is also caught, through the recorded head.
    db.sql("DELETE FROM audit_log WHERE seq >= 99");
    let (code, r) = verify(&db);
    assert_eq!(code, 1);
    assert_eq!(r["ok"], false);
    assert_eq!(r["checked"], 98);
    assert!(r["reason"].as_str().unwrap().contains("removed from the end"), "{r}");
});

both_backends!(anchored_head_catches_a_clean_truncation_and_an_older_database, |b: Backend| {
    use crate::auth::user_token;
    use crate::harness::Server;
    // A real server writes entries and anchors the head (outside the database) at shutdown.
    let mut srv = Server::start_with(TestDb::new(b), &[("SECCOLLAB_AUTH__REGISTRATION", "open")]);
    user_token(&srv, "first@example.org");
    assert_eq!(srv.stop(), 0);
    let db = srv.take_db();
    let anchor_file = db.dir.path().join("data/audit-anchor.json");
    let first: serde_json::Value = serde_json::from_slice(&std::fs::read(&anchor_file).unwrap()).unwrap();
    // An older copy of the database (SQLite: the file itself).
    let old_copy = db.dir.path().join("old.db");
    if b == Backend::Sqlite {
        std::fs::copy(db.sqlite_path(), &old_copy).unwrap();
    }
    let mut srv = Server::start_with(db, &[("SECCOLLAB_AUTH__REGISTRATION", "open")]);
    for i in 0..3 {
        user_token(&srv, &format!("more{i}@example.org"));
    }
    assert_eq!(srv.stop(), 0);
    let db = srv.take_db();
    let anchor: serde_json::Value = serde_json::from_slice(&std::fs::read(&anchor_file).unwrap()).unwrap();
    let head = anchor["seq"].as_i64().unwrap();
    assert!(head > first["seq"].as_i64().unwrap(), "the anchor follows the head");
    let (code, r) = verify(&db);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["anchor"]["status"], "ok");
    assert_eq!(r["anchor"]["seq"], head);

    // Cut the last 10 entries and move the recorded head back with them: the chain alone is
    // consistent again, the anchor is not.
    let cut = head - 10;
    let new_hash = db.sql(&format!("SELECT hash FROM audit_log WHERE seq = {cut}"));
    db.sql(&format!("DELETE FROM audit_log WHERE seq > {cut}"));
    db.sql(&format!("UPDATE audit_head SET seq = {cut}, hash = '{new_hash}'"));
    let (code, r) = verify(&db);
    assert_eq!(code, 1, "{r}");
    assert_eq!(r["ok"], false);
    assert_eq!(r["anchor"]["status"], "mismatch");
    assert!(r["reason"].as_str().unwrap().contains("removed from the end"), "{r}");

    if b == Backend::Sqlite {
        // The whole database swapped for the older copy.
        for ext in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", db.sqlite_path().display()));
        }
        std::fs::copy(&old_copy, db.sqlite_path()).unwrap();
        let (code, r) = verify(&db);
        assert_eq!(code, 1, "{r}");
        assert_eq!(r["anchor"]["status"], "mismatch", "{r}");
    }

    // A forged anchor file (moved forward by hand) does not verify either.
    let mut forged = anchor.clone();
    forged["seq"] = serde_json::json!(1);
    std::fs::write(&anchor_file, serde_json::to_vec(&forged).unwrap()).unwrap();
    let (code, r) = verify(&db);
    assert_eq!(code, 1, "{r}");
    assert!(r["reason"].as_str().unwrap().contains("does not verify"), "{r}");
});

both_backends!(filtering_by_actor_pages_through_every_entry_of_that_actor, |b: Backend| {
    // 10,000 entries of 13 actors: on SQLite most of them are in the batched actor index
    // (`audit_actor`, extended every 4,096 entries) and the rest in the tail after its mark, so
    // a walk by actor crosses from one to the other.
    use seccollab::audit::query::list;
    use seccollab::audit::LogFilter;
    let db = TestDb::new(b);
    let n = 10_000i64;
    seed(&db, n as usize);
    if b == Backend::Sqlite {
        let mark: i64 = db.sql("SELECT seq FROM audit_actor_mark").trim().parse().unwrap();
        assert!(mark > n - 4096 && mark < n, "mark {mark}: the walk should cover index and tail");
    }
    let pool = Db::open(&db.config()).expect("open");
    let mut conn = pool.get().expect("connection");
    // Entry i (seq i + 1) belongs to user-(i % 13) and failed when i % 7 == 0.
    for (actor, failures_only) in [(0, false), (5, false), (12, true)] {
        let filter = LogFilter {
            actor_id: Some(format!("user-{actor}")),
            outcome: failures_only.then(|| "failure".to_string()),
            ..Default::default()
        };
        let expected: Vec<i64> =
            (1..=n).rev().filter(|s| (s - 1) % 13 == actor && (!failures_only || (s - 1) % 7 == 0)).collect();
        let mut got = Vec::new();
        let mut before = None;
        loop {
            let page = list(&mut conn, &filter, before, 100).expect("list");
            assert!(page.len() <= 100);
            assert!(page.iter().all(|r| r.actor_id.as_deref() == Some(filter.actor_id.as_deref().unwrap())));
            let Some(last) = page.last() else { break };
            before = Some(last.seq);
            got.extend(page.iter().map(|r| r.seq));
        }
        assert_eq!(got, expected, "actor {actor}, failures only: {failures_only}");
    }
    // A page that starts inside the indexed part.
    let filter = LogFilter { actor_id: Some("user-3".into()), ..Default::default() };
    let page = list(&mut conn, &filter, Some(2000), 5).expect("list");
    let expected: Vec<i64> = (1..2000).rev().filter(|s| (s - 1) % 13 == 3).take(5).collect();
    assert_eq!(page.iter().map(|r| r.seq).collect::<Vec<_>>(), expected);
});
