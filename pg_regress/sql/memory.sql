-- Memory search: models and their index, add/embed/pending, the score with
-- its explanation (recency by half-life, evergreen, floor, importance,
-- entity boost), the index stage agreeing with brute force, the versioning
-- flow, erasure leaving nothing, converters, and bad input with SQLSTATEs.
\set SHOW_CONTEXT never
\set VERBOSITY terse
SET client_min_messages = notice;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SET extra_float_digits = 0;
SET saas.memory_log_sample_rate = 0;

\set ta '''0000000a-0000-4000-8000-0000000000f2'''
\set tb '''0000000b-0000-4000-8000-0000000000f2'''
INSERT INTO saas.tenants (id, slug, name) VALUES
  (:ta, 'memory-a', 'Memory A'), (:tb, 'memory-b', 'Memory B');

-- set_tenant() scopes a transaction: the suite runs in one, each statement
-- under its own savepoint so that expected errors do not end it.
\set ON_ERROR_ROLLBACK on
BEGIN;

-- Converters: half-lives from other systems' decay parameters.
SELECT saas.memory_half_life_from_langchain(0.01) AS langchain_default,
       saas.memory_half_life_from_factor(0.995) AS generative_agents,
       saas.memory_half_life_from_elasticsearch('7 days', 0.5) AS es_half_at_scale;
SELECT saas.memory_half_life_from_langchain(1.5);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.memory_half_life_from_factor(0.9, '0 hours');
\echo :LAST_ERROR_SQLSTATE

-- Search before any model exists, then before the index.
SELECT saas.set_tenant(:ta) IS NOT NULL AS scoped;
SELECT * FROM saas.memory_search('[1,0,0]', 'tiny');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.memory_index_model('tiny', 3);
SELECT model, dims, distance, index_name IS NOT NULL AS indexed FROM saas.memory_models ORDER BY model;
-- The index is an HNSW expression index on the cast, partial on the model.
SELECT regexp_replace(pg_get_indexdef(to_regclass('saas.' || index_name)), 'memory_hnsw_[0-9a-f]+', 'memory_hnsw_X')
FROM saas.memory_models WHERE model = 'tiny';
SELECT saas.memory_index_model('tiny', 4);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.memory_index_model('tiny', 3, 'dot');
\echo :LAST_ERROR_SQLSTATE

-- Memories of tenant A, time pinned.
SELECT saas.memory_add('Allergic to penicillin', subject => 'patient:1', kind => 'allergy', importance => 1,
                       event_at => '2025-01-01', model => 'tiny', embedding => '[1,0,0]', p_now => '2025-01-01') AS m1 \gset
SELECT saas.memory_add('Prefers morning appointments', subject => 'patient:1', kind => 'preference', importance => 0.4,
                       event_at => '2026-02-25', model => 'tiny', embedding => '[0.9,0.1,0]', p_now => '2026-02-25') AS m2 \gset
SELECT saas.memory_add('Asked about parking', subject => 'patient:2', kind => 'chat', importance => 0.1,
                       entities => '{parking,patient:1}', event_at => '2026-02-28', model => 'tiny',
                       embedding => '[0,1,0]', p_now => '2026-02-28') AS m3 \gset
SELECT saas.memory_add('Consent for SMS reminders', subject => 'patient:3', kind => 'consent', evergreen => true,
                       event_at => '2020-01-01', p_now => '2020-01-01') AS m4 \gset
SELECT subject, kind, entities, access_count FROM saas.memories WHERE tenant_id = :ta ORDER BY id;
SELECT entity, memory_id = :m3 AS is_m3 FROM saas.memory_entities WHERE tenant_id = :ta ORDER BY entity, memory_id;

-- Pending: the consent has no embedding yet.
SELECT content FROM saas.memory_pending('tiny');
SELECT saas.memory_embed(:m4, 'tiny', '[0.7,0.7,0]', p_now => '2026-03-01');
SELECT count(*) AS pending FROM saas.memory_pending('tiny');

