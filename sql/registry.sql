-- pg_saas registry: how modules meet. Each module fills these tables from its
-- own sql/<module>.sql; the functions here read them and name no module's
-- objects, so adding a module touches no shared file.
--
-- Internal tables: rows come back with CREATE EXTENSION, so they are not
-- marked for pg_dump (partition_hooks keeps users' own hooks, which are).
-- Object names are text, not reg* types (pg_upgrade refuses those in user
-- tables), resolved when used; the schema is always @extschema@.

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

-- Every command that can drop a table (DROP TABLE/SCHEMA/OWNED, DROP
-- EXTENSION of an extension owning one, ...): no tag filter.
CREATE FUNCTION @extschema@._forget_dropped_tables()
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
CREATE EVENT TRIGGER saas_forget_dropped_tables ON sql_drop
  EXECUTE FUNCTION @extschema@._forget_dropped_tables();

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

-- ---------------------------------------------------------------------------
-- Partition hooks: what modules re-apply to every new partition.
-- ---------------------------------------------------------------------------
-- What other modules re-apply to every new partition (tenancy policies;
-- audit triggers). A hook is a function (parent regclass, partition
-- regclass), named with its schema and argument types as text: a
-- regprocedure column would block pg_upgrade.
CREATE TABLE @extschema@.partition_hooks (
  hook_name  text    NOT NULL,
  hook       text    NOT NULL,
  builtin    boolean NOT NULL DEFAULT false,
  CONSTRAINT partition_hooks_pkey PRIMARY KEY (hook_name)
);
COMMENT ON TABLE @extschema@.partition_hooks IS
  'Functions (parent regclass, partition regclass) run for every partition pg_saas creates or attaches.';
ALTER TABLE @extschema@.partition_hooks ENABLE ROW LEVEL SECURITY;
-- Built-in hooks come back with CREATE EXTENSION; only users' hooks are dumped.
SELECT pg_catalog.pg_extension_config_dump('@extschema@.partition_hooks', 'WHERE NOT builtin');

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

-- ---------------------------------------------------------------------------
-- grant_api: what API roles need, from api_grants
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.grant_api(roles name[])
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
COMMENT ON FUNCTION @extschema@.grant_api(name[]) IS
  'Gives API roles (anon, authenticated, service_role, ...) what PostgREST needs of pg_saas, and nothing on internals.';

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
