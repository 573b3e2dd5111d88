-- pg_saas 0.1.0 -> 0.2.0
--
-- The registry through which modules meet (registry.sql), the maintenance
-- and retention work that run_maintenance did by name moved into the modules
-- that own it, and deny-by-default privileges. Everything here equals what
-- a fresh 0.2.0 install creates (tests/upgrade.rs compares the two).

\echo Use "ALTER EXTENSION pg_saas UPDATE TO '0.2.0'" to load this file. \quit

-- ---------------------------------------------------------------------------
-- What API roles may use: grant_api() grants exactly these rows.
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.api_grants (
  module       text NOT NULL,
  object_kind  text NOT NULL,
  object_name  text NOT NULL,
  privilege    text NOT NULL,
  CONSTRAINT api_grants_pkey PRIMARY KEY (object_kind, object_name, privilege),
  CONSTRAINT api_grants_kind CHECK (object_kind IN ('function', 'table')),
  CONSTRAINT api_grants_privilege CHECK (
    (object_kind = 'function' AND privilege = 'EXECUTE')
    OR (object_kind = 'table' AND privilege IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE')))
);
COMMENT ON TABLE @extschema@.api_grants IS
  'What saas.grant_api() gives API roles: functions (name with argument types; of schema saas unless named saas_api.f(...)) and tables of schema saas, per module.';
ALTER TABLE @extschema@.api_grants ENABLE ROW LEVEL SECURITY;

-- Shared functions every deployment's API roles call.
INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege)
VALUES ('core', 'function', 'version()', 'EXECUTE');

-- ---------------------------------------------------------------------------
-- Registries that name user tables: a dropped table leaves every one of them.
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.table_registries (
  registry      text NOT NULL,
  relid_column  name NOT NULL,
  module        text NOT NULL,
  CONSTRAINT table_registries_pkey PRIMARY KEY (registry)
);
COMMENT ON TABLE @extschema@.table_registries IS
  'Tables of schema saas whose rows name a user table (a regclass column): the sql_drop trigger deletes a dropped table''s rows from each.';
ALTER TABLE @extschema@.table_registries ENABLE ROW LEVEL SECURITY;

-- The sql_drop trigger now reads the registry instead of naming three tables.
CREATE OR REPLACE FUNCTION @extschema@._forget_dropped_tables()
RETURNS event_trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  dropped oid[];
  reg record;
BEGIN
  SELECT array_agg(objid) INTO dropped
  FROM pg_event_trigger_dropped_objects() WHERE object_type = 'table';
  IF dropped IS NULL THEN
    RETURN;
  END IF;
  FOR reg IN SELECT r.registry, r.relid_column FROM @extschema@.table_registries r
             WHERE to_regclass(format('@extschema@.%I', r.registry)) IS NOT NULL
             ORDER BY r.registry LOOP
    EXECUTE format('DELETE FROM @extschema@.%I WHERE %I::oid = ANY ($1)', reg.registry, reg.relid_column)
      USING dropped;
  END LOOP;
END
$$;

-- ---------------------------------------------------------------------------
-- Maintenance tasks: run_maintenance() runs each on a full pass.
-- ---------------------------------------------------------------------------
-- A task is a function of schema saas taking (p_now timestamptz) and
-- returning run_maintenance's rows (parent_table regclass, action text,
-- partition_name text, detail text).
CREATE TABLE @extschema@.maintenance_tasks (
  task           text NOT NULL,
  module         text NOT NULL,
  function_name  name NOT NULL,
  run_order      int  NOT NULL,
  reports_as     text NOT NULL,
  CONSTRAINT maintenance_tasks_pkey PRIMARY KEY (task),
  CONSTRAINT maintenance_tasks_order_key UNIQUE (run_order)
);
COMMENT ON TABLE @extschema@.maintenance_tasks IS
  'Tasks saas.run_maintenance() runs on a full pass, in run_order, each in its own subtransaction; reports_as names the table an error row is reported under.';
ALTER TABLE @extschema@.maintenance_tasks ENABLE ROW LEVEL SECURITY;

-- Runs every task; one failing task is reported as an 'error' row and the
-- others still run.
CREATE FUNCTION @extschema@._run_maintenance_tasks(p_now timestamptz)
RETURNS TABLE (parent_table regclass, action text, partition_name text, detail text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t @extschema@.maintenance_tasks%ROWTYPE;
BEGIN
  FOR t IN SELECT * FROM @extschema@.maintenance_tasks ORDER BY run_order LOOP
    BEGIN
      RETURN QUERY EXECUTE format('SELECT * FROM @extschema@.%I($1)', t.function_name) USING p_now;
    EXCEPTION WHEN OTHERS THEN
      parent_table := to_regclass(format('@extschema@.%I', t.reports_as));
      action := 'error'; partition_name := NULL;
      detail := format('%s: %s: %s', t.task, SQLSTATE, SQLERRM);
      RETURN NEXT;
    END;
  END LOOP;
END
$$;

-- What modules do when maintenance retires a partition (detached or
-- dropped by retention). A hook is a function of schema saas taking
-- (parent regclass, partition_name text, range_from text, range_to text,
-- action text).
CREATE TABLE @extschema@.retention_hooks (
  hook_name      text NOT NULL,
  module         text NOT NULL,
  function_name  name NOT NULL,
  CONSTRAINT retention_hooks_pkey PRIMARY KEY (hook_name)
);
COMMENT ON TABLE @extschema@.retention_hooks IS
  'Functions of schema saas run after run_maintenance() retires a partition: (parent, partition_name, range_from, range_to, action).';
ALTER TABLE @extschema@.retention_hooks ENABLE ROW LEVEL SECURITY;

-- tenancy's rows
INSERT INTO @extschema@.table_registries (registry, relid_column, module)
VALUES ('tenant_tables', 'relid', 'tenancy');
INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege) VALUES
  ('tenancy', 'function', 'current_user_id()', 'EXECUTE'),
  ('tenancy', 'function', 'current_tenant()', 'EXECUTE'),
  ('tenancy', 'function', 'has_role(text)', 'EXECUTE'),
  ('tenancy', 'function', 'my_memberships()', 'EXECUTE'),
  ('tenancy', 'table', 'tenants', 'SELECT'),
  ('tenancy', 'table', 'memberships', 'SELECT');
-- partitions' rows
INSERT INTO @extschema@.table_registries (registry, relid_column, module)
VALUES ('partition_config', 'parent', 'partitions');
-- run_maintenance runs the registry's tasks and retention hooks.
CREATE OR REPLACE FUNCTION @extschema@.run_maintenance(parent regclass DEFAULT NULL, p_now timestamptz DEFAULT now())
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

-- audit's rows, retention hook and maintenance task
INSERT INTO @extschema@.table_registries (registry, relid_column, module)
VALUES ('audit_tables', 'relid', 'audit');
-- Retention retired a month of the log: audit_verify keeps a record of it, so
-- a missing month reads as retired, not as rows deleted.
CREATE FUNCTION @extschema@._audit_partition_retired(parent regclass, partition_name text,
                                                     range_from text, range_to text, action text)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF parent = '@extschema@.audit_log'::regclass THEN
    INSERT INTO @extschema@.audit_retired (range_from, range_to, partition_name, action)
    VALUES (range_from::timestamptz, range_to::timestamptz, partition_name, action);
  END IF;
END
$$;
INSERT INTO @extschema@.retention_hooks (hook_name, module, function_name)
VALUES ('audit', 'audit', '_audit_partition_retired');

-- run_maintenance's full pass seals the log (rows of finished transactions).
CREATE FUNCTION @extschema@._audit_maintenance(p_now timestamptz)
RETURNS TABLE (parent_table regclass, action text, partition_name text, detail text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  tenants uuid[];
  seal_nos bigint[];
  sealed_chains bigint;
  sealed_rows numeric;
  resealed bigint;
BEGIN
  SELECT array_agg(s.tenant_id), array_agg(s.seal_no) INTO tenants, seal_nos FROM @extschema@.audit_seal() s;
  -- A pass seals a chain once per month its rows were logged in; a re-seal
  -- seals again rows of a 0.1.0 seal. A statement of its own, whose
  -- snapshot sees the new seals.
  SELECT count(DISTINCT a.tenant_id) FILTER (WHERE a.reseals IS NULL),
         coalesce(sum(a.row_count) FILTER (WHERE a.reseals IS NULL), 0),
         count(*) FILTER (WHERE a.reseals IS NOT NULL)
  INTO sealed_chains, sealed_rows, resealed
  FROM unnest(tenants, seal_nos) AS n(tenant_id, seal_no)
  JOIN @extschema@.audit_seals a ON a.tenant_id = n.tenant_id AND a.seal_no = n.seal_no;
  IF sealed_chains > 0 OR resealed > 0 THEN
    parent_table := '@extschema@.audit_log'::regclass; action := 'seal'; partition_name := NULL;
    detail := format('%s rows sealed in %s tenant chains', sealed_rows, sealed_chains)
              || CASE WHEN resealed > 0 THEN format('; %s re-seals of 0.1.0 seals that span months', resealed) ELSE '' END;
    RETURN NEXT;
  END IF;
END
$$;
INSERT INTO @extschema@.maintenance_tasks (task, module, function_name, run_order, reports_as)
VALUES ('audit_seal', 'audit', '_audit_maintenance', 10, 'audit_log');

INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege) VALUES
  ('audit', 'function', 'audit_export(timestamptz, timestamptz, text)', 'EXECUTE'),
  ('audit', 'function', '_csv_field(text)', 'EXECUTE'),
  ('audit', 'table', 'audit_log', 'SELECT');

-- ratelimit's maintenance task and rows
-- run_maintenance's full pass writes usage counted in shared memory and
-- drops expired rate-limit keys.
CREATE FUNCTION @extschema@._ratelimit_maintenance(p_now timestamptz)
RETURNS TABLE (parent_table regclass, action text, partition_name text, detail text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  flushed bigint;
  expired bigint;
BEGIN
  flushed := @extschema@.usage_flush();
  expired := @extschema@.rate_limit_vacuum();
  IF flushed > 0 OR expired > 0 THEN
    parent_table := '@extschema@.usage_daily'::regclass; action := 'flush'; partition_name := NULL;
    detail := format('%s usage and refusal counters written, %s expired rate-limit keys deleted', flushed, expired);
    RETURN NEXT;
  END IF;
END
$$;
INSERT INTO @extschema@.maintenance_tasks (task, module, function_name, run_order, reports_as)
VALUES ('usage_flush', 'ratelimit', '_ratelimit_maintenance', 20, 'usage_daily');

-- What API roles get from saas.grant_api: the pre-request hook (and the Rust
-- core it calls as the caller) and the tenant's usage report.
INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege) VALUES
  ('ratelimit', 'function', 'pre_request()', 'EXECUTE'),
  ('ratelimit', 'function', '_rate_limit_request()', 'EXECUTE'),
  ('ratelimit', 'function', 'usage_report(date, date)', 'EXECUTE');


-- The column's documentation moved from the README to docs/audit.md.
COMMENT ON COLUMN @extschema@.audit_log.row_hash IS
  'SHA-256 of the row''s canonical JSON (docs/audit.md, "How the hashes are made").';

-- ---------------------------------------------------------------------------
-- Installations: one row per CREATE EXTENSION of this database's pg_saas,
-- dumped with the data, so a restored database lists where it came from. It
-- also guards restores: pg_restore (or psql with a plain dump) runs CREATE
-- EXTENSION IF NOT EXISTS, which silently keeps an extension created
-- earlier, and the dumped state then collides with what is already there in
-- a pile of errors. The rows a dump brings are accepted only when the
-- extension was created by the same restore: in the same session, or by
-- pg_restore (its parallel jobs use other sessions); otherwise the first
-- restored row fails with one clear error.
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.installations (
  installed_at      timestamptz NOT NULL DEFAULT now(),
  version           text        NOT NULL,
  backend_pid       int         NOT NULL DEFAULT pg_backend_pid(),
  application_name  text        NOT NULL DEFAULT current_setting('application_name')
);
COMMENT ON TABLE @extschema@.installations IS
  'Each CREATE EXTENSION pg_saas that this database''s data went through (restores add theirs); guards restores into a database that already had pg_saas.';
ALTER TABLE @extschema@.installations ENABLE ROW LEVEL SECURITY;
-- An upgraded database's row is its upgrade to 0.2.0.
INSERT INTO @extschema@.installations (version) VALUES ('0.2.0');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.installations', '');

CREATE FUNCTION @extschema@._installations_restore_guard()
RETURNS trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  own @extschema@.installations%ROWTYPE;
BEGIN
  -- This database's own installation: the newest row.
  SELECT * INTO own FROM @extschema@.installations i ORDER BY i.installed_at DESC LIMIT 1;
  IF NOT FOUND
     OR own.backend_pid = pg_backend_pid()
     OR (own.application_name = 'pg_restore' AND current_setting('application_name') = 'pg_restore') THEN
    RETURN NEW;
  END IF;
  RAISE EXCEPTION 'pg_saas was installed in this database before the restore began (on %)', own.installed_at
    USING ERRCODE = 'object_not_in_prerequisite_state',
          DETAIL = 'The dump carries pg_saas''s state; restoring it over an existing installation would mix or collide with the state already there.',
          HINT = 'Restore into an empty database: createdb, then pg_restore -d (or psql -f for a plain dump), without creating the extension first. To restore data only, first restore the schema from the same dump (pg_restore --schema-only), then pg_restore --data-only with session_replication_role = replica.';
END
$$;
CREATE TRIGGER installations_restore_guard BEFORE INSERT ON @extschema@.installations
  FOR EACH ROW EXECUTE FUNCTION @extschema@._installations_restore_guard();

-- The dump's CREATE SCHEMA saas, into a database that has pg_saas already:
-- refused before anything is written, with what to do instead. (PostgreSQL
-- would refuse it too, saying only that the schema exists.)
CREATE FUNCTION @extschema@._restore_guard_schema()
RETURNS event_trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF current_query() ~* '^\s*create\s+schema\s+"?@extschema@"?\s*;?\s*$' THEN
    RAISE EXCEPTION 'pg_saas was installed in this database before the restore began'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            DETAIL = 'The dump creates schema @extschema@ and pg_saas in it; this database has them already.',
            HINT = 'Restore into an empty database: createdb, then pg_restore -d (or psql -f for a plain dump), without creating the extension first. To restore data only, first restore the schema from the same dump (pg_restore --schema-only), then pg_restore --data-only with session_replication_role = replica.';
  END IF;
END
$$;
CREATE EVENT TRIGGER saas_restore_guard ON ddl_command_start
  WHEN TAG IN ('CREATE SCHEMA')
  EXECUTE FUNCTION @extschema@._restore_guard_schema();

-- ---------------------------------------------------------------------------
-- The log's keys move from the parent (an extension member) to each
-- partition (user data that pg_dump dumps with its keys), so that
-- pg_restore no longer makes them twice. Dropping the parent's keys drops
-- the partitions' copies; each partition then gets its own (one rebuild of
-- the log's indexes).
-- ---------------------------------------------------------------------------
-- A partition of the log gets the log's keys: the primary key, and a BRIN
-- index on txid (sealing and verification select by transaction id; rows
-- arrive roughly in txid order, so BRIN finds them at almost no cost to
-- writes). Named as PostgreSQL names them; skipped when there.
CREATE FUNCTION @extschema@._audit_log_keys(part regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = part AND contype = 'p') THEN
    EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (tenant_id, id, logged_at)', part);
  END IF;
  IF NOT EXISTS (SELECT FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                 JOIN pg_am a ON a.oid = c.relam
                 WHERE i.indrelid = part AND a.amname = 'brin') THEN
    EXECUTE format('CREATE INDEX ON %s USING brin (txid)', part);
  END IF;
END
$$;

CREATE OR REPLACE FUNCTION @extschema@._audit_partition_hook(parent regclass, part regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  root regclass := coalesce(pg_partition_root(part), parent);
  cfg @extschema@.audit_tables;
BEGIN
  IF root = '@extschema@.audit_log'::regclass THEN
    PERFORM @extschema@._audit_log_keys(part);
    PERFORM @extschema@._audit_secure(part);
    RETURN;
  END IF;
  SELECT * INTO cfg FROM @extschema@.audit_tables WHERE relid = root;
  IF FOUND THEN
    PERFORM @extschema@._audit_statement_triggers(part, cfg);
  END IF;
END
$$;

ALTER TABLE @extschema@.audit_log DROP CONSTRAINT audit_log_pkey;
DROP INDEX @extschema@.audit_log_txid_brin;
DO $keys$
DECLARE
  part regclass;
BEGIN
  FOR part IN SELECT t.relid FROM pg_catalog.pg_partition_tree('@extschema@.audit_log') t
              WHERE t.isleaf ORDER BY t.relid::text LOOP
    PERFORM @extschema@._audit_log_keys(part);
  END LOOP;
END
$keys$;

-- Transaction ids as the log stores them: the cluster's (xid8) plus a base.
-- Seals cut the log by transaction id, so ids must grow across the log's
-- whole life; a restore into another cluster (pg_dump / pg_restore) starts
-- again from that cluster's lower ids. The base is fixed by the first audit
-- write or seal after the extension is created (a restore creates it too),
-- so that new ids lie above every id the log and its seals hold. Not dumped:
-- each database fixes its own.
CREATE TABLE @extschema@.audit_xid_base (
  id        smallint NOT NULL DEFAULT 1,
  xid_base  bigint,
  fixed_at  timestamptz,
  CONSTRAINT audit_xid_base_pkey PRIMARY KEY (id),
  CONSTRAINT audit_xid_base_one_row CHECK (id = 1),
  CONSTRAINT audit_xid_base_nonnegative CHECK (xid_base >= 0)
);
COMMENT ON TABLE @extschema@.audit_xid_base IS
  'What the audit log adds to transaction ids so they keep growing after a restore into another cluster; fixed on first use.';
ALTER TABLE @extschema@.audit_xid_base ENABLE ROW LEVEL SECURITY;
INSERT INTO @extschema@.audit_xid_base (id) VALUES (1);

-- The base, fixed now when it is not yet: under the row's lock, so
-- concurrent first writers agree; the caller keeps it only once committed
-- (it reads it back in a later transaction).
CREATE FUNCTION @extschema@._audit_xid_base()
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  base bigint;
BEGIN
  UPDATE @extschema@.audit_xid_base b
  SET xid_base = greatest(0, coalesce(greatest(
                   (SELECT max(l.txid) + 1 FROM @extschema@.audit_log l),
                   (SELECT max(s.xid_to) FROM @extschema@.audit_seals s)), 0)
                 - pg_current_xact_id()::text::bigint),
      fixed_at = now()
  WHERE b.id = 1 AND b.xid_base IS NULL
  RETURNING b.xid_base INTO base;
  IF base IS NULL THEN
    SELECT b.xid_base INTO base FROM @extschema@.audit_xid_base b WHERE b.id = 1;
  END IF;
  RETURN base;
END
$$;


-- An upgraded log's ids all come from this cluster: its base is 0.
UPDATE @extschema@.audit_xid_base SET xid_base = 0, fixed_at = now() WHERE id = 1;

-- Seals never span a month of the log (issue 15, item 7): a seal of 0.1.0
-- taken across a month boundary lost the checks of its newer month's rows
-- when retention retired the older month. Seals now have a month, and a
-- 0.1.0 seal has none (it covers every month, its hash unchanged).
ALTER TABLE @extschema@.audit_seals
  ADD COLUMN month_from timestamptz,
  ADD COLUMN month_to timestamptz,
  ADD COLUMN reseals bigint,
  ADD CONSTRAINT audit_seals_month CHECK ((month_from IS NULL) = (month_to IS NULL) AND month_from < month_to),
  ADD CONSTRAINT audit_seals_reseals CHECK (reseals IS NULL OR (reseals < seal_no AND month_from IS NOT NULL));
COMMENT ON COLUMN @extschema@.audit_seals.month_from IS
  'Start of the month of the log the seal covers (its rows were logged in [month_from, month_to)); NULL for a seal made by 0.1.0, which covers every month.';
COMMENT ON COLUMN @extschema@.audit_seals.reseals IS
  'For a re-seal: the 0.1.0 seal (no month) whose rows of this month it seals again, so retiring another of its months leaves these checked.';
-- Each 0.1.0 seal across a month boundary whose rows are all still there is
-- sealed again now, month by month (audit_seal does it on every pass too),
-- before retention can retire one of its months.
SELECT count(*) AS sealed FROM @extschema@.audit_seal();

-- ---------------------------------------------------------------------------
-- Partition hooks are named by text, not regprocedure (pg_upgrade refuses
-- reg* types other than regclass, regtype and regrole in user tables).
-- ---------------------------------------------------------------------------
-- A function's name as the hooks keep it: schema-qualified whatever the
-- search_path, with its argument types.
CREATE FUNCTION @extschema@._function_name(fn oid)
RETURNS text
LANGUAGE sql STABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT format('%I.%I(%s)', n.nspname, p.proname, oidvectortypes(p.proargtypes))
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE p.oid = fn
$$;

ALTER TABLE @extschema@.partition_hooks ALTER COLUMN hook TYPE text USING @extschema@._function_name(hook::oid);

-- A hook names an existing function taking (regclass, regclass); it is kept
-- in the form _function_name gives.
CREATE FUNCTION @extschema@._partition_hooks_check()
RETURNS trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  fn regprocedure;
BEGIN
  fn := to_regprocedure(NEW.hook);
  IF fn IS NULL OR (SELECT oidvectortypes(p.proargtypes) FROM pg_proc p WHERE p.oid = fn)
                   IS DISTINCT FROM 'regclass, regclass' THEN
    RAISE EXCEPTION 'partition hook "%" is not a function (regclass, regclass)', NEW.hook
      USING ERRCODE = 'undefined_function',
            HINT = 'Name an existing function with its schema and argument types, e.g. ''app.on_new_partition(regclass, regclass)''.';
  END IF;
  NEW.hook := @extschema@._function_name(fn);
  RETURN NEW;
END
$$;
CREATE TRIGGER partition_hooks_check BEFORE INSERT OR UPDATE OF hook ON @extschema@.partition_hooks
  FOR EACH ROW EXECUTE FUNCTION @extschema@._partition_hooks_check();

-- Runs every registered hook for a new partition, by its name.
CREATE OR REPLACE FUNCTION @extschema@._partition_run_hooks(parent regclass, part regclass, builtin_only boolean DEFAULT false)
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

-- ---------------------------------------------------------------------------
-- A partition is never a way around its parent (however made or attached).
-- ---------------------------------------------------------------------------
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

CREATE OR REPLACE FUNCTION @extschema@._partition_on_ddl()
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
DROP EVENT TRIGGER saas_partition_hooks;
CREATE EVENT TRIGGER saas_partition_hooks ON ddl_command_end
  WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE')
  EXECUTE FUNCTION @extschema@._partition_on_ddl();
-- Partitions made before 0.2.0 by hand or by pg_partman may be open.
DO $protect$
DECLARE
  part regclass;
BEGIN
  FOR part IN SELECT c.oid::regclass FROM pg_catalog.pg_class c
              WHERE c.relispartition AND c.relkind IN ('r', 'p')
              ORDER BY c.oid LOOP
    PERFORM @extschema@._partition_protect(part);
  END LOOP;
END
$protect$;

-- ---------------------------------------------------------------------------
-- tenancy_report also reports views and materialized views over tables with
-- row level security.
-- ---------------------------------------------------------------------------
CREATE OR REPLACE FUNCTION @extschema@.tenancy_report(
  schemas text[] DEFAULT '{public}',
  default_column name DEFAULT 'tenant_id')
RETURNS TABLE (
  table_name        regclass,
  tenant_column     name,
  has_tenant_column boolean,
  rls_enabled       boolean,
  rls_forced        boolean,
  saas_policies     boolean,
  tenant_index      boolean,
  problems          text[])
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
  WITH tables AS (
    SELECT c.oid AS relid, c.relrowsecurity, c.relforcerowsecurity,
           coalesce(r.tenant_column, $2) AS col, r.relid IS NOT NULL AS registered
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN @extschema@.tenant_tables r ON r.relid = c.oid
    WHERE n.nspname = ANY ($1) AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  ),
  facts AS (
    SELECT t.*,
      a.attnum, a.atttypid, a.attnotnull,
      -- the isolation policy, unaltered (restrictive, for all commands and
      -- roles, on the tenant column) on the table and on every partition
      NOT EXISTS (
        SELECT FROM @extschema@._tenancy_tree(t.relid::regclass) p
        WHERE NOT EXISTS (
          SELECT FROM pg_policy pol
          WHERE pol.polrelid = p AND pol.polname = 'saas_tenant_isolation'
            AND NOT pol.polpermissive AND pol.polcmd = '*' AND pol.polroles = '{0}'
            AND pg_get_expr(pol.polqual, pol.polrelid) = format('(%I = ( SELECT @extschema@.current_tenant() AS current_tenant))', t.col)
            AND pg_get_expr(pol.polwithcheck, pol.polrelid) = format('(%I = ( SELECT @extschema@.current_tenant() AS current_tenant))', t.col))
      ) AS policies,
      EXISTS (SELECT FROM pg_policy pol WHERE pol.polrelid = t.relid AND pol.polpermissive) AS any_permissive,
      (SELECT array_agg(DISTINCT a.grantee::regrole::text ORDER BY a.grantee::regrole::text)
       FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
       WHERE c.oid = t.relid AND a.privilege_type = 'TRUNCATE' AND a.grantee <> c.relowner) AS truncaters,
      EXISTS (SELECT FROM pg_index i WHERE i.indrelid = t.relid AND i.indkey[0] = a.attnum) AS indexed,
      (SELECT array_agg(p::text ORDER BY p::text) FROM @extschema@._tenancy_tree(t.relid::regclass) p
       JOIN pg_class pc ON pc.oid = p
       WHERE p <> t.relid::regclass AND NOT (pc.relrowsecurity AND pc.relforcerowsecurity)) AS open_partitions,
      -- permissive policies OR together: two for one role and command widen access
      (SELECT array_agg(DISTINCT d.cmd ORDER BY d.cmd) FROM (
         -- a policy TO PUBLIC (role 0) overlaps one for any role
         SELECT CASE c.cmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' ELSE 'DELETE' END AS cmd
         FROM pg_policy pol
         CROSS JOIN LATERAL unnest(pol.polroles) r(role)
         CROSS JOIN LATERAL unnest(CASE pol.polcmd WHEN '*' THEN '{r,a,w,d}'::"char"[] ELSE ARRAY[pol.polcmd] END) c(cmd)
         JOIN pg_policy other ON other.polrelid = pol.polrelid AND other.polpermissive AND other.oid <> pol.oid
           AND (other.polcmd = '*' OR other.polcmd = c.cmd)
           AND (r.role = 0 OR other.polroles && ARRAY[0::oid, r.role])
         WHERE pol.polrelid = t.relid AND pol.polpermissive) d) AS multi_permissive,
      (SELECT array_agg(con.conname::text ORDER BY con.conname) FROM pg_constraint con
       WHERE con.conrelid = t.relid AND con.contype IN ('p', 'u', 'f') AND con.conkey[1] IS DISTINCT FROM a.attnum) AS keys_without_tenant
    FROM tables t
    LEFT JOIN pg_attribute a ON a.attrelid = t.relid AND a.attname = t.col AND a.attnum > 0 AND NOT a.attisdropped
  ),
  -- Views and materialized views of the given schemas, and the tables with
  -- row level security they read, directly or through other views.
  view_reads AS (
    WITH RECURSIVE reads(view_oid, read_oid) AS (
      SELECT rw.ev_class, d.refobjid
      FROM pg_rewrite rw
      JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid
        AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> rw.ev_class
      UNION
      SELECT r.view_oid, d.refobjid
      FROM reads r
      JOIN pg_rewrite rw ON rw.ev_class = r.read_oid
      JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid
        AND d.refclassid = 'pg_class'::regclass AND d.refobjid <> rw.ev_class
    )
    SELECT v.oid AS view_oid, v.relkind, v.relowner,
           coalesce((SELECT option_value::boolean FROM pg_options_to_table(v.reloptions)
                     WHERE option_name = 'security_invoker'), false) AS invoker,
           array_agg(DISTINCT b.oid::regclass::text ORDER BY b.oid::regclass::text) AS tables
    FROM pg_class v
    JOIN pg_namespace n ON n.oid = v.relnamespace
    JOIN reads r ON r.view_oid = v.oid
    JOIN pg_class b ON b.oid = r.read_oid AND b.relkind IN ('r', 'p')
      AND (b.relrowsecurity OR EXISTS (SELECT FROM @extschema@.tenant_tables tt WHERE tt.relid = b.oid))
    WHERE n.nspname = ANY ($1) AND v.relkind IN ('v', 'm')
    GROUP BY v.oid, v.relkind, v.relowner, v.reloptions
  ),
  view_facts AS (
    SELECT v.*, ro.rolname AS owner,
           (ro.rolsuper OR ro.rolbypassrls) AS owner_bypasses
    FROM view_reads v JOIN pg_roles ro ON ro.oid = v.relowner
  )
  SELECT * FROM (
  SELECT
    f.relid::regclass,
    CASE WHEN f.attnum IS NOT NULL THEN f.col END,
    f.attnum IS NOT NULL AND f.atttypid = 'uuid'::regtype,
    f.relrowsecurity,
    f.relforcerowsecurity,
    f.policies,
    coalesce(f.indexed, false),
    array_remove(ARRAY[
      CASE WHEN f.attnum IS NULL THEN format('no tenant column %I: if this table holds tenant data, add one and call saas.enable_tenancy', f.col) END,
      CASE WHEN f.attnum IS NOT NULL AND f.atttypid <> 'uuid'::regtype THEN format('tenant column %I is %s, not uuid', f.col, format_type(f.atttypid, NULL)) END,
      CASE WHEN NOT f.relrowsecurity THEN 'row level security is disabled' END,
      CASE WHEN f.relrowsecurity AND NOT f.relforcerowsecurity THEN 'row level security is not forced: the table owner bypasses it' END,
      CASE WHEN f.attnum IS NOT NULL AND NOT f.policies THEN 'pg_saas tenant policies missing: call saas.enable_tenancy' END,
      CASE WHEN f.attnum IS NOT NULL AND NOT coalesce(f.indexed, false) THEN format('no index leads with %I: tenant-scoped queries scan the table', f.col) END,
      CASE WHEN f.attnum IS NOT NULL AND NOT f.attnotnull THEN format('tenant column %I is nullable', f.col) END,
      CASE WHEN f.open_partitions IS NOT NULL THEN format('partitions without forced RLS: %s', array_to_string(f.open_partitions, ', ')) END,
      CASE WHEN f.multi_permissive IS NOT NULL THEN format('several permissive policies for the same role and command (%s): they OR together; make extra rules RESTRICTIVE', array_to_string(f.multi_permissive, ', ')) END,
      CASE WHEN f.relrowsecurity AND NOT f.any_permissive THEN 'no permissive policy: no role can see any row' END,
      CASE WHEN f.attnum IS NOT NULL AND f.keys_without_tenant IS NOT NULL THEN format('keys not led by %I: unique and foreign key checks ignore RLS, so one tenant can probe or reference another''s rows (and Citus needs the tenant column first): %s', f.col, array_to_string(f.keys_without_tenant, ', ')) END,
      CASE WHEN f.truncaters IS NOT NULL THEN format('TRUNCATE ignores RLS and is granted to: %s', array_to_string(f.truncaters, ', ')) END
    ], NULL)
  FROM facts f
  UNION ALL
  -- A view reads its tables with its owner's rights unless it is
  -- security_invoker: owned by a role that bypasses RLS (a superuser, as on
  -- Supabase's SQL editor), it shows every tenant's rows to whoever may read
  -- the view. A materialized view has no row level security at all.
  SELECT
    v.view_oid::regclass, NULL::name, false, false, false, false, false,
    array_remove(ARRAY[
      CASE WHEN v.relkind = 'm' THEN format('materialized view over tables with row level security (%s): it has no RLS of its own and holds every row its owner %I could read; do not grant it to API roles', array_to_string(v.tables, ', '), v.owner) END,
      CASE WHEN v.relkind = 'v' AND NOT v.invoker AND v.owner_bypasses THEN format('view over tables with row level security (%s) is owned by %I, which bypasses RLS, and is not security_invoker: it shows every tenant''s rows; ALTER VIEW ... SET (security_invoker = true)', array_to_string(v.tables, ', '), v.owner) END,
      CASE WHEN v.relkind = 'v' AND NOT v.invoker AND NOT v.owner_bypasses THEN format('view over tables with row level security (%s) is not security_invoker: their policies are checked as its owner %I, not as the caller; ALTER VIEW ... SET (security_invoker = true)', array_to_string(v.tables, ', '), v.owner) END
    ], NULL)
  FROM view_facts v
  ) report
  ORDER BY report.relid::text
$$;
COMMENT ON FUNCTION @extschema@.tenancy_report(text[], name) IS
  'One row per table of the given schemas (tenant column, RLS enabled/forced, pg_saas policies, tenant index, and the problems found), and one per view or materialized view over tables with RLS that can show rows the caller''s policies would hide.';

-- ---------------------------------------------------------------------------
-- CSV exports neutralise spreadsheet formulas.
-- ---------------------------------------------------------------------------
-- One CSV field. A field a spreadsheet would take for a formula (it starts
-- with =, +, -, @, a tab or a carriage return: =HYPERLINK(...) in a user
-- agent) gets a leading single quote, as OWASP advises; JSON, ids and
-- times never start so.
CREATE OR REPLACE FUNCTION @extschema@._csv_field(v text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN CASE
  WHEN v IS NULL THEN ''
  WHEN v ~ '^[=+@\t\r-]' THEN '"''' || replace(v, '"', '""') || '"'
  WHEN v ~ '[",\r\n]' OR v = '' THEN '"' || replace(v, '"', '""') || '"'
  ELSE v
END;

-- ---------------------------------------------------------------------------
-- Validation at the boundary: the CHECKs accept only what the code can run,
-- and one bad month or row in a default partition holds up nothing else.
-- ---------------------------------------------------------------------------
DO $check$
DECLARE
  bad text;
BEGIN
  SELECT string_agg(format('%s (%s)', parent, retention), ', ' ORDER BY parent::text) INTO bad
  FROM @extschema@.partition_config WHERE retention > interval '1000 years';
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION 'pg_saas 0.2.0 keeps retention within 1000 years; these parents have more: %', bad
      USING ERRCODE = 'numeric_value_out_of_range',
            HINT = 'Call saas.create_monthly_partitions again for them with a retention of at most ''1000 years'' (or NULL), then ALTER EXTENSION pg_saas UPDATE.';
  END IF;
  SELECT string_agg(format('rule %s (%s per %s)', id, count, period), ', ' ORDER BY id) INTO bad
  FROM @extschema@.rate_limit_rules
  WHERE NOT (period <= interval '100 years'
             AND extract(epoch FROM period) * 1000000 >= count
             AND extract(epoch FROM period) / count * coalesce(max_burst, count) <= 3155760000);
  IF bad IS NOT NULL THEN
    RAISE EXCEPTION 'pg_saas 0.2.0 refuses rate-limit rules its arithmetic cannot run: %', bad
      USING ERRCODE = 'numeric_value_out_of_range',
            HINT = 'Fix them with saas.rate_limit_rule_set (a period of at most 100 years, at least a microsecond per request) or drop them with saas.rate_limit_rule_drop, then ALTER EXTENSION pg_saas UPDATE.';
  END IF;
END
$check$;
ALTER TABLE @extschema@.partition_config DROP CONSTRAINT partition_config_retention;
ALTER TABLE @extschema@.partition_config ADD CONSTRAINT partition_config_retention
  CHECK (retention IS NULL OR retention BETWEEN interval '1 month' AND interval '1000 years');
ALTER TABLE @extschema@.rate_limit_rules ADD CONSTRAINT rate_limit_rules_range CHECK (
    period <= interval '100 years'
    AND extract(epoch FROM period) * 1000000 >= count
    AND extract(epoch FROM period) / count * coalesce(max_burst, count) <= 3155760000);
CREATE OR REPLACE FUNCTION @extschema@._partition_cover_rows(cfg @extschema@.partition_config, source regclass)
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

CREATE OR REPLACE FUNCTION @extschema@.create_monthly_partitions(
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

-- ---------------------------------------------------------------------------
-- A rescue locks the parent before the default partition, so inserts wait
-- and then go to the new month instead of failing with 23514; it marks its
-- move of rows (Rust, src/partitions/mod.rs), so ltv's triggers log nothing
-- for it.
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@."_partition_moving_rows"(
  "moving" bool
) RETURNS void
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_partition_moving_rows_wrapper';
-- Makes sure the month starting at month_start has a partition. When the
-- default partition holds rows of that month, they are moved: create the
-- partition standalone, move the rows, attach it; one subtransaction, so a
-- failure leaves the rows where they were. One row for the action taken;
-- none when the month is covered already.
CREATE OR REPLACE FUNCTION @extschema@._partition_ensure_month(cfg @extschema@.partition_config, month_start timestamp)
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

-- ---------------------------------------------------------------------------
-- saas_api: the schema API clients are served from, with each module's
-- wrappers, and the daily quota's exemptions.
-- ---------------------------------------------------------------------------
-- ---------------------------------------------------------------------------
-- The API schema: what PostgREST and Supabase may expose as it is
-- (db-schemas = "..., saas_api"; supabase-js: supabase.schema('saas_api')).
-- It holds only thin wrappers of the client-callable functions, each
-- module's from its own SQL file, the way graphql_public holds pg_graphql's:
-- exposing saas itself would serve internals, hooks and admin functions.
-- ---------------------------------------------------------------------------
CREATE SCHEMA saas_api;
COMMENT ON SCHEMA saas_api IS
  'pg_saas functions for API clients (PostgREST, supabase-js): thin wrappers, safe to expose.';
REVOKE ALL ON SCHEMA saas_api FROM PUBLIC;

-- GET /rpc/health with Accept-Profile: saas_api.
-- (PL/pgSQL: version() is Rust and made after this file.)
CREATE FUNCTION saas_api.health()
RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RETURN jsonb_build_object('status', 'ok', 'version', @extschema@.version());
END
$$;
COMMENT ON FUNCTION saas_api.health() IS
  'Whether the API answers, and the pg_saas version it runs: {"status": "ok", "version": "0.2.0"}.';
INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege)
VALUES ('core', 'function', 'saas_api.health()', 'EXECUTE');

-- The workspace list for API clients (saas_api, registry.sql).
CREATE FUNCTION saas_api.my_memberships()
RETURNS TABLE (tenant_id uuid, slug text, name text, role @extschema@.tenant_role, status text)
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.my_memberships() $$;
COMMENT ON FUNCTION saas_api.my_memberships() IS
  'The tenants (workspaces) of the signed-in user with their role, for a tenant switcher; send one as X-Tenant-Id.';
INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege)
VALUES ('tenancy', 'function', 'saas_api.my_memberships()', 'EXECUTE');

-- The usage report for API clients (saas_api, registry.sql); the last 30
-- UTC days unless asked otherwise.
CREATE FUNCTION saas_api.usage_report(
  from_day date DEFAULT (pg_catalog.now() AT TIME ZONE 'UTC')::date - 29,
  to_day date DEFAULT (pg_catalog.now() AT TIME ZONE 'UTC')::date)
RETURNS TABLE (day date, metric text, used bigint, daily_limit bigint)
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.usage_report(from_day, to_day) $$;
COMMENT ON FUNCTION saas_api.usage_report(date, date) IS
  'The current tenant''s usage per UTC day and metric with the plan''s daily limit (default: the last 30 days). Served even when the daily quota is used up.';
INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege)
VALUES ('ratelimit', 'function', 'saas_api.usage_report(date, date)', 'EXECUTE');

-- ---------------------------------------------------------------------------
-- Quota exemptions: paths a tenant over its daily API quota can still call
-- (its usage page, its workspace list); such calls are still counted.
-- Patterns as in rate_limit_rules; built-in rows come with the extension.
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.quota_exemptions (
  path_pattern  text    NOT NULL,
  builtin       boolean NOT NULL DEFAULT false,
  CONSTRAINT quota_exemptions_pkey PRIMARY KEY (path_pattern),
  CONSTRAINT quota_exemptions_pattern CHECK (path_pattern ~ '^/[A-Za-z0-9._~/*:@!$&''()+,;=%-]*$' AND char_length(path_pattern) <= 200)
);
COMMENT ON TABLE @extschema@.quota_exemptions IS
  'Paths pre_request() never refuses for the daily API quota (still counted), e.g. /rpc/usage_report.';
ALTER TABLE @extschema@.quota_exemptions ENABLE ROW LEVEL SECURITY;
INSERT INTO @extschema@.quota_exemptions (path_pattern, builtin) VALUES
  ('/rpc/usage_report', true), ('/rpc/my_memberships', true);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.quota_exemptions', 'WHERE NOT builtin');
-- pre_request keeps them with the rules: a change tells every backend.
CREATE TRIGGER quota_exemptions_changed
  AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.quota_exemptions
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._rate_limit_rules_changed();
ALTER TABLE @extschema@.quota_exemptions ENABLE ALWAYS TRIGGER quota_exemptions_changed;

-- ---------------------------------------------------------------------------
-- The export for API clients (saas_api, registry.sql), served as a file:
-- text/csv or application/x-ndjson by the Accept header (or format), the
-- Content-Type set to match. Its return type is PostgREST 12's "any"
-- media type handler: with Accept */* (curl's default) PostgREST would
-- otherwise send a JSON string (its issue #3391); here */* gets NDJSON.
-- ---------------------------------------------------------------------------
CREATE DOMAIN saas_api."*/*" AS bytea;
COMMENT ON DOMAIN saas_api."*/*" IS
  'PostgREST''s "any" media type handler: functions returning it set their own Content-Type.';
CREATE FUNCTION saas_api.audit_export(p_from timestamptz, p_to timestamptz, format text DEFAULT NULL)
RETURNS saas_api."*/*"
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  headers text := current_setting('request.headers', true);
  accept text;
  fmt text := lower(format);
  body text;
  response jsonb;
BEGIN
  IF fmt IS NULL THEN
    accept := lower(coalesce(CASE WHEN headers IS NULL OR headers = '' THEN NULL ELSE headers::jsonb ->> 'accept' END, ''));
    fmt := CASE WHEN accept LIKE '%text/csv%' THEN 'csv' ELSE 'jsonl' END;
  END IF;
  SELECT string_agg(l.line, E'\n' ORDER BY l.n) INTO body
  FROM @extschema@.audit_export(p_from, p_to, fmt) WITH ORDINALITY AS l(line, n);
  -- After what pre_request set (RateLimit-*), not instead of it.
  response := coalesce(nullif(current_setting('response.headers', true), '')::jsonb, '[]'::jsonb)
              || jsonb_build_array(jsonb_build_object('Content-Type',
                   CASE fmt WHEN 'csv' THEN 'text/csv; charset=utf-8' ELSE 'application/x-ndjson' END));
  PERFORM set_config('response.headers', response::text, true);
  RETURN convert_to(coalesce(body || E'\n', ''), 'UTF8');
END
$$;
COMMENT ON FUNCTION saas_api.audit_export(timestamptz, timestamptz, text) IS
  'The current tenant''s audit rows logged in [p_from, p_to), oldest first, for its admins and owners: CSV (Accept: text/csv or format => csv, header line first) or NDJSON (otherwise: one JSON object per line).';
INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege)
VALUES ('audit', 'function', 'saas_api.audit_export(timestamptz, timestamptz, text)', 'EXECUTE');


-- Roles that grant_api served before 0.2.0 (they can run current_tenant())
-- get the new API schema and its wrappers as grant_api now gives them.
DO $carry_api$
DECLARE
  grantee regrole;
  g record;
BEGIN
  FOR grantee IN
    SELECT DISTINCT a.grantee::regrole
    FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
    WHERE p.oid = '@extschema@.current_tenant()'::regprocedure
      AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner
    ORDER BY 1
  LOOP
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA saas_api TO %s', grantee);
    FOR g IN SELECT a.object_name FROM @extschema@.api_grants a
             WHERE a.object_kind = 'function' AND a.object_name LIKE 'saas\_api.%' ORDER BY 1 LOOP
      EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s', g.object_name, grantee);
    END LOOP;
  END LOOP;
END
$carry_api$;

-- ---------------------------------------------------------------------------
-- Bad input answers with a SQLSTATE and a HINT (tests/fuzz.rs).
-- ---------------------------------------------------------------------------
-- A table a module may register (enable_tenancy, create_monthly_partitions,
-- convert_to_monthly, audit_enable): one that exists, and not a temporary
-- one, whose end at session close no registry would hear of. `fn` names the
-- caller in the HINT.
CREATE FUNCTION @extschema@._require_registrable(rel regclass, fn text)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_class WHERE oid = rel) THEN
    RAISE EXCEPTION 'no relation has OID %', rel::oid
      USING ERRCODE = 'undefined_table',
            HINT = format('Pass the table by name, e.g. %s(''app.events''); an OID must name an existing table.', fn);
  END IF;
  IF (SELECT relpersistence FROM pg_class WHERE oid = rel) = 't' THEN
    RAISE EXCEPTION '"%" is a temporary table', rel
      USING ERRCODE = 'feature_not_supported',
            HINT = 'A temporary table ends with its session, and nothing tells pg_saas''s registries; use an ordinary or UNLOGGED table.';
  END IF;
END
$$;

-- At most 64 characters of a caller's input, for error messages (as
-- src/error.rs's echoed(): never a whole header or body sent back).
CREATE FUNCTION @extschema@._echo(v text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN CASE WHEN char_length(v) <= 64 THEN v
            ELSE left(v, 64) || format('... (%s more bytes)', octet_length(v) - octet_length(left(v, 64))) END;

CREATE OR REPLACE FUNCTION @extschema@.schedule_maintenance(schedule text DEFAULT '7 * * * *')
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

CREATE OR REPLACE FUNCTION @extschema@._tenancy_table(tbl text)
RETURNS regclass
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
DECLARE
  rel regclass;
BEGIN
  BEGIN
    rel := pg_catalog.to_regclass(tbl);
  EXCEPTION WHEN invalid_name OR syntax_error THEN
    RAISE EXCEPTION '"%" is not a table name', @extschema@._echo(tbl)
      USING ERRCODE = 'invalid_name',
            HINT = pg_catalog.format('Write it as SQL would, schema-qualified if needed; mixed-case or spaced names need double quotes inside the string: %L.', pg_catalog.quote_ident(tbl));
  END;
  IF rel IS NULL THEN
    RAISE EXCEPTION 'relation "%" does not exist', @extschema@._echo(tbl)
      USING ERRCODE = 'undefined_table',
            HINT = CASE WHEN pg_catalog.strpos(tbl, '"') OPERATOR(pg_catalog.=) 0
                             AND (tbl OPERATOR(pg_catalog.<>) pg_catalog.lower(tbl) OR tbl OPERATOR(pg_catalog.~) '\s')
                        THEN pg_catalog.format('Mixed-case or spaced names need double quotes inside the string: %L.', pg_catalog.quote_ident(tbl))
                        ELSE 'Check the name and the search_path, or schema-qualify it (''myschema.mytable'').' END;
  END IF;
  RETURN rel;
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.grant_api(roles name[])
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r name;
  g record;
BEGIN
  IF roles IS NULL OR cardinality(roles) = 0 THEN
    RAISE EXCEPTION 'grant_api needs at least one role'
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'For Supabase: SELECT saas.grant_api(''{anon,authenticated,service_role}'');';
  END IF;
  IF EXISTS (SELECT FROM unnest(roles) AS u(role_name) WHERE u.role_name IS NULL) THEN
    RAISE EXCEPTION 'grant_api: a role name may not be NULL'
      USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass role names only, e.g. saas.grant_api(''{anon,authenticated}'').';
  END IF;
  FOREACH r IN ARRAY roles LOOP
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
      RAISE EXCEPTION 'role "%" does not exist', r
        USING ERRCODE = 'undefined_object',
              HINT = format('Create it first (CREATE ROLE %I NOLOGIN;) or pass the roles PostgREST uses.', r);
    END IF;
  END LOOP;
  FOREACH r IN ARRAY roles LOOP
    EXECUTE format('GRANT USAGE ON SCHEMA @extschema@, saas_api TO %I', r);
    -- What policies and API clients call; nothing internal.
    FOR g IN SELECT a.object_kind, a.object_name, a.privilege FROM @extschema@.api_grants a
             ORDER BY a.object_kind, a.object_name, a.privilege LOOP
      -- Names are of schema saas unless they name saas_api.
      IF g.object_kind = 'function' AND g.object_name LIKE 'saas\_api.%' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', g.object_name, r);
      ELSIF g.object_kind = 'function' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION @extschema@.%s TO %I', g.object_name, r);
      ELSE
        EXECUTE format('GRANT %s ON @extschema@.%I TO %I', g.privilege, g.object_name, r);
      END IF;
    END LOOP;
  END LOOP;
END
$$;

-- Nonexistent OIDs and temporary tables are refused by name; audit_enable
-- takes a one-dimensional ignored_columns only.
CREATE OR REPLACE FUNCTION @extschema@._partition_check_parent(parent regclass, control_column name)
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

CREATE OR REPLACE FUNCTION @extschema@.enable_tenancy(
  tbl regclass,
  tenant_column name DEFAULT 'tenant_id',
  create_index boolean DEFAULT true)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  cls pg_class%ROWTYPE;
  col record;
  reg @extschema@.tenant_tables%ROWTYPE;
  part regclass;
  parts int := 0;
  idx regclass;
  idx_created boolean := false;
  uuid_columns text;
BEGIN
  IF tbl IS NULL THEN
    RAISE EXCEPTION 'enable_tenancy: the table may not be NULL'
      USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass the table to isolate, e.g. saas.enable_tenancy(''app.projects'').';
  END IF;
  PERFORM @extschema@._require_registrable(tbl, 'saas.enable_tenancy');
  SELECT * INTO STRICT cls FROM pg_class WHERE oid = tbl;
  IF cls.relkind NOT IN ('r', 'p') THEN
    RAISE EXCEPTION '"%" is not a table', tbl
      USING ERRCODE = 'wrong_object_type',
            DETAIL = format('Its relkind is %L.', cls.relkind),
            HINT = 'enable_tenancy isolates tables and partitioned tables. For a view, isolate its base tables and create the view WITH (security_invoker = true).';
  END IF;
  IF cls.relispartition THEN
    RAISE EXCEPTION '"%" is a partition of "%"', tbl, (SELECT inhparent::regclass FROM pg_inherits WHERE inhrelid = tbl)
      USING ERRCODE = 'wrong_object_type',
            HINT = 'Call enable_tenancy on the partitioned table; it covers every partition, present and future.';
  END IF;
  IF cls.relnamespace IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace, '@extschema@'::regnamespace) THEN
    RAISE EXCEPTION '"%" belongs to % and is not a user table', tbl, cls.relnamespace::regnamespace
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'pg_saas''s own tables are isolated already; enable tenancy on your application''s tables.';
  END IF;

  SELECT a.attnum, a.atttypid, a.attnotnull INTO col
  FROM pg_attribute a
  WHERE a.attrelid = tbl AND a.attname = tenant_column AND a.attnum > 0 AND NOT a.attisdropped;
  IF NOT FOUND THEN
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO uuid_columns
    FROM pg_attribute a
    WHERE a.attrelid = tbl AND a.atttypid = 'uuid'::regtype AND a.attnum > 0 AND NOT a.attisdropped;
    RAISE EXCEPTION 'column "%" of "%" does not exist', tenant_column, tbl
      USING ERRCODE = 'undefined_column',
            HINT = CASE WHEN uuid_columns IS NULL
                        THEN format('Add a tenant column: ALTER TABLE %s ADD COLUMN %I uuid NOT NULL;', tbl, tenant_column)
                        ELSE format('Name the tenant column, e.g. saas.enable_tenancy(%L, %L). uuid columns of this table: %s.',
                                    tbl::text, split_part(uuid_columns, ', ', 1), uuid_columns) END;
  END IF;
  IF col.atttypid <> 'uuid'::regtype THEN
    RAISE EXCEPTION 'column "%" of "%" is %, not uuid', tenant_column, tbl, format_type(col.atttypid, NULL)
      USING ERRCODE = 'datatype_mismatch',
            HINT = 'Tenants are identified by uuid (saas.tenants.id); convert the column with ALTER TABLE ... ALTER COLUMN ... TYPE uuid USING ... or add a uuid column.';
  END IF;

  SELECT * INTO reg FROM @extschema@.tenant_tables WHERE relid = tbl;
  IF FOUND AND reg.tenant_column <> tenant_column THEN
    RAISE EXCEPTION '"%" is already isolated by column "%"', tbl, reg.tenant_column
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = format('Run saas.disable_tenancy(%L) first to switch to column %I.', tbl::text, tenant_column);
  END IF;

  IF NOT FOUND THEN
    reg.relid := tbl;
    reg.tenant_column := tenant_column;
    reg.previous_default := (SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attrdef d
                             WHERE d.adrelid = tbl AND d.adnum = col.attnum);
    reg.rls_was_enabled := cls.relrowsecurity;
    reg.rls_was_forced := cls.relforcerowsecurity;
    reg.enabled_at := now();
  END IF;

  FOR part IN SELECT * FROM @extschema@._tenancy_tree(tbl) LOOP
    PERFORM @extschema@._tenancy_apply(part, tenant_column);
    parts := parts + 1;
  END LOOP;

  -- An index leading with the tenant column, unless one exists already.
  SELECT i.indexrelid::regclass INTO idx
  FROM pg_index i WHERE i.indrelid = tbl AND i.indkey[0] = col.attnum
  ORDER BY i.indisprimary DESC, i.indexrelid LIMIT 1;
  IF idx IS NULL AND create_index THEN
    EXECUTE format('CREATE INDEX ON %s (%I)', tbl, tenant_column);
    SELECT i.indexrelid::regclass INTO idx
    FROM pg_index i WHERE i.indrelid = tbl AND i.indkey[0] = col.attnum AND i.indnatts = 1
    ORDER BY i.indexrelid DESC LIMIT 1;
    idx_created := true;
    reg.created_index := (SELECT relname FROM pg_class WHERE oid = idx);
  END IF;

  INSERT INTO @extschema@.tenant_tables AS t
    (relid, tenant_column, previous_default, created_index, rls_was_enabled, rls_was_forced, enabled_at)
  VALUES (reg.relid, reg.tenant_column, reg.previous_default, reg.created_index,
          reg.rls_was_enabled, reg.rls_was_forced, reg.enabled_at)
  ON CONFLICT (relid) DO UPDATE SET created_index = coalesce(t.created_index, EXCLUDED.created_index);

  RETURN jsonb_build_object(
    'table', tbl::text,
    'tenant_column', tenant_column,
    'relations', parts,
    'tenant_index', idx::text,
    'index_created', idx_created);
END
$$;

CREATE OR REPLACE FUNCTION @extschema@.audit_enable(
  tbl regclass,
  ignored_columns text[] DEFAULT '{}',
  changed_only boolean DEFAULT true,
  mode text DEFAULT 'row'
)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  kind "char";
  is_partition boolean;
  missing text[];
  cols text;
  keys text[];
  tcol name;
  cfg @extschema@.audit_tables;
  args text;
  part regclass;
BEGIN
  IF tbl IS NULL OR ignored_columns IS NULL OR changed_only IS NULL OR mode IS NULL THEN
    RAISE EXCEPTION 'audit_enable: no argument may be NULL'
      USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Leave out an argument to get its default: ignored_columns ''{}'', changed_only true, mode ''row''.';
  END IF;
  PERFORM @extschema@._require_registrable(tbl, 'saas.audit_enable');
  IF array_ndims(ignored_columns) > 1 THEN
    RAISE EXCEPTION 'audit_enable: ignored_columns must be a list, not a % dimensional array', array_ndims(ignored_columns)
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass column names as a one-dimensional array, e.g. ''{updated_at,search_vector}''.';
  END IF;
  SELECT c.relkind, c.relispartition INTO kind, is_partition FROM pg_class c WHERE c.oid = tbl;
  IF kind IN ('v', 'm') THEN
    RAISE EXCEPTION '"%" is a %, not a table', tbl, CASE kind WHEN 'v' THEN 'view' ELSE 'materialized view' END
      USING ERRCODE = 'wrong_object_type',
            HINT = 'Audit the tables the view reads and writes: changes land there.';
  ELSIF kind NOT IN ('r', 'p') THEN
    RAISE EXCEPTION '"%" is not a table', tbl
      USING ERRCODE = 'wrong_object_type',
            HINT = 'audit_enable works on ordinary and partitioned tables.';
  END IF;
  IF is_partition THEN
    RAISE EXCEPTION '"%" is a partition of "%"', tbl, pg_partition_root(tbl)
      USING ERRCODE = 'wrong_object_type',
            HINT = format('Enable auditing on the partitioned table: SELECT saas.audit_enable(%L); it covers every partition, present and future.', pg_partition_root(tbl)::text);
  END IF;
  IF tbl IN ('@extschema@.audit_log'::regclass, '@extschema@.audit_seals'::regclass) THEN
    RAISE EXCEPTION 'the audit log cannot audit itself'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'It is append-only and hashed already; check it with saas.audit_verify().';
  END IF;
  IF mode NOT IN ('row', 'statement') THEN
    RAISE EXCEPTION 'unknown audit mode "%"', mode
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use ''row'' (one trigger call per row) or ''statement'' (transition tables, for bulk-heavy tables).';
  END IF;
  SELECT array_agg(c ORDER BY c) INTO missing FROM unnest(ignored_columns) c
  WHERE NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped);
  IF missing IS NOT NULL THEN
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
    FROM pg_attribute a WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped;
    RAISE EXCEPTION 'table "%" has no column %', tbl, array_to_string(missing, ', ')
      USING ERRCODE = 'undefined_column',
            HINT = format('ignored_columns names columns of the table: %s.', cols);
  END IF;

  SELECT array_agg(a.attname::text ORDER BY k.ord) INTO keys
  FROM pg_index i
  CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
  WHERE i.indrelid = tbl AND i.indisprimary;
  IF keys IS NULL THEN
    RAISE NOTICE 'table "%" has no primary key: audit rows will identify a record by all its column values', tbl
      USING HINT = 'Add a primary key and call audit_enable again for compact record keys.';
  END IF;

  -- The tenant of a row: tenancy's column for the table, else a uuid
  -- column named tenant_id, else (in the trigger) the request's tenant.
  SELECT r.tenant_column INTO tcol FROM @extschema@.tenant_tables r WHERE r.relid = tbl;
  IF tcol IS NULL THEN
    SELECT a.attname INTO tcol FROM pg_attribute a
    WHERE a.attrelid = tbl AND a.attname = 'tenant_id' AND a.atttypid = 'uuid'::regtype AND NOT a.attisdropped;
  END IF;

  PERFORM @extschema@._audit_ensure_log();

  INSERT INTO @extschema@.audit_tables AS t (relid, mode, changed_only, ignored_columns, key_columns, tenant_column)
  VALUES (tbl, mode, changed_only, ignored_columns, coalesce(keys, '{}'), tcol)
  ON CONFLICT (relid) DO UPDATE
    SET mode = excluded.mode, changed_only = excluded.changed_only, ignored_columns = excluded.ignored_columns,
        key_columns = excluded.key_columns, tenant_column = excluded.tenant_column, enabled_at = now()
  RETURNING * INTO cfg;

  -- Re-enabling replaces the old triggers with the new options.
  PERFORM @extschema@._audit_drop_triggers(tbl);
  args := @extschema@._audit_trigger_args(cfg);
  IF cfg.mode = 'row' THEN
    EXECUTE format('CREATE TRIGGER saas_audit_row AFTER INSERT OR UPDATE OR DELETE ON %s
                    FOR EACH ROW EXECUTE FUNCTION @extschema@.audit_row_trigger(%L)', tbl, args);
  END IF;
  -- Statement triggers are not inherited: put them on every partition too,
  -- so DML that targets a partition directly is audited as well.
  FOR part IN SELECT @extschema@._audit_tree(tbl) LOOP
    PERFORM @extschema@._audit_statement_triggers(part, cfg);
  END LOOP;
END
$$;

-- The storage quota's refusal carries JSON details too.
CREATE OR REPLACE FUNCTION @extschema@.storage_reserve(bytes bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._storage_tenant('storage_reserve', bytes);
  plan_name text;
  quota bigint;
  used bigint;
BEGIN
  SELECT tn.plan, p.storage_bytes INTO plan_name, quota
  FROM @extschema@.tenants tn LEFT JOIN @extschema@.plans p ON p.plan = tn.plan
  WHERE tn.id = t;
  INSERT INTO @extschema@.tenant_storage AS s (tenant_id, used_bytes)
  SELECT t, bytes WHERE quota IS NULL OR bytes <= quota
  ON CONFLICT (tenant_id) DO UPDATE SET used_bytes = s.used_bytes + EXCLUDED.used_bytes, updated_at = now()
    WHERE quota IS NULL OR s.used_bytes + EXCLUDED.used_bytes <= quota
  RETURNING s.used_bytes INTO used;
  IF used IS NULL THEN
    SELECT s.used_bytes INTO used FROM @extschema@.tenant_storage s WHERE s.tenant_id = t;
    RAISE SQLSTATE 'PT402'
      USING MESSAGE = format('storage quota exceeded: plan %L allows %s, %s in use, %s requested',
                             plan_name, pg_size_pretty(quota), pg_size_pretty(coalesce(used, 0)), pg_size_pretty(bytes)),
            -- Machine-readable, as every pg_saas refusal's details.
            DETAIL = jsonb_build_object('reason', 'storage_quota_exhausted', 'plan', plan_name, 'limit', quota,
                                        'used', coalesce(used, 0), 'requested', bytes,
                                        'remaining', greatest(quota - coalesce(used, 0), 0))::text,
            HINT = 'Delete files to free space or move the tenant to a plan with more storage.';
  END IF;
  RETURN used;
END
$$;

-- convert_to_monthly passes every registration of the old table to the new one.
CREATE OR REPLACE FUNCTION @extschema@.convert_to_monthly(
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

-- ratelimit: the day's API-call counts live in shared memory when pg_saas
-- is preloaded (read-only and read-write requests alike); a change to
-- usage_daily other than a flush drops them at commit.
CREATE FUNCTION @extschema@._usage_daily_changed()
  RETURNS trigger
  LANGUAGE c
  AS 'MODULE_PATHNAME', '_usage_daily_changed_wrapper';
-- When pg_saas is preloaded the day's counts live in shared memory, loaded
-- from this table once; a change other than a flush (an administrator's
-- correction or reset) drops them at commit, so they are loaded again.
CREATE TRIGGER usage_daily_changed
  AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.usage_daily
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._usage_daily_changed();
ALTER TABLE @extschema@.usage_daily ENABLE ALWAYS TRIGGER usage_daily_changed;

-- ratelimit: usage_report reads the table and shared memory as one, so a
-- flush committing between the two reads is not missed on both sides.
CREATE FUNCTION @extschema@."_usage_counts"(
  "tenant_id" uuid,
  "from_day" INT,
  "to_day" INT
) RETURNS TABLE (
  "day" INT,
  "metric" TEXT,
  "used" bigint
)
VOLATILE STRICT PARALLEL UNSAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_usage_counts_wrapper';
CREATE OR REPLACE FUNCTION @extschema@.usage_report(from_day date, to_day date)
RETURNS TABLE (day date, metric text, used bigint, daily_limit bigint)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid;
BEGIN
  IF from_day IS NULL OR to_day IS NULL THEN
    RAISE EXCEPTION 'usage_report: from_day and to_day must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass a range of UTC days, e.g. saas.usage_report(current_date - 30, current_date).';
  END IF;
  IF from_day > to_day THEN
    RAISE EXCEPTION 'usage_report: from_day % is after to_day %', from_day, to_day
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the earlier day first.';
  END IF;
  t := @extschema@.current_tenant();
  IF t IS NULL THEN
    RAISE EXCEPTION 'usage_report: there is no current tenant'
      USING ERRCODE = 'insufficient_privilege', HINT = 'Call it inside a request with a tenant (JWT claim or X-Tenant-Id).';
  END IF;
  -- The table and shared memory read as one (a flush moves counts from
  -- one to the other at its commit): _usage_counts (Rust).
  RETURN QUERY
  SELECT DATE '2000-01-01' + u.day, u.metric, u.used,
         CASE WHEN u.metric = 'api_calls' THEN p.api_calls_per_day
              ELSE (p.limits ->> (u.metric || '_per_day'))::bigint END
  FROM @extschema@._usage_counts(t, from_day - DATE '2000-01-01', to_day - DATE '2000-01-01') u
  LEFT JOIN @extschema@.tenants tn ON tn.id = t
  LEFT JOIN @extschema@.plans p ON p.plan = tn.plan
  ORDER BY u.day, u.metric;
END
$$;

-- tenancy: tenants and memberships kept per backend, forgotten on change.
CREATE FUNCTION @extschema@._tenant_directory_changed()
  RETURNS trigger
  LANGUAGE c
  AS 'MODULE_PATHNAME', '_tenant_directory_changed_wrapper';
-- Each backend keeps the tenants and memberships it resolved (pre_request
-- and the policies ask on every request); any change to either table tells
-- every backend to forget them. Also under session_replication_role =
-- replica (logical replication, pg_restore --disable-triggers).
CREATE TRIGGER tenants_changed
  AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.tenants
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._tenant_directory_changed();
ALTER TABLE @extschema@.tenants ENABLE ALWAYS TRIGGER tenants_changed;
CREATE TRIGGER memberships_changed
  AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.memberships
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._tenant_directory_changed();
ALTER TABLE @extschema@.memberships ENABLE ALWAYS TRIGGER memberships_changed;

-- pre_request keeps each tenant's plan and quota per backend; a change of
-- plans (or of a tenant's plan: tenants_changed) makes every backend read
-- them again.
CREATE TRIGGER plans_changed
  AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.plans
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._rate_limit_rules_changed();
ALTER TABLE @extschema@.plans ENABLE ALWAYS TRIGGER plans_changed;

-- memory (issue 19): the Rust functions of src/memory, then sql/memory.sql.
CREATE FUNCTION @extschema@._memory_half_life_elasticsearch("scale_seconds" double precision, "decay" double precision)
  RETURNS double precision
  IMMUTABLE STRICT PARALLEL SAFE
  LANGUAGE c
  AS 'MODULE_PATHNAME', '_memory_half_life_elasticsearch_wrapper';
CREATE FUNCTION @extschema@._memory_half_life_factor("factor" double precision, "unit_seconds" double precision)
  RETURNS double precision
  IMMUTABLE STRICT PARALLEL SAFE
  LANGUAGE c
  AS 'MODULE_PATHNAME', '_memory_half_life_factor_wrapper';
CREATE FUNCTION @extschema@._memory_half_life_langchain("decay_rate" double precision)
  RETURNS double precision
  IMMUTABLE STRICT PARALLEL SAFE
  LANGUAGE c
  AS 'MODULE_PATHNAME', '_memory_half_life_langchain_wrapper';
CREATE FUNCTION @extschema@._memory_recency("age_seconds" double precision, "half_life_seconds" double precision, "evergreen" bool, "floor" double precision)
  RETURNS double precision
  IMMUTABLE STRICT PARALLEL SAFE
  LANGUAGE c
  AS 'MODULE_PATHNAME', '_memory_recency_wrapper';
CREATE FUNCTION @extschema@._memory_row_score("w_similarity" double precision, "w_recency" double precision, "w_importance" double precision, "w_entity" double precision, "distance_kind" TEXT, "distance" double precision, "age_seconds" double precision, "half_life_seconds" double precision, "evergreen" bool, "recency_floor" double precision, "importance" double precision, "entity" double precision)
  RETURNS double precision
  IMMUTABLE STRICT PARALLEL SAFE
  LANGUAGE c
  AS 'MODULE_PATHNAME', '_memory_row_score_wrapper';
CREATE FUNCTION @extschema@._memory_similarity("distance_kind" TEXT, "distance" double precision)
  RETURNS double precision
  IMMUTABLE STRICT PARALLEL SAFE
  LANGUAGE c
  AS 'MODULE_PATHNAME', '_memory_similarity_wrapper';

CREATE FUNCTION @extschema@._memory_stream("stream_sql" TEXT, "query" anyelement, "tenant" uuid, "weights" double precision[], "half_life" double precision, "half_lives" jsonb, "evergreen_kinds" TEXT[], "recency_floor" double precision, "age_from" TEXT, "now" timestamp with time zone, "entities" TEXT[], "k" INT, "seed_top" double precision[], "skip" bigint[], "distance_kind" TEXT, "entity_bound" double precision)
  RETURNS TABLE ("stopped" bool, "streamed" bigint, "ids" bigint[], "scores" double precision[])
  STRICT VOLATILE PARALLEL UNSAFE
  LANGUAGE c
  AS 'MODULE_PATHNAME', '_memory_stream_wrapper';

-- Memory: memories with embeddings per model (pgvector), searched exactly by
-- a decayed, importance- and entity-boosted score with an explanation per
-- row; erasure by subject; a sampled query log. The score, its terms, the
-- stopping bound and the half-life converters are Rust (src/memory); the
-- tables and entry points are here. docs/memory.md is the reference.
--
-- pgvector may live in any schema (Supabase: extensions): the column and
-- parameter types resolve while this script runs (CREATE EXTENSION puts the
-- schemas of required extensions on its search_path); function bodies find
-- the schema at call time (_memory_vector_schema) and name it.

-- ---------------------------------------------------------------------------
-- Models: global (a Citus reference table). One row per embedding model,
-- with its dimension, distance and the HNSW index memory_index_model built.
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.memory_models (
  model       text        NOT NULL,
  dims        int         NOT NULL,
  distance    text        NOT NULL DEFAULT 'cosine',
  index_name  text,
  created_at  timestamptz NOT NULL DEFAULT now(),
  hnsw_m      int         NOT NULL DEFAULT 32,
  hnsw_ef_construction int NOT NULL DEFAULT 200,
  CONSTRAINT memory_models_pkey PRIMARY KEY (model),
  CONSTRAINT memory_models_dims CHECK (dims BETWEEN 1 AND 2000),
  CONSTRAINT memory_models_distance CHECK (distance IN ('cosine', 'l2', 'ip')),
  CONSTRAINT memory_models_name CHECK (model ~ '^[A-Za-z0-9._:/-]{1,100}$'),
  CONSTRAINT memory_models_hnsw CHECK (hnsw_m BETWEEN 2 AND 100 AND hnsw_ef_construction BETWEEN 4 AND 1000)
);
COMMENT ON TABLE @extschema@.memory_models IS
  'Embedding models of memory search: dimension, distance, HNSW index (saas.memory_index_model).';
ALTER TABLE @extschema@.memory_models ENABLE ROW LEVEL SECURITY;
CREATE POLICY saas_memory_models_read ON @extschema@.memory_models FOR SELECT USING (true);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.memory_models', '');

-- ---------------------------------------------------------------------------
-- Memories, their entity links and their embeddings: tenant tables (forced
-- RLS, tenant_id leading every key), Citus-ready.
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.memories (
  tenant_id         uuid        NOT NULL,
  id                bigint      GENERATED ALWAYS AS IDENTITY,
  subject           text,
  kind              text        NOT NULL DEFAULT 'note',
  content           text        NOT NULL,
  metadata          jsonb       NOT NULL DEFAULT '{}',
  importance        float8      NOT NULL DEFAULT 0.5,
  evergreen         boolean     NOT NULL DEFAULT false,
  event_at          timestamptz NOT NULL DEFAULT now(),
  created_at        timestamptz NOT NULL DEFAULT now(),
  last_accessed_at  timestamptz,
  access_count      bigint      NOT NULL DEFAULT 0,
  entities          text[]      NOT NULL DEFAULT '{}',
  CONSTRAINT memories_pkey PRIMARY KEY (tenant_id, id),
  CONSTRAINT memories_importance CHECK (importance >= 0 AND importance <= 1),
  CONSTRAINT memories_kind CHECK (kind <> '' AND length(kind) <= 100),
  CONSTRAINT memories_access_count CHECK (access_count >= 0)
);
COMMENT ON TABLE @extschema@.memories IS
  'AI memories per tenant: what, about whom (subject), kind, importance, when; searched by saas.memory_search.';
CREATE INDEX memories_subject ON @extschema@.memories (tenant_id, subject);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.memories', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.memories', 'id'), '');

CREATE TABLE @extschema@.memory_entities (
  tenant_id  uuid   NOT NULL,
  entity     text   NOT NULL,
  memory_id  bigint NOT NULL,
  CONSTRAINT memory_entities_pkey PRIMARY KEY (tenant_id, entity, memory_id)
);
COMMENT ON TABLE @extschema@.memory_entities IS
  'Entity links: which memories mention which entity (their subject included); the entity stage of memory_search reads them.';
CREATE INDEX memory_entities_memory ON @extschema@.memory_entities (tenant_id, memory_id);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.memory_entities', '');

CREATE TABLE @extschema@.memory_embeddings (
  tenant_id    uuid        NOT NULL,
  memory_id    bigint      NOT NULL,
  model        text        NOT NULL,
  embedding    vector      NOT NULL,
  embedded_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT memory_embeddings_pkey PRIMARY KEY (tenant_id, memory_id, model)
);
COMMENT ON TABLE @extschema@.memory_embeddings IS
  'One embedding per memory per model, stored as given (never truncated or padded); each model has its own HNSW expression index.';
CREATE INDEX memory_embeddings_model ON @extschema@.memory_embeddings (tenant_id, model, memory_id);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.memory_embeddings', '');

-- No foreign keys between these dumped tables: a parallel pg_restore
-- (--jobs) loads their data concurrently, largest first, and the keys of an
-- extension's tables exist before the data, so a key would refuse the
-- embeddings before their memories or model arrived. memory_add and
-- memory_embed check what a key would; deleting memories deletes their
-- embeddings and entity links (below).
CREATE FUNCTION @extschema@._memory_deleted()
RETURNS trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  DELETE FROM @extschema@.memory_embeddings e USING memory_gone g WHERE e.tenant_id = g.tenant_id AND e.memory_id = g.id;
  DELETE FROM @extschema@.memory_entities l USING memory_gone g WHERE l.tenant_id = g.tenant_id AND l.memory_id = g.id;
  RETURN NULL;
END
$$;
CREATE TRIGGER memories_deleted AFTER DELETE ON @extschema@.memories
  REFERENCING OLD TABLE AS memory_gone FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._memory_deleted();

-- ---------------------------------------------------------------------------
-- The query log: sampled (saas.memory_log_sample_rate), monthly partitions
-- made by memory_index_model and kept by run_maintenance (retention 6 months).
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.memory_query_log (
  tenant_id    uuid        NOT NULL,
  id           bigint      GENERATED ALWAYS AS IDENTITY,
  logged_at    timestamptz NOT NULL,
  model        text        NOT NULL,
  k            int         NOT NULL,
  stage        text        NOT NULL,
  exact        boolean     NOT NULL,
  candidates   int         NOT NULL,
  returned     int         NOT NULL,
  top_score    float8,
  latency_ms   float8      NOT NULL,
  subjects     text[]      NOT NULL DEFAULT '{}',
  entities     text[]      NOT NULL DEFAULT '{}',
  result_ids   bigint[]    NOT NULL DEFAULT '{}'
) PARTITION BY RANGE (logged_at);
COMMENT ON TABLE @extschema@.memory_query_log IS
  'Sampled memory_search calls: model, k, stage, exact, candidates examined, rows, top score, latency. Readable per tenant.';
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.memory_query_log', 'id'), '');

SELECT @extschema@._tenancy_apply('@extschema@.memories', 'tenant_id');
SELECT @extschema@._tenancy_apply('@extschema@.memory_entities', 'tenant_id');
SELECT @extschema@._tenancy_apply('@extschema@.memory_embeddings', 'tenant_id');
SELECT @extschema@._tenancy_apply('@extschema@.memory_query_log', 'tenant_id');

-- ---------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------
-- pgvector's schema, quoted, at call time.
CREATE FUNCTION @extschema@._memory_vector_schema()
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  s text;
BEGIN
  SELECT pg_catalog.quote_ident(n.nspname) INTO s
  FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
  WHERE e.extname = 'vector';
  IF s IS NULL THEN
    RAISE EXCEPTION 'pgvector is not installed'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'CREATE EXTENSION vector (pg_saas requires it).';
  END IF;
  RETURN s;
END
$$;

CREATE FUNCTION @extschema@._memory_tenant()
RETURNS uuid
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@.current_tenant();
BEGIN
  IF t IS NULL THEN
    RAISE EXCEPTION 'memory functions need a tenant'
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'Call through the API with a tenant claim or X-Tenant-Id, or saas.set_tenant(...) first.';
  END IF;
  RETURN t;
END
$$;

-- The model row, or 22023 (unknown) / 55000 (no index yet).
CREATE FUNCTION @extschema@._memory_model(p_model text, need_index boolean)
RETURNS @extschema@.memory_models
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r @extschema@.memory_models%ROWTYPE;
BEGIN
  IF p_model IS NULL THEN
    RAISE EXCEPTION 'the model may not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Name the embedding model, e.g. ''text-embedding-3-small''.';
  END IF;
  SELECT * INTO r FROM @extschema@.memory_models m WHERE m.model = p_model;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'unknown embedding model "%"', @extschema@._echo(p_model)
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Register it first: saas.memory_index_model(model, dims). Registered: '
                   || coalesce((SELECT string_agg(m.model, ', ' ORDER BY m.model) FROM @extschema@.memory_models m), 'none') || '.';
  END IF;
  IF need_index AND (r.index_name IS NULL OR pg_catalog.to_regclass('@extschema@.' || pg_catalog.quote_ident(r.index_name)) IS NULL) THEN
    RAISE EXCEPTION 'model "%" has no HNSW index', @extschema@._echo(p_model)
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = format('Build it with saas.memory_index_model(%L, %s, %L) (as the owner).', r.model, r.dims, r.distance);
  END IF;
  RETURN r;
END
$$;

-- Checks a vector against the model: finite values, the model's dimension.
CREATE FUNCTION @extschema@._memory_check_vector(v text, p_model text, p_dims int, what text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  n int;
BEGIN
  IF v IS NULL THEN
    RAISE EXCEPTION '% may not be NULL', what
      USING ERRCODE = 'null_value_not_allowed', HINT = format('Pass a vector of %s dimensions.', p_dims);
  END IF;
  IF v ~* '(nan|inf)' THEN
    RAISE EXCEPTION '% holds NaN or infinity', what
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Every element of an embedding must be a finite number.';
  END IF;
  n := pg_catalog.array_length(pg_catalog.string_to_array(pg_catalog.btrim(v, '[]'), ','), 1);
  IF n IS DISTINCT FROM p_dims THEN
    RAISE EXCEPTION '% has % dimensions, model "%" has %', what, coalesce(n, 0), @extschema@._echo(p_model), p_dims
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Embed with the model the vector is searched or stored under; vectors are never truncated or padded.';
  END IF;
END
$$;

-- ---------------------------------------------------------------------------
-- memory_index_model: register a model and build its HNSW expression index.
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.memory_index_model(
  model text,
  dims int,
  distance text DEFAULT 'cosine',
  m int DEFAULT 32,
  ef_construction int DEFAULT 200)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  old @extschema@.memory_models%ROWTYPE;
  idx text;
  opclass text;
BEGIN
  PERFORM @extschema@._memory_vector_schema();
  IF model IS NULL OR dims IS NULL OR distance IS NULL OR m IS NULL OR ef_construction IS NULL THEN
    RAISE EXCEPTION 'memory_index_model: no argument may be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'e.g. saas.memory_index_model(''minilm-l6'', 384).';
  END IF;
  IF model !~ '^[A-Za-z0-9._:/-]{1,100}$' THEN
    RAISE EXCEPTION 'invalid model name "%"', @extschema@._echo(model)
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Model names are 1 to 100 letters, digits and . _ : / -.';
  END IF;
  IF dims < 1 OR dims > 2000 THEN
    RAISE EXCEPTION 'dims % is out of range', dims
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'pgvector''s HNSW indexes vectors of 1 to 2000 dimensions.';
  END IF;
  opclass := CASE distance WHEN 'cosine' THEN 'vector_cosine_ops' WHEN 'l2' THEN 'vector_l2_ops' WHEN 'ip' THEN 'vector_ip_ops' END;
  IF opclass IS NULL THEN
    RAISE EXCEPTION 'unknown distance "%"', @extschema@._echo(distance)
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''cosine'', ''l2'' or ''ip''.';
  END IF;
  IF m < 2 OR m > 100 OR ef_construction < 4 OR ef_construction > 1000 THEN
    RAISE EXCEPTION 'HNSW parameters m % / ef_construction % are out of range', m, ef_construction
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'pgvector takes m 2..100 and ef_construction 4..1000 (pgvector defaults to 16 and 64; memory search to 32 and 200).';
  END IF;
  SELECT * INTO old FROM @extschema@.memory_models r WHERE r.model = memory_index_model.model;
  IF FOUND AND (old.dims <> dims OR old.distance <> distance) THEN
    RAISE EXCEPTION 'model "%" is registered with % dimensions and distance %', model, old.dims, old.distance
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'A model''s dimension never changes: register the new one under a new name and re-embed (saas.memory_pending).';
  END IF;
  -- A new model's row builds its index (trigger memory_models_index); a
  -- known model's index is built again if it went missing, with the
  -- parameters it was registered with.
  INSERT INTO @extschema@.memory_models (model, dims, distance, index_name, hnsw_m, hnsw_ef_construction)
  VALUES (model, dims, distance, 'memory_hnsw_' || left(md5(model), 16), m, ef_construction)
  ON CONFLICT ON CONSTRAINT memory_models_pkey DO UPDATE SET index_name = EXCLUDED.index_name;
  idx := @extschema@._memory_build_index(model);
  PERFORM @extschema@._memory_ensure_log();
  RETURN jsonb_build_object('model', model, 'dims', dims, 'distance', distance, 'index', idx);
END
$$;
COMMENT ON FUNCTION @extschema@.memory_index_model(text, int, text, int, int) IS
  'Registers an embedding model and builds its HNSW expression index (embedding::vector(dims), partial on the model). Idempotent. For the owner.';

-- Builds a registered model's HNSW expression index unless it exists, with
-- the parameters stored in its row, or with p_tenant that tenant's own
-- index (partial on md5 of the tenant too, below); returns the index name. pg_dump does not
-- dump indexes on an extension's tables, so the restore of a memory_models
-- row builds it again (trigger memory_models_index, enabled ALWAYS so that a
-- data-only restore in replica mode builds it too).
CREATE FUNCTION @extschema@._memory_build_index(p_model text, p_tenant uuid DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  vs text := @extschema@._memory_vector_schema();
  r @extschema@.memory_models%ROWTYPE;
  idx text;
BEGIN
  SELECT * INTO STRICT r FROM @extschema@.memory_models mm WHERE mm.model = p_model;
  idx := CASE WHEN p_tenant IS NULL THEN r.index_name ELSE @extschema@._memory_tenant_index_name(p_model, p_tenant) END;
  IF pg_catalog.to_regclass('@extschema@.' || pg_catalog.quote_ident(idx)) IS NOT NULL THEN
    RETURN idx;
  END IF;
  EXECUTE format('CREATE INDEX %I ON @extschema@.memory_embeddings USING hnsw ((embedding::%s.vector(%s)) %s.%I) WITH (m = %s, ef_construction = %s) WHERE model = %L%s',
                 idx, vs, r.dims, vs,
                 CASE r.distance WHEN 'cosine' THEN 'vector_cosine_ops' WHEN 'l2' THEN 'vector_l2_ops' ELSE 'vector_ip_ops' END,
                 r.hnsw_m, r.hnsw_ef_construction, r.model,
                 CASE WHEN p_tenant IS NULL THEN ''
                      ELSE format(' AND pg_catalog.md5(tenant_id::text) = %L', pg_catalog.md5(p_tenant::text)) END);
  RETURN idx;
END
$$;

CREATE FUNCTION @extschema@._memory_models_index()
RETURNS trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM @extschema@._memory_build_index(NEW.model);
  RETURN NULL;
END
$$;
CREATE TRIGGER memory_models_index AFTER INSERT ON @extschema@.memory_models
  FOR EACH ROW EXECUTE FUNCTION @extschema@._memory_models_index();
ALTER TABLE @extschema@.memory_models ENABLE ALWAYS TRIGGER memory_models_index;

-- ---------------------------------------------------------------------------
-- Tenant indexes: a large tenant's own HNSW index of a model, partial on the
-- model and the tenant; memory_search streams only these (a stream on the
-- shared index would read every other tenant's tuples near the query, at a
-- cost that depends on them). The predicate names md5(tenant_id), not the
-- tenant: index definitions are readable by every role (pg_indexes). Global,
-- like memory_models (a Citus reference table), for the owner. pg_dump leaves
-- out indexes on an extension's tables: a restored row builds its index
-- again.
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.memory_tenant_indexes (
  model       text        NOT NULL,
  tenant_id   uuid        NOT NULL,
  index_name  text        NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT memory_tenant_indexes_pkey PRIMARY KEY (model, tenant_id),
  CONSTRAINT memory_tenant_indexes_name_key UNIQUE (index_name)
);
COMMENT ON TABLE @extschema@.memory_tenant_indexes IS
  'Tenants with an HNSW index of their own per model (saas.memory_index_tenant, or run_maintenance above saas.memory_tenant_index_rows).';
ALTER TABLE @extschema@.memory_tenant_indexes ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.memory_tenant_indexes', '');

-- The name of a tenant's index of a model: no tenant id in it.
CREATE FUNCTION @extschema@._memory_tenant_index_name(p_model text, p_tenant uuid)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN 'memory_hnsw_t_' || pg_catalog.left(pg_catalog.md5(p_model || '/' || p_tenant::text), 16);

CREATE FUNCTION @extschema@._memory_tenant_indexes_changed()
RETURNS trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    PERFORM @extschema@._memory_build_index(NEW.model, NEW.tenant_id);
  ELSE
    EXECUTE format('DROP INDEX IF EXISTS @extschema@.%I', OLD.index_name);
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER memory_tenant_indexes_changed AFTER INSERT OR DELETE ON @extschema@.memory_tenant_indexes
  FOR EACH ROW EXECUTE FUNCTION @extschema@._memory_tenant_indexes_changed();
ALTER TABLE @extschema@.memory_tenant_indexes ENABLE ALWAYS TRIGGER memory_tenant_indexes_changed;

CREATE FUNCTION @extschema@.memory_index_tenant(model text, tenant uuid)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r @extschema@.memory_models%ROWTYPE := @extschema@._memory_model(model, false);
BEGIN
  IF tenant IS NULL THEN
    RAISE EXCEPTION 'memory_index_tenant: the tenant may not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'e.g. saas.memory_index_tenant(''minilm-l6'', ''<tenant uuid>'').';
  END IF;
  IF NOT EXISTS (SELECT FROM @extschema@.tenants tt WHERE tt.id = tenant) THEN
    RAISE EXCEPTION 'unknown tenant %', tenant
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Name a tenant of saas.tenants.';
  END IF;
  INSERT INTO @extschema@.memory_tenant_indexes (model, tenant_id, index_name)
  VALUES (r.model, tenant, @extschema@._memory_tenant_index_name(r.model, tenant))
  ON CONFLICT ON CONSTRAINT memory_tenant_indexes_pkey DO NOTHING;
  RETURN jsonb_build_object('model', r.model, 'tenant_id', tenant,
                            'index', @extschema@._memory_build_index(r.model, tenant));
END
$$;
COMMENT ON FUNCTION @extschema@.memory_index_tenant(text, uuid) IS
  'Builds a tenant''s own HNSW index of a model (partial on the model and md5 of the tenant), which memory_search then streams. Idempotent. For the owner; run_maintenance builds them above saas.memory_tenant_index_rows.';

CREATE FUNCTION @extschema@.memory_drop_tenant_index(model text, tenant uuid)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  DELETE FROM @extschema@.memory_tenant_indexes ti WHERE ti.model = memory_drop_tenant_index.model AND ti.tenant_id = tenant;
  RETURN FOUND;
END
$$;
COMMENT ON FUNCTION @extschema@.memory_drop_tenant_index(text, uuid) IS
  'Drops a tenant''s own index of a model (its searches read the shared index again). For the owner.';

-- run_maintenance: a tenant index for every tenant that reached
-- saas.memory_tenant_index_rows embeddings of a model (0: none). Counting
-- needs every tenant's rows: run it as the superuser that owns the
-- extension (pg_cron does); under forced RLS another role counts none.
CREATE FUNCTION @extschema@._memory_maintenance(p_now timestamptz)
RETURNS TABLE (parent_table regclass, action text, partition_name text, detail text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  threshold bigint := current_setting('saas.memory_tenant_index_rows')::bigint;
  due jsonb;
  g record;
BEGIN
  IF threshold <= 0 THEN
    RETURN;
  END IF;
  -- Listed first: CREATE INDEX refuses a table an open cursor still reads.
  SELECT coalesce(jsonb_agg(jsonb_build_object('model', z.model, 'tenant_id', z.tenant_id, 'n', z.n) ORDER BY z.model, z.tenant_id), '[]')
  INTO due
  FROM (SELECT e.model, e.tenant_id, count(*) AS n
        FROM @extschema@.memory_embeddings e
        WHERE EXISTS (SELECT FROM @extschema@.memory_models mm WHERE mm.model = e.model)
          AND EXISTS (SELECT FROM @extschema@.tenants tt WHERE tt.id = e.tenant_id)
          AND NOT EXISTS (SELECT FROM @extschema@.memory_tenant_indexes ti WHERE ti.model = e.model AND ti.tenant_id = e.tenant_id)
        GROUP BY e.model, e.tenant_id
        HAVING count(*) >= threshold) z;
  FOR g IN SELECT * FROM jsonb_to_recordset(due) AS x(model text, tenant_id uuid, n bigint) LOOP
    parent_table := '@extschema@.memory_embeddings'::regclass;
    action := 'memory_tenant_index';
    partition_name := (@extschema@.memory_index_tenant(g.model, g.tenant_id)) ->> 'index';
    detail := format('model %s: a tenant with %s embeddings', g.model, g.n);
    RETURN NEXT;
  END LOOP;
END
$$;
INSERT INTO @extschema@.maintenance_tasks (task, module, function_name, run_order, reports_as)
VALUES ('memory_tenant_indexes', 'memory', '_memory_maintenance', 60, 'memory_embeddings');

CREATE FUNCTION @extschema@._memory_ensure_log()
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT EXISTS (SELECT FROM @extschema@.partition_config WHERE parent = '@extschema@.memory_query_log'::regclass) THEN
    PERFORM @extschema@.create_monthly_partitions('@extschema@.memory_query_log', 'logged_at', retention => interval '6 months');
  END IF;
END
$$;

-- ---------------------------------------------------------------------------
-- Writing memories
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.memory_embed(memory_id bigint, model text, embedding vector, p_now timestamptz DEFAULT now())
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._memory_tenant();
  r @extschema@.memory_models%ROWTYPE := @extschema@._memory_model(model, false);
BEGIN
  IF memory_id IS NULL OR p_now IS NULL THEN
    RAISE EXCEPTION 'memory_embed: memory_id and p_now may not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the id saas.memory_add returned.';
  END IF;
  PERFORM @extschema@._memory_check_vector(embedding::text, r.model, r.dims, 'the embedding');
  -- The memory's row is locked (KEY SHARE) before the embedding is written:
  -- without a foreign key, a concurrent delete (memory_forget, or any DELETE,
  -- whose statement trigger deletes the embeddings) would not see an
  -- embedding written meanwhile, which would outlive its memory. A delete in
  -- progress makes this wait, then find the memory gone (the error below); an
  -- embed in progress makes the delete wait, and its trigger then sees the
  -- committed embedding (READ COMMITTED; under REPEATABLE READ the loser of
  -- the race gets a serialization failure instead).
  PERFORM FROM @extschema@.memories mm WHERE mm.tenant_id = t AND mm.id = memory_embed.memory_id FOR KEY SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'memory % does not exist', memory_id
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Embed memories of the current tenant (saas.memory_pending lists them).';
  END IF;
  INSERT INTO @extschema@.memory_embeddings AS e (tenant_id, memory_id, model, embedding, embedded_at)
  VALUES (t, memory_id, model, embedding, p_now)
  ON CONFLICT ON CONSTRAINT memory_embeddings_pkey DO UPDATE SET embedding = EXCLUDED.embedding, embedded_at = EXCLUDED.embedded_at;
END
$$;
COMMENT ON FUNCTION @extschema@.memory_embed(bigint, text, vector, timestamptz) IS
  'Stores (or replaces) a memory''s embedding for a model; the vector must have the model''s dimension.';

CREATE FUNCTION @extschema@.memory_add(
  content text,
  subject text DEFAULT NULL,
  kind text DEFAULT 'note',
  importance float8 DEFAULT 0.5,
  evergreen boolean DEFAULT false,
  entities text[] DEFAULT '{}',
  metadata jsonb DEFAULT '{}',
  event_at timestamptz DEFAULT NULL,
  model text DEFAULT NULL,
  embedding vector DEFAULT NULL,
  p_now timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._memory_tenant();
  new_id bigint;
  ents text[];
BEGIN
  IF content IS NULL OR kind IS NULL OR importance IS NULL OR evergreen IS NULL OR entities IS NULL
     OR metadata IS NULL OR p_now IS NULL THEN
    RAISE EXCEPTION 'memory_add: content, kind, importance, evergreen, entities, metadata and p_now may not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'e.g. saas.memory_add(''Allergic to penicillin'', subject => ''patient:42'', kind => ''allergy'').';
  END IF;
  IF NOT (importance >= 0 AND importance <= 1) THEN
    RAISE EXCEPTION 'importance % is out of range', importance
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Importance is between 0 and 1.';
  END IF;
  IF kind = '' OR length(kind) > 100 THEN
    RAISE EXCEPTION 'invalid kind "%"', @extschema@._echo(kind)
      USING ERRCODE = 'invalid_parameter_value', HINT = 'A kind is 1 to 100 characters, e.g. ''note'', ''preference'', ''allergy''.';
  END IF;
  IF jsonb_typeof(metadata) <> 'object' THEN
    RAISE EXCEPTION 'metadata must be a JSON object'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass an object, e.g. ''{"source": "chat"}''.';
  END IF;
  IF (model IS NULL) <> (embedding IS NULL) THEN
    RAISE EXCEPTION 'memory_add: model and embedding go together'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass both, or neither and embed later with saas.memory_embed.';
  END IF;
  SELECT coalesce(array_agg(DISTINCT x ORDER BY x), '{}') INTO ents
  FROM unnest(entities) x WHERE x IS NOT NULL AND x <> '';
  INSERT INTO @extschema@.memories (tenant_id, subject, kind, content, metadata, importance, evergreen,
                                    event_at, created_at, entities)
  VALUES (t, subject, kind, content, metadata, importance, evergreen, coalesce(event_at, p_now), p_now, ents)
  RETURNING id INTO new_id;
  INSERT INTO @extschema@.memory_entities (tenant_id, entity, memory_id)
  SELECT t, x, new_id FROM unnest(ents || CASE WHEN subject IS NULL OR subject = '' THEN '{}'::text[] ELSE ARRAY[subject] END) x
  ON CONFLICT DO NOTHING;
  IF model IS NOT NULL THEN
    PERFORM @extschema@.memory_embed(new_id, model, embedding, p_now);
  END IF;
  RETURN new_id;
END
$$;
COMMENT ON FUNCTION @extschema@.memory_add(text, text, text, float8, boolean, text[], jsonb, timestamptz, text, vector, timestamptz) IS
  'Adds a memory of the current tenant (optionally with its embedding for one model); returns its id.';

CREATE FUNCTION @extschema@.memory_pending(model text, max_rows int DEFAULT 1000)
RETURNS TABLE (memory_id bigint, kind text, content text, created_at timestamptz)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._memory_tenant();
BEGIN
  PERFORM @extschema@._memory_model(model, false);
  IF max_rows IS NULL OR max_rows < 1 OR max_rows > 100000 THEN
    RAISE EXCEPTION 'max_rows % is out of range', max_rows
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Ask for 1 to 100000 rows at a time.';
  END IF;
  RETURN QUERY
  SELECT mm.id, mm.kind, mm.content, mm.created_at
  FROM @extschema@.memories mm
  WHERE mm.tenant_id = t
    AND NOT EXISTS (SELECT FROM @extschema@.memory_embeddings e
                    WHERE e.tenant_id = t AND e.memory_id = mm.id AND e.model = memory_pending.model)
  ORDER BY mm.id
  LIMIT max_rows;
END
$$;
COMMENT ON FUNCTION @extschema@.memory_pending(text, int) IS
  'The current tenant''s memories without an embedding for the model, oldest first: what to embed before searches switch to it.';

-- ---------------------------------------------------------------------------
-- Erasure
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.memory_forget(subject text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._memory_tenant();
  ids bigint[];
  n_emb bigint;
  n_ent bigint;
  n_log bigint;
  n_mem bigint;
BEGIN
  IF subject IS NULL OR subject = '' THEN
    RAISE EXCEPTION 'memory_forget: the subject may not be NULL or empty'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Name the subject to erase, e.g. saas.memory_forget(''patient:42'').';
  END IF;
  -- Memories about the subject, and memories that mention it, locked first:
  -- an embed of one of them in progress (memory_embed holds its row KEY
  -- SHARE) is waited for, so the deletes below, with a later snapshot, see
  -- and count its embedding.
  SELECT coalesce(array_agg(x.id ORDER BY x.id), '{}') INTO ids
  FROM (SELECT mm.id FROM @extschema@.memories mm
        WHERE mm.tenant_id = t AND (mm.subject = memory_forget.subject OR memory_forget.subject = ANY (mm.entities))
        FOR UPDATE) x;
  DELETE FROM @extschema@.memory_embeddings e WHERE e.tenant_id = t AND e.memory_id = ANY (ids);
  GET DIAGNOSTICS n_emb = ROW_COUNT;
  DELETE FROM @extschema@.memory_entities l
  WHERE l.tenant_id = t AND (l.memory_id = ANY (ids) OR l.entity = memory_forget.subject);
  GET DIAGNOSTICS n_ent = ROW_COUNT;
  DELETE FROM @extschema@.memories mm WHERE mm.tenant_id = t AND mm.id = ANY (ids);
  GET DIAGNOSTICS n_mem = ROW_COUNT;
  DELETE FROM @extschema@.memory_query_log q
  WHERE q.tenant_id = t
    AND (memory_forget.subject = ANY (q.subjects) OR memory_forget.subject = ANY (q.entities) OR q.result_ids && ids);
  GET DIAGNOSTICS n_log = ROW_COUNT;
  RETURN jsonb_build_object('memories', n_mem, 'embeddings', n_emb, 'entity_links', n_ent, 'query_log_rows', n_log);
END
$$;
COMMENT ON FUNCTION @extschema@.memory_forget(text) IS
  'Erases a subject from the current tenant''s memory: memories about or mentioning it, their embeddings and entity links, and query-log rows naming it or returning them. Returns the counts.';

-- ---------------------------------------------------------------------------
-- Search
-- ---------------------------------------------------------------------------
-- Sampled log row, written as the owner for the caller's tenant.
CREATE FUNCTION @extschema@._memory_log_write(
  p_model text, p_k int, p_stage text, p_exact boolean, p_candidates int, p_returned int,
  p_top float8, p_latency_ms float8, p_subjects text[], p_entities text[], p_ids bigint[])
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  INSERT INTO @extschema@.memory_query_log (tenant_id, logged_at, model, k, stage, exact, candidates, returned,
                                            top_score, latency_ms, subjects, entities, result_ids)
  VALUES (@extschema@._memory_tenant(), now(), p_model, p_k, p_stage, p_exact, p_candidates, p_returned,
          p_top, p_latency_ms, coalesce(p_subjects, '{}'), coalesce(p_entities, '{}'), coalesce(p_ids, '{}'));
END
$$;

-- The distance pgvector's operator of the model's distance gives. A
-- SQL-standard body: parsed once, when the extension script runs with
-- pgvector's schema on its search_path, so it names no schema at call time
-- and has no SET clause, which lets the planner inline it into the scoring
-- statement of memory_search (kept as a prepared plan, not built per call).
CREATE FUNCTION @extschema@._memory_distance(a vector, b vector, distance_kind text)
RETURNS float8
LANGUAGE sql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE
RETURN CASE distance_kind WHEN 'cosine' THEN a <=> b WHEN 'l2' THEN a <-> b ELSE a <#> b END;

CREATE FUNCTION @extschema@.memory_search(
  query vector,
  model text,
  k int DEFAULT 10,
  subjects text[] DEFAULT '{}',
  entities text[] DEFAULT '{}',
  weights jsonb DEFAULT '{}',
  half_life interval DEFAULT '30 days',
  half_lives jsonb DEFAULT '{}',
  evergreen_kinds text[] DEFAULT '{}',
  recency_floor float8 DEFAULT 0,
  age_from text DEFAULT 'event',
  touch boolean DEFAULT false,
  p_now timestamptz DEFAULT now())
RETURNS TABLE (memory_id bigint, subject text, kind text, content text, metadata jsonb,
               score float8, rank int, exact boolean, explanation jsonb)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET jit = off
AS $$
DECLARE
  started timestamptz := clock_timestamp();
  t uuid := @extschema@._memory_tenant();
  r @extschema@.memory_models%ROWTYPE := @extschema@._memory_model(model, true);
  vs text;
  w float8[] := ARRAY[1.0, 0.3, 0.2, 0.3];
  wk text;
  wv jsonb;
  hl_default float8;
  hl_map jsonb := '{}';
  qents text[] := '{}';
  op text;
  src text;
  terms text;
  eligible bigint;
  own_index boolean := false;
  stage text;
  is_exact boolean;
  examined int := 0;
  streamed bigint := 0;
  stopped boolean := false;
  c_ids bigint[] := '{}';
  c_scores float8[] := '{}';
  e_ids bigint[];
  e_scores float8[];
  e_examined int;
  ent_ids bigint[] := '{}';
  sel_ids bigint[];
  touch_note text := 'not requested';
  old_iter text;
  old_ef text;
  old_index_scan text;
  old_sort text;
  stream_sql text;
  b_ids bigint[];
  b_scores float8[];
  o_ids bigint[];
  o_subjects text[];
  o_kinds text[];
  o_contents text[];
  o_metadata jsonb[];
  o_scores float8[];
  o_expl jsonb[];
BEGIN
  -- Arguments.
  IF k IS NULL OR weights IS NULL OR half_life IS NULL OR half_lives IS NULL OR subjects IS NULL OR entities IS NULL
     OR evergreen_kinds IS NULL OR recency_floor IS NULL OR age_from IS NULL OR touch IS NULL OR p_now IS NULL THEN
    RAISE EXCEPTION 'memory_search: only the query and model are required, and no argument may be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Leave an argument out to use its default.';
  END IF;
  -- pgvector refuses NaN and infinity in a vector, so the dimension is what
  -- is left to check; the text check runs only to report what is wrong.
  IF query IS NULL OR cardinality(query::float4[]) IS DISTINCT FROM r.dims THEN
    PERFORM @extschema@._memory_check_vector(query::text, r.model, r.dims, 'the query vector');
  END IF;
  IF NOT isfinite(p_now) THEN
    RAISE EXCEPTION 'p_now % is not a finite time', p_now
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Leave p_now out for now(), or pin a finite timestamp.';
  END IF;
  IF k < 1 OR k > 1000 THEN
    RAISE EXCEPTION 'k % is out of range', k
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Ask for 1 to 1000 memories (k).';
  END IF;
  IF jsonb_typeof(weights) <> 'object' THEN
    RAISE EXCEPTION 'weights must be a JSON object'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. ''{"similarity": 1, "recency": 0.3, "importance": 0.2, "entity": 0.3}''.';
  END IF;
  IF weights <> '{}'::jsonb THEN
    FOR wk, wv IN SELECT * FROM jsonb_each(weights) LOOP
      IF wk NOT IN ('similarity', 'recency', 'importance', 'entity') THEN
        RAISE EXCEPTION 'unknown weight "%"', @extschema@._echo(wk)
          USING ERRCODE = 'invalid_parameter_value', HINT = 'Weights are similarity, recency, importance and entity.';
      END IF;
      IF jsonb_typeof(wv) <> 'number' OR (wv #>> '{}')::float8 < 0 THEN
        RAISE EXCEPTION 'weight "%" must be a non-negative number, not %', wk, @extschema@._echo(wv::text)
          USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Weights are numbers >= 0; 0 turns a term off.';
      END IF;
      w[array_position(ARRAY['similarity', 'recency', 'importance', 'entity'], wk)] := (wv #>> '{}')::float8;
    END LOOP;
    IF w[1] + w[2] + w[3] + w[4] <= 0 THEN
      RAISE EXCEPTION 'every weight is zero'
        USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Give at least one term a positive weight.';
    END IF;
  END IF;
  hl_default := extract(epoch FROM half_life);
  IF hl_default <= 0 THEN
    RAISE EXCEPTION 'half-life % is not positive', half_life
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Give half-lives as positive intervals, e.g. ''30 days''; evergreen kinds do not decay at all.';
  END IF;
  IF jsonb_typeof(half_lives) <> 'object' THEN
    RAISE EXCEPTION 'half_lives must be a JSON object of kind to interval'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. ''{"preference": "90 days", "chat": "2 days"}''.';
  END IF;
  IF half_lives <> '{}'::jsonb THEN
    FOR wk, wv IN SELECT * FROM jsonb_each(half_lives) LOOP
      BEGIN
        hl_map := hl_map || jsonb_build_object(wk, extract(epoch FROM (wv #>> '{}')::interval));
      EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow OR invalid_parameter_value THEN
        RAISE EXCEPTION 'half-life of kind "%" is not an interval: %', @extschema@._echo(wk), @extschema@._echo(wv::text)
          USING ERRCODE = 'invalid_parameter_value', HINT = 'Give intervals as text, e.g. ''{"preference": "90 days"}''.';
      END;
      IF (hl_map ->> wk)::float8 <= 0 THEN
        RAISE EXCEPTION 'half-life of kind "%" is not positive', @extschema@._echo(wk)
          USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Give half-lives as positive intervals; list kinds that never decay in evergreen_kinds.';
      END IF;
    END LOOP;
  END IF;
  IF NOT (recency_floor >= 0 AND recency_floor <= 1) THEN
    RAISE EXCEPTION 'recency_floor % is out of range', recency_floor
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'The floor is between 0 and 1 (0: none).';
  END IF;
  IF EXISTS (SELECT FROM unnest(evergreen_kinds) x WHERE x IS NULL) THEN
    RAISE EXCEPTION 'evergreen_kinds holds a NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'List the kinds that never decay by name, e.g. ''{allergy,consent}''.';
  END IF;
  IF age_from NOT IN ('event', 'access') THEN
    RAISE EXCEPTION 'unknown age_from "%"', @extschema@._echo(age_from)
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''event'' (age from event_at) or ''access'' (from the last access, else creation).';
  END IF;
  IF cardinality(subjects) + cardinality(entities) > 0 THEN
    SELECT coalesce(array_agg(DISTINCT x ORDER BY x), '{}') INTO qents
    FROM unnest(subjects || entities) x WHERE x IS NOT NULL AND x <> '';
  END IF;

  -- A tenant with an index of its own (memory_index_tenant) streams only
  -- its own tuples. Others are counted up to the brute-force limit only
  -- (counting a large tenant would cost more than its search).
  own_index := pg_catalog.to_regclass('@extschema@.' || @extschema@._memory_tenant_index_name(r.model, t)) IS NOT NULL;
  IF NOT own_index THEN
    SELECT count(*) INTO eligible
    FROM (SELECT FROM @extschema@.memory_embeddings e WHERE e.tenant_id = t AND e.model = r.model
          LIMIT current_setting('saas.memory_exact_below')::bigint + 1) z;
  END IF;

  IF NOT own_index AND eligible <= current_setting('saas.memory_exact_below')::bigint THEN
    -- Brute force: the statement at the end scores every memory (sel_ids NULL).
    stage := 'brute_force';
    is_exact := true;
    examined := eligible;
  ELSE
    stage := 'index';
    -- The stream statements name the model's index expression, whose
    -- dimension and operator are the model's, so their text is per model
    -- (and per tenant index: the planner proves its predicate from the md5
    -- written in). Every value of the search is a parameter ($1 to $10,
    -- see _memory_stream), so the plan is made once per backend and kept.
    -- The age is computed as the final statement computes it.
    vs := @extschema@._memory_vector_schema();
    op := CASE r.distance WHEN 'cosine' THEN '<=>' WHEN 'l2' THEN '<->' ELSE '<#>' END;
    terms := format($t$
      SELECT m.id, d.dist,
             @extschema@._memory_row_score($3[1], $3[2], $3[3], $3[4], %1$L, d.dist,
               extract(epoch FROM $9 - CASE WHEN $8 = 'access' THEN coalesce(m.last_accessed_at, m.created_at)
                                            ELSE m.event_at END)::float8,
               coalesce(($5 ->> m.kind)::float8, $4), m.evergreen OR m.kind = ANY ($6), $7,
               m.importance,
               CASE WHEN cardinality($10) = 0 THEN 0::float8
                    ELSE (SELECT count(*) FROM unnest($10) q WHERE q = m.subject OR q = ANY (m.entities))::float8
                         / cardinality($10) END) AS score
      FROM (%%s) d
      CROSS JOIN LATERAL (SELECT mm.id, mm.importance, mm.evergreen, mm.kind, mm.event_at, mm.last_accessed_at, mm.created_at,
                                 mm.subject, mm.entities
                          FROM @extschema@.memories mm WHERE mm.tenant_id = $2 AND mm.id = d.memory_id OFFSET 0) m
    $t$, r.distance);
    src := format('SELECT e.memory_id, (e.embedding::%1$s.vector(%2$s)) OPERATOR(%1$s.%3$s) $1 AS dist '
                  'FROM @extschema@.memory_embeddings e WHERE e.tenant_id = $2 AND e.model = %4$L',
                  vs, r.dims, op, r.model);
    -- Entity stage: the memories matching a query entity, whatever their
    -- distance, in distance order until not even a full entity match can
    -- beat the k-th score (those left cannot beat the final k-th either).
    -- A kept plan keeps the planner settings it was made under, whatever
    -- a later session sets. So the sorted streams (here and pass 2) read
    -- their rows through a fence (OFFSET 0) that no index order can cross:
    -- they are sorted by exact distance under any settings, never read in
    -- an HNSW index's approximate order. Pass 1 pins what it needs.
    IF cardinality(qents) > 0 THEN
      SELECT s.ids, s.scores, s.streamed INTO ent_ids, c_scores, streamed
      FROM @extschema@._memory_stream(
             format(terms, 'SELECT * FROM (' || src || ' AND e.memory_id IN (SELECT l.memory_id FROM @extschema@.memory_entities l '
                                  'WHERE l.tenant_id = $2 AND l.entity = ANY ($10)) OFFSET 0) f ORDER BY 2, 1'),
             query, t, w, hl_default, hl_map, evergreen_kinds, recency_floor, age_from, p_now, qents,
             k, '{}', '{}', r.distance, 1) s;
      c_ids := ent_ids;
      examined := streamed;
    END IF;
    -- Index stage: the tenant's memories in distance order, until no unseen
    -- memory can beat the k-th score (_memory_stream reads the stream
    -- through a cursor). From the tenant's own HNSW index when it has one
    -- (pass 1), else from its rows sorted by exact distance (pass 2). Never
    -- from the model's shared index: a stream there reads every other
    -- tenant's tuples near the query and skips them, so its cost, and the
    -- latency a tenant sees, would depend on other tenants' data.
    e_ids := c_ids; e_scores := c_scores; e_examined := examined;
    FOR pass IN CASE WHEN own_index THEN 1 ELSE 2 END .. 2 LOOP
      IF pass = 1 THEN
        -- Relaxed order: strict order drops every tuple the graph search
        -- finds after a farther one (pgvector's hnswgettuple), and those
        -- are what lose recall. The sort disabled: the planner would sort
        -- the tenant's rows (the btree narrows them), the full scan's work.
        old_iter := current_setting('hnsw.iterative_scan', true);
        PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
        old_ef := current_setting('hnsw.ef_search', true);
        PERFORM set_config('hnsw.ef_search', current_setting('saas.memory_ef_search'), true);
        old_sort := current_setting('enable_sort');
        old_index_scan := current_setting('enable_indexscan');
        PERFORM set_config('enable_sort', 'off', true);
        PERFORM set_config('enable_indexscan', 'on', true);
        stream_sql := format(terms, src || format(' AND pg_catalog.md5(e.tenant_id::text) = %L ORDER BY 2', pg_catalog.md5(t::text)));
      ELSE
        -- The tenant's rows sorted by exact distance (through the fence
        -- above: no index order), with the same stopping rule; also what finishes a tenant-index stream that
        -- ended (hnsw.max_scan_tuples) before the bound or the last row.
        stream_sql := format(terms, 'SELECT * FROM (' || src || ' OFFSET 0) f ORDER BY 2, 1');
      END IF;
      SELECT s.stopped, s.streamed, s.ids, s.scores INTO stopped, streamed, b_ids, b_scores
      FROM @extschema@._memory_stream(stream_sql, query, t, w, hl_default, hl_map, evergreen_kinds, recency_floor, age_from, p_now,
                                      qents, k, e_scores, ent_ids, r.distance, 0) s;
      c_ids := e_ids || b_ids; c_scores := e_scores || b_scores; examined := e_examined + streamed;
      IF pass = 1 THEN
        PERFORM set_config('hnsw.iterative_scan', coalesce(old_iter, 'off'), true);
        PERFORM set_config('hnsw.ef_search', coalesce(old_ef, '40'), true);
        PERFORM set_config('enable_sort', old_sort, true);
        PERFORM set_config('enable_indexscan', old_index_scan, true);
        EXIT WHEN stopped;
        SELECT count(*) INTO eligible FROM @extschema@.memory_embeddings e WHERE e.tenant_id = t AND e.model = r.model;
        EXIT WHEN streamed >= eligible;
      END IF;
    END LOOP;
    -- Every memory seen means exact; a stop at the bound is certified
    -- relative to the index stream.
    is_exact := NOT stopped;
    -- In the sorted subquery's order, as below.
    SELECT coalesce(array_agg(c.id), '{}') INTO sel_ids
    FROM (SELECT c.id, c.sc FROM unnest(c_ids, c_scores) AS c(id, sc) ORDER BY c.sc DESC, c.id LIMIT k) c;
  END IF;

  IF touch THEN
    touch_note := CASE WHEN current_setting('transaction_read_only') = 'on'
                       THEN 'skipped: read-only transaction (a GET); search with POST to refresh access'
                       ELSE 'refreshed' END;
  END IF;

  -- The rows and their explanations, scored in one static statement (its
  -- plan is kept for the session): every memory of the tenant when sel_ids
  -- is NULL (brute force), else the ones the index stage selected. Every
  -- row is scored by _memory_row_score; the terms the explanation shows
  -- are computed for the k rows kept only. The aggregates take the rows in
  -- the order of the sorted subquery z (nothing joins after it); an ORDER
  -- BY in each of the seven would sort seven times (0.12 ms a search).
  SELECT coalesce(array_agg(z.id), '{}'), array_agg(z.subject),
         array_agg(z.kind), array_agg(z.content),
         array_agg(z.metadata), array_agg(z.sc),
         array_agg(jsonb_build_object(
           'score', z.sc,
           'stage', CASE WHEN sel_ids IS NULL THEN 'brute_force' WHEN z.id = ANY (ent_ids) THEN 'entity' ELSE 'index' END,
           'exact', is_exact,
           'result', CASE WHEN is_exact THEN 'exact' ELSE 'certified relative to the index stream' END,
           'distance', z.dist,
           'terms', jsonb_build_object(
             'similarity', jsonb_build_object('value', z.sim, 'weight', w[1], 'contribution', w[1] * z.sim / (w[1] + w[2] + w[3] + w[4])),
             'recency', jsonb_build_object('value', z.rec, 'weight', w[2], 'contribution', w[2] * z.rec / (w[1] + w[2] + w[3] + w[4]),
                                           'age_seconds', z.age, 'half_life_seconds', CASE WHEN z.evg THEN NULL ELSE z.hl END,
                                           'evergreen', z.evg, 'floor', recency_floor, 'age_from', age_from),
             'importance', jsonb_build_object('value', z.imp, 'weight', w[3], 'contribution', w[3] * z.imp / (w[1] + w[2] + w[3] + w[4])),
             'entity', jsonb_build_object('value', z.ent, 'weight', w[4], 'contribution', w[4] * z.ent / (w[1] + w[2] + w[3] + w[4]),
                                          'matched', to_jsonb(z.matched))),
           'touch', touch_note))
  INTO o_ids, o_subjects, o_kinds, o_contents, o_metadata, o_scores, o_expl
  FROM (
    SELECT s.id, s.dist, x.sim, x.rec, s.imp, s.ent, s.hl, s.age, s.evg, x.matched, s.sc,
           s.subject, s.kind, s.content, s.metadata
    FROM (
      SELECT m.id, m.dist, m.importance AS imp, en.ent, a.hl, a.age, a.evg, m.subject, m.kind, m.content, m.metadata,
             m.entities,
             @extschema@._memory_row_score(w[1], w[2], w[3], w[4], r.distance, m.dist, a.age, a.hl, a.evg, recency_floor,
                                           m.importance, en.ent) AS sc
      FROM (SELECT mm.id, e.dist, mm.subject, mm.kind, mm.content, mm.metadata, mm.importance, mm.evergreen,
                   mm.event_at, mm.created_at, mm.last_accessed_at, mm.entities
            FROM (SELECT ee.memory_id, @extschema@._memory_distance(ee.embedding, query, r.distance) AS dist
                  FROM @extschema@.memory_embeddings ee
                  WHERE ee.tenant_id = t AND ee.model = r.model AND sel_ids IS NULL OFFSET 0) e
            JOIN @extschema@.memories mm ON mm.tenant_id = t AND mm.id = e.memory_id
            UNION ALL
            SELECT mm.id, @extschema@._memory_distance(ee.embedding, query, r.distance), mm.subject, mm.kind, mm.content,
                   mm.metadata, mm.importance, mm.evergreen, mm.event_at, mm.created_at, mm.last_accessed_at, mm.entities
            FROM @extschema@.memory_embeddings ee JOIN @extschema@.memories mm ON mm.tenant_id = ee.tenant_id AND mm.id = ee.memory_id
            WHERE ee.tenant_id = t AND mm.tenant_id = t AND ee.model = r.model
              AND ee.memory_id = ANY (sel_ids) AND mm.id = ANY (sel_ids)) m
      CROSS JOIN LATERAL (
        SELECT m.evergreen OR m.kind = ANY (evergreen_kinds) AS evg,
               coalesce((hl_map ->> m.kind)::float8, hl_default) AS hl,
               extract(epoch FROM p_now - CASE WHEN age_from = 'access' THEN coalesce(m.last_accessed_at, m.created_at)
                                               ELSE m.event_at END)::float8 AS age) a
      CROSS JOIN LATERAL (
        SELECT CASE WHEN cardinality(qents) = 0 THEN 0::float8
                    ELSE (SELECT count(*) FROM unnest(qents) q WHERE q = m.subject OR q = ANY (m.entities))::float8
                         / cardinality(qents) END AS ent) en
      ORDER BY sc DESC, m.id
      LIMIT k) s
    CROSS JOIN LATERAL (
      SELECT @extschema@._memory_similarity(r.distance, s.dist) AS sim,
             @extschema@._memory_recency(s.age, s.hl, s.evg, recency_floor) AS rec,
             CASE WHEN cardinality(qents) = 0 THEN '{}'::text[]
                  ELSE (SELECT coalesce(array_agg(q ORDER BY q), '{}') FROM unnest(qents) q
                        WHERE q = s.subject OR q = ANY (s.entities)) END AS matched) x
    ORDER BY s.sc DESC, s.id) z;

  -- Access refresh: only in a read-write transaction.
  IF touch_note = 'refreshed' THEN
    UPDATE @extschema@.memories mm SET last_accessed_at = p_now, access_count = mm.access_count + 1
    WHERE mm.tenant_id = t AND mm.id = ANY (o_ids);
  END IF;

  IF current_setting('transaction_read_only') = 'off'
     AND random() < current_setting('saas.memory_log_sample_rate')::float8 THEN
    PERFORM @extschema@._memory_log_write(model, k, stage, is_exact, examined, cardinality(o_ids), o_scores[1],
                                          extract(epoch FROM clock_timestamp() - started) * 1000,
                                          subjects, entities, o_ids);
  END IF;

  RETURN QUERY
  SELECT u.id, u.subject, u.kind, u.content, u.metadata, u.sc, u.ord::int, is_exact, u.expl
  FROM unnest(o_ids, o_subjects, o_kinds, o_contents, o_metadata, o_scores, o_expl)
       WITH ORDINALITY AS u(id, subject, kind, content, metadata, sc, expl, ord)
  ORDER BY u.ord;
END
$$;
COMMENT ON FUNCTION @extschema@.memory_search(vector, text, int, text[], text[], jsonb, interval, jsonb, text[], float8, text, boolean, timestamptz) IS
  'The current tenant''s top-k memories by an absolute score (similarity, recency by half-life, importance, entity boost), exact: min(k, eligible) rows, each with its explanation. See docs/memory.md.';

-- ---------------------------------------------------------------------------
-- Half-lives from other systems' decay parameters (src/memory/decay.rs).
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.memory_half_life_from_langchain(decay_rate float8)
RETURNS interval
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT make_interval(secs => @extschema@._memory_half_life_langchain(decay_rate)) $$;
COMMENT ON FUNCTION @extschema@.memory_half_life_from_langchain(float8) IS
  'The half-life of LangChain''s TimeWeightedVectorStoreRetriever decay_rate ((1 - decay_rate) ^ hours): 0.01 gives 68.97 hours.';

CREATE FUNCTION @extschema@.memory_half_life_from_factor(factor float8, per interval DEFAULT '1 hour')
RETURNS interval
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT make_interval(secs => @extschema@._memory_half_life_factor(factor, extract(epoch FROM per)::float8)) $$;
COMMENT ON FUNCTION @extschema@.memory_half_life_from_factor(float8, interval) IS
  'The half-life of a decay by factor per interval: Generative Agents'' 0.995 per hour gives 138.28 hours.';

CREATE FUNCTION @extschema@.memory_half_life_from_elasticsearch(scale interval, decay float8 DEFAULT 0.5)
RETURNS interval
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT make_interval(secs => @extschema@._memory_half_life_elasticsearch(extract(epoch FROM scale)::float8, decay)) $$;
COMMENT ON FUNCTION @extschema@.memory_half_life_from_elasticsearch(interval, float8) IS
  'The half-life of Elasticsearch''s exp decay function (value decay at scale; offset 0).';

-- ---------------------------------------------------------------------------
-- Registry rows
-- ---------------------------------------------------------------------------
-- Names with pgvector's type carry its schema (grant_api runs with a pinned
-- search_path); pgvector is assumed to stay where it was installed.
INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege)
SELECT 'memory', 'function', replace(g.name, 'vector', v.name), 'EXECUTE'
FROM (SELECT pg_catalog.format('%I.vector', n.nspname) AS name
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
      WHERE e.extname = 'vector') v,
     (VALUES
  ('memory_add(text, text, text, double precision, boolean, text[], jsonb, timestamp with time zone, text, vector, timestamp with time zone)'),
  ('memory_embed(bigint, text, vector, timestamp with time zone)'),
  ('_memory_distance(vector, vector, text)'),
  ('memory_search(vector, text, integer, text[], text[], jsonb, interval, jsonb, text[], double precision, text, boolean, timestamp with time zone)'),
  ('saas_api.memory_search(vector, text, integer, text[], text[], jsonb, interval, jsonb, text[], double precision, text, boolean)'),
  ('saas_api.memory_add(text, text, text, double precision, boolean, text[], jsonb, timestamp with time zone, text, vector)'),
  ('saas_api.memory_embed(bigint, text, vector)')) g(name);
INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege) VALUES
  ('memory', 'function', 'memory_pending(text, integer)', 'EXECUTE'),
  ('memory', 'function', 'memory_forget(text)', 'EXECUTE'),
  ('memory', 'function', 'memory_half_life_from_langchain(double precision)', 'EXECUTE'),
  ('memory', 'function', 'memory_half_life_from_factor(double precision, interval)', 'EXECUTE'),
  ('memory', 'function', 'memory_half_life_from_elasticsearch(interval, double precision)', 'EXECUTE'),
  ('memory', 'function', '_echo(text)', 'EXECUTE'),
  ('memory', 'function', '_memory_vector_schema()', 'EXECUTE'),
  ('memory', 'function', '_memory_tenant()', 'EXECUTE'),
  ('memory', 'function', '_memory_model(text, boolean)', 'EXECUTE'),
  ('memory', 'function', '_memory_check_vector(text, text, integer, text)', 'EXECUTE'),
  ('memory', 'function', '_memory_log_write(text, integer, text, boolean, integer, integer, double precision, double precision, text[], text[], bigint[])', 'EXECUTE'),
  ('memory', 'function', '_memory_similarity(text, double precision)', 'EXECUTE'),
  ('memory', 'function', '_memory_recency(double precision, double precision, boolean, double precision)', 'EXECUTE'),
  ('memory', 'function', '_memory_row_score(double precision, double precision, double precision, double precision, text, double precision, double precision, double precision, boolean, double precision, double precision, double precision)', 'EXECUTE'),
  ('memory', 'function', '_memory_stream(text, anyelement, uuid, double precision[], double precision, jsonb, text[], double precision, text, timestamp with time zone, text[], integer, double precision[], bigint[], text, double precision)', 'EXECUTE'),
  ('memory', 'function', '_memory_tenant_index_name(text, uuid)', 'EXECUTE'),
  ('memory', 'function', '_memory_half_life_langchain(double precision)', 'EXECUTE'),
  ('memory', 'function', '_memory_half_life_factor(double precision, double precision)', 'EXECUTE'),
  ('memory', 'function', '_memory_half_life_elasticsearch(double precision, double precision)', 'EXECUTE'),
  ('memory', 'table', 'memories', 'SELECT'),
  ('memory', 'table', 'memories', 'UPDATE'),
  ('memory', 'table', 'memories', 'INSERT'),
  ('memory', 'table', 'memory_entities', 'SELECT'),
  ('memory', 'table', 'memory_entities', 'INSERT'),
  ('memory', 'table', 'memory_embeddings', 'SELECT'),
  ('memory', 'table', 'memory_embeddings', 'INSERT'),
  ('memory', 'table', 'memory_embeddings', 'UPDATE'),
  ('memory', 'table', 'memory_models', 'SELECT'),
  ('memory', 'table', 'memory_query_log', 'SELECT');

-- ---------------------------------------------------------------------------
-- The API surface (saas_api): thin wrappers PostgREST serves. Search by GET
-- runs read-only (no touch, no log; the explanation says so); by POST it may
-- refresh access and is logged.
-- ---------------------------------------------------------------------------
CREATE FUNCTION saas_api.memory_search(
  query vector, model text, k int DEFAULT 10, subjects text[] DEFAULT '{}', entities text[] DEFAULT '{}',
  weights jsonb DEFAULT '{}', half_life interval DEFAULT '30 days', half_lives jsonb DEFAULT '{}',
  evergreen_kinds text[] DEFAULT '{}', recency_floor float8 DEFAULT 0, age_from text DEFAULT 'event',
  touch boolean DEFAULT false)
RETURNS TABLE (memory_id bigint, subject text, kind text, content text, metadata jsonb,
               score float8, rank int, exact boolean, explanation jsonb)
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT * FROM @extschema@.memory_search(query, model, k, subjects, entities, weights, half_life, half_lives,
                                          evergreen_kinds, recency_floor, age_from, touch)
$$;
COMMENT ON FUNCTION saas_api.memory_search(vector, text, int, text[], text[], jsonb, interval, jsonb, text[], float8, text, boolean) IS
  'Your tenant''s top-k memories for a query vector, each with its explanation (saas.memory_search).';

CREATE FUNCTION saas_api.memory_add(
  content text, subject text DEFAULT NULL, kind text DEFAULT 'note', importance float8 DEFAULT 0.5,
  evergreen boolean DEFAULT false, entities text[] DEFAULT '{}', metadata jsonb DEFAULT '{}',
  event_at timestamptz DEFAULT NULL, model text DEFAULT NULL, embedding vector DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT @extschema@.memory_add(content, subject, kind, importance, evergreen, entities, metadata, event_at, model, embedding)
$$;
COMMENT ON FUNCTION saas_api.memory_add(text, text, text, float8, boolean, text[], jsonb, timestamptz, text, vector) IS
  'Adds a memory to your tenant, optionally with its embedding; returns its id (saas.memory_add).';

CREATE FUNCTION saas_api.memory_embed(memory_id bigint, model text, embedding vector)
RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.memory_embed(memory_id, model, embedding) $$;
COMMENT ON FUNCTION saas_api.memory_embed(bigint, text, vector) IS
  'Stores a memory''s embedding for a model (saas.memory_embed).';

CREATE FUNCTION saas_api.memory_pending(model text, max_rows int DEFAULT 1000)
RETURNS TABLE (memory_id bigint, kind text, content text, created_at timestamptz)
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.memory_pending(model, max_rows) $$;
COMMENT ON FUNCTION saas_api.memory_pending(text, int) IS
  'Your memories without an embedding for the model (saas.memory_pending).';

CREATE FUNCTION saas_api.memory_forget(subject text)
RETURNS jsonb
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.memory_forget(subject) $$;
COMMENT ON FUNCTION saas_api.memory_forget(text) IS
  'Erases a subject from your tenant''s memory, leaving nothing (saas.memory_forget).';

INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege) VALUES
  ('memory', 'function', 'saas_api.memory_pending(text, integer)', 'EXECUTE'),
  ('memory', 'function', 'saas_api.memory_forget(text)', 'EXECUTE');

-- memory: roles that grant_api served before (they can run current_tenant())
-- get the module's API rows, as grant_api now gives them.
DO $carry_memory$
DECLARE
  grantee regrole;
  g record;
BEGIN
  FOR grantee IN
    SELECT DISTINCT a.grantee::regrole
    FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
    WHERE p.oid = '@extschema@.current_tenant()'::regprocedure
      AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner
    ORDER BY 1
  LOOP
    FOR g IN SELECT a.object_kind, a.object_name, a.privilege FROM @extschema@.api_grants a
             WHERE a.module = 'memory' ORDER BY 1, 2, 3 LOOP
      IF g.object_kind = 'table' THEN
        EXECUTE pg_catalog.format('GRANT %s ON @extschema@.%I TO %s', g.privilege, g.object_name, grantee);
      ELSIF g.object_name LIKE 'saas\_api.%' THEN
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s', g.object_name, grantee);
      ELSE
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.%s TO %s', g.object_name, grantee);
      END IF;
    END LOOP;
  END LOOP;
END
$carry_memory$;

-- llm (new in 0.2.0): the Rust functions of src/llm/ as pgrx declares them,
-- then sql/llm.sql.
CREATE FUNCTION @extschema@."_llm_cost"(
  "prompt_tokens" bigint, /* i64 */
  "cached_read_tokens" bigint, /* i64 */
  "cache_write_tokens" bigint, /* i64 */
  "completion_tokens" bigint, /* i64 */
  "reasoning_tokens" bigint, /* i64 */
  "input_price" bigint, /* i64 */
  "cached_input_price" bigint, /* i64 */
  "cache_write_price" bigint, /* i64 */
  "output_price" bigint, /* i64 */
  "cached_subset" bool /* bool */
) RETURNS bigint /* i64 */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_llm_cost_wrapper';

CREATE FUNCTION @extschema@."_llm_count"(
  "kind" TEXT, /* & str */
  "tenant_id" uuid, /* pgrx :: Uuid */
  "day" INT, /* i32 */
  "id" TEXT, /* & str */
  "model" TEXT /* & str */
) RETURNS bool /* bool */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_llm_count_wrapper';

CREATE FUNCTION @extschema@."_llm_embedding_problem"(
  "embedding" real[] /* pgrx :: Array < '_, f32 > */
) RETURNS INT /* i32 */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_llm_embedding_problem_wrapper';

CREATE FUNCTION @extschema@."_llm_pending"() RETURNS TABLE (
  "kind" TEXT,  /* String */
  "tenant_id" uuid,  /* pgrx :: Uuid */
  "day" INT,  /* i32 */
  "id" TEXT,  /* String */
  "pending" bigint  /* i64 */
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_llm_pending_wrapper';

CREATE FUNCTION @extschema@."_llm_shared_counts"() RETURNS bool /* bool */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_llm_shared_counts_wrapper';

CREATE FUNCTION @extschema@."_llm_take"() RETURNS TABLE (
  "kind" TEXT,  /* String */
  "tenant_id" uuid,  /* pgrx :: Uuid */
  "day" INT,  /* i32 */
  "id" TEXT,  /* String */
  "pending" bigint  /* i64 */
)
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_llm_take_wrapper';

CREATE FUNCTION @extschema@."_llm_uncacheable"(
  "request" jsonb, /* JsonB */
  "response" jsonb, /* JsonB */
  "allow_nondeterministic" bool /* bool */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_llm_uncacheable_wrapper';

CREATE FUNCTION @extschema@."_llm_worst_case"(
  "prompt_tokens" bigint, /* i64 */
  "max_output_tokens" bigint, /* i64 */
  "input_price" bigint, /* i64 */
  "output_price" bigint /* i64 */
) RETURNS bigint /* i64 */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_llm_worst_case_wrapper';

CREATE FUNCTION @extschema@."llm_assemble_stream"(
  "chunks" jsonb /* JsonB */
) RETURNS jsonb /* JsonB */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'llm_assemble_stream_wrapper';

CREATE FUNCTION @extschema@."llm_cache_key"(
  "request" jsonb /* JsonB */
) RETURNS TEXT /* String */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'llm_cache_key_wrapper';

CREATE FUNCTION @extschema@."llm_context_hash"(
  "request" jsonb /* JsonB */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'llm_context_hash_wrapper';

-- pg_saas llm: an LLM response cache keyed by the SHA-256 of the RFC 8785
-- form of the request, single-flight leases for concurrent misses, a usage
-- ledger with daily rollups, versioned prices and budgets that cannot be
-- overspent. The key, the cost arithmetic, cacheability and the hit
-- counters in shared memory are Rust (src/llm/). docs/llm.md.

-- ---------------------------------------------------------------------------
-- Prices: micro-units of the currency per million tokens, per provider,
-- model and version. Global (a Citus reference table).
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.llm_prices (
  provider                    text        NOT NULL,
  model                       text        NOT NULL,
  effective_from              timestamptz NOT NULL,
  input_micros_per_mtok       bigint      NOT NULL,
  cached_input_micros_per_mtok bigint     NOT NULL,
  cache_write_micros_per_mtok bigint      NOT NULL,
  output_micros_per_mtok      bigint      NOT NULL,
  -- true: cached-read and cache-write tokens are counted inside the prompt
  -- tokens (OpenAI); false: apart from them (Anthropic).
  cached_subset               boolean     NOT NULL DEFAULT true,
  currency                    text        NOT NULL DEFAULT 'USD',
  CONSTRAINT llm_prices_pkey PRIMARY KEY (provider, model, effective_from),
  CONSTRAINT llm_prices_nonnegative CHECK (input_micros_per_mtok >= 0 AND cached_input_micros_per_mtok >= 0
                                           AND cache_write_micros_per_mtok >= 0 AND output_micros_per_mtok >= 0),
  CONSTRAINT llm_prices_names CHECK (char_length(provider) BETWEEN 1 AND 64 AND char_length(model) BETWEEN 1 AND 200),
  CONSTRAINT llm_prices_currency CHECK (currency ~ '^[A-Z]{3}$')
);
COMMENT ON TABLE @extschema@.llm_prices IS
  'LLM prices per provider, model and version (effective_from), in micro-units per million tokens. Set with saas.llm_price_set().';
ALTER TABLE @extschema@.llm_prices ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_prices', '');

-- ---------------------------------------------------------------------------
-- The cache: one row per tenant and key. Tenant rows, forced RLS; only the
-- functions of this module write (as the owner).
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.llm_cache (
  tenant_id          uuid        NOT NULL,
  cache_key          text        NOT NULL,
  provider           text,
  model              text        NOT NULL,
  request            jsonb       NOT NULL,
  response           jsonb       NOT NULL,
  prompt_tokens      bigint      NOT NULL DEFAULT 0,
  completion_tokens  bigint      NOT NULL DEFAULT 0,
  -- what the answer cost when it was computed: what each hit saves
  cost_micros        bigint,
  created_by         uuid,
  created_at         timestamptz NOT NULL,
  expires_at         timestamptz NOT NULL,
  hit_count          bigint      NOT NULL DEFAULT 0,
  last_hit_at        timestamptz,
  -- The semantic cache (set when the tenant's mode is shadow or on and the
  -- put passed an embedding): the context hash (saas.llm_context_hash), the
  -- tenant's embedding model and the embedding of the last user turn.
  context_hash       text,
  embedding_model    text,
  embedding          vector,
  CONSTRAINT llm_cache_pkey PRIMARY KEY (tenant_id, cache_key),
  CONSTRAINT llm_cache_key_format CHECK (cache_key ~ '^[0-9a-f]{64}$'),
  CONSTRAINT llm_cache_semantic CHECK ((context_hash IS NULL) = (embedding IS NULL) AND (embedding IS NULL) = (embedding_model IS NULL))
);
CREATE INDEX llm_cache_expires_idx ON @extschema@.llm_cache (expires_at);
-- The candidates of a semantic lookup: one tenant, context and embedding
-- model (few rows, scanned exactly; docs/llm.md says why not HNSW).
CREATE INDEX llm_cache_context_idx ON @extschema@.llm_cache (tenant_id, context_hash, embedding_model)
  WHERE context_hash IS NOT NULL;
COMMENT ON TABLE @extschema@.llm_cache IS
  'LLM responses per tenant and cache key (saas.llm_cache_key), with expiry and exact hit counts (flushed from shared memory by run_maintenance).';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_cache', '');

-- Single-flight: the caller holding a key's lease computes the answer; the
-- others are told to wait. Ephemeral, not dumped.
CREATE TABLE @extschema@.llm_cache_leases (
  tenant_id   uuid        NOT NULL,
  cache_key   text        NOT NULL,
  lease_id    uuid        NOT NULL,
  holder      uuid,
  expires_at  timestamptz NOT NULL,
  CONSTRAINT llm_cache_leases_pkey PRIMARY KEY (tenant_id, cache_key)
);
COMMENT ON TABLE @extschema@.llm_cache_leases IS
  'Single-flight leases of concurrent cache misses (saas.llm_cache_lease); released by llm_cache_put or when they expire.';

-- Hits and misses per tenant, UTC day and model, written by the flush.
CREATE TABLE @extschema@.llm_cache_daily (
  tenant_id     uuid   NOT NULL,
  day           date   NOT NULL,
  model         text   NOT NULL,
  hits          bigint NOT NULL DEFAULT 0,
  misses        bigint NOT NULL DEFAULT 0,
  tokens_saved  bigint NOT NULL DEFAULT 0,
  saved_micros  bigint NOT NULL DEFAULT 0,
  -- of hits: answers of the shared scope, and hits counted while the hit
  -- counters were full (per model, without their entry: no savings)
  shared_hits   bigint NOT NULL DEFAULT 0,
  overflow_hits bigint NOT NULL DEFAULT 0,
  CONSTRAINT llm_cache_daily_pkey PRIMARY KEY (tenant_id, day, model)
);
COMMENT ON TABLE @extschema@.llm_cache_daily IS
  'LLM cache hits, misses, tokens and money saved per tenant, UTC day and model; read with saas.llm_cache_stats().';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_cache_daily', '');

-- ---------------------------------------------------------------------------
-- The semantic cache: per-tenant opt-in (operators set it) and one row per
-- served or would-be (shadow) semantic hit with its similarity.
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.llm_semantic_settings (
  tenant_id        uuid        NOT NULL,
  mode             text        NOT NULL DEFAULT 'off',
  threshold        float8      NOT NULL DEFAULT 0.95,
  embedding_model  text,
  dims             int,
  updated_at       timestamptz NOT NULL,
  CONSTRAINT llm_semantic_settings_pkey PRIMARY KEY (tenant_id),
  CONSTRAINT llm_semantic_settings_mode CHECK (mode IN ('off', 'shadow', 'on')),
  CONSTRAINT llm_semantic_settings_threshold CHECK (threshold > 0 AND threshold <= 1),
  CONSTRAINT llm_semantic_settings_model CHECK (mode = 'off' OR (embedding_model IS NOT NULL AND dims BETWEEN 1 AND 16000))
);
COMMENT ON TABLE @extschema@.llm_semantic_settings IS
  'Semantic LLM cache per tenant: mode off, shadow (would-be hits recorded, misses served) or on; cosine similarity threshold; the embedding model and its dimension. Set with saas.llm_semantic_set().';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_semantic_settings', '');

CREATE TABLE @extschema@.llm_semantic_hits (
  tenant_id      uuid        NOT NULL,
  id             bigint      GENERATED ALWAYS AS IDENTITY,
  looked_up_at   timestamptz NOT NULL,
  model          text        NOT NULL,
  -- true: the entry was served; false: shadow mode, a miss was served
  served         boolean     NOT NULL,
  similarity     float8      NOT NULL,
  threshold      float8      NOT NULL,
  -- the entry served (or that would have been) and the lookup's own key:
  -- once the answer to lookup_key is cached, the two can be compared
  entry_key      text        NOT NULL,
  lookup_key     text        NOT NULL,
  tokens_saved   bigint      NOT NULL DEFAULT 0,
  saved_micros   bigint      NOT NULL DEFAULT 0,
  CONSTRAINT llm_semantic_hits_pkey PRIMARY KEY (tenant_id, id)
);
CREATE INDEX llm_semantic_hits_time_idx ON @extschema@.llm_semantic_hits (tenant_id, looked_up_at);
COMMENT ON TABLE @extschema@.llm_semantic_hits IS
  'Every semantic hit of the LLM cache, served or would-be (shadow), with its similarity and the entry; kept 90 days. Read with saas.llm_semantic_stats().';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_semantic_hits', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.llm_semantic_hits', 'id'), '');

-- ---------------------------------------------------------------------------
-- The shared scope: answers that hold no tenant data (a public prompt
-- template), one row per key for every tenant. Written only by roles an
-- operator named with saas.llm_shared_grant(); read only by
-- saas.llm_shared_get(), which a caller must call by name. No policy: API
-- roles have no privilege on the table and RLS hides it from anyone else.
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.llm_cache_shared (
  cache_key          text        NOT NULL,
  provider           text,
  model              text        NOT NULL,
  request            jsonb       NOT NULL,
  response           jsonb       NOT NULL,
  prompt_tokens      bigint      NOT NULL DEFAULT 0,
  completion_tokens  bigint      NOT NULL DEFAULT 0,
  cost_micros        bigint,
  written_by         text        NOT NULL,
  created_at         timestamptz NOT NULL,
  expires_at         timestamptz NOT NULL,
  hit_count          bigint      NOT NULL DEFAULT 0,
  last_hit_at        timestamptz,
  CONSTRAINT llm_cache_shared_pkey PRIMARY KEY (cache_key),
  CONSTRAINT llm_cache_shared_key_format CHECK (cache_key ~ '^[0-9a-f]{64}$')
);
COMMENT ON TABLE @extschema@.llm_cache_shared IS
  'LLM answers of the shared (non-tenant) scope: written by saas.llm_shared_put() (roles granted by saas.llm_shared_grant()), read by saas.llm_shared_get().';
ALTER TABLE @extschema@.llm_cache_shared ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_cache_shared', '');

-- ---------------------------------------------------------------------------
-- The usage ledger: one row per LLM call, monthly partitions (made on first
-- use and kept by run_maintenance; retention through
-- saas.create_monthly_partitions('saas.llm_usage', 'created_at', retention => ...)).
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.llm_usage (
  tenant_id           uuid        NOT NULL,
  usage_id            bigint      GENERATED ALWAYS AS IDENTITY,
  created_at          timestamptz NOT NULL,
  user_id             uuid,
  function_name       text,
  provider            text        NOT NULL,
  model               text        NOT NULL,
  prompt_tokens       bigint      NOT NULL DEFAULT 0,
  cached_read_tokens  bigint      NOT NULL DEFAULT 0,
  cache_write_tokens  bigint      NOT NULL DEFAULT 0,
  completion_tokens   bigint      NOT NULL DEFAULT 0,
  reasoning_tokens    bigint      NOT NULL DEFAULT 0,
  cost_micros         bigint      NOT NULL,
  -- the price version charged (NULL: the caller passed the cost)
  price_effective_from timestamptz,
  cache_hit           boolean     NOT NULL DEFAULT false,
  saved_micros        bigint      NOT NULL DEFAULT 0,
  latency_ms          integer,
  finish_reason       text,
  idempotency_key     text,
  reservation_id      bigint,
  -- No primary key on the parent: each partition gets (tenant_id,
  -- created_at, usage_id) from _llm_partition_hook, so pg_dump dumps the
  -- partitions (made outside CREATE EXTENSION) with their keys.
  CONSTRAINT llm_usage_nonnegative CHECK (prompt_tokens >= 0 AND cached_read_tokens >= 0 AND cache_write_tokens >= 0
                                          AND completion_tokens >= 0 AND reasoning_tokens >= 0
                                          AND cost_micros >= 0 AND saved_micros >= 0)
) PARTITION BY RANGE (created_at);
COMMENT ON TABLE @extschema@.llm_usage IS
  'One row per LLM call: tokens, cost in integer micro-units, cache hit, latency, finish reason. Written by saas.llm_record_usage().';
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.llm_usage', 'usage_id'), '');

-- Idempotency keys of the ledger (a partitioned table cannot hold a unique
-- key without the month); kept 35 days.
CREATE TABLE @extschema@.llm_usage_keys (
  tenant_id        uuid        NOT NULL,
  idempotency_key  text        NOT NULL,
  usage_id         bigint      NOT NULL,
  created_at       timestamptz NOT NULL,
  CONSTRAINT llm_usage_keys_pkey PRIMARY KEY (tenant_id, idempotency_key)
);
COMMENT ON TABLE @extschema@.llm_usage_keys IS
  'Idempotency keys of saas.llm_usage rows (35 days): a call recorded twice is one row.';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_usage_keys', '');

-- Daily rollups per tenant (UTC days), kept in the transaction that records.
CREATE TABLE @extschema@.llm_usage_daily (
  tenant_id           uuid   NOT NULL,
  day                 date   NOT NULL,
  provider            text   NOT NULL,
  model               text   NOT NULL,
  calls               bigint NOT NULL DEFAULT 0,
  cache_hits          bigint NOT NULL DEFAULT 0,
  prompt_tokens       bigint NOT NULL DEFAULT 0,
  cached_read_tokens  bigint NOT NULL DEFAULT 0,
  cache_write_tokens  bigint NOT NULL DEFAULT 0,
  completion_tokens   bigint NOT NULL DEFAULT 0,
  reasoning_tokens    bigint NOT NULL DEFAULT 0,
  cost_micros         bigint NOT NULL DEFAULT 0,
  saved_micros        bigint NOT NULL DEFAULT 0,
  CONSTRAINT llm_usage_daily_pkey PRIMARY KEY (tenant_id, day, provider, model)
);
COMMENT ON TABLE @extschema@.llm_usage_daily IS
  'LLM calls, tokens and cost per tenant, UTC day, provider and model, kept with each saas.llm_record_usage().';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_usage_daily', '');

-- ---------------------------------------------------------------------------
-- Budgets: per tenant (user_id NULL) or per user, per day or month in a
-- time zone; reservations hold worst-case cost until settled.
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.llm_budgets (
  tenant_id        uuid   NOT NULL,
  budget_id        bigint GENERATED ALWAYS AS IDENTITY,
  user_id          uuid,
  period           text   NOT NULL,
  max_cost_micros  bigint,
  max_tokens       bigint,
  time_zone        text   NOT NULL DEFAULT 'UTC',
  CONSTRAINT llm_budgets_pkey PRIMARY KEY (tenant_id, budget_id),
  CONSTRAINT llm_budgets_scope UNIQUE NULLS NOT DISTINCT (tenant_id, user_id, period),
  CONSTRAINT llm_budgets_period CHECK (period IN ('day', 'month')),
  CONSTRAINT llm_budgets_limits CHECK (max_cost_micros >= 0 AND max_tokens >= 0
                                       AND (max_cost_micros IS NOT NULL OR max_tokens IS NOT NULL))
);
COMMENT ON TABLE @extschema@.llm_budgets IS
  'LLM budgets per tenant (user_id NULL) or user: cost in micro-units and/or tokens per day or month in time_zone. Set with saas.llm_budget_set().';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_budgets', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.llm_budgets', 'budget_id'), '');

CREATE TABLE @extschema@.llm_budget_windows (
  tenant_id        uuid        NOT NULL,
  budget_id        bigint      NOT NULL,
  window_start     timestamptz NOT NULL,
  used_micros      bigint      NOT NULL DEFAULT 0,
  used_tokens      bigint      NOT NULL DEFAULT 0,
  reserved_micros  bigint      NOT NULL DEFAULT 0,
  reserved_tokens  bigint      NOT NULL DEFAULT 0,
  -- No foreign key to llm_budgets: pg_restore loads the dumped rows of
  -- extension tables in parallel, in any order. llm_budget_drop deletes a
  -- budget's windows.
  CONSTRAINT llm_budget_windows_pkey PRIMARY KEY (tenant_id, budget_id, window_start),
  CONSTRAINT llm_budget_windows_nonnegative CHECK (used_micros >= 0 AND used_tokens >= 0
                                                   AND reserved_micros >= 0 AND reserved_tokens >= 0)
);
COMMENT ON TABLE @extschema@.llm_budget_windows IS
  'Use and reservations of each LLM budget per day or month window.';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_budget_windows', '');

CREATE TABLE @extschema@.llm_reservations (
  tenant_id        uuid        NOT NULL,
  reservation_id   bigint      GENERATED ALWAYS AS IDENTITY,
  user_id          uuid,
  provider         text        NOT NULL,
  model            text        NOT NULL,
  -- the budget windows held: budget_ids[i] in window_starts[i]
  budget_ids       bigint[]    NOT NULL,
  window_starts    timestamptz[] NOT NULL,
  reserved_micros  bigint      NOT NULL,
  reserved_tokens  bigint      NOT NULL,
  created_at       timestamptz NOT NULL,
  expires_at       timestamptz NOT NULL,
  released_at      timestamptz,
  settled_at       timestamptz,
  actual_micros    bigint,
  actual_tokens    bigint,
  CONSTRAINT llm_reservations_pkey PRIMARY KEY (tenant_id, reservation_id)
);
COMMENT ON TABLE @extschema@.llm_reservations IS
  'Worst-case cost held by saas.llm_budget_reserve() until settled (llm_budget_settle, llm_record_usage) or expired (released by run_maintenance).';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_reservations', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.llm_reservations', 'reservation_id'), '');

-- Tenant tables: forced RLS, a tenant reads its own rows; the functions of
-- this module write as the owner.
DO $rls$
DECLARE
  rel regclass;
BEGIN
  FOREACH rel IN ARRAY ARRAY['@extschema@.llm_cache'::regclass, '@extschema@.llm_cache_leases'::regclass,
                             '@extschema@.llm_cache_daily'::regclass, '@extschema@.llm_usage'::regclass,
                             '@extschema@.llm_usage_keys'::regclass, '@extschema@.llm_usage_daily'::regclass,
                             '@extschema@.llm_budgets'::regclass, '@extschema@.llm_budget_windows'::regclass,
                             '@extschema@.llm_reservations'::regclass, '@extschema@.llm_semantic_settings'::regclass,
                             '@extschema@.llm_semantic_hits'::regclass] LOOP
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', rel);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', rel);
    EXECUTE format('CREATE POLICY saas_tenant_read ON %s FOR SELECT USING (tenant_id = (SELECT @extschema@.current_tenant()))', rel);
  END LOOP;
END
$rls$;

-- ---------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@._llm_tenant(fn text)
RETURNS uuid
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@.current_tenant();
BEGIN
  IF t IS NULL THEN
    RAISE EXCEPTION '%: there is no current tenant', fn
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'Call it inside a request with a tenant (JWT claim or X-Tenant-Id), or after saas.set_tenant() in a job.';
  END IF;
  RETURN t;
END
$$;

CREATE FUNCTION @extschema@._llm_request(fn text, request jsonb)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF request IS NULL THEN
    RAISE EXCEPTION '%: request must not be NULL', fn
      USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass the request body as sent to the provider, e.g. ''{"model": "gpt-4o", "messages": [...]}''.';
  END IF;
  IF jsonb_typeof(request -> 'model') IS DISTINCT FROM 'string' THEN
    RAISE EXCEPTION '%: the request has no "model" string', fn
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass the whole request as sent to the provider, model included.';
  END IF;
  RETURN request ->> 'model';
END
$$;

-- UTC days since 2000-01-01, as the shared-memory counters keep days.
CREATE FUNCTION @extschema@._llm_day(ts timestamptz)
RETURNS int
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN (ts AT TIME ZONE 'UTC')::date - DATE '2000-01-01';

-- A hit, a hit of the shared scope or a miss: in shared memory when
-- preloaded (exact also in READ ONLY transactions; a hit of a full table
-- per model in the overflow slots), else in the tables (read-write
-- transactions only).
CREATE FUNCTION @extschema@._llm_count_lookup(t uuid, kind text, key text, model text, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  tokens bigint := 0;
  saved bigint := 0;
BEGIN
  IF @extschema@._llm_count(kind, t, @extschema@._llm_day(p_now), CASE WHEN kind = 'miss' THEN model ELSE key END, model) THEN
    RETURN;
  END IF;
  IF current_setting('transaction_read_only') = 'on' THEN
    RAISE EXCEPTION 'llm_cache_get cannot count this lookup in a read-only transaction'
      USING ERRCODE = CASE WHEN @extschema@._llm_shared_counts() THEN 'insufficient_resources' ELSE 'read_only_sql_transaction' END,
            HINT = CASE WHEN @extschema@._llm_shared_counts()
                        THEN 'The shared-memory hit counters and their overflow slots are full: run saas.run_maintenance() more often or raise saas.llm_hit_slots.'
                        ELSE 'Add pg_saas to shared_preload_libraries and restart PostgreSQL: hits are then counted in shared memory, also in PostgREST GET requests.' END;
  END IF;
  IF kind = 'hit' THEN
    UPDATE @extschema@.llm_cache c SET hit_count = c.hit_count + 1, last_hit_at = p_now
    WHERE c.tenant_id = t AND c.cache_key = key
    RETURNING c.prompt_tokens + c.completion_tokens, coalesce(c.cost_micros, 0) INTO tokens, saved;
  ELSIF kind = 'shared' THEN
    UPDATE @extschema@.llm_cache_shared c SET hit_count = c.hit_count + 1, last_hit_at = p_now
    WHERE c.cache_key = key
    RETURNING c.prompt_tokens + c.completion_tokens, coalesce(c.cost_micros, 0) INTO tokens, saved;
  END IF;
  INSERT INTO @extschema@.llm_cache_daily AS d (tenant_id, day, model, hits, misses, shared_hits, tokens_saved, saved_micros)
  VALUES (t, (p_now AT TIME ZONE 'UTC')::date, model, (kind <> 'miss')::int, (kind = 'miss')::int, (kind = 'shared')::int,
          coalesce(tokens, 0), coalesce(saved, 0))
  ON CONFLICT ON CONSTRAINT llm_cache_daily_pkey DO UPDATE SET
    hits = d.hits + EXCLUDED.hits, misses = d.misses + EXCLUDED.misses, shared_hits = d.shared_hits + EXCLUDED.shared_hits,
    tokens_saved = d.tokens_saved + EXCLUDED.tokens_saved, saved_micros = d.saved_micros + EXCLUDED.saved_micros;
END
$$;

-- pgvector's schema, quoted, at call time (it may live in any schema:
-- Supabase puts it in extensions).
CREATE FUNCTION @extschema@._llm_vector_schema()
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  s text;
BEGIN
  SELECT pg_catalog.quote_ident(n.nspname) INTO s
  FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
  WHERE e.extname = 'vector';
  IF s IS NULL THEN
    RAISE EXCEPTION 'pgvector is not installed'
      USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'CREATE EXTENSION vector (pg_saas requires it).';
  END IF;
  RETURN s;
END
$$;

-- An embedding of the tenant's model: one dimension, its size, finite,
-- not all zero (a zero vector has no direction: its cosine is undefined).
CREATE FUNCTION @extschema@._llm_check_embedding(fn text, embedding real[], p_model text, p_dims int)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  problem int;
BEGIN
  IF array_ndims(embedding) IS DISTINCT FROM 1 THEN
    RAISE EXCEPTION '%: the embedding must be a one-dimensional array, not one of % dimensions', fn, coalesce(array_ndims(embedding), 0)
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the vector as a flat array of numbers, e.g. ''{0.12, -0.5, ...}'' (JSON: [0.12, -0.5, ...]).';
  END IF;
  IF cardinality(embedding) <> p_dims THEN
    RAISE EXCEPTION '%: the embedding has % dimensions, the tenant''s embedding model % has %',
      fn, coalesce(cardinality(embedding), 0), @extschema@._echo(p_model), p_dims
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Embed the last user turn with the model of saas.llm_semantic_set(); vectors are never truncated or padded.';
  END IF;
  problem := @extschema@._llm_embedding_problem(embedding);
  IF problem = 1 THEN
    RAISE EXCEPTION '%: the embedding holds NULL, NaN or infinity', fn
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Every element of an embedding must be a finite number.';
  END IF;
  IF problem = 2 THEN
    RAISE EXCEPTION '%: the embedding is all zeros', fn
      USING ERRCODE = 'invalid_parameter_value', HINT = 'A zero vector has no direction, so no cosine similarity: pass the model''s embedding.';
  END IF;
END
$$;

-- ---------------------------------------------------------------------------
-- The cache
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.llm_cache_get(request jsonb, p_now timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@.current_tenant();
  now_ts timestamptz := coalesce(p_now, now());
  k text;
  resp jsonb;
BEGIN
  -- The hit path, kept short: the checks' helpers run only to raise.
  IF request IS NULL OR jsonb_typeof(request -> 'model') IS DISTINCT FROM 'string' THEN
    PERFORM @extschema@._llm_request('llm_cache_get', request);
  END IF;
  IF t IS NULL THEN
    PERFORM @extschema@._llm_tenant('llm_cache_get');
  END IF;
  k := @extschema@.llm_cache_key(request);
  SELECT c.response INTO resp FROM @extschema@.llm_cache c
  WHERE c.tenant_id = t AND c.cache_key = k AND c.expires_at > now_ts;
  IF NOT @extschema@._llm_count(CASE WHEN resp IS NULL THEN 'miss' ELSE 'hit' END, t,
                                (now_ts AT TIME ZONE 'UTC')::date - DATE '2000-01-01',
                                CASE WHEN resp IS NULL THEN request ->> 'model' ELSE k END, request ->> 'model') THEN
    PERFORM @extschema@._llm_count_lookup(t, CASE WHEN resp IS NULL THEN 'miss' ELSE 'hit' END, k, request ->> 'model', now_ts);
  END IF;
  RETURN resp;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_cache_get(jsonb, timestamptz) IS
  'The current tenant''s live cached response to this request, or NULL; counts the hit (or miss) exactly, also in a read-only transaction when pg_saas is preloaded.';

CREATE FUNCTION @extschema@.llm_cache_lease(request jsonb, lease_seconds int DEFAULT 60, p_now timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  model text := @extschema@._llm_request('llm_cache_lease', request);
  t uuid := @extschema@._llm_tenant('llm_cache_lease');
  k text := @extschema@.llm_cache_key(request);
  now_ts timestamptz := coalesce(p_now, now());
  resp jsonb;
  lease uuid;
  held_until timestamptz;
BEGIN
  IF lease_seconds IS NULL OR lease_seconds < 1 OR lease_seconds > 3600 THEN
    RAISE EXCEPTION 'llm_cache_lease: lease_seconds must be between 1 and 3600, not %', coalesce(lease_seconds::text, 'NULL')
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Give the time the call may take at most, e.g. 60.';
  END IF;
  SELECT c.response INTO resp FROM @extschema@.llm_cache c
  WHERE c.tenant_id = t AND c.cache_key = k AND c.expires_at > now_ts;
  IF resp IS NOT NULL THEN
    PERFORM @extschema@._llm_count_lookup(t, 'hit', k, model, now_ts);
    RETURN jsonb_build_object('status', 'hit', 'cache_key', k, 'response', resp);
  END IF;
  -- One atomic statement: a new lease, or a lapsed one taken over; a live
  -- lease of another caller leaves nothing returned.
  INSERT INTO @extschema@.llm_cache_leases AS l (tenant_id, cache_key, lease_id, holder, expires_at)
  VALUES (t, k, gen_random_uuid(), @extschema@.current_user_id(), now_ts + make_interval(secs => lease_seconds))
  ON CONFLICT ON CONSTRAINT llm_cache_leases_pkey DO UPDATE SET
    lease_id = EXCLUDED.lease_id, holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
    WHERE l.expires_at <= now_ts
  RETURNING l.lease_id INTO lease;
  IF lease IS NOT NULL THEN
    PERFORM @extschema@._llm_count_lookup(t, 'miss', k, model, now_ts);
    RETURN jsonb_build_object('status', 'lease', 'cache_key', k, 'lease_id', lease,
                              'expires_at', now_ts + make_interval(secs => lease_seconds));
  END IF;
  SELECT l.expires_at INTO held_until FROM @extschema@.llm_cache_leases l WHERE l.tenant_id = t AND l.cache_key = k;
  RETURN jsonb_build_object('status', 'wait', 'cache_key', k, 'lease_expires_at', held_until,
                            'retry_after_ms', least(1000, greatest(50, (extract(epoch FROM held_until - now_ts) * 1000)::int)));
END
$$;
COMMENT ON FUNCTION @extschema@.llm_cache_lease(jsonb, int, timestamptz) IS
  'Single-flight lookup: {"status":"hit","response"} when cached, {"status":"lease","lease_id"} for the one caller that should compute the answer (pass lease_id to llm_cache_put), {"status":"wait","retry_after_ms"} for the others.';

-- The token counts and cost of an answer being stored (llm_cache_put,
-- llm_shared_put): from the usage object given, else the response's; the
-- cost given, else priced at now_ts from llm_prices when the provider is
-- known. Errors name fn, the function the caller called.
CREATE FUNCTION @extschema@._llm_put_usage(fn text, usage jsonb, response jsonb, provider text, model text,
                                           now_ts timestamptz, OUT pt bigint, OUT ct bigint, OUT cost bigint)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  u jsonb := coalesce(usage, response -> 'usage', '{}');
BEGIN
  IF jsonb_typeof(u) IS DISTINCT FROM 'object' THEN
    RAISE EXCEPTION '%: usage must be a JSON object', fn
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the provider''s usage object, e.g. {"prompt_tokens": 12, "completion_tokens": 40}.';
  END IF;
  BEGIN
    pt := coalesce((u ->> 'prompt_tokens')::bigint, (u ->> 'input_tokens')::bigint, 0);
    ct := coalesce((u ->> 'completion_tokens')::bigint, (u ->> 'output_tokens')::bigint, 0);
    cost := (u ->> 'cost_micros')::bigint;
  EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range THEN
    RAISE EXCEPTION '%: usage token counts must be integers', fn
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the provider''s usage object unchanged.';
  END;
  IF pt < 0 OR ct < 0 OR cost < 0 THEN
    RAISE EXCEPTION '%: usage must not be negative', fn
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Pass the token counts the provider reported.';
  END IF;
  IF cost IS NULL AND _llm_put_usage.provider IS NOT NULL THEN
    SELECT @extschema@._llm_cost(pt, 0, 0, ct, 0, p.input_micros_per_mtok, p.cached_input_micros_per_mtok,
                                 p.cache_write_micros_per_mtok, p.output_micros_per_mtok, true)
    INTO cost
    FROM @extschema@.llm_prices p
    WHERE p.provider = _llm_put_usage.provider AND p.model = _llm_put_usage.model AND p.effective_from <= now_ts
    ORDER BY p.effective_from DESC LIMIT 1;
  END IF;
END
$$;

CREATE FUNCTION @extschema@.llm_cache_put(
  request jsonb,
  response jsonb,
  usage jsonb DEFAULT NULL,
  ttl interval DEFAULT '7 days',
  allow_nondeterministic boolean DEFAULT false,
  lease_id uuid DEFAULT NULL,
  provider text DEFAULT NULL,
  embedding real[] DEFAULT NULL,
  p_now timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  req_model text := @extschema@._llm_request('llm_cache_put', request);
  t uuid := @extschema@._llm_tenant('llm_cache_put');
  k text := @extschema@.llm_cache_key(request);
  now_ts timestamptz := coalesce(p_now, now());
  why text;
  pt bigint;
  ct bigint;
  cost bigint;
  sem @extschema@.llm_semantic_settings%ROWTYPE;
  ctx text;
BEGIN
  IF response IS NULL THEN
    RAISE EXCEPTION 'llm_cache_put: response must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the provider''s response (for a stream, saas.llm_assemble_stream(chunks)).';
  END IF;
  IF ttl IS NULL OR ttl <= interval '0' THEN
    RAISE EXCEPTION 'llm_cache_put: ttl must be positive, not %', coalesce(ttl::text, 'NULL')
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Give how long the answer stays valid, e.g. ''7 days'' (the default).';
  END IF;
  IF ttl > interval '10 years' THEN
    RAISE EXCEPTION 'llm_cache_put: ttl % is over 10 years', ttl
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Give a ttl of at most ''10 years''.';
  END IF;
  -- The lease is released whatever happens to the answer.
  IF lease_id IS NOT NULL THEN
    DELETE FROM @extschema@.llm_cache_leases l
    WHERE l.tenant_id = t AND l.cache_key = k AND l.lease_id = llm_cache_put.lease_id;
  END IF;
  why := @extschema@._llm_uncacheable(request, response, coalesce(allow_nondeterministic, false));
  IF why IS NOT NULL THEN
    RETURN jsonb_build_object('cached', false, 'cache_key', k, 'reason', why);
  END IF;
  SELECT x.pt, x.ct, x.cost INTO pt, ct, cost
  FROM @extschema@._llm_put_usage('llm_cache_put', usage, response, provider, req_model, now_ts) x;
  -- The semantic cache keeps the embedding when the tenant opted in (shadow
  -- or on) and the request has a user turn; otherwise it is ignored.
  IF embedding IS NOT NULL THEN
    SELECT * INTO sem FROM @extschema@.llm_semantic_settings x WHERE x.tenant_id = t AND x.mode <> 'off';
    IF FOUND THEN
      PERFORM @extschema@._llm_check_embedding('llm_cache_put', embedding, sem.embedding_model, sem.dims);
      ctx := @extschema@.llm_context_hash(request);
    END IF;
  END IF;
  INSERT INTO @extschema@.llm_cache AS c (tenant_id, cache_key, provider, model, request, response, prompt_tokens,
                                          completion_tokens, cost_micros, created_by, created_at, expires_at,
                                          context_hash, embedding_model, embedding)
  VALUES (t, k, provider, req_model, request, response, pt, ct, cost, @extschema@.current_user_id(), now_ts, now_ts + ttl,
          ctx, CASE WHEN ctx IS NOT NULL THEN sem.embedding_model END, CASE WHEN ctx IS NOT NULL THEN embedding END)
  ON CONFLICT ON CONSTRAINT llm_cache_pkey DO UPDATE SET
    provider = EXCLUDED.provider, model = EXCLUDED.model, request = EXCLUDED.request, response = EXCLUDED.response,
    prompt_tokens = EXCLUDED.prompt_tokens, completion_tokens = EXCLUDED.completion_tokens,
    cost_micros = EXCLUDED.cost_micros, created_by = EXCLUDED.created_by, created_at = EXCLUDED.created_at,
    expires_at = EXCLUDED.expires_at, context_hash = EXCLUDED.context_hash, embedding_model = EXCLUDED.embedding_model,
    embedding = EXCLUDED.embedding;
  RETURN jsonb_build_object('cached', true, 'cache_key', k, 'expires_at', now_ts + ttl, 'semantic', ctx IS NOT NULL);
END
$$;
COMMENT ON FUNCTION @extschema@.llm_cache_put(jsonb, jsonb, jsonb, interval, boolean, uuid, text, real[], timestamptz) IS
  'Stores a finished, deterministic answer for the current tenant (ttl default 7 days), with the embedding of its last user turn for the semantic cache when the tenant opted in; releases the lease. Returns {"cached": true|false, "cache_key", "reason", "semantic"}.';

-- ---------------------------------------------------------------------------
-- The semantic cache
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.llm_semantic_set(
  tenant uuid,
  mode text,
  threshold float8 DEFAULT 0.95,
  embedding_model text DEFAULT NULL,
  dims int DEFAULT NULL,
  p_now timestamptz DEFAULT now())
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF tenant IS NULL OR mode IS NULL OR threshold IS NULL THEN
    RAISE EXCEPTION 'llm_semantic_set: tenant, mode and threshold must not be NULL'
      USING ERRCODE = 'null_value_not_allowed',
            HINT = 'e.g. saas.llm_semantic_set(tenant, ''shadow'', embedding_model => ''text-embedding-3-small'', dims => 1536).';
  END IF;
  IF mode NOT IN ('off', 'shadow', 'on') THEN
    RAISE EXCEPTION 'llm_semantic_set: mode must be off, shadow or on, not %', @extschema@._echo(mode)
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Start with shadow: would-be hits are recorded with their similarity, misses still served.';
  END IF;
  IF threshold = 'NaN'::float8 OR threshold <= 0 OR threshold > 1 THEN
    RAISE EXCEPTION 'llm_semantic_set: threshold must be in (0, 1], not %', threshold
      USING ERRCODE = 'numeric_value_out_of_range',
            HINT = 'A cosine similarity; the default 0.95 is strict (docs/llm.md), lower it only after measuring in shadow mode.';
  END IF;
  IF mode <> 'off' AND (embedding_model IS NULL OR dims IS NULL) THEN
    RAISE EXCEPTION 'llm_semantic_set: mode % needs embedding_model and dims', mode
      USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Name the model the caller embeds with and its dimension, e.g. embedding_model => ''text-embedding-3-small'', dims => 1536.';
  END IF;
  IF dims NOT BETWEEN 1 AND 16000 THEN
    RAISE EXCEPTION 'llm_semantic_set: dims must be between 1 and 16000, not %', dims
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'pgvector stores vectors of 1 to 16000 dimensions.';
  END IF;
  IF char_length(embedding_model) NOT BETWEEN 1 AND 200 THEN
    RAISE EXCEPTION 'llm_semantic_set: embedding_model must have 1 to 200 characters'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Name the embedding model, e.g. ''text-embedding-3-small''.';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM @extschema@.tenants x WHERE x.id = tenant) THEN
    RAISE EXCEPTION 'llm_semantic_set: unknown tenant %', tenant
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the id of a row of saas.tenants.';
  END IF;
  INSERT INTO @extschema@.llm_semantic_settings AS x (tenant_id, mode, threshold, embedding_model, dims, updated_at)
  VALUES (tenant, mode, threshold, embedding_model, dims, coalesce(p_now, now()))
  ON CONFLICT ON CONSTRAINT llm_semantic_settings_pkey DO UPDATE SET
    mode = EXCLUDED.mode, threshold = EXCLUDED.threshold,
    embedding_model = coalesce(EXCLUDED.embedding_model, x.embedding_model), dims = coalesce(EXCLUDED.dims, x.dims),
    updated_at = EXCLUDED.updated_at;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_semantic_set(uuid, text, float8, text, int, timestamptz) IS
  'Sets a tenant''s semantic LLM cache: mode off, shadow (would-be hits recorded, misses served) or on, the cosine similarity threshold (default 0.95), the embedding model and its dimension. For operators.';

CREATE FUNCTION @extschema@.llm_cache_lookup(request jsonb, embedding real[] DEFAULT NULL, p_now timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  model text := @extschema@._llm_request('llm_cache_lookup', request);
  t uuid := @extschema@._llm_tenant('llm_cache_lookup');
  now_ts timestamptz := coalesce(p_now, now());
  k text := @extschema@.llm_cache_key(request);
  resp jsonb;
  sem @extschema@.llm_semantic_settings%ROWTYPE;
  ctx text;
  best record;
BEGIN
  SELECT c.response INTO resp FROM @extschema@.llm_cache c
  WHERE c.tenant_id = t AND c.cache_key = k AND c.expires_at > now_ts;
  IF resp IS NOT NULL THEN
    PERFORM @extschema@._llm_count_lookup(t, 'hit', k, model, now_ts);
    RETURN jsonb_build_object('match', 'exact', 'cache_key', k, 'response', resp);
  END IF;
  IF embedding IS NOT NULL THEN
    SELECT * INTO sem FROM @extschema@.llm_semantic_settings x WHERE x.tenant_id = t AND x.mode <> 'off';
    IF FOUND THEN
      PERFORM @extschema@._llm_check_embedding('llm_cache_lookup', embedding, sem.embedding_model, sem.dims);
      ctx := @extschema@.llm_context_hash(request);
    END IF;
  END IF;
  IF ctx IS NOT NULL THEN
    IF current_setting('transaction_read_only') = 'on' THEN
      RAISE EXCEPTION 'llm_cache_lookup records semantic hits and cannot run in a read-only transaction'
        USING ERRCODE = 'read_only_sql_transaction',
              HINT = 'Call it by POST (a GET runs read-only), or leave the embedding out for an exact lookup.';
    END IF;
    -- The candidates: this tenant's live entries of the same context and
    -- embedding model (the index's prefix), compared exactly.
    EXECUTE pg_catalog.format(
      'SELECT c.cache_key, c.response, c.prompt_tokens + c.completion_tokens AS tokens, coalesce(c.cost_micros, 0) AS cost,'
      ' 1 - (c.embedding OPERATOR(%1$s.<=>) $1::%1$s.vector) AS similarity'
      ' FROM @extschema@.llm_cache c'
      ' WHERE c.tenant_id = $2 AND c.context_hash = $3 AND c.embedding_model = $4 AND c.expires_at > $5'
      ' AND %1$s.vector_dims(c.embedding) = $6'
      ' ORDER BY similarity DESC, c.cache_key LIMIT 1', @extschema@._llm_vector_schema())
    INTO best USING embedding, t, ctx, sem.embedding_model, now_ts, sem.dims;
    IF best.similarity >= sem.threshold THEN
      INSERT INTO @extschema@.llm_semantic_hits (tenant_id, looked_up_at, model, served, similarity, threshold, entry_key,
                                                 lookup_key, tokens_saved, saved_micros)
      VALUES (t, now_ts, model, sem.mode = 'on', best.similarity, sem.threshold, best.cache_key, k,
              CASE WHEN sem.mode = 'on' THEN best.tokens ELSE 0 END, CASE WHEN sem.mode = 'on' THEN best.cost ELSE 0 END);
      IF sem.mode = 'on' THEN
        UPDATE @extschema@.llm_cache c SET hit_count = c.hit_count + 1, last_hit_at = now_ts
        WHERE c.tenant_id = t AND c.cache_key = best.cache_key;
        RETURN jsonb_build_object('match', 'semantic', 'cache_key', best.cache_key, 'similarity', best.similarity,
                                  'response', best.response);
      END IF;
    END IF;
  END IF;
  PERFORM @extschema@._llm_count_lookup(t, 'miss', k, model, now_ts);
  RETURN NULL;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_cache_lookup(jsonb, real[], timestamptz) IS
  'The current tenant''s cached answer: exact, else (semantic cache on, an embedding of the last user turn given) the most similar entry of the same context above the threshold; {"match": "exact"|"semantic", "cache_key", "similarity", "response"} or NULL. Shadow mode records would-be hits and returns NULL.';

CREATE FUNCTION @extschema@.llm_semantic_stats(
  p_from date DEFAULT (now() AT TIME ZONE 'UTC')::date - 29,
  p_to date DEFAULT (now() AT TIME ZONE 'UTC')::date)
RETURNS TABLE (model text, served boolean, similarity_from numeric, similarity_to numeric, hits bigint,
               min_similarity float8, tokens_saved bigint, saved_micros bigint)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._llm_tenant('llm_semantic_stats');
BEGIN
  IF p_from IS NULL OR p_to IS NULL THEN
    RAISE EXCEPTION 'llm_semantic_stats: p_from and p_to must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass a range of UTC days, or leave them out for the last 30 days.';
  END IF;
  IF p_from > p_to THEN
    RAISE EXCEPTION 'llm_semantic_stats: p_from % is after p_to %', p_from, p_to
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the earlier day first.';
  END IF;
  RETURN QUERY
  SELECT h.model, h.served, b.lo, (b.lo + 0.01)::numeric(3, 2), count(*), min(h.similarity), sum(h.tokens_saved)::bigint,
         sum(h.saved_micros)::bigint
  FROM @extschema@.llm_semantic_hits h,
       LATERAL (SELECT (least(floor(h.similarity * 100), 99) / 100)::numeric(3, 2) AS lo) b
  WHERE h.tenant_id = t
    AND h.looked_up_at >= p_from::timestamp AT TIME ZONE 'UTC' AND h.looked_up_at < (p_to + 1)::timestamp AT TIME ZONE 'UTC'
  GROUP BY h.model, h.served, b.lo
  ORDER BY h.model, h.served, b.lo;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_semantic_stats(date, date) IS
  'The current tenant''s semantic hits per model, served or shadow (would-be), in similarity buckets of 0.01, with the lowest similarity and the savings; judge the false-hit rate from the shadow rows before turning the cache on.';

-- ---------------------------------------------------------------------------
-- The shared scope
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.llm_shared_put(
  request jsonb,
  response jsonb,
  usage jsonb DEFAULT NULL,
  ttl interval DEFAULT '7 days',
  allow_nondeterministic boolean DEFAULT false,
  provider text DEFAULT NULL,
  p_now timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  req_model text := @extschema@._llm_request('llm_shared_put', request);
  k text := @extschema@.llm_cache_key(request);
  now_ts timestamptz := coalesce(p_now, now());
  who text := coalesce(nullif(current_setting('role'), 'none'), session_user::text);
  why text;
  pt bigint;
  ct bigint;
  cost bigint;
BEGIN
  IF response IS NULL THEN
    RAISE EXCEPTION 'llm_shared_put: response must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the provider''s response (for a stream, saas.llm_assemble_stream(chunks)).';
  END IF;
  IF ttl IS NULL OR ttl <= interval '0' OR ttl > interval '10 years' THEN
    RAISE EXCEPTION 'llm_shared_put: ttl must be positive and at most 10 years, not %', coalesce(ttl::text, 'NULL')
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Give how long the answer stays valid, e.g. ''7 days'' (the default).';
  END IF;
  why := @extschema@._llm_uncacheable(request, response, coalesce(allow_nondeterministic, false));
  IF why IS NOT NULL THEN
    RETURN jsonb_build_object('cached', false, 'cache_key', k, 'reason', why);
  END IF;
  SELECT x.pt, x.ct, x.cost INTO pt, ct, cost
  FROM @extschema@._llm_put_usage('llm_shared_put', usage, response, provider, req_model, now_ts) x;
  INSERT INTO @extschema@.llm_cache_shared AS c (cache_key, provider, model, request, response, prompt_tokens,
                                                 completion_tokens, cost_micros, written_by, created_at, expires_at)
  VALUES (k, provider, req_model, request, response, pt, ct, cost, who, now_ts, now_ts + ttl)
  ON CONFLICT ON CONSTRAINT llm_cache_shared_pkey DO UPDATE SET
    provider = EXCLUDED.provider, model = EXCLUDED.model, request = EXCLUDED.request, response = EXCLUDED.response,
    prompt_tokens = EXCLUDED.prompt_tokens, completion_tokens = EXCLUDED.completion_tokens,
    cost_micros = EXCLUDED.cost_micros, written_by = EXCLUDED.written_by, created_at = EXCLUDED.created_at,
    expires_at = EXCLUDED.expires_at;
  RETURN jsonb_build_object('cached', true, 'cache_key', k, 'expires_at', now_ts + ttl, 'scope', 'shared');
END
$$;
COMMENT ON FUNCTION @extschema@.llm_shared_put(jsonb, jsonb, jsonb, interval, boolean, text, timestamptz) IS
  'Stores an answer that holds no tenant data in the shared LLM cache scope, read by every tenant through saas.llm_shared_get(). Only for roles given saas.llm_shared_grant().';

CREATE FUNCTION @extschema@.llm_shared_get(request jsonb, p_now timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@.current_tenant();
  now_ts timestamptz := coalesce(p_now, now());
  k text;
  resp jsonb;
BEGIN
  IF request IS NULL OR jsonb_typeof(request -> 'model') IS DISTINCT FROM 'string' THEN
    PERFORM @extschema@._llm_request('llm_shared_get', request);
  END IF;
  IF t IS NULL THEN
    PERFORM @extschema@._llm_tenant('llm_shared_get');
  END IF;
  k := @extschema@.llm_cache_key(request);
  SELECT c.response INTO resp FROM @extschema@.llm_cache_shared c WHERE c.cache_key = k AND c.expires_at > now_ts;
  PERFORM @extschema@._llm_count_lookup(t, CASE WHEN resp IS NULL THEN 'miss' ELSE 'shared' END, k, request ->> 'model', now_ts);
  RETURN resp;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_shared_get(jsonb, timestamptz) IS
  'The live answer of the shared (non-tenant) LLM cache scope to this request, or NULL; never a tenant''s entry. Counted for the current tenant (shared_hits of llm_cache_stats).';

CREATE FUNCTION @extschema@.llm_shared_grant(roles name[])
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r name;
BEGIN
  IF roles IS NULL OR cardinality(roles) = 0 THEN
    RAISE EXCEPTION 'llm_shared_grant: roles must be a non-empty array'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. saas.llm_shared_grant(''{service_role}''): never a role end users act as.';
  END IF;
  FOREACH r IN ARRAY roles LOOP
    IF r IS NULL THEN
      RAISE EXCEPTION 'llm_shared_grant: a role name is NULL'
        USING ERRCODE = 'null_value_not_allowed', HINT = 'Name existing roles.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles x WHERE x.rolname = r) THEN
      RAISE EXCEPTION 'llm_shared_grant: role % does not exist', @extschema@._echo(r)
        USING ERRCODE = 'undefined_object', HINT = 'CREATE ROLE ... NOLOGIN first, or name the deployment''s service role.';
    END IF;
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA @extschema@, saas_api TO %I', r);
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.llm_shared_put(jsonb, jsonb, jsonb, interval, boolean, text, timestamptz), '
                              'saas_api.llm_shared_put(jsonb, jsonb, jsonb, interval, boolean, text), '
                              '@extschema@.llm_cache_key(jsonb) TO %I', r);
  END LOOP;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_shared_grant(name[]) IS
  'Lets roles write the shared (non-tenant) LLM cache scope (saas.llm_shared_put and its saas_api wrapper): a service role, never one end users act as. For the owner. Revoke with REVOKE EXECUTE.';

-- Hits and misses counted in shared memory, written to the cache rows and
-- the daily table. Counts a failed flush took come back (src/llm/shmem.rs).
CREATE FUNCTION @extschema@.llm_hits_flush()
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  n bigint;
BEGIN
  -- One statement: the counts taken out of shared memory (given back if
  -- this transaction or subtransaction aborts) go to the cache rows and
  -- the daily table.
  WITH taken AS MATERIALIZED (
    SELECT * FROM @extschema@._llm_take()
  ), hits AS (
    SELECT k.tenant_id, k.id, sum(k.pending) AS n, max(k.day) AS last_day FROM taken k WHERE k.kind = 'hit' GROUP BY 1, 2
  ), rows AS (
    UPDATE @extschema@.llm_cache c SET hit_count = c.hit_count + h.n,
           last_hit_at = greatest(c.last_hit_at, (DATE '2000-01-01' + h.last_day)::timestamp AT TIME ZONE 'UTC')
    FROM hits h
    WHERE c.tenant_id = h.tenant_id AND c.cache_key = h.id
  ), shared AS (
    SELECT k.id, sum(k.pending) AS n, max(k.day) AS last_day FROM taken k WHERE k.kind = 'shared' GROUP BY 1
  ), shared_rows AS (
    UPDATE @extschema@.llm_cache_shared c SET hit_count = c.hit_count + h.n,
           last_hit_at = greatest(c.last_hit_at, (DATE '2000-01-01' + h.last_day)::timestamp AT TIME ZONE 'UTC')
    FROM shared h
    WHERE c.cache_key = h.id
  ), daily AS (
    INSERT INTO @extschema@.llm_cache_daily AS d (tenant_id, day, model, hits, misses, shared_hits, overflow_hits,
                                                  tokens_saved, saved_micros)
    SELECT x.tenant_id, DATE '2000-01-01' + x.day, x.model, sum(x.hits), sum(x.misses), sum(x.shared), sum(x.overflow),
           sum(x.tokens), sum(x.saved)
    FROM (
      -- per kind: hit and shared (the entry's model and savings; an expired
      -- entry: '(expired)'), overflow (per model, no entry: nothing saved
      -- counted), miss (per model)
      SELECT k.tenant_id, k.day,
             CASE k.kind WHEN 'hit' THEN coalesce(c.model, '(expired)') WHEN 'shared' THEN coalesce(s.model, '(expired)')
                         ELSE k.id END AS model,
             CASE WHEN k.kind <> 'miss' THEN k.pending ELSE 0 END AS hits, CASE WHEN k.kind = 'miss' THEN k.pending ELSE 0 END AS misses,
             CASE WHEN k.kind IN ('shared', 'shared_overflow') THEN k.pending ELSE 0 END AS shared,
             CASE WHEN k.kind IN ('overflow', 'shared_overflow') THEN k.pending ELSE 0 END AS overflow,
             k.pending * coalesce(c.prompt_tokens + c.completion_tokens, s.prompt_tokens + s.completion_tokens, 0) AS tokens,
             k.pending * coalesce(c.cost_micros, s.cost_micros, 0) AS saved
      FROM taken k
      LEFT JOIN @extschema@.llm_cache c ON k.kind = 'hit' AND c.tenant_id = k.tenant_id AND c.cache_key = k.id
      LEFT JOIN @extschema@.llm_cache_shared s ON k.kind = 'shared' AND s.cache_key = k.id
    ) x
    GROUP BY x.tenant_id, x.day, x.model
    ON CONFLICT ON CONSTRAINT llm_cache_daily_pkey DO UPDATE SET
      hits = d.hits + EXCLUDED.hits, misses = d.misses + EXCLUDED.misses,
      shared_hits = d.shared_hits + EXCLUDED.shared_hits, overflow_hits = d.overflow_hits + EXCLUDED.overflow_hits,
      tokens_saved = d.tokens_saved + EXCLUDED.tokens_saved, saved_micros = d.saved_micros + EXCLUDED.saved_micros
  )
  SELECT coalesce(sum(k.pending), 0) INTO n FROM taken k;
  RETURN n;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_hits_flush() IS
  'Writes the LLM cache hits and misses counted in shared memory to saas.llm_cache and saas.llm_cache_daily; run by run_maintenance(). Returns the lookups written.';

CREATE FUNCTION @extschema@.llm_cache_stats(
  p_from date DEFAULT (now() AT TIME ZONE 'UTC')::date - 29,
  p_to date DEFAULT (now() AT TIME ZONE 'UTC')::date)
RETURNS TABLE (model text, lookups bigint, hits bigint, misses bigint, hit_rate numeric, tokens_saved bigint, saved_micros bigint,
               semantic_hits bigint, shadow_hits bigint, shared_hits bigint, overflow_hits bigint)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._llm_tenant('llm_cache_stats');
BEGIN
  IF p_from IS NULL OR p_to IS NULL THEN
    RAISE EXCEPTION 'llm_cache_stats: p_from and p_to must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass a range of UTC days, or leave them out for the last 30 days.';
  END IF;
  IF p_from > p_to THEN
    RAISE EXCEPTION 'llm_cache_stats: p_from % is after p_to %', p_from, p_to
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the earlier day first.';
  END IF;
  -- hits: every answer served from the cache (exact, overflow-counted,
  -- shared, semantic); misses include shadow mode's would-be hits.
  RETURN QUERY
  SELECT s.model, (sum(s.hits) + sum(s.misses))::bigint, sum(s.hits)::bigint, sum(s.misses)::bigint,
         round(sum(s.hits) / nullif(sum(s.hits) + sum(s.misses), 0), 4),
         sum(s.tokens)::bigint, sum(s.saved)::bigint, sum(s.semantic)::bigint, sum(s.shadow)::bigint,
         sum(s.shared)::bigint, sum(s.overflow)::bigint
  FROM (
    SELECT d.model, d.hits, d.misses, d.tokens_saved AS tokens, d.saved_micros AS saved, 0 AS semantic, 0 AS shadow,
           d.shared_hits AS shared, d.overflow_hits AS overflow
    FROM @extschema@.llm_cache_daily d WHERE d.tenant_id = t AND d.day BETWEEN p_from AND p_to
    UNION ALL
    SELECT CASE q.kind WHEN 'hit' THEN coalesce(c.model, '(expired)') WHEN 'shared' THEN coalesce(x.model, '(expired)') ELSE q.id END,
           CASE WHEN q.kind <> 'miss' THEN q.pending ELSE 0 END, CASE WHEN q.kind = 'miss' THEN q.pending ELSE 0 END,
           q.pending * coalesce(c.prompt_tokens + c.completion_tokens, x.prompt_tokens + x.completion_tokens, 0),
           q.pending * coalesce(c.cost_micros, x.cost_micros, 0), 0, 0,
           CASE WHEN q.kind IN ('shared', 'shared_overflow') THEN q.pending ELSE 0 END,
           CASE WHEN q.kind IN ('overflow', 'shared_overflow') THEN q.pending ELSE 0 END
    FROM @extschema@._llm_pending() q
    LEFT JOIN @extschema@.llm_cache c ON q.kind = 'hit' AND c.tenant_id = q.tenant_id AND c.cache_key = q.id
    LEFT JOIN @extschema@.llm_cache_shared x ON q.kind = 'shared' AND x.cache_key = q.id
    WHERE q.tenant_id = t AND DATE '2000-01-01' + q.day BETWEEN p_from AND p_to
    UNION ALL
    SELECT h.model, h.served::int, 0, h.tokens_saved, h.saved_micros, h.served::int, (NOT h.served)::int, 0, 0
    FROM @extschema@.llm_semantic_hits h
    WHERE h.tenant_id = t
      AND h.looked_up_at >= p_from::timestamp AT TIME ZONE 'UTC' AND h.looked_up_at < (p_to + 1)::timestamp AT TIME ZONE 'UTC'
  ) s
  GROUP BY s.model
  ORDER BY s.model;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_cache_stats(date, date) IS
  'The current tenant''s LLM cache per model over UTC days: lookups, hits, misses, hit rate, tokens and micro-units saved (written plus pending); of the hits: semantic, shared, counted while the counters were full (overflow); shadow-mode would-be hits (counted as misses).';

-- ---------------------------------------------------------------------------
-- Prices
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.llm_price_set(
  provider text,
  model text,
  input_micros_per_mtok bigint,
  output_micros_per_mtok bigint,
  cached_input_micros_per_mtok bigint DEFAULT NULL,
  cache_write_micros_per_mtok bigint DEFAULT NULL,
  cached_subset boolean DEFAULT true,
  effective_from timestamptz DEFAULT now(),
  currency text DEFAULT 'USD')
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF provider IS NULL OR model IS NULL OR input_micros_per_mtok IS NULL OR output_micros_per_mtok IS NULL
     OR cached_subset IS NULL OR effective_from IS NULL OR currency IS NULL THEN
    RAISE EXCEPTION 'llm_price_set: provider, model, the input and output prices, cached_subset, effective_from and currency must not be NULL'
      USING ERRCODE = 'null_value_not_allowed',
            HINT = 'e.g. saas.llm_price_set(''openai'', ''gpt-4o'', 2500000, 10000000, 1250000): micro-units per million tokens.';
  END IF;
  IF least(input_micros_per_mtok, output_micros_per_mtok, cached_input_micros_per_mtok, cache_write_micros_per_mtok) < 0 THEN
    RAISE EXCEPTION 'llm_price_set: prices must not be negative'
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Prices are micro-units per million tokens, e.g. 2500000 for $2.50.';
  END IF;
  IF char_length(provider) NOT BETWEEN 1 AND 64 OR char_length(model) NOT BETWEEN 1 AND 200 OR currency !~ '^[A-Z]{3}$' THEN
    RAISE EXCEPTION 'llm_price_set: bad provider %, model % or currency %',
      @extschema@._echo(provider), @extschema@._echo(model), @extschema@._echo(currency)
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Provider 1-64 characters, model 1-200, currency an ISO 4217 code such as USD.';
  END IF;
  INSERT INTO @extschema@.llm_prices AS p (provider, model, effective_from, input_micros_per_mtok, cached_input_micros_per_mtok,
                                           cache_write_micros_per_mtok, output_micros_per_mtok, cached_subset, currency)
  VALUES (provider, model, effective_from, input_micros_per_mtok, coalesce(cached_input_micros_per_mtok, input_micros_per_mtok),
          coalesce(cache_write_micros_per_mtok, input_micros_per_mtok), output_micros_per_mtok, cached_subset, currency)
  ON CONFLICT ON CONSTRAINT llm_prices_pkey DO UPDATE SET
    input_micros_per_mtok = EXCLUDED.input_micros_per_mtok, cached_input_micros_per_mtok = EXCLUDED.cached_input_micros_per_mtok,
    cache_write_micros_per_mtok = EXCLUDED.cache_write_micros_per_mtok, output_micros_per_mtok = EXCLUDED.output_micros_per_mtok,
    cached_subset = EXCLUDED.cached_subset, currency = EXCLUDED.currency;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_price_set(text, text, bigint, bigint, bigint, bigint, boolean, timestamptz, text) IS
  'Adds a price version for a provider and model (micro-units per million tokens; cached input and cache writes default to the input price). Rows charged before keep their price.';

CREATE FUNCTION @extschema@._llm_price(fn text, provider text, model text, p_at timestamptz)
RETURNS @extschema@.llm_prices
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  p @extschema@.llm_prices%ROWTYPE;
BEGIN
  SELECT * INTO p FROM @extschema@.llm_prices x
  WHERE x.provider = _llm_price.provider AND x.model = _llm_price.model AND x.effective_from <= p_at
  ORDER BY x.effective_from DESC LIMIT 1;
  IF NOT FOUND THEN
    RAISE EXCEPTION '%: no price for model % of provider % at %', fn, @extschema@._echo(model), @extschema@._echo(provider), p_at
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass cost_micros yourself, or add the price first: saas.llm_price_set(provider, model, input, output) (micro-units per million tokens).';
  END IF;
  RETURN p;
END
$$;

CREATE FUNCTION @extschema@.llm_cost(
  provider text, model text, prompt_tokens bigint, completion_tokens bigint,
  cached_read_tokens bigint DEFAULT 0, cache_write_tokens bigint DEFAULT 0, reasoning_tokens bigint DEFAULT 0,
  p_at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  p @extschema@.llm_prices%ROWTYPE;
BEGIN
  IF provider IS NULL OR model IS NULL OR prompt_tokens IS NULL OR completion_tokens IS NULL OR cached_read_tokens IS NULL
     OR cache_write_tokens IS NULL OR reasoning_tokens IS NULL OR p_at IS NULL THEN
    RAISE EXCEPTION 'llm_cost: arguments must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass 0 for token kinds the call did not have.';
  END IF;
  p := @extschema@._llm_price('llm_cost', provider, model, p_at);
  RETURN @extschema@._llm_cost(prompt_tokens, cached_read_tokens, cache_write_tokens, completion_tokens, reasoning_tokens,
                               p.input_micros_per_mtok, p.cached_input_micros_per_mtok, p.cache_write_micros_per_mtok,
                               p.output_micros_per_mtok, p.cached_subset);
END
$$;
COMMENT ON FUNCTION @extschema@.llm_cost(text, text, bigint, bigint, bigint, bigint, bigint, timestamptz) IS
  'The cost in micro-units of a call''s tokens at the price in force at p_at (rounded up once).';

-- ---------------------------------------------------------------------------
-- Budgets
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.llm_budget_set(
  tenant uuid,
  max_cost_micros bigint,
  max_tokens bigint DEFAULT NULL,
  period text DEFAULT 'month',
  user_id uuid DEFAULT NULL,
  time_zone text DEFAULT 'UTC')
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  id bigint;
BEGIN
  IF tenant IS NULL OR period IS NULL OR time_zone IS NULL THEN
    RAISE EXCEPTION 'llm_budget_set: tenant, period and time_zone must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'e.g. saas.llm_budget_set(tenant => ..., max_cost_micros => 50000000, period => ''month'').';
  END IF;
  IF max_cost_micros IS NULL AND max_tokens IS NULL THEN
    RAISE EXCEPTION 'llm_budget_set: give max_cost_micros, max_tokens or both'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Remove a budget with saas.llm_budget_drop().';
  END IF;
  IF max_cost_micros < 0 OR max_tokens < 0 THEN
    RAISE EXCEPTION 'llm_budget_set: limits must not be negative'
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Give 0 to refuse every call.';
  END IF;
  IF period NOT IN ('day', 'month') THEN
    RAISE EXCEPTION 'llm_budget_set: period must be day or month, not %', @extschema@._echo(period)
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Budgets reset every day or every month in their time zone.';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_timezone_names z WHERE z.name = time_zone) THEN
    RAISE EXCEPTION 'llm_budget_set: time zone % is not recognized', @extschema@._echo(time_zone)
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Use a name from pg_timezone_names, e.g. ''UTC'' or ''Europe/Berlin''.';
  END IF;
  IF NOT EXISTS (SELECT FROM @extschema@.tenants tn WHERE tn.id = tenant) THEN
    RAISE EXCEPTION 'llm_budget_set: tenant % does not exist', tenant
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the id of a row of saas.tenants.';
  END IF;
  INSERT INTO @extschema@.llm_budgets AS b (tenant_id, user_id, period, max_cost_micros, max_tokens, time_zone)
  VALUES (tenant, user_id, period, max_cost_micros, max_tokens, time_zone)
  ON CONFLICT ON CONSTRAINT llm_budgets_scope DO UPDATE SET
    max_cost_micros = EXCLUDED.max_cost_micros, max_tokens = EXCLUDED.max_tokens, time_zone = EXCLUDED.time_zone
  RETURNING b.budget_id INTO id;
  RETURN id;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_budget_set(uuid, bigint, bigint, text, uuid, text) IS
  'Sets a tenant''s (or one user''s, user_id) LLM budget per day or month in time_zone: cost in micro-units and/or tokens. Returns its id. For operators.';

CREATE FUNCTION @extschema@.llm_budget_drop(tenant uuid, period text DEFAULT 'month', user_id uuid DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  dropped boolean;
BEGIN
  IF tenant IS NULL OR period IS NULL THEN
    RAISE EXCEPTION 'llm_budget_drop: tenant and period must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the tenant, period and user the budget was set with.';
  END IF;
  WITH gone AS (
    DELETE FROM @extschema@.llm_budgets b
    WHERE b.tenant_id = tenant AND b.period = llm_budget_drop.period AND b.user_id IS NOT DISTINCT FROM llm_budget_drop.user_id
    RETURNING b.tenant_id, b.budget_id
  ), windows AS (
    DELETE FROM @extschema@.llm_budget_windows w USING gone g WHERE w.tenant_id = g.tenant_id AND w.budget_id = g.budget_id
  )
  SELECT count(*) > 0 INTO dropped FROM gone;
  RETURN dropped;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_budget_drop(uuid, text, uuid) IS
  'Removes a budget and its windows; false when there was none. For operators.';

CREATE FUNCTION @extschema@.llm_budget_reserve(
  provider text,
  model text,
  prompt_tokens bigint,
  max_output_tokens bigint,
  ttl interval DEFAULT '15 minutes',
  p_now timestamptz DEFAULT now())
RETURNS TABLE (reservation_id bigint, reserved_micros bigint, reserved_tokens bigint, expires_at timestamptz)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._llm_tenant('llm_budget_reserve');
  u uuid := @extschema@.current_user_id();
  now_ts timestamptz := coalesce(p_now, now());
  p @extschema@.llm_prices%ROWTYPE;
  cost bigint;
  tokens bigint;
  ids bigint[];
  starts timestamptz[];
  applicable int;
  held int;
  f record;
  rid bigint;
BEGIN
  IF provider IS NULL OR model IS NULL OR prompt_tokens IS NULL OR max_output_tokens IS NULL THEN
    RAISE EXCEPTION 'llm_budget_reserve: provider, model, prompt_tokens and max_output_tokens must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the prompt''s token count and the max_tokens the call will ask for.';
  END IF;
  IF prompt_tokens < 0 OR max_output_tokens < 0 THEN
    RAISE EXCEPTION 'llm_budget_reserve: token counts must not be negative'
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Pass the prompt''s token count and the max_tokens of the call.';
  END IF;
  IF ttl IS NULL OR ttl <= interval '0' OR ttl > interval '1 day' THEN
    RAISE EXCEPTION 'llm_budget_reserve: ttl must be positive and at most a day'
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Give the longest the call may take, e.g. ''15 minutes''.';
  END IF;
  p := @extschema@._llm_price('llm_budget_reserve', provider, model, now_ts);
  cost := @extschema@._llm_worst_case(prompt_tokens, max_output_tokens, p.input_micros_per_mtok, p.output_micros_per_mtok);
  tokens := prompt_tokens + max_output_tokens;

  -- The budgets that apply and their current windows.
  SELECT array_agg(b.budget_id ORDER BY b.budget_id),
         array_agg(date_trunc(b.period, now_ts, b.time_zone) ORDER BY b.budget_id)
  INTO ids, starts
  FROM @extschema@.llm_budgets b
  WHERE b.tenant_id = t AND (b.user_id IS NULL OR b.user_id = u);
  applicable := coalesce(cardinality(ids), 0);
  IF applicable > 0 THEN
    INSERT INTO @extschema@.llm_budget_windows (tenant_id, budget_id, window_start)
    SELECT t, x.id, x.s FROM unnest(ids, starts) AS x(id, s)
    ON CONFLICT DO NOTHING;
    -- One atomic conditional update: concurrent reservations serialize on
    -- the window rows, and each re-checks its condition on the row the
    -- previous one left (READ COMMITTED re-evaluation), so none overspends.
    UPDATE @extschema@.llm_budget_windows w
    SET reserved_micros = w.reserved_micros + cost, reserved_tokens = w.reserved_tokens + tokens
    FROM @extschema@.llm_budgets b, unnest(ids, starts) AS x(id, s)
    WHERE b.tenant_id = t AND b.budget_id = x.id
      AND w.tenant_id = t AND w.budget_id = x.id AND w.window_start = x.s
      AND (b.max_cost_micros IS NULL OR w.used_micros + w.reserved_micros + cost <= b.max_cost_micros)
      AND (b.max_tokens IS NULL OR w.used_tokens + w.reserved_tokens + tokens <= b.max_tokens);
    GET DIAGNOSTICS held = ROW_COUNT;
    IF held < applicable THEN
      -- Refused: the error rolls back what this statement reserved.
      SELECT b.budget_id, b.period, b.user_id, b.max_cost_micros, b.max_tokens, w.used_micros, w.reserved_micros,
             w.used_tokens, w.reserved_tokens, x.s AS window_start,
             (x.s AT TIME ZONE b.time_zone + CASE b.period WHEN 'day' THEN interval '1 day' ELSE interval '1 month' END)
               AT TIME ZONE b.time_zone AS resets_at
      INTO f
      FROM @extschema@.llm_budgets b JOIN unnest(ids, starts) AS x(id, s) ON b.budget_id = x.id
      JOIN @extschema@.llm_budget_windows w ON w.tenant_id = t AND w.budget_id = x.id AND w.window_start = x.s
      WHERE b.tenant_id = t
        AND NOT ((b.max_cost_micros IS NULL OR w.used_micros + w.reserved_micros + cost <= b.max_cost_micros)
                 AND (b.max_tokens IS NULL OR w.used_tokens + w.reserved_tokens + tokens <= b.max_tokens))
      ORDER BY b.budget_id LIMIT 1;
      RAISE SQLSTATE 'PGRST'
        USING MESSAGE = jsonb_build_object(
                'code', 'PT402',
                'message', format('LLM budget exceeded: the %s budget%s allows %s micro-units and %s tokens; %s used, %s reserved, this call needs up to %s',
                                  f.period, CASE WHEN f.user_id IS NULL THEN '' ELSE ' of this user' END,
                                  coalesce(f.max_cost_micros::text, 'unlimited'), coalesce(f.max_tokens::text, 'unlimited'),
                                  f.used_micros, f.reserved_micros, cost),
                'details', jsonb_build_object(
                  'reason', 'llm_budget_exceeded', 'budget_id', f.budget_id, 'scope', CASE WHEN f.user_id IS NULL THEN 'tenant' ELSE 'user' END,
                  'period', f.period, 'limit_micros', f.max_cost_micros, 'limit_tokens', f.max_tokens,
                  'used_micros', f.used_micros, 'used_tokens', f.used_tokens,
                  'reserved_micros', f.reserved_micros, 'reserved_tokens', f.reserved_tokens,
                  'requested_micros', cost, 'requested_tokens', tokens,
                  'resets_at', f.resets_at,
                  'retry_after_seconds', greatest(1, ceil(extract(epoch FROM f.resets_at - now_ts)))::bigint)::text,
                'hint', 'Wait until the budget resets, use a smaller max_tokens, or ask an operator to raise the budget.')::text,
              DETAIL = jsonb_build_object('status', 402, 'headers', jsonb_build_object(
                'Retry-After', greatest(1, ceil(extract(epoch FROM f.resets_at - now_ts)))::bigint::text))::text;
    END IF;
  END IF;
  INSERT INTO @extschema@.llm_reservations AS r (tenant_id, user_id, provider, model, budget_ids, window_starts,
                                                 reserved_micros, reserved_tokens, created_at, expires_at)
  VALUES (t, u, provider, model, coalesce(ids, '{}'), coalesce(starts, '{}'), cost, tokens, now_ts, now_ts + ttl)
  RETURNING r.reservation_id INTO rid;
  RETURN QUERY SELECT rid, cost, tokens, now_ts + ttl;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_budget_reserve(text, text, bigint, bigint, interval, timestamptz) IS
  'Reserves the worst-case cost of a call (prompt at the input price plus max_output_tokens at the output price) against every budget of the tenant and user, atomically, or refuses with PT402 (HTTP 402) and JSON details. Settle with llm_budget_settle or llm_record_usage(reservation_id => ...).';

CREATE FUNCTION @extschema@.llm_budget_settle(reservation_id bigint, actual_micros bigint, actual_tokens bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._llm_tenant('llm_budget_settle');
  r @extschema@.llm_reservations%ROWTYPE;
BEGIN
  IF reservation_id IS NULL OR actual_micros IS NULL OR actual_tokens IS NULL THEN
    RAISE EXCEPTION 'llm_budget_settle: reservation_id, actual_micros and actual_tokens must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the reservation and what the call really cost.';
  END IF;
  IF actual_micros < 0 OR actual_tokens < 0 THEN
    RAISE EXCEPTION 'llm_budget_settle: actual cost and tokens must not be negative'
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Pass what the call really cost (0 if it failed before any token).';
  END IF;
  -- Idempotent: only the first settle of a reservation changes anything.
  UPDATE @extschema@.llm_reservations x SET settled_at = now(), actual_micros = llm_budget_settle.actual_micros,
         actual_tokens = llm_budget_settle.actual_tokens
  WHERE x.tenant_id = t AND x.reservation_id = llm_budget_settle.reservation_id AND x.settled_at IS NULL
  RETURNING * INTO r;
  IF NOT FOUND THEN
    IF EXISTS (SELECT FROM @extschema@.llm_reservations x WHERE x.tenant_id = t AND x.reservation_id = llm_budget_settle.reservation_id) THEN
      RETURN false;
    END IF;
    RAISE EXCEPTION 'llm_budget_settle: reservation % does not exist for this tenant', llm_budget_settle.reservation_id
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the reservation_id llm_budget_reserve returned in this tenant.';
  END IF;
  UPDATE @extschema@.llm_budget_windows w
  SET used_micros = w.used_micros + r.actual_micros, used_tokens = w.used_tokens + r.actual_tokens,
      reserved_micros = w.reserved_micros - CASE WHEN r.released_at IS NULL THEN r.reserved_micros ELSE 0 END,
      reserved_tokens = w.reserved_tokens - CASE WHEN r.released_at IS NULL THEN r.reserved_tokens ELSE 0 END
  FROM unnest(r.budget_ids, r.window_starts) AS x(id, s)
  WHERE w.tenant_id = t AND w.budget_id = x.id AND w.window_start = x.s;
  RETURN true;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_budget_settle(bigint, bigint, bigint) IS
  'Replaces a reservation by the actual cost and tokens of the call; idempotent (false when already settled).';

CREATE FUNCTION @extschema@.llm_budget_status()
RETURNS TABLE (budget_id bigint, scope text, period text, window_start timestamptz, resets_at timestamptz,
               max_cost_micros bigint, max_tokens bigint, used_micros bigint, used_tokens bigint,
               reserved_micros bigint, reserved_tokens bigint)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._llm_tenant('llm_budget_status');
  u uuid := @extschema@.current_user_id();
BEGIN
  RETURN QUERY
  SELECT b.budget_id, CASE WHEN b.user_id IS NULL THEN 'tenant' ELSE 'user' END, b.period, s.ws,
         (s.ws AT TIME ZONE b.time_zone + CASE b.period WHEN 'day' THEN interval '1 day' ELSE interval '1 month' END) AT TIME ZONE b.time_zone,
         b.max_cost_micros, b.max_tokens, coalesce(w.used_micros, 0), coalesce(w.used_tokens, 0),
         coalesce(w.reserved_micros, 0), coalesce(w.reserved_tokens, 0)
  FROM @extschema@.llm_budgets b
  CROSS JOIN LATERAL (SELECT date_trunc(b.period, now(), b.time_zone) AS ws) s
  LEFT JOIN @extschema@.llm_budget_windows w ON w.tenant_id = b.tenant_id AND w.budget_id = b.budget_id AND w.window_start = s.ws
  WHERE b.tenant_id = t AND (b.user_id IS NULL OR b.user_id = u)
  ORDER BY b.budget_id;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_budget_status() IS
  'The budgets of the current tenant and user in their current windows: limits, use, reservations, reset time.';

-- ---------------------------------------------------------------------------
-- The ledger
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@._llm_ensure_ledger()
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT EXISTS (SELECT FROM @extschema@.partition_config WHERE parent = '@extschema@.llm_usage'::regclass) THEN
    PERFORM @extschema@.create_monthly_partitions('@extschema@.llm_usage', 'created_at');
  END IF;
END
$$;

-- A partition of the ledger gets the ledger's key (as audit_log's do).
CREATE FUNCTION @extschema@._llm_partition_hook(parent regclass, part regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF coalesce(pg_partition_root(part), parent) = '@extschema@.llm_usage'::regclass
     AND NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = part AND contype = 'p') THEN
    EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (tenant_id, created_at, usage_id)', part);
  END IF;
END
$$;
INSERT INTO @extschema@.partition_hooks (hook_name, hook, builtin)
VALUES ('llm', '@extschema@._llm_partition_hook(regclass, regclass)', true);

CREATE FUNCTION @extschema@.llm_record_usage(
  provider text,
  model text,
  prompt_tokens bigint,
  completion_tokens bigint,
  cached_read_tokens bigint DEFAULT 0,
  cache_write_tokens bigint DEFAULT 0,
  reasoning_tokens bigint DEFAULT 0,
  cost_micros bigint DEFAULT NULL,
  cache_hit boolean DEFAULT false,
  saved_micros bigint DEFAULT NULL,
  latency_ms integer DEFAULT NULL,
  finish_reason text DEFAULT NULL,
  function_name text DEFAULT NULL,
  idempotency_key text DEFAULT NULL,
  reservation_id bigint DEFAULT NULL,
  p_now timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._llm_tenant('llm_record_usage');
  u uuid := @extschema@.current_user_id();
  now_ts timestamptz := coalesce(p_now, now());
  p @extschema@.llm_prices%ROWTYPE;
  cost bigint := cost_micros;
  saved bigint := coalesce(saved_micros, 0);
  id bigint;
  ids bigint[];
  starts timestamptz[];
BEGIN
  IF provider IS NULL OR model IS NULL OR prompt_tokens IS NULL OR completion_tokens IS NULL OR cached_read_tokens IS NULL
     OR cache_write_tokens IS NULL OR reasoning_tokens IS NULL OR cache_hit IS NULL THEN
    RAISE EXCEPTION 'llm_record_usage: provider, model and token counts must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass 0 for token kinds the call did not have.';
  END IF;
  IF least(prompt_tokens, completion_tokens, cached_read_tokens, cache_write_tokens, reasoning_tokens, cost_micros, saved_micros, latency_ms) < 0 THEN
    RAISE EXCEPTION 'llm_record_usage: tokens, cost, saved cost and latency must not be negative'
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Pass the counts the provider reported.';
  END IF;
  IF char_length(idempotency_key) NOT BETWEEN 1 AND 200 THEN
    RAISE EXCEPTION 'llm_record_usage: idempotency_key must have 1 to 200 characters'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Use the provider''s response id or a uuid of the call.';
  END IF;
  IF idempotency_key IS NOT NULL THEN
    SELECT k.usage_id INTO id FROM @extschema@.llm_usage_keys k WHERE k.tenant_id = t AND k.idempotency_key = llm_record_usage.idempotency_key;
    IF id IS NOT NULL THEN
      RETURN id;
    END IF;
  END IF;
  IF cost IS NULL THEN
    p := @extschema@._llm_price('llm_record_usage', provider, model, now_ts);
    cost := @extschema@._llm_cost(prompt_tokens, cached_read_tokens, cache_write_tokens, completion_tokens, reasoning_tokens,
                                  p.input_micros_per_mtok, p.cached_input_micros_per_mtok, p.cache_write_micros_per_mtok,
                                  p.output_micros_per_mtok, p.cached_subset);
  ELSIF reasoning_tokens > completion_tokens THEN
    RAISE EXCEPTION 'llm_record_usage: reasoning_tokens (%) exceed completion_tokens (%)', reasoning_tokens, completion_tokens
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Reasoning tokens are part of the completion tokens.';
  END IF;
  PERFORM @extschema@._llm_ensure_ledger();
  INSERT INTO @extschema@.llm_usage AS l (tenant_id, created_at, user_id, function_name, provider, model, prompt_tokens,
      cached_read_tokens, cache_write_tokens, completion_tokens, reasoning_tokens, cost_micros, price_effective_from,
      cache_hit, saved_micros, latency_ms, finish_reason, idempotency_key, reservation_id)
  VALUES (t, now_ts, u, function_name, provider, model, prompt_tokens, cached_read_tokens, cache_write_tokens,
          completion_tokens, reasoning_tokens, CASE WHEN cache_hit THEN 0 ELSE cost END, p.effective_from,
          cache_hit, CASE WHEN cache_hit THEN greatest(saved, cost) ELSE saved END, latency_ms, finish_reason,
          idempotency_key, reservation_id)
  RETURNING l.usage_id INTO id;
  IF idempotency_key IS NOT NULL THEN
    -- A concurrent duplicate waits here on the key and then fails with
    -- 23505 (HTTP 409); its transaction recorded nothing.
    INSERT INTO @extschema@.llm_usage_keys (tenant_id, idempotency_key, usage_id, created_at)
    VALUES (t, idempotency_key, id, now_ts);
  END IF;
  INSERT INTO @extschema@.llm_usage_daily AS d (tenant_id, day, provider, model, calls, cache_hits, prompt_tokens,
      cached_read_tokens, cache_write_tokens, completion_tokens, reasoning_tokens, cost_micros, saved_micros)
  VALUES (t, (now_ts AT TIME ZONE 'UTC')::date, provider, model, 1, cache_hit::int, prompt_tokens, cached_read_tokens,
          cache_write_tokens, completion_tokens, reasoning_tokens, CASE WHEN cache_hit THEN 0 ELSE cost END,
          CASE WHEN cache_hit THEN greatest(saved, cost) ELSE saved END)
  ON CONFLICT ON CONSTRAINT llm_usage_daily_pkey DO UPDATE SET
    calls = d.calls + 1, cache_hits = d.cache_hits + EXCLUDED.cache_hits, prompt_tokens = d.prompt_tokens + EXCLUDED.prompt_tokens,
    cached_read_tokens = d.cached_read_tokens + EXCLUDED.cached_read_tokens,
    cache_write_tokens = d.cache_write_tokens + EXCLUDED.cache_write_tokens,
    completion_tokens = d.completion_tokens + EXCLUDED.completion_tokens,
    reasoning_tokens = d.reasoning_tokens + EXCLUDED.reasoning_tokens,
    cost_micros = d.cost_micros + EXCLUDED.cost_micros, saved_micros = d.saved_micros + EXCLUDED.saved_micros;
  IF cache_hit THEN
    RETURN id;
  END IF;
  IF reservation_id IS NOT NULL THEN
    PERFORM @extschema@.llm_budget_settle(reservation_id, cost, prompt_tokens + completion_tokens);
  ELSE
    -- Unreserved calls count against the budgets too (never refused here).
    SELECT array_agg(b.budget_id), array_agg(date_trunc(b.period, now_ts, b.time_zone))
    INTO ids, starts
    FROM @extschema@.llm_budgets b WHERE b.tenant_id = t AND (b.user_id IS NULL OR b.user_id = u);
    IF ids IS NOT NULL THEN
      INSERT INTO @extschema@.llm_budget_windows AS w (tenant_id, budget_id, window_start, used_micros, used_tokens)
      SELECT t, x.id, x.s, cost, prompt_tokens + completion_tokens FROM unnest(ids, starts) AS x(id, s)
      ON CONFLICT ON CONSTRAINT llm_budget_windows_pkey DO UPDATE SET
        used_micros = w.used_micros + EXCLUDED.used_micros, used_tokens = w.used_tokens + EXCLUDED.used_tokens;
    END IF;
  END IF;
  RETURN id;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_record_usage(text, text, bigint, bigint, bigint, bigint, bigint, bigint, boolean, bigint, integer, text, text, text, bigint, timestamptz) IS
  'Records one LLM call of the current tenant in the ledger and the daily rollup (same transaction); cost from the price table when omitted; settles its reservation; idempotent by idempotency_key. Returns the usage_id.';

-- ---------------------------------------------------------------------------
-- Maintenance: hits flushed, expired cache rows, leases and idempotency
-- keys deleted, expired reservations released. (The ledger's partitions are
-- kept by the partitions module once the first record made them.)
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@._llm_maintenance(p_now timestamptz)
RETURNS TABLE (parent_table regclass, action text, partition_name text, detail text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  flushed bigint;
  expired bigint;
  leases bigint;
  released bigint;
  keys bigint;
  pruned bigint;
BEGIN
  flushed := @extschema@.llm_hits_flush();
  DELETE FROM @extschema@.llm_cache c WHERE c.expires_at <= p_now;
  GET DIAGNOSTICS expired = ROW_COUNT;
  DELETE FROM @extschema@.llm_cache_shared c WHERE c.expires_at <= p_now;
  GET DIAGNOSTICS pruned = ROW_COUNT;
  expired := expired + pruned;
  DELETE FROM @extschema@.llm_semantic_hits h WHERE h.looked_up_at < p_now - interval '90 days';
  GET DIAGNOSTICS pruned = ROW_COUNT;
  DELETE FROM @extschema@.llm_cache_leases l WHERE l.expires_at <= p_now;
  GET DIAGNOSTICS leases = ROW_COUNT;
  DELETE FROM @extschema@.llm_usage_keys k WHERE k.created_at < p_now - interval '35 days';
  GET DIAGNOSTICS keys = ROW_COUNT;
  keys := keys + pruned;
  WITH gone AS (
    UPDATE @extschema@.llm_reservations r SET released_at = p_now
    WHERE r.settled_at IS NULL AND r.released_at IS NULL AND r.expires_at <= p_now
    RETURNING r.tenant_id, r.budget_ids, r.window_starts, r.reserved_micros, r.reserved_tokens
  ), per_window AS (
    SELECT g.tenant_id, x.id, x.s, sum(g.reserved_micros) AS m, sum(g.reserved_tokens) AS tk, count(*) AS n
    FROM gone g, unnest(g.budget_ids, g.window_starts) AS x(id, s) GROUP BY 1, 2, 3
  ), upd AS (
    UPDATE @extschema@.llm_budget_windows w SET reserved_micros = w.reserved_micros - p.m, reserved_tokens = w.reserved_tokens - p.tk
    FROM per_window p WHERE w.tenant_id = p.tenant_id AND w.budget_id = p.id AND w.window_start = p.s
  )
  SELECT count(*) INTO released FROM gone;
  IF flushed + expired + leases + released + keys > 0 THEN
    parent_table := '@extschema@.llm_cache'::regclass; action := 'llm'; partition_name := NULL;
    detail := format('%s cache lookups written, %s expired cache rows, %s leases, %s idempotency keys and semantic hits deleted, %s expired reservations released',
                     flushed, expired, leases, keys, released);
    RETURN NEXT;
  END IF;
END
$$;
INSERT INTO @extschema@.maintenance_tasks (task, module, function_name, run_order, reports_as)
VALUES ('llm', 'llm', '_llm_maintenance', 40, 'llm_cache');

-- ---------------------------------------------------------------------------
-- What API roles get from saas.grant_api, and the saas_api wrappers.
-- ---------------------------------------------------------------------------
CREATE FUNCTION saas_api.llm_cache_get(request jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r jsonb := request;
BEGIN
  -- A GET passes the request in the query string, which PostgREST gives a
  -- jsonb parameter as a JSON string: its text is the request.
  IF jsonb_typeof(request) = 'string' THEN
    BEGIN
      r := (request #>> '{}')::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
      RAISE EXCEPTION 'llm_cache_get: the request is text that is not JSON'
        USING ERRCODE = 'invalid_text_representation',
              HINT = 'Pass the request object as JSON; in a GET: ?request=<the object as JSON text, URL-encoded>.';
    END;
  END IF;
  RETURN @extschema@.llm_cache_get(r);
END
$$;
COMMENT ON FUNCTION saas_api.llm_cache_get(jsonb) IS
  'The cached response to this LLM request in the current tenant, or null; the hit is counted exactly (GET with ?request=<JSON text>, or POST).';

CREATE FUNCTION saas_api.llm_cache_lease(request jsonb, lease_seconds int DEFAULT 60)
RETURNS jsonb
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.llm_cache_lease(request, lease_seconds) $$;
COMMENT ON FUNCTION saas_api.llm_cache_lease(jsonb, int) IS
  'Single-flight lookup (POST): {"status": "hit" | "lease" | "wait", ...}; the caller with the lease computes and calls llm_cache_put with its lease_id.';

CREATE FUNCTION saas_api.llm_cache_put(request jsonb, response jsonb, usage jsonb DEFAULT NULL, ttl interval DEFAULT '7 days',
                                       allow_nondeterministic boolean DEFAULT false, lease_id uuid DEFAULT NULL, provider text DEFAULT NULL,
                                       embedding real[] DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.llm_cache_put(request, response, usage, ttl, allow_nondeterministic, lease_id, provider, embedding) $$;
COMMENT ON FUNCTION saas_api.llm_cache_put(jsonb, jsonb, jsonb, interval, boolean, uuid, text, real[]) IS
  'Caches a finished, deterministic answer for the current tenant (with the embedding of its last user turn for the semantic cache); {"cached": false, "reason"} when it may not be cached.';

CREATE FUNCTION saas_api.llm_cache_lookup(request jsonb, embedding real[] DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r jsonb := request;
BEGIN
  -- A GET passes the request as a JSON string (as llm_cache_get); a GET
  -- with an embedding then gets 25006 (a semantic lookup writes).
  IF jsonb_typeof(request) = 'string' THEN
    BEGIN
      r := (request #>> '{}')::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
      RAISE EXCEPTION 'llm_cache_lookup: the request is text that is not JSON'
        USING ERRCODE = 'invalid_text_representation',
              HINT = 'Pass the request object as JSON (POST, with the embedding as a JSON array).';
    END;
  END IF;
  RETURN @extschema@.llm_cache_lookup(r, embedding);
END
$$;
COMMENT ON FUNCTION saas_api.llm_cache_lookup(jsonb, real[]) IS
  'Exact, else semantic lookup (POST): {"match": "exact"|"semantic", "cache_key", "similarity", "response"} or null.';

CREATE FUNCTION saas_api.llm_semantic_stats(p_from date DEFAULT (pg_catalog.now() AT TIME ZONE 'UTC')::date - 29,
                                            p_to date DEFAULT (pg_catalog.now() AT TIME ZONE 'UTC')::date)
RETURNS TABLE (model text, served boolean, similarity_from numeric, similarity_to numeric, hits bigint,
               min_similarity float8, tokens_saved bigint, saved_micros bigint)
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.llm_semantic_stats(p_from, p_to) $$;
COMMENT ON FUNCTION saas_api.llm_semantic_stats(date, date) IS
  'The current tenant''s semantic hits, served and shadow, per similarity bucket of 0.01.';

CREATE FUNCTION saas_api.llm_shared_get(request jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r jsonb := request;
BEGIN
  IF jsonb_typeof(request) = 'string' THEN
    BEGIN
      r := (request #>> '{}')::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
      RAISE EXCEPTION 'llm_shared_get: the request is text that is not JSON'
        USING ERRCODE = 'invalid_text_representation',
              HINT = 'Pass the request object as JSON; in a GET: ?request=<the object as JSON text, URL-encoded>.';
    END;
  END IF;
  RETURN @extschema@.llm_shared_get(r);
END
$$;
COMMENT ON FUNCTION saas_api.llm_shared_get(jsonb) IS
  'The answer of the shared (non-tenant) scope to this LLM request, or null (GET with ?request=<JSON text>, or POST).';

CREATE FUNCTION saas_api.llm_shared_put(request jsonb, response jsonb, usage jsonb DEFAULT NULL, ttl interval DEFAULT '7 days',
                                        allow_nondeterministic boolean DEFAULT false, provider text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.llm_shared_put(request, response, usage, ttl, allow_nondeterministic, provider) $$;
COMMENT ON FUNCTION saas_api.llm_shared_put(jsonb, jsonb, jsonb, interval, boolean, text) IS
  'Stores an answer holding no tenant data in the shared scope. Not an API grant: only roles given saas.llm_shared_grant().';

CREATE FUNCTION saas_api.llm_cache_stats(p_from date DEFAULT (pg_catalog.now() AT TIME ZONE 'UTC')::date - 29,
                                         p_to date DEFAULT (pg_catalog.now() AT TIME ZONE 'UTC')::date)
RETURNS TABLE (model text, lookups bigint, hits bigint, misses bigint, hit_rate numeric, tokens_saved bigint, saved_micros bigint,
               semantic_hits bigint, shadow_hits bigint, shared_hits bigint, overflow_hits bigint)
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.llm_cache_stats(p_from, p_to) $$;
COMMENT ON FUNCTION saas_api.llm_cache_stats(date, date) IS
  'The current tenant''s LLM cache per model: lookups, hits, hit rate, tokens and micro-units saved (default: the last 30 UTC days).';

CREATE FUNCTION saas_api.llm_budget_reserve(provider text, model text, prompt_tokens bigint, max_output_tokens bigint,
                                            ttl interval DEFAULT '15 minutes')
RETURNS TABLE (reservation_id bigint, reserved_micros bigint, reserved_tokens bigint, expires_at timestamptz)
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.llm_budget_reserve(provider, model, prompt_tokens, max_output_tokens, ttl) $$;
COMMENT ON FUNCTION saas_api.llm_budget_reserve(text, text, bigint, bigint, interval) IS
  'Reserves the worst-case cost of an LLM call against the tenant''s and user''s budgets, or 402 (PT402) with JSON details.';

CREATE FUNCTION saas_api.llm_budget_settle(reservation_id bigint, actual_micros bigint, actual_tokens bigint)
RETURNS boolean
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.llm_budget_settle(reservation_id, actual_micros, actual_tokens) $$;
COMMENT ON FUNCTION saas_api.llm_budget_settle(bigint, bigint, bigint) IS
  'Replaces a reservation by the actual cost; idempotent.';

CREATE FUNCTION saas_api.llm_budget_status()
RETURNS TABLE (budget_id bigint, scope text, period text, window_start timestamptz, resets_at timestamptz,
               max_cost_micros bigint, max_tokens bigint, used_micros bigint, used_tokens bigint,
               reserved_micros bigint, reserved_tokens bigint)
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.llm_budget_status() $$;
COMMENT ON FUNCTION saas_api.llm_budget_status() IS
  'The LLM budgets of the current tenant and user: limits, use, reservations and reset time.';

CREATE FUNCTION saas_api.llm_record_usage(
  provider text, model text, prompt_tokens bigint, completion_tokens bigint,
  cached_read_tokens bigint DEFAULT 0, cache_write_tokens bigint DEFAULT 0, reasoning_tokens bigint DEFAULT 0,
  cost_micros bigint DEFAULT NULL, cache_hit boolean DEFAULT false, saved_micros bigint DEFAULT NULL,
  latency_ms integer DEFAULT NULL, finish_reason text DEFAULT NULL, function_name text DEFAULT NULL,
  idempotency_key text DEFAULT NULL, reservation_id bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.llm_record_usage(provider, model, prompt_tokens, completion_tokens, cached_read_tokens,
            cache_write_tokens, reasoning_tokens, cost_micros, cache_hit, saved_micros, latency_ms, finish_reason,
            function_name, idempotency_key, reservation_id) $$;
COMMENT ON FUNCTION saas_api.llm_record_usage(text, text, bigint, bigint, bigint, bigint, bigint, bigint, boolean, bigint, integer, text, text, text, bigint) IS
  'Records one LLM call of the current tenant (ledger and daily rollup); settles reservation_id; idempotent by idempotency_key.';

INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege) VALUES
  ('llm', 'function', 'llm_cache_key(jsonb)', 'EXECUTE'),
  ('llm', 'function', 'llm_assemble_stream(jsonb)', 'EXECUTE'),
  ('llm', 'function', 'llm_cache_get(jsonb, timestamptz)', 'EXECUTE'),
  ('llm', 'function', 'llm_cache_lease(jsonb, integer, timestamptz)', 'EXECUTE'),
  ('llm', 'function', 'llm_cache_put(jsonb, jsonb, jsonb, interval, boolean, uuid, text, real[], timestamptz)', 'EXECUTE'),
  ('llm', 'function', 'llm_cache_lookup(jsonb, real[], timestamptz)', 'EXECUTE'),
  ('llm', 'function', 'llm_context_hash(jsonb)', 'EXECUTE'),
  ('llm', 'function', 'llm_semantic_stats(date, date)', 'EXECUTE'),
  ('llm', 'function', 'llm_shared_get(jsonb, timestamptz)', 'EXECUTE'),
  ('llm', 'function', 'llm_cache_stats(date, date)', 'EXECUTE'),
  ('llm', 'function', 'llm_budget_reserve(text, text, bigint, bigint, interval, timestamptz)', 'EXECUTE'),
  ('llm', 'function', 'llm_budget_settle(bigint, bigint, bigint)', 'EXECUTE'),
  ('llm', 'function', 'llm_budget_status()', 'EXECUTE'),
  ('llm', 'function', 'llm_record_usage(text, text, bigint, bigint, bigint, bigint, bigint, bigint, boolean, bigint, integer, text, text, text, bigint, timestamptz)', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_cache_get(jsonb)', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_cache_lease(jsonb, integer)', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_cache_put(jsonb, jsonb, jsonb, interval, boolean, uuid, text, real[])', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_cache_lookup(jsonb, real[])', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_semantic_stats(date, date)', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_shared_get(jsonb)', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_cache_stats(date, date)', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_budget_reserve(text, text, bigint, bigint, interval)', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_budget_settle(bigint, bigint, bigint)', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_budget_status()', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_record_usage(text, text, bigint, bigint, bigint, bigint, bigint, bigint, boolean, bigint, integer, text, text, text, bigint)', 'EXECUTE');

-- llm: roles that grant_api served before 0.2.0 get its saas_api wrappers,
-- as the other wrappers above (run grant_api again for the rest).
DO $carry_llm$
DECLARE
  grantee regrole;
  g record;
BEGIN
  FOR grantee IN
    SELECT DISTINCT a.grantee::regrole
    FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
    WHERE p.oid = '@extschema@.current_tenant()'::regprocedure
      AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner
    ORDER BY 1
  LOOP
    FOR g IN SELECT a.object_name FROM @extschema@.api_grants a
             WHERE a.module = 'llm' AND a.object_kind = 'function' AND a.object_name LIKE 'saas\_api.%' ORDER BY 1 LOOP
      EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s', g.object_name, grantee);
    END LOOP;
  END LOOP;
END
$carry_llm$;

-- ---------------------------------------------------------------------------
-- ltv (issue 18): the ledger on payments tables, summary, revenue metrics,
-- cohorts, customer health, retention risk. Its Rust functions as pgrx
-- declares them, then sql/ltv.sql as it is.
-- ---------------------------------------------------------------------------
CREATE TYPE @extschema@.retention_risk_result AS (
  score         integer,
  level         text,
  drivers       text[],
  rule_version  integer
);
COMMENT ON TYPE @extschema@.retention_risk_result IS
  'Result of saas.retention_risk: score 0-100 (higher is riskier), level (low, medium, high, critical), the drivers that explain it, and the version of the rules that produced it (0: the seed''s).';
CREATE FUNCTION @extschema@."_ltv_quintile"(
  "rank" bigint,
  "n" bigint
) RETURNS INT
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_ltv_quintile_wrapper';
CREATE FUNCTION @extschema@."_mrr_movement"(
  "prev" NUMERIC,
  "cur" NUMERIC,
  "had_before" bool
) RETURNS TEXT
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', '_mrr_movement_wrapper';
CREATE FUNCTION @extschema@."retention_risk"(
  "motivational_drivers_match" NUMERIC,
  "working_preferences_match" NUMERIC,
  "role_skill_fit" NUMERIC,
  "last_assessment_days" INT,
  "performance_trend" TEXT
) RETURNS @extschema@.retention_risk_result
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'retention_risk_wrapper';
CREATE FUNCTION @extschema@."retention_risk"(
  "motivational_drivers_match" NUMERIC,
  "working_preferences_match" NUMERIC,
  "role_skill_fit" NUMERIC,
  "last_assessment_days" INT,
  "performance_trend" TEXT,
  "rules" jsonb
) RETURNS @extschema@.retention_risk_result
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c
AS 'MODULE_PATHNAME', 'retention_risk_with_rules_wrapper';
CREATE FUNCTION @extschema@."_ltv_capture"()
RETURNS TRIGGER
LANGUAGE c
AS 'MODULE_PATHNAME', '_ltv_capture_wrapper';

-- pg_saas ltv: an incremental per-customer ledger on payments tables, the
-- lifetimes-style summary, SaaS revenue metrics and cohorts, retention-risk
-- scores and customer health. The scoring rules, the MRR movement rule and
-- the RFM quintile are Rust (src/ltv/); the rest is SQL (docs/ltv.md).

-- ---------------------------------------------------------------------------
-- Tracked payments tables (global configuration; a Citus reference table).
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.ltv_sources (
  source_id         bigint      GENERATED ALWAYS AS IDENTITY,
  relid             regclass    NOT NULL,
  tenant_column     name        NOT NULL,
  customer_column   name        NOT NULL,
  amount_column     name        NOT NULL,
  occurred_at_column name       NOT NULL,
  -- date, timestamp or timestamptz: how a row's UTC day is found
  occurred_at_type  text        NOT NULL,
  kind_column       name,
  refund_kinds      text[]      NOT NULL DEFAULT '{refund}',
  currency_column   name,
  default_currency  text        NOT NULL DEFAULT 'XXX',
  tracked_at        timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT ltv_sources_pkey PRIMARY KEY (source_id),
  CONSTRAINT ltv_sources_relid_key UNIQUE (relid),
  CONSTRAINT ltv_sources_time_type CHECK (occurred_at_type IN ('date', 'timestamp', 'timestamptz')),
  CONSTRAINT ltv_sources_currency CHECK (char_length(default_currency) BETWEEN 1 AND 16)
);
COMMENT ON TABLE @extschema@.ltv_sources IS
  'Payments tables tracked by saas.ltv_track(): which columns hold tenant, customer, amount, time, kind and currency.';
ALTER TABLE @extschema@.ltv_sources ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.ltv_sources', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.ltv_sources', 'source_id'), '');
-- A dropped table leaves the registry (registry.sql's sql_drop trigger),
-- and its ledger goes with it (ltv_sources_forget below).
INSERT INTO @extschema@.table_registries (registry, relid_column, module)
VALUES ('ltv_sources', 'relid', 'ltv');

-- ---------------------------------------------------------------------------
-- The ledger and the daily series (tenant tables, forced RLS, Citus-ready).
-- Money is numeric. Refunds are kept positive; net = gross - refunds.
--
-- Writers only append: the statement triggers add one row per statement
-- and tenant to ltv_pending (the statement's changes as signed deltas).
-- saas.ltv_compact() (run_maintenance's ltv task) folds pending rows into
-- the compacted series and ledger. Readers use the views ltv_daily and
-- ltv_ledger: compacted + pending, so every read is exact at every commit,
-- READ ONLY transactions included.
-- ---------------------------------------------------------------------------
-- One change of a statement: a customer-day's signed amounts and counts.
CREATE TYPE @extschema@.ltv_delta AS (
  customer_id   text,
  currency      text,
  day           date,
  gross         numeric,
  refunds       numeric,
  payments      bigint,
  refund_count  bigint
);
COMMENT ON TYPE @extschema@.ltv_delta IS
  'One change of a payments statement for saas.ltv_pending: customer, currency, UTC day, gross and refunds (signed: an old row of an UPDATE or DELETE counts negative), payment and refund counts (signed).';

CREATE TABLE @extschema@.ltv_daily_compacted (
  tenant_id     uuid    NOT NULL,
  source_id     bigint  NOT NULL,
  customer_id   text    NOT NULL,
  currency      text    NOT NULL,
  day           date    NOT NULL,
  gross         numeric NOT NULL DEFAULT 0,
  refunds       numeric NOT NULL DEFAULT 0,
  payments      bigint  NOT NULL DEFAULT 0,
  refund_count  bigint  NOT NULL DEFAULT 0,
  -- customer, currency, day order: the summary, cohorts and health read a
  -- tenant's series in key order and aggregate it without sorting.
  CONSTRAINT ltv_daily_compacted_pkey PRIMARY KEY (tenant_id, customer_id, currency, day, source_id)
);
COMMENT ON TABLE @extschema@.ltv_daily_compacted IS
  'The compacted part of saas.ltv_daily (read the view): per tenant, source, customer, currency and UTC day, payments and refunds folded in by saas.ltv_compact().';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.ltv_daily_compacted', '');

CREATE TABLE @extschema@.ltv_ledger_compacted (
  tenant_id         uuid    NOT NULL,
  source_id         bigint  NOT NULL,
  customer_id       text    NOT NULL,
  currency          text    NOT NULL,
  gross             numeric NOT NULL DEFAULT 0,
  refunds           numeric NOT NULL DEFAULT 0,
  net               numeric NOT NULL DEFAULT 0,
  payments          bigint  NOT NULL DEFAULT 0,
  refund_count      bigint  NOT NULL DEFAULT 0,
  first_payment_on  date,
  last_payment_on   date,
  CONSTRAINT ltv_ledger_compacted_pkey PRIMARY KEY (tenant_id, customer_id, currency, source_id)
);
COMMENT ON TABLE @extschema@.ltv_ledger_compacted IS
  'The compacted part of saas.ltv_ledger (read the view): per tenant, source, customer and currency, totals and first and last payment day folded in by saas.ltv_compact().';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.ltv_ledger_compacted', '');

-- Append-only: one row per statement, tenant and source (a statement's
-- deltas of one tenant in one array; very large statements in chunks of a
-- million). No key: rows are taken by ctid (FOR UPDATE SKIP LOCKED), and
-- the index serves the readers' tenant filter.
CREATE TABLE @extschema@.ltv_pending (
  tenant_id  uuid                         NOT NULL,
  source_id  bigint                       NOT NULL,
  deltas     @extschema@.ltv_delta[]      NOT NULL
);
CREATE INDEX ltv_pending_tenant ON @extschema@.ltv_pending (tenant_id, source_id);
-- Without a key, a publication FOR ALL TABLES would refuse compaction's
-- DELETE; the whole old row identifies it (WAL for compaction only).
ALTER TABLE @extschema@.ltv_pending REPLICA IDENTITY FULL;
COMMENT ON TABLE @extschema@.ltv_pending IS
  'Changes of tracked payments tables not yet folded into the compacted ledger: one row per statement, tenant and source, appended by the statement triggers and removed by saas.ltv_compact().';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.ltv_pending', '');

-- Per tenant, versioned retention-risk rules (the seed's when a tenant has none).
CREATE TABLE @extschema@.retention_risk_settings (
  tenant_id   uuid        NOT NULL,
  version     integer     NOT NULL,
  rules       jsonb       NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT retention_risk_settings_pkey PRIMARY KEY (tenant_id, version),
  CONSTRAINT retention_risk_settings_version CHECK (version > 0),
  CONSTRAINT retention_risk_settings_object CHECK (jsonb_typeof(rules) = 'object')
);
COMMENT ON TABLE @extschema@.retention_risk_settings IS
  'Retention-risk weights and thresholds per tenant, one row per version (saas.retention_risk_settings_set); the highest version applies.';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.retention_risk_settings', '');

-- Forced RLS, the tenant policies of enable_tenancy, and reads for the
-- tenant's admins and owners only; only this module's functions write.
DO $rls$
DECLARE
  rel regclass;
BEGIN
  FOREACH rel IN ARRAY ARRAY['@extschema@.ltv_daily_compacted'::regclass, '@extschema@.ltv_ledger_compacted'::regclass,
                             '@extschema@.ltv_pending'::regclass, '@extschema@.retention_risk_settings'::regclass] LOOP
    PERFORM @extschema@._tenancy_apply(rel, 'tenant_id', set_default => false);
    EXECUTE format('CREATE POLICY saas_ltv_admin_read ON %s AS RESTRICTIVE FOR SELECT USING ((SELECT @extschema@.has_role(''admin'')))', rel);
  END LOOP;
END
$rls$;

-- What readers see: compacted + pending, exact at every commit. Views run
-- as the caller (security_invoker), so the tables' RLS applies. The rows of
-- the series before summing (internal: the summary, cohorts and health
-- aggregate them themselves).
CREATE VIEW @extschema@._ltv_daily_rows WITH (security_invoker = true) AS
  SELECT c.tenant_id, c.source_id, c.customer_id, c.currency, c.day, c.gross, c.refunds, c.payments, c.refund_count
  FROM @extschema@.ltv_daily_compacted c
  UNION ALL
  SELECT p.tenant_id, p.source_id, d.customer_id, d.currency, d.day, d.gross, d.refunds, d.payments, d.refund_count
  FROM @extschema@.ltv_pending p CROSS JOIN LATERAL unnest(p.deltas) d;

CREATE VIEW @extschema@.ltv_daily WITH (security_invoker = true) AS
  SELECT r.tenant_id, r.source_id, r.customer_id, r.currency, r.day, sum(r.gross) AS gross, sum(r.refunds) AS refunds,
         sum(r.payments)::bigint AS payments, sum(r.refund_count)::bigint AS refund_count
  FROM @extschema@._ltv_daily_rows r
  GROUP BY r.tenant_id, r.customer_id, r.currency, r.day, r.source_id
  HAVING sum(r.payments) <> 0 OR sum(r.refund_count) <> 0;
COMMENT ON VIEW @extschema@.ltv_daily IS
  'Per tenant, source, customer, currency and UTC day: gross, refunds, payment count, refund count; kept by the triggers of saas.ltv_track() (compacted + pending, exact at every commit).';

-- First and last payment day: the compacted row's, unless the customer has
-- pending deltas; then from its series, compacted and pending, read for
-- those customers only (set-based: a join, not a lookup per customer).
CREATE VIEW @extschema@.ltv_ledger WITH (security_invoker = true) AS
  SELECT l.tenant_id, l.source_id, l.customer_id, l.currency, l.gross, l.refunds, l.gross - l.refunds AS net,
         l.payments, l.refund_count,
         CASE WHEN l.has_pending THEN s.first_on ELSE l.first_on END AS first_payment_on,
         CASE WHEN l.has_pending THEN s.last_on ELSE l.last_on END AS last_payment_on
  FROM (
    SELECT u.tenant_id, u.source_id, u.customer_id, u.currency, sum(u.gross) AS gross, sum(u.refunds) AS refunds,
           sum(u.payments)::bigint AS payments, sum(u.refund_count)::bigint AS refund_count,
           min(u.first_on) AS first_on, max(u.last_on) AS last_on, bool_or(u.pending) AS has_pending
    FROM (
      SELECT c.tenant_id, c.source_id, c.customer_id, c.currency, c.gross, c.refunds, c.payments, c.refund_count,
             c.first_payment_on AS first_on, c.last_payment_on AS last_on, false AS pending
      FROM @extschema@.ltv_ledger_compacted c
      UNION ALL
      SELECT p.tenant_id, p.source_id, d.customer_id, d.currency, d.gross, d.refunds, d.payments, d.refund_count,
             NULL::date, NULL::date, true
      FROM @extschema@.ltv_pending p CROSS JOIN LATERAL unnest(p.deltas) d) u
    GROUP BY u.tenant_id, u.customer_id, u.currency, u.source_id
    HAVING sum(u.payments) <> 0 OR sum(u.refund_count) <> 0) l
  LEFT JOIN (
    SELECT x.tenant_id, x.source_id, x.customer_id, x.currency,
           min(x.day) FILTER (WHERE x.payments > 0) AS first_on, max(x.day) FILTER (WHERE x.payments > 0) AS last_on
    FROM (
      SELECT y.tenant_id, y.source_id, y.customer_id, y.currency, y.day, sum(y.payments) AS payments
      FROM (
        SELECT p.tenant_id, p.source_id, d.customer_id, d.currency, d.day, d.payments
        FROM @extschema@.ltv_pending p CROSS JOIN LATERAL unnest(p.deltas) d
        UNION ALL
        SELECT c.tenant_id, c.source_id, c.customer_id, c.currency, c.day, c.payments
        FROM @extschema@.ltv_daily_compacted c
        WHERE EXISTS (SELECT FROM @extschema@.ltv_pending p CROSS JOIN LATERAL unnest(p.deltas) d
                      WHERE p.tenant_id = c.tenant_id AND p.source_id = c.source_id
                        AND d.customer_id = c.customer_id AND d.currency = c.currency)) y
      GROUP BY y.tenant_id, y.customer_id, y.currency, y.source_id, y.day) x
    GROUP BY x.tenant_id, x.customer_id, x.currency, x.source_id) s
    ON s.tenant_id = l.tenant_id AND s.customer_id = l.customer_id AND s.currency = l.currency AND s.source_id = l.source_id;
COMMENT ON VIEW @extschema@.ltv_ledger IS
  'Per tenant, source, customer and currency: gross, refunds, net, payment count, first and last payment day (UTC); kept by the triggers of saas.ltv_track() (compacted + pending, exact at every commit).';

-- Subscriptions tables registered by saas.ltv_track_subscriptions (global).
CREATE TABLE @extschema@.ltv_subscription_sources (
  relid              regclass    NOT NULL,
  tenant_column      name        NOT NULL,
  customer_column    name        NOT NULL,
  mrr_column         name        NOT NULL,
  started_at_column  name        NOT NULL,
  ended_at_column    name        NOT NULL,
  status_column      name,
  excluded_statuses  text[]      NOT NULL DEFAULT '{}',
  currency_column    name,
  default_currency   text        NOT NULL DEFAULT 'XXX',
  tracked_at         timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT ltv_subscription_sources_pkey PRIMARY KEY (relid),
  CONSTRAINT ltv_subscription_sources_currency CHECK (char_length(default_currency) BETWEEN 1 AND 16)
);
COMMENT ON TABLE @extschema@.ltv_subscription_sources IS
  'Subscriptions tables saas.revenue_metrics() reads: customer, monthly amount, start, end, status, currency columns.';
ALTER TABLE @extschema@.ltv_subscription_sources ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.ltv_subscription_sources', '');
INSERT INTO @extschema@.table_registries (registry, relid_column, module)
VALUES ('ltv_subscription_sources', 'relid', 'ltv');

-- ---------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------

-- The type of a column, or a specific error.
CREATE FUNCTION @extschema@._ltv_column(rel regclass, col name, what text, fn text)
RETURNS regtype
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t regtype;
BEGIN
  IF col IS NULL THEN
    RAISE EXCEPTION '%: the % column may not be NULL', fn, what
      USING ERRCODE = 'null_value_not_allowed',
            HINT = format('Name the column of %s that holds the %s.', rel, what);
  END IF;
  SELECT a.atttypid::regtype INTO t FROM pg_attribute a
  WHERE a.attrelid = rel AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
  IF t IS NULL THEN
    RAISE EXCEPTION 'column "%" of "%" does not exist', @extschema@._echo(col), rel
      USING ERRCODE = 'undefined_column',
            HINT = format('Name the column of %s that holds the %s. Its columns: %s.', rel, what,
                          (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a
                           WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped));
  END IF;
  RETURN t;
END
$$;

CREATE FUNCTION @extschema@._ltv_require_type(rel regclass, col name, t regtype, allowed regtype[], what text, hint text)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT (t = ANY (allowed) OR (SELECT typtype FROM pg_type WHERE oid = t) = 'd'
                              AND (SELECT typbasetype FROM pg_type WHERE oid = t) = ANY (allowed)) THEN
    RAISE EXCEPTION 'column "%" of "%" is %, not a % column', col, rel, format_type(t, NULL), what
      USING ERRCODE = 'datatype_mismatch', HINT = hint;
  END IF;
END
$$;

-- A relation ltv_track / ltv_track_subscriptions can register.
CREATE FUNCTION @extschema@._ltv_require_table(rel regclass, fn text)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  cls pg_class%ROWTYPE;
BEGIN
  IF rel IS NULL THEN
    RAISE EXCEPTION '%: the table may not be NULL', fn
      USING ERRCODE = 'null_value_not_allowed',
            HINT = format('Pass the table, e.g. %s(''app.payments'').', fn);
  END IF;
  PERFORM @extschema@._require_registrable(rel, fn);
  SELECT * INTO STRICT cls FROM pg_class WHERE oid = rel;
  IF cls.relkind NOT IN ('r', 'p') THEN
    RAISE EXCEPTION '"%" is not a table', rel
      USING ERRCODE = 'wrong_object_type',
            DETAIL = format('Its relkind is %L.', cls.relkind),
            HINT = format('%s tracks tables and partitioned tables (triggers keep the ledger); register the table under the view.', fn);
  END IF;
  IF cls.relispartition THEN
    RAISE EXCEPTION '"%" is a partition of "%"', rel, (SELECT inhparent::regclass FROM pg_inherits WHERE inhrelid = rel)
      USING ERRCODE = 'wrong_object_type',
            HINT = format('Call %s on the partitioned table: its statement triggers see every partition.', fn);
  END IF;
  IF cls.relnamespace IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace, '@extschema@'::regnamespace) THEN
    RAISE EXCEPTION '"%" belongs to % and is not a user table', rel, cls.relnamespace::regnamespace
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'Track your application''s payments table.';
  END IF;
END
$$;

-- The changes of one statement, one row per source row (+1 new, -1 old),
-- as SQL over the transition tables ltv_new / ltv_old. The sign is written
-- into the expressions where it is fixed (INSERT, DELETE, the whole table):
-- a numeric multiplication per row costs the trigger measurably.
CREATE FUNCTION @extschema@._ltv_changes_sql(s @extschema@.ltv_sources, op text)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  rows_sql text;
  day_expr text;
  refund_expr text;
  amount_expr text;
  refund_amount_expr text;
  count_expr text;
BEGIN
  rows_sql := CASE op
    WHEN 'INSERT' THEN 'SELECT n.* FROM ltv_new n'
    WHEN 'DELETE' THEN 'SELECT o.* FROM ltv_old o'
    WHEN 'UPDATE' THEN 'SELECT n.*, 1 AS ltv_sign FROM ltv_new n UNION ALL SELECT o.*, -1 FROM ltv_old o'
    -- reconcile / rebuild: the whole table
    ELSE format('SELECT t.* FROM %s t', s.relid) END;
  amount_expr := CASE op
    WHEN 'UPDATE' THEN format('r.%I::numeric * r.ltv_sign', s.amount_column)
    WHEN 'DELETE' THEN format('-(r.%I::numeric)', s.amount_column)
    ELSE format('r.%I::numeric', s.amount_column) END;
  refund_amount_expr := CASE op
    WHEN 'UPDATE' THEN format('abs(r.%I::numeric) * r.ltv_sign', s.amount_column)
    WHEN 'DELETE' THEN format('-abs(r.%I::numeric)', s.amount_column)
    ELSE format('abs(r.%I::numeric)', s.amount_column) END;
  count_expr := CASE op WHEN 'UPDATE' THEN 'r.ltv_sign' WHEN 'DELETE' THEN '-1' ELSE '1' END;
  day_expr := CASE s.occurred_at_type
    WHEN 'timestamptz' THEN format('(r.%I AT TIME ZONE ''UTC'')::date', s.occurred_at_column)
    ELSE format('r.%I::date', s.occurred_at_column) END;
  refund_expr := CASE WHEN s.kind_column IS NULL THEN format('r.%I < 0', s.amount_column)
                      ELSE format('coalesce(r.%I::text = ANY (%L::text[]), false)', s.kind_column, s.refund_kinds) END;
  RETURN format(
    'SELECT r.%I AS tenant_id, r.%I::text AS customer_id, %s AS currency, %s AS day,
            CASE WHEN %s THEN 0 ELSE %s END AS gross,
            CASE WHEN %s THEN %s ELSE 0 END AS refunds,
            CASE WHEN %s THEN 0 ELSE %s END AS payments,
            CASE WHEN %s THEN %s ELSE 0 END AS refund_count
     FROM (%s) r
     WHERE r.%I IS NOT NULL AND r.%I IS NOT NULL AND r.%I IS NOT NULL AND r.%I IS NOT NULL',
    s.tenant_column, s.customer_column,
    CASE WHEN s.currency_column IS NULL THEN format('%L::text', s.default_currency)
         ELSE format('coalesce(r.%I::text, %L)', s.currency_column, s.default_currency) END,
    day_expr,
    refund_expr, amount_expr,
    refund_expr, refund_amount_expr,
    refund_expr, count_expr, refund_expr, count_expr,
    rows_sql,
    s.tenant_column, s.customer_column, s.amount_column, s.occurred_at_column);
END
$$;

-- The SQL the statement trigger saas._ltv_capture (Rust, src/ltv/capture.rs)
-- prepares once per trigger and backend and keeps: one INSERT of the
-- statement's changes into ltv_pending, one row per tenant, an UPDATE's
-- changes summed per customer-day first (rows whose ledger values did not
-- change leave nothing). chunked (statements of over a million rows, so no
-- array nears the 1 GB limit of a value): one row per tenant and million
-- rows (a window function, which would cost small statements a third of
-- the trigger's time). $1 is the source, $2 the
-- relation the trigger is on: a partition that is no longer in the
-- source's tree (detached) counts nothing, nor does a source untracked in
-- this transaction.
CREATE FUNCTION @extschema@._ltv_capture_sql(p_source bigint, op text, chunked boolean)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  s @extschema@.ltv_sources;
  rows_sql text;
  refund text;
  sgn text;
  head text;
BEGIN
  SELECT * INTO STRICT s FROM @extschema@.ltv_sources WHERE source_id = p_source;
  IF op NOT IN ('INSERT', 'UPDATE', 'DELETE') THEN
    RAISE EXCEPTION 'saas._ltv_capture_sql: unknown operation %', op
      USING ERRCODE = 'invalid_parameter_value', HINT = 'INSERT, UPDATE or DELETE.';
  END IF;
  IF op IN ('INSERT', 'DELETE') THEN
    -- One refund test and one composite per row (the generic columns of
    -- _ltv_changes_sql would test it four times).
    refund := CASE WHEN s.kind_column IS NULL THEN format('r.%I < 0', s.amount_column)
                   ELSE format('coalesce(r.%I::text = ANY (%L::text[]), false)', s.kind_column, s.refund_kinds) END;
    sgn := CASE op WHEN 'DELETE' THEN '-' ELSE '' END;
    head := format('r.%I::text, %s, %s', s.customer_column,
                   CASE WHEN s.currency_column IS NULL THEN format('%L::text', s.default_currency)
                        ELSE format('coalesce(r.%I::text, %L)', s.currency_column, s.default_currency) END,
                   CASE s.occurred_at_type
                     WHEN 'timestamptz' THEN format('(r.%I AT TIME ZONE ''UTC'')::date', s.occurred_at_column)
                     ELSE format('r.%I::date', s.occurred_at_column) END);
    RETURN format(
      'INSERT INTO @extschema@.ltv_pending (tenant_id, source_id, deltas)
       SELECT r.%1$I, $1, array_agg(CASE WHEN %2$s
                                         THEN ROW(%3$s, 0, %4$sabs(r.%5$I::numeric), 0, %4$s1)::@extschema@.ltv_delta
                                         ELSE ROW(%3$s, %4$sr.%5$I::numeric, 0, %4$s1, 0)::@extschema@.ltv_delta END)
       FROM (%6$s) r
       WHERE r.%1$I IS NOT NULL AND r.%7$I IS NOT NULL AND r.%5$I IS NOT NULL AND r.%8$I IS NOT NULL
         AND EXISTS (SELECT FROM @extschema@.ltv_sources s
                     WHERE s.source_id = $1 AND s.relid = coalesce(pg_catalog.pg_partition_root($2), $2))
       GROUP BY r.%1$I%9$s',
      s.tenant_column, refund, head, sgn, s.amount_column,
      CASE WHEN chunked THEN format('SELECT t.*, row_number() OVER () / 1000000 AS ltv_chunk FROM %s t',
                                    CASE op WHEN 'INSERT' THEN 'ltv_new' ELSE 'ltv_old' END)
           ELSE format('SELECT * FROM %s', CASE op WHEN 'INSERT' THEN 'ltv_new' ELSE 'ltv_old' END) END,
      s.customer_column, s.occurred_at_column,
      CASE WHEN chunked THEN ', r.ltv_chunk' ELSE '' END);
  END IF;
  rows_sql := @extschema@._ltv_changes_sql(s, op);
  IF op = 'UPDATE' THEN
    rows_sql := format(
      'SELECT tenant_id, customer_id, currency, day, sum(gross) AS gross, sum(refunds) AS refunds,
              sum(payments) AS payments, sum(refund_count) AS refund_count
       FROM (%s) u GROUP BY 1, 2, 3, 4
       HAVING sum(payments) <> 0 OR sum(refund_count) <> 0 OR sum(gross) <> 0 OR sum(refunds) <> 0', rows_sql);
  END IF;
  RETURN format(
    'INSERT INTO @extschema@.ltv_pending (tenant_id, source_id, deltas)
     SELECT ch.tenant_id, $1, array_agg(ROW(ch.customer_id, ch.currency, ch.day, ch.gross, ch.refunds,
                                            ch.payments, ch.refund_count)::@extschema@.ltv_delta)
     FROM (%s) ch
     WHERE EXISTS (SELECT FROM @extschema@.ltv_sources s
                   WHERE s.source_id = $1 AND s.relid = coalesce(pg_catalog.pg_partition_root($2), $2))
     GROUP BY ch.tenant_id%s',
    CASE WHEN chunked THEN format('SELECT c.*, row_number() OVER () / 1000000 AS chunk FROM (%s) c', rows_sql) ELSE rows_sql END,
    CASE WHEN chunked THEN ', ch.chunk' ELSE '' END);
END
$$;

-- The ledger rows of the given customers (source, tenant, customer,
-- currency), recomputed from their compacted series (ledger rows without
-- days deleted). Runs as the caller: ltv_compact (SECURITY DEFINER).
CREATE FUNCTION @extschema@._ltv_ledger_refresh(p_sources bigint[], p_tenants uuid[], p_customers text[], p_currencies text[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  n bigint;
BEGIN
  IF p_tenants IS NULL THEN
    RETURN 0;
  END IF;
  -- Lock the customers' ledger rows (made first if missing, waiting for a
  -- compaction that is making one) before reading their series: a
  -- compaction that changed a series and holds a ledger row has committed
  -- by then, and the next statement's snapshot sees it; one that comes
  -- later adds its delta to what is written here (no lost update).
  INSERT INTO @extschema@.ltv_ledger_compacted AS l (tenant_id, source_id, customer_id, currency)
  SELECT k.tenant_id, k.source_id, k.customer_id, k.currency
  FROM unnest(p_sources, p_tenants, p_customers, p_currencies) AS k(source_id, tenant_id, customer_id, currency)
  ORDER BY 1, 3, 4, 2
  ON CONFLICT (tenant_id, customer_id, currency, source_id) DO NOTHING;
  PERFORM FROM @extschema@.ltv_ledger_compacted l
  JOIN unnest(p_sources, p_tenants, p_customers, p_currencies) AS k(source_id, tenant_id, customer_id, currency)
    ON l.tenant_id = k.tenant_id AND l.source_id = k.source_id AND l.customer_id = k.customer_id AND l.currency = k.currency
  ORDER BY l.tenant_id, l.customer_id, l.currency, l.source_id
  FOR UPDATE OF l;
  WITH k AS (SELECT * FROM unnest(p_sources, p_tenants, p_customers, p_currencies) AS k(source_id, tenant_id, customer_id, currency)),
  agg AS (
    SELECT k.source_id, k.tenant_id, k.customer_id, k.currency, sum(d.gross) AS gross, sum(d.refunds) AS refunds,
           sum(d.payments) AS payments, sum(d.refund_count) AS refund_count,
           min(d.day) FILTER (WHERE d.payments > 0) AS first_on, max(d.day) FILTER (WHERE d.payments > 0) AS last_on
    FROM k LEFT JOIN @extschema@.ltv_daily_compacted d
      ON d.tenant_id = k.tenant_id AND d.source_id = k.source_id AND d.customer_id = k.customer_id AND d.currency = k.currency
    GROUP BY 1, 2, 3, 4),
  del AS (
    DELETE FROM @extschema@.ltv_ledger_compacted l USING agg
    WHERE agg.gross IS NULL AND l.tenant_id = agg.tenant_id AND l.source_id = agg.source_id
      AND l.customer_id = agg.customer_id AND l.currency = agg.currency)
  INSERT INTO @extschema@.ltv_ledger_compacted AS l (tenant_id, source_id, customer_id, currency, gross, refunds, net,
                                                     payments, refund_count, first_payment_on, last_payment_on)
  SELECT tenant_id, source_id, customer_id, currency, gross, refunds, gross - refunds, payments, refund_count, first_on, last_on
  FROM agg WHERE gross IS NOT NULL ORDER BY 1, 3, 4, 2
  ON CONFLICT (tenant_id, customer_id, currency, source_id) DO UPDATE
    SET gross = EXCLUDED.gross, refunds = EXCLUDED.refunds, net = EXCLUDED.net, payments = EXCLUDED.payments,
        refund_count = EXCLUDED.refund_count, first_payment_on = EXCLUDED.first_payment_on,
        last_payment_on = EXCLUDED.last_payment_on;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END
$$;

-- ---------------------------------------------------------------------------
-- Compaction: pending rows folded into the compacted series and ledger
-- ---------------------------------------------------------------------------
-- Compactions share this lock; a recomputation (ltv_track's backfill,
-- ltv_rebuild) takes it alone, so no compaction folds deltas it has counted.
CREATE FUNCTION @extschema@._ltv_compact_lock_key()
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN 7310480513297725713;

-- Rounds: a compaction takes at most round_rows pending rows at a time,
-- and no more rows once a round's deltas take 16 MB as stored
-- (pg_column_size, which reads no value: a chunked statement's row is
-- about a round of its own), so no round's arrays near the 1 GB limit of a
-- value, or memory, however large the log has grown. It goes on until it
-- has folded as many rows as the log held when it began (rows appended
-- meanwhile wait for the next run) or a round finds none.
CREATE FUNCTION @extschema@.ltv_compact(source regclass DEFAULT NULL, round_rows integer DEFAULT 100000)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  sid bigint;
  n bigint;
  total bigint := 0;
  backlog bigint;
  rounds integer := 0;
  days @extschema@.ltv_daily_compacted[];
  kt uuid[]; ks bigint[]; kc text[]; kcu text[];
BEGIN
  IF round_rows IS NULL OR round_rows < 1 THEN
    RAISE EXCEPTION 'saas.ltv_compact: round_rows is %, not a positive number of pending rows', coalesce(round_rows::text, 'NULL')
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass the pending rows to fold per round (the default is 1000), or leave it out.';
  END IF;
  IF source IS NOT NULL THEN
    sid := (@extschema@._ltv_source(source, 'saas.ltv_compact')).source_id;
  END IF;
  PERFORM pg_advisory_xact_lock_shared(@extschema@._ltv_compact_lock_key());
  SELECT count(*) INTO backlog FROM @extschema@.ltv_pending q WHERE sid IS NULL OR q.source_id = sid;
  WHILE total < backlog LOOP
    -- Take pending rows no other compaction holds (SKIP LOCKED: two
    -- compactions never fold one row twice), summed per customer-day, in
    -- key order (two compactions lock rows in one order within a round).
    -- Rows locked here but left for the next round stay this one's.
    WITH taken AS (
      DELETE FROM @extschema@.ltv_pending x
      WHERE x.ctid = ANY (ARRAY(
        SELECT w.ctid FROM (
          SELECT l.ctid, l.size, sum(l.size) OVER (ROWS UNBOUNDED PRECEDING) AS upto
          FROM (SELECT q.ctid, pg_column_size(q.deltas)::bigint AS size FROM @extschema@.ltv_pending q
                WHERE sid IS NULL OR q.source_id = sid LIMIT round_rows FOR UPDATE SKIP LOCKED) l) w
        WHERE w.upto - w.size < 16777216))
      RETURNING x.tenant_id, x.source_id, x.deltas),
    d AS (
      SELECT x.tenant_id, x.source_id, e.customer_id, e.currency, e.day, sum(e.gross) AS g, sum(e.refunds) AS rf,
             sum(e.payments)::bigint AS p, sum(e.refund_count)::bigint AS rc
      FROM taken x CROSS JOIN LATERAL unnest(x.deltas) e
      GROUP BY 1, 2, 3, 4, 5)
    SELECT (SELECT count(*) FROM taken),
           array_agg(ROW(d.tenant_id, d.source_id, d.customer_id, d.currency, d.day, d.g, d.rf, d.p, d.rc)::@extschema@.ltv_daily_compacted
                     ORDER BY d.tenant_id, d.customer_id, d.currency, d.day, d.source_id)
    INTO n, days
    FROM d;
    EXIT WHEN n = 0;
    total := total + n;
    rounds := rounds + 1;
    RAISE DEBUG 'saas.ltv_compact: round % folded % pending rows', rounds, n;
    CONTINUE WHEN days IS NULL;
    -- The series; days left at zero go (a day may hold a part of its
    -- changes only, e.g. an amount's change folded before the payment: it
    -- stays).
    INSERT INTO @extschema@.ltv_daily_compacted AS x
    SELECT * FROM unnest(days)
    ON CONFLICT (tenant_id, customer_id, currency, day, source_id) DO UPDATE
      SET gross = x.gross + EXCLUDED.gross, refunds = x.refunds + EXCLUDED.refunds,
          payments = x.payments + EXCLUDED.payments, refund_count = x.refund_count + EXCLUDED.refund_count;
    DELETE FROM @extschema@.ltv_daily_compacted x
    USING unnest(days) k
    WHERE x.tenant_id = k.tenant_id AND x.customer_id = k.customer_id AND x.currency = k.currency
      AND x.day = k.day AND x.source_id = k.source_id
      AND x.payments = 0 AND x.refund_count = 0 AND x.gross = 0 AND x.refunds = 0;
    -- The ledger of every touched customer from its compacted series. Not
    -- by delta: concurrent compactions fold disjoint parts of the log in
    -- any order (a deletion can be folded before the insertion it undoes),
    -- so the compacted series may pass through days of negative counts,
    -- and first and last payment are only right when read from the series.
    -- The ledger rows are locked before the series is read
    -- (_ltv_ledger_refresh): of two compactions touching a customer, the
    -- later sees the earlier.
    SELECT array_agg(k.source_id ORDER BY k.tenant_id, k.customer_id, k.currency, k.source_id),
           array_agg(k.tenant_id ORDER BY k.tenant_id, k.customer_id, k.currency, k.source_id),
           array_agg(k.customer_id ORDER BY k.tenant_id, k.customer_id, k.currency, k.source_id),
           array_agg(k.currency ORDER BY k.tenant_id, k.customer_id, k.currency, k.source_id)
    INTO ks, kt, kc, kcu
    FROM (SELECT DISTINCT u.source_id, u.tenant_id, u.customer_id, u.currency FROM unnest(days) u) k;
    PERFORM @extschema@._ltv_ledger_refresh(ks, kt, kc, kcu);
  END LOOP;
  RETURN total;
END
$$;
COMMENT ON FUNCTION @extschema@.ltv_compact(regclass, integer) IS
  'Folds the pending changes of one tracked table (NULL: all) into the compacted ledger and daily series, in rounds of at most round_rows pending rows (and 16 MB of stored deltas); returns the pending rows folded. Reads are exact before and after; run_maintenance runs it.';

-- run_maintenance's full pass compacts every source, after giving every
-- relation of each tracked tree its triggers (a partition another tool
-- attached from inside a function, which the ATTACH event trigger cannot
-- tell from a restore's ALTER TABLE, gets them here).
CREATE FUNCTION @extschema@._ltv_maintenance(p_now timestamptz)
RETURNS TABLE (parent_table regclass, action text, partition_name text, detail text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  n bigint;
BEGIN
  PERFORM @extschema@._ltv_sync_triggers(s.source_id) FROM @extschema@.ltv_sources s ORDER BY s.source_id;
  n := @extschema@.ltv_compact(NULL);
  IF n > 0 THEN
    parent_table := '@extschema@.ltv_pending'::regclass; action := 'compact'; partition_name := NULL;
    detail := format('pending rows folded into the ledger: %s', n);
    RETURN NEXT;
  END IF;
END
$$;
INSERT INTO @extschema@.maintenance_tasks (task, module, function_name, run_order, reports_as)
VALUES ('ltv_compact', 'ltv', '_ltv_maintenance', 50, 'ltv_pending');

-- The trigger function (declared by pgrx) reads the registry and writes the
-- pending log as the extension's owner, whoever changes the payments.
ALTER FUNCTION @extschema@._ltv_capture() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- The three statement triggers of one relation of a tracked table (the
-- table, and every partition: statement triggers fire only on the table a
-- statement names, so each relation counts its own statements once).
CREATE FUNCTION @extschema@._ltv_create_triggers(rel regclass, p_source bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = rel AND tgname = 'saas_ltv_insert') THEN
    EXECUTE format('CREATE TRIGGER saas_ltv_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS ltv_new
                    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._ltv_capture(%L)', rel, p_source);
  END IF;
  IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = rel AND tgname = 'saas_ltv_update') THEN
    EXECUTE format('CREATE TRIGGER saas_ltv_update AFTER UPDATE ON %s REFERENCING OLD TABLE AS ltv_old NEW TABLE AS ltv_new
                    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._ltv_capture(%L)', rel, p_source);
  END IF;
  IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = rel AND tgname = 'saas_ltv_delete') THEN
    EXECUTE format('CREATE TRIGGER saas_ltv_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS ltv_old
                    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._ltv_capture(%L)', rel, p_source);
  END IF;
END
$$;

-- The ltv triggers there are: relation, trigger name, source.
CREATE FUNCTION @extschema@._ltv_triggers()
RETURNS TABLE (rel regclass, tgname name, source_id bigint)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT g.tgrelid::regclass, g.tgname,
         convert_from(substring(g.tgargs FROM 1 FOR position('\x00'::bytea IN g.tgargs) - 1), 'UTF8')::bigint
  FROM pg_trigger g
  WHERE g.tgfoid = '@extschema@._ltv_capture()'::regprocedure AND g.tgnargs = 1
$$;

-- Triggers every relation of a source's tree has; drops those of
-- relations that left it (DETACH PARTITION) or of a source that is gone.
CREATE FUNCTION @extschema@._ltv_sync_triggers(p_source bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  root regclass := (SELECT relid FROM @extschema@.ltv_sources WHERE source_id = p_source);
  r record;
BEGIN
  FOR r IN SELECT t.rel, t.tgname FROM @extschema@._ltv_triggers() t
           WHERE t.source_id = p_source
             AND (root IS NULL OR coalesce(pg_partition_root(t.rel), t.rel) IS DISTINCT FROM root)
           ORDER BY t.rel::text, t.tgname LOOP
    EXECUTE format('DROP TRIGGER %I ON %s', r.tgname, r.rel);
  END LOOP;
  IF root IS NOT NULL THEN
    PERFORM @extschema@._ltv_create_triggers(root, p_source);
    FOR r IN WITH RECURSIVE tree(relid) AS (
               SELECT root::oid
               UNION ALL
               SELECT i.inhrelid FROM tree t JOIN pg_inherits i ON i.inhparent = t.relid)
             SELECT tree.relid::regclass AS rel FROM tree WHERE tree.relid <> root ORDER BY 1::text LOOP
      PERFORM @extschema@._ltv_create_triggers(r.rel, p_source);
    END LOOP;
  END IF;
END
$$;

-- A new partition of a tracked table gets the triggers (partition
-- maintenance and CREATE TABLE ... PARTITION OF, through the partitions
-- module's hooks).
CREATE FUNCTION @extschema@._ltv_partition_hook(parent regclass, part regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  sid bigint;
BEGIN
  SELECT s.source_id INTO sid FROM @extschema@.ltv_sources s WHERE s.relid = coalesce(pg_partition_root(part), parent);
  IF FOUND THEN
    PERFORM @extschema@._ltv_create_triggers(part, sid);
  END IF;
END
$$;
INSERT INTO @extschema@.partition_hooks (hook_name, hook, builtin)
VALUES ('ltv', '@extschema@._ltv_partition_hook(regclass, regclass)', true);

-- ATTACH and DETACH PARTITION (which run no partition hooks: see
-- partitions.sql): a tracked tree's relations get the triggers on ATTACH,
-- and any ALTER TABLE drops those of relations that left a tracked tree.
-- Only a statement that attaches makes triggers: pg_restore's other ALTER
-- TABLEs (constraints, after the registry's rows are back) must not make
-- what the dump then creates. When a dump attaches partitions the registry
-- is still empty (its rows come with the data).
CREATE FUNCTION @extschema@._ltv_on_alter_table()
RETURNS event_trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  sid bigint;
BEGIN
  IF NOT EXISTS (SELECT FROM @extschema@.ltv_sources) THEN
    RETURN;
  END IF;
  FOR sid IN SELECT DISTINCT s.source_id
             FROM pg_event_trigger_ddl_commands() c
             JOIN pg_class r ON r.oid = c.objid AND r.relkind IN ('r', 'p')
             JOIN @extschema@.ltv_sources s ON s.relid = coalesce(pg_partition_root(c.objid), c.objid)
             WHERE c.object_type = 'table' AND current_query() ~* '\mattach\s+partition\M'
             UNION
             SELECT t.source_id FROM @extschema@._ltv_triggers() t
             JOIN @extschema@.ltv_sources s USING (source_id)
             WHERE coalesce(pg_partition_root(t.rel), t.rel) <> s.relid
             ORDER BY 1 LOOP
    PERFORM @extschema@._ltv_sync_triggers(sid);
  END LOOP;
END
$$;
CREATE EVENT TRIGGER saas_ltv_partitions ON ddl_command_end
  WHEN TAG IN ('ALTER TABLE')
  EXECUTE FUNCTION @extschema@._ltv_on_alter_table();

-- A source's row by table, or a specific error.
CREATE FUNCTION @extschema@._ltv_source(source regclass, fn text)
RETURNS @extschema@.ltv_sources
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  s @extschema@.ltv_sources;
BEGIN
  IF source IS NULL THEN
    RAISE EXCEPTION '%: the table may not be NULL', fn
      USING ERRCODE = 'null_value_not_allowed', HINT = format('Pass a table tracked by saas.ltv_track, e.g. %s(''app.payments'').', fn);
  END IF;
  SELECT * INTO s FROM @extschema@.ltv_sources WHERE relid = source;
  IF NOT FOUND THEN
    RAISE EXCEPTION '"%" is not tracked by saas.ltv_track', source
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = format('Track it first: SELECT saas.ltv_track(%L, ...). Tracked tables: %s.', source::text,
                          coalesce((SELECT string_agg(relid::text, ', ' ORDER BY relid::text) FROM @extschema@.ltv_sources), 'none'));
  END IF;
  RETURN s;
END
$$;

-- ---------------------------------------------------------------------------
-- ltv_track / ltv_untrack
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.ltv_track(
  source regclass,
  customer_column name DEFAULT 'customer_id',
  amount_column name DEFAULT 'amount',
  occurred_at_column name DEFAULT 'occurred_at',
  kind_column name DEFAULT NULL,
  refund_kinds text[] DEFAULT '{refund}',
  currency_column name DEFAULT NULL,
  default_currency text DEFAULT 'XXX',
  tenant_column name DEFAULT 'tenant_id')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  s @extschema@.ltv_sources;
  t regtype;
  time_type text;
  n bigint;
BEGIN
  PERFORM @extschema@._ltv_require_table(source, 'saas.ltv_track');
  IF EXISTS (SELECT FROM @extschema@.ltv_sources WHERE relid = source) THEN
    RAISE EXCEPTION '"%" is tracked already', source
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = format('To change its columns: SELECT saas.ltv_untrack(%L); then ltv_track again (the ledger is rebuilt).', source::text);
  END IF;
  t := @extschema@._ltv_column(source, tenant_column, 'tenant id', 'saas.ltv_track');
  PERFORM @extschema@._ltv_require_type(source, tenant_column, t, ARRAY['uuid'::regtype], 'uuid',
    'The ledger is per tenant: name the uuid tenant column (tenant_column => ...).');
  t := @extschema@._ltv_column(source, customer_column, 'customer', 'saas.ltv_track');
  t := @extschema@._ltv_column(source, amount_column, 'amount', 'saas.ltv_track');
  PERFORM @extschema@._ltv_require_type(source, amount_column, t,
    ARRAY['numeric', 'int2', 'int4', 'int8']::regtype[], 'numeric',
    'Amounts are money: numeric (or an integer of minor units). float and money columns are refused: convert with ALTER TABLE ... TYPE numeric.');
  t := @extschema@._ltv_column(source, occurred_at_column, 'payment time', 'saas.ltv_track');
  PERFORM @extschema@._ltv_require_type(source, occurred_at_column, t,
    ARRAY['timestamptz', 'timestamp', 'date']::regtype[], 'temporal',
    'Name the timestamptz, timestamp or date column of the payment time.');
  time_type := CASE WHEN t = 'timestamptz'::regtype OR (SELECT typbasetype FROM pg_type WHERE oid = t) = 'timestamptz'::regtype THEN 'timestamptz'
                    WHEN t = 'timestamp'::regtype OR (SELECT typbasetype FROM pg_type WHERE oid = t) = 'timestamp'::regtype THEN 'timestamp'
                    ELSE 'date' END;
  IF kind_column IS NOT NULL THEN
    t := @extschema@._ltv_column(source, kind_column, 'payment kind', 'saas.ltv_track');
    IF NOT (t IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype, 'name'::regtype)
            OR (SELECT typtype FROM pg_type WHERE oid = t) = 'e') THEN
      RAISE EXCEPTION 'column "%" of "%" is %, not a text or enum column', kind_column, source, format_type(t, NULL)
        USING ERRCODE = 'datatype_mismatch',
              HINT = 'The kind column tells payments from refunds by value (refund_kinds); omit it to treat negative amounts as refunds.';
    END IF;
    IF refund_kinds IS NULL OR cardinality(refund_kinds) = 0 OR array_position(refund_kinds, NULL) IS NOT NULL THEN
      RAISE EXCEPTION 'saas.ltv_track: refund_kinds must list at least one kind, without NULLs'
        USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. refund_kinds => ''{refund,chargeback}''.';
    END IF;
  END IF;
  IF currency_column IS NOT NULL THEN
    t := @extschema@._ltv_column(source, currency_column, 'currency', 'saas.ltv_track');
    PERFORM @extschema@._ltv_require_type(source, currency_column, t,
      ARRAY['text', 'varchar', 'bpchar']::regtype[], 'text',
      'The currency column holds a code such as ''EUR'' (text, varchar or char).');
  END IF;
  IF default_currency IS NULL OR char_length(default_currency) NOT BETWEEN 1 AND 16 THEN
    RAISE EXCEPTION 'saas.ltv_track: default_currency must be 1 to 16 characters'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'An ISO 4217 code such as ''EUR''; ''XXX'' (the default) means no currency.';
  END IF;

  INSERT INTO @extschema@.ltv_sources (relid, tenant_column, customer_column, amount_column, occurred_at_column,
                                       occurred_at_type, kind_column, refund_kinds, currency_column, default_currency)
  VALUES (source, tenant_column, customer_column, amount_column, occurred_at_column, time_type, kind_column,
          coalesce(refund_kinds, '{refund}'), currency_column, default_currency)
  RETURNING * INTO s;
  -- CREATE TRIGGER locks out writers until commit, so the backfill below
  -- and the triggers together see every row exactly once. The table and
  -- every partition get them (DML naming a partition fires only its own).
  PERFORM @extschema@._ltv_sync_triggers(s.source_id);
  n := @extschema@._ltv_recompute(s, NULL);
  RETURN jsonb_build_object('table', source::text, 'source_id', s.source_id, 'customers', n);
END
$$;
COMMENT ON FUNCTION @extschema@.ltv_track(regclass, name, name, name, name, text[], name, text, name) IS
  'Tracks a payments table (plain or partitioned): statement triggers on it and every partition log each change in the same transaction (saas.ltv_pending), read exactly through saas.ltv_ledger and saas.ltv_daily; existing rows are counted at once.';

-- Recomputes the series and ledger of one source from the table, for the
-- customers keys name (NULL: all), into the compacted tables. Pending
-- deltas of the source are folded first, and no compaction runs meanwhile,
-- so the result counts every row once. The caller keeps writers out (the
-- table locked). Returns the ledger rows written.
CREATE FUNCTION @extschema@._ltv_recompute(s @extschema@.ltv_sources, keys jsonb)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  filter text := '';
  n bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(@extschema@._ltv_compact_lock_key());
  PERFORM @extschema@.ltv_compact(s.relid);
  IF keys IS NOT NULL THEN
    filter := 'WHERE (tenant_id, customer_id) IN (SELECT (k->>0)::uuid, k->>1 FROM jsonb_array_elements($2) k)';
  END IF;
  EXECUTE format('DELETE FROM @extschema@.ltv_daily_compacted WHERE source_id = $1 %s', replace(filter, 'WHERE', 'AND'))
    USING s.source_id, keys;
  EXECUTE format('DELETE FROM @extschema@.ltv_ledger_compacted WHERE source_id = $1 %s', replace(filter, 'WHERE', 'AND'))
    USING s.source_id, keys;
  EXECUTE format(
    'INSERT INTO @extschema@.ltv_daily_compacted (tenant_id, source_id, customer_id, currency, day, gross, refunds, payments, refund_count)
     SELECT tenant_id, $1, customer_id, currency, day, sum(gross), sum(refunds), sum(payments), sum(refund_count)
     FROM (%s) ch %s GROUP BY 1, 3, 4, 5', @extschema@._ltv_changes_sql(s, 'ALL'), filter)
    USING s.source_id, keys;
  EXECUTE format(
    'INSERT INTO @extschema@.ltv_ledger_compacted (tenant_id, source_id, customer_id, currency, gross, refunds, net,
                                                   payments, refund_count, first_payment_on, last_payment_on)
     SELECT tenant_id, $1, customer_id, currency, sum(gross), sum(refunds), sum(gross) - sum(refunds),
            sum(payments), sum(refund_count), min(day) FILTER (WHERE payments > 0), max(day) FILTER (WHERE payments > 0)
     FROM @extschema@.ltv_daily_compacted WHERE source_id = $1 %s GROUP BY 1, 3, 4', replace(filter, 'WHERE', 'AND'))
    USING s.source_id, keys;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END
$$;

CREATE FUNCTION @extschema@.ltv_untrack(source regclass)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  s @extschema@.ltv_sources;
BEGIN
  s := @extschema@._ltv_source(source, 'saas.ltv_untrack');
  DELETE FROM @extschema@.ltv_sources WHERE source_id = s.source_id;
  -- every relation's (the table's, its partitions', detached ones')
  PERFORM @extschema@._ltv_sync_triggers(s.source_id);
  RETURN true;
END
$$;
COMMENT ON FUNCTION @extschema@.ltv_untrack(regclass) IS
  'Stops tracking a payments table: drops its triggers (and its partitions'') and its ledger, series and pending rows.';

-- A source leaving the registry (ltv_untrack, or its table dropped) takes
-- its ledger, series and pending rows with it.
CREATE FUNCTION @extschema@._ltv_sources_forget()
RETURNS trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  DELETE FROM @extschema@.ltv_daily_compacted d USING ltv_gone g WHERE d.source_id = g.source_id;
  DELETE FROM @extschema@.ltv_ledger_compacted l USING ltv_gone g WHERE l.source_id = g.source_id;
  DELETE FROM @extschema@.ltv_pending p USING ltv_gone g WHERE p.source_id = g.source_id;
  RETURN NULL;
END
$$;
CREATE TRIGGER ltv_sources_forget AFTER DELETE ON @extschema@.ltv_sources
  REFERENCING OLD TABLE AS ltv_gone FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._ltv_sources_forget();

-- ---------------------------------------------------------------------------
-- ltv_reconcile / ltv_rebuild
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.ltv_reconcile(source regclass)
RETURNS TABLE (tenant_id uuid, customer_id text, currency text, ledger_net numeric, expected_net numeric,
               ledger_payments bigint, expected_payments bigint, problem text)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  s @extschema@.ltv_sources;
BEGIN
  s := @extschema@._ltv_source(source, 'saas.ltv_reconcile');
  RETURN QUERY EXECUTE format(
    'WITH want AS (
       SELECT tenant_id, customer_id, currency, day, sum(gross) g, sum(refunds) rf, sum(payments) p, sum(refund_count) rc
       FROM (%s) ch GROUP BY 1, 2, 3, 4 HAVING sum(payments) <> 0 OR sum(refund_count) <> 0),
     have AS (SELECT d.tenant_id, d.customer_id, d.currency, d.day, d.gross g, d.refunds rf, d.payments p, d.refund_count rc
              FROM @extschema@.ltv_daily d WHERE d.source_id = $1),
     bad_days AS (
       SELECT coalesce(w.tenant_id, h.tenant_id) tenant_id, coalesce(w.customer_id, h.customer_id) customer_id,
              coalesce(w.currency, h.currency) currency
       FROM want w FULL JOIN have h USING (tenant_id, customer_id, currency, day)
       WHERE (w.g, w.rf, w.p, w.rc) IS DISTINCT FROM (h.g, h.rf, h.p, h.rc)),
     want_l AS (SELECT tenant_id, customer_id, currency, sum(g) - sum(rf) net, sum(p)::bigint payments,
                       min(day) FILTER (WHERE p > 0) f, max(day) FILTER (WHERE p > 0) la
                FROM want GROUP BY 1, 2, 3),
     have_l AS (SELECT l.tenant_id, l.customer_id, l.currency, l.net, l.payments, l.first_payment_on f, l.last_payment_on la
                FROM @extschema@.ltv_ledger l WHERE l.source_id = $1),
     bad_ledger AS (
       SELECT coalesce(w.tenant_id, h.tenant_id) tenant_id, coalesce(w.customer_id, h.customer_id) customer_id,
              coalesce(w.currency, h.currency) currency
       FROM want_l w FULL JOIN have_l h USING (tenant_id, customer_id, currency)
       WHERE (w.net, w.payments, w.f, w.la) IS DISTINCT FROM (h.net, h.payments, h.f, h.la)),
     bad AS (SELECT DISTINCT * FROM (SELECT *, ''daily series differs'' problem FROM bad_days
                                     UNION ALL SELECT *, ''ledger differs'' FROM bad_ledger) b)
     SELECT b.tenant_id, b.customer_id, b.currency, h.net, w.net, h.payments, w.payments,
            string_agg(b.problem, '', '' ORDER BY b.problem)
     FROM bad b
     LEFT JOIN want_l w USING (tenant_id, customer_id, currency)
     LEFT JOIN have_l h USING (tenant_id, customer_id, currency)
     GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3', @extschema@._ltv_changes_sql(s, 'ALL'))
    USING s.source_id;
END
$$;
COMMENT ON FUNCTION @extschema@.ltv_reconcile(regclass) IS
  'Every customer whose ledger or daily series differs from a full recomputation from the table (changes that bypassed triggers: TRUNCATE, DETACH/DROP PARTITION, session_replication_role = replica, writes straight into a partition).';

-- Recomputes a source in batches of customers, committing after each batch
-- (so CALL it outside a transaction block; no SET clause for that reason,
-- every name is qualified); writers of the table wait only
-- for the batch in progress (SHARE lock, then released at its commit).
CREATE PROCEDURE @extschema@.ltv_rebuild(source regclass, batch_customers integer DEFAULT 1000)
LANGUAGE plpgsql
AS $$
DECLARE
  s @extschema@.ltv_sources;
  keys jsonb;
  after_tenant uuid;
  after_customer text := '';
  total bigint := 0;
BEGIN
  s := @extschema@._ltv_source(source, 'saas.ltv_rebuild');
  IF batch_customers IS NULL OR batch_customers < 1 THEN
    RAISE EXCEPTION 'saas.ltv_rebuild: batch_customers must be at least 1'
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'E.g. CALL saas.ltv_rebuild(''app.payments'', 1000).';
  END IF;
  LOOP
    EXECUTE format('LOCK TABLE %s IN SHARE MODE', source);
    -- the next batch of customers, from the table and the ledger
    EXECUTE format(
      'SELECT jsonb_agg(jsonb_build_array(t, c) ORDER BY t, c) FROM (
         SELECT t, c FROM (
           SELECT %I AS t, %I::text AS c FROM %s WHERE %I IS NOT NULL AND %I IS NOT NULL
           UNION SELECT tenant_id, customer_id FROM @extschema@.ltv_ledger WHERE source_id = $1) u
         WHERE $2::uuid IS NULL OR (t, c) > ($2, $3) ORDER BY t, c LIMIT $4) b',
      s.tenant_column, s.customer_column, source, s.tenant_column, s.customer_column)
      INTO keys USING s.source_id, after_tenant, after_customer, batch_customers;
    EXIT WHEN keys IS NULL;
    PERFORM @extschema@._ltv_recompute(s, keys);
    total := total + jsonb_array_length(keys);
    after_tenant := (keys->-1->>0)::uuid;
    after_customer := keys->-1->>1;
    COMMIT;
  END LOOP;
  RAISE NOTICE 'saas.ltv_rebuild: % customers of % recomputed', total, source;
END
$$;
COMMENT ON PROCEDURE @extschema@.ltv_rebuild(regclass, integer) IS
  'Recomputes the ledger and daily series of a tracked table from its rows, batch_customers customers per transaction.';

-- ---------------------------------------------------------------------------
-- ltv_summary: lifetimes' summary_data_from_transaction_data, from the series
-- ---------------------------------------------------------------------------
-- Whole days of a period interval, or a specific error.
CREATE FUNCTION @extschema@._ltv_period_days(period interval, what text, fn text)
RETURNS integer
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF period IS NULL THEN
    RAISE EXCEPTION '%: % may not be NULL', fn, what
      USING ERRCODE = 'null_value_not_allowed', HINT = format('E.g. %s => ''7 days''.', what);
  END IF;
  IF period <= interval '0' THEN
    RAISE EXCEPTION '%: % must be positive, not %', fn, what, period
      USING ERRCODE = 'numeric_value_out_of_range', HINT = format('E.g. %s => ''1 day'' or ''7 days''.', what);
  END IF;
  IF extract(month FROM period) <> 0 OR extract(year FROM period) <> 0
     OR period - justify_hours(date_trunc('day', period)) <> interval '0'
     OR extract(hour FROM period) <> 0 OR extract(minute FROM period) <> 0 OR extract(second FROM period) <> 0 THEN
    RAISE EXCEPTION '%: % must be a whole number of days, not %', fn, what, period
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'The series is daily: use days (''1 day'', ''7 days'', ''30 days''); months vary in length.';
  END IF;
  IF extract(day FROM period) > 36500 THEN
    RAISE EXCEPTION '%: % of % is too long', fn, what, period
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Use at most 36500 days.';
  END IF;
  RETURN extract(day FROM period)::integer;
END
$$;

CREATE FUNCTION @extschema@.ltv_summary(
  period interval DEFAULT '1 day',
  observation_end timestamptz DEFAULT now())
RETURNS TABLE (customer_id text, currency text, frequency bigint, recency numeric, "T" numeric, monetary_value numeric)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
-- The series read in key order, aggregated as it streams: a hash of every
-- customer-day would spill to disk for large tenants.
SET enable_hashagg = off
AS $$
DECLARE
  k integer := @extschema@._ltv_period_days(period, 'period', 'saas.ltv_summary');
  e date;
BEGIN
  IF observation_end IS NULL THEN
    RAISE EXCEPTION 'saas.ltv_summary: observation_end may not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Omit it for now(), or pass a timestamptz.';
  END IF;
  IF NOT isfinite(observation_end) THEN
    RAISE EXCEPTION 'saas.ltv_summary: observation_end must be finite'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Omit it for now(), or pass a real time.';
  END IF;
  e := (observation_end AT TIME ZONE 'UTC')::date;
  -- Purchase days: days with a payment (all sources summed), up to the
  -- observation end's UTC day; the value of a day is its net.
  RETURN QUERY
  WITH days AS (
    SELECT d.customer_id, d.currency, d.day, sum(d.gross - d.refunds) AS net
    FROM @extschema@._ltv_daily_rows d
    WHERE d.tenant_id = (SELECT @extschema@.current_tenant()) AND d.day <= e
    GROUP BY 1, 2, 3 HAVING sum(d.payments) > 0),
  c AS (
    -- min() of [day number, net] is the first day's pair: no sort per customer
    SELECT x.customer_id, x.currency, count(*) - 1 AS freq, min(x.day) AS f, max(x.day) AS l, sum(x.net) AS total,
           (min(ARRAY[(x.day - date '2000-01-01')::numeric, x.net]))[2] AS first_net
    FROM days x GROUP BY 1, 2)
  SELECT c.customer_id, c.currency, c.freq, trim_scale((c.l - c.f)::numeric / k), trim_scale((e - c.f)::numeric / k),
         trim_scale(CASE WHEN c.freq = 0 THEN 0 ELSE (c.total - c.first_net) / c.freq END)
  FROM c ORDER BY 1, 2;
END
$$;
COMMENT ON FUNCTION @extschema@.ltv_summary(interval, timestamptz) IS
  'Per customer and currency of the current tenant: frequency (repeat purchase days), recency, T and monetary value in periods of whole days, as lifetimes.utils.summary_data_from_transaction_data(freq=''D'', freq_multiplier=days), from the daily series.';

-- ---------------------------------------------------------------------------
-- Subscriptions and revenue metrics
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.ltv_track_subscriptions(
  source regclass,
  customer_column name DEFAULT 'customer_id',
  mrr_column name DEFAULT 'mrr',
  started_at_column name DEFAULT 'started_at',
  ended_at_column name DEFAULT 'ended_at',
  status_column name DEFAULT NULL,
  excluded_statuses text[] DEFAULT '{trialing,incomplete,incomplete_expired}',
  currency_column name DEFAULT NULL,
  default_currency text DEFAULT 'XXX',
  tenant_column name DEFAULT 'tenant_id')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t regtype;
BEGIN
  PERFORM @extschema@._ltv_require_table(source, 'saas.ltv_track_subscriptions');
  IF EXISTS (SELECT FROM @extschema@.ltv_subscription_sources WHERE relid = source) THEN
    RAISE EXCEPTION '"%" is registered already', source
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = format('To change its columns: SELECT saas.ltv_untrack_subscriptions(%L); then register it again.', source::text);
  END IF;
  t := @extschema@._ltv_column(source, tenant_column, 'tenant id', 'saas.ltv_track_subscriptions');
  PERFORM @extschema@._ltv_require_type(source, tenant_column, t, ARRAY['uuid'::regtype], 'uuid',
    'Metrics are per tenant: name the uuid tenant column (tenant_column => ...).');
  t := @extschema@._ltv_column(source, customer_column, 'customer', 'saas.ltv_track_subscriptions');
  t := @extschema@._ltv_column(source, mrr_column, 'monthly amount', 'saas.ltv_track_subscriptions');
  PERFORM @extschema@._ltv_require_type(source, mrr_column, t, ARRAY['numeric', 'int2', 'int4', 'int8']::regtype[], 'numeric',
    'The monthly amount is money: numeric. For a yearly plan price add a generated column: mrr numeric GENERATED ALWAYS AS (price / 12) STORED.');
  t := @extschema@._ltv_column(source, started_at_column, 'start', 'saas.ltv_track_subscriptions');
  PERFORM @extschema@._ltv_require_type(source, started_at_column, t, ARRAY['timestamptz', 'timestamp', 'date']::regtype[], 'temporal',
    'Name the timestamptz, timestamp or date column of the start.');
  t := @extschema@._ltv_column(source, ended_at_column, 'end or cancellation', 'saas.ltv_track_subscriptions');
  PERFORM @extschema@._ltv_require_type(source, ended_at_column, t, ARRAY['timestamptz', 'timestamp', 'date']::regtype[], 'temporal',
    'Name the timestamptz, timestamp or date column of the end (NULL while active).');
  IF status_column IS NOT NULL THEN
    t := @extschema@._ltv_column(source, status_column, 'status', 'saas.ltv_track_subscriptions');
    IF NOT (t IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype) OR (SELECT typtype FROM pg_type WHERE oid = t) = 'e') THEN
      RAISE EXCEPTION 'column "%" of "%" is %, not a text or enum column', status_column, source, format_type(t, NULL)
        USING ERRCODE = 'datatype_mismatch', HINT = 'The status column holds values such as ''active'' or ''trialing''.';
    END IF;
  END IF;
  IF currency_column IS NOT NULL THEN
    t := @extschema@._ltv_column(source, currency_column, 'currency', 'saas.ltv_track_subscriptions');
    PERFORM @extschema@._ltv_require_type(source, currency_column, t, ARRAY['text', 'varchar', 'bpchar']::regtype[], 'text',
      'The currency column holds a code such as ''EUR'' (text, varchar or char).');
  END IF;
  IF default_currency IS NULL OR char_length(default_currency) NOT BETWEEN 1 AND 16 THEN
    RAISE EXCEPTION 'saas.ltv_track_subscriptions: default_currency must be 1 to 16 characters'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'An ISO 4217 code such as ''EUR''; ''XXX'' (the default) means no currency.';
  END IF;
  INSERT INTO @extschema@.ltv_subscription_sources (relid, tenant_column, customer_column, mrr_column, started_at_column,
    ended_at_column, status_column, excluded_statuses, currency_column, default_currency)
  VALUES (source, tenant_column, customer_column, mrr_column, started_at_column, ended_at_column, status_column,
          coalesce(excluded_statuses, '{}'), currency_column, default_currency);
  RETURN jsonb_build_object('table', source::text);
END
$$;
COMMENT ON FUNCTION @extschema@.ltv_track_subscriptions(regclass, name, name, name, name, name, text[], name, text, name) IS
  'Registers a subscriptions table (customer, monthly amount, start, end, status, currency) for saas.revenue_metrics().';

CREATE FUNCTION @extschema@.ltv_untrack_subscriptions(source regclass)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  DELETE FROM @extschema@.ltv_subscription_sources WHERE relid = source;
  IF NOT FOUND THEN
    RAISE EXCEPTION '"%" is not a registered subscriptions table', coalesce(source::text, 'NULL')
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'See saas.ltv_subscription_sources for the registered tables.';
  END IF;
  RETURN true;
END
$$;

-- The current tenant's subscriptions from every registered table, as SQL
-- (customer_id, currency, mrr, started_at, ended_at); the caller runs it
-- with its own privileges. Definer only to read the registry.
CREATE FUNCTION @extschema@._ltv_subscriptions_sql()
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  parts text[] := '{}';
  r @extschema@.ltv_subscription_sources;
BEGIN
  FOR r IN SELECT * FROM @extschema@.ltv_subscription_sources ORDER BY relid::text LOOP
    parts := parts || format(
      'SELECT %I::text AS customer_id, %s AS currency, %I::numeric AS mrr, %I::timestamptz AS started_at, %I::timestamptz AS ended_at
       FROM %s WHERE %I = (SELECT @extschema@.current_tenant()) AND %I IS NOT NULL AND %I IS NOT NULL AND %I > 0%s',
      r.customer_column,
      CASE WHEN r.currency_column IS NULL THEN format('%L::text', r.default_currency)
           ELSE format('coalesce(%I::text, %L)', r.currency_column, r.default_currency) END,
      r.mrr_column, r.started_at_column, r.ended_at_column, r.relid, r.tenant_column,
      r.customer_column, r.started_at_column, r.mrr_column,
      CASE WHEN r.status_column IS NULL OR cardinality(r.excluded_statuses) = 0 THEN ''
           ELSE format(' AND %I::text <> ALL (%L::text[])', r.status_column, r.excluded_statuses) END);
  END LOOP;
  IF cardinality(parts) = 0 THEN
    RAISE EXCEPTION 'no subscriptions table is registered'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Register one: SELECT saas.ltv_track_subscriptions(''app.subscriptions'', ...).';
  END IF;
  RETURN array_to_string(parts, ' UNION ALL ');
END
$$;

-- from/to/bucket checks shared by revenue_metrics.
CREATE FUNCTION @extschema@._ltv_check_range(p_from timestamptz, p_to timestamptz, p_bucket interval, fn text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF p_from IS NULL OR p_to IS NULL OR p_bucket IS NULL THEN
    RAISE EXCEPTION '%: from, to and bucket may not be NULL', fn
      USING ERRCODE = 'null_value_not_allowed', HINT = format('E.g. %s(''2026-01-01'', ''2027-01-01'', ''1 month'').', fn);
  END IF;
  IF p_from > p_to THEN
    RAISE EXCEPTION '%: from (%) is after to (%)', fn, p_from, p_to
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the earlier time first.';
  END IF;
  IF p_bucket <= interval '0' OR p_bucket > interval '100 years' THEN
    RAISE EXCEPTION '%: bucket must be positive and at most 100 years, not %', fn, p_bucket
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'E.g. bucket => ''1 month''.';
  END IF;
  IF NOT isfinite(p_from) OR NOT isfinite(p_to) THEN
    RAISE EXCEPTION '%: from and to must be finite', fn
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass real times, e.g. ''2026-01-01'' and ''2027-01-01''.';
  END IF;
  IF p_from + p_bucket * 10000 < p_to THEN
    RAISE EXCEPTION '%: more than 10000 buckets of % between % and %', fn, p_bucket, p_from, p_to
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Use a longer bucket or a shorter range.';
  END IF;
END
$$;

-- ChartMogul's MRR movements per bucket [start, end): at every start or end
-- of a customer's subscriptions, its MRR just before and at that point,
-- classified by saas._mrr_movement (src/ltv/mrr.rs).
CREATE FUNCTION @extschema@.revenue_metrics(
  "from" timestamptz,
  "to" timestamptz,
  bucket interval DEFAULT '1 month')
RETURNS TABLE (bucket_start timestamptz, bucket_end timestamptz, currency text,
               starting_mrr numeric, new_mrr numeric, expansion_mrr numeric, contraction_mrr numeric,
               churned_mrr numeric, reactivated_mrr numeric, net_new_mrr numeric, mrr numeric,
               starting_customers bigint, new_customers bigint, churned_customers bigint, customers bigint,
               logo_churn_rate numeric, gross_revenue_churn_rate numeric, net_revenue_churn_rate numeric,
               nrr numeric, arpa numeric)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM @extschema@._ltv_check_range("from", "to", bucket, 'saas.revenue_metrics');
  RETURN QUERY EXECUTE format($q$
    WITH s AS MATERIALIZED (%s),
    b AS (SELECT g AS b0, LEAST(g + $3, $2) AS b1 FROM generate_series($1, $2 - interval '1 microsecond', $3) g),
    cur AS (SELECT DISTINCT s.currency FROM s),
    -- MRR and paying customers just before each bucket edge: the state in
    -- force then (every subscription counted has a positive amount)
    edges AS (SELECT b.b0 AS x FROM b UNION SELECT b.b1 FROM b),
    at_edge AS (
      SELECT e.x, s.currency, sum(s.mrr) AS mrr, count(DISTINCT s.customer_id) AS n
      FROM edges e JOIN s ON s.started_at < e.x AND (s.ended_at IS NULL OR s.ended_at >= e.x)
      GROUP BY 1, 2),
    points AS (
      SELECT DISTINCT b.b0, p.currency, p.customer_id, p.t
      FROM (SELECT currency, customer_id, started_at AS t FROM s
            UNION SELECT currency, customer_id, ended_at FROM s WHERE ended_at IS NOT NULL) p
      JOIN b ON p.t >= b.b0 AND p.t < b.b1),
    -- each point against its customer's subscriptions only (a hash join,
    -- not a scan of every subscription per point)
    states AS (
      SELECT p.b0, p.currency, p.customer_id, p.t,
             coalesce(sum(s.mrr) FILTER (WHERE s.started_at < p.t AND (s.ended_at IS NULL OR s.ended_at >= p.t)), 0) AS prev,
             coalesce(sum(s.mrr) FILTER (WHERE s.started_at <= p.t AND (s.ended_at IS NULL OR s.ended_at > p.t)), 0) AS now,
             coalesce(bool_or(s.started_at < p.t), false) AS had
      FROM points p JOIN s ON s.customer_id = p.customer_id AND s.currency = p.currency
      GROUP BY 1, 2, 3, 4),
    moves AS (
      SELECT x.b0, x.currency, x.customer_id, x.prev, x.now, @extschema@._mrr_movement(x.prev, x.now, x.had) AS kind
      FROM states x),
    agg AS (
      SELECT b0, currency,
             coalesce(sum(now) FILTER (WHERE kind = 'new'), 0) AS new_mrr,
             coalesce(sum(now - prev) FILTER (WHERE kind = 'expansion'), 0) AS expansion_mrr,
             coalesce(sum(prev - now) FILTER (WHERE kind = 'contraction'), 0) AS contraction_mrr,
             coalesce(sum(prev) FILTER (WHERE kind = 'churn'), 0) AS churned_mrr,
             coalesce(sum(now) FILTER (WHERE kind = 'reactivation'), 0) AS reactivated_mrr,
             count(*) FILTER (WHERE kind = 'new') AS new_customers,
             count(*) FILTER (WHERE kind = 'churn') AS churned_customers
      FROM moves GROUP BY 1, 2),
    st AS (SELECT b.b0, a.currency, a.mrr, a.n FROM b JOIN at_edge a ON a.x = b.b0),
    en AS (SELECT b.b0, a.currency, a.mrr, a.n FROM b JOIN at_edge a ON a.x = b.b1)
    SELECT b.b0, b.b1, c.currency,
           coalesce(st.mrr, 0), coalesce(a.new_mrr, 0), coalesce(a.expansion_mrr, 0), coalesce(a.contraction_mrr, 0),
           coalesce(a.churned_mrr, 0), coalesce(a.reactivated_mrr, 0),
           coalesce(a.new_mrr + a.expansion_mrr + a.reactivated_mrr - a.contraction_mrr - a.churned_mrr, 0),
           coalesce(en.mrr, 0),
           coalesce(st.n, 0), coalesce(a.new_customers, 0), coalesce(a.churned_customers, 0), coalesce(en.n, 0),
           round(coalesce(a.churned_customers, 0)::numeric / NULLIF(st.n, 0), 6),
           round((coalesce(a.churned_mrr, 0) + coalesce(a.contraction_mrr, 0)) / NULLIF(st.mrr, 0), 6),
           round((coalesce(a.churned_mrr, 0) + coalesce(a.contraction_mrr, 0) - coalesce(a.expansion_mrr, 0)
                  - coalesce(a.reactivated_mrr, 0)) / NULLIF(st.mrr, 0), 6),
           round((st.mrr + coalesce(a.expansion_mrr, 0) + coalesce(a.reactivated_mrr, 0) - coalesce(a.contraction_mrr, 0)
                  - coalesce(a.churned_mrr, 0)) / NULLIF(st.mrr, 0), 6),
           round(en.mrr / NULLIF(en.n, 0), 2)
    FROM b CROSS JOIN cur c
    LEFT JOIN st ON st.b0 = b.b0 AND st.currency = c.currency
    LEFT JOIN en ON en.b0 = b.b0 AND en.currency = c.currency
    LEFT JOIN agg a ON a.b0 = b.b0 AND a.currency = c.currency
    ORDER BY 1, 3
  $q$, @extschema@._ltv_subscriptions_sql())
  USING "from", "to", bucket;
END
$$;
COMMENT ON FUNCTION @extschema@.revenue_metrics(timestamptz, timestamptz, interval) IS
  'Per bucket and currency of the current tenant: MRR and its movements (new, expansion, contraction, churn, reactivation; ChartMogul''s definitions), customers, logo churn (Stripe), gross and net revenue churn, NRR, ARPA, from the registered subscriptions tables.';

-- ---------------------------------------------------------------------------
-- cohorts: per first-payment month, from the daily series
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.cohorts(
  from_month date DEFAULT NULL,
  to_month date DEFAULT NULL)
RETURNS TABLE (cohort_month date, currency text, months_since integer, customers bigint,
               paying_customers bigint, net_revenue numeric, logo_retention numeric, revenue_retention numeric)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF from_month > to_month THEN
    RAISE EXCEPTION 'saas.cohorts: from_month (%) is after to_month (%)', from_month, to_month
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the earlier month first, or NULL for no bound.';
  END IF;
  RETURN QUERY
  WITH m AS (
    SELECT d.customer_id, d.currency, date_trunc('month', d.day)::date AS month,
           sum(d.gross - d.refunds) AS net, sum(d.payments) AS payments
    FROM @extschema@._ltv_daily_rows d
    WHERE d.tenant_id = (SELECT @extschema@.current_tenant())
    GROUP BY 1, 2, 3),
  firsts AS (
    SELECT m.customer_id, m.currency, min(m.month) AS cohort FROM m WHERE m.payments > 0 GROUP BY 1, 2),
  sizes AS (
    SELECT f.cohort, f.currency, count(*) AS n FROM firsts f
    WHERE (from_month IS NULL OR f.cohort >= date_trunc('month', from_month)::date)
      AND (to_month IS NULL OR f.cohort <= date_trunc('month', to_month)::date)
    GROUP BY 1, 2),
  last_month AS (SELECT f.currency, max(m.month) AS lm FROM m JOIN firsts f USING (customer_id, currency) GROUP BY 1),
  grid AS (
    SELECT s.cohort, s.currency, s.n, g::date AS month
    FROM sizes s JOIN last_month l USING (currency)
    CROSS JOIN LATERAL generate_series(s.cohort, l.lm, interval '1 month') g),
  act AS (
    SELECT f.cohort, f.currency, m.month, count(*) FILTER (WHERE m.payments > 0) AS paying, sum(m.net) AS net
    FROM firsts f JOIN m USING (customer_id, currency) GROUP BY 1, 2, 3)
  SELECT g.cohort, g.currency,
         ((extract(year FROM g.month) - extract(year FROM g.cohort)) * 12 + extract(month FROM g.month) - extract(month FROM g.cohort))::integer,
         g.n, coalesce(a.paying, 0), coalesce(a.net, 0),
         round(coalesce(a.paying, 0)::numeric / g.n, 6),
         round(coalesce(a.net, 0) / NULLIF(first_value(coalesce(a.net, 0)) OVER (PARTITION BY g.cohort, g.currency ORDER BY g.month), 0), 6)
  FROM grid g LEFT JOIN act a ON a.cohort = g.cohort AND a.currency = g.currency AND a.month = g.month
  ORDER BY 1, 2, 3;
END
$$;
COMMENT ON FUNCTION @extschema@.cohorts(date, date) IS
  'Per first-payment month (UTC) and currency of the current tenant: customers, and per month since, paying customers, net revenue, logo and revenue retention, from the daily series.';

-- ---------------------------------------------------------------------------
-- customer_health: RFM quintiles (tie-safe) and risk drivers
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.customer_health(
  as_of timestamptz DEFAULT now(),
  "window" interval DEFAULT '90 days')
RETURNS TABLE (customer_id text, currency text, days_since_last integer, payment_days bigint, net numeric,
               r_score integer, f_score integer, m_score integer, level text, drivers text[])
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  w integer := @extschema@._ltv_period_days("window", 'window', 'saas.customer_health');
  e date;
BEGIN
  IF as_of IS NULL THEN
    RAISE EXCEPTION 'saas.customer_health: as_of may not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Omit it for now(), or pass a timestamptz.';
  END IF;
  IF NOT isfinite(as_of) THEN
    RAISE EXCEPTION 'saas.customer_health: as_of must be finite'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Omit it for now(), or pass a real time.';
  END IF;
  e := (as_of AT TIME ZONE 'UTC')::date;
  RETURN QUERY
  WITH d AS (
    SELECT x.customer_id, x.currency, x.day, sum(x.gross - x.refunds) AS net, sum(x.refunds) AS refunds, sum(x.payments) AS payments
    FROM @extschema@._ltv_daily_rows x
    WHERE x.tenant_id = (SELECT @extschema@.current_tenant()) AND x.day <= e
    GROUP BY 1, 2, 3),
  c AS (
    SELECT d.customer_id, d.currency,
           e - max(d.day) FILTER (WHERE d.payments > 0) AS since,
           count(*) FILTER (WHERE d.payments > 0) AS pdays,
           max(d.day) FILTER (WHERE d.payments > 0) - min(d.day) FILTER (WHERE d.payments > 0) AS span,
           sum(d.net) AS net,
           coalesce(sum(d.net) FILTER (WHERE d.day > e - w), 0) AS net_now,
           coalesce(sum(d.net) FILTER (WHERE d.day <= e - w AND d.day > e - 2 * w), 0) AS net_before,
           coalesce(sum(d.refunds) FILTER (WHERE d.day > e - w), 0) AS ref_now,
           coalesce(sum(d.refunds) FILTER (WHERE d.day <= e - w AND d.day > e - 2 * w), 0) AS ref_before
    FROM d GROUP BY 1, 2 HAVING count(*) FILTER (WHERE d.payments > 0) > 0),
  scored AS (
    SELECT c.*,
           @extschema@._ltv_quintile(rank() OVER (PARTITION BY c.currency ORDER BY c.since DESC), count(*) OVER (PARTITION BY c.currency)) AS r,
           @extschema@._ltv_quintile(rank() OVER (PARTITION BY c.currency ORDER BY c.pdays), count(*) OVER (PARTITION BY c.currency)) AS f,
           @extschema@._ltv_quintile(rank() OVER (PARTITION BY c.currency ORDER BY c.net), count(*) OVER (PARTITION BY c.currency)) AS m,
           array_remove(ARRAY[
             CASE WHEN c.pdays >= 2 AND c.since > 2 * (c.span::numeric / (c.pdays - 1))
                  THEN format('No payment for %s days (usual gap %s days)', c.since, round(c.span::numeric / (c.pdays - 1), 1)) END,
             CASE WHEN c.net_before > 0 AND c.net_now < c.net_before / 2
                  THEN format('Spend fell from %s to %s against the previous %s days', c.net_before, c.net_now, w) END,
             CASE WHEN c.ref_now > 0 AND c.ref_now > c.ref_before
                  THEN format('Refunds rose from %s to %s against the previous %s days', c.ref_before, c.ref_now, w) END
           ], NULL) AS why
    FROM c)
  SELECT s.customer_id, s.currency, s.since, s.pdays, s.net, s.r, s.f, s.m,
         CASE cardinality(s.why) WHEN 0 THEN 'low' WHEN 1 THEN 'medium' WHEN 2 THEN 'high' ELSE 'critical' END,
         s.why
  FROM scored s ORDER BY 1, 2;
END
$$;
COMMENT ON FUNCTION @extschema@.customer_health(timestamptz, interval) IS
  'Per customer and currency of the current tenant: RFM quintile scores (tie-safe; recency reversed), a risk level and its drivers (no payment for twice the usual gap, spend halved or worse against the previous window, refunds rising).';

-- ---------------------------------------------------------------------------
-- Retention risk: per-tenant rules, the jsonb overload for RPC callers
-- ---------------------------------------------------------------------------
-- The current tenant's latest rules ('{}' = the seed's), read as the owner:
-- any member may score, only admins read the settings table.
CREATE FUNCTION @extschema@._retention_risk_rules()
RETURNS jsonb
LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce((SELECT s.rules || jsonb_build_object('version', s.version)
                   FROM @extschema@.retention_risk_settings s
                   WHERE s.tenant_id = (SELECT @extschema@.current_tenant())
                   ORDER BY s.version DESC LIMIT 1), '{}'::jsonb)
$$;

CREATE FUNCTION @extschema@.retention_risk_settings_set(rules jsonb)
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  tenant uuid := @extschema@.current_tenant();
  v integer;
BEGIN
  IF tenant IS NULL THEN
    RAISE EXCEPTION 'saas.retention_risk_settings_set: no current tenant'
      USING ERRCODE = 'insufficient_privilege', HINT = 'Call it in an API request of a tenant admin (or after saas.set_tenant() as a backend job).';
  END IF;
  IF NOT @extschema@.has_role('admin') AND @extschema@.current_user_id() IS NOT NULL THEN
    RAISE EXCEPTION 'saas.retention_risk_settings_set: only tenant admins and owners change the rules'
      USING ERRCODE = 'insufficient_privilege', HINT = 'Ask an admin of the tenant.';
  END IF;
  IF rules IS NULL THEN
    RAISE EXCEPTION 'saas.retention_risk_settings_set: rules may not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass a JSON object, e.g. ''{"level_critical": 80}''; ''{}'' restores the seed''s rules.';
  END IF;
  IF rules ? 'version' THEN
    RAISE EXCEPTION 'saas.retention_risk_settings_set: the version is assigned, not given'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Remove "version": each call stores the next version.';
  END IF;
  -- validates the rules (22023 with the list of keys)
  PERFORM @extschema@.retention_risk(50, 50, 50, 0, 'stable', rules);
  PERFORM pg_advisory_xact_lock(hashtext('saas.retention_risk_settings'), hashtext(tenant::text));
  SELECT coalesce(max(s.version), 0) + 1 INTO v FROM @extschema@.retention_risk_settings s WHERE s.tenant_id = tenant;
  INSERT INTO @extschema@.retention_risk_settings (tenant_id, version, rules) VALUES (tenant, v, rules);
  RETURN v;
END
$$;
COMMENT ON FUNCTION @extschema@.retention_risk_settings_set(jsonb) IS
  'Stores the current tenant''s retention-risk rules as a new version (keys as in docs/ltv.md; missing keys keep the seed''s values); returns the version.';

CREATE FUNCTION @extschema@.retention_risk(input jsonb)
RETURNS @extschema@.retention_risk_result
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  k text;
  want text;
BEGIN
  IF input IS NULL OR jsonb_typeof(input) <> 'object' THEN
    RAISE EXCEPTION 'saas.retention_risk: the input must be a JSON object'
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'E.g. {"motivational_drivers_match": 45, "working_preferences_match": 80, "role_skill_fit": 70, "last_assessment_days": 100, "performance_trend": "down"}.';
  END IF;
  FOR k IN SELECT jsonb_object_keys(input) LOOP
    IF k NOT IN ('motivational_drivers_match', 'working_preferences_match', 'role_skill_fit', 'last_assessment_days', 'performance_trend') THEN
      RAISE EXCEPTION 'saas.retention_risk: unknown input "%"', left(k, 64)
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'Inputs: motivational_drivers_match, working_preferences_match, role_skill_fit, last_assessment_days, performance_trend.';
    END IF;
  END LOOP;
  FOR k IN SELECT unnest(ARRAY['motivational_drivers_match', 'working_preferences_match', 'role_skill_fit', 'last_assessment_days', 'performance_trend']) LOOP
    want := CASE WHEN k = 'performance_trend' THEN 'string' ELSE 'number' END;
    IF jsonb_typeof(input -> k) IS NULL OR jsonb_typeof(input -> k) = 'null' THEN
      RAISE EXCEPTION 'saas.retention_risk: input "%" is missing', k
        USING ERRCODE = 'null_value_not_allowed', HINT = 'Every one of the five inputs is required.';
    END IF;
    IF jsonb_typeof(input -> k) <> want THEN
      RAISE EXCEPTION 'saas.retention_risk: input "%" must be a %', k, want
        USING ERRCODE = 'invalid_parameter_value', HINT = 'Match and fit values are numbers 0-100, days a whole number, the trend ''up'', ''stable'' or ''down''.';
    END IF;
  END LOOP;
  IF (input ->> 'last_assessment_days')::numeric <> trunc((input ->> 'last_assessment_days')::numeric)
     OR abs((input ->> 'last_assessment_days')::numeric) > 2147483647 THEN
    RAISE EXCEPTION 'saas.retention_risk: last_assessment_days must be a whole number of days'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. "last_assessment_days": 120.';
  END IF;
  RETURN @extschema@.retention_risk((input ->> 'motivational_drivers_match')::numeric,
                                    (input ->> 'working_preferences_match')::numeric,
                                    (input ->> 'role_skill_fit')::numeric,
                                    (input ->> 'last_assessment_days')::integer,
                                    input ->> 'performance_trend',
                                    @extschema@._retention_risk_rules());
END
$$;
COMMENT ON FUNCTION @extschema@.retention_risk(jsonb) IS
  'retention_risk for RPC callers: the five inputs as a JSON object, scored with the current tenant''s latest rules (the seed''s when it has none).';

-- What API roles get from saas.grant_api.
INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege) VALUES
  ('ltv', 'function', 'ltv_summary(interval, timestamp with time zone)', 'EXECUTE'),
  ('ltv', 'function', 'revenue_metrics(timestamp with time zone, timestamp with time zone, interval)', 'EXECUTE'),
  ('ltv', 'function', 'cohorts(date, date)', 'EXECUTE'),
  ('ltv', 'function', 'customer_health(timestamp with time zone, interval)', 'EXECUTE'),
  ('ltv', 'function', 'retention_risk(numeric, numeric, numeric, integer, text)', 'EXECUTE'),
  ('ltv', 'function', 'retention_risk(numeric, numeric, numeric, integer, text, jsonb)', 'EXECUTE'),
  ('ltv', 'function', 'retention_risk(jsonb)', 'EXECUTE'),
  ('ltv', 'function', 'retention_risk_settings_set(jsonb)', 'EXECUTE'),
  ('ltv', 'function', '_retention_risk_rules()', 'EXECUTE'),
  ('ltv', 'function', '_ltv_period_days(interval, text, text)', 'EXECUTE'),
  ('ltv', 'function', '_ltv_check_range(timestamp with time zone, timestamp with time zone, interval, text)', 'EXECUTE'),
  ('ltv', 'function', '_ltv_subscriptions_sql()', 'EXECUTE'),
  ('ltv', 'function', '_mrr_movement(numeric, numeric, boolean)', 'EXECUTE'),
  ('ltv', 'function', '_ltv_quintile(bigint, bigint)', 'EXECUTE'),
  ('ltv', 'table', 'ltv_ledger', 'SELECT'),
  ('ltv', 'table', 'ltv_daily', 'SELECT'),
  -- the views run as the caller: it reads their tables (under RLS)
  ('ltv', 'table', '_ltv_daily_rows', 'SELECT'),
  ('ltv', 'table', 'ltv_ledger_compacted', 'SELECT'),
  ('ltv', 'table', 'ltv_daily_compacted', 'SELECT'),
  ('ltv', 'table', 'ltv_pending', 'SELECT'),
  ('ltv', 'table', 'retention_risk_settings', 'SELECT');

-- The API surface (saas_api, served by PostgREST): the same functions, the
-- ledger and the series; STABLE, so GET works (a READ ONLY transaction).
-- What a caller sees is what RLS gives it: its tenant, admins and owners only.
CREATE FUNCTION saas_api.ltv_ledger()
RETURNS SETOF @extschema@.ltv_ledger
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.ltv_ledger ORDER BY customer_id, currency, source_id $$;
CREATE FUNCTION saas_api.ltv_daily(from_day date DEFAULT NULL, to_day date DEFAULT NULL)
RETURNS SETOF @extschema@.ltv_daily
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT * FROM @extschema@.ltv_daily d
  WHERE (from_day IS NULL OR d.day >= from_day) AND (to_day IS NULL OR d.day <= to_day)
  ORDER BY d.customer_id, d.currency, d.day, d.source_id
$$;
CREATE FUNCTION saas_api.ltv_summary(period interval DEFAULT '1 day', observation_end timestamptz DEFAULT now())
RETURNS TABLE (customer_id text, currency text, frequency bigint, recency numeric, "T" numeric, monetary_value numeric)
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.ltv_summary(period, observation_end) $$;
CREATE FUNCTION saas_api.revenue_metrics("from" timestamptz, "to" timestamptz, bucket interval DEFAULT '1 month')
RETURNS TABLE (bucket_start timestamptz, bucket_end timestamptz, currency text,
               starting_mrr numeric, new_mrr numeric, expansion_mrr numeric, contraction_mrr numeric,
               churned_mrr numeric, reactivated_mrr numeric, net_new_mrr numeric, mrr numeric,
               starting_customers bigint, new_customers bigint, churned_customers bigint, customers bigint,
               logo_churn_rate numeric, gross_revenue_churn_rate numeric, net_revenue_churn_rate numeric,
               nrr numeric, arpa numeric)
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.revenue_metrics("from", "to", bucket) $$;
CREATE FUNCTION saas_api.cohorts(from_month date DEFAULT NULL, to_month date DEFAULT NULL)
RETURNS TABLE (cohort_month date, currency text, months_since integer, customers bigint,
               paying_customers bigint, net_revenue numeric, logo_retention numeric, revenue_retention numeric)
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.cohorts(from_month, to_month) $$;
CREATE FUNCTION saas_api.customer_health(as_of timestamptz DEFAULT now(), "window" interval DEFAULT '90 days')
RETURNS TABLE (customer_id text, currency text, days_since_last integer, payment_days bigint, net numeric,
               r_score integer, f_score integer, m_score integer, level text, drivers text[])
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.customer_health(as_of, "window") $$;
CREATE FUNCTION saas_api.retention_risk(
  motivational_drivers_match numeric, working_preferences_match numeric, role_skill_fit numeric,
  last_assessment_days integer, performance_trend text)
RETURNS @extschema@.retention_risk_result
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT @extschema@.retention_risk(jsonb_build_object(
    'motivational_drivers_match', motivational_drivers_match, 'working_preferences_match', working_preferences_match,
    'role_skill_fit', role_skill_fit, 'last_assessment_days', last_assessment_days, 'performance_trend', performance_trend))
$$;
COMMENT ON FUNCTION saas_api.retention_risk(numeric, numeric, numeric, integer, text) IS
  'Retention risk with the current tenant''s latest rules (saas.retention_risk(jsonb)); GET /rpc/retention_risk?motivational_drivers_match=...';
CREATE FUNCTION saas_api.retention_risk_settings_set(rules jsonb)
RETURNS integer
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.retention_risk_settings_set(rules) $$;
INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege) VALUES
  ('ltv', 'function', 'saas_api.ltv_ledger()', 'EXECUTE'),
  ('ltv', 'function', 'saas_api.ltv_daily(date, date)', 'EXECUTE'),
  ('ltv', 'function', 'saas_api.ltv_summary(interval, timestamp with time zone)', 'EXECUTE'),
  ('ltv', 'function', 'saas_api.revenue_metrics(timestamp with time zone, timestamp with time zone, interval)', 'EXECUTE'),
  ('ltv', 'function', 'saas_api.cohorts(date, date)', 'EXECUTE'),
  ('ltv', 'function', 'saas_api.customer_health(timestamp with time zone, interval)', 'EXECUTE'),
  ('ltv', 'function', 'saas_api.retention_risk(numeric, numeric, numeric, integer, text)', 'EXECUTE'),
  ('ltv', 'function', 'saas_api.retention_risk_settings_set(jsonb)', 'EXECUTE');

-- Roles that grant_api served before (they can run current_tenant()) get
-- ltv's API rows as grant_api now gives them.
DO $carry_ltv$
DECLARE
  grantee regrole;
  g record;
BEGIN
  FOR grantee IN
    SELECT DISTINCT a.grantee::regrole
    FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
    WHERE p.oid = '@extschema@.current_tenant()'::regprocedure
      AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner
    ORDER BY 1
  LOOP
    FOR g IN SELECT a.object_kind, a.object_name, a.privilege FROM @extschema@.api_grants a
             WHERE a.module = 'ltv' ORDER BY 1, 2, 3 LOOP
      IF g.object_kind = 'function' THEN
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO %s',
          CASE WHEN g.object_name LIKE 'saas\_api.%' THEN g.object_name ELSE '@extschema@.' || g.object_name END, grantee);
      ELSE
        EXECUTE pg_catalog.format('GRANT %s ON TABLE @extschema@.%I TO %s', g.privilege, g.object_name, grantee);
      END IF;
    END LOOP;
  END LOOP;
END
$carry_ltv$;
-- end ltv (issue 18)

-- Deny by default: no routine, table, view or sequence of the schemas
-- (saas, saas_api) is for PUBLIC. API roles get exactly what the modules listed in api_grants
-- (saas.grant_api); DBAs and jobs get explicit GRANTs. A module cannot forget
-- a REVOKE, and an upgrade script ends with the same block.
DO $finalize$
DECLARE
  obj text;
BEGIN
  FOR obj IN
    SELECT pg_catalog.format('%s %s', CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
                             p.oid::regprocedure)
    FROM pg_catalog.pg_proc p
    WHERE p.pronamespace IN ('@extschema@'::regnamespace, 'saas_api'::regnamespace) AND p.prokind IN ('f', 'p')
    ORDER BY 1
  LOOP
    EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM PUBLIC', obj);
  END LOOP;
  FOR obj IN
    SELECT c.oid::regclass::text
    FROM pg_catalog.pg_class c
    WHERE c.relnamespace = '@extschema@'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
      -- The extension's own; the log's monthly partitions carry their own grants.
      AND EXISTS (SELECT FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                    AND d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e')
    ORDER BY 1
  LOOP
    EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM PUBLIC', obj);
  END LOOP;
END
$finalize$;

-- _csv_field was executable by PUBLIC in 0.1.0, and audit_export calls it
-- as the caller: roles that grant_api gave audit_export keep CSV exports.
DO $carry$
DECLARE
  grantee regrole;
BEGIN
  FOR grantee IN
    SELECT DISTINCT a.grantee::regrole
    FROM pg_catalog.pg_proc p, pg_catalog.aclexplode(p.proacl) a
    WHERE p.oid = '@extschema@.audit_export(timestamptz, timestamptz, text)'::regprocedure
      AND a.privilege_type = 'EXECUTE' AND a.grantee <> 0 AND a.grantee <> p.proowner
    ORDER BY 1
  LOOP
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@._csv_field(text) TO %s', grantee);
  END LOOP;
END
$carry$;

-- A GRANT or REVOKE inside an extension script records the object's whole
-- ACL as its initial privileges (pg_init_privs), including what users
-- granted API roles since 0.1.0 was installed; pg_dump would then leave
-- those grants out. Initial privileges are what a fresh 0.2.0 install
-- records: the owner's alone.
UPDATE pg_catalog.pg_init_privs i
SET initprivs = ARRAY(
  SELECT a FROM pg_catalog.unnest(pg_catalog.acldefault(
           (CASE WHEN i.classoid = 'pg_catalog.pg_proc'::regclass THEN 'f'
                 WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::"char",
           coalesce(p.proowner, c.relowner))) a
  WHERE a::text NOT LIKE '=%')
FROM pg_catalog.pg_depend d
LEFT JOIN pg_catalog.pg_proc p ON d.classid = 'pg_catalog.pg_proc'::regclass AND p.oid = d.objid
LEFT JOIN pg_catalog.pg_class c ON d.classid = 'pg_catalog.pg_class'::regclass AND c.oid = d.objid
WHERE i.privtype = 'e' AND i.objsubid = 0
  AND i.classoid = d.classid AND i.objoid = d.objid
  AND d.classid IN ('pg_catalog.pg_proc'::regclass, 'pg_catalog.pg_class'::regclass)
  AND d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e'
  AND d.refobjid = (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_saas')
  AND coalesce(p.pronamespace, c.relnamespace) IN ('@extschema@'::regnamespace, 'saas_api'::regnamespace)
  AND (p.oid IS NULL OR p.prokind IN ('f', 'p'))
  AND (c.oid IS NULL OR c.relkind IN ('r', 'p', 'v', 'm', 'S'));
-- ... and of the API schema itself.
UPDATE pg_catalog.pg_init_privs i
SET initprivs = ARRAY(
  SELECT a FROM pg_catalog.unnest(pg_catalog.acldefault('n', n.nspowner)) a
  WHERE a::text NOT LIKE '=%')
FROM pg_catalog.pg_namespace n
WHERE i.privtype = 'e' AND i.objsubid = 0
  AND i.classoid = 'pg_catalog.pg_namespace'::regclass AND i.objoid = n.oid
  AND n.nspname = 'saas_api';
