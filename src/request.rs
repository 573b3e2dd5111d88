//! The request as PostgREST describes it to the database, read one way for
//! every module: the JWT claims (`request.jwt.claims`), the user (`sub`),
//! the headers (`request.headers`) and the client's address behind the
//! trusted proxies (`saas.trusted_proxies`). Pure Rust, no pgrx types; the
//! per-transaction cache of the settings themselves is
//! `request_settings.rs`.

use crate::error::{echoed, ErrorKind, SaasError, SaasResult};
use crate::uuid::Uuid;
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;

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

    /// The client address the proxy headers name, behind `trusted`
    /// proxies (see [`client_ip`]).
    pub fn client_ip(&self, trusted: &TrustedProxies) -> Option<String> {
        client_ip(self.get("x-forwarded-for"), self.get("x-real-ip"), trusted)
    }
}

/// The JWT claims of the request, parsed. `None` when the caller has none
/// The count a `Prefer` header asks PostgREST for, when it is one the
/// planner estimates (`count=planned` or `count=estimated`): PostgREST
/// answers those from table statistics, which describe every tenant's rows.
pub fn estimated_count_preference(prefer: &str) -> Option<&str> {
    prefer
        .split([',', ';'])
        .map(str::trim)
        .filter_map(|p| p.strip_prefix("count="))
        .map(str::trim)
        .find(|v| v.eq_ignore_ascii_case("planned") || v.eq_ignore_ascii_case("estimated"))
}

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

/// The client address of a request, read as nginx's `real_ip_recursive` and
/// Express's "trust proxy" read it: every proxy appends the address it got
/// the request from to `X-Forwarded-For`, so only the hops the proxies we
/// trust appended are true; everything to their left may be the client's
/// invention.
///
/// - `X-Forwarded-For`, walked from the right: hops in `trusted` are
///   skipped, and the first hop that is not is the client. When that hop is
///   not an IP address (`unknown`, an obfuscated node name, RFC 7239) the
///   client is unknown: `None` (X-Real-IP is not consulted, the client may
///   have sent it). When every hop is trusted (a request from inside the
///   proxies' network), the leftmost hop.
/// - `X-Real-IP` only when there is no `X-Forwarded-For` hop at all: a proxy
///   that sets X-Real-IP to its peer and no X-Forwarded-For; read as a
///   one-hop list, so its address is the client whether trusted or not.
///   Beside an X-Forwarded-For it is ignored: a proxy that appends to
///   X-Forwarded-For may pass a client's X-Real-IP through untouched.
///
/// PostgREST does not add the address of its own peer, so this trusts that
/// whatever connects to PostgREST is a proxy of ours that appends (or sets)
/// the header: PostgREST must not be reachable around the proxy.
/// Addresses are normalised (forms with a port accepted, IPv4-mapped IPv6
/// compared as IPv4); `None` when no header names one.
pub fn client_ip(
    forwarded_for: Option<&str>,
    real_ip: Option<&str>,
    trusted: &TrustedProxies,
) -> Option<String> {
    let mut hops = forwarded_for
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .peekable();
    if hops.peek().is_none() {
        return real_ip.and_then(normalize_ip);
    }
    let hops: Vec<&str> = hops.collect();
    for hop in hops.iter().rev() {
        match parse_ip(hop) {
            Some(ip) if trusted.contains(ip) => continue,
            Some(ip) => return Some(ip.to_string()),
            None => return None,
        }
    }
    // Every hop trusted (and so an address): the one farthest from us.
    hops.first().and_then(|h| normalize_ip(h))
}

