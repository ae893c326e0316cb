//! The executor: an ephemeral, memory-only DataFusion session per query.
//!
//! It takes the guard's executor plan, whose scans read schema-only tables,
//! and puts each node's fragment result in place of the matching scan (in
//! plan order). The rows carry pseudonyms, never raw identifiers; the plan
//! already holds the threshold. When the session is dropped, nothing remains.

use std::sync::Arc;

use airlock_protocol::wire::Partitions;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::{bind_scans, ExecError, RunFailure};

/// Runs the executor plan over the fragment results (in scan order), in a
/// session whose memory pool holds at most `memory_bytes`.
pub async fn run(
    template: &LogicalPlan,
    inputs: Vec<(SchemaRef, Partitions)>,
    memory_bytes: usize,
) -> Result<(SchemaRef, Vec<RecordBatch>), ExecError> {
    let mut inputs = inputs.into_iter();
    let plan = bind_scans(template, |scan| {
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
        let table: Arc<dyn TableProvider> = Arc::new(MemTable::try_new(expected, partitions)?);
        Ok(table)
    })
    .map_err(|_| ExecError::Mismatch("a fragment result does not match the plan".into()))?;
    let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_memory_limit(memory_bytes, 1.0)
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
