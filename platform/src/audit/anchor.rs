//! The anchored audit head: the latest `(seq, hash)` of the chain, MAC'd with a key that lives
//! in the keys folder and written **outside the database** (`<data_dir>/audit-anchor.json`),
//! periodically and at shutdown. The hash chain alone proves that no entry was altered inside
//! the log; it cannot show that the tail was cut off cleanly or that the whole database was
//! swapped for an older copy — the anchor can: `audit verify` then finds a log that ends before
//! the anchored entry, or an anchored entry with another hash.
//!
//! The anchor only ever moves **forward along the chain**: it is rewritten only when the
//! entry it names still carries the anchored hash and every entry from it to the new head
//! verifies. A log that is behind or off the anchor is never re-anchored (the server raises an
//! `audit_anchor_mismatch` alert instead, and `audit verify` fails) until an operator resets
//! it on purpose (`seccollab audit anchor --reset`, audited; `restore` does it for the
//! restored copy). The database also records the last anchor (`audit_anchor_state`), so an
//! anchor file removed once one existed is noticed too. Threat model: `docs/audit.md`.

use std::path::{Path, PathBuf};

use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::db::schema::{audit_anchor_state as aas, audit_head, audit_log};
use crate::db::Db;
use crate::keys::Keys;

pub const FILE: &str = "audit-anchor.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Anchor {
    pub seq: i64,
    pub hash: String,
    pub at: String,
    pub mac: String,
}

/// What the anchor says about the log, added to the verify report.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct AnchorCheck {
    /// `none` (never anchored yet), `ok`, or `mismatch`.
    pub status: String,
    pub seq: Option<i64>,
    pub at: Option<String>,
    pub reason: Option<String>,
}

fn mac(keys: &Keys, seq: i64, hash: &str, at: &str) -> String {
    crate::crypto::keyed_hash(&keys.hash_key, "seccollab.audit-anchor.v1", &format!("{seq}|{hash}|{at}"))
}

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// The anchor file, if one was written.
pub fn read(data_dir: &Path) -> Result<Option<Anchor>, String> {
    match std::fs::read(path(data_dir)) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| format!("{FILE}: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{FILE}: {e}")),
    }
}

/// Why the head was not anchored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnchorError {
    /// The log is behind or off the anchor: not re-anchored (an alert is due).
    Mismatch(String),
    /// The database or the anchor file could not be read or written.
    Io(String),
}

impl std::fmt::Display for AnchorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnchorError::Mismatch(why) => write!(f, "audit log does not match its anchor, not re-anchored: {why}"),
            AnchorError::Io(why) => f.write_str(why),
        }
    }
}

fn head(db: &Db) -> Result<(i64, String), String> {
    let mut conn = db.get().map_err(|e| e.to_string())?;
    audit_head::table.select((audit_head::seq, audit_head::hash)).first(&mut *conn).map_err(|e| e.to_string())
}

/// The last anchor the database records, if any.
fn recorded(db: &Db) -> Result<Option<(i64, String, i64)>, String> {
    let mut conn = db.get().map_err(|e| e.to_string())?;
    aas::table.select((aas::seq, aas::hash, aas::anchored_at)).first(&mut *conn).optional().map_err(|e| e.to_string())
}

/// Anchors the current head when it moved forward along the chain since the last anchor.
/// Returns the anchored seq; refuses ([`AnchorError::Mismatch`]) a log behind or off the
/// anchor, or an anchor file missing once one existed.
pub fn write(db: &Db, keys: &Keys, data_dir: &Path) -> Result<Option<i64>, AnchorError> {
    let io = AnchorError::Io;
    let (seq, hash) = head(db).map_err(io)?;
    let prior = check(db, keys, data_dir).map_err(io)?;
    if prior.status == "mismatch" {
        return Err(AnchorError::Mismatch(prior.reason.unwrap_or_default()));
    }
    if seq == 0 {
        return Ok(None);
    }
    if let Some(a) = read(data_dir).map_err(io)? {
        if a.seq == seq && a.hash == hash {
            return Ok(Some(seq));
        }
        // Forward along the chain only: every entry from the anchored one to the new head
        // must verify.
        if let Some(why) = super::query::chain_between(db, a.seq, &a.hash, seq, &hash).map_err(|e| io(e.to_string()))? {
            return Err(AnchorError::Mismatch(why));
        }
    }
    put(db, keys, data_dir, seq, &hash).map_err(io).map(Some)
}

