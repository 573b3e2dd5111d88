//! Daily usage: the API calls `pre_request()` counts against the plan's
//! quota, and the counts waiting in shared memory until `usage_flush()`
//! writes them (they leave shared memory when its transaction commits).
//!
//! When pg_saas is preloaded every call, read-only or read-write, is
//! counted in shared memory against a per-day counter loaded once from
//! `usage_daily`: one decision point, so mixed traffic is exact and no
//! request waits on the table's row. A load reads the table only while no
//! flush is in motion (`shmem::counter_load`), with a snapshot taken after
//! it checked, so it sees every flush that ended before it. Without
//! preloading, read-write requests count in the table in one atomic upsert
//! and read-only requests of a plan with a quota are refused (25006).

use super::gcra::{self, DAY_US};
use super::shmem::{self, Load};
use super::slots::{self, Admit, CounterKey, CounterSlot};
use super::{internal, read_only, read_only_error, state_owner};
use crate::error::{ErrorKind, SaasError, SaasResult};
use crate::pgutil::{
    as_owner, kept_plan, saas_relids, select_latest, select_latest_rows, to_pg_uuid,
};
use crate::uuid::Uuid;
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The usage metric `pre_request()` counts.
const API_CALLS: &str = "api_calls";

/// Plans kept per backend at most (then all are dropped and refilled).
const PLANS_MAX: usize = 10_000;

/// How long a counter load waits for another backend's flush to end.
const FLUSH_WAIT: Duration = Duration::from_secs(10);

thread_local! {
    static PLAN_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(std::ptr::null_mut()) };
    /// Each tenant's plan and daily quota, kept until `saas.plans` or
    /// `saas.tenants` changes.
    static PLANS: RefCell<HashMap<Uuid, (String, Option<i64>)>> = RefCell::new(HashMap::new());
    static PLAN_RELIDS: Cell<[pg_sys::Oid; 2]> = const { Cell::new([pg_sys::InvalidOid; 2]) };
    static PLAN_GENERATION: Cell<u64> = const { Cell::new(0) };
    static USAGE_ADD_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
    static USAGE_READ_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
    /// `SPI_prepare`d and kept: the stored count read with a fresh snapshot
    /// (pgrx's statements run with the statement's or transaction's).
    static STORED_LATEST_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(std::ptr::null_mut()) };
    /// The same for a tenant's days of every metric (`usage_report`).
    static REPORT_LATEST_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(std::ptr::null_mut()) };
    /// This backend has a flush in motion (until its transaction ends).
    static FLUSHING_HERE: Cell<bool> = const { Cell::new(false) };
    /// The flush is writing `usage_daily` (its trigger is not a change).
    static WRITING_FLUSH: Cell<bool> = const { Cell::new(false) };
    /// `usage_daily` was changed by other than a flush in this
    /// transaction: loaded counters are dropped when it commits.
    static UNLOAD_AT_COMMIT: Cell<bool> = const { Cell::new(false) };
    /// Counters this transaction's flush wrote, by the subtransaction that
    /// wrote them; subtracted from shared memory when the transaction commits.
    static TO_SETTLE: RefCell<Vec<(pg_sys::SubTransactionId, Vec<CounterSlot>)>> = const { RefCell::new(Vec::new()) };
}

pub(super) extern "C-unwind" fn on_xact(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::XactEvent as E;
    if !FLUSHING_HERE.get() && !UNLOAD_AT_COMMIT.get() {
        return;
    }
    let ended = [
        E::XACT_EVENT_COMMIT,
        E::XACT_EVENT_PARALLEL_COMMIT,
        E::XACT_EVENT_ABORT,
        E::XACT_EVENT_PARALLEL_ABORT,
        E::XACT_EVENT_PREPARE,
    ];
    if !ended.contains(&event) {
        // Not the end of the transaction yet (pre-commit and the like).
        return;
    }
    let committed = event == E::XACT_EVENT_COMMIT || event == E::XACT_EVENT_PARALLEL_COMMIT;
    if UNLOAD_AT_COMMIT.replace(false) && committed {
        shmem::counters_unload();
    }
    WRITING_FLUSH.set(false);
    if !FLUSHING_HERE.replace(false) {
        return;
    }
    let flushed = TO_SETTLE.with(|s| std::mem::take(&mut *s.borrow_mut()));
    if committed {
        let all: Vec<CounterSlot> = flushed.into_iter().flat_map(|(_, c)| c).collect();
        shmem::flush_end(&all);
    } else {
        // Rolled back (or prepared, to commit later: its counts stay
        // pending, so a prepared flush is written twice if it commits).
        shmem::flush_end(&[]);
    }
}

