-- The per-user key of stored events, kept in batches (SQLite only; PostgreSQL keeps the
-- primary key on user_events (user_id, seq)). Every direct message stores an event for each of
-- two users, and the key (user_id, seq) put each of them on another page of that index: a
-- commit of ~60 messages dirtied ~120 scattered index pages against ~10 pages of appended rows,
-- most of what the WAL wrote (issue #5; docs/architecture.md, "Where the event writer's pages
-- go"). Now rows are appended in commit order under an id that never changes or returns
-- (AUTOINCREMENT: VACUUM INTO keeps it, and a pruned-empty table does not hand it out again),
-- and the event writer copies the (user_id, seq, id) of rows past `user_events_mark` into
-- `user_events_key`, sorted, once many have gathered, in the same transaction as a batch.
-- Readers combine the key (rows up to the mark) with a scan of the tail after it
-- (`realtime::store`). The key is derived data, rebuilt here from the rows.
CREATE TABLE user_events_rows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
INSERT INTO user_events_rows (user_id, seq, name, data, created_at)
    SELECT user_id, seq, name, data, created_at FROM user_events ORDER BY created_at, user_id, seq;
DROP TABLE user_events;
ALTER TABLE user_events_rows RENAME TO user_events;
CREATE INDEX user_events_created ON user_events (created_at);

CREATE TABLE user_events_key (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    id BIGINT NOT NULL,
    PRIMARY KEY (user_id, seq)
) WITHOUT ROWID;
INSERT INTO user_events_key (user_id, seq, id) SELECT user_id, seq, id FROM user_events ORDER BY user_id, seq;

CREATE TABLE user_events_mark (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    last_id BIGINT NOT NULL
);
INSERT INTO user_events_mark (id, last_id) SELECT 1, COALESCE(MAX(id), 0) FROM user_events;
