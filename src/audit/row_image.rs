//! Row images straight from a tuple's datums: for each column the JSON text
//! `row_to_json` writes for it (PostgreSQL's json.c rules: `datum_to_json`
//! after `json_categorize_type`) and its canonical form, without building
//! one JSON document per row and reading it back.
//!
//! The column plan (category and output function) is made once per
//! relation and kept until its relcache entry is invalidated (row trigger),
//! or once per statement (statement trigger), not per row; a per-row memory context takes what the output
//! functions allocate. Arrays, nested rows and types with a cast to json go
//! through the same SQL-callable functions `row_to_json` uses for them.

use super::canonical::{json_string, jsonb_can_hold};
use super::canonical_number::{canonical_number, is_json_number};
use super::json_err;
use super::json_object::{JsonObject, Member};
use super::json_scan::canonical_value;
use crate::error::{ErrorKind, SaasError, SaasResult};
use crate::pgutil::stack_too_deep;
use pgrx::pg_sys;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CStr;
use std::rc::Rc;

/// The SQL-callable C functions `row_to_json` uses for nested values
/// (DirectFunctionCall needs the C symbols, not pg_sys's Rust wrappers).
mod builtins {
    use pgrx::pg_sys::{Datum, FunctionCallInfo};
    unsafe extern "C-unwind" {
        pub fn row_to_json(fcinfo: FunctionCallInfo) -> Datum;
        pub fn array_to_json(fcinfo: FunctionCallInfo) -> Datum;
    }
}

/// How `row_to_json` writes a column (json.c's JsonTypeCategory).
#[derive(Clone, Copy)]
enum Category {
    Bool,
    /// int2/4/8, float4/8, numeric: unquoted when the output is a JSON number.
    Number,
    /// date, timestamp, timestamptz (the base type): ISO 8601 strings.
    DateTime(pg_sys::Oid),
    /// json and jsonb: their output text, as is.
    Json,
    Array,
    Composite,
    /// A user type with an explicit cast to json: the cast's result.
    Cast,
    /// Everything else: the output text as a JSON string.
    Other,
}

struct Column {
    name: String,
    category: Category,
    /// The output function, or the cast function for [`Category::Cast`].
    call: pg_sys::FmgrInfo,
}

pub(super) struct RowEncoder {
    desc: pg_sys::TupleDesc,
    /// One entry per attribute; `None` for dropped columns.
    columns: Vec<Option<Column>>,
    values: Vec<pg_sys::Datum>,
    nulls: Vec<bool>,
    row_memory: pg_sys::MemoryContext,
    /// A kept encoder's own long-lived context (its output functions'
    /// state, and `row_memory` below it), deleted on drop; null for one
    /// made per call, whose memory goes with the call's context.
    kept_memory: pg_sys::MemoryContext,
}

thread_local! {
    /// Column plans of the row trigger's relations, kept across calls and
    /// transactions until the relation's relcache entry is invalidated
    /// (`forget_kept`): building one costs catalog lookups per column.
    static KEPT: RefCell<HashMap<u32, Rc<RefCell<RowEncoder>>>> = RefCell::new(HashMap::new());
}

/// Runs `f` with the kept encoder of relation `relid` (descriptor `desc`),
/// made on first use. A nested call for the same relation (an output
/// function that writes to it) gets an encoder of its own.
///
/// # Safety
///
/// `desc` is the open relation's descriptor, as for [`RowEncoder::new`].
pub(super) unsafe fn with_kept<T>(
    relid: pg_sys::Oid,
    desc: pg_sys::TupleDesc,
    f: impl FnOnce(&mut RowEncoder) -> T,
) -> T {
    // SAFETY: the caller upholds the contract under # Safety above.
    unsafe {
        let key = relid.to_u32();
        let kept = KEPT
            .with(|k| k.borrow().get(&key).cloned())
            .filter(|e| e.try_borrow().map_or(true, |e| e.desc == desc));
        let encoder = match kept {
            Some(e) => e,
            None => {
                let e = Rc::new(RefCell::new(RowEncoder::kept(desc)));
                KEPT.with(|k| k.borrow_mut().insert(key, e.clone()));
                e
            }
        };
        // A binding, so the borrow ends before `encoder` is dropped.
        let out = match encoder.try_borrow_mut() {
            Ok(mut e) => f(&mut e),
            Err(_) => {
                let mut own = RowEncoder::new(desc);
                let out = f(&mut own);
                own.finish();
                out
            }
        };
        out
    }
}

