-- 0005: a rejected record's stored value is bounded (the sink keeps its first
-- MiB in `raw`), so one huge record cannot fill the disk; `raw_length` and
-- `raw_sha256` describe the whole value, so an operator can still tell
-- records apart and check a copy fetched from Kafka. NULL for rows written
-- before this migration (their `raw` is whole) and for records without a value.
-- Adding NULL columns is a catalog change: no rewrite of an existing table.
SET LOCAL lock_timeout = '30s';
ALTER TABLE {{rejected}}
    ADD COLUMN IF NOT EXISTS raw_length bigint,
    ADD COLUMN IF NOT EXISTS raw_sha256 bytea;
