DROP TABLE message_reads;
