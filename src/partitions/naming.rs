//! Month arithmetic and partition names: pure logic, no pgrx types.

use crate::error::{ErrorKind, SaasError, SaasResult};

/// PostgreSQL's identifier limit (NAMEDATALEN - 1), in bytes.
pub const MAX_IDENTIFIER_BYTES: usize = 63;

/// A calendar month as a count of months since year 0: easy to add to and
/// compare, and free of day-of-month and time-zone questions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month(i64);

impl Month {
    pub fn new(year: i32, month: i32) -> SaasResult<Month> {
        if !(1..=12).contains(&month) {
            return Err(SaasError::new(
                ErrorKind::OutOfRange,
                format!("month {month} is out of range"),
                "Months are numbered 1 to 12.",
            ));
        }
        if !(1..=9999).contains(&year) {
            return Err(SaasError::new(
                ErrorKind::OutOfRange,
                format!("year {year} is out of range for monthly partitions"),
                "Monthly partitions are named with four-digit years (1 to 9999).",
            ));
        }
        Ok(Month(i64::from(year) * 12 + i64::from(month - 1)))
    }

    pub fn year(self) -> i32 {
        self.0.div_euclid(12) as i32
    }

    /// 1 to 12.
    pub fn month(self) -> i32 {
        self.0.rem_euclid(12) as i32 + 1
    }

    pub fn plus(self, months: i64) -> Month {
        Month(self.0 + months)
    }

    /// Whole months from `self` to `later` (negative when `later` is earlier).
    pub fn months_until(self, later: Month) -> i64 {
        later.0 - self.0
    }
}

/// The longest prefix of `s` that fits in `max_bytes` without splitting a
/// UTF-8 character.
pub fn truncate_utf8(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let mut end = max_bytes;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn with_suffix(parent: &str, suffix: &str) -> String {
    let keep = MAX_IDENTIFIER_BYTES - suffix.len();
    format!("{}{}", truncate_utf8(parent, keep), suffix)
}

/// `<parent>_pYYYY_MM`, the parent's name shortened so the whole stays
/// within 63 bytes (PostgreSQL would silently truncate the suffix instead).
pub fn partition_name(parent: &str, month: Month) -> String {
    with_suffix(
        parent,
        &format!("_p{:04}_{:02}", month.year(), month.month()),
    )
}

/// `<parent>_default`, shortened the same way.
pub fn default_partition_name(parent: &str) -> String {
    with_suffix(parent, "_default")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names() {
        let m = Month::new(2026, 3).unwrap();
        assert_eq!(partition_name("events", m), "events_p2026_03");
        assert_eq!(default_partition_name("events"), "events_default");
        let long = "a".repeat(70);
        let n = partition_name(&long, m);
        assert_eq!(n.len(), 63);
        assert!(n.ends_with("_p2026_03"));
        // Multi-byte characters are never split.
        let accents = "é".repeat(40); // 80 bytes
        let n = partition_name(&accents, m);
        assert!(n.len() <= 63 && n.ends_with("_p2026_03"));
        assert!(n.trim_end_matches("_p2026_03").chars().all(|c| c == 'é'));
    }

    #[test]
    fn month_arithmetic() {
        let m = Month::new(2026, 11).unwrap();
        assert_eq!((m.plus(2).year(), m.plus(2).month()), (2027, 1));
        assert_eq!((m.plus(-11).year(), m.plus(-11).month()), (2025, 12));
        assert_eq!(m.months_until(Month::new(2027, 2).unwrap()), 3);
        assert_eq!(Month::new(2026, 13).unwrap_err().sqlstate(), "22003");
        assert_eq!(Month::new(2026, 0).unwrap_err().sqlstate(), "22003");
        assert_eq!(Month::new(10000, 1).unwrap_err().sqlstate(), "22003");
    }

    proptest! {
        #[test]
        fn plus_then_back(y in 1i32..9999, mo in 1i32..=12, k in -1200i64..1200) {
            let m = Month::new(y, mo).unwrap();
            prop_assert_eq!(m.plus(k).plus(-k), m);
            prop_assert_eq!(m.months_until(m.plus(k)), k);
            prop_assert!((1..=12).contains(&m.plus(k).month()));
            prop_assert_eq!(Month::new(m.year(), m.month()).unwrap(), m);
        }

        #[test]
        fn names_fit_and_stay_distinct(parent in "\\PC{1,80}", y in 1i32..9999, mo in 1i32..=12, k in 1i64..600) {
            let a = Month::new(y, mo).unwrap();
            let b = a.plus(k);
            prop_assume!(b.year() <= 9999);
            let (na, nb) = (partition_name(&parent, a), partition_name(&parent, b));
            prop_assert!(na.len() <= MAX_IDENTIFIER_BYTES && nb.len() <= MAX_IDENTIFIER_BYTES);
            prop_assert_ne!(&na, &nb);
            let prefix = na.strip_suffix(&format!("_p{:04}_{:02}", a.year(), a.month())).unwrap();
            prop_assert!(parent.starts_with(prefix));
            prop_assert!(default_partition_name(&parent).len() <= MAX_IDENTIFIER_BYTES);
        }
    }
}
