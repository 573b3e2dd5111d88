//! Rate limits and plan quotas, enforced inside PostgREST requests.
//!
//! `rate_limit()` is GCRA (`gcra.rs`) over one of two state backends:
//! shared memory (`shmem.rs`, when pg_saas is preloaded: not transactional,
//! works in READ ONLY transactions) or the table `saas.rate_limit_state`
//! (one atomic statement per admitted check). `_rate_limit_request()` is
//! the core of `saas.pre_request()`: the rules matching a request (kept per
//! backend until they change), then the tenant plan's daily API quota; the
//! PL/pgSQL wrapper turns a refusal into PostgREST's `PGRST` error with
//! status and headers. Daily usage and
//! refusal counts of read-only requests wait in shared memory until
//! `usage_flush()` (run by `run_maintenance()`) writes them out.

pub mod gcra;
pub mod rules;
mod shmem;
pub mod table;

use crate::error::{ErrorKind, OrRaise, SaasError, SaasResult};
use crate::gucs::{RateLimitBackend, RATE_LIMIT_BACKEND, RATE_LIMIT_CLOCK};
use crate::pgutil::{as_owner, clock_override, kept_plan, setting, to_pg_uuid, PlanCell};
use crate::request::sub_text;
use crate::request_settings::{self, RequestSettings};
use crate::tenancy;
use crate::uuid::Uuid;
use gcra::{Decision, Limit, DAY_US};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use rules::{Requester, Scope};
use serde_json::{json, Map, Value};
use std::cell::{Cell, RefCell};
use std::ffi::CString;
use std::rc::Rc;
use table::{CounterKey, CounterSlot};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Shared,
    Table,
}

/// Namespace of keys passed to `rate_limit()` directly; rules use their id,
/// so no caller of `rate_limit()` can spend a rule's counter.
const DIRECT_KEYS: i64 = 0;
/// Longest key `rate_limit()` accepts.
const KEY_MAX: usize = 512;
/// The usage metric `pre_request()` counts.
const API_CALLS: &str = "api_calls";

thread_local! {
    static STATE_OWNER: Cell<Option<pg_sys::Oid>> = const { Cell::new(None) };
    static UPDATE_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
    static CHECK_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
    static READ_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
    static OWNER_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
    static RULES_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
    static QUOTA_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
    static USAGE_READ_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
    static PEER_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
    static PEER_ADDRESS: std::cell::OnceCell<Option<String>> = const { std::cell::OnceCell::new() };
    static USAGE_ADD_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
    /// The rules as last read, kept until `saas.rate_limit_rules` is
    /// invalidated (its trigger fires a relcache invalidation on every
    /// change, which reaches every backend at commit).
    static RULES: RefCell<Option<Rc<Vec<Rule>>>> = const { RefCell::new(None) };
    /// The OID of `saas.rate_limit_rules` when RULES was filled.
    static RULES_RELID: Cell<pg_sys::Oid> = const { Cell::new(pg_sys::InvalidOid) };
    /// Invalidations of the rules seen so far: rules read while one
    /// arrives are used once, not kept.
    static RULES_GENERATION: Cell<u64> = const { Cell::new(0) };
    /// Counters this transaction's flush wrote, by the subtransaction that
    /// wrote them; subtracted from shared memory when the transaction commits.
    static TO_SETTLE: RefCell<Vec<(pg_sys::SubTransactionId, Vec<CounterSlot>)>> = const { RefCell::new(Vec::new()) };
}

pub(crate) fn init() {
    shmem::init();
    // SAFETY: static callbacks without argument; they touch thread-locals
    // and, on commit, shared memory under its lock, and never raise.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
        pg_sys::CacheRegisterSyscacheCallback(
            pg_sys::SysCacheIdentifier::RELOID as i32,
            Some(on_pg_class_change),
            pg_sys::Datum::from(0usize),
        );
        pg_sys::CacheRegisterRelcacheCallback(
            Some(on_relcache_change),
            pg_sys::Datum::from(0usize),
        );
    }
}

/// Drops the cached rules when their table is invalidated (InvalidOid: every
/// relation, after a cache reset).
unsafe extern "C-unwind" fn on_relcache_change(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    if relid == pg_sys::InvalidOid || relid == RULES_RELID.with(Cell::get) {
        RULES.with(|r| r.borrow_mut().take());
        RULES_GENERATION.with(|g| g.set(g.get().wrapping_add(1)));
    }
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
            trigger.relation().map_err(|e| internal("read its trigger", e))?.as_ptr(),
        )
    };
    Ok(None)
}

