INSERT INTO geo_cache (ip, country_code, country_name, asn, as_org, origin, negative,
                       first_resolved, last_resolved, last_seen)
VALUES ('203.0.113.9', 'US', 'United States', 15169, 'Google LLC', 'mmdb', 0,
        1000.0, 1000.0, 1000.0),
       ('2001:db8::1', 'IE', 'Ireland', NULL, NULL, 'ip-api', 0, 900.0, 1100.5, 1200.25),
       ('198.51.100.7', NULL, NULL, NULL, NULL, 'ip-api', 1, 1000.0, 1000.0, 1300.0),
       ('192.0.2.44', 'DE', 'Deutschland ü', 64512, 'Filler ''0''', 'mmdb', 0,
        1.5, 2.5, 3.5);