/// Drops the kept column plan of `relid` (InvalidOid: all of them), when
/// its relcache entry is invalidated (a column added, renamed or retyped).
pub(super) fn forget_kept(relid: pg_sys::Oid) {
    KEPT.with(|k| {
        if let Ok(mut k) = k.try_borrow_mut() {
            if relid == pg_sys::InvalidOid {
                k.clear();
            } else {
                k.remove(&relid.to_u32());
            }
        }
    });
}

impl Drop for RowEncoder {
    fn drop(&mut self) {
        if !self.kept_memory.is_null() {
            // SAFETY: the kept encoder's own context (with `row_memory`
            // inside it), made by `kept`, used by nothing else.
            unsafe { pg_sys::MemoryContextDelete(self.kept_memory) };
        }
    }
}

impl RowEncoder {
    ///
    /// # Safety
    ///
    /// `desc` describes the tuples [`RowEncoder::encode`] gets and
    /// outlives the encoder (the trigger's relation stays open).
    pub(super) unsafe fn new(desc: pg_sys::TupleDesc) -> RowEncoder {
        // SAFETY: the caller upholds the contract under # Safety above.
        unsafe { RowEncoder::build(desc, pg_sys::CurrentMemoryContext, std::ptr::null_mut()) }
    }

    /// An encoder to keep across calls, in a context of its own under
    /// TopMemoryContext.
    ///
    /// # Safety
    ///
    /// As for [`RowEncoder::new`], while the relcache entry is valid.
    unsafe fn kept(desc: pg_sys::TupleDesc) -> RowEncoder {
        // SAFETY: the caller upholds the contract under # Safety above.
        unsafe {
            let memory = pg_sys::AllocSetContextCreateInternal(
                pg_sys::TopMemoryContext,
                c"pg_saas audit column plan".as_ptr(),
                pg_sys::ALLOCSET_SMALL_MINSIZE as usize,
                pg_sys::ALLOCSET_SMALL_INITSIZE as usize,
                pg_sys::ALLOCSET_SMALL_MAXSIZE as usize,
            );
            RowEncoder::build(desc, memory, memory)
        }
    }

    /// # Safety
    ///
    /// As for [`RowEncoder::new`]; `parent` outlives the encoder.
    unsafe fn build(
        desc: pg_sys::TupleDesc,
        parent: pg_sys::MemoryContext,
        kept_memory: pg_sys::MemoryContext,
    ) -> RowEncoder {
        // SAFETY: the caller upholds the contract under # Safety above.
        unsafe {
            let natts = (*desc).natts as usize;
            let mut columns = Vec::with_capacity(natts);
            for i in 0..natts {
                let att = &*(*desc).attrs.as_ptr().add(i);
                if att.attisdropped {
                    columns.push(None);
                    continue;
                }
                let name = CStr::from_ptr(att.attname.data.as_ptr())
                    .to_string_lossy()
                    .into_owned();
                let (category, func) = categorize(att.atttypid);
                let mut call: pg_sys::FmgrInfo = std::mem::zeroed();
                if func != pg_sys::InvalidOid {
                    // The function's own state lives as long as the plan.
                    pg_sys::fmgr_info_cxt(func, &mut call, parent);
                }
                columns.push(Some(Column {
                    name,
                    category,
                    call,
                }));
            }
            let row_memory = pg_sys::AllocSetContextCreateInternal(
                parent,
                c"pg_saas audit row image".as_ptr(),
                pg_sys::ALLOCSET_DEFAULT_MINSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_INITSIZE as usize,
                pg_sys::ALLOCSET_DEFAULT_MAXSIZE as usize,
            );
            RowEncoder {
                desc,
                columns,
                values: vec![pg_sys::Datum::from(0); natts],
                nulls: vec![true; natts],
                row_memory,
                kept_memory,
            }
        }
    }

