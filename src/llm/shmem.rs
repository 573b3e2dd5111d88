//! The shared-memory home of `hits.rs`'s slot table, present only when
//! pg_saas is in `shared_preload_libraries` (sized at server start by
//! `saas.llm_hit_slots`; zeroed memory is the empty table). One LWLock
//! guards it; nothing that can raise runs while it is held. Nothing here
//! survives a restart: `run_maintenance()` writes the counts to tables.

use super::hits::{self, HitSlot};
use crate::gucs::LLM_HIT_SLOTS;
use pgrx::pg_sys;
use std::cell::RefCell;
use std::ffi::CStr;

const TRANCHE: &CStr = c"pg_saas llm";
const SEGMENT_NAME: &CStr = c"pg_saas llm cache hits";

#[derive(Clone, Copy)]
struct Shared {
    len: usize,
    slots: *mut HitSlot,
    lock: *mut pg_sys::LWLock,
}

// Set once by the startup hook in the postmaster, inherited by every
// backend it forks; never written afterwards.
static mut SHARED: Option<Shared> = None;

thread_local! {
    /// Counts this backend took out for a flush, with the subtransaction
    /// that took them: given back if it aborts.
    static TAKEN: RefCell<Vec<(pg_sys::SubTransactionId, Vec<HitSlot>)>> = const { RefCell::new(Vec::new()) };
}

fn len() -> usize {
    LLM_HIT_SLOTS.get().max(64) as usize
}

pub(crate) fn init() {
    if !crate::shmem::register(on_shmem_request, on_shmem_startup) {
        return;
    }
    // SAFETY: static callbacks without argument, registered once while
    // preloading; they touch a thread-local and, on abort, shared memory
    // under its lock, and never raise.
    unsafe {
        pg_sys::RegisterXactCallback(Some(on_xact), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
    }
}

/// Asks for the slots and one lock (the postmaster's request phase).
fn on_shmem_request() {
    // SAFETY: called by the postmaster once, in its shmem request phase.
    unsafe {
        pg_sys::RequestAddinShmemSpace(len() * size_of::<HitSlot>());
        pg_sys::RequestNamedLWLockTranche(TRANCHE.as_ptr(), 1);
    }
}

/// Finds (or creates and zeroes: the empty table) the slots.
fn on_shmem_startup() {
    let n = len();
    // SAFETY: called by crate::shmem's startup hook in the postmaster,
    // under AddinShmemInitLock, before any backend that reads `SHARED`
    // exists.
    unsafe {
        let (base, _) = crate::shmem::segment(SEGMENT_NAME, n * size_of::<HitSlot>());
        SHARED = Some(Shared {
            len: n,
            slots: base.cast(),
            lock: &raw mut (*pg_sys::GetNamedLWLockTranche(TRANCHE.as_ptr())).lock,
        });
    }
}

fn shared() -> Option<Shared> {
    // SAFETY: a copy of a static written only before any backend existed.
    unsafe { SHARED }
}

pub(crate) fn available() -> bool {
    shared().is_some()
}

pub(crate) fn database() -> u32 {
    // SAFETY: set once at backend start.
    unsafe { pg_sys::MyDatabaseId.to_u32() }
}

/// Runs `f` on the slots under the lock, held exclusively (lookups are
/// short and every call writes but `pending`).
fn with_slots<T>(f: impl FnOnce(&mut [HitSlot]) -> T) -> Option<T> {
    let s = shared()?;
    // SAFETY: the lock lives in shared memory for the server's life; the
    // slots are touched only while it is held exclusively, so the `&mut`
    // aliases nothing. `f` is pure slot arithmetic that cannot raise.
    unsafe {
        pg_sys::LWLockAcquire(s.lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        let slots = std::slice::from_raw_parts_mut(s.slots, s.len);
        let out = f(slots);
        pg_sys::LWLockRelease(s.lock);
        Some(out)
    }
}

/// Counts one hit or miss (a hit of a full table per `model`); false
/// without shared memory or when even the overflow slots are full.
pub(crate) fn count(key: &HitSlot, model: &str) -> bool {
    with_slots(|slots| hits::record(slots, key, model, 1) != hits::Counted::Full).unwrap_or(false)
}

/// This database's counts not yet flushed.
pub(crate) fn pending() -> Vec<HitSlot> {
    let db = database();
    with_slots(|slots| hits::snapshot(slots, db)).unwrap_or_default()
}

/// Takes this database's counts out for a flush; they come back if the
/// (sub)transaction aborts.
pub(crate) fn take() -> Vec<HitSlot> {
    let db = database();
    let taken = with_slots(|slots| hits::take(slots, db)).unwrap_or_default();
    if !taken.is_empty() {
        // SAFETY: plain read of the current subtransaction id.
        let subid = unsafe { pg_sys::GetCurrentSubTransactionId() };
        TAKEN.with(|t| t.borrow_mut().push((subid, taken.clone())));
    }
    taken
}

fn give_back(slots: Vec<HitSlot>) {
    with_slots(|table| {
        for s in &slots {
            // Back under its key, in the overflow slots if need be; a table
            // full to the last slot loses it (this cannot raise).
            hits::restore(table, s);
        }
    });
}

extern "C-unwind" fn on_xact(event: pg_sys::XactEvent::Type, _arg: *mut std::ffi::c_void) {
    use pg_sys::XactEvent as E;
    let aborted = event == E::XACT_EVENT_ABORT || event == E::XACT_EVENT_PARALLEL_ABORT;
    let committed = [
        E::XACT_EVENT_COMMIT,
        E::XACT_EVENT_PARALLEL_COMMIT,
        E::XACT_EVENT_PREPARE,
    ]
    .contains(&event);
    if !aborted && !committed {
        return;
    }
    let taken = TAKEN.with(|t| std::mem::take(&mut *t.borrow_mut()));
    if aborted {
        give_back(taken.into_iter().flat_map(|(_, s)| s).collect());
    }
}

extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    use pg_sys::SubXactEvent as E;
    if event == E::SUBXACT_EVENT_ABORT_SUB {
        // What the aborted subtransaction (or one inside it: a higher id)
        // took was not written.
        let back: Vec<HitSlot> = TAKEN.with(|t| {
            let mut t = t.borrow_mut();
            let (gone, keep): (Vec<_>, Vec<_>) = t.drain(..).partition(|(s, _)| *s >= my_subid);
            *t = keep;
            gone.into_iter().flat_map(|(_, s)| s).collect()
        });
        if !back.is_empty() {
            give_back(back);
        }
    } else if event == E::SUBXACT_EVENT_COMMIT_SUB {
        TAKEN.with(|t| {
            for (s, _) in t.borrow_mut().iter_mut() {
                if *s == my_subid {
                    *s = parent;
                }
            }
        });
    }
}
