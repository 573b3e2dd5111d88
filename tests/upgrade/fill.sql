-- A database in use: what tests/upgrade.rs fills at the old version and at
-- the current one before comparing them. Only what the oldest supported
-- release (0.1.0) offers; every time is pinned, so both fills end equal.
-- It runs as one transaction; the test seals the log after it (a seal
-- covers rows of finished transactions only).
SET client_min_messages = warning;
SET saas.audit_clock = '2026-10-15 10:00:00+00';

DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'upgrade_api') THEN
    CREATE ROLE upgrade_api NOLOGIN;
  END IF;
END $$;
SELECT saas.grant_api('{upgrade_api}');

INSERT INTO saas.plans (plan, api_calls_per_day, storage_bytes) VALUES ('pro', 1000, 1048576);
INSERT INTO saas.tenants (id, slug, name, plan) VALUES
  ('00000001-0000-4000-8000-0000000000aa', 'up-a', 'Upgrade A', 'pro'),
  ('00000002-0000-4000-8000-0000000000aa', 'up-b', 'Upgrade B', 'free');
INSERT INTO saas.memberships (tenant_id, user_id, role) VALUES
  ('00000001-0000-4000-8000-0000000000aa', '0000000a-0000-4000-8000-0000000000aa', 'owner'),
  ('00000002-0000-4000-8000-0000000000aa', '0000000b-0000-4000-8000-0000000000aa', 'member');

CREATE SCHEMA app;
GRANT USAGE ON SCHEMA app TO upgrade_api;
-- A tenant table, isolated and audited row by row.
CREATE TABLE app.notes (
  tenant_id  uuid   NOT NULL,
  id         bigint GENERATED ALWAYS AS IDENTITY,
  body       text,
  CONSTRAINT notes_pkey PRIMARY KEY (tenant_id, id)
);
GRANT SELECT, INSERT, UPDATE, DELETE ON app.notes TO upgrade_api;
SELECT saas.enable_tenancy('app.notes');
SELECT saas.audit_enable('app.notes');
-- A monthly-partitioned tenant table, isolated and audited by statement.
CREATE TABLE app.events (
  tenant_id  uuid        NOT NULL,
  at         timestamptz NOT NULL,
  kind       text
) PARTITION BY RANGE (at);
SELECT count(*) FROM saas.create_monthly_partitions('app.events', 'at', 2, '6 months', p_now => '2026-10-15 00:00+00');
SELECT saas.enable_tenancy('app.events');
SELECT saas.audit_enable('app.events', mode => 'statement');

INSERT INTO app.notes (tenant_id, body) VALUES
  ('00000001-0000-4000-8000-0000000000aa', 'first'),
  ('00000001-0000-4000-8000-0000000000aa', 'second'),
  ('00000002-0000-4000-8000-0000000000aa', 'other tenant');
UPDATE app.notes SET body = 'second, edited' WHERE body = 'second';
DELETE FROM app.notes WHERE body = 'first';
INSERT INTO app.events (tenant_id, at, kind)
SELECT '00000001-0000-4000-8000-0000000000aa', timestamptz '2026-10-01 00:00+00' + n * interval '1 day', 'tick'
FROM generate_series(0, 40) n;

-- A user's partition hook.
CREATE FUNCTION app.note_partition(parent regclass, part regclass) RETURNS void
LANGUAGE sql AS $$ SELECT NULL::void $$;
INSERT INTO saas.partition_hooks (hook_name, hook) VALUES ('app', 'app.note_partition(regclass, regclass)');

SELECT saas.rate_limit_rule_set('/rpc/expensive', 3, '1 hour', 'user', 'POST');
SELECT saas.rate_limit_rule_set('/notes*', 100, '1 minute', 'tenant');
