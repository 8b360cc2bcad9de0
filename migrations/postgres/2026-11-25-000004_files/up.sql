CREATE TABLE files (
    id TEXT PRIMARY KEY NOT NULL,
    owner_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    size BIGINT NOT NULL,
    mime_type TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    scan_status TEXT NOT NULL CHECK (scan_status IN ('pending', 'clean', 'quarantined', 'error')),
    integrity TEXT NOT NULL CHECK (integrity IN ('ok', 'compromised', 'unchecked')),
    description TEXT NOT NULL DEFAULT '',
    storage_key TEXT NOT NULL UNIQUE,
    wrapped_key TEXT NOT NULL,
    key_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    checked_at BIGINT
);
CREATE INDEX files_owner ON files (owner_id, id);

CREATE TABLE file_shares (
    file_id TEXT NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    permissions TEXT NOT NULL CHECK (permissions IN ('view', 'download')),
    shared_by TEXT NOT NULL,
    expires_at BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (file_id, user_id)
);
CREATE INDEX file_shares_user ON file_shares (user_id, file_id);

CREATE TABLE security_alerts (
    id TEXT PRIMARY KEY NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    subject_type TEXT,
    subject_id TEXT,
    details TEXT NOT NULL,
    acked_at BIGINT,
    acked_by TEXT
);
CREATE INDEX security_alerts_at ON security_alerts (at);
