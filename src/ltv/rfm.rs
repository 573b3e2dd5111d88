//! RFM quintiles, tie-safe: a value's score is fixed by how many values are
//! strictly below it (its `rank()`), so equal values always share a score,
//! unlike `ntile(5)`, which splits ties across quintiles.

/// Score 1-5 of the value with `rank()` `rank` (1-based, ties share the
/// lowest rank) among `n` values; higher values score higher.
pub fn quintile(rank: i64, n: i64) -> i32 {
    if n <= 0 || rank <= 0 {
        return 1;
    }
    let rank = rank.min(n);
    1 + ((5 * (rank - 1)) / n) as i32
}

/// Scores of every value (higher value, higher score). For recency, pass
/// the negated days since the last payment: the most recent scores 5.
pub fn quintiles<T: PartialOrd>(values: &[T]) -> Vec<i32> {
    let n = values.len() as i64;
    values
        .iter()
        .map(|v| {
            let below = values.iter().filter(|w| *w < v).count() as i64;
            quintile(below + 1, n)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn five_values_five_scores() {
        assert_eq!(quintiles(&[10, 50, 20, 40, 30]), vec![1, 5, 2, 4, 3]);
        assert_eq!(quintiles(&[7, 7, 7]), vec![1, 1, 1]);
        assert_eq!(quintile(1, 1), 1);
    }

    proptest! {
        #[test]
        fn tie_safe_monotone_balanced(values in proptest::collection::vec(0i32..20, 1..60)) {
            let s = quintiles(&values);
            for i in 0..values.len() {
                prop_assert!((1..=5).contains(&s[i]));
                for j in 0..values.len() {
                    if values[i] == values[j] { prop_assert_eq!(s[i], s[j]); }
                    if values[i] < values[j] { prop_assert!(s[i] <= s[j]); }
                }
            }
        }

        #[test]
        fn distinct_values_fill_quintiles_evenly(n in 1usize..200) {
            let values: Vec<usize> = (0..n).collect();
            let s = quintiles(&values);
            for q in 1..=5 {
                let c = s.iter().filter(|&&x| x == q).count();
                prop_assert!(c == n / 5 || c == n.div_ceil(5), "quintile {} has {} of {}", q, c, n);
            }
        }
    }
}
