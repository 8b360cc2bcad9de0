//! The audit log's per-actor index on SQLite, kept in batches.
//!
//! Requests running at the same time are mostly audited for different users, so with a plain
//! index on `audit_log (actor_id, seq)` every entry of a group commit landed on another index
//! page, and writing those pages to the WAL was most of a commit (16 concurrent writers: a
//! commit of 16 entries dirtied ~16 index pages besides the ~4 of the rows themselves).
//! Instead, the writer copies the `(actor_id, seq)` of the entries after `audit_actor_mark`
//! into `audit_actor` once [`EVERY`] have gathered, sorted, inside the transaction of an
//! append ([`extend`]); a few thousand entries of a hundred users then touch a few hundred
//! pages once instead of a page per entry.
//!
//! Readers ([`walk`]) take the entries of an actor from the tail after the mark (a `seq` range
//! scan of at most [`EVERY`] + one batch rows) and then from `audit_actor`, newest first, in
//! chunks, so a page of results costs what the index walk cost before. The table is derived
//! data: every read still compares the entry's own `actor_id`, and the hash chain covers the
//! entries, not this index. PostgreSQL keeps the plain index ([`Part::All`]).

use diesel::prelude::*;

use crate::db::schema::{audit_actor, audit_actor_mark, audit_log};
use crate::db::DbConnection;

/// Entries past the mark that make the writer extend the index.
pub(crate) const EVERY: i64 = 4096;
/// Index entries read per step of a walk.
const CHUNK: i64 = 1000;

/// Moves the mark to `head` (the newest `seq` of the running transaction) when at least
/// [`EVERY`] entries have gathered after it. Runs inside the writer's transaction.
///
/// `known` is the mark as this writer last saw it: the mark is read only when `head` is
/// [`EVERY`] past that, not on every commit. The mark only grows, so a stale value (another
/// process moved it, or a rolled-back transaction did not) only makes the check come early or
/// the tail grow to at most twice [`EVERY`].
pub(crate) fn extend(c: &mut DbConnection, head: i64, known: &mut i64) -> QueryResult<()> {
    if head - *known < EVERY {
        return Ok(());
    }
    let mark: i64 = audit_actor_mark::table.find(1).select(audit_actor_mark::seq).first(c)?;
    if head - mark < EVERY {
        *known = mark;
        return Ok(());
    }
    // Sorted, so the inserts walk the index once from left to right. `OR IGNORE`: a pair
    // already present (an index rebuilt by hand, say) is no error.
    diesel::sql_query(
        "INSERT OR IGNORE INTO audit_actor (actor_id, seq) \
         SELECT actor_id, seq FROM audit_log WHERE seq > ? AND seq <= ? AND actor_id IS NOT NULL \
         ORDER BY actor_id, seq",
    )
    .bind::<diesel::sql_types::BigInt, _>(mark)
    .bind::<diesel::sql_types::BigInt, _>(head)
    .execute(c)?;
    diesel::update(audit_actor_mark::table.find(1)).set(audit_actor_mark::seq.eq(head)).execute(c)?;
    *known = head;
    Ok(())
}

/// Which of an actor's entries one query of a [`walk`] reads. The query must also filter on
/// the actor, order by `seq` descending and apply its own limit.
#[derive(Debug)]
pub enum Part {
    /// All of them (PostgreSQL, where an index on `(actor_id, seq)` serves).
    All,
    /// Those after this `seq`: the tail the index does not cover yet.
    After(i64),
    /// These (from the index), newest first.
    Seqs(Vec<i64>),
}

impl Part {
    /// Restricts an `audit_log` query to this part.
    pub fn apply<'a, ST>(
        &'a self,
        q: audit_log::BoxedQuery<'a, <DbConnection as diesel::Connection>::Backend, ST>,
    ) -> audit_log::BoxedQuery<'a, <DbConnection as diesel::Connection>::Backend, ST> {
        match self {
            Part::All => q,
            Part::After(mark) => q.filter(audit_log::seq.gt(*mark)),
            Part::Seqs(seqs) => q.filter(audit_log::seq.eq_any(seqs.as_slice())),
        }
    }
}

/// The newest `limit` entries of `actor` with `seq < before` that `fetch` accepts, newest first.
/// `fetch(conn, part, n)` runs the caller's query (its filters, the actor, `before`, `part`,
/// newest first, at most `n` rows).
pub fn walk<T>(
    conn: &mut DbConnection,
    actor: &str,
    before: Option<i64>,
    limit: i64,
    mut fetch: impl FnMut(&mut DbConnection, &Part, i64) -> QueryResult<Vec<T>>,
) -> QueryResult<Vec<T>> {
    if matches!(conn, DbConnection::Pg(_)) {
        return fetch(conn, &Part::All, limit);
    }
    let mark: i64 = audit_actor_mark::table.find(1).select(audit_actor_mark::seq).first(conn)?;
    let mut out = Vec::new();
    if before.is_none_or(|b| b > mark + 1) {
        out = fetch(conn, &Part::After(mark), limit)?;
    }
    // Exclusive upper bound of the index entries still to read.
    let mut upper = before.map_or(mark + 1, |b| b.min(mark + 1));
    while (out.len() as i64) < limit {
        let seqs: Vec<i64> = audit_actor::table
            .filter(audit_actor::actor_id.eq(actor))
            .filter(audit_actor::seq.lt(upper))
            .order(audit_actor::seq.desc())
            .limit(CHUNK)
            .select(audit_actor::seq)
            .load(conn)?;
        let Some(&oldest) = seqs.last() else { break };
        let complete = (seqs.len() as i64) < CHUNK;
        upper = oldest;
        let rows = fetch(conn, &Part::Seqs(seqs), limit - out.len() as i64)?;
        out.extend(rows);
        if complete {
            break;
        }
    }
    Ok(out)
}
