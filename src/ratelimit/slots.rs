//! The fixed-size slot tables kept in shared memory, as plain Rust over
//! slices:
//! GCRA state per key and pending usage counters. The pgrx glue
//! (`shmem.rs`) only places these slices in shared memory and locks them.
//!
//! Both tables use open addressing with a bounded probe window and no
//! tombstones: a lookup scans the whole window, so emptying a slot never
//! hides another key.

use super::gcra::{self, Decision, Limit};
use crate::error::SaasResult;
use sha2::{Digest, Sha256};

/// Slots a key may live in, starting at its home slot.
pub const PROBE: usize = 16;

/// A 128-bit digest of a namespaced key; `[0, 0]` marks an empty slot.
pub type KeyHash = [u64; 2];

/// The digest of `key` in `namespace` (a rule id, or 0 for direct
/// `rate_limit()` calls) of `database` (shared memory is the cluster's;
/// rule ids and keys are a database's). SHA-256, so nobody can craft two
/// keys that share a state.
pub fn key_hash(database: u32, namespace: i64, key: &str) -> KeyHash {
    let mut h = Sha256::new();
    h.update(database.to_be_bytes());
    h.update(namespace.to_be_bytes());
    h.update(key.as_bytes());
    let d = h.finalize();
    let hi = u64::from_be_bytes(d[0..8].try_into().unwrap());
    let lo = u64::from_be_bytes(d[8..16].try_into().unwrap());
    // Never the empty marker.
    [hi, lo | (hi == 0 && lo == 0) as u64]
}

/// One key's GCRA state. All zero: empty.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateSlot {
    pub key: KeyHash,
    /// Theoretical arrival time, microseconds (PostgreSQL's epoch).
    pub tat: i64,
}

/// Where a key's state is, or where it would go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Existing(usize),
    /// Empty, or holding a key whose TAT has passed: such a key is in its
    /// empty state anyway, so reusing the slot loses nothing.
    Free(usize),
    /// Every slot in the window holds a live key: the one nearest to its
    /// empty state would be evicted.
    Evict(usize),
}

fn place(segment: &[RateSlot], key: KeyHash, now: i64) -> Place {
    let len = segment.len();
    let home = (key[1] % len as u64) as usize;
    let mut free = None;
    let mut oldest: Option<usize> = None;
    for step in 0..PROBE.min(len) {
        let i = (home + step) % len;
        let slot = &segment[i];
        if slot.key == key {
            return Place::Existing(i);
        }
        if slot.key == [0, 0] || slot.tat <= now {
            free.get_or_insert(i);
        } else if oldest.is_none_or(|o| slot.tat < segment[o].tat) {
            oldest = Some(i);
        }
    }
    match (free, oldest) {
        (Some(i), _) => Place::Free(i),
        (None, Some(i)) => Place::Evict(i),
        (None, None) => unreachable!("a window of at least one slot is free or occupied"),
    }
}

/// The outcome of a check against the shared table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedDecision {
    pub decision: Decision,
    /// A live key lost its state to make room (the table is too small).
    pub evicted: bool,
}

/// A GCRA check of `key` in `segment`, storing the new state when admitted.
pub fn check(
    segment: &mut [RateSlot],
    key: KeyHash,
    limit: Limit,
    now: i64,
    cost: i64,
) -> SaasResult<SharedDecision> {
    let at = place(segment, key, now);
    let tat = match at {
        Place::Existing(i) => Some(segment[i].tat),
        Place::Free(_) | Place::Evict(_) => None,
    };
    let decision = gcra::check(limit, tat, now, cost)?;
    let mut evicted = false;
    if decision.allowed {
        let i = match at {
            Place::Existing(i) | Place::Free(i) => i,
            Place::Evict(i) => {
                evicted = true;
                i
            }
        };
        segment[i] = RateSlot {
            key,
            tat: decision.tat,
        };
    }
    Ok(SharedDecision { decision, evicted })
}

