//! The core of `saas.pre_request()`: the rules matching a request, then the
//! tenant plan's daily API quota; an [`Admission`] the SQL wrapper turns
//! into response headers or PostgREST's error.

use super::backend::{self, check_key, Backend};
use super::gcra::{self, Decision};
use super::rule_cache::{cached_rules, Rule, Rules};
use super::rules::{self, Requester};
use super::slots::CounterKey;
use super::usage::count_api_call;
use super::{day_of, internal, now_us, shmem, state_owner};
use crate::error::{ErrorKind, SaasError, SaasResult};
use crate::pgutil::{as_owner, kept_plan, setting};
use crate::request::{estimated_count_preference, sub_text};
use crate::request_settings::{self, RequestSettings};
use crate::tenancy;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use serde_json::{json, Map, Value};
use std::cell::Cell;
use std::ffi::CString;
use std::rc::Rc;

thread_local! {
    static PEER_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
    static PEER_ADDRESS: std::cell::OnceCell<Option<String>> = const { std::cell::OnceCell::new() };
}

/// What `pre_request()` does with a request.
pub(super) struct Admission {
    /// 200, 429 or 402.
    pub status: i32,
    pub headers: Map<String, Value>,
    /// The PostgREST error body of a refusal.
    pub body: Option<Value>,
}

fn requester(request: &RequestSettings, tenant: Option<&str>) -> SaasResult<Requester> {
    // The top-level `sub`, as every module reads it; as text (any string or
    // number), so subjects of other identity providers are limited too.
    let user = request.claims()?.and_then(sub_text);
    let proxies = request_settings::trusted_proxies()?;
    let ip = request.headers().client_ip(&proxies).or_else(peer_address);
    Ok(Requester {
        user,
        tenant: tenant.map(str::to_owned),
        ip,
    })
}

/// The connection's peer address (PostgREST's own, behind a proxy); None
/// over a Unix socket. Only asked when a request carries no proxy header,
/// and once per backend: it is the connection's.
fn peer_address() -> Option<String> {
    PEER_ADDRESS.with(|cached| cached.get_or_init(query_peer_address).clone())
}

fn query_peer_address() -> Option<String> {
    Spi::connect(|client| {
        let stmt = kept_plan(
            &PEER_PLAN,
            client,
            "SELECT pg_catalog.host(pg_catalog.inet_client_addr())",
            &[],
        )
        .ok()?;
        let rows = client.select(stmt, None, &[]).ok()?;
        if rows.is_empty() {
            return None;
        }
        rows.first().get_one::<String>().ok().flatten()
    })
}

fn rate_headers(d: &Decision) -> Map<String, Value> {
    let mut h = Map::new();
    h.insert("RateLimit-Limit".into(), Value::String(d.limit.to_string()));
    h.insert(
        "RateLimit-Remaining".into(),
        Value::String(d.remaining.to_string()),
    );
    h.insert(
        "RateLimit-Reset".into(),
        Value::String(gcra::ceil_seconds(d.reset_after_us).to_string()),
    );
    h
}

/// Appends `headers` to `response.headers` (PostgREST's JSON array of
/// single-key objects) for this transaction, after what is already there.
pub(super) fn add_response_headers(headers: &Map<String, Value>) -> SaasResult<()> {
    if headers.is_empty() {
        return Ok(());
    }
    let mut list = match setting(c"response.headers").filter(|s| !s.trim().is_empty()) {
        None => Vec::new(),
        Some(earlier) => match serde_json::from_str::<Value>(&earlier) {
            Ok(Value::Array(items)) => items,
            Ok(other) => vec![other],
            Err(e) => {
                return Err(SaasError::new(
                    ErrorKind::InvalidJson,
                    "pre_request: response.headers is not JSON",
                    "PostgREST reads response.headers as a JSON array of single-key objects, e.g. [{\"Cache-Control\": \"no-store\"}]; whatever sets it before pre_request() must write that.",
                )
                .with_detail(e.to_string()))
            }
        },
    };
    // serde_json's Map is ordered by key: the headers go out sorted.
    list.extend(headers.iter().map(|(name, value)| json!({ name: value })));
    let text = CString::new(Value::Array(list).to_string())
        .map_err(|e| internal("write response.headers", e))?;
    // SAFETY: what set_config(name, value, true) does; the value is copied.
    unsafe {
        pg_sys::set_config_option(
            c"response.headers".as_ptr(),
            text.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_LOCAL,
            true,
            0,
            false,
        );
    }
    Ok(())
}

