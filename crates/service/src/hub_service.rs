//! `airlock hub serve`: the control plane's REST API (axum over TLS).
//!
//! Every call but `/openapi.json` carries a member's bearer token. A member
//! sees only the collaborations it belongs to: "no such collaboration" and
//! "not yours" are the same 404. Queries move through the store's lifecycle
//! (submitted → checked → running → released | refused | failed), each step
//! in the collaboration's audit chain; results are read only by members
//! with the `receive` ability.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use airlock_hub::{Hub, HubError};
use airlock_policy::{Ability, Collaboration};
use airlock_store::{ApprovalRecord, QueryRecord, QueryState, Store, StoreError};
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::{Json, Router};
use base64::Engine as _;
use datafusion::arrow::datatypes::SchemaRef;
use sha2::Digest as _;

use crate::api::{self, ErrorBody, ProgressView, QueryView};
use crate::config::HubConfig;
use crate::links::{NodeLinks, Progress};
use crate::proto;
use crate::ServiceError;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A collaboration ready to run queries at one policy version.
struct Engine {
    version: i64,
    id: String,
    hub: Hub,
}

type EngineSlot = Arc<tokio::sync::Mutex<Option<Arc<Engine>>>>;

/// The hub's shared state.
pub struct HubState {
    store: Store,
    links: NodeLinks,
    /// One slot per collaboration, locked while it syncs, so a slow or
    /// dead node delays only the collaborations that use it.
    engines: Mutex<HashMap<String, EngineSlot>>,
    sync_errors: Mutex<HashMap<String, Vec<SyncError>>>,
    progress: Mutex<HashMap<String, Arc<Progress>>>,
    /// The hub's certificate and key (PEM): they sign exported metadata.
    signing: (String, String),
    limits: crate::config::HubLimits,
    /// Queries checked or running, per member.
    active: Arc<Mutex<HashMap<String, usize>>>,
}

/// One of a member's active queries; dropping it frees the place.
struct Active {
    member: String,
    active: Arc<Mutex<HashMap<String, usize>>>,
}

impl Drop for Active {
    fn drop(&mut self) {
        if let Ok(mut a) = self.active.lock() {
            if let Some(n) = a.get_mut(&self.member) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

/// An API error: a status and a body with no data values.
#[derive(Debug)]
pub struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(ErrorBody {
                code: self.1.to_string(),
                error: self.2,
            }),
        )
            .into_response()
    }
}

fn unauthorized() -> ApiError {
    ApiError(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "a valid bearer token is required".into(),
    )
}

fn not_found(what: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no such {what}"),
    )
}

fn bad_input(m: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "bad_input", m.into())
}

fn forbidden(m: impl Into<String>) -> ApiError {
    ApiError(StatusCode::FORBIDDEN, "forbidden", m.into())
}

fn failed(m: impl Into<String>) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, "failed", m.into())
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => not_found("object"),
            StoreError::Conflict(m) => ApiError(StatusCode::CONFLICT, "conflict", m),
            StoreError::BadInput(m) => bad_input(m),
            e @ StoreError::Overspend { .. } => {
                ApiError(StatusCode::FORBIDDEN, "budget", e.to_string())
            }
            other => failed(format!("store: {other}")),
        }
    }
}

type Shared = Arc<HubState>;

impl HubState {
    /// Opens the store (running migrations) and marks queries a previous
    /// hub process left unfinished as failed.
    pub async fn open(cfg: &HubConfig) -> Result<HubState, ServiceError> {
        let store = Store::open(&cfg.database)
            .await
            .map_err(|e| ServiceError::Config(format!("database: {e}")))?;
        let interrupted = store
            .fail_interrupted()
            .await
            .map_err(|e| ServiceError::Config(format!("database: {e}")))?;
        if !interrupted.is_empty() {
            eprintln!(
                "hub: {} quer{} interrupted by a restart marked failed",
                interrupted.len(),
                if interrupted.len() == 1 { "y" } else { "ies" }
            );
        }
        let signing = (
            crate::config::read(&cfg.tls.cert)?,
            crate::config::read(&cfg.tls.key)?,
        );
        Ok(HubState {
            store,
            links: NodeLinks::new(cfg)?,
            engines: Mutex::new(HashMap::new()),
            sync_errors: Mutex::new(HashMap::new()),
            progress: Mutex::new(HashMap::new()),
            signing,
            limits: cfg.limits,
            active: Arc::default(),
        })
    }

    /// Takes one of `member`'s places for an active query, or refuses
    /// (429) at `max_concurrent_queries_per_member`.
    fn admit(&self, member: &str) -> Result<Active, ApiError> {
        let max = self.limits.max_concurrent_queries_per_member;
        let mut a = self
            .active
            .lock()
            .map_err(|_| failed("the hub's query count is unavailable"))?;
        let n = a.entry(member.to_string()).or_insert(0);
        if *n >= max {
            return Err(ApiError(
                StatusCode::TOO_MANY_REQUESTS,
                "limit",
                format!(
                    "'{member}' has {max} queries running, the limit (max_concurrent_queries_per_member); wait for one to end"
                ),
            ));
        }
        *n += 1;
        Ok(Active {
            member: member.to_string(),
            active: self.active.clone(),
        })
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The member a request's bearer token belongs to.
    async fn member_of(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(unauthorized)?;
        self.store
            .authenticate(token.trim(), airlock_store::now_ms())
            .await
            .map_err(|_| unauthorized())?
            .ok_or_else(unauthorized)
    }

    /// The collaboration `name` if `member` belongs to it; otherwise the
    /// same 404 as for a collaboration that does not exist.
    async fn visible(
        &self,
        member: &str,
        name: &str,
    ) -> Result<(airlock_store::CollabRecord, Collaboration), ApiError> {
        let rec = self
            .store
            .collaboration(name)
            .await?
            .ok_or_else(|| not_found("collaboration"))?;
        let collab = Collaboration::from_toml(&rec.toml, name)
            .map_err(|_| failed("the stored collaboration file no longer validates"))?;
        if collab.member(member).is_none() {
            return Err(not_found("collaboration"));
        }
        Ok((rec, collab))
    }

    /// The approval key `member`'s node checks its member's approvals
    /// against (the hub holds none of its own).
    async fn member_key(&self, member: &str) -> Result<String, ApiError> {
        let hello = self.hello_of(member).await?.ok_or_else(|| {
            bad_input(format!(
                "'{member}' has no node on this hub, so its approval cannot be checked"
            ))
        })?;
        hello.member_key.ok_or_else(|| {
            bad_input(format!(
                "the node of '{member}' has no member_key: it installs no collaboration that involves '{member}'"
            ))
        })
    }

    /// What `member`'s node says of itself (`None`: it has no node here).
    async fn hello_of(&self, member: &str) -> Result<Option<proto::Hello>, ApiError> {
        if !self.links.members().any(|n| n == member) {
            return Ok(None);
        }
        self.links
            .action(member, proto::action::HELLO, &serde_json::json!({}))
            .await
            .map(Some)
            .map_err(|e| {
                ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_ready",
                    format!("the node of '{member}': {}", failure_text(&e)),
                )
            })
    }

