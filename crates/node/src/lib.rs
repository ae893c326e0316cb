//! # airlock-node: a member's data plane
//!
//! The node is the only code that touches a member's raw data. It holds the
//! member's own copy of the collaboration's rules, registers the member's
//! datasets *in place* (DataFusion listing tables over the files: nothing is
//! copied), and runs fragments:
//!
//! ```text
//!  fragment (JSON) ─▶ verify against own rules ─▶ scan ▸ filter ▸ project
//!                     (refuse raw identity,        ▸ pseudonymise identity/join
//!                      unknown columns,            ─▶ Arrow IPC bytes
//!                      predicates on join columns)
//! ```
//!
//! A single-table analysis runs here entirely: the node re-checks the SQL
//! with its own guard, applies its own threshold, and only the aggregate
//! leaves. Errors that leave the node carry no data values.

pub mod catalog;
pub mod crypto;
pub mod ledger;
pub mod sources;
mod verify;

pub use ledger::{DebitError, Ledger};

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use crate::catalog::Catalog;
use airlock_crypto::{CollaborationSecret, PseudonymKey, TOKEN_LEN};
use airlock_guard::{Guard, GuardError};
use airlock_policy::{Collaboration, ConfigErrors, Control, Refusal};
use airlock_protocol::wire::{wire_field, Partitions};
use airlock_protocol::{Fragment, ScanFragment, Treatment};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryBuilder};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::common::Column;
use datafusion::logical_expr::{cast, Expr};
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::{StreamExt, TryStreamExt};
use thiserror::Error;

use airlock_protocol::expr::predicate_to_expr;

/// Errors of a node. Those sent back across the boundary carry no data values.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The fragment breaks the node's own rules.
    #[error("{0}")]
    Refused(Refusal),
    /// The node's configuration or data sources are wrong.
    #[error("{0}")]
    Config(ConfigErrors),
    /// The fragment is malformed or is for another collaboration or table.
    #[error("bad fragment: {0}")]
    BadFragment(String),
    /// Running the fragment failed. Deliberately uniform: no engine message,
    /// which could hold a data value, leaves the node.
    #[error("the fragment failed while running on the node")]
    Execution,
    /// A local problem (secret file, encoding).
    #[error("{0}")]
    Local(String),
}

/// A stream of result batches of one partition.
pub type BatchStream = futures::stream::BoxStream<'static, Result<RecordBatch, NodeError>>;

impl From<Refusal> for NodeError {
    fn from(r: Refusal) -> Self {
        NodeError::Refused(r)
    }
}

/// One member's node in one collaboration.
pub struct Node {
    member: String,
    collab: Collaboration,
    ctx: SessionContext,
    views: sources::Views,
    schemas: HashMap<String, SchemaRef>,
    guard: Guard,
    secret: std::sync::RwLock<Option<CollaborationSecret>>,
    psi: crypto::Sessions,
    max_rows: usize,
    ledger: Option<Arc<dyn Ledger>>,
}

/// What one fragment may ask of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeLimits {
    /// The query's size limits for the node's own guard.
    pub query: airlock_guard::Limits,
    /// The memory pool of the node's engine, in bytes.
    pub memory_bytes: usize,
    /// The most rows one fragment ships.
    pub max_rows_per_fragment: usize,
}

impl Default for NodeLimits {
    fn default() -> Self {
        NodeLimits {
            query: airlock_guard::Limits::default(),
            memory_bytes: 2 * 1024 * 1024 * 1024,
            max_rows_per_fragment: 50_000_000,
        }
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("member", &self.member)
            .field("collaboration", &self.collab.name())
            .finish()
    }
}

impl Node {
    /// Opens the node of `member` in one process with the collaboration
    /// file: registers its datasets in place, as the catalog file
    /// `catalog.toml` in `config_dir` locates them, checks each configured
    /// column against the data, and reads the collaboration secret (its
    /// `secret_file`, relative to `config_dir`).
    pub async fn open(
        collab: &Collaboration,
        config_dir: &Path,
        member: &str,
    ) -> Result<Node, NodeError> {
        Self::open_pushdown(collab, config_dir, member, true).await
    }

    /// [`Node::open`], with pushdown into the sources off when `pushdown`
    /// is false (a benchmark's baseline only).
    pub async fn open_pushdown(
        collab: &Collaboration,
        config_dir: &Path,
        member: &str,
        pushdown: bool,
    ) -> Result<Node, NodeError> {
        let mut catalog = Catalog::from_file(&config_dir.join(catalog::CATALOG_FILE))
            .map_err(NodeError::Local)?;
        if !pushdown {
            catalog = catalog.without_pushdown();
        }
        let secret_path = config_dir.join(&collab.config().collaboration.secret_file);
        let text = std::fs::read_to_string(&secret_path).map_err(|e| {
            NodeError::Local(format!(
                "cannot read the collaboration secret {}: {e}",
                secret_path.display()
            ))
        })?;
        let secret = CollaborationSecret::from_hex(&text)
            .map_err(|e| NodeError::Local(format!("{}: {e}", secret_path.display())))?;
        Self::open_with_secret(collab, &catalog, member, Some(secret)).await
    }

