-- Rate limits: rate_limit() in both backends, rules, pre_request() with its
-- headers and refusals, plan quotas, usage counters, storage quota. Time is
-- pinned with the saas.rate_limit_clock test hook; the cluster preloads
-- pg_saas, so the shared-memory backend is there (its state lives until the
-- server restarts, hence keys no other suite uses).
\set SHOW_CONTEXT never
SET client_min_messages = notice;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';

\set ta '''0000000a-0000-4000-8000-0000000000e1'''
\set tb '''0000000b-0000-4000-8000-0000000000e1'''
\set u1 '''000000aa-0000-4000-8000-0000000000e1'''
\set u2 '''000000bb-0000-4000-8000-0000000000e1'''

SET saas.rate_limit_clock = '2026-03-01 12:00:00+00';
SELECT backend, preloaded, key_slots >= 1024 AS has_slots FROM saas.rate_limit_stats();

-- ---------------------------------------------------------------------------
-- Bad input: each with its SQLSTATE
-- ---------------------------------------------------------------------------
SELECT * FROM saas.rate_limit(NULL, 1, 1, '1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.rate_limit('k', 1, 1, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.rate_limit('', 1, 1, '1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.rate_limit(repeat('k', 513), 1, 1, '1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.rate_limit('k', 0, 1, '1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.rate_limit('k', 1, -5, '1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.rate_limit('k', 1, 1, '0 seconds');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.rate_limit('k', 1, 1, '-1 hour');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.rate_limit('k', 1, 1, '1 minute', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.rate_limit('k', 2, 2, '1 minute', 3);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.rate_limit('k', 1, 2000000, '1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.rate_limit_rule_set('rpc/x', 5, '1 hour');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.rate_limit_rule_set('/rpc/a b', 5, '1 hour');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.rate_limit_rule_set('/rpc/x', 5, '1 hour', scope => 'users');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.rate_limit_rule_set('/rpc/x', 5, '1 hour', method => 'BREW');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.rate_limit_rule_set('/rpc/x', NULL, '1 hour');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.rate_limit_rule_set('/rpc/x', 5, '1 hour', cost => 6);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.rate_limit_rule_drop(NULL);
\echo :LAST_ERROR_SQLSTATE
SET saas.rate_limit_clock = 'yesterday-ish';
SELECT * FROM saas.rate_limit('k', 1, 1, '1 minute');
\echo :LAST_ERROR_SQLSTATE
SET saas.rate_limit_clock = '2026-03-01 12:00:00+00';
-- The result type altered by hand: a clear error, not a datum of the wrong type.
BEGIN;
ALTER TYPE saas.rate_limit_result ALTER ATTRIBUTE remaining TYPE text;
SELECT * FROM saas.rate_limit('regress:altered', 1, 1, '1 minute');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;

-- ---------------------------------------------------------------------------
-- rate_limit: 3 per hour admits 3 at once, then one every 20 minutes; the
-- same in both backends.
-- ---------------------------------------------------------------------------
-- (the key depends on n so that each row calls the function)
SET saas.rate_limit_backend = 'shmem';
SELECT n, r.* FROM generate_series(1, 4) n, LATERAL saas.rate_limit('regress:gcra' || left(n::text, 0), 3, 3, '1 hour') r ORDER BY n;
SET saas.rate_limit_clock = '2026-03-01 12:19:59+00';
SELECT * FROM saas.rate_limit('regress:gcra', 3, 3, '1 hour');
SET saas.rate_limit_clock = '2026-03-01 12:20:00+00';
SELECT * FROM saas.rate_limit('regress:gcra', 3, 3, '1 hour');
-- A cost of 2 counts as two requests; a burst above count lets more through at once.
SELECT * FROM saas.rate_limit('regress:cost', 3, 3, '1 hour', 2);
SELECT * FROM saas.rate_limit('regress:cost', 3, 3, '1 hour', 2);
SELECT allowed, remaining FROM saas.rate_limit('regress:burst', 5, 1, '1 minute');
-- One saas.rate_limit_result per call, also called from a select list,
-- row after row (the row type is looked up once per call site).
SELECT pg_typeof(saas.rate_limit('regress:type', 2, 2, '1 hour'));
SELECT n, (saas.rate_limit('regress:tlist', 2, 2, '1 hour')).allowed FROM generate_series(1, 3) n ORDER BY n;

SET saas.rate_limit_backend = 'table';
SET saas.rate_limit_clock = '2026-03-01 12:00:00+00';
SELECT n, r.* FROM generate_series(1, 4) n, LATERAL saas.rate_limit('regress:gcra' || left(n::text, 0), 3, 3, '1 hour') r ORDER BY n;
SET saas.rate_limit_clock = '2026-03-01 12:20:00+00';
SELECT * FROM saas.rate_limit('regress:gcra', 3, 3, '1 hour');
-- The state row: the key's theoretical arrival time, 12:20 + 3 x 20 minutes.
SELECT rule_id, key, timestamptz '2000-01-01 00:00:00+00' + tat_us * interval '1 microsecond' AS tat
FROM saas.rate_limit_state ORDER BY rule_id, key;
-- A refusal writes nothing and takes no row lock: the key's row version
-- is the same after it, and no locker is marked on it.
SELECT xmin AS state_xmin FROM saas.rate_limit_state WHERE key = 'regress:gcra' \gset
SELECT allowed, remaining, retry_after FROM saas.rate_limit('regress:gcra', 3, 3, '1 hour');
SELECT xmin = :'state_xmin' AS same_version, xmax::text = '0' AS not_locked FROM saas.rate_limit_state WHERE key = 'regress:gcra';
-- Nor does it take a transaction id: a refused request commits nothing.
BEGIN;
SELECT allowed FROM saas.rate_limit('regress:gcra', 3, 3, '1 hour');
SELECT pg_current_xact_id_if_assigned() IS NULL AS no_transaction_id;
COMMIT;
-- The table backend cannot write in a read-only transaction; shared memory can.
BEGIN READ ONLY;
SELECT * FROM saas.rate_limit('regress:ro', 1, 1, '1 minute');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN READ ONLY;
SET LOCAL saas.rate_limit_backend = 'shmem';
SELECT allowed FROM saas.rate_limit('regress:ro', 1, 1, '1 minute');
ROLLBACK;
-- Shared memory is not transactional: the rolled-back check still counts.
SET saas.rate_limit_backend = 'shmem';
SELECT allowed, retry_after FROM saas.rate_limit('regress:ro', 1, 1, '1 minute');
-- Keys past their TAT are the same as no row: vacuum deletes them.
SET saas.rate_limit_clock = '2026-03-01 14:00:00+00';
SELECT saas.rate_limit_vacuum() AS expired_rows_deleted;
SELECT count(*) AS state_rows_left FROM saas.rate_limit_state;
RESET saas.rate_limit_backend;

-- ---------------------------------------------------------------------------
-- Rules
-- ---------------------------------------------------------------------------
SET saas.rate_limit_clock = '2026-03-02 09:00:00+00';
SELECT saas.rate_limit_rule_set('/rpc/regress_generate', 2, '1 hour') AS generate_rule \gset
SELECT saas.rate_limit_rule_set('/rpc/regress_*', 50, '1 hour', scope => 'tenant') AS family_rule \gset
SELECT saas.rate_limit_rule_set('/regress_items', 1, '1 minute', scope => 'ip', method => 'post') AS post_rule \gset
-- Setting a rule again replaces its limits and keeps its id.
SELECT saas.rate_limit_rule_set('/rpc/regress_generate', 2, '1 hour', max_burst => 2) = :generate_rule AS same_id;
SELECT path_pattern, method, scope, max_burst, count, period, cost
FROM saas.rate_limit_rules WHERE path_pattern LIKE '/%regress%' ORDER BY path_pattern;

INSERT INTO saas.tenants (id, slug, name, plan) VALUES
  (:ta, 'limit-a', 'Limit A', 'regress-small'), (:tb, 'limit-b', 'Limit B', 'regress-none');
INSERT INTO saas.memberships (tenant_id, user_id, role) VALUES (:ta, :u1, 'member'), (:ta, :u2, 'admin'), (:tb, :u1, 'member'), (:tb, :u2, 'member');
-- A request as PostgREST sets it up.
CREATE FUNCTION pg_temp.request(method text, path text, sub uuid, tenant uuid, ip text DEFAULT '198.51.100.7')
RETURNS void LANGUAGE sql AS $$
  SELECT set_config('request.jwt.claims', CASE WHEN sub IS NULL THEN '{"role": "anon"}'
                      ELSE json_build_object('sub', sub, 'tenant_id', tenant)::text END, true),
         set_config('request.method', method, true),
         set_config('request.path', path, true),
         set_config('request.headers', json_build_object('x-forwarded-for', ip || ', 10.0.0.1')::text, true),
         set_config('response.headers', '', true);
$$;

-- Admitted: the most restrictive matching rule's RateLimit-* headers.
BEGIN;
SELECT pg_temp.request('POST', '/rpc/regress_generate', :u1, :ta);
SELECT saas.pre_request();
SELECT current_setting('response.headers') AS response_headers;
SELECT saas.pre_request();
-- The third call of user 1 is refused: PGRST with status 429 and Retry-After.
SELECT saas.pre_request();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
-- Headers set before the refusal are not kept (the request rolls back);
-- another user of the same tenant has a counter of their own.
BEGIN;
SELECT pg_temp.request('POST', '/rpc/regress_generate', :u2, :ta);
SELECT saas.pre_request();
SELECT current_setting('response.headers') AS response_headers;
ROLLBACK;
-- The refused request gave back what it took of the tenant-wide family
-- rule: 4 of 50 spent (user 1's two, user 2's one, this one).
BEGIN;
SELECT pg_temp.request('POST', '/rpc/regress_other', :u1, :ta);
SELECT saas.pre_request();
SELECT current_setting('response.headers') AS response_headers;
ROLLBACK;
-- Method-specific rule: GET is not limited by it, POST is, per client IP;
-- anonymous requests (no user, no tenant) are limited by IP too.
BEGIN;
SELECT pg_temp.request('GET', '/regress_items', NULL, NULL);
SELECT saas.pre_request();
SELECT current_setting('response.headers') AS get_headers;
SELECT pg_temp.request('POST', '/regress_items', NULL, NULL);
SELECT saas.pre_request();
SELECT pg_temp.request('POST', '/regress_items', NULL, NULL, '198.51.100.8');
SELECT saas.pre_request();
SELECT pg_temp.request('POST', '/regress_items', NULL, NULL);
SELECT saas.pre_request();
ROLLBACK;
-- A user-scoped rule without a user falls back to the IP.
BEGIN;
SELECT pg_temp.request('POST', '/rpc/regress_generate', NULL, NULL, '203.0.113.50');
SELECT saas.pre_request();
SELECT saas.pre_request();
SELECT saas.pre_request();
ROLLBACK;
-- Refusals per rule, counted though each refused request rolled back.
SELECT day, path_pattern, scope, tenant_id = :ta AS tenant_a, refusals
FROM saas.rate_limit_refusals_report WHERE path_pattern LIKE '/%regress%' ORDER BY path_pattern, tenant_id;
-- pre_request appends its headers to what the request set before it; a
-- response.headers that is not JSON is an error (22P02), not overwritten.
SELECT saas.rate_limit_rule_set('/regress_headers', 10, '1 minute', scope => 'ip') AS headers_rule \gset
BEGIN;
SELECT pg_temp.request('GET', '/regress_headers', NULL, NULL);
SELECT set_config('response.headers', '[{"Cache-Control": "no-store"}]', true);
SELECT saas.pre_request();
SELECT current_setting('response.headers') AS response_headers;
SELECT set_config('response.headers', 'no-store', true);
SELECT saas.pre_request();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT saas.rate_limit_rule_drop('/regress_headers', 'ip');

-- ---------------------------------------------------------------------------
-- Plan quota: 3 API calls a day. Read-only and read-write requests count in
-- shared memory against one total per tenant and day, loaded once from
-- saas.usage_daily; every admitted call counts, whatever its transaction
-- does afterwards. Earlier sections' calls are written out and cleared
-- first (a change to usage_daily other than a flush drops the loaded
-- counts at commit).
-- ---------------------------------------------------------------------------
SELECT saas.usage_flush() >= 0 AS flushed;
DELETE FROM saas.usage_daily WHERE tenant_id IN (:ta, :tb);
CREATE FUNCTION pg_temp.calls(t uuid, d date) RETURNS bigint LANGUAGE sql AS $$
  SELECT coalesce((SELECT count FROM saas.usage_daily WHERE tenant_id = t AND metric = 'api_calls' AND day = d), 0)
       + coalesce((SELECT sum(pending) FROM saas._usage_pending()
                   WHERE kind = 'usage' AND tenant_id = t AND metric = 'api_calls' AND day = d - DATE '2000-01-01'), 0)::bigint $$;
INSERT INTO saas.plans (plan, api_calls_per_day, storage_bytes) VALUES ('regress-small', 3, 1000);
SET saas.rate_limit_clock = '2026-03-03 23:00:00+00';
BEGIN;
SELECT pg_temp.request('POST', '/regress_things', :u1, :ta);
SELECT saas.pre_request();
COMMIT;
BEGIN READ ONLY;
SELECT pg_temp.request('GET', '/regress_things', :u1, :ta);
SELECT saas.pre_request();
COMMIT;
BEGIN READ ONLY;
SELECT pg_temp.request('GET', '/regress_things', :u1, :ta);
SELECT saas.pre_request();
COMMIT;
-- The fourth call, read-only or not, gets 402 until midnight UTC (3600 s).
BEGIN READ ONLY;
SELECT pg_temp.request('GET', '/regress_things', :u1, :ta);
SELECT saas.pre_request();
ROLLBACK;
BEGIN;
SELECT pg_temp.request('POST', '/regress_things', :u1, :ta);
SELECT saas.pre_request();
ROLLBACK;
-- Over its quota, tenant A can still open its usage page and workspace list
-- (saas.quota_exemptions, also as PostgREST decodes the path); the call is
-- still counted.
SELECT path_pattern, builtin FROM saas.quota_exemptions ORDER BY 1;
BEGIN;
SELECT pg_temp.request('POST', '/rpc/usage_%72eport', :u1, :ta);
SELECT pg_temp.calls(:ta, '2026-03-03') AS counted_before;
SELECT saas.pre_request(), 'exempt from the quota' AS outcome;
SELECT pg_temp.calls(:ta, '2026-03-03') AS counted_after;
ROLLBACK;
-- Tenant B's plan has no row in saas.plans: unlimited.
BEGIN;
SELECT pg_temp.request('POST', '/regress_things', :u1, :tb);
SELECT saas.pre_request();
COMMIT;
-- Nothing written yet; pending in shared memory: 4 calls of A (the exempt
-- one counted although its transaction rolled back), 1 of B.
SELECT tenant_id = :ta AS tenant_a, metric, day, count FROM saas.usage_daily
WHERE tenant_id IN (:ta, :tb) ORDER BY 1 DESC;
SELECT tenant_id = :ta AS tenant_a, metric, DATE '2000-01-01' + day AS day, pending
FROM saas._usage_pending() WHERE kind = 'usage' AND tenant_id IN (:ta, :tb) ORDER BY 1 DESC;
-- The report adds both, for the current tenant only.
BEGIN;
SELECT pg_temp.request('GET', '/rpc/usage_report', :u1, :ta);
SELECT * FROM saas.usage_report('2026-03-01', '2026-03-31');
ROLLBACK;
-- run_maintenance flushes; the total is unchanged and nothing is pending.
SELECT action, detail FROM saas.run_maintenance() WHERE action IN ('flush', 'error');
SELECT tenant_id = :ta AS tenant_a, metric, day, count FROM saas.usage_daily
WHERE tenant_id IN (:ta, :tb) ORDER BY 1 DESC;
SELECT count(*) AS still_pending FROM saas._usage_pending() WHERE tenant_id IN (:ta, :tb);
SELECT sum(refusals) AS refusals_flushed FROM saas.rate_limit_refusals r
JOIN saas.rate_limit_rules ru ON ru.id = r.rule_id WHERE ru.path_pattern LIKE '/%regress%';
-- A flush rolled back leaves the counts pending for the next one.
BEGIN READ ONLY;
SELECT pg_temp.request('GET', '/regress_things', :u1, :tb);
SELECT saas.pre_request();
COMMIT;
BEGIN;
SELECT saas.usage_flush() AS flushed, saas.usage_flush() AS flushed_again_in_same_transaction;
ROLLBACK;
SELECT pending FROM saas._usage_pending() WHERE tenant_id = :tb;
SELECT saas.usage_flush() > 0 AS flushed;
SELECT count FROM saas.usage_daily WHERE tenant_id = :tb;
-- usage_report errors
SELECT * FROM saas.usage_report('2026-03-31', '2026-03-01');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.usage_report(NULL, '2026-03-01');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.usage_report('2026-03-01', '2026-03-31');
\echo :LAST_ERROR_SQLSTATE

-- ---------------------------------------------------------------------------
-- Storage quota: 1000 bytes for plan regress-small.
-- ---------------------------------------------------------------------------
SET client_min_messages = error;
BEGIN;
SELECT saas.set_tenant(:ta) IS NOT NULL AS scoped;
SELECT saas.storage_reserve(600) AS used;
SELECT saas.storage_reserve(400) AS used;
SELECT saas.storage_reserve(1);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SELECT saas.set_tenant(:ta) IS NOT NULL AS scoped;
SELECT saas.storage_reserve(1001);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SELECT saas.set_tenant(:ta) IS NOT NULL AS scoped;
SELECT saas.storage_reserve(700) AS used, saas.storage_release(200) AS after_release;
SELECT saas.storage_release(501);
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SELECT saas.set_tenant(:tb) IS NOT NULL AS scoped;
SELECT saas.storage_reserve(10000000000) AS unlimited_plan;
ROLLBACK;
SELECT saas.storage_reserve(0);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.storage_reserve(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.storage_reserve(10);
\echo :LAST_ERROR_SQLSTATE
RESET client_min_messages;

-- ---------------------------------------------------------------------------
-- Privileges: API roles run pre_request and usage_report, not the rest.
-- ---------------------------------------------------------------------------
CREATE ROLE regress_limit_api NOLOGIN;
SELECT saas.grant_api('{regress_limit_api}');
SELECT f AS function, has_function_privilege('regress_limit_api', f, 'EXECUTE') AS api_can_execute
FROM unnest(ARRAY['saas.pre_request()', 'saas.usage_report(date,date)', 'saas.rate_limit(text,integer,integer,interval,integer)',
                  'saas.rate_limit_rule_set(text,integer,interval,text,text,integer,integer)', 'saas.storage_reserve(bigint)',
                  'saas.storage_release(bigint)', 'saas.usage_flush()', 'saas._usage_pending()']) f ORDER BY 1;
SELECT has_table_privilege('regress_limit_api', 'saas.usage_daily', 'SELECT') AS api_reads_usage,
       has_table_privilege('regress_limit_api', 'saas.rate_limit_state', 'SELECT') AS api_reads_state;
-- As the API role, in a read-only request: limited through shared memory.
BEGIN READ ONLY;
SET LOCAL ROLE regress_limit_api;
SELECT pg_temp.request('GET', '/rpc/regress_generate', :u2, :tb);
SELECT saas.pre_request();
SELECT current_setting('response.headers') AS response_headers;
ROLLBACK;

-- ---------------------------------------------------------------------------
-- Dropping a rule removes its state; cleanup
-- ---------------------------------------------------------------------------
SELECT saas.rate_limit_rule_drop('/rpc/regress_generate') AS dropped, saas.rate_limit_rule_drop('/rpc/regress_generate') AS again;
SELECT saas.rate_limit_rule_drop('/regress_items', 'ip', 'post') AS dropped_post_rule;
SELECT saas.rate_limit_rule_drop('/rpc/regress_*', 'tenant') AS dropped_family_rule;
SELECT count(*) AS rules_left FROM saas.rate_limit_rules WHERE path_pattern LIKE '/%regress%';
DELETE FROM saas.usage_daily WHERE tenant_id IN (:ta, :tb);
DELETE FROM saas.rate_limit_refusals;
DELETE FROM saas.rate_limit_state;
DELETE FROM saas.tenant_storage;
DELETE FROM saas.plans WHERE plan = 'regress-small';
DELETE FROM saas.tenants WHERE id IN (:ta, :tb);
DROP OWNED BY regress_limit_api;
DROP ROLE regress_limit_api;
RESET saas.rate_limit_clock;

-- Per-IP keys: a client prepending hops gets no fresh bucket.
-- A client prepending hops to X-Forwarded-For does not get a fresh per-IP
-- bucket: the key is the hop our proxy (10.0.0.1) appended.
SELECT saas.rate_limit_rule_set('/rpc/regress_ipkey', 1, '1 hour', scope => 'ip') AS ipkey_rule \gset
BEGIN;
SELECT pg_temp.request('POST', '/rpc/regress_ipkey', NULL, NULL, '198.51.100.77');
SELECT saas.pre_request();
SELECT pg_temp.request('POST', '/rpc/regress_ipkey', NULL, NULL, '1.1.1.1, 198.51.100.77');
SELECT saas.pre_request();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT saas.rate_limit_rule_drop('/rpc/regress_ipkey', 'ip') AS dropped_ipkey_rule;

-- Rule paths match as PostgREST routes them; GET rules limit HEAD.
-- request.path is the raw path; PostgREST routes the percent-decoded one.
SELECT saas.rate_limit_rule_set('/rpc/regress_expensive', 1, '1 hour', scope => 'ip', method => 'post') AS expensive_rule \gset
BEGIN;
SELECT pg_temp.request('POST', '/rpc/regress_expensive', NULL, NULL, '203.0.113.61');
SELECT saas.pre_request();
SELECT pg_temp.request('POST', '/rpc/%72egress_%65xpensive', NULL, NULL, '203.0.113.61');
SELECT saas.pre_request();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
-- An encoded slash is another resource (a table named "rpc/regress_expensive"
-- for PostgREST), so the rule does not apply: admitted.
BEGIN;
SELECT pg_temp.request('POST', '/rpc%2Fregress_expensive', NULL, NULL, '203.0.113.62');
SELECT saas.pre_request();
SELECT saas.pre_request();
ROLLBACK;
-- A GET rule limits HEAD too (a HEAD rule would still only limit HEAD).
SELECT saas.rate_limit_rule_set('/regress_reads', 1, '1 hour', scope => 'ip', method => 'get') AS reads_rule \gset
BEGIN;
SELECT pg_temp.request('HEAD', '/regress_reads', NULL, NULL, '203.0.113.63');
SELECT saas.pre_request();
SELECT pg_temp.request('HEAD', '/regress_%72eads', NULL, NULL, '203.0.113.63');
SELECT saas.pre_request();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT saas.rate_limit_rule_drop('/rpc/regress_expensive', 'ip', 'post') AS dropped_expensive;
SELECT saas.rate_limit_rule_drop('/regress_reads', 'ip', 'get') AS dropped_reads;

-- Planned and estimated counts read the planner's statistics of every
-- tenant's rows: refused on tables and views (400), served for RPC; exact
-- counts are fine.
BEGIN;
SELECT pg_temp.request('GET', '/regress_counted', NULL, NULL);
SELECT set_config('request.headers', '{"prefer": "count=planned"}', true) IS NOT NULL AS set;
SELECT saas.pre_request();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SELECT pg_temp.request('HEAD', '/regress_%63ounted', NULL, NULL);
SELECT set_config('request.headers', '{"prefer": "return=minimal, count=estimated"}', true) IS NOT NULL AS set;
SELECT saas.pre_request();
\echo :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SELECT pg_temp.request('GET', '/regress_counted', NULL, NULL);
SELECT set_config('request.headers', '{"prefer": "count=exact"}', true) IS NOT NULL AS set;
SELECT saas.pre_request(), 'exact count admitted' AS outcome;
SELECT pg_temp.request('GET', '/rpc/regress_counted', NULL, NULL);
SELECT set_config('request.headers', '{"prefer": "count=planned"}', true) IS NOT NULL AS set;
SELECT saas.pre_request(), 'planned count of an RPC admitted' AS outcome;
ROLLBACK;

-- Rules written by plain DML are held to what the limiter can run (terse:
-- the failing row's DETAIL holds its id and creation time).
\set VERBOSITY terse
INSERT INTO saas.rate_limit_rules (path_pattern, count, period) VALUES ('/rpc/huge', 1, '300000 years');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO saas.rate_limit_rules (path_pattern, count, period) VALUES ('/rpc/fine', 2000, '1 ms');
\echo :LAST_ERROR_SQLSTATE
INSERT INTO saas.rate_limit_rules (path_pattern, count, period, max_burst) VALUES ('/rpc/burst', 1, '50 years', 1000);
\echo :LAST_ERROR_SQLSTATE
\set VERBOSITY default
