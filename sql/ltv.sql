-- pg_saas ltv: an incremental per-customer ledger on payments tables, the
-- lifetimes-style summary, SaaS revenue metrics and cohorts, retention-risk
-- scores and customer health. The scoring rules, the MRR movement rule and
-- the RFM quintile are Rust (src/ltv/); the rest is SQL (docs/ltv.md).

-- ---------------------------------------------------------------------------
-- Tracked payments tables (global configuration; a Citus reference table).
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.ltv_sources (
  source_id         bigint      GENERATED ALWAYS AS IDENTITY,
  relid             regclass    NOT NULL,
  tenant_column     name        NOT NULL,
  customer_column   name        NOT NULL,
  amount_column     name        NOT NULL,
  occurred_at_column name       NOT NULL,
  -- date, timestamp or timestamptz: how a row's UTC day is found
  occurred_at_type  text        NOT NULL,
  kind_column       name,
  refund_kinds      text[]      NOT NULL DEFAULT '{refund}',
  currency_column   name,
  default_currency  text        NOT NULL DEFAULT 'XXX',
  tracked_at        timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT ltv_sources_pkey PRIMARY KEY (source_id),
  CONSTRAINT ltv_sources_relid_key UNIQUE (relid),
  CONSTRAINT ltv_sources_time_type CHECK (occurred_at_type IN ('date', 'timestamp', 'timestamptz')),
  CONSTRAINT ltv_sources_currency CHECK (char_length(default_currency) BETWEEN 1 AND 16)
);
COMMENT ON TABLE @extschema@.ltv_sources IS
  'Payments tables tracked by saas.ltv_track(): which columns hold tenant, customer, amount, time, kind and currency.';
