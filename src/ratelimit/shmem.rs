//! The shared-memory home of `slots.rs`'s slot tables, present only when
//! pg_saas is in `shared_preload_libraries`.
//!
//! Sized at server start from `saas.rate_limit_slots` and
//! `saas.usage_counter_slots`. Zeroed memory is the empty state of both
//! tables. Rate slots are split into `RATE_LOCKS` segments with a lock
//! each, so checks of different keys rarely wait on each other; counters
//! share one lock. The slots are reached only through a held lock
//! (`Held`): read under either mode, written (`&mut`) only under
//! LW_EXCLUSIVE. Nothing here survives a restart.

use super::gcra::Limit;
use super::slots::{self, CounterKey, CounterSlot, KeyHash, RateSlot, SharedDecision};
use crate::error::SaasResult;
use crate::gucs::{RATE_LIMIT_SLOTS, USAGE_COUNTER_SLOTS};
use pgrx::pg_sys;
use std::ffi::CStr;

const RATE_LOCKS: usize = 16;
const TRANCHE: &CStr = c"pg_saas";
const SEGMENT_NAME: &CStr = c"pg_saas rate limits";

#[repr(C)]
struct Header {
    rate_slots: usize,
    counter_slots: usize,
    /// Live keys evicted to make room, per segment (under its lock).
    evictions: [u64; RATE_LOCKS],
    /// Counts lost because the counter table was full (under its lock).
    dropped: u64,
    /// A flush has taken its snapshot and not yet settled or aborted
    /// (under the counter lock): the table's counts are in motion.
    flushing: bool,
    /// Flushes ended so far (under the counter lock).
    flushes_ended: u64,
}

#[derive(Clone, Copy)]
struct Shared {
    header: *mut Header,
    rates: *mut RateSlot,
    counters: *mut CounterSlot,
    locks: *mut pg_sys::LWLockPadded,
}

// Set once by the shared-memory startup hook in the postmaster and
// inherited by every backend it forks; never written afterwards.
static mut SHARED: Option<Shared> = None;

fn sizes() -> (usize, usize) {
    let rate =
        (RATE_LIMIT_SLOTS.get().max(RATE_LOCKS as i32) as usize).div_ceil(RATE_LOCKS) * RATE_LOCKS;
    (rate, USAGE_COUNTER_SLOTS.get().max(64) as usize)
}

fn layout(rate: usize, counters: usize) -> (usize, usize, usize) {
    let align = |n: usize| n.div_ceil(64) * 64;
    let rates_at = align(size_of::<Header>());
    let counters_at = rates_at + align(rate * size_of::<RateSlot>());
    (
        rates_at,
        counters_at,
        counters_at + counters * size_of::<CounterSlot>(),
    )
}

/// When loaded through shared_preload_libraries, requests the memory and
/// locks (sized by settings `gucs::init` registered before).
pub(crate) fn init() {
    crate::shmem::register(on_shmem_request, on_shmem_startup);
}

/// Asks for the segment and the locks (the postmaster's request phase).
fn on_shmem_request() {
    let (rate, counters) = sizes();
    // SAFETY: called by the postmaster once, in its shmem request phase.
    unsafe {
        pg_sys::RequestAddinShmemSpace(layout(rate, counters).2);
        pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), (RATE_LOCKS + 1) as i32);
    }
}

/// Finds (or creates and zeroes) the segment and records where it is.
fn on_shmem_startup() {
    let (rate, counters) = sizes();
    let (rates_at, counters_at, total) = layout(rate, counters);
    // SAFETY: called by crate::shmem's startup hook in the postmaster,
    // under AddinShmemInitLock, before any backend that reads `SHARED`
    // exists (and again after a crash restart, when none does); the memory
    // is zeroed the first time, which is the empty state of both tables.
    unsafe {
        let (base, new) = crate::shmem::segment(SEGMENT_NAME, total);
        if new {
            let header = base.cast::<Header>();
            (*header).rate_slots = rate;
            (*header).counter_slots = counters;
        }
        SHARED = Some(Shared {
            header: base.cast(),
            rates: base.add(rates_at).cast(),
            counters: base.add(counters_at).cast(),
            locks: pg_sys::GetNamedLWLockTranche(TRANCHE.as_ptr()),
        });
    }
}

