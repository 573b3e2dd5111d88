//! Which answers may be cached, and streamed answers assembled from their
//! chunks. Pure Rust.
//!
//! An answer is cacheable when it finished (every OpenAI choice with
//! `finish_reason` `stop` or `tool_calls`, or an Anthropic `stop_reason` of
//! `end_turn`, `stop_sequence` or `tool_use`), carries no `error`, and the
//! request was deterministic (`temperature` 0, or a `seed`) unless the
//! caller opts in. Cut-off answers (`length`, `max_tokens`,
//! `content_filter`, no finish reason) are never cached: they would poison
//! every later hit.

use serde_json::{json, Map, Value};

const FINISHED_OPENAI: &[&str] = &["stop", "tool_calls", "function_call"];
const FINISHED_ANTHROPIC: &[&str] = &["end_turn", "stop_sequence", "tool_use"];

/// Why an answer may not be cached; `None` when it may.
pub fn refusal(request: &Value, response: &Value, allow_nondeterministic: bool) -> Option<String> {
    let Some(resp) = response.as_object() else {
        return Some("the response is not a JSON object".into());
    };
    if resp.get("error").is_some_and(|e| !e.is_null()) {
        return Some("the response is an error".into());
    }
    if let Some(reason) = finish_reason(resp) {
        let ok = FINISHED_OPENAI.contains(&reason.as_str())
            || FINISHED_ANTHROPIC.contains(&reason.as_str());
        if !ok {
            return Some(format!(
                "the answer did not finish (finish reason {reason})"
            ));
        }
    } else {
        return Some(
            "the response has no finish reason (choices[].finish_reason or stop_reason)".into(),
        );
    }
    if !allow_nondeterministic {
        let temp_zero = request
            .get("temperature")
            .and_then(Value::as_f64)
            .is_some_and(|t| t == 0.0);
        let seeded = request.get("seed").is_some_and(|s| !s.is_null());
        if !temp_zero && !seeded {
            return Some("the request is not deterministic (no temperature 0 and no seed)".into());
        }
    }
    None
}

/// The first finish reason that is not a normal finish, else the first
/// one; `None` when the response has none at all.
fn finish_reason(resp: &Map<String, Value>) -> Option<String> {
    if let Some(r) = resp.get("stop_reason") {
        return Some(r.as_str().unwrap_or("null").to_string());
    }
    let choices = resp.get("choices")?.as_array()?;
    if choices.is_empty() {
        return None;
    }
    let reasons: Vec<String> = choices
        .iter()
        .map(|c| {
            c.get("finish_reason")
                .and_then(Value::as_str)
                .unwrap_or("null")
                .to_string()
        })
        .collect();
    reasons
        .iter()
        .find(|r| !FINISHED_OPENAI.contains(&r.as_str()))
        .or(reasons.first())
        .cloned()
}

/// An OpenAI chat-completion response assembled from the chunks of its
/// stream (`chat.completion.chunk` objects, in order): each choice's
/// content concatenated, its role and last finish reason, the usage of the
/// chunk that carries one. `None` when `chunks` is not an array of objects.
pub fn assemble_stream(chunks: &Value) -> Option<Value> {
    let chunks = chunks.as_array()?;
    let mut id = Value::Null;
    let mut model = Value::Null;
    let mut created = Value::Null;
    let mut usage = Value::Null;
    // index -> (role, content, finish_reason)
    let mut choices: std::collections::BTreeMap<i64, (String, String, Value)> = Default::default();
    for chunk in chunks {
        let c = chunk.as_object()?;
        for (field, slot) in [
            ("id", &mut id),
            ("model", &mut model),
            ("created", &mut created),
        ] {
            if slot.is_null() {
                if let Some(v) = c.get(field) {
                    *slot = v.clone();
                }
            }
        }
        if let Some(u) = c.get("usage").filter(|u| !u.is_null()) {
            usage = u.clone();
        }
        for choice in c
            .get("choices")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let index = choice.get("index").and_then(Value::as_i64).unwrap_or(0);
            let entry = choices
                .entry(index)
                .or_insert_with(|| ("assistant".into(), String::new(), Value::Null));
            if let Some(delta) = choice.get("delta") {
                if let Some(role) = delta.get("role").and_then(Value::as_str) {
                    entry.0 = role.to_string();
                }
                if let Some(text) = delta.get("content").and_then(Value::as_str) {
                    entry.1.push_str(text);
                }
            }
            if let Some(f) = choice.get("finish_reason").filter(|f| !f.is_null()) {
                entry.2 = f.clone();
            }
        }
    }
    let choices: Vec<Value> = choices
        .into_iter()
        .map(|(index, (role, content, finish))| {
            json!({"index": index, "message": {"role": role, "content": content}, "finish_reason": finish})
        })
        .collect();
    let mut out = json!({"object": "chat.completion", "choices": choices});
    for (field, v) in [
        ("id", id),
        ("model", model),
        ("created", created),
        ("usage", usage),
    ] {
        if !v.is_null() {
            out[field] = v;
        }
    }
    Some(out)
}

