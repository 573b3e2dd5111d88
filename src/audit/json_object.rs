//! Row images without a JSON tree: [`JsonObject`], each member's text as it
//! came and its canonical text. Pure Rust.

use super::canonical::write_string;
use super::json_scan::{canonical_order, depth_limit, DepthProbe, JsonError, KeyOf, Scanner};

/// A JSON object as the log keeps it: for each member the text it came in
/// (what `jsonb` input gets, so values keep their spelling, e.g. 1.50) and
/// its canonical text (what the hash covers), in canonical key order. Built
/// member by member from a tuple in the trigger, parsed from `jsonb` output
/// when verifying; no tree of values either way.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct JsonObject {
    pub(super) members: Vec<Member>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub key: String,
    pub text: String,
    pub canonical: String,
}

impl JsonObject {
    /// The object `text` holds, nested at most [`depth_limit`] deep (for
    /// code outside a backend; the backend uses [`JsonObject::parse_with`]).
    pub fn parse(text: &str) -> Result<JsonObject, JsonError> {
        JsonObject::parse_with(text, &depth_limit)
    }

    /// The object `text` holds, nested as deep as `too_deep` allows.
    pub fn parse_with(text: &str, too_deep: DepthProbe<'_>) -> Result<JsonObject, JsonError> {
        let mut sc = Scanner::new(text, too_deep);
        sc.ws();
        let mut members = Vec::new();
        sc.object(|key, start, end, canonical| {
            members.push(Member {
                key,
                text: text[start..end].to_string(),
                canonical,
            });
        })?;
        sc.ws();
        if !sc.at_end() {
            return Err(sc.error("text after the object"));
        }
        Ok(JsonObject {
            members: canonical_order(members),
        })
    }

    /// An object of `members` (any order; of equal keys the last stays).
    pub fn from_members(members: Vec<Member>) -> JsonObject {
        JsonObject {
            members: canonical_order(members),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Member> {
        self.members
            .binary_search_by(|m| m.key.as_bytes().cmp(key.as_bytes()))
            .ok()
            .map(|i| &self.members[i])
    }

    /// The members in canonical key order.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.key.as_str())
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.members.retain(|m| keep(&m.key));
    }

    /// The object as JSON text, each value spelled as it came.
    pub fn text(&self) -> String {
        let mut out = String::with_capacity(
            self.members
                .iter()
                .map(|m| m.key.len() + m.text.len() + 4)
                .sum::<usize>()
                + 2,
        );
        self.write(&mut out, |m| &m.text);
        out
    }

    pub fn canonical(&self) -> String {
        let mut out = String::with_capacity(self.canonical_len());
        self.write(&mut out, |m| &m.canonical);
        out
    }

    /// About the length of [`JsonObject::canonical`] (a capacity hint).
    pub(super) fn canonical_len(&self) -> usize {
        self.members
            .iter()
            .map(|m| m.key.len() + m.canonical.len() + 4)
            .sum::<usize>()
            + 2
    }

    pub(super) fn write(&self, out: &mut String, value: impl Fn(&Member) -> &String) {
        out.push('{');
        for (i, m) in self.members.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_string(&m.key, out);
            out.push(':');
            out.push_str(value(m));
        }
        out.push('}');
    }
}

impl Member {
    /// The value when it is a JSON string.
    pub fn as_string(&self) -> Option<String> {
        // A string does not nest: the probe is never asked.
        let mut sc = Scanner::new(&self.text, &depth_limit);
        (sc.peek() == Some(b'"'))
            .then(|| sc.string().ok().map(|s| s.into_owned()))
            .flatten()
    }
}

