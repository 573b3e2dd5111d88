//! The cache key of an LLM request: SHA-256 over a version line and the
//! RFC 8785 form of the whole request minus the fields that cannot change
//! the answer ([`IGNORED_FIELDS`]). Equal requests share a key whatever
//! their key order or number spelling; the canonical form is injective, so
//! different requests (also ones whose parts concatenate alike) never share
//! one short of a SHA-256 collision. Pure Rust.

use super::canonical::{self, Sink};
use crate::error::{ErrorKind, SaasError, SaasResult};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Bumped when the canonical form or the ignored fields change: old keys
/// then simply miss.
pub const KEY_VERSION: &str = "pg_saas llm cache key v1\n";

/// Top-level request fields that do not change the answer (transport,
/// bookkeeping, attribution). Everything else, including parameters no
/// provider had when this list was written, is part of the key.
pub const IGNORED_FIELDS: &[&str] = &[
    "idempotency_key",
    "metadata",
    "request_id",
    "store",
    "stream",
    "stream_options",
    "timeout",
    "user",
];

struct Hasher(Sha256);

impl Sink for Hasher {
    fn put(&mut self, s: &str) {
        self.0.update(s.as_bytes());
    }
}

/// Checks that a request is a JSON object.
pub fn require_object(request: &Value) -> SaasResult<&serde_json::Map<String, Value>> {
    request.as_object().ok_or_else(|| {
        SaasError::new(
            ErrorKind::InvalidParameter,
            format!(
                "llm request must be a JSON object, not {}",
                match request {
                    Value::Null => "null",
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    Value::String(_) => "a string",
                    Value::Array(_) => "an array",
                    Value::Object(_) => "an object",
                }
            ),
            "Pass the request body as sent to the provider, e.g. '{\"model\": \"gpt-4o\", \"messages\": [...]}'.",
        )
    })
}

/// The 32-byte key of `request`.
pub fn cache_key(request: &Value) -> SaasResult<[u8; 32]> {
    let map = require_object(request)?;
    let mut h = Hasher(Sha256::new());
    h.put(KEY_VERSION);
    let mut keys: Vec<&String> = map
        .keys()
        .filter(|k| !IGNORED_FIELDS.contains(&k.as_str()))
        .collect();
    keys.sort_unstable_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
    h.put("{");
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            h.put(",");
        }
        canonical::string(key, &mut h);
        h.put(":");
        canonical::write(&map[key], &mut h, 1)?;
    }
    h.put("}");
    Ok(h.0.finalize().into())
}

/// Bumped when what the context hash covers changes.
pub const CONTEXT_VERSION: &str = "pg_saas llm context v1\n";

/// The context hash of a request for the semantic cache: SHA-256 over a
/// version line and the RFC 8785 form of the request minus
/// [`IGNORED_FIELDS`] (as the key) and minus the `content` of the last
/// message whose `role` is `"user"` (that turn is what the caller's
/// embedding stands for). Everything else must match for a semantic hit:
/// the model, the system prompt (OpenAI's system message, Anthropic's
/// top-level `system`), every earlier turn, every message after the last
/// user turn, the other fields of that turn (`name`, ...), every parameter.
/// `None` when `messages` is not an array holding a user turn.
pub fn context_hash(request: &Value) -> SaasResult<Option<[u8; 32]>> {
    let map = require_object(request)?;
    let Some(Value::Array(messages)) = map.get("messages") else {
        return Ok(None);
    };
    let Some(last) = messages
        .iter()
        .rposition(|m| m.get("role").and_then(Value::as_str) == Some("user"))
    else {
        return Ok(None);
    };
    let mut h = Hasher(Sha256::new());
    h.put(CONTEXT_VERSION);
    let mut keys: Vec<&String> = map
        .keys()
        .filter(|k| !IGNORED_FIELDS.contains(&k.as_str()))
        .collect();
    keys.sort_unstable_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
    h.put("{");
    for (i, key) in keys.into_iter().enumerate() {
        if i > 0 {
            h.put(",");
        }
        canonical::string(key, &mut h);
        h.put(":");
        if key == "messages" {
            let mut turns = messages.clone();
            if let Some(Value::Object(turn)) = turns.get_mut(last) {
                turn.remove("content");
            }
            canonical::write(&Value::Array(turns), &mut h, 1)?;
        } else {
            canonical::write(&map[key], &mut h, 1)?;
        }
    }
    h.put("}");
    Ok(Some(h.0.finalize().into()))
}