/// An IP network of `saas.trusted_proxies`: an address and a prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// `a.b.c.d/n`, `v6/n`, or a bare address (one host). Host bits right of
    /// the prefix are ignored, as nginx's `set_real_ip_from` ignores them.
    pub fn parse(text: &str) -> Result<IpNet, String> {
        let t = text.trim();
        let (addr, prefix) = match t.split_once('/') {
            Some((a, p)) => (a.trim(), Some(p.trim())),
            None => (t, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("\"{t}\" is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && p.bytes().all(|b| b.is_ascii_digit()) => n,
                _ => {
                    return Err(format!(
                        "\"{t}\" has a prefix length that is not 0 to {max}"
                    ))
                }
            },
        };
        Ok(IpNet { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        fn bits(ip: IpAddr) -> (u128, u32) {
            match ip {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        }
        let ((net, width), (addr, addr_width)) = (bits(self.addr), bits(ip.to_canonical()));
        if width != addr_width {
            return false;
        }
        let mask = if self.prefix == 0 {
            0
        } else {
            u128::MAX << (128 - u32::from(self.prefix))
        };
        net & mask == addr & mask
    }
}

/// The proxies whose `X-Forwarded-For` hops are believed: the parsed
/// `saas.trusted_proxies`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// The default of `saas.trusted_proxies`: loopback and the private
    /// ranges, where a reverse proxy in front of PostgREST usually lives.
    pub const DEFAULT: &'static str =
        "127.0.0.0/8, ::1/128, 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7";

    /// A comma-separated list of addresses and CIDR ranges; empty entries
    /// are skipped, so `''` trusts no proxy. 22023 for anything else.
    pub fn parse(list: &str) -> SaasResult<TrustedProxies> {
        list.split(',')
            .filter(|item| !item.trim().is_empty())
            .map(IpNet::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
            .map_err(|why| {
                SaasError::new(
                    ErrorKind::InvalidParameter,
                    format!("invalid saas.trusted_proxies: {why}"),
                    format!(
                        "List the addresses or CIDR ranges of the reverse proxies in front of PostgREST, separated by commas, e.g. '{}'; '' trusts none.",
                        TrustedProxies::DEFAULT
                    ),
                )
            })
    }

    /// The parsed list of `text`, parsed once per distinct text in this
    /// backend (the audit trigger asks per statement, pre_request per
    /// request).
    pub fn cached(text: &str) -> SaasResult<Rc<TrustedProxies>> {
        thread_local! {
            static LAST: RefCell<Option<(String, Rc<TrustedProxies>)>> = const { RefCell::new(None) };
        }
        if let Some(hit) = LAST.with(|l| {
            l.borrow()
                .as_ref()
                .filter(|(t, _)| t == text)
                .map(|(_, p)| p.clone())
        }) {
            return Ok(hit);
        }
        let parsed = Rc::new(TrustedProxies::parse(text)?);
        LAST.with(|l| *l.borrow_mut() = Some((text.to_owned(), parsed.clone())));
        Ok(parsed)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }
}

/// An IP address in one canonical text form (what inet input accepts and the
/// hash uses), from a header value: `[v6]:port` and `v4:port` forms accepted.
pub fn normalize_ip(text: &str) -> Option<String> {
    parse_ip(text).map(|ip| ip.to_string())
}

/// The address of a header value, as [`normalize_ip`] reads it.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let t = text.trim();
    if let Ok(ip) = t.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(inner) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
        return inner.parse::<IpAddr>().ok();
    }
    if let Some((host, port)) = t.rsplit_once(':') {
        if port.bytes().all(|b| b.is_ascii_digit()) && !host.contains(':') {
            return host.parse::<IpAddr>().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn estimated_counts_are_recognised_in_every_spelling() {
        use super::estimated_count_preference as est;
        assert_eq!(est("count=planned"), Some("planned"));
        assert_eq!(
            est("return=representation, count=estimated"),
            Some("estimated")
        );
        assert_eq!(est("count=Planned;tx=rollback"), Some("Planned"));
        assert_eq!(est(" count = planned "), None); // PostgREST reads "count=" tightly
        assert_eq!(est("count=exact"), None);
        assert_eq!(est("return=minimal"), None);
        assert_eq!(est(""), None);
    }

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

    fn default_proxies() -> TrustedProxies {
        TrustedProxies::parse(TrustedProxies::DEFAULT).unwrap()
    }

    #[test]
    fn client_ip_is_the_first_hop_the_proxies_did_not_add() {
        let t = &default_proxies();
        assert_eq!(
            client_ip(Some("203.0.113.7, 10.0.0.1"), Some("10.9.9.9"), t).as_deref(),
            Some("203.0.113.7")
        );
        // The client's own X-Forwarded-For is to the left of what our proxy
        // appended: the first untrusted hop from the right wins.
        assert_eq!(
            client_ip(Some("1.2.3.4, 198.51.100.9, 10.0.0.5"), None, t).as_deref(),
            Some("198.51.100.9")
        );
        assert_eq!(
            client_ip(Some("1.2.3.4, 10.0.0.5"), None, t).as_deref(),
            Some("1.2.3.4"),
            "an untrusted hop right of the proxies is the client"
        );
        // Every hop trusted: the leftmost.
        assert_eq!(
            client_ip(Some("192.168.1.20, 10.0.0.5"), None, t).as_deref(),
            Some("192.168.1.20")
        );
        // With no trusted proxy, the last hop (what the nearest proxy saw).
        let none = &TrustedProxies::parse("").unwrap();
        assert_eq!(
            client_ip(Some("1.2.3.4, 10.0.0.5"), None, none).as_deref(),
            Some("10.0.0.5")
        );
        // A hop that is not an address where the client should be: unknown,
        // and X-Real-IP (which the client may have sent) is not consulted.
        assert_eq!(client_ip(Some("unknown"), Some("10.9.9.9"), t), None);
        assert_eq!(
            client_ip(Some("unknown, 10.0.0.5"), Some("203.0.113.1"), t),
            None
        );
        // X-Real-IP only without any X-Forwarded-For hop.
        assert_eq!(
            client_ip(None, Some("[2001:DB8::1]:443"), t).as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            client_ip(Some(" , "), Some("10.9.9.9"), t).as_deref(),
            Some("10.9.9.9")
        );
        assert_eq!(
            client_ip(Some("198.51.100.2:8080"), None, t).as_deref(),
            Some("198.51.100.2")
        );
        // Proxies written with ports and as IPv4-mapped IPv6 still count.
        assert_eq!(
            client_ip(
                Some("198.51.100.3, [::ffff:10.1.1.1]:80, 127.0.0.1:5"),
                None,
                t
            )
            .as_deref(),
            Some("198.51.100.3")
        );
        assert_eq!(client_ip(Some("garbage"), None, t), None);
        assert_eq!(client_ip(None, None, t), None);
        let h = RequestHeaders::parse(Some(r#"{"x-forwarded-for": "203.0.113.7, 10.0.0.1"}"#));
        assert_eq!(h.client_ip(t).as_deref(), Some("203.0.113.7"));
    }

    #[test]
    fn trusted_proxies_parse_addresses_and_ranges() {
        let t = default_proxies();
        for inside in [
            "127.0.0.1",
            "127.255.0.9",
            "::1",
            "10.200.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "fd12::1",
            "fc00::",
            "::ffff:192.168.1.1",
        ] {
            assert!(t.contains(inside.parse().unwrap()), "{inside}");
        }
        for outside in [
            "172.32.0.1",
            "172.15.255.255",
            "11.0.0.1",
            "192.169.0.1",
            "fe80::1",
            "2001:db8::1",
            "::2",
            "::ffff:8.8.8.8",
        ] {
            assert!(!t.contains(outside.parse().unwrap()), "{outside}");
        }
        let one = TrustedProxies::parse(" 203.0.113.5 ,2001:db8::/32,, 0.0.0.0/0 ").unwrap();
        assert!(
            one.contains("8.8.8.8".parse().unwrap()),
            "/0 is everything v4"
        );
        assert!(one.contains("2001:db8:1::9".parse().unwrap()));
        assert!(!one.contains("2001:db9::1".parse().unwrap()));
        // Host bits right of the prefix are ignored.
        let sloppy = TrustedProxies::parse("10.1.2.3/8").unwrap();
        assert!(sloppy.contains("10.9.9.9".parse().unwrap()));
        assert_eq!(
            TrustedProxies::parse("").unwrap(),
            TrustedProxies::default()
        );
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/-1",
            "10.0.0.0/+8",
            "10.0.0/8",
            "localhost",
            "10.0.0.0/",
            "10.0.0.1:80",
        ] {
            let e = TrustedProxies::parse(bad).unwrap_err();
            assert_eq!(e.sqlstate(), "22023", "{bad}");
            assert!(e.message.contains("saas.trusted_proxies"), "{bad}");
        }
    }

    #[test]
    fn trusted_proxies_are_parsed_once_per_text() {
        let a = TrustedProxies::cached("10.0.0.0/8").unwrap();
        let b = TrustedProxies::cached("10.0.0.0/8").unwrap();
        assert!(Rc::ptr_eq(&a, &b));
        let c = TrustedProxies::cached("192.168.0.0/16").unwrap();
        assert!(!Rc::ptr_eq(&a, &c));
        assert!(TrustedProxies::cached("nope").is_err());
        assert!(Rc::ptr_eq(
            &c,
            &TrustedProxies::cached("192.168.0.0/16").unwrap()
        ));
    }

    /// An address in the default trusted ranges, as a hop (maybe with a port).
    fn trusted_hop() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<[u8; 3]>().prop_map(|b| format!("10.{}.{}.{}", b[0], b[1], b[2])),
            (16u8..32, any::<[u8; 2]>()).prop_map(|(x, b)| format!("172.{x}.{}.{}", b[0], b[1])),
            any::<[u8; 2]>().prop_map(|b| format!("192.168.{}.{}", b[0], b[1])),
            any::<[u8; 2]>().prop_map(|b| format!("127.0.{}.{}:8080", b[0], b[1])),
            Just("::1".to_string()),
            any::<u16>().prop_map(|x| format!("[fd00::{x:x}]:443")),
        ]
    }

    /// A public address, as a hop.
    fn untrusted_ip() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(IpAddr::from),
            any::<u128>().prop_map(|x| IpAddr::from(x.to_be_bytes())),
        ]
        .prop_filter("untrusted", |ip| !default_proxies().contains(*ip))
    }

    /// Any hop a client may write: addresses of both kinds, ports, junk.
    fn any_hop() -> impl Strategy<Value = String> {
        prop_oneof![
            trusted_hop(),
            untrusted_ip().prop_map(|ip| ip.to_string()),
            "[ -+\\--~]{0,12}",
        ]
    }

    proptest! {
        #[test]
        fn reading_the_request_never_panics(s in ".{0,48}") {
            let _ = parse_claims(Some(&s));
            let _ = RequestHeaders::parse(Some(&s)).client_ip(&default_proxies());
            let _ = normalize_ip(&s);
            let _ = TrustedProxies::parse(&s);
        }

        // Trusted proxies appending their peers never change who the client is.
        #[test]
        fn appending_trusted_hops_changes_nothing(
            chain in proptest::collection::vec(any_hop(), 1..6),
            appended in proptest::collection::vec(trusted_hop(), 1..4),
            real_ip in proptest::option::of(any_hop()),
        ) {
            // A chain of no hop at all is no X-Forwarded-For (X-Real-IP counts).
            prop_assume!(chain.iter().any(|h| !h.trim().is_empty()));
            let t = default_proxies();
            let before = chain.join(", ");
            let after = format!("{before}, {}", appended.join(","));
            prop_assert_eq!(
                client_ip(Some(&before), real_ip.as_deref(), &t),
                client_ip(Some(&after), real_ip.as_deref(), &t)
            );
        }

        // Whatever the client writes left of an untrusted hop (and in
        // X-Real-IP), that hop is the client.
        #[test]
        fn the_client_part_never_wins_over_an_untrusted_hop(
            left in "[ -~]{0,40}",
            hop in untrusted_ip(),
            proxies in proptest::collection::vec(trusted_hop(), 0..4),
            real_ip in proptest::option::of("[ -~]{0,20}"),
        ) {
            let t = default_proxies();
            let mut xff = format!("{left},{hop}");
            for p in &proxies {
                xff.push_str(", ");
                xff.push_str(p);
            }
            prop_assert_eq!(
                client_ip(Some(&xff), real_ip.as_deref(), &t),
                Some(hop.to_string())
            );
        }
    }
}
