-- Tenancy: tenant context, has_role, enable/disable_tenancy, the report,
-- grant_api. Errors show their SQLSTATE through :LAST_ERROR_SQLSTATE.
\set SHOW_CONTEXT never
SET client_min_messages = notice;

-- Fixed ids: tenants A (acme), B (globex), S (suspended); users.
\set ta '''0000000a-0000-4000-8000-000000000000'''
\set tb '''0000000b-0000-4000-8000-000000000000'''
\set ts '''00000005-0000-4000-8000-000000000000'''
\set u_owner '''000000aa-0000-4000-8000-000000000000'''
\set u_viewer '''000000bb-0000-4000-8000-000000000000'''
\set u_both '''000000ab-0000-4000-8000-000000000000'''

CREATE ROLE regress_tenancy_api NOLOGIN;
CREATE ROLE regress_tenancy_anon NOLOGIN;
SELECT saas.grant_api('{regress_tenancy_api,regress_tenancy_anon}');

INSERT INTO saas.tenants (id, slug, name, status) VALUES
  (:ta, 'acme', 'Acme', 'active'),
  (:tb, 'globex', 'Globex', 'active'),
  (:ts, 'sleepy', 'Sleepy', 'suspended');
INSERT INTO saas.memberships (tenant_id, user_id, role) VALUES
  (:ta, :u_owner, 'owner'),
  (:ta, :u_viewer, 'viewer'),
  (:ta, :u_both, 'admin'),
  (:tb, :u_both, 'member'),
  (:ts, :u_both, 'owner');

-- The catalog: roles ordered weakest first, config tables marked for pg_dump
-- (by name: their creation order follows pgrx's ordering of the modules' SQL).
SELECT enum_range(NULL::saas.tenant_role);
SELECT c AS dumped_config FROM pg_extension, unnest(extconfig::regclass[]) c WHERE extname = 'pg_saas' ORDER BY c::text;
SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity
FROM pg_class c WHERE c.relnamespace = 'saas'::regnamespace AND c.relkind = 'r' ORDER BY 1;
INSERT INTO saas.tenants (id, slug, name, created_at) VALUES (:tb, 'Bad Slug', 'x', '2026-11-23 00:00+00');
\echo :LAST_ERROR_SQLSTATE

-- ---------------------------------------------------------------------------
-- current_user_id() and current_tenant()
-- ---------------------------------------------------------------------------
-- No claims, nothing set: no user, no tenant (policies deny).
SELECT saas.current_user_id() IS NULL AS no_user, saas.current_tenant() IS NULL AS no_tenant;

BEGIN;
-- 1. The tenant claim, top level.
SELECT set_config('request.jwt.claims', format('{"sub": %s, "tenant_id": %s}', to_json(:u_owner::text), to_json(:ta::text)), true) IS NOT NULL AS set;
SELECT saas.current_user_id() = :u_owner AS user_ok, saas.current_tenant() = :ta AS tenant_from_claim;
SELECT saas.has_role('owner') AS owner, saas.has_role('viewer') AS viewer;
-- set_tenant cannot re-scope a request with claims.
SELECT saas.set_tenant(:tb);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

BEGIN;
-- ... or under app_metadata (Supabase custom claims).
SELECT set_config('request.jwt.claims', format('{"sub": %s, "app_metadata": {"tenant_id": %s}}', to_json(:u_both::text), to_json(:tb::text)), true) IS NOT NULL AS set;
SELECT saas.current_tenant() = :tb AS tenant_from_app_metadata, saas.has_role('member') AS member, saas.has_role('admin') AS admin;
ROLLBACK;

-- A user's token is held to the memberships on every request: removed from
-- the tenant, the user loses it at once, though the token still names it.
DELETE FROM saas.memberships WHERE tenant_id = :tb AND user_id = :u_both;
BEGIN;
SELECT set_config('request.jwt.claims', format('{"sub": %s, "tenant_id": %s}', to_json(:u_both::text), to_json(:tb::text)), true) IS NOT NULL AS set;
SELECT saas.current_tenant();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
INSERT INTO saas.memberships (tenant_id, user_id, role) VALUES (:tb, :u_both, 'member');
-- A machine token (no sub) is scoped by its claim alone.
BEGIN;
SELECT set_config('request.jwt.claims', format('{"role": "service", "tenant_id": %s}', to_json(:tb::text)), true) IS NOT NULL AS set;
SELECT saas.current_tenant() = :tb AS machine_token_scoped, saas.has_role('viewer') AS no_role;
ROLLBACK;

