-- pg_saas finalize: runs last, after every table and function exists.
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
