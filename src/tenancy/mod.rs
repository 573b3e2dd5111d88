//! Tenancy: the tenant of the request, resolved once per transaction, and the
//! functions RLS policies call. The SQL side (tables, policies,
//! `enable_tenancy`, `tenancy_report`, its rows in the registry) is
//! `sql/tenancy.sql`.
//!
//! Why Rust and in-memory state: `current_tenant()` runs in every policy, so
//! its result is cached per transaction in backend memory, where no SQL
//! caller can overwrite the cached answer (a GUC could be `set_config`'d by
//! anyone). The same goes for the tenant a backend job picks with
//! `set_tenant()`. The request settings themselves are only as trustworthy as
//! the caller: a role that can run arbitrary SQL can set `request.jwt.claims`,
//! which is why only API roles (behind PostgREST) get `grant_api`.

pub mod context;
mod explain_guard;

use crate::error::{ErrorKind, OrRaise, SaasError, SaasResult};
use crate::gucs::{string_setting_is, TENANT_CLAIM};
use crate::pgutil::{as_owner, local_xid, saas_relids, select_latest, to_pg_uuid};
use crate::request::sub_uuid;
use crate::request_settings::{self, RequestSettings};
use crate::uuid::Uuid;
use context::{tenant_source, TenantRole, TenantSource};
use pgrx::prelude::*;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

pub(crate) fn init() {
    explain_guard::init();
    // SAFETY: registering callbacks with static functions and no argument;
    // both only update thread-locals and never raise.
    unsafe {
        pg_sys::RegisterSubXactCallback(Some(on_subxact), std::ptr::null_mut());
        pg_sys::CacheRegisterRelcacheCallback(
            Some(on_relcache_change),
            pg_sys::Datum::from(0usize),
        );
    }
}

/// Drops the kept directory answers when `saas.tenants` or
/// `saas.memberships` is invalidated (InvalidOid: every relation).
extern "C-unwind" fn on_relcache_change(_arg: pg_sys::Datum, relid: pg_sys::Oid) {
    if relid == pg_sys::InvalidOid || DIRECTORY_RELIDS.with(Cell::get).contains(&relid) {
        DIRECTORY.with(|d| {
            // Never borrowed across a call that could invalidate.
            if let Ok(mut d) = d.try_borrow_mut() {
                d.clear();
            }
        });
        DIRECTORY_GENERATION.with(|g| g.set(g.get().wrapping_add(1)));
    }
}

/// Statement trigger on `saas.tenants` and `saas.memberships` (any change,
/// TRUNCATE too): a relcache invalidation of the table, so every backend
/// drops the tenants and memberships it keeps (this one after the
/// statement, the others before their next transaction).
#[pg_trigger]
fn _tenant_directory_changed<'a>(
    trigger: &'a pgrx::PgTrigger<'a>,
) -> Result<Option<PgHeapTuple<'a, pgrx::AllocatedByRust>>, SaasError> {
    let rel = trigger.relation().map_err(|e| {
        SaasError::new(
            ErrorKind::ObjectNotInPrerequisiteState,
            "pg_saas could not read its trigger's relation",
            "Create this trigger only through the extension.",
        )
        .with_detail(e.to_string())
    })?;
    // SAFETY: the trigger's relation is open while it fires.
    unsafe { pg_sys::CacheInvalidateRelcache(rel.as_ptr()) };
    Ok(None)
}

/// The inputs `current_tenant()` resolved from: a change of any input (a
/// new transaction, other claims or headers, another claim name, a
/// `set_tenant`) resolves again.
#[derive(Clone)]
struct Inputs {
    /// The request settings (and the transaction) resolved for.
    request: Rc<RequestSettings>,
    claim_name: String,
    backend: Option<Uuid>,
}

