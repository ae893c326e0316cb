//! The query lifecycle over REST: check, submit, run (fan-out, release or
//! delivery), progress, results and the audit chain.

use airlock_protocol::audit::DeliveredBy;
use airlock_protocol::AuditEvent;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use airlock_hub::HubError;
use airlock_policy::{Ability, Collaboration};
use airlock_store::{QueryRecord, QueryState, ResultPlace};
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use sha2::Digest as _;

use crate::api::{self, ErrorCode, FailureDetail, FailureKind, ProgressView, QueryView};

use crate::links::Progress;

use super::ports::{failure, refusal_detail, StorePort};
use super::state::*;

impl HubState {
    pub(super) fn view(&self, q: &QueryRecord) -> QueryView {
        let mut v = QueryView {
            id: q.id.clone(),
            collaboration: q.collab.clone(),
            member: q.member.clone(),
            state: q.state,
            error: None,
            error_kind: None,
            refusal: None,
            refused_by_node: None,
            rows: q.rows,
            progress: None,
            delivery: match q.result_place() {
                Some(ResultPlace::Delivered(d)) => Some(d.to_string()),
                _ => None,
            },
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
            QueryState::Failed => {
                let d = FailureDetail::parse(q.detail.as_deref().unwrap_or_default());
                v.error = Some(d.message);
                v.error_kind = Some(d.kind);
            }
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

    /// [`HubState::view`] as `member` may see it: the released row count is
    /// the result's (how many groups passed k depends on the other
    /// members' data), so only a member with `receive` reads it (red team).
    pub(super) fn view_for(
        &self,
        q: &QueryRecord,
        collab: &Collaboration,
        member: &str,
    ) -> QueryView {
        let mut v = self.view(q);
        if !collab.has_ability(member, Ability::Receive) {
            v.rows = None;
        }
        v
    }

    /// Runs a submitted query through the hub's lifecycle
    /// ([`airlock_hub::Hub::settle`]) on the store and the nodes' links,
    /// with progress the querier can read.
    pub(super) async fn run(
        self: Arc<Self>,
        q: QueryRecord,
        prepared: airlock_hub::Prepared,
        deliver: Option<String>,
        engine: Arc<Engine>,
        _place: Active,
        progress: Arc<Progress>,
    ) {
        let links = self
            .links
            .for_query(&engine.id, engine.version, progress.clone());
        let ledger = crate::ledger::StoreLedger::new(self.store.clone(), &q.collab, &q.id);
        let query = airlock_hub::QueryRef {
            id: &q.id,
            collab: &q.collab,
            collab_id: &engine.id,
            member: &q.member,
        };
        let run = airlock_hub::Run {
            nodes: &links,
            ledger: &ledger,
            store: &StorePort(&self.store),
            deliver: deliver
                .as_deref()
                .map(|d| (d, &self.links as &dyn airlock_hub::Deliverer)),
            progress: &progress,
            timeout: std::time::Duration::from_secs(self.limits.query_timeout_secs),
        };
        let settled = engine.hub.settle(query, prepared, run).await;
        // A cancel is the querier's, not a node's: no resync (a member
        // cancelling in a loop must not make every query wait on one).
        if settled == airlock_hub::Settled::Failed && !progress.is_cancelled() {
            // A node may have restarted or lost its state: push the
            // collaboration to its nodes again before the next query.
            self.forget(&q.collab).await;
        }
        if let Ok(mut p) = self.progress.lock() {
            p.remove(&q.id);
        }
    }
}

pub(super) async fn check_query(
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
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NotReady, e))?;
    let checked = match engine.hub.check_spec(&m, &body).await {
        // The cost reported is the one a run debits (`Prepared::cost`,
        // its one home; crypto mode costs differ from the plan's).
        Ok((_, plan)) => engine
            .hub
            .prepare(&m, &body)
            .await
            .map(|p| (plan, p.cost())),
        Err(e) => Err(e),
    };
    match checked {
        Ok((plan, cost)) => Ok(Json(api::CheckView {
            plan: plan.to_string(),
            cost: cost.map(|c| api::DpCostView {
                epsilon: c.epsilon,
                delta: c.delta,
            }),
        })
        .into_response()),
        Err(HubError::Refused { refusal, node }) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({"code": ErrorCode::Refused, "error": refusal.to_string(), "refusal": refusal, "node": node})),
        )
            .into_response()),
        Err(HubError::BadInput(e)) => Err(bad_input(e)),
        Err(HubError::Failed(e)) => Err(failed(e)),
    }
}

