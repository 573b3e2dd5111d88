-- Audit: who changed what, from where, in a monthly partitioned log that
-- proves it was not altered. The triggers, seals and verification are Rust
-- (src/audit); tables, audit_enable/audit_disable, the append-only guard and
-- the export are here.

-- ---------------------------------------------------------------------------
-- The log. Tenant-scoped and Citus-ready: tenant_id leads the primary key,
-- which also holds the partition key. Rows outside any tenant get the nil
-- uuid. Partitions are made by audit_enable (not here: partitions created
-- inside CREATE EXTENSION would belong to the extension, and pg_dump would
-- skip their rows).
--
-- The keys live on each partition, not on this parent (_audit_log_keys):
-- the parent belongs to the extension and the partitions are user data that
-- pg_dump dumps with their keys. A key on the parent would be made again for
-- every partition when pg_restore attaches it, and the dumped key would then
-- collide with it. Every key holds logged_at, the partition key, so a key
-- per partition is as unique as one on the parent.
-- ---------------------------------------------------------------------------
CREATE TABLE @extschema@.audit_log (
  tenant_id       uuid        NOT NULL,
  id              bigint      GENERATED ALWAYS AS IDENTITY,
  logged_at       timestamptz NOT NULL,
  txid            bigint      NOT NULL,
  actor_id        uuid,
  actor_role      text,
  operation       text        NOT NULL,
  schema_name     text        NOT NULL,
  table_name      text        NOT NULL,
  record_key      jsonb,
  old_values      jsonb,
  new_values      jsonb,
  client_ip       inet,
  user_agent      text,
  request_id      text,
  request_method  text,
  request_path    text,
  row_hash        bytea       NOT NULL
  -- No CHECK constraints: only the triggers write here, and a CHECK costs
  -- each single-row INSERT an expression set-up; the hash covers the values.
) PARTITION BY RANGE (logged_at);
COMMENT ON TABLE @extschema@.audit_log IS
  'pg_saas audit trail: one row per audited change, append-only, hashed; sealed by saas.audit_seal(), checked by saas.audit_verify().';
COMMENT ON COLUMN @extschema@.audit_log.txid IS
  'Top-level transaction id (xid8 as bigint) of the change; seals cover ranges of it.';
COMMENT ON COLUMN @extschema@.audit_log.row_hash IS
  'SHA-256 of the row''s canonical JSON (docs/audit.md, "How the hashes are made").';
-- The id sequence's position is dumped with the data, so restored logs keep
-- their order.
SELECT pg_catalog.pg_extension_config_dump(pg_catalog.pg_get_serial_sequence('@extschema@.audit_log', 'id'), '');

-- Seals: one chain per tenant. Seal n covers the tenant's rows written by
-- transactions with ids in [xid_from, xid_to) and logged in the month
-- [month_from, month_to) of the log; xid_to is the snapshot xmin when it was
-- taken, so every such transaction had finished. A seal never spans a month,
-- so retention retires whole seals (seals made by 0.1.0 have no month: they
-- cover their range in every month; one across a month boundary is sealed
-- again month by month, reseals naming it).
CREATE TABLE @extschema@.audit_seals (
  tenant_id        uuid        NOT NULL,
  seal_no          bigint      NOT NULL,
  sealed_at        timestamptz NOT NULL,
  xid_from         bigint      NOT NULL,
  xid_to           bigint      NOT NULL,
  row_count        bigint      NOT NULL,
  first_logged_at  timestamptz NOT NULL,
  last_logged_at   timestamptz NOT NULL,
  rows_digest      bytea       NOT NULL,
  prev_hash        bytea       NOT NULL,
  seal_hash        bytea       NOT NULL,
  month_from       timestamptz,
  month_to         timestamptz,
  reseals          bigint,
  CONSTRAINT audit_seals_pkey PRIMARY KEY (tenant_id, seal_no),
  CONSTRAINT audit_seals_range CHECK (xid_from < xid_to),
  CONSTRAINT audit_seals_month CHECK ((month_from IS NULL) = (month_to IS NULL) AND month_from < month_to),
  CONSTRAINT audit_seals_reseals CHECK (reseals IS NULL OR (reseals < seal_no AND month_from IS NOT NULL))
);
COMMENT ON TABLE @extschema@.audit_seals IS
  'Chained seals over audit_log rows, one chain per tenant; kept when retention retires the months they cover.';
