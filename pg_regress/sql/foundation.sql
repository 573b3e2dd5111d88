-- The foundation: version reporting and the conventions every module keeps.
-- Each convention query lists violators, so an empty result is a pass and a
-- module that breaks a rule shows up here by name.

-- The loaded library and the catalog agree after CREATE EXTENSION.
SELECT saas.version() = e.extversion AS library_matches_catalog,
       saas.version() ~ '^\d+\.\d+\.\d+$' AS is_semver
FROM pg_extension e WHERE e.extname = 'pg_saas';

-- version() is declared immutable, strict and parallel safe.
SELECT p.provolatile, p.proisstrict, p.proparallel
FROM pg_proc p WHERE p.oid = 'saas.version()'::regprocedure;

-- Rule: every object of the extension lives in schema saas, or in saas_api
-- for what API clients call (nothing in public).
SELECT pg_describe_object(d.classid, d.objid, d.objsubid) AS outside_saas
FROM pg_depend d
CROSS JOIN LATERAL pg_identify_object(d.classid, d.objid, d.objsubid) o
WHERE d.refclassid = 'pg_extension'::regclass
  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_saas')
  AND d.deptype = 'e'
  AND o.type NOT IN ('schema', 'event trigger')  -- neither lives in a schema
  AND o.schema IS DISTINCT FROM 'saas' AND o.schema IS DISTINCT FROM 'saas_api'
ORDER BY 1;

-- Rule: every SECURITY DEFINER function pins search_path ...
SELECT p.oid::regprocedure AS definer_without_pinned_search_path
FROM pg_proc p
WHERE p.pronamespace = 'saas'::regnamespace AND p.prosecdef
  AND NOT EXISTS (SELECT FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')
ORDER BY 1;

-- ... and is not executable by PUBLIC.
SELECT p.oid::regprocedure AS definer_executable_by_public
FROM pg_proc p
CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
WHERE p.pronamespace = 'saas'::regnamespace AND p.prosecdef
  AND a.grantee = 0 AND a.privilege_type = 'EXECUTE'
ORDER BY 1;

-- Rule: nobody but the owner creates objects in schema saas.
SELECT has_schema_privilege('public', 'saas', 'CREATE') AS public_can_create_in_saas;

-- Rule: the extension's tables are ready for Citus: no serial columns
-- (identities or explicit sequences only).
SELECT c.oid::regclass AS table_name, a.attname AS serial_column
FROM pg_class c
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_attrdef ad ON ad.adrelid = c.oid AND ad.adnum = a.attnum
WHERE c.relnamespace = 'saas'::regnamespace AND c.relkind IN ('r', 'p')
  AND pg_get_expr(ad.adbin, ad.adrelid) LIKE 'nextval(%'
ORDER BY 1, 2;

-- Rule: every table of the extension has row level security enabled (tenant
-- tables also force it; internal config tables rely on having no policy).
SELECT c.oid::regclass AS table_without_rls
FROM pg_class c
WHERE c.relnamespace = 'saas'::regnamespace AND c.relkind IN ('r', 'p') AND NOT c.relrowsecurity
ORDER BY 1;

-- Rule: deny by default. PUBLIC runs no routine and uses no relation of the
-- schema; whoever needs one gets an explicit GRANT.
SELECT p.oid::regprocedure AS routine_executable_by_public
FROM pg_proc p
CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
WHERE p.pronamespace IN ('saas'::regnamespace, 'saas_api'::regnamespace) AND a.grantee = 0
ORDER BY 1;
SELECT c.oid::regclass AS relation_usable_by_public, a.privilege_type
FROM pg_class c
CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault(
  (CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END)::"char", c.relowner))) a
WHERE c.relnamespace = 'saas'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
  AND a.grantee = 0
ORDER BY 1, 2;

-- The API surface: what every module lists for grant_api, by module.
SELECT module, object_kind, object_name, privilege
FROM saas.api_grants ORDER BY module, object_kind, object_name, privilege;
-- Every listed object exists.
SELECT g.object_kind, g.object_name AS listed_but_missing
FROM saas.api_grants g
WHERE (g.object_kind = 'function' AND to_regprocedure(CASE WHEN g.object_name LIKE 'saas\_api.%' THEN g.object_name
                                                            ELSE 'saas.' || g.object_name END) IS NULL)
   OR (g.object_kind = 'table' AND to_regclass('saas.' || quote_ident(g.object_name)) IS NULL)
ORDER BY 1, 2;

-- An API role given grant_api can use exactly what api_grants lists: every
-- routine and every relation of the schema, checked both ways.
CREATE ROLE regress_foundation_api NOLOGIN;
SELECT saas.grant_api('{regress_foundation_api}');
SELECT p.oid::regprocedure AS routine,
       has_function_privilege('regress_foundation_api', p.oid, 'EXECUTE') AS api_can_execute
FROM pg_proc p
WHERE p.pronamespace IN ('saas'::regnamespace, 'saas_api'::regnamespace)
  AND has_function_privilege('regress_foundation_api', p.oid, 'EXECUTE')
      <> EXISTS (SELECT FROM saas.api_grants g
                 WHERE g.object_kind = 'function'
                   AND to_regprocedure(CASE WHEN g.object_name LIKE 'saas\_api.%' THEN g.object_name
                                            ELSE 'saas.' || g.object_name END) = p.oid)
ORDER BY 1;
SELECT c.oid::regclass AS relation, priv,
       has_table_privilege('regress_foundation_api', c.oid, priv) AS api_has_it
FROM pg_class c
CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) priv
WHERE c.relnamespace = 'saas'::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND NOT c.relispartition
  AND has_table_privilege('regress_foundation_api', c.oid, priv)
      <> EXISTS (SELECT FROM saas.api_grants g
                 WHERE g.object_kind = 'table' AND to_regclass('saas.' || quote_ident(g.object_name)) = c.oid
                   AND g.privilege = priv)
ORDER BY 1, 2;
DROP OWNED BY regress_foundation_api;
DROP ROLE regress_foundation_api;


-- Rule: the schema's tables hold no reg* type that pg_upgrade refuses
-- (only regclass, regtype and regrole survive it).
SELECT a.attrelid::regclass AS relation, a.attname AS column_pg_upgrade_refuses, a.atttypid::regtype
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relnamespace = 'saas'::regnamespace AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
  AND a.atttypid IN ('regproc'::regtype, 'regprocedure'::regtype, 'regoper'::regtype, 'regoperator'::regtype,
                     'regconfig'::regtype, 'regdictionary'::regtype, 'regnamespace'::regtype, 'regcollation'::regtype)
ORDER BY 1, 2;
