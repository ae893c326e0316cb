//! Authentication between the two nodes: keys derived from the
//! collaboration secret, every message tagged with the session, the
//! fragment's digest and the step.

use airlock_crypto::{PsiMacKey, PSI_TAG_LEN};
use airlock_protocol::{CryptoFragment, CryptoRole, Message};

use crate::{Node, NodeError};

/// A protocol message and its tag, as the hub relays it.
pub(super) fn sealed(
    key: &PsiMacKey,
    from: CryptoRole,
    step: u8,
    digest: &[u8; 32],
    m: Vec<u8>,
) -> Vec<u8> {
    let tag = key.tag(&mac_context(from, step, digest), &m);
    let mut out = m;
    out.extend_from_slice(&tag);
    out
}

/// The message of the other node, if its tag verifies: sent by `from` at
/// `step` of the query with `digest`, under this collaboration's key.
pub(super) fn opened(
    key: &PsiMacKey,
    from: CryptoRole,
    step: u8,
    digest: &[u8; 32],
    message: &Message,
) -> Result<Vec<u8>, NodeError> {
    let mut bytes = message.0.clone();
    if bytes.len() < PSI_TAG_LEN {
        return Err(NodeError::BadFragment(
            "a crypto-mode message carries no tag".into(),
        ));
    }
    let tag = bytes.split_off(bytes.len() - PSI_TAG_LEN);
    if !key.verify(&mac_context(from, step, digest), &bytes, &tag) {
        return Err(NodeError::BadFragment(format!(
            "message {step} of this crypto-mode query is not authenticated by the other member's node"
        )));
    }
    Ok(bytes)
}

/// The digest of a query's fragment as both nodes hold it (the role set to
/// the asker's): messages are authenticated for this query only.
pub(super) fn fragment_digest(f: &CryptoFragment) -> Result<[u8; 32], NodeError> {
    use sha2::Digest as _;
    let mut same = f.clone();
    same.role = CryptoRole::Asker;
    let json = serde_json::to_vec(&same).map_err(|e| NodeError::Local(e.to_string()))?;
    Ok(sha2::Sha256::digest(&json).into())
}

/// What a message's tag covers besides the message (whose header holds
/// the step and the session): who sent it, the step, and the query.
pub(super) fn mac_context(from: CryptoRole, step: u8, digest: &[u8; 32]) -> Vec<u8> {
    let mut c = b"airlock/v1/psi-message".to_vec();
    c.push(match from {
        CryptoRole::Asker => b'A',
        CryptoRole::Responder => b'R',
    });
    c.push(step);
    c.extend_from_slice(digest);
    c
}

impl Node {
    /// The hash key derived from the collaboration secret, which only the
    /// members' nodes hold.
    pub(super) fn psi_hash_key(&self) -> Result<[u8; 32], NodeError> {
        self.derive_from_secret(|s| s.psi_hash_key(self.collab.id()))
    }

    /// A key derived from the collaboration secret, once it is delivered.
    pub(super) fn derive_from_secret<T>(
        &self,
        derive: impl FnOnce(&airlock_crypto::CollaborationSecret) -> T,
    ) -> Result<T, NodeError> {
        let secret = self
            .secret
            .read()
            .map_err(|_| NodeError::Local("the secret lock is poisoned".into()))?;
        match secret.as_ref() {
            Some(s) => Ok(derive(s)),
            None => Err(NodeError::Local(
                "the collaboration secret has not been delivered to this node yet".into(),
            )),
        }
    }

    /// The key authenticating messages between the members' nodes.
    pub(super) fn psi_mac_key(&self) -> Result<PsiMacKey, NodeError> {
        self.derive_from_secret(|s| s.psi_mac_key(self.collab.id()))
    }
}
