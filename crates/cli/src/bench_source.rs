//! `airlock bench --source s3|delta|postgres`: Airlock over the demo's data
//! in that source against Airlock over the same data as local Parquet, and
//! against plain DataFusion over the same source, in the same run.
//!
//! - **s3**: Airlock over S3 against Airlock over the same data as local
//!   files (target: at most 1.5x), and plain DataFusion reading the same
//!   objects through the same `object_store` client;
//! - **delta**: Airlock over the Delta tables against Airlock over the
//!   same Parquet files registered as plain files (target: at most 1.1x),
//!   and plain DataFusion reading those files directly;
//! - **postgres**: there is no plain-DataFusion reader of PostgreSQL to
//!   compare with, so the run reports the rows PostgreSQL sent with the
//!   consent filter and the analyses' filters pushed into its SQL, and
//!   with nothing pushed.
//!
//! Every pair of sides must release the same rows, or the run fails.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::bench::{OVERLAP, SINGLE};
use crate::cluster::{CliError, Cluster};
use crate::data;
use crate::place::{self, DemoSource};
use airlock_node::catalog::DatasetFormat;

/// The demo's analysis with filters on both sides, for pushdown.
pub const FILTERED: &str = "SELECT a.age_band, COUNT(DISTINCT a.email) AS people \
     FROM audience a JOIN purchases p ON a.email = p.email \
     WHERE a.age_band IN ('25-34', '35-44') AND p.day >= DATE '2025-01-01' \
     GROUP BY a.age_band";

fn failed(e: impl std::fmt::Display) -> CliError {
    CliError::Failed(e.to_string())
}

/// Rows as sorted text, floats to six places (summation order differs
/// between engines).
fn sorted_rows(batches: &[datafusion::arrow::record_batch::RecordBatch]) -> Vec<String> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{DataType, Float64Type};
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let mut out = Vec::new();
    for b in batches {
        let cells: Vec<_> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &FormatOptions::default()).ok())
            .collect();
        for i in 0..b.num_rows() {
            let row: Vec<String> = b
                .columns()
                .iter()
                .zip(&cells)
                .map(|(c, f)| match (c.data_type(), f) {
                    _ if c.is_null(i) => "NULL".to_string(),
                    (DataType::Float64, _) => {
                        format!("{:.6}", c.as_primitive::<Float64Type>().value(i))
                    }
                    (_, Some(f)) => f.value(i).to_string(),
                    (_, None) => "?".to_string(),
                })
                .collect();
            out.push(row.join(" | "));
        }
    }
    out.sort();
    out
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One side of a comparison: something that runs a query and says how
/// many rows it gave.
enum Side<'a> {
    Airlock(&'a Cluster),
    Plain(&'a SessionContext),
}

impl Side<'_> {
    async fn run(&self, sql: &str) -> Result<Vec<String>, CliError> {
        let batches = match self {
            Side::Airlock(c) => c.query("advertiser", sql).await?.batches,
            Side::Plain(ctx) => ctx
                .sql(sql)
                .await
                .map_err(failed)?
                .collect()
                .await
                .map_err(failed)?,
        };
        Ok(sorted_rows(&batches))
    }
}

/// Medians of `runs` alternating timed runs of `a` and `b` after a warm-up
/// of each; fails when they release different rows (`same`) or when either
/// releases nothing.
async fn compare(
    a: &Side<'_>,
    b: &Side<'_>,
    sql: &str,
    runs: usize,
    same: bool,
) -> Result<(Duration, Duration), CliError> {
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for i in 0..=runs {
        let s = Instant::now();
        let ra = a.run(sql).await?;
        let da = s.elapsed();
        let s = Instant::now();
        let rb = b.run(sql).await?;
        let db = s.elapsed();
        if ra.is_empty() || rb.is_empty() {
            return Err(failed("a side released no rows"));
        }
        if same && ra != rb {
            return Err(failed(format!(
                "the two sides released different rows ({} and {})",
                ra.len(),
                rb.len()
            )));
        }
        if i > 0 {
            ta.push(da);
            tb.push(db);
        }
    }
    Ok((median(ta), median(tb)))
}

fn line(label: &str, a: Duration, b: Duration, target: Option<f64>) {
    println!(
        "{:<52} {:>10.3}s {:>10.3}s {:>7.2}x {:>8}",
        label,
        a.as_secs_f64(),
        b.as_secs_f64(),
        a.as_secs_f64() / b.as_secs_f64(),
        target
            .map(|t| format!("{t:.1}x"))
            .unwrap_or_else(|| "-".into())
    );
}