    /// The row as a JSON object: the members `row_to_json` would write.
    ///
    /// # Safety
    ///
    /// `tuple` is a valid tuple of the encoder's descriptor.
    pub(super) unsafe fn encode(&mut self, tuple: pg_sys::HeapTuple) -> SaasResult<JsonObject> {
        // SAFETY: the caller upholds the contract under # Safety above.
        unsafe {
            pg_sys::heap_deform_tuple(
                tuple,
                self.desc,
                self.values.as_mut_ptr(),
                self.nulls.as_mut_ptr(),
            );
            let (values, nulls) = (
                std::mem::take(&mut self.values),
                std::mem::take(&mut self.nulls),
            );
            let object = self.object(&values, &nulls);
            (self.values, self.nulls) = (values, nulls);
            object
        }
    }

    /// The same for a slot's row (a transition table's), read in place.
    ///
    /// # Safety
    ///
    /// `slot` holds a row of the encoder's descriptor.
    pub(super) unsafe fn encode_slot(
        &mut self,
        slot: *mut pg_sys::TupleTableSlot,
    ) -> SaasResult<JsonObject> {
        // SAFETY: the caller upholds the contract under # Safety above.
        unsafe {
            pg_sys::slot_getallattrs(slot);
            let natts = self.columns.len();
            let values = std::slice::from_raw_parts((*slot).tts_values, natts);
            let nulls = std::slice::from_raw_parts((*slot).tts_isnull, natts);
            self.object(values, nulls)
        }
    }

    /// # Safety
    ///
    /// `values` and `nulls` hold one entry per attribute of the encoder's
    /// descriptor, each value a datum of its column's type.
    unsafe fn object(
        &mut self,
        values: &[pg_sys::Datum],
        nulls: &[bool],
    ) -> SaasResult<JsonObject> {
        // SAFETY: the caller upholds the contract under # Safety above.
        unsafe {
            let old = pg_sys::MemoryContextSwitchTo(self.row_memory);
            let members = self.members(values, nulls);
            pg_sys::MemoryContextSwitchTo(old);
            pg_sys::MemoryContextReset(self.row_memory);
            members.map(JsonObject::from_members)
        }
    }

    /// # Safety
    ///
    /// As for `object`, with the row memory context current.
    unsafe fn members(
        &mut self,
        values: &[pg_sys::Datum],
        nulls: &[bool],
    ) -> SaasResult<Vec<Member>> {
        // SAFETY: the caller upholds the contract under # Safety above.
        unsafe {
            let mut members = Vec::with_capacity(self.columns.len());
            for (i, column) in self.columns.iter_mut().enumerate() {
                let Some(column) = column else { continue };
                let (text, canonical) = if nulls[i] {
                    ("null".to_string(), "null".to_string())
                } else {
                    value_json(column, values[i])?
                };
                members.push(Member {
                    key: column.name.clone(),
                    text,
                    canonical,
                });
            }
            Ok(members)
        }
    }

    /// Frees the row memory. Not a Drop, for the reason `TransitionReader`
    /// gives; after an error the memory goes with its parent context.
    pub(super) fn finish(self) {
        if self.kept_memory.is_null() {
            // SAFETY: the context was made by `new` and is not current.
            unsafe { pg_sys::MemoryContextDelete(self.row_memory) };
        }
    }
}

