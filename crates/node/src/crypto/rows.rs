//! The node's own rows for a crypto-mode query: consent applied,
//! identities normalised and hashed to the group, groups labelled,
//! per-person values bounded.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use airlock_protocol::{CryptoFragment, CryptoOutput, Predicate};
use airlock_psi::Suite;
use curve25519_dalek::ristretto::RistrettoPoint;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, UInt32Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::functions_aggregate::expr_fn::{count, sum};
use datafusion::logical_expr::{col, lit};

use super::session::*;
use crate::{Node, NodeError};

pub(super) fn cast_expr(e: datafusion::logical_expr::Expr) -> datafusion::logical_expr::Expr {
    datafusion::logical_expr::cast(e, DataType::Int64)
}

/// How many encrypted numbers per person a query needs from the
/// responder: none for counts, its measure's sum, and for an average also
/// its row count. Both sides compute it from the fragment they checked.
pub(super) fn values_needed(f: &CryptoFragment) -> usize {
    let avg = f.outputs.iter().any(|(_, o)| *o == CryptoOutput::Avg);
    match (&f.measure, avg) {
        (None, _) => 0,
        (Some(_), false) => 1,
        (Some(_), true) => 2,
    }
}

/// The responder's last message by its own groups: the protocol's
/// message, then the labels of the released groups (Arrow IPC: the group
/// index, then one column per group column), under the same tag.
/// `groups` are (index in the protocol's messages, index of `labels`).
pub(super) fn with_labels(
    m6: Vec<u8>,
    labels: &[ArrayRef],
    groups: &[(u32, u32)],
) -> Result<Vec<u8>, NodeError> {
    let idx = UInt32Array::from(groups.iter().map(|(_, o)| *o).collect::<Vec<_>>());
    let wire = UInt32Array::from(groups.iter().map(|(w, _)| *w).collect::<Vec<_>>());
    let mut fields = vec![Field::new("group", DataType::UInt32, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(wire)];
    for (i, l) in labels.iter().enumerate() {
        let a = take(l, &idx, None).map_err(|_| NodeError::Execution)?;
        fields.push(Field::new(format!("l{i}"), a.data_type().clone(), true));
        columns.push(a);
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|_| NodeError::Execution)?;
    let ipc = airlock_protocol::wire::encode_batches(&schema, &[batch])
        .map_err(|_| NodeError::Local("could not encode the labels".into()))?;
    let mut out = Vec::with_capacity(4 + m6.len() + ipc.len());
    out.extend_from_slice(&(m6.len() as u32).to_le_bytes());
    out.extend_from_slice(&m6);
    out.extend_from_slice(&ipc);
    Ok(out)
}

/// The protocol's message and the labels (group indices, and one array per
/// of the `columns` group columns) of [`with_labels`].
#[allow(clippy::type_complexity)]
pub(super) fn without_labels(
    bytes: &[u8],
    columns: usize,
) -> Result<(&[u8], (Vec<u32>, Vec<ArrayRef>)), NodeError> {
    let bad = || NodeError::BadFragment("the responder's release is malformed".into());
    let len = bytes
        .get(..4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(bad)?;
    let m6 = bytes.get(4..4 + len).ok_or_else(bad)?;
    let (schema, partitions) =
        airlock_protocol::wire::decode_partitions(bytes[4 + len..].to_vec()).map_err(|_| bad())?;
    if schema.fields().len() != columns + 1 || schema.field(0).data_type() != &DataType::UInt32 {
        return Err(bad());
    }
    let batches: Vec<RecordBatch> = partitions.into_iter().flatten().collect();
    let whole = datafusion::arrow::compute::concat_batches(&schema, &batches).map_err(|_| bad())?;
    let groups = whole
        .column(0)
        .as_primitive::<datafusion::arrow::datatypes::UInt32Type>();
    if groups.null_count() > 0 {
        return Err(bad());
    }
    Ok((
        m6,
        (groups.values().to_vec(), whole.columns()[1..].to_vec()),
    ))
}

impl Node {
    /// This node's rows of `table` for a crypto query, consent applied.
    pub(super) async fn crypto_rows(
        &self,
        f: &CryptoFragment,
        table: &str,
        filter: &Option<Predicate>,
        columns: Vec<datafusion::logical_expr::Expr>,
        group_identity: bool,
    ) -> Result<Vec<RecordBatch>, NodeError> {
        let view = self
            .view(f.purpose.as_deref(), table)
            .ok_or(NodeError::Execution)?;
        let mut df = self
            .ctx
            .read_table(view.clone())
            .map_err(|_| NodeError::Execution)?;
        if let Some(p) = filter {
            df = df
                .filter(airlock_protocol::expr::predicate_to_expr(p))
                .map_err(|_| NodeError::Execution)?;
        }
        let identity = &self
            .collab
            .table(table)
            .ok_or(NodeError::Execution)?
            .identity;
        df = df
            .filter(col(identity.as_str()).is_not_null())
            .map_err(|_| NodeError::Execution)?;
        if group_identity {
            df = df
                .aggregate(vec![col(identity.as_str())], columns)
                .map_err(|_| NodeError::Execution)?;
        } else {
            df = df.select(columns).map_err(|_| NodeError::Execution)?;
        }
        df.collect().await.map_err(|_| NodeError::Execution)
    }

    /// Hashes identifiers to the group (keyed), through the node's cache.
    pub(super) fn hash_ids(&self, ids: &[&str]) -> Result<Vec<RistrettoPoint>, NodeError> {
        let key = self.psi_hash_key()?;
        let suite = Suite::new(self.collab.id(), key);
        let cached: Vec<Option<RistrettoPoint>> = match self.psi.hashes.lock() {
            Ok(mut c) => {
                if c.0 != key {
                    *c = (key, HashMap::new());
                }
                ids.iter().map(|i| c.1.get(*i).copied()).collect()
            }
            Err(_) => vec![None; ids.len()],
        };
        let missing: Vec<&[u8]> = ids
            .iter()
            .zip(&cached)
            .filter(|(_, c)| c.is_none())
            .map(|(i, _)| i.as_bytes())
            .collect();
        let mut fresh = airlock_psi::hash_all(&suite, &missing).into_iter();
        let mut out = Vec::with_capacity(ids.len());
        let mut add = Vec::new();
        for (id, c) in ids.iter().zip(cached) {
            match c {
                Some(p) => out.push(p),
                None => {
                    let p = fresh.next().unwrap_or_default();
                    add.push(((*id).to_string(), p));
                    out.push(p);
                }
            }
        }
        if let Ok(mut c) = self.psi.hashes.lock() {
            if c.0 != key || c.1.len() + add.len() > MAX_CACHED {
                *c = (key, HashMap::new());
            }
            c.1.extend(add);
        }
        Ok(out)
    }

    /// The people of `side` (this node's table) per group of the query's
    /// group columns: each group's distinct people and, per group column,
    /// each group's label.
    pub(super) async fn group_rows(
        &self,
        f: &CryptoFragment,
        side: &airlock_protocol::CryptoSide,
        groups: Groups,
    ) -> Result<(Vec<ArrayRef>, Vec<HashSet<String>>), NodeError> {
        let table = self.collab.table(&side.table).ok_or(NodeError::Execution)?;
        let mut columns: Vec<_> = f.group_columns.iter().map(|g| col(g.as_str())).collect();
        columns.push(col(table.identity.as_str()));
        let batches = self
            .crypto_rows(f, &side.table, &side.filter, columns, false)
            .await?;
        // Distinct people per group: groups in order of first appearance
        // (one row kept per group for its labels), or exactly the listed
        // ones, whether anyone is in them or not.
        let n = f.group_columns.len();
        let opts = FormatOptions::default();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut members: Vec<HashSet<String>> = Vec::new();
        let mut firsts: Vec<(usize, u32)> = Vec::new();
        let (public, all) = match groups {
            Groups::Seen(public) => (public, None),
            Groups::All(lists) => {
                let mut combos: Vec<Vec<String>> = vec![Vec::new()];
                for l in &lists {
                    if combos.len().saturating_mul(l.len()) > airlock_psi::protocol::MAX_GROUPS {
                        return Err(refuse(
                            Some(&side.table),
                            None,
                            "the public keys of the group columns make more groups than a query may have",
                        ));
                    }
                    combos = combos
                        .iter()
                        .flat_map(|c| {
                            l.iter().map(move |k| {
                                let mut c = c.clone();
                                c.push(k.clone());
                                c
                            })
                        })
                        .collect();
                }
                for (g, c) in combos.iter().enumerate() {
                    index.insert(c.join("\u{1f}"), g);
                }
                members = vec![HashSet::new(); combos.len()];
                (vec![None; n], Some(combos))
            }
        };
        for (b_i, b) in batches.iter().enumerate() {
            let fmts = b.columns()[..n]
                .iter()
                .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| NodeError::Execution)?;
            let ids = cast(b.column(n), &DataType::Utf8).map_err(|_| NodeError::Execution)?;
            let ids = ids.as_string::<i32>();
            for row in 0..b.num_rows() {
                let key: Vec<String> = fmts
                    .iter()
                    .zip(b.columns())
                    .map(|(f, c)| {
                        if c.is_null(row) {
                            "\u{0}NULL".to_string()
                        } else {
                            f.value(row).to_string()
                        }
                    })
                    .collect();
                let listed = key
                    .iter()
                    .zip(&public)
                    .all(|(k, p)| p.as_ref().is_none_or(|p| p.contains(k)));
                if !listed {
                    continue;
                }
                let key = key.join("\u{1f}");
                let g = match (&all, index.get(&key)) {
                    (_, Some(g)) => *g,
                    (Some(_), None) => continue, // not a public key: never leaves
                    (None, None) => {
                        members.push(HashSet::new());
                        firsts.push((b_i, row as u32));
                        index.insert(key, members.len() - 1);
                        members.len() - 1
                    }
                };
                members[g].insert(ids.value(row).to_string());
            }
        }
        let mut labels = Vec::with_capacity(n);
        if let Some(combos) = all {
            let schema = self.schemas.get(&side.table).ok_or(NodeError::Execution)?;
            for (c, name) in f.group_columns.iter().enumerate() {
                let keys = datafusion::arrow::array::StringArray::from(
                    combos.iter().map(|k| k[c].as_str()).collect::<Vec<_>>(),
                );
                let field = schema
                    .field_with_name(name)
                    .map_err(|_| NodeError::Execution)?;
                labels.push(cast(&keys, field.data_type()).map_err(|_| {
                    refuse(
                        Some(&side.table),
                        Some(name),
                        "a public key is not a value of the column's type",
                    )
                })?);
            }
            return Ok((labels, members));
        }
        for c in 0..n {
            let parts: Vec<ArrayRef> = batches.iter().map(|b| b.column(c).clone()).collect();
            let all = if parts.is_empty() {
                datafusion::arrow::array::new_empty_array(&DataType::Utf8)
            } else {
                datafusion::arrow::compute::concat(
                    &parts.iter().map(|a| a.as_ref()).collect::<Vec<_>>(),
                )
                .map_err(|_| NodeError::Execution)?
            };
            let offsets: Vec<usize> = batches
                .iter()
                .scan(0usize, |acc, b| {
                    let start = *acc;
                    *acc += b.num_rows();
                    Some(start)
                })
                .collect();
            let idx = UInt32Array::from(
                firsts
                    .iter()
                    .map(|(b, r)| (offsets[*b] + *r as usize) as u32)
                    .collect::<Vec<_>>(),
            );
            labels.push(take(&all, &idx, None).map_err(|_| NodeError::Execution)?);
        }
        Ok((labels, members))
    }

    /// The people of the measure's side (this node's) with the values the
    /// query needs: exact per-person sums, or under differential privacy
    /// bounded ones.
    pub(super) async fn people_with_values(
        &self,
        f: &CryptoFragment,
        dp: Option<&CryptoDp>,
    ) -> Result<(Vec<String>, Vec<Vec<u64>>), NodeError> {
        let values = values_needed(f);
        let table = &f.measure_side().table;
        let mut aggs = Vec::new();
        if let Some(m) = &f.measure {
            let field = self
                .schemas
                .get(table)
                .and_then(|s| s.field_with_name(m).ok().cloned())
                .ok_or(NodeError::Execution)?;
            if !field.data_type().is_integer() {
                return Err(refuse(
                    Some(table),
                    Some(m),
                    "crypto mode sums integer measures only (e.g. cents)",
                ));
            }
            aggs.push(sum(col(m.as_str())).alias("s"));
        }
        aggs.push(count(lit(1)).alias("n"));
        match dp {
            Some(dp) => self.bounded_people(f, dp, values).await,
            None => self.summed_people(f, aggs, values).await,
        }
    }

    /// Each person's exact sum and row count (no differential privacy).
    pub(super) async fn summed_people(
        &self,
        f: &CryptoFragment,
        aggs: Vec<datafusion::logical_expr::Expr>,
        values: usize,
    ) -> Result<(Vec<String>, Vec<Vec<u64>>), NodeError> {
        let batches = self
            .crypto_rows(
                f,
                &f.measure_side().table,
                &f.measure_side().filter,
                aggs,
                true,
            )
            .await?;
        let mut ids: Vec<String> = Vec::new();
        let mut nums: Vec<Vec<u64>> = Vec::new();
        for b in &batches {
            let id = cast(b.column(0), &DataType::Utf8).map_err(|_| NodeError::Execution)?;
            let id = id.as_string::<i32>();
            let s = if values > 0 {
                Some(cast(b.column(1), &DataType::Int64).map_err(|_| NodeError::Execution)?)
            } else {
                None
            };
            let n = cast(b.column(b.num_columns() - 1), &DataType::Int64)
                .map_err(|_| NodeError::Execution)?;
            let n = n.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
            for row in 0..b.num_rows() {
                ids.push(id.value(row).to_string());
                let mut v = Vec::with_capacity(values);
                if let Some(s) = &s {
                    let s = s.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                    let total = if s.is_null(row) { 0 } else { s.value(row) };
                    let total = u64::try_from(total).map_err(|_| {
                        refuse(
                            Some(&f.measure_side().table),
                            f.measure.as_deref(),
                            "crypto mode sums non-negative measures; a person's total is negative",
                        )
                    })?;
                    v.push(total);
                    if values == 2 {
                        v.push(u64::try_from(n.value(row)).unwrap_or(0));
                    }
                }
                nums.push(v);
            }
        }
        Ok((ids, nums))
    }

    /// Under differential privacy: each person's sum over at most
    /// `max_rows` of its rows chosen at random, each value clamped to the
    /// rule's bounds, and the number of rows used.
    pub(super) async fn bounded_people(
        &self,
        f: &CryptoFragment,
        dp: &CryptoDp,
        values: usize,
    ) -> Result<(Vec<String>, Vec<Vec<u64>>), NodeError> {
        use rand::seq::SliceRandom;
        use rand::SeedableRng;
        let table = self
            .collab
            .table(&f.measure_side().table)
            .ok_or(NodeError::Execution)?;
        let mut columns = vec![col(table.identity.as_str())];
        if let Some(m) = &f.measure {
            columns.push(cast_expr(col(m.as_str())));
        }
        let batches = self
            .crypto_rows(
                f,
                &f.measure_side().table,
                &f.measure_side().filter,
                columns,
                false,
            )
            .await?;
        let mut people: HashMap<String, Vec<i64>> = HashMap::new();
        for b in &batches {
            let id = cast(b.column(0), &DataType::Utf8).map_err(|_| NodeError::Execution)?;
            let id = id.as_string::<i32>();
            let v = if b.num_columns() > 1 {
                Some(cast(b.column(1), &DataType::Int64).map_err(|_| NodeError::Execution)?)
            } else {
                None
            };
            for row in 0..b.num_rows() {
                let value = match &v {
                    Some(v) => {
                        let v = v.as_primitive::<datafusion::arrow::datatypes::Int64Type>();
                        if v.is_null(row) {
                            0
                        } else {
                            v.value(row)
                        }
                    }
                    None => 0,
                };
                people
                    .entry(id.value(row).to_string())
                    .or_default()
                    .push(value);
            }
        }
        let mut rng = rand::rngs::StdRng::from_entropy();
        let mut ids = Vec::with_capacity(people.len());
        let mut nums = Vec::with_capacity(people.len());
        for (id, mut rows) in people {
            if rows.len() > dp.max_rows {
                rows.shuffle(&mut rng);
                rows.truncate(dp.max_rows);
            }
            let mut v = Vec::with_capacity(values);
            if let Some((lo, hi)) = dp.bounds {
                let total: i64 = rows.iter().map(|x| (*x).clamp(lo, hi)).sum();
                v.push(u64::try_from(total).unwrap_or(0));
                if values == 2 {
                    v.push(rows.len() as u64);
                }
            }
            ids.push(id);
            nums.push(v);
        }
        Ok((ids, nums))
    }
}