/// The current database's OID: shared memory is the cluster's, every key
/// in it is a database's.
pub(crate) fn database() -> u32 {
    // SAFETY: set once at backend start.
    unsafe { pg_sys::MyDatabaseId.to_u32() }
}

fn shared() -> Option<Shared> {
    // SAFETY: a copy of the static, written only by the startup hook in the
    // postmaster before it forks any backend (see SHARED).
    unsafe { SHARED }
}

/// Whether the shared-memory backend is there (pg_saas was preloaded).
pub(crate) fn available() -> bool {
    shared().is_some()
}

const COUNTER_LOCK: usize = RATE_LOCKS;

/// What one of our LWLocks guards: a segment of the rate slots, or (at
/// [`COUNTER_LOCK`]) the counter slots.
#[derive(Clone, Copy)]
enum Guarded {
    Segment(usize),
    Counters,
}

/// Holds one of our LWLocks; released on drop. The slots it guards are
/// reached only through it: shared (`&`) under either mode, mutable
/// (`&mut`, borrowing the guard mutably) only under LW_EXCLUSIVE, so no
/// `&mut` to shared memory ever aliases another reference, in this backend
/// or any other. Nothing that can raise an ERROR runs while it is held
/// (inputs are validated before locking).
struct Held {
    shared: Shared,
    what: Guarded,
    lock: *mut pg_sys::LWLock,
    exclusive: bool,
}

impl Held {
    fn take(shared: Shared, what: Guarded, exclusive: bool) -> Held {
        let index = match what {
            Guarded::Segment(i) => {
                assert!(i < RATE_LOCKS, "segment {i} out of range");
                i
            }
            Guarded::Counters => COUNTER_LOCK,
        };
        let mode = if exclusive {
            pg_sys::LWLockMode::LW_EXCLUSIVE
        } else {
            pg_sys::LWLockMode::LW_SHARED
        };
        // SAFETY: index < RATE_LOCKS + 1, the tranche's size; the tranche
        // lives in shared memory for the server's life.
        unsafe {
            let lock = &raw mut (*shared.locks.add(index)).lock;
            pg_sys::LWLockAcquire(lock, mode);
            Held {
                shared,
                what,
                lock,
                exclusive,
            }
        }
    }

    /// Where the guarded slots start, and how many there are.
    fn extent(&self) -> (*mut u8, usize) {
        let s = &self.shared;
        // SAFETY: the header was initialized by the startup hook and its
        // sizes never change afterwards; the offsets stay inside the segment.
        unsafe {
            match self.what {
                Guarded::Segment(i) => {
                    let len = (*s.header).rate_slots / RATE_LOCKS;
                    (s.rates.add(i * len).cast(), len)
                }
                Guarded::Counters => (s.counters.cast(), (*s.header).counter_slots),
            }
        }
    }

    fn rates(&self) -> &[RateSlot] {
        assert!(matches!(self.what, Guarded::Segment(_)));
        let (p, len) = self.extent();
        // SAFETY: the segment's lock is held (either mode) for as long as the
        // guard is borrowed; a writer needs it exclusively, so nothing writes
        // the slots while this slice lives.
        unsafe { std::slice::from_raw_parts(p.cast::<RateSlot>(), len) }
    }

    fn rates_mut(&mut self) -> &mut [RateSlot] {
        assert!(self.exclusive && matches!(self.what, Guarded::Segment(_)));
        let (p, len) = self.extent();
        // SAFETY: the segment's lock is held exclusively and the guard is
        // borrowed mutably: no other reference to these slots exists.
        unsafe { std::slice::from_raw_parts_mut(p.cast::<RateSlot>(), len) }
    }

    fn counters(&self) -> &[CounterSlot] {
        assert!(matches!(self.what, Guarded::Counters));
        let (p, len) = self.extent();
        // SAFETY: as in `rates`, under the counter lock.
        unsafe { std::slice::from_raw_parts(p.cast::<CounterSlot>(), len) }
    }

