//! PostgREST v12 request emulation over tokio-postgres.
//!
//! Most API-facing tests send their requests through [`Api`], which performs
//! on one tokio-postgres connection what PostgREST does per request, so a
//! test can run many requests quickly and look inside the transaction
//! (docs/architecture.md, "How a PostgREST request flows"). `tests/http.rs`
//! shows the same behaviour through the real PostgREST that `make test`
//! starts ([`http`]). The emulation:
//!
//! 1. `BEGIN` with the access mode PostgREST picks: READ ONLY for GET/HEAD and
//!    for RPC to functions that are not VOLATILE, READ WRITE otherwise;
//! 2. one `SELECT set_config(..., true), ...` statement for `search_path`,
//!    `role`, `request.jwt.claims`, `request.method`, `request.path`,
//!    `request.headers` (lower-cased names) and `request.cookies`;
//! 3. `SELECT <db-pre-request>()` when one is configured;
//! 4. the main query, shaped like PostgREST's (named-argument RPC from
//!    `json_to_record`, inserts from `json_populate_recordset`, `RETURNING 1`
//!    unless a representation is asked for);
//! 5. reads `response.headers` / `response.status`, then `COMMIT`; any error
//!    rolls everything back and is mapped to an HTTP status with PostgREST's
//!    SQLSTATE table (PTnnn, `PGRST` with JSON message/detail, 42501, ...).
#![allow(dead_code)]

pub mod http;

use serde_json::{json, Map, Value};
use tokio_postgres::{Client, NoTls};

/// The environment variable `make test` sets to the test cluster's URL.
pub const URL_ENV: &str = "PG_SAAS_TEST_URL";

/// Connect to the test database, or `None` (with a visible message) when the
/// test runs outside `make test`. Inside `make test` a failure to connect is
/// an error, never a skip.
pub async fn connect(test: &str) -> Option<Client> {
    let url = match std::env::var(URL_ENV) {
        Ok(url) if !url.is_empty() => url,
        _ => {
            // Written to the stderr handle, not eprintln!, which the test
            // harness captures and hides for passing tests.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: {URL_ENV} is not set; `make test` runs the integration tests against a cluster"
            );
            return None;
        }
    };
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("{URL_ENV}={url}: cannot connect: {e}"));
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("connection error: {e}");
        }
    });
    Some(client)
}

/// Creates the roles PostgREST deployments use (`anon`, `authenticated`)
/// unless they exist. Roles are cluster-wide and tests run in parallel, so
/// creation is serialized with an advisory lock.
pub async fn ensure_api_roles(client: &Client) {
    client
        .batch_execute(
            "BEGIN;
             SELECT pg_advisory_xact_lock(4242);
             DO $$ BEGIN
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'anon') THEN CREATE ROLE anon NOLOGIN; END IF;
               IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'authenticated') THEN CREATE ROLE authenticated NOLOGIN; END IF;
             END $$;
             COMMIT;",
        )
        .await
        .expect("create API roles");
}

/// Serializes fixtures changing shared pg_saas state (grants, tenants, DDL) across parallel tests; ensure_api_roles uses 4242.
pub const SHARED_SETUP_LOCK: i64 = 4243;

/// Fixture setup on shared pg_saas state: ensures the API roles, then in one
/// transaction holding [`SHARED_SETUP_LOCK`] grants them pg_saas's API
/// (`saas.grant_api('{anon,authenticated}')`, which touches only objects in
/// `saas`, so running it first does not depend on `sql`) and runs `sql`.
/// The error is returned so each fixture keeps its own panic message.
pub async fn shared_setup(client: &Client, sql: &str) -> Result<(), tokio_postgres::Error> {
    ensure_api_roles(client).await;
    client
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({lock});
             SELECT saas.grant_api('{{anon,authenticated}}');
             {sql}
             COMMIT;",
            lock = SHARED_SETUP_LOCK
        ))
        .await
}

/// The verified JWT of `user` as `authenticated`, with `tenant` as its tenant claim.
pub fn claims(user: &str, tenant: &str) -> Value {
    json!({"sub": user, "role": "authenticated", "tenant_id": tenant})
}

