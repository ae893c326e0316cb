//! The query lifecycle over REST: check, submit, run (fan-out, release or
//! delivery), progress, results and the audit chain.

use airlock_protocol::AuditKind;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use airlock_hub::HubError;
use airlock_policy::{Ability, Collaboration};
use airlock_store::{QueryRecord, QueryState, ResultPlace};
use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use base64::Engine as _;
use sha2::Digest as _;

use crate::api::{self, ErrorCode, FailureDetail, FailureKind, ProgressView, QueryView};

/// A failed query's stored detail.
fn failure(kind: FailureKind, message: impl Into<String>) -> String {
    FailureDetail {
        kind,
        message: message.into(),
    }
    .to_text()
}
use crate::links::Progress;
use crate::proto;

use super::state::*;

impl HubState {
    /// Sends a result to the querier's node, which writes it to its
    /// destination `dest`. On success the query becomes released with no
    /// copy kept by the hub, and the delivery is audited with the content
    /// hashes, in one transaction; returns true. On failure the failure is
    /// audited and the caller releases the result as usual (fetchable).
    pub(super) async fn deliver(
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
                        AuditKind::ResultDeliveryFailed.as_str(),
                        "hub",
                        serde_json::json!({"query": q.id, "destination": dest, "error": e}),
                    )
                    .await;
                false
            }
        }
    }

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

    pub(super) async fn run(
        self: Arc<Self>,
        q: QueryRecord,
        prepared: airlock_hub::Prepared,
        deliver: Option<String>,
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
                engine.hub.run(prepared, &links, &ledger),
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
                            AuditKind::FragmentsRan.as_str(),
                            "hub",
                            serde_json::json!({
                                "query": q.id,
                                "fragments": progress.fragments_done.load(Ordering::Relaxed),
                            }),
                        )
                        .await;
                    let rows = released.num_rows() as i64;
                    let delivered = match &deliver {
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
                .transition(
                    &q.id,
                    QueryState::Failed,
                    Some(&failure(FailureKind::Failed, m)),
                )
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
    match engine.hub.check_spec(&m, &body).await {
        Ok((_, plan)) => Ok(Json(api::CheckView {
            plan: plan.to_string(),
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
                    Some(&failure(
                        FailureKind::Failed,
                        format!("the collaboration is not ready: {e}"),
                    )),
                )
                .await?;
            return Ok((StatusCode::ACCEPTED, Json(s.view(&q))));
        }
    };
    // Checked once: the prepared query is what runs.
    let (q, prepared) = match engine.hub.prepare(&m, &body).await {
        Ok(prepared) => (
            s.store.transition(&q.id, QueryState::Checked, None).await?,
            Some(prepared),
        ),
        Err(HubError::Refused { refusal, node }) => {
            let detail = serde_json::json!({"refusal": refusal, "node": node}).to_string();
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
    if let Some(prepared) = prepared {
        tokio::spawn(
            s.clone()
                .run(q.clone(), prepared, body.deliver.clone(), engine, place),
        );
    }
    Ok((StatusCode::ACCEPTED, Json(s.view(&q))))
}

pub(super) async fn list_queries(
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

pub(super) async fn get_query(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<QueryView>, ApiError> {
    let (q, _) = visible_query(&s, &m, &id).await?;
    Ok(Json(s.view(&q)))
}

pub(super) async fn get_result(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(id): UrlPath<String>,
) -> Result<Response, ApiError> {
    let (q, collab) = visible_query(&s, &m, &id).await?;
    require(&collab, &m, Ability::Receive, "read results")?;
    // A result past its retention period is deleted now rather than served.
    expire(&s.store, &collab).await?;
    let q = s.store.query(&id).await?.unwrap_or(q);
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
        .result(&id)
        .await?
        .ok_or_else(|| not_found("result"))?;
    let _ = s
        .store
        .append_audit(
            &q.collab,
            AuditKind::ResultDelivered.as_str(),
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
