//! Policy sync: bringing every node of a collaboration to one approved
//! version and building the [`Hub`] that runs its queries, then relaying
//! the collaboration secret sealed from one node to the others.
//!
//! ```text
//!  approved version ─▶ install on every provider's node (in parallel) ─▶ schemas
//!        └ any node refuses ─▶ audit policy.sync_failed, each member sees why only for its own node
//!  all took it ─▶ audit policy.synced ─▶ nodes lacking the secret? ─▶ hello (X25519 keys)
//!        ─▶ one node seals the secret to each ─▶ each opens it ─▶ audit secret.distributed
//! ```
//!
//! The hub only relays: it never holds the secret (each blob is sealed to
//! one recipient's key and bound to the collaboration and recipient), and
//! a node installs a version only with its own member's signature, which
//! the hub passes on and cannot make. Nodes are reached through the
//! [`NodeAdmin`] port and the chain through [`AuditLog`], so sync is tested
//! without sockets.

use std::collections::{BTreeMap, HashMap};

use airlock_policy::Collaboration;
use airlock_protocol::admin::{
    Hello, Install, Installed, Recipient, SealedSecrets, SecretGenerate, SecretInstall,
};
use airlock_protocol::AuditEvent;
use datafusion::arrow::datatypes::SchemaRef;
use futures::future::BoxFuture;

use crate::{Hub, NodeFailure};

/// Where the hub appends its audit entries. An entry that cannot be
/// written does not stop the step it records.
pub trait AuditLog: Send + Sync {
    /// Appends an entry by the hub to `collab`'s chain.
    fn audit<'a>(&'a self, collab: &'a str, event: AuditEvent)
        -> BoxFuture<'a, Result<(), String>>;
}

/// How the hub administers members' nodes.
pub trait NodeAdmin: Send + Sync {
    /// Who `member`'s node is (its X25519 key, what it holds).
    fn hello<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<Hello, NodeFailure>>;
    /// Installs a version on `member`'s node.
    fn install<'a>(
        &'a self,
        member: &'a str,
        install: &'a Install,
    ) -> BoxFuture<'a, Result<Installed, NodeFailure>>;
    /// Asks `member`'s node to seal the collaboration secret to others.
    fn seal_secret<'a>(
        &'a self,
        member: &'a str,
        request: &'a SecretGenerate,
    ) -> BoxFuture<'a, Result<SealedSecrets, NodeFailure>>;
    /// Hands `member`'s node a secret sealed to it.
    fn open_secret<'a>(
        &'a self,
        member: &'a str,
        request: &'a SecretInstall,
    ) -> BoxFuture<'a, Result<(), NodeFailure>>;
}

/// One problem of installing a version on the nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncError {
    /// The member whose node it concerns, who alone sees `detail`.
    pub member: Option<String>,
    /// What every member may read (no path, no fact about files).
    pub shared: String,
    /// The node's own reason, for its member.
    pub detail: String,
}

impl SyncError {
    /// A problem every member may read.
    pub fn shared(text: String) -> Self {
        SyncError {
            member: None,
            shared: text,
            detail: String::new(),
        }
    }

    /// The errors as `member` may read them.
    pub fn visible(errors: &[SyncError], member: &str) -> Vec<String> {
        errors
            .iter()
            .map(|e| match &e.member {
                Some(m) if m == member => e.detail.clone(),
                _ => e.shared.clone(),
            })
            .collect()
    }
}

/// The version to install: its text as every member approved it, who
/// applied it, and each member's signature of it.
#[derive(Debug, Clone)]
pub struct Version<'a> {
    /// Collaboration name (the audit chain's key).
    pub name: &'a str,
    /// Policy version.
    pub version: i64,
    /// The collaboration file.
    pub toml: &'a str,
    /// The member who applied it.
    pub applied_by: &'a str,
    /// Member → Ed25519 signature (hex) of this version.
    pub approvals: BTreeMap<String, String>,
}

