//! The hub's ports on the real store and the Flight links: the lifecycle's
//! ([`airlock_hub::QueryStore`], [`airlock_hub::Deliverer`]), sync's
//! ([`airlock_hub::NodeAdmin`]) and the audit chain
//! ([`airlock_hub::AuditLog`]);
//! the stored forms of refusals and failures are made here
//! ([`refusal_detail`], [`failure`]), for the run and for the submit
//! alike, and read back by `HubState::view` (`queries.rs`).

use airlock_hub::{AuditLog, Deliverer, NodeAdmin, NodeFailure, QueryStore};
use airlock_policy::Refusal;
use airlock_protocol::admin::{
    Hello, Install, Installed, SealedSecrets, SecretGenerate, SecretInstall,
};
use airlock_protocol::audit::DeliveredBy;
use airlock_protocol::{AuditEvent, Delivered};
use airlock_store::{QueryState, Store};
use futures::future::BoxFuture;

use crate::api::{FailureDetail, FailureKind};
use crate::links::NodeLinks;
use crate::proto;

/// A refused query's stored detail: the refusal and the refusing node.
pub(super) fn refusal_detail(refusal: &Refusal, node: Option<&str>) -> String {
    serde_json::json!({"refusal": refusal, "node": node}).to_string()
}

/// A failed query's stored detail.
pub(super) fn failure(kind: FailureKind, message: impl Into<String>) -> String {
    FailureDetail {
        kind,
        message: message.into(),
    }
    .to_text()
}

/// A store write as the ports report it: done, or why not in words.
fn done<T>(r: Result<T, airlock_store::StoreError>) -> Result<(), String> {
    r.map(drop).map_err(|e| e.to_string())
}

/// The store, as the hub's lifecycle writes to it.
pub(super) struct StorePort<'a>(pub(super) &'a Store);

impl AuditLog for StorePort<'_> {
    fn audit<'a>(
        &'a self,
        collab: &'a str,
        event: AuditEvent,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { done(self.0.record(collab, "hub", &event).await) })
    }
}

impl QueryStore for StorePort<'_> {
    fn running<'a>(&'a self, query: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { done(self.0.transition(query, QueryState::Running, None).await) })
    }

    fn release<'a>(
        &'a self,
        query: &'a str,
        result: &'a [u8],
        rows: i64,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move { done(self.0.release(query, result, rows).await) })
    }

    fn release_delivered<'a>(
        &'a self,
        query: &'a str,
        rows: i64,
        result_sha256: &'a str,
        detail: &'a str,
        written: &'a DeliveredBy,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            done(
                self.0
                    .release_delivered(query, rows, result_sha256, detail, written)
                    .await,
            )
        })
    }

    fn refused<'a>(
        &'a self,
        query: &'a str,
        refusal: &'a Refusal,
        node: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let detail = refusal_detail(refusal, node);
            done(
                self.0
                    .transition(query, QueryState::Refused, Some(&detail))
                    .await,
            )
        })
    }

    fn failed<'a>(&'a self, query: &'a str, message: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            done(
                self.0
                    .transition(
                        query,
                        QueryState::Failed,
                        Some(&failure(FailureKind::Failed, message)),
                    )
                    .await,
            )
        })
    }
}

/// Delivery is a Flight action to the querier's node.
impl Deliverer for NodeLinks {
    fn deliver<'a>(
        &'a self,
        member: &'a str,
        collab_id: &'a str,
        query: &'a str,
        destination: &'a str,
        result: &'a [u8],
    ) -> BoxFuture<'a, Result<Delivered, String>> {
        Box::pin(async move {
            let req = proto::Deliver {
                collaboration: collab_id.to_string(),
                query: query.to_string(),
                destination: destination.to_string(),
                result: airlock_protocol::Message(result.to_vec()),
            };
            self.action(member, proto::action::DELIVER, &req)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Node administration is Flight actions.
impl NodeAdmin for NodeLinks {
    fn hello<'a>(&'a self, member: &'a str) -> BoxFuture<'a, Result<Hello, NodeFailure>> {
        Box::pin(async move {
            self.action(member, proto::action::HELLO, &serde_json::json!({}))
                .await
        })
    }

    fn install<'a>(
        &'a self,
        member: &'a str,
        install: &'a Install,
    ) -> BoxFuture<'a, Result<Installed, NodeFailure>> {
        Box::pin(self.action(member, proto::action::INSTALL, install))
    }

    fn seal_secret<'a>(
        &'a self,
        member: &'a str,
        request: &'a SecretGenerate,
    ) -> BoxFuture<'a, Result<SealedSecrets, NodeFailure>> {
        Box::pin(self.action(member, proto::action::SECRET_GENERATE, request))
    }

    fn open_secret<'a>(
        &'a self,
        member: &'a str,
        request: &'a SecretInstall,
    ) -> BoxFuture<'a, Result<(), NodeFailure>> {
        Box::pin(async move {
            self.action::<_, serde_json::Value>(member, proto::action::SECRET_INSTALL, request)
                .await
                .map(drop)
        })
    }
}
