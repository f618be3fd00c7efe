-- 0004: the history table is keyed by its Kafka position alone. Its bigserial
-- `id` (a sequence call and a third btree entry per row) identified nothing
-- the position does not: dropping it made inserting 300,000 history rows
-- ~20-25 % cheaper (psql on the dev machine, docs/benchmarks-history.md). The
-- UNIQUE (topic, partition, offset) constraint stays and becomes the replica
-- identity, so logical replication can still update and delete rows.
-- Dropping a column is a catalog change: no rewrite of an existing table.
-- It needs an exclusive lock; waiting for it behind a long transaction would
-- block every reader of the table, so give up after 30 s (the sink reports
-- the lock timeout and the next start tries again). A view that uses
-- site_check.id makes this fail: drop or rewrite it first.
SET LOCAL lock_timeout = '30s';
ALTER TABLE {{check}} DROP COLUMN IF EXISTS id;
ALTER TABLE {{check}} REPLICA IDENTITY USING INDEX {{check_position_key}};
