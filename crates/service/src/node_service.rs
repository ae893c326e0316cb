//! `airlock node serve`: a member's node as an Arrow Flight service over
//! mutual TLS.
//!
//! The node accepts calls only from hubs whose client certificate chains to
//! its CA *and* whose fingerprint is listed in `trusted_hubs`. It holds its
//! own copy of every collaboration installed on it (1:N: the same dataset,
//! read in place, serves each of them with its own rules, version and
//! secret), re-checks every fragment with its own rules, and refuses a
//! fragment planned under a policy version other than the one it holds.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use airlock_crypto::sealing::{self, NodeKeys, PublicKeyBytes};
use airlock_crypto::CollaborationSecret;
use airlock_node::{Node, NodeError};
use airlock_policy::{Collaboration, Control, Refusal};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::stream::{self, BoxStream, StreamExt};
use sha2::{Digest, Sha256};
use tonic::transport::Server;
use tonic::{Request, Response, Status, Streaming};

use crate::config::{read, NodeConfig};
use crate::proto::{self, action};
use crate::ServiceError;

struct Held {
    version: i64,
    sha256: String,
    node: Arc<Node>,
}

struct Inner {
    cfg: NodeConfig,
    /// Where the member's datasets are (read at start).
    catalog: airlock_node::catalog::Catalog,
    keys: NodeKeys,
    collabs: RwLock<HashMap<String, Arc<Held>>>,
}

/// A node service (cheap to clone).
#[derive(Clone)]
pub struct NodeService {
    inner: Arc<Inner>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `SHA256:<hex>` of a DER certificate, as `trusted_hubs` lists them.
pub fn der_fingerprint(der: &[u8]) -> String {
    format!("SHA256:{}", sha256_hex(der))
}

fn collab_dir(state: &Path, id: &str) -> PathBuf {
    // Ids are chosen by collaboration files; never use one as a path.
    state.join(&sha256_hex(id.as_bytes())[..32])
}

fn status_of(e: NodeError) -> Status {
    match e {
        NodeError::Refused(r) => Status::permission_denied(proto::refusal_message(&r)),
        NodeError::BadFragment(m) => Status::invalid_argument(m),
        NodeError::Config(c) => Status::failed_precondition(c.to_string()),
        NodeError::Execution => Status::internal(NodeError::Execution.to_string()),
        NodeError::Local(m) => Status::failed_precondition(m),
    }
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, Status> {
    serde_json::from_slice(body)
        .map_err(|e| Status::invalid_argument(format!("malformed {what} request: {e}")))
}

fn json_answer<T: serde::Serialize>(
    value: &T,
) -> Result<Response<BoxStream<'static, Result<arrow_flight::Result, Status>>>, Status> {
    let body = serde_json::to_vec(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(
        stream::once(async move { Ok(arrow_flight::Result { body: body.into() }) }).boxed(),
    ))
}

impl NodeService {
    /// Opens the node: loads its keys and every collaboration installed on
    /// it. A collaboration that no longer opens (data moved, column gone) is
    /// reported and left out; the others serve.
    pub async fn open(cfg: NodeConfig) -> Result<NodeService, ServiceError> {
        let keys = NodeKeys::load(&cfg.x25519_key)
            .map_err(|e| ServiceError::Config(format!("x25519 key: {e}")))?;
        std::fs::create_dir_all(&cfg.state_dir).map_err(|e| {
            ServiceError::Config(format!("cannot create {}: {e}", cfg.state_dir.display()))
        })?;
        let svc = NodeService {
            inner: Arc::new(Inner {
                catalog: cfg.catalog(),
                cfg,
                keys,
                collabs: RwLock::new(HashMap::new()),
            }),
        };
        let entries = std::fs::read_dir(&svc.inner.cfg.state_dir)
            .map_err(|e| ServiceError::Config(format!("state dir: {e}")))?;
        for entry in entries.flatten() {
            let dir = entry.path();
            if !dir.join("policy.toml").exists() {
                continue;
            }
            if let Err(e) = svc.load_installed(&dir).await {
                eprintln!(
                    "node {}: a collaboration in {} does not open and is not served: {e}",
                    svc.inner.cfg.member,
                    dir.display()
                );
            }
        }
        Ok(svc)
    }