/// What is wrong with the values of an embedding: 1 when an element is
/// missing (NULL), NaN or infinite, 2 when every element is zero (no
/// direction, so no cosine), 0 when nothing is.
pub fn embedding_problem(values: impl Iterator<Item = Option<f32>>) -> i32 {
    let mut nonzero = false;
    for v in values {
        match v {
            Some(x) if x.is_finite() => nonzero |= x != 0.0,
            _ => return 1,
        }
    }
    if nonzero {
        0
    } else {
        2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedding_problems() {
        assert_eq!(embedding_problem([Some(0.5), Some(0.0)].into_iter()), 0);
        assert_eq!(embedding_problem([Some(0.5), None].into_iter()), 1);
        assert_eq!(embedding_problem([Some(f32::NAN)].into_iter()), 1);
        assert_eq!(embedding_problem([Some(f32::NEG_INFINITY)].into_iter()), 1);
        assert_eq!(embedding_problem([Some(0.0), Some(-0.0)].into_iter()), 2);
        assert_eq!(embedding_problem(std::iter::empty()), 2);
    }

    fn openai(reason: &str) -> Value {
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": reason}]})
    }

    #[test]
    fn rules() {
        let det = json!({"temperature": 0});
        assert_eq!(refusal(&det, &openai("stop"), false), None);
        assert!(refusal(&det, &openai("length"), false).is_some());
        assert!(refusal(&det, &openai("content_filter"), true).is_some());
        assert!(refusal(&json!({}), &openai("stop"), false).is_some());
        assert_eq!(refusal(&json!({}), &openai("stop"), true), None);
        assert_eq!(
            refusal(
                &json!({"seed": 7, "temperature": 1}),
                &openai("stop"),
                false
            ),
            None
        );
        assert!(refusal(&det, &json!({"error": {"message": "x"}}), false).is_some());
        assert!(refusal(&det, &json!({"choices": []}), false).is_some());
        assert!(refusal(&det, &json!({"stop_reason": "max_tokens"}), false).is_some());
        assert_eq!(
            refusal(&det, &json!({"stop_reason": "end_turn"}), false),
            None
        );
        let two = json!({"choices": [{"finish_reason": "stop"}, {"finish_reason": "length"}]});
        assert!(refusal(&det, &two, false).unwrap().contains("length"));
    }

    #[test]
    fn assembles_a_stream() {
        let chunks = json!([
            {"id": "c1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": null}]},
            {"id": "c1", "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": null}]},
            {"id": "c1", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {"id": "c1", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2}}
        ]);
        let r = assemble_stream(&chunks).unwrap();
        assert_eq!(r["choices"][0]["message"]["content"], "Hello");
        assert_eq!(r["choices"][0]["finish_reason"], "stop");
        assert_eq!(r["usage"]["completion_tokens"], 2);
        assert_eq!(r["model"], "gpt-4o");
        assert_eq!(refusal(&json!({"temperature": 0}), &r, false), None);
        // cut off mid-stream: no finish reason, not cacheable
        let cut = assemble_stream(&json!([chunks[0].clone()])).unwrap();
        assert!(refusal(&json!({"temperature": 0}), &cut, false).is_some());
        assert_eq!(assemble_stream(&json!({"a": 1})), None);
        assert_eq!(assemble_stream(&json!([1])), None);
    }
}
