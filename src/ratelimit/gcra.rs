//! GCRA (generic cell rate algorithm), the arithmetic of redis-cell's
//! `CL.THROTTLE`, as pure functions over microseconds. No pgrx types.
//!
//! A limit of `count` per `period` with burst `limit`: each unit of cost
//! advances the key's theoretical arrival time (TAT) by the emission interval
//! `T = period / count`; a request is admitted when the advanced TAT is at
//! most `limit * T` ahead of now. From an empty state `limit` unit requests
//! are admitted at once, the next one is refused, and one more is admitted
//! every `T` after that. Unlike a fixed window there is no boundary at which
//! twice the limit gets through.

use crate::error::{ErrorKind, SaasError, SaasResult};

/// A validated limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    /// Requests of cost 1 admitted at once from an empty state.
    pub burst: i64,
    /// Emission interval in microseconds (period / count), at least 1.
    pub interval_us: i64,
}

impl Limit {
    pub fn new(max_burst: i64, count: i64, period_us: i64) -> SaasResult<Limit> {
        let positive = |what: &str, v: i64| {
            if v <= 0 {
                Err(SaasError::new(
                    ErrorKind::OutOfRange,
                    format!("rate limit {what} must be positive, got {v}"),
                    "Pass a burst and count of at least 1 and a period longer than zero, e.g. rate_limit('key', 10, 10, '1 minute').",
                ))
            } else {
                Ok(())
            }
        };
        positive("max_burst", max_burst)?;
        positive("count", count)?;
        positive("period (in microseconds)", period_us)?;
        let interval_us = period_us / count;
        if interval_us < 1 {
            return Err(SaasError::new(
                ErrorKind::OutOfRange,
                format!("rate limit of {count} per {period_us} microseconds is finer than one microsecond per request"),
                "Use a longer period or a smaller count.",
            ));
        }
        if max_burst.checked_mul(interval_us).is_none() {
            return Err(SaasError::new(
                ErrorKind::OutOfRange,
                "rate limit burst times interval overflows",
                "Use a smaller max_burst or a shorter period.",
            ));
        }
        Ok(Limit {
            burst: max_burst,
            interval_us,
        })
    }

    pub fn capacity_us(self) -> i64 {
        self.burst * self.interval_us
    }
}

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: i64,
    /// Unit requests that would still be admitted right now.
    pub remaining: i64,
    /// Microseconds until this request would be admitted (0 when it was).
    pub retry_after_us: i64,
    /// Microseconds until the key is back to its empty state.
    pub reset_after_us: i64,
    /// The key's TAT after this check (unchanged when refused).
    pub tat: i64,
}

/// A request's cost: at least 1.
pub fn validate_cost(cost: i64) -> SaasResult<()> {
    if cost <= 0 {
        return Err(SaasError::new(
            ErrorKind::OutOfRange,
            format!("rate limit cost must be positive, got {cost}"),
            "Pass a cost of at least 1 (the default).",
        ));
    }
    Ok(())
}

/// One GCRA check of `cost` at `now` against a key whose TAT is `tat`
/// (`None`: a key never seen or expired). Refused requests leave the TAT
/// unchanged.
pub fn check(limit: Limit, tat: Option<i64>, now: i64, cost: i64) -> SaasResult<Decision> {
    validate_cost(cost)?;
    let base = tat.map_or(now, |t| t.max(now));
    let increment = cost.saturating_mul(limit.interval_us);
    let new_tat = base.saturating_add(increment);
    let capacity = limit.capacity_us();
    let allowed = new_tat - now <= capacity;
    let tat_after = if allowed {
        new_tat
    } else {
        base.max(tat.unwrap_or(now))
    };
    let ahead = (tat_after - now).max(0);
    let remaining = ((capacity - ahead) / limit.interval_us).max(0);
    let retry_after_us = if allowed { 0 } else { new_tat - now - capacity };
    Ok(Decision {
        allowed,
        limit: limit.burst,
        remaining,
        retry_after_us,
        reset_after_us: ahead,
        tat: tat_after,
    })
}

/// The decision for a request that was admitted and left the key at
/// `tat_after` (the table backend learns only the new state).
pub fn admitted(limit: Limit, tat_after: i64, now: i64) -> Decision {
    let ahead = (tat_after - now).max(0);
    Decision {
        allowed: true,
        limit: limit.burst,
        remaining: ((limit.capacity_us() - ahead) / limit.interval_us).max(0),
        retry_after_us: 0,
        reset_after_us: ahead,
        tat: tat_after,
    }
}

/// The key's TAT after giving back an admitted request of `cost` (another
/// rule refused the same request). `None`: the key is back to empty.
pub fn refunded(limit: Limit, tat: i64, now: i64, cost: i64) -> Option<i64> {
    let back = tat.saturating_sub(cost.saturating_mul(limit.interval_us));
    (back > now).then_some(back)
}

/// Microseconds in a day.
pub const DAY_US: i64 = 86_400_000_000;

