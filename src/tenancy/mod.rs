//! Tenancy: the tenant of the request, resolved once per transaction, and the
//! functions RLS policies call. The SQL side (tables, policies,
//! `enable_tenancy`, `tenancy_report`, `grant_api`) is `sql/tenancy.sql`.
//!
//! Why Rust and in-memory state: `current_tenant()` runs in every policy, so
//! its result is cached per transaction in backend memory, where no SQL
//! caller can forge it (a GUC could be `set_config`'d by anyone). The same
//! goes for the tenant a backend job picks with `set_tenant()`.

pub mod context;

use crate::error::{ErrorKind, OrRaise, SaasError, SaasResult};
use context::{parse_claims, subject, tenant_source, TenantRole, TenantSource, Uuid};
use pgrx::prelude::*;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::cell::{Cell, RefCell};
use std::ffi::{CStr, CString};

/// `saas.tenant_claim`: the JWT claim naming the tenant. Superuser-only, so a
/// session cannot point it at a claim it controls.
static TENANT_CLAIM: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"tenant_id"));

pub(crate) fn init() {
    GucRegistry::define_string_guc(
        c"saas.tenant_claim",
        c"JWT claim that names the tenant of a request.",
        c"Looked up at the top level of request.jwt.claims, then under app_metadata.",
        &TENANT_CLAIM,
        GucContext::Suset,
        GucFlags::default(),
    );
}

/// What `current_tenant()` resolved, and the inputs it resolved it from: a
/// change of any input (a new transaction, other claims) resolves again.
#[derive(Clone, PartialEq)]
struct Inputs {
    lxid: u32,
    claims: Option<String>,
    headers: Option<String>,
    claim_name: String,
    backend: Option<Uuid>,
}

#[derive(Clone)]
struct Resolved {
    inputs: Inputs,
    tenant: Option<Uuid>,
    role: Option<TenantRole>,
}

thread_local! {
    static RESOLVED: RefCell<Option<Resolved>> = const { RefCell::new(None) };
    /// The tenant `set_tenant()` chose, for one transaction (by lxid).
    static BACKEND_TENANT: Cell<Option<(u32, Uuid)>> = const { Cell::new(None) };
    /// Set while resolving: a policy re-entering resolution sees no tenant.
    static RESOLVING: Cell<bool> = const { Cell::new(false) };
}

/// The backend-local id of the current transaction.
fn local_xid() -> u32 {
    // SAFETY: MyProc is set for every backend that can run SQL.
    unsafe { (*pg_sys::MyProc).lxid }
}

