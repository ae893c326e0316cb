//! # airlock-cli: the `airlock` command
//!
//! `airlock demo` runs a whole collaboration in one process; `airlock check`
//! and `airlock query` work on a collaboration file; `airlock bench`
//! measures Airlock against plain DataFusion. `airlock up` starts a hub and
//! nodes as separate processes; `airlock query --hub` and `airlock collab`
//! talk to a hub. The binary's `main` only
//! parses arguments; everything else is here so tests can call it.

pub mod bench;
pub mod bench_source;
pub mod cluster;
pub mod data;
pub mod demo;
pub mod interop;
pub mod output;
pub mod place;
pub mod psibench;
pub mod records;
pub mod remote;
pub mod templates;
pub mod up;