    fn counters_mut(&mut self) -> &mut [CounterSlot] {
        assert!(self.exclusive && matches!(self.what, Guarded::Counters));
        let (p, len) = self.extent();
        // SAFETY: as in `rates_mut`, under the counter lock held exclusively.
        unsafe { std::slice::from_raw_parts_mut(p.cast::<CounterSlot>(), len) }
    }

    /// Counts a live key evicted from this segment.
    fn count_eviction(&mut self) {
        let (Guarded::Segment(i), true) = (self.what, self.exclusive) else {
            unreachable!("evictions are counted under their segment's exclusive lock")
        };
        // SAFETY: this segment's counter, written only under its lock, held
        // exclusively; the other fields of the header are not touched.
        unsafe { (*self.shared.header).evictions[i] += 1 };
    }

    /// Counts amounts lost because the counter slots were full.
    fn count_dropped(&mut self, amount: u64) {
        assert!(self.exclusive && matches!(self.what, Guarded::Counters));
        // SAFETY: written only under the counter lock, held exclusively.
        unsafe { (*self.shared.header).dropped += amount };
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: acquired in `take`. On an ERROR between take and drop the
        // abort path releases every LWLock first; checking avoids a double
        // release then.
        unsafe {
            if pg_sys::LWLockHeldByMe(self.lock) {
                pg_sys::LWLockRelease(self.lock);
            }
        }
    }
}

/// The segment (and lock) of `key`.
fn segment_of(key: KeyHash) -> Guarded {
    Guarded::Segment((key[0] % RATE_LOCKS as u64) as usize)
}

/// An atomic GCRA check of one key. None when not preloaded.
pub(crate) fn rate_check(
    key: KeyHash,
    limit: Limit,
    now: i64,
    cost: i64,
) -> Option<SaasResult<SharedDecision>> {
    let mut held = Held::take(shared()?, segment_of(key), true);
    let out = slots::check(held.rates_mut(), key, limit, now, cost);
    if let Ok(d) = &out {
        if d.evicted {
            held.count_eviction();
        }
    }
    Some(out)
}

pub(crate) fn rate_refund(key: KeyHash, limit: Limit, now: i64, cost: i64) {
    if let Some(s) = shared() {
        let mut held = Held::take(s, segment_of(key), true);
        slots::refund(held.rates_mut(), key, limit, now, cost);
    }
}

/// Adds to a pending counter; false (and counted as dropped) when full.
pub(crate) fn counter_add(key: &CounterKey, amount: i64) -> bool {
    let Some(s) = shared() else { return false };
    let mut held = Held::take(s, Guarded::Counters, true);
    let ok = slots::add(held.counters_mut(), key, amount);
    if !ok {
        held.count_dropped(amount as u64);
    }
    ok
}

/// `slots::admit` under the counter lock; None when not preloaded.
pub(crate) fn counter_admit(key: &CounterKey, amount: i64, limit: i64) -> Option<slots::Admit> {
    let mut held = Held::take(shared()?, Guarded::Counters, true);
    Some(slots::admit(held.counters_mut(), key, amount, limit))
}

/// Where the flushes stood when a load began: the table's counts may be
/// read for a load while no flush is in motion, and must not have changed
/// by the time the load is recorded.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlushState {
    flushing: bool,
    ended: u64,
}

impl FlushState {
    pub(crate) fn flushing(&self) -> bool {
        self.flushing
    }
}

pub(crate) fn flush_state() -> Option<FlushState> {
    let held = Held::take(shared()?, Guarded::Counters, false);
    // SAFETY: written only under the counter lock, which is held.
    let h = unsafe { &*held.shared.header };
    Some(FlushState {
        flushing: h.flushing,
        ended: h.flushes_ended,
    })
}

/// What [`counter_load`] did.
pub(crate) enum Load {
    Loaded,
    /// A flush moved counts between `since` and now: read the table again.
    Retry,
    /// No room for the key.
    Full,
}

