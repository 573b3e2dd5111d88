//! Which partition of a range-partitioned table a key value belongs to:
//! PostgreSQL's own rule (`get_partition_for_tuple`) for a one-column key
//! ordered as a 64-bit integer (timestamptz, bigint), over the bounds of its
//! partition descriptor. Pure logic, so proptest can hold it against the
//! plain "lower <= value < upper" definition.

/// One bound of a range partition descriptor, in its sorted order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RangeBound {
    /// `MINVALUE`: below every value.
    Min,
    Value(i64),
    /// `MAXVALUE`: above every value.
    Max,
}

impl RangeBound {
    fn at_or_below(self, value: i64) -> bool {
        match self {
            RangeBound::Min => true,
            RangeBound::Value(b) => b <= value,
            RangeBound::Max => false,
        }
    }
}

/// The index of the partition that holds `value`, or `None` when no
/// partition and no default does. `bounds` are the descriptor's sorted bounds
/// (`ndatums`), `indexes` its `ndatums + 1` partition indexes (-1 where a gap
/// lies between partitions), `default_index` -1 when there is no default.
pub fn range_partition_for(
    bounds: &[RangeBound],
    indexes: &[i32],
    default_index: i32,
    value: i64,
) -> Option<usize> {
    // The number of bounds at or below the value: PostgreSQL takes the bound
    // after the greatest such one as the partition's upper bound.
    let below = bounds.partition_point(|b| b.at_or_below(value));
    let part = indexes.get(below).copied().unwrap_or(-1);
    let part = if part >= 0 { part } else { default_index };
    usize::try_from(part).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Partitions as PostgreSQL lays them out: sorted, non-overlapping
    /// [lower, upper) ranges; a bound shared by neighbours appears once.
    fn descriptor(ranges: &[(i64, i64)]) -> (Vec<RangeBound>, Vec<i32>) {
        let mut bounds = Vec::new();
        let mut indexes = vec![-1];
        for (i, &(lo, hi)) in ranges.iter().enumerate() {
            if bounds.last() != Some(&RangeBound::Value(lo)) {
                bounds.push(RangeBound::Value(lo));
                indexes.push(-1);
            }
            bounds.push(RangeBound::Value(hi));
            *indexes.last_mut().unwrap() = i as i32;
            indexes.push(-1);
        }
        (bounds, indexes)
    }

    #[test]
    fn months_with_a_gap_and_a_default() {
        let (b, i) = descriptor(&[(0, 10), (10, 20), (30, 40)]);
        assert_eq!(range_partition_for(&b, &i, -1, 0), Some(0));
        assert_eq!(range_partition_for(&b, &i, -1, 9), Some(0));
        assert_eq!(range_partition_for(&b, &i, -1, 10), Some(1));
        assert_eq!(range_partition_for(&b, &i, -1, 25), None);
        assert_eq!(range_partition_for(&b, &i, 7, 25), Some(7));
        assert_eq!(range_partition_for(&b, &i, -1, 40), None);
        assert_eq!(range_partition_for(&b, &i, -1, -1), None);
        assert_eq!(range_partition_for(&[], &[-1], 3, 5), Some(3));
    }

    #[test]
    fn minvalue_and_maxvalue_bounds() {
        // (MINVALUE, 0) is partition 0, [0, MAXVALUE) partition 1.
        let b = [RangeBound::Min, RangeBound::Value(0), RangeBound::Max];
        let i = [-1, 0, 1, -1];
        assert_eq!(range_partition_for(&b, &i, -1, i64::MIN), Some(0));
        assert_eq!(range_partition_for(&b, &i, -1, -1), Some(0));
        assert_eq!(range_partition_for(&b, &i, -1, 0), Some(1));
        assert_eq!(range_partition_for(&b, &i, -1, i64::MAX), Some(1));
    }

    proptest! {
        #[test]
        fn agrees_with_lower_le_value_lt_upper(
            cuts in proptest::collection::btree_set(-1000i64..1000, 2..12),
            gaps in proptest::collection::vec(any::<bool>(), 12),
            default in prop_oneof![Just(-1), Just(99)],
            value in -1100i64..1100,
        ) {
            let cuts: Vec<i64> = cuts.into_iter().collect();
            let ranges: Vec<(i64, i64)> = cuts.windows(2).zip(&gaps).filter(|(_, gap)| !**gap).map(|(w, _)| (w[0], w[1])).collect();
            let (b, i) = descriptor(&ranges);
            let expected = ranges.iter().position(|&(lo, hi)| lo <= value && value < hi)
                .or(usize::try_from(default).ok());
            prop_assert_eq!(range_partition_for(&b, &i, default, value), expected);
        }
    }
}
