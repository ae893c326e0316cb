//! # airlock-service: the hub and the nodes as separate processes
//!
//! ```text
//!  analyst ──HTTPS+token──▶ hub (axum REST, store: SQLite|Postgres, audit chain)
//!                            │  Arrow Flight over mutual TLS (tickets: fragment + policy version)
//!                            ▼
//!               node of each member (own rules, own secret, data read in place)
//! ```
//!
//! - [`node_service`]: `airlock node serve`, a Flight service accepting calls
//!   only from trusted hub certificates; it installs collaboration policies
//!   pushed by the hub (1:N: one dataset, many collaborations, each with its
//!   own version, rules and secret) and re-checks every fragment.
//! - [`hub_service`]: `airlock hub serve`, the REST API, query lifecycle,
//!   policy sync, sealed-secret relay and the executor.
//! - [`links`]: the hub's Flight client (progress, wire tap).
//! - [`client`]: the CLI's REST client.
//! - [`metadata`]: a collaboration's public metadata, signed by its hub.
//! - [`proto`], [`api`], [`config`]: what travels and what is configured.

pub mod api;
pub mod client;
pub mod config;
pub mod delivery;
pub mod hub_service;
pub mod ledger;
pub mod links;
pub mod metadata;
pub mod node_service;
pub mod proto;
pub mod records;
pub mod results;
pub mod tls_accept;

use thiserror::Error;

/// Errors of the services.
#[derive(Debug, Error)]
pub enum ServiceError {
    /// A configuration file, key or certificate is wrong.
    #[error("{0}")]
    Config(String),
    /// A socket or file operation failed.
    #[error("{0}")]
    Io(String),
    /// The hub answered with an error.
    #[error("{message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// The error body's code.
        code: crate::api::ErrorCode,
        /// The error body's message.
        message: String,
    },
}

/// Makes ring the process's rustls crypto provider (idempotent).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