pub(super) async fn submit_query(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
    body: Result<Json<api::QueryRequest>, JsonRejection>,
) -> Result<(StatusCode, Json<QueryView>), ApiError> {
    let Json(body) = body.map_err(rejected)?;
    let (q, _running) = s.submit_detached(m, name, body).await?;
    Ok((StatusCode::ACCEPTED, Json(s.view(&q))))
}

impl HubState {
    /// Submits `spec` to collaboration `name` as `m`: abilities, the
    /// member's places, the store's record, the check; a checked query is
    /// started (its task is returned, to wait on), a refused or failed one
    /// is recorded as such. The one way in for REST and Flight SQL alike.
    pub(super) async fn submit(
        self: &Arc<Self>,
        m: &str,
        name: &str,
        body: &api::QueryRequest,
    ) -> Result<(QueryRecord, Option<tokio::task::JoinHandle<()>>), ApiError> {
        let s = self;
        let (_, collab) = s.visible(m, name).await?;
        require(&collab, m, Ability::Query, "submit queries")?;
        if body.deliver.is_some() {
            require(&collab, m, Ability::Receive, "receive results")?;
            if !s.links.members().any(|n| n == m) || !collab.has_ability(m, Ability::Provide) {
                return Err(bad_input(format!(
                    "delivery writes to a destination of the querier's own node, and '{m}' has none here"
                )));
            }
        }
        let place = s.admit(m)?;
        let q = s.store.submit_query(name, m, &body.describe()).await?;
        let engine = match s.engine(name).await {
            Ok(e) => e,
            Err(e) => {
                let q = s
                    .store
                    .transition(
                        &q.id,
                        QueryState::Failed,
                        Some(&failure(
                            FailureKind::Failed,
                            format!("the collaboration is not ready: {e}"),
                        )),
                    )
                    .await?;
                return Ok((q, None));
            }
        };
        // Checked once: the prepared query is what runs.
        let (q, prepared) = match engine.hub.prepare(m, body).await {
            Ok(prepared) => (
                s.store.transition(&q.id, QueryState::Checked, None).await?,
                Some(prepared),
            ),
            Err(HubError::Refused { refusal, node }) => {
                let detail = refusal_detail(&refusal, node.as_deref());
                let q = s
                    .store
                    .transition(&q.id, QueryState::Refused, Some(&detail))
                    .await?;
                (q, None)
            }
            Err(e) => {
                let detail = match e {
                    HubError::BadInput(m) => failure(FailureKind::BadInput, m),
                    other => failure(FailureKind::Failed, other.to_string()),
                };
                let q = s
                    .store
                    .transition(&q.id, QueryState::Failed, Some(&detail))
                    .await?;
                (q, None)
            }
        };
        let running = prepared.map(|prepared| {
            // Registered before the run starts, so a cancel that comes
            // before the run's first step is not lost.
            let progress = Arc::new(Progress::default());
            if let Ok(mut p) = s.progress.lock() {
                p.insert(q.id.clone(), progress.clone());
            }
            tokio::spawn(s.clone().run(
                q.clone(),
                prepared,
                body.deliver.clone(),
                engine,
                place,
                progress,
            ))
        });
        Ok((q, running))
    }

