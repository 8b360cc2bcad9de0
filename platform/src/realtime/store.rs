//! Persisted events: per-user `seq` counters and the `user_events` rows `resume` replays.

use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::{BigInt, Text};
use diesel::sqlite::Sqlite;

use crate::db::schema::{event_counters as ec, user_events as ue};
use crate::db::{multirow, DbConnection};

/// One persisted event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, QueryableByName, Selectable)]
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
        // Read, then set: the writer holds SQLite's write lock for the whole transaction, so
        // nothing moves the counter in between. (`UPDATE … RETURNING` was one statement, but
        // SQLite gathers RETURNING rows in a temporary B-tree it opens and closes on every
        // run: a third of this function's time. Diesel never caches an `UPDATE`, hence the
        // statement of its own, `SetCounter`, prepared once per connection.)
        DbConnection::Sqlite(c) => match ec::table.find(user).select(ec::last_seq).first::<i64>(c).optional()? {
            Some(old) => {
                SetCounter { user, last: old + n }.execute(c)?;
                Some(old + n)
            }
            None => None,
        },
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

/// One event row to store: (user, seq, name, data as JSON text) — the shape the event writer
/// also delivers.
pub type EventRow = (String, i64, &'static str, std::sync::Arc<str>);

/// Stores `rows`, all created at `at` (microseconds), several to a statement: on SQLite in
/// runs of [`multirow::BIG`], 8 and 1 rows (statements prepared once per connection; one
/// statement per row cost a statement run and a walk over the query for every event), on
/// PostgreSQL one `INSERT` per 1,000 rows (one round trip instead of one per row; 5,000
/// parameters, well under its 65,535).
pub fn insert_many(conn: &mut DbConnection, rows: &[EventRow], at: i64) -> QueryResult<()> {
    match conn {
        DbConnection::Sqlite(c) => {
            let rows: Vec<NewEvent<'_>> = rows.iter().map(|row| NewEvent { row, at }).collect();
            multirow::insert(c, &rows)
        }
        DbConnection::Pg(c) => {
            for chunk in rows.chunks(1_000) {
                let values: Vec<_> = chunk
                    .iter()
                    .map(|(user, seq, name, data)| {
                        (
                            ue::user_id.eq(user.as_str()),
                            ue::seq.eq(*seq),
                            ue::name.eq(*name),
                            ue::data.eq(&**data),
                            ue::created_at.eq(at),
                        )
                    })
                    .collect();
                diesel::insert_into(ue::table).values(values).execute(c)?;
            }
            Ok(())
        }
    }
}

/// An [`EventRow`] with its time, as [`multirow::insert`] stores it.
struct NewEvent<'a> {
    row: &'a EventRow,
    at: i64,
}

impl multirow::Row for NewEvent<'_> {
    const HEAD: &'static str = "INSERT INTO user_events (user_id, seq, name, data, created_at) VALUES ";
    type Kind = NewEvent<'static>;
    fn walk<'b>(&'b self, out: &mut AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        let (user, seq, name, data) = self.row;
        out.push_bind_param::<Text, _>(user)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(seq)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(*name)?;
        out.push_sql(", ");
        out.push_bind_param::<Text, _>(&**data)?;
        out.push_sql(", ");
        out.push_bind_param::<BigInt, _>(&self.at)?;
        Ok(())
    }
}

/// `UPDATE event_counters SET last_seq = ? WHERE user_id = ?` on SQLite, as a statement of its
/// own whose query id is static, so diesel prepares it once per connection and finds it again
/// by type, without building the text; diesel's own `UPDATE` is prepared anew on every call
/// (it may leave columns out, so it is never cached), which was a fifth of the event writer's
/// time under load.
struct SetCounter<'a> {
    user: &'a str,
    last: i64,
}

impl QueryId for SetCounter<'_> {
    type QueryId = SetCounter<'static>;
    const HAS_STATIC_QUERY_ID: bool = true;
}

