//! Data sources: a member's datasets registered in place, and the views
//! that expose only the configured columns of each configured table.
//!
//! A dataset is named by the collaboration and located by the node's own
//! [`Catalog`]; it is read through a [`Source`]: something that opens it
//! as a DataFusion table read in place, with projection and filter
//! pushdown where the kind supports it. [`FileSource`] (local Parquet, CSV
//! and JSON files, globs and directories, confined to the node's data
//! directory), [`S3Source`] (objects in S3 or an S3-compatible store) and
//! `DeltaSource` (Delta Lake tables, local or in object storage; built
//! with the `delta` feature, since delta-rs adds about ten minutes to a
//! cold release build) and [`PostgresSource`] (PostgreSQL tables and
//! views) are the kinds today. Above the sources this module is kind-blind: the
//! views (configured columns, normalisation, consent and opt-out) are built
//! the same way over whatever a source opened.
//!
//! A source that cannot be opened is refused with the dataset's name and
//! the kind of problem ([`OpenError::public`]); the detail, which may name
//! the location, goes to the node's own log only.

#[cfg(feature = "delta")]
mod delta;
mod file;
mod postgres;
mod s3;

#[cfg(feature = "delta")]
pub use delta::DeltaSource;
pub use file::FileSource;
pub use postgres::{PostgresSource, ROWS_READ as POSTGRES_ROWS_READ};
pub use s3::{put_once, S3Settings, S3Source};

use std::collections::HashMap;
use std::sync::Arc;

use airlock_policy::{Collaboration, ColumnRole, ConfigError, ConfigErrors, Normalize};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::Column;
use datafusion::datasource::file_format::options::ReadOptions;
use datafusion::datasource::listing::{ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::JoinType;
use datafusion::logical_expr::{cast, Expr};
use datafusion::prelude::{
    CsvReadOptions, DataFrame, JsonReadOptions, ParquetReadOptions, SessionContext,
};
use futures::future::BoxFuture;

use crate::catalog::{Catalog, DatasetFormat, Location};
use crate::NodeError;

/// A configured table's view, by purpose (`None`: consented for every
/// purpose of the collaboration) and alias.
pub(crate) type Views = HashMap<(Option<String>, String), Arc<dyn TableProvider>>;

type Registered = (Views, HashMap<String, SchemaRef>);

/// Why a source could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenError {
    /// The kind of problem, in words that carry no data value and nothing
    /// of the dataset's location or credentials: this may leave the node.
    pub public: String,
    /// The detail for the node's operator (may name the location; never a
    /// credential): written to the node's log only.
    pub detail: String,
}

impl OpenError {
    /// A problem of kind `public` with the operator's `detail`.
    pub fn new(public: impl Into<String>, detail: impl Into<String>) -> Self {
        OpenError {
            public: public.into(),
            detail: detail.into(),
        }
    }
}

/// Where one dataset's rows live, and how to read them in place.
pub trait Source: Send + Sync {
    /// Opens the dataset as a table read in place.
    fn open<'a>(
        &'a self,
        ctx: &'a SessionContext,
    ) -> BoxFuture<'a, Result<Arc<dyn TableProvider>, OpenError>>;
}

/// The source of a dataset at `location`; `index` is the dataset's place
/// among the node's datasets (it keys the object store of a remote kind).
pub fn source_of(location: &Location, catalog: &Catalog, index: usize) -> Box<dyn Source> {
    match location {
        Location::Files { path, format } => {
            let root = catalog.data_dir().canonicalize().ok();
            Box::new(FileSource::new(
                catalog.data_dir(),
                root.as_deref(),
                path,
                *format,
            ))
        }
        Location::S3 {
            bucket,
            prefix,
            format,
            endpoint,
            region,
            allow_http,
            credentials,
        } => Box::new(S3Source::new(
            index,
            S3Settings {
                bucket,
                prefix,
                format: *format,
                endpoint: endpoint.as_deref(),
                region: region.as_deref(),
                allow_http: *allow_http,
                credentials,
            },
            catalog.config_dir(),
        )),
        Location::Postgres { table, connection } => Box::new(PostgresSource::new(
            connection,
            table,
            catalog.config_dir(),
            catalog.pushdown(),
        )),
        #[cfg(feature = "delta")]
        Location::Delta { .. } => match delta_source(location, catalog, index) {
            Ok(d) => Box::new(d),
            Err(e) => Box::new(Refused(e)),
        },
        #[cfg(not(feature = "delta"))]
        Location::Delta { .. } => Box::new(Refused(no_delta())),
    }
}

