//! Pure logic of the audit trail: canonical JSON, row and seal hashes and
//! the changed-columns diff. No pgrx types, so
//! `cargo test` and proptest cover all of it.
//!
//! Canonical JSON (what a row hash is taken over): objects with keys sorted by
//! their UTF-8 bytes, no whitespace, strings escaped as serde_json escapes
//! them, and numbers written by value (see [`canonical_number`]), so a value
//! hashes the same whether the trigger wrote it (as `row_to_json` would) or
//! `jsonb` output gives it when it is verified.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fmt::Write;

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

/// Whether `text` is a JSON number (RFC 8259 grammar), the test PostgreSQL's
/// `IsValidJsonNumber` applies before writing a number unquoted: `NaN` and
/// `Infinity` are not, so `row_to_json` writes them as strings.
pub fn is_json_number(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i > start
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if !digits(&mut i) {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !digits(&mut i) {
            return false;
        }
    }
    i == b.len()
}

/// The canonical text of one JSON value given as text (a json or jsonb
/// column, an array or a nested row as PostgreSQL writes them).
pub fn canonical_value(text: &str) -> Result<String, JsonError> {
    let mut sc = Scanner { src: text, b: text.as_bytes(), pos: 0 };
    let mut out = String::with_capacity(text.len());
    sc.ws();
    sc.value(&mut out)?;
    sc.ws();
    if sc.pos != sc.b.len() {
        return Err(sc.error("text after the value"));
    }
    Ok(out)
}

/// A JSON number written by its value: `[-]DIGITS[eEXP]` with no leading or
/// trailing zeros in DIGITS, so `1.50`, `1.5` and `15e-1` are all `15e-1`,
/// and `-0.0` is `0`. jsonb turns float input such as `1e+100` into a numeric
/// with a different text; both sides agree on this form. Text that is not a
/// JSON number is returned unchanged (it cannot come from PostgreSQL).
pub fn canonical_number(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    write_canonical_number(text, &mut out);
    out
}

/// [`canonical_number`] appended to `out` (per number of every audited row,
/// so without intermediate strings).
fn write_canonical_number(text: &str, out: &mut String) {
    let (negative, rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text),
    };
    let (mantissa, exp_text) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let mut exponent: i64 = match exp_text {
        Some(e) => match e.strip_prefix('+').unwrap_or(e).parse::<i64>() {
            Ok(v) => v,
            Err(_) => return out.push_str(text),
        },
        None => 0,
    };
    let (int_part, frac_part) = match mantissa.find('.') {
        Some(i) => (mantissa[..i].as_bytes(), mantissa[i + 1..].as_bytes()),
        None => (mantissa.as_bytes(), &b""[..]),
    };
    if int_part.is_empty() || !int_part.iter().chain(frac_part).all(u8::is_ascii_digit) {
        return out.push_str(text);
    }
    // The digits are int_part then frac_part; strip zeros at both ends.
    let total = int_part.len() + frac_part.len();
    let digit =
        |i: usize| if i < int_part.len() { int_part[i] } else { frac_part[i - int_part.len()] };
    let first = (0..total).find(|&i| digit(i) != b'0');
    let Some(first) = first else {
        return out.push('0');
    };
    let last = (first..total).rev().find(|&i| digit(i) != b'0').unwrap_or(first);
    exponent += (total - 1 - last) as i64 - frac_part.len() as i64;
    if negative {
        out.push('-');
    }
    out.extend((first..=last).map(|i| char::from(digit(i))));
    if exponent != 0 {
        let _ = write!(out, "e{exponent}");
    }
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
    pub record_key: Option<JsonObject>,
    pub old_values: Option<JsonObject>,
    pub new_values: Option<JsonObject>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    pub request_method: Option<String>,
    pub request_path: Option<String>,
    pub txid: i64,
}

