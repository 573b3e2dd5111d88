//! The shared-memory home of `slots.rs`'s slot tables, present only when
//! pg_saas is in `shared_preload_libraries`.
//!
//! Sized at server start from `saas.rate_limit_slots` and
//! `saas.usage_counter_slots`. Zeroed memory is the empty state of both
//! tables. Rate slots are split into `RATE_LOCKS` segments with a lock
//! each, so checks of different keys rarely wait on each other; counters
//! share one lock. Nothing here survives a restart.

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
static mut PREV_REQUEST_HOOK: pg_sys::shmem_request_hook_type = None;
static mut PREV_STARTUP_HOOK: pg_sys::shmem_startup_hook_type = None;

fn sizes() -> (usize, usize) {
    let rate =
        (RATE_LIMIT_SLOTS.get().max(RATE_LOCKS as i32) as usize).div_ceil(RATE_LOCKS) * RATE_LOCKS;
    (rate, USAGE_COUNTER_SLOTS.get().max(64) as usize)
}

fn layout(rate: usize, counters: usize) -> (usize, usize, usize) {
    let align = |n: usize| n.div_ceil(64) * 64;
    let rates_at = align(size_of::<Header>());
    let counters_at = rates_at + align(rate * size_of::<RateSlot>());
    (rates_at, counters_at, counters_at + counters * size_of::<CounterSlot>())
}

