-- How far each user has read each direct conversation: the id of the newest message from the
-- peer they have seen (message ids are UUIDv7, so later messages sort after it). Drives the
-- unread counts of the web UI's conversation list.
CREATE TABLE message_reads (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    peer_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    last_read_id TEXT NOT NULL,
    PRIMARY KEY (user_id, peer_id)
);
