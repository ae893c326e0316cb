//! Policy sync: building a collaboration's engine at its current version
//! from every node's view, and relaying the collaboration secret.

use airlock_protocol::AuditKind;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use airlock_hub::Hub;
use airlock_policy::Collaboration;
use base64::Engine as _;
use datafusion::arrow::datatypes::SchemaRef;

use crate::api::{self};
use crate::proto;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
use super::state::*;

impl HubState {
    /// Brings every node of a collaboration to its current policy version
    /// (install, then the sealed secret exchange) and builds its engine.
    pub(super) fn slot(&self, name: &str) -> EngineSlot {
        match self.engines.lock() {
            Ok(mut m) => m.entry(name.to_string()).or_default().clone(),
            Err(_) => EngineSlot::default(),
        }
    }

    /// Forgets a collaboration's engine: the next query syncs its nodes again.
    pub(super) async fn forget(&self, name: &str) {
        *self.slot(name).lock().await = None;
    }

    pub(super) async fn engine(&self, name: &str) -> Result<Arc<Engine>, String> {
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

    pub(super) async fn sync(
        &self,
        rec: &airlock_store::CollabRecord,
    ) -> Result<Engine, Vec<SyncError>> {
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
                    AuditKind::PolicySyncFailed.as_str(),
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
                AuditKind::PolicySynced.as_str(),
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
    pub(super) async fn distribute_secret(
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
                AuditKind::SecretDistributed.as_str(),
                "hub",
                serde_json::json!({"generated_by": generator, "sealed_to": sealed.sealed.keys().collect::<Vec<_>>()}),
            )
            .await;
        Ok(())
    }
}

pub(super) async fn after_change(s: &Shared, name: &str, member: &str) -> Vec<String> {
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