    /// [`HubState::submit`] in a task of its own: a caller that goes away
    /// mid-submit (a closed connection drops its handler) leaves no query
    /// half-recorded.
    pub(super) async fn submit_detached(
        self: &Arc<Self>,
        m: String,
        name: String,
        body: api::QueryRequest,
    ) -> Result<(QueryRecord, Option<tokio::task::JoinHandle<()>>), ApiError> {
        let s = self.clone();
        tokio::spawn(async move { s.submit(&m, &name, &body).await })
            .await
            .map_err(|e| failed(format!("the submit stopped: {e}")))?
    }

    /// Asks running query `id` to stop (see
    /// [`airlock_hub::Progress::cancel`]); the caller has checked it is its
    /// own. A query that has ended is left as it is.
    pub(super) fn cancel(&self, id: &str) {
        if let Ok(p) = self.progress.lock() {
            if let Some(p) = p.get(id) {
                p.cancel();
            }
        }
    }

    /// The stored result of released query `id` as Arrow IPC bytes, read
    /// for its schema only (no fetch is audited: no row leaves the hub).
    pub(super) async fn fetch_schema(&self, id: &str) -> Result<Vec<u8>, ApiError> {
        self.store
            .result(id)
            .await?
            .ok_or_else(|| not_found("result"))
    }

    /// The released result of query `id` as Arrow IPC bytes, for `m` (who
    /// needs the `receive` ability), its fetch audited: the one read of a
    /// result for REST and Flight SQL alike.
    pub(super) async fn fetch_result(&self, m: &str, id: &str) -> Result<Vec<u8>, ApiError> {
        let s = self;
        let (q, collab) = visible_query(s, m, id).await?;
        require(&collab, m, Ability::Receive, "read results")?;
        // A result past its retention period is deleted now rather than served.
        expire(&s.store, &collab).await?;
        let q = s.store.query(id).await?.unwrap_or(q);
        match q.result_place() {
            Some(ResultPlace::Deleted) => {
                return Err(ApiError(
                    StatusCode::GONE,
                    ErrorCode::Expired,
                    airlock_store::RESULT_DELETED.to_string(),
                ))
            }
            Some(ResultPlace::Delivered(d)) => {
                return Err(ApiError(
                    StatusCode::GONE,
                    ErrorCode::Delivered,
                    d.to_string(),
                ))
            }
            Some(ResultPlace::Stored) | None => {}
        }
        if q.state != QueryState::Released {
            return Err(ApiError(
                StatusCode::CONFLICT,
                ErrorCode::NotReady,
                format!("the query is {}, not released", q.state.as_str()),
            ));
        }
        let bytes = s
            .store
            .result(id)
            .await?
            .ok_or_else(|| not_found("result"))?;
        let _ = s
            .store
            .record(
                &q.collab,
                m,
                &AuditEvent::ResultDelivered {
                    query: id.to_string(),
                    result_sha256: hex::encode(sha2::Sha256::digest(&bytes)),
                    by: DeliveredBy::Fetched {
                        bytes: bytes.len() as u64,
                    },
                },
            )
            .await;
        Ok(bytes)
    }
}

