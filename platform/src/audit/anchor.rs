//! The anchored audit head: the latest `(seq, hash)` of the chain, MAC'd with a key that lives
//! in the keys folder and written **outside the database** (`<data_dir>/audit-anchor.json`),
//! periodically and at shutdown. The hash chain alone proves that no entry was altered inside
//! the log; it cannot show that the tail was cut off cleanly or that the whole database was
//! swapped for an older copy — the anchor can: `audit verify` then finds a log that ends before
//! the anchored entry, or an anchored entry with another hash.

use std::path::{Path, PathBuf};

use diesel::prelude::*;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::db::schema::{audit_head, audit_log};
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

/// Anchors the current head (when it moved since the last anchor). Returns the anchored seq.
pub fn write(db: &Db, keys: &Keys, data_dir: &Path) -> Result<Option<i64>, String> {
    let mut conn = db.get().map_err(|e| e.to_string())?;
    let (seq, hash): (i64, String) =
        audit_head::table.select((audit_head::seq, audit_head::hash)).first(&mut *conn).map_err(|e| e.to_string())?;
    if seq == 0 {
        return Ok(None);
    }
    if let Ok(Some(a)) = read(data_dir) {
        if a.seq == seq && a.hash == hash {
            return Ok(Some(seq));
        }
    }
    let at = crate::time::micros_to_rfc3339(crate::time::now_micros());
    let anchor = Anchor { seq, mac: mac(keys, seq, &hash, &at), hash, at };
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    let body = serde_json::to_vec_pretty(&anchor).expect("anchor serialises");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
        f.write_all(&body).and_then(|_| f.sync_all()).map_err(|e| format!("{}: {e}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path(data_dir)).map_err(|e| format!("{FILE}: {e}"))?;
    Ok(Some(seq))
}

/// Compares the log with the anchor.
pub fn check(db: &Db, keys: &Keys, data_dir: &Path) -> Result<AnchorCheck, String> {
    let Some(a) = read(data_dir)? else {
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

/// The chain check and the anchor check together.
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
    Ok(report)
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
            let r = tokio::task::spawn_blocking(move || write(&st.db, &st.keys, &st.config.storage.data_dir)).await;
            if let Ok(Err(e)) = r {
                tracing::error!(error = %e, "audit head not anchored");
            }
        }
    });
}
