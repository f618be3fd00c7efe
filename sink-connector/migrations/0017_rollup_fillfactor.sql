-- 0017: leave room in the pages of the rollup rows that every batch updates
-- (each site's hour and day rows, and the fleet's rows at every level), so
-- that adding a batch to a row is a HOT update: no new index entry, the old
-- version pruned from its own page. The per-minute rows are left full: they
-- are most of the rollups' disk and live for minutes. Measured with psql
-- (docs/benchmarks.md, "The sink against COPY: session 12").
--
-- A partitioned table has no storage parameters of its own: the partitions
-- made from now on get theirs from `{{make_partition}}` (restated here from
-- 0006 with the one change: the `WITH` clause), the existing ones get it
-- below (pages written from now on).
CREATE OR REPLACE FUNCTION {{make_partition}}(parent regclass, nsp text, rel text, start float8, step float8)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    name  text := rel || '_' || to_char(to_timestamp(start) AT TIME ZONE 'UTC',
                        CASE WHEN step::int8 % 86400 = 0 THEN 'YYYYMMDD' ELSE 'YYYYMMDDHH24' END);
    hour  float8;
    made  integer := 0;
    opts  text := CASE WHEN parent IN ({{per_hour:lit}}::regclass, {{per_day:lit}}::regclass,
                                       {{fleet_per_minute:lit}}::regclass,
                                       {{fleet_per_hour:lit}}::regclass,
                                       {{fleet_per_day:lit}}::regclass)
                       THEN ' WITH (fillfactor = 70)' ELSE '' END;
BEGIN
    IF EXISTS (SELECT FROM pg_inherits
               WHERE inhparent = parent AND inhrelid = to_regclass(format('%I.%I', nsp, name)))
       OR {{partition_covers}}(parent, to_timestamp(start), to_timestamp(start + step)) THEN
        RETURN 0;
    END IF;
    IF to_regclass(format('%I.%I', nsp, name)) IS NULL THEN
        BEGIN
            EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                           nsp, name, parent, to_timestamp(start), to_timestamp(start + step)) || opts;
            RETURN 1;
        EXCEPTION WHEN invalid_object_definition THEN
            NULL;  -- overlaps existing partitions: fill the gaps below
        END;
    END IF;
    hour := start;
    WHILE hour < start + step LOOP
        name := rel || '_' || to_char(to_timestamp(hour) AT TIME ZONE 'UTC', 'YYYYMMDDHH24');
        IF to_regclass(format('%I.%I', nsp, name)) IS NULL
           AND NOT {{partition_covers}}(parent, to_timestamp(hour), to_timestamp(hour + 3600)) THEN
            BEGIN
                EXECUTE format('CREATE TABLE %I.%I PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                               nsp, name, parent, to_timestamp(hour), to_timestamp(hour + 3600)) || opts;
                made := made + 1;
            EXCEPTION WHEN invalid_object_definition THEN
                NULL;  -- this hour is covered already
            END;
        END IF;
        hour := hour + 3600;
    END LOOP;
    RETURN made;
END $$;
REVOKE ALL ON FUNCTION {{make_partition}}(regclass, text, text, float8, float8) FROM PUBLIC;

DO $$
DECLARE
    part regclass;
BEGIN
    FOR part IN
        SELECT i.inhrelid::regclass FROM pg_inherits i
        WHERE i.inhparent IN ({{per_hour:lit}}::regclass, {{per_day:lit}}::regclass,
                              {{fleet_per_minute:lit}}::regclass,
                              {{fleet_per_hour:lit}}::regclass,
                              {{fleet_per_day:lit}}::regclass)
    LOOP
        EXECUTE format('ALTER TABLE %s SET (fillfactor = 70)', part);
    END LOOP;
END $$;
