-- Memory: memories with embeddings per model (pgvector), searched exactly by
-- a decayed, importance- and entity-boosted score with an explanation per
-- row; erasure by subject; a sampled query log. The score, its terms, the
-- stopping bound and the half-life converters are Rust (src/memory); the
-- tables and entry points are here. docs/memory.md is the reference.
--
-- pgvector may live in any schema (Supabase: extensions): the column and
-- parameter types resolve while this script runs (CREATE EXTENSION puts the
-- schemas of required extensions on its search_path); function bodies find
-- the schema at call time (_memory_vector_schema) and name it.

-- ---------------------------------------------------------------------------
-- Models: global (a Citus reference table). One row per embedding model,
-- with its dimension, distance and the HNSW index memory_index_model built.
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.memory_models (
  model       text        NOT NULL,
  dims        int         NOT NULL,
  distance    text        NOT NULL DEFAULT 'cosine',
  index_name  text,
  created_at  timestamptz NOT NULL DEFAULT now(),
  hnsw_m      int         NOT NULL DEFAULT 32,
  hnsw_ef_construction int NOT NULL DEFAULT 200,
  CONSTRAINT memory_models_pkey PRIMARY KEY (model),
  CONSTRAINT memory_models_dims CHECK (dims BETWEEN 1 AND 2000),
  CONSTRAINT memory_models_distance CHECK (distance IN ('cosine', 'l2', 'ip')),
  CONSTRAINT memory_models_name CHECK (model ~ '^[A-Za-z0-9._:/-]{1,100}$'),
  CONSTRAINT memory_models_hnsw CHECK (hnsw_m BETWEEN 2 AND 100 AND hnsw_ef_construction BETWEEN 4 AND 1000)
);
COMMENT ON TABLE @extschema@.memory_models IS
  'Embedding models of memory search: dimension, distance, HNSW index (saas.memory_index_model).';
ALTER TABLE @extschema@.memory_models ENABLE ROW LEVEL SECURITY;
CREATE POLICY saas_memory_models_read ON @extschema@.memory_models FOR SELECT USING (true);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.memory_models', '');

-- ---------------------------------------------------------------------------
-- Memories, their entity links and their embeddings: tenant tables (forced
-- RLS, tenant_id leading every key), Citus-ready.
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.memories (
  tenant_id         uuid        NOT NULL,
  id                bigint      GENERATED ALWAYS AS IDENTITY,
  subject           text,
  kind              text        NOT NULL DEFAULT 'note',
  content           text        NOT NULL,
  metadata          jsonb       NOT NULL DEFAULT '{}',
  importance        float8      NOT NULL DEFAULT 0.5,
  evergreen         boolean     NOT NULL DEFAULT false,
  event_at          timestamptz NOT NULL DEFAULT now(),
  created_at        timestamptz NOT NULL DEFAULT now(),
  last_accessed_at  timestamptz,
  access_count      bigint      NOT NULL DEFAULT 0,
  entities          text[]      NOT NULL DEFAULT '{}',
  CONSTRAINT memories_pkey PRIMARY KEY (tenant_id, id),
  CONSTRAINT memories_importance CHECK (importance >= 0 AND importance <= 1),
  CONSTRAINT memories_kind CHECK (kind <> '' AND length(kind) <= 100),
  CONSTRAINT memories_access_count CHECK (access_count >= 0)
);
COMMENT ON TABLE @extschema@.memories IS
  'AI memories per tenant: what, about whom (subject), kind, importance, when; searched by saas.memory_search.';
CREATE INDEX memories_subject ON @extschema@.memories (tenant_id, subject);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.memories', '');
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.memories', 'id'), '');

CREATE TABLE @extschema@.memory_entities (
  tenant_id  uuid   NOT NULL,
  entity     text   NOT NULL,
  memory_id  bigint NOT NULL,
  CONSTRAINT memory_entities_pkey PRIMARY KEY (tenant_id, entity, memory_id)
);
COMMENT ON TABLE @extschema@.memory_entities IS
  'Entity links: which memories mention which entity (their subject included); the entity stage of memory_search reads them.';
CREATE INDEX memory_entities_memory ON @extschema@.memory_entities (tenant_id, memory_id);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.memory_entities', '');

CREATE TABLE @extschema@.memory_embeddings (
  tenant_id    uuid        NOT NULL,
  memory_id    bigint      NOT NULL,
  model        text        NOT NULL,
  embedding    vector      NOT NULL,
  embedded_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT memory_embeddings_pkey PRIMARY KEY (tenant_id, memory_id, model)
);
COMMENT ON TABLE @extschema@.memory_embeddings IS
  'One embedding per memory per model, stored as given (never truncated or padded); each model has its own HNSW expression index.';
CREATE INDEX memory_embeddings_model ON @extschema@.memory_embeddings (tenant_id, model, memory_id);
SELECT pg_catalog.pg_extension_config_dump('@extschema@.memory_embeddings', '');

-- No foreign keys between these dumped tables: a parallel pg_restore
-- (--jobs) loads their data concurrently, largest first, and the keys of an
-- extension's tables exist before the data, so a key would refuse the
-- embeddings before their memories or model arrived. memory_add and
-- memory_embed check what a key would; deleting memories deletes their
-- embeddings and entity links (below).
CREATE FUNCTION @extschema@._memory_deleted()
RETURNS trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  DELETE FROM @extschema@.memory_embeddings e USING memory_gone g WHERE e.tenant_id = g.tenant_id AND e.memory_id = g.id;
  DELETE FROM @extschema@.memory_entities l USING memory_gone g WHERE l.tenant_id = g.tenant_id AND l.memory_id = g.id;
  RETURN NULL;
END
$$;
CREATE TRIGGER memories_deleted AFTER DELETE ON @extschema@.memories
  REFERENCING OLD TABLE AS memory_gone FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._memory_deleted();

-- ---------------------------------------------------------------------------
-- The query log: sampled (saas.memory_log_sample_rate), monthly partitions
-- made by memory_index_model and kept by run_maintenance (retention 6 months).
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.memory_query_log (
  tenant_id    uuid        NOT NULL,
  id           bigint      GENERATED ALWAYS AS IDENTITY,
  logged_at    timestamptz NOT NULL,
  model        text        NOT NULL,
  k            int         NOT NULL,
  stage        text        NOT NULL,
  exact        boolean     NOT NULL,
  candidates   int         NOT NULL,
  returned     int         NOT NULL,
  top_score    float8,
  latency_ms   float8      NOT NULL,
  subjects     text[]      NOT NULL DEFAULT '{}',
  entities     text[]      NOT NULL DEFAULT '{}',
  result_ids   bigint[]    NOT NULL DEFAULT '{}'
) PARTITION BY RANGE (logged_at);
COMMENT ON TABLE @extschema@.memory_query_log IS
  'Sampled memory_search calls: model, k, stage, exact, candidates examined, rows, top score, latency. Readable per tenant.';
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.memory_query_log', 'id'), '');

SELECT @extschema@._tenancy_apply('@extschema@.memories', 'tenant_id');
SELECT @extschema@._tenancy_apply('@extschema@.memory_entities', 'tenant_id');
SELECT @extschema@._tenancy_apply('@extschema@.memory_embeddings', 'tenant_id');
SELECT @extschema@._tenancy_apply('@extschema@.memory_query_log', 'tenant_id');

-- ---------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------
-- pgvector's schema, quoted, at call time.
CREATE FUNCTION @extschema@._memory_vector_schema()
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
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'CREATE EXTENSION vector (pg_saas requires it).';
  END IF;
  RETURN s;
END
$$;

CREATE FUNCTION @extschema@._memory_tenant()
RETURNS uuid
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@.current_tenant();
BEGIN
  IF t IS NULL THEN
    RAISE EXCEPTION 'memory functions need a tenant'
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'Call through the API with a tenant claim or X-Tenant-Id, or saas.set_tenant(...) first.';
  END IF;
  RETURN t;
END
$$;

