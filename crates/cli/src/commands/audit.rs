//! `airlock` audit commands.

use airlock_cli::cluster::{CliError, Cluster};
use airlock_cli::remote;
use std::path::PathBuf;

use super::common::*;
use crate::args::*;

pub(crate) async fn run(command: AuditCommand) -> Out {
    let plain = |e| (e, false);
    match command {
        AuditCommand::Verify {
            hub,
            collab,
            file,
            head,
        } => {
            let text = match (&file, &collab) {
                (Some(f), _) => std::fs::read_to_string(f)
                    .map_err(|e| plain(bad(format!("cannot read {}: {e}", f.display()))))?,
                (None, Some(c)) => {
                    let client = hub.client().map_err(plain)?;
                    client
                        .audit(c)
                        .await
                        .map_err(|e| plain(remote::cli_error(e)))?
                }
                (None, None) => {
                    return Err(plain(bad("give --file FILE, or --hub ... --collab NAME")))
                }
            };
            let entries = airlock_store::parse_jsonl(&text).map_err(|e| plain(bad(e)))?;
            let verdict = airlock_store::verify_chain(&entries);
            match verdict {
                Ok(()) if head.as_ref().is_some_and(|h| !entries.iter().any(|e| &e.hash == h)) => {
                    Err(plain(CliError::Failed(format!(
                        "audit chain broken: the head you kept ({}) is no longer in the chain; entries were removed or rewritten",
                        head.unwrap_or_default()
                    ))))
                }
                Ok(()) => {
                    let last = entries.last().map(|e| e.hash.clone()).unwrap_or_default();
                    println!(
                        "audit chain verifies: {} entries, head {last}",
                        entries.len()
                    );
                    Ok(())
                }
                Err(b) => Err(plain(CliError::Failed(format!("audit chain broken: {b}")))),
            }
        }
        AuditCommand::Export { hub, collab, out } => {
            let client = hub.client().map_err(plain)?;
            let text = client
                .audit(&collab)
                .await
                .map_err(|e| plain(remote::cli_error(e)))?;
            match out {
                Some(p) => std::fs::write(&p, text)
                    .map_err(|e| plain(CliError::Failed(format!("{}: {e}", p.display())))),
                None => {
                    print!("{text}");
                    Ok(())
                }
            }
        }
    }
}

pub(crate) async fn records(
    hub: HubArgs,
    collab: String,
    from_ms: i64,
    to_ms: Option<i64>,
    out: PathBuf,
) -> Out {
    let plain = |e| (e, false);
    let client = hub.client().map_err(plain)?;
    let to_ms = to_ms.unwrap_or_else(airlock_store::now_ms);
    let record = airlock_cli::records::fetch(&client, &collab, from_ms, to_ms)
        .await
        .map_err(plain)?;
    let write = |ext: &str, text: String| {
        let path = out.join(format!("records-{collab}.{ext}"));
        std::fs::write(&path, text)
            .map_err(|e| plain(CliError::Failed(format!("{}: {e}", path.display()))))?;
        println!("wrote {}", path.display());
        Ok(())
    };
    write(
        "json",
        serde_json::to_string_pretty(&record)
            .map_err(|e| plain(CliError::Failed(e.to_string())))?,
    )?;
    write("md", airlock_cli::records::markdown(&record))
}

pub(crate) async fn budget(collab: String, member: Option<String>, hub: HubArgs) -> Out {
    let plain = |e| (e, false);
    let view = if member.is_none() && hub.hub.is_some() {
        let client = hub.client().map_err(plain)?;
        Some(
            client
                .budget(&collab)
                .await
                .map_err(|e| plain(remote::cli_error(e)))?,
        )
    } else {
        let cluster = Cluster::open(std::path::Path::new(&collab), None)
            .await
            .map_err(plain)?;
        let member = member
            .or_else(|| cluster.default_querier())
            .ok_or_else(|| plain(CliError::BadInput("no member has the query ability".into())))?;
        cluster.budget(&member).await.map_err(plain)?
    };
    match view {
        Some(v) => println!("{}", airlock_cli::output::budget_line(&v)),
        None => println!("this collaboration has no privacy budget ([privacy] is not set)"),
    }
    Ok(())
}
