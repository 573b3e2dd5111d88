//! The one place where pg_saas errors get their SQLSTATE.
//!
//! Pure logic returns `Result<T, SaasError>`; the pgrx glue calls
//! [`OrRaise::or_raise`] at the SQL boundary, which turns the error into a
//! PostgreSQL `ereport(ERROR)` with SQLSTATE, message, DETAIL and HINT.
//! Only [`SaasError::report`] and the code table touch pgrx; both are plain
//! data or never run outside a backend, so `cargo test` covers the mapping.

use std::fmt;

/// What went wrong, as the caller can act on it. Each kind has exactly one
/// SQLSTATE; PostgREST turns some of them into HTTP statuses (docs/architecture.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A value of the right type but unusable (bad uuid text, empty slug). 22023
    InvalidParameter,
    NullValue,
    ReadOnlyTransaction,
    /// Text that should be JSON is not. 22P02
    InvalidJson,
    /// A value outside its allowed range (negative premake, zero burst). 22003
    OutOfRange,
    /// A string or identifier that is too long. 22001
    StringTooLong,
    /// An identifier that cannot be used as given. 42602
    InvalidName,
    /// A table, column or object that does not exist. 42P01
    UndefinedTable,
    /// A column that does not exist. 42703
    UndefinedColumn,
    /// A column of the wrong type for what is asked of it. 42804
    DatatypeMismatch,
    /// An object of the wrong kind (a view where a table is needed). 42809
    WrongObjectType,
    /// The caller may not do this (other tenant, suspended tenant, missing
    /// role). 42501 -> HTTP 401 anonymous / 403
    InsufficientPrivilege,
    /// A row violates a rule of ours (tenant mismatch on insert). 23514
    CheckViolation,
    /// The object is in a state that forbids the operation (a table already
    /// isolated by another column, extension not configured). 55000
    ObjectNotInPrerequisiteState,
    /// A configuration setting is invalid. F0000
    ConfigFile,
    /// The operation is not supported (e.g. an unsupported partition key). 0A000
    FeatureNotSupported,
    /// A tamper-evidence or consistency check failed. XX001
    DataCorrupted,
    /// A value nested deeper than the stack allows us to walk (PostgreSQL's
    /// `max_stack_depth`). 54001 `statement_too_complex`, as PostgreSQL's
    /// own "stack depth limit exceeded".
    StatementTooComplex,
    /// Waited too long for something another transaction holds. 55P03
    LockNotAvailable,
    /// A fixed-size resource (shared-memory slots) is full. 53000
    InsufficientResources,
}

impl ErrorKind {
    /// Every kind, for exhaustive tests and documentation.
    pub const ALL: &'static [ErrorKind] = &[
        ErrorKind::InvalidParameter,
        ErrorKind::NullValue,
        ErrorKind::ReadOnlyTransaction,
        ErrorKind::InvalidJson,
        ErrorKind::OutOfRange,
        ErrorKind::StringTooLong,
        ErrorKind::InvalidName,
        ErrorKind::UndefinedTable,
        ErrorKind::UndefinedColumn,
        ErrorKind::DatatypeMismatch,
        ErrorKind::WrongObjectType,
        ErrorKind::InsufficientPrivilege,
        ErrorKind::CheckViolation,
        ErrorKind::ObjectNotInPrerequisiteState,
        ErrorKind::ConfigFile,
        ErrorKind::FeatureNotSupported,
        ErrorKind::DataCorrupted,
        ErrorKind::StatementTooComplex,
        ErrorKind::LockNotAvailable,
        ErrorKind::InsufficientResources,
    ];

    /// The five-character SQLSTATE of this kind.
    pub const fn sqlstate(self) -> &'static str {
        match self {
            ErrorKind::InvalidParameter => "22023",
            ErrorKind::NullValue => "22004",
            ErrorKind::ReadOnlyTransaction => "25006",
            ErrorKind::InvalidJson => "22P02",
            ErrorKind::OutOfRange => "22003",
            ErrorKind::StringTooLong => "22001",
            ErrorKind::InvalidName => "42602",
            ErrorKind::UndefinedTable => "42P01",
            ErrorKind::UndefinedColumn => "42703",
            ErrorKind::DatatypeMismatch => "42804",
            ErrorKind::WrongObjectType => "42809",
            ErrorKind::InsufficientPrivilege => "42501",
            ErrorKind::CheckViolation => "23514",
            ErrorKind::ObjectNotInPrerequisiteState => "55000",
            ErrorKind::ConfigFile => "F0000",
            ErrorKind::FeatureNotSupported => "0A000",
            ErrorKind::DataCorrupted => "XX001",
            ErrorKind::StatementTooComplex => "54001",
            ErrorKind::LockNotAvailable => "55P03",
            ErrorKind::InsufficientResources => "53000",
        }
    }
}