/// Gives back an admitted `cost` (another rule refused the request).
pub fn refund(segment: &mut [RateSlot], key: KeyHash, limit: Limit, now: i64, cost: i64) {
    if let Place::Existing(i) = place(segment, key, now) {
        match gcra::refunded(limit, segment[i].tat, now, cost) {
            Some(tat) => segment[i].tat = tat,
            None => segment[i] = RateSlot::default(),
        }
    }
}

/// Keys whose TAT is still ahead of `now`.
pub fn live_keys(slots: &[RateSlot], now: i64) -> usize {
    slots
        .iter()
        .filter(|s| s.key != [0, 0] && s.tat > now)
        .count()
}

/// What a pending counter counts.
pub const KIND_USAGE: u32 = 1;
pub const KIND_REFUSAL: u32 = 2;
/// Longest metric name a counter holds.
pub const METRIC_MAX: usize = 32;

/// The identity of a daily counter: usage of a metric by a tenant, or
/// refusals by a rule (per tenant, nil when the request had none).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct CounterKey {
    /// 0: empty slot.
    pub kind: u32,
    /// Days since 2000-01-01 (PostgreSQL's date), UTC.
    pub day: i32,
    /// The database whose tables the counter belongs to (shared memory is
    /// the cluster's).
    pub database: u32,
    pub tenant: [u8; 16],
    /// The rule of a refusal counter; 0 for usage.
    pub rule_id: i64,
    /// The metric of a usage counter, zero-padded; empty for refusals.
    pub metric: [u8; METRIC_MAX],
}

impl CounterKey {
    pub fn usage(database: u32, tenant: [u8; 16], metric: &str, day: i32) -> Option<CounterKey> {
        let bytes = metric.as_bytes();
        if bytes.is_empty() || bytes.len() > METRIC_MAX {
            return None;
        }
        let mut m = [0u8; METRIC_MAX];
        m[..bytes.len()].copy_from_slice(bytes);
        Some(CounterKey {
            kind: KIND_USAGE,
            day,
            database,
            tenant,
            rule_id: 0,
            metric: m,
        })
    }

    pub fn refusal(database: u32, tenant: [u8; 16], rule_id: i64, day: i32) -> CounterKey {
        CounterKey {
            kind: KIND_REFUSAL,
            day,
            database,
            tenant,
            rule_id,
            metric: [0; METRIC_MAX],
        }
    }

    pub fn metric_name(&self) -> &str {
        let end = self
            .metric
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(METRIC_MAX);
        std::str::from_utf8(&self.metric[..end]).unwrap_or("")
    }

    fn home(&self, len: usize) -> usize {
        // FNV-1a over the fields; the table is not exposed to chosen keys
        // beyond tenant ids and metric names of our own.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for &b in bytes {
                h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
        };
        eat(&self.kind.to_le_bytes());
        eat(&self.day.to_le_bytes());
        eat(&self.database.to_le_bytes());
        eat(&self.tenant);
        eat(&self.rule_id.to_le_bytes());
        eat(&self.metric);
        (h % len as u64) as usize
    }
}

/// A daily counter: what is not yet written to its table (`pending`) and,
/// once loaded, the whole day's count (`total`: the table's committed count
/// when the slot was loaded, plus everything added since). A loaded usage
/// counter is the authority for a quota: admissions compare against
/// `total` alone, so no request has to read the table or wait on a row.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSlot {
    pub key: CounterKey,
    pub pending: i64,
    /// The day's count, or [`UNLOADED`].
    pub total: i64,
}

/// `CounterSlot::total` of a counter that only accumulates pending counts.
pub const UNLOADED: i64 = -1;

impl CounterSlot {
    fn loaded(&self) -> bool {
        self.total != UNLOADED
    }
}

