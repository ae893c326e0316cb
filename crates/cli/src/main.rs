//! The `airlock` binary. Exit codes: 0 released, 3 refused, 2 bad input
//! (configuration, SQL syntax, unknown member), 1 anything else.

use std::path::PathBuf;
use std::process::ExitCode;

use airlock_cli::bench::{self, BenchOptions};
use airlock_cli::cluster::{exit_code, CliError, Cluster};
use airlock_cli::demo::{self, DemoOptions};
use airlock_cli::output::{render, Format};
use airlock_cli::{remote, up};
use airlock_policy::{Collaboration, QuerySpec};
use airlock_service::client::HubClient;
use airlock_service::config::{HubConfig, NodeConfig};
use airlock_service::{api, hub_service, node_service};
use airlock_store::Store;
use clap::{Parser, Subcommand};

// Large Arrow buffers are allocated and freed per batch; mimalloc reuses them
// where the system allocator maps and unmaps fresh pages each time.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "airlock",
    version,
    about = "Airlock: an open-source data clean room"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How to reach a hub.
#[derive(clap::Args, Clone)]
struct HubArgs {
    /// The hub's URL.
    #[arg(long, env = "AIRLOCK_HUB", global = true)]
    hub: Option<String>,
    /// The member's API token.
    #[arg(long, env = "AIRLOCK_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// The CA certificate the hub's certificate chains to.
    #[arg(long, env = "AIRLOCK_CA", global = true)]
    ca: Option<PathBuf>,
    /// The member's approval key (`airlock keys member`): collaboration
    /// files sent with `collab create`/`apply` are approved with it, and
    /// `collab approve` signs with it.
    #[arg(long, env = "AIRLOCK_KEY", global = true)]
    key: Option<PathBuf>,
}

impl HubArgs {
    fn client(&self) -> Result<HubClient, CliError> {
        let hub = self
            .hub
            .as_deref()
            .ok_or_else(|| CliError::BadInput("--hub URL (or AIRLOCK_HUB) is required".into()))?;
        let token = self
            .token
            .as_deref()
            .ok_or_else(|| CliError::BadInput("--token T (or AIRLOCK_TOKEN) is required".into()))?;
        let ca = self
            .ca
            .as_deref()
            .ok_or_else(|| CliError::BadInput("--ca FILE (or AIRLOCK_CA) is required".into()))?;
        let client = HubClient::with_ca_file(hub, token, ca).map_err(remote::cli_error)?;
        match &self.key {
            Some(k) => client.with_key_file(k).map_err(remote::cli_error),
            None => Ok(client),
        }
    }
}

#[derive(Subcommand)]
enum BudgetCommand {
    /// What remains: of the collaboration's budget, and what a member may
    /// still spend. In process (`--collab FILE --as MEMBER`, the ledger
    /// beside the file) or on a hub (`--hub URL --token T --collab NAME`).
    Show {
        /// Collaboration file, or with `--hub` the collaboration's name.
        #[arg(long)]
        collab: String,
        /// Member (in process; default: the first member with the query ability).
        #[arg(long = "as")]
        member: Option<String>,
        #[command(flatten)]
        hub: HubArgs,
    },
}

#[derive(Subcommand)]
enum InteropCommand {
    /// AWS Clean Rooms analysis rules and analysis templates.
    Aws {
        #[command(subcommand)]
        command: AwsCommand,
    },
}

#[derive(Subcommand)]
enum AwsCommand {
    /// An AWS analysis rule (JSON) as an Airlock `[[tables]]` block, or an
    /// AWS analysis template as a `[[templates]]` block.
    Import {
        #[command(subcommand)]
        what: AwsImport,
    },
    /// An Airlock table's rule, or a template, as AWS JSON.
    Export {
        #[command(subcommand)]
        what: AwsExport,
    },
}

