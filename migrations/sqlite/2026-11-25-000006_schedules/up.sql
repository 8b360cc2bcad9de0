-- Meetings. Times are microseconds since the Unix epoch, UTC. `sequence` is the iCalendar
-- SEQUENCE: bumped whenever the meeting changes (time, title, cancellation).
CREATE TABLE schedules (
    id TEXT PRIMARY KEY NOT NULL,
    creator_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    title TEXT NOT NULL,
    description TEXT NOT NULL,
    start_time BIGINT NOT NULL,
    end_time BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('scheduled', 'cancelled')),
    sequence BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    CHECK (end_time > start_time)
);
CREATE INDEX schedules_creator ON schedules (creator_id, start_time);

CREATE TABLE schedule_participants (
    schedule_id TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    status TEXT NOT NULL CHECK (status IN ('pending', 'accepted', 'declined')),
    responded_at BIGINT,
    PRIMARY KEY (schedule_id, user_id)
);
CREATE INDEX schedule_participants_user ON schedule_participants (user_id, schedule_id);

-- In-app notifications.
CREATE TABLE notifications (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    read_at BIGINT
);
CREATE INDEX notifications_user ON notifications (user_id, id);

-- Which channels a user wants notifications on (no row: all of them).
CREATE TABLE notification_preferences (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email BOOLEAN NOT NULL,
    in_app BOOLEAN NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Durable e-mail outbox: written in the transaction of the action that causes the mail, drained
-- by the delivery workers (claim, send, mark). `message_id` is the stable Message-ID header.
CREATE TABLE email_outbox (
    id TEXT PRIMARY KEY NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    user_id TEXT REFERENCES users (id) ON DELETE SET NULL,
    to_addr TEXT NOT NULL,
    to_name TEXT NOT NULL,
    subject TEXT NOT NULL,
    -- The rendered message as JSON: {"text", "html", "ics", "ics_method"}.
    content TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('queued', 'sending', 'sent', 'failed')),
    attempts INTEGER NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    claimed_by TEXT,
    claimed_at BIGINT,
    last_error TEXT,
    created_at BIGINT NOT NULL,
    sent_at BIGINT
);
CREATE INDEX email_outbox_due ON email_outbox (status, next_attempt_at);
