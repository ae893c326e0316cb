//! Putting the demo's data where a member's data would live: an
//! S3-compatible bucket, a Delta Lake table (local or in a bucket) or a
//! PostgreSQL database, and registering it in the nodes' catalog in place
//! of the local files. The local Parquet files are removed afterwards, so
//! every row the demo releases was read from the store.
//!
//! The store is written the way a member would fill it: objects put with
//! the S3 client, Delta versions committed by delta-rs (the node's own
//! writer), PostgreSQL rows loaded by `COPY`. The connection string and
//! the keys stay on this machine: the catalog names environment
//! variables, or a file beside it.

use std::path::Path;

use airlock_node::catalog::{CatalogFile, Location, PostgresUrl, S3Credentials};
use datafusion::arrow::array::RecordBatch;
use datafusion::prelude::{ParquetReadOptions, SessionContext};
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::signer::Signer;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// The demo's datasets: (catalog name, local file, table name).
const DATASETS: [(&str, &str, &str); 2] = [
    ("publisher_audience", "audience.parquet", "audience"),
    ("advertiser_purchases", "purchases.parquet", "purchases"),
];

/// The file beside the catalog that holds the demo's PostgreSQL connection
/// string (its password included), readable by its owner only.
pub const POSTGRES_URL_FILE: &str = "postgres.url";

/// Where the demo's data is put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DemoSource {
    /// Local Parquet files (the default).
    Files,
    /// Objects in an S3-compatible store.
    S3(Bucket),
    /// Delta tables: local (`None`) or in a bucket.
    Delta(Option<Bucket>),
    /// Tables in a PostgreSQL database (the connection string).
    Postgres(String),
}

/// A bucket at an S3-compatible endpoint; credentials from `AWS_*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    /// Service URL.
    pub endpoint: String,
    /// Bucket (made if missing).
    pub bucket: String,
    /// Prefix the demo's objects go under.
    pub prefix: String,
}

impl DemoSource {
    /// The kind's name, as the catalog writes it.
    pub fn kind(&self) -> &'static str {
        match self {
            DemoSource::Files => "files",
            DemoSource::S3(_) => "s3",
            DemoSource::Delta(_) => "delta",
            DemoSource::Postgres(_) => "postgres",
        }
    }

    /// The source named on the command line.
    pub fn parse(
        kind: &str,
        endpoint: Option<&str>,
        bucket: &str,
        url: Option<&str>,
    ) -> Result<DemoSource, String> {
        let bucket = |endpoint: &str| Bucket {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            bucket: bucket.to_string(),
            prefix: "airlock-demo".to_string(),
        };
        match (kind, endpoint, url) {
            ("files", None, None) => Ok(DemoSource::Files),
            ("s3", Some(e), None) => Ok(DemoSource::S3(bucket(e))),
            ("s3", None, _) => Err("--source s3 needs --endpoint URL".into()),
            ("delta", e, None) => Ok(DemoSource::Delta(e.map(bucket))),
            ("postgres", None, Some(u)) => Ok(DemoSource::Postgres(u.to_string())),
            ("postgres", _, None) => Err("--source postgres needs --url URL".into()),
            ("files" | "s3" | "delta" | "postgres", _, _) => Err(format!(
                "--source {kind} takes {}",
                match kind {
                    "files" => "neither --endpoint nor --url",
                    "postgres" => "--url, not --endpoint",
                    _ => "--endpoint, not --url",
                }
            )),
            _ => Err(format!(
                "--source {kind}: not a source (files, s3, delta or postgres)"
            )),
        }
    }
}

