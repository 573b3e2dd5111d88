// What a front end does with pg_saas, through the real PostgREST 12 that
// `make test` starts (scripts/with-test-cluster.sh): list the signed-in
// user's workspaces, switch tenant with X-Tenant-Id, read and write that
// tenant's rows, call RPCs with GET and POST, and hit a rate limit, reading
// the retry delay from the error's `details` JSON.
//
// Client: @supabase/postgrest-js, pinned in package-lock.json (npm ci by
// `make deps`), not @supabase/supabase-js. supabase-js is postgrest-js plus
// auth, storage and realtime clients, and it builds its REST URL as
// `<project url>/rest/v1`, the path of Supabase's gateway; a bare PostgREST
// serves at its root, so supabase-js would need a proxy or a URL rewrite in
// front of it. `supabase.from(...)`, `.schema(...)` and `.rpc(...)` are
// postgrest-js's own builders, so these requests are the ones a supabase-js
// front end sends, minus the /rest/v1 prefix. 2.109.0 is the newest release
// whose engines field accepts Node 20 (later ones want Node 22).
//
// Tokens are HS256 JWTs signed here with node:crypto and the secret that
// with-test-cluster.sh exported (PG_SAAS_JWT_SECRET), as Supabase Auth signs
// them. postgrest-js hides response headers (Retry-After, RateLimit-*), which
// is why pg_saas repeats the delay in `details`.
//
// Fixture: like tests/http.rs, the test makes its own objects with SQL (psql,
// as the superuser, PG_SAAS_TEST_URL) in schema js_api, which
// with-test-cluster.sh creates empty and lists in PostgREST's db-schemas;
// then it sends NOTIFY pgrst, 'reload schema' and waits until PostgREST's
// schema cache serves them.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import { PostgrestClient } from '@supabase/postgrest-js';

const URL = process.env.PG_SAAS_HTTP_URL;
const SECRET = process.env.PG_SAAS_JWT_SECRET;
const DB = process.env.PG_SAAS_TEST_URL;
if (!URL || !SECRET || !DB) {
  throw new Error(
    'PG_SAAS_HTTP_URL, PG_SAAS_JWT_SECRET and PG_SAAS_TEST_URL must be set: ' +
      'run this through `make test` (or scripts/with-test-cluster.sh make js-run)',
  );
}
const PSQL = `${process.env.PG_BIN ?? `/usr/lib/postgresql/${process.env.PG_MAJOR ?? '15'}/bin`}/psql`;

/** Runs SQL as the superuser; returns psql -At's output. */
function sql(text) {
  return execFileSync(PSQL, ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-d', DB, '-c', text], {
    encoding: 'utf8',
  }).trim();
}

const b64url = (s) => Buffer.from(s).toString('base64url');
/** An HS256 JWT for `claims`, signed with PostgREST's jwt-secret (its bytes). */
function jwt(claims) {
  const input = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}`;
  return `${input}.${createHmac('sha256', SECRET).update(input).digest('base64url')}`;
}

/** A signed-in user's token: a tenant claim, or none (X-Tenant-Id picks). */
function userToken(sub, tenantId) {
  const exp = Math.floor(Date.now() / 1000) + 3600;
  return jwt(tenantId ? { sub, role: 'authenticated', tenant_id: tenantId, exp } : { sub, role: 'authenticated', exp });
}

/**
 * The client a front end holds for a signed-in user, with the workspace it
 * has switched to (X-Tenant-Id) if any; .schema() picks the profile.
 */
function client(token, tenantId) {
  const headers = { Authorization: `Bearer ${token}` };
  if (tenantId) headers['X-Tenant-Id'] = tenantId;
  return new PostgrestClient(URL, { headers, schema: 'js_api' });
}

/** NOTIFY pgrst, 'reload schema' until OPTIONS on `path` is no longer 404 (20 s at most). */
async function waitUntilServed(path) {
  const start = Date.now();
  for (let attempt = 0; ; attempt++) {
    if (attempt % 20 === 0) sql("NOTIFY pgrst, 'reload schema'");
    const r = await fetch(`${URL}${path}`, { method: 'OPTIONS', headers: { 'Accept-Profile': 'js_api' } });
    await r.arrayBuffer();
    if (r.status !== 404) return;
    assert.ok(Date.now() - start < 20_000, `PostgREST did not serve ${path} within 20 s of NOTIFY pgrst: ${r.status}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

// Tenants A and B; `both` owns A and is a member of B (no tenant claim: the
// workspace switcher sends X-Tenant-Id); `solo` is a member of A only.
const A = randomUUID();
const B = randomUUID();
const both = randomUUID();
const solo = randomUUID();

