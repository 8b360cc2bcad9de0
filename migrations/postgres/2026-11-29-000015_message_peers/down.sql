DROP INDEX messages_file;
DROP INDEX messages_received;
CREATE INDEX messages_sent ON messages (sender_id, receiver_id, id);
CREATE INDEX messages_received ON messages (receiver_id, sender_id, id);
CREATE INDEX messages_file ON messages (file_id, id);
DROP TABLE message_peers;
