//! `node.toml` and `hub.toml`: what a node and a hub process are told at
//! start. Relative paths are resolved against the file's own directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use airlock_node::catalog::{Catalog, CatalogFile, Location, S3Credentials};

use crate::ServiceError;

/// The TLS material of a process: its certificate and key, and the CA its
/// peers' certificates must chain to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate of this process.
    pub cert: PathBuf,
    /// PEM private key of this process.
    pub key: PathBuf,
    /// PEM certificate of the CA peers must chain to.
    pub ca: PathBuf,
}

/// A member's node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The member this node serves.
    pub member: String,
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// Directory the catalog's local files are read from (and confined to).
    pub data_dir: PathBuf,
    /// The node's catalog: where each dataset of its member lives, by the
    /// name collaborations use (`[datasets.NAME]`, docs/sources.md). Never
    /// sent anywhere.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub datasets: BTreeMap<String, Location>,
    /// A catalog file with more `[datasets.NAME]` entries, relative to
    /// `node.toml` (its credential files are relative to itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog: Option<PathBuf>,
    /// Where the node keeps the collaborations installed on it and their
    /// secrets.
    pub state_dir: PathBuf,
    /// The node's TLS certificate, key and CA.
    pub tls: TlsFiles,
    /// The node's X25519 key (made by `airlock keys init`).
    pub x25519_key: PathBuf,
    /// SHA-256 fingerprints of the hub client certificates this node accepts
    /// fragments and policy from (`SHA256:<hex>`).
    pub trusted_hubs: Vec<String>,
    /// The public half (64 hex characters) of the member's approval key
    /// (`airlock keys member`). The node installs a collaboration version
    /// that involves its member only with that member's signature over the
    /// version's exact text; without this setting it installs none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_key: Option<String>,
    /// Pinned X25519 fingerprints of the other members' nodes: the node
    /// seals a collaboration secret only to a key whose fingerprint is
    /// pinned here, so a hub cannot substitute its own key.
    #[serde(default)]
    pub peers: BTreeMap<String, String>,
    /// Where results delivered to this member are written, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub destinations: BTreeMap<String, Destination>,
    /// What one fragment may ask of the node.
    #[serde(default)]
    pub limits: NodeLimits,
}

/// A place a node writes results delivered to its member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Destination {
    /// One Parquet file per result in a directory (relative to `node.toml`).
    Parquet {
        /// Directory.
        path: PathBuf,
    },
    /// One CSV file (with a header) per result in a directory.
    Csv {
        /// Directory.
        path: PathBuf,
    },
    /// Rows appended to a table of the member's own PostgreSQL, with the
    /// query id in an `airlock_query_id` column; created on first use.
    Postgres {
        /// `postgres://...` (the password may come from the environment,
        /// as libpq reads it).
        url: String,
        /// Table name (a lowercase SQL identifier).
        table: String,
    },
    /// One object per result under a prefix of a bucket in S3 or an
    /// S3-compatible store, written once and read back for its hash.
    S3 {
        /// The bucket.
        bucket: String,
        /// The prefix objects are written under (empty: the bucket's top).
        #[serde(default)]
        prefix: String,
        /// `parquet` (the default) or `csv`.
        #[serde(default)]
        format: ResultFormat,
        /// The service's URL (AWS's own if not given).
        #[serde(default)]
        endpoint: Option<String>,
        /// The region (`us-east-1` if not given).
        #[serde(default)]
        region: Option<String>,
        /// Whether an `http://` endpoint may be used (off: TLS only).
        #[serde(default)]
        allow_http: bool,
        /// Where the credentials come from, as for an `s3` dataset.
        #[serde(default)]
        credentials: S3Credentials,
    },
    /// Rows appended to a Delta Lake table, one version per result, with
    /// the query id in an `airlock_query_id` column; made on first use. In
    /// a local directory (`path`, relative to `node.toml`) or under a
    /// prefix of a bucket (`bucket`, with the `s3` kind's fields).
    Delta {
        /// The table's directory.
        #[serde(default)]
        path: Option<PathBuf>,
        /// The bucket, for a table in object storage.
        #[serde(default)]
        bucket: Option<String>,
        /// The table's prefix in the bucket.
        #[serde(default)]
        prefix: String,
        /// The service's URL (AWS's own if not given).
        #[serde(default)]
        endpoint: Option<String>,
        /// The region (`us-east-1` if not given).
        #[serde(default)]
        region: Option<String>,
        /// Whether an `http://` endpoint may be used.
        #[serde(default)]
        allow_http: bool,
        /// Where the store's credentials come from.
        #[serde(default)]
        credentials: S3Credentials,
    },
}

