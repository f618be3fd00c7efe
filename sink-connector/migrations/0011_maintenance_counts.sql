-- 0011: rollups count the checks made during maintenance apart, and the
-- time each site spent in each state (docs/status.md, "Rollups and the SQL
-- API").
--
-- `maintenance` counts the checks (with an `ok`) made while a maintenance
-- window covered their site; they are no longer in `ok` or `failed` (nor
-- in `failures`), so every uptime (ok / (ok + failed)) leaves them out.
-- Rows written before this migration keep their counts (maintenance 0):
-- which of their checks fell in a window was not recorded. Adding a
-- column with a constant default rewrites no partition.
SET LOCAL lock_timeout = '30s';
ALTER TABLE {{per_minute}} ADD COLUMN maintenance int4 NOT NULL DEFAULT 0;
ALTER TABLE {{per_hour}} ADD COLUMN maintenance int4 NOT NULL DEFAULT 0;
ALTER TABLE {{per_day}} ADD COLUMN maintenance int4 NOT NULL DEFAULT 0;
ALTER TABLE {{fleet_per_minute}} ADD COLUMN maintenance int8 NOT NULL DEFAULT 0;
ALTER TABLE {{fleet_per_hour}} ADD COLUMN maintenance int8 NOT NULL DEFAULT 0;
ALTER TABLE {{fleet_per_day}} ADD COLUMN maintenance int8 NOT NULL DEFAULT 0;

-- The functions returning rollup rows are made again: a SQL-standard body
-- spelled `r.*` with the columns of its day, and would now return too few.
-- CREATE OR REPLACE keeps their owner and grants.
CREATE OR REPLACE FUNCTION {{rollup}}(site_url text, probe_name text, from_time timestamptz, to_time timestamptz)
RETURNS SETOF {{per_minute}} LANGUAGE sql STABLE
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
    ), sites AS (
        SELECT id FROM {{site}} WHERE url = site_url
    ), probes AS (
        SELECT id FROM {{probe}} WHERE name = probe_name
    )
    SELECT r.* FROM {{per_day}} r, b
    WHERE r.bucket >= b.d1 AND r.bucket < b.d2
      AND (site_url IS NULL OR r.site_id = ANY (ARRAY(SELECT id FROM sites)))
      AND (probe_name IS NULL OR r.probe_id = ANY (ARRAY(SELECT id FROM probes)))
    UNION ALL
    SELECT r.* FROM {{per_hour}} r, b
    WHERE r.bucket >= b.h1 AND r.bucket < b.h2 AND NOT (r.bucket >= b.d1 AND r.bucket < b.d2)
      AND (site_url IS NULL OR r.site_id = ANY (ARRAY(SELECT id FROM sites)))
      AND (probe_name IS NULL OR r.probe_id = ANY (ARRAY(SELECT id FROM probes)))
    UNION ALL
    SELECT r.* FROM {{per_minute}} r, b
    WHERE r.bucket >= b.m1 AND r.bucket < b.m2 AND NOT (r.bucket >= b.h1 AND r.bucket < b.h2)
      AND (site_url IS NULL OR r.site_id = ANY (ARRAY(SELECT id FROM sites)))
      AND (probe_name IS NULL OR r.probe_id = ANY (ARRAY(SELECT id FROM probes)));
END;

CREATE OR REPLACE FUNCTION {{fleet_rollup}}(probe_name text, from_time timestamptz, to_time timestamptz)
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

-- Uptime gains a `maintenance` column (the checks left out of it). A new
-- result column needs DROP and CREATE: the function's owner and grants
-- are kept in transaction-local settings and given back below.
SELECT set_config('website_monitor.uptime_owner', p.proowner::regrole::text, true),
       set_config('website_monitor.uptime_acl', coalesce(p.proacl::text, ''), true)
FROM pg_proc p
WHERE p.oid = ({{uptime:lit}} || '(text, timestamptz, timestamptz, text)')::regprocedure;
DROP FUNCTION {{uptime}}(text, timestamptz, timestamptz, text);

-- Uptime per site over [from_time, to_time): checks that succeeded over
-- checks that succeeded or failed, outside maintenance (checks without an
-- `ok` count in neither; `maintenance`: the checks made during a window).
CREATE FUNCTION {{uptime}}(site_url text, from_time timestamptz, to_time timestamptz,
                           probe_name text DEFAULT NULL)
