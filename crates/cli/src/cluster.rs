//! An in-process clean room: one node per contributing member and a hub,
//! talking only through fragments (JSON) and Arrow IPC bytes.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use airlock_hub::{Hub, HubError, NoLedger, NodeClient, NodeFailure, Released};
use airlock_node::{Node, NodeError};
use airlock_policy::{Ability, Collaboration, QuerySpec, Template};
use airlock_protocol::wire::Partitions;
use airlock_protocol::{Fragment, PsiRequest, PsiResponse};
use airlock_service::ledger::{open_embedded, NodeStoreLedger, StoreLedger};
use airlock_store::Store;
use datafusion::arrow::datatypes::SchemaRef;
use futures::future::BoxFuture;

/// Errors of the CLI are the hub's: refused, bad input, or failed.
pub type CliError = HubError;

/// The process exit code of an error: 3 refused, 2 bad input, 1 anything else.
pub fn exit_code(e: &CliError) -> i32 {
    match e {
        HubError::BadInput(_) => 2,
        HubError::Refused { .. } => 3,
        HubError::Failed(_) => 1,
    }
}

/// A copy of every byte stream that left a node, for inspection in tests.
pub type Tap = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

/// The members' nodes, reached by direct calls.
pub struct LocalNodes {
    nodes: HashMap<String, Node>,
    tap: Option<Tap>,
    /// When standard error is a terminal: when the current crypto-mode
    /// query started, for its progress line.
    steps: Option<Mutex<Option<Instant>>>,
}

impl NodeClient for LocalNodes {
    fn execute<'a>(
        &'a self,
        member: &'a str,
        fragment: &'a Fragment,
    ) -> BoxFuture<'a, Result<(SchemaRef, Partitions), NodeFailure>> {
        Box::pin(async move {
            // The in-process boundary is still bytes, as a remote hub's is:
            // the node decodes the fragment and encodes its rows.
            let fragment_json = serde_json::to_vec(fragment)
                .map_err(|e| NodeFailure::Failed(format!("cannot encode a fragment: {e}")))?;
            let Some(node) = self.nodes.get(member) else {
                return Err(NodeFailure::Failed(format!(
                    "no node for member '{member}'"
                )));
            };
            match node.execute(&fragment_json).await {
                Ok(bytes) => {
                    if let Some(tap) = &self.tap {
                        if let Ok(mut t) = tap.lock() {
                            t.push((member.to_string(), bytes.clone()));
                        }
                    }
                    airlock_protocol::wire::decode_partitions(bytes).map_err(|_| {
                        NodeFailure::Failed(format!(
                            "the node of '{member}' sent an unreadable result"
                        ))
                    })
                }
                Err(NodeError::Refused(r)) => Err(NodeFailure::Refused(r)),
                Err(e) => Err(NodeFailure::Failed(e.to_string())),
            }
        })
    }
    fn psi<'a>(
        &'a self,
        member: &'a str,
        request: &'a PsiRequest,
    ) -> BoxFuture<'a, Result<PsiResponse, NodeFailure>> {
        Box::pin(async move {
            let request_json = serde_json::to_vec(request)
                .map_err(|e| NodeFailure::Failed(format!("cannot encode a step: {e}")))?;
            let Some(node) = self.nodes.get(member) else {
                return Err(NodeFailure::Failed(format!(
                    "no node for member '{member}'"
                )));
            };
            match node.psi(&request_json).await {
                Ok(bytes) => {
                    if let Some(tap) = &self.tap {
                        if let Ok(mut t) = tap.lock() {
                            t.push((member.to_string(), bytes.clone()));
                        }
                    }
                    serde_json::from_slice(&bytes).map_err(|_| {
                        NodeFailure::Failed(format!(
                            "the node of '{member}' sent a malformed answer"
                        ))
                    })
                }
                Err(NodeError::Refused(r)) => Err(NodeFailure::Refused(r)),
                Err(e) => Err(NodeFailure::Failed(e.to_string())),
            }
        })
    }

    /// On a terminal, one line on standard error that each step replaces,
    /// with the time since the query's first step; cleared at its end.
    fn crypto_step(&self, step: Option<&airlock_hub::CryptoStep>) {
        let Some(Ok(mut started)) = self.steps.as_ref().map(|s| s.lock()) else {
            return;
        };
        match step {
            Some(s) => {
                let t = started.get_or_insert_with(Instant::now).elapsed();
                eprint!("\r      {:<68} {:>6.1} s", s.to_string(), t.as_secs_f64());
            }
            None => {
                *started = None;
                eprint!("\r{:<84}\r", "");
            }
        }
        let _ = std::io::stderr().flush();
    }
}