#[derive(Subcommand)]
enum AwsImport {
    /// `CreateConfiguredTableAnalysisRule` input, or its `{"v1": ...}` policy.
    Rule {
        /// The AWS document.
        file: PathBuf,
        /// The configured table's alias in Airlock.
        #[arg(long)]
        alias: String,
        /// The Airlock dataset it reads.
        #[arg(long)]
        dataset: String,
        /// The privacy unit (list and custom rules; aggregation rules name it
        /// in their COUNT_DISTINCT constraint).
        #[arg(long)]
        identity: Option<String>,
        /// k, for custom rules (AWS custom rules have none).
        #[arg(long)]
        k: Option<u64>,
        /// Join columns (custom rules), comma-separated.
        #[arg(long, value_delimiter = ',')]
        join: Vec<String>,
        /// Dimensions (custom rules), comma-separated.
        #[arg(long, value_delimiter = ',')]
        dimensions: Vec<String>,
        /// Measures (custom rules): `amount=sum+avg,order_id=count`.
        #[arg(long, default_value = "")]
        measures: String,
        /// AWS account id of a member, `ID=MEMBER` (repeat).
        #[arg(long = "account")]
        accounts: Vec<String>,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// `CreateAnalysisTemplate` input.
    Template {
        /// The AWS document.
        file: PathBuf,
        /// The purpose the template serves (AWS templates carry none).
        #[arg(long)]
        purpose: String,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AwsExport {
    /// A configured table's rule as `CreateConfiguredTableAnalysisRule` input.
    Rule {
        /// Collaboration file.
        #[arg(long)]
        collab: PathBuf,
        /// The configured table.
        #[arg(long)]
        table: String,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A template as `CreateAnalysisTemplate` input.
    Template {
        /// Collaboration file.
        #[arg(long)]
        collab: PathBuf,
        /// Template name or hash.
        #[arg(long)]
        template: String,
        /// Export even though AWS cannot limit parameter values or
        /// analysts (each widening is listed on standard error).
        #[arg(long)]
        accept_wider: bool,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TemplateCommand {
    /// The collaboration's templates: hash, purpose, parameters, approvals.
    List {
        /// Collaboration file, or with `--hub` the collaboration's name.
        #[arg(long)]
        collab: String,
        #[command(flatten)]
        hub: HubArgs,
    },
    /// Approve a template (by name or hash) as a data owner, after static
    /// verification against every rule for every allowed parameter value.
    Approve {
        /// Collaboration file, or with `--hub` the collaboration's name.
        #[arg(long)]
        collab: String,
        /// The approving member (in process on a collaboration file).
        #[arg(long = "as")]
        member: Option<String>,
        #[command(flatten)]
        hub: HubArgs,
        /// Template name or hash.
        template: String,
    },
    /// Revoke an approval.
    Revoke {
        /// Collaboration file, or with `--hub` the collaboration's name.
        #[arg(long)]
        collab: String,
        /// The member revoking (in process on a collaboration file).
        #[arg(long = "as")]
        member: Option<String>,
        #[command(flatten)]
        hub: HubArgs,
        /// Template name or hash.
        template: String,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Serve fragments over Arrow Flight (mutual TLS).
    Serve {
        /// The node's configuration.
        #[arg(long)]
        config: PathBuf,
        /// Exit when standard input closes (used by `airlock up`).
        #[arg(long)]
        exit_with_stdin: bool,
    },
}

#[derive(Subcommand)]
enum HubCommand {
    /// Serve the REST API.
    Serve {
        /// The hub's configuration.
        #[arg(long)]
        config: PathBuf,
        /// Overrides the configured database (`sqlite:PATH` or `postgres://...`).
        #[arg(long)]
        database: Option<String>,
        /// Exit when standard input closes (used by `airlock up`).
        #[arg(long)]
        exit_with_stdin: bool,
    },
    /// Issue an API token for a member (printed once; stored hashed).
    TokenCreate {
        /// The hub's configuration.
        #[arg(long)]
        config: PathBuf,
        /// Overrides the configured database.
        #[arg(long)]
        database: Option<String>,
        /// The member.
        #[arg(long)]
        member: String,
        /// Days until it expires.
        #[arg(long, default_value_t = 30)]
        days: i64,
    },
    /// Revoke an API token by its id (the part after `alk_`, before the next `_`).
    TokenRevoke {
        /// The hub's configuration.
        #[arg(long)]
        config: PathBuf,
        /// Overrides the configured database.
        #[arg(long)]
        database: Option<String>,
        /// Token id.
        #[arg(long)]
        id: String,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a TLS certificate (from a new or given CA) and an X25519 key.
    Init {
        /// Where to write them.
        #[arg(long)]
        dir: PathBuf,
        /// The member (for a node) or `hub`.
        #[arg(long)]
        name: String,
        /// Directory with `ca.crt` and `ca.key` to issue from (default: make a new CA in DIR).
        #[arg(long)]
        ca_dir: Option<PathBuf>,
        /// Extra DNS names or IP addresses for the certificate.
        #[arg(long)]
        san: Vec<String>,
    },
    /// Make a member's approval key (Ed25519): keep it with the member's
    /// CLI, never on a node or a hub; put the public key it prints into the
    /// node's `node.toml` as `member_key`.
    Member {
        /// The key file to write (mode 0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum CollabCommand {
    /// Collaborations you belong to.
    List,
    /// One collaboration, its version history and sync state.
    Show {
        /// Name.
        name: String,
    },
    /// Create a collaboration from its file.
    Create {
        /// Collaboration file.
        file: PathBuf,
    },
    /// Apply a new version of a collaboration file.
    Apply {
        /// Collaboration file.
        file: PathBuf,
    },
    /// The versions waiting for your approval, with what changed since the
    /// version you approved before.
    Approvals,
    /// One collaboration's current version as you are asked to approve it:
    /// each approver's decision, and the differences (`--full` for the text).
    Review {
        /// Name.
        name: String,
        /// Print the whole file too.
        #[arg(long)]
        full: bool,
    },
    /// Approve the current version (signed with --key): your node then
    /// installs it. Give the SHA-256 you reviewed to be sure it is that one.
    Approve {
        /// Name.
        name: String,
        /// SHA-256 of the version's text (from `collab review`).
        #[arg(long)]
        sha256: Option<String>,
    },
    /// Refuse the current version: your node will not install it.
    Refuse {
        /// Name.
        name: String,
        /// SHA-256 of the version's text (from `collab review`).
        #[arg(long)]
        sha256: String,
        /// Why (every member of the collaboration reads it).
        #[arg(long)]
        reason: String,
    },
    /// Write a collaboration's public metadata (members, node public keys,
    /// table schemas, rules, templates, policy versions) as a document
    /// signed by the hub.
    Export {
        /// Name.
        name: String,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Verify a signed metadata document from another environment; write
    /// its collaboration file, or create the collaboration on this hub.
    Import {
        /// The document.
        file: PathBuf,
        /// Fingerprint (`SHA256:...`) of the exporting hub's certificate,
        /// compared out of band. Repeat to trust several.
        #[arg(long = "trust-hub", required = true)]
        trust: Vec<String>,
        /// Write the verified collaboration file here.
        #[arg(long)]
        toml_out: Option<PathBuf>,
        /// Create the collaboration on the hub given by --hub.
        #[arg(long)]
        create: bool,
    },
    /// Change one of your datasets in every collaboration that uses it
    /// (each gets a new policy version, pushed to its nodes).
    UpdateDataset {
        /// The dataset's path as the collaboration files name it.
        #[arg(long)]
        path: String,
        /// Its new path.
        #[arg(long)]
        new_path: Option<String>,
        /// New minimum of distinct people per output row of its aggregation rules.
        #[arg(long)]
        min_distinct_identities: Option<u64>,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify a collaboration's audit chain (from the hub, or an exported file).
    Verify {
        #[command(flatten)]
        hub: HubArgs,
        /// Collaboration name (with --hub).
        #[arg(long)]
        collab: Option<String>,
        /// An exported JSON-lines file instead.
        #[arg(long)]
        file: Option<PathBuf>,
        /// A head hash you kept from an earlier verify or export: it must
        /// still be in the chain (detects entries removed at the end).
        #[arg(long)]
        head: Option<String>,
    },
    /// Export a collaboration's audit chain as JSON lines.
    Export {
        #[command(flatten)]
        hub: HubArgs,
        /// Collaboration name.
        #[arg(long)]
        collab: String,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Write sample data for two members, run the canonical analyses and show refusals.
    Demo {
        /// Directory for the data and the collaboration file.
        #[arg(long, default_value = "airlock-demo")]
        dir: PathBuf,
        /// Audience rows.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// Run against a hub and nodes started as separate processes.
        #[arg(long)]
        distributed: bool,
        /// Run under differential privacy: budget epsilon 3, each analysis
        /// epsilon 1, noisy results with their intervals; a fourth analysis
        /// is refused for budget.
        #[arg(long, conflicts_with = "crypto")]
        dp: bool,
        /// Crypto mode: the overlap analyses by private set intersection
        /// between the two nodes, with no executor.
        #[arg(long)]
        crypto: bool,
    },
    /// Start a hub and one node per member of the demo collaboration as
    /// separate processes on loopback (mutual TLS); runs until Ctrl-C.
    Up {
        /// Directory of the demo data (written if missing).
        #[arg(long, default_value = "airlock-demo")]
        dir: PathBuf,
        /// Audience rows if the data must be written.
        #[arg(long, default_value_t = 1_000_000)]
        rows: usize,
        /// Record every byte exchanged between the hub and the nodes here.
        #[arg(long)]
        wire_tap: Option<PathBuf>,
    },
    /// A member's node.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// The hub.
    Hub {
        #[command(subcommand)]
        command: HubCommand,
    },
    /// Keys and certificates of a node or hub.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Collaborations on a hub.
    Collab {
        #[command(flatten)]
        hub: HubArgs,
        #[command(subcommand)]
        command: CollabCommand,
    },
    /// A collaboration's audit chain.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Write a GDPR Art. 30-style record of processing (Markdown and JSON)
    /// from a collaboration's definition and its verified audit chain.
    Records {
        #[command(flatten)]
        hub: HubArgs,
        /// Collaboration name.
        #[arg(long)]
        collab: String,
        /// Analyses submitted from this time (unix ms; default: all).
        #[arg(long, default_value_t = 0)]
        from_ms: i64,
        /// Analyses submitted before this time (unix ms; default: now).
        #[arg(long)]
        to_ms: Option<i64>,
        /// Directory to write `records-NAME.md` and `records-NAME.json` into.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// A collaboration's privacy budget.
    Budget {
        #[command(subcommand)]
        command: BudgetCommand,
    },
    /// Analysis templates: list, approve (with static verification), revoke.
    Template {
        #[command(subcommand)]
        command: TemplateCommand,
    },
    /// Other clean rooms' formats (AWS Clean Rooms).
    Interop {
        #[command(subcommand)]
        command: InteropCommand,
    },
    /// Validate a query without running it: print the plan per member, or the refusal.
    Check {
        /// Collaboration file.
        #[arg(long)]
        collab: PathBuf,
        /// Member to check as (default: the first member with the query ability).
        #[arg(long = "as")]
        member: Option<String>,
        /// The SQL.
        sql: String,
    },
    /// Run a query and print the released result: in process on a
    /// collaboration file (`--collab FILE --as MEMBER`), or on a hub
    /// (`--hub URL --token T --collab NAME`).
    Query {
        /// Collaboration file, or with `--hub` the collaboration's name.
        #[arg(long)]
        collab: String,
        /// Member to run as in process (needs the query ability).
        #[arg(long = "as")]
        member: Option<String>,
        #[command(flatten)]
        hub: HubArgs,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// Run this approved template (name or hash) instead of SQL.
        #[arg(long, conflicts_with = "sql")]
        template: Option<String>,
        /// A template parameter, `NAME=VALUE` (repeat for each).
        #[arg(long = "param", value_name = "NAME=VALUE", requires = "template")]
        params: Vec<String>,
        /// The purpose the output serves (a template's is its own; a list
        /// output must name one).
        #[arg(long)]
        purpose: Option<String>,
        /// With --hub: have the querier's own node write the result to this
        /// destination of its configuration (the hub keeps no copy).
        #[arg(long)]
        deliver: Option<String>,
        /// The SQL.
        #[arg(required_unless_present = "template")]
        sql: Option<String>,
    },
    /// Time Airlock against plain DataFusion on the same generated files.
    Bench {
        /// Directory for the data.
        #[arg(long, default_value = "airlock-bench")]
        dir: PathBuf,
        /// Audience rows (purchases are about a fifth of that).
        #[arg(long, default_value_t = 10_000_000)]
        rows: usize,
        /// Timed runs per side.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Also time the two-member overlap through `airlock up` (hub and
        /// nodes as processes) against the in-process engine.
        #[arg(long)]
        distributed: bool,
    },
    /// Time crypto mode's private set intersection on two identifier files
    /// (one per line); prints JSON. See bench/psi_vs_openmined.py.
    BenchPsi {
        /// The asker's identifiers.
        #[arg(long)]
        asker: PathBuf,
        /// The responder's identifiers.
        #[arg(long)]
        responder: PathBuf,
        /// Also sum a per-person value under encryption.
        #[arg(long)]
        sums: bool,
    },
}

fn bad(e: impl std::fmt::Display) -> CliError {
    CliError::BadInput(e.to_string())
}

async fn shutdown_signal(exit_with_stdin: bool) {
    let stdin_closed = async {
        if exit_with_stdin {
            let mut buf = [0u8; 64];
            let mut stdin = tokio::io::stdin();
            while matches!(tokio::io::AsyncReadExt::read(&mut stdin, &mut buf).await, Ok(n) if n > 0)
            {
            }
        } else {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = stdin_closed => {}
        _ = term => {}
    }
}

fn print_released(released: &airlock_hub::Released, format: Format) -> Result<(), CliError> {
    let text = render(released, format).map_err(CliError::Failed)?;
    println!("{text}");
    if format != Format::Table {
        if let Some(noise) = airlock_cli::output::noise_footer(released) {
            eprintln!("{noise}");
        }
    }
    Ok(())
}

async fn run(cli: Cli) -> Result<(), (CliError, bool)> {
    let plain = |e| (e, false);
    match cli.command {
        Command::Demo {
            dir,
            rows,
            distributed,
            dp,
            crypto,
        } => {
            let bin = if distributed {
                Some(this_binary().map_err(plain)?)
            } else {
                None
            };
            demo::run(
                &DemoOptions {
                    dir,
                    rows,
                    distributed: bin,
                    dp,
                    crypto,
                },
                None,
            )
            .await
            .map_err(plain)
        }
        Command::Up {
            dir,
            rows,
            wire_tap,
        } => {
            let bin = this_binary().map_err(plain)?;
            let mut running = up::start(&up::UpOptions {
                dir,
                rows,
                wire_tap,
                bin,
                results_postgres: None,
                hub_limits: Default::default(),
                node_limits: Default::default(),
            })
            .await
            .map_err(plain)?;
            let i = &running.info;
            println!("Airlock is up.");
            println!("  hub        {}", i.hub);
            for (m, url) in &i.nodes {
                println!("  node       {m:<10} {url}");
            }
            println!("  CA         {}", i.ca.display());
            println!("  collaboration '{}'", i.collaboration);
            for (m, t) in &i.tokens {
                let role = if *m == i.analyst { " (analyst)" } else { "" };
                println!("  token      {m:<10} {t}{role}");
            }
            for (m, k) in &i.keys {
                println!("  member key {m:<10} {}", k.display());
            }
            println!();
            println!("Try:");
            println!(
                "  export AIRLOCK_HUB={} AIRLOCK_CA={} AIRLOCK_TOKEN={}",
                i.hub,
                i.ca.display(),
                i.tokens.get(&i.analyst).cloned().unwrap_or_default()
            );
            println!(
                "  airlock query --collab {} 'SELECT a.segment, COUNT(DISTINCT a.email) AS people FROM audience a JOIN purchases p ON a.email = p.email GROUP BY a.segment'",
                i.collaboration
            );
            if let Some(k) = i.keys.get(&i.analyst) {
                println!(
                    "  AIRLOCK_KEY={} airlock collab approvals   # versions waiting for {}'s approval",
                    k.display(),
                    i.analyst
                );
            }
            println!("Ctrl-C stops everything.");
            shutdown_signal(false).await;
            println!("stopping ...");
            running.stop();
            Ok(())
        }
        Command::Node {
            command:
                NodeCommand::Serve {
                    config,
                    exit_with_stdin,
                },
        } => {
            let cfg = NodeConfig::load(&config).map_err(|e| plain(bad(e)))?;
            airlock_service::install_crypto_provider();
            node_service::serve(cfg, shutdown_signal(exit_with_stdin))
                .await
                .map_err(|e| plain(service_error(e)))
        }
        Command::Hub { command } => match command {
            HubCommand::Serve {
                config,
                database,
                exit_with_stdin,
            } => {
                let mut cfg = HubConfig::load(&config).map_err(|e| plain(bad(e)))?;
                if let Some(db) = database {
                    cfg.database = db;
                }
                hub_service::serve(cfg, shutdown_signal(exit_with_stdin))
                    .await
                    .map_err(|e| plain(service_error(e)))
            }
            HubCommand::TokenCreate {
                config,
                database,
                member,
                days,
            } => {
                if days < 1 {
                    return Err(plain(bad("--days must be at least 1")));
                }
                let cfg = HubConfig::load(&config).map_err(|e| plain(bad(e)))?;
                let store = Store::open(&database.unwrap_or(cfg.database))
                    .await
                    .map_err(|e| plain(bad(e)))?;
                let expires = airlock_store::now_ms() + days * 24 * 3600 * 1000;
                let t = store
                    .create_token(&member, Some(expires))
                    .await
                    .map_err(|e| plain(CliError::Failed(e.to_string())))?;
                println!("{}", t.token);
                eprintln!("token id {} for '{member}', expires in {days} days", t.id);
                Ok(())
            }
            HubCommand::TokenRevoke {
                config,
                database,
                id,
            } => {
                let cfg = HubConfig::load(&config).map_err(|e| plain(bad(e)))?;
                let store = Store::open(&database.unwrap_or(cfg.database))
                    .await
                    .map_err(|e| plain(bad(e)))?;
                let done = store
                    .revoke_token(&id)
                    .await
                    .map_err(|e| plain(CliError::Failed(e.to_string())))?;
                if done {
                    println!("revoked {id}");
                    Ok(())
                } else {
                    Err(plain(bad(format!(
                        "no active token with id '{id}' (unknown or already revoked)"
                    ))))
                }
            }
        },
        Command::Keys {
            command:
                KeysCommand::Init {
                    dir,
                    name,
                    ca_dir,
                    san,
                },
        } => keys_init(&dir, &name, ca_dir.as_deref(), &san).map_err(plain),
        Command::Keys {
            command: KeysCommand::Member { out },
        } => {
            let key = airlock_crypto::approval::MemberKey::generate()
                .map_err(|e| plain(CliError::Failed(e.to_string())))?;
            key.save(&out).map_err(|e| plain(bad(e.to_string())))?;
            println!("member key      {}", out.display());
            println!(
                "member_key = \"{}\"   # for the member's node.toml",
                key.public_hex()
            );
            Ok(())
        }
        Command::Collab {
            hub,
            command:
                CollabCommand::Import {
                    file,
                    trust,
                    toml_out,
                    create,
                },
        } => {
            let text = std::fs::read_to_string(&file).map_err(|e| {
                plain(CliError::BadInput(format!(
                    "cannot read {}: {e}",
                    file.display()
                )))
            })?;
            let meta = airlock_service::metadata::verify(&text, &trust).map_err(|e| {
                plain(CliError::BadInput(format!(
                    "{}: refused: {e}",
                    file.display()
                )))
            })?;
            println!(
                "verified: collaboration '{}' (id {}), policy version {} (sha256 {}), {} members, {} tables, {} templates",
                meta.collaboration,
                meta.id,
                meta.policy_version,
                &meta.policy_sha256[..16],
                meta.members.len(),
                meta.tables.len(),
                meta.templates.len()
            );
            for m in &meta.members {
                if let Some(n) = &m.node {
                    println!(
                        "  node of '{}': X25519 key fingerprint {}",
                        m.name, n.fingerprint
                    );
                }
            }
            if let Some(p) = toml_out {
                std::fs::write(&p, &meta.toml).map_err(|e| {
                    plain(CliError::Failed(format!(
                        "cannot write {}: {e}",
                        p.display()
                    )))
                })?;
                println!("wrote {}", p.display());
            }
            if create {
                let client = hub.client().map_err(plain)?;
                let v = client
                    .create(&meta.toml)
                    .await
                    .map_err(|e| plain(remote::cli_error(e)))?;
                print_collab(&v);
            }
            Ok(())
        }
        Command::Collab { hub, command } => {
            let client = hub.client().map_err(plain)?;
            match command {
                CollabCommand::Import { .. } => unreachable!("handled above"),
                CollabCommand::Export { name, out } => {
                    let doc = client
                        .export_metadata(&name)
                        .await
                        .map_err(|e| plain(remote::cli_error(e)))?;
                    let text = serde_json::to_string_pretty(&doc)
                        .map_err(|e| plain(CliError::Failed(e.to_string())))?
                        + "\n";
                    airlock_cli::interop::emit(&text, &[], out.as_deref()).map_err(plain)?;
                    eprintln!(
                        "signed by the hub with certificate fingerprint {}",
                        doc.fingerprint
                    );
                    Ok(())
                }
                CollabCommand::List => {
                    let list: Vec<serde_json::Value> = client
                        .call(reqwest_get(), "/v1/collaborations", None::<&()>)
                        .await
                        .map_err(|e| plain(remote::cli_error(e)))?;
                    for c in list {
                        println!(
                            "{}\tversion {}\tid {}",
                            c["name"].as_str().unwrap_or_default(),
                            c["version"],
                            c["id"].as_str().unwrap_or_default()
                        );
                    }
                    Ok(())
                }
                CollabCommand::Show { name } => {
                    let v: api::CollaborationView = client
                        .call(
                            reqwest_get(),
                            &format!("/v1/collaborations/{name}"),
                            None::<&()>,
                        )
                        .await
                        .map_err(|e| plain(remote::cli_error(e)))?;
                    print_collab(&v);
                    Ok(())
                }
                CollabCommand::UpdateDataset {
                    path,
                    new_path,
                    min_distinct_identities,
                } => {
                    let done = client
                        .update_dataset(&api::DatasetUpdate {
                            path,
                            new_path,
                            min_distinct_identities,
                        })
                        .await
                        .map_err(|e| plain(remote::cli_error(e)))?;
                    let mut ok = true;
                    for d in &done {
                        println!("{}\tversion {}", d.collaboration, d.version);
                        for e in &d.sync_errors {
                            ok = false;
                            println!("  NOT IN SYNC: {e}");
                        }
                    }
                    if ok {
                        Ok(())
                    } else {
                        Err(plain(CliError::Failed(
                            "stored, but not every node took the new versions".into(),
                        )))
                    }
                }
                CollabCommand::Approvals => {
                    let list = client
                        .approvals()
                        .await
                        .map_err(|e| plain(remote::cli_error(e)))?;
                    if list.is_empty() {
                        println!("nothing waits for your approval");
                    }
                    for v in &list {
                        // The list is a summary; each review has the changes.
                        let full = client
                            .review(&v.collaboration)
                            .await
                            .map_err(|e| plain(remote::cli_error(e)))?;
                        print_approval(&full, false);
                    }
                    Ok(())
                }
                CollabCommand::Review { name, full } => {
                    let v = client
                        .review(&name)
                        .await
                        .map_err(|e| plain(remote::cli_error(e)))?;
                    print_approval(&v, full);
                    Ok(())
                }
                CollabCommand::Approve { name, sha256 } => {
                    let v = client
                        .approve(&name, sha256.as_deref())
                        .await
                        .map_err(|e| plain(remote::cli_error(e)))?;
                    println!("approved version {} of '{}'", v.version, v.name);
                    print_collab(&v);
                    Ok(())
                }
                CollabCommand::Refuse {
                    name,
                    sha256,
                    reason,
                } => {
                    let v = client
                        .refuse(&name, &sha256, &reason)
                        .await
                        .map_err(|e| plain(remote::cli_error(e)))?;
                    println!("refused version {} of '{}'", v.version, v.name);
                    Ok(())
                }
                CollabCommand::Create { ref file } | CollabCommand::Apply { ref file } => {
                    let text = std::fs::read_to_string(file)
                        .map_err(|e| plain(bad(format!("cannot read {}: {e}", file.display()))))?;
                    let collab = Collaboration::from_toml(&text, &file.display().to_string())
                        .map_err(|e| plain(bad(e)))?;
                    let v = if matches!(command, CollabCommand::Create { .. }) {
                        client.create(&text).await
                    } else {
                        client.apply(collab.name(), &text).await
                    }
                    .map_err(|e| plain(remote::cli_error(e)))?;
                    print_collab(&v);
                    let waiting: Vec<&String> = v
                        .approvals
                        .iter()
                        .filter(|(_, d)| **d != api::Decision::Approved)
                        .map(|(m, _)| m)
                        .collect();
                    if !waiting.is_empty() {
                        // Stored; the other members decide next.
                        println!(
                            "version {} is not yet approved by {}",
                            v.version,
                            waiting
                                .iter()
                                .map(|m| format!("'{m}'"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        );
                        Ok(())
                    } else if v.sync_errors.is_empty() {
                        Ok(())
                    } else {
                        Err(plain(CliError::Failed(format!(
                            "version {} is stored but not every node took it",
                            v.version
                        ))))
                    }
                }
            }
        }
        Command::Audit { command } => match command {
            AuditCommand::Verify {
                hub,
                collab,
                file,
                head,
            } => {
                let text = match (&file, &collab) {
                    (Some(f), _) => std::fs::read_to_string(f)
                        .map_err(|e| plain(bad(format!("cannot read {}: {e}", f.display()))))?,
                    (None, Some(c)) => {
                        let client = hub.client().map_err(plain)?;
                        client
                            .audit(c)
                            .await
                            .map_err(|e| plain(remote::cli_error(e)))?
                    }
                    (None, None) => {
                        return Err(plain(bad("give --file FILE, or --hub ... --collab NAME")))
                    }
                };
                let entries = airlock_store::parse_jsonl(&text).map_err(|e| plain(bad(e)))?;
                let verdict = airlock_store::verify_chain(&entries);
                match verdict {
                    Ok(()) if head.as_ref().is_some_and(|h| !entries.iter().any(|e| &e.hash == h)) => {
                        Err(plain(CliError::Failed(format!(
                            "audit chain broken: the head you kept ({}) is no longer in the chain; entries were removed or rewritten",
                            head.unwrap_or_default()
                        ))))
                    }
                    Ok(()) => {
                        let last = entries.last().map(|e| e.hash.clone()).unwrap_or_default();
                        println!(
                            "audit chain verifies: {} entries, head {last}",
                            entries.len()
                        );
                        Ok(())
                    }
                    Err(b) => Err(plain(CliError::Failed(format!("audit chain broken: {b}")))),
                }
            }
            AuditCommand::Export { hub, collab, out } => {
                let client = hub.client().map_err(plain)?;
                let text = client
                    .audit(&collab)
                    .await
                    .map_err(|e| plain(remote::cli_error(e)))?;
                match out {
                    Some(p) => std::fs::write(&p, text)
                        .map_err(|e| plain(CliError::Failed(format!("{}: {e}", p.display())))),
                    None => {
                        print!("{text}");
                        Ok(())
                    }
                }
            }
        },
        Command::BenchPsi {
            asker,
            responder,
            sums,
        } => {
            let out = airlock_cli::psibench::run(&asker, &responder, sums).map_err(plain)?;
            println!("{out}");
            Ok(())
        }
        Command::Bench {
            dir,
            rows,
            runs,
            distributed,
        } => {
            let bin = if distributed {
                Some(this_binary().map_err(plain)?)
            } else {
                None
            };
            bench::run(&BenchOptions {
                dir,
                rows,
                runs: runs.max(1),
                distributed: bin,
            })
            .await
            .map_err(plain)
        }
        Command::Records {
            hub,
            collab,
            from_ms,
            to_ms,
            out,
        } => {
            let client = hub.client().map_err(plain)?;
            let to_ms = to_ms.unwrap_or_else(airlock_store::now_ms);
            let record = airlock_cli::records::fetch(&client, &collab, from_ms, to_ms)
                .await
                .map_err(plain)?;
            let write = |ext: &str, text: String| {
                let path = out.join(format!("records-{collab}.{ext}"));
                std::fs::write(&path, text)
                    .map_err(|e| plain(CliError::Failed(format!("{}: {e}", path.display()))))?;
                println!("wrote {}", path.display());
                Ok(())
            };
            write(
                "json",
                serde_json::to_string_pretty(&record)
                    .map_err(|e| plain(CliError::Failed(e.to_string())))?,
            )?;
            write("md", airlock_cli::records::markdown(&record))
        }
        Command::Budget {
            command:
                BudgetCommand::Show {
                    collab,
                    member,
                    hub,
                },
        } => {
            let view = if member.is_none() && hub.hub.is_some() {
                let client = hub.client().map_err(plain)?;
                Some(
                    client
                        .budget(&collab)
                        .await
                        .map_err(|e| plain(remote::cli_error(e)))?,
                )
            } else {
                let cluster = Cluster::open(std::path::Path::new(&collab), None)
                    .await
                    .map_err(plain)?;
                let member = member
                    .or_else(|| cluster.default_querier())
                    .ok_or_else(|| {
                        plain(CliError::BadInput("no member has the query ability".into()))
                    })?;
                cluster.budget(&member).await.map_err(plain)?
            };
            match view {
                Some(v) => println!("{}", airlock_cli::output::budget_line(&v)),
                None => println!("this collaboration has no privacy budget ([privacy] is not set)"),
            }
            Ok(())
        }
        Command::Interop {
            command: InteropCommand::Aws { command },
        } => interop_aws(command).map_err(plain),
        Command::Template { command } => match command {
            TemplateCommand::List { collab, hub } => {
                let views = if hub.hub.is_some() {
                    let client = hub.client().map_err(plain)?;
                    client
                        .templates(&collab)
                        .await
                        .map_err(|e| plain(remote::cli_error(e)))?
                } else {
                    let c = airlock_cli::cluster::load_collaboration(std::path::Path::new(&collab))
                        .map_err(plain)?;
                    airlock_cli::templates::views(&c)
                };
                print!("{}", airlock_cli::templates::describe(&views));
                Ok(())
            }
            TemplateCommand::Approve {
                collab,
                member,
                hub,
                template,
            } => set_approval(&collab, member, &hub, &template, true)
                .await
                .map_err(plain),
            TemplateCommand::Revoke {
                collab,
                member,
                hub,
                template,
            } => set_approval(&collab, member, &hub, &template, false)
                .await
                .map_err(plain),
        },
        Command::Check {
            collab,
            member,
            sql,
        } => {
            let cluster = Cluster::open(&collab, None).await.map_err(plain)?;
            let member = member
                .or_else(|| cluster.default_querier())
                .ok_or_else(|| {
                    plain(CliError::BadInput("no member has the query ability".into()))
                })?;
            let plan = cluster.check(&member, &sql).await.map_err(plain)?;
            println!("accepted for '{member}'. Plan:");
            print!("{plan}");
            Ok(())
        }
        Command::Query {
            collab,
            member,
            hub,
            format,
            template,
            params,
            purpose,
            deliver,
            sql,
        } => {
            let json = format == Format::Json;
            let mut spec = QuerySpec {
                sql,
                template,
                purpose,
                deliver,
                ..QuerySpec::default()
            };
            for p in &params {
                let Some((k, v)) = p.split_once('=') else {
                    return Err((
                        CliError::BadInput(format!(
                            "--param must be NAME=VALUE (got one without '=' for '{}')",
                            p.chars().take(40).collect::<String>()
                        )),
                        json,
                    ));
                };
                if spec
                    .params
                    .insert(k.trim().to_string(), v.to_string())
                    .is_some()
                {
                    return Err((
                        CliError::BadInput(format!("--param '{}' is given twice", k.trim())),
                        json,
                    ));
                }
            }
            if spec.deliver.is_some() {
                if member.is_some() || hub.hub.is_none() {
                    return Err((
                        CliError::BadInput(
                            "--deliver needs --hub: the querier's node writes the result".into(),
                        ),
                        json,
                    ));
                }
                let client = hub.client().map_err(|e| (e, json))?;
                let said = remote::deliver(&client, &collab, &spec)
                    .await
                    .map_err(|e| (e, json))?;
                println!("{said}");
                return Ok(());
            }
            let released = if member.is_none() && hub.hub.is_some() {
                let client = hub.client().map_err(|e| (e, json))?;
                remote::query_spec(&client, &collab, &spec)
                    .await
                    .map_err(|e| (e, json))?
            } else {
                let member = member.ok_or_else(|| {
                    (
                        CliError::BadInput(
                            "--as MEMBER is required with a collaboration file (or give --hub)"
                                .into(),
                        ),
                        json,
                    )
                })?;
                let cluster = Cluster::open(std::path::Path::new(&collab), None)
                    .await
                    .map_err(|e| (e, json))?;
                cluster
                    .query_spec(&member, &spec)
                    .await
                    .map_err(|e| (e, json))?
            };
            print_released(&released, format).map_err(|e| (e, json))
        }
    }
}

fn interop_aws(command: AwsCommand) -> Result<(), CliError> {
    use airlock_cli::interop;
    let (converted, out) = match command {
        AwsCommand::Import {
            what:
                AwsImport::Rule {
                    file,
                    alias,
                    dataset,
                    identity,
                    k,
                    join,
                    dimensions,
                    measures,
                    accounts,
                    out,
                },
        } => {
            let mut map = std::collections::BTreeMap::new();
            for a in accounts {
                let (id, member) = a
                    .split_once('=')
                    .ok_or_else(|| CliError::BadInput("--account must be ID=MEMBER".into()))?;
                map.insert(id.trim().to_string(), member.trim().to_string());
            }
            let spec = airlock_policy::aws::TableSpec {
                alias,
                dataset,
                identity,
                min_distinct_identities: k,
                join,
                dimensions,
                measures: interop::parse_measures(&measures)?,
                accounts: map,
            };
            (interop::import_rule(&file, &spec)?, out)
        }
        AwsCommand::Import {
            what: AwsImport::Template { file, purpose, out },
        } => (interop::import_template(&file, &purpose)?, out),
        AwsCommand::Export {
            what: AwsExport::Rule { collab, table, out },
        } => (interop::export_rule(&collab, &table)?, out),
        AwsCommand::Export {
            what:
                AwsExport::Template {
                    collab,
                    template,
                    accept_wider,
                    out,
                },
        } => (
            interop::export_template(&collab, &template, accept_wider)?,
            out,
        ),
    };
    interop::emit(&converted.value, &converted.notes, out.as_deref())
}

/// `airlock template approve|revoke`, on a hub or in a collaboration file.
async fn set_approval(
    collab: &str,
    member: Option<String>,
    hub: &HubArgs,
    template: &str,
    approve: bool,
) -> Result<(), CliError> {
    if member.is_none() && hub.hub.is_some() {
        let client = hub.client()?;
        let v = client
            .approval(collab, template, approve)
            .await
            .map_err(remote::cli_error)?;
        if v.approved {
            println!(
                "'{}' approves template '{}' at hash {} (policy version {}): static verification passed {} checks",
                v.member, v.template, v.hash, v.version, v.checks
            );
        } else {
            println!(
                "'{}' no longer approves template '{}' (hash {}; policy version {})",
                v.member, v.template, v.hash, v.version
            );
        }
        return Ok(());
    }
    let member = member.ok_or_else(|| {
        CliError::BadInput(
            "--as MEMBER is required with a collaboration file (or give --hub)".into(),
        )
    })?;
    let said = airlock_cli::templates::set_approval_in_file(
        std::path::Path::new(collab),
        &member,
        template,
        approve,
    )
    .await?;
    println!("{said}");
    Ok(())
}

fn reqwest_get() -> airlock_service::client::Method {
    airlock_service::client::Method::GET
}

/// This `airlock` binary, to start services with.
fn this_binary() -> Result<PathBuf, CliError> {
    std::env::current_exe().map_err(|e| CliError::Failed(format!("cannot find this binary: {e}")))
}

fn service_error(e: airlock_service::ServiceError) -> CliError {
    remote::cli_error(e)
}

fn print_collab(v: &api::CollaborationView) {
    println!("{} (id {}), policy version {}", v.name, v.id, v.version);
    println!("  sha256 {}", v.sha256);
    println!("  members:");
    for m in &v.members {
        println!("    {m}");
    }
    println!("  configured tables:");
    for t in &v.tables {
        println!("    {t}");
    }
    println!("  versions:");
    for (n, sha, by, at) in &v.versions {
        println!(
            "    {n}  {}  by {by}  at {at} ms",
            &sha[..sha.len().min(16)]
        );
    }
    if !v.approvals.is_empty() {
        println!("  approvals of version {}:", v.version);
        for (m, d) in &v.approvals {
            println!("    {m}: {}", decision_text(*d));
        }
    }
    for e in &v.sync_errors {
        println!("  NOT IN SYNC: {e}");
    }
}

fn decision_text(d: api::Decision) -> &'static str {
    match d {
        api::Decision::Waiting => "waiting",
        api::Decision::Approved => "approved",
        api::Decision::Refused => "refused",
    }
}

fn print_approval(v: &api::VersionApproval, full: bool) {
    println!(
        "{} (id {}), version {}: yours is {}",
        v.collaboration,
        v.id,
        v.version,
        decision_text(v.mine)
    );
    println!("  sha256 {}", v.sha256);
    for (m, d) in &v.approvers {
        println!("  {m}: {}", decision_text(*d));
    }
    match v.approved_before {
        Some(n) => println!("  changes since version {n}, the last you approved:"),
        None => println!("  you approved no earlier version; the whole file:"),
    }
    for line in v.diff.lines() {
        if full || !line.starts_with(' ') {
            println!("    {line}");
        }
    }
}

fn keys_init(
    dir: &std::path::Path,
    name: &str,
    ca_dir: Option<&std::path::Path>,
    extra: &[String],
) -> Result<(), CliError> {
    use airlock_crypto::pki::{self, Ca};
    use airlock_crypto::sealing::{self, NodeKeys};
    let fail = |e: airlock_crypto::CryptoError| CliError::Failed(e.to_string());
    std::fs::create_dir_all(dir).map_err(|e| bad(format!("{}: {e}", dir.display())))?;
    let ca = match ca_dir {
        Some(c) => {
            let cert = std::fs::read_to_string(c.join("ca.crt"))
                .map_err(|e| bad(format!("{}: {e}", c.join("ca.crt").display())))?;
            let key = std::fs::read_to_string(c.join("ca.key"))
                .map_err(|e| bad(format!("{}: {e}", c.join("ca.key").display())))?;
            Ca::from_pem(&cert, &key).map_err(bad)?
        }
        None => {
            if dir.join("ca.crt").exists() {
                return Err(bad(format!(
                    "{} exists: pass --ca-dir {} to issue from it, or remove it to make a new CA",
                    dir.join("ca.crt").display(),
                    dir.display()
                )));
            }
            let ca = Ca::generate(name).map_err(fail)?;
            std::fs::write(dir.join("ca.crt"), ca.cert_pem())
                .map_err(|e| CliError::Failed(e.to_string()))?;
            pki::write_private(&dir.join("ca.key"), &ca.key_pem()).map_err(fail)?;
            println!("new CA          {}", dir.join("ca.crt").display());
            ca
        }
    };
    let san = if name == "hub" {
        "hub.airlock".to_string()
    } else {
        airlock_service::links::node_server_name(name)
    };
    let mut sans = vec!["localhost", "127.0.0.1", san.as_str()];
    sans.extend(extra.iter().map(String::as_str));
    let leaf = ca.issue(name, &sans).map_err(fail)?;
    std::fs::write(dir.join("tls.crt"), &leaf.cert_pem)
        .map_err(|e| CliError::Failed(e.to_string()))?;
    pki::write_private(&dir.join("tls.key"), &leaf.key_pem).map_err(fail)?;
    println!(
        "TLS certificate {} ({})",
        dir.join("tls.crt").display(),
        pki::cert_fingerprint(&leaf.cert_pem).map_err(fail)?
    );
    let xpath = dir.join("x25519.key");
    let keys = if xpath.exists() {
        NodeKeys::load(&xpath).map_err(fail)?
    } else {
        let k = NodeKeys::generate().map_err(fail)?;
        k.save(&xpath).map_err(fail)?;
        k
    };
    println!(
        "X25519 key      {} ({})",
        xpath.display(),
        sealing::fingerprint(&keys.public())
    );
    println!("Compare fingerprints with the other members out of band before pinning them.");
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err((e, json)) => {
            match &e {
                CliError::Refused { .. } => eprintln!("{e}"),
                _ => eprintln!("error: {e}"),
            }
            if let (true, CliError::Refused { refusal, node }) = (json, &e) {
                let body = serde_json::json!({ "refused": refusal, "node": node });
                println!("{body}");
            }
            ExitCode::from(u8::try_from(exit_code(&e)).unwrap_or(1))
        }
    }
}