/// Returns from the test early when there is no test database.
#[macro_export]
macro_rules! db_or_skip {
    ($name:expr) => {
        match $crate::common::connect($name).await {
            Some(c) => c,
            None => return,
        }
    };
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Patch,
    Delete,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// What a request acts on.
#[derive(Clone, Debug)]
enum Target {
    Rpc { function: String, args: Value },
    Table { table: String },
}

/// A PostgREST filter: `?col=op.value`.
#[derive(Clone, Debug)]
pub struct Filter {
    column: String,
    op: &'static str,
    value: Option<String>,
    values: Vec<String>,
}

/// The deployment: what a `postgrest.conf` would say.
#[derive(Clone, Debug)]
pub struct ApiConfig {
    /// `db-schemas`: the first is the default (exposed) schema.
    pub schemas: Vec<String>,
    /// `db-extra-search-path`.
    pub extra_search_path: Vec<String>,
    /// `db-anon-role`.
    pub anon_role: String,
    /// `db-pre-request`, schema-qualified.
    pub pre_request: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            schemas: vec!["api".into()],
            extra_search_path: vec!["public".into()],
            anon_role: "anon".into(),
            pre_request: None,
        }
    }
}

/// An emulated PostgREST instance on one connection. Requests on one `Api`
/// run one after another, like requests on one pooled connection.
pub struct Api {
    pub client: Client,
    pub config: ApiConfig,
}

/// A request being built; finish it with [`RequestBuilder::send`].
pub struct RequestBuilder<'a> {
    api: &'a Api,
    method: Method,
    target: Target,
    claims: Option<Value>,
    headers: Vec<(String, String)>,
    cookies: Vec<(String, String)>,
    filters: Vec<Filter>,
    order: Vec<String>,
    body: Option<Value>,
    representation: bool,
}

/// The PostgREST error body.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiError {
    pub code: String,
    pub message: String,
    pub details: Option<String>,
    pub hint: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    /// Response headers in the order they were set.
    pub headers: Vec<(String, String)>,
    /// The JSON body: the RPC result, the selected rows, or the error object.
    pub body: Value,
    pub error: Option<ApiError>,
    /// Rows the main query touched (selected, inserted, updated, deleted).
    pub rows: u64,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The SQLSTATE (or PGRST code) of an error response.
    pub fn code(&self) -> Option<&str> {
        self.error.as_ref().map(|e| e.code.as_str())
    }

    #[track_caller]
    pub fn expect_ok(&self) -> &Self {
        assert!(
            self.is_success(),
            "expected success, got {} {:?}",
            self.status,
            self.error
        );
        self
    }
}

impl Api {
    pub fn new(client: Client, config: ApiConfig) -> Self {
        Api { client, config }
    }

    /// PostgREST exposing `schema`, with `saas` on the extra search path and
    /// `anon` as the anonymous role; no pre-request hook.
    pub fn for_schema(client: Client, schema: &str) -> Self {
        Api::new(
            client,
            ApiConfig {
                schemas: vec![schema.to_string()],
                extra_search_path: vec!["saas".into()],
                anon_role: "anon".into(),
                pre_request: None,
            },
        )
    }

    /// The documented deployment: [`Api::for_schema`] with `saas.pre_request`
    /// as PostgREST's `db-pre-request`.
    pub fn with_pre_request(client: Client, schema: &str) -> Self {
        let mut api = Api::for_schema(client, schema);
        api.config.pre_request = Some("saas.pre_request".into());
        api
    }

