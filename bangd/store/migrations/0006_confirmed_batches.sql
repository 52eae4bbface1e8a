-- A batch fail2ban has taken stays a row of pending_batches, marked confirmed, until its
-- entries are folded into `applied`, which happens after the import run has ended.
-- The runner wraps this file in one transaction.
--
-- Why: copying each confirmed batch into `applied` (a key and a by-source index entry per
-- entry) cost ~1.4 s of CPU per million entries during the import, and on a 2-vCPU server
-- every CPU second bangd spends while fail2ban bans slows fail2ban about as much. Marking a
-- batch confirmed is one small update; the fold runs once fail2ban is idle, and every query
-- of `applied` folds what is left first, so no reader ever misses a confirmed entry.
-- confirmed = 0: written before its banip was sent (a crash leaves it for recovery);
-- confirmed = 1: fail2ban answered, its entries are applied, as bangd's own bans.
ALTER TABLE pending_batches
    ADD COLUMN confirmed INTEGER NOT NULL DEFAULT 0 CHECK (confirmed IN (0, 1));
