-- pg_saas bootstrap: runs first, before any function of the extension exists.
-- The schema itself comes from the control file (schema = saas); pinning
-- everything to @extschema@ keeps the extension out of `public`.

COMMENT ON SCHEMA @extschema@ IS
  'pg_saas: multi-tenant SaaS back end (tenancy, audit, partitions, rate limits, LTV, retention, memory, LLM cache, privacy)';

-- Nobody but the owner creates objects in our schema.
REVOKE CREATE ON SCHEMA @extschema@ FROM PUBLIC;