/// Records `stored`, the table's count read after `since` was taken, as
/// the base of `key`'s day count, unless a flush was in motion meanwhile
/// (`own`: the flush in motion is this backend's, whose writes it sees and
/// has taken out of `stored`; no other can run until it ends).
pub(crate) fn counter_load(key: &CounterKey, stored: i64, since: FlushState, own: bool) -> Load {
    let Some(s) = shared() else { return Load::Full };
    let mut held = Held::take(s, Guarded::Counters, true);
    // SAFETY: written only under the counter lock, which is held.
    let (flushing, ended) = unsafe { ((*s.header).flushing, (*s.header).flushes_ended) };
    let loaded = |c: &[CounterSlot]| {
        c.iter()
            .any(|x| x.key == *key && x.total != slots::UNLOADED)
    };
    if loaded(held.counters()) {
        return Load::Loaded;
    }
    if !own && (since.flushing || flushing) || ended != since.ended {
        return Load::Retry;
    }
    if slots::load(held.counters_mut(), key, stored) {
        Load::Loaded
    } else {
        Load::Full
    }
}

/// Marks a flush in motion and returns what it is to write.
pub(crate) fn flush_begin() -> Vec<CounterSlot> {
    let Some(s) = shared() else { return Vec::new() };
    let held = Held::take(s, Guarded::Counters, true);
    // SAFETY: written only under the counter lock, held exclusively.
    unsafe { (*s.header).flushing = true };
    slots::snapshot(held.counters(), database())
}

/// Ends this backend's flush: subtracts what it wrote when its transaction
/// committed (`flushed`), nothing when it aborted.
pub(crate) fn flush_end(flushed: &[CounterSlot]) {
    if let Some(s) = shared() {
        let mut held = Held::take(s, Guarded::Counters, true);
        slots::settle(held.counters_mut(), flushed);
        // SAFETY: written only under the counter lock, held exclusively.
        unsafe {
            (*s.header).flushing = false;
            (*s.header).flushes_ended += 1;
        }
    }
}

/// Drops every loaded usage count (pending counts stay): the next
/// admission of each loads it again from the table. Loads in progress
/// retry, as after a flush.
pub(crate) fn counters_unload() {
    if let Some(s) = shared() {
        let mut held = Held::take(s, Guarded::Counters, true);
        slots::unload_all(held.counters_mut(), database());
        // SAFETY: written only under the counter lock, held exclusively.
        unsafe { (*s.header).flushes_ended += 1 };
    }
}

/// This database's counters with something pending.
pub(crate) fn counters_snapshot() -> Vec<CounterSlot> {
    let Some(s) = shared() else { return Vec::new() };
    let held = Held::take(s, Guarded::Counters, false);
    slots::snapshot(held.counters(), database())
}

/// Occupancy figures for `rate_limit_stats()`.
pub(crate) struct Stats {
    pub rate_slots: i64,
    pub live_keys: i64,
    pub evictions: i64,
    pub counter_slots: i64,
    pub counters_pending: i64,
    pub counts_dropped: i64,
}

pub(crate) fn stats(now: i64) -> Option<Stats> {
    let s = shared()?;
    let (mut live, mut evictions) = (0usize, 0u64);
    for index in 0..RATE_LOCKS {
        let held = Held::take(s, Guarded::Segment(index), false);
        live += slots::live_keys(held.rates(), now);
        // SAFETY: the segment's eviction count, written only under its lock,
        // which is held.
        evictions += unsafe { (*s.header).evictions[index] };
    }
    let held = Held::take(s, Guarded::Counters, false);
    let c = held.counters();
    // SAFETY: rate_slots never changes after start-up; dropped is written
    // only under the counter lock, which is held.
    let (rate_slots, dropped) = unsafe { ((*s.header).rate_slots, (*s.header).dropped) };
    Some(Stats {
        rate_slots: rate_slots as i64,
        live_keys: live as i64,
        evictions: evictions as i64,
        counter_slots: c.len() as i64,
        counters_pending: c
            .iter()
            .filter(|x| x.key.kind != 0 && x.pending != 0)
            .count() as i64,
        counts_dropped: dropped as i64,
    })
}
