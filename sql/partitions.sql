-- Partitions: monthly range partitions that are always there, kept and
-- retired on schedule, with no row ever stranded in the default partition.
-- Naming is Rust (saas.monthly_partition_name, saas.default_partition_name);
-- the DDL is here.
--
-- Every function that computes month boundaries pins DateStyle and TimeZone,
-- so boundaries never depend on the session: months start at midnight of the
-- parent's configured time zone.

-- ---------------------------------------------------------------------------
-- Configuration (global config tables: valid Citus reference tables)
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.partition_config (
  parent            regclass    NOT NULL,
  control_column    name        NOT NULL,
  control_type      regtype     NOT NULL,
  premake           int         NOT NULL DEFAULT 3,
  retention         interval,
  retention_action  text        NOT NULL DEFAULT 'drop',
  time_zone         text        NOT NULL DEFAULT 'UTC',
  created_at        timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT partition_config_pkey PRIMARY KEY (parent),
  CONSTRAINT partition_config_premake CHECK (premake BETWEEN 0 AND 120),
  CONSTRAINT partition_config_retention CHECK (retention IS NULL OR retention BETWEEN interval '1 month' AND interval '1000 years'),
  CONSTRAINT partition_config_action CHECK (retention_action IN ('drop', 'detach')),
  CONSTRAINT partition_config_type CHECK (control_type IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype))
);
COMMENT ON TABLE @extschema@.partition_config IS
  'Parents whose monthly partitions saas.run_maintenance() keeps: premake, retention, time zone.';
ALTER TABLE @extschema@.partition_config ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.partition_config', '');

-- A dropped parent leaves the configuration (registry.sql's sql_drop trigger;
-- otherwise run_maintenance would report an error for it on every run).
INSERT INTO @extschema@.table_registries (registry, relid_column, module)
VALUES ('partition_config', 'parent', 'partitions');

-- ---------------------------------------------------------------------------
-- Internals
-- ---------------------------------------------------------------------------

-- Runs one DDL statement under the function's short lock_timeout, retrying
-- when a lock is busy, so maintenance waits briefly instead of queueing
-- traffic behind an ACCESS EXCLUSIVE request.
CREATE FUNCTION @extschema@._partition_ddl(stmt text, attempts int DEFAULT 5)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  FOR attempt IN 1..attempts LOOP
    BEGIN
      EXECUTE stmt;
      RETURN;
    EXCEPTION WHEN lock_not_available THEN
      IF attempt = attempts THEN
        RAISE EXCEPTION 'could not get a lock in % attempts for: %', attempts, stmt
          USING ERRCODE = 'lock_not_available',
                HINT = 'Traffic held the lock longer than lock_timeout each time; the next run_maintenance retries.';
      END IF;
      PERFORM pg_sleep(0.05 * attempt);
    END;
  END LOOP;
END
$$;

-- The local month start (timestamp without time zone) of a moment, in tz.
CREATE FUNCTION @extschema@._month_of(ts timestamptz, tz text)
RETURNS timestamp
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$ SELECT pg_catalog.date_trunc('month', ts AT TIME ZONE tz) $$;

-- The bound literal of a local month start for a column type.
CREATE FUNCTION @extschema@._month_bound(month_start timestamp, control_type regtype, tz text)
RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET datestyle = 'ISO, YMD'
SET timezone = 'UTC'
AS $$
  SELECT CASE control_type
    WHEN 'timestamptz'::pg_catalog.regtype THEN (month_start AT TIME ZONE tz)::text
    WHEN 'timestamp'::pg_catalog.regtype THEN month_start::text
    ELSE month_start::date::text
  END
$$;

-- The parent's default partition, if it has one (the catalog keeps it).
CREATE FUNCTION @extschema@._partition_default(parent regclass)
RETURNS regclass
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT nullif(pt.partdefid, 0::oid)::regclass FROM pg_partitioned_table pt WHERE pt.partrelid = parent
$$;

-- Monthly and default partitions of a parent, with their bounds.
CREATE FUNCTION @extschema@._partitions_of(parent regclass)
RETURNS TABLE (part regclass, is_default boolean, range_from text, range_to text)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
SET datestyle = 'ISO, YMD'
SET timezone = 'UTC'
AS $$
  SELECT c.oid::regclass,
         b.bound = 'DEFAULT',
         (regexp_match(b.bound, '^FOR VALUES FROM \(''(.*)''\) TO \(''(.*)''\)$'))[1],
         (regexp_match(b.bound, '^FOR VALUES FROM \(''(.*)''\) TO \(''(.*)''\)$'))[2]
  FROM pg_inherits i
  JOIN pg_class c ON c.oid = i.inhrelid
  CROSS JOIN LATERAL (SELECT pg_get_expr(c.relpartbound, c.oid) AS bound) b
  WHERE i.inhparent = parent
$$;

-- The partition of cfg's parent that overlaps [lo, hi) (covering: that
-- contains it whole), if any; bounds compared as the control column's type.
CREATE FUNCTION @extschema@._partition_find(cfg @extschema@.partition_config, lo text, hi text, covering boolean)
RETURNS regclass
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  found regclass;
BEGIN
  -- One query per call: the bounds are cast to the column's type in SQL.
  EXECUTE format(
    'SELECT p.part FROM @extschema@._partitions_of($1) p
     WHERE NOT p.is_default AND p.range_from IS NOT NULL AND %s LIMIT 1',
    CASE WHEN covering
         THEN format('p.range_from::%1$s <= $2::%1$s AND p.range_to::%1$s >= $3::%1$s', cfg.control_type)
         ELSE format('p.range_from::%1$s < $3::%1$s AND p.range_to::%1$s > $2::%1$s', cfg.control_type) END)
    INTO found USING cfg.parent, lo, hi;
  RETURN found;