BEGIN;
-- user_metadata is editable by users: never read.
SELECT set_config('request.jwt.claims', format('{"sub": %s, "user_metadata": {"tenant_id": %s}}', to_json(:u_owner::text), to_json(:tb::text)), true) IS NOT NULL AS set;
SELECT saas.current_tenant() IS NULL AS user_metadata_ignored;
ROLLBACK;

BEGIN;
-- 2. The X-Tenant-Id header, for a member: a user of two tenants switches.
SELECT set_config('request.jwt.claims', format('{"sub": %s, "role": "authenticated"}', to_json(:u_both::text)), true) IS NOT NULL AS set;
SELECT set_config('request.headers', format('{"x-tenant-id": %s}', to_json(:tb::text)), true) IS NOT NULL AS set;
SELECT saas.current_tenant() = :tb AS switched_to_b, saas.has_role('member') AS member, saas.has_role('admin') AS admin;
SELECT set_config('request.headers', format('{"x-tenant-id": %s}', to_json(:ta::text)), true) IS NOT NULL AS set;
SELECT saas.current_tenant() = :ta AS switched_to_a, saas.has_role('admin') AS admin;
SELECT slug, role FROM saas.my_memberships() ORDER BY slug;
ROLLBACK;

BEGIN;
-- A header naming a tenant the user is not in, or a suspended one, fails.
SELECT set_config('request.jwt.claims', format('{"sub": %s}', to_json(:u_owner::text)), true) IS NOT NULL AS set;
SELECT set_config('request.headers', format('{"x-tenant-id": %s}', to_json(:tb::text)), true) IS NOT NULL AS set;
SELECT saas.current_tenant();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SELECT set_config('request.jwt.claims', format('{"sub": %s}', to_json(:u_both::text)), true) IS NOT NULL AS set;
SELECT set_config('request.headers', format('{"x-tenant-id": %s}', to_json(:ts::text)), true) IS NOT NULL AS set;
SELECT saas.current_tenant();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- Bad input: claims that are not JSON, ids that are not uuids.
BEGIN;
SELECT set_config('request.jwt.claims', '{"sub": ', true) IS NOT NULL AS set;
SELECT saas.current_tenant();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SELECT set_config('request.jwt.claims', '{"sub": "user-42"}', true) IS NOT NULL AS set;
SELECT saas.current_user_id();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
-- ... but a tenant claim still scopes a request whose sub is not a uuid.
BEGIN;
SELECT set_config('request.jwt.claims', format('{"sub": "auth0|42", "tenant_id": %s}', to_json(:ta::text)), true) IS NOT NULL AS set;
SELECT saas.current_tenant() = :ta AS tenant_despite_foreign_sub, saas.has_role('viewer') AS no_role_without_uuid_sub;
ROLLBACK;
BEGIN;
SELECT set_config('request.jwt.claims', '{"tenant_id": "acme"}', true) IS NOT NULL AS set;
SELECT saas.current_tenant();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SELECT set_config('request.jwt.claims', format('{"sub": %s}', to_json(:u_both::text)), true) IS NOT NULL AS set;
SELECT set_config('request.headers', '{"x-tenant-id": "globex"}', true) IS NOT NULL AS set;
SELECT saas.current_tenant();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT saas.has_role('superuser');
\echo :LAST_ERROR_SQLSTATE