/// Total microseconds of an interval, a month counted as 30 days (as
/// PostgreSQL compares intervals).
pub fn interval_us(months: i32, days: i32, micros: i64) -> Option<i64> {
    (months as i64)
        .checked_mul(30 * DAY_US)?
        .checked_add((days as i64).checked_mul(DAY_US)?)?
        .checked_add(micros)
}

/// Whole seconds, rounded up (what `Retry-After` and `RateLimit-Reset` carry).
pub fn ceil_seconds(us: i64) -> i64 {
    if us <= 0 {
        0
    } else {
        (us + 999_999) / 1_000_000
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: i64 = 1_000_000;

    #[test]
    fn count_per_period_admits_count_at_once_then_one_per_interval() {
        // 5 per hour: 5 at once, the 6th refused, one more every 12 minutes.
        let l = Limit::new(5, 5, 3600 * SEC).unwrap();
        let mut tat = None;
        for i in 0..5 {
            let d = check(l, tat, 0, 1).unwrap();
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 4 - i);
            tat = Some(d.tat);
        }
        let d = check(l, tat, 0, 1).unwrap();
        assert!(!d.allowed);
        assert_eq!(d.retry_after_us, 720 * SEC);
        assert_eq!(ceil_seconds(d.retry_after_us), 720);
        assert_eq!(d.reset_after_us, 3600 * SEC);
        assert!(!check(l, tat, 720 * SEC - 1, 1).unwrap().allowed);
        let d = check(l, tat, 720 * SEC, 1).unwrap();
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
    }

    #[test]
    fn cost_counts_as_that_many_requests() {
        let l = Limit::new(10, 10, 10 * SEC).unwrap();
        let d = check(l, None, 0, 7).unwrap();
        assert!(d.allowed && d.remaining == 3);
        let d2 = check(l, Some(d.tat), 0, 4).unwrap();
        assert!(!d2.allowed);
        assert_eq!(d2.tat, d.tat, "a refusal leaves the state unchanged");
        assert!(
            !check(l, None, 0, 11).unwrap().allowed,
            "more than the burst is never admitted"
        );
    }

    #[test]
    fn admitted_and_refunded_agree_with_check() {
        let l = Limit::new(3, 3, 30 * SEC).unwrap();
        let d = check(l, Some(5 * SEC), 0, 2).unwrap();
        assert_eq!(admitted(l, d.tat, 0), d);
        // Giving the 2 units back restores the state before the check.
        assert_eq!(refunded(l, d.tat, 0, 2), Some(5 * SEC));
        assert_eq!(refunded(l, 10 * SEC, 0, 1), None, "back to empty");
    }

    #[test]
    fn interval_counts_a_month_as_30_days() {
        assert_eq!(interval_us(0, 0, 90 * SEC), Some(90 * SEC));
        assert_eq!(interval_us(1, 1, 1), Some(31 * 86_400 * SEC + 1));
        assert_eq!(interval_us(i32::MAX, i32::MAX, i64::MAX), None);
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert_eq!(
            Limit::new(0, 1, SEC).unwrap_err().kind,
            ErrorKind::OutOfRange
        );
        assert_eq!(
            Limit::new(1, -1, SEC).unwrap_err().kind,
            ErrorKind::OutOfRange
        );
        assert_eq!(Limit::new(1, 1, 0).unwrap_err().kind, ErrorKind::OutOfRange);
        assert_eq!(
            Limit::new(1, 10, 5).unwrap_err().kind,
            ErrorKind::OutOfRange
        );
        let l = Limit::new(1, 1, SEC).unwrap();
        assert_eq!(
            check(l, None, 0, 0).unwrap_err().kind,
            ErrorKind::OutOfRange
        );
    }

    proptest! {
        /// Over any sequence of requests, the admitted cost up to time t never
        /// exceeds burst + elapsed / interval (GCRA's guarantee).
        #[test]
        fn never_admits_more_than_burst_plus_rate(
            burst in 1i64..20, count in 1i64..50, period_s in 1i64..100,
            steps in proptest::collection::vec((0i64..3 * SEC, 1i64..4), 1..200),
        ) {
            let l = Limit::new(burst, count, period_s * SEC).unwrap();
            let (mut now, mut tat, mut admitted) = (0i64, None, 0i64);
            for (gap, cost) in steps {
                now += gap;
                let d = check(l, tat, now, cost).unwrap();
                if d.allowed {
                    admitted += cost;
                    tat = Some(d.tat);
                }
                prop_assert!(admitted <= burst + now / l.interval_us,
                    "admitted {} by {}us, bound {}", admitted, now, burst + now / l.interval_us);
                prop_assert!(d.remaining >= 0 && d.remaining <= burst);
                prop_assert!(d.allowed || d.retry_after_us > 0);
                // A refused request becomes admissible exactly after retry_after.
                if !d.allowed && cost <= burst {
                    prop_assert!(check(l, tat, now + d.retry_after_us, cost).unwrap().allowed);
                    prop_assert!(!check(l, tat, now + d.retry_after_us - 1, cost).unwrap().allowed);
                }
            }
        }
    }
}
