//! For which tenant: pure logic over the request (`crate::request`: claims,
//! sub, headers) and tenant roles. No pgrx types, so `cargo test` and
//! proptest cover every branch.

use crate::error::{ErrorKind, SaasError, SaasResult};
use crate::request::{find_claim, sub_uuid, uuid_value, Claims};
use crate::uuid::Uuid;
use serde_json::Value;
use std::cmp::Ordering;

/// Roles within a tenant, weakest first: `has_role(min)` is `role >= min`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TenantRole {
    Viewer,
    Member,
    Admin,
    Owner,
}

impl TenantRole {
    pub const ALL: [TenantRole; 4] = [
        TenantRole::Viewer,
        TenantRole::Member,
        TenantRole::Admin,
        TenantRole::Owner,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TenantRole::Viewer => "viewer",
            TenantRole::Member => "member",
            TenantRole::Admin => "admin",
            TenantRole::Owner => "owner",
        }
    }

    pub fn parse(text: &str) -> SaasResult<TenantRole> {
        TenantRole::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| {
                SaasError::new(
                    ErrorKind::InvalidParameter,
                    format!("\"{text}\" is not a tenant role"),
                    "Use one of owner, admin, member, viewer (strongest first).",
                )
            })
    }

    /// Does this role satisfy a requirement of `min`?
    pub fn at_least(self, min: TenantRole) -> bool {
        self.cmp(&min) != Ordering::Less
    }
}

/// The claim that names the tenant, unless `saas.tenant_claim` says otherwise.
pub const DEFAULT_TENANT_CLAIM: &str = "tenant_id";
/// The header a user of several tenants switches tenant with.
pub const TENANT_HEADER: &str = "x-tenant-id";

/// The tenant named by the JWT, if it names one.
pub fn claimed_tenant(claims: &Claims, claim_name: &str) -> SaasResult<Option<Uuid>> {
    find_claim(claims, claim_name)
        .map(|v| {
            uuid_value(
                v,
                &format!("the {claim_name} claim"),
                "The tenant claim must hold the tenant's uuid (saas.tenants.id); set saas.tenant_claim if your JWTs name it differently.",
            )
        })
        .transpose()
}

/// The tenant asked for with the `X-Tenant-Id` header, if any.
pub fn header_tenant(raw_headers: Option<&str>) -> SaasResult<Option<Uuid>> {
    let Some(raw) = raw_headers.filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    let headers: Value = serde_json::from_str(raw).map_err(|e| {
        SaasError::new(
            ErrorKind::InvalidJson,
            "request.headers is not valid JSON",
            "PostgREST sets request.headers to a JSON object of lower-cased header names.",
        )
        .with_detail(e.to_string())
    })?;
    let Some(value) = headers.get(TENANT_HEADER).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    uuid_value(
        value,
        "the X-Tenant-Id header",
        "Send the uuid of a tenant you are a member of, e.g. X-Tenant-Id: 3f0c...; list yours with saas.my_memberships().",
    )
    .map(Some)
}

/// How the tenant of a request is to be found, before any table is read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TenantSource {
    /// The JWT names the tenant.
    Claim(Uuid),
    /// The user asks for a tenant by header; valid only with a membership.
    Header { tenant: Uuid, user: Uuid },
    /// A caller without claims scoped the transaction with `set_tenant`.
    Backend(Uuid),
    /// Nothing names a tenant: every policy denies.
    Unresolved,
}

/// The resolution order of `current_tenant()`: JWT claim, then header (for a
/// user with a `sub`), then `set_tenant` for callers without claims.
pub fn tenant_source(
    claims: Option<&Claims>,
    raw_headers: Option<&str>,
    claim_name: &str,
    backend_tenant: Option<Uuid>,
) -> SaasResult<TenantSource> {
    match claims {
        Some(claims) => {
            if let Some(t) = claimed_tenant(claims, claim_name)? {
                return Ok(TenantSource::Claim(t));
            }
            match (header_tenant(raw_headers)?, sub_uuid(claims)?) {
                (Some(tenant), Some(user)) => Ok(TenantSource::Header { tenant, user }),
                (Some(_), None) => Err(SaasError::new(
                    ErrorKind::InsufficientPrivilege,
                    "X-Tenant-Id needs a signed-in user",
                    "Only a JWT with a sub claim can switch tenant by header; anonymous requests have no tenant.",
                )),
                // A request with claims is never scoped by set_tenant.
                (None, _) => Ok(TenantSource::Unresolved),
            }
        }
        None => Ok(backend_tenant.map_or(TenantSource::Unresolved, TenantSource::Backend)),
    }
}