-- The claim name is configurable (superuser-only setting).
BEGIN;
SET LOCAL saas.tenant_claim = 'org_id';
SELECT set_config('request.jwt.claims', format('{"org_id": %s, "tenant_id": %s}', to_json(:tb::text), to_json(:ta::text)), true) IS NOT NULL AS set;
SELECT saas.current_tenant() = :tb AS tenant_from_org_id;
ROLLBACK;
BEGIN;
SET LOCAL saas.tenant_claim = 'org id; drop';
SELECT saas.current_tenant();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- 3. set_tenant for callers without claims, for this transaction only.
BEGIN;
SELECT saas.set_tenant(:ta) = :ta AS set_tenant;
SELECT saas.current_tenant() = :ta AS scoped;
COMMIT;
SELECT saas.current_tenant() IS NULL AS gone_after_commit;
SELECT saas.set_tenant(:ts);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.set_tenant('00000000-0000-4000-8000-00000000dead');
\echo :LAST_ERROR_SQLSTATE
BEGIN;
SELECT saas.set_tenant(:ta) IS NOT NULL AS set, saas.set_tenant(NULL) IS NULL AS cleared, saas.current_tenant() IS NULL AS no_tenant;
ROLLBACK;
-- A failed switch leaves no tenant behind, not the previous one.
BEGIN;
SELECT saas.set_tenant(:ta) IS NOT NULL AS set;
SAVEPOINT s;
SELECT saas.set_tenant(:ts);
ROLLBACK TO SAVEPOINT s;
SELECT saas.current_tenant() IS NULL AS no_tenant_after_failed_switch;
ROLLBACK;
-- A switch inside a rolled-back savepoint is undone (fail closed).
BEGIN;
SAVEPOINT s;
SELECT saas.set_tenant(:tb) IS NOT NULL AS set_in_savepoint;
ROLLBACK TO SAVEPOINT s;
SELECT saas.current_tenant() IS NULL AS undone_with_savepoint;
ROLLBACK;

-- ---------------------------------------------------------------------------
-- enable_tenancy
-- ---------------------------------------------------------------------------
CREATE SCHEMA tenancy_test;
GRANT USAGE ON SCHEMA tenancy_test TO regress_tenancy_api, regress_tenancy_anon;

CREATE TABLE tenancy_test.notes (
  id bigint GENERATED ALWAYS AS IDENTITY,
  tenant_id uuid NOT NULL,
  body text NOT NULL,
  PRIMARY KEY (tenant_id, id));
SELECT saas.enable_tenancy('tenancy_test.notes');
-- Idempotent: the same result, the same two policies.
SELECT saas.enable_tenancy('tenancy_test.notes'::regclass);
SELECT polname, polpermissive, polcmd, pg_get_expr(polqual, polrelid) AS using_expr,
       pg_get_expr(polwithcheck, polrelid) AS check_expr
FROM pg_policy WHERE polrelid = 'tenancy_test.notes'::regclass ORDER BY polname;
SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'tenancy_test.notes'::regclass;

