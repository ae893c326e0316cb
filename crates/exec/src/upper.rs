//! The analyst's steps above the aggregate, run over released rows only.
//!
//! The guard cut the query at its aggregate ([`Upper`]); here the upper
//! plan runs in a session of its own over a table of the released rows,
//! so no optimizer rule can evaluate the analyst's HAVING or expressions on
//! a group the threshold suppressed (ATTACKS 27).

use std::sync::Arc;

use airlock_guard::{Upper, PLACEHOLDER};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::{bind_scans, ExecError, RunFailure};

/// Runs the upper steps over `released` (rows of the cut node's schema, or
/// of the placeholder's).
pub async fn run(
    upper: &Upper,
    released: Vec<RecordBatch>,
) -> Result<(SchemaRef, Vec<RecordBatch>), ExecError> {
    let mismatch =
        || ExecError::Mismatch("the released rows do not match the query's aggregate".into());
    let placeholder = upper.placeholder();
    // The released rows may carry another representation of the same type
    // (Utf8 for Utf8View, say): each column is cast to the type the plan
    // was checked with.
    let mut batches = Vec::with_capacity(released.len());
    for b in released {
        let columns = b
            .columns()
            .iter()
            .zip(placeholder.fields())
            .map(|(c, f)| cast(c, f.data_type()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| mismatch())?;
        batches.push(RecordBatch::try_new(placeholder.clone(), columns).map_err(|_| mismatch())?);
    }
    let table: Arc<dyn TableProvider> =
        Arc::new(MemTable::try_new(placeholder.clone(), vec![batches]).map_err(|_| mismatch())?);
    let plan = bind_scans(upper.plan(), |scan| {
        if scan.table_name.table() == PLACEHOLDER {
            Ok(table.clone())
        } else {
            // Any other scan stays as the guard planned it (schema-only).
            datafusion::datasource::source_as_provider(&scan.source)
        }
    })
    .map_err(|_| ExecError::Failed("the steps after the aggregate could not be planned".into()))?;
    let ctx = SessionContext::new_with_config(SessionConfig::new().with_information_schema(false));
    let (planned, batches) = crate::run(&ctx, plan).await.map_err(|e| {
        ExecError::Failed(
            match e {
                RunFailure::Plan(_) => "the steps after the aggregate could not run",
                RunFailure::Run(_) => "the steps after the aggregate failed",
            }
            .into(),
        )
    })?;
    let schema = batches.first().map(RecordBatch::schema).unwrap_or(planned);
    Ok((schema, batches))
}
