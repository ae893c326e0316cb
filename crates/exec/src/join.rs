//! The executor: an ephemeral, memory-only DataFusion session per query.
//!
//! It takes the guard's executor plan, whose scans read schema-only tables,
//! and puts each node's fragment result in place of the matching scan (in
//! plan order). The rows carry pseudonyms, never raw identifiers; the plan
//! already holds the threshold. When the session is dropped, nothing remains.

use std::sync::Arc;

use airlock_protocol::wire::Partitions;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryViewArray, LargeBinaryArray, LargeStringArray,
    StringArray, StringViewArray,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};

use airlock_guard::PerPerson;

use crate::{bind_scans, ExecError, RunFailure};

/// Runs the executor plan over the fragment results (in scan order), in a
/// session whose memory pool holds at most `memory_bytes` (see
/// [`memory_limit`]). Under differential privacy (`per_person`), each
/// fragment first keeps at most so many random rows per person.
pub async fn run(
    template: &LogicalPlan,
    inputs: Vec<(SchemaRef, Partitions)>,
    memory_bytes: usize,
    per_person: Option<&PerPerson>,
) -> Result<(SchemaRef, Vec<RecordBatch>), ExecError> {
    let mut inputs = inputs.into_iter().enumerate();
    let plan = bind_scans(template, |scan| {
        let Some((n, (_, partitions))) = inputs.next() else {
            return datafusion::common::plan_err!("fewer fragment results than scans");
        };
        let partitions = match per_person {
            Some(cap) => {
                let Some(&identity) = cap.identity_columns.get(n) else {
                    return datafusion::common::plan_err!("no identity column for a fragment");
                };
                keep_per_person(partitions, identity, cap.rows)?
            }
            None => partitions,
        };
        let expected = scan.source.schema();
        let partitions = partitions
            .into_iter()
            .map(|p| {
                p.into_iter()
                    .map(|b| {
                        let columns = b.columns().iter().map(cap_text).collect();
                        RecordBatch::try_new(expected.clone(), columns)
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let table: Arc<dyn TableProvider> = Arc::new(MemTable::try_new(expected, partitions)?);
        Ok(table)
    })
    .map_err(|_| ExecError::Mismatch("a fragment result does not match the plan".into()))?;
    // Memory only: nothing of a query is spilled to disk (a sort or an
    // aggregate that does not fit fails instead, by name).
    let no_disk = datafusion::execution::disk_manager::DiskManagerBuilder::default()
        .with_mode(datafusion::execution::disk_manager::DiskManagerMode::Disabled);
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_memory_limit(memory_limit(memory_bytes), 1.0)
        .with_disk_manager_builder(no_disk)
        .build_arc()
        .map_err(|_| ExecError::Failed("the executor's memory pool could not be made".into()))?;
    let ctx = SessionContext::new_with_config_rt(
        SessionConfig::new().with_information_schema(false),
        runtime,
    );
    crate::run(&ctx, plan).await.map_err(|f| {
        if matches!(
            f.error().find_root(),
            DataFusionError::ResourcesExhausted(_)
        ) {
            return ExecError::Memory {
                limit: memory_bytes,
            };
        }
        ExecError::Failed(
            match f {
                RunFailure::Plan(_) => "the executor could not run the query",
                RunFailure::Run(_) => "the query failed while running in the executor",
            }
            .into(),
        )
    })
}

/// The memory pool of one query: drawn at random (CSPRNG) between half of
/// `memory_bytes` and all of it, so that a query sure of half the
/// setting never fails for memory, and one near the limit fails at random
/// rather than exactly when one more person's rows join. The executor's
/// memory depends on what joins, which is other members' data; with a
/// fixed limit, a member that fills it with its own rows to just below the
/// limit learns from the query's outcome whether a few more rows joined.
/// With the drawn limit, `d` more bytes change the chance of failure by at
/// most `d / (memory_bytes / 2)`, and under differential privacy one
/// person's rows are bounded before the join ([`PerPerson`]), so `d` is
/// small (`docs/threat-model.md` has the figures and what remains).
pub fn memory_limit(memory_bytes: usize) -> usize {
    use rand::Rng;
    let half = memory_bytes / 2;
    half + rand::rngs::OsRng.gen_range(0..=memory_bytes - half)
}

/// Keeps at most `rows` rows per person (the value of column `identity`;
/// rows without one count as one person) of a fragment, chosen at random
/// (CSPRNG), in their order. The same partitions when no person has more.
fn keep_per_person(
    partitions: Partitions,
    identity: usize,
    rows: u64,
) -> datafusion::common::Result<Partitions> {
    use datafusion::arrow::array::BooleanArray;
    let rows = usize::try_from(rows).unwrap_or(usize::MAX);
    let Some(keep) = chosen(&partitions, identity, rows)? else {
        return Ok(partitions);
    };
    partitions
        .iter()
        .zip(keep)
        .map(|(batches, keep)| {
            batches
                .iter()
                .zip(keep)
                .map(|(batch, keep)| {
                    let mask = BooleanArray::from(keep);
                    datafusion::arrow::compute::filter_record_batch(batch, &mask)
                        .map_err(DataFusionError::from)
                })
                .collect()
        })
        .collect()
}

/// Which rows [`keep_per_person`] keeps, per partition and batch; `None`
/// when no person has more than `rows`.
#[allow(clippy::type_complexity)]
fn chosen(
    partitions: &Partitions,
    identity: usize,
    rows: usize,
) -> datafusion::common::Result<Option<Vec<Vec<Vec<bool>>>>> {
    use rand::seq::index::sample;
    use rand::SeedableRng;
    use std::collections::HashMap;
    // Each person's rows, as (partition, batch, row).
    let mut people: HashMap<Option<&[u8]>, Vec<(u32, u32, u32)>> = HashMap::new();
    for (p, batches) in partitions.iter().enumerate() {
        for (b, batch) in batches.iter().enumerate() {
            let Some(column) = batch.columns().get(identity) else {
                return datafusion::common::plan_err!("a fragment lacks its identity column");
            };
            let Some(ids) = column.as_binary_opt::<i32>() else {
                return datafusion::common::plan_err!("a fragment's identity is not a pseudonym");
            };
            for (r, id) in ids.iter().enumerate() {
                let at = (p as u32, b as u32, r as u32);
                people.entry(id).or_default().push(at);
            }
        }
    }
    if people.values().all(|r| r.len() <= rows) {
        return Ok(None);
    }
    let mut keep: Vec<Vec<Vec<bool>>> = partitions
        .iter()
        .map(|bs| bs.iter().map(|b| vec![true; b.num_rows()]).collect())
        .collect();
    let mut rng = rand::rngs::StdRng::from_rng(rand::rngs::OsRng)
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    for at in people.values().filter(|r| r.len() > rows) {
        for &(p, b, r) in at {
            keep[p as usize][b as usize][r as usize] = false;
        }
        for i in sample(&mut rng, at.len(), rows) {
            let (p, b, r) = at[i];
            keep[p as usize][b as usize][r as usize] = true;
        }
    }
    Ok(Some(keep))
}

/// The longest text or binary value, in bytes, the executor takes from a
/// fragment; a longer one is cut (texts at a character boundary) before
/// the query runs. The guard lets the expressions of one query copy texts
/// at most 8 times together (`concat`, `||`, case mapping), and a join
/// emits at most 8,192 rows per batch, so a text column of any batch stays
/// below 2^31 bytes (Arrow's limit, past which `concat` fails): without the
/// cut, a member could put one huge value in its own table and see the
/// query fail, or slow down, exactly when that row joins a given person of
/// another member's table (red team).
pub const MAX_TEXT_BYTES: usize = 4096;

fn cut(s: &str) -> &str {
    if s.len() <= MAX_TEXT_BYTES {
        return s;
    }
    let mut end = MAX_TEXT_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn cut_bytes(b: &[u8]) -> &[u8] {
    &b[..b.len().min(MAX_TEXT_BYTES)]
}

/// `column` with every text and binary value cut to [`MAX_TEXT_BYTES`]
/// (texts at a character boundary), the values of a dictionary too (the
/// same column when none is longer). The guard lets only such columns and
/// fixed-width ones reach the executor (`airlock_guard::split`), so no
/// value of a fragment is longer (red team: a binary column was not cut).
fn cap_text(column: &ArrayRef) -> ArrayRef {
    let cut_array = match column.data_type() {
        DataType::Utf8 => cut_all::<StringArray, _, _>(|| column.as_string::<i32>().iter(), cut),
        DataType::LargeUtf8 => {
            cut_all::<LargeStringArray, _, _>(|| column.as_string::<i64>().iter(), cut)
        }
        // A view array's buffers can hold bytes no value uses, which every
        // filtered or taken copy shares (and is charged for): garbage
        // collected, like a dictionary's unused values.
        DataType::Utf8View => {
            let cut = cut_all::<StringViewArray, _, _>(|| column.as_string_view().iter(), cut);
            let kept = cut.as_ref().unwrap_or(column).as_string_view().gc();
            Some(Arc::new(kept) as ArrayRef)
        }
        DataType::Binary => {
            cut_all::<BinaryArray, _, _>(|| column.as_binary::<i32>().iter(), cut_bytes)
        }
        DataType::LargeBinary => {
            cut_all::<LargeBinaryArray, _, _>(|| column.as_binary::<i64>().iter(), cut_bytes)
        }
        DataType::BinaryView => {
            let cut =
                cut_all::<BinaryViewArray, _, _>(|| column.as_binary_view().iter(), cut_bytes);
            let kept = cut.as_ref().unwrap_or(column).as_binary_view().gc();
            Some(Arc::new(kept) as ArrayRef)
        }
        DataType::Dictionary(_, _) => Some(compact(column)),
        _ => None,
    };
    cut_array.unwrap_or_else(|| column.clone())
}

/// A dictionary column rebuilt from the values its rows use, each cut:
/// a dictionary can carry many values no row uses (red team: one row
/// group of three rows with 100,000 values of 4 KiB, which every copy of
/// the column after the join was charged for, failed a DP query for
/// memory only when that person joined). The rows keep their keys' order;
/// no value is copied per row. When the dictionary cannot be rebuilt, its
/// own values are cut.
fn compact(column: &ArrayRef) -> ArrayRef {
    let Some(d) = column.as_any_dictionary_opt() else {
        return column.clone();
    };
    rebuilt(column, d).unwrap_or_else(|_| d.with_values(cap_text(d.values())))
}

fn rebuilt(
    column: &ArrayRef,
    d: &dyn datafusion::arrow::array::AnyDictionaryArray,
) -> Result<ArrayRef, datafusion::arrow::error::ArrowError> {
    use datafusion::arrow::array::{make_array, Int64Array, UInt64Array};
    use datafusion::arrow::compute::{cast, take};
    let keys = d.normalized_keys();
    let valid = d.keys().logical_nulls();
    let is_valid = |i: usize| valid.as_ref().is_none_or(|n| n.is_valid(i));
    let mut used: Vec<usize> = (0..keys.len())
        .filter(|&i| is_valid(i))
        .map(|i| keys[i])
        .collect();
    used.sort_unstable();
    used.dedup();
    let indices = UInt64Array::from_iter_values(used.iter().map(|&k| k as u64));
    let values = cap_text(&take(d.values(), &indices, None)?);
    let new_keys: Int64Array = (0..keys.len())
        .map(|i| {
            is_valid(i)
                .then(|| used.binary_search(&keys[i]).ok())
                .flatten()
                .map(|p| p as i64)
        })
        .collect();
    let new_keys = cast(&new_keys, d.keys().data_type())?;
    let data = new_keys
        .to_data()
        .into_builder()
        .data_type(column.data_type().clone())
        .child_data(vec![values.to_data()])
        .build()?;
    Ok(make_array(data))
}

/// The values `values` yields, each cut by `cut`, as an array `A`; `None`
/// when none is longer than [`MAX_TEXT_BYTES`] (the column is kept as it
/// is).
fn cut_all<'a, A, T, I>(values: impl Fn() -> I, cut: fn(&'a T) -> &'a T) -> Option<ArrayRef>
where
    A: FromIterator<Option<&'a T>> + Array + 'static,
    T: AsRef<[u8]> + ?Sized + 'a,
    I: Iterator<Item = Option<&'a T>>,
{
    let long = values().any(|v| v.is_some_and(|s| s.as_ref().len() > MAX_TEXT_BYTES));
    long.then(|| Arc::new(values().map(|v| v.map(cut)).collect::<A>()) as ArrayRef)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_binaries_and_dictionary_values_are_cut_too() {
        use datafusion::arrow::array::DictionaryArray;
        use datafusion::arrow::datatypes::Int32Type;
        let long = vec![7u8; 3 * MAX_TEXT_BYTES];
        let b: ArrayRef = Arc::new(BinaryArray::from(vec![
            Some(long.as_slice()),
            Some(b"short".as_slice()),
            None,
        ]));
        let lb: ArrayRef = Arc::new(LargeBinaryArray::from(vec![Some(long.as_slice())]));
        let bv: ArrayRef = Arc::new(BinaryViewArray::from(vec![Some(long.as_slice())]));
        for a in [&b, &lb, &bv] {
            let cut = cap_text(a);
            assert_eq!(cut.data_type(), a.data_type());
            let first = match cut.data_type() {
                DataType::Binary => cut.as_binary::<i32>().value(0).len(),
                DataType::LargeBinary => cut.as_binary::<i64>().value(0).len(),
                _ => cut.as_binary_view().value(0).len(),
            };
            assert_eq!(first, MAX_TEXT_BYTES, "{:?}", a.data_type());
        }
        assert_eq!(cap_text(&b).as_binary::<i32>().value(1), b"short");
        let text = "x".repeat(2 * MAX_TEXT_BYTES);
        let d: DictionaryArray<Int32Type> = vec![text.as_str(), "a", text.as_str()]
            .into_iter()
            .collect();
        let d: ArrayRef = Arc::new(d);
        let cut = cap_text(&d);
        assert_eq!(cut.data_type(), d.data_type());
        let values = cut.as_any_dictionary().values().clone();
        let values = values.as_string::<i32>();
        assert!(values
            .iter()
            .all(|v| v.is_some_and(|v| v.len() <= MAX_TEXT_BYTES)));
        // A dictionary keeps only the values its rows use.
        let names: Vec<String> = (0..10_000).map(|i| format!("v{i}")).collect();
        let many: DictionaryArray<Int32Type> = names.iter().map(String::as_str).collect();
        let keys =
            datafusion::arrow::array::Int32Array::from(vec![Some(7), None, Some(7), Some(9_999)]);
        let used: ArrayRef = Arc::new(
            DictionaryArray::<Int32Type>::try_new(keys, many.values().clone()).expect("dict"),
        );
        let cut = cap_text(&used);
        assert_eq!(cut.data_type(), used.data_type());
        assert_eq!(cut.as_any_dictionary().values().len(), 2);
        let flat = datafusion::arrow::compute::cast(&cut, &DataType::Utf8).expect("flat");
        let flat = flat.as_string::<i32>();
        assert_eq!(
            flat.iter().collect::<Vec<_>>(),
            vec![Some("v7"), None, Some("v7"), Some("v9999")]
        );
    }

    #[test]
    fn view_arrays_keep_only_the_bytes_their_values_use() {
        let long = "y".repeat(1 << 20);
        let all = StringViewArray::from(vec![long.as_str(), "a value longer than twelve"]);
        // The second value alone, still sharing the 1 MiB buffer.
        let one: ArrayRef = Arc::new(all.slice(1, 1));
        let bytes = |a: &ArrayRef| {
            a.as_string_view()
                .data_buffers()
                .iter()
                .map(|b| b.len())
                .sum::<usize>()
        };
        assert!(bytes(&one) > 1 << 20);
        let kept = cap_text(&one);
        assert!(bytes(&kept) < 100, "{}", bytes(&kept));
        assert_eq!(kept.as_string_view().value(0), "a value longer than twelve");
    }

    #[test]
    fn long_texts_are_cut_at_a_character_boundary_and_short_ones_kept() {
        let long = "é".repeat(MAX_TEXT_BYTES); // 2 bytes each
        let a: ArrayRef = std::sync::Arc::new(StringArray::from(vec![
            Some(long.as_str()),
            Some("short"),
            None,
        ]));
        let cut = cap_text(&a);
        let cut = cut.as_string::<i32>();
        assert_eq!(cut.value(0).len(), MAX_TEXT_BYTES);
        assert!(cut.value(0).chars().all(|c| c == 'é'));
        assert_eq!(cut.value(1), "short");
        assert!(cut.is_null(2));
        let odd = format!("x{}", "é".repeat(MAX_TEXT_BYTES));
        let v: ArrayRef = std::sync::Arc::new(StringViewArray::from(vec![odd.as_str()]));
        let v = cap_text(&v);
        assert_eq!(v.as_string_view().value(0).len(), MAX_TEXT_BYTES - 1);
        let short: ArrayRef = std::sync::Arc::new(StringArray::from(vec!["a", "b"]));
        assert!(std::sync::Arc::ptr_eq(&cap_text(&short), &short));
    }
}
