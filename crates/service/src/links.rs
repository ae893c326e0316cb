//! The hub's side of the hub–node link: Arrow Flight over mutual TLS.
//!
//! The hub proves itself with its client certificate; it checks each node's
//! server certificate against the cluster CA *and* against the name
//! `<member>.node.airlock`, so one member's node cannot answer for another.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use airlock_hub::{NodeClient, NodeFailure};
use airlock_protocol::wire::Partitions;
use airlock_protocol::{Fragment, PsiRequest, PsiResponse};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_client::FlightServiceClient;
use arrow_flight::{Action, Ticket};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::Code;

use crate::config::{read, HubConfig};
use crate::proto;
use crate::ServiceError;

/// The TLS name a member's node must present.
pub fn node_server_name(member: &str) -> String {
    format!("{member}.node.airlock")
}

/// Progress of one query, shared with the REST API (the hub's type).
pub use airlock_hub::Progress;

/// A copy of every byte exchanged with nodes (for tests and debugging).
pub type Tap = Arc<Mutex<std::fs::File>>;

fn tap_write(tap: &Option<Tap>, what: &str, member: &str, bytes: &[u8]) {
    if let Some(t) = tap {
        if let Ok(mut f) = t.lock() {
            let _ = writeln!(f, "\n--- {what} {member} {} bytes", bytes.len());
            let _ = f.write_all(bytes);
        }
    }
}

/// Channels to every configured node.
#[derive(Clone)]
pub struct NodeLinks {
    channels: Arc<HashMap<String, Channel>>,
    tap: Option<Tap>,
}

fn failure(member: &str, s: tonic::Status) -> NodeFailure {
    if s.code() == Code::PermissionDenied {
        if let Some(r) = proto::parse_refusal(s.message()) {
            return NodeFailure::Refused(r);
        }
    }
    let msg = match s.code() {
        Code::Unavailable => format!("the node of '{member}' is unreachable"),
        _ => s.message().to_string(),
    };
    NodeFailure::Failed(msg)
}

impl NodeLinks {
    /// Lazy channels to the nodes of `cfg` (nothing connects until used).
    pub fn new(cfg: &HubConfig) -> Result<NodeLinks, ServiceError> {
        let identity = Identity::from_pem(read(&cfg.tls.cert)?, read(&cfg.tls.key)?);
        let ca = Certificate::from_pem(read(&cfg.tls.ca)?);
        let mut channels = HashMap::new();
        for n in &cfg.nodes {
            let tls = ClientTlsConfig::new()
                .ca_certificate(ca.clone())
                .identity(identity.clone())
                .domain_name(node_server_name(&n.member));
            let channel = Endpoint::from_shared(n.url.clone())
                .map_err(|e| ServiceError::Config(format!("node url of '{}': {e}", n.member)))?
                .tls_config(tls)
                .map_err(|e| ServiceError::Config(format!("TLS for '{}': {e}", n.member)))?
                .connect_timeout(std::time::Duration::from_secs(5))
                .connect_lazy();
            channels.insert(n.member.clone(), channel);
        }
        let tap = match &cfg.wire_tap {
            Some(p) => Some(Arc::new(Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| ServiceError::Config(format!("wire tap {}: {e}", p.display())))?,
            ))),
            None => None,
        };
        Ok(NodeLinks {
            channels: Arc::new(channels),
            tap,
        })
    }

    /// Members with a configured node.
    pub fn members(&self) -> impl Iterator<Item = &String> {
        self.channels.keys()
    }

    fn client(&self, member: &str) -> Result<FlightServiceClient<Channel>, NodeFailure> {
        let ch = self.channels.get(member).ok_or_else(|| {
            NodeFailure::Failed(format!("the hub has no node configured for '{member}'"))
        })?;
        Ok(FlightServiceClient::new(ch.clone())
            .max_decoding_message_size(512 << 20)
            .max_encoding_message_size(512 << 20))
    }

    /// Runs an action on `member`'s node and decodes its JSON answer.
    pub async fn action<B: Serialize, T: DeserializeOwned>(
        &self,
        member: &str,
        kind: &str,
        body: &B,
    ) -> Result<T, NodeFailure> {
        let body = serde_json::to_vec(body).map_err(|e| NodeFailure::Failed(e.to_string()))?;
        tap_write(&self.tap, &format!("action {kind} to"), member, &body);
        let mut client = self.client(member)?;
        let mut stream = client
            .do_action(Action {
                r#type: kind.to_string(),
                body: body.into(),
            })
            .await
            .map_err(|s| failure(member, s))?
            .into_inner();
        let first = stream
            .message()
            .await
            .map_err(|s| failure(member, s))?
            .ok_or_else(|| NodeFailure::Failed(format!("empty answer from '{member}'")))?;
        tap_write(
            &self.tap,
            &format!("answer {kind} from"),
            member,
            &first.body,
        );
        serde_json::from_slice(&first.body)
            .map_err(|e| NodeFailure::Failed(format!("malformed answer from '{member}': {e}")))
    }

    /// A [`NodeClient`] for one query: tickets carry the collaboration id
    /// and the policy version the query was planned under.
    pub fn for_query(
        &self,
        collaboration: &str,
        version: i64,
        progress: Arc<Progress>,
    ) -> QueryLinks {
        QueryLinks {
            links: self.clone(),
            collaboration: collaboration.to_string(),
            version,
            progress,
        }
    }
}

