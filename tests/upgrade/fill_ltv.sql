-- The ltv module in use (0.2.0 and later): what tests/upgrade.rs runs on
-- the upgraded and the fresh database after comparing their schemas, and
-- tests/backup.rs on its source before dumping. Runs after fill.sql (schema
-- app, the tenants); every time is pinned.
SET client_min_messages = warning;
CREATE TABLE app.payments (
  id           bigint GENERATED ALWAYS AS IDENTITY,
  tenant_id    uuid        NOT NULL,
  customer_id  text        NOT NULL,
  amount       numeric     NOT NULL,
  kind         text        NOT NULL DEFAULT 'payment',
  currency     text        NOT NULL DEFAULT 'EUR',
  paid_at      timestamptz NOT NULL,
  PRIMARY KEY (tenant_id, id, paid_at)
) PARTITION BY RANGE (paid_at);
CREATE TABLE app.payments_2026_10 PARTITION OF app.payments FOR VALUES FROM ('2026-10-01') TO ('2026-11-01');
CREATE TABLE app.payments_rest PARTITION OF app.payments DEFAULT;
SELECT saas.enable_tenancy('app.payments');
INSERT INTO app.payments (tenant_id, customer_id, amount, paid_at) VALUES
  ('00000001-0000-4000-8000-0000000000aa', 'c1', 10.50, '2026-10-01 09:00+00');
SELECT saas.ltv_track('app.payments', 'customer_id', 'amount', 'paid_at', kind_column => 'kind', currency_column => 'currency');
INSERT INTO app.payments (tenant_id, customer_id, amount, kind, paid_at)
SELECT CASE WHEN n % 3 = 0 THEN '00000002-0000-4000-8000-0000000000aa'::uuid ELSE '00000001-0000-4000-8000-0000000000aa' END,
       'c' || (n % 7), (n * 1.25)::numeric(12, 2), CASE WHEN n % 10 = 0 THEN 'refund' ELSE 'payment' END,
       timestamptz '2026-10-01 00:00+00' + n * interval '11 hours'
FROM generate_series(1, 120) n;
UPDATE app.payments SET customer_id = 'c1', paid_at = paid_at + interval '1 day' WHERE customer_id = 'c2' AND amount < 20;
DELETE FROM app.payments WHERE customer_id = 'c3' AND kind = 'refund';

CREATE TABLE app.subscriptions (
  id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id   uuid        NOT NULL,
  customer_id text        NOT NULL,
  mrr         numeric     NOT NULL,
  started_at  timestamptz NOT NULL,
  ended_at    timestamptz
);
SELECT saas.enable_tenancy('app.subscriptions');
SELECT saas.ltv_track_subscriptions('app.subscriptions');
INSERT INTO app.subscriptions (tenant_id, customer_id, mrr, started_at, ended_at) VALUES
  ('00000001-0000-4000-8000-0000000000aa', 'c1', 100, '2026-08-01 00:00+00', NULL),
  ('00000001-0000-4000-8000-0000000000aa', 'c2', 50, '2026-09-10 00:00+00', '2026-10-20 00:00+00');

SELECT saas.set_tenant('00000001-0000-4000-8000-0000000000aa');
SELECT saas.retention_risk_settings_set('{"level_critical": 75}');
SELECT saas.set_tenant(NULL);