fn setting(name: &CStr) -> Option<String> {
    // SAFETY: GetConfigOption returns NULL or a string owned by the GUC
    // machinery, valid until the setting changes; we copy it at once.
    unsafe {
        let p = pg_sys::GetConfigOption(name.as_ptr(), true, false);
        (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
    }
}

fn claim_name() -> String {
    TENANT_CLAIM
        .get()
        .and_then(|c| c.into_string().ok())
        .filter(|s| context::validate_claim_name(s))
        .unwrap_or_else(|| context::DEFAULT_TENANT_CLAIM.to_string())
}

fn backend_tenant(lxid: u32) -> Option<Uuid> {
    BACKEND_TENANT.with(|b| b.get().filter(|(x, _)| *x == lxid).map(|(_, t)| t))
}

fn current_inputs() -> Inputs {
    let lxid = local_xid();
    Inputs {
        lxid,
        claims: setting(c"request.jwt.claims"),
        headers: setting(c"request.headers"),
        claim_name: claim_name(),
        backend: backend_tenant(lxid),
    }
}

fn to_pg(u: Uuid) -> pgrx::Uuid {
    pgrx::Uuid::from_bytes(u.0)
}

/// The tenant's status and the user's role in it, read past RLS (the
/// functions calling this are SECURITY DEFINER, owned by the superuser that
/// installed the extension). `None`: no such tenant.
fn lookup(tenant: Uuid, user: Option<Uuid>) -> SaasResult<Option<(String, Option<TenantRole>)>> {
    let row: Option<(Option<String>, Option<String>)> = Spi::connect(|client| {
        let args = [to_pg(tenant).into(), user.map(to_pg).into()];
        let table = client.select(
            "SELECT t.status, m.role::text FROM saas.tenants t \
             LEFT JOIN saas.memberships m ON m.tenant_id = t.id AND m.user_id = $2 \
             WHERE t.id = $1",
            Some(1),
            &args,
        )?;
        if table.is_empty() {
            Ok::<_, pgrx::spi::Error>(None)
        } else {
            Ok(Some(table.first().get_two::<String, String>()?))
        }
    })
    .map_err(|e| {
        SaasError::new(
            ErrorKind::ObjectNotInPrerequisiteState,
            "pg_saas could not read its tenant tables",
            "Check that the extension is installed completely (saas.tenants, saas.memberships).",
        )
        .with_detail(e.to_string())
    })?;
    Ok(row.map(|(status, role)| {
        (status.unwrap_or_default(), role.and_then(|r| TenantRole::parse(&r).ok()))
    }))
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
    let claims = parse_claims(inputs.claims.as_deref())?;
    let user = claims.as_ref().map(subject).transpose()?.flatten();
    let source = tenant_source(
        claims.as_ref(),
        inputs.headers.as_deref(),
        &inputs.claim_name,
        inputs.backend,
    )?;
    let (tenant, member_required) = match source {
        TenantSource::Unresolved => return Ok((None, None)),
        TenantSource::Claim(t) | TenantSource::Backend(t) => (t, false),
        TenantSource::Header { tenant, .. } => (tenant, true),
    };
    let not_member = || {
        SaasError::new(
            ErrorKind::InsufficientPrivilege,
            format!("not a member of tenant {tenant}"),
            "X-Tenant-Id must name a tenant you belong to; list yours with saas.my_memberships().",
        )
    };
    match lookup(tenant, user)? {
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

/// The cached resolution for this transaction and these request settings.
fn resolved() -> SaasResult<(Option<Uuid>, Option<TenantRole>)> {
    let inputs = current_inputs();
    if let Some(hit) = RESOLVED.with(|r| {
        r.borrow().as_ref().filter(|c| c.inputs == inputs).map(|c| (c.tenant, c.role))
    }) {
        return Ok(hit);
    }
    if RESOLVING.with(|r| r.replace(true)) {
        // Re-entered from a policy while resolving: fail closed.
        return Ok((None, None));
    }
    let result = resolve(&inputs);
    RESOLVING.with(|r| r.set(false));
    let (tenant, role) = result?;
    RESOLVED.with(|r| *r.borrow_mut() = Some(Resolved { inputs, tenant, role }));
    Ok((tenant, role))
}

/// The user of the request: the `sub` claim of the JWT, as uuid. NULL for
/// anonymous requests and callers without claims.
#[pg_extern(stable, parallel_safe)]
fn current_user_id() -> Option<pgrx::Uuid> {
    let claims = parse_claims(setting(c"request.jwt.claims").as_deref()).or_raise();
    claims.as_ref().map(subject).transpose().or_raise().flatten().map(to_pg)
}

/// The tenant of this request (JWT claim, else `X-Tenant-Id` header for a
/// member, else `set_tenant()` for callers without claims), or NULL, which
/// every pg_saas policy treats as "no rows". Policies call it as
/// `(SELECT saas.current_tenant())` so it runs once per query.
#[pg_extern(stable, parallel_restricted, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn current_tenant() -> Option<pgrx::Uuid> {
    resolved().or_raise().0.map(to_pg)
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
    set_tenant_impl(tenant.map(|t| Uuid(*t.as_bytes()))).or_raise().map(to_pg)
}

fn set_tenant_impl(tenant: Option<Uuid>) -> SaasResult<Option<Uuid>> {
    if parse_claims(setting(c"request.jwt.claims").as_deref())?.is_some() {
        return Err(SaasError::new(
            ErrorKind::InsufficientPrivilege,
            "set_tenant cannot re-scope a request that carries JWT claims",
            "The tenant of an API request comes from its JWT tenant claim or the X-Tenant-Id header; set_tenant is for backend jobs without claims.",
        ));
    }
    let lxid = local_xid();
    let Some(t) = tenant else {
        BACKEND_TENANT.with(|b| b.set(None));
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
            BACKEND_TENANT.with(|b| b.set(Some((lxid, t))));
            Ok(Some(t))
        }
    }
}
