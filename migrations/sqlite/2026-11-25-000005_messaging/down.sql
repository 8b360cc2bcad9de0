DROP TABLE user_events;
DROP TABLE event_counters;
DROP TABLE messages;
