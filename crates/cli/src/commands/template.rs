//! `airlock` template commands.

use airlock_cli::cluster::CliError;
use airlock_cli::remote;

use super::common::*;
use crate::args::*;

pub(crate) async fn run(command: TemplateCommand) -> Out {
    let plain = |e| (e, false);
    match command {
        TemplateCommand::List { collab, hub } => {
            let views = if hub.hub.is_some() {
                let client = hub.client().map_err(plain)?;
                client
                    .templates(&collab)
                    .await
                    .map_err(|e| plain(remote::cli_error(e)))?
            } else {
                let c = airlock_cli::cluster::load_collaboration(std::path::Path::new(&collab))
                    .map_err(plain)?;
                airlock_cli::templates::views(&c)
            };
            print!("{}", airlock_cli::templates::describe(&views));
            Ok(())
        }
        TemplateCommand::Approve {
            collab,
            member,
            hub,
            template,
        } => set_approval(&collab, member, &hub, &template, true)
            .await
            .map_err(plain),
        TemplateCommand::Revoke {
            collab,
            member,
            hub,
            template,
        } => set_approval(&collab, member, &hub, &template, false)
            .await
            .map_err(plain),
    }
}

/// `airlock template approve|revoke`, on a hub or in a collaboration file.
pub(crate) async fn set_approval(
    collab: &str,
    member: Option<String>,
    hub: &HubArgs,
    template: &str,
    approve: bool,
) -> Result<(), CliError> {
    if member.is_none() && hub.hub.is_some() {
        let client = hub.client()?;
        let v = client
            .approval(collab, template, approve)
            .await
            .map_err(remote::cli_error)?;
        if v.approved {
            println!(
                "'{}' approves template '{}' at hash {} (policy version {}): static verification passed {} checks",
                v.member, v.template, v.hash, v.version, v.checks
            );
        } else {
            println!(
                "'{}' no longer approves template '{}' (hash {}; policy version {})",
                v.member, v.template, v.hash, v.version
            );
        }
        return Ok(());
    }
    let member = member.ok_or_else(|| {
        CliError::BadInput(
            "--as MEMBER is required with a collaboration file (or give --hub)".into(),
        )
    })?;
    let said = airlock_cli::templates::set_approval_in_file(
        std::path::Path::new(collab),
        &member,
        template,
        approve,
    )
    .await?;
    println!("{said}");
    Ok(())
}