-- Search (brute force: a small tenant), time pinned at 2026-03-01.
SELECT rank, content, round(score::numeric, 4) AS score, exact, explanation ->> 'stage' AS stage,
       round((explanation #>> '{terms,recency,value}')::numeric, 4) AS recency,
       explanation #>> '{terms,recency,evergreen}' AS evergreen
FROM saas.memory_search('[1,0,0]', 'tiny', p_now => '2026-03-01') ORDER BY rank;

-- One explanation in full (rounded): terms, weights, contributions, age and half-life.
SELECT jsonb_pretty(jsonb_build_object(
  'stage', e -> 'stage', 'exact', e -> 'exact', 'result', e -> 'result', 'touch', e -> 'touch',
  'similarity', jsonb_build_object('value', round((e #>> '{terms,similarity,value}')::numeric, 4),
                                   'weight', e #> '{terms,similarity,weight}',
                                   'contribution', round((e #>> '{terms,similarity,contribution}')::numeric, 4)),
  'recency', jsonb_build_object('value', round((e #>> '{terms,recency,value}')::numeric, 4),
                                'age_days', round((e #>> '{terms,recency,age_seconds}')::numeric / 86400, 2),
                                'half_life_days', round((e #>> '{terms,recency,half_life_seconds}')::numeric / 86400, 2),
                                'contribution', round((e #>> '{terms,recency,contribution}')::numeric, 4)),
  'importance', e #> '{terms,importance,value}',
  'entity', e #> '{terms,entity}',
  'sum_of_contributions_is_score',
    abs((e #>> '{terms,similarity,contribution}')::float8 + (e #>> '{terms,recency,contribution}')::float8
      + (e #>> '{terms,importance,contribution}')::float8 + (e #>> '{terms,entity,contribution}')::float8
      - (e ->> 'score')::float8) < 1e-12))
FROM (SELECT explanation AS e FROM saas.memory_search('[1,0,0]', 'tiny', k => 1, p_now => '2026-03-01')) x;

-- Decay flips the top result: a short half-life favours the recent memory;
-- evergreen kinds do not decay; a floor keeps old memories in play.
SELECT rank, content FROM saas.memory_search('[1,0,0]', 'tiny', k => 2, half_life => '1 day',
  weights => '{"similarity": 1, "recency": 2, "importance": 0, "entity": 0}', p_now => '2026-03-01') ORDER BY rank;
SELECT rank, content FROM saas.memory_search('[1,0,0]', 'tiny', k => 2, half_life => '1 day', evergreen_kinds => '{allergy}',
  weights => '{"similarity": 1, "recency": 2, "importance": 0, "entity": 0}', p_now => '2026-03-01') ORDER BY rank;
SELECT content, round((explanation #>> '{terms,recency,value}')::numeric, 4) AS recency
FROM saas.memory_search('[1,0,0]', 'tiny', half_life => '1 day', recency_floor => 0.05, p_now => '2026-03-01')
ORDER BY rank;
-- Per-kind half-lives.
SELECT content, round((explanation #>> '{terms,recency,half_life_seconds}')::numeric / 86400, 1) AS half_life_days
FROM saas.memory_search('[1,0,0]', 'tiny', half_lives => '{"chat": "2 days"}', p_now => '2026-03-01') ORDER BY rank;

-- Entity boost: the query's entities (or subjects) lift memories mentioning them.
SELECT rank, content, explanation #> '{terms,entity,matched}' AS matched
FROM saas.memory_search('[1,0,0]', 'tiny', k => 2, entities => '{parking}',
  weights => '{"entity": 5}', p_now => '2026-03-01') ORDER BY rank;
SELECT rank, content FROM saas.memory_search('[1,0,0]', 'tiny', k => 1, subjects => '{patient:3}',
  weights => '{"entity": 5}', p_now => '2026-03-01') ORDER BY rank;

-- The index stage (forced with saas.memory_exact_below = 0) returns what
-- brute force returns, with entity matches found whatever their distance.
-- Its streams' plans are kept with the settings they were made under: with
-- the session's sorts and scans but index scans off (the first plan of the
-- entity stage is made here), the entity stage still sorts the tenant's
-- rows by exact distance (a fence no index order crosses) and never reads
-- the model's shared HNSW index, whose order is approximate.
SELECT pg_stat_get_xact_numscans(to_regclass('saas.' || index_name)) AS shared_scans_before
FROM saas.memory_models WHERE model = 'tiny' \gset
SET enable_sort = off; SET enable_seqscan = off; SET enable_bitmapscan = off;
SET saas.memory_exact_below = 0;
SELECT rank, content, round(score::numeric, 4) AS score, exact, explanation ->> 'stage' AS stage
FROM saas.memory_search('[1,0,0]', 'tiny', k => 3, entities => '{parking}', p_now => '2026-03-01') ORDER BY rank;
RESET saas.memory_exact_below;
RESET enable_sort; RESET enable_seqscan; RESET enable_bitmapscan;
SELECT pg_stat_get_xact_numscans(to_regclass('saas.' || index_name)) = :shared_scans_before AS shared_index_unread
FROM saas.memory_models WHERE model = 'tiny';
SELECT rank, content, round(score::numeric, 4) AS score, exact, explanation ->> 'stage' AS stage
FROM saas.memory_search('[1,0,0]', 'tiny', k => 3, entities => '{parking}', p_now => '2026-03-01') ORDER BY rank;
-- Both stages score their rows and build the explanations in the same
-- statement (a plan kept for the session): the same scores and terms.
SET saas.memory_exact_below = 0;
CREATE TEMP TABLE by_index AS
SELECT memory_id, score, explanation ->> 'stage' AS stage, explanation - 'stage' - 'exact' - 'result' AS e
FROM saas.memory_search('[0.6,0.8,0]', 'tiny', k => 4, subjects => '{patient:2}', half_lives => '{"chat": "2 days"}', p_now => '2026-03-01');
RESET saas.memory_exact_below;
SELECT count(*) AS rows, string_agg(DISTINCT i.stage, ',') AS index_stages, bool_and(b.score = i.score AND b.e = i.e) AS same
FROM by_index i
JOIN (SELECT memory_id, score, explanation - 'stage' - 'exact' - 'result' AS e
      FROM saas.memory_search('[0.6,0.8,0]', 'tiny', k => 4, subjects => '{patient:2}', half_lives => '{"chat": "2 days"}',
                              p_now => '2026-03-01')) b USING (memory_id);
-- A tenant's own index (memory_index_tenant; run_maintenance builds them
-- from saas.memory_tenant_index_rows embeddings): partial on the model and
-- md5 of the tenant, never the tenant id (index definitions are readable by
-- every role). The index stage reads it and returns what brute force does.
SELECT saas.memory_index_tenant('tiny', :ta) ->> 'index' = saas._memory_tenant_index_name('tiny', :ta) AS built;
SELECT regexp_replace(indexdef, 'memory_hnsw_t_[0-9a-f]+', 'memory_hnsw_t_X') AS indexdef,
       strpos(indexdef, :ta) = 0 AS no_tenant_id
FROM pg_indexes WHERE indexname = saas._memory_tenant_index_name('tiny', :ta);
SELECT pg_stat_get_xact_numscans(to_regclass('saas.' || saas._memory_tenant_index_name('tiny', :ta))) AS scans_before \gset
SET saas.memory_exact_below = 0;
CREATE TEMP TABLE by_own_index AS
SELECT memory_id, score, explanation ->> 'stage' AS stage, explanation - 'stage' - 'exact' - 'result' AS e
FROM saas.memory_search('[0.6,0.8,0]', 'tiny', k => 4, subjects => '{patient:2}', half_lives => '{"chat": "2 days"}', p_now => '2026-03-01');
RESET saas.memory_exact_below;
SELECT pg_stat_get_xact_numscans(to_regclass('saas.' || saas._memory_tenant_index_name('tiny', :ta))) > :scans_before AS own_index_read;
SELECT count(*) AS rows, string_agg(DISTINCT i.stage, ',') AS index_stages, bool_and(b.score = i.score AND b.e = i.e) AS same
FROM by_own_index i
JOIN (SELECT memory_id, score, explanation - 'stage' - 'exact' - 'result' AS e
      FROM saas.memory_search('[0.6,0.8,0]', 'tiny', k => 4, subjects => '{patient:2}', half_lives => '{"chat": "2 days"}',
                              p_now => '2026-03-01')) b USING (memory_id);
-- The stream statements' plans are kept per backend (_memory_stream) with
-- every value of a search as a parameter: searches that differ only in
-- their values still return what brute force returns, each its own top k
-- (changed, the first variant's top would show). The stream reads the
-- index with saas.memory_ef_search and leaves the session's own
-- hnsw.ef_search as it was.
CREATE TEMP TABLE variants (v int, subjects text[], weights jsonb, half_lives jsonb, evergreen text[], age_from text, p_now timestamptz);
INSERT INTO variants VALUES
  (1, '{}', '{}', '{}', '{}', 'event', '2026-03-01'),
  (2, '{patient:2}', '{"recency": 2}', '{"chat": "1 day"}', '{}', 'event', '2026-03-05'),
  (3, '{patient:3}', '{"importance": 1, "entity": 2}', '{}', '{chat}', 'access', '2027-01-01'),
  (4, '{}', '{"similarity": 0.1, "recency": 3}', '{"chat": "90 days"}', '{}', 'event', '2025-12-01');
SET hnsw.ef_search = 7;
SET saas.memory_exact_below = 0;
CREATE TEMP TABLE by_kept AS
SELECT v.v, array_agg(s.memory_id ORDER BY s.rank) AS ids, array_agg(round(s.score::numeric, 6) ORDER BY s.rank) AS scores,
       string_agg(DISTINCT s.explanation ->> 'stage', ',') AS stages
FROM variants v, saas.memory_search('[0.6,0.8,0]', 'tiny', k => 3, subjects => v.subjects, weights => v.weights,
                                    half_lives => v.half_lives, evergreen_kinds => v.evergreen, age_from => v.age_from, p_now => v.p_now) s
GROUP BY v.v;
RESET saas.memory_exact_below;
SHOW hnsw.ef_search;
RESET hnsw.ef_search;
SELECT k.v, k.stages, k.ids = b.ids AND k.scores = b.scores AS same_as_brute_force,
       k.ids <> (SELECT ids FROM by_kept WHERE v = 1) AS other_top_than_first
FROM by_kept k
CROSS JOIN variants v
CROSS JOIN LATERAL (
  SELECT array_agg(s.memory_id ORDER BY s.rank) AS ids, array_agg(round(s.score::numeric, 6) ORDER BY s.rank) AS scores
  FROM saas.memory_search('[0.6,0.8,0]', 'tiny', k => 3, subjects => v.subjects, weights => v.weights,
                          half_lives => v.half_lives, evergreen_kinds => v.evergreen, age_from => v.age_from, p_now => v.p_now) s) b
WHERE v.v = k.v ORDER BY k.v;
SET saas.memory_ef_search = 0;
-- evergreen_kinds may be any array of kind names, a 2-D one too.
SELECT count(*) AS rows FROM saas.memory_search('[1,0,0]', 'tiny', k => 3, evergreen_kinds => '{{chat,note}}', p_now => '2026-03-01');
-- The stream reader called directly: a kept plan runs only with the query
-- type it was prepared for (another type is prepared anew, and refused by
-- the parser, not read as a vector), and NULLs in its arrays are refused.
\set stream_sql 'SELECT e.memory_id, (e.embedding::vector(3)) <=> $1 AS dist, 0.5::float8 FROM saas.memory_embeddings e WHERE e.tenant_id = $2 AND e.model = ''tiny'' ORDER BY 2, 1'
SELECT stopped, streamed, cardinality(ids) AS taken FROM saas._memory_stream(:'stream_sql', '[1,0,0]'::vector, :ta,
  '{1,0.3,0.2,0.3}', 2592000, '{}', '{}', 0, 'event', '2026-03-01', '{}', 2, '{}', '{}', 'cosine', 0);
SELECT stopped FROM saas._memory_stream(:'stream_sql', '[1,0,0]'::text, :ta,
  '{1,0.3,0.2,0.3}', 2592000, '{}', '{}', 0, 'event', '2026-03-01', '{}', 2, '{}', '{}', 'cosine', 0);
\echo :LAST_ERROR_SQLSTATE
-- A restored row builds its index again; dropping the row drops the index.
SELECT format('DROP INDEX saas.%I', index_name) FROM saas.memory_tenant_indexes WHERE tenant_id = :ta AND model = 'tiny' \gexec
CREATE TEMP TABLE dumped_tenant_index AS SELECT * FROM saas.memory_tenant_indexes WHERE tenant_id = :ta AND model = 'tiny';
DELETE FROM saas.memory_tenant_indexes WHERE tenant_id = :ta AND model = 'tiny';
INSERT INTO saas.memory_tenant_indexes SELECT * FROM dumped_tenant_index;
SELECT to_regclass('saas.' || saas._memory_tenant_index_name('tiny', :ta)) IS NOT NULL AS rebuilt;
SELECT saas.memory_drop_tenant_index('tiny', :ta) AS dropped, saas.memory_drop_tenant_index('tiny', :ta) AS again,
       to_regclass('saas.' || saas._memory_tenant_index_name('tiny', :ta)) IS NULL AS index_gone;
-- run_maintenance builds them for tenants at saas.memory_tenant_index_rows
-- embeddings of a model or more (0: never).
SET saas.memory_tenant_index_rows = 0;
SELECT count(*) AS built_when_off FROM saas._memory_maintenance('2026-03-01');
SET saas.memory_tenant_index_rows = 3;
SELECT action, regexp_replace(partition_name, '[0-9a-f]{16}$', 'X') AS index, detail FROM saas._memory_maintenance('2026-03-01') ORDER BY detail;
SELECT count(*) AS built_again FROM saas._memory_maintenance('2026-03-01');
SELECT model, tenant_id = :ta AS tenant_a FROM saas.memory_tenant_indexes ORDER BY model;
SELECT saas.memory_drop_tenant_index(model, tenant_id) FROM saas.memory_tenant_indexes ORDER BY model;
RESET saas.memory_tenant_index_rows;

-- pgvector's three distances, as the scoring statement computes them.
SELECT d, saas._memory_distance('[1,0,0]', '[0.6,0.8,0]', d) AS distance FROM unnest('{cosine,l2,ip}'::text[]) d;
-- k larger than the tenant: min(k, eligible) rows.
SELECT count(*) FROM saas.memory_search('[1,0,0]', 'tiny', k => 50, p_now => '2026-03-01');

-- Touch refreshes access in a read-write transaction, not in a read-only one.
SELECT DISTINCT explanation ->> 'touch' AS touch FROM saas.memory_search('[1,0,0]', 'tiny', k => 1, touch => true, p_now => '2026-03-02');
SELECT content, last_accessed_at, access_count FROM saas.memories WHERE tenant_id = :ta AND access_count > 0 ORDER BY id;
COMMIT;
BEGIN READ ONLY;
SELECT saas.set_tenant(:ta) IS NOT NULL AS scoped;
SELECT DISTINCT explanation ->> 'touch' AS touch FROM saas.memory_search('[1,0,0]', 'tiny', k => 1, touch => true, p_now => '2026-03-03');
COMMIT;
BEGIN;
SELECT saas.set_tenant(:ta) IS NOT NULL AS scoped;
SELECT access_count FROM saas.memories WHERE tenant_id = :ta AND id = :m1;
-- Age from the last access instead of the event.
SELECT round((explanation #>> '{terms,recency,age_seconds}')::numeric / 86400, 2) AS age_days
FROM saas.memory_search('[1,0,0]', 'tiny', k => 1, age_from => 'access', p_now => '2026-03-04');

-- Versioning: a second model beside the first; pending until embedded; then searched.
SELECT saas.memory_index_model('tiny-v2', 2, 'l2') ->> 'dims' AS dims;
SELECT count(*) AS pending_v2 FROM saas.memory_pending('tiny-v2');
SELECT saas.memory_embed(memory_id, 'tiny-v2', CASE WHEN memory_id % 2 = 0 THEN '[1,0]' ELSE '[0,1]' END::vector)
FROM saas.memory_pending('tiny-v2') ORDER BY memory_id;
SELECT count(*) AS pending_v2 FROM saas.memory_pending('tiny-v2');
SELECT count(*) AS v2_rows FROM saas.memory_search('[1,0]', 'tiny-v2', p_now => '2026-03-01');
SELECT model, count(*) FROM saas.memory_embeddings WHERE tenant_id = :ta GROUP BY model ORDER BY model;

-- pg_dump leaves out indexes on an extension's tables: a model row brought
-- back by a restore builds its index again, with the parameters the model
-- was registered with (here a drop, and the row deleted and inserted again).
SELECT saas.memory_index_model('tiny-r', 2, 'l2', m => 8, ef_construction => 32) ->> 'dims' AS dims;
SELECT format('DROP INDEX saas.%I', index_name) FROM saas.memory_models WHERE model = 'tiny-r' \gexec
CREATE TEMP TABLE dumped_model AS SELECT * FROM saas.memory_models WHERE model = 'tiny-r';
DELETE FROM saas.memory_models WHERE model = 'tiny-r';
INSERT INTO saas.memory_models SELECT * FROM dumped_model;
SELECT regexp_replace(pg_get_indexdef(to_regclass('saas.' || index_name)), 'memory_hnsw_[0-9a-f]+', 'memory_hnsw_X')
FROM saas.memory_models WHERE model = 'tiny-r';
SELECT count(*) AS r_rows FROM saas.memory_search('[1,0]', 'tiny-r', p_now => '2026-03-01');

-- Tenant B sees nothing of A.
SELECT saas.set_tenant(:tb) IS NOT NULL AS scoped;
SELECT count(*) AS b_rows FROM saas.memory_search('[1,0,0]', 'tiny', p_now => '2026-03-01');
SELECT saas.memory_embed(:m1, 'tiny', '[1,0,0]');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.memory_forget('patient:1');

-- The query log (sampled: every call here).
SELECT saas.set_tenant(:ta) IS NOT NULL AS scoped;
SET saas.memory_log_sample_rate = 1;
SELECT count(*) FROM saas.memory_search('[1,0,0]', 'tiny', entities => '{parking}', p_now => '2026-03-01');
SELECT count(*) FROM saas.memory_search('[0,0,1]', 'tiny', subjects => '{patient:3}', p_now => '2026-03-01');
SELECT model, k, stage, exact, candidates, returned, subjects, entities, cardinality(result_ids) AS ids, latency_ms >= 0 AS timed
FROM saas.memory_query_log WHERE tenant_id = :ta ORDER BY id;
SET saas.memory_log_sample_rate = 0;
SELECT count(*) > 0 AS log_partitioned FROM saas.partition_config WHERE parent = 'saas.memory_query_log'::regclass;

-- Erasure: the subject's memories, those mentioning it, their embeddings,
-- entity links and the log rows that named or returned them; nothing left.
SELECT saas.memory_forget('patient:1');
SELECT count(*) AS left_memories FROM saas.memories WHERE tenant_id = :ta AND (subject = 'patient:1' OR 'patient:1' = ANY (entities));
SELECT count(*) AS left_embeddings FROM saas.memory_embeddings WHERE tenant_id = :ta AND memory_id IN (:m1, :m2, :m3);
SELECT count(*) AS left_links FROM saas.memory_entities WHERE tenant_id = :ta AND (entity = 'patient:1' OR memory_id IN (:m1, :m2, :m3));
SELECT count(*) AS left_log FROM saas.memory_query_log WHERE tenant_id = :ta
  AND ('patient:1' = ANY (subjects) OR result_ids && ARRAY[:m1, :m2, :m3]::bigint[]);
SELECT count(*) AS text_left FROM saas.memories WHERE content LIKE '%penicillin%' OR content LIKE '%parking%';
SELECT subject FROM saas.memories WHERE tenant_id = :ta ORDER BY id;
SELECT saas.memory_forget('patient:1');
-- No foreign keys between the module's tables (a parallel restore loads
-- them concurrently): deleting a memory deletes its embeddings and links.
SELECT count(*) AS m4_embeddings_before FROM saas.memory_embeddings WHERE tenant_id = :ta AND memory_id = :m4;
DELETE FROM saas.memories WHERE tenant_id = :ta AND id = :m4;
SELECT (SELECT count(*) FROM saas.memory_embeddings WHERE tenant_id = :ta AND memory_id = :m4)
     + (SELECT count(*) FROM saas.memory_entities WHERE tenant_id = :ta AND memory_id = :m4) AS m4_rows_left;
SELECT conrelid::regclass, conname FROM pg_constraint
WHERE contype = 'f' AND conrelid IN ('saas.memories'::regclass, 'saas.memory_entities'::regclass,
                                     'saas.memory_embeddings'::regclass, 'saas.memory_models'::regclass);

-- Bad input, each with its SQLSTATE.
SELECT * FROM saas.memory_search('[1,0]', 'tiny');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.memory_search('[1,0,0]', 'nope');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.memory_search('[1,0,0]', 'tiny', k => 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.memory_search('[1,0,0]', 'tiny', p_now => 'infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.memory_search('[1,0,0]', 'tiny', evergreen_kinds => '{chat,NULL}');
\echo :LAST_ERROR_SQLSTATE
-- The stream reader called directly refuses a k memory_search would refuse
-- (its candidates are kept in O(k)) and a statement over 64 kB.
SELECT stopped FROM saas._memory_stream(:'stream_sql', '[1,0,0]'::vector, :ta,
  '{1,0.3,0.2,0.3}', 2592000, '{}', '{}', 0, 'event', '2026-03-01', '{}', 0, '{}', '{}', 'cosine', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT stopped FROM saas._memory_stream(:'stream_sql' || repeat(' ', 65536), '[1,0,0]'::vector, :ta,
  '{1,0.3,0.2,0.3}', 2592000, '{}', '{}', 0, 'event', '2026-03-01', '{}', 2, '{}', '{}', 'cosine', 0);
\echo :LAST_ERROR_SQLSTATE
-- The stream reader called directly refuses NULLs in its arrays.
SELECT stopped FROM saas._memory_stream(:'stream_sql', '[1,0,0]'::vector, :ta,
  '{1,NULL,0.2,0.3}', 2592000, '{}', '{}', 0, 'event', '2026-03-01', '{}', 2, '{}', '{}', 'cosine', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT stopped FROM saas._memory_stream(:'stream_sql', '[1,0,0]'::vector, :ta,
  '{1,0.3,0.2,0.3}', 2592000, '{}', '{chat,NULL}', 0, 'event', '2026-03-01', '{NULL}', 2, '{0.9,NULL}', '{NULL}', 'cosine', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.memory_search('[1,0,0]', 'tiny', k => 1001);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.memory_search('[1,0,0]', 'tiny', half_life => '0 days');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.memory_search('[1,0,0]', 'tiny', half_lives => '{"chat": "-1 day"}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.memory_search('[1,0,0]', 'tiny', half_lives => '{"chat": "soon"}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.memory_search('[1,0,0]', 'tiny', weights => '{"similarty": 1}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.memory_search('[1,0,0]', 'tiny', weights => '{"recency": -1}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.memory_search('[1,0,0]', 'tiny', weights => '{"similarity": 0, "recency": 0, "importance": 0, "entity": 0}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.memory_search('[1,0,0]', 'tiny', age_from => 'birth');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.memory_search('[1,0,0]', 'tiny', recency_floor => 2);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.memory_search('[NaN,0,0]', 'tiny');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM saas.memory_search(array[1,0,'Infinity']::real[]::vector, 'tiny');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.memory_add('x', importance => 2);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.memory_add('x', model => 'tiny');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.memory_add('x', model => 'tiny', embedding => '[1,2]');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.memory_forget(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT saas._memory_similarity('dot', 0.5);
\echo :LAST_ERROR_SQLSTATE
SELECT saas._memory_recency(1, 0, false, 0);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.set_tenant(NULL);
SELECT * FROM saas.memory_search('[1,0,0]', 'tiny');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.memory_index_tenant('tiny', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT saas.memory_index_tenant('tiny', '00000000-0000-4000-8000-00000000dead');
\echo :LAST_ERROR_SQLSTATE
SELECT saas.memory_index_tenant('no-such-model', :ta);
\echo :LAST_ERROR_SQLSTATE
COMMIT;

-- Later suites list the schema's tables and managed parents: leave no dated
-- partitions of the query log behind.
DO $$
DECLARE
  p regclass;
BEGIN
  FOR p IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'saas.memory_query_log'::regclass LOOP
    EXECUTE format('DROP TABLE %s', p);
  END LOOP;
END
$$;
DELETE FROM saas.partition_config WHERE parent = 'saas.memory_query_log'::regclass;
