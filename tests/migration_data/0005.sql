INSERT INTO pending_batches (source, jail, run_id, entries)
VALUES ('spamhaus', 'blocklist', NULL, '["198.51.100.77","2001:db8:5::/48"]');
