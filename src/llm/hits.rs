//! Cache hits and misses counted between flushes: a fixed table of slots
//! (in shared memory when pg_saas is preloaded, see `shmem`), so a lookup
//! in a READ ONLY transaction (a PostgREST GET) counts exactly. Keyed by
//! database OID, tenant, UTC day, kind and id (the cache key of a hit, the
//! model name of a miss). Open addressing; a flush takes a database's slots
//! out whole, so a key may sit in two slots after one was freed: readers
//! sum every match. Pure Rust.
//!
//! The last [`overflow_len`] slots are kept for a full table: a hit that
//! finds no slot near its home is counted there per database, tenant, UTC
//! day and model (kind [`KIND_OVERFLOW`], id the model), a miss under its
//! own key; that region is scanned whole. Totals stay exact; what a hit
//! counted there loses is its cache entry (the entry's `hit_count` and
//! `last_hit_at`, and the tokens and money the hit saved).

pub const KIND_HIT: u32 = 1;
pub const KIND_MISS: u32 = 2;
pub const KIND_OVERFLOW: u32 = 3;
/// A hit on an entry of the shared (non-tenant) scope, keyed by the
/// reading tenant and the entry's cache key.
pub const KIND_SHARED: u32 = 4;
/// Hits on shared-scope entries counted per model in the overflow region
/// (a kind of their own, so that they still count as shared hits).
pub const KIND_SHARED_OVERFLOW: u32 = 5;
/// How far from its home slot a key may be placed.
const PROBE: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HitSlot {
    pub kind: u32,
    pub database: u32,
    pub day: i32,
    pub tenant: [u8; 16],
    pub id: [u8; 64],
    pub count: i64,
}

impl HitSlot {
    pub const EMPTY: HitSlot = HitSlot {
        kind: 0,
        database: 0,
        day: 0,
        tenant: [0; 16],
        id: [0; 64],
        count: 0,
    };

    fn same(&self, k: &HitSlot) -> bool {
        self.kind == k.kind
            && self.database == k.database
            && self.day == k.day
            && self.tenant == k.tenant
            && self.id == k.id
    }

    /// The id as text: the hex cache key of a hit, the model of a miss or
    /// of an overflow count.
    pub fn id_text(&self) -> String {
        if self.kind == KIND_HIT || self.kind == KIND_SHARED {
            super::key::hex(&self.id[..32])
        } else {
            let end = self.id.iter().position(|b| *b == 0).unwrap_or(64);
            String::from_utf8_lossy(&self.id[..end]).into_owned()
        }
    }
}

/// The slot key of a hit.
pub fn hit_key(database: u32, tenant: [u8; 16], day: i32, key: &[u8; 32]) -> HitSlot {
    let mut id = [0u8; 64];
    id[..32].copy_from_slice(key);
    HitSlot {
        kind: KIND_HIT,
        database,
        day,
        tenant,
        id,
        count: 0,
    }
}

/// The slot key of a miss; a model name longer than 64 bytes is cut at a
/// character boundary (models are named in a few dozen bytes).
pub fn miss_key(database: u32, tenant: [u8; 16], day: i32, model: &str) -> HitSlot {
    model_key(KIND_MISS, database, tenant, day, model)
}

/// The slot key of the hits of one model counted without their cache key
/// (the table was full).
pub fn overflow_key(database: u32, tenant: [u8; 16], day: i32, model: &str) -> HitSlot {
    model_key(KIND_OVERFLOW, database, tenant, day, model)
}

/// The same for hits on entries of the shared scope.
pub fn shared_overflow_key(database: u32, tenant: [u8; 16], day: i32, model: &str) -> HitSlot {
    model_key(KIND_SHARED_OVERFLOW, database, tenant, day, model)
}

fn model_key(kind: u32, database: u32, tenant: [u8; 16], day: i32, model: &str) -> HitSlot {
    let mut id = [0u8; 64];
    let mut end = model.len().min(64);
    while !model.is_char_boundary(end) {
        end -= 1;
    }
    id[..end].copy_from_slice(&model.as_bytes()[..end]);
    HitSlot {
        kind,
        database,
        day,
        tenant,
        id,
        count: 0,
    }
}

/// How many of `len` slots are kept for counts of a full table: an eighth,
/// at least 8 (never more than the table).
pub fn overflow_len(len: usize) -> usize {
    (len / 8).max(8).min(len)
}

/// How a lookup was counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    /// Under its own key.
    Exact,
    /// A hit counted per model in the overflow region.
    Overflow,
    /// Nowhere: the overflow region is full too.
    Full,
}

