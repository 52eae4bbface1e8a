-- Geolocation cache: one row per address, whatever answered (or that nothing did).
-- The runner wraps this file in one transaction.
--
-- Layout, chosen by measuring (`bench/bench_geo.py --layouts`: 1M random IPv4 rows, half
-- older than the cutoff, WAL, synchronous=NORMAL, SQLite's default 2 MB page cache; old
-- rows deleted 10,000 per transaction, each layout the way it does that best):
--
--   layout                          100k new rows into 1M   count old   purge 500k   file
--   WITHOUT ROWID, no index               34k rows/s          0.11 s      0.65 s     69 MB
--   WITHOUT ROWID + last_seen index       22k rows/s          0.02 s      1.03 s     96 MB
--   rowid + ip autoindex                  42k rows/s          0.09 s      7.3 s      91 MB
--   rowid + autoindex + last_seen idx     36k rows/s          0.03 s      9.0 s     106 MB
--
-- A rowid table pays for every delete in its separate ip index (random pages all over
-- it); WITHOUT ROWID keeps the row in the primary-key b-tree, so retention deletes whole
-- key ranges (bangd/store/geo.py walks the key in chunks). An index on last_seen only
-- speeds up counting old rows (`cache cleanup --dry-run`, stats), while every last_seen
-- refresh then also moves an index entry: new rows are a third slower, purging slower,
-- the file 40% bigger. So: WITHOUT ROWID, and no index on last_seen.
--
-- Times are unix seconds. `negative` = 1: the resolvers know nothing about the address
-- (all geo columns NULL); such rows are retried after geo.negative_ttl. `origin` is the
-- resolver that answered ('mmdb' or 'ip-api'; for negative rows the last one asked).
-- `last_seen` is when bangd last met the address (in an import, a lookup, a resolve);
-- retention deletes rows whose last_seen is older than geo.retention_days.
CREATE TABLE geo_cache (
    ip TEXT PRIMARY KEY,                -- normalised address text, as lists store it
    country_code TEXT,
    country_name TEXT,
    asn INTEGER,
    as_org TEXT,
    origin TEXT NOT NULL,
    negative INTEGER NOT NULL CHECK (negative IN (0, 1)),
    first_resolved REAL NOT NULL,
    last_resolved REAL NOT NULL,
    last_seen REAL NOT NULL
) WITHOUT ROWID;
