-- Sign-ins through an OAuth/OpenID Connect provider in progress: one row per started sign-in,
-- consumed (deleted) by the callback. `binding_hash` is the keyed hash (HMAC-SHA-256) of the secret in the
-- browser's sign-in cookie, so a state value is only good in the browser that started it.
CREATE TABLE oauth_logins (
    state TEXT PRIMARY KEY NOT NULL,
    provider TEXT NOT NULL,
    nonce TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    binding_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX oauth_logins_expires ON oauth_logins (expires_at);

-- Accounts linked to an identity at a provider: the ID token's (iss, sub).
CREATE TABLE oauth_identities (
    issuer TEXT NOT NULL,
    subject TEXT NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_login_at BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX oauth_identities_user ON oauth_identities (user_id);
