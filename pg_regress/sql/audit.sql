-- Audit: audit_enable/disable, what the log records, append-only, RLS,
-- export, seals and verification. Timestamps are pinned with the
-- saas.audit_clock test hook; transaction ids and hashes vary per run, so
-- only their properties are shown.
\set SHOW_CONTEXT never
SET client_min_messages = notice;

\set ta '''0000000a-0000-4000-8000-00000000a0d1'''
\set tb '''0000000b-0000-4000-8000-00000000a0d1'''
\set u_admin '''000000aa-0000-4000-8000-00000000a0d1'''
\set u_member '''000000bb-0000-4000-8000-00000000a0d1'''
\set u_badmin '''000000cc-0000-4000-8000-00000000a0d1'''

CREATE ROLE regress_audit_api NOLOGIN;
SELECT saas.grant_api('{regress_audit_api}');
INSERT INTO saas.tenants (id, slug, name) VALUES (:ta, 'audit-a', 'Audit A'), (:tb, 'audit-b', 'Audit B');
INSERT INTO saas.memberships (tenant_id, user_id, role) VALUES
  (:ta, :u_admin, 'admin'), (:ta, :u_member, 'member'), (:tb, :u_badmin, 'owner');

CREATE SCHEMA audit_test;
CREATE TYPE audit_test.mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN audit_test.positive AS int CHECK (VALUE > 0);
CREATE TABLE audit_test.notes (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id   uuid NOT NULL,
  body        text,
  tags        text[],
  price       numeric(12, 4),
  ratio       float8,
  blob        bytea,
  mood        audit_test.mood,
  score       audit_test.positive,
  meta        jsonb,
  updated_at  timestamptz
);
GRANT SELECT, INSERT, UPDATE, DELETE ON audit_test.notes TO regress_audit_api;
GRANT USAGE ON SCHEMA audit_test TO regress_audit_api;

