INSERT INTO sources (name, jail, location, etag, raw_digest, entries_digest, entries,
                     last_success, created)
VALUES ('drop', 'bl', 'https://example.org/drop.txt', '"abc"', 'r1', 'e1', 2, 1000, 900);
INSERT INTO import_runs (source, jail, state, content_hash, entries, added, started, finished)
VALUES ('drop', 'bl', 'completed', 'e1', 2, 2, 950, 1000);
INSERT INTO applied (jail, entry, source, state, owned, run_id)
VALUES ('bl', '203.0.113.9', 'drop', 'applied', 1, 1),
       ('bl', '198.51.100.0/24', 'drop', 'applied', 1, 1);
