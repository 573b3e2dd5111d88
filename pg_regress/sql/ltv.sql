-- ltv: the ledger kept by statement triggers on a partitioned payments
-- table (INSERT, UPDATE moving customers and days, DELETE, refunds),
-- reconcile and rebuild, the summary, subscriptions and revenue metrics,
-- cohorts, customer health, retention risk with per-tenant rules, and every
-- error with its SQLSTATE.
\set SHOW_CONTEXT never
\set VERBOSITY terse
SET client_min_messages = notice;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';

\set ta '''0000000a-0000-4000-8000-0000000000f3'''
\set tb '''0000000b-0000-4000-8000-0000000000f3'''
\set u_admin '''000000aa-0000-4000-8000-0000000000f1'''
\set u_member '''000000bb-0000-4000-8000-0000000000f1'''
\set u_badmin '''000000cc-0000-4000-8000-0000000000f1'''

CREATE ROLE regress_ltv_api NOLOGIN;
SELECT saas.grant_api('{regress_ltv_api}');
INSERT INTO saas.tenants (id, slug, name) VALUES (:ta, 'ltv-a', 'LTV A'), (:tb, 'ltv-b', 'LTV B');
INSERT INTO saas.memberships (tenant_id, user_id, role) VALUES
  (:ta, :u_admin, 'admin'), (:ta, :u_member, 'member'), (:tb, :u_badmin, 'owner');

CREATE SCHEMA ltv_test;
CREATE TABLE ltv_test.payments (
  id           bigint GENERATED ALWAYS AS IDENTITY,
  tenant_id    uuid NOT NULL,
  customer     text,
  amount       numeric(12, 2),
  kind         text NOT NULL DEFAULT 'payment',
  currency     text,
  paid_at      timestamptz NOT NULL,
  ratio        float8,
  PRIMARY KEY (tenant_id, id, paid_at)
) PARTITION BY RANGE (paid_at);
CREATE TABLE ltv_test.payments_2026_01 PARTITION OF ltv_test.payments FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');
CREATE TABLE ltv_test.payments_2026_02 PARTITION OF ltv_test.payments FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');
CREATE TABLE ltv_test.payments_rest PARTITION OF ltv_test.payments DEFAULT;
CREATE VIEW ltv_test.payments_view AS SELECT * FROM ltv_test.payments;

-- Rows before tracking are counted when tracking starts.
INSERT INTO ltv_test.payments (tenant_id, customer, amount, currency, paid_at) VALUES
  (:ta, 'alice', 10.00, 'EUR', '2026-01-01 10:00+00');

