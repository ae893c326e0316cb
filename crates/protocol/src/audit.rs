//! The audit entries: one vocabulary for the hub and store that write the
//! chain and the members' tools that read it (`airlock audit`, `airlock
//! records`). On the chain each entry is its kind's text (`query.released`)
//! and its payload, hashed together; [`AuditKind::parse`] reads the kind
//! back, [`AuditEvent::parse`] the whole entry.
//!
//! [`AuditEvent`] is every payload field by field, so what an entry can
//! carry is a type, not a habit: `docs/threat-model.md` lists who reads
//! each, and no field counts a fragment's rows (ATTACKS 29).

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! kinds {
    ($($variant:ident => $text:literal, $doc:literal;)*) => {
        /// What an audit entry records.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum AuditKind {
            $(#[doc = $doc] $variant,)*
        }

        impl AuditKind {
            /// Every kind.
            pub const ALL: &'static [AuditKind] = &[$(AuditKind::$variant,)*];

            /// The kind as the chain holds it.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(AuditKind::$variant => $text,)*
                }
            }

            /// The kind of a chain entry's text, if it is one of these.
            pub fn parse(text: &str) -> Option<AuditKind> {
                match text {
                    $($text => Some(AuditKind::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

kinds! {
    CollaborationCreated => "collaboration.created", "A collaboration was created from its file.";
    CollaborationApplied => "collaboration.applied", "A new version of the collaboration file was applied.";
    CollaborationApproved => "collaboration.approved", "A member approved a version.";
    CollaborationRefused => "collaboration.refused", "A member refused a version.";
    PolicySynced => "policy.synced", "A version reached every member's node.";
    PolicySyncFailed => "policy.sync_failed", "A version could not reach a node.";
    SecretDistributed => "secret.distributed", "The collaboration secret was relayed, sealed, to the nodes.";
    MetadataExported => "metadata.exported", "The collaboration's public metadata was exported, signed.";
    TemplateApproved => "template.approved", "A member approved a template.";
    TemplateRevoked => "template.revoked", "A member revoked its approval of a template.";
    TemplateApprovalRefused => "template.approval_refused", "Static verification refused a template's approval.";
    BudgetSet => "budget.set", "A privacy budget was set.";
    BudgetDebited => "budget.debited", "A query's cost was debited before it ran.";
    QuerySubmitted => "query.submitted", "A member submitted a query.";
    QueryChecked => "query.checked", "The query passed the checks.";
    QueryRunning => "query.running", "The query started running.";
    QueryReleased => "query.released", "The query's result was released.";
    QueryRefused => "query.refused", "The query was refused by a rule.";
    QueryFailed => "query.failed", "The query failed.";
    FragmentsRan => "fragments.ran", "The nodes ran the query's fragments.";
    ResultDelivered => "result.delivered", "A released result was delivered to a member's destination.";
    ResultDeliveryFailed => "result.delivery_failed", "A delivery failed.";
    ResultDeleted => "result.deleted", "A result was deleted at the end of its retention.";
}

/// A query's move to a state with no result (checked, running, refused,
/// failed): `detail` is the refusal (JSON) or the failure, in words with
/// no data values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// Query id.
    pub query: String,
    /// The state moved to.
    pub state: String,
    /// The refusal or failure, if any.
    pub detail: Option<String>,
}

/// How a released result reached its receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DeliveredBy {
    /// The receiver's node wrote it to one of its destinations.
    Written {
        /// The destination's name.
        destination: String,
        /// `parquet`, `csv`, `s3`, `delta` or `postgres`.
        kind: String,
        /// What was written, within the destination (see
        /// [`crate::Delivered::location`]).
        location: String,
        /// Rows written (of the released result).
        rows: u64,
        /// SHA-256 of the file written (files only).
        file_sha256: Option<String>,
    },
    /// The receiver fetched it from the hub.
    Fetched {
        /// Bytes fetched.
        bytes: u64,
    },
}

/// An audit entry's kind and payload. Serialised as `{"kind": ...,
/// "payload": {...}}`; the chain stores the two apart ([`AuditEvent::kind`],
/// [`AuditEvent::payload`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload")]
pub enum AuditEvent {
    /// See [`AuditKind::CollaborationCreated`].
    #[serde(rename = "collaboration.created")]
    CollaborationCreated {
        /// Collaboration id.
        id: String,
        /// Always 1.
        version: i64,
        /// SHA-256 of the file.
        sha256: String,
    },
    /// See [`AuditKind::CollaborationApplied`].
    #[serde(rename = "collaboration.applied")]
    CollaborationApplied {
        /// The new version.
        version: i64,
        /// SHA-256 of its file.
        sha256: String,
    },
    /// See [`AuditKind::CollaborationApproved`].
    #[serde(rename = "collaboration.approved")]
    CollaborationApproved {
        /// The version approved.
        version: i64,
        /// SHA-256 of its file.
        sha256: String,
    },
    /// See [`AuditKind::CollaborationRefused`].
    #[serde(rename = "collaboration.refused")]
    CollaborationRefused {
        /// The version refused.
        version: i64,
        /// SHA-256 of its file.
        sha256: String,
        /// The member's reason, as it wrote it.
        reason: String,
    },
    /// See [`AuditKind::PolicySynced`].
    #[serde(rename = "policy.synced")]
    PolicySynced {
        /// The version installed.
        version: i64,
        /// The members whose nodes took it.
        nodes: Vec<String>,
    },
    /// See [`AuditKind::PolicySyncFailed`].
    #[serde(rename = "policy.sync_failed")]
    PolicySyncFailed {
        /// The version.
        version: i64,
        /// What every member may read of each problem (no node's reason).
        errors: Vec<String>,
    },
    /// See [`AuditKind::SecretDistributed`].
    #[serde(rename = "secret.distributed")]
    SecretDistributed {
        /// The member whose node sealed it.
        generated_by: String,
        /// The members it was sealed to.
        sealed_to: Vec<String>,
    },
    /// See [`AuditKind::MetadataExported`].
    #[serde(rename = "metadata.exported")]
    MetadataExported {
        /// The version exported.
        version: i64,
        /// SHA-256 of its file.
        sha256: String,
    },
    /// See [`AuditKind::TemplateApproved`].
    #[serde(rename = "template.approved")]
    TemplateApproved(TemplateDecision),
    /// See [`AuditKind::TemplateRevoked`].
    #[serde(rename = "template.revoked")]
    TemplateRevoked(TemplateDecision),
    /// See [`AuditKind::TemplateApprovalRefused`].
    #[serde(rename = "template.approval_refused")]
    TemplateApprovalRefused {
        /// Template name.
        template: String,
        /// Its content hash.
        hash: String,
        /// Why static verification refused it (rules and columns, no values).
        reasons: Vec<String>,
    },
    /// See [`AuditKind::BudgetSet`].
    #[serde(rename = "budget.set")]
    BudgetSet {
        /// The analyst, or `None` for the whole collaboration.
        analyst: Option<String>,
        /// Epsilon per period, in units of 1e-9.
        nano_epsilon: i64,
        /// Delta per period, in units of 1e-18.
        atto_delta: i64,
        /// The refresh period, if any.
        refresh_period_ms: Option<i64>,
        /// When it was set.
        set_at_ms: i64,
    },
    /// See [`AuditKind::BudgetDebited`].
    #[serde(rename = "budget.debited")]
    BudgetDebited {
        /// Query id.
        query: String,
        /// Epsilon, in units of 1e-9.
        nano_epsilon: i64,
        /// Delta, in units of 1e-18.
        atto_delta: i64,
        /// When.
        at_ms: i64,
    },
    /// See [`AuditKind::QuerySubmitted`].
    #[serde(rename = "query.submitted")]
    QuerySubmitted {
        /// Query id.
        query: String,
        /// Always `submitted`.
        state: String,
        /// The analyst's SQL (or template run), as submitted.
        sql: String,
    },
    /// See [`AuditKind::QueryChecked`].
    #[serde(rename = "query.checked")]
    QueryChecked(Transition),
    /// See [`AuditKind::QueryRunning`].
    #[serde(rename = "query.running")]
    QueryRunning(Transition),
    /// See [`AuditKind::QueryReleased`].
    #[serde(rename = "query.released")]
    QueryReleased {
        /// Query id.
        query: String,
        /// Always `released`.
        state: String,
        /// Where the result went, if a node wrote it.
        detail: Option<String>,
        /// Rows of the released result.
        rows: i64,
        /// SHA-256 of the released result.
        result_sha256: String,
    },
    /// See [`AuditKind::QueryRefused`].
    #[serde(rename = "query.refused")]
    QueryRefused(Transition),
    /// See [`AuditKind::QueryFailed`].
    #[serde(rename = "query.failed")]
    QueryFailed(Transition),
    /// See [`AuditKind::FragmentsRan`].
    #[serde(rename = "fragments.ran")]
    FragmentsRan {
        /// Query id.
        query: String,
        /// Fragments run (fixed by the query's shape, never by data).
        fragments: u64,
    },
    /// See [`AuditKind::ResultDelivered`].
    #[serde(rename = "result.delivered")]
    ResultDelivered {
        /// Query id.
        query: String,
        /// SHA-256 of the released result.
        result_sha256: String,
        /// How.
        #[serde(flatten)]
        by: DeliveredBy,
    },
    /// See [`AuditKind::ResultDeliveryFailed`].
    #[serde(rename = "result.delivery_failed")]
    ResultDeliveryFailed {
        /// Query id.
        query: String,
        /// The destination named.
        destination: String,
        /// Why, in words with no data values.
        error: String,
    },
    /// See [`AuditKind::ResultDeleted`].
    #[serde(rename = "result.deleted")]
    ResultDeleted {
        /// Query id.
        query: String,
        /// When it was released.
        released_at_ms: i64,
        /// The retention cutoff it fell before.
        cutoff_ms: i64,
        /// SHA-256 of the result deleted.
        result_sha256: String,
    },
}

/// A member's approval or revocation of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemplateDecision {
    /// Template name.
    pub template: String,
    /// Its content hash.
    pub hash: String,
    /// The collaboration version that records it.
    pub version: i64,
    /// Rule checks static verification ran (0 for a revocation).
    pub checks: u64,
}

impl AuditEvent {
    /// The entry's kind.
    pub fn kind(&self) -> AuditKind {
        match self {
            AuditEvent::CollaborationCreated { .. } => AuditKind::CollaborationCreated,
            AuditEvent::CollaborationApplied { .. } => AuditKind::CollaborationApplied,
            AuditEvent::CollaborationApproved { .. } => AuditKind::CollaborationApproved,
            AuditEvent::CollaborationRefused { .. } => AuditKind::CollaborationRefused,
            AuditEvent::PolicySynced { .. } => AuditKind::PolicySynced,
            AuditEvent::PolicySyncFailed { .. } => AuditKind::PolicySyncFailed,
            AuditEvent::SecretDistributed { .. } => AuditKind::SecretDistributed,
            AuditEvent::MetadataExported { .. } => AuditKind::MetadataExported,
            AuditEvent::TemplateApproved(_) => AuditKind::TemplateApproved,
            AuditEvent::TemplateRevoked(_) => AuditKind::TemplateRevoked,
            AuditEvent::TemplateApprovalRefused { .. } => AuditKind::TemplateApprovalRefused,
            AuditEvent::BudgetSet { .. } => AuditKind::BudgetSet,
            AuditEvent::BudgetDebited { .. } => AuditKind::BudgetDebited,
            AuditEvent::QuerySubmitted { .. } => AuditKind::QuerySubmitted,
            AuditEvent::QueryChecked(_) => AuditKind::QueryChecked,
            AuditEvent::QueryRunning(_) => AuditKind::QueryRunning,
            AuditEvent::QueryReleased { .. } => AuditKind::QueryReleased,
            AuditEvent::QueryRefused(_) => AuditKind::QueryRefused,
            AuditEvent::QueryFailed(_) => AuditKind::QueryFailed,
            AuditEvent::FragmentsRan { .. } => AuditKind::FragmentsRan,
            AuditEvent::ResultDelivered { .. } => AuditKind::ResultDelivered,
            AuditEvent::ResultDeliveryFailed { .. } => AuditKind::ResultDeliveryFailed,
            AuditEvent::ResultDeleted { .. } => AuditKind::ResultDeleted,
        }
    }

    /// The entry's payload, as the chain stores it.
    pub fn payload(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut o)) => {
                o.remove("payload").unwrap_or(serde_json::Value::Null)
            }
            _ => serde_json::Value::Null,
        }
    }

    /// The event of a chain entry (its kind's text and payload), if it is
    /// one of these with the fields its kind has.
    pub fn parse(kind: &str, payload: &serde_json::Value) -> Option<AuditEvent> {
        serde_json::from_value(serde_json::json!({"kind": kind, "payload": payload})).ok()
    }

    /// The query the entry is about, if it is about one.
    pub fn query(&self) -> Option<&str> {
        match self {
            AuditEvent::BudgetDebited { query, .. }
            | AuditEvent::QuerySubmitted { query, .. }
            | AuditEvent::QueryReleased { query, .. }
            | AuditEvent::FragmentsRan { query, .. }
            | AuditEvent::ResultDelivered { query, .. }
            | AuditEvent::ResultDeliveryFailed { query, .. }
            | AuditEvent::ResultDeleted { query, .. } => Some(query),
            AuditEvent::QueryChecked(t)
            | AuditEvent::QueryRunning(t)
            | AuditEvent::QueryRefused(t)
            | AuditEvent::QueryFailed(t) => Some(&t.query),
            _ => None,
        }
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> String {
        x.to_string()
    }

    /// One event of every kind.
    fn samples() -> Vec<AuditEvent> {
        let t = || Transition {
            query: s("q"),
            state: s("running"),
            detail: None,
        };
        let d = || TemplateDecision {
            template: s("t"),
            hash: s("h"),
            version: 2,
            checks: 4,
        };
        vec![
            AuditEvent::CollaborationCreated {
                id: s("c"),
                version: 1,
                sha256: s("h"),
            },
            AuditEvent::CollaborationApplied {
                version: 2,
                sha256: s("h"),
            },
            AuditEvent::CollaborationApproved {
                version: 2,
                sha256: s("h"),
            },
            AuditEvent::CollaborationRefused {
                version: 2,
                sha256: s("h"),
                reason: s("no"),
            },
            AuditEvent::PolicySynced {
                version: 2,
                nodes: vec![s("a")],
            },
            AuditEvent::PolicySyncFailed {
                version: 2,
                errors: vec![s("e")],
            },
            AuditEvent::SecretDistributed {
                generated_by: s("a"),
                sealed_to: vec![s("b")],
            },
            AuditEvent::MetadataExported {
                version: 2,
                sha256: s("h"),
            },
            AuditEvent::TemplateApproved(d()),
            AuditEvent::TemplateRevoked(d()),
            AuditEvent::TemplateApprovalRefused {
                template: s("t"),
                hash: s("h"),
                reasons: vec![s("r")],
            },
            AuditEvent::BudgetSet {
                analyst: None,
                nano_epsilon: 1,
                atto_delta: 0,
                refresh_period_ms: Some(5),
                set_at_ms: 9,
            },
            AuditEvent::BudgetDebited {
                query: s("q"),
                nano_epsilon: 1,
                atto_delta: 0,
                at_ms: 9,
            },
            AuditEvent::QuerySubmitted {
                query: s("q"),
                state: s("submitted"),
                sql: s("SELECT 1"),
            },
            AuditEvent::QueryChecked(t()),
            AuditEvent::QueryRunning(t()),
            AuditEvent::QueryReleased {
                query: s("q"),
                state: s("released"),
                detail: None,
                rows: 3,
                result_sha256: s("h"),
            },
            AuditEvent::QueryRefused(t()),
            AuditEvent::QueryFailed(t()),
            AuditEvent::FragmentsRan {
                query: s("q"),
                fragments: 2,
            },
            AuditEvent::ResultDelivered {
                query: s("q"),
                result_sha256: s("h"),
                by: DeliveredBy::Written {
                    destination: s("out"),
                    kind: s("parquet"),
                    location: s("f"),
                    rows: 3,
                    file_sha256: None,
                },
            },
            AuditEvent::ResultDelivered {
                query: s("q"),
                result_sha256: s("h"),
                by: DeliveredBy::Fetched { bytes: 10 },
            },
            AuditEvent::ResultDeliveryFailed {
                query: s("q"),
                destination: s("out"),
                error: s("e"),
            },
            AuditEvent::ResultDeleted {
                query: s("q"),
                released_at_ms: 1,
                cutoff_ms: 2,
                result_sha256: s("h"),
            },
        ]
    }

    #[test]
    fn every_event_reads_back_from_its_kind_and_payload() {
        let events = samples();
        let kinds: std::collections::HashSet<_> = events.iter().map(|e| e.kind()).collect();
        assert_eq!(
            kinds.len(),
            AuditKind::ALL.len(),
            "one sample of every kind"
        );
        for e in &events {
            let payload = e.payload();
            assert!(payload.is_object(), "{e:?}");
            assert_eq!(
                AuditEvent::parse(e.kind().as_str(), &payload).as_ref(),
                Some(e)
            );
        }
        // A payload without its kind's fields is not that event.
        assert_eq!(
            AuditEvent::parse("fragments.ran", &serde_json::json!({"query": "q"})),
            None
        );
        assert_eq!(
            AuditEvent::parse("query.unknown", &serde_json::json!({})),
            None
        );
    }

    #[test]
    fn payloads_are_as_the_chain_held_them_before_they_were_typed() {
        let e = AuditEvent::FragmentsRan {
            query: s("q1"),
            fragments: 2,
        };
        assert_eq!(
            e.payload(),
            serde_json::json!({"query": "q1", "fragments": 2})
        );
        let e = AuditEvent::QueryRunning(Transition {
            query: s("q1"),
            state: s("running"),
            detail: None,
        });
        assert_eq!(
            e.payload(),
            serde_json::json!({"query": "q1", "state": "running", "detail": null})
        );
        let e = AuditEvent::ResultDelivered {
            query: s("q1"),
            result_sha256: s("h"),
            by: DeliveredBy::Fetched { bytes: 10 },
        };
        assert_eq!(
            e.payload(),
            serde_json::json!({"query": "q1", "result_sha256": "h", "bytes": 10})
        );
    }

    #[test]
    fn no_event_counts_rows_except_of_a_released_result() {
        // ATTACKS 29: a row count of a fragment would tell the querier about
        // another member's data. The only row counts are of released results.
        for e in samples() {
            let payload = e.payload();
            let keys: Vec<&String> = payload.as_object().expect("object").keys().collect();
            let counts_rows = keys
                .iter()
                .any(|k| k.contains("rows") || k.contains("count"));
            let released = matches!(
                e,
                AuditEvent::QueryReleased { .. }
                    | AuditEvent::ResultDelivered {
                        by: DeliveredBy::Written { .. },
                        ..
                    }
            );
            assert!(!counts_rows || released, "{} has {keys:?}", e.kind());
        }
    }

    #[test]
    fn every_kind_reads_back_as_itself_and_no_text_is_shared() {
        let mut seen = std::collections::BTreeSet::new();
        for k in AuditKind::ALL {
            assert_eq!(AuditKind::parse(k.as_str()), Some(*k));
            assert!(seen.insert(k.as_str()), "{k} twice");
        }
        assert_eq!(AuditKind::ALL.len(), 23);
        assert_eq!(AuditKind::parse("query.unknown"), None);
    }
}
