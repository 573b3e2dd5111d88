-- LLM cache, leases, ledger, prices and budgets. Time is pinned through the
-- p_now arguments; tenants are set by request claims as PostgREST sets
-- them (a machine token: tenant claim, no sub). The cluster preloads
-- pg_saas, so hits are counted in shared memory until llm_hits_flush().
\set SHOW_CONTEXT never
\set ON_ERROR_ROLLBACK on
SET client_min_messages = notice;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';

\set ta '''0000000a-0000-4000-8000-0000000000f1'''
\set tb '''0000000b-0000-4000-8000-0000000000f1'''
INSERT INTO saas.tenants (id, slug, name) VALUES (:ta, 'llm-a', 'LLM A'), (:tb, 'llm-b', 'LLM B');
-- Requests run as an API role that grant_api served (RLS applies to it).
CREATE ROLE regress_llm_api NOLOGIN;
SELECT saas.grant_api('{regress_llm_api}');
\set claims_a '''{"role": "regress_llm_api", "tenant_id": "0000000a-0000-4000-8000-0000000000f1"}'''
\set claims_b '''{"role": "regress_llm_api", "tenant_id": "0000000b-0000-4000-8000-0000000000f1"}'''
\set req '''{"model": "gpt-4o", "temperature": 0, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Plan a roadmap"}]}'''
\set resp '''{"id": "r1", "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "1. Ship"}}], "usage": {"prompt_tokens": 1000, "completion_tokens": 200}}'''

-- ---------------------------------------------------------------------------
-- The key: RFC 8785, ignored fields, bad input
-- ---------------------------------------------------------------------------
SELECT saas.llm_cache_key('{"b": 1, "a": [1.0, 2e0, "x"]}') = saas.llm_cache_key('{"a": [1, 2, "x"], "b": 1.00, "stream": true, "user": "u1"}') AS same_key;
SELECT saas.llm_cache_key('{"model": "c", "prompt": "ab"}') = saas.llm_cache_key('{"model": "bc", "prompt": "a"}') AS concatenation_collides;
SELECT saas.llm_cache_key('{"model": "m", "system": "A"}') = saas.llm_cache_key('{"model": "m", "system": "B"}') AS system_prompts_share_a_key;
SELECT length(saas.llm_cache_key(:req)) AS key_length;
SELECT saas.llm_cache_key('[1, 2]');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_cache_key('{"seed": 9007199254740993}');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_cache_key('{"seed": 9007199254740992}') IS NOT NULL AS two_to_the_53_is_fine;
SELECT saas.llm_cache_key(NULL) IS NULL AS strict;
-- A huge prompt hashes (1 MB).
SELECT length(saas.llm_cache_key(jsonb_build_object('model', 'm', 'messages', jsonb_build_array(jsonb_build_object('role', 'user', 'content', repeat('x', 1048576)))))) AS huge_key;

-- ---------------------------------------------------------------------------
-- Prices: versions, both cached-token conventions, bad input
-- ---------------------------------------------------------------------------
SELECT saas.llm_price_set('openai', 'gpt-4o', 5000000, 15000000, 2500000, effective_from => '2026-01-01 00:00+00');
SELECT saas.llm_price_set('openai', 'gpt-4o', 2500000, 10000000, 1250000, effective_from => '2026-06-01 00:00+00');
SELECT saas.llm_price_set('anthropic', 'claude-sonnet', 3000000, 15000000, 300000, 3750000, false, '2026-01-01 00:00+00');
-- 1000 prompt tokens (800 cached, inside the prompt) + 100 output
SELECT saas.llm_cost('openai', 'gpt-4o', 1000, 100, 800, p_at => '2026-03-01') AS old_price,
       saas.llm_cost('openai', 'gpt-4o', 1000, 100, 800, p_at => '2026-07-01') AS new_price;