/// Why a `delta` entry cannot be read by a node built without Delta Lake
/// support (the `delta` feature).
#[cfg(not(feature = "delta"))]
fn no_delta() -> OpenError {
    OpenError::new(
        "this node was built without Delta Lake support",
        "build airlock with `--features airlock-cli/delta` (see docs/sources.md)",
    )
}

/// The Delta source of a `delta` entry.
#[cfg(feature = "delta")]
fn delta_source(
    location: &Location,
    catalog: &Catalog,
    index: usize,
) -> Result<DeltaSource, OpenError> {
    let Location::Delta {
        path,
        bucket,
        prefix,
        endpoint,
        region,
        allow_http,
        credentials,
        version,
    } = location
    else {
        return Err(OpenError::new("it is not a Delta table", location.kind()));
    };
    match (path, bucket) {
        (Some(path), None) => {
            let root = catalog.data_dir().canonicalize().ok();
            Ok(DeltaSource::local(
                catalog.data_dir(),
                root.as_deref(),
                path,
                *version,
            ))
        }
        (None, Some(bucket)) => {
            let settings = S3Settings {
                bucket,
                prefix,
                format: DatasetFormat::Parquet,
                endpoint: endpoint.as_deref(),
                region: region.as_deref(),
                allow_http: *allow_http,
                credentials,
            };
            let store = s3::S3Store::new(&settings, catalog.config_dir());
            Ok(DeltaSource::s3(index, store, prefix, *version))
        }
        _ => Err(OpenError::new(
            "its catalog entry names neither or both of path and bucket",
            "a delta entry has a path (a directory under the data directory) or a bucket",
        )),
    }
}

/// Writes `batches` as the new version of the Delta table a `delta`
/// catalog entry names (making the table if it has none), and returns the
/// version: how a member puts data in place for a Delta source (the demo)
/// and how a node delivers a result as a Delta table.
pub async fn write_delta(
    location: &Location,
    catalog: &Catalog,
    batches: Vec<datafusion::arrow::record_batch::RecordBatch>,
) -> Result<u64, OpenError> {
    #[cfg(feature = "delta")]
    return delta_source(location, catalog, usize::MAX)?
        .write(batches)
        .await;
    #[cfg(not(feature = "delta"))]
    {
        let _ = (location, catalog, batches);
        Err(no_delta())
    }
}

/// Where a node delivers results as a Delta table: a directory of its own
/// (absolute), or a prefix in a bucket.
#[derive(Debug, Clone)]
pub enum DeltaPlace<'a> {
    /// The table's directory (made if missing).
    Dir(&'a std::path::Path),
    /// The bucket and prefix, with the `s3` kind's client settings.
    Bucket(S3Settings<'a>),
}

/// Appends `batches` to the Delta table at `place` as a new version
/// (making the table on first use), and returns the version: how a node
/// delivers a result as a Delta table.
pub async fn append_delta(
    place: DeltaPlace<'_>,
    batches: Vec<datafusion::arrow::record_batch::RecordBatch>,
) -> Result<u64, OpenError> {
    #[cfg(feature = "delta")]
    {
        let table = match place {
            DeltaPlace::Dir(dir) => {
                let parent = dir.parent().unwrap_or(std::path::Path::new("/"));
                let leaf = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| {
                        OpenError::new("its path names no directory", dir.display().to_string())
                    })?;
                DeltaSource::local(parent, None, &leaf, None)
            }
            DeltaPlace::Bucket(s) => DeltaSource::in_bucket(&s, std::path::Path::new("/")),
        };
        table.append(batches).await
    }
    #[cfg(not(feature = "delta"))]
    {
        let _ = (place, batches);
        Err(no_delta())
    }
}

/// A catalog entry that cannot name a source: refused when opened, like
/// any other source that cannot be read.
struct Refused(OpenError);

impl Source for Refused {
    fn open<'a>(
        &'a self,
        _ctx: &'a SessionContext,
    ) -> BoxFuture<'a, Result<Arc<dyn TableProvider>, OpenError>> {
        let e = self.0.clone();
        Box::pin(async move { Err(e) })
    }
}