COMMENT ON COLUMN @extschema@.audit_seals.month_from IS
  'Start of the month of the log the seal covers (its rows were logged in [month_from, month_to)); NULL for a seal made by 0.1.0, which covers every month.';
COMMENT ON COLUMN @extschema@.audit_seals.reseals IS
  'For a re-seal: the 0.1.0 seal (no month) whose rows of this month it seals again, so retiring another of its months leaves these checked.';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.audit_seals', '');

-- Months of the log retired by retention (run_maintenance records each):
-- verification tells their seals' missing rows from deleted ones. A month
-- dropped by hand is not here, and verification reports its rows missing.
CREATE TABLE @extschema@.audit_retired (
  range_from      timestamptz NOT NULL,
  range_to        timestamptz NOT NULL,
  partition_name  text        NOT NULL,
  action          text        NOT NULL,
  retired_at      timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT audit_retired_pkey PRIMARY KEY (range_from)
);
COMMENT ON TABLE @extschema@.audit_retired IS
  'Months of saas.audit_log that retention dropped or detached; their seals stay and still verify as a chain.';
ALTER TABLE @extschema@.audit_retired ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.audit_retired', '');

-- Transaction ids as the log stores them: the cluster's (xid8) plus a base.
-- Seals cut the log by transaction id, so ids must grow across the log's
-- whole life; a restore into another cluster (pg_dump / pg_restore) starts
-- again from that cluster's lower ids. The base is fixed by the first audit
-- write or seal after the extension is created (a restore creates it too),
-- so that new ids lie above every id the log and its seals hold. Not dumped:
-- each database fixes its own.
CREATE TABLE @extschema@.audit_xid_base (
  id        smallint NOT NULL DEFAULT 1,
  xid_base  bigint,
  fixed_at  timestamptz,
  CONSTRAINT audit_xid_base_pkey PRIMARY KEY (id),
  CONSTRAINT audit_xid_base_one_row CHECK (id = 1),
  CONSTRAINT audit_xid_base_nonnegative CHECK (xid_base >= 0)
);
COMMENT ON TABLE @extschema@.audit_xid_base IS
  'What the audit log adds to transaction ids so they keep growing after a restore into another cluster; fixed on first use.';
ALTER TABLE @extschema@.audit_xid_base ENABLE ROW LEVEL SECURITY;
INSERT INTO @extschema@.audit_xid_base (id) VALUES (1);

-- The base, fixed now when it is not yet: under the row's lock, so
-- concurrent first writers agree; the caller keeps it only once committed
-- (it reads it back in a later transaction).
CREATE FUNCTION @extschema@._audit_xid_base()
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  base bigint;
BEGIN
  UPDATE @extschema@.audit_xid_base b
  SET xid_base = greatest(0, coalesce(greatest(
                   (SELECT max(l.txid) + 1 FROM @extschema@.audit_log l),
                   (SELECT max(s.xid_to) FROM @extschema@.audit_seals s)), 0)
                 - pg_current_xact_id()::text::bigint),
      fixed_at = now()
  WHERE b.id = 1 AND b.xid_base IS NULL
  RETURNING b.xid_base INTO base;
  IF base IS NULL THEN
    SELECT b.xid_base INTO base FROM @extschema@.audit_xid_base b WHERE b.id = 1;
  END IF;
  RETURN base;
END
$$;

-- Tables under audit and their options (a global config table).
CREATE TABLE @extschema@.audit_tables (
  relid            regclass    NOT NULL,
  mode             text        NOT NULL,
  changed_only     boolean     NOT NULL,
  ignored_columns  text[]      NOT NULL DEFAULT '{}',
  key_columns      text[]      NOT NULL DEFAULT '{}',
  tenant_column    name,
  enabled_at       timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT audit_tables_pkey PRIMARY KEY (relid),
  CONSTRAINT audit_tables_mode CHECK (mode IN ('row', 'statement'))
);
COMMENT ON TABLE @extschema@.audit_tables IS
  'Tables audited by saas.audit_enable(), with their options.';
