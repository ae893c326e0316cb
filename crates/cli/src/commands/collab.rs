//! `airlock` collab commands.

use airlock_cli::cluster::CliError;
use airlock_cli::remote;
use airlock_policy::Collaboration;
use airlock_service::api;
use std::path::PathBuf;

use super::common::*;
use crate::args::*;

pub(crate) async fn import(
    hub: HubArgs,
    file: PathBuf,
    trust: Vec<String>,
    toml_out: Option<PathBuf>,
    create: bool,
) -> Out {
    let plain = |e| (e, false);
    let text = std::fs::read_to_string(&file).map_err(|e| {
        plain(CliError::BadInput(format!(
            "cannot read {}: {e}",
            file.display()
        )))
    })?;
    let meta = airlock_service::metadata::verify(&text, &trust).map_err(|e| {
        plain(CliError::BadInput(format!(
            "{}: refused: {e}",
            file.display()
        )))
    })?;
    println!(
            "verified: collaboration '{}' (id {}), policy version {} (sha256 {}), {} members, {} tables, {} templates",
            meta.collaboration,
            meta.id,
            meta.policy_version,
            &meta.policy_sha256[..16],
            meta.members.len(),
            meta.tables.len(),
            meta.templates.len()
        );
    for m in &meta.members {
        if let Some(n) = &m.node {
            println!(
                "  node of '{}': X25519 key fingerprint {}",
                m.name, n.fingerprint
            );
        }
    }
    if let Some(p) = toml_out {
        std::fs::write(&p, &meta.toml).map_err(|e| {
            plain(CliError::Failed(format!(
                "cannot write {}: {e}",
                p.display()
            )))
        })?;
        println!("wrote {}", p.display());
    }
    if create {
        let client = hub.client().map_err(plain)?;
        let v = client
            .create(&meta.toml)
            .await
            .map_err(|e| plain(remote::cli_error(e)))?;
        print_collab(&v);
    }
    Ok(())
}