    /// A collaboration as members see it: its file, history, approvals of
    /// the current version and `sync_errors`.
    async fn collab_view(
        &self,
        rec: &airlock_store::CollabRecord,
        collab: &Collaboration,
        sync_errors: Vec<String>,
    ) -> Result<api::CollaborationView, ApiError> {
        let versions = self.store.collaboration_versions(&rec.name).await?;
        let approvals = self.store.approvals(&rec.name).await?;
        Ok(collab_view(rec, collab, versions, sync_errors, &approvals))
    }

    /// The SHA-256 of the text of collaboration `id` that `member`'s node
    /// holds (what an approval replaces), as the node says.
    async fn held_by_node(&self, member: &str, id: &str) -> Result<Option<String>, ApiError> {
        Ok(self.hello_of(member).await?.and_then(|h| {
            h.collaborations
                .into_iter()
                .find(|c| c.id == id)
                .map(|c| c.sha256)
        }))
    }

    /// Refuses (403) a signature that is not `member`'s approval of the
    /// text with SHA-256 `sha` of `collab`. The node checks it again itself;
    /// this is so a member hears of a wrong key now, not at the next query.
    async fn check_signature(
        &self,
        collab: &Collaboration,
        member: &str,
        sha: &str,
        version: i64,
        signature: &str,
    ) -> Result<(), ApiError> {
        require_approver(collab, member)?;
        let key = self.member_key(member).await?;
        let base = self.held_by_node(member, collab.id()).await?;
        let message =
            airlock_crypto::approval::approval_message(collab.id(), version, sha, base.as_deref());
        if airlock_crypto::approval::verify(&key, &message, signature) {
            Ok(())
        } else {
            Err(ApiError(
                StatusCode::FORBIDDEN,
                "bad_approval",
                format!(
                    "the approval is not a signature of version {version} of '{}' by the member key of '{member}' that its node holds, replacing {}",
                    collab.name(),
                    match &base {
                        Some(b) => format!("the text it holds (SHA-256 {b})"),
                        None => "nothing (its node holds no version of it)".into(),
                    }
                ),
            ))
        }
    }

    /// Brings every node of a collaboration to its current policy version
    /// (install, then the sealed secret exchange) and builds its engine.
    fn slot(&self, name: &str) -> EngineSlot {
        match self.engines.lock() {
            Ok(mut m) => m.entry(name.to_string()).or_default().clone(),
            Err(_) => EngineSlot::default(),
        }
    }

    /// Forgets a collaboration's engine: the next query syncs its nodes again.
    async fn forget(&self, name: &str) {
        *self.slot(name).lock().await = None;
    }

    async fn engine(&self, name: &str) -> Result<Arc<Engine>, String> {
        let slot = self.slot(name);
        let mut current = slot.lock().await;
        let rec = self
            .store
            .collaboration(name)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no such collaboration".to_string())?;
        if let Some(e) = current.as_ref() {
            if e.version == rec.version {
                return Ok(e.clone());
            }
        }
        let result = self.sync(&rec).await;
        if let Ok(mut s) = self.sync_errors.lock() {
            match &result {
                Ok(_) => s.remove(name),
                Err(errs) => s.insert(name.to_string(), errs.clone()),
            };
        }
        let engine = Arc::new(result.map_err(|errs| {
            errs.iter()
                .map(|e| e.shared.clone())
                .collect::<Vec<_>>()
                .join("; ")
        })?);
        *current = Some(engine.clone());
        Ok(engine)
    }

    async fn sync(&self, rec: &airlock_store::CollabRecord) -> Result<Engine, Vec<SyncError>> {
        let collab = Collaboration::from_toml(&rec.toml, &rec.name).map_err(|e| {
            // The file is what every member reads: its errors are theirs.
            vec![SyncError {
                member: None,
                shared: e.to_string(),
                detail: String::new(),
            }]
        })?;
        // No node sees a version before every member it involves approved
        // it; each node checks its own member's signature again.
        let approvals = self
            .store
            .approvals(&rec.name)
            .await
            .map_err(|e| vec![SyncError::shared(format!("the store: {e}"))])?;
        let mut signatures = BTreeMap::new();
        let mut waiting = Vec::new();
        for (m, (d, a)) in decisions(rec, &collab, &approvals) {
            match (d, a) {
                (api::Decision::Approved, Some(a)) => {
                    signatures.insert(m, a.signature.clone());
                }
                (api::Decision::Refused, Some(a)) => waiting.push(SyncError::shared(format!(
                    "'{m}' refused version {}: {}",
                    rec.version, a.reason
                ))),
                _ => waiting.push(SyncError::shared(format!(
                    "version {} is waiting for the approval of '{m}'",
                    rec.version
                ))),
            }
        }
        if !waiting.is_empty() {
            return Err(waiting);
        }
        let providers: Vec<String> = collab.providers();
        let install = proto::Install {
            version: rec.version,
            toml: rec.toml.clone(),
            applied_by: rec.created_by.clone(),
            approvals: signatures,
        };
        let mut errors = Vec::new();
        let mut schemas: HashMap<String, SchemaRef> = HashMap::new();
        let mut with_secret = Vec::new();
        let mut without_secret = Vec::new();
        let pushes = providers.iter().map(|m| {
            let install = &install;
            async move {
                (
                    m.clone(),
                    self.links
                        .action::<_, proto::Installed>(m, proto::action::INSTALL, install)
                        .await,
                )
            }
        });
        for (m, r) in futures::future::join_all(pushes).await {
            match r {
                Ok(inst) => {
                    for (table, b64) in inst.schemas {
                        let schema = B64
                            .decode(b64.as_bytes())
                            .ok()
                            .and_then(|b| airlock_protocol::wire::decode_partitions(b).ok())
                            .map(|(s, _)| s);
                        match schema {
                            Some(s) => {
                                schemas.insert(table, s);
                            }
                            None => errors.push(SyncError {
                                member: None,
                                shared: format!("the node of '{m}' sent an unreadable schema"),
                                detail: String::new(),
                            }),
                        }
                    }
                    if inst.has_secret {
                        with_secret.push(m);
                    } else {
                        without_secret.push(m);
                    }
                }
                // Why a node refused can name its files and whether they
                // exist: that goes to its own member only (ATTACKS 29, 33).
                Err(e) => errors.push(SyncError {
                    shared: format!(
                        "the node of '{m}' did not take version {} (its member is shown why)",
                        rec.version
                    ),
                    detail: format!(
                        "the node of '{m}' did not take version {}: {}",
                        rec.version,
                        failure_text(&e)
                    ),
                    member: Some(m.clone()),
                }),
            }
        }
        if !errors.is_empty() {
            let _ = self
                .store
                .append_audit(
                    &rec.name,
                    "policy.sync_failed",
                    "hub",
                    serde_json::json!({
                        "version": rec.version,
                        "errors": errors.iter().map(|e| e.shared.as_str()).collect::<Vec<_>>(),
                    }),
                )
                .await;
            return Err(errors);
        }
        let _ = self
            .store
            .append_audit(
                &rec.name,
                "policy.synced",
                "hub",
                serde_json::json!({"version": rec.version, "nodes": providers}),
            )
            .await;
        if !without_secret.is_empty() {
            self.distribute_secret(&rec.name, collab.id(), &with_secret, &without_secret)
                .await
                .map_err(|e| vec![SyncError::shared(e)])?;
        }
        let hub = Hub::new(collab.clone(), &schemas)
            .map_err(|e| vec![SyncError::shared(e.to_string())])?
            .with_limits(self.limits.query.guard(), self.limits.executor_memory_bytes);
        Ok(Engine {
            version: rec.version,
            id: collab.id().to_string(),
            hub,
        })
    }

