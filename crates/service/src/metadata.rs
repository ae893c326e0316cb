//! A collaboration's public metadata, exported as a document signed by the
//! exporting hub: members and abilities, their nodes' public keys, the
//! configured tables' schemas and rules, templates with their hashes and
//! approvals, and the policy versions. Another environment verifies the
//! signature against the hub fingerprint it was given out of band, and can
//! then set up the same collaboration; no data is in the document.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use airlock_policy::Collaboration;

/// The document format.
pub const FORMAT: &str = "airlock.collaboration-metadata/v1";
/// Largest document accepted, in bytes.
pub const MAX_DOCUMENT: usize = 4 << 20;

/// The signed envelope.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedDocument {
    /// [`FORMAT`].
    pub format: String,
    /// The [`Metadata`] as JSON text: exactly the bytes signed.
    pub signed: String,
    /// ECDSA P-256 / SHA-256 signature of `signed` (base64).
    pub signature: String,
    /// The exporting hub's certificate (PEM).
    pub certificate: String,
    /// Its fingerprint, `SHA256:...`.
    pub fingerprint: String,
}

/// What is exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    /// Collaboration name.
    pub collaboration: String,
    /// Its id.
    pub id: String,
    /// When the document was made (unix ms).
    pub exported_at_ms: i64,
    /// The current policy version.
    pub policy_version: i64,
    /// SHA-256 of the current collaboration file.
    pub policy_sha256: String,
    /// The current collaboration file.
    pub toml: String,
    /// Every version: `[version, sha256, by member, at ms]`.
    pub versions: Vec<(i64, String, String, i64)>,
    /// Members with their abilities and nodes' public keys.
    pub members: Vec<MemberMeta>,
    /// Configured tables with their schemas (column names and types).
    pub tables: Vec<TableMeta>,
    /// Templates with hash and approvals.
    pub templates: Vec<TemplateMeta>,
}

/// A member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberMeta {
    /// Name.
    pub name: String,
    /// Abilities.
    pub abilities: Vec<String>,
    /// Its node's X25519 sealing key and that key's fingerprint, if it has a node.
    pub node: Option<NodeMeta>,
}

/// A node's public key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeMeta {
    /// X25519 public key (hex).
    pub x25519: String,
    /// Its fingerprint.
    pub fingerprint: String,
}

/// A configured table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableMeta {
    /// Alias.
    pub alias: String,
    /// Owner.
    pub owner: String,
    /// Rule kind.
    pub rule: String,
    /// `[name, Arrow type]` as the owner's node publishes them.
    pub columns: Vec<(String, String)>,
}

/// A template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateMeta {
    /// Name.
    pub name: String,
    /// Content hash.
    pub hash: String,
    /// Purpose.
    pub purpose: String,
    /// Members who approve that hash.
    pub approved_by: Vec<String>,
}

/// Signs `meta` with the hub's certificate and key (PEM).
pub fn sign(meta: &Metadata, cert_pem: &str, key_pem: &str) -> Result<SignedDocument, String> {
    let signed = serde_json::to_string_pretty(meta).map_err(|e| e.to_string())?;
    let signature =
        airlock_crypto::pki::sign(key_pem, signed.as_bytes()).map_err(|e| e.to_string())?;
    Ok(SignedDocument {
        format: FORMAT.to_string(),
        signature: base64::engine::general_purpose::STANDARD.encode(signature),
        fingerprint: airlock_crypto::pki::cert_fingerprint(cert_pem).map_err(|e| e.to_string())?,
        certificate: cert_pem.to_string(),
        signed,
    })
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, String> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        format!("{what}: {path}: {}", e.into_inner())
    })
}

/// Verifies a document: its envelope, that it was signed by a hub whose
/// certificate fingerprint is in `trusted`, the signature, and that the
/// collaboration file in it validates and is the version it names. Any
/// failure refuses the whole document.
pub fn verify(text: &str, trusted: &[String]) -> Result<Metadata, String> {
    if text.len() > MAX_DOCUMENT {
        return Err(format!(
            "the document is {} bytes, more than the {MAX_DOCUMENT} accepted",
            text.len()
        ));
    }
    let doc: SignedDocument = parse(text, "document")?;
    if doc.format != FORMAT {
        return Err(format!("document: format: expected {FORMAT}"));
    }
    if trusted.is_empty() {
        return Err(
            "give the exporting hub's certificate fingerprint to trust (compare it out of band)"
                .into(),
        );
    }
    let fingerprint = airlock_crypto::pki::cert_fingerprint(&doc.certificate)
        .map_err(|e| format!("document: certificate: {e}"))?;
    if fingerprint != doc.fingerprint {
        return Err("document: fingerprint: does not match the certificate".into());
    }
    if !trusted.iter().any(|t| t.eq_ignore_ascii_case(&fingerprint)) {
        return Err(format!(
            "the document was signed by a hub with fingerprint {fingerprint}, which is not trusted here"
        ));
    }
    let signature = base64::engine::general_purpose::STANDARD
        .decode(doc.signature.trim())
        .map_err(|_| "document: signature: not base64".to_string())?;
    airlock_crypto::pki::verify(&doc.certificate, doc.signed.as_bytes(), &signature)
        .map_err(|_| "document: signature: does not verify: the document was changed after it was signed, or was signed by another key".to_string())?;
    let meta: Metadata = parse(&doc.signed, "document: signed")?;
    let collab = Collaboration::from_toml(&meta.toml, "the exported collaboration file")
        .map_err(|e| e.to_string())?;
    if collab.name() != meta.collaboration || collab.id() != meta.id {
        return Err("the collaboration file names another collaboration".into());
    }
    if hex::encode(Sha256::digest(meta.toml.as_bytes())) != meta.policy_sha256 {
        return Err("the collaboration file is not the version the document names".into());
    }
    Ok(meta)
}
