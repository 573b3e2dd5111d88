-- The memory module in use (0.2.0 and later): what tests/upgrade.rs runs on
-- the upgraded and the fresh database after comparing their schemas, and
-- tests/backup.rs on its source before dumping. Runs after fill.sql (the
-- tenants); every time is pinned but the query log's logged_at.
SET client_min_messages = warning;
-- Two models: each builds its HNSW expression index (the second with its
-- own parameters, which a restore must build it with again).
SELECT saas.memory_index_model('fill-3', 3);
SELECT saas.memory_index_model('fill-2', 2, 'l2', m => 8, ef_construction => 32);
BEGIN;
SELECT saas.set_tenant('00000001-0000-4000-8000-0000000000aa');
SELECT saas.memory_add('Allergic to penicillin', subject => 'patient:1', kind => 'allergy', importance => 1,
                       entities => '{penicillin}', event_at => '2026-01-01 00:00+00', model => 'fill-3',
                       embedding => '[1,0,0]', p_now => '2026-01-01 00:00+00');
SELECT saas.memory_add('Prefers morning appointments', subject => 'patient:1', kind => 'preference', importance => 0.4,
                       event_at => '2026-09-25 00:00+00', model => 'fill-3', embedding => '[0.9,0.1,0]',
                       metadata => '{"source": "chat"}', p_now => '2026-09-25 00:00+00');
SELECT saas.memory_add('Asked about parking', subject => 'patient:2', kind => 'chat', importance => 0.1,
                       entities => '{parking,patient:1}', event_at => '2026-10-01 00:00+00', model => 'fill-3',
                       embedding => '[0,1,0]', p_now => '2026-10-01 00:00+00');
SELECT saas.memory_add('Consent for SMS reminders', subject => 'patient:3', kind => 'consent', evergreen => true,
                       event_at => '2020-01-01 00:00+00', p_now => '2020-01-01 00:00+00');
SELECT saas.memory_embed(m.id, 'fill-3', '[0,0,1]', '2026-10-02 00:00+00') FROM saas.memories m WHERE m.subject = 'patient:3';
SELECT saas.memory_embed(m.id, 'fill-2', CASE WHEN m.id % 2 = 0 THEN '[1,0]' ELSE '[0,1]' END::vector, '2026-10-03 00:00+00')
FROM saas.memories m ORDER BY m.id;
-- A search by the index stage, logged, that refreshes access.
SET LOCAL saas.memory_exact_below = 0;
SET LOCAL saas.memory_log_sample_rate = 1;
SELECT count(*) FROM saas.memory_search('[1,0,0]', 'fill-3', k => 2, subjects => '{patient:1}', touch => true,
                                        p_now => '2026-10-15 10:00+00');
COMMIT;
BEGIN;
SELECT saas.set_tenant('00000002-0000-4000-8000-0000000000aa');
SELECT saas.memory_add('Another tenant''s note', subject => 'patient:1', model => 'fill-3', embedding => '[1,0,0]',
                       event_at => '2026-10-10 00:00+00', p_now => '2026-10-10 00:00+00');
COMMIT;
-- A tenant with an HNSW index of its own (pg_dump leaves it out: the
-- restored memory_tenant_indexes row builds it again).
SELECT saas.memory_index_tenant('fill-2', '00000001-0000-4000-8000-0000000000aa') ->> 'model';
