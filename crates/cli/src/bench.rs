//! `airlock bench`: Airlock against plain DataFusion on the same files, in
//! the same process, reporting each time and the ratio.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::{DataType, Int64Type};
use datafusion::prelude::{ParquetReadOptions, SessionContext};

use crate::cluster::{CliError, Cluster};
use crate::data;

/// (a) a single-member aggregate, run entirely on the publisher's node.
pub const SINGLE: &str =
    "SELECT segment, region, COUNT(DISTINCT email) AS people, COUNT(*) AS rows_n \
     FROM audience GROUP BY segment, region";
/// (b) the two-member overlap by segment x category.
pub const OVERLAP: &str = "SELECT a.segment, p.category, COUNT(DISTINCT a.email) AS people, \
     SUM(p.amount_cents) AS revenue_cents \
     FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment, p.category";

/// Options of the benchmark.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Directory for the data.
    pub dir: PathBuf,
    /// Audience rows.
    pub rows: usize,
    /// Timed runs per side (the median is reported).
    pub runs: usize,
    /// Also time the overlap through `airlock up` (hub and nodes as
    /// processes, started with this binary) against the in-process engine.
    pub distributed: Option<PathBuf>,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Runs the benchmark and prints the results.
pub async fn run(opts: &BenchOptions) -> Result<(), CliError> {
    let t = Instant::now();
    println!(
        "generating {} audience rows into {} ...",
        opts.rows,
        opts.dir.display()
    );
    let w = data::write_demo(&opts.dir, opts.rows, false).map_err(CliError::Failed)?;
    println!(
        "  audience {} rows, purchases {} rows ({:.1}s)",
        w.audience,
        w.purchases,
        t.elapsed().as_secs_f64()
    );
    let cluster = Cluster::open(&opts.dir.join("collaboration.toml"), None).await?;
    let plain = SessionContext::new();
    for (name, file) in [
        ("audience_raw", "audience.parquet"),
        ("purchases", "purchases.parquet"),
    ] {
        let path = opts.dir.join(file);
        plain
            .register_parquet(
                name,
                path.to_string_lossy().as_ref(),
                ParquetReadOptions::default(),
            )
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
    }
    // The same consent as the collaboration declares, so both sides read
    // the same people.
    plain
        .sql("CREATE VIEW audience AS SELECT * FROM audience_raw WHERE consent")
        .await
        .map_err(|e| CliError::Failed(e.to_string()))?;
    println!();
    println!(
        "{:<44} {:>12} {:>12} {:>8} {:>8}",
        "query", "airlock", "datafusion", "ratio", "target"
    );
    for (label, sql, target) in [
        ("(a) single-member aggregate", SINGLE, 1.1),
        ("(b) two-member overlap by segment x category", OVERLAP, 2.0),
    ] {
        let mut ours = Vec::new();
        let mut theirs = Vec::new();
        let mut rows = (0, 0);
        // One warm-up of each, then alternate so both see the same cache.
        for i in 0..=opts.runs {
            let s = Instant::now();
            let released = cluster.query("advertiser", sql).await?;
            let a = s.elapsed();
            let s = Instant::now();
            let df = plain
                .sql(sql)
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            let batches = df
                .collect()
                .await
                .map_err(|e| CliError::Failed(e.to_string()))?;
            let b = s.elapsed();
            if i > 0 {
                ours.push(a);
                theirs.push(b);
            }
            rows = (
                released.num_rows(),
                batches.iter().map(|b| b.num_rows()).sum::<usize>(),
            );
        }
        let (a, b) = (median(ours), median(theirs));
        let ratio = a.as_secs_f64() / b.as_secs_f64();
        println!(
            "{:<44} {:>10.3}s {:>10.3}s {:>7.2}x {:>7.1}x",
            label,
            a.as_secs_f64(),
            b.as_secs_f64(),
            ratio,
            target
        );
        println!(
            "    rows released by airlock: {}, rows from plain datafusion: {}",
            rows.0, rows.1
        );
    }
    dp_overlap(opts, &cluster).await?;
    if let Some(bin) = &opts.distributed {
        distributed(opts, bin, &cluster).await?;
    }
    println!();
    println!(
        "(median of {} runs after one warm-up; same process, same files)",
        opts.runs
    );
    Ok(())
}

/// People per segment in a released overlap-by-segment result.
fn per_segment(r: &airlock_hub::Released) -> Result<HashMap<String, i64>, CliError> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    let mut out = HashMap::new();
    for b in &r.batches {
        let seg = ArrayFormatter::try_new(b.column(0).as_ref(), &FormatOptions::default())
            .map_err(|e| CliError::Failed(e.to_string()))?;
        let n = datafusion::arrow::compute::cast(b.column(1), &DataType::Int64)
            .map_err(|e| CliError::Failed(e.to_string()))?;
        let n = n.as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            if n.is_valid(i) {
                out.insert(seg.value(i).to_string(), n.value(i));
            }
        }
    }
    Ok(out)
}