/// When loaded through shared_preload_libraries, requests the memory and
/// locks (sized by settings `gucs::init` registered before).
pub(crate) fn init() {
    // SAFETY: reading a flag the postmaster sets while preloading, and
    // chaining hooks the way every preloaded extension does.
    unsafe {
        if !pg_sys::process_shared_preload_libraries_in_progress {
            return;
        }
        PREV_REQUEST_HOOK = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(on_shmem_request);
        PREV_STARTUP_HOOK = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(on_shmem_startup);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_shmem_request() {
    // SAFETY: called by the postmaster once, in its shmem request phase.
    unsafe {
        if let Some(prev) = PREV_REQUEST_HOOK {
            prev();
        }
        let (rate, counters) = sizes();
        pg_sys::RequestAddinShmemSpace(layout(rate, counters).2);
        pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), (RATE_LOCKS + 1) as i32);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_shmem_startup() {
    // SAFETY: as in every extension's startup hook: ShmemInitStruct under
    // AddinShmemInitLock (MainLWLockArray[21]); the memory is zeroed the
    // first time, which is the empty state of both tables.
    unsafe {
        if let Some(prev) = PREV_STARTUP_HOOK {
            prev();
        }
        let (rate, counters) = sizes();
        let (rates_at, counters_at, total) = layout(rate, counters);
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock;
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let mut found = false;
        let base = pg_sys::ShmemInitStruct(SEGMENT_NAME.as_ptr(), total, &mut found).cast::<u8>();
        if !found {
            std::ptr::write_bytes(base, 0, total);
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
        pg_sys::LWLockRelease(init_lock);
    }
}

fn shared() -> Option<Shared> {
    // SAFETY: written only before any backend exists (see SHARED).
    unsafe { *(&raw const SHARED) }
}

/// Whether the shared-memory backend is there (pg_saas was preloaded).
pub(crate) fn available() -> bool {
    shared().is_some()
}

/// Holds one of our LWLocks; released on drop. Nothing that can raise an
/// ERROR runs while it is held (inputs are validated before locking).
struct Held(*mut pg_sys::LWLock);

impl Held {
    fn take(s: &Shared, index: usize, exclusive: bool) -> Held {
        let mode = if exclusive {
            pg_sys::LWLockMode::LW_EXCLUSIVE
        } else {
            pg_sys::LWLockMode::LW_SHARED
        };
        // SAFETY: index < RATE_LOCKS + 1, the tranche's size.
        unsafe {
            let lock = &raw mut (*s.locks.add(index)).lock;
            pg_sys::LWLockAcquire(lock, mode);
            Held(lock)
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: acquired in `take`. On an ERROR between take and drop the
        // abort path releases every LWLock first; checking avoids a double
        // release then.
        unsafe {
            if pg_sys::LWLockHeldByMe(self.0) {
                pg_sys::LWLockRelease(self.0);
            }
        }
    }
}

fn segment_of(s: &Shared, key: KeyHash) -> (usize, &'static mut [RateSlot]) {
    let index = (key[0] % RATE_LOCKS as u64) as usize;
    (index, segment_at(s, index))
}

/// The `index`th segment of the rate slots.
fn segment_at(s: &Shared, index: usize) -> &'static mut [RateSlot] {
    // SAFETY: the header is initialized; the segment is only used while its
    // lock is held by the caller.
    unsafe {
        let seg_len = (*s.header).rate_slots / RATE_LOCKS;
        std::slice::from_raw_parts_mut(s.rates.add(index * seg_len), seg_len)
    }
}

fn counters(s: &Shared) -> &'static mut [CounterSlot] {
    // SAFETY: as for segments; used under the counter lock only.
    unsafe { std::slice::from_raw_parts_mut(s.counters, (*s.header).counter_slots) }
}

const COUNTER_LOCK: usize = RATE_LOCKS;

/// An atomic GCRA check of one key. None when not preloaded.
pub(crate) fn rate_check(
    key: KeyHash,
    limit: Limit,
    now: i64,
    cost: i64,
) -> Option<SaasResult<SharedDecision>> {
    let s = shared()?;
    let (index, segment) = segment_of(&s, key);
    let _held = Held::take(&s, index, true);
    let out = slots::check(segment, key, limit, now, cost);
    if let Ok(d) = &out {
        if d.evicted {
            // SAFETY: under this segment's lock.
            unsafe { (*s.header).evictions[index] += 1 };
        }
    }
    Some(out)
}

pub(crate) fn rate_refund(key: KeyHash, limit: Limit, now: i64, cost: i64) {
    if let Some(s) = shared() {
        let (index, segment) = segment_of(&s, key);
        let _held = Held::take(&s, index, true);
        slots::refund(segment, key, limit, now, cost);
    }
}

/// Adds to a pending counter; false (and counted as dropped) when full.
pub(crate) fn counter_add(key: &CounterKey, amount: i64) -> bool {
    let Some(s) = shared() else { return false };
    let _held = Held::take(&s, COUNTER_LOCK, true);
    let ok = slots::add(counters(&s), key, amount);
    if !ok {
        // SAFETY: under the counter lock.
        unsafe { (*s.header).dropped += amount as u64 };
    }
    ok
}

/// `slots::add_within` under the counter lock.
pub(crate) fn counter_add_within(
    key: &CounterKey,
    stored: i64,
    amount: i64,
    limit: i64,
) -> Option<(i64, bool)> {
    let s = shared()?;
    let _held = Held::take(&s, COUNTER_LOCK, true);
    Some(slots::add_within(counters(&s), key, stored, amount, limit))
}

pub(crate) fn counter_pending(key: &CounterKey) -> i64 {
    let Some(s) = shared() else { return 0 };
    let _held = Held::take(&s, COUNTER_LOCK, false);
    slots::pending(counters(&s), key)
}

pub(crate) fn counters_snapshot() -> Vec<CounterSlot> {
    let Some(s) = shared() else { return Vec::new() };
    let _held = Held::take(&s, COUNTER_LOCK, false);
    slots::snapshot(counters(&s))
}

pub(crate) fn counters_settle(flushed: &[CounterSlot]) {
    if let Some(s) = shared() {
        let _held = Held::take(&s, COUNTER_LOCK, true);
        slots::settle(counters(&s), flushed);
    }
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
        let _held = Held::take(&s, index, false);
        live += slots::live_keys(segment_at(&s, index), now);
        // SAFETY: the header's counter is read under the segment's lock.
        evictions += unsafe { (*s.header).evictions[index] };
    }
    let _held = Held::take(&s, COUNTER_LOCK, false);
    let c = counters(&s);
    // SAFETY: read under the counter lock.
    let (rate_slots, dropped) = unsafe { ((*s.header).rate_slots, (*s.header).dropped) };
    Some(Stats {
        rate_slots: rate_slots as i64,
        live_keys: live as i64,
        evictions: evictions as i64,
        counter_slots: c.len() as i64,
        counters_pending: c.iter().filter(|x| x.key.kind != 0).count() as i64,
        counts_dropped: dropped as i64,
    })
}