-- ---------------------------------------------------------------------------
-- Bad input: each with its SQLSTATE
-- ---------------------------------------------------------------------------
CREATE VIEW audit_test.notes_view AS SELECT * FROM audit_test.notes;
SELECT saas.audit_enable('audit_test.notes_view');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.audit_enable('saas.audit_log');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.audit_enable('audit_test.notes', '{updated_at,no_such,also_missing}');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.audit_enable('audit_test.notes', mode => 'trigger');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.audit_enable('audit_test.notes', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.audit_disable(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.audit_enable('audit_test.no_such_table');
\echo :LAST_ERROR_SQLSTATE
-- Nothing was half-done by the failures.
SELECT count(*) AS audited_tables FROM saas.audit_tables;

-- ---------------------------------------------------------------------------
-- Row mode: what a change records
-- ---------------------------------------------------------------------------
-- The log's partitions pinned to the suite's month: on first use they are
-- made from now(), and the suite's rows are dated November 2026 (run in
-- December, they landed in the default partition and were rescued).
SELECT count(*) > 0 AS log_partitions_made
FROM saas.create_monthly_partitions('saas.audit_log', 'logged_at', p_now => '2026-11-01 00:00+00');
SELECT saas.audit_enable('audit_test.notes', '{updated_at}');
SELECT relid, mode, changed_only, ignored_columns, key_columns, tenant_column FROM saas.audit_tables ORDER BY relid::text;
SELECT tgname, tgtype FROM pg_trigger WHERE tgrelid = 'audit_test.notes'::regclass AND NOT tgisinternal ORDER BY tgname;
-- The log's partitions have the log's protection.
SELECT count(*) > 1 AS log_partitions,
       bool_and(c.relrowsecurity AND c.relforcerowsecurity) AS all_forced_rls
FROM pg_partition_tree('saas.audit_log') t JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf;

BEGIN;
SET LOCAL saas.audit_clock = '2026-11-10 09:00:00+00';
-- A request as PostgREST sends it.
SELECT set_config('request.jwt.claims', format('{"sub": %s, "role": "regress_audit_api", "tenant_id": %s}', to_json(:u_admin::text), to_json(:ta::text)), true) IS NOT NULL AS claims,
       set_config('request.headers', '{"x-forwarded-for": "203.0.113.7, 10.0.0.1", "user-agent": "regress/1.0", "x-request-id": "req-001"}', true) IS NOT NULL AS headers,
       set_config('request.method', 'POST', true) IS NOT NULL AS method,
       set_config('request.path', '/notes', true) IS NOT NULL AS path;
INSERT INTO audit_test.notes (tenant_id, body, tags, price, ratio, blob, mood, score, meta)
VALUES (:ta, 'hello', '{a,"b c",NULL}', 1.5, 1e100, '\x00ff', 'happy', 3, '{"k": [1, null, "x"]}');
COMMIT;
SELECT id, tenant_id = :ta AS tenant_a, logged_at, actor_id = :u_admin AS actor_ok, actor_role, operation,
       schema_name, table_name, record_key, old_values, client_ip, user_agent, request_id, request_method,
       request_path, txid > 0 AS has_txid, octet_length(row_hash) AS hash_bytes
FROM saas.audit_log ORDER BY id;
-- Values of every type round-trip: arrays with NULLs, numeric, float, bytea, enum, domain, jsonb.
SELECT key, value FROM saas.audit_log, jsonb_each(new_values) WHERE id = 1 ORDER BY key;

SET saas.audit_clock = '2026-11-10 09:05:00+00';
-- Only an ignored column changed: nothing is written.
UPDATE audit_test.notes SET updated_at = '2026-11-10 09:05:00+00';
-- A real change: only the changed columns (changed_only).
UPDATE audit_test.notes SET body = 'world', updated_at = '2026-11-10 09:06:00+00';
-- A no-op update is not a change either.
UPDATE audit_test.notes SET body = 'world';
SELECT id, operation, record_key, old_values, new_values, actor_id IS NULL AS no_actor_outside_requests,
       actor_role, client_ip IS NULL AS no_ip
FROM saas.audit_log ORDER BY id;

-- Re-enabling replaces the options: full images, still without ignored columns.
SELECT saas.audit_enable('audit_test.notes', '{updated_at,blob}', changed_only => false);
SELECT saas.audit_enable('audit_test.notes', '{updated_at,blob}', changed_only => false);
SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_test.notes'::regclass AND NOT tgisinternal ORDER BY tgname;
UPDATE audit_test.notes SET score = 4;
SELECT id, operation, old_values ? 'body' AS full_old, new_values ? 'body' AS full_new,
       new_values ? 'blob' OR new_values ? 'updated_at' AS has_ignored, new_values -> 'score' AS score
FROM saas.audit_log WHERE id = (SELECT max(id) FROM saas.audit_log);

-- A large row is logged whole.
INSERT INTO audit_test.notes (tenant_id, body) VALUES (:tb, repeat('x', 200000));
SELECT id, tenant_id = :tb AS tenant_b, length(new_values ->> 'body') AS body_length FROM saas.audit_log WHERE id = (SELECT max(id) FROM saas.audit_log);

DELETE FROM audit_test.notes WHERE tenant_id = :tb;
TRUNCATE audit_test.notes;
SELECT id, tenant_id, operation, record_key, old_values IS NOT NULL AS has_old FROM saas.audit_log WHERE id > 4 ORDER BY id;

-- An error inside the audit trigger aborts the change: no change without its audit row.
SET saas.audit_clock = 'not a time';
INSERT INTO audit_test.notes (tenant_id, body) VALUES (:ta, 'unaudited?');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS notes_after_failed_insert FROM audit_test.notes;
SET saas.audit_clock = '2026-11-10 10:00:00+00';

-- A table without a primary key: allowed, the whole row is the key (NOTICE).
CREATE TABLE audit_test.events (tenant_id uuid, kind text, at int);
SELECT saas.audit_enable('audit_test.events');
INSERT INTO audit_test.events VALUES (:ta, 'login', 1);
SELECT record_key FROM saas.audit_log WHERE table_name = 'events' ORDER BY id;

-- A table without a tenant column: rows get the request's tenant, else the nil uuid.
CREATE TABLE audit_test.settings (key text PRIMARY KEY, value text);
SELECT saas.audit_enable('audit_test.settings');
INSERT INTO audit_test.settings VALUES ('theme', 'dark');
BEGIN;
SELECT saas.set_tenant(:tb) IS NOT NULL AS scoped;
UPDATE audit_test.settings SET value = 'light';
COMMIT;
SELECT operation, tenant_id FROM saas.audit_log WHERE table_name = 'settings' ORDER BY id;

-- ---------------------------------------------------------------------------
-- Statement mode on a partitioned table: transition tables, partitions
-- present and future, DML on a partition directly.
-- ---------------------------------------------------------------------------
CREATE TABLE audit_test.readings (
  tenant_id uuid NOT NULL, id bigint NOT NULL, at date NOT NULL, value int,
  PRIMARY KEY (tenant_id, id, at)
) PARTITION BY RANGE (at);
CREATE TABLE audit_test.readings_2026 PARTITION OF audit_test.readings FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
SELECT saas.audit_enable('audit_test.readings', mode => 'statement');
CREATE TABLE audit_test.readings_2027 PARTITION OF audit_test.readings FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
SELECT tgrelid::regclass AS rel, tgname FROM pg_trigger
WHERE tgrelid IN (SELECT relid FROM pg_partition_tree('audit_test.readings')) AND NOT tgisinternal ORDER BY 1, 2;
INSERT INTO audit_test.readings SELECT :ta, g, date '2026-06-01' + g * 100, g FROM generate_series(1, 4) g;
INSERT INTO audit_test.readings_2027 VALUES (:ta, 99, '2027-03-01', 99);
UPDATE audit_test.readings SET value = value * 10 WHERE id IN (1, 4);
DELETE FROM audit_test.readings WHERE id = 2;
SELECT operation, table_name, count(*) AS rows, min(record_key::text) AS first_key,
       min(new_values::text) FILTER (WHERE operation = 'UPDATE') AS an_update
FROM saas.audit_log WHERE table_name LIKE 'readings%' GROUP BY 1, 2 ORDER BY 1, 2;

-- Row mode on a partitioned table: the trigger is cloned to new partitions.
SELECT saas.audit_enable('audit_test.readings');
CREATE TABLE audit_test.readings_2028 PARTITION OF audit_test.readings FOR VALUES FROM ('2028-01-01') TO ('2029-01-01');
SELECT tgrelid::regclass AS rel, tgname FROM pg_trigger
WHERE tgrelid IN (SELECT relid FROM pg_partition_tree('audit_test.readings')) AND NOT tgisinternal ORDER BY 1, 2;
INSERT INTO audit_test.readings VALUES (:ta, 7, '2028-05-05', 7);
SELECT operation, table_name, new_values FROM saas.audit_log WHERE id = (SELECT max(id) FROM saas.audit_log);
-- An UPDATE that moves rows to another partition is logged as the UPDATE
-- it is, under the table's name, with old and new images (PostgreSQL fires
-- DELETE on the old partition and INSERT on the new; issue 15, item 8).
UPDATE audit_test.readings SET at = at + 365, value = -value WHERE id IN (1, 3);
SELECT operation, table_name, old_values ->> 'at' AS old_at, new_values ->> 'at' AS new_at, new_values ->> 'value' AS value
FROM saas.audit_log WHERE id > (SELECT max(id) - 2 FROM saas.audit_log) ORDER BY id;
-- A row whose INSERT a BEFORE trigger of the new partition drops was
-- deleted: logged as a DELETE, also when it is the statement's last row
-- (written before the commit).
CREATE FUNCTION audit_test.drop_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER drop_row BEFORE INSERT ON audit_test.readings_2026 FOR EACH ROW EXECUTE FUNCTION audit_test.drop_row();
UPDATE audit_test.readings SET at = '2026-06-01' WHERE id = 4;
DROP TRIGGER drop_row ON audit_test.readings_2026;
SELECT operation, table_name, old_values ->> 'id' AS id, new_values IS NULL AS no_new
FROM saas.audit_log WHERE id = (SELECT max(id) FROM saas.audit_log);
SELECT count(*) AS rows_left_with_id_4 FROM audit_test.readings WHERE id = 4;