/// A hub and its nodes in one process.
pub struct Cluster {
    /// The hub.
    pub hub: Hub,
    /// The nodes.
    pub nodes: LocalNodes,
    /// The embedded privacy-budget ledger beside the collaboration file,
    /// when the collaboration has a `[privacy]` budget.
    pub ledger: Option<Store>,
}

/// Where the node of `member` keeps its own state (its privacy-budget
/// ledger) when the collaboration in `data_dir` runs in one process: under
/// `$AIRLOCK_STATE_DIR` (by default `$XDG_STATE_HOME/airlock`, or
/// `~/.local/state/airlock`), in `nodes/` a directory named by a hash of
/// the data directory (as its canonical path), the collaboration's id and
/// the member. The same data opened by the same user always finds its
/// ledger; deleting files beside the collaboration does not reset it.
pub fn local_node_state(
    data_dir: &Path,
    collab: &Collaboration,
    member: &str,
) -> Result<std::path::PathBuf, CliError> {
    let root = match std::env::var_os("AIRLOCK_STATE_DIR").filter(|v| !v.is_empty()) {
        Some(d) => std::path::PathBuf::from(d),
        None => match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
            Some(d) => std::path::PathBuf::from(d).join("airlock"),
            None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
                Some(h) => std::path::PathBuf::from(h).join(".local/state/airlock"),
                None => return Err(CliError::BadInput(
                    "no state directory for the members' nodes: set AIRLOCK_STATE_DIR (or HOME)"
                        .into(),
                )),
            },
        },
    };
    let data = std::fs::canonicalize(data_dir)
        .map_err(|e| CliError::BadInput(format!("cannot resolve {}: {e}", data_dir.display())))?;
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in [
        data.to_string_lossy().as_bytes(),
        collab.id().as_bytes(),
        member.as_bytes(),
    ] {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part);
    }
    Ok(root.join("nodes").join(&hex::encode(h.finalize())[..32]))
}

/// Deletes the state of every in-process node of the collaboration file
/// `path` ([`local_node_state`]): their ledgers start whole. Only for a
/// collaboration whose data was just written afresh (the demo's).
pub fn forget_local_nodes(path: &Path) -> Result<(), CliError> {
    let collab = load_collaboration(path)?;
    if collab.config().privacy.is_none() {
        return Ok(());
    }
    let dir = config_dir(path);
    for m in collab.providers() {
        let state = local_node_state(dir, &collab, &m)?;
        if state.exists() {
            std::fs::remove_dir_all(&state)
                .map_err(|e| CliError::Failed(format!("removing {}: {e}", state.display())))?;
        }
    }
    Ok(())
}

/// Reads and validates a collaboration file.
pub fn load_collaboration(path: &Path) -> Result<Collaboration, CliError> {
    read_collaboration(path).map(|(_, c)| c)
}

/// Reads and validates a collaboration file: its text and what it says.
fn read_collaboration(path: &Path) -> Result<(String, Collaboration), CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::BadInput(format!("cannot read {}: {e}", path.display())))?;
    let collab = Collaboration::from_toml(&text, &path.display().to_string())
        .map_err(|e| CliError::BadInput(e.to_string()))?;
    Ok((text, collab))
}

/// The directory of the collaboration file `path` (its data and catalog).
fn config_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

impl Cluster {
    /// Opens the collaboration at `path`: a node for every member with the
    /// `provide` ability, and a hub with the schemas they publish.
    pub async fn open(path: &Path, tap: Option<Tap>) -> Result<Cluster, CliError> {
        Self::open_pushdown(path, tap, true).await
    }