/// Where `key` is, or a slot it may take: a free one, else a loaded
/// counter with nothing pending (its count is all in the table, so it can
/// be loaded again), the oldest day first.
fn counter_place(slots: &[CounterSlot], key: &CounterKey) -> (Option<usize>, Option<usize>) {
    let len = slots.len();
    let home = key.home(len);
    let mut free = None;
    let mut reusable: Option<usize> = None;
    for step in 0..(4 * PROBE).min(len) {
        let i = (home + step) % len;
        if slots[i].key == *key {
            return (Some(i), None);
        }
        if slots[i].key.kind == 0 {
            free.get_or_insert(i);
        } else if slots[i].pending == 0
            && slots[i].loaded()
            && reusable.is_none_or(|r| slots[i].key.day < slots[r].key.day)
        {
            reusable = Some(i);
        }
    }
    (None, free.or(reusable))
}

/// The pending amount of `key`.
pub fn pending(slots: &[CounterSlot], key: &CounterKey) -> i64 {
    counter_place(slots, key).0.map_or(0, |i| slots[i].pending)
}

/// Adds `amount` to `key`'s count (pending, and total when loaded). False
/// when the table has no room for a new key (the amount is not counted).
pub fn add(slots: &mut [CounterSlot], key: &CounterKey, amount: i64) -> bool {
    match counter_place(slots, key) {
        (Some(i), _) => {
            let s = &mut slots[i];
            s.pending = s.pending.saturating_add(amount);
            if s.loaded() {
                s.total = s.total.saturating_add(amount);
            }
            true
        }
        (None, Some(i)) => {
            slots[i] = CounterSlot {
                key: *key,
                pending: amount,
                total: UNLOADED,
            };
            true
        }
        (None, None) => false,
    }
}

/// What [`admit`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admit {
    /// Counted; the day's count is now this.
    Admitted(i64),
    /// Not counted: the day's count (this) leaves no room.
    Refused(i64),
    /// The counter is not loaded: load it (see [`load`]) and ask again.
    NotLoaded,
}

/// Counts `amount` against `limit` on a loaded counter.
pub fn admit(slots: &mut [CounterSlot], key: &CounterKey, amount: i64, limit: i64) -> Admit {
    let (Some(i), _) = counter_place(slots, key) else {
        return Admit::NotLoaded;
    };
    let s = &mut slots[i];
    if !s.loaded() {
        return Admit::NotLoaded;
    }
    if s.total.saturating_add(amount) > limit {
        return Admit::Refused(s.total);
    }
    s.total = s.total.saturating_add(amount);
    s.pending = s.pending.saturating_add(amount);
    Admit::Admitted(s.total)
}

/// Loads `key` with the table's committed count `stored`, which must have
/// been read while no flush could commit (see `shmem::counter_load`):
/// the day's count is then `stored` plus what is pending. False when the
/// table has no room for the key.
pub fn load(slots: &mut [CounterSlot], key: &CounterKey, stored: i64) -> bool {
    match counter_place(slots, key) {
        (Some(i), _) => {
            let s = &mut slots[i];
            if !s.loaded() {
                s.total = stored.saturating_add(s.pending);
            }
            true
        }
        (None, Some(i)) => {
            slots[i] = CounterSlot {
                key: *key,
                pending: 0,
                total: stored,
            };
            true
        }
        (None, None) => false,
    }
}

/// Forgets every loaded day count of `database`: counters with something
/// pending keep it (unloaded), the others free their slot.
pub fn unload_all(slots: &mut [CounterSlot], database: u32) {
    for s in slots
        .iter_mut()
        .filter(|s| s.loaded() && s.key.kind != 0 && s.key.database == database)
    {
        if s.pending == 0 {
            *s = CounterSlot::default();
        } else {
            s.total = UNLOADED;
        }
    }
}

/// Every counter of `database` with something pending (what its flush
/// writes out).
pub fn snapshot(slots: &[CounterSlot], database: u32) -> Vec<CounterSlot> {
    slots
        .iter()
        .filter(|s| s.key.kind != 0 && s.pending != 0 && s.key.database == database)
        .copied()
        .collect()
}

