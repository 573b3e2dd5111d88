//! Rate limits and plan quotas, enforced inside PostgREST requests.
//!
//! `rate_limit()` is GCRA (`gcra`) over one of two state backends
//! (`backend`): shared memory (`shmem` places the slot tables of `slots`
//! there, when pg_saas is preloaded: not transactional, works in READ ONLY
//! transactions) or the table `saas.rate_limit_state` (`table_backend`, one
//! atomic statement per admitted check); `check` is one `rate_limit()` call.
//! `_rate_limit_request()` is the core of `saas.pre_request()`
//! (`pre_request`): the rules matching a request (`rules`, kept per backend
//! until they change by `rule_cache`), then the tenant plan's daily API
//! quota (`usage`); the PL/pgSQL wrapper turns a refusal into PostgREST's
//! `PGRST` error with status and headers. Daily usage and refusal counts of
//! read-only requests wait in shared memory until `usage_flush()` (run by
//! `run_maintenance()`) writes them out.
//!
//! The `#[pg_extern]`/`#[pg_trigger]` functions stay in this file: the
//! `requires` of the `extension_sql_file!` below find them by module path.

mod backend;
mod check;
pub mod gcra;
mod pre_request;
mod rule_cache;
pub mod rules;
mod shmem;
pub mod slots;
mod table_backend;
mod usage;

use crate::error::{ErrorKind, OrRaise, SaasError, SaasResult};
use crate::gucs::RATE_LIMIT_CLOCK;
use crate::pgutil::{as_owner, clock_override, kept_plan};
use backend::Backend;
use check::RateLimitResult;
use gcra::DAY_US;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use serde_json::json;
use std::cell::Cell;

thread_local! {
    static STATE_OWNER: Cell<Option<pg_sys::Oid>> = const { Cell::new(None) };
    static OWNER_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
}

pub(crate) fn init() {
    shmem::init();
    // SAFETY: static callbacks without argument; they touch thread-locals
    // and, on commit, shared memory under its lock, and never raise.
    unsafe {
        pg_sys::RegisterXactCallback(Some(usage::on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(usage::on_subxact), std::ptr::null_mut());
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::RELOID as i32,
            Some(on_pg_class_change),
            pg_sys::Datum::from(0usize),
        );
        pg_sys::CacheRegisterRelcacheCallback(
            Some(usage::on_relcache_change),
            pg_sys::Datum::from(0usize),
        );
        pg_sys::CacheRegisterRelcacheCallback(
            Some(rule_cache::on_relcache_change),
            pg_sys::Datum::from(0usize),
        );
    }
}

extern "C-unwind" fn on_pg_class_change(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    STATE_OWNER.with(|o| o.set(None));
}

fn internal(what: &str, e: impl std::fmt::Display) -> SaasError {
    SaasError::new(
        ErrorKind::ObjectNotInPrerequisiteState,
        format!("pg_saas rate limiting could not {what}"),
        "Check that the pg_saas extension is installed completely (saas.rate_limit_state, saas.rate_limit_rules, saas.usage_daily).",
    )
    .with_detail(e.to_string())
}

fn read_only_error(what: &str) -> SaasError {
    SaasError::new(
        ErrorKind::ReadOnlyTransaction,
        format!("{what} needs the table backend here, which cannot write in a read-only transaction"),
        "Add pg_saas to shared_preload_libraries and restart PostgreSQL: the shared-memory backend works in read-only transactions (PostgREST GET requests).",
    )
}

fn now_us() -> SaasResult<i64> {
    match clock_override(c"saas.rate_limit_clock", &RATE_LIMIT_CLOCK)? {
        Some(fixed) => Ok(fixed),
        // SAFETY: reads the wall clock; rate limits follow real time, not
        // the transaction's start.
        None => Ok(unsafe { pg_sys::GetCurrentTimestamp() }),
    }
}

fn read_only() -> bool {
    // SAFETY: plain read of the transaction's access mode.
    unsafe { pg_sys::XactReadOnly }
}

/// The owner of `saas.rate_limit_state`: the table backend and the usage
/// counters write as it, so API roles hold no privilege on those tables.
fn state_owner() -> SaasResult<pg_sys::Oid> {
    if let Some(o) = STATE_OWNER.with(|o| o.get()) {
        return Ok(o);
    }
    // Asked again after any pg_class change (on_pg_class_change): kept, not
    // parsed each time.
    let owner = Spi::connect(|client| {
        let stmt = kept_plan(
            &OWNER_PLAN,
            client,
            "SELECT c.relowner FROM pg_catalog.pg_class c WHERE c.oid = 'saas.rate_limit_state'::pg_catalog.regclass",
            &[],
        )?;
        client.select(stmt, None, &[])?.first().get_one::<pg_sys::Oid>()
    })
    .map_err(|e| internal("find saas.rate_limit_state", e))?
    .ok_or_else(|| internal("find saas.rate_limit_state", "no such table"))?;
    STATE_OWNER.with(|o| o.set(Some(owner)));
    Ok(owner)
}

