//! Policy sync over REST: a collaboration's engine at its current version,
//! once every member it involves approved that version; the install on the
//! nodes and the secret relay are the hub's ([`Hub::sync`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use airlock_hub::{Hub, SyncError, Version};
use airlock_policy::Collaboration;

use crate::api;

use super::ports::StorePort;
use super::state::*;

impl HubState {
    /// The slot holding a collaboration's engine (made empty if new).
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

    /// Brings every provider's node of a collaboration to the version of
    /// `rec`, once every member it involves approved it ([`Hub::sync`]:
    /// install, then the sealed secret relay), and builds its engine.
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
        let hub = Hub::sync(
            collab.clone(),
            Version {
                name: &rec.name,
                version: rec.version,
                toml: &rec.toml,
                applied_by: &rec.created_by,
                approvals: signatures,
            },
            &self.links,
            &StorePort(&self.store),
            self.limits.query.guard(),
            self.limits.executor_memory_bytes,
        )
        .await?;
        Ok(Engine {
            version: rec.version,
            id: collab.id().to_string(),
            hub,
        })
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
                SyncError::visible(&errs, member)
            }
        }
    }
}
