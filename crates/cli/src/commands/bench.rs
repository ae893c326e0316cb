//! `airlock` bench commands.

use airlock_cli::bench::{self, BenchOptions};
use std::path::PathBuf;

use super::common::*;

pub(crate) async fn psi(asker: PathBuf, responder: PathBuf, sums: bool, groups: usize) -> Out {
    let plain = |e| (e, false);
    let out = airlock_cli::psibench::run(&asker, &responder, sums, groups).map_err(plain)?;
    println!("{out}");
    Ok(())
}

pub(crate) async fn run_bench(dir: PathBuf, rows: usize, runs: usize, distributed: bool) -> Out {
    let plain = |e| (e, false);
    let bin = if distributed {
        Some(this_binary().map_err(plain)?)
    } else {
        None
    };
    bench::run(&BenchOptions {
        dir,
        rows,
        runs: runs.max(1),
        distributed: bin,
    })
    .await
    .map_err(plain)
}

pub(crate) async fn run_bench_source(
    dir: PathBuf,
    rows: usize,
    runs: usize,
    source: airlock_cli::place::DemoSource,
) -> Out {
    airlock_cli::bench_source::run(&dir, rows, runs.max(1), &source)
        .await
        .map_err(|e| (e, false))
}