END
$$;

-- Validates a parent for monthly partitioning; returns the control column's type.
CREATE FUNCTION @extschema@._partition_check_parent(parent regclass, control_column name)
RETURNS regtype
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  cls pg_class%ROWTYPE;
  strat "char";
  keycols int2vector;
  col record;
BEGIN
  IF parent IS NULL OR control_column IS NULL THEN
    RAISE EXCEPTION 'the table and its control column may not be NULL'
      USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass the partitioned table and its timestamp column, e.g. saas.create_monthly_partitions(''app.events'', ''created_at'').';
  END IF;
  PERFORM @extschema@._require_registrable(parent, 'saas.create_monthly_partitions');
  SELECT * INTO STRICT cls FROM pg_class WHERE oid = parent;
  IF cls.relkind <> 'p' THEN
    RAISE EXCEPTION '"%" is not a partitioned table', parent
      USING ERRCODE = 'wrong_object_type',
            HINT = CASE WHEN cls.relkind = 'r'
                        THEN format('Convert it with saas.convert_to_monthly(%L, %L), which keeps its rows, indexes, grants and policies.', parent::text, control_column)
                        ELSE 'Create the table with PARTITION BY RANGE (control column) first.' END;
  END IF;
  SELECT p.partstrat, p.partattrs INTO strat, keycols FROM pg_partitioned_table p WHERE p.partrelid = parent;
  SELECT a.attnum, a.atttypid INTO col FROM pg_attribute a
  WHERE a.attrelid = parent AND a.attname = control_column AND a.attnum > 0 AND NOT a.attisdropped;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'column "%" of "%" does not exist', control_column, parent
      USING ERRCODE = 'undefined_column',
            HINT = 'Name the partition key column of the table.';
  END IF;
  IF strat <> 'r' OR array_length(keycols::int2[], 1) <> 1 OR keycols[0] <> col.attnum THEN
    RAISE EXCEPTION '"%" is not partitioned by RANGE (%)', parent, quote_ident(control_column)
      USING ERRCODE = 'wrong_object_type',
            DETAIL = format('Its partition key is %s.', pg_get_partkeydef(parent)),
            HINT = format('Monthly partitions need PARTITION BY RANGE (%I) on the table.', control_column);
  END IF;
  IF col.atttypid NOT IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype) THEN
    RAISE EXCEPTION 'column "%" of "%" is %, not a date or timestamp', control_column, parent, format_type(col.atttypid, NULL)
      USING ERRCODE = 'datatype_mismatch',
            HINT = 'Monthly partitions need a timestamptz, timestamp or date control column.';
  END IF;
  RETURN col.atttypid::regtype;
END
$$;

-- Runs every registered hook for a new partition (only the built-in ones
-- with builtin_only).
CREATE FUNCTION @extschema@._partition_run_hooks(parent regclass, part regclass, builtin_only boolean DEFAULT false)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  h record;
BEGIN
  FOR h IN SELECT hook_name, hook FROM @extschema@.partition_hooks WHERE builtin OR NOT builtin_only ORDER BY hook_name LOOP
    IF to_regprocedure(h.hook) IS NULL THEN
      RAISE EXCEPTION 'partition hook "%" names a function that does not exist: %', h.hook_name, h.hook
        USING ERRCODE = 'undefined_function',
              HINT = format('Create the function again, or DELETE FROM saas.partition_hooks WHERE hook_name = %L;', h.hook_name);
    END IF;
    EXECUTE format('SELECT %s($1, $2)', to_regprocedure(h.hook)::oid::regproc) USING parent, part;
  END LOOP;
END
$$;

-- A partition is never a way around its parent: every partition of a table
-- with row level security has it too (enabled, and forced when the parent's
-- is), however it was made: by pg_saas, by hand, by pg_partman (CREATE TABLE
-- ... (LIKE ...) then ATTACH PARTITION), by pg_restore. A partition without
-- policies of its own then shows nothing to a role that cannot bypass RLS;
-- queries through the parent use the parent's policies. Returns whether it
-- changed anything.
CREATE FUNCTION @extschema@._partition_protect(part regclass)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  need_enable boolean;
  need_force boolean;
  changed boolean := false;
BEGIN
  SELECT bool_or(a.relrowsecurity), bool_or(a.relforcerowsecurity) INTO need_enable, need_force
  FROM pg_partition_ancestors(part) x
  JOIN pg_class a ON a.oid = x.relid
  WHERE x.relid <> part;
  IF coalesce(need_enable, false) AND NOT (SELECT relrowsecurity FROM pg_class WHERE oid = part) THEN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', part);
    changed := true;
  END IF;
  IF coalesce(need_force, false) AND NOT (SELECT relforcerowsecurity FROM pg_class WHERE oid = part) THEN
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', part);
    changed := true;
  END IF;
  RETURN changed;
END
$$;

-- Partitions made by hand or by other tools with CREATE TABLE ... PARTITION
-- OF get what the built-in hooks give a partition that run_maintenance
-- makes (tenancy's isolation, audit's statement triggers); user hooks stay
-- with run_maintenance. Every CREATE TABLE and ALTER TABLE (ATTACH
-- PARTITION, DISABLE ROW LEVEL SECURITY on a partition, ...) leaves each
-- partition concerned with its parent's row level security flags
-- (_partition_protect). ALTER TABLE runs no hooks: pg_restore attaches a
-- partition before it replays the partition's own dumped policies and
-- triggers, which would then collide with ones made here; an attached
-- partition without policies stays closed to direct access until
-- enable_tenancy or audit_enable runs again (both idempotent), and
-- tenancy_report says so.
CREATE FUNCTION @extschema@._partition_on_ddl()
RETURNS event_trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  cmd record;
  part regclass;