impl Hub {
    /// Installs `version` of `collab` on every provider's node and relays
    /// the secret where it is missing (see the module header); returns the
    /// hub over the schemas the nodes reported, with `limits` and
    /// `executor_memory` bytes for its executor.
    pub async fn sync(
        collab: Collaboration,
        version: Version<'_>,
        admin: &dyn NodeAdmin,
        audit: &dyn AuditLog,
        limits: airlock_guard::Limits,
        executor_memory: usize,
    ) -> Result<Hub, Vec<SyncError>> {
        let providers: Vec<String> = collab.providers();
        let install = Install {
            version: version.version,
            toml: version.toml.to_string(),
            applied_by: version.applied_by.to_string(),
            approvals: version.approvals.clone(),
        };
        let mut errors = Vec::new();
        let mut schemas: HashMap<String, SchemaRef> = HashMap::new();
        let mut with_secret = Vec::new();
        let mut without_secret = Vec::new();
        let pushes = providers.iter().map(|m| {
            let install = &install;
            async move { (m.clone(), admin.install(m, install).await) }
        });
        for (m, r) in futures::future::join_all(pushes).await {
            match r {
                Ok(inst) => {
                    for (table, frame) in inst.schemas {
                        match airlock_protocol::wire::decode_partitions(frame.0) {
                            Ok((s, _)) => {
                                schemas.insert(table, s);
                            }
                            Err(_) => errors.push(SyncError::shared(format!(
                                "the node of '{m}' sent an unreadable schema"
                            ))),
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
                        version.version
                    ),
                    detail: format!(
                        "the node of '{m}' did not take version {}: {e}",
                        version.version
                    ),
                    member: Some(m.clone()),
                }),
            }
        }
        if !errors.is_empty() {
            let _ = audit
                .audit(
                    version.name,
                    AuditEvent::PolicySyncFailed {
                        version: version.version,
                        errors: errors.iter().map(|e| e.shared.clone()).collect(),
                    },
                )
                .await;
            return Err(errors);
        }
        let _ = audit
            .audit(
                version.name,
                AuditEvent::PolicySynced {
                    version: version.version,
                    nodes: providers.clone(),
                },
            )
            .await;
        if !without_secret.is_empty() {
            relay_secret(
                version.name,
                collab.id(),
                &with_secret,
                &without_secret,
                admin,
                audit,
            )
            .await
            .map_err(|e| vec![SyncError::shared(e)])?;
        }
        Ok(Hub::new(collab, &schemas)
            .map_err(|e| vec![SyncError::shared(e.to_string())])?
            .with_limits(limits, executor_memory))
    }
}

/// One contributing node makes (or already has) the secret and seals it
/// to the X25519 key of each node that lacks it; the hub only relays.
async fn relay_secret(
    name: &str,
    id: &str,
    with: &[String],
    without: &[String],
    admin: &dyn NodeAdmin,
    audit: &dyn AuditLog,
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
        let hello = admin
            .hello(r)
            .await
            .map_err(|e| format!("the node of '{r}': {e}"))?;
        list.push(Recipient {
            member: (*r).clone(),
            x25519: hello.x25519,
        });
    }
    let sealed = admin
        .seal_secret(
            generator,
            &SecretGenerate {
                collaboration: id.to_string(),
                recipients: list,
            },
        )
        .await
        .map_err(|e| format!("the node of '{generator}' did not seal the secret: {e}"))?;
    for (member, blob) in &sealed.sealed {
        admin
            .open_secret(
                member,
                &SecretInstall {
                    collaboration: id.to_string(),
                    from: generator.clone(),
                    sealed: blob.clone(),
                },
            )
            .await
            .map_err(|e| format!("the node of '{member}' did not open the secret: {e}"))?;
    }
    let _ = audit
        .audit(
            name,
            AuditEvent::SecretDistributed {
                generated_by: generator.clone(),
                sealed_to: sealed.sealed.keys().cloned().collect(),
            },
        )
        .await;
    Ok(())
}