pub(super) extern "C-unwind" fn on_subxact(
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

/// `saas.usage_daily` changed (its statement trigger): unless the change is
/// a flush's, the counters loaded from it are dropped when the transaction
/// commits, so a count an administrator corrects or resets takes effect.
pub(super) fn usage_table_changed() {
    if shmem::available() && !WRITING_FLUSH.get() {
        UNLOAD_AT_COMMIT.set(true);
    }
}

/// A call the plan's daily API quota refuses.
pub(super) struct QuotaRefused {
    pub plan: String,
    /// The plan's calls per day.
    pub limit: i64,
    /// Calls counted today when this one was refused.
    pub used: i64,
    /// Seconds until the next UTC day.
    pub retry_after_s: i64,
}

/// Counts one API call of the tenant today and refuses it (402) when the
/// plan's daily quota is spent.
pub(super) fn count_api_call(
    owner: pg_sys::Oid,
    tenant: Uuid,
    day: i32,
    now: i64,
    exempt: bool,
) -> SaasResult<Option<QuotaRefused>> {
    let key = CounterKey::usage(shmem::database(), tenant.0, API_CALLS, day)
        .expect("a short metric name");
    let refused_at = as_owner(owner, || {
        Spi::connect_mut(|client| -> SaasResult<(String, Option<i64>, Option<i64>)> {
            let (plan, quota) = plan_of(tenant)?;
            // An exempt call is counted as on an unlimited plan: never refused.
            let limit = if exempt { None } else { quota };
            let refused = if shmem::available() {
                count_in_shared_memory(tenant, &key, limit)?
            } else {
                count_in_table(client, tenant, day, limit)?
            };
            Ok((plan, quota, refused))
        })
    })?;
    let (plan, quota, Some(used)) = refused_at else {
        return Ok(None);
    };
    let next_day_us = (day as i64 + 1) * DAY_US;
    Ok(Some(QuotaRefused {
        plan,
        limit: quota.unwrap_or(0),
        used,
        retry_after_s: gcra::ceil_seconds(next_day_us - now).max(1),
    }))
}

/// Drops the kept plans when `saas.plans` or `saas.tenants` is
/// invalidated (their statement triggers; InvalidOid: every relation).
pub(super) extern "C-unwind" fn on_relcache_change(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    if relid == pg_sys::InvalidOid || PLAN_RELIDS.with(Cell::get).contains(&relid) {
        PLANS.with(|p| {
            if let Ok(mut p) = p.try_borrow_mut() {
                p.clear();
            }
        });
        PLAN_GENERATION.with(|g| g.set(g.get().wrapping_add(1)));
    }
}

/// The tenant's plan and its daily API quota (None: unlimited), kept per
/// backend until either table changes; read with a fresh snapshot after
/// the generation is noted, as tenancy's directory is.
fn plan_of(tenant: Uuid) -> SaasResult<(String, Option<i64>)> {
    if let Some(hit) = PLANS.with(|p| p.borrow().get(&tenant).cloned()) {
        return Ok(hit);
    }
    // The OIDs before the read, so that an invalidation arriving during it
    // is recognised (and the answer used once, not kept).
    PLAN_RELIDS.with(|r| r.set(saas_relids([c"plans", c"tenants"])));
    let generation = PLAN_GENERATION.with(Cell::get);
    let row = select_latest(
        &PLAN_PLAN,
        c"SELECT t.plan, p.api_calls_per_day \
          FROM saas.tenants t LEFT JOIN saas.plans p ON p.plan = t.plan WHERE t.id = $1",
        &[pg_sys::BuiltinOid::UUIDOID.value()],
        &[to_pg_uuid(tenant).into_datum()],
    )?;
    let entry = match row {
        None => (String::new(), None),
        Some(r) => {
            let mut r = r.into_iter();
            let plan = r.next().flatten().unwrap_or_default();
            let quota = r.next().flatten().and_then(|q| q.parse().ok());
            (plan, quota)
        }
    };
    if PLAN_GENERATION.with(Cell::get) == generation {
        PLANS.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() >= PLANS_MAX {
                p.clear();
            }
            p.insert(tenant, entry.clone());
        });
    }
    Ok(entry)
}

