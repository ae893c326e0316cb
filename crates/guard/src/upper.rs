//! The analyst's steps above the aggregate, run only on released rows.
//!
//! An aggregation query is cut at its aggregate. The *lower* plan computes
//! the aggregate and keeps only the groups that may be released (k distinct
//! people, or under DP the noisy groups the rules choose). The *upper*
//! plan is the query's own HAVING, ORDER BY, LIMIT and expressions above the
//! aggregate, reading a placeholder table; [`Upper::run`] runs it in a
//! separate session over the released rows only.
//!
//! Because the two plans are optimised and run apart, no optimizer rule can
//! merge the analyst's HAVING with the threshold filter or evaluate an
//! analyst's expression on a group that the threshold suppresses (ATTACKS
//! 27): whatever those expressions do, they see released values only.

use std::sync::Arc;

use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::empty::EmptyTable;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Column, DFSchemaRef, Result};
use datafusion::datasource::{provider_as_source, MemTable};
use datafusion::logical_expr::{Expr, LogicalPlan, Projection, TableScanBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::GuardError;

/// The name of the table the upper plan reads.
const PLACEHOLDER: &str = "__airlock_released";

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
    pub(crate) fn placeholder(&self) -> &SchemaRef {
        &self.placeholder
    }

    /// The upper plan, over the schema-only placeholder table.
    pub(crate) fn plan(&self) -> &LogicalPlan {
        &self.plan
    }

    /// Runs the upper steps over `released` (rows of the cut node's
    /// schema, or of the placeholder's). Engine messages can quote values;
    /// none is passed on.
    pub async fn run(
        &self,
        released: Vec<RecordBatch>,
    ) -> std::result::Result<(SchemaRef, Vec<RecordBatch>), GuardError> {
        let internal = |what: &str| GuardError::Internal(what.to_string());
        // The released rows may carry another representation of the same
        // type (Utf8 for Utf8View, say): each column is cast to the type
        // the plan was checked with.
        let mut batches = Vec::with_capacity(released.len());
        for b in released {
            let columns = b
                .columns()
                .iter()
                .zip(self.placeholder.fields())
                .map(|(c, f)| cast(c, f.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| internal("the released rows do not match the query's aggregate"))?;
            batches.push(
                RecordBatch::try_new(self.placeholder.clone(), columns).map_err(|_| {
                    internal("the released rows do not match the query's aggregate")
                })?,
            );
        }
        let table = MemTable::try_new(self.placeholder.clone(), vec![batches])
            .map_err(|_| internal("the released rows do not match the query's aggregate"))?;
        let source = provider_as_source(Arc::new(table));
        let plan = self
            .plan
            .clone()
            .transform_up(|node| match &node {
                LogicalPlan::TableScan(s) if s.table_name.table() == PLACEHOLDER => {
                    let scan = TableScanBuilder::new(PLACEHOLDER, source.clone())
                        .with_projection(s.projection.clone())
                        .build()?;
                    Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
                }
                _ => Ok(Transformed::no(node)),
            })
            .map_err(|_| internal("the steps after the aggregate could not be planned"))?
            .data;
        let ctx =
            SessionContext::new_with_config(SessionConfig::new().with_information_schema(false));
        let df = ctx
            .execute_logical_plan(plan)
            .await
            .map_err(|_| internal("the steps after the aggregate could not run"))?;
        let planned: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches: Vec<RecordBatch> = df
            .collect()
            .await
            .map_err(|_| internal("the steps after the aggregate failed"))?;
        let schema = batches.first().map(RecordBatch::schema).unwrap_or(planned);
        Ok((schema, batches))
    }
}
