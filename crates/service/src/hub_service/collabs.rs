//! Collaborations, their approvals, templates, exported metadata and
//! dataset updates over REST.

use airlock_protocol::audit::TemplateDecision;
use airlock_protocol::AuditEvent;
use std::collections::BTreeSet;

use airlock_policy::{Ability, Collaboration};
use airlock_store::ApprovalRecord;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use sha2::Digest as _;

use crate::api::{self, ErrorCode};

use super::state::*;
use super::sync::*;

/// What `member` is asked to approve in collaboration `rec`.
pub(super) fn approval_view(
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

pub(super) async fn openapi() -> Json<serde_json::Value> {
    Json(api::openapi())
}

pub(super) async fn whoami(Extension(Caller(m)): Extension<Caller>) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "member": m }))
}

pub(super) async fn list_collabs(
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

pub(super) async fn show_collab(
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
    let errs = airlock_hub::SyncError::visible(&errs, &m);
    Ok(Json(s.collab_view(&rec, &collab, errs).await?))
}

pub(super) async fn create_collab(
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
                ErrorCode::Conflict,
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

pub(super) async fn apply_collab(
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
    let max = s.limits.max_versions_per_collaboration;
    if current.version >= max {
        return Err(ApiError(
            StatusCode::CONFLICT,
            ErrorCode::Limit,
            format!(
                "collaboration '{name}' has {max} versions, the hub's limit (max_versions_per_collaboration); create a new collaboration instead"
            ),
        ));
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

/// The approval record of `member`'s signature on version `rec`.
pub(super) fn approved(
    rec: &airlock_store::CollabRecord,
    member: &str,
    signature: String,
) -> ApprovalRecord {
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
pub(super) async fn list_approvals(
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
pub(super) async fn show_approval(
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

/// `POST /v1/collaborations/{name}/approval`.
pub(super) async fn decide_approval(
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
            ErrorCode::Conflict,
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

/// The collaboration's public metadata, signed by this hub.
pub(super) async fn export_metadata(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<crate::metadata::SignedDocument>, ApiError> {
    use crate::metadata::{MemberMeta, Metadata, NodeMeta, TableMeta, TemplateMeta};
    let (rec, collab) = s.visible(&m, &name).await?;
    let engine = s
        .engine(&name)
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NotReady, e))?;
    let mut members = Vec::new();
    for member in &collab.config().members {
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
        .config()
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
        .config()
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
        .record(
            &name,
            &m,
            &AuditEvent::MetadataExported {
                version: rec.version,
                sha256: rec.sha256.clone(),
            },
        )
        .await?;
    Ok(Json(doc))
}

pub(super) async fn list_templates(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Vec<api::TemplateView>>, ApiError> {
    let (_, collab) = s.visible(&m, &name).await?;
    Ok(Json(
        collab
            .config()
            .templates
            .iter()
            .map(|t| api::TemplateView::new(&collab, t))
            .collect(),
    ))
}

pub(super) async fn approve_template(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath((name, template)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    set_approval(s, m, name, template, true).await
}

pub(super) async fn revoke_template(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    UrlPath((name, template)): UrlPath<(String, String)>,
) -> Result<Response, ApiError> {
    set_approval(s, m, name, template, false).await
}

/// Approves (after static verification) or revokes a template for the
/// calling member: a new policy version that changes only the caller's own
/// `[approvals]` entry, pushed to every node and audited.
pub(super) async fn set_approval(
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
            .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NotReady, e))?;
        match engine.hub.verify_template(&t).await {
            Ok(n) => checks = n,
            Err(reasons) => {
                let _ = s
                    .store
                    .record(
                        &name,
                        &m,
                        &AuditEvent::TemplateApprovalRefused {
                            template: t.name.clone(),
                            hash: hash.clone(),
                            reasons: reasons.clone(),
                        },
                    )
                    .await;
                return Ok((
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Json(serde_json::json!({
                        "code": ErrorCode::ApprovalRefused,
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
        .record(&name, &m, &{
            let decision = TemplateDecision {
                template: t.name.clone(),
                hash: hash.clone(),
                version: rec.version,
                checks: checks as u64,
            };
            if approve {
                AuditEvent::TemplateApproved(decision)
            } else {
                AuditEvent::TemplateRevoked(decision)
            }
        })
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

/// Applies `u` to one collaboration file if `member` owns the dataset
/// `u.dataset` in it; returns the new text, or `None` if it does not use it.
pub(super) fn patch_dataset(
    text: &str,
    member: &str,
    u: &api::DatasetUpdate,
) -> Result<Option<String>, String> {
    use toml_edit::{DocumentMut, Item};
    // Edited in place, as template approvals are: comments, order and
    // layout of the owner's file survive the change.
    let mut doc: DocumentMut = text
        .parse()
        .map_err(|e: toml_edit::TomlError| e.to_string())?;
    let str_of = |t: &dyn toml_edit::TableLike, key: &str| {
        t.get(key).and_then(Item::as_str).map(str::to_string)
    };
    let mut names = Vec::new();
    if let Some(datasets) = doc.get("datasets").and_then(Item::as_array_of_tables) {
        for d in datasets.iter() {
            let owned = str_of(d, "owner").as_deref() == Some(member);
            let name = str_of(d, "name");
            if owned && name.as_deref() == Some(u.dataset.as_str()) {
                names.extend(name);
            }
        }
    }
    if names.is_empty() {
        return Ok(None);
    }
    if let Some(k) = u.min_distinct_identities {
        let k = i64::try_from(k).map_err(|_| "min_distinct_identities is too large".to_string())?;
        if let Some(tables) = doc.get_mut("tables").and_then(Item::as_array_of_tables_mut) {
            for t in tables.iter_mut() {
                let uses = str_of(t, "dataset").is_some_and(|d| names.contains(&d));
                if !uses {
                    continue;
                }
                if let Some(rule) = t.get_mut("rule").and_then(Item::as_table_like_mut) {
                    if str_of(rule, "type").as_deref() == Some("aggregation") {
                        rule.insert("min_distinct_identities", toml_edit::value(k));
                    }
                }
            }
        }
    }
    Ok(Some(doc.to_string()))
}

pub(super) async fn update_dataset(
    State(s): State<Shared>,
    Extension(Caller(m)): Extension<Caller>,
    u: Result<Json<api::DatasetUpdate>, JsonRejection>,
) -> Result<Json<Vec<api::DatasetUpdated>>, ApiError> {
    let Json(u) = u.map_err(rejected)?;
    if u.min_distinct_identities.is_none() {
        return Err(bad_input(
            "nothing to change: give min_distinct_identities (a dataset's location is changed in its owner's node catalog)",
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
        for d in &c.config().datasets {
            if d.owner != m && d.name == u.dataset {
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
                "dataset '{}' belongs to {}: only its owner may change it",
                u.dataset,
                owners.join(", ")
            )));
        }
        return Err(not_found("dataset of yours by this name"));
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

#[cfg(test)]
mod tests {
    use super::patch_dataset;
    use crate::api::DatasetUpdate;

    const FILE: &str = r#"# the owner's own notes
[[datasets]]
name = "crm"
owner = "publisher"
# renamed in May

[[datasets]]
name = "shop"
owner = "advertiser"

[[tables]]
alias = "crm"
dataset = "crm"
rule = { type = "aggregation", min_distinct_identities = 50 }

[[tables]]
alias = "shop"
dataset = "shop"
rule = { type = "aggregation", min_distinct_identities = 50 }
"#;

    #[test]
    fn a_dataset_update_edits_the_owners_entries_in_place() {
        let u = DatasetUpdate {
            dataset: "crm".into(),
            min_distinct_identities: Some(80),
        };
        let out = patch_dataset(FILE, "publisher", &u)
            .expect("patched")
            .expect("uses it");
        // Comments and layout survive; only the tables over the owner's
        // dataset get the new k.
        assert!(out.starts_with("# the owner's own notes\n"), "{out}");
        assert!(out.contains("# renamed in May"), "{out}");
        assert_eq!(
            out.matches("min_distinct_identities = 80").count(),
            1,
            "{out}"
        );
        assert_eq!(
            out.matches("min_distinct_identities = 50").count(),
            1,
            "{out}"
        );
        // A member that owns nothing there changes nothing, nor does the
        // owner of another dataset.
        assert!(patch_dataset(FILE, "nobody", &u).expect("ok").is_none());
        assert!(patch_dataset(FILE, "advertiser", &u).expect("ok").is_none());
    }
}
