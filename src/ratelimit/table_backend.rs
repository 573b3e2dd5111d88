//! The table backend: GCRA state in `saas.rate_limit_state`, one atomic
//! statement per admitted check. Transactional, so it cannot write in a
//! READ ONLY transaction.

use super::gcra::{self, Decision, Limit};
use super::{internal, read_only, read_only_error, state_owner};
use crate::error::SaasResult;
use crate::pgutil::{as_owner, kept_plan, PlanCell};
use pgrx::prelude::*;
use pgrx::spi::{OwnedPreparedStatement, SpiClient};
use std::cell::Cell;

thread_local! {
    static UPDATE_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
    static CHECK_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
    static READ_PLAN: Cell<Option<&'static OwnedPreparedStatement>> = const { Cell::new(None) };
}

/// The table backend: an UPDATE (known key) or upsert (new key) that
/// advances the TAT only when the request fits, so concurrent checks
/// serialize on the key's row and none over-admits. A refusal reads the
/// key without locking it and writes nothing.
pub(super) fn table_check(
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
    let args = [
        namespace.into(),
        key.into(),
        now.into(),
        increment.into(),
        capacity.into(),
    ];
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
        let out = client
            .select(stmt, None, &args)
            .map_err(|e| internal("check a key", e))?;
        if out.is_empty() {
            return Ok(None);
        }
        let tat = out
            .first()
            .get_one::<i64>()
            .map_err(|e| internal("read a key", e))?;
        Ok(Some(gcra::admitted(
            limit,
            tat.unwrap_or(now + increment),
            now,
        )))
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
        let out = client
            .select(stmt, None, &args[..2])
            .map_err(|e| internal("read a key", e))?;
        if out.is_empty() {
            return Ok(None);
        }
        out.first()
            .get_one::<i64>()
            .map_err(|e| internal("read a key", e))
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
