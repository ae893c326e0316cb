//! The life of one prepared query, after [`Hub::prepare`] accepted it:
//! marked running, run ([`Hub::run`]: debit, fan-out, release) under a time
//! limit, then stored for the querier or delivered to the querier's own
//! node, and every outcome recorded once. The store and the delivery are
//! ports ([`QueryStore`], [`Deliverer`]), so the lifecycle is tested
//! without sockets or a database; the services adapt them to the store and
//! to Flight actions.
//!
//! ```text
//!  running ─▶ Hub::run ─▶ released ─▶ audit fragments.ran ─▶ deliver? ─▶ release_delivered
//!                │                                            └ no / failed ─▶ release (stored)
//!                ├─▶ refused (by the ledger or a node) ─▶ refused
//!                └─▶ failed, timed out ─▶ failed
//! ```
//!
//! What is recorded is what the querier may read: the fragment count (fixed
//! by the query's shape), the released result and its row count, a refusal
//! naming its rule, a failure in words with no data values. No fragment's
//! row count is recorded anywhere (ATTACKS 29).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use airlock_policy::Refusal;
use airlock_protocol::audit::DeliveredBy;
use airlock_protocol::{AuditEvent, Delivered};
use futures::future::BoxFuture;
use sha2::Digest as _;

use crate::{AuditLog, Hub, HubError, Ledger, NodeClient, Prepared};

/// Progress of one query, which the querier may read while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Fragments sent.
    pub fragments_total: AtomicU64,
    /// Fragments whose results have fully arrived.
    pub fragments_done: AtomicU64,
    /// A crypto-mode query's current step (fixed by the query's shape and
    /// rules, never by data: see [`crate::CryptoStep`]).
    pub step: Mutex<Option<String>>,
    /// Set by [`Progress::cancel`]: the run stops at its next step and the
    /// query fails as cancelled.
    cancel: tokio::sync::Notify,
    cancelled: std::sync::atomic::AtomicBool,
    // No count of rows: how many rows a member's node sends depends on that
    // member's data, and the querier can read progress (ATTACKS 29).
}

/// What a cancelled query's failure says.
pub const CANCELLED: &str = "the query was cancelled by its querier";

impl Progress {
    /// Asks the run to stop: the query fails as [`CANCELLED`] unless it
    /// has already ended. A budget debited before is not refunded.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
        // A stored permit: a cancel before the run waits is not lost.
        self.cancel.notify_one();
    }

    /// Whether [`Progress::cancel`] was called: a cancelled query failed
    /// because its querier asked, not because a node did.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// The query being settled, as the store knows it.
#[derive(Debug, Clone, Copy)]
pub struct QueryRef<'a> {
    /// Query id (32 hex characters).
    pub id: &'a str,
    /// Collaboration name (the audit chain's key).
    pub collab: &'a str,
    /// Collaboration id of the running version (what nodes know it by).
    pub collab_id: &'a str,
    /// The querier.
    pub member: &'a str,
}

/// Where the lifecycle records a query's states (and, as an [`AuditLog`],
/// its audit entries). Each call is one durable write; an error is in words.
pub trait QueryStore: AuditLog {
    /// The query started running.
    fn running<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<(), String>>;
    /// Releases the result, kept for the querier to fetch.
    fn release<'a>(
        &'a self,
        query: &'a str,
        result: &'a [u8],
        rows: i64,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// Releases a result the querier's node wrote, with no copy kept, and
    /// audits the delivery (`written`) in the same write.
    fn release_delivered<'a>(
        &'a self,
        query: &'a str,
        rows: i64,
        result_sha256: &'a str,
        detail: &'a str,
        written: &'a DeliveredBy,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// The query was refused (by `node`'s own rules, or by the ledger).
    fn refused<'a>(
        &'a self,
        query: &'a str,
        refusal: &'a Refusal,
        node: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), String>>;
    /// The query failed.
    fn failed<'a>(&'a self, query: &'a str, message: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

/// Sends a released result to the querier's own node, which writes it to
/// one of its destinations.
pub trait Deliverer: Send + Sync {
    /// Delivers `result` (framed Arrow IPC) of `query` to `destination` of
    /// `member`'s node; returns what the node wrote.
    fn deliver<'a>(
        &'a self,
        member: &'a str,
        collab_id: &'a str,
        query: &'a str,
        destination: &'a str,
        result: &'a [u8],
    ) -> BoxFuture<'a, Result<Delivered, String>>;
}

/// How a query ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Released and kept by the hub for the querier to fetch.
    Stored,
    /// Released and written by the querier's node; the hub keeps no copy.
    Delivered,
    /// Refused by the ledger or by a node.
    Refused,
    /// Failed (a node failed, the time limit passed, a write failed).
    Failed,
}

