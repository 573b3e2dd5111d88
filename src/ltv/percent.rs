//! A numeric argument read straight from PostgreSQL's on-disk numeric
//! format (base-10000 digits, a weight, a sign), without the string round
//! trip `numeric::float8` makes: what `retention_risk` needs is a value that
//! compares with whole-number thresholds exactly.
//!
//! A value x = s·(I + φ) (I whole, 0 <= φ < 1) becomes s·(I + φ'), where φ'
//! is 0.5 when φ > 0 and 0 otherwise: for every whole t, x < t exactly when
//! the result is < t, x > t exactly when it is > t; so thresholds (whole
//! numbers, checked by `risk::RiskRules`) and the 0-100 range are decided
//! exactly, as numeric comparison would.

const NUMERIC_SIGN_MASK: u16 = 0xC000;
const NUMERIC_NEG: u16 = 0x4000;
const NUMERIC_SHORT: u16 = 0x8000;
const NUMERIC_SPECIAL: u16 = 0xC000;
const NUMERIC_SHORT_SIGN_MASK: u16 = 0x2000;
const NUMERIC_SHORT_WEIGHT_SIGN_MASK: u16 = 0x0040;
const NUMERIC_SHORT_WEIGHT_MASK: u16 = 0x003F;

/// The comparison value of a numeric's bytes (after the varlena header), or
/// None for NaN and infinities.
pub fn comparable(data: &[u8]) -> Option<f64> {
    let u16_at =
        |i: usize| -> Option<u16> { Some(u16::from_ne_bytes([*data.get(i)?, *data.get(i + 1)?])) };
    let header = u16_at(0)?;
    let flags = header & NUMERIC_SIGN_MASK;
    if flags == NUMERIC_SPECIAL {
        return None;
    }
    let (negative, weight, digits_at) = if flags == NUMERIC_SHORT {
        let w = (header & NUMERIC_SHORT_WEIGHT_MASK) as i32;
        let w = if header & NUMERIC_SHORT_WEIGHT_SIGN_MASK != 0 {
            w - 64
        } else {
            w
        };
        (header & NUMERIC_SHORT_SIGN_MASK != 0, w, 2)
    } else {
        // long format: n_sign_dscale, then n_weight (int16)
        let w = u16_at(2)? as i16 as i32;
        (flags == NUMERIC_NEG, w, 4)
    };
    let digits = data.get(digits_at..)?;
    let mut int_part: f64 = 0.0;
    let mut fraction = false;
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        let d = u16::from_ne_bytes([pair[0], pair[1]]) as f64;
        let exp = weight - i as i32;
        if exp >= 0 {
            // saturates to huge values (out of any range) rather than wrap
            int_part += d * 10000f64.powi(exp);
        } else if d != 0.0 {
            fraction = true;
        }
    }
    let v = int_part + if fraction { 0.5 } else { 0.0 };
    Some(if negative { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(negative: bool, weight: i32, digits: &[u16]) -> Vec<u8> {
        let mut h = NUMERIC_SHORT;
        if negative {
            h |= NUMERIC_SHORT_SIGN_MASK;
        }
        let w = if weight < 0 {
            (weight + 64) as u16 | NUMERIC_SHORT_WEIGHT_SIGN_MASK
        } else {
            weight as u16
        };
        h |= w & (NUMERIC_SHORT_WEIGHT_MASK | NUMERIC_SHORT_WEIGHT_SIGN_MASK);
        let mut v = h.to_ne_bytes().to_vec();
        for d in digits {
            v.extend(d.to_ne_bytes());
        }
        v
    }

    #[test]
    fn decodes_whole_and_fractional_values() {
        assert_eq!(comparable(&short(false, 0, &[50])), Some(50.0));
        assert_eq!(comparable(&short(false, 0, &[49, 9999])), Some(49.5)); // 49.9999
        assert_eq!(comparable(&short(false, 0, &[100])), Some(100.0));
        assert_eq!(comparable(&short(false, 0, &[100, 1])), Some(100.5)); // 100.0001
        assert_eq!(comparable(&short(false, -1, &[5000])), Some(0.5)); // 0.5
        assert_eq!(comparable(&short(true, 0, &[1])), Some(-1.0));
        assert_eq!(comparable(&short(false, 1, &[1, 0])), Some(10000.0));
        assert_eq!(comparable(&short(false, 0, &[])), Some(0.0)); // zero has no digits
                                                                  // long format, weight 0, 70
        let mut long = 0u16.to_ne_bytes().to_vec();
        long.extend(0i16.to_ne_bytes());
        long.extend(70u16.to_ne_bytes());
        assert_eq!(comparable(&long), Some(70.0));
        assert_eq!(comparable(&NUMERIC_SPECIAL.to_ne_bytes()), None);
    }

    #[test]
    fn whole_thresholds_decide_as_the_exact_value() {
        // x = I + φ: every whole t compares the same way with x and the result
        for (x, i, frac) in [(49.99, 49u16, 9900u16), (50.0, 50, 0), (69.0001, 69, 1)] {
            let c = comparable(&short(false, 0, &[i, frac])).unwrap();
            for t in 0..=101 {
                let t = t as f64;
                assert_eq!(x < t, c < t, "{x} < {t}");
                assert_eq!(x > t, c > t, "{x} > {t}");
            }
        }
    }
}