    /// One contributing node makes (or already has) the secret and seals it
    /// to the X25519 key of each node that lacks it; the hub only relays.
    async fn distribute_secret(
        &self,
        name: &str,
        id: &str,
        with: &[String],
        without: &[String],
    ) -> Result<(), String> {
        let (generator, recipients): (&String, Vec<&String>) = match with.first() {
            Some(g) => (g, without.iter().collect()),
            None => {
                let (g, rest) = without.split_first().ok_or("no contributing node")?;
                (g, rest.iter().collect())
            }
        };
        let mut list = Vec::new();
        for r in &recipients {
            let hello: proto::Hello = self
                .links
                .action(r, proto::action::HELLO, &serde_json::json!({}))
                .await
                .map_err(|e| format!("the node of '{r}': {}", failure_text(&e)))?;
            list.push(proto::Recipient {
                member: (*r).clone(),
                x25519: hello.x25519,
            });
        }
        let sealed: proto::SealedSecrets = self
            .links
            .action(
                generator,
                proto::action::SECRET_GENERATE,
                &proto::SecretGenerate {
                    collaboration: id.to_string(),
                    recipients: list,
                },
            )
            .await
            .map_err(|e| {
                format!(
                    "the node of '{generator}' did not seal the secret: {}",
                    failure_text(&e)
                )
            })?;
        for (member, blob) in &sealed.sealed {
            let _: serde_json::Value = self
                .links
                .action(
                    member,
                    proto::action::SECRET_INSTALL,
                    &proto::SecretInstall {
                        collaboration: id.to_string(),
                        from: generator.clone(),
                        sealed: blob.clone(),
                    },
                )
                .await
                .map_err(|e| {
                    format!(
                        "the node of '{member}' did not open the secret: {}",
                        failure_text(&e)
                    )
                })?;
        }
        let _ = self
            .store
            .append_audit(
                name,
                "secret.distributed",
                "hub",
                serde_json::json!({"generated_by": generator, "sealed_to": sealed.sealed.keys().collect::<Vec<_>>()}),
            )
            .await;
        Ok(())
    }

    /// Sends a result to the querier's node, which writes it to its
    /// destination `dest`. On success the query becomes released with no
    /// copy kept by the hub, and the delivery is audited with the content
    /// hashes, in one transaction; returns true. On failure the failure is
    /// audited and the caller releases the result as usual (fetchable).
    async fn deliver(
        &self,
        q: &QueryRecord,
        collab_id: &str,
        dest: &str,
        bytes: &[u8],
        rows: i64,
    ) -> bool {
        let sha = hex::encode(sha2::Sha256::digest(bytes));
        let req = proto::Deliver {
            collaboration: collab_id.to_string(),
            query: q.id.clone(),
            destination: dest.to_string(),
            result: base64::engine::general_purpose::STANDARD.encode(bytes),
        };
        let outcome: Result<proto::Delivered, String> = self
            .links
            .action(&q.member, proto::action::DELIVER, &req)
            .await
            .map_err(|e| failure_text(&e));
        let outcome = outcome.and_then(|d| {
            if d.result_sha256 == sha {
                Ok(d)
            } else {
                Err("the node received other bytes than were sent".to_string())
            }
        });
        match outcome {
            Ok(d) => {
                let detail = format!(
                    "delivered to the node of '{}' ({} destination '{}'); the hub keeps no copy",
                    q.member, d.kind, d.destination
                );
                let payload = serde_json::json!({
                    "query": q.id,
                    "destination": d.destination,
                    "kind": d.kind,
                    "location": d.location,
                    "rows": d.rows,
                    "result_sha256": d.result_sha256,
                    "file_sha256": d.file_sha256,
                });
                match self
                    .store
                    .release_delivered(&q.id, rows, &sha, &detail, &payload)
                    .await
                {
                    Ok(_) => true,
                    Err(e) => {
                        eprintln!("hub: recording the delivery of {}: {e}", q.id);
                        false
                    }
                }
            }
            Err(e) => {
                let _ = self
                    .store
                    .append_audit(
                        &q.collab,
                        "result.delivery_failed",
                        "hub",
                        serde_json::json!({"query": q.id, "destination": dest, "error": e}),
                    )
                    .await;
                false
            }
        }
    }

    fn view(&self, q: &QueryRecord) -> QueryView {
        let mut v = QueryView {
            id: q.id.clone(),
            collaboration: q.collab.clone(),
            member: q.member.clone(),
            state: q.state.as_str().to_string(),
            error: None,
            refusal: None,
            refused_by_node: None,
            rows: q.rows,
            progress: None,
            delivery: q
                .detail
                .clone()
                .filter(|d| q.state == QueryState::Released && d.starts_with("delivered to")),
        };
        match q.state {
            QueryState::Refused => {
                let d: Option<serde_json::Value> = q
                    .detail
                    .as_deref()
                    .and_then(|d| serde_json::from_str(d).ok());
                if let Some(d) = d {
                    v.refusal = serde_json::from_value(d["refusal"].clone()).ok();
                    v.refused_by_node = d["node"].as_str().map(str::to_string);
                }
            }
            QueryState::Failed => v.error = q.detail.clone(),
            _ => {}
        }
        if let Ok(p) = self.progress.lock() {
            if let Some(p) = p.get(&q.id) {
                v.progress = Some(ProgressView {
                    fragments_total: p.fragments_total.load(Ordering::Relaxed),
                    fragments_done: p.fragments_done.load(Ordering::Relaxed),
                    step: p.step.lock().ok().and_then(|s| s.clone()),
                });
            }
        }
        v
    }

