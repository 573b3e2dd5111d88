//! Numbers in canonical JSON: written by their value, so every spelling
//! PostgreSQL gives one number (`1.50`, `1.5`, `15e-1`) hashes alike, and
//! the JSON number grammar `row_to_json` applies. Pure Rust.

use std::fmt::Write;

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
pub(super) fn write_canonical_number(text: &str, out: &mut String) {
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
        Some(i) => (&mantissa.as_bytes()[..i], &mantissa.as_bytes()[i + 1..]),
        None => (mantissa.as_bytes(), &b""[..]),
    };
    if int_part.is_empty() || !int_part.iter().chain(frac_part).all(u8::is_ascii_digit) {
        return out.push_str(text);
    }
    // The digits are int_part then frac_part; strip zeros at both ends.
    let total = int_part.len() + frac_part.len();
    let digit = |i: usize| {
        if i < int_part.len() {
            int_part[i]
        } else {
            frac_part[i - int_part.len()]
        }
    };
    let first = (0..total).find(|&i| digit(i) != b'0');
    let Some(first) = first else {
        return out.push('0');
    };
    let last = (first..total)
        .rev()
        .find(|&i| digit(i) != b'0')
        .unwrap_or(first);
    exponent += (total - 1 - last) as i64 - frac_part.len() as i64;
    if negative {
        out.push('-');
    }
    out.extend((first..=last).map(|i| char::from(digit(i))));
    if exponent != 0 {
        let _ = write!(out, "e{exponent}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn numbers_are_written_by_value() {
        assert_eq!(canonical_number("1.50"), "15e-1");
        assert_eq!(canonical_number("1.5"), "15e-1");
        assert_eq!(canonical_number("15e-1"), "15e-1");
        assert_eq!(canonical_number("100"), "1e2");
        assert_eq!(
            canonical_number("1e+100"),
            canonical_number(&format!("1{}", "0".repeat(100)))
        );
        assert_eq!(canonical_number("-0.000"), "0");
        assert_eq!(canonical_number("0"), "0");
        assert_eq!(canonical_number("-12.034"), "-12034e-3");
        assert_eq!(canonical_number("1.5e-07"), canonical_number("0.00000015"));
        assert_eq!(
            canonical_number("123456789012345678901234567890"),
            "12345678901234567890123456789e1"
        );
    }

    proptest! {
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
            // One sign at most, as JSON writes it ("e++-0" is no number;
            // stripping every '+' made the oracle accept it).
            Some(e) => match e.strip_prefix('+').unwrap_or(e).parse::<i64>() {
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
            || !int_part
                .bytes()
                .chain(frac_part.bytes())
                .all(|b| b.is_ascii_digit())
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
            if exponent != 0 {
                format!("e{exponent}")
            } else {
                String::new()
            }
        )
    }

    proptest! {
        #[test]
        fn canonical_number_matches_its_reference(text in "-?[0-9]{1,6}(\\.[0-9]{0,5})?([eE][+-]?[0-9]{1,3})?|[-+.eE0-9]{0,6}") {
            prop_assert_eq!(canonical_number(&text), canonical_number_reference(&text));
        }
    }

    #[test]
    fn oracle_agrees_on_a_doubled_exponent_sign() {
        // Found by the proptest above: not a number, returned as given.
        assert_eq!(
            canonical_number("0e++-0"),
            canonical_number_reference("0e++-0")
        );
        assert_eq!(canonical_number("0e++-0"), "0e++-0");
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
}