/// (d) the demo's overlap by segment under differential privacy (epsilon 1
/// per query) against the same query under thresholds only, same data,
/// same run; and the DP release's median relative error against the exact
/// counts the threshold release shows.
async fn dp_overlap(opts: &BenchOptions, exact_cluster: &Cluster) -> Result<(), CliError> {
    let sql = crate::demo::ANALYSES[0].1;
    // A budget large enough for every timed run.
    let text = data::collaboration_toml_dp().replace("epsilon = 3.0", "epsilon = 1000.0");
    let file = opts.dir.join("collaboration-dp.toml");
    for suffix in ["", "-wal", "-shm"] {
        let f = opts.dir.join(format!(
            "{}{suffix}",
            airlock_service::ledger::EMBEDDED_LEDGER
        ));
        if f.exists() {
            std::fs::remove_file(&f)
                .map_err(|e| CliError::Failed(format!("{}: {e}", f.display())))?;
        }
    }
    std::fs::write(&file, text)
        .map_err(|e| CliError::Failed(format!("{}: {e}", file.display())))?;
    let dp_cluster = Cluster::open(&file, None).await?;
    let (mut dp_times, mut k_times, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..=opts.runs {
        let s = Instant::now();
        let noisy = dp_cluster.query("advertiser", sql).await?;
        let a = s.elapsed();
        let s = Instant::now();
        let exact = exact_cluster.query("advertiser", sql).await?;
        let b = s.elapsed();
        if i > 0 {
            dp_times.push(a);
            k_times.push(b);
        }
        let (noisy, exact) = (per_segment(&noisy)?, per_segment(&exact)?);
        for (segment, truth) in &exact {
            if let Some(v) = noisy.get(segment) {
                errors.push((v - truth).abs() as f64 / (*truth).max(1) as f64);
            }
        }
    }
    let (a, b) = (median(dp_times), median(k_times));
    println!(
        "{:<44} {:>10.3}s {:>10.3}s {:>7.2}x {:>7.1}x",
        "(d) overlap by segment: DP vs thresholds only",
        a.as_secs_f64(),
        b.as_secs_f64(),
        a.as_secs_f64() / b.as_secs_f64(),
        1.1
    );
    errors.sort_by(f64::total_cmp);
    let median_error = errors.get(errors.len() / 2).copied().unwrap_or(f64::NAN);
    println!(
        "    median relative error of the DP counts at epsilon 1: {:.3}% ({} segment counts)",
        median_error * 100.0,
        errors.len()
    );
    Ok(())
}

/// (c) the overlap through a hub and nodes as separate processes (Arrow
/// Flight over mutual TLS, REST, the store) against the in-process engine.
async fn distributed(
    opts: &BenchOptions,
    bin: &std::path::Path,
    local: &Cluster,
) -> Result<(), CliError> {
    println!();
    println!("starting a hub and nodes as separate processes ...");
    let running = crate::up::start(&crate::up::UpOptions {
        dir: opts.dir.clone(),
        rows: opts.rows,
        wire_tap: None,
        bin: bin.to_path_buf(),
        results_postgres: None,
        results_s3: None,
        hub_limits: Default::default(),
        node_limits: Default::default(),
    })
    .await?;
    let client = running.client("advertiser")?;
    let collab = running.info.collaboration.clone();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..=opts.runs {
        let s = Instant::now();
        let remote = crate::remote::query(&client, &collab, OVERLAP).await?;
        let a = s.elapsed();
        let s = Instant::now();
        let here = local.query("advertiser", OVERLAP).await?;
        let b = s.elapsed();
        if remote.num_rows() != here.num_rows() {
            return Err(CliError::Failed(format!(
                "services released {} rows, the in-process engine {}",
                remote.num_rows(),
                here.num_rows()
            )));
        }
        if i > 0 {
            ours.push(a);
            theirs.push(b);
        }
    }
    let (a, b) = (median(ours), median(theirs));
    println!(
        "{:<44} {:>12} {:>12} {:>8} {:>8}",
        "query", "services", "in-process", "ratio", "target"
    );
    println!(
        "{:<44} {:>10.3}s {:>10.3}s {:>7.2}x {:>7.1}x",
        "(c) two-member overlap through airlock up",
        a.as_secs_f64(),
        b.as_secs_f64(),
        a.as_secs_f64() / b.as_secs_f64(),
        1.3
    );
    drop(running);
    Ok(())
}
