//! Persisted events: per-user `seq` counters and the `user_events` rows `resume` replays.

use diesel::prelude::*;

use crate::db::schema::{event_counters as ec, user_events as ue};
use crate::db::DbConnection;

/// One persisted event as stored.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = ue)]
pub struct StoredEvent {
    pub user_id: String,
    pub seq: i64,
    pub name: String,
    pub data: String,
    pub created_at: i64,
}

impl StoredEvent {
    /// The WebSocket frame: `{"event": NAME, "data": {...}, "seq": N}`.
    pub fn frame(&self) -> String {
        super::frame(&self.name, &self.data, Some(self.seq))
    }
}

/// Reserves the next `n` seqs of `user` and returns the last of them (the first is
/// `last - n + 1`). Call inside a write transaction: the counter row stays locked until commit,
/// so another writer of the same user's events (on any node) waits, and every user's seqs are
/// gapless and committed in order.
pub fn reserve(conn: &mut DbConnection, user: &str, n: i64) -> QueryResult<i64> {
    let last: Option<i64> = diesel::update(ec::table.find(user))
        .set(ec::last_seq.eq(ec::last_seq + n))
        .returning(ec::last_seq)
        .get_result(conn)
        .optional()?;
    match last {
        Some(l) => Ok(l),
        None => {
            // First event of this user. Two nodes racing here make one transaction fail on
            // the primary key; the writer retries and then takes the update path.
            diesel::insert_into(ec::table).values((ec::user_id.eq(user), ec::last_seq.eq(n))).execute(conn)?;
            Ok(n)
        }
    }
}

/// The last `seq` handed out to `user` (0 before the first event).
pub fn last_seq(conn: &mut DbConnection, user: &str) -> QueryResult<i64> {
    Ok(ec::table.find(user).select(ec::last_seq).first(conn).optional()?.unwrap_or(0))
}

pub fn insert(conn: &mut DbConnection, user: &str, seq: i64, name: &str, data: &str, at: i64) -> QueryResult<()> {
    diesel::insert_into(ue::table)
        .values((ue::user_id.eq(user), ue::seq.eq(seq), ue::name.eq(name), ue::data.eq(data), ue::created_at.eq(at)))
        .execute(conn)?;
    Ok(())
}

/// Up to `limit` events of `user` after `after`, oldest first.
pub fn after(conn: &mut DbConnection, user: &str, after: i64, limit: i64) -> QueryResult<Vec<StoredEvent>> {
    ue::table
        .filter(ue::user_id.eq(user))
        .filter(ue::seq.gt(after))
        .order(ue::seq.asc())
        .limit(limit)
        .select(StoredEvent::as_select())
        .load(conn)
}

/// One event by its key (multi-node delivery re-reads what another node wrote).
pub fn get(conn: &mut DbConnection, user: &str, seq: i64) -> QueryResult<Option<StoredEvent>> {
    ue::table.find((user, seq)).select(StoredEvent::as_select()).first(conn).optional()
}

/// The oldest `seq` still kept for `user`, if any.
pub fn oldest_seq(conn: &mut DbConnection, user: &str) -> QueryResult<Option<i64>> {
    ue::table.filter(ue::user_id.eq(user)).select(diesel::dsl::min(ue::seq)).first(conn)
}

/// Deletes events older than `before` (microseconds); returns how many went.
pub fn prune(conn: &mut DbConnection, before: i64) -> QueryResult<usize> {
    diesel::delete(ue::table.filter(ue::created_at.lt(before))).execute(conn)
}
