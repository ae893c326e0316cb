//! What each `airlock` command does; `main.rs` only parses.

mod audit;
mod bench;
mod collab;
mod common;
mod demo;
mod interop;
mod keys;
mod query;
mod serve;
mod template;

use crate::args::*;
use common::*;

/// Runs a parsed command.
pub(crate) async fn run(cli: Cli) -> Out {
    let plain = |e| (e, false);
    match cli.command {
        Command::Demo {
            dir,
            rows,
            distributed,
            dp,
            crypto,
            source,
            endpoint,
            bucket,
            url,
        } => {
            let source = airlock_cli::place::DemoSource::parse(
                &source,
                endpoint.as_deref(),
                &bucket,
                url.as_deref(),
            )
            .map_err(|e| (bad(e), false))?;
            demo::run_demo(dir, rows, distributed, dp, crypto, source).await
        }
        Command::Up {
            dir,
            rows,
            wire_tap,
        } => demo::up(dir, rows, wire_tap).await,
        Command::Node {
            command:
                NodeCommand::Serve {
                    config,
                    exit_with_stdin,
                },
        } => serve::node(config, exit_with_stdin).await,
        Command::Hub { command } => serve::hub(command).await,
        Command::Keys {
            command:
                KeysCommand::Init {
                    dir,
                    name,
                    ca_dir,
                    san,
                },
        } => keys::keys_init(&dir, &name, ca_dir.as_deref(), &san).map_err(plain),
        Command::Keys {
            command: KeysCommand::Member { out },
        } => keys::member(out).await,
        Command::Collab {
            hub,
            command:
                CollabCommand::Import {
                    file,
                    trust,
                    toml_out,
                    create,
                },
        } => collab::import(hub, file, trust, toml_out, create).await,
        Command::Collab { hub, command } => collab::run(hub, command).await,
        Command::Audit { command } => audit::run(command).await,
        Command::BenchPsi {
            asker,
            responder,
            sums,
            groups,
        } => bench::psi(asker, responder, sums, groups as usize).await,
        Command::Bench {
            dir,
            rows,
            runs,
            distributed,
            source: None,
            ..
        } => bench::run_bench(dir, rows, runs, distributed).await,
        Command::Bench {
            dir,
            rows,
            runs,
            source: Some(source),
            endpoint,
            bucket,
            url,
            ..
        } => {
            let source = airlock_cli::place::DemoSource::parse(
                &source,
                endpoint.as_deref(),
                &bucket,
                url.as_deref(),
            )
            .map_err(|e| (bad(e), false))?;
            bench::run_bench_source(dir, rows, runs, source).await
        }
        Command::Records {
            hub,
            collab,
            from_ms,
            to_ms,
            out,
        } => audit::records(hub, collab, from_ms, to_ms, out).await,
        Command::Budget {
            command:
                BudgetCommand::Show {
                    collab,
                    member,
                    hub,
                },
        } => audit::budget(collab, member, hub).await,
        Command::Interop {
            command: InteropCommand::Aws { command },
        } => interop::interop_aws(command).map_err(plain),
        Command::Template { command } => template::run(command).await,
        Command::Check {
            collab,
            member,
            sql,
        } => query::check(collab, member, sql).await,
        Command::Query(args) => query::query(args).await,
    }
}