/// A subtransaction that aborts (ROLLBACK TO SAVEPOINT, a plpgsql EXCEPTION
/// block) may have changed what resolution read, or called set_tenant: forget
/// the cached resolution, and a tenant set inside it (fail closed).
extern "C-unwind" fn on_subxact(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        // Only Cell/RefCell updates here: nothing can raise an error.
        RESOLVED.with(|r| {
            if let Ok(mut r) = r.try_borrow_mut() {
                *r = None;
            }
        });
        BACKEND_TENANT.with(|b| {
            if b.get().is_some_and(|t| t.subid >= my_subid) {
                b.set(None);
            }
        });
        RESOLVING.with(|r| r.set(None));
    }
}

/// The tenant `set_tenant()` chose: for one transaction (lxid), set in one
/// subtransaction (undone if that subtransaction aborts).
#[derive(Clone, Copy)]
struct BackendTenant {
    lxid: u32,
    subid: pg_sys::SubTransactionId,
    tenant: Uuid,
}

#[derive(Clone)]
struct Resolved {
    inputs: Inputs,
    tenant: Option<Uuid>,
    role: Option<TenantRole>,
}

thread_local! {
    static RESOLVED: RefCell<Option<Resolved>> = const { RefCell::new(None) };
    static BACKEND_TENANT: Cell<Option<BackendTenant>> = const { Cell::new(None) };
    /// The transaction resolving right now: a policy re-entering resolution
    /// in it sees no tenant. Keyed by lxid so an ERROR thrown mid-resolution
    /// cannot leave the flag set for later transactions.
    static RESOLVING: Cell<Option<u32>> = const { Cell::new(None) };
    static LOOKUP_PLAN: Cell<pg_sys::SPIPlanPtr> = const { Cell::new(std::ptr::null_mut()) };
    /// `lookup`'s answers per tenant and user, kept across transactions
    /// until either table changes (see `_tenant_directory_changed`).
    static DIRECTORY: RefCell<HashMap<(Uuid, Option<Uuid>), DirectoryEntry>> = RefCell::new(HashMap::new());
    /// The OIDs of saas.tenants and saas.memberships when DIRECTORY was filled.
    static DIRECTORY_RELIDS: Cell<[pg_sys::Oid; 2]> = const { Cell::new([pg_sys::InvalidOid; 2]) };
    /// Invalidations seen so far: an answer read while one arrives is used
    /// once, not kept.
    static DIRECTORY_GENERATION: Cell<u64> = const { Cell::new(0) };
}

/// A tenant's status and the user's role in it; None: no such tenant.
type DirectoryEntry = Option<(String, Option<TenantRole>)>;

/// Answers kept per backend at most (then all are dropped and refilled).
const DIRECTORY_MAX: usize = 10_000;

fn claim_name() -> SaasResult<String> {
    let name = TENANT_CLAIM
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|| context::DEFAULT_TENANT_CLAIM.to_string());
    if context::validate_claim_name(&name) {
        Ok(name)
    } else {
        Err(SaasError::new(
            ErrorKind::ConfigFile,
            format!("saas.tenant_claim is not a usable claim name: \"{name}\""),
            "Set it to a JSON key of 1 to 63 letters, digits or _-.:/ characters, e.g. ALTER DATABASE app SET saas.tenant_claim = 'org_id'.",
        ))
    }
}

fn backend_tenant(lxid: u32) -> Option<Uuid> {
    BACKEND_TENANT.with(|b| b.get().filter(|t| t.lxid == lxid).map(|t| t.tenant))
}

fn current_inputs(request: Rc<RequestSettings>) -> SaasResult<Inputs> {
    let backend = backend_tenant(request.lxid());
    Ok(Inputs {
        request,
        claim_name: claim_name()?,
        backend,
    })
}