-- 100 input + 1000 cache reads + 2000 cache writes (apart) + 10 output
SELECT saas.llm_cost('anthropic', 'claude-sonnet', 100, 10, 1000, 2000, p_at => '2026-07-01') AS anthropic;
SELECT saas.llm_cost('openai', 'gpt-4o', 10, 0, 11, p_at => '2026-07-01');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_cost('openai', 'gpt-4o', -1, 0, p_at => '2026-07-01');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_cost('openai', 'no-such-model', 1, 1, p_at => '2026-07-01');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_price_set('openai', 'gpt-4o', -1, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_price_set('openai', NULL, 1, 1);
\echo :LAST_ERROR_SQLSTATE

-- ---------------------------------------------------------------------------
-- The cache: get, put, cacheability, expiry, stats, tenant isolation
-- ---------------------------------------------------------------------------
BEGIN;
SET LOCAL ROLE regress_llm_api;
SELECT set_config('request.jwt.claims', :claims_a, true) IS NOT NULL AS tenant_a;
SELECT saas.llm_cache_get(:req, '2026-07-01 10:00+00') AS miss;
SELECT saas.llm_cache_put(:req, '{"choices": [{"finish_reason": "length", "message": {"content": "1. Sh"}}]}', p_now => '2026-07-01 10:00+00') - 'cache_key' AS truncated;
SELECT saas.llm_cache_put('{"model": "gpt-4o", "messages": []}', :resp, p_now => '2026-07-01 10:00+00') - 'cache_key' AS nondeterministic;
SELECT saas.llm_cache_put('{"model": "gpt-4o", "messages": []}', :resp, allow_nondeterministic => true, p_now => '2026-07-01 10:00+00') ->> 'cached' AS opted_in;
SELECT saas.llm_cache_put(:req, '{"error": {"message": "overloaded"}}', p_now => '2026-07-01 10:00+00') ->> 'reason' AS error_answer;
SELECT saas.llm_cache_put(:req, :resp, provider => 'openai', p_now => '2026-07-01 10:00+00') - 'cache_key' AS stored;
SELECT saas.llm_cache_get(:req, '2026-07-01 11:00+00') -> 'choices' -> 0 -> 'message' ->> 'content' AS hit;
SELECT saas.llm_cache_get(:req, '2026-07-02 11:00+00') IS NOT NULL AS hit_again;
SELECT saas.llm_cache_get(:req, '2026-07-09 11:00+00') IS NULL AS expired_after_7_days;
SELECT saas.llm_cache_put(:req, :resp, ttl => '0 seconds');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_cache_put(:req, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_cache_get('"text"');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_cache_get('{"messages": []}');
\echo :LAST_ERROR_SQLSTATE
COMMIT;
-- The other tenant never sees tenant A's answer.
BEGIN;
SET LOCAL ROLE regress_llm_api;
SELECT set_config('request.jwt.claims', :claims_b, true) IS NOT NULL AS tenant_b;
SELECT saas.llm_cache_get(:req, '2026-07-01 12:00+00') IS NULL AS no_cross_tenant_hit;
SELECT count(*) AS rows_of_b FROM saas.llm_cache;
\echo :LAST_ERROR_SQLSTATE
COMMIT;
-- Without a tenant
SELECT saas.llm_cache_get(:req);
\echo :LAST_ERROR_SQLSTATE

-- Streamed answers, assembled from their chunks
SELECT saas.llm_assemble_stream('[{"id": "s", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
                                  {"id": "s", "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}]},
                                  {"id": "s", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}]') AS assembled;
SELECT saas.llm_assemble_stream('{"not": "an array"}');
\echo :LAST_ERROR_SQLSTATE

-- Single flight: one lease, the others wait; the put releases it.
BEGIN;
SET LOCAL ROLE regress_llm_api;
SELECT set_config('request.jwt.claims', :claims_a, true) IS NOT NULL AS tenant_a;
SELECT saas.llm_cache_lease('{"model": "gpt-4o", "temperature": 0, "messages": ["lease"]}', 30, '2026-07-01 10:00+00') ->> 'status' AS first;
SELECT saas.llm_cache_lease('{"model": "gpt-4o", "temperature": 0, "messages": ["lease"]}', 30, '2026-07-01 10:00:10+00') - 'cache_key' AS second;
SELECT saas.llm_cache_lease('{"model": "gpt-4o", "temperature": 0, "messages": ["lease"]}', 30, '2026-07-01 10:00:31+00') ->> 'lease_id' AS lease \gset
SELECT :'lease' <> '' AS lapsed_lease_taken_over;
SELECT saas.llm_cache_put('{"model": "gpt-4o", "temperature": 0, "messages": ["lease"]}', :resp,
                          lease_id => :'lease', p_now => '2026-07-01 10:00:40+00') ->> 'cached' AS put;
RESET ROLE;
SELECT count(*) AS leases_left FROM saas.llm_cache_leases;
SELECT saas.llm_cache_lease('{"model": "gpt-4o", "temperature": 0, "messages": ["lease"]}', 30, '2026-07-01 10:01+00') ->> 'status' AS now_a_hit;
SELECT saas.llm_cache_lease('{"model": "gpt-4o"}', 0);
\echo :LAST_ERROR_SQLSTATE
COMMIT;

-- Hit counts: exact, flushed from shared memory; stats per model.
SELECT saas.llm_hits_flush() >= 6 AS flushed;
SELECT cache_key = saas.llm_cache_key(:req) AS main_key, hit_count FROM saas.llm_cache WHERE tenant_id = :ta ORDER BY hit_count, cache_key;
BEGIN;
SET LOCAL ROLE regress_llm_api;
SELECT set_config('request.jwt.claims', :claims_a, true) IS NOT NULL AS tenant_a;
SELECT * FROM saas.llm_cache_stats('2026-07-01', '2026-07-31');
COMMIT;

-- ---------------------------------------------------------------------------
-- Ledger, rollups and budgets
-- ---------------------------------------------------------------------------
SELECT saas.llm_budget_set(:ta, 10000, period => 'day', time_zone => 'Europe/Berlin') > 0 AS budget;
SELECT saas.llm_budget_set(:ta, NULL, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_budget_set(:ta, 1, period => 'week');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_budget_set(:ta, 1, time_zone => 'Mars/Olympus');
\echo :LAST_ERROR_SQLSTATE
BEGIN;
SET LOCAL ROLE regress_llm_api;
SELECT set_config('request.jwt.claims', :claims_a, true) IS NOT NULL AS tenant_a;
-- worst case: 1000 x 2.5 + 500 x 10 = 7500
SELECT reservation_id, reserved_micros, reserved_tokens FROM saas.llm_budget_reserve('openai', 'gpt-4o', 1000, 500, p_now => '2026-07-01 10:00+00');
-- 7500 + 7500 > 10000: refused, with the PostgREST error shape
SAVEPOINT s;
SELECT * FROM saas.llm_budget_reserve('openai', 'gpt-4o', 1000, 500, p_now => '2026-07-01 10:00+00');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK TO s;
-- settle: 200 x 2.5 + 800 x 1.25 + 100 x 10 = 2500
SELECT saas.llm_record_usage('openai', 'gpt-4o', 1000, 100, 800, idempotency_key => 'call-1', reservation_id => 1,
                             finish_reason => 'stop', latency_ms => 1200, p_now => '2026-07-01 10:00:05+00') AS first_usage \gset
SELECT :first_usage > 0 AS recorded;
SELECT saas.llm_record_usage('openai', 'gpt-4o', 1000, 100, 800, idempotency_key => 'call-1', reservation_id => 1,
                             p_now => '2026-07-01 10:00:06+00') = :first_usage AS idempotent;
SELECT saas.llm_budget_settle(1, 2500, 1100) AS settled_twice;
SELECT reservation_id, reserved_micros FROM saas.llm_budget_reserve('openai', 'gpt-4o', 1000, 500, p_now => '2026-07-01 11:00+00');
SELECT saas.llm_record_usage('anthropic', 'claude-sonnet', 100, 10, 1000, 2000, p_now => '2026-07-01 12:00+00') > 0 AS anthropic;
SELECT saas.llm_record_usage('openai', 'gpt-4o', 10, 10, cache_hit => true, saved_micros => 125, p_now => '2026-07-01 12:00+00') > 0 AS hit_recorded;
SELECT saas.llm_record_usage('openai', 'gpt-4o', -1, 0);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_record_usage('openai', 'unknown-model', 1, 0, p_now => '2026-07-01 12:00+00');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_record_usage('openai', 'unknown-model', 1, 0, cost_micros => 7, p_now => '2026-07-01 12:30+00') > 0 AS cost_given;
SELECT saas.llm_budget_settle(999, 1, 1);
\echo :LAST_ERROR_SQLSTATE
COMMIT;
SELECT provider, model, prompt_tokens, cached_read_tokens, cost_micros, price_effective_from, cache_hit, saved_micros
FROM saas.llm_usage ORDER BY usage_id;
SELECT day, provider, model, calls, cache_hits, prompt_tokens, completion_tokens, cost_micros, saved_micros
FROM saas.llm_usage_daily WHERE tenant_id = :ta ORDER BY provider, model;
SELECT window_start, used_micros, used_tokens, reserved_micros, reserved_tokens FROM saas.llm_budget_windows WHERE tenant_id = :ta;
-- An expired reservation is released by maintenance; a later settle still counts the cost.
SELECT action, detail FROM saas.run_maintenance(p_now => '2026-07-01 11:30+00') WHERE parent_table = 'saas.llm_cache'::regclass;
SELECT window_start, used_micros, reserved_micros FROM saas.llm_budget_windows WHERE tenant_id = :ta;
BEGIN;
SET LOCAL ROLE regress_llm_api;
SELECT set_config('request.jwt.claims', :claims_a, true) IS NOT NULL AS tenant_a;
SELECT saas.llm_budget_settle(2, 3000, 1200) AS late_settle;
COMMIT;
SELECT window_start, used_micros, reserved_micros FROM saas.llm_budget_windows WHERE tenant_id = :ta;

-- ---------------------------------------------------------------------------
-- The semantic cache: opt-in per tenant, same context only, tenant-scoped,
-- shadow mode, every hit with its similarity; bad input
-- ---------------------------------------------------------------------------
\set q1 '''{"model": "gpt-4o", "temperature": 0, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]}'''
\set q2 '''{"model": "gpt-4o", "temperature": 0, "user": "u7", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "France capital?"}]}'''
\set q_sys '''{"model": "gpt-4o", "temperature": 0, "messages": [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "France capital?"}]}'''
\set q_temp '''{"model": "gpt-4o", "temperature": 0, "seed": 7, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "France capital?"}]}'''
\set paris '''{"choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Paris"}}], "usage": {"prompt_tokens": 30, "completion_tokens": 1, "cost_micros": 80}}'''
-- The context hash: the last user turn's content and the ignored fields left out, the rest in.
SELECT saas.llm_context_hash(:q1) = saas.llm_context_hash(:q2) AS paraphrases_share_a_context,
       saas.llm_context_hash(:q1) = saas.llm_context_hash(:q_sys) AS other_system_prompt_same_context,
       saas.llm_context_hash(:q1) = saas.llm_context_hash(:q_temp) AS other_parameters_same_context,
       saas.llm_context_hash('{"model": "m", "prompt": "no messages"}') IS NULL AS no_user_turn_no_context;
-- Operators set it per tenant; bad input.
SELECT saas.llm_semantic_set(:ta, 'always');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_semantic_set(:ta, 'on', 0, 'e3', 3);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_semantic_set(:ta, 'on', 1.01, 'e3', 3);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_semantic_set(:ta, 'on', 'NaN', 'e3', 3);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_semantic_set(:ta, 'on');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_semantic_set(:ta, 'on', embedding_model => 'e3', dims => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_semantic_set('00000000-0000-4000-8000-0000000000ff', 'off');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_semantic_set(:ta, 'on', embedding_model => 'e3', dims => 3, p_now => '2026-07-01 00:00+00');
SELECT saas.llm_semantic_set(:tb, 'shadow', 0.9, 'e3', 3, '2026-07-01 00:00+00');
SELECT tenant_id = :ta AS a, mode, threshold, embedding_model, dims FROM saas.llm_semantic_settings ORDER BY 1 DESC;
BEGIN;
SET LOCAL ROLE regress_llm_api;
SELECT set_config('request.jwt.claims', :claims_a, true) IS NOT NULL AS tenant_a;
-- Operators only.
SAVEPOINT s;
SELECT saas.llm_semantic_set(:ta, 'off');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK TO s;
SELECT saas.llm_cache_put(:q1, :paris, embedding => '{1, 0, 0}', p_now => '2026-07-01 10:00+00') - 'cache_key' AS stored_with_embedding;
-- Not cacheable: never stored, so never a semantic candidate either.
SELECT saas.llm_cache_put(:q_temp, '{"choices": [{"finish_reason": "length", "message": {"content": "Pa"}}]}',
                          embedding => '{0, 1, 0}', p_now => '2026-07-01 10:00+00') ->> 'reason' AS not_stored;
-- A paraphrase (same context, similar embedding) hits and says how similar.
SELECT r ->> 'match' AS match, r -> 'response' -> 'choices' -> 0 -> 'message' ->> 'content' AS answer,
       round((r ->> 'similarity')::numeric, 4) AS similarity, r ->> 'cache_key' = saas.llm_cache_key(:q1) AS entry
FROM saas.llm_cache_lookup(:q2, '{0.99, 0.05, 0}', '2026-07-01 10:05+00') r;
-- The exact request is an exact hit.
SELECT saas.llm_cache_lookup(:q1, '{1, 0, 0}', '2026-07-01 10:06+00') ->> 'match' AS exact;
-- Another system prompt never hits, even with the very same embedding.
SELECT saas.llm_cache_lookup(:q_sys, '{1, 0, 0}', '2026-07-01 10:07+00') IS NULL AS other_system_prompt_misses;
-- Other parameters never hit (and the uncacheable answer was not stored).
SELECT saas.llm_cache_lookup(:q_temp, '{0, 1, 0}', '2026-07-01 10:07+00') IS NULL AS other_parameters_miss;
-- Below the threshold (0.95): a miss.
SELECT saas.llm_cache_lookup(:q2, '{0.8, 0.6, 0}', '2026-07-01 10:08+00') IS NULL AS below_threshold_misses;
-- Without an embedding: exact only.
SELECT saas.llm_cache_lookup(:q2, NULL, '2026-07-01 10:08+00') IS NULL AS no_embedding_exact_only;
-- Bad embeddings
SELECT saas.llm_cache_lookup(:q2, '{1, 0}');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_cache_lookup(:q2, '{1, NaN, 0}');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_cache_lookup(:q2, '{1, Infinity, 0}');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_cache_lookup(:q2, '{0, 0, 0}');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_cache_lookup(:q2, '{{1, 0, 0}}');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_cache_put(:q2, :paris, embedding => '{1, NULL, 0}');
\echo :LAST_ERROR_SQLSTATE
COMMIT;
SELECT saas.llm_cache_lookup(NULL, '{1, 0, 0}');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_cache_lookup(:q2, '{1, 0, 0}');
\echo :LAST_ERROR_SQLSTATE
-- A semantic lookup writes its hit: not in a read-only transaction (a GET).
BEGIN READ ONLY;
SET LOCAL ROLE regress_llm_api;
SELECT set_config('request.jwt.claims', :claims_a, true) IS NOT NULL AS tenant_a;
SELECT saas.llm_cache_lookup(:q2, '{0.99, 0.05, 0}', '2026-07-01 10:09+00');
\echo :LAST_ERROR_SQLSTATE
COMMIT;
-- Tenant B (shadow, threshold 0.9): tenant A's entry is never a candidate,
-- not even with the identical request and embedding (similarity 1).
BEGIN;
SET LOCAL ROLE regress_llm_api;
SELECT set_config('request.jwt.claims', :claims_b, true) IS NOT NULL AS tenant_b;
SELECT saas.llm_cache_lookup(:q1, '{1, 0, 0}', '2026-07-01 11:00+00') IS NULL AS a_never_serves_b;
SELECT saas.llm_cache_lookup(:q2, '{0.91, 0.4146, 0}', '2026-07-01 11:00+00') IS NULL AS no_leak_at_091;
-- B's own entry: shadow mode records the would-be hit and serves a miss.
SELECT saas.llm_cache_put(:q1, :paris, embedding => '{1, 0, 0}', p_now => '2026-07-01 11:00+00') ->> 'semantic' AS b_semantic_entry;
SELECT saas.llm_cache_lookup(:q2, '{0.91, 0.4146, 0}', '2026-07-01 11:01+00') IS NULL AS shadow_serves_a_miss;
SELECT saas.llm_cache_lookup(:q2, '{0.8, 0.6, 0}', '2026-07-01 11:02+00') IS NULL AS below_threshold;
SELECT model, served, similarity_from, similarity_to, hits, round(min_similarity::numeric, 4) AS min_similarity
FROM saas.llm_semantic_stats('2026-07-01', '2026-07-01');
SELECT model, lookups, hits, misses, semantic_hits, shadow_hits FROM saas.llm_cache_stats('2026-07-01', '2026-07-01');
SELECT saas.llm_semantic_stats('2026-07-02', '2026-07-01');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_semantic_stats(NULL, '2026-07-01');
\echo :LAST_ERROR_SQLSTATE
COMMIT;
-- What the tenant (and its operator) can check each would-be hit against:
-- the entry that would have been served and the lookup's own key.
SELECT tenant_id = :tb AS b, served, round(similarity::numeric, 4) AS similarity, threshold,
       entry_key = saas.llm_cache_key(:q1) AS would_serve, lookup_key = saas.llm_cache_key(:q2) AS lookup, tokens_saved
FROM saas.llm_semantic_hits ORDER BY id;
BEGIN;
SET LOCAL ROLE regress_llm_api;
SELECT set_config('request.jwt.claims', :claims_a, true) IS NOT NULL AS tenant_a;
SELECT model, served, similarity_from, similarity_to, hits, tokens_saved, saved_micros
FROM saas.llm_semantic_stats('2026-07-01', '2026-07-01');
SELECT model, lookups, hits, misses, semantic_hits, shadow_hits, tokens_saved, saved_micros
FROM saas.llm_cache_stats('2026-07-01', '2026-07-01') WHERE model = 'gpt-4o';
COMMIT;
-- Off: embeddings are ignored, lookups are exact.
SELECT saas.llm_semantic_set(:ta, 'off');
BEGIN;
SET LOCAL ROLE regress_llm_api;
SELECT set_config('request.jwt.claims', :claims_a, true) IS NOT NULL AS tenant_a;
SELECT saas.llm_cache_lookup(:q2, '{0.99, 0.05, 0}', '2026-07-01 12:00+00') IS NULL AS off_is_exact_only;
SELECT saas.llm_cache_lookup(:q2, '{1, 0}', '2026-07-01 12:00+00') IS NULL AS off_ignores_the_embedding;
COMMIT;

-- ---------------------------------------------------------------------------
-- The shared scope: written only by granted roles, read only when asked for
-- ---------------------------------------------------------------------------
\set tpl '''{"model": "gpt-4o", "temperature": 0, "messages": [{"role": "user", "content": "Suggest a project name"}]}'''
CREATE ROLE regress_llm_service NOLOGIN;
SELECT saas.llm_shared_grant('{regress_llm_service}');
SELECT saas.llm_shared_grant('{}');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_shared_grant('{regress_no_such_role}');
\echo :LAST_ERROR_SQLSTATE
BEGIN;
SET LOCAL ROLE regress_llm_api;
SELECT set_config('request.jwt.claims', :claims_a, true) IS NOT NULL AS tenant_a;
-- An API role cannot write the shared scope (function or table) ...
SAVEPOINT s;
SELECT saas.llm_shared_put(:tpl, '{"choices": [{"finish_reason": "stop", "message": {"content": "poison"}}]}');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK TO s;
SELECT saas_api.llm_shared_put(:tpl, '{"choices": [{"finish_reason": "stop", "message": {"content": "poison"}}]}');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK TO s;
INSERT INTO saas.llm_cache_shared (cache_key, model, request, response, written_by, created_at, expires_at)
VALUES (saas.llm_cache_key(:tpl), 'gpt-4o', :tpl, '{}', 'x', now(), now() + interval '1 day');
\echo :LAST_ERROR_SQLSTATE
ROLLBACK TO s;
SELECT count(*) FROM saas.llm_cache_shared;
\echo :LAST_ERROR_SQLSTATE
ROLLBACK TO s;
-- ... and its own put stays in its tenant.
SELECT saas.llm_cache_put(:tpl, '{"choices": [{"finish_reason": "stop", "message": {"content": "A only"}}]}', p_now => '2026-07-01 10:00+00') ->> 'cached' AS tenant_put;
SELECT saas.llm_shared_get(:tpl, '2026-07-01 10:01+00') IS NULL AS tenant_entry_is_not_shared;
COMMIT;
BEGIN;
SET LOCAL ROLE regress_llm_service;
SELECT saas.llm_shared_put(:tpl, '{"choices": [{"finish_reason": "stop", "message": {"content": "Atlas"}}], "usage": {"prompt_tokens": 5, "completion_tokens": 1, "cost_micros": 20}}',
                           ttl => '10 years', p_now => '2026-07-01 10:00+00') - 'cache_key' AS shared_put;
SELECT saas.llm_shared_put(:tpl, '{"choices": [{"finish_reason": "length", "message": {"content": "At"}}]}') ->> 'reason' AS not_cacheable;
COMMIT;
SELECT written_by, hit_count FROM saas.llm_cache_shared;
SELECT saas.llm_shared_put(:tpl, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_shared_put(:tpl, '{"choices": []}', ttl => '0 seconds');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.llm_shared_put('{"messages": []}', '{"choices": []}');
\echo :LAST_ERROR_SQLSTATE
BEGIN;
SET LOCAL ROLE regress_llm_api;
SELECT set_config('request.jwt.claims', :claims_b, true) IS NOT NULL AS tenant_b;
SELECT saas.llm_shared_get(:tpl, '2026-07-01 10:02+00') -> 'choices' -> 0 -> 'message' ->> 'content' AS shared_hit;
SELECT saas_api.llm_shared_get(to_jsonb(:tpl::text)) -> 'choices' -> 0 -> 'message' ->> 'content' AS shared_hit_as_get;
SELECT saas.llm_cache_get(:tpl, '2026-07-01 10:02+00') IS NULL AS tenant_scope_does_not_read_shared;
SELECT saas.llm_shared_get('{"model": "gpt-4o"}', '2026-07-01 10:02+00') IS NULL AS shared_miss;
COMMIT;
BEGIN;
SET LOCAL ROLE regress_llm_api;
SELECT set_config('request.jwt.claims', :claims_a, true) IS NOT NULL AS tenant_a;
SELECT saas.llm_shared_get(:tpl, '2026-07-01 10:03+00') -> 'choices' -> 0 -> 'message' ->> 'content' AS a_reads_shared_not_its_own;
SELECT saas.llm_cache_get(:tpl, '2026-07-01 10:03+00') -> 'choices' -> 0 -> 'message' ->> 'content' AS a_reads_its_own;
COMMIT;
SELECT saas.llm_hits_flush() > 0 AS flushed;
SELECT hit_count, last_hit_at >= '2026-07-01' AS hit_at FROM saas.llm_cache_shared;
SELECT tenant_id = :ta AS a, day, model, hits, misses, shared_hits, overflow_hits, tokens_saved, saved_micros
FROM saas.llm_cache_daily WHERE day = '2026-07-01' ORDER BY 1 DESC, model;
SELECT saas.llm_shared_get(:tpl);
\echo :LAST_ERROR_SQLSTATE
REVOKE ALL ON SCHEMA saas, saas_api FROM regress_llm_service;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA saas, saas_api FROM regress_llm_service;
DROP ROLE regress_llm_service;

-- Leave nothing for the suites after this one: the ledger's partitions and
-- its partition_config row, and every llm row.
DO $$
DECLARE
  part regclass;
BEGIN
  FOR part IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'saas.llm_usage'::regclass LOOP
    EXECUTE format('DROP TABLE %s', part);
  END LOOP;
END
$$;
DELETE FROM saas.partition_config WHERE parent = 'saas.llm_usage'::regclass;
TRUNCATE saas.llm_cache, saas.llm_cache_leases, saas.llm_cache_daily, saas.llm_usage_keys, saas.llm_usage_daily,
         saas.llm_reservations, saas.llm_budget_windows, saas.llm_prices, saas.llm_semantic_settings, saas.llm_semantic_hits,
         saas.llm_cache_shared;
DELETE FROM saas.llm_budgets;
SELECT saas.llm_hits_flush() AS nothing_pending;