unsafe extern "C-unwind" fn on_pg_class_change(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    STATE_OWNER.with(|o| o.set(None));
}

unsafe extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    let flushed = TO_SETTLE.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if flushed.is_empty() {
        return;
    }
    if event == pg_sys::XactEvent::XACT_EVENT_COMMIT {
        for (_, counters) in &flushed {
            shmem::counters_settle(counters);
        }
    } else if event != pg_sys::XactEvent::XACT_EVENT_ABORT
        && event != pg_sys::XactEvent::XACT_EVENT_PREPARE
    {
        // Not the end of the transaction yet (pre-commit and the like).
        TO_SETTLE.with(|s| *s.borrow_mut() = flushed);
    }
}

unsafe extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        // What the aborted subtransaction (or one inside it, which has a
        // higher id) flushed was rolled back: it stays pending.
        TO_SETTLE.with(|s| s.borrow_mut().retain(|(subid, _)| *subid < my_subid));
    }
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

fn backend() -> SaasResult<Backend> {
    match RATE_LIMIT_BACKEND.get() {
        RateLimitBackend::Auto if shmem::available() => Ok(Backend::Shared),
        RateLimitBackend::Auto | RateLimitBackend::Table => Ok(Backend::Table),
        RateLimitBackend::Shmem if shmem::available() => Ok(Backend::Shared),
        RateLimitBackend::Shmem => Err(SaasError::new(
            ErrorKind::ObjectNotInPrerequisiteState,
            "saas.rate_limit_backend is 'shmem' but pg_saas is not in shared_preload_libraries",
            "Add pg_saas to shared_preload_libraries and restart PostgreSQL, or set saas.rate_limit_backend to 'auto'.",
        )),
    }
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
            &client,
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

fn null_error(what: &str) -> SaasError {
    SaasError::new(
        ErrorKind::NullValue,
        format!("rate_limit: {what} must not be NULL"),
        "Pass a key, a burst, a count, a period and a cost, e.g. saas.rate_limit('user:42', 10, 10, '1 minute').",
    )
}

fn period_us(period: &Interval) -> SaasResult<i64> {
    gcra::interval_us(period.months(), period.days(), period.micros()).ok_or_else(|| {
        SaasError::new(
            ErrorKind::OutOfRange,
            "rate limit period is out of range",
            "Use a period of at most a few years.",
        )
    })
}

fn limit_of(max_burst: i64, count: i64, period: &Interval) -> SaasResult<Limit> {
    Limit::new(max_burst, count, period_us(period)?)
}

/// One check of `key` in `namespace` against `limit`, in the backend given.
fn check_key(
    backend: Backend,
    namespace: i64,
    key: &str,
    limit: Limit,
    now: i64,
    cost: i64,
) -> SaasResult<Decision> {
    match backend {
        Backend::Shared => {
            let d = shmem::rate_check(table::key_hash(namespace, key), limit, now, cost)
                .ok_or_else(|| internal("reach its shared memory", "not preloaded"))??;
            Ok(d.decision)
        }
        Backend::Table => table_check(namespace, key, limit, now, cost),
    }
}

/// The table backend: an UPDATE (known key) or upsert (new key) that
/// advances the TAT only when the request fits, so concurrent checks
/// serialize on the key's row and none over-admits. A refusal reads the
/// key without locking it and writes nothing.
fn table_check(
    namespace: i64,
    key: &str,
    limit: Limit,
    now: i64,
    cost: i64,
) -> SaasResult<Decision> {
    use pg_sys::BuiltinOid as B;
    // Both callers validated the cost and that it fits in the burst
    // (rate_limit's arguments; a rule when it was set, and its table's CHECK).
    debug_assert!(cost >= 1 && cost <= limit.burst);
    if read_only() {
        return Err(read_only_error("rate_limit"));
    }
    let owner = state_owner()?;
    let increment = cost.saturating_mul(limit.interval_us);
    let capacity = limit.capacity_us();
    let args = [namespace.into(), key.into(), now.into(), increment.into(), capacity.into()];
    let types = [
        B::INT8OID.value(),
        B::TEXTOID.value(),
        B::INT8OID.value(),
        B::INT8OID.value(),
        B::INT8OID.value(),
    ];
    // Runs one of the two admitting statements; Some when it admitted. Run
    // with `select`, not `update`: the kept plan is a writing one either way,
    // and `update` would take a transaction id up front, so that a refusal
    // (which changes no row) would still commit a transaction.
    let admit = |client: &SpiClient<'_>,
                 cell: &'static PlanCell,
                 sql: &str|
     -> SaasResult<Option<Decision>> {
        let stmt =
            kept_plan(cell, client, sql, &types).map_err(|e| internal("prepare its check", e))?;
        let out = client.select(stmt, None, &args).map_err(|e| internal("check a key", e))?;
        if out.is_empty() {
            return Ok(None);
        }
        let tat = out.first().get_one::<i64>().map_err(|e| internal("read a key", e))?;
        Ok(Some(gcra::admitted(limit, tat.unwrap_or(now + increment), now)))
    };
    // The key's TAT as the latest committed check left it; None: no state.
    let read = |client: &SpiClient<'_>| -> SaasResult<Option<i64>> {
        let stmt = kept_plan(
            &READ_PLAN,
            client,
            "SELECT tat_us FROM saas.rate_limit_state WHERE rule_id = $1 AND key = $2",
            &[B::INT8OID.value(), B::TEXTOID.value()],
        )
        .map_err(|e| internal("prepare its check", e))?;
        let out = client.select(stmt, None, &args[..2]).map_err(|e| internal("read a key", e))?;
        if out.is_empty() {
            return Ok(None);
        }
        out.first().get_one::<i64>().map_err(|e| internal("read a key", e))
    };
    as_owner(owner, || {
        Spi::connect_mut(|client| -> SaasResult<Decision> {
            // A key seen before: one UPDATE (a HOT update, tat_us is not
            // indexed). Its WHERE is re-checked on the newest row version
            // when a concurrent check got there first, so it is atomic.
            let update = "UPDATE saas.rate_limit_state AS s SET tat_us = GREATEST(s.tat_us, $3) + $4 \
                          WHERE s.rule_id = $1 AND s.key = $2 AND GREATEST(s.tat_us, $3) + $4 - $3 <= $5 \
                          RETURNING s.tat_us";
            if let Some(admitted) = admit(client, &UPDATE_PLAN, update)? {
                return Ok(admitted);
            }
            // Not admitted: the key is new, or the request does not fit. A
            // committed TAT that refuses is a valid refusal, decided without
            // a lock (the common refusal: one UPDATE and one read, no
            // transaction id). No row (a new key, or rate_limit_vacuum
            // deleted it in between), or a TAT that fits after all, goes to
            // the upsert, which decides under the row lock.
            if let Some(tat) = read(client)? {
                let decision = gcra::check(limit, Some(tat), now, cost)?;
                if !decision.allowed {
                    return Ok(decision);
                }
            }
            let upsert = "INSERT INTO saas.rate_limit_state AS s (rule_id, key, tat_us) VALUES ($1, $2, $3 + $4) \
                          ON CONFLICT (rule_id, key) DO UPDATE SET tat_us = GREATEST(s.tat_us, $3) + $4 \
                          WHERE GREATEST(s.tat_us, $3) + $4 - $3 <= $5 \
                          RETURNING tat_us";
            if let Some(admitted) = admit(client, &CHECK_PLAN, upsert)? {
                return Ok(admitted);
            }
            gcra::check(limit, read(client)?, now, cost)
        })
    })
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
    RateLimitResult(rate_limit_impl(key, max_burst, count, period, cost).or_raise())
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

/// One `saas.rate_limit_result` value.
pub struct RateLimitResult(Decision);

// The SQL type is created by the `rate_limit_result` block above, which
// `rate_limit` requires.
pgrx::impl_sql_translatable!(RateLimitResult, "@extschema@.rate_limit_result");

// SAFETY: `rate_limit` is declared to return saas.rate_limit_result, whose
// five attributes are filled here in order.
unsafe impl pgrx::callconv::BoxRet for RateLimitResult {
    unsafe fn box_into<'fcx>(
        self,
        fcinfo: &mut pgrx::callconv::FcInfo<'fcx>,
    ) -> pgrx::datum::Datum<'fcx> {
        let d = self.0;
        let seconds = |us: i64| us as f64 / 1e6;
        let int = |n: i64| n.min(i32::MAX as i64) as i32;
        let mut values = [
            pg_sys::Datum::from(d.allowed),
            pg_sys::Datum::from(int(d.limit)),
            pg_sys::Datum::from(int(d.remaining)),
            seconds(d.retry_after_us).into_datum().unwrap_or(pg_sys::Datum::null()),
            seconds(d.reset_after_us).into_datum().unwrap_or(pg_sys::Datum::null()),
        ];
        let mut nulls = [false; 5];
        use pg_sys::BuiltinOid as B;
        let types = [
            B::BOOLOID.value(),
            B::INT4OID.value(),
            B::INT4OID.value(),
            B::FLOAT8OID.value(),
            B::FLOAT8OID.value(),
        ];
        unsafe { crate::pgutil::return_composite(fcinfo, &types, &mut values, &mut nulls) }
    }
}