BEGIN
  FOR cmd IN SELECT DISTINCT c.objid, c.command_tag FROM pg_event_trigger_ddl_commands() c
             JOIN pg_class r ON r.oid = c.objid AND r.relkind IN ('r', 'p')
             WHERE c.object_type IN ('table', 'table column') ORDER BY c.objid LOOP
    IF cmd.command_tag = 'CREATE TABLE'
       AND (SELECT relispartition FROM pg_class WHERE oid = cmd.objid) THEN
      PERFORM @extschema@._partition_run_hooks(pg_partition_root(cmd.objid), cmd.objid::regclass, builtin_only => true);
    END IF;
    -- The table itself when it is a partition, and every partition below it,
    -- read from the catalog without locking them (pg_partition_tree would:
    -- while this DDL holds the parent, a parallel pg_restore job holding a
    -- partition and waiting for the parent deadlocked); a partition is
    -- locked only when it must change.
    FOR part IN WITH RECURSIVE tree(relid, level) AS (
                  SELECT cmd.objid, 0
                  UNION ALL
                  SELECT i.inhrelid, t.level + 1 FROM tree t JOIN pg_inherits i ON i.inhparent = t.relid)
                SELECT t.relid FROM tree t
                JOIN pg_class c ON c.oid = t.relid
                WHERE c.relispartition ORDER BY t.level, t.relid LOOP
      PERFORM @extschema@._partition_protect(part);
    END LOOP;
  END LOOP;
END
$$;
CREATE EVENT TRIGGER saas_partition_hooks ON ddl_command_end
  WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
  EXECUTE FUNCTION @extschema@._partition_on_ddl();

