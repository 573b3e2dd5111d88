-- pg_saas llm: an LLM response cache keyed by the SHA-256 of the RFC 8785
-- form of the request, single-flight leases for concurrent misses, a usage
-- ledger with daily rollups, versioned prices and budgets that cannot be
-- overspent. The key, the cost arithmetic, cacheability and the hit
-- counters in shared memory are Rust (src/llm/). docs/llm.md.

-- ---------------------------------------------------------------------------
-- Prices: micro-units of the currency per million tokens, per provider,
-- model and version. Global (a Citus reference table).
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.llm_prices (
  provider                    text        NOT NULL,
  model                       text        NOT NULL,
  effective_from              timestamptz NOT NULL,
  input_micros_per_mtok       bigint      NOT NULL,
  cached_input_micros_per_mtok bigint     NOT NULL,
  cache_write_micros_per_mtok bigint      NOT NULL,
  output_micros_per_mtok      bigint      NOT NULL,
  -- true: cached-read and cache-write tokens are counted inside the prompt
  -- tokens (OpenAI); false: apart from them (Anthropic).
  cached_subset               boolean     NOT NULL DEFAULT true,
  currency                    text        NOT NULL DEFAULT 'USD',
  CONSTRAINT llm_prices_pkey PRIMARY KEY (provider, model, effective_from),
  CONSTRAINT llm_prices_nonnegative CHECK (input_micros_per_mtok >= 0 AND cached_input_micros_per_mtok >= 0
                                           AND cache_write_micros_per_mtok >= 0 AND output_micros_per_mtok >= 0),
  CONSTRAINT llm_prices_names CHECK (char_length(provider) BETWEEN 1 AND 64 AND char_length(model) BETWEEN 1 AND 200),
  CONSTRAINT llm_prices_currency CHECK (currency ~ '^[A-Z]{3}$')
);
COMMENT ON TABLE @extschema@.llm_prices IS
  'LLM prices per provider, model and version (effective_from), in micro-units per million tokens. Set with saas.llm_price_set().';
ALTER TABLE @extschema@.llm_prices ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_prices', '');

-- ---------------------------------------------------------------------------
-- The cache: one row per tenant and key. Tenant rows, forced RLS; only the
-- functions of this module write (as the owner).
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.llm_cache (
  tenant_id          uuid        NOT NULL,
  cache_key          text        NOT NULL,
  provider           text,
  model              text        NOT NULL,
  request            jsonb       NOT NULL,
  response           jsonb       NOT NULL,
  prompt_tokens      bigint      NOT NULL DEFAULT 0,
  completion_tokens  bigint      NOT NULL DEFAULT 0,
  -- what the answer cost when it was computed: what each hit saves
  cost_micros        bigint,
  created_by         uuid,
  created_at         timestamptz NOT NULL,
  expires_at         timestamptz NOT NULL,
  hit_count          bigint      NOT NULL DEFAULT 0,
  last_hit_at        timestamptz,
  -- The semantic cache (set when the tenant's mode is shadow or on and the
  -- put passed an embedding): the context hash (saas.llm_context_hash), the
  -- tenant's embedding model and the embedding of the last user turn.
  context_hash       text,
  embedding_model    text,
  embedding          vector,
  CONSTRAINT llm_cache_pkey PRIMARY KEY (tenant_id, cache_key),
  CONSTRAINT llm_cache_key_format CHECK (cache_key ~ '^[0-9a-f]{64}$'),
  CONSTRAINT llm_cache_semantic CHECK ((context_hash IS NULL) = (embedding IS NULL) AND (embedding IS NULL) = (embedding_model IS NULL))
);
CREATE INDEX llm_cache_expires_idx ON @extschema@.llm_cache (expires_at);
-- The candidates of a semantic lookup: one tenant, context and embedding
-- model (few rows, scanned exactly; docs/llm.md says why not HNSW).
CREATE INDEX llm_cache_context_idx ON @extschema@.llm_cache (tenant_id, context_hash, embedding_model)
  WHERE context_hash IS NOT NULL;
COMMENT ON TABLE @extschema@.llm_cache IS
  'LLM responses per tenant and cache key (saas.llm_cache_key), with expiry and exact hit counts (flushed from shared memory by run_maintenance).';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_cache', '');

-- Single-flight: the caller holding a key's lease computes the answer; the
-- others are told to wait. Ephemeral, not dumped.
CREATE TABLE @extschema@.llm_cache_leases (
  tenant_id   uuid        NOT NULL,
  cache_key   text        NOT NULL,
  lease_id    uuid        NOT NULL,
  holder      uuid,
  expires_at  timestamptz NOT NULL,
  CONSTRAINT llm_cache_leases_pkey PRIMARY KEY (tenant_id, cache_key)
);
COMMENT ON TABLE @extschema@.llm_cache_leases IS
  'Single-flight leases of concurrent cache misses (saas.llm_cache_lease); released by llm_cache_put or when they expire.';

-- Hits and misses per tenant, UTC day and model, written by the flush.
CREATE TABLE @extschema@.llm_cache_daily (
  tenant_id     uuid   NOT NULL,
  day           date   NOT NULL,
  model         text   NOT NULL,
  hits          bigint NOT NULL DEFAULT 0,
  misses        bigint NOT NULL DEFAULT 0,
  tokens_saved  bigint NOT NULL DEFAULT 0,
  saved_micros  bigint NOT NULL DEFAULT 0,
  -- of hits: answers of the shared scope, and hits counted while the hit
  -- counters were full (per model, without their entry: no savings)
  shared_hits   bigint NOT NULL DEFAULT 0,
  overflow_hits bigint NOT NULL DEFAULT 0,
  CONSTRAINT llm_cache_daily_pkey PRIMARY KEY (tenant_id, day, model)
);
COMMENT ON TABLE @extschema@.llm_cache_daily IS
  'LLM cache hits, misses, tokens and money saved per tenant, UTC day and model; read with saas.llm_cache_stats().';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_cache_daily', '');

-- ---------------------------------------------------------------------------
-- The semantic cache: per-tenant opt-in (operators set it) and one row per
-- served or would-be (shadow) semantic hit with its similarity.
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.llm_semantic_settings (
  tenant_id        uuid        NOT NULL,
  mode             text        NOT NULL DEFAULT 'off',
  threshold        float8      NOT NULL DEFAULT 0.95,
  embedding_model  text,
  dims             int,
  updated_at       timestamptz NOT NULL,
  CONSTRAINT llm_semantic_settings_pkey PRIMARY KEY (tenant_id),
  CONSTRAINT llm_semantic_settings_mode CHECK (mode IN ('off', 'shadow', 'on')),
  CONSTRAINT llm_semantic_settings_threshold CHECK (threshold > 0 AND threshold <= 1),
  CONSTRAINT llm_semantic_settings_model CHECK (mode = 'off' OR (embedding_model IS NOT NULL AND dims BETWEEN 1 AND 16000))
);
COMMENT ON TABLE @extschema@.llm_semantic_settings IS
  'Semantic LLM cache per tenant: mode off, shadow (would-be hits recorded, misses served) or on; cosine similarity threshold; the embedding model and its dimension. Set with saas.llm_semantic_set().';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_semantic_settings', '');

CREATE TABLE @extschema@.llm_semantic_hits (
  tenant_id      uuid        NOT NULL,
  id             bigint      GENERATED ALWAYS AS IDENTITY,
  looked_up_at   timestamptz NOT NULL,
  model          text        NOT NULL,
  -- true: the entry was served; false: shadow mode, a miss was served
  served         boolean     NOT NULL,
  similarity     float8      NOT NULL,
  threshold      float8      NOT NULL,
  -- the entry served (or that would have been) and the lookup's own key:
  -- once the answer to lookup_key is cached, the two can be compared
  entry_key      text        NOT NULL,
  lookup_key     text        NOT NULL,
  tokens_saved   bigint      NOT NULL DEFAULT 0,
  saved_micros   bigint      NOT NULL DEFAULT 0,
  CONSTRAINT llm_semantic_hits_pkey PRIMARY KEY (tenant_id, id)
);
CREATE INDEX llm_semantic_hits_time_idx ON @extschema@.llm_semantic_hits (tenant_id, looked_up_at);
COMMENT ON TABLE @extschema@.llm_semantic_hits IS
  'Every semantic hit of the LLM cache, served or would-be (shadow), with its similarity and the entry; kept 90 days. Read with saas.llm_semantic_stats().';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_semantic_hits', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.llm_semantic_hits', 'id'), '');

-- ---------------------------------------------------------------------------
-- The shared scope: answers that hold no tenant data (a public prompt
-- template), one row per key for every tenant. Written only by roles an
-- operator named with saas.llm_shared_grant(); read only by
-- saas.llm_shared_get(), which a caller must call by name. No policy: API
-- roles have no privilege on the table and RLS hides it from anyone else.
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.llm_cache_shared (
  cache_key          text        NOT NULL,
  provider           text,
  model              text        NOT NULL,
  request            jsonb       NOT NULL,
  response           jsonb       NOT NULL,
  prompt_tokens      bigint      NOT NULL DEFAULT 0,
  completion_tokens  bigint      NOT NULL DEFAULT 0,
  cost_micros        bigint,
  written_by         text        NOT NULL,
  created_at         timestamptz NOT NULL,
  expires_at         timestamptz NOT NULL,
  hit_count          bigint      NOT NULL DEFAULT 0,
  last_hit_at        timestamptz,
  CONSTRAINT llm_cache_shared_pkey PRIMARY KEY (cache_key),
  CONSTRAINT llm_cache_shared_key_format CHECK (cache_key ~ '^[0-9a-f]{64}$')
);
COMMENT ON TABLE @extschema@.llm_cache_shared IS
  'LLM answers of the shared (non-tenant) scope: written by saas.llm_shared_put() (roles granted by saas.llm_shared_grant()), read by saas.llm_shared_get().';
ALTER TABLE @extschema@.llm_cache_shared ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_cache_shared', '');

-- ---------------------------------------------------------------------------
-- The usage ledger: one row per LLM call, monthly partitions (made on first
-- use and kept by run_maintenance; retention through
-- saas.create_monthly_partitions('saas.llm_usage', 'created_at', retention => ...)).
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.llm_usage (
  tenant_id           uuid        NOT NULL,
  usage_id            bigint      GENERATED ALWAYS AS IDENTITY,
  created_at          timestamptz NOT NULL,
  user_id             uuid,
  function_name       text,
  provider            text        NOT NULL,
  model               text        NOT NULL,
  prompt_tokens       bigint      NOT NULL DEFAULT 0,
  cached_read_tokens  bigint      NOT NULL DEFAULT 0,
  cache_write_tokens  bigint      NOT NULL DEFAULT 0,
  completion_tokens   bigint      NOT NULL DEFAULT 0,
  reasoning_tokens    bigint      NOT NULL DEFAULT 0,
  cost_micros         bigint      NOT NULL,
  -- the price version charged (NULL: the caller passed the cost)
  price_effective_from timestamptz,
  cache_hit           boolean     NOT NULL DEFAULT false,
  saved_micros        bigint      NOT NULL DEFAULT 0,
  latency_ms          integer,
  finish_reason       text,
  idempotency_key     text,
  reservation_id      bigint,
  -- No primary key on the parent: each partition gets (tenant_id,
  -- created_at, usage_id) from _llm_partition_hook, so pg_dump dumps the
  -- partitions (made outside CREATE EXTENSION) with their keys.
  CONSTRAINT llm_usage_nonnegative CHECK (prompt_tokens >= 0 AND cached_read_tokens >= 0 AND cache_write_tokens >= 0
                                          AND completion_tokens >= 0 AND reasoning_tokens >= 0
                                          AND cost_micros >= 0 AND saved_micros >= 0)
) PARTITION BY RANGE (created_at);
COMMENT ON TABLE @extschema@.llm_usage IS
  'One row per LLM call: tokens, cost in integer micro-units, cache hit, latency, finish reason. Written by saas.llm_record_usage().';
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.llm_usage', 'usage_id'), '');

-- Idempotency keys of the ledger (a partitioned table cannot hold a unique
-- key without the month); kept 35 days.
CREATE TABLE @extschema@.llm_usage_keys (
  tenant_id        uuid        NOT NULL,
  idempotency_key  text        NOT NULL,
  usage_id         bigint      NOT NULL,
  created_at       timestamptz NOT NULL,
  CONSTRAINT llm_usage_keys_pkey PRIMARY KEY (tenant_id, idempotency_key)
);
COMMENT ON TABLE @extschema@.llm_usage_keys IS
  'Idempotency keys of saas.llm_usage rows (35 days): a call recorded twice is one row.';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_usage_keys', '');

