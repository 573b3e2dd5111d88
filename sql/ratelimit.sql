-- pg_saas ratelimit: rate-limit rules, plan quotas, usage counters and the
-- PostgREST pre-request hook. The GCRA checks, both state backends and the
-- request core (_rate_limit_request) are Rust (src/ratelimit/).

-- ---------------------------------------------------------------------------
-- Plans: the limits of saas.tenants.plan. A tenant whose plan has no row
-- here is unlimited; a NULL limit is unlimited too.
-- Global (a Citus reference table).
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.plans (
  plan               text   NOT NULL,
  api_calls_per_day  bigint,
  storage_bytes      bigint,
  -- Further limits by name for later modules (e.g. {"ai_tokens_per_day": 200000});
  -- usage_report shows "<metric>_per_day" as the daily limit of that metric.
  limits             jsonb  NOT NULL DEFAULT '{}',
  CONSTRAINT plans_pkey PRIMARY KEY (plan),
  CONSTRAINT plans_api_calls_nonnegative CHECK (api_calls_per_day >= 0),
  CONSTRAINT plans_storage_nonnegative CHECK (storage_bytes >= 0),
  CONSTRAINT plans_limits_object CHECK (jsonb_typeof(limits) = 'object')
);
COMMENT ON TABLE @extschema@.plans IS
  'Plan limits by saas.tenants.plan: API calls per day, storage bytes, more in limits. No row or NULL: unlimited.';
ALTER TABLE @extschema@.plans ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.plans', '');
-- pre_request keeps each tenant's plan and quota per backend; a change of
-- plans (or of a tenant's plan: tenants_changed) makes every backend read
-- them again.
CREATE TRIGGER plans_changed
  AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.plans
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._rate_limit_rules_changed();
ALTER TABLE @extschema@.plans ENABLE ALWAYS TRIGGER plans_changed;

-- ---------------------------------------------------------------------------
-- Daily usage per tenant and metric (UTC days). Read-write requests count
-- here directly; read-only ones in shared memory until usage_flush().
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.usage_daily (
  tenant_id  uuid   NOT NULL,
  metric     text   NOT NULL,
  day        date   NOT NULL,
  count      bigint NOT NULL DEFAULT 0,
  CONSTRAINT usage_daily_pkey PRIMARY KEY (tenant_id, metric, day),
  CONSTRAINT usage_daily_metric_length CHECK (char_length(metric) BETWEEN 1 AND 32)
);
COMMENT ON TABLE @extschema@.usage_daily IS
  'Daily usage counters per tenant and metric (UTC). Read with saas.usage_report(), which adds what is still pending in shared memory.';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.usage_daily', '');
-- When pg_saas is preloaded the day's counts live in shared memory, loaded
-- from this table once; a change other than a flush (an administrator's
-- correction or reset) drops them at commit, so they are loaded again.
CREATE TRIGGER usage_daily_changed
  AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.usage_daily
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._usage_daily_changed();
ALTER TABLE @extschema@.usage_daily ENABLE ALWAYS TRIGGER usage_daily_changed;

-- Bytes a tenant has reserved (storage_reserve/storage_release).
CREATE TABLE @extschema@.tenant_storage (
  tenant_id   uuid        NOT NULL,
  used_bytes  bigint      NOT NULL DEFAULT 0,
  updated_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT tenant_storage_pkey PRIMARY KEY (tenant_id),
  CONSTRAINT tenant_storage_nonnegative CHECK (used_bytes >= 0)
);
COMMENT ON TABLE @extschema@.tenant_storage IS
  'Storage bytes in use per tenant, kept by saas.storage_reserve() and saas.storage_release().';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.tenant_storage', '');

-- Tenant rows: forced RLS, a tenant reads its own; only the functions of
-- this module write (as the owner).
DO $rls$
DECLARE
  rel regclass;
BEGIN
  FOREACH rel IN ARRAY ARRAY['@extschema@.usage_daily'::regclass, '@extschema@.tenant_storage'::regclass] LOOP
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', rel);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', rel);
    EXECUTE format('CREATE POLICY saas_tenant_read ON %s FOR SELECT USING (tenant_id = (SELECT @extschema@.current_tenant()))', rel);
  END LOOP;
END
$rls$;

