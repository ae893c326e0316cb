//! The `airlock` binary. Exit codes: 0 released, 3 refused, 2 bad input
//! (configuration, SQL syntax, unknown member), 1 anything else.

use std::path::PathBuf;
use std::process::ExitCode;

use airlock_cli::bench::{self, BenchOptions};
use airlock_cli::cluster::{exit_code, CliError, Cluster};
use airlock_cli::demo::{self, DemoOptions};
use airlock_cli::output::{render, Format};
use clap::{Parser, Subcommand};

// Large Arrow buffers are allocated and freed per batch; mimalloc reuses them
// where the system allocator maps and unmaps fresh pages each time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "airlock",
    version,
    about = "Airlock: an open-source data clean room"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write sample data for two members, run the canonical analyses and show refusals.
    Demo {
        /// Directory for the data and the collaboration file.
        #[arg(long, default_value = "airlock-demo")]
        dir: PathBuf,
        /// Audience rows.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
    },
    /// Validate a query without running it: print the plan per member, or the refusal.
    Check {
        /// Collaboration file.
        #[arg(long)]
        collab: PathBuf,
        /// Member to check as (default: the first member with the query ability).
        #[arg(long = "as")]
        member: Option<String>,
        /// The SQL.
        sql: String,
    },
    /// Run a query as a member and print the released result.
    Query {
        /// Collaboration file.
        #[arg(long)]
        collab: PathBuf,
        /// Member to run as (needs the query ability).
        #[arg(long = "as")]
        member: String,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// The SQL.
        sql: String,
    },
    /// Time Airlock against plain DataFusion on the same generated files.
    Bench {
        /// Directory for the data.
        #[arg(long, default_value = "airlock-bench")]
        dir: PathBuf,
        /// Audience rows (purchases are about a fifth of that).
        #[arg(long, default_value_t = 10_000_000)]
        rows: usize,
        /// Timed runs per side.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
}

async fn run(cli: Cli) -> Result<(), (CliError, bool)> {
    match cli.command {
        Command::Demo { dir, rows } => demo::run(&DemoOptions { dir, rows }, None)
            .await
            .map_err(|e| (e, false)),
        Command::Bench { dir, rows, runs } => bench::run(&BenchOptions {
            dir,
            rows,
            runs: runs.max(1),
        })
        .await
        .map_err(|e| (e, false)),
        Command::Check {
            collab,
            member,
            sql,
        } => {
            let cluster = Cluster::open(&collab, None).await.map_err(|e| (e, false))?;
            let member = member
                .or_else(|| cluster.default_querier())
                .ok_or_else(|| {
                    (
                        CliError::BadInput("no member has the query ability".into()),
                        false,
                    )
                })?;
            let plan = cluster.check(&member, &sql).await.map_err(|e| (e, false))?;
            println!("accepted for '{member}'. Plan:");
            print!("{plan}");
            Ok(())
        }
        Command::Query {
            collab,
            member,
            format,
            sql,
        } => {
            let json = format == Format::Json;
            let cluster = Cluster::open(&collab, None).await.map_err(|e| (e, json))?;
            let released = cluster.query(&member, &sql).await.map_err(|e| (e, json))?;
            let text = render(&released, format).map_err(|e| (CliError::Failed(e), json))?;
            println!("{text}");
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err((e, json)) => {
            match &e {
                CliError::Refused { .. } => eprintln!("{e}"),
                _ => eprintln!("error: {e}"),
            }
            if let (true, CliError::Refused { refusal, node }) = (json, &e) {
                let body = serde_json::json!({ "refused": refusal, "node": node });
                println!("{body}");
            }
            ExitCode::from(u8::try_from(exit_code(&e)).unwrap_or(1))
        }
    }
}
