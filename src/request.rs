//! The request as PostgREST describes it to the database, read one way for
//! every module: the JWT claims (`request.jwt.claims`), the user (`sub`),
//! the headers (`request.headers`) and the client's address. Pure Rust, no
//! pgrx types; the per-transaction cache of the settings themselves is
//! `request_settings.rs`.

use crate::error::{echoed, ErrorKind, SaasError, SaasResult};
use crate::uuid::Uuid;
use serde_json::{Map, Value};
use std::net::IpAddr;

/// The JWT claims of a request: the payload object.
pub type Claims = Map<String, Value>;

/// PostgREST's `request.headers`, read leniently for what is only recorded
/// or keyed on (audit rows, rate-limit keys): unset, empty or not a JSON
/// object reads as no headers. (Tenant resolution reads the tenant header
/// strictly, see `tenancy::context::header_tenant`.)
#[derive(Default)]
pub struct RequestHeaders(Map<String, Value>);

impl RequestHeaders {
    pub fn parse(raw: Option<&str>) -> RequestHeaders {
        RequestHeaders(
            raw.filter(|h| !h.trim().is_empty())
                .and_then(|h| serde_json::from_str(h).ok())
                .unwrap_or_default(),
        )
    }

    /// A header's value when it is a string.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).and_then(Value::as_str)
    }

    /// The client address the proxy headers name (see [`client_ip`]).
    pub fn client_ip(&self) -> Option<String> {
        client_ip(self.get("x-forwarded-for"), self.get("x-real-ip"))
    }
}

/// The JWT claims of the request, parsed. `None` when the caller has none
/// (psql, a backend job): only then may `set_tenant` scope the transaction.
pub fn parse_claims(raw: Option<&str>) -> SaasResult<Option<Claims>> {
    let Some(raw) = raw.filter(|s| !s.trim().is_empty()) else {
        return Ok(None);
    };
    match serde_json::from_str::<Value>(raw) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(SaasError::new(
            ErrorKind::InvalidJson,
            "request.jwt.claims is not a JSON object",
            "PostgREST sets request.jwt.claims to the JWT payload, a JSON object; set it with set_config('request.jwt.claims', '{\"sub\": ...}', true).",
        )),
        Err(e) => Err(SaasError::new(
            ErrorKind::InvalidJson,
            "request.jwt.claims is not valid JSON",
            "PostgREST sets request.jwt.claims to the JWT payload, a JSON object; set it with set_config('request.jwt.claims', '{\"sub\": ...}', true).",
        )
        .with_detail(e.to_string())),
    }
}

/// A claim at the top level, or else under `app_metadata` (where Supabase
/// keeps custom claims users cannot edit; `user_metadata` is never read).
pub fn find_claim<'a>(claims: &'a Claims, name: &str) -> Option<&'a Value> {
    claims
        .get(name)
        .or_else(|| {
            claims
                .get("app_metadata")
                .and_then(Value::as_object)
                .and_then(|m| m.get(name))
        })
        .filter(|v| !v.is_null())
}

/// A claim or header value that must be a uuid string; `what` names it in
/// the error (22023), `hint` says what to send.
pub fn uuid_value(value: &Value, what: &str, hint: &str) -> SaasResult<Uuid> {
    let text = value.as_str().ok_or_else(|| {
        SaasError::new(
            ErrorKind::InvalidParameter,
            format!("{what} is not a uuid string"),
            hint,
        )
        .with_detail(format!("found {}", echoed(&value.to_string())))
    })?;
    Uuid::parse(text).ok_or_else(|| {
        SaasError::new(
            ErrorKind::InvalidParameter,
            format!("{what} is not a uuid: \"{}\"", echoed(text)),
            hint,
        )
    })
}

/// The request's subject: the top-level `sub` claim, when it is not null
/// (never looked up under `app_metadata`). The one reading of the user
/// every module shares; [`sub_uuid`] and [`sub_text`] are views of it.
pub fn sub(claims: &Claims) -> Option<&Value> {
    claims.get("sub").filter(|v| !v.is_null())
}

/// The subject as the user's id (tenancy's users, audit's actor). A `sub`
/// that is not a uuid string is an error (22023) the caller may ignore.
pub fn sub_uuid(claims: &Claims) -> SaasResult<Option<Uuid>> {
    sub(claims)
        .map(|v| {
            uuid_value(
                v,
                "the sub claim",
                "pg_saas identifies users by uuid, as Supabase Auth does; issue JWTs whose sub is the user's uuid.",
            )
        })
        .transpose()
}

