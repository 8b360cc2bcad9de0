-- The per-user event counters as a WITHOUT ROWID table (SQLite only). The event writer reads
-- and moves the counter of both users of every message; in a rowid table keyed by a TEXT
-- primary key each of those is two B-tree descents (the key's index, then the row by rowid),
-- here it is one (issue #5; docs/architecture.md, "The event counters are read, then set").
CREATE TABLE event_counters_new (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    last_seq BIGINT NOT NULL
) WITHOUT ROWID;
INSERT INTO event_counters_new (user_id, last_seq) SELECT user_id, last_seq FROM event_counters;
DROP TABLE event_counters;
ALTER TABLE event_counters_new RENAME TO event_counters;
