-- 0003: leave room in the latest-state table's pages so that rewriting a
-- url's row (every batch, for every url in it) is a HOT update: no new index
-- entries, no index bloat. Measured with psql on the dev machine: upserting
-- 3,000 latest rows took ~27 ms with fillfactor 50 against ~70 ms with the
-- default 100 (docs/benchmarks-history.md, "fillfactor"). Applies to pages
-- written from now on; an existing large table gets it fully after
-- `VACUUM FULL` at a quiet moment.
ALTER TABLE {{site}} SET (fillfactor = 50);
