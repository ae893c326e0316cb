//! The hub's shared state, its API errors, and the checks every handler
//! shares (membership, signatures, abilities).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use airlock_hub::Hub;
use airlock_policy::{Ability, Collaboration};
use airlock_store::{ApprovalRecord, Store, StoreError};
use axum::extract::rejection::JsonRejection;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::api::{self, ErrorBody, ErrorCode};
use crate::config::HubConfig;
use crate::links::{NodeLinks, Progress};
use crate::proto;
use crate::ServiceError;

/// A collaboration ready to run queries at one policy version.
pub(super) struct Engine {
    pub(super) version: i64,
    pub(super) id: String,
    pub(super) hub: Hub,
}

pub(super) type EngineSlot = Arc<tokio::sync::Mutex<Option<Arc<Engine>>>>;

/// The hub's shared state.
pub struct HubState {
    pub(super) store: Store,
    pub(super) links: NodeLinks,
    /// One slot per collaboration, locked while it syncs, so a slow or
    /// dead node delays only the collaborations that use it.
    pub(super) engines: Mutex<HashMap<String, EngineSlot>>,
    pub(super) sync_errors: Mutex<HashMap<String, Vec<airlock_hub::SyncError>>>,
    pub(super) progress: Mutex<HashMap<String, Arc<Progress>>>,
    /// The hub's certificate and key (PEM): they sign exported metadata.
    pub(super) signing: (String, String),
    pub(super) limits: crate::config::HubLimits,
    /// Queries checked or running, per member.
    pub(super) active: Arc<Mutex<HashMap<String, usize>>>,
    /// The console's browser sessions.
    pub(super) sessions: super::sessions::Sessions,
}

/// One of a member's active queries; dropping it frees the place.
pub(super) struct Active {
    pub(super) member: String,
    pub(super) active: Arc<Mutex<HashMap<String, usize>>>,
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
pub struct ApiError(
    pub(super) StatusCode,
    pub(super) ErrorCode,
    pub(super) String,
);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(ErrorBody {
                code: self.1,
                error: self.2,
            }),
        )
            .into_response()
    }
}

pub(super) fn unauthorized() -> ApiError {
    ApiError(
        StatusCode::UNAUTHORIZED,
        ErrorCode::Unauthorized,
        "a valid bearer token is required".into(),
    )
}

pub(super) fn not_found(what: &str) -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        format!("no such {what}"),
    )
}

pub(super) fn bad_input(m: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, ErrorCode::BadInput, m.into())
}

pub(super) fn forbidden(m: impl Into<String>) -> ApiError {
    ApiError(StatusCode::FORBIDDEN, ErrorCode::Forbidden, m.into())
}

pub(super) fn failed(m: impl Into<String>) -> ApiError {
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::Failed,
        m.into(),
    )
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => not_found("object"),
            StoreError::Conflict(m) => ApiError(StatusCode::CONFLICT, ErrorCode::Conflict, m),
            StoreError::BadInput(m) => bad_input(m),
            e @ StoreError::Overspend { .. } => {
                ApiError(StatusCode::FORBIDDEN, ErrorCode::Budget, e.to_string())
            }
            other => failed(format!("store: {other}")),
        }
    }
}

pub(super) type Shared = Arc<HubState>;

pub(super) fn parse_collab(text: &str) -> Result<Collaboration, ApiError> {
    Collaboration::from_toml(text, "collaboration file").map_err(|e| bad_input(e.to_string()))
}

/// Refuses (400) a decision by a member whose approval is not asked.
pub(super) fn require_approver(collab: &Collaboration, member: &str) -> Result<(), ApiError> {
    if collab.approvers().iter().any(|a| a == member) {
        Ok(())
    } else {
        Err(bad_input(format!(
            "'{member}' contributes no data to collaboration '{}': its approval is not asked",
            collab.name()
        )))
    }
}

/// The longest reason of a refusal, in characters.
pub(super) const MAX_REASON_CHARS: usize = 1000;

pub(super) fn require(
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

/// The authenticated member of a request.
#[derive(Debug, Clone)]
pub(super) struct Caller(pub(super) String);

/// A body the JSON extractor rejected: too large (413, naming the limit),
/// or malformed (400, with what is wrong).
pub(super) fn rejected(e: JsonRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::Limit,
            "the request body is larger than the hub's limit (max_request_bytes)".into(),
        )
    } else {
        bad_input(e.body_text())
    }
}

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
            sessions: Default::default(),
        })
    }

    /// Takes one of `member`'s places for an active query, or refuses
    /// (429) at `max_concurrent_queries_per_member`.
    pub(super) fn admit(&self, member: &str) -> Result<Active, ApiError> {
        let max = self.limits.max_concurrent_queries_per_member;
        let mut a = self
            .active
            .lock()
            .map_err(|_| failed("the hub's query count is unavailable"))?;
        let n = a.entry(member.to_string()).or_insert(0);
        if *n >= max {
            return Err(ApiError(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::Limit,
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
    pub(super) async fn member_of(&self, headers: &HeaderMap) -> Result<String, ApiError> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(unauthorized)?;
        self.member_of_token(token).await
    }

    /// The member `token` belongs to (REST and Flight SQL alike).
    pub(super) async fn member_of_token(&self, token: &str) -> Result<String, ApiError> {
        self.store
            .authenticate(token.trim(), airlock_store::now_ms())
            .await
            .map_err(|_| unauthorized())?
            .ok_or_else(unauthorized)
    }

    /// The collaboration `name` if `member` belongs to it; otherwise the
    /// same 404 as for a collaboration that does not exist.
    pub(super) async fn visible(
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
    pub(super) async fn member_key(&self, member: &str) -> Result<String, ApiError> {
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
    pub(super) async fn hello_of(&self, member: &str) -> Result<Option<proto::Hello>, ApiError> {
        if !self.links.members().any(|n| n == member) {
            return Ok(None);
        }
        airlock_hub::NodeAdmin::hello(&self.links, member)
            .await
            .map(Some)
            .map_err(|e| {
                ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    ErrorCode::NotReady,
                    format!("the node of '{member}': {e}"),
                )
            })
    }

    /// A collaboration as members see it: its file, history, approvals of
    /// the current version and `sync_errors`.
    pub(super) async fn collab_view(
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
    pub(super) async fn held_by_node(
        &self,
        member: &str,
        id: &str,
    ) -> Result<Option<String>, ApiError> {
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
    pub(super) async fn check_signature(
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
                ErrorCode::BadApproval,
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
}

pub(super) fn collab_view(
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
            .config()
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
            .config()
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
        config: serde_json::to_value(collab.config()).unwrap_or_default(),
    }
}

/// Each approver's decision on the current version `rec` of `collab`, with
/// the record behind it.
pub(super) fn decisions<'a>(
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

/// Deletes `collab`'s results released longer ago than its retention period
/// (each deletion audited by the store).
pub(super) async fn expire(
    store: &Store,
    collab: &Collaboration,
) -> Result<Vec<String>, StoreError> {
    let cutoff = airlock_store::now_ms() - collab.config().collaboration.retention_ms();
    store.expire_results(collab.name(), cutoff).await
}
