//! Cache hits and misses counted between flushes: a fixed table of slots
//! (in shared memory when pg_saas is preloaded, see `shmem`), so a lookup
//! in a READ ONLY transaction (a PostgREST GET) counts exactly. Keyed by
//! database OID, tenant, UTC day, kind and id (the cache key of a hit, the
//! model name of a miss). Open addressing; a flush takes a database's slots
//! out whole, so a key may sit in two slots after one was freed: readers
//! sum every match. Pure Rust.

pub const KIND_HIT: u32 = 1;
pub const KIND_MISS: u32 = 2;
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

    /// The id as text: the hex cache key of a hit, the model of a miss.
    pub fn id_text(&self) -> String {
        if self.kind == KIND_HIT {
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
    let mut id = [0u8; 64];
    let mut end = model.len().min(64);
    while !model.is_char_boundary(end) {
        end -= 1;
    }
    id[..end].copy_from_slice(&model.as_bytes()[..end]);
    HitSlot {
        kind: KIND_MISS,
        database,
        day,
        tenant,
        id,
        count: 0,
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
    }
}
