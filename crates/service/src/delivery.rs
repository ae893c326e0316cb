//! Writing released results where a member wants them: Parquet or CSV
//! files under its node, objects in its S3-compatible store, a Delta Lake
//! table (local or in a bucket), or a table of its own PostgreSQL. Only the node
//! of the receiving member writes; the hub sends the result once and
//! deletes its own copy when the node confirms.

use std::path::Path;
use std::sync::Arc;

use airlock_node::catalog::DatasetFormat;
use airlock_node::sources::{append_delta, DeltaPlace, S3Settings};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use sha2::{Digest, Sha256};

use crate::config::{Destination, ResultFormat};
use crate::proto::Delivered;

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Whether `id` can name a file: 1 to 64 lowercase hex characters.
pub fn is_query_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Writes `bytes` as the file `name` in `dest`'s directory `dir`, once, and
/// returns the file's name: the directory stays on the node (what a
/// delivery returns is recorded in the audit chain every member reads), and
/// so does the detail of a failure.
fn write_file(dest: &str, dir: &Path, name: &str, bytes: &[u8]) -> Result<String, String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        eprintln!(
            "node: destination '{dest}': {what} in {}: {e}",
            dir.display()
        );
        format!("destination '{dest}': {what}")
    };
    std::fs::create_dir_all(dir).map_err(|e| fail("its directory cannot be made", &e))?;
    let path = dir.join(name);
    if path.exists() {
        return Err(format!(
            "destination '{dest}': {name} exists already; a result is delivered once"
        ));
    }
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| fail("the file cannot be written", &e))?;
    Ok(name.to_string())
}

fn parquet_bytes(schema: &SchemaRef, batches: &[RecordBatch]) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    let mut w = datafusion::parquet::arrow::ArrowWriter::try_new(&mut buf, schema.clone(), None)
        .map_err(|e| format!("parquet: {e}"))?;
    for b in batches {
        w.write(b).map_err(|e| format!("parquet: {e}"))?;
    }
    w.close().map_err(|e| format!("parquet: {e}"))?;
    Ok(buf)
}

fn csv_bytes(batches: &[RecordBatch]) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    {
        let mut w = datafusion::arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut buf);
        for b in batches {
            w.write(b).map_err(|e| format!("csv: {e}"))?;
        }
    }
    Ok(buf)
}

/// A destination's failure as it may leave the node (it is recorded in
/// the audit chain every member reads): the kind of problem, never the
/// bucket, prefix, path or endpoint; the detail goes to the node's log.
fn public(name: &str, e: airlock_node::sources::OpenError) -> String {
    eprintln!("node: destination '{name}': {}: {}", e.public, e.detail);
    format!("destination '{name}': {}", e.public)
}

