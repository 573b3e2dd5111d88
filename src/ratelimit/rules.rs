//! Rate-limit rules as plain Rust: which requests a rule matches and whose
//! counter a request spends. The rows live in `saas.rate_limit_rules`.

use crate::error::{ErrorKind, SaasError, SaasResult};

/// Longest path pattern accepted.
pub const PATTERN_MAX: usize = 200;

/// Checks a path pattern: `/` first, then URL path characters, `*` matching
/// any run of characters (slashes included).
pub fn validate_pattern(pattern: &str) -> SaasResult<()> {
    let bad = |why: &str| {
        SaasError::new(
            ErrorKind::InvalidParameter,
            format!("invalid rate limit path pattern \"{pattern}\": {why}"),
            "A pattern is a request path such as '/rpc/generate_roadmap' or '/rpc/chat_*'; '*' matches any characters and '/*' every path.",
        )
    };
    if !pattern.starts_with('/') {
        return Err(bad("it must start with '/'"));
    }
    if pattern.len() > PATTERN_MAX {
        return Err(bad(&format!("it is longer than {PATTERN_MAX} bytes")));
    }
    if let Some(c) = pattern
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "-._~/*:@!$&'()+,;=%".contains(*c)))
    {
        return Err(bad(&format!("'{c}' is not a URL path character")));
    }
    Ok(())
}

/// A request path as PostgREST routes it, in one spelling per route.
///
/// `request.path` is the raw path (Warp's `rawPathInfo`); PostgREST routes
/// on WAI's `pathInfo`: the path split at every `/` (one leading slash
/// dropped), each segment percent-decoded (an escape that is not `%` and
/// two hex digits stays as it is written) and read as UTF-8 leniently
/// (http-types' `decodePathSegments`). It does not collapse `//` or strip a
/// trailing `/`: those spellings give other segment lists, which PostgREST
/// answers with 404 before `pre_request` runs. So `/rpc/%65xpensive` is
/// `/rpc/expensive`, while `/rpc%2Fexpensive` is one segment, a table named
/// `rpc/expensive`.
///
/// The route is written back with the segments decoded and only `%`, `/`
/// and `*` inside a segment escaped (`%25`, `%2F`, `%2A`): two raw paths
/// have the same route exactly when PostgREST reads the same segments.
pub fn route_path(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len() + 1);
    if !raw.starts_with('/') {
        out.push('/');
    }
    write_route(raw, &mut out);
    out
}

/// A rule's path pattern as a route ([`route_path`]), each `*` kept as the
/// wildcard: made once per rule when the rules are read.
pub fn route_pattern(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    for (i, literal) in pattern.split('*').enumerate() {
        if i > 0 {
            out.push('*');
        }
        write_route(literal, &mut out);
    }
    out
}

/// Appends `raw` with every segment decoded and re-escaped, `/` between
/// segments kept.
fn write_route(raw: &str, out: &mut String) {
    for (i, segment) in raw.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        for c in percent_decode(segment).chars() {
            match c {
                '%' => out.push_str("%25"),
                '/' => out.push_str("%2F"),
                '*' => out.push_str("%2A"),
                c => out.push(c),
            }
        }
    }
}

/// http-types' `urlDecode False`: `%XX` decoded, any other `%` literal, `+`
/// left alone; then UTF-8, invalid bytes replaced.
fn percent_decode(segment: &str) -> std::borrow::Cow<'_, str> {
    if !segment.contains('%') {
        return segment.into();
    }
    let b = segment.as_bytes();
    let mut bytes = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        if b[i] == b'%' {
            if let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                bytes.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        bytes.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&bytes).into_owned().into()
}

/// Whether a rule for `rule_method` (None: any) applies to a request made
/// with `method` (upper-cased). HEAD is GET without the body, and
/// PostgREST runs it as the same read: a GET rule limits HEAD too (a HEAD
/// rule still only HEAD).
pub fn method_matches(rule_method: Option<&str>, method: &str) -> bool {
    rule_method.is_none_or(|m| m == method || (m == "GET" && method == "HEAD"))
}

