-- 0002: drop the history table's foreign key to the latest-state table.
-- Its per-row trigger doubled the cost of every history insert (measured:
-- docs/benchmarks-history.md, "what the history table's constraints cost"). `site_id` stays correct without it: the sink upserts
-- the site row and writes the history rows in the same transaction, and fails
-- the batch when a url has no site row. To delete a site, delete its history
-- first: DELETE FROM site_check WHERE site_id = ...; DELETE FROM site WHERE id = ...
ALTER TABLE {{check}} DROP CONSTRAINT IF EXISTS {{check_site_fkey}};