    async fn load_installed(&self, dir: &Path) -> Result<(), ServiceError> {
        let toml = std::fs::read_to_string(dir.join("policy.toml"))
            .map_err(|e| ServiceError::Config(e.to_string()))?;
        let version: i64 = std::fs::read_to_string(dir.join("version"))
            .map_err(|e| ServiceError::Config(e.to_string()))?
            .trim()
            .parse()
            .map_err(|_| ServiceError::Config("malformed version file".into()))?;
        let collab = Collaboration::from_toml(&toml, "installed policy")
            .map_err(|e| ServiceError::Config(e.to_string()))?;
        let signature = std::fs::read_to_string(dir.join("approval.sig")).unwrap_or_default();
        let signature = Some(signature.trim()).filter(|s| !s.is_empty());
        let base = std::fs::read_to_string(dir.join("approval.base")).unwrap_or_default();
        let base = Some(base.trim()).filter(|s| !s.is_empty());
        self.check_approval(
            &collab,
            &sha256_hex(toml.as_bytes()),
            version,
            signature,
            base,
        )
        .map_err(|e| ServiceError::Config(e.message().to_string()))?;
        let secret = read_secret(dir)?;
        let node = Node::open_with_limits(
            &collab,
            &self.inner.catalog,
            &self.inner.cfg.member,
            secret,
            self.limits(),
        )
        .await
        .map_err(|e| ServiceError::Config(e.to_string()))?;
        let node = with_ledger(node, dir, &collab, &toml)
            .await
            .map_err(ServiceError::Config)?;
        self.put(collab.id(), version, sha256_hex(toml.as_bytes()), node);
        Ok(())
    }

    fn put(&self, id: &str, version: i64, sha256: String, node: Node) {
        if let Ok(mut m) = self.inner.collabs.write() {
            m.insert(
                id.to_string(),
                Arc::new(Held {
                    version,
                    sha256,
                    node: Arc::new(node),
                }),
            );
        }
    }

    fn held(&self, id: &str) -> Option<Arc<Held>> {
        self.inner.collabs.read().ok()?.get(id).cloned()
    }

    /// The node's limits as its engine takes them.
    fn limits(&self) -> airlock_node::NodeLimits {
        let l = &self.inner.cfg.limits;
        airlock_node::NodeLimits {
            query: l.query.guard(),
            memory_bytes: l.memory_bytes,
            max_rows_per_fragment: l.max_rows_per_fragment,
        }
    }

    /// The member this node serves.
    pub fn member(&self) -> &str {
        &self.inner.cfg.member
    }

    /// The node's X25519 public key fingerprint.
    pub fn fingerprint(&self) -> String {
        sealing::fingerprint(&self.inner.keys.public())
    }

    /// Refuses callers whose client certificate is not a trusted hub's.
    fn authorise<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let certs = req
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let first = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let fp = der_fingerprint(first.as_ref());
        if self.inner.cfg.trusted_hubs.iter().any(|t| t == &fp) {
            Ok(())
        } else {
            Err(Status::permission_denied(
                "this client certificate is not a trusted hub of this node",
            ))
        }
    }