fn day_of(now: i64) -> i32 {
    now.div_euclid(DAY_US) as i32
}

/// Statement trigger on `saas.rate_limit_rules` (any change, TRUNCATE too):
/// a relcache invalidation of the table, so every backend's `pre_request`
/// reads the rules again (this one after the statement, others after the
/// commit).
#[pg_trigger]
fn _rate_limit_rules_changed<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, SaasError> {
    // SAFETY: the trigger's relation is open while it fires.
    unsafe {
        pg_sys::CacheInvalidateRelcache(
            trigger
                .relation()
                .map_err(|e| internal("read its trigger", e))?
                .as_ptr(),
        )
    };
    Ok(None)
}

/// Statement trigger on `saas.usage_daily`: a change other than a flush's
/// drops the daily counts loaded from it when the transaction commits.
#[pg_trigger]
fn _usage_daily_changed<'a>(
    _trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, SaasError> {
    usage::usage_table_changed();
    Ok(None)
}

/// GCRA check of `key`: `count` requests per `period`, `max_burst` of them
/// at once from an empty state; `cost` units per call. Exact under
/// concurrency in both backends. Returns one `saas.rate_limit_result`;
/// `retry_after` and `reset_after` are seconds.
#[pg_extern(volatile, parallel_unsafe, requires = ["rate_limit_result"])]
fn rate_limit(
    key: Option<&str>,
    max_burst: Option<i32>,
    count: Option<i32>,
    period: Option<Interval>,
    cost: default!(Option<i32>, 1),
) -> RateLimitResult {
    RateLimitResult(check::rate_limit_impl(key, max_burst, count, period, cost).or_raise())
}

extension_sql!(
    r#"
-- The row rate_limit() returns. A plain composite rather than RETURNS
-- TABLE: its row descriptor is looked up once per call site, where a
-- set-returning function rebuilds it from pg_proc on every call.
CREATE TYPE @extschema@.rate_limit_result AS (
  allowed     boolean,
  "limit"     integer,
  remaining   integer,
  retry_after double precision,
  reset_after double precision
);
COMMENT ON TYPE @extschema@.rate_limit_result IS
  'Result of saas.rate_limit: allowed; the burst limit; units left now; seconds until a refused call of the same cost would fit (0 when allowed); seconds until the key is back to its empty state.';
"#,
    name = "rate_limit_result",
    requires = ["bootstrap"],
);

/// Validates a rule and stores it (one row per path pattern, method and
/// scope; setting it again replaces the limits). Returns the rule's id.
#[pg_extern(volatile, parallel_unsafe)]
fn rate_limit_rule_set(
    path_pattern: Option<&str>,
    count: Option<i32>,
    period: Option<Interval>,
    scope: default!(Option<&str>, "'user'"),
    method: default!(Option<&str>, "NULL"),
    max_burst: default!(Option<i32>, "NULL"),
    cost: default!(Option<i32>, 1),
) -> i64 {
    rule_cache::rule_set_impl(path_pattern, count, period, scope, method, max_burst, cost)
        .or_raise()
}

/// The core of `saas.pre_request()`: every matching rule, then the plan's
/// daily API quota. Admitted: appends the RateLimit-* headers to
/// `response.headers` and returns NULL. Refused: returns `status`,
/// `headers` and `body` for the wrapper to raise as PostgREST's `PGRST`
/// error (raised in PL/pgSQL: a SQLSTATE outside PostgreSQL's own list
/// does not survive pgrx's error boundary). A scalar, so the wrapper calls
/// it as a simple expression, without a query of its own.
#[pg_extern(volatile, parallel_unsafe)]
fn _rate_limit_request() -> Option<pgrx::JsonB> {
    let v = pre_request::admission().or_raise();
    if v.status == 200 {
        pre_request::add_response_headers(&v.headers).or_raise();
        return None;
    }
    Some(pgrx::JsonB(
        json!({ "status": v.status, "headers": v.headers, "body": v.body }),
    ))
}

