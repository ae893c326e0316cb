//! The CLI against a hub: queries with progress, and the mapping of the
//! hub's answers onto the CLI's exit codes.

use std::io::Write;

use airlock_hub::Released;
use airlock_policy::Control;
use airlock_service::api::{ErrorCode, FailureKind, QueryState, QueryView};
use airlock_service::client::HubClient;
use airlock_service::ServiceError;

use crate::cluster::CliError;

fn refused(control: Control, message: String) -> CliError {
    CliError::Refused {
        refusal: airlock_policy::Refusal::new(control, message),
        node: None,
    }
}

/// Maps a client error onto the CLI's error kinds, by the error body's
/// code (a 403 is an ability or a budget, and says which).
pub fn cli_error(e: ServiceError) -> CliError {
    match e {
        ServiceError::Api {
            status,
            code,
            message,
        } => match code {
            ErrorCode::BadInput | ErrorCode::NotFound | ErrorCode::Unauthorized => {
                CliError::BadInput(message)
            }
            // A signature that does not verify is the caller's bad input
            // (a wrong key or text), not a rule's refusal.
            ErrorCode::BadApproval => CliError::BadInput(message),
            ErrorCode::ApprovalRefused => refused(Control::TemplateApproval, message),
            ErrorCode::Forbidden => refused(Control::Ability, message),
            ErrorCode::Budget => refused(Control::PrivacyBudget, message),
            _ if status == 400 => CliError::BadInput(message),
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
    match (q.state, &q.delivery) {
        (QueryState::Released, Some(d)) => {
            Ok(format!("released {} rows; {d}", q.rows.unwrap_or(0)))
        }
        (QueryState::Released, None) => Err(CliError::Failed(format!(
            "released, but the delivery failed (see the audit chain); fetch query {} instead",
            q.id
        ))),
        _ => finish(client, q).await.map(|_| String::new()),
    }
}

/// Turns a finished query into a released result or an error.
pub async fn finish(client: &HubClient, q: QueryView) -> Result<Released, CliError> {
    match q.state {
        QueryState::Released => {
            let (schema, batches) = client.result(&q.id).await.map_err(cli_error)?;
            Ok(Released { schema, batches })
        }
        QueryState::Refused => match q.refusal {
            Some(refusal) => Err(CliError::Refused {
                refusal,
                node: q.refused_by_node,
            }),
            None => Err(CliError::Failed("refused, with no refusal recorded".into())),
        },
        _ => {
            let msg = q.error.unwrap_or_else(|| "the query failed".into());
            match q.error_kind {
                Some(FailureKind::BadInput) => Err(CliError::BadInput(msg)),
                _ => Err(CliError::Failed(msg)),
            }
        }
    }
}
