-- Runtime exemptions (`bangctl allow`): addresses and networks the importer must not ban,
-- next to the config's allowlist. The runner wraps this file in one transaction.
-- network is normalised (host bits cleared, IPv4-mapped IPv6 written as IPv4), so one
-- exemption per network; expires NULL = until removed.
CREATE TABLE exemptions (
    network TEXT PRIMARY KEY,
    comment TEXT,
    created REAL NOT NULL,
    expires REAL
);
