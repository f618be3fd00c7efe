-- 0001: the three tables of the sink and its Kafka-position bookkeeping.
-- Placeholders in double braces are replaced by quoted identifiers derived
-- from [sink] schema and table; nothing from the configuration is pasted raw.

-- Latest state per url. The seed's table (id, url unique, data jsonb) is kept
-- compatible: when it already exists only the new columns are added.
CREATE TABLE IF NOT EXISTS {{site}} (
    id         bigserial PRIMARY KEY,
    url        text NOT NULL UNIQUE,
    data       jsonb
);
ALTER TABLE {{site}}
    ADD COLUMN IF NOT EXISTS checked_at timestamptz,
    ADD COLUMN IF NOT EXISTS updated_at timestamptz;

-- One row per record; the Kafka position is unique, so a replay changes nothing.
CREATE TABLE IF NOT EXISTS {{check}} (
    id          bigserial PRIMARY KEY,
    site_id     bigint NOT NULL REFERENCES {{site}} (id) ON DELETE CASCADE,
    checked_at  timestamptz NOT NULL,
    ok          boolean,
    status_code integer,
    duration    double precision,
    data        jsonb NOT NULL,
    topic       text NOT NULL,
    "partition" integer NOT NULL,
    "offset"    bigint NOT NULL,
    inserted_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT {{check_position_key}} UNIQUE (topic, "partition", "offset")
);
-- "History of one site, newest first."
CREATE INDEX IF NOT EXISTS {{check_site_time_idx}} ON {{check}} (site_id, checked_at DESC);

-- Records that cannot be stored as checks, with their raw bytes and why.
CREATE TABLE IF NOT EXISTS {{rejected}} (
    id              bigserial PRIMARY KEY,
    topic           text NOT NULL,
    "partition"     integer NOT NULL,
    "offset"        bigint NOT NULL,
    key             bytea,
    raw             bytea,
    reason          text NOT NULL,
    detail          text,
    kafka_timestamp timestamptz,
    rejected_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT {{rejected_position_key}} UNIQUE (topic, "partition", "offset")
);

-- Next Kafka offset to write per partition, updated in the same transaction
-- as the rows: the sink's own exactly-once bookkeeping (Kafka's committed
-- offsets only save re-reading).
CREATE TABLE IF NOT EXISTS {{offsets}} (
    topic       text NOT NULL,
    "partition" integer NOT NULL,
    next_offset bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, "partition")
);