/// The file format of a result written as an object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResultFormat {
    /// Apache Parquet.
    #[default]
    Parquet,
    /// CSV with a header row.
    Csv,
}

/// One node, as the hub reaches it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// The member whose node it is.
    pub member: String,
    /// `https://host:port` of its Arrow Flight service.
    pub url: String,
}

/// The hub.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// Address the REST API listens on (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// Address the Flight SQL endpoint listens on (TLS with the hub's
    /// certificate; default: the REST API's host, a free port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flight_sql_listen: Option<String>,
    /// `sqlite:PATH` (default backend) or `postgres://...`.
    pub database: String,
    /// The hub's certificate (server for REST, client for the nodes), key
    /// and CA.
    pub tls: TlsFiles,
    /// The members' nodes.
    #[serde(default, rename = "node")]
    pub nodes: Vec<NodeEntry>,
    /// Debugging and tests: append every byte exchanged with nodes (tickets,
    /// actions, Flight data) to this file.
    #[serde(default)]
    pub wire_tap: Option<PathBuf>,
    /// What one request or query may ask of the hub.
    #[serde(default)]
    pub limits: HubLimits,
}

/// The sizes of one query's text and expressions (the guard's limits),
/// the same settings in `hub.toml` and `node.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryLimits {
    /// The longest query text, in bytes.
    pub max_sql_bytes: usize,
    /// The deepest expression.
    pub max_expression_depth: usize,
    /// The most expression nodes in one query.
    pub max_expression_nodes: usize,
    /// The deepest nesting of parentheses in the text.
    pub max_parenthesis_depth: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        let g = airlock_guard::Limits::default();
        QueryLimits {
            max_sql_bytes: g.max_sql_bytes,
            max_expression_depth: g.max_expression_depth,
            max_expression_nodes: g.max_expression_nodes,
            max_parenthesis_depth: g.max_parenthesis_depth,
        }
    }
}

impl QueryLimits {
    /// As the guard takes them.
    pub fn guard(&self) -> airlock_guard::Limits {
        airlock_guard::Limits {
            max_sql_bytes: self.max_sql_bytes,
            max_expression_depth: self.max_expression_depth,
            max_expression_nodes: self.max_expression_nodes,
            max_parenthesis_depth: self.max_parenthesis_depth,
        }
    }
}

/// `[limits]` of `hub.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubLimits {
    /// The largest request body, in bytes (collaboration files, templates
    /// and queries included).
    pub max_request_bytes: usize,
    /// Queries of one member that may be checked or running at once.
    pub max_concurrent_queries_per_member: usize,
    /// A query still running after this many seconds is stopped (failed).
    pub query_timeout_secs: u64,
    /// The executor's memory pool for one query, in bytes.
    pub executor_memory_bytes: usize,
    /// Open connections from one IP address; more are closed at once (a
    /// client holding idle connections cannot use up the hub's).
    pub max_connections_per_address: usize,
    /// Seconds a connection may take to send a request's headers (and,
    /// idle, its next request's) before it is closed.
    pub header_read_timeout_secs: u64,
    /// Versions one collaboration may have; an apply beyond is refused
    /// (each stored version is read back by the collaboration's views).
    pub max_versions_per_collaboration: i64,
    /// The query's size limits, checked by the hub's guard
    /// (`[limits.query]`).
    pub query: QueryLimits,
}

