-- Runs before every other suite: a clean database gets the extension the way
-- a DBA installs it, with its dependencies.
SET client_min_messages = warning;
CREATE EXTENSION pg_saas CASCADE;
RESET client_min_messages;
SELECT e.extname, n.nspname AS schema, e.extrelocatable
FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
WHERE e.extname IN ('pg_saas', 'vector')
ORDER BY e.extname;
