-- 0010: the dead-letter topic's bookkeeping. `dead_lettered_at` is when a
-- reject was produced to `[sink] dead_letter_topic` (NULL: not yet, or no
-- topic configured); the index finds those not produced yet. A catalog
-- change only: no rewrite.
SET LOCAL lock_timeout = '30s';
ALTER TABLE {{rejected}} ADD COLUMN IF NOT EXISTS dead_lettered_at timestamptz;
CREATE INDEX IF NOT EXISTS {{rejected_undelivered_idx}} ON {{rejected}} (rejected_at)
    WHERE dead_lettered_at IS NULL;