/// An error with everything a user needs to act on it. A HINT is mandatory:
/// an error a user cannot act on is a bug of ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaasError {
    pub kind: ErrorKind,
    pub message: String,
    pub detail: Option<String>,
    pub hint: String,
}

impl SaasError {
    pub fn new(kind: ErrorKind, message: impl Into<String>, hint: impl Into<String>) -> Self {
        SaasError {
            kind,
            message: message.into(),
            detail: None,
            hint: hint.into(),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn sqlstate(&self) -> &'static str {
        self.kind.sqlstate()
    }
}

impl fmt::Display for SaasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (SQLSTATE {})", self.message, self.sqlstate())
    }
}

impl std::error::Error for SaasError {}

pub type SaasResult<T> = Result<T, SaasError>;

/// Packs a SQLSTATE the way PostgreSQL's `MAKE_SQLSTATE` macro does, so the
/// pgrx error-code enum can be checked against our strings.
pub const fn make_sqlstate(code: &str) -> i32 {
    let b = code.as_bytes();
    let mut packed = 0i32;
    let mut i = 0;
    while i < 5 {
        packed |= (((b[i] - b'0') & 0x3F) as i32) << (6 * i);
        i += 1;
    }
    packed
}

impl SaasError {
    /// Raise this error as a PostgreSQL ERROR (SQLSTATE, message, DETAIL,
    /// HINT). Never returns: pgrx unwinds to the SQL boundary and reports it.
    pub fn report(self) -> ! {
        use pgrx::pg_sys::panic::ErrorReport;
        let mut report =
            ErrorReport::new(pg_code_of(self.kind), self.message, "pg_saas").set_hint(self.hint);
        if let Some(detail) = self.detail {
            report = report.set_detail(detail);
        }
        report.report(pgrx::PgLogLevel::ERROR);
        unreachable!("ereport(ERROR) returned")
    }
}

/// The pgrx enum for each kind, checked against [`ErrorKind::sqlstate`] by
/// the tests below.
fn pg_code_of(kind: ErrorKind) -> pgrx::PgSqlErrorCode {
    use pgrx::PgSqlErrorCode as C;
    match kind {
        ErrorKind::InvalidParameter => C::ERRCODE_INVALID_PARAMETER_VALUE,
        ErrorKind::NullValue => C::ERRCODE_NULL_VALUE_NOT_ALLOWED,
        ErrorKind::ReadOnlyTransaction => C::ERRCODE_READ_ONLY_SQL_TRANSACTION,
        ErrorKind::InvalidJson => C::ERRCODE_INVALID_TEXT_REPRESENTATION,
        ErrorKind::OutOfRange => C::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
        ErrorKind::StringTooLong => C::ERRCODE_STRING_DATA_RIGHT_TRUNCATION,
        ErrorKind::InvalidName => C::ERRCODE_INVALID_NAME,
        ErrorKind::UndefinedTable => C::ERRCODE_UNDEFINED_TABLE,
        ErrorKind::UndefinedColumn => C::ERRCODE_UNDEFINED_COLUMN,
        ErrorKind::DatatypeMismatch => C::ERRCODE_DATATYPE_MISMATCH,
        ErrorKind::WrongObjectType => C::ERRCODE_WRONG_OBJECT_TYPE,
        ErrorKind::InsufficientPrivilege => C::ERRCODE_INSUFFICIENT_PRIVILEGE,
        ErrorKind::CheckViolation => C::ERRCODE_CHECK_VIOLATION,
        ErrorKind::ObjectNotInPrerequisiteState => C::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
        ErrorKind::ConfigFile => C::ERRCODE_CONFIG_FILE_ERROR,
        ErrorKind::FeatureNotSupported => C::ERRCODE_FEATURE_NOT_SUPPORTED,
        ErrorKind::DataCorrupted => C::ERRCODE_DATA_CORRUPTED,
        ErrorKind::StatementTooComplex => C::ERRCODE_STATEMENT_TOO_COMPLEX,
        ErrorKind::LockNotAvailable => C::ERRCODE_LOCK_NOT_AVAILABLE,
        ErrorKind::InsufficientResources => C::ERRCODE_INSUFFICIENT_RESOURCES,
    }
}