fn rate_limit_impl(
    key: Option<&str>,
    max_burst: Option<i32>,
    count: Option<i32>,
    period: Option<Interval>,
    cost: Option<i32>,
) -> SaasResult<Decision> {
    let key = key.ok_or_else(|| null_error("key"))?;
    let max_burst = max_burst.ok_or_else(|| null_error("max_burst"))?;
    let count = count.ok_or_else(|| null_error("count"))?;
    let period = period.ok_or_else(|| null_error("period"))?;
    let cost = cost.ok_or_else(|| null_error("cost"))?;
    if key.is_empty() {
        return Err(SaasError::new(
            ErrorKind::InvalidParameter,
            "rate_limit: the key is empty",
            "Name what is limited, e.g. 'generate_roadmap:' || saas.current_user_id().",
        ));
    }
    if key.len() > KEY_MAX {
        return Err(SaasError::new(
            ErrorKind::StringTooLong,
            format!("rate_limit: the key is {} bytes, longer than {KEY_MAX}", key.len()),
            "Use a shorter key, e.g. a hash of the long one.",
        ));
    }
    let limit = limit_of(max_burst as i64, count as i64, &period)?;
    gcra::validate_cost(cost as i64)?; // before any state is touched
    if cost as i64 > limit.burst {
        return Err(SaasError::new(
            ErrorKind::InvalidParameter,
            format!("rate_limit: a cost of {cost} exceeds max_burst {max_burst} and could never be admitted"),
            "Raise max_burst to at least the largest cost, or split the work into smaller calls.",
        ));
    }
    check_key(backend()?, DIRECT_KEYS, key, limit, now_us()?, cost as i64)
}

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
    rule_set_impl(path_pattern, count, period, scope, method, max_burst, cost).or_raise()
}

