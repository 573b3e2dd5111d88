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

/// Bytes of the parent-name hash in a shortened name: `_` and 8 hex digits.
const HASH_TAG_BYTES: usize = 9;

/// A short stable tag of a parent's full name: the first 4 bytes of its
/// SHA-256, in hex. Derived from the name alone (never the oid), so a dump
/// restored elsewhere names new partitions as the original would.
fn name_tag(parent: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(parent.as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// `parent` + `suffix` when that fits in 63 bytes (the names pg_saas has
/// always given). Otherwise the parent's name is shortened (never inside a
/// UTF-8 character, without trailing underscores) and a tag of its full
/// name is added, `_xxxxxxxx`, so that parents whose long names share a
/// prefix get distinct partitions: cutting alone gave both the same name
/// (42P07 for the second, in 0.1.0).
fn with_suffix(parent: &str, suffix: &str) -> String {
    if parent.len() + suffix.len() <= MAX_IDENTIFIER_BYTES {
        return format!("{parent}{suffix}");
    }
    let keep = MAX_IDENTIFIER_BYTES - HASH_TAG_BYTES - suffix.len();
    // No run of underscores before the tag where the cut fell after one.
    let prefix = truncate_utf8(parent, keep).trim_end_matches('_');
    format!("{prefix}_{}{suffix}", name_tag(parent))
}

/// `<parent>_pYYYY_MM`; a parent's name too long for that within 63 bytes
/// (PostgreSQL would silently truncate the suffix instead) is shortened and
/// tagged with a hash of it: `<prefix>_<hash>_pYYYY_MM`.
pub fn partition_name(parent: &str, month: Month) -> String {
    with_suffix(
        parent,
        &format!("_p{:04}_{:02}", month.year(), month.month()),
    )
}

/// `<parent>_default`, shortened and tagged the same way.
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
        // Names that just fit are kept whole (54 and 55 bytes of parent).
        let fits = "b".repeat(54);
        assert_eq!(partition_name(&fits, m), format!("{fits}_p2026_03"));
        let fits = "b".repeat(55);
        assert_eq!(default_partition_name(&fits), format!("{fits}_default"));
        // Longer ones are cut and tagged with a hash of the whole name. The
        // tag is pinned: it names existing partitions, so it never changes.
        let long = "a".repeat(70);
        let n = partition_name(&long, m);
        assert_eq!(
            n,
            format!("{}_{}_p2026_03", "a".repeat(45), name_tag(&long))
        );
        assert_eq!(n.len(), 63);
        assert_eq!(name_tag(&long), "6bd5e503");
        assert_eq!(name_tag("events"), "862417b9");
        let d = default_partition_name(&long);
        assert_eq!(d, format!("{}_{}_default", "a".repeat(46), name_tag(&long)));
        // Multi-byte characters are never split.
        let accents = "é".repeat(40); // 80 bytes
        let n = partition_name(&accents, m);
        assert!(n.len() <= 63 && n.ends_with("_p2026_03"));
        let prefix = n
            .strip_suffix(&format!("_{}_p2026_03", name_tag(&accents)))
            .unwrap();
        assert!(!prefix.is_empty() && prefix.chars().all(|c| c == 'é'));
    }

    #[test]
    fn long_names_differing_late_stay_apart() {
        // 63-byte names (PostgreSQL's longest) that differ only in the last
        // byte: cut to 54 bytes they were the same (issue 15).
        let m = Month::new(2026, 11).unwrap();
        let base = "c".repeat(62);
        let (a, b) = (format!("{base}1"), format!("{base}2"));
        assert_ne!(partition_name(&a, m), partition_name(&b, m));
        assert_ne!(default_partition_name(&a), default_partition_name(&b));
        // A cut after an underscore does not double it before the tag.
        let words = format!("{}_{}", "d".repeat(44), "e".repeat(18));
        let n = partition_name(&words, m);
        assert_eq!(
            n,
            format!("{}_{}_p2026_11", "d".repeat(44), name_tag(&words))
        );
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
            let tag = format!("_{}", name_tag(&parent));
            let kept = prefix == parent
                || prefix.strip_suffix(&tag).is_some_and(|cut| parent.starts_with(cut));
            prop_assert!(kept, "{} is neither {} nor its prefix and tag", prefix, parent);
            prop_assert!(default_partition_name(&parent).len() <= MAX_IDENTIFIER_BYTES);
        }

        #[test]
        fn short_names_are_unchanged(parent in "\\PC{1,63}", y in 1i32..9999, mo in 1i32..=12) {
            let m = Month::new(y, mo).unwrap();
            let suffix = format!("_p{y:04}_{mo:02}");
            if parent.len() + suffix.len() <= MAX_IDENTIFIER_BYTES {
                prop_assert_eq!(partition_name(&parent, m), format!("{parent}{suffix}"));
            }
            if parent.len() + "_default".len() <= MAX_IDENTIFIER_BYTES {
                prop_assert_eq!(default_partition_name(&parent), format!("{parent}_default"));
            }
        }

        /// Distinct parents get distinct names, however long, even when they
        /// share everything but their last characters; every name fits in
        /// 63 bytes and is whole UTF-8 (cut on character boundaries).
        #[test]
        fn distinct_parents_get_distinct_names(
            common in "\\PC{0,70}",
            tail_a in "\\PC{0,6}",
            tail_b in "\\PC{0,6}",
            y in 1i32..9999,
            mo in 1i32..=12,
        ) {
            let (a, b) = (format!("{common}{tail_a}"), format!("{common}{tail_b}"));
            prop_assume!(a != b && !a.is_empty() && !b.is_empty());
            let m = Month::new(y, mo).unwrap();
            let names = [
                (partition_name(&a, m), partition_name(&b, m)),
                (default_partition_name(&a), default_partition_name(&b)),
            ];
            for (na, nb) in names {
                prop_assert_ne!(&na, &nb);
                for n in [&na, &nb] {
                    prop_assert!(n.len() <= MAX_IDENTIFIER_BYTES);
                    prop_assert!(std::str::from_utf8(n.as_bytes()).is_ok());
                }
            }
        }
    }
}
