-- 0007: the SQL API — each history row as its JSON record, and functions
-- that answer uptime, latency percentiles, errors and a status-page summary
-- over any time range from the rollups, picking the level by themselves.
-- Function bodies are SQL-standard (BEGIN ATOMIC): table names are
-- substituted as quoted identifiers, never pasted into a string.

-- Each history row with its url and probe name, and `record`: the record as
-- the sink received it (times at microsecond precision). `present` says which
-- known fields the record had; `extra` holds the fields kept as written.
CREATE VIEW {{check_record}} AS
SELECT h.checked_at, h.inserted_at, s.url, p.name AS probe, h."partition", h."offset", h.ok, h.status_code,
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
                'ip', host(h.ip),
                'tls', CASE WHEN h.tls_version IS NOT NULL OR h.cert_not_after IS NOT NULL
                                 OR h.cert_days_left IS NOT NULL
                            THEN jsonb_build_object(
                                'version', CASE h.tls_version WHEN 12 THEN 'TLSv1.2' WHEN 13 THEN 'TLSv1.3' END,
                                'cert_not_after', extract(epoch FROM h.cert_not_after)::int8,
                                'cert_days_left', h.cert_days_left) END,
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

-- The rollup rows that together cover [from_time, to_time), rounded out to
-- whole minutes: whole UTC days from the day level, whole hours from the
-- hour level, the rest from the minute level. A piece older than its level's
-- retention is missing (prefer whole hours and days for long ranges).
-- site_url / probe_name NULL: every site / probe.
CREATE FUNCTION {{rollup}}(site_url text, probe_name text, from_time timestamptz, to_time timestamptz)
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
               -- '24 hours', not '1 day': a day is added in the session's
               -- time zone, which is not always 24 hours (DST).
               date_trunc('day', h1 - interval '1 microsecond', 'UTC') + interval '24 hours' AS d1,
               date_trunc('day', h2, 'UTC') AS d2
        FROM h
    ), sites AS (
        SELECT id FROM {{site}} WHERE url = site_url
    ), probes AS (
        SELECT id FROM {{probe}} WHERE name = probe_name
    )
    -- "= ANY (ARRAY(...))", not "IN (SELECT ...)": the ids become one array
    -- computed first, which the primary key's index takes (one site: a few
    -- index entries, not a scan of every row in the range).
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

-- The duration, in milliseconds, below which a fraction p of a latency
-- histogram lies: the geometric middle of the bucket where the count passes
-- p (within 4.43 % of the true value). NULL for an empty histogram.
CREATE FUNCTION {{percentile}}(latency int8[], p float8)
RETURNS float8 LANGUAGE sql IMMUTABLE PARALLEL SAFE
BEGIN ATOMIC
    SELECT power(2, ((x.e >> 32) + 0.5) / 8.0) / 1000
    FROM (SELECT e, sum(e & 4294967295) OVER (ORDER BY e >> 32) AS below,
                 sum(e & 4294967295) OVER () AS total
          FROM unnest(latency) AS e) AS x
    WHERE x.below >= p * x.total
    ORDER BY x.e >> 32
    LIMIT 1;
END;

-- Uptime per site over [from_time, to_time): checks that succeeded over
-- checks that succeeded or failed (checks without an `ok` count in neither).
-- One row per site (site_url NULL: every site with checks in the range).
CREATE FUNCTION {{uptime}}(site_url text, from_time timestamptz, to_time timestamptz,
                           probe_name text DEFAULT NULL)
RETURNS TABLE (url text, checks int8, ok int8, failed int8, uptime float8)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT s.url, sum(r.checks)::int8, sum(r.ok)::int8, sum(r.failed)::int8,
           sum(r.ok)::float8 / nullif(sum(r.ok) + sum(r.failed), 0)
    FROM {{rollup}}(site_url, probe_name, from_time, to_time) r
    JOIN {{site}} s ON s.id = r.site_id
    GROUP BY s.url;
END;

-- Latency of the checks that got a response, per site (per_site false: all
-- sites together, url NULL) and per probe (per_probe true), in milliseconds.
CREATE FUNCTION {{latency}}(site_url text, from_time timestamptz, to_time timestamptz,
                            probe_name text DEFAULT NULL, per_site boolean DEFAULT true,
                            per_probe boolean DEFAULT false)
RETURNS TABLE (url text, probe text, responses int8, avg_ms float8, min_ms float8, max_ms float8,
               p50_ms float8, p95_ms float8, p99_ms float8)