-- A partitioned table: the parent and every partition, present and future.
CREATE TABLE tenancy_test.events (
  tenant_id uuid NOT NULL,
  at timestamptz NOT NULL,
  kind text NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE tenancy_test.events_2026_11 PARTITION OF tenancy_test.events
  FOR VALUES FROM ('2026-11-01 00:00+00') TO ('2026-12-01 00:00+00');
SELECT saas.enable_tenancy('tenancy_test.events');
CREATE TABLE tenancy_test.events_2026_12 PARTITION OF tenancy_test.events
  FOR VALUES FROM ('2026-12-01 00:00+00') TO ('2027-01-01 00:00+00');
-- A partition attached as pg_partman attaches them (CREATE TABLE ... LIKE,
-- then ATTACH PARTITION) is closed at once: its parent's RLS flags, no
-- policy, so no role that is subject to RLS reads it directly. It has no
-- tenant policies until enable_tenancy runs again, which the report says.
CREATE TABLE tenancy_test.events_2027_01 (LIKE tenancy_test.events);
INSERT INTO tenancy_test.events_2027_01 VALUES (:ta, '2027-01-05 00:00+00', 'before attach');
ALTER TABLE tenancy_test.events ATTACH PARTITION tenancy_test.events_2027_01
  FOR VALUES FROM ('2027-01-01 00:00+00') TO ('2027-02-01 00:00+00');
SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'tenancy_test.events_2027_01'::regclass;
GRANT USAGE ON SCHEMA tenancy_test TO regress_tenancy_api;
GRANT SELECT ON tenancy_test.events_2027_01 TO regress_tenancy_api;
BEGIN;
SET LOCAL ROLE regress_tenancy_api;
SELECT set_config('request.jwt.claims', format('{"sub": %s, "tenant_id": %s}', to_json(:u_both::text), to_json(:tb::text)), true) IS NOT NULL AS set;
SELECT count(*) AS other_tenant_rows_read_through_the_partition FROM tenancy_test.events_2027_01;
ROLLBACK;
-- Nor can its row level security be switched off while it is a partition.
ALTER TABLE tenancy_test.events_2027_01 NO FORCE ROW LEVEL SECURITY;
ALTER TABLE tenancy_test.events_2027_01 DISABLE ROW LEVEL SECURITY;
SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'tenancy_test.events_2027_01'::regclass;
SELECT unnest(problems) AS problem FROM saas.tenancy_report('{tenancy_test}') WHERE table_name = 'tenancy_test.events'::regclass;
SELECT saas.enable_tenancy('tenancy_test.events') ->> 'relations' AS relations_covered;
SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
       (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname LIKE 'saas_tenant_%') AS saas_policies,
       pg_get_expr(d.adbin, d.adrelid) AS tenant_default
FROM pg_class c
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = 1
WHERE c.relnamespace = 'tenancy_test'::regnamespace AND c.relname LIKE 'events%' AND c.relkind IN ('r', 'p')
ORDER BY 1;

-- Identifiers that need quoting: mixed case, spaces, quotes.
CREATE TABLE tenancy_test."Odd ""Table"" Name" ("Tenant Id" uuid NOT NULL, v int);
SELECT saas.enable_tenancy('tenancy_test."Odd ""Table"" Name"', 'Tenant Id');
SELECT polname, pg_get_expr(polqual, polrelid) AS using_expr
FROM pg_policy WHERE polrelid = 'tenancy_test."Odd ""Table"" Name"'::regclass ORDER BY polname;

-- Bad input: each error names the problem and how to fix it; nothing is applied.
SELECT saas.enable_tenancy('tenancy_test.missing');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.enable_tenancy('tenancy_test.MixedCase');
\echo :LAST_ERROR_SQLSTATE
CREATE VIEW tenancy_test.notes_view AS SELECT * FROM tenancy_test.notes;
SELECT saas.enable_tenancy('tenancy_test.notes_view');
\echo :LAST_ERROR_SQLSTATE
-- Views over tenant tables are in the report: notes_view (owned by a
-- superuser, not security_invoker) shows every tenant's rows; a
-- security_invoker view is fine; a materialized view has no RLS at all.
CREATE VIEW tenancy_test.notes_invoker WITH (security_invoker = true) AS SELECT * FROM tenancy_test.notes;
CREATE MATERIALIZED VIEW tenancy_test.notes_snapshot AS SELECT * FROM tenancy_test.notes WITH NO DATA;
CREATE TABLE tenancy_test.wrong_type (tenant_id text, owner_id uuid, v int);
SELECT saas.enable_tenancy('tenancy_test.wrong_type');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.enable_tenancy('tenancy_test.wrong_type', 'workspace_id');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.enable_tenancy('tenancy_test.events_2026_11');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.enable_tenancy('tenancy_test.notes', 'body');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.enable_tenancy('saas.tenants', 'id');
\echo :LAST_ERROR_SQLSTATE
SELECT relrowsecurity, (SELECT count(*) FROM pg_policy WHERE polrelid = 'tenancy_test.wrong_type'::regclass) AS policies
FROM pg_class WHERE oid = 'tenancy_test.wrong_type'::regclass;

-- ---------------------------------------------------------------------------
-- Isolation as an API role
-- ---------------------------------------------------------------------------
GRANT SELECT, INSERT, UPDATE, DELETE ON tenancy_test.notes, tenancy_test.events TO regress_tenancy_api, regress_tenancy_anon;
GRANT SELECT ON tenancy_test.events_2026_11 TO regress_tenancy_api;

BEGIN;
SET LOCAL ROLE regress_tenancy_api;
SELECT set_config('request.jwt.claims', format('{"sub": %s, "tenant_id": %s}', to_json(:u_owner::text), to_json(:ta::text)), true) IS NOT NULL AS set;
-- The tenant column is filled when omitted.
INSERT INTO tenancy_test.notes (body) VALUES ('a-1'), ('a-2');
INSERT INTO tenancy_test.events (at, kind) VALUES ('2026-11-05 10:00+00', 'login'), ('2026-12-05 10:00+00', 'logout');
SELECT tenant_id = :ta AS own_tenant, body FROM tenancy_test.notes ORDER BY body;
SAVEPOINT s;
-- A row for another tenant is rejected.
INSERT INTO tenancy_test.notes (tenant_id, body) VALUES (:tb, 'smuggled');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK TO SAVEPOINT s;
-- Moving a row to another tenant is rejected too.
UPDATE tenancy_test.notes SET tenant_id = :tb WHERE body = 'a-1';
\echo :LAST_ERROR_SQLSTATE
ROLLBACK TO SAVEPOINT s;
COMMIT;

BEGIN;
SET LOCAL ROLE regress_tenancy_api;
SELECT set_config('request.jwt.claims', format('{"sub": %s}', to_json(:u_both::text)), true) IS NOT NULL AS set;
SELECT set_config('request.headers', format('{"x-tenant-id": %s}', to_json(:tb::text)), true) IS NOT NULL AS set;
INSERT INTO tenancy_test.notes (body) VALUES ('b-1');
-- Tenant B sees its own row only, and cannot touch A's.
SELECT body FROM tenancy_test.notes ORDER BY body;
UPDATE tenancy_test.notes SET body = 'hacked' WHERE body = 'a-1';
DELETE FROM tenancy_test.notes WHERE body LIKE 'a-%';
SELECT count(*) AS events_seen FROM tenancy_test.events;
-- Partitions queried directly are isolated as well.
SELECT count(*) AS partition_rows_seen FROM tenancy_test.events_2026_11;
COMMIT;

-- Without a tenant, nothing is visible and nothing can be written.
BEGIN;
SET LOCAL ROLE regress_tenancy_anon;
SELECT set_config('request.jwt.claims', '{"role": "regress_tenancy_anon"}', true) IS NOT NULL AS set;
SELECT count(*) AS anon_sees FROM tenancy_test.notes;
INSERT INTO tenancy_test.notes (body) VALUES ('anon');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- A role nobody granted cannot evaluate the policy: it fails closed.
CREATE ROLE regress_tenancy_stranger NOLOGIN;
GRANT USAGE ON SCHEMA tenancy_test TO regress_tenancy_stranger;
GRANT SELECT ON tenancy_test.notes TO regress_tenancy_stranger;
BEGIN;
SET LOCAL ROLE regress_tenancy_stranger;
SELECT count(*) FROM tenancy_test.notes;
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- The tenant function runs once per query, as an InitPlan, and the tenant
-- index serves the filter.
BEGIN;
SET LOCAL enable_seqscan = off;
SET LOCAL ROLE regress_tenancy_api;
EXPLAIN (COSTS OFF) SELECT * FROM tenancy_test.notes;
ROLLBACK;

-- A tenant job runs as a NOBYPASSRLS role: set_tenant filters its queries.
CREATE ROLE regress_tenancy_worker NOLOGIN NOBYPASSRLS;
GRANT EXECUTE ON FUNCTION saas.set_tenant(uuid), saas.current_tenant() TO regress_tenancy_worker;
GRANT USAGE ON SCHEMA saas, tenancy_test TO regress_tenancy_worker;
GRANT SELECT, UPDATE ON tenancy_test.notes TO regress_tenancy_worker;
BEGIN;
SET LOCAL ROLE regress_tenancy_worker;
SELECT saas.set_tenant(:tb) IS NOT NULL AS set;
UPDATE tenancy_test.notes SET body = body || '!';
SELECT body FROM tenancy_test.notes ORDER BY body;
ROLLBACK;

-- ---------------------------------------------------------------------------
-- tenancy_report on a schema with good and bad tables
-- ---------------------------------------------------------------------------
CREATE TABLE tenancy_test.open_table (tenant_id uuid, v int);
CREATE TABLE tenancy_test.global_plans (code text PRIMARY KEY);
CREATE TABLE tenancy_test.leaky (id bigint PRIMARY KEY, tenant_id uuid NOT NULL);
SELECT saas.enable_tenancy('tenancy_test.leaky');
CREATE POLICY everyone ON tenancy_test.leaky FOR SELECT TO regress_tenancy_api USING (true);
GRANT TRUNCATE ON tenancy_test.leaky TO regress_tenancy_api;
-- A table with its own permissive rules keeps them: no saas_tenant_access.
CREATE TABLE tenancy_test.owned (tenant_id uuid NOT NULL, owner_id uuid NOT NULL, PRIMARY KEY (tenant_id, owner_id));
CREATE POLICY own_rows ON tenancy_test.owned FOR ALL USING (owner_id = saas.current_user_id());
SELECT saas.enable_tenancy('tenancy_test.owned') ->> 'table' AS isolated;
SELECT polname, polpermissive FROM pg_policy WHERE polrelid = 'tenancy_test.owned'::regclass ORDER BY polname;
-- A tampered isolation policy is reported, not trusted by name.
CREATE TABLE tenancy_test.tampered (tenant_id uuid NOT NULL PRIMARY KEY);
SELECT saas.enable_tenancy('tenancy_test.tampered') ->> 'table' AS isolated;
ALTER POLICY saas_tenant_isolation ON tenancy_test.tampered USING (true);
SELECT table_name, tenant_column, has_tenant_column, rls_enabled, rls_forced, saas_policies, tenant_index
FROM saas.tenancy_report('{tenancy_test}') ORDER BY table_name::text;
SELECT table_name, unnest(problems) AS problem FROM saas.tenancy_report('{tenancy_test}') ORDER BY table_name::text, 2;
-- ... and the restrictive policy still holds against the leaky permissive one.
BEGIN;
INSERT INTO tenancy_test.leaky VALUES (1, :ta), (2, :tb);
GRANT SELECT ON tenancy_test.leaky TO regress_tenancy_api;
SET LOCAL ROLE regress_tenancy_api;
SELECT set_config('request.jwt.claims', format('{"tenant_id": %s}', to_json(:ta::text)), true) IS NOT NULL AS set;
SELECT id FROM tenancy_test.leaky ORDER BY id;
ROLLBACK;

-- ---------------------------------------------------------------------------
-- disable_tenancy undoes exactly what enable_tenancy did
-- ---------------------------------------------------------------------------
CREATE TABLE tenancy_test.undo (tenant_id uuid DEFAULT '0000000a-0000-4000-8000-000000000000', v int);
ALTER TABLE tenancy_test.undo ENABLE ROW LEVEL SECURITY;
SELECT saas.enable_tenancy('tenancy_test.undo');
SELECT saas.disable_tenancy('tenancy_test.undo');
SELECT relrowsecurity, relforcerowsecurity,
       (SELECT count(*) FROM pg_policy WHERE polrelid = c.oid) AS policies,
       (SELECT count(*) FROM pg_index WHERE indrelid = c.oid) AS indexes,
       (SELECT pg_get_expr(adbin, adrelid) FROM pg_attrdef WHERE adrelid = c.oid) AS tenant_default
FROM pg_class c WHERE c.oid = 'tenancy_test.undo'::regclass;
SELECT saas.disable_tenancy('tenancy_test.undo');
SELECT saas.disable_tenancy('tenancy_test.events');
SELECT count(*) AS policies_left FROM pg_policy WHERE polrelid IN (SELECT relid FROM pg_partition_tree('tenancy_test.events'));
SELECT count(*) AS registered FROM saas.tenant_tables WHERE relid::text LIKE 'tenancy_test.events%';

-- grant_api: unknown roles are named.
SELECT saas.grant_api('{regress_no_such_role}');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.grant_api('{}');
\echo :LAST_ERROR_SQLSTATE
-- API roles can run the policy functions but no internals.
SELECT p.proname, has_function_privilege('regress_tenancy_api', p.oid, 'EXECUTE') AS api_can_execute
FROM pg_proc p WHERE p.pronamespace = 'saas'::regnamespace ORDER BY 1, 2;

-- Cleanup. Dropped tables leave the registry too.
SELECT count(*) AS registered_before_drop FROM saas.tenant_tables;
SET client_min_messages = warning;
DROP SCHEMA tenancy_test CASCADE;
RESET client_min_messages;
SELECT count(*) AS registered_after_drop FROM saas.tenant_tables;
DELETE FROM saas.tenants;
DROP OWNED BY regress_tenancy_api, regress_tenancy_anon, regress_tenancy_stranger, regress_tenancy_worker;
DROP ROLE regress_tenancy_api, regress_tenancy_anon, regress_tenancy_stranger, regress_tenancy_worker;

-- An oversized X-Tenant-Id is not echoed whole in the error.
BEGIN;
SELECT set_config('request.jwt.claims', '{"sub": "000000aa-0000-4000-8000-000000000000"}', true) IS NOT NULL AS set;
SELECT set_config('request.headers', json_build_object('x-tenant-id', repeat('A', 8192))::text, true) IS NOT NULL AS set;
SELECT saas.current_tenant();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
