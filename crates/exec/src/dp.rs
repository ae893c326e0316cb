//! The release of a query under differential privacy, from its lower
//! plan's exact bounded aggregates.
//!
//! The guard planned the query ([`DpRelease`]: slots, mechanisms, how the
//! groups are chosen, the upper steps; its module says why the noise is
//! enough). Here every value gets discrete Laplace noise (OpenDP's exact
//! sampler, CSPRNG bits; see `airlock-privacy`), the groups that exist are
//! chosen (every public key combination, absent ones as noisy zeros, or the
//! groups whose noisy count of people passes partition selection's
//! threshold, released with the same draw), and the query's own steps above
//! the aggregate run over the noisy rows. The result's schema carries the
//! noise notes and the cost (`airlock_protocol::metadata`).

use std::collections::HashMap;
use std::sync::Arc;

use airlock_guard::dp::{DpRelease, Output, Selection};
use datafusion::arrow::array::{
    Array, ArrayRef, Float64Array, Int64Array, StringArray, UInt32Array,
};
use datafusion::arrow::compute::{cast, concat_batches, take};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::ExecError;

/// A failure of the release, with one message whatever it was: the
/// engine's text could say something about the rows (red team: Arrow's
/// "Dictionary key bigger than the key type" came through).
fn internal(_e: impl std::fmt::Display) -> ExecError {
    ExecError::Failed("the release under differential privacy failed".into())
}

fn column_i64(batch: &RecordBatch, i: usize) -> Result<Int64Array, ExecError> {
    let a = cast(batch.column(i), &DataType::Int64).map_err(internal)?;
    a.as_any()
        .downcast_ref::<Int64Array>()
        .cloned()
        .ok_or_else(|| internal("a bounded aggregate is not an integer"))
}

/// Releases a DP query: noise on every value of the lower plan's result
/// (`batches`), the groups chosen as the rules say, then the query's own
/// steps above the aggregate. Fails (releasing nothing) if noise cannot be
/// drawn.
pub async fn release(
    dp: &DpRelease,
    batches: Vec<RecordBatch>,
) -> Result<(SchemaRef, Vec<RecordBatch>), ExecError> {
    let noisy_batch = noisy_aggregate(dp, batches)?;
    run_upper(dp, noisy_batch).await
}