/// Puts the demo's files in `dir` into `source`, writes the catalog that
/// registers them there, and removes the local files. Returns where each
/// dataset went, for the demo to print (no credential in it).
pub async fn place_demo(dir: &Path, source: &DemoSource) -> Result<Vec<String>, String> {
    if *source == DemoSource::Files {
        return Ok(DATASETS.iter().map(|(_, f, _)| f.to_string()).collect());
    }
    let mut catalog = CatalogFile::default();
    let mut shown = Vec::new();
    match source {
        DemoSource::Files => {}
        DemoSource::S3(b) => {
            let store = s3_store(b)?;
            ensure_bucket(&store, b).await?;
            for (name, file, table) in DATASETS {
                let key = format!("{}/{table}/part-0.parquet", b.prefix);
                let bytes = std::fs::read(dir.join(file)).map_err(|e| format!("{file}: {e}"))?;
                store
                    .put(&ObjectPath::from(key.as_str()), PutPayload::from(bytes))
                    .await
                    .map_err(|e| format!("putting {key}: {e}"))?;
                catalog.datasets.insert(
                    name.to_string(),
                    Location::S3 {
                        bucket: b.bucket.clone(),
                        prefix: format!("{}/{table}/", b.prefix),
                        format: airlock_node::catalog::DatasetFormat::Parquet,
                        endpoint: Some(b.endpoint.clone()),
                        region: None,
                        allow_http: b.endpoint.starts_with("http://"),
                        credentials: S3Credentials::Environment,
                    },
                );
                shown.push(format!("s3://{}/{}/{table}/", b.bucket, b.prefix));
            }
        }
        DemoSource::Delta(bucket) => {
            if let Some(b) = bucket {
                ensure_bucket(&s3_store(b)?, b).await?;
            }
            let local = airlock_node::catalog::Catalog::new(Default::default(), dir, dir);
            for (name, file, table) in DATASETS {
                let location = match bucket {
                    None => Location::Delta {
                        path: Some(format!("{table}_delta")),
                        bucket: None,
                        prefix: String::new(),
                        endpoint: None,
                        region: None,
                        allow_http: false,
                        credentials: S3Credentials::Environment,
                        version: None,
                    },
                    Some(b) => Location::Delta {
                        path: None,
                        bucket: Some(b.bucket.clone()),
                        prefix: format!("{}/{table}_delta", b.prefix),
                        endpoint: Some(b.endpoint.clone()),
                        region: None,
                        allow_http: b.endpoint.starts_with("http://"),
                        credentials: S3Credentials::Environment,
                        version: None,
                    },
                };
                let batches = read_parquet(&dir.join(file)).await?;
                airlock_node::sources::write_delta(&location, &local, batches)
                    .await
                    .map_err(|e| format!("{table}: {} ({})", e.public, e.detail))?;
                shown.push(match bucket {
                    None => format!("{table}_delta/ (Delta)"),
                    Some(b) => format!("s3://{}/{}/{table}_delta/ (Delta)", b.bucket, b.prefix),
                });
                catalog.datasets.insert(name.to_string(), location);
            }
        }
        DemoSource::Postgres(url) => {
            let file = dir.join(POSTGRES_URL_FILE);
            write_private(&file, url)?;
            for (name, file, table) in DATASETS {
                let batches = read_parquet(&dir.join(file)).await?;
                load_postgres(url, table, &batches).await?;
                catalog.datasets.insert(
                    name.to_string(),
                    Location::Postgres {
                        table: format!("public.{table}"),
                        connection: PostgresUrl::File(POSTGRES_URL_FILE.into()),
                    },
                );
                shown.push(format!("PostgreSQL table public.{table}"));
            }
        }
    }
    catalog.write_to(dir)?;
    for (_, file, _) in DATASETS {
        let _ = std::fs::remove_file(dir.join(file));
    }
    Ok(shown)
}

/// The rows of a Parquet file.
pub async fn read_parquet(path: &Path) -> Result<Vec<RecordBatch>, String> {
    let ctx = SessionContext::new();
    ctx.read_parquet(
        path.to_string_lossy().as_ref(),
        ParquetReadOptions::default(),
    )
    .await
    .map_err(|e| format!("{}: {e}", path.display()))?
    .collect()
    .await
    .map_err(|e| format!("{}: {e}", path.display()))
}

/// The S3 client of `b`, credentials from `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY`.
pub fn s3_store(b: &Bucket) -> Result<object_store::aws::AmazonS3, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let var = |k: &str| {
        std::env::var(k).map_err(|_| format!("{k} is not set (the demo's S3 credentials)"))
    };
    AmazonS3Builder::new()
        .with_endpoint(&b.endpoint)
        .with_bucket_name(&b.bucket)
        .with_region(std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()))
        .with_allow_http(b.endpoint.starts_with("http://"))
        .with_access_key_id(var("AWS_ACCESS_KEY_ID")?)
        .with_secret_access_key(var("AWS_SECRET_ACCESS_KEY")?)
        .build()
        .map_err(|e| format!("S3 client: {e}"))
}