impl AuditRecord {
    /// The canonical JSON document the row hash is taken over: the object
    /// of all fields, written straight from the parts (the row images are
    /// canonical already), the same text [`canonical_json`] gives.
    pub fn canonical(&self) -> String {
        let images = [&self.record_key, &self.old_values, &self.new_values];
        let capacity = 400
            + images
                .iter()
                .filter_map(|v| v.as_ref())
                .map(JsonObject::canonical_len)
                .sum::<usize>();
        let mut w = ObjectWriter { out: String::with_capacity(capacity), first: true };
        // Keys in byte order, written straight into one buffer (this runs
        // per audited row); the oracle test compares it with a sorted map.
        w.text("actor_id", self.actor_id.as_deref());
        w.text("actor_role", self.actor_role.as_deref());
        w.text("client_ip", self.client_ip.as_deref());
        w.number("id", self.id);
        w.number("logged_at", self.logged_at_unix_micros);
        w.object("new_values", &self.new_values);
        w.object("old_values", &self.old_values);
        w.text("operation", Some(&self.operation));
        w.object("record_key", &self.record_key);
        w.text("request_id", self.request_id.as_deref());
        w.text("request_method", self.request_method.as_deref());
        w.text("request_path", self.request_path.as_deref());
        w.text("schema_name", Some(&self.schema_name));
        w.text("table_name", Some(&self.table_name));
        w.text("tenant_id", Some(&self.tenant_id));
        w.number("txid", self.txid);
        w.text("user_agent", self.user_agent.as_deref());
        w.out.push('}');
        w.out
    }

    pub fn hash(&self) -> Hash {
        sha256(self.canonical().as_bytes())
    }
}

/// Writes a canonical object whose keys the caller gives in byte order.
struct ObjectWriter {
    out: String,
    first: bool,
}

impl ObjectWriter {
    fn key(&mut self, key: &str) {
        self.out.push(if self.first { '{' } else { ',' });
        self.first = false;
        write_string(key, &mut self.out);
        self.out.push(':');
    }

    fn text(&mut self, key: &str, value: Option<&str>) {
        self.key(key);
        match value {
            Some(v) => write_string(v, &mut self.out),
            None => self.out.push_str("null"),
        }
    }

    fn number(&mut self, key: &str, value: i64) {
        self.key(key);
        write_canonical_number(&value.to_string(), &mut self.out);
    }

    fn object(&mut self, key: &str, value: &Option<JsonObject>) {
        self.key(key);
        match value {
            Some(v) => v.write(&mut self.out, |m| &m.canonical),
            None => self.out.push_str("null"),
        }
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
    pub old_values: Option<JsonObject>,
    pub new_values: Option<JsonObject>,
}

/// Old and new row images as the log stores them. For UPDATE with
/// `changed_only`, both images keep just the columns whose values differ;
/// a value differs when PostgreSQL writes it differently (so 1.5 and 1.50
/// differ, as the row does).
pub fn change_of(
    old: Option<JsonObject>,
    new: Option<JsonObject>,
    ignored: &[String],
    changed_only: bool,
) -> Option<Change> {
    let strip = |mut m: JsonObject| {
        if !ignored.is_empty() {
            m.retain(|k| !ignored.iter().any(|i| i == k));
        }
        m
    };
    match (old.map(strip), new.map(strip)) {
        (Some(mut o), Some(mut n)) => {
            let same = |a: &JsonObject, b: &JsonObject, key: &str| {
                a.get(key).map(|m| &m.text) == b.get(key).map(|m| &m.text)
            };
            let changed: Vec<String> =
                n.keys().chain(o.keys()).filter(|k| !same(&o, &n, k)).map(str::to_owned).collect();
            if changed.is_empty() {
                return None;
            }
            if changed_only {
                o.retain(|k| changed.iter().any(|c| c == k));
                n.retain(|k| changed.iter().any(|c| c == k));
            }
            Some(Change { old_values: Some(o), new_values: Some(n) })
        }
        (o, n) => Some(Change { old_values: o, new_values: n }),
    }
}

/// The record's key: its primary-key columns, or the whole row when the table
/// has none (audit_enable says so in a NOTICE).
pub fn record_key(row: &JsonObject, key_columns: &[String]) -> JsonObject {
    if key_columns.is_empty() {
        return row.clone();
    }
    let mut members: Vec<Member> = key_columns
        .iter()
        .map(|col| {
            row.get(col).cloned().unwrap_or_else(|| Member {
                key: col.clone(),
                text: "null".into(),
                canonical: "null".into(),
            })
        })
        .collect();
    members.sort_by(|a, b| a.key.as_bytes().cmp(b.key.as_bytes()));
    members.dedup_by(|a, b| a.key == b.key);
    JsonObject { members }
}

// ---------------------------------------------------------------------------
// Row images without a JSON tree
// ---------------------------------------------------------------------------

/// A JSON object as the log keeps it: for each member the text it came in
/// (what `jsonb` input gets, so values keep their spelling, e.g. 1.50) and
/// its canonical text (what the hash covers), in canonical key order. Built
/// member by member from a tuple in the trigger, parsed from `jsonb` output
/// when verifying; no tree of values either way.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct JsonObject {
    members: Vec<Member>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub key: String,
    pub text: String,
    pub canonical: String,
}