LANGUAGE sql STABLE
BEGIN ATOMIC
    WITH r AS (
        SELECT CASE WHEN per_site THEN x.site_id END AS g_site,
               CASE WHEN per_probe THEN x.probe_id END AS g_probe, x.*
        FROM {{rollup}}(site_url, probe_name, from_time, to_time) x
    ), totals AS (
        SELECT g_site, g_probe, sum(responses)::int8 AS responses,
               sum(duration_sum_us)::float8 AS sum_us, min(duration_min_us) AS min_us,
               max(duration_max_us) AS max_us
        FROM r GROUP BY 1, 2
    ), buckets AS (
        -- unnest in the select list (a ProjectSet): in FROM, each row's
        -- unnest is a function scan into a tuplestore, ~3x slower.
        SELECT g_site, g_probe, e >> 32 AS k, sum(e & 4294967295)::int8 AS n
        FROM (SELECT g_site, g_probe, unnest(latency) AS e FROM r) AS u GROUP BY 1, 2, 3
    ), cumulative AS (
        -- The count up to each bucket, per group: one row per (group,
        -- bucket), so the window sorts a few dozen rows per site, not every
        -- histogram element of every rollup row.
        SELECT g_site, g_probe, k,
               sum(n) OVER (PARTITION BY g_site, g_probe ORDER BY k) AS below,
               sum(n) OVER (PARTITION BY g_site, g_probe) AS total
        FROM buckets
    ), passes AS (
        -- The first bucket where the count passes p, as {{percentile}} picks it.
        SELECT g_site, g_probe,
               min(k) FILTER (WHERE below >= 0.5::float8 * total) AS k50,
               min(k) FILTER (WHERE below >= 0.95::float8 * total) AS k95,
               min(k) FILTER (WHERE below >= 0.99::float8 * total) AS k99
        FROM cumulative GROUP BY 1, 2
    )
    -- Each percentile is the geometric middle of its bucket, as in {{percentile}}.
    SELECT s.url, p.name, t.responses, t.sum_us / nullif(t.responses, 0) / 1e3,
           t.min_us / 1e3, t.max_us / 1e3,
           power(2, (c.k50 + 0.5) / 8.0) / 1000, power(2, (c.k95 + 0.5) / 8.0) / 1000,
           power(2, (c.k99 + 0.5) / 8.0) / 1000
    FROM totals t
    -- A group key is NULL in every row or in none (ids are never -1): the
    -- coalesce makes the join hashable; IS NOT DISTINCT FROM is not, and
    -- compared every site with every site (10,000 sites: 10^8 pairs).
    LEFT JOIN passes c ON coalesce(c.g_site, -1) = coalesce(t.g_site, -1)
                      AND coalesce(c.g_probe, -1) = coalesce(t.g_probe, -1)
    LEFT JOIN {{site}} s ON s.id = t.g_site
    LEFT JOIN {{probe}} p ON p.id = t.g_probe;
END;

-- Failures by error kind per site over [from_time, to_time).
CREATE FUNCTION {{errors}}(site_url text, from_time timestamptz, to_time timestamptz,
                           probe_name text DEFAULT NULL)
RETURNS TABLE (url text, kind text, failures int8)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT s.url, coalesce({{error_kind}}(e >> 32), 'other'), sum(e & 4294967295)::int8
    FROM {{rollup}}(site_url, probe_name, from_time, to_time) r
    CROSS JOIN LATERAL unnest(r.failures) AS e
    JOIN {{site}} s ON s.id = r.site_id
    GROUP BY 1, 2;
END;

-- One row per site for a status page: the latest check, and over
-- [from_time, to_time) the uptime, p95 latency and fewest certificate days.
CREATE FUNCTION {{summary}}(from_time timestamptz, to_time timestamptz)
RETURNS TABLE (url text, checked_at timestamptz, ok boolean, status_code int4,
               uptime float8, p95_ms float8, cert_days_min int2)
LANGUAGE sql STABLE
BEGIN ATOMIC
    WITH per_site AS (
        SELECT site_id, sum(ok)::float8 / nullif(sum(ok) + sum(failed), 0) AS uptime,
               min(cert_days_min) AS cert_days_min
        FROM {{rollup}}(NULL, NULL, from_time, to_time) GROUP BY 1
    )
    SELECT s.url, s.checked_at,
           CASE jsonb_typeof(s.data -> 'ok') WHEN 'boolean' THEN (s.data ->> 'ok')::boolean END,
           CASE WHEN jsonb_typeof(s.data -> 'status_code') = 'number'
                     AND (s.data ->> 'status_code') ~ '^[0-9]{1,9}$'
                THEN (s.data ->> 'status_code')::int4 END,
           p.uptime, l.p95_ms, p.cert_days_min
    FROM {{site}} s
    LEFT JOIN per_site p ON p.site_id = s.id
    LEFT JOIN {{latency}}(NULL, from_time, to_time) l ON l.url = s.url;
END;