pub(crate) async fn run(hub: HubArgs, command: CollabCommand) -> Out {
    let plain = |e| (e, false);
    let client = hub.client().map_err(plain)?;
    match command {
        CollabCommand::Import { .. } => unreachable!("handled above"),
        CollabCommand::Export { name, out } => {
            let doc = client
                .export_metadata(&name)
                .await
                .map_err(|e| plain(remote::cli_error(e)))?;
            let text = serde_json::to_string_pretty(&doc)
                .map_err(|e| plain(CliError::Failed(e.to_string())))?
                + "\n";
            airlock_cli::interop::emit(&text, &[], out.as_deref()).map_err(plain)?;
            eprintln!(
                "signed by the hub with certificate fingerprint {}",
                doc.fingerprint
            );
            Ok(())
        }
        CollabCommand::List => {
            let list: Vec<serde_json::Value> = client
                .call(reqwest_get(), "/v1/collaborations", None::<&()>)
                .await
                .map_err(|e| plain(remote::cli_error(e)))?;
            for c in list {
                println!(
                    "{}\tversion {}\tid {}",
                    c["name"].as_str().unwrap_or_default(),
                    c["version"],
                    c["id"].as_str().unwrap_or_default()
                );
            }
            Ok(())
        }
        CollabCommand::Show { name } => {
            let v: api::CollaborationView = client
                .call(
                    reqwest_get(),
                    &format!("/v1/collaborations/{name}"),
                    None::<&()>,
                )
                .await
                .map_err(|e| plain(remote::cli_error(e)))?;
            print_collab(&v);
            Ok(())
        }
        CollabCommand::UpdateDataset {
            dataset,
            min_distinct_identities,
        } => {
            let done = client
                .update_dataset(&api::DatasetUpdate {
                    dataset,
                    min_distinct_identities,
                })
                .await
                .map_err(|e| plain(remote::cli_error(e)))?;
            let mut ok = true;
            for d in &done {
                println!("{}\tversion {}", d.collaboration, d.version);
                for e in &d.sync_errors {
                    ok = false;
                    println!("  NOT IN SYNC: {e}");
                }
            }
            if ok {
                Ok(())
            } else {
                Err(plain(CliError::Failed(
                    "stored, but not every node took the new versions".into(),
                )))
            }
        }
        CollabCommand::Approvals => {
            let list = client
                .approvals()
                .await
                .map_err(|e| plain(remote::cli_error(e)))?;
            if list.is_empty() {
                println!("nothing waits for your approval");
            }
            for v in &list {
                // The list is a summary; each review has the changes.
                let full = client
                    .review(&v.collaboration)
                    .await
                    .map_err(|e| plain(remote::cli_error(e)))?;
                print_approval(&full, false);
            }
            Ok(())
        }
        CollabCommand::Review { name, full } => {
            let v = client
                .review(&name)
                .await
                .map_err(|e| plain(remote::cli_error(e)))?;
            print_approval(&v, full);
            Ok(())
        }
        CollabCommand::Approve { name, sha256 } => {
            let v = client
                .approve(&name, sha256.as_deref())
                .await
                .map_err(|e| plain(remote::cli_error(e)))?;
            println!("approved version {} of '{}'", v.version, v.name);
            print_collab(&v);
            Ok(())
        }
        CollabCommand::Refuse {
            name,
            sha256,
            reason,
        } => {
            let v = client
                .refuse(&name, &sha256, &reason)
                .await
                .map_err(|e| plain(remote::cli_error(e)))?;
            println!("refused version {} of '{}'", v.version, v.name);
            Ok(())
        }
        CollabCommand::Create { ref file } | CollabCommand::Apply { ref file } => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| plain(bad(format!("cannot read {}: {e}", file.display()))))?;
            let collab = Collaboration::from_toml(&text, &file.display().to_string())
                .map_err(|e| plain(bad(e)))?;
            let v = if matches!(command, CollabCommand::Create { .. }) {
                client.create(&text).await
            } else {
                client.apply(collab.name(), &text).await
            }
            .map_err(|e| plain(remote::cli_error(e)))?;
            print_collab(&v);
            let waiting: Vec<&String> = v
                .approvals
                .iter()
                .filter(|(_, d)| **d != api::Decision::Approved)
                .map(|(m, _)| m)
                .collect();
            if !waiting.is_empty() {
                // Stored; the other members decide next.
                println!(
                    "version {} is not yet approved by {}",
                    v.version,
                    waiting
                        .iter()
                        .map(|m| format!("'{m}'"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                Ok(())
            } else if v.sync_errors.is_empty() {
                Ok(())
            } else {
                Err(plain(CliError::Failed(format!(
                    "version {} is stored but not every node took it",
                    v.version
                ))))
            }
        }
    }
}

pub(crate) fn print_collab(v: &api::CollaborationView) {
    println!("{} (id {}), policy version {}", v.name, v.id, v.version);
    println!("  sha256 {}", v.sha256);
    println!("  members:");
    for m in &v.members {
        println!("    {m}");
    }
    println!("  configured tables:");
    for t in &v.tables {
        println!("    {t}");
    }
    println!("  versions:");
    for (n, sha, by, at) in &v.versions {
        println!(
            "    {n}  {}  by {by}  at {at} ms",
            &sha[..sha.len().min(16)]
        );
    }
    if !v.approvals.is_empty() {
        println!("  approvals of version {}:", v.version);
        for (m, d) in &v.approvals {
            println!("    {m}: {}", decision_text(*d));
        }
    }
    for e in &v.sync_errors {
        println!("  NOT IN SYNC: {e}");
    }
}

pub(crate) fn decision_text(d: api::Decision) -> &'static str {
    match d {
        api::Decision::Waiting => "waiting",
        api::Decision::Approved => "approved",
        api::Decision::Refused => "refused",
    }
}

pub(crate) fn print_approval(v: &api::VersionApproval, full: bool) {
    println!(
        "{} (id {}), version {}: yours is {}",
        v.collaboration,
        v.id,
        v.version,
        decision_text(v.mine)
    );
    println!("  sha256 {}", v.sha256);
    for (m, d) in &v.approvers {
        println!("  {m}: {}", decision_text(*d));
    }
    match v.approved_before {
        Some(n) => println!("  changes since version {n}, the last you approved:"),
        None => println!("  you approved no earlier version; the whole file:"),
    }
    for line in v.diff.lines() {
        if full || !line.starts_with(' ') {
            println!("    {line}");
        }
    }
}

pub(crate) fn reqwest_get() -> airlock_service::client::Method {
    airlock_service::client::Method::GET
}
