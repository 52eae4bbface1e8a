INSERT INTO pending_batches (source, jail, run_id, entries, confirmed)
VALUES ('spamhaus', 'blocklist', NULL, '["198.51.100.78","2001:db8:6::/48"]', 1);
