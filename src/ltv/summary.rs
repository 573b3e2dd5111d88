//! The lifetimes-style summary of one customer, from its per-day series
//! (`saas.ltv_daily`): what `lifetimes.utils.summary_data_from_transaction_data`
//! gives with `freq='D'` and `freq_multiplier` = the period in days.
//!
//! With the purchase days `d_0 < d_1 < ... < d_n` (UTC days up to the
//! observation end, whose day is `e`), and `k` days per period:
//! frequency = n (repeat purchase days), recency = (d_n - d_0) / k,
//! T = (e - d_0) / k, monetary value = the mean net amount of the repeat
//! days d_1..d_n (0 without repeats). `saas.ltv_summary` computes exactly
//! these with SQL over the series; the tests check them against a direct
//! computation from the transactions.

#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub frequency: i64,
    pub recency: f64,
    pub t: f64,
    pub monetary_value: f64,
}

/// From a customer's series: `(day, net)` ascending with distinct days, net
/// in the smallest currency unit. None when the customer has no day up to
/// `observation_end`.
pub fn from_daily(
    series: &[(i32, i64)],
    period_days: i32,
    observation_end: i32,
) -> Option<Summary> {
    let days: Vec<&(i32, i64)> = series
        .iter()
        .filter(|(d, _)| *d <= observation_end)
        .collect();
    let first = days.first()?;
    let last = days.last()?;
    let n = days.len() as i64 - 1;
    let k = period_days as f64;
    let repeat: i64 = days.iter().skip(1).map(|(_, a)| a).sum();
    Some(Summary {
        frequency: n,
        recency: (last.0 - first.0) as f64 / k,
        t: (observation_end - first.0) as f64 / k,
        monetary_value: if n == 0 {
            0.0
        } else {
            repeat as f64 / n as f64
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// lifetimes' algorithm on raw transactions `(seconds since epoch,
    /// amount)`: truncate to the day, drop those after the observation
    /// end, group per day, first day excluded from the mean.
    fn direct(tx: &[(i64, i64)], period_days: i32, observation_end: i32) -> Option<Summary> {
        let mut per_day: BTreeMap<i32, i64> = BTreeMap::new();
        for &(s, a) in tx {
            let day = s.div_euclid(86_400) as i32;
            if day <= observation_end {
                *per_day.entry(day).or_default() += a;
            }
        }
        let min = *per_day.keys().next()?;
        let max = *per_day.keys().last()?;
        let count = per_day.len() as i64;
        let rest: Vec<i64> = per_day
            .iter()
            .filter(|(d, _)| **d != min)
            .map(|(_, a)| *a)
            .collect();
        Some(Summary {
            frequency: count - 1,
            recency: (max - min) as f64 / period_days as f64,
            t: (observation_end - min) as f64 / period_days as f64,
            monetary_value: if rest.is_empty() {
                0.0
            } else {
                rest.iter().sum::<i64>() as f64 / rest.len() as f64
            },
        })
    }

    /// The series as the ledger triggers keep it: per day, net summed,
    /// days whose payments were all removed gone.
    fn series_of(tx: &[(i64, i64)]) -> Vec<(i32, i64)> {
        let mut m: BTreeMap<i32, i64> = BTreeMap::new();
        for &(s, a) in tx {
            *m.entry(s.div_euclid(86_400) as i32).or_default() += a;
        }
        m.into_iter().collect()
    }

    #[test]
    fn one_purchase() {
        let s = from_daily(&[(10, 500)], 1, 20).unwrap();
        assert_eq!(
            s,
            Summary {
                frequency: 0,
                recency: 0.0,
                t: 10.0,
                monetary_value: 0.0
            }
        );
        assert_eq!(from_daily(&[(30, 5)], 1, 20), None);
    }

    proptest! {
        #[test]
        fn equals_direct_computation(
            tx in proptest::collection::vec((-86_400i64 * 3..86_400 * 60, -5_000i64..50_000), 0..40),
            k in 1i32..31,
            end in -2i32..70,
        ) {
            prop_assert_eq!(from_daily(&series_of(&tx), k, end), direct(&tx, k, end));
        }
    }
}