/// Whether `path` matches `pattern` (glob with `*` only). `pre_request`
/// compares routes: [`route_pattern`] against [`route_path`].
pub fn matches(pattern: &str, path: &str) -> bool {
    let (p, s) = (pattern.as_bytes(), path.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// An HTTP method a rule may name, upper-cased; None for "any".
pub fn normalize_method(method: Option<&str>) -> SaasResult<Option<String>> {
    let Some(m) = method else { return Ok(None) };
    let upper = m.trim().to_ascii_uppercase();
    const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
    if METHODS.contains(&upper.as_str()) {
        Ok(Some(upper))
    } else {
        Err(SaasError::new(
            ErrorKind::InvalidParameter,
            format!("unknown HTTP method \"{m}\" for a rate limit rule"),
            "Pass one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS, or NULL for every method.",
        ))
    }
}

/// Whose counter a rule charges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    User,
    Tenant,
    Ip,
    Global,
}

impl Scope {
    pub fn parse(text: &str) -> SaasResult<Scope> {
        match text {
            "user" => Ok(Scope::User),
            "tenant" => Ok(Scope::Tenant),
            "ip" => Ok(Scope::Ip),
            "global" => Ok(Scope::Global),
            _ => Err(SaasError::new(
                ErrorKind::InvalidParameter,
                format!("unknown rate limit scope \"{text}\""),
                "Pass 'user' (per JWT subject), 'tenant', 'ip' or 'global'.",
            )),
        }
    }
}

/// Who made a request, as far as rules care.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requester {
    /// JWT `sub`.
    pub user: Option<String>,
    pub tenant: Option<String>,
    /// The first X-Forwarded-For hop from the right that is not a trusted
    /// proxy (`saas.trusted_proxies`), else X-Real-IP, else the
    /// connection's peer address (`request::client_ip`).
    pub ip: Option<String>,
}

/// The counter key a request spends under a rule of `scope`. A user- or
/// tenant-scoped rule falls back to the IP for requests without a user or
/// tenant (anonymous requests), so they are still limited, per address.
pub fn scope_key(scope: Scope, who: &Requester) -> String {
    let ip = || format!("ip:{}", who.ip.as_deref().unwrap_or("unknown"));
    match scope {
        Scope::User => who.user.as_ref().map_or_else(ip, |u| format!("user:{u}")),
        Scope::Tenant => who
            .tenant
            .as_ref()
            .map_or_else(ip, |t| format!("tenant:{t}")),
        Scope::Ip => ip(),
        Scope::Global => "global".to_string(),
    }
}

