//! RFC 8785 (JSON Canonicalization Scheme) of a JSON value: object members
//! sorted by the UTF-16 code units of their names, no whitespace, strings
//! with the minimal escapes of ECMAScript's `JSON.stringify`, and numbers
//! written as ECMAScript writes an IEEE 754 double. Written into any
//! [`Sink`] (a `String`, or a SHA-256 state so a huge prompt is hashed
//! without building its canonical text). Pure Rust.
//!
//! Only I-JSON (RFC 7493) is accepted: a number that is not a finite double,
//! or an integer literal above 2^53 in magnitude (it would lose digits as a
//! double), is refused. jsonb cannot hold NaN, Infinity or lone surrogates.

use crate::error::{ErrorKind, SaasError, SaasResult};
use serde_json::Value;

/// Where canonical text goes.
pub trait Sink {
    fn put(&mut self, s: &str);
}

impl Sink for String {
    fn put(&mut self, s: &str) {
        self.push_str(s);
    }
}

/// 2^53: beyond it not every integer is a double.
pub const MAX_SAFE: f64 = 9_007_199_254_740_992.0;

/// The RFC 8785 text of `value`.
pub fn canonical(value: &Value) -> SaasResult<String> {
    let mut out = String::with_capacity(128);
    write(value, &mut out, 0)?;
    Ok(out)
}

/// Writes `value` canonically into `out`. `depth` guards the stack (serde_json
/// already refuses input nested deeper than 128).
pub fn write<S: Sink>(value: &Value, out: &mut S, depth: usize) -> SaasResult<()> {
    if depth > 256 {
        return Err(SaasError::new(
            ErrorKind::StatementTooComplex,
            "llm request is nested more than 256 levels deep",
            "Send the request as the provider's API takes it; real requests nest a few levels.",
        ));
    }
    match value {
        Value::Null => out.put("null"),
        Value::Bool(b) => out.put(if *b { "true" } else { "false" }),
        Value::Number(n) => out.put(&number(&n.to_string())?),
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.put("[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.put(",");
                }
                write(item, out, depth + 1)?;
            }
            out.put("]");
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.put("{");
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.put(",");
                }
                string(key, out);
                out.put(":");
                write(&map[key], out, depth + 1)?;
            }
            out.put("}");
        }
    }
    Ok(())
}

/// A JSON string as RFC 8785 writes it: `"` and `\` escaped, the control
/// characters as `\b \t \n \f \r` or `\u00xx` (lower-case hex), the rest
/// verbatim.
pub fn string<S: Sink>(s: &str, out: &mut S) {
    out.put("\"");
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let esc: Option<String> = match c {
            '"' => Some("\\\"".into()),
            '\\' => Some("\\\\".into()),
            '\u{8}' => Some("\\b".into()),
            '\t' => Some("\\t".into()),
            '\n' => Some("\\n".into()),
            '\u{c}' => Some("\\f".into()),
            '\r' => Some("\\r".into()),
            c if (c as u32) < 0x20 => Some(format!("\\u{:04x}", c as u32)),
            _ => None,
        };
        if let Some(e) = esc {
            out.put(&s[start..i]);
            out.put(&e);
            start = i + c.len_utf8();
        }
    }
    out.put(&s[start..]);
    out.put("\"");
}

/// A JSON number's text as ECMAScript's `Number.prototype.toString` writes
/// the double it denotes (RFC 8785 section 3.2.2.3).
pub fn number(text: &str) -> SaasResult<String> {
    let v: f64 = text
        .parse()
        .map_err(|_| not_ijson(text, "is not a number"))?;
    if !v.is_finite() {
        return Err(not_ijson(text, "is beyond the range of a double"));
    }
    if !text.contains(['.', 'e', 'E'])
        && text
            .parse::<i128>()
            .map_or(true, |i| i.unsigned_abs() > MAX_SAFE as u128)
    {
        return Err(not_ijson(text, "is an integer above 2^53"));
    }
    Ok(es6_number(v))
}

fn not_ijson(text: &str, why: &str) -> SaasError {
    SaasError::new(
        ErrorKind::OutOfRange,
        format!(
            "llm request is not I-JSON: the number {} {why}",
            crate::error::echoed(text)
        ),
        "Numbers must be exact as IEEE 754 doubles (RFC 7493): send large integers such as ids as strings.",
    )
}

