-- Fewer index writes per message (issue #5). A direct message used to be written into four
-- indexes besides the table's own: messages_sent and messages_received (each at a place
-- picked by a user id, so nearly every message dirtied a page of each), messages_file (an
-- entry even for direct messages, whose file_id is NULL) and the id key. Now:
-- * messages_received serves both directions of a conversation (receiver = a AND sender = b,
--   or the reverse) and is partial: file discussions (receiver_id NULL) are not in it;
-- * messages_file is partial: direct messages are not in it;
-- * messages_sent is gone; who a user has written to is kept in message_peers, one row per
--   (user, peer) pair in each direction, inserted only when a pair first talks
--   (INSERT … ON CONFLICT DO NOTHING: a lookup, no page written, once the pair exists).
CREATE TABLE message_peers (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    peer_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, peer_id)
) WITHOUT ROWID;

INSERT INTO message_peers (user_id, peer_id)
    SELECT sender_id, receiver_id FROM messages WHERE receiver_id IS NOT NULL
    UNION
    SELECT receiver_id, sender_id FROM messages WHERE receiver_id IS NOT NULL;

DROP INDEX messages_sent;
DROP INDEX messages_received;
DROP INDEX messages_file;
CREATE INDEX messages_received ON messages (receiver_id, sender_id, id) WHERE receiver_id IS NOT NULL;
CREATE INDEX messages_file ON messages (file_id, id) WHERE file_id IS NOT NULL;