/// Counts in shared memory not yet written to `usage_daily` and
/// `rate_limit_refusals`. `day` is days since 2000-01-01.
// pgrx reads the column names from this signature: no type alias.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_unsafe)]
fn _usage_pending() -> TableIterator<
    'static,
    (
        name!(kind, String),
        name!(tenant_id, pgrx::Uuid),
        name!(rule_id, i64),
        name!(metric, String),
        name!(day, i32),
        name!(pending, i64),
    ),
> {
    let rows: Vec<_> = shmem::counters_snapshot()
        .into_iter()
        .map(|c| {
            let kind = if c.key.kind == slots::KIND_USAGE {
                "usage"
            } else {
                "refusal"
            };
            (
                kind.to_string(),
                pgrx::Uuid::from_bytes(c.key.tenant),
                c.key.rule_id,
                c.key.metric_name().to_string(),
                c.key.day,
                c.pending,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// The tenant's usage per day and metric from `from_day` to `to_day`
/// (days since 2000-01-01): `usage_daily` plus the counts still in shared
/// memory, consistent while flushes move them (`usage_report` reads it).
/// Not for API roles: it takes any tenant.
#[pg_extern(volatile, parallel_unsafe)]
fn _usage_counts(
    tenant_id: pgrx::Uuid,
    from_day: i32,
    to_day: i32,
) -> TableIterator<'static, (name!(day, i32), name!(metric, String), name!(used, i64))> {
    let tenant = crate::uuid::Uuid(*tenant_id.as_bytes());
    let rows = (|| {
        let owner = state_owner()?;
        as_owner(owner, || {
            Spi::connect(|_| usage::report_counts(tenant, from_day, to_day))
        })
    })()
    .or_raise();
    TableIterator::new(rows)
}

/// Writes the counts waiting in shared memory to `usage_daily` and
/// `rate_limit_refusals` (adding to what is there) and returns how many
/// counters it wrote. They leave shared memory when this transaction
/// commits; if it aborts they stay and the next flush writes them.
#[pg_extern(volatile, parallel_unsafe)]
fn usage_flush() -> i64 {
    usage::usage_flush_impl().or_raise()
}

/// Deletes table-backend keys that are back to their empty state (a key
/// whose TAT has passed behaves exactly like a missing one). Returns how
/// many.
#[pg_extern(volatile, parallel_unsafe)]
fn rate_limit_vacuum() -> i64 {
    (|| -> SaasResult<i64> {
        let now = now_us()?;
        let owner = state_owner()?;
        as_owner(owner, || {
            Spi::get_one_with_args::<i64>(
                "WITH gone AS (DELETE FROM saas.rate_limit_state WHERE tat_us <= $1 RETURNING 1) SELECT count(*) FROM gone",
                &[now.into()],
            )
            .map_err(|e| internal("delete expired keys", e))
            .map(|n| n.unwrap_or(0))
        })
    })()
    .or_raise()
}

/// Occupancy of the shared-memory backend, for monitoring.
// pgrx reads the column names from this signature: no type alias.
#[allow(clippy::type_complexity)]
#[pg_extern(volatile, parallel_safe)]
fn rate_limit_stats() -> TableIterator<
    'static,
    (
        name!(backend, String),
        name!(preloaded, bool),
        name!(key_slots, i64),
        name!(live_keys, i64),
        name!(live_keys_evicted, i64),
        name!(counter_slots, i64),
        name!(counters_pending, i64),
        name!(counts_dropped, i64),
    ),
> {
    let backend = match backend::backend() {
        Ok(Backend::Shared) => "shmem",
        Ok(Backend::Table) => "table",
        Err(_) => "unavailable",
    };
    let now = now_us().or_raise();
    let s = shmem::stats(now);
    TableIterator::once((
        backend.to_string(),
        s.is_some(),
        s.as_ref().map_or(0, |s| s.rate_slots),
        s.as_ref().map_or(0, |s| s.live_keys),
        s.as_ref().map_or(0, |s| s.evictions),
        s.as_ref().map_or(0, |s| s.counter_slots),
        s.as_ref().map_or(0, |s| s.counters_pending),
        s.as_ref().map_or(0, |s| s.counts_dropped),
    ))
}

// Rate limits, plan quotas and the PostgREST pre-request hook; its view
// reads the Rust pending-counter function.
extension_sql_file!(
    "../../sql/ratelimit.sql",
    name = "ratelimit",
    requires = [
        "registry",
        "tenancy",
        rate_limit,
        rate_limit_rule_set,
        rate_limit_vacuum,
        rate_limit_stats,
        usage_flush,
        _usage_pending,
        _usage_counts,
        _rate_limit_request,
        _rate_limit_rules_changed,
        _usage_daily_changed
    ]
);