impl QueryFragment<Sqlite> for SetCounter<'_> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Sqlite>) -> QueryResult<()> {
        out.push_sql("UPDATE event_counters SET last_seq = ");
        out.push_bind_param::<BigInt, _>(&self.last)?;
        out.push_sql(" WHERE user_id = ");
        out.push_bind_param::<Text, _>(self.user)?;
        Ok(())
    }
}

impl RunQueryDsl<SqliteConnection> for SetCounter<'_> {}

// On SQLite `user_events` has no per-user index of its own (migration
// 2026-12-05-000016): rows are appended under an ever-growing `id`, and `user_events_key`
// holds the (user_id, seq) → id of the rows up to `user_events_mark.last_id`, copied there in
// sorted batches by [`fold_tail`]. A reader combines the key with a scan of the rows after the
// mark, in one statement (one snapshot). PostgreSQL keeps the primary key (user_id, seq).

/// Rows after the mark that make the event writer copy them into the key. Large against the
/// number of users active meanwhile, so each user's key page takes several entries per copy
/// (the gain); small enough that a reader's scan of the tail stays short (~2.5 MB of rows) and
/// that a copy, which holds up the commits queued behind it, stays short: 8,192 rather than
/// 16,384 took the benchmark's p99 from ~52 to ~44 ms at the same throughput
/// (docs/decisions/0004, "The fold copies 8,192 rows, not 16,384").
pub const FOLD_ROWS: i64 = 8_192;

/// Up to `limit` events of `user` after `after`, oldest first.
pub fn after(conn: &mut DbConnection, user: &str, after: i64, limit: i64) -> QueryResult<Vec<StoredEvent>> {
    match conn {
        DbConnection::Sqlite(c) => diesel::sql_query(
            "SELECT user_id, seq, name, data, created_at FROM ( \
               SELECT * FROM (SELECT e.user_id, e.seq, e.name, e.data, e.created_at \
                 FROM user_events_key k JOIN user_events e ON e.id = k.id \
                 WHERE k.user_id = ?1 AND k.seq > ?2 ORDER BY k.seq LIMIT ?3) \
               UNION ALL \
               SELECT user_id, seq, name, data, created_at FROM user_events \
                 WHERE id > (SELECT last_id FROM user_events_mark) AND user_id = ?1 AND seq > ?2 \
             ) ORDER BY seq LIMIT ?3",
        )
        .bind::<Text, _>(user)
        .bind::<BigInt, _>(after)
        .bind::<BigInt, _>(limit)
        .load(c),
        DbConnection::Pg(_) => ue::table
            .filter(ue::user_id.eq(user))
            .filter(ue::seq.gt(after))
            .order(ue::seq.asc())
            .limit(limit)
            .select(StoredEvent::as_select())
            .load(conn),
    }
}

/// One event by its key (multi-node delivery re-reads what another node wrote).
pub fn get(conn: &mut DbConnection, user: &str, seq: i64) -> QueryResult<Option<StoredEvent>> {
    match conn {
        DbConnection::Sqlite(_) => Ok(after(conn, user, seq - 1, 1)?.into_iter().find(|e| e.seq == seq)),
        DbConnection::Pg(_) => ue::table.find((user, seq)).select(StoredEvent::as_select()).first(conn).optional(),
    }
}

/// The oldest `seq` still kept for `user`, if any.
pub fn oldest_seq(conn: &mut DbConnection, user: &str) -> QueryResult<Option<i64>> {
    match conn {
        DbConnection::Sqlite(c) => {
            #[derive(QueryableByName)]
            struct Oldest {
                #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
                seq: Option<i64>,
            }
            let o: Oldest = diesel::sql_query(
                // The key's first entry whose row is still there (a key row is removed with its
                // row by `prune`; a previous binary's prune, after a downgrade, would not).
                "SELECT MIN(s) AS seq FROM ( \
                   SELECT * FROM (SELECT k.seq AS s FROM user_events_key k JOIN user_events e ON e.id = k.id \
                     WHERE k.user_id = ?1 ORDER BY k.seq LIMIT 1) \
                   UNION ALL \
                   SELECT MIN(seq) FROM user_events \
                     WHERE id > (SELECT last_id FROM user_events_mark) AND user_id = ?1)",
            )
            .bind::<Text, _>(user)
            .get_result(c)?;
            Ok(o.seq)
        }
        DbConnection::Pg(_) => ue::table.filter(ue::user_id.eq(user)).select(diesel::dsl::min(ue::seq)).first(conn),
    }
}

