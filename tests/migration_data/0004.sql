INSERT INTO exemptions (network, comment, created, expires)
VALUES ('203.0.113.9/32', 'customer VPN', 1000.0, NULL),
       ('2001:db8::/64', NULL, 1100.0, 90000.5);