impl Default for HubLimits {
    fn default() -> Self {
        HubLimits {
            max_request_bytes: 1024 * 1024,
            max_concurrent_queries_per_member: 4,
            query_timeout_secs: 600,
            executor_memory_bytes: 2 * 1024 * 1024 * 1024,
            max_connections_per_address: 64,
            header_read_timeout_secs: 10,
            max_versions_per_collaboration: 1000,
            query: QueryLimits::default(),
        }
    }
}

/// `[limits]` of `node.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeLimits {
    /// The memory pool of one fragment, in bytes.
    pub memory_bytes: usize,
    /// The most rows one fragment may ship to the hub.
    pub max_rows_per_fragment: usize,
    /// The query's size limits, checked by the node's own guard
    /// (`[limits.query]`).
    pub query: QueryLimits,
}

impl Default for NodeLimits {
    fn default() -> Self {
        NodeLimits {
            memory_bytes: 2 * 1024 * 1024 * 1024,
            max_rows_per_fragment: 50_000_000,
            query: QueryLimits::default(),
        }
    }
}

/// Reads a configuration, key or certificate file; the error names it.
pub(crate) fn read(path: &Path) -> Result<String, ServiceError> {
    std::fs::read_to_string(path)
        .map_err(|e| ServiceError::Config(format!("cannot read {}: {e}", path.display())))
}

fn base(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn resolve(base: &Path, p: &mut PathBuf) {
    if p.is_relative() {
        *p = base.join(&*p);
    }
}

impl TlsFiles {
    fn resolve(&mut self, base: &Path) {
        resolve(base, &mut self.cert);
        resolve(base, &mut self.key);
        resolve(base, &mut self.ca);
    }
}

/// Credential files of S3 entries, made absolute against `base`.
fn resolve_credentials(base: &Path, datasets: &mut BTreeMap<String, Location>) {
    for location in datasets.values_mut() {
        for path in location.credential_files_mut() {
            resolve(base, path);
        }
    }
}

impl NodeConfig {
    /// The node's catalog (`datasets`, with the catalog file's merged in by
    /// [`NodeConfig::load`]), local files under `data_dir`.
    pub fn catalog(&self) -> Catalog {
        Catalog::new(self.datasets.clone(), &self.data_dir, &self.data_dir)
    }

    /// Reads and validates a `node.toml`; relative paths become absolute.
    pub fn load(path: &Path) -> Result<NodeConfig, ServiceError> {
        let mut c: NodeConfig = toml::from_str(&read(path)?)
            .map_err(|e| ServiceError::Config(format!("{}: {e}", path.display())))?;
        if c.member.trim().is_empty() {
            return Err(ServiceError::Config(format!(
                "{}: member is empty",
                path.display()
            )));
        }
        if c.trusted_hubs.is_empty() {
            return Err(ServiceError::Config(format!(
                "{}: trusted_hubs is empty: the node would accept fragments from no hub",
                path.display()
            )));
        }
        if let Some(k) = &c.member_key {
            if !airlock_crypto::approval::is_public_key(k) {
                return Err(ServiceError::Config(format!(
                    "{}: member_key must be 64 hexadecimal characters (the public key `airlock keys member` prints)",
                    path.display()
                )));
            }
        }
        let b = base(path);
        resolve_credentials(&b, &mut c.datasets);
        if let Some(file) = &mut c.catalog {
            resolve(&b, file);
            let text = read(file)?;
            let mut more: CatalogFile = toml::from_str(&text)
                .map_err(|e| ServiceError::Config(format!("{}: {e}", file.display())))?;
            resolve_credentials(&base(file), &mut more.datasets);
            for (name, location) in more.datasets {
                if c.datasets.contains_key(&name) {
                    return Err(ServiceError::Config(format!(
                        "{}: dataset '{name}' is registered in node.toml too",
                        file.display()
                    )));
                }
                c.datasets.insert(name, location);
            }
        }
        resolve(&b, &mut c.data_dir);
        resolve(&b, &mut c.state_dir);
        resolve(&b, &mut c.x25519_key);
        c.tls.resolve(&b);
        for (name, d) in &mut c.destinations {
            let ok_name = !name.is_empty()
                && name.chars().all(|ch| {
                    ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_' || ch == '-'
                });
            if !ok_name {
                return Err(ServiceError::Config(format!(
                    "{}: destination '{name}': names are lowercase letters, digits, '_' and '-'",
                    path.display()
                )));
            }
            match d {
                Destination::Parquet { path: p } | Destination::Csv { path: p } => resolve(&b, p),
                Destination::S3 {
                    bucket,
                    credentials,
                    ..
                } => {
                    if bucket.is_empty() {
                        return Err(ServiceError::Config(format!(
                            "{}: destination '{name}': bucket is empty",
                            path.display()
                        )));
                    }
                    if let S3Credentials::File { path: f, .. } = credentials {
                        resolve(&b, f);
                    }
                }
                Destination::Delta {
                    path: dir,
                    bucket,
                    credentials,
                    ..
                } => {
                    match (dir.as_mut(), bucket) {
                        (Some(dir), None) => resolve(&b, dir),
                        (None, Some(bucket)) if !bucket.is_empty() => {}
                        _ => {
                            return Err(ServiceError::Config(format!(
                                "{}: destination '{name}': a delta destination has a path or a (non-empty) bucket, not both",
                                path.display()
                            )))
                        }
                    }
                    if let S3Credentials::File { path: f, .. } = credentials {
                        resolve(&b, f);
                    }
                }
                Destination::Postgres { url, table } => {
                    let ident = table
                        .chars()
                        .next()
                        .is_some_and(|ch| ch.is_ascii_lowercase() || ch == '_')
                        && table.len() <= 63
                        && table
                            .chars()
                            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
                    if !ident {
                        return Err(ServiceError::Config(format!(
                            "{}: destination '{name}': table must be a lowercase SQL identifier",
                            path.display()
                        )));
                    }
                    if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                        return Err(ServiceError::Config(format!(
                            "{}: destination '{name}': url must be postgres://...",
                            path.display()
                        )));
                    }
                }
            }
        }
        Ok(c)
    }
}

