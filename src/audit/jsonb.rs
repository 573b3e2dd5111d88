//! Datums of the log's columns built in Rust for the direct writer: text,
//! uuid, inet and, above all, jsonb straight from a row image's members
//! (pushJsonbValue), without jsonb_in lexing the text once more.

use super::json_object::JsonObject;
use super::json_scan::{walk, JsonError, JsonEvents};
use super::too_deep;
use crate::pgutil::stack_too_deep;
use pgrx::pg_sys;

/// Type input functions, called directly (pg_sys wraps its functions in
/// Rust; DirectFunctionCall needs the C symbols).
mod builtins {
    use pgrx::pg_sys::{Datum, FunctionCallInfo};
    unsafe extern "C-unwind" {
        pub fn jsonb_in(fcinfo: FunctionCallInfo) -> Datum;
        pub fn inet_in(fcinfo: FunctionCallInfo) -> Datum;
        pub fn numeric_in(fcinfo: FunctionCallInfo) -> Datum;
    }
}

/// Copies bytes into a palloc'd C string (what type input functions take).
///
/// # Safety
///
/// In a backend: the copy is palloc'd in the current memory context.
unsafe fn cstring(text: &str) -> pg_sys::Datum {
    // SAFETY: the caller upholds the contract under # Safety above.
    unsafe {
        let p = pg_sys::palloc(text.len() + 1) as *mut u8;
        std::ptr::copy_nonoverlapping(text.as_ptr(), p, text.len());
        *p.add(text.len()) = 0;
        pg_sys::Datum::from(p)
    }
}

/// # Safety
///
/// In a backend: the text datum is palloc'd in the current memory context.
pub(super) unsafe fn varlena(bytes: &[u8]) -> pg_sys::Datum {
    // SAFETY: the caller upholds the contract under # Safety above.
    unsafe {
        pg_sys::Datum::from(pg_sys::cstring_to_text_with_len(
            bytes.as_ptr() as *const _,
            bytes.len() as i32,
        ))
    }
}

/// # Safety
///
/// In a backend: the uuid datum is palloc'd in the current memory context.
pub(super) unsafe fn uuid(bytes: &[u8; 16]) -> pg_sys::Datum {
    // SAFETY: the caller upholds the contract under # Safety above.
    unsafe {
        let p = pg_sys::palloc(16) as *mut u8;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), p, 16);
        pg_sys::Datum::from(p)
    }
}

/// `text` as an i64 when it is written as a plain integer (`-?[0-9]+`,
/// no exponent or fraction, so `1.0` keeps its scale through numeric_in).
fn plain_integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// An inet datum of `text` (inet_in reports text that is not an address).
///
/// # Safety
///
/// In a backend; inet_in raises an ERROR for text that is not an address.
pub(super) unsafe fn inet(text: &str) -> pg_sys::Datum {
    // SAFETY: the caller upholds the contract under # Safety above.
    unsafe { input(builtins::inet_in, text) }
}

/// # Safety
///
/// `f` is a type input function that takes a C string (and raises an ERROR
/// for text it does not accept); the datum lives in the current memory context.
unsafe fn input(
    f: unsafe extern "C-unwind" fn(pg_sys::FunctionCallInfo) -> pg_sys::Datum,
    text: &str,
) -> pg_sys::Datum {
    // SAFETY: the caller upholds the contract under # Safety above.
    unsafe { pg_sys::DirectFunctionCall1Coll(Some(f), pg_sys::InvalidOid, cstring(text)) }
}

/// The jsonb of a row image, built from its members with pushJsonbValue:
/// jsonb_in would lex the text a character at a time once more. What only
/// jsonb_in may judge (a NUL in a string, a string too long for jsonb) goes
/// to jsonb_in, which reports it.
///
/// # Safety
///
/// In a backend: the jsonb datum and what it is built from are palloc'd
/// in the current memory context.
pub(super) unsafe fn jsonb(obj: &JsonObject) -> pg_sys::Datum {
    // SAFETY: the caller upholds the contract under # Safety above.
    unsafe {
        let mut b = JsonbBuilder {
            state: std::ptr::null_mut(),
            in_object: vec![true],
            usable: true,
            last: std::ptr::null_mut(),
        };
        b.push(
            pg_sys::JsonbIteratorToken::WJB_BEGIN_OBJECT,
            std::ptr::null_mut(),
        );
        for m in obj.members() {
            b.key(&m.key);
            match walk(&m.text, &mut b, &stack_too_deep) {
                // Read once already (the row image), so only the stack can
                // stop it here: our 54001, not jsonb_in's.
                Err(e @ JsonError::TooDeep { .. }) => {
                    too_deep(&format!("column \"{}\"", m.key), &e).report()
                }
                Err(JsonError::Invalid(_)) => return input(builtins::jsonb_in, &obj.text()),
                Ok(()) if !b.usable => return input(builtins::jsonb_in, &obj.text()),
                Ok(()) => {}
            }
        }
        b.push(
            pg_sys::JsonbIteratorToken::WJB_END_OBJECT,
            std::ptr::null_mut(),
        );
        pg_sys::Datum::from(pg_sys::JsonbValueToJsonb(b.last))
    }
}

