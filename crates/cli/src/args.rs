//! The `airlock` command line: every command and its arguments (clap).

use airlock_cli::cluster::CliError;
use airlock_cli::output::Format;
use airlock_cli::remote;
use airlock_service::client::HubClient;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "airlock",
    version,
    about = "Airlock: an open-source data clean room"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// How to reach a hub.
#[derive(clap::Args, Clone)]
pub(crate) struct HubArgs {
    /// The hub's URL.
    #[arg(long, env = "AIRLOCK_HUB", global = true)]
    pub(crate) hub: Option<String>,
    /// The member's API token.
    #[arg(long, env = "AIRLOCK_TOKEN", hide_env_values = true, global = true)]
    pub(crate) token: Option<String>,
    /// The CA certificate the hub's certificate chains to.
    #[arg(long, env = "AIRLOCK_CA", global = true)]
    pub(crate) ca: Option<PathBuf>,
    /// The member's approval key (`airlock keys member`): collaboration
    /// files sent with `collab create`/`apply` are approved with it, and
    /// `collab approve` signs with it.
    #[arg(long, env = "AIRLOCK_KEY", global = true)]
    pub(crate) key: Option<PathBuf>,
}

impl HubArgs {
    pub(crate) fn client(&self) -> Result<HubClient, CliError> {
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
pub(crate) enum BudgetCommand {
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
pub(crate) enum InteropCommand {
    /// AWS Clean Rooms analysis rules and analysis templates.
    Aws {
        #[command(subcommand)]
        command: AwsCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum AwsCommand {
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
pub(crate) enum AwsImport {
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
pub(crate) enum AwsExport {
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
pub(crate) enum TemplateCommand {
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
pub(crate) enum NodeCommand {
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
pub(crate) enum HubCommand {
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
pub(crate) enum KeysCommand {
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
pub(crate) enum CollabCommand {
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
        /// The dataset's name, as the collaboration files name it.
        #[arg(long)]
        dataset: String,
        /// New minimum of distinct people per output row of its aggregation rules.
        #[arg(long)]
        min_distinct_identities: Option<u64>,
    },
}

#[derive(Subcommand)]
pub(crate) enum AuditCommand {
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
pub(crate) enum Command {
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
        /// Where the members' data lives: files, s3, delta or postgres.
        #[arg(long, default_value = "files")]
        source: String,
        /// S3-compatible endpoint (s3, and delta in a bucket); credentials
        /// from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
        #[arg(long)]
        endpoint: Option<String>,
        /// Bucket for s3 and delta (made if missing).
        #[arg(long, default_value = "airlock-demo")]
        bucket: String,
        /// PostgreSQL connection string (postgres).
        #[arg(long)]
        url: Option<String>,
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
    Query(QueryArgs),
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
        #[arg(long, conflicts_with = "source")]
        distributed: bool,
        /// Time the analyses over the data in s3, delta or postgres against
        /// the same data as local Parquet and against plain DataFusion over
        /// the same source (PostgreSQL: rows read with and without pushdown).
        #[arg(long)]
        source: Option<String>,
        /// S3-compatible endpoint (s3, and delta in a bucket); credentials
        /// from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
        #[arg(long, requires = "source")]
        endpoint: Option<String>,
        /// Bucket for s3 and delta (made if missing).
        #[arg(long, default_value = "airlock-bench")]
        bucket: String,
        /// PostgreSQL connection string (postgres).
        #[arg(long, requires = "source")]
        url: Option<String>,
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
        #[arg(long, conflicts_with = "groups")]
        sums: bool,
        /// Count by this many groups of the asker's (each of its people in
        /// one, in turn): every person tagged per group, each tag with its
        /// 0/1 proof, as by the asker's groups.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        groups: u32,
    },
}

/// The arguments of `airlock query`.
#[derive(clap::Args)]
pub(crate) struct QueryArgs {
    /// Collaboration file, or with `--hub` the collaboration's name.
    #[arg(long)]
    pub(crate) collab: String,
    /// Member to run as in process (needs the query ability).
    #[arg(long = "as")]
    pub(crate) member: Option<String>,
    #[command(flatten)]
    pub(crate) hub: HubArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: Format,
    /// Run this approved template (name or hash) instead of SQL.
    #[arg(long, conflicts_with = "sql")]
    pub(crate) template: Option<String>,
    /// A template parameter, `NAME=VALUE` (repeat for each).
    #[arg(long = "param", value_name = "NAME=VALUE", requires = "template")]
    pub(crate) params: Vec<String>,
    /// The purpose the output serves (a template's is its own; a list
    /// output must name one).
    #[arg(long)]
    pub(crate) purpose: Option<String>,
    /// With --hub: have the querier's own node write the result to this
    /// destination of its configuration (the hub keeps no copy).
    #[arg(long)]
    pub(crate) deliver: Option<String>,
    /// The SQL.
    #[arg(required_unless_present = "template")]
    pub(crate) sql: Option<String>,
}
