DROP TABLE login_throttle;
DROP TABLE invites;
DROP TABLE recovery_codes;
DROP TABLE mfa_challenges;
DROP TABLE refresh_tokens;
DROP TABLE sessions;
ALTER TABLE users DROP COLUMN totp_last_step;
ALTER TABLE users DROP COLUMN totp_pending_enc;
ALTER TABLE users DROP COLUMN totp_secret_enc;
