-- pg_saas bootstrap: runs first, before any function of the extension exists.
-- The schema itself comes from the control file (schema = saas); pinning
-- everything to @extschema@ keeps the extension out of `public`.

COMMENT ON SCHEMA @extschema@ IS
  'pg_saas: multi-tenant SaaS back end (tenancy, audit, partitions, rate limits, LTV, retention, memory, LLM cache, privacy)';

-- Nobody but the owner creates objects in our schema.
REVOKE CREATE ON SCHEMA @extschema@ FROM PUBLIC;

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
INSERT INTO @extschema@.installations (version)
SELECT e.extversion FROM pg_catalog.pg_extension e WHERE e.extname = 'pg_saas';
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