fn rule_set_impl(
    path_pattern: Option<&str>,
    count: Option<i32>,
    period: Option<Interval>,
    scope: Option<&str>,
    method: Option<&str>,
    max_burst: Option<i32>,
    cost: Option<i32>,
) -> SaasResult<i64> {
    let missing = |what: &str| {
        SaasError::new(
            ErrorKind::NullValue,
            format!("rate_limit_rule_set: {what} must not be NULL"),
            "Pass a path pattern, a count and a period, e.g. saas.rate_limit_rule_set('/rpc/generate_roadmap', 5, '1 hour').",
        )
    };
    let pattern = path_pattern.ok_or_else(|| missing("path_pattern"))?;
    let count = count.ok_or_else(|| missing("count"))?;
    let period = period.ok_or_else(|| missing("period"))?;
    let scope = scope.ok_or_else(|| missing("scope"))?;
    let cost = cost.ok_or_else(|| missing("cost"))?;
    rules::validate_pattern(pattern)?;
    Scope::parse(scope)?;
    let method = rules::normalize_method(method)?;
    let limit = limit_of(max_burst.unwrap_or(count) as i64, count as i64, &period)?;
    gcra::validate_cost(cost as i64)?;
    if cost as i64 > limit.burst {
        return Err(SaasError::new(
            ErrorKind::InvalidParameter,
            format!(
                "a rule with cost {cost} and a burst of {} would refuse every request",
                limit.burst
            ),
            "Give the rule a max_burst of at least its cost.",
        ));
    }
    let upsert = "INSERT INTO saas.rate_limit_rules AS r (path_pattern, method, scope, max_burst, count, period, cost) \
                  VALUES ($1, $2, $3, $4, $5, $6, $7) \
                  ON CONFLICT (path_pattern, method, scope) DO UPDATE \
                    SET max_burst = EXCLUDED.max_burst, count = EXCLUDED.count, period = EXCLUDED.period, cost = EXCLUDED.cost \
                  RETURNING r.id";
    let args = [
        pattern.into(),
        method.into(),
        scope.into(),
        max_burst.into(),
        count.into(),
        period.into(),
        cost.into(),
    ];
    // No row limit (so not Spi::get_one_with_args): an INSERT ... RETURNING
    // stopped after its first row never fires its statement triggers, and
    // the rules' trigger is what tells every backend to read them again.
    let id =
        Spi::connect_mut(|client| client.update(upsert, None, &args)?.first().get_one::<i64>())
            .map_err(|e| internal("store the rule", e))?;
    id.ok_or_else(|| internal("store the rule", "no id returned"))
}