    /// [`Cluster::open`], with the nodes' pushdown into their sources off
    /// when `pushdown` is false (the benchmark's baseline).
    pub async fn open_pushdown(
        path: &Path,
        tap: Option<Tap>,
        pushdown: bool,
    ) -> Result<Cluster, CliError> {
        let (text, collab) = read_collaboration(path)?;
        let dir = config_dir(path);
        let ledger = match &collab.config().privacy {
            None => None,
            Some(_) => Some(
                open_embedded(dir, &collab, &text)
                    .await
                    .map_err(|e| CliError::Failed(format!("the privacy budget ledger: {e}")))?,
            ),
        };
        let mut nodes = HashMap::new();
        let mut schemas = HashMap::new();
        for m in &collab.config().members {
            if !m.abilities.contains(&Ability::Provide) {
                continue;
            }
            let mut node = Node::open_pushdown(&collab, dir, &m.name, pushdown)
                .await
                .map_err(|e| match e {
                    NodeError::Config(c) => CliError::BadInput(c.to_string()),
                    other => CliError::Failed(format!("node of '{}': {other}", m.name)),
                })?;
            // Each owner's node keeps its own ledger in its own state,
            // never beside the collaboration file (whoever can delete
            // that file must not refill the budget).
            if collab.config().privacy.is_some() {
                let state = local_node_state(dir, &collab, &m.name)?;
                if let Some(l) = NodeStoreLedger::open(&state, &collab, &text)
                    .await
                    .map_err(|e| {
                        CliError::Failed(format!(
                            "the privacy budget ledger of the node of '{}' ({}): {e}",
                            m.name,
                            state.display()
                        ))
                    })?
                {
                    node = node.with_ledger(Arc::new(l));
                }
            }
            schemas.extend(node.table_schemas().clone());
            nodes.insert(m.name.clone(), node);
        }
        let hub = Hub::new(collab, &schemas)?;
        Ok(Cluster {
            hub,
            nodes: LocalNodes {
                nodes,
                tap,
                steps: std::io::stderr().is_terminal().then(|| Mutex::new(None)),
            },
            ledger,
        })
    }

    /// Runs a query as `member`.
    pub async fn query(&self, member: &str, sql: &str) -> Result<Released, CliError> {
        self.query_spec(member, &QuerySpec::sql(sql)).await
    }

    /// Runs SQL or a template run as `member`.
    pub async fn query_spec(&self, member: &str, spec: &QuerySpec) -> Result<Released, CliError> {
        let id = airlock_store::random_hex(16).map_err(|e| CliError::Failed(e.to_string()))?;
        match &self.ledger {
            None => {
                self.hub
                    .query_spec(&id, member, spec, &self.nodes, &NoLedger)
                    .await
            }
            Some(store) => {
                let ledger = StoreLedger::new(store.clone(), self.hub.collaboration().name(), &id);
                self.hub
                    .query_spec(&id, member, spec, &self.nodes, &ledger)
                    .await
            }
        }
    }

    /// Static verification of a template (see `Guard::verify_template`).
    pub async fn verify_template(&self, template: &Template) -> Result<usize, Vec<String>> {
        self.hub.verify_template(template).await
    }

    /// What remains of the privacy budget: the collaboration's, and what
    /// `member` may still spend. `None` without a budget.
    pub async fn budget(
        &self,
        member: &str,
    ) -> Result<Option<airlock_service::api::BudgetView>, CliError> {
        if self.hub.collaboration().member(member).is_none() {
            return Err(CliError::BadInput(format!(
                "'{member}' is not a member of collaboration '{}'",
                self.hub.collaboration().name()
            )));
        }
        let Some(store) = &self.ledger else {
            return Ok(None);
        };
        let name = self.hub.collaboration().name();
        let fail = |e: airlock_store::StoreError| CliError::Failed(e.to_string());
        let whole = airlock_service::ledger::remaining(store, name, None)
            .await
            .map_err(fail)?;
        let mine = airlock_service::ledger::remaining(store, name, Some(member))
            .await
            .map_err(fail)?;
        Ok(Some(airlock_service::api::BudgetView::new(
            name, member, whole, mine,
        )))
    }

    /// Checks a query as `member` and describes its plan.
    pub async fn check(&self, member: &str, sql: &str) -> Result<String, CliError> {
        let (_, plan) = self.hub.check(member, sql).await?;
        Ok(plan.to_string())
    }

    /// The first member with the `query` ability.
    pub fn default_querier(&self) -> Option<String> {
        self.hub
            .collaboration()
            .config()
            .members
            .iter()
            .find(|m| m.abilities.contains(&Ability::Query))
            .map(|m| m.name.clone())
    }
}
