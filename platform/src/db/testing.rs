//! Helpers for unit tests that need a real SQLite database.

use diesel::connection::SimpleConnection;

use super::{Db, DbConnection};

/// A SQLite database in a fresh folder, migrations not run; the folder lives as long as the
/// first value.
pub(crate) fn sqlite_db() -> (tempfile::TempDir, Db) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = crate::config::Config::default();
    cfg.storage.data_dir = dir.path().to_path_buf();
    let db = Db::open(&cfg).unwrap();
    (dir, db)
}

/// [`sqlite_db`] with every migration run and these users (id, `<id>@example.org`) in it.
pub(crate) fn migrated_with_users(users: &[&str]) -> (tempfile::TempDir, Db) {
    let (dir, db) = sqlite_db();
    db.migrate().unwrap();
    let mut c = db.get().unwrap();
    for u in users {
        add_user(&mut c, u);
    }
    (dir, db)
}

/// Adds user `id` (e-mail `<id>@example.org`).
pub(crate) fn add_user(c: &mut DbConnection, id: &str) {
    c.batch_execute(&format!(
        "INSERT INTO users (id, email, display_name, created_at, updated_at) VALUES ('{id}', '{id}@example.org', '{id}', 0, 0)"
    ))
    .unwrap();
}