/// A stored rule, as `pre_request()` applies it.
struct Rule {
    id: i64,
    pattern: String,
    method: Option<String>,
    scope: Scope,
    count: i64,
    period_us: i64,
    limit: Limit,
    cost: i64,
}

/// Every rule, from the backend's cache or read as the state owner.
fn cached_rules(owner: pg_sys::Oid) -> SaasResult<Rc<Vec<Rule>>> {
    if let Some(rules) = RULES.with(|r| r.borrow().clone()) {
        return Ok(rules);
    }
    // The OID first, so that an invalidation arriving while the rules are
    // read (a lock taken after the snapshot processes them) is recognised;
    // rules read across one are used for this request only.
    // SAFETY: catalog lookups by name; InvalidOid when missing.
    let relid = unsafe {
        let namespace = pg_sys::get_namespace_oid(c"saas".as_ptr(), true);
        pg_sys::get_relname_relid(c"rate_limit_rules".as_ptr(), namespace)
    };
    RULES_RELID.with(|r| r.set(relid));
    let generation = RULES_GENERATION.with(Cell::get);
    let rules = Rc::new(as_owner(owner, || Spi::connect(|client| load_rules(&client)))?);
    if RULES_GENERATION.with(Cell::get) == generation {
        RULES.with(|r| *r.borrow_mut() = Some(rules.clone()));
    }
    Ok(rules)
}

fn load_rules(client: &SpiClient<'_>) -> SaasResult<Vec<Rule>> {
    let stmt = kept_plan(
        &RULES_PLAN,
        client,
        "SELECT id, path_pattern, method, scope, coalesce(max_burst, count), count, period, cost \
         FROM saas.rate_limit_rules ORDER BY id",
        &[],
    )
    .map_err(|e| internal("prepare the rule lookup", e))?;
    let rows = client.select(stmt, None, &[]).map_err(|e| internal("read the rules", e))?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let get_err = |e: pgrx::spi::SpiError| internal("read the rules", e);
        let period: Interval = row
            .get(7)
            .map_err(get_err)?
            .ok_or_else(|| internal("read the rules", "NULL period"))?;
        let burst: i32 = row.get(5).map_err(get_err)?.unwrap_or(1);
        let count: i32 = row.get(6).map_err(get_err)?.unwrap_or(1);
        let period_us = period_us(&period)?;
        out.push(Rule {
            id: row.get(1).map_err(get_err)?.unwrap_or(0),
            pattern: row.get(2).map_err(get_err)?.unwrap_or_default(),
            method: row.get(3).map_err(get_err)?,
            scope: Scope::parse(&row.get::<String>(4).map_err(get_err)?.unwrap_or_default())?,
            count: count as i64,
            period_us,
            limit: Limit::new(burst as i64, count as i64, period_us)?,
            cost: row.get::<i32>(8).map_err(get_err)?.unwrap_or(1) as i64,
        });
    }
    Ok(out)
}

/// What `pre_request()` does with a request.
struct Verdict {
    /// 200, 429 or 402.
    status: i32,
    headers: Map<String, Value>,
    /// The PostgREST error body of a refusal.
    body: Option<Value>,
}

