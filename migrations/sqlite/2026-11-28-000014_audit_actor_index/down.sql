CREATE INDEX audit_log_actor_seq ON audit_log (actor_id, seq);
DROP TABLE audit_actor_mark;
DROP TABLE audit_actor;
