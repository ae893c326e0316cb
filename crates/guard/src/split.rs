//! The split: turn a checked, rewritten plan into per-member fragments and
//! the executor's plan.
//!
//! DataFusion's optimizer (over schema-only tables) pushes filters down to
//! the scans and prunes columns. Each scan then becomes a [`ScanFragment`]:
//! the filter conjuncts it can express as a [`Predicate`] run on the node,
//! the rest stay in the executor; the columns the executor still needs are
//! found by a second projection-pruning pass. Identity and join columns leave
//! the node only as pseudonyms; the executor plan is retyped for the way
//! columns travel ([`wire_field`]).

use std::collections::HashMap;
use std::sync::Arc;

use airlock_policy::ColumnRole;
use airlock_protocol::{FragmentColumn, Predicate, ScanFragment, Treatment};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::empty::EmptyTable;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::Result;
use datafusion::datasource::provider_as_source;
use datafusion::execution::SessionState;
use datafusion::logical_expr::utils::{conjunction, split_conjunction};
use datafusion::logical_expr::{Filter, LogicalPlan, TableScan, TableScanBuilder};
use datafusion::optimizer::optimize_projections::OptimizeProjections;
use datafusion::optimizer::Optimizer;

use crate::check::TableInfo;
use airlock_protocol::wire::wire_field;

/// One scan after the split.
#[derive(Debug, Clone)]
pub(crate) struct ScanSplit {
    pub owner: String,
    pub fragment: ScanFragment,
    /// Where the table's identity column is among the fragment's columns
    /// (when the executor needs it).
    pub identity: Option<usize>,
    /// A column the fragment would ship whose values have no size bound
    /// in the executor ([`bounded_type`]), with its type.
    pub unbounded: Option<(String, DataType)>,
}

/// Whether the executor bounds the size of each value of type `t`: fixed
/// widths, and texts and binaries (cut to 4 KiB by `airlock_exec::join`),
/// also as dictionary values under keys of 32 or 64 bits. Nested values (lists, structs, maps) and
/// wide fixed-size binaries are not, so no fragment ships them: a member's
/// one huge value in its own table would otherwise fill the executor's
/// memory exactly when its row joins.
pub(crate) fn bounded_type(t: &DataType) -> bool {
    match t {
        // Keys narrower than 32 bits overflow when the engine merges the
        // dictionaries of joined batches: a query failed only when a
        // person joined (red team, fourth pass).
        DataType::Dictionary(k, v) => {
            matches!(
                k.as_ref(),
                DataType::Int32 | DataType::Int64 | DataType::UInt32 | DataType::UInt64
            ) && bounded_type(v)
        }
        DataType::FixedSizeBinary(n) => *n <= 4096,
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView => true,
        other => other.is_primitive() || matches!(other, DataType::Null | DataType::Boolean),
    }
}

fn empty_scan(scan: &TableScan, schema: SchemaRef) -> Result<LogicalPlan> {
    let source = provider_as_source(Arc::new(EmptyTable::new(schema)));
    Ok(LogicalPlan::TableScan(
        TableScanBuilder::new(scan.table_name.clone(), source).build()?,
    ))
}

fn projected(scan: &TableScan) -> Result<SchemaRef> {
    let schema = scan.source.schema();
    Ok(match &scan.projection {
        Some(p) => Arc::new(schema.project(p)?),
        None => schema,
    })
}