    /// `POST /rpc/<function>` with a JSON object of named arguments.
    pub fn rpc(&self, function: &str, args: Value) -> RequestBuilder<'_> {
        self.request(
            Method::Post,
            Target::Rpc {
                function: function.into(),
                args,
            },
        )
    }

    /// `GET /rpc/<function>?args`: always a read-only transaction.
    pub fn rpc_get(&self, function: &str, args: Value) -> RequestBuilder<'_> {
        self.request(
            Method::Get,
            Target::Rpc {
                function: function.into(),
                args,
            },
        )
    }

    pub fn get(&self, table: &str) -> RequestBuilder<'_> {
        self.request(
            Method::Get,
            Target::Table {
                table: table.into(),
            },
        )
    }

    pub fn insert(&self, table: &str, rows: Value) -> RequestBuilder<'_> {
        let mut r = self.request(
            Method::Post,
            Target::Table {
                table: table.into(),
            },
        );
        r.body = Some(rows);
        r
    }

    pub fn update(&self, table: &str, set: Value) -> RequestBuilder<'_> {
        let mut r = self.request(
            Method::Patch,
            Target::Table {
                table: table.into(),
            },
        );
        r.body = Some(set);
        r
    }

    pub fn delete(&self, table: &str) -> RequestBuilder<'_> {
        self.request(
            Method::Delete,
            Target::Table {
                table: table.into(),
            },
        )
    }

    fn request(&self, method: Method, target: Target) -> RequestBuilder<'_> {
        RequestBuilder {
            api: self,
            method,
            target,
            claims: None,
            headers: Vec::new(),
            cookies: Vec::new(),
            filters: Vec::new(),
            order: Vec::new(),
            body: None,
            representation: false,
        }
    }
}