/// A listing table over the objects at `url` (a file, a directory or
/// prefix, or a glob) in `format`, its schema read from the data. The
/// classification of failures is the one every file-like kind shares.
pub(crate) async fn listing_table(
    ctx: &SessionContext,
    url: ListingTableUrl,
    format: DatasetFormat,
) -> Result<Arc<dyn TableProvider>, OpenError> {
    // The same listing options as `SessionContext::register_parquet` and
    // friends, so scans get the session's format options.
    let config = ctx.copied_config();
    let table_options = ctx.copied_table_options();
    let options = match format {
        DatasetFormat::Parquet => {
            ParquetReadOptions::default().to_listing_options(&config, table_options)
        }
        DatasetFormat::Csv => CsvReadOptions::new()
            .has_header(true)
            .to_listing_options(&config, table_options),
        DatasetFormat::Json => {
            JsonReadOptions::default().to_listing_options(&config, table_options)
        }
    };
    // One object named by itself is read whatever its name ends with (a
    // directory or prefix lists only files with the format's extension).
    let mut options = options;
    if !url.is_collection() {
        options.file_extension = String::new();
    }
    let state = ctx.state();
    let schema = options
        .infer_schema(&state, &url)
        .await
        .map_err(|e| classify(&e, format))?;
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema);
    let table = ListingTable::try_new(config)
        .map_err(|e| OpenError::new("its table cannot be built", e.strip_backtrace()))?;
    Ok(Arc::new(table))
}

/// The kind of a failure to read a dataset's schema.
fn classify(e: &DataFusionError, format: DatasetFormat) -> OpenError {
    let detail = e.to_string();
    let mut inner: &DataFusionError = e;
    loop {
        inner = match inner {
            DataFusionError::Context(_, next) => next,
            DataFusionError::Shared(next) => next,
            _ => break,
        };
    }
    let public = match inner {
        DataFusionError::ObjectStore(os) => match os.as_ref() {
            object_store::Error::NotFound { .. } => "nothing found at its location",
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => {
                "its store refused the node's credentials"
            }
            _ => "the node cannot reach its location",
        },
        _ if detail.contains("No files found") || detail.contains("no files") => {
            "nothing found at its location"
        }
        _ => match format {
            DatasetFormat::Parquet => "its data cannot be read as Parquet",
            DatasetFormat::Csv => "its data cannot be read as CSV with a header",
            DatasetFormat::Json => "its data cannot be read as JSON lines",
        },
    };
    OpenError::new(public, detail)
}

fn problem(file: &str, table: &str, column: Option<&str>, message: String) -> ConfigError {
    about("table", file, table, column, message)
}

fn about(
    kind: &'static str,
    file: &str,
    table: &str,
    column: Option<&str>,
    message: String,
) -> ConfigError {
    ConfigError {
        kind,
        file: file.to_string(),
        table: Some(table.to_string()),
        column: column.map(str::to_string),
        message,
    }
}