/// A claim name must be a plain JSON key we can look up; keep it sane.
pub fn validate_claim_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| {
            c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.' || c == ':' || c == '/'
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::parse_claims;
    use proptest::prelude::*;
    use serde_json::json;

    const A: &str = "0a0a0a0a-0000-4000-8000-00000000000a";
    const B: &str = "0b0b0b0b-0000-4000-8000-00000000000b";
    const U: &str = "0c0c0c0c-0000-4000-8000-00000000000c";

    fn u(s: &str) -> Uuid {
        Uuid::parse(s).unwrap()
    }

    fn obj(v: Value) -> Claims {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn roles_are_ordered_owner_strongest() {
        use TenantRole::*;
        assert!(Owner.at_least(Admin) && Admin.at_least(Member) && Member.at_least(Viewer));
        assert!(!Viewer.at_least(Member) && !Admin.at_least(Owner));
        assert!(Member.at_least(Member));
        assert_eq!(TenantRole::parse("admin").unwrap(), Admin);
        let e = TenantRole::parse("Admin").unwrap_err();
        assert_eq!(e.sqlstate(), "22023");
        assert!(e.hint.contains("owner, admin, member, viewer"));
    }

    #[test]
    fn tenant_claim_top_level_then_app_metadata_never_user_metadata() {
        let c = obj(json!({"tenant_id": A, "app_metadata": {"tenant_id": B}}));
        assert_eq!(claimed_tenant(&c, "tenant_id").unwrap(), Some(u(A)));
        let c = obj(json!({"app_metadata": {"tenant_id": B}}));
        assert_eq!(claimed_tenant(&c, "tenant_id").unwrap(), Some(u(B)));
        let c = obj(json!({"user_metadata": {"tenant_id": B}}));
        assert_eq!(
            claimed_tenant(&c, "tenant_id").unwrap(),
            None,
            "user_metadata is user-editable"
        );
        let c = obj(json!({"org": A}));
        assert_eq!(
            claimed_tenant(&c, "org").unwrap(),
            Some(u(A)),
            "the claim name is configurable"
        );
        let c = obj(json!({"tenant_id": "acme"}));
        assert_eq!(
            claimed_tenant(&c, "tenant_id").unwrap_err().sqlstate(),
            "22023"
        );
        let c = obj(json!({"tenant_id": 7}));
        assert_eq!(
            claimed_tenant(&c, "tenant_id").unwrap_err().sqlstate(),
            "22023"
        );
        let c = obj(json!({"tenant_id": null}));
        assert_eq!(claimed_tenant(&c, "tenant_id").unwrap(), None);
    }

    #[test]
    fn resolution_order() {
        let headers = format!(r#"{{"x-tenant-id": "{B}"}}"#);
        let with_claim = obj(json!({"sub": U, "tenant_id": A}));
        let no_claim = obj(json!({"sub": U, "role": "authenticated"}));
        let anon = obj(json!({"role": "anon"}));
        // 1. the claim wins over header and set_tenant
        assert_eq!(
            tenant_source(Some(&with_claim), Some(&headers), "tenant_id", Some(u(B))).unwrap(),
            TenantSource::Claim(u(A))
        );
        // 2. the header, for a user
        assert_eq!(
            tenant_source(Some(&no_claim), Some(&headers), "tenant_id", None).unwrap(),
            TenantSource::Header {
                tenant: u(B),
                user: u(U)
            }
        );
        // an anonymous header is refused
        assert_eq!(
            tenant_source(Some(&anon), Some(&headers), "tenant_id", None)
                .unwrap_err()
                .sqlstate(),
            "42501"
        );
        // 3. set_tenant only without claims; a request with claims is never re-scoped
        assert_eq!(
            tenant_source(None, None, "tenant_id", Some(u(B))).unwrap(),
            TenantSource::Backend(u(B))
        );
        assert_eq!(
            tenant_source(Some(&no_claim), Some("{}"), "tenant_id", Some(u(B))).unwrap(),
            TenantSource::Unresolved
        );
        assert_eq!(
            tenant_source(Some(&anon), None, "tenant_id", Some(u(B))).unwrap(),
            TenantSource::Unresolved
        );
        assert_eq!(
            tenant_source(None, None, "tenant_id", None).unwrap(),
            TenantSource::Unresolved
        );
        // bad header values are errors, not silently ignored
        assert_eq!(
            tenant_source(
                Some(&no_claim),
                Some(r#"{"x-tenant-id": "acme"}"#),
                "tenant_id",
                None
            )
            .unwrap_err()
            .sqlstate(),
            "22023"
        );
        assert_eq!(
            tenant_source(Some(&no_claim), Some("nope"), "tenant_id", None)
                .unwrap_err()
                .sqlstate(),
            "22P02"
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,48}") {
            let _ = Uuid::parse(&s);
            let _ = parse_claims(Some(&s));
            let _ = header_tenant(Some(&s));
        }

        /// Whatever the JWT and headers say, a request with claims is never
        /// scoped by set_tenant, and a claimed tenant always wins.
        #[test]
        fn claims_are_never_rescoped(
            claim in proptest::option::of(any::<[u8; 16]>()),
            header in proptest::option::of(any::<[u8; 16]>()),
            sub in proptest::option::of(any::<[u8; 16]>()),
            backend in proptest::option::of(any::<[u8; 16]>()),
        ) {
            let mut c = Claims::new();
            if let Some(t) = claim { c.insert("tenant_id".into(), Value::String(Uuid(t).to_string())); }
            if let Some(s) = sub { c.insert("sub".into(), Value::String(Uuid(s).to_string())); }
            let headers = header.map(|h| format!(r#"{{"x-tenant-id":"{}"}}"#, Uuid(h)));
            let got = tenant_source(Some(&c), headers.as_deref(), "tenant_id", backend.map(Uuid));
            match (claim, header, sub) {
                (Some(t), _, _) => prop_assert_eq!(got.unwrap(), TenantSource::Claim(Uuid(t))),
                (None, Some(h), Some(s)) => prop_assert_eq!(got.unwrap(), TenantSource::Header { tenant: Uuid(h), user: Uuid(s) }),
                (None, Some(_), None) => prop_assert!(got.is_err()),
                (None, None, _) => prop_assert_eq!(got.unwrap(), TenantSource::Unresolved),
            }
        }
    }
}
