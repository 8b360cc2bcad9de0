DROP TABLE upload_slots;
ALTER TABLE sessions DROP COLUMN reverify_required;
ALTER TABLE users DROP COLUMN suspended_reason;
ALTER TABLE users DROP COLUMN suspended_at;