/// Anchors the current head whatever the last anchor said: an operator's deliberate act after
/// a restore or an investigated mismatch (`seccollab audit anchor --reset`, `restore`).
pub fn reset(db: &Db, keys: &Keys, data_dir: &Path) -> Result<Option<i64>, String> {
    let (seq, hash) = head(db)?;
    if seq == 0 {
        let mut conn = db.get().map_err(|e| e.to_string())?;
        diesel::delete(aas::table).execute(&mut *conn).map_err(|e| e.to_string())?;
        match std::fs::remove_file(path(data_dir)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{FILE}: {e}")),
        }
        return Ok(None);
    }
    put(db, keys, data_dir, seq, &hash).map(Some)
}

/// Writes the anchor file (atomically) and the database's record of it.
fn put(db: &Db, keys: &Keys, data_dir: &Path, seq: i64, hash: &str) -> Result<i64, String> {
    let hash = hash.to_string();
    let now = crate::time::now_micros();
    let at = crate::time::micros_to_rfc3339(now);
    let anchor = Anchor { seq, mac: mac(keys, seq, &hash, &at), hash, at };
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    let body = serde_json::to_vec_pretty(&anchor).expect("anchor serialises");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        f.write_all(&body).and_then(|_| f.sync_all()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path(data_dir)).map_err(|e| format!("{FILE}: {e}"))?;
    if let Ok(dir) = std::fs::File::open(data_dir) {
        let _ = dir.sync_all();
    }
    let mut conn = db.get().map_err(|e| e.to_string())?;
    let h = anchor.hash.clone();
    crate::db::write_transaction(&mut conn, |c| {
        diesel::delete(aas::table).execute(c)?;
        diesel::insert_into(aas::table)
            .values((aas::id.eq(1), aas::seq.eq(seq), aas::hash.eq(&h), aas::anchored_at.eq(now)))
            .execute(c)
    })
    .map_err(|e: diesel::result::Error| e.to_string())?;
    Ok(seq)
}

/// Compares the log with the anchor.
pub fn check(db: &Db, keys: &Keys, data_dir: &Path) -> Result<AnchorCheck, String> {
    let Some(a) = read(data_dir)? else {
        if let Some((seq, _, at)) = recorded(db)? {
            let at = crate::time::micros_to_rfc3339(at);
            return Ok(AnchorCheck {
                status: "mismatch".into(),
                seq: Some(seq),
                at: Some(at.clone()),
                reason: Some(format!(
                    "{FILE} is missing but the database records entry {seq} anchored at {at}: the anchor file was removed"
                )),
            });
        }
        return Ok(AnchorCheck { status: "none".into(), seq: None, at: None, reason: None });
    };
    let mismatch = |why: String| AnchorCheck {
        status: "mismatch".into(),
        seq: Some(a.seq),
        at: Some(a.at.clone()),
        reason: Some(why),
    };
    if !bool::from(mac(keys, a.seq, &a.hash, &a.at).as_bytes().ct_eq(a.mac.as_bytes())) {
        return Ok(mismatch(format!("{FILE} does not verify: it was altered or comes from another installation")));
    }
    let mut conn = db.get().map_err(|e| e.to_string())?;
    let head: i64 = audit_head::table.select(audit_head::seq).first(&mut *conn).map_err(|e| e.to_string())?;
    let at_seq: Option<String> = audit_log::table
        .filter(audit_log::seq.eq(a.seq))
        .select(audit_log::hash)
        .first(&mut *conn)
        .optional()
        .map_err(|e| e.to_string())?;
    match at_seq {
        _ if head < a.seq => Ok(mismatch(format!(
            "the log ends at entry {head} but entry {} was anchored at {}: entries were removed from the end, or the database was replaced by an older copy",
            a.seq, a.at
        ))),
        None => Ok(mismatch(format!("the anchored entry {} is missing from the log", a.seq))),
        Some(h) if h != a.hash => Ok(mismatch(format!(
            "entry {} differs from the one anchored at {}: the log was rewritten",
            a.seq, a.at
        ))),
        Some(_) => Ok(AnchorCheck { status: "ok".into(), seq: Some(a.seq), at: Some(a.at), reason: None }),
    }
}

