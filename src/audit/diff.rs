//! Which columns a row change writes: old and new images without ignored
//! columns (only the changed ones for `changed_only`), and the record's
//! key. Pure Rust.

use super::json_object::{JsonObject, Member};

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
            let changed: Vec<String> = n
                .keys()
                .chain(o.keys())
                .filter(|k| !same(&o, &n, k))
                .map(str::to_owned)
                .collect();
            if changed.is_empty() {
                return None;
            }
            if changed_only {
                o.retain(|k| changed.iter().any(|c| c == k));
                n.retain(|k| changed.iter().any(|c| c == k));
            }
            Some(Change {
                old_values: Some(o),
                new_values: Some(n),
            })
        }
        (o, n) => Some(Change {
            old_values: o,
            new_values: n,
        }),
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

#[cfg(test)]
mod tests {
    use super::*;

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
            change_of(
                Some(old.clone()),
                Some(new.clone()),
                &["updated_at".into()],
                true
            ),
            None
        );
        let c = change_of(Some(old), Some(new), &[], true).unwrap();
        assert_eq!(
            text_of(&c.old_values).as_deref(),
            Some(r#"{"updated_at":"t1"}"#)
        );
        assert_eq!(
            text_of(&c.new_values).as_deref(),
            Some(r#"{"updated_at":"t2"}"#)
        );
    }

    #[test]
    fn full_images_keep_every_column_but_ignored_ones() {
        let old = obj(r#"{"id": 1, "name": "a", "secret": "s"}"#);
        let new = obj(r#"{"id": 1, "name": "b", "secret": "s2"}"#);
        let c = change_of(Some(old), Some(new), &["secret".into()], false).unwrap();
        assert_eq!(
            text_of(&c.old_values).as_deref(),
            Some(r#"{"id":1,"name":"a"}"#)
        );
        assert_eq!(
            text_of(&c.new_values).as_deref(),
            Some(r#"{"id":1,"name":"b"}"#)
        );
        let ins = change_of(
            None,
            Some(obj(r#"{"id": 2, "secret": "x"}"#)),
            &["secret".into()],
            true,
        )
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
        assert_eq!(
            text_of(&c.new_values).as_deref(),
            Some(r#"{"j":{"a": 1},"n":1.50}"#)
        );
        // ... and both spellings hash alike.
        assert_eq!(
            c.old_values.unwrap().canonical(),
            c.new_values.unwrap().canonical()
        );
        // A column that disappears counts as changed.
        let gone = change_of(
            Some(obj(r#"{"a": 1, "b": 2}"#)),
            Some(obj(r#"{"a": 1}"#)),
            &[],
            true,
        )
        .unwrap();
        assert_eq!(text_of(&gone.old_values).as_deref(), Some(r#"{"b":2}"#));
    }

    #[test]
    fn record_key_falls_back_to_the_row() {
        let row = obj(r#"{"a": 1, "b": 2}"#);
        assert_eq!(record_key(&row, &["b".into()]).text(), r#"{"b":2}"#);
        assert_eq!(
            record_key(&row, &["b".into(), "zz".into()]).text(),
            r#"{"b":2,"zz":null}"#
        );
        assert_eq!(record_key(&row, &[]).text(), r#"{"a":1,"b":2}"#);
    }
}
