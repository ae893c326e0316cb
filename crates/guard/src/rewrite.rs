//! The rewrite: add the threshold to an accepted aggregation.
//!
//! For every scan of a configured table the identity column is carried, under
//! a reserved name, through every projection up to the aggregate; the
//! aggregate gains one hidden `COUNT(DISTINCT identity)` per scan; a filter
//! keeps only rows where each of them reaches the strictest k; a projection
//! drops the hidden columns again. Failing rows are removed, never shown as
//! zero or null. That is the *lower* plan; the query's own steps above its
//! aggregate become the *upper* plan ([`Upper`]), run apart over the
//! released rows only.
//!
//! ```text
//!  [the query's HAVING, ORDER BY, LIMIT, projections: the upper plan, run apart]
//!  Projection (original aggregate columns)
//!   Filter __airlock_k_0 >= k AND __airlock_k_1 >= k
//!    Aggregate (user's groups and aggregates, + COUNT(DISTINCT __airlock_id_i) AS __airlock_k_i)
//!     ... rows, each scan wrapped in Projection (*, identity AS __airlock_id_i)
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchema, Result};
use datafusion::functions_aggregate::expr_fn::count_distinct;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{lit, Aggregate, Expr, Filter, LogicalPlan, Projection};

use crate::check::{identity_groups, Checked, TableInfo};
use crate::upper::Upper;

pub(crate) const HIDDEN_ID: &str = "__airlock_id_";
const HIDDEN_K: &str = "__airlock_k_";