-- Makes sure the month starting at month_start has a partition. When the
-- default partition holds rows of that month, they are moved: create the
-- partition standalone, move the rows, attach it; one subtransaction, so a
-- failure leaves the rows where they were. One row for the action taken;
-- none when the month is covered already.
CREATE FUNCTION @extschema@._partition_ensure_month(cfg @extschema@.partition_config, month_start timestamp)
RETURNS TABLE (action text, partition_name text, detail text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
SET datestyle = 'ISO, YMD'
SET timezone = 'UTC'
AS $$
DECLARE
  lo text := @extschema@._month_bound(month_start, cfg.control_type, cfg.time_zone);
  hi text := @extschema@._month_bound(month_start + interval '1 month', cfg.control_type, cfg.time_zone);
  nsp name;
  rel name;
  pname text;
  qualified text;
  dflt regclass;
  stranded boolean;
  moved bigint;
  replication_role text;
BEGIN
  -- Covered already (by our partition or one the user made)?
  IF @extschema@._partition_find(cfg, lo, hi, false) IS NOT NULL THEN
    RETURN;
  END IF;

  SELECT n.nspname, c.relname INTO nsp, rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = cfg.parent;
  pname := @extschema@.monthly_partition_name(rel, extract(year FROM month_start)::int, extract(month FROM month_start)::int);
  qualified := format('%I.%I', nsp, pname);
  dflt := @extschema@._partition_default(cfg.parent);

  IF dflt IS NOT NULL THEN
    EXECUTE format('SELECT EXISTS (SELECT FROM %s WHERE %I >= %L AND %I < %L)', dflt, cfg.control_column, lo, cfg.control_column, hi) INTO stranded;
  END IF;

  IF NOT coalesce(stranded, false) THEN
    PERFORM @extschema@._partition_ddl(format('CREATE TABLE %s PARTITION OF %s FOR VALUES FROM (%L) TO (%L)',
                                              qualified, cfg.parent, lo, hi));
    PERFORM @extschema@._partition_run_hooks(cfg.parent, qualified::regclass);
    RETURN QUERY SELECT 'create'::text, qualified, format('[%s, %s)', lo, hi);
    RETURN;
  END IF;

  -- Rescue: the default partition holds rows of this month. Writers wait
  -- until this transaction ends, then go to the new partition. The parent
  -- is locked first: an INSERT locks the parent, then routes its row; were
  -- only the default partition locked, the row would be routed to it while
  -- the month is not attached yet, wait, and then fail the default's new
  -- partition constraint (23514). Then the default partition, against
  -- writes made to it directly. SHARE ROW EXCLUSIVE lets readers through.
  -- Lock order (docs/partitions.md, "Locks"): parent, default partition,
  -- new partition.
  PERFORM @extschema@._partition_ddl(format('LOCK TABLE ONLY %s IN SHARE ROW EXCLUSIVE MODE', cfg.parent));
  PERFORM @extschema@._partition_ddl(format('LOCK TABLE %s IN SHARE ROW EXCLUSIVE MODE', dflt));
  PERFORM @extschema@._partition_ddl(format('CREATE TABLE %s (LIKE %s INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED INCLUDING STORAGE)',
                                            qualified, cfg.parent));
  -- Moving a row is not a change of it: no user trigger (audit, append-only
  -- guards) and no ON DELETE action may fire for the move. Superusers (and
  -- pg_cron as one) move in replica mode, undone with this subtransaction.
  -- For every role, the move is marked (a backend-local flag, Rust: for this
  -- subtransaction only) so that ltv's statement triggers, which a role
  -- without replica mode fires on the default partition, log nothing.
  IF (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user) THEN
    replication_role := current_setting('session_replication_role');
    PERFORM set_config('session_replication_role', 'replica', true);
  END IF;
  PERFORM @extschema@._partition_moving_rows(true);
  EXECUTE format('WITH moved AS (DELETE FROM %s WHERE %I >= %L AND %I < %L RETURNING *) INSERT INTO %s SELECT * FROM moved',
                 dflt, cfg.control_column, lo, cfg.control_column, hi, qualified);
  GET DIAGNOSTICS moved = ROW_COUNT;
  PERFORM @extschema@._partition_moving_rows(false);
  IF replication_role IS NOT NULL THEN
    PERFORM set_config('session_replication_role', replication_role, true);
  END IF;
  PERFORM @extschema@._partition_ddl(format('ALTER TABLE %s ATTACH PARTITION %s FOR VALUES FROM (%L) TO (%L)',
                                            cfg.parent, qualified, lo, hi));
  PERFORM @extschema@._partition_run_hooks(cfg.parent, qualified::regclass);
  RETURN QUERY SELECT 'rescue'::text, qualified, format('[%s, %s): moved %s rows from %s', lo, hi, moved, dflt);
END
$$;

-- The current month and cfg.premake months ahead, each ensured.
CREATE FUNCTION @extschema@._partition_premake(cfg @extschema@.partition_config, p_now timestamptz)
RETURNS TABLE (action text, partition_name text, detail text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  m timestamp := @extschema@._month_of(p_now, cfg.time_zone);
BEGIN
  FOR i IN 0..cfg.premake LOOP
    RETURN QUERY SELECT * FROM @extschema@._partition_ensure_month(cfg, m + make_interval(months => i));
  END LOOP;
END
$$;

-- Every month that has rows in source (the default partition, or a table
-- being converted), each ensured, so those rows have a partition to live in.
CREATE FUNCTION @extschema@._partition_cover_rows(cfg @extschema@.partition_config, source regclass)
RETURNS TABLE (action text, partition_name text, detail text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  m timestamp;
  stuck bigint;
BEGIN
  -- A NULL or infinite control value belongs to no month: such rows stay in
  -- the default partition, reported, and hold up nothing else.
  FOR m IN EXECUTE format('SELECT DISTINCT date_trunc(''month'', %s) FROM %s WHERE isfinite(%I) ORDER BY 1',
                          CASE cfg.control_type WHEN 'timestamptz'::regtype
                               THEN format('%I AT TIME ZONE %L', cfg.control_column, cfg.time_zone)
                               ELSE format('%I::timestamp', cfg.control_column) END, source, cfg.control_column) LOOP
    -- One month at a time: a month no partition can be made for (year
    -- 10000) is reported and the others are still rescued.
    BEGIN
      RETURN QUERY SELECT * FROM @extschema@._partition_ensure_month(cfg, m);
    EXCEPTION WHEN OTHERS THEN
      action := 'error'; partition_name := NULL;
      detail := format('rows of %s stay in %s: %s: %s', to_char(m, 'YYYY-MM'), source, SQLSTATE, SQLERRM);
      RETURN NEXT;
    END;
  END LOOP;
  EXECUTE format('SELECT count(*) FROM %s WHERE %I IS NULL OR NOT isfinite(%I)', source, cfg.control_column, cfg.control_column)
    INTO stuck;
  IF stuck > 0 THEN
    action := 'unroutable'; partition_name := NULL;
    detail := format('%s rows of %s have a NULL or infinite %I: no month holds them', stuck, source, cfg.control_column);
    RETURN NEXT;
  END IF;
END
$$;

-- ---------------------------------------------------------------------------
-- create_monthly_partitions
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.create_monthly_partitions(
  parent regclass,
  control_column name,
  premake int DEFAULT 3,
  retention interval DEFAULT NULL,
  retention_action text DEFAULT 'drop',
  time_zone text DEFAULT 'UTC',
  p_now timestamptz DEFAULT now())
RETURNS TABLE (parent_table regclass, action text, partition_name text, detail text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '1s'
AS $$
DECLARE
  ctype regtype;
  cfg @extschema@.partition_config%ROWTYPE;
  dflt text;
BEGIN
  ctype := @extschema@._partition_check_parent(parent, control_column);
  IF premake IS NULL OR retention_action IS NULL OR time_zone IS NULL OR p_now IS NULL THEN
    RAISE EXCEPTION 'create_monthly_partitions: premake, retention_action, time_zone and p_now may not be NULL'
      USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Leave an argument out to get its default: premake 3, retention_action ''drop'', time_zone ''UTC'', p_now now().';
  END IF;
  IF premake < 0 OR premake > 120 THEN
    RAISE EXCEPTION 'premake must be between 0 and 120 months, not %', premake
      USING ERRCODE = 'numeric_value_out_of_range',
            HINT = 'premake is how many months ahead of the current one stay ready; 3 is a good default.';
  END IF;
  IF retention IS NOT NULL AND (retention < interval '1 month' OR retention > interval '1000 years') THEN
    RAISE EXCEPTION 'retention % is outside 1 month .. 1000 years', retention
      USING ERRCODE = 'numeric_value_out_of_range',
            HINT = 'Partitions are whole months: give a retention of at least ''1 month'' and at most ''1000 years'', or NULL to keep everything.';
  END IF;
  IF retention_action NOT IN ('drop', 'detach') THEN
    RAISE EXCEPTION 'retention_action must be drop or detach, not %', retention_action
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'drop deletes expired partitions; detach keeps them as plain tables for archiving.';
  END IF;
  BEGIN
    PERFORM p_now AT TIME ZONE time_zone;
  EXCEPTION WHEN invalid_parameter_value THEN
    RAISE EXCEPTION 'time zone "%" is not recognized', time_zone
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use a name from pg_timezone_names, e.g. ''UTC'' or ''Europe/Berlin''.';
  END;

  INSERT INTO @extschema@.partition_config AS c
    (parent, control_column, control_type, premake, retention, retention_action, time_zone)
  VALUES (parent, control_column, ctype, premake, retention, retention_action, time_zone)
  ON CONFLICT ON CONSTRAINT partition_config_pkey DO UPDATE SET
    control_column = EXCLUDED.control_column, control_type = EXCLUDED.control_type,
    premake = EXCLUDED.premake, retention = EXCLUDED.retention,
    retention_action = EXCLUDED.retention_action, time_zone = EXCLUDED.time_zone
  RETURNING * INTO cfg;

  -- The default partition first, so no insert fails while months are made.
  IF @extschema@._partition_default(parent) IS NULL THEN
    SELECT format('%I.%I', n.nspname, @extschema@.default_partition_name(c.relname)) INTO dflt
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = parent;
    PERFORM @extschema@._partition_ddl(format('CREATE TABLE %s PARTITION OF %s DEFAULT', dflt, parent));
    PERFORM @extschema@._partition_run_hooks(parent, dflt::regclass);
    RETURN QUERY SELECT parent, 'create_default'::text, dflt, NULL::text;
  END IF;

  RETURN QUERY SELECT parent, r.* FROM @extschema@._partition_premake(cfg, p_now) r;
END
$$;
COMMENT ON FUNCTION @extschema@.create_monthly_partitions(regclass, name, int, interval, text, text, timestamptz) IS
  'Manages a RANGE-partitioned parent monthly: the current month, premake months ahead and a default partition; idempotent.';

-- ---------------------------------------------------------------------------
-- run_maintenance
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.run_maintenance(parent regclass DEFAULT NULL, p_now timestamptz DEFAULT now())
RETURNS TABLE (parent_table regclass, action text, partition_name text, detail text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '1s'
SET datestyle = 'ISO, YMD'
SET timezone = 'UTC'
AS $$
DECLARE
  cfg @extschema@.partition_config%ROWTYPE;
  p record;
  dflt regclass;
  cutoff text;
  newer boolean;
  hook name;
BEGIN
  IF parent IS NOT NULL AND NOT EXISTS (SELECT FROM @extschema@.partition_config c WHERE c.parent = run_maintenance.parent) THEN
    RAISE EXCEPTION '"%" is not managed by pg_saas', parent
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Call saas.create_monthly_partitions on it first.';
  END IF;
  -- Lock order (docs/partitions.md, "Locks"): user parents by name, then
  -- the extension's own (the audit log, which triggers on user tables write
  -- to, so writers lock a user table before it too), then the tasks.
  FOR cfg IN SELECT * FROM @extschema@.partition_config c
             WHERE run_maintenance.parent IS NULL OR c.parent = run_maintenance.parent
             ORDER BY EXISTS (SELECT FROM pg_depend d
                              WHERE d.classid = 'pg_class'::regclass AND d.objid = c.parent AND d.deptype = 'e'),
                      c.parent::text LOOP
    -- One subtransaction per parent: one failing parent does not stop the others.
    BEGIN
      -- 1. Months ahead.
      RETURN QUERY SELECT cfg.parent, r.* FROM @extschema@._partition_premake(cfg, p_now) r;
      -- 2. Rows stranded in the default partition go to their months.
      dflt := @extschema@._partition_default(cfg.parent);
      IF dflt IS NOT NULL THEN
        RETURN QUERY SELECT cfg.parent, r.* FROM @extschema@._partition_cover_rows(cfg, dflt) r;
      END IF;
      -- 3. Retention: partitions whose whole range is older than the cutoff,
      -- and that hold no row newer than it.
      IF cfg.retention IS NOT NULL THEN
        -- In the parent's time zone, like its month boundaries.
        cutoff := @extschema@._month_bound((p_now AT TIME ZONE cfg.time_zone) - cfg.retention,
                                           cfg.control_type, cfg.time_zone);
        FOR p IN EXECUTE format('SELECT * FROM @extschema@._partitions_of($1) q
                                 WHERE NOT q.is_default AND q.range_to IS NOT NULL AND q.range_to::%1$s <= $2::%1$s
                                 ORDER BY q.range_to::%1$s', cfg.control_type)
                 USING cfg.parent, cutoff LOOP
          EXECUTE format('SELECT EXISTS (SELECT FROM %s WHERE %I >= %L)', p.part, cfg.control_column, cutoff) INTO newer;
          IF newer THEN
            parent_table := cfg.parent; action := 'retention_skipped'; partition_name := p.part::text;
            detail := format('holds rows newer than the cutoff %s', cutoff);
            RETURN NEXT;
            CONTINUE;
          END IF;
          partition_name := p.part::text;  -- before DROP turns the regclass into a bare oid
          PERFORM @extschema@._partition_ddl(format('ALTER TABLE %s DETACH PARTITION %s', cfg.parent, p.part));
          IF cfg.retention_action = 'drop' THEN
            PERFORM @extschema@._partition_ddl(format('DROP TABLE %s', p.part));
          END IF;
          -- Modules that keep a record of retired months (audit_verify) hear of it.
          FOR hook IN SELECT h.function_name FROM @extschema@.retention_hooks h ORDER BY h.hook_name LOOP
            EXECUTE format('SELECT @extschema@.%I($1, $2, $3, $4, $5)', hook)
              USING cfg.parent, partition_name, p.range_from, p.range_to, cfg.retention_action;
          END LOOP;
          parent_table := cfg.parent; action := cfg.retention_action;
          detail := format('[%s, %s) is older than the cutoff %s', p.range_from, p.range_to, cutoff);
          RETURN NEXT;
        END LOOP;
      END IF;
    EXCEPTION WHEN OTHERS THEN
      parent_table := cfg.parent; action := 'error'; partition_name := NULL;
      detail := format('%s: %s', SQLSTATE, SQLERRM);
      RETURN NEXT;
    END;
  END LOOP;
  -- A full pass also runs every module's maintenance task (registry.sql).
  IF run_maintenance.parent IS NULL THEN
    RETURN QUERY SELECT * FROM @extschema@._run_maintenance_tasks(p_now);
  END IF;
END
$$;
COMMENT ON FUNCTION @extschema@.run_maintenance(regclass, timestamptz) IS
  'For each managed parent (each in its own subtransaction): premake months, move rows out of the default partition, apply retention; a full pass also runs every module''s maintenance task (saas.maintenance_tasks: audit seal, usage flush). One row per action.';

-- ---------------------------------------------------------------------------
-- convert_to_monthly
-- ---------------------------------------------------------------------------
-- Turns a plain table with data into a monthly partitioned table of the same
-- name, in one transaction: columns, defaults, identity and serial sequences,
-- CHECK constraints, keys, indexes, foreign keys, triggers, RLS and policies,
-- grants and comments carry over; every row is copied and counted before the
-- old table is dropped. A backend killed midway rolls everything back.
CREATE FUNCTION @extschema@.convert_to_monthly(
  tbl regclass,
  control_column name,
  premake int DEFAULT 3,
  retention interval DEFAULT NULL,
  retention_action text DEFAULT 'drop',
  time_zone text DEFAULT 'UTC',
  p_now timestamptz DEFAULT now())
RETURNS TABLE (parent_table regclass, action text, partition_name text, detail text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
SET datestyle = 'ISO, YMD'
SET timezone = 'UTC'
AS $$
DECLARE
  registry_row record;
  part regclass;
  cls pg_class%ROWTYPE;
  nsp name;
  rel name;
  old_name name;
  col record;
  con record;
  stmts text[] := '{}';
  stmt text;
  seq record;
  tenancy_col name;
  before_count bigint;
  after_count bigint;
  cfg @extschema@.partition_config%ROWTYPE;
  newrel regclass;
BEGIN
  IF tbl IS NULL OR control_column IS NULL THEN
    RAISE EXCEPTION 'convert_to_monthly: the table and its control column may not be NULL'
      USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass the table to convert and its timestamp column, e.g. saas.convert_to_monthly(''app.events'', ''created_at'').';
  END IF;
  PERFORM @extschema@._require_registrable(tbl, 'saas.convert_to_monthly');
  SELECT * INTO STRICT cls FROM pg_class WHERE oid = tbl;
  SELECT n.nspname INTO nsp FROM pg_namespace n WHERE n.oid = cls.relnamespace;
  rel := cls.relname;
  IF cls.relkind = 'p' THEN
    RAISE EXCEPTION '"%" is partitioned already', tbl
      USING ERRCODE = 'wrong_object_type',
            HINT = format('Manage it with saas.create_monthly_partitions(%L, %L).', tbl::text, control_column);
  END IF;
  IF cls.relkind <> 'r' OR cls.relispartition THEN
    RAISE EXCEPTION '"%" is not a plain table', tbl
      USING ERRCODE = 'wrong_object_type',
            HINT = 'convert_to_monthly converts ordinary tables.';
  END IF;
  -- PostgreSQL has no unlogged partitioned tables: converting would make
  -- the data logged behind the owner's back.
  IF cls.relpersistence = 'u' THEN
    RAISE EXCEPTION '"%" is UNLOGGED, and a partitioned table cannot be', tbl
      USING ERRCODE = 'feature_not_supported',
            HINT = format('Decide first: ALTER TABLE %s SET LOGGED, then convert it.', tbl);
  END IF;
  SELECT a.attnum, a.atttypid INTO col FROM pg_attribute a
  WHERE a.attrelid = tbl AND a.attname = control_column AND a.attnum > 0 AND NOT a.attisdropped;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'column "%" of "%" does not exist', control_column, tbl
      USING ERRCODE = 'undefined_column', HINT = 'Name the date or timestamp column to partition by.';
  END IF;
  IF col.atttypid NOT IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype) THEN
    RAISE EXCEPTION 'column "%" of "%" is %, not a date or timestamp', control_column, tbl, format_type(col.atttypid, NULL)
      USING ERRCODE = 'datatype_mismatch', HINT = 'Monthly partitions need a timestamptz, timestamp or date control column.';
  END IF;
  FOR con IN SELECT c.conname, c.contype FROM pg_constraint c
             WHERE c.conrelid = tbl AND c.contype IN ('p', 'u', 'x') AND NOT col.attnum = ANY (c.conkey) LOOP
    RAISE EXCEPTION 'key "%" of "%" does not include column "%"', con.conname, tbl, control_column
      USING ERRCODE = 'feature_not_supported',
            HINT = format('PostgreSQL requires the partition column in every unique key of a partitioned table: redefine %I to include %I first.', con.conname, control_column);
  END LOOP;
  FOR con IN SELECT c.conname, c.conrelid::regclass AS referencing FROM pg_constraint c
             WHERE c.confrelid = tbl AND c.contype = 'f' LOOP
    RAISE EXCEPTION 'foreign key "%" of "%" references "%"', con.conname, con.referencing, tbl
      USING ERRCODE = 'feature_not_supported',
            HINT = 'Drop the referencing foreign keys, convert, then recreate them against the partitioned table (whose keys include the partition column).';
  END LOOP;
  IF EXISTS (SELECT FROM pg_inherits WHERE inhparent = tbl OR inhrelid = tbl) THEN
    RAISE EXCEPTION '"%" takes part in table inheritance', tbl
      USING ERRCODE = 'feature_not_supported', HINT = 'Detach the inheritance children first.';
  END IF;

  EXECUTE format('LOCK TABLE %s IN ACCESS EXCLUSIVE MODE', tbl);

  -- Everything to re-create on the new table once the old name is free. The
  -- definitions name the table as schema.name, which the new table will have.
  SELECT coalesce(array_agg(format('ALTER TABLE %s ADD CONSTRAINT %I %s', tbl, c.conname, pg_get_constraintdef(c.oid)) ORDER BY c.contype, c.conname), '{}')
    INTO stmts FROM pg_constraint c WHERE c.conrelid = tbl AND c.contype IN ('p', 'u', 'x', 'f');
  stmts := stmts || coalesce((SELECT array_agg(pg_get_indexdef(i.indexrelid) ORDER BY i.indexrelid)
                              FROM pg_index i WHERE i.indrelid = tbl
                                AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = i.indexrelid)), '{}');
  stmts := stmts || coalesce((SELECT array_agg(pg_get_triggerdef(t.oid) ORDER BY t.tgname)
                              FROM pg_trigger t WHERE t.tgrelid = tbl AND NOT t.tgisinternal), '{}');
  IF cls.relrowsecurity THEN
    stmts := stmts || format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
  END IF;
  IF cls.relforcerowsecurity THEN
    stmts := stmts || format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', tbl);
  END IF;
  stmts := stmts || coalesce((
    SELECT array_agg(format('CREATE POLICY %I ON %s AS %s FOR %s TO %s%s%s', p.policyname, tbl,
                            p.permissive, p.cmd,
                            (SELECT string_agg(CASE WHEN u.role_name = 'public' THEN 'PUBLIC' ELSE quote_ident(u.role_name) END, ', ') FROM unnest(p.roles) u(role_name)),
                            CASE WHEN p.qual IS NOT NULL THEN format(' USING (%s)', p.qual) ELSE '' END,
                            CASE WHEN p.with_check IS NOT NULL THEN format(' WITH CHECK (%s)', p.with_check) ELSE '' END)
                     ORDER BY p.policyname)
    FROM pg_policies p WHERE p.schemaname = nsp AND p.tablename = rel), '{}');
  stmts := stmts || coalesce((
    SELECT array_agg(format('GRANT %s ON %s TO %s%s', a.privilege_type, tbl,
                            CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
                            CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END) ORDER BY a.grantee, a.privilege_type)
    FROM aclexplode(cls.relacl) a WHERE a.grantee <> cls.relowner), '{}');
  IF obj_description(tbl, 'pg_class') IS NOT NULL THEN
    stmts := stmts || format('COMMENT ON TABLE %s IS %L', tbl, obj_description(tbl, 'pg_class'));
  END IF;
  SELECT reg.tenant_column INTO tenancy_col FROM @extschema@.tenant_tables reg WHERE reg.relid = tbl;

  -- The old table steps aside; the new one takes its name.
  old_name := left(rel, 40) || '_saas_unpartitioned';
  EXECUTE format('ALTER TABLE %s RENAME TO %I', tbl, old_name);
  EXECUTE format('CREATE TABLE %I.%I (LIKE %I.%I INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED INCLUDING IDENTITY INCLUDING STORAGE INCLUDING COMMENTS INCLUDING STATISTICS) PARTITION BY RANGE (%I)',
                 nsp, rel, nsp, old_name, control_column);
  newrel := format('%I.%I', nsp, rel)::regclass;
  EXECUTE format('ALTER TABLE %s OWNER TO %s', newrel, cls.relowner::regrole);
  -- Serial sequences follow their column; identity sequences continue.
  FOR seq IN SELECT d.objid::regclass AS seqrel, a.attname, d.deptype FROM pg_depend d
             JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
             JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
             WHERE d.refobjid = tbl AND d.classid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LOOP
    IF seq.deptype = 'a' THEN
      EXECUTE format('ALTER SEQUENCE %s OWNED BY %s.%I', seq.seqrel, newrel, seq.attname);
    ELSE
      EXECUTE format('SELECT setval(pg_get_serial_sequence(%L, %L), last_value, is_called) FROM %s',
                     newrel::text, seq.attname, seq.seqrel);
    END IF;
  END LOOP;

  -- Partitions for every month that has rows, and the usual months ahead.
  RETURN QUERY SELECT * FROM @extschema@.create_monthly_partitions(newrel, control_column, premake, retention, retention_action, time_zone, p_now);
  SELECT * INTO cfg FROM @extschema@.partition_config c WHERE c.parent = newrel;
  RETURN QUERY SELECT newrel, r.* FROM @extschema@._partition_cover_rows(cfg, format('%I.%I', nsp, old_name)::regclass) r;

  EXECUTE format('SELECT count(*) FROM %I.%I', nsp, old_name) INTO before_count;
  -- The new table has no triggers or policies of its own yet (stmts add
  -- them below), so the INSERT's row count is what it holds.
  -- Every column but STORED generated ones, which the new table computes.
  EXECUTE format('INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM %I.%I', newrel,
                 (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a
                  WHERE a.attrelid = newrel AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''),
                 (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a
                  WHERE a.attrelid = newrel AND a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated = ''),
                 nsp, old_name);
  GET DIAGNOSTICS after_count = ROW_COUNT;
  IF before_count <> after_count THEN
    RAISE EXCEPTION 'row count mismatch converting "%": % before, % after', tbl, before_count, after_count
      USING ERRCODE = 'data_corrupted', HINT = 'Nothing was changed; report this with the table definition.';
  END IF;
  -- Every module's registration of the old table passes to the new one
  -- (the registries in table_registries: audit, tenancy, ...), before the
  -- drop would make the sql_drop trigger forget them.
  FOR registry_row IN SELECT r.registry, r.relid_column FROM @extschema@.table_registries r ORDER BY r.registry LOOP
    EXECUTE format('UPDATE @extschema@.%I SET %I = $1 WHERE %I = $2',
                   registry_row.registry, registry_row.relid_column, registry_row.relid_column)
      USING newrel, tbl;
  END LOOP;
  EXECUTE format('DROP TABLE %I.%I', nsp, old_name);

  FOREACH stmt IN ARRAY stmts LOOP
    EXECUTE stmt;
  END LOOP;
  -- ... and its partitions get what modules give a new partition (audit's
  -- statement triggers, tenancy's policies), as they were made before the
  -- registrations moved.
  FOR part IN SELECT t.relid FROM pg_partition_tree(newrel) t WHERE t.relid <> newrel ORDER BY t.relid LOOP
    PERFORM @extschema@._partition_run_hooks(newrel, part, builtin_only => true);
  END LOOP;
  IF tenancy_col IS NOT NULL THEN
    PERFORM @extschema@.enable_tenancy(newrel, tenancy_col);
  END IF;
  parent_table := newrel; action := 'convert'; partition_name := newrel::text;
  detail := format('%s rows moved', after_count);
  RETURN NEXT;
END
$$;
COMMENT ON FUNCTION @extschema@.convert_to_monthly(regclass, name, int, interval, text, text, timestamptz) IS
  'Converts a plain table with data into a monthly partitioned table of the same name, keeping its definition, privileges and policies; one transaction.';

-- ---------------------------------------------------------------------------
-- partition_runway
-- ---------------------------------------------------------------------------
-- months_ahead: whole months ready after the current one (0: only the
-- current month; -1: not even that, inserts are going to the default).
CREATE FUNCTION @extschema@.partition_runway(parent regclass DEFAULT NULL, p_now timestamptz DEFAULT now())
RETURNS TABLE (parent_table regclass, months_ahead int, covered_until text, default_rows bigint)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
SET datestyle = 'ISO, YMD'
SET timezone = 'UTC'
AS $$
DECLARE
  cfg @extschema@.partition_config%ROWTYPE;
  m timestamp;
  lo text;
  hi text;
  dflt regclass;
BEGIN
  FOR cfg IN SELECT * FROM @extschema@.partition_config c
             WHERE partition_runway.parent IS NULL OR c.parent = partition_runway.parent
             ORDER BY c.parent::text LOOP
    m := @extschema@._month_of(p_now, cfg.time_zone);
    parent_table := cfg.parent;
    months_ahead := -1;
    covered_until := NULL;
    -- Each month's upper bound is the next one's lower bound.
    lo := @extschema@._month_bound(m, cfg.control_type, cfg.time_zone);
    FOR i IN 0..1200 LOOP
      hi := @extschema@._month_bound(m + make_interval(months => i + 1), cfg.control_type, cfg.time_zone);
      EXIT WHEN @extschema@._partition_find(cfg, lo, hi, true) IS NULL;
      months_ahead := i;
      covered_until := hi;
      lo := hi;
    END LOOP;
    dflt := @extschema@._partition_default(cfg.parent);
    default_rows := 0;
    IF dflt IS NOT NULL THEN
      EXECUTE format('SELECT count(*) FROM %s', dflt) INTO default_rows;
    END IF;
    RETURN NEXT;
  END LOOP;
END
$$;
COMMENT ON FUNCTION @extschema@.partition_runway(regclass, timestamptz) IS
  'Months of partitions ready ahead of the current one per managed parent, and rows waiting in the default partition: alert on months_ahead < 1 or default_rows > 0.';

-- ---------------------------------------------------------------------------
-- pg_cron scheduling
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.schedule_maintenance(schedule text DEFAULT '7 * * * *')
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  job bigint;
BEGIN
  IF schedule IS NULL THEN
    RAISE EXCEPTION 'schedule_maintenance: the schedule may not be NULL'
      USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Leave it out for hourly (''7 * * * *''), or pass a cron schedule such as ''*/15 * * * *''.';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_cron') THEN
    RAISE EXCEPTION 'pg_cron is not installed in this database'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Add pg_cron to shared_preload_libraries, set cron.database_name to this database, restart, then CREATE EXTENSION pg_cron; or call saas.run_maintenance() from your own scheduler.';
  END IF;
  EXECUTE 'SELECT cron.schedule($1, $2, $3)' INTO job
    USING 'pg_saas maintenance', schedule, 'SELECT count(*) FROM saas.run_maintenance()';
  RETURN job;
END
$$;
COMMENT ON FUNCTION @extschema@.schedule_maintenance(text) IS
  'Schedules saas.run_maintenance() with pg_cron (job "pg_saas maintenance", hourly by default); returns the job id.';

CREATE FUNCTION @extschema@.unschedule_maintenance()
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  done boolean;
BEGIN
  IF NOT EXISTS (SELECT FROM pg_extension WHERE extname = 'pg_cron') THEN
    RAISE EXCEPTION 'pg_cron is not installed in this database'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Nothing is scheduled without pg_cron.';
  END IF;
  IF NOT EXISTS (SELECT FROM cron.job WHERE jobname = 'pg_saas maintenance') THEN
    RETURN false;
  END IF;
  EXECUTE 'SELECT cron.unschedule($1)' INTO done USING 'pg_saas maintenance';
  RETURN done;
END
$$;
