-- Whether a session passed a second factor (the admin API and console require it), and the
-- database's record of the last audit anchor (so a removed anchor file is noticed).
ALTER TABLE sessions ADD COLUMN mfa_passed BOOLEAN NOT NULL DEFAULT FALSE;
CREATE TABLE audit_anchor_state (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    anchored_at BIGINT NOT NULL
);
ALTER TABLE oauth_logins ADD COLUMN link_user_id TEXT;