    async fn run(
        self: Arc<Self>,
        q: QueryRecord,
        spec: api::QueryRequest,
        engine: Arc<Engine>,
        _place: Active,
    ) {
        let progress = Arc::new(Progress::default());
        if let Ok(mut p) = self.progress.lock() {
            p.insert(q.id.clone(), progress.clone());
        }
        let outcome = async {
            self.store
                .transition(&q.id, QueryState::Running, None)
                .await
                .map_err(|e| e.to_string())?;
            let links = self
                .links
                .for_query(&engine.id, engine.version, progress.clone());
            let ledger = crate::ledger::StoreLedger::new(self.store.clone(), &q.collab, &q.id);
            let secs = self.limits.query_timeout_secs;
            let ran = tokio::time::timeout(
                std::time::Duration::from_secs(secs),
                engine.hub.query_spec(&q.member, &spec, &links, &ledger),
            )
            .await
            .unwrap_or_else(|_| {
                Err(HubError::Failed(format!(
                    "the query ran longer than {secs} s (query_timeout_secs of the hub) and was stopped"
                )))
            });
            match ran {
                Ok(released) => {
                    let bytes =
                        airlock_protocol::wire::encode_batches(&released.schema, &released.batches)
                            .map_err(|e| format!("cannot encode the result: {e}"))?;
                    let _ = self
                        .store
                        .append_audit(
                            &q.collab,
                            "fragments.ran",
                            "hub",
                            serde_json::json!({
                                "query": q.id,
                                "fragments": progress.fragments_done.load(Ordering::Relaxed),
                            }),
                        )
                        .await;
                    let rows = released.num_rows() as i64;
                    let delivered = match &spec.deliver {
                        Some(dest) => self.deliver(&q, &engine.id, dest, &bytes, rows).await,
                        None => false,
                    };
                    if !delivered {
                        self.store
                            .release(&q.id, &bytes, rows)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                    Ok(())
                }
                Err(HubError::Refused { refusal, node }) => {
                    let detail = serde_json::json!({"refusal": refusal, "node": node}).to_string();
                    self.store
                        .transition(&q.id, QueryState::Refused, Some(&detail))
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(())
                }
                Err(e) => Err(e.to_string()),
            }
        }
        .await;
        if let Err(m) = outcome {
            let _ = self
                .store
                .transition(&q.id, QueryState::Failed, Some(&m))
                .await;
            // A node may have restarted or lost its state: push the
            // collaboration to its nodes again before the next query.
            self.forget(&q.collab).await;
        }
        if let Ok(mut p) = self.progress.lock() {
            p.remove(&q.id);
        }
    }
}

fn failure_text(f: &airlock_hub::NodeFailure) -> String {
    match f {
        airlock_hub::NodeFailure::Refused(r) => r.to_string(),
        airlock_hub::NodeFailure::Failed(m) => m.clone(),
    }
}

fn collab_view(
    rec: &airlock_store::CollabRecord,
    collab: &Collaboration,
    versions: Vec<airlock_store::CollabRecord>,
    sync_errors: Vec<String>,
    approvals: &[ApprovalRecord],
) -> api::CollaborationView {
    api::CollaborationView {
        name: rec.name.clone(),
        id: rec.id.clone(),
        version: rec.version,
        sha256: rec.sha256.clone(),
        members: collab
            .config
            .members
            .iter()
            .map(|m| {
                let abilities: Vec<String> = m
                    .abilities
                    .iter()
                    .map(|a| format!("{a:?}").to_lowercase())
                    .collect();
                format!("{}: {}", m.name, abilities.join(", "))
            })
            .collect(),
        tables: collab
            .config
            .tables
            .iter()
            .map(|t| {
                let owner = collab.owner_of(&t.alias).unwrap_or("?");
                format!("{} ({owner})", t.alias)
            })
            .collect(),
        toml: rec.toml.clone(),
        versions: versions
            .into_iter()
            .map(|v| (v.version, v.sha256, v.created_by, v.created_at_ms))
            .collect(),
        sync_errors,
        approvals: decisions(rec, collab, approvals)
            .into_iter()
            .map(|(m, (d, _))| (m, d))
            .collect(),
    }
}

/// Each approver's decision on the current version `rec` of `collab`, with
/// the record behind it.
fn decisions<'a>(
    rec: &airlock_store::CollabRecord,
    collab: &Collaboration,
    approvals: &'a [ApprovalRecord],
) -> BTreeMap<String, (api::Decision, Option<&'a ApprovalRecord>)> {
    collab
        .approvers()
        .into_iter()
        .map(|m| {
            let found = approvals
                .iter()
                .rev()
                .find(|a| a.sha256 == rec.sha256 && a.version == rec.version && a.member == m);
            let d = match found {
                Some(a) if a.approved => api::Decision::Approved,
                Some(_) => api::Decision::Refused,
                None => api::Decision::Waiting,
            };
            (m, (d, found))
        })
        .collect()
}

/// What `member` is asked to approve in collaboration `rec`.
fn approval_view(
    rec: &airlock_store::CollabRecord,
    collab: &Collaboration,
    versions: &[airlock_store::CollabRecord],
    approvals: &[ApprovalRecord],
    member: &str,
    with_text: bool,
) -> api::VersionApproval {
    let all = decisions(rec, collab, approvals);
    let asked = all.contains_key(member);
    let mine = all
        .get(member)
        .map(|(d, _)| *d)
        .unwrap_or(api::Decision::Waiting);
    // The last version this member approved (by the text it signed).
    let before = approvals
        .iter()
        .filter(|a| a.member == member && a.approved && a.version != rec.version)
        .filter_map(|a| {
            versions
                .iter()
                .find(|v| v.version == a.version && v.sha256 == a.sha256)
        })
        .max_by_key(|v| v.version);
    api::VersionApproval {
        collaboration: rec.name.clone(),
        id: rec.id.clone(),
        version: rec.version,
        sha256: rec.sha256.clone(),
        asked,
        mine,
        approvers: all.into_iter().map(|(m, (d, _))| (m, d)).collect(),
        approved_before: before.map(|v| v.version),
        replaces_sha256: None,
        diff: if with_text {
            api::line_diff(before.map(|v| v.toml.as_str()).unwrap_or(""), &rec.toml)
        } else {
            String::new()
        },
        toml: if with_text {
            rec.toml.clone()
        } else {
            String::new()
        },
    }
}

async fn openapi() -> Json<serde_json::Value> {
    Json(api::openapi())
}

async fn whoami(Extension(Caller(m)): Extension<Caller>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "member": m }))
}

async fn list_collabs(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
) -> Result<Json<Vec<serde_json::Value>>, ApiError> {
    let mut out = Vec::new();
    for rec in s.store.collaborations().await? {
        if let Ok(c) = Collaboration::from_toml(&rec.toml, &rec.name) {
            if c.member(&m).is_some() {
                out.push(
                    serde_json::json!({"name": rec.name, "id": rec.id, "version": rec.version}),
                );
            }
        }
    }
    Ok(Json(out))
}

fn parse_collab(text: &str) -> Result<Collaboration, ApiError> {
    Collaboration::from_toml(text, "collaboration file").map_err(|e| bad_input(e.to_string()))
}