-- Daily rollups per tenant (UTC days), kept in the transaction that records.
CREATE TABLE @extschema@.llm_usage_daily (
  tenant_id           uuid   NOT NULL,
  day                 date   NOT NULL,
  provider            text   NOT NULL,
  model               text   NOT NULL,
  calls               bigint NOT NULL DEFAULT 0,
  cache_hits          bigint NOT NULL DEFAULT 0,
  prompt_tokens       bigint NOT NULL DEFAULT 0,
  cached_read_tokens  bigint NOT NULL DEFAULT 0,
  cache_write_tokens  bigint NOT NULL DEFAULT 0,
  completion_tokens   bigint NOT NULL DEFAULT 0,
  reasoning_tokens    bigint NOT NULL DEFAULT 0,
  cost_micros         bigint NOT NULL DEFAULT 0,
  saved_micros        bigint NOT NULL DEFAULT 0,
  CONSTRAINT llm_usage_daily_pkey PRIMARY KEY (tenant_id, day, provider, model)
);
COMMENT ON TABLE @extschema@.llm_usage_daily IS
  'LLM calls, tokens and cost per tenant, UTC day, provider and model, kept with each saas.llm_record_usage().';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_usage_daily', '');

-- ---------------------------------------------------------------------------
-- Budgets: per tenant (user_id NULL) or per user, per day or month in a
-- time zone; reservations hold worst-case cost until settled.
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.llm_budgets (
  tenant_id        uuid   NOT NULL,
  budget_id        bigint GENERATED ALWAYS AS IDENTITY,
  user_id          uuid,
  period           text   NOT NULL,
  max_cost_micros  bigint,
  max_tokens       bigint,
  time_zone        text   NOT NULL DEFAULT 'UTC',
  CONSTRAINT llm_budgets_pkey PRIMARY KEY (tenant_id, budget_id),
  CONSTRAINT llm_budgets_scope UNIQUE NULLS NOT DISTINCT (tenant_id, user_id, period),
  CONSTRAINT llm_budgets_period CHECK (period IN ('day', 'month')),
  CONSTRAINT llm_budgets_limits CHECK (max_cost_micros >= 0 AND max_tokens >= 0
                                       AND (max_cost_micros IS NOT NULL OR max_tokens IS NOT NULL))
);
COMMENT ON TABLE @extschema@.llm_budgets IS
  'LLM budgets per tenant (user_id NULL) or user: cost in micro-units and/or tokens per day or month in time_zone. Set with saas.llm_budget_set().';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_budgets', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.llm_budgets', 'budget_id'), '');

CREATE TABLE @extschema@.llm_budget_windows (
  tenant_id        uuid        NOT NULL,
  budget_id        bigint      NOT NULL,
  window_start     timestamptz NOT NULL,
  used_micros      bigint      NOT NULL DEFAULT 0,
  used_tokens      bigint      NOT NULL DEFAULT 0,
  reserved_micros  bigint      NOT NULL DEFAULT 0,
  reserved_tokens  bigint      NOT NULL DEFAULT 0,
  -- No foreign key to llm_budgets: pg_restore loads the dumped rows of
  -- extension tables in parallel, in any order. llm_budget_drop deletes a
  -- budget's windows.
  CONSTRAINT llm_budget_windows_pkey PRIMARY KEY (tenant_id, budget_id, window_start),
  CONSTRAINT llm_budget_windows_nonnegative CHECK (used_micros >= 0 AND used_tokens >= 0
                                                   AND reserved_micros >= 0 AND reserved_tokens >= 0)
);
COMMENT ON TABLE @extschema@.llm_budget_windows IS
  'Use and reservations of each LLM budget per day or month window.';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_budget_windows', '');

CREATE TABLE @extschema@.llm_reservations (
  tenant_id        uuid        NOT NULL,
  reservation_id   bigint      GENERATED ALWAYS AS IDENTITY,
  user_id          uuid,
  provider         text        NOT NULL,
  model            text        NOT NULL,
  -- the budget windows held: budget_ids[i] in window_starts[i]
  budget_ids       bigint[]    NOT NULL,
  window_starts    timestamptz[] NOT NULL,
  reserved_micros  bigint      NOT NULL,
  reserved_tokens  bigint      NOT NULL,
  created_at       timestamptz NOT NULL,
  expires_at       timestamptz NOT NULL,
  released_at      timestamptz,
  settled_at       timestamptz,
  actual_micros    bigint,
  actual_tokens    bigint,
  CONSTRAINT llm_reservations_pkey PRIMARY KEY (tenant_id, reservation_id)
);
COMMENT ON TABLE @extschema@.llm_reservations IS
  'Worst-case cost held by saas.llm_budget_reserve() until settled (llm_budget_settle, llm_record_usage) or expired (released by run_maintenance).';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.llm_reservations', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.llm_reservations', 'reservation_id'), '');

-- Tenant tables: forced RLS, a tenant reads its own rows; the functions of
-- this module write as the owner.
DO $rls$
DECLARE
  rel regclass;
BEGIN
  FOREACH rel IN ARRAY ARRAY['@extschema@.llm_cache'::regclass, '@extschema@.llm_cache_leases'::regclass,
                             '@extschema@.llm_cache_daily'::regclass, '@extschema@.llm_usage'::regclass,
                             '@extschema@.llm_usage_keys'::regclass, '@extschema@.llm_usage_daily'::regclass,
                             '@extschema@.llm_budgets'::regclass, '@extschema@.llm_budget_windows'::regclass,
                             '@extschema@.llm_reservations'::regclass, '@extschema@.llm_semantic_settings'::regclass,
                             '@extschema@.llm_semantic_hits'::regclass] LOOP
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', rel);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', rel);
    EXECUTE format('CREATE POLICY saas_tenant_read ON %s FOR SELECT USING (tenant_id = (SELECT @extschema@.current_tenant()))', rel);
  END LOOP;
END
$rls$;

-- ---------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@._llm_tenant(fn text)
RETURNS uuid
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@.current_tenant();
BEGIN
  IF t IS NULL THEN
    RAISE EXCEPTION '%: there is no current tenant', fn
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'Call it inside a request with a tenant (JWT claim or X-Tenant-Id), or after saas.set_tenant() in a job.';
  END IF;
  RETURN t;
END
$$;

CREATE FUNCTION @extschema@._llm_request(fn text, request jsonb)
RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF request IS NULL THEN
    RAISE EXCEPTION '%: request must not be NULL', fn
      USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Pass the request body as sent to the provider, e.g. ''{"model": "gpt-4o", "messages": [...]}''.';
  END IF;
  IF jsonb_typeof(request -> 'model') IS DISTINCT FROM 'string' THEN
    RAISE EXCEPTION '%: the request has no "model" string', fn
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass the whole request as sent to the provider, model included.';
  END IF;
  RETURN request ->> 'model';
END
$$;

-- UTC days since 2000-01-01, as the shared-memory counters keep days.
CREATE FUNCTION @extschema@._llm_day(ts timestamptz)
RETURNS int
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN (ts AT TIME ZONE 'UTC')::date - DATE '2000-01-01';

-- A hit, a hit of the shared scope or a miss: in shared memory when
-- preloaded (exact also in READ ONLY transactions; a hit of a full table
-- per model in the overflow slots), else in the tables (read-write
-- transactions only).
CREATE FUNCTION @extschema@._llm_count_lookup(t uuid, kind text, key text, model text, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  tokens bigint := 0;
  saved bigint := 0;
BEGIN
  IF @extschema@._llm_count(kind, t, @extschema@._llm_day(p_now), CASE WHEN kind = 'miss' THEN model ELSE key END, model) THEN
    RETURN;
  END IF;
  IF current_setting('transaction_read_only') = 'on' THEN
    RAISE EXCEPTION 'llm_cache_get cannot count this lookup in a read-only transaction'
      USING ERRCODE = CASE WHEN @extschema@._llm_shared_counts() THEN 'insufficient_resources' ELSE 'read_only_sql_transaction' END,
            HINT = CASE WHEN @extschema@._llm_shared_counts()
                        THEN 'The shared-memory hit counters and their overflow slots are full: run saas.run_maintenance() more often or raise saas.llm_hit_slots.'
                        ELSE 'Add pg_saas to shared_preload_libraries and restart PostgreSQL: hits are then counted in shared memory, also in PostgREST GET requests.' END;
  END IF;
  IF kind = 'hit' THEN
    UPDATE @extschema@.llm_cache c SET hit_count = c.hit_count + 1, last_hit_at = p_now
    WHERE c.tenant_id = t AND c.cache_key = key
    RETURNING c.prompt_tokens + c.completion_tokens, coalesce(c.cost_micros, 0) INTO tokens, saved;
  ELSIF kind = 'shared' THEN
    UPDATE @extschema@.llm_cache_shared c SET hit_count = c.hit_count + 1, last_hit_at = p_now
    WHERE c.cache_key = key
    RETURNING c.prompt_tokens + c.completion_tokens, coalesce(c.cost_micros, 0) INTO tokens, saved;
  END IF;
  INSERT INTO @extschema@.llm_cache_daily AS d (tenant_id, day, model, hits, misses, shared_hits, tokens_saved, saved_micros)
  VALUES (t, (p_now AT TIME ZONE 'UTC')::date, model, (kind <> 'miss')::int, (kind = 'miss')::int, (kind = 'shared')::int,
          coalesce(tokens, 0), coalesce(saved, 0))
  ON CONFLICT ON CONSTRAINT llm_cache_daily_pkey DO UPDATE SET
    hits = d.hits + EXCLUDED.hits, misses = d.misses + EXCLUDED.misses, shared_hits = d.shared_hits + EXCLUDED.shared_hits,
    tokens_saved = d.tokens_saved + EXCLUDED.tokens_saved, saved_micros = d.saved_micros + EXCLUDED.saved_micros;
END
$$;

-- pgvector's schema, quoted, at call time (it may live in any schema:
-- Supabase puts it in extensions).
CREATE FUNCTION @extschema@._llm_vector_schema()
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  s text;
BEGIN
  SELECT pg_catalog.quote_ident(n.nspname) INTO s
  FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
  WHERE e.extname = 'vector';
  IF s IS NULL THEN
    RAISE EXCEPTION 'pgvector is not installed'
      USING ERRCODE = 'object_not_in_prerequisite_state', HINT = 'CREATE EXTENSION vector (pg_saas requires it).';
  END IF;
  RETURN s;
END
$$;

-- An embedding of the tenant's model: one dimension, its size, finite,
-- not all zero (a zero vector has no direction: its cosine is undefined).
CREATE FUNCTION @extschema@._llm_check_embedding(fn text, embedding real[], p_model text, p_dims int)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  problem int;
BEGIN
  IF array_ndims(embedding) IS DISTINCT FROM 1 THEN
    RAISE EXCEPTION '%: the embedding must be a one-dimensional array, not one of % dimensions', fn, coalesce(array_ndims(embedding), 0)
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the vector as a flat array of numbers, e.g. ''{0.12, -0.5, ...}'' (JSON: [0.12, -0.5, ...]).';
  END IF;
  IF cardinality(embedding) <> p_dims THEN
    RAISE EXCEPTION '%: the embedding has % dimensions, the tenant''s embedding model % has %',
      fn, coalesce(cardinality(embedding), 0), @extschema@._echo(p_model), p_dims
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Embed the last user turn with the model of saas.llm_semantic_set(); vectors are never truncated or padded.';
  END IF;
  problem := @extschema@._llm_embedding_problem(embedding);
  IF problem = 1 THEN
    RAISE EXCEPTION '%: the embedding holds NULL, NaN or infinity', fn
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Every element of an embedding must be a finite number.';
  END IF;
  IF problem = 2 THEN
    RAISE EXCEPTION '%: the embedding is all zeros', fn
      USING ERRCODE = 'invalid_parameter_value', HINT = 'A zero vector has no direction, so no cosine similarity: pass the model''s embedding.';
  END IF;
END
$$;

