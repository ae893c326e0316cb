//! `airlock` query commands.

use airlock_cli::cluster::{CliError, Cluster};
use airlock_cli::output::render;
use airlock_cli::output::Format;
use airlock_cli::remote;
use airlock_policy::QuerySpec;
use std::path::PathBuf;

use super::common::*;
use crate::args::*;

pub(crate) async fn check(collab: PathBuf, member: Option<String>, sql: String) -> Out {
    let plain = |e| (e, false);
    let cluster = Cluster::open(&collab, None).await.map_err(plain)?;
    let member = member
        .or_else(|| cluster.default_querier())
        .ok_or_else(|| plain(CliError::BadInput("no member has the query ability".into())))?;
    let plan = cluster.check(&member, &sql).await.map_err(plain)?;
    println!("accepted for '{member}'. Plan:");
    print!("{plan}");
    Ok(())
}

pub(crate) async fn query(args: QueryArgs) -> Out {
    let QueryArgs {
        collab,
        member,
        hub,
        format,
        template,
        params,
        purpose,
        deliver,
        sql,
    } = args;
    let json = format == Format::Json;
    let mut spec = QuerySpec {
        sql,
        template,
        purpose,
        deliver,
        ..QuerySpec::default()
    };
    for p in &params {
        let Some((k, v)) = p.split_once('=') else {
            return Err((
                CliError::BadInput(format!(
                    "--param must be NAME=VALUE (got one without '=' for '{}')",
                    p.chars().take(40).collect::<String>()
                )),
                json,
            ));
        };
        if spec
            .params
            .insert(k.trim().to_string(), v.to_string())
            .is_some()
        {
            return Err((
                CliError::BadInput(format!("--param '{}' is given twice", k.trim())),
                json,
            ));
        }
    }
    if spec.deliver.is_some() {
        if member.is_some() || hub.hub.is_none() {
            return Err((
                CliError::BadInput(
                    "--deliver needs --hub: the querier's node writes the result".into(),
                ),
                json,
            ));
        }
        let client = hub.client().map_err(|e| (e, json))?;
        let said = remote::deliver(&client, &collab, &spec)
            .await
            .map_err(|e| (e, json))?;
        println!("{said}");
        return Ok(());
    }
    let released = if member.is_none() && hub.hub.is_some() {
        let client = hub.client().map_err(|e| (e, json))?;
        remote::query_spec(&client, &collab, &spec)
            .await
            .map_err(|e| (e, json))?
    } else {
        let member = member.ok_or_else(|| {
            (
                CliError::BadInput(
                    "--as MEMBER is required with a collaboration file (or give --hub)".into(),
                ),
                json,
            )
        })?;
        let cluster = Cluster::open(std::path::Path::new(&collab), None)
            .await
            .map_err(|e| (e, json))?;
        cluster
            .query_spec(&member, &spec)
            .await
            .map_err(|e| (e, json))?
    };
    print_released(&released, format).map_err(|e| (e, json))
}

pub(crate) fn print_released(
    released: &airlock_hub::Released,
    format: Format,
) -> Result<(), CliError> {
    let text = render(released, format).map_err(CliError::Failed)?;
    println!("{text}");
    if format != Format::Table {
        if let Some(noise) = airlock_cli::output::noise_footer(released) {
            eprintln!("{noise}");
        }
    }
    Ok(())
}
