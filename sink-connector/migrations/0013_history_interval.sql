-- 0013: the record's `interval` (schema version 2) gets a typed column in
-- the history (4 bytes; in `extra` it took about 20), and the view gives it
-- back; `present` bit 15 says the record had it. A catalog-only ALTER; the
-- view keeps its columns, so CREATE OR REPLACE keeps its owner and grants.
-- And `site_uptime` sums per site before it looks up the url (by primary
-- key), not after joining every row of the site table: one site's answer
-- no longer reads the whole site table.
SET LOCAL lock_timeout = '30s';
ALTER TABLE {{check}} ADD COLUMN interval_ms int4;

-- Each history row with its url and probe name, and `record`: the record as
-- the sink received it (times at microsecond precision). `present` says which
-- known fields the record had; `extra` holds the fields kept as written.
CREATE OR REPLACE VIEW {{check_record}} AS
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
                'schema_version', h.schema_version,
                'interval', h.interval_ms / 1e3::float8)
            - ARRAY(SELECT f.name
                    FROM unnest(ARRAY['url', 'checked_at', 'status_code', 'duration', 're_check', 'ok',
                                      'error', 'timings', 'http_version', 'response_bytes', 'redirects',
                                      'ip', 'tls', 'probe', 'schema_version', 'interval'])
                         WITH ORDINALITY AS f(name, i)
                    WHERE h.present & (1 << (f.i::int - 1)) = 0)
       ) || coalesce(h.extra, '{}'::jsonb)
       -- A record that was no JSON object (moved from the old history) is kept whole in extra.
       ELSE h.extra END AS record
FROM {{check}} h
-- LEFT: an old row whose site was deleted by hand still reads back (url NULL).
LEFT JOIN {{site}} s ON s.id = h.site_id
LEFT JOIN {{probe}} p ON p.id = h.probe_id;

-- Uptime per site over [from_time, to_time): checks that succeeded over
-- checks that succeeded or failed, outside maintenance (checks without an
-- `ok` count in neither; `maintenance`: the checks made during a window).
-- Same signature as migration 11's: CREATE OR REPLACE keeps owner and grants.
CREATE OR REPLACE FUNCTION {{uptime}}(site_url text, from_time timestamptz, to_time timestamptz,
                                      probe_name text DEFAULT NULL)
RETURNS TABLE (url text, checks int8, ok int8, failed int8, uptime float8, maintenance int8)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT (SELECT s.url FROM {{site}} s WHERE s.id = g.site_id), g.checks, g.ok, g.failed,
           g.ok::float8 / nullif(g.ok + g.failed, 0), g.maintenance
    FROM (SELECT r.site_id, sum(r.checks)::int8 AS checks, sum(r.ok)::int8 AS ok,
                 sum(r.failed)::int8 AS failed, sum(r.maintenance)::int8 AS maintenance
          FROM {{rollup}}(site_url, probe_name, from_time, to_time) r
          GROUP BY r.site_id) g;
END;