-- ---------------------------------------------------------------------------
-- The cache
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.llm_cache_get(request jsonb, p_now timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@.current_tenant();
  now_ts timestamptz := coalesce(p_now, now());
  k text;
  resp jsonb;
BEGIN
  -- The hit path, kept short: the checks' helpers run only to raise.
  IF request IS NULL OR jsonb_typeof(request -> 'model') IS DISTINCT FROM 'string' THEN
    PERFORM @extschema@._llm_request('llm_cache_get', request);
  END IF;
  IF t IS NULL THEN
    PERFORM @extschema@._llm_tenant('llm_cache_get');
  END IF;
  k := @extschema@.llm_cache_key(request);
  SELECT c.response INTO resp FROM @extschema@.llm_cache c
  WHERE c.tenant_id = t AND c.cache_key = k AND c.expires_at > now_ts;
  IF NOT @extschema@._llm_count(CASE WHEN resp IS NULL THEN 'miss' ELSE 'hit' END, t,
                                (now_ts AT TIME ZONE 'UTC')::date - DATE '2000-01-01',
                                CASE WHEN resp IS NULL THEN request ->> 'model' ELSE k END, request ->> 'model') THEN
    PERFORM @extschema@._llm_count_lookup(t, CASE WHEN resp IS NULL THEN 'miss' ELSE 'hit' END, k, request ->> 'model', now_ts);
  END IF;
  RETURN resp;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_cache_get(jsonb, timestamptz) IS
  'The current tenant''s live cached response to this request, or NULL; counts the hit (or miss) exactly, also in a read-only transaction when pg_saas is preloaded.';

CREATE FUNCTION @extschema@.llm_cache_lease(request jsonb, lease_seconds int DEFAULT 60, p_now timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  model text := @extschema@._llm_request('llm_cache_lease', request);
  t uuid := @extschema@._llm_tenant('llm_cache_lease');
  k text := @extschema@.llm_cache_key(request);
  now_ts timestamptz := coalesce(p_now, now());
  resp jsonb;
  lease uuid;
  held_until timestamptz;
BEGIN
  IF lease_seconds IS NULL OR lease_seconds < 1 OR lease_seconds > 3600 THEN
    RAISE EXCEPTION 'llm_cache_lease: lease_seconds must be between 1 and 3600, not %', coalesce(lease_seconds::text, 'NULL')
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Give the time the call may take at most, e.g. 60.';
  END IF;
  SELECT c.response INTO resp FROM @extschema@.llm_cache c
  WHERE c.tenant_id = t AND c.cache_key = k AND c.expires_at > now_ts;
  IF resp IS NOT NULL THEN
    PERFORM @extschema@._llm_count_lookup(t, 'hit', k, model, now_ts);
    RETURN jsonb_build_object('status', 'hit', 'cache_key', k, 'response', resp);
  END IF;
  -- One atomic statement: a new lease, or a lapsed one taken over; a live
  -- lease of another caller leaves nothing returned.
  INSERT INTO @extschema@.llm_cache_leases AS l (tenant_id, cache_key, lease_id, holder, expires_at)
  VALUES (t, k, gen_random_uuid(), @extschema@.current_user_id(), now_ts + make_interval(secs => lease_seconds))
  ON CONFLICT ON CONSTRAINT llm_cache_leases_pkey DO UPDATE SET
    lease_id = EXCLUDED.lease_id, holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
    WHERE l.expires_at <= now_ts
  RETURNING l.lease_id INTO lease;
  IF lease IS NOT NULL THEN
    PERFORM @extschema@._llm_count_lookup(t, 'miss', k, model, now_ts);
    RETURN jsonb_build_object('status', 'lease', 'cache_key', k, 'lease_id', lease,
                              'expires_at', now_ts + make_interval(secs => lease_seconds));
  END IF;
  SELECT l.expires_at INTO held_until FROM @extschema@.llm_cache_leases l WHERE l.tenant_id = t AND l.cache_key = k;
  RETURN jsonb_build_object('status', 'wait', 'cache_key', k, 'lease_expires_at', held_until,
                            'retry_after_ms', least(1000, greatest(50, (extract(epoch FROM held_until - now_ts) * 1000)::int)));
END
$$;
COMMENT ON FUNCTION @extschema@.llm_cache_lease(jsonb, int, timestamptz) IS
  'Single-flight lookup: {"status":"hit","response"} when cached, {"status":"lease","lease_id"} for the one caller that should compute the answer (pass lease_id to llm_cache_put), {"status":"wait","retry_after_ms"} for the others.';

-- The token counts and cost of an answer being stored (llm_cache_put,
-- llm_shared_put): from the usage object given, else the response's; the
-- cost given, else priced at now_ts from llm_prices when the provider is
-- known. Errors name fn, the function the caller called.
CREATE FUNCTION @extschema@._llm_put_usage(fn text, usage jsonb, response jsonb, provider text, model text,
                                           now_ts timestamptz, OUT pt bigint, OUT ct bigint, OUT cost bigint)
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  u jsonb := coalesce(usage, response -> 'usage', '{}');
BEGIN
  IF jsonb_typeof(u) IS DISTINCT FROM 'object' THEN
    RAISE EXCEPTION '%: usage must be a JSON object', fn
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the provider''s usage object, e.g. {"prompt_tokens": 12, "completion_tokens": 40}.';
  END IF;
  BEGIN
    pt := coalesce((u ->> 'prompt_tokens')::bigint, (u ->> 'input_tokens')::bigint, 0);
    ct := coalesce((u ->> 'completion_tokens')::bigint, (u ->> 'output_tokens')::bigint, 0);
    cost := (u ->> 'cost_micros')::bigint;
  EXCEPTION WHEN invalid_text_representation OR numeric_value_out_of_range THEN
    RAISE EXCEPTION '%: usage token counts must be integers', fn
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the provider''s usage object unchanged.';
  END;
  IF pt < 0 OR ct < 0 OR cost < 0 THEN
    RAISE EXCEPTION '%: usage must not be negative', fn
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Pass the token counts the provider reported.';
  END IF;
  IF cost IS NULL AND _llm_put_usage.provider IS NOT NULL THEN
    SELECT @extschema@._llm_cost(pt, 0, 0, ct, 0, p.input_micros_per_mtok, p.cached_input_micros_per_mtok,
                                 p.cache_write_micros_per_mtok, p.output_micros_per_mtok, true)
    INTO cost
    FROM @extschema@.llm_prices p
    WHERE p.provider = _llm_put_usage.provider AND p.model = _llm_put_usage.model AND p.effective_from <= now_ts
    ORDER BY p.effective_from DESC LIMIT 1;
  END IF;
END
$$;

CREATE FUNCTION @extschema@.llm_cache_put(
  request jsonb,
  response jsonb,
  usage jsonb DEFAULT NULL,
  ttl interval DEFAULT '7 days',
  allow_nondeterministic boolean DEFAULT false,
  lease_id uuid DEFAULT NULL,
  provider text DEFAULT NULL,
  embedding real[] DEFAULT NULL,
  p_now timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  req_model text := @extschema@._llm_request('llm_cache_put', request);
  t uuid := @extschema@._llm_tenant('llm_cache_put');
  k text := @extschema@.llm_cache_key(request);
  now_ts timestamptz := coalesce(p_now, now());
  why text;
  pt bigint;
  ct bigint;
  cost bigint;
  sem @extschema@.llm_semantic_settings%ROWTYPE;
  ctx text;
BEGIN
  IF response IS NULL THEN
    RAISE EXCEPTION 'llm_cache_put: response must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the provider''s response (for a stream, saas.llm_assemble_stream(chunks)).';
  END IF;
  IF ttl IS NULL OR ttl <= interval '0' THEN
    RAISE EXCEPTION 'llm_cache_put: ttl must be positive, not %', coalesce(ttl::text, 'NULL')
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Give how long the answer stays valid, e.g. ''7 days'' (the default).';
  END IF;
  IF ttl > interval '10 years' THEN
    RAISE EXCEPTION 'llm_cache_put: ttl % is over 10 years', ttl
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Give a ttl of at most ''10 years''.';
  END IF;
  -- The lease is released whatever happens to the answer.
  IF lease_id IS NOT NULL THEN
    DELETE FROM @extschema@.llm_cache_leases l
    WHERE l.tenant_id = t AND l.cache_key = k AND l.lease_id = llm_cache_put.lease_id;
  END IF;
  why := @extschema@._llm_uncacheable(request, response, coalesce(allow_nondeterministic, false));
  IF why IS NOT NULL THEN
    RETURN jsonb_build_object('cached', false, 'cache_key', k, 'reason', why);
  END IF;
  SELECT x.pt, x.ct, x.cost INTO pt, ct, cost
  FROM @extschema@._llm_put_usage('llm_cache_put', usage, response, provider, req_model, now_ts) x;
  -- The semantic cache keeps the embedding when the tenant opted in (shadow
  -- or on) and the request has a user turn; otherwise it is ignored.
  IF embedding IS NOT NULL THEN
    SELECT * INTO sem FROM @extschema@.llm_semantic_settings x WHERE x.tenant_id = t AND x.mode <> 'off';
    IF FOUND THEN
      PERFORM @extschema@._llm_check_embedding('llm_cache_put', embedding, sem.embedding_model, sem.dims);
      ctx := @extschema@.llm_context_hash(request);
    END IF;
  END IF;
  INSERT INTO @extschema@.llm_cache AS c (tenant_id, cache_key, provider, model, request, response, prompt_tokens,
                                          completion_tokens, cost_micros, created_by, created_at, expires_at,
                                          context_hash, embedding_model, embedding)
  VALUES (t, k, provider, req_model, request, response, pt, ct, cost, @extschema@.current_user_id(), now_ts, now_ts + ttl,
          ctx, CASE WHEN ctx IS NOT NULL THEN sem.embedding_model END, CASE WHEN ctx IS NOT NULL THEN embedding END)
  ON CONFLICT ON CONSTRAINT llm_cache_pkey DO UPDATE SET
    provider = EXCLUDED.provider, model = EXCLUDED.model, request = EXCLUDED.request, response = EXCLUDED.response,
    prompt_tokens = EXCLUDED.prompt_tokens, completion_tokens = EXCLUDED.completion_tokens,
    cost_micros = EXCLUDED.cost_micros, created_by = EXCLUDED.created_by, created_at = EXCLUDED.created_at,
    expires_at = EXCLUDED.expires_at, context_hash = EXCLUDED.context_hash, embedding_model = EXCLUDED.embedding_model,
    embedding = EXCLUDED.embedding;
  RETURN jsonb_build_object('cached', true, 'cache_key', k, 'expires_at', now_ts + ttl, 'semantic', ctx IS NOT NULL);
END
$$;
COMMENT ON FUNCTION @extschema@.llm_cache_put(jsonb, jsonb, jsonb, interval, boolean, uuid, text, real[], timestamptz) IS
  'Stores a finished, deterministic answer for the current tenant (ttl default 7 days), with the embedding of its last user turn for the semantic cache when the tenant opted in; releases the lease. Returns {"cached": true|false, "cache_key", "reason", "semantic"}.';

-- ---------------------------------------------------------------------------
-- The semantic cache
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.llm_semantic_set(
  tenant uuid,
  mode text,
  threshold float8 DEFAULT 0.95,
  embedding_model text DEFAULT NULL,
  dims int DEFAULT NULL,
  p_now timestamptz DEFAULT now())
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF tenant IS NULL OR mode IS NULL OR threshold IS NULL THEN
    RAISE EXCEPTION 'llm_semantic_set: tenant, mode and threshold must not be NULL'
      USING ERRCODE = 'null_value_not_allowed',
            HINT = 'e.g. saas.llm_semantic_set(tenant, ''shadow'', embedding_model => ''text-embedding-3-small'', dims => 1536).';
  END IF;
  IF mode NOT IN ('off', 'shadow', 'on') THEN
    RAISE EXCEPTION 'llm_semantic_set: mode must be off, shadow or on, not %', @extschema@._echo(mode)
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Start with shadow: would-be hits are recorded with their similarity, misses still served.';
  END IF;
  IF threshold = 'NaN'::float8 OR threshold <= 0 OR threshold > 1 THEN
    RAISE EXCEPTION 'llm_semantic_set: threshold must be in (0, 1], not %', threshold
      USING ERRCODE = 'numeric_value_out_of_range',
            HINT = 'A cosine similarity; the default 0.95 is strict (docs/llm.md), lower it only after measuring in shadow mode.';
  END IF;
  IF mode <> 'off' AND (embedding_model IS NULL OR dims IS NULL) THEN
    RAISE EXCEPTION 'llm_semantic_set: mode % needs embedding_model and dims', mode
      USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Name the model the caller embeds with and its dimension, e.g. embedding_model => ''text-embedding-3-small'', dims => 1536.';
  END IF;
  IF dims NOT BETWEEN 1 AND 16000 THEN
    RAISE EXCEPTION 'llm_semantic_set: dims must be between 1 and 16000, not %', dims
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'pgvector stores vectors of 1 to 16000 dimensions.';
  END IF;
  IF char_length(embedding_model) NOT BETWEEN 1 AND 200 THEN
    RAISE EXCEPTION 'llm_semantic_set: embedding_model must have 1 to 200 characters'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Name the embedding model, e.g. ''text-embedding-3-small''.';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM @extschema@.tenants x WHERE x.id = tenant) THEN
    RAISE EXCEPTION 'llm_semantic_set: unknown tenant %', tenant
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the id of a row of saas.tenants.';
  END IF;
  INSERT INTO @extschema@.llm_semantic_settings AS x (tenant_id, mode, threshold, embedding_model, dims, updated_at)
  VALUES (tenant, mode, threshold, embedding_model, dims, coalesce(p_now, now()))
  ON CONFLICT ON CONSTRAINT llm_semantic_settings_pkey DO UPDATE SET
    mode = EXCLUDED.mode, threshold = EXCLUDED.threshold,
    embedding_model = coalesce(EXCLUDED.embedding_model, x.embedding_model), dims = coalesce(EXCLUDED.dims, x.dims),
    updated_at = EXCLUDED.updated_at;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_semantic_set(uuid, text, float8, text, int, timestamptz) IS
  'Sets a tenant''s semantic LLM cache: mode off, shadow (would-be hits recorded, misses served) or on, the cosine similarity threshold (default 0.95), the embedding model and its dimension. For operators.';

CREATE FUNCTION @extschema@.llm_cache_lookup(request jsonb, embedding real[] DEFAULT NULL, p_now timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  model text := @extschema@._llm_request('llm_cache_lookup', request);
  t uuid := @extschema@._llm_tenant('llm_cache_lookup');
  now_ts timestamptz := coalesce(p_now, now());
  k text := @extschema@.llm_cache_key(request);
  resp jsonb;
  sem @extschema@.llm_semantic_settings%ROWTYPE;
  ctx text;
  best record;
BEGIN
  SELECT c.response INTO resp FROM @extschema@.llm_cache c
  WHERE c.tenant_id = t AND c.cache_key = k AND c.expires_at > now_ts;
  IF resp IS NOT NULL THEN
    PERFORM @extschema@._llm_count_lookup(t, 'hit', k, model, now_ts);
    RETURN jsonb_build_object('match', 'exact', 'cache_key', k, 'response', resp);
  END IF;
  IF embedding IS NOT NULL THEN
    SELECT * INTO sem FROM @extschema@.llm_semantic_settings x WHERE x.tenant_id = t AND x.mode <> 'off';
    IF FOUND THEN
      PERFORM @extschema@._llm_check_embedding('llm_cache_lookup', embedding, sem.embedding_model, sem.dims);
      ctx := @extschema@.llm_context_hash(request);
    END IF;
  END IF;
  IF ctx IS NOT NULL THEN
    IF current_setting('transaction_read_only') = 'on' THEN
      RAISE EXCEPTION 'llm_cache_lookup records semantic hits and cannot run in a read-only transaction'
        USING ERRCODE = 'read_only_sql_transaction',
              HINT = 'Call it by POST (a GET runs read-only), or leave the embedding out for an exact lookup.';
    END IF;
    -- The candidates: this tenant's live entries of the same context and
    -- embedding model (the index's prefix), compared exactly.
    EXECUTE pg_catalog.format(
      'SELECT c.cache_key, c.response, c.prompt_tokens + c.completion_tokens AS tokens, coalesce(c.cost_micros, 0) AS cost,'
      ' 1 - (c.embedding OPERATOR(%1$s.<=>) $1::%1$s.vector) AS similarity'
      ' FROM @extschema@.llm_cache c'
      ' WHERE c.tenant_id = $2 AND c.context_hash = $3 AND c.embedding_model = $4 AND c.expires_at > $5'
      ' AND %1$s.vector_dims(c.embedding) = $6'
      ' ORDER BY similarity DESC, c.cache_key LIMIT 1', @extschema@._llm_vector_schema())
    INTO best USING embedding, t, ctx, sem.embedding_model, now_ts, sem.dims;
    IF best.similarity >= sem.threshold THEN
      INSERT INTO @extschema@.llm_semantic_hits (tenant_id, looked_up_at, model, served, similarity, threshold, entry_key,
                                                 lookup_key, tokens_saved, saved_micros)
      VALUES (t, now_ts, model, sem.mode = 'on', best.similarity, sem.threshold, best.cache_key, k,
              CASE WHEN sem.mode = 'on' THEN best.tokens ELSE 0 END, CASE WHEN sem.mode = 'on' THEN best.cost ELSE 0 END);
      IF sem.mode = 'on' THEN
        UPDATE @extschema@.llm_cache c SET hit_count = c.hit_count + 1, last_hit_at = now_ts
        WHERE c.tenant_id = t AND c.cache_key = best.cache_key;
        RETURN jsonb_build_object('match', 'semantic', 'cache_key', best.cache_key, 'similarity', best.similarity,
                                  'response', best.response);
      END IF;
    END IF;
  END IF;
  PERFORM @extschema@._llm_count_lookup(t, 'miss', k, model, now_ts);
  RETURN NULL;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_cache_lookup(jsonb, real[], timestamptz) IS
  'The current tenant''s cached answer: exact, else (semantic cache on, an embedding of the last user turn given) the most similar entry of the same context above the threshold; {"match": "exact"|"semantic", "cache_key", "similarity", "response"} or NULL. Shadow mode records would-be hits and returns NULL.';

CREATE FUNCTION @extschema@.llm_semantic_stats(
  p_from date DEFAULT (now() AT TIME ZONE 'UTC')::date - 29,
  p_to date DEFAULT (now() AT TIME ZONE 'UTC')::date)
RETURNS TABLE (model text, served boolean, similarity_from numeric, similarity_to numeric, hits bigint,
               min_similarity float8, tokens_saved bigint, saved_micros bigint)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._llm_tenant('llm_semantic_stats');
BEGIN
  IF p_from IS NULL OR p_to IS NULL THEN
    RAISE EXCEPTION 'llm_semantic_stats: p_from and p_to must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass a range of UTC days, or leave them out for the last 30 days.';
  END IF;
  IF p_from > p_to THEN
    RAISE EXCEPTION 'llm_semantic_stats: p_from % is after p_to %', p_from, p_to
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the earlier day first.';
  END IF;
  RETURN QUERY
  SELECT h.model, h.served, b.lo, (b.lo + 0.01)::numeric(3, 2), count(*), min(h.similarity), sum(h.tokens_saved)::bigint,
         sum(h.saved_micros)::bigint
  FROM @extschema@.llm_semantic_hits h,
       LATERAL (SELECT (least(floor(h.similarity * 100), 99) / 100)::numeric(3, 2) AS lo) b
  WHERE h.tenant_id = t
    AND h.looked_up_at >= p_from::timestamp AT TIME ZONE 'UTC' AND h.looked_up_at < (p_to + 1)::timestamp AT TIME ZONE 'UTC'
  GROUP BY h.model, h.served, b.lo
  ORDER BY h.model, h.served, b.lo;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_semantic_stats(date, date) IS
  'The current tenant''s semantic hits per model, served or shadow (would-be), in similarity buckets of 0.01, with the lowest similarity and the savings; judge the false-hit rate from the shadow rows before turning the cache on.';

-- ---------------------------------------------------------------------------
-- The shared scope
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.llm_shared_put(
  request jsonb,
  response jsonb,
  usage jsonb DEFAULT NULL,
  ttl interval DEFAULT '7 days',
  allow_nondeterministic boolean DEFAULT false,
  provider text DEFAULT NULL,
  p_now timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  req_model text := @extschema@._llm_request('llm_shared_put', request);
  k text := @extschema@.llm_cache_key(request);
  now_ts timestamptz := coalesce(p_now, now());
  who text := coalesce(nullif(current_setting('role'), 'none'), session_user::text);
  why text;
  pt bigint;
  ct bigint;
  cost bigint;
BEGIN
  IF response IS NULL THEN
    RAISE EXCEPTION 'llm_shared_put: response must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the provider''s response (for a stream, saas.llm_assemble_stream(chunks)).';
  END IF;
  IF ttl IS NULL OR ttl <= interval '0' OR ttl > interval '10 years' THEN
    RAISE EXCEPTION 'llm_shared_put: ttl must be positive and at most 10 years, not %', coalesce(ttl::text, 'NULL')
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Give how long the answer stays valid, e.g. ''7 days'' (the default).';
  END IF;
  why := @extschema@._llm_uncacheable(request, response, coalesce(allow_nondeterministic, false));
  IF why IS NOT NULL THEN
    RETURN jsonb_build_object('cached', false, 'cache_key', k, 'reason', why);
  END IF;
  SELECT x.pt, x.ct, x.cost INTO pt, ct, cost
  FROM @extschema@._llm_put_usage('llm_shared_put', usage, response, provider, req_model, now_ts) x;
  INSERT INTO @extschema@.llm_cache_shared AS c (cache_key, provider, model, request, response, prompt_tokens,
                                                 completion_tokens, cost_micros, written_by, created_at, expires_at)
  VALUES (k, provider, req_model, request, response, pt, ct, cost, who, now_ts, now_ts + ttl)
  ON CONFLICT ON CONSTRAINT llm_cache_shared_pkey DO UPDATE SET
    provider = EXCLUDED.provider, model = EXCLUDED.model, request = EXCLUDED.request, response = EXCLUDED.response,
    prompt_tokens = EXCLUDED.prompt_tokens, completion_tokens = EXCLUDED.completion_tokens,
    cost_micros = EXCLUDED.cost_micros, written_by = EXCLUDED.written_by, created_at = EXCLUDED.created_at,
    expires_at = EXCLUDED.expires_at;
  RETURN jsonb_build_object('cached', true, 'cache_key', k, 'expires_at', now_ts + ttl, 'scope', 'shared');
END
$$;
COMMENT ON FUNCTION @extschema@.llm_shared_put(jsonb, jsonb, jsonb, interval, boolean, text, timestamptz) IS
  'Stores an answer that holds no tenant data in the shared LLM cache scope, read by every tenant through saas.llm_shared_get(). Only for roles given saas.llm_shared_grant().';

CREATE FUNCTION @extschema@.llm_shared_get(request jsonb, p_now timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@.current_tenant();
  now_ts timestamptz := coalesce(p_now, now());
  k text;
  resp jsonb;
BEGIN
  IF request IS NULL OR jsonb_typeof(request -> 'model') IS DISTINCT FROM 'string' THEN
    PERFORM @extschema@._llm_request('llm_shared_get', request);
  END IF;
  IF t IS NULL THEN
    PERFORM @extschema@._llm_tenant('llm_shared_get');
  END IF;
  k := @extschema@.llm_cache_key(request);
  SELECT c.response INTO resp FROM @extschema@.llm_cache_shared c WHERE c.cache_key = k AND c.expires_at > now_ts;
  PERFORM @extschema@._llm_count_lookup(t, CASE WHEN resp IS NULL THEN 'miss' ELSE 'shared' END, k, request ->> 'model', now_ts);
  RETURN resp;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_shared_get(jsonb, timestamptz) IS
  'The live answer of the shared (non-tenant) LLM cache scope to this request, or NULL; never a tenant''s entry. Counted for the current tenant (shared_hits of llm_cache_stats).';

CREATE FUNCTION @extschema@.llm_shared_grant(roles name[])
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r name;
BEGIN
  IF roles IS NULL OR cardinality(roles) = 0 THEN
    RAISE EXCEPTION 'llm_shared_grant: roles must be a non-empty array'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. saas.llm_shared_grant(''{service_role}''): never a role end users act as.';
  END IF;
  FOREACH r IN ARRAY roles LOOP
    IF r IS NULL THEN
      RAISE EXCEPTION 'llm_shared_grant: a role name is NULL'
        USING ERRCODE = 'null_value_not_allowed', HINT = 'Name existing roles.';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles x WHERE x.rolname = r) THEN
      RAISE EXCEPTION 'llm_shared_grant: role % does not exist', @extschema@._echo(r)
        USING ERRCODE = 'undefined_object', HINT = 'CREATE ROLE ... NOLOGIN first, or name the deployment''s service role.';
    END IF;
    EXECUTE pg_catalog.format('GRANT USAGE ON SCHEMA @extschema@, saas_api TO %I', r);
    EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION @extschema@.llm_shared_put(jsonb, jsonb, jsonb, interval, boolean, text, timestamptz), '
                              'saas_api.llm_shared_put(jsonb, jsonb, jsonb, interval, boolean, text), '
                              '@extschema@.llm_cache_key(jsonb) TO %I', r);
  END LOOP;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_shared_grant(name[]) IS
  'Lets roles write the shared (non-tenant) LLM cache scope (saas.llm_shared_put and its saas_api wrapper): a service role, never one end users act as. For the owner. Revoke with REVOKE EXECUTE.';

-- Hits and misses counted in shared memory, written to the cache rows and
-- the daily table. Counts a failed flush took come back (src/llm/shmem.rs).
CREATE FUNCTION @extschema@.llm_hits_flush()
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  n bigint;
BEGIN
  -- One statement: the counts taken out of shared memory (given back if
  -- this transaction or subtransaction aborts) go to the cache rows and
  -- the daily table.
  WITH taken AS MATERIALIZED (
    SELECT * FROM @extschema@._llm_take()
  ), hits AS (
    SELECT k.tenant_id, k.id, sum(k.pending) AS n, max(k.day) AS last_day FROM taken k WHERE k.kind = 'hit' GROUP BY 1, 2
  ), rows AS (
    UPDATE @extschema@.llm_cache c SET hit_count = c.hit_count + h.n,
           last_hit_at = greatest(c.last_hit_at, (DATE '2000-01-01' + h.last_day)::timestamp AT TIME ZONE 'UTC')
    FROM hits h
    WHERE c.tenant_id = h.tenant_id AND c.cache_key = h.id
  ), shared AS (
    SELECT k.id, sum(k.pending) AS n, max(k.day) AS last_day FROM taken k WHERE k.kind = 'shared' GROUP BY 1
  ), shared_rows AS (
    UPDATE @extschema@.llm_cache_shared c SET hit_count = c.hit_count + h.n,
           last_hit_at = greatest(c.last_hit_at, (DATE '2000-01-01' + h.last_day)::timestamp AT TIME ZONE 'UTC')
    FROM shared h
    WHERE c.cache_key = h.id
  ), daily AS (
    INSERT INTO @extschema@.llm_cache_daily AS d (tenant_id, day, model, hits, misses, shared_hits, overflow_hits,
                                                  tokens_saved, saved_micros)
    SELECT x.tenant_id, DATE '2000-01-01' + x.day, x.model, sum(x.hits), sum(x.misses), sum(x.shared), sum(x.overflow),
           sum(x.tokens), sum(x.saved)
    FROM (
      -- per kind: hit and shared (the entry's model and savings; an expired
      -- entry: '(expired)'), overflow (per model, no entry: nothing saved
      -- counted), miss (per model)
      SELECT k.tenant_id, k.day,
             CASE k.kind WHEN 'hit' THEN coalesce(c.model, '(expired)') WHEN 'shared' THEN coalesce(s.model, '(expired)')
                         ELSE k.id END AS model,
             CASE WHEN k.kind <> 'miss' THEN k.pending ELSE 0 END AS hits, CASE WHEN k.kind = 'miss' THEN k.pending ELSE 0 END AS misses,
             CASE WHEN k.kind IN ('shared', 'shared_overflow') THEN k.pending ELSE 0 END AS shared,
             CASE WHEN k.kind IN ('overflow', 'shared_overflow') THEN k.pending ELSE 0 END AS overflow,
             k.pending * coalesce(c.prompt_tokens + c.completion_tokens, s.prompt_tokens + s.completion_tokens, 0) AS tokens,
             k.pending * coalesce(c.cost_micros, s.cost_micros, 0) AS saved
      FROM taken k
      LEFT JOIN @extschema@.llm_cache c ON k.kind = 'hit' AND c.tenant_id = k.tenant_id AND c.cache_key = k.id
      LEFT JOIN @extschema@.llm_cache_shared s ON k.kind = 'shared' AND s.cache_key = k.id
    ) x
    GROUP BY x.tenant_id, x.day, x.model
    ON CONFLICT ON CONSTRAINT llm_cache_daily_pkey DO UPDATE SET
      hits = d.hits + EXCLUDED.hits, misses = d.misses + EXCLUDED.misses,
      shared_hits = d.shared_hits + EXCLUDED.shared_hits, overflow_hits = d.overflow_hits + EXCLUDED.overflow_hits,
      tokens_saved = d.tokens_saved + EXCLUDED.tokens_saved, saved_micros = d.saved_micros + EXCLUDED.saved_micros
  )
  SELECT coalesce(sum(k.pending), 0) INTO n FROM taken k;
  RETURN n;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_hits_flush() IS
  'Writes the LLM cache hits and misses counted in shared memory to saas.llm_cache and saas.llm_cache_daily; run by run_maintenance(). Returns the lookups written.';

CREATE FUNCTION @extschema@.llm_cache_stats(
  p_from date DEFAULT (now() AT TIME ZONE 'UTC')::date - 29,
  p_to date DEFAULT (now() AT TIME ZONE 'UTC')::date)
RETURNS TABLE (model text, lookups bigint, hits bigint, misses bigint, hit_rate numeric, tokens_saved bigint, saved_micros bigint,
               semantic_hits bigint, shadow_hits bigint, shared_hits bigint, overflow_hits bigint)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._llm_tenant('llm_cache_stats');
BEGIN
  IF p_from IS NULL OR p_to IS NULL THEN
    RAISE EXCEPTION 'llm_cache_stats: p_from and p_to must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass a range of UTC days, or leave them out for the last 30 days.';
  END IF;
  IF p_from > p_to THEN
    RAISE EXCEPTION 'llm_cache_stats: p_from % is after p_to %', p_from, p_to
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the earlier day first.';
  END IF;
  -- hits: every answer served from the cache (exact, overflow-counted,
  -- shared, semantic); misses include shadow mode's would-be hits.
  RETURN QUERY
  SELECT s.model, (sum(s.hits) + sum(s.misses))::bigint, sum(s.hits)::bigint, sum(s.misses)::bigint,
         round(sum(s.hits) / nullif(sum(s.hits) + sum(s.misses), 0), 4),
         sum(s.tokens)::bigint, sum(s.saved)::bigint, sum(s.semantic)::bigint, sum(s.shadow)::bigint,
         sum(s.shared)::bigint, sum(s.overflow)::bigint
  FROM (
    SELECT d.model, d.hits, d.misses, d.tokens_saved AS tokens, d.saved_micros AS saved, 0 AS semantic, 0 AS shadow,
           d.shared_hits AS shared, d.overflow_hits AS overflow
    FROM @extschema@.llm_cache_daily d WHERE d.tenant_id = t AND d.day BETWEEN p_from AND p_to
    UNION ALL
    SELECT CASE q.kind WHEN 'hit' THEN coalesce(c.model, '(expired)') WHEN 'shared' THEN coalesce(x.model, '(expired)') ELSE q.id END,
           CASE WHEN q.kind <> 'miss' THEN q.pending ELSE 0 END, CASE WHEN q.kind = 'miss' THEN q.pending ELSE 0 END,
           q.pending * coalesce(c.prompt_tokens + c.completion_tokens, x.prompt_tokens + x.completion_tokens, 0),
           q.pending * coalesce(c.cost_micros, x.cost_micros, 0), 0, 0,
           CASE WHEN q.kind IN ('shared', 'shared_overflow') THEN q.pending ELSE 0 END,
           CASE WHEN q.kind IN ('overflow', 'shared_overflow') THEN q.pending ELSE 0 END
    FROM @extschema@._llm_pending() q
    LEFT JOIN @extschema@.llm_cache c ON q.kind = 'hit' AND c.tenant_id = q.tenant_id AND c.cache_key = q.id
    LEFT JOIN @extschema@.llm_cache_shared x ON q.kind = 'shared' AND x.cache_key = q.id
    WHERE q.tenant_id = t AND DATE '2000-01-01' + q.day BETWEEN p_from AND p_to
    UNION ALL
    SELECT h.model, h.served::int, 0, h.tokens_saved, h.saved_micros, h.served::int, (NOT h.served)::int, 0, 0
    FROM @extschema@.llm_semantic_hits h
    WHERE h.tenant_id = t
      AND h.looked_up_at >= p_from::timestamp AT TIME ZONE 'UTC' AND h.looked_up_at < (p_to + 1)::timestamp AT TIME ZONE 'UTC'
  ) s
  GROUP BY s.model
  ORDER BY s.model;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_cache_stats(date, date) IS
  'The current tenant''s LLM cache per model over UTC days: lookups, hits, misses, hit rate, tokens and micro-units saved (written plus pending); of the hits: semantic, shared, counted while the counters were full (overflow); shadow-mode would-be hits (counted as misses).';

-- ---------------------------------------------------------------------------
-- Prices
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.llm_price_set(
  provider text,
  model text,
  input_micros_per_mtok bigint,
  output_micros_per_mtok bigint,
  cached_input_micros_per_mtok bigint DEFAULT NULL,
  cache_write_micros_per_mtok bigint DEFAULT NULL,
  cached_subset boolean DEFAULT true,
  effective_from timestamptz DEFAULT now(),
  currency text DEFAULT 'USD')
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF provider IS NULL OR model IS NULL OR input_micros_per_mtok IS NULL OR output_micros_per_mtok IS NULL
     OR cached_subset IS NULL OR effective_from IS NULL OR currency IS NULL THEN
    RAISE EXCEPTION 'llm_price_set: provider, model, the input and output prices, cached_subset, effective_from and currency must not be NULL'
      USING ERRCODE = 'null_value_not_allowed',
            HINT = 'e.g. saas.llm_price_set(''openai'', ''gpt-4o'', 2500000, 10000000, 1250000): micro-units per million tokens.';
  END IF;
  IF least(input_micros_per_mtok, output_micros_per_mtok, cached_input_micros_per_mtok, cache_write_micros_per_mtok) < 0 THEN
    RAISE EXCEPTION 'llm_price_set: prices must not be negative'
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Prices are micro-units per million tokens, e.g. 2500000 for $2.50.';
  END IF;
  IF char_length(provider) NOT BETWEEN 1 AND 64 OR char_length(model) NOT BETWEEN 1 AND 200 OR currency !~ '^[A-Z]{3}$' THEN
    RAISE EXCEPTION 'llm_price_set: bad provider %, model % or currency %',
      @extschema@._echo(provider), @extschema@._echo(model), @extschema@._echo(currency)
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Provider 1-64 characters, model 1-200, currency an ISO 4217 code such as USD.';
  END IF;
  INSERT INTO @extschema@.llm_prices AS p (provider, model, effective_from, input_micros_per_mtok, cached_input_micros_per_mtok,
                                           cache_write_micros_per_mtok, output_micros_per_mtok, cached_subset, currency)
  VALUES (provider, model, effective_from, input_micros_per_mtok, coalesce(cached_input_micros_per_mtok, input_micros_per_mtok),
          coalesce(cache_write_micros_per_mtok, input_micros_per_mtok), output_micros_per_mtok, cached_subset, currency)
  ON CONFLICT ON CONSTRAINT llm_prices_pkey DO UPDATE SET
    input_micros_per_mtok = EXCLUDED.input_micros_per_mtok, cached_input_micros_per_mtok = EXCLUDED.cached_input_micros_per_mtok,
    cache_write_micros_per_mtok = EXCLUDED.cache_write_micros_per_mtok, output_micros_per_mtok = EXCLUDED.output_micros_per_mtok,
    cached_subset = EXCLUDED.cached_subset, currency = EXCLUDED.currency;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_price_set(text, text, bigint, bigint, bigint, bigint, boolean, timestamptz, text) IS
  'Adds a price version for a provider and model (micro-units per million tokens; cached input and cache writes default to the input price). Rows charged before keep their price.';

CREATE FUNCTION @extschema@._llm_price(fn text, provider text, model text, p_at timestamptz)
RETURNS @extschema@.llm_prices
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  p @extschema@.llm_prices%ROWTYPE;
BEGIN
  SELECT * INTO p FROM @extschema@.llm_prices x
  WHERE x.provider = _llm_price.provider AND x.model = _llm_price.model AND x.effective_from <= p_at
  ORDER BY x.effective_from DESC LIMIT 1;
  IF NOT FOUND THEN
    RAISE EXCEPTION '%: no price for model % of provider % at %', fn, @extschema@._echo(model), @extschema@._echo(provider), p_at
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass cost_micros yourself, or add the price first: saas.llm_price_set(provider, model, input, output) (micro-units per million tokens).';
  END IF;
  RETURN p;
END
$$;

CREATE FUNCTION @extschema@.llm_cost(
  provider text, model text, prompt_tokens bigint, completion_tokens bigint,
  cached_read_tokens bigint DEFAULT 0, cache_write_tokens bigint DEFAULT 0, reasoning_tokens bigint DEFAULT 0,
  p_at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  p @extschema@.llm_prices%ROWTYPE;
BEGIN
  IF provider IS NULL OR model IS NULL OR prompt_tokens IS NULL OR completion_tokens IS NULL OR cached_read_tokens IS NULL
     OR cache_write_tokens IS NULL OR reasoning_tokens IS NULL OR p_at IS NULL THEN
    RAISE EXCEPTION 'llm_cost: arguments must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass 0 for token kinds the call did not have.';
  END IF;
  p := @extschema@._llm_price('llm_cost', provider, model, p_at);
  RETURN @extschema@._llm_cost(prompt_tokens, cached_read_tokens, cache_write_tokens, completion_tokens, reasoning_tokens,
                               p.input_micros_per_mtok, p.cached_input_micros_per_mtok, p.cache_write_micros_per_mtok,
                               p.output_micros_per_mtok, p.cached_subset);
END
$$;
COMMENT ON FUNCTION @extschema@.llm_cost(text, text, bigint, bigint, bigint, bigint, bigint, timestamptz) IS
  'The cost in micro-units of a call''s tokens at the price in force at p_at (rounded up once).';

-- ---------------------------------------------------------------------------
-- Budgets
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.llm_budget_set(
  tenant uuid,
  max_cost_micros bigint,
  max_tokens bigint DEFAULT NULL,
  period text DEFAULT 'month',
  user_id uuid DEFAULT NULL,
  time_zone text DEFAULT 'UTC')
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  id bigint;
BEGIN
  IF tenant IS NULL OR period IS NULL OR time_zone IS NULL THEN
    RAISE EXCEPTION 'llm_budget_set: tenant, period and time_zone must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'e.g. saas.llm_budget_set(tenant => ..., max_cost_micros => 50000000, period => ''month'').';
  END IF;
  IF max_cost_micros IS NULL AND max_tokens IS NULL THEN
    RAISE EXCEPTION 'llm_budget_set: give max_cost_micros, max_tokens or both'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Remove a budget with saas.llm_budget_drop().';
  END IF;
  IF max_cost_micros < 0 OR max_tokens < 0 THEN
    RAISE EXCEPTION 'llm_budget_set: limits must not be negative'
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Give 0 to refuse every call.';
  END IF;
  IF period NOT IN ('day', 'month') THEN
    RAISE EXCEPTION 'llm_budget_set: period must be day or month, not %', @extschema@._echo(period)
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Budgets reset every day or every month in their time zone.';
  END IF;
  IF NOT EXISTS (SELECT FROM pg_catalog.pg_timezone_names z WHERE z.name = time_zone) THEN
    RAISE EXCEPTION 'llm_budget_set: time zone % is not recognized', @extschema@._echo(time_zone)
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Use a name from pg_timezone_names, e.g. ''UTC'' or ''Europe/Berlin''.';
  END IF;
  IF NOT EXISTS (SELECT FROM @extschema@.tenants tn WHERE tn.id = tenant) THEN
    RAISE EXCEPTION 'llm_budget_set: tenant % does not exist', tenant
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the id of a row of saas.tenants.';
  END IF;
  INSERT INTO @extschema@.llm_budgets AS b (tenant_id, user_id, period, max_cost_micros, max_tokens, time_zone)
  VALUES (tenant, user_id, period, max_cost_micros, max_tokens, time_zone)
  ON CONFLICT ON CONSTRAINT llm_budgets_scope DO UPDATE SET
    max_cost_micros = EXCLUDED.max_cost_micros, max_tokens = EXCLUDED.max_tokens, time_zone = EXCLUDED.time_zone
  RETURNING b.budget_id INTO id;
  RETURN id;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_budget_set(uuid, bigint, bigint, text, uuid, text) IS
  'Sets a tenant''s (or one user''s, user_id) LLM budget per day or month in time_zone: cost in micro-units and/or tokens. Returns its id. For operators.';

CREATE FUNCTION @extschema@.llm_budget_drop(tenant uuid, period text DEFAULT 'month', user_id uuid DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  dropped boolean;
BEGIN
  IF tenant IS NULL OR period IS NULL THEN
    RAISE EXCEPTION 'llm_budget_drop: tenant and period must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the tenant, period and user the budget was set with.';
  END IF;
  WITH gone AS (
    DELETE FROM @extschema@.llm_budgets b
    WHERE b.tenant_id = tenant AND b.period = llm_budget_drop.period AND b.user_id IS NOT DISTINCT FROM llm_budget_drop.user_id
    RETURNING b.tenant_id, b.budget_id
  ), windows AS (
    DELETE FROM @extschema@.llm_budget_windows w USING gone g WHERE w.tenant_id = g.tenant_id AND w.budget_id = g.budget_id
  )
  SELECT count(*) > 0 INTO dropped FROM gone;
  RETURN dropped;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_budget_drop(uuid, text, uuid) IS
  'Removes a budget and its windows; false when there was none. For operators.';

CREATE FUNCTION @extschema@.llm_budget_reserve(
  provider text,
  model text,
  prompt_tokens bigint,
  max_output_tokens bigint,
  ttl interval DEFAULT '15 minutes',
  p_now timestamptz DEFAULT now())
RETURNS TABLE (reservation_id bigint, reserved_micros bigint, reserved_tokens bigint, expires_at timestamptz)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._llm_tenant('llm_budget_reserve');
  u uuid := @extschema@.current_user_id();
  now_ts timestamptz := coalesce(p_now, now());
  p @extschema@.llm_prices%ROWTYPE;
  cost bigint;
  tokens bigint;
  ids bigint[];
  starts timestamptz[];
  applicable int;
  held int;
  f record;
  rid bigint;
BEGIN
  IF provider IS NULL OR model IS NULL OR prompt_tokens IS NULL OR max_output_tokens IS NULL THEN
    RAISE EXCEPTION 'llm_budget_reserve: provider, model, prompt_tokens and max_output_tokens must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the prompt''s token count and the max_tokens the call will ask for.';
  END IF;
  IF prompt_tokens < 0 OR max_output_tokens < 0 THEN
    RAISE EXCEPTION 'llm_budget_reserve: token counts must not be negative'
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Pass the prompt''s token count and the max_tokens of the call.';
  END IF;
  IF ttl IS NULL OR ttl <= interval '0' OR ttl > interval '1 day' THEN
    RAISE EXCEPTION 'llm_budget_reserve: ttl must be positive and at most a day'
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Give the longest the call may take, e.g. ''15 minutes''.';
  END IF;
  p := @extschema@._llm_price('llm_budget_reserve', provider, model, now_ts);
  cost := @extschema@._llm_worst_case(prompt_tokens, max_output_tokens, p.input_micros_per_mtok, p.output_micros_per_mtok);
  tokens := prompt_tokens + max_output_tokens;

  -- The budgets that apply and their current windows.
  SELECT array_agg(b.budget_id ORDER BY b.budget_id),
         array_agg(date_trunc(b.period, now_ts, b.time_zone) ORDER BY b.budget_id)
  INTO ids, starts
  FROM @extschema@.llm_budgets b
  WHERE b.tenant_id = t AND (b.user_id IS NULL OR b.user_id = u);
  applicable := coalesce(cardinality(ids), 0);
  IF applicable > 0 THEN
    INSERT INTO @extschema@.llm_budget_windows (tenant_id, budget_id, window_start)
    SELECT t, x.id, x.s FROM unnest(ids, starts) AS x(id, s)
    ON CONFLICT DO NOTHING;
    -- One atomic conditional update: concurrent reservations serialize on
    -- the window rows, and each re-checks its condition on the row the
    -- previous one left (READ COMMITTED re-evaluation), so none overspends.
    UPDATE @extschema@.llm_budget_windows w
    SET reserved_micros = w.reserved_micros + cost, reserved_tokens = w.reserved_tokens + tokens
    FROM @extschema@.llm_budgets b, unnest(ids, starts) AS x(id, s)
    WHERE b.tenant_id = t AND b.budget_id = x.id
      AND w.tenant_id = t AND w.budget_id = x.id AND w.window_start = x.s
      AND (b.max_cost_micros IS NULL OR w.used_micros + w.reserved_micros + cost <= b.max_cost_micros)
      AND (b.max_tokens IS NULL OR w.used_tokens + w.reserved_tokens + tokens <= b.max_tokens);
    GET DIAGNOSTICS held = ROW_COUNT;
    IF held < applicable THEN
      -- Refused: the error rolls back what this statement reserved.
      SELECT b.budget_id, b.period, b.user_id, b.max_cost_micros, b.max_tokens, w.used_micros, w.reserved_micros,
             w.used_tokens, w.reserved_tokens, x.s AS window_start,
             (x.s AT TIME ZONE b.time_zone + CASE b.period WHEN 'day' THEN interval '1 day' ELSE interval '1 month' END)
               AT TIME ZONE b.time_zone AS resets_at
      INTO f
      FROM @extschema@.llm_budgets b JOIN unnest(ids, starts) AS x(id, s) ON b.budget_id = x.id
      JOIN @extschema@.llm_budget_windows w ON w.tenant_id = t AND w.budget_id = x.id AND w.window_start = x.s
      WHERE b.tenant_id = t
        AND NOT ((b.max_cost_micros IS NULL OR w.used_micros + w.reserved_micros + cost <= b.max_cost_micros)
                 AND (b.max_tokens IS NULL OR w.used_tokens + w.reserved_tokens + tokens <= b.max_tokens))
      ORDER BY b.budget_id LIMIT 1;
      RAISE SQLSTATE 'PGRST'
        USING MESSAGE = jsonb_build_object(
                'code', 'PT402',
                'message', format('LLM budget exceeded: the %s budget%s allows %s micro-units and %s tokens; %s used, %s reserved, this call needs up to %s',
                                  f.period, CASE WHEN f.user_id IS NULL THEN '' ELSE ' of this user' END,
                                  coalesce(f.max_cost_micros::text, 'unlimited'), coalesce(f.max_tokens::text, 'unlimited'),
                                  f.used_micros, f.reserved_micros, cost),
                'details', jsonb_build_object(
                  'reason', 'llm_budget_exceeded', 'budget_id', f.budget_id, 'scope', CASE WHEN f.user_id IS NULL THEN 'tenant' ELSE 'user' END,
                  'period', f.period, 'limit_micros', f.max_cost_micros, 'limit_tokens', f.max_tokens,
                  'used_micros', f.used_micros, 'used_tokens', f.used_tokens,
                  'reserved_micros', f.reserved_micros, 'reserved_tokens', f.reserved_tokens,
                  'requested_micros', cost, 'requested_tokens', tokens,
                  'resets_at', f.resets_at,
                  'retry_after_seconds', greatest(1, ceil(extract(epoch FROM f.resets_at - now_ts)))::bigint)::text,
                'hint', 'Wait until the budget resets, use a smaller max_tokens, or ask an operator to raise the budget.')::text,
              DETAIL = jsonb_build_object('status', 402, 'headers', jsonb_build_object(
                'Retry-After', greatest(1, ceil(extract(epoch FROM f.resets_at - now_ts)))::bigint::text))::text;
    END IF;
  END IF;
  INSERT INTO @extschema@.llm_reservations AS r (tenant_id, user_id, provider, model, budget_ids, window_starts,
                                                 reserved_micros, reserved_tokens, created_at, expires_at)
  VALUES (t, u, provider, model, coalesce(ids, '{}'), coalesce(starts, '{}'), cost, tokens, now_ts, now_ts + ttl)
  RETURNING r.reservation_id INTO rid;
  RETURN QUERY SELECT rid, cost, tokens, now_ts + ttl;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_budget_reserve(text, text, bigint, bigint, interval, timestamptz) IS
  'Reserves the worst-case cost of a call (prompt at the input price plus max_output_tokens at the output price) against every budget of the tenant and user, atomically, or refuses with PT402 (HTTP 402) and JSON details. Settle with llm_budget_settle or llm_record_usage(reservation_id => ...).';

CREATE FUNCTION @extschema@.llm_budget_settle(reservation_id bigint, actual_micros bigint, actual_tokens bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._llm_tenant('llm_budget_settle');
  r @extschema@.llm_reservations%ROWTYPE;
BEGIN
  IF reservation_id IS NULL OR actual_micros IS NULL OR actual_tokens IS NULL THEN
    RAISE EXCEPTION 'llm_budget_settle: reservation_id, actual_micros and actual_tokens must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the reservation and what the call really cost.';
  END IF;
  IF actual_micros < 0 OR actual_tokens < 0 THEN
    RAISE EXCEPTION 'llm_budget_settle: actual cost and tokens must not be negative'
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Pass what the call really cost (0 if it failed before any token).';
  END IF;
  -- Idempotent: only the first settle of a reservation changes anything.
  UPDATE @extschema@.llm_reservations x SET settled_at = now(), actual_micros = llm_budget_settle.actual_micros,
         actual_tokens = llm_budget_settle.actual_tokens
  WHERE x.tenant_id = t AND x.reservation_id = llm_budget_settle.reservation_id AND x.settled_at IS NULL
  RETURNING * INTO r;
  IF NOT FOUND THEN
    IF EXISTS (SELECT FROM @extschema@.llm_reservations x WHERE x.tenant_id = t AND x.reservation_id = llm_budget_settle.reservation_id) THEN
      RETURN false;
    END IF;
    RAISE EXCEPTION 'llm_budget_settle: reservation % does not exist for this tenant', llm_budget_settle.reservation_id
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the reservation_id llm_budget_reserve returned in this tenant.';
  END IF;
  UPDATE @extschema@.llm_budget_windows w
  SET used_micros = w.used_micros + r.actual_micros, used_tokens = w.used_tokens + r.actual_tokens,
      reserved_micros = w.reserved_micros - CASE WHEN r.released_at IS NULL THEN r.reserved_micros ELSE 0 END,
      reserved_tokens = w.reserved_tokens - CASE WHEN r.released_at IS NULL THEN r.reserved_tokens ELSE 0 END
  FROM unnest(r.budget_ids, r.window_starts) AS x(id, s)
  WHERE w.tenant_id = t AND w.budget_id = x.id AND w.window_start = x.s;
  RETURN true;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_budget_settle(bigint, bigint, bigint) IS
  'Replaces a reservation by the actual cost and tokens of the call; idempotent (false when already settled).';

CREATE FUNCTION @extschema@.llm_budget_status()
RETURNS TABLE (budget_id bigint, scope text, period text, window_start timestamptz, resets_at timestamptz,
               max_cost_micros bigint, max_tokens bigint, used_micros bigint, used_tokens bigint,
               reserved_micros bigint, reserved_tokens bigint)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._llm_tenant('llm_budget_status');
  u uuid := @extschema@.current_user_id();
BEGIN
  RETURN QUERY
  SELECT b.budget_id, CASE WHEN b.user_id IS NULL THEN 'tenant' ELSE 'user' END, b.period, s.ws,
         (s.ws AT TIME ZONE b.time_zone + CASE b.period WHEN 'day' THEN interval '1 day' ELSE interval '1 month' END) AT TIME ZONE b.time_zone,
         b.max_cost_micros, b.max_tokens, coalesce(w.used_micros, 0), coalesce(w.used_tokens, 0),
         coalesce(w.reserved_micros, 0), coalesce(w.reserved_tokens, 0)
  FROM @extschema@.llm_budgets b
  CROSS JOIN LATERAL (SELECT date_trunc(b.period, now(), b.time_zone) AS ws) s
  LEFT JOIN @extschema@.llm_budget_windows w ON w.tenant_id = b.tenant_id AND w.budget_id = b.budget_id AND w.window_start = s.ws
  WHERE b.tenant_id = t AND (b.user_id IS NULL OR b.user_id = u)
  ORDER BY b.budget_id;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_budget_status() IS
  'The budgets of the current tenant and user in their current windows: limits, use, reservations, reset time.';

-- ---------------------------------------------------------------------------
-- The ledger
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@._llm_ensure_ledger()
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT EXISTS (SELECT FROM @extschema@.partition_config WHERE parent = '@extschema@.llm_usage'::regclass) THEN
    PERFORM @extschema@.create_monthly_partitions('@extschema@.llm_usage', 'created_at');
  END IF;
END
$$;

-- A partition of the ledger gets the ledger's key (as audit_log's do).
CREATE FUNCTION @extschema@._llm_partition_hook(parent regclass, part regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF coalesce(pg_partition_root(part), parent) = '@extschema@.llm_usage'::regclass
     AND NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = part AND contype = 'p') THEN
    EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (tenant_id, created_at, usage_id)', part);
  END IF;
END
$$;
INSERT INTO @extschema@.partition_hooks (hook_name, hook, builtin)
VALUES ('llm', '@extschema@._llm_partition_hook(regclass, regclass)', true);

CREATE FUNCTION @extschema@.llm_record_usage(
  provider text,
  model text,
  prompt_tokens bigint,
  completion_tokens bigint,
  cached_read_tokens bigint DEFAULT 0,
  cache_write_tokens bigint DEFAULT 0,
  reasoning_tokens bigint DEFAULT 0,
  cost_micros bigint DEFAULT NULL,
  cache_hit boolean DEFAULT false,
  saved_micros bigint DEFAULT NULL,
  latency_ms integer DEFAULT NULL,
  finish_reason text DEFAULT NULL,
  function_name text DEFAULT NULL,
  idempotency_key text DEFAULT NULL,
  reservation_id bigint DEFAULT NULL,
  p_now timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._llm_tenant('llm_record_usage');
  u uuid := @extschema@.current_user_id();
  now_ts timestamptz := coalesce(p_now, now());
  p @extschema@.llm_prices%ROWTYPE;
  cost bigint := cost_micros;
  saved bigint := coalesce(saved_micros, 0);
  id bigint;
  ids bigint[];
  starts timestamptz[];
BEGIN
  IF provider IS NULL OR model IS NULL OR prompt_tokens IS NULL OR completion_tokens IS NULL OR cached_read_tokens IS NULL
     OR cache_write_tokens IS NULL OR reasoning_tokens IS NULL OR cache_hit IS NULL THEN
    RAISE EXCEPTION 'llm_record_usage: provider, model and token counts must not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass 0 for token kinds the call did not have.';
  END IF;
  IF least(prompt_tokens, completion_tokens, cached_read_tokens, cache_write_tokens, reasoning_tokens, cost_micros, saved_micros, latency_ms) < 0 THEN
    RAISE EXCEPTION 'llm_record_usage: tokens, cost, saved cost and latency must not be negative'
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Pass the counts the provider reported.';
  END IF;
  IF char_length(idempotency_key) NOT BETWEEN 1 AND 200 THEN
    RAISE EXCEPTION 'llm_record_usage: idempotency_key must have 1 to 200 characters'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Use the provider''s response id or a uuid of the call.';
  END IF;
  IF idempotency_key IS NOT NULL THEN
    SELECT k.usage_id INTO id FROM @extschema@.llm_usage_keys k WHERE k.tenant_id = t AND k.idempotency_key = llm_record_usage.idempotency_key;
    IF id IS NOT NULL THEN
      RETURN id;
    END IF;
  END IF;
  IF cost IS NULL THEN
    p := @extschema@._llm_price('llm_record_usage', provider, model, now_ts);
    cost := @extschema@._llm_cost(prompt_tokens, cached_read_tokens, cache_write_tokens, completion_tokens, reasoning_tokens,
                                  p.input_micros_per_mtok, p.cached_input_micros_per_mtok, p.cache_write_micros_per_mtok,
                                  p.output_micros_per_mtok, p.cached_subset);
  ELSIF reasoning_tokens > completion_tokens THEN
    RAISE EXCEPTION 'llm_record_usage: reasoning_tokens (%) exceed completion_tokens (%)', reasoning_tokens, completion_tokens
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Reasoning tokens are part of the completion tokens.';
  END IF;
  PERFORM @extschema@._llm_ensure_ledger();
  INSERT INTO @extschema@.llm_usage AS l (tenant_id, created_at, user_id, function_name, provider, model, prompt_tokens,
      cached_read_tokens, cache_write_tokens, completion_tokens, reasoning_tokens, cost_micros, price_effective_from,
      cache_hit, saved_micros, latency_ms, finish_reason, idempotency_key, reservation_id)
  VALUES (t, now_ts, u, function_name, provider, model, prompt_tokens, cached_read_tokens, cache_write_tokens,
          completion_tokens, reasoning_tokens, CASE WHEN cache_hit THEN 0 ELSE cost END, p.effective_from,
          cache_hit, CASE WHEN cache_hit THEN greatest(saved, cost) ELSE saved END, latency_ms, finish_reason,
          idempotency_key, reservation_id)
  RETURNING l.usage_id INTO id;
  IF idempotency_key IS NOT NULL THEN
    -- A concurrent duplicate waits here on the key and then fails with
    -- 23505 (HTTP 409); its transaction recorded nothing.
    INSERT INTO @extschema@.llm_usage_keys (tenant_id, idempotency_key, usage_id, created_at)
    VALUES (t, idempotency_key, id, now_ts);
  END IF;
  INSERT INTO @extschema@.llm_usage_daily AS d (tenant_id, day, provider, model, calls, cache_hits, prompt_tokens,
      cached_read_tokens, cache_write_tokens, completion_tokens, reasoning_tokens, cost_micros, saved_micros)
  VALUES (t, (now_ts AT TIME ZONE 'UTC')::date, provider, model, 1, cache_hit::int, prompt_tokens, cached_read_tokens,
          cache_write_tokens, completion_tokens, reasoning_tokens, CASE WHEN cache_hit THEN 0 ELSE cost END,
          CASE WHEN cache_hit THEN greatest(saved, cost) ELSE saved END)
  ON CONFLICT ON CONSTRAINT llm_usage_daily_pkey DO UPDATE SET
    calls = d.calls + 1, cache_hits = d.cache_hits + EXCLUDED.cache_hits, prompt_tokens = d.prompt_tokens + EXCLUDED.prompt_tokens,
    cached_read_tokens = d.cached_read_tokens + EXCLUDED.cached_read_tokens,
    cache_write_tokens = d.cache_write_tokens + EXCLUDED.cache_write_tokens,
    completion_tokens = d.completion_tokens + EXCLUDED.completion_tokens,
    reasoning_tokens = d.reasoning_tokens + EXCLUDED.reasoning_tokens,
    cost_micros = d.cost_micros + EXCLUDED.cost_micros, saved_micros = d.saved_micros + EXCLUDED.saved_micros;
  IF cache_hit THEN
    RETURN id;
  END IF;
  IF reservation_id IS NOT NULL THEN
    PERFORM @extschema@.llm_budget_settle(reservation_id, cost, prompt_tokens + completion_tokens);
  ELSE
    -- Unreserved calls count against the budgets too (never refused here).
    SELECT array_agg(b.budget_id), array_agg(date_trunc(b.period, now_ts, b.time_zone))
    INTO ids, starts
    FROM @extschema@.llm_budgets b WHERE b.tenant_id = t AND (b.user_id IS NULL OR b.user_id = u);
    IF ids IS NOT NULL THEN
      INSERT INTO @extschema@.llm_budget_windows AS w (tenant_id, budget_id, window_start, used_micros, used_tokens)
      SELECT t, x.id, x.s, cost, prompt_tokens + completion_tokens FROM unnest(ids, starts) AS x(id, s)
      ON CONFLICT ON CONSTRAINT llm_budget_windows_pkey DO UPDATE SET
        used_micros = w.used_micros + EXCLUDED.used_micros, used_tokens = w.used_tokens + EXCLUDED.used_tokens;
    END IF;
  END IF;
  RETURN id;
END
$$;
COMMENT ON FUNCTION @extschema@.llm_record_usage(text, text, bigint, bigint, bigint, bigint, bigint, bigint, boolean, bigint, integer, text, text, text, bigint, timestamptz) IS
  'Records one LLM call of the current tenant in the ledger and the daily rollup (same transaction); cost from the price table when omitted; settles its reservation; idempotent by idempotency_key. Returns the usage_id.';

-- ---------------------------------------------------------------------------
-- Maintenance: hits flushed, expired cache rows, leases and idempotency
-- keys deleted, expired reservations released. (The ledger's partitions are
-- kept by the partitions module once the first record made them.)
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@._llm_maintenance(p_now timestamptz)
RETURNS TABLE (parent_table regclass, action text, partition_name text, detail text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  flushed bigint;
  expired bigint;
  leases bigint;
  released bigint;
  keys bigint;
  pruned bigint;
BEGIN
  flushed := @extschema@.llm_hits_flush();
  DELETE FROM @extschema@.llm_cache c WHERE c.expires_at <= p_now;
  GET DIAGNOSTICS expired = ROW_COUNT;
  DELETE FROM @extschema@.llm_cache_shared c WHERE c.expires_at <= p_now;
  GET DIAGNOSTICS pruned = ROW_COUNT;
  expired := expired + pruned;
  DELETE FROM @extschema@.llm_semantic_hits h WHERE h.looked_up_at < p_now - interval '90 days';
  GET DIAGNOSTICS pruned = ROW_COUNT;
  DELETE FROM @extschema@.llm_cache_leases l WHERE l.expires_at <= p_now;
  GET DIAGNOSTICS leases = ROW_COUNT;
  DELETE FROM @extschema@.llm_usage_keys k WHERE k.created_at < p_now - interval '35 days';
  GET DIAGNOSTICS keys = ROW_COUNT;
  keys := keys + pruned;
  WITH gone AS (
    UPDATE @extschema@.llm_reservations r SET released_at = p_now
    WHERE r.settled_at IS NULL AND r.released_at IS NULL AND r.expires_at <= p_now
    RETURNING r.tenant_id, r.budget_ids, r.window_starts, r.reserved_micros, r.reserved_tokens
  ), per_window AS (
    SELECT g.tenant_id, x.id, x.s, sum(g.reserved_micros) AS m, sum(g.reserved_tokens) AS tk, count(*) AS n
    FROM gone g, unnest(g.budget_ids, g.window_starts) AS x(id, s) GROUP BY 1, 2, 3
  ), upd AS (
    UPDATE @extschema@.llm_budget_windows w SET reserved_micros = w.reserved_micros - p.m, reserved_tokens = w.reserved_tokens - p.tk
    FROM per_window p WHERE w.tenant_id = p.tenant_id AND w.budget_id = p.id AND w.window_start = p.s
  )
  SELECT count(*) INTO released FROM gone;
  IF flushed + expired + leases + released + keys > 0 THEN
    parent_table := '@extschema@.llm_cache'::regclass; action := 'llm'; partition_name := NULL;
    detail := format('%s cache lookups written, %s expired cache rows, %s leases, %s idempotency keys and semantic hits deleted, %s expired reservations released',
                     flushed, expired, leases, keys, released);
    RETURN NEXT;
  END IF;
END
$$;
INSERT INTO @extschema@.maintenance_tasks (task, module, function_name, run_order, reports_as)
VALUES ('llm', 'llm', '_llm_maintenance', 40, 'llm_cache');

-- ---------------------------------------------------------------------------
-- What API roles get from saas.grant_api, and the saas_api wrappers.
-- ---------------------------------------------------------------------------
CREATE FUNCTION saas_api.llm_cache_get(request jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r jsonb := request;
BEGIN
  -- A GET passes the request in the query string, which PostgREST gives a
  -- jsonb parameter as a JSON string: its text is the request.
  IF jsonb_typeof(request) = 'string' THEN
    BEGIN
      r := (request #>> '{}')::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
      RAISE EXCEPTION 'llm_cache_get: the request is text that is not JSON'
        USING ERRCODE = 'invalid_text_representation',
              HINT = 'Pass the request object as JSON; in a GET: ?request=<the object as JSON text, URL-encoded>.';
    END;
  END IF;
  RETURN @extschema@.llm_cache_get(r);
END
$$;
COMMENT ON FUNCTION saas_api.llm_cache_get(jsonb) IS
  'The cached response to this LLM request in the current tenant, or null; the hit is counted exactly (GET with ?request=<JSON text>, or POST).';

CREATE FUNCTION saas_api.llm_cache_lease(request jsonb, lease_seconds int DEFAULT 60)
RETURNS jsonb
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.llm_cache_lease(request, lease_seconds) $$;
COMMENT ON FUNCTION saas_api.llm_cache_lease(jsonb, int) IS
  'Single-flight lookup (POST): {"status": "hit" | "lease" | "wait", ...}; the caller with the lease computes and calls llm_cache_put with its lease_id.';

CREATE FUNCTION saas_api.llm_cache_put(request jsonb, response jsonb, usage jsonb DEFAULT NULL, ttl interval DEFAULT '7 days',
                                       allow_nondeterministic boolean DEFAULT false, lease_id uuid DEFAULT NULL, provider text DEFAULT NULL,
                                       embedding real[] DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.llm_cache_put(request, response, usage, ttl, allow_nondeterministic, lease_id, provider, embedding) $$;
COMMENT ON FUNCTION saas_api.llm_cache_put(jsonb, jsonb, jsonb, interval, boolean, uuid, text, real[]) IS
  'Caches a finished, deterministic answer for the current tenant (with the embedding of its last user turn for the semantic cache); {"cached": false, "reason"} when it may not be cached.';

CREATE FUNCTION saas_api.llm_cache_lookup(request jsonb, embedding real[] DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r jsonb := request;
BEGIN
  -- A GET passes the request as a JSON string (as llm_cache_get); a GET
  -- with an embedding then gets 25006 (a semantic lookup writes).
  IF jsonb_typeof(request) = 'string' THEN
    BEGIN
      r := (request #>> '{}')::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
      RAISE EXCEPTION 'llm_cache_lookup: the request is text that is not JSON'
        USING ERRCODE = 'invalid_text_representation',
              HINT = 'Pass the request object as JSON (POST, with the embedding as a JSON array).';
    END;
  END IF;
  RETURN @extschema@.llm_cache_lookup(r, embedding);
END
$$;
COMMENT ON FUNCTION saas_api.llm_cache_lookup(jsonb, real[]) IS
  'Exact, else semantic lookup (POST): {"match": "exact"|"semantic", "cache_key", "similarity", "response"} or null.';

CREATE FUNCTION saas_api.llm_semantic_stats(p_from date DEFAULT (pg_catalog.now() AT TIME ZONE 'UTC')::date - 29,
                                            p_to date DEFAULT (pg_catalog.now() AT TIME ZONE 'UTC')::date)
RETURNS TABLE (model text, served boolean, similarity_from numeric, similarity_to numeric, hits bigint,
               min_similarity float8, tokens_saved bigint, saved_micros bigint)
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.llm_semantic_stats(p_from, p_to) $$;
COMMENT ON FUNCTION saas_api.llm_semantic_stats(date, date) IS
  'The current tenant''s semantic hits, served and shadow, per similarity bucket of 0.01.';

CREATE FUNCTION saas_api.llm_shared_get(request jsonb)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r jsonb := request;
BEGIN
  IF jsonb_typeof(request) = 'string' THEN
    BEGIN
      r := (request #>> '{}')::jsonb;
    EXCEPTION WHEN invalid_text_representation THEN
      RAISE EXCEPTION 'llm_shared_get: the request is text that is not JSON'
        USING ERRCODE = 'invalid_text_representation',
              HINT = 'Pass the request object as JSON; in a GET: ?request=<the object as JSON text, URL-encoded>.';
    END;
  END IF;
  RETURN @extschema@.llm_shared_get(r);
END
$$;
COMMENT ON FUNCTION saas_api.llm_shared_get(jsonb) IS
  'The answer of the shared (non-tenant) scope to this LLM request, or null (GET with ?request=<JSON text>, or POST).';

CREATE FUNCTION saas_api.llm_shared_put(request jsonb, response jsonb, usage jsonb DEFAULT NULL, ttl interval DEFAULT '7 days',
                                        allow_nondeterministic boolean DEFAULT false, provider text DEFAULT NULL)
RETURNS jsonb
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.llm_shared_put(request, response, usage, ttl, allow_nondeterministic, provider) $$;
COMMENT ON FUNCTION saas_api.llm_shared_put(jsonb, jsonb, jsonb, interval, boolean, text) IS
  'Stores an answer holding no tenant data in the shared scope. Not an API grant: only roles given saas.llm_shared_grant().';

CREATE FUNCTION saas_api.llm_cache_stats(p_from date DEFAULT (pg_catalog.now() AT TIME ZONE 'UTC')::date - 29,
                                         p_to date DEFAULT (pg_catalog.now() AT TIME ZONE 'UTC')::date)
RETURNS TABLE (model text, lookups bigint, hits bigint, misses bigint, hit_rate numeric, tokens_saved bigint, saved_micros bigint,
               semantic_hits bigint, shadow_hits bigint, shared_hits bigint, overflow_hits bigint)
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.llm_cache_stats(p_from, p_to) $$;
COMMENT ON FUNCTION saas_api.llm_cache_stats(date, date) IS
  'The current tenant''s LLM cache per model: lookups, hits, hit rate, tokens and micro-units saved (default: the last 30 UTC days).';

CREATE FUNCTION saas_api.llm_budget_reserve(provider text, model text, prompt_tokens bigint, max_output_tokens bigint,
                                            ttl interval DEFAULT '15 minutes')
RETURNS TABLE (reservation_id bigint, reserved_micros bigint, reserved_tokens bigint, expires_at timestamptz)
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.llm_budget_reserve(provider, model, prompt_tokens, max_output_tokens, ttl) $$;
COMMENT ON FUNCTION saas_api.llm_budget_reserve(text, text, bigint, bigint, interval) IS
  'Reserves the worst-case cost of an LLM call against the tenant''s and user''s budgets, or 402 (PT402) with JSON details.';

CREATE FUNCTION saas_api.llm_budget_settle(reservation_id bigint, actual_micros bigint, actual_tokens bigint)
RETURNS boolean
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.llm_budget_settle(reservation_id, actual_micros, actual_tokens) $$;
COMMENT ON FUNCTION saas_api.llm_budget_settle(bigint, bigint, bigint) IS
  'Replaces a reservation by the actual cost; idempotent.';

CREATE FUNCTION saas_api.llm_budget_status()
RETURNS TABLE (budget_id bigint, scope text, period text, window_start timestamptz, resets_at timestamptz,
               max_cost_micros bigint, max_tokens bigint, used_micros bigint, used_tokens bigint,
               reserved_micros bigint, reserved_tokens bigint)
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.llm_budget_status() $$;
COMMENT ON FUNCTION saas_api.llm_budget_status() IS
  'The LLM budgets of the current tenant and user: limits, use, reservations and reset time.';

CREATE FUNCTION saas_api.llm_record_usage(
  provider text, model text, prompt_tokens bigint, completion_tokens bigint,
  cached_read_tokens bigint DEFAULT 0, cache_write_tokens bigint DEFAULT 0, reasoning_tokens bigint DEFAULT 0,
  cost_micros bigint DEFAULT NULL, cache_hit boolean DEFAULT false, saved_micros bigint DEFAULT NULL,
  latency_ms integer DEFAULT NULL, finish_reason text DEFAULT NULL, function_name text DEFAULT NULL,
  idempotency_key text DEFAULT NULL, reservation_id bigint DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.llm_record_usage(provider, model, prompt_tokens, completion_tokens, cached_read_tokens,
            cache_write_tokens, reasoning_tokens, cost_micros, cache_hit, saved_micros, latency_ms, finish_reason,
            function_name, idempotency_key, reservation_id) $$;
COMMENT ON FUNCTION saas_api.llm_record_usage(text, text, bigint, bigint, bigint, bigint, bigint, bigint, boolean, bigint, integer, text, text, text, bigint) IS
  'Records one LLM call of the current tenant (ledger and daily rollup); settles reservation_id; idempotent by idempotency_key.';

INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege) VALUES
  ('llm', 'function', 'llm_cache_key(jsonb)', 'EXECUTE'),
  ('llm', 'function', 'llm_assemble_stream(jsonb)', 'EXECUTE'),
  ('llm', 'function', 'llm_cache_get(jsonb, timestamptz)', 'EXECUTE'),
  ('llm', 'function', 'llm_cache_lease(jsonb, integer, timestamptz)', 'EXECUTE'),
  ('llm', 'function', 'llm_cache_put(jsonb, jsonb, jsonb, interval, boolean, uuid, text, real[], timestamptz)', 'EXECUTE'),
  ('llm', 'function', 'llm_cache_lookup(jsonb, real[], timestamptz)', 'EXECUTE'),
  ('llm', 'function', 'llm_context_hash(jsonb)', 'EXECUTE'),
  ('llm', 'function', 'llm_semantic_stats(date, date)', 'EXECUTE'),
  ('llm', 'function', 'llm_shared_get(jsonb, timestamptz)', 'EXECUTE'),
  ('llm', 'function', 'llm_cache_stats(date, date)', 'EXECUTE'),
  ('llm', 'function', 'llm_budget_reserve(text, text, bigint, bigint, interval, timestamptz)', 'EXECUTE'),
  ('llm', 'function', 'llm_budget_settle(bigint, bigint, bigint)', 'EXECUTE'),
  ('llm', 'function', 'llm_budget_status()', 'EXECUTE'),
  ('llm', 'function', 'llm_record_usage(text, text, bigint, bigint, bigint, bigint, bigint, bigint, boolean, bigint, integer, text, text, text, bigint, timestamptz)', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_cache_get(jsonb)', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_cache_lease(jsonb, integer)', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_cache_put(jsonb, jsonb, jsonb, interval, boolean, uuid, text, real[])', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_cache_lookup(jsonb, real[])', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_semantic_stats(date, date)', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_shared_get(jsonb)', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_cache_stats(date, date)', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_budget_reserve(text, text, bigint, bigint, interval)', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_budget_settle(bigint, bigint, bigint)', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_budget_status()', 'EXECUTE'),
  ('llm', 'function', 'saas_api.llm_record_usage(text, text, bigint, bigint, bigint, bigint, bigint, bigint, boolean, bigint, integer, text, text, text, bigint)', 'EXECUTE');