/// Counts the call in shared memory; Some(count) when `limit` refuses it.
fn count_in_shared_memory(
    tenant: Uuid,
    key: &CounterKey,
    limit: Option<i64>,
) -> SaasResult<Option<i64>> {
    let Some(limit) = limit else {
        // Unlimited: counted for the report (a full table drops the count,
        // as rate_limit_stats() reports).
        shmem::counter_add(key, 1);
        return Ok(None);
    };
    let deadline = Instant::now() + FLUSH_WAIT;
    loop {
        match shmem::counter_admit(key, 1, limit) {
            Some(Admit::Admitted(_)) => return Ok(None),
            Some(Admit::Refused(used)) => return Ok(Some(used)),
            Some(Admit::NotLoaded) | None => {}
        }
        let Some(since) = shmem::flush_state() else {
            return Err(counters_full());
        };
        let own = FLUSHING_HERE.get();
        if since.flushing() && !own {
            wait_for_flush(deadline)?;
            continue;
        }
        // Our own flush's rows are visible to us, and still pending.
        let stored = stored_count_latest(tenant, key.day)? - in_flight_here(key);
        match shmem::counter_load(key, stored, since, own) {
            Load::Loaded => {}
            Load::Retry => wait_for_flush(deadline)?,
            Load::Full => return Err(counters_full()),
        }
    }
}

fn wait_for_flush(deadline: Instant) -> SaasResult<()> {
    if Instant::now() >= deadline {
        return Err(SaasError::new(
            ErrorKind::LockNotAvailable,
            "the daily API quota could not be read: a usage flush has been in progress too long",
            "A transaction that called saas.usage_flush() (run_maintenance() calls it) is still open; commit or roll it back. Run flushes in short transactions of their own.",
        ));
    }
    // SAFETY: sleeps 1 ms; interrupts (statement_timeout, cancel) are
    // honoured right after.
    unsafe { pg_sys::pg_usleep(1000) };
    pgrx::check_for_interrupts!();
    Ok(())
}

fn counters_full() -> SaasError {
    SaasError::new(
        ErrorKind::InsufficientResources,
        "the daily API quota could not be counted: every shared-memory usage counter holds unflushed counts",
        "Run saas.usage_flush() (or run_maintenance()) more often, or raise saas.usage_counter_slots and restart PostgreSQL.",
    )
}

/// What this transaction's flush wrote for `key`, not yet settled.
fn in_flight_here(key: &CounterKey) -> i64 {
    TO_SETTLE.with(|s| {
        s.borrow()
            .iter()
            .flat_map(|(_, c)| c.iter())
            .filter(|c| c.key == *key)
            .map(|c| c.pending)
            .sum()
    })
}

