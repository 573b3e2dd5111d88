-- Partitions: monthly partitions with a pinned "now" (p_now) for determinism.
\set SHOW_CONTEXT never
CREATE SCHEMA part_test;

-- Names: <parent>_pYYYY_MM within 63 bytes, never splitting a character.
SELECT saas.monthly_partition_name('events', 2026, 3) AS name,
       saas.default_partition_name('events') AS default_name;
SELECT length(n) AS chars, octet_length(n) AS bytes, right(n, 9) AS suffix
FROM (SELECT saas.monthly_partition_name(repeat('é', 40), 2026, 12) AS n) x;
SELECT saas.monthly_partition_name('events', 2026, 13);
\echo :LAST_ERROR_SQLSTATE

-- create_monthly_partitions: default, current month and premake months; idempotent.
CREATE TABLE part_test.events (
  id bigint GENERATED ALWAYS AS IDENTITY,
  at timestamptz NOT NULL,
  v int,
  PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
SELECT * FROM saas.create_monthly_partitions('part_test.events', 'at', 2, '3 months', p_now => '2026-11-15 12:00+00');
SELECT * FROM saas.create_monthly_partitions('part_test.events', 'at', 2, '3 months', p_now => '2026-11-15 12:00+00');
SELECT parent, control_column, control_type, premake, retention, retention_action, time_zone
FROM saas.partition_config ORDER BY parent::text;

-- Rows beyond the premade months land in the default partition ...
INSERT INTO part_test.events (at, v) VALUES
  ('2027-06-01 00:00+00', 1), ('2027-06-30 23:59+00', 2), ('2025-01-10 00:00+00', 3), ('2026-11-20 00:00+00', 4);
SELECT * FROM saas.partition_runway(p_now => '2026-11-15 12:00+00');
-- ... and maintenance moves them to their months (rescue), then applies
-- retention: January 2025 is older than 3 months and goes.
SELECT * FROM saas.run_maintenance(p_now => '2026-11-15 12:00+00');
SELECT tableoid::regclass AS partition, v FROM part_test.events ORDER BY v;
-- A month later: a new month ahead, November's partition is still inside
-- the window (its rows are newer than the cutoff), nothing else changes.
SELECT * FROM saas.run_maintenance(p_now => '2026-12-15 12:00+00');
-- Four months later: November 2026 is past the cutoff and dropped.
SELECT * FROM saas.run_maintenance(p_now => '2027-03-15 12:00+00');
SELECT * FROM saas.partition_runway(p_now => '2027-03-15 12:00+00');
SELECT count(*) AS rows_left FROM part_test.events;

-- Retention compares whole ranges with the cutoff in the parent's type and
-- time zone: a partition (here one made by hand) whose range reaches past
-- the cutoff is kept, though it starts before it.
CREATE TABLE part_test.kept (at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE part_test.kept_old PARTITION OF part_test.kept FOR VALUES FROM ('2026-01-01') TO ('2026-03-01');
INSERT INTO part_test.kept VALUES ('2026-02-27');
SELECT * FROM saas.create_monthly_partitions('part_test.kept', 'at', 0, '1 month', 'detach', p_now => '2026-03-20 00:00+00');
SELECT action, partition_name, detail FROM saas.run_maintenance('part_test.kept', p_now => '2026-03-20 00:00+00') ORDER BY 1, 2;
SELECT count(*) AS kept_rows FROM part_test.kept;
-- detach keeps an expired partition as a plain table.
SELECT action, partition_name FROM saas.run_maintenance('part_test.kept', p_now => '2026-05-20 00:00+00') ORDER BY 1, 2;
SELECT relname, relispartition FROM pg_class WHERE relname = 'kept_old';

-- Time zones: months start at local midnight, across DST changes.
CREATE TABLE part_test.ny (at timestamptz NOT NULL) PARTITION BY RANGE (at);
SELECT action, partition_name, detail
FROM saas.create_monthly_partitions('part_test.ny', 'at', 1, time_zone => 'America/New_York', p_now => '2026-11-01 03:00+00');
-- timestamp and date control columns.
CREATE TABLE part_test.local_ts (at timestamp NOT NULL) PARTITION BY RANGE (at);
SELECT action, detail FROM saas.create_monthly_partitions('part_test.local_ts', 'at', 0, p_now => '2026-02-10 00:00+00');
CREATE TABLE part_test."Daily ""Facts""" (d date NOT NULL) PARTITION BY RANGE (d);
SELECT action, partition_name, detail FROM saas.create_monthly_partitions('part_test."Daily ""Facts"""', 'd', 1, p_now => '2026-12-31 23:00+00');

-- Tenancy follows new partitions, including rescued ones.
CREATE TABLE part_test.tenant_log (tenant_id uuid NOT NULL, at date NOT NULL) PARTITION BY RANGE (at);
SELECT saas.enable_tenancy('part_test.tenant_log') ->> 'table' AS isolated;
SELECT count(*) AS actions FROM saas.create_monthly_partitions('part_test.tenant_log', 'at', 1, p_now => '2026-11-15 00:00+00');
INSERT INTO part_test.tenant_log VALUES ('0000000a-0000-4000-8000-000000000000', '2027-05-05');
SELECT action, partition_name FROM saas.run_maintenance('part_test.tenant_log', p_now => '2026-11-15 00:00+00');
SELECT c.relname, (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid AND p.polname = 'saas_tenant_isolation') AS isolated
FROM pg_class c WHERE c.relnamespace = 'part_test'::regnamespace AND c.relname LIKE 'tenant_log%' AND c.relkind IN ('r', 'p')
ORDER BY 1;

-- One failing parent does not stop the others.
CREATE TABLE part_test.broken (at date NOT NULL) PARTITION BY RANGE (at);
SELECT count(*) FROM saas.create_monthly_partitions('part_test.broken', 'at', 0, p_now => '2026-11-15 00:00+00');
CREATE TABLE part_test.blocker (at date NOT NULL);
-- A plain table squatting the name of next month's partition makes its creation fail.
ALTER TABLE part_test.blocker RENAME TO broken_p2026_12;
UPDATE saas.partition_config SET premake = 1 WHERE parent = 'part_test.broken'::regclass;
SELECT parent_table, action, partition_name, CASE WHEN action = 'error' THEN split_part(detail, ':', 1) END AS sqlstate
FROM saas.run_maintenance(p_now => '2026-11-15 00:00+00') ORDER BY parent_table::text, action, partition_name;

-- Bad input: specific errors, nothing applied.
CREATE TABLE part_test.plain (d date);
SELECT * FROM saas.create_monthly_partitions('part_test.plain', 'd');
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE part_test.bylist (d date) PARTITION BY LIST (d);
SELECT * FROM saas.create_monthly_partitions('part_test.bylist', 'd');
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE part_test.bytext (d text) PARTITION BY RANGE (d);
SELECT * FROM saas.create_monthly_partitions('part_test.bytext', 'd');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.create_monthly_partitions('part_test.ny', 'nope');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.create_monthly_partitions('part_test.ny', 'at', -1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.create_monthly_partitions('part_test.ny', 'at', 1, '2 weeks');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.create_monthly_partitions('part_test.ny', 'at', 1, time_zone => 'Mars/Olympus');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.run_maintenance('part_test.plain');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS configs FROM saas.partition_config;
-- pg_cron is not in this database: a clear error.
SELECT saas.schedule_maintenance();
\echo :LAST_ERROR_SQLSTATE

SET client_min_messages = warning;
DROP SCHEMA part_test CASCADE;
RESET client_min_messages;
-- Dropped parents leave the registries with them: nothing left for
-- maintenance to trip over.
SELECT count(*) AS configs_left FROM saas.partition_config;
SELECT count(*) AS tenant_tables_left FROM saas.tenant_tables;
SELECT count(*) AS maintenance_errors FROM saas.run_maintenance() WHERE action = 'error';

-- convert_to_monthly: a plain table with data, keys, indexes, a trigger, a
-- policy, grants and a serial column becomes monthly partitioned, same name.
CREATE SCHEMA conv_test;
CREATE ROLE regress_conv_reader NOLOGIN;
CREATE TABLE conv_test.orders (
  id bigserial,
  placed_at timestamptz NOT NULL,
  amount numeric NOT NULL CHECK (amount >= 0),
  note text DEFAULT 'none',
  PRIMARY KEY (id, placed_at));
CREATE INDEX orders_amount_idx ON conv_test.orders (amount);
CREATE FUNCTION conv_test.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.note := 'touched'; RETURN NEW; END $$;
CREATE TRIGGER orders_touch BEFORE INSERT ON conv_test.orders FOR EACH ROW EXECUTE FUNCTION conv_test.touch();
ALTER TABLE conv_test.orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY small_only ON conv_test.orders FOR SELECT TO regress_conv_reader USING (amount < 100);
GRANT SELECT ON conv_test.orders TO regress_conv_reader;
COMMENT ON TABLE conv_test.orders IS 'customer orders';
INSERT INTO conv_test.orders (placed_at, amount)
  SELECT '2026-08-01 00:00+00'::timestamptz + g * interval '1 day', g FROM generate_series(1, 150) g;
SELECT action, partition_name, detail FROM saas.convert_to_monthly('conv_test.orders', 'placed_at', 1, p_now => '2026-11-15 00:00+00')
ORDER BY action, partition_name;
SELECT relkind, obj_description(oid, 'pg_class') AS comment FROM pg_class WHERE oid = 'conv_test.orders'::regclass;
SELECT count(*) AS rows, min(id), max(id), sum(amount) FROM conv_test.orders;
SELECT tableoid::regclass AS partition, count(*) FROM conv_test.orders GROUP BY 1 ORDER BY tableoid::regclass::text;
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'conv_test.orders'::regclass ORDER BY 1;
SELECT indexrelid::regclass FROM pg_index WHERE indrelid = 'conv_test.orders'::regclass ORDER BY 1;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'conv_test.orders'::regclass AND NOT tgisinternal;
SELECT policyname, roles, qual FROM pg_policies WHERE schemaname = 'conv_test' AND tablename = 'orders';
SELECT has_table_privilege('regress_conv_reader', 'conv_test.orders', 'SELECT') AS reader_can_select;
-- The serial sequence lives on and continues; the trigger still fires.
INSERT INTO conv_test.orders (placed_at, amount) VALUES ('2026-11-20 00:00+00', 5) RETURNING id, note, tableoid::regclass;
SELECT count(*) FROM saas.convert_to_monthly('conv_test.orders', 'placed_at');
\echo :LAST_ERROR_SQLSTATE
CREATE TABLE conv_test.bad_key (id int PRIMARY KEY, at date NOT NULL);
SELECT count(*) FROM saas.convert_to_monthly('conv_test.bad_key', 'at');
\echo :LAST_ERROR_SQLSTATE
SELECT relkind FROM pg_class WHERE oid = 'conv_test.bad_key'::regclass;
SET client_min_messages = warning;
DROP SCHEMA conv_test CASCADE;
RESET client_min_messages;
DROP ROLE regress_conv_reader;
SELECT count(*) AS configs_left FROM saas.partition_config;

-- convert_to_monthly keeps STORED generated columns (computed again in the
-- new table) and refuses an UNLOGGED table rather than log it silently.
CREATE SCHEMA conv_more;
CREATE TABLE conv_more.gen (id int NOT NULL, at timestamptz NOT NULL, amount int,
  doubled int GENERATED ALWAYS AS (amount * 2) STORED, PRIMARY KEY (id, at));
INSERT INTO conv_more.gen (id, at, amount) VALUES (1, '2026-11-02 00:00+00', 21);
SELECT count(*) AS actions FROM saas.convert_to_monthly('conv_more.gen', 'at', 0, p_now => '2026-11-15 00:00+00');
SELECT id, amount, doubled, tableoid::regclass AS part FROM conv_more.gen ORDER BY id;
CREATE UNLOGGED TABLE conv_more.scratch (id int NOT NULL, at timestamptz NOT NULL);
SELECT count(*) FROM saas.convert_to_monthly('conv_more.scratch', 'at');
\echo :LAST_ERROR_SQLSTATE
SELECT relpersistence, relkind FROM pg_class WHERE oid = 'conv_more.scratch'::regclass;
SET client_min_messages = warning;
DROP SCHEMA conv_more CASCADE;
RESET client_min_messages;

-- convert_to_monthly keeps an owner whose name needs quoting.
CREATE ROLE "Regress-Owner" NOLOGIN;
CREATE SCHEMA conv_owner;
GRANT ALL ON SCHEMA conv_owner TO "Regress-Owner";
CREATE TABLE conv_owner.t (id int NOT NULL, at timestamptz NOT NULL, PRIMARY KEY (id, at));
ALTER TABLE conv_owner.t OWNER TO "Regress-Owner";
GRANT SELECT ON conv_owner.t TO "Regress-Owner";
SELECT count(*) AS actions FROM saas.convert_to_monthly('conv_owner.t', 'at', 0, p_now => '2026-11-15 00:00+00');
SELECT relowner::regrole AS owner, relkind FROM pg_class WHERE oid = 'conv_owner.t'::regclass;
SET client_min_messages = warning;
DROP SCHEMA conv_owner CASCADE;
RESET client_min_messages;
DROP ROLE "Regress-Owner";

-- ---------------------------------------------------------------------------
-- A partition is never a way around its parent's row level security, also
-- when the parent's policies are the user's own (not enable_tenancy) and
-- the partitions come from create_monthly_partitions or run_maintenance.
-- ---------------------------------------------------------------------------
CREATE SCHEMA rls_test;
CREATE ROLE regress_rls_reader NOLOGIN;
GRANT USAGE ON SCHEMA rls_test TO regress_rls_reader;
CREATE TABLE rls_test.logs (owner_name text NOT NULL, at timestamptz NOT NULL, msg text) PARTITION BY RANGE (at);
ALTER TABLE rls_test.logs ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON rls_test.logs USING (owner_name = current_user);
GRANT SELECT ON rls_test.logs TO regress_rls_reader;
SELECT count(*) AS actions FROM saas.create_monthly_partitions('rls_test.logs', 'at', 1, p_now => '2026-11-15 00:00+00');
INSERT INTO rls_test.logs VALUES ('someone_else', '2026-11-20 00:00+00', 'secret');
-- Supabase's default privileges grant new tables to the API roles: so here.
GRANT SELECT ON ALL TABLES IN SCHEMA rls_test TO regress_rls_reader;
SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity
FROM pg_class c WHERE c.relnamespace = 'rls_test'::regnamespace AND c.relkind IN ('r', 'p') ORDER BY 1;
SET ROLE regress_rls_reader;
SELECT count(*) AS through_the_parent FROM rls_test.logs;
SELECT count(*) AS through_the_partition FROM rls_test.logs_p2026_11;
RESET ROLE;
SET client_min_messages = warning;
DROP SCHEMA rls_test CASCADE;
RESET client_min_messages;
DROP OWNED BY regress_rls_reader;
DROP ROLE regress_rls_reader;

-- Partition hooks are names of functions (regclass, regclass), kept
-- schema-qualified; anything else is refused with a hint.
INSERT INTO saas.partition_hooks (hook_name, hook) VALUES ('typo', 'no_such_function(regclass, regclass)');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO saas.partition_hooks (hook_name, hook) VALUES ('wrong_args', 'pg_catalog.lower(text)');
\echo :LAST_ERROR_SQLSTATE
CREATE FUNCTION public.regress_hook(p regclass, c regclass) RETURNS void LANGUAGE sql AS 'SELECT NULL::void';
INSERT INTO saas.partition_hooks (hook_name, hook) VALUES ('user', 'public.regress_hook(regclass,regclass)') RETURNING hook;
DROP FUNCTION public.regress_hook(regclass, regclass);
DELETE FROM saas.partition_hooks WHERE hook_name = 'user';
SELECT hook_name, hook, builtin FROM saas.partition_hooks ORDER BY hook_name;

-- ---------------------------------------------------------------------------
-- One bad row never stops maintenance: rows whose control value is NULL,
-- infinite or in year 10000 stay in the default partition, reported, while
-- the other months are still made and rescued.
-- ---------------------------------------------------------------------------
CREATE SCHEMA bad_rows;
CREATE TABLE bad_rows.events (at timestamptz, v int) PARTITION BY RANGE (at);
SELECT count(*) AS actions FROM saas.create_monthly_partitions('bad_rows.events', 'at', 1, p_now => '2026-11-15 00:00+00');
INSERT INTO bad_rows.events VALUES (NULL, 1), ('infinity', 2), ('-infinity', 3), ('10000-01-05 00:00+00', 4), ('2027-06-10 00:00+00', 5);
SELECT action, partition_name, regexp_replace(detail, ': [0-9A-Z]{5}: .*$', ': <error>') AS detail
FROM saas.run_maintenance('bad_rows.events', p_now => '2026-11-20 00:00+00') ORDER BY 1, 2, 3;
SELECT tableoid::regclass AS partition, v FROM bad_rows.events ORDER BY v;
-- Out of range and NULL arguments, each with its SQLSTATE.
SELECT count(*) FROM saas.create_monthly_partitions('bad_rows.events', 'at', 1, '100000 years');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM saas.create_monthly_partitions('bad_rows.events', 'at', 500);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM saas.create_monthly_partitions('bad_rows.events', 'at', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM saas.create_monthly_partitions('bad_rows.events', 'at', 1, retention_action => NULL);
\echo :LAST_ERROR_SQLSTATE
-- (terse: the failing row's DETAIL holds the time it was configured)
\set VERBOSITY terse
UPDATE saas.partition_config SET retention = '100000 years' WHERE parent = 'bad_rows.events'::regclass;
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
SET client_min_messages = warning;
DROP SCHEMA bad_rows CASCADE;
RESET client_min_messages;

-- ---------------------------------------------------------------------------
-- Long names: parents whose 63-byte names differ only after byte 54 get
-- partitions of their own (the cut name is tagged with a hash of the whole
-- name; cutting alone gave both the same names: 42P07 for the second).
-- ---------------------------------------------------------------------------
CREATE SCHEMA long_names;
CREATE TABLE long_names.events_whose_names_are_sixty_three_bytes_long_and_differ_at_one (at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE long_names.events_whose_names_are_sixty_three_bytes_long_and_differ_at_two (at date NOT NULL) PARTITION BY RANGE (at);
SELECT action, partition_name, octet_length(partition_name) - length('long_names.') AS bytes
FROM saas.create_monthly_partitions('long_names.events_whose_names_are_sixty_three_bytes_long_and_differ_at_one', 'at', 1, p_now => '2026-11-15 00:00+00');
SELECT action, partition_name, octet_length(partition_name) - length('long_names.') AS bytes
FROM saas.create_monthly_partitions('long_names.events_whose_names_are_sixty_three_bytes_long_and_differ_at_two', 'at', 1, p_now => '2026-11-15 00:00+00');
-- The same name in SQL; names that fit are unchanged.
SELECT saas.monthly_partition_name('events_whose_names_are_sixty_three_bytes_long_and_differ_at_one', 2026, 11) AS one,
       saas.monthly_partition_name('events_whose_names_are_sixty_three_bytes_long_and_differ_at_two', 2026, 11) AS two,
       saas.monthly_partition_name(repeat('x', 54), 2026, 11) = repeat('x', 54) || '_p2026_11' AS fits_unchanged,
       saas.default_partition_name(repeat('x', 55)) = repeat('x', 55) || '_default' AS default_fits_unchanged;
-- A long-named parent from 0.1.0 keeps its partitions, named by the old rule
-- (cut to 54 bytes, no tag): maintenance finds months by their bounds and
-- the default partition in the catalog, never by name. Months made from
-- now on get the new names beside them.
CREATE TABLE long_names.old_events_whose_names_run_to_sixty_three_bytes_made_by_v0_1_0s (at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE long_names.old_events_whose_names_run_to_sixty_three_bytes_made_by_default
  PARTITION OF long_names.old_events_whose_names_run_to_sixty_three_bytes_made_by_v0_1_0s DEFAULT;
CREATE TABLE long_names.old_events_whose_names_run_to_sixty_three_bytes_made_b_p2026_11
  PARTITION OF long_names.old_events_whose_names_run_to_sixty_three_bytes_made_by_v0_1_0s FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
INSERT INTO long_names.old_events_whose_names_run_to_sixty_three_bytes_made_by_v0_1_0s VALUES ('2026-11-20'), ('2027-03-03');
SELECT action, partition_name, detail
FROM saas.create_monthly_partitions('long_names.old_events_whose_names_run_to_sixty_three_bytes_made_by_v0_1_0s', 'at', 1, '1 month', p_now => '2026-11-15 00:00+00');
SELECT action, partition_name, detail
FROM saas.run_maintenance('long_names.old_events_whose_names_run_to_sixty_three_bytes_made_by_v0_1_0s', p_now => '2026-11-15 00:00+00');
-- Retention retires the old-named month like any other.
SELECT action, partition_name
FROM saas.run_maintenance('long_names.old_events_whose_names_run_to_sixty_three_bytes_made_by_v0_1_0s', p_now => '2027-01-15 00:00+00')
ORDER BY 1, 2;
SELECT tableoid::regclass AS partition, at FROM long_names.old_events_whose_names_run_to_sixty_three_bytes_made_by_v0_1_0s ORDER BY at;
SET client_min_messages = warning;
DROP SCHEMA long_names CASCADE;
RESET client_min_messages;
