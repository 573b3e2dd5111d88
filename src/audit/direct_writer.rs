//! Writes audit rows straight into their month's partition of
//! `saas.audit_log`: the partition is found from the parent's partition
//! descriptor, the row stored with the table AM and its index entries added,
//! the way PostgreSQL writes catalog rows (`CatalogTupleInsert`). No
//! executor start-up, no plan, no tuple routing per row: that start-up was
//! most of the row trigger's cost.
//!
//! Wherever PostgreSQL would have to check something this writer does not,
//! the row is left to the caller, which writes it with an ordinary INSERT
//! (`write` returns false): a partition with CHECK constraints, insert
//! triggers, expression, partial, exclusion or deferred indexes, columns
//! the log does not have, a foreign-table partition, an insert trigger on
//! the log itself, or a row that a hand-added NOT NULL refuses. With
//! `saas.audit_direct_writer` off it declines every row.

use super::jsonb::{inet, jsonb, uuid, varlena};
use super::record::AuditRecord;
use crate::gucs::AUDIT_DIRECT_WRITER;
use crate::partitions::routing::{range_partition_for, RangeBound};
use pgrx::pg_sys;
use std::ffi::CStr;

/// The log's columns, in the order [`LogWriter::write`] fills them (and
/// the fallback INSERTs name them).
pub(super) const COLUMNS: [(&str, pg_sys::Oid); 18] = [
    ("tenant_id", pg_sys::UUIDOID),
    ("id", pg_sys::INT8OID),
    ("logged_at", pg_sys::TIMESTAMPTZOID),
    ("txid", pg_sys::INT8OID),
    ("actor_id", pg_sys::UUIDOID),
    ("actor_role", pg_sys::TEXTOID),
    ("operation", pg_sys::TEXTOID),
    ("schema_name", pg_sys::TEXTOID),
    ("table_name", pg_sys::TEXTOID),
    ("record_key", pg_sys::JSONBOID),
    ("old_values", pg_sys::JSONBOID),
    ("new_values", pg_sys::JSONBOID),
    ("client_ip", pg_sys::INETOID),
    ("user_agent", pg_sys::TEXTOID),
    ("request_id", pg_sys::TEXTOID),
    ("request_method", pg_sys::TEXTOID),
    ("request_path", pg_sys::TEXTOID),
    ("row_hash", pg_sys::BYTEAOID),
];

/// One audit row, its values already computed (ids, hash, row images).
pub(super) struct LogRow<'a> {
    pub record: &'a AuditRecord,
    pub tenant_id: [u8; 16],
    pub actor_id: Option<[u8; 16]>,
    /// PostgreSQL timestamp (microseconds since 2000-01-01).
    pub logged_at: i64,
    pub row_hash: &'a [u8],
}

/// The parent's partition bounds, read once per writer.
struct Routes {
    bounds: Vec<RangeBound>,
    indexes: Vec<i32>,
    default_index: i32,
    /// Each partition's oid and whether it is a leaf.
    partitions: Vec<(pg_sys::Oid, bool)>,
}

impl Routes {
    ///
    /// # Safety
    ///
    /// `parent` is open and locked.
    unsafe fn of(parent: pg_sys::Relation) -> Option<Routes> {
        // SAFETY: the caller upholds the contract under # Safety above.
        unsafe {
            let desc = pg_sys::RelationGetPartitionDesc(parent, true);
            if desc.is_null() || (*desc).boundinfo.is_null() {
                return None;
            }
            let b = &*(*desc).boundinfo;
            if b.strategy as u8 != pg_sys::PARTITION_STRATEGY_RANGE || b.kind.is_null() {
                return None;
            }
            let bounds = (0..usize::try_from(b.ndatums).ok()?)
                .map(|i| match **b.kind.add(i) {
                    pg_sys::PartitionRangeDatumKind::PARTITION_RANGE_DATUM_MINVALUE => {
                        RangeBound::Min
                    }
                    pg_sys::PartitionRangeDatumKind::PARTITION_RANGE_DATUM_MAXVALUE => {
                        RangeBound::Max
                    }
                    _ => RangeBound::Value((**b.datums.add(i)).value() as i64),
                })
                .collect();
            let indexes =
                std::slice::from_raw_parts(b.indexes, usize::try_from(b.nindexes).ok()?).to_vec();
            let partitions = (0..usize::try_from((*desc).nparts).ok()?)
                .map(|i| (*(*desc).oids.add(i), *(*desc).is_leaf.add(i)))
                .collect();
            Some(Routes {
                bounds,
                indexes,
                default_index: b.default_index,
                partitions,
            })
        }
    }
}