impl HubConfig {
    /// Reads and validates a `hub.toml`; relative paths become absolute.
    pub fn load(path: &Path) -> Result<HubConfig, ServiceError> {
        let mut c: HubConfig = toml::from_str(&read(path)?)
            .map_err(|e| ServiceError::Config(format!("{}: {e}", path.display())))?;
        let b = base(path);
        c.tls.resolve(&b);
        if let Some(t) = &mut c.wire_tap {
            resolve(&b, t);
        }
        if let Some(rest) = c.database.strip_prefix("sqlite:") {
            let rest = rest.trim_start_matches("//");
            let p = Path::new(rest);
            if p.is_relative() {
                c.database = format!("sqlite:{}", b.join(p).display());
            }
        }
        // 0 would lock every client out, or forbid every new version;
        // the other limits at 0 refuse what they limit, by name.
        let at_least_one = [
            (
                "max_connections_per_address",
                c.limits.max_connections_per_address as u64,
            ),
            (
                "header_read_timeout_secs",
                c.limits.header_read_timeout_secs,
            ),
            (
                "max_versions_per_collaboration",
                u64::try_from(c.limits.max_versions_per_collaboration).unwrap_or(0),
            ),
        ];
        for (name, value) in at_least_one {
            if value == 0 {
                return Err(ServiceError::Config(format!(
                    "{}: [limits] {name} must be at least 1",
                    path.display()
                )));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for n in &c.nodes {
            if !seen.insert(n.member.clone()) {
                return Err(ServiceError::Config(format!(
                    "{}: member '{}' has two [[node]] entries",
                    path.display(),
                    n.member
                )));
            }
            if !n.url.starts_with("https://") {
                return Err(ServiceError::Config(format!(
                    "{}: node url of '{}' must start with https://",
                    path.display(),
                    n.member
                )));
            }
        }
        Ok(c)
    }
}
