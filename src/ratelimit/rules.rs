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

/// Whether `path` matches `pattern` (glob with `*` only).
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

    /// A naive recursive glob, the reference for the iterative one.
    fn reference(p: &[u8], s: &[u8]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some((b'*', rest)) => (0..=s.len()).any(|i| reference(rest, &s[i..])),
            Some((c, rest)) => s.first() == Some(c) && reference(rest, &s[1..]),
        }
    }

    proptest! {
        #[test]
        fn glob_agrees_with_the_reference(p in "[ab/*]{0,8}", s in "[ab/]{0,10}") {
            prop_assert_eq!(matches(&p, &s), reference(p.as_bytes(), s.as_bytes()));
        }
    }
}