/// The nodes as one query sees them.
pub struct QueryLinks {
    links: NodeLinks,
    collaboration: String,
    version: i64,
    progress: Arc<Progress>,
}

impl QueryLinks {
    async fn fetch(
        &self,
        member: &str,
        fragment: &Fragment,
    ) -> Result<(SchemaRef, Partitions), NodeFailure> {
        let ticket = serde_json::to_vec(&proto::Ticket {
            collaboration: self.collaboration.clone(),
            policy_version: self.version,
            fragment: fragment.clone(),
        })
        .map_err(|e| NodeFailure::Failed(e.to_string()))?;
        tap_write(&self.links.tap, "ticket to", member, &ticket);
        self.progress
            .fragments_total
            .fetch_add(1, Ordering::Relaxed);
        let mut client = self.links.client(member)?;
        let data = client
            .do_get(Ticket {
                ticket: ticket.into(),
            })
            .await
            .map_err(|s| failure(member, s))?
            .into_inner();
        let tap = self.links.tap.clone();
        let who = member.to_string();
        let data = data
            .inspect_ok(move |d| {
                if tap.is_some() {
                    tap_write(&tap, "flight header from", &who, &d.data_header);
                    tap_write(&tap, "flight body from", &who, &d.data_body);
                }
            })
            .map_err(|s| FlightError::Tonic(Box::new(s)));
        let mut batches = FlightRecordBatchStream::new_from_flight_data(data);
        let parts = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let mut partitions: Partitions = vec![Vec::new(); parts];
        let mut i = 0usize;
        while let Some(b) = batches.next().await {
            let b: RecordBatch = b.map_err(|e| match e {
                FlightError::Tonic(s) => failure(member, *s),
                _ => {
                    NodeFailure::Failed(format!("the node of '{member}' sent an unreadable result"))
                }
            })?;
            partitions[i % parts].push(b);
            i += 1;
        }
        let schema = batches
            .schema()
            .cloned()
            .ok_or_else(|| NodeFailure::Failed(format!("the node of '{member}' sent no schema")))?;
        self.progress.fragments_done.fetch_add(1, Ordering::Relaxed);
        Ok((schema, partitions))
    }
}

impl NodeClient for QueryLinks {
    fn execute<'a>(
        &'a self,
        member: &'a str,
        fragment: &'a Fragment,
    ) -> BoxFuture<'a, Result<(SchemaRef, Partitions), NodeFailure>> {
        Box::pin(self.fetch(member, fragment))
    }

    fn psi<'a>(
        &'a self,
        member: &'a str,
        request: &'a PsiRequest,
    ) -> BoxFuture<'a, Result<PsiResponse, NodeFailure>> {
        Box::pin(async move {
            self.progress
                .fragments_total
                .fetch_add(1, Ordering::Relaxed);
            let answer: PsiResponse = self
                .links
                .action(
                    member,
                    proto::action::PSI,
                    &proto::Psi {
                        collaboration: self.collaboration.clone(),
                        policy_version: self.version,
                        request: request.clone(),
                    },
                )
                .await?;
            self.progress.fragments_done.fetch_add(1, Ordering::Relaxed);
            Ok(answer)
        })
    }

    fn crypto_step(&self, step: Option<&airlock_hub::CryptoStep>) {
        if let Ok(mut s) = self.progress.step.lock() {
            *s = step.map(|s| s.to_string());
        }
    }
}