-- The model row, or 22023 (unknown) / 55000 (no index yet).
CREATE FUNCTION @extschema@._memory_model(p_model text, need_index boolean)
RETURNS @extschema@.memory_models
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r @extschema@.memory_models%ROWTYPE;
BEGIN
  IF p_model IS NULL THEN
    RAISE EXCEPTION 'the model may not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Name the embedding model, e.g. ''text-embedding-3-small''.';
  END IF;
  SELECT * INTO r FROM @extschema@.memory_models m WHERE m.model = p_model;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'unknown embedding model "%"', @extschema@._echo(p_model)
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Register it first: saas.memory_index_model(model, dims). Registered: '
                   || coalesce((SELECT string_agg(m.model, ', ' ORDER BY m.model) FROM @extschema@.memory_models m), 'none') || '.';
  END IF;
  IF need_index AND (r.index_name IS NULL OR pg_catalog.to_regclass('@extschema@.' || pg_catalog.quote_ident(r.index_name)) IS NULL) THEN
    RAISE EXCEPTION 'model "%" has no HNSW index', @extschema@._echo(p_model)
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = format('Build it with saas.memory_index_model(%L, %s, %L) (as the owner).', r.model, r.dims, r.distance);
  END IF;
  RETURN r;
END
$$;

-- Checks a vector against the model: finite values, the model's dimension.
CREATE FUNCTION @extschema@._memory_check_vector(v text, p_model text, p_dims int, what text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  n int;
BEGIN
  IF v IS NULL THEN
    RAISE EXCEPTION '% may not be NULL', what
      USING ERRCODE = 'null_value_not_allowed', HINT = format('Pass a vector of %s dimensions.', p_dims);
  END IF;
  IF v ~* '(nan|inf)' THEN
    RAISE EXCEPTION '% holds NaN or infinity', what
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Every element of an embedding must be a finite number.';
  END IF;
  n := pg_catalog.array_length(pg_catalog.string_to_array(pg_catalog.btrim(v, '[]'), ','), 1);
  IF n IS DISTINCT FROM p_dims THEN
    RAISE EXCEPTION '% has % dimensions, model "%" has %', what, coalesce(n, 0), @extschema@._echo(p_model), p_dims
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Embed with the model the vector is searched or stored under; vectors are never truncated or padded.';
  END IF;
END
$$;

-- ---------------------------------------------------------------------------
-- memory_index_model: register a model and build its HNSW expression index.
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.memory_index_model(
  model text,
  dims int,
  distance text DEFAULT 'cosine',
  m int DEFAULT 32,
  ef_construction int DEFAULT 200)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  old @extschema@.memory_models%ROWTYPE;
  idx text;
  opclass text;
BEGIN
  PERFORM @extschema@._memory_vector_schema();
  IF model IS NULL OR dims IS NULL OR distance IS NULL OR m IS NULL OR ef_construction IS NULL THEN
    RAISE EXCEPTION 'memory_index_model: no argument may be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'e.g. saas.memory_index_model(''minilm-l6'', 384).';
  END IF;
  IF model !~ '^[A-Za-z0-9._:/-]{1,100}$' THEN
    RAISE EXCEPTION 'invalid model name "%"', @extschema@._echo(model)
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Model names are 1 to 100 letters, digits and . _ : / -.';
  END IF;
  IF dims < 1 OR dims > 2000 THEN
    RAISE EXCEPTION 'dims % is out of range', dims
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'pgvector''s HNSW indexes vectors of 1 to 2000 dimensions.';
  END IF;
  opclass := CASE distance WHEN 'cosine' THEN 'vector_cosine_ops' WHEN 'l2' THEN 'vector_l2_ops' WHEN 'ip' THEN 'vector_ip_ops' END;
  IF opclass IS NULL THEN
    RAISE EXCEPTION 'unknown distance "%"', @extschema@._echo(distance)
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''cosine'', ''l2'' or ''ip''.';
  END IF;
  IF m < 2 OR m > 100 OR ef_construction < 4 OR ef_construction > 1000 THEN
    RAISE EXCEPTION 'HNSW parameters m % / ef_construction % are out of range', m, ef_construction
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'pgvector takes m 2..100 and ef_construction 4..1000 (pgvector defaults to 16 and 64; memory search to 32 and 200).';
  END IF;
  SELECT * INTO old FROM @extschema@.memory_models r WHERE r.model = memory_index_model.model;
  IF FOUND AND (old.dims <> dims OR old.distance <> distance) THEN
    RAISE EXCEPTION 'model "%" is registered with % dimensions and distance %', model, old.dims, old.distance
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'A model''s dimension never changes: register the new one under a new name and re-embed (saas.memory_pending).';
  END IF;
  -- A new model's row builds its index (trigger memory_models_index); a
  -- known model's index is built again if it went missing, with the
  -- parameters it was registered with.
  INSERT INTO @extschema@.memory_models (model, dims, distance, index_name, hnsw_m, hnsw_ef_construction)
  VALUES (model, dims, distance, 'memory_hnsw_' || left(md5(model), 16), m, ef_construction)
  ON CONFLICT ON CONSTRAINT memory_models_pkey DO UPDATE SET index_name = EXCLUDED.index_name;
  idx := @extschema@._memory_build_index(model);
  PERFORM @extschema@._memory_ensure_log();
  RETURN jsonb_build_object('model', model, 'dims', dims, 'distance', distance, 'index', idx);
END
$$;
COMMENT ON FUNCTION @extschema@.memory_index_model(text, int, text, int, int) IS
  'Registers an embedding model and builds its HNSW expression index (embedding::vector(dims), partial on the model). Idempotent. For the owner.';

-- Builds a registered model's HNSW expression index unless it exists, with
-- the parameters stored in its row, or with p_tenant that tenant's own
-- index (partial on md5 of the tenant too, below); returns the index name. pg_dump does not
-- dump indexes on an extension's tables, so the restore of a memory_models
-- row builds it again (trigger memory_models_index, enabled ALWAYS so that a
-- data-only restore in replica mode builds it too).
CREATE FUNCTION @extschema@._memory_build_index(p_model text, p_tenant uuid DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  vs text := @extschema@._memory_vector_schema();
  r @extschema@.memory_models%ROWTYPE;
  idx text;
BEGIN
  SELECT * INTO STRICT r FROM @extschema@.memory_models mm WHERE mm.model = p_model;
  idx := CASE WHEN p_tenant IS NULL THEN r.index_name ELSE @extschema@._memory_tenant_index_name(p_model, p_tenant) END;
  IF pg_catalog.to_regclass('@extschema@.' || pg_catalog.quote_ident(idx)) IS NOT NULL THEN
    RETURN idx;
  END IF;
  EXECUTE format('CREATE INDEX %I ON @extschema@.memory_embeddings USING hnsw ((embedding::%s.vector(%s)) %s.%I) WITH (m = %s, ef_construction = %s) WHERE model = %L%s',
                 idx, vs, r.dims, vs,
                 CASE r.distance WHEN 'cosine' THEN 'vector_cosine_ops' WHEN 'l2' THEN 'vector_l2_ops' ELSE 'vector_ip_ops' END,
                 r.hnsw_m, r.hnsw_ef_construction, r.model,
                 CASE WHEN p_tenant IS NULL THEN ''
                      ELSE format(' AND pg_catalog.md5(tenant_id::text) = %L', pg_catalog.md5(p_tenant::text)) END);
  RETURN idx;
END
$$;

CREATE FUNCTION @extschema@._memory_models_index()
RETURNS trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  PERFORM @extschema@._memory_build_index(NEW.model);
  RETURN NULL;
END
$$;
CREATE TRIGGER memory_models_index AFTER INSERT ON @extschema@.memory_models
  FOR EACH ROW EXECUTE FUNCTION @extschema@._memory_models_index();
ALTER TABLE @extschema@.memory_models ENABLE ALWAYS TRIGGER memory_models_index;

-- ---------------------------------------------------------------------------
-- Tenant indexes: a large tenant's own HNSW index of a model, partial on the
-- model and the tenant; memory_search streams only these (a stream on the
-- shared index would read every other tenant's tuples near the query, at a
-- cost that depends on them). The predicate names md5(tenant_id), not the
-- tenant: index definitions are readable by every role (pg_indexes). Global,
-- like memory_models (a Citus reference table), for the owner. pg_dump leaves
-- out indexes on an extension's tables: a restored row builds its index
-- again.
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.memory_tenant_indexes (
  model       text        NOT NULL,
  tenant_id   uuid        NOT NULL,
  index_name  text        NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT memory_tenant_indexes_pkey PRIMARY KEY (model, tenant_id),
  CONSTRAINT memory_tenant_indexes_name_key UNIQUE (index_name)
);
COMMENT ON TABLE @extschema@.memory_tenant_indexes IS
  'Tenants with an HNSW index of their own per model (saas.memory_index_tenant, or run_maintenance above saas.memory_tenant_index_rows).';
ALTER TABLE @extschema@.memory_tenant_indexes ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.memory_tenant_indexes', '');

-- The name of a tenant's index of a model: no tenant id in it.
CREATE FUNCTION @extschema@._memory_tenant_index_name(p_model text, p_tenant uuid)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
RETURN 'memory_hnsw_t_' || pg_catalog.left(pg_catalog.md5(p_model || '/' || p_tenant::text), 16);

CREATE FUNCTION @extschema@._memory_tenant_indexes_changed()
RETURNS trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    PERFORM @extschema@._memory_build_index(NEW.model, NEW.tenant_id);
  ELSE
    EXECUTE format('DROP INDEX IF EXISTS @extschema@.%I', OLD.index_name);
  END IF;
  RETURN NULL;
END
$$;
CREATE TRIGGER memory_tenant_indexes_changed AFTER INSERT OR DELETE ON @extschema@.memory_tenant_indexes
  FOR EACH ROW EXECUTE FUNCTION @extschema@._memory_tenant_indexes_changed();
ALTER TABLE @extschema@.memory_tenant_indexes ENABLE ALWAYS TRIGGER memory_tenant_indexes_changed;

CREATE FUNCTION @extschema@.memory_index_tenant(model text, tenant uuid)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  r @extschema@.memory_models%ROWTYPE := @extschema@._memory_model(model, false);
BEGIN
  IF tenant IS NULL THEN
    RAISE EXCEPTION 'memory_index_tenant: the tenant may not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'e.g. saas.memory_index_tenant(''minilm-l6'', ''<tenant uuid>'').';
  END IF;
  IF NOT EXISTS (SELECT FROM @extschema@.tenants tt WHERE tt.id = tenant) THEN
    RAISE EXCEPTION 'unknown tenant %', tenant
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Name a tenant of saas.tenants.';
  END IF;
  INSERT INTO @extschema@.memory_tenant_indexes (model, tenant_id, index_name)
  VALUES (r.model, tenant, @extschema@._memory_tenant_index_name(r.model, tenant))
  ON CONFLICT ON CONSTRAINT memory_tenant_indexes_pkey DO NOTHING;
  RETURN jsonb_build_object('model', r.model, 'tenant_id', tenant,
                            'index', @extschema@._memory_build_index(r.model, tenant));
END
$$;
COMMENT ON FUNCTION @extschema@.memory_index_tenant(text, uuid) IS
  'Builds a tenant''s own HNSW index of a model (partial on the model and md5 of the tenant), which memory_search then streams. Idempotent. For the owner; run_maintenance builds them above saas.memory_tenant_index_rows.';

CREATE FUNCTION @extschema@.memory_drop_tenant_index(model text, tenant uuid)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  DELETE FROM @extschema@.memory_tenant_indexes ti WHERE ti.model = memory_drop_tenant_index.model AND ti.tenant_id = tenant;
  RETURN FOUND;
END
$$;
COMMENT ON FUNCTION @extschema@.memory_drop_tenant_index(text, uuid) IS
  'Drops a tenant''s own index of a model (its searches read the shared index again). For the owner.';

-- run_maintenance: a tenant index for every tenant that reached
-- saas.memory_tenant_index_rows embeddings of a model (0: none). Counting
-- needs every tenant's rows: run it as the superuser that owns the
-- extension (pg_cron does); under forced RLS another role counts none.
CREATE FUNCTION @extschema@._memory_maintenance(p_now timestamptz)
RETURNS TABLE (parent_table regclass, action text, partition_name text, detail text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  threshold bigint := current_setting('saas.memory_tenant_index_rows')::bigint;
  due jsonb;
  g record;
BEGIN
  IF threshold <= 0 THEN
    RETURN;
  END IF;
  -- Listed first: CREATE INDEX refuses a table an open cursor still reads.
  SELECT coalesce(jsonb_agg(jsonb_build_object('model', z.model, 'tenant_id', z.tenant_id, 'n', z.n) ORDER BY z.model, z.tenant_id), '[]')
  INTO due
  FROM (SELECT e.model, e.tenant_id, count(*) AS n
        FROM @extschema@.memory_embeddings e
        WHERE EXISTS (SELECT FROM @extschema@.memory_models mm WHERE mm.model = e.model)
          AND EXISTS (SELECT FROM @extschema@.tenants tt WHERE tt.id = e.tenant_id)
          AND NOT EXISTS (SELECT FROM @extschema@.memory_tenant_indexes ti WHERE ti.model = e.model AND ti.tenant_id = e.tenant_id)
        GROUP BY e.model, e.tenant_id
        HAVING count(*) >= threshold) z;
  FOR g IN SELECT * FROM jsonb_to_recordset(due) AS x(model text, tenant_id uuid, n bigint) LOOP
    parent_table := '@extschema@.memory_embeddings'::regclass;
    action := 'memory_tenant_index';
    partition_name := (@extschema@.memory_index_tenant(g.model, g.tenant_id)) ->> 'index';
    detail := format('model %s: a tenant with %s embeddings', g.model, g.n);
    RETURN NEXT;
  END LOOP;
END
$$;
INSERT INTO @extschema@.maintenance_tasks (task, module, function_name, run_order, reports_as)
VALUES ('memory_tenant_indexes', 'memory', '_memory_maintenance', 60, 'memory_embeddings');

CREATE FUNCTION @extschema@._memory_ensure_log()
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT EXISTS (SELECT FROM @extschema@.partition_config WHERE parent = '@extschema@.memory_query_log'::regclass) THEN
    PERFORM @extschema@.create_monthly_partitions('@extschema@.memory_query_log', 'logged_at', retention => interval '6 months');
  END IF;
END
$$;

-- ---------------------------------------------------------------------------
-- Writing memories
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.memory_embed(memory_id bigint, model text, embedding vector, p_now timestamptz DEFAULT now())
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._memory_tenant();
  r @extschema@.memory_models%ROWTYPE := @extschema@._memory_model(model, false);
BEGIN
  IF memory_id IS NULL OR p_now IS NULL THEN
    RAISE EXCEPTION 'memory_embed: memory_id and p_now may not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the id saas.memory_add returned.';
  END IF;
  PERFORM @extschema@._memory_check_vector(embedding::text, r.model, r.dims, 'the embedding');
  -- The memory's row is locked (KEY SHARE) before the embedding is written:
  -- without a foreign key, a concurrent delete (memory_forget, or any DELETE,
  -- whose statement trigger deletes the embeddings) would not see an
  -- embedding written meanwhile, which would outlive its memory. A delete in
  -- progress makes this wait, then find the memory gone (the error below); an
  -- embed in progress makes the delete wait, and its trigger then sees the
  -- committed embedding (READ COMMITTED; under REPEATABLE READ the loser of
  -- the race gets a serialization failure instead).
  PERFORM FROM @extschema@.memories mm WHERE mm.tenant_id = t AND mm.id = memory_embed.memory_id FOR KEY SHARE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'memory % does not exist', memory_id
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Embed memories of the current tenant (saas.memory_pending lists them).';
  END IF;
  INSERT INTO @extschema@.memory_embeddings AS e (tenant_id, memory_id, model, embedding, embedded_at)
  VALUES (t, memory_id, model, embedding, p_now)
  ON CONFLICT ON CONSTRAINT memory_embeddings_pkey DO UPDATE SET embedding = EXCLUDED.embedding, embedded_at = EXCLUDED.embedded_at;
END
$$;
COMMENT ON FUNCTION @extschema@.memory_embed(bigint, text, vector, timestamptz) IS
  'Stores (or replaces) a memory''s embedding for a model; the vector must have the model''s dimension.';

CREATE FUNCTION @extschema@.memory_add(
  content text,
  subject text DEFAULT NULL,
  kind text DEFAULT 'note',
  importance float8 DEFAULT 0.5,
  evergreen boolean DEFAULT false,
  entities text[] DEFAULT '{}',
  metadata jsonb DEFAULT '{}',
  event_at timestamptz DEFAULT NULL,
  model text DEFAULT NULL,
  embedding vector DEFAULT NULL,
  p_now timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._memory_tenant();
  new_id bigint;
  ents text[];
BEGIN
  IF content IS NULL OR kind IS NULL OR importance IS NULL OR evergreen IS NULL OR entities IS NULL
     OR metadata IS NULL OR p_now IS NULL THEN
    RAISE EXCEPTION 'memory_add: content, kind, importance, evergreen, entities, metadata and p_now may not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'e.g. saas.memory_add(''Allergic to penicillin'', subject => ''patient:42'', kind => ''allergy'').';
  END IF;
  IF NOT (importance >= 0 AND importance <= 1) THEN
    RAISE EXCEPTION 'importance % is out of range', importance
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Importance is between 0 and 1.';
  END IF;
  IF kind = '' OR length(kind) > 100 THEN
    RAISE EXCEPTION 'invalid kind "%"', @extschema@._echo(kind)
      USING ERRCODE = 'invalid_parameter_value', HINT = 'A kind is 1 to 100 characters, e.g. ''note'', ''preference'', ''allergy''.';
  END IF;
  IF jsonb_typeof(metadata) <> 'object' THEN
    RAISE EXCEPTION 'metadata must be a JSON object'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass an object, e.g. ''{"source": "chat"}''.';
  END IF;
  IF (model IS NULL) <> (embedding IS NULL) THEN
    RAISE EXCEPTION 'memory_add: model and embedding go together'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass both, or neither and embed later with saas.memory_embed.';
  END IF;
  SELECT coalesce(array_agg(DISTINCT x ORDER BY x), '{}') INTO ents
  FROM unnest(entities) x WHERE x IS NOT NULL AND x <> '';
  INSERT INTO @extschema@.memories (tenant_id, subject, kind, content, metadata, importance, evergreen,
                                    event_at, created_at, entities)
  VALUES (t, subject, kind, content, metadata, importance, evergreen, coalesce(event_at, p_now), p_now, ents)
  RETURNING id INTO new_id;
  INSERT INTO @extschema@.memory_entities (tenant_id, entity, memory_id)
  SELECT t, x, new_id FROM unnest(ents || CASE WHEN subject IS NULL OR subject = '' THEN '{}'::text[] ELSE ARRAY[subject] END) x
  ON CONFLICT DO NOTHING;
  IF model IS NOT NULL THEN
    PERFORM @extschema@.memory_embed(new_id, model, embedding, p_now);
  END IF;
  RETURN new_id;
END
$$;
COMMENT ON FUNCTION @extschema@.memory_add(text, text, text, float8, boolean, text[], jsonb, timestamptz, text, vector, timestamptz) IS
  'Adds a memory of the current tenant (optionally with its embedding for one model); returns its id.';

CREATE FUNCTION @extschema@.memory_pending(model text, max_rows int DEFAULT 1000)
RETURNS TABLE (memory_id bigint, kind text, content text, created_at timestamptz)
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._memory_tenant();
BEGIN
  PERFORM @extschema@._memory_model(model, false);
  IF max_rows IS NULL OR max_rows < 1 OR max_rows > 100000 THEN
    RAISE EXCEPTION 'max_rows % is out of range', max_rows
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Ask for 1 to 100000 rows at a time.';
  END IF;
  RETURN QUERY
  SELECT mm.id, mm.kind, mm.content, mm.created_at
  FROM @extschema@.memories mm
  WHERE mm.tenant_id = t
    AND NOT EXISTS (SELECT FROM @extschema@.memory_embeddings e
                    WHERE e.tenant_id = t AND e.memory_id = mm.id AND e.model = memory_pending.model)
  ORDER BY mm.id
  LIMIT max_rows;
END
$$;
COMMENT ON FUNCTION @extschema@.memory_pending(text, int) IS
  'The current tenant''s memories without an embedding for the model, oldest first: what to embed before searches switch to it.';

-- ---------------------------------------------------------------------------
-- Erasure
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.memory_forget(subject text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t uuid := @extschema@._memory_tenant();
  ids bigint[];
  n_emb bigint;
  n_ent bigint;
  n_log bigint;
  n_mem bigint;
BEGIN
  IF subject IS NULL OR subject = '' THEN
    RAISE EXCEPTION 'memory_forget: the subject may not be NULL or empty'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Name the subject to erase, e.g. saas.memory_forget(''patient:42'').';
  END IF;
  -- Memories about the subject, and memories that mention it, locked first:
  -- an embed of one of them in progress (memory_embed holds its row KEY
  -- SHARE) is waited for, so the deletes below, with a later snapshot, see
  -- and count its embedding.
  SELECT coalesce(array_agg(x.id ORDER BY x.id), '{}') INTO ids
  FROM (SELECT mm.id FROM @extschema@.memories mm
        WHERE mm.tenant_id = t AND (mm.subject = memory_forget.subject OR memory_forget.subject = ANY (mm.entities))
        FOR UPDATE) x;
  DELETE FROM @extschema@.memory_embeddings e WHERE e.tenant_id = t AND e.memory_id = ANY (ids);
  GET DIAGNOSTICS n_emb = ROW_COUNT;
  DELETE FROM @extschema@.memory_entities l
  WHERE l.tenant_id = t AND (l.memory_id = ANY (ids) OR l.entity = memory_forget.subject);
  GET DIAGNOSTICS n_ent = ROW_COUNT;
  DELETE FROM @extschema@.memories mm WHERE mm.tenant_id = t AND mm.id = ANY (ids);
  GET DIAGNOSTICS n_mem = ROW_COUNT;
  DELETE FROM @extschema@.memory_query_log q
  WHERE q.tenant_id = t
    AND (memory_forget.subject = ANY (q.subjects) OR memory_forget.subject = ANY (q.entities) OR q.result_ids && ids);
  GET DIAGNOSTICS n_log = ROW_COUNT;
  RETURN jsonb_build_object('memories', n_mem, 'embeddings', n_emb, 'entity_links', n_ent, 'query_log_rows', n_log);
END
$$;
COMMENT ON FUNCTION @extschema@.memory_forget(text) IS
  'Erases a subject from the current tenant''s memory: memories about or mentioning it, their embeddings and entity links, and query-log rows naming it or returning them. Returns the counts.';

-- ---------------------------------------------------------------------------
-- Search
-- ---------------------------------------------------------------------------
-- Sampled log row, written as the owner for the caller's tenant.
CREATE FUNCTION @extschema@._memory_log_write(
  p_model text, p_k int, p_stage text, p_exact boolean, p_candidates int, p_returned int,
  p_top float8, p_latency_ms float8, p_subjects text[], p_entities text[], p_ids bigint[])
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  INSERT INTO @extschema@.memory_query_log (tenant_id, logged_at, model, k, stage, exact, candidates, returned,
                                            top_score, latency_ms, subjects, entities, result_ids)
  VALUES (@extschema@._memory_tenant(), now(), p_model, p_k, p_stage, p_exact, p_candidates, p_returned,
          p_top, p_latency_ms, coalesce(p_subjects, '{}'), coalesce(p_entities, '{}'), coalesce(p_ids, '{}'));
END
$$;

-- The distance pgvector's operator of the model's distance gives. A
-- SQL-standard body: parsed once, when the extension script runs with
-- pgvector's schema on its search_path, so it names no schema at call time
-- and has no SET clause, which lets the planner inline it into the scoring
-- statement of memory_search (kept as a prepared plan, not built per call).
CREATE FUNCTION @extschema@._memory_distance(a vector, b vector, distance_kind text)
RETURNS float8
LANGUAGE sql IMMUTABLE CALLED ON NULL INPUT PARALLEL SAFE
RETURN CASE distance_kind WHEN 'cosine' THEN a <=> b WHEN 'l2' THEN a <-> b ELSE a <#> b END;

CREATE FUNCTION @extschema@.memory_search(
  query vector,
  model text,
  k int DEFAULT 10,
  subjects text[] DEFAULT '{}',
  entities text[] DEFAULT '{}',
  weights jsonb DEFAULT '{}',
  half_life interval DEFAULT '30 days',
  half_lives jsonb DEFAULT '{}',
  evergreen_kinds text[] DEFAULT '{}',
  recency_floor float8 DEFAULT 0,
  age_from text DEFAULT 'event',
  touch boolean DEFAULT false,
  p_now timestamptz DEFAULT now())
RETURNS TABLE (memory_id bigint, subject text, kind text, content text, metadata jsonb,
               score float8, rank int, exact boolean, explanation jsonb)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
SET plan_cache_mode = force_generic_plan
SET jit = off
AS $$
DECLARE
  started timestamptz := clock_timestamp();
  t uuid := @extschema@._memory_tenant();
  r @extschema@.memory_models%ROWTYPE := @extschema@._memory_model(model, true);
  vs text;
  w float8[] := ARRAY[1.0, 0.3, 0.2, 0.3];
  wk text;
  wv jsonb;
  hl_default float8;
  hl_map jsonb := '{}';
  qents text[] := '{}';
  op text;
  src text;
  terms text;
  eligible bigint;
  own_index boolean := false;
  stage text;
  is_exact boolean;
  examined int := 0;
  streamed bigint := 0;
  stopped boolean := false;
  c_ids bigint[] := '{}';
  c_scores float8[] := '{}';
  e_ids bigint[];
  e_scores float8[];
  e_examined int;
  ent_ids bigint[] := '{}';
  sel_ids bigint[];
  touch_note text := 'not requested';
  old_iter text;
  old_ef text;
  old_index_scan text;
  old_sort text;
  stream_sql text;
  b_ids bigint[];
  b_scores float8[];
  o_ids bigint[];
  o_subjects text[];
  o_kinds text[];
  o_contents text[];
  o_metadata jsonb[];
  o_scores float8[];
  o_expl jsonb[];
BEGIN
  -- Arguments.
  IF k IS NULL OR weights IS NULL OR half_life IS NULL OR half_lives IS NULL OR subjects IS NULL OR entities IS NULL
     OR evergreen_kinds IS NULL OR recency_floor IS NULL OR age_from IS NULL OR touch IS NULL OR p_now IS NULL THEN
    RAISE EXCEPTION 'memory_search: only the query and model are required, and no argument may be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Leave an argument out to use its default.';
  END IF;
  -- pgvector refuses NaN and infinity in a vector, so the dimension is what
  -- is left to check; the text check runs only to report what is wrong.
  IF query IS NULL OR cardinality(query::float4[]) IS DISTINCT FROM r.dims THEN
    PERFORM @extschema@._memory_check_vector(query::text, r.model, r.dims, 'the query vector');
  END IF;
  IF NOT isfinite(p_now) THEN
    RAISE EXCEPTION 'p_now % is not a finite time', p_now
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Leave p_now out for now(), or pin a finite timestamp.';
  END IF;
  IF k < 1 OR k > 1000 THEN
    RAISE EXCEPTION 'k % is out of range', k
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Ask for 1 to 1000 memories (k).';
  END IF;
  IF jsonb_typeof(weights) <> 'object' THEN
    RAISE EXCEPTION 'weights must be a JSON object'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. ''{"similarity": 1, "recency": 0.3, "importance": 0.2, "entity": 0.3}''.';
  END IF;
  IF weights <> '{}'::jsonb THEN
    FOR wk, wv IN SELECT * FROM jsonb_each(weights) LOOP
      IF wk NOT IN ('similarity', 'recency', 'importance', 'entity') THEN
        RAISE EXCEPTION 'unknown weight "%"', @extschema@._echo(wk)
          USING ERRCODE = 'invalid_parameter_value', HINT = 'Weights are similarity, recency, importance and entity.';
      END IF;
      IF jsonb_typeof(wv) <> 'number' OR (wv #>> '{}')::float8 < 0 THEN
        RAISE EXCEPTION 'weight "%" must be a non-negative number, not %', wk, @extschema@._echo(wv::text)
          USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Weights are numbers >= 0; 0 turns a term off.';
      END IF;
      w[array_position(ARRAY['similarity', 'recency', 'importance', 'entity'], wk)] := (wv #>> '{}')::float8;
    END LOOP;
    IF w[1] + w[2] + w[3] + w[4] <= 0 THEN
      RAISE EXCEPTION 'every weight is zero'
        USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Give at least one term a positive weight.';
    END IF;
  END IF;
  hl_default := extract(epoch FROM half_life);
  IF hl_default <= 0 THEN
    RAISE EXCEPTION 'half-life % is not positive', half_life
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Give half-lives as positive intervals, e.g. ''30 days''; evergreen kinds do not decay at all.';
  END IF;
  IF jsonb_typeof(half_lives) <> 'object' THEN
    RAISE EXCEPTION 'half_lives must be a JSON object of kind to interval'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'e.g. ''{"preference": "90 days", "chat": "2 days"}''.';
  END IF;
  IF half_lives <> '{}'::jsonb THEN
    FOR wk, wv IN SELECT * FROM jsonb_each(half_lives) LOOP
      BEGIN
        hl_map := hl_map || jsonb_build_object(wk, extract(epoch FROM (wv #>> '{}')::interval));
      EXCEPTION WHEN invalid_datetime_format OR datetime_field_overflow OR interval_field_overflow OR invalid_parameter_value THEN
        RAISE EXCEPTION 'half-life of kind "%" is not an interval: %', @extschema@._echo(wk), @extschema@._echo(wv::text)
          USING ERRCODE = 'invalid_parameter_value', HINT = 'Give intervals as text, e.g. ''{"preference": "90 days"}''.';
      END;
      IF (hl_map ->> wk)::float8 <= 0 THEN
        RAISE EXCEPTION 'half-life of kind "%" is not positive', @extschema@._echo(wk)
          USING ERRCODE = 'numeric_value_out_of_range', HINT = 'Give half-lives as positive intervals; list kinds that never decay in evergreen_kinds.';
      END IF;
    END LOOP;
  END IF;
  IF NOT (recency_floor >= 0 AND recency_floor <= 1) THEN
    RAISE EXCEPTION 'recency_floor % is out of range', recency_floor
      USING ERRCODE = 'numeric_value_out_of_range', HINT = 'The floor is between 0 and 1 (0: none).';
  END IF;
  IF EXISTS (SELECT FROM unnest(evergreen_kinds) x WHERE x IS NULL) THEN
    RAISE EXCEPTION 'evergreen_kinds holds a NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'List the kinds that never decay by name, e.g. ''{allergy,consent}''.';
  END IF;
  IF age_from NOT IN ('event', 'access') THEN
    RAISE EXCEPTION 'unknown age_from "%"', @extschema@._echo(age_from)
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''event'' (age from event_at) or ''access'' (from the last access, else creation).';
  END IF;
  IF cardinality(subjects) + cardinality(entities) > 0 THEN
    SELECT coalesce(array_agg(DISTINCT x ORDER BY x), '{}') INTO qents
    FROM unnest(subjects || entities) x WHERE x IS NOT NULL AND x <> '';
  END IF;

  -- A tenant with an index of its own (memory_index_tenant) streams only
  -- its own tuples. Others are counted up to the brute-force limit only
  -- (counting a large tenant would cost more than its search).
  own_index := pg_catalog.to_regclass('@extschema@.' || @extschema@._memory_tenant_index_name(r.model, t)) IS NOT NULL;
  IF NOT own_index THEN
    SELECT count(*) INTO eligible
    FROM (SELECT FROM @extschema@.memory_embeddings e WHERE e.tenant_id = t AND e.model = r.model
          LIMIT current_setting('saas.memory_exact_below')::bigint + 1) z;
  END IF;

  IF NOT own_index AND eligible <= current_setting('saas.memory_exact_below')::bigint THEN
    -- Brute force: the statement at the end scores every memory (sel_ids NULL).
    stage := 'brute_force';
    is_exact := true;
    examined := eligible;
  ELSE
    stage := 'index';
    -- The stream statements name the model's index expression, whose
    -- dimension and operator are the model's, so their text is per model
    -- (and per tenant index: the planner proves its predicate from the md5
    -- written in). Every value of the search is a parameter ($1 to $10,
    -- see _memory_stream), so the plan is made once per backend and kept.
    -- The age is computed as the final statement computes it.
    vs := @extschema@._memory_vector_schema();
    op := CASE r.distance WHEN 'cosine' THEN '<=>' WHEN 'l2' THEN '<->' ELSE '<#>' END;
    terms := format($t$
      SELECT m.id, d.dist,
             @extschema@._memory_row_score($3[1], $3[2], $3[3], $3[4], %1$L, d.dist,
               extract(epoch FROM $9 - CASE WHEN $8 = 'access' THEN coalesce(m.last_accessed_at, m.created_at)
                                            ELSE m.event_at END)::float8,
               coalesce(($5 ->> m.kind)::float8, $4), m.evergreen OR m.kind = ANY ($6), $7,
               m.importance,
               CASE WHEN cardinality($10) = 0 THEN 0::float8
                    ELSE (SELECT count(*) FROM unnest($10) q WHERE q = m.subject OR q = ANY (m.entities))::float8
                         / cardinality($10) END) AS score
      FROM (%%s) d
      CROSS JOIN LATERAL (SELECT mm.id, mm.importance, mm.evergreen, mm.kind, mm.event_at, mm.last_accessed_at, mm.created_at,
                                 mm.subject, mm.entities
                          FROM @extschema@.memories mm WHERE mm.tenant_id = $2 AND mm.id = d.memory_id OFFSET 0) m
    $t$, r.distance);
    src := format('SELECT e.memory_id, (e.embedding::%1$s.vector(%2$s)) OPERATOR(%1$s.%3$s) $1 AS dist '
                  'FROM @extschema@.memory_embeddings e WHERE e.tenant_id = $2 AND e.model = %4$L',
                  vs, r.dims, op, r.model);
    -- Entity stage: the memories matching a query entity, whatever their
    -- distance, in distance order until not even a full entity match can
    -- beat the k-th score (those left cannot beat the final k-th either).
    -- A kept plan keeps the planner settings it was made under, whatever
    -- a later session sets. So the sorted streams (here and pass 2) read
    -- their rows through a fence (OFFSET 0) that no index order can cross:
    -- they are sorted by exact distance under any settings, never read in
    -- an HNSW index's approximate order. Pass 1 pins what it needs.
    IF cardinality(qents) > 0 THEN
      SELECT s.ids, s.scores, s.streamed INTO ent_ids, c_scores, streamed
      FROM @extschema@._memory_stream(
             format(terms, 'SELECT * FROM (' || src || ' AND e.memory_id IN (SELECT l.memory_id FROM @extschema@.memory_entities l '
                                  'WHERE l.tenant_id = $2 AND l.entity = ANY ($10)) OFFSET 0) f ORDER BY 2, 1'),
             query, t, w, hl_default, hl_map, evergreen_kinds, recency_floor, age_from, p_now, qents,
             k, '{}', '{}', r.distance, 1) s;
      c_ids := ent_ids;
      examined := streamed;
    END IF;
    -- Index stage: the tenant's memories in distance order, until no unseen
    -- memory can beat the k-th score (_memory_stream reads the stream
    -- through a cursor). From the tenant's own HNSW index when it has one
    -- (pass 1), else from its rows sorted by exact distance (pass 2). Never
    -- from the model's shared index: a stream there reads every other
    -- tenant's tuples near the query and skips them, so its cost, and the
    -- latency a tenant sees, would depend on other tenants' data.
    e_ids := c_ids; e_scores := c_scores; e_examined := examined;
    FOR pass IN CASE WHEN own_index THEN 1 ELSE 2 END .. 2 LOOP
      IF pass = 1 THEN
        -- Relaxed order: strict order drops every tuple the graph search
        -- finds after a farther one (pgvector's hnswgettuple), and those
        -- are what lose recall. The sort disabled: the planner would sort
        -- the tenant's rows (the btree narrows them), the full scan's work.
        old_iter := current_setting('hnsw.iterative_scan', true);
        PERFORM set_config('hnsw.iterative_scan', 'relaxed_order', true);
        old_ef := current_setting('hnsw.ef_search', true);
        PERFORM set_config('hnsw.ef_search', current_setting('saas.memory_ef_search'), true);
        old_sort := current_setting('enable_sort');
        old_index_scan := current_setting('enable_indexscan');
        PERFORM set_config('enable_sort', 'off', true);
        PERFORM set_config('enable_indexscan', 'on', true);
        stream_sql := format(terms, src || format(' AND pg_catalog.md5(e.tenant_id::text) = %L ORDER BY 2', pg_catalog.md5(t::text)));
      ELSE
        -- The tenant's rows sorted by exact distance (through the fence
        -- above: no index order), with the same stopping rule; also what finishes a tenant-index stream that
        -- ended (hnsw.max_scan_tuples) before the bound or the last row.
        stream_sql := format(terms, 'SELECT * FROM (' || src || ' OFFSET 0) f ORDER BY 2, 1');
      END IF;
      SELECT s.stopped, s.streamed, s.ids, s.scores INTO stopped, streamed, b_ids, b_scores
      FROM @extschema@._memory_stream(stream_sql, query, t, w, hl_default, hl_map, evergreen_kinds, recency_floor, age_from, p_now,
                                      qents, k, e_scores, ent_ids, r.distance, 0) s;
      c_ids := e_ids || b_ids; c_scores := e_scores || b_scores; examined := e_examined + streamed;
      IF pass = 1 THEN
        PERFORM set_config('hnsw.iterative_scan', coalesce(old_iter, 'off'), true);
        PERFORM set_config('hnsw.ef_search', coalesce(old_ef, '40'), true);
        PERFORM set_config('enable_sort', old_sort, true);
        PERFORM set_config('enable_indexscan', old_index_scan, true);
        EXIT WHEN stopped;
        SELECT count(*) INTO eligible FROM @extschema@.memory_embeddings e WHERE e.tenant_id = t AND e.model = r.model;
        EXIT WHEN streamed >= eligible;
      END IF;
    END LOOP;
    -- Every memory seen means exact; a stop at the bound is certified
    -- relative to the index stream.
    is_exact := NOT stopped;
    -- In the sorted subquery's order, as below.
    SELECT coalesce(array_agg(c.id), '{}') INTO sel_ids
    FROM (SELECT c.id, c.sc FROM unnest(c_ids, c_scores) AS c(id, sc) ORDER BY c.sc DESC, c.id LIMIT k) c;
  END IF;

  IF touch THEN
    touch_note := CASE WHEN current_setting('transaction_read_only') = 'on'
                       THEN 'skipped: read-only transaction (a GET); search with POST to refresh access'
                       ELSE 'refreshed' END;
  END IF;

  -- The rows and their explanations, scored in one static statement (its
  -- plan is kept for the session): every memory of the tenant when sel_ids
  -- is NULL (brute force), else the ones the index stage selected. Every
  -- row is scored by _memory_row_score; the terms the explanation shows
  -- are computed for the k rows kept only. The aggregates take the rows in
  -- the order of the sorted subquery z (nothing joins after it); an ORDER
  -- BY in each of the seven would sort seven times (0.12 ms a search).
  SELECT coalesce(array_agg(z.id), '{}'), array_agg(z.subject),
         array_agg(z.kind), array_agg(z.content),
         array_agg(z.metadata), array_agg(z.sc),
         array_agg(jsonb_build_object(
           'score', z.sc,
           'stage', CASE WHEN sel_ids IS NULL THEN 'brute_force' WHEN z.id = ANY (ent_ids) THEN 'entity' ELSE 'index' END,
           'exact', is_exact,
           'result', CASE WHEN is_exact THEN 'exact' ELSE 'certified relative to the index stream' END,
           'distance', z.dist,
           'terms', jsonb_build_object(
             'similarity', jsonb_build_object('value', z.sim, 'weight', w[1], 'contribution', w[1] * z.sim / (w[1] + w[2] + w[3] + w[4])),
             'recency', jsonb_build_object('value', z.rec, 'weight', w[2], 'contribution', w[2] * z.rec / (w[1] + w[2] + w[3] + w[4]),
                                           'age_seconds', z.age, 'half_life_seconds', CASE WHEN z.evg THEN NULL ELSE z.hl END,
                                           'evergreen', z.evg, 'floor', recency_floor, 'age_from', age_from),
             'importance', jsonb_build_object('value', z.imp, 'weight', w[3], 'contribution', w[3] * z.imp / (w[1] + w[2] + w[3] + w[4])),
             'entity', jsonb_build_object('value', z.ent, 'weight', w[4], 'contribution', w[4] * z.ent / (w[1] + w[2] + w[3] + w[4]),
                                          'matched', to_jsonb(z.matched))),
           'touch', touch_note))
  INTO o_ids, o_subjects, o_kinds, o_contents, o_metadata, o_scores, o_expl
  FROM (
    SELECT s.id, s.dist, x.sim, x.rec, s.imp, s.ent, s.hl, s.age, s.evg, x.matched, s.sc,
           s.subject, s.kind, s.content, s.metadata
    FROM (
      SELECT m.id, m.dist, m.importance AS imp, en.ent, a.hl, a.age, a.evg, m.subject, m.kind, m.content, m.metadata,
             m.entities,
             @extschema@._memory_row_score(w[1], w[2], w[3], w[4], r.distance, m.dist, a.age, a.hl, a.evg, recency_floor,
                                           m.importance, en.ent) AS sc
      FROM (SELECT mm.id, e.dist, mm.subject, mm.kind, mm.content, mm.metadata, mm.importance, mm.evergreen,
                   mm.event_at, mm.created_at, mm.last_accessed_at, mm.entities
            FROM (SELECT ee.memory_id, @extschema@._memory_distance(ee.embedding, query, r.distance) AS dist
                  FROM @extschema@.memory_embeddings ee
                  WHERE ee.tenant_id = t AND ee.model = r.model AND sel_ids IS NULL OFFSET 0) e
            JOIN @extschema@.memories mm ON mm.tenant_id = t AND mm.id = e.memory_id
            UNION ALL
            SELECT mm.id, @extschema@._memory_distance(ee.embedding, query, r.distance), mm.subject, mm.kind, mm.content,
                   mm.metadata, mm.importance, mm.evergreen, mm.event_at, mm.created_at, mm.last_accessed_at, mm.entities
            FROM @extschema@.memory_embeddings ee JOIN @extschema@.memories mm ON mm.tenant_id = ee.tenant_id AND mm.id = ee.memory_id
            WHERE ee.tenant_id = t AND mm.tenant_id = t AND ee.model = r.model
              AND ee.memory_id = ANY (sel_ids) AND mm.id = ANY (sel_ids)) m
      CROSS JOIN LATERAL (
        SELECT m.evergreen OR m.kind = ANY (evergreen_kinds) AS evg,
               coalesce((hl_map ->> m.kind)::float8, hl_default) AS hl,
               extract(epoch FROM p_now - CASE WHEN age_from = 'access' THEN coalesce(m.last_accessed_at, m.created_at)
                                               ELSE m.event_at END)::float8 AS age) a
      CROSS JOIN LATERAL (
        SELECT CASE WHEN cardinality(qents) = 0 THEN 0::float8
                    ELSE (SELECT count(*) FROM unnest(qents) q WHERE q = m.subject OR q = ANY (m.entities))::float8
                         / cardinality(qents) END AS ent) en
      ORDER BY sc DESC, m.id
      LIMIT k) s
    CROSS JOIN LATERAL (
      SELECT @extschema@._memory_similarity(r.distance, s.dist) AS sim,
             @extschema@._memory_recency(s.age, s.hl, s.evg, recency_floor) AS rec,
             CASE WHEN cardinality(qents) = 0 THEN '{}'::text[]
                  ELSE (SELECT coalesce(array_agg(q ORDER BY q), '{}') FROM unnest(qents) q
                        WHERE q = s.subject OR q = ANY (s.entities)) END AS matched) x
    ORDER BY s.sc DESC, s.id) z;

  -- Access refresh: only in a read-write transaction.
  IF touch_note = 'refreshed' THEN
    UPDATE @extschema@.memories mm SET last_accessed_at = p_now, access_count = mm.access_count + 1
    WHERE mm.tenant_id = t AND mm.id = ANY (o_ids);
  END IF;

  IF current_setting('transaction_read_only') = 'off'
     AND random() < current_setting('saas.memory_log_sample_rate')::float8 THEN
    PERFORM @extschema@._memory_log_write(model, k, stage, is_exact, examined, cardinality(o_ids), o_scores[1],
                                          extract(epoch FROM clock_timestamp() - started) * 1000,
                                          subjects, entities, o_ids);
  END IF;

  RETURN QUERY
  SELECT u.id, u.subject, u.kind, u.content, u.metadata, u.sc, u.ord::int, is_exact, u.expl
  FROM unnest(o_ids, o_subjects, o_kinds, o_contents, o_metadata, o_scores, o_expl)
       WITH ORDINALITY AS u(id, subject, kind, content, metadata, sc, expl, ord)
  ORDER BY u.ord;
END
$$;
COMMENT ON FUNCTION @extschema@.memory_search(vector, text, int, text[], text[], jsonb, interval, jsonb, text[], float8, text, boolean, timestamptz) IS
  'The current tenant''s top-k memories by an absolute score (similarity, recency by half-life, importance, entity boost), exact: min(k, eligible) rows, each with its explanation. See docs/memory.md.';

-- ---------------------------------------------------------------------------
-- Half-lives from other systems' decay parameters (src/memory/decay.rs).
-- ---------------------------------------------------------------------------
CREATE FUNCTION @extschema@.memory_half_life_from_langchain(decay_rate float8)
RETURNS interval
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT make_interval(secs => @extschema@._memory_half_life_langchain(decay_rate)) $$;
COMMENT ON FUNCTION @extschema@.memory_half_life_from_langchain(float8) IS
  'The half-life of LangChain''s TimeWeightedVectorStoreRetriever decay_rate ((1 - decay_rate) ^ hours): 0.01 gives 68.97 hours.';

CREATE FUNCTION @extschema@.memory_half_life_from_factor(factor float8, per interval DEFAULT '1 hour')
RETURNS interval
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT make_interval(secs => @extschema@._memory_half_life_factor(factor, extract(epoch FROM per)::float8)) $$;
COMMENT ON FUNCTION @extschema@.memory_half_life_from_factor(float8, interval) IS
  'The half-life of a decay by factor per interval: Generative Agents'' 0.995 per hour gives 138.28 hours.';

CREATE FUNCTION @extschema@.memory_half_life_from_elasticsearch(scale interval, decay float8 DEFAULT 0.5)
RETURNS interval
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT make_interval(secs => @extschema@._memory_half_life_elasticsearch(extract(epoch FROM scale)::float8, decay)) $$;
COMMENT ON FUNCTION @extschema@.memory_half_life_from_elasticsearch(interval, float8) IS
  'The half-life of Elasticsearch''s exp decay function (value decay at scale; offset 0).';

-- ---------------------------------------------------------------------------
-- Registry rows
-- ---------------------------------------------------------------------------
-- Names with pgvector's type carry its schema (grant_api runs with a pinned
-- search_path); pgvector is assumed to stay where it was installed.
INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege)
SELECT 'memory', 'function', replace(g.name, 'vector', v.name), 'EXECUTE'
FROM (SELECT pg_catalog.format('%I.vector', n.nspname) AS name
      FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
      WHERE e.extname = 'vector') v,
     (VALUES
  ('memory_add(text, text, text, double precision, boolean, text[], jsonb, timestamp with time zone, text, vector, timestamp with time zone)'),
  ('memory_embed(bigint, text, vector, timestamp with time zone)'),
  ('_memory_distance(vector, vector, text)'),
  ('memory_search(vector, text, integer, text[], text[], jsonb, interval, jsonb, text[], double precision, text, boolean, timestamp with time zone)'),
  ('saas_api.memory_search(vector, text, integer, text[], text[], jsonb, interval, jsonb, text[], double precision, text, boolean)'),
  ('saas_api.memory_add(text, text, text, double precision, boolean, text[], jsonb, timestamp with time zone, text, vector)'),
  ('saas_api.memory_embed(bigint, text, vector)')) g(name);
INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege) VALUES
  ('memory', 'function', 'memory_pending(text, integer)', 'EXECUTE'),
  ('memory', 'function', 'memory_forget(text)', 'EXECUTE'),
  ('memory', 'function', 'memory_half_life_from_langchain(double precision)', 'EXECUTE'),
  ('memory', 'function', 'memory_half_life_from_factor(double precision, interval)', 'EXECUTE'),
  ('memory', 'function', 'memory_half_life_from_elasticsearch(interval, double precision)', 'EXECUTE'),
  ('memory', 'function', '_echo(text)', 'EXECUTE'),
  ('memory', 'function', '_memory_vector_schema()', 'EXECUTE'),
  ('memory', 'function', '_memory_tenant()', 'EXECUTE'),
  ('memory', 'function', '_memory_model(text, boolean)', 'EXECUTE'),
  ('memory', 'function', '_memory_check_vector(text, text, integer, text)', 'EXECUTE'),
  ('memory', 'function', '_memory_log_write(text, integer, text, boolean, integer, integer, double precision, double precision, text[], text[], bigint[])', 'EXECUTE'),
  ('memory', 'function', '_memory_similarity(text, double precision)', 'EXECUTE'),
  ('memory', 'function', '_memory_recency(double precision, double precision, boolean, double precision)', 'EXECUTE'),
  ('memory', 'function', '_memory_row_score(double precision, double precision, double precision, double precision, text, double precision, double precision, double precision, boolean, double precision, double precision, double precision)', 'EXECUTE'),
  ('memory', 'function', '_memory_stream(text, anyelement, uuid, double precision[], double precision, jsonb, text[], double precision, text, timestamp with time zone, text[], integer, double precision[], bigint[], text, double precision)', 'EXECUTE'),
  ('memory', 'function', '_memory_tenant_index_name(text, uuid)', 'EXECUTE'),
  ('memory', 'function', '_memory_half_life_langchain(double precision)', 'EXECUTE'),
  ('memory', 'function', '_memory_half_life_factor(double precision, double precision)', 'EXECUTE'),
  ('memory', 'function', '_memory_half_life_elasticsearch(double precision, double precision)', 'EXECUTE'),
  ('memory', 'table', 'memories', 'SELECT'),
  ('memory', 'table', 'memories', 'UPDATE'),
  ('memory', 'table', 'memories', 'INSERT'),
  ('memory', 'table', 'memory_entities', 'SELECT'),
  ('memory', 'table', 'memory_entities', 'INSERT'),
  ('memory', 'table', 'memory_embeddings', 'SELECT'),
  ('memory', 'table', 'memory_embeddings', 'INSERT'),
  ('memory', 'table', 'memory_embeddings', 'UPDATE'),
  ('memory', 'table', 'memory_models', 'SELECT'),
  ('memory', 'table', 'memory_query_log', 'SELECT');

-- ---------------------------------------------------------------------------
-- The API surface (saas_api): thin wrappers PostgREST serves. Search by GET
-- runs read-only (no touch, no log; the explanation says so); by POST it may
-- refresh access and is logged.
-- ---------------------------------------------------------------------------
CREATE FUNCTION saas_api.memory_search(
  query vector, model text, k int DEFAULT 10, subjects text[] DEFAULT '{}', entities text[] DEFAULT '{}',
  weights jsonb DEFAULT '{}', half_life interval DEFAULT '30 days', half_lives jsonb DEFAULT '{}',
  evergreen_kinds text[] DEFAULT '{}', recency_floor float8 DEFAULT 0, age_from text DEFAULT 'event',
  touch boolean DEFAULT false)
RETURNS TABLE (memory_id bigint, subject text, kind text, content text, metadata jsonb,
               score float8, rank int, exact boolean, explanation jsonb)
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT * FROM @extschema@.memory_search(query, model, k, subjects, entities, weights, half_life, half_lives,
                                          evergreen_kinds, recency_floor, age_from, touch)
$$;
COMMENT ON FUNCTION saas_api.memory_search(vector, text, int, text[], text[], jsonb, interval, jsonb, text[], float8, text, boolean) IS
  'Your tenant''s top-k memories for a query vector, each with its explanation (saas.memory_search).';

CREATE FUNCTION saas_api.memory_add(
  content text, subject text DEFAULT NULL, kind text DEFAULT 'note', importance float8 DEFAULT 0.5,
  evergreen boolean DEFAULT false, entities text[] DEFAULT '{}', metadata jsonb DEFAULT '{}',
  event_at timestamptz DEFAULT NULL, model text DEFAULT NULL, embedding vector DEFAULT NULL)
RETURNS bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT @extschema@.memory_add(content, subject, kind, importance, evergreen, entities, metadata, event_at, model, embedding)
$$;
COMMENT ON FUNCTION saas_api.memory_add(text, text, text, float8, boolean, text[], jsonb, timestamptz, text, vector) IS
  'Adds a memory to your tenant, optionally with its embedding; returns its id (saas.memory_add).';

CREATE FUNCTION saas_api.memory_embed(memory_id bigint, model text, embedding vector)
RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.memory_embed(memory_id, model, embedding) $$;
COMMENT ON FUNCTION saas_api.memory_embed(bigint, text, vector) IS
  'Stores a memory''s embedding for a model (saas.memory_embed).';

CREATE FUNCTION saas_api.memory_pending(model text, max_rows int DEFAULT 1000)
RETURNS TABLE (memory_id bigint, kind text, content text, created_at timestamptz)
LANGUAGE sql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM @extschema@.memory_pending(model, max_rows) $$;
COMMENT ON FUNCTION saas_api.memory_pending(text, int) IS
  'Your memories without an embedding for the model (saas.memory_pending).';

CREATE FUNCTION saas_api.memory_forget(subject text)
RETURNS jsonb
LANGUAGE sql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT @extschema@.memory_forget(subject) $$;
COMMENT ON FUNCTION saas_api.memory_forget(text) IS
  'Erases a subject from your tenant''s memory, leaving nothing (saas.memory_forget).';

INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege) VALUES
  ('memory', 'function', 'saas_api.memory_pending(text, integer)', 'EXECUTE'),
  ('memory', 'function', 'saas_api.memory_forget(text)', 'EXECUTE');