/// The result's rows with the query's id in a first `airlock_query_id`
/// column (at least one batch, so an empty result still commits a version).
fn with_query_id(
    query: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<RecordBatch>, String> {
    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{Field, Schema};
    let mut fields = vec![Arc::new(Field::new(
        "airlock_query_id",
        DataType::Utf8,
        false,
    ))];
    fields.extend(schema.fields().iter().cloned());
    let with = Arc::new(Schema::new(fields));
    let empty = [RecordBatch::new_empty(schema.clone())];
    let batches = if batches.is_empty() {
        &empty[..]
    } else {
        batches
    };
    batches
        .iter()
        .map(|b| {
            let mut cols: Vec<Arc<dyn Array>> =
                vec![Arc::new(StringArray::from(vec![query; b.num_rows()]))];
            cols.extend(b.columns().iter().cloned());
            RecordBatch::try_new(with.clone(), cols).map_err(|e| format!("delta: {e}"))
        })
        .collect()
}

/// Writes `batches` (the result of `query` in collaboration `collab`) to
/// `dest`. `result_sha256` is the hash of the bytes received.
pub async fn write(
    name: &str,
    dest: &Destination,
    collab: &str,
    query: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    result_sha256: String,
) -> Result<Delivered, String> {
    let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
    let file = format!("{collab}-{query}");
    let (kind, location, file_sha256) = match dest {
        Destination::Parquet { path } => {
            let buf = parquet_bytes(schema, batches)?;
            let at = write_file(name, path, &format!("{file}.parquet"), &buf)?;
            ("parquet", at, Some(sha256_hex(&buf)))
        }
        Destination::Csv { path } => {
            let buf = csv_bytes(batches)?;
            let at = write_file(name, path, &format!("{file}.csv"), &buf)?;
            ("csv", at, Some(sha256_hex(&buf)))
        }
        Destination::Postgres { url, table } => {
            write_postgres(url, table, query, schema, batches).await?;
            ("postgres", format!("table {table}"), None)
        }
        Destination::S3 {
            bucket,
            prefix,
            format,
            endpoint,
            region,
            allow_http,
            credentials,
        } => {
            let (buf, ext) = match format {
                ResultFormat::Parquet => (parquet_bytes(schema, batches)?, "parquet"),
                ResultFormat::Csv => (csv_bytes(batches)?, "csv"),
            };
            let settings = S3Settings {
                bucket,
                prefix,
                format: DatasetFormat::Parquet,
                endpoint: endpoint.as_deref(),
                region: region.as_deref(),
                allow_http: *allow_http,
                credentials,
            };
            let object = format!("{file}.{ext}");
            let stored =
                airlock_node::sources::put_once(&settings, Path::new("/"), &object, buf.clone())
                    .await
                    .map_err(|e| public(name, e))?;
            if stored != sha256_hex(&buf) {
                return Err(format!(
                    "destination '{name}': the store holds other bytes than were written"
                ));
            }
            // The object's name within the destination: the bucket, prefix
            // and endpoint stay on the node.
            ("s3", object, Some(stored))
        }
        Destination::Delta {
            path,
            bucket,
            prefix,
            endpoint,
            region,
            allow_http,
            credentials,
        } => {
            let place = match (path, bucket) {
                (Some(dir), None) => DeltaPlace::Dir(dir),
                (None, Some(bucket)) => DeltaPlace::Bucket(S3Settings {
                    bucket,
                    prefix,
                    format: DatasetFormat::Parquet,
                    endpoint: endpoint.as_deref(),
                    region: region.as_deref(),
                    allow_http: *allow_http,
                    credentials,
                }),
                _ => {
                    return Err(format!(
                        "destination '{name}': it names neither or both of path and bucket"
                    ))
                }
            };
            let rows = with_query_id(query, schema, batches)?;
            let version = append_delta(place, rows)
                .await
                .map_err(|e| public(name, e))?;
            ("delta", format!("version {version}"), None)
        }
    };
    Ok(Delivered {
        destination: name.to_string(),
        kind: kind.to_string(),
        location,
        rows,
        result_sha256,
        file_sha256,
    })
}

/// A PostgreSQL column type for an Arrow type, and how a bound text value
/// is cast to it.
fn pg_type(t: &DataType) -> Option<&'static str> {
    Some(match t {
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => "BIGINT",
        DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => "BIGINT",
        DataType::UInt64 | DataType::Decimal128(..) | DataType::Decimal256(..) => "NUMERIC",
        DataType::Float32 | DataType::Float64 => "DOUBLE PRECISION",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "TEXT",
        DataType::Boolean => "BOOLEAN",
        DataType::Date32 | DataType::Date64 => "DATE",
        _ => return None,
    })
}

/// A batch's values as text (NULL as `None`), row by row.
fn text_rows(b: &RecordBatch) -> Result<Vec<Vec<Option<String>>>, String> {
    let opts = FormatOptions::default();
    let formatters = b
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("postgres: {e}"))?;
    Ok((0..b.num_rows())
        .map(|row| {
            b.columns()
                .iter()
                .zip(&formatters)
                .map(|(c, f)| {
                    if c.is_null(row) {
                        None
                    } else if let Some(bools) = c.as_boolean_opt() {
                        Some(bools.value(row).to_string())
                    } else {
                        Some(f.value(row).to_string())
                    }
                })
                .collect()
        })
        .collect())
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

async fn write_postgres(
    url: &str,
    table: &str,
    query: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<(), String> {
    use sqlx::Connection;
    let mut cols = Vec::new();
    for f in schema.fields() {
        let t = pg_type(f.data_type()).ok_or_else(|| {
            format!(
                "column '{}': type {} cannot be written to PostgreSQL",
                f.name(),
                f.data_type()
            )
        })?;
        cols.push((f.name().clone(), t));
    }
    // Never quote a URL: it may hold a password.
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .map_err(|_| "cannot connect to the destination database".to_string())?;
    let create = format!(
        "CREATE TABLE IF NOT EXISTS {} (airlock_query_id TEXT NOT NULL, {})",
        quote_ident(table),
        cols.iter()
            .map(|(n, t)| format!("{} {t}", quote_ident(n)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut tx = conn.begin().await.map_err(|e| format!("postgres: {e}"))?;
    sqlx::query(&create)
        .execute(&mut *tx)
        .await
        .map_err(|e| format!("postgres: cannot create table {table}: {e}"))?;
    let insert = format!(
        "INSERT INTO {} (airlock_query_id, {}) VALUES ($1, {})",
        quote_ident(table),
        cols.iter()
            .map(|(n, _)| quote_ident(n))
            .collect::<Vec<_>>()
            .join(", "),
        cols.iter()
            .enumerate()
            .map(|(i, (_, t))| format!("CAST(${} AS {t})", i + 2))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for b in batches {
        let rows = text_rows(b)?;
        for values in rows {
            let mut q = sqlx::query(&insert).bind(query);
            // Values are bound as text and cast by the database: never
            // spliced into the statement.
            for v in values {
                q = q.bind(v);
            }
            q.execute(&mut *tx)
                .await
                // The database's message could quote a value: not sent on.
                .map_err(|_| format!("postgres: cannot insert a row into {table} (do its columns match the result's?)"))?;
        }
    }
    tx.commit().await.map_err(|e| format!("postgres: {e}"))?;
    Ok(())
}