/// One table of `a` against `b`, a line per query (its label, then
/// `suffix`), each ratio against `target`; `same`: as for [`compare`].
async fn table(
    a: (&str, &Side<'_>),
    b: (&str, &Side<'_>),
    queries: &[(&str, &str)],
    runs: usize,
    same: bool,
    suffix: &str,
    target: Option<f64>,
) -> Result<(), CliError> {
    header(a.0, b.0);
    for (label, sql) in queries {
        let (ta, tb) = compare(a.1, b.1, sql, runs, same).await?;
        line(&format!("{label}{suffix}"), ta, tb, target);
    }
    Ok(())
}

fn header(a: &str, b: &str) {
    println!();
    println!(
        "{:<52} {:>11} {:>11} {:>8} {:>8}",
        "query", a, b, "ratio", "target"
    );
}

/// Copies the demo's files in `from` to a fresh `to`.
fn copy_demo(from: &Path, to: &Path) -> Result<(), CliError> {
    if to.exists() {
        std::fs::remove_dir_all(to).map_err(|e| failed(format!("{}: {e}", to.display())))?;
    }
    std::fs::create_dir_all(to).map_err(|e| failed(format!("{}: {e}", to.display())))?;
    for entry in std::fs::read_dir(from).map_err(failed)? {
        let entry = entry.map_err(failed)?;
        if entry.path().is_file() && !entry.file_name().to_string_lossy().contains("ledger") {
            std::fs::copy(entry.path(), to.join(entry.file_name())).map_err(failed)?;
        }
    }
    Ok(())
}

/// Plain DataFusion with the demo's two tables registered from `paths`
/// (URLs or local paths of Parquet), the audience under the same consent
/// filter the collaboration declares.
async fn plain_over(ctx: SessionContext, paths: [String; 2]) -> Result<SessionContext, CliError> {
    let [audience, purchases] = paths;
    for (name, path) in [("audience_raw", audience), ("purchases", purchases)] {
        ctx.register_parquet(name, &path, ParquetReadOptions::default())
            .await
            .map_err(failed)?;
    }
    ctx.sql("CREATE VIEW audience AS SELECT * FROM audience_raw WHERE consent")
        .await
        .map_err(failed)?;
    Ok(ctx)
}

/// What `c` releases for `sql`, and how many rows PostgreSQL sent for it.
async fn rows_read(c: &Cluster, sql: &str) -> Result<(Vec<String>, u64), CliError> {
    let counter = &airlock_node::sources::POSTGRES_ROWS_READ;
    let before = counter.load(Ordering::Relaxed);
    let released = c.query("advertiser", sql).await?;
    let n = counter.load(Ordering::Relaxed) - before;
    Ok((sorted_rows(&released.batches), n))
}

/// Runs the source benchmark: `rows` audience rows, the medians of `runs`.
pub async fn run(
    dir: &Path,
    rows: usize,
    runs: usize,
    source: &DemoSource,
) -> Result<(), CliError> {
    if *source == DemoSource::Files {
        return Err(CliError::BadInput(
            "bench --source takes s3, delta or postgres (files is the baseline of every run)"
                .into(),
        ));
    }
    let t = Instant::now();
    println!("generating {rows} audience rows into {} ...", dir.display());
    let w = data::write_demo(dir, rows, false).map_err(CliError::Failed)?;
    println!(
        "  audience {} rows, purchases {} rows ({:.1}s)",
        w.audience,
        w.purchases,
        t.elapsed().as_secs_f64()
    );
    let local = Cluster::open(&dir.join("collaboration.toml"), None).await?;
    let there: PathBuf = {
        let mut s = dir.as_os_str().to_owned();
        s.push(format!("-{}", source.kind()));
        PathBuf::from(s)
    };
    copy_demo(dir, &there)?;
    // The benchmark's own prefix in a bucket, apart from the demo's.
    let source = &match source.clone() {
        DemoSource::S3(b) => DemoSource::S3(place::Bucket {
            prefix: "airlock-bench".into(),
            ..b
        }),
        DemoSource::Delta(Some(b)) => DemoSource::Delta(Some(place::Bucket {
            prefix: "airlock-bench".into(),
            ..b
        })),
        other => other,
    };
    let t = Instant::now();
    let placed = place::place_demo(&there, source)
        .await
        .map_err(CliError::Failed)?;
    println!(
        "  put in place ({} source) in {:.1}s: {}",
        source.kind(),
        t.elapsed().as_secs_f64(),
        placed.join(", ")
    );
    let remote = Cluster::open(&there.join("collaboration.toml"), None).await?;
    let queries = [
        ("(a) single-member aggregate", SINGLE),
        ("(b) two-member overlap by segment x category", OVERLAP),
    ];

    let target = match source {
        DemoSource::S3(_) => Some(1.5),
        _ => None,
    };
    let remote_side = Side::Airlock(&remote);
    table(
        (source.kind(), &remote_side),
        ("files", &Side::Airlock(&local)),
        &queries,
        runs,
        true,
        ", airlock",
        target,
    )
    .await?;

    match source {
        DemoSource::S3(b) => {
            let ctx = SessionContext::new();
            let url = url::Url::parse(&format!("s3://{}", b.bucket)).map_err(failed)?;
            ctx.register_object_store(
                &url,
                std::sync::Arc::new(place::s3_store(b).map_err(CliError::Failed)?),
            );
            let ctx = plain_over(
                ctx,
                ["audience", "purchases"].map(|t| format!("s3://{}/{}/{t}/", b.bucket, b.prefix)),
            )
            .await?;
            table(
                ("airlock", &remote_side),
                ("datafusion", &Side::Plain(&ctx)),
                &queries,
                runs,
                false,
                ", both over s3",
                None,
            )
            .await?;
        }
        DemoSource::Delta(None) => {
            // Airlock over the Delta tables against Airlock over the same
            // Parquet files registered as plain files (the catalog read at
            // open, then put back): what the Delta log and provider cost.
            let catalog_file = there.join(airlock_node::catalog::CATALOG_FILE);
            let delta_catalog = std::fs::read(&catalog_file).map_err(failed)?;
            airlock_node::catalog::CatalogFile::files(&[
                (
                    "publisher_audience",
                    "audience_delta/",
                    DatasetFormat::Parquet,
                ),
                (
                    "advertiser_purchases",
                    "purchases_delta/",
                    DatasetFormat::Parquet,
                ),
            ])
            .write_to(&there)
            .map_err(CliError::Failed)?;
            let direct = Cluster::open(&there.join("collaboration.toml"), None).await;
            std::fs::write(&catalog_file, delta_catalog).map_err(failed)?;
            let direct = direct?;
            table(
                ("delta", &remote_side),
                ("its files", &Side::Airlock(&direct)),
                &queries,
                runs,
                true,
                ", airlock",
                Some(1.1),
            )
            .await?;
            // The Delta table's data files, as one Parquet listing each
            // (the log's own files are not Parquet until a checkpoint; the
            // tables were just written, in one version).
            let ctx = plain_over(
                SessionContext::new(),
                ["audience", "purchases"]
                    .map(|t| format!("{}/", there.join(format!("{t}_delta")).to_string_lossy())),
            )
            .await?;
            table(
                ("airlock", &remote_side),
                ("datafusion", &Side::Plain(&ctx)),
                &queries,
                runs,
                false,
                ", over delta vs its files",
                None,
            )
            .await?;
        }
        DemoSource::Delta(Some(_)) => {
            println!(
                "  (plain DataFusion over the same files is compared for a local Delta table only)"
            );
        }
        DemoSource::Postgres(_) => {
            let unpushed =
                Cluster::open_pushdown(&there.join("collaboration.toml"), None, false).await?;
            println!();
            println!(
                "{:<52} {:>11} {:>11} {:>8}",
                "query (rows PostgreSQL sent)", "pushed", "not pushed", "share"
            );
            let with_filters = [
                queries[0],
                queries[1],
                ("(e) overlap with the demo's filters", FILTERED),
            ];
            for (label, sql) in with_filters {
                let (ra, pushed) = rows_read(&remote, sql).await?;
                let (rb, all) = rows_read(&unpushed, sql).await?;
                if ra != rb {
                    return Err(failed("pushed and unpushed released different rows"));
                }
                println!(
                    "{:<52} {:>11} {:>11} {:>7.1}%",
                    label,
                    pushed,
                    all,
                    100.0 * pushed as f64 / all.max(1) as f64
                );
            }
            table(
                ("pushed", &remote_side),
                ("not pushed", &Side::Airlock(&unpushed)),
                &with_filters,
                runs,
                true,
                "",
                None,
            )
            .await?;
        }
        DemoSource::Files => {}
    }
    println!();
    println!("(median of {runs} runs after one warm-up of each side, alternating; same process)");
    Ok(())
}