    /// Opens the node of `member` with the collaboration secret given
    /// directly (a node service receives it sealed, possibly later: until
    /// then, fragments that need pseudonyms fail closed).
    pub async fn open_with_secret(
        collab: &Collaboration,
        catalog: &Catalog,
        member: &str,
        secret: Option<CollaborationSecret>,
    ) -> Result<Node, NodeError> {
        Self::open_with_limits(collab, catalog, member, secret, NodeLimits::default()).await
    }

    /// [`Node::open_with_secret`] with the node's limits.
    pub async fn open_with_limits(
        collab: &Collaboration,
        catalog: &Catalog,
        member: &str,
        secret: Option<CollaborationSecret>,
        limits: NodeLimits,
    ) -> Result<Node, NodeError> {
        let config = SessionConfig::new().with_information_schema(false);
        // DataFusion 55 caches a listing of each directory or prefix for
        // ever, and footers and statistics checked only by size and
        // modification time (a second, in S3). A node reads its sources
        // afresh at every query instead: a new object, a rewritten file
        // or a withdrawal holds from the next query, never a stale copy.
        let caches = datafusion::execution::cache::cache_manager::CacheManagerConfig::default()
            .with_list_files_cache_limit(0)
            .with_file_statistics_cache_limit(0)
            .with_metadata_cache_limit(0);
        let runtime = datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
            .with_memory_limit(limits.memory_bytes, 1.0)
            .with_cache_manager(caches)
            .build_arc()
            .map_err(|e| NodeError::Local(format!("the node's memory pool: {e}")))?;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        let (views, schemas) = sources::register(&ctx, collab, catalog, member).await?;
        let guard = Guard::new(collab, &schemas)
            .map_err(|e| NodeError::Local(e.to_string()))?
            .with_limits(limits.query);
        Ok(Node {
            member: member.to_string(),
            collab: collab.clone(),
            ctx,
            views,
            schemas,
            guard,
            secret: std::sync::RwLock::new(secret),
            psi: crypto::Sessions::default(),
            max_rows: limits.max_rows_per_fragment,
            ledger: None,
        })
    }

    /// The same node debiting `ledger`, its own privacy-budget ledger for
    /// this collaboration (see [`ledger`]). Without one, it refuses every
    /// fragment over a table under differential privacy.
    pub fn with_ledger(mut self, ledger: Arc<dyn Ledger>) -> Node {
        self.ledger = Some(ledger);
        self
    }

    /// Debits the node's own ledger for a fragment of `table` (see
    /// [`ledger`]).
    pub(crate) async fn debit(
        &self,
        table: &str,
        analyst: &str,
        query: &str,
        cost: airlock_guard::dp::DpCost,
    ) -> Result<(), NodeError> {
        ledger::debit(
            self.ledger.as_deref(),
            &self.collab,
            table,
            analyst,
            query,
            cost,
        )
        .await
    }

    /// Installs (or replaces) the collaboration secret.
    pub fn install_secret(&self, secret: CollaborationSecret) {
        if let Ok(mut s) = self.secret.write() {
            *s = Some(secret);
        }
    }

    /// Whether the collaboration secret is present.
    pub fn has_secret(&self) -> bool {
        self.secret.read().map(|s| s.is_some()).unwrap_or(false)
    }

    /// The collaboration this node serves.
    pub fn collaboration(&self) -> &Collaboration {
        &self.collab
    }

    /// The member this node serves.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// Schemas of this member's configured tables (configured columns only),
    /// the only metadata that leaves the node.
    pub fn table_schemas(&self) -> &HashMap<String, SchemaRef> {
        &self.schemas
    }

    /// Runs a fragment received as JSON and returns the result as Arrow IPC
    /// bytes: the node's whole interface to the outside.
    pub async fn execute(&self, fragment_json: &[u8]) -> Result<Vec<u8>, NodeError> {
        let fragment: Fragment = serde_json::from_slice(fragment_json)
            .map_err(|e| NodeError::BadFragment(format!("not a fragment: {e}")))?;
        let (schema, partitions) = self.run(&fragment).await?;
        airlock_protocol::wire::encode_partitions(&schema, &partitions)
            .map_err(|_| NodeError::Local("could not encode the result".into()))
    }

