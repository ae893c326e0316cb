//! What the hub asks a member's node when it brings a collaboration to a
//! new version: who the node is ([`Hello`]), install a version
//! ([`Install`] → [`Installed`]: the configured tables' schemas, the only
//! metadata that leaves a node), and the sealed relay of the collaboration
//! secret ([`SecretGenerate`] → [`SealedSecrets`], then [`SecretInstall`]
//! at each recipient). Bytes are [`Message`]s: base64 only in their serde
//! form.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Message;

/// A collaboration as a node holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstalledSummary {
    /// Collaboration id.
    pub id: String,
    /// Collaboration name.
    pub name: String,
    /// Policy version held.
    pub version: i64,
    /// SHA-256 of the text held (what the next approval replaces).
    #[serde(default)]
    pub sha256: String,
    /// Whether the collaboration secret is present.
    pub has_secret: bool,
}

/// A node's answer to `hello`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hello {
    /// The member the node serves.
    pub member: String,
    /// The node's X25519 public key (hex).
    pub x25519: String,
    /// Its fingerprint, to compare out of band.
    pub fingerprint: String,
    /// The public key (hex Ed25519) the node checks its member's approvals
    /// against, if it has one.
    #[serde(default)]
    pub member_key: Option<String>,
    /// Collaborations installed.
    pub collaborations: Vec<InstalledSummary>,
}

/// Install a collaboration's policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Install {
    /// Policy version (increases with every change).
    pub version: i64,
    /// The collaboration file.
    pub toml: String,
    /// The member who applied this version (as the hub authenticated it;
    /// a node trusts it for nothing).
    pub applied_by: String,
    /// Each approving member's Ed25519 signature (hex) of the approval
    /// message (`airlock_crypto::approval::approval_message`) over this
    /// version's id and text. A node installs the version only with a
    /// valid signature by its own member's key.
    #[serde(default)]
    pub approvals: BTreeMap<String, String>,
}

/// A node's answer to `install`: its configured tables' schemas (Arrow IPC
/// schema frames), the only metadata that leaves it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Installed {
    /// Collaboration id.
    pub id: String,
    /// Policy version now held.
    pub version: i64,
    /// Schema per configured table alias.
    pub schemas: BTreeMap<String, Message>,
    /// Whether the collaboration secret is present.
    pub has_secret: bool,
}

/// A recipient of the collaboration secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// Member.
    pub member: String,
    /// X25519 public key (hex), as that member's node announced it.
    pub x25519: String,
}

/// Ask a node to seal the collaboration secret to its peers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretGenerate {
    /// Collaboration id.
    pub collaboration: String,
    /// Who receives it.
    pub recipients: Vec<Recipient>,
}

/// Sealed secrets per member.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SealedSecrets {
    /// Member → sealed blob.
    pub sealed: BTreeMap<String, Message>,
}

/// Deliver a sealed secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretInstall {
    /// Collaboration id.
    pub collaboration: String,
    /// The member whose node sealed it (its key must be pinned).
    pub from: String,
    /// Sealed blob.
    pub sealed: Message,
}

/// The context a collaboration secret is sealed under: binds the blob to one
/// collaboration and one recipient.
pub fn seal_context(collaboration_id: &str, recipient: &str) -> Vec<u8> {
    format!("airlock/v1/collaboration-secret/{collaboration_id}/{recipient}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_travel_as_base64_and_bad_base64_is_refused() {
        let s = SecretInstall {
            collaboration: "c".into(),
            from: "a".into(),
            sealed: Message(vec![0, 1, 255]),
        };
        let json = serde_json::to_string(&s).expect("encode");
        assert_eq!(json, r#"{"collaboration":"c","from":"a","sealed":"AAH/"}"#);
        let back: SecretInstall = serde_json::from_str(&json).expect("decode");
        assert_eq!(back.sealed, s.sealed);
        let bad = r#"{"collaboration":"c","from":"a","sealed":"not base64!"}"#;
        let e = serde_json::from_str::<SecretInstall>(bad).expect_err("refused");
        assert!(e.to_string().contains("are not base64"), "{e}");
    }
}