-- ---------------------------------------------------------------------------
-- Rules: which requests pre_request() limits. Managed with
-- rate_limit_rule_set / rate_limit_rule_drop; the CHECKs guard direct edits.
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.rate_limit_rules (
  id            bigint      GENERATED ALWAYS AS IDENTITY,
  path_pattern  text        NOT NULL,
  method        text,
  scope         text        NOT NULL DEFAULT 'user',
  max_burst     integer,
  count         integer     NOT NULL,
  period        interval    NOT NULL,
  cost          integer     NOT NULL DEFAULT 1,
  created_at    timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT rate_limit_rules_pkey PRIMARY KEY (id),
  CONSTRAINT rate_limit_rules_key UNIQUE NULLS NOT DISTINCT (path_pattern, method, scope),
  CONSTRAINT rate_limit_rules_pattern CHECK (path_pattern ~ '^/[A-Za-z0-9._~/*:@!$&''()+,;=%-]*$' AND char_length(path_pattern) <= 200),
  CONSTRAINT rate_limit_rules_method CHECK (method IN ('GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS')),
  CONSTRAINT rate_limit_rules_scope CHECK (scope IN ('user', 'tenant', 'ip', 'global')),
  CONSTRAINT rate_limit_rules_positive CHECK (count > 0 AND cost > 0 AND coalesce(max_burst, count) >= cost AND period > interval '0'),
  -- What the GCRA arithmetic accepts (gcra.rs): a period of at most 100
  -- years, at least one microsecond per request, and a burst that fits in
  -- 100 years. A rule outside these would fail every request it matched.
  CONSTRAINT rate_limit_rules_range CHECK (
    period <= interval '100 years'
    AND extract(epoch FROM period) * 1000000 >= count
    AND extract(epoch FROM period) / count * coalesce(max_burst, count) <= 3155760000)
);
COMMENT ON TABLE @extschema@.rate_limit_rules IS
  'Rate limits pre_request() applies: count per period (GCRA, burst max_burst or count) per user, tenant, ip or globally, for paths matching path_pattern (* = any characters).';
ALTER TABLE @extschema@.rate_limit_rules ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.rate_limit_rules', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.rate_limit_rules', 'id'), '');
-- pre_request keeps the rules per backend; any change to them tells every
-- backend to read them again.
CREATE TRIGGER rate_limit_rules_changed
  AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.rate_limit_rules
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._rate_limit_rules_changed();
-- Also under session_replication_role = replica (logical replication,
-- pg_restore --disable-triggers): rules changed then must reach backends too.
ALTER TABLE @extschema@.rate_limit_rules ENABLE ALWAYS TRIGGER rate_limit_rules_changed;

-- GCRA state of the table backend. rule_id 0: keys of direct rate_limit()
-- calls. Ephemeral (a key past its TAT is the same as no row), so not
-- dumped; rate_limit_vacuum() (run by run_maintenance) deletes those rows.
CREATE TABLE @extschema@.rate_limit_state (
  rule_id  bigint NOT NULL,
  key      text   NOT NULL,
  -- theoretical arrival time, microseconds since 2000-01-01 UTC
  tat_us   bigint NOT NULL,
  CONSTRAINT rate_limit_state_pkey PRIMARY KEY (rule_id, key)
);
COMMENT ON TABLE @extschema@.rate_limit_state IS
  'GCRA state of the table backend of saas.rate_limit (used when pg_saas is not preloaded).';
ALTER TABLE @extschema@.rate_limit_state ENABLE ROW LEVEL SECURITY;

-- Requests refused per rule, day and tenant (nil uuid: no tenant). Counted
-- in shared memory (the refused request rolls back) and flushed here.
CREATE TABLE @extschema@.rate_limit_refusals (
  tenant_id  uuid   NOT NULL,
  day        date   NOT NULL,
  rule_id    bigint NOT NULL,
  refusals   bigint NOT NULL DEFAULT 0,
  CONSTRAINT rate_limit_refusals_pkey PRIMARY KEY (tenant_id, day, rule_id)
);
COMMENT ON TABLE @extschema@.rate_limit_refusals IS
  'Requests refused (429) per tenant, UTC day and rule, written by usage_flush(); see rate_limit_refusals_report.';
ALTER TABLE @extschema@.rate_limit_refusals ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.rate_limit_refusals', '');

