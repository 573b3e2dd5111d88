-- pg_saas finalize: runs last, after every table and function exists.
--
-- Deny by default: no routine, table, view or sequence of the schemas
-- (saas, saas_api) is for PUBLIC. API roles get exactly what the modules listed in api_grants
-- (saas.grant_api); DBAs and jobs get explicit GRANTs. A module cannot forget
-- a REVOKE, and an upgrade script ends with the same block.
DO $finalize$
DECLARE
  obj text;
BEGIN
  FOR obj IN
    SELECT pg_catalog.format('%s %s', CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END,
                             p.oid::regprocedure)
    FROM pg_catalog.pg_proc p
    WHERE p.pronamespace IN ('@extschema@'::regnamespace, 'saas_api'::regnamespace) AND p.prokind IN ('f', 'p')
    ORDER BY 1
  LOOP
    EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM PUBLIC', obj);
  END LOOP;
  FOR obj IN
    SELECT c.oid::regclass::text
    FROM pg_catalog.pg_class c
    WHERE c.relnamespace = '@extschema@'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S')
      -- The extension's own; the log's monthly partitions carry their own grants.
      AND EXISTS (SELECT FROM pg_catalog.pg_depend d
                  WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid
                    AND d.refclassid = 'pg_catalog.pg_extension'::regclass AND d.deptype = 'e')
    ORDER BY 1
  LOOP
    EXECUTE pg_catalog.format('REVOKE ALL ON %s FROM PUBLIC', obj);
  END LOOP;
END
$finalize$;
