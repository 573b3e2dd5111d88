//! Who made a change and through which request, as the log records it:
//! derived from the request settings (`crate::request_settings`) and the
//! current user, once per snapshot of them, then shared by every row.

use crate::error::SaasResult;
use crate::request::{sub_uuid, TrustedProxies};
use crate::request_settings::{self, RequestSettings};
use pgrx::pg_sys;
use serde_json::Value;
use std::cell::RefCell;
use std::ffi::CStr;
use std::rc::Rc;

/// The request columns of an audit row.
pub(super) struct RequestContext {
    pub actor_id: Option<String>,
    pub actor_role: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub method: Option<String>,
    pub path: Option<String>,
}

/// What a cached context was derived from.
struct Derived {
    request: Rc<RequestSettings>,
    user: pg_sys::Oid,
    proxies: Rc<TrustedProxies>,
    context: Rc<RequestContext>,
}

thread_local! {
    static CACHED: RefCell<Option<Derived>> = const { RefCell::new(None) };
}

/// Actor, client and request of the current statement, cached while the
/// request settings (and the transaction), the current user and
/// `saas.trusted_proxies` stay the same.
/// A role changed (its name is in the kept context): derive again.
pub(super) extern "C-unwind" fn on_role_change(_arg: pgrx::pg_sys::Datum, _cache: i32, _hash: u32) {
    CACHED.with(|c| {
        if let Ok(mut c) = c.try_borrow_mut() {
            *c = None;
        }
    });
}

pub(super) fn request_context() -> SaasResult<Rc<RequestContext>> {
    // SAFETY: plain read of the backend's current user.
    let user = unsafe { pg_sys::GetUserId() };
    let request = request_settings::current();
    let proxies = request_settings::trusted_proxies()?;
    let hit = CACHED.with(|c| {
        c.borrow()
            .as_ref()
            .filter(|d| {
                // The same settings in a later transaction derive the same
                // context (each autocommitted write is a transaction).
                d.user == user
                    && Rc::ptr_eq(&d.proxies, &proxies)
                    && (Rc::ptr_eq(&d.request, &request)
                        || (d.request.claims_text() == request.claims_text()
                            && d.request.headers_text() == request.headers_text()
                            && d.request.method() == request.method()
                            && d.request.path() == request.path()))
            })
            .map(|d| d.context.clone())
    });
    if let Some(hit) = hit {
        return Ok(hit);
    }
    let context = Rc::new(derive(&request, user, &proxies));
    CACHED.with(|c| {
        *c.borrow_mut() = Some(Derived {
            request,
            user,
            proxies,
            context: context.clone(),
        })
    });
    Ok(context)
}

fn derive(
    request: &RequestSettings,
    user: pg_sys::Oid,
    proxies: &TrustedProxies,
) -> RequestContext {
    // Audit never fails a write over a malformed claim or header: what can't
    // be read is recorded as unknown (tenancy refuses bad claims on its own).
    let claims = request.claims().ok().flatten();
    let headers = request.headers();
    let header = |name: &str| headers.get(name).map(str::to_owned);
    let actor_id = claims
        .and_then(|c| sub_uuid(c).ok().flatten())
        .map(|u| u.to_string());
    let claimed_role = claims
        .and_then(|c| c.get("role"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    let actor_role = claimed_role.or_else(|| {
        // SAFETY: the name of an existing role (missing_ok = true), copied.
        unsafe {
            let p = pg_sys::GetUserNameFromId(user, true);
            (!p.is_null()).then(|| CStr::from_ptr(p).to_string_lossy().into_owned())
        }
    });
    let non_empty = |v: Option<&str>| v.filter(|s| !s.is_empty()).map(str::to_owned);
    RequestContext {
        actor_id,
        actor_role,
        client_ip: headers.client_ip(proxies),
        user_agent: header("user-agent"),
        request_id: header("x-request-id"),
        method: non_empty(request.method()),
        path: non_empty(request.path()),
    }
}