    fn hello(&self) -> proto::Hello {
        let mut collaborations: Vec<proto::InstalledSummary> = self
            .inner
            .collabs
            .read()
            .map(|m| {
                m.iter()
                    .map(|(id, h)| proto::InstalledSummary {
                        id: id.clone(),
                        name: h.node.collaboration().name().to_string(),
                        version: h.version,
                        sha256: h.sha256.clone(),
                        has_secret: h.node.has_secret(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        collaborations.sort_by(|a, b| a.id.cmp(&b.id));
        proto::Hello {
            member: self.inner.cfg.member.clone(),
            x25519: self.inner.keys.public().to_hex(),
            fingerprint: self.fingerprint(),
            member_key: self.inner.cfg.member_key.clone(),
            collaborations,
        }
    }

    fn installed(&self, id: &str, held: &Held) -> Result<proto::Installed, Status> {
        let mut schemas = BTreeMap::new();
        for (table, schema) in held.node.table_schemas() {
            let bytes = airlock_protocol::wire::encode_batches(schema, &[])
                .map_err(|e| Status::internal(e.to_string()))?;
            schemas.insert(table.clone(), airlock_protocol::Message(bytes));
        }
        Ok(proto::Installed {
            id: id.to_string(),
            version: held.version,
            schemas,
            has_secret: held.node.has_secret(),
        })
    }

    /// Installs a collaboration policy (new, or a newer version).
    async fn install(&self, req: proto::Install) -> Result<proto::Installed, Status> {
        let collab = Collaboration::from_toml(&req.toml, "pushed policy")
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let member = &self.inner.cfg.member;
        if collab.member(member).is_none() {
            return Err(Status::invalid_argument(format!(
                "'{member}' is not a member of collaboration '{}'",
                collab.name()
            )));
        }
        let id = collab.id().to_string();
        let sha = sha256_hex(req.toml.as_bytes());
        let signature = req.approvals.get(member).map(String::as_str);
        let existing = self.held(&id);
        let base = existing.as_ref().map(|h| h.sha256.clone());
        if existing
            .as_ref()
            .is_some_and(|h| h.sha256 == sha && h.version == req.version)
        {
            // Already held: answer as before (its approval was checked then).
        } else {
            self.check_approval(&collab, &sha, req.version, signature, base.as_deref())?;
        }
        if let Some(h) = &existing {
            let held = h.node.collaboration();
            if held.name() != collab.name() {
                return Err(Status::failed_precondition(format!(
                    "this node holds collaboration id '{id}' under another name"
                )));
            }
            // What belongs to no member (the budget above all: raising it
            // would refill this node's ledger) no version changes, whoever
            // signed it.
            let shared = held.shared_changes(&collab);
            if !shared.is_empty() {
                return Err(Status::permission_denied(format!(
                    "version {} of collaboration '{}' changes {}, which no version may change",
                    req.version,
                    collab.name(),
                    shared.join(", ")
                )));
            }
            if req.version < h.version {
                return Err(Status::failed_precondition(format!(
                    "policy version {} is older than version {} held by this node",
                    req.version, h.version
                )));
            }
            if req.version == h.version {
                if h.sha256 == sha {
                    return self.installed(&id, h);
                }
                return Err(Status::failed_precondition(format!(
                    "policy version {} is already held with different contents",
                    req.version
                )));
            }
        }
        let dir = collab_dir(&self.inner.cfg.state_dir, &id);
        let secret = read_secret(&dir).map_err(|e| Status::failed_precondition(e.to_string()))?;
        let node =
            Node::open_with_limits(&collab, &self.inner.catalog, member, secret, self.limits())
                .await
                .map_err(|e| match e {
                    NodeError::Config(c) => Status::invalid_argument(c.to_string()),
                    other => Status::failed_precondition(other.to_string()),
                })?;
        std::fs::create_dir_all(&dir).map_err(|e| Status::internal(e.to_string()))?;
        // The node's own ledger, with the budgets of the version installed
        // (a new version's budget keeps what was spent).
        let node = with_ledger(node, &dir, &collab, &req.toml)
            .await
            .map_err(Status::internal)?;
        write_atomic(&dir.join("policy.toml"), req.toml.as_bytes())?;
        write_atomic(&dir.join("version"), req.version.to_string().as_bytes())?;
        write_atomic(
            &dir.join("approval.sig"),
            signature.unwrap_or_default().as_bytes(),
        )?;
        write_atomic(
            &dir.join("approval.base"),
            base.as_deref().unwrap_or_default().as_bytes(),
        )?;
        self.put(&id, req.version, sha, node);
        let held = self
            .held(&id)
            .ok_or_else(|| Status::internal("installed collaboration vanished"))?;
        self.installed(&id, &held)
    }

    /// Refuses a version its member did not approve (ATTACKS 30): a member
    /// in [`Collaboration::approvers`] must have signed the exact text with
    /// the key this node knows as `member_key`. Neither the hub's word nor
    /// another member's signature counts.
    fn check_approval(
        &self,
        collab: &Collaboration,
        sha: &str,
        version: i64,
        signature: Option<&str>,
        replaces: Option<&str>,
    ) -> Result<(), Status> {
        let member = &self.inner.cfg.member;
        // A version in which this member contributes nothing is not this
        // node's to hold (installing it would also let it squat the id).
        if !collab.approvers().iter().any(|m| m == member) {
            return Err(Status::permission_denied(format!(
                "'{member}' contributes no data to version {version} of collaboration '{}': this node installs nothing of it",
                collab.name()
            )));
        }
        let Some(key) = &self.inner.cfg.member_key else {
            return Err(Status::permission_denied(format!(
                "this node has no member_key: it installs no collaboration that involves '{member}' (set member_key in node.toml)"
            )));
        };
        let Some(signature) = signature else {
            return Err(Status::permission_denied(format!(
                "version {version} of collaboration '{}' is not approved by '{member}'",
                collab.name()
            )));
        };
        let message =
            airlock_crypto::approval::approval_message(collab.id(), version, sha, replaces);
        if !airlock_crypto::approval::verify(key, &message, signature) {
            return Err(Status::permission_denied(format!(
                "the approval of version {version} of collaboration '{}' is not a signature by the member key of '{member}' of this version's text replacing the one this node holds",
                collab.name()
            )));
        }
        Ok(())
    }

    fn secret_generate(&self, req: proto::SecretGenerate) -> Result<proto::SealedSecrets, Status> {
        let held = self
            .held(&req.collaboration)
            .ok_or_else(|| Status::not_found("no such collaboration on this node"))?;
        let dir = collab_dir(&self.inner.cfg.state_dir, &req.collaboration);
        let secret = match read_secret(&dir).map_err(|e| Status::internal(e.to_string()))? {
            Some(s) => s,
            None => {
                let s = CollaborationSecret::generate()
                    .map_err(|e| Status::internal(format!("no randomness: {e}")))?;
                write_secret(&dir, &s)?;
                held.node.install_secret(
                    CollaborationSecret::from_hex(&s.to_hex())
                        .map_err(|e| Status::internal(e.to_string()))?,
                );
                s
            }
        };
        let mut sealed = BTreeMap::new();
        // Only to the other members that contribute data to this
        // collaboration, as this node holds it (never the hub's word).
        let approvers = held.node.collaboration().approvers();
        for r in &req.recipients {
            if r.member == self.inner.cfg.member || !approvers.contains(&r.member) {
                return Err(Status::permission_denied(format!(
                    "'{}' is not another contributing member of this collaboration: the secret is sealed to no one else",
                    r.member
                )));
            }
            let public = PublicKeyBytes::from_hex(&r.x25519)
                .map_err(|_| Status::invalid_argument("malformed recipient key"))?;
            let fp = sealing::fingerprint(&public);
            match self.inner.cfg.peers.get(&r.member) {
                Some(pinned) if *pinned == fp => {}
                Some(_) => {
                    return Err(Status::permission_denied(format!(
                    "the key offered for '{}' ({fp}) is not the one pinned in this node's peers",
                    r.member
                )))
                }
                None => {
                    return Err(Status::permission_denied(format!(
                        "'{}' has no pinned key in this node's peers",
                        r.member
                    )))
                }
            }
            let blob = sealing::seal_from(
                &self.inner.keys,
                &public,
                &proto::seal_context(&req.collaboration, &r.member),
                secret.to_hex().as_bytes(),
            )
            .map_err(|e| Status::internal(e.to_string()))?;
            sealed.insert(r.member.clone(), airlock_protocol::Message(blob));
        }
        Ok(proto::SealedSecrets { sealed })
    }

    /// Writes a released result to one of this node's destinations.
    async fn deliver(&self, req: proto::Deliver) -> Result<proto::Delivered, Status> {
        let held = self
            .held(&req.collaboration)
            .ok_or_else(|| Status::not_found("that collaboration is not installed on this node"))?;
        if !crate::delivery::is_query_id(&req.query) {
            return Err(Status::invalid_argument(
                "the query id is not 1 to 64 hex characters",
            ));
        }
        let dest = self
            .inner
            .cfg
            .destinations
            .get(&req.destination)
            .ok_or_else(|| {
                Status::not_found(format!(
                    "this node has no destination named '{}'",
                    req.destination.chars().take(64).collect::<String>()
                ))
            })?;
        let bytes = req.result.0;
        let result_sha256 = sha256_hex(&bytes);
        let (schema, parts) = airlock_protocol::wire::decode_partitions(bytes)
            .map_err(|_| Status::invalid_argument("the result is not Arrow IPC"))?;
        let batches: Vec<_> = parts.into_iter().flatten().collect();
        crate::delivery::write(
            &req.destination,
            dest,
            held.node.collaboration().name(),
            &req.query,
            &schema,
            &batches,
            result_sha256,
        )
        .await
        .map_err(Status::failed_precondition)
    }

    fn secret_install(&self, req: proto::SecretInstall) -> Result<(), Status> {
        let held = self
            .held(&req.collaboration)
            .ok_or_else(|| Status::not_found("no such collaboration on this node"))?;
        let blob = &req.sealed.0;
        let (sender, plain) = sealing::open_from(
            &self.inner.keys,
            &proto::seal_context(&req.collaboration, &self.inner.cfg.member),
            blob,
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // Only a pinned peer's node may hand this node a secret: a relaying
        // hub cannot substitute one it knows.
        let fp = sealing::fingerprint(&sender);
        if self.inner.cfg.peers.get(&req.from) != Some(&fp) {
            return Err(Status::permission_denied(format!(
                "the secret was not sealed by the pinned key of '{}'",
                req.from
            )));
        }
        let text = String::from_utf8(plain)
            .map_err(|_| Status::invalid_argument("cannot open the sealed blob"))?;
        let secret = CollaborationSecret::from_hex(&text)
            .map_err(|_| Status::invalid_argument("cannot open the sealed blob"))?;
        let dir = collab_dir(&self.inner.cfg.state_dir, &req.collaboration);
        if let Some(held_secret) = read_secret(&dir).map_err(|e| Status::internal(e.to_string()))? {
            if held_secret.to_hex() == secret.to_hex() {
                return Ok(());
            }
            return Err(Status::failed_precondition(
                "this node already holds a different secret for this collaboration",
            ));
        }
        let dir = collab_dir(&self.inner.cfg.state_dir, &req.collaboration);
        write_secret(&dir, &secret)?;
        held.node.install_secret(secret);
        Ok(())
    }

    async fn get(
        &self,
        ticket: &[u8],
    ) -> Result<BoxStream<'static, Result<FlightData, Status>>, Status> {
        let t: proto::Ticket = json_body(ticket, "ticket")?;
        let held = self
            .held(&t.collaboration)
            .ok_or_else(|| Status::not_found("no such collaboration on this node"))?;
        if t.policy_version != held.version {
            let why = if t.policy_version < held.version {
                format!(
                    "the fragment was planned under policy version {}, older than version {} held by this node",
                    t.policy_version, held.version
                )
            } else {
                format!(
                    "the fragment was planned under policy version {}, but this node holds version {}",
                    t.policy_version, held.version
                )
            };
            return Err(Status::permission_denied(proto::refusal_message(
                &Refusal::new(Control::PolicyVersion, why),
            )));
        }
        let (schema, streams) = held
            .node
            .run_streams(&t.fragment)
            .await
            .map_err(status_of)?;
        // Partitions are interleaved as they produce batches: the scan, the
        // pseudonymisation and the transfer overlap.
        // A typed refusal (a limit reached) passes; any other failure is
        // uniform, as engine messages can quote values.
        let batches = stream::select_all(streams).map(|r| {
            r.map_err(|e| match e {
                NodeError::Refused(r) => arrow_flight::error::FlightError::Tonic(Box::new(
                    status_of(NodeError::Refused(r)),
                )),
                _ => {
                    arrow_flight::error::FlightError::ExternalError(Box::new(NodeError::Execution))
                }
            })
        });
        let encoded = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map(|r| {
                r.map_err(|e| match e {
                    arrow_flight::error::FlightError::Tonic(s) => *s,
                    _ => Status::internal(NodeError::Execution.to_string()),
                })
            });
        Ok(encoded.boxed())
    }
}

/// `node` debiting its own ledger of `collab` in `dir` (its state for the
/// collaboration), when the collaboration has a privacy budget.
async fn with_ledger(
    node: Node,
    dir: &Path,
    collab: &Collaboration,
    toml: &str,
) -> Result<Node, String> {
    match crate::ledger::NodeStoreLedger::open(dir, collab, toml).await {
        Ok(Some(ledger)) => Ok(node.with_ledger(Arc::new(ledger))),
        Ok(None) => Ok(node),
        Err(e) => Err(format!("the node's privacy budget ledger: {e}")),
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Status> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| Status::internal(format!("cannot persist {}: {e}", path.display())))
}

fn read_secret(dir: &Path) -> Result<Option<CollaborationSecret>, ServiceError> {
    let path = dir.join("secret");
    match std::fs::read_to_string(&path) {
        Ok(text) => CollaborationSecret::from_hex(text.trim())
            .map(Some)
            .map_err(|e| ServiceError::Config(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ServiceError::Config(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

fn write_secret(dir: &Path, secret: &CollaborationSecret) -> Result<(), Status> {
    std::fs::create_dir_all(dir).map_err(|e| Status::internal(e.to_string()))?;
    let path = dir.join("secret");
    let _ = std::fs::remove_file(&path);
    airlock_crypto::pki::write_private(&path, &secret.to_hex())
        .map_err(|e| Status::internal(format!("cannot keep the secret: {e}")))
}

#[tonic::async_trait]
impl FlightService for NodeService {
    type HandshakeStream = BoxStream<'static, Result<HandshakeResponse, Status>>;
    type ListFlightsStream = BoxStream<'static, Result<FlightInfo, Status>>;
    type DoGetStream = BoxStream<'static, Result<FlightData, Status>>;
    type DoPutStream = BoxStream<'static, Result<PutResult, Status>>;
    type DoActionStream = BoxStream<'static, Result<arrow_flight::Result, Status>>;
    type ListActionsStream = BoxStream<'static, Result<ActionType, Status>>;
    type DoExchangeStream = BoxStream<'static, Result<FlightData, Status>>;

    async fn handshake(
        &self,
        _r: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented(
            "authentication is by client certificate",
        ))
    }

    async fn list_flights(
        &self,
        _r: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(Status::unimplemented("a node lists nothing"))
    }

    async fn get_flight_info(
        &self,
        _r: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(Status::unimplemented("use DoGet with a fragment ticket"))
    }

    async fn poll_flight_info(
        &self,
        _r: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented("use DoGet with a fragment ticket"))
    }

    async fn get_schema(
        &self,
        _r: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(Status::unimplemented(
            "schemas are returned by the install action",
        ))
    }

    async fn do_get(&self, r: Request<Ticket>) -> Result<Response<Self::DoGetStream>, Status> {
        self.authorise(&r)?;
        let stream = self.get(&r.into_inner().ticket).await?;
        Ok(Response::new(stream))
    }

    async fn do_put(
        &self,
        _r: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented("nothing is written to a node"))
    }

    async fn do_action(
        &self,
        r: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        self.authorise(&r)?;
        let a = r.into_inner();
        match a.r#type.as_str() {
            action::HELLO => json_answer(&self.hello()),
            action::INSTALL => {
                let installed = self.install(json_body(&a.body, "install")?).await?;
                json_answer(&installed)
            }
            action::SECRET_GENERATE => {
                json_answer(&self.secret_generate(json_body(&a.body, "secret.generate")?)?)
            }
            action::SECRET_INSTALL => {
                self.secret_install(json_body(&a.body, "secret.install")?)?;
                json_answer(&serde_json::json!({}))
            }
            action::DELIVER => json_answer(&self.deliver(json_body(&a.body, "deliver")?).await?),
            action::PSI => {
                let req: proto::Psi = json_body(&a.body, "psi")?;
                let held = self.held(&req.collaboration).ok_or_else(|| {
                    Status::not_found("that collaboration is not installed on this node")
                })?;
                if req.policy_version != held.version {
                    return Err(status_of(NodeError::Refused(Refusal::new(
                        Control::PolicyVersion,
                        format!(
                            "the query was planned under policy version {}, this node holds version {}",
                            req.policy_version, held.version
                        ),
                    ))));
                }
                let body = serde_json::to_vec(&req.request)
                    .map_err(|e| Status::internal(e.to_string()))?;
                let answer = held.node.psi(&body).await.map_err(status_of)?;
                let out = arrow_flight::Result {
                    body: answer.into(),
                };
                Ok(Response::new(stream::iter(vec![Ok(out)]).boxed()))
            }
            other => Err(Status::invalid_argument(format!(
                "unknown action '{other}'"
            ))),
        }
    }

    async fn list_actions(
        &self,
        r: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.authorise(&r)?;
        let list = [
            action::HELLO,
            action::INSTALL,
            action::SECRET_GENERATE,
            action::SECRET_INSTALL,
            action::DELIVER,
            action::PSI,
        ]
        .into_iter()
        .map(|t| {
            Ok(ActionType {
                r#type: t.to_string(),
                description: String::new(),
            })
        })
        .collect::<Vec<_>>();
        Ok(Response::new(stream::iter(list).boxed()))
    }

    async fn do_exchange(
        &self,
        _r: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented("no exchange"))
    }
}

/// Binds the node's listener and serves until `shutdown` resolves. Prints
/// `listening on https://ADDR` once bound (the line `airlock up` waits for).
pub async fn serve(
    cfg: NodeConfig,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let tls = crate::tls_accept::server_config(
        &read(&cfg.tls.cert)?,
        &read(&cfg.tls.key)?,
        &read(&cfg.tls.ca)?,
    )?;
    let listen = cfg.listen.clone();
    let svc = NodeService::open(cfg).await?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| ServiceError::Io(format!("cannot listen on {listen}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ServiceError::Io(e.to_string()))?;
    println!(
        "node {} listening on https://{addr} (x25519 {})",
        svc.member(),
        svc.fingerprint()
    );
    Server::builder()
        .add_service(
            FlightServiceServer::new(svc)
                .max_decoding_message_size(512 << 20)
                .max_encoding_message_size(512 << 20),
        )
        .serve_with_incoming_shutdown(crate::tls_accept::incoming(listener, tls, None), shutdown)
        .await
        .map_err(|e| ServiceError::Io(e.to_string()))
}