/// Text that is not the JSON object it should be.
#[derive(Debug, PartialEq)]
pub struct JsonError(pub String);

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonObject {
    pub fn parse(text: &str) -> Result<JsonObject, JsonError> {
        let mut sc = Scanner { src: text, b: text.as_bytes(), pos: 0 };
        sc.ws();
        let mut members = Vec::new();
        sc.object(|key, start, end, canonical| {
            members.push(Member { key, text: text[start..end].to_string(), canonical });
        })?;
        sc.ws();
        if sc.pos != sc.b.len() {
            return Err(sc.error("text after the object"));
        }
        Ok(JsonObject { members: canonical_order(members) })
    }

    /// An object of `members` (any order; of equal keys the last stays).
    pub fn from_members(members: Vec<Member>) -> JsonObject {
        JsonObject { members: canonical_order(members) }
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
            self.members.iter().map(|m| m.key.len() + m.text.len() + 4).sum::<usize>() + 2,
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
    fn canonical_len(&self) -> usize {
        self.members.iter().map(|m| m.key.len() + m.canonical.len() + 4).sum::<usize>() + 2
    }

    fn write(&self, out: &mut String, value: impl Fn(&Member) -> &String) {
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
        let mut sc = Scanner { src: &self.text, b: self.text.as_bytes(), pos: 0 };
        (sc.peek() == Some(b'"')).then(|| sc.string().ok().map(|s| s.into_owned())).flatten()
    }
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
pub fn walk(text: &str, events: &mut impl JsonEvents) -> Result<(), JsonError> {
    let mut sc = Scanner { src: text, b: text.as_bytes(), pos: 0 };
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
fn canonical_order<T>(mut members: Vec<T>) -> Vec<T>
where
    T: KeyOf,
{
    members.reverse();
    members.sort_by(|a, b| a.key().as_bytes().cmp(b.key().as_bytes()));
    members.dedup_by(|a, b| a.key() == b.key());
    members
}

trait KeyOf {
    fn key(&self) -> &str;
}

impl KeyOf for Member {
    fn key(&self) -> &str {
        &self.key
    }
}

impl KeyOf for (std::borrow::Cow<'_, str>, String) {
    fn key(&self) -> &str {
        &self.0
    }
}

/// A forward-only reader of JSON text that writes canonical text as it
/// goes.
struct Scanner<'a> {
    src: &'a str,
    b: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn error(&self, what: &str) -> JsonError {
        JsonError(format!("invalid JSON at byte {}: {what}", self.pos))
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), JsonError> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected '{}'", c as char)))
        }
    }

    /// An object's members: `each(key, value start, value end, canonical)`.
    fn object(
        &mut self,
        mut each: impl FnMut(String, usize, usize, String),
    ) -> Result<(), JsonError> {
        self.expect(b'{')?;
        self.ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
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
                    return Ok(());
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn value(&mut self, out: &mut String) -> Result<(), JsonError> {
        match self.peek() {
            Some(b'{') => {
                let mut members: Vec<(std::borrow::Cow<'_, str>, String)> = Vec::new();
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
                while matches!(self.peek(), Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')) {
                    self.pos += 1;
                }
                write_canonical_number(&self.src[start..self.pos], out);
            }
            _ => return Err(self.error("expected a value")),
        }
        Ok(())
    }

    fn events(&mut self, ev: &mut impl JsonEvents) -> Result<(), JsonError> {
        match self.peek() {
            Some(c @ (b'{' | b'[')) => {
                let object = c == b'{';
                let close = if object { b'}' } else { b']' };
                self.pos += 1;
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
                while matches!(self.peek(), Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')) {
                    self.pos += 1;
                }
                ev.number(&self.src[start..self.pos]);
            }
            _ => return Err(self.error("expected a value")),
        }
        Ok(())
    }

    fn literal(&mut self, word: &str, out: &mut String) -> Result<(), JsonError> {
        if self.b[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            out.push_str(word);
            Ok(())
        } else {
            Err(self.error("expected true, false or null"))
        }
    }

    /// A string's value: borrowed when it has no escapes.
    fn string(&mut self) -> Result<std::borrow::Cow<'a, str>, JsonError> {
        self.expect(b'"')?;
        let start = self.pos;
        while let Some(c) = self.peek() {
            match c {
                b'"' => {
                    self.pos += 1;
                    return Ok(std::borrow::Cow::Borrowed(&self.src[start..self.pos - 1]));
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
                    return Ok(std::borrow::Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = self.peek().ok_or_else(|| self.error("unterminated escape"))?;
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

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits =
            self.src.get(self.pos..self.pos + 4).ok_or_else(|| self.error("short \\u escape"))?;
        let v = u32::from_str_radix(digits, 16).map_err(|_| self.error("bad \\u escape"))?;
        self.pos += 4;
        Ok(v)
    }
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
        assert_eq!(
            canonical_number("123456789012345678901234567890"),
            "12345678901234567890123456789e1"
        );
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

    fn obj(text: &str) -> JsonObject {
        JsonObject::parse(text).unwrap()
    }

    fn text_of(v: &Option<JsonObject>) -> Option<String> {
        v.as_ref().map(JsonObject::text)
    }

    #[test]
    fn update_of_ignored_columns_only_writes_nothing() {
        let old = obj(r#"{"id": 1, "name": "a", "updated_at": "t1"}"#);
        let new = obj(r#"{"id": 1, "name": "a", "updated_at": "t2"}"#);
        assert_eq!(
            change_of(Some(old.clone()), Some(new.clone()), &["updated_at".into()], true),
            None
        );
        let c = change_of(Some(old), Some(new), &[], true).unwrap();
        assert_eq!(text_of(&c.old_values).as_deref(), Some(r#"{"updated_at":"t1"}"#));
        assert_eq!(text_of(&c.new_values).as_deref(), Some(r#"{"updated_at":"t2"}"#));
    }

    #[test]
    fn full_images_keep_every_column_but_ignored_ones() {
        let old = obj(r#"{"id": 1, "name": "a", "secret": "s"}"#);
        let new = obj(r#"{"id": 1, "name": "b", "secret": "s2"}"#);
        let c = change_of(Some(old), Some(new), &["secret".into()], false).unwrap();
        assert_eq!(text_of(&c.old_values).as_deref(), Some(r#"{"id":1,"name":"a"}"#));
        assert_eq!(text_of(&c.new_values).as_deref(), Some(r#"{"id":1,"name":"b"}"#));
        let ins =
            change_of(None, Some(obj(r#"{"id": 2, "secret": "x"}"#)), &["secret".into()], true)
                .unwrap();
        assert_eq!(ins.old_values, None);
        assert_eq!(text_of(&ins.new_values).as_deref(), Some(r#"{"id":2}"#));
    }

    #[test]
    fn a_value_changes_when_postgresql_writes_it_differently() {
        // numeric 1.5 -> 1.50 is an UPDATE of the row; json keeps its spacing.
        let c = change_of(
            Some(obj(r#"{"n": 1.5, "j": {"a":1}}"#)),
            Some(obj(r#"{"n": 1.50, "j": {"a": 1}}"#)),
            &[],
            true,
        )
        .unwrap();
        assert_eq!(text_of(&c.new_values).as_deref(), Some(r#"{"j":{"a": 1},"n":1.50}"#));
        // ... and both spellings hash alike.
        assert_eq!(c.old_values.unwrap().canonical(), c.new_values.unwrap().canonical());
        // A column that disappears counts as changed.
        let gone = change_of(Some(obj(r#"{"a": 1, "b": 2}"#)), Some(obj(r#"{"a": 1}"#)), &[], true)
            .unwrap();
        assert_eq!(text_of(&gone.old_values).as_deref(), Some(r#"{"b":2}"#));
    }

    #[test]
    fn record_key_falls_back_to_the_row() {
        let row = obj(r#"{"a": 1, "b": 2}"#);
        assert_eq!(record_key(&row, &["b".into()]).text(), r#"{"b":2}"#);
        assert_eq!(record_key(&row, &["b".into(), "zz".into()]).text(), r#"{"b":2,"zz":null}"#);
        assert_eq!(record_key(&row, &[]).text(), r#"{"a":1,"b":2}"#);
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
        assert_eq!(row.get("e").unwrap().as_string().as_deref(), Some("a\"b\u{e9}\u{1f600}"));
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
            let c = if object { Value::Object(Map::new()) } else { Value::Array(Vec::new()) };
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
        walk(text, &mut tree).unwrap();
        // Numbers keep their spelling (arbitrary_precision compares the text).
        assert_eq!(tree.root.unwrap(), serde_json::from_str::<Value>(text).unwrap());
        assert!(walk("[1,]", &mut Tree::default()).is_err());
        assert!(walk("1 2", &mut Tree::default()).is_err());
    }

    #[test]
    fn duplicate_keys_keep_the_last_as_jsonb_does() {
        let row = obj(r#"{"j": {"a": 1, "b": 0, "a": 2}}"#);
        let oracle: Value = serde_json::from_str(r#"{"j": {"a": 1, "b": 0, "a": 2}}"#).unwrap();
        assert_eq!(row.canonical(), canonical_json(&oracle));
        assert_eq!(row.canonical(), r#"{"j":{"a":2,"b":0}}"#);
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
            record_key: Some(obj(r#"{"id": 1}"#)),
            old_values: Some(obj(r#"{"body": "a"}"#)),
            new_values: Some(obj(r#"{"body": "b", "n": 1.50, "t": "\u0001\n"}"#)),
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
        let mut r = base.clone();
        r.id = 8;
        edits.push(r);
        let mut r = base.clone();
        r.txid = 1235;
        edits.push(r);
        let mut r = base.clone();
        r.logged_at_unix_micros += 1;
        edits.push(r);
        let mut r = base.clone();
        r.new_values = Some(obj(r#"{"body": "c"}"#));
        edits.push(r);
        let mut r = base.clone();
        r.actor_id = Some("x".into());
        edits.push(r);
        let mut r = base.clone();
        r.client_ip = None;
        edits.push(r);
        let mut r = base.clone();
        r.tenant_id = "00000000-0000-0000-0000-000000000002".into();
        edits.push(r);
        for e in edits {
            assert_ne!(e.hash(), h, "{e:?}");
        }
        assert_eq!(base.clone().hash(), h);
    }

    /// The row hash as it was defined first: the object of all fields as
    /// serde_json values, through [`canonical_json`].
    fn oracle_canonical(r: &AuditRecord) -> String {
        let opt = |v: &Option<String>| v.as_ref().map_or(Value::Null, |s| Value::String(s.clone()));
        let json = |v: &Option<JsonObject>| {
            v.as_ref().map_or(Value::Null, |o| serde_json::from_str(&o.text()).unwrap())
        };
        let mut m = Map::new();
        m.insert("id".into(), Value::from(r.id));
        m.insert("tenant_id".into(), Value::String(r.tenant_id.clone()));
        m.insert("logged_at".into(), Value::from(r.logged_at_unix_micros));
        m.insert("actor_id".into(), opt(&r.actor_id));
        m.insert("actor_role".into(), opt(&r.actor_role));
        m.insert("operation".into(), Value::String(r.operation.clone()));
        m.insert("schema_name".into(), Value::String(r.schema_name.clone()));
        m.insert("table_name".into(), Value::String(r.table_name.clone()));
        m.insert("record_key".into(), json(&r.record_key));
        m.insert("old_values".into(), json(&r.old_values));
        m.insert("new_values".into(), json(&r.new_values));
        m.insert("client_ip".into(), opt(&r.client_ip));
        m.insert("user_agent".into(), opt(&r.user_agent));
        m.insert("request_id".into(), opt(&r.request_id));
        m.insert("request_method".into(), opt(&r.request_method));
        m.insert("request_path".into(), opt(&r.request_path));
        m.insert("txid".into(), Value::from(r.txid));
        canonical_json(&Value::Object(m))
    }

    #[test]
    fn record_canonical_is_the_canonical_json_of_its_fields() {
        let mut r = record();
        assert_eq!(r.canonical(), oracle_canonical(&r));
        r.user_agent = Some("Mozilla \"quoted\" \u{7}".into());
        r.old_values = None;
        r.id = -5;
        assert_eq!(r.canonical(), oracle_canonical(&r));
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

    fn json_value() -> impl Strategy<Value = Value> {
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

        // A value's canonical text equals the tree-based definition, and an
        // object built member by member (as the trigger builds row images
        // from a tuple) equals the same object parsed from its text.
        #[test]
        fn values_and_members_canonicalise_like_trees(
            members in proptest::collection::btree_map("[a-z_\"é]{0,8}", json_value(), 0..8),
            value in json_value(),
        ) {
            let text = serde_json::to_string_pretty(&value).unwrap();
            prop_assert_eq!(canonical_value(&text).unwrap(), canonical_json(&value));
            let built = JsonObject::from_members(members.iter().rev().map(|(k, v)| {
                let text = serde_json::to_string(v).unwrap();
                Member { key: k.clone(), canonical: canonical_value(&text).unwrap(), text }
            }).collect());
            let object = Value::Object(members.into_iter().collect());
            prop_assert_eq!(built.clone(), JsonObject::parse(&serde_json::to_string(&object).unwrap()).unwrap());
            prop_assert_eq!(built.canonical(), canonical_json(&object));
        }

        // json_string writes what serde_json writes (and escape_json: the
        // same escapes, lowercase \u00xx below 0x20).
        #[test]
        fn json_string_escapes_like_serde(s in "\\PC{0,12}|[\\x00-\\x20\"\\\\a]{0,8}") {
            prop_assert_eq!(json_string(&s), serde_json::to_string(&s).unwrap());
        }

        // Every number serde_json writes is a JSON number; appending junk
        // makes it not one.
        #[test]
        fn json_numbers_are_recognised(n in any::<f64>().prop_filter("finite", |f| f.is_finite()), i in any::<i64>()) {
            for text in [serde_json::to_string(&n).unwrap(), i.to_string(), format!("{n:e}")] {
                prop_assert!(is_json_number(&text), "{}", text);
                prop_assert!(!is_json_number(&format!("{text}x")), "{}x", text);
            }
        }
    }

    /// The first, straightforward canonical_number: the oracle for the
    /// allocation-free one (a different form would break stored hashes).
    fn canonical_number_reference(text: &str) -> String {
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
        if int_part.is_empty()
            || !int_part.bytes().chain(frac_part.bytes()).all(|b| b.is_ascii_digit())
        {
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
        format!(
            "{}{digits}{}",
            if negative { "-" } else { "" },
            if exponent != 0 { format!("e{exponent}") } else { String::new() }
        )
    }

    proptest! {
        #[test]
        fn canonical_number_matches_its_reference(text in "-?[0-9]{1,6}(\\.[0-9]{0,5})?([eE][+-]?[0-9]{1,3})?|[-+.eE0-9]{0,6}") {
            prop_assert_eq!(canonical_number(&text), canonical_number_reference(&text));
        }
    }

    #[test]
    fn json_number_grammar() {
        for ok in ["0", "-0", "1.50", "1e+100", "-1.5E-7", "10", "0.000001"] {
            assert!(is_json_number(ok), "{ok}");
        }
        // What float8out and numeric_out write for special values, and
        // spellings JSON does not allow.
        for bad in [
            "NaN",
            "Infinity",
            "-Infinity",
            "",
            "-",
            "01",
            "1.",
            ".5",
            "+1",
            "1e",
            "1e+",
            "0x10",
            "1 ",
        ] {
            assert!(!is_json_number(bad), "{bad}");
        }
    }

    #[test]
    fn canonical_value_rejects_what_is_not_one_value() {
        assert_eq!(
            canonical_value(" {\"b\": 1.50, \"a\": [true, null]} ").unwrap(),
            r#"{"a":[true,null],"b":15e-1}"#
        );
        assert!(canonical_value("1 2").is_err());
        assert!(canonical_value("{").is_err());
        assert!(canonical_value("").is_err());
    }
}
