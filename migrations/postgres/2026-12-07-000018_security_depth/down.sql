ALTER TABLE oauth_logins DROP COLUMN link_user_id;
DROP TABLE audit_anchor_state;
ALTER TABLE sessions DROP COLUMN mfa_passed;
