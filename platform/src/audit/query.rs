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
    let fetch = |c: &mut DbConnection, part: &super::actor_index::Part, n: i64| {
        let mut q = part.apply(audit_log::table.select(AuditRow::as_select()).into_boxed());
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
        q.order(audit_log::seq.desc()).limit(n).load(c)
    };
    match &f.actor_id {
        // By actor: through the batched actor index on SQLite (`actor_index`).
        Some(actor) => super::actor_index::walk(conn, actor, before, limit, fetch),
        None => fetch(conn, &super::actor_index::Part::All, limit),
    }
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

/// Positions per reader batch: small enough that the batches spread evenly over the readers.
const VERIFY_BATCH: i64 = 5_000;

/// What a reader thread learned about one row. (The row's id is looked up only for a report:
/// not copying it out of every row is a measurable part of the walk.)
struct Checked {
    seq: i64,
    prev: [u8; 32],
    hash: [u8; 32],
    /// The stored hash matches the row's content and stored `prev_hash`.
    intact: bool,
}

impl Checked {
    fn of(row: &super::RowRef<'_>, prev_hash: &str, hash: &str) -> Self {
        let prev = decode_hash(prev_hash);
        let hash = decode_hash(hash);
        Checked { seq: row.seq, prev, hash, intact: row.compute_hash(&prev) == hash }
    }
}

/// The columns of an audit row, borrowed from SQLite's row buffer (see [`check_batch`]).
type BorrowedRow = (
    i64,
    *const str,
    i64,
    Option<*const str>,
    *const str,
    Option<*const str>,
    Option<*const str>,
    Option<*const str>,
    Option<*const str>,
    *const str,
    *const str,
    *const str,
    *const str,
);

/// Reads and hashes the rows at positions `[from, to)`, in order.
///
/// On SQLite the text columns are borrowed straight from the statement's current row instead
/// of being copied into `String`s: twelve allocations and copies per row were most of the
/// cost of a walk (the hashing itself runs at millions of rows per second).
#[allow(unsafe_code)] // dereferences diesel's borrowed `*const str` columns, see SAFETY below
fn check_batch(conn: &mut DbConnection, from: i64, to: i64) -> Result<Vec<Checked>, DbError> {
    let positions = audit_log::seq.ge(from).and(audit_log::seq.lt(to));
    match conn {
        DbConnection::Sqlite(c) => {
            let rows = audit_log::table
                .filter(positions)
                .order(audit_log::seq.asc())
                .select((
                    audit_log::seq,
                    audit_log::id,
                    audit_log::at,
                    audit_log::actor_id,
                    audit_log::action,
                    audit_log::target_type,
                    audit_log::target_id,
                    audit_log::ip,
                    audit_log::user_agent,
                    audit_log::outcome,
                    audit_log::details,
                    audit_log::prev_hash,
                    audit_log::hash,
                ))
                .load_iter::<BorrowedRow, diesel::connection::DefaultLoadingMode>(c)?;
            let mut out = Vec::with_capacity((to - from).clamp(0, VERIFY_BATCH) as usize);
            for r in rows {
                let r = r?;
                // SAFETY: diesel hands out `*const str` columns pointing into SQLite's buffer
                // for the current row, valid until the cursor moves on. Every reference made
                // here is used up within this iteration, before the next row is fetched.
                let s = |p: *const str| -> &str { unsafe { &*p } };
                let o = |p: Option<*const str>| p.map(|p| unsafe { &*p });
                let row = super::RowRef {
                    seq: r.0,
                    id: s(r.1),
                    at: r.2,
                    actor_id: o(r.3),
                    action: s(r.4),
                    target_type: o(r.5),
                    target_id: o(r.6),
                    ip: o(r.7),
                    user_agent: o(r.8),
                    outcome: s(r.9),
                    details: s(r.10),
                    prev_hash: String::new(),
                    hash: String::new(),
                };
                out.push(Checked::of(&row, s(r.11), s(r.12)));
            }
            Ok(out)
        }
        DbConnection::Pg(_) => {
            let rows: Vec<AuditRow> = audit_log::table
                .filter(positions)
                .order(audit_log::seq.asc())
                .select(AuditRow::as_select())
                .load(conn)?;
            Ok(rows.iter().map(|r| Checked::of(&super::RowRef::of(r), &r.prev_hash, &r.hash)).collect())
        }
    }
}

