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
    /// The member's approval key: with it, `create` and `apply` approve
    /// the text they send, and `approve` works.
    key: Option<std::sync::Arc<airlock_crypto::approval::MemberKey>>,
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
            key: None,
        })
    }

    /// The same client, approving with the member key in `path`.
    pub fn with_key_file(mut self, path: &Path) -> Result<HubClient, ServiceError> {
        let key = airlock_crypto::approval::MemberKey::load(path)
            .map_err(|e| ServiceError::Config(format!("member key: {e}")))?;
        self.key = Some(std::sync::Arc::new(key));
        Ok(self)
    }

    /// Whether this client holds a member key.
    pub fn has_key(&self) -> bool {
        self.key.is_some()
    }

    /// This member's signature of its approval of `toml` as version
    /// `version` (if it has a key and the text parses; the hub reports a
    /// text that does not).
    fn sign_text(&self, toml: &str, version: i64, replaces: Option<&str>) -> Option<String> {
        let key = self.key.as_ref()?;
        let collab = airlock_policy::Collaboration::from_toml(toml, "collaboration file").ok()?;
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(toml.as_bytes()));
        Some(key.sign(&airlock_crypto::approval::approval_message(
            collab.id(),
            version,
            &sha,
            replaces,
        )))
    }

    /// Versions waiting for this member's approval.
    pub async fn approvals(&self) -> Result<Vec<api::VersionApproval>, ServiceError> {
        self.call(Method::GET, "/v1/approvals", None::<&()>).await
    }

    /// The current version of `name` as this member is asked to approve it.
    pub async fn review(&self, name: &str) -> Result<api::VersionApproval, ServiceError> {
        self.call(
            Method::GET,
            &format!("/v1/collaborations/{}/approval", enc(name)),
            None::<&()>,
        )
        .await
    }

    /// Approves the version of `name` whose text hashes to `sha256` (the
    /// current one if `None`), signing it with the member key.
    pub async fn approve(
        &self,
        name: &str,
        sha256: Option<&str>,
    ) -> Result<api::CollaborationView, ServiceError> {
        let key = self.key.as_ref().ok_or_else(|| {
            ServiceError::Config(
                "approving needs the member key: --key FILE (or AIRLOCK_KEY)".into(),
            )
        })?;
        let view = self.review(name).await?;
        let sha = sha256.unwrap_or(&view.sha256).to_string();
        let signature = key.sign(&airlock_crypto::approval::approval_message(
            &view.id,
            view.version,
            &sha,
            view.replaces_sha256.as_deref(),
        ));
        self.call(
            Method::POST,
            &format!("/v1/collaborations/{}/approval", enc(name)),
            Some(&api::ApprovalDecision {
                sha256: sha,
                signature: Some(signature),
                refuse: None,
            }),
        )
        .await
    }

    /// Changes one of this member's datasets in every collaboration that
    /// uses it; with a member key, approves each new version it made (only
    /// if it is still the current one), so it waits only for the others.
    pub async fn update_dataset(
        &self,
        update: &api::DatasetUpdate,
    ) -> Result<Vec<api::DatasetUpdated>, ServiceError> {
        let mut out: Vec<api::DatasetUpdated> = self
            .call(Method::POST, "/v1/datasets/update", Some(update))
            .await?;
        for u in &mut out {
            if let Some(v) = self.approve_own(&u.collaboration, u.version).await? {
                u.sync_errors = v.sync_errors;
            }
        }
        Ok(out)
    }

    /// Refuses the version of `name` whose text hashes to `sha256`.
    pub async fn refuse(
        &self,
        name: &str,
        sha256: &str,
        reason: &str,
    ) -> Result<api::CollaborationView, ServiceError> {
        self.call(
            Method::POST,
            &format!("/v1/collaborations/{}/approval", enc(name)),
            Some(&api::ApprovalDecision {
                sha256: sha256.to_string(),
                signature: None,
                refuse: Some(reason.to_string()),
            }),
        )
        .await
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
                crate::api::ErrorCode::Failed,
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

    /// The status of a call with a raw body (for tests of the API itself).
    pub async fn raw_bytes(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<StatusCode, ServiceError> {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| ServiceError::Io(e.to_string()))?;
        Ok(resp.status())
    }

    /// Creates a collaboration from its file.
    pub async fn create(&self, toml: &str) -> Result<api::CollaborationView, ServiceError> {
        self.call(
            Method::POST,
            "/v1/collaborations",
            Some(&api::CollaborationText {
                toml: toml.into(),
                approval: self.sign_text(toml, 1, None),
            }),
        )
        .await
    }

    /// Applies a new version of a collaboration file.
    pub async fn apply(
        &self,
        name: &str,
        toml: &str,
    ) -> Result<api::CollaborationView, ServiceError> {
        let approval = match &self.key {
            Some(_) => {
                let current = self.review(name).await?;
                if current.asked {
                    self.sign_text(
                        toml,
                        current.version + 1,
                        current.replaces_sha256.as_deref(),
                    )
                } else {
                    None
                }
            }
            None => None,
        };
        self.call(
            Method::PUT,
            &format!("/v1/collaborations/{}", enc(name)),
            Some(&api::CollaborationText {
                toml: toml.into(),
                approval,
            }),
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
    /// template for the caller. That makes a new policy version; with a
    /// member key this member approves it too (if it is still current), so
    /// it waits only for the other contributing members.
    pub async fn approval(
        &self,
        collab: &str,
        template: &str,
        approve: bool,
    ) -> Result<api::ApprovalView, ServiceError> {
        let done: api::ApprovalView = self
            .call(
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
            .await?;
        self.approve_own(collab, done.version).await?;
        Ok(done)
    }

    /// Approves version `version` of `collab` with the member key, if this
    /// client has one, the version is still current and its approval is
    /// asked and not given yet.
    async fn approve_own(
        &self,
        collab: &str,
        version: i64,
    ) -> Result<Option<api::CollaborationView>, ServiceError> {
        if self.key.is_none() {
            return Ok(None);
        }
        let view = self.review(collab).await?;
        if view.version != version || !view.asked || view.mine != api::Decision::Waiting {
            return Ok(None);
        }
        self.approve(collab, Some(&view.sha256)).await.map(Some)
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

    /// Asks a running query of the caller's to stop
    /// (`POST /v1/queries/{id}/cancel`).
    pub async fn cancel(&self, id: &str) -> Result<QueryView, ServiceError> {
        self.call(
            Method::POST,
            &format!("/v1/queries/{}/cancel", enc(id)),
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
        while matches!(
            q.state,
            crate::api::QueryState::Submitted
                | crate::api::QueryState::Checked
                | crate::api::QueryState::Running
        ) {
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
        let (schema, parts) = airlock_protocol::wire::decode_partitions(bytes.to_vec())
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
