//! Messages: direct conversations between two users and discussions attached to a file.
//!
//! A message is stored together with its `new_message` / `file_message_update` events in one
//! transaction of the event writer, so an acknowledged message is both in the history and in
//! every recipient's replayable event stream.

pub mod media;
pub mod routes;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use diesel::prelude::*;
use serde::Serialize;

use crate::db::schema::{file_shares as fs_, files, message_peers as mp, messages as m, users};
use crate::db::DbConnection;

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = m)]
pub struct MessageRow {
    pub id: String,
    pub sender_id: String,
    pub receiver_id: Option<String>,
    pub file_id: Option<String>,
    pub content: String,
    pub kind: String,
    pub media_file_id: Option<String>,
    pub created_at: i64,
}

/// The file a media message carries.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MediaView {
    pub file_id: String,
    pub name: String,
    pub mime_type: String,
    pub size: i64,
}

/// A message as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    pub id: String,
    pub sender_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receiver_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    pub content: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaView>,
    pub created_at: String,
}

impl MessageView {
    pub fn new(r: &MessageRow, media: Option<MediaView>) -> Self {
        Self {
            id: r.id.clone(),
            sender_id: r.sender_id.clone(),
            receiver_id: r.receiver_id.clone(),
            file_id: r.file_id.clone(),
            content: r.content.clone(),
            kind: r.kind.clone(),
            media,
            created_at: crate::time::micros_to_rfc3339(r.created_at),
        }
    }
}

/// Stores a message (inside the event writer's transaction). For a direct message, the pair
/// is recorded in `message_peers` the first time its two users talk: a cached lookup, and a
/// write only for a new pair (both directions are always inserted together).
pub fn insert(conn: &mut DbConnection, row: &MessageRow) -> QueryResult<()> {
    // Every column bound, `None` as NULL: one statement text whatever the row holds, so diesel
    // finds its prepared statement by type instead of building the SQL (a derived `Insertable`
    // leaves `None` columns out, which gives each combination its own text, built per insert).
    // Run on the backend's own connection: the multi-backend wrapper walks the query again.
    let q = diesel::insert_into(m::table).values((
        m::id.eq(&row.id),
        m::sender_id.eq(&row.sender_id),
        m::receiver_id.eq(&row.receiver_id),
        m::file_id.eq(&row.file_id),
        m::content.eq(&row.content),
        m::kind.eq(&row.kind),
        m::media_file_id.eq(&row.media_file_id),
        m::created_at.eq(row.created_at),
    ));
    // The receiver of a direct message whose pair this thread has not seen committed yet:
    // only then is `message_peers` looked at.
    let new_peer = row.receiver_id.as_ref().filter(|r| {
        !KNOWN_PEERS.with_borrow(|k| k.get(row.sender_id.as_str()).is_some_and(|peers| peers.contains(r.as_str())))
    });
    let pairs = new_peer.map(|receiver| {
        [
            (mp::user_id.eq(&row.sender_id), mp::peer_id.eq(receiver)),
            (mp::user_id.eq(receiver), mp::peer_id.eq(&row.sender_id)),
        ]
    });
    match conn {
        DbConnection::Pg(pg) => {
            q.execute(pg)?;
            if let Some(pairs) = pairs {
                // Another node may record the same new pair at the same moment.
                diesel::insert_into(mp::table).values(&pairs[..]).on_conflict_do_nothing().execute(pg)?;
            }
        }
        DbConnection::Sqlite(c) => {
            q.execute(c)?;
            if let (Some(receiver), Some(pairs)) = (new_peer, pairs) {
                // One writer at a time (BEGIN IMMEDIATE), so look, then insert if absent.
                let found =
                    mp::table.find((&row.sender_id, receiver)).select(mp::user_id).first::<String>(c).optional()?;
                if found.is_none() {
                    for p in pairs {
                        diesel::insert_into(mp::table).values(p).execute(c)?;
                    }
                }
            }
        }
    }
    if let Some(receiver) = new_peer {
        let (a, b) = (row.sender_id.clone(), receiver.clone());
        crate::db::after_commit(move || {
            KNOWN_PEERS.with_borrow_mut(|k| {
                if k.len() >= MAX_KNOWN_USERS {
                    k.clear();
                }
                k.entry(b.clone()).or_default().insert(a.clone());
                k.entry(a).or_default().insert(b);
            })
        });
    }
    Ok(())
}

