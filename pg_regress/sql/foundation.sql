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

-- Rule: every object of the extension lives in schema saas (nothing in public).
SELECT pg_describe_object(d.classid, d.objid, d.objsubid) AS outside_saas
FROM pg_depend d
CROSS JOIN LATERAL pg_identify_object(d.classid, d.objid, d.objsubid) o
WHERE d.refclassid = 'pg_extension'::regclass
  AND d.refobjid = (SELECT oid FROM pg_extension WHERE extname = 'pg_saas')
  AND d.deptype = 'e'
  AND o.type NOT IN ('schema', 'event trigger')  -- neither lives in a schema
  AND o.schema IS DISTINCT FROM 'saas'
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
