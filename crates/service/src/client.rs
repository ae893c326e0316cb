//! The CLI's client of the hub's REST API (HTTPS, bearer token, the
//! cluster CA as the only trusted root).

use std::path::Path;
use std::time::Duration;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
pub use reqwest::Method;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::{self, ErrorBody, QueryView};
use crate::ServiceError;

/// A client of one hub, as one member.
#[derive(Clone)]
pub struct HubClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl HubClient {
    /// A client of the hub at `url` trusting only the CA in `ca_pem`.
    pub fn new(url: &str, token: &str, ca_pem: &[u8]) -> Result<HubClient, ServiceError> {
        crate::install_crypto_provider();
        let ca = reqwest::Certificate::from_pem(ca_pem)
            .map_err(|e| ServiceError::Config(format!("CA certificate: {e}")))?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| ServiceError::Config(format!("HTTP client: {e}")))?;
        Ok(HubClient {
            http,
            base: url.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }

    /// Reads the CA file and builds a client.
    pub fn with_ca_file(url: &str, token: &str, ca: &Path) -> Result<HubClient, ServiceError> {
        let pem = std::fs::read(ca)
            .map_err(|e| ServiceError::Config(format!("cannot read {}: {e}", ca.display())))?;
        Self::new(url, token, &pem)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<reqwest::Response, ServiceError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ServiceError::Io(format!("cannot reach the hub at {}: {e}", self.base)))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        let (code, message) = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(b) => (b.code, b.error),
            Err(_) => (
                "failed".to_string(),
                format!(
                    "the hub answered {status}: {}",
                    text.chars().take(500).collect::<String>()
                ),
            ),
        };
        Err(ServiceError::Api {
            status: status.as_u16(),
            code,
            message,
        })
    }

    /// A JSON call.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T, ServiceError> {
        self.send(method, path, body)
            .await?
            .json()
            .await
            .map_err(|e| ServiceError::Io(format!("malformed answer from the hub: {e}")))
    }

    /// The raw status and body of a call (for tests of the API itself).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<(StatusCode, String), ServiceError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| ServiceError::Io(e.to_string()))?;
        let status = resp.status();
        Ok((status, resp.text().await.unwrap_or_default()))
    }

    /// Creates a collaboration from its file.
    pub async fn create(&self, toml: &str) -> Result<api::CollaborationView, ServiceError> {
        self.call(
            Method::POST,
            "/v1/collaborations",
            Some(&api::CollaborationText { toml: toml.into() }),
        )
        .await
    }

    /// Applies a new version of a collaboration file.
    pub async fn apply(
        &self,
        name: &str,
        toml: &str,
    ) -> Result<api::CollaborationView, ServiceError> {
        self.call(
            Method::PUT,
            &format!("/v1/collaborations/{}", enc(name)),
            Some(&api::CollaborationText { toml: toml.into() }),
        )
        .await
    }

    /// Submits a query; returns its first state.
    pub async fn submit(&self, collab: &str, sql: &str) -> Result<QueryView, ServiceError> {
        self.submit_spec(collab, &api::QueryRequest::sql(sql)).await
    }

    /// Submits SQL or a template run; returns its first state.
    pub async fn submit_spec(
        &self,
        collab: &str,
        spec: &api::QueryRequest,
    ) -> Result<QueryView, ServiceError> {
        self.call(
            Method::POST,
            &format!("/v1/collaborations/{}/queries", enc(collab)),
            Some(spec),
        )
        .await
    }

    /// The collaboration's public metadata, signed by the hub.
    pub async fn export_metadata(
        &self,
        collab: &str,
    ) -> Result<crate::metadata::SignedDocument, ServiceError> {
        self.call(
            Method::GET,
            &format!("/v1/collaborations/{}/export", enc(collab)),
            None::<&()>,
        )
        .await
    }

    /// The collaboration's templates, with who approves each.
    pub async fn templates(&self, collab: &str) -> Result<Vec<api::TemplateView>, ServiceError> {
        self.call(
            Method::GET,
            &format!("/v1/collaborations/{}/templates", enc(collab)),
            None::<&()>,
        )
        .await
    }

    /// Approves (after the hub's static verification) or revokes a
    /// template for the caller.
    pub async fn approval(
        &self,
        collab: &str,
        template: &str,
        approve: bool,
    ) -> Result<api::ApprovalView, ServiceError> {
        self.call(
            if approve {
                Method::POST
            } else {
                Method::DELETE
            },
            &format!(
                "/v1/collaborations/{}/templates/{}/approval",
                enc(collab),
                enc(template)
            ),
            None::<&()>,
        )
        .await
    }

    /// What remains of a collaboration's privacy budget, for the caller.
    pub async fn budget(&self, collab: &str) -> Result<api::BudgetView, ServiceError> {
        self.call(
            Method::GET,
            &format!("/v1/collaborations/{}/budget", enc(collab)),
            None::<&()>,
        )
        .await
    }

    /// A query's state.
    pub async fn query(&self, id: &str) -> Result<QueryView, ServiceError> {
        self.call(
            Method::GET,
            &format!("/v1/queries/{}", enc(id)),
            None::<&()>,
        )
        .await
    }

    /// Polls until the query ends; `on_progress` is called on every poll
    /// after the first second.
    pub async fn wait(
        &self,
        mut q: QueryView,
        mut on_progress: impl FnMut(&QueryView),
    ) -> Result<QueryView, ServiceError> {
        let start = std::time::Instant::now();
        // Short queries end within milliseconds: poll fast first, then back
        // off to ten times a second.
        let mut pause = Duration::from_millis(2);
        while matches!(q.state.as_str(), "submitted" | "checked" | "running") {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
            q = self.query(&q.id).await?;
            if start.elapsed() >= Duration::from_secs(1) {
                on_progress(&q);
            }
        }
        Ok(q)
    }

    /// A released result.
    pub async fn result(&self, id: &str) -> Result<(SchemaRef, Vec<RecordBatch>), ServiceError> {
        let bytes = self
            .send(
                Method::GET,
                &format!("/v1/queries/{}/result", enc(id)),
                None::<&()>,
            )
            .await?
            .bytes()
            .await
            .map_err(|e| ServiceError::Io(e.to_string()))?;
        let (schema, parts) = airlock_guard::wire::decode_partitions(bytes.to_vec())
            .map_err(|e| ServiceError::Io(format!("unreadable result: {e}")))?;
        Ok((schema, parts.into_iter().flatten().collect()))
    }

    /// The audit chain as JSON lines.
    pub async fn audit(&self, collab: &str) -> Result<String, ServiceError> {
        self.send(
            Method::GET,
            &format!("/v1/collaborations/{}/audit", enc(collab)),
            None::<&()>,
        )
        .await?
        .text()
        .await
        .map_err(|e| ServiceError::Io(e.to_string()))
    }
}

/// Percent-encodes a path segment.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