impl<'a> RequestBuilder<'a> {
    /// The verified JWT payload (PostgREST checks the signature; we start after).
    pub fn claims(mut self, claims: Value) -> Self {
        self.claims = Some(claims);
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn cookie(mut self, name: &str, value: &str) -> Self {
        self.cookies.push((name.to_string(), value.to_string()));
        self
    }

    fn filter(mut self, column: &str, op: &'static str, value: Option<String>) -> Self {
        self.filters.push(Filter {
            column: column.into(),
            op,
            value,
            values: vec![],
        });
        self
    }

    pub fn eq(self, column: &str, value: impl ToString) -> Self {
        self.filter(column, "=", Some(value.to_string()))
    }

    pub fn neq(self, column: &str, value: impl ToString) -> Self {
        self.filter(column, "<>", Some(value.to_string()))
    }

    pub fn gt(self, column: &str, value: impl ToString) -> Self {
        self.filter(column, ">", Some(value.to_string()))
    }

    pub fn lt(self, column: &str, value: impl ToString) -> Self {
        self.filter(column, "<", Some(value.to_string()))
    }

    // A builder step named for the SQL it adds (IS NULL), not a predicate.
    #[allow(clippy::wrong_self_convention)]
    pub fn is_null(self, column: &str) -> Self {
        self.filter(column, "IS NULL", None)
    }

    pub fn in_list<T: ToString>(mut self, column: &str, values: &[T]) -> Self {
        self.filters.push(Filter {
            column: column.into(),
            op: "IN",
            value: None,
            values: values.iter().map(|v| v.to_string()).collect(),
        });
        self
    }

    pub fn order(mut self, column: &str) -> Self {
        self.order.push(column.into());
        self
    }

    /// `Prefer: return=representation`.
    pub fn representation(mut self) -> Self {
        self.representation = true;
        self
    }

    pub async fn send(self) -> Response {
        let api = self.api;
        let client = &api.client;
        let role = self
            .claims
            .as_ref()
            .and_then(|c| c.get("role"))
            .and_then(Value::as_str)
            .unwrap_or(&api.config.anon_role)
            .to_string();
        let anonymous = self.claims.is_none();

        // What PostgREST knows from its schema cache before it opens the transaction.
        let (read_only, main_sql, main_param) = match self.plan().await {
            Ok(plan) => plan,
            Err(resp) => return resp,
        };

        let begin = if read_only {
            "BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY"
        } else {
            "BEGIN ISOLATION LEVEL READ COMMITTED READ WRITE"
        };
        client.batch_execute(begin).await.expect("BEGIN");

        let result = self.run_in_transaction(&role, &main_sql, &main_param).await;
        match result {
            Ok((body, rows, headers, status)) => {
                client.batch_execute("COMMIT").await.expect("COMMIT");
                let default_status = match (self.method, &self.target) {
                    (Method::Post, Target::Table { .. }) => 201,
                    (Method::Patch | Method::Delete, _) if !self.representation => 204,
                    _ => 200,
                };
                Response {
                    status: status.unwrap_or(default_status),
                    headers,
                    body,
                    error: None,
                    rows,
                }
            }
            Err(e) => {
                client.batch_execute("ROLLBACK").await.expect("ROLLBACK");
                error_response(&e, anonymous)
            }
        }
    }

    async fn run_in_transaction(
        &self,
        role: &str,
        main_sql: &str,
        main_param: &str,
    ) -> Result<(Value, u64, Vec<(String, String)>, Option<u16>), tokio_postgres::Error> {
        let api = self.api;
        let client = &api.client;
        let path = match &self.target {
            Target::Rpc { function, .. } => format!("/rpc/{function}"),
            Target::Table { table } => format!("/{table}"),
        };
        let headers: Map<String, Value> = self
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), Value::String(v.clone())))
            .collect();
        let cookies: Map<String, Value> = self
            .cookies
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        // Anonymous requests carry the anon role as their only claim, as PostgREST does.
        let claims = self
            .claims
            .clone()
            .unwrap_or_else(|| json!({ "role": role }));
        let search_path = std::iter::once(&api.config.schemas[0])
            .chain(api.config.extra_search_path.iter())
            .map(|s| quote_ident(s))
            .collect::<Vec<_>>()
            .join(", ");
        client
            .execute(
                "SELECT set_config('search_path', $1, true), set_config('role', $2, true), \
                        set_config('request.jwt.claims', $3, true), set_config('request.method', $4, true), \
                        set_config('request.path', $5, true), set_config('request.headers', $6, true), \
                        set_config('request.cookies', $7, true)",
                &[
                    &search_path,
                    &role,
                    &claims.to_string(),
                    &self.method.as_str(),
                    &path,
                    &Value::Object(headers).to_string(),
                    &Value::Object(cookies).to_string(),
                ],
            )
            .await?;
        if let Some(pre) = &api.config.pre_request {
            client.batch_execute(&format!("SELECT {pre}()")).await?;
        }
        let row = client.query_one(main_sql, &[&main_param]).await?;
        let body: Option<Value> = row.get(0);
        let rows: i64 = row.get(1);
        let guc = client
            .query_one(
                "SELECT current_setting('response.headers', true), current_setting('response.status', true)",
                &[],
            )
            .await?;
        let headers = parse_response_headers(guc.get::<_, Option<String>>(0).as_deref());
        let status = guc
            .get::<_, Option<String>>(1)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.trim()
                    .parse::<u16>()
                    .expect("response.status must be an integer (PGRST112)")
            });
        Ok((body.unwrap_or(Value::Null), rows as u64, headers, status))
    }

    /// Builds the main query (one text parameter: the JSON body) and decides
    /// the access mode, from the catalog as PostgREST's schema cache would.
    async fn plan(&self) -> Result<(bool, String, String), Response> {
        let schema = &self.api.config.schemas[0];
        match &self.target {
            Target::Rpc { function, args } => {
                let rows = self
                    .api
                    .client
                    .query(
                        "SELECT p.provolatile::text, p.proretset, \
                                (t.typtype = 'c' OR p.prorettype = 'pg_catalog.record'::regtype), \
                                p.prorettype = 'pg_catalog.void'::regtype, \
                                coalesce(p.proargnames, '{}'), \
                                array(SELECT pg_catalog.format_type(x, NULL) FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY u(x, n) ORDER BY n) \
                         FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_type t ON t.oid = p.prorettype \
                         WHERE p.pronamespace = $1::text::regnamespace AND p.proname = $2",
                        &[&schema, function],
                    )
                    .await
                    .expect("schema cache query");
                if rows.len() != 1 {
                    return Err(pgrst_error(
                        404,
                        "PGRST202",
                        &format!(
                            "Could not find the function {schema}.{function} in the schema cache"
                        ),
                    ));
                }
                let r = &rows[0];
                let volatility: String = r.get(0);
                let retset: bool = r.get(1);
                let composite: bool = r.get(2);
                let void: bool = r.get(3);
                let names: Vec<String> = r.get(4);
                let types: Vec<String> = r.get(5);
                let args = args.as_object().cloned().unwrap_or_default();
                let mut defs = Vec::new();
                let mut call = Vec::new();
                for key in args.keys() {
                    let Some(pos) = names.iter().position(|n| n == key) else {
                        return Err(pgrst_error(
                            404,
                            "PGRST202",
                            &format!("{schema}.{function} has no parameter {key}"),
                        ));
                    };
                    defs.push(format!("{} {}", quote_ident(key), types[pos]));
                    call.push(format!("{k} := pgrst_args.{k}", k = quote_ident(key)));
                }
                let fcall = format!(
                    "{}.{}({})",
                    quote_ident(schema),
                    quote_ident(function),
                    call.join(", ")
                );
                let from = if defs.is_empty() {
                    String::new()
                } else {
                    format!(
                        " FROM json_to_record($1::text::json) AS pgrst_args({})",
                        defs.join(", ")
                    )
                };
                let main = if retset || composite {
                    let src = if defs.is_empty() {
                        format!("SELECT pgrst_call.* FROM {fcall} pgrst_call WHERE $1::text IS NOT NULL")
                    } else {
                        format!("SELECT pgrst_call.*{from}, LATERAL {fcall} pgrst_call")
                    };
                    // A set gives a JSON array; a single composite, one object.
                    let agg = if retset && !composite {
                        // SETOF a scalar: an array of the values themselves.
                        "coalesce(jsonb_agg((SELECT e.v FROM jsonb_each(to_jsonb(pgrst_source)) e(k, v))), '[]'::jsonb)"
                    } else if retset {
                        "coalesce(jsonb_agg(to_jsonb(pgrst_source)), '[]'::jsonb)"
                    } else {
                        "to_jsonb((array_agg(pgrst_source))[1])"
                    };
                    format!("WITH pgrst_source AS ({src}) SELECT {agg}, count(*) FROM pgrst_source")
                } else if void {
                    let src = format!("SELECT {fcall}{from}");
                    let src = if defs.is_empty() {
                        format!("{src} WHERE $1::text IS NOT NULL")
                    } else {
                        src
                    };
                    format!("WITH pgrst_source AS ({src}) SELECT NULL::jsonb, count(*) FROM pgrst_source")
                } else {
                    let src = format!("SELECT {fcall} AS pgrst_scalar{from}");
                    let src = if defs.is_empty() {
                        format!("{src} WHERE $1::text IS NOT NULL")
                    } else {
                        src
                    };
                    format!(
                        "WITH pgrst_source AS ({src}) SELECT to_jsonb((array_agg(pgrst_scalar))[1]), count(*) FROM pgrst_source"
                    )
                };
                let read_only =
                    matches!(self.method, Method::Get | Method::Head) || volatility != "v";
                Ok((read_only, main, Value::Object(args).to_string()))
            }
            Target::Table { table } => {
                let qt = format!("{}.{}", quote_ident(schema), quote_ident(table));
                let filter = self.where_clause();
                let ret = if self.representation {
                    "pgrst_t.*"
                } else {
                    "1"
                };
                let body = self.body.clone().unwrap_or(Value::Null);
                let main = match self.method {
                    Method::Get | Method::Head => {
                        let order = if self.order.is_empty() {
                            String::new()
                        } else {
                            format!(
                                " ORDER BY {}",
                                self.order
                                    .iter()
                                    .map(|c| quote_ident(c))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        };
                        format!(
                            "WITH pgrst_source AS (SELECT pgrst_t.* FROM {qt} pgrst_t{filter}{order}) \
                             SELECT coalesce(jsonb_agg(to_jsonb(pgrst_source)), '[]'::jsonb), count(*) \
                             FROM pgrst_source WHERE $1::text IS NOT NULL"
                        )
                    }
                    Method::Post => {
                        let rows = match &body {
                            Value::Array(a) => a.clone(),
                            other => vec![other.clone()],
                        };
                        // PostgREST takes the columns from the payload's keys, so
                        // omitted columns get their defaults.
                        let cols: Vec<String> = rows
                            .first()
                            .and_then(Value::as_object)
                            .map(|o| o.keys().map(|k| quote_ident(k)).collect())
                            .unwrap_or_default();
                        let cols = cols.join(", ");
                        let sel = self.ret_alias(ret);
                        format!(
                            "WITH pgrst_source AS (INSERT INTO {qt} AS pgrst_t ({cols}) \
                             SELECT {cols} FROM json_populate_recordset(NULL::{qt}, $1::text::json) RETURNING {sel}) \
                             SELECT {agg}, count(*) FROM pgrst_source",
                            agg = self.ret_agg()
                        )
                    }
                    Method::Patch => {
                        let cols: Vec<String> = body
                            .as_object()
                            .map(|o| o.keys().map(|k| quote_ident(k)).collect())
                            .unwrap_or_default();
                        let set = cols
                            .iter()
                            .map(|c| format!("{c} = pgrst_body.{c}"))
                            .collect::<Vec<_>>()
                            .join(", ");
                        let filter = if filter.is_empty() {
                            String::new()
                        } else {
                            filter.replacen(" WHERE ", " AND ", 1)
                        };
                        let sel = self.ret_alias(ret);
                        format!(
                            "WITH pgrst_source AS (UPDATE {qt} AS pgrst_t SET {set} \
                             FROM (SELECT * FROM json_populate_record(NULL::{qt}, $1::text::json)) pgrst_body \
                             WHERE true{filter} RETURNING {sel}) \
                             SELECT {agg}, count(*) FROM pgrst_source",
                            agg = self.ret_agg()
                        )
                    }
                    Method::Delete => {
                        let sel = self.ret_alias(ret);
                        format!(
                            "WITH pgrst_source AS (DELETE FROM {qt} AS pgrst_t{filter} RETURNING {sel}) \
                             SELECT {agg}, count(*) FROM pgrst_source WHERE $1::text IS NOT NULL",
                            agg = self.ret_agg()
                        )
                    }
                };
                // PostgREST accepts one object or an array of them for inserts.
                let body = match (self.method, body) {
                    (Method::Post, Value::Object(o)) => Value::Array(vec![Value::Object(o)]),
                    (_, b) => b,
                };
                let read_only = matches!(self.method, Method::Get | Method::Head);
                Ok((read_only, main, body.to_string()))
            }
        }
    }

    fn ret_alias(&self, ret: &str) -> String {
        if self.representation {
            ret.to_string()
        } else {
            "1 AS pgrst_one".to_string()
        }
    }

    fn ret_agg(&self) -> &'static str {
        if self.representation {
            "coalesce(jsonb_agg(to_jsonb(pgrst_source)), '[]'::jsonb)"
        } else {
            "NULL::jsonb"
        }
    }

    fn where_clause(&self) -> String {
        if self.filters.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = self
            .filters
            .iter()
            .map(|f| {
                let col = format!("pgrst_t.{}", quote_ident(&f.column));
                match (f.op, &f.value) {
                    ("IS NULL", _) => format!("{col} IS NULL"),
                    ("IN", _) => format!(
                        "{col} IN ({})",
                        f.values
                            .iter()
                            .map(|v| quote_literal(v))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    (op, Some(v)) => format!("{col} {op} {}", quote_literal(v)),
                    (op, None) => panic!("filter {op} needs a value"),
                }
            })
            .collect();
        format!(" WHERE {}", parts.join(" AND "))
    }
}

