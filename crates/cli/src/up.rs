//! `airlock up`: a hub and one node per contributing member of the demo
//! collaboration, as separate processes on loopback, with certificates and
//! keys made for the occasion.
//!
//! ```text
//!  DIR-cluster/ca.crt, ca.key             the cluster CA (mutual TLS)
//!  DIR-cluster/hub/{hub.toml,tls.*,hub.db} the hub
//!  DIR-cluster/nodes/<member>/{node.toml,tls.*,x25519.key,state/}
//!  DIR-cluster/members/<member>/member.key  each member's approval key
//!  DIR-cluster/cluster.json               addresses, tokens, pids (for scripts and tests)
//!
//! The cluster's keys, tokens and state sit beside the data directory `DIR`
//! the nodes read datasets from, never inside it, so no collaboration can
//! name one of them as a dataset.
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use airlock_crypto::approval::MemberKey;
use airlock_crypto::pki::{self, Ca};
use airlock_crypto::sealing::{self, NodeKeys};
use airlock_policy::Ability;
use airlock_service::client::HubClient;
use airlock_service::config::{Destination, HubConfig, NodeConfig, NodeEntry, TlsFiles};
use airlock_service::links::node_server_name;
use serde::{Deserialize, Serialize};

use crate::cluster::{load_collaboration, CliError};
use crate::data;

/// What `airlock up` started, written to `DIR/cluster/cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// The hub's REST URL.
    pub hub: String,
    /// The hub's Flight SQL URL (`grpc+tls://HOST:PORT`).
    #[serde(default)]
    pub flight_sql: String,
    /// The CA certificate clients must trust.
    pub ca: PathBuf,
    /// The collaboration created on the hub.
    pub collaboration: String,
    /// The member who runs queries in the demo.
    pub analyst: String,
    /// An API token per member.
    pub tokens: BTreeMap<String, String>,
    /// The approval key of each contributing member.
    #[serde(default)]
    pub keys: BTreeMap<String, PathBuf>,
    /// Each node's Flight URL.
    pub nodes: BTreeMap<String, String>,
    /// The hub's configuration file (to restart it by hand).
    pub hub_config: PathBuf,
    /// Process ids.
    pub pids: BTreeMap<String, u32>,
}

/// Options of `airlock up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Directory of the demo data (written if missing).
    pub dir: PathBuf,
    /// Audience rows if the data must be written.
    pub rows: usize,
    /// Record every byte between hub and nodes into this file.
    pub wire_tap: Option<PathBuf>,
    /// The `airlock` binary to start the services with.
    pub bin: PathBuf,
    /// A PostgreSQL URL each node also offers as result destination
    /// `warehouse` (table `airlock_results_MEMBER`).
    pub results_postgres: Option<String>,
    /// A bucket each node also offers as result destinations `objects`
    /// (Parquet objects) and `lake-s3` (a Delta table), under
    /// `PREFIX/results/MEMBER`; credentials from the nodes' `AWS_*`.
    pub results_s3: Option<crate::place::Bucket>,
    /// `[limits]` of the hub.
    pub hub_limits: airlock_service::config::HubLimits,
    /// `[limits]` of every node.
    pub node_limits: airlock_service::config::NodeLimits,
}

/// A running cluster; dropping it stops every process.
pub struct Running {
    children: Vec<(String, Child)>,
    /// Where everything is.
    pub info: ClusterInfo,
}

fn fail(what: &str) -> impl Fn(String) -> CliError + '_ {
    move |e| CliError::Failed(format!("{what}: {e}"))
}

fn io(what: &str) -> impl Fn(std::io::Error) -> CliError + '_ {
    move |e| CliError::Failed(format!("{what}: {e}"))
}

fn write_toml<T: Serialize>(path: &Path, value: &T) -> Result<(), CliError> {
    let text = toml::to_string_pretty(value).map_err(|e| CliError::Failed(e.to_string()))?;
    std::fs::write(path, text).map_err(io("writing a config file"))
}

/// A service process `airlock up` started.
pub struct Started {
    /// The process.
    pub child: Child,
    /// Its `listening on https://ADDR` address.
    pub url: String,
    /// The `flight-sql grpc+tls://ADDR` URL it printed before, if any.
    pub flight_sql: Option<String>,
}