-- ---------------------------------------------------------------------------
-- Operators: refusals per rule and day, flushed plus pending.
-- ---------------------------------------------------------------------------
CREATE VIEW @extschema@.rate_limit_refusals_report AS
SELECT r.day, r.rule_id, ru.path_pattern, ru.method, ru.scope, r.tenant_id, sum(r.refusals)::bigint AS refusals
FROM (
  SELECT f.day, f.rule_id, f.tenant_id, f.refusals FROM @extschema@.rate_limit_refusals f
  UNION ALL
  SELECT DATE '2000-01-01' + p.day, p.rule_id, p.tenant_id, p.pending
  FROM @extschema@._usage_pending() p WHERE p.kind = 'refusal'
) r
LEFT JOIN @extschema@.rate_limit_rules ru ON ru.id = r.rule_id
GROUP BY r.day, r.rule_id, ru.path_pattern, ru.method, ru.scope, r.tenant_id;
COMMENT ON VIEW @extschema@.rate_limit_refusals_report IS
  'Rate-limit refusals per UTC day, rule and tenant (nil uuid: none), written and still pending. For operators.';

-- ---------------------------------------------------------------------------
-- pre_request: PostgREST's db-pre-request.
-- ---------------------------------------------------------------------------
-- Resolves the tenant (a bad tenant context fails every request, even one
-- whose query evaluates no policy), applies every matching rule and the
-- plan's daily API quota, adds RateLimit-* headers, or refuses with
-- PostgREST's PGRST error: status 429 (402 for the quota) and Retry-After.
CREATE FUNCTION @extschema@.pre_request()
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  refusal jsonb;
BEGIN
  -- Admitted: NULL, and the RateLimit-* headers are already in
  -- response.headers. Refused: PostgREST's error with its status and headers.
  refusal := @extschema@._rate_limit_request();
  IF refusal IS NOT NULL THEN
    RAISE SQLSTATE 'PGRST'
      USING MESSAGE = (refusal -> 'body')::text,
            DETAIL = jsonb_build_object('status', refusal -> 'status', 'headers', refusal -> 'headers')::text;
  END IF;
END
$$;
COMMENT ON FUNCTION @extschema@.pre_request() IS
  'PostgREST db-pre-request hook: tenant context, rate-limit rules (429 + Retry-After), daily API quota (402), RateLimit-* headers. Works in READ ONLY transactions when pg_saas is preloaded.';