before(async () => {
  sql(`
    SET client_min_messages = warning;
    -- What API roles may call in saas (the Rust tests' shared_setup does the same).
    SELECT saas.grant_api('{anon,authenticated}');
    DROP TABLE IF EXISTS js_api.js_notes, js_api.js_limited CASCADE;
    CREATE TABLE js_api.js_notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                  tenant_id uuid NOT NULL, body text NOT NULL);
    SELECT saas.enable_tenancy('js_api.js_notes');
    GRANT SELECT, INSERT, UPDATE, DELETE ON js_api.js_notes TO authenticated;
    -- A table whose reads a rate-limit rule limits (set after the schema wait).
    CREATE TABLE js_api.js_limited (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                                    tenant_id uuid NOT NULL, body text NOT NULL);
    SELECT saas.enable_tenancy('js_api.js_limited');
    GRANT SELECT ON js_api.js_limited TO authenticated;
    -- RPCs: a STABLE one (GET or POST) and a VOLATILE one (POST only).
    CREATE OR REPLACE FUNCTION js_api.js_note_count() RETURNS bigint
      LANGUAGE sql STABLE AS $$ SELECT count(*) FROM js_api.js_notes $$;
    CREATE OR REPLACE FUNCTION js_api.js_add_note(body text) RETURNS js_api.js_notes
      LANGUAGE sql VOLATILE AS $$ INSERT INTO js_api.js_notes (body) VALUES (body) RETURNING * $$;
    GRANT EXECUTE ON FUNCTION js_api.js_note_count(), js_api.js_add_note(text) TO authenticated;
    -- Plans without a row are unlimited: no daily quota interferes.
    INSERT INTO saas.tenants (id, slug, name, plan) VALUES
      ('${A}', 'js-a-${A.slice(0, 8)}', 'JS Alpha', 'js-unlimited'),
      ('${B}', 'js-b-${B.slice(0, 8)}', 'JS Beta', 'js-unlimited');
    INSERT INTO saas.memberships (tenant_id, user_id, role) VALUES
      ('${A}', '${both}', 'owner'), ('${B}', '${both}', 'member'), ('${A}', '${solo}', 'member');
  `);
  await waitUntilServed('/js_notes');
  await waitUntilServed('/js_limited');
  // (OPTIONS finds a function by the arguments in the query string: one without any.)
  await waitUntilServed('/rpc/js_note_count');
});

test('the workspace list: saas_api.my_memberships by POST and by GET', async () => {
  const db = client(userToken(both));
  const want = [
    { tenant_id: A, name: 'JS Alpha', role: 'owner', status: 'active' },
    { tenant_id: B, name: 'JS Beta', role: 'member', status: 'active' },
  ];
  const pick = (rows) => rows.map(({ tenant_id, name, role, status }) => ({ tenant_id, name, role, status }));

  // rpc() POSTs by default (Content-Profile: saas_api).
  const post = await db.schema('saas_api').rpc('my_memberships').order('name');
  assert.equal(post.error, null, JSON.stringify(post.error));
  assert.equal(post.status, 200);
  assert.deepEqual(pick(post.data), want);

  // { get: true }: a GET (Accept-Profile: saas_api), cacheable, read only.
  const get = await db.schema('saas_api').rpc('my_memberships', {}, { get: true }).order('name');
  assert.equal(get.error, null, JSON.stringify(get.error));
  assert.deepEqual(pick(get.data), want);

  // A member of one workspace sees one.
  const one = await client(userToken(solo)).schema('saas_api').rpc('my_memberships', {}, { get: true });
  assert.deepEqual(pick(one.data), [{ ...want[0], role: 'member' }]);
});

test('switching tenant with X-Tenant-Id: each workspace reads and writes only its own rows', async () => {
  const token = userToken(both);
  const inA = client(token, A);
  const inB = client(token, B);

  // Writes: tenant_id comes from the chosen tenant, not from the client.
  const wa = await inA.from('js_notes').insert([{ body: 'a-1' }, { body: 'a-2' }]).select();
  assert.equal(wa.error, null, JSON.stringify(wa.error));
  assert.equal(wa.status, 201);
  assert.deepEqual(wa.data.map((r) => [r.tenant_id, r.body]), [[A, 'a-1'], [A, 'a-2']]);
  const wb = await inB.from('js_notes').insert({ body: 'b-1' }).select().single();
  assert.equal(wb.error, null, JSON.stringify(wb.error));
  assert.equal(wb.data.tenant_id, B);

  // Reads: the same query, another header, another tenant's rows.
  const ra = await inA.from('js_notes').select('tenant_id, body').order('id');
  assert.deepEqual(ra.data, [{ tenant_id: A, body: 'a-1' }, { tenant_id: A, body: 'a-2' }]);
  const rb = await inB.from('js_notes').select('tenant_id, body').order('id');
  assert.deepEqual(rb.data, [{ tenant_id: B, body: 'b-1' }]);
  // The header per request (setHeader) works as well as per client.
  const switched = await client(token).from('js_notes').select('body').setHeader('X-Tenant-Id', B);
  assert.deepEqual(switched.data, [{ body: 'b-1' }]);
  // An exact count counts this tenant's rows only.
  const counted = await inA.from('js_notes').select('id', { count: 'exact', head: true });
  assert.equal(counted.count, 2);

  // Updates and deletes reach this tenant's rows only: from A, B's row is not there.
  const ua = await inA.from('js_notes').update({ body: 'a-1 edited' }).eq('body', 'a-1').select('body');
  assert.deepEqual(ua.data, [{ body: 'a-1 edited' }]);
  const cross = await inA.from('js_notes').update({ body: 'hijacked' }).eq('id', wb.data.id).select();
  assert.equal(cross.error, null, JSON.stringify(cross.error));
  assert.deepEqual(cross.data, []);
  const crossDelete = await inA.from('js_notes').delete().eq('id', wb.data.id).select();
  assert.deepEqual(crossDelete.data, []);
  // Naming B's tenant_id in a write from A is refused by the policy.
  const forged = await inA.from('js_notes').insert({ tenant_id: B, body: 'forged' });
  assert.equal(forged.status, 403, JSON.stringify(forged));
  assert.equal(forged.error.code, '42501');
  assert.equal(sql(`SELECT string_agg(body, ',' ORDER BY id) FROM js_api.js_notes WHERE tenant_id = '${B}'`), 'b-1');

  // A token with a tenant claim needs no header.
  const claimed = await client(userToken(solo, A)).from('js_notes').select('body').order('id');
  assert.deepEqual(claimed.data, [{ body: 'a-1 edited' }, { body: 'a-2' }]);
  // A workspace the user is not a member of: 403, nothing read.
  const notMine = await client(userToken(solo), B).from('js_notes').select();
  assert.equal(notMine.status, 403, JSON.stringify(notMine));
  assert.equal(notMine.data, null);
  assert.equal(notMine.error.code, '42501');
});