/// Starts `airlock <args> --exit-with-stdin` and waits for its `listening
/// on https://ADDR` line (and takes a `flight-sql URL` line before it);
/// the rest of its output is passed through.
pub fn spawn(bin: &Path, name: &str, args: &[&str]) -> Result<Started, CliError> {
    let mut child = Command::new(bin)
        .args(args)
        .arg("--exit-with-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(io("starting a service process"))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| CliError::Failed("no stdout".into()))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let label = name.to_string();
    std::thread::spawn(move || {
        let mut sent = false;
        let mut flight_sql = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if !sent {
                if let Some(url) = line.strip_prefix("flight-sql ") {
                    flight_sql = Some(url.trim().to_string());
                    continue;
                }
                if let Some(i) = line.find("listening on https://") {
                    let addr = line[i + "listening on ".len()..]
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = tx.send((addr, flight_sql.take()));
                    sent = true;
                    continue;
                }
            }
            println!("[{label}] {line}");
        }
    });
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok((url, flight_sql)) => Ok(Started {
            child,
            url,
            flight_sql,
        }),
        Err(_) => {
            let _ = child.kill();
            let status = child.wait().ok();
            Err(CliError::Failed(format!(
                "{name} did not start (exit status {status:?}); see its messages above"
            )))
        }
    }
}

/// Where `airlock up` keeps the cluster of the data directory `dir`:
/// `DIR-cluster` beside it (outside the nodes' data directory).
pub fn cluster_dir(dir: &Path) -> PathBuf {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_else(|| "airlock".into());
    dir.with_file_name(format!("{name}-cluster"))
}