    /// Verifies and runs a fragment; returns its result by partition.
    pub async fn run(&self, fragment: &Fragment) -> Result<(SchemaRef, Partitions), NodeError> {
        let (schema, streams) = self.run_streams(fragment).await?;
        // Drain every partition at once, so all of them keep running.
        let out =
            futures::future::try_join_all(streams.into_iter().map(|s| s.try_collect::<Vec<_>>()))
                .await?;
        Ok((schema, out))
    }

    /// Verifies and starts a fragment; returns one stream of result batches
    /// per partition, produced (and pseudonymised) while they are consumed.
    pub async fn run_streams(
        &self,
        fragment: &Fragment,
    ) -> Result<(SchemaRef, Vec<BatchStream>), NodeError> {
        let (schema, streams) = self.run_streams_unlimited(fragment).await?;
        // Rows shipped, across every partition of the fragment.
        let shipped = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let max = self.max_rows;
        let streams = streams
            .into_iter()
            .map(|s| {
                let shipped = shipped.clone();
                s.map(move |b| {
                    let b = b?;
                    let n = shipped.fetch_add(b.num_rows(), std::sync::atomic::Ordering::Relaxed)
                        + b.num_rows();
                    if n > max {
                        return Err(NodeError::Refused(Refusal::new(
                            Control::Limit,
                            format!("the fragment ships more than {max} rows (max_rows_per_fragment of the node)"),
                        )));
                    }
                    Ok(b)
                })
                .boxed()
            })
            .collect();
        Ok((schema, streams))
    }

    async fn run_streams_unlimited(
        &self,
        fragment: &Fragment,
    ) -> Result<(SchemaRef, Vec<BatchStream>), NodeError> {
        verify::common(&self.collab, &self.member, fragment)?;
        match fragment {
            Fragment::Analysis {
                query,
                querier,
                table,
                sql,
                template,
                purpose,
                ..
            } => {
                let (schema, parts) = self
                    .run_analysis(
                        query,
                        table,
                        querier,
                        sql,
                        template.as_ref(),
                        purpose.as_deref(),
                    )
                    .await?;
                let streams = parts
                    .into_iter()
                    .map(|p| futures::stream::iter(p.into_iter().map(Ok)).boxed())
                    .collect();
                Ok((schema, streams))
            }
            Fragment::Scan(scan) => {
                verify::scan(&self.collab, &self.member, scan)?;
                // Priced from this node's own rules: a table under
                // differential privacy is never scanned without a debit.
                let under_dp = self.collab.table(&scan.table).and_then(|t| t.dp());
                match (under_dp, &scan.dp) {
                    (None, None) => {}
                    (Some(_), None) => {
                        let rule = self.collab.table(&scan.table).map(|t| t.rule.kind());
                        return Err(NodeError::Refused(
                            Refusal::new(
                                Control::DifferentialPrivacy,
                                "this table is under differential privacy and the fragment does not declare its query's privacy cost",
                            )
                            .table(&scan.table, rule),
                        ));
                    }
                    (_, Some(declared)) => {
                        let cost =
                            airlock_guard::dp::scan_cost(&self.collab, &scan.table, declared)
                                .map_err(NodeError::Refused)?;
                        self.debit(&scan.table, &scan.querier, &scan.query, cost)
                            .await?;
                    }
                }
                self.run_scan(scan).await
            }
        }
    }

    /// The view of a configured table for a query's purpose.
    fn view(&self, purpose: Option<&str>, alias: &str) -> Option<&Arc<dyn TableProvider>> {
        let purposes = &self.collab.config().collaboration.purposes;
        // With one declared purpose, its view is the all-purposes view.
        let key = purpose.filter(|_| purposes.len() > 1).map(str::to_string);
        self.views.get(&(key, alias.to_string()))
    }

    async fn run_analysis(
        &self,
        query: &str,
        table: &str,
        querier: &str,
        sql: &str,
        template: Option<&airlock_protocol::TemplateRun>,
        purpose: Option<&str>,
    ) -> Result<(SchemaRef, Partitions), NodeError> {
        let checked = self
            .guard
            .check_run(sql, template, purpose, querier, true)
            .await
            .map_err(|e| match e {
                GuardError::Refused(r) => NodeError::Refused(r),
                GuardError::BadInput(m) => NodeError::BadFragment(m),
                GuardError::Internal(m) => NodeError::Local(m),
            })?;
        // Under differential privacy the node's own ledger is debited
        // before a row is read: the noise it adds below is what the budget
        // pays for, and a hub that asks again pays again.
        if let Some(dp) = &checked.dp {
            self.debit(table, querier, query, dp.cost).await?;
        }
        let plan = airlock_exec::bind_scans(&checked.plan, |scan| {
            match self.view(purpose, scan.table_name.table()) {
                Some(view) => Ok(view.clone()),
                None => datafusion::common::plan_err!("not a table of this node"),
            }
        })
        .map_err(|_| NodeError::Execution)?;
        let (schema, batches) = airlock_exec::run(&self.ctx, plan)
            .await
            .map_err(|_| NodeError::Execution)?;
        // Under differential privacy the node adds the noise itself: the
        // exact bounded aggregates never leave it. Otherwise the query's own
        // steps above the aggregate run over the rows that passed k only.
        let (schema, batches) =
            airlock_exec::finish(checked.dp.as_ref(), checked.upper.as_ref(), batches, schema)
                .await
                .map_err(|e| NodeError::Local(e.to_string()))?;
        Ok((schema, vec![batches]))
    }

