-- Rows written at schema version 1. tests/test_migrations.py inserts them into a database at
-- version >= 1, upgrades it to the newest schema and checks every row survived.
-- Each new migration NNNN.sql gets a data file NNNN.sql here with rows for what it adds.
INSERT INTO job_state (name, last_started, last_finished, last_state, last_error, failures)
VALUES
    ('import:spamhaus-drop', 1700000000.5, 1700000003.25, 'ok', NULL, 0),
    ('import:firehol-level1', 1700000100.0, 1700000101.0, 'failed',
        'HTTP 503 from https://lists.example/level1.netset; will retry', 3),
    ('retention', 1700000200.0, NULL, 'running', NULL, 0),
    ('geo:refresh', NULL, NULL, NULL, NULL, 0),
    ('import:bl-ünicode', 1700000300.0, 1700000300.0, 'interrupted', 'can''t finish: stopping', 1);