/// Writes keys, certificates and configs under `DIR-cluster`, starts the
/// nodes and the hub, issues a token per member and creates the demo
/// collaboration on the hub.
pub async fn start(opts: &UpOptions) -> Result<Running, CliError> {
    let dir = std::path::absolute(&opts.dir).map_err(io("resolving the directory"))?;
    let collab_file = dir.join("collaboration.toml");
    if !collab_file.exists() {
        println!("Writing sample data into {} ...", dir.display());
        data::write_demo(&dir, opts.rows, true).map_err(CliError::Failed)?;
    }
    let collab = load_collaboration(&collab_file)?;
    let toml_text =
        std::fs::read_to_string(&collab_file).map_err(io("reading the collaboration"))?;
    let root = cluster_dir(&dir);
    if root.exists() {
        std::fs::remove_dir_all(&root).map_err(io("clearing the previous cluster"))?;
    }
    std::fs::create_dir_all(root.join("hub")).map_err(io("creating the cluster directory"))?;

    let ca = Ca::generate(collab.name()).map_err(|e| fail("CA")(e.to_string()))?;
    let ca_path = root.join("ca.crt");
    std::fs::write(&ca_path, ca.cert_pem()).map_err(io("writing the CA"))?;
    pki::write_private(&root.join("ca.key"), &ca.key_pem())
        .map_err(|e| fail("writing the CA key")(e.to_string()))?;
    let issue = |cn: &str, sans: &[&str], dir: &Path| -> Result<String, CliError> {
        let leaf = ca
            .issue(cn, sans)
            .map_err(|e| fail("certificate")(e.to_string()))?;
        std::fs::write(dir.join("tls.crt"), &leaf.cert_pem).map_err(io("writing a certificate"))?;
        pki::write_private(&dir.join("tls.key"), &leaf.key_pem)
            .map_err(|e| fail("writing a key")(e.to_string()))?;
        pki::cert_fingerprint(&leaf.cert_pem).map_err(|e| fail("fingerprint")(e.to_string()))
    };
    let hub_dir = root.join("hub");
    let hub_fp = issue("hub", &["localhost", "127.0.0.1", "hub.airlock"], &hub_dir)?;

    let providers: Vec<String> = collab.providers();
    // Each node's catalog holds its own member's datasets only, from the
    // directory's catalog file (one process's catalog, split by owner).
    let catalog_file = dir.join(airlock_node::catalog::CATALOG_FILE);
    let catalog: airlock_node::catalog::CatalogFile = toml::from_str(
        &std::fs::read_to_string(&catalog_file).map_err(io("reading catalog.toml"))?,
    )
    .map_err(|e| fail("catalog.toml")(e.to_string()))?;
    let own = |m: &str| -> BTreeMap<String, airlock_node::catalog::Location> {
        collab
            .config()
            .datasets
            .iter()
            .filter(|d| d.owner == m)
            .filter_map(|d| {
                let mut location = catalog.datasets.get(&d.name)?.clone();
                // A credentials file named relative to this directory
                // stays that file from the node's own directory.
                for path in location.credential_files_mut() {
                    if path.is_relative() {
                        *path = dir.join(&*path);
                    }
                }
                Some((d.name.clone(), location))
            })
            .collect()
    };
    // Each contributing member's approval key: the member's own, kept with
    // its CLI (here beside its token), never in a node's directory.
    let mut member_keys = BTreeMap::new();
    for m in &providers {
        let path = root.join("members").join(m).join("member.key");
        let key = MemberKey::generate().map_err(|e| fail("member key")(e.to_string()))?;
        key.save(&path)
            .map_err(|e| fail("saving a member key")(e.to_string()))?;
        member_keys.insert(m.clone(), (path, key.public_hex()));
    }
    let mut x_fps = BTreeMap::new();
    for m in &providers {
        let nd = root.join("nodes").join(m);
        std::fs::create_dir_all(&nd).map_err(io("creating a node directory"))?;
        let san = node_server_name(m);
        issue(m, &["localhost", "127.0.0.1", &san], &nd)?;
        let keys = NodeKeys::generate().map_err(|e| fail("X25519 key")(e.to_string()))?;
        keys.save(&nd.join("x25519.key"))
            .map_err(|e| fail("saving the X25519 key")(e.to_string()))?;
        x_fps.insert(m.clone(), sealing::fingerprint(&keys.public()));
    }

    let mut running = Running {
        children: Vec::new(),
        info: ClusterInfo {
            hub: String::new(),
            flight_sql: String::new(),
            ca: ca_path.clone(),
            collaboration: collab.name().to_string(),
            analyst: collab
                .config()
                .members
                .iter()
                .find(|m| m.abilities.contains(&Ability::Query))
                .map(|m| m.name.clone())
                .unwrap_or_default(),
            tokens: BTreeMap::new(),
            keys: member_keys
                .iter()
                .map(|(m, (p, _))| (m.clone(), p.clone()))
                .collect(),
            nodes: BTreeMap::new(),
            hub_config: hub_dir.join("hub.toml"),
            pids: BTreeMap::new(),
        },
    };
    let tls = |d: &Path| TlsFiles {
        cert: d.join("tls.crt"),
        key: d.join("tls.key"),
        ca: ca_path.clone(),
    };
    for m in &providers {
        let nd = root.join("nodes").join(m);
        let cfg = NodeConfig {
            member: m.clone(),
            listen: "127.0.0.1:0".into(),
            data_dir: dir.clone(),
            datasets: own(m),
            catalog: None,
            state_dir: nd.join("state"),
            tls: tls(&nd),
            x25519_key: nd.join("x25519.key"),
            trusted_hubs: vec![hub_fp.clone()],
            member_key: member_keys.get(m).map(|(_, public)| public.clone()),
            peers: x_fps
                .iter()
                .filter(|(p, _)| *p != m)
                .map(|(p, f)| (p.clone(), f.clone()))
                .collect(),
            destinations: {
                let mut d = std::collections::BTreeMap::new();
                d.insert(
                    "files".to_string(),
                    Destination::Parquet {
                        path: nd.join("results"),
                    },
                );
                d.insert(
                    "csv".to_string(),
                    Destination::Csv {
                        path: nd.join("results-csv"),
                    },
                );
                if cfg!(feature = "delta") {
                    d.insert(
                        "lake".to_string(),
                        Destination::Delta {
                            path: Some(nd.join("results-delta")),
                            bucket: None,
                            prefix: String::new(),
                            endpoint: None,
                            region: None,
                            allow_http: false,
                            credentials: Default::default(),
                        },
                    );
                }
                if let Some(b) = &opts.results_s3 {
                    let allow_http = b.endpoint.starts_with("http://");
                    d.insert(
                        "objects".to_string(),
                        Destination::S3 {
                            bucket: b.bucket.clone(),
                            prefix: format!("{}/results/{m}", b.prefix),
                            format: Default::default(),
                            endpoint: Some(b.endpoint.clone()),
                            region: None,
                            allow_http,
                            credentials: Default::default(),
                        },
                    );
                    #[cfg(feature = "delta")]
                    d.insert(
                        "lake-s3".to_string(),
                        Destination::Delta {
                            path: None,
                            bucket: Some(b.bucket.clone()),
                            prefix: format!("{}/results-delta/{m}", b.prefix),
                            endpoint: Some(b.endpoint.clone()),
                            region: None,
                            allow_http,
                            credentials: Default::default(),
                        },
                    );
                }
                if let Some(url) = &opts.results_postgres {
                    d.insert(
                        "warehouse".to_string(),
                        Destination::Postgres {
                            url: url.clone(),
                            table: format!("airlock_results_{}", m.replace('-', "_")),
                        },
                    );
                }
                d
            },
            limits: opts.node_limits,
        };
        let path = nd.join("node.toml");
        write_toml(&path, &cfg)?;
        let Started { child, url, .. } = spawn(
            &opts.bin,
            &format!("node {m}"),
            &["node", "serve", "--config", &path.to_string_lossy()],
        )?;
        running.info.pids.insert(format!("node {m}"), child.id());
        running.children.push((format!("node {m}"), child));
        running.info.nodes.insert(m.clone(), url);
    }

    let hub_cfg = HubConfig {
        listen: "127.0.0.1:0".into(),
        flight_sql_listen: None,
        database: format!("sqlite:{}", hub_dir.join("hub.db").display()),
        tls: tls(&hub_dir),
        nodes: running
            .info
            .nodes
            .iter()
            .map(|(m, u)| NodeEntry {
                member: m.clone(),
                url: u.clone(),
            })
            .collect(),
        wire_tap: opts.wire_tap.clone(),
        limits: opts.hub_limits,
    };
    write_toml(&running.info.hub_config, &hub_cfg)?;
    let store = airlock_store::Store::open(&hub_cfg.database)
        .await
        .map_err(|e| fail("hub database")(e.to_string()))?;
    let week = airlock_store::now_ms() + 7 * 24 * 3600 * 1000;
    for m in &collab.config().members {
        let t = store
            .create_token(&m.name, Some(week))
            .await
            .map_err(|e| fail("token")(e.to_string()))?;
        running.info.tokens.insert(m.name.clone(), t.token);
    }
    store.close().await;
    let Started {
        child,
        url,
        flight_sql,
    } = spawn(
        &opts.bin,
        "hub",
        &[
            "hub",
            "serve",
            "--config",
            &running.info.hub_config.to_string_lossy(),
        ],
    )?;
    running.info.pids.insert("hub".into(), child.id());
    running.children.push(("hub".into(), child));
    running.info.hub = url;
    running.info.flight_sql = flight_sql.unwrap_or_default();

    let creator = providers
        .first()
        .ok_or_else(|| CliError::BadInput("the collaboration has no contributing member".into()))?;
    let client = running.client(creator)?;
    let mut view = client
        .create(&toml_text)
        .await
        .map_err(|e| fail("creating the collaboration on the hub")(e.to_string()))?;
    // Every other contributing member approves the demo collaboration (its
    // creator approved it by creating it with its key).
    for m in providers.iter().filter(|m| *m != creator) {
        view = running
            .client(m)?
            .approve(collab.name(), Some(&view.sha256))
            .await
            .map_err(|e| fail("approving the collaboration")(e.to_string()))?;
    }
    if !view.sync_errors.is_empty() {
        return Err(CliError::Failed(format!(
            "the nodes did not take the collaboration: {}",
            view.sync_errors.join("; ")
        )));
    }
    let info =
        serde_json::to_string_pretty(&running.info).map_err(|e| CliError::Failed(e.to_string()))?;
    // It holds every member's token: readable by this user only.
    pki::write_private(&root.join("cluster.json"), &info)
        .map_err(|e| fail("writing cluster.json")(e.to_string()))?;
    Ok(running)
}

