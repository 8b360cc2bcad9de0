-- Request counts per budget key and minute, shared by the nodes of a PostgreSQL installation
-- so that rate limits hold across nodes (SQLite installations are one process and count in
-- memory; the table exists there only to keep the schemas alike). Rows older than two
-- minutes are deleted.
CREATE TABLE rate_counters (
    key TEXT NOT NULL,
    window_start BIGINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (key, window_start)
);