/// Longest string a jsonb value can hold (JENTRY_OFFLENMASK).
const JSONB_STRING_MAX: usize = 0x0FFF_FFFF;

struct JsonbBuilder {
    state: *mut pg_sys::JsonbParseState,
    /// For each open container: an object (values) or an array (elements).
    in_object: Vec<bool>,
    usable: bool,
    last: *mut pg_sys::JsonbValue,
}

impl JsonbBuilder {
    /// # Safety
    ///
    /// `value` is NULL (for tokens without a value) or points to a JsonbValue
    /// whose pointers stay valid until the builder's result is built, and
    /// `token` continues the builder's containers.
    unsafe fn push(
        &mut self,
        token: pg_sys::JsonbIteratorToken::Type,
        value: *mut pg_sys::JsonbValue,
    ) {
        // SAFETY: the caller upholds the contract under # Safety above.
        unsafe {
            self.last = pg_sys::pushJsonbValue(&mut self.state, token, value);
        }
    }

    fn scalar(&mut self, mut value: pg_sys::JsonbValue) {
        let token = if self.in_object.last().copied().unwrap_or(true) {
            pg_sys::JsonbIteratorToken::WJB_VALUE
        } else {
            pg_sys::JsonbIteratorToken::WJB_ELEM
        };
        // SAFETY: the value's pointers live in the row memory context.
        unsafe { self.push(token, &mut value) };
    }
}

/// A jsonb string value holding a palloc'd copy of `s`.
///
/// # Safety
///
/// In a backend: the copy is palloc'd in the current memory context.
unsafe fn string_value(s: &str) -> pg_sys::JsonbValue {
    // SAFETY: the caller upholds the contract under # Safety above.
    unsafe {
        let p = pg_sys::palloc(s.len().max(1)) as *mut u8;
        std::ptr::copy_nonoverlapping(s.as_ptr(), p, s.len());
        let mut v: pg_sys::JsonbValue = std::mem::zeroed();
        v.type_ = pg_sys::jbvType::jbvString;
        v.val.string = pg_sys::JsonbValue__bindgen_ty_1__bindgen_ty_1 {
            len: s.len() as i32,
            val: p as *mut _,
        };
        v
    }
}

impl JsonEvents for JsonbBuilder {
    fn begin(&mut self, object: bool) {
        self.in_object.push(object);
        let token = if object {
            pg_sys::JsonbIteratorToken::WJB_BEGIN_OBJECT
        } else {
            pg_sys::JsonbIteratorToken::WJB_BEGIN_ARRAY
        };
        // SAFETY: opening a container in the parse state.
        unsafe { self.push(token, std::ptr::null_mut()) };
    }

    fn end(&mut self, object: bool) {
        self.in_object.pop();
        let token = if object {
            pg_sys::JsonbIteratorToken::WJB_END_OBJECT
        } else {
            pg_sys::JsonbIteratorToken::WJB_END_ARRAY
        };
        // SAFETY: closing the container opened in `begin`.
        unsafe { self.push(token, std::ptr::null_mut()) };
    }

    fn key(&mut self, key: &str) {
        if key.len() > JSONB_STRING_MAX || key.contains('\0') {
            self.usable = false;
            return;
        }
        // SAFETY: the copy lives in the row memory context.
        unsafe {
            let mut v = string_value(key);
            self.push(pg_sys::JsonbIteratorToken::WJB_KEY, &mut v);
        }
    }

    fn string(&mut self, value: &str) {
        if value.len() > JSONB_STRING_MAX || value.contains('\0') {
            self.usable = false;
            return;
        }
        // SAFETY: the copy lives in the row memory context.
        let v = unsafe { string_value(value) };
        self.scalar(v);
    }

    fn number(&mut self, text: &str) {
        // SAFETY: numeric_in reports text that is not a number as an ERROR.
        unsafe {
            // Integers (ids, counts) skip numeric_in's parse: the same value.
            let n = if let Some(i) = plain_integer(text) {
                pg_sys::Datum::from(pg_sys::int64_to_numeric(i))
            } else {
                pg_sys::DirectFunctionCall3Coll(
                    Some(builtins::numeric_in),
                    pg_sys::InvalidOid,
                    cstring(text),
                    pg_sys::Datum::from(pg_sys::InvalidOid),
                    pg_sys::Datum::from(-1i32),
                )
            };
            let mut v: pg_sys::JsonbValue = std::mem::zeroed();
            v.type_ = pg_sys::jbvType::jbvNumeric;
            v.val.numeric = n.cast_mut_ptr();
            self.scalar(v);
        }
    }

    fn literal(&mut self, word: &str) {
        // SAFETY: a plain value without pointers.
        let mut v: pg_sys::JsonbValue = unsafe { std::mem::zeroed() };
        if word == "null" {
            v.type_ = pg_sys::jbvType::jbvNull;
        } else {
            v.type_ = pg_sys::jbvType::jbvBool;
            v.val.boolean = word == "true";
        }
        self.scalar(v);
    }
}