/// `result.or_raise()` at the SQL boundary: the value, or an ERROR.
pub trait OrRaise<T> {
    fn or_raise(self) -> T;
}

impl<T> OrRaise<T> for SaasResult<T> {
    fn or_raise(self) -> T {
        match self {
            Ok(v) => v,
            Err(e) => e.report(),
        }
    }
}

/// The most of a caller's input an error message repeats: enough to
/// recognise it, never a whole header or body sent back in the error.
pub const ECHO_MAX_CHARS: usize = 64;

/// `text` for an error message: at most [`ECHO_MAX_CHARS`] characters, and
/// how much more there was.
pub fn echoed(text: &str) -> String {
    match text.char_indices().nth(ECHO_MAX_CHARS) {
        None => text.to_string(),
        Some((cut, _)) => format!("{}... ({} more bytes)", &text[..cut], text.len() - cut),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn echoed_input_is_cut() {
        assert_eq!(super::echoed("acme"), "acme");
        let long = "x".repeat(8192);
        let e = super::echoed(&long);
        assert!(
            e.starts_with(&"x".repeat(64)) && e.ends_with("(8128 more bytes)"),
            "{e}"
        );
        // Never splits a character.
        assert_eq!(
            super::echoed(&"\u{e9}".repeat(65)),
            format!("{}... (2 more bytes)", "\u{e9}".repeat(64))
        );
    }

    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_kind_has_a_distinct_wellformed_sqlstate() {
        let mut seen = HashSet::new();
        for kind in ErrorKind::ALL {
            let s = kind.sqlstate();
            assert_eq!(s.len(), 5, "{kind:?}");
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()),
                "{kind:?}"
            );
            assert!(seen.insert(s), "{kind:?} reuses {s}");
            // Class 00/01/02 are not errors; XX000 is what we promise never to raise.
            assert!(!s.starts_with("00") && !s.starts_with("01") && !s.starts_with("02"));
            assert_ne!(s, "XX000");
        }
    }

    #[test]
    fn pgrx_codes_agree_with_sqlstate_strings() {
        for kind in ErrorKind::ALL {
            assert_eq!(
                pg_code_of(*kind) as i32,
                make_sqlstate(kind.sqlstate()),
                "{kind:?} maps to a pgrx code that is not {}",
                kind.sqlstate()
            );
        }
    }

    #[test]
    fn make_sqlstate_matches_postgres_packing() {
        // MAKE_SQLSTATE packs each character's low 6 bits, first character lowest.
        #[allow(clippy::identity_op)]
        // every character spelt out, the 0 too, as MAKE_SQLSTATE packs it
        let expect = (2) | (3 << 6) | (5 << 12) | (0 << 18) | (5 << 24);
        assert_eq!(make_sqlstate("23505"), expect);
        assert_eq!(
            make_sqlstate("23505"),
            pgrx::PgSqlErrorCode::ERRCODE_UNIQUE_VIOLATION as i32
        );
    }

    #[test]
    fn too_deep_is_statement_too_complex() {
        assert_eq!(ErrorKind::StatementTooComplex.sqlstate(), "54001");
        assert_eq!(
            pg_code_of(ErrorKind::StatementTooComplex) as i32,
            pgrx::PgSqlErrorCode::ERRCODE_STATEMENT_TOO_COMPLEX as i32
        );
    }

    #[test]
    fn display_carries_sqlstate() {
        let e = SaasError::new(
            ErrorKind::InvalidJson,
            "claims are not JSON",
            "send a JSON object",
        )
        .with_detail("at byte 3");
        assert_eq!(e.to_string(), "claims are not JSON (SQLSTATE 22P02)");
        assert_eq!(e.detail.as_deref(), Some("at byte 3"));
    }
}
