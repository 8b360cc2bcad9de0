//! Persisted events: per-user `seq` counters and the `user_events` rows `resume` replays.

use diesel::prelude::*;
use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Text};
use diesel::sqlite::Sqlite;

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
    let last: Option<i64> = match conn {
        // Diesel prepares every `UPDATE` afresh (it never caches them); this one runs for
        // each user of every batch, so on SQLite it is a statement of its own that is prepared
        // once per connection (see `AddToCounter`).
        DbConnection::Sqlite(c) => AddToCounter { user, n }.get_result(c).optional()?,
        DbConnection::Pg(_) => diesel::update(ec::table.find(user))
            .set(ec::last_seq.eq(ec::last_seq + n))
            .returning(ec::last_seq)
            .get_result(conn)
            .optional()?,
    };
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
    let q = diesel::insert_into(ue::table).values((
        ue::user_id.eq(user),
        ue::seq.eq(seq),
        ue::name.eq(name),
        ue::data.eq(data),
        ue::created_at.eq(at),
    ));
    // Straight on the SQLite connection: the multi-backend wrapper costs a second walk over the
    // query per row, and this runs for every stored event.
    match conn {
        DbConnection::Sqlite(c) => q.execute(c)?,
        DbConnection::Pg(c) => q.execute(c)?,
    };
    Ok(())
}

/// `UPDATE event_counters SET last_seq = last_seq + ? WHERE user_id = ? RETURNING last_seq` on
/// SQLite. Its SQL is fixed and its query id static, so diesel prepares it once per connection
/// and finds it again by type, without building the text; diesel's own `UPDATE` is prepared
/// anew on every call (it may leave columns out, so it is never cached), which was a fifth of
/// the event writer's time under load.
struct AddToCounter<'a> {
    user: &'a str,
    n: i64,
}

impl QueryId for AddToCounter<'_> {
    type QueryId = AddToCounter<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Sqlite> for AddToCounter<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("UPDATE event_counters SET last_seq = last_seq + ");
        out.push_bind_param::<BigInt, _>(&self.n)?;
        out.push_sql(" WHERE user_id = ");
        out.push_bind_param::<Text, _>(self.user)?;
        out.push_sql(" RETURNING last_seq");
        Ok(())
    }
}

impl Query for AddToCounter<'_> {
    type SqlType = BigInt;
}

impl RunQueryDsl<SqliteConnection> for AddToCounter<'_> {}

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
