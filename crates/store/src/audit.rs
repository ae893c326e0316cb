//! The audit chain: entries, their hashes, verification, JSONL export.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::StoreError;

/// The `prev_hash` of the first entry of every chain: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One entry of a collaboration's audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEntry {
    /// The collaboration (by name) whose chain this is.
    pub collab: String,
    /// Position in the chain: 1, 2, 3, … without gaps.
    pub seq: i64,
    /// When it was appended, unix milliseconds (never less than the
    /// previous entry's).
    pub at_ms: i64,
    /// What happened, e.g. `query.released`.
    pub kind: String,
    /// Who did it: a member name, or `hub`.
    pub actor: String,
    /// Details, as canonical JSON text (see [`canonical_json`]).
    pub payload: String,
    /// The previous entry's `hash`; [`GENESIS_HASH`] for seq 1.
    pub prev_hash: String,
    /// This entry's hash (see the crate documentation), lowercase hex.
    pub hash: String,
}

impl AuditEntry {
    /// The hash this entry should have, computed from its contents and its
    /// `prev_hash`:
    ///
    /// ```text
    /// hex(SHA-256(prev_hash || "\n" || [collab, seq, at_ms, kind, actor, payload]))
    /// ```
    ///
    /// where `prev_hash` is the hex text and the array is compact JSON
    /// (serde_json's encoding, no whitespace) with `payload` as a JSON
    /// *string* holding the canonical payload text.
    pub fn expected_hash(&self) -> String {
        entry_hash(
            &self.prev_hash,
            &self.collab,
            self.seq,
            self.at_ms,
            &self.kind,
            &self.actor,
            &self.payload,
        )
    }

    /// The payload parsed as JSON.
    pub fn payload_json(&self) -> Result<Value, StoreError> {
        serde_json::from_str(&self.payload).map_err(|e| {
            StoreError::BadInput(format!(
                "audit entry {}: payload is not JSON: {e}",
                self.seq
            ))
        })
    }
}

/// Computes an entry's hash; see [`AuditEntry::expected_hash`].
pub(crate) fn entry_hash(
    prev_hash: &str,
    collab: &str,
    seq: i64,
    at_ms: i64,
    kind: &str,
    actor: &str,
    payload: &str,
) -> String {
    let body = serde_json::json!([collab, seq, at_ms, kind, actor, payload]).to_string();
    let mut hasher = Sha256::new();
    hasher.update(prev_hash.as_bytes());
    hasher.update(b"\n");
    hasher.update(body.as_bytes());
    hex::encode(hasher.finalize())
}

/// Canonical JSON text of a value: object keys sorted by their UTF-8 bytes
/// at every level, no whitespace, serde_json's string and number encoding.
pub fn canonical_json(value: &Value) -> String {
    canonical(value).to_string()
}

fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let mut out = serde_json::Map::with_capacity(map.len());
            for key in keys {
                if let Some(v) = map.get(key) {
                    out.insert(key.clone(), canonical(v));
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// Where and why an audit chain fails verification.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("audit entry {seq}: {reason}")]
pub struct ChainBreak {
    /// The sequence number at which the chain breaks.
    pub seq: i64,
    /// What is wrong there.
    pub reason: String,
}

fn brk(seq: i64, reason: impl Into<String>) -> ChainBreak {
    ChainBreak {
        seq,
        reason: reason.into(),
    }
}

/// Verifies a whole chain, in order from seq 1: one collaboration, seqs
/// 1, 2, 3, … without gaps, each `prev_hash` the previous entry's `hash`
/// (the first one [`GENESIS_HASH`]), and each `hash` matching the entry's
/// contents. Detects edited contents or hashes, reordered or removed
/// entries and entries from another chain. Entries removed at the end are
/// detected only against a known head: [`verify_chain_with_head`].
pub fn verify_chain(entries: &[AuditEntry]) -> Result<(), ChainBreak> {
    let Some(first) = entries.first() else {
        return Ok(());
    };
    let collab = &first.collab;
    let mut prev_hash = GENESIS_HASH;
    for (index, entry) in entries.iter().enumerate() {
        let expected_seq = index as i64 + 1;
        if &entry.collab != collab {
            return Err(brk(
                entry.seq,
                format!(
                    "belongs to collaboration {:?}, not {:?} (mixed chains)",
                    entry.collab, collab
                ),
            ));
        }
        if entry.seq != expected_seq {
            return Err(brk(
                expected_seq,
                format!(
                    "missing or out of order: entry {} is in its place (removed or reordered)",
                    entry.seq
                ),
            ));
        }
        if entry.prev_hash != prev_hash {
            return Err(brk(
                entry.seq,
                if index == 0 {
                    "the first entry's prev_hash is not 64 zeros".to_string()
                } else {
                    format!(
                        "prev_hash does not match the hash of entry {} (removed, reordered or replaced)",
                        entry.seq - 1
                    )
                },
            ));
        }
        if entry.expected_hash() != entry.hash {
            return Err(brk(entry.seq, "hash does not match its contents (edited)"));
        }
        prev_hash = &entry.hash;
    }
    Ok(())
}

/// [`verify_chain`], and the last entry's hash must be `expected_head_hash`
/// (the head recorded earlier, e.g. from the store or a receipt), which
/// detects entries removed at the end. An empty chain's head is
/// [`GENESIS_HASH`].
pub fn verify_chain_with_head(
    entries: &[AuditEntry],
    expected_head_hash: &str,
) -> Result<(), ChainBreak> {
    verify_chain(entries)?;
    let (last_seq, head) = match entries.last() {
        Some(last) => (last.seq, last.hash.as_str()),
        None => (0, GENESIS_HASH),
    };
    if head != expected_head_hash {
        return Err(brk(
            last_seq + 1,
            format!(
                "missing: the chain ends at entry {last_seq}, whose hash is not the expected head (entries removed at the end)"
            ),
        ));
    }
    Ok(())
}

/// The entries as JSON Lines: one JSON object per line, fields in the order
/// of [`AuditEntry`], each line ending in `\n`.
pub fn export_jsonl(entries: &[AuditEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        let line = serde_json::json!({
            "collab": e.collab,
            "seq": e.seq,
            "at_ms": e.at_ms,
            "kind": e.kind,
            "actor": e.actor,
            "payload": e.payload,
            "prev_hash": e.prev_hash,
            "hash": e.hash,
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}

/// Parses [`export_jsonl`]'s output. Blank lines are skipped; a line that
/// is not an entry (bad JSON, a missing or unknown field) is refused with
/// its line number. Does not verify the chain: see [`verify_chain`].
pub fn parse_jsonl(text: &str) -> Result<Vec<AuditEntry>, StoreError> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry: AuditEntry = serde_json::from_str(line)
            .map_err(|e| StoreError::BadInput(format!("audit JSONL line {}: {e}", index + 1)))?;
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_level() {
        let v = serde_json::json!({"b": 1, "a": {"z": [{"y": 1, "x": 2}], "c": null}});
        assert_eq!(
            canonical_json(&v),
            r#"{"a":{"c":null,"z":[{"x":2,"y":1}]},"b":1}"#
        );
    }

    #[test]
    fn hash_construction_is_as_documented() {
        let h = entry_hash(GENESIS_HASH, "c", 1, 5, "k", "a", r#"{"x":1}"#);
        let text = format!("{GENESIS_HASH}\n[\"c\",1,5,\"k\",\"a\",\"{{\\\"x\\\":1}}\"]");
        assert_eq!(h, hex::encode(Sha256::digest(text.as_bytes())));
    }
}