/// Asks a running query of the caller's to stop.
pub(super) async fn cancel_query(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<QueryView>, ApiError> {
    let (q, collab) = visible_query(&s, &m, &id).await?;
    if q.member != m {
        return Err(forbidden(format!(
            "only the member who submitted query {id} may cancel it"
        )));
    }
    s.cancel(&id);
    Ok(Json(s.view_for(&q, &collab, &m)))
}

pub(super) async fn list_queries(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Vec<QueryView>>, ApiError> {
    let (_, collab) = s.visible(&m, &name).await?;
    let qs = s.store.queries(&name).await?;
    Ok(Json(
        qs.iter()
            .filter(|q| q.member == m)
            .map(|q| s.view_for(q, &collab, &m))
            .collect(),
    ))
}

/// What the caller may still spend of the collaboration's privacy budget.
pub(super) async fn get_budget(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<api::BudgetView>, ApiError> {
    s.visible(&m, &name).await?;
    let collab = crate::ledger::remaining(&s.store, &name, None).await?;
    let mine = crate::ledger::remaining(&s.store, &name, Some(&m)).await?;
    Ok(Json(api::BudgetView::new(&name, &m, collab, mine)))
}

/// The query `id` if `member` submitted it or may receive its results.
pub(super) async fn visible_query(
    s: &HubState,
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

pub(super) async fn get_query(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<QueryView>, ApiError> {
    let (q, collab) = visible_query(&s, &m, &id).await?;
    Ok(Json(s.view_for(&q, &collab, &m)))
}

/// `?format=` of a result.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ResultFormat {
    #[serde(default)]
    format: Option<String>,
}

pub(super) async fn get_result(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
    Query(f): Query<ResultFormat>,
) -> Result<Response, ApiError> {
    let format = f.format.as_deref().unwrap_or("arrow");
    if !["arrow", "json", "csv", "parquet"].contains(&format) {
        return Err(bad_input("format must be one of arrow, json, csv, parquet"));
    }
    let bytes = s.fetch_result(&m, &id).await?;
    if format == "arrow" {
        return Ok((
            [(header::CONTENT_TYPE, "application/vnd.apache.arrow.stream")],
            Bytes::from(bytes),
        )
            .into_response());
    }
    let r = crate::results::decode(bytes).map_err(failed)?;
    let attachment = |ext: &str| format!("attachment; filename=\"airlock-{id}.{ext}\"");
    Ok(match format {
        "json" => Json(crate::results::table_json(&r).map_err(failed)?).into_response(),
        "csv" => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
                (header::CONTENT_DISPOSITION, attachment("csv")),
            ],
            crate::results::csv(&r).map_err(failed)?,
        )
            .into_response(),
        _ => (
            [
                (
                    header::CONTENT_TYPE,
                    "application/vnd.apache.parquet".to_string(),
                ),
                (header::CONTENT_DISPOSITION, attachment("parquet")),
            ],
            crate::results::parquet(&r).map_err(failed)?,
        )
            .into_response(),
    })
}

/// The audit chain verified with `airlock audit verify`'s check.
pub(super) async fn verify_audit(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<api::AuditVerification>, ApiError> {
    s.visible(&m, &name).await?;
    let entries = s.store.audit(&name).await?;
    let verdict = airlock_store::verify_chain(&entries);
    Ok(Json(api::AuditVerification {
        entries: entries.len(),
        head: entries.last().map(|e| e.hash.clone()).unwrap_or_default(),
        verified: verdict.is_ok(),
        broken: verdict.err().map(|b| b.to_string()),
    }))
}

/// `?format=&from_ms=&to_ms=` of the record of processing.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RecordsQuery {
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    from_ms: Option<i64>,
    #[serde(default)]
    to_ms: Option<i64>,
}

/// The record of processing, as `airlock records` builds it.
pub(super) async fn get_records(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<RecordsQuery>,
) -> Result<Response, ApiError> {
    let (_, collab) = s.visible(&m, &name).await?;
    let entries = s.store.audit(&name).await?;
    let record = crate::records::build(
        &collab,
        &entries,
        q.from_ms.unwrap_or(0),
        q.to_ms.unwrap_or_else(airlock_store::now_ms),
    )
    .map_err(failed)?;
    Ok(match q.format.as_deref() {
        None | Some("json") => Json(record).into_response(),
        Some("md") => (
            [
                (
                    header::CONTENT_TYPE,
                    "text/markdown; charset=utf-8".to_string(),
                ),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"records-{name}.md\""),
                ),
            ],
            crate::records::markdown(&record),
        )
            .into_response(),
        Some(_) => return Err(bad_input("format must be json or md")),
    })
}

pub(super) async fn get_audit(
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
