-- pg_saas finalize: runs last, after every table and function exists.

-- A dropped table leaves every registry that names it: tenant_tables
-- (tenancy), partition_config (partitions; otherwise run_maintenance
-- reports an error for the missing parent on every run) and audit_tables
-- (audit). Every command that can drop a table (DROP TABLE/SCHEMA/OWNED,
-- DROP EXTENSION of an extension owning one, ...): no tag filter.
CREATE FUNCTION @extschema@._forget_dropped_tables()
RETURNS event_trigger
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
  dropped oid[];
BEGIN
  SELECT array_agg(objid) INTO dropped
  FROM pg_event_trigger_dropped_objects() WHERE object_type = 'table';
  IF dropped IS NULL THEN
    RETURN;
  END IF;
  DELETE FROM @extschema@.tenant_tables WHERE relid::oid = ANY (dropped);
  DELETE FROM @extschema@.partition_config WHERE parent::oid = ANY (dropped);
  DELETE FROM @extschema@.audit_tables WHERE relid::oid = ANY (dropped);
END
$$;
CREATE EVENT TRIGGER saas_forget_dropped_tables ON sql_drop
  EXECUTE FUNCTION @extschema@._forget_dropped_tables();
--
-- Safety net for the rule "every SECURITY DEFINER function is revoked from
-- PUBLIC": whatever a module forgot, no definer function stays executable by
-- everyone. Roles that need one get an explicit GRANT.
DO $finalize$
DECLARE
  fn regprocedure;
BEGIN
  FOR fn IN
    SELECT p.oid::regprocedure
    FROM pg_catalog.pg_proc p
    WHERE p.pronamespace = '@extschema@'::regnamespace
      AND p.prosecdef
  LOOP
    EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
  END LOOP;
END
$finalize$;
