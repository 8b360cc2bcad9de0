-- Browser sessions of the admin console (and, later, the web UI): a cookie secret bound to a
-- row of `sessions`, so listing, revoking and expiring work as for API sessions. The cookie
-- holds the secret; only its keyed hash (HMAC-SHA-256) is stored. `csrf_token` is put in every
-- form of the session and compared in constant time on every POST. `last_seen_at` drives the
-- idle timeout; the `sessions` row's `expires_at` is the absolute one.
CREATE TABLE browser_sessions (
    token_hash TEXT PRIMARY KEY NOT NULL,
    session_id TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL
);
CREATE INDEX browser_sessions_session ON browser_sessions (session_id);