ALTER TABLE @extschema@.ltv_sources ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.ltv_sources', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.ltv_sources', 'source_id'), '');
-- A dropped table leaves the registry (registry.sql's sql_drop trigger),
-- and its ledger goes with it (ltv_sources_forget below).
INSERT INTO @extschema@.table_registries (registry, relid_column, module)
VALUES ('ltv_sources', 'relid', 'ltv');

-- ---------------------------------------------------------------------------
-- The ledger and the daily series (tenant tables, forced RLS, Citus-ready).
-- Money is numeric. Refunds are kept positive; net = gross - refunds.
--
-- Writers only append: the statement triggers add one row per statement
-- and tenant to ltv_pending (the statement's changes as signed deltas).
-- saas.ltv_compact() (run_maintenance's ltv task) folds pending rows into
-- the compacted series and ledger. Readers use the views ltv_daily and
-- ltv_ledger: compacted + pending, so every read is exact at every commit,
-- READ ONLY transactions included.
-- ---------------------------------------------------------------------------
-- One change of a statement: a customer-day's signed amounts and counts.
CREATE TYPE @extschema@.ltv_delta AS (
  customer_id   text,
  currency      text,
  day           date,
  gross         numeric,
  refunds       numeric,
  payments      bigint,
  refund_count  bigint
);
COMMENT ON TYPE @extschema@.ltv_delta IS
  'One change of a payments statement for saas.ltv_pending: customer, currency, UTC day, gross and refunds (signed: an old row of an UPDATE or DELETE counts negative), payment and refund counts (signed).';

CREATE TABLE @extschema@.ltv_daily_compacted (
  tenant_id     uuid    NOT NULL,
  source_id     bigint  NOT NULL,
  customer_id   text    NOT NULL,
  currency      text    NOT NULL,
  day           date    NOT NULL,
  gross         numeric NOT NULL DEFAULT 0,
  refunds       numeric NOT NULL DEFAULT 0,
  payments      bigint  NOT NULL DEFAULT 0,
  refund_count  bigint  NOT NULL DEFAULT 0,
  -- customer, currency, day order: the summary, cohorts and health read a
  -- tenant's series in key order and aggregate it without sorting.
  CONSTRAINT ltv_daily_compacted_pkey PRIMARY KEY (tenant_id, customer_id, currency, day, source_id)
);
COMMENT ON TABLE @extschema@.ltv_daily_compacted IS
  'The compacted part of saas.ltv_daily (read the view): per tenant, source, customer, currency and UTC day, payments and refunds folded in by saas.ltv_compact().';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.ltv_daily_compacted', '');

CREATE TABLE @extschema@.ltv_ledger_compacted (
  tenant_id         uuid    NOT NULL,
  source_id         bigint  NOT NULL,
  customer_id       text    NOT NULL,
  currency          text    NOT NULL,
  gross             numeric NOT NULL DEFAULT 0,
  refunds           numeric NOT NULL DEFAULT 0,
  net               numeric NOT NULL DEFAULT 0,
  payments          bigint  NOT NULL DEFAULT 0,
  refund_count      bigint  NOT NULL DEFAULT 0,
  first_payment_on  date,
  last_payment_on   date,
  CONSTRAINT ltv_ledger_compacted_pkey PRIMARY KEY (tenant_id, customer_id, currency, source_id)
);
COMMENT ON TABLE @extschema@.ltv_ledger_compacted IS
  'The compacted part of saas.ltv_ledger (read the view): per tenant, source, customer and currency, totals and first and last payment day folded in by saas.ltv_compact().';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.ltv_ledger_compacted', '');

-- Append-only: one row per statement, tenant and source (a statement's
-- deltas of one tenant in one array; very large statements in chunks of a
-- million). No key: rows are taken by ctid (FOR UPDATE SKIP LOCKED), and
-- the index serves the readers' tenant filter.
CREATE TABLE @extschema@.ltv_pending (
  tenant_id  uuid                         NOT NULL,
  source_id  bigint                       NOT NULL,
  deltas     @extschema@.ltv_delta[]      NOT NULL
);
CREATE INDEX ltv_pending_tenant ON @extschema@.ltv_pending (tenant_id, source_id);
-- Without a key, a publication FOR ALL TABLES would refuse compaction's
-- DELETE; the whole old row identifies it (WAL for compaction only).
ALTER TABLE @extschema@.ltv_pending REPLICA IDENTITY FULL;
COMMENT ON TABLE @extschema@.ltv_pending IS
  'Changes of tracked payments tables not yet folded into the compacted ledger: one row per statement, tenant and source, appended by the statement triggers and removed by saas.ltv_compact().';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.ltv_pending', '');

-- Per tenant, versioned retention-risk rules (the seed's when a tenant has none).
CREATE TABLE @extschema@.retention_risk_settings (
  tenant_id   uuid        NOT NULL,
  version     integer     NOT NULL,
  rules       jsonb       NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT retention_risk_settings_pkey PRIMARY KEY (tenant_id, version),
  CONSTRAINT retention_risk_settings_version CHECK (version > 0),
  CONSTRAINT retention_risk_settings_object CHECK (jsonb_typeof(rules) = 'object')
);
COMMENT ON TABLE @extschema@.retention_risk_settings IS
  'Retention-risk weights and thresholds per tenant, one row per version (saas.retention_risk_settings_set); the highest version applies.';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.retention_risk_settings', '');

-- Forced RLS, the tenant policies of enable_tenancy, and reads for the
-- tenant's admins and owners only; only this module's functions write.
DO $rls$
DECLARE
  rel regclass;
BEGIN
  FOREACH rel IN ARRAY ARRAY['@extschema@.ltv_daily_compacted'::regclass, '@extschema@.ltv_ledger_compacted'::regclass,
                             '@extschema@.ltv_pending'::regclass, '@extschema@.retention_risk_settings'::regclass] LOOP
    PERFORM @extschema@._tenancy_apply(rel, 'tenant_id', set_default => false);
    EXECUTE format('CREATE POLICY saas_ltv_admin_read ON %s AS RESTRICTIVE FOR SELECT USING ((SELECT @extschema@.has_role(''admin'')))', rel);
  END LOOP;
END
$rls$;

-- What readers see: compacted + pending, exact at every commit. Views run
-- as the caller (security_invoker), so the tables' RLS applies. The rows of
-- the series before summing (internal: the summary, cohorts and health
-- aggregate them themselves).
CREATE VIEW @extschema@._ltv_daily_rows WITH (security_invoker = true) AS
  SELECT c.tenant_id, c.source_id, c.customer_id, c.currency, c.day, c.gross, c.refunds, c.payments, c.refund_count
  FROM @extschema@.ltv_daily_compacted c
  UNION ALL
  SELECT p.tenant_id, p.source_id, d.customer_id, d.currency, d.day, d.gross, d.refunds, d.payments, d.refund_count
  FROM @extschema@.ltv_pending p CROSS JOIN LATERAL unnest(p.deltas) d;

CREATE VIEW @extschema@.ltv_daily WITH (security_invoker = true) AS
  SELECT r.tenant_id, r.source_id, r.customer_id, r.currency, r.day, sum(r.gross) AS gross, sum(r.refunds) AS refunds,
         sum(r.payments)::bigint AS payments, sum(r.refund_count)::bigint AS refund_count
  FROM @extschema@._ltv_daily_rows r
  GROUP BY r.tenant_id, r.customer_id, r.currency, r.day, r.source_id
  HAVING sum(r.payments) <> 0 OR sum(r.refund_count) <> 0;
COMMENT ON VIEW @extschema@.ltv_daily IS
  'Per tenant, source, customer, currency and UTC day: gross, refunds, payment count, refund count; kept by the triggers of saas.ltv_track() (compacted + pending, exact at every commit).';

-- First and last payment day: the compacted row's, unless the customer has
-- pending deltas; then from its series, compacted and pending, read for
-- those customers only (set-based: a join, not a lookup per customer).
CREATE VIEW @extschema@.ltv_ledger WITH (security_invoker = true) AS
  SELECT l.tenant_id, l.source_id, l.customer_id, l.currency, l.gross, l.refunds, l.gross - l.refunds AS net,
         l.payments, l.refund_count,
         CASE WHEN l.has_pending THEN s.first_on ELSE l.first_on END AS first_payment_on,
         CASE WHEN l.has_pending THEN s.last_on ELSE l.last_on END AS last_payment_on
  FROM (
    SELECT u.tenant_id, u.source_id, u.customer_id, u.currency, sum(u.gross) AS gross, sum(u.refunds) AS refunds,
           sum(u.payments)::bigint AS payments, sum(u.refund_count)::bigint AS refund_count,
           min(u.first_on) AS first_on, max(u.last_on) AS last_on, bool_or(u.pending) AS has_pending
    FROM (
      SELECT c.tenant_id, c.source_id, c.customer_id, c.currency, c.gross, c.refunds, c.payments, c.refund_count,
             c.first_payment_on AS first_on, c.last_payment_on AS last_on, false AS pending
      FROM @extschema@.ltv_ledger_compacted c
      UNION ALL
      SELECT p.tenant_id, p.source_id, d.customer_id, d.currency, d.gross, d.refunds, d.payments, d.refund_count,
             NULL::date, NULL::date, true
      FROM @extschema@.ltv_pending p CROSS JOIN LATERAL unnest(p.deltas) d) u
    GROUP BY u.tenant_id, u.customer_id, u.currency, u.source_id
    HAVING sum(u.payments) <> 0 OR sum(u.refund_count) <> 0) l
  LEFT JOIN (
    SELECT x.tenant_id, x.source_id, x.customer_id, x.currency,
           min(x.day) FILTER (WHERE x.payments > 0) AS first_on, max(x.day) FILTER (WHERE x.payments > 0) AS last_on
    FROM (
      SELECT y.tenant_id, y.source_id, y.customer_id, y.currency, y.day, sum(y.payments) AS payments
      FROM (
        SELECT p.tenant_id, p.source_id, d.customer_id, d.currency, d.day, d.payments
        FROM @extschema@.ltv_pending p CROSS JOIN LATERAL unnest(p.deltas) d
        UNION ALL
        SELECT c.tenant_id, c.source_id, c.customer_id, c.currency, c.day, c.payments
        FROM @extschema@.ltv_daily_compacted c
        WHERE EXISTS (SELECT FROM @extschema@.ltv_pending p CROSS JOIN LATERAL unnest(p.deltas) d
                      WHERE p.tenant_id = c.tenant_id AND p.source_id = c.source_id
                        AND d.customer_id = c.customer_id AND d.currency = c.currency)) y
      GROUP BY y.tenant_id, y.customer_id, y.currency, y.source_id, y.day) x
    GROUP BY x.tenant_id, x.customer_id, x.currency, x.source_id) s
    ON s.tenant_id = l.tenant_id AND s.customer_id = l.customer_id AND s.currency = l.currency AND s.source_id = l.source_id;
COMMENT ON VIEW @extschema@.ltv_ledger IS
  'Per tenant, source, customer and currency: gross, refunds, net, payment count, first and last payment day (UTC); kept by the triggers of saas.ltv_track() (compacted + pending, exact at every commit).';

-- Subscriptions tables registered by saas.ltv_track_subscriptions (global).
CREATE TABLE @extschema@.ltv_subscription_sources (
  relid              regclass    NOT NULL,
  tenant_column      name        NOT NULL,
  customer_column    name        NOT NULL,
  mrr_column         name        NOT NULL,
  started_at_column  name        NOT NULL,
  ended_at_column    name        NOT NULL,
  status_column      name,
  excluded_statuses  text[]      NOT NULL DEFAULT '{}',
  currency_column    name,
  default_currency   text        NOT NULL DEFAULT 'XXX',
  tracked_at         timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT ltv_subscription_sources_pkey PRIMARY KEY (relid),
  CONSTRAINT ltv_subscription_sources_currency CHECK (char_length(default_currency) BETWEEN 1 AND 16)
);
COMMENT ON TABLE @extschema@.ltv_subscription_sources IS
  'Subscriptions tables saas.revenue_metrics() reads: customer, monthly amount, start, end, status, currency columns.';
ALTER TABLE @extschema@.ltv_subscription_sources ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.ltv_subscription_sources', '');
INSERT INTO @extschema@.table_registries (registry, relid_column, module)
VALUES ('ltv_subscription_sources', 'relid', 'ltv');

-- ---------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------

-- The type of a column, or a specific error.
CREATE FUNCTION @extschema@._ltv_column(rel regclass, col name, what text, fn text)
RETURNS regtype
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t regtype;
BEGIN
  IF col IS NULL THEN
    RAISE EXCEPTION '%: the % column may not be NULL', fn, what
      USING ERRCODE = 'null_value_not_allowed',
            HINT = format('Name the column of %s that holds the %s.', rel, what);
  END IF;
  SELECT a.atttypid::regtype INTO t FROM pg_attribute a
  WHERE a.attrelid = rel AND a.attname = col AND a.attnum > 0 AND NOT a.attisdropped;
  IF t IS NULL THEN
    RAISE EXCEPTION 'column "%" of "%" does not exist', @extschema@._echo(col), rel
      USING ERRCODE = 'undefined_column',
            HINT = format('Name the column of %s that holds the %s. Its columns: %s.', rel, what,
                          (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a
                           WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped));
  END IF;
  RETURN t;
END
$$;

CREATE FUNCTION @extschema@._ltv_require_type(rel regclass, col name, t regtype, allowed regtype[], what text, hint text)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT (t = ANY (allowed) OR (SELECT typtype FROM pg_type WHERE oid = t) = 'd'
                              AND (SELECT typbasetype FROM pg_type WHERE oid = t) = ANY (allowed)) THEN
    RAISE EXCEPTION 'column "%" of "%" is %, not a % column', col, rel, format_type(t, NULL), what
      USING ERRCODE = 'datatype_mismatch', HINT = hint;
  END IF;
END
$$;

-- A relation ltv_track / ltv_track_subscriptions can register.
CREATE FUNCTION @extschema@._ltv_require_table(rel regclass, fn text)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  cls pg_class%ROWTYPE;
BEGIN
  IF rel IS NULL THEN
    RAISE EXCEPTION '%: the table may not be NULL', fn
      USING ERRCODE = 'null_value_not_allowed',
            HINT = format('Pass the table, e.g. %s(''app.payments'').', fn);
  END IF;
  PERFORM @extschema@._require_registrable(rel, fn);
  SELECT * INTO STRICT cls FROM pg_class WHERE oid = rel;
  IF cls.relkind NOT IN ('r', 'p') THEN
    RAISE EXCEPTION '"%" is not a table', rel
      USING ERRCODE = 'wrong_object_type',
            DETAIL = format('Its relkind is %L.', cls.relkind),
            HINT = format('%s tracks tables and partitioned tables (triggers keep the ledger); register the table under the view.', fn);
  END IF;
  IF cls.relispartition THEN
    RAISE EXCEPTION '"%" is a partition of "%"', rel, (SELECT inhparent::regclass FROM pg_inherits WHERE inhrelid = rel)
      USING ERRCODE = 'wrong_object_type',
            HINT = format('Call %s on the partitioned table: its statement triggers see every partition.', fn);
  END IF;
  IF cls.relnamespace IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace, '@extschema@'::regnamespace) THEN
    RAISE EXCEPTION '"%" belongs to % and is not a user table', rel, cls.relnamespace::regnamespace
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'Track your application''s payments table.';
  END IF;
END
$$;

-- The changes of one statement, one row per source row (+1 new, -1 old),
-- as SQL over the transition tables ltv_new / ltv_old. The sign is written
-- into the expressions where it is fixed (INSERT, DELETE, the whole table):
-- a numeric multiplication per row costs the trigger measurably.
CREATE FUNCTION @extschema@._ltv_changes_sql(s @extschema@.ltv_sources, op text)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  rows_sql text;
  day_expr text;
  refund_expr text;
  amount_expr text;
  refund_amount_expr text;
  count_expr text;
BEGIN
  rows_sql := CASE op
    WHEN 'INSERT' THEN 'SELECT n.* FROM ltv_new n'
    WHEN 'DELETE' THEN 'SELECT o.* FROM ltv_old o'
    WHEN 'UPDATE' THEN 'SELECT n.*, 1 AS ltv_sign FROM ltv_new n UNION ALL SELECT o.*, -1 FROM ltv_old o'
    -- reconcile / rebuild: the whole table
    ELSE format('SELECT t.* FROM %s t', s.relid) END;
  amount_expr := CASE op
    WHEN 'UPDATE' THEN format('r.%I::numeric * r.ltv_sign', s.amount_column)
    WHEN 'DELETE' THEN format('-(r.%I::numeric)', s.amount_column)
    ELSE format('r.%I::numeric', s.amount_column) END;
  refund_amount_expr := CASE op
    WHEN 'UPDATE' THEN format('abs(r.%I::numeric) * r.ltv_sign', s.amount_column)
    WHEN 'DELETE' THEN format('-abs(r.%I::numeric)', s.amount_column)
    ELSE format('abs(r.%I::numeric)', s.amount_column) END;
  count_expr := CASE op WHEN 'UPDATE' THEN 'r.ltv_sign' WHEN 'DELETE' THEN '-1' ELSE '1' END;
  day_expr := CASE s.occurred_at_type
    WHEN 'timestamptz' THEN format('(r.%I AT TIME ZONE ''UTC'')::date', s.occurred_at_column)
    ELSE format('r.%I::date', s.occurred_at_column) END;
  refund_expr := CASE WHEN s.kind_column IS NULL THEN format('r.%I < 0', s.amount_column)
                      ELSE format('coalesce(r.%I::text = ANY (%L::text[]), false)', s.kind_column, s.refund_kinds) END;
  RETURN format(
    'SELECT r.%I AS tenant_id, r.%I::text AS customer_id, %s AS currency, %s AS day,
            CASE WHEN %s THEN 0 ELSE %s END AS gross,
            CASE WHEN %s THEN %s ELSE 0 END AS refunds,
            CASE WHEN %s THEN 0 ELSE %s END AS payments,
            CASE WHEN %s THEN %s ELSE 0 END AS refund_count
     FROM (%s) r
     WHERE r.%I IS NOT NULL AND r.%I IS NOT NULL AND r.%I IS NOT NULL AND r.%I IS NOT NULL',
    s.tenant_column, s.customer_column,
    CASE WHEN s.currency_column IS NULL THEN format('%L::text', s.default_currency)
         ELSE format('coalesce(r.%I::text, %L)', s.currency_column, s.default_currency) END,
    day_expr,
    refund_expr, amount_expr,
    refund_expr, refund_amount_expr,
    refund_expr, count_expr, refund_expr, count_expr,
    rows_sql,
    s.tenant_column, s.customer_column, s.amount_column, s.occurred_at_column);
END
$$;

-- The SQL the statement trigger saas._ltv_capture (Rust, src/ltv/capture.rs)
-- prepares once per trigger and backend and keeps: one INSERT of the
-- statement's changes into ltv_pending, one row per tenant, an UPDATE's
-- changes summed per customer-day first (rows whose ledger values did not
-- change leave nothing). chunked (statements of over a million rows, so no
-- array nears the 1 GB limit of a value): one row per tenant and million
-- rows (a window function, which would cost small statements a third of
-- the trigger's time). $1 is the source, $2 the
-- relation the trigger is on: a partition that is no longer in the
-- source's tree (detached) counts nothing, nor does a source untracked in
-- this transaction.
CREATE FUNCTION @extschema@._ltv_capture_sql(p_source bigint, op text, chunked boolean)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  s @extschema@.ltv_sources;
  rows_sql text;
  refund text;
  sgn text;
  head text;
BEGIN
  SELECT * INTO STRICT s FROM @extschema@.ltv_sources WHERE source_id = p_source;
  IF op NOT IN ('INSERT', 'UPDATE', 'DELETE') THEN
    RAISE EXCEPTION 'saas._ltv_capture_sql: unknown operation %', op
      USING ERRCODE = 'invalid_parameter_value', HINT = 'INSERT, UPDATE or DELETE.';
  END IF;
  IF op IN ('INSERT', 'DELETE') THEN
    -- One refund test and one composite per row (the generic columns of
    -- _ltv_changes_sql would test it four times).
    refund := CASE WHEN s.kind_column IS NULL THEN format('r.%I < 0', s.amount_column)
                   ELSE format('coalesce(r.%I::text = ANY (%L::text[]), false)', s.kind_column, s.refund_kinds) END;
    sgn := CASE op WHEN 'DELETE' THEN '-' ELSE '' END;
    head := format('r.%I::text, %s, %s', s.customer_column,
                   CASE WHEN s.currency_column IS NULL THEN format('%L::text', s.default_currency)
                        ELSE format('coalesce(r.%I::text, %L)', s.currency_column, s.default_currency) END,
                   CASE s.occurred_at_type
                     WHEN 'timestamptz' THEN format('(r.%I AT TIME ZONE ''UTC'')::date', s.occurred_at_column)
                     ELSE format('r.%I::date', s.occurred_at_column) END);
    RETURN format(
      'INSERT INTO @extschema@.ltv_pending (tenant_id, source_id, deltas)
       SELECT r.%1$I, $1, array_agg(CASE WHEN %2$s
                                         THEN ROW(%3$s, 0, %4$sabs(r.%5$I::numeric), 0, %4$s1)::@extschema@.ltv_delta
                                         ELSE ROW(%3$s, %4$sr.%5$I::numeric, 0, %4$s1, 0)::@extschema@.ltv_delta END)
       FROM (%6$s) r
       WHERE r.%1$I IS NOT NULL AND r.%7$I IS NOT NULL AND r.%5$I IS NOT NULL AND r.%8$I IS NOT NULL
         AND EXISTS (SELECT FROM @extschema@.ltv_sources s
                     WHERE s.source_id = $1 AND s.relid = coalesce(pg_catalog.pg_partition_root($2), $2))
       GROUP BY r.%1$I%9$s',
      s.tenant_column, refund, head, sgn, s.amount_column,
      CASE WHEN chunked THEN format('SELECT t.*, row_number() OVER () / 1000000 AS ltv_chunk FROM %s t',
                                    CASE op WHEN 'INSERT' THEN 'ltv_new' ELSE 'ltv_old' END)
           ELSE format('SELECT * FROM %s', CASE op WHEN 'INSERT' THEN 'ltv_new' ELSE 'ltv_old' END) END,
      s.customer_column, s.occurred_at_column,
      CASE WHEN chunked THEN ', r.ltv_chunk' ELSE '' END);
  END IF;
  rows_sql := @extschema@._ltv_changes_sql(s, op);
  IF op = 'UPDATE' THEN
    rows_sql := format(
      'SELECT tenant_id, customer_id, currency, day, sum(gross) AS gross, sum(refunds) AS refunds,
              sum(payments) AS payments, sum(refund_count) AS refund_count
       FROM (%s) u GROUP BY 1, 2, 3, 4
       HAVING sum(payments) <> 0 OR sum(refund_count) <> 0 OR sum(gross) <> 0 OR sum(refunds) <> 0', rows_sql);
  END IF;
  RETURN format(
    'INSERT INTO @extschema@.ltv_pending (tenant_id, source_id, deltas)
     SELECT ch.tenant_id, $1, array_agg(ROW(ch.customer_id, ch.currency, ch.day, ch.gross, ch.refunds,
                                            ch.payments, ch.refund_count)::@extschema@.ltv_delta)
     FROM (%s) ch
     WHERE EXISTS (SELECT FROM @extschema@.ltv_sources s
                   WHERE s.source_id = $1 AND s.relid = coalesce(pg_catalog.pg_partition_root($2), $2))
     GROUP BY ch.tenant_id%s',
    CASE WHEN chunked THEN format('SELECT c.*, row_number() OVER () / 1000000 AS chunk FROM (%s) c', rows_sql) ELSE rows_sql END,
    CASE WHEN chunked THEN ', ch.chunk' ELSE '' END);
END
$$;

-- The ledger rows of the given customers (source, tenant, customer,
-- currency), recomputed from their compacted series (ledger rows without
-- days deleted). Runs as the caller: ltv_compact (SECURITY DEFINER).
CREATE FUNCTION @extschema@._ltv_ledger_refresh(p_sources bigint[], p_tenants uuid[], p_customers text[], p_currencies text[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  n bigint;
BEGIN
  IF p_tenants IS NULL THEN
    RETURN 0;
  END IF;
  -- Lock the customers' ledger rows (made first if missing, waiting for a
  -- compaction that is making one) before reading their series: a
  -- compaction that changed a series and holds a ledger row has committed
  -- by then, and the next statement's snapshot sees it; one that comes
  -- later adds its delta to what is written here (no lost update).
  INSERT INTO @extschema@.ltv_ledger_compacted AS l (tenant_id, source_id, customer_id, currency)
  SELECT k.tenant_id, k.source_id, k.customer_id, k.currency
  FROM unnest(p_sources, p_tenants, p_customers, p_currencies) AS k(source_id, tenant_id, customer_id, currency)
  ORDER BY 1, 3, 4, 2
  ON CONFLICT (tenant_id, customer_id, currency, source_id) DO NOTHING;
  PERFORM FROM @extschema@.ltv_ledger_compacted l
  JOIN unnest(p_sources, p_tenants, p_customers, p_currencies) AS k(source_id, tenant_id, customer_id, currency)
    ON l.tenant_id = k.tenant_id AND l.source_id = k.source_id AND l.customer_id = k.customer_id AND l.currency = k.currency
  ORDER BY l.tenant_id, l.customer_id, l.currency, l.source_id
  FOR UPDATE OF l;
  WITH k AS (SELECT * FROM unnest(p_sources, p_tenants, p_customers, p_currencies) AS k(source_id, tenant_id, customer_id, currency)),
  agg AS (
    SELECT k.source_id, k.tenant_id, k.customer_id, k.currency, sum(d.gross) AS gross, sum(d.refunds) AS refunds,
           sum(d.payments) AS payments, sum(d.refund_count) AS refund_count,
           min(d.day) FILTER (WHERE d.payments > 0) AS first_on, max(d.day) FILTER (WHERE d.payments > 0) AS last_on
    FROM k LEFT JOIN @extschema@.ltv_daily_compacted d
      ON d.tenant_id = k.tenant_id AND d.source_id = k.source_id AND d.customer_id = k.customer_id AND d.currency = k.currency
    GROUP BY 1, 2, 3, 4),
  del AS (
    DELETE FROM @extschema@.ltv_ledger_compacted l USING agg
    WHERE agg.gross IS NULL AND l.tenant_id = agg.tenant_id AND l.source_id = agg.source_id
      AND l.customer_id = agg.customer_id AND l.currency = agg.currency)
  INSERT INTO @extschema@.ltv_ledger_compacted AS l (tenant_id, source_id, customer_id, currency, gross, refunds, net,
                                                     payments, refund_count, first_payment_on, last_payment_on)
  SELECT tenant_id, source_id, customer_id, currency, gross, refunds, gross - refunds, payments, refund_count, first_on, last_on
  FROM agg WHERE gross IS NOT NULL ORDER BY 1, 3, 4, 2
  ON CONFLICT (tenant_id, customer_id, currency, source_id) DO UPDATE
    SET gross = EXCLUDED.gross, refunds = EXCLUDED.refunds, net = EXCLUDED.net, payments = EXCLUDED.payments,
        refund_count = EXCLUDED.refund_count, first_payment_on = EXCLUDED.first_payment_on,
        last_payment_on = EXCLUDED.last_payment_on;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END
$$;

-- ---------------------------------------------------------------------------
-- Compaction: pending rows folded into the compacted series and ledger
-- ---------------------------------------------------------------------------
-- Compactions share this lock; a recomputation (ltv_track's backfill,
-- ltv_rebuild) takes it alone, so no compaction folds deltas it has counted.
CREATE FUNCTION @extschema@._ltv_compact_lock_key()
RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN 7310480513297725713;

-- Rounds: a compaction takes at most round_rows pending rows at a time,
-- and no more rows once a round's deltas take 16 MB as stored
-- (pg_column_size, which reads no value: a chunked statement's row is
-- about a round of its own), so no round's arrays near the 1 GB limit of a
-- value, or memory, however large the log has grown. It goes on until it
-- has folded as many rows as the log held when it began (rows appended
-- meanwhile wait for the next run) or a round finds none.
CREATE FUNCTION @extschema@.ltv_compact(source regclass DEFAULT NULL, round_rows integer DEFAULT 100000)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  sid bigint;
  n bigint;
  total bigint := 0;
  backlog bigint;
  rounds integer := 0;
  days @extschema@.ltv_daily_compacted[];
  kt uuid[]; ks bigint[]; kc text[]; kcu text[];
BEGIN
  IF round_rows IS NULL OR round_rows < 1 THEN
    RAISE EXCEPTION 'saas.ltv_compact: round_rows is %, not a positive number of pending rows', coalesce(round_rows::text, 'NULL')
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass the pending rows to fold per round (the default is 1000), or leave it out.';
  END IF;
  IF source IS NOT NULL THEN
    sid := (@extschema@._ltv_source(source, 'saas.ltv_compact')).source_id;
  END IF;
  PERFORM pg_advisory_xact_lock_shared(@extschema@._ltv_compact_lock_key());
  SELECT count(*) INTO backlog FROM @extschema@.ltv_pending q WHERE sid IS NULL OR q.source_id = sid;
  WHILE total < backlog LOOP
    -- Take pending rows no other compaction holds (SKIP LOCKED: two
    -- compactions never fold one row twice), summed per customer-day, in
    -- key order (two compactions lock rows in one order within a round).
    -- Rows locked here but left for the next round stay this one's.
    WITH taken AS (
      DELETE FROM @extschema@.ltv_pending x
      WHERE x.ctid = ANY (ARRAY(
        SELECT w.ctid FROM (
          SELECT l.ctid, l.size, sum(l.size) OVER (ROWS UNBOUNDED PRECEDING) AS upto
          FROM (SELECT q.ctid, pg_column_size(q.deltas)::bigint AS size FROM @extschema@.ltv_pending q
                WHERE sid IS NULL OR q.source_id = sid LIMIT round_rows FOR UPDATE SKIP LOCKED) l) w
        WHERE w.upto - w.size < 16777216))
      RETURNING x.tenant_id, x.source_id, x.deltas),
    d AS (
      SELECT x.tenant_id, x.source_id, e.customer_id, e.currency, e.day, sum(e.gross) AS g, sum(e.refunds) AS rf,
             sum(e.payments)::bigint AS p, sum(e.refund_count)::bigint AS rc
      FROM taken x CROSS JOIN LATERAL unnest(x.deltas) e
      GROUP BY 1, 2, 3, 4, 5)
    SELECT (SELECT count(*) FROM taken),
           array_agg(ROW(d.tenant_id, d.source_id, d.customer_id, d.currency, d.day, d.g, d.rf, d.p, d.rc)::@extschema@.ltv_daily_compacted
                     ORDER BY d.tenant_id, d.customer_id, d.currency, d.day, d.source_id)
    INTO n, days
    FROM d;
    EXIT WHEN n = 0;
    total := total + n;
    rounds := rounds + 1;
    RAISE DEBUG 'saas.ltv_compact: round % folded % pending rows', rounds, n;
    CONTINUE WHEN days IS NULL;
    -- The series; days left at zero go (a day may hold a part of its
    -- changes only, e.g. an amount's change folded before the payment: it
    -- stays).
    INSERT INTO @extschema@.ltv_daily_compacted AS x
    SELECT * FROM unnest(days)
    ON CONFLICT (tenant_id, customer_id, currency, day, source_id) DO UPDATE
      SET gross = x.gross + EXCLUDED.gross, refunds = x.refunds + EXCLUDED.refunds,
          payments = x.payments + EXCLUDED.payments, refund_count = x.refund_count + EXCLUDED.refund_count;
    DELETE FROM @extschema@.ltv_daily_compacted x
    USING unnest(days) k
    WHERE x.tenant_id = k.tenant_id AND x.customer_id = k.customer_id AND x.currency = k.currency
      AND x.day = k.day AND x.source_id = k.source_id
      AND x.payments = 0 AND x.refund_count = 0 AND x.gross = 0 AND x.refunds = 0;
    -- The ledger of every touched customer from its compacted series. Not
    -- by delta: concurrent compactions fold disjoint parts of the log in
    -- any order (a deletion can be folded before the insertion it undoes),
    -- so the compacted series may pass through days of negative counts,
    -- and first and last payment are only right when read from the series.
    -- The ledger rows are locked before the series is read
    -- (_ltv_ledger_refresh): of two compactions touching a customer, the
    -- later sees the earlier.
    SELECT array_agg(k.source_id ORDER BY k.tenant_id, k.customer_id, k.currency, k.source_id),
           array_agg(k.tenant_id ORDER BY k.tenant_id, k.customer_id, k.currency, k.source_id),
           array_agg(k.customer_id ORDER BY k.tenant_id, k.customer_id, k.currency, k.source_id),
           array_agg(k.currency ORDER BY k.tenant_id, k.customer_id, k.currency, k.source_id)
    INTO ks, kt, kc, kcu
    FROM (SELECT DISTINCT u.source_id, u.tenant_id, u.customer_id, u.currency FROM unnest(days) u) k;
    PERFORM @extschema@._ltv_ledger_refresh(ks, kt, kc, kcu);
  END LOOP;
  RETURN total;
END
$$;
COMMENT ON FUNCTION @extschema@.ltv_compact(regclass, integer) IS
  'Folds the pending changes of one tracked table (NULL: all) into the compacted ledger and daily series, in rounds of at most round_rows pending rows (and 16 MB of stored deltas); returns the pending rows folded. Reads are exact before and after; run_maintenance runs it.';

-- run_maintenance's full pass compacts every source, after giving every
-- relation of each tracked tree its triggers (a partition another tool
-- attached from inside a function, which the ATTACH event trigger cannot
-- tell from a restore's ALTER TABLE, gets them here).
CREATE FUNCTION @extschema@._ltv_maintenance(p_now timestamptz)
RETURNS TABLE (parent_table regclass, action text, partition_name text, detail text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  n bigint;
BEGIN
  PERFORM @extschema@._ltv_sync_triggers(s.source_id) FROM @extschema@.ltv_sources s ORDER BY s.source_id;
  n := @extschema@.ltv_compact(NULL);
  IF n > 0 THEN
    parent_table := '@extschema@.ltv_pending'::regclass; action := 'compact'; partition_name := NULL;
    detail := format('pending rows folded into the ledger: %s', n);
    RETURN NEXT;
  END IF;
END
$$;
INSERT INTO @extschema@.maintenance_tasks (task, module, function_name, run_order, reports_as)
VALUES ('ltv_compact', 'ltv', '_ltv_maintenance', 50, 'ltv_pending');

-- The trigger function (declared by pgrx) reads the registry and writes the
-- pending log as the extension's owner, whoever changes the payments.
ALTER FUNCTION @extschema@._ltv_capture() SECURITY DEFINER SET search_path = pg_catalog, pg_temp;

-- The three statement triggers of one relation of a tracked table (the
-- table, and every partition: statement triggers fire only on the table a
-- statement names, so each relation counts its own statements once).
CREATE FUNCTION @extschema@._ltv_create_triggers(rel regclass, p_source bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = rel AND tgname = 'saas_ltv_insert') THEN
    EXECUTE format('CREATE TRIGGER saas_ltv_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS ltv_new
                    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._ltv_capture(%L)', rel, p_source);
  END IF;
  IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = rel AND tgname = 'saas_ltv_update') THEN
    EXECUTE format('CREATE TRIGGER saas_ltv_update AFTER UPDATE ON %s REFERENCING OLD TABLE AS ltv_old NEW TABLE AS ltv_new
                    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._ltv_capture(%L)', rel, p_source);
  END IF;
  IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = rel AND tgname = 'saas_ltv_delete') THEN
    EXECUTE format('CREATE TRIGGER saas_ltv_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS ltv_old
                    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._ltv_capture(%L)', rel, p_source);
  END IF;
END
$$;

-- The ltv triggers there are: relation, trigger name, source.
CREATE FUNCTION @extschema@._ltv_triggers()
RETURNS TABLE (rel regclass, tgname name, source_id bigint)
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT g.tgrelid::regclass, g.tgname,
         convert_from(substring(g.tgargs FROM 1 FOR position('\x00'::bytea IN g.tgargs) - 1), 'UTF8')::bigint
  FROM pg_trigger g
  WHERE g.tgfoid = '@extschema@._ltv_capture()'::regprocedure AND g.tgnargs = 1
$$;

-- Triggers every relation of a source's tree has; drops those of
-- relations that left it (DETACH PARTITION) or of a source that is gone.
CREATE FUNCTION @extschema@._ltv_sync_triggers(p_source bigint)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  root regclass := (SELECT relid FROM @extschema@.ltv_sources WHERE source_id = p_source);
  r record;
BEGIN
  FOR r IN SELECT t.rel, t.tgname FROM @extschema@._ltv_triggers() t
           WHERE t.source_id = p_source
             AND (root IS NULL OR coalesce(pg_partition_root(t.rel), t.rel) IS DISTINCT FROM root)
           ORDER BY t.rel::text, t.tgname LOOP
    EXECUTE format('DROP TRIGGER %I ON %s', r.tgname, r.rel);
  END LOOP;
  IF root IS NOT NULL THEN
    PERFORM @extschema@._ltv_create_triggers(root, p_source);
    FOR r IN WITH RECURSIVE tree(relid) AS (
               SELECT root::oid
               UNION ALL
               SELECT i.inhrelid FROM tree t JOIN pg_inherits i ON i.inhparent = t.relid)
             SELECT tree.relid::regclass AS rel FROM tree WHERE tree.relid <> root ORDER BY 1::text LOOP
      PERFORM @extschema@._ltv_create_triggers(r.rel, p_source);
    END LOOP;
  END IF;
END
$$;

-- A new partition of a tracked table gets the triggers (partition
-- maintenance and CREATE TABLE ... PARTITION OF, through the partitions
-- module's hooks).
CREATE FUNCTION @extschema@._ltv_partition_hook(parent regclass, part regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  sid bigint;
BEGIN
  SELECT s.source_id INTO sid FROM @extschema@.ltv_sources s WHERE s.relid = coalesce(pg_partition_root(part), parent);
  IF FOUND THEN
    PERFORM @extschema@._ltv_create_triggers(part, sid);
  END IF;
END
$$;
INSERT INTO @extschema@.partition_hooks (hook_name, hook, builtin)
VALUES ('ltv', '@extschema@._ltv_partition_hook(regclass, regclass)', true);

-- ATTACH and DETACH PARTITION (which run no partition hooks: see
-- partitions.sql): a tracked tree's relations get the triggers on ATTACH,
-- and any ALTER TABLE drops those of relations that left a tracked tree.
-- Only a statement that attaches makes triggers: pg_restore's other ALTER
-- TABLEs (constraints, after the registry's rows are back) must not make
-- what the dump then creates. When a dump attaches partitions the registry
-- is still empty (its rows come with the data).
CREATE FUNCTION @extschema@._ltv_on_alter_table()
RETURNS event_trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  sid bigint;
BEGIN
  IF NOT EXISTS (SELECT FROM @extschema@.ltv_sources) THEN
    RETURN;
  END IF;
  FOR sid IN SELECT DISTINCT s.source_id
             FROM pg_event_trigger_ddl_commands() c
             JOIN pg_class r ON r.oid = c.objid AND r.relkind IN ('r', 'p')
             JOIN @extschema@.ltv_sources s ON s.relid = coalesce(pg_partition_root(c.objid), c.objid)
             WHERE c.object_type = 'table' AND current_query() ~* '\mattach\s+partition\M'
             UNION
             SELECT t.source_id FROM @extschema@._ltv_triggers() t
             JOIN @extschema@.ltv_sources s USING (source_id)
             WHERE coalesce(pg_partition_root(t.rel), t.rel) <> s.relid
             ORDER BY 1 LOOP
    PERFORM @extschema@._ltv_sync_triggers(sid);
  END LOOP;
END
$$;
CREATE EVENT TRIGGER saas_ltv_partitions ON ddl_command_end
  WHEN TAG IN ('ALTER TABLE')
  EXECUTE FUNCTION @extschema@._ltv_on_alter_table();

-- A source's row by table, or a specific error.
CREATE FUNCTION @extschema@._ltv_source(source regclass, fn text)
RETURNS @extschema@.ltv_sources
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  s @extschema@.ltv_sources;
BEGIN
  IF source IS NULL THEN
    RAISE EXCEPTION '%: the table may not be NULL', fn
      USING ERRCODE = 'null_value_not_allowed', HINT = format('Pass a table tracked by saas.ltv_track, e.g. %s(''app.payments'').', fn);
  END IF;
  SELECT * INTO s FROM @extschema@.ltv_sources WHERE relid = source;
  IF NOT FOUND THEN
    RAISE EXCEPTION '"%" is not tracked by saas.ltv_track', source
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = format('Track it first: SELECT saas.ltv_track(%L, ...). Tracked tables: %s.', source::text,
                          coalesce((SELECT string_agg(relid::text, ', ' ORDER BY relid::text) FROM @extschema@.ltv_sources), 'none'));
  END IF;
  RETURN s;
END
$$;

-- ---------------------------------------------------------------------------
-- ltv_track / ltv_untrack
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.ltv_track(
  source regclass,
  customer_column name DEFAULT 'customer_id',
  amount_column name DEFAULT 'amount',
  occurred_at_column name DEFAULT 'occurred_at',
  kind_column name DEFAULT NULL,
  refund_kinds text[] DEFAULT '{refund}',
  currency_column name DEFAULT NULL,
  default_currency text DEFAULT 'XXX',
  tenant_column name DEFAULT 'tenant_id')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  s @extschema@.ltv_sources;
  t regtype;
  time_type text;
  n bigint;
BEGIN
  PERFORM @extschema@._ltv_require_table(source, 'saas.ltv_track');
  IF EXISTS (SELECT FROM @extschema@.ltv_sources WHERE relid = source) THEN
    RAISE EXCEPTION '"%" is tracked already', source
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = format('To change its columns: SELECT saas.ltv_untrack(%L); then ltv_track again (the ledger is rebuilt).', source::text);
  END IF;
  t := @extschema@._ltv_column(source, tenant_column, 'tenant id', 'saas.ltv_track');
  PERFORM @extschema@._ltv_require_type(source, tenant_column, t, ARRAY['uuid'::regtype], 'uuid',
    'The ledger is per tenant: name the uuid tenant column (tenant_column => ...).');
  t := @extschema@._ltv_column(source, customer_column, 'customer', 'saas.ltv_track');
  t := @extschema@._ltv_column(source, amount_column, 'amount', 'saas.ltv_track');
  PERFORM @extschema@._ltv_require_type(source, amount_column, t,
    ARRAY['numeric', 'int2', 'int4', 'int8']::regtype[], 'numeric',
    'Amounts are money: numeric (or an integer of minor units). float and money columns are refused: convert with ALTER TABLE ... TYPE numeric.');
  t := @extschema@._ltv_column(source, occurred_at_column, 'payment time', 'saas.ltv_track');
  PERFORM @extschema@._ltv_require_type(source, occurred_at_column, t,
    ARRAY['timestamptz', 'timestamp', 'date']::regtype[], 'temporal',
    'Name the timestamptz, timestamp or date column of the payment time.');
  time_type := CASE WHEN t = 'timestamptz'::regtype OR (SELECT typbasetype FROM pg_type WHERE oid = t) = 'timestamptz'::regtype THEN 'timestamptz'
                    WHEN t = 'timestamp'::regtype OR (SELECT typbasetype FROM pg_type WHERE oid = t) = 'timestamp'::regtype THEN 'timestamp'
                    ELSE 'date' END;
  IF kind_column IS NOT NULL THEN
    t := @extschema@._ltv_column(source, kind_column, 'payment kind', 'saas.ltv_track');
    IF NOT (t IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype, 'name'::regtype)
            OR (SELECT typtype FROM pg_type WHERE oid = t) = 'e') THEN
      RAISE EXCEPTION 'column "%" of "%" is %, not a text or enum column', kind_column, source, format_type(t, NULL)
        USING ERRCODE = 'datatype_mismatch',
              HINT = 'The kind column tells payments from refunds by value (refund_kinds); omit it to treat negative amounts as refunds.';
    END IF;
    IF refund_kinds IS NULL OR cardinality(refund_kinds) = 0 OR array_position(refund_kinds, NULL) IS NOT NULL THEN
      RAISE EXCEPTION 'saas.ltv_track: refund_kinds must list at least one kind, without NULLs'
        USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. refund_kinds => ''{refund,chargeback}''.';
    END IF;
  END IF;
  IF currency_column IS NOT NULL THEN
    t := @extschema@._ltv_column(source, currency_column, 'currency', 'saas.ltv_track');
    PERFORM @extschema@._ltv_require_type(source, currency_column, t,
      ARRAY['text', 'varchar', 'bpchar']::regtype[], 'text',
      'The currency column holds a code such as ''EUR'' (text, varchar or char).');
  END IF;
  IF default_currency IS NULL OR char_length(default_currency) NOT BETWEEN 1 AND 16 THEN
    RAISE EXCEPTION 'saas.ltv_track: default_currency must be 1 to 16 characters'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'An ISO 4217 code such as ''EUR''; ''XXX'' (the default) means no currency.';
  END IF;

  INSERT INTO @extschema@.ltv_sources (relid, tenant_column, customer_column, amount_column, occurred_at_column,
                                       occurred_at_type, kind_column, refund_kinds, currency_column, default_currency)
  VALUES (source, tenant_column, customer_column, amount_column, occurred_at_column, time_type, kind_column,
          coalesce(refund_kinds, '{refund}'), currency_column, default_currency)
  RETURNING * INTO s;
  -- CREATE TRIGGER locks out writers until commit, so the backfill below
  -- and the triggers together see every row exactly once. The table and
  -- every partition get them (DML naming a partition fires only its own).
  PERFORM @extschema@._ltv_sync_triggers(s.source_id);
  n := @extschema@._ltv_recompute(s, NULL);
  RETURN jsonb_build_object('table', source::text, 'source_id', s.source_id, 'customers', n);
END
$$;
COMMENT ON FUNCTION @extschema@.ltv_track(regclass, name, name, name, name, text[], name, text, name) IS
  'Tracks a payments table (plain or partitioned): statement triggers on it and every partition log each change in the same transaction (saas.ltv_pending), read exactly through saas.ltv_ledger and saas.ltv_daily; existing rows are counted at once.';

-- Recomputes the series and ledger of one source from the table, for the
-- customers keys name (NULL: all), into the compacted tables. Pending
-- deltas of the source are folded first, and no compaction runs meanwhile,
-- so the result counts every row once. The caller keeps writers out (the
-- table locked). Returns the ledger rows written.
CREATE FUNCTION @extschema@._ltv_recompute(s @extschema@.ltv_sources, keys jsonb)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  filter text := '';
  n bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(@extschema@._ltv_compact_lock_key());
  PERFORM @extschema@.ltv_compact(s.relid);
  IF keys IS NOT NULL THEN
    filter := 'WHERE (tenant_id, customer_id) IN (SELECT (k->>0)::uuid, k->>1 FROM jsonb_array_elements($2) k)';
  END IF;
  EXECUTE format('DELETE FROM @extschema@.ltv_daily_compacted WHERE source_id = $1 %s', replace(filter, 'WHERE', 'AND'))
    USING s.source_id, keys;
  EXECUTE format('DELETE FROM @extschema@.ltv_ledger_compacted WHERE source_id = $1 %s', replace(filter, 'WHERE', 'AND'))
    USING s.source_id, keys;
  EXECUTE format(
    'INSERT INTO @extschema@.ltv_daily_compacted (tenant_id, source_id, customer_id, currency, day, gross, refunds, payments, refund_count)
     SELECT tenant_id, $1, customer_id, currency, day, sum(gross), sum(refunds), sum(payments), sum(refund_count)
     FROM (%s) ch %s GROUP BY 1, 3, 4, 5', @extschema@._ltv_changes_sql(s, 'ALL'), filter)
    USING s.source_id, keys;
  EXECUTE format(
    'INSERT INTO @extschema@.ltv_ledger_compacted (tenant_id, source_id, customer_id, currency, gross, refunds, net,
                                                   payments, refund_count, first_payment_on, last_payment_on)
     SELECT tenant_id, $1, customer_id, currency, sum(gross), sum(refunds), sum(gross) - sum(refunds),
            sum(payments), sum(refund_count), min(day) FILTER (WHERE payments > 0), max(day) FILTER (WHERE payments > 0)
     FROM @extschema@.ltv_daily_compacted WHERE source_id = $1 %s GROUP BY 1, 3, 4', replace(filter, 'WHERE', 'AND'))
    USING s.source_id, keys;
  GET DIAGNOSTICS n = ROW_COUNT;
  RETURN n;
END
$$;

CREATE FUNCTION @extschema@.ltv_untrack(source regclass)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  s @extschema@.ltv_sources;
BEGIN
  s := @extschema@._ltv_source(source, 'saas.ltv_untrack');
  DELETE FROM @extschema@.ltv_sources WHERE source_id = s.source_id;
  -- every relation's (the table's, its partitions', detached ones')
  PERFORM @extschema@._ltv_sync_triggers(s.source_id);
  RETURN true;
END
$$;
COMMENT ON FUNCTION @extschema@.ltv_untrack(regclass) IS
  'Stops tracking a payments table: drops its triggers (and its partitions'') and its ledger, series and pending rows.';

-- A source leaving the registry (ltv_untrack, or its table dropped) takes
-- its ledger, series and pending rows with it.
CREATE FUNCTION @extschema@._ltv_sources_forget()
RETURNS trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  DELETE FROM @extschema@.ltv_daily_compacted d USING ltv_gone g WHERE d.source_id = g.source_id;
  DELETE FROM @extschema@.ltv_ledger_compacted l USING ltv_gone g WHERE l.source_id = g.source_id;
  DELETE FROM @extschema@.ltv_pending p USING ltv_gone g WHERE p.source_id = g.source_id;
  RETURN NULL;
END
$$;
CREATE TRIGGER ltv_sources_forget AFTER DELETE ON @extschema@.ltv_sources
  REFERENCING OLD TABLE AS ltv_gone FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._ltv_sources_forget();

-- ---------------------------------------------------------------------------
-- ltv_reconcile / ltv_rebuild
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.ltv_reconcile(source regclass)
RETURNS TABLE (tenant_id uuid, customer_id text, currency text, ledger_net numeric, expected_net numeric,
               ledger_payments bigint, expected_payments bigint, problem text)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  s @extschema@.ltv_sources;
BEGIN
  s := @extschema@._ltv_source(source, 'saas.ltv_reconcile');
  RETURN QUERY EXECUTE format(
    'WITH want AS (
       SELECT tenant_id, customer_id, currency, day, sum(gross) g, sum(refunds) rf, sum(payments) p, sum(refund_count) rc
       FROM (%s) ch GROUP BY 1, 2, 3, 4 HAVING sum(payments) <> 0 OR sum(refund_count) <> 0),
     have AS (SELECT d.tenant_id, d.customer_id, d.currency, d.day, d.gross g, d.refunds rf, d.payments p, d.refund_count rc
              FROM @extschema@.ltv_daily d WHERE d.source_id = $1),
     bad_days AS (
       SELECT coalesce(w.tenant_id, h.tenant_id) tenant_id, coalesce(w.customer_id, h.customer_id) customer_id,
              coalesce(w.currency, h.currency) currency
       FROM want w FULL JOIN have h USING (tenant_id, customer_id, currency, day)
       WHERE (w.g, w.rf, w.p, w.rc) IS DISTINCT FROM (h.g, h.rf, h.p, h.rc)),
     want_l AS (SELECT tenant_id, customer_id, currency, sum(g) - sum(rf) net, sum(p)::bigint payments,
                       min(day) FILTER (WHERE p > 0) f, max(day) FILTER (WHERE p > 0) la
                FROM want GROUP BY 1, 2, 3),
     have_l AS (SELECT l.tenant_id, l.customer_id, l.currency, l.net, l.payments, l.first_payment_on f, l.last_payment_on la
                FROM @extschema@.ltv_ledger l WHERE l.source_id = $1),
     bad_ledger AS (
       SELECT coalesce(w.tenant_id, h.tenant_id) tenant_id, coalesce(w.customer_id, h.customer_id) customer_id,
              coalesce(w.currency, h.currency) currency
       FROM want_l w FULL JOIN have_l h USING (tenant_id, customer_id, currency)
       WHERE (w.net, w.payments, w.f, w.la) IS DISTINCT FROM (h.net, h.payments, h.f, h.la)),
     bad AS (SELECT DISTINCT * FROM (SELECT *, ''daily series differs'' problem FROM bad_days
                                     UNION ALL SELECT *, ''ledger differs'' FROM bad_ledger) b)
     SELECT b.tenant_id, b.customer_id, b.currency, h.net, w.net, h.payments, w.payments,
            string_agg(b.problem, '', '' ORDER BY b.problem)
     FROM bad b
     LEFT JOIN want_l w USING (tenant_id, customer_id, currency)
     LEFT JOIN have_l h USING (tenant_id, customer_id, currency)
     GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3', @extschema@._ltv_changes_sql(s, 'ALL'))
    USING s.source_id;
END
$$;
COMMENT ON FUNCTION @extschema@.ltv_reconcile(regclass) IS
  'Every customer whose ledger or daily series differs from a full recomputation from the table (changes that bypassed triggers: TRUNCATE, DETACH/DROP PARTITION, session_replication_role = replica, writes straight into a partition).';

-- Recomputes a source in batches of customers, committing after each batch
-- (so CALL it outside a transaction block; no SET clause for that reason,
-- every name is qualified); writers of the table wait only
-- for the batch in progress (SHARE lock, then released at its commit).
CREATE PROCEDURE @extschema@.ltv_rebuild(source regclass, batch_customers integer DEFAULT 1000)
LANGUAGE plpgsql
AS $$
DECLARE
  s @extschema@.ltv_sources;
  keys jsonb;
  after_tenant uuid;
  after_customer text := '';
  total bigint := 0;
BEGIN
  s := @extschema@._ltv_source(source, 'saas.ltv_rebuild');
  IF batch_customers IS NULL OR batch_customers < 1 THEN
    RAISE EXCEPTION 'saas.ltv_rebuild: batch_customers must be at least 1'
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'E.g. CALL saas.ltv_rebuild(''app.payments'', 1000).';
  END IF;
  LOOP
    EXECUTE format('LOCK TABLE %s IN SHARE MODE', source);
    -- the next batch of customers, from the table and the ledger
    EXECUTE format(
      'SELECT jsonb_agg(jsonb_build_array(t, c) ORDER BY t, c) FROM (
         SELECT t, c FROM (
           SELECT %I AS t, %I::text AS c FROM %s WHERE %I IS NOT NULL AND %I IS NOT NULL
           UNION SELECT tenant_id, customer_id FROM @extschema@.ltv_ledger WHERE source_id = $1) u
         WHERE $2::uuid IS NULL OR (t, c) > ($2, $3) ORDER BY t, c LIMIT $4) b',
      s.tenant_column, s.customer_column, source, s.tenant_column, s.customer_column)
      INTO keys USING s.source_id, after_tenant, after_customer, batch_customers;
    EXIT WHEN keys IS NULL;
    PERFORM @extschema@._ltv_recompute(s, keys);
    total := total + jsonb_array_length(keys);
    after_tenant := (keys->-1->>0)::uuid;
    after_customer := keys->-1->>1;
    COMMIT;
  END LOOP;
  RAISE NOTICE 'saas.ltv_rebuild: % customers of % recomputed', total, source;
END
$$;
COMMENT ON PROCEDURE @extschema@.ltv_rebuild(regclass, integer) IS
  'Recomputes the ledger and daily series of a tracked table from its rows, batch_customers customers per transaction.';

-- ---------------------------------------------------------------------------
-- ltv_summary: lifetimes' summary_data_from_transaction_data, from the series
-- ---------------------------------------------------------------------------
-- Whole days of a period interval, or a specific error.
CREATE FUNCTION @extschema@._ltv_period_days(period interval, what text, fn text)
RETURNS integer
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF period IS NULL THEN
    RAISE EXCEPTION '%: % may not be NULL', fn, what
      USING ERRCODE = 'null_value_not_allowed', HINT = format('E.g. %s => ''7 days''.', what);
  END IF;
  IF period <= interval '0' THEN
    RAISE EXCEPTION '%: % must be positive, not %', fn, what, period
      USING ERRCODE = 'numeric_value_out_of_range', HINT = format('E.g. %s => ''1 day'' or ''7 days''.', what);
  END IF;
  IF extract(month FROM period) <> 0 OR extract(year FROM period) <> 0
     OR period - justify_hours(date_trunc('day', period)) <> interval '0'
     OR extract(hour FROM period) <> 0 OR extract(minute FROM period) <> 0 OR extract(second FROM period) <> 0 THEN
    RAISE EXCEPTION '%: % must be a whole number of days, not %', fn, what, period
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'The series is daily: use days (''1 day'', ''7 days'', ''30 days''); months vary in length.';
  END IF;
  IF extract(day FROM period) > 36500 THEN
    RAISE EXCEPTION '%: % of % is too long', fn, what, period
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Use at most 36500 days.';
  END IF;
  RETURN extract(day FROM period)::integer;
END
$$;

CREATE FUNCTION @extschema@.ltv_summary(
  period interval DEFAULT '1 day',
  observation_end timestamptz DEFAULT now())
RETURNS TABLE (customer_id text, currency text, frequency bigint, recency numeric, "T" numeric, monetary_value numeric)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
-- The series read in key order, aggregated as it streams: a hash of every
-- customer-day would spill to disk for large tenants.
SET enable_hashagg = off
AS $$
DECLARE
  k integer := @extschema@._ltv_period_days(period, 'period', 'saas.ltv_summary');
  e date;
BEGIN
  IF observation_end IS NULL THEN
    RAISE EXCEPTION 'saas.ltv_summary: observation_end may not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Omit it for now(), or pass a timestamptz.';
  END IF;
  IF NOT isfinite(observation_end) THEN
    RAISE EXCEPTION 'saas.ltv_summary: observation_end must be finite'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Omit it for now(), or pass a real time.';
  END IF;
  e := (observation_end AT TIME ZONE 'UTC')::date;
  -- Purchase days: days with a payment (all sources summed), up to the
  -- observation end's UTC day; the value of a day is its net.
  RETURN QUERY
  WITH days AS (
    SELECT d.customer_id, d.currency, d.day, sum(d.gross - d.refunds) AS net
    FROM @extschema@._ltv_daily_rows d
    WHERE d.tenant_id = (SELECT @extschema@.current_tenant()) AND d.day <= e
    GROUP BY 1, 2, 3 HAVING sum(d.payments) > 0),
  c AS (
    -- min() of [day number, net] is the first day's pair: no sort per customer
    SELECT x.customer_id, x.currency, count(*) - 1 AS freq, min(x.day) AS f, max(x.day) AS l, sum(x.net) AS total,
           (min(ARRAY[(x.day - date '2000-01-01')::numeric, x.net]))[2] AS first_net
    FROM days x GROUP BY 1, 2)
  SELECT c.customer_id, c.currency, c.freq, trim_scale((c.l - c.f)::numeric / k), trim_scale((e - c.f)::numeric / k),
         trim_scale(CASE WHEN c.freq = 0 THEN 0 ELSE (c.total - c.first_net) / c.freq END)
  FROM c ORDER BY 1, 2;
END
$$;
COMMENT ON FUNCTION @extschema@.ltv_summary(interval, timestamptz) IS
  'Per customer and currency of the current tenant: frequency (repeat purchase days), recency, T and monetary value in periods of whole days, as lifetimes.utils.summary_data_from_transaction_data(freq=''D'', freq_multiplier=days), from the daily series.';

-- ---------------------------------------------------------------------------
-- Subscriptions and revenue metrics
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.ltv_track_subscriptions(
  source regclass,
  customer_column name DEFAULT 'customer_id',
  mrr_column name DEFAULT 'mrr',
  started_at_column name DEFAULT 'started_at',
  ended_at_column name DEFAULT 'ended_at',
  status_column name DEFAULT NULL,
  excluded_statuses text[] DEFAULT '{trialing,incomplete,incomplete_expired}',
  currency_column name DEFAULT NULL,
  default_currency text DEFAULT 'XXX',
  tenant_column name DEFAULT 'tenant_id')
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t regtype;
BEGIN
  PERFORM @extschema@._ltv_require_table(source, 'saas.ltv_track_subscriptions');
  IF EXISTS (SELECT FROM @extschema@.ltv_subscription_sources WHERE relid = source) THEN
    RAISE EXCEPTION '"%" is registered already', source
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = format('To change its columns: SELECT saas.ltv_untrack_subscriptions(%L); then register it again.', source::text);
  END IF;
  t := @extschema@._ltv_column(source, tenant_column, 'tenant id', 'saas.ltv_track_subscriptions');
  PERFORM @extschema@._ltv_require_type(source, tenant_column, t, ARRAY['uuid'::regtype], 'uuid',
    'Metrics are per tenant: name the uuid tenant column (tenant_column => ...).');
  t := @extschema@._ltv_column(source, customer_column, 'customer', 'saas.ltv_track_subscriptions');
  t := @extschema@._ltv_column(source, mrr_column, 'monthly amount', 'saas.ltv_track_subscriptions');
  PERFORM @extschema@._ltv_require_type(source, mrr_column, t, ARRAY['numeric', 'int2', 'int4', 'int8']::regtype[], 'numeric',
    'The monthly amount is money: numeric. For a yearly plan price add a generated column: mrr numeric GENERATED ALWAYS AS (price / 12) STORED.');
  t := @extschema@._ltv_column(source, started_at_column, 'start', 'saas.ltv_track_subscriptions');
  PERFORM @extschema@._ltv_require_type(source, started_at_column, t, ARRAY['timestamptz', 'timestamp', 'date']::regtype[], 'temporal',
    'Name the timestamptz, timestamp or date column of the start.');
  t := @extschema@._ltv_column(source, ended_at_column, 'end or cancellation', 'saas.ltv_track_subscriptions');
  PERFORM @extschema@._ltv_require_type(source, ended_at_column, t, ARRAY['timestamptz', 'timestamp', 'date']::regtype[], 'temporal',
    'Name the timestamptz, timestamp or date column of the end (NULL while active).');
  IF status_column IS NOT NULL THEN
    t := @extschema@._ltv_column(source, status_column, 'status', 'saas.ltv_track_subscriptions');
    IF NOT (t IN ('text'::regtype, 'varchar'::regtype, 'bpchar'::regtype) OR (SELECT typtype FROM pg_type WHERE oid = t) = 'e') THEN
      RAISE EXCEPTION 'column "%" of "%" is %, not a text or enum column', status_column, source, format_type(t, NULL)
        USING ERRCODE = 'datatype_mismatch', HINT = 'The status column holds values such as ''active'' or ''trialing''.';
    END IF;
  END IF;
  IF currency_column IS NOT NULL THEN
    t := @extschema@._ltv_column(source, currency_column, 'currency', 'saas.ltv_track_subscriptions');
    PERFORM @extschema@._ltv_require_type(source, currency_column, t, ARRAY['text', 'varchar', 'bpchar']::regtype[], 'text',
      'The currency column holds a code such as ''EUR'' (text, varchar or char).');
  END IF;
  IF default_currency IS NULL OR char_length(default_currency) NOT BETWEEN 1 AND 16 THEN
    RAISE EXCEPTION 'saas.ltv_track_subscriptions: default_currency must be 1 to 16 characters'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'An ISO 4217 code such as ''EUR''; ''XXX'' (the default) means no currency.';
  END IF;
  INSERT INTO @extschema@.ltv_subscription_sources (relid, tenant_column, customer_column, mrr_column, started_at_column,
    ended_at_column, status_column, excluded_statuses, currency_column, default_currency)
  VALUES (source, tenant_column, customer_column, mrr_column, started_at_column, ended_at_column, status_column,
          coalesce(excluded_statuses, '{}'), currency_column, default_currency);
  RETURN jsonb_build_object('table', source::text);
END
$$;
COMMENT ON FUNCTION @extschema@.ltv_track_subscriptions(regclass, name, name, name, name, name, text[], name, text, name) IS
  'Registers a subscriptions table (customer, monthly amount, start, end, status, currency) for saas.revenue_metrics().';

CREATE FUNCTION @extschema@.ltv_untrack_subscriptions(source regclass)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  DELETE FROM @extschema@.ltv_subscription_sources WHERE relid = source;
  IF NOT FOUND THEN
    RAISE EXCEPTION '"%" is not a registered subscriptions table', coalesce(source::text, 'NULL')
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'See saas.ltv_subscription_sources for the registered tables.';
  END IF;
  RETURN true;
END
$$;

-- The current tenant's subscriptions from every registered table, as SQL
-- (customer_id, currency, mrr, started_at, ended_at); the caller runs it
-- with its own privileges. Definer only to read the registry.
CREATE FUNCTION @extschema@._ltv_subscriptions_sql()
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  parts text[] := '{}';
  r @extschema@.ltv_subscription_sources;
BEGIN
  FOR r IN SELECT * FROM @extschema@.ltv_subscription_sources ORDER BY relid::text LOOP
    parts := parts || format(
      'SELECT %I::text AS customer_id, %s AS currency, %I::numeric AS mrr, %I::timestamptz AS started_at, %I::timestamptz AS ended_at
       FROM %s WHERE %I = (SELECT @extschema@.current_tenant()) AND %I IS NOT NULL AND %I IS NOT NULL AND %I > 0%s',
      r.customer_column,
      CASE WHEN r.currency_column IS NULL THEN format('%L::text', r.default_currency)
           ELSE format('coalesce(%I::text, %L)', r.currency_column, r.default_currency) END,
      r.mrr_column, r.started_at_column, r.ended_at_column, r.relid, r.tenant_column,
      r.customer_column, r.started_at_column, r.mrr_column,
      CASE WHEN r.status_column IS NULL OR cardinality(r.excluded_statuses) = 0 THEN ''
           ELSE format(' AND %I::text <> ALL (%L::text[])', r.status_column, r.excluded_statuses) END);
  END LOOP;
  IF cardinality(parts) = 0 THEN
    RAISE EXCEPTION 'no subscriptions table is registered'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Register one: SELECT saas.ltv_track_subscriptions(''app.subscriptions'', ...).';
  END IF;
  RETURN array_to_string(parts, ' UNION ALL ');
END
$$;

-- from/to/bucket checks shared by revenue_metrics.
CREATE FUNCTION @extschema@._ltv_check_range(p_from timestamptz, p_to timestamptz, p_bucket interval, fn text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF p_from IS NULL OR p_to IS NULL OR p_bucket IS NULL THEN
    RAISE EXCEPTION '%: from, to and bucket may not be NULL', fn
      USING ERRCODE = 'null_value_not_allowed', HINT = format('E.g. %s(''2026-01-01'', ''2027-01-01'', ''1 month'').', fn);
  END IF;
  IF p_from > p_to THEN
    RAISE EXCEPTION '%: from (%) is after to (%)', fn, p_from, p_to
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the earlier time first.';
  END IF;
  IF p_bucket <= interval '0' OR p_bucket > interval '100 years' THEN
    RAISE EXCEPTION '%: bucket must be positive and at most 100 years, not %', fn, p_bucket
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'E.g. bucket => ''1 month''.';
  END IF;
  IF NOT isfinite(p_from) OR NOT isfinite(p_to) THEN
    RAISE EXCEPTION '%: from and to must be finite', fn
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass real times, e.g. ''2026-01-01'' and ''2027-01-01''.';
  END IF;
  IF p_from + p_bucket * 10000 < p_to THEN
    RAISE EXCEPTION '%: more than 10000 buckets of % between % and %', fn, p_bucket, p_from, p_to
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Use a longer bucket or a shorter range.';
  END IF;
END
$$;

-- ChartMogul's MRR movements per bucket [start, end): at every start or end
-- of a customer's subscriptions, its MRR just before and at that point,
-- classified by saas._mrr_movement (src/ltv/mrr.rs).
CREATE FUNCTION @extschema@.revenue_metrics(
  "from" timestamptz,
  "to" timestamptz,
  bucket interval DEFAULT '1 month')
RETURNS TABLE (bucket_start timestamptz, bucket_end timestamptz, currency text,
               starting_mrr numeric, new_mrr numeric, expansion_mrr numeric, contraction_mrr numeric,
               churned_mrr numeric, reactivated_mrr numeric, net_new_mrr numeric, mrr numeric,
               starting_customers bigint, new_customers bigint, churned_customers bigint, customers bigint,
               logo_churn_rate numeric, gross_revenue_churn_rate numeric, net_revenue_churn_rate numeric,
               nrr numeric, arpa numeric)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM @extschema@._ltv_check_range("from", "to", bucket, 'saas.revenue_metrics');
  RETURN QUERY EXECUTE format($q$
    WITH s AS MATERIALIZED (%s),
    b AS (SELECT g AS b0, LEAST(g + $3, $2) AS b1 FROM generate_series($1, $2 - interval '1 microsecond', $3) g),
    cur AS (SELECT DISTINCT s.currency FROM s),
    -- MRR and paying customers just before each bucket edge: the state in
    -- force then (every subscription counted has a positive amount)
    edges AS (SELECT b.b0 AS x FROM b UNION SELECT b.b1 FROM b),
    at_edge AS (
      SELECT e.x, s.currency, sum(s.mrr) AS mrr, count(DISTINCT s.customer_id) AS n
      FROM edges e JOIN s ON s.started_at < e.x AND (s.ended_at IS NULL OR s.ended_at >= e.x)
      GROUP BY 1, 2),
    points AS (
      SELECT DISTINCT b.b0, p.currency, p.customer_id, p.t
      FROM (SELECT currency, customer_id, started_at AS t FROM s
            UNION SELECT currency, customer_id, ended_at FROM s WHERE ended_at IS NOT NULL) p
      JOIN b ON p.t >= b.b0 AND p.t < b.b1),
    -- each point against its customer's subscriptions only (a hash join,
    -- not a scan of every subscription per point)
    states AS (
      SELECT p.b0, p.currency, p.customer_id, p.t,
             coalesce(sum(s.mrr) FILTER (WHERE s.started_at < p.t AND (s.ended_at IS NULL OR s.ended_at >= p.t)), 0) AS prev,
             coalesce(sum(s.mrr) FILTER (WHERE s.started_at <= p.t AND (s.ended_at IS NULL OR s.ended_at > p.t)), 0) AS now,
             coalesce(bool_or(s.started_at < p.t), false) AS had
      FROM points p JOIN s ON s.customer_id = p.customer_id AND s.currency = p.currency
      GROUP BY 1, 2, 3, 4),
    moves AS (
      SELECT x.b0, x.currency, x.customer_id, x.prev, x.now, @extschema@._mrr_movement(x.prev, x.now, x.had) AS kind
      FROM states x),
    agg AS (
      SELECT b0, currency,
             coalesce(sum(now) FILTER (WHERE kind = 'new'), 0) AS new_mrr,
             coalesce(sum(now - prev) FILTER (WHERE kind = 'expansion'), 0) AS expansion_mrr,
             coalesce(sum(prev - now) FILTER (WHERE kind = 'contraction'), 0) AS contraction_mrr,
             coalesce(sum(prev) FILTER (WHERE kind = 'churn'), 0) AS churned_mrr,
             coalesce(sum(now) FILTER (WHERE kind = 'reactivation'), 0) AS reactivated_mrr,
             count(*) FILTER (WHERE kind = 'new') AS new_customers,
             count(*) FILTER (WHERE kind = 'churn') AS churned_customers
      FROM moves GROUP BY 1, 2),
    st AS (SELECT b.b0, a.currency, a.mrr, a.n FROM b JOIN at_edge a ON a.x = b.b0),
    en AS (SELECT b.b0, a.currency, a.mrr, a.n FROM b JOIN at_edge a ON a.x = b.b1)
    SELECT b.b0, b.b1, c.currency,
           coalesce(st.mrr, 0), coalesce(a.new_mrr, 0), coalesce(a.expansion_mrr, 0), coalesce(a.contraction_mrr, 0),
           coalesce(a.churned_mrr, 0), coalesce(a.reactivated_mrr, 0),
           coalesce(a.new_mrr + a.expansion_mrr + a.reactivated_mrr - a.contraction_mrr - a.churned_mrr, 0),
           coalesce(en.mrr, 0),
           coalesce(st.n, 0), coalesce(a.new_customers, 0), coalesce(a.churned_customers, 0), coalesce(en.n, 0),
           round(coalesce(a.churned_customers, 0)::numeric / NULLIF(st.n, 0), 6),
           round((coalesce(a.churned_mrr, 0) + coalesce(a.contraction_mrr, 0)) / NULLIF(st.mrr, 0), 6),
           round((coalesce(a.churned_mrr, 0) + coalesce(a.contraction_mrr, 0) - coalesce(a.expansion_mrr, 0)
                  - coalesce(a.reactivated_mrr, 0)) / NULLIF(st.mrr, 0), 6),
           round((st.mrr + coalesce(a.expansion_mrr, 0) + coalesce(a.reactivated_mrr, 0) - coalesce(a.contraction_mrr, 0)
                  - coalesce(a.churned_mrr, 0)) / NULLIF(st.mrr, 0), 6),
           round(en.mrr / NULLIF(en.n, 0), 2)
    FROM b CROSS JOIN cur c
    LEFT JOIN st ON st.b0 = b.b0 AND st.currency = c.currency
    LEFT JOIN en ON en.b0 = b.b0 AND en.currency = c.currency
    LEFT JOIN agg a ON a.b0 = b.b0 AND a.currency = c.currency
    ORDER BY 1, 3
  $q$, @extschema@._ltv_subscriptions_sql())
  USING "from", "to", bucket;
END
$$;
COMMENT ON FUNCTION @extschema@.revenue_metrics(timestamptz, timestamptz, interval) IS
  'Per bucket and currency of the current tenant: MRR and its movements (new, expansion, contraction, churn, reactivation; ChartMogul''s definitions), customers, logo churn (Stripe), gross and net revenue churn, NRR, ARPA, from the registered subscriptions tables.';

-- ---------------------------------------------------------------------------
-- cohorts: per first-payment month, from the daily series
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.cohorts(
  from_month date DEFAULT NULL,
  to_month date DEFAULT NULL)
RETURNS TABLE (cohort_month date, currency text, months_since integer, customers bigint,
               paying_customers bigint, net_revenue numeric, logo_retention numeric, revenue_retention numeric)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF from_month > to_month THEN
    RAISE EXCEPTION 'saas.cohorts: from_month (%) is after to_month (%)', from_month, to_month
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the earlier month first, or NULL for no bound.';
  END IF;
  RETURN QUERY
  WITH m AS (
    SELECT d.customer_id, d.currency, date_trunc('month', d.day)::date AS month,
           sum(d.gross - d.refunds) AS net, sum(d.payments) AS payments
    FROM @extschema@._ltv_daily_rows d
    WHERE d.tenant_id = (SELECT @extschema@.current_tenant())
    GROUP BY 1, 2, 3),
  firsts AS (
    SELECT m.customer_id, m.currency, min(m.month) AS cohort FROM m WHERE m.payments > 0 GROUP BY 1, 2),
  sizes AS (
    SELECT f.cohort, f.currency, count(*) AS n FROM firsts f
    WHERE (from_month IS NULL OR f.cohort >= date_trunc('month', from_month)::date)
      AND (to_month IS NULL OR f.cohort <= date_trunc('month', to_month)::date)
    GROUP BY 1, 2),
  last_month AS (SELECT f.currency, max(m.month) AS lm FROM m JOIN firsts f USING (customer_id, currency) GROUP BY 1),
  grid AS (
    SELECT s.cohort, s.currency, s.n, g::date AS month
    FROM sizes s JOIN last_month l USING (currency)
    CROSS JOIN LATERAL generate_series(s.cohort, l.lm, interval '1 month') g),
  act AS (
    SELECT f.cohort, f.currency, m.month, count(*) FILTER (WHERE m.payments > 0) AS paying, sum(m.net) AS net
    FROM firsts f JOIN m USING (customer_id, currency) GROUP BY 1, 2, 3)
  SELECT g.cohort, g.currency,
         ((extract(year FROM g.month) - extract(year FROM g.cohort)) * 12 + extract(month FROM g.month) - extract(month FROM g.cohort))::integer,
         g.n, coalesce(a.paying, 0), coalesce(a.net, 0),
         round(coalesce(a.paying, 0)::numeric / g.n, 6),
         round(coalesce(a.net, 0) / NULLIF(first_value(coalesce(a.net, 0)) OVER (PARTITION BY g.cohort, g.currency ORDER BY g.month), 0), 6)
  FROM grid g LEFT JOIN act a ON a.cohort = g.cohort AND a.currency = g.currency AND a.month = g.month
  ORDER BY 1, 2, 3;
END
$$;
COMMENT ON FUNCTION @extschema@.cohorts(date, date) IS
  'Per first-payment month (UTC) and currency of the current tenant: customers, and per month since, paying customers, net revenue, logo and revenue retention, from the daily series.';

-- ---------------------------------------------------------------------------
-- customer_health: RFM quintiles (tie-safe) and risk drivers
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.customer_health(
  as_of timestamptz DEFAULT now(),
  "window" interval DEFAULT '90 days')
RETURNS TABLE (customer_id text, currency text, days_since_last integer, payment_days bigint, net numeric,
               r_score integer, f_score integer, m_score integer, level text, drivers text[])
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  w integer := @extschema@._ltv_period_days("window", 'window', 'saas.customer_health');
  e date;
BEGIN
  IF as_of IS NULL THEN
    RAISE EXCEPTION 'saas.customer_health: as_of may not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Omit it for now(), or pass a timestamptz.';
  END IF;
  IF NOT isfinite(as_of) THEN
    RAISE EXCEPTION 'saas.customer_health: as_of must be finite'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Omit it for now(), or pass a real time.';
  END IF;
  e := (as_of AT TIME ZONE 'UTC')::date;
  RETURN QUERY
  WITH d AS (
    SELECT x.customer_id, x.currency, x.day, sum(x.gross - x.refunds) AS net, sum(x.refunds) AS refunds, sum(x.payments) AS payments
    FROM @extschema@._ltv_daily_rows x
    WHERE x.tenant_id = (SELECT @extschema@.current_tenant()) AND x.day <= e
    GROUP BY 1, 2, 3),
  c AS (
    SELECT d.customer_id, d.currency,
           e - max(d.day) FILTER (WHERE d.payments > 0) AS since,
           count(*) FILTER (WHERE d.payments > 0) AS pdays,
           max(d.day) FILTER (WHERE d.payments > 0) - min(d.day) FILTER (WHERE d.payments > 0) AS span,
           sum(d.net) AS net,
           coalesce(sum(d.net) FILTER (WHERE d.day > e - w), 0) AS net_now,
           coalesce(sum(d.net) FILTER (WHERE d.day <= e - w AND d.day > e - 2 * w), 0) AS net_before,
           coalesce(sum(d.refunds) FILTER (WHERE d.day > e - w), 0) AS ref_now,
           coalesce(sum(d.refunds) FILTER (WHERE d.day <= e - w AND d.day > e - 2 * w), 0) AS ref_before
    FROM d GROUP BY 1, 2 HAVING count(*) FILTER (WHERE d.payments > 0) > 0),
  scored AS (
    SELECT c.*,
           @extschema@._ltv_quintile(rank() OVER (PARTITION BY c.currency ORDER BY c.since DESC), count(*) OVER (PARTITION BY c.currency)) AS r,
           @extschema@._ltv_quintile(rank() OVER (PARTITION BY c.currency ORDER BY c.pdays), count(*) OVER (PARTITION BY c.currency)) AS f,
           @extschema@._ltv_quintile(rank() OVER (PARTITION BY c.currency ORDER BY c.net), count(*) OVER (PARTITION BY c.currency)) AS m,
           array_remove(ARRAY[
             CASE WHEN c.pdays >= 2 AND c.since > 2 * (c.span::numeric / (c.pdays - 1))
                  THEN format('No payment for %s days (usual gap %s days)', c.since, round(c.span::numeric / (c.pdays - 1), 1)) END,
             CASE WHEN c.net_before > 0 AND c.net_now < c.net_before / 2
                  THEN format('Spend fell from %s to %s against the previous %s days', c.net_before, c.net_now, w) END,
             CASE WHEN c.ref_now > 0 AND c.ref_now > c.ref_before
                  THEN format('Refunds rose from %s to %s against the previous %s days', c.ref_before, c.ref_now, w) END
           ], NULL) AS why
    FROM c)
  SELECT s.customer_id, s.currency, s.since, s.pdays, s.net, s.r, s.f, s.m,
         CASE cardinality(s.why) WHEN 0 THEN 'low' WHEN 1 THEN 'medium' WHEN 2 THEN 'high' ELSE 'critical' END,
         s.why
  FROM scored s ORDER BY 1, 2;
END
$$;
COMMENT ON FUNCTION @extschema@.customer_health(timestamptz, interval) IS
  'Per customer and currency of the current tenant: RFM quintile scores (tie-safe; recency reversed), a risk level and its drivers (no payment for twice the usual gap, spend halved or worse against the previous window, refunds rising).';

-- ---------------------------------------------------------------------------
-- Retention risk: per-tenant rules, the jsonb overload for RPC callers
-- ---------------------------------------------------------------------------
-- The current tenant's latest rules ('{}' = the seed's), read as the owner:
-- any member may score, only admins read the settings table.
CREATE FUNCTION @extschema@._retention_risk_rules()
RETURNS jsonb
LANGUAGE sql STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT coalesce((SELECT s.rules || jsonb_build_object('version', s.version)
                   FROM @extschema@.retention_risk_settings s
                   WHERE s.tenant_id = (SELECT @extschema@.current_tenant())
                   ORDER BY s.version DESC LIMIT 1), '{}'::jsonb)
$$;

CREATE FUNCTION @extschema@.retention_risk_settings_set(rules jsonb)
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  tenant uuid := @extschema@.current_tenant();
  v integer;
BEGIN
  IF tenant IS NULL THEN
    RAISE EXCEPTION 'saas.retention_risk_settings_set: no current tenant'
      USING ERRCODE = 'insufficient_privilege', HINT = 'Call it in an API request of a tenant admin (or after saas.set_tenant() as a backend job).';
  END IF;
  IF NOT @extschema@.has_role('admin') AND @extschema@.current_user_id() IS NOT NULL THEN
    RAISE EXCEPTION 'saas.retention_risk_settings_set: only tenant admins and owners change the rules'
      USING ERRCODE = 'insufficient_privilege', HINT = 'Ask an admin of the tenant.';
  END IF;
  IF rules IS NULL THEN
    RAISE EXCEPTION 'saas.retention_risk_settings_set: rules may not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass a JSON object, e.g. ''{"level_critical": 80}''; ''{}'' restores the seed''s rules.';
  END IF;
  IF rules ? 'version' THEN
    RAISE EXCEPTION 'saas.retention_risk_settings_set: the version is assigned, not given'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Remove "version": each call stores the next version.';
  END IF;
  -- validates the rules (22023 with the list of keys)
  PERFORM @extschema@.retention_risk(50, 50, 50, 0, 'stable', rules);
  PERFORM pg_advisory_xact_lock(hashtext('saas.retention_risk_settings'), hashtext(tenant::text));
  SELECT coalesce(max(s.version), 0) + 1 INTO v FROM @extschema@.retention_risk_settings s WHERE s.tenant_id = tenant;
  INSERT INTO @extschema@.retention_risk_settings (tenant_id, version, rules) VALUES (tenant, v, rules);
  RETURN v;
END
$$;
COMMENT ON FUNCTION @extschema@.retention_risk_settings_set(jsonb) IS
  'Stores the current tenant''s retention-risk rules as a new version (keys as in docs/ltv.md; missing keys keep the seed''s values); returns the version.';

CREATE FUNCTION @extschema@.retention_risk(input jsonb)
RETURNS @extschema@.retention_risk_result
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  k text;
  want text;
BEGIN
  IF input IS NULL OR jsonb_typeof(input) <> 'object' THEN
    RAISE EXCEPTION 'saas.retention_risk: the input must be a JSON object'
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'E.g. {"motivational_drivers_match": 45, "working_preferences_match": 80, "role_skill_fit": 70, "last_assessment_days": 100, "performance_trend": "down"}.';
  END IF;
  FOR k IN SELECT jsonb_object_keys(input) LOOP
    IF k NOT IN ('motivational_drivers_match', 'working_preferences_match', 'role_skill_fit', 'last_assessment_days', 'performance_trend') THEN
      RAISE EXCEPTION 'saas.retention_risk: unknown input "%"', left(k, 64)
        USING ERRCODE = 'invalid_parameter_value',
              HINT = 'Inputs: motivational_drivers_match, working_preferences_match, role_skill_fit, last_assessment_days, performance_trend.';
    END IF;
  END LOOP;
  FOR k IN SELECT unnest(ARRAY['motivational_drivers_match', 'working_preferences_match', 'role_skill_fit', 'last_assessment_days', 'performance_trend']) LOOP
    want := CASE WHEN k = 'performance_trend' THEN 'string' ELSE 'number' END;
    IF jsonb_typeof(input -> k) IS NULL OR jsonb_typeof(input -> k) = 'null' THEN
      RAISE EXCEPTION 'saas.retention_risk: input "%" is missing', k
        USING ERRCODE = 'null_value_not_allowed', HINT = 'Every one of the five inputs is required.';
    END IF;
    IF jsonb_typeof(input -> k) <> want THEN
      RAISE EXCEPTION 'saas.retention_risk: input "%" must be a %', k, want
        USING ERRCODE = 'invalid_parameter_value', HINT = 'Match and fit values are numbers 0-100, days a whole number, the trend ''up'', ''stable'' or ''down''.';
    END IF;
  END LOOP;
  IF (input ->> 'last_assessment_days')::numeric <> trunc((input ->> 'last_assessment_days')::numeric)
     OR abs((input ->> 'last_assessment_days')::numeric) > 2147483647 THEN
    RAISE EXCEPTION 'saas.retention_risk: last_assessment_days must be a whole number of days'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'E.g. "last_assessment_days": 120.';
  END IF;
  RETURN @extschema@.retention_risk((input ->> 'motivational_drivers_match')::numeric,
                                    (input ->> 'working_preferences_match')::numeric,
                                    (input ->> 'role_skill_fit')::numeric,
                                    (input ->> 'last_assessment_days')::integer,
                                    input ->> 'performance_trend',
                                    @extschema@._retention_risk_rules());
END
$$;
COMMENT ON FUNCTION @extschema@.retention_risk(jsonb) IS
  'retention_risk for RPC callers: the five inputs as a JSON object, scored with the current tenant''s latest rules (the seed''s when it has none).';

-- What API roles get from saas.grant_api.
INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege) VALUES
  ('ltv', 'function', 'ltv_summary(interval, timestamp with time zone)', 'EXECUTE'),
  ('ltv', 'function', 'revenue_metrics(timestamp with time zone, timestamp with time zone, interval)', 'EXECUTE'),
  ('ltv', 'function', 'cohorts(date, date)', 'EXECUTE'),
  ('ltv', 'function', 'customer_health(timestamp with time zone, interval)', 'EXECUTE'),
  ('ltv', 'function', 'retention_risk(numeric, numeric, numeric, integer, text)', 'EXECUTE'),
  ('ltv', 'function', 'retention_risk(numeric, numeric, numeric, integer, text, jsonb)', 'EXECUTE'),
  ('ltv', 'function', 'retention_risk(jsonb)', 'EXECUTE'),
  ('ltv', 'function', 'retention_risk_settings_set(jsonb)', 'EXECUTE'),
  ('ltv', 'function', '_retention_risk_rules()', 'EXECUTE'),
  ('ltv', 'function', '_ltv_period_days(interval, text, text)', 'EXECUTE'),
  ('ltv', 'function', '_ltv_check_range(timestamp with time zone, timestamp with time zone, interval, text)', 'EXECUTE'),
  ('ltv', 'function', '_ltv_subscriptions_sql()', 'EXECUTE'),
  ('ltv', 'function', '_mrr_movement(numeric, numeric, boolean)', 'EXECUTE'),
  ('ltv', 'function', '_ltv_quintile(bigint, bigint)', 'EXECUTE'),
  ('ltv', 'table', 'ltv_ledger', 'SELECT'),
  ('ltv', 'table', 'ltv_daily', 'SELECT'),
  -- the views run as the caller: it reads their tables (under RLS)
  ('ltv', 'table', '_ltv_daily_rows', 'SELECT'),
  ('ltv', 'table', 'ltv_ledger_compacted', 'SELECT'),
  ('ltv', 'table', 'ltv_daily_compacted', 'SELECT'),
  ('ltv', 'table', 'ltv_pending', 'SELECT'),
  ('ltv', 'table', 'retention_risk_settings', 'SELECT');

-- The API surface (saas_api, served by PostgREST): the same functions, the
-- ledger and the series; STABLE, so GET works (a READ ONLY transaction).
-- What a caller sees is what RLS gives it: its tenant, admins and owners only.
CREATE FUNCTION saas_api.ltv_ledger()
RETURNS SETOF @extschema@.ltv_ledger
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.ltv_ledger ORDER BY customer_id, currency, source_id $$;
CREATE FUNCTION saas_api.ltv_daily(from_day date DEFAULT NULL, to_day date DEFAULT NULL)
RETURNS SETOF @extschema@.ltv_daily
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT * FROM @extschema@.ltv_daily d
  WHERE (from_day IS NULL OR d.day >= from_day) AND (to_day IS NULL OR d.day <= to_day)
  ORDER BY d.customer_id, d.currency, d.day, d.source_id
$$;
CREATE FUNCTION saas_api.ltv_summary(period interval DEFAULT '1 day', observation_end timestamptz DEFAULT now())
RETURNS TABLE (customer_id text, currency text, frequency bigint, recency numeric, "T" numeric, monetary_value numeric)
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.ltv_summary(period, observation_end) $$;
CREATE FUNCTION saas_api.revenue_metrics("from" timestamptz, "to" timestamptz, bucket interval DEFAULT '1 month')
RETURNS TABLE (bucket_start timestamptz, bucket_end timestamptz, currency text,
               starting_mrr numeric, new_mrr numeric, expansion_mrr numeric, contraction_mrr numeric,
               churned_mrr numeric, reactivated_mrr numeric, net_new_mrr numeric, mrr numeric,
               starting_customers bigint, new_customers bigint, churned_customers bigint, customers bigint,
               logo_churn_rate numeric, gross_revenue_churn_rate numeric, net_revenue_churn_rate numeric,
               nrr numeric, arpa numeric)
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.revenue_metrics("from", "to", bucket) $$;
CREATE FUNCTION saas_api.cohorts(from_month date DEFAULT NULL, to_month date DEFAULT NULL)
RETURNS TABLE (cohort_month date, currency text, months_since integer, customers bigint,
               paying_customers bigint, net_revenue numeric, logo_retention numeric, revenue_retention numeric)
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.cohorts(from_month, to_month) $$;
CREATE FUNCTION saas_api.customer_health(as_of timestamptz DEFAULT now(), "window" interval DEFAULT '90 days')
RETURNS TABLE (customer_id text, currency text, days_since_last integer, payment_days bigint, net numeric,
               r_score integer, f_score integer, m_score integer, level text, drivers text[])
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.customer_health(as_of, "window") $$;
CREATE FUNCTION saas_api.retention_risk(
  motivational_drivers_match numeric, working_preferences_match numeric, role_skill_fit numeric,
  last_assessment_days integer, performance_trend text)
RETURNS @extschema@.retention_risk_result
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT @extschema@.retention_risk(jsonb_build_object(
    'motivational_drivers_match', motivational_drivers_match, 'working_preferences_match', working_preferences_match,
    'role_skill_fit', role_skill_fit, 'last_assessment_days', last_assessment_days, 'performance_trend', performance_trend))
$$;
COMMENT ON FUNCTION saas_api.retention_risk(numeric, numeric, numeric, integer, text) IS
  'Retention risk with the current tenant''s latest rules (saas.retention_risk(jsonb)); GET /rpc/retention_risk?motivational_drivers_match=...';
CREATE FUNCTION saas_api.retention_risk_settings_set(rules jsonb)
RETURNS integer
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.retention_risk_settings_set(rules) $$;
INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege) VALUES
  ('ltv', 'function', 'saas_api.ltv_ledger()', 'EXECUTE'),
  ('ltv', 'function', 'saas_api.ltv_daily(date, date)', 'EXECUTE'),
  ('ltv', 'function', 'saas_api.ltv_summary(interval, timestamp with time zone)', 'EXECUTE'),
  ('ltv', 'function', 'saas_api.revenue_metrics(timestamp with time zone, timestamp with time zone, interval)', 'EXECUTE'),
  ('ltv', 'function', 'saas_api.cohorts(date, date)', 'EXECUTE'),
  ('ltv', 'function', 'saas_api.customer_health(timestamp with time zone, interval)', 'EXECUTE'),
  ('ltv', 'function', 'saas_api.retention_risk(numeric, numeric, numeric, integer, text)', 'EXECUTE'),
  ('ltv', 'function', 'saas_api.retention_risk_settings_set(jsonb)', 'EXECUTE');
