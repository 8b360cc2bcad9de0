-- Automatic responses that act on accounts (docs/admin.md § Automatic responses).
-- suspend_account: the account is disabled pending an admin's review; `suspended_reason` names
-- the rule and `suspended_at` the time (NULL for an account an admin disabled by hand).
ALTER TABLE users ADD COLUMN suspended_at BIGINT;
ALTER TABLE users ADD COLUMN suspended_reason TEXT;
-- force_mfa: the session must be confirmed again (second factor, or password without MFA)
-- before it can be used; cleared per session by POST /api/auth/reverify.
ALTER TABLE sessions ADD COLUMN reverify_required BOOLEAN NOT NULL DEFAULT FALSE;
-- Uploads in flight per user, shared by the nodes of a PostgreSQL installation (SQLite
-- installations count in memory). A lease the node renews while the upload runs; a row whose
-- lease ran out (its node died) no longer counts.
CREATE TABLE upload_slots (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX upload_slots_user ON upload_slots (user_id);