RETURNS TABLE (url text, checks int8, ok int8, failed int8, uptime float8, maintenance int8)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT s.url, sum(r.checks)::int8, sum(r.ok)::int8, sum(r.failed)::int8,
           sum(r.ok)::float8 / nullif(sum(r.ok) + sum(r.failed), 0), sum(r.maintenance)::int8
    FROM {{rollup}}(site_url, probe_name, from_time, to_time) r
    JOIN {{site}} s ON s.id = r.site_id
    GROUP BY s.url;
END;

DO $$
DECLARE
    f regprocedure := ({{uptime:lit}} || '(text, timestamptz, timestamptz, text)')::regprocedure;
    acl text := current_setting('website_monitor.uptime_acl');
    g record;
BEGIN
    EXECUTE format('ALTER FUNCTION %s OWNER TO %s', f, current_setting('website_monitor.uptime_owner'));
    IF acl <> '' THEN
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
        FOR g IN SELECT a.grantee, a.privilege_type, a.is_grantable
                 FROM aclexplode(acl::aclitem[]) a
                 WHERE a.grantee <> (SELECT proowner FROM pg_proc WHERE oid = f) LOOP
            EXECUTE format('GRANT %s ON FUNCTION %s TO %s%s', g.privilege_type, f,
                           CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE g.grantee::regrole::text END,
                           CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        END LOOP;
    END IF;
END $$;

-- The seconds each site spent in each state over [from_time, to_time)
-- (cut at now(): the future has no state yet), from its transitions: the
-- state at from_time is the `to_state` of its newest transition at or
-- before it — `unknown` before its first (a site not seen yet has no
-- state). One row per (site, state met); a site's rows add up to the
-- range. site_url NULL: every site.
CREATE FUNCTION {{state_time}}(site_url text, from_time timestamptz, to_time timestamptz)
RETURNS TABLE (url text, state text, seconds float8)
LANGUAGE sql STABLE
BEGIN ATOMIC
    WITH b AS (
        SELECT from_time AS f, least(to_time, now()) AS t
    ), sites AS (
        SELECT s.id, s.url FROM {{site}} s WHERE site_url IS NULL OR s.url = site_url
    ), changes AS (
        SELECT s.id, s.url, 0::int8 AS seq, b.f AS at, b.t,
               coalesce((SELECT tr.to_state FROM {{transition}} tr
                         WHERE tr.site_id = s.id AND tr.at <= b.f
                         ORDER BY tr.seq DESC LIMIT 1), 'unknown') AS st
        FROM sites s, b WHERE b.t > b.f
        UNION ALL
        SELECT s.id, s.url, tr.seq, tr.at, b.t, tr.to_state
        FROM sites s, b, {{transition}} tr
        WHERE b.t > b.f AND tr.site_id = s.id AND tr.at > b.f AND tr.at < b.t
    ), spans AS (
        SELECT url, st, at, lead(at, 1, t) OVER (PARTITION BY id ORDER BY seq) AS until
        FROM changes
    )
    SELECT url, st, sum(extract(epoch FROM until - at))::float8
    FROM spans GROUP BY url, st;
END;

-- The fleet fill (benchmarks) sums `maintenance` too.
CREATE OR REPLACE FUNCTION {{fleet_fill}}(source regclass, target regclass, span interval, shards int4)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('SELECT %s(%L::regclass, min(bucket), max(bucket), %L) FROM %s',
                   {{make_partitions:lit}}, target, span, source);
    EXECUTE format($f$
        INSERT INTO %2$s (shard, probe_id, bucket, checks, ok, failed, responses,
                          duration_min_us, duration_max_us, duration_sum_us, cert_days_min,
                          latency, failures, maintenance)
        WITH g AS (
            SELECT CASE WHEN %3$s > 0 THEN (site_id %% %3$s)::int4 ELSE -1 END AS shard,
                   probe_id, bucket, sum(checks)::int8 AS checks, sum(ok)::int8 AS ok,
                   sum(failed)::int8 AS failed, sum(responses)::int8 AS responses,
                   min(duration_min_us) AS mn, max(duration_max_us) AS mx,
                   sum(duration_sum_us)::int8 AS sm, min(cert_days_min) AS cd,
                   sum(maintenance)::int8 AS mt
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
               g.mn, g.mx, g.sm, g.cd, a.l, a.f, g.mt
        FROM g LEFT JOIN a USING (shard, probe_id, bucket)
        ON CONFLICT (shard, probe_id, bucket) DO NOTHING
    $f$, source, target, shards);
END $$;