/// Registers `member`'s datasets (read in place) and one view per configured
/// table, and checks every configured column against the data's schema.
pub(crate) async fn register(
    ctx: &SessionContext,
    collab: &Collaboration,
    catalog: &Catalog,
    member: &str,
) -> Result<Registered, NodeError> {
    let file = collab.file();
    let mut problems = Vec::new();
    let mut datasets: HashMap<String, Arc<dyn TableProvider>> = HashMap::new();
    for (index, ds) in collab
        .config()
        .datasets
        .iter()
        .filter(|d| d.owner == member)
        .enumerate()
    {
        let Some(location) = catalog.get(&ds.name) else {
            problems.push(about(
                "dataset",
                file,
                &ds.name,
                None,
                format!(
                    "is not in the catalog of '{member}'s node (register it there as [datasets.{}])",
                    ds.name
                ),
            ));
            continue;
        };
        match source_of(location, catalog, index).open(ctx).await {
            Ok(table) => {
                datasets.insert(ds.name.clone(), table);
            }
            Err(why) => {
                // The operator's detail stays on this node.
                eprintln!(
                    "node of '{member}': dataset '{}' ({}): {}",
                    ds.name,
                    location.kind(),
                    why.detail
                );
                problems.push(about(
                    "dataset",
                    file,
                    &ds.name,
                    None,
                    format!("({} source): {}", location.kind(), why.public),
                ))
            }
        }
    }
    let mut views = HashMap::new();
    let mut schemas = HashMap::new();
    for t in collab.tables_of(member) {
        let Some(provider) = datasets.get(&t.dataset) else {
            continue; // its dataset already has a problem recorded
        };
        let source = provider.schema();
        let mut exprs = Vec::new();
        for column in t.columns() {
            let src = t.source_of(&column);
            let Ok(field) = source.field_with_name(src) else {
                let available: Vec<&str> =
                    source.fields().iter().map(|f| f.name().as_str()).collect();
                problems.push(problem(
                    file,
                    &t.alias,
                    Some(&column),
                    format!(
                        "{} not a column of dataset '{}' (its columns: {})",
                        if src == column.as_str() {
                            "is".to_string()
                        } else {
                            format!("is read from '{src}' (source_columns), which is")
                        },
                        t.dataset,
                        available.join(", ")
                    ),
                ));
                continue;
            };
            let ident = normalized(collab, &column, src, field.data_type());
            match t.role(&column) {
                Some(ColumnRole::Identity { .. } | ColumnRole::Join) => {
                    // Identity and join values are hashed from their text
                    // form, after the schema contract's normalisation.
                    exprs.push(cast(ident, DataType::Utf8View).alias(&column));
                }
                Some(ColumnRole::Measure(_)) if !field.data_type().is_numeric() => {
                    problems.push(problem(
                        file,
                        &t.alias,
                        Some(&column),
                        format!("a measure must be numeric (found {})", field.data_type()),
                    ));
                }
                _ => exprs.push(if src == column.as_str() {
                    ident
                } else {
                    ident.alias(&column)
                }),
            }
        }
        let all = &collab.config().collaboration.purposes;
        let consented = consent_filter(ctx, collab, t, provider, &datasets, all, &mut problems)?;
        if problems.is_empty() {
            let df = consented
                .select(exprs.clone())
                .map_err(|e| NodeError::Local(e.strip_backtrace()))?;
            let view = df.into_view();
            schemas.insert(t.alias.clone(), view.schema());
            ctx.register_table(t.alias.as_str(), view.clone())
                .map_err(|e| NodeError::Local(e.strip_backtrace()))?;
            views.insert((None, t.alias.clone()), view);
            // A query that names its purpose counts the rows consented
            // for that purpose, whatever their consent for the others.
            for purpose in all.iter().filter(|_| all.len() > 1) {
                let one = std::slice::from_ref(purpose);
                let df = consent_filter(ctx, collab, t, provider, &datasets, one, &mut problems)?
                    .select(exprs.clone())
                    .map_err(|e| NodeError::Local(e.strip_backtrace()))?;
                views.insert((Some(purpose.clone()), t.alias.clone()), df.into_view());
            }
        }
    }
    if problems.is_empty() {
        Ok((views, schemas))
    } else {
        Err(NodeError::Config(ConfigErrors(problems)))
    }
}

/// The rows of a configured table's dataset that may count: for each of
/// the collaboration's purposes, only rows whose consent column is true and
/// whose identity is not on the dataset's suppression list. Read in place,
/// so a withdrawal in the source holds from the next query.
fn consent_filter(
    ctx: &SessionContext,
    collab: &Collaboration,
    t: &airlock_policy::ConfiguredTable,
    provider: &Arc<dyn TableProvider>,
    datasets: &HashMap<String, Arc<dyn TableProvider>>,
    purposes: &[String],
    problems: &mut Vec<ConfigError>,
) -> Result<DataFrame, NodeError> {
    let local = |e: datafusion::error::DataFusionError| NodeError::Local(e.strip_backtrace());
    let file = collab.file();
    let mut df = ctx.read_table(provider.clone()).map_err(local)?;
    let Some(ds) = collab.dataset(&t.dataset) else {
        return Ok(df);
    };
    for purpose in purposes {
        let Some(source) = ds.consent.get(purpose) else {
            continue;
        };
        if let Some(col) = &source.column {
            match provider.schema().field_with_name(col) {
                Ok(f) if f.data_type() == &DataType::Boolean => {
                    df = df.filter(Expr::Column(Column::new_unqualified(col)).is_true()).map_err(local)?;
                }
                _ => problems.push(about(
                    "dataset",
                    file,
                    &ds.name,
                    Some(col),
                    format!("the consent column for '{purpose}' must be a boolean column of the dataset"),
                )),
            }
        }
        if let Some(list) = &source.suppression_dataset {
            let key = source.suppression_column();
            let Some(listed) = datasets.get(list) else {
                continue; // its own problem is already recorded
            };
            if listed.schema().field_with_name(key).is_err() {
                problems.push(problem(
                    file,
                    list,
                    Some(key),
                    format!("not a column of the suppression list for '{purpose}'"),
                ));
                continue;
            }
            // Both sides normalised as the identity's canonical key is.
            let key_type = listed
                .schema()
                .field_with_name(key)
                .map(|f| f.data_type().clone())
                .unwrap_or(DataType::Utf8);
            let id_src = t.source_of(&t.identity);
            let id_type = provider
                .schema()
                .field_with_name(id_src)
                .map(|f| f.data_type().clone())
                .unwrap_or(DataType::Utf8);
            let optouts = ctx
                .read_table(listed.clone())
                .and_then(|l| {
                    l.select(vec![cast(
                        normalized(collab, &t.identity, key, &key_type),
                        DataType::Utf8,
                    )
                    .alias(OPTOUT)])
                })
                .map_err(local)?;
            df = df
                .with_column(
                    CONSENT_ID,
                    cast(
                        normalized(collab, &t.identity, id_src, &id_type),
                        DataType::Utf8,
                    ),
                )
                .and_then(|d| d.join(optouts, JoinType::LeftAnti, &[CONSENT_ID], &[OPTOUT], None))
                .and_then(|d| d.drop_columns(&[CONSENT_ID]))
                .map_err(local)?;
        }
    }
    Ok(df)
}

