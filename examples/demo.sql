-- pg_saas demo: what a SaaS back end on pg_saas looks like from the API side.
-- Loaded by `make run` into a fresh database that already has
-- `CREATE EXTENSION pg_saas CASCADE`. Each module adds its part here.

-- The roles a PostgREST/Supabase deployment uses. The extension creates no
-- roles (they are cluster-wide); a deployment does, once.
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN
    CREATE ROLE anon NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN
    CREATE ROLE authenticated NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticator') THEN
    -- Local demo only: a real deployment uses a secret password.
    CREATE ROLE authenticator LOGIN NOINHERIT PASSWORD 'authenticator';
  END IF;
END
$$;
GRANT anon, authenticated TO authenticator;

-- The exposed API schema (PostgREST db-schemas = "api").
CREATE SCHEMA api;
GRANT USAGE ON SCHEMA api TO anon, authenticated;
GRANT USAGE ON SCHEMA saas TO anon, authenticated;

-- GET /rpc/health
CREATE FUNCTION api.health() RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
  SELECT jsonb_build_object(
    'pg_saas', saas.version(),
    'database', current_database(),
    'postgres', current_setting('server_version'))
$$;
GRANT EXECUTE ON FUNCTION api.health() TO anon, authenticated;

SELECT api.health() AS demo_ready;
