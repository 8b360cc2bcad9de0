-- Direct messages and file discussions. Exactly one of receiver_id / file_id is set.
CREATE TABLE messages (
    id TEXT PRIMARY KEY NOT NULL,
    sender_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    receiver_id TEXT REFERENCES users (id) ON DELETE CASCADE,
    file_id TEXT REFERENCES files (id) ON DELETE CASCADE,
    content TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('text', 'image', 'video', 'file')),
    media_file_id TEXT REFERENCES files (id) ON DELETE SET NULL,
    created_at BIGINT NOT NULL,
    CHECK ((receiver_id IS NULL AND file_id IS NOT NULL) OR (receiver_id IS NOT NULL AND file_id IS NULL))
);
CREATE INDEX messages_sent ON messages (sender_id, receiver_id, id);
CREATE INDEX messages_received ON messages (receiver_id, sender_id, id);
CREATE INDEX messages_file ON messages (file_id, id);

-- Per-user event counter: the last `seq` handed out. Its row lock serialises writers of one
-- user's events, so seqs are gapless and commit in order on every backend and node.
CREATE TABLE event_counters (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    last_seq BIGINT NOT NULL
);

-- Persisted WebSocket events, replayed by `resume`.
CREATE TABLE user_events (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX user_events_created ON user_events (created_at);
