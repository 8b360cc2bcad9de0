//! Objects the database does not know (orphans): never deleted on sight.
//!
//! A crash between storing an object and recording it leaves an orphan; so does starting once
//! against the wrong database (a typo in `database.url`, an older backup) — and then *every*
//! object looks like one. So orphans are only ever **moved aside** to `<data_dir>/orphans/`
//! (still encrypted, byte for byte) and removed after `storage.orphan_retention_days`; and the
//! start-up sweep moves nothing when the database knows no file at all, or when the orphans are
//! more than `storage.orphan_max_share` of the store: it raises a `storage_orphans_held` alert
//! and leaves the decision to an operator (`seccollab storage orphans`, docs/operations.md).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use diesel::prelude::*;
use serde::Serialize;

use crate::db::schema::files;

/// Where moved-aside objects are kept.
pub fn aside_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("orphans")
}

/// Kind of the alert raised when the sweep holds back.
pub const ALERT_KIND: &str = "storage_orphans_held";

/// How far a sweep may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    /// Start-up: only while the orphans are a small share of the store.
    Cautious,
    /// An operator's explicit command: every orphan.
    All,
}

/// What a sweep found and did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SweepReport {
    /// Objects in the store.
    pub objects: usize,
    /// Objects the database knows no file for.
    pub orphans: Vec<String>,
    /// How many of them were moved aside now.
    pub moved: usize,
    /// Why nothing was moved, when the sweep held back.
    pub held: Option<String>,
    /// Moved-aside objects past their retention, removed now.
    pub purged: usize,
}

/// An object kept aside.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AsideObject {
    pub key: String,
    pub bytes: u64,
    /// RFC 3339 time it was moved aside.
    pub moved_at: String,
}

/// The store's keys the database knows no file for, and the store's size in objects.
pub fn find(state: &crate::AppState) -> Result<(Vec<String>, usize, usize), String> {
    let keys = state.storage.list().map_err(|e| e.to_string())?;
    let mut conn = state.db.get().map_err(|e| e.to_string())?;
    let known: HashSet<String> = files::table
        .select(files::storage_key)
        .load::<String>(&mut *conn)
        .map_err(|e| e.to_string())?
        .into_iter()
        .collect();
    let mut orphans: Vec<String> = keys.iter().filter(|k| !known.contains(*k)).cloned().collect();
    orphans.sort();
    Ok((orphans, keys.len(), known.len()))
}

/// Whether a cautious sweep may move `orphans` of a store of `objects` while the database
/// knows `known` files; the reason when it may not.
pub fn hold_reason(orphans: usize, objects: usize, known: usize, max_share: f64) -> Option<String> {
    if orphans == 0 {
        return None;
    }
    if known == 0 {
        return Some(format!(
            "the database knows no file but the store holds {objects} objects: is database.url right? nothing was moved"
        ));
    }
    let allowed = (objects as f64 * max_share).floor() as usize;
    if orphans > allowed.max(1) {
        return Some(format!(
            "{orphans} of {objects} stored objects are unknown to the database (more than storage.orphan_max_share = {max_share}): is database.url right? nothing was moved"
        ));
    }
    None
}

/// Finds orphans and moves them aside (all, or within the share for [`Sweep::Cautious`]);
/// removes moved-aside objects past their retention.
pub fn sweep(state: &crate::AppState, how: Sweep) -> Result<SweepReport, String> {
    let cfg = &state.config.storage;
    let purged = purge_expired(&cfg.data_dir, cfg.orphan_retention_days)?;
    let (orphans, objects, known) = find(state)?;
    let held = match how {
        Sweep::Cautious => hold_reason(orphans.len(), objects, known, cfg.orphan_max_share),
        Sweep::All => None,
    };
    let mut moved = 0;
    if held.is_none() {
        for k in &orphans {
            move_aside(state, k)?;
            moved += 1;
        }
    }
    if moved > 0 {
        tracing::warn!(moved, dir = %aside_dir(&cfg.data_dir).display(), "moved objects unknown to the database aside");
    }
    Ok(SweepReport { objects, orphans, moved, held, purged })
}

