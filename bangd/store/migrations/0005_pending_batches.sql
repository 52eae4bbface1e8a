-- Batches on their way to fail2ban, one row per batch instead of one `pending` row per entry
-- in `applied`. The runner wraps this file in one transaction.
--
-- Why: a 1M-entry import wrote every entry twice into `applied` (as pending, then as
-- applied), each write a key search plus an entry in the partial index of unfinished rows:
-- 15.8 s of SQLite for 1M entries in batches of 5,000. One JSON row per batch, then one
-- INSERT ... SELECT from json_each when fail2ban has answered, is 2.9 s (measured with
-- SQLite 3.40, Debian 12's), less than the 6.5 s of a plain executemany of the same rows.
-- `entries` is a JSON array of entry strings; run_id is the run that sent the batch.
CREATE TABLE pending_batches (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    jail TEXT NOT NULL,
    run_id INTEGER,
    entries TEXT NOT NULL CHECK (json_valid(entries) AND json_type(entries) = 'array')
);
CREATE INDEX pending_batches_by_source ON pending_batches (source, jail);
-- A crash under an older bangd may have left pending rows: they become batches, one per
-- source, jail and run, so the next run still asks fail2ban which of them arrived.
INSERT INTO pending_batches (source, jail, run_id, entries)
SELECT source, jail, run_id, json_group_array(entry) FROM applied WHERE state = 'pending'
GROUP BY source, jail, run_id;
DELETE FROM applied WHERE state = 'pending';
