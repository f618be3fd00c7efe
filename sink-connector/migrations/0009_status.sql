-- 0009: site status and incidents (issue 14; the model is
-- sink-connector/src/status/, the wiring sink-connector/src/postgres/status.rs
-- and status_rows.rs, docs/status.md).
--
-- Written by the writers in the batch transaction, after the history: the
-- status rows of the batch's sites, then all their probe rows, are locked
-- in key order (site_id, then probe_id) with SELECT ... FOR UPDATE, the
-- batch's records are fed to the model in checked_at order, and the changed
-- rows and the transitions are written back — so a replay or a kill -9
-- never writes a transition twice nor misses one (its id is the site's
-- sequence number, kept in the status row). Writer 0's sweep locks the due
-- sites (wake_at <= now()) the same way.
SET LOCAL lock_timeout = '30s';

-- Every status table refers to its site with ON DELETE CASCADE: deleting a
-- site deletes its status, probe rows, transitions and ad-hoc windows (a url
-- that comes back starts over, as a new site). The foreign keys are checked
-- only when a row is inserted (a new site, probe or transition), never by
-- the updates of every batch, which leave site_id alone.

-- One row per (site, probe): that probe's view of the site. probe_id 0: the
-- records without a probe (as in the rollups).
CREATE TABLE {{probe_state}} (
    site_id         int8 NOT NULL REFERENCES {{site}} (id) ON DELETE CASCADE,
    probe_id        int4 NOT NULL,
    -- What is shown: `maintenance` while a window covers the site.
    state           text NOT NULL,
    -- What the checks say (never `maintenance`; resumed after a window).
    health          text NOT NULL,
    since           timestamptz NOT NULL,
    last_checked_at timestamptz,
    -- Consecutive failures, successes, slow successes, fast successes.
    fails           int4 NOT NULL DEFAULT 0,
    oks             int4 NOT NULL DEFAULT 0,
    slows           int4 NOT NULL DEFAULT 0,
    fasts           int4 NOT NULL DEFAULT 0,
    -- The probe's check interval (from its newest record), milliseconds.
    interval_ms     int4 NOT NULL,
    last_error      text,
    PRIMARY KEY (site_id, probe_id),
    CHECK (state IN ('up', 'degraded', 'down', 'unknown', 'maintenance')),
    CHECK (health IN ('up', 'degraded', 'down', 'unknown'))
);

-- One row per site: its state, queryable in one table.
CREATE TABLE {{status}} (
    site_id         int8 PRIMARY KEY REFERENCES {{site}} (id) ON DELETE CASCADE,
    state           text NOT NULL,
    -- When the site entered `state`.
    since           timestamptz NOT NULL,
    -- When the site's or a probe's state last changed.
    last_change     timestamptz NOT NULL,
    -- The site's clock: the latest time it was evaluated at.
    evaluated_at    timestamptz NOT NULL,
    -- When the sweep must look at the site even if no record comes (a
    -- probe falls silent, a recurring window starts or ends).
    wake_at         timestamptz,
    probes_up       int4 NOT NULL DEFAULT 0,
    probes_degraded int4 NOT NULL DEFAULT 0,
    probes_down     int4 NOT NULL DEFAULT 0,
    probes_unknown  int4 NOT NULL DEFAULT 0,
    -- The number of the site's latest transition (0: none yet).
    seq             int8 NOT NULL DEFAULT 0,
    -- The Kafka partition of the site's newest record: the sweep (wall
    -- clock) looks only at sites whose partition its sink has caught up on.
    "partition"     int4,
    CHECK (state IN ('up', 'degraded', 'down', 'unknown', 'maintenance'))
);
CREATE INDEX {{status_wake_idx}} ON {{status}} (wake_at);

-- One row per change of a site's state. (site_id, seq) is the stable id;
-- `id` spells it as the transitions topic will ("42-7").
CREATE TABLE {{transition}} (
    site_id     int8 NOT NULL REFERENCES {{site}} (id) ON DELETE CASCADE,
    seq         int8 NOT NULL,
    id          text GENERATED ALWAYS AS (site_id::text || '-' || seq::text) STORED,
    from_state  text NOT NULL,
    to_state    text NOT NULL,
    -- The checked_at of the record that caused it, or the sweep's time.
    at          timestamptz NOT NULL,
    reason      text NOT NULL,
    -- Every probe's state after the change: {"eu": "down", "us": "up"}.
    probes      jsonb NOT NULL,
    -- The Kafka position of the causing record; NULL for a sweep.
    "partition" int4,
    "offset"    int8,
    inserted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- When it was produced to `[sink.status] transitions_topic` (NULL: not
    -- yet, or no topic configured).
    published_at timestamptz,
    PRIMARY KEY (site_id, seq)
);
CREATE INDEX {{transition_at_idx}} ON {{transition}} (at);
CREATE INDEX {{transition_unpublished_idx}} ON {{transition}} (site_id, seq)
    WHERE published_at IS NULL;

-- Ad-hoc maintenance windows, inserted by operators with SQL:
--   INSERT INTO site_maintenance (url_pattern, starts_at, ends_at, reason)
--   VALUES ('^https://shop\.example\.com/', '2027-01-15 08:00Z', '2027-01-15 09:00Z', 'db upgrade');
-- site_id wins over url_pattern (a regex, Rust `regex` syntax, as
-- `[[sink.status.maintenance]]` urls) when both are set. A row whose pattern
-- does not compile is skipped, with one warning per row in the sink's log
-- and website_monitor_status_bad_windows_total counting it.
CREATE TABLE {{maintenance}} (
    id          int8 GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    site_id     int8 REFERENCES {{site}} (id) ON DELETE CASCADE,
    url_pattern text,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    reason      text,
    created_by  text NOT NULL DEFAULT current_user,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (site_id IS NOT NULL OR url_pattern IS NOT NULL),
    CHECK (ends_at > starts_at)
);
CREATE INDEX {{maintenance_ends_idx}} ON {{maintenance}} (ends_at);