/// Makes the bucket if it is missing: a `PUT` of the bucket itself
/// (S3's CreateBucket), signed by the client's own signer.
async fn ensure_bucket(store: &object_store::aws::AmazonS3, b: &Bucket) -> Result<(), String> {
    let probe = ObjectPath::from(format!("{}/.airlock-probe", b.prefix).as_str());
    match store.head(&probe).await {
        Ok(_) | Err(object_store::Error::NotFound { .. }) => {
            // A missing key in an existing bucket and a missing bucket
            // both say NotFound; a listing tells them apart.
            use futures::StreamExt;
            let mut list = store.list(Some(&ObjectPath::from(b.prefix.as_str())));
            match list.next().await {
                None | Some(Ok(_)) => return Ok(()),
                Some(Err(object_store::Error::NotFound { .. })) => {}
                Some(Err(e)) => return Err(format!("bucket {}: {e}", b.bucket)),
            }
        }
        Err(e) => return Err(format!("bucket {}: {e}", b.bucket)),
    }
    let url = store
        .signed_url(
            http::Method::PUT,
            &ObjectPath::from(""),
            std::time::Duration::from_secs(60),
        )
        .await
        .map_err(|e| format!("signing CreateBucket: {e}"))?;
    let response = reqwest::Client::new()
        .put(url.as_str())
        .send()
        .await
        .map_err(|e| format!("creating bucket {}: {e}", b.bucket))?;
    if !response.status().is_success() {
        return Err(format!(
            "creating bucket {}: the store answered {}",
            b.bucket,
            response.status()
        ));
    }
    Ok(())
}

fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.write_all(b"\n"))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Replaces table `public.NAME` with the rows of `batches` (its columns
/// typed from Arrow's), loaded by `COPY ... FROM STDIN` in CSV.
pub async fn load_postgres(url: &str, name: &str, batches: &[RecordBatch]) -> Result<(), String> {
    use sqlx::{Connection, Executor};
    let Some(first) = batches.first() else {
        return Err(format!("{name}: no rows"));
    };
    let schema = first.schema();
    let mut columns = Vec::new();
    for f in schema.fields() {
        let t = match f.data_type() {
            datafusion::arrow::datatypes::DataType::Boolean => "boolean",
            datafusion::arrow::datatypes::DataType::Int16 => "smallint",
            datafusion::arrow::datatypes::DataType::Int32 => "integer",
            datafusion::arrow::datatypes::DataType::Int64 => "bigint",
            datafusion::arrow::datatypes::DataType::Float64 => "double precision",
            datafusion::arrow::datatypes::DataType::Date32 => "date",
            datafusion::arrow::datatypes::DataType::Utf8
            | datafusion::arrow::datatypes::DataType::LargeUtf8
            | datafusion::arrow::datatypes::DataType::Utf8View => "text",
            other => {
                return Err(format!(
                    "{name}.{}: no PostgreSQL type for {other}",
                    f.name()
                ))
            }
        };
        columns.push(format!("\"{}\" {t}", f.name().replace('"', "\"\"")));
    }
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| format!("PostgreSQL: {e}"))?;
    conn.execute(format!("DROP TABLE IF EXISTS public.\"{name}\"").as_str())
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    conn.execute(format!("CREATE TABLE public.\"{name}\" ({})", columns.join(", ")).as_str())
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    let mut copy = conn
        .copy_in_raw(&format!("COPY public.\"{name}\" FROM STDIN (FORMAT csv)"))
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    for batch in batches {
        let mut buf = Vec::new();
        let mut w = datafusion::arrow::csv::WriterBuilder::new()
            .with_header(false)
            .with_date_format("%Y-%m-%d".to_string())
            .build(&mut buf);
        w.write(batch).map_err(|e| format!("{name}: {e}"))?;
        drop(w);
        copy.send(buf).await.map_err(|e| format!("{name}: {e}"))?;
    }
    copy.finish().await.map_err(|e| format!("{name}: {e}"))?;
    let _ = conn.close().await;
    Ok(())
}