/// The noisy aggregate: the groups chosen as the rules say, each value with
/// its noise (before the query's own steps above the aggregate).
pub fn noisy_aggregate(
    dp: &DpRelease,
    batches: Vec<RecordBatch>,
) -> Result<RecordBatch, ExecError> {
    // No matching row is an answer like any other: public keys come out as
    // noisy zeros, partition selection keeps no group.
    let exact = match batches.first() {
        Some(first) => concat_batches(&first.schema(), &batches).map_err(internal)?,
        None => RecordBatch::new_empty(dp.lower_schema().clone()),
    };
    let n = exact.num_rows();
    let values: Vec<Int64Array> = (0..dp.slot_count())
        .map(|s| column_i64(&exact, dp.group_count() + s))
        .collect::<Result<_, _>>()?;
    let noisy = |slot: usize, row: Option<usize>| -> Result<i64, ExecError> {
        let v = row
            .filter(|r| values[slot].is_valid(*r))
            .map(|r| values[slot].value(r))
            .unwrap_or(0);
        dp.mechanism(slot)
            .release(v)
            .map_err(|e| ExecError::Failed(e.to_string()))
    };
    // The noisy counts partition selection drew, per row of `exact`.
    let mut drawn: HashMap<usize, i64> = HashMap::new();
    // Which rows (of `exact`, or absent) are released, and their group columns.
    let (rows, group_columns): (Vec<Option<usize>>, Vec<ArrayRef>) = match dp.selection() {
        Selection::Public(combos) => {
            let formats = FormatOptions::default();
            let formatters = (0..dp.group_count())
                .map(|i| ArrayFormatter::try_new(exact.column(i).as_ref(), &formats))
                .collect::<Result<Vec<_>, _>>()
                .map_err(internal)?;
            let mut index: HashMap<Vec<String>, usize> = HashMap::with_capacity(n);
            for r in 0..n {
                if (0..dp.group_count()).any(|i| exact.column(i).is_null(r)) {
                    continue;
                }
                let key = formatters.iter().map(|f| f.value(r).to_string()).collect();
                index.insert(key, r);
            }
            let rows = combos.iter().map(|c| index.get(c).copied()).collect();
            let columns = (0..dp.group_count())
                .map(|i| {
                    let strings: ArrayRef = Arc::new(StringArray::from(
                        combos.iter().map(|c| c[i].clone()).collect::<Vec<_>>(),
                    ));
                    cast(&strings, dp.upper().placeholder().field(i).data_type()).map_err(internal)
                })
                .collect::<Result<_, _>>()?;
            (rows, columns)
        }
        Selection::Threshold { slot, threshold } => {
            let mut kept = Vec::new();
            for r in 0..n {
                let v = noisy(*slot, Some(r))?;
                if v >= *threshold {
                    kept.push(r as u32);
                    // Released as drawn: the same noisy count, not a second draw.
                    drawn.insert(r, v);
                }
            }
            let idx = UInt32Array::from(kept.clone());
            let columns = (0..dp.group_count())
                .map(|i| {
                    let taken = take(exact.column(i).as_ref(), &idx, None).map_err(internal)?;
                    cast(&taken, dp.upper().placeholder().field(i).data_type()).map_err(internal)
                })
                .collect::<Result<_, _>>()?;
            (
                kept.into_iter().map(|r| Some(r as usize)).collect(),
                columns,
            )
        }
    };
    let mut columns = group_columns;
    for (j, o) in dp.outputs().iter().enumerate() {
        let ty = dp
            .upper()
            .placeholder()
            .field(dp.group_count() + j)
            .data_type();
        let array: ArrayRef = match o {
            Output::Value { slot, floor } => Arc::new(Int64Array::from(
                rows.iter()
                    .map(|r| {
                        let reused = match (dp.selection(), r) {
                            (Selection::Threshold { slot: s, .. }, Some(r)) if s == slot => {
                                drawn.get(r).copied()
                            }
                            _ => None,
                        };
                        let v = match reused {
                            Some(v) => v,
                            None => noisy(*slot, *r)?,
                        };
                        Ok(v.max(*floor))
                    })
                    .collect::<Result<Vec<_>, ExecError>>()?,
            )),
            Output::Avg { sum, count, lo, hi } => Arc::new(Float64Array::from(
                rows.iter()
                    .map(|r| {
                        let s = noisy(*sum, *r)? as f64;
                        let c = noisy(*count, *r)?.max(1) as f64;
                        Ok((s / c).clamp(*lo as f64, *hi as f64))
                    })
                    .collect::<Result<Vec<_>, ExecError>>()?,
            )),
        };
        columns.push(cast(&array, ty).map_err(internal)?);
    }
    RecordBatch::try_new(dp.upper().placeholder().clone(), columns).map_err(internal)
}

async fn run_upper(
    dp: &DpRelease,
    noisy_batch: RecordBatch,
) -> Result<(SchemaRef, Vec<RecordBatch>), ExecError> {
    let (schema, batches) = crate::upper::run(dp.upper(), vec![noisy_batch]).await?;
    let notes = serde_json::to_string(&dp.notes()).map_err(internal)?;
    let cost = serde_json::to_string(&dp.cost).map_err(internal)?;
    let mut metadata = schema.metadata().clone();
    metadata.insert(airlock_protocol::metadata::NOISE.to_string(), notes);
    metadata.insert(airlock_protocol::metadata::DP_COST.to_string(), cost);
    let schema: SchemaRef = Arc::new(Schema::new_with_metadata(schema.fields().clone(), metadata));
    let batches = batches
        .into_iter()
        .map(|b| b.with_schema(schema.clone()).map_err(internal))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}
