//! Delta Lake tables (delta-rs, on the DataFusion the engine uses): a
//! table's current version, or the version its catalog entry pins, read in
//! place from a directory under the node's data directory or from a
//! prefix in S3 or an S3-compatible store.
//!
//! Pushdown is delta-rs's scan: the projection reaches the Parquet reader,
//! and filters prune whole files by the statistics in the table's log
//! before Parquet prunes row groups. Only reads are made: the node never
//! writes to a registered table.
//!
//! A table in object storage is reached through the same S3 client as an
//! `s3` entry ([`S3Store`]), under the dataset's own key
//! (`s3://airlock-dataset-N`), so the bucket is named in no plan.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use deltalake_core::errors::DeltaTableError;
use deltalake_core::logstore::{
    default_logstore, logstore_factories, LogStoreFactory, LogStoreRef,
};
use deltalake_core::protocol::SaveMode;
use deltalake_core::table::builder::DeltaTableBuilder;
use deltalake_core::DeltaTable;
use futures::future::BoxFuture;
use url::Url;

use super::s3::{store_key, S3Store};
use super::{file::confined, OpenError, Source};

/// A Delta table registered in the node's catalog.
#[derive(Debug, Clone)]
pub struct DeltaSource {
    place: Place,
    version: Option<u64>,
}

#[derive(Debug, Clone)]
enum Place {
    /// A directory under the data directory `dir` (canonically `root`).
    Local {
        dir: PathBuf,
        root: Option<PathBuf>,
        path: String,
    },
    /// A prefix in a bucket, reached under `key`.
    S3 {
        key: String,
        prefix: String,
        store: S3Store,
    },
}

impl DeltaSource {
    /// A table in the directory `path` under `dir` (canonically `root`).
    pub fn local(dir: &Path, root: Option<&Path>, path: &str, version: Option<u64>) -> Self {
        DeltaSource {
            place: Place::Local {
                dir: dir.to_path_buf(),
                root: root.map(Path::to_path_buf),
                path: path.to_string(),
            },
            version,
        }
    }

    /// A table under `prefix` of the bucket `store` reaches; `index` is the
    /// dataset's place in the catalog.
    pub(crate) fn s3(index: usize, store: S3Store, prefix: &str, version: Option<u64>) -> Self {
        DeltaSource {
            place: Place::S3 {
                key: store_key(index),
                prefix: prefix.trim_matches('/').to_string(),
                store,
            },
            version,
        }
    }

    /// The table's builder; `create` makes a local table's directory first
    /// (for a write).
    fn builder(&self, create: bool) -> Result<DeltaTableBuilder, OpenError> {
        match &self.place {
            Place::Local { dir, root, path } => {
                let full = dir.join(path);
                if create {
                    std::fs::create_dir_all(&full).map_err(|e| {
                        OpenError::new("its directory cannot be made", e.to_string())
                    })?;
                }
                // Once the directory exists its canonical root is known.
                let root = root.clone().or_else(|| dir.canonicalize().ok());
                confined(root.as_deref(), dir, path).map_err(|why| {
                    OpenError::new(why.clone(), format!("{why}: {}", full.display()))
                })?;
                if !full.is_dir() {
                    return Err(OpenError::new(
                        "nothing found at its location",
                        format!("no directory at {}", full.display()),
                    ));
                }
                let real = full
                    .canonicalize()
                    .map_err(|e| OpenError::new("nothing found at its location", e.to_string()))?;
                let url = Url::from_directory_path(&real).map_err(|()| {
                    OpenError::new("its path is not a valid path", real.display().to_string())
                })?;
                DeltaTableBuilder::from_url(url).map_err(|e| classify(&e))
            }
            Place::S3 { key, prefix, store } => {
                register_s3_logstore();
                let client = Arc::new(store.build()?);
                let url = Url::parse(&format!("{key}/{prefix}/")).map_err(|e| {
                    OpenError::new("its prefix is not a valid object key", e.to_string())
                })?;
                Ok(DeltaTableBuilder::from_url(url.clone())
                    .map_err(|e| classify(&e))?
                    .with_storage_backend(client, url))
            }
        }
    }

    /// A table under `prefix` of the bucket `s` names (a destination: the
    /// node writes it, never a registered dataset).
    pub fn in_bucket(s: &super::S3Settings<'_>, config_dir: &Path) -> Self {
        DeltaSource::s3(usize::MAX, S3Store::new(s, config_dir), s.prefix, None)
    }

    /// Writes `batches` as the table's new version (replacing its rows,
    /// or making the table), and returns that version.
    pub async fn write(&self, batches: Vec<RecordBatch>) -> Result<u64, OpenError> {
        self.commit(batches, SaveMode::Overwrite).await
    }

    /// Appends `batches` to the table as a new version (making the table
    /// if there is none), and returns that version: how a node delivers a
    /// result as a Delta table.
    pub async fn append(&self, batches: Vec<RecordBatch>) -> Result<u64, OpenError> {
        self.commit(batches, SaveMode::Append).await
    }