CREATE FUNCTION @extschema@.rate_limit_rule_drop(path_pattern text, scope text DEFAULT 'user', method text DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  gone bigint;
BEGIN
  IF path_pattern IS NULL OR scope IS NULL THEN
    RAISE EXCEPTION 'rate_limit_rule_drop: path_pattern and scope must not be NULL'
      USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass the pattern, scope and method the rule was set with, e.g. saas.rate_limit_rule_drop(''/rpc/generate_roadmap'', ''user'').';
  END IF;
  DELETE FROM @extschema@.rate_limit_rules r
  WHERE r.path_pattern = rate_limit_rule_drop.path_pattern
    AND r.scope = rate_limit_rule_drop.scope
    AND r.method IS NOT DISTINCT FROM upper(btrim(rate_limit_rule_drop.method))
  RETURNING r.id INTO gone;
  IF gone IS NULL THEN
    RETURN false;
  END IF;
  DELETE FROM @extschema@.rate_limit_state s WHERE s.rule_id = gone;
  RETURN true;
END
$$;
COMMENT ON FUNCTION @extschema@.rate_limit_rule_drop(text, text, text) IS
  'Removes the rule with this pattern, scope and method (NULL: the any-method rule); false when there was none.';

-- ---------------------------------------------------------------------------
-- Storage quota
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@._storage_tenant(fn text, bytes bigint)
RETURNS uuid
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid;
BEGIN
  IF bytes IS NULL THEN
    RAISE EXCEPTION '%: bytes must not be NULL', fn
      USING ERRCODE = 'null_value_not_allowed', HINT = format('Pass the size in bytes, e.g. saas.%s(1048576).', fn);
  END IF;
  IF bytes <= 0 THEN
    RAISE EXCEPTION '%: bytes must be positive, got %', fn, bytes
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the size of the object in bytes (at least 1).';
  END IF;
  t := @extschema@.current_tenant();
  IF t IS NULL THEN
    RAISE EXCEPTION '%: there is no current tenant', fn
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'Call it inside a request with a tenant (JWT claim or X-Tenant-Id), or after saas.set_tenant() in a job.';
  END IF;
  RETURN t;
END
$$;

-- Atomic check-and-add against the plan's storage_bytes: concurrent
-- reservations serialize on the tenant's row, none passes the limit.
CREATE FUNCTION @extschema@.storage_reserve(bytes bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._storage_tenant('storage_reserve', bytes);
  plan_name text;
  quota bigint;
  used bigint;
BEGIN
  SELECT tn.plan, p.storage_bytes INTO plan_name, quota
  FROM @extschema@.tenants tn LEFT JOIN @extschema@.plans p ON p.plan = tn.plan
  WHERE tn.id = t;
  INSERT INTO @extschema@.tenant_storage AS s (tenant_id, used_bytes)
  SELECT t, bytes WHERE quota IS NULL OR bytes <= quota
  ON CONFLICT (tenant_id) DO UPDATE SET used_bytes = s.used_bytes + EXCLUDED.used_bytes, updated_at = now()
    WHERE quota IS NULL OR s.used_bytes + EXCLUDED.used_bytes <= quota
  RETURNING s.used_bytes INTO used;
  IF used IS NULL THEN
    SELECT s.used_bytes INTO used FROM @extschema@.tenant_storage s WHERE s.tenant_id = t;
    RAISE SQLSTATE 'PT402'
      USING MESSAGE = format('storage quota exceeded: plan %L allows %s, %s in use, %s requested',
                             plan_name, pg_size_pretty(quota), pg_size_pretty(coalesce(used, 0)), pg_size_pretty(bytes)),
            -- Machine-readable, as every pg_saas refusal's details.
            DETAIL = jsonb_build_object('reason', 'storage_quota_exhausted', 'plan', plan_name, 'limit', quota,
                                        'used', coalesce(used, 0), 'requested', bytes,
                                        'remaining', greatest(quota - coalesce(used, 0), 0))::text,
            HINT = 'Delete files to free space or move the tenant to a plan with more storage.';
  END IF;
  RETURN used;
END
$$;
COMMENT ON FUNCTION @extschema@.storage_reserve(bigint) IS
  'Adds bytes to the current tenant''s storage use if the plan allows it, else refuses with PT402 (HTTP 402) naming quota and use. Returns the bytes now in use.';

CREATE FUNCTION @extschema@.storage_release(bytes bigint)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._storage_tenant('storage_release', bytes);
  used bigint;
BEGIN
  UPDATE @extschema@.tenant_storage s SET used_bytes = s.used_bytes - bytes, updated_at = now()
  WHERE s.tenant_id = t AND s.used_bytes >= bytes
  RETURNING s.used_bytes INTO used;
  IF used IS NULL THEN
    SELECT s.used_bytes INTO used FROM @extschema@.tenant_storage s WHERE s.tenant_id = t;
    RAISE EXCEPTION 'storage_release: % bytes released but only % in use', bytes, coalesce(used, 0)
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Release exactly what storage_reserve reserved for the object being deleted.';
  END IF;
  RETURN used;
END
$$;
COMMENT ON FUNCTION @extschema@.storage_release(bigint) IS
  'Gives back bytes of the current tenant''s storage use (never below zero). Returns the bytes now in use.';

-- ---------------------------------------------------------------------------
-- usage_report: the current tenant's daily usage, written plus pending.
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.usage_report(from_day date, to_day date)
RETURNS TABLE (day date, metric text, used bigint, daily_limit bigint)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid;
BEGIN
  IF from_day IS NULL OR to_day IS NULL THEN
    RAISE EXCEPTION 'usage_report: from_day and to_day must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass a range of UTC days, e.g. saas.usage_report(current_date - 30, current_date).';
  END IF;
  IF from_day > to_day THEN
    RAISE EXCEPTION 'usage_report: from_day % is after to_day %', from_day, to_day
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the earlier day first.';
  END IF;
  t := @extschema@.current_tenant();
  IF t IS NULL THEN
    RAISE EXCEPTION 'usage_report: there is no current tenant'
      USING ERRCODE = 'insufficient_privilege', HINT = 'Call it inside a request with a tenant (JWT claim or X-Tenant-Id).';
  END IF;
  -- The table and shared memory read as one (a flush moves counts from
  -- one to the other at its commit): _usage_counts (Rust).
  RETURN QUERY
  SELECT DATE '2000-01-01' + u.day, u.metric, u.used,
         CASE WHEN u.metric = 'api_calls' THEN p.api_calls_per_day
              ELSE (p.limits ->> (u.metric || '_per_day'))::bigint END
  FROM @extschema@._usage_counts(t, from_day - DATE '2000-01-01', to_day - DATE '2000-01-01') u
  LEFT JOIN @extschema@.tenants tn ON tn.id = t
  LEFT JOIN @extschema@.plans p ON p.plan = tn.plan
  ORDER BY u.day, u.metric;
END
$$;
COMMENT ON FUNCTION @extschema@.usage_report(date, date) IS
  'The current tenant''s usage per UTC day and metric (written plus still pending in shared memory) with the plan''s daily limit.';

-- run_maintenance's full pass writes usage counted in shared memory and
-- drops expired rate-limit keys.
CREATE FUNCTION @extschema@._ratelimit_maintenance(p_now timestamptz)
RETURNS TABLE (parent_table regclass, action text, partition_name text, detail text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  flushed bigint;
  expired bigint;
BEGIN
  flushed := @extschema@.usage_flush();
  expired := @extschema@.rate_limit_vacuum();
  IF flushed > 0 OR expired > 0 THEN
    parent_table := '@extschema@.usage_daily'::regclass; action := 'flush'; partition_name := NULL;
    detail := format('%s usage and refusal counters written, %s expired rate-limit keys deleted', flushed, expired);
    RETURN NEXT;
  END IF;
END
$$;
INSERT INTO @extschema@.maintenance_tasks (task, module, function_name, run_order, reports_as)
VALUES ('usage_flush', 'ratelimit', '_ratelimit_maintenance', 20, 'usage_daily');

-- What API roles get from saas.grant_api: the pre-request hook (and the Rust
-- core it calls as the caller) and the tenant's usage report.
INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege) VALUES
  ('ratelimit', 'function', 'pre_request()', 'EXECUTE'),
  ('ratelimit', 'function', '_rate_limit_request()', 'EXECUTE'),
  ('ratelimit', 'function', 'usage_report(date, date)', 'EXECUTE');

-- The usage report for API clients (saas_api, registry.sql); the last 30
-- UTC days unless asked otherwise.
CREATE FUNCTION saas_api.usage_report(
  from_day date DEFAULT (pg_catalog.now() AT TIME ZONE 'UTC')::date - 29,
  to_day date DEFAULT (pg_catalog.now() AT TIME ZONE 'UTC')::date)
RETURNS TABLE (day date, metric text, used bigint, daily_limit bigint)
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.usage_report(from_day, to_day) $$;
COMMENT ON FUNCTION saas_api.usage_report(date, date) IS
  'The current tenant''s usage per UTC day and metric with the plan''s daily limit (default: the last 30 days). Served even when the daily quota is used up.';
INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege)
VALUES ('ratelimit', 'function', 'saas_api.usage_report(date, date)', 'EXECUTE');

-- ---------------------------------------------------------------------------
-- Quota exemptions: paths a tenant over its daily API quota can still call
-- (its usage page, its workspace list); such calls are still counted.
-- Patterns as in rate_limit_rules; built-in rows come with the extension.
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.quota_exemptions (
  path_pattern  text    NOT NULL,
  builtin       boolean NOT NULL DEFAULT false,
  CONSTRAINT quota_exemptions_pkey PRIMARY KEY (path_pattern),
  CONSTRAINT quota_exemptions_pattern CHECK (path_pattern ~ '^/[A-Za-z0-9._~/*:@!$&''()+,;=%-]*$' AND char_length(path_pattern) <= 200)
);
COMMENT ON TABLE @extschema@.quota_exemptions IS
  'Paths pre_request() never refuses for the daily API quota (still counted), e.g. /rpc/usage_report.';
ALTER TABLE @extschema@.quota_exemptions ENABLE ROW LEVEL SECURITY;
INSERT INTO @extschema@.quota_exemptions (path_pattern, builtin) VALUES
  ('/rpc/usage_report', true), ('/rpc/my_memberships', true);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.quota_exemptions', 'WHERE NOT builtin');
-- pre_request keeps them with the rules: a change tells every backend.
CREATE TRIGGER quota_exemptions_changed
  AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON @extschema@.quota_exemptions
  FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._rate_limit_rules_changed();
ALTER TABLE @extschema@.quota_exemptions ENABLE ALWAYS TRIGGER quota_exemptions_changed;
