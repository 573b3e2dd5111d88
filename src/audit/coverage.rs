//! Which seal holds a row, and whether retention retired a seal's rows.
//! Pure Rust, for `audit_verify`.

use super::record::Seal;

/// One tenant's seals, found by a row's transaction id and time: the seals
/// of one sealing pass share a transaction id range (one seal per month),
/// a re-seal shares the range of the 0.1.0 seal it re-seals, and ranges of
/// different passes follow each other without overlapping.
pub struct Cells<'a> {
    /// Indices into `seals`, ordered by `xid_from`, then `seal_no`.
    order: Vec<usize>,
    seals: &'a [&'a Seal],
}

impl<'a> Cells<'a> {
    pub fn new(seals: &'a [&'a Seal]) -> Self {
        let mut order: Vec<usize> = (0..seals.len()).collect();
        order.sort_by_key(|&i| (seals[i].xid_from, seals[i].seal_no));
        Cells { order, seals }
    }

    /// The seals (indices into the slice given to [`Cells::new`]) whose rows
    /// include a row with transaction id `txid` logged at `at`.
    pub fn covering(&self, txid: i64, at: i64) -> Vec<usize> {
        let end = self
            .order
            .partition_point(|&i| self.seals[i].xid_from <= txid);
        let Some(&last) = end.checked_sub(1).map(|e| &self.order[e]) else {
            return Vec::new();
        };
        let start = self.seals[last].xid_from;
        self.order[..end]
            .iter()
            .rev()
            .take_while(|&&i| self.seals[i].xid_from == start)
            .copied()
            .filter(|&i| self.seals[i].covers(txid, at))
            .collect()
    }
}

/// Where a seal's rows stand with respect to the months retention retired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retirement {
    /// No row of it was in a retired month: every row must be there.
    Live,
    /// Every row of it was in a retired month: its rows are gone on purpose.
    Retired,
    /// Some of its rows were in retired months, some in months still kept.
    Partly,
}

/// The months retention retired, as merged `[from, to)` ranges (unix micros).
#[derive(Default)]
pub struct RetiredMonths(Vec<(i64, i64)>);

impl RetiredMonths {
    pub fn new(mut ranges: Vec<(i64, i64)>) -> Self {
        ranges.retain(|(from, to)| from < to);
        ranges.sort_unstable();
        let mut merged: Vec<(i64, i64)> = Vec::with_capacity(ranges.len());
        for (from, to) in ranges {
            match merged.last_mut() {
                Some(last) if from <= last.1 => last.1 = last.1.max(to),
                _ => merged.push((from, to)),
            }
        }
        RetiredMonths(merged)
    }

    /// A seal whose rows were logged between `first` and `last` (both
    /// included): retired only when that whole span was retired.
    pub fn of(&self, first: i64, last: i64) -> Retirement {
        if self.0.iter().any(|&(from, to)| from <= first && last < to) {
            Retirement::Retired
        } else if self.0.iter().any(|&(from, to)| from <= last && first < to) {
            Retirement::Partly
        } else {
            Retirement::Live
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(seal_no: i64, xid: (i64, i64), month: Option<(i64, i64)>) -> Seal {
        Seal {
            tenant_id: "t".into(),
            seal_no,
            xid_from: xid.0,
            xid_to: xid.1,
            row_count: 1,
            rows_digest: [0; 32],
            prev_hash: [0; 32],
            sealed_at_unix_micros: 0,
            first_logged_at: 0,
            last_logged_at: 0,
            month,
            reseals: None,
        }
    }

    #[test]
    fn a_row_is_found_in_the_seal_of_its_range_and_month() {
        let legacy = seal(1, (10, 20), None);
        let m1 = seal(2, (20, 30), Some((0, 100)));
        let m2 = seal(3, (20, 30), Some((100, 200)));
        let reseal = seal(4, (10, 20), Some((100, 200)));
        let next = seal(5, (30, 40), Some((100, 200)));
        let all = [&next, &m2, &legacy, &reseal, &m1];
        let cells = Cells::new(&all);
        let found = |txid, at| {
            let mut v: Vec<i64> = cells
                .covering(txid, at)
                .iter()
                .map(|&i| all[i].seal_no)
                .collect();
            v.sort();
            v
        };
        assert_eq!(found(9, 50), Vec::<i64>::new());
        assert_eq!(found(10, 50), vec![1]);
        assert_eq!(found(19, 150), vec![1, 4]);
        assert_eq!(found(20, 50), vec![2]);
        assert_eq!(found(29, 150), vec![3]);
        // A month of that pass without a seal: no seal holds the row.
        assert_eq!(found(25, 250), Vec::<i64>::new());
        assert_eq!(found(30, 150), vec![5]);
        assert_eq!(found(40, 150), Vec::<i64>::new());
    }

    #[test]
    fn a_seal_is_retired_only_when_all_its_rows_were() {
        let r = RetiredMonths::new(vec![(200, 300), (100, 200), (500, 600)]);
        assert_eq!(r.of(100, 299), Retirement::Retired);
        assert_eq!(r.of(150, 150), Retirement::Retired);
        assert_eq!(r.of(250, 300), Retirement::Partly);
        assert_eq!(r.of(50, 100), Retirement::Partly);
        assert_eq!(r.of(250, 550), Retirement::Partly);
        assert_eq!(r.of(300, 499), Retirement::Live);
        assert_eq!(r.of(0, 99), Retirement::Live);
        assert_eq!(RetiredMonths::default().of(0, 1), Retirement::Live);
    }
}