thread_local! {
    /// `message_peers` pairs this thread saw committed (both directions), so the event writer
    /// skips the lookup for pairs that already talked. Filled only after a commit
    /// ([`crate::db::after_commit`]): a rolled-back batch teaches it nothing. Rows of
    /// `message_peers` go away only with a user (`ON DELETE CASCADE`), whose messages are
    /// refused anyway; a restore happens with the server stopped.
    static KNOWN_PEERS: std::cell::RefCell<HashMap<String, HashSet<String>>> =
        std::cell::RefCell::new(HashMap::new());
}

/// Users [`KNOWN_PEERS`] holds at most before it starts over.
const MAX_KNOWN_USERS: usize = 100_000;

/// Whether `id` is an existing, enabled account.
pub fn active_user(conn: &mut DbConnection, id: &str) -> QueryResult<bool> {
    let disabled: Option<bool> = users::table.find(id).select(users::disabled).first(conn).optional()?;
    Ok(disabled == Some(false))
}

/// Messages between `a` and `b`: the `limit` newest before message id `before`, returned
/// oldest first.
///
/// Each direction is one range of `messages_received` read newest first and stopped at
/// `limit`; the two are merged here. (One query with `OR` sorted all of the conversation's
/// messages before taking the page.)
pub fn conversation(
    conn: &mut DbConnection,
    a: &str,
    b: &str,
    before: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<MessageRow>> {
    let mut rows = Vec::new();
    for (receiver, sender) in [(a, b), (b, a)] {
        let mut q = m::table.filter(m::receiver_id.eq(receiver)).filter(m::sender_id.eq(sender)).into_boxed();
        if let Some(before) = before {
            q = q.filter(m::id.lt(before.to_string()));
        }
        rows.extend(q.order(m::id.desc()).limit(limit).select(MessageRow::as_select()).load(conn)?);
    }
    rows.sort_unstable_by(|x, y| y.id.cmp(&x.id));
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    rows.reverse();
    Ok(rows)
}

/// A file's discussion, oldest first, after message id `after`.
pub fn file_messages(
    conn: &mut DbConnection,
    file_id: &str,
    after: Option<&str>,
    limit: i64,
) -> QueryResult<Vec<MessageRow>> {
    let mut q = m::table.filter(m::file_id.eq(file_id)).into_boxed();
    if let Some(after) = after {
        q = q.filter(m::id.gt(after.to_string()));
    }
    q.order(m::id.asc()).limit(limit).select(MessageRow::as_select()).load(conn)
}

/// The media of these messages, by message id.
pub fn media_of(conn: &mut DbConnection, rows: &[MessageRow]) -> QueryResult<HashMap<String, MediaView>> {
    let ids: Vec<String> = rows.iter().filter_map(|r| r.media_file_id.clone()).collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let found: Vec<(String, String, String, i64)> = files::table
        .filter(files::id.eq_any(&ids))
        .select((files::id, files::name, files::mime_type, files::size))
        .load(conn)?;
    let by_file: HashMap<String, MediaView> = found
        .into_iter()
        .map(|(file_id, name, mime_type, size)| (file_id.clone(), MediaView { file_id, name, mime_type, size }))
        .collect();
    Ok(rows
        .iter()
        .filter_map(|r| {
            let f = r.media_file_id.as_ref()?;
            Some((r.id.clone(), by_file.get(f)?.clone()))
        })
        .collect())
}

/// Everyone `user` has a conversation or a shared file with: who sees their presence.
pub fn contacts(conn: &mut DbConnection, user: &str) -> QueryResult<Vec<String>> {
    let mut set = BTreeSet::new();
    let peers: Vec<String> = mp::table.filter(mp::user_id.eq(user)).select(mp::peer_id).load(conn)?;
    set.extend(peers);
    let shared_with: Vec<String> = fs_::table
        .inner_join(files::table)
        .filter(files::owner_id.eq(user))
        .select(fs_::user_id)
        .distinct()
        .load(conn)?;
    set.extend(shared_with);
    let shared_by: Vec<String> = fs_::table
        .inner_join(files::table)
        .filter(fs_::user_id.eq(user))
        .select(files::owner_id)
        .distinct()
        .load(conn)?;
    set.extend(shared_by);
    set.remove(user);
    Ok(set.into_iter().collect())
}

/// A few seconds' memory of which accounts are active, so a busy sender does not pay a
/// database round trip per message. Disabling an account reaches messaging within [`ActiveUsers::TTL`];
/// a deleted account is still refused by the foreign key when the message is stored.
#[derive(Debug, Default)]
pub struct ActiveUsers {
    map: Mutex<HashMap<String, (Instant, bool)>>,
}

impl ActiveUsers {
    pub const TTL: std::time::Duration = std::time::Duration::from_secs(5);

    pub async fn check(&self, db: &crate::db::Db, id: &str) -> Result<bool, crate::db::DbError> {
        if let Some((at, ok)) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get(id) {
            if at.elapsed() < Self::TTL {
                return Ok(*ok);
            }
        }
        let uid = id.to_string();
        let ok = db.q(move |c| active_user(c, &uid)).await?;
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 100_000 {
            map.retain(|_, (at, _)| at.elapsed() < Self::TTL);
        }
        map.insert(id.to_string(), (Instant::now(), ok));
        Ok(ok)
    }
}

/// Per-user send rate: `rate` messages per second on average, bursts of `burst`.
#[derive(Debug)]
pub struct SendLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl SendLimiter {
    pub fn new(rate: f64, burst: f64) -> Self {
        Self { rate, burst: burst.max(1.0), buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes one send; `Err(seconds)` to wait when the user is over the rate.
    pub fn take(&self, user: &str) -> Result<(), u64> {
        if self.rate <= 0.0 {
            return Ok(());
        }
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() > 100_000 {
            let full = self.burst;
            let rate = self.rate;
            b.retain(|_, (t, at)| *t + at.elapsed().as_secs_f64() * rate < full);
        }
        let now = Instant::now();
        let (tokens, at) = b.get(user).copied().unwrap_or((self.burst, now));
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * self.rate).min(self.burst);
        if tokens >= 1.0 {
            b.insert(user.to_string(), (tokens - 1.0, now));
            Ok(())
        } else {
            b.insert(user.to_string(), (tokens, now));
            Err(((1.0 - tokens) / self.rate).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use diesel::connection::SimpleConnection;
    use diesel::prelude::*;

    use crate::db::testing::migrated_with_users;
    use crate::db::DbConnection;

    /// The writer remembers pairs that already talked only once their first message is
    /// committed: a rolled-back message leaves no `message_peers` rows and teaches the cache
    /// nothing, so the next committed message of that pair records them.
    #[test]
    fn a_pair_is_remembered_only_once_committed() {
        let (_dir, db) = migrated_with_users(&["pa", "pb"]);
        let mut c = db.get().unwrap();
        let c: &mut DbConnection = &mut c;
        let msg = |id: &str| super::MessageRow {
            id: id.into(),
            sender_id: "pa".into(),
            receiver_id: Some("pb".into()),
            file_id: None,
            content: "hi".into(),
            kind: "text".into(),
            media_file_id: None,
            created_at: 1,
        };
        let pairs = |c: &mut DbConnection| {
            use crate::db::schema::message_peers as mp;
            mp::table.select((mp::user_id, mp::peer_id)).order(mp::user_id).load::<(String, String)>(c).unwrap()
        };
        let r: Result<(), diesel::result::Error> = crate::db::write_transaction(c, |c| {
            super::insert(c, &msg("m1"))?;
            Err(diesel::result::Error::RollbackTransaction)
        });
        assert!(r.is_err());
        assert!(pairs(c).is_empty(), "rolled back");
        crate::db::write_transaction(c, |c| super::insert(c, &msg("m2"))).unwrap();
        let both = vec![("pa".to_string(), "pb".to_string()), ("pb".to_string(), "pa".to_string())];
        assert_eq!(pairs(c), both, "the first committed message records the pair both ways");
        crate::db::write_transaction(c, |c| super::insert(c, &msg("m3"))).unwrap();
        assert_eq!(pairs(c), both);
        // Known now: not looked up again (rows removed behind the writer's back, which only a
        // user's deletion does, are not put back).
        c.batch_execute("DELETE FROM message_peers").unwrap();
        crate::db::write_transaction(c, |c| super::insert(c, &msg("m4"))).unwrap();
        assert!(pairs(c).is_empty(), "a known pair is not looked up");
        let n: i64 = crate::db::schema::messages::table.count().get_result(c).unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn limiter_allows_the_burst_then_refuses_with_a_wait() {
        let l = super::SendLimiter::new(2.0, 3.0);
        assert!(l.take("a").is_ok() && l.take("a").is_ok() && l.take("a").is_ok());
        assert_eq!(l.take("a"), Err(1));
        assert!(l.take("b").is_ok(), "users have their own budget");
    }
}

/// One direct conversation of a user, for the conversation list.
#[derive(Debug, Clone)]
pub struct ConversationRow {
    pub peer: (String, String, String),
    pub last: MessageRow,
    pub unread: i64,
}

/// The `limit` conversations of `user` with the newest last message, newest first, with the
/// number of the peer's messages after the user's read mark.
pub fn conversations(conn: &mut DbConnection, user: &str, limit: usize) -> QueryResult<Vec<ConversationRow>> {
    use crate::db::schema::message_reads as mr;
    // The newest message id with each peer, in one statement: per peer one index seek per
    // direction (`messages_received` holds both).
    #[derive(QueryableByName)]
    struct Newest {
        #[diesel(sql_type = diesel::sql_types::Text)]
        peer_id: String,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        sent: Option<String>,
        #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
        received: Option<String>,
    }
    const NEWEST: &str = "SELECT mp.peer_id, \
         (SELECT MAX(m.id) FROM messages m WHERE m.receiver_id = mp.peer_id AND m.sender_id = mp.user_id) AS sent, \
         (SELECT MAX(m.id) FROM messages m WHERE m.receiver_id = mp.user_id AND m.sender_id = mp.peer_id) AS received \
         FROM message_peers mp WHERE mp.user_id = ";
    let found: Vec<Newest> = match conn {
        DbConnection::Sqlite(c) => {
            diesel::sql_query(format!("{NEWEST}?")).bind::<diesel::sql_types::Text, _>(user).load(c)?
        }
        DbConnection::Pg(c) => {
            diesel::sql_query(format!("{NEWEST}$1")).bind::<diesel::sql_types::Text, _>(user).load(c)?
        }
    };
    let mut newest: Vec<(String, String)> =
        found.into_iter().filter_map(|n| Some((n.peer_id, n.sent.max(n.received)?))).collect();
    newest.sort_by(|a, b| b.1.cmp(&a.1));
    newest.truncate(limit);
    if newest.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = newest.iter().map(|(_, id)| id.clone()).collect();
    let peers: Vec<String> = newest.iter().map(|(p, _)| p.clone()).collect();
    let rows: HashMap<String, MessageRow> = m::table
        .filter(m::id.eq_any(&ids))
        .select(MessageRow::as_select())
        .load(conn)?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let people: HashMap<String, (String, String, String)> = users::table
        .filter(users::id.eq_any(&peers))
        .select((users::id, users::display_name, users::email))
        .load::<(String, String, String)>(conn)?
        .into_iter()
        .map(|u| (u.0.clone(), u))
        .collect();
    let marks: HashMap<String, String> = mr::table
        .filter(mr::user_id.eq(user))
        .filter(mr::peer_id.eq_any(&peers))
        .select((mr::peer_id, mr::last_read_id))
        .load::<(String, String)>(conn)?
        .into_iter()
        .collect();
    let mut out = Vec::with_capacity(newest.len());
    for (peer, id) in newest {
        let (Some(last), Some(p)) = (rows.get(&id), people.get(&peer)) else { continue };
        let mut q = m::table.filter(m::receiver_id.eq(user)).filter(m::sender_id.eq(&peer)).into_boxed();
        if let Some(mark) = marks.get(&peer) {
            q = q.filter(m::id.gt(mark.clone()));
        }
        let unread: i64 = q.count().get_result(conn)?;
        out.push(ConversationRow { peer: p.clone(), last: last.clone(), unread });
    }
    Ok(out)
}

/// Marks the conversation of `user` with `peer` read up to its newest message from `peer`.
pub fn mark_read(conn: &mut DbConnection, user: &str, peer: &str) -> QueryResult<()> {
    use crate::db::schema::message_reads as mr;
    let newest: Option<String> = m::table
        .filter(m::receiver_id.eq(user))
        .filter(m::sender_id.eq(peer))
        .select(diesel::dsl::max(m::id))
        .first(conn)?;
    let Some(newest) = newest else { return Ok(()) };
    crate::db::write_transaction(conn, |c| {
        let n = diesel::update(mr::table.find((user, peer))).set(mr::last_read_id.eq(&newest)).execute(c)?;
        if n == 0 {
            diesel::insert_into(mr::table)
                .values((mr::user_id.eq(user), mr::peer_id.eq(peer), mr::last_read_id.eq(&newest)))
                .execute(c)?;
        }
        Ok(())
    })
}