/// The tenant's status and the user's role in it. Run as the directory's
/// owner (`resolve` does), so it reads past RLS whoever asks. `None`: no
/// such tenant. Kept per backend until the directory changes: read with a
/// snapshot taken after the generation is noted, so a change committed
/// before the read is in it and any later one drops it.
fn lookup(tenant: Uuid, user: Option<Uuid>) -> SaasResult<DirectoryEntry> {
    let key = (tenant, user);
    if let Some(hit) = DIRECTORY.with(|d| d.borrow().get(&key).cloned()) {
        return Ok(hit);
    }
    // The OIDs before the read, so that an invalidation arriving during it
    // is recognised (and the answer used once, not kept).
    DIRECTORY_RELIDS.with(|r| r.set(saas_relids([c"tenants", c"memberships"])));
    let generation = DIRECTORY_GENERATION.with(Cell::get);
    let uuid = pg_sys::BuiltinOid::UUIDOID.value();
    let row = Spi::connect(|_| {
        select_latest(
            &LOOKUP_PLAN,
            c"SELECT t.status, m.role::text FROM saas.tenants t \
              LEFT JOIN saas.memberships m ON m.tenant_id = t.id AND m.user_id = $2 \
              WHERE t.id = $1",
            &[uuid, uuid],
            &[
                to_pg_uuid(tenant).into_datum(),
                user.map(to_pg_uuid).and_then(|u| u.into_datum()),
            ],
        )
    })?;
    let entry = row.map(|r| {
        let mut r = r.into_iter();
        let status = r.next().flatten().unwrap_or_default();
        let role = r.next().flatten().and_then(|x| TenantRole::parse(&x).ok());
        (status, role)
    });
    if DIRECTORY_GENERATION.with(Cell::get) == generation {
        DIRECTORY.with(|d| {
            let mut d = d.borrow_mut();
            if d.len() >= DIRECTORY_MAX {
                d.clear();
            }
            d.insert(key, entry.clone());
        });
    }
    Ok(entry)
}

/// The owner of saas.tenants (the extension's owner), read from the
/// relation cache: who reads the tenant directory for a resolution.
fn directory_owner() -> SaasResult<pg_sys::Oid> {
    let [relid] = saas_relids([c"tenants"]);
    // SAFETY: the relation cache entry of an existing relation, opened and
    // closed here without a lock (its owner is only read).
    unsafe {
        if relid == pg_sys::InvalidOid {
            return Err(SaasError::new(
                ErrorKind::ObjectNotInPrerequisiteState,
                "pg_saas could not find saas.tenants",
                "Check that the extension is installed completely (CREATE EXTENSION pg_saas).",
            ));
        }
        let rel = pg_sys::RelationIdGetRelation(relid);
        let owner = (*(*rel).rd_rel).relowner;
        pg_sys::RelationClose(rel);
        Ok(owner)
    }
}

fn suspended(tenant: Uuid) -> SaasError {
    SaasError::new(
        ErrorKind::InsufficientPrivilege,
        format!("tenant {tenant} is suspended"),
        "A suspended tenant's data is not served; its owner can ask the operator to reactivate it.",
    )
}