/// The subject as text to key on (rate limits): a non-empty string as is,
/// a number as written, so subjects of other identity providers count too.
pub fn sub_text(claims: &Claims) -> Option<String> {
    match sub(claims)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The client address of a request: the first hop of `x-forwarded-for`, else
/// `x-real-ip`, normalised; `None` when neither holds an IP address (a proxy
/// may send `unknown` or an obfuscated node name, RFC 7239).
pub fn client_ip(forwarded_for: Option<&str>, real_ip: Option<&str>) -> Option<String> {
    let first_hop = forwarded_for.and_then(|v| v.split(',').next());
    [first_hop, real_ip]
        .into_iter()
        .flatten()
        .find_map(normalize_ip)
}

/// An IP address in one canonical text form (what inet input accepts and the
/// hash uses), from a header value: `[v6]:port` and `v4:port` forms accepted.
pub fn normalize_ip(text: &str) -> Option<String> {
    let t = text.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(ip.to_string());
    }
    if let Some(inner) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
        return inner.parse::<IpAddr>().ok().map(|ip| ip.to_string());
    }
    if let Some((host, port)) = t.rsplit_once(':') {
        if port.bytes().all(|b| b.is_ascii_digit()) && !host.contains(':') {
            return host.parse::<IpAddr>().ok().map(|ip| ip.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const U: &str = "0c0c0c0c-0000-4000-8000-00000000000c";

    fn obj(v: Value) -> Claims {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn request_headers_are_read_leniently() {
        let h = RequestHeaders::parse(Some(r#"{"user-agent": "x/1", "x-n": 3}"#));
        assert_eq!(h.get("user-agent"), Some("x/1"));
        assert_eq!(h.get("x-n"), None, "only string values are headers");
        assert_eq!(h.get("missing"), None);
        for raw in [None, Some(""), Some("  "), Some("not json"), Some("[1]")] {
            assert_eq!(
                RequestHeaders::parse(raw).get("user-agent"),
                None,
                "{raw:?}"
            );
        }
    }

    #[test]
    fn claims_parse_or_fail_with_22p02() {
        assert_eq!(parse_claims(None).unwrap(), None);
        assert_eq!(parse_claims(Some("")).unwrap(), None);
        assert!(
            parse_claims(Some("{}")).unwrap().is_some(),
            "an empty object is still a request with claims"
        );
        assert_eq!(
            parse_claims(Some("{not json")).unwrap_err().sqlstate(),
            "22P02"
        );
        assert_eq!(parse_claims(Some("[1]")).unwrap_err().sqlstate(), "22P02");
    }

    #[test]
    fn the_sub_is_read_one_way() {
        let user = obj(json!({"sub": U, "app_metadata": {"sub": "other"}}));
        assert_eq!(sub_uuid(&user).unwrap(), Uuid::parse(U).map(Some).unwrap());
        assert_eq!(sub_text(&user).as_deref(), Some(U));
        // Only the top level counts, in every view.
        let nested = obj(json!({"app_metadata": {"sub": U}}));
        assert_eq!(sub(&nested), None);
        assert_eq!(sub_uuid(&nested).unwrap(), None);
        assert_eq!(sub_text(&nested), None);
        // null is no subject.
        let null = obj(json!({"sub": null}));
        assert_eq!(
            (sub(&null), sub_uuid(&null).unwrap(), sub_text(&null)),
            (None, None, None)
        );
        // Other identity providers: not a uuid (an error the caller may
        // ignore), but still a key for rate limits.
        let other = obj(json!({"sub": "auth0|42"}));
        assert_eq!(sub_uuid(&other).unwrap_err().sqlstate(), "22023");
        assert_eq!(sub_text(&other).as_deref(), Some("auth0|42"));
        let number = obj(json!({"sub": 42}));
        assert_eq!(sub_uuid(&number).unwrap_err().sqlstate(), "22023");
        assert_eq!(sub_text(&number).as_deref(), Some("42"));
        for empty in [
            json!({"sub": ""}),
            json!({"sub": true}),
            json!({"sub": [U]}),
        ] {
            assert_eq!(sub_text(&obj(empty.clone())), None, "{empty}");
        }
    }

    #[test]
    fn client_ip_is_the_first_hop() {
        assert_eq!(
            client_ip(Some("203.0.113.7, 10.0.0.1"), Some("10.9.9.9")).as_deref(),
            Some("203.0.113.7")
        );
        assert_eq!(
            client_ip(Some("unknown"), Some("10.9.9.9")).as_deref(),
            Some("10.9.9.9")
        );
        assert_eq!(
            client_ip(None, Some("[2001:DB8::1]:443")).as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            client_ip(Some("198.51.100.2:8080"), None).as_deref(),
            Some("198.51.100.2")
        );
        assert_eq!(client_ip(Some("garbage"), None), None);
        assert_eq!(client_ip(None, None), None);
        let h = RequestHeaders::parse(Some(r#"{"x-forwarded-for": "203.0.113.7, 10.0.0.1"}"#));
        assert_eq!(h.client_ip().as_deref(), Some("203.0.113.7"));
    }

    proptest! {
        #[test]
        fn reading_the_request_never_panics(s in ".{0,48}") {
            let _ = parse_claims(Some(&s));
            let _ = RequestHeaders::parse(Some(&s)).client_ip();
            let _ = normalize_ip(&s);
        }
    }
}