/// Subtracts what a committed flush wrote; unloaded counters that reach
/// zero free their slot (loaded ones keep the day's count). Counts added
/// since the snapshot stay pending.
pub fn settle(slots: &mut [CounterSlot], flushed: &[CounterSlot]) {
    for f in flushed {
        if let (Some(i), _) = counter_place(slots, &f.key) {
            slots[i].pending -= f.pending;
            if slots[i].pending == 0 && !slots[i].loaded() {
                slots[i] = CounterSlot::default();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const SEC: i64 = 1_000_000;

    #[test]
    fn keys_in_different_namespaces_differ() {
        assert_ne!(key_hash(1, 0, "a"), key_hash(1, 1, "a"));
        assert_eq!(key_hash(1, 3, "user:1"), key_hash(1, 3, "user:1"));
        assert_ne!(key_hash(1, 0, "ab"), key_hash(1, 0, "ba"));
        assert_ne!(
            key_hash(1, 3, "user:1"),
            key_hash(2, 3, "user:1"),
            "databases apart"
        );
        let k = CounterKey::usage(1, [7; 16], "api_calls", 9000).unwrap();
        let other_db = CounterKey::usage(2, [7; 16], "api_calls", 9000).unwrap();
        let mut slots = vec![CounterSlot::default(); 64];
        add(&mut slots, &k, 1);
        add(&mut slots, &other_db, 5);
        assert_eq!(
            snapshot(&slots, 1).len(),
            1,
            "a flush writes its own database's counters"
        );
        assert_eq!(pending(&slots, &other_db), 5);
    }

    #[test]
    fn a_full_window_evicts_the_key_nearest_to_empty() {
        let l = Limit::new(1, 1, 100 * SEC).unwrap();
        let mut seg = vec![RateSlot::default(); PROBE];
        // Fill the only window with live keys admitted at t = 0..PROBE.
        for t in 0..PROBE as i64 {
            let d = check(&mut seg, [1, t as u64 + 1], l, t, 1).unwrap();
            assert!(d.decision.allowed && !d.evicted);
        }
        let d = check(&mut seg, [1, 999], l, PROBE as i64, 1).unwrap();
        assert!(d.decision.allowed && d.evicted);
        // The key admitted first (smallest TAT) is the one that went.
        assert!(!seg.iter().any(|s| s.key == [1, 1]));
        // A refused new key evicts nobody.
        let again = check(&mut seg, [1, 999], l, PROBE as i64, 1).unwrap();
        assert!(!again.decision.allowed && !again.evicted);
    }

    #[test]
    fn expired_keys_are_reused_without_loss() {
        let l = Limit::new(1, 1, 10 * SEC).unwrap();
        let mut seg = vec![RateSlot::default(); PROBE];
        for k in 0..PROBE as u64 {
            check(&mut seg, [2, k + 1], l, 0, 1).unwrap();
        }
        let d = check(&mut seg, [2, 500], l, 10 * SEC, 1).unwrap();
        assert!(
            d.decision.allowed && !d.evicted,
            "an expired key's slot is free"
        );
    }

    #[test]
    fn refund_restores_the_state() {
        let l = Limit::new(2, 2, 10 * SEC).unwrap();
        let mut seg = vec![RateSlot::default(); 64];
        let k = key_hash(1, 0, "x");
        check(&mut seg, k, l, 0, 1).unwrap();
        check(&mut seg, k, l, 0, 1).unwrap();
        assert!(!check(&mut seg, k, l, 0, 1).unwrap().decision.allowed);
        refund(&mut seg, k, l, 0, 1);
        assert!(check(&mut seg, k, l, 0, 1).unwrap().decision.allowed);
        refund(&mut seg, k, l, 0, 2);
        assert_eq!(live_keys(&seg, 0), 0, "fully refunded keys leave the table");
    }

    #[test]
    fn loaded_counters_admit_within_a_limit_and_survive_a_flush() {
        let mut slots = vec![CounterSlot::default(); 128];
        let k = CounterKey::usage(1, [7; 16], "api_calls", 9000).unwrap();
        assert_eq!(admit(&mut slots, &k, 1, 10), Admit::NotLoaded);
        // Counted before the load (an unlimited plan, an exempt path).
        assert!(add(&mut slots, &k, 1));
        assert_eq!(admit(&mut slots, &k, 1, 10), Admit::NotLoaded);
        assert!(load(&mut slots, &k, 7), "stored 7 + pending 1");
        assert_eq!(admit(&mut slots, &k, 1, 10), Admit::Admitted(9));
        assert_eq!(admit(&mut slots, &k, 1, 10), Admit::Admitted(10));
        assert_eq!(admit(&mut slots, &k, 1, 10), Admit::Refused(10));
        assert!(
            load(&mut slots, &k, 0),
            "loading a loaded counter changes nothing"
        );
        assert_eq!(admit(&mut slots, &k, 1, 10), Admit::Refused(10));
        let snap = snapshot(&slots, 1);
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].pending, 3);
        assert_eq!(snap[0].key.metric_name(), "api_calls");
        add(&mut slots, &k, 5);
        settle(&mut slots, &snap);
        assert_eq!(pending(&slots, &k), 5, "counts after the snapshot stay");
        let rest = snapshot(&slots, 1);
        settle(&mut slots, &rest);
        assert_eq!(pending(&slots, &k), 0);
        assert_eq!(
            admit(&mut slots, &k, 1, 20),
            Admit::Admitted(16),
            "a flushed loaded counter keeps the day's count"
        );
        // Unloaded counters leave when flushed.
        let r = CounterKey::refusal(1, [1; 16], 3, 9000);
        add(&mut slots, &r, 2);
        let snap = snapshot(&slots, 1);
        settle(&mut slots, &snap);
        assert!(slots.iter().all(|s| s.key != r));
        assert!(CounterKey::usage(1, [0; 16], &"m".repeat(METRIC_MAX + 1), 1).is_none());
        // Unloaded (the table was changed by hand): loaded again from it.
        add(&mut slots, &k, 1);
        unload_all(&mut slots, 1);
        assert_eq!(admit(&mut slots, &k, 1, 20), Admit::NotLoaded);
        assert!(load(&mut slots, &k, 0));
        assert_eq!(
            admit(&mut slots, &k, 1, 20),
            Admit::Admitted(2),
            "reset to 0, plus the pending 1"
        );
    }

    #[test]
    fn a_full_table_reuses_flushed_loaded_counters_oldest_day_first() {
        let mut slots = vec![CounterSlot::default(); 4];
        let day = |d: i32| CounterKey::usage(1, [d as u8; 16], "api_calls", d).unwrap();
        for d in 1..=4 {
            assert!(load(&mut slots, &day(d), 0));
        }
        assert!(add(&mut slots, &day(1), 1), "pending on day 1");
        // Days 2..4 have nothing pending; day 2 is the oldest of them.
        assert!(load(&mut slots, &day(9), 5));
        assert!(slots.iter().all(|s| s.key != day(2)));
        assert!(
            slots.iter().any(|s| s.key == day(1)),
            "pending counts are never evicted"
        );
        assert_eq!(admit(&mut slots, &day(9), 1, 6), Admit::Admitted(6));
        // Only counters with something pending left: no room.
        for d in [3, 4] {
            add(&mut slots, &day(d), 1);
        }
        assert!(!load(&mut slots, &day(10), 0));
        assert!(!add(&mut slots, &day(10), 1));
    }

    proptest! {
        /// The shared table decides exactly like GCRA over a map as long as
        /// it never has to evict a live key.
        #[test]
        fn table_matches_a_map_without_evictions(
            ops in proptest::collection::vec((0u64..40, 0i64..SEC, 1i64..3), 1..400),
        ) {
            let l = Limit::new(3, 3, 5 * SEC).unwrap();
            let mut seg = vec![RateSlot::default(); 256];
            let mut model: HashMap<u64, i64> = HashMap::new();
            let mut now = 0;
            for (k, gap, cost) in ops {
                now += gap;
                let key = key_hash(1, 0, &k.to_string());
                let got = check(&mut seg, key, l, now, cost).unwrap();
                let want = gcra::check(l, model.get(&k).copied(), now, cost).unwrap();
                if want.allowed { model.insert(k, want.tat); }
                prop_assert!(!got.evicted);
                prop_assert_eq!(got.decision.allowed, want.allowed);
                prop_assert_eq!(got.decision.remaining, want.remaining);
                prop_assert_eq!(got.decision.retry_after_us, want.retry_after_us);
            }
        }

        /// Counters: whatever interleaving of adds and flushes, stored plus
        /// pending equals everything added.
        #[test]
        fn counters_lose_nothing_across_flushes(
            ops in proptest::collection::vec((0u8..6, 1i64..5, proptest::bool::ANY), 1..300),
        ) {
            let mut slots = vec![CounterSlot::default(); 64];
            let mut stored: HashMap<CounterKey, i64> = HashMap::new();
            let mut added: HashMap<CounterKey, i64> = HashMap::new();
            for (t, amount, flush) in ops {
                let key = CounterKey::usage(1, [t; 16], "api_calls", 1).unwrap();
                prop_assert!(add(&mut slots, &key, amount));
                *added.entry(key).or_default() += amount;
                if flush {
                    let snap = snapshot(&slots, 1);
                    for s in &snap { *stored.entry(s.key).or_default() += s.pending; }
                    settle(&mut slots, &snap);
                }
            }
            for (key, total) in added {
                prop_assert_eq!(stored.get(&key).copied().unwrap_or(0) + pending(&slots, &key), total);
            }
        }

        /// The quota protocol against a plain count per key: admissions,
        /// uncounted-limit adds, flushes, and slots reused (a small table,
        /// so loaded counters are evicted and loaded again from the table).
        /// Every decision and count is the model's.
        #[test]
        fn quota_counters_decide_like_a_plain_count(
            ops in proptest::collection::vec((0u8..6, 0u8..4), 1..400),
        ) {
            const LIMIT: i64 = 10;
            let mut slots = vec![CounterSlot::default(); 4];
            let mut stored: HashMap<CounterKey, i64> = HashMap::new();
            let mut model: HashMap<CounterKey, i64> = HashMap::new();
            for (t, op) in ops {
                let key = CounterKey::usage(1, [t; 16], "api_calls", t as i32).unwrap();
                let count = model.entry(key).or_default();
                match op {
                    0 | 1 => {
                        let mut got = admit(&mut slots, &key, 1, LIMIT);
                        if got == Admit::NotLoaded {
                            if !load(&mut slots, &key, stored.get(&key).copied().unwrap_or(0)) {
                                continue; // full: the caller reports it
                            }
                            got = admit(&mut slots, &key, 1, LIMIT);
                        }
                        let want = if *count < LIMIT { *count += 1; Admit::Admitted(*count) } else { Admit::Refused(*count) };
                        prop_assert_eq!(got, want);
                    }
                    2 => {
                        if add(&mut slots, &key, 1) { *count += 1; }
                    }
                    _ => {
                        let snap = snapshot(&slots, 1);
                        for s in &snap { *stored.entry(s.key).or_default() += s.pending; }
                        settle(&mut slots, &snap);
                    }
                }
            }
            for (key, count) in model {
                prop_assert_eq!(stored.get(&key).copied().unwrap_or(0) + pending(&slots, &key), count);
            }
        }
    }
}