ALTER TABLE @extschema@.audit_tables ENABLE ROW LEVEL SECURITY;
SELECT pg_catalog.pg_extension_config_dump('@extschema@.audit_tables', '');
-- A dropped table leaves the registry (registry.sql's sql_drop trigger).
INSERT INTO @extschema@.table_registries (registry, relid_column, module)
VALUES ('audit_tables', 'relid', 'audit');

-- ---------------------------------------------------------------------------
-- Who reads the log: a tenant's admins and owners, their tenant's rows only.
-- Nobody writes it but the triggers (which write as its owner).
-- ---------------------------------------------------------------------------
-- UPDATE, DELETE and TRUNCATE refused for everyone, the owner included.
CREATE FUNCTION @extschema@._audit_append_only(rel regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = rel AND tgname = 'saas_audit_append_only') THEN
    EXECUTE format('CREATE TRIGGER saas_audit_append_only BEFORE UPDATE OR DELETE ON %s
                    FOR EACH ROW EXECUTE FUNCTION @extschema@._audit_refuse_change()', rel);
  END IF;
  IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = rel AND tgname = 'saas_audit_no_truncate') THEN
    EXECUTE format('CREATE TRIGGER saas_audit_no_truncate BEFORE TRUNCATE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@._audit_refuse_change()', rel);
  END IF;
END
$$;

-- A partition of the log gets the log's keys: the primary key, and a BRIN
-- index on txid (sealing and verification select by transaction id; rows
-- arrive roughly in txid order, so BRIN finds them at almost no cost to
-- writes). Named as PostgreSQL names them; skipped when there.
CREATE FUNCTION @extschema@._audit_log_keys(part regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_constraint WHERE conrelid = part AND contype = 'p') THEN
    EXECUTE format('ALTER TABLE %s ADD PRIMARY KEY (tenant_id, id, logged_at)', part);
  END IF;
  IF NOT EXISTS (SELECT FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
                 JOIN pg_am a ON a.oid = c.relam
                 WHERE i.indrelid = part AND a.amname = 'brin') THEN
    EXECUTE format('CREATE INDEX ON %s USING brin (txid)', part);
  END IF;
END
$$;

CREATE FUNCTION @extschema@._audit_secure(rel regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', rel);
  EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', rel);
  IF NOT EXISTS (SELECT FROM pg_policy WHERE polrelid = rel AND polname = 'saas_audit_admin_read') THEN
    EXECUTE format('CREATE POLICY saas_audit_admin_read ON %s FOR SELECT
                    USING (tenant_id = (SELECT @extschema@.current_tenant()) AND (SELECT @extschema@.has_role(''admin'')))', rel);
  END IF;
  PERFORM @extschema@._audit_append_only(rel);
  EXECUTE format('REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON %s FROM PUBLIC', rel);
END
$$;

CREATE FUNCTION @extschema@._audit_refuse_change()
RETURNS trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  RAISE EXCEPTION '% is append-only: % refused',
      CASE WHEN TG_TABLE_NAME LIKE 'audit_log%' THEN '@extschema@.audit_log' ELSE '@extschema@.' || TG_TABLE_NAME END, TG_OP
    USING ERRCODE = 'insufficient_privilege',
          HINT = 'Audit rows are never changed; old months leave only through partition retention (saas.create_monthly_partitions(..., retention => ...)).';
END
$$;

SELECT @extschema@._audit_secure('@extschema@.audit_log');
SELECT @extschema@._audit_secure('@extschema@.audit_seals');
SELECT @extschema@._audit_append_only('@extschema@.audit_retired');

-- ---------------------------------------------------------------------------
-- Triggers on audited tables
-- ---------------------------------------------------------------------------

-- Every relation of a table's partition tree, the table first.
CREATE FUNCTION @extschema@._audit_tree(rel regclass)
RETURNS SETOF regclass
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
  -- pg_partition_tree gives no rows for a plain table.
  SELECT rel WHERE NOT EXISTS (SELECT FROM pg_partition_tree(rel))
  UNION ALL
  (SELECT t.relid FROM pg_partition_tree(rel) t ORDER BY t.level, t.relid::text)
$$;

CREATE FUNCTION @extschema@._audit_drop_triggers(rel regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  t record;
BEGIN
  -- Cloned row triggers on partitions go with the parent's.
  FOR t IN SELECT g.tgrelid::regclass AS rel, g.tgname
           FROM pg_trigger g
           WHERE g.tgrelid IN (SELECT @extschema@._audit_tree(rel))
             AND g.tgname IN ('saas_audit_row', 'saas_audit_insert', 'saas_audit_update',
                              'saas_audit_delete', 'saas_audit_truncate')
             AND g.tgparentid = 0
           ORDER BY g.tgrelid::regclass::text, g.tgname LOOP
    EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, t.rel);
  END LOOP;
END
$$;

-- The one argument every audit trigger gets: its options as JSON, read by
-- the Rust trigger once per trigger.
CREATE FUNCTION @extschema@._audit_trigger_args(cfg @extschema@.audit_tables)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.jsonb_build_object(
  'changed_only', cfg.changed_only, 'tenant_column', cfg.tenant_column,
  'key', to_jsonb(cfg.key_columns), 'ignored', to_jsonb(cfg.ignored_columns))::text;

-- The statement-level triggers of one relation (row triggers are created on
-- the parent only and cloned to partitions by PostgreSQL).
CREATE FUNCTION @extschema@._audit_statement_triggers(rel regclass, cfg @extschema@.audit_tables)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  args text := @extschema@._audit_trigger_args(cfg);
BEGIN
  IF NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = rel AND tgname = 'saas_audit_truncate') THEN
    EXECUTE format('CREATE TRIGGER saas_audit_truncate AFTER TRUNCATE ON %s
                    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_statement_trigger(%L)', rel, args);
  END IF;
  IF cfg.mode = 'statement' AND NOT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = rel AND tgname = 'saas_audit_insert') THEN
    EXECUTE format('CREATE TRIGGER saas_audit_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS saas_new_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_statement_trigger(%L)', rel, args);
    EXECUTE format('CREATE TRIGGER saas_audit_update AFTER UPDATE ON %s REFERENCING OLD TABLE AS saas_old_rows NEW TABLE AS saas_new_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_statement_trigger(%L)', rel, args);
    EXECUTE format('CREATE TRIGGER saas_audit_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS saas_old_rows
                    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.audit_statement_trigger(%L)', rel, args);
  END IF;
END
$$;

-- The log's own partitions: made on first use, then kept by run_maintenance.
CREATE FUNCTION @extschema@._audit_ensure_log()
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF NOT EXISTS (SELECT FROM @extschema@.partition_config WHERE parent = '@extschema@.audit_log'::regclass) THEN
    PERFORM @extschema@.create_monthly_partitions('@extschema@.audit_log', 'logged_at');
  END IF;
END
$$;

CREATE FUNCTION @extschema@.audit_enable(
  tbl regclass,
  ignored_columns text[] DEFAULT '{}',
  changed_only boolean DEFAULT true,
  mode text DEFAULT 'row'
)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  kind "char";
  is_partition boolean;
  missing text[];
  cols text;
  keys text[];
  tcol name;
  cfg @extschema@.audit_tables;
  args text;
  part regclass;
BEGIN
  IF tbl IS NULL OR ignored_columns IS NULL OR changed_only IS NULL OR mode IS NULL THEN
    RAISE EXCEPTION 'audit_enable: no argument may be NULL'
      USING ERRCODE = 'null_value_not_allowed',
            HINT = 'Leave out an argument to get its default: ignored_columns ''{}'', changed_only true, mode ''row''.';
  END IF;
  PERFORM @extschema@._require_registrable(tbl, 'saas.audit_enable');
  IF array_ndims(ignored_columns) > 1 THEN
    RAISE EXCEPTION 'audit_enable: ignored_columns must be a list, not a % dimensional array', array_ndims(ignored_columns)
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Pass column names as a one-dimensional array, e.g. ''{updated_at,search_vector}''.';
  END IF;
  SELECT c.relkind, c.relispartition INTO kind, is_partition FROM pg_class c WHERE c.oid = tbl;
  IF kind IN ('v', 'm') THEN
    RAISE EXCEPTION '"%" is a %, not a table', tbl, CASE kind WHEN 'v' THEN 'view' ELSE 'materialized view' END
      USING ERRCODE = 'wrong_object_type',
            HINT = 'Audit the tables the view reads and writes: changes land there.';
  ELSIF kind NOT IN ('r', 'p') THEN
    RAISE EXCEPTION '"%" is not a table', tbl
      USING ERRCODE = 'wrong_object_type',
            HINT = 'audit_enable works on ordinary and partitioned tables.';
  END IF;
  IF is_partition THEN
    RAISE EXCEPTION '"%" is a partition of "%"', tbl, pg_partition_root(tbl)
      USING ERRCODE = 'wrong_object_type',
            HINT = format('Enable auditing on the partitioned table: SELECT saas.audit_enable(%L); it covers every partition, present and future.', pg_partition_root(tbl)::text);
  END IF;
  IF tbl IN ('@extschema@.audit_log'::regclass, '@extschema@.audit_seals'::regclass) THEN
    RAISE EXCEPTION 'the audit log cannot audit itself'
      USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'It is append-only and hashed already; check it with saas.audit_verify().';
  END IF;
  IF mode NOT IN ('row', 'statement') THEN
    RAISE EXCEPTION 'unknown audit mode "%"', mode
      USING ERRCODE = 'invalid_parameter_value',
            HINT = 'Use ''row'' (one trigger call per row) or ''statement'' (transition tables, for bulk-heavy tables).';
  END IF;
  SELECT array_agg(c ORDER BY c) INTO missing FROM unnest(ignored_columns) c
  WHERE NOT EXISTS (SELECT FROM pg_attribute a WHERE a.attrelid = tbl AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped);
  IF missing IS NOT NULL THEN
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
    FROM pg_attribute a WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped;
    RAISE EXCEPTION 'table "%" has no column %', tbl, array_to_string(missing, ', ')
      USING ERRCODE = 'undefined_column',
            HINT = format('ignored_columns names columns of the table: %s.', cols);
  END IF;

  SELECT array_agg(a.attname::text ORDER BY k.ord) INTO keys
  FROM pg_index i
  CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
  JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
  WHERE i.indrelid = tbl AND i.indisprimary;
  IF keys IS NULL THEN
    RAISE NOTICE 'table "%" has no primary key: audit rows will identify a record by all its column values', tbl
      USING HINT = 'Add a primary key and call audit_enable again for compact record keys.';
  END IF;

  -- The tenant of a row: tenancy's column for the table, else a uuid
  -- column named tenant_id, else (in the trigger) the request's tenant.
  SELECT r.tenant_column INTO tcol FROM @extschema@.tenant_tables r WHERE r.relid = tbl;
  IF tcol IS NULL THEN
    SELECT a.attname INTO tcol FROM pg_attribute a
    WHERE a.attrelid = tbl AND a.attname = 'tenant_id' AND a.atttypid = 'uuid'::regtype AND NOT a.attisdropped;
  END IF;

  PERFORM @extschema@._audit_ensure_log();

  INSERT INTO @extschema@.audit_tables AS t (relid, mode, changed_only, ignored_columns, key_columns, tenant_column)
  VALUES (tbl, mode, changed_only, ignored_columns, coalesce(keys, '{}'), tcol)
  ON CONFLICT (relid) DO UPDATE
    SET mode = excluded.mode, changed_only = excluded.changed_only, ignored_columns = excluded.ignored_columns,
        key_columns = excluded.key_columns, tenant_column = excluded.tenant_column, enabled_at = now()
  RETURNING * INTO cfg;

  -- Re-enabling replaces the old triggers with the new options.
  PERFORM @extschema@._audit_drop_triggers(tbl);
  args := @extschema@._audit_trigger_args(cfg);
  IF cfg.mode = 'row' THEN
    EXECUTE format('CREATE TRIGGER saas_audit_row AFTER INSERT OR UPDATE OR DELETE ON %s
                    FOR EACH ROW EXECUTE FUNCTION @extschema@.audit_row_trigger(%L)', tbl, args);
  END IF;
  -- Statement triggers are not inherited: put them on every partition too,
  -- so DML that targets a partition directly is audited as well.
  FOR part IN SELECT @extschema@._audit_tree(tbl) LOOP
    PERFORM @extschema@._audit_statement_triggers(part, cfg);
  END LOOP;
END
$$;
COMMENT ON FUNCTION @extschema@.audit_enable(regclass, text[], boolean, text) IS
  'Audits INSERT/UPDATE/DELETE/TRUNCATE on a table (and every partition, present and future) into saas.audit_log. Idempotent; re-enabling replaces the options.';

CREATE FUNCTION @extschema@.audit_disable(tbl regclass)
RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF tbl IS NULL THEN
    RAISE EXCEPTION 'audit_disable: the table may not be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass the audited table, e.g. saas.audit_disable(''app.notes'').';
  END IF;
  PERFORM @extschema@._audit_drop_triggers(tbl);
  DELETE FROM @extschema@.audit_tables WHERE relid = tbl;
  RETURN FOUND;
END
$$;
COMMENT ON FUNCTION @extschema@.audit_disable(regclass) IS
  'Stops auditing a table: drops its audit triggers. Its rows in saas.audit_log stay. True when it was audited.';

-- A new partition of an audited table gets the statement triggers; a new
-- partition of the log gets the log's protection. Called by partition
-- maintenance (hook) and by CREATE TABLE ... PARTITION OF (the partitions module's event trigger).
CREATE FUNCTION @extschema@._audit_partition_hook(parent regclass, part regclass)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  root regclass := coalesce(pg_partition_root(part), parent);
  cfg @extschema@.audit_tables;
BEGIN
  IF root = '@extschema@.audit_log'::regclass THEN
    PERFORM @extschema@._audit_log_keys(part);
    PERFORM @extschema@._audit_secure(part);
    RETURN;
  END IF;
  SELECT * INTO cfg FROM @extschema@.audit_tables WHERE relid = root;
  IF FOUND THEN
    PERFORM @extschema@._audit_statement_triggers(part, cfg);
  END IF;
END
$$;
INSERT INTO @extschema@.partition_hooks (hook_name, hook, builtin)
VALUES ('audit', '@extschema@._audit_partition_hook(regclass, regclass)', true);

-- Retention retired a month of the log: audit_verify keeps a record of it, so
-- a missing month reads as retired, not as rows deleted.
CREATE FUNCTION @extschema@._audit_partition_retired(parent regclass, partition_name text,
                                                     range_from text, range_to text, action text)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
  IF parent = '@extschema@.audit_log'::regclass THEN
    INSERT INTO @extschema@.audit_retired (range_from, range_to, partition_name, action)
    VALUES (range_from::timestamptz, range_to::timestamptz, partition_name, action);
  END IF;
END
$$;
INSERT INTO @extschema@.retention_hooks (hook_name, module, function_name)
VALUES ('audit', 'audit', '_audit_partition_retired');

-- run_maintenance's full pass seals the log (rows of finished transactions).
CREATE FUNCTION @extschema@._audit_maintenance(p_now timestamptz)
RETURNS TABLE (parent_table regclass, action text, partition_name text, detail text)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  tenants uuid[];
  seal_nos bigint[];
  sealed_chains bigint;
  sealed_rows numeric;
  resealed bigint;
BEGIN
  SELECT array_agg(s.tenant_id), array_agg(s.seal_no) INTO tenants, seal_nos FROM @extschema@.audit_seal() s;
  -- A pass seals a chain once per month its rows were logged in; a re-seal
  -- seals again rows of a 0.1.0 seal. A statement of its own, whose
  -- snapshot sees the new seals.
  SELECT count(DISTINCT a.tenant_id) FILTER (WHERE a.reseals IS NULL),
         coalesce(sum(a.row_count) FILTER (WHERE a.reseals IS NULL), 0),
         count(*) FILTER (WHERE a.reseals IS NOT NULL)
  INTO sealed_chains, sealed_rows, resealed
  FROM unnest(tenants, seal_nos) AS n(tenant_id, seal_no)
  JOIN @extschema@.audit_seals a ON a.tenant_id = n.tenant_id AND a.seal_no = n.seal_no;
  IF sealed_chains > 0 OR resealed > 0 THEN
    parent_table := '@extschema@.audit_log'::regclass; action := 'seal'; partition_name := NULL;
    detail := format('%s rows sealed in %s tenant chains', sealed_rows, sealed_chains)
              || CASE WHEN resealed > 0 THEN format('; %s re-seals of 0.1.0 seals that span months', resealed) ELSE '' END;
    RETURN NEXT;
  END IF;
END
$$;
INSERT INTO @extschema@.maintenance_tasks (task, module, function_name, run_order, reports_as)
VALUES ('audit_seal', 'audit', '_audit_maintenance', 10, 'audit_log');

-- ---------------------------------------------------------------------------
-- Export (the seeds' "audit export"): the current tenant's rows, for its
-- admins, as JSON lines or CSV with a header line.
-- ---------------------------------------------------------------------------
-- One CSV field. A field a spreadsheet would take for a formula (it starts
-- with =, +, -, @, a tab or a carriage return: =HYPERLINK(...) in a user
-- agent) gets a leading single quote, as OWASP advises; JSON, ids and
-- times never start so.
CREATE FUNCTION @extschema@._csv_field(v text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN CASE
  WHEN v IS NULL THEN ''
  WHEN v ~ '^[=+@\t\r-]' THEN '"''' || replace(v, '"', '""') || '"'
  WHEN v ~ '[",\r\n]' OR v = '' THEN '"' || replace(v, '"', '""') || '"'
  ELSE v
END;

CREATE FUNCTION @extschema@.audit_export(p_from timestamptz, p_to timestamptz, format text DEFAULT 'jsonl')
RETURNS SETOF text
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  tenant uuid := @extschema@.current_tenant();
  r record;
BEGIN
  IF p_from IS NULL OR p_to IS NULL OR format IS NULL THEN
    RAISE EXCEPTION 'audit_export: no argument may be NULL'
      USING ERRCODE = 'null_value_not_allowed', HINT = 'Pass a time range and ''jsonl'' or ''csv''.';
  END IF;
  IF format NOT IN ('jsonl', 'csv') THEN
    RAISE EXCEPTION 'unknown export format "%"', format
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Use ''jsonl'' (one JSON object per line) or ''csv''.';
  END IF;
  IF p_from > p_to THEN
    RAISE EXCEPTION 'audit_export: the range ends before it starts'
      USING ERRCODE = 'invalid_parameter_value', HINT = 'Pass the earlier timestamp first.';
  END IF;
  IF tenant IS NULL THEN
    RAISE EXCEPTION 'audit_export needs a tenant'
      USING ERRCODE = 'insufficient_privilege',
            HINT = 'Call it in a request with a tenant (JWT claim or X-Tenant-Id), or after saas.set_tenant() in a job.';
  END IF;
  IF NOT @extschema@.has_role('admin') AND NOT (SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = current_user) THEN
    RAISE EXCEPTION 'audit export is for the tenant''s admins and owners'
      USING ERRCODE = 'insufficient_privilege', HINT = 'Ask an admin or owner of the tenant.';
  END IF;
  IF format = 'csv' THEN
    RETURN NEXT 'id,logged_at,tenant_id,actor_id,actor_role,operation,schema_name,table_name,record_key,old_values,new_values,client_ip,user_agent,request_id,request_method,request_path,txid,row_hash';
  END IF;
  FOR r IN SELECT l.* FROM @extschema@.audit_log l
           WHERE l.tenant_id = tenant AND l.logged_at >= p_from AND l.logged_at < p_to
           ORDER BY l.logged_at, l.id LOOP
    IF format = 'jsonl' THEN
      RETURN NEXT jsonb_build_object(
        'id', r.id, 'logged_at', r.logged_at, 'tenant_id', r.tenant_id, 'actor_id', r.actor_id,
        'actor_role', r.actor_role, 'operation', r.operation, 'schema_name', r.schema_name,
        'table_name', r.table_name, 'record_key', r.record_key, 'old_values', r.old_values,
        'new_values', r.new_values, 'client_ip', host(r.client_ip), 'user_agent', r.user_agent,
        'request_id', r.request_id, 'request_method', r.request_method, 'request_path', r.request_path,
        'txid', r.txid, 'row_hash', encode(r.row_hash, 'hex'))::text;
    ELSE
      RETURN NEXT array_to_string(ARRAY(SELECT @extschema@._csv_field(f) FROM unnest(ARRAY[
        r.id::text, to_char(r.logged_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        r.tenant_id::text, r.actor_id::text, r.actor_role, r.operation, r.schema_name, r.table_name,
        r.record_key::text, r.old_values::text, r.new_values::text, host(r.client_ip), r.user_agent,
        r.request_id, r.request_method, r.request_path, r.txid::text, encode(r.row_hash, 'hex')])
        WITH ORDINALITY AS u(f, n) ORDER BY n), ',');
    END IF;
  END LOOP;
END
$$;
COMMENT ON FUNCTION @extschema@.audit_export(timestamptz, timestamptz, text) IS
  'The current tenant''s audit rows logged in [p_from, p_to), oldest first, as JSON lines or CSV (header first). For its admins and owners.';

-- What API roles get from saas.grant_api: the export (and its CSV quoting,
-- which it calls as the caller), and reading the log
-- (RLS shows a tenant's admins their tenant's rows; nobody writes them).
-- Only audit_enable attaches the triggers (CREATE TRIGGER needs EXECUTE,
-- which nobody else has), so nobody can point them at a table of their own
-- to forge log rows.
INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege) VALUES
  ('audit', 'function', 'audit_export(timestamptz, timestamptz, text)', 'EXECUTE'),
  ('audit', 'function', '_csv_field(text)', 'EXECUTE'),
  ('audit', 'table', 'audit_log', 'SELECT');

-- ---------------------------------------------------------------------------
-- The export for API clients (saas_api, registry.sql), served as a file:
-- text/csv or application/x-ndjson by the Accept header (or format), the
-- Content-Type set to match. Its return type is PostgREST 12's "any"
-- media type handler: with Accept */* (curl's default) PostgREST would
-- otherwise send a JSON string (its issue #3391); here */* gets NDJSON.
-- ---------------------------------------------------------------------------
CREATE DOMAIN saas_api."*/*" AS bytea;
COMMENT ON DOMAIN saas_api."*/*" IS
  'PostgREST''s "any" media type handler: functions returning it set their own Content-Type.';
CREATE FUNCTION saas_api.audit_export(p_from timestamptz, p_to timestamptz, format text DEFAULT NULL)
RETURNS saas_api."*/*"
LANGUAGE plpgsql STABLE PARALLEL RESTRICTED
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  headers text := current_setting('request.headers', true);
  accept text;
  fmt text := lower(format);
  body text;
  response jsonb;
BEGIN
  IF fmt IS NULL THEN
    accept := lower(coalesce(CASE WHEN headers IS NULL OR headers = '' THEN NULL ELSE headers::jsonb ->> 'accept' END, ''));
    fmt := CASE WHEN accept LIKE '%text/csv%' THEN 'csv' ELSE 'jsonl' END;
  END IF;
  SELECT string_agg(l.line, E'\n' ORDER BY l.n) INTO body
  FROM @extschema@.audit_export(p_from, p_to, fmt) WITH ORDINALITY AS l(line, n);
  -- After what pre_request set (RateLimit-*), not instead of it.
  response := coalesce(nullif(current_setting('response.headers', true), '')::jsonb, '[]'::jsonb)
              || jsonb_build_array(jsonb_build_object('Content-Type',
                   CASE fmt WHEN 'csv' THEN 'text/csv; charset=utf-8' ELSE 'application/x-ndjson' END));
  PERFORM set_config('response.headers', response::text, true);
  RETURN convert_to(coalesce(body || E'\n', ''), 'UTF8');
END
$$;
COMMENT ON FUNCTION saas_api.audit_export(timestamptz, timestamptz, text) IS
  'The current tenant''s audit rows logged in [p_from, p_to), oldest first, for its admins and owners: CSV (Accept: text/csv or format => csv, header line first) or NDJSON (otherwise: one JSON object per line).';
INSERT INTO @extschema@.api_grants (module, object_kind, object_name, privilege)
VALUES ('audit', 'function', 'saas_api.audit_export(timestamptz, timestamptz, text)', 'EXECUTE');
