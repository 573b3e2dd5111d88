//! The foundation: the extension is installed in the test database, and the
//! PostgREST request harness (tests/common) behaves like PostgREST v12.

mod common;

use common::{http_status, Api};
use serde_json::json;
use tokio_postgres::Client;

/// A schema of its own per test (tests run in parallel), with the objects the
/// harness checks exercise.
async fn fixture(client: Client, schema: &str) -> Api {
    common::ensure_api_roles(&client).await;
    client
        .batch_execute(&format!(
            r#"
            DROP SCHEMA IF EXISTS {s} CASCADE;
            CREATE SCHEMA {s};
            GRANT USAGE ON SCHEMA {s} TO anon, authenticated;
            CREATE TABLE {s}.notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text NOT NULL UNIQUE);
            GRANT SELECT, INSERT, UPDATE, DELETE ON {s}.notes TO anon, authenticated;

            CREATE FUNCTION {s}.echo_request() RETURNS jsonb STABLE LANGUAGE sql AS $f$
              SELECT jsonb_build_object(
                'method', current_setting('request.method'),
                'path', current_setting('request.path'),
                'headers', current_setting('request.headers')::jsonb,
                'cookies', current_setting('request.cookies')::jsonb,
                'claims', current_setting('request.jwt.claims')::jsonb,
                'role', current_user,
                'search_path', current_setting('search_path'),
                'read_only', current_setting('transaction_read_only'),
                'pre_request', current_setting('harness.pre_request', true))
            $f$;
            CREATE FUNCTION {s}.add_note(body text) RETURNS bigint VOLATILE LANGUAGE sql AS $f$
              INSERT INTO {s}.notes (body) VALUES (body) RETURNING id
            $f$;
            -- Declared STABLE but reaches a write through a VOLATILE callee:
            -- only the READ ONLY transaction PostgREST opens stops it.
            CREATE FUNCTION {s}.add_note_stable(body text) RETURNS bigint STABLE LANGUAGE sql AS $f$
              SELECT {s}.add_note(body)
            $f$;
            CREATE FUNCTION {s}.need_payment() RETURNS void VOLATILE LANGUAGE plpgsql AS $f$
              BEGIN RAISE SQLSTATE 'PT402' USING MESSAGE = 'plan limit reached', HINT = 'upgrade the plan'; END
            $f$;
            CREATE FUNCTION {s}.slow_down(body text) RETURNS void VOLATILE LANGUAGE plpgsql AS $f$
              BEGIN
                PERFORM set_config('response.headers', '[{{"X-Early":"1"}}]', true);
                INSERT INTO {s}.notes (body) VALUES (body);
                RAISE SQLSTATE 'PGRST'
                  USING MESSAGE = '{{"code":"SAAS429","message":"rate limit exceeded","details":"10 per minute","hint":"retry later"}}',
                        DETAIL = '{{"status":429,"headers":{{"Retry-After":"30"}}}}';
              END
            $f$;
            CREATE FUNCTION {s}.with_headers() RETURNS int STABLE LANGUAGE plpgsql AS $f$
              BEGIN
                PERFORM set_config('response.headers', '[{{"X-Total":"3"}},{{"Cache-Control":"no-store"}}]', true);
                PERFORM set_config('response.status', '202', true);
                RETURN 3;
              END
            $f$;
            CREATE FUNCTION {s}.pre_request() RETURNS void VOLATILE LANGUAGE plpgsql AS $f$
              BEGIN
                PERFORM set_config('harness.pre_request', 'ran', true);
                IF current_setting('request.headers')::jsonb ? 'x-block' THEN
                  RAISE SQLSTATE 'PT403' USING MESSAGE = 'blocked by pre-request';
                END IF;
              END
            $f$;
            CREATE FUNCTION {s}.list_notes() RETURNS SETOF {s}.notes STABLE LANGUAGE sql AS $f$
              SELECT * FROM {s}.notes ORDER BY id
            $f$;
            CREATE FUNCTION {s}.secret() RETURNS text STABLE LANGUAGE sql AS $f$ SELECT 'hidden' $f$;
            REVOKE ALL ON FUNCTION {s}.secret() FROM PUBLIC;
            "#,
            s = schema
        ))
        .await
        .expect("fixture");
    Api::for_schema(client, schema)
}

