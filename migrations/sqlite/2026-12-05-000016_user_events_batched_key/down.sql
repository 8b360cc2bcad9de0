CREATE TABLE user_events_pk (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, seq)
);
INSERT INTO user_events_pk (user_id, seq, name, data, created_at)
    SELECT user_id, seq, name, data, created_at FROM user_events;
DROP TABLE user_events_mark;
DROP TABLE user_events_key;
DROP TABLE user_events;
ALTER TABLE user_events_pk RENAME TO user_events;
CREATE INDEX user_events_created ON user_events (created_at);
