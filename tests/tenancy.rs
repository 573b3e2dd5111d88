//! Tenancy through the PostgREST request path: random sequences of reads,
//! inserts, updates and deletes by users of three tenants (some in two,
//! switching by header) never see, change or delete another tenant's row.

mod common;

use common::{Api, Response};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;
use std::collections::BTreeMap;
use tokio_postgres::Client;

const TENANTS: [&str; 4] = [
    "a0000000-0000-4000-8000-00000000000a",
    "b0000000-0000-4000-8000-00000000000b",
    "c0000000-0000-4000-8000-00000000000c",
    "d0000000-0000-4000-8000-00000000000d", // suspended
];
const SUSPENDED: usize = 3;

const U_A: &str = "a1000000-0000-4000-8000-0000000000a1";
const U_B: &str = "b1000000-0000-4000-8000-0000000000b1";
const U_C: &str = "c1000000-0000-4000-8000-0000000000c1";
const U_AB: &str = "ab000000-0000-4000-8000-0000000000ab";
const U_BC: &str = "bc000000-0000-4000-8000-0000000000bc";

/// Tenants, memberships, roles and two tenant tables (plain and partitioned)
/// in `schema`, isolated with enable_tenancy.
async fn fixture(client: &Client, schema: &str) {
    let t = TENANTS;
    // Shared rows and grants: one test at a time, under the shared-setup lock.
    // This test's own schema is created after that transaction, outside the lock.
    common::shared_setup(
        client,
        &format!(
            r#"
            INSERT INTO saas.tenants (id, slug, name, status) VALUES
              ('{a}', 'acme', 'Acme', 'active'), ('{b}', 'globex', 'Globex', 'active'),
              ('{c}', 'initech', 'Initech', 'active'), ('{d}', 'dormant', 'Dormant', 'suspended')
              ON CONFLICT DO NOTHING;
            INSERT INTO saas.memberships (tenant_id, user_id, role) VALUES
              ('{a}', '{ua}', 'owner'), ('{b}', '{ub}', 'admin'), ('{c}', '{uc}', 'viewer'),
              ('{a}', '{uab}', 'member'), ('{b}', '{uab}', 'viewer'),
              ('{b}', '{ubc}', 'member'), ('{c}', '{ubc}', 'admin'), ('{d}', '{ubc}', 'owner')
              ON CONFLICT DO NOTHING;
            "#,
            a = t[0],
            b = t[1],
            c = t[2],
            d = t[3],
            ua = U_A,
            ub = U_B,
            uc = U_C,
            uab = U_AB,
            ubc = U_BC,
        ),
    )
    .await
    .expect("tenancy fixture");
    client
        .batch_execute(&format!(
            r#"
            DROP SCHEMA IF EXISTS {s} CASCADE;
            CREATE SCHEMA {s};
            GRANT USAGE ON SCHEMA {s} TO anon, authenticated;
            CREATE TABLE {s}.docs (
              id bigint GENERATED ALWAYS AS IDENTITY,
              tenant_id uuid NOT NULL,
              body text NOT NULL,
              PRIMARY KEY (tenant_id, id));
            CREATE TABLE {s}.logs (
              id bigint GENERATED ALWAYS AS IDENTITY,
              tenant_id uuid NOT NULL,
              at timestamptz NOT NULL,
              body text NOT NULL,
              PRIMARY KEY (tenant_id, id, at)) PARTITION BY RANGE (at);
            CREATE TABLE {s}.logs_2026_11 PARTITION OF {s}.logs FOR VALUES FROM ('2026-11-01') TO ('2026-12-01');
            CREATE TABLE {s}.logs_2026_12 PARTITION OF {s}.logs FOR VALUES FROM ('2026-12-01') TO ('2027-01-01');
            SELECT saas.enable_tenancy('{s}.docs');
            SELECT saas.enable_tenancy('{s}.logs');
            GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO anon, authenticated;
            CREATE FUNCTION {s}.whoami() RETURNS jsonb STABLE LANGUAGE sql AS $f$
              SELECT jsonb_build_object('tenant', saas.current_tenant(), 'user', saas.current_user_id(),
                                        'admin', saas.has_role('admin'))
            $f$;
            GRANT EXECUTE ON FUNCTION {s}.whoami() TO anon, authenticated;
            "#,
            s = schema,
        ))
        .await
        .expect("tenancy fixture");
}

