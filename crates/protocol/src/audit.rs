//! The kinds of audit entries: one vocabulary for the hub and store that
//! write the chain and the members' tools that read it (`airlock audit`,
//! `airlock records`). On the chain each kind is its text (`query.released`),
//! hashed with the entry; [`AuditKind::parse`] reads it back.

use std::fmt;

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

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::AuditKind;

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