/// The chain check and the anchor check together; a failed check raises an
/// `audit_anchor_mismatch` alert (once while it stays unacknowledged).
pub fn verify_all(
    db: &Db,
    keys: &Keys,
    data_dir: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<super::VerifyReport, String> {
    let mut report = super::verify(db, progress).map_err(|e| e.to_string())?;
    let anchor = check(db, keys, data_dir)?;
    if report.ok && anchor.status == "mismatch" {
        report.ok = false;
        report.reason = anchor.reason.clone();
    }
    report.anchor = Some(anchor);
    if !report.ok {
        let why = report.reason.clone().unwrap_or_else(|| "the audit log does not verify".into());
        if let Err(e) = alert(db, &why) {
            tracing::error!(error = %e, "audit alert not raised");
        }
    }
    Ok(report)
}

/// Kind of the alert a log that does not verify raises.
pub const ALERT_KIND: &str = "audit_anchor_mismatch";

/// Raises an [`ALERT_KIND`] alert unless one is still unacknowledged; its id when raised.
pub fn alert(db: &Db, why: &str) -> Result<Option<String>, String> {
    use crate::db::schema::security_alerts as sa;
    let mut conn = db.get().map_err(|e| e.to_string())?;
    let open: i64 = sa::table
        .filter(sa::kind.eq(ALERT_KIND))
        .filter(sa::acked_at.is_null())
        .count()
        .get_result(&mut *conn)
        .map_err(|e| e.to_string())?;
    if open > 0 {
        return Ok(None);
    }
    let details = serde_json::json!({"summary": why, "reason": why});
    crate::security::alerts::raise(&mut conn, ALERT_KIND, "critical", None, &details)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Anchors the head every `audit.anchor_interval_secs` (the server also anchors at shutdown).
pub fn start(state: crate::AppState) {
    let every = state.config.audit.anchor_interval_secs;
    if every == 0 {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(every));
        loop {
            tick.tick().await;
            let st = state.clone();
            let r = tokio::task::spawn_blocking(move || anchor_or_alert(&st)).await;
            if let Err(e) = r {
                tracing::error!(error = %e, "audit anchoring task failed");
            }
        }
    });
}

/// Anchors the head; a log behind or off its anchor raises (and announces) an alert instead.
pub fn anchor_or_alert(state: &crate::AppState) {
    match write(&state.db, &state.keys, &state.config.storage.data_dir) {
        Ok(_) => {}
        Err(AnchorError::Mismatch(why)) => {
            tracing::error!(reason = %why, "audit log does not match its anchor; not re-anchored");
            match alert(&state.db, &why) {
                Ok(Some(id)) => {
                    if let Ok(mut c) = state.db.get() {
                        let details = serde_json::json!({"summary": why, "reason": why});
                        let ev = crate::security::alerts::event(&id, ALERT_KIND, "critical", None, &details);
                        crate::security::alerts::announce(state, &mut c, ev);
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "audit alert not raised"),
            }
        }
        Err(AnchorError::Io(e)) => tracing::error!(error = %e, "audit head not anchored"),
    }
}
