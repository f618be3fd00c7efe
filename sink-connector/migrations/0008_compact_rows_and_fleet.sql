-- 0008: a smaller history row, and rollups of the whole fleet.
--
-- History: the Kafka position (12 bytes) and `inserted_at` (8) leave the
-- row. The offsets table, locked in every batch transaction, is what makes
-- writes exactly-once (see 0006); a check is found by (site_id, probe_id,
-- checked_at). `insert_delay_ms` (4 bytes) keeps the end-to-end latency:
-- the view gives `inserted_at` back as checked_at + insert_delay_ms (NULL
-- when the row was written more than ~24 days from its check). An IPv4
-- address takes an int4 (`ipv4`, 4 bytes, against 7 for inet); `ip` keeps
-- IPv6 addresses and the rows written before. `cert_days_left` is NULL
-- when it equals the whole days from checked_at to cert_not_after (the
-- source's own formula) and bit 16 of `present` says so; the view derives
-- it. Dropping columns only changes the catalog; new rows store none of
-- the dropped ones, and partitions made from now on do not have them.
-- Columns stay in an order that packs a typical row without padding.
SET LOCAL lock_timeout = '30s';
-- The view is rebuilt: its grants are kept (in a transaction-local
-- setting: no temporary table, which a role without TEMP could not make)
-- and given back below.
SELECT set_config('website_monitor.view_grants',
                  coalesce(string_agg(a.grantee::text || ':' || a.privilege_type, ','), ''), true)
FROM pg_class c, aclexplode(c.relacl) a
WHERE c.oid = {{check_record:lit}}::regclass AND a.grantee <> c.relowner;
DROP VIEW {{check_record}};
ALTER TABLE {{check}}
    DROP COLUMN inserted_at,
    DROP COLUMN "offset",
    DROP COLUMN "partition",
    ADD COLUMN insert_delay_ms int4,
    ADD COLUMN ipv4 int4;

-- Each history row with its url and probe name, and `record`: the record as
-- the sink received it (times at microsecond precision). `present` says which
-- known fields the record had; `extra` holds the fields kept as written.
CREATE VIEW {{check_record}} AS
SELECT h.checked_at, h.checked_at + h.insert_delay_ms * interval '1 millisecond' AS inserted_at,
       s.url, p.name AS probe, h.ok, h.status_code,
       h.duration_us / 1e3::float8 AS duration_ms, h.error_kind,
       CASE WHEN h.extra IS NULL OR jsonb_typeof(h.extra) = 'object' THEN
       (jsonb_build_object(
                'url', s.url,
                'checked_at', extract(epoch FROM h.checked_at)::float8,
                'status_code', h.status_code,
                'duration', h.duration_us / 1e6::float8,
                're_check', h.re_check,
                'ok', h.ok,
                'error', CASE WHEN h.error_kind IS NOT NULL
                              THEN jsonb_build_object('kind', h.error_kind, 'message', h.error_message) END,
                'timings', jsonb_build_object(
                    'dns', h.dns_us / 1e6::float8,
                    'connect', h.connect_us / 1e6::float8,
                    'tls', h.tls_us / 1e6::float8,
                    'ttfb', h.ttfb_us / 1e6::float8,
                    'transfer', h.transfer_us / 1e6::float8),
                'http_version', CASE h.http_version WHEN 9 THEN 'HTTP/0.9' WHEN 10 THEN 'HTTP/1.0'
                                    WHEN 11 THEN 'HTTP/1.1' WHEN 20 THEN 'HTTP/2' WHEN 30 THEN 'HTTP/3' END,
                'response_bytes', h.response_bytes,
                'redirects', h.redirects,
                'ip', CASE WHEN h.ipv4 IS NOT NULL THEN host('0.0.0.0'::inet + (h.ipv4::int8 & 4294967295))
                           ELSE host(h.ip) END,
                'tls', CASE WHEN h.tls_version IS NOT NULL OR h.cert_not_after IS NOT NULL
                                 OR h.cert_days_left IS NOT NULL
                            THEN jsonb_build_object(
                                'version', CASE h.tls_version WHEN 12 THEN 'TLSv1.2' WHEN 13 THEN 'TLSv1.3' END,
                                'cert_not_after', extract(epoch FROM h.cert_not_after)::int8,
                                'cert_days_left', CASE WHEN h.present & 65536 <> 0
                                    THEN floor(extract(epoch FROM h.cert_not_after - h.checked_at) / 86400)::int8
                                    ELSE h.cert_days_left END) END,
                'probe', p.name,
                'schema_version', h.schema_version)
            - ARRAY(SELECT f.name
                    FROM unnest(ARRAY['url', 'checked_at', 'status_code', 'duration', 're_check', 'ok',
                                      'error', 'timings', 'http_version', 'response_bytes', 'redirects',
                                      'ip', 'tls', 'probe', 'schema_version']) WITH ORDINALITY AS f(name, i)
                    WHERE h.present & (1 << (f.i::int - 1)) = 0)
       ) || coalesce(h.extra, '{}'::jsonb)
       -- A record that was no JSON object (moved from the old history) is kept whole in extra.
       ELSE h.extra END AS record
FROM {{check}} h
-- LEFT: an old row whose site was deleted by hand still reads back (url NULL).
LEFT JOIN {{site}} s ON s.id = h.site_id
LEFT JOIN {{probe}} p ON p.id = h.probe_id;

DO $$
DECLARE
    g text;
    who oid;
BEGIN
    FOREACH g IN ARRAY string_to_array(current_setting('website_monitor.view_grants'), ',') LOOP
        who := split_part(g, ':', 1)::oid;
        EXECUTE format('GRANT %s ON %s TO %s', split_part(g, ':', 2), {{check_record:lit}},
                       CASE WHEN who = 0 THEN 'PUBLIC' ELSE who::regrole::text END);
    END LOOP;
END $$;

-- Rollups of every site together, per (shard, probe, bucket): the same
-- counts as the per-site rollups, written in the same transaction. `shard`
-- is the Kafka partition the checks came from, so each row has one writer
-- (no waiting between writers) and the fleet's figure for a bucket is the
-- sum of a few rows: "all sites" answers read these, not every site's row.
CREATE TABLE {{fleet_per_minute}} (
    shard           int4 NOT NULL,
    probe_id        int4 NOT NULL,
    bucket          timestamptz NOT NULL,
    -- int8: a fleet row counts every site of a partition (an int4 would
    -- overflow past ~24,855 checks/s per partition and probe in a day).
    checks          int8 NOT NULL,
    ok              int8 NOT NULL,
    failed          int8 NOT NULL,
    responses       int8 NOT NULL,
    duration_min_us int4,
    duration_max_us int4,
    duration_sum_us int8 NOT NULL,
    cert_days_min   int2,
    latency         int8[],
    failures        int8[],
    PRIMARY KEY (shard, probe_id, bucket)
) PARTITION BY RANGE (bucket);
CREATE TABLE {{fleet_per_hour}} (LIKE {{fleet_per_minute}} INCLUDING ALL) PARTITION BY RANGE (bucket);
CREATE TABLE {{fleet_per_day}} (LIKE {{fleet_per_minute}} INCLUDING ALL) PARTITION BY RANGE (bucket);
-- Each fleet table belongs to the owner of the per-site table of its level
-- (so a migration run by a superuser leaves nothing the sink's owner role
-- cannot alter), and every role granted something on that table gets the
-- same on it (a least-privileged sink writes both).
DO $$
DECLARE
    pair record;
    g record;
BEGIN
    FOR pair IN SELECT * FROM (VALUES ({{per_minute:lit}}, {{fleet_per_minute:lit}}),
                                      ({{per_hour:lit}}, {{fleet_per_hour:lit}}),
                                      ({{per_day:lit}}, {{fleet_per_day:lit}})) AS v(site, fleet) LOOP
        EXECUTE format('ALTER TABLE %s OWNER TO %s', pair.fleet,
                       (SELECT relowner::regrole::text FROM pg_class WHERE oid = pair.site::regclass));
        FOR g IN SELECT a.grantee, a.privilege_type, a.is_grantable
                 FROM pg_class c, aclexplode(c.relacl) a
                 WHERE c.oid = pair.site::regclass AND a.grantee <> c.relowner LOOP
            EXECUTE format('GRANT %s ON %s TO %s%s', g.privilege_type, pair.fleet,
                           CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END,
                           CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
    END LOOP;
    EXECUTE format('ALTER VIEW %s OWNER TO %s', {{check_record:lit}},
                   (SELECT relowner::regrole::text FROM pg_class WHERE oid = {{check:lit}}::regclass));
END $$;

-- The partition functions of 0006 now also take the fleet tables.
CREATE OR REPLACE FUNCTION {{partitioned_check}}(parent regclass) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF parent IS NULL OR parent NOT IN ({{check:lit}}::regclass, {{rejected:lit}}::regclass,
            {{per_minute:lit}}::regclass, {{per_hour:lit}}::regclass, {{per_day:lit}}::regclass,
            {{fleet_per_minute:lit}}::regclass, {{fleet_per_hour:lit}}::regclass,
            {{fleet_per_day:lit}}::regclass) THEN
        RAISE EXCEPTION '% is not one of the website-monitor sink''s partitioned tables', parent
            USING ERRCODE = '42501';
    END IF;
END $$;
REVOKE ALL ON FUNCTION {{partitioned_check}}(regclass) FROM PUBLIC;

-- The fleet rollup rows that together cover [from_time, to_time), levels
-- picked as {{rollup}} picks them. probe_name NULL: every probe.
CREATE FUNCTION {{fleet_rollup}}(probe_name text, from_time timestamptz, to_time timestamptz)
RETURNS SETOF {{fleet_per_minute}} LANGUAGE sql STABLE
BEGIN ATOMIC
    WITH m AS (
        SELECT date_trunc('minute', from_time, 'UTC') AS m1,
               date_trunc('minute', to_time - interval '1 microsecond', 'UTC') + interval '1 minute' AS m2
    ), h AS (
        SELECT m1, m2,
               date_trunc('hour', m1 - interval '1 microsecond', 'UTC') + interval '1 hour' AS h1,
               date_trunc('hour', m2, 'UTC') AS h2
        FROM m
    ), b AS (
        SELECT m1, m2, h1, h2,
               date_trunc('day', h1 - interval '1 microsecond', 'UTC') + interval '24 hours' AS d1,
               date_trunc('day', h2, 'UTC') AS d2
        FROM h
    ), probes AS (
        SELECT id FROM {{probe}} WHERE name = probe_name
    )
    SELECT r.* FROM {{fleet_per_day}} r, b
    WHERE r.bucket >= b.d1 AND r.bucket < b.d2
      AND (probe_name IS NULL OR r.probe_id = ANY (ARRAY(SELECT id FROM probes)))
    UNION ALL
    SELECT r.* FROM {{fleet_per_hour}} r, b
    WHERE r.bucket >= b.h1 AND r.bucket < b.h2 AND NOT (r.bucket >= b.d1 AND r.bucket < b.d2)
      AND (probe_name IS NULL OR r.probe_id = ANY (ARRAY(SELECT id FROM probes)))
    UNION ALL
    SELECT r.* FROM {{fleet_per_minute}} r, b
    WHERE r.bucket >= b.m1 AND r.bucket < b.m2 AND NOT (r.bucket >= b.h1 AND r.bucket < b.h2)
      AND (probe_name IS NULL OR r.probe_id = ANY (ARRAY(SELECT id FROM probes)));
END;

-- Every site together over [from_time, to_time): uptime and latency in one
-- row (per_probe true: one row per probe, probe NULL otherwise), from the
-- fleet rollups — a few rows per bucket, however many sites there are.
CREATE FUNCTION {{fleet}}(from_time timestamptz, to_time timestamptz,
                          probe_name text DEFAULT NULL, per_probe boolean DEFAULT false)
RETURNS TABLE (probe text, checks int8, ok int8, failed int8, uptime float8, responses int8,
               avg_ms float8, min_ms float8, max_ms float8, p50_ms float8, p95_ms float8,
               p99_ms float8, cert_days_min int2)
LANGUAGE sql STABLE
BEGIN ATOMIC
    WITH r AS (
        SELECT CASE WHEN per_probe THEN x.probe_id END AS g, x.*
        FROM {{fleet_rollup}}(probe_name, from_time, to_time) x
    ), totals AS (
        SELECT g, sum(checks)::int8 AS checks, sum(ok)::int8 AS ok, sum(failed)::int8 AS failed,
               sum(responses)::int8 AS responses, sum(duration_sum_us)::float8 AS sum_us,
               min(duration_min_us) AS min_us, max(duration_max_us) AS max_us,
               min(cert_days_min) AS cert_days_min, array_agg(latency) FILTER (WHERE latency IS NOT NULL) AS l
        FROM r GROUP BY 1
    ), buckets AS (
        SELECT g, e >> 32 AS k, sum(e & 4294967295)::int8 AS n
        FROM (SELECT g, unnest(latency) AS e FROM r) AS u GROUP BY 1, 2
    ), cumulative AS (
        SELECT g, k, sum(n) OVER (PARTITION BY g ORDER BY k) AS below,
               sum(n) OVER (PARTITION BY g) AS total
        FROM buckets
    ), passes AS (
        SELECT g,
               min(k) FILTER (WHERE below >= 0.5::float8 * total) AS k50,
               min(k) FILTER (WHERE below >= 0.95::float8 * total) AS k95,
               min(k) FILTER (WHERE below >= 0.99::float8 * total) AS k99
        FROM cumulative GROUP BY 1
    )
    SELECT p.name, t.checks, t.ok, t.failed, t.ok::float8 / nullif(t.ok + t.failed, 0),
           t.responses, t.sum_us / nullif(t.responses, 0) / 1e3, t.min_us / 1e3, t.max_us / 1e3,
           power(2, (c.k50 + 0.5) / 8.0) / 1000, power(2, (c.k95 + 0.5) / 8.0) / 1000,
           power(2, (c.k99 + 0.5) / 8.0) / 1000, t.cert_days_min
    FROM totals t
    LEFT JOIN passes c ON coalesce(c.g, -1) = coalesce(t.g, -1)
    LEFT JOIN {{probe}} p ON p.id = t.g;
END;

-- Fills `target` (a fleet table) from `source` (the per-site table of the
-- same level): counts summed, histograms merged per bucket key, per
-- (shard, probe, bucket). `shards` > 0 takes site_id % shards as the shard
-- (the benchmark's stand-in for Kafka partitions); 0 puts every row in
-- shard -1 ("from before the fleet tables"). Makes the partitions it needs
-- (`span` wide). Migration 8 fills the fleet from the rollups already there.
CREATE FUNCTION {{fleet_fill}}(source regclass, target regclass, span interval, shards int4)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SELECT %s(%L::regclass, min(bucket), max(bucket), %L) FROM %s',
                   {{make_partitions:lit}}, target, span, source);
    EXECUTE format($f$
        INSERT INTO %2$s (shard, probe_id, bucket, checks, ok, failed, responses,
                          duration_min_us, duration_max_us, duration_sum_us, cert_days_min,
                          latency, failures)
        WITH g AS (
            SELECT CASE WHEN %3$s > 0 THEN (site_id %% %3$s)::int4 ELSE -1 END AS shard,
                   probe_id, bucket, sum(checks)::int8 AS checks, sum(ok)::int8 AS ok,
                   sum(failed)::int8 AS failed, sum(responses)::int8 AS responses,
                   min(duration_min_us) AS mn, max(duration_max_us) AS mx,
                   sum(duration_sum_us)::int8 AS sm, min(cert_days_min) AS cd
            FROM %1$s GROUP BY 1, 2, 3
        ), e AS (
            SELECT CASE WHEN %3$s > 0 THEN (site_id %% %3$s)::int4 ELSE -1 END AS shard,
                   probe_id, bucket, 'l' AS col, x >> 32 AS k, sum(x & 4294967295)::int8 AS n
            FROM %1$s, unnest(latency) x GROUP BY 1, 2, 3, 4, 5
            UNION ALL
            SELECT CASE WHEN %3$s > 0 THEN (site_id %% %3$s)::int4 ELSE -1 END,
                   probe_id, bucket, 'f', x >> 32, sum(x & 4294967295)::int8
            FROM %1$s, unnest(failures) x GROUP BY 1, 2, 3, 4, 5
        ), a AS (
            SELECT shard, probe_id, bucket,
                   array_agg((k << 32) | n ORDER BY k) FILTER (WHERE col = 'l') AS l,
                   array_agg((k << 32) | n ORDER BY k) FILTER (WHERE col = 'f') AS f
            FROM e GROUP BY 1, 2, 3
        )
        SELECT g.shard, g.probe_id, g.bucket, g.checks, g.ok, g.failed, g.responses,
               g.mn, g.mx, g.sm, g.cd, a.l, a.f
        FROM g LEFT JOIN a USING (shard, probe_id, bucket)
        ON CONFLICT (shard, probe_id, bucket) DO NOTHING
    $f$, source, target, shards);
END $$;

SELECT {{fleet_fill}}({{per_minute:lit}}, {{fleet_per_minute:lit}}, '1 day', 0),
       {{fleet_fill}}({{per_hour:lit}}, {{fleet_per_hour:lit}}, '1 day', 0),
       {{fleet_fill}}({{per_day:lit}}, {{fleet_per_day:lit}}, '30 days', 0);
