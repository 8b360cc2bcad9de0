//! Reading the audit log: filtered pages, streamed export, and chain verification.

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde::Serialize;

use super::writer::decode_hash;
use super::{AuditEntryView, AuditRow, GENESIS_HASH};
use crate::db::schema::{audit_head, audit_log};
use crate::db::{Db, DbConnection, DbError};

/// Filters of `GET /api/admin/logs`; every field narrows the result.
#[derive(Clone, Debug, Default)]
pub struct LogFilter {
    pub actor_id: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub ip: Option<String>,
    /// Inclusive lower bound, microseconds since the epoch.
    pub since: Option<i64>,
    /// Exclusive upper bound, microseconds since the epoch.
    pub until: Option<i64>,
}

/// Newest-first page of entries with `seq < before` matching `f`.
pub fn list(conn: &mut DbConnection, f: &LogFilter, before: Option<i64>, limit: i64) -> QueryResult<Vec<AuditRow>> {
    let mut q = audit_log::table.select(AuditRow::as_select()).into_boxed();
    if let Some(v) = &f.actor_id {
        q = q.filter(audit_log::actor_id.eq(v.clone()));
    }
    if let Some(v) = &f.action {
        q = q.filter(audit_log::action.eq(v.clone()));
    }
    if let Some(v) = &f.outcome {
        q = q.filter(audit_log::outcome.eq(v.clone()));
    }
    if let Some(v) = &f.ip {
        q = q.filter(audit_log::ip.eq(v.clone()));
    }
    if let Some(v) = f.since {
        q = q.filter(audit_log::at.ge(v));
    }
    if let Some(v) = f.until {
        q = q.filter(audit_log::at.lt(v));
    }
    if let Some(b) = before {
        q = q.filter(audit_log::seq.lt(b));
    }
    q.order(audit_log::seq.desc()).limit(limit).load(conn)
}

/// Export formats of `GET /api/admin/logs?format=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    Csv,
    Jsonl,
}

const CSV_HEADER: [&str; 10] =
    ["id", "at", "actor_id", "action", "target_type", "target_id", "ip", "user_agent", "outcome", "details"];

/// Cells a spreadsheet would run as a formula get a leading apostrophe (CSV injection).
fn csv_cell(s: &str) -> std::borrow::Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}").into()
    } else {
        s.into()
    }
}

/// Encodes a page of rows (plus the header before the first page).
pub fn encode_export(rows: Vec<AuditRow>, format: ExportFormat, first: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 256);
    match format {
        ExportFormat::Jsonl => {
            for r in rows {
                let v = AuditEntryView::from(r);
                serde_json::to_writer(&mut out, &v).expect("in-memory JSON");
                out.push(b'\n');
            }
        }
        ExportFormat::Csv => {
            let mut w = csv::Writer::from_writer(&mut out);
            if first {
                w.write_record(CSV_HEADER).expect("in-memory CSV");
            }
            for r in rows {
                let at = crate::time::micros_to_rfc3339(r.at);
                let o = |s: &Option<String>| s.clone().unwrap_or_default();
                let cells = [
                    r.id.clone(),
                    at,
                    o(&r.actor_id),
                    r.action.clone(),
                    o(&r.target_type),
                    o(&r.target_id),
                    o(&r.ip),
                    o(&r.user_agent),
                    r.outcome.clone(),
                    r.details.clone(),
                ];
                w.write_record(cells.iter().map(|c| csv_cell(c).into_owned())).expect("in-memory CSV");
            }
            w.flush().expect("in-memory CSV");
            drop(w);
        }
    }
    out
}

/// The result of walking the hash chain.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct VerifyReport {
    pub ok: bool,
    /// Entries found intact before the first bad one (all of them when `ok`).
    pub checked: u64,
    /// The first entry that was altered, inserted, moved, or follows a removed entry.
    pub first_bad_id: Option<String>,
    /// What is wrong, in words; absent when `ok`.
    pub reason: Option<String>,
}

