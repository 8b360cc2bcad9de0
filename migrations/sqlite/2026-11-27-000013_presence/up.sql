-- Presence across nodes (PostgreSQL installations; SQLite ones are one process and keep it in
-- memory, the table exists there only to keep the schemas alike): each node's view of each
-- user it has connections for, refreshed by the node every 30 s; rows not refreshed for 90 s
-- (their node died) are swept and the user announced offline.
CREATE TABLE presence (
    user_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, node_id)
);
CREATE INDEX presence_updated ON presence (updated_at);
