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
    /// `parquet`, `csv` or `postgres`.
    pub kind: String,
    /// The file written, or `table` in the member's database.
    pub location: String,
    /// Rows written.
    pub rows: u64,
    /// SHA-256 of the result bytes received.
    pub result_sha256: String,
    /// SHA-256 of the file written (files only).
    pub file_sha256: Option<String>,
}
