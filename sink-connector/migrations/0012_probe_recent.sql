-- 0012: each probe row keeps its latest outcomes, for flapping
-- (docs/status.md, "States"): `recent` holds up to 64 of them, newest in
-- bit 0, a 1 for a failure; `recent_n` how many it holds. Rows from before
-- start empty: flapping is judged once `flap_window` new checks came.
-- A constant default rewrites nothing.
SET LOCAL lock_timeout = '30s';
ALTER TABLE {{probe_state}}
    ADD COLUMN recent int8 NOT NULL DEFAULT 0,
    ADD COLUMN recent_n int2 NOT NULL DEFAULT 0 CHECK (recent_n BETWEEN 0 AND 64);