/// ECMAScript's shortest round-trip text of a finite double.
pub fn es6_number(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    // `{:e}` gives the shortest digits that round-trip: d[.ddd]e<exp>.
    let sci = format!("{:e}", v.abs());
    let (mant, exp) = sci.split_once('e').expect("{:e} always has an exponent");
    let mut digits: String = mant.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i32;
    // ECMAScript breaks a tie between two shortest candidates towards the
    // even last digit; Rust's shortest form may pick the odd one. A tie
    // means the exact value is the candidates' midpoint: its exact digits
    // are the shorter prefix, then 5, then only zeros.
    if k > 1 && (digits.as_bytes()[k as usize - 1] - b'0') % 2 == 1 {
        let exact = format!("{:.800e}", v.abs());
        let exact: String = exact
            .split_once('e')
            .unwrap()
            .0
            .chars()
            .filter(|c| *c != '.')
            .collect();
        let e = exact.as_bytes();
        let tie = e[k as usize] == b'5' && e[k as usize + 1..].iter().all(|b| *b == b'0');
        if tie {
            let truncated = &exact[..k as usize] == digits.as_str();
            let last = digits.pop().unwrap() as u8;
            digits.push(if truncated { last + 1 } else { last - 1 } as char);
        }
    }
    let n = exp.parse::<i32>().expect("{:e} exponent is an integer") + 1;
    let mut out = String::with_capacity(k as usize + 8);
    if v < 0.0 {
        out.push('-');
    }
    if k <= n && n <= 21 {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if n >= 1 { '+' } else { '-' });
        out.push_str(&(n - 1).abs().to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn canon(text: &str) -> String {
        canonical(&serde_json::from_str(text).unwrap()).unwrap()
    }

    // RFC 8785 appendix B: IEEE 754 bit patterns and their ES6 text.
    #[test]
    fn rfc8785_number_vectors() {
        let vectors: &[(u64, &str)] = &[
            (0x0000000000000000, "0"),
            (0x8000000000000000, "0"),
            (0x0000000000000001, "5e-324"),
            (0x8000000000000001, "-5e-324"),
            (0x7fefffffffffffff, "1.7976931348623157e+308"),
            (0xffefffffffffffff, "-1.7976931348623157e+308"),
            (0x4340000000000000, "9007199254740992"),
            (0xc340000000000000, "-9007199254740992"),
            (0x4430000000000000, "295147905179352830000"),
            (0x44b52d02c7e14af5, "9.999999999999997e+22"),
            (0x44b52d02c7e14af6, "1e+23"),
            (0x44b52d02c7e14af7, "1.0000000000000001e+23"),
            (0x444b1ae4d6e2ef4e, "999999999999999700000"),
            (0x444b1ae4d6e2ef4f, "999999999999999900000"),
            (0x444b1ae4d6e2ef50, "1e+21"),
            (0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"),
            (0x3eb0c6f7a0b5ed8d, "0.000001"),
            (0x41b3de4355555553, "333333333.3333332"),
            (0x41b3de4355555554, "333333333.33333325"),
            (0x41b3de4355555555, "333333333.3333333"),
            (0x41b3de4355555556, "333333333.3333334"),
            (0x41b3de4355555557, "333333333.33333343"),
            (0xbecbf647612f3696, "-0.0000033333333333333333"),
            (0x43143ff3c1cb0959, "1424953923781206.2"),
        ];
        for (bits, want) in vectors {
            assert_eq!(es6_number(f64::from_bits(*bits)), *want, "{bits:x}");
        }
    }

    // RFC 8785 section 3.2.2 / appendix: the published example input.
    #[test]
    fn rfc8785_sample() {
        let input = r#"{
          "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        assert_eq!(
            canon(input),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    // RFC 8785 section 3.2.3: sorting by UTF-16 code units.
    #[test]
    fn rfc8785_sorting() {
        let input = r#"{"\u20ac": "Euro Sign", "\r": "Carriage Return", "\ufb33": "Hebrew Letter Dalet With Dagesh",
          "1": "One", "\ud83d\ude00": "Emoji: Grinning Face", "\u0080": "Control", "\u00f6": "Latin Small Letter O With Diaeresis"}"#;
        let out = canon(input);
        let order: Vec<&str> = [
            "\r",
            "1",
            "\u{80}",
            "\u{f6}",
            "\u{20ac}",
            "\u{1f600}",
            "\u{fb33}",
        ]
        .to_vec();
        let mut at = 0;
        for k in order {
            let needle = {
                let mut s = String::new();
                string(k, &mut s);
                s
            };
            let pos = out[at..].find(&needle).expect("key present in order") + at;
            at = pos + needle.len();
        }
    }

    #[test]
    fn refuses_non_ijson() {
        assert!(number("9007199254740993").is_err());
        assert!(number("-9007199254740993").is_err());
        assert!(number("9007199254740992").is_ok());
        assert!(number("1e400").is_err());
        assert_eq!(number("1e400").unwrap_err().kind, ErrorKind::OutOfRange);
    }

    #[test]
    fn spellings_of_one_number() {
        for t in ["1", "1.0", "1.00", "10e-1", "0.1e1", "1E0"] {
            assert_eq!(number(t).unwrap(), "1", "{t}");
        }
    }

    proptest! {
        #[test]
        fn es6_round_trips(bits in any::<u64>()) {
            let v = f64::from_bits(bits);
            prop_assume!(v.is_finite());
            let s = es6_number(v);
            let back: f64 = s.parse().unwrap();
            prop_assert!(back == v || (v == 0.0 && back == 0.0));
        }

        #[test]
        fn integers_print_plainly(i in -9_007_199_254_740_992i64..=9_007_199_254_740_992) {
            prop_assert_eq!(es6_number(i as f64), if i == 0 { "0".to_string() } else { i.to_string() });
        }

        #[test]
        fn strings_round_trip(s in ".*") {
            let mut out = String::new();
            string(&s, &mut out);
            let back: String = serde_json::from_str(&out).unwrap();
            prop_assert_eq!(back, s);
        }
    }
}
