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
  'What saas.grant_api() gives API roles: functions (name with argument types) and tables of schema saas, per module.';
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

-- grant_api grants what api_grants lists.
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
  FOREACH r IN ARRAY roles LOOP
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
      RAISE EXCEPTION 'role "%" does not exist', r
        USING ERRCODE = 'undefined_object',
              HINT = format('Create it first (CREATE ROLE %I NOLOGIN;) or pass the roles PostgREST uses.', r);
    END IF;
  END LOOP;
  FOREACH r IN ARRAY roles LOOP
    EXECUTE format('GRANT USAGE ON SCHEMA @extschema@ TO %I', r);
    -- What policies and API clients call; nothing internal.
    FOR g IN SELECT a.object_kind, a.object_name, a.privilege FROM @extschema@.api_grants a
             ORDER BY a.object_kind, a.object_name, a.privilege LOOP
      IF g.object_kind = 'function' THEN
        EXECUTE format('GRANT EXECUTE ON FUNCTION @extschema@.%s TO %I', g.object_name, r);
      ELSE
        EXECUTE format('GRANT %s ON @extschema@.%I TO %I', g.privilege, g.object_name, r);
      END IF;
    END LOOP;
  END LOOP;
END
$$;

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
  FOR cfg IN SELECT * FROM @extschema@.partition_config c
             WHERE run_maintenance.parent IS NULL OR c.parent = run_maintenance.parent
             ORDER BY c.parent::text LOOP
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
  sealed_chains bigint;
  sealed_rows numeric;
BEGIN
  SELECT count(*), coalesce(sum(s.row_count), 0) INTO sealed_chains, sealed_rows FROM @extschema@.audit_seal() s;
  IF sealed_chains > 0 THEN
    parent_table := '@extschema@.audit_log'::regclass; action := 'seal'; partition_name := NULL;
    detail := format('%s rows sealed in %s tenant chains', sealed_rows, sealed_chains);
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

-- Deny by default: no routine, table, view or sequence of the schema is for
-- PUBLIC. API roles get exactly what the modules listed in api_grants
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
    WHERE p.pronamespace = '@extschema@'::regnamespace AND p.prokind IN ('f', 'p')
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
  AND coalesce(p.pronamespace, c.relnamespace) = '@extschema@'::regnamespace
  AND (p.oid IS NULL OR p.prokind IN ('f', 'p'))
  AND (c.oid IS NULL OR c.relkind IN ('r', 'p', 'v', 'm', 'S'));