/// The table's count of the tenant's API calls on `day`, read with a
/// snapshot taken now (not the statement's, nor a repeatable-read
/// transaction's): a load must see every flush that ended before it.
/// Runs inside the caller's SPI connection, as the state owner.
fn stored_count_latest(tenant: Uuid, day: i32) -> SaasResult<i64> {
    use pg_sys::BuiltinOid as B;
    let row = select_latest(
        &STORED_LATEST_PLAN,
        c"SELECT u.count FROM saas.usage_daily u WHERE u.tenant_id = $1 AND u.metric = $2 AND u.day = DATE '2000-01-01' + $3",
        &[B::UUIDOID.value(), B::TEXTOID.value(), B::INT4OID.value()],
        &[
            to_pg_uuid(tenant).into_datum(),
            API_CALLS.into_datum(),
            day.into_datum(),
        ],
    )?;
    Ok(row
        .and_then(|r| r.into_iter().next().flatten())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

/// A tenant's usage per day (days since 2000-01-01) and metric, from
/// `from_day` to `to_day`: `usage_daily` plus the counts still in shared
/// memory, read as one. A flush moves counts from shared memory to the
/// table when its transaction commits, so the two are read while no flush
/// is in motion, the table with a snapshot taken after shared memory, and
/// read again if a flush began or ended meanwhile (otherwise a flush that
/// committed between the two reads is missed on both sides). Must run
/// inside an SPI connection, as the table's owner.
pub(crate) fn report_counts(
    tenant: Uuid,
    from_day: i32,
    to_day: i32,
) -> SaasResult<Vec<(i32, String, i64)>> {
    use pg_sys::BuiltinOid as B;
    let own = FLUSHING_HERE.get();
    let deadline = Instant::now() + FLUSH_WAIT;
    loop {
        let since = shmem::flush_state();
        if since.is_some_and(|s| s.flushing()) && !own {
            wait_for_flush(deadline)?;
            continue;
        }
        let mut counts: HashMap<(i32, String), i64> = HashMap::new();
        for c in shmem::counters_snapshot() {
            if c.key.kind == slots::KIND_USAGE
                && c.key.tenant == tenant.0
                && (from_day..=to_day).contains(&c.key.day)
            {
                // Our own flush's rows are visible to us and still pending.
                let pending = c.pending - in_flight_here(&c.key);
                *counts
                    .entry((c.key.day, c.key.metric_name().to_string()))
                    .or_default() += pending;
            }
        }
        let rows = select_latest_rows(
            &REPORT_LATEST_PLAN,
            c"SELECT u.day - DATE '2000-01-01', u.metric, u.count FROM saas.usage_daily u \
              WHERE u.tenant_id = $1 AND u.day BETWEEN DATE '2000-01-01' + $2 AND DATE '2000-01-01' + $3",
            &[B::UUIDOID.value(), B::INT4OID.value(), B::INT4OID.value()],
            &[
                to_pg_uuid(tenant).into_datum(),
                from_day.into_datum(),
                to_day.into_datum(),
            ],
            0,
        )?;
        if shmem::flush_state() != since {
            wait_for_flush(deadline)?;
            continue;
        }
        for row in rows {
            let mut r = row.into_iter().map(Option::unwrap_or_default);
            let (day, metric, count) = (r.next(), r.next(), r.next());
            let day = day.and_then(|d| d.parse().ok());
            let count = count.and_then(|n| n.parse::<i64>().ok());
            if let (Some(day), Some(metric), Some(count)) = (day, metric, count) {
                *counts.entry((day, metric)).or_default() += count;
            }
        }
        let mut out: Vec<_> = counts.into_iter().map(|((d, m), n)| (d, m, n)).collect();
        out.sort();
        return Ok(out);
    }
}

/// Counts the call in the table, in one upsert that checks the quota (the
/// row lock orders concurrent writers); Some(count) when refused.
fn count_in_table(
    client: &mut SpiClient<'_>,
    tenant: Uuid,
    day: i32,
    limit: Option<i64>,
) -> SaasResult<Option<i64>> {
    use pg_sys::BuiltinOid as B;
    if read_only() {
        if limit.is_none() {
            // Unlimited and nowhere to count it: admitted uncounted.
            return Ok(None);
        }
        return Err(read_only_error("the daily API quota"));
    }
    let tenant_uuid = to_pg_uuid(tenant);
    let stmt = kept_plan(
        &USAGE_ADD_PLAN,
        client,
        "INSERT INTO saas.usage_daily AS u (tenant_id, metric, day, count) \
         SELECT $1, $2, DATE '2000-01-01' + $3, 1 WHERE $4::int8 IS NULL OR 1 <= $4 \
         ON CONFLICT (tenant_id, metric, day) DO UPDATE SET count = u.count + 1 \
         WHERE $4::int8 IS NULL OR u.count + 1 <= $4 \
         RETURNING u.count",
        &[
            B::UUIDOID.value(),
            B::TEXTOID.value(),
            B::INT4OID.value(),
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
                limit.into(),
            ],
        )
        .map_err(|e| internal("count the API call", e))?;
    if !out.is_empty() {
        return Ok(None);
    }
    // Refused: read the count the upsert saw, for the message.
    let stmt = kept_plan(
        &USAGE_READ_PLAN,
        client,
        "SELECT u.count FROM saas.usage_daily u WHERE u.tenant_id = $1 AND u.metric = $2 AND u.day = DATE '2000-01-01' + $3",
        &[B::UUIDOID.value(), B::TEXTOID.value(), B::INT4OID.value()],
    )
    .map_err(|e| internal("prepare the usage lookup", e))?;
    let rows = client
        .select(
            stmt,
            None,
            &[tenant_uuid.into(), API_CALLS.into(), day.into()],
        )
        .map_err(|e| internal("read usage", e))?;
    let stored = if rows.is_empty() {
        0
    } else {
        rows.first()
            .get::<i64>(1)
            .map_err(|e| internal("read usage", e))?
            .unwrap_or(0)
    };
    Ok(Some(stored))
}

pub(super) fn usage_flush_impl() -> SaasResult<i64> {
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
            FLUSHING_HERE.set(true);
            WRITING_FLUSH.set(true);
            let snap = shmem::flush_begin();
            let (usage, refusals): (Vec<&CounterSlot>, Vec<&CounterSlot>) =
                snap.iter().partition(|c| c.key.kind == slots::KIND_USAGE);
            let tenants = |v: &[&CounterSlot]| -> Vec<pgrx::Uuid> {
                v.iter()
                    .map(|c| pgrx::Uuid::from_bytes(c.key.tenant))
                    .collect()
            };
            let days = |v: &[&CounterSlot]| -> Vec<i32> { v.iter().map(|c| c.key.day).collect() };
            let amounts =
                |v: &[&CounterSlot]| -> Vec<i64> { v.iter().map(|c| c.pending).collect() };
            if !usage.is_empty() {
                let metrics: Vec<String> = usage
                    .iter()
                    .map(|c| c.key.metric_name().to_string())
                    .collect();
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
            WRITING_FLUSH.set(false);
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
