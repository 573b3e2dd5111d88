//! The uuid of the pure code: 16 bytes, parsed and printed as PostgreSQL
//! does. Shared by tenancy (tenants, users), audit and rate limits; the glue
//! converts it to pgrx's type (`pgutil::to_pg_uuid`).

use std::fmt;

/// A uuid as 16 bytes, parsed the way PostgreSQL's `uuid_in` accepts it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// Accepts what PostgreSQL accepts: 32 hex digits, optionally in braces,
    /// with an optional hyphen after any group of four digits.
    pub fn parse(text: &str) -> Option<Uuid> {
        let s = text.trim();
        let s = match (s.strip_prefix('{'), s.ends_with('}')) {
            (Some(rest), true) => &rest[..rest.len() - 1],
            (None, false) => s,
            _ => return None,
        };
        let mut bytes = [0u8; 16];
        let mut digits = 0usize;
        let mut prev_hyphen = true; // no hyphen allowed at the start
        for c in s.chars() {
            if c == '-' {
                if prev_hyphen || !digits.is_multiple_of(4) || digits == 32 {
                    return None;
                }
                prev_hyphen = true;
                continue;
            }
            let v = c.to_digit(16)? as u8;
            if digits == 32 {
                return None;
            }
            bytes[digits / 2] |= if digits.is_multiple_of(2) { v << 4 } else { v };
            digits += 1;
            prev_hyphen = false;
        }
        if digits != 32 || (prev_hyphen && !s.is_empty()) {
            return None;
        }
        Some(Uuid(bytes))
    }
}

impl fmt::Display for Uuid {
    /// The canonical lower-case, hyphenated form PostgreSQL prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn uuid_forms_postgres_accepts() {
        let canon = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
        for form in [
            "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
            "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
            "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
        ] {
            assert_eq!(
                Uuid::parse(form).map(|x| x.to_string()).as_deref(),
                Some(canon),
                "{form}"
            );
        }
        for bad in [
            "",
            "a0eebc99",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
            "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
            "-a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "a0eebc999c0b4ef8bb6d6bb9bd380a11-",
            "a0e-ebc999c0b4ef8bb6d6bb9bd380a11",
            "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
            "{a0eebc999c0b4ef8bb6d6bb9bd380a11",
            "g0eebc999c0b4ef8bb6d6bb9bd380a11",
        ] {
            assert_eq!(Uuid::parse(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn uuid_display_parse_roundtrip(bytes in any::<[u8; 16]>()) {
            let id = Uuid(bytes);
            prop_assert_eq!(Uuid::parse(&id.to_string()), Some(id));
            prop_assert_eq!(Uuid::parse(&id.to_string().to_uppercase()), Some(id));
            prop_assert_eq!(Uuid::parse(&format!("{{{id}}}")), Some(id));
            prop_assert_eq!(Uuid::parse(&id.to_string().replace('-', "")), Some(id));
        }
    }
}