/// How a prepared query is run.
pub struct Run<'a> {
    /// The nodes.
    pub nodes: &'a dyn NodeClient,
    /// The privacy budget.
    pub ledger: &'a dyn Ledger,
    /// The query's states and audit entries.
    pub store: &'a dyn QueryStore,
    /// Where the result goes instead of the hub's store: a destination of
    /// the querier's node, and how to reach it.
    pub deliver: Option<(&'a str, &'a dyn Deliverer)>,
    /// Progress the querier can read.
    pub progress: &'a Progress,
    /// The run's time limit.
    pub timeout: Duration,
}

impl Hub {
    /// Runs `prepared` (see the module header) and records how it ended.
    /// A failure is recorded as failed and returned as [`Settled::Failed`]
    /// (the caller may then push the collaboration to its nodes again).
    pub async fn settle(&self, q: QueryRef<'_>, prepared: Prepared, run: Run<'_>) -> Settled {
        match self.settle_or_fail(q, prepared, &run).await {
            Ok(s) => s,
            Err(m) => {
                if let Err(e) = run.store.failed(q.id, &m).await {
                    eprintln!("hub: recording the failure of {}: {e}", q.id);
                }
                Settled::Failed
            }
        }
    }

    async fn settle_or_fail(
        &self,
        q: QueryRef<'_>,
        prepared: Prepared,
        run: &Run<'_>,
    ) -> Result<Settled, String> {
        run.store.running(q.id).await?;
        let secs = run.timeout.as_secs();
        let ran =
            tokio::time::timeout(run.timeout, self.run(q.id, prepared, run.nodes, run.ledger));
        let ran = tokio::select! {
            ran = ran => ran.unwrap_or_else(|_| {
                Err(HubError::Failed(format!(
                    "the query ran longer than {secs} s (query_timeout_secs of the hub) and was stopped"
                )))
            }),
            () = run.progress.cancel.notified() => Err(HubError::Failed(CANCELLED.into())),
        };
        let released = match ran {
            Ok(released) => released,
            Err(HubError::Refused { refusal, node }) => {
                run.store.refused(q.id, &refusal, node.as_deref()).await?;
                return Ok(Settled::Refused);
            }
            Err(e) => return Err(e.to_string()),
        };
        let bytes = airlock_protocol::wire::encode_batches(&released.schema, &released.batches)
            .map_err(|e| format!("cannot encode the result: {e}"))?;
        // An audit entry that cannot be written does not stop the release
        // (as before the lifecycle moved here): the release itself is
        // audited by the store.
        let _ = run
            .store
            .audit(
                q.collab,
                AuditEvent::FragmentsRan {
                    query: q.id.to_string(),
                    fragments: run.progress.fragments_done.load(Ordering::Relaxed),
                },
            )
            .await;
        let rows = released.num_rows() as i64;
        if let Some((dest, deliverer)) = run.deliver {
            if deliver(q, run.store, deliverer, dest, &bytes, rows).await {
                return Ok(Settled::Delivered);
            }
        }
        run.store.release(q.id, &bytes, rows).await?;
        Ok(Settled::Stored)
    }
}

/// Sends the result to the querier's node. On success the query becomes
/// released with no copy kept by the hub, and the delivery is audited with
/// the content hashes, in one write; returns true. On failure the failure
/// is audited and the caller releases the result as usual (fetchable).
async fn deliver(
    q: QueryRef<'_>,
    store: &dyn QueryStore,
    deliverer: &dyn Deliverer,
    dest: &str,
    bytes: &[u8],
    rows: i64,
) -> bool {
    let sha = hex::encode(sha2::Sha256::digest(bytes));
    let outcome = deliverer
        .deliver(q.member, q.collab_id, q.id, dest, bytes)
        .await
        .and_then(|d| {
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
            let written = DeliveredBy::Written {
                destination: d.destination,
                kind: d.kind,
                location: d.location,
                rows: d.rows,
                file_sha256: d.file_sha256,
            };
            match store
                .release_delivered(q.id, rows, &sha, &detail, &written)
                .await
            {
                Ok(()) => true,
                Err(e) => {
                    eprintln!("hub: recording the delivery of {}: {e}", q.id);
                    false
                }
            }
        }
        Err(e) => {
            let _ = store
                .audit(
                    q.collab,
                    AuditEvent::ResultDeliveryFailed {
                        query: q.id.to_string(),
                        destination: dest.to_string(),
                        error: e,
                    },
                )
                .await;
            false
        }
    }
}