/// The id of the entry at `seq`, for a report (`"unknown"` if it cannot be read).
fn id_at(db: &Db, seq: i64) -> String {
    db.get()
        .ok()
        .and_then(|mut c| audit_log::table.filter(audit_log::seq.eq(seq)).select(audit_log::id).first(&mut *c).ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Runs `f` in one read snapshot of the database, through diesel's transaction manager: the
/// transaction ends however `f` ends (committed when it returns `Ok`, rolled back on an error
/// or an early return), so a pooled connection never goes back into the pool inside it.
fn in_snapshot<T>(
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> Result<T, DbError>,
) -> Result<T, DbError> {
    use diesel::connection::{AnsiTransactionManager, TransactionManager};
    type Tm = <DbConnection as diesel::Connection>::TransactionManager;
    match conn {
        // Memory-mapped reads: the walk touches every page once, and reading them through the
        // mapping saves a read() and a copy per page.
        DbConnection::Sqlite(c) => {
            c.batch_execute("PRAGMA mmap_size = 1073741824")?;
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN")?;
        }
        DbConnection::Pg(c) => {
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")?
        }
    }
    match f(conn) {
        Ok(v) => {
            Tm::commit_transaction(conn)?;
            Ok(v)
        }
        Err(e) => {
            let _ = Tm::rollback_transaction(conn);
            Err(e)
        }
    }
}

/// Whether the rows after position `from` (whose hash is `from_hash`) up to position `to`
/// (whose hash must be `to_hash`) are intact and each links to the one before: the chain from
/// an anchored entry to the head. `None` when it holds, else what is wrong.
pub fn chain_between(db: &Db, from: i64, from_hash: &str, to: i64, to_hash: &str) -> Result<Option<String>, DbError> {
    let mut conn = db.get()?;
    in_snapshot(&mut conn, |c| {
        let mut prev = decode_hash(from_hash);
        let mut expected = from + 1;
        let mut start = from + 1;
        while start <= to {
            let end = (start + VERIFY_BATCH).min(to + 1);
            for row in check_batch(c, start, end)? {
                if row.seq != expected {
                    return Ok(Some(format!("expected position {expected} but found {}", row.seq)));
                }
                if row.prev != prev || !row.intact {
                    return Ok(Some(format!("entry {} does not verify after the anchored entry {from}", row.seq)));
                }
                prev = row.hash;
                expected += 1;
            }
            start = end;
        }
        if expected != to + 1 {
            return Ok(Some(format!("the log ends at position {} before position {to}", expected - 1)));
        }
        if prev != decode_hash(to_hash) {
            return Ok(Some(format!("the entry at position {to} is not the recorded head")));
        }
        Ok(None)
    })
}

/// Walks the whole chain. Rows are read and hashed in parallel (one reader per core, each
/// taking every n-th batch of positions); the links between rows are then checked in order.
/// `progress` is called with the running count after each batch.
pub fn verify(db: &Db, progress: &mut dyn FnMut(u64)) -> Result<VerifyReport, DbError> {
    let mut conn = db.get()?;
    #[allow(clippy::type_complexity)]
    let (head_seq, head_hash, hi, before_start, beyond_head): (
        i64,
        String,
        Option<i64>,
        Option<(i64, String)>,
        Option<(i64, String)>,
    ) = in_snapshot(&mut conn, |c| {
        let (head_seq, head_hash): (i64, String) =
            audit_head::table.select((audit_head::seq, audit_head::hash)).first(c)?;
        let hi: Option<i64> = audit_log::table.select(diesel::dsl::max(audit_log::seq)).first(c)?;
        // Rows outside 1..=head are bad wherever they are; look them up directly so a forged
        // row at an absurd position cannot make the walk below enumerate empty ranges for hours.
        let before_start: Option<(i64, String)> = audit_log::table
            .filter(audit_log::seq.lt(1))
            .order(audit_log::seq.asc())
            .select((audit_log::seq, audit_log::id))
            .first(c)
            .optional()?;
        let beyond_head: Option<(i64, String)> = audit_log::table
            .filter(audit_log::seq.gt(head_seq))
            .order(audit_log::seq.asc())
            .select((audit_log::seq, audit_log::id))
            .first(c)
            .optional()?;
        Ok((head_seq, head_hash, hi, before_start, beyond_head))
    })?;
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
                in_snapshot(&mut conn, |c| {
                    let mut k = r;
                    while k < chunks {
                        let from = lo + k * VERIFY_BATCH;
                        let checked = check_batch(c, from, from + VERIFY_BATCH)?;
                        // The walk stopped at a bad row: nothing more to read.
                        if tx.send(Ok(checked)).is_err() {
                            return Ok(());
                        }
                        k += readers;
                    }
                    Ok(())
                })
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
    // The first bad row found: (entries intact before it, its position, what is wrong).
    let mut outcome: Result<Option<(u64, i64, String)>, DbError> = Ok(None);
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
                outcome = Ok(Some((checked, row.seq, why)));
                break 'outer;
            }
            prev = row.hash;
            expected_seq += 1;
            checked += 1;
        }
        progress(checked);
    }
    drop(channels);
    for h in handles {
        let _ = h.join();
    }
    if let Some((checked, seq, why)) = outcome? {
        return Ok(bad(checked, &id_at(db, seq), why));
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
                if last_seq > 0 { id_at(db, last_seq) } else { "none".into() }
            )),
            anchor: None,
        });
    }
    Ok(VerifyReport { ok: true, checked, first_bad_id: None, reason: None, anchor: None })
}