    async fn run_scan(
        &self,
        scan: &ScanFragment,
    ) -> Result<(SchemaRef, Vec<BatchStream>), NodeError> {
        let view = self
            .view(scan.purpose.as_deref(), &scan.table)
            .ok_or(NodeError::Execution)?;
        let mut df = self
            .ctx
            .read_table(view.clone())
            .map_err(|_| NodeError::Execution)?;
        if let Some(p) = &scan.filter {
            df = df
                .filter(predicate_to_expr(p))
                .map_err(|_| NodeError::Execution)?;
        }
        // Each column is cast to the type it travels as (`wire_field`), the
        // type the guard gave it in the executor plan.
        let source = df.schema().as_arrow().clone();
        let mut exprs = Vec::with_capacity(scan.columns.len());
        let mut fields = Vec::with_capacity(scan.columns.len());
        for c in &scan.columns {
            let field = source
                .field_with_name(&c.name)
                .map_err(|_| NodeError::Execution)?;
            let wire = wire_field(field, &c.treatment);
            let column = Expr::Column(Column::new_unqualified(&c.name));
            exprs.push(
                if c.treatment == Treatment::Raw && wire.data_type() != field.data_type() {
                    cast(column, wire.data_type().clone()).alias(&c.name)
                } else {
                    column
                },
            );
            fields.push(wire);
        }
        df = df.select(exprs).map_err(|_| NodeError::Execution)?;
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        let keys: Vec<Option<PseudonymKey>> = {
            let secret = self
                .secret
                .read()
                .map_err(|_| NodeError::Local("the secret lock is poisoned".into()))?;
            let mut keys = Vec::with_capacity(scan.columns.len());
            for c in &scan.columns {
                keys.push(match &c.treatment {
                    Treatment::Pseudonym { contract } => {
                        let Some(secret) = secret.as_ref() else {
                            return Err(NodeError::Local(
                                "the collaboration secret has not been delivered to this node yet"
                                    .into(),
                            ));
                        };
                        Some(PseudonymKey::derive(secret, self.collab.id(), contract))
                    }
                    Treatment::Raw => None,
                });
            }
            keys
        };
        // Pseudonymise each batch as its partition's scan produces it: raw
        // identifiers are never collected in memory as a whole.
        let streams = df
            .execute_stream_partitioned()
            .await
            .map_err(|_| NodeError::Execution)?;
        let keys = Arc::new(keys);
        let out = streams
            .into_iter()
            .map(|mut stream| {
                let keys = keys.clone();
                let schema = schema.clone();
                // A small buffer: the partition runs ahead of the consumer by
                // a few batches, and stops when the consumer goes away.
                let (tx, rx) = tokio::sync::mpsc::channel(4);
                tokio::spawn(async move {
                    while let Some(batch) = stream.next().await {
                        let item = batch
                            .map_err(|_| NodeError::Execution)
                            .and_then(|b| pseudonymise(&b, &keys, &schema));
                        let failed = item.is_err();
                        if tx.send(item).await.is_err() || failed {
                            break;
                        }
                    }
                });
                futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|item| (item, rx))
                })
                .boxed()
            })
            .collect();
        Ok((schema, out))
    }
}

/// Replaces every column that has a key by its 16-byte tokens (Binary).
fn pseudonymise(
    batch: &RecordBatch,
    keys: &[Option<PseudonymKey>],
    schema: &SchemaRef,
) -> Result<RecordBatch, NodeError> {
    let columns = batch
        .columns()
        .iter()
        .zip(keys)
        .map(|(col, key)| -> Result<ArrayRef, NodeError> {
            let Some(key) = key else {
                return Ok(col.clone());
            };
            if col.data_type() != &DataType::Utf8View {
                return Err(NodeError::Local(
                    "identity column is not a string view".into(),
                ));
            }
            let values = col.as_string_view();
            let mut b = BinaryBuilder::with_capacity(values.len(), values.len() * TOKEN_LEN);
            for v in values.iter() {
                match v {
                    Some(s) => b.append_value(key.token(s.as_bytes())),
                    None => b.append_null(),
                }
            }
            Ok(Arc::new(b.finish()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|_| NodeError::Execution)
}
