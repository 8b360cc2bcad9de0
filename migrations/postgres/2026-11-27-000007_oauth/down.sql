DROP TABLE oauth_identities;
DROP TABLE oauth_logins;