/// `"name"` with embedded quotes doubled, as PostgreSQL's quote_ident.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled (standard_conforming_strings is on).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn pgrst_error(status: u16, code: &str, message: &str) -> Response {
    let error = ApiError {
        code: code.into(),
        message: message.into(),
        details: None,
        hint: None,
    };
    Response {
        status,
        headers: vec![],
        body: error_body(&error),
        error: Some(error),
        rows: 0,
    }
}

fn error_body(e: &ApiError) -> Value {
    json!({ "code": e.code, "message": e.message, "details": e.details, "hint": e.hint })
}

/// `response.headers`: a JSON array of single-key objects.
pub fn parse_response_headers(raw: Option<&str>) -> Vec<(String, String)> {
    let Some(raw) = raw.filter(|s| !s.is_empty()) else {
        return vec![];
    };
    let v: Value = serde_json::from_str(raw).expect("response.headers must be JSON (PGRST111)");
    v.as_array()
        .expect("response.headers must be a JSON array (PGRST111)")
        .iter()
        .flat_map(|o| {
            o.as_object()
                .expect("response.headers entries must be objects (PGRST111)")
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// PostgREST's SQLSTATE -> HTTP status table (v12, references/errors).
pub fn http_status(sqlstate: &str, anonymous: bool) -> u16 {
    if let Some(n) = sqlstate.strip_prefix("PT") {
        if let Ok(status) = n.parse::<u16>() {
            return status;
        }
    }
    match sqlstate {
        "23503" | "23505" => return 409,
        "25006" => return 405,
        "53400" => return 500,
        "P0001" => return 400,
        "42883" | "42P01" => return 404,
        "42P17" => return 500,
        "42501" => return if anonymous { 401 } else { 403 },
        _ => {}
    }
    match &sqlstate[..2.min(sqlstate.len())] {
        "08" | "53" => 503,
        "0L" | "0P" | "28" => 403,
        "09" | "25" | "2D" | "38" | "39" | "3B" | "40" | "54" | "55" | "57" | "58" | "F0"
        | "HV" | "P0" | "XX" => 500,
        _ => 400,
    }
}

fn error_response(e: &tokio_postgres::Error, anonymous: bool) -> Response {
    let Some(db) = e.as_db_error() else {
        panic!("not a database error (the connection broke?): {e}");
    };
    let code = db.code().code().to_string();
    if code == "PGRST" {
        // RAISE SQLSTATE 'PGRST' USING MESSAGE = '{"code",...}', DETAIL = '{"status","headers"}'
        let msg: Value = serde_json::from_str(db.message())
            .unwrap_or_else(|_| panic!("PGRST error whose MESSAGE is not JSON: {}", db.message()));
        let detail: Value = db
            .detail()
            .map(|d| {
                serde_json::from_str(d)
                    .unwrap_or_else(|_| panic!("PGRST error whose DETAIL is not JSON: {d}"))
            })
            .unwrap_or(Value::Null);
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let error = ApiError {
            code: s(&msg, "code").unwrap_or_default(),
            message: s(&msg, "message").unwrap_or_default(),
            details: s(&msg, "details"),
            hint: s(&msg, "hint"),
        };
        let status = detail
            .get("status")
            .and_then(Value::as_u64)
            .expect("PGRST DETAIL needs a status") as u16;
        let headers = detail
            .get("headers")
            .and_then(Value::as_object)
            .map(|h| {
                h.iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            v.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| v.to_string()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        return Response {
            status,
            headers,
            body: error_body(&error),
            error: Some(error),
            rows: 0,
        };
    }
    let error = ApiError {
        code: code.clone(),
        message: db.message().to_string(),
        details: db.detail().map(str::to_string),
        hint: db.hint().map(str::to_string),
    };
    Response {
        status: http_status(&code, anonymous),
        headers: vec![],
        body: error_body(&error),
        error: Some(error),
        rows: 0,
    }
}

/// A fresh v4-shaped uuid per call, for tests whose state outlives a run
/// (the append-only audit log, shared-memory rate limits): each run uses
/// tenants, users and keys of its own.
pub fn random_uuid() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    let a = h.finish();
    h.write_u64(a);
    let b = h.finish();
    let x = ((a as u128) << 64) | b as u128;
    let s = format!("{x:032x}");
    format!(
        "{}-{}-4{}-8{}-{}",
        &s[0..8],
        &s[8..12],
        &s[13..16],
        &s[17..20],
        &s[20..32]
    )
}

/// A server error with its SQLSTATE, message, HINT and context (an error's
/// Display shows only "db error").
pub fn pg_err(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!(
            "{}: {} (hint: {:?}, where: {:?})",
            d.code().code(),
            d.message(),
            d.hint(),
            d.where_()
        ),
        None => e.to_string(),
    }
}

/// A connection to database `db` of the cluster `url` names (libpq takes
/// the last dbname given).
pub async fn connect_to(url: &str, db: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(&format!("{url} dbname={db}"), NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {db}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Drops database `db` if it is there (closing its connections) and
/// creates it empty.
pub async fn recreate_db(admin: &Client, db: &str) {
    for sql in [
        format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"),
        format!("CREATE DATABASE {db}"),
    ] {
        admin
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {}", pg_err(&e)));
    }
}
