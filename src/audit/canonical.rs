//! Pure logic of the audit trail: canonical JSON, row and seal hashes, the
//! changed-columns diff and the request's client address. No pgrx types, so
//! `cargo test` and proptest cover all of it.
//!
//! Canonical JSON (what a row hash is taken over): objects with keys sorted by
//! their UTF-8 bytes, no whitespace, strings escaped as serde_json escapes
//! them, and numbers written by value (see [`canonical_number`]), so a value
//! hashes the same whether it came from `row_to_json` in the trigger or from
//! `jsonb` output when it is verified.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fmt::Write;
use std::net::IpAddr;

pub type Hash = [u8; 32];

/// Microseconds between 1970-01-01 and 2000-01-01 (PostgreSQL's epoch).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// The canonical text of a JSON value.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&canonical_number(&n.to_string())),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
    }
}

fn write_string(s: &str, out: &mut String) {
    // serde_json's escaping is fixed (\" \\ \n \r \t \b \f, \u00XX otherwise
    // below 0x20, everything else verbatim), hence canonical.
    out.push_str(&serde_json::to_string(s).expect("a string always serialises"));
}

/// A JSON number written by its value: `[-]DIGITS[eEXP]` with no leading or
/// trailing zeros in DIGITS, so `1.50`, `1.5` and `15e-1` are all `15e-1`,
/// and `-0.0` is `0`. jsonb turns float input such as `1e+100` into a numeric
/// with a different text; both sides agree on this form. Text that is not a
/// JSON number is returned unchanged (it cannot come from PostgreSQL).
pub fn canonical_number(text: &str) -> String {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (mantissa, exp_text) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let mut exponent: i64 = match exp_text {
        Some(e) => match e.trim_start_matches('+').parse::<i64>() {
            Ok(v) => v,
            Err(_) => return text.to_string(),
        },
        None => 0,
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
        None => (mantissa, ""),
    };
    if int_part.is_empty() || !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit()) {
        return text.to_string();
    }
    exponent -= frac_part.len() as i64;
    let mut digits: String = int_part.chars().chain(frac_part.chars()).collect();
    let trailing = digits.len() - digits.trim_end_matches('0').len();
    digits.truncate(digits.len() - trailing);
    exponent += trailing as i64;
    let digits = digits.trim_start_matches('0');
    if digits.is_empty() {
        return "0".to_string();
    }
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    out.push_str(digits);
    if exponent != 0 {
        let _ = write!(out, "e{exponent}");
    }
    out
}

pub fn sha256(bytes: &[u8]) -> Hash {
    Sha256::digest(bytes).into()
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Everything an audit row says, in the form that is hashed. Field names are
/// the keys of the canonical object (and the columns of `saas.audit_log`).
#[derive(Clone, Debug, PartialEq)]
pub struct AuditRecord {
    pub id: i64,
    pub tenant_id: String,
    /// Microseconds since 1970-01-01 UTC.
    pub logged_at_unix_micros: i64,
    pub actor_id: Option<String>,
    pub actor_role: Option<String>,
    pub operation: String,
    pub schema_name: String,
    pub table_name: String,
    pub record_key: Option<Value>,
    pub old_values: Option<Value>,
    pub new_values: Option<Value>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub request_method: Option<String>,
    pub request_path: Option<String>,
    pub txid: i64,
}

impl AuditRecord {
    /// The canonical JSON document the row hash is taken over.
    pub fn canonical(&self) -> String {
        let opt = |v: &Option<String>| v.as_ref().map_or(Value::Null, |s| Value::String(s.clone()));
        let mut m = Map::new();
        m.insert("id".into(), Value::from(self.id));
        m.insert("tenant_id".into(), Value::String(self.tenant_id.clone()));
        m.insert("logged_at".into(), Value::from(self.logged_at_unix_micros));
        m.insert("actor_id".into(), opt(&self.actor_id));
        m.insert("actor_role".into(), opt(&self.actor_role));
        m.insert("operation".into(), Value::String(self.operation.clone()));
        m.insert("schema_name".into(), Value::String(self.schema_name.clone()));
        m.insert("table_name".into(), Value::String(self.table_name.clone()));
        m.insert("record_key".into(), self.record_key.clone().unwrap_or(Value::Null));
        m.insert("old_values".into(), self.old_values.clone().unwrap_or(Value::Null));
        m.insert("new_values".into(), self.new_values.clone().unwrap_or(Value::Null));
        m.insert("client_ip".into(), opt(&self.client_ip));
        m.insert("user_agent".into(), opt(&self.user_agent));
        m.insert("request_id".into(), opt(&self.request_id));
        m.insert("request_method".into(), opt(&self.request_method));
        m.insert("request_path".into(), opt(&self.request_path));
        m.insert("txid".into(), Value::from(self.txid));
        canonical_json(&Value::Object(m))
    }

    pub fn hash(&self) -> Hash {
        sha256(self.canonical().as_bytes())
    }
}

/// The running digest of a seal over its rows in id order:
/// `d' = sha256(d || id as 8 big-endian bytes || row_hash)`, from 32 zero bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowsDigest {
    pub digest: Hash,
    pub count: i64,
}

