//! The request settings PostgREST sets for a transaction
//! (`request.jwt.claims`, `request.headers`, `request.method`,
//! `request.path`), read once per transaction for every module: tenancy,
//! audit and rate limits read the request only through [`current`].
//!
//! The cache is checked on every call, in place and without allocating (the
//! local transaction id and each setting compared with the copy kept):
//! `current_tenant()` and the audit row trigger run per row, and the headers
//! run to kilobytes. The parsed forms (claims, headers) are made on first
//! use, once per snapshot. A snapshot is never stale: a setting changed by
//! `set_config`, or restored by a rolled-back subtransaction, no longer
//! matches its copy, so the next call takes a new snapshot.

use crate::error::SaasResult;
use crate::gucs::{string_setting_is, TRUSTED_PROXIES};
use crate::pgutil::{local_xid, setting, setting_is};
use crate::request::{parse_claims, Claims, RequestHeaders, TrustedProxies};
use std::cell::{OnceCell, RefCell};
use std::rc::Rc;

/// The request settings of one transaction as they read now. Consumers
/// that derive something from them (tenancy's resolution, audit's actor)
/// keep the `Rc` and compare it with [`Rc::ptr_eq`]: a new snapshot means
/// a new transaction or a changed setting.
pub(crate) struct RequestSettings {
    lxid: u32,
    claims_text: Option<String>,
    headers_text: Option<String>,
    method: Option<String>,
    path: Option<String>,
    claims: OnceCell<SaasResult<Option<Claims>>>,
    headers: OnceCell<RequestHeaders>,
}

impl RequestSettings {
    fn read(lxid: u32) -> RequestSettings {
        RequestSettings {
            lxid,
            claims_text: setting(c"request.jwt.claims"),
            headers_text: setting(c"request.headers"),
            method: setting(c"request.method"),
            path: setting(c"request.path"),
            claims: OnceCell::new(),
            headers: OnceCell::new(),
        }
    }

    /// Whether this snapshot is still what the transaction's settings say.
    fn is_current(&self, lxid: u32) -> bool {
        self.lxid == lxid
            && setting_is(c"request.jwt.claims", self.claims_text.as_deref())
            && setting_is(c"request.headers", self.headers_text.as_deref())
            && setting_is(c"request.method", self.method.as_deref())
            && setting_is(c"request.path", self.path.as_deref())
    }

    /// The local transaction id the snapshot was taken in.
    pub(crate) fn lxid(&self) -> u32 {
        self.lxid
    }

    /// `request.jwt.claims` as set (None: not defined).
    pub(crate) fn claims_text(&self) -> Option<&str> {
        self.claims_text.as_deref()
    }

    /// `request.headers` as set (None: not defined).
    pub(crate) fn headers_text(&self) -> Option<&str> {
        self.headers_text.as_deref()
    }

    /// `request.method` as set (None: not defined).
    pub(crate) fn method(&self) -> Option<&str> {
        self.method.as_deref()
    }

    /// `request.path` as set (None: not defined).
    pub(crate) fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// The claims, parsed once ([`parse_claims`]: None without claims, an
    /// error (22P02) when they are not a JSON object).
    pub(crate) fn claims(&self) -> SaasResult<Option<&Claims>> {
        match self
            .claims
            .get_or_init(|| parse_claims(self.claims_text.as_deref()))
        {
            Ok(claims) => Ok(claims.as_ref()),
            Err(e) => Err(e.clone()),
        }
    }

    /// The headers, parsed once, leniently ([`RequestHeaders::parse`]).
    pub(crate) fn headers(&self) -> &RequestHeaders {
        self.headers
            .get_or_init(|| RequestHeaders::parse(self.headers_text.as_deref()))
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<RequestSettings>>> = const { RefCell::new(None) };
}

/// The request settings of this transaction as they read now: the cached
/// snapshot when it still matches (no allocation), else a new one.
pub(crate) fn current() -> Rc<RequestSettings> {
    let lxid = local_xid();
    let hit = CURRENT.with(|c| c.borrow().as_ref().filter(|r| r.is_current(lxid)).cloned());
    if let Some(hit) = hit {
        return hit;
    }
    let fresh = Rc::new(RequestSettings::read(lxid));
    CURRENT.with(|c| *c.borrow_mut() = Some(fresh.clone()));
    fresh
}

thread_local! {
    static PROXIES: RefCell<Option<(String, Rc<TrustedProxies>)>> = const { RefCell::new(None) };
}

/// `saas.trusted_proxies`, parsed: the kept list while the setting still
/// reads the same (compared in place, no copy: the audit trigger asks per
/// statement), else parsed once per distinct value
/// ([`TrustedProxies::cached`]). 22023 for a value the check hook would
/// have refused (it cannot be set otherwise).
pub(crate) fn trusted_proxies() -> SaasResult<Rc<TrustedProxies>> {
    let hit = PROXIES.with(|p| {
        p.borrow()
            .as_ref()
            .filter(|(text, _)| string_setting_is(&TRUSTED_PROXIES, TrustedProxies::DEFAULT, text))
            .map(|(_, parsed)| parsed.clone())
    });
    if let Some(hit) = hit {
        return Ok(hit);
    }
    let text = TRUSTED_PROXIES.get().map_or_else(
        || TrustedProxies::DEFAULT.to_owned(),
        |c| c.to_string_lossy().into_owned(),
    );
    let parsed = TrustedProxies::cached(&text)?;
    PROXIES.with(|p| *p.borrow_mut() = Some((text, parsed.clone())));
    Ok(parsed)
}