impl Running {
    /// A client of the hub as `member`.
    pub fn client(&self, member: &str) -> Result<HubClient, CliError> {
        let token = self
            .info
            .tokens
            .get(member)
            .ok_or_else(|| CliError::BadInput(format!("no token for '{member}'")))?;
        let client = HubClient::with_ca_file(&self.info.hub, token, &self.info.ca)
            .map_err(|e| CliError::Failed(e.to_string()))?;
        match self.info.keys.get(member) {
            Some(k) => client
                .with_key_file(k)
                .map_err(|e| CliError::Failed(e.to_string())),
            None => Ok(client),
        }
    }

    /// A client of the hub as `member` without its approval key.
    pub fn client_without_key(&self, member: &str) -> Result<HubClient, CliError> {
        let token = self
            .info
            .tokens
            .get(member)
            .ok_or_else(|| CliError::BadInput(format!("no token for '{member}'")))?;
        HubClient::with_ca_file(&self.info.hub, token, &self.info.ca)
            .map_err(|e| CliError::Failed(e.to_string()))
    }

    /// Kills the process `name` (`hub`, or `node MEMBER`) at once, as
    /// `kill -9` would: no clean exit (for crash tests). False if there is
    /// no such process.
    pub fn kill(&mut self, name: &str) -> bool {
        let Some(i) = self.children.iter().position(|(n, _)| n == name) else {
            return false;
        };
        let (_, mut c) = self.children.remove(i);
        let _ = c.kill();
        let _ = c.wait();
        true
    }

    /// Stops every process: closes their stdin (each exits cleanly), then
    /// kills any still running after five seconds.
    pub fn stop(&mut self) {
        for (_, c) in &mut self.children {
            drop(c.stdin.take());
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for (name, c) in &mut self.children {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    Ok(None) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        eprintln!("{name} did not stop in time; killing it");
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                }
            }
        }
        self.children.clear();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop();
    }
}
