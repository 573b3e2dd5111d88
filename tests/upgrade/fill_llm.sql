-- The llm module's data (new in 0.2.0): what tests/upgrade.rs writes into the
-- fresh install and into each upgraded database, after fill.sql, before
-- comparing them; and what tests/backup.rs dumps and restores. Times pinned.
SET client_min_messages = warning;
SELECT saas.grant_api('{upgrade_api}');
SELECT saas.llm_price_set('openai', 'gpt-4o', 2500000, 10000000, 1250000, effective_from => '2026-01-01 00:00+00');
SELECT saas.llm_price_set('openai', 'gpt-4o', 2000000, 8000000, 1000000, effective_from => '2026-10-01 00:00+00');
SELECT saas.llm_price_set('anthropic', 'claude-sonnet', 3000000, 15000000, 300000, 3750000, false, '2026-01-01 00:00+00');
SELECT saas.llm_budget_set('00000001-0000-4000-8000-0000000000aa', 5000000, period => 'month', time_zone => 'Europe/Berlin');
-- The semantic cache on for the tenant; an answer of the shared scope.
SELECT saas.llm_semantic_set('00000001-0000-4000-8000-0000000000aa', 'on', 0.95, 'e3', 3, '2026-10-01 00:00+00');
SELECT saas.llm_shared_put('{"model": "gpt-4o", "temperature": 0, "messages": [{"role": "user", "content": "Name a project"}]}',
                           '{"choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": "Atlas"}}]}',
                           ttl => '10 years', p_now => '2026-10-15 10:00+00');
BEGIN;
SELECT saas.set_tenant('00000001-0000-4000-8000-0000000000aa');
SELECT saas.llm_cache_put('{"model": "gpt-4o", "temperature": 0, "messages": [{"role": "user", "content": "hello"}]}',
                          '{"choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}], "usage": {"prompt_tokens": 8, "completion_tokens": 2}}',
                          provider => 'openai', ttl => '10 years', p_now => '2026-10-15 10:00+00');
SELECT saas.llm_cache_get('{"messages": [{"content": "hello", "role": "user"}], "temperature": 0.0, "model": "gpt-4o"}', '2026-10-15 11:00+00');
SELECT saas.llm_cache_put('{"model": "gpt-4o", "temperature": 0, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]}',
                          '{"choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": "Paris"}}]}',
                          ttl => '10 years', embedding => '{1, 0, 0}', p_now => '2026-10-15 10:00+00');
SELECT saas.llm_cache_lookup('{"model": "gpt-4o", "temperature": 0, "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "France capital?"}]}',
                             '{0.99, 0.05, 0}', '2026-10-15 10:05+00');
SELECT saas.llm_shared_get('{"model": "gpt-4o", "temperature": 0, "messages": [{"role": "user", "content": "Name a project"}]}', '2026-10-15 10:06+00');
SELECT reservation_id FROM saas.llm_budget_reserve('openai', 'gpt-4o', 1000, 500, '1 day', '2026-10-15 10:00+00');
SELECT saas.llm_record_usage('openai', 'gpt-4o', 1000, 300, cached_read_tokens => 800, idempotency_key => 'call-1',
                             reservation_id => 1, latency_ms => 900, finish_reason => 'stop', function_name => 'generate_roadmap',
                             p_now => '2026-10-15 10:00+00');
SELECT saas.llm_record_usage('anthropic', 'claude-sonnet', 100, 50, cached_read_tokens => 2000, cache_write_tokens => 500,
                             p_now => '2026-10-16 10:00+00');
COMMIT;
SELECT saas.llm_hits_flush();
