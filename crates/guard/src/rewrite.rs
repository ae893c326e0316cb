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

use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, Result};
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

/// Makes every `SUM` of an integer column exact: its argument is cast to
/// `DECIMAL(38, 0)` first, so it accumulates in 128 bits (DataFusion's
/// `SUM` over `Int64` wraps around silently). A table holds fewer than
/// 2^63 rows of at most 2^63 each, so no sum reaches 10^38: the released
/// number is exact and never fails. The output keeps its name; its type is
/// `DECIMAL(38, 0)`.
pub(crate) fn widen_sums(plan: LogicalPlan) -> Result<LogicalPlan> {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::logical_expr::{cast, ExprSchemable};
    let widened = plan.transform_up(|node| {
        let LogicalPlan::Aggregate(agg) = &node else {
            return Ok(Transformed::no(node));
        };
        let input_schema = agg.input.schema().clone();
        let mut changed = false;
        let mut aggr = Vec::with_capacity(agg.aggr_expr.len());
        for (i, e) in agg.aggr_expr.iter().enumerate() {
            let name = agg.schema.field(agg.group_expr.len() + i).name().clone();
            let inner = match e {
                Expr::Alias(a) => a.expr.as_ref(),
                other => other,
            };
            let widened = match inner {
                Expr::AggregateFunction(af)
                    if af.func.name().eq_ignore_ascii_case("sum") && af.params.args.len() == 1 =>
                {
                    let arg = &af.params.args[0];
                    let integer = arg
                        .get_type(&input_schema)
                        .map(|t| t.is_integer())
                        .unwrap_or(false);
                    integer.then(|| {
                        let mut f = af.clone();
                        f.params.args = vec![cast(arg.clone(), DataType::Decimal128(38, 0))];
                        Expr::AggregateFunction(f).alias(name.clone())
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
