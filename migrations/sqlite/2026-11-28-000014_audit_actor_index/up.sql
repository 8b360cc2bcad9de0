-- The audit log's per-actor index, kept in batches (SQLite only; PostgreSQL keeps the plain
-- index on audit_log (actor_id, seq)). Concurrent requests are audited for different users, so
-- an index on audit_log (actor_id, seq) put each entry of a commit on another index page, and
-- writing those pages was most of the cost of a commit. The audit writer now copies the
-- (actor_id, seq) pairs of entries after `audit_actor_mark.seq` into `audit_actor` once a few
-- thousand have gathered, sorted, in the same transaction as an append; readers combine
-- `audit_actor` (entries up to the mark) with a scan of the short tail after it
-- (`audit::actor_index::walk`). The table is derived data: queries still compare the entry's own
-- actor_id, and the hash chain covers the entries, not this index.
CREATE TABLE audit_actor (
    actor_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (actor_id, seq)
) WITHOUT ROWID;

CREATE TABLE audit_actor_mark (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    seq BIGINT NOT NULL
);

INSERT INTO audit_actor (actor_id, seq)
    SELECT actor_id, seq FROM audit_log WHERE actor_id IS NOT NULL ORDER BY actor_id, seq;
INSERT INTO audit_actor_mark (id, seq) SELECT 1, COALESCE(MAX(seq), 0) FROM audit_log;
DROP INDEX audit_log_actor_seq;
