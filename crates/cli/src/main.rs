//! The `airlock` binary. Exit codes: 0 released, 3 refused, 2 bad input
//! (configuration, SQL syntax, unknown member), 1 anything else.

use std::process::ExitCode;

use airlock_cli::cluster::{exit_code, CliError};
use clap::Parser;

// Large Arrow buffers are allocated and freed per batch; mimalloc reuses them
// where the system allocator maps and unmaps fresh pages each time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod args;
mod commands;

use args::Cli;

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
    match runtime.block_on(commands::run(cli)) {
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