/// Rows a many-row writer gathers before one `table_multi_insert` (COPY
/// buffers up to 1,000); their values live in the writer's row memory
/// until then.
const BATCH_ROWS: usize = 256;

/// A partition open for direct writes.
struct Sink {
    oid: pg_sys::Oid,
    rel: pg_sys::Relation,
    /// One slot for a single-row writer; up to [`BATCH_ROWS`] for a batch.
    slots: Vec<*mut pg_sys::TupleTableSlot>,
    /// Filled slots not yet written.
    pending: usize,
    indexes: Vec<(pg_sys::Relation, *mut pg_sys::IndexInfo)>,
    /// For each of [`COLUMNS`], its attribute index in the partition.
    attr_of: [usize; 18],
    not_null: [bool; 18],
    /// For a call that writes many rows: keeps the page being filled pinned
    /// between batches (as COPY does); NULL for a single row.
    bulk: pg_sys::BulkInsertState,
}

impl Sink {
    fn batched(&self) -> bool {
        !self.bulk.is_null()
    }

    /// Writes the pending rows and their index entries.
    ///
    /// # Safety
    ///
    /// the sink is open; pending slots hold rows of its partition.
    unsafe fn flush(&mut self) {
        // SAFETY: the caller upholds the contract under # Safety above.
        unsafe {
            if self.pending == 0 {
                return;
            }
            // table_tuple_insert / table_multi_insert are inline functions in
            // C: the partition's table AM.
            let am = &*(*self.rel).rd_tableam;
            let cid = pg_sys::GetCurrentCommandId(true);
            if self.batched() {
                let insert = am.multi_insert.expect("every table AM inserts");
                insert(
                    self.rel,
                    self.slots.as_mut_ptr(),
                    self.pending as i32,
                    cid,
                    0,
                    self.bulk,
                );
            } else {
                let insert = am.tuple_insert.expect("every table AM inserts");
                insert(self.rel, self.slots[0], cid, 0, std::ptr::null_mut());
            }
            for &slot in &self.slots[..self.pending] {
                insert_index_entries(self, slot);
            }
            self.pending = 0;
        }
    }
}

// One per writer, on the stack: boxing the sink would allocate per call.
#[allow(clippy::large_enum_variant)]
enum Target {
    Direct(Sink),
    /// A partition this writer leaves to the caller's INSERT.
    Declined(pg_sys::Oid),
}

/// Open for one trigger call (its relations and memory belong to it).
pub(super) struct LogWriter {
    parent: pg_sys::Relation,
    /// Rows may be written directly: `saas.audit_direct_writer` is on, the
    /// log has no insert trigger, and it routes rows by its one timestamptz
    /// key (checked once per backend from the catalog, see `log_target`).
    /// When false, every row is declined.
    routable: bool,
    target: Option<Target>,
    /// Read on the first row.
    routes: Option<Option<Routes>>,
    /// Reset after each row when a call writes many; a single row's values
    /// go with the trigger call's own memory.
    row_memory: Option<pg_sys::MemoryContext>,
}