impl Default for RowsDigest {
    fn default() -> Self {
        RowsDigest { digest: [0; 32], count: 0 }
    }
}

impl RowsDigest {
    pub fn push(&mut self, id: i64, row_hash: &[u8]) {
        let mut h = Sha256::new();
        h.update(self.digest);
        h.update(id.to_be_bytes());
        h.update(row_hash);
        self.digest = h.finalize().into();
        self.count += 1;
    }
}

/// A seal: one link of a tenant's chain, covering that tenant's rows written
/// by transactions with ids in `[xid_from, xid_to)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Seal {
    pub tenant_id: String,
    pub seal_no: i64,
    pub xid_from: i64,
    pub xid_to: i64,
    pub row_count: i64,
    pub rows_digest: Hash,
    pub prev_hash: Hash,
    pub sealed_at_unix_micros: i64,
    /// Oldest and newest `logged_at` of the sealed rows (unix micros): what
    /// verification uses to tell a retired month from deleted rows, so they
    /// are sealed too.
    pub first_logged_at: i64,
    pub last_logged_at: i64,
}

impl Seal {
    pub fn canonical(&self) -> String {
        let mut m = Map::new();
        m.insert("tenant_id".into(), Value::String(self.tenant_id.clone()));
        m.insert("seal_no".into(), Value::from(self.seal_no));
        m.insert("xid_from".into(), Value::from(self.xid_from));
        m.insert("xid_to".into(), Value::from(self.xid_to));
        m.insert("row_count".into(), Value::from(self.row_count));
        m.insert("rows_digest".into(), Value::String(hex(&self.rows_digest)));
        m.insert("prev_hash".into(), Value::String(hex(&self.prev_hash)));
        m.insert("sealed_at".into(), Value::from(self.sealed_at_unix_micros));
        m.insert("first_logged_at".into(), Value::from(self.first_logged_at));
        m.insert("last_logged_at".into(), Value::from(self.last_logged_at));
        canonical_json(&Value::Object(m))
    }

    pub fn hash(&self) -> Hash {
        sha256(self.canonical().as_bytes())
    }
}

/// What a row trigger writes for one row change, after ignored columns are
/// dropped: `None` when an UPDATE changed nothing but ignored columns.
#[derive(Debug, PartialEq)]
pub struct Change {
    pub old_values: Option<Value>,
    pub new_values: Option<Value>,
}

/// Old and new row images (JSON objects) as the log stores them. For UPDATE
/// with `changed_only`, both images keep just the columns whose values differ.
pub fn change_of(
    old: Option<Map<String, Value>>,
    new: Option<Map<String, Value>>,
    ignored: &[String],
    changed_only: bool,
) -> Option<Change> {
    let strip = |mut m: Map<String, Value>| {
        for col in ignored {
            m.remove(col);
        }
        m
    };
    match (old.map(strip), new.map(strip)) {
        (Some(mut o), Some(mut n)) => {
            let changed: Vec<String> = n
                .iter()
                .filter(|(k, v)| o.get(*k) != Some(*v))
                .map(|(k, _)| k.clone())
                .chain(o.keys().filter(|k| !n.contains_key(*k)).cloned())
                .collect();
            if changed.is_empty() {
                return None;
            }
            if changed_only {
                o.retain(|k, _| changed.contains(k));
                n.retain(|k, _| changed.contains(k));
            }
            Some(Change { old_values: Some(Value::Object(o)), new_values: Some(Value::Object(n)) })
        }
        (o, n) => Some(Change { old_values: o.map(Value::Object), new_values: n.map(Value::Object) }),
    }
}

