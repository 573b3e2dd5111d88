-- Tenancy: tenants, memberships, one-call RLS for user tables, a coverage
-- report and API grants. current_tenant(), current_user_id(), has_role() and
-- set_tenant() are Rust (src/tenancy/mod.rs) and exist before this file runs.

-- ---------------------------------------------------------------------------
-- Tenants and memberships
-- ---------------------------------------------------------------------------

-- Weakest first, so has_role() and ORDER BY compare roles naturally.
CREATE TYPE @extschema@.tenant_role AS ENUM ('viewer', 'member', 'admin', 'owner');

-- The tenant directory. Under Citus it is a reference table (global, small,
-- replicated): its slug is unique across tenants, which a table distributed
-- by id could not enforce. memberships reference it; nothing global
-- references a tenant table.
CREATE TABLE @extschema@.tenants (
  id          uuid        NOT NULL DEFAULT gen_random_uuid(),
  slug        text        NOT NULL,
  name        text        NOT NULL,
  plan        text        NOT NULL DEFAULT 'free',
  status      text        NOT NULL DEFAULT 'active',
  created_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT tenants_pkey PRIMARY KEY (id),
  CONSTRAINT tenants_slug_key UNIQUE (slug),
  CONSTRAINT tenants_slug_format CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
  CONSTRAINT tenants_name_length CHECK (char_length(name) BETWEEN 1 AND 200),
  CONSTRAINT tenants_plan_length CHECK (char_length(plan) BETWEEN 1 AND 63),
  CONSTRAINT tenants_status_valid CHECK (status IN ('active', 'suspended'))
);
COMMENT ON TABLE @extschema@.tenants IS
  'pg_saas tenants (workspaces, organisations). A request sees only its own tenant''s row.';

-- Distributed by tenant_id under Citus: tenant_id leads the primary key.
CREATE TABLE @extschema@.memberships (
  tenant_id   uuid        NOT NULL,
  user_id     uuid        NOT NULL,
  role        @extschema@.tenant_role NOT NULL DEFAULT 'member',
  created_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT memberships_pkey PRIMARY KEY (tenant_id, user_id),
  CONSTRAINT memberships_tenant_fkey FOREIGN KEY (tenant_id)
    REFERENCES @extschema@.tenants (id) ON DELETE CASCADE
);
-- "Which tenants is this user in?" (my_memberships, header switching).
CREATE INDEX memberships_user_idx ON @extschema@.memberships (user_id, tenant_id);
COMMENT ON TABLE @extschema@.memberships IS
  'Users of each tenant with their role (owner > admin > member > viewer).';

