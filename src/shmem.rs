//! Shared memory of the modules that keep state there (ratelimit, llm),
//! present only when pg_saas is in `shared_preload_libraries`: one pair of
//! postmaster hooks, chained to the previous ones once, that asks for and
//! then sets up every registered segment. A module registers a request
//! function (how many bytes and locks it needs) and a startup function
//! (finds its segment with [`segment`], records where it is), both run by
//! the postmaster only, in registration order.

use pgrx::pg_sys;
use std::ffi::CStr;

/// PostgreSQL's `AddinShmemInitLock`: `&MainLWLockArray[21].lock` in
/// `storage/lwlocknames.h` (PostgreSQL 15), which bindgen does not carry
/// (a macro). Every extension's startup hook holds it around
/// `ShmemInitStruct`.
const ADDIN_SHMEM_INIT_LOCK: usize = 21;

/// At most this many modules register (two do).
const MAX_USERS: usize = 4;

type Hook = fn();

// Written only while the postmaster loads the library (before any backend
// exists), read by the hooks the postmaster runs after.
static mut USERS: [Option<(Hook, Hook)>; MAX_USERS] = [None; MAX_USERS];
static mut PREV_REQUEST_HOOK: pg_sys::shmem_request_hook_type = None;
static mut PREV_STARTUP_HOOK: pg_sys::shmem_startup_hook_type = None;

/// Whether the library is being preloaded (shared memory can be asked for).
pub(crate) fn preloading() -> bool {
    // SAFETY: a flag the postmaster sets while it preloads libraries.
    unsafe { pg_sys::process_shared_preload_libraries_in_progress }
}

/// Registers a module's request and startup functions; does nothing (and
/// returns false) unless the library is being preloaded. The hooks are
/// chained on the first registration.
pub(crate) fn register(request: Hook, startup: Hook) -> bool {
    if !preloading() {
        return false;
    }
    // SAFETY: the postmaster loads the library once, single-threaded,
    // before forking any backend; chaining hooks as every preloaded
    // extension does.
    unsafe {
        let users = USERS;
        if users.iter().all(Option::is_none) {
            PREV_REQUEST_HOOK = pg_sys::shmem_request_hook;
            pg_sys::shmem_request_hook = Some(on_shmem_request);
            PREV_STARTUP_HOOK = pg_sys::shmem_startup_hook;
            pg_sys::shmem_startup_hook = Some(on_shmem_startup);
        }
        let free = users
            .iter()
            .position(Option::is_none)
            .expect("more shared-memory users than MAX_USERS");
        USERS[free] = Some((request, startup));
    }
    true
}

fn users() -> impl Iterator<Item = (Hook, Hook)> {
    // SAFETY: a copy of the array, written only before the hooks run.
    unsafe { USERS }.into_iter().flatten()
}

/// # Safety
///
/// Called by the postmaster only, once, in its shared-memory request phase.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_shmem_request() {
    // SAFETY: the postmaster's shmem request phase.
    unsafe {
        if let Some(prev) = PREV_REQUEST_HOOK {
            prev();
        }
    }
    for (request, _) in users() {
        request();
    }
}

/// # Safety
///
/// Called by the postmaster only, after the request phase, before any
/// backend that reads a module's segment exists (and again after a crash
/// restart, when none does).
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_shmem_startup() {
    // SAFETY: the previous hook first, then every module's startup under
    // AddinShmemInitLock, as every extension's startup hook does.
    unsafe {
        if let Some(prev) = PREV_STARTUP_HOOK {
            prev();
        }
        let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(ADDIN_SHMEM_INIT_LOCK)).lock;
        pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
        for (_, startup) in users() {
            startup();
        }
        pg_sys::LWLockRelease(init_lock);
    }
}

/// The named segment of `size` bytes, zeroed when it is new (`true` then).
///
/// # Safety
///
/// Only from a registered startup function (the postmaster holds
/// AddinShmemInitLock around them), with the size its request function
/// asked for.
pub(crate) unsafe fn segment(name: &CStr, size: usize) -> (*mut u8, bool) {
    // SAFETY: the caller holds AddinShmemInitLock in the startup phase.
    unsafe {
        let mut found = false;
        let base = pg_sys::ShmemInitStruct(name.as_ptr(), size, &mut found).cast::<u8>();
        if !found {
            std::ptr::write_bytes(base, 0, size);
        }
        (base, !found)
    }
}