impl KeyOf for Member {
    fn key(&self) -> &str {
        &self.key
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::canonical::canonical_json;
    use crate::audit::canonical::tests::json_value;
    use crate::audit::json_scan::{canonical_value, depth_limit, JsonError};
    use proptest::prelude::*;
    use serde_json::Value;

    fn obj(text: &str) -> JsonObject {
        JsonObject::parse(text).unwrap()
    }

    #[test]
    fn members_read_as_strings() {
        let row = obj(
            r#"{"t": "0000000a-0000-4000-8000-00000000bec0", "e": "a\"b\u00e9\ud83d\ude00", "n": 1, "z": null}"#,
        );
        assert_eq!(
            row.get("t").unwrap().as_string().as_deref(),
            Some("0000000a-0000-4000-8000-00000000bec0")
        );
        assert_eq!(
            row.get("e").unwrap().as_string().as_deref(),
            Some("a\"b\u{e9}\u{1f600}")
        );
        assert_eq!(row.get("n").unwrap().as_string(), None);
        assert_eq!(row.get("z").unwrap().as_string(), None);
        assert!(row.get("missing").is_none());
    }

    #[test]
    fn bad_text_is_an_error_not_a_guess() {
        for bad in [
            r#"[1]"#,
            r#"{"a" 1}"#,
            r#"{"a": 1"#,
            r#"{"a": tru}"#,
            r#"{"a": "\ud800"}"#,
            r#"{"a": 1} x"#,
            r#"{"a": "\q"}"#,
            "",
        ] {
            assert!(JsonObject::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn duplicate_keys_keep_the_last_as_jsonb_does() {
        let row = obj(r#"{"j": {"a": 1, "b": 0, "a": 2}}"#);
        let oracle: Value = serde_json::from_str(r#"{"j": {"a": 1, "b": 0, "a": 2}}"#).unwrap();
        assert_eq!(row.canonical(), canonical_json(&oracle));
        assert_eq!(row.canonical(), r#"{"j":{"a":2,"b":0}}"#);
    }

    #[test]
    fn deep_members_are_too_deep_not_a_crash() {
        let deep = format!("{{\"j\": {}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        let r = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || JsonObject::parse_with(&deep, &|d| d > 100).map(drop))
            .unwrap()
            .join()
            .unwrap();
        // The object itself is level 1.
        assert_eq!(r, Err(JsonError::TooDeep { depth: 101 }));
        assert!(matches!(
            JsonObject::parse(&format!(
                "{{\"j\": {}{}}}",
                "[".repeat(300),
                "]".repeat(300)
            )),
            Err(JsonError::TooDeep { .. })
        ));
    }

    proptest! {
        // The hot path's canonical text equals the tree-based definition,
        // whatever the spacing of the text it reads (row_to_json is compact,
        // jsonb output spaced).
        #[test]
        fn parsed_objects_canonicalise_like_values(
            members in proptest::collection::btree_map("[a-z_\"é]{0,8}", json_value(), 0..8),
        ) {
            let value = Value::Object(members.into_iter().collect());
            let expected = canonical_json(&value);
            for text in [serde_json::to_string(&value).unwrap(), serde_json::to_string_pretty(&value).unwrap()] {
                let parsed = JsonObject::parse(&text).unwrap();
                prop_assert_eq!(parsed.canonical(), expected.clone());
                // Its text is JSON of the same value.
                let again: Value = serde_json::from_str(&parsed.text()).unwrap();
                prop_assert_eq!(canonical_json(&again), expected.clone());
            }
        }

        // A value's canonical text equals the tree-based definition, and an
        // object built member by member (as the trigger builds row images
        // from a tuple) equals the same object parsed from its text.
        #[test]
        fn values_and_members_canonicalise_like_trees(
            members in proptest::collection::btree_map("[a-z_\"é]{0,8}", json_value(), 0..8),
            value in json_value(),
        ) {
            let text = serde_json::to_string_pretty(&value).unwrap();
            prop_assert_eq!(canonical_value(&text, &depth_limit).unwrap(), canonical_json(&value));
            let built = JsonObject::from_members(members.iter().rev().map(|(k, v)| {
                let text = serde_json::to_string(v).unwrap();
                Member { key: k.clone(), canonical: canonical_value(&text, &depth_limit).unwrap(), text }
            }).collect());
            let object = Value::Object(members.into_iter().collect());
            prop_assert_eq!(built.clone(), JsonObject::parse(&serde_json::to_string(&object).unwrap()).unwrap());
            prop_assert_eq!(built.canonical(), canonical_json(&object));
        }
    }
}