/// Resolution itself, without the cache.
fn resolve(inputs: &Inputs) -> SaasResult<(Option<Uuid>, Option<TenantRole>)> {
    let claims = inputs.request.claims()?;
    // A sub that is not a uuid (other identity providers) does not break a
    // request scoped by its tenant claim; it only has no role in the tenant.
    // The header path needs the user and reports the bad sub.
    let user = claims.and_then(|c| sub_uuid(c).ok()).flatten();
    let source = tenant_source(
        claims,
        inputs.request.headers_text(),
        &inputs.claim_name,
        inputs.backend,
    )?;
    // A user's token (its sub a uuid, pg_saas's user ids) is held to the
    // memberships on every request: a member removed from a tenant loses it
    // at once, not when the token expires. Machine tokens (no sub, or a sub
    // of another identity provider) are scoped by their claim alone.
    let (tenant, member_required, by_header) = match source {
        TenantSource::Unresolved => return Ok((None, None)),
        TenantSource::Claim(t) => (t, user.is_some(), false),
        TenantSource::Backend(t) => (t, false, false),
        TenantSource::Header { tenant, .. } => (tenant, true, true),
    };
    let not_member = || {
        SaasError::new(
            ErrorKind::InsufficientPrivilege,
            format!("not a member of tenant {tenant}"),
            if by_header {
                "X-Tenant-Id must name a tenant you belong to; list yours with saas.my_memberships()."
            } else {
                "The token names a tenant its user does not belong to (any more); sign in again for a token of a tenant you belong to, listed by saas.my_memberships()."
            },
        )
    };
    // As the directory's owner: callers that are not SECURITY DEFINER (the
    // audit trigger runs as the writing role) would otherwise read
    // saas.tenants and saas.memberships through their own RLS, whose policy
    // re-enters this resolution and sees nothing.
    let owner = directory_owner()?;
    match as_owner(owner, || lookup(tenant, user))? {
        // A header naming an unknown tenant is refused like any non-membership.
        None if member_required => Err(not_member()),
        // A signed claim (or set_tenant) for a tenant that no longer exists: deny.
        None => Ok((None, None)),
        // Membership first, so a non-member learns nothing about the tenant.
        Some((_, None)) if member_required => Err(not_member()),
        Some((status, _)) if status == "suspended" => Err(suspended(tenant)),
        Some((_, role)) => Ok((Some(tenant), role)),
    }
}

/// The cached resolution when its inputs still hold, compared in place:
/// audit asks per row, and the request settings can be kilobytes.
fn cached_resolution(request: &Rc<RequestSettings>) -> Option<(Option<Uuid>, Option<TenantRole>)> {
    RESOLVED.with(|r| {
        let mut r = r.borrow_mut();
        let c = r.as_mut()?;
        let inputs = &mut c.inputs;
        // Another snapshot of the same transaction's settings (one tenancy
        // does not read changed, say request.path) resolves the same.
        let same_snapshot = Rc::ptr_eq(&inputs.request, request);
        let same_request = same_snapshot
            || (inputs.request.lxid() == request.lxid()
                && inputs.request.claims_text() == request.claims_text()
                && inputs.request.headers_text() == request.headers_text());
        let same = same_request
            && inputs.backend == backend_tenant(request.lxid())
            && string_setting_is(
                &TENANT_CLAIM,
                context::DEFAULT_TENANT_CLAIM,
                &inputs.claim_name,
            );
        if !same {
            return None;
        }
        if !same_snapshot {
            // Compared by pointer from now on.
            inputs.request = Rc::clone(request);
        }
        Some((c.tenant, c.role))
    })
}

/// The cached resolution for this transaction and these request settings.
fn resolved() -> SaasResult<(Option<Uuid>, Option<TenantRole>)> {
    let request = request_settings::current();
    if let Some(hit) = cached_resolution(&request) {
        return Ok(hit);
    }
    let inputs = current_inputs(request)?;
    let lxid = inputs.request.lxid();
    if RESOLVING.with(|r| r.replace(Some(lxid))) == Some(lxid) {
        // Re-entered from a policy while resolving: fail closed.
        return Ok((None, None));
    }
    let result = resolve(&inputs);
    RESOLVING.with(|r| r.set(None));
    let (tenant, role) = result?;
    RESOLVED.with(|r| {
        *r.borrow_mut() = Some(Resolved {
            inputs,
            tenant,
            role,
        })
    });
    Ok((tenant, role))
}

/// The tenant of this request for other modules (audit rows without a
/// tenant column); the same cached resolution the policies use.
pub(crate) fn resolved_tenant() -> SaasResult<Option<Uuid>> {
    Ok(resolved()?.0)
}

