//! What a member's node reports after writing a released result to one of
//! its own destinations (a file, a table in its database): the hub records
//! it in the audit chain, so every figure here is about the released result
//! the querier may read, never about another member's data.

use serde::{Deserialize, Serialize};

/// What a node wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delivered {
    /// The destination.
    pub destination: String,
    /// `parquet`, `csv`, `s3`, `delta` or `postgres`.
    pub kind: String,
    /// What was written, within the destination: the file's or object's
    /// name, the Delta table's `version N`, or `table T` in the member's
    /// database. The destination's directory, bucket, prefix and endpoint
    /// stay on the node.
    pub location: String,
    /// Rows written.
    pub rows: u64,
    /// SHA-256 of the result bytes received.
    pub result_sha256: String,
    /// SHA-256 of the file written, or of the object as the store holds it
    /// (files and objects only).
    pub file_sha256: Option<String>,
}