-- ---------------------------------------------------------------------------
-- The log is append-only, for its owner too.
-- ---------------------------------------------------------------------------
UPDATE saas.audit_log SET actor_role = 'forged' WHERE id = 1;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM saas.audit_log WHERE id = 1;
\echo :LAST_ERROR_SQLSTATE
TRUNCATE saas.audit_log;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM saas.audit_seals;
DELETE FROM saas.audit_retired;
\echo :LAST_ERROR_SQLSTATE
SELECT has_table_privilege('regress_audit_api', 'saas.audit_log', 'INSERT') AS api_insert,
       has_table_privilege('regress_audit_api', 'saas.audit_log', 'SELECT') AS api_select;

-- ---------------------------------------------------------------------------
-- RLS: a tenant's admins read their tenant's rows; nobody else reads any.
-- ---------------------------------------------------------------------------
BEGIN;
SET LOCAL ROLE regress_audit_api;
SELECT set_config('request.jwt.claims', format('{"sub": %s, "tenant_id": %s}', to_json(:u_admin::text), to_json(:ta::text)), true) IS NOT NULL AS admin_a;
SELECT count(*) AS rows_seen, count(*) FILTER (WHERE tenant_id <> :ta) AS other_tenants FROM saas.audit_log;
INSERT INTO saas.audit_log (tenant_id, logged_at, txid, operation, schema_name, table_name, row_hash)
VALUES (:ta, now(), 1, 'INSERT', 'x', 'y', sha256('x'));
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SET LOCAL ROLE regress_audit_api;
SELECT set_config('request.jwt.claims', format('{"sub": %s, "tenant_id": %s}', to_json(:u_member::text), to_json(:ta::text)), true) IS NOT NULL AS member_a;
SELECT count(*) AS member_sees FROM saas.audit_log;
SELECT saas.audit_export('2026-01-01', '2027-01-01');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SET LOCAL ROLE regress_audit_api;
SELECT set_config('request.jwt.claims', format('{"sub": %s, "tenant_id": %s}', to_json(:u_badmin::text), to_json(:tb::text)), true) IS NOT NULL AS owner_b;
SELECT count(*) AS rows_seen, bool_and(tenant_id = :tb) AS only_b FROM saas.audit_log;
-- Export: the current tenant's rows, JSON lines or CSV.
SELECT line::jsonb ->> 'operation' AS op, line::jsonb -> 'record_key' AS key, line::jsonb ->> 'logged_at' AS at
FROM saas.audit_export('2026-11-01', '2026-12-01') AS line ORDER BY line::jsonb -> 'id';
SELECT split_part(line, ',', 1) ~ '^[0-9]+$|^id$' AS first_field_ok, split_part(line, ',', 6) AS operation
FROM saas.audit_export('2026-11-01', '2026-12-01', 'csv') WITH ORDINALITY AS e(line, n) ORDER BY n;
SELECT saas.audit_export('2026-11-01', '2026-12-01', 'xml');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT saas.audit_export('2026-11-01', '2026-12-01');
\echo :LAST_ERROR_SQLSTATE

-- ---------------------------------------------------------------------------
-- Seals and verification
-- ---------------------------------------------------------------------------
SELECT saas.audit_verify(NULL, now());
\echo :LAST_ERROR_SQLSTATE
SELECT saas.audit_verify('2027-01-01', '2026-01-01');
\echo :LAST_ERROR_SQLSTATE
-- Before any seal: rows verify, none sealed.
SELECT ok, rows_checked > 0 AS rows_checked, seals_checked, unsealed_rows > 0 AS unsealed
FROM saas.audit_verify('-infinity', 'infinity');
SELECT tenant_id, seal_no, row_count FROM saas.audit_seal() ORDER BY tenant_id;
-- Nothing new: no new seal.
SELECT count(*) AS new_seals FROM saas.audit_seal();
SELECT ok, kind, detail FROM saas.audit_verify('-infinity', 'infinity');
INSERT INTO audit_test.settings VALUES ('lang', 'en');
SELECT tenant_id, seal_no, row_count FROM saas.audit_seal() ORDER BY tenant_id;
SELECT s.tenant_id, s.seal_no, s.prev_hash = p.seal_hash AS chained
FROM saas.audit_seals s JOIN saas.audit_seals p ON p.tenant_id = s.tenant_id AND p.seal_no = s.seal_no - 1
ORDER BY 1, 2;
SELECT ok, rows_checked, seals_checked, unsealed_rows, retired_seals FROM saas.audit_verify('-infinity', 'infinity');