const VERIFY_BATCH: i64 = 20_000;

/// Walks the whole chain in one consistent snapshot. Reading and hashing run on two threads;
/// `progress` is called with the running count after each batch.
pub fn verify(db: &Db, progress: &mut dyn FnMut(u64)) -> Result<VerifyReport, DbError> {
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<AuditRow>, DbError>>(4);
    let (head_tx, head_rx) = std::sync::mpsc::sync_channel::<(i64, String)>(1);
    let db2 = db.clone();
    let reader = std::thread::spawn(move || {
        let result = (|| -> Result<(), DbError> {
            let mut conn = db2.get()?;
            let begin = match &*conn {
                DbConnection::Sqlite(_) => "BEGIN",
                DbConnection::Pg(_) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            };
            conn.batch_execute(begin)?;
            let head: (i64, String) =
                audit_head::table.select((audit_head::seq, audit_head::hash)).first(&mut *conn)?;
            let _ = head_tx.send(head);
            let mut after = i64::MIN;
            loop {
                let rows: Vec<AuditRow> = audit_log::table
                    .filter(audit_log::seq.gt(after))
                    .order(audit_log::seq.asc())
                    .limit(VERIFY_BATCH)
                    .select(AuditRow::as_select())
                    .load(&mut *conn)?;
                let Some(last) = rows.last() else { break };
                after = last.seq;
                if tx.send(Ok(rows)).is_err() {
                    break;
                }
            }
            conn.batch_execute("COMMIT")?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = tx.send(Err(e));
        }
    });

    let bad = |checked, id: &str, why: String| VerifyReport {
        ok: false,
        checked,
        first_bad_id: Some(id.to_string()),
        reason: Some(why),
    };
    let Ok((head_seq, head_hash)) = head_rx.recv() else {
        // The reader failed before reading the head; its error is in the row channel.
        let err = rx.recv().ok().and_then(Result::err);
        let _ = reader.join();
        return Err(err.unwrap_or_else(|| DbError::Task("audit reader stopped".into())));
    };
    let mut prev = GENESIS_HASH;
    let mut expected_seq = 1i64;
    let mut checked = 0u64;
    let mut last_id: Option<String> = None;
    let mut report = None;
    'outer: for batch in rx.iter() {
        for row in batch? {
            if row.seq > head_seq {
                report = Some(bad(
                    checked,
                    &row.id,
                    format!("entry at position {} lies beyond the recorded head ({head_seq})", row.seq),
                ));
                break 'outer;
            }
            if row.seq != expected_seq {
                report = Some(bad(
                    checked,
                    &row.id,
                    format!(
                        "expected position {expected_seq} but found {}: entries were removed or reordered",
                        row.seq
                    ),
                ));
                break 'outer;
            }
            if decode_hash(&row.prev_hash) != prev {
                report = Some(bad(
                    checked,
                    &row.id,
                    "does not link to the entry before it: an entry before it was removed, inserted or moved".into(),
                ));
                break 'outer;
            }
            let h = row.compute_hash(&prev);
            if decode_hash(&row.hash) != h {
                report = Some(bad(checked, &row.id, "content does not match its hash: the entry was edited".into()));
                break 'outer;
            }
            prev = h;
            expected_seq += 1;
            checked += 1;
            last_id = Some(row.id);
        }
        progress(checked);
    }
    drop(rx);
    let _ = reader.join();
    if let Some(r) = report {
        return Ok(r);
    }
    let last_seq = expected_seq - 1;
    if last_seq != head_seq || prev != decode_hash(&head_hash) {
        return Ok(VerifyReport {
            ok: false,
            checked,
            first_bad_id: None,
            reason: Some(format!(
                "the log ends at position {last_seq} (entry {}) but the recorded head is at {head_seq}: entries were removed from the end",
                last_id.as_deref().unwrap_or("none")
            )),
        });
    }
    Ok(VerifyReport { ok: true, checked, first_bad_id: None, reason: None })
}
