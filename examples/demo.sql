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

-- ---------------------------------------------------------------------------
-- tenancy: two workspaces, users in one or both, a tenant table in the API
-- ---------------------------------------------------------------------------
SELECT saas.grant_api('{anon,authenticated}');

INSERT INTO saas.tenants (id, slug, name) VALUES
  ('a0000000-0000-4000-8000-000000000001', 'acme', 'Acme Inc'),
  ('b0000000-0000-4000-8000-000000000002', 'globex', 'Globex Corp');
-- alice owns acme, bob is a member of globex, carol is in both.
INSERT INTO saas.memberships (tenant_id, user_id, role) VALUES
  ('a0000000-0000-4000-8000-000000000001', '11111111-1111-4111-8111-111111111111', 'owner'),
  ('b0000000-0000-4000-8000-000000000002', '22222222-2222-4222-8222-222222222222', 'member'),
  ('a0000000-0000-4000-8000-000000000001', '33333333-3333-4333-8333-333333333333', 'admin'),
  ('b0000000-0000-4000-8000-000000000002', '33333333-3333-4333-8333-333333333333', 'viewer');

CREATE TABLE api.projects (
  tenant_id uuid NOT NULL,
  id bigint GENERATED ALWAYS AS IDENTITY,
  name text NOT NULL,
  PRIMARY KEY (tenant_id, id));
SELECT saas.enable_tenancy('api.projects') AS isolated;
GRANT SELECT, INSERT, UPDATE, DELETE ON api.projects TO authenticated;

-- A backend job seeds each workspace (no JWT, so set_tenant scopes it). The
-- demo runs as a superuser, which bypasses RLS: set_tenant warns that only the
-- tenant default follows it; real jobs run as a NOBYPASSRLS role.
SET client_min_messages = error;
BEGIN;
SELECT saas.set_tenant('a0000000-0000-4000-8000-000000000001') IS NOT NULL AS scoped;
INSERT INTO api.projects (name) VALUES ('Website'), ('Mobile app');
COMMIT;
BEGIN;
SELECT saas.set_tenant('b0000000-0000-4000-8000-000000000002') IS NOT NULL AS scoped;
INSERT INTO api.projects (name) VALUES ('Rocket');
COMMIT;
RESET client_min_messages;

-- What carol sees through PostgREST when she switches to globex by header
-- (the same set_config calls PostgREST makes for GET /projects).
BEGIN;
SET LOCAL ROLE authenticated;
SELECT set_config('request.jwt.claims', '{"role": "authenticated", "sub": "33333333-3333-4333-8333-333333333333"}', true) IS NOT NULL AS claims_set,
       set_config('request.headers', '{"x-tenant-id": "b0000000-0000-4000-8000-000000000002"}', true) IS NOT NULL AS header_set;
SELECT name AS carol_in_globex_sees FROM api.projects ORDER BY name;
COMMIT;

-- Rate limits and plan quotas (the seeds' limits, as rows): PostgREST's
-- db-pre-request = saas.pre_request applies them; 429 / 402 with Retry-After.
SELECT saas.rate_limit_rule_set('/rpc/generate_roadmap', 5, '1 hour') AS generate_rule,
       saas.rate_limit_rule_set('/rpc/chat_*', 50, '1 hour') AS chat_rule,
       saas.rate_limit_rule_set('/*', 60, '1 minute') AS per_user_rule;
INSERT INTO saas.plans (plan, api_calls_per_day, storage_bytes) VALUES ('free', 1000, 1073741824)
ON CONFLICT (plan) DO NOTHING;
BEGIN READ ONLY;   -- a GET: limited through shared memory
SELECT set_config('request.jwt.claims', '{"role": "authenticated", "sub": "33333333-3333-4333-8333-333333333333"}', true) IS NOT NULL AS claims_set,
       set_config('request.headers', '{"x-tenant-id": "b0000000-0000-4000-8000-000000000002"}', true) IS NOT NULL AS header_set,
       set_config('request.method', 'GET', true) IS NOT NULL AS method_set,
       set_config('request.path', '/projects', true) IS NOT NULL AS path_set;
SELECT saas.pre_request();
SELECT current_setting('response.headers') AS rate_limit_headers;
COMMIT;

SELECT table_name, problems FROM saas.tenancy_report('{api}');
SELECT api.health() AS demo_ready;