async fn show_collab(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<api::CollaborationView>, ApiError> {
    let (rec, collab) = s.visible(&m, &name).await?;
    let errs = s
        .sync_errors
        .lock()
        .map(|e| e.get(&name).cloned().unwrap_or_default())
        .unwrap_or_default();
    let errs = visible_errors(&errs, &m);
    Ok(Json(s.collab_view(&rec, &collab, errs).await?))
}

/// One problem of installing a version on the nodes.
#[derive(Debug, Clone)]
struct SyncError {
    /// The member whose node it concerns, who alone sees `detail`.
    member: Option<String>,
    /// What every member may read (no path, no fact about files).
    shared: String,
    /// The node's own reason, for its member.
    detail: String,
}

impl SyncError {
    /// A problem every member may read.
    fn shared(text: String) -> Self {
        SyncError {
            member: None,
            shared: text,
            detail: String::new(),
        }
    }
}

/// The sync errors as `member` may read them.
fn visible_errors(errors: &[SyncError], member: &str) -> Vec<String> {
    errors
        .iter()
        .map(|e| match &e.member {
            Some(m) if m == member => e.detail.clone(),
            _ => e.shared.clone(),
        })
        .collect()
}

async fn after_change(s: &Shared, name: &str, member: &str) -> Vec<String> {
    match s.engine(name).await {
        Ok(_) => Vec::new(),
        Err(e) => {
            let errs = s
                .sync_errors
                .lock()
                .map(|x| x.get(name).cloned().unwrap_or_default())
                .unwrap_or_default();
            if errs.is_empty() {
                vec![e]
            } else {
                visible_errors(&errs, member)
            }
        }
    }
}

async fn create_collab(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    body: Result<Json<api::CollaborationText>, JsonRejection>,
) -> Result<(StatusCode, Json<api::CollaborationView>), ApiError> {
    let Json(body) = body.map_err(rejected)?;
    let collab = parse_collab(&body.toml)?;
    if collab.member(&m).is_none() {
        return Err(forbidden(format!(
            "'{m}' is not a member of the collaboration it is creating"
        )));
    }
    for other in s.store.collaborations().await? {
        if other.id == collab.id() {
            return Err(ApiError(
                StatusCode::CONFLICT,
                "conflict",
                format!("a collaboration with id '{}' exists", collab.id()),
            ));
        }
    }
    let sha = hex::encode(sha2::Sha256::digest(body.toml.as_bytes()));
    if let Some(sig) = &body.approval {
        s.check_signature(&collab, &m, &sha, 1, sig).await?;
    }
    let rec = s
        .store
        .create_collaboration(collab.name(), collab.id(), &body.toml, &m)
        .await?;
    if let Some(sig) = &body.approval {
        s.store
            .record_approval(&approved(&rec, &m, sig.clone()))
            .await?;
    }
    crate::ledger::sync_budgets(&s.store, &collab, &m).await?;
    let errs = after_change(&s, &rec.name, &m).await;
    Ok((
        StatusCode::CREATED,
        Json(s.collab_view(&rec, &collab, errs).await?),
    ))
}

async fn apply_collab(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<api::CollaborationText>, JsonRejection>,
) -> Result<Json<api::CollaborationView>, ApiError> {
    let Json(body) = body.map_err(rejected)?;
    let (current, old) = s.visible(&m, &name).await?;
    let collab = parse_collab(&body.toml)?;
    if collab.name() != name || collab.id() != current.id {
        return Err(bad_input(format!(
            "the file describes collaboration '{}' (id '{}'), not '{name}' (id '{}')",
            collab.name(),
            collab.id(),
            current.id
        )));
    }
    if collab.member(&m).is_none() {
        return Err(forbidden(format!(
            "the new version would not include '{m}'"
        )));
    }
    let beyond = old.changes_beyond(&collab, &m);
    if !beyond.is_empty() {
        return Err(forbidden(format!(
            "'{m}' may change only its own datasets and tables; this version also changes {}",
            beyond.join(", ")
        )));
    }
    let sha = hex::encode(sha2::Sha256::digest(body.toml.as_bytes()));
    if let Some(sig) = &body.approval {
        s.check_signature(&collab, &m, &sha, current.version + 1, sig)
            .await?;
    }
    let rec = s.store.apply_collaboration(&name, &body.toml, &m).await?;
    // Signed for the version after the one it read; if another apply came
    // between, the signature is not for this version and waits unused.
    match &body.approval {
        Some(sig) if rec.version == current.version + 1 => {
            s.store
                .record_approval(&approved(&rec, &m, sig.clone()))
                .await?;
        }
        _ => {}
    }
    crate::ledger::sync_budgets(&s.store, &collab, &m).await?;
    let errs = after_change(&s, &name, &m).await;
    Ok(Json(s.collab_view(&rec, &collab, errs).await?))
}

/// Refuses (400) a decision by a member whose approval is not asked.
fn require_approver(collab: &Collaboration, member: &str) -> Result<(), ApiError> {
    if collab.approvers().iter().any(|a| a == member) {
        Ok(())
    } else {
        Err(bad_input(format!(
            "'{member}' contributes no data to collaboration '{}': its approval is not asked",
            collab.name()
        )))
    }
}

/// The approval record of `member`'s signature on version `rec`.
fn approved(rec: &airlock_store::CollabRecord, member: &str, signature: String) -> ApprovalRecord {
    ApprovalRecord {
        collab: rec.name.clone(),
        sha256: rec.sha256.clone(),
        member: member.to_string(),
        version: rec.version,
        approved: true,
        signature,
        reason: String::new(),
        at_ms: airlock_store::now_ms(),
    }
}

/// `GET /v1/approvals`: every current version waiting for the caller.
async fn list_approvals(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
) -> Result<Json<Vec<api::VersionApproval>>, ApiError> {
    let mut out = Vec::new();
    for rec in s.store.collaborations().await? {
        let Ok(collab) = Collaboration::from_toml(&rec.toml, &rec.name) else {
            continue;
        };
        if !collab.approvers().contains(&m) {
            continue;
        }
        let approvals = s.store.approvals(&rec.name).await?;
        let versions = s.store.collaboration_versions(&rec.name).await?;
        // A summary: the text and its differences are one request each
        // (`GET .../approval`), so neither the answer nor the work grows
        // with the texts of every collaboration a member is named in.
        let view = approval_view(&rec, &collab, &versions, &approvals, &m, false);
        if view.mine == api::Decision::Waiting {
            out.push(view);
        }
    }
    Ok(Json(out))
}

/// `GET /v1/collaborations/{name}/approval`.
async fn show_approval(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<api::VersionApproval>, ApiError> {
    let (rec, collab) = s.visible(&m, &name).await?;
    let approvals = s.store.approvals(&name).await?;
    let versions = s.store.collaboration_versions(&name).await?;
    let mut view = approval_view(&rec, &collab, &versions, &approvals, &m, true);
    if view.asked {
        view.replaces_sha256 = s.held_by_node(&m, &rec.id).await?;
    }
    Ok(Json(view))
}

/// The longest reason of a refusal, in characters.
const MAX_REASON_CHARS: usize = 1000;

/// `POST /v1/collaborations/{name}/approval`.
async fn decide_approval(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<api::ApprovalDecision>, JsonRejection>,
) -> Result<Json<api::CollaborationView>, ApiError> {
    let Json(body) = body.map_err(rejected)?;
    let (rec, collab) = s.visible(&m, &name).await?;
    require_approver(&collab, &m)?;
    if body.sha256 != rec.sha256 {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "the current version of '{name}' is {} with SHA-256 {}: review it before deciding",
                rec.version, rec.sha256
            ),
        ));
    }
    let record = match (body.signature, body.refuse) {
        (Some(sig), None) => {
            s.check_signature(&collab, &m, &rec.sha256, rec.version, &sig)
                .await?;
            approved(&rec, &m, sig)
        }
        (None, Some(reason)) => {
            let reason = reason.trim().to_string();
            if reason.is_empty() || reason.chars().count() > MAX_REASON_CHARS {
                return Err(bad_input(format!(
                    "a refusal needs a reason of 1 to {MAX_REASON_CHARS} characters"
                )));
            }
            ApprovalRecord {
                approved: false,
                signature: String::new(),
                reason,
                ..approved(&rec, &m, String::new())
            }
        }
        _ => {
            return Err(bad_input(
                "give either signature (to approve) or refuse (a reason), not both",
            ))
        }
    };
    s.store.record_approval(&record).await?;
    s.forget(&name).await;
    let errs = after_change(&s, &name, &m).await;
    Ok(Json(s.collab_view(&rec, &collab, errs).await?))
}