/// json.c's `json_categorize_type`: the category of a column type and the
/// function that writes it (InvalidOid where none is needed).
///
/// # Safety
///
/// In a backend, `typid` an existing type (catalog lookups).
unsafe fn categorize(typid: pg_sys::Oid) -> (Category, pg_sys::Oid) {
    // SAFETY: the caller upholds the contract under # Safety above.
    unsafe {
        let base = pg_sys::getBaseType(typid);
        let output = |t: pg_sys::Oid| {
            let (mut func, mut varlena) = (pg_sys::InvalidOid, false);
            pg_sys::getTypeOutputInfo(t, &mut func, &mut varlena);
            func
        };
        match base {
            pg_sys::BOOLOID => (Category::Bool, pg_sys::InvalidOid),
            pg_sys::INT2OID
            | pg_sys::INT4OID
            | pg_sys::INT8OID
            | pg_sys::FLOAT4OID
            | pg_sys::FLOAT8OID
            | pg_sys::NUMERICOID => (Category::Number, output(base)),
            pg_sys::DATEOID | pg_sys::TIMESTAMPOID | pg_sys::TIMESTAMPTZOID => {
                (Category::DateTime(base), pg_sys::InvalidOid)
            }
            pg_sys::JSONOID | pg_sys::JSONBOID => (Category::Json, output(base)),
            _ if pg_sys::get_element_type(base) != pg_sys::InvalidOid
                || [
                    pg_sys::ANYARRAYOID,
                    pg_sys::ANYCOMPATIBLEARRAYOID,
                    pg_sys::RECORDARRAYOID,
                ]
                .contains(&base) =>
            {
                (Category::Array, pg_sys::InvalidOid)
            }
            _ if pg_sys::type_is_rowtype(base) => (Category::Composite, pg_sys::InvalidOid),
            _ if u32::from(base) >= pg_sys::FirstNormalObjectId => {
                let mut cast = pg_sys::InvalidOid;
                let path = pg_sys::find_coercion_pathway(
                    pg_sys::JSONOID,
                    base,
                    pg_sys::CoercionContext::COERCION_EXPLICIT,
                    &mut cast,
                );
                if path == pg_sys::CoercionPathType::COERCION_PATH_FUNC
                    && cast != pg_sys::InvalidOid
                {
                    (Category::Cast, cast)
                } else {
                    (Category::Other, output(base))
                }
            }
            _ => (Category::Other, output(base)),
        }
    }
}

/// One non-NULL value's JSON text and canonical text.
///
/// # Safety
///
/// `value` is a non-NULL datum of the column's type, and `column.call` was
/// set up by `RowEncoder::new` for that type.
unsafe fn value_json(column: &mut Column, value: pg_sys::Datum) -> SaasResult<(String, String)> {
    // SAFETY: the caller upholds the contract under # Safety above.
    unsafe {
        let string = |s: &str| {
            let text = json_string(s);
            (text.clone(), text)
        };
        // A value jsonb cannot hold (a NUL, a number beyond numeric's
        // range) is kept as a JSON string of its text: the write succeeds,
        // nothing is lost (docs/audit.md).
        let nested = |text: &str| {
            canonical_value(text, &stack_too_deep)
                .map(|c| {
                    if jsonb_can_hold(&c) {
                        (text.to_string(), c)
                    } else {
                        let quoted = json_string(text);
                        (quoted.clone(), quoted)
                    }
                })
                .map_err(|e| {
                    json_err(
                        "read a column's JSON",
                        &format!("column \"{}\"", column.name),
                        e,
                    )
                })
        };
        Ok(match column.category {
            Category::Bool => {
                let word = if value.value() != 0 { "true" } else { "false" };
                (word.to_string(), word.to_string())
            }
            Category::Number => {
                let out = output_text(&mut column.call, value)?;
                if is_json_number(out) {
                    (out.to_string(), canonical_number(out))
                } else {
                    string(out)
                }
            }
            Category::DateTime(typid) => {
                let mut buf = [0 as std::ffi::c_char; pg_sys::MAXDATELEN as usize + 1];
                pg_sys::JsonEncodeDateTime(buf.as_mut_ptr(), value, typid, std::ptr::null());
                string(utf8(CStr::from_ptr(buf.as_ptr()))?)
            }
            Category::Json => nested(output_text(&mut column.call, value)?)?,
            Category::Array => nested(text_datum(pg_sys::DirectFunctionCall1Coll(
                Some(builtins::array_to_json),
                pg_sys::InvalidOid,
                value,
            ))?)?,
            Category::Composite => nested(text_datum(pg_sys::DirectFunctionCall1Coll(
                Some(builtins::row_to_json),
                pg_sys::InvalidOid,
                value,
            ))?)?,
            // A user's cast to json may return NULL, which
            // FunctionCall1Coll reports as an internal error: JSON null.
            Category::Cast => match call_nullable(&mut column.call, value) {
                None => ("null".to_string(), "null".to_string()),
                Some(json) => nested(text_datum(json)?)?,
            },
            Category::Other => string(output_text(&mut column.call, value)?),
        })
    }
}