/// Splits `plan`; returns the scans (in plan order) and the executor plan,
/// whose scans read schema-only tables in the same order.
pub(crate) fn split(
    state: &SessionState,
    plan: &LogicalPlan,
    tables: &HashMap<String, TableInfo>,
    collaboration: &str,
    querier: &str,
) -> Result<(Vec<ScanSplit>, LogicalPlan)> {
    let optimized = state.optimize(plan)?;
    // Pass 1: take pushable filter conjuncts off the scans.
    let mut pushed: Vec<(String, Vec<Predicate>)> = Vec::new();
    let stripped = optimized
        .transform_down(|node| {
            let (filter, scan) = match &node {
                LogicalPlan::Filter(f) => match f.input.as_ref() {
                    LogicalPlan::TableScan(s) => (Some(f), s),
                    _ => return Ok(Transformed::no(node)),
                },
                LogicalPlan::TableScan(s) => (None, s),
                _ => return Ok(Transformed::no(node)),
            };
            if !scan.filters.is_empty() {
                // Schema-only tables accept no pushed filters; dropping one
                // silently would widen what a node sends.
                return datafusion::common::plan_err!("unexpected filter inside a scan");
            }
            let new_scan = empty_scan(scan, projected(scan)?)?;
            let mut predicates = Vec::new();
            let mut residual = Vec::new();
            if let Some(f) = filter {
                for c in split_conjunction(&f.predicate) {
                    match airlock_protocol::expr::to_predicate(c) {
                        Some(p) => predicates.push(p),
                        None => residual.push(c.clone()),
                    }
                }
            }
            pushed.push((scan.table_name.table().to_string(), predicates));
            let replaced = match conjunction(residual) {
                Some(r) => LogicalPlan::Filter(Filter::try_new(r, Arc::new(new_scan))?),
                None => new_scan,
            };
            Ok(Transformed::new(replaced, true, TreeNodeRecursion::Jump))
        })?
        .data;
    // Pass 2: prune the columns the executor does not need.
    let pruned = Optimizer::with_rules(vec![Arc::new(OptimizeProjections::new())]).optimize(
        stripped,
        state,
        |_, _| {},
    )?;
    let mut splits = Vec::new();
    let mut index = 0;
    let executor = pruned
        .transform_down(|node| {
            let LogicalPlan::TableScan(scan) = &node else {
                return Ok(Transformed::no(node));
            };
            let schema = projected(scan)?;
            let (table, predicates) = pushed.get(index).cloned().unwrap_or_default();
            index += 1;
            let Some(info) = tables.get(&table) else {
                return datafusion::common::plan_err!("unknown table in split");
            };
            let columns: Vec<FragmentColumn> = schema
                .fields()
                .iter()
                .map(|f| FragmentColumn {
                    name: f.name().clone(),
                    treatment: match info.table.role(f.name()) {
                        Some(ColumnRole::Identity { .. } | ColumnRole::Join) => {
                            Treatment::Pseudonym {
                                contract: info.table.contract(f.name()),
                            }
                        }
                        _ => Treatment::Raw,
                    },
                })
                .collect();
            let filter = match predicates.len() {
                0 => None,
                1 => predicates.into_iter().next(),
                _ => Some(Predicate::And(predicates)),
            };
            let fields: Vec<Field> = schema
                .fields()
                .iter()
                .zip(&columns)
                .map(|(f, c)| wire_field(f, &c.treatment))
                .collect();
            let identity = columns.iter().position(|c| c.name == info.table.identity);
            let unbounded = schema
                .fields()
                .iter()
                .find(|f| !bounded_type(f.data_type()))
                .map(|f| (f.name().clone(), f.data_type().clone()));
            splits.push(ScanSplit {
                owner: info.owner.clone(),
                identity,
                unbounded,
                fragment: ScanFragment {
                    collaboration: collaboration.to_string(),
                    query: String::new(),
                    querier: querier.to_string(),
                    table,
                    columns,
                    filter,
                    template: None,
                    purpose: None,
                    dp: None,
                },
            });
            Ok(Transformed::yes(empty_scan(
                scan,
                Arc::new(Schema::new(fields)),
            )?))
        })?
        .data
        // Token columns changed type: recompute every schema above the scans.
        .transform_up(|node| node.recompute_schema().map(Transformed::yes))?
        .data;
    Ok((splits, executor))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Fields;

    #[test]
    fn only_flat_types_and_cut_texts_reach_the_executor() {
        let text = Box::new(DataType::Utf8);
        let list = DataType::List(Arc::new(Field::new("x", DataType::Utf8, true)));
        for t in [
            DataType::Int64,
            DataType::Boolean,
            DataType::Utf8,
            DataType::LargeUtf8,
            DataType::Utf8View,
            DataType::Binary,
            DataType::LargeBinary,
            DataType::BinaryView,
            DataType::Decimal128(38, 2),
            DataType::Date32,
            DataType::Dictionary(Box::new(DataType::Int32), text.clone()),
            DataType::FixedSizeBinary(16),
        ] {
            assert!(bounded_type(&t), "{t}");
        }
        for t in [
            list.clone(),
            DataType::Struct(Fields::from(vec![Field::new("x", DataType::Utf8, true)])),
            DataType::FixedSizeBinary(1 << 20),
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(list)),
            DataType::Dictionary(Box::new(DataType::Int8), text.clone()),
            DataType::Dictionary(Box::new(DataType::UInt8), text.clone()),
            DataType::Dictionary(Box::new(DataType::Int16), text.clone()),
        ] {
            assert!(!bounded_type(&t), "{t}");
        }
    }
}
