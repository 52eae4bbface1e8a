-- Run state of every scheduled job, so a restart knows what ran, what failed and how
-- long to back off. The runner wraps this file in one transaction: no BEGIN/COMMIT here.
CREATE TABLE job_state (
    name TEXT PRIMARY KEY,              -- e.g. "import:spamhaus-drop", "retention"
    last_started REAL,                  -- unix seconds
    last_finished REAL,
    last_state TEXT,                    -- 'running' | 'ok' | 'failed' | 'interrupted'
    last_error TEXT,
    failures INTEGER NOT NULL DEFAULT 0 -- consecutive failures, for backoff
);