async fn note_count(api: &Api) -> i64 {
    let schema = &api.config.schemas[0];
    api.client
        .query_one(&format!("SELECT count(*) FROM {schema}.notes"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn extension_is_installed_with_its_version() {
    let client = db_or_skip!("extension_is_installed_with_its_version");
    let row = client
        .query_one(
            "SELECT e.extversion, saas.version(), n.nspname \
             FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_saas'",
            &[],
        )
        .await
        .expect("pg_saas is not installed in the test database");
    let (extversion, loaded, schema): (String, String, String) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(extversion, env!("CARGO_PKG_VERSION"));
    assert_eq!(loaded, extversion, "library and catalog versions differ");
    assert_eq!(schema, "saas");
}

#[tokio::test]
async fn request_settings_are_those_postgrest_sets() {
    let client = db_or_skip!("request_settings_are_those_postgrest_sets");
    let api = fixture(client, "h_settings").await;
    let claims = json!({"role": "authenticated", "sub": "8c0f4c6e-57a3-4bb0-a0a1-1e1e1e1e1e1e"});
    let r = api
        .rpc("echo_request", json!({}))
        .claims(claims.clone())
        .header("X-Tenant-Id", "abc")
        .header("Prefer", "return=minimal")
        .cookie("session", "s1")
        .send()
        .await;
    r.expect_ok();
    assert_eq!(r.status, 200);
    let b = &r.body;
    assert_eq!(b["method"], "POST");
    assert_eq!(b["path"], "/rpc/echo_request");
    assert_eq!(
        b["headers"],
        json!({"x-tenant-id": "abc", "prefer": "return=minimal"}),
        "header names are lower-cased"
    );
    assert_eq!(b["cookies"], json!({"session": "s1"}));
    assert_eq!(b["claims"], claims);
    assert_eq!(b["role"], "authenticated");
    assert_eq!(b["search_path"], "\"h_settings\", \"saas\"");
    assert_eq!(
        b["read_only"], "on",
        "a STABLE function is called in a READ ONLY transaction"
    );

    // Without a JWT: the anon role, whose only claim is its role.
    let r = api.rpc("echo_request", json!({})).send().await;
    assert_eq!(r.body["role"], "anon");
    assert_eq!(r.body["claims"], json!({"role": "anon"}));
    // Settings are transaction-local: nothing leaks onto the pooled connection.
    let leaked: Option<String> = api
        .client
        .query_one(
            "SELECT nullif(current_setting('request.jwt.claims', true), '')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(leaked, None);
}

#[tokio::test]
async fn access_mode_follows_method_and_volatility() {
    let client = db_or_skip!("access_mode_follows_method_and_volatility");
    let api = fixture(client, "h_access").await;
    let user = json!({"role": "authenticated"});

    // VOLATILE function over POST: read-write, the write commits.
    let r = api
        .rpc("add_note", json!({"body": "first"}))
        .claims(user.clone())
        .send()
        .await;
    assert_eq!(r.status, 200, "{:?}", r.error);
    assert!(r.body.as_i64().is_some());
    assert_eq!(note_count(&api).await, 1);

    // The same function over GET: READ ONLY, so the write fails with 405.
    let r = api
        .rpc_get("add_note", json!({"body": "second"}))
        .claims(user.clone())
        .send()
        .await;
    assert_eq!(r.status, 405);
    assert_eq!(r.code(), Some("25006"));

    // A STABLE function that writes, over POST: READ ONLY too.
    let r = api
        .rpc("add_note_stable", json!({"body": "third"}))
        .claims(user.clone())
        .send()
        .await;
    assert_eq!((r.status, r.code()), (405, Some("25006")), "{:?}", r.error);
    assert_eq!(note_count(&api).await, 1, "failed requests wrote nothing");

    // Table verbs: POST inserts (201), GET reads, PATCH and DELETE give 204.
    let r = api
        .insert("notes", json!([{"body": "b"}, {"body": "c"}]))
        .claims(user.clone())
        .send()
        .await;
    assert_eq!((r.status, r.rows), (201, 2));
    let r = api
        .insert("notes", json!({"body": "b"}))
        .claims(user.clone())
        .send()
        .await;
    assert_eq!(
        (r.status, r.code()),
        (409, Some("23505")),
        "unique violation is a conflict"
    );
    let r = api
        .get("notes")
        .order("id")
        .claims(user.clone())
        .send()
        .await;
    let bodies: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies, ["first", "b", "c"]);
    let r = api
        .update("notes", json!({"body": "B"}))
        .eq("body", "b")
        .claims(user.clone())
        .send()
        .await;
    assert_eq!((r.status, r.rows), (204, 1));
    let r = api
        .delete("notes")
        .in_list("body", &["B", "c"])
        .claims(user.clone())
        .representation()
        .send()
        .await;
    assert_eq!((r.status, r.rows), (200, 2));
    assert_eq!(r.body.as_array().unwrap().len(), 2);
    let r = api.rpc("list_notes", json!({})).claims(user).send().await;
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    assert_eq!(r.body[0]["body"], "first");
}

#[tokio::test]
async fn custom_statuses_and_headers() {
    let client = db_or_skip!("custom_statuses_and_headers");
    let api = fixture(client, "h_status").await;
    let user = json!({"role": "authenticated"});

    let r = api
        .rpc("need_payment", json!({}))
        .claims(user.clone())
        .send()
        .await;
    assert_eq!(r.status, 402, "PTnnn gives status nnn");
    assert_eq!(r.code(), Some("PT402"));
    assert_eq!(
        r.error.as_ref().unwrap().hint.as_deref(),
        Some("upgrade the plan")
    );

    let r = api
        .rpc("slow_down", json!({"body": "x"}))
        .claims(user.clone())
        .send()
        .await;
    assert_eq!(r.status, 429, "PGRST DETAIL sets the status");
    assert_eq!(r.header("Retry-After"), Some("30"));
    assert_eq!(
        r.header("X-Early"),
        None,
        "response.headers set before the error are rolled back"
    );
    let e = r.error.as_ref().unwrap();
    assert_eq!(
        (e.code.as_str(), e.message.as_str()),
        ("SAAS429", "rate limit exceeded")
    );
    assert_eq!(
        (e.details.as_deref(), e.hint.as_deref()),
        (Some("10 per minute"), Some("retry later"))
    );
    assert_eq!(
        note_count(&api).await,
        0,
        "the error rolled back the insert"
    );

    let r = api.rpc("with_headers", json!({})).claims(user).send().await;
    assert_eq!(r.status, 202, "response.status overrides the status");
    assert_eq!(r.body, json!(3));
    assert_eq!(
        r.headers,
        vec![
            ("X-Total".to_string(), "3".to_string()),
            ("Cache-Control".to_string(), "no-store".to_string())
        ]
    );
}

#[tokio::test]
async fn privileges_and_pre_request() {
    let client = db_or_skip!("privileges_and_pre_request");
    let mut api = fixture(client, "h_priv").await;

    let r = api.rpc("secret", json!({})).send().await;
    assert_eq!((r.status, r.code()), (401, Some("42501")), "anonymous: 401");
    let r = api
        .rpc("secret", json!({}))
        .claims(json!({"role": "authenticated"}))
        .send()
        .await;
    assert_eq!(
        (r.status, r.code()),
        (403, Some("42501")),
        "authenticated: 403"
    );
    let r = api.rpc("no_such_function", json!({})).send().await;
    assert_eq!((r.status, r.code()), (404, Some("PGRST202")));

    api.config.pre_request = Some("h_priv.pre_request".into());
    let r = api.rpc("echo_request", json!({})).send().await;
    assert_eq!(
        r.body["pre_request"], "ran",
        "pre-request ran in the request's transaction"
    );
    let r = api
        .rpc("echo_request", json!({}))
        .header("X-Block", "1")
        .send()
        .await;
    assert_eq!(
        (r.status, r.code()),
        (403, Some("PT403")),
        "a pre-request error ends the request"
    );
}

#[test]
fn status_table_matches_postgrest() {
    let cases = [
        ("PT402", false, 402),
        ("PT429", true, 429),
        ("23505", false, 409),
        ("23503", false, 409),
        ("23514", false, 400),
        ("25006", false, 405),
        ("25001", false, 500),
        ("42501", true, 401),
        ("42501", false, 403),
        ("42P01", false, 404),
        ("42883", false, 404),
        ("P0001", false, 400),
        ("P0002", false, 500),
        ("08006", false, 503),
        ("53400", false, 500),
        ("53200", false, 503),
        ("28000", false, 403),
        ("22023", false, 400),
        ("XX000", false, 500),
        ("57014", false, 500),
    ];
    for (code, anonymous, status) in cases {
        assert_eq!(http_status(code, anonymous), status, "{code}");
    }
}

/// pgvector in a schema of its own (Supabase puts extensions in
/// `extensions`): pg_saas installs beside it without CASCADE putting
/// anything into `public`, and works.
#[tokio::test]
async fn vector_in_its_own_schema() {
    let admin = db_or_skip!("vector_in_its_own_schema");
    let url = std::env::var(common::URL_ENV).unwrap();
    let db = "pg_saas_vector_schema";
    common::recreate_db(&admin, db).await;
    let client = common::connect_to(&url, db).await;
    client
        .batch_execute(
            "SET client_min_messages = warning;
             CREATE SCHEMA extensions;
             CREATE EXTENSION vector WITH SCHEMA extensions;
             CREATE EXTENSION pg_saas;",
        )
        .await
        .expect("install vector into extensions, then pg_saas");
    let row = client
        .query_one(
            "SELECT (SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
                     WHERE e.extname = 'vector'),
                    (SELECT count(*) FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace)
                    + (SELECT count(*) FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace),
                    saas.version() = (SELECT extversion FROM pg_extension WHERE extname = 'pg_saas')",
            &[],
        )
        .await
        .unwrap();
    let (schema, in_public, works): (String, i64, bool) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(schema, "extensions");
    assert_eq!(in_public, 0, "something was installed into public");
    assert!(works);
    drop(client);
    admin
        .batch_execute(&format!("DROP DATABASE {db} WITH (FORCE)"))
        .await
        .unwrap();
}