impl LogWriter {
    /// Locks the log as an INSERT would (RowExclusiveLock, until the end of
    /// the transaction), to write `rows` rows.
    pub(super) fn open(log: pg_sys::Oid, routable: bool, rows: usize) -> LogWriter {
        // SAFETY: the oid is the log's (log_target's cache is cleared on any
        // pg_class change); the memory context is a child of the trigger's.
        unsafe {
            let parent = pg_sys::table_open(log, pg_sys::RowExclusiveLock as i32);
            let parent_triggers = (*parent).trigdesc;
            let routable = routable
                && AUDIT_DIRECT_WRITER.get()
                && (parent_triggers.is_null() || !has_insert_triggers(&*parent_triggers));
            let row_memory = (rows > 1).then(|| {
                pg_sys::AllocSetContextCreateInternal(
                    pg_sys::CurrentMemoryContext,
                    c"pg_saas audit row".as_ptr(),
                    0,
                    8 * 1024,
                    8 * 1024 * 1024,
                )
            });
            LogWriter {
                parent,
                routable,
                target: None,
                routes: None,
                row_memory,
            }
        }
    }

    /// Writes `row` into its partition; false when it is left to the caller.
    pub(super) fn write(&mut self, row: &LogRow<'_>) -> bool {
        if !self.routable {
            return false;
        }
        let Some(oid) = self.partition_for(row.logged_at) else {
            return false;
        };
        let current = match &self.target {
            Some(Target::Direct(s)) => s.oid,
            Some(Target::Declined(o)) => *o,
            None => pg_sys::InvalidOid,
        };
        if current != oid {
            self.close_target();
            // SAFETY: a leaf partition of the locked parent.
            self.target = Some(unsafe { open_target(oid, self.row_memory.is_some()) });
        }
        let Some(Target::Direct(sink)) = &mut self.target else {
            return false;
        };
        // SAFETY: the sink's relation, slots and indexes are open; a batch's
        // values are built in the row context, reset once they are written.
        unsafe {
            let Some(memory) = self.row_memory else {
                let stored = store(sink, row);
                sink.flush();
                return stored;
            };
            let old = pg_sys::MemoryContextSwitchTo(memory);
            let stored = store(sink, row);
            if sink.pending == BATCH_ROWS {
                sink.flush();
            }
            pg_sys::MemoryContextSwitchTo(old);
            if sink.pending == 0 {
                pg_sys::MemoryContextReset(memory);
            }
            stored
        }
    }

    /// The leaf partition the parent would route `logged_at` to; None when
    /// it has none or is not plainly range-partitioned (the INSERT reports).
    fn partition_for(&mut self, logged_at: i64) -> Option<pg_sys::Oid> {
        if self.routes.is_none() {
            // SAFETY: the parent is open and locked, so its descriptor stays
            // as read for the whole call.
            self.routes = Some(unsafe { Routes::of(self.parent) });
        }
        let routes = self.routes.as_ref()?.as_ref()?;
        let part = range_partition_for(
            &routes.bounds,
            &routes.indexes,
            routes.default_index,
            logged_at,
        )?;
        // Not the default partition: a month being rescued out of it may be
        // attached while this call runs (ATTACH does not wait for writers),
        // and a row written there directly would skip the partition
        // constraint that catches that, and stay in the default for good.
        // The INSERT routes such rows, checked. (Premade months make this rare.)
        if i32::try_from(part).ok() == Some(routes.default_index) {
            return None;
        }
        match routes.partitions.get(part) {
            Some(&(oid, true)) => Some(oid),
            _ => None, // a sub-partitioned partition: the INSERT routes it
        }
    }

    /// Writes what the partition's batch holds and closes it.
    fn close_target(&mut self) {
        if let Some(Target::Direct(mut sink)) = self.target.take() {
            // SAFETY: opened by open_target; locks stay until the transaction ends.
            unsafe {
                sink.flush();
                if let Some(memory) = self.row_memory {
                    pg_sys::MemoryContextReset(memory);
                }
                for &slot in &sink.slots {
                    pg_sys::ExecDropSingleTupleTableSlot(slot);
                }
                if !sink.bulk.is_null() {
                    pg_sys::FreeBulkInsertState(sink.bulk);
                }
                for (index, _) in sink.indexes {
                    pg_sys::index_close(index, pg_sys::NoLock as i32);
                }
                pg_sys::table_close(sink.rel, pg_sys::NoLock as i32);
            }
        }
    }