fn requester(request: &RequestSettings, tenant: Option<&str>) -> SaasResult<Requester> {
    // The top-level `sub`, as every module reads it; as text (any string or
    // number), so subjects of other identity providers are limited too.
    let user = request.claims()?.and_then(sub_text);
    let ip = request.headers().client_ip().or_else(peer_address);
    Ok(Requester { user, tenant: tenant.map(str::to_owned), ip })
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

fn day_of(now: i64) -> i32 {
    now.div_euclid(DAY_US) as i32
}

fn rate_headers(d: &Decision) -> Map<String, Value> {
    let mut h = Map::new();
    h.insert("RateLimit-Limit".into(), Value::String(d.limit.to_string()));
    h.insert("RateLimit-Remaining".into(), Value::String(d.remaining.to_string()));
    h.insert(
        "RateLimit-Reset".into(),
        Value::String(gcra::ceil_seconds(d.reset_after_us).to_string()),
    );
    h
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
    let v = request_verdict().or_raise();
    if v.status == 200 {
        add_response_headers(&v.headers).or_raise();
        return None;
    }
    Some(pgrx::JsonB(json!({ "status": v.status, "headers": v.headers, "body": v.body })))
}

/// Appends `headers` to `response.headers` (PostgREST's JSON array of
/// single-key objects) for this transaction, after what is already there.
fn add_response_headers(headers: &Map<String, Value>) -> SaasResult<()> {
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

fn request_verdict() -> SaasResult<Verdict> {
    let owner = state_owner()?;
    // Read past RLS, as current_tenant() (SECURITY DEFINER) reads it.
    let tenant = as_owner(owner, tenancy::resolved_tenant)?;
    let request = request_settings::current();
    let method = request.method().unwrap_or_default().to_ascii_uppercase();
    let path = request.path().unwrap_or_default();
    let now = now_us()?;
    let day = day_of(now);
    let tenant_bytes = tenant.map_or([0u8; 16], |t| t.0);

    let all_rules = if path.is_empty() { Rc::new(Vec::new()) } else { cached_rules(owner)? };
    let matching: Vec<&Rule> = all_rules
        .iter()
        .filter(|r| {
            r.method.as_deref().is_none_or(|m| m == method) && rules::matches(&r.pattern, &path)
        })
        .collect();

    // Rules: each admits or refuses; a refusal gives back what the rules
    // before it took (shared memory; the table's writes roll back with the
    // request).
    let mut admitted: Vec<(&Rule, String, Decision)> = Vec::new();
    let backend = if matching.is_empty() { Backend::Table } else { backend()? };
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
            shmem::counter_add(&CounterKey::refusal(tenant_bytes, rule.id, day), 1);
            let retry = gcra::ceil_seconds(d.retry_after_us).max(1);
            let mut headers = rate_headers(&d);
            headers.insert("Retry-After".into(), Value::String(retry.to_string()));
            let method_text = rule.method.as_deref().unwrap_or("any method");
            return Ok(Verdict {
                status: 429,
                headers,
                body: Some(json!({
                    "code": "PT429",
                    "message": "rate limit exceeded",
                    "details": format!(
                        "rule {}: {} per {} (burst {}) for {} {}, per {}",
                        rule.id,
                        rule.count,
                        rules::describe_period(rule.period_us),
                        rule.limit.burst,
                        method_text,
                        rule.pattern,
                        key_kind(&key)
                    ),
                    "hint": format!("Retry after {retry} seconds."),
                })),
            });
        }
    }

    // The plan's daily API quota, for requests of a tenant.
    if let Some(t) = tenant {
        if let Some(refusal) = count_api_call(owner, t, day, now)? {
            give_back(backend, &admitted, now);
            return Ok(refusal);
        }
    }

    let headers = admitted
        .iter()
        .min_by_key(|(_, _, d)| d.remaining)
        .map(|(_, _, d)| rate_headers(d))
        .unwrap_or_default();
    Ok(Verdict { status: 200, headers, body: None })
}

fn key_kind(key: &str) -> &str {
    key.split(':').next().unwrap_or(key)
}

fn give_back(backend: Backend, admitted: &[(&Rule, String, Decision)], now: i64) {
    if backend == Backend::Shared {
        for (rule, key, _) in admitted {
            shmem::rate_refund(table::key_hash(rule.id, key), rule.limit, now, rule.cost);
        }
    }
}