-- Tampering by a superuser with triggers off; each found, each rolled back.
BEGIN;
SET LOCAL session_replication_role = replica;
UPDATE saas.audit_log SET new_values = jsonb_set(new_values, '{body}', '"forged"') WHERE id = 1;
SELECT ok, kind, log_id, detail FROM saas.audit_verify('-infinity', 'infinity');
ROLLBACK;
BEGIN;
SET LOCAL session_replication_role = replica;
DELETE FROM saas.audit_log WHERE id = 2;
SELECT ok, kind, tenant_id = :ta AS tenant_a, seal_no, detail FROM saas.audit_verify('-infinity', 'infinity');
ROLLBACK;
BEGIN;
SET LOCAL session_replication_role = replica;
-- A copy of a sealed row under a new id: its hash no longer matches.
INSERT INTO saas.audit_log (tenant_id, id, logged_at, txid, operation, schema_name, table_name, row_hash)
OVERRIDING SYSTEM VALUE
SELECT tenant_id, 100000, logged_at, txid, operation, schema_name, table_name, row_hash FROM saas.audit_log WHERE id = 1;
SELECT ok, kind, log_id, detail FROM saas.audit_verify('-infinity', 'infinity');
ROLLBACK;
BEGIN;
SET LOCAL session_replication_role = replica;
UPDATE saas.audit_seals SET row_count = row_count - 1 WHERE tenant_id = :ta AND seal_no = 1;
SELECT ok, kind, seal_no, detail FROM saas.audit_verify('-infinity', 'infinity');
ROLLBACK;
BEGIN;
SET LOCAL session_replication_role = replica;
DELETE FROM saas.audit_seals WHERE seal_no = 1 AND tenant_id = '00000000-0000-0000-0000-000000000000';
SELECT ok, kind, log_id, detail LIKE '%a seal was deleted' AS says_seal_deleted FROM saas.audit_verify('-infinity', 'infinity');
ROLLBACK;
SELECT ok FROM saas.audit_verify('-infinity', 'infinity');

-- ---------------------------------------------------------------------------
-- Retention: rows of an old month land in the default partition, maintenance
-- rescues them (without firing the append-only guard), seals them, then
-- retires the month; verification says so instead of failing.
-- ---------------------------------------------------------------------------
SET saas.audit_clock = '2025-01-15 12:00:00+00';
INSERT INTO audit_test.settings VALUES ('old', 'row');
RESET saas.audit_clock;
SELECT tableoid::regclass AS landed_in FROM saas.audit_log WHERE new_values ->> 'key' = 'old';
SELECT parent_table, action, detail FROM saas.run_maintenance(p_now => '2026-11-15') WHERE action <> 'flush' ORDER BY 1, 2, 3;
SELECT tableoid::regclass AS rescued_to FROM saas.audit_log WHERE new_values ->> 'key' = 'old';
UPDATE saas.partition_config SET retention = '12 months' WHERE parent = 'saas.audit_log'::regclass;
SELECT parent_table, action, partition_name FROM saas.run_maintenance('saas.audit_log', p_now => '2026-11-15') WHERE action <> 'create' ORDER BY 1, 2, 3;
SELECT ok, retired_seals > 0 AS says_retired, detail LIKE '%retired by retention%' AS detail_says_so
FROM saas.audit_verify('-infinity', 'infinity');