    /// Releases the relations (their locks stay until the transaction ends).
    /// Not a Drop: after an ERROR, transaction abort releases them.
    pub(super) fn close(mut self) {
        self.close_target();
        // SAFETY: opened in `open`.
        unsafe {
            if let Some(memory) = self.row_memory {
                pg_sys::MemoryContextDelete(memory);
            }
            pg_sys::table_close(self.parent, pg_sys::NoLock as i32);
        }
    }
}

fn has_insert_triggers(t: &pg_sys::TriggerDesc) -> bool {
    t.trig_insert_before_row
        || t.trig_insert_after_row
        || t.trig_insert_instead_row
        || t.trig_insert_before_statement
        || t.trig_insert_after_statement
        || t.trig_insert_new_table
}

/// Opens a partition for direct writes, or declines it (see the module doc).
///
/// # Safety
///
/// `oid` is a leaf partition of the log, whose parent is open and locked.
unsafe fn open_target(oid: pg_sys::Oid, bulk: bool) -> Target {
    // SAFETY: the caller upholds the contract under # Safety above.
    unsafe {
        let rel = pg_sys::table_open(oid, pg_sys::RowExclusiveLock as i32);
        let declined = |rel: pg_sys::Relation| {
            pg_sys::table_close(rel, pg_sys::NoLock as i32);
            Target::Declined(oid)
        };
        let form = &*(*rel).rd_rel;
        if form.relkind as u8 != pg_sys::RELKIND_RELATION
            || (!(*rel).trigdesc.is_null() && has_insert_triggers(&*(*rel).trigdesc))
        {
            return declined(rel);
        }
        let desc = (*rel).rd_att;
        if !(*desc).constr.is_null()
            && ((*(*desc).constr).num_check > 0 || (*(*desc).constr).has_generated_stored)
        {
            return declined(rel);
        }
        let mut attr_of = [usize::MAX; 18];
        let mut not_null = [false; 18];
        let attrs = (*desc).attrs.as_slice((*desc).natts as usize);
        for (i, a) in attrs.iter().enumerate() {
            if a.attisdropped {
                continue;
            }
            let name = CStr::from_ptr(a.attname.data.as_ptr()).to_bytes();
            match COLUMNS.iter().position(|(c, _)| c.as_bytes() == name) {
                Some(c) if COLUMNS[c].1 == a.atttypid && a.attgenerated == 0 => {
                    attr_of[c] = i;
                    not_null[c] = a.attnotnull;
                }
                _ => return declined(rel),
            }
        }
        if attr_of.contains(&usize::MAX) {
            return declined(rel);
        }
        let mut indexes = Vec::new();
        let list = pg_sys::RelationGetIndexList(rel);
        let count = if list.is_null() {
            0
        } else {
            (*list).length as usize
        };
        let mut usable = true;
        for i in 0..count {
            let index_oid = (*(*list).elements.add(i)).oid_value;
            let index = pg_sys::index_open(index_oid, pg_sys::RowExclusiveLock as i32);
            let info = pg_sys::BuildIndexInfo(index);
            let deferred = !(*(*index).rd_index).indimmediate;
            if !(*info).ii_Expressions.is_null()
                || !(*info).ii_Predicate.is_null()
                || !(*info).ii_ExclusionOps.is_null()
                || deferred
            {
                usable = false;
            }
            indexes.push((index, info));
        }
        if !list.is_null() {
            pg_sys::list_free(list);
        }
        if !usable {
            for (index, _) in indexes {
                pg_sys::index_close(index, pg_sys::NoLock as i32);
            }
            return declined(rel);
        }
        let slots = (0..if bulk { BATCH_ROWS } else { 1 })
            .map(|_| pg_sys::table_slot_create(rel, std::ptr::null_mut()))
            .collect();
        Target::Direct(Sink {
            oid,
            rel,
            slots,
            pending: 0,
            indexes,
            attr_of,
            not_null,
            bulk: if bulk {
                pg_sys::GetBulkInsertState()
            } else {
                std::ptr::null_mut()
            },
        })
    }
}