    async fn commit(&self, batches: Vec<RecordBatch>, mode: SaveMode) -> Result<u64, OpenError> {
        let mut table = self.builder(true)?.build().map_err(|e| classify(&e))?;
        match table.load().await {
            Ok(()) | Err(DeltaTableError::NotATable(_)) => {}
            Err(e) => return Err(classify(&e)),
        }
        let table = table
            .write(batches)
            .with_save_mode(mode)
            .await
            .map_err(|e| match e {
                DeltaTableError::Arrow { .. } | DeltaTableError::SchemaMismatch { .. } => {
                    OpenError::new(
                        "its table has other columns than the rows written",
                        e.to_string(),
                    )
                }
                e => OpenError::new("its table cannot be written", e.to_string()),
            })?;
        table
            .version()
            .ok_or_else(|| OpenError::new("its table cannot be written", "no version after write"))
    }

    async fn table(&self, ctx: &SessionContext) -> Result<Arc<dyn TableProvider>, OpenError> {
        let builder = self.builder(false)?;
        let builder = match self.version {
            Some(v) => builder.with_version(v),
            None => builder,
        };
        let table = builder.load().await.map_err(|e| match (&e, self.version) {
            // The kernel reports a pinned version past the newest as a
            // log segment ending too early.
            (DeltaTableError::Kernel { .. } | DeltaTableError::KernelError(_), Some(_))
                if e.to_string().contains("version") =>
            {
                OpenError::new(
                    "the version its catalog entry pins does not exist",
                    e.to_string(),
                )
            }
            _ => classify(&e),
        })?;
        table
            .update_datafusion_session(&ctx.state())
            .map_err(|e| classify(&e))?;
        let first = table
            .table_provider()
            .await
            .map_err(|e| OpenError::new("its table cannot be built", e.strip_backtrace()))?;
        Ok(Arc::new(Fresh {
            log_store: table.log_store(),
            version: self.version,
            first,
        }))
    }
}

/// A Delta table read at the version each scan finds: the newest (a
/// consent withdrawn in a new commit holds from the next query), or the
/// pinned one. The schema is the one read when the node opened the table;
/// a scan that finds another refuses to run rather than read columns by
/// the wrong positions.
struct Fresh {
    log_store: LogStoreRef,
    version: Option<u64>,
    /// The provider of the version read at open: its schema and filter
    /// pushdown answers stand for the table's.
    first: Arc<dyn TableProvider>,
}

impl std::fmt::Debug for Fresh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fresh")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TableProvider for Fresh {
    fn schema(&self) -> SchemaRef {
        self.first.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        self.first.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let now = DeltaTable::new(self.log_store.clone())
            .table_provider()
            .with_table_version(self.version)
            .build()
            .await?;
        if now.schema().fields() != self.first.schema().fields() {
            return Err(DataFusionError::Plan(
                "the Delta table's schema changed since the node opened it (restart the node to read the new schema)".into(),
            ));
        }
        now.scan(state, projection, filters, limit).await
    }
}

impl Source for DeltaSource {
    fn open<'a>(
        &'a self,
        ctx: &'a SessionContext,
    ) -> BoxFuture<'a, Result<Arc<dyn TableProvider>, OpenError>> {
        Box::pin(self.table(ctx))
    }
}

/// Reads of tables under `s3://` go through the store the catalog entry
/// supplies (delta-rs knows only `file://` and `memory://` by itself); the
/// default log store is enough, as the node never commits.
fn register_s3_logstore() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let scheme = Url::parse("s3://").expect("a scheme URL");
        let registry = logstore_factories();
        if registry.get(&scheme).is_none() {
            registry.insert(scheme, Arc::new(ReadLogStore));
        }
    });
}

#[derive(Debug, Default)]
struct ReadLogStore;

impl LogStoreFactory for ReadLogStore {
    fn with_options(
        &self,
        prefixed_store: deltalake_core::logstore::ObjectStoreRef,
        root_store: deltalake_core::logstore::ObjectStoreRef,
        location: &Url,
        options: &deltalake_core::logstore::StorageConfig,
    ) -> deltalake_core::DeltaResult<Arc<dyn deltalake_core::logstore::LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

/// The kind of a failure to load a table.
fn classify(e: &DeltaTableError) -> OpenError {
    let detail = e.to_string();
    let public = match e {
        DeltaTableError::ObjectStore { source } => match source {
            object_store::Error::NotFound { .. } => "nothing found at its location",
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => {
                "its store refused the node's credentials"
            }
            _ => "the node cannot reach its location",
        },
        DeltaTableError::NotATable(_) => "its location holds no Delta table",
        DeltaTableError::InvalidVersion(_) => "the version its catalog entry pins does not exist",
        _ if detail.contains("No such file") || detail.contains("not found") => {
            "its location holds no Delta table"
        }
        _ => "its data cannot be read as a Delta table",
    };
    OpenError::new(public, detail)
}
