//! The executor: an ephemeral, memory-only DataFusion session per query.
//!
//! It takes the guard's executor plan, whose scans read schema-only tables,
//! and puts each node's fragment result in place of the matching scan (in
//! plan order). The rows carry pseudonyms, never raw identifiers; the plan
//! already holds the threshold. When the session is dropped, nothing remains.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::{provider_as_source, MemTable};
use datafusion::logical_expr::{LogicalPlan, TableScanBuilder};
use datafusion::prelude::{SessionConfig, SessionContext};

use airlock_protocol::wire::Partitions;

use crate::{HubError, Released};

/// Runs the executor plan over the fragment results (in scan order).
pub(crate) async fn run(
    template: &LogicalPlan,
    inputs: Vec<(SchemaRef, Partitions)>,
    memory_bytes: usize,
) -> Result<Released, HubError> {
    let mut inputs = inputs.into_iter();
    let plan = template
        .clone()
        .transform_down(|node| {
            let LogicalPlan::TableScan(scan) = &node else {
                return Ok(Transformed::no(node));
            };
            let Some((_, partitions)) = inputs.next() else {
                return datafusion::common::plan_err!("fewer fragment results than scans");
            };
            let expected = scan.source.schema();
            let partitions = partitions
                .into_iter()
                .map(|p| {
                    p.into_iter()
                        .map(|b| RecordBatch::try_new(expected.clone(), b.columns().to_vec()))
                        .collect::<Result<Vec<_>, _>>()
                })
                .collect::<Result<Vec<_>, _>>()?;
            let table = MemTable::try_new(expected, partitions)?;
            let real =
                TableScanBuilder::new(scan.table_name.clone(), provider_as_source(Arc::new(table)))
                    .with_projection(scan.projection.clone())
                    .build()?;
            Ok(Transformed::yes(LogicalPlan::TableScan(real)))
        })
        .map_err(|_| HubError::Failed("a fragment result does not match the plan".into()))?
        .data;
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_memory_limit(memory_bytes, 1.0)
        .build_arc()
        .map_err(|_| HubError::Failed("the executor's memory pool could not be made".into()))?;
    let ctx = SessionContext::new_with_config_rt(
        SessionConfig::new().with_information_schema(false),
        runtime,
    );
    // Engine messages can quote values; none is passed on.
    let failed = |e: datafusion::error::DataFusionError, what: &str| {
        if matches!(
            e.find_root(),
            datafusion::error::DataFusionError::ResourcesExhausted(_)
        ) {
            HubError::Failed(format!(
                "the query needed more than the executor's memory limit of {memory_bytes} bytes (executor_memory_bytes) and was stopped"
            ))
        } else {
            HubError::Failed(what.to_string())
        }
    };
    let df = ctx
        .execute_logical_plan(plan)
        .await
        .map_err(|e| failed(e, "the executor could not run the query"))?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df
        .collect()
        .await
        .map_err(|e| failed(e, "the query failed while running in the executor"))?;
    Ok(Released { schema, batches })
}