/// Deletes events older than `before` (microseconds); returns how many went.
pub fn prune(conn: &mut DbConnection, before: i64) -> QueryResult<usize> {
    crate::db::write_transaction(conn, |conn| {
        if let DbConnection::Sqlite(c) = conn {
            diesel::sql_query(
                "DELETE FROM user_events_key WHERE (user_id, seq) IN \
                   (SELECT user_id, seq FROM user_events WHERE created_at < ?1)",
            )
            .bind::<BigInt, _>(before)
            .execute(c)?;
        }
        diesel::delete(ue::table.filter(ue::created_at.lt(before))).execute(conn)
    })
}

/// SQLite: once `fold_rows` rows or more lie after the mark, copies their (user_id, seq, id)
/// into `user_events_key`, sorted, and moves the mark past them. The event writer calls it in
/// each batch's transaction ([`FOLD_ROWS`]); nothing on PostgreSQL. Returns the rows copied.
pub fn fold_tail(conn: &mut DbConnection, fold_rows: i64) -> QueryResult<usize> {
    let DbConnection::Sqlite(c) = conn else { return Ok(0) };
    #[derive(QueryableByName)]
    struct Tail {
        #[diesel(sql_type = BigInt)]
        mark: i64,
        #[diesel(sql_type = BigInt)]
        last: i64,
    }
    let t: Tail = diesel::sql_query(
        "SELECT last_id AS mark, (SELECT COALESCE(MAX(id), 0) FROM user_events) AS last FROM user_events_mark",
    )
    .get_result(c)?;
    if t.last - t.mark < fold_rows {
        return Ok(0);
    }
    let n = diesel::sql_query(
        "INSERT OR IGNORE INTO user_events_key (user_id, seq, id) \
           SELECT user_id, seq, id FROM user_events WHERE id > ?1 AND id <= ?2 ORDER BY user_id, seq",
    )
    .bind::<BigInt, _>(t.mark)
    .bind::<BigInt, _>(t.last)
    .execute(c)?;
    diesel::sql_query("UPDATE user_events_mark SET last_id = ?1").bind::<BigInt, _>(t.last).execute(c)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testing::{add_user, migrated_with_users, sqlite_db};
    use diesel::connection::SimpleConnection;
    use diesel_migrations::MigrationHarness;

    fn count(c: &mut DbConnection, sql: &str) -> i64 {
        #[derive(QueryableByName)]
        struct N {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        diesel::sql_query(sql).get_result::<N>(c).unwrap().n
    }

    /// Every reader answers the same whether a user's events sit in the key (folded), in the
    /// tail after the mark, or both; limits cut across the boundary; prune leaves no key row
    /// behind; a fold below the threshold copies nothing.
    #[test]
    fn readers_see_the_same_events_before_and_after_a_fold() {
        let (_dir, db) = migrated_with_users(&["a", "b", "c"]);
        let mut c = db.get().unwrap();
        let c: &mut DbConnection = &mut c;
        // Interleaved like the writer stores them: a and b alternate, c now and then; old
        // events (created_at 1) first, then newer ones (created_at 2).
        let mut seqs = std::collections::HashMap::new();
        let mut put = |c: &mut DbConnection, u: &'static str, at: i64| {
            let s = seqs.entry(u).or_insert(0i64);
            *s += 1;
            let data = format!("{{\"n\":{}}}", *s);
            insert_many(c, &[(u.to_string(), *s, "new_message", data.into())], at).unwrap();
        };
        for i in 0..30 {
            put(c, "a", 1);
            put(c, "b", 1);
            if i % 3 == 0 {
                put(c, "c", 1);
            }
        }
        let snapshot = |c: &mut DbConnection| {
            let mut v = Vec::new();
            for u in ["a", "b", "c"] {
                v.push(after(c, u, 0, 1000).unwrap());
                v.push(after(c, u, 7, 5).unwrap());
                v.push(after(c, u, 25, 1000).unwrap());
                v.push(vec![get(c, u, 4).unwrap().unwrap()]);
                assert_eq!(oldest_seq(c, u).unwrap(), Some(1));
            }
            v
        };
        let before = snapshot(c);
        assert_eq!(before[0].iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=30).collect::<Vec<_>>());
        assert_eq!(before[1].iter().map(|e| e.seq).collect::<Vec<_>>(), vec![8, 9, 10, 11, 12]);
        assert_eq!(before[8].len(), 10, "c has ten events");
        assert_eq!(fold_tail(c, 1000).unwrap(), 0, "below the threshold nothing is copied");
        assert_eq!(count(c, "SELECT count(*) AS n FROM user_events_key"), 0);

        // Fold everything: the key holds all 70 rows, the tail is empty.
        assert_eq!(fold_tail(c, 50).unwrap(), 70);
        assert_eq!(count(c, "SELECT last_id AS n FROM user_events_mark"), 70);
        assert_eq!(snapshot(c), before, "the same answers from the key");

        // More events, partly folded: a's events 31..=45 (31..=38 folded, the rest in the tail).
        for _ in 0..8 {
            put(c, "a", 2);
        }
        assert_eq!(fold_tail(c, 8).unwrap(), 8);
        for _ in 0..7 {
            put(c, "a", 2);
        }
        let a = after(c, "a", 0, 1000).unwrap();
        assert_eq!(a.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=45).collect::<Vec<_>>());
        assert_eq!(a[44].data, "{\"n\":45}");
        let across = after(c, "a", 35, 6).unwrap();
        assert_eq!(across.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![36, 37, 38, 39, 40, 41]);
        assert_eq!(get(c, "a", 38).unwrap().unwrap().seq, 38);
        assert_eq!(get(c, "a", 44).unwrap().unwrap().seq, 44);
        assert_eq!(get(c, "a", 46).unwrap(), None);

        // Retention: the old events go from the rows and the key alike.
        assert_eq!(prune(c, 2).unwrap(), 70);
        assert_eq!(count(c, "SELECT count(*) AS n FROM user_events_key"), 8, "only a's folded new events");
        assert_eq!(
            after(c, "a", 0, 1000).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(),
            (31..=45).collect::<Vec<_>>()
        );
        assert_eq!(oldest_seq(c, "a").unwrap(), Some(31));
        assert_eq!(oldest_seq(c, "b").unwrap(), None);
        assert!(after(c, "b", 0, 1000).unwrap().is_empty());
    }

    /// The migration keeps the events of an existing database and builds their key, and new
    /// rows never reuse an id below the mark (even after every row was pruned).
    #[test]
    fn the_migration_keeps_existing_events_and_ids_only_grow() {
        let (_dir, db) = sqlite_db();
        let mut pooled = db.get().unwrap();
        {
            let DbConnection::Sqlite(s) = &mut *pooled else { panic!("sqlite") };
            for m in s.pending_migrations(crate::db::SQLITE_MIGRATIONS).unwrap() {
                if m.name().to_string().starts_with("2026-12-05-000016") {
                    break;
                }
                s.run_migration(&m).unwrap();
            }
        }
        let c: &mut DbConnection = &mut pooled;
        add_user(c, "a");
        c.batch_execute(
            "INSERT INTO user_events (user_id, seq, name, data, created_at) VALUES \
             ('a', 1, 'x', '{}', 1), ('a', 2, 'x', '{}', 1), ('a', 3, 'x', '{}', 5)",
        )
        .unwrap();
        db.migrate().unwrap();
        assert_eq!(count(c, "SELECT count(*) AS n FROM user_events_key"), 3);
        assert_eq!(count(c, "SELECT last_id AS n FROM user_events_mark"), 3);
        assert_eq!(after(c, "a", 1, 10).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!(prune(c, 10).unwrap(), 3);
        insert_many(c, &[("a".to_string(), 4, "x", "{}".into())], 11).unwrap();
        assert_eq!(count(c, "SELECT max(id) AS n FROM user_events"), 4, "a new id after every pruned one");
        assert_eq!(after(c, "a", 0, 10).unwrap().iter().map(|e| e.seq).collect::<Vec<_>>(), vec![4]);
    }

    /// Event rows stored several to a statement come back exactly as given, in order, whatever
    /// their number against the statement sizes (32, 8, 1; `db::multirow`).
    #[test]
    fn rows_stored_several_to_a_statement_are_all_there_in_order() {
        let (_dir, db) = migrated_with_users(&["a", "b"]);
        let mut c = db.get().unwrap();
        let c: &mut DbConnection = &mut c;
        let mut next = [0i64; 2];
        let mut want: Vec<StoredEvent> = Vec::new();
        for (round, n) in [0usize, 1, 7, 8, 9, 31, 32, 33, 77].into_iter().enumerate() {
            let rows: Vec<EventRow> = (0..n)
                .map(|i| {
                    let u = i % 2;
                    next[u] += 1;
                    let user = ["a", "b"][u].to_string();
                    (
                        user,
                        next[u],
                        if i % 3 == 0 { "new_message" } else { "message_sent" },
                        format!("{{\"r\":{round},\"i\":{i}}}").into(),
                    )
                })
                .collect();
            let at = 100 + round as i64;
            insert_many(c, &rows, at).unwrap();
            want.extend(rows.iter().map(|(user, seq, name, data)| StoredEvent {
                user_id: user.clone(),
                seq: *seq,
                name: name.to_string(),
                data: data.to_string(),
                created_at: at,
            }));
        }
        assert_eq!(want.len(), 198);
        for user in ["a", "b"] {
            let mine: Vec<StoredEvent> = want.iter().filter(|e| e.user_id == user).cloned().collect();
            assert_eq!(after(c, user, 0, 1_000).unwrap(), mine, "{user}'s events");
        }
        #[derive(QueryableByName)]
        struct Order {
            #[diesel(sql_type = Text)]
            data: String,
        }
        let stored: Vec<String> = diesel::sql_query("SELECT data FROM user_events ORDER BY id")
            .load::<Order>(c)
            .unwrap()
            .into_iter()
            .map(|o| o.data)
            .collect();
        assert_eq!(stored, want.iter().map(|e| e.data.clone()).collect::<Vec<_>>(), "stored in the order given");
    }

    /// Seqs are handed out gapless per user, counting on from what is stored, inside write
    /// transactions; a rolled-back reservation hands its seqs out again; the counters are a
    /// WITHOUT ROWID table (migration 2026-12-05-000017).
    #[test]
    fn reserve_counts_on_per_user_and_a_rollback_gives_the_seqs_back() {
        let (_dir, db) = migrated_with_users(&["a", "b"]);
        let mut c = db.get().unwrap();
        let c: &mut DbConnection = &mut c;
        let without_rowid = "SELECT count(*) AS n FROM sqlite_master \
                             WHERE name = 'event_counters' AND sql LIKE '%WITHOUT ROWID%'";
        assert_eq!(count(c, without_rowid), 1, "event_counters is WITHOUT ROWID");
        let w = |c: &mut DbConnection, u: &str, n: i64| crate::db::write_transaction(c, |c| reserve(c, u, n)).unwrap();
        assert_eq!(w(c, "a", 1), 1, "the first event of a user");
        assert_eq!(w(c, "a", 3), 4);
        assert_eq!(w(c, "b", 2), 2, "users count on their own");
        let r: Result<i64, diesel::result::Error> = crate::db::write_transaction(c, |c| {
            assert_eq!(reserve(c, "a", 5)?, 9);
            Err(diesel::result::Error::RollbackTransaction)
        });
        assert!(r.is_err());
        assert_eq!(last_seq(c, "a").unwrap(), 4, "rolled back");
        assert_eq!(w(c, "a", 1), 5);
        assert_eq!((last_seq(c, "a").unwrap(), last_seq(c, "b").unwrap(), last_seq(c, "z").unwrap()), (5, 2, 0));
    }
}
