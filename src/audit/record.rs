//! What is hashed: an audit row ([`AuditRecord`]), the running digest of a
//! seal's rows ([`RowsDigest`]) and a seal ([`Seal`]). Pure Rust.

use super::canonical::{canonical_json, write_string};
use super::canonical_number::write_canonical_number;
use super::json_object::JsonObject;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fmt::Write;

pub type Hash = [u8; 32];

/// Microseconds between 1970-01-01 and 2000-01-01 (PostgreSQL's epoch).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

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
        let mut w = ObjectWriter {
            out: String::with_capacity(capacity),
            first: true,
        };
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RowsDigest {
    pub digest: Hash,
    pub count: i64,
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
/// by transactions with ids in `[xid_from, xid_to)` and, from 0.2.0, logged
/// in one month of the log, `[month_from, month_to)`: a seal never spans a
/// month, so retention retires whole seals. A seal of 0.1.0 has no month and
/// covers its range in every month.
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
    /// The month of the log the seal covers (unix micros, end exclusive);
    /// `None` for a seal made before 0.2.0.
    pub month: Option<(i64, i64)>,
    /// For a re-seal: the number of the 0.1.0 seal (no month) whose rows of
    /// `month` it seals again, so that retiring one of that seal's months
    /// leaves the others checked.
    pub reseals: Option<i64>,
}

impl Seal {
    /// The canonical JSON the seal hash is taken over. A 0.1.0 seal has the
    /// ten keys it always had (its hash is unchanged); a seal with a month
    /// adds `month_from` and `month_to`, a re-seal `reseals` too.
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
        if let Some((from, to)) = self.month {
            m.insert("month_from".into(), Value::from(from));
            m.insert("month_to".into(), Value::from(to));
        }
        if let Some(n) = self.reseals {
            m.insert("reseals".into(), Value::from(n));
        }
        canonical_json(&Value::Object(m))
    }

    pub fn hash(&self) -> Hash {
        sha256(self.canonical().as_bytes())
    }

    /// Whether a row logged at `at` (unix micros) lies in the seal's month
    /// (any time, for a 0.1.0 seal).
    pub fn covers_time(&self, at: i64) -> bool {
        self.month.is_none_or(|(from, to)| at >= from && at < to)
    }

    /// Whether a row of the seal's tenant with transaction id `txid`,
    /// logged at `at`, is one of the seal's rows.
    pub fn covers(&self, txid: i64, at: i64) -> bool {
        txid >= self.xid_from && txid < self.xid_to && self.covers_time(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(text: &str) -> JsonObject {
        JsonObject::parse(text).unwrap()
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
            v.as_ref()
                .map_or(Value::Null, |o| serde_json::from_str(&o.text()).unwrap())
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

    fn seal() -> Seal {
        Seal {
            tenant_id: "00000000-0000-0000-0000-000000000001".into(),
            seal_no: 3,
            xid_from: 100,
            xid_to: 200,
            row_count: 2,
            rows_digest: [0xab; 32],
            prev_hash: [0x01; 32],
            sealed_at_unix_micros: 1_700_000_000_000_000,
            first_logged_at: 1_699_999_000_000_000,
            last_logged_at: 1_699_999_500_000_000,
            month: None,
            reseals: None,
        }
    }

    /// A seal made by 0.1.0 (no month) hashes as it always did: its
    /// canonical text is the ten keys it had, so old chains still verify.
    #[test]
    fn a_seal_without_a_month_hashes_as_in_0_1_0() {
        let s = seal();
        let ab = "ab".repeat(32);
        let one = "01".repeat(32);
        assert_eq!(
            s.canonical(),
            format!(
                "{{\"first_logged_at\":1699999e9,\"last_logged_at\":16999995e8,\"prev_hash\":\"{one}\",\
                 \"row_count\":2,\"rows_digest\":\"{ab}\",\"seal_no\":3,\"sealed_at\":17e14,\
                 \"tenant_id\":\"00000000-0000-0000-0000-000000000001\",\"xid_from\":1e2,\"xid_to\":2e2}}"
            )
        );
    }

    #[test]
    fn a_seal_s_month_and_reseal_are_hashed() {
        let legacy = seal();
        let mut month = seal();
        month.month = Some((1_698_796_800_000_000, 1_701_388_800_000_000));
        assert_ne!(month.hash(), legacy.hash());
        assert!(month.canonical().contains("\"month_from\":16987968e8"));
        let mut other_month = month.clone();
        other_month.month = Some((1_701_388_800_000_000, 1_704_067_200_000_000));
        assert_ne!(other_month.hash(), month.hash());
        let mut reseal = month.clone();
        reseal.reseals = Some(1);
        assert_ne!(reseal.hash(), month.hash());
        assert!(reseal.canonical().contains("\"reseals\":1"));
    }

    #[test]
    fn a_seal_covers_its_range_and_month() {
        let legacy = seal();
        assert!(legacy.covers(100, i64::MIN) && legacy.covers(199, i64::MAX));
        assert!(!legacy.covers(99, 0) && !legacy.covers(200, 0));
        let mut month = seal();
        month.month = Some((1_000, 2_000));
        assert!(month.covers(150, 1_000) && month.covers(150, 1_999));
        assert!(!month.covers(150, 999) && !month.covers(150, 2_000));
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
}