/// A period for people: "1 hour", "20 minutes", "1.5 seconds"; the same
/// whatever the session's IntervalStyle.
pub fn describe_period(us: i64) -> String {
    const UNITS: [(i64, &str); 4] = [
        (super::gcra::DAY_US, "day"),
        (3_600_000_000, "hour"),
        (60_000_000, "minute"),
        (1_000_000, "second"),
    ];
    for (size, name) in UNITS {
        if us >= size && us % size == 0 {
            let n = us / size;
            return format!("{n} {name}{}", if n == 1 { "" } else { "s" });
        }
    }
    format!("{} seconds", us as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn patterns_match_paths() {
        assert!(matches("/rpc/generate_roadmap", "/rpc/generate_roadmap"));
        assert!(!matches("/rpc/generate_roadmap", "/rpc/generate_roadmaps"));
        assert!(matches("/rpc/chat_*", "/rpc/chat_send"));
        assert!(!matches("/rpc/chat_*", "/rpc/chat"));
        assert!(matches("/*", "/"));
        assert!(matches("/*", "/items/1"));
        assert!(matches("/a*c*e", "/abcde"));
        assert!(!matches("/a*c*e", "/abcd"));
    }

    #[test]
    fn bad_patterns_and_methods_are_refused() {
        for bad in ["rpc/x", "", "/a b", "/a?b", "/é"] {
            assert_eq!(
                validate_pattern(bad).unwrap_err().kind,
                ErrorKind::InvalidParameter,
                "{bad}"
            );
        }
        assert!(validate_pattern(&format!("/{}", "a".repeat(PATTERN_MAX))).is_err());
        validate_pattern("/rpc/chat_*").unwrap();
        assert_eq!(
            normalize_method(Some("get")).unwrap().as_deref(),
            Some("GET")
        );
        assert_eq!(normalize_method(None).unwrap(), None);
        assert!(normalize_method(Some("BREW")).is_err());
        assert!(Scope::parse("users").is_err());
    }

    #[test]
    fn user_and_tenant_scopes_fall_back_to_the_ip() {
        let anon = Requester {
            ip: Some("203.0.113.9".into()),
            ..Default::default()
        };
        assert_eq!(scope_key(Scope::User, &anon), "ip:203.0.113.9");
        assert_eq!(scope_key(Scope::Tenant, &anon), "ip:203.0.113.9");
        let who = Requester {
            user: Some("u1".into()),
            tenant: Some("t1".into()),
            ip: None,
        };
        assert_eq!(scope_key(Scope::User, &who), "user:u1");
        assert_eq!(scope_key(Scope::Tenant, &who), "tenant:t1");
        assert_eq!(scope_key(Scope::Ip, &who), "ip:unknown");
        assert_eq!(scope_key(Scope::Global, &who), "global");
    }

    #[test]
    fn periods_read_as_people_write_them() {
        assert_eq!(describe_period(3_600_000_000), "1 hour");
        assert_eq!(describe_period(20 * 60_000_000), "20 minutes");
        assert_eq!(describe_period(2 * 86_400_000_000), "2 days");
        assert_eq!(describe_period(1_500_000), "1.5 seconds");
    }

    #[test]
    fn paths_are_matched_as_postgrest_routes_them() {
        let rule = route_pattern("/rpc/expensive");
        for spelling in [
            "/rpc/expensive",
            "/rpc/%65xpensive",
            "/rpc/%65%78%70%65%6E%73%69%76%65",
            "/rpc/%65%78%70%65%6e%73%69%76%65",
            "/%72pc/expensive",
            "rpc/expensive",
        ] {
            assert!(matches(&rule, &route_path(spelling)), "{spelling}");
        }
        // Other routes: another segment list (404 in PostgREST), a table
        // named "rpc/expensive", or another name.
        for other in [
            "/rpc//expensive",
            "/rpc/expensive/",
            "//rpc/expensive",
            "/rpc%2Fexpensive",
            "/rpc/expensive%2F",
            "/rpc/expensive%20",
            "/rpc/expensiv",
        ] {
            assert!(!matches(&rule, &route_path(other)), "{other}");
        }
        // Wildcards stay wildcards; an escaped star in a pattern or a path
        // is a literal star, and a literal star in a path is matched by '*'.
        assert!(matches(
            &route_pattern("/rpc/chat_*"),
            &route_path("/rpc/chat_%73end")
        ));
        assert!(matches(
            &route_pattern("/rpc/a%2Ab"),
            &route_path("/rpc/a*b")
        ));
        assert!(!matches(
            &route_pattern("/rpc/a%2Ab"),
            &route_path("/rpc/axb")
        ));
        assert!(matches(&route_pattern("/rpc/*"), &route_path("/rpc/a%2Ab")));
        // Invalid escapes are read literally, as PostgREST reads them.
        assert_eq!(route_path("/a%zz%4"), "/a%25zz%254");
        assert!(matches(&route_pattern("/a%zz"), &route_path("/a%25zz")));
        assert!(matches(
            &route_pattern("/caf%C3%A9"),
            &route_path("/caf%c3%a9")
        ));
        assert_eq!(route_path("/caf%C3%A9"), "/café");
        assert_eq!(route_path("/%FF"), "/\u{fffd}");
        assert_eq!(route_path("/"), "/");
        assert!(matches(&route_pattern("/*"), &route_path("/")));
    }

    #[test]
    fn head_is_limited_by_get_rules() {
        assert!(method_matches(Some("GET"), "HEAD"));
        assert!(method_matches(Some("GET"), "GET"));
        assert!(method_matches(Some("HEAD"), "HEAD"));
        assert!(!method_matches(Some("HEAD"), "GET"));
        assert!(!method_matches(Some("POST"), "HEAD"));
        assert!(!method_matches(Some("GET"), "POST"));
        assert!(method_matches(None, "HEAD"));
    }

    /// PostgREST's reading of a raw path (http-types' decodePathSegments):
    /// the reference the routes must agree with.
    fn postgrest_segments(raw: &str) -> Vec<String> {
        if raw.is_empty() || raw == "/" {
            return Vec::new();
        }
        let rest = raw.strip_prefix('/').unwrap_or(raw);
        rest.split('/')
            .map(|s| percent_decode(s).into_owned())
            .collect()
    }

    /// One spelling of `segments`: every byte of each written as is, or
    /// percent-encoded in upper or lower case, as `choices` says; the `/`
    /// between segments as is.
    fn spell(segments: &[String], choices: &[u8]) -> String {
        let mut out = String::new();
        let mut k = 0;
        for seg in segments {
            out.push('/');
            for &b in seg.as_bytes() {
                let choice = choices[k % choices.len()];
                k += 1;
                let must = matches!(b, b'%' | b'/') || !b.is_ascii();
                match (must, choice % 3) {
                    (false, 0) => out.push(b as char),
                    (_, 1) => out.push_str(&format!("%{b:02X}")),
                    _ => out.push_str(&format!("%{b:02x}")),
                }
            }
        }
        out
    }

    /// A path segment: names, with the characters that need care.
    fn segment() -> impl Strategy<Value = String> {
        "[a-z_0-9%/*+ .é-]{0,6}"
    }

    /// A naive recursive glob, the reference for the iterative one.
    fn reference(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| reference(rest, &s[i..])),
            Some((c, rest)) => s.first() == Some(c) && reference(rest, &s[1..]),
        }
    }

    proptest! {
        // A rule on a path matches every spelling PostgREST routes to it.
        #[test]
        fn every_spelling_of_a_route_matches_its_rule(
            segments in proptest::collection::vec(segment(), 1..4),
            choices in proptest::collection::vec(any::<u8>(), 1..16),
        ) {
            let canonical = spell(&segments, &[0]);
            let spelt = spell(&segments, &choices);
            if spelt != "/" {
                // ("/" is no segment at all, as decodePathSegments reads it.)
                prop_assert_eq!(postgrest_segments(&spelt), segments.clone());
            }
            prop_assert!(matches(&route_pattern(&canonical), &route_path(&spelt)),
                "{} vs {}", canonical, spelt);
        }

        // Two raw paths have the same route exactly when PostgREST reads
        // the same segments from them.
        #[test]
        fn routes_are_postgrest_segments(a in "[a/%0-9fF*.]{0,10}", b in "[a/%0-9fF*.]{0,10}") {
            let (a, b) = (format!("/{a}"), format!("/{b}"));
            prop_assert_eq!(
                route_path(&a) == route_path(&b),
                postgrest_segments(&a) == postgrest_segments(&b),
                "{} {}", a, b
            );
        }

        #[test]
        fn glob_agrees_with_the_reference(p in "[ab/*]{0,8}", s in "[ab/]{0,10}") {
            prop_assert_eq!(matches(&p, &s), reference(p.as_bytes(), s.as_bytes()));
        }
    }
}
