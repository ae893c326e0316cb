//! `airlock records`: the record of processing (built by
//! [`airlock_service::records`], the one home the hub's
//! `GET /v1/collaborations/{name}/records` also uses) from a hub's answers.

use airlock_policy::Collaboration;
use serde_json::Value;

pub use airlock_service::records::{build, markdown};

/// Fetches collaboration `name` and its audit chain from a hub and builds
/// its record for `[from_ms, to_ms)`.
pub async fn fetch(
    client: &airlock_service::client::HubClient,
    name: &str,
    from_ms: i64,
    to_ms: i64,
) -> Result<Value, crate::cluster::CliError> {
    use crate::cluster::CliError;
    let view: airlock_service::api::CollaborationView = client
        .call(
            airlock_service::client::Method::GET,
            &format!("/v1/collaborations/{name}"),
            None::<&()>,
        )
        .await
        .map_err(crate::remote::cli_error)?;
    let collab = Collaboration::from_toml(&view.toml, &format!("collaboration '{name}'"))
        .map_err(|e| CliError::Failed(e.to_string()))?;
    let text = client.audit(name).await.map_err(crate::remote::cli_error)?;
    let audit = airlock_store::parse_jsonl(&text).map_err(|e| CliError::Failed(e.to_string()))?;
    build(&collab, &audit, from_ms, to_ms).map_err(CliError::Failed)
}
