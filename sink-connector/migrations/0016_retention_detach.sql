-- 0016: retention detaches, then drops (docs/sink.md, "Retention").
-- `{{drop_partitions}}` dropped the partitions past `before` in one
-- transaction, holding an ACCESS EXCLUSIVE lock on the parent until the
-- commit had deleted their files — seconds for gigabytes on a disk that
-- discards freed blocks (measured: ~1 s per GB here), and every writer of
-- the table waits that long. Now a call with a real `before` only DETACHes
-- those partitions (a catalog change: the parent is locked for moments)
-- marks them retired (a comment naming the parent) and renames them
-- `retired_<oid>` (so a partition made again for that time, for a late
-- record, takes its name); a call with `before = '-infinity'` drops one
-- retired table of the parent (only that table locked while its files go)
-- and returns 1, or 0 when none is left or none can be dropped (one a view
-- depends on is passed over, with a warning). One caller per table at a
-- time: the advisory lock `{{make_partitions}}` takes.
-- The sink calls it so, each call its own transaction; a table retired by
-- a sink that stopped before dropping it is dropped by the next run. Same
-- signature: CREATE OR REPLACE keeps the owner and the grants.
SET LOCAL lock_timeout = '30s';
CREATE OR REPLACE FUNCTION {{drop_partitions}}(parent regclass, before timestamptz)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    part    record;
    upper   timestamptz;
    made    integer := 0;
    mark    text;
BEGIN
    PERFORM {{partitioned_check}}(parent);
    -- One caller per table at a time (the lock `{{make_partitions}}` takes).
    PERFORM pg_advisory_xact_lock(1460994050, parent::oid::int4);
    mark := 'website-monitor: retired partition of ' || parent::oid::text;
    IF before = '-infinity' THEN
        -- Only a table of the parent's schema and owner: a comment can be
        -- put on a table by its owner only, and only ours are dropped. One
        -- that cannot be dropped (a view of someone's depends on it) is
        -- passed over, with a warning, for the next.
        FOR part IN
            SELECT c.oid::regclass AS rel
            FROM pg_description d JOIN pg_class c ON c.oid = d.objoid
            JOIN pg_class p ON p.oid = parent
            WHERE d.classoid = 'pg_class'::regclass AND d.objsubid = 0 AND d.description = mark
              AND c.relkind = 'r' AND NOT c.relispartition
              AND c.relnamespace = p.relnamespace AND c.relowner = p.relowner
            ORDER BY c.oid
        LOOP
            BEGIN
                EXECUTE format('DROP TABLE %s', part.rel);
                RETURN 1;
            EXCEPTION WHEN OTHERS THEN
                RAISE WARNING 'website-monitor: the retired partition % cannot be dropped: %', part.rel, SQLERRM;
            END;
        END LOOP;
        RETURN 0;
    END IF;
    FOR part IN
        SELECT c.oid AS oid, c.oid::regclass AS rel, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = parent
    LOOP
        upper := substring(part.bound FROM 'TO \(''([^'']+)''\)')::timestamptz;
        IF upper IS NOT NULL AND upper <= before THEN
            EXECUTE format('ALTER TABLE %s DETACH PARTITION %s', parent, part.rel);
            EXECUTE format('COMMENT ON TABLE %s IS %L', part.rel, mark);
            -- Renamed out of the way: a partition made again for the same
            -- time (a late record) takes its name.
            EXECUTE format('ALTER TABLE %s RENAME TO %I', part.rel, 'retired_' || part.oid::text);
            made := made + 1;
        END IF;
    END LOOP;
    RETURN made;
END $$;