/// Puts one row in the sink's next slot (written by [`Sink::flush`]);
/// false (nothing kept) when a NULL meets a NOT NULL column, so the
/// caller's INSERT reports it.
///
/// # Safety
///
/// The sink is open (`open_target`) and has a free slot (`pending <
/// slots.len()`); the row's datums are built in the current memory context.
unsafe fn store(sink: &mut Sink, row: &LogRow<'_>) -> bool {
    // SAFETY: the caller upholds the contract under # Safety above.
    unsafe {
        let r = row.record;
        let text = |v: Option<&str>| v.map(|s| varlena(s.as_bytes()));
        let values: [Option<pg_sys::Datum>; 18] = [
            Some(uuid(&row.tenant_id)),
            Some(pg_sys::Datum::from(r.id)),
            Some(pg_sys::Datum::from(row.logged_at)),
            Some(pg_sys::Datum::from(r.txid)),
            row.actor_id.as_ref().map(|u| uuid(u)),
            text(r.actor_role.as_deref()),
            text(Some(&r.operation)),
            text(Some(&r.schema_name)),
            text(Some(&r.table_name)),
            r.record_key.as_ref().map(|o| jsonb(o)),
            r.old_values.as_ref().map(|o| jsonb(o)),
            r.new_values.as_ref().map(|o| jsonb(o)),
            r.client_ip.as_deref().map(|ip| inet(ip)),
            text(r.user_agent.as_deref()),
            text(r.request_id.as_deref()),
            text(r.request_method.as_deref()),
            text(r.request_path.as_deref()),
            Some(varlena(row.row_hash)),
        ];
        if values
            .iter()
            .zip(sink.not_null)
            .any(|(v, nn)| nn && v.is_none())
        {
            return false;
        }
        let slot = sink.slots[sink.pending];
        pg_sys::ExecClearTuple(slot);
        let natts = (*(*slot).tts_tupleDescriptor).natts as usize;
        let datums = std::slice::from_raw_parts_mut((*slot).tts_values, natts);
        let nulls = std::slice::from_raw_parts_mut((*slot).tts_isnull, natts);
        // Dropped columns stay NULL.
        nulls.fill(true);
        for (c, v) in values.into_iter().enumerate() {
            let a = sink.attr_of[c];
            nulls[a] = v.is_none();
            datums[a] = v.unwrap_or(pg_sys::Datum::from(0));
        }
        pg_sys::ExecStoreVirtualTuple(slot);
        sink.pending += 1;
        true
    }
}

/// Adds a written row's entries to the partition's indexes.
///
/// # Safety
///
/// The sink is open and `slot` holds a row just stored into its partition.
unsafe fn insert_index_entries(sink: &Sink, slot: *mut pg_sys::TupleTableSlot) {
    // SAFETY: the caller upholds the contract under # Safety above.
    unsafe {
        let mut key_values = [pg_sys::Datum::from(0); pg_sys::INDEX_MAX_KEYS as usize];
        let mut key_nulls = [false; pg_sys::INDEX_MAX_KEYS as usize];
        for &(index, info) in &sink.indexes {
            if !(*info).ii_ReadyForInserts {
                continue; // being built concurrently: it will index the row itself
            }
            pg_sys::FormIndexDatum(
                info,
                slot,
                std::ptr::null_mut(),
                key_values.as_mut_ptr(),
                key_nulls.as_mut_ptr(),
            );
            let unique = if (*(*index).rd_index).indisunique {
                pg_sys::IndexUniqueCheck::UNIQUE_CHECK_YES
            } else {
                pg_sys::IndexUniqueCheck::UNIQUE_CHECK_NO
            };
            pg_sys::index_insert(
                index,
                key_values.as_mut_ptr(),
                key_nulls.as_mut_ptr(),
                &mut (*slot).tts_tid,
                sink.rel,
                unique,
                false,
                info,
            );
        }
    }
}