-- Seals never span a month (issue 15, item 7). Rows of December and January
-- sealed in one pass get one seal per month, chained, with the same
-- transaction range. Retiring December retires its seal alone: deleting a
-- January row is still found (before, the pass's one seal began in the
-- retired December and was skipped whole: ok), and December's seal still
-- verifies as a link of the chain.
SET saas.audit_clock = '2025-12-31 23:59:00+00';
INSERT INTO audit_test.settings VALUES ('december', 'row');
SET saas.audit_clock = '2026-01-01 00:01:00+00';
INSERT INTO audit_test.settings VALUES ('january 1', 'row'), ('january 2', 'row');
RESET saas.audit_clock;
SELECT parent_table, action, partition_name FROM saas.run_maintenance('saas.audit_log', p_now => '2026-11-15') WHERE action <> 'create' ORDER BY 1, 2, 3;
SELECT count(*) AS new_seals FROM saas.audit_seal();
SELECT to_char(month_from AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS month_from, to_char(month_to AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS month_to,
       row_count, to_char(first_logged_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS first_logged_at,
       to_char(last_logged_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI') AS last_logged_at, reseals
FROM saas.audit_seals WHERE month_from IN ('2025-12-01 00:00+00', '2026-01-01 00:00+00') ORDER BY month_from;
SELECT count(DISTINCT (s.xid_from, s.xid_to)) AS xid_ranges, max(s.seal_no) - min(s.seal_no) AS apart,
       bool_and(s.prev_hash = p.seal_hash) AS chained
FROM saas.audit_seals s JOIN saas.audit_seals p ON p.tenant_id = s.tenant_id AND p.seal_no = s.seal_no - 1
WHERE s.month_from IN ('2025-12-01 00:00+00', '2026-01-01 00:00+00');
SELECT parent_table, action, partition_name FROM saas.run_maintenance('saas.audit_log', p_now => '2027-01-15') WHERE action IN ('drop', 'detach') ORDER BY 1, 2, 3;
SELECT ok, rows_checked, seals_checked, retired_seals FROM saas.audit_verify('2025-12-01 00:00+00', '2026-02-01 00:00+00');
BEGIN;
SET LOCAL session_replication_role = replica;
DELETE FROM saas.audit_log WHERE new_values ->> 'key' = 'january 1';
SELECT ok, kind, regexp_replace(detail, 'seal [0-9]+', 'seal N') AS detail FROM saas.audit_verify('2025-12-01 00:00+00', '2026-02-01 00:00+00');
SELECT ok, kind, regexp_replace(detail, 'seal [0-9]+', 'seal N') AS detail FROM saas.audit_verify('-infinity', 'infinity');
SELECT seal_no = (SELECT seal_no FROM saas.audit_seals WHERE month_from = '2026-01-01 00:00+00') AS january_seal
FROM saas.audit_verify('2025-12-01 00:00+00', '2026-02-01 00:00+00');
ROLLBACK;
-- The retired month's seal is still a checked link: edited, or deleted.
BEGIN;
SET LOCAL session_replication_role = replica;
UPDATE saas.audit_seals SET row_count = 2 WHERE month_from = '2025-12-01 00:00+00';
SELECT ok, kind, seal_no = (SELECT seal_no FROM saas.audit_seals WHERE month_from = '2025-12-01 00:00+00') AS december_seal,
       regexp_replace(detail, 'seal [0-9]+', 'seal N') AS detail
FROM saas.audit_verify('2025-12-01 00:00+00', '2026-02-01 00:00+00');
ROLLBACK;
BEGIN;
SET LOCAL session_replication_role = replica;
DELETE FROM saas.audit_seals WHERE month_from = '2025-12-01 00:00+00';
SELECT ok, kind, seal_no = (SELECT seal_no FROM saas.audit_seals WHERE month_from = '2026-01-01 00:00+00') AS january_seal,
       regexp_replace(detail, 'seal [0-9]+', 'seal N', 'g') AS detail
FROM saas.audit_verify('2026-01-01 00:00+00', '2026-02-01 00:00+00');
ROLLBACK;
SELECT ok, retired_seals > 0 AS says_retired FROM saas.audit_verify('-infinity', 'infinity');

-- ---------------------------------------------------------------------------
-- How rows are stored: the triggers write straight into their month's
-- partition; a partition they cannot vouch for (here one with a CHECK added
-- by hand) gets its rows through an ordinary INSERT, which enforces it.
-- ---------------------------------------------------------------------------
BEGIN;
SET LOCAL saas.audit_clock = '2026-11-15 08:00:00+00';
INSERT INTO audit_test.settings VALUES ('direct', 'row');
SELECT tableoid::regclass AS stored_in FROM saas.audit_log WHERE new_values ->> 'key' = 'direct';
ALTER TABLE saas.audit_log_p2026_11 ADD CONSTRAINT regress_short_keys CHECK (length(new_values ->> 'key') < 8) NOT VALID;
INSERT INTO audit_test.settings VALUES ('checked', 'row');
SELECT tableoid::regclass AS stored_in FROM saas.audit_log WHERE new_values ->> 'key' = 'checked';
\set VERBOSITY terse
INSERT INTO audit_test.settings VALUES ('far too long', 'row');
\set VERBOSITY default
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT ok FROM saas.audit_verify('-infinity', 'infinity');

-- ---------------------------------------------------------------------------
-- Row images: the triggers read each column from the tuple and write it as
-- row_to_json does, for every kind of type (json.c's categories: numbers
-- and their NaN, dates and infinities, json kept as written, arrays, nested
-- rows, a type with a cast to json, domains, a dropped column, names that
-- need escapes), in row and statement mode; the hashes verify.
-- ---------------------------------------------------------------------------
BEGIN;
SET LOCAL saas.audit_clock = '2026-11-16 08:00:00+00';
SET LOCAL client_min_messages = warning;
CREATE TYPE audit_test.pair AS (label text, n numeric);
CREATE TYPE audit_test.color AS ENUM ('red', 'green');
CREATE FUNCTION audit_test.color_json(audit_test.color) RETURNS json LANGUAGE sql IMMUTABLE
  AS $$ SELECT json_build_object('color', $1::text, 'warm', $1 = 'red') $$;
CREATE CAST (audit_test.color AS json) WITH FUNCTION audit_test.color_json(audit_test.color);
CREATE DOMAIN audit_test.amount AS numeric(10, 2);
CREATE DOMAIN audit_test.int_list AS int[];
CREATE TABLE audit_test.kinds (
  id int PRIMARY KEY, "we""ird\ name" text, dropped_soon int, f8 float8, f4 real, i2 smallint,
  amount audit_test.amount, d date, ts timestamp, tstz timestamptz, t time, tz timetz, iv interval,
  j json, jb jsonb, ints audit_test.int_list, pairs audit_test.pair[], pair audit_test.pair,
  color audit_test.color, mood audit_test.mood, b bytea, flag bool, addr inet, bits bit varying,
  pt point, tsv tsvector, u uuid, ch char(4), "ünï" text
);
ALTER TABLE audit_test.kinds DROP COLUMN dropped_soon;
CREATE TABLE audit_test.kinds_bulk (LIKE audit_test.kinds INCLUDING ALL);
SELECT saas.audit_enable('audit_test.kinds', changed_only => true);
SELECT saas.audit_enable('audit_test.kinds_bulk', mode => 'statement');
INSERT INTO audit_test.kinds VALUES
  (1, E'tab\there "quoted" \\ back', 'NaN', '-Infinity', -1, 12.3, '2026-11-15', 'infinity',
   '2026-11-15 08:00:00.123456+05:30', '23:59:59.5', '12:00+03', '1 year 2 mons -3 days 04:05:06',
   '{"b": 1, "a" : [1.50, {"z": null}], "b": 2}', '{"b": 1, "a": [1.50, {"z": null}]}', '{1,NULL,3}',
   ARRAY[ROW('x', 1.50)::audit_test.pair, NULL], ROW(E'line\nbreak', -0.0), 'red', 'ok', '\x00ff', true,
   '10.0.0.1/8', B'101', '(1.5,2)', 'a fat cat', '0000000a-0000-4000-8000-00000000a0d1', 'ab', E'\u00e9\u0001'),
  (2, NULL, 1e300, 0.1, 0, NULL, '-infinity', '2026-01-01 00:00:00', '-infinity', NULL, NULL, NULL,
   '[]', 'null', '{}', '{}', NULL, 'green', NULL, '', false, NULL, NULL, NULL, NULL, NULL, NULL, '');
INSERT INTO audit_test.kinds_bulk SELECT * FROM audit_test.kinds;
SELECT l.table_name, l.operation, k.id, l.new_values = row_to_json(k)::jsonb AS new_is_row_to_json,
       l.record_key = jsonb_build_object('id', k.id) AS keyed
FROM saas.audit_log l JOIN audit_test.kinds k ON k.id = (l.new_values ->> 'id')::int
WHERE l.table_name = 'kinds' AND l.operation = 'INSERT'
UNION ALL
SELECT l.table_name, l.operation, k.id, l.new_values = row_to_json(k)::jsonb, l.record_key = jsonb_build_object('id', k.id)
FROM saas.audit_log l JOIN audit_test.kinds_bulk k ON k.id = (l.new_values ->> 'id')::int
WHERE l.table_name = 'kinds_bulk'
ORDER BY 1, 3;
SELECT new_values -> 'f8' AS f8, new_values -> 'color' AS color, new_values -> 'j' AS j, new_values -> 'we"ird\ name' AS weird
FROM saas.audit_log WHERE table_name = 'kinds' AND operation = 'INSERT' AND new_values ->> 'id' = '1';
-- A statement of 600 rows: written in several batches, every row logged once, as it is.
INSERT INTO audit_test.kinds_bulk (id, flag) SELECT g, g % 2 = 0 FROM generate_series(3, 602) g;
SELECT count(*) AS logged, count(DISTINCT l.id) AS distinct_ids, bool_and(l.new_values = row_to_json(k)::jsonb) AS all_as_row_to_json
FROM saas.audit_log l JOIN audit_test.kinds_bulk k ON k.id = (l.new_values ->> 'id')::int
WHERE l.table_name = 'kinds_bulk';
-- changed_only: the update's images hold just the two changed columns.
UPDATE audit_test.kinds SET flag = NOT flag, pair = ROW('y', 2) WHERE id = 1;
SELECT old_values, new_values FROM saas.audit_log WHERE table_name = 'kinds' AND operation = 'UPDATE';
SELECT ok, detail FROM saas.audit_verify('-infinity', 'infinity');
ROLLBACK;

-- The audit trigger never recurses past the stack: a json value nested
-- 40,000 deep gets 54001, not a crashed server (issue 15, item 1).
-- A json value nested 40,000 deep, built in PL/pgSQL so PostgreSQL's JSON
-- parser (which checks the stack) never reads it. Before the fix the audit
-- trigger's recursive scan crashed the backend (SIGSEGV, all sessions reset).
CREATE TABLE audit_test.deep (id int PRIMARY KEY, j json, jb jsonb);
SELECT saas.audit_enable('audit_test.deep');
CREATE FUNCTION pg_temp.nest(n int) RETURNS json LANGUAGE plpgsql AS $$
DECLARE x json := '1';
BEGIN
  FOR i IN 1..n LOOP x := json_build_array(x); END LOOP;
  RETURN x;
END $$;
SET saas.audit_clock = '2026-11-10 10:00:00+00';
-- Shallow nesting is recorded as before.
INSERT INTO audit_test.deep VALUES (1, pg_temp.nest(50), NULL);
SELECT operation, jsonb_typeof(new_values->'j') AS j_type
FROM saas.audit_log WHERE table_name = 'deep' ORDER BY id;
-- INSERT: 54001 with the column named and a HINT (max_stack_depth).
INSERT INTO audit_test.deep VALUES (2, pg_temp.nest(40000), NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT 1 AS server_still_answers;
-- UPDATE to a deep value.
UPDATE audit_test.deep SET j = pg_temp.nest(40000) WHERE id = 1;
\echo :LAST_ERROR_SQLSTATE
-- DELETE of a deep row stored while the table was not audited (old image).
SELECT saas.audit_disable('audit_test.deep');
INSERT INTO audit_test.deep VALUES (3, pg_temp.nest(40000), NULL);
SELECT saas.audit_enable('audit_test.deep');
DELETE FROM audit_test.deep WHERE id = 3;
\echo :LAST_ERROR_SQLSTATE
-- Statement mode reads the same images from the transition tables.
SELECT saas.audit_enable('audit_test.deep', mode => 'statement');
UPDATE audit_test.deep SET id = id + 10 WHERE id = 3;
\echo :LAST_ERROR_SQLSTATE
SELECT 1 AS server_still_answers;
-- Nothing half-written: still only the shallow INSERT.
SELECT count(*) AS deep_rows_logged FROM saas.audit_log WHERE table_name = 'deep';
SELECT saas.audit_disable('audit_test.deep');
DROP TABLE audit_test.deep;
RESET saas.audit_clock;

-- The tenant of a change to a table without a tenant column comes from
-- the request, resolved as the tenant directory's owner: the writing role
-- (RLS applies to it) gets its tenant, not a 42501 from reading the
-- directory through its own policies, even with nothing resolved before.
CREATE TABLE audit_test.prefs (k text PRIMARY KEY, v text);
GRANT INSERT ON audit_test.prefs TO regress_audit_api;
SELECT saas.audit_enable('audit_test.prefs');
SET saas.audit_clock = '2026-11-10 10:05:00+00';
BEGIN;
SET LOCAL ROLE regress_audit_api;
SELECT set_config('request.jwt.claims', format('{"sub": %s, "tenant_id": %s}', to_json(:u_admin::text), to_json(:ta::text)), true) IS NOT NULL AS set;
INSERT INTO audit_test.prefs VALUES ('theme', 'dark');
COMMIT;
SELECT tenant_id = :ta AS logged_for_the_request_tenant, actor_id = :u_admin AS actor
FROM saas.audit_log WHERE table_name = 'prefs';
RESET saas.audit_clock;
SELECT saas.audit_disable('audit_test.prefs');

-- TRUNCATE of a partitioned audited table: one record per relation it
-- empties, each under its own name.
CREATE TABLE audit_test.parted_t (tenant_id uuid NOT NULL, at timestamptz NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE audit_test.parted_t_a PARTITION OF audit_test.parted_t FOR VALUES FROM ('2026-01-01') TO ('2026-07-01');
CREATE TABLE audit_test.parted_t_b PARTITION OF audit_test.parted_t FOR VALUES FROM ('2026-07-01') TO ('2027-01-01');
SELECT saas.audit_enable('audit_test.parted_t', mode => 'statement');
SET saas.audit_clock = '2026-11-10 10:06:00+00';
TRUNCATE audit_test.parted_t;
SELECT operation, table_name FROM saas.audit_log WHERE table_name LIKE 'parted_t%' ORDER BY table_name;
RESET saas.audit_clock;
SELECT saas.audit_disable('audit_test.parted_t');

-- convert_to_monthly keeps a table's audit: it stays registered, its new
-- partitions get the statement triggers, and DML straight into a partition
-- is logged under the table's name (issue 15, item 8).
CREATE TABLE audit_test.conv (id int NOT NULL, at timestamptz NOT NULL, v int, PRIMARY KEY (id, at));
INSERT INTO audit_test.conv VALUES (1, '2026-10-05 00:00+00', 1);
SELECT saas.audit_enable('audit_test.conv', mode => 'statement');
SELECT count(*) AS actions FROM saas.convert_to_monthly('audit_test.conv', 'at', 1, p_now => '2026-10-15 00:00+00');
SELECT relid::text AS still_audited, mode FROM saas.audit_tables WHERE relid = 'audit_test.conv'::regclass;
SET saas.audit_clock = '2026-11-10 10:10:00+00';
INSERT INTO audit_test.conv_p2026_10 VALUES (2, '2026-10-06 00:00+00', 2);
SELECT operation, table_name, new_values ->> 'id' AS id FROM saas.audit_log WHERE table_name LIKE 'conv%' ORDER BY id;
RESET saas.audit_clock;
SELECT saas.audit_disable('audit_test.conv') AS was_audited;

-- The row trigger keeps each table's column plan and name across
-- statements and transactions; a column added, renamed or retyped, and a
-- table or schema renamed, are seen by the very next write.
CREATE SCHEMA audit_shape;
CREATE TABLE audit_shape.shape (id int PRIMARY KEY, a text);
SELECT saas.audit_enable('audit_shape.shape');
SET saas.audit_clock = '2026-11-10 10:15:00+00';
INSERT INTO audit_shape.shape VALUES (1, 'x');
ALTER TABLE audit_shape.shape ADD COLUMN b int;
INSERT INTO audit_shape.shape VALUES (2, 'y', 5);
ALTER TABLE audit_shape.shape RENAME COLUMN a TO a2;
ALTER TABLE audit_shape.shape ALTER COLUMN b TYPE text;
INSERT INTO audit_shape.shape VALUES (3, 'z', 'six');
ALTER TABLE audit_shape.shape RENAME TO shape2;
INSERT INTO audit_shape.shape2 VALUES (4, 'w', 'seven');
ALTER SCHEMA audit_shape RENAME TO audit_shape2;
INSERT INTO audit_shape2.shape2 VALUES (5, 'v', 'eight');
RESET saas.audit_clock;
SELECT schema_name, table_name, new_values FROM saas.audit_log
WHERE schema_name LIKE 'audit_shape%' ORDER BY id;
SELECT saas.audit_disable('audit_shape2.shape2');
DROP SCHEMA audit_shape2 CASCADE;

-- A user's cast to json that returns NULL is logged as JSON null (was an
-- internal error, XX000, on the audited write).
CREATE TYPE audit_test.level AS ENUM ('low', 'high');
CREATE FUNCTION audit_test.level_json(audit_test.level) RETURNS json LANGUAGE sql
  AS $$ SELECT CASE WHEN $1 = 'low' THEN NULL ELSE to_json($1::text) END $$;
CREATE CAST (audit_test.level AS json) WITH FUNCTION audit_test.level_json(audit_test.level);
CREATE TABLE audit_test.levels (id int PRIMARY KEY, l audit_test.level);
SELECT saas.audit_enable('audit_test.levels');
SET saas.audit_clock = '2026-11-10 10:20:00+00';
INSERT INTO audit_test.levels VALUES (1, 'low'), (2, 'high');
SELECT (new_values ->> 'id')::int AS id, new_values -> 'l' AS l
FROM saas.audit_log WHERE table_name = 'levels' ORDER BY 1;
SELECT saas.audit_disable('audit_test.levels');
RESET saas.audit_clock;

-- Audit never makes a valid write fail: json that jsonb cannot hold (a
-- \u0000 in a string, numbers beyond numeric's range) is logged as a JSON
-- string of its exact text (issue 15, item 10).
CREATE TABLE audit_test.odd_json (id int PRIMARY KEY, j json);
SELECT saas.audit_enable('audit_test.odd_json');
SET saas.audit_clock = '2026-11-10 10:30:00+00';
INSERT INTO audit_test.odd_json VALUES
  (1, '{"s": "a\u0000b"}'), (2, '[1e1000000]'), (3, '{"n": -1e-1000000}'), (4, '{"ok": 1}');
SELECT (new_values ->> 'id')::int AS id, jsonb_typeof(new_values -> 'j') AS logged_as, new_values ->> 'j' AS j
FROM saas.audit_log WHERE table_name = 'odd_json' ORDER BY 1;
SELECT bool_and(ok) AS verifies FROM saas.audit_verify('2026-11-01', '2026-12-01');
SELECT saas.audit_disable('audit_test.odd_json');
RESET saas.audit_clock;

-- The client's address is the first X-Forwarded-For hop from the right
-- that is not a trusted proxy (saas.trusted_proxies).
CREATE TABLE audit_test.ip_probe (id int PRIMARY KEY);
SELECT saas.audit_enable('audit_test.ip_probe');
SET saas.audit_clock = '2026-11-10 11:00:00+00';
-- The client prepended its own hop; our proxy (10.0.0.5) appended the real
-- peer 198.51.100.9. Before the fix client_ip was 1.2.3.4 (the first hop).
BEGIN;
SELECT set_config('request.headers', '{"x-forwarded-for": "1.2.3.4, 198.51.100.9, 10.0.0.5"}', true) IS NOT NULL AS headers;
INSERT INTO audit_test.ip_probe VALUES (1);
COMMIT;
-- X-Real-IP is not consulted when X-Forwarded-For names a client that is
-- not an address: NULL (before: 1.2.3.4 from X-Real-IP).
BEGIN;
SELECT set_config('request.headers', '{"x-forwarded-for": "unknown, 10.0.0.5", "x-real-ip": "1.2.3.4"}', true) IS NOT NULL AS headers;
INSERT INTO audit_test.ip_probe VALUES (2);
COMMIT;
-- X-Real-IP alone still counts.
BEGIN;
SELECT set_config('request.headers', '{"x-real-ip": "2001:db8::7"}', true) IS NOT NULL AS headers;
INSERT INTO audit_test.ip_probe VALUES (3);
COMMIT;
-- The setting: no trusted proxy means the last hop; trusting both proxies
-- gives the leftmost untrusted hop. Changing it mid-transaction is seen.
BEGIN;
SELECT set_config('request.headers', '{"x-forwarded-for": "1.2.3.4, 198.51.100.9, 10.0.0.5"}', true) IS NOT NULL AS headers;
SET LOCAL saas.trusted_proxies = '';
INSERT INTO audit_test.ip_probe VALUES (4);
SET LOCAL saas.trusted_proxies = '198.51.100.0/24, 10.0.0.0/8';
INSERT INTO audit_test.ip_probe VALUES (5);
COMMIT;
SELECT record_key->>'id' AS id, host(client_ip) AS client_ip
FROM saas.audit_log WHERE table_name = 'ip_probe' ORDER BY (record_key->>'id')::int;
-- Expected: 1 198.51.100.9 | 2 (null) | 3 2001:db8::7 | 4 10.0.0.5 | 5 1.2.3.4
-- Invalid values are refused when set (22023, with a HINT listing the format).
SET saas.trusted_proxies = '10.0.0.0/33';
\echo :LAST_ERROR_SQLSTATE
SET saas.trusted_proxies = 'proxy.internal';
\echo :LAST_ERROR_SQLSTATE
SHOW saas.trusted_proxies;
-- Expected: 22023, 22023, then the default
-- 127.0.0.0/8, ::1/128, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7
SELECT saas.audit_disable('audit_test.ip_probe');
DROP TABLE audit_test.ip_probe;
RESET saas.audit_clock;

-- ---------------------------------------------------------------------------
-- audit_disable, drops
-- ---------------------------------------------------------------------------
SELECT saas.audit_disable('audit_test.notes') AS was_audited, saas.audit_disable('audit_test.notes') AS again;
SELECT count(*) AS audit_triggers_left FROM pg_trigger WHERE tgrelid = 'audit_test.notes'::regclass AND NOT tgisinternal;
SET client_min_messages = warning;
DROP SCHEMA audit_test CASCADE;
RESET client_min_messages;
SELECT count(*) AS audited_after_drop FROM saas.audit_tables;

-- Cleanup for the suites after this one: the log's rows and partitions go
-- the only way they can (a superuser with triggers off, then retention).
SET session_replication_role = replica;
DELETE FROM saas.audit_seals;
DELETE FROM saas.audit_retired;
DELETE FROM saas.audit_log;
RESET session_replication_role;
DO $$
DECLARE p regclass;
BEGIN
  FOR p IN SELECT relid FROM pg_partition_tree('saas.audit_log') WHERE isleaf LOOP
    EXECUTE format('DROP TABLE %s', p);
  END LOOP;
END $$;
DELETE FROM saas.partition_config WHERE parent = 'saas.audit_log'::regclass;
DELETE FROM saas.tenants WHERE id IN (:ta, :tb);
DROP OWNED BY regress_audit_api;
DROP ROLE regress_audit_api;

-- CSV fields a spreadsheet would run as formulas are quoted with a leading
-- single quote; others as CSV quotes them.
SELECT v, saas._csv_field(v) AS csv
FROM unnest(ARRAY['=HYPERLINK("http://evil.example","x")', '+1', '-2', '@SUM(A1)', E'\tx', 'plain', 'a,b', '', NULL]) WITH ORDINALITY u(v, n)
ORDER BY n;


-- The API schema's export (saas_api.audit_export) is a file: NDJSON unless
-- the Accept header asks for CSV, with the Content-Type set after what
-- pre_request set. Its body is checked through PostgREST in tests/http.rs.
SELECT saas_api.health() ->> 'status' AS health;
INSERT INTO saas.tenants (id, slug, name) VALUES (:ta, 'audit-export', 'Export') ON CONFLICT DO NOTHING;
BEGIN;
SELECT saas.set_tenant(:ta) = :ta AS scoped;
SELECT set_config('request.headers', '{"accept": "text/csv"}', true) IS NOT NULL AS set,
       set_config('response.headers', '[{"RateLimit-Limit": "5"}]', true) IS NOT NULL AS set;
SELECT length(saas_api.audit_export('2026-01-01', '2026-02-01')) AS csv_bytes,
       current_setting('response.headers') AS response_headers;
SELECT set_config('request.headers', '{"accept": "*/*"}', true) IS NOT NULL AS set,
       set_config('response.headers', '', true) IS NOT NULL AS set;
SELECT length(saas_api.audit_export('2026-01-01', '2026-02-01')) AS ndjson_bytes,
       current_setting('response.headers') AS response_headers;
ROLLBACK;
DELETE FROM saas.tenants WHERE slug = 'audit-export';