/// Counts one API call of the tenant today and refuses it (402) when the
/// plan's daily quota is spent. Read-write requests count in the table in
/// one upsert; read-only ones in shared memory, against the table's count
/// plus what is pending. All in one SPI session as the state owner.
fn count_api_call(
    owner: pg_sys::Oid,
    tenant: Uuid,
    day: i32,
    now: i64,
) -> SaasResult<Option<Verdict>> {
    use pg_sys::BuiltinOid as B;
    let key = CounterKey::usage(tenant.0, API_CALLS, day).expect("a short metric name");
    let tenant_uuid = to_pg_uuid(tenant);
    let usage_args = [B::UUIDOID.value(), B::TEXTOID.value(), B::INT4OID.value()];
    // The plan, its quota, and how much of it is used when the call is refused.
    let (plan, quota, refused_at) = as_owner(owner, || {
        Spi::connect_mut(|client| -> SaasResult<(String, Option<i64>, Option<i64>)> {
            let stmt = kept_plan(
                &QUOTA_PLAN,
                client,
                "SELECT t.plan, p.api_calls_per_day, \
                        coalesce((SELECT u.count FROM saas.usage_daily u \
                                  WHERE u.tenant_id = t.id AND u.metric = $2 AND u.day = DATE '2000-01-01' + $3), 0) \
                 FROM saas.tenants t LEFT JOIN saas.plans p ON p.plan = t.plan WHERE t.id = $1",
                &usage_args,
            )
            .map_err(|e| internal("prepare the quota lookup", e))?;
            let rows = client
                .select(stmt, None, &[tenant_uuid.into(), API_CALLS.into(), day.into()])
                .map_err(|e| internal("read the plan", e))?;
            let (plan, quota, stored) = if rows.is_empty() {
                (String::new(), None, 0)
            } else {
                let row = rows.first();
                let e = |e: pgrx::spi::SpiError| internal("read the plan", e);
                (
                    row.get::<String>(1).map_err(e)?.unwrap_or_default(),
                    row.get::<i64>(2).map_err(e)?,
                    row.get::<i64>(3).map_err(e)?.unwrap_or(0),
                )
            };
            if read_only() {
                let Some(limit) = quota else {
                    // Unlimited plan: counted for the report when preloaded.
                    shmem::counter_add(&key, 1);
                    return Ok((plan, quota, None));
                };
                let (used, added) = shmem::counter_add_within(&key, stored, 1, limit)
                    .ok_or_else(|| read_only_error("the daily API quota"))?;
                return Ok((plan, quota, (!added).then_some(used)));
            }
            let pending = shmem::counter_pending(&key);
            let stmt = kept_plan(
                &USAGE_ADD_PLAN,
                client,
                "INSERT INTO saas.usage_daily AS u (tenant_id, metric, day, count) \
                 SELECT $1, $2, DATE '2000-01-01' + $3, 1 WHERE $4::int8 IS NULL OR 1 + $5 <= $4 \
                 ON CONFLICT (tenant_id, metric, day) DO UPDATE SET count = u.count + 1 \
                 WHERE $4::int8 IS NULL OR u.count + 1 + $5 <= $4 \
                 RETURNING u.count",
                &[
                    B::UUIDOID.value(),
                    B::TEXTOID.value(),
                    B::INT4OID.value(),
                    B::INT8OID.value(),
                    B::INT8OID.value(),
                ],
            )
            .map_err(|e| internal("prepare the usage counter", e))?;
            let out = client
                .update(
                    stmt,
                    None,
                    &[
                        tenant_uuid.into(),
                        API_CALLS.into(),
                        day.into(),
                        quota.into(),
                        pending.into(),
                    ],
                )
                .map_err(|e| internal("count the API call", e))?;
            if !out.is_empty() {
                return Ok((plan, quota, None));
            }
            // Refused: read the count the upsert saw, for the message.
            let stmt = kept_plan(
                &USAGE_READ_PLAN,
                client,
                "SELECT u.count FROM saas.usage_daily u WHERE u.tenant_id = $1 AND u.metric = $2 AND u.day = DATE '2000-01-01' + $3",
                &usage_args,
            )
            .map_err(|e| internal("prepare the usage lookup", e))?;
            let rows = client
                .select(stmt, None, &[tenant_uuid.into(), API_CALLS.into(), day.into()])
                .map_err(|e| internal("read usage", e))?;
            let stored = if rows.is_empty() {
                0
            } else {
                rows.first().get::<i64>(1).map_err(|e| internal("read usage", e))?.unwrap_or(0)
            };
            Ok((plan, quota, Some(stored + pending)))
        })
    })?;
    let Some(used) = refused_at else { return Ok(None) };
    let limit = quota.unwrap_or(0);
    let next_day_us = (day as i64 + 1) * DAY_US;
    let retry = gcra::ceil_seconds(next_day_us - now).max(1);
    let mut headers = Map::new();
    headers.insert("Retry-After".into(), Value::String(retry.to_string()));
    Ok(Some(Verdict {
        status: 402,
        headers,
        body: Some(json!({
            "code": "PT402",
            "message": "daily API quota exhausted",
            "details": format!("plan '{plan}' allows {limit} API calls per day; tenant {tenant} has used {used} today (UTC)"),
            "hint": "Wait until 00:00 UTC or move the tenant to a larger plan.",
        })),
    }))
}

