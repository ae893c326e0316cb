//! The analyst's steps above the aggregate, run only on released rows.
//!
//! An aggregation query is cut at its aggregate. The *lower* plan computes
//! the aggregate and keeps only the groups that may be released (k distinct
//! people, or under DP the noisy groups the rules choose). The *upper*
//! plan is the query's own HAVING, ORDER BY, LIMIT and expressions above the
//! aggregate, reading a placeholder table; it runs in a
//! separate session over the released rows only
//! (`airlock_exec::upper`; the guard only plans).
//!
//! Because the two plans are optimised and run apart, no optimizer rule can
//! merge the analyst's HAVING with the threshold filter or evaluate an
//! analyst's expression on a group that the threshold suppresses (ATTACKS
//! 27): whatever those expressions do, they see released values only.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::empty::EmptyTable;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchemaRef, Result};
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::{Expr, LogicalPlan, Projection, TableScanBuilder};

/// The name of the table the upper plan reads.
pub const PLACEHOLDER: &str = "__airlock_released";

/// The steps of a query above its aggregate, over a placeholder table of
/// the released rows.
#[derive(Debug, Clone)]
pub struct Upper {
    /// The released rows' fields (placeholder names `c0..`).
    placeholder: SchemaRef,
    /// The query above the aggregate, reading the placeholder table.
    plan: LogicalPlan,
}

impl Upper {
    /// Cuts `plan` at the first node (top down) for which `at` holds: that
    /// node, whose output schema is `released`, becomes the placeholder
    /// table. Returns the node cut out and the upper steps.
    pub(crate) fn cut(
        plan: &LogicalPlan,
        released: &DFSchemaRef,
        at: impl Fn(&LogicalPlan) -> bool,
    ) -> Result<(Option<LogicalPlan>, Upper)> {
        let fields: Vec<Field> = released
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| Field::new(format!("c{i}"), f.data_type().clone(), true))
            .collect();
        let placeholder: SchemaRef = Arc::new(Schema::new(fields));
        let mut cut = None;
        let upper = plan
            .clone()
            .transform_down(|node| {
                if !at(&node) {
                    return Ok(Transformed::no(node));
                }
                let source = provider_as_source(Arc::new(EmptyTable::new(placeholder.clone())));
                let scan =
                    LogicalPlan::TableScan(TableScanBuilder::new(PLACEHOLDER, source).build()?);
                let exprs = released
                    .iter()
                    .enumerate()
                    .map(|(i, (q, f))| {
                        Expr::Column(Column::new(Some(PLACEHOLDER), format!("c{i}")))
                            .alias_qualified(q.cloned(), f.name())
                    })
                    .collect();
                let p = Projection::try_new(exprs, Arc::new(scan))?;
                cut = Some(node);
                Ok(Transformed::new(
                    LogicalPlan::Projection(p),
                    true,
                    TreeNodeRecursion::Jump,
                ))
            })?
            .data;
        Ok((
            cut,
            Upper {
                placeholder,
                plan: upper,
            },
        ))
    }

    /// The placeholder table's schema.
    pub fn placeholder(&self) -> &SchemaRef {
        &self.placeholder
    }

    /// The upper plan, over the schema-only placeholder table.
    pub fn plan(&self) -> &LogicalPlan {
        &self.plan
    }
}
