//! One `rate_limit()` call: its arguments checked, the key checked in its
//! backend, and the `saas.rate_limit_result` value it returns.

use super::backend::{backend, check_key};
use super::gcra::{self, Decision, Limit};
use super::now_us;
use crate::error::{ErrorKind, SaasError, SaasResult};
use pgrx::prelude::*;

/// Namespace of keys passed to `rate_limit()` directly; rules use their id,
/// so no caller of `rate_limit()` can spend a rule's counter.
const DIRECT_KEYS: i64 = 0;
/// Longest key `rate_limit()` accepts.
const KEY_MAX: usize = 512;
fn null_error(what: &str) -> SaasError {
    SaasError::new(
        ErrorKind::NullValue,
        format!("rate_limit: {what} must not be NULL"),
        "Pass a key, a burst, a count, a period and a cost, e.g. saas.rate_limit('user:42', 10, 10, '1 minute').",
    )
}

pub(super) fn period_us(period: &Interval) -> SaasResult<i64> {
    gcra::interval_us(period.months(), period.days(), period.micros()).ok_or_else(|| {
        SaasError::new(
            ErrorKind::OutOfRange,
            "rate limit period is out of range",
            "Use a period of at most a few years.",
        )
    })
}

pub(super) fn limit_of(max_burst: i64, count: i64, period: &Interval) -> SaasResult<Limit> {
    Limit::new(max_burst, count, period_us(period)?)
}

/// One `saas.rate_limit_result` value.
pub struct RateLimitResult(pub(super) Decision);

// The SQL type is created by the `rate_limit_result` block above, which
// `rate_limit` requires.
pgrx::impl_sql_translatable!(RateLimitResult, "@extschema@.rate_limit_result");

// SAFETY: `rate_limit` is declared to return saas.rate_limit_result, whose
// five attributes are filled here in order.
unsafe impl pgrx::callconv::BoxRet for RateLimitResult {
    /// # Safety
    ///
    /// As for [`pgrx::callconv::BoxRet::box_into`]: `fcinfo` is the call's.
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
            seconds(d.retry_after_us)
                .into_datum()
                .unwrap_or(pg_sys::Datum::null()),
            seconds(d.reset_after_us)
                .into_datum()
                .unwrap_or(pg_sys::Datum::null()),
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
        // SAFETY: `fcinfo` is this call's; the five values are datums of the
        // five types given, which return_composite checks against the
        // declared result type; nothing else uses this call site's fn_extra.
        unsafe { crate::pgutil::return_composite(fcinfo, &types, &mut values, &mut nulls) }
    }
}

pub(super) fn rate_limit_impl(
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
            format!(
                "rate_limit: the key is {} bytes, longer than {KEY_MAX}",
                key.len()
            ),
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