/// The dataset column `source`, read as configured column `name`: with the
/// schema contract's normalisation of `name`, if it declares one.
fn normalized(collab: &Collaboration, name: &str, source: &str, data_type: &DataType) -> Expr {
    let mut e = Expr::Column(Column::new_unqualified(source));
    let Some(canonical) = collab.canonical(name) else {
        return e;
    };
    if canonical.normalize.is_empty() {
        return e;
    }
    if !matches!(
        data_type,
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
    ) {
        e = cast(e, DataType::Utf8);
    }
    for step in &canonical.normalize {
        e = match step {
            Normalize::Trim => datafusion::functions::string::expr_fn::btrim(vec![e]),
            Normalize::Lowercase => datafusion::functions::string::expr_fn::lower(e),
            Normalize::Uppercase => datafusion::functions::string::expr_fn::upper(e),
            Normalize::E164 => e164_udf().call(vec![cast(e, DataType::Utf8)]),
        };
    }
    e
}

/// A phone number in E.164, or `None`: separators removed, a leading `00`
/// read as `+`, 8 to 15 digits after the `+`; no country code, no match.
pub fn e164(raw: &str) -> Option<String> {
    let kept: String = raw
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')' | '\u{a0}'))
        .collect();
    let digits = if let Some(rest) = kept.strip_prefix('+') {
        rest
    } else {
        kept.strip_prefix("00")?
    };
    if (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
    {
        Some(format!("+{digits}"))
    } else {
        None
    }
}

fn e164_udf() -> datafusion::logical_expr::ScalarUDF {
    use datafusion::arrow::array::{Array, StringArray};
    use datafusion::logical_expr::{ColumnarValue, Volatility};
    datafusion::logical_expr::create_udf(
        "airlock_e164",
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let input = arrays
                .first()
                .and_then(|a| a.as_any().downcast_ref::<StringArray>())
                .ok_or_else(|| {
                    datafusion::error::DataFusionError::Internal("e164 expects text".into())
                })?;
            let out: StringArray = (0..input.len())
                .map(|i| {
                    if input.is_null(i) {
                        None
                    } else {
                        e164(input.value(i))
                    }
                })
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }),
    )
}

const OPTOUT: &str = "__airlock_optout";
const CONSENT_ID: &str = "__airlock_consent_id";

#[cfg(test)]
mod tests {
    use super::e164;

    #[test]
    fn phone_numbers_normalise_to_e164() {
        for (raw, want) in [
            ("+44 20 7946 0018", Some("+442079460018")),
            ("0044-20-7946-0018", Some("+442079460018")),
            ("+1 (415) 555.0100", Some("+14155550100")),
            ("020 7946 0018", None),
            ("+44 20 7946 001x", None),
            ("+0 123456789", None),
            ("+1234567", None),
            ("", None),
        ] {
            assert_eq!(e164(raw).as_deref(), want, "{raw}");
        }
    }
}
