CREATE TABLE event_counters_old (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    last_seq BIGINT NOT NULL
);
INSERT INTO event_counters_old (user_id, last_seq) SELECT user_id, last_seq FROM event_counters;
DROP TABLE event_counters;
ALTER TABLE event_counters_old RENAME TO event_counters;