SELECT pg_catalog.pg_extension_config_dump('@extschema@.tenants', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.memberships', '');
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

-- ---------------------------------------------------------------------------
-- Registry of tables under enable_tenancy (what to undo, what to extend to
-- new partitions). A global config table: valid as a Citus reference table.
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.tenant_tables (
  relid             regclass    NOT NULL,
  tenant_column     name        NOT NULL,
  previous_default  text,
  created_index     name,
  rls_was_enabled   boolean     NOT NULL,
  rls_was_forced    boolean     NOT NULL,
  enabled_at        timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT tenant_tables_pkey PRIMARY KEY (relid)
);
COMMENT ON TABLE @extschema@.tenant_tables IS
  'Tables isolated by saas.enable_tenancy(), with what disable_tenancy() restores.';
-- Internal: only the owner (and superusers) read or write it.
ALTER TABLE @extschema@.tenant_tables ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tenant_tables', '');
-- A dropped table leaves the registry (registry.sql's sql_drop trigger).
INSERT INTO @extschema@.table_registries (registry, relid_column, module)
VALUES ('tenant_tables', 'relid', 'tenancy');

-- ---------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------

-- Drops pg_saas's two policies from one relation (quietly, unlike IF EXISTS).
CREATE FUNCTION @extschema@._tenancy_drop_policies(rel regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  pol name;
BEGIN
  FOR pol IN SELECT p.polname FROM pg_policy p
             WHERE p.polrelid = rel AND p.polname IN ('saas_tenant_isolation', 'saas_tenant_access') LOOP
    EXECUTE format('DROP POLICY %I ON %s', pol, rel);
  END LOOP;
END
$$;

-- Applies forced RLS, the policies and the tenant default to one relation.
-- The restrictive saas_tenant_isolation is always there; the permissive
-- saas_tenant_access (the base grant of rows) only when the table has no
-- permissive policy of its own, whose rules it would otherwise switch off.
-- Idempotent: policies are replaced, so a re-run repairs a changed one.
CREATE FUNCTION @extschema@._tenancy_apply(rel regclass, tenant_column name, set_default boolean DEFAULT true)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  cond text := format('%I = (SELECT @extschema@.current_tenant())', tenant_column);
BEGIN
  EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', rel);
  EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', rel);
  PERFORM @extschema@._tenancy_drop_policies(rel);
  EXECUTE format('CREATE POLICY saas_tenant_isolation ON %s AS RESTRICTIVE FOR ALL USING (%s) WITH CHECK (%s)',
                 rel, cond, cond);
  IF NOT EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = rel AND p.polpermissive) THEN
    EXECUTE format('CREATE POLICY saas_tenant_access ON %s AS PERMISSIVE FOR ALL USING (true) WITH CHECK (true)', rel);
  END IF;
  -- ONLY: each partition gets its own call (one attached later must not
  -- depend on having been created through the parent).
  IF set_default THEN
    EXECUTE format('ALTER TABLE ONLY %s ALTER COLUMN %I SET DEFAULT @extschema@.current_tenant()', rel, tenant_column);
  END IF;
END
$$;

-- pg_saas's own tables isolate themselves like any enable_tenancy table; the
-- directory's id is the tenant and keeps its gen_random_uuid() default.
SELECT @extschema@._tenancy_apply('@extschema@.tenants', 'id', set_default => false);
SELECT @extschema@._tenancy_apply('@extschema@.memberships', 'tenant_id');

-- The relation and, for a partitioned table, every partition below it.
CREATE FUNCTION @extschema@._tenancy_tree(rel regclass)
RETURNS SETOF regclass
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT t.relid FROM pg_partition_tree(rel) t
  JOIN pg_class c ON c.oid = t.relid AND c.relkind IN ('r', 'p')
  UNION
  SELECT rel
$$;

-- Resolves a table name given as text, with errors a user can act on.
-- No pinned search_path: the name resolves as the caller's regclass cast would.
CREATE FUNCTION @extschema@._tenancy_table(tbl text)
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

-- ---------------------------------------------------------------------------
-- enable_tenancy / disable_tenancy
-- ---------------------------------------------------------------------------

CREATE FUNCTION @extschema@.enable_tenancy(
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
COMMENT ON FUNCTION @extschema@.enable_tenancy(regclass, name, boolean) IS
  'Isolates a table (and every partition) by tenant: forced RLS, policies on (SELECT saas.current_tenant()), a tenant default, an index. Idempotent.';

-- Text overload: the same, with a clear error for a name that does not resolve.
CREATE FUNCTION @extschema@.enable_tenancy(
  tbl text,
  tenant_column name DEFAULT 'tenant_id',
  create_index boolean DEFAULT true)
RETURNS jsonb
LANGUAGE sql VOLATILE PARALLEL UNSAFE
AS $$
  SELECT @extschema@.enable_tenancy(@extschema@._tenancy_table(tbl), tenant_column, create_index)
$$;

CREATE FUNCTION @extschema@.disable_tenancy(tbl regclass)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  reg @extschema@.tenant_tables%ROWTYPE;
  part regclass;
BEGIN
  SELECT * INTO reg FROM @extschema@.tenant_tables WHERE relid = tbl;
  IF NOT FOUND THEN
    RAISE NOTICE '"%" is not isolated by pg_saas; nothing to undo', tbl;
    RETURN false;
  END IF;
  -- Unregister first: the DDL below must not look like a new partition to
  -- the event trigger, which would isolate it again.
  DELETE FROM @extschema@.tenant_tables WHERE relid = tbl;
  FOR part IN SELECT * FROM @extschema@._tenancy_tree(tbl) LOOP
    PERFORM @extschema@._tenancy_drop_policies(part);
    IF reg.previous_default IS NULL THEN
      EXECUTE format('ALTER TABLE ONLY %s ALTER COLUMN %I DROP DEFAULT', part, reg.tenant_column);
    ELSE
      EXECUTE format('ALTER TABLE ONLY %s ALTER COLUMN %I SET DEFAULT %s', part, reg.tenant_column, reg.previous_default);
    END IF;
    IF NOT reg.rls_was_forced THEN
      EXECUTE format('ALTER TABLE %s NO FORCE ROW LEVEL SECURITY', part);
    END IF;
    IF NOT reg.rls_was_enabled THEN
      EXECUTE format('ALTER TABLE %s DISABLE ROW LEVEL SECURITY', part);
    END IF;
  END LOOP;
  IF reg.created_index IS NOT NULL THEN
    EXECUTE format('DROP INDEX IF EXISTS %I.%I',
                   (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl),
                   reg.created_index);
  END IF;
  RETURN true;
END
$$;
COMMENT ON FUNCTION @extschema@.disable_tenancy(regclass) IS
  'Undoes enable_tenancy: drops its policies, default and index, and restores the table''s RLS flags.';

-- New partitions of an isolated table get the same isolation from the
-- partitions module: its event trigger runs the built-in partition hooks,
-- tenancy's among them (_tenancy_partition_hook, in partitions.sql).

-- A dropped table leaves the registry with it: finalize.sql's
-- _forget_dropped_tables, shared by every module's registry.

-- ---------------------------------------------------------------------------
-- Coverage report
-- ---------------------------------------------------------------------------

CREATE FUNCTION @extschema@.tenancy_report(
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
-- Workspace list and what API roles get
-- ---------------------------------------------------------------------------

-- The tenants the request's user belongs to (a workspace switcher's list),
-- across tenants, which RLS on memberships would not show.
CREATE FUNCTION @extschema@.my_memberships()
RETURNS TABLE (tenant_id uuid, slug text, name text, role @extschema@.tenant_role, status text)
LANGUAGE sql STABLE PARALLEL RESTRICTED
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT t.id, t.slug, t.name, m.role, t.status
  FROM @extschema@.memberships m
  JOIN @extschema@.tenants t ON t.id = m.tenant_id
  WHERE m.user_id = @extschema@.current_user_id()
  ORDER BY t.slug
$$;

-- What API roles get from saas.grant_api (registry.sql): what policies,
-- column defaults and clients call.
INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege) VALUES
  ('tenancy', 'function', 'current_user_id()', 'EXECUTE'),
  ('tenancy', 'function', 'current_tenant()', 'EXECUTE'),
  ('tenancy', 'function', 'has_role(text)', 'EXECUTE'),
  ('tenancy', 'function', 'my_memberships()', 'EXECUTE'),
  ('tenancy', 'table', 'tenants', 'SELECT'),
  ('tenancy', 'table', 'memberships', 'SELECT');

-- ---------------------------------------------------------------------------
-- Partitions of isolated tables
-- ---------------------------------------------------------------------------
-- A partition of an isolated table is isolated too: run for every partition
-- pg_saas creates or attaches and for CREATE TABLE ... PARTITION OF (the
-- partitions module runs the registry's partition_hooks).
CREATE FUNCTION @extschema@._tenancy_partition_hook(parent regclass, part regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  col name;
BEGIN
  SELECT r.tenant_column INTO col FROM @extschema@.tenant_tables r
  WHERE r.relid = coalesce(pg_partition_root(parent), parent);
  IF FOUND AND NOT EXISTS (SELECT FROM pg_policy p WHERE p.polrelid = part AND p.polname = 'saas_tenant_isolation') THEN
    PERFORM @extschema@._tenancy_apply(part, col);
  END IF;
END
$$;
INSERT INTO @extschema@.partition_hooks (hook_name, hook, builtin)
VALUES ('tenancy', '@extschema@._tenancy_partition_hook(regclass, regclass)', true);

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