-- ---------------------------------------------------------------------------
-- Bad input: each with its SQLSTATE; nothing registered
-- ---------------------------------------------------------------------------
SELECT saas.ltv_track(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.ltv_track('ltv_test.payments_view', 'customer', 'amount', 'paid_at');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.ltv_track('ltv_test.payments_2026_01', 'customer', 'amount', 'paid_at');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.ltv_track('ltv_test.payments', 'nope', 'amount', 'paid_at');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.ltv_track('ltv_test.payments', 'customer', 'kind', 'paid_at');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.ltv_track('ltv_test.payments', 'customer', 'ratio', 'paid_at');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.ltv_track('ltv_test.payments', 'customer', 'amount', 'customer');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.ltv_track('ltv_test.payments', 'customer', 'amount', 'paid_at', currency_column => 'amount');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.ltv_track('ltv_test.payments', 'customer', 'amount', 'paid_at', kind_column => 'amount');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.ltv_track('ltv_test.payments', 'customer', 'amount', 'paid_at', kind_column => 'kind', refund_kinds => '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.ltv_track('ltv_test.payments', 'customer', 'amount', 'paid_at', tenant_column => 'customer');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.ltv_track('saas.tenants', 'id', 'id', 'created_at');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.ltv_untrack('ltv_test.payments');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS registered FROM saas.ltv_sources;
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 'ltv_test.payments'::regclass AND tgname LIKE 'saas_ltv%';

-- ---------------------------------------------------------------------------
-- Tracking: a kind column for refunds, a currency column
-- ---------------------------------------------------------------------------
SELECT saas.ltv_track('ltv_test.payments', 'customer', 'amount', 'paid_at',
                      kind_column => 'kind', currency_column => 'currency') - 'source_id' AS tracked;
SELECT saas.ltv_track('ltv_test.payments', 'customer', 'amount', 'paid_at');
\echo :LAST_ERROR_SQLSTATE
SELECT tgname, tgtype FROM pg_trigger WHERE tgrelid = 'ltv_test.payments'::regclass AND tgname LIKE 'saas_ltv%' ORDER BY 1;

-- One bulk insert (one statement: one grouped upsert), a refund, a
-- payment without currency (the default), NULL customer ignored.
INSERT INTO ltv_test.payments (tenant_id, customer, amount, currency, paid_at, kind) VALUES
  (:ta, 'alice', 20.00, 'EUR', '2026-01-01 18:00+00', 'payment'),
  (:ta, 'alice', 30.00, 'EUR', '2026-01-15 09:00+00', 'payment'),
  (:ta, 'alice', 5.00, 'EUR', '2026-01-20 09:00+00', 'refund'),
  (:ta, 'bob', 100.00, 'EUR', '2026-02-03 23:59+00', 'payment'),
  (:ta, 'bob', 50.00, NULL, '2026-02-04 00:00+00', 'payment'),
  (:ta, NULL, 99.00, 'EUR', '2026-02-04 00:00+00', 'payment'),
  (:tb, 'alice', 7.00, 'USD', '2026-03-10 12:00+00', 'payment');

CREATE VIEW ltv_test.ledger AS
  SELECT tenant_id = :ta AS a, customer_id, currency, gross, refunds, net, payments, refund_count, first_payment_on, last_payment_on
  FROM saas.ltv_ledger;
CREATE VIEW ltv_test.daily AS
  SELECT tenant_id = :ta AS a, customer_id, currency, day, gross, refunds, payments, refund_count FROM saas.ltv_daily;
SELECT * FROM ltv_test.ledger ORDER BY 1 DESC, 2, 3;
SELECT * FROM ltv_test.daily ORDER BY 1 DESC, 2, 3, 4;

-- UPDATE moving a payment to another customer and another month
-- (a row moving between partitions), then DELETE.
UPDATE ltv_test.payments SET customer = 'carol', paid_at = '2026-03-05 08:00+00'
WHERE customer = 'alice' AND paid_at = '2026-01-15 09:00+00';
UPDATE ltv_test.payments SET amount = amount * 2 WHERE customer = 'bob' AND currency = 'EUR';
DELETE FROM ltv_test.payments WHERE customer = 'alice' AND kind = 'refund';
SELECT * FROM ltv_test.ledger ORDER BY 1 DESC, 2, 3;
SELECT count(*) AS mismatches FROM saas.ltv_reconcile('ltv_test.payments');

-- TRUNCATE of a partition bypasses the triggers: reconcile names the
-- customers, rebuild repairs them.
TRUNCATE ltv_test.payments_2026_02;
SELECT tenant_id = :ta AS a, customer_id, currency, ledger_net, expected_net, ledger_payments, expected_payments, problem
FROM saas.ltv_reconcile('ltv_test.payments') ORDER BY 1 DESC, 2, 3;
CALL saas.ltv_rebuild('ltv_test.payments', 1);
SELECT count(*) AS mismatches FROM saas.ltv_reconcile('ltv_test.payments');
SELECT * FROM ltv_test.ledger ORDER BY 1 DESC, 2, 3;
CALL saas.ltv_rebuild('ltv_test.payments', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.ltv_reconcile('ltv_test.payments_view');
\echo :LAST_ERROR_SQLSTATE

-- ---------------------------------------------------------------------------
-- The pending log: reads are exact before compaction (in a READ ONLY
-- transaction too, as a PostgREST GET); compaction changes no figure
-- ---------------------------------------------------------------------------
INSERT INTO ltv_test.payments (tenant_id, customer, amount, currency, paid_at) VALUES
  (:ta, 'gina', 4.00, 'EUR', '2026-01-03 10:00+00'), (:ta, 'gina', 6.00, 'EUR', '2026-01-04 10:00+00'),
  (:ta, 'gina', 1.00, 'EUR', '2026-01-05 10:00+00');
UPDATE ltv_test.payments SET paid_at = '2026-01-02 10:00+00' WHERE customer = 'gina' AND amount = 6.00;
DELETE FROM ltv_test.payments WHERE customer = 'gina' AND amount = 1.00;
SELECT count(*) AS pending FROM saas.ltv_pending;
BEGIN READ ONLY;
SELECT * FROM ltv_test.ledger ORDER BY 1 DESC, 2, 3;
SELECT count(*) AS mismatches FROM saas.ltv_reconcile('ltv_test.payments');
COMMIT;
CREATE TABLE ltv_test.before_compaction AS
  SELECT l.*, (SELECT count(*) FROM ltv_test.daily) AS days FROM ltv_test.ledger l;
SELECT saas.ltv_compact('ltv_test.payments') AS compacted;
SELECT count(*) AS pending_left FROM saas.ltv_pending;
SELECT count(*) AS differences FROM (
  (SELECT l.*, (SELECT count(*) FROM ltv_test.daily) FROM ltv_test.ledger l EXCEPT SELECT * FROM ltv_test.before_compaction)
  UNION ALL
  (SELECT * FROM ltv_test.before_compaction EXCEPT SELECT l.*, (SELECT count(*) FROM ltv_test.daily) FROM ltv_test.ledger l)) x;
SELECT saas.ltv_compact() AS nothing_left;
SELECT saas.ltv_compact('ltv_test.payments_view');
\echo :LAST_ERROR_SQLSTATE

-- ---------------------------------------------------------------------------
-- A rescue marks its move of rows out of a default partition
-- (saas._partition_moving_rows): the triggers log nothing meanwhile. The
-- mark holds in the subtransaction that set it only: rolled back (an error
-- mid-move) or in a later transaction, every change counts again
-- ---------------------------------------------------------------------------
BEGIN;
SAVEPOINT move;
SELECT saas._partition_moving_rows(true);
INSERT INTO ltv_test.payments (tenant_id, customer, amount, currency, paid_at) VALUES
  (:ta, 'hal', 3.00, 'EUR', '2026-01-20 10:00+00');
SELECT count(*) AS logged_while_moving FROM saas.ltv_pending;
ROLLBACK TO SAVEPOINT move;
INSERT INTO ltv_test.payments (tenant_id, customer, amount, currency, paid_at) VALUES
  (:ta, 'hal', 3.00, 'EUR', '2026-01-20 10:00+00');
SELECT count(*) AS logged_after_rollback FROM saas.ltv_pending;
ROLLBACK;
SELECT saas._partition_moving_rows(true);
BEGIN;
INSERT INTO ltv_test.payments (tenant_id, customer, amount, currency, paid_at) VALUES
  (:ta, 'hal', 3.00, 'EUR', '2026-01-20 10:00+00');
SELECT count(*) AS logged_in_a_later_transaction FROM saas.ltv_pending;
ROLLBACK;
SELECT has_function_privilege('regress_ltv_api', 'saas._partition_moving_rows(boolean)', 'EXECUTE') AS api_marks_moves;

-- ---------------------------------------------------------------------------
-- Compaction in rounds: a log larger than one round (round_rows pending
-- rows) is folded whole, round after round, in one call
-- ---------------------------------------------------------------------------
BEGIN;
SELECT format('INSERT INTO ltv_test.payments (tenant_id, customer, amount, currency, paid_at) VALUES (%L, %L, %s, %L, %L)',
              :ta, 'ida', i, 'EUR', timestamptz '2026-01-01 10:00+00' + i * interval '1 day')
FROM generate_series(1, 9) i \gexec
UPDATE ltv_test.payments SET amount = amount + 10 WHERE customer = 'ida' AND amount < 3;
DELETE FROM ltv_test.payments WHERE customer = 'ida' AND amount = 9;
SELECT count(*) AS pending FROM saas.ltv_pending;
SET LOCAL client_min_messages = debug1;
SELECT saas.ltv_compact('ltv_test.payments', round_rows => 4) AS compacted;
SET LOCAL client_min_messages = notice;
SELECT count(*) AS pending_left FROM saas.ltv_pending;
SELECT count(*) AS mismatches FROM saas.ltv_reconcile('ltv_test.payments');
SELECT customer_id, net, payments, first_payment_on, last_payment_on FROM ltv_test.ledger WHERE customer_id = 'ida';
ROLLBACK;
SELECT saas.ltv_compact(round_rows => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.ltv_compact(NULL, NULL);
\echo :LAST_ERROR_SQLSTATE

-- ---------------------------------------------------------------------------
-- DML naming a partition counts once (each relation of the tree has the
-- statement triggers); new and attached partitions get them, a detached
-- one loses them and no longer counts
-- ---------------------------------------------------------------------------
SELECT tgrelid::regclass AS relation, count(*) AS triggers FROM pg_trigger
WHERE tgname LIKE 'saas_ltv%' GROUP BY 1 ORDER BY tgrelid::regclass::text;
INSERT INTO ltv_test.payments_2026_01 (id, tenant_id, customer, amount, currency, paid_at) VALUES
  (9001, :ta, 'erin', 8.00, 'EUR', '2026-01-09 10:00+00'),
  (9002, :ta, 'erin', 2.00, 'EUR', '2026-01-10 10:00+00'),
  (9003, :ta, 'erin', 6.00, 'EUR', '2026-01-11 10:00+00');
UPDATE ltv_test.payments_2026_01 SET amount = 4.00 WHERE customer = 'erin' AND amount = 2.00;
DELETE FROM ltv_test.payments_2026_01 WHERE customer = 'erin' AND amount = 8.00;
SELECT customer_id, net, payments, first_payment_on, last_payment_on FROM ltv_test.ledger WHERE customer_id = 'erin';
SELECT count(*) AS mismatches FROM saas.ltv_reconcile('ltv_test.payments');
CREATE TABLE ltv_test.payments_2026_04 PARTITION OF ltv_test.payments FOR VALUES FROM ('2026-04-01') TO ('2026-05-01');
CREATE TABLE ltv_test.payments_2026_05 (LIKE ltv_test.payments INCLUDING DEFAULTS);
ALTER TABLE ltv_test.payments ATTACH PARTITION ltv_test.payments_2026_05 FOR VALUES FROM ('2026-05-01') TO ('2026-06-01');
SELECT tgrelid::regclass AS relation, count(*) AS triggers FROM pg_trigger
WHERE tgname LIKE 'saas_ltv%' GROUP BY 1 ORDER BY tgrelid::regclass::text;
INSERT INTO ltv_test.payments_2026_04 (id, tenant_id, customer, amount, currency, paid_at) VALUES
  (9004, :ta, 'erin', 1.00, 'EUR', '2026-04-02 10:00+00');
INSERT INTO ltv_test.payments_2026_05 (id, tenant_id, customer, amount, currency, paid_at) VALUES
  (9005, :ta, 'frank', 3.00, 'EUR', '2026-05-02 10:00+00');
SELECT customer_id, net, payments, first_payment_on, last_payment_on FROM ltv_test.ledger WHERE customer_id IN ('erin', 'frank') ORDER BY 1;
SELECT count(*) AS mismatches FROM saas.ltv_reconcile('ltv_test.payments');
-- DETACH bypasses the triggers (its rows leave the table: reconcile says so)
ALTER TABLE ltv_test.payments DETACH PARTITION ltv_test.payments_2026_05;
SELECT count(*) AS detached_triggers FROM pg_trigger WHERE tgrelid = 'ltv_test.payments_2026_05'::regclass AND tgname LIKE 'saas_ltv%';
SELECT customer_id, problem FROM saas.ltv_reconcile('ltv_test.payments') ORDER BY 1;
CALL saas.ltv_rebuild('ltv_test.payments');
INSERT INTO ltv_test.payments_2026_05 (id, tenant_id, customer, amount, currency, paid_at) VALUES
  (9006, :ta, 'frank', 3.00, 'EUR', '2026-05-03 10:00+00');
SELECT count(*) AS mismatches, (SELECT count(*) FROM ltv_test.ledger WHERE customer_id = 'frank') AS frank
FROM saas.ltv_reconcile('ltv_test.payments');
DROP TABLE ltv_test.payments_2026_05, ltv_test.before_compaction;
DELETE FROM ltv_test.payments WHERE customer IN ('erin', 'gina');
DROP TABLE ltv_test.payments_2026_04;
-- A partition attached from inside a function (as pg_partman does): the
-- event trigger cannot tell it from a restore's ALTER TABLE, so the next
-- run_maintenance gives it the triggers.
CREATE FUNCTION ltv_test.attach_june() RETURNS void LANGUAGE plpgsql AS $$
BEGIN
  CREATE TABLE ltv_test.payments_2026_06 (LIKE ltv_test.payments INCLUDING DEFAULTS);
  ALTER TABLE ltv_test.payments ATTACH PARTITION ltv_test.payments_2026_06 FOR VALUES FROM ('2026-06-01') TO ('2026-07-01');
END
$$;
SELECT ltv_test.attach_june();
SELECT count(*) AS june_triggers FROM pg_trigger WHERE tgrelid = 'ltv_test.payments_2026_06'::regclass AND tgname LIKE 'saas_ltv%';
-- run_maintenance compacts (its ltv task)
SELECT action, detail FROM saas.run_maintenance() WHERE parent_table = 'saas.ltv_pending'::regclass;
SELECT count(*) AS pending_left FROM saas.ltv_pending;
SELECT count(*) AS june_triggers FROM pg_trigger WHERE tgrelid = 'ltv_test.payments_2026_06'::regclass AND tgname LIKE 'saas_ltv%';
DROP TABLE ltv_test.payments_2026_06;
DROP FUNCTION ltv_test.attach_june();

-- ---------------------------------------------------------------------------
-- The summary (lifetimes' definitions) for the tenant's admins
-- ---------------------------------------------------------------------------
INSERT INTO ltv_test.payments (tenant_id, customer, amount, currency, paid_at) VALUES
  (:ta, 'alice', 12.00, 'EUR', '2026-01-08 10:00+00'),
  (:ta, 'alice', 3.00, 'EUR', '2026-01-08 11:00+00'),
  (:ta, 'alice', 40.00, 'EUR', '2026-01-29 10:00+00'),
  (:ta, 'dave', 9.00, 'EUR', '2026-03-31 23:00+00');
BEGIN;
SET LOCAL ROLE regress_ltv_api;
SELECT set_config('request.jwt.claims', format('{"sub": %s, "tenant_id": %s}', to_json(:u_admin::text), to_json(:ta::text)), true) IS NOT NULL AS admin_a;
SELECT * FROM saas.ltv_summary('1 day', '2026-03-31 12:00+00');
SELECT * FROM saas.ltv_summary('7 days', '2026-04-30 00:00+00');
SELECT count(*) AS ledger_rows, bool_and(tenant_id = :ta) AS only_a FROM saas.ltv_ledger;
SELECT * FROM saas.ltv_summary('0 days');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SET LOCAL ROLE regress_ltv_api;
SELECT saas.ltv_summary('1 month');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SET LOCAL ROLE regress_ltv_api;
SELECT saas.ltv_summary('-1 day');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
-- A member of the tenant reads no ledger; another tenant's owner only its own.
BEGIN;
SET LOCAL ROLE regress_ltv_api;
SELECT set_config('request.jwt.claims', format('{"sub": %s, "tenant_id": %s}', to_json(:u_member::text), to_json(:ta::text)), true) IS NOT NULL AS member_a;
SELECT count(*) AS member_sees FROM saas.ltv_ledger;
SELECT count(*) AS member_summary FROM saas.ltv_summary();
ROLLBACK;
BEGIN;
SET LOCAL ROLE regress_ltv_api;
SELECT set_config('request.jwt.claims', format('{"sub": %s, "tenant_id": %s}', to_json(:u_badmin::text), to_json(:tb::text)), true) IS NOT NULL AS owner_b;
SELECT customer_id, currency, net FROM saas.ltv_ledger ORDER BY 1;
SELECT * FROM saas.ltv_summary('1 day', '2026-03-31');
-- API roles write none of the ledger's relations
SAVEPOINT s;
INSERT INTO saas.ltv_ledger (tenant_id, source_id, customer_id, currency) VALUES (:tb, 1, 'x', 'USD');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK TO SAVEPOINT s;
INSERT INTO saas.ltv_ledger_compacted (tenant_id, source_id, customer_id, currency) VALUES (:tb, 1, 'x', 'USD');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK TO SAVEPOINT s;
INSERT INTO saas.ltv_pending (tenant_id, source_id, deltas) VALUES (:tb, 1, '{}');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK TO SAVEPOINT s;
SELECT has_table_privilege('saas.ltv_pending', 'SELECT') AS reads_pending, has_table_privilege('saas.ltv_pending', 'INSERT') AS writes_pending;
ROLLBACK;

-- ---------------------------------------------------------------------------
-- Cohorts and customer health
-- ---------------------------------------------------------------------------
BEGIN;
SET LOCAL ROLE regress_ltv_api;
SELECT set_config('request.jwt.claims', format('{"sub": %s, "tenant_id": %s}', to_json(:u_admin::text), to_json(:ta::text)), true) IS NOT NULL AS admin_a;
SELECT * FROM saas.cohorts();
SELECT * FROM saas.cohorts('2026-03-01', NULL);
SELECT * FROM saas.cohorts('2026-03-01', '2026-01-01');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SET LOCAL ROLE regress_ltv_api;
SELECT set_config('request.jwt.claims', format('{"sub": %s, "tenant_id": %s}', to_json(:u_admin::text), to_json(:ta::text)), true) IS NOT NULL AS admin_a;
SELECT * FROM saas.customer_health('2026-04-30', '30 days');
SELECT * FROM saas.customer_health('2026-04-30', '0 days');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- ---------------------------------------------------------------------------
-- Subscriptions and revenue metrics (ChartMogul's movements)
-- ---------------------------------------------------------------------------
CREATE TABLE ltv_test.subscriptions (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id   uuid NOT NULL,
  customer    text NOT NULL,
  mrr         numeric NOT NULL,
  status      text NOT NULL DEFAULT 'active',
  started_at  timestamptz NOT NULL,
  ended_at    timestamptz,
  label       text
);
GRANT SELECT ON ltv_test.subscriptions TO regress_ltv_api;
GRANT USAGE ON SCHEMA ltv_test TO regress_ltv_api;
SELECT saas.ltv_track_subscriptions('ltv_test.subscriptions', 'customer', 'label', 'started_at', 'ended_at');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.ltv_track_subscriptions('ltv_test.subscriptions', 'customer', 'mrr', 'label', 'ended_at');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.ltv_track_subscriptions('ltv_test.subscriptions', 'customer', 'mrr', 'started_at', 'ended_at', status_column => 'status');
SELECT saas.ltv_track_subscriptions('ltv_test.subscriptions');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO ltv_test.subscriptions (tenant_id, customer, mrr, status, started_at, ended_at) VALUES
  -- a: new in January, expands in February (second subscription), contracts in March (first ends, second stays: no churn)
  (:ta, 'a', 100, 'active', '2026-01-10', '2026-03-15'),
  (:ta, 'a', 50, 'active', '2026-02-01', NULL),
  -- b: new in January, churns in February, reactivated in April
  (:ta, 'b', 200, 'active', '2026-01-05', '2026-02-20'),
  (:ta, 'b', 80, 'active', '2026-04-02', NULL),
  -- c: a trial, excluded
  (:ta, 'c', 30, 'trialing', '2026-01-01', NULL),
  -- another tenant
  (:tb, 'z', 999, 'active', '2026-01-01', NULL);
BEGIN;
SET LOCAL ROLE regress_ltv_api;
SELECT set_config('request.jwt.claims', format('{"sub": %s, "tenant_id": %s}', to_json(:u_admin::text), to_json(:ta::text)), true) IS NOT NULL AS admin_a;
SELECT bucket_start::date, currency, starting_mrr, new_mrr, expansion_mrr, contraction_mrr, churned_mrr, reactivated_mrr,
       net_new_mrr, mrr, starting_customers, new_customers, churned_customers, customers
FROM saas.revenue_metrics('2026-01-01', '2026-05-01');
SELECT bucket_start::date, logo_churn_rate, gross_revenue_churn_rate, net_revenue_churn_rate, nrr, arpa
FROM saas.revenue_metrics('2026-01-01', '2026-05-01');
SELECT bucket_start::date, bucket_end::date, mrr FROM saas.revenue_metrics('2026-01-01', '2026-03-01', '3 weeks');
SELECT * FROM saas.revenue_metrics('2026-05-01', '2026-01-01');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SET LOCAL ROLE regress_ltv_api;
SELECT * FROM saas.revenue_metrics('2026-01-01', '2026-05-01', '0 days');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SET LOCAL ROLE regress_ltv_api;
SELECT * FROM saas.revenue_metrics('2026-01-01', '2026-05-01', '100000 years');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SET LOCAL ROLE regress_ltv_api;
SELECT * FROM saas.revenue_metrics('-infinity', '2026-05-01');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SET LOCAL ROLE regress_ltv_api;
SELECT * FROM saas.ltv_summary('1 day', 'infinity');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SET LOCAL ROLE regress_ltv_api;
SELECT set_config('request.jwt.claims', format('{"sub": %s, "tenant_id": %s}', to_json(:u_badmin::text), to_json(:tb::text)), true) IS NOT NULL AS owner_b;
SELECT bucket_start::date, mrr, customers FROM saas.revenue_metrics('2026-01-01', '2026-03-01');
ROLLBACK;

-- ---------------------------------------------------------------------------
-- Retention risk: the seed's rules, boundaries, jsonb, per-tenant versions
-- ---------------------------------------------------------------------------
SELECT * FROM saas.retention_risk(45, 65, 55, 200, 'down');
SELECT * FROM saas.retention_risk(50, 70, 80, 90, 'stable');
SELECT * FROM saas.retention_risk(49.999999999999999999, 70, 80, 90, 'up');
SELECT * FROM saas.retention_risk(69, 69, 79, 91, 'up');
SELECT * FROM saas.retention_risk(NULL, 69, 79, 91, 'up');
SELECT (saas.retention_risk(m, 100, 100, 0, 'up')).score AS s, m FROM unnest('{49,50,69,70}'::numeric[]) m ORDER BY m;
SELECT * FROM saas.retention_risk(101, 50, 50, 0, 'up');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.retention_risk(50, -1, 50, 0, 'up');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.retention_risk(50, 50, 50, -1, 'up');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.retention_risk(50, 50, 50, 0, 'sideways');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.retention_risk(40, 50, 50, 0, 'up', '{"motivational_high_below": 30, "version": 7}');
SELECT * FROM saas.retention_risk(40, 50, 50, 0, 'up', '{"bogus": 1}');
\echo :LAST_ERROR_SQLSTATE
SELECT p.proname, p.provolatile, p.proparallel, p.proisstrict
FROM pg_proc p WHERE p.pronamespace = 'saas'::regnamespace AND p.proname IN ('retention_risk', '_mrr_movement', '_ltv_quintile')
ORDER BY 1, pg_get_function_identity_arguments(p.oid);
BEGIN;
SET LOCAL ROLE regress_ltv_api;
SELECT set_config('request.jwt.claims', format('{"sub": %s, "tenant_id": %s}', to_json(:u_admin::text), to_json(:ta::text)), true) IS NOT NULL AS admin_a;
SELECT * FROM saas.retention_risk('{"motivational_drivers_match": 45, "working_preferences_match": 80, "role_skill_fit": 70, "last_assessment_days": 100, "performance_trend": "down"}');
SELECT saas.retention_risk_settings_set('{"level_critical": 40, "level_high": 35}') AS version;
SELECT saas.retention_risk_settings_set('{"level_critical": 60, "level_high": 45}') AS version;
SELECT * FROM saas.retention_risk('{"motivational_drivers_match": 45, "working_preferences_match": 80, "role_skill_fit": 70, "last_assessment_days": 100, "performance_trend": "down"}');
SELECT tenant_id = :ta AS a, version, rules FROM saas.retention_risk_settings ORDER BY version;
SELECT * FROM saas.retention_risk('{"motivational_drivers_match": 45}');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SET LOCAL ROLE regress_ltv_api;
SELECT * FROM saas.retention_risk('{"mood": 1}');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SET LOCAL ROLE regress_ltv_api;
SELECT * FROM saas.retention_risk('[1]');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SET LOCAL ROLE regress_ltv_api;
SELECT set_config('request.jwt.claims', format('{"sub": %s, "tenant_id": %s}', to_json(:u_member::text), to_json(:ta::text)), true) IS NOT NULL AS member_a;
SELECT saas.retention_risk_settings_set('{"level_critical": 45}');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SET LOCAL ROLE regress_ltv_api;
SELECT set_config('request.jwt.claims', format('{"sub": %s, "tenant_id": %s}', to_json(:u_admin::text), to_json(:ta::text)), true) IS NOT NULL AS admin_a;
SELECT saas.retention_risk_settings_set('{"level_high": 90}');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- ---------------------------------------------------------------------------
-- API surface and clean-up: dropping a tracked table forgets it and its ledger
-- ---------------------------------------------------------------------------
SELECT object_kind, object_name, privilege FROM saas.api_grants WHERE module = 'ltv' ORDER BY 1, 2;
SELECT has_function_privilege('regress_ltv_api', 'saas.ltv_track(regclass, name, name, name, name, text[], name, text, name)', 'EXECUTE') AS api_tracks,
       has_table_privilege('regress_ltv_api', 'saas.ltv_ledger', 'SELECT') AS api_reads_ledger,
       has_table_privilege('regress_ltv_api', 'saas.ltv_ledger', 'INSERT') AS api_writes_ledger;
SELECT saas.ltv_untrack('ltv_test.payments');
SELECT count(*) AS ledger_left, (SELECT count(*) FROM saas.ltv_daily) AS days_left FROM saas.ltv_ledger;
SELECT saas.ltv_track('ltv_test.payments', 'customer', 'amount', 'paid_at', kind_column => 'kind', currency_column => 'currency') ->> 'customers' AS customers;
DROP VIEW ltv_test.payments_view;
DROP TABLE ltv_test.payments;
SELECT count(*) AS sources, (SELECT count(*) FROM saas.ltv_ledger) AS ledger_left FROM saas.ltv_sources;
DROP TABLE ltv_test.subscriptions;
SELECT count(*) AS subscription_sources FROM saas.ltv_subscription_sources;
DROP SCHEMA ltv_test CASCADE;
DELETE FROM saas.memberships WHERE tenant_id IN (:ta, :tb);
DELETE FROM saas.tenants WHERE id IN (:ta, :tb);
DROP OWNED BY regress_ltv_api;
DROP ROLE regress_ltv_api;
