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
/// `rate_limit()` calls). SHA-256, so nobody can craft two keys that share
/// a state.
pub fn key_hash(namespace: i64, key: &str) -> KeyHash {
    let mut h = Sha256::new();
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
    pub tenant: [u8; 16],
    /// The rule of a refusal counter; 0 for usage.
    pub rule_id: i64,
    /// The metric of a usage counter, zero-padded; empty for refusals.
    pub metric: [u8; METRIC_MAX],
}

impl CounterKey {
    pub fn usage(tenant: [u8; 16], metric: &str, day: i32) -> Option<CounterKey> {
        let bytes = metric.as_bytes();
        if bytes.is_empty() || bytes.len() > METRIC_MAX {
            return None;
        }
        let mut m = [0u8; METRIC_MAX];
        m[..bytes.len()].copy_from_slice(bytes);
        Some(CounterKey {
            kind: KIND_USAGE,
            day,
            tenant,
            rule_id: 0,
            metric: m,
        })
    }

    pub fn refusal(tenant: [u8; 16], rule_id: i64, day: i32) -> CounterKey {
        CounterKey {
            kind: KIND_REFUSAL,
            day,
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
        eat(&self.tenant);
        eat(&self.rule_id.to_le_bytes());
        eat(&self.metric);
        (h % len as u64) as usize
    }
}

/// A counter not yet written to its table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CounterSlot {
    pub key: CounterKey,
    pub pending: i64,
}

fn counter_place(slots: &[CounterSlot], key: &CounterKey) -> (Option<usize>, Option<usize>) {
    let len = slots.len();
    let home = key.home(len);
    let mut free = None;
    for step in 0..(4 * PROBE).min(len) {
        let i = (home + step) % len;
        if slots[i].key == *key {
            return (Some(i), None);
        }
        if slots[i].key.kind == 0 {
            free.get_or_insert(i);
        }
    }
    (None, free)
}

/// The pending amount of `key`.
pub fn pending(slots: &[CounterSlot], key: &CounterKey) -> i64 {
    counter_place(slots, key).0.map_or(0, |i| slots[i].pending)
}

/// Adds `amount` to `key`'s pending count. False when the table has no room
/// for a new key (the amount is not counted).
pub fn add(slots: &mut [CounterSlot], key: &CounterKey, amount: i64) -> bool {
    match counter_place(slots, key) {
        (Some(i), _) => {
            slots[i].pending = slots[i].pending.saturating_add(amount);
            true
        }
        (None, Some(i)) => {
            slots[i] = CounterSlot {
                key: *key,
                pending: amount,
            };
            true
        }
        (None, None) => false,
    }
}

/// Adds `amount` unless that would take the stored plus pending count past
/// `limit`; returns the count after the attempt and whether it was added.
pub fn add_within(
    slots: &mut [CounterSlot],
    key: &CounterKey,
    stored: i64,
    amount: i64,
    limit: i64,
) -> (i64, bool) {
    let now = stored.saturating_add(pending(slots, key));
    if now.saturating_add(amount) > limit {
        return (now, false);
    }
    if add(slots, key, amount) {
        (now + amount, true)
    } else {
        (now, false)
    }
}

/// Every counter with something pending (what a flush writes out).
pub fn snapshot(slots: &[CounterSlot]) -> Vec<CounterSlot> {
    slots
        .iter()
        .filter(|s| s.key.kind != 0 && s.pending != 0)
        .copied()
        .collect()
}

/// Subtracts what a committed flush wrote; counters that reach zero free
/// their slot. Counts added since the snapshot stay pending.
pub fn settle(slots: &mut [CounterSlot], flushed: &[CounterSlot]) {
    for f in flushed {
        if let (Some(i), _) = counter_place(slots, &f.key) {
            slots[i].pending -= f.pending;
            if slots[i].pending == 0 {
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
        assert_ne!(key_hash(0, "a"), key_hash(1, "a"));
        assert_eq!(key_hash(3, "user:1"), key_hash(3, "user:1"));
        assert_ne!(key_hash(0, "ab"), key_hash(0, "ba"));
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
        let k = key_hash(0, "x");
        check(&mut seg, k, l, 0, 1).unwrap();
        check(&mut seg, k, l, 0, 1).unwrap();
        assert!(!check(&mut seg, k, l, 0, 1).unwrap().decision.allowed);
        refund(&mut seg, k, l, 0, 1);
        assert!(check(&mut seg, k, l, 0, 1).unwrap().decision.allowed);
        refund(&mut seg, k, l, 0, 2);
        assert_eq!(live_keys(&seg, 0), 0, "fully refunded keys leave the table");
    }

    #[test]
    fn counters_add_within_a_limit_and_settle() {
        let mut slots = vec![CounterSlot::default(); 128];
        let k = CounterKey::usage([7; 16], "api_calls", 9000).unwrap();
        assert_eq!(add_within(&mut slots, &k, 8, 1, 10), (9, true));
        assert_eq!(add_within(&mut slots, &k, 8, 1, 10), (10, true));
        assert_eq!(add_within(&mut slots, &k, 8, 1, 10), (10, false));
        let snap = snapshot(&slots);
        assert_eq!(snap.len(), 1);
        assert_eq!(snap[0].pending, 2);
        assert_eq!(snap[0].key.metric_name(), "api_calls");
        add(&mut slots, &k, 5);
        settle(&mut slots, &snap);
        assert_eq!(pending(&slots, &k), 5, "counts after the snapshot stay");
        let rest = snapshot(&slots);
        settle(&mut slots, &rest);
        assert!(slots.iter().all(|s| s.key.kind == 0));
        assert!(CounterKey::usage([0; 16], &"m".repeat(METRIC_MAX + 1), 1).is_none());
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
                let key = key_hash(0, &k.to_string());
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
                let key = CounterKey::usage([t; 16], "api_calls", 1).unwrap();
                prop_assert!(add(&mut slots, &key, amount));
                *added.entry(key).or_default() += amount;
                if flush {
                    let snap = snapshot(&slots);
                    for s in &snap { *stored.entry(s.key).or_default() += s.pending; }
                    settle(&mut slots, &snap);
                }
            }
            for (key, total) in added {
                prop_assert_eq!(stored.get(&key).copied().unwrap_or(0) + pending(&slots, &key), total);
            }
        }
    }
}