/// Counts in shared memory not yet written to `usage_daily` and
/// `rate_limit_refusals`. `day` is days since 2000-01-01.
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
            let kind = if c.key.kind == table::KIND_USAGE { "usage" } else { "refusal" };
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

/// Writes the counts waiting in shared memory to `usage_daily` and
/// `rate_limit_refusals` (adding to what is there) and returns how many
/// counters it wrote. They leave shared memory when this transaction
/// commits; if it aborts they stay and the next flush writes them.
#[pg_extern(volatile, parallel_unsafe)]
fn usage_flush() -> i64 {
    usage_flush_impl().or_raise()
}

fn usage_flush_impl() -> SaasResult<i64> {
    if !shmem::available() || TO_SETTLE.with(|s| !s.borrow().is_empty()) {
        // Nothing in shared memory, or this transaction flushed already.
        return Ok(0);
    }
    let owner = state_owner()?;
    let written = as_owner(owner, || {
        Spi::connect_mut(|client| -> SaasResult<Vec<CounterSlot>> {
            // One flush at a time: the next one must see this one's settlement.
            client
                .update("SELECT pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('saas.usage_flush'))", None, &[])
                .map_err(|e| internal("lock the flush", e))?;
            let snap = shmem::counters_snapshot();
            let (usage, refusals): (Vec<&CounterSlot>, Vec<&CounterSlot>) =
                snap.iter().partition(|c| c.key.kind == table::KIND_USAGE);
            let tenants = |v: &[&CounterSlot]| -> Vec<pgrx::Uuid> {
                v.iter().map(|c| pgrx::Uuid::from_bytes(c.key.tenant)).collect()
            };
            let days = |v: &[&CounterSlot]| -> Vec<i32> { v.iter().map(|c| c.key.day).collect() };
            let amounts =
                |v: &[&CounterSlot]| -> Vec<i64> { v.iter().map(|c| c.pending).collect() };
            if !usage.is_empty() {
                let metrics: Vec<String> =
                    usage.iter().map(|c| c.key.metric_name().to_string()).collect();
                client
                    .update(
                        "INSERT INTO saas.usage_daily AS u (tenant_id, metric, day, count) \
                         SELECT f.t, f.m, DATE '2000-01-01' + f.d, f.n \
                         FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.uuid[]), pg_catalog.unnest($2::pg_catalog.text[]), \
                                         pg_catalog.unnest($3::pg_catalog.int4[]), pg_catalog.unnest($4::pg_catalog.int8[])) AS f(t, m, d, n) \
                         ON CONFLICT (tenant_id, metric, day) DO UPDATE SET count = u.count + EXCLUDED.count",
                        None,
                        &[tenants(&usage).into(), metrics.into(), days(&usage).into(), amounts(&usage).into()],
                    )
                    .map_err(|e| internal("write usage counters", e))?;
            }
            if !refusals.is_empty() {
                let rule_ids: Vec<i64> = refusals.iter().map(|c| c.key.rule_id).collect();
                client
                    .update(
                        "INSERT INTO saas.rate_limit_refusals AS r (tenant_id, day, rule_id, refusals) \
                         SELECT f.t, DATE '2000-01-01' + f.d, f.r, f.n \
                         FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.uuid[]), pg_catalog.unnest($2::pg_catalog.int4[]), \
                                         pg_catalog.unnest($3::pg_catalog.int8[]), pg_catalog.unnest($4::pg_catalog.int8[])) AS f(t, d, r, n) \
                         ON CONFLICT (tenant_id, day, rule_id) DO UPDATE SET refusals = r.refusals + EXCLUDED.refusals",
                        None,
                        &[tenants(&refusals).into(), days(&refusals).into(), rule_ids.into(), amounts(&refusals).into()],
                    )
                    .map_err(|e| internal("write refusal counters", e))?;
            }
            Ok(snap)
        })
    })?;
    let n = written.len() as i64;
    if n > 0 {
        // SAFETY: plain read of transaction state.
        let subid = unsafe { pg_sys::GetCurrentSubTransactionId() };
        TO_SETTLE.with(|s| s.borrow_mut().push((subid, written)));
    }
    Ok(n)
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
    let backend = match backend() {
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
