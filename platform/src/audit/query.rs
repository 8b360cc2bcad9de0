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
    /// The comparison with the anchored head kept outside the database (see `audit::anchor`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor: Option<super::anchor::AnchorCheck>,
}

const VERIFY_BATCH: i64 = 20_000;

/// What a reader thread learned about one row.
struct Checked {
    seq: i64,
    id: String,
    prev: [u8; 32],
    hash: [u8; 32],
    /// The stored hash matches the row's content and stored `prev_hash`.
    intact: bool,
}

fn begin_snapshot(conn: &mut DbConnection) -> Result<(), DbError> {
    let begin = match conn {
        // Memory-mapped reads: the walk touches every page once, and reading them through the
        // mapping saves a read() and a copy per page.
        DbConnection::Sqlite(_) => "PRAGMA mmap_size = 1073741824; BEGIN",
        DbConnection::Pg(_) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    };
    Ok(conn.batch_execute(begin)?)
}

/// Walks the whole chain. Rows are read and hashed in parallel (one reader per core, each
/// taking every n-th batch of positions); the links between rows are then checked in order.
/// `progress` is called with the running count after each batch.
pub fn verify(db: &Db, progress: &mut dyn FnMut(u64)) -> Result<VerifyReport, DbError> {
    let mut conn = db.get()?;
    begin_snapshot(&mut conn)?;
    let (head_seq, head_hash): (i64, String) =
        audit_head::table.select((audit_head::seq, audit_head::hash)).first(&mut *conn)?;
    let hi: Option<i64> = audit_log::table.select(diesel::dsl::max(audit_log::seq)).first(&mut *conn)?;
    // Rows outside 1..=head are bad wherever they are; look them up directly so a forged row
    // at an absurd position cannot make the walk below enumerate empty ranges for hours.
    let before_start: Option<(i64, String)> = audit_log::table
        .filter(audit_log::seq.lt(1))
        .order(audit_log::seq.asc())
        .select((audit_log::seq, audit_log::id))
        .first(&mut *conn)
        .optional()?;
    let beyond_head: Option<(i64, String)> = audit_log::table
        .filter(audit_log::seq.gt(head_seq))
        .order(audit_log::seq.asc())
        .select((audit_log::seq, audit_log::id))
        .first(&mut *conn)
        .optional()?;
    conn.batch_execute("COMMIT")?;
    drop(conn);
    if let Some((seq, id)) = before_start {
        return Ok(VerifyReport {
            ok: false,
            checked: 0,
            first_bad_id: Some(id),
            reason: Some(format!("expected position 1 but found {seq}: entries were inserted before the start")),
            anchor: None,
        });
    }
    let lo = 1i64;
    let hi = hi.unwrap_or(0).min(head_seq);
    let chunks: i64 = if hi < lo { 0 } else { (hi - lo) / VERIFY_BATCH + 1 };
    let readers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).clamp(1, 4) as i64;

    let mut channels = Vec::new();
    let mut handles = Vec::new();
    for r in 0..readers {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<Checked>, DbError>>(2);
        channels.push(rx);
        let db = db.clone();
        handles.push(std::thread::spawn(move || {
            let run = || -> Result<(), DbError> {
                let mut conn = db.get()?;
                begin_snapshot(&mut conn)?;
                let mut k = r;
                while k < chunks {
                    let from = lo + k * VERIFY_BATCH;
                    let rows: Vec<AuditRow> = audit_log::table
                        .filter(audit_log::seq.ge(from))
                        .filter(audit_log::seq.lt(from + VERIFY_BATCH))
                        .order(audit_log::seq.asc())
                        .select(AuditRow::as_select())
                        .load(&mut *conn)?;
                    let checked = rows
                        .into_iter()
                        .map(|row| {
                            let prev = decode_hash(&row.prev_hash);
                            let hash = decode_hash(&row.hash);
                            let intact = row.compute_hash(&prev) == hash;
                            Checked { seq: row.seq, id: row.id, prev, hash, intact }
                        })
                        .collect();
                    if tx.send(Ok(checked)).is_err() {
                        return Ok(());
                    }
                    k += readers;
                }
                conn.batch_execute("COMMIT")?;
                Ok(())
            };
            if let Err(e) = run() {
                let _ = tx.send(Err(e));
            }
        }));
    }

    let bad = |checked, id: &str, why: String| VerifyReport {
        ok: false,
        checked,
        first_bad_id: Some(id.to_string()),
        reason: Some(why),
        anchor: None,
    };
    let mut prev = GENESIS_HASH;
    let mut expected_seq = 1i64;
    let mut checked = 0u64;
    let mut last_id: Option<String> = None;
    let mut outcome: Result<Option<VerifyReport>, DbError> = Ok(None);
    'outer: for k in 0..chunks {
        let batch = match channels[(k % readers) as usize].recv() {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                outcome = Err(e);
                break;
            }
            Err(_) => {
                outcome = Err(DbError::Task("audit reader stopped".into()));
                break;
            }
        };
        for row in batch {
            let report = if row.seq != expected_seq {
                Some(format!(
                    "expected position {expected_seq} but found {}: entries were removed or reordered",
                    row.seq
                ))
            } else if row.prev != prev {
                Some("does not link to the entry before it: an entry before it was removed, inserted or moved".into())
            } else if !row.intact {
                Some("content does not match its hash: the entry was edited".into())
            } else {
                None
            };
            if let Some(why) = report {
                outcome = Ok(Some(bad(checked, &row.id, why)));
                break 'outer;
            }
            prev = row.hash;
            expected_seq += 1;
            checked += 1;
            last_id = Some(row.id);
        }
        progress(checked);
    }
    drop(channels);
    for h in handles {
        let _ = h.join();
    }
    if let Some(r) = outcome? {
        return Ok(r);
    }
    if let Some((seq, id)) = beyond_head {
        return Ok(bad(checked, &id, format!("entry at position {seq} lies beyond the recorded head ({head_seq})")));
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
            anchor: None,
        });
    }
    Ok(VerifyReport { ok: true, checked, first_bad_id: None, reason: None, anchor: None })
}