/// Copies object `key` to the aside folder (durably), then removes it from the store.
pub fn move_aside(state: &crate::AppState, key: &str) -> Result<(), String> {
    let dir = aside_dir(&state.config.storage.data_dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (dest, tmp) = (dir.join(key), dir.join(format!("{key}.partial")));
    let mut src = state.storage.get(key, 0).map_err(|e| format!("object {key}: {e}"))?;
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::io::copy(&mut src, &mut f).map_err(|e| format!("object {key}: {e}"))?;
        f.flush().and_then(|()| f.sync_all()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    state.storage.delete(key).map_err(|e| format!("object {key}: {e}"))
}

/// Puts a moved-aside object back into the store (the right database is back).
pub fn put_back(state: &crate::AppState, key: &str) -> Result<u64, String> {
    if !key.bytes().all(|b| b.is_ascii_hexdigit()) || key.is_empty() {
        return Err(format!("{key:?} is not an object key"));
    }
    let path = aside_dir(&state.config.storage.data_dir).join(key);
    let mut f = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut w = state.storage.put(key).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        if let Err(e) = w.write(&buf[..n]) {
            w.abort();
            return Err(e.to_string());
        }
    }
    let n = w.commit().map_err(|e| e.to_string())?;
    std::fs::remove_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(n)
}

/// The objects kept aside, oldest first.
pub fn list_aside(data_dir: &Path) -> Result<Vec<AsideObject>, String> {
    let dir = aside_dir(data_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    let mut out: Vec<(std::time::SystemTime, AsideObject)> = Vec::new();
    for e in entries.flatten() {
        let key = e.file_name().to_string_lossy().into_owned();
        if key.ends_with(".partial") {
            continue;
        }
        let Ok(meta) = e.metadata() else { continue };
        let at = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        let micros = at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0);
        out.push((at, AsideObject { key, bytes: meta.len(), moved_at: crate::time::micros_to_rfc3339(micros) }));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.key.cmp(&b.1.key)));
    Ok(out.into_iter().map(|(_, o)| o).collect())
}

/// Removes moved-aside objects older than `days` (0: keep for ever); how many.
pub fn purge_expired(data_dir: &Path, days: u64) -> Result<usize, String> {
    if days == 0 {
        return Ok(0);
    }
    let dir = aside_dir(data_dir);
    let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(0) };
    let keep = std::time::Duration::from_secs(days * 86_400);
    let mut n = 0;
    for e in entries.flatten() {
        let old = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok()).is_some_and(|a| a > keep);
        if old && std::fs::remove_file(e.path()).is_ok() {
            n += 1;
        }
    }
    Ok(n)
}

/// Raises a [`ALERT_KIND`] alert (once while unacknowledged) saying why the sweep held back.
pub fn alert_held(state: &crate::AppState, why: &str, orphans: usize) {
    use crate::db::schema::security_alerts as sa;
    let Ok(mut conn) = state.db.get() else { return };
    let open: i64 = sa::table
        .filter(sa::kind.eq(ALERT_KIND))
        .filter(sa::acked_at.is_null())
        .count()
        .get_result(&mut *conn)
        .unwrap_or(0);
    if open > 0 {
        return;
    }
    let details = serde_json::json!({"summary": why, "orphans": orphans});
    if let Ok(id) = crate::security::alerts::raise(&mut conn, ALERT_KIND, "high", None, &details) {
        let ev = crate::security::alerts::event(&id, ALERT_KIND, "high", None, &details);
        crate::security::alerts::announce(state, &mut conn, ev);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cautious_sweep_holds_back_on_an_empty_database_or_a_large_share() {
        assert_eq!(hold_reason(0, 100, 100, 0.05), None);
        assert!(hold_reason(3, 3, 0, 0.05).unwrap().contains("knows no file"));
        assert_eq!(hold_reason(1, 3, 2, 0.05), None, "one orphan is always allowed");
        assert_eq!(hold_reason(5, 100, 95, 0.05), None);
        assert!(hold_reason(6, 100, 94, 0.05).unwrap().contains("6 of 100"));
    }

    #[test]
    fn purge_keeps_young_objects() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(aside_dir(dir.path())).unwrap();
        std::fs::write(aside_dir(dir.path()).join("abcdef0123"), b"x").unwrap();
        assert_eq!(purge_expired(dir.path(), 30).unwrap(), 0);
        assert_eq!(list_aside(dir.path()).unwrap().len(), 1);
        assert_eq!(purge_expired(dir.path(), 0).unwrap(), 0, "0 keeps for ever");
    }
}