/// The user of the request: the `sub` claim of the JWT, as uuid. NULL for
/// anonymous requests and callers without claims.
#[pg_extern(stable, parallel_safe)]
fn current_user_id() -> Option<pgrx::Uuid> {
    let request = request_settings::current();
    let claims = request.claims().or_raise();
    claims
        .map(sub_uuid)
        .transpose()
        .or_raise()
        .flatten()
        .map(to_pg_uuid)
}

/// The tenant of this request (JWT claim, else `X-Tenant-Id` header for a
/// member, else `set_tenant()` for callers without claims), or NULL, which
/// every pg_saas policy treats as "no rows". Policies call it as
/// `(SELECT saas.current_tenant())` so it runs once per query.
#[pg_extern(stable, parallel_restricted, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn current_tenant() -> Option<pgrx::Uuid> {
    resolved().or_raise().0.map(to_pg_uuid)
}

/// Whether the request's user holds at least `min_role` (owner > admin >
/// member > viewer) in the current tenant. False without a tenant or user.
#[pg_extern(stable, strict, parallel_restricted, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn has_role(min_role: &str) -> bool {
    let min = TenantRole::parse(min_role).or_raise();
    let (_, role) = resolved().or_raise();
    role.is_some_and(|r| r.at_least(min))
}

/// Scopes the rest of this transaction to `tenant`, for callers without JWT
/// claims (backend jobs, psql). NULL clears it. Refused inside API requests:
/// a request's tenant comes from its JWT or X-Tenant-Id header only.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn set_tenant(tenant: Option<pgrx::Uuid>) -> Option<pgrx::Uuid> {
    set_tenant_impl(tenant.map(|t| Uuid(*t.as_bytes())))
        .or_raise()
        .map(to_pg_uuid)
}

fn set_tenant_impl(tenant: Option<Uuid>) -> SaasResult<Option<Uuid>> {
    if request_settings::current().claims()?.is_some() {
        return Err(SaasError::new(
            ErrorKind::InsufficientPrivilege,
            "set_tenant cannot re-scope a request that carries JWT claims",
            "The tenant of an API request comes from its JWT tenant claim or the X-Tenant-Id header; set_tenant is for backend jobs without claims.",
        ));
    }
    // Whatever happens next, the previous choice is gone: a failed switch
    // must not leave a job writing as the tenant before.
    BACKEND_TENANT.with(|b| b.set(None));
    let Some(t) = tenant else {
        return Ok(None);
    };
    match lookup(t, None)? {
        None => Err(SaasError::new(
            ErrorKind::InvalidParameter,
            format!("tenant {t} does not exist"),
            "Pass the id of a row in saas.tenants.",
        )),
        Some((status, _)) if status == "suspended" => Err(suspended(t)),
        Some(_) => {
            // The caller as SET ROLE left it, not this SECURITY DEFINER
            // function's owner.
            // SAFETY: plain reads of the backend's role and transaction state.
            let (bypasses_rls, subid) = unsafe {
                let outer = pg_sys::GetOuterUserId();
                (
                    pg_sys::superuser_arg(outer) || pg_sys::has_bypassrls_privilege(outer),
                    pg_sys::GetCurrentSubTransactionId(),
                )
            };
            if bypasses_rls {
                pgrx::warning!(
                    "set_tenant: the calling role bypasses row level security, so only tenant column defaults follow tenant {t}; its queries see every tenant. Run tenant jobs as a NOBYPASSRLS role."
                );
            }
            BACKEND_TENANT.with(|b| {
                b.set(Some(BackendTenant {
                    lxid: local_xid(),
                    subid,
                    tenant: t,
                }))
            });
            Ok(Some(t))
        }
    }
}

// Tables, policies and SQL functions of tenancy; its policies call the Rust
// functions below, which must exist first.
extension_sql_file!(
    "../../sql/tenancy.sql",
    name = "tenancy",
    requires = [
        "registry",
        current_tenant,
        current_user_id,
        has_role,
        set_tenant,
        _tenant_directory_changed
    ]
);
