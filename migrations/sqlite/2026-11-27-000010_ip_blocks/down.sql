DROP TABLE ip_blocks;
