DROP TABLE email_outbox;
DROP TABLE notification_preferences;
DROP TABLE notifications;
DROP TABLE schedule_participants;
DROP TABLE schedules;