/// Counts one lookup: under its key near its home in the main region,
/// else (a hit: per model; a miss: under its key) in the overflow region.
pub fn record(slots: &mut [HitSlot], k: &HitSlot, model: &str, n: i64) -> Counted {
    let over = overflow_len(slots.len());
    let (main, tail) = slots.split_at_mut(slots.len() - over);
    if add(main, k, n) {
        return Counted::Exact;
    }
    let (key, how) = match k.kind {
        KIND_HIT => (
            overflow_key(k.database, k.tenant, k.day, model),
            Counted::Overflow,
        ),
        KIND_SHARED => (
            shared_overflow_key(k.database, k.tenant, k.day, model),
            Counted::Overflow,
        ),
        _ => (*k, Counted::Exact),
    };
    let mut free = None;
    for (i, s) in tail.iter_mut().enumerate() {
        if s.kind == 0 {
            free.get_or_insert(i);
        } else if s.same(&key) {
            s.count += n;
            return how;
        }
    }
    match free {
        Some(at) => {
            tail[at] = HitSlot { count: n, ..key };
            how
        }
        None => Counted::Full,
    }
}

fn home(k: &HitSlot, len: usize) -> usize {
    // FNV-1a over the key fields.
    let mut h: u64 = 0xcbf29ce484222325;
    let mut eat = |b: &[u8]| {
        for x in b {
            h ^= *x as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
    };
    eat(&k.kind.to_le_bytes());
    eat(&k.database.to_le_bytes());
    eat(&k.day.to_le_bytes());
    eat(&k.tenant);
    eat(&k.id);
    (h % len as u64) as usize
}

/// Adds `n` to the key's count; false when no slot near its home is free.
pub fn add(slots: &mut [HitSlot], k: &HitSlot, n: i64) -> bool {
    if slots.is_empty() {
        return false;
    }
    let h = home(k, slots.len());
    let mut free = None;
    for i in 0..PROBE.min(slots.len()) {
        let s = &mut slots[(h + i) % slots.len()];
        if s.kind == 0 {
            free.get_or_insert((h + i) % slots.len());
        } else if s.same(k) {
            s.count += n;
            return true;
        }
    }
    match free {
        Some(at) => {
            slots[at] = HitSlot { count: n, ..*k };
            true
        }
        None => false,
    }
}

/// Puts counts taken by a flush that failed back under their own keys (in
/// the overflow region when their home is full); false when nowhere.
pub fn restore(slots: &mut [HitSlot], k: &HitSlot) -> bool {
    let over = overflow_len(slots.len());
    let (main, tail) = slots.split_at_mut(slots.len() - over);
    if add(main, k, k.count) {
        return true;
    }
    let mut free = None;
    for (i, s) in tail.iter_mut().enumerate() {
        if s.kind == 0 {
            free.get_or_insert(i);
        } else if s.same(k) {
            s.count += k.count;
            return true;
        }
    }
    match free {
        Some(at) => {
            tail[at] = *k;
            true
        }
        None => false,
    }
}

/// Every slot of `database` (counts of one key may be split).
pub fn snapshot(slots: &[HitSlot], database: u32) -> Vec<HitSlot> {
    slots
        .iter()
        .filter(|s| s.kind != 0 && s.database == database)
        .copied()
        .collect()
}

/// Takes every slot of `database` out (a flush).
pub fn take(slots: &mut [HitSlot], database: u32) -> Vec<HitSlot> {
    let out = snapshot(slots, database);
    for s in slots.iter_mut() {
        if s.kind != 0 && s.database == database {
            *s = HitSlot::EMPTY;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn counts_and_takes() {
        let mut t = vec![HitSlot::EMPTY; 128];
        let k = hit_key(5, [1; 16], 9000, &[7; 32]);
        assert!(add(&mut t, &k, 1));
        assert!(add(&mut t, &k, 2));
        let m = miss_key(5, [1; 16], 9000, "gpt-4o");
        assert!(add(&mut t, &m, 1));
        assert!(add(&mut t, &hit_key(6, [1; 16], 9000, &[7; 32]), 1));
        let s = snapshot(&t, 5);
        assert_eq!(s.len(), 2);
        assert_eq!(s.iter().map(|x| x.count).sum::<i64>(), 4);
        assert_eq!(m.id_text(), "gpt-4o");
        assert_eq!(take(&mut t, 5).len(), 2);
        assert_eq!(snapshot(&t, 5).len(), 0);
        assert_eq!(snapshot(&t, 6).len(), 1);
    }

    #[test]
    fn shared_hits_of_a_full_table_stay_shared() {
        let mut t = vec![HitSlot::EMPTY; 64];
        let mut kinds = std::collections::BTreeSet::new();
        for i in 0..200u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            let mut k = hit_key(1, [2; 16], 9, &key);
            k.kind = KIND_SHARED;
            assert_ne!(record(&mut t, &k, "gpt-4o", 1), Counted::Full);
        }
        for s in snapshot(&t, 1) {
            kinds.insert(s.kind);
        }
        // Never counted as a plain (tenant-scope) overflow hit.
        assert_eq!(
            kinds.into_iter().collect::<Vec<_>>(),
            vec![KIND_SHARED, KIND_SHARED_OVERFLOW]
        );
    }

    #[test]
    fn full_table_counts_per_model() {
        // 64 slots: 56 keyed, 8 kept for overflow.
        let mut t = vec![HitSlot::EMPTY; 64];
        assert_eq!(overflow_len(64), 8);
        let mut exact = 0;
        let mut over = 0;
        for i in 0..200u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_le_bytes());
            match record(&mut t, &hit_key(1, [2; 16], 9, &key), "gpt-4o", 1) {
                Counted::Exact => exact += 1,
                Counted::Overflow => over += 1,
                Counted::Full => panic!("a hit was refused"),
            }
        }
        assert_eq!(exact + over, 200);
        assert!(over >= 200 - 56);
        let all = snapshot(&t, 1);
        assert_eq!(all.iter().map(|s| s.count).sum::<i64>(), 200);
        let o: Vec<_> = all.iter().filter(|s| s.kind == KIND_OVERFLOW).collect();
        assert_eq!(o.len(), 1);
        assert_eq!(o[0].id_text(), "gpt-4o");
        // Misses of a full table keep their key in the overflow region.
        assert_eq!(
            record(&mut t, &miss_key(1, [2; 16], 9, "gpt-4o"), "gpt-4o", 1),
            Counted::Exact
        );
        // Overflow region full: said so.
        for i in 0..7u8 {
            record(&mut t, &miss_key(1, [i + 10; 16], 9, "m"), "m", 1);
        }
        assert_eq!(
            record(&mut t, &miss_key(1, [99; 16], 9, "m"), "m", 1),
            Counted::Full
        );
    }

    #[test]
    fn full_table_says_so() {
        let mut t = vec![HitSlot::EMPTY; 4];
        for i in 0..4u8 {
            assert!(add(&mut t, &hit_key(1, [i; 16], 0, &[0; 32]), 1));
        }
        assert!(!add(&mut t, &hit_key(1, [9; 16], 0, &[0; 32]), 1));
        assert!(!add(&mut [], &hit_key(1, [9; 16], 0, &[0; 32]), 1));
    }

    proptest! {
        // Whatever the interleaving of adds and takes, nothing is lost or
        // counted twice: taken + left = added.
        #[test]
        fn no_count_lost(ops in prop::collection::vec((0u8..6, 0u8..3, any::<bool>()), 1..300)) {
            let mut t = vec![HitSlot::EMPTY; 16];
            let mut added = 0i64;
            let mut taken = 0i64;
            for (key, db, flush) in ops {
                if flush {
                    taken += take(&mut t, db as u32).iter().map(|s| s.count).sum::<i64>();
                } else if add(&mut t, &hit_key(db as u32, [key; 16], 1, &[key; 32]), 1) {
                    added += 1;
                }
            }
            let left: i64 = t.iter().filter(|s| s.kind != 0).map(|s| s.count).sum();
            prop_assert_eq!(added, taken + left);
        }

        // Whatever the keys, a small table counts every hit until its
        // overflow region holds one slot per (tenant, model): totals exact.
        #[test]
        fn overflow_keeps_totals(ops in prop::collection::vec((any::<u16>(), 0u8..3, 0u8..2), 1..400)) {
            let mut t = vec![HitSlot::EMPTY; 64];
            for (key, tenant, model) in &ops {
                let mut k = [0u8; 32];
                k[..2].copy_from_slice(&key.to_le_bytes());
                let m = if *model == 0 { "a" } else { "b" };
                prop_assert_ne!(record(&mut t, &hit_key(1, [*tenant; 16], 0, &k), m, 1), Counted::Full);
            }
            prop_assert_eq!(snapshot(&t, 1).iter().map(|s| s.count).sum::<i64>(), ops.len() as i64);
        }
    }
}