test('RPC with GET and POST', async () => {
  const inA = client(userToken(both), A);
  const before = Number(sql(`SELECT count(*) FROM js_api.js_notes WHERE tenant_id = '${A}'`));

  // A VOLATILE function: POST (the default of rpc()), in a read-write transaction.
  const added = await inA.rpc('js_add_note', { body: 'by rpc' }).single();
  assert.equal(added.error, null, JSON.stringify(added.error));
  assert.equal(added.data.tenant_id, A);
  assert.equal(added.data.body, 'by rpc');
  // The same by GET runs READ ONLY: PostgreSQL refuses the INSERT (25006, 405).
  const refused = await inA.rpc('js_add_note', { body: 'by get' }, { get: true });
  assert.equal(refused.status, 405, JSON.stringify(refused));
  assert.equal(refused.error.code, '25006');

  // A STABLE function answers the same by GET and by POST.
  const byGet = await inA.rpc('js_note_count', {}, { get: true });
  const byPost = await inA.rpc('js_note_count');
  assert.equal(byGet.error, null, JSON.stringify(byGet.error));
  assert.equal(byPost.error, null, JSON.stringify(byPost.error));
  assert.equal(byGet.data, before + 1);
  assert.equal(byPost.data, before + 1);

  // saas_api.usage_report(from_day, to_day): arguments in the query string
  // (GET) or in the JSON body (POST); today's API calls of tenant A.
  const today = new Date().toISOString().slice(0, 10);
  const args = { from_day: today, to_day: today };
  for (const opts of [{ get: true }, {}]) {
    const r = await inA.schema('saas_api').rpc('usage_report', args, opts).eq('metric', 'api_calls');
    assert.equal(r.error, null, JSON.stringify(r.error));
    assert.equal(r.data.length, 1, JSON.stringify(r.data));
    assert.equal(r.data[0].day, today);
    assert.ok(r.data[0].used >= 1, JSON.stringify(r.data));
    assert.equal(r.data[0].daily_limit, null, 'no plan row: no daily limit');
  }
});

test('a rate limit: 429 with the retry delay in the details JSON', async () => {
  const rule = Number(
    sql("SELECT saas.rate_limit_rule_set('/js_limited', 2, '1 hour', scope => 'user', method => 'GET')"),
  );
  const db = client(userToken(solo, A));
  for (let i = 0; i < 2; i++) {
    const ok = await db.from('js_limited').select();
    assert.equal(ok.status, 200, JSON.stringify(ok));
  }
  const r = await db.from('js_limited').select();
  assert.equal(r.status, 429, JSON.stringify(r));
  assert.equal(r.data, null);
  assert.equal(r.error.code, 'PT429');
  assert.match(r.error.message, /^rate limit exceeded/);
  // What a front end reads to schedule its retry: headers are out of reach.
  const details = JSON.parse(r.error.details);
  assert.equal(details.reason, 'rate_limited');
  assert.equal(details.rule_id, rule);
  assert.equal(details.limit, 2);
  assert.equal(details.remaining, 0);
  // 2 per hour: the next request fits half an hour after the first.
  assert.ok(details.retry_after_seconds >= 1700 && details.retry_after_seconds <= 1800, r.error.details);
  assert.equal(r.error.hint, `Retry after ${details.retry_after_seconds} seconds.`);

  // throwOnError(): the same refusal as a thrown PostgrestError.
  await assert.rejects(async () => await db.from('js_limited').select().throwOnError(), (e) => {
    assert.equal(e.code, 'PT429');
    assert.equal(JSON.parse(e.details).reason, 'rate_limited');
    return true;
  });
  // The rule is per user and per GET path: the other user still reads.
  const other = await client(userToken(both), A).from('js_limited').select();
  assert.equal(other.status, 200, JSON.stringify(other));
});
