-- 0014: two more columns per probe row (docs/status.md, "States"):
-- `heard_at`, the site's clock when the probe's newest check was applied
-- (silence counts from it, so a probe whose clock lags the others' still
-- votes; NULL for rows from before: `last_checked_at` stands in), and
-- `down_before_window`, whether the probe said `down` when the current
-- maintenance window began (leaving it still failing, it stays `down`);
-- `flapping`, whether it was flapping at its last check (hysteresis); and
-- `ahead_written_at`, the newest `checked_at` as written of its checks dated
-- ahead of the sink (a repeat of one is late). Constant defaults rewrite
-- nothing.
SET LOCAL lock_timeout = '30s';
ALTER TABLE {{probe_state}}
    ADD COLUMN heard_at timestamptz,
    ADD COLUMN down_before_window boolean NOT NULL DEFAULT false,
    ADD COLUMN flapping boolean NOT NULL DEFAULT false,
    ADD COLUMN ahead_written_at timestamptz;
