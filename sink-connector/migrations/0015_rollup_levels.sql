-- 0015: the SQL API's level picking prunes partitions when it plans and
-- reads only the edges of the finer levels (docs/sink.md, "SQL API").
-- `site_rollup` and `site_fleet_rollup` took their bounds from
-- date_trunc(..., 'UTC'), which is STABLE, through a CTE: PostgreSQL
-- planned every partition of the three levels at every call and pruned at
-- run time only; and the minute level read every minute of the range for
-- the site, then dropped those an hour row covers (the hour level the same
-- with days). The bounds now come from `{{rollup_levels}}`: IMMUTABLE
-- (computed in UTC `timestamp`), inlined, so with constant arguments the
-- planner keeps only the partitions it reads; and each finer level reads
-- its two edges only. Same results, same signatures: CREATE OR REPLACE
-- keeps the functions' owner and grants.
SET LOCAL lock_timeout = '30s';

-- The buckets of [from_time, to_time): whole UTC days [d1, d2); hours
-- [h1, h1_end) and [h2_start, h2) around them (or all of [h1, h2) when no
-- whole day fits); minutes [m1, m1_end) and [m2_start, m2) around the hours
-- (or all of [m1, m2)). An empty range has its end at its start; so has
-- every range when `to_time` is not after `from_time`.
CREATE FUNCTION {{rollup_levels}}(from_time timestamptz, to_time timestamptz)
RETURNS TABLE (d1 timestamptz, d2 timestamptz,
               h1 timestamptz, h1_end timestamptz, h2_start timestamptz, h2 timestamptz,
               m1 timestamptz, m1_end timestamptz, m2_start timestamptz, m2 timestamptz)
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    -- In UTC `timestamp`: its date_trunc and interval arithmetic are
    -- IMMUTABLE (timestamptz's are STABLE, which keeps the planner from
    -- pruning partitions).
    SELECT d.d1 AT TIME ZONE 'UTC', greatest(d.d1, d.d2) AT TIME ZONE 'UTC',
           d.h1 AT TIME ZONE 'UTC',
           (CASE WHEN d.d1 < d.d2 THEN d.d1 ELSE greatest(d.h1, d.h2) END) AT TIME ZONE 'UTC',
           (CASE WHEN d.d1 < d.d2 THEN d.d2 ELSE greatest(d.h1, d.h2) END) AT TIME ZONE 'UTC',
           greatest(d.h1, d.h2) AT TIME ZONE 'UTC',
           d.m1 AT TIME ZONE 'UTC',
           (CASE WHEN d.h1 < d.h2 THEN d.h1 ELSE d.m2 END) AT TIME ZONE 'UTC',
           (CASE WHEN d.h1 < d.h2 THEN d.h2 ELSE d.m2 END) AT TIME ZONE 'UTC',
           d.m2 AT TIME ZONE 'UTC'
    FROM (SELECT h.m1, h.m2, h.h1, h.h2,
                 date_trunc('day', h.h1 - interval '1 microsecond') + interval '1 day' AS d1,
                 date_trunc('day', h.h2) AS d2
          FROM (SELECT m.m1, m.m2,
                       date_trunc('hour', m.m1 - interval '1 microsecond') + interval '1 hour' AS h1,
                       date_trunc('hour', m.m2) AS h2
                FROM (SELECT f.m1, CASE WHEN to_time > from_time
                                        THEN date_trunc('minute', (to_time AT TIME ZONE 'UTC') - interval '1 microsecond')
                                             + interval '1 minute'
                                        ELSE f.m1 END AS m2
                      FROM (SELECT date_trunc('minute', from_time AT TIME ZONE 'UTC') AS m1) f) m) h) d;
END;

-- One scan per level, its two edges ORed: with constant bounds the planner
-- prunes partitions either way, and with bounds it cannot fold (a LATERAL
-- call, `now()`) three scans plan cheaper than five.
CREATE OR REPLACE FUNCTION {{rollup}}(site_url text, probe_name text, from_time timestamptz, to_time timestamptz)
RETURNS SETOF {{per_minute}} LANGUAGE sql STABLE
BEGIN ATOMIC
    WITH sites AS (
        SELECT id FROM {{site}} WHERE url = site_url
    ), probes AS (
        SELECT id FROM {{probe}} WHERE name = probe_name
    )
    SELECT r.* FROM {{per_day}} r, {{rollup_levels}}(from_time, to_time) b
    WHERE r.bucket >= b.d1 AND r.bucket < b.d2
      AND (site_url IS NULL OR r.site_id = ANY (ARRAY(SELECT id FROM sites)))
      AND (probe_name IS NULL OR r.probe_id = ANY (ARRAY(SELECT id FROM probes)))
    UNION ALL
    SELECT r.* FROM {{per_hour}} r, {{rollup_levels}}(from_time, to_time) b
    WHERE ((r.bucket >= b.h1 AND r.bucket < b.h1_end) OR (r.bucket >= b.h2_start AND r.bucket < b.h2))
      AND (site_url IS NULL OR r.site_id = ANY (ARRAY(SELECT id FROM sites)))
      AND (probe_name IS NULL OR r.probe_id = ANY (ARRAY(SELECT id FROM probes)))
    UNION ALL
    SELECT r.* FROM {{per_minute}} r, {{rollup_levels}}(from_time, to_time) b
    WHERE ((r.bucket >= b.m1 AND r.bucket < b.m1_end) OR (r.bucket >= b.m2_start AND r.bucket < b.m2))
      AND (site_url IS NULL OR r.site_id = ANY (ARRAY(SELECT id FROM sites)))
      AND (probe_name IS NULL OR r.probe_id = ANY (ARRAY(SELECT id FROM probes)));
END;

CREATE OR REPLACE FUNCTION {{fleet_rollup}}(probe_name text, from_time timestamptz, to_time timestamptz)
RETURNS SETOF {{fleet_per_minute}} LANGUAGE sql STABLE
BEGIN ATOMIC
    WITH probes AS (
        SELECT id FROM {{probe}} WHERE name = probe_name
    )
    SELECT r.* FROM {{fleet_per_day}} r, {{rollup_levels}}(from_time, to_time) b
    WHERE r.bucket >= b.d1 AND r.bucket < b.d2
      AND (probe_name IS NULL OR r.probe_id = ANY (ARRAY(SELECT id FROM probes)))
    UNION ALL
    SELECT r.* FROM {{fleet_per_hour}} r, {{rollup_levels}}(from_time, to_time) b
    WHERE ((r.bucket >= b.h1 AND r.bucket < b.h1_end) OR (r.bucket >= b.h2_start AND r.bucket < b.h2))
      AND (probe_name IS NULL OR r.probe_id = ANY (ARRAY(SELECT id FROM probes)))
    UNION ALL
    SELECT r.* FROM {{fleet_per_minute}} r, {{rollup_levels}}(from_time, to_time) b
    WHERE ((r.bucket >= b.m1 AND r.bucket < b.m1_end) OR (r.bucket >= b.m2_start AND r.bucket < b.m2))
      AND (probe_name IS NULL OR r.probe_id = ANY (ARRAY(SELECT id FROM probes)));
END;