/// How a request says who it is and which tenant it wants.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// JWT with a tenant claim.
    Claim { user: &'static str, tenant: usize },
    /// JWT with only `sub`, and an X-Tenant-Id header for a tenant the user is in.
    Header { user: &'static str, tenant: usize },
    /// JWT with only `sub`, and a header for a tenant the user is NOT in.
    Intruder { user: &'static str, tenant: usize },
    /// No JWT.
    Anon,
}

const ACTORS: [Via; 9] = [
    Via::Claim {
        user: U_A,
        tenant: 0,
    },
    Via::Claim {
        user: U_B,
        tenant: 1,
    },
    Via::Claim {
        user: U_C,
        tenant: 2,
    },
    Via::Header {
        user: U_AB,
        tenant: 0,
    },
    Via::Header {
        user: U_AB,
        tenant: 1,
    },
    Via::Header {
        user: U_BC,
        tenant: 1,
    },
    Via::Header {
        user: U_BC,
        tenant: 2,
    },
    Via::Intruder {
        user: U_AB,
        tenant: 2,
    },
    Via::Anon,
];

impl Via {
    /// The tenant whose rows this actor may touch, if any.
    fn tenant(self) -> Option<usize> {
        match self {
            Via::Claim { tenant, .. } | Via::Header { tenant, .. } => Some(tenant),
            Via::Intruder { .. } | Via::Anon => None,
        }
    }

    fn sign<'a>(self, req: common::RequestBuilder<'a>) -> common::RequestBuilder<'a> {
        match self {
            Via::Claim { user, tenant } => req.claims(
                json!({"role": "authenticated", "sub": user, "tenant_id": TENANTS[tenant]}),
            ),
            Via::Header { user, tenant } | Via::Intruder { user, tenant } => req
                .claims(json!({"role": "authenticated", "sub": user}))
                .header("X-Tenant-Id", TENANTS[tenant]),
            Via::Anon => req,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Table {
    Docs,
    Logs,
}

impl Table {
    fn name(self) -> &'static str {
        match self {
            Table::Docs => "docs",
            Table::Logs => "logs",
        }
    }
}

#[derive(Clone, Debug)]
enum Op {
    Read {
        actor: usize,
        table: Table,
    },
    /// `claimed`: the tenant_id the client puts in the row, if it sets one.
    Insert {
        actor: usize,
        table: Table,
        claimed: Option<usize>,
        december: bool,
    },
    /// `target` picks a row among all rows of the table, any tenant's.
    Update {
        actor: usize,
        table: Table,
        target: usize,
    },
    Delete {
        actor: usize,
        table: Table,
        target: usize,
    },
    MoveToTenant {
        actor: usize,
        table: Table,
        target: usize,
        to: usize,
    },
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let actor = 0..ACTORS.len();
    let table = prop_oneof![Just(Table::Docs), Just(Table::Logs)];
    prop_oneof![
        2 => (actor.clone(), table.clone()).prop_map(|(actor, table)| Op::Read { actor, table }),
        4 => (actor.clone(), table.clone(), proptest::option::weighted(0.3, 0..3usize), any::<bool>())
            .prop_map(|(actor, table, claimed, december)| Op::Insert { actor, table, claimed, december }),
        2 => (actor.clone(), table.clone(), 0..64usize)
            .prop_map(|(actor, table, target)| Op::Update { actor, table, target }),
        2 => (actor.clone(), table.clone(), 0..64usize)
            .prop_map(|(actor, table, target)| Op::Delete { actor, table, target }),
        1 => (actor, table, 0..64usize, 0..3usize)
            .prop_map(|(actor, table, target, to)| Op::MoveToTenant { actor, table, target, to }),
    ]
}

/// What the database must hold: (table, id) -> (tenant, body).
type Model = BTreeMap<(Table, i64), (usize, String)>;

fn tenant_index(uuid: &str) -> usize {
    TENANTS
        .iter()
        .position(|t| *t == uuid)
        .unwrap_or_else(|| panic!("unknown tenant {uuid}"))
}

/// The status an actor without a usable tenant gets.
fn expect_denied(via: Via, r: &Response, what: &str) -> Result<(), TestCaseError> {
    match via {
        Via::Intruder { .. } => {
            prop_assert_eq!(
                r.status,
                403,
                "{}: a non-member's header must be refused: {:?}",
                what,
                r.error
            );
            prop_assert_eq!(r.code(), Some("42501"));
        }
        _ => prop_assert!(false, "{what}: unexpected denial {:?}", r.error),
    }
    Ok(())
}

async fn run_op(
    api: &Api,
    model: &mut Model,
    counter: &mut u64,
    op: &Op,
) -> Result<(), TestCaseError> {
    let rows_of = |model: &Model, table: Table| -> Vec<(i64, usize, String)> {
        model
            .iter()
            .filter(|((t, _), _)| *t == table)
            .map(|((_, id), (ten, b))| (*id, *ten, b.clone()))
            .collect()
    };
    match *op {
        Op::Read { actor, table } => {
            let via = ACTORS[actor];
            let r = via.sign(api.get(table.name()).order("id")).send().await;
            if matches!(via, Via::Intruder { .. }) {
                return expect_denied(via, &r, "read");
            }
            prop_assert_eq!(r.status, 200, "{:?}", r.error);
            let got: Vec<(i64, usize, String)> = r
                .body
                .as_array()
                .unwrap()
                .iter()
                .map(|row| {
                    (
                        row["id"].as_i64().unwrap(),
                        tenant_index(row["tenant_id"].as_str().unwrap()),
                        row["body"].as_str().unwrap().to_string(),
                    )
                })
                .collect();
            let want: Vec<(i64, usize, String)> = rows_of(model, table)
                .into_iter()
                .filter(|(_, t, _)| Some(*t) == via.tenant())
                .collect();
            prop_assert_eq!(got, want, "{:?} saw the wrong rows", via);
        }
        Op::Insert {
            actor,
            table,
            claimed,
            december,
        } => {
            let via = ACTORS[actor];
            *counter += 1;
            let body = format!("row-{counter}");
            let mut row = json!({"body": body});
            if let Some(t) = claimed {
                row["tenant_id"] = json!(TENANTS[t]);
            }
            if table == Table::Logs {
                row["at"] = json!(if december {
                    "2026-12-10T10:00:00Z"
                } else {
                    "2026-11-10T10:00:00Z"
                });
            }
            let r = via
                .sign(api.insert(table.name(), row).representation())
                .send()
                .await;
            match (via.tenant(), claimed) {
                (None, _) if matches!(via, Via::Intruder { .. }) => {
                    return expect_denied(via, &r, "insert")
                }
                (None, _) => {
                    // Anonymous: no tenant, the row violates the policy.
                    prop_assert_eq!(r.status, 401, "anonymous insert must fail: {:?}", r.error);
                    prop_assert_eq!(r.code(), Some("42501"));
                }
                (Some(mine), Some(other)) if other != mine => {
                    prop_assert_eq!(
                        r.status,
                        403,
                        "insert for another tenant must fail: {:?}",
                        r.error
                    );
                    prop_assert_eq!(r.code(), Some("42501"));
                }
                (Some(mine), _) => {
                    prop_assert_eq!(r.status, 201, "{:?}", r.error);
                    let new = &r.body[0];
                    prop_assert_eq!(
                        tenant_index(new["tenant_id"].as_str().unwrap()),
                        mine,
                        "filled with the request's tenant"
                    );
                    model.insert((table, new["id"].as_i64().unwrap()), (mine, body));
                }
            }
        }
        Op::Update {
            actor,
            table,
            target,
        }
        | Op::Delete {
            actor,
            table,
            target,
        } => {
            let via = ACTORS[actor];
            let rows = rows_of(model, table);
            let Some((id, owner, _)) = rows.get(target % rows.len().max(1)).cloned() else {
                return Ok(());
            };
            let is_delete = matches!(op, Op::Delete { .. });
            *counter += 1;
            let new_body = format!("edit-{counter}");
            let req = if is_delete {
                api.delete(table.name()).eq("id", id)
            } else {
                api.update(table.name(), json!({"body": new_body}))
                    .eq("id", id)
            };
            let r = via.sign(req).send().await;
            if matches!(via, Via::Intruder { .. }) {
                return expect_denied(via, &r, "write");
            }
            prop_assert_eq!(r.status, 204, "{:?}", r.error);
            let mine = via.tenant() == Some(owner);
            prop_assert_eq!(
                r.rows,
                u64::from(mine),
                "{:?} touched row {} of tenant {}",
                via,
                id,
                owner
            );
            if mine {
                if is_delete {
                    model.remove(&(table, id));
                } else {
                    model.insert((table, id), (owner, new_body));
                }
            }
        }
        Op::MoveToTenant {
            actor,
            table,
            target,
            to,
        } => {
            let via = ACTORS[actor];
            let rows = rows_of(model, table);
            let Some((id, owner, _)) = rows.get(target % rows.len().max(1)).cloned() else {
                return Ok(());
            };
            let r = via
                .sign(
                    api.update(table.name(), json!({"tenant_id": TENANTS[to]}))
                        .eq("id", id),
                )
                .send()
                .await;
            if matches!(via, Via::Intruder { .. }) {
                return expect_denied(via, &r, "move");
            }
            match via.tenant() {
                Some(mine) if mine == owner && to != owner => {
                    prop_assert_eq!(
                        r.status,
                        403,
                        "moving a row to another tenant must fail: {:?}",
                        r.error
                    );
                }
                Some(mine) if mine == owner => prop_assert_eq!(r.rows, 1),
                _ => prop_assert_eq!(
                    (r.status, r.rows),
                    (204, 0),
                    "another tenant's row is invisible"
                ),
            }
        }
    }
    Ok(())
}

/// What the tables hold, read past RLS by the superuser connection.
async fn actual(admin: &Client, schema: &str) -> Model {
    let mut m = Model::new();
    for table in [Table::Docs, Table::Logs] {
        for row in admin
            .query(
                &format!(
                    "SELECT id, tenant_id::text, body FROM {schema}.{} ",
                    table.name()
                ),
                &[],
            )
            .await
            .unwrap()
        {
            let tenant: String = row.get(1);
            m.insert((table, row.get(0)), (tenant_index(&tenant), row.get(2)));
        }
    }
    m
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn random_request_sequences_never_cross_tenants() {
    let rt = runtime();
    let Some(admin) = rt.block_on(common::connect(
        "random_request_sequences_never_cross_tenants",
    )) else {
        return;
    };
    let api_client = rt
        .block_on(common::connect(
            "random_request_sequences_never_cross_tenants",
        ))
        .unwrap();
    let schema = "it_tenancy_prop";
    rt.block_on(fixture(&admin, schema));
    let api = Api::with_pre_request(api_client, schema);

    let cases: u32 = std::env::var("TENANCY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let requests = std::cell::Cell::new(0u64);
    runner
        .run(&proptest::collection::vec(op_strategy(), 1..12), |ops| {
            rt.block_on(async {
                admin
                    .batch_execute(&format!(
                        "DELETE FROM {schema}.docs; DELETE FROM {schema}.logs"
                    ))
                    .await
                    .unwrap();
                let mut model = Model::new();
                let mut counter = 0u64;
                for op in &ops {
                    run_op(&api, &mut model, &mut counter, op).await?;
                    requests.set(requests.get() + 1);
                }
                prop_assert_eq!(
                    actual(&admin, schema).await,
                    model,
                    "the tables drifted from the model"
                );
                Ok(())
            })
        })
        .unwrap();
    eprintln!(
        "tenancy property: {cases} sequences, {} requests, no cross-tenant access",
        requests.get()
    );
}

#[tokio::test]
async fn anonymous_suspended_and_intruders() {
    let admin = db_or_skip!("anonymous_suspended_and_intruders");
    let schema = "it_tenancy_edges";
    fixture(&admin, schema).await;
    admin
        .batch_execute(&format!(
            "SELECT saas.set_tenant('{a}'); INSERT INTO {schema}.docs (body) VALUES ('secret of A');",
            a = TENANTS[0]
        ))
        .await
        .unwrap();
    let mut api = Api::with_pre_request(
        common::connect("anonymous_suspended_and_intruders")
            .await
            .unwrap(),
        schema,
    );

    // Anonymous, no claims at all: sees nothing, has no tenant.
    let r = api.get("docs").send().await;
    assert_eq!(
        (r.status, r.body.clone()),
        (200, json!([])),
        "anon must see nothing"
    );
    let r = api.rpc("whoami", json!({})).send().await;
    assert_eq!(
        r.body,
        json!({"tenant": null, "user": null, "admin": false})
    );

    // The tenant claim: GET /rpc/whoami in a READ ONLY transaction resolves it.
    let r = api
        .rpc_get("whoami", json!({}))
        .claims(json!({"role": "authenticated", "sub": U_A, "tenant_id": TENANTS[0]}))
        .send()
        .await;
    assert_eq!(
        r.body,
        json!({"tenant": TENANTS[0], "user": U_A, "admin": true}),
        "{:?}",
        r.error
    );
    let r = api
        .get("docs")
        .claims(json!({"role": "authenticated", "sub": U_A, "tenant_id": TENANTS[0]}))
        .send()
        .await;
    assert_eq!(r.body[0]["body"], "secret of A");

    // A suspended tenant: 403, by claim and by header.
    let r = api
        .get("docs")
        .claims(json!({"role": "authenticated", "sub": U_BC, "tenant_id": TENANTS[SUSPENDED]}))
        .send()
        .await;
    assert_eq!((r.status, r.code()), (403, Some("42501")), "{:?}", r.error);
    assert!(r.error.as_ref().unwrap().message.contains("suspended"));
    let r = api
        .get("docs")
        .claims(json!({"role": "authenticated", "sub": U_BC}))
        .header("X-Tenant-Id", TENANTS[SUSPENDED])
        .send()
        .await;
    assert_eq!(r.status, 403);

    // Without the pre-request hook a query that evaluates no policy (an
    // empty result) cannot fail; with it, a bad tenant context always does.
    api.config.pre_request = None;
    let r = api
        .get("docs")
        .eq("body", "nothing matches")
        .claims(json!({"role": "authenticated", "sub": U_B}))
        .header("X-Tenant-Id", TENANTS[0])
        .send()
        .await;
    assert!(
        r.status == 403 || r.body == json!([]),
        "never rows of a tenant the user is not in"
    );
    api.config.pre_request = Some("saas.pre_request".into());

    // A header for a tenant the user is not in: 403 with a hint.
    let r = api
        .get("docs")
        .claims(json!({"role": "authenticated", "sub": U_B}))
        .header("X-Tenant-Id", TENANTS[0])
        .send()
        .await;
    assert_eq!((r.status, r.code()), (403, Some("42501")));
    assert!(r
        .error
        .as_ref()
        .unwrap()
        .hint
        .as_deref()
        .unwrap()
        .contains("my_memberships"));

    // A malformed header: 400 with the SQLSTATE of bad input.
    let r = api
        .get("docs")
        .claims(json!({"role": "authenticated", "sub": U_B}))
        .header("X-Tenant-Id", "acme")
        .send()
        .await;
    assert_eq!((r.status, r.code()), (400, Some("22023")));

    // set_tenant is not part of the API: an API role cannot call it.
    let r = api.rpc_get("whoami", json!({})).send().await;
    assert_eq!(r.status, 200);
    let denied = admin
        .batch_execute("BEGIN; SET LOCAL ROLE authenticated; SELECT saas.set_tenant(NULL); COMMIT;")
        .await
        .unwrap_err();
    assert_eq!(denied.code().map(|c| c.code()), Some("42501"));
    admin.batch_execute("ROLLBACK").await.unwrap();

    // The user's workspace list, across tenants, for a workspace switcher
    // (with saas among PostgREST's db-schemas).
    api.config.schemas = vec!["saas".into()];
    let r = api
        .rpc("my_memberships", json!({}))
        .claims(json!({"role": "authenticated", "sub": U_BC}))
        .send()
        .await;
    let list: Vec<(&str, &str)> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["slug"].as_str().unwrap(), m["role"].as_str().unwrap()))
        .collect();
    assert_eq!(
        list,
        [
            ("dormant", "owner"),
            ("globex", "member"),
            ("initech", "admin")
        ]
    );
}

/// Each backend keeps the tenants, memberships and plans it resolved; a
/// change committed by another backend reaches it by its next transaction:
/// a removed member, a suspended tenant and a smaller quota all hold on the
/// very next request of a backend that cached the old answer.
#[tokio::test]
async fn directory_changes_reach_backends_that_kept_the_old_answer() {
    let test = "directory_changes_reach_backends_that_kept_the_old_answer";
    let admin = db_or_skip!(test);
    let Some(user) = common::connect(test).await else {
        return;
    };
    let tenant = common::random_uuid();
    let sub = common::random_uuid();
    let plan = format!("it-dir-{}", &tenant[0..8]);
    admin
        .batch_execute(&format!(
            "INSERT INTO saas.plans (plan, api_calls_per_day) VALUES ('{plan}', 1000);
             INSERT INTO saas.tenants (id, slug, name, plan) VALUES ('{tenant}', 'dir-{s}', 'dir', '{plan}');
             INSERT INTO saas.memberships (tenant_id, user_id, role) VALUES ('{tenant}', '{sub}', 'admin');",
            s = &tenant[0..8]
        ))
        .await
        .unwrap();
    // One request as PostgREST makes it: claims naming the tenant, then
    // pre_request; the tenant and role it resolved, or the error's SQLSTATE.
    let request = |path: &'static str| {
        let (user, tenant, sub) = (&user, tenant.clone(), sub.clone());
        async move {
            let claims =
                json!({"role": "authenticated", "sub": sub, "tenant_id": tenant}).to_string();
            user.batch_execute("BEGIN").await.unwrap();
            let out = async {
                user.execute(
                    "SELECT set_config('request.jwt.claims', $1, true), set_config('request.method', 'GET', true),
                            set_config('request.path', $2, true), set_config('request.headers', '{}', true)",
                    &[&claims, &path],
                )
                .await?;
                user.execute("SELECT saas.pre_request()", &[]).await?;
                let row = user
                    .query_one("SELECT saas.current_tenant()::text, saas.has_role('admin')", &[])
                    .await?;
                Ok::<_, tokio_postgres::Error>(format!(
                    "{} admin={}",
                    row.get::<_, Option<String>>(0).unwrap_or_default(),
                    row.get::<_, bool>(1)
                ))
            }
            .await;
            user.batch_execute("ROLLBACK").await.unwrap();
            out.map_err(|e| {
                let db = e.as_db_error().expect("a database error");
                format!("{} {}", db.code().code(), db.message())
            })
        }
    };
    let admitted = format!("{tenant} admin=true");
    assert_eq!(request("/items").await, Ok(admitted.clone()));
    assert_eq!(request("/items").await, Ok(admitted.clone()), "kept");

    // The role changes: seen at once.
    admin
        .execute(
            "UPDATE saas.memberships SET role = 'member' WHERE tenant_id = $1::text::uuid",
            &[&tenant],
        )
        .await
        .unwrap();
    assert_eq!(request("/items").await, Ok(format!("{tenant} admin=false")));

    // A smaller quota: the next request is refused.
    admin
        .execute(
            "UPDATE saas.plans SET api_calls_per_day = 3 WHERE plan = $1",
            &[&plan],
        )
        .await
        .unwrap();
    let refused = request("/items").await.unwrap_err();
    assert!(
        refused.starts_with("PGRST"),
        "quota of 3 after 3 calls: {refused}"
    );

    // Suspended: refused; active again: admitted (exempt path, past quota).
    admin
        .execute(
            "UPDATE saas.tenants SET status = 'suspended' WHERE id = $1::text::uuid",
            &[&tenant],
        )
        .await
        .unwrap();
    let suspended = request("/rpc/usage_report").await.unwrap_err();
    assert!(
        suspended.starts_with("42501") && suspended.contains("suspended"),
        "{suspended}"
    );
    admin
        .execute(
            "UPDATE saas.tenants SET status = 'active' WHERE id = $1::text::uuid",
            &[&tenant],
        )
        .await
        .unwrap();
    assert_eq!(
        request("/rpc/usage_report").await,
        Ok(format!("{tenant} admin=false"))
    );

    // Removed: the token still names the tenant, the request is refused.
    admin
        .execute(
            "DELETE FROM saas.memberships WHERE tenant_id = $1::text::uuid",
            &[&tenant],
        )
        .await
        .unwrap();
    let removed = request("/rpc/usage_report").await.unwrap_err();
    assert!(
        removed.starts_with("42501") && removed.contains("not a member"),
        "{removed}"
    );

    admin
        .batch_execute(&format!(
            "DELETE FROM saas.tenants WHERE id = '{tenant}'; DELETE FROM saas.plans WHERE plan = '{plan}';"
        ))
        .await
        .unwrap();
}
