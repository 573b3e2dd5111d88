//! Reading JSON text without building a tree: a forward-only scanner that
//! writes canonical text as it goes (row images, nested values) or reports
//! each value to a [`JsonEvents`] (the direct writer's jsonb builder).
//! Pure Rust.
//!
//! The scanner recurses once per nested array or object, and the text comes
//! from users (a `json` column built in PL/pgSQL is never parsed, so nothing
//! bounded its depth before us). Before it enters a container it asks a
//! [`DepthProbe`] whether the stack may grow: in a backend that is
//! PostgreSQL's own `stack_is_too_deep()` (`max_stack_depth`), in pure code
//! [`depth_limit`]. A value too deep is [`JsonError::TooDeep`], never a
//! stack overflow.

use super::canonical::write_string;
use super::canonical_number::write_canonical_number;
use std::borrow::Cow;

/// Asked before the scanner enters a nested array or object, with the
/// depth it would reach (the outermost container is 1): `true` stops the
/// scan with [`JsonError::TooDeep`]. The glue passes PostgreSQL's stack
/// check (`pgutil::stack_too_deep`); pure code passes [`depth_limit`].
pub type DepthProbe<'p> = &'p dyn Fn(usize) -> bool;

/// Nesting the pure entry points accept ([`depth_limit`]): far more than
/// any row image holds, far less than a test thread's stack allows.
pub const PURE_DEPTH_LIMIT: usize = 256;

/// The probe of code outside a backend: deeper than [`PURE_DEPTH_LIMIT`]
/// is too deep.
pub fn depth_limit(depth: usize) -> bool {
    depth > PURE_DEPTH_LIMIT
}

/// Text that is not the JSON it should be, or JSON nested deeper than the
/// probe allows.
#[derive(Debug, PartialEq)]
pub enum JsonError {
    Invalid(String),
    /// The probe refused to enter a container at this depth.
    TooDeep {
        depth: usize,
    },
}

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JsonError::Invalid(what) => f.write_str(what),
            // Not the depth: where the stack runs out varies with the build
            // and the platform, and the message should not.
            JsonError::TooDeep { .. } => f.write_str(
                "its arrays and objects nest deeper than the stack depth limit (max_stack_depth) lets them be read",
            ),
        }
    }
}

/// The canonical text of one JSON value given as text (a json or jsonb
/// column, an array or a nested row as PostgreSQL writes them).
pub fn canonical_value(text: &str, too_deep: DepthProbe<'_>) -> Result<String, JsonError> {
    let mut sc = Scanner::new(text, too_deep);
    let mut out = String::with_capacity(text.len());
    sc.ws();
    sc.value(&mut out)?;
    sc.ws();
    if sc.pos != sc.b.len() {
        return Err(sc.error("text after the value"));
    }
    Ok(out)
}

/// What [`walk`] reports of a JSON value, in document order. Strings and
/// keys arrive decoded.
pub trait JsonEvents {
    fn begin(&mut self, object: bool);
    fn end(&mut self, object: bool);
    fn key(&mut self, key: &str);
    fn string(&mut self, value: &str);
    fn number(&mut self, text: &str);
    /// `true`, `false` or `null`.
    fn literal(&mut self, word: &str);
}

/// Reads one JSON value (a member's text) and reports it to `events`.
pub fn walk(
    text: &str,
    events: &mut impl JsonEvents,
    too_deep: DepthProbe<'_>,
) -> Result<(), JsonError> {
    let mut sc = Scanner::new(text, too_deep);
    sc.ws();
    sc.events(events)?;
    sc.ws();
    if sc.pos != sc.b.len() {
        return Err(sc.error("text after the value"));
    }
    Ok(())
}

/// Sorted by key bytes; of equal keys the last one stays (as in jsonb and
/// serde_json).
pub(super) fn canonical_order<T>(mut members: Vec<T>) -> Vec<T>
where
    T: KeyOf,
{
    members.reverse();
    members.sort_by(|a, b| a.key().as_bytes().cmp(b.key().as_bytes()));
    members.dedup_by(|a, b| a.key() == b.key());
    members
}

pub(super) trait KeyOf {
    fn key(&self) -> &str;
}

impl KeyOf for (Cow<'_, str>, String) {
    fn key(&self) -> &str {
        &self.0
    }
}

