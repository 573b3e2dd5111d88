//! Daily usage: the API calls `pre_request()` counts against the plan's
//! quota, and the counts of read-only requests waiting in shared memory
//! until `usage_flush()` writes them (and they leave shared memory when
//! its transaction commits).

use super::gcra::{self, DAY_US};
use super::slots::{self, CounterKey, CounterSlot};
use super::{internal, read_only, read_only_error, shmem, state_owner};
use crate::error::SaasResult;
use crate::pgutil::{as_owner, kept_plan, to_pg_uuid};
use crate::uuid::Uuid;
use pgrx::prelude::*;
use pgrx::spi::OwnedPreparedStatement;
use std::cell::{Cell, RefCell};

/// The usage metric `pre_request()` counts.
const API_CALLS: &str = "api_calls";

thread_local! {
    static QUOTA_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
    static USAGE_READ_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
    static USAGE_ADD_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
    /// Counters this transaction's flush wrote, by the subtransaction that
    /// wrote them; subtracted from shared memory when the transaction commits.
    static TO_SETTLE: RefCell<Vec<(pg_sys::SubTransactionId, Vec<CounterSlot>)>> = const { RefCell::new(Vec::new()) };
}

pub(super) extern "C-unwind" fn on_xact(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
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
/// plan's daily quota is spent. Read-write requests count in the table in
/// one upsert; read-only ones in shared memory, against the table's count
/// plus what is pending. All in one SPI session as the state owner.
pub(super) fn count_api_call(
    owner: pg_sys::Oid,
    tenant: Uuid,
    day: i32,
    now: i64,
    exempt: bool,
) -> SaasResult<Option<QuotaRefused>> {
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
                .select(
                    stmt,
                    None,
                    &[tenant_uuid.into(), API_CALLS.into(), day.into()],
                )
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
            // An exempt call is counted as on an unlimited plan: never refused.
            let quota = if exempt { None } else { quota };
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
            Ok((plan, quota, Some(stored + pending)))
        })
    })?;
    let Some(used) = refused_at else {
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
            let snap = shmem::counters_snapshot();
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
