-- Blocklist imports: what each source last fetched, every run, and every entry each
-- source has applied to each jail. The runner wraps this file in one transaction.

-- One row per source bangd has ever imported; kept after a source leaves the config
-- until its entries have been withdrawn.
CREATE TABLE sources (
    name TEXT PRIMARY KEY,
    jail TEXT NOT NULL,                 -- jail the applied entries are in
    location TEXT NOT NULL,             -- url or path, for display
    etag TEXT,                          -- HTTP validators of the last applied download
    last_modified TEXT,
    raw_digest TEXT,                    -- sha256 of the last applied raw body
    entries_digest TEXT,                -- sha256 of the last applied normalised entry set
    settings_digest TEXT,               -- allowlist/skip_reserved/jail the set was made with
    entries INTEGER NOT NULL DEFAULT 0, -- entries currently applied
    last_success REAL,                  -- unix seconds of the last completed/unchanged run
    created REAL NOT NULL
);

-- Every import run: the idempotency record. content_hash is the normalised set's digest.
CREATE TABLE import_runs (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    jail TEXT NOT NULL,
    state TEXT NOT NULL
        CHECK (state IN ('running', 'completed', 'unchanged', 'failed', 'interrupted')),
    trigger TEXT NOT NULL DEFAULT 'timer',  -- 'timer' | 'manual' | 'force'
    content_hash TEXT,
    raw_hash TEXT,
    entries INTEGER,
    added INTEGER NOT NULL DEFAULT 0,
    removed INTEGER NOT NULL DEFAULT 0,
    invalid INTEGER NOT NULL DEFAULT 0,
    skipped INTEGER NOT NULL DEFAULT 0,
    started REAL NOT NULL,
    finished REAL,
    error TEXT
);
CREATE INDEX import_runs_by_source ON import_runs (source, id);
CREATE INDEX import_runs_running ON import_runs (state) WHERE state = 'running';

-- What each source has applied to each jail. state: 'pending' = written before the
-- banip was sent (a crash leaves it pending: the next run asks fail2ban whether it
-- arrived); 'applied' = fail2ban confirmed; 'removing' = unban under way.
-- owned = 1 when bangd's ban created the fail2ban entry; 0 when fail2ban already held it
-- (banned by someone else): bangd never unbans what it did not ban.
CREATE TABLE applied (
    jail TEXT NOT NULL,
    entry TEXT NOT NULL,
    source TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'applied' CHECK (state IN ('pending', 'applied', 'removing')),
    owned INTEGER NOT NULL DEFAULT 1,
    run_id INTEGER,
    PRIMARY KEY (jail, entry, source)
) WITHOUT ROWID;
-- By source, for a source's entry set; state is left out so that confirming a batch
-- (pending -> applied) does not rewrite this index. The partial index finds what a crash
-- left unfinished without scanning a source's entries.
CREATE INDEX applied_by_source ON applied (source, jail);
CREATE INDEX applied_unfinished ON applied (source) WHERE state != 'applied';