/// A forward-only reader of JSON text that writes canonical text as it
/// goes.
pub(super) struct Scanner<'a> {
    src: &'a str,
    b: &'a [u8],
    pos: usize,
    /// Containers open around the current position.
    depth: usize,
    too_deep: DepthProbe<'a>,
}

impl<'a> Scanner<'a> {
    pub(super) fn new(text: &'a str, too_deep: DepthProbe<'a>) -> Scanner<'a> {
        Scanner {
            src: text,
            b: text.as_bytes(),
            pos: 0,
            depth: 0,
            too_deep,
        }
    }

    /// Before a container is read (and the scanner recurses into it): one
    /// level deeper, if the probe allows.
    fn enter(&mut self) -> Result<(), JsonError> {
        self.depth += 1;
        if (self.too_deep)(self.depth) {
            return Err(JsonError::TooDeep { depth: self.depth });
        }
        Ok(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }

    /// Whether all of the text has been read.
    pub(super) fn at_end(&self) -> bool {
        self.pos == self.b.len()
    }

    pub(super) fn error(&self, what: &str) -> JsonError {
        JsonError::Invalid(format!("invalid JSON at byte {}: {what}", self.pos))
    }

    pub(super) fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    pub(super) fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    pub(super) fn expect(&mut self, c: u8) -> Result<(), JsonError> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected '{}'", c as char)))
        }
    }

    /// An object's members: `each(key, value start, value end, canonical)`.
    pub(super) fn object(
        &mut self,
        mut each: impl FnMut(String, usize, usize, String),
    ) -> Result<(), JsonError> {
        self.expect(b'{')?;
        self.enter()?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            self.leave();
            return Ok(());
        }
        loop {
            self.ws();
            let key = self.string()?.into_owned();
            self.ws();
            self.expect(b':')?;
            self.ws();
            let start = self.pos;
            let mut canonical = String::new();
            self.value(&mut canonical)?;
            each(key, start, self.pos, canonical);
            self.ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    self.leave();
                    return Ok(());
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    pub(super) fn value(&mut self, out: &mut String) -> Result<(), JsonError> {
        match self.peek() {
            Some(b'{') => {
                let mut members: Vec<(Cow<'_, str>, String)> = Vec::new();
                self.object(|k, _, _, c| members.push((k.into(), c)))?;
                out.push('{');
                for (i, (k, c)) in canonical_order(members).iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_string(k, out);
                    out.push(':');
                    out.push_str(c);
                }
                out.push('}');
            }
            Some(b'[') => {
                self.pos += 1;
                self.enter()?;
                self.ws();
                out.push('[');
                if self.peek() == Some(b']') {
                    self.pos += 1;
                } else {
                    loop {
                        self.ws();
                        self.value(out)?;
                        self.ws();
                        match self.peek() {
                            Some(b',') => {
                                self.pos += 1;
                                out.push(',');
                            }
                            Some(b']') => {
                                self.pos += 1;
                                break;
                            }
                            _ => return Err(self.error("expected ',' or ']'")),
                        }
                    }
                }
                out.push(']');
                self.leave();
            }
            Some(b'"') => {
                let s = self.string()?;
                write_string(&s, out);
            }
            Some(b't') => self.literal("true", out)?,
            Some(b'f') => self.literal("false", out)?,
            Some(b'n') => self.literal("null", out)?,
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                while matches!(
                    self.peek(),
                    Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                ) {
                    self.pos += 1;
                }
                write_canonical_number(&self.src[start..self.pos], out);
            }
            _ => return Err(self.error("expected a value")),
        }
        Ok(())
    }

    pub(super) fn events(&mut self, ev: &mut impl JsonEvents) -> Result<(), JsonError> {
        match self.peek() {
            Some(c @ (b'{' | b'[')) => {
                let object = c == b'{';
                let close = if object { b'}' } else { b']' };
                self.pos += 1;
                self.enter()?;
                ev.begin(object);
                self.ws();
                if self.peek() == Some(close) {
                    self.pos += 1;
                } else {
                    loop {
                        self.ws();
                        if object {
                            let key = self.string()?;
                            ev.key(&key);
                            self.ws();
                            self.expect(b':')?;
                            self.ws();
                        }
                        self.events(ev)?;
                        self.ws();
                        match self.peek() {
                            Some(b',') => self.pos += 1,
                            Some(c) if c == close => {
                                self.pos += 1;
                                break;
                            }
                            _ => return Err(self.error("expected ',' or the end of the container")),
                        }
                    }
                }
                ev.end(object);
                self.leave();
            }
            Some(b'"') => {
                let s = self.string()?;
                ev.string(&s);
            }
            Some(b't' | b'f' | b'n') => {
                let mut word = String::new();
                let c = self.peek();
                self.literal(
                    if c == Some(b't') {
                        "true"
                    } else if c == Some(b'f') {
                        "false"
                    } else {
                        "null"
                    },
                    &mut word,
                )?;
                ev.literal(&word);
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                while matches!(
                    self.peek(),
                    Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
                ) {
                    self.pos += 1;
                }
                ev.number(&self.src[start..self.pos]);
            }
            _ => return Err(self.error("expected a value")),
        }
        Ok(())
    }

    pub(super) fn literal(&mut self, word: &str, out: &mut String) -> Result<(), JsonError> {
        if self.b[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            out.push_str(word);
            Ok(())
        } else {
            Err(self.error("expected true, false or null"))
        }
    }

    /// A string's value: borrowed when it has no escapes.
    pub(super) fn string(&mut self) -> Result<Cow<'a, str>, JsonError> {
        self.expect(b'"')?;
        let start = self.pos;
        while let Some(c) = self.peek() {
            match c {
                b'"' => {
                    self.pos += 1;
                    return Ok(Cow::Borrowed(&self.src[start..self.pos - 1]));
                }
                b'\\' => break,
                _ => self.pos += 1,
            }
        }
        let mut out = String::from(&self.src[start..self.pos]);
        loop {
            match self.peek() {
                None => return Err(self.error("unterminated string")),
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = self
                        .peek()
                        .ok_or_else(|| self.error("unterminated escape"))?;
                    self.pos += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let high = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&high) {
                                if !self.b[self.pos..].starts_with(b"\\u") {
                                    return Err(self.error("lone surrogate"));
                                }
                                self.pos += 2;
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return Err(self.error("lone surrogate"));
                                }
                                0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                            } else {
                                high
                            };
                            out.push(
                                char::from_u32(code).ok_or_else(|| self.error("lone surrogate"))?,
                            );
                        }
                        _ => return Err(self.error("unknown escape")),
                    }
                }
                Some(_) => {
                    // Copy up to the next quote or escape (whole UTF-8 runs).
                    let start = self.pos;
                    while !matches!(self.peek(), None | Some(b'"' | b'\\')) {
                        self.pos += 1;
                    }
                    out.push_str(&self.src[start..self.pos]);
                }
            }
        }
    }

    pub(super) fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self
            .src
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.error("short \\u escape"))?;
        let v = u32::from_str_radix(digits, 16).map_err(|_| self.error("bad \\u escape"))?;
        self.pos += 4;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};

    /// Rebuilds a value tree from events, as the jsonb builder sees them.
    #[derive(Default)]
    struct Tree {
        stack: Vec<(Value, Option<String>)>,
        key: Option<String>,
        root: Option<Value>,
    }
    impl Tree {
        fn attach(&mut self, v: Value) {
            match self.stack.last_mut() {
                None => self.root = Some(v),
                Some((Value::Object(m), _)) => {
                    m.insert(self.key.take().unwrap(), v);
                }
                Some((Value::Array(a), _)) => a.push(v),
                Some(_) => unreachable!(),
            }
        }
    }
    impl JsonEvents for Tree {
        fn begin(&mut self, object: bool) {
            let c = if object {
                Value::Object(Map::new())
            } else {
                Value::Array(Vec::new())
            };
            self.stack.push((c, self.key.take()));
        }
        fn end(&mut self, _object: bool) {
            let (v, key) = self.stack.pop().unwrap();
            self.key = key;
            self.attach(v);
        }
        fn key(&mut self, key: &str) {
            self.key = Some(key.to_string());
        }
        fn string(&mut self, value: &str) {
            self.attach(Value::String(value.to_string()));
        }
        fn number(&mut self, text: &str) {
            self.attach(serde_json::from_str(text).unwrap());
        }
        fn literal(&mut self, word: &str) {
            self.attach(serde_json::from_str(word).unwrap());
        }
    }

    #[test]
    fn walk_reports_every_value_decoded() {
        let text =
            r#" {"a" : [1, -2.50e+3, "x\"\u00e9", true, null, {}], "b": {"c": []}, "k\n": false} "#;
        let mut tree = Tree::default();
        walk(text, &mut tree, &depth_limit).unwrap();
        // Numbers keep their spelling (arbitrary_precision compares the text).
        assert_eq!(
            tree.root.unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        assert!(walk("[1,]", &mut Tree::default(), &depth_limit).is_err());
        assert!(walk("1 2", &mut Tree::default(), &depth_limit).is_err());
    }

    #[test]
    fn canonical_value_rejects_what_is_not_one_value() {
        assert_eq!(
            canonical_value(" {\"b\": 1.50, \"a\": [true, null]} ", &depth_limit).unwrap(),
            r#"{"a":[true,null],"b":15e-1}"#
        );
        assert!(canonical_value("1 2", &depth_limit).is_err());
        assert!(canonical_value("{", &depth_limit).is_err());
        assert!(canonical_value("", &depth_limit).is_err());
    }

    /// A probe as PostgreSQL's `stack_is_too_deep()` works: how far the
    /// stack has grown since the probe was made, against a budget.
    fn stack_probe(budget: usize) -> impl Fn(usize) -> bool {
        let base = stack_address();
        move |_| base.abs_diff(stack_address()) > budget
    }

    #[inline(never)]
    fn stack_address() -> usize {
        let marker = 0u8;
        std::hint::black_box(&marker) as *const u8 as usize
    }

    /// Runs `f` in a thread with a 256 kB stack: a recursion the probe did
    /// not stop would overflow it (and abort the test run) long before
    /// 100,000 levels.
    fn on_small_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap()
    }

    const DEEP: usize = 100_000;

    fn deep_array() -> String {
        format!("{}1{}", "[".repeat(DEEP), "]".repeat(DEEP))
    }

    fn deep_object() -> String {
        format!("{}1{}", "{\"a\":".repeat(DEEP), "}".repeat(DEEP))
    }

    #[test]
    fn deep_values_stop_at_the_probe_not_the_stack() {
        let (array, object, events) = on_small_stack(|| {
            let probe = stack_probe(128 * 1024);
            (
                canonical_value(&deep_array(), &probe),
                canonical_value(&deep_object(), &probe),
                walk(&deep_array(), &mut Tree::default(), &probe),
            )
        });
        for r in [array.map(drop), object.map(drop), events] {
            match r {
                Err(JsonError::TooDeep { depth }) => assert!(depth > 10 && depth < DEEP, "{depth}"),
                other => panic!("expected TooDeep, got {other:?}"),
            }
        }
        // A counting probe stops at its depth exactly.
        assert_eq!(
            canonical_value(&deep_array(), &|d| d > 100),
            Err(JsonError::TooDeep { depth: 101 })
        );
    }

    #[test]
    fn depth_counts_nesting_not_containers() {
        // A thousand sibling arrays are one level: object, array, arrays = 3.
        let wide = format!("{{\"a\": [{}]}}", vec!["[1]"; 1000].join(","));
        let three = |d: usize| d > 3;
        assert!(canonical_value(&wide, &three).is_ok());
        assert!(walk(&wide, &mut Tree::default(), &three).is_ok());
        assert_eq!(
            canonical_value("[[[[1]]]]", &three),
            Err(JsonError::TooDeep { depth: 4 })
        );
        assert_eq!(canonical_value("[[[1]]]", &three).unwrap(), "[[[1]]]");
        // The pure limit: generous for rows, bounded for the stack.
        let at_limit = format!(
            "{}{}",
            "[".repeat(PURE_DEPTH_LIMIT),
            "]".repeat(PURE_DEPTH_LIMIT)
        );
        assert!(canonical_value(&at_limit, &depth_limit).is_ok());
        assert!(matches!(
            canonical_value(&format!("[{at_limit}]"), &depth_limit),
            Err(JsonError::TooDeep { .. })
        ));
    }
}
