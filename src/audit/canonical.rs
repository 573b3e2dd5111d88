//! Canonical JSON, what a row hash is taken over: objects with keys sorted
//! by their UTF-8 bytes, no whitespace, strings escaped as serde_json
//! escapes them, and numbers written by value (see
//! [`canonical_number`](super::canonical_number)), so a value hashes the
//! same whether the trigger wrote it (as `row_to_json` would) or `jsonb`
//! output gives it when it is verified. Pure Rust: `cargo test` and
//! proptest cover it.
//!
//! The pure logic of the audit trail lives beside it: numbers
//! (`canonical_number`), reading JSON text (`json_scan`), row images
//! (`json_object`), what is hashed (`record`), and the diff (`diff`).

use super::canonical_number::write_canonical_number;
use serde_json::Value;

// The record and its row images, named here too: tests/audit.rs forges a
// row and hashes it as verification does.
pub use super::json_object::JsonObject;
pub use super::record::AuditRecord;

/// The canonical text of a JSON value. Recursive: for values pg_saas builds
/// (seal records) or serde_json parsed (nested at most 128 deep, its
/// default recursion limit, which this crate never disables); user data
/// goes through [`super::json_scan`], which checks the stack.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::with_capacity(256);
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => write_canonical_number(&n.to_string(), out),
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

pub(super) fn write_string(s: &str, out: &mut String) {
    // serde_json's escaping is fixed (\" \\ \n \r \t \b \f, \u00XX otherwise
    // below 0x20, everything else verbatim), hence canonical.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("a string always serialises"));
    }
}

/// `s` as a JSON string: the escaping of [`write_string`], which is also
/// what PostgreSQL's `escape_json` writes.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    write_string(s, &mut out);
    out
}

/// Whether jsonb can hold the JSON value whose canonical text this is. The
/// json type accepts what jsonb refuses: a `\u0000` in a string or a key
/// (jsonb stores text, which has no NUL) and numbers beyond numeric's range
/// (at most 131072 digits before the decimal point and 16383 after). The
/// audit log keeps such a value as a JSON string of its text instead, so an
/// audited write never fails where the unaudited one succeeds.
pub fn jsonb_can_hold(canonical: &str) -> bool {
    const MAX_INT_DIGITS: i64 = 131_072;
    const MAX_FRAC_DIGITS: i64 = 16_383;
    let b = canonical.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        if b.get(i + 1) == Some(&b'u') && b.get(i + 2..i + 6) == Some(b"0000") {
                            return false;
                        }
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < b.len() && matches!(b[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                // Canonical numbers are -?DIGITS(eEXP)? (canonical_number).
                let number = canonical[start..i].trim_start_matches('-');
                let (digits, exp) = match number.split_once('e') {
                    Some((d, e)) => (d, e.parse::<i64>().unwrap_or(i64::MAX)),
                    None => (number, 0),
                };
                let digits = digits.len() as i64;
                if exp == i64::MAX
                    || digits.saturating_add(exp) > MAX_INT_DIGITS
                    || exp < -MAX_FRAC_DIGITS
                {
                    return false;
                }
            }
            _ => i += 1,
        }
    }
    true
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn jsonb_can_hold_what_numeric_and_text_can() {
        let ok = jsonb_can_hold;
        assert!(ok(r#"{"a":[1,"x",null,true,15e-1,-2e10]}"#));
        assert!(
            ok(r#""back\\u0000slash""#),
            "an escaped backslash before u0000 is no NUL"
        );
        assert!(!ok(r#"{"a":"x\u0000y"}"#));
        assert!(!ok(r#"{"a\u0000":1}"#));
        assert!(!ok("1e1000000"));
        assert!(!ok("-1e-1000000"));
        assert!(ok("1e131071"));
        assert!(!ok("1e131072"));
        assert!(ok("1e-16383"));
        assert!(!ok("1e-16384"));
    }
    use serde_json::json;

    #[test]
    fn keys_are_sorted_and_nested() {
        let v = json!({"b": 1, "a": {"z": [1, 2.50, null], "y": "x\"y"}, "ab": true});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"y":"x\"y","z":[1,25e-1,null]},"ab":true,"b":1}"#
        );
    }

    #[test]
    fn jsonb_and_row_to_json_forms_hash_alike() {
        // row_to_json writes a float8 as 1e+100; jsonb output writes the numeric.
        let from_trigger: Value = serde_json::from_str(r#"{"f": 1e+100, "n": 1.50}"#).unwrap();
        let from_jsonb: Value =
            serde_json::from_str(&format!(r#"{{"n": 1.50, "f": 1{}}}"#, "0".repeat(100))).unwrap();
        assert_eq!(canonical_json(&from_trigger), canonical_json(&from_jsonb));
    }

    /// Any JSON value, numbers spelt as PostgreSQL may spell them.
    pub(in crate::audit) fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            (-1_000_000i64..1_000_000, 0u32..6, -20i32..20).prop_map(|(m, scale, e)| {
                let text = if scale == 0 {
                    format!("{m}e{e}")
                } else {
                    format!("{m}.{}", "0".repeat(scale as usize))
                };
                serde_json::from_str(&text).unwrap()
            }),
            "\\PC{0,12}".prop_map(Value::String),
            proptest::collection::vec(any::<char>(), 0..6)
                .prop_map(|c| Value::String(c.into_iter().collect())),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::btree_map("[a-zA-Z_\"\\\\é]{0,6}", inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        // json_string writes what serde_json writes (and escape_json: the
        // same escapes, lowercase \u00xx below 0x20).
        #[test]
        fn json_string_escapes_like_serde(s in "\\PC{0,12}|[\\x00-\\x20\"\\\\a]{0,8}") {
            prop_assert_eq!(json_string(&s), serde_json::to_string(&s).unwrap());
        }
    }
}
