//! # airlock-exec: running what the guard planned
//!
//! The guard plans over schema-only tables and executes nothing. This crate
//! is where plans meet rows, for the node and the hub's executor alike:
//!
//! ```text
//!  guard's plan (EmptyTable scans) ─bind─▶ plan over real providers ─run─▶ rows
//!  rows of the lower plan ─finish─▶ DP release (noise, groups) or the upper steps ─▶ released rows
//! ```
//!
//! - [`bind_scans`] puts a real table in place of each schema-only scan (the
//!   node's consent-filtered view, the executor's fragment results, the
//!   released rows under the upper steps): the one place that does it.
//! - [`run`] executes a bound plan and collects it; [`join`] is the
//!   executor's memory-capped session over the fragment results.
//! - [`finish`] releases a lower plan's rows: [`dp::release`] under
//!   differential privacy, [`upper::run`] otherwise.
//!
//! Engine messages can quote values, so no error here carries one: each
//! names the step that failed.

#![forbid(unsafe_code)]

pub mod dp;
pub mod join;
pub mod upper;

use std::fmt;
use std::sync::Arc;

use airlock_guard::dp::DpRelease;
use airlock_guard::Upper;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::provider_as_source;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{LogicalPlan, TableScan, TableScanBuilder};
use datafusion::prelude::SessionContext;

/// Why rows were not produced. No variant carries a data value.
#[derive(Debug)]
pub enum ExecError {
    /// The rows bound to a plan do not fit it (fewer results than scans, a
    /// schema that differs).
    Mismatch(String),
    /// A step failed; the text names the step, never the engine's message.
    Failed(String),
    /// The session needed more memory than its limit.
    Memory {
        /// The limit, in bytes.
        limit: usize,
    },
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::Mismatch(m) | ExecError::Failed(m) => write!(f, "{m}"),
            ExecError::Memory { limit } => write!(
                f,
                "the query needed more memory than the executor gave it and was stopped (executor_memory_bytes is {limit}; a query is sure of half of it, above that the limit of each query is drawn at random)"
            ),
        }
    }
}

impl std::error::Error for ExecError {}

/// Where [`run`] failed.
#[derive(Debug)]
pub enum RunFailure {
    /// Turning the logical plan into a physical one.
    Plan(DataFusionError),
    /// Running it.
    Run(DataFusionError),
}

impl RunFailure {
    /// The engine's error (never to be shown: it can quote values).
    pub fn error(&self) -> &DataFusionError {
        match self {
            RunFailure::Plan(e) | RunFailure::Run(e) => e,
        }
    }
}

/// Puts a real table in place of every scan of `plan` (top down, so in
/// the order the guard's split lists the fragments): `provider` gives the
/// table for a scan, whose projection is kept.
pub fn bind_scans(
    plan: &LogicalPlan,
    mut provider: impl FnMut(&TableScan) -> datafusion::common::Result<Arc<dyn TableProvider>>,
) -> datafusion::common::Result<LogicalPlan> {
    Ok(plan
        .clone()
        .transform_down(|node| {
            let LogicalPlan::TableScan(scan) = &node else {
                return Ok(Transformed::no(node));
            };
            let table = provider(scan)?;
            let real = TableScanBuilder::new(scan.table_name.clone(), provider_as_source(table))
                .with_projection(scan.projection.clone())
                .build()?;
            Ok(Transformed::yes(LogicalPlan::TableScan(real)))
        })?
        .data)
}

/// Runs a bound plan in `ctx` and collects its rows, with the schema the
/// plan gives them.
pub async fn run(
    ctx: &SessionContext,
    plan: LogicalPlan,
) -> Result<(SchemaRef, Vec<RecordBatch>), RunFailure> {
    let df = ctx
        .execute_logical_plan(plan)
        .await
        .map_err(RunFailure::Plan)?;
    let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(RunFailure::Run)?;
    Ok((schema, batches))
}

/// What follows a lower plan: under differential privacy its release
/// (noise, then the query's steps above the aggregate), otherwise the
/// upper steps over the rows that passed k, or nothing.
pub async fn finish(
    dp: Option<&DpRelease>,
    upper: Option<&Upper>,
    rows: Vec<RecordBatch>,
    schema: SchemaRef,
) -> Result<(SchemaRef, Vec<RecordBatch>), ExecError> {
    match (dp, upper) {
        (Some(dp), _) => dp::release(dp, rows).await,
        (None, Some(upper)) => upper::run(upper, rows).await,
        (None, None) => Ok((schema, rows)),
    }
}