fn require(
    collab: &Collaboration,
    member: &str,
    ability: Ability,
    what: &str,
) -> Result<(), ApiError> {
    if collab.has_ability(member, ability) {
        Ok(())
    } else {
        Err(forbidden(format!(
            "member '{member}' does not have the '{}' ability needed to {what}",
            format!("{ability:?}").to_lowercase()
        )))
    }
}

async fn check_query(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<api::QueryRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(rejected)?;
    let (_, collab) = s.visible(&m, &name).await?;
    require(&collab, &m, Ability::Query, "check queries")?;
    let engine = s
        .engine(&name)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, "not_ready", e))?;
    match engine.hub.check_spec(&m, &body).await {
        Ok((_, plan)) => Ok(Json(api::CheckView {
            plan: plan.to_string(),
        })
        .into_response()),
        Err(HubError::Refused { refusal, node }) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({"code": "refused", "error": refusal.to_string(), "refusal": refusal, "node": node})),
        )
            .into_response()),
        Err(HubError::BadInput(e)) => Err(bad_input(e)),
        Err(HubError::Failed(e)) => Err(failed(e)),
    }
}

async fn submit_query(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<api::QueryRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<QueryView>), ApiError> {
    let Json(body) = body.map_err(rejected)?;
    let (_, collab) = s.visible(&m, &name).await?;
    require(&collab, &m, Ability::Query, "submit queries")?;
    if body.deliver.is_some() {
        require(&collab, &m, Ability::Receive, "receive results")?;
        if !s.links.members().any(|n| *n == m) || !collab.has_ability(&m, Ability::Provide) {
            return Err(bad_input(format!(
                "delivery writes to a destination of the querier's own node, and '{m}' has none here"
            )));
        }
    }
    let place = s.admit(&m)?;
    let q = s.store.submit_query(&name, &m, &body.describe()).await?;
    let engine = match s.engine(&name).await {
        Ok(e) => e,
        Err(e) => {
            let q = s
                .store
                .transition(
                    &q.id,
                    QueryState::Failed,
                    Some(&format!("the collaboration is not ready: {e}")),
                )
                .await?;
            return Ok((StatusCode::ACCEPTED, Json(s.view(&q))));
        }
    };
    let q = match engine.hub.check_spec(&m, &body).await {
        Ok(_) => s.store.transition(&q.id, QueryState::Checked, None).await?,
        Err(HubError::Refused { refusal, node }) => {
            let detail = serde_json::json!({"refusal": refusal, "node": node}).to_string();
            s.store
                .transition(&q.id, QueryState::Refused, Some(&detail))
                .await?
        }
        Err(e) => {
            let detail = match e {
                HubError::BadInput(m) => format!("bad input: {m}"),
                other => other.to_string(),
            };
            s.store
                .transition(&q.id, QueryState::Failed, Some(&detail))
                .await?
        }
    };
    if q.state == QueryState::Checked {
        tokio::spawn(s.clone().run(q.clone(), body, engine, place));
    }
    Ok((StatusCode::ACCEPTED, Json(s.view(&q))))
}

