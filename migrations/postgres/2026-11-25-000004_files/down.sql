DROP TABLE security_alerts;
DROP TABLE file_shares;
DROP TABLE files;
