//! MRR movements, ChartMogul's definitions: a customer's MRR changing from
//! zero to positive is *new* business the first time and *reactivation*
//! after that; positive to larger is *expansion*, to smaller but positive
//! *contraction*, to zero *churn* (so a customer with another active
//! subscription does not churn: MRR is summed per customer first).
//!
//! `saas.revenue_metrics` classifies with [`classify`] (through
//! `saas._mrr_movement`) at every point where one of a customer's
//! subscriptions starts or ends; [`bucket_movements`] is the same over
//! integer time, the model the tests check against a brute-force oracle.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Movement {
    None,
    New,
    Expansion,
    Contraction,
    Churn,
    Reactivation,
}

impl Movement {
    pub fn as_str(self) -> &'static str {
        match self {
            Movement::None => "none",
            Movement::New => "new",
            Movement::Expansion => "expansion",
            Movement::Contraction => "contraction",
            Movement::Churn => "churn",
            Movement::Reactivation => "reactivation",
        }
    }
}

/// The movement of one customer whose MRR goes from `prev` to `cur`;
/// `had_before`: the customer had positive MRR at some earlier time.
pub fn classify<T: PartialOrd>(prev: &T, cur: &T, zero: &T, had_before: bool) -> Movement {
    let was = prev > zero;
    let is = cur > zero;
    match (was, is) {
        (false, true) if had_before => Movement::Reactivation,
        (false, true) => Movement::New,
        (true, false) => Movement::Churn,
        (true, true) if cur > prev => Movement::Expansion,
        (true, true) if cur < prev => Movement::Contraction,
        _ => Movement::None,
    }
}

/// A subscription over integer time: active on `[start, end)`.
#[derive(Clone, Copy, Debug)]
pub struct Sub {
    pub customer: u32,
    pub start: i64,
    pub end: Option<i64>,
    pub mrr: i64,
}

fn active(s: &Sub, t: i64) -> bool {
    s.mrr > 0 && s.start <= t && s.end.is_none_or(|e| t < e)
}

/// A customer's MRR at time `t` (every subscription active then).
pub fn mrr_at(subs: &[Sub], customer: u32, t: i64) -> i64 {
    subs.iter()
        .filter(|s| s.customer == customer && active(s, t))
        .map(|s| s.mrr)
        .sum()
}

/// Movement amounts of one bucket `[from, to)`: per kind, the sum of the
/// absolute MRR changes, and how many customers churned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    pub start_mrr: i64,
    pub end_mrr: i64,
    pub new: i64,
    pub expansion: i64,
    pub contraction: i64,
    pub churn: i64,
    pub reactivation: i64,
    pub churned_customers: i64,
}

/// What `revenue_metrics` computes, from change points only: for every
/// start or end of a subscription in `[from, to)`, the customer's MRR just
/// before and at that point, classified.
pub fn bucket_movements(subs: &[Sub], from: i64, to: i64) -> Bucket {
    let customers: BTreeSet<u32> = subs.iter().map(|s| s.customer).collect();
    let mut b = Bucket::default();
    for &c in &customers {
        b.start_mrr += mrr_at(subs, c, from - 1);
        b.end_mrr += mrr_at(subs, c, to - 1);
        let points: BTreeSet<i64> = subs
            .iter()
            .filter(|s| s.customer == c && s.mrr > 0)
            .flat_map(|s| std::iter::once(s.start).chain(s.end))
            .filter(|&t| from <= t && t < to)
            .collect();
        for t in points {
            let prev = mrr_at(subs, c, t - 1);
            let cur = mrr_at(subs, c, t);
            let had = subs
                .iter()
                .any(|s| s.customer == c && s.mrr > 0 && s.start < t);
            add(&mut b, classify(&prev, &cur, &0, had), prev, cur);
        }
    }
    b
}

fn add(b: &mut Bucket, m: Movement, prev: i64, cur: i64) {
    match m {
        Movement::New => b.new += cur,
        Movement::Reactivation => b.reactivation += cur,
        Movement::Expansion => b.expansion += cur - prev,
        Movement::Contraction => b.contraction += prev - cur,
        Movement::Churn => {
            b.churn += prev;
            b.churned_customers += 1;
        }
        Movement::None => {}
    }
}

/// Brute force: step through every instant, keep each customer's history.
pub fn oracle(subs: &[Sub], from: i64, to: i64) -> Bucket {
    let lo = subs.iter().map(|s| s.start).min().unwrap_or(from).min(from) - 1;
    let mut last: BTreeMap<u32, i64> = BTreeMap::new();
    let mut ever: BTreeSet<u32> = BTreeSet::new();
    let mut b = Bucket::default();
    let customers: BTreeSet<u32> = subs.iter().map(|s| s.customer).collect();
    for t in lo..to {
        for &c in &customers {
            let now = mrr_at(subs, c, t);
            let before = *last.get(&c).unwrap_or(&0);
            if t >= from && now != before {
                let m = if before == 0 {
                    if ever.contains(&c) {
                        Movement::Reactivation
                    } else {
                        Movement::New
                    }
                } else if now == 0 {
                    Movement::Churn
                } else if now > before {
                    Movement::Expansion
                } else {
                    Movement::Contraction
                };
                add(&mut b, m, before, now);
            }
            if now > 0 {
                ever.insert(c);
            }
            last.insert(c, now);
        }
        if t == from - 1 {
            b.start_mrr = last.values().sum();
        }
    }
    b.end_mrr = last.values().sum();
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classification() {
        assert_eq!(classify(&0, &10, &0, false), Movement::New);
        assert_eq!(classify(&0, &10, &0, true), Movement::Reactivation);
        assert_eq!(classify(&10, &0, &0, true), Movement::Churn);
        assert_eq!(classify(&10, &20, &0, true), Movement::Expansion);
        assert_eq!(classify(&20, &10, &0, true), Movement::Contraction);
        assert_eq!(classify(&10, &10, &0, true), Movement::None);
        assert_eq!(classify(&0, &0, &0, true), Movement::None);
    }

    #[test]
    fn another_active_subscription_is_not_churn() {
        let subs = [
            Sub {
                customer: 1,
                start: 0,
                end: Some(5),
                mrr: 10,
            },
            Sub {
                customer: 1,
                start: 2,
                end: None,
                mrr: 5,
            },
        ];
        let b = bucket_movements(&subs, 3, 10);
        assert_eq!(b.churn, 0);
        assert_eq!(b.contraction, 10);
        assert_eq!(b, oracle(&subs, 3, 10));
    }

    fn sub() -> impl Strategy<Value = Sub> {
        (0u32..4, 0i64..30, proptest::option::of(1i64..20), 0i64..4).prop_map(|(c, s, len, m)| {
            Sub {
                customer: c,
                start: s,
                end: len.map(|l| s + l),
                mrr: m * 10,
            }
        })
    }

    proptest! {
        #[test]
        fn change_points_equal_brute_force(subs in proptest::collection::vec(sub(), 0..8), from in 0i64..35, len in 1i64..15) {
            let b = bucket_movements(&subs, from, from + len);
            prop_assert_eq!(&b, &oracle(&subs, from, from + len));
            // the MRR bridge: end = start + new + expansion + reactivation - contraction - churn
            prop_assert_eq!(b.end_mrr, b.start_mrr + b.new + b.expansion + b.reactivation - b.contraction - b.churn);
        }
    }
}