pub(super) fn admission() -> SaasResult<Admission> {
    let owner = state_owner()?;
    // Read past RLS, as current_tenant() (SECURITY DEFINER) reads it.
    let tenant = as_owner(owner, tenancy::resolved_tenant)?;
    let request = request_settings::current();
    let method = request.method().unwrap_or_default().to_ascii_uppercase();
    let path = request.path().unwrap_or_default();
    let now = now_us()?;
    let day = day_of(now);
    let tenant_bytes = tenant.map_or([0u8; 16], |t| t.0);

    // Planned and estimated counts come from the planner's statistics,
    // which cover every tenant's rows of a table (row counts, frequent
    // values): refused on tables and views, whatever the tenant. RPC counts
    // are estimated from the function's declared rows, which tell nothing.
    let route = rules::route_path(path);
    if !path.is_empty() && !route.starts_with("/rpc/") {
        if let Some(count) = request
            .headers()
            .get("prefer")
            .and_then(estimated_count_preference)
        {
            return Ok(Admission {
                status: 400,
                headers: Map::new(),
                body: Some(json!({
                    "code": "PT400",
                    "message": format!("Prefer: count={count} is not served for tenant data: planned and estimated counts come from statistics of every tenant's rows"),
                    "details": json!({ "reason": "estimated_count", "preference": format!("count={count}") }).to_string(),
                    "hint": "Ask for Prefer: count=exact, which counts only the rows you can see, or leave the count out.",
                })),
            });
        }
    }
    let all_rules = if path.is_empty() {
        Rc::new(Rules {
            rules: Vec::new(),
            quota_exempt: Vec::new(),
        })
    } else {
        cached_rules(owner)?
    };
    // As PostgREST routes the request (the decoded path), HEAD as GET.
    let matching: Vec<&Rule> = all_rules
        .rules
        .iter()
        .filter(|r| {
            rules::method_matches(r.method.as_deref(), &method) && rules::matches(&r.route, &route)
        })
        .collect();

    // Rules: each admits or refuses; a refusal gives back what the rules
    // before it took (shared memory; the table's writes roll back with the
    // request).
    let mut admitted: Vec<(&Rule, String, Decision)> = Vec::new();
    let backend = if matching.is_empty() {
        Backend::Table
    } else {
        backend::backend()?
    };
    if !matching.is_empty() {
        let who = requester(&request, tenant.map(|t| t.to_string()).as_deref())?;
        for rule in matching.iter().copied() {
            let key = rules::scope_key(rule.scope, &who);
            let d = check_key(backend, rule.id, &key, rule.limit, now, rule.cost)?;
            if d.allowed {
                admitted.push((rule, key, d));
                continue;
            }
            give_back(backend, &admitted, now);
            shmem::counter_add(
                &CounterKey::refusal(shmem::database(), tenant_bytes, rule.id, day),
                1,
            );
            let retry = gcra::ceil_seconds(d.retry_after_us).max(1);
            let mut headers = rate_headers(&d);
            headers.insert("Retry-After".into(), Value::String(retry.to_string()));
            let method_text = rule.method.as_deref().unwrap_or("any method");
            return Ok(Admission {
                status: 429,
                headers,
                body: Some(json!({
                    "code": "PT429",
                    "message": format!(
                        "rate limit exceeded: rule {}, {} per {} (burst {}) for {} {}, per {}",
                        rule.id,
                        rule.count,
                        rules::describe_period(rule.period_us),
                        rule.limit.burst,
                        method_text,
                        rule.pattern,
                        key_kind(&key)
                    ),
                    // Machine-readable (JSON text in PostgREST's `details`):
                    // browsers hide Retry-After, supabase-js hides headers.
                    "details": json!({
                        "reason": "rate_limited",
                        "retry_after_seconds": retry,
                        "limit": rule.limit.burst,
                        "remaining": d.remaining,
                        "reset_seconds": gcra::ceil_seconds(d.reset_after_us),
                        "rule_id": rule.id,
                        "scope": key_kind(&key),
                    })
                    .to_string(),
                    "hint": format!("Retry after {retry} seconds."),
                })),
            });
        }
    }

    // The plan's daily API quota, for requests of a tenant. Exempt paths
    // (the usage report, the workspace list: what a tenant over its quota
    // still needs) are counted, never refused.
    let exempt = all_rules
        .quota_exempt
        .iter()
        .any(|p| rules::matches(p, &route));
    if let Some(t) = tenant {
        if let Some(q) = count_api_call(owner, t, day, now, exempt)? {
            give_back(backend, &admitted, now);
            let mut headers = Map::new();
            headers.insert(
                "Retry-After".into(),
                Value::String(q.retry_after_s.to_string()),
            );
            return Ok(Admission {
                status: 402,
                headers,
                body: Some(json!({
                    "code": "PT402",
                    "message": format!(
                        "daily API quota exhausted: plan '{}' allows {} API calls per day; tenant {t} has used {} today (UTC)",
                        q.plan, q.limit, q.used
                    ),
                    "details": json!({
                        "reason": "quota_exhausted",
                        "retry_after_seconds": q.retry_after_s,
                        "plan": q.plan,
                        "limit": q.limit,
                        "used": q.used,
                        "remaining": 0,
                    })
                    .to_string(),
                    "hint": "Wait until 00:00 UTC or move the tenant to a larger plan.",
                })),
            });
        }
    }

    let headers = admitted
        .iter()
        .min_by_key(|(_, _, d)| d.remaining)
        .map(|(_, _, d)| rate_headers(d))
        .unwrap_or_default();
    Ok(Admission {
        status: 200,
        headers,
        body: None,
    })
}

fn key_kind(key: &str) -> &str {
    key.split(':').next().unwrap_or(key)
}

fn give_back(backend: Backend, admitted: &[(&Rule, String, Decision)], now: i64) {
    for (rule, key, _) in admitted {
        backend::refund(backend, rule.id, key, rule.limit, now, rule.cost);
    }
}
