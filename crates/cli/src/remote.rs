//! The CLI against a hub: queries with progress, and the mapping of the
//! hub's answers onto the CLI's exit codes.

use std::io::Write;

use airlock_hub::Released;
use airlock_service::api::QueryView;
use airlock_service::client::HubClient;
use airlock_service::ServiceError;

use crate::cluster::CliError;

/// Maps a client error onto the CLI's error kinds.
pub fn cli_error(e: ServiceError) -> CliError {
    match e {
        ServiceError::Api {
            status,
            code,
            message,
        } => match (status, code.as_str()) {
            (400, _) | (404, _) | (401, _) => CliError::BadInput(message),
            (422, "approval_refused") => CliError::Refused {
                refusal: airlock_policy::Refusal::new(
                    airlock_policy::Control::TemplateApproval,
                    message,
                ),
                node: None,
            },
            // A signature that does not verify is the caller's bad
            // input (a wrong key or text), not a rule's refusal.
            (403, "bad_approval") => CliError::BadInput(message),
            (403, _) => CliError::Refused {
                refusal: airlock_policy::Refusal::new(airlock_policy::Control::Ability, message),
                node: None,
            },
            _ => CliError::Failed(message),
        },
        ServiceError::Config(m) => CliError::BadInput(m),
        ServiceError::Io(m) => CliError::Failed(m),
    }
}

/// Submits `sql`, waits for it (printing progress to stderr when it runs
/// longer than a second) and fetches the released result.
pub async fn query(client: &HubClient, collab: &str, sql: &str) -> Result<Released, CliError> {
    query_spec(client, collab, &airlock_policy::QuerySpec::sql(sql)).await
}

/// Like [`query`], for SQL or a template run.
pub async fn query_spec(
    client: &HubClient,
    collab: &str,
    spec: &airlock_policy::QuerySpec,
) -> Result<Released, CliError> {
    let q = client.submit_spec(collab, spec).await.map_err(cli_error)?;
    let mut shown = false;
    let q = client
        .wait(q, |q| {
            if let Some(p) = &q.progress {
                match &p.step {
                    // Padded: steps differ in length.
                    Some(step) => eprint!("\r  {}: {step:<64}", q.state),
                    None => eprint!(
                        "\r  {}: fragments {}/{} done   ",
                        q.state, p.fragments_done, p.fragments_total
                    ),
                }
                let _ = std::io::stderr().flush();
                shown = true;
            }
        })
        .await
        .map_err(cli_error)?;
    if shown {
        eprintln!();
    }
    finish(client, q).await
}

/// Submits a query whose result is delivered to a destination of the
/// querier's node; waits, and says where it went (or why it did not).
pub async fn deliver(
    client: &HubClient,
    collab: &str,
    spec: &airlock_policy::QuerySpec,
) -> Result<String, CliError> {
    let q = client.submit_spec(collab, spec).await.map_err(cli_error)?;
    let q = client.wait(q, |_| {}).await.map_err(cli_error)?;
    match (q.state.as_str(), &q.delivery) {
        ("released", Some(d)) => Ok(format!("released {} rows; {d}", q.rows.unwrap_or(0))),
        ("released", None) => Err(CliError::Failed(format!(
            "released, but the delivery failed (see the audit chain); fetch query {} instead",
            q.id
        ))),
        _ => finish(client, q).await.map(|_| String::new()),
    }
}

/// Turns a finished query into a released result or an error.
pub async fn finish(client: &HubClient, q: QueryView) -> Result<Released, CliError> {
    match q.state.as_str() {
        "released" => {
            let (schema, batches) = client.result(&q.id).await.map_err(cli_error)?;
            Ok(Released { schema, batches })
        }
        "refused" => match q.refusal {
            Some(refusal) => Err(CliError::Refused {
                refusal,
                node: q.refused_by_node,
            }),
            None => Err(CliError::Failed("refused, with no refusal recorded".into())),
        },
        _ => {
            let msg = q.error.unwrap_or_else(|| "the query failed".into());
            if let Some(m) = msg.strip_prefix("bad input: ") {
                Err(CliError::BadInput(m.to_string()))
            } else {
                Err(CliError::Failed(msg))
            }
        }
    }
}