/// Adds the k-threshold to the (single) aggregate of `plan`.
///
/// Scans joined on their identity columns count the same people per output
/// row, so one count serves each such group of scans; and where the query
/// already computes `COUNT(DISTINCT identity)` for a group, the threshold
/// reads that column instead of computing it twice.
pub(crate) fn add_threshold(
    plan: LogicalPlan,
    k: u64,
    checked: &Checked,
    tables: &HashMap<String, TableInfo>,
) -> Result<(LogicalPlan, Upper)> {
    let k = i64::try_from(k).unwrap_or(i64::MAX);
    let group_of = identity_groups(checked.scans.len(), &checked.identity_joins);
    let mut groups = group_of.clone();
    groups.sort_unstable();
    groups.dedup();
    let mut found = None;
    plan.apply(|node| {
        if let LogicalPlan::Aggregate(a) = node {
            found = Some(a.clone());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    let Some(agg) = found else {
        return datafusion::common::plan_err!("an aggregation without an aggregate");
    };
    let mut scans = 0;
    let input = carry_identity(&agg.input, &mut scans, tables)?;
    let mut aggr = agg.aggr_expr.clone();
    let mut conditions = Vec::new();
    for &group in &groups {
        let existing = checked
            .identity_counts
            .iter()
            .find(|(scan, _)| group_of.get(*scan) == Some(&group))
            .map(|(_, i)| *i);
        let counted = match existing {
            Some(i) => {
                let (q, f) = agg.schema.qualified_field(agg.group_expr.len() + i);
                Expr::Column(Column::new(q.cloned(), f.name()))
            }
            None => {
                let id = format!("{HIDDEN_ID}{group}");
                let Some(column) = input.schema().columns().into_iter().find(|c| c.name == id)
                else {
                    return datafusion::common::plan_err!(
                        "an identity does not reach the aggregate"
                    );
                };
                let name = format!("{HIDDEN_K}{group}");
                aggr.push(count_distinct(Expr::Column(column)).alias(&name));
                Expr::Column(Column::new_unqualified(name))
            }
        };
        conditions.push(counted.gt_eq(lit(k)));
    }
    let Some(predicate) = conjunction(conditions) else {
        return datafusion::common::plan_err!("no identity column reaches the aggregate");
    };
    let new_agg = Aggregate::try_new(Arc::new(input), agg.group_expr.clone(), aggr)?;
    let filter = Filter::try_new(predicate, Arc::new(LogicalPlan::Aggregate(new_agg)))?;
    let visible: Vec<Expr> = agg.schema.columns().into_iter().map(Expr::Column).collect();
    let lower = Projection::try_new(visible, Arc::new(LogicalPlan::Filter(filter)))?;
    let (_, upper) = Upper::cut(&plan, &agg.schema, |n| {
        matches!(n, LogicalPlan::Aggregate(_))
    })?;
    Ok((LogicalPlan::Projection(lower), upper))
}

/// Makes every `SUM` of an integer or decimal column, and every `AVG` of
/// a decimal column, exact and unable to overflow, by casting its argument
/// to a type wide enough for any table ([`exact_sum_type`]): DataFusion's
/// `SUM` over `Int64` and over decimals wraps around silently, and its `AVG`
/// of a 38-digit decimal fails with an overflow when the sum is scaled for
/// the division (ATTACKS 28: a failure, or a wrong figure, that one row can
/// cause). The output keeps its name; a `SUM` of integers is released as
/// `DECIMAL(38, 0)`, of decimals as `DECIMAL(38, s)` or `DECIMAL(76, s)`.
/// A sum that no type holds (decimals of more than 56 digits) is left as
/// it is and refused by the totality check, which asks the same function.
pub(crate) fn widen_sums(plan: LogicalPlan) -> Result<LogicalPlan> {
    use datafusion::logical_expr::{cast, ExprSchemable};
    let widened = plan.transform_up(|node| {
        let LogicalPlan::Aggregate(agg) = &node else {
            return Ok(Transformed::no(node));
        };
        let input_schema = agg.input.schema().clone();
        let mut changed = false;
        let mut aggr = Vec::with_capacity(agg.aggr_expr.len());
        for (i, e) in agg.aggr_expr.iter().enumerate() {
            let first_aggregate = agg.schema.fields().len() - agg.aggr_expr.len();
            let name_of_output = agg.schema.field(first_aggregate + i).name().clone();
            let inner = match e {
                Expr::Alias(a) => a.expr.as_ref(),
                other => other,
            };
            let widened = match inner {
                Expr::AggregateFunction(af) if af.params.args.len() == 1 => {
                    let arg = &af.params.args[0];
                    let name = af.func.name().to_ascii_lowercase();
                    arg.get_type(&input_schema)
                        .ok()
                        .and_then(|t| exact_sum_type(&name, &t))
                        .map(|wide| {
                            let mut f = af.clone();
                            f.params.args = vec![cast(arg.clone(), wide)];
                            Expr::AggregateFunction(f).alias(name_of_output.clone())
                        })
                }
                _ => None,
            };
            changed |= widened.is_some();
            aggr.push(widened.unwrap_or_else(|| e.clone()));
        }
        if !changed {
            return Ok(Transformed::no(node));
        }
        let new = Aggregate::try_new(agg.input.clone(), agg.group_expr.clone(), aggr)?;
        Ok(Transformed::yes(LogicalPlan::Aggregate(new)))
    })?;
    if !widened.transformed {
        return Ok(widened.data);
    }
    // The nodes above the aggregate see the wider type.
    widened
        .data
        .transform_up(|n| n.recompute_schema().map(Transformed::yes))
        .map(|t| t.data)
}

/// The type `aggregate` (`sum` or `avg`) of values of type `t` must
/// accumulate in so that no table can make it overflow or fail, when it is
/// not `t` itself; `None` when `t` needs no widening or none is wide
/// enough (the totality check then refuses, through
/// [`sum_is_exact`]). A table has fewer than 2^64 rows (20 digits): a sum
/// of integers (at most 20 digits each) fits 38 digits, and so does one of
/// decimals of at most 18 digits; decimals of at most 56 digits fit 76
/// (Arrow's widest decimal). `AVG` of integers and floats accumulates in
/// floating point, which cannot fail.
pub(crate) fn exact_sum_type(aggregate: &str, t: &DataType) -> Option<DataType> {
    let decimal = match t {
        DataType::Decimal32(p, s) | DataType::Decimal64(p, s) | DataType::Decimal128(p, s) => {
            Some((*p, *s))
        }
        DataType::Decimal256(p, s) => Some((*p, *s)),
        _ => None,
    };
    match (aggregate, decimal) {
        ("sum", None) if t.is_integer() => Some(DataType::Decimal128(38, 0)),
        ("sum" | "avg", Some((p, s))) if p <= 18 => Some(DataType::Decimal128(38, s)),
        ("sum" | "avg", Some((p, s))) if p <= 56 => Some(DataType::Decimal256(76, s)),
        _ => None,
    }
}

/// Whether the argument of a `sum` or `avg` (as it runs, after
/// [`widen_sums`] and type coercion) accumulates in a type no table can
/// overflow: floating point, or the cast [`exact_sum_type`] put there.
pub(crate) fn sum_is_exact(aggregate: &str, arg: &Expr, schema: &DFSchema) -> bool {
    use datafusion::logical_expr::ExprSchemable;
    let Ok(t) = arg.get_type(schema) else {
        return false;
    };
    if matches!(t, DataType::Float16 | DataType::Float32 | DataType::Float64) {
        return true;
    }
    match arg {
        Expr::Cast(c) => c
            .expr
            .get_type(schema)
            .ok()
            .and_then(|from| exact_sum_type(aggregate, &from))
            .is_some_and(|wide| &wide == c.field.data_type()),
        _ => false,
    }
}

/// Rebuilds the row part of a plan so each scan's identity reaches the top
/// under `__airlock_id_<n>`.
pub(crate) fn carry_identity(
    plan: &LogicalPlan,
    scans: &mut usize,
    tables: &HashMap<String, TableInfo>,
) -> Result<LogicalPlan> {
    match plan {
        LogicalPlan::TableScan(s) => {
            let Some(info) = tables.get(s.table_name.table()) else {
                return datafusion::common::plan_err!("unknown table in checked plan");
            };
            let mut exprs: Vec<Expr> = s
                .projected_schema
                .columns()
                .into_iter()
                .map(Expr::Column)
                .collect();
            exprs.push(
                Expr::Column(Column::new(
                    Some(s.table_name.clone()),
                    info.table.identity.clone(),
                ))
                .alias(format!("{HIDDEN_ID}{scans}")),
            );
            *scans += 1;
            Ok(LogicalPlan::Projection(Projection::try_new(
                exprs,
                Arc::new(plan.clone()),
            )?))
        }
        LogicalPlan::Projection(p) => {
            let input = carry_identity(&p.input, scans, tables)?;
            let mut exprs = p.expr.clone();
            for (qualifier, field) in input.schema().iter() {
                if field.name().starts_with(HIDDEN_ID) {
                    exprs.push(Expr::Column(Column::new(qualifier.cloned(), field.name())));
                }
            }
            Ok(LogicalPlan::Projection(Projection::try_new(
                exprs,
                Arc::new(input),
            )?))
        }
        other => {
            let inputs = other
                .inputs()
                .into_iter()
                .map(|i| carry_identity(i, scans, tables))
                .collect::<Result<Vec<_>>>()?;
            other.with_new_exprs(other.expressions(), inputs)
        }
    }
}