/// The record's key: its primary-key columns, or the whole row when the table
/// has none (audit_enable says so in a NOTICE).
pub fn record_key(row: &Map<String, Value>, key_columns: &[String]) -> Value {
    if key_columns.is_empty() {
        return Value::Object(row.clone());
    }
    let mut m = Map::new();
    for col in key_columns {
        m.insert(col.clone(), row.get(col).cloned().unwrap_or(Value::Null));
    }
    Value::Object(m)
}

/// The client address of a request: the first hop of `x-forwarded-for`, else
/// `x-real-ip`, normalised; `None` when neither holds an IP address (a proxy
/// may send `unknown` or an obfuscated node name, RFC 7239).
pub fn client_ip(forwarded_for: Option<&str>, real_ip: Option<&str>) -> Option<String> {
    let first_hop = forwarded_for.and_then(|v| v.split(',').next());
    [first_hop, real_ip].into_iter().flatten().find_map(normalize_ip)
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

    #[test]
    fn numbers_are_written_by_value() {
        assert_eq!(canonical_number("1.50"), "15e-1");
        assert_eq!(canonical_number("1.5"), "15e-1");
        assert_eq!(canonical_number("15e-1"), "15e-1");
        assert_eq!(canonical_number("100"), "1e2");
        assert_eq!(canonical_number("1e+100"), canonical_number(&format!("1{}", "0".repeat(100))));
        assert_eq!(canonical_number("-0.000"), "0");
        assert_eq!(canonical_number("0"), "0");
        assert_eq!(canonical_number("-12.034"), "-12034e-3");
        assert_eq!(canonical_number("1.5e-07"), canonical_number("0.00000015"));
        assert_eq!(canonical_number("123456789012345678901234567890"), "12345678901234567890123456789e1");
    }

    #[test]
    fn keys_are_sorted_and_nested() {
        let v = json!({"b": 1, "a": {"z": [1, 2.50, null], "y": "x\"y"}, "ab": true});
        assert_eq!(canonical_json(&v), r#"{"a":{"y":"x\"y","z":[1,25e-1,null]},"ab":true,"b":1}"#);
    }

    #[test]
    fn jsonb_and_row_to_json_forms_hash_alike() {
        // row_to_json writes a float8 as 1e+100; jsonb output writes the numeric.
        let from_trigger: Value = serde_json::from_str(r#"{"f": 1e+100, "n": 1.50}"#).unwrap();
        let from_jsonb: Value =
            serde_json::from_str(&format!(r#"{{"n": 1.50, "f": 1{}}}"#, "0".repeat(100))).unwrap();
        assert_eq!(canonical_json(&from_trigger), canonical_json(&from_jsonb));
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn update_of_ignored_columns_only_writes_nothing() {
        let old = obj(json!({"id": 1, "name": "a", "updated_at": "t1"}));
        let new = obj(json!({"id": 1, "name": "a", "updated_at": "t2"}));
        assert_eq!(change_of(Some(old.clone()), Some(new.clone()), &["updated_at".into()], true), None);
        let c = change_of(Some(old), Some(new), &[], true).unwrap();
        assert_eq!(c.old_values, Some(json!({"updated_at": "t1"})));
        assert_eq!(c.new_values, Some(json!({"updated_at": "t2"})));
    }

    #[test]
    fn full_images_keep_every_column_but_ignored_ones() {
        let old = obj(json!({"id": 1, "name": "a", "secret": "s"}));
        let new = obj(json!({"id": 1, "name": "b", "secret": "s2"}));
        let c = change_of(Some(old), Some(new), &["secret".into()], false).unwrap();
        assert_eq!(c.old_values, Some(json!({"id": 1, "name": "a"})));
        assert_eq!(c.new_values, Some(json!({"id": 1, "name": "b"})));
        let ins = change_of(None, Some(obj(json!({"id": 2, "secret": "x"}))), &["secret".into()], true).unwrap();
        assert_eq!(ins.old_values, None);
        assert_eq!(ins.new_values, Some(json!({"id": 2})));
    }

    #[test]
    fn record_key_falls_back_to_the_row() {
        let row = obj(json!({"a": 1, "b": 2}));
        assert_eq!(record_key(&row, &["b".into()]), json!({"b": 2}));
        assert_eq!(record_key(&row, &[]), json!({"a": 1, "b": 2}));
    }

    #[test]
    fn client_ip_is_the_first_hop() {
        assert_eq!(client_ip(Some("203.0.113.7, 10.0.0.1"), Some("10.9.9.9")).as_deref(), Some("203.0.113.7"));
        assert_eq!(client_ip(Some("unknown"), Some("10.9.9.9")).as_deref(), Some("10.9.9.9"));
        assert_eq!(client_ip(None, Some("[2001:DB8::1]:443")).as_deref(), Some("2001:db8::1"));
        assert_eq!(client_ip(Some("198.51.100.2:8080"), None).as_deref(), Some("198.51.100.2"));
        assert_eq!(client_ip(Some("garbage"), None), None);
        assert_eq!(client_ip(None, None), None);
    }

    fn record() -> AuditRecord {
        AuditRecord {
            id: 7,
            tenant_id: "00000000-0000-0000-0000-000000000001".into(),
            logged_at_unix_micros: 1_700_000_000_000_000,
            actor_id: None,
            actor_role: Some("authenticated".into()),
            operation: "UPDATE".into(),
            schema_name: "app".into(),
            table_name: "notes".into(),
            record_key: Some(json!({"id": 1})),
            old_values: Some(json!({"body": "a"})),
            new_values: Some(json!({"body": "b"})),
            client_ip: Some("203.0.113.7".into()),
            user_agent: None,
            request_id: None,
            request_method: Some("PATCH".into()),
            request_path: Some("/notes".into()),
            txid: 1234,
        }
    }

    #[test]
    fn any_field_change_changes_the_row_hash() {
        let base = record();
        let h = base.hash();
        let mut edits: Vec<AuditRecord> = Vec::new();
        let mut r = base.clone(); r.id = 8; edits.push(r);
        let mut r = base.clone(); r.txid = 1235; edits.push(r);
        let mut r = base.clone(); r.logged_at_unix_micros += 1; edits.push(r);
        let mut r = base.clone(); r.new_values = Some(json!({"body": "c"})); edits.push(r);
        let mut r = base.clone(); r.actor_id = Some("x".into()); edits.push(r);
        let mut r = base.clone(); r.client_ip = None; edits.push(r);
        let mut r = base.clone(); r.tenant_id = "00000000-0000-0000-0000-000000000002".into(); edits.push(r);
        for e in edits {
            assert_ne!(e.hash(), h, "{e:?}");
        }
        assert_eq!(base.clone().hash(), h);
    }

    #[test]
    fn seal_digest_depends_on_order_and_content() {
        let mut a = RowsDigest::default();
        a.push(1, &[1; 32]);
        a.push(2, &[2; 32]);
        let mut b = RowsDigest::default();
        b.push(2, &[2; 32]);
        b.push(1, &[1; 32]);
        assert_ne!(a, b);
        let mut c = RowsDigest::default();
        c.push(1, &[1; 32]);
        assert_ne!(a.digest, c.digest);
        assert_eq!(a.count, 2);
    }

    proptest! {
        // A number keeps its canonical form through any textual respelling
        // PostgreSQL may produce: trailing zeros, exponent, leading zeros.
        #[test]
        fn canonical_number_is_a_function_of_the_value(
            neg in any::<bool>(), int in 0u64..1_000_000, frac in proptest::collection::vec(0u8..10, 0..6),
            zeros in 0usize..4, shift in 0i64..5,
        ) {
            let frac_text: String = frac.iter().map(|d| char::from(b'0' + d)).collect();
            let sign = if neg { "-" } else { "" };
            let plain = if frac_text.is_empty() { format!("{sign}{int}") } else { format!("{sign}{int}.{frac_text}") };
            let padded = format!("{plain}{}{}", if frac_text.is_empty() { "." } else { "" }, "0".repeat(zeros + 1));
            prop_assert_eq!(canonical_number(&plain), canonical_number(&padded));
            // x * 10^shift written with an exponent equals the shifted decimal.
            let digits = format!("{int}{frac_text}");
            let exp = shift - frac_text.len() as i64;
            let with_exp = format!("{sign}{digits}e{exp}");
            prop_assert_eq!(canonical_number(&with_exp), canonical_number(&format!("{plain}e{shift}")));
        }
    }
}
