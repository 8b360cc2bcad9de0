-- Source addresses blocked by an automatic response (or by an admin): every request from `ip`
-- is refused with 403 until `expires_at`, unless lifted earlier (`lifted_at`, `lifted_by`).
CREATE TABLE ip_blocks (
    id TEXT PRIMARY KEY NOT NULL,
    ip TEXT NOT NULL,
    reason TEXT NOT NULL,
    alert_id TEXT,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    lifted_at BIGINT,
    lifted_by TEXT
);
CREATE INDEX ip_blocks_active ON ip_blocks (expires_at);