/// The text an output function writes (in the row memory context).
///
/// # Safety
///
/// `call` is the output function of `value`'s type; the text it returns
/// lives in the current memory context, which must outlive `'a`.
unsafe fn output_text<'a>(
    call: &mut pg_sys::FmgrInfo,
    value: pg_sys::Datum,
) -> SaasResult<&'a str> {
    // SAFETY: the caller upholds the contract under # Safety above.
    unsafe { utf8(CStr::from_ptr(pg_sys::OutputFunctionCall(call, value))) }
}

/// Calls the one-argument function `call` (a cast to json) on `value`; None
/// when it returns NULL.
///
/// # Safety
///
/// `call` was set up by `fmgr_info` for a function taking one argument of
/// `value`'s type; runs in a memory context that outlives the result.
unsafe fn call_nullable(
    call: &mut pg_sys::FmgrInfo,
    value: pg_sys::Datum,
) -> Option<pg_sys::Datum> {
    // SAFETY: the caller upholds the contract under # Safety above; the call
    // info is sized for one argument (SizeForFunctionCallInfo(1)) and
    // zeroed, as LOCAL_FCINFO makes it; the call runs inside pgrx's FFI
    // guard.
    unsafe {
        let size = std::mem::size_of::<pg_sys::FunctionCallInfoBaseData>()
            + std::mem::size_of::<pg_sys::NullableDatum>();
        let fcinfo = pg_sys::palloc0(size) as pg_sys::FunctionCallInfo;
        (*fcinfo).flinfo = call;
        (*fcinfo).fncollation = pg_sys::InvalidOid;
        (*fcinfo).nargs = 1;
        (*fcinfo).args.as_mut_slice(1)[0] = pg_sys::NullableDatum {
            value,
            isnull: false,
        };
        let function = call.fn_addr.expect("fmgr_info sets fn_addr");
        // An ERROR in the user's cast longjmps: through pgrx's guard, not
        // across these Rust frames.
        let result = pg_sys::ffi::pg_guard_ffi_boundary(|| function(fcinfo));
        let isnull = (*fcinfo).isnull;
        pg_sys::pfree(fcinfo.cast());
        (!isnull).then_some(result)
    }
}

/// A json (text-like) datum's text (in the row memory context).
///
/// # Safety
///
/// `datum` is a non-NULL, detoasted-or-toastable text-like varlena that
/// outlives `'a`.
unsafe fn text_datum<'a>(datum: pg_sys::Datum) -> SaasResult<&'a str> {
    // SAFETY: the caller upholds the contract under # Safety above.
    unsafe { pgrx::varlena::text_to_rust_str(datum.cast_mut_ptr()).map_err(not_utf8) }
}

fn utf8(s: &CStr) -> SaasResult<&str> {
    s.to_str().map_err(not_utf8)
}

fn not_utf8(e: std::str::Utf8Error) -> SaasError {
    SaasError::new(
        ErrorKind::FeatureNotSupported,
        "pg_saas audit needs a UTF8 database",
        "Create the database with ENCODING 'UTF8'.",
    )
    .with_detail(e.to_string())
}