async fn list_queries(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Vec<QueryView>>, ApiError> {
    s.visible(&m, &name).await?;
    let qs = s.store.queries(&name).await?;
    Ok(Json(
        qs.iter()
            .filter(|q| q.member == m)
            .map(|q| s.view(q))
            .collect(),
    ))
}

/// What the caller may still spend of the collaboration's privacy budget.
async fn get_budget(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<api::BudgetView>, ApiError> {
    s.visible(&m, &name).await?;
    let collab = crate::ledger::remaining(&s.store, &name, None).await?;
    let mine = crate::ledger::remaining(&s.store, &name, Some(&m)).await?;
    Ok(Json(api::BudgetView::new(&name, &m, collab, mine)))
}

/// The collaboration's public metadata, signed by this hub.
async fn export_metadata(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<crate::metadata::SignedDocument>, ApiError> {
    use crate::metadata::{MemberMeta, Metadata, NodeMeta, TableMeta, TemplateMeta};
    let (rec, collab) = s.visible(&m, &name).await?;
    let engine = s
        .engine(&name)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, "not_ready", e))?;
    let mut members = Vec::new();
    for member in &collab.config.members {
        let node = if s.links.members().any(|n| *n == member.name)
            && collab.has_ability(&member.name, Ability::Provide)
        {
            let hello = s
                .hello_of(&member.name)
                .await?
                .ok_or_else(|| failed("a node vanished from the hub's links"))?;
            Some(NodeMeta {
                x25519: hello.x25519,
                fingerprint: hello.fingerprint,
            })
        } else {
            None
        };
        members.push(MemberMeta {
            name: member.name.clone(),
            abilities: member
                .abilities
                .iter()
                .map(|a| format!("{a:?}").to_lowercase())
                .collect(),
            node,
        });
    }
    let tables = collab
        .config
        .tables
        .iter()
        .map(|t| TableMeta {
            alias: t.alias.clone(),
            owner: collab.owner_of(&t.alias).unwrap_or_default().to_string(),
            rule: t.rule.kind().name().to_string(),
            columns: engine
                .hub
                .schemas()
                .get(&t.alias)
                .map(|schema| {
                    schema
                        .fields()
                        .iter()
                        .map(|f| (f.name().clone(), f.data_type().to_string()))
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect();
    let templates = collab
        .config
        .templates
        .iter()
        .map(|t| {
            let v = api::TemplateView::new(&collab, t);
            TemplateMeta {
                name: v.name,
                hash: v.hash,
                purpose: v.purpose,
                approved_by: v.approved_by,
            }
        })
        .collect();
    let versions = s
        .store
        .collaboration_versions(&name)
        .await?
        .into_iter()
        .map(|v| (v.version, v.sha256, v.created_by, v.created_at_ms))
        .collect();
    let meta = Metadata {
        collaboration: collab.name().to_string(),
        id: collab.id().to_string(),
        exported_at_ms: airlock_store::now_ms(),
        policy_version: rec.version,
        policy_sha256: rec.sha256.clone(),
        toml: rec.toml.clone(),
        versions,
        members,
        tables,
        templates,
    };
    let doc = crate::metadata::sign(&meta, &s.signing.0, &s.signing.1).map_err(failed)?;
    s.store
        .append_audit(
            &name,
            "metadata.exported",
            &m,
            serde_json::json!({"version": rec.version, "sha256": rec.sha256}),
        )
        .await?;
    Ok(Json(doc))
}

async fn list_templates(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Vec<api::TemplateView>>, ApiError> {
    let (_, collab) = s.visible(&m, &name).await?;
    Ok(Json(
        collab
            .config
            .templates
            .iter()
            .map(|t| api::TemplateView::new(&collab, t))
            .collect(),
    ))
}

async fn approve_template(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath((name, template)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    set_approval(s, m, name, template, true).await
}

async fn revoke_template(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath((name, template)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    set_approval(s, m, name, template, false).await
}

/// Approves (after static verification) or revokes a template for the
/// calling member: a new policy version that changes only the caller's own
/// `[approvals]` entry, pushed to every node and audited.
async fn set_approval(
    s: Shared,
    m: String,
    name: String,
    template: String,
    approve: bool,
) -> Result<Response, ApiError> {
    let (rec, collab) = s.visible(&m, &name).await?;
    require(&collab, &m, Ability::Provide, "approve templates")?;
    let t = collab
        .template(&template)
        .ok_or_else(|| not_found("template"))?
        .clone();
    let hash = t.hash();
    let mut checks = 0;
    if approve {
        let engine = s
            .engine(&name)
            .await
            .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, "not_ready", e))?;
        match engine.hub.verify_template(&t).await {
            Ok(n) => checks = n,
            Err(reasons) => {
                let _ = s
                    .store
                    .append_audit(
                        &name,
                        "template.approval_refused",
                        &m,
                        serde_json::json!({"template": t.name, "hash": hash, "reasons": reasons}),
                    )
                    .await;
                return Ok((
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(serde_json::json!({
                        "code": "approval_refused",
                        "error": format!(
                            "template '{}' could break a rule for some allowed parameter values; approval refused:\n  {}",
                            t.name,
                            reasons.join("\n  ")
                        ),
                        "reasons": reasons,
                    })),
                )
                    .into_response());
            }
        }
    }
    let text =
        airlock_policy::template::edit_approval(&rec.toml, &m, &hash, approve).map_err(failed)?;
    let next = parse_collab(&text)?;
    let beyond = collab.changes_beyond(&next, &m);
    if !beyond.is_empty() {
        return Err(failed(format!(
            "an approval changed more than the caller's approvals: {}",
            beyond.join(", ")
        )));
    }
    let rec = s.store.apply_collaboration(&name, &text, &m).await?;
    s.store
        .append_audit(
            &name,
            if approve {
                "template.approved"
            } else {
                "template.revoked"
            },
            &m,
            serde_json::json!({"template": t.name, "hash": hash, "version": rec.version, "checks": checks}),
        )
        .await?;
    let errs = after_change(&s, &name, &m).await;
    if !errs.is_empty() {
        eprintln!("after approval in '{name}': {}", errs.join("; "));
    }
    Ok(Json(api::ApprovalView {
        template: t.name.clone(),
        hash,
        member: m,
        approved: approve,
        checks,
        version: rec.version,
    })
    .into_response())
}

/// The query `id` if `member` submitted it or may receive its results.
async fn visible_query(
    s: &Shared,
    member: &str,
    id: &str,
) -> Result<(QueryRecord, Collaboration), ApiError> {
    let q = s.store.query(id).await?.ok_or_else(|| not_found("query"))?;
    let (_, collab) = s
        .visible(member, &q.collab)
        .await
        .map_err(|_| not_found("query"))?;
    if q.member != member && !collab.has_ability(member, Ability::Receive) {
        return Err(not_found("query"));
    }
    Ok((q, collab))
}

async fn get_query(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<QueryView>, ApiError> {
    let (q, _) = visible_query(&s, &m, &id).await?;
    Ok(Json(s.view(&q)))
}

async fn get_result(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let (q, collab) = visible_query(&s, &m, &id).await?;
    require(&collab, &m, Ability::Receive, "read results")?;
    // A result past its retention period is deleted now rather than served.
    expire(&s.store, &collab).await?;
    let q = s.store.query(&id).await?.unwrap_or(q);
    if q.detail.as_deref() == Some(airlock_store::RESULT_DELETED) {
        return Err(ApiError(
            StatusCode::GONE,
            "expired",
            airlock_store::RESULT_DELETED.to_string(),
        ));
    }
    if let Some(d) = q
        .detail
        .as_deref()
        .filter(|d| d.starts_with("delivered to"))
    {
        return Err(ApiError(StatusCode::GONE, "delivered", d.to_string()));
    }
    if q.state != QueryState::Released {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "not_ready",
            format!("the query is {}, not released", q.state.as_str()),
        ));
    }
    let bytes = s
        .store
        .result(&id)
        .await?
        .ok_or_else(|| not_found("result"))?;
    let _ = s
        .store
        .append_audit(
            &q.collab,
            "result.delivered",
            &m,
            serde_json::json!({
                "query": id,
                "bytes": bytes.len(),
                "result_sha256": hex::encode(sha2::Sha256::digest(&bytes)),
            }),
        )
        .await;
    Ok((
        [(header::CONTENT_TYPE, "application/vnd.apache.arrow.stream")],
        Bytes::from(bytes),
    )
        .into_response())
}

async fn get_audit(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> Result<Response, ApiError> {
    s.visible(&m, &name).await?;
    let entries = s.store.audit(&name).await?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        airlock_store::export_jsonl(&entries),
    )
        .into_response())
}

/// Applies `u` to one collaboration file if `member` owns a dataset at
/// `u.path` in it; returns the new text, or `None` if it does not use it.
fn patch_dataset(
    text: &str,
    member: &str,
    u: &api::DatasetUpdate,
) -> Result<Option<String>, String> {
    let mut doc: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Some(toml::Value::Array(datasets)) = doc.get_mut("datasets") {
        for d in datasets.iter_mut().filter_map(toml::Value::as_table_mut) {
            let owned = d.get("owner").and_then(toml::Value::as_str) == Some(member);
            let same = d.get("path").and_then(toml::Value::as_str) == Some(u.path.as_str());
            if owned && same {
                if let Some(name) = d.get("name").and_then(toml::Value::as_str) {
                    names.push(name.to_string());
                }
                if let Some(p) = &u.new_path {
                    d.insert("path".into(), toml::Value::String(p.clone()));
                }
            }
        }
    }
    if names.is_empty() {
        return Ok(None);
    }
    if let Some(k) = u.min_distinct_identities {
        let k = i64::try_from(k).map_err(|_| "min_distinct_identities is too large".to_string())?;
        if let Some(toml::Value::Array(tables)) = doc.get_mut("tables") {
            for t in tables.iter_mut().filter_map(toml::Value::as_table_mut) {
                let uses = t
                    .get("dataset")
                    .and_then(toml::Value::as_str)
                    .is_some_and(|d| names.iter().any(|n| n == d));
                if !uses {
                    continue;
                }
                if let Some(rule) = t.get_mut("rule").and_then(toml::Value::as_table_mut) {
                    if rule.get("type").and_then(toml::Value::as_str) == Some("aggregation") {
                        rule.insert("min_distinct_identities".into(), toml::Value::Integer(k));
                    }
                }
            }
        }
    }
    toml::to_string(&doc).map(Some).map_err(|e| e.to_string())
}

async fn update_dataset(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    u: Result<Json<api::DatasetUpdate>, JsonRejection>,
) -> Result<Json<Vec<api::DatasetUpdated>>, ApiError> {
    let Json(u) = u.map_err(rejected)?;
    if u.new_path.is_none() && u.min_distinct_identities.is_none() {
        return Err(bad_input(
            "nothing to change: give new_path or min_distinct_identities",
        ));
    }
    // Validate every new version before storing any, so a bad update
    // changes nothing.
    let mut planned = Vec::new();
    let mut others = BTreeSet::new();
    for rec in s.store.collaborations().await? {
        let Ok(c) = Collaboration::from_toml(&rec.toml, &rec.name) else {
            continue;
        };
        if c.member(&m).is_none() {
            continue;
        }
        for d in &c.config.datasets {
            if d.owner != m && d.path == u.path {
                others.insert(d.owner.clone());
            }
        }
        let Some(text) = patch_dataset(&rec.toml, &m, &u).map_err(bad_input)? else {
            continue;
        };
        Collaboration::from_toml(&text, &rec.name).map_err(|e| {
            bad_input(format!(
                "collaboration '{}' would be invalid: {e}",
                rec.name
            ))
        })?;
        planned.push((rec.name, text));
    }
    if planned.is_empty() {
        if !others.is_empty() {
            let owners: Vec<String> = others.iter().map(|o| format!("'{o}'")).collect();
            return Err(forbidden(format!(
                "the dataset at this path belongs to {}: only its owner may change it",
                owners.join(", ")
            )));
        }
        return Err(not_found("dataset of yours at this path"));
    }
    let mut out = Vec::new();
    for (name, text) in planned {
        let rec = s.store.apply_collaboration(&name, &text, &m).await?;
        let sync_errors = after_change(&s, &name, &m).await;
        out.push(api::DatasetUpdated {
            collaboration: name,
            version: rec.version,
            sync_errors,
        });
    }
    Ok(Json(out))
}

/// The authenticated member of a request.
#[derive(Debug, Clone)]
struct Caller(String);

/// Authenticates every `/v1` request before anything else (bodies
/// included) is looked at.
async fn authenticate(
    State(s): State<Shared>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, ApiError> {
    let m = s.member_of(req.headers()).await?;
    req.extensions_mut().insert(Caller(m));
    Ok(next.run(req).await)
}

/// The REST router over `state`.
pub fn router(state: Shared) -> Router {
    let v1 = Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/collaborations", get(list_collabs).post(create_collab))
        .route("/v1/approvals", get(list_approvals))
        .route(
            "/v1/collaborations/{name}/approval",
            get(show_approval).post(decide_approval),
        )
        .route(
            "/v1/collaborations/{name}",
            get(show_collab).put(apply_collab),
        )
        .route(
            "/v1/collaborations/{name}/check",
            axum::routing::post(check_query),
        )
        .route(
            "/v1/collaborations/{name}/queries",
            get(list_queries).post(submit_query),
        )
        .route("/v1/collaborations/{name}/audit", get(get_audit))
        .route("/v1/collaborations/{name}/budget", get(get_budget))
        .route("/v1/collaborations/{name}/templates", get(list_templates))
        .route("/v1/collaborations/{name}/export", get(export_metadata))
        .route(
            "/v1/collaborations/{name}/templates/{template}/approval",
            axum::routing::post(approve_template).delete(revoke_template),
        )
        .route("/v1/datasets/update", axum::routing::post(update_dataset))
        .route("/v1/queries/{id}", get(get_query))
        .route("/v1/queries/{id}/result", get(get_result))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    let max_body = state.limits.max_request_bytes;
    Router::new()
        .route("/openapi.json", get(openapi))
        .merge(v1)
        .fallback(|| async { not_found("route") })
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// A body the JSON extractor rejected: too large (413, naming the limit),
/// or malformed (400, with what is wrong).
fn rejected(e: JsonRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            "limit",
            "the request body is larger than the hub's limit (max_request_bytes)".into(),
        )
    } else {
        bad_input(e.body_text())
    }
}

/// Deletes `collab`'s results released longer ago than its retention period
/// (each deletion audited by the store).
async fn expire(store: &Store, collab: &Collaboration) -> Result<Vec<String>, StoreError> {
    let cutoff = airlock_store::now_ms() - collab.config.collaboration.retention_ms();
    store.expire_results(collab.name(), cutoff).await
}

/// Every minute, deletes the results every collaboration's retention
/// period has run out on.
async fn retention_sweeper(store: Store) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
    loop {
        tick.tick().await;
        let Ok(collabs) = store.collaborations().await else {
            continue;
        };
        for rec in collabs {
            if let Ok(collab) = parse_collab(&rec.toml) {
                if let Err(e) = expire(&store, &collab).await {
                    eprintln!("retention of '{}': {e}", rec.name);
                }
            }
        }
    }
}

/// Serves the hub until `shutdown` resolves. Prints `listening on
/// https://ADDR` once bound (the line `airlock up` waits for).
pub async fn serve(
    cfg: HubConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    crate::install_crypto_provider();
    let state = Arc::new(HubState::open(&cfg).await?);
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cfg.tls.cert, &cfg.tls.key)
        .await
        .map_err(|e| ServiceError::Config(format!("TLS: {e}")))?;
    let listener = std::net::TcpListener::bind(&cfg.listen)
        .map_err(|e| ServiceError::Io(format!("cannot listen on {}: {e}", cfg.listen)))?;
    let addr: SocketAddr = listener
        .local_addr()
        .map_err(|e| ServiceError::Io(e.to_string()))?;
    let nodes: BTreeSet<&String> = state.links.members().collect();
    println!(
        "hub listening on https://{addr} (nodes: {})",
        nodes.into_iter().cloned().collect::<Vec<_>>().join(", ")
    );
    tokio::spawn(retention_sweeper(state.store.clone()));
    let handle = axum_server::Handle::new();
    let h2 = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        h2.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    axum_server::from_tcp_rustls(listener, tls)
        .map_err(|e| ServiceError::Io(e.to_string()))?
        .handle(handle)
        .serve(router(state).into_make_service())
        .await
        .map_err(|e| ServiceError::Io(e.to_string()))
}