/// Lower-case hex of a key.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a 64-digit hex key, if it is one.
pub fn parse_hex(text: &str) -> Option<[u8; 32]> {
    let b = text.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn ctx(v: Value) -> Option<[u8; 32]> {
        context_hash(&v).unwrap()
    }

    #[test]
    fn context_hash_covers_all_but_the_last_user_turn() {
        let req = |sys: &str, q: &str, t: f64| {
            json!({"model": "gpt-4o", "temperature": t, "user": "u1", "messages": [
                {"role": "system", "content": sys},
                {"role": "user", "content": "earlier"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": q}]})
        };
        let base = ctx(req("Be brief.", "What is 2+2?", 0.0)).unwrap();
        assert_eq!(ctx(req("Be brief.", "what's 2 + 2", 0.0)), Some(base));
        assert_ne!(ctx(req("Be verbose.", "What is 2+2?", 0.0)), Some(base));
        assert_ne!(ctx(req("Be brief.", "What is 2+2?", 0.5)), Some(base));
        // the ignored fields are ignored as in the key
        let mut v = req("Be brief.", "x", 0.0);
        v["user"] = json!("u2");
        assert_eq!(ctx(v), Some(base));
        // an earlier turn counts
        let mut v = req("Be brief.", "x", 0.0);
        v["messages"][1]["content"] = json!("other");
        assert_ne!(ctx(v), Some(base));
        // a different model
        let mut v = req("Be brief.", "x", 0.0);
        v["model"] = json!("gpt-4o-mini");
        assert_ne!(ctx(v), Some(base));
        // Anthropic's top-level system prompt counts
        let a = |sys: &str| json!({"model": "c", "system": sys, "messages": [{"role": "user", "content": "q"}]});
        assert_ne!(ctx(a("A")), ctx(a("B")));
        // never equal to the cache key of the same request
        assert_ne!(ctx(a("A")).unwrap(), cache_key(&a("A")).unwrap());
        // no user turn
        assert_eq!(
            ctx(json!({"model": "m", "messages": [{"role": "system", "content": "s"}]})),
            None
        );
        assert_eq!(ctx(json!({"model": "m", "prompt": "p"})), None);
        assert!(context_hash(&json!([1])).is_err());
    }

    fn key(v: Value) -> [u8; 32] {
        cache_key(&v).unwrap()
    }

    #[test]
    fn order_and_spelling_do_not_matter() {
        let a: Value = serde_json::from_str(
            r#"{"model":"gpt-4o","temperature":0,"messages":[{"role":"user","content":"hi"}],"max_tokens":100}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"max_tokens":1.00e2,"messages":[{"content":"hi","role":"user"}],"temperature":0.0,"model":"gpt-4o"}"#,
        )
        .unwrap();
        assert_eq!(key(a), key(b));
    }

    #[test]
    fn ignored_fields_do_not_matter_others_do() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        let mut with = base.clone();
        with["stream"] = json!(true);
        with["user"] = json!("u1");
        with["metadata"] = json!({"trace": 1});
        assert_eq!(key(base.clone()), key(with));
        let mut other = base.clone();
        other["new_param_of_2030"] = json!(1);
        assert_ne!(key(base.clone()), key(other));
        let mut nested = base.clone();
        nested["messages"][0]["stream"] = json!(true);
        assert_ne!(key(base), key(nested), "only top-level fields are ignored");
    }

    #[test]
    fn concatenations_do_not_collide() {
        // prompt + model with no separator: "ab" + "c" == "a" + "bc".
        assert_ne!(
            key(json!({"model": "c", "prompt": "ab"})),
            key(json!({"model": "bc", "prompt": "a"}))
        );
        assert_ne!(
            key(json!({"messages": ["a", "b"]})),
            key(json!({"messages": ["a,b"]}))
        );
    }

    #[test]
    fn refuses_non_objects_and_big_integers() {
        assert_eq!(
            cache_key(&json!([1])).unwrap_err().kind,
            ErrorKind::InvalidParameter
        );
        let big: Value = serde_json::from_str(r#"{"seed": 18446744073709551615}"#).unwrap();
        assert_eq!(cache_key(&big).unwrap_err().kind, ErrorKind::OutOfRange);
    }

    #[test]
    fn hex_round_trip() {
        let k = key(json!({"a": 1}));
        assert_eq!(parse_hex(&hex(&k)), Some(k));
        assert_eq!(parse_hex("zz"), None);
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-1_000_000i64..1_000_000).prop_map(|i| json!(i)),
            "[a-z\u{e9}\u{1f600}\"\\\\\n]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\u{e9}\u{1f600}]{1,4}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// The same value with every object's members in reverse order and
    /// integers spelt as decimals with an exponent.
    fn respell(v: &Value) -> String {
        match v {
            Value::Object(m) => {
                let parts: Vec<String> = m
                    .iter()
                    .rev()
                    .map(|(k, v)| format!("{}:{}", serde_json::to_string(k).unwrap(), respell(v)))
                    .collect();
                format!("{{ {} }}", parts.join(" , "))
            }
            Value::Array(a) => format!("[{}]", a.iter().map(respell).collect::<Vec<_>>().join(",")),
            Value::Number(n) => format!("{}.000e0", n),
            other => serde_json::to_string(other).unwrap(),
        }
    }

    proptest! {
        #[test]
        fn permuted_and_respelt_requests_share_a_key(m in prop::collection::btree_map("[a-z]{1,5}", arb_json(), 0..6)) {
            let v = Value::Object(m.into_iter().collect());
            let again: Value = serde_json::from_str(&respell(&v)).unwrap();
            prop_assert_eq!(key(v), key(again));
        }

        #[test]
        fn different_requests_differ(a in arb_json(), b in arb_json()) {
            prop_assume!(a != b);
            prop_assert_ne!(key(json!({"x": a})), key(json!({"x": b})));
        }

        #[test]
        fn split_strings_differ(s in "[a-z]{2,12}", at in 1usize..11) {
            prop_assume!(at < s.len());
            let (l, r) = s.split_at(at);
            prop_assert_ne!(key(json!({"prompt": s.clone(), "model": ""})), key(json!({"prompt": l, "model": r})));
        }
    }
}
